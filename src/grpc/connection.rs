//! One client connection as the calls on it see it: who is on the other end
//! (the peer address, TLS or not) and how many calls it has open (with and
//! without a valid token). [`PerConnection`] wraps the shared service once
//! per connection and hands every request its [`Connection`] as an
//! extension. [`ReadDeadline`] is the body wrapper that bounds the time a
//! request's message may take to arrive (the edge layer applies it).
//!
//! Nothing here may hold a request's bytes: bodies pass through as they
//! are polled, and a body that has not ended within the read timeout is
//! ended with an error, so whatever it had buffered is freed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tonic::body::Body;
use tower::Service;

use crate::error::{AppError, Limit};

/// What the server knows about one accepted connection. Shared by the
/// connection's task and every request on it (as a request extension).
#[derive(Debug)]
pub struct Connection {
    peer: SocketAddr,
    tls: bool,
    started: Instant,
    /// Requests whose response has not yet ended.
    in_flight: AtomicUsize,
    /// Requests without a valid token whose response has not yet ended.
    anonymous: AtomicUsize,
    /// Milliseconds after `started` when a request last began or ended.
    last_active_ms: AtomicU64,
}

impl Connection {
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        Self {
            peer,
            tls,
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            anonymous: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
        }
    }

    /// The client's address, as the TCP connection reports it.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    /// Counts one more open request until the returned guard drops.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    /// Counts one more open request without a valid token, unless `limit`
    /// are already open on this connection.
    pub fn enter_anonymous(self: &Arc<Self>, limit: usize) -> Option<Anonymous> {
        self.anonymous
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < limit).then_some(open + 1)
            })
            .ok()
            .map(|_| Anonymous(self.clone()))
    }

    /// Resolves once no request has been open on this connection for
    /// `idle`. Wakes at most once per `idle` while calls are open.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let last =
                self.started + Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
            let now = Instant::now();
            if self.in_flight.load(Ordering::Acquire) == 0 && now >= last + idle {
                return;
            }
            let wake = if self.in_flight.load(Ordering::Acquire) == 0 {
                last + idle
            } else {
                now + idle
            };
            tokio::time::sleep_until(wake.max(now + Duration::from_millis(1))).await;
        }
    }
}

/// One open request on a connection; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight(Arc<Connection>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

/// One open request without a valid token; dropping it ends the count.
#[derive(Debug)]
pub struct Anonymous(Arc<Connection>);

impl Drop for Anonymous {
    fn drop(&mut self) {
        self.0.anonymous.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The shared service, as one connection calls it: every request gets the
/// [`Connection`] as an extension (the edge layer counts its open calls).
#[derive(Debug, Clone)]
pub struct PerConnection<S> {
    inner: S,
    connection: Arc<Connection>,
}

impl<S> PerConnection<S> {
    pub fn new(inner: S, connection: Arc<Connection>) -> Self {
        Self { inner, connection }
    }
}

impl<S, B> Service<Request<B>> for PerConnection<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(self.connection.clone());
        self.inner.call(request)
    }
}

pin_project! {
    /// A request body that must end by `deadline`; past it, the body ends
    /// with DEADLINE_EXCEEDED. Most bodies arrive whole in their first
    /// read, so the timer is only made once a read has to wait.
    pub struct ReadDeadline<B> {
        #[pin]
        inner: B,
        #[pin]
        timer: Option<Sleep>,
        deadline: Instant,
        read_timeout: Duration,
        ended: bool,
    }
}

impl<B> ReadDeadline<B> {
    /// `inner`, which must end within `read_timeout` from now.
    pub fn starting_now(inner: B, read_timeout: Duration) -> Self {
        Self::new(inner, Instant::now() + read_timeout, read_timeout)
    }

    fn new(inner: B, deadline: Instant, read_timeout: Duration) -> Self {
        Self {
            inner,
            timer: None,
            deadline,
            read_timeout,
            ended: false,
        }
    }
}

impl<B> HttpBody for ReadDeadline<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = Bytes;
    type Error = tonic::codegen::StdError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if *this.ended {
            return this.inner.poll_frame(cx).map_err(Into::into);
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(None) => {
                *this.ended = true;
                this.timer.set(None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                if this.inner.is_end_stream() {
                    *this.ended = true;
                    this.timer.set(None);
                }
                Poll::Ready(Some(frame.map_err(Into::into)))
            }
            Poll::Pending => {
                if this.timer.is_none() {
                    this.timer
                        .set(Some(tokio::time::sleep_until(*this.deadline)));
                }
                let expired = this
                    .timer
                    .as_mut()
                    .as_pin_mut()
                    .is_some_and(|timer| timer.poll(cx).is_ready());
                if expired {
                    *this.ended = true;
                    this.timer.set(None);
                    let status = tonic::Status::from(AppError::Limit(Limit::RequestReadTimeout {
                        after: *this.read_timeout,
                    }));
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use http_body_util::StreamBody;

    fn connection() -> Arc<Connection> {
        Arc::new(Connection::new("127.0.0.1:1".parse().unwrap(), false))
    }

    #[test]
    fn anonymous_requests_are_counted_up_to_the_limit() {
        let conn = connection();
        let a = conn.enter_anonymous(2).unwrap();
        let _b = conn.enter_anonymous(2).unwrap();
        assert!(conn.enter_anonymous(2).is_none());
        drop(a);
        assert!(conn.enter_anonymous(2).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_open_requests_and_then_the_idle_time() {
        let conn = connection();
        let open = conn.enter();
        let idle = conn.idle_for(Duration::from_secs(5));
        tokio::pin!(idle);
        assert!(
            tokio::time::timeout(Duration::from_secs(60), &mut idle)
                .await
                .is_err(),
            "not idle while a request is open"
        );
        drop(open);
        let ended = Instant::now();
        idle.await;
        let waited = ended.elapsed();
        assert!(waited >= Duration::from_secs(5), "{waited:?}");
        assert!(waited <= Duration::from_secs(11), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_end_in_time_is_ended_with_deadline_exceeded() {
        // One frame, then nothing: a client that stalls mid-message.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        tx.send(Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x10"))))
            .await
            .unwrap();
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let timeout = Duration::from_secs(10);
        let body = ReadDeadline::new(StreamBody::new(stream), Instant::now() + timeout, timeout);
        tokio::pin!(body);
        assert!(body.frame().await.unwrap().is_ok());
        let err = body.frame().await.unwrap().unwrap_err();
        let status = err.downcast::<tonic::Status>().unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(status.message().contains("10 s"), "{}", status.message());
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_ends_in_time_is_passed_through() {
        let body = http_body_util::Full::new(Bytes::from_static(b"whole"));
        let timeout = Duration::from_millis(1);
        let body = ReadDeadline::new(body, Instant::now() + timeout, timeout);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"whole");
    }
}
