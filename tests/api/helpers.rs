//! Starting and stopping the real server for a test, and typed shortcuts.
//!
//! Every test gets its own database, so tests run in parallel. Tests are
//! written once as `async fn name(backend: Backend)` and instantiated per
//! backend by [`backend_tests!`].
//!
//! PostgreSQL tests use the server at `JOBSTATUS_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432`): each creates its own database
//! `jobstatus_t_<random>` there and drops it when the test ends. Where that
//! server is unreachable the runner ([`crate::harness`]) reports them
//! ignored, unless `JOBSTATUS_REQUIRE_POSTGRES=1` (set by `.ci/run`) makes
//! them fail.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jobstatus::app::{App, Settings};
use jobstatus::grpc::ServeOptions;
use jobstatus::grpc::pb;
use jobstatus::grpc::pb::job_admin_service_client::JobAdminServiceClient;
use jobstatus::grpc::pb::job_service_client::JobServiceClient;
use jobstatus::hub::pg_listen::ListenerStats;
use jobstatus::jobs::Jobs;
use jobstatus::storage::StoreOptions;
use tempfile::TempDir;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

pub use crate::common::{PATIENCE, SECRET, SERVICE, service_token, token, token_for};
use crate::common::{Running, settings};

pub const CLIENT: &str = "client-1";
pub const WORKER: &str = "worker-1";
pub const OTHER_WORKER: &str = "worker-2";
pub const STRANGER: &str = "stranger-1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Instantiates each `async fn name(backend: Backend)` once per backend:
/// `backend_trials()` lists them as `<module>::sqlite::name` and
/// `<module>::postgres::name` (the latter needs PostgreSQL).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        pub fn backend_trials() -> Vec<$crate::harness::Trial> {
            let module = module_path!().rsplit("::").next().unwrap_or_default();
            let mut trials = Vec::new();
            $(
                trials.push($crate::harness::trial(
                    format!("{module}::sqlite::{}", stringify!($name)),
                    &[],
                    || $name($crate::helpers::Backend::Sqlite),
                ));
                trials.push($crate::harness::trial(
                    format!("{module}::postgres::{}", stringify!($name)),
                    &[$crate::harness::Need::Postgres],
                    || $name($crate::helpers::Backend::Postgres),
                ));
            )*
            trials
        }
    };
}

#[derive(Debug, Clone)]
pub struct TestOptions {
    pub heartbeat: Duration,
    pub watch_buffer: usize,
    pub store: StoreOptions,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            // The shipped default (`--watch-buffer`).
            watch_buffer: 16,
            store: StoreOptions {
                // Several servers run at once on one PostgreSQL; keep each
                // one's share of its connections small.
                pool_size: 4,
                listener_backoff: Duration::from_millis(100),
                listener_backoff_max: Duration::from_millis(500),
                ..StoreOptions::default()
            },
        }
    }
}

/// A database a test owns for its whole life (across restarts).
#[derive(Debug, Clone)]
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    _dir: Option<Arc<TempDir>>,
    /// PostgreSQL: the database (and role) this test owns; dropped with
    /// the last clone.
    pub pg: Option<Arc<PgDatabase>>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = TempDir::new().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("jobstatus.db").display());
                Self {
                    backend,
                    url,
                    _dir: Some(Arc::new(dir)),
                    pg: None,
                }
            }
            Backend::Postgres => Self::postgres(false).await,
        }
    }

    /// A fresh PostgreSQL database; with `own_role`, owned by (and used
    /// through) a fresh login role, so a test can block that role's
    /// connections without touching any other test.
    pub async fn postgres(own_role: bool) -> Self {
        let pg = PgDatabase::create(own_role).await;
        Self {
            backend: Backend::Postgres,
            url: pg.url(),
            _dir: None,
            pg: Some(Arc::new(pg)),
        }
    }

    /// The PostgreSQL database, for tests that manipulate the server.
    pub fn pg(&self) -> &PgDatabase {
        self.pg.as_deref().expect("a PostgreSQL test database")
    }
}

/// The PostgreSQL server the tests use, without a database name.
pub fn postgres_server() -> String {
    std::env::var("JOBSTATUS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
        .trim_end_matches('/')
        .to_owned()
}

/// `postgres_server()` with `user` (if given) and `/database`.
fn postgres_url(user: Option<&str>, database: &str) -> String {
    let server = postgres_server();
    let (scheme, rest) = server.split_once("://").unwrap_or(("postgres", &server));
    match user {
        Some(user) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{user}@{host}/{database}")
        }
        None => format!("{scheme}://{rest}/{database}"),
    }
}

/// An administrative connection (to the `postgres` database).
pub async fn pg_admin() -> Result<sqlx::PgConnection, sqlx::Error> {
    use sqlx::Connection;
    let url = postgres_url(None, "postgres");
    match tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(&url)).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

/// A database (and maybe a role) created for one test, dropped on drop.
#[derive(Debug)]
pub struct PgDatabase {
    pub name: String,
    /// The role the server connects as, if the test has its own.
    pub role: Option<String>,
}

impl PgDatabase {
    async fn create(own_role: bool) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "jobstatus_t_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = pg_admin().await.expect("PostgreSQL admin connection");
        let role = own_role.then(|| name.clone());
        if let Some(role) = &role {
            pg_exec(&mut admin, &format!("CREATE ROLE \"{role}\" LOGIN")).await;
        }
        let owner = role
            .as_ref()
            .map(|r| format!(" OWNER \"{r}\""))
            .unwrap_or_default();
        pg_exec(&mut admin, &format!("CREATE DATABASE \"{name}\"{owner}")).await;
        Self { name, role }
    }

    /// The URL the server under test uses.
    pub fn url(&self) -> String {
        postgres_url(self.role.as_deref(), &self.name)
    }

    /// A connection to this database as the tests' administrative role.
    pub async fn connect(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&postgres_url(None, &self.name))
            .await
            .expect("connect to the test database")
    }

    /// Terminates this database's LISTEN sessions (every replica's
    /// listener); returns how many there were.
    pub async fn kill_listeners(&self) -> usize {
        let mut admin = pg_admin().await.expect("admin connection");
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'jobstatus-listener' \
               AND pid <> pg_backend_pid()",
        )
        .bind(&self.name)
        .fetch_all(&mut admin)
        .await
        .expect("terminate listeners");
        killed.len()
    }

    /// Backend pids of this database's LISTEN sessions.
    pub async fn listener_pids(&self) -> Vec<i32> {
        let mut admin = pg_admin().await.expect("admin connection");
        sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'jobstatus-listener' ORDER BY pid",
        )
        .bind(&self.name)
        .fetch_all(&mut admin)
        .await
        .expect("list listeners")
    }

    /// An outage for this test only: its role may not log in and every
    /// connection it has is terminated. Needs `TestDb::postgres(true)`.
    pub async fn block(&self) {
        let role = self.role.as_deref().expect("a test with its own role");
        let mut admin = pg_admin().await.expect("admin connection");
        pg_exec(&mut admin, &format!("ALTER ROLE \"{role}\" NOLOGIN")).await;
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
            .bind(role)
            .execute(&mut admin)
            .await
            .expect("terminate the role's connections");
    }

    /// Ends the outage started by [`block`](Self::block).
    pub async fn unblock(&self) {
        let role = self.role.as_deref().expect("a test with its own role");
        let mut admin = pg_admin().await.expect("admin connection");
        pg_exec(&mut admin, &format!("ALTER ROLE \"{role}\" LOGIN")).await;
    }
}

async fn pg_exec(conn: &mut sqlx::PgConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

impl Drop for PgDatabase {
    /// Drops the database (terminating whatever still uses it) and the
    /// role, on a thread of its own: async code cannot run in `drop`.
    fn drop(&mut self) {
        let name = self.name.clone();
        let role = self.role.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = pg_admin().await.map_err(|e| e.to_string())?;
                let mut sql = vec![format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")];
                if let Some(role) = &role {
                    sql.push(format!("DROP ROLE IF EXISTS \"{role}\""));
                }
                for statement in sql {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                        .execute(&mut admin)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

/// A running server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub jobs: Jobs,
    /// The PostgreSQL listener's counters (zero on SQLite).
    pub listener: Arc<ListenerStats>,
    pub db: TestDb,
    pub options: TestOptions,
    running: Running,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, TestOptions::default()).await
    }

    pub async fn spawn_with(backend: Backend, options: TestOptions) -> Self {
        let db = TestDb::new(backend).await;
        Self::start(db, options).await
    }

    /// Starts a server on `db` (fresh or used before).
    pub async fn start(db: TestDb, options: TestOptions) -> Self {
        let settings = Settings {
            heartbeat: options.heartbeat,
            store: options.store.clone(),
            watch_buffer: options.watch_buffer,
            serve: ServeOptions {
                health_interval: Duration::from_millis(200),
                ..ServeOptions::default()
            },
            ..settings(db.url.clone())
        };
        let app = App::build(settings).await.expect("server starts");
        let jobs = app.jobs().clone();
        let listener = app.listener_stats();
        let running = Running::start(app);
        Self {
            addr: running.addr,
            jobs,
            listener,
            db,
            options,
            running,
        }
    }

    /// Shuts down gracefully and waits until the server has stopped.
    pub async fn stop(&mut self) {
        self.running.stop().await;
    }

    /// Stops this server and starts a new one on the same database.
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        Self::start(self.db.clone(), self.options.clone()).await
    }

    pub async fn channel(&self) -> Channel {
        self.running.channel().await
    }

    pub async fn client_for(&self, token: &str) -> JobClient {
        JobServiceClient::with_interceptor(self.channel().await, Bearer::new(token))
    }

    pub async fn client(&self, sub: &str) -> JobClient {
        self.client_for(&token(sub)).await
    }

    pub async fn admin(&self) -> AdminClient {
        JobAdminServiceClient::with_interceptor(self.channel().await, Bearer::new(&service_token()))
    }

    /// Creates a job with a worker (IN_PROGRESS) as the platform would.
    pub async fn create_job(&self, id: i64) -> pb::Job {
        self.create_job_with(id, CLIENT, WORKER).await
    }

    pub async fn create_job_with(&self, id: i64, client: &str, worker: &str) -> pb::Job {
        self.admin()
            .await
            .create_job(pb::CreateJobRequest {
                job_id: id,
                client_id: client.into(),
                worker_id: worker.into(),
                request_id: String::new(),
            })
            .await
            .expect("create job")
            .into_inner()
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    pub fn new(token: &str) -> Self {
        Self(Some(
            format!("Bearer {token}").parse().expect("ascii token"),
        ))
    }

    /// Sends `value` verbatim as the authorization header.
    pub fn raw(value: &str) -> Self {
        Self(Some(value.parse().expect("ascii")))
    }

    /// Sends no authorization header at all.
    pub fn none() -> Self {
        Self(None)
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type JobClient = JobServiceClient<InterceptedService<Channel, Bearer>>;
pub type AdminClient = JobAdminServiceClient<InterceptedService<Channel, Bearer>>;

pub type Watch = Streaming<pb::WatchJobResponse>;

/// A connection of the test's own to the server's SQLite file, as another
/// process would open it.
pub async fn sqlite_connection(app: &TestApp) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    let path = app.db.url.trim_start_matches("sqlite://").to_owned();
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .expect("second connection")
}

/// Opens WatchJob; `after` resumes from a revision.
pub async fn watch(client: &mut JobClient, job_id: i64, after: Option<i64>) -> Watch {
    client
        .watch_job(pb::WatchJobRequest {
            job_id,
            after_revision: after,
        })
        .await
        .expect("watch opens")
        .into_inner()
}

/// The next message, or the status the stream ended with (`Ok(None)` for a
/// clean end).
pub async fn next(stream: &mut Watch) -> Result<Option<pb::watch_job_response::Kind>, Status> {
    let message = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("a message or the end of the stream in time")?;
    Ok(message.map(|m| m.kind.expect("every message has a kind")))
}

/// The next message that is not a heartbeat.
pub async fn next_change(
    stream: &mut Watch,
) -> Result<Option<pb::watch_job_response::Kind>, Status> {
    loop {
        match next(stream).await? {
            Some(pb::watch_job_response::Kind::Heartbeat(_)) => continue,
            other => return Ok(other),
        }
    }
}

pub async fn snapshot(stream: &mut Watch) -> pb::Snapshot {
    match next_change(stream).await {
        Ok(Some(pb::watch_job_response::Kind::Snapshot(s))) => s,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

pub async fn event(stream: &mut Watch) -> pb::JobEvent {
    match next_change(stream).await {
        Ok(Some(pb::watch_job_response::Kind::Event(e))) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// The status the stream ends with, skipping heartbeats; panics on data.
pub async fn end(stream: &mut Watch) -> Result<(), Status> {
    match next_change(stream).await {
        Ok(None) => Ok(()),
        Err(status) => Err(status),
        Ok(Some(other)) => panic!("expected the stream to end, got {other:?}"),
    }
}

pub fn mark(job_id: i64) -> pb::MarkCompleteRequest {
    pb::MarkCompleteRequest {
        job_id,
        ..Default::default()
    }
}

pub fn approve(job_id: i64, method: pb::PaymentMethod) -> pb::ApproveCompletionRequest {
    pb::ApproveCompletionRequest {
        job_id,
        payment_method: method.into(),
        ..Default::default()
    }
}

pub fn changes(job_id: i64, reason: &str) -> pb::RequestChangesRequest {
    pb::RequestChangesRequest {
        job_id,
        reason: reason.into(),
        ..Default::default()
    }
}

pub fn proof(job_id: i64, proof_ref: &str) -> pb::SubmitPaymentProofRequest {
    pb::SubmitPaymentProofRequest {
        job_id,
        proof_ref: proof_ref.into(),
        ..Default::default()
    }
}

pub fn confirm(job_id: i64) -> pb::ConfirmPaymentRequest {
    pb::ConfirmPaymentRequest {
        job_id,
        ..Default::default()
    }
}

/// Asserts a call failed with `code` and a message containing `needle`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: tonic::Code,
    needle: &str,
) {
    match result {
        Ok(v) => panic!("expected {code:?}, got success {v:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "message: {}", status.message());
            assert!(
                status.message().contains(needle),
                "message {:?} should contain {needle:?}",
                status.message()
            );
        }
    }
}

/// A tmpfs of a given size, mounted in a temporary directory for one test
/// and unmounted when dropped: a disk that fills up, and that can be grown
/// again (`resize`) while the server runs.
#[derive(Debug)]
pub struct SmallDisk {
    pub path: std::path::PathBuf,
    _dir: TempDir,
}

impl SmallDisk {
    pub fn mount(bytes: u64) -> Result<Self, String> {
        let dir = TempDir::new().map_err(|e| e.to_string())?;
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&path)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Self { path, _dir: dir })
    }

    /// Grows (or shrinks) the filesystem in place.
    pub fn resize(&self, bytes: u64) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.path)
            .status()
            .expect("mount runs");
        assert!(status.success(), "remount {}", self.path.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a server still closing may hold files open.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}
