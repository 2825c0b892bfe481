//! A pool of threads, each owning one blocking connection, that run the
//! jobs async callers queue for them: SQLite's readers.
//!
//! A sleeping thread costs a futex wake and a context switch to start,
//! about as much as the read it would do, so the pool wakes one only when
//! the queue holds more jobs than there are threads awake to take them.
//! Under a steady load one thread stays awake and drains the queue; a burst
//! wakes more, up to the pool's size. So a job may wait behind one slow
//! job until that ends or a second job arrives, never longer. The
//! queue is bounded; a job refused for a full queue is the caller's
//! answer, never a wait without end. Nothing here may block an async
//! caller: `submit` only takes a lock held for a push or a pop.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// One job, run by whichever thread takes it first.
pub(super) type Job<C> = Box<dyn FnOnce(&C) + Send>;

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The queue holds as many jobs as it may.
    Full,
    /// The pool was closed.
    Closed,
}

pub(super) struct Readers<C> {
    shared: Arc<Shared<C>>,
}

struct Shared<C> {
    state: Mutex<State<C>>,
    work: Condvar,
    capacity: usize,
    threads: usize,
}

struct State<C> {
    jobs: VecDeque<Job<C>>,
    /// Threads not waiting for work, or woken and not yet running.
    awake: usize,
    /// Wake-ups sent and not yet taken by a thread.
    signals: usize,
    closed: bool,
}

impl<C> Shared<C> {
    fn state(&self) -> MutexGuard<'_, State<C>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<C: Send + 'static> Readers<C> {
    /// Starts one thread per connection, named `{name}-{n}`; at most
    /// `capacity` jobs may wait.
    pub(super) fn start(name: &str, connections: Vec<C>, capacity: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                awake: connections.len(),
                signals: 0,
                closed: false,
            }),
            work: Condvar::new(),
            capacity,
            threads: connections.len(),
        });
        for (n, conn) in connections.into_iter().enumerate() {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || run(&shared, &conn))?;
        }
        Ok(Self { shared })
    }

    /// Queues `job`, waking a thread if none awake will get to it.
    pub(super) fn submit(&self, job: Job<C>) -> Result<(), Refused> {
        let mut state = self.shared.state();
        if state.closed {
            return Err(Refused::Closed);
        }
        if state.jobs.len() >= self.shared.capacity {
            return Err(Refused::Full);
        }
        state.jobs.push_back(job);
        if state.jobs.len() > state.awake && state.awake < self.shared.threads {
            state.awake += 1;
            state.signals += 1;
            self.shared.work.notify_one();
        }
        Ok(())
    }
}

impl<C> Readers<C> {
    /// Refuses new jobs; the threads finish what is queued, then end.
    pub(super) fn close(&self) {
        self.shared.state().closed = true;
        self.shared.work.notify_all();
    }
}

impl<C> Drop for Readers<C> {
    fn drop(&mut self) {
        self.close();
    }
}

fn run<C>(shared: &Shared<C>, conn: &C) {
    let mut state = shared.state();
    loop {
        if let Some(job) = state.jobs.pop_front() {
            drop(state);
            job(conn);
            state = shared.state();
            continue;
        }
        if state.closed {
            return;
        }
        state.awake -= 1;
        state = shared
            .work
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner);
        if state.signals > 0 {
            // Counted awake by whoever signalled.
            state.signals -= 1;
        } else {
            // A spurious wake-up, or the pool closing.
            state.awake += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn pool(threads: usize, capacity: usize) -> Readers<usize> {
        Readers::start("test-reader", (0..threads).collect(), capacity).unwrap()
    }

    /// Every job runs once, whichever thread runs it.
    #[test]
    fn every_job_runs_once() {
        let readers = pool(3, 10_000);
        let (done, finished) = mpsc::channel();
        for n in 0..5_000 {
            let done = done.clone();
            readers
                .submit(Box::new(move |_| done.send(n).unwrap()))
                .unwrap();
        }
        let mut ran: Vec<i32> = (0..5_000)
            .map(|_| finished.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        ran.sort_unstable();
        assert_eq!(ran, (0..5_000).collect::<Vec<_>>());
    }

    /// Jobs queued behind a stuck one wake another thread as soon as more
    /// wait than there are threads awake, and it runs them.
    #[test]
    fn jobs_behind_a_stuck_one_wake_another_thread() {
        let readers = pool(2, 16);
        let (release, stuck) = mpsc::channel::<()>();
        let (ran_on, ran) = mpsc::channel();
        let first = ran_on.clone();
        readers
            .submit(Box::new(move |conn| {
                first.send(*conn).unwrap();
                let _ = stuck.recv();
            }))
            .unwrap();
        let stuck_on = ran.recv_timeout(Duration::from_secs(10)).unwrap();
        for _ in 0..2 {
            let ran_on = ran_on.clone();
            readers
                .submit(Box::new(move |conn| ran_on.send(*conn).unwrap()))
                .unwrap();
        }
        for _ in 0..2 {
            let other = ran.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_ne!(other, stuck_on);
        }
        drop(release);
    }

    /// A full queue and a closed pool refuse jobs rather than wait.
    #[test]
    fn a_full_queue_and_a_closed_pool_refuse() {
        let readers = pool(1, 2);
        let (release, stuck) = mpsc::channel::<()>();
        let (started, running) = mpsc::channel();
        readers
            .submit(Box::new(move |_| {
                started.send(()).unwrap();
                let _ = stuck.recv();
            }))
            .unwrap();
        running.recv_timeout(Duration::from_secs(10)).unwrap();
        readers.submit(Box::new(|_| ())).unwrap();
        readers.submit(Box::new(|_| ())).unwrap();
        assert_eq!(readers.submit(Box::new(|_| ())), Err(Refused::Full));
        drop(release);
        readers.close();
        assert_eq!(readers.submit(Box::new(|_| ())), Err(Refused::Closed));
    }
}
