//! SQLite, the embedded default: one file, WAL, `synchronous=FULL`.
//!
//! SQLite's calls block, so SQLite runs on threads of its own and async
//! callers hand it work and await the answer: one hand-off each way per
//! operation, whatever it reads or writes. One writer thread owns the only
//! write connection and commits whatever changes are waiting in a single
//! transaction: one fsync acknowledges many changes, and none is
//! acknowledged before its commit is on disk. A few reader threads each own
//! a read-only connection for snapshots and replays, so reads never wait
//! for the writer. Every statement is prepared once per connection and
//! kept. The schema is migrated by sqlx at start-up, before these
//! connections open. Nothing here may hold a connection while events are
//! published, or run SQLite on a runtime thread.

use super::Condition;
use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection as _};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::batch::{
    Answered, BatchJobs, CommitBatch, Reply, WriteFailure, commit_and_answer, decide_all, hand_off,
    shutting_down, submit,
};
use super::codec::{self, JobRow, job_columns};
use super::readers::{Readers, Refused};
use super::recent::RecentJobs;
use super::{Committed, Outcome, StorageError, StoreOptions};
use crate::domain::{Event, Job, JobId, Request};
use crate::rfc3339::{Offset, Rfc3339};
use crate::telemetry::metrics as m;

/// The size of the health probe's write while writes fail: about what a
/// batch of a hundred changes writes.
const PROBE_BYTES: i64 = 64 * 1024;

/// How many changes may wait for the writer before callers wait too.
const WRITE_QUEUE: usize = 4096;

/// How many reads may wait for a reader thread; one more is refused
/// UNAVAILABLE at once.
const READ_QUEUE: usize = 4096;

const SELECT_JOB: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE job_id = ?1");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    reads: Readers<Connection>,
    /// Jobs' newest committed states, kept by the writer.
    recent: Arc<RecentJobs>,
    writes: mpsc::Sender<WriteOp>,
    /// How long an operation may wait for its answer (`--db-timeout-ms`).
    timeout: Duration,
    /// Set while writes fail for a condition that blocks them.
    failure: Arc<WriteFailure>,
    /// Cancelled by `close`: the writer stops taking new changes, commits
    /// what is queued and exits.
    closing: CancellationToken,
    /// Cancelled by the writer thread as it ends, however it ends.
    writer_done: CancellationToken,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("timeout", &self.timeout)
            .field("closing", &self.closing.is_cancelled())
            .finish_non_exhaustive()
    }
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
    pub async fn connect(
        url: &str,
        options: &StoreOptions,
        committed: Arc<dyn Committed>,
    ) -> Result<Self, StorageError> {
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
        let path = connect.get_filename().to_owned();

        let mut migrator = connect.connect().await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut migrator)
            .await
            .map_err(|e| StorageError::Internal(format!("migrations failed: {e}")))?;
        migrator.close().await?;

        let readers = options.read_connections.max(1);
        let busy_timeout = options.busy_timeout;
        let (writer_conn, reader_conns, runtime) = tokio::task::spawn_blocking(move || {
            let writer = open(&path, Access::Write, busy_timeout)?;
            let readers = (0..readers)
                .map(|_| open(&path, Access::Read, busy_timeout))
                .collect::<Result<Vec<_>, _>>()?;
            // The writer thread's own runtime: it waits for the queue and
            // answers callers, and runs nothing else.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| StorageError::Internal(format!("cannot start the writer: {e}")))?;
            Ok::<_, StorageError>((writer, readers, runtime))
        })
        .await
        .map_err(|e| StorageError::Internal(format!("opening SQLite failed: {e}")))??;

        let reads = Readers::start("sqlite-read", reader_conns, READ_QUEUE)
            .map_err(|e| StorageError::Internal(format!("cannot start SQLite's readers: {e}")))?;

        let (writes, rx) = mpsc::channel(WRITE_QUEUE);
        let closing = CancellationToken::new();
        let writer_done = CancellationToken::new();
        let failure = Arc::new(WriteFailure::default());
        let recent = Arc::new(RecentJobs::new(options.job_cache));
        let writer = run_writer(
            Writer {
                conn: writer_conn,
                recent: recent.clone(),
            },
            rx,
            options.max_batch.max(1),
            failure.clone(),
            committed,
            closing.clone(),
        );
        let done = writer_done.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let _done = done.drop_guard();
                runtime.block_on(writer);
            })
            .map_err(|e| StorageError::Internal(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                reads,
                recent,
                writes,
                timeout: options.busy_timeout,
                failure,
                closing,
                writer_done,
            }),
        })
    }

    pub async fn execute(&self, request: Request) -> Result<Outcome, StorageError> {
        submit(&self.inner.writes, self.inner.timeout, |reply| {
            WriteOp::Execute { request, reply }
        })
        .await
    }

    /// Runs `read` on a reader thread and returns its answer, waiting
    /// `--db-timeout-ms` at most in all.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        hand_off(self.inner.timeout, "SQLite's readers", |reply| {
            let queued = self
                .inner
                .reads
                .submit(Box::new(move |conn| {
                    // A caller that went away is not told.
                    let _ = reply.send(read(conn));
                }))
                .map_err(|refused| match refused {
                    Refused::Closed => shutting_down(),
                    Refused::Full => StorageError::Unavailable(
                        Condition::TimedOut,
                        format!("{READ_QUEUE} reads already wait for SQLite's readers"),
                    ),
                });
            std::future::ready(queued)
        })
        .await
    }

    /// The job as last committed: from memory if the writer or an earlier
    /// read left it there, else read from the file (and kept, if nothing
    /// was committed meanwhile).
    pub async fn get_job(&self, id: JobId) -> Result<Option<Job>, StorageError> {
        if self.inner.closing.is_cancelled() {
            // Closed is closed, whatever memory still holds.
            return Err(shutting_down());
        }
        let recent = &self.inner.recent;
        if let Some(job) = recent.get(id) {
            static HITS: m::Kept<metrics::Counter> = m::Kept::new();
            HITS.increment(1, || metrics::counter!(m::JOB_CACHE_HITS));
            return Ok(Some(job));
        }
        static MISSES: m::Kept<metrics::Counter> = m::Kept::new();
        MISSES.increment(1, || metrics::counter!(m::JOB_CACHE_MISSES));
        let since = recent.epoch();
        let job = self.read(move |conn| get_job(conn, id)).await?;
        if let Some(job) = &job {
            recent.fill(since, job);
        }
        Ok(job)
    }

    pub async fn events_after(
        &self,
        id: JobId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StorageError> {
        self.read(move |conn| {
            let mut query = conn.prepare_cached(
                "SELECT payload FROM job_events WHERE job_id = ?1 AND revision > ?2 \
                 ORDER BY revision LIMIT ?3",
            )?;
            let mut rows = query.query(params![id.get(), after, i64::from(limit)])?;
            let mut events = Vec::new();
            while let Some(row) = rows.next()? {
                events.push(codec::decode_event(text(row, 0)?)?);
            }
            Ok(events)
        })
        .await
    }

    pub async fn jobs_by_ids(&self, ids: &[JobId]) -> Result<Vec<Job>, StorageError> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        self.read(move |conn| {
            let mut jobs = Vec::with_capacity(ids.len());
            for id in ids {
                jobs.extend(get_job(conn, id)?);
            }
            Ok(jobs)
        })
        .await
    }

    /// Jobs where `user` is the client or the assigned worker: unfinished
    /// first, then most recently updated.
    pub async fn jobs_of_user(&self, user: &str, limit: u32) -> Result<Vec<Job>, StorageError> {
        let user = user.to_owned();
        self.read(move |conn| {
            let mut query = conn.prepare_cached(concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE client_id = ?1 OR worker_id = ?1 \
                 ORDER BY (status IN ('completed', 'cancelled')), updated_at DESC, job_id \
                 LIMIT ?2"
            ))?;
            let mut rows = query.query(params![user, i64::from(limit)])?;
            let mut jobs = Vec::new();
            while let Some(row) = rows.next()? {
                jobs.push(read_job(row)?);
            }
            Ok(jobs)
        })
        .await
    }

    /// The condition writes are failing for now, if any (health checking).
    pub fn write_failure(&self) -> Option<Condition> {
        self.inner.failure.get()
    }

    /// Checks both paths: a read, and that the writer can take the lock.
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?;
            Ok(())
        })
        .await?;
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
        self.inner.writer_done.cancelled().await;
        // The reader threads finish what is queued, then end.
        self.inner.reads.close();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// Opens one of the store's connections to the migrated file.
fn open(path: &Path, access: Access, busy_timeout: Duration) -> Result<Connection, StorageError> {
    let flags = match access {
        Access::Read => OpenFlags::SQLITE_OPEN_READ_ONLY,
        Access::Write => OpenFlags::SQLITE_OPEN_READ_WRITE,
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    // WAL is the file's (set when it was migrated); the rest is each
    // connection's own.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

impl From<rusqlite::Error> for StorageError {
    fn from(err: rusqlite::Error) -> Self {
        match &err {
            rusqlite::Error::SqliteFailure(failure, message) => {
                match Condition::of_code(&failure.extended_code.to_string()) {
                    Some(condition) => StorageError::Unavailable(
                        condition,
                        message.clone().unwrap_or_else(|| failure.to_string()),
                    ),
                    None => StorageError::Internal(err.to_string()),
                }
            }
            _ => StorageError::Internal(err.to_string()),
        }
    }
}

/// Timestamps as sqlx writes them to SQLite (RFC 3339, `+00:00`), so a
/// database written by either reads the same and `updated_at` sorts as text.
fn encode_time(at: DateTime<Utc>) -> Rfc3339 {
    Rfc3339::new(at, Offset::Colon)
}

fn text<'r>(row: &'r rusqlite::Row<'_>, column: usize) -> Result<&'r str, StorageError> {
    row.get_ref(column)?
        .as_str()
        .map_err(|e| StorageError::Corrupt(format!("column {column}: {e}")))
}

fn read_job(row: &rusqlite::Row<'_>) -> Result<Job, StorageError> {
    let time = |column: usize| {
        let stored = text(row, column)?;
        DateTime::parse_from_rfc3339(stored)
            .map(|at| at.with_timezone(&Utc))
            .map_err(|e| StorageError::Corrupt(format!("timestamp {stored:?}: {e}")))
    };
    Job::try_from(JobRow {
        job_id: row.get(0)?,
        client_id: row.get(1)?,
        worker_id: row.get(2)?,
        status: row.get(3)?,
        payment_method: row.get(4)?,
        payment_proof: row.get(5)?,
        change_request_reason: row.get(6)?,
        cancel_reason: row.get(7)?,
        revision: row.get(8)?,
        created_at: time(9)?,
        updated_at: time(10)?,
    })
}

fn get_job(conn: &Connection, id: JobId) -> Result<Option<Job>, StorageError> {
    let mut query = conn.prepare_cached(SELECT_JOB)?;
    let mut rows = query.query([id.get()])?;
    rows.next()?.map(read_job).transpose()
}

/// The writer thread's one connection, and the jobs in memory it keeps
/// current.
struct Writer {
    conn: Connection,
    recent: Arc<RecentJobs>,
}

/// The writer: commits queued changes in batches until closed, then drains
/// the queue. It runs on the writer thread's own runtime, where blocking
/// in SQLite holds up nothing but the writer.
async fn run_writer(
    mut writer: Writer,
    mut rx: mpsc::Receiver<WriteOp>,
    max_batch: usize,
    failure: Arc<WriteFailure>,
    committed: Arc<dyn Committed>,
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
                    let _ = reply.send(ping_writer(&mut writer.conn, &failure));
                }
            }
        }
        if requests.is_empty() {
            continue;
        }
        commit_and_answer(&failure, &*committed, &mut writer, &requests, replies).await;
    }
    // A clean stop leaves the database whole in its one file: merge the WAL
    // back, so that copying jobstatus.db alone after exit 0 copies
    // everything (closing the last connection would too, but only if no
    // reader is still open at that moment).
    if let Err(err) = writer.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %err, "merging the WAL into the database file failed");
    }
    if let Err((_, err)) = writer.conn.close() {
        tracing::warn!(error = %err, "closing the SQLite writer connection failed");
    }
}

/// Takes and releases the write lock, failing like a write would. While
/// writes fail for a condition that blocks them (a full disk), it commits a
/// real write of a large batch's size instead ([`PROBE_BYTES`] into the
/// `health_probe` row), so a recovery shows even when no client writes, and
/// a disk with room for a tiny write but not for real ones stays reported.
fn ping_writer(conn: &mut Connection, failure: &WriteFailure) -> Result<(), StorageError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if failure.get().is_none() {
        tx.rollback()?;
        return Ok(());
    }
    // A failed COMMIT (a full disk) leaves the transaction open: dropping
    // `tx` then rolls it back.
    let probed = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO health_probe (id, payload) VALUES (1, zeroblob(?1))",
        )
        .and_then(|mut probe| probe.execute([PROBE_BYTES]))
        .and_then(|_| tx.commit());
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

impl CommitBatch for Writer {
    fn commit(
        &mut self,
        requests: &[Request],
    ) -> impl Future<Output = Result<Vec<Result<Outcome, StorageError>>, StorageError>> + Send {
        // Memory is told before anyone is answered, so that no watch opened
        // after an answer starts from an older state.
        let committed = match commit_jobs(&mut self.conn, Some(&self.recent), requests) {
            Ok((results, jobs)) => {
                self.recent.committed(jobs.values());
                Ok(results)
            }
            Err(err) => {
                // A failed COMMIT may still have reached the disk.
                self.recent.forget(requests.iter().map(|r| r.job_id));
                Err(err)
            }
        };
        std::future::ready(committed)
    }
}

/// Decides and writes every request in one transaction. A refused request
/// gets its own error; a database error fails the whole batch, which then
/// wrote nothing (the transaction rolls back as it is dropped). Returns
/// every request's result and the batch's jobs as committed.
fn commit_jobs(
    conn: &mut Connection,
    recent: Option<&RecentJobs>,
    requests: &[Request],
) -> Result<(Vec<Result<Outcome, StorageError>>, BatchJobs), StorageError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(recent) = recent {
        // Changes only when another connection (another process, which
        // nothing should be) committed: then memory may be behind the file.
        let version = tx
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |row| row.get(0))?;
        recent.file_version(version);
    }
    let (mut jobs, mut answered) = read_batch(&tx, recent, requests)?;
    let (results, changes) = decide_all(&mut jobs, &mut answered, requests);
    write_changes(&tx, &changes)?;
    tx.commit()?;
    Ok((results, jobs))
}

/// Reads, inside the batch's transaction, every job `requests` touch and
/// every committed event that already used one of their request ids (the
/// unique index on (actor_id, request_id) serves it).
///
/// With `recent`, a job this writer committed or a reader read lately comes
/// from memory: under the write lock it is the file's newest state (see
/// [`RecentJobs`]), and deciding from it is deciding from the file.
fn read_batch(
    conn: &Connection,
    recent: Option<&RecentJobs>,
    requests: &[Request],
) -> Result<(BatchJobs, Answered), StorageError> {
    let mut jobs = BatchJobs::with_capacity(requests.len());
    let mut answered = Answered::new();
    let mut by_request_id = conn
        .prepare_cached("SELECT payload FROM job_events WHERE actor_id = ?1 AND request_id = ?2")?;
    for request in requests {
        if !jobs.contains_key(&request.job_id)
            && let Some(job) = match recent.and_then(|recent| recent.get(request.job_id)) {
                Some(job) => Some(job),
                None => get_job(conn, request.job_id)?,
            }
        {
            jobs.insert(job.id, job);
        }
        if let Some(request_id) = &request.request_id {
            let actor = request.caller.id();
            let mut rows = by_request_id.query(params![actor, request_id.as_str()])?;
            if let Some(row) = rows.next()? {
                let event = codec::decode_event(text(row, 0)?)?;
                answered.insert((actor.to_owned(), request_id.as_str().to_owned()), event);
            }
        }
    }
    Ok((jobs, answered))
}

/// Writes the batch's changes in the order they were decided: the job row
/// after each change, then its event. Fails if any row was not written, so
/// the caller rolls the whole batch back.
fn write_changes(conn: &Connection, changes: &[Arc<Event>]) -> Result<(), StorageError> {
    // A new job's row is inserted (a taken id fails); a changed job's row
    // is a compare-and-set on the revision (the WHERE), so a history can
    // never fork even if two writers ever raced: a row whose check fails
    // changes nothing, and fails the batch. Two statements rather than one
    // upsert: an upsert checks the row's constraints twice, once as an
    // insert and once as an update.
    let mut new_row = conn.prepare_cached(concat!(
        "INSERT INTO jobs (",
        job_columns!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))?;
    let mut changed_row = conn.prepare_cached(
        "UPDATE jobs SET \
           worker_id = ?3, status = ?4, payment_method = ?5, payment_proof = ?6, \
           change_request_reason = ?7, cancel_reason = ?8, revision = ?9, updated_at = ?11 \
         WHERE job_id = ?1 AND revision = ?9 - 1",
    )?;
    let mut event_row = conn.prepare_cached(
        "INSERT INTO job_events \
         (job_id, revision, event, actor_id, actor_role, request_id, payload, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for event in changes {
        let job = &event.job;
        // The event's time is the job's `updated_at`: written once, bound twice.
        let updated_at = encode_time(job.updated_at);
        let job_row = if job.revision == 1 {
            &mut new_row
        } else {
            &mut changed_row
        };
        let written = job_row.execute(params![
            job.id.get(),
            job.client_id.as_str(),
            job.worker_id.as_ref().map(|w| w.as_str()),
            job.status.as_str(),
            job.payment_method.map(|m| m.as_str()),
            job.payment_proof.as_ref().map(|p| p.as_str()),
            job.change_request_reason.as_ref().map(|r| r.as_str()),
            job.cancel_reason.as_ref().map(|r| r.as_str()),
            job.revision,
            encode_time(job.created_at).as_str(),
            updated_at.as_str(),
        ])?;
        if written != 1 {
            return Err(StorageError::Internal(format!(
                "job {} moved while the batch was being written: revision {} is not the next",
                job.id, job.revision
            )));
        }
        event_row.execute(params![
            event.job_id().get(),
            event.revision(),
            event.kind.as_str(),
            event.actor_id.as_str(),
            codec::role_str(event.actor_role),
            event.request_id.as_ref().map(|r| r.as_str()),
            codec::encode_event(event)?,
            updated_at.as_str(),
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Caller, Command, PaymentMethod, RequestId, ServiceId, UserId};
    use crate::storage::Told;

    fn commit_batch(
        conn: &mut Connection,
        requests: &[Request],
    ) -> Result<Vec<Result<Outcome, StorageError>>, StorageError> {
        commit_jobs(conn, None, requests).map(|(results, _)| results)
    }

    /// A migrated file and the writer's kind of connection to it.
    async fn migrated(dir: &tempfile::TempDir) -> Connection {
        let path = dir.path().join("batch.db");
        let url = format!("sqlite://{}", path.display());
        SqliteStore::connect(&url, &StoreOptions::default(), Arc::new(Told::default()))
            .await
            .unwrap()
            .close()
            .await;
        open(&path, Access::Write, Duration::from_secs(1)).unwrap()
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
            Ok(Outcome::Changed(event)) => Event::clone(event),
            other => panic!("expected a change, got {other:?}"),
        }
    }

    fn stored_revisions(conn: &Connection) -> (i64, Vec<i64>) {
        let job: i64 = conn
            .query_row("SELECT revision FROM jobs WHERE job_id = 7", [], |r| {
                r.get(0)
            })
            .unwrap();
        let mut events = conn
            .prepare("SELECT revision FROM job_events WHERE job_id = 7 ORDER BY revision")
            .unwrap();
        let events = events
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<Vec<i64>, _>>()
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
        let created = commit_batch(&mut conn, &[create()]).unwrap();
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
        let results = commit_batch(&mut conn, &batch).unwrap();

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
        assert_eq!(stored_revisions(&conn), (3, vec![1, 2, 3]));

        // In a later batch the retry is answered from the log.
        let results = commit_batch(&mut conn, &[mark]).unwrap();
        match &results[0] {
            Ok(Outcome::Replayed(event)) => assert_eq!(event, &marked),
            other => panic!("expected the stored change replayed, got {other:?}"),
        }
        assert_eq!(stored_revisions(&conn), (3, vec![1, 2, 3]));
    }

    /// What the store writes, it reads back equal, through every read.
    #[tokio::test]
    async fn reads_return_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("reads.db").display());
        let store = SqliteStore::connect(&url, &StoreOptions::default(), Arc::new(Told::default()))
            .await
            .unwrap();
        let created = changed(&store.execute(create()).await);
        let marked = changed(
            &store
                .execute(request(user("bob"), Command::MarkComplete, Some("m")))
                .await,
        );
        let id = JobId::new(7).unwrap();
        assert_eq!(store.get_job(id).await.unwrap(), Some(marked.job.clone()));
        assert_eq!(store.get_job(JobId::new(8).unwrap()).await.unwrap(), None);
        assert_eq!(
            store.events_after(id, 0, 10).await.unwrap(),
            [created.clone(), marked.clone()]
        );
        assert_eq!(
            store.events_after(id, 1, 10).await.unwrap(),
            std::slice::from_ref(&marked)
        );
        assert_eq!(store.events_after(id, 0, 1).await.unwrap(), [created]);
        assert_eq!(
            store.jobs_of_user("alice", 10).await.unwrap(),
            std::slice::from_ref(&marked.job)
        );
        assert!(store.jobs_of_user("carol", 10).await.unwrap().is_empty());
        store.ping().await.unwrap();
        store.close().await;
        // After close, reads and writes are refused as shutting down.
        for err in [
            store.get_job(id).await.unwrap_err(),
            store.execute(create()).await.unwrap_err(),
        ] {
            assert!(
                matches!(err, StorageError::Unavailable(Condition::ShuttingDown, _)),
                "{err:?}"
            );
        }
    }

    /// With every reader busy (`--sqlite-readers 1` here), a read waits
    /// for one, and fails UNAVAILABLE (timed out) once `--db-timeout-ms`
    /// has passed; once the reader is free it serves the next read.
    #[tokio::test]
    async fn reads_wait_for_a_free_reader_within_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("readers.db").display());
        let options = StoreOptions {
            read_connections: 1,
            busy_timeout: Duration::from_millis(300),
            ..StoreOptions::default()
        };
        let store = SqliteStore::connect(&url, &options, Arc::new(Told::default()))
            .await
            .unwrap();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel();
        let holder = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .read(move |_| {
                        started.send(()).unwrap();
                        let _ = held.recv();
                        Ok(())
                    })
                    .await
            })
        };
        running.await.unwrap();
        let id = JobId::new(7).unwrap();
        let err = store.get_job(id).await.unwrap_err();
        assert!(
            matches!(err, StorageError::Unavailable(Condition::TimedOut, _)),
            "{err:?}"
        );
        drop(release);
        // Its caller gave up too (the same timeout); the reader is free
        // again once the read ends.
        let _ = holder.await.unwrap();
        assert_eq!(store.get_job(id).await.unwrap(), None);
        store.close().await;
    }

    /// Looking jobs up by id answers each existing job once, whatever the
    /// repeats and unknown ids among the ids asked for.
    #[tokio::test]
    async fn jobs_by_ids_answers_each_job_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ids.db").display());
        let store = SqliteStore::connect(&url, &StoreOptions::default(), Arc::new(Told::default()))
            .await
            .unwrap();
        store.execute(create()).await.unwrap();
        let id = |n| JobId::new(n).unwrap();
        let jobs = store.jobs_by_ids(&[id(7), id(8), id(7)]).await.unwrap();
        assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [id(7)]);
        assert!(store.jobs_by_ids(&[]).await.unwrap().is_empty());
        store.close().await;
    }

    /// Stores job 7's revision 2 event behind the writer's back, so that
    /// the next change of job 7 fails its batch.
    fn take_revision_2(conn: &Connection) {
        conn.execute_batch(
            "INSERT INTO job_events \
             (job_id, revision, event, actor_id, actor_role, payload, created_at) \
             VALUES (7, 2, 'worker_marked_complete', 'bob', 'worker', '{}', \
                     '2026-01-01T00:00:00+00:00')",
        )
        .unwrap();
    }

    /// A writer on a migrated file that remembers 16 jobs, with job 7
    /// created.
    async fn writer_with_job(dir: &tempfile::TempDir) -> (Writer, Arc<RecentJobs>) {
        let recent = Arc::new(RecentJobs::new(16));
        let mut writer = Writer {
            conn: migrated(dir).await,
            recent: recent.clone(),
        };
        writer.commit(&[create()]).await.unwrap();
        (writer, recent)
    }

    /// The writer tells of every change it commits, in order, and only of
    /// changes: also of one whose caller went away before it was committed
    /// (its change stands, so its watchers must hear of it), and never of
    /// a refused command.
    #[tokio::test]
    async fn the_writer_tells_of_each_committed_change_whoever_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("told.db");
        let url = format!("sqlite://{}", path.display());
        let told = Arc::new(Told::default());
        let store = SqliteStore::connect(&url, &StoreOptions::default(), told.clone())
            .await
            .unwrap();
        changed(&store.execute(create()).await);
        assert!(
            store
                .execute(request(user("carol"), Command::MarkComplete, None))
                .await
                .is_err()
        );

        // Another connection holds the write lock, so the next change waits
        // in the writer while its caller goes away.
        let locker = open(&path, Access::Write, Duration::from_secs(1)).unwrap();
        locker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let caller = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .execute(request(user("bob"), Command::MarkComplete, None))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        locker.execute_batch("COMMIT").unwrap();

        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while told.events().len() < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let revisions: Vec<_> = told.events().iter().map(|e| e.revision()).collect();
        assert_eq!(
            revisions,
            [1, 2],
            "each committed change told once, in order"
        );
        let job = store
            .get_job(JobId::new(7).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(job.revision, 2, "the abandoned change was committed");
        store.close().await;
    }

    /// Memory holds what the writer committed, and a failed batch's jobs
    /// leave it (a failed COMMIT may still have reached the disk).
    #[tokio::test]
    async fn the_writer_keeps_memory_to_what_it_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut writer, recent) = writer_with_job(&dir).await;
        let id = JobId::new(7).unwrap();
        assert_eq!(recent.get(id).map(|j| j.revision), Some(1));
        // Revision 2 already taken: the batch fails.
        take_revision_2(&writer.conn);
        let mark = request(user("bob"), Command::MarkComplete, None);
        assert!(writer.commit(std::slice::from_ref(&mark)).await.is_err());
        assert!(
            recent.get(id).is_none(),
            "a failed batch's job must be read again"
        );
        writer
            .conn
            .execute_batch("DELETE FROM job_events WHERE job_id = 7 AND revision = 2")
            .unwrap();
        writer.commit(&[mark]).await.unwrap();
        assert_eq!(recent.get(id).map(|j| j.revision), Some(2));
    }

    /// The writer decides from what it remembers, which is the file's
    /// newest state as long as it alone writes the file. If another
    /// connection commits (another process on the same file, which nobody
    /// should run), the file's data version moves and the writer drops
    /// what it remembers before it decides.
    #[tokio::test]
    async fn the_writer_decides_from_the_file_after_another_connection_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let (mut writer, recent) = writer_with_job(&dir).await;
        let id = JobId::new(7).unwrap();
        let mark = request(user("bob"), Command::MarkComplete, None);
        writer.commit(&[mark]).await.unwrap();
        assert_eq!(recent.get(id).map(|j| j.revision), Some(2));

        // Another writer approves the job: revision 3, no longer awaiting
        // approval, which the writer's memory does not know.
        let mut other = open(
            &dir.path().join("batch.db"),
            Access::Write,
            Duration::from_secs(1),
        )
        .unwrap();
        let approve = request(
            user("alice"),
            Command::ApproveCompletion {
                method: PaymentMethod::Cash,
            },
            None,
        );
        let approved = commit_jobs(&mut other, None, &[approve]).unwrap().0;
        assert_eq!(changed(&approved[0]).revision(), 3);

        // Asking for changes now must be refused against revision 3, not
        // decided against the remembered revision 2.
        let changes = request(
            user("alice"),
            Command::RequestChanges {
                reason: crate::domain::Reason::parse("reason", "more").unwrap(),
            },
            None,
        );
        let results = writer
            .commit(&[changes])
            .await
            .expect("decided against a job older than the file");
        assert!(
            matches!(results[0], Err(StorageError::Rejected(_))),
            "{:?}",
            results[0]
        );
        assert_eq!(stored_revisions(&writer.conn), (3, vec![1, 2, 3]));
        assert_eq!(recent.get(id).map(|j| j.revision), Some(3));
    }

    /// A job the store wrote is answered from memory (shown here by
    /// editing the file behind its back, which nobody else may do); with
    /// `--sqlite-job-cache 0` every read reads the file.
    #[tokio::test]
    async fn recent_jobs_are_answered_from_memory_unless_turned_off() {
        for (job_cache, from_memory) in [(64, true), (0, false)] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("cache.db");
            let url = format!("sqlite://{}", path.display());
            let options = StoreOptions {
                job_cache,
                ..StoreOptions::default()
            };
            let store = SqliteStore::connect(&url, &options, Arc::new(Told::default()))
                .await
                .unwrap();
            store.execute(create()).await.unwrap();
            open(&path, Access::Write, Duration::from_secs(1))
                .unwrap()
                .execute_batch("UPDATE jobs SET cancel_reason = 'edited' WHERE job_id = 7")
                .unwrap();
            let job = store
                .get_job(JobId::new(7).unwrap())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                job.cancel_reason.is_none(),
                from_memory,
                "cache {job_cache}"
            );
            store.close().await;
        }
    }

    /// A batch that fails part-way (here: its event's revision is already
    /// taken) stores nothing and leaves no transaction open, so the next
    /// batch commits normally.
    #[tokio::test]
    async fn a_failed_batch_rolls_back_and_the_next_one_commits() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = migrated(&dir).await;
        commit_batch(&mut conn, &[create()]).unwrap();
        take_revision_2(&conn);
        let mark = request(user("bob"), Command::MarkComplete, None);
        assert!(commit_batch(&mut conn, std::slice::from_ref(&mark)).is_err());
        assert!(conn.is_autocommit(), "no transaction may stay open");
        let revision: i64 = conn
            .query_row("SELECT revision FROM jobs WHERE job_id = 7", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(revision, 1, "the failed batch's job row must not be stored");

        conn.execute_batch("DELETE FROM job_events WHERE job_id = 7 AND revision = 2")
            .unwrap();
        let results = commit_batch(&mut conn, &[mark]).unwrap();
        assert_eq!(changed(&results[0]).revision(), 2);
        assert_eq!(stored_revisions(&conn), (2, vec![1, 2]));
    }

    /// A change whose revision check fails fails the whole write, so the
    /// batch's transaction rolls back and nothing of it is stored.
    #[tokio::test]
    async fn a_failed_revision_check_fails_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = migrated(&dir).await;
        let created = commit_batch(&mut conn, &[create()]).unwrap();
        let results = commit_batch(
            &mut conn,
            &[request(user("bob"), Command::MarkComplete, None)],
        )
        .unwrap();
        let stale = changed(&results[0]);

        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let fresh = changed(&created[0]);
        let err = write_changes(&tx, &[Arc::new(fresh), Arc::new(stale)]).unwrap_err();
        assert!(matches!(err, StorageError::Internal(_)), "{err:?}");
        tx.rollback().unwrap();
        assert_eq!(stored_revisions(&conn), (2, vec![1, 2]));
    }

    /// Timestamps are stored as sqlx stores them, so files written before
    /// and after read alike and `updated_at` sorts as text.
    #[test]
    fn timestamps_are_stored_as_sqlx_stores_them() {
        let at = DateTime::parse_from_rfc3339("2026-03-04T05:06:07.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(encode_time(at).as_str(), "2026-03-04T05:06:07.123456+00:00");
        let whole = DateTime::parse_from_rfc3339("2026-03-04T05:06:07Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(encode_time(whole).as_str(), "2026-03-04T05:06:07+00:00");
    }

    /// SQLite is compiled as `.cargo/config.toml` asks: without memory
    /// management's one page cache for all connections and without memory
    /// statistics, each of which takes a process-wide mutex on every page
    /// fetch or allocation (about a tenth of a change's CPU, BENCHMARKS.md).
    #[test]
    fn sqlite_is_built_without_process_wide_locks() {
        let conn = Connection::open_in_memory().unwrap();
        let mut query = conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = query
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
    }

    /// A file migrated before the allowed-values CHECKs were rewritten
    /// (migrations 1 and 2, then a job changed through the writer) keeps
    /// its job, its events and its indexes through the upgrade, and its
    /// constraints still refuse what they refused.
    #[tokio::test]
    async fn an_earlier_file_keeps_its_jobs_and_constraints_through_the_rewritten_checks() {
        use sqlx::ConnectOptions as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("earlier.db");
        let url = format!("sqlite://{}", path.display());
        let mut old = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .connect()
            .await
            .unwrap();
        let mut earlier = sqlx::migrate!("./migrations/sqlite");
        earlier.migrations = earlier
            .migrations
            .iter()
            .filter(|m| m.version < 3)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        earlier.run(&mut old).await.unwrap();
        old.close().await.unwrap();
        let mut conn = open(&path, Access::Write, Duration::from_secs(1)).unwrap();
        commit_batch(&mut conn, &[create()]).unwrap();
        let mark = request(user("bob"), Command::MarkComplete, Some("mark-1"));
        let marked = changed(&commit_batch(&mut conn, &[mark]).unwrap()[0]);
        drop(conn);

        let store = SqliteStore::connect(&url, &StoreOptions::default(), Arc::new(Told::default()))
            .await
            .unwrap();
        let job = store
            .get_job(JobId::new(7).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(job, marked.job);
        let events = store
            .events_after(JobId::new(7).unwrap(), 0, 10)
            .await
            .unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1], marked);
        store.close().await;

        let conn = open(&path, Access::Write, Duration::from_secs(1)).unwrap();
        let mut schema = conn
            .prepare("SELECT name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        let schema = schema
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let names: Vec<&str> = schema.iter().map(|(name, _)| name.as_str()).collect();
        for name in [
            "job_events",
            "job_events_by_request",
            "jobs",
            "jobs_by_client",
            "jobs_by_worker",
        ] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        for (name, sql) in &schema {
            assert!(!sql.contains(" IN ("), "{name}: {sql}");
        }
        let refused = [
            "UPDATE jobs SET status = 'done' WHERE job_id = 7",
            "UPDATE jobs SET payment_method = 'BTC' WHERE job_id = 7",
            "INSERT INTO job_events (job_id, revision, event, actor_id, actor_role, payload, created_at) \
             VALUES (7, 3, 'job_lost', 'bob', 'worker', '{}', 'now')",
            "INSERT INTO job_events (job_id, revision, event, actor_id, actor_role, payload, created_at) \
             VALUES (7, 3, 'payment_confirmed', 'bob', 'robot', '{}', 'now')",
            // Foreign keys hold on the rebuilt tables.
            "INSERT INTO job_events (job_id, revision, event, actor_id, actor_role, payload, created_at) \
             VALUES (8, 1, 'job_created', 'svc', 'service', '{}', 'now')",
        ];
        for sql in refused {
            assert!(conn.execute(sql, []).is_err(), "accepted: {sql}");
        }
        assert_eq!(
            conn.execute(
                "UPDATE jobs SET payment_method = 'CASH' WHERE job_id = 7",
                []
            )
            .unwrap(),
            1
        );
    }

    /// The rewritten CHECKs accept and refuse exactly what the IN lists
    /// did, value by value, NULL and near misses included.
    #[test]
    fn the_rewritten_checks_accept_what_the_in_lists_accepted() {
        let first = include_str!("../../migrations/sqlite/0001_jobs_and_events.sql");
        let rewrite = include_str!("../../migrations/sqlite/0003_checks_compare_in_place.sql");
        let before = Connection::open_in_memory().unwrap();
        before.execute_batch(first).unwrap();
        let after = Connection::open_in_memory().unwrap();
        after.execute_batch(first).unwrap();
        after.execute_batch(rewrite).unwrap();
        // The events' job, so that only their CHECKs can refuse them.
        for conn in [&before, &after] {
            conn.execute(
                "INSERT INTO jobs (job_id, client_id, status, revision, created_at, updated_at) \
                 VALUES (9999, 'c', 'open', 1, 't', 't')",
                [],
            )
            .unwrap();
        }

        let statuses = [
            "open",
            "in_progress",
            "awaiting_client_approval",
            "awaiting_payment",
            "completed",
            "cancelled",
        ];
        let events = [
            "job_created",
            "worker_assigned",
            "worker_marked_complete",
            "client_requested_changes",
            "client_approved_completion",
            "payment_proof_submitted",
            "payment_confirmed",
            "job_cancelled",
        ];
        let roles = ["client", "worker", "service"];
        let methods = ["GCASH", "CASH"];
        let near_misses = [
            "",
            "OPEN",
            "Cash",
            "open ",
            "client_approved",
            "GCASH\0",
            "worker,client",
        ];
        let mut candidates: Vec<Option<String>> = vec![None];
        for value in statuses
            .iter()
            .chain(&events)
            .chain(&roles)
            .chain(&methods)
            .chain(&near_misses)
        {
            candidates.push(Some((*value).to_owned()));
        }
        let columns = [
            (
                "status",
                "INSERT INTO jobs (job_id, client_id, status, revision, created_at, updated_at) \
                        VALUES (?1, 'c', ?2, 1, 't', 't')",
            ),
            (
                "payment_method",
                "INSERT INTO jobs (job_id, client_id, status, payment_method, revision, created_at, updated_at) \
                        VALUES (?1, 'c', 'open', ?2, 1, 't', 't')",
            ),
            (
                "event",
                "INSERT INTO job_events (job_id, revision, event, actor_id, actor_role, payload, created_at) \
                        VALUES (9999, ?1, ?2, 'a', 'client', '{}', 't')",
            ),
            (
                "actor_role",
                "INSERT INTO job_events (job_id, revision, event, actor_id, actor_role, payload, created_at) \
                        VALUES (9999, ?1, 'job_created', 'a', ?2, '{}', 't')",
            ),
        ];
        let mut accepted = 0;
        for (c, (column, sql)) in columns.into_iter().enumerate() {
            for (i, value) in candidates.iter().enumerate() {
                // A key of its own for each row, so that only the CHECK
                // under test can refuse it.
                let key = i64::try_from(c * 1000 + i).unwrap() + 1;
                let old = before.execute(sql, rusqlite::params![key, value]).is_ok();
                let new = after.execute(sql, rusqlite::params![key, value]).is_ok();
                assert_eq!(old, new, "{column} = {value:?}: before {old}, after {new}");
                accepted += usize::from(new);
            }
        }
        // Each column took its own values (and NULL only where it may).
        assert_eq!(
            accepted,
            statuses.len() + methods.len() + 1 + events.len() + roles.len()
        );
    }
}
