//! SQLite, the embedded default: one file, WAL, `synchronous=FULL`.
//!
//! SQLite has one writer at a time, so rather than let requests queue on its
//! lock, one writer task owns the only write connection and commits whatever
//! changes are waiting in a single transaction: one fsync acknowledges many
//! changes, and none is acknowledged before its commit is on disk. Reads
//! (snapshots, replays) use a separate pool and never wait for the writer.
//! Nothing here may hold a connection while events are published.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::codec::{self, JobRow, job_columns};
use super::{Outcome, StorageError, StoreOptions};
use crate::domain::{Decision, Event, Job, JobId, Request, decide};

/// How many changes may wait for the writer before callers wait too.
const WRITE_QUEUE: usize = 4096;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    reads: SqlitePool,
    writes: mpsc::Sender<WriteOp>,
    /// Cancelled by `close`: the writer stops taking new changes, commits
    /// what is queued and exits.
    closing: CancellationToken,
    writer: TaskTracker,
}

#[derive(Debug)]
enum WriteOp {
    Execute {
        request: Request,
        reply: oneshot::Sender<Result<Outcome, StorageError>>,
    },
    /// Health checking: can the writer take the write lock right now?
    Ping {
        reply: oneshot::Sender<Result<(), StorageError>>,
    },
}

impl SqliteStore {
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StorageError> {
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(StorageError::Unavailable(
                "in-memory SQLite is not supported: every acknowledged change must be durable; \
                 use a file such as sqlite://jobstatus.db"
                    .into(),
            ));
        }
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| StorageError::Unavailable(format!("bad SQLite URL {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);

        let mut writer_conn = connect.connect().await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut writer_conn)
            .await
            .map_err(|e| StorageError::Internal(format!("migrations failed: {e}")))?;

        let reads = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .acquire_timeout(options.busy_timeout)
            .connect_with(connect.read_only(true).create_if_missing(false))
            .await?;

        let (writes, rx) = mpsc::channel(WRITE_QUEUE);
        let closing = CancellationToken::new();
        let writer = TaskTracker::new();
        writer.spawn(run_writer(
            writer_conn,
            rx,
            options.max_batch.max(1),
            closing.clone(),
        ));
        writer.close();
        Ok(Self {
            inner: Arc::new(Inner {
                reads,
                writes,
                closing,
                writer,
            }),
        })
    }

    pub async fn execute(&self, request: Request) -> Result<Outcome, StorageError> {
        let (reply, answer) = oneshot::channel();
        let shutting_down = || StorageError::Unavailable("the server is shutting down".into());
        self.inner
            .writes
            .send(WriteOp::Execute { request, reply })
            .await
            .map_err(|_| shutting_down())?;
        answer.await.map_err(|_| shutting_down())?
    }

    pub async fn get_job(&self, id: JobId) -> Result<Option<Job>, StorageError> {
        sqlx::query_as::<_, JobRow>(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE job_id = ?"
        ))
        .bind(id.get())
        .fetch_optional(&self.inner.reads)
        .await?
        .map(Job::try_from)
        .transpose()
    }

    pub async fn events_after(
        &self,
        id: JobId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StorageError> {
        let payloads: Vec<String> = sqlx::query_scalar(
            "SELECT payload FROM job_events WHERE job_id = ? AND revision > ? \
             ORDER BY revision LIMIT ?",
        )
        .bind(id.get())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.inner.reads)
        .await?;
        payloads.iter().map(|p| codec::decode_event(p)).collect()
    }

    /// Jobs where `user` is the client or the assigned worker, by id.
    pub async fn jobs_of_user(&self, user: &str, limit: u32) -> Result<Vec<Job>, StorageError> {
        sqlx::query_as::<_, JobRow>(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE client_id = ?1 OR worker_id = ?1 ORDER BY job_id LIMIT ?2"
        ))
        .bind(user)
        .bind(i64::from(limit))
        .fetch_all(&self.inner.reads)
        .await?
        .into_iter()
        .map(Job::try_from)
        .collect()
    }

    /// Checks both paths: a read, and that the writer can take the lock.
    pub async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.inner.reads).await?;
        let stopped = || StorageError::Unavailable("the SQLite writer has stopped".into());
        let (reply, answer) = oneshot::channel();
        self.inner
            .writes
            .send(WriteOp::Ping { reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub async fn close(&self) {
        self.inner.closing.cancel();
        self.inner.writer.wait().await;
        self.inner.reads.close().await;
    }
}

/// The writer task: commits queued changes in batches until closed, then
/// drains the queue.
async fn run_writer(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<WriteOp>,
    max_batch: usize,
    closing: CancellationToken,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut accepting = true;
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, max_batch) => n,
            () = closing.cancelled(), if accepting => {
                accepting = false;
                rx.close();
                continue;
            }
        };
        if received == 0 {
            break;
        }
        let mut requests = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for op in batch.drain(..) {
            match op {
                WriteOp::Execute { request, reply } => {
                    requests.push(request);
                    replies.push(reply);
                }
                WriteOp::Ping { reply } => {
                    let _ = reply.send(ping_writer(&mut conn).await);
                }
            }
        }
        if requests.is_empty() {
            continue;
        }
        let results = match commit_batch(&mut conn, &requests).await {
            Ok(results) => results,
            Err(err) => {
                tracing::error!(error = %err, changes = requests.len(), "write transaction failed");
                vec![Err(err); requests.len()]
            }
        };
        for (reply, result) in replies.into_iter().zip(results) {
            // The caller may have gone (cancelled RPC); the change stands.
            let _ = reply.send(result);
        }
    }
    if let Err(err) = conn.close().await {
        tracing::warn!(error = %err, "closing the SQLite writer connection failed");
    }
}

/// Takes and releases the write lock, failing like a write would.
async fn ping_writer(conn: &mut SqliteConnection) -> Result<(), StorageError> {
    let tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    tx.rollback().await?;
    Ok(())
}

/// Decides and writes every request in one transaction. A refused request
/// gets its own error; a database error fails the whole batch, which then
/// wrote nothing.
async fn commit_batch(
    conn: &mut SqliteConnection,
    requests: &[Request],
) -> Result<Vec<Result<Outcome, StorageError>>, StorageError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    // Every statement is a round trip to sqlx's SQLite thread, and those
    // hand-offs, not SQLite, are what a batch spends its time on: read all
    // its jobs with one statement, and write each change with one.
    let mut jobs = load_jobs(&mut tx, requests).await?;
    let mut results = Vec::with_capacity(requests.len());
    for request in requests {
        match apply(&mut tx, &mut jobs, request).await {
            Err(StorageError::Rejected(refusal)) => results.push(Err(refusal.into())),
            Err(err) => return Err(err),
            Ok(outcome) => results.push(Ok(outcome)),
        }
    }
    tx.commit().await?;
    Ok(results)
}

/// The batch's jobs as they stand in its transaction, by id.
type BatchJobs = HashMap<JobId, Job>;

/// Reads every job `requests` touch, in one statement.
async fn load_jobs(
    conn: &mut SqliteConnection,
    requests: &[Request],
) -> Result<BatchJobs, StorageError> {
    let ids: Vec<i64> = requests.iter().map(|r| r.job_id.get()).collect();
    let ids = serde_json::to_string(&ids)
        .map_err(|e| StorageError::Internal(format!("cannot list job ids: {e}")))?;
    sqlx::query_as::<_, JobRow>(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE job_id IN (SELECT value FROM json_each(?))"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|row| Job::try_from(row).map(|job| (job.id, job)))
    .collect()
}

async fn apply(
    conn: &mut SqliteConnection,
    jobs: &mut BatchJobs,
    request: &Request,
) -> Result<Outcome, StorageError> {
    if let Some(request_id) = &request.request_id {
        let earlier: Option<String> = sqlx::query_scalar(
            "SELECT payload FROM job_events WHERE actor_id = ? AND request_id = ?",
        )
        .bind(request.caller.id())
        .bind(request_id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(payload) = earlier {
            return Ok(Outcome::Replayed(codec::decode_event(&payload)?));
        }
    }
    match decide(jobs.get(&request.job_id), request, codec::now())? {
        Decision::Unchanged(job) => Ok(Outcome::Unchanged(job)),
        Decision::Changed(event) => {
            write_event(conn, &event).await?;
            // Later changes to this job in the batch start from here.
            jobs.insert(request.job_id, event.job.clone());
            Ok(Outcome::Changed(event))
        }
    }
}

async fn write_event(conn: &mut SqliteConnection, event: &Event) -> Result<(), StorageError> {
    let job = &event.job;
    // One round trip, two statements. The WHERE makes the upsert a
    // compare-and-set on the revision, so a history can never fork even if
    // two writers ever raced; the event row is written only if the upsert
    // changed the job (`changes() = 1`), so a failed check writes nothing.
    let written = sqlx::query(concat!(
        "INSERT INTO jobs (",
        job_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (job_id) DO UPDATE SET \
           worker_id = excluded.worker_id, status = excluded.status, \
           payment_method = excluded.payment_method, payment_proof = excluded.payment_proof, \
           change_request_reason = excluded.change_request_reason, \
           cancel_reason = excluded.cancel_reason, revision = excluded.revision, \
           updated_at = excluded.updated_at \
         WHERE jobs.revision = excluded.revision - 1; \
         INSERT INTO job_events \
         (job_id, revision, event, actor_id, actor_role, request_id, payload, created_at) \
         SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE changes() = 1"
    ))
    .bind(job.id.get())
    .bind(job.client_id.as_str())
    .bind(job.worker_id.as_ref().map(|w| w.as_str()))
    .bind(job.status.as_str())
    .bind(job.payment_method.map(|m| m.as_str()))
    .bind(job.payment_proof.as_ref().map(|p| p.as_str()))
    .bind(job.change_request_reason.as_ref().map(|r| r.as_str()))
    .bind(job.cancel_reason.as_ref().map(|r| r.as_str()))
    .bind(job.revision)
    .bind(job.created_at)
    .bind(job.updated_at)
    .bind(job.id.get())
    .bind(job.revision)
    .bind(event.kind.as_str())
    .bind(&event.actor_id)
    .bind(codec::role_str(event.actor_role))
    .bind(event.request_id.as_ref().map(|r| r.as_str()))
    .bind(codec::encode_event(event)?)
    .bind(event.at())
    .execute(&mut *conn)
    .await?;
    if written.rows_affected() != 2 {
        return Err(StorageError::Internal(format!(
            "job {} moved while revision {} was being written",
            job.id, job.revision
        )));
    }
    Ok(())
}
