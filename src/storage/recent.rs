//! SQLite's jobs in memory: the newest committed state of recently written
//! or read jobs, so that opening a watch on one needs no reader thread.
//!
//! Only the SQLite writer, which alone changes the file, says what is
//! current: after each commit it stores the batch's jobs as committed, and
//! after a failed one it forgets them; it also decides its batches from
//! what is here. Should another connection ever commit to the file, the
//! writer sees the file's data version move and everything here goes. A
//! read from the file may fill a missing entry, but only if no commit and
//! no eviction happened while it read, so an entry is never older than the
//! file. This must never hold a state that was not committed, nor serve
//! one after a newer commit's event or answer has gone out (the writer
//! updates it before it publishes the batch's events and answers).
//!
//! Bounded by `--sqlite-job-cache` entries, with second-chance eviction
//! ([`ClockMap`]): a new job pushes out one nobody touched lately.

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::clock_map::ClockMap;
use crate::domain::{Job, JobId};

/// Where the cache stands: a fill may happen only while it is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Epoch(u64);

#[derive(Debug)]
pub(super) struct RecentJobs {
    inner: Mutex<Recent>,
}

#[derive(Debug)]
struct Recent {
    jobs: ClockMap<JobId, Job>,
    /// Bumped by every commit, failed commit and eviction.
    epoch: u64,
    /// The file's `PRAGMA data_version` as the writer last saw it.
    file_version: Option<i64>,
    /// Whether another connection's commit was seen (and logged) yet.
    foreign_writer_seen: bool,
}

impl RecentJobs {
    /// A cache of at most `capacity` jobs (0 keeps nothing).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Recent {
                jobs: ClockMap::new(capacity),
                epoch: 0,
                file_version: None,
                foreign_writer_seen: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recent> {
        // Every update leaves the maps consistent, so a panic elsewhere
        // while the lock was held poisons nothing real.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The job's newest committed state, if it is here.
    pub(super) fn get(&self, id: JobId) -> Option<Job> {
        // A lookup only marks the job used: it moves and drops nothing, so
        // what the writer stored stays the newest state.
        self.lock().jobs.get(&id).cloned()
    }

    /// Read before reading the file for a job that was not here.
    pub(super) fn epoch(&self) -> Epoch {
        Epoch(self.lock().epoch)
    }

    /// Stores `job` as read from the file, unless anything was committed or
    /// evicted since `since` (the read may then be older than what the
    /// writer knows) or the job is already here.
    pub(super) fn fill(&self, since: Epoch, job: &Job) {
        let mut g = self.lock();
        if !g.jobs.keeps() || g.epoch != since.0 || g.jobs.contains_key(&job.id) {
            return;
        }
        let evicted = g.jobs.insert(job.id, job.clone());
        if evicted.is_some() {
            // An eviction voids reads in flight: one of them could bring
            // back a state older than one the writer stored and that has
            // just left. (A commit bumps the epoch anyway.)
            g.epoch += 1;
        }
        drop(g);
        drop(evicted);
    }

    /// The writer's word after a commit: these are the jobs as committed.
    pub(super) fn committed<'a>(&self, jobs: impl IntoIterator<Item = &'a Job>) {
        let mut g = self.lock();
        g.epoch += 1;
        let mut evicted = Vec::new();
        for job in jobs {
            evicted.extend(g.jobs.insert(job.id, job.clone()));
        }
        drop(g);
        drop(evicted);
    }

    /// The writer's word after a commit that failed (and may or may not
    /// have reached the disk): these jobs must be read from the file again.
    pub(super) fn forget(&self, ids: impl IntoIterator<Item = JobId>) {
        let mut g = self.lock();
        g.epoch += 1;
        for id in ids {
            g.jobs.remove(&id);
        }
    }

    /// The writer's word as its transaction begins: the file's data
    /// version, which moves only when another connection commits. If it
    /// moved, something other than the writer changed the file, and
    /// everything here may be older than it: all of it goes.
    pub(super) fn file_version(&self, version: i64) {
        let mut g = self.lock();
        let moved = g.file_version.is_some_and(|seen| seen != version);
        g.file_version = Some(version);
        if !moved {
            return;
        }
        if !g.foreign_writer_seen {
            g.foreign_writer_seen = true;
            tracing::warn!(
                "another connection changed the SQLite file: jobs in memory are dropped \
                 whenever it does (run one jobstatus process per file)"
            );
        }
        g.epoch += 1;
        let capacity = g.jobs.capacity();
        let dropped = std::mem::replace(&mut g.jobs, ClockMap::new(capacity));
        drop(g);
        drop(dropped);
    }

    /// Jobs held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().jobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobStatus, UserId};
    use chrono::Utc;

    fn job(id: i64, revision: i64) -> Job {
        let now = Utc::now();
        Job {
            id: JobId::new(id).unwrap(),
            client_id: UserId::parse("client_id", "c").unwrap(),
            worker_id: None,
            status: JobStatus::Open,
            payment_method: None,
            payment_proof: None,
            change_request_reason: None,
            cancel_reason: None,
            revision,
            created_at: now,
            updated_at: now,
        }
    }

    fn id(n: i64) -> JobId {
        JobId::new(n).unwrap()
    }

    #[test]
    fn the_writer_says_what_is_current() {
        let cache = RecentJobs::new(8);
        assert!(cache.get(id(1)).is_none());
        cache.committed([&job(1, 1)]);
        assert_eq!(cache.get(id(1)).unwrap().revision, 1);
        cache.committed([&job(1, 2)]);
        assert_eq!(cache.get(id(1)).unwrap().revision, 2);
        cache.forget([id(1)]);
        assert!(cache.get(id(1)).is_none());
    }

    #[test]
    fn a_read_fills_only_if_nothing_was_committed_meanwhile() {
        let cache = RecentJobs::new(8);
        let before = cache.epoch();
        cache.fill(before, &job(1, 1));
        assert_eq!(cache.get(id(1)).unwrap().revision, 1);

        // A read that started before a commit of any job may be older
        // than the file now: it is not kept.
        let before = cache.epoch();
        cache.committed([&job(2, 5)]);
        cache.fill(before, &job(3, 1));
        assert!(cache.get(id(3)).is_none());

        // Nor does a read replace what is there.
        let now = cache.epoch();
        cache.fill(now, &job(2, 4));
        assert_eq!(cache.get(id(2)).unwrap().revision, 5);

        // A failed commit also voids reads in flight.
        let before = cache.epoch();
        cache.forget([id(9)]);
        cache.fill(before, &job(3, 1));
        assert!(cache.get(id(3)).is_none());
    }

    #[test]
    fn another_connections_commit_empties_memory() {
        let cache = RecentJobs::new(8);
        cache.file_version(5);
        cache.committed([&job(1, 1)]);
        cache.file_version(5);
        assert!(
            cache.get(id(1)).is_some(),
            "the writer's own commits move nothing"
        );
        let before = cache.epoch();
        cache.file_version(6);
        assert!(
            cache.get(id(1)).is_none(),
            "memory may be older than the file"
        );
        cache.fill(before, &job(2, 1));
        assert!(cache.get(id(2)).is_none(), "a read in flight may be too");
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn it_holds_at_most_its_capacity_and_keeps_what_is_used() {
        let cache = RecentJobs::new(4);
        for n in 1..=100 {
            cache.committed([&job(n, 1)]);
            // Job 1 is read all along, so it is never the one dropped.
            assert!(cache.get(id(1)).is_some(), "job 1 dropped at {n}");
            assert!(cache.len() <= 4, "{} held at {n}", cache.len());
        }
        assert!(cache.get(id(2)).is_none());
        assert!(cache.get(id(100)).is_some());
    }

    #[test]
    fn an_eviction_voids_reads_in_flight() {
        // A read could otherwise bring back a state older than one the
        // writer stored and that was dropped while the read ran.
        let cache = RecentJobs::new(2);
        cache.fill(cache.epoch(), &job(1, 1));
        cache.fill(cache.epoch(), &job(2, 1));
        let before = cache.epoch();
        // Lookups drop nothing, so they void nothing.
        cache.get(id(1));
        assert_eq!(cache.epoch(), before);
        cache.fill(before, &job(3, 1)); // full: job 2 makes room
        assert_ne!(cache.epoch(), before);
        assert!(cache.get(id(2)).is_none());
        cache.fill(before, &job(4, 1));
        assert!(
            cache.get(id(4)).is_none(),
            "a read from before the eviction was kept"
        );
    }

    #[test]
    fn zero_keeps_nothing() {
        let cache = RecentJobs::new(0);
        cache.committed([&job(1, 1)]);
        cache.fill(cache.epoch(), &job(2, 1));
        assert!(cache.get(id(1)).is_none());
        assert!(cache.get(id(2)).is_none());
        assert_eq!(cache.len(), 0);
    }
}
