//! `--dev`: a demo job and ready-to-paste tokens, so a new user can try every
//! RPC with grpcurl within a minute. Never used outside `--dev`.

use std::net::SocketAddr;

use crate::auth::{JwtSettings, TokenKind, mint};
use crate::domain::{Caller, Command, DomainError, JobId, Request, RequestId, ServiceId, UserId};
use crate::error::AppError;
use crate::jobs::Jobs;

pub const DEMO_JOB: i64 = 1;
pub const DEMO_CLIENT: &str = "client-alice";
pub const DEMO_WORKER: &str = "worker-bob";
pub const DEMO_STRANGER: &str = "stranger-eve";
pub const DEMO_SERVICE: &str = "platform";

/// A random 256-bit secret, hex encoded.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates the demo job unless it exists, then prints how to use it.
/// `tls`: the server speaks TLS, so the hints must not say `-plaintext`.
pub async fn prepare(
    jobs: &Jobs,
    jwt: &JwtSettings,
    addr: SocketAddr,
    tls: bool,
) -> Result<(), AppError> {
    let service = Caller::Service(ServiceId::parse("service", DEMO_SERVICE)?);
    let request = Request {
        job_id: JobId::new(DEMO_JOB)?,
        caller: service.clone(),
        command: Command::Create {
            client: UserId::parse("client_id", DEMO_CLIENT)?,
            worker: Some(UserId::parse("worker_id", DEMO_WORKER)?),
        },
        request_id: Some(RequestId::parse("request_id", "dev-demo-job")?),
        expected_revision: None,
    };
    let job = match jobs.execute(request).await {
        Ok(job) => job,
        Err(AppError::Domain(refusal)) if matches!(*refusal, DomainError::AlreadyExists(_)) => {
            jobs.get(&service, JobId::new(DEMO_JOB)?).await?
        }
        Err(other) => return Err(other),
    };
    let token =
        |sub: &str, kind| mint(jwt, sub, kind, chrono::Duration::hours(12)).map_err(AppError::from);
    let client = token(DEMO_CLIENT, TokenKind::User)?;
    let worker = token(DEMO_WORKER, TokenKind::User)?;
    let stranger = token(DEMO_STRANGER, TokenKind::User)?;
    let admin = token(DEMO_SERVICE, TokenKind::Service)?;
    // A dev certificate is usually self-signed: -insecure skips checking it
    // (-cacert <file> checks it instead).
    let (grpcurl, scheme) = if tls {
        ("grpcurl -insecure", "https")
    } else {
        ("grpcurl -plaintext", "http")
    };
    println!(
        "\njobstatus --dev on {addr}: demo job {DEMO_JOB} is {status} at revision {revision}\n\
         tokens (valid 12h, this run's secret only):\n\
         export CLIENT_TOKEN={client}\n\
         export WORKER_TOKEN={worker}\n\
         export STRANGER_TOKEN={stranger}\n\
         export SERVICE_TOKEN={admin}\n\
         try:\n  {grpcurl} {addr} list\n  \
         {grpcurl} -H \"authorization: Bearer $CLIENT_TOKEN\" -d '{{\"job_id\": {DEMO_JOB}}}' {addr} jobstatus.v1.JobService/WatchJob\n\
         browser demo page: (cd web && npm ci && npm run dev), then open\n  \
         http://localhost:5173/?api={scheme}://{addr}&job={DEMO_JOB} and paste a token\n",
        status = job.status,
        revision = job.revision,
    );
    Ok(())
}
