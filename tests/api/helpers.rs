//! Starting and stopping the real server for a test, and typed shortcuts.
//!
//! Every test gets its own database, so tests run in parallel. Tests are
//! written once as `async fn name(backend: Backend)` and instantiated per
//! backend by [`backend_tests!`].

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jobstatus::app::{App, Settings, StartError};
use jobstatus::auth::{JwtSettings, TokenKind, mint};
use jobstatus::grpc::ServeOptions;
use jobstatus::grpc::pb;
use jobstatus::grpc::pb::job_admin_service_client::JobAdminServiceClient;
use jobstatus::grpc::pb::job_service_client::JobServiceClient;
use jobstatus::jobs::Jobs;
use jobstatus::storage::StoreOptions;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
pub const CLIENT: &str = "client-1";
pub const WORKER: &str = "worker-1";
pub const OTHER_WORKER: &str = "worker-2";
pub const STRANGER: &str = "stranger-1";
pub const SERVICE: &str = "platform";

/// How long a test waits for a message before calling the stream stuck.
/// Not a performance bound: only a guard against hanging forever.
pub const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
}

/// Instantiates each `async fn name(backend: Backend)` once per backend.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        pub mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
    };
}

#[derive(Debug, Clone)]
pub struct TestOptions {
    pub heartbeat: Duration,
    pub watch_buffer: usize,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            watch_buffer: 256,
        }
    }
}

/// A database a test owns for its whole life (across restarts).
#[derive(Debug, Clone)]
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    _dir: Arc<TempDir>,
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
                    _dir: Arc::new(dir),
                }
            }
        }
    }
}

pub fn jwt() -> JwtSettings {
    JwtSettings {
        secret: SECRET.as_bytes().to_vec(),
        issuer: None,
        audience: None,
    }
}

pub fn token(sub: &str) -> String {
    mint(&jwt(), sub, TokenKind::User, chrono::Duration::hours(1)).expect("mint")
}

pub fn token_for(sub: &str, ttl: chrono::Duration) -> String {
    mint(&jwt(), sub, TokenKind::User, ttl).expect("mint")
}

pub fn service_token() -> String {
    mint(&jwt(), SERVICE, TokenKind::Service, chrono::Duration::hours(1)).expect("mint")
}

/// A running server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub jobs: Jobs,
    pub db: TestDb,
    pub options: TestOptions,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), StartError>>>,
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
            listen: "127.0.0.1:0".parse().expect("addr"),
            database_url: db.url.clone(),
            jwt: jwt(),
            heartbeat: options.heartbeat,
            store: StoreOptions::default(),
            watch_buffer: options.watch_buffer,
            serve: ServeOptions {
                health_interval: Duration::from_millis(200),
                ..ServeOptions::default()
            },
            shutdown_grace: Duration::from_secs(5),
        };
        let app = App::build(settings).await.expect("server starts");
        let addr = app.local_addr();
        let jobs = app.jobs().clone();
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            jobs,
            db,
            options,
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

    /// Stops this server and starts a new one on the same database.
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        Self::start(self.db.clone(), self.options.clone()).await
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
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

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    pub fn new(token: &str) -> Self {
        Self(Some(format!("Bearer {token}").parse().expect("ascii token")))
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
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type JobClient = JobServiceClient<InterceptedService<Channel, Bearer>>;
pub type AdminClient = JobAdminServiceClient<InterceptedService<Channel, Bearer>>;

pub type Watch = Streaming<pb::WatchJobResponse>;

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
pub fn assert_status<T: std::fmt::Debug>(result: Result<T, Status>, code: tonic::Code, needle: &str) {
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
