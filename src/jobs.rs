//! The application service both gRPC services call: commands go to storage
//! and, once committed, to the hub; reads check access; `watch` keeps the
//! watcher promise (snapshot first, every revision once and in order, lag
//! and gaps recovered from the log). Nothing here knows about gRPC.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_stream::try_stream;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;
use crate::domain::{Caller, Job, JobId, Request};
use crate::error::AppError;
use crate::hub::{Hub, SharedEvent};
use crate::storage::{Outcome, Store};
use crate::telemetry::metrics as m;

/// How many events one catch-up read takes from the log.
const CATCH_UP_PAGE: u32 = 256;

/// One message on a watch stream.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// Boxed: an idle stream holds room for one item, and a job is big.
    Snapshot {
        job: Box<Job>,
        reason: SnapshotReason,
    },
    Event(SharedEvent),
    Heartbeat {
        revision: i64,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotReason {
    Initial,
    Resync,
}

/// Counters an operator (and the tests) can read.
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Times a watcher fell behind (lag or gap) and was caught up from the log.
    pub catch_ups: AtomicU64,
}

/// Cheap to clone: every watch stream holds one for its whole life, so it
/// is one pointer.
#[derive(Debug, Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    hub: Hub,
    stats: WatchStats,
    /// Cancelled when the server shuts down; ends every watch.
    shutdown: CancellationToken,
    heartbeat: Duration,
}

impl Jobs {
    pub fn new(store: Store, hub: Hub, shutdown: CancellationToken, heartbeat: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                hub,
                stats: WatchStats::default(),
                shutdown,
                heartbeat,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn stats(&self) -> &WatchStats {
        &self.inner.stats
    }

    /// Cancelled when the server shuts down (ends every watch stream).
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// How long an idle watch stream waits before sending a heartbeat.
    pub fn heartbeat(&self) -> Duration {
        self.inner.heartbeat
    }

    /// Runs a command. Returns the job as the command left it (for a
    /// replayed request id: as the original request left it).
    ///
    /// The store's writer publishes the change as it commits it, so a
    /// caller that goes away (deadline, reset) while it is being committed
    /// takes nothing from its watchers.
    pub async fn execute(&self, request: Request) -> Result<Job, AppError> {
        let command = request.command.clone();
        let (job_id, request_id) = (request.job_id, request.request_id.clone());
        match self.inner.store.execute(request).await? {
            Outcome::Changed(event) => Ok(event.job.clone()),
            Outcome::Unchanged(job) => Ok(job),
            Outcome::Replayed(event)
                if event.job_id() == job_id && command.is_answered_by(&event) =>
            {
                Ok(event.job)
            }
            Outcome::Replayed(_) => Err(AppError::RequestIdReused {
                request_id: request_id.map(|r| r.to_string()).unwrap_or_default(),
            }),
        }
    }

    /// The job now, if the caller may see it.
    pub async fn get(&self, caller: &Caller, id: JobId) -> Result<Job, AppError> {
        let job = self
            .inner
            .store
            .get_job(id)
            .await?
            .ok_or_else(|| caller.missing(id))?;
        caller.role_on(&job)?;
        Ok(job)
    }

    /// [`Jobs::get`] with the job boxed, for watch streams (which box this
    /// future too): a stream's state is sized for its largest moment, so it
    /// must hold neither a job nor a store future inline.
    async fn get_boxed(&self, caller: &Caller, id: JobId) -> Result<Box<Job>, AppError> {
        self.get(caller, id).await.map(Box::new)
    }

    /// The watch stream of `id` for `identity`. Without `after` it opens with
    /// a snapshot; with it, it replays the log after that revision. It ends
    /// with an error on shutdown (resumable), token expiry or lost access,
    /// and cleanly after a terminal event.
    pub fn watch(
        &self,
        identity: Identity,
        id: JobId,
        after: Option<i64>,
    ) -> impl Stream<Item = Result<WatchItem, AppError>> + Send + 'static {
        let this = self.clone();
        try_stream! {
            // Subscribe before reading, so nothing committed after the read
            // can be missed; anything already read is skipped by revision.
            let mut subscription = this.inner.hub.subscribe(id);
            // Store futures and jobs are boxed: held inline, the largest
            // store future (~8.7 KB with both backends) or a job (168 bytes)
            // would size this stream's state for its whole life, and idle
            // watch streams are what the server holds most of.
            let job = Box::pin(this.get_boxed(&identity.caller, id)).await?;
            // Access was just checked against the job as it is now, so the
            // history up to here (a replay) is the caller's to see even where
            // an old event did not name them (a worker assigned later).
            let verified = job.revision;
            let mut last = job.revision;
            let mut pending: VecDeque<SharedEvent> = VecDeque::new();
            let mut catching_up = false;
            let mut announce_caught_up = false;
            match after {
                Some(seen) if seen == job.revision && job.status.is_terminal() => {
                    // Nothing happened since and nothing ever will.
                    yield WatchItem::Heartbeat { revision: seen, at: Utc::now() };
                    return;
                }
                Some(seen) if seen <= job.revision => {
                    last = seen;
                    catching_up = true;
                    announce_caught_up = true;
                }
                Some(_) => {
                    // The watcher is ahead of the log (e.g. another database):
                    // tell it to start over rather than skip anything.
                    let terminal = job.status.is_terminal();
                    metrics::counter!(m::RESYNCS).increment(1);
                        yield WatchItem::Snapshot { job, reason: SnapshotReason::Resync };
                    if terminal {
                        return;
                    }
                }
                None => {
                    let terminal = job.status.is_terminal();
                    yield WatchItem::Snapshot { job, reason: SnapshotReason::Initial };
                    if terminal {
                        return;
                    }
                }
            }

            let mut deadlines = Deadlines::new(identity.expires_at, this.inner.heartbeat);
            let timer = tokio::time::sleep_until(deadlines.next());
            tokio::pin!(timer);
            // Made once, not per wake-up: every watcher waits on the one
            // server-wide token, and registering and dropping a waiter on
            // it takes its lock, 2 × 20 000 times when a hot job's event
            // wakes 20 000 watchers at once.
            let shutdown = this.inner.shutdown.clone().cancelled_owned();
            tokio::pin!(shutdown);

            loop {
                while let Some(event) = pending.pop_front() {
                    if event.revision() <= last {
                        continue;
                    }
                    if event.revision() != last + 1 {
                        // The log has a hole it cannot fill: say so in-band.
                        let job = Box::pin(this.get_boxed(&identity.caller, id)).await?;
                        last = job.revision;
                        pending.clear();
                        let terminal = job.status.is_terminal();
                        metrics::counter!(m::RESYNCS).increment(1);
                        yield WatchItem::Snapshot { job, reason: SnapshotReason::Resync };
                        if terminal {
                            return;
                        }
                        break;
                    }
                    if let Caller::User(user) = &identity.caller
                        && event.revision() > verified
                        && event.job.role_of(user).is_none()
                    {
                        Err(AppError::AccessLost(id))?;
                    }
                    last = event.revision();
                    let terminal = event.job.status.is_terminal();
                    yield WatchItem::Event(event);
                    deadlines.heartbeat_sent(this.inner.heartbeat);
                    if terminal {
                        return;
                    }
                }
                if catching_up {
                    let page = Box::pin(this.inner.store.events_after(id, last, CATCH_UP_PAGE)).await?;
                    catching_up = page.len() == CATCH_UP_PAGE as usize;
                    metrics::counter!(m::CATCH_UP_EVENTS).increment(page.len() as u64);
                    pending.extend(page.into_iter().map(Arc::new));
                    continue;
                }
                if announce_caught_up {
                    // A resumed stream says when the replay is over, so a
                    // client knows it is live even if nothing happens.
                    announce_caught_up = false;
                    yield WatchItem::Heartbeat { revision: last, at: Utc::now() };
                    deadlines.heartbeat_sent(this.inner.heartbeat);
                }
                let wake = tokio::select! {
                    biased;
                    () = &mut shutdown => Wake::Shutdown,
                    () = &mut timer => Wake::Timer,
                    received = subscription.recv() => Wake::Received(received),
                };
                match wake {
                    Wake::Shutdown => Err(AppError::ShuttingDown { job: id, revision: last })?,
                    Wake::Timer => match deadlines.fired(this.inner.heartbeat, timer.as_mut()) {
                        Some(Deadline::Expired) => Err(AppError::Auth(crate::auth::AuthError::Expired))?,
                        Some(Deadline::Heartbeat) => yield WatchItem::Heartbeat { revision: last, at: Utc::now() },
                        None => {}
                    },
                    Wake::Received(Ok(event)) if event.revision() <= last => {}
                    Wake::Received(Ok(event)) if event.revision() == last + 1 => pending.push_back(event),
                    // A gap (events published out of order) or a lag: the
                    // log has everything up to what we just saw, so read it.
                    Wake::Received(Ok(_)) | Wake::Received(Err(RecvError::Lagged(_))) => {
                        tracing::debug!(job_id = %id, last, "watcher catching up from the log");
                        this.inner.stats.catch_ups.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(m::CATCH_UPS).increment(1);
                        catching_up = true;
                    }
                    Wake::Received(Err(RecvError::Closed)) => {
                        // The topic lives while this subscription does.
                        Err(AppError::ShuttingDown { job: id, revision: last })?;
                    }
                }
            }
        }
    }
}

enum Wake {
    Shutdown,
    Timer,
    Received(Result<SharedEvent, RecvError>),
}

/// A stream's two deadlines, its token's expiry and its next heartbeat,
/// served by one timer: streams are idle most of their lives, and a second
/// timer (an `Interval` boxes its own) cost every stream ~150 bytes more.
#[derive(Debug)]
pub(crate) struct Deadlines {
    expires: Instant,
    next_heartbeat: Instant,
}

/// Which deadline the timer fired for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deadline {
    Expired,
    Heartbeat,
}

impl Deadlines {
    pub(crate) fn new(expires_at: DateTime<Utc>, every: Duration) -> Self {
        Self {
            expires: instant_at(expires_at),
            next_heartbeat: Instant::now() + every,
        }
    }

    /// When the timer should next fire.
    pub(crate) fn next(&self) -> Instant {
        self.expires.min(self.next_heartbeat)
    }

    /// Something was just sent: the next heartbeat is a full period
    /// (`every`) away. The timer is left alone (it fires early and is
    /// re-armed then): resetting it would take the runtime's timer lock once
    /// per watcher per event, which is the hot path of a fan-out.
    pub(crate) fn heartbeat_sent(&mut self, every: Duration) {
        self.next_heartbeat = Instant::now() + every;
    }

    /// The timer fired: the token expired, a heartbeat is due (and the
    /// timer is set for the one after), or neither yet (something was sent
    /// since it was set) and it is set again.
    pub(crate) fn fired(&mut self, every: Duration, timer: Pin<&mut Sleep>) -> Option<Deadline> {
        let now = Instant::now();
        if now >= self.expires {
            return Some(Deadline::Expired);
        }
        let due = now >= self.next_heartbeat;
        if due {
            self.next_heartbeat = now + every;
        }
        timer.reset(self.next());
        due.then_some(Deadline::Heartbeat)
    }
}

/// The tokio instant at which wall-clock time `at` arrives.
pub(crate) fn instant_at(at: DateTime<Utc>) -> Instant {
    let remaining = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    // Far-future expiries would overflow Instant; a year is forever here.
    Instant::now() + remaining.min(Duration::from_secs(365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use crate::domain::ServiceId;
    use crate::storage::StoreOptions;

    /// One timer serves both deadlines: it fires early after something was
    /// sent (nothing is due, and it is re-armed for the moved heartbeat),
    /// and expiry wins over a heartbeat that is due at the same time.
    #[tokio::test]
    async fn deadlines_share_one_timer() {
        let hour = Duration::from_secs(3600);
        let later = Utc::now() + chrono::Duration::hours(2);

        let mut deadlines = Deadlines::new(later, Duration::ZERO);
        let timer = tokio::time::sleep_until(deadlines.next());
        tokio::pin!(timer);
        // With a zero period a heartbeat is always due.
        assert_eq!(
            deadlines.fired(Duration::ZERO, timer.as_mut()),
            Some(Deadline::Heartbeat)
        );

        // Something was sent: the heartbeat moved an hour away, so the
        // timer (set for the old one) finds nothing due and is re-armed.
        deadlines.heartbeat_sent(hour);
        assert_eq!(deadlines.fired(hour, timer.as_mut()), None);
        assert_eq!(timer.deadline(), deadlines.next());
        assert!(deadlines.next() > Instant::now() + Duration::from_secs(3500));

        let mut expired = Deadlines::new(Utc::now() - chrono::Duration::seconds(1), Duration::ZERO);
        assert_eq!(
            expired.fired(Duration::ZERO, timer.as_mut()),
            Some(Deadline::Expired)
        );
    }

    /// The server holds more idle watch streams than anything else, and a
    /// stream's state is sized for its largest moment, so it must not
    /// carry a job, a second timer or a store future inline (each of
    /// those once grew it: to ~1.2 KB, ~5 KB, ~9 KB).
    #[tokio::test]
    async fn idle_watch_streams_stay_small() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("size.db").display());
        let hub = Hub::new(16);
        let store = Store::connect(&url, &StoreOptions::default(), Arc::new(hub.clone()))
            .await
            .unwrap();
        let jobs = Jobs::new(
            store,
            hub,
            CancellationToken::new(),
            Duration::from_secs(15),
        );
        let identity = Identity {
            caller: Caller::Service(ServiceId::parse("service", "svc").unwrap()),
            expires_at: Utc::now(),
        };
        let stream = jobs.watch(identity.clone(), JobId::new(1).unwrap(), None);
        let size = std::mem::size_of_val(&stream);
        eprintln!("watch stream state: {size} bytes");
        // 688 bytes: store futures, the job and AppError's largest variants
        // are boxed, so an idle stream holds only its state machine.
        assert!(size <= 768, "a watch stream's state grew to {size} bytes");

        let stream = crate::my_jobs::watch(&jobs, identity, HashMap::new());
        let size = std::mem::size_of_val(&stream);
        eprintln!("WatchMyJobs stream state: {size} bytes");
        // 1976 bytes (5 KB with store futures and jobs inline).
        assert!(
            size <= 2048,
            "a WatchMyJobs stream's state grew to {size} bytes"
        );
        jobs.store().close().await;
    }
}
