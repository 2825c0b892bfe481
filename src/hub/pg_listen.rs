//! Cross-replica fan-out: one PostgreSQL LISTEN session per replica feeds
//! the events other replicas commit into this replica's [`Hub`].
//!
//! Every committed change sends `pg_notify('jobstatus_events',
//! '<job_id>:<revision>')` in its own transaction (see
//! `storage/postgres.rs`). For the notifications about jobs somebody here
//! watches, this task reads those events from the log (one query per batch
//! of notifications already received) and publishes them. Local
//! commits are also published directly by the store's writers, so local
//! watchers may get an event twice (or out of order); they dedupe by
//! revision and fill any gap from the log, so that is harmless.
//!
//! Notifications sent while the session is down are lost for good, and
//! sqlx's `PgListener::recv` would reconnect without saying so. This task
//! uses `try_recv`, which reports the break (`Ok(None)`), and treats any
//! error the same way: drop the session, wait (with backoff), LISTEN again,
//! and only then publish the newest event of every watched job. A watcher
//! that missed revisions sees a gap and reads them from the log itself, so
//! no watcher misses a revision because a connection dropped.
//!
//! The [`Hub`] itself stays free of I/O; this module is the one bridge
//! between it and the database. It must never write to the database, never
//! block the hub, and never outlive the shutdown token it is given.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use sqlx::postgres::{PgListener, PgNotification};
use tokio_util::sync::CancellationToken;

use super::Hub;
use crate::domain::JobId;
use crate::my_jobs::MAX_LISTED_JOBS;
use crate::storage::{EVENTS_CHANNEL, PostgresStore, StorageError};

/// How many job ids one resynchronisation query names.
const RESYNC_CHUNK: usize = 1000;

/// The most notifications forwarded with one log read: after one arrives,
/// those already received are taken too (without waiting), so a burst
/// costs one query per batch instead of one per change, and the listener
/// keeps up instead of letting sqlx buffer without bound.
pub const MAX_BATCH: usize = 512;

/// Reconnect pacing.
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    /// The first wait after a broken or failed session.
    pub backoff: Duration,
    /// The longest wait: the backoff doubles up to this while the database
    /// stays unreachable.
    pub backoff_max: Duration,
}

/// What the listener has done, for operators and tests.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// LISTEN sessions opened (and resynchronised).
    pub sessions: AtomicU64,
    /// Sessions that broke (connection lost, or an error reading the log).
    pub breaks: AtomicU64,
    /// Events published because of a notification.
    pub forwarded: AtomicU64,
    /// Log reads made to forward notified events (one per batch).
    pub batches: AtomicU64,
    /// Events published by resynchronisations after (re)connecting.
    pub resynced: AtomicU64,
    /// When the session went down, while it is down (None: up, or not
    /// started yet), and the time it spent down before.
    down: std::sync::Mutex<Downtime>,
}

#[derive(Debug, Default)]
struct Downtime {
    since: Option<std::time::Instant>,
    before: Duration,
    up: bool,
}

impl ListenerStats {
    fn went_down(&self) {
        let mut down = self.downtime();
        down.up = false;
        down.since.get_or_insert_with(std::time::Instant::now);
    }

    fn came_up(&self) {
        let mut down = self.downtime();
        down.up = true;
        if let Some(since) = down.since.take() {
            down.before += since.elapsed();
        }
    }

    /// Whether the LISTEN session is up now.
    pub fn connected(&self) -> bool {
        self.downtime().up
    }

    /// How long the session has been down in all, this outage included.
    pub fn down_for(&self) -> Duration {
        let down = self.downtime();
        down.before + down.since.map(|s| s.elapsed()).unwrap_or_default()
    }

    fn downtime(&self) -> std::sync::MutexGuard<'_, Downtime> {
        // Updated twice per outage and read per scrape; never held across an await.
        self.down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A wait of `backoff`, of which half is random ("equal jitter"): after a
/// database failover, replicas must not all reconnect in the same instant.
fn jittered(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// Runs until `shutdown` is cancelled; never returns earlier. Failures are
/// logged and retried, never fatal: while the session is down, remote
/// events reach local watchers late (at the resynchronisation), not never.
pub async fn run(
    store: PostgresStore,
    hub: Hub,
    options: ListenOptions,
    stats: Arc<ListenerStats>,
    shutdown: CancellationToken,
) {
    let first_backoff = options.backoff.max(Duration::from_millis(1));
    let mut backoff = first_backoff;
    loop {
        let opened = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            opened = open(&store, &hub, &stats) => opened,
        };
        match opened {
            Ok(mut listener) => {
                stats.sessions.fetch_add(1, Ordering::Relaxed);
                stats.came_up();
                tracing::debug!("LISTEN session open; watchers resynchronised");
                backoff = first_backoff;
                let broken = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    broken = forward(&mut listener, &store, &hub, &stats) => broken,
                };
                stats.breaks.fetch_add(1, Ordering::Relaxed);
                stats.went_down();
                tracing::warn!(error = %broken, retry_in = ?backoff, "LISTEN session broken; reconnecting, then catching watchers up from the log");
            }
            Err(err) => {
                stats.went_down();
                tracing::warn!(error = %err, retry_in = ?backoff, "cannot open the LISTEN session");
            }
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(jittered(backoff)) => {}
        }
        backoff = backoff
            .saturating_mul(2)
            .min(options.backoff_max.max(first_backoff));
    }
}

/// LISTENs, then publishes the newest event of every watched job. In that
/// order: a change committed after LISTEN is notified, one committed
/// before is covered by the resynchronisation, so nothing falls between.
async fn open(
    store: &PostgresStore,
    hub: &Hub,
    stats: &ListenerStats,
) -> Result<PgListener, StorageError> {
    let mut listener = PgListener::connect_with(store.listener_pool()).await?;
    // Report a lost connection at once instead of reconnecting inside
    // sqlx: reconnecting (and resynchronising) is this module's job.
    listener.eager_reconnect(false);
    listener.listen(EVENTS_CHANNEL).await?;
    let published = resync(store, hub).await?;
    stats.resynced.fetch_add(published, Ordering::Relaxed);
    Ok(listener)
}

/// Publishes the newest event of every job a local stream watches: WatchJob
/// topics, jobs WatchMyJobs streams track, and jobs of users with an open
/// WatchMyJobs stream (a job may have become theirs while we were deaf).
async fn resync(store: &PostgresStore, hub: &Hub) -> Result<u64, StorageError> {
    let mut ids: HashSet<JobId> = hub.watched_jobs().into_iter().collect();
    let (users, tracked) = hub.users().watched();
    ids.extend(tracked);
    for user in users {
        ids.extend(
            store
                .jobs_of_user(&user, MAX_LISTED_JOBS)
                .await?
                .into_iter()
                .map(|job| job.id),
        );
    }
    let ids: Vec<JobId> = ids.into_iter().collect();
    let mut published = 0;
    for chunk in ids.chunks(RESYNC_CHUNK) {
        for event in store.latest_events(chunk).await? {
            hub.publish(Arc::new(event));
            published += 1;
        }
    }
    Ok(published)
}

/// Forwards notified events until the session breaks; returns why.
///
/// Waits for one notification, then takes the ones already received (up to
/// [`MAX_BATCH`]) without waiting, reads all their events with one query
/// and publishes them in revision order per job. Every distinct revision is
/// read, not only each job's newest: publishing just the newest would make
/// every local watcher of the job see a gap and read the log on its own.
async fn forward(
    listener: &mut PgListener,
    store: &PostgresStore,
    hub: &Hub,
    stats: &ListenerStats,
) -> StorageError {
    loop {
        let first = match listener.try_recv().await {
            Ok(Some(notification)) => notification,
            Ok(None) => return StorageError::unreachable("the LISTEN connection was lost"),
            Err(err) => return err.into(),
        };
        // Sorted and deduplicated: `(job, revision)` order is the order
        // events are published in.
        let mut wanted: BTreeSet<(JobId, i64)> = BTreeSet::new();
        note(&first, hub, &mut wanted);
        let mut taken = 1;
        let mut broken = None;
        while taken < MAX_BATCH {
            // `try_recv` is cancel-safe: a message only partly received
            // stays buffered for the next call.
            match listener.try_recv().now_or_never() {
                None => break,
                Some(Ok(Some(notification))) => {
                    note(&notification, hub, &mut wanted);
                    taken += 1;
                }
                Some(Ok(None)) => {
                    broken = Some(StorageError::unreachable("the LISTEN connection was lost"));
                    break;
                }
                Some(Err(err)) => {
                    broken = Some(err.into());
                    break;
                }
            }
        }
        if !wanted.is_empty() {
            let pairs: Vec<(JobId, i64)> = wanted.into_iter().collect();
            stats.batches.fetch_add(1, Ordering::Relaxed);
            match store.events_at(&pairs).await {
                Ok(events) => {
                    // `events_at` orders by job, then revision.
                    for event in events {
                        hub.publish(Arc::new(event));
                        stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // The events are committed but we could not read them: treat
                // them as lost notifications, which the next session's
                // resync covers.
                Err(err) => return err,
            }
        }
        // Publish what was received before the break, then report it (the
        // next session's resync covers the rest).
        if let Some(err) = broken {
            return err;
        }
    }
}

/// Adds a notification's `(job, revision)` to `wanted` if a local stream
/// may care about it.
fn note(notification: &PgNotification, hub: &Hub, wanted: &mut BTreeSet<(JobId, i64)>) {
    let Some((job, revision)) = crate::storage::parse_notification(notification.payload()) else {
        tracing::warn!(
            payload = notification.payload(),
            "ignoring a malformed notification"
        );
        return;
    };
    // WatchMyJobs streams care about jobs they do not track yet (a job
    // that becomes the user's), and only the event says whose it is.
    if !hub.is_watched(job) && !hub.users().has_subscribers() {
        return;
    }
    wanted.insert((job, revision));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn reconnect_waits_are_jittered_within_half_to_all_of_the_backoff() {
        let backoff = Duration::from_millis(1000);
        let waits: Vec<_> = (0..200).map(|_| super::jittered(backoff)).collect();
        assert!(waits.iter().all(|w| *w >= backoff / 2 && *w <= backoff));
        let distinct: std::collections::HashSet<_> = waits.iter().map(|w| w.as_millis()).collect();
        assert!(distinct.len() > 50, "the waits differ: {}", distinct.len());
    }

    #[test]
    fn downtime_adds_up_across_outages() {
        let stats = super::ListenerStats::default();
        assert!(!stats.connected());
        stats.came_up();
        assert!(stats.connected());
        stats.went_down();
        std::thread::sleep(Duration::from_millis(20));
        stats.came_up();
        let first = stats.down_for();
        assert!(first >= Duration::from_millis(20));
        stats.went_down();
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            stats.down_for() >= first + Duration::from_millis(20),
            "the current outage counts"
        );
    }
}
