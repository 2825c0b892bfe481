//! The clear-text accept loop: native gRPC (HTTP/2) and grpc-web (HTTP/1.1
//! or HTTP/2) on one port, each connection served by hyper in a task of its
//! own. It exists because tonic's own loop cannot bound hyper's HTTP/1.1
//! buffers (see [`HTTP1_MAX_BUFFER`]); it otherwise keeps tonic's settings.
//! TLS listeners still use tonic's loop: browsers negotiate HTTP/2 there.
//! Nothing here may wait on one connection inside the accept loop.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures_util::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tonic::body::Body;
use tonic::transport::server::TcpIncoming;
use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};

/// The bound on each HTTP/1.1 connection's read and write buffers: hyper's
/// smallest, and the size of its first read. Unbounded, every HTTP/1.1
/// connection's read buffer grows to 16 KiB on its first request, because
/// telling HTTP/1.1 from HTTP/2 hands hyper the first bytes alone and the
/// read after them doubles the buffer. A browser's grpc-web watch holds its
/// connection for as long as it watches, so that was 8 KiB per watcher for
/// nothing. It also bounds a request's head: larger heads are refused with
/// 431, as most proxies' defaults (8 KiB) would refuse them anyway.
pub const HTTP1_MAX_BUFFER: usize = 8192;

/// How long HTTP/2 waits for a PING's answer before closing the connection
/// (tonic's default).
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// After a failed accept (out of file descriptors, say), wait this long
/// before the next, rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Transport settings of the clear-text listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenSettings {
    /// HTTP/2 PING interval, so dead peers of idle watch streams are noticed.
    pub keepalive: Duration,
    /// HTTP/2 concurrent streams per connection.
    pub max_concurrent_streams: u32,
}

/// Accepted connections as both servers take them: no Nagle delay (small
/// event frames go out at once) and TCP keepalive every `keepalive`.
pub fn tcp_incoming(listener: tokio::net::TcpListener, keepalive: Duration) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(keepalive))
}

/// Serves `service` on every connection `incoming` accepts until `shutdown`
/// resolves; then stops accepting, asks every connection to close once its
/// calls are done (HTTP/2 GOAWAY; HTTP/1.1 after the current response), and
/// returns when all have.
pub async fn serve_plain<S>(
    incoming: TcpIncoming,
    service: S,
    settings: ListenSettings,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper enforces its HTTP/1.1 header read timeout only with a timer.
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(HTTP1_MAX_BUFFER);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .keep_alive_interval(Some(settings.keepalive))
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);

    // Boxed, so that each HTTP/2 stream's task holds a pointer to its
    // response future rather than the whole layered future inline, for as
    // long as the stream lasts: about 200 bytes per idle watch stream.
    let service = BoxCloneService::new(service);
    let connections = GracefulShutdown::new();
    {
        // Scoped so that the listening socket closes as soon as accepting
        // stops, not after the connections have drained.
        let mut incoming = pin!(incoming);
        let mut shutdown = pin!(shutdown);
        loop {
            let stream = tokio::select! {
                () = &mut shutdown => break,
                accepted = incoming.next() => match accepted {
                    Some(Ok(stream)) => stream,
                    Some(Err(err)) => {
                        tracing::warn!(error = %err, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                    None => break,
                },
            };
            let service = TowerToHyperService::new(
                service
                    .clone()
                    .map_request(|request: http::Request<Incoming>| request.map(Body::new)),
            );
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let connection = connections.watch(connection);
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
            });
        }
    }
    connections.shutdown().await;
}
