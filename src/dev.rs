//! `--dev`: a demo job, ready-to-paste tokens and sign-in links, so a new
//! user can try every RPC with grpcurl or the demo page within a minute.
//! Never used outside `--dev`.
//!
//! The generated secret is kept beside the demo database (mode 0600), so
//! tokens printed by one run still work after a restart, as the demo page's
//! "reconnecting, then live again" promises. `--dev --reset` removes both
//! and starts the demo over.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::auth::{JwtSettings, TokenKind, mint};
use crate::domain::{
    Caller, Command, DomainError, Job, JobId, Request, RequestId, ServiceId, UserId,
};
use crate::error::AppError;
use crate::jobs::Jobs;

pub const DEMO_JOB: i64 = 1;
pub const DEMO_CLIENT: &str = "client-alice";
pub const DEMO_WORKER: &str = "worker-bob";
pub const DEMO_STRANGER: &str = "stranger-eve";
pub const DEMO_SERVICE: &str = "platform";
/// Where `npm run dev` serves the demo page (`--dev-page-url` changes it).
pub const DEMO_PAGE: &str = "http://localhost:5173/";

/// Checks `--dev-page-url`: an http(s) address without a query or fragment
/// (the sign-in links add their own).
pub fn parse_page_url(raw: &str) -> Result<String, String> {
    let url = raw.trim();
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{raw:?}: expected an http:// or https:// address"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{raw:?}: the address has no host"));
    }
    if url.contains(['?', '#', ' ']) {
        return Err(format!(
            "{raw:?}: no query, fragment or spaces; the sign-in links add ?api=, &job= and #token="
        ));
    }
    Ok(url.to_owned())
}

/// A random 256-bit secret, hex encoded.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SQLite file behind `database_url`, if it is one.
fn sqlite_file(database_url: &str) -> Option<PathBuf> {
    let path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or(path);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// Where `--dev` keeps its generated secret: beside the SQLite file
/// (`jobstatus-dev.db` → `jobstatus-dev.secret`), or in the working
/// directory for another database.
pub fn secret_path(database_url: &str) -> PathBuf {
    match sqlite_file(database_url) {
        Some(db) => db.with_extension("secret"),
        None => PathBuf::from("jobstatus-dev.secret"),
    }
}

/// The demo's secret: the one kept at `path`, or a new one written there
/// (readable by its owner only). Returns it and whether it is new.
pub fn load_or_create_secret(path: &Path) -> io::Result<(String, bool)> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().len() >= crate::config::MIN_SECRET_BYTES => {
            return Ok((text.trim().to_owned(), false));
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} does not hold a usable secret; remove it or use --dev --reset",
                    path.display()
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let secret = generate_secret();
    write_private(path, &secret)?;
    Ok((secret, true))
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    std::fs::write(path, format!("{text}\n"))
}

/// `--dev --reset`: removes the demo's SQLite files and its secret, and
/// returns what it removed. Refuses any other database: a reset must never
/// reach PostgreSQL.
pub fn reset(database_url: &str) -> io::Result<Vec<PathBuf>> {
    let Some(db) = sqlite_file(database_url) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--reset only removes a SQLite demo database; drop other databases yourself",
        ));
    };
    let mut candidates = vec![db.clone(), secret_path(database_url)];
    for suffix in ["-wal", "-shm"] {
        let mut name = db.clone().into_os_string();
        name.push(suffix);
        candidates.push(PathBuf::from(name));
    }
    let mut removed = Vec::new();
    for path in candidates {
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// The demo job as it is now, created if it does not exist yet.
async fn demo_job(jobs: &Jobs) -> Result<Job, AppError> {
    let service = Caller::Service(ServiceId::parse("service", DEMO_SERVICE)?);
    let id = JobId::new(DEMO_JOB)?;
    match jobs.get(&service, id).await {
        Ok(job) => return Ok(job),
        Err(AppError::Domain(refusal)) if matches!(*refusal, DomainError::NotFound(_)) => {}
        Err(other) => return Err(other),
    }
    let request = Request {
        job_id: id,
        caller: service.clone(),
        command: Command::Create {
            client: UserId::parse("client_id", DEMO_CLIENT)?,
            worker: Some(UserId::parse("worker_id", DEMO_WORKER)?),
        },
        request_id: Some(RequestId::parse("request_id", "dev-demo-job")?),
        expected_revision: None,
    };
    jobs.execute(request).await
}

/// Where the printed secret came from, for the start-up lines.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// Given with --jwt-secret or JOBSTATUS_JWT_SECRET.
    Given,
    /// Kept at this path (new this run, or from an earlier one).
    Kept { path: PathBuf, new: bool },
}

/// Creates the demo job unless it exists, then prints how to use it: its
/// real state, tokens, grpcurl hints and a sign-in link per role.
/// `tls`: the server speaks TLS, so the hints must not say `-plaintext`.
pub async fn prepare(
    jobs: &Jobs,
    jwt: &JwtSettings,
    secret: &SecretSource,
    addr: SocketAddr,
    tls: bool,
    page_url: &str,
) -> Result<(), AppError> {
    let job = demo_job(jobs).await?;
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
    let kept = match secret {
        SecretSource::Given => "signed with the secret you gave".to_owned(),
        SecretSource::Kept { path, new: true } => format!(
            "signed with a new secret kept in {} (restarts keep it; --dev --reset starts over)",
            path.display()
        ),
        SecretSource::Kept { path, new: false } => format!(
            "signed with the secret kept in {} since an earlier run (--dev --reset starts over)",
            path.display()
        ),
    };
    // The token rides in the fragment, which browsers never send: it stays
    // out of the page host's access log and the Referer header.
    let page =
        |token: &str| format!("{page_url}?api={scheme}://{addr}&job={DEMO_JOB}#token={token}");
    println!(
        "\njobstatus --dev on {addr}: demo job {DEMO_JOB} (client {DEMO_CLIENT}, worker {DEMO_WORKER}) is {status} at revision {revision}\n\
         tokens (valid 12h, {kept}):\n\
         export CLIENT_TOKEN={client}\n\
         export WORKER_TOKEN={worker}\n\
         export STRANGER_TOKEN={stranger}\n\
         export SERVICE_TOKEN={admin}\n\
         try:\n  {grpcurl} {addr} list\n  \
         {grpcurl} -H \"authorization: Bearer $CLIENT_TOKEN\" -d '{{\"job_id\": {DEMO_JOB}}}' {addr} jobstatus.v1.JobService/WatchJob\n\
         as the payment service, once the client approved with GCASH:\n  \
         {grpcurl} -H \"authorization: Bearer $SERVICE_TOKEN\" -d '{{\"job_id\": {DEMO_JOB}}}' {addr} jobstatus.v1.JobAdminService/ConfirmPayment\n\
         demo page: (cd web && npm ci && npm run dev), then sign in by opening\n  \
         as the client: {client_link}\n  \
         as the worker: {worker_link}\n",
        status = job.status,
        revision = job.revision,
        client_link = page(&client),
        worker_link = page(&worker),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_urls_are_plain_http_addresses() {
        assert_eq!(parse_page_url(DEMO_PAGE).unwrap(), DEMO_PAGE);
        assert_eq!(
            parse_page_url(" https://demo.example.com/jobs/ ").unwrap(),
            "https://demo.example.com/jobs/"
        );
        for bad in [
            "localhost:5173",
            "ftp://x/",
            "http://",
            "http:///path",
            "http://x/?job=1",
            "http://x/#top",
        ] {
            assert!(parse_page_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_secret_lives_beside_the_sqlite_file() {
        assert_eq!(
            secret_path("sqlite://jobstatus-dev.db"),
            PathBuf::from("jobstatus-dev.secret")
        );
        assert_eq!(
            secret_path("sqlite:///tmp/x/demo.db?mode=rwc"),
            PathBuf::from("/tmp/x/demo.secret")
        );
        assert_eq!(
            secret_path("postgres://u@h/db"),
            PathBuf::from("jobstatus-dev.secret")
        );
    }

    #[test]
    fn a_kept_secret_is_reused_and_private() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("demo.secret");
        let (first, new) = load_or_create_secret(&path).unwrap();
        assert!(new);
        let (again, new) = load_or_create_secret(&path).unwrap();
        assert!(!new);
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "short").unwrap();
        assert!(load_or_create_secret(&path).is_err());
    }

    #[test]
    fn reset_removes_the_demo_files_and_never_touches_postgres() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = dir.path().join("demo.db");
        let url = format!("sqlite://{}", db.display());
        for name in [
            "demo.db",
            "demo.db-wal",
            "demo.db-shm",
            "demo.secret",
            "other.db",
        ] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        let removed = reset(&url).unwrap();
        assert_eq!(removed.len(), 4);
        assert!(dir.path().join("other.db").exists());
        assert!(reset(&url).unwrap().is_empty(), "nothing left to remove");
        assert!(reset("postgres://u@h/db").is_err());
    }
}
