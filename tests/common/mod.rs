//! What every integration test crate shares: the test secret and its
//! tokens, the server's test settings, and a running server's lifecycle
//! (start on a random port, stop gracefully, a channel to it).
//!
//! Included with `mod common;` by each test crate, which uses only part of
//! it, so unused items are allowed here.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use jobstatus::app::{App, Settings, StartError};
use jobstatus::auth::{JwtSettings, TokenKind, mint};
use jobstatus::grpc::ServeOptions;
use jobstatus::grpc::pb;
use jobstatus::grpc::pb::job_admin_service_client::JobAdminServiceClient;
use jobstatus::grpc::pb::job_service_client::JobServiceClient;
use jobstatus::storage::StoreOptions;
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
    JwtSettings {
        secret: SECRET.as_bytes().to_vec(),
        issuer: None,
        audience: None,
        leeway_secs: 30,
    }
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
    }
}

/// A server running in this test's runtime until stopped or dropped.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), StartError>>>,
}

impl Running {
    pub fn start(app: App) -> Self {
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
    JobAdminServiceClient::new(channel.clone())
        .create_job(authed(
            pb::CreateJobRequest {
                job_id: id,
                client_id: client.into(),
                worker_id: worker.into(),
                request_id: String::new(),
            },
            &service_token(),
        ))
        .await
        .expect("create job")
        .into_inner()
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
