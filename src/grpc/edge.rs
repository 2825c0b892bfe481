//! The edge layer: what every call passes through before its service, inside
//! the grpc-web layer so that everything it answers is framed for browsers
//! too. For each call it
//!
//! - verifies the bearer token once ([`super::auth::authenticate`]) and
//!   leaves the outcome for the services' interceptor;
//! - counts calls without a valid token against their connection's
//!   `max_anonymous_streams` (health and reflection need no token, so
//!   anyone can open them) and answers RESOURCE_EXHAUSTED beyond it;
//! - gives the request's body the read deadline ([`ReadDeadline`]): inside
//!   grpc-web, so that its answer reaches the decoder as DEADLINE_EXCEEDED
//!   rather than as tonic-web's own INTERNAL;
//! - enforces the caller's deadline (`grpc-timeout`, [`super::deadline`]);
//! - restates the statuses tonic makes itself before any handler runs
//!   ([`super::status::restate`]);
//! - gives the call its request id (the caller's `x-request-id`, or a new
//!   one) for every log line, and echoes it in the response;
//! - times the call and records how it ended ([`super::observe`]), and
//!   keeps it counted among its connection's open calls until its response
//!   ends.
//!
//! It must not read request bodies: the connection's read deadline and the
//! services' message size limits bound them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use super::auth::{CallPath, authenticate};
use super::connection::{Anonymous, Connection, InFlight, ReadDeadline};
use super::deadline::grpc_timeout;
use super::observe::{GRPC_STATUS, RequestId, RpcTiming, status_code};
use super::status::restate;
use crate::auth::Verifier;
use crate::error::{AppError, Limit};

/// Applies [`Edge`].
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    verifier: Verifier,
    max_anonymous_streams: usize,
    read_timeout: Duration,
}

impl EdgeLayer {
    pub fn new(verifier: Verifier, max_anonymous_streams: usize, read_timeout: Duration) -> Self {
        Self {
            verifier,
            max_anonymous_streams,
            read_timeout,
        }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Edge {
            inner,
            verifier: self.verifier.clone(),
            max_anonymous_streams: self.max_anonymous_streams,
            read_timeout: self.read_timeout,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    verifier: Verifier,
    max_anonymous_streams: usize,
    read_timeout: Duration,
}

type BoxFuture<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

impl<S> Service<Request<Body>> for Edge<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let mut rpc = RpcTiming::start(request.uri().path());
        let request_id = RequestId::of(request.headers());
        let read_timeout = self.read_timeout;
        let mut request =
            request.map(|body| Body::new(ReadDeadline::starting_now(body, read_timeout)));
        let authentication = authenticate(request.headers(), &self.verifier);
        let connection = request.extensions().get::<Arc<Connection>>().cloned();
        // The connection's open calls, for its idle timer; without a
        // connection (a service called directly) nothing is counted.
        let open = connection.as_ref().map(Connection::enter);
        let anonymous = match &connection {
            Some(connection) if !authentication.is_verified() => {
                match connection.enter_anonymous(self.max_anonymous_streams) {
                    Some(counted) => Some(counted),
                    None => {
                        let limit = self.max_anonymous_streams;
                        let status =
                            Status::from(AppError::Limit(Limit::AnonymousStreams { limit }));
                        rpc.finish(status.code());
                        return Box::pin(async move { Ok(status.into_http()) });
                    }
                }
            }
            _ => None,
        };
        if !authentication.is_verified() {
            let path = CallPath(request.uri().path().into());
            request.extensions_mut().insert(path);
        }
        request.extensions_mut().insert(authentication);
        request.extensions_mut().insert(request_id.clone());
        let timeout = grpc_timeout(request.headers());
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = match timeout {
                None => call.await?,
                Some(timeout) => match tokio::time::timeout(timeout, call).await {
                    Ok(answer) => answer?,
                    Err(_) => {
                        let status = Status::from(AppError::DeadlineExceeded);
                        rpc.finish(status.code());
                        let mut response = status.into_http();
                        request_id.echo(response.headers_mut());
                        return Ok(response);
                    }
                },
            };
            let mut response = restated(response);
            request_id.echo(response.headers_mut());
            if let Some(code) = status_code(response.headers()) {
                // Trailers-only: the call ended with its head.
                rpc.finish(code);
            }
            // The response holds what the call holds until it ends: its
            // timing, its place among the connection's open calls (and
            // anonymous ones: a Health/Watch stream stays open for as long
            // as the client keeps it).
            Ok(response.map(|body| {
                Body::new(Observed {
                    inner: body,
                    rpc,
                    _open: open,
                    _anonymous: anonymous,
                })
            }))
        })
    }
}

/// A trailers-only answer (the status in the head, no body: every error
/// raised before a handler runs) restated if tonic made it.
fn restated(response: Response<Body>) -> Response<Body> {
    if !response.headers().contains_key(&GRPC_STATUS) {
        return response;
    }
    match Status::from_header_map(response.headers()).and_then(|status| restate(&status)) {
        Some(ours) => ours.into_http(),
        None => response,
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the call's status when its trailers
    /// go out, and holds the call's counted places until it is dropped
    /// (the response ended, or the client went away).
    struct Observed {
        #[pin]
        inner: Body,
        rpc: RpcTiming,
        _open: Option<InFlight>,
        _anonymous: Option<Anonymous>,
    }
}

impl HttpBody for Observed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_code) {
                    this.rpc.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => this.rpc.finish(status.code()),
            Poll::Ready(None) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
