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
//!
//! A topic also keeps the newest state of its job it has seen (published,
//! or read by a watcher and [remembered](Hub::remember)), so that a second
//! watcher of a watched job can take its snapshot from memory
//! ([`Hub::subscribe_latest`]). It is only ever a state that was committed,
//! never replaced by an older one, and it goes with the topic.

pub mod pg_listen;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{broadcast, watch};

use crate::domain::{Event, Job, JobId};
use crate::my_jobs::fanout::UserHub;

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
    /// The newest committed state of the job seen while it had watchers.
    latest: Option<Latest>,
    /// A watcher's read of the job from the database, in flight: watchers
    /// that subscribe meanwhile wait for it rather than read it too. Ends
    /// (the sender drops) when the read does, whatever its outcome.
    reading: Option<watch::Receiver<()>>,
}

/// A job's state as the hub learnt it. A published event is kept as the
/// shared event (the channel's ring holds it anyway), so keeping it costs
/// nothing; a read is kept as a job of its own.
#[derive(Debug)]
enum Latest {
    Published(SharedEvent),
    Read(Arc<Job>),
}

impl Latest {
    fn job(&self) -> &Job {
        match self {
            Latest::Published(event) => &event.job,
            Latest::Read(job) => job,
        }
    }

    fn revision(&self) -> i64 {
        self.job().revision
    }
}

impl Topic {
    /// Keeps `latest` if it is newer than what the topic has.
    fn offer(&mut self, latest: Latest) {
        if self
            .latest
            .as_ref()
            .is_none_or(|have| latest.revision() > have.revision())
        {
            self.latest = Some(latest);
        }
    }
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
        self.subscribe_latest(job).0
    }

    /// [`Hub::subscribe`], and where the watch's first state can come from,
    /// decided under the same lock: every event published after that
    /// state reaches the subscription. Only a process through which every
    /// change of the database passes may serve the hub's state as a
    /// snapshot: on a replica it may lag what others committed.
    pub fn subscribe_latest(&self, job: JobId) -> (Subscription, Start) {
        let mut topics = self.topics();
        let topic = topics.entry(job).or_insert_with(|| Topic {
            sender: broadcast::channel(self.inner.capacity).0,
            subscribers: 0,
            latest: None,
            reading: None,
        });
        topic.subscribers += 1;
        let start = match (&topic.latest, &topic.reading) {
            (Some(latest), _) => Start::Known(Box::new(latest.job().clone())),
            (None, Some(reading)) => Start::AfterRead(Waiting {
                done: reading.clone(),
                hub: self.clone(),
                job,
            }),
            (None, None) => {
                let (sender, receiver) = watch::channel(());
                topic.reading = Some(receiver.clone());
                Start::Read(Reading {
                    _sender: sender,
                    mine: receiver,
                    hub: self.clone(),
                    job,
                })
            }
        };
        let subscription = Subscription {
            receiver: topic.sender.subscribe(),
            job,
            hub: self.clone(),
        };
        (subscription, start)
    }

    /// The newest state of `job` the hub knows of (a watched job only).
    fn latest(&self, job: JobId) -> Option<Box<Job>> {
        let topics = self.topics();
        let latest = topics.get(&job)?.latest.as_ref()?;
        Some(Box::new(latest.job().clone()))
    }

    /// Keeps `job`, just read from the database, as its topic's newest
    /// state unless the topic already has a newer one (or there is no
    /// topic: nobody watches it).
    pub fn remember(&self, job: &Job) {
        if let Some(topic) = self.topics().get_mut(&job.id) {
            if topic
                .latest
                .as_ref()
                .is_some_and(|have| have.revision() >= job.revision)
            {
                return;
            }
            topic.offer(Latest::Read(Arc::new(job.clone())));
        }
    }

    /// Hands `event` to every current watcher of its job. Never blocks.
    pub fn publish(&self, event: SharedEvent) {
        metrics::counter!(crate::telemetry::metrics::EVENTS_PUBLISHED).increment(1);
        {
            let mut topics = self.topics();
            if let Some(topic) = topics.get_mut(&event.job_id()) {
                topic.offer(Latest::Published(event.clone()));
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

/// Where a new watch's first state comes from.
#[derive(Debug)]
pub enum Start {
    /// The hub's newest state of the job.
    Known(Box<Job>),
    /// Nobody is reading the job: this watcher reads it and hands it to
    /// [`Reading::done`].
    Read(Reading),
    /// Another watcher is reading it: wait for that read.
    AfterRead(Waiting),
}

/// One watcher's database read of a job, that later watchers wait for.
/// Dropping it, read or not, releases them.
#[derive(Debug)]
pub struct Reading {
    _sender: watch::Sender<()>,
    /// Tells this read apart from a later one on a topic made anew.
    mine: watch::Receiver<()>,
    hub: Hub,
    job: JobId,
}

impl Reading {
    /// Offers the job read to the hub, then releases the waiters.
    pub fn done(self, job: &Job) {
        self.hub.remember(job);
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        if let Some(topic) = self.hub.topics().get_mut(&self.job)
            && topic
                .reading
                .as_ref()
                .is_some_and(|r| r.same_channel(&self.mine))
        {
            topic.reading = None;
        }
    }
}

/// A watcher waiting for another's read of the job.
#[derive(Debug)]
pub struct Waiting {
    done: watch::Receiver<()>,
    hub: Hub,
    job: JobId,
}

impl Waiting {
    /// The hub's newest state once the other read has ended; `None` if it
    /// failed (the waiter then reads for itself). Bounded by that read,
    /// which the store's timeout bounds.
    pub async fn latest(mut self) -> Option<Box<Job>> {
        // Only ever ends with the sender dropped: nothing is sent.
        let _ = self.done.changed().await;
        self.hub.latest(self.job)
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

    fn latest_revision(hub: &Hub, job: i64) -> Option<i64> {
        let _s = hub.subscribe(JobId::new(job).unwrap());
        hub.latest(JobId::new(job).unwrap()).map(|j| j.revision)
    }

    #[tokio::test]
    async fn a_topic_keeps_the_newest_state_it_saw_and_never_an_older_one() {
        let hub = Hub::new(8);
        let id = JobId::new(1).unwrap();
        let (_first, start) = hub.subscribe_latest(id);
        assert!(matches!(start, Start::Read(_)), "a new topic knows nothing");
        hub.remember(&event(1, 3).job);
        assert_eq!(latest_revision(&hub, 1), Some(3));
        hub.publish(event(1, 5));
        assert_eq!(latest_revision(&hub, 1), Some(5));
        // A read that finished late, and a publish that came out of order,
        // are older than what the topic has: kept out.
        hub.remember(&event(1, 4).job);
        hub.publish(event(1, 4));
        assert_eq!(latest_revision(&hub, 1), Some(5));
        hub.remember(&event(1, 6).job);
        assert_eq!(latest_revision(&hub, 1), Some(6));
    }

    #[tokio::test]
    async fn the_newest_state_goes_with_the_topic_and_needs_a_watcher() {
        let hub = Hub::new(8);
        // Nobody watches: nothing is kept.
        hub.publish(event(2, 1));
        hub.remember(&event(2, 1).job);
        assert_eq!(latest_revision(&hub, 2), None);
        assert_eq!(hub.topic_count(), 0);
        let watcher = hub.subscribe(JobId::new(2).unwrap());
        hub.publish(event(2, 2));
        assert_eq!(latest_revision(&hub, 2), Some(2));
        drop(watcher);
        assert_eq!(hub.topic_count(), 0);
        assert_eq!(latest_revision(&hub, 2), None, "a new topic starts empty");
    }

    #[tokio::test]
    async fn every_event_after_the_latest_state_reaches_the_subscription() {
        let hub = Hub::new(8);
        let _keep = hub.subscribe(JobId::new(3).unwrap());
        hub.publish(event(3, 1));
        let (mut s, start) = hub.subscribe_latest(JobId::new(3).unwrap());
        let Start::Known(job) = start else {
            panic!("a published state is known")
        };
        assert_eq!(job.revision, 1);
        hub.publish(event(3, 2));
        assert_eq!(s.recv().await.unwrap().revision(), 2);
    }

    #[tokio::test]
    async fn watchers_that_come_during_a_read_wait_for_it() {
        let hub = Hub::new(8);
        let id = JobId::new(4).unwrap();
        let (_a, Start::Read(reading)) = hub.subscribe_latest(id) else {
            panic!("the first watcher reads")
        };
        let (_b, Start::AfterRead(b)) = hub.subscribe_latest(id) else {
            panic!("the second waits for that read")
        };
        let (_c, Start::AfterRead(c)) = hub.subscribe_latest(id) else {
            panic!("so does the third")
        };
        let waiting = tokio::spawn(async move { (b.latest().await, c.latest().await) });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "they wait while the read runs");
        reading.done(&event(4, 7).job);
        let (b, c) = waiting.await.unwrap();
        assert_eq!(
            (b.map(|j| j.revision), c.map(|j| j.revision)),
            (Some(7), Some(7))
        );
        // The next watcher finds the state known.
        assert!(matches!(hub.subscribe_latest(id).1, Start::Known(_)));
    }

    #[tokio::test]
    async fn a_read_that_fails_releases_its_waiters_to_read_for_themselves() {
        let hub = Hub::new(8);
        let id = JobId::new(5).unwrap();
        let (_a, Start::Read(reading)) = hub.subscribe_latest(id) else {
            panic!("the first watcher reads")
        };
        let (_b, Start::AfterRead(b)) = hub.subscribe_latest(id) else {
            panic!("the second waits")
        };
        drop(reading); // failed, or its watcher went away
        assert!(b.latest().await.is_none());
        // Nobody reads now: the next watcher is the reader.
        assert!(matches!(hub.subscribe_latest(id).1, Start::Read(_)));
    }

    #[tokio::test]
    async fn a_read_from_a_topic_gone_since_leaves_the_new_topic_alone() {
        let hub = Hub::new(8);
        let id = JobId::new(6).unwrap();
        let (a, Start::Read(old)) = hub.subscribe_latest(id) else {
            panic!("reads")
        };
        drop(a); // the topic goes; the read is still in flight
        let (_b, Start::Read(_new)) = hub.subscribe_latest(id) else {
            panic!("a new topic reads anew")
        };
        drop(old);
        assert!(
            matches!(hub.subscribe_latest(id).1, Start::AfterRead(_)),
            "the new read is still in flight and still waited for"
        );
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
