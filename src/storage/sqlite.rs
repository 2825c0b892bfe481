//! SQLite, the embedded default: one file, WAL, `synchronous=FULL`.
//!
//! SQLite has one writer at a time, so rather than let requests queue on its
//! lock, one writer task owns the only write connection and commits whatever
//! changes are waiting in a single transaction: one fsync acknowledges many
//! changes, and none is acknowledged before its commit is on disk. Within
//! that transaction a batch costs the same few statements whatever its size
//! (see `commit_batch`): the requests are decided in memory, in order. Reads
//! (snapshots, replays) use a separate pool and never wait for the writer.
//! Nothing here may hold a connection while events are published.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Sqlite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::codec::{self, JobRow, job_columns};
use super::{Outcome, StorageError, StoreOptions};
use crate::domain::{Decision, DomainError, Event, Job, JobId, Request, decide};

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

    /// Jobs where `user` is the client or the assigned worker: unfinished
    /// first, then most recently updated.
    pub async fn jobs_of_user(&self, user: &str, limit: u32) -> Result<Vec<Job>, StorageError> {
        sqlx::query_as::<_, JobRow>(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE client_id = ?1 OR worker_id = ?1 \
             ORDER BY (status IN ('completed', 'cancelled')), updated_at DESC, job_id LIMIT ?2"
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
        let started = std::time::Instant::now();
        let results = match commit_batch(&mut conn, &requests).await {
            Ok(results) => results,
            Err(err) => {
                tracing::error!(error = %err, changes = requests.len(), "write transaction failed");
                vec![Err(err); requests.len()]
            }
        };
        // How full and how slow batches are: what bounds write throughput.
        tracing::debug!(
            changes = requests.len(),
            micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "batch committed"
        );
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
    // hand-offs, not SQLite, are what a batch spends its time on. So a batch
    // costs the same few statements whatever its size: read its jobs and
    // its already-used request ids with one each, decide every request in
    // memory, then write every job row with one and every event with one.
    let mut jobs = load_jobs(&mut tx, requests).await?;
    let mut answered = load_answered(&mut tx, requests).await?;
    let mut results = Vec::with_capacity(requests.len());
    let mut changes = Vec::new();
    for request in requests {
        let result = decide_in_batch(&mut jobs, &mut answered, request);
        if let Ok(Outcome::Changed(event)) = &result {
            changes.push(event.clone());
        }
        results.push(result.map_err(StorageError::from));
    }
    write_changes(&mut tx, &changes).await?;
    tx.commit().await?;
    Ok(results)
}

/// The batch's jobs as they stand in its transaction, by id.
type BatchJobs = HashMap<JobId, Job>;

/// The events that used a request id, by (actor id, request id): those
/// committed before the batch and those the batch has decided so far.
type Answered = HashMap<(String, String), Event>;

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

/// Reads the committed events that already used one of the batch's
/// request ids, in one statement (none if no request carries an id). The
/// join is served by the unique index on (actor_id, request_id).
async fn load_answered(
    conn: &mut SqliteConnection,
    requests: &[Request],
) -> Result<Answered, StorageError> {
    let pairs: Vec<(&str, &str)> = requests
        .iter()
        .filter_map(|r| Some((r.caller.id(), r.request_id.as_ref()?.as_str())))
        .collect();
    if pairs.is_empty() {
        return Ok(Answered::new());
    }
    let pairs = serde_json::to_string(&pairs)
        .map_err(|e| StorageError::Internal(format!("cannot list request ids: {e}")))?;
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT e.actor_id, e.request_id, e.payload \
         FROM json_each(?) AS p JOIN job_events AS e \
           ON e.actor_id = json_extract(p.value, '$[0]') \
          AND e.request_id = json_extract(p.value, '$[1]')",
    )
    .bind(pairs)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(actor_id, request_id, payload)| {
            Ok(((actor_id, request_id), codec::decode_event(&payload)?))
        })
        .collect()
}

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
            Ok(Outcome::Changed(event))
        }
    }
}

/// SQLite's limit on bound parameters per statement
/// (`SQLITE_MAX_VARIABLE_NUMBER`, 32 766 by default since 3.32). A batch
/// larger than one statement can bind is written in chunks; at the default
/// `max_batch` of 256 every write is one statement.
const MAX_PARAMS: usize = 32_766;
/// Bound parameters per row of each write below.
const JOB_PARAMS: usize = 11;
const EVENT_PARAMS: usize = 8;

/// Writes the batch's changes in the order they were decided: the job row
/// after each change, then every event. Fails if any row was not written,
/// so the caller's error rolls the whole batch back.
async fn write_changes(conn: &mut SqliteConnection, changes: &[Event]) -> Result<(), StorageError> {
    // A job changed twice in the batch gets two rows, in order, in the same
    // statement (SQLite applies a multi-row upsert row by row). Each row is
    // a compare-and-set on the revision (the WHERE), so a history can never
    // fork even if two writers ever raced: a row whose check fails changes
    // nothing, and the count of changed rows falls short.
    for chunk in changes.chunks(MAX_PARAMS / JOB_PARAMS) {
        let mut upsert =
            QueryBuilder::<Sqlite>::new(concat!("INSERT INTO jobs (", job_columns!(), ") "));
        upsert.push_values(chunk, |mut row, event| {
            let job = &event.job;
            row.push_bind(job.id.get())
                .push_bind(job.client_id.as_str())
                .push_bind(job.worker_id.as_ref().map(|w| w.as_str()))
                .push_bind(job.status.as_str())
                .push_bind(job.payment_method.map(|m| m.as_str()))
                .push_bind(job.payment_proof.as_ref().map(|p| p.as_str()))
                .push_bind(job.change_request_reason.as_ref().map(|r| r.as_str()))
                .push_bind(job.cancel_reason.as_ref().map(|r| r.as_str()))
                .push_bind(job.revision)
                .push_bind(job.created_at)
                .push_bind(job.updated_at);
        });
        upsert.push(
            " ON CONFLICT (job_id) DO UPDATE SET \
               worker_id = excluded.worker_id, status = excluded.status, \
               payment_method = excluded.payment_method, payment_proof = excluded.payment_proof, \
               change_request_reason = excluded.change_request_reason, \
               cancel_reason = excluded.cancel_reason, revision = excluded.revision, \
               updated_at = excluded.updated_at \
             WHERE jobs.revision = excluded.revision - 1",
        );
        let written = upsert.build().execute(&mut *conn).await?.rows_affected();
        if written != chunk.len() as u64 {
            return Err(StorageError::Internal(format!(
                "only {written} of {} job rows matched their revision: \
                 a job moved while the batch was being written",
                chunk.len()
            )));
        }
    }
    let payloads = changes
        .iter()
        .map(codec::encode_event)
        .collect::<Result<Vec<_>, _>>()?;
    let rows: Vec<(&Event, String)> = changes.iter().zip(payloads).collect();
    for chunk in rows.chunks(MAX_PARAMS / EVENT_PARAMS) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO job_events \
             (job_id, revision, event, actor_id, actor_role, request_id, payload, created_at) ",
        );
        insert.push_values(chunk, |mut row, (event, payload)| {
            row.push_bind(event.job_id().get())
                .push_bind(event.revision())
                .push_bind(event.kind.as_str())
                .push_bind(event.actor_id.as_str())
                .push_bind(codec::role_str(event.actor_role))
                .push_bind(event.request_id.as_ref().map(|r| r.as_str()))
                .push_bind(payload.as_str())
                .push_bind(event.at());
        });
        let written = insert.build().execute(&mut *conn).await?.rows_affected();
        if written != chunk.len() as u64 {
            return Err(StorageError::Internal(format!(
                "wrote {written} of {} events",
                chunk.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Caller, Command, PaymentMethod, RequestId, ServiceId, UserId};

    async fn migrated(dir: &tempfile::TempDir) -> SqliteConnection {
        let path = dir.path().join("batch.db");
        let mut conn = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .foreign_keys(true)
            .connect()
            .await
            .unwrap();
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut conn)
            .await
            .unwrap();
        conn
    }

    fn request(caller: Caller, command: Command, request_id: Option<&str>) -> Request {
        Request {
            job_id: JobId::new(7).unwrap(),
            caller,
            command,
            request_id: request_id.map(|r| RequestId::parse("request_id", r).unwrap()),
            expected_revision: None,
        }
    }

    fn user(id: &str) -> Caller {
        Caller::User(UserId::parse("user", id).unwrap())
    }

    fn create() -> Request {
        request(
            Caller::Service(ServiceId::parse("service", "svc").unwrap()),
            Command::Create {
                client: UserId::parse("client", "alice").unwrap(),
                worker: Some(UserId::parse("worker", "bob").unwrap()),
            },
            None,
        )
    }

    fn changed(result: &Result<Outcome, StorageError>) -> Event {
        match result {
            Ok(Outcome::Changed(event)) => event.clone(),
            other => panic!("expected a change, got {other:?}"),
        }
    }

    async fn stored_revisions(conn: &mut SqliteConnection) -> (i64, Vec<i64>) {
        let job: i64 = sqlx::query_scalar("SELECT revision FROM jobs WHERE job_id = 7")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let events: Vec<i64> = sqlx::query_scalar(
            "SELECT revision FROM job_events WHERE job_id = 7 ORDER BY revision",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        (job, events)
    }

    /// One batch holding two changes to one job, a retry of the first (by
    /// request id) and a refusal: each later request sees the earlier ones,
    /// the retry is answered with the first change's event, and both
    /// changes are stored in order.
    #[tokio::test]
    async fn a_batch_sees_its_own_changes_and_request_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = migrated(&dir).await;
        let created = commit_batch(&mut conn, &[create()]).await.unwrap();
        assert_eq!(changed(&created[0]).revision(), 1);

        let mark = request(user("bob"), Command::MarkComplete, Some("mark-1"));
        let approve = request(
            user("alice"),
            Command::ApproveCompletion {
                method: PaymentMethod::Gcash,
            },
            Some("approve-1"),
        );
        // Someone else's job: refused, and the rest of the batch stands.
        let refused = request(user("carol"), Command::MarkComplete, None);
        let batch = [mark.clone(), approve, mark.clone(), refused];
        let results = commit_batch(&mut conn, &batch).await.unwrap();

        let marked = changed(&results[0]);
        assert_eq!(marked.revision(), 2);
        assert_eq!(changed(&results[1]).revision(), 3);
        match &results[2] {
            Ok(Outcome::Replayed(event)) => assert_eq!(event, &marked),
            other => panic!("expected the first change replayed, got {other:?}"),
        }
        assert!(
            matches!(&results[3], Err(StorageError::Rejected(_))),
            "{:?}",
            results[3]
        );
        assert_eq!(stored_revisions(&mut conn).await, (3, vec![1, 2, 3]));

        // In a later batch the retry is answered from the log.
        let results = commit_batch(&mut conn, &[mark]).await.unwrap();
        match &results[0] {
            Ok(Outcome::Replayed(event)) => assert_eq!(event, &marked),
            other => panic!("expected the stored change replayed, got {other:?}"),
        }
        assert_eq!(stored_revisions(&mut conn).await, (3, vec![1, 2, 3]));
    }

    /// A change whose revision check fails fails the whole write, so the
    /// batch's transaction rolls back and nothing of it is stored.
    #[tokio::test]
    async fn a_failed_revision_check_fails_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = migrated(&dir).await;
        let created = commit_batch(&mut conn, &[create()]).await.unwrap();
        let results = commit_batch(
            &mut conn,
            &[request(user("bob"), Command::MarkComplete, None)],
        )
        .await
        .unwrap();
        let stale = changed(&results[0]);

        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let fresh = changed(&created[0]);
        let err = write_changes(&mut tx, &[fresh, stale]).await.unwrap_err();
        assert!(matches!(err, StorageError::Internal(_)), "{err:?}");
        tx.rollback().await.unwrap();
        assert_eq!(stored_revisions(&mut conn).await, (2, vec![1, 2]));
    }
}
