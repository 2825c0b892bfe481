//! Cross-replica fan-out: one PostgreSQL LISTEN session per replica feeds
//! the events other replicas commit into this replica's [`Hub`].
//!
//! Every committed change sends `pg_notify('jobstatus_events',
//! '<job_id>:<revision>')` in its own transaction (see
//! `storage/postgres.rs`). For each notification about a job somebody here
//! watches, this task reads that event from the log and publishes it. Local
//! commits are also published directly by `Jobs::execute`, so local
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

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use super::Hub;
use crate::domain::JobId;
use crate::my_jobs::MAX_LISTED_JOBS;
use crate::storage::{EVENTS_CHANNEL, PostgresStore, StorageError};

/// How many job ids one resynchronisation query names.
const RESYNC_CHUNK: usize = 1000;

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
    /// Events published by resynchronisations after (re)connecting.
    pub resynced: AtomicU64,
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
                tracing::debug!("LISTEN session open; watchers resynchronised");
                backoff = first_backoff;
                let broken = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    broken = forward(&mut listener, &store, &hub, &stats) => broken,
                };
                stats.breaks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %broken, retry_in = ?backoff, "LISTEN session broken; reconnecting, then catching watchers up from the log");
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?backoff, "cannot open the LISTEN session");
            }
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
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
async fn forward(
    listener: &mut PgListener,
    store: &PostgresStore,
    hub: &Hub,
    stats: &ListenerStats,
) -> StorageError {
    loop {
        let notification = match listener.try_recv().await {
            Ok(Some(notification)) => notification,
            Ok(None) => return StorageError::Unavailable("the LISTEN connection was lost".into()),
            Err(err) => return err.into(),
        };
        let Some((job, revision)) = crate::storage::parse_notification(notification.payload())
        else {
            tracing::warn!(
                payload = notification.payload(),
                "ignoring a malformed notification"
            );
            continue;
        };
        // WatchMyJobs streams care about jobs they do not track yet (a job
        // that becomes the user's), and only the event says whose it is.
        if !hub.is_watched(job) && !hub.users().has_subscribers() {
            continue;
        }
        match store.events_at(&[(job, revision)]).await {
            Ok(events) => {
                for event in events {
                    hub.publish(Arc::new(event));
                    stats.forwarded.fetch_add(1, Ordering::Relaxed);
                }
            }
            // The event is committed but we could not read it: treat it as
            // a lost notification, which the next session's resync covers.
            Err(err) => return err,
        }
    }
}
