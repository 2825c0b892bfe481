//! What both backends' batching writers share: queueing a change for a
//! writer and answering it, deciding a batch of requests in memory, in
//! order, against the batch's view of the database (pure: a batch decides
//! exactly as its requests would one by one), and keeping one request's
//! failure from failing the rest of its batch. No database code here: the
//! backends bring their own transaction.

use super::{Committed, Condition};
use crate::telemetry::metrics as m;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Outcome, StorageError, codec};
use crate::domain::{Decision, DomainError, Event, Job, JobId, Request, decide};

/// The batch's jobs as they stand in its transaction, by id.
pub(super) type BatchJobs = HashMap<JobId, Job>;

/// The events that used a request id, by (actor id, request id): those
/// committed before the batch and those the batch has decided so far.
pub(super) type Answered = HashMap<(String, String), Event>;

/// Decides `request` against the batch's view of the database and, if it
/// changes the job, updates that view, so that a later request of the
/// batch sees the change exactly as it would once it is committed.
fn decide_in_batch(
    jobs: &mut BatchJobs,
    answered: &mut Answered,
    request: &Request,
) -> Result<Outcome, DomainError> {
    if let Some(request_id) = &request.request_id
        && let Some(earlier) = answered.get(&(
            request.caller.id().to_owned(),
            request_id.as_str().to_owned(),
        ))
    {
        return Ok(Outcome::Replayed(earlier.clone()));
    }
    match decide(jobs.get(&request.job_id), request, codec::now())? {
        Decision::Unchanged(job) => Ok(Outcome::Unchanged(job)),
        Decision::Changed(event) => {
            jobs.insert(request.job_id, event.job.clone());
            if let Some(request_id) = &event.request_id {
                // A retry later in the same batch is answered with this event.
                answered.insert(
                    (event.actor_id.clone(), request_id.as_str().to_owned()),
                    event.clone(),
                );
            }
            Ok(Outcome::Changed(Arc::new(event)))
        }
    }
}

/// Decides every request of a batch, in order: each request's result, and
/// the changes to write in the order they were decided.
pub(super) fn decide_all(
    jobs: &mut BatchJobs,
    answered: &mut Answered,
    requests: &[Request],
) -> (Vec<Result<Outcome, StorageError>>, Vec<Arc<Event>>) {
    let mut results = Vec::with_capacity(requests.len());
    let mut changes = Vec::new();
    for request in requests {
        let result = decide_in_batch(jobs, answered, request);
        if let Ok(Outcome::Changed(event)) = &result {
            changes.push(event.clone());
        }
        results.push(result.map_err(StorageError::from));
    }
    (results, changes)
}

/// A backend's way of committing a batch in one transaction: each
/// request's answer, or an error that failed (and wrote nothing of) the
/// whole batch.
pub(super) trait CommitBatch {
    fn commit(
        &mut self,
        requests: &[Request],
    ) -> impl Future<Output = Result<Vec<Result<Outcome, StorageError>>, StorageError>> + Send;
}

/// Whether writes are failing now for a condition that blocks them (a full
/// disk, an I/O error, a read-only database), as the last batch found.
/// Health checking reads it; while it is set, the health probe tries a
/// real write, so a recovery is seen even when no client writes.
#[derive(Debug, Default)]
pub(super) struct WriteFailure(std::sync::Mutex<Option<Condition>>);

impl WriteFailure {
    pub(super) fn set(&self, condition: Option<Condition>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = condition;
    }

    pub(super) fn get(&self) -> Option<Condition> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Where a writer sends one request's answer.
pub(super) type Reply = oneshot::Sender<Result<Outcome, StorageError>>;

/// Queues a change for a backend's writer (`op` wraps the reply channel in
/// that backend's queue message) and waits for its answer, `timeout` at
/// most in all: queueing, waiting for a connection and committing share
/// one deadline, so a caller never waits longer than `--db-timeout-ms`. A
/// change that timed out stays queued and may still commit; a retry with
/// its request id then finds it.
pub(super) async fn submit<Op>(
    writes: &mpsc::Sender<Op>,
    timeout: Duration,
    op: impl FnOnce(Reply) -> Op,
) -> Result<Outcome, StorageError> {
    hand_off(timeout, "the writer", |reply| async move {
        writes.send(op(reply)).await.map_err(|_| shutting_down())
    })
    .await
}

pub(super) fn shutting_down() -> StorageError {
    StorageError::Unavailable(
        Condition::ShuttingDown,
        "the server is shutting down".into(),
    )
}

/// Hands work to a database thread or task (`send` queues it with the
/// channel its answer comes back on, or says why it could not) and waits
/// for the answer, `timeout` at most for queueing and answering together.
/// A dropped answer means the server is shutting down.
pub(super) async fn hand_off<T, Sent>(
    timeout: Duration,
    who: &str,
    send: impl FnOnce(oneshot::Sender<Result<T, StorageError>>) -> Sent,
) -> Result<T, StorageError>
where
    Sent: Future<Output = Result<(), StorageError>>,
{
    let (reply, answer) = oneshot::channel();
    let timed_out = || {
        StorageError::Unavailable(
            Condition::TimedOut,
            format!("no answer from {who} within {timeout:?}"),
        )
    };
    let deadline = tokio::time::Instant::now() + timeout;
    tokio::time::timeout_at(deadline, send(reply))
        .await
        .map_err(|_| timed_out())??;
    tokio::time::timeout_at(deadline, answer)
        .await
        .map_err(|_| timed_out())?
        .map_err(|_| shutting_down())?
}

/// Commits a batch (see [`commit_isolating`]), tells `committed` of every
/// change in the order they were decided, and sends every request its
/// answer. A caller that went away (a cancelled RPC, a timed-out wait) is
/// not told; its change stands, and its watchers hear of it all the same.
/// Returns the condition that failed the whole batch, if it is one that
/// blocks writes (a full disk, say), for health checking.
pub(super) async fn commit_and_answer<C: CommitBatch + Send>(
    failure: &WriteFailure,
    committed: &dyn Committed,
    backend: &mut C,
    requests: &[Request],
    replies: Vec<Reply>,
) -> Option<Condition> {
    let started = std::time::Instant::now();
    let results = commit_isolating(backend, requests).await;
    // How full and how slow batches are: what bounds write throughput.
    static SIZES: m::Kept<metrics::Histogram> = m::Kept::new();
    static SECONDS: m::Kept<metrics::Histogram> = m::Kept::new();
    SIZES.record(requests.len() as f64, || metrics::histogram!(m::BATCH_SIZE));
    SECONDS.record(started.elapsed().as_secs_f64(), || {
        metrics::histogram!(m::BATCH_SECONDS)
    });
    tracing::debug!(
        changes = requests.len(),
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "batch committed"
    );
    let blocked = match results.first() {
        Some(Err(StorageError::Unavailable(condition, _)))
            if condition.blocks_writes()
                && results
                    .iter()
                    .all(|r| matches!(r, Err(StorageError::Unavailable(..)))) =>
        {
            Some(*condition)
        }
        _ => None,
    };
    for result in &results {
        if let Ok(Outcome::Changed(event)) = result {
            committed.committed(event.clone());
        }
    }
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result);
    }
    failure.set(blocked);
    blocked
}

/// Commits `requests` as one batch. If the batch fails for any reason but
/// the database being unavailable (which would fail each request alike),
/// each request is committed alone, so that one request's trouble (a
/// corrupt row, say) is that request's answer and nobody else's.
async fn commit_isolating<C: CommitBatch + Send>(
    backend: &mut C,
    requests: &[Request],
) -> Vec<Result<Outcome, StorageError>> {
    match backend.commit(requests).await {
        Ok(results) => results,
        Err(err) if requests.len() > 1 && !matches!(err, StorageError::Unavailable(..)) => {
            metrics::counter!(m::BATCHES_FAILED).increment(1);
            tracing::warn!(
                error = %err,
                changes = requests.len(),
                "batch failed; committing its changes one by one"
            );
            let mut results = Vec::with_capacity(requests.len());
            for request in requests {
                let alone = backend.commit(std::slice::from_ref(request)).await;
                results.push(alone.and_then(|mut answers| {
                    answers.pop().unwrap_or_else(|| {
                        Err(StorageError::Internal(
                            "a batch of one had no answer".into(),
                        ))
                    })
                }));
            }
            results
        }
        Err(err) => {
            metrics::counter!(m::BATCHES_FAILED).increment(1);
            if !matches!(err, StorageError::Unavailable(..)) {
                // An unavailable database is logged where it is answered,
                // at a bounded rate (grpc::status).
                tracing::error!(error = %err, changes = requests.len(), "write transaction failed");
            }
            vec![Err(err); requests.len()]
        }
    }
}
