//! Durable storage of jobs and their event log, behind one small interface.
//!
//! [`Store`] is a closed enum over the backends, so callers never see which
//! database they run on. Every change goes through [`Store::execute`], which
//! runs the domain's `decide` inside the job's transaction and commits the
//! new job row and its event together, then hands every committed event to
//! [`Committed`] (the fan-out hub) itself, before any caller is answered:
//! a change stands once it is committed, whether or not its caller is still
//! waiting, so telling its watchers must not depend on the caller. This
//! module must never know about gRPC or about who watches.

mod batch;
mod codec;
mod postgres;
mod readers;
mod recent;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use crate::domain::{DomainError, Event, Job, JobId, Request};

pub(crate) use postgres::parse_notification;
pub use postgres::{EVENTS_CHANNEL, PostgresStore};
pub use sqlite::SqliteStore;

/// What `execute` did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The job changed; the event is committed and [`Committed`] was told.
    Changed(Arc<Event>),
    /// An idempotent repeat: nothing was written.
    Unchanged(Job),
    /// The caller's request id was already used: this is the event that the
    /// first request committed. The caller checks it was the same request.
    Replayed(Event),
}

/// The storage layer's one error type.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The domain refused the command; nothing was written.
    #[error(transparent)]
    Rejected(#[from] DomainError),
    /// The database cannot serve now, for `Condition`; nothing was written
    /// (but a change that timed out waiting may still commit). The detail
    /// may name hosts, users or SQL: it is logged, never sent.
    #[error("database unavailable ({condition}): {detail}", condition = .0.name(), detail = .1)]
    Unavailable(Condition, String),
    /// A stored row does not decode: a bug or a hand-edited database.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Any other database failure. Kept as text so one failure can be
    /// reported to every request of a batch.
    #[error("database error: {0}")]
    Internal(String),
}

/// Why the database cannot serve: what the caller (and the operator) can
/// do about it differs, so the status message names it. Every one is
/// UNAVAILABLE: nothing is wrong with the request, and it will succeed,
/// with no restart, once the condition passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// No connection, or the connection broke.
    Unreachable,
    /// Another writer holds the database longer than the server waits.
    Locked,
    /// The database's disk is full.
    DiskFull,
    /// The database reported an I/O error.
    IoError,
    /// The database only accepts reads (a standby, a read-only file).
    ReadOnly,
    /// No answer within the server's database timeout.
    TimedOut,
    /// The server is shutting down.
    ShuttingDown,
}

impl Condition {
    /// A short, fixed name for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Condition::Unreachable => "unreachable",
            Condition::Locked => "locked",
            Condition::DiskFull => "disk_full",
            Condition::IoError => "io_error",
            Condition::ReadOnly => "read_only",
            Condition::TimedOut => "timed_out",
            Condition::ShuttingDown => "shutting_down",
        }
    }

    /// Whether writes fail while reads may still work: health checking
    /// then reports NOT_SERVING until a write succeeds again.
    pub fn blocks_writes(self) -> bool {
        matches!(
            self,
            Condition::DiskFull | Condition::IoError | Condition::ReadOnly
        )
    }

    /// The condition a database error code means, if it is one of these.
    /// SQLite reports extended codes (the primary code in the low byte:
    /// `SQLITE_IOERR_WRITE` is 778, 10 + 3 × 256), PostgreSQL SQLSTATEs.
    pub fn of_code(code: &str) -> Option<Self> {
        // SQLSTATEs are five characters ("08006"); SQLite's codes, extended
        // included, have at most four digits.
        if code.len() < 5
            && let Ok(extended) = code.parse::<u32>()
        {
            return match extended & 0xff {
                5 | 6 => Some(Condition::Locked),   // BUSY, LOCKED
                8 => Some(Condition::ReadOnly),     // READONLY
                7 | 10 => Some(Condition::IoError), // NOMEM, IOERR
                13 => Some(Condition::DiskFull),    // FULL
                14 => Some(Condition::Unreachable), // CANTOPEN
                _ => None,
            };
        }
        match code {
            "53100" => Some(Condition::DiskFull),
            "25006" => Some(Condition::ReadOnly),
            "58030" => Some(Condition::IoError),
            "57014" | "55P03" => Some(Condition::TimedOut),
            _ if code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code.starts_with("28") =>
            {
                Some(Condition::Unreachable)
            }
            _ => None,
        }
    }
}

impl StorageError {
    /// The database cannot be reached; `detail` says how.
    pub fn unreachable(detail: impl Into<String>) -> Self {
        StorageError::Unavailable(Condition::Unreachable, detail.into())
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(err: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &err {
            E::PoolTimedOut => StorageError::Unavailable(Condition::TimedOut, err.to_string()),
            E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
                StorageError::unreachable(err.to_string())
            }
            E::Database(db) => match db.code().as_deref().and_then(Condition::of_code) {
                Some(condition) => StorageError::Unavailable(condition, db.message().to_owned()),
                None => StorageError::Internal(err.to_string()),
            },
            _ => StorageError::Internal(err.to_string()),
        }
    }
}

/// Tuning that applies to every backend.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a query may wait for the database before failing UNAVAILABLE.
    pub busy_timeout: Duration,
    /// SQLite: reader threads, each with its own connection, for reads
    /// (snapshots, replays).
    pub read_connections: u32,
    /// SQLite: jobs whose newest committed state is kept in memory, so
    /// that a watch opening on one reads nothing (0: none).
    pub job_cache: usize,
    /// How many waiting changes one write transaction may commit together.
    pub max_batch: usize,
    /// PostgreSQL: connections in the pool (queries and transactions; the
    /// LISTEN session has its own). The writers hold at most half of them,
    /// one per batch being committed.
    pub pool_size: u32,
    /// PostgreSQL: the longest one statement may run before it is cancelled
    /// and the call fails UNAVAILABLE.
    pub statement_timeout: Duration,
    /// PostgreSQL: the first wait before reconnecting a broken LISTEN
    /// session; doubled on each failure up to `listener_backoff_max`.
    pub listener_backoff: Duration,
    pub listener_backoff_max: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(1),
            read_connections: 2,
            job_cache: 65_536,
            max_batch: 256,
            pool_size: 10,
            statement_timeout: Duration::from_secs(5),
            listener_backoff: Duration::from_millis(200),
            listener_backoff_max: Duration::from_secs(5),
        }
    }
}

/// Where a store's writers hand every change they commit: once per
/// change, right after its commit and before its caller is answered, from
/// a writer's thread or task. It must not block or do I/O.
pub trait Committed: std::fmt::Debug + Send + Sync + 'static {
    fn committed(&self, event: Arc<Event>);
}

/// The database, whichever it is.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Store {
    /// Opens the database named by `url` (`sqlite://path`, or
    /// `postgres://…` / `postgresql://…`) and runs its migrations. Every
    /// change its writers commit goes to `committed`.
    pub async fn connect(
        url: &str,
        options: &StoreOptions,
        committed: Arc<dyn Committed>,
    ) -> Result<Self, StorageError> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(
                SqliteStore::connect(url, options, committed).await?,
            ))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(
                PostgresStore::connect(url, options, committed).await?,
            ))
        } else {
            Err(StorageError::unreachable(format!(
                "unsupported database URL scheme in {:?}: expected sqlite:// or postgres://",
                redact(url)
            )))
        }
    }

    /// Decides and, if it changes the job, commits `request` in one
    /// transaction. Concurrent changes to one job are serialized.
    pub async fn execute(&self, request: Request) -> Result<Outcome, StorageError> {
        match self {
            Store::Sqlite(s) => s.execute(request).await,
            Store::Postgres(s) => s.execute(request).await,
        }
    }

    pub async fn get_job(&self, id: JobId) -> Result<Option<Job>, StorageError> {
        match self {
            Store::Sqlite(s) => s.get_job(id).await,
            Store::Postgres(s) => s.get_job(id).await,
        }
    }

    /// Events of job `id` with revision > `after`, oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        id: JobId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StorageError> {
        match self {
            Store::Sqlite(s) => s.events_after(id, after, limit).await,
            Store::Postgres(s) => s.events_after(id, after, limit).await,
        }
    }

    /// The jobs among `ids` that exist, in no particular order, read with
    /// one query (WatchMyJobs looks up resumed jobs outside its listing).
    pub async fn jobs_by_ids(&self, ids: &[JobId]) -> Result<Vec<Job>, StorageError> {
        match self {
            Store::Sqlite(s) => s.jobs_by_ids(ids).await,
            Store::Postgres(s) => s.jobs_by_ids(ids).await,
        }
    }

    /// Jobs where `user` is the client or the assigned worker, ordered by
    /// job id, at most `limit` (WatchMyJobs). Both indexes on `jobs` serve it.
    pub async fn jobs_of_user(&self, user: &str, limit: u32) -> Result<Vec<Job>, StorageError> {
        match self {
            Store::Sqlite(s) => s.jobs_of_user(user, limit).await,
            Store::Postgres(s) => s.jobs_of_user(user, limit).await,
        }
    }

    /// The condition writes are failing for now (a full disk, a read-only
    /// database), if any: health checking reports NOT_SERVING meanwhile.
    pub fn write_failure(&self) -> Option<Condition> {
        match self {
            Store::Sqlite(s) => s.write_failure(),
            Store::Postgres(s) => s.write_failure(),
        }
    }

    /// Cheap round trip used by health checking (a real write while writes
    /// are failing, to see them recover).
    pub async fn ping(&self) -> Result<(), StorageError> {
        match self {
            Store::Sqlite(s) => s.ping().await,
            Store::Postgres(s) => s.ping().await,
        }
    }

    /// Lets queued writes finish, then closes every connection.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
        }
    }
}

/// A database URL with any password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// What a store's writers told, in order (for tests).
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Told(std::sync::Mutex<Vec<Arc<Event>>>);

#[cfg(test)]
impl Told {
    pub(crate) fn events(&self) -> Vec<Arc<Event>> {
        self.0.lock().unwrap().clone()
    }
}

#[cfg(test)]
impl Committed for Told {
    fn committed(&self, event: Arc<Event>) {
        self.0.lock().unwrap().push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn unavailable_codes() {
        use Condition::*;
        let cases = [
            ("5", Some(Locked)),
            ("517", Some(Locked)), // SQLITE_BUSY_SNAPSHOT
            ("13", Some(DiskFull)),
            ("10", Some(IoError)),
            ("778", Some(IoError)),  // SQLITE_IOERR_WRITE
            ("1034", Some(IoError)), // SQLITE_IOERR_FSYNC
            ("8", Some(ReadOnly)),
            ("1032", Some(ReadOnly)), // SQLITE_READONLY_DBMOVED
            ("14", Some(Unreachable)),
            ("19", None),   // CONSTRAINT: a bug, not a condition
            ("2067", None), // CONSTRAINT_UNIQUE
            ("08006", Some(Unreachable)),
            ("57P01", Some(Unreachable)),
            ("53100", Some(DiskFull)),
            ("53300", Some(Unreachable)),
            ("25006", Some(ReadOnly)),
            ("57014", Some(TimedOut)),
            ("28P01", Some(Unreachable)),
            ("23505", None),
        ];
        for (code, condition) in cases {
            assert_eq!(Condition::of_code(code), condition, "{code}");
        }
    }
}
