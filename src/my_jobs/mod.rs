//! WatchMyJobs: one stream carrying every job where the caller is the
//! client or the assigned worker, so a page listing many jobs needs one
//! connection instead of one WatchJob each (browsers on HTTP/1.1 get six).
//!
//! The promise is WatchJob's, per job: a snapshot (or a replay from the
//! caller's `after_revisions`), then every revision once and in order, with
//! holes and lag recovered from the log. On top of it, jobs join the stream
//! when they become the caller's (a snapshot of the job as the joining event
//! left it) and leave it with [`MyJobsItem::Left`] when the caller loses
//! access; nothing about a job is sent after it left.
//!
//! How changes arrive: the per-user channels of [`fanout`] (owned by the
//! hub, which publishes every event to them too), which carry every event
//! naming the user plus events of the jobs this stream tracks (so a
//! reassigned worker hears of its removal). Every decision is taken on
//! per-job revisions, so the order in which events of different jobs
//! interleave does not matter.
//!
//! Everything of the feature is here: the stream, its fan-out, its resume
//! map's validation. Its statuses are mapped with every other status in
//! `grpc::status`; its tests are `tests/api/my_jobs.rs`.

pub mod fanout;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_stream::try_stream;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::{AuthError, Identity};
use crate::domain::{Caller, DomainError, EventKind, Job, JobId, UserId};
use crate::error::AppError;
use crate::hub::SharedEvent;
use crate::jobs::{Deadline, Deadlines, Jobs, SnapshotReason};
use crate::storage::StorageError;
use crate::telemetry::metrics as m;

/// The most jobs one stream lists at start (and on a resync). A user with
/// more sees the unfinished and most recently updated ones, and the others
/// as they change; resumed jobs outside the listing are looked up by id.
pub const MAX_LISTED_JOBS: u32 = 1000;

/// The most entries `after_revisions` may have.
pub const MAX_RESUME_ENTRIES: usize = 10_000;

/// How many resumed jobs one lookup reads.
const LOOKUP_CHUNK: usize = 1000;

/// How many events one catch-up read takes from the log.
const CATCH_UP_PAGE: u32 = 256;

/// One message on a WatchMyJobs stream.
#[derive(Debug, Clone)]
pub enum MyJobsItem {
    /// Boxed, as in [`WatchItem`](crate::jobs::WatchItem).
    Snapshot {
        job: Box<Job>,
        reason: SnapshotReason,
    },
    Event(SharedEvent),
    /// Sent once the initial snapshots and replays are done, then while idle.
    Heartbeat {
        at: DateTime<Utc>,
    },
    /// The caller lost access at `revision` (0: while it was disconnected).
    Left {
        job: JobId,
        revision: i64,
        cause: Option<EventKind>,
    },
}

/// What to do with one event, given the revisions the stream has sent.
#[derive(Debug)]
enum Step {
    /// Already sent, or about a job that is not the caller's.
    Skip,
    /// The next revision of a tracked job.
    Apply,
    /// The next revision of a tracked job, and it removes the caller.
    Leave,
    /// An untracked job that this event makes the caller's.
    Join,
    /// Revisions are missing before this one: read the log.
    Gap,
}

fn step(
    tracked: &HashMap<JobId, i64>,
    finished: &HashSet<JobId>,
    user: &UserId,
    event: &SharedEvent,
) -> Step {
    let has_role = event.job.role_of(user).is_some();
    match tracked.get(&event.job_id()) {
        // Its terminal state was sent: nothing can follow it.
        None if finished.contains(&event.job_id()) => Step::Skip,
        None if has_role => Step::Join,
        None => Step::Skip,
        Some(&last) if event.revision() <= last => Step::Skip,
        Some(&last) if event.revision() == last + 1 => {
            if has_role {
                Step::Apply
            } else {
                Step::Leave
            }
        }
        Some(_) => Step::Gap,
    }
}

/// A job by id, boxed: a stream's state is sized for its largest moment,
/// and it must not hold a job inline.
async fn job_boxed(jobs: &Jobs, id: JobId) -> Result<Option<Box<Job>>, StorageError> {
    Ok(jobs.store().get_job(id).await?.map(Box::new))
}

/// The WatchMyJobs stream for `identity`; `after` maps job ids to the last
/// revision the caller applied. It ends with an error on shutdown
/// (resumable), token expiry, or a service token; never on its own.
pub fn watch(
    jobs: &Jobs,
    identity: Identity,
    after: HashMap<JobId, i64>,
) -> impl Stream<Item = Result<MyJobsItem, AppError>> + Send + 'static {
    let this = jobs.clone();
    // Store futures are boxed below, as in `Jobs::watch`: inline, they
    // made every idle stream's state 5 KB.
    try_stream! {
        let Caller::User(user) = identity.caller.clone() else {
            Err(AppError::NotAUser)?;
            return;
        };
        // Subscribe before listing, so nothing committed after the
        // listing is missed; what the listing covers is skipped by
        // revision.
        let mut subscription = this.hub().users().subscribe(user.as_str());
        let mut tracked: HashMap<JobId, i64> = HashMap::new();
        // Jobs whose terminal state the caller has: they cannot change
        // again, so they are neither tracked nor caught up (only their
        // ids are kept, to skip stale copies of their events).
        let mut finished: HashSet<JobId> = HashSet::new();
        let mut catch_up: VecDeque<JobId> = VecDeque::new();

        let listed = Box::pin(this.store().jobs_of_user(user.as_str(), MAX_LISTED_JOBS)).await?;
        let mut resumed: HashMap<JobId, i64> = after;
        for job in listed {
            let id = job.id;
            match resumed.remove(&id) {
                // The caller already has the terminal state.
                Some(seen) if seen == job.revision && job.status.is_terminal() => {
                    finished.insert(id);
                }
                Some(seen) if seen <= job.revision => {
                    subscription.track(id);
                    tracked.insert(id, seen);
                    if seen < job.revision {
                        catch_up.push_back(id);
                    }
                }
                other => {
                    if job.status.is_terminal() {
                        finished.insert(id);
                    } else {
                        subscription.track(id);
                        tracked.insert(id, job.revision);
                    }
                    let reason = if other.is_some() {
                        metrics::counter!(m::RESYNCS).increment(1);
                        SnapshotReason::Resync
                    } else {
                        SnapshotReason::Initial
                    };
                    yield MyJobsItem::Snapshot { job: Box::new(job), reason };
                }
            }
        }
        // Resumed jobs outside the listing: the listing is capped, so
        // look each one up before saying it left. Those that are no
        // longer the caller's (or never were) leave, and nothing of
        // what happened since is sent.
        let mut unlisted: Vec<(JobId, i64)> = resumed.into_iter().collect();
        unlisted.sort_unstable();
        // Read in a few queries, not one per job: a client may resume
        // up to MAX_RESUME_ENTRIES jobs at once.
        let ids: Vec<JobId> = unlisted.iter().map(|(id, _)| *id).collect();
        let mut found: HashMap<JobId, Box<Job>> = HashMap::new();
        for chunk in ids.chunks(LOOKUP_CHUNK) {
            for job in Box::pin(this.store().jobs_by_ids(chunk)).await? {
                found.insert(job.id, Box::new(job));
            }
        }
        for (id, seen) in unlisted {
            match found.remove(&id) {
                Some(job) if job.role_of(&user).is_some() => {
                    if seen == job.revision && job.status.is_terminal() {
                        finished.insert(id);
                    } else if seen <= job.revision {
                        subscription.track(id);
                        tracked.insert(id, seen);
                        if seen < job.revision {
                            catch_up.push_back(id);
                        }
                    } else {
                        if job.status.is_terminal() {
                            finished.insert(id);
                        } else {
                            subscription.track(id);
                            tracked.insert(id, job.revision);
                        }
                        metrics::counter!(m::RESYNCS).increment(1);
                                    yield MyJobsItem::Snapshot { job, reason: SnapshotReason::Resync };
                    }
                }
                _ => yield MyJobsItem::Left { job: id, revision: 0, cause: None },
            }
        }

        let mut deadlines = Deadlines::new(identity.expires_at, this.heartbeat());
        let timer = tokio::time::sleep_until(deadlines.next());
        tokio::pin!(timer);
        let mut announce_caught_up = true;
        let mut pending: VecDeque<SharedEvent> = VecDeque::new();

        loop {
            // Jobs with missing revisions, from the log.
            while let Some(id) = catch_up.pop_front() {
                // Each read may wait on the database: do not hold a
                // shutdown or outlive the token meanwhile.
                if this.shutdown_token().is_cancelled() {
                    Err(AppError::ShuttingDownResumeAll)?;
                }
                if Utc::now() >= identity.expires_at {
                    Err(AppError::Auth(AuthError::Expired))?;
                }
                let Some(&last) = tracked.get(&id) else { continue };
                let page = Box::pin(this.store().events_after(id, last, CATCH_UP_PAGE)).await?;
                metrics::counter!(m::CATCH_UP_EVENTS).increment(page.len() as u64);
                let more = page.len() == CATCH_UP_PAGE as usize;
                for event in page {
                    let event = Arc::new(event);
                    match step(&tracked, &finished, &user, &event) {
                        Step::Skip | Step::Join => {}
                        Step::Apply => {
                            settle(&mut tracked, &mut finished, &mut subscription, &event);
                            yield MyJobsItem::Event(event);
                        }
                        Step::Leave => {
                            // The log says the caller lost the job. If
                            // it has it again by now (reassigned back),
                            // start the job over instead of leaving.
                            match Box::pin(job_boxed(&this, id)).await? {
                                Some(job) if job.role_of(&user).is_some() => {
                                    tracked.insert(id, job.revision);
                                    metrics::counter!(m::RESYNCS).increment(1);
                                    yield MyJobsItem::Snapshot { job, reason: SnapshotReason::Resync };
                                }
                                _ => {
                                    tracked.remove(&id);
                                    subscription.untrack(id);
                                    yield MyJobsItem::Left { job: id, revision: event.revision(), cause: Some(event.kind) };
                                }
                            }
                            break;
                        }
                        Step::Gap => {
                            // The log itself has a hole: start the job over.
                            match Box::pin(job_boxed(&this, id)).await? {
                                Some(job) if job.role_of(&user).is_some() => {
                                    tracked.insert(id, job.revision);
                                    metrics::counter!(m::RESYNCS).increment(1);
                                    yield MyJobsItem::Snapshot { job, reason: SnapshotReason::Resync };
                                }
                                _ => {
                                    // Not the caller's any more: say
                                    // nothing about where the job is now.
                                    tracked.remove(&id);
                                    subscription.untrack(id);
                                    yield MyJobsItem::Left { job: id, revision: 0, cause: None };
                                }
                            }
                            break;
                        }
                    }
                }
                if more && tracked.contains_key(&id) {
                    catch_up.push_back(id);
                }
            }
            // Live events, in the order they arrived.
            while let Some(event) = pending.pop_front() {
                let id = event.job_id();
                match step(&tracked, &finished, &user, &event) {
                    Step::Skip => {}
                    Step::Apply => {
                        settle(&mut tracked, &mut finished, &mut subscription, &event);
                        yield MyJobsItem::Event(event);
                    }
                    Step::Leave => {
                        tracked.remove(&id);
                        subscription.untrack(id);
                        yield MyJobsItem::Left { job: id, revision: event.revision(), cause: Some(event.kind) };
                    }
                    Step::Join => {
                        // The event may be stale (published late, or
                        // re-published by the PostgreSQL listener): join
                        // only if the job is the caller's now, with its
                        // state now.
                        let current = Box::pin(job_boxed(&this, id)).await?;
                        if let Some(job) = current.filter(|j| j.role_of(&user).is_some()) {
                            if job.status.is_terminal() {
                                finished.insert(id);
                            } else {
                                tracked.insert(id, job.revision);
                                subscription.track(id);
                            }
                            yield MyJobsItem::Snapshot { job, reason: SnapshotReason::Initial };
                        }
                    }
                    Step::Gap => {
                        this.stats().catch_ups.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(m::CATCH_UPS).increment(1);
                        if !catch_up.contains(&id) {
                            catch_up.push_back(id);
                        }
                    }
                }
                deadlines.heartbeat_sent(this.heartbeat());
            }
            if !catch_up.is_empty() {
                continue;
            }
            if announce_caught_up {
                announce_caught_up = false;
                yield MyJobsItem::Heartbeat { at: Utc::now() };
                deadlines.heartbeat_sent(this.heartbeat());
            }
            let wake = tokio::select! {
                biased;
                () = this.shutdown_token().cancelled() => Wake::Shutdown,
                () = &mut timer => Wake::Timer,
                received = subscription.recv() => Wake::Received(received),
            };
            match wake {
                Wake::Shutdown => Err(AppError::ShuttingDownResumeAll)?,
                Wake::Timer => match deadlines.fired(this.heartbeat(), timer.as_mut()) {
                    Some(Deadline::Expired) => Err(AppError::Auth(AuthError::Expired))?,
                    Some(Deadline::Heartbeat) => yield MyJobsItem::Heartbeat { at: Utc::now() },
                    None => {}
                },
                Wake::Received(Ok(event)) => pending.push_back(event),
                Wake::Received(Err(RecvError::Lagged(_))) => {
                    // Fell behind: re-list, and read the log only of
                    // jobs that moved since (listed ahead of the stream),
                    // or that the listing no longer shows (they may
                    // have left, or be beyond its cap).
                    tracing::debug!(user = %user, "WatchMyJobs catching up from the store");
                    this.stats().catch_ups.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(m::CATCH_UPS).increment(1);
                    let listed = Box::pin(this.store().jobs_of_user(user.as_str(), MAX_LISTED_JOBS)).await?;
                    let mut unlisted: HashSet<JobId> = tracked.keys().copied().collect();
                    for job in listed {
                        unlisted.remove(&job.id);
                        if finished.contains(&job.id) {
                            continue;
                        }
                        match tracked.get(&job.id) {
                            Some(&last) => {
                                if job.revision > last && !catch_up.contains(&job.id) {
                                    catch_up.push_back(job.id);
                                }
                            }
                            None => {
                                if job.status.is_terminal() {
                                    finished.insert(job.id);
                                } else {
                                    tracked.insert(job.id, job.revision);
                                    subscription.track(job.id);
                                }
                                yield MyJobsItem::Snapshot { job: Box::new(job), reason: SnapshotReason::Initial };
                            }
                        }
                    }
                    let mut unlisted: Vec<JobId> = unlisted.into_iter().collect();
                    unlisted.sort_unstable();
                    for id in unlisted {
                        if !catch_up.contains(&id) {
                            catch_up.push_back(id);
                        }
                    }
                }
                // The topic lives while this subscription does.
                Wake::Received(Err(RecvError::Closed)) => Err(AppError::ShuttingDownResumeAll)?,
            }
        }
    }
}

/// Records an applied event. A terminal one is the job's last: the job
/// stops being tracked (no catch-up reads, no resync) and is remembered as
/// finished.
fn settle(
    tracked: &mut HashMap<JobId, i64>,
    finished: &mut HashSet<JobId>,
    subscription: &mut fanout::UserSubscription,
    event: &SharedEvent,
) {
    let id = event.job_id();
    if event.job.status.is_terminal() {
        tracked.remove(&id);
        subscription.untrack(id);
        finished.insert(id);
    } else {
        tracked.insert(id, event.revision());
    }
}

enum Wake {
    Shutdown,
    Timer,
    Received(Result<SharedEvent, RecvError>),
}

/// Validates a resume map from the wire.
pub fn resume_map(raw: &HashMap<i64, i64>) -> Result<HashMap<JobId, i64>, DomainError> {
    if raw.len() > MAX_RESUME_ENTRIES {
        return Err(DomainError::invalid(
            "after_revisions",
            format!("at most {MAX_RESUME_ENTRIES} entries, got {}", raw.len()),
        ));
    }
    raw.iter()
        .map(|(&job, &revision)| {
            let id = JobId::new(job)?;
            if revision < 0 {
                return Err(DomainError::invalid(
                    "after_revisions",
                    format!("revision for job {job} must be 0 or more, got {revision}"),
                ));
            }
            Ok((id, revision))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_maps_are_validated() {
        let ok = resume_map(&HashMap::from([(1, 0), (2, 5)])).unwrap();
        assert_eq!(ok[&JobId::new(2).unwrap()], 5);
        assert!(resume_map(&HashMap::from([(0, 1)])).is_err());
        assert!(resume_map(&HashMap::from([(1, -1)])).is_err());
        let huge: HashMap<i64, i64> = (1..=(MAX_RESUME_ENTRIES as i64 + 1))
            .map(|i| (i, 0))
            .collect();
        assert!(resume_map(&huge).is_err());
    }
}
