//! What every integration test crate shares: the test secret and its
//! tokens, the server's test settings, a running server's lifecycle (start
//! on a random port, stop gracefully, a channel to it), calls by channel
//! and token, and the real binary as a child process.
//!
//! Included with `mod common;` by each test crate, which uses only part of
//! it, so unused items are allowed here.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobstatus::app::{App, Settings, StartError};
use jobstatus::auth::{JwtSettings, TokenKind, mint};
use jobstatus::grpc::ServeOptions;
use jobstatus::grpc::pb;
use jobstatus::grpc::pb::job_admin_service_client::JobAdminServiceClient;
use jobstatus::grpc::pb::job_service_client::JobServiceClient;
use jobstatus::storage::StoreOptions;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Request, Streaming};

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
/// The platform service's subject in service tokens.
pub const SERVICE: &str = "platform";

/// How long a test waits for a message before calling the stream stuck.
/// Not a performance bound: only a guard against hanging forever.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub fn jwt() -> JwtSettings {
    JwtSettings::new(SECRET.as_bytes().to_vec())
}

pub fn token(sub: &str) -> String {
    token_for(sub, chrono::Duration::hours(1))
}

pub fn token_for(sub: &str, ttl: chrono::Duration) -> String {
    mint(&jwt(), sub, TokenKind::User, ttl).expect("mint")
}

pub fn service_token() -> String {
    mint(
        &jwt(),
        SERVICE,
        TokenKind::Service,
        chrono::Duration::hours(1),
    )
    .expect("mint")
}

/// The server's settings for a test on `database_url`: a random port, the
/// test secret, and the shipped defaults otherwise.
pub fn settings(database_url: String) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url,
        jwt: jwt(),
        heartbeat: Duration::from_secs(15),
        store: StoreOptions::default(),
        watch_buffer: 16,
        serve: ServeOptions::default(),
        shutdown_grace: Duration::from_secs(5),
        metrics_listen: None,
    }
}

/// A server running in this test's runtime until stopped or dropped.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), StartError>>>,
}

/// The server's logs, shown when `TEST_LOG` is set (e.g. `TEST_LOG=1
/// cargo test some_test -- --nocapture`; `RUST_LOG` filters them), and
/// silent otherwise.
pub fn test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if std::env::var_os("TEST_LOG").is_none() {
        return;
    }
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

impl Running {
    pub fn start(app: App) -> Self {
        test_log();
        let addr = app.local_addr();
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Shuts down gracefully and waits until the server has stopped.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(PATIENCE, handle)
                .await
                .expect("server stops in time")
                .expect("server task")
                .expect("server ran cleanly");
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

// --------------------------------------------- calls by channel and token

/// `message` with `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

/// Creates a job as the platform would (a service token).
pub async fn create_job(channel: &Channel, id: i64, client: &str, worker: &str) -> pb::Job {
    // One request id for every attempt: a retry after UNAVAILABLE (a write
    // that outlasted --db-timeout-ms on a busy machine) is then safe, as
    // the status message tells clients.
    let request_id = format!("create-{id}-{}", rand::random::<u64>());
    let mut attempts = 0;
    loop {
        let answer = JobAdminServiceClient::new(channel.clone())
            .create_job(authed(
                pb::CreateJobRequest {
                    job_id: id,
                    client_id: client.into(),
                    worker_id: worker.into(),
                    request_id: request_id.clone(),
                },
                &service_token(),
            ))
            .await;
        match answer {
            Err(e) if e.code() == tonic::Code::Unavailable && attempts < 4 => attempts += 1,
            answer => return answer.expect("create job").into_inner(),
        }
    }
}

/// Assigns (or replaces) a job's worker (a service token).
pub async fn assign(channel: &Channel, id: i64, worker: &str) -> pb::Job {
    JobAdminServiceClient::new(channel.clone())
        .assign_worker(authed(
            pb::AssignWorkerRequest {
                job_id: id,
                worker_id: worker.into(),
                request_id: String::new(),
                expected_revision: None,
            },
            &service_token(),
        ))
        .await
        .expect("assign worker")
        .into_inner()
}

/// The worker marks the job complete.
pub async fn mark_complete(channel: &Channel, id: i64, worker: &str) -> pb::Job {
    JobServiceClient::new(channel.clone())
        .mark_complete(authed(
            pb::MarkCompleteRequest {
                job_id: id,
                request_id: String::new(),
                expected_revision: None,
            },
            &token(worker),
        ))
        .await
        .expect("mark complete")
        .into_inner()
}

/// The next message of a stream, within PATIENCE.
pub async fn next<T>(stream: &mut Streaming<T>) -> T {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("a message in time")
        .expect("stream healthy")
        .expect("stream open")
}

// ------------------------------------------------------- the real binary

/// The `jobstatus` binary, serving on a free port with `args`, its stderr
/// collected line by line.
pub struct Process {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    pub lines: Arc<std::sync::Mutex<Vec<String>>>,
    pub dir: TempDir,
}

impl Process {
    /// Starts `jobstatus serve` on a free port and a new SQLite file with
    /// `args`, logging JSON at info, and waits until it accepts.
    pub async fn start(args: &[&str]) -> Self {
        Self::start_logging("info", args).await
    }

    /// The same with `RUST_LOG=filter`.
    pub async fn start_logging(filter: &str, args: &[&str]) -> Self {
        let dir = TempDir::new().unwrap();
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        Self::launch(dir, &url, filter, args).await
    }

    /// The same, on `database_url`, keeping `dir` for as long as it runs.
    pub async fn start_on(dir: TempDir, database_url: &str, args: &[&str]) -> Self {
        Self::launch(dir, database_url, "info", args).await
    }

    async fn launch(dir: TempDir, database_url: &str, filter: &str, args: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobstatus"))
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--database-url")
            .arg(database_url)
            .args(args)
            .env("JOBSTATUS_JWT_SECRET", SECRET)
            .arg("--log-format")
            .arg("json")
            .env("RUST_LOG", filter)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut reader = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "the server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            addr,
            lines,
            dir,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id().unwrap()).unwrap()
    }

    pub fn logged(&self, needle: &str) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// CPU seconds (user and system) the process has used.
    pub fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line.
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    pub async fn get_job_code(&self, bearer: &str) -> tonic::Code {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await;
        let Ok(channel) = channel else {
            return tonic::Code::Unavailable;
        };
        let mut client = JobServiceClient::new(channel);
        let call = client.get_job(authed(pb::GetJobRequest { job_id: 1 }, bearer));
        match tokio::time::timeout(Duration::from_secs(3), call).await {
            Ok(Ok(_)) => tonic::Code::Ok,
            Ok(Err(status)) => status.code(),
            Err(_) => tonic::Code::DeadlineExceeded,
        }
    }
}
