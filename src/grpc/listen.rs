//! The accept loop: every connection, clear text or TLS, native gRPC
//! (HTTP/2) or grpc-web (HTTP/1.1 or HTTP/2), comes in here and gets the
//! same limits and timers before hyper serves it in a task of its own:
//!
//! - at most `max_connections` open at once; one more is closed at once;
//! - the TLS handshake and the protocol's opening (the HTTP/2 preface and
//!   SETTINGS, or the HTTP/1.1 request head) within `handshake_timeout`;
//! - request heads bounded in size ([`ConnectionLimits::http1_max_head_bytes`])
//!   and in time (idle keep-alive connections close after the same timeout);
//! - HTTP/2 connections with no call open for `idle_timeout` are closed
//!   with GOAWAY (clients reconnect when they next need one);
//! - a failed accept (out of file descriptors, say) backs off, never spins.
//!
//! Nothing here may wait on one connection inside the accept loop.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::body::Body;
use tower::util::BoxCloneSyncService;

use super::connection::{Connection, PerConnection};
use crate::telemetry::LogBudget;

/// The smallest bound hyper accepts on an HTTP/1.1 connection's buffers,
/// and the default of [`ConnectionLimits::http1_max_head_bytes`].
pub const MIN_HTTP1_HEAD_BYTES: u32 = 8192;

/// Connection-level limits and timers (see the module docs and the
/// README's "Limits and timeouts").
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// TLS handshake plus the protocol's opening.
    pub handshake_timeout: Duration,
    /// A request's body (its whole message) must have arrived by then
    /// (the edge layer enforces it, inside grpc-web).
    pub request_read_timeout: Duration,
    /// An HTTP/2 connection with no call open this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 PING (and TCP keepalive) interval: dead peers of idle watch
    /// streams are noticed.
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// HTTP/2 streams per connection (each call is one).
    pub max_concurrent_streams: u32,
    /// An HTTP/1.1 request head (request line and headers). It also bounds
    /// each HTTP/1.1 connection's read buffer: a browser's grpc-web watch
    /// holds its connection, and this buffer, for as long as it watches.
    pub http1_max_head_bytes: u32,
    /// An HTTP/2 request's header list (as HPACK counts it: each field's
    /// name and value plus 32 bytes).
    pub http2_max_header_bytes: u32,
    /// HTTP/2 flow-control window per stream: the most request bytes a
    /// client may send that the server has not yet read.
    pub stream_window: u32,
    /// HTTP/2 flow-control window per connection, over all its streams.
    pub connection_window: u32,
    /// HTTP/2 response bytes the server queues per stream for a client that
    /// does not read.
    pub send_buffer: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            request_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            max_concurrent_streams: 1_000,
            http1_max_head_bytes: MIN_HTTP1_HEAD_BYTES,
            http2_max_header_bytes: 16 * 1024,
            stream_window: 64 * 1024,
            connection_window: 1024 * 1024,
            send_buffer: 64 * 1024,
        }
    }
}

/// What the accept loop has done, for operators and tests.
#[derive(Debug, Default)]
pub struct EdgeStats {
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Accepted connections that have ended since.
    pub closed: AtomicU64,
    /// Connections closed at once because `max_connections` were open.
    pub refused_at_capacity: AtomicU64,
    /// Connections closed because their handshake or opening took too long.
    pub handshake_timeouts: AtomicU64,
    /// Connections whose TLS handshake or opening failed.
    pub handshake_failures: AtomicU64,
    /// Connections closed for being idle.
    pub idle_closed: AtomicU64,
    /// Failed accepts (each followed by a back-off).
    pub accept_errors: AtomicU64,
    /// Connections being served now, by protocol (HTTP/1.1, HTTP/2) and
    /// TLS (no, yes): `open_by_protocol[http2][tls]`.
    pub open_by_protocol: [[AtomicU64; 2]; 2],
}

impl EdgeStats {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        let closed = self.closed.load(Ordering::Acquire);
        self.accepted.load(Ordering::Acquire).saturating_sub(closed)
    }

    /// Connections being served now with `protocol`, over TLS or not.
    pub fn open_with(&self, http2: bool, tls: bool) -> u64 {
        self.open_by_protocol[usize::from(http2)][usize::from(tls)].load(Ordering::Relaxed)
    }
}

/// Counts one connection as served with its protocol until it drops.
struct Serving<'a>(&'a AtomicU64);

impl<'a> Serving<'a> {
    fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The first wait after a failed accept; it doubles per failure in a row.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest wait between accepts while they keep failing.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The HTTP/2 connection preface a client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The largest SETTINGS frame read while sniffing (the default maximum
/// frame size); a larger one is left to hyper, which refuses it.
const MAX_SNIFFED_FRAME: usize = 16_384;

/// Raises this process's soft open-files limit to its hard limit (every
/// connection is a file descriptor) and returns the new soft limit.
pub fn raise_open_files_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// The service every connection calls, boxed: each HTTP/2 stream's task
/// then holds a pointer to its response future rather than the whole
/// layered future inline, for as long as the stream lasts (about 200 bytes
/// per idle watch stream).
pub type SharedService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// Serves `service` on every connection `listener` accepts (through TLS
/// when `tls` is set) until `shutdown` resolves; then stops accepting, asks
/// every connection to close once its calls are done (HTTP/2 GOAWAY;
/// HTTP/1.1 after the current response), and returns when all have.
pub async fn serve(
    listener: TcpListener,
    service: SharedService,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    stats: Arc<EdgeStats>,
    shutdown: impl Future<Output = ()>,
) {
    let builders = Arc::new(Builders::new(&limits));
    let capacity = Arc::new(Semaphore::new(limits.max_connections));
    let draining = CancellationToken::new();
    let connections = TaskTracker::new();
    let refusal_log = LogBudget::per_second(1);
    let error_log = LogBudget::per_second(1);
    {
        // Scoped so that the listening socket closes as soon as accepting
        // stops, not after the connections have drained.
        let listener = listener;
        let mut shutdown = pin!(shutdown);
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    accepted
                }
                Err(err) => {
                    stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = error_log.admit() {
                        tracing::warn!(error = %err, retry_in = ?backoff, suppressed, "accepting a connection failed");
                    }
                    // Out of file descriptors, the pending connection stays
                    // queued and the next accept fails the same way: wait.
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let Ok(permit) = capacity.clone().try_acquire_owned() else {
                stats.refused_at_capacity.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = refusal_log.admit() {
                    tracing::warn!(%peer, limit = limits.max_connections, suppressed,
                        "connection refused: the server has --max-connections open");
                }
                drop(stream);
                continue;
            };
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            let task = ConnectionTask {
                builders: builders.clone(),
                service: service.clone(),
                tls: tls.clone(),
                limits,
                stats: stats.clone(),
                draining: draining.clone(),
            };
            connections.spawn(async move {
                let stats = task.stats.clone();
                task.run(stream, peer).await;
                drop(permit);
                stats.closed.fetch_add(1, Ordering::Release);
            });
        }
    }
    draining.cancel();
    connections.close();
    connections.wait().await;
}

/// hyper's connection builders, configured once.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: &ConnectionLimits) -> Self {
        let mut h1 = http1::Builder::new();
        // hyper enforces the head's read timeout only with a timer. It runs
        // whenever the connection waits for a request head: the first one,
        // and between requests on a keep-alive connection.
        h1.timer(TokioTimer::new())
            .header_read_timeout(limits.handshake_timeout)
            .max_buf_size(limits.http1_max_head_bytes.max(MIN_HTTP1_HEAD_BYTES) as usize);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .keep_alive_interval(Some(limits.keepalive_interval))
            .keep_alive_timeout(limits.keepalive_timeout)
            .max_header_list_size(limits.http2_max_header_bytes)
            .initial_stream_window_size(limits.stream_window)
            .initial_connection_window_size(limits.connection_window)
            .max_send_buf_size(limits.send_buffer as usize);
        Self {
            http1: h1,
            http2: h2,
        }
    }
}

/// Everything one connection's task needs.
struct ConnectionTask {
    builders: Arc<Builders>,
    service: SharedService,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    stats: Arc<EdgeStats>,
    draining: CancellationToken,
}

/// Which protocol a connection opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

impl ConnectionTask {
    async fn run(self, stream: TcpStream, peer: SocketAddr) {
        if let Err(err) = configure(&stream, self.limits.keepalive_interval) {
            tracing::debug!(%peer, error = %err, "cannot set socket options");
        }
        let deadline = tokio::time::Instant::now() + self.limits.handshake_timeout;
        // Each stage is boxed and ends before the next begins, so that a
        // connection holds only the state of the stage it is in: inline,
        // every connection's task would be as large as a TLS handshake, the
        // protocol sniffing and a served connection together.
        match self.tls.clone() {
            None => {
                let mut io = stream;
                if let Some((opening, protocol)) =
                    Box::pin(self.opening(&mut io, peer, deadline)).await
                {
                    Box::pin(self.serve(io, opening, protocol, peer, false)).await;
                }
            }
            Some(acceptor) => {
                let Some(mut io) =
                    Box::pin(self.tls_handshake(acceptor, stream, peer, deadline)).await
                else {
                    return;
                };
                if let Some((opening, protocol)) =
                    Box::pin(self.opening(&mut io, peer, deadline)).await
                {
                    Box::pin(self.serve(io, opening, protocol, peer, true)).await;
                }
            }
        }
    }

    /// The TLS handshake, within the handshake deadline. The stream comes
    /// back boxed: a rustls connection is kilobytes.
    async fn tls_handshake(
        &self,
        acceptor: TlsAcceptor,
        stream: TcpStream,
        peer: SocketAddr,
        deadline: tokio::time::Instant,
    ) -> Option<Box<TlsStream<TcpStream>>> {
        let handshake = tokio::select! {
            () = self.draining.cancelled() => return None,
            done = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => done,
        };
        match handshake {
            Ok(Ok(stream)) => Some(Box::new(stream)),
            Ok(Err(err)) => {
                self.stats
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.stats
                    .handshake_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, "TLS handshake timed out");
                None
            }
        }
    }

    /// Reads the protocol's opening within the handshake deadline: what was
    /// read (to be replayed to hyper) and the protocol.
    async fn opening<IO: AsyncRead + Unpin>(
        &self,
        io: &mut IO,
        peer: SocketAddr,
        deadline: tokio::time::Instant,
    ) -> Option<(Vec<u8>, Protocol)> {
        let mut opening = Vec::new();
        let sniffed = tokio::select! {
            () = self.draining.cancelled() => return None,
            sniffed = tokio::time::timeout_at(deadline, sniff(io, &mut opening)) => sniffed,
        };
        match sniffed {
            Ok(Ok(protocol)) => Some((opening, protocol)),
            Ok(Err(err)) => {
                self.stats
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, error = %err, "connection closed before its protocol was known");
                None
            }
            Err(_) => {
                self.stats
                    .handshake_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, "connection sent no complete HTTP opening in time");
                None
            }
        }
    }

    /// Serves the connection with hyper until it ends.
    async fn serve<IO>(
        &self,
        io: IO,
        opening: Vec<u8>,
        protocol: Protocol,
        peer: SocketAddr,
        tls: bool,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let connection = Arc::new(Connection::new(peer, tls));
        let service =
            TowerToHyperService::new(PerConnection::new(self.service.clone(), connection.clone()));
        let io = TokioIo::new(Rewind::new(opening, io));
        let http2 = protocol == Protocol::Http2;
        let _serving =
            Serving::new(&self.stats.open_by_protocol[usize::from(http2)][usize::from(tls)]);
        match protocol {
            Protocol::Http1 => {
                let conn = self.builders.http1.serve_connection(io, service);
                self.drive(conn, &connection, None).await;
            }
            Protocol::Http2 => {
                let conn = self.builders.http2.serve_connection(io, service);
                self.drive(conn, &connection, Some(self.limits.idle_timeout))
                    .await;
            }
        }
    }

    /// Runs a connection until it ends, closing it gracefully when the
    /// server drains or when it has been idle for `idle`.
    async fn drive<C>(&self, conn: C, connection: &Connection, idle: Option<Duration>)
    where
        C: GracefulConnection,
        C::Error: std::fmt::Display,
    {
        let mut conn = pin!(conn);
        let mut closing = false;
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(err) = ended {
                        tracing::debug!(peer = %connection.peer(), error = %err, "connection ended with an error");
                    }
                    return;
                }
                () = self.draining.cancelled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = idle_for(connection, idle), if !closing => {
                    self.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %connection.peer(), "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

async fn idle_for(connection: &Connection, idle: Option<Duration>) {
    match idle {
        Some(idle) => connection.idle_for(idle).await,
        None => std::future::pending().await,
    }
}

/// No Nagle delay (small event frames go out at once) and TCP keepalive.
fn configure(stream: &TcpStream, keepalive: Duration) -> io::Result<()> {
    stream.set_nodelay(true)?;
    socket2::SockRef::from(stream)
        .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(keepalive))
}

/// Reads just enough of a connection to know its protocol: the HTTP/2
/// preface and the SETTINGS frame that must follow it, or the first byte
/// that differs from the preface (HTTP/1.1; hyper then reads the head).
/// What was read is left in `opening`, to be replayed to hyper.
async fn sniff<IO: AsyncRead + Unpin>(io: &mut IO, opening: &mut Vec<u8>) -> io::Result<Protocol> {
    loop {
        let seen = opening.len().min(H2_PREFACE.len());
        if opening[..seen] != H2_PREFACE[..seen] {
            return Ok(Protocol::Http1);
        }
        let needed = if seen < H2_PREFACE.len() {
            H2_PREFACE.len()
        } else if opening.len() < H2_PREFACE.len() + 9 {
            H2_PREFACE.len() + 9
        } else {
            let header = &opening[H2_PREFACE.len()..H2_PREFACE.len() + 9];
            let length =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            const SETTINGS: u8 = 4;
            if header[3] != SETTINGS || length > MAX_SNIFFED_FRAME {
                // Not what a client must send: hyper answers with GOAWAY.
                return Ok(Protocol::Http2);
            }
            H2_PREFACE.len() + 9 + length
        };
        if opening.len() >= needed {
            return Ok(Protocol::Http2);
        }
        // Never read past what the opening needs: the rest is hyper's.
        let mut chunk = vec![0; needed - opening.len()];
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed during the opening",
            ));
        }
        opening.extend_from_slice(&chunk[..n]);
    }
}

pin_project_lite::pin_project! {
    /// An I/O stream that first replays the bytes already read from it.
    struct Rewind<IO> {
        prefix: Vec<u8>,
        offset: usize,
        #[pin]
        io: IO,
    }
}

impl<IO> Rewind<IO> {
    fn new(prefix: Vec<u8>, io: IO) -> Self {
        Self {
            prefix,
            offset: 0,
            io,
        }
    }
}

impl<IO: AsyncRead> AsyncRead for Rewind<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if *this.offset < this.prefix.len() {
            let rest = &this.prefix[*this.offset..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            *this.offset += n;
            if *this.offset == this.prefix.len() {
                // Free the replayed bytes: the connection may live for hours.
                *this.prefix = Vec::new();
                *this.offset = 0;
            }
            return Poll::Ready(Ok(()));
        }
        this.io.poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite> AsyncWrite for Rewind<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn sniffed(bytes: &[u8]) -> (io::Result<Protocol>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(bytes).await.unwrap();
        drop(client);
        let mut opening = Vec::new();
        let protocol = sniff(&mut server, &mut opening).await;
        (protocol, opening)
    }

    #[tokio::test]
    async fn sniffing_tells_http1_from_http2_and_reads_no_further() {
        let (p, opening) = sniffed(b"POST /x HTTP/1.1\r\n").await;
        assert_eq!(p.unwrap(), Protocol::Http1);
        assert!(
            opening.len() <= 24,
            "read only the first chunk: {opening:?}"
        );

        let mut h2 = H2_PREFACE.to_vec();
        // An empty SETTINGS frame, then a HEADERS frame that is hyper's.
        h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        h2.extend_from_slice(&[0, 0, 1, 1, 4, 0, 0, 0, 1, 0x82]);
        let (p, opening) = sniffed(&h2).await;
        assert_eq!(p.unwrap(), Protocol::Http2);
        assert_eq!(opening.len(), 24 + 9, "the preface and SETTINGS only");

        // A preface that stops half-way is not an opening.
        let (p, _) = sniffed(&H2_PREFACE[..10]).await;
        assert_eq!(p.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        // Preface, then a SETTINGS header announcing 12 bytes that never come.
        let mut short = H2_PREFACE.to_vec();
        short.extend_from_slice(&[0, 0, 12, 4, 0, 0, 0, 0, 0, 1, 2]);
        let (p, _) = sniffed(&short).await;
        assert!(p.is_err());
    }

    #[tokio::test]
    async fn rewind_replays_then_reads_on() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut io = Rewind::new(b"hello".to_vec(), server);
        let mut all = String::new();
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
