//! The durable floor's storage half on PostgreSQL (`storage-floor
//! --database-url postgres://…`): the statements the real server runs per
//! batch of changes, run from one connection with nothing in between.
//!
//! Per batch of changes, in one transaction: lock the batch's job rows
//! (`SELECT … FOR UPDATE`, every column decoded), then one statement that
//! rewrites each job row (a compare-and-set on its revision), appends each
//! event with a real payload, and `pg_notify`s each new revision, then
//! commit. Per created job the same, with an INSERT of the row. Per watch
//! opened: read the job row by id. Statements are prepared once (sqlx
//! caches them per connection). CPU is this process's and PostgreSQL's
//! (every `postgres` process on the machine, which is only the floor's
//! while it runs), reported apart.
//!
//! It works in a database of its own, created for the run and dropped
//! after, migrated by `jobstatus`'s store, which also writes one job
//! through the real path so that the payloads are real payloads. Like the
//! SQLite floor it must never do less than the real server must.

use std::time::Instant;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use jobstatus::storage::EVENTS_CHANNEL;

use crate::floor::{FloorArgs, FloorOp, FloorResult, prepare};
use crate::harness::{postgres_cpu_secs, proc_cpu_secs};

macro_rules! job_columns {
    () => {
        "job_id, client_id, worker_id, status, payment_method, payment_proof, \
         change_request_reason, cancel_reason, revision, created_at, updated_at"
    };
}

/// Locks and reads the batch's rows, as the real writer does first.
const LOCK_JOBS: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE job_id = ANY($1) ORDER BY job_id FOR UPDATE"
);

const SELECT_JOB: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE job_id = $1");

/// Every job row rewritten (compare-and-set on the revision), every event
/// appended, every revision notified, in one statement as the real writer
/// does; answers the three counts to check.
const WRITE_CHANGES: &str = "WITH n AS (SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], \
       $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::BIGINT[], \
       $9::TIMESTAMPTZ[], $10::BIGINT[]) AS n (job_id, worker_id, status, payment_method, \
       payment_proof, change_request_reason, cancel_reason, revision, updated_at, previous)), \
     updated AS (UPDATE jobs SET worker_id = n.worker_id, status = n.status, \
       payment_method = n.payment_method, payment_proof = n.payment_proof, \
       change_request_reason = n.change_request_reason, cancel_reason = n.cancel_reason, \
       revision = n.revision, updated_at = n.updated_at \
     FROM n WHERE jobs.job_id = n.job_id AND jobs.revision = n.previous RETURNING 1), \
     events AS (INSERT INTO job_events \
       (job_id, revision, event, actor_id, actor_role, request_id, payload, created_at) \
     SELECT job_id, revision, 'worker_marked_complete', actor_id, 'worker', NULL, payload, at \
     FROM UNNEST($1::BIGINT[], $8::BIGINT[], $11::TEXT[], $12::TEXT[], $9::TIMESTAMPTZ[]) \
       AS e (job_id, revision, actor_id, payload, at) RETURNING 1), \
     notified AS (SELECT pg_notify($13, t.note) \
     FROM UNNEST($14::TEXT[]) WITH ORDINALITY AS t (note, position) ORDER BY t.position) \
     SELECT (SELECT count(*) FROM updated), (SELECT count(*) FROM events), \
       (SELECT count(*) FROM notified)";

/// New job rows and their created events, notified, in one statement.
const WRITE_CREATED: &str = "WITH n AS (SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], \
       $3::TEXT[], $4::TIMESTAMPTZ[]) AS n (job_id, client_id, worker_id, at)), \
     created AS (INSERT INTO jobs (job_id, client_id, worker_id, status, revision, \
       created_at, updated_at) \
     SELECT job_id, client_id, worker_id, 'in_progress', 1, at, at FROM n RETURNING 1), \
     events AS (INSERT INTO job_events \
       (job_id, revision, event, actor_id, actor_role, request_id, payload, created_at) \
     SELECT job_id, 1, 'job_created', 'platform', 'service', NULL, $5, at FROM n RETURNING 1), \
     notified AS (SELECT pg_notify($6, t.note) \
     FROM UNNEST($7::TEXT[]) WITH ORDINALITY AS t (note, position) ORDER BY t.position) \
     SELECT (SELECT count(*) FROM created), (SELECT count(*) FROM events), \
       (SELECT count(*) FROM notified)";

/// A job row, every column decoded as the real server decodes it.
#[allow(dead_code)] // read to do the real server's decoding work
#[derive(sqlx::FromRow)]
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
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn err(what: &str) -> impl Fn(sqlx::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> Result<String, String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let slash = base
        .rfind('/')
        .filter(|&i| i > "postgres://".len())
        .ok_or_else(|| format!("no database name in {url:?}"))?;
    let mut out = format!("{}/{name}", &base[..slash]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// `jobstatus-bench storage-floor --database-url postgres://…`.
pub fn run(args: &FloorArgs, url: &str) -> Result<FloorResult, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let name = format!("jobstatus_floor_{}", std::process::id());
    let floor_url = with_database(url, &name)?;
    runtime.block_on(async {
        let mut admin = PgConnection::connect(url).await.map_err(err("connect"))?;
        sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
            .execute(&mut admin)
            .await
            .map_err(err("drop an earlier floor database"))?;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .map_err(err("create the floor database"))?;
        let result = in_database(args, &floor_url).await;
        let dropped = sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .map_err(err("drop the floor database"));
        let _ = admin.close().await;
        let result = result?;
        dropped?;
        Ok(result)
    })
}

async fn in_database(args: &FloorArgs, url: &str) -> Result<FloorResult, String> {
    let template_id = args.jobs as i64 + 1;
    // The real store's own runtime, on a thread of its own: `prepare`
    // blocks on it.
    let prepare_url = url.to_owned();
    tokio::task::spawn_blocking(move || prepare(&prepare_url, template_id))
        .await
        .map_err(|e| format!("prepare: {e}"))??;
    let mut conn = PgConnection::connect(url).await.map_err(err("connect"))?;
    let payload = |event: &'static str| {
        sqlx::query_scalar::<_, String>(
            "SELECT payload FROM job_events WHERE job_id = $1 AND event = $2",
        )
        .bind(template_id)
        .bind(event)
    };
    let created = payload("job_created")
        .fetch_one(&mut conn)
        .await
        .map_err(err("template"))?;
    let changed = payload("worker_marked_complete")
        .fetch_one(&mut conn)
        .await
        .map_err(err("template"))?;
    // Seeded for creations too: the real run's database is not empty, and
    // plans made on an empty table (a generic plan is cached after five
    // runs of a prepared statement) would scan a table that then grows.
    {
        let mut tx = conn.begin().await.map_err(err("seed"))?;
        for chunk in (1..=args.jobs as i64).collect::<Vec<_>>().chunks(10_000) {
            create(&mut tx, chunk, &created).await?;
        }
        tx.commit().await.map_err(err("seed"))?;
    }
    // A settled start, whatever the seeding left (one statement each:
    // VACUUM cannot run in the implicit transaction of a multi-statement).
    for settle in [
        "VACUUM ANALYZE jobs",
        "VACUUM ANALYZE job_events",
        "CHECKPOINT",
    ] {
        sqlx::raw_sql(settle)
            .execute(&mut conn)
            .await
            .map_err(err(settle))?;
    }
    let cpu = proc_cpu_secs("self").unwrap_or(f64::NAN);
    let db_cpu = postgres_cpu_secs().unwrap_or(f64::NAN);
    let started = Instant::now();
    let payload_bytes = measure(&mut conn, args, &created, &changed).await?;
    let wall_secs = started.elapsed().as_secs_f64();
    let cpu_secs = proc_cpu_secs("self").unwrap_or(f64::NAN) - cpu;
    let db_cpu_secs = postgres_cpu_secs().unwrap_or(f64::NAN) - db_cpu;
    let _ = conn.close().await;
    Ok(FloorResult {
        ops: args.ops,
        batch: args.batch.max(1),
        wall_secs,
        cpu_secs,
        db_cpu_secs: Some(db_cpu_secs),
        payload_bytes,
    })
}

/// Inserts jobs `ids` in progress, each with its created event, notified.
async fn create(conn: &mut PgConnection, ids: &[i64], payload: &str) -> Result<(), String> {
    let clients: Vec<String> = ids.iter().map(|id| format!("c{id}")).collect();
    let workers: Vec<String> = ids.iter().map(|id| format!("w{id}")).collect();
    let at: Vec<DateTime<Utc>> = ids.iter().map(|_| Utc::now()).collect();
    let notes: Vec<String> = ids.iter().map(|id| format!("{id}:1")).collect();
    let (rows, events, notified): (i64, i64, i64) = sqlx::query_as(WRITE_CREATED)
        .bind(ids)
        .bind(&clients)
        .bind(&workers)
        .bind(&at)
        .bind(payload)
        .bind(EVENTS_CHANNEL)
        .bind(&notes)
        .fetch_one(&mut *conn)
        .await
        .map_err(err("create"))?;
    let n = ids.len() as i64;
    if (rows, events, notified) != (n, n, n) {
        return Err(format!("created {rows}/{events}/{notified} of {n}"));
    }
    Ok(())
}

async fn measure(
    conn: &mut PgConnection,
    args: &FloorArgs,
    created: &str,
    changed: &str,
) -> Result<usize, String> {
    let batch = args.batch.max(1).min(args.jobs);
    let job_of = |i: usize| (i % args.jobs) as i64 + 1;
    match args.op {
        FloorOp::Read => {
            for i in 0..args.ops {
                sqlx::query_as::<_, JobRow>(SELECT_JOB)
                    .bind(job_of(i))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(err("read"))?;
            }
            Ok(0)
        }
        FloorOp::Change => {
            let mut done = 0;
            while done < args.ops {
                let n = batch.min(args.ops - done);
                // Distinct ids in one batch (batch <= jobs), like the
                // writer's batches, which never change one job twice.
                let mut ids: Vec<i64> = (done..done + n).map(job_of).collect();
                ids.sort_unstable();
                ids.dedup();
                let mut tx = conn.begin().await.map_err(err("begin"))?;
                let jobs = lock(&mut tx, &ids).await?;
                let at = Utc::now();
                let mut c = Changes::default();
                for job in jobs {
                    c.push(job, at, changed);
                }
                let want = c.job_id.len() as i64;
                let counts: (i64, i64, i64) = c
                    .bind(sqlx::query_as(WRITE_CHANGES))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(err("write"))?;
                if counts != (want, want, want) {
                    return Err(format!("wrote {counts:?} of {want}"));
                }
                tx.commit().await.map_err(err("commit"))?;
                done += n;
            }
            Ok(changed.len())
        }
        FloorOp::Create => {
            let first = args.jobs as i64 + 10;
            let mut done = 0;
            while done < args.ops {
                let n = batch.min(args.ops - done);
                let ids: Vec<i64> = (first + done as i64..first + (done + n) as i64).collect();
                let mut tx = conn.begin().await.map_err(err("begin"))?;
                // The real writer looks every id up (and locks it) first.
                if !lock(&mut tx, &ids).await?.is_empty() {
                    return Err("a created job already exists".into());
                }
                create(&mut tx, &ids, created).await?;
                tx.commit().await.map_err(err("commit"))?;
                done += n;
            }
            Ok(created.len())
        }
    }
}

/// Locks and reads the rows of `ids`, as the real writer does first in
/// every batch's transaction.
async fn lock(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<JobRow>, String> {
    sqlx::query_as(LOCK_JOBS)
        .bind(ids)
        .fetch_all(conn)
        .await
        .map_err(err("lock"))
}

/// One batch of changes as column arrays.
#[derive(Default)]
struct Changes {
    job_id: Vec<i64>,
    worker_id: Vec<Option<String>>,
    status: Vec<&'static str>,
    payment_method: Vec<Option<String>>,
    payment_proof: Vec<Option<String>>,
    change_request_reason: Vec<Option<String>>,
    cancel_reason: Vec<Option<String>>,
    revision: Vec<i64>,
    at: Vec<DateTime<Utc>>,
    previous: Vec<i64>,
    actor: Vec<String>,
    payload: Vec<String>,
    note: Vec<String>,
}

type Counts<'q> =
    sqlx::query::QueryAs<'q, sqlx::Postgres, (i64, i64, i64), sqlx::postgres::PgArguments>;

impl Changes {
    fn push(&mut self, job: JobRow, at: DateTime<Utc>, payload: &str) {
        let revision = job.revision + 1;
        self.note.push(format!("{}:{revision}", job.job_id));
        self.job_id.push(job.job_id);
        self.actor.push(job.worker_id.clone().unwrap_or_default());
        self.worker_id.push(job.worker_id);
        self.status.push("awaiting_client_approval");
        self.payment_method.push(job.payment_method);
        self.payment_proof.push(job.payment_proof);
        self.change_request_reason.push(job.change_request_reason);
        self.cancel_reason.push(job.cancel_reason);
        self.revision.push(revision);
        self.at.push(at);
        self.previous.push(job.revision);
        self.payload.push(payload.to_owned());
    }

    fn bind<'q>(&'q self, query: Counts<'q>) -> Counts<'q> {
        query
            .bind(&self.job_id)
            .bind(&self.worker_id)
            .bind(&self.status)
            .bind(&self.payment_method)
            .bind(&self.payment_proof)
            .bind(&self.change_request_reason)
            .bind(&self.cancel_reason)
            .bind(&self.revision)
            .bind(&self.at)
            .bind(&self.previous)
            .bind(&self.actor)
            .bind(&self.payload)
            .bind(EVENTS_CHANNEL)
            .bind(&self.note)
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_floor_database_replaces_only_the_name() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "f").unwrap(),
            "postgres://postgres@127.0.0.1:5432/f"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "f").unwrap(),
            "postgres://u@h/f?sslmode=disable"
        );
        assert!(with_database("postgres://u@h", "f").is_err());
    }
}
