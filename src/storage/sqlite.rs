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

use super::Condition;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Sqlite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::batch::{
    Answered, BatchJobs, CommitBatch, Reply, WriteFailure, commit_and_answer, decide_all, submit,
};
use super::codec::{self, JobRow, job_columns};
use super::{Outcome, StorageError, StoreOptions};
use crate::domain::{Event, Job, JobId, Request};

/// The size of the health probe's write while writes fail: about what a
/// batch of a hundred changes writes.
const PROBE_BYTES: i64 = 64 * 1024;

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
    /// How long a change may wait for its answer (`--db-timeout-ms`).
    timeout: Duration,
    /// Set while writes fail for a condition that blocks them.
    failure: Arc<WriteFailure>,
    /// Cancelled by `close`: the writer stops taking new changes, commits
    /// what is queued and exits.
    closing: CancellationToken,
    writer: TaskTracker,
}

#[derive(Debug)]
enum WriteOp {
    Execute {
        request: Request,
        reply: Reply,
    },
    /// Health checking: can the writer take the write lock right now?
    Ping {
        reply: oneshot::Sender<Result<(), StorageError>>,
    },
}

impl SqliteStore {
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StorageError> {
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(StorageError::unreachable(
                "in-memory SQLite is not supported: every acknowledged change must be durable; \
                 use a file such as sqlite://jobstatus.db",
            ));
        }
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| StorageError::unreachable(format!("bad SQLite URL {url:?}: {e}")))?
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
        let failure = Arc::new(WriteFailure::default());
        writer.spawn(run_writer(
            writer_conn,
            rx,
            options.max_batch.max(1),
            failure.clone(),
            closing.clone(),
        ));
        writer.close();
        Ok(Self {
            inner: Arc::new(Inner {
                reads,
                writes,
                timeout: options.busy_timeout,
                failure,
                closing,
                writer,
            }),
        })
    }

    pub async fn execute(&self, request: Request) -> Result<Outcome, StorageError> {
        submit(&self.inner.writes, self.inner.timeout, |reply| {
            WriteOp::Execute { request, reply }
        })
        .await
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

    pub async fn jobs_by_ids(&self, ids: &[JobId]) -> Result<Vec<Job>, StorageError> {
        let ids = distinct_ids(ids.iter().copied())
            .map_err(|e| StorageError::Internal(format!("cannot list job ids: {e}")))?;
        sqlx::query_as::<_, JobRow>(concat!(
            "SELECT ",
            job_columns!(),
            " FROM json_each(?) AS i JOIN jobs ON jobs.job_id = i.value"
        ))
        .bind(ids)
        .fetch_all(&self.inner.reads)
        .await?
        .into_iter()
        .map(Job::try_from)
        .collect()
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
    /// The condition writes are failing for now, if any (health checking).
    pub fn write_failure(&self) -> Option<Condition> {
        self.inner.failure.get()
    }

    pub async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.inner.reads).await?;
        let stopped = || {
            StorageError::Unavailable(
                Condition::ShuttingDown,
                "the SQLite writer has stopped".into(),
            )
        };
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
    failure: Arc<WriteFailure>,
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
                    let _ = reply.send(ping_writer(&mut conn, &failure).await);
                }
            }
        }
        if requests.is_empty() {
            continue;
        }
        commit_and_answer(&failure, &mut conn, &requests, replies).await;
    }
    // A clean stop leaves the database whole in its one file: merge the WAL
    // back, so that copying jobstatus.db alone after exit 0 copies
    // everything (closing the last connection would too, but only if no
    // reader is still open at that moment).
    if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await
    {
        tracing::warn!(error = %err, "merging the WAL into the database file failed");
    }
    if let Err(err) = conn.close().await {
        tracing::warn!(error = %err, "closing the SQLite writer connection failed");
    }
}

/// Takes and releases the write lock, failing like a write would. While
/// writes fail for a condition that blocks them (a full disk), it commits a
/// real write of a large batch's size instead ([`PROBE_BYTES`] into the
/// `health_probe` row), so a recovery shows even when no client writes, and
/// a disk with room for a tiny write but not for real ones stays reported.
async fn ping_writer(
    conn: &mut SqliteConnection,
    failure: &WriteFailure,
) -> Result<(), StorageError> {
    if failure.get().is_none() {
        let tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        tx.rollback().await?;
        return Ok(());
    }
    // Plain statements, as a batch writes: a failed COMMIT (a full disk)
    // leaves the transaction open, and it must be rolled back here.
    let probe = async {
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        sqlx::query("INSERT OR REPLACE INTO health_probe (id, payload) VALUES (1, zeroblob(?))")
            .bind(PROBE_BYTES)
            .execute(&mut *conn)
            .await?;
        sqlx::query("COMMIT").execute(&mut *conn).await.map(drop)
    };
    let probed: Result<(), sqlx::Error> = probe.await;
    if probed.is_err()
        && let Err(err) = sqlx::query("ROLLBACK").execute(&mut *conn).await
    {
        tracing::debug!(error = %err, "rollback after a failed health probe");
    }
    match probed {
        Ok(()) => {
            failure.set(None);
            Ok(())
        }
        Err(err) => {
            let err = StorageError::from(err);
            if let StorageError::Unavailable(condition, _) = &err {
                failure.set(Some(*condition).filter(|c| c.blocks_writes()));
            }
            Err(err)
        }
    }
}

impl CommitBatch for SqliteConnection {
    fn commit(
        &mut self,
        requests: &[Request],
    ) -> impl Future<Output = Result<Vec<Result<Outcome, StorageError>>, StorageError>> + Send {
        commit_batch(self, requests)
    }
}

/// Decides and writes every request in one transaction. A refused request
/// gets its own error; a database error fails the whole batch, which then
/// wrote nothing.
async fn commit_batch(
    conn: &mut SqliteConnection,
    requests: &[Request],
) -> Result<Vec<Result<Outcome, StorageError>>, StorageError> {
    let written = decide_and_write(conn, requests).await;
    if written.is_err() {
        // Whatever step failed, leave no transaction open for the next
        // batch. SQLite answers "no transaction is active" if there is none.
        if let Err(err) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
            tracing::debug!(error = %err, "rollback after a failed batch");
        }
    }
    written
}

/// The batch's transaction, in three round trips to sqlx's SQLite thread
/// whatever the batch's size: those hand-offs (tens of microseconds each on
/// a busy machine), not SQLite, are what a batch spends most of its time
/// on, and the writer is the one place every change waits its turn. Begin
/// and read, decide every request in memory, write every row, commit.
async fn decide_and_write(
    conn: &mut SqliteConnection,
    requests: &[Request],
) -> Result<Vec<Result<Outcome, StorageError>>, StorageError> {
    let (mut jobs, mut answered) = begin_and_read(conn, requests).await?;
    let (results, changes) = decide_all(&mut jobs, &mut answered, requests);
    write_changes(conn, &changes).await?;
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    Ok(results)
}

/// Job ids as a JSON array without repeats, for `json_each(?) AS i JOIN
/// jobs ON jobs.job_id = i.value`: one primary-key lookup per id. The
/// obvious `job_id IN (SELECT value FROM json_each(?))` builds a temporary
/// b-tree of the ids first (a page cache, pages, and their frees, at every
/// batch); the join does not, and without repeats it returns each job once.
fn distinct_ids(ids: impl Iterator<Item = JobId>) -> Result<String, serde_json::Error> {
    let mut ids: Vec<i64> = ids.map(JobId::get).collect();
    ids.sort_unstable();
    ids.dedup();
    serde_json::to_string(&ids)
}

/// Opens the batch's write transaction and, in the same round trip, reads
/// every job `requests` touch and every committed event that already used
/// one of their request ids (the join is served by the unique index on
/// (actor_id, request_id)). Each read returns one JSON value, not a row per
/// job: every row would be one more hand-off.
async fn begin_and_read(
    conn: &mut SqliteConnection,
    requests: &[Request],
) -> Result<(BatchJobs, Answered), StorageError> {
    let pairs: Vec<(&str, &str)> = requests
        .iter()
        .filter_map(|r| Some((r.caller.id(), r.request_id.as_ref()?.as_str())))
        .collect();
    let to_json = |what: &str, e: serde_json::Error| {
        StorageError::Internal(format!("cannot list the batch's {what}: {e}"))
    };
    let ids = distinct_ids(requests.iter().map(|r| r.job_id)).map_err(|e| to_json("job ids", e))?;
    let pairs = serde_json::to_string(&pairs).map_err(|e| to_json("request ids", e))?;
    let values: Vec<String> = sqlx::query_scalar(concat!(
        "BEGIN IMMEDIATE; ",
        "SELECT json_group_array(json_array(",
        job_columns!(),
        ")) FROM json_each(?) AS i JOIN jobs ON jobs.job_id = i.value; ",
        "SELECT json_group_array(json_array(e.actor_id, e.request_id, e.payload)) \
         FROM json_each(?) AS p JOIN job_events AS e \
           ON e.actor_id = json_extract(p.value, '$[0]') \
          AND e.request_id = json_extract(p.value, '$[1]')"
    ))
    .bind(ids)
    .bind(pairs)
    .fetch_all(&mut *conn)
    .await?;
    let [jobs, answered] = values.as_slice() else {
        return Err(StorageError::Internal(format!(
            "the batch's reads returned {} values, not 2",
            values.len()
        )));
    };
    let corrupt = |what: &str, e: serde_json::Error| {
        StorageError::Corrupt(format!("cannot decode the batch's {what}: {e}"))
    };
    let jobs = serde_json::from_str::<Vec<codec::JobArray>>(jobs)
        .map_err(|e| corrupt("jobs", e))?
        .into_iter()
        .map(|row| Job::try_from(JobRow::from(row)).map(|job| (job.id, job)))
        .collect::<Result<BatchJobs, _>>()?;
    let answered = serde_json::from_str::<Vec<(String, String, String)>>(answered)
        .map_err(|e| corrupt("answered request ids", e))?
        .into_iter()
        .map(|(actor_id, request_id, payload)| {
            Ok(((actor_id, request_id), codec::decode_event(&payload)?))
        })
        .collect::<Result<Answered, StorageError>>()?;
    Ok((jobs, answered))
}

/// SQLite's limit on bound parameters per statement
/// (`SQLITE_MAX_VARIABLE_NUMBER`, 32 766 by default since 3.32). A batch
/// larger than one statement can bind is written in chunks; at the default
/// `max_batch` of 256 every write is one statement.
const MAX_PARAMS: usize = 32_766;
/// Bound parameters per row of each write below.
const JOB_PARAMS: usize = 11;
const EVENT_PARAMS: usize = 8;

/// Writes the batch's changes in the order they were decided, in one
/// round trip: the job row after each change, then every event. Fails if
/// any row was not written, so the caller rolls the whole batch back.
async fn write_changes(conn: &mut SqliteConnection, changes: &[Event]) -> Result<(), StorageError> {
    if changes.is_empty() {
        return Ok(());
    }
    // A job changed twice in the batch gets two rows, in order, in the same
    // statement (SQLite applies a multi-row upsert row by row). Each row is
    // a compare-and-set on the revision (the WHERE), so a history can never
    // fork even if two writers ever raced: a row whose check fails changes
    // nothing, and the count of changed rows falls short.
    let mut sql = QueryBuilder::<Sqlite>::new("");
    for chunk in changes.chunks(MAX_PARAMS / JOB_PARAMS) {
        sql.push(concat!("INSERT INTO jobs (", job_columns!(), ") "));
        sql.push_values(chunk, |mut row, event| {
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
        sql.push(
            " ON CONFLICT (job_id) DO UPDATE SET \
               worker_id = excluded.worker_id, status = excluded.status, \
               payment_method = excluded.payment_method, payment_proof = excluded.payment_proof, \
               change_request_reason = excluded.change_request_reason, \
               cancel_reason = excluded.cancel_reason, revision = excluded.revision, \
               updated_at = excluded.updated_at \
             WHERE jobs.revision = excluded.revision - 1; ",
        );
    }
    let payloads = changes
        .iter()
        .map(codec::encode_event)
        .collect::<Result<Vec<_>, _>>()?;
    let rows: Vec<(&Event, String)> = changes.iter().zip(payloads).collect();
    for chunk in rows.chunks(MAX_PARAMS / EVENT_PARAMS) {
        sql.push(
            "INSERT INTO job_events \
             (job_id, revision, event, actor_id, actor_role, request_id, payload, created_at) ",
        );
        sql.push_values(chunk, |mut row, (event, payload)| {
            row.push_bind(event.job_id().get())
                .push_bind(event.revision())
                .push_bind(event.kind.as_str())
                .push_bind(event.actor_id.as_str())
                .push_bind(codec::role_str(event.actor_role))
                .push_bind(event.request_id.as_ref().map(|r| r.as_str()))
                .push_bind(payload.as_str())
                .push_bind(event.at());
        });
        sql.push("; ");
    }
    // Every statement changes at most one row per change; an event that
    // cannot be inserted is an error, not a shortfall. So the total falls
    // short exactly when some job row failed its revision check.
    let written = sql.build().execute(&mut *conn).await?.rows_affected();
    let expected = 2 * changes.len() as u64;
    if written != expected {
        return Err(StorageError::Internal(format!(
            "wrote {written} of {expected} rows: a job moved while the batch was being written"
        )));
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

    /// Looking jobs up by id answers each existing job once, whatever the
    /// repeats and unknown ids among the ids asked for.
    #[tokio::test]
    async fn jobs_by_ids_answers_each_job_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ids.db").display());
        let store = SqliteStore::connect(&url, &StoreOptions::default())
            .await
            .unwrap();
        store.execute(create()).await.unwrap();
        let id = |n| JobId::new(n).unwrap();
        let jobs = store.jobs_by_ids(&[id(7), id(8), id(7)]).await.unwrap();
        assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [id(7)]);
        assert!(store.jobs_by_ids(&[]).await.unwrap().is_empty());
        store.close().await;
    }

    /// A batch that fails part-way (here: its event's revision is already
    /// taken) stores nothing and leaves no transaction open, so the next
    /// batch commits normally.
    #[tokio::test]
    async fn a_failed_batch_rolls_back_and_the_next_one_commits() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = migrated(&dir).await;
        commit_batch(&mut conn, &[create()]).await.unwrap();
        sqlx::query(
            "INSERT INTO job_events \
             (job_id, revision, event, actor_id, actor_role, payload, created_at) \
             VALUES (7, 2, 'worker_marked_complete', 'bob', 'worker', '{}', \
                     '2026-01-01T00:00:00+00:00')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let mark = request(user("bob"), Command::MarkComplete, None);
        assert!(
            commit_batch(&mut conn, std::slice::from_ref(&mark))
                .await
                .is_err()
        );
        let revision: i64 = sqlx::query_scalar("SELECT revision FROM jobs WHERE job_id = 7")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(revision, 1, "the failed batch's job row must not be stored");

        sqlx::query("DELETE FROM job_events WHERE job_id = 7 AND revision = 2")
            .execute(&mut conn)
            .await
            .unwrap();
        let results = commit_batch(&mut conn, &[mark]).await.unwrap();
        assert_eq!(changed(&results[0]).revision(), 2);
        assert_eq!(stored_revisions(&mut conn).await, (2, vec![1, 2]));
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
