//! PostgreSQL, for several replicas sharing one database.
//!
//! Changes are committed in batches, as on SQLite: a few writer tasks per
//! replica each take whatever changes are waiting and commit them in one
//! transaction on a pooled connection: lock the batch's job rows in id
//! order (`SELECT … FOR UPDATE`, which serializes changes to one job across
//! every replica, and in one order, so two replicas' batches never
//! deadlock), look the request ids up, let the domain decide every request
//! in turn, write the job rows (compare-and-set on the revision) and the
//! events, and `pg_notify` each new revision, then commit. PostgreSQL
//! delivers the notifications only if, and after, the transaction commits,
//! so "a notification exists" and "the change is durable" are the same
//! fact. A batch costs the same few round trips whatever its size.
//!
//! Two replicas racing to create one job, or to use one request id, meet on
//! a unique index; the loser's batch is rolled back and retried from the
//! start, which then reads the winner's row and answers as the domain says
//! (ALREADY_EXISTS, or a replay). The writers hand their own committed
//! events to [`super::Committed`] only after the batch's connection is
//! back in the pool; other replicas' changes arrive as notifications,
//! whose fan-out is [`crate::hub::pg_listen`]'s job.

use super::Condition;
use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres};

use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::batch::{
    Answered, BatchJobs, CommitBatch, Reply, WriteFailure, commit_and_answer, decide_all, submit,
};
use super::codec::{self, JobRow, job_columns};
use super::{Committed, Outcome, StorageError, StoreOptions};
use crate::domain::{DomainError, Event, Job, JobId, Request};

/// The LISTEN/NOTIFY channel every replica listens on. Payload:
/// `<job_id>:<revision>` of a committed event.
pub const EVENTS_CHANNEL: &str = "jobstatus_events";

/// How many times a batch is retried after losing a race on a unique
/// index (or a deadlock). One retry always suffices for the races we know
/// of; the bound only stops a bug from looping.
const MAX_ATTEMPTS: u32 = 3;

/// Writer tasks per replica (at most half the pool): each commits one batch
/// at a time on its own connection.
const WRITERS: usize = 4;

/// How many changes may wait for a writer before callers wait too.
const WRITE_QUEUE: usize = 4096;

#[derive(Debug, Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Every query and transaction.
    pool: PgPool,
    /// At most one connection: the replica's LISTEN session. Separate so
    /// that a busy pool can never starve the listener (or the reverse).
    listen: PgPool,
    /// Changes waiting for a writer.
    writes: mpsc::Sender<WriteOp>,
    /// How long a change may wait for its answer in all (`--db-timeout-ms`).
    timeout: Duration,
    /// Set while writes fail for a condition that blocks them.
    failure: Arc<WriteFailure>,
    /// Cancelled by `close`: the writers stop taking new changes, commit
    /// what is queued and exit.
    closing: CancellationToken,
    writers: TaskTracker,
}

/// A change waiting for a writer, and where its answer goes.
#[derive(Debug)]
struct WriteOp {
    request: Request,
    reply: Reply,
}

impl PostgresStore {
    pub async fn connect(
        url: &str,
        options: &StoreOptions,
        committed: Arc<dyn Committed>,
    ) -> Result<Self, StorageError> {
        let base = PgConnectOptions::from_str(url).map_err(|e| {
            StorageError::unreachable(format!("bad PostgreSQL URL {:?}: {e}", super::redact(url)))
        })?;
        let statement_timeout = options.statement_timeout.as_millis().max(1).to_string();
        let connect = base
            .clone()
            .application_name("jobstatus")
            // A stuck query (a lock held by a hung client, an overloaded
            // server) fails UNAVAILABLE instead of holding the RPC forever.
            .options([("statement_timeout", statement_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size.max(1))
            .min_connections(0)
            // A database outage fails calls after this long instead of
            // queueing them: waiting longer helps nobody.
            .acquire_timeout(options.busy_timeout)
            .connect_with(connect)
            .await?;
        // Migrations run on a session of their own, without the statement
        // time-out: a replica waits for another's migration lock as long as
        // that takes, and a migration is never cancelled half-way because
        // one statement took longer than a call may.
        let mut migrating = tokio::time::timeout(
            options.busy_timeout,
            PgConnection::connect_with(&base.clone().application_name("jobstatus-migrate")),
        )
        .await
        .map_err(|_| {
            StorageError::unreachable(format!(
                "no connection for the migrations within {:?}",
                options.busy_timeout
            ))
        })??;
        let migrated = sqlx::migrate!("./migrations/postgres")
            .run(&mut migrating)
            .await
            .map_err(|e| StorageError::Internal(format!("migrations failed: {e}")));
        let _ = migrating.close().await;
        migrated?;
        let listen = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(options.busy_timeout)
            // The LISTEN session lives as long as it can; recycling it
            // would only open a window for lost notifications.
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(base.application_name("jobstatus-listener"));
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        let closing = CancellationToken::new();
        let writers = TaskTracker::new();
        let failure = Arc::new(WriteFailure::default());
        // Half the pool at most: snapshots and catch-up reads need the rest.
        let count = WRITERS.min((options.pool_size as usize / 2).max(1));
        for _ in 0..count {
            writers.spawn(run_writer(
                pool.clone(),
                queue.clone(),
                options.max_batch.max(1),
                failure.clone(),
                committed.clone(),
                closing.clone(),
            ));
        }
        writers.close();
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                listen,
                writes,
                timeout: options.busy_timeout,
                failure,
                closing,
                writers,
            }),
        })
    }

    /// The one-connection pool the LISTEN session is taken from.
    pub(crate) fn listener_pool(&self) -> &PgPool {
        &self.inner.listen
    }

    /// Queues `request` for this replica's writers and waits for its
    /// commit (or refusal).
    pub async fn execute(&self, request: Request) -> Result<Outcome, StorageError> {
        submit(&self.inner.writes, self.inner.timeout, |reply| WriteOp {
            request,
            reply,
        })
        .await
    }

    pub async fn get_job(&self, id: JobId) -> Result<Option<Job>, StorageError> {
        let mut conn = self.acquire().await?;
        sqlx::query_as::<_, JobRow>(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE job_id = $1"
        ))
        .bind(id.get())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?
        .map(Job::try_from)
        .transpose()
    }

    pub async fn events_after(
        &self,
        id: JobId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StorageError> {
        let mut conn = self.acquire().await?;
        let payloads: Vec<String> = sqlx::query_scalar(
            "SELECT payload FROM job_events WHERE job_id = $1 AND revision > $2 \
             ORDER BY revision LIMIT $3",
        )
        .bind(id.get())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
        payloads.iter().map(|p| codec::decode_event(p)).collect()
    }

    pub async fn jobs_by_ids(&self, ids: &[JobId]) -> Result<Vec<Job>, StorageError> {
        let ids: Vec<i64> = ids.iter().map(|id| id.get()).collect();
        let query = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE job_id = ANY($1)"
        ))
        .bind(ids);
        self.fetch_jobs(query).await
    }

    /// Jobs where `user` is the client or the assigned worker: unfinished
    /// ones first, then the most recently updated (so a `limit` keeps the
    /// jobs a user is likely to care about).
    pub async fn jobs_of_user(&self, user: &str, limit: u32) -> Result<Vec<Job>, StorageError> {
        let query = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE client_id = $1 OR worker_id = $1 \
             ORDER BY (status IN ('completed', 'cancelled')), updated_at DESC, job_id LIMIT $2"
        ))
        .bind(user)
        .bind(i64::from(limit));
        self.fetch_jobs(query).await
    }

    /// Runs a query for job rows on a pooled connection and decodes them.
    async fn fetch_jobs(
        &self,
        query: sqlx::query::QueryAs<'_, Postgres, JobRow, PgArguments>,
    ) -> Result<Vec<Job>, StorageError> {
        let mut conn = self.acquire().await?;
        query
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(Job::try_from)
            .collect()
    }

    /// The events named by `(job, revision)` pairs (what notifications
    /// carry), ordered by job then revision. Missing pairs are skipped.
    pub(crate) async fn events_at(
        &self,
        pairs: &[(JobId, i64)],
    ) -> Result<Vec<Event>, StorageError> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let (jobs, revisions): (Vec<i64>, Vec<i64>) =
            pairs.iter().map(|(job, rev)| (job.get(), *rev)).unzip();
        let mut conn = self.acquire().await?;
        let payloads: Vec<String> = sqlx::query_scalar(
            "SELECT e.payload FROM job_events e \
             JOIN UNNEST($1::BIGINT[], $2::BIGINT[]) AS wanted (job_id, revision) \
               ON e.job_id = wanted.job_id AND e.revision = wanted.revision \
             ORDER BY e.job_id, e.revision",
        )
        .bind(jobs)
        .bind(revisions)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
        payloads.iter().map(|p| codec::decode_event(p)).collect()
    }

    /// The newest event of each job in `ids` (jobs without events are
    /// skipped): what a replica publishes to resynchronise its watchers.
    pub(crate) async fn latest_events(&self, ids: &[JobId]) -> Result<Vec<Event>, StorageError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = ids.iter().map(|id| id.get()).collect();
        let mut conn = self.acquire().await?;
        let payloads: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT ON (job_id) payload FROM job_events \
             WHERE job_id = ANY($1) ORDER BY job_id, revision DESC",
        )
        .bind(ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
        payloads.iter().map(|p| codec::decode_event(p)).collect()
    }

    /// The condition writes are failing for now, if any (health checking).
    pub fn write_failure(&self) -> Option<Condition> {
        self.inner.failure.get()
    }

    /// Whether the database answers. While writes fail for a condition
    /// that blocks them (a read-only standby after a failover, say), it
    /// commits a transaction that needs a transaction id instead, so a
    /// recovery shows even when no client writes.
    pub async fn ping(&self) -> Result<(), StorageError> {
        let mut conn = self.acquire().await?;
        if self.inner.failure.get().is_none() {
            sqlx::query("SELECT 1")
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
            return Ok(());
        }
        let probe = async {
            let mut tx = conn.begin().await?;
            sqlx::query("SELECT txid_current()")
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        };
        match probe.await {
            Ok(()) => {
                self.inner.failure.set(None);
                Ok(())
            }
            Err(err) => {
                let err = db_error(err);
                if let StorageError::Unavailable(condition, _) = &err {
                    self.inner
                        .failure
                        .set(Some(*condition).filter(|c| c.blocks_writes()));
                }
                Err(err)
            }
        }
    }

    /// Closes both pools. The listener task must have ended first (the app
    /// ends it), or closing the listen pool waits for its connection.
    pub async fn close(&self) {
        self.inner.closing.cancel();
        self.inner.writers.wait().await;
        self.inner.pool.close().await;
        self.inner.listen.close().await;
    }

    async fn acquire(&self) -> Result<PoolConnection<Postgres>, StorageError> {
        acquire(&self.inner.pool).await
    }
}

/// A pooled connection. Failing to get one means the database cannot be
/// reached (or refuses us: down, restarting, role blocked, pool exhausted
/// for `busy_timeout`), which is always "try again later".
async fn acquire(pool: &PgPool) -> Result<PoolConnection<Postgres>, StorageError> {
    pool.acquire()
        .await
        .map_err(|e| match StorageError::from(e) {
            // Whatever refused the connection, it is not this request's fault.
            StorageError::Internal(detail) => StorageError::unreachable(detail),
            other => other,
        })
}

/// Why one attempt at a change failed: a database error (which may be a
/// lost race worth retrying) or a final answer.
#[derive(Debug)]
enum TxError {
    Sqlx(sqlx::Error),
    Storage(StorageError),
}

impl From<sqlx::Error> for TxError {
    fn from(err: sqlx::Error) -> Self {
        TxError::Sqlx(err)
    }
}

impl From<StorageError> for TxError {
    fn from(err: StorageError) -> Self {
        TxError::Storage(err)
    }
}

impl From<DomainError> for TxError {
    fn from(err: DomainError) -> Self {
        TxError::Storage(err.into())
    }
}

/// A writer task: commits queued changes in batches until closed, then
/// helps drain the queue. Several share one queue, each with its own
/// connection per batch.
async fn run_writer(
    mut pool: PgPool,
    queue: Arc<Mutex<mpsc::Receiver<WriteOp>>>,
    max_batch: usize,
    failure: Arc<WriteFailure>,
    committed: Arc<dyn Committed>,
    closing: CancellationToken,
) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        let received = {
            let mut rx = queue.lock().await;
            tokio::select! {
                n = rx.recv_many(&mut batch, max_batch) => n,
                () = closing.cancelled() => {
                    rx.close();
                    rx.recv_many(&mut batch, max_batch).await
                }
            }
        };
        if received == 0 {
            break;
        }
        let (requests, replies): (Vec<Request>, Vec<_>) =
            batch.drain(..).map(|op| (op.request, op.reply)).unzip();
        commit_and_answer(&failure, &*committed, &mut pool, &requests, replies).await;
    }
}

impl CommitBatch for PgPool {
    fn commit(
        &mut self,
        requests: &[Request],
    ) -> impl Future<Output = Result<Vec<Result<Outcome, StorageError>>, StorageError>> + Send {
        commit_with_retries(self, requests)
    }
}

/// One batch in one transaction, retried from the start after losing a
/// race on a unique index (another replica created the job, or used the
/// request id, first).
async fn commit_with_retries(
    pool: &PgPool,
    requests: &[Request],
) -> Result<Vec<Result<Outcome, StorageError>>, StorageError> {
    let mut attempt = 1;
    loop {
        let mut conn = acquire(pool).await?;
        match apply_batch(&mut conn, requests).await {
            Ok(results) => return Ok(results),
            Err(TxError::Sqlx(err)) if is_lost_race(&err) && attempt < MAX_ATTEMPTS => {
                tracing::debug!(error = %err, changes = requests.len(), "lost a race; retrying");
                attempt += 1;
            }
            Err(TxError::Sqlx(err)) => return Err(db_error(err)),
            Err(TxError::Storage(err)) => return Err(err),
        }
    }
}

/// One attempt at a batch: everything in one transaction, rolled back on
/// any error (dropping an uncommitted transaction rolls it back).
async fn apply_batch(
    conn: &mut PgConnection,
    requests: &[Request],
) -> Result<Vec<Result<Outcome, StorageError>>, TxError> {
    let mut tx = conn.begin().await?;
    // The row locks come first: every later read in this transaction then
    // sees the jobs, and their logs, as the last committed changes left
    // them. Locking in id order means two replicas' batches can wait for
    // each other but never in a cycle.
    let mut ids: Vec<i64> = requests.iter().map(|r| r.job_id.get()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut jobs: BatchJobs = sqlx::query_as::<_, JobRow>(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE job_id = ANY($1) ORDER BY job_id FOR UPDATE"
    ))
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|row| Job::try_from(row).map(|job| (job.id, job)))
    .collect::<Result<_, StorageError>>()?;
    let mut answered = answered_request_ids(&mut tx, requests).await?;
    let before: HashMap<JobId, i64> = jobs.iter().map(|(id, job)| (*id, job.revision)).collect();
    let (results, changes) = decide_all(&mut jobs, &mut answered, requests);
    if !changes.is_empty() {
        write_changes(&mut tx, &changes, &before, &jobs).await?;
    }
    tx.commit().await?;
    Ok(results)
}

/// The committed events that already used one of the batch's request ids.
async fn answered_request_ids(
    conn: &mut PgConnection,
    requests: &[Request],
) -> Result<Answered, TxError> {
    let (actors, request_ids): (Vec<&str>, Vec<&str>) = requests
        .iter()
        .filter_map(|r| Some((r.caller.id(), r.request_id.as_ref()?.as_str())))
        .unzip();
    if actors.is_empty() {
        return Ok(Answered::new());
    }
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT e.actor_id, e.request_id, e.payload FROM job_events e \
         JOIN UNNEST($1::TEXT[], $2::TEXT[]) AS p (actor_id, request_id) \
           ON e.actor_id = p.actor_id AND e.request_id = p.request_id",
    )
    .bind(&actors)
    .bind(&request_ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut answered = Answered::new();
    for (actor_id, request_id, payload) in rows {
        answered.insert((actor_id, request_id), codec::decode_event(&payload)?);
    }
    Ok(answered)
}

/// Writes a batch's changes in one statement (one round trip, while the
/// batch holds its rows' locks): each job's final row (a plain INSERT for
/// a new job, so a racing create fails on the primary key and is retried;
/// a compare-and-set on the revision it had before the batch otherwise, so
/// a history can never fork), every event in order, and a notification per
/// event. Notifications are part of the transaction: delivered only if,
/// and after, it commits.
async fn write_changes(
    conn: &mut PgConnection,
    changes: &[Arc<Event>],
    before: &HashMap<JobId, i64>,
    after: &BatchJobs,
) -> Result<(), TxError> {
    let mut changed: Vec<JobId> = changes.iter().map(|event| event.job_id()).collect();
    changed.sort_unstable();
    changed.dedup();
    let mut jobs = JobColumns::default();
    for id in &changed {
        let job = after.get(id).ok_or_else(|| {
            StorageError::Internal(format!("job {id} changed but is not in its batch"))
        })?;
        // 0: new (a stored job's revision is at least 1).
        jobs.push(job, before.get(id).copied().unwrap_or(0));
    }
    let mut events = EventColumns::default();
    for event in changes {
        events.push(event)?;
    }
    let query = sqlx::query_as(concat!(
        "WITH n AS (SELECT * FROM ",
        unnest_jobs!(),
        "), created AS (INSERT INTO jobs (",
        job_columns!(),
        ") SELECT ",
        job_columns!(),
        " FROM n WHERE previous = 0 RETURNING 1), \
         updated AS (UPDATE jobs SET worker_id = n.worker_id, status = n.status, \
           payment_method = n.payment_method, payment_proof = n.payment_proof, \
           change_request_reason = n.change_request_reason, cancel_reason = n.cancel_reason, \
           revision = n.revision, updated_at = n.updated_at \
         FROM n WHERE n.previous <> 0 AND jobs.job_id = n.job_id \
           AND jobs.revision = n.previous RETURNING 1), \
         events AS (INSERT INTO job_events \
           (job_id, revision, event, actor_id, actor_role, request_id, payload, created_at) \
         SELECT * FROM UNNEST($13::BIGINT[], $14::BIGINT[], $15::TEXT[], $16::TEXT[], \
           $17::TEXT[], $18::TEXT[], $19::TEXT[], $20::TIMESTAMPTZ[]) RETURNING 1), \
         notified AS (SELECT pg_notify($21, t.payload) \
         FROM UNNEST($22::TEXT[]) WITH ORDINALITY AS t (payload, position) ORDER BY t.position) \
         SELECT (SELECT count(*) FROM created) + (SELECT count(*) FROM updated), \
           (SELECT count(*) FROM events), (SELECT count(*) FROM notified)"
    ));
    let (rows, logged, notified): (i64, i64, i64) =
        events.bind(jobs.bind(query)).fetch_one(&mut *conn).await?;
    let (want_rows, want_events) = (changed.len() as i64, changes.len() as i64);
    if (rows, logged, notified) != (want_rows, want_events, want_events) {
        return Err(StorageError::Internal(format!(
            "wrote {rows} of {want_rows} job rows, {logged} and {notified} of {want_events} \
             events and notifications: a job moved while the batch was being written"
        ))
        .into());
    }
    Ok(())
}

/// [`JobColumns`] as a table `n`, from parameters $1 to $12.
macro_rules! unnest_jobs {
    () => {
        "UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], \
           $7::TEXT[], $8::TEXT[], $9::BIGINT[], $10::TIMESTAMPTZ[], $11::TIMESTAMPTZ[], \
           $12::BIGINT[]) \
         AS n (job_id, client_id, worker_id, status, payment_method, payment_proof, \
               change_request_reason, cancel_reason, revision, created_at, updated_at, \
               previous)"
    };
}
use unnest_jobs;

type PgQuery<'q> = sqlx::query::QueryAs<'q, Postgres, (i64, i64, i64), PgArguments>;

/// Job rows as column arrays, for `UNNEST`, borrowing from the batch.
#[derive(Debug, Default)]
struct JobColumns<'a> {
    job_id: Vec<i64>,
    client_id: Vec<&'a str>,
    worker_id: Vec<Option<&'a str>>,
    status: Vec<&'static str>,
    payment_method: Vec<Option<&'static str>>,
    payment_proof: Vec<Option<&'a str>>,
    change_request_reason: Vec<Option<&'a str>>,
    cancel_reason: Vec<Option<&'a str>>,
    revision: Vec<i64>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    /// The revision before the batch (0 for a new job).
    previous: Vec<i64>,
}

impl<'a> JobColumns<'a> {
    /// Binds every column as $1 to $12, as [`unnest_jobs`] reads them.
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.job_id)
            .bind(&self.client_id)
            .bind(&self.worker_id)
            .bind(&self.status)
            .bind(&self.payment_method)
            .bind(&self.payment_proof)
            .bind(&self.change_request_reason)
            .bind(&self.cancel_reason)
            .bind(&self.revision)
            .bind(&self.created_at)
            .bind(&self.updated_at)
            .bind(&self.previous)
    }

    fn push(&mut self, job: &'a Job, previous: i64) {
        self.job_id.push(job.id.get());
        self.client_id.push(job.client_id.as_str());
        self.worker_id
            .push(job.worker_id.as_ref().map(|w| w.as_str()));
        self.status.push(job.status.as_str());
        self.payment_method
            .push(job.payment_method.map(|m| m.as_str()));
        self.payment_proof
            .push(job.payment_proof.as_ref().map(|p| p.as_str()));
        self.change_request_reason
            .push(job.change_request_reason.as_ref().map(|r| r.as_str()));
        self.cancel_reason
            .push(job.cancel_reason.as_ref().map(|r| r.as_str()));
        self.revision.push(job.revision);
        self.created_at.push(job.created_at);
        self.updated_at.push(job.updated_at);
        self.previous.push(previous);
    }
}

/// Event rows as column arrays, for `UNNEST`, with their notifications,
/// borrowing from the batch.
#[derive(Debug, Default)]
struct EventColumns<'a> {
    job_id: Vec<i64>,
    revision: Vec<i64>,
    event: Vec<&'static str>,
    actor_id: Vec<&'a str>,
    actor_role: Vec<&'static str>,
    request_id: Vec<Option<&'a str>>,
    payload: Vec<String>,
    created_at: Vec<DateTime<Utc>>,
    notification: Vec<String>,
}

impl<'a> EventColumns<'a> {
    /// Binds the events as $13 to $20 and the notifications as $21 and $22.
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.job_id)
            .bind(&self.revision)
            .bind(&self.event)
            .bind(&self.actor_id)
            .bind(&self.actor_role)
            .bind(&self.request_id)
            .bind(&self.payload)
            .bind(&self.created_at)
            .bind(EVENTS_CHANNEL)
            .bind(&self.notification)
    }

    fn push(&mut self, event: &'a Event) -> Result<(), StorageError> {
        self.job_id.push(event.job_id().get());
        self.revision.push(event.revision());
        self.event.push(event.kind.as_str());
        self.actor_id.push(&event.actor_id);
        self.actor_role.push(codec::role_str(event.actor_role));
        self.request_id
            .push(event.request_id.as_ref().map(|r| r.as_str()));
        self.payload.push(codec::encode_event(event)?);
        self.created_at.push(event.at());
        self.notification
            .push(notification_payload(event.job_id(), event.revision()));
        Ok(())
    }
}

/// `<job_id>:<revision>`: small, and all a listener needs to read the event.
pub(crate) fn notification_payload(job: JobId, revision: i64) -> String {
    format!("{job}:{revision}")
}

/// The inverse of [`notification_payload`]; `None` for anything else.
pub(crate) fn parse_notification(payload: &str) -> Option<(JobId, i64)> {
    let (job, revision) = payload.split_once(':')?;
    let job = JobId::new(job.parse().ok()?).ok()?;
    let revision = revision.parse().ok().filter(|r| *r > 0)?;
    Some((job, revision))
}

/// Errors that mean "another transaction got there first": a unique index
/// (create or request id race), a serialization failure or a deadlock.
fn is_lost_race(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("23505" | "40001" | "40P01"))
        }
        _ => false,
    }
}

/// A database error as the storage layer reports it: a statement or lock
/// time-out (57014, 55P03) is the database too busy to answer in time, and
/// class 28 (authorization) is the database refusing our connections; both
/// are UNAVAILABLE ([`super::Condition::of_code`]), not INTERNAL.
fn db_error(err: sqlx::Error) -> StorageError {
    StorageError::from(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_payload_round_trips() {
        let job = JobId::new(42).unwrap();
        assert_eq!(
            parse_notification(&notification_payload(job, 7)),
            Some((job, 7))
        );
        assert_eq!(parse_notification("42"), None);
        assert_eq!(parse_notification("0:1"), None);
        assert_eq!(parse_notification("1:0"), None);
        assert_eq!(parse_notification("x:1"), None);
    }
}
