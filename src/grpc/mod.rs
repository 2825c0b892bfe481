//! The gRPC transport: the only module that speaks tonic. [`serve`] wires
//! JobService and JobAdminService (behind authentication), standard health
//! checking and reflection (open) onto one listener. The same port speaks
//! native gRPC over HTTP/2 and grpc-web over HTTP/1.1 or HTTP/2 ([`web`]),
//! in clear text ([`listen`]) or TLS ([`tls`]).

mod auth;
mod codec;
mod convert;
mod deadline;
mod health;
pub mod listen;
pub mod pb;
mod service;
mod status;
pub mod tls;
pub mod web;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tower::ServiceBuilder;

use crate::auth::Verifier;
use crate::jobs::Jobs;
use auth::Authenticate;
use pb::job_admin_service_server::JobAdminServiceServer;
use pb::job_service_server::JobServiceServer;
use service::{JobAdminServiceImpl, JobServiceImpl};

/// Transport settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How often health checking probes the database.
    pub health_interval: Duration,
    /// HTTP/2 PING interval, so dead peers of idle watch streams are noticed.
    pub keepalive: Duration,
    /// HTTP/2 concurrent streams per connection (each WatchJob is one).
    pub max_concurrent_streams: u32,
    /// Which browser origins may call the API (grpc-web). Closed by default.
    pub cors: web::CorsPolicy,
    /// Serve TLS with this certificate instead of clear text.
    pub tls: Option<tls::TlsPem>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            health_interval: Duration::from_secs(2),
            keepalive: Duration::from_secs(30),
            max_concurrent_streams: 10_000,
            cors: web::CorsPolicy::default(),
            tls: None,
        }
    }
}

/// Serves until `shutdown` resolves, then stops accepting and waits for
/// in-flight calls (watch streams end on their own when the server's
/// cancellation token fires).
pub async fn serve(
    listener: TcpListener,
    jobs: Jobs,
    verifier: Verifier,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let probe = health::spawn_probe(reporter, jobs.clone(), options.health_interval).await;

    // Both reflection versions serve the same descriptors: v1alpha is what
    // older grpcurl releases speak.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(|e| {
        tracing::error!(error = %e, "reflection v1 could not be built");
    });
    let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| {
        tracing::error!(error = %e, "reflection v1alpha could not be built");
    });

    let job_service = JobServiceServer::with_interceptor(
        JobServiceImpl::new(jobs.clone()),
        Authenticate::users_and_services(verifier.clone()),
    );
    let admin_service = JobAdminServiceServer::with_interceptor(
        JobAdminServiceImpl::new(jobs.clone()),
        Authenticate::services_only(verifier),
    );

    let mut routes = RoutesBuilder::default();
    routes.add_service(health_service);
    if let Ok(reflection) = reflection_v1 {
        routes.add_service(reflection);
    }
    if let Ok(reflection) = reflection_v1alpha {
        routes.add_service(reflection);
    }
    routes.add_service(job_service).add_service(admin_service);
    let routes = routes.routes().prepare();

    let incoming = listen::tcp_incoming(listener, options.keepalive);
    // grpc-web: browsers over HTTP/1.1 (plain text) or HTTP/2 (TLS); the
    // CORS layer is outermost so it answers preflights before anything else,
    // and the caller's deadline innermost so its answer is framed for
    // grpc-web too.
    let layers = ServiceBuilder::new()
        .layer(web::cors_layer(&options.cors))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(deadline::DeadlineLayer);
    // Clear text goes through our own accept loop, which bounds HTTP/1.1
    // buffers (see `listen`); over TLS browsers speak HTTP/2, and tonic's
    // loop does the handshakes.
    let result = match &options.tls {
        None => {
            let settings = listen::ListenSettings {
                keepalive: options.keepalive,
                max_concurrent_streams: options.max_concurrent_streams,
            };
            listen::serve_plain(incoming, layers.service(routes), settings, shutdown).await;
            Ok(())
        }
        Some(pem) => {
            Server::builder()
                .tls_config(pem.server_config())?
                .accept_http1(true)
                .layer(layers.into_inner())
                .http2_keepalive_interval(Some(options.keepalive))
                .max_concurrent_streams(options.max_concurrent_streams)
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    };
    drop(probe);
    result
}
