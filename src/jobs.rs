//! The application service both gRPC services call: commands go to storage
//! and, once committed, to the hub; reads check access; `watch` keeps the
//! watcher promise (snapshot first, every revision once and in order, lag
//! and gaps recovered from the log). Nothing here knows about gRPC.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_stream::try_stream;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;
use crate::domain::{Caller, Job, JobId, Request};
use crate::error::AppError;
use crate::hub::{Hub, SharedEvent};
use crate::storage::{Outcome, Store};

/// How many events one catch-up read takes from the log.
const CATCH_UP_PAGE: u32 = 256;

/// One message on a watch stream.
#[derive(Debug, Clone)]
pub enum WatchItem {
    Snapshot { job: Job, reason: SnapshotReason },
    Event(SharedEvent),
    Heartbeat { revision: i64, at: DateTime<Utc> },
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

#[derive(Debug, Clone)]
pub struct Jobs {
    store: Store,
    hub: Hub,
    stats: Arc<WatchStats>,
    /// Cancelled when the server shuts down; ends every watch.
    shutdown: CancellationToken,
    heartbeat: Duration,
}

impl Jobs {
    pub fn new(store: Store, hub: Hub, shutdown: CancellationToken, heartbeat: Duration) -> Self {
        Self {
            store,
            hub,
            stats: Arc::default(),
            shutdown,
            heartbeat,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub fn stats(&self) -> &WatchStats {
        &self.stats
    }

    /// Cancelled when the server shuts down (ends every watch stream).
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// How long an idle watch stream waits before sending a heartbeat.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// Runs a command; publishes its event after the commit. Returns the job
    /// as the command left it (for a replayed request id: as the original
    /// request left it).
    ///
    /// Runs in its own task: if the caller goes away (deadline, reset) while
    /// the change is being committed, the commit still happens, so the
    /// publish must happen too, or watchers would not hear of a change that
    /// stands.
    pub async fn execute(&self, request: Request) -> Result<Job, AppError> {
        let this = self.clone();
        tokio::spawn(async move { this.execute_and_publish(request).await })
            .await
            .map_err(|e| AppError::Internal(format!("command task failed: {e}")))?
    }

    async fn execute_and_publish(&self, request: Request) -> Result<Job, AppError> {
        let command = request.command.clone();
        let (job_id, request_id) = (request.job_id, request.request_id.clone());
        match self.store.execute(request).await? {
            Outcome::Changed(event) => {
                let job = event.job.clone();
                self.hub.publish(Arc::new(event));
                Ok(job)
            }
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
            .store
            .get_job(id)
            .await?
            .ok_or_else(|| caller.missing(id))?;
        caller.role_on(&job)?;
        Ok(job)
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
            let mut subscription = this.hub.subscribe(id);
            // Store futures are boxed: held inline, the largest one (~8.7 KB
            // with both backends) would size this stream's state for its
            // whole life, and idle watch streams are what the server holds
            // most of.
            let job = Box::pin(this.get(&identity.caller, id)).await?;
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

            let expiry = tokio::time::sleep_until(instant_at(identity.expires_at));
            tokio::pin!(expiry);
            let mut heartbeat = tokio::time::interval_at(Instant::now() + this.heartbeat, this.heartbeat);
            heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);

            loop {
                while let Some(event) = pending.pop_front() {
                    if event.revision() <= last {
                        continue;
                    }
                    if event.revision() != last + 1 {
                        // The log has a hole it cannot fill: say so in-band.
                        let job = Box::pin(this.get(&identity.caller, id)).await?;
                        last = job.revision;
                        pending.clear();
                        let terminal = job.status.is_terminal();
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
                    heartbeat.reset();
                    if terminal {
                        return;
                    }
                }
                if catching_up {
                    let page = Box::pin(this.store.events_after(id, last, CATCH_UP_PAGE)).await?;
                    catching_up = page.len() == CATCH_UP_PAGE as usize;
                    pending.extend(page.into_iter().map(Arc::new));
                    continue;
                }
                if announce_caught_up {
                    // A resumed stream says when the replay is over, so a
                    // client knows it is live even if nothing happens.
                    announce_caught_up = false;
                    yield WatchItem::Heartbeat { revision: last, at: Utc::now() };
                    heartbeat.reset();
                }
                let wake = tokio::select! {
                    biased;
                    () = this.shutdown.cancelled() => Wake::Shutdown,
                    () = &mut expiry => Wake::Expired,
                    received = subscription.recv() => Wake::Received(received),
                    _ = heartbeat.tick() => Wake::Heartbeat,
                };
                match wake {
                    Wake::Shutdown => Err(AppError::ShuttingDown { job: id, revision: last })?,
                    Wake::Expired => Err(AppError::Auth(crate::auth::AuthError::Expired))?,
                    Wake::Heartbeat => yield WatchItem::Heartbeat { revision: last, at: Utc::now() },
                    Wake::Received(Ok(event)) if event.revision() <= last => {}
                    Wake::Received(Ok(event)) if event.revision() == last + 1 => pending.push_back(event),
                    // A gap (events published out of order) or a lag: the
                    // log has everything up to what we just saw, so read it.
                    Wake::Received(Ok(_)) | Wake::Received(Err(RecvError::Lagged(_))) => {
                        tracing::debug!(job_id = %id, last, "watcher catching up from the log");
                        this.stats.catch_ups.fetch_add(1, Ordering::Relaxed);
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
    Expired,
    Received(Result<SharedEvent, RecvError>),
    Heartbeat,
}

/// The tokio instant at which wall-clock time `at` arrives.
pub(crate) fn instant_at(at: DateTime<Utc>) -> Instant {
    let remaining = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    // Far-future expiries would overflow Instant; a year is forever here.
    Instant::now() + remaining.min(Duration::from_secs(365 * 24 * 3600))
}
