//! What the transport tells the metrics about each call and each watch
//! stream, with the grpc-ecosystem label names (`grpc_service`,
//! `grpc_method`, `grpc_type`, `grpc_code`). Labels come from a fixed table
//! of this server's methods, never from the request: an unknown path is
//! `unknown`, so no client can grow the number of series.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::Stream;
use metrics::{Counter, Gauge, Histogram};
use tonic::{Code, Status};

use super::quota::WatchPermit;
use crate::error::AppError;
use crate::telemetry::metrics as m;

/// One method of this server, as its metrics name it, with the handles of
/// its series (kept on first use: see [`m::Kept`]).
#[derive(Debug)]
pub struct Method {
    pub service: &'static str,
    pub method: &'static str,
    pub kind: &'static str,
    series: Series,
}

/// The handles of one method's series.
#[derive(Debug)]
struct Series {
    started: m::Kept<Counter>,
    seconds: m::Kept<Histogram>,
    /// By code, in [`Code`]'s order.
    handled: [m::Kept<Counter>; CODES],
    /// Streams only: messages sent, events delivered, streams open.
    sent: m::Kept<Counter>,
    delivered: m::Kept<Counter>,
    open: m::Kept<Gauge>,
    /// By reason, in [`END_REASONS`]' order.
    ended: [m::Kept<Counter>; END_REASONS.len()],
}

/// Why a watch stream ended, as `jobstatus_watch_streams_ended_total`
/// names it.
const END_REASONS: [&str; 7] = [
    "terminal",
    "access_lost",
    "token_expired",
    "shutdown",
    "client_gone",
    "limit",
    "error",
];

/// gRPC's status codes: `Code::Ok` (0) to `Code::Unauthenticated` (16).
const CODES: usize = 17;

impl Series {
    const fn new() -> Self {
        Self {
            started: m::Kept::new(),
            seconds: m::Kept::new(),
            handled: [const { m::Kept::new() }; CODES],
            sent: m::Kept::new(),
            delivered: m::Kept::new(),
            open: m::Kept::new(),
            ended: [const { m::Kept::new() }; END_REASONS.len()],
        }
    }
}

const UNARY: &str = "unary";
const SERVER_STREAM: &str = "server_stream";
const BIDI_STREAM: &str = "bidi_stream";

macro_rules! methods {
    ($($service:literal => [$($method:literal: $kind:ident),* $(,)?]),* $(,)?) => {
        [$($(Method { service: $service, method: $method, kind: $kind, series: Series::new() }),*),*]
    };
}

static METHODS: [Method; 16] = methods!(
    "jobstatus.v1.JobService" => [
        "GetJob": UNARY, "MarkComplete": UNARY, "ApproveCompletion": UNARY,
        "RequestChanges": UNARY, "SubmitPaymentProof": UNARY, "ConfirmPayment": UNARY,
        "WatchJob": SERVER_STREAM, "WatchMyJobs": SERVER_STREAM,
    ],
    "jobstatus.v1.JobAdminService" => [
        "CreateJob": UNARY, "AssignWorker": UNARY, "CancelJob": UNARY, "ConfirmPayment": UNARY,
    ],
    "grpc.health.v1.Health" => ["Check": UNARY, "Watch": SERVER_STREAM],
    "grpc.reflection.v1.ServerReflection" => ["ServerReflectionInfo": BIDI_STREAM],
    "grpc.reflection.v1alpha.ServerReflection" => ["ServerReflectionInfo": BIDI_STREAM],
);

static UNKNOWN: Method = Method {
    service: "unknown",
    method: "unknown",
    kind: UNARY,
    series: Series::new(),
};

/// `service`'s method `method` (unknown if it has none).
fn find(service: &str, method: &str) -> &'static Method {
    METHODS
        .iter()
        .find(|m| m.service == service && m.method == method)
        .unwrap_or(&UNKNOWN)
}

/// The method a request path (`/package.Service/Method`) names.
pub fn method_of(path: &str) -> &'static Method {
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((service, method)) => find(service, method),
        None => &UNKNOWN,
    }
}

impl Method {
    fn started(&self) {
        self.series.started.increment(1, || {
            metrics::counter!(m::RPC_STARTED,
                "grpc_service" => self.service, "grpc_method" => self.method, "grpc_type" => self.kind)
        });
    }

    fn finished(&self, code: Code, seconds: f64) {
        if let Some(handled) = self.series.handled.get(code as usize) {
            handled.increment(1, || {
                metrics::counter!(m::RPC_HANDLED,
                    "grpc_service" => self.service, "grpc_method" => self.method,
                    "grpc_type" => self.kind, "grpc_code" => code_name(code))
            });
        }
        self.series.seconds.record(seconds, || {
            metrics::histogram!(m::RPC_SECONDS,
                "grpc_service" => self.service, "grpc_method" => self.method, "grpc_type" => self.kind)
        });
    }

    /// A message sent on this stream method; `event` when it was an event.
    fn sent(&self, event: bool) {
        self.series.sent.increment(1, || {
            metrics::counter!(m::RPC_MSG_SENT,
                "grpc_service" => self.service, "grpc_method" => self.method, "grpc_type" => self.kind)
        });
        if event {
            self.series.delivered.increment(
                1,
                || metrics::counter!(m::EVENTS_DELIVERED, "rpc" => self.method),
            );
        }
    }

    /// A stream of this method ended, for `reason` (one of [`END_REASONS`]).
    fn ended(&self, reason: &'static str) {
        let Some(index) = END_REASONS.iter().position(|r| *r == reason) else {
            return;
        };
        if let Some(ended) = self.series.ended.get(index) {
            ended.increment(
                1,
                || metrics::counter!(m::WATCHES_ENDED, "rpc" => self.method, "reason" => reason),
            );
        }
    }

    /// One more (`1.0`) or one fewer (`-1.0`) open stream of this method.
    fn open(&self, by: f64) {
        self.series.open.increment(
            by,
            || metrics::gauge!(m::WATCHES_OPEN, "rpc" => self.method),
        );
    }
}

/// The code in a head's or trailers' `grpc-status`, read as tonic reads it
/// (a value that is no code is `Unknown`) but without building a
/// [`Status`]: `Status::from_header_map` copies the whole map for the
/// status's metadata, on every call.
pub fn status_code(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get(&GRPC_STATUS)
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// Header names looked up on every call, made once: a lookup by `&str`
/// parses and lower-cases the name each time.
pub static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
static REQUEST_ID: http::HeaderName = http::HeaderName::from_static(RequestId::HEADER);

/// The name go-grpc-prometheus and grpc-go give a code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// One call, from its start to its status. Dropped without a status (the
/// client went away first), it counts as `Canceled`.
#[derive(Debug)]
pub struct RpcTiming {
    method: &'static Method,
    started: Instant,
    finished: bool,
}

impl RpcTiming {
    /// Counts the call as started.
    pub fn start(path: &str) -> Self {
        let method = method_of(path);
        method.started();
        Self {
            method,
            started: Instant::now(),
            finished: false,
        }
    }

    /// Records how the call ended (once; later calls do nothing).
    pub fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.method
            .finished(code, self.started.elapsed().as_secs_f64());
    }
}

impl Drop for RpcTiming {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// The request id every call's log lines carry and its response echoes in
/// `x-request-id`: the caller's own (a proxy's, a client's trace id) when
/// it sent a sane one, else a new one, so one call can be followed from
/// the client to the server's log.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// The longest request id taken from a caller.
const MAX_REQUEST_ID: usize = 128;

impl RequestId {
    pub const HEADER: &'static str = "x-request-id";

    pub fn of(headers: &http::HeaderMap) -> Self {
        let given = headers
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= MAX_REQUEST_ID
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
            });
        match given {
            Some(id) => Self(id.into()),
            None => Self::new(),
        }
    }

    /// A new id: 64 random bits in 16 hex digits (written by hand: `format!`
    /// was most of a call's request-id work).
    fn new() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bits = rand::random::<u64>();
        let mut digits = [0u8; 16];
        for (i, digit) in digits.iter_mut().enumerate() {
            // The nibble is below 16.
            *digit = HEX[((bits >> (60 - 4 * i)) & 0xf) as usize];
        }
        Self(std::str::from_utf8(&digits).unwrap_or_default().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Echoes the id in a response's head.
    ///
    /// Marked sensitive, which HTTP/2 encodes as never indexed: an id is
    /// new on every call, so indexing it would only fill the connection's
    /// HPACK table with ids that never repeat, evict the headers that do,
    /// and make every later response compare its id against each of them.
    pub fn echo(&self, headers: &mut http::HeaderMap) {
        if let Ok(mut value) = http::HeaderValue::from_str(&self.0) {
            value.set_sensitive(true);
            headers.insert(REQUEST_ID.clone(), value);
        }
    }
}

/// Who and what one call is, for its log lines. Every call has one, so it
/// stays cheap: the call's span is at debug level (under `info` it costs
/// nothing, where an info span's fields were formatted on every call,
/// about a tenth of a call's CPU), and the lines that matter at info
/// (refusals, watches ending on an error) carry these fields themselves.
#[derive(Debug, Clone)]
pub struct CallLog {
    method: &'static str,
    job_id: Option<i64>,
    caller: Box<str>,
    peer: Option<std::net::SocketAddr>,
    request_id: Option<RequestId>,
}

impl CallLog {
    pub fn of<T>(
        method: &'static str,
        request: &tonic::Request<T>,
        job_id: Option<i64>,
        caller: &str,
    ) -> Self {
        let extensions = request.extensions();
        Self {
            method,
            job_id,
            caller: caller.into(),
            peer: extensions
                .get::<Arc<super::connection::Connection>>()
                .map(|c| c.peer()),
            request_id: extensions.get::<RequestId>().cloned(),
        }
    }

    fn request_id(&self) -> &str {
        self.request_id
            .as_ref()
            .map(RequestId::as_str)
            .unwrap_or_default()
    }

    /// The call's span (debug level).
    pub fn span(&self) -> tracing::Span {
        tracing::debug_span!(
            "rpc",
            method = self.method,
            job_id = self.job_id,
            caller = &*self.caller,
            peer = self.peer.map(tracing::field::display),
            request_id = self.request_id(),
        )
    }

    /// How a refused call ended: one line at info, whatever the span's level.
    pub fn refused(&self, status: &Status, micros: u64) {
        self.at_info(status, Some(micros), "refused");
    }

    /// A watch that ended on an error: one line at info.
    pub fn watch_ended(&self, status: &Status) {
        self.at_info(status, None, "watch ended");
    }

    fn at_info(&self, status: &Status, micros: Option<u64>, what: &'static str) {
        tracing::info!(
            method = self.method,
            job_id = self.job_id,
            caller = &*self.caller,
            peer = self.peer.map(tracing::field::display),
            request_id = self.request_id(),
            code = ?status.code(),
            status_message = status.message(),
            micros,
            "{what}"
        );
    }
}

/// Why a watch stream ended, for `jobstatus_watch_streams_ended_total`.
fn end_reason(err: &AppError) -> &'static str {
    match err {
        AppError::ShuttingDown { .. } | AppError::ShuttingDownResumeAll => "shutdown",
        AppError::AccessLost(_) => "access_lost",
        AppError::Auth(crate::auth::AuthError::Expired) => "token_expired",
        AppError::Limit(_) => "limit",
        _ => "error",
    }
}

pin_project_lite::pin_project! {
    /// A watch stream as the transport serves it: the domain stream's items
    /// converted for the wire, counted (messages, events delivered), its
    /// place in the per-caller limit held for its whole life, and its end
    /// recorded (terminal, error, or the client going away) with the
    /// open-streams gauge.
    pub struct Watched<S, F> {
        #[pin]
        inner: S,
        convert: F,
        method: &'static Method,
        log: CallLog,
        ended: Option<&'static str>,
        // Held, not read: the stream's place in the per-caller limit.
        _permit: WatchPermit,
    }

    impl<S, F> PinnedDrop for Watched<S, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let reason = this.ended.unwrap_or("client_gone");
            this.method.open(-1.0);
            this.method.ended(reason);
        }
    }
}

impl<S, F> Watched<S, F> {
    /// `rpc` is the JobService method serving the stream.
    pub fn new(inner: S, convert: F, rpc: &'static str, log: CallLog, permit: WatchPermit) -> Self {
        let method = find("jobstatus.v1.JobService", rpc);
        method.open(1.0);
        Self {
            inner,
            convert,
            method,
            log,
            ended: None,
            _permit: permit,
        }
    }
}

impl<S, F, I, M> Stream for Watched<S, F>
where
    S: Stream<Item = Result<I, AppError>>,
    F: FnMut(&I) -> (M, bool),
{
    type Item = Result<M, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let log: &CallLog = this.log;
        match this.inner.poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(item))) => {
                let (message, is_event) = (this.convert)(&item);
                this.method.sent(is_event);
                Poll::Ready(Some(Ok(message)))
            }
            Poll::Ready(Some(Err(err))) => {
                *this.ended = Some(end_reason(&err));
                let status = Status::from(err);
                log.watch_ended(&status);
                Poll::Ready(Some(Err(status)))
            }
            Poll::Ready(None) => {
                if this.ended.is_none() {
                    *this.ended = Some("terminal");
                    tracing::debug!(parent: &log.span(), "watch ended: the job is finished");
                }
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_taken_when_sane_and_made_otherwise() {
        let mut headers = http::HeaderMap::new();
        let made = RequestId::of(&headers);
        assert_eq!(made.as_str().len(), 16);
        assert!(
            made.as_str()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(
            made.as_str(),
            RequestId::of(&headers).as_str(),
            "new each time"
        );
        headers.insert(
            "x-request-id",
            "trace-4bf92f3577b34da6:00f067aa".parse().unwrap(),
        );
        assert_eq!(
            RequestId::of(&headers).as_str(),
            "trace-4bf92f3577b34da6:00f067aa"
        );
        for insane in ["has space", "semi;colon", "<script>", &"a".repeat(129)] {
            headers.insert("x-request-id", insane.parse().unwrap());
            assert_ne!(RequestId::of(&headers).as_str(), insane, "{insane}");
        }
    }

    #[test]
    fn paths_map_to_known_methods_or_unknown() {
        let m = method_of("/jobstatus.v1.JobService/WatchJob");
        assert_eq!(
            (m.service, m.method, m.kind),
            ("jobstatus.v1.JobService", "WatchJob", "server_stream")
        );
        let m = method_of("/jobstatus.v1.JobAdminService/ConfirmPayment");
        assert_eq!(m.kind, "unary");
        assert_eq!(
            method_of("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").kind,
            "bidi_stream"
        );
        for path in ["/x/y", "/jobstatus.v1.JobService/Nope", "", "/", "no-slash"] {
            assert_eq!(method_of(path).service, "unknown", "{path}");
        }
    }
}
