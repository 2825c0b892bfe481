//! The fan-out hub: one tokio broadcast channel per watched job.
//!
//! A topic exists while somebody watches its job: the first [`Hub::subscribe`]
//! creates it and the last [`Subscription`] to drop removes it, so jobs that
//! were watched once cost nothing afterwards. Publishing to a job nobody
//! watches is a no-op. The hub is lossy by design (a slow receiver sees
//! `Lagged`): watchers recover from the event log, so the hub must never
//! block a publisher and never do I/O.
//!
//! It also owns the per-user channels of WatchMyJobs
//! ([`crate::my_jobs::fanout`]); every publish goes to both. [`pg_listen`]
//! feeds the hub with events other replicas commit (PostgreSQL only); it is
//! the one part of this module that does I/O.

pub mod pg_listen;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;

use crate::domain::{Event, JobId};
use crate::my_jobs::fanout::UserHub;
use crate::storage::Committed;
use crate::telemetry::metrics as m;

/// Events are shared, not copied, between watchers of one job.
pub type SharedEvent = Arc<Event>;

#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// A std mutex: it is held only for a map operation, never across an
    /// await, and publishing must not yield.
    topics: Mutex<HashMap<JobId, Topic>>,
    capacity: usize,
    /// WatchMyJobs streams, per user.
    users: UserHub,
}

#[derive(Debug)]
struct Topic {
    sender: broadcast::Sender<SharedEvent>,
    /// Counted by hand rather than `receiver_count()`, so that removal
    /// happens under the same lock as subscription and cannot race it.
    subscribers: usize,
}

/// The least a WatchMyJobs stream may fall behind: one user's stream
/// carries the events of all their jobs, so it needs more room than one
/// job's watcher, and there is one per connected user, not per job.
const MIN_USER_BUFFER: usize = 256;

impl Hub {
    /// `capacity` is how many events a watcher may fall behind before it
    /// lags and has to be caught up from the log (at least
    /// `MIN_USER_BUFFER` for WatchMyJobs streams).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                topics: Mutex::new(HashMap::new()),
                capacity: capacity.max(1),
                users: UserHub::new(capacity.max(MIN_USER_BUFFER)),
            }),
        }
    }

    fn topics(&self) -> MutexGuard<'_, HashMap<JobId, Topic>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every operation is a single insert/remove/send), so carry on.
        self.inner
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts receiving the events of `job` published from now on.
    pub fn subscribe(&self, job: JobId) -> Subscription {
        let mut topics = self.topics();
        let topic = topics.entry(job).or_insert_with(|| Topic {
            sender: broadcast::channel(self.inner.capacity).0,
            subscribers: 0,
        });
        topic.subscribers += 1;
        Subscription {
            receiver: topic.sender.subscribe(),
            job,
            hub: self.clone(),
        }
    }

    /// Hands `event` to every current watcher of its job. Never blocks.
    pub fn publish(&self, event: SharedEvent) {
        static PUBLISHED: m::Kept<metrics::Counter> = m::Kept::new();
        PUBLISHED.increment(1, || metrics::counter!(m::EVENTS_PUBLISHED));
        {
            let topics = self.topics();
            if let Some(topic) = topics.get(&event.job_id()) {
                // An error only means no receiver is left; nothing to do.
                let _ = topic.sender.send(event.clone());
            }
        }
        self.inner.users.publish(&event);
    }

    /// The per-user channels (WatchMyJobs).
    pub fn users(&self) -> &UserHub {
        &self.inner.users
    }

    /// Whether anybody on this replica watches `job` (the PostgreSQL
    /// listener skips reading events nobody here would receive).
    pub fn is_watched(&self, job: JobId) -> bool {
        self.topics().contains_key(&job)
    }

    /// Every job somebody on this replica watches (resynchronising after
    /// the PostgreSQL listener reconnects).
    pub fn watched_jobs(&self) -> Vec<JobId> {
        self.topics().keys().copied().collect()
    }

    /// How many jobs currently have a topic (for tests and metrics).
    pub fn topic_count(&self) -> usize {
        self.topics().len()
    }

    fn unsubscribe(&self, job: JobId) {
        let mut topics = self.topics();
        if let Some(topic) = topics.get_mut(&job) {
            topic.subscribers -= 1;
            if topic.subscribers == 0 {
                topics.remove(&job);
            }
        }
    }
}

/// A watcher's receiver. Dropping it unsubscribes and frees the topic when
/// it was the last one.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<SharedEvent>,
    job: JobId,
    hub: Hub,
}

impl Subscription {
    /// The next event, `Lagged(n)` if this watcher fell `n` events behind.
    pub async fn recv(&mut self) -> Result<SharedEvent, broadcast::error::RecvError> {
        self.receiver.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.job);
    }
}

/// The store's writers publish every change they commit here.
impl Committed for Hub {
    fn committed(&self, event: SharedEvent) {
        self.publish(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Caller, Command, Decision, Request, ServiceId, UserId, decide};
    use broadcast::error::RecvError;

    fn event(job: i64, revision: i64) -> SharedEvent {
        let request = Request {
            job_id: JobId::new(job).unwrap(),
            caller: Caller::Service(ServiceId::parse("s", "svc").unwrap()),
            command: Command::Create {
                client: UserId::parse("c", "client").unwrap(),
                worker: None,
            },
            request_id: None,
            expected_revision: None,
        };
        let Decision::Changed(mut e) = decide(None, &request, chrono::Utc::now()).unwrap() else {
            panic!("create must change")
        };
        e.job.revision = revision;
        Arc::new(e)
    }

    #[tokio::test]
    async fn delivers_to_every_subscriber_of_the_job_only() {
        let hub = Hub::new(8);
        let mut a = hub.subscribe(JobId::new(1).unwrap());
        let mut b = hub.subscribe(JobId::new(1).unwrap());
        let mut other = hub.subscribe(JobId::new(2).unwrap());
        hub.publish(event(1, 1));
        assert_eq!(a.recv().await.unwrap().revision(), 1);
        assert_eq!(b.recv().await.unwrap().revision(), 1);
        hub.publish(event(2, 7));
        assert_eq!(other.recv().await.unwrap().revision(), 7);
    }

    #[tokio::test]
    async fn last_drop_removes_the_topic_and_no_topics_leak() {
        let hub = Hub::new(8);
        for id in 1..=100_000 {
            let s = hub.subscribe(JobId::new(id).unwrap());
            hub.publish(event(id, 1));
            drop(s);
        }
        assert_eq!(hub.topic_count(), 0);
        let a = hub.subscribe(JobId::new(5).unwrap());
        let b = hub.subscribe(JobId::new(5).unwrap());
        drop(a);
        assert_eq!(hub.topic_count(), 1);
        drop(b);
        assert_eq!(hub.topic_count(), 0);
    }

    #[tokio::test]
    async fn publishing_without_watchers_is_a_noop() {
        let hub = Hub::new(8);
        hub.publish(event(3, 1));
        assert_eq!(hub.topic_count(), 0);
    }

    #[tokio::test]
    async fn a_slow_receiver_lags_without_blocking_the_publisher() {
        let hub = Hub::new(4);
        let mut slow = hub.subscribe(JobId::new(1).unwrap());
        for r in 1..=10 {
            hub.publish(event(1, r));
        }
        assert!(matches!(slow.recv().await, Err(RecvError::Lagged(6))));
        assert_eq!(slow.recv().await.unwrap().revision(), 7);
    }
}
