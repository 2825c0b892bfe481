//! The durable floor's storage half (`jobstatus-bench storage-floor`): the
//! storage work the real server must do per operation, done the cheapest
//! correct way, so that what the real server spends beyond it can be told
//! apart from what durability costs.
//!
//! Per change: read the job row by id, write the job row (a compare-and-set
//! on its revision) and append the event row carrying a payload of the
//! real server's size, committing every `batch` changes in one transaction
//! (WAL, `synchronous=FULL`, foreign keys on: the real server's settings).
//! Per created job: look the id up, insert the job row and its event,
//! batched the same way. Per watch opened: read the job row by id. Every
//! statement is prepared once and run from one thread on one connection;
//! nothing else runs in the process while it is measured (CPU is the
//! whole process's, read from /proc like the servers').
//!
//! The schema is the real server's own: the file is created and migrated
//! by `jobstatus`'s store, which also writes one job through the real path
//! so that the payloads used here are real payloads. It must never do less
//! than the real server must (skipping a read, a check or a commit), or the
//! floor would flatter the real server; if the real server ever beats it,
//! the floor is wrong.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;

use jobstatus::domain::{Caller, Command, JobId, Request, ServiceId, UserId};
use jobstatus::hub::Hub;
use jobstatus::storage::{Store, StoreOptions};

use crate::harness::proc_cpu_secs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FloorOp {
    /// One status change of an existing job (W1's transitions, W4's calls).
    Change,
    /// One new job (CreateJob).
    Create,
    /// One job read by id (what opening a WatchJob must read).
    Read,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FloorArgs {
    /// The SQLite file to create (must not exist).
    #[arg(long, required_unless_present = "database_url")]
    pub database: Option<PathBuf>,
    /// A PostgreSQL server instead: the floor creates a database of its
    /// own there (the URL's user must be allowed to), and drops it after.
    #[arg(long, conflicts_with = "database")]
    pub database_url: Option<String>,
    #[arg(long, value_enum)]
    pub op: FloorOp,
    /// Jobs the operations spread over (created before measuring, except for `create`).
    #[arg(long)]
    pub jobs: usize,
    /// Operations measured (changes cycle over the jobs).
    #[arg(long)]
    pub ops: usize,
    /// Changes or creations per transaction: the real writer's mean batch under the same load.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct FloorResult {
    pub ops: usize,
    pub batch: usize,
    pub wall_secs: f64,
    pub cpu_secs: f64,
    /// PostgreSQL's own processes (None on SQLite, which runs in-process).
    #[serde(default)]
    pub db_cpu_secs: Option<f64>,
    pub payload_bytes: usize,
}

/// The columns the real server reads and writes (`storage/codec.rs`).
const JOB_COLUMNS: &str = "job_id, client_id, worker_id, status, payment_method, payment_proof, \
     change_request_reason, cancel_reason, revision, created_at, updated_at";

/// The real server's statements, as the floor runs them (each prepared
/// once per connection and looked up by its text, as sqlx does).
static SELECT_JOB: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ?"));

static INSERT_JOB: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?, ?, ?, 'in_progress', NULL, NULL, NULL, NULL, 1, ?, ?)"
    )
});

const INSERT_CREATED_EVENT: &str = "INSERT INTO job_events \
     (job_id, revision, event, actor_id, actor_role, request_id, payload, created_at) \
     VALUES (?, 1, 'job_created', 'platform', 'service', NULL, ?, ?)";

const UPDATE_JOB: &str = "UPDATE jobs SET worker_id = ?, status = ?, payment_method = ?, \
     payment_proof = ?, change_request_reason = ?, cancel_reason = ?, revision = ?, \
     updated_at = ? WHERE job_id = ? AND revision = ?";

const INSERT_CHANGED_EVENT: &str = "INSERT INTO job_events \
     (job_id, revision, event, actor_id, actor_role, request_id, payload, created_at) \
     VALUES (?, ?, 'worker_marked_complete', ?, 'worker', NULL, ?, ?)";

/// A job row as the real server reads it, every column decoded.
#[allow(dead_code)] // read to do the real server's decoding work, not used after
struct JobRow {
    job_id: i64,
    client_id: String,
    worker_id: Option<String>,
    status: String,
    payment_method: Option<String>,
    payment_proof: Option<String>,
    change_request_reason: Option<String>,
    cancel_reason: Option<String>,
    revision: i64,
    created_at: String,
    updated_at: String,
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        job_id: row.get(0)?,
        client_id: row.get(1)?,
        worker_id: row.get(2)?,
        status: row.get(3)?,
        payment_method: row.get(4)?,
        payment_proof: row.get(5)?,
        change_request_reason: row.get(6)?,
        cancel_reason: row.get(7)?,
        revision: row.get(8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
    })
}

/// Real payloads: what the real server stored for a created job and for
/// its worker marking it complete.
struct Templates {
    created: String,
    changed: String,
    created_at: String,
}

/// Creates and migrates the file through the real store and writes one
/// job through the real path (id `id`), then closes it.
pub(crate) fn prepare(url: &str, id: i64) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async {
        // Nobody watches this store: its hub only receives the template's events.
        let hub = Arc::new(Hub::new(1));
        let store = Store::connect(url, &StoreOptions::default(), hub)
            .await
            .map_err(|e| format!("cannot create {url}: {e}"))?;
        let job_id = JobId::new(id).map_err(|e| e.to_string())?;
        let user = |s: &str| UserId::parse("user", s).map_err(|e| e.to_string());
        let service = ServiceId::parse("service", "platform").map_err(|e| e.to_string())?;
        for (caller, command) in [
            (
                Caller::Service(service),
                Command::Create {
                    client: user("c-template")?,
                    worker: Some(user("w-template")?),
                },
            ),
            (Caller::User(user("w-template")?), Command::MarkComplete),
        ] {
            store
                .execute(Request {
                    job_id,
                    caller,
                    command,
                    request_id: None,
                    expected_revision: None,
                })
                .await
                .map_err(|e| format!("template job: {e}"))?;
        }
        store.close().await;
        Ok(())
    })
}

fn open(path: &std::path::Path) -> Result<Connection, String> {
    let conn = Connection::open(path).map_err(|e| format!("open: {e}"))?;
    // The real server's settings (storage/sqlite.rs).
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
    )
    .map_err(|e| format!("pragmas: {e}"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let sync: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if mode != "wal" || sync != 2 {
        return Err(format!(
            "journal_mode {mode}, synchronous {sync}: not WAL and FULL"
        ));
    }
    Ok(conn)
}

fn templates(conn: &Connection, id: i64) -> Result<Templates, String> {
    let payload = |event: &str| -> Result<String, String> {
        conn.query_row(
            "SELECT payload FROM job_events WHERE job_id = ? AND event = ?",
            params![id, event],
            |r| r.get(0),
        )
        .map_err(|e| format!("template {event}: {e}"))
    };
    let created_at: String = conn
        .query_row("SELECT created_at FROM jobs WHERE job_id = ?", [id], |r| {
            r.get(0)
        })
        .map_err(|e| format!("template job: {e}"))?;
    Ok(Templates {
        created: payload("job_created")?,
        changed: payload("worker_marked_complete")?,
        created_at,
    })
}

/// Inserts jobs 1..=n in progress, each with its created event, unmeasured.
fn seed(conn: &mut Connection, n: usize, t: &Templates) -> Result<(), String> {
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    create(&tx, 1..=n as i64, &t.created, || t.created_at.clone())
        .map_err(|e| format!("seed {e}"))?;
    tx.commit().map_err(|e| e.to_string())
}

/// Inserts jobs `ids` in progress, each with its created event, as
/// CreateJob does; `at` gives each one's time.
fn create(
    tx: &Transaction<'_>,
    ids: impl Iterator<Item = i64>,
    payload: &str,
    at: impl Fn() -> String,
) -> Result<(), String> {
    let mut job = tx.prepare_cached(&INSERT_JOB).map_err(|e| e.to_string())?;
    let mut event = tx
        .prepare_cached(INSERT_CREATED_EVENT)
        .map_err(|e| e.to_string())?;
    for id in ids {
        let at = at();
        job.execute(params![id, format!("c{id}"), format!("w{id}"), at, at])
            .map_err(|e| format!("job {id}: {e}"))?;
        event
            .execute(params![id, payload, at])
            .map_err(|e| format!("event {id}: {e}"))?;
    }
    Ok(())
}

/// Runs operations `0..ops` in write transactions of `batch` (the real
/// writer's): `some` runs one batch's range inside its transaction.
fn in_batches(
    conn: &mut Connection,
    ops: usize,
    batch: usize,
    mut some: impl FnMut(&Transaction<'_>, Range<usize>) -> Result<(), String>,
) -> Result<(), String> {
    let mut done = 0;
    while done < ops {
        let n = batch.min(ops - done);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| e.to_string())?;
        some(&tx, done..done + n)?;
        tx.commit().map_err(|e| format!("commit: {e}"))?;
        done += n;
    }
    Ok(())
}

/// The measured operations. Returns the payload size used.
fn measure(conn: &mut Connection, args: &FloorArgs, t: &Templates) -> Result<usize, String> {
    let batch = args.batch.max(1);
    let now = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let job_of = |i: usize| (i % args.jobs) as i64 + 1;
    match args.op {
        FloorOp::Read => {
            let mut read = conn.prepare(&SELECT_JOB).map_err(|e| e.to_string())?;
            for i in 0..args.ops {
                let id = job_of(i);
                read.query_row([id], read_row)
                    .map_err(|e| format!("read {id}: {e}"))?;
            }
            Ok(0)
        }
        FloorOp::Change => {
            in_batches(conn, args.ops, batch, |tx, range| {
                let err = |e: rusqlite::Error| e.to_string();
                let mut read = tx.prepare_cached(&SELECT_JOB).map_err(err)?;
                let mut write = tx.prepare_cached(UPDATE_JOB).map_err(err)?;
                let mut append = tx.prepare_cached(INSERT_CHANGED_EVENT).map_err(err)?;
                for i in range {
                    let id = job_of(i);
                    let job = read
                        .query_row([id], read_row)
                        .map_err(|e| format!("read {id}: {e}"))?;
                    let at = now();
                    let revision = job.revision + 1;
                    let changed = write
                        .execute(params![
                            job.worker_id,
                            "awaiting_client_approval",
                            job.payment_method,
                            job.payment_proof,
                            job.change_request_reason,
                            job.cancel_reason,
                            revision,
                            at,
                            id,
                            job.revision
                        ])
                        .map_err(|e| format!("write {id}: {e}"))?;
                    if changed != 1 {
                        return Err(format!("job {id} moved under the floor's writer"));
                    }
                    append
                        .execute(params![id, revision, job.worker_id, t.changed, at])
                        .map_err(|e| format!("append {id}: {e}"))?;
                }
                Ok(())
            })?;
            Ok(t.changed.len())
        }
        FloorOp::Create => {
            // Ids above the template's, as the real run's are fresh ones.
            let first = args.jobs as i64 + 10;
            in_batches(conn, args.ops, batch, |tx, range| {
                let ids = first + range.start as i64..first + range.end as i64;
                let mut exists = tx.prepare_cached(&SELECT_JOB).map_err(|e| e.to_string())?;
                for id in ids.clone() {
                    // The real writer looks every id up before it decides.
                    if exists
                        .query_row([id], read_row)
                        .optional()
                        .map_err(|e| format!("look up {id}: {e}"))?
                        .is_some()
                    {
                        return Err(format!("job {id} already exists"));
                    }
                }
                create(tx, ids, &t.created, now)
            })?;
            Ok(t.created.len())
        }
    }
}

/// `jobstatus-bench storage-floor`: prints one JSON line, a [`FloorResult`].
pub fn run(args: &FloorArgs) -> Result<FloorResult, String> {
    if args.jobs == 0 || args.ops == 0 {
        return Err("--jobs and --ops must be at least 1".into());
    }
    let database = match (&args.database, &args.database_url) {
        (_, Some(url)) => return crate::floor_pg::run(args, url),
        (Some(path), None) => path,
        (None, None) => return Err("--database or --database-url is needed".into()),
    };
    if database.exists() {
        return Err(format!(
            "{} exists: the floor starts from a new file",
            database.display()
        ));
    }
    let template_id = args.jobs as i64 + 1;
    prepare(&format!("sqlite://{}", database.display()), template_id)?;
    let mut conn = open(database)?;
    let t = templates(&conn, template_id)?;
    if args.op != FloorOp::Create {
        seed(&mut conn, args.jobs, &t)?;
    }
    // A checkpoint now, so the measured phase starts from the same WAL
    // state whatever the seeding wrote.
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .map_err(|e| format!("checkpoint: {e}"))?;
    let cpu = proc_cpu_secs("self").unwrap_or(f64::NAN);
    let started = Instant::now();
    let payload_bytes = measure(&mut conn, args, &t)?;
    let wall_secs = started.elapsed().as_secs_f64();
    let cpu_secs = proc_cpu_secs("self").unwrap_or(f64::NAN) - cpu;
    Ok(FloorResult {
        ops: args.ops,
        batch: args.batch.max(1),
        wall_secs,
        cpu_secs,
        db_cpu_secs: None,
        payload_bytes,
    })
}

/// The fewest operations the floor measures, however few the real run
/// did: the floor costs a few µs per operation, and a figure over a few
/// milliseconds of CPU would be one scheduler hiccup. A short run is scaled up
/// in jobs and operations alike, never by changing the same jobs more
/// often than the real run did: a job's tenth change costs more than its
/// second (its events no longer share a page with its neighbours'), so
/// cycling would make the floor dearer than the real work.
pub const MIN_OPS: usize = 20_000;

/// Where the floor runs: a new SQLite file in a directory, or a new
/// database on a PostgreSQL server (the real run's, by URL).
#[derive(Debug, Clone, Copy)]
pub enum FloorDatabase<'a> {
    Sqlite(&'a std::path::Path),
    Postgres(&'a str),
}

/// Runs the storage floor in a process of its own (this binary's
/// `storage-floor`), so that nothing else (the load generator's runtime,
/// its threads) shares its CPU figure. On SQLite, `label` names the file
/// in the directory given.
pub async fn in_own_process(
    self_bin: &std::path::Path,
    at: FloorDatabase<'_>,
    label: &str,
    op: FloorOp,
    jobs: usize,
    ops: usize,
    batch: usize,
) -> Result<FloorResult, String> {
    let (tmp, postgres) = match at {
        FloorDatabase::Sqlite(tmp) => (tmp.to_path_buf(), None),
        FloorDatabase::Postgres(url) => (std::env::temp_dir(), Some(url)),
    };
    let database = tmp.join(format!("floor-{label}.db"));
    let remove = || {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
        }
    };
    remove();
    // A transaction per change on PostgreSQL is measured for its rate (each
    // waits for a WAL flush), not for CPU ticks: it is not scaled.
    let scale = if postgres.is_some() && batch <= 1 {
        1
    } else {
        MIN_OPS.div_ceil(ops.max(1))
    };
    let op_name = clap::ValueEnum::to_possible_value(&op)
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default();
    let mut command = tokio::process::Command::new(self_bin);
    command.arg("storage-floor");
    match postgres {
        Some(url) => command.arg("--database-url").arg(url),
        None => command.arg("--database").arg(&database),
    };
    let output = command
        .args(["--op", &op_name])
        .args(["--jobs", &(jobs.max(1) * scale).to_string()])
        .args(["--ops", &(ops.max(1) * scale).to_string()])
        .args(["--batch", &batch.max(1).to_string()])
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("storage floor: cannot start: {e}"))?;
    remove();
    if !output.status.success() {
        return Err(format!(
            "storage floor ({op_name}) failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("storage floor ({op_name}): unreadable answer: {e}"))
}
