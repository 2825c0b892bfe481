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
//!   ([`super::status::restate`]).
//!
//! It must not read request bodies: the connection's read deadline and the
//! services' message size limits bound them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use super::auth::{CallPath, authenticate};
use super::connection::{Connection, Holding, ReadDeadline};
use super::deadline::grpc_timeout;
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
        let read_timeout = self.read_timeout;
        let mut request =
            request.map(|body| Body::new(ReadDeadline::starting_now(body, read_timeout)));
        let authentication = authenticate(request.headers(), &self.verifier);
        let anonymous = match request.extensions().get::<Arc<Connection>>() {
            Some(connection) if !authentication.is_verified() => {
                match connection.enter_anonymous(self.max_anonymous_streams) {
                    Some(counted) => Some(counted),
                    None => {
                        let limit = self.max_anonymous_streams;
                        return Box::pin(async move {
                            Ok(
                                Status::from(AppError::Limit(Limit::AnonymousStreams { limit }))
                                    .into_http(),
                            )
                        });
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
        let timeout = grpc_timeout(request.headers());
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = match timeout {
                None => call.await?,
                Some(timeout) => match tokio::time::timeout(timeout, call).await {
                    Ok(answer) => answer?,
                    Err(_) => return Ok(Status::from(AppError::DeadlineExceeded).into_http()),
                },
            };
            let response = restated(response);
            Ok(match anonymous {
                // Counted until the response ends (a Health/Watch stream
                // stays open for as long as the client keeps it).
                Some(counted) => response.map(|body| Body::new(Holding::new(body, counted))),
                None => response,
            })
        })
    }
}

/// A trailers-only answer (the status in the head, no body: every error
/// raised before a handler runs) restated if tonic made it.
fn restated(response: Response<Body>) -> Response<Body> {
    if !response.headers().contains_key("grpc-status") {
        return response;
    }
    match Status::from_header_map(response.headers()).and_then(|status| restate(&status)) {
        Some(ours) => ours.into_http(),
        None => response,
    }
}
