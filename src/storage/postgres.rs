//! PostgreSQL, for several replicas sharing one database.
//!
//! Every change is one transaction on a pooled connection: lock the job's
//! row (`SELECT … FOR UPDATE`, which serializes changes to one job across
//! every replica), look the request id up, let the domain decide, write the
//! job row (a compare-and-set on the revision) and its event, and
//! `pg_notify` the new revision, then commit. PostgreSQL delivers the
//! notification only if, and after, the transaction commits, so "a
//! notification exists" and "the change is durable" are the same fact.
//!
//! Two writers racing to create one job, or to use one request id, meet on
//! a unique index; the loser's transaction is rolled back and retried from
//! the start, which then reads the winner's row and answers as the domain
//! says (ALREADY_EXISTS, or a replay). Nothing here may publish to the hub
//! or hold a connection while events are published; fan-out of the
//! notifications is [`crate::hub::pg_listen`]'s job.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres};

use super::codec::{self, JobRow, job_columns};
use super::{Outcome, StorageError, StoreOptions};
use crate::domain::{Decision, DomainError, Event, Job, JobId, Request, decide};

/// The LISTEN/NOTIFY channel every replica listens on. Payload:
/// `<job_id>:<revision>` of a committed event.
pub const EVENTS_CHANNEL: &str = "jobstatus_events";

/// How many times a change is retried after losing a race on a unique
/// index (or a deadlock). One retry always suffices for the races we know
/// of; the bound only stops a bug from looping.
const MAX_ATTEMPTS: u32 = 3;

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
}

impl PostgresStore {
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StorageError> {
        let base = PgConnectOptions::from_str(url).map_err(|e| {
            StorageError::Unavailable(format!("bad PostgreSQL URL {:?}: {e}", super::redact(url)))
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
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StorageError::Internal(format!("migrations failed: {e}")))?;
        let listen = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(options.busy_timeout)
            // The LISTEN session lives as long as it can; recycling it
            // would only open a window for lost notifications.
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(base.application_name("jobstatus-listener"));
        Ok(Self {
            inner: Arc::new(Inner { pool, listen }),
        })
    }

    /// The one-connection pool the LISTEN session is taken from.
    pub(crate) fn listener_pool(&self) -> &PgPool {
        &self.inner.listen
    }

    pub async fn execute(&self, request: Request) -> Result<Outcome, StorageError> {
        let mut attempt = 1;
        loop {
            let mut conn = self.acquire().await?;
            match apply(&mut conn, &request).await {
                Ok(outcome) => return Ok(outcome),
                Err(TxError::Sqlx(err)) if is_lost_race(&err) && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(job_id = %request.job_id, error = %err, "lost a race; retrying");
                    attempt += 1;
                }
                Err(TxError::Sqlx(err)) => return Err(db_error(err)),
                Err(TxError::Storage(err)) => return Err(err),
            }
        }
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

    /// Jobs where `user` is the client or the assigned worker: unfinished
    /// ones first, then the most recently updated (so a `limit` keeps the
    /// jobs a user is likely to care about).
    pub async fn jobs_of_user(&self, user: &str, limit: u32) -> Result<Vec<Job>, StorageError> {
        let mut conn = self.acquire().await?;
        sqlx::query_as::<_, JobRow>(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE client_id = $1 OR worker_id = $1 \
             ORDER BY (status IN ('completed', 'cancelled')), updated_at DESC, job_id LIMIT $2"
        ))
        .bind(user)
        .bind(i64::from(limit))
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

    pub async fn ping(&self) -> Result<(), StorageError> {
        let mut conn = self.acquire().await?;
        sqlx::query("SELECT 1")
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Closes both pools. The listener task must have ended first (the app
    /// ends it), or closing the listen pool waits for its connection.
    pub async fn close(&self) {
        self.inner.pool.close().await;
        self.inner.listen.close().await;
    }

    /// A pooled connection. Failing to get one means the database cannot be
    /// reached (or refuses us: down, restarting, role blocked, pool
    /// exhausted for `busy_timeout`), which is always "try again later".
    async fn acquire(&self) -> Result<PoolConnection<Postgres>, StorageError> {
        self.inner
            .pool
            .acquire()
            .await
            .map_err(|e| StorageError::Unavailable(e.to_string()))
    }
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

/// One attempt: everything in one transaction, rolled back on any error
/// (dropping an uncommitted transaction rolls it back).
async fn apply(conn: &mut PgConnection, request: &Request) -> Result<Outcome, TxError> {
    let mut tx = conn.begin().await?;
    // The row lock comes first: every later read in this transaction then
    // sees the job, and its log, as the last committed change left them.
    let current = sqlx::query_as::<_, JobRow>(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE job_id = $1 FOR UPDATE"
    ))
    .bind(request.job_id.get())
    .fetch_optional(&mut *tx)
    .await?
    .map(Job::try_from)
    .transpose()?;
    if let Some(request_id) = &request.request_id {
        let earlier: Option<String> = sqlx::query_scalar(
            "SELECT payload FROM job_events WHERE actor_id = $1 AND request_id = $2",
        )
        .bind(request.caller.id())
        .bind(request_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(payload) = earlier {
            return Ok(Outcome::Replayed(codec::decode_event(&payload)?));
        }
    }
    match decide(current.as_ref(), request, codec::now())? {
        Decision::Unchanged(job) => Ok(Outcome::Unchanged(job)),
        Decision::Changed(event) => {
            write_event(&mut tx, &event).await?;
            tx.commit().await?;
            Ok(Outcome::Changed(event))
        }
    }
}

/// Writes the job row, its event and the notification in one statement:
/// each statement is a round trip, and a call's transaction holds the job's
/// row lock for all of them.
async fn write_event(conn: &mut PgConnection, event: &Event) -> Result<(), TxError> {
    let job = &event.job;
    // A new job is a plain INSERT, so a racing create fails on the primary
    // key (and is retried) rather than silently updating; a change is a
    // compare-and-set on the revision, so a history can never fork. The
    // event and the notification hang off the row that was written: if
    // none was, nothing is, and no row comes back.
    let sql = if job.revision == 1 {
        concat!(
            "WITH job AS (INSERT INTO jobs (",
            job_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING job_id), ",
            "event AS (INSERT INTO job_events \
               (job_id, revision, event, actor_id, actor_role, request_id, payload, created_at) \
             SELECT job_id, $9, $12, $13, $14, $15, $16, $11 FROM job RETURNING job_id) \
             SELECT pg_notify($17, $18) FROM event"
        )
    } else {
        "WITH job AS (UPDATE jobs SET client_id = $2, worker_id = $3, status = $4, \
           payment_method = $5, payment_proof = $6, change_request_reason = $7, \
           cancel_reason = $8, revision = $9, created_at = $10, updated_at = $11 \
         WHERE job_id = $1 AND revision = $9 - 1 RETURNING job_id), \
         event AS (INSERT INTO job_events \
           (job_id, revision, event, actor_id, actor_role, request_id, payload, created_at) \
         SELECT job_id, $9, $12, $13, $14, $15, $16, $11 FROM job RETURNING job_id) \
         SELECT pg_notify($17, $18) FROM event"
    };
    let notified = sqlx::query(sql)
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
        .bind(event.at())
        .bind(event.kind.as_str())
        .bind(&event.actor_id)
        .bind(codec::role_str(event.actor_role))
        .bind(event.request_id.as_ref().map(|r| r.as_str()))
        .bind(codec::encode_event(event)?)
        .bind(EVENTS_CHANNEL)
        .bind(notification_payload(job.id, job.revision))
        .fetch_all(&mut *conn)
        .await?;
    if notified.len() != 1 {
        return Err(StorageError::Internal(format!(
            "job {} moved while revision {} was being written",
            job.id, job.revision
        ))
        .into());
    }
    Ok(())
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

/// PostgreSQL-specific refinements of `StorageError::from`: a statement
/// time-out (57014) or lock time-out (55P03) means the database is too busy
/// to answer in time, and class 28 (authorization) means it refuses our
/// connections: both are UNAVAILABLE, not INTERNAL.
fn db_error(err: sqlx::Error) -> StorageError {
    if let sqlx::Error::Database(db) = &err
        && let Some(code) = db.code()
        && (code == "57014" || code == "55P03" || code.starts_with("28"))
    {
        return StorageError::Unavailable(db.message().to_owned());
    }
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
