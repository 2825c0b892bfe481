//! The gRPC transport: the only module that speaks tonic. [`serve`] wires
//! JobService and JobAdminService (behind authentication), standard health
//! checking and reflection (open) onto one listener. The same port speaks
//! native gRPC over HTTP/2 and grpc-web over HTTP/1.1 or HTTP/2 ([`web`]),
//! in clear text or TLS ([`tls`]), all through one accept loop
//! ([`listen`]) with the same limits and timers.
//!
//! A call passes, outside in: the connection ([`connection`]: peer address,
//! read deadline, open-call count), CORS and grpc-web ([`web`]), the edge
//! ([`edge`]: token verified once, anonymous calls counted, the caller's
//! deadline), then its service (interceptor, size limit, handler).

mod auth;
mod codec;
pub mod connection;
mod convert;
mod deadline;
mod edge;
mod health;
pub mod listen;
mod observe;
pub mod pb;
mod quota;
mod service;
mod status;
pub mod tls;
pub mod web;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::RoutesBuilder;
use tonic::service::interceptor::InterceptedService;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::auth::Verifier;
use crate::jobs::Jobs;
use crate::telemetry::LogBudget;
use auth::Authenticate;
use listen::{ConnectionLimits, EdgeStats};
use pb::job_admin_service_server::JobAdminServiceServer;
use pb::job_service_server::JobServiceServer;
use quota::WatchQuota;
use service::{JobAdminServiceImpl, JobServiceImpl};

/// Transport settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How often health checking probes the database.
    pub health_interval: Duration,
    /// Which browser origins may call the API (grpc-web). Closed by default.
    pub cors: web::CorsPolicy,
    /// Serve TLS with this certificate instead of clear text.
    pub tls: Option<tls::TlsPem>,
    /// What one connection may hold, and for how long.
    pub connections: ConnectionLimits,
    /// What one call, or one caller, may hold.
    pub calls: CallLimits,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            health_interval: Duration::from_secs(2),
            cors: web::CorsPolicy::default(),
            tls: None,
            connections: ConnectionLimits::default(),
            calls: CallLimits::default(),
        }
    }
}

/// Limits on calls and callers (see the README's "Limits and timeouts").
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Largest request message JobService and JobAdminService accept.
    pub max_request_bytes: usize,
    /// Largest request message health checking and reflection accept
    /// (they need no token).
    pub max_anonymous_request_bytes: usize,
    /// Calls without a valid token one connection may have open.
    pub max_anonymous_streams: usize,
    /// Watch streams (WatchJob and WatchMyJobs) one user may hold open.
    pub max_watches_per_user: usize,
    /// Watch streams one service token's subject may hold open.
    pub max_watches_per_service: usize,
    /// Refused authentications logged per second at most.
    pub auth_log_per_sec: u32,
}

impl Default for CallLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: 256 * 1024,
            max_anonymous_request_bytes: 4 * 1024,
            max_anonymous_streams: 32,
            max_watches_per_user: 100,
            max_watches_per_service: 10_000,
            auth_log_per_sec: 10,
        }
    }
}

/// Serves until `shutdown` resolves, then stops accepting and waits for
/// in-flight calls (watch streams end on their own when the server's
/// cancellation token fires). `stats` counts what the accept loop did.
pub async fn serve(
    listener: TcpListener,
    jobs: Jobs,
    verifier: Verifier,
    options: ServeOptions,
    stats: Arc<EdgeStats>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tls::TlsError> {
    let tls = options
        .tls
        .as_ref()
        .map(tls::TlsPem::acceptor)
        .transpose()?;
    let calls = options.calls;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health_service =
        health_service.max_decoding_message_size(calls.max_anonymous_request_bytes);
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

    let refusals = Arc::new(LogBudget::per_second(calls.auth_log_per_sec));
    let watches = WatchQuota::new(calls.max_watches_per_user, calls.max_watches_per_service);
    let job_service = InterceptedService::new(
        JobServiceServer::new(JobServiceImpl::new(jobs.clone(), watches))
            .max_decoding_message_size(calls.max_request_bytes),
        Authenticate::users_and_services(refusals.clone()),
    );
    let admin_service = InterceptedService::new(
        JobAdminServiceServer::new(JobAdminServiceImpl::new(jobs.clone()))
            .max_decoding_message_size(calls.max_request_bytes),
        Authenticate::services_only(refusals),
    );

    let mut routes = RoutesBuilder::default();
    routes.add_service(health_service);
    if let Ok(reflection) = reflection_v1 {
        routes.add_service(reflection.max_decoding_message_size(calls.max_anonymous_request_bytes));
    }
    if let Ok(reflection) = reflection_v1alpha {
        routes.add_service(reflection.max_decoding_message_size(calls.max_anonymous_request_bytes));
    }
    routes.add_service(job_service).add_service(admin_service);
    let routes = routes.routes().prepare();

    // grpc-web: browsers over HTTP/1.1 (plain text) or HTTP/2 (TLS); the
    // CORS layer is outermost so it answers preflights before anything else,
    // and the edge innermost so what it answers is framed for grpc-web too.
    let service = ServiceBuilder::new()
        .layer(web::BrowserCorsLayer::new(&options.cors))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(edge::EdgeLayer::new(
            verifier,
            calls.max_anonymous_streams,
            options.connections.request_read_timeout,
        ))
        .service(routes);
    listen::serve(
        listener,
        BoxCloneSyncService::new(service),
        tls,
        options.connections,
        stats,
        shutdown,
    )
    .await;
    probe.finish().await;
    Ok(())
}
