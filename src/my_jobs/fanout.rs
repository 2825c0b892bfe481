//! Per-user fan-out for WatchMyJobs: one broadcast channel per user with an
//! open WatchMyJobs stream. The hub owns one [`UserHub`] and publishes
//! every committed event to it as well as to the job's own topic.
//!
//! Every committed event goes to the topic of the job's client and of its
//! worker (after the change), so a job that becomes a user's (a worker
//! assigned) reaches that user's stream. A user who is about to *lose* a job
//! is no longer named in the event, so each subscription also registers
//! interest in the jobs it tracks, and an event goes to every interested
//! user too: that is how a reassigned worker's stream hears of the change
//! that removed it.
//!
//! Like the per-job hub it is lossy (a slow stream sees `Lagged` and
//! re-reads from the store), never blocks a publisher, never does I/O, and
//! removes a user's topic and interests when the last subscription drops.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;

use crate::domain::JobId;
use crate::hub::SharedEvent;

#[derive(Debug, Clone)]
pub struct UserHub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// A std mutex: held for map operations only, never across an await.
    state: Mutex<State>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    topics: HashMap<String, Topic>,
    /// Job -> users whose streams track it -> how many of their streams do.
    interest: HashMap<JobId, HashMap<String, usize>>,
}

#[derive(Debug)]
struct Topic {
    sender: broadcast::Sender<SharedEvent>,
    /// Counted by hand so removal happens under the subscription lock.
    subscribers: usize,
}

impl UserHub {
    /// `capacity`: how far a stream may fall behind before it lags.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                capacity: capacity.max(1),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every operation is a few map updates that cannot be left half
        // done by a panic elsewhere; carry on after poisoning.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts receiving the events of `user`'s jobs published from now on.
    pub fn subscribe(&self, user: &str) -> UserSubscription {
        let mut state = self.state();
        let topic = state
            .topics
            .entry(user.to_owned())
            .or_insert_with(|| Topic {
                sender: broadcast::channel(self.inner.capacity).0,
                subscribers: 0,
            });
        topic.subscribers += 1;
        UserSubscription {
            receiver: topic.sender.subscribe(),
            user: user.to_owned(),
            tracked: HashSet::new(),
            hub: self.clone(),
        }
    }

    /// Hands `event` to the job's client, its worker and every user whose
    /// stream tracks the job, each once. Never blocks.
    pub fn publish(&self, event: &SharedEvent) {
        let state = self.state();
        if state.topics.is_empty() {
            return;
        }
        let job = &event.job;
        let mut recipients: Vec<&str> = vec![job.client_id.as_str()];
        if let Some(worker) = &job.worker_id {
            recipients.push(worker.as_str());
        }
        if let Some(users) = state.interest.get(&job.id) {
            recipients.extend(users.keys().map(String::as_str));
        }
        recipients.sort_unstable();
        recipients.dedup();
        for user in recipients {
            if let Some(topic) = state.topics.get(user) {
                // An error only means no receiver is left.
                let _ = topic.sender.send(event.clone());
            }
        }
    }

    /// Whether any WatchMyJobs stream is open on this replica.
    pub fn has_subscribers(&self) -> bool {
        !self.state().topics.is_empty()
    }

    /// Users with an open stream, and the jobs those streams track (the
    /// PostgreSQL listener resynchronises them after a reconnect).
    pub fn watched(&self) -> (Vec<String>, Vec<JobId>) {
        let state = self.state();
        (
            state.topics.keys().cloned().collect(),
            state.interest.keys().copied().collect(),
        )
    }

    /// How many users have a topic, and how many jobs have interest (tests
    /// and metrics).
    pub fn sizes(&self) -> (usize, usize) {
        let state = self.state();
        (state.topics.len(), state.interest.len())
    }
}

/// One WatchMyJobs stream's receiver and the jobs it tracks. Dropping it
/// withdraws its interests and frees the topic when it was the last one.
#[derive(Debug)]
pub struct UserSubscription {
    receiver: broadcast::Receiver<SharedEvent>,
    user: String,
    tracked: HashSet<JobId>,
    hub: UserHub,
}

impl UserSubscription {
    /// The next event, `Lagged(n)` if this stream fell `n` events behind.
    pub async fn recv(&mut self) -> Result<SharedEvent, broadcast::error::RecvError> {
        self.receiver.recv().await
    }

    /// Also deliver events of `job`, even ones that no longer name the user.
    pub fn track(&mut self, job: JobId) {
        if self.tracked.insert(job) {
            let mut state = self.hub.state();
            *state
                .interest
                .entry(job)
                .or_default()
                .entry(self.user.clone())
                .or_insert(0) += 1;
        }
    }

    /// Stop the interest registered by [`track`](Self::track).
    pub fn untrack(&mut self, job: JobId) {
        if self.tracked.remove(&job) {
            let mut state = self.hub.state();
            withdraw(&mut state, job, &self.user);
        }
    }
}

fn withdraw(state: &mut State, job: JobId, user: &str) {
    if let Some(users) = state.interest.get_mut(&job) {
        if let Some(count) = users.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                users.remove(user);
            }
        }
        if users.is_empty() {
            state.interest.remove(&job);
        }
    }
}

impl Drop for UserSubscription {
    fn drop(&mut self) {
        let mut state = self.hub.state();
        for job in self.tracked.drain() {
            withdraw(&mut state, job, &self.user);
        }
        if let Some(topic) = state.topics.get_mut(&self.user) {
            topic.subscribers -= 1;
            if topic.subscribers == 0 {
                state.topics.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Caller, Command, Decision, Request, ServiceId, UserId, decide};

    fn event(job: i64, client: &str, worker: Option<&str>) -> SharedEvent {
        let request = Request {
            job_id: JobId::new(job).unwrap(),
            caller: Caller::Service(ServiceId::parse("s", "svc").unwrap()),
            command: Command::Create {
                client: UserId::parse("c", client).unwrap(),
                worker: worker.map(|w| UserId::parse("w", w).unwrap()),
            },
            request_id: None,
            expected_revision: None,
        };
        let Decision::Changed(e) = decide(None, &request, chrono::Utc::now()).unwrap() else {
            panic!("create must change")
        };
        Arc::new(e)
    }

    #[tokio::test]
    async fn parties_and_interested_users_get_each_event_once() {
        let hub = UserHub::new(8);
        let mut alice = hub.subscribe("alice");
        let mut bob = hub.subscribe("bob");
        let mut eve = hub.subscribe("eve");
        // Bob tracks job 1 although the next event no longer names him.
        bob.track(JobId::new(1).unwrap());
        alice.track(JobId::new(1).unwrap());
        hub.publish(&event(1, "alice", Some("carol")));
        assert_eq!(alice.recv().await.unwrap().job_id().get(), 1);
        assert_eq!(bob.recv().await.unwrap().job_id().get(), 1);
        assert!(matches!(
            alice.receiver.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
        assert!(matches!(
            eve.receiver.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
        bob.untrack(JobId::new(1).unwrap());
        hub.publish(&event(1, "alice", Some("carol")));
        assert!(matches!(
            bob.receiver.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
    }

    #[tokio::test]
    async fn dropping_subscriptions_leaves_nothing_behind() {
        let hub = UserHub::new(8);
        let mut a = hub.subscribe("alice");
        let mut b = hub.subscribe("alice");
        a.track(JobId::new(1).unwrap());
        b.track(JobId::new(1).unwrap());
        b.track(JobId::new(2).unwrap());
        assert_eq!(hub.sizes(), (1, 2));
        drop(a);
        assert_eq!(hub.sizes(), (1, 2));
        drop(b);
        assert_eq!(hub.sizes(), (0, 0));
        // Publishing with nobody subscribed is a no-op.
        hub.publish(&event(3, "x", None));
        assert_eq!(hub.sizes(), (0, 0));
    }
}
