//! Command line and environment: every setting is a flag with a
//! `JOBSTATUS_*` variable behind it (env first, for containers). This module
//! only parses and validates; it never opens anything.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::JwtSettings;
use crate::grpc::CallLimits;
use crate::grpc::listen::ConnectionLimits;

/// Where `--dev` serves metrics unless --metrics-listen says otherwise.
pub const DEV_METRICS_PORT: u16 = 9464;

/// The smallest HS256 secret accepted: 256 bits, as RFC 7518 asks.
pub const MIN_SECRET_BYTES: usize = 32;

/// `jobstatus --version`: the allocator is part of what was built, so that
/// a benchmark (or an operator) can tell a production build from another.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (allocator: jemalloc)");
#[cfg(not(all(feature = "jemalloc", not(target_env = "msvc"))))]
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (allocator: system)");

#[derive(Debug, Parser)]
#[command(
    name = "jobstatus",
    version = VERSION,
    about = "Live, durable job status over gRPC"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(Box<ServeArgs>),
    /// Print a signed access token for a user or a service.
    Token(TokenArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct JwtArgs {
    /// HS256 secret shared with the token issuer (at least 32 bytes).
    /// Repeat the flag (or comma-separate the variable) to accept several
    /// while rotating: all verify, the first signs what this server mints.
    #[arg(
        long,
        env = "JOBSTATUS_JWT_SECRET",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub jwt_secret: Vec<String>,
    /// Required `iss` claim, if set.
    #[arg(long, env = "JOBSTATUS_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, if set.
    #[arg(long, env = "JOBSTATUS_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Seconds a token's `nbf` or `iat` may lie in the future (the issuer's
    /// clock running ahead of ours). `exp` is checked to the second.
    #[arg(long, env = "JOBSTATUS_JWT_LEEWAY_SECS", default_value_t = crate::auth::DEFAULT_LEEWAY_SECS, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub jwt_leeway_secs: u64,
    /// Verified tokens remembered at most, each until its `exp` (about 500
    /// bytes a token).
    #[arg(long, env = "JOBSTATUS_TOKEN_CACHE_SIZE", default_value_t = crate::auth::TOKEN_CACHE_SIZE, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub token_cache_size: u64,
}

impl JwtArgs {
    /// The settings, or why they are unusable.
    pub fn settings(&self) -> Result<JwtSettings, String> {
        let secrets: Vec<&str> = self
            .jwt_secret
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        let Some((first, others)) = secrets.split_first() else {
            return Err(
                "no JWT secret: pass --jwt-secret or set JOBSTATUS_JWT_SECRET (or use --dev)"
                    .into(),
            );
        };
        for (n, secret) in secrets.iter().enumerate() {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "JWT secret number {} is {} bytes; use at least {MIN_SECRET_BYTES}",
                    n + 1,
                    secret.len()
                ));
            }
        }
        Ok(self.with_secrets(
            first.as_bytes().to_vec(),
            others.iter().map(|s| s.as_bytes().to_vec()).collect(),
        ))
    }

    /// These flags' settings around `secret` (and `also_accept`).
    pub fn with_secrets(&self, secret: Vec<u8>, also_accept: Vec<Vec<u8>>) -> JwtSettings {
        JwtSettings {
            also_accept,
            cache_size: self.token_cache_size,
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            leeway_secs: self.jwt_leeway_secs,
            ..JwtSettings::new(secret)
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "JOBSTATUS_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// sqlite://path/to/file.db (created if missing), or
    /// postgres://user:password@host:5432/db (postgresql:// also works) to
    /// run several replicas on one PostgreSQL.
    /// Default: sqlite://jobstatus.db, or sqlite://jobstatus-dev.db with --dev.
    #[arg(long, env = "JOBSTATUS_DATABASE_URL")]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Log format; filter with RUST_LOG (default: info).
    #[arg(long, env = "JOBSTATUS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Try it out: local SQLite file, a generated secret (unless one is
    /// given), a demo job, and ready-to-paste tokens printed at start-up.
    #[arg(long, env = "JOBSTATUS_DEV")]
    pub dev: bool,
    /// With --dev: remove the demo database and its kept secret first, and
    /// start the demo over (SQLite only). An action, so no variable.
    #[arg(long, requires = "dev")]
    pub reset: bool,
    /// With --dev: the demo page the printed sign-in links open (where
    /// `npm run dev` serves web/, or wherever you host its build).
    #[arg(long, env = "JOBSTATUS_DEV_PAGE_URL", default_value = crate::dev::DEMO_PAGE, value_parser = crate::dev::parse_page_url)]
    pub dev_page_url: String,
    /// Seconds between heartbeats on idle watch streams.
    #[arg(long, env = "JOBSTATUS_HEARTBEAT_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_secs: u64,
    /// How long a database call may wait before failing with UNAVAILABLE.
    #[arg(long, env = "JOBSTATUS_DB_TIMEOUT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub db_timeout_ms: u64,
    /// SQLite: reader threads, each with its own read-only connection, for
    /// snapshots and replays (writes have one thread of their own).
    #[arg(long, env = "JOBSTATUS_SQLITE_READERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub sqlite_readers: u32,
    /// SQLite: jobs whose newest committed state is kept in memory (about
    /// 300 bytes each), so that opening a watch on a recently written or
    /// read job reads nothing from the file; 0 turns it off.
    #[arg(long, env = "JOBSTATUS_SQLITE_JOB_CACHE", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(0..=16_777_216))]
    pub sqlite_job_cache: u32,
    /// PostgreSQL: connections per replica for queries and transactions
    /// (the LISTEN session takes one more).
    #[arg(long, env = "JOBSTATUS_DB_POOL_SIZE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_pool_size: u32,
    /// PostgreSQL: the longest one statement may run (statement_timeout)
    /// before the call fails with UNAVAILABLE.
    #[arg(long, env = "JOBSTATUS_DB_STATEMENT_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub db_statement_timeout_ms: u64,
    /// PostgreSQL: first wait before reopening a broken LISTEN session;
    /// doubles per failure up to --listener-backoff-max-ms.
    #[arg(long, env = "JOBSTATUS_LISTENER_BACKOFF_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub listener_backoff_ms: u64,
    /// PostgreSQL: the longest wait between LISTEN reconnect attempts.
    #[arg(long, env = "JOBSTATUS_LISTENER_BACKOFF_MAX_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub listener_backoff_max_ms: u64,
    /// Events a watcher may fall behind before it is caught up from the log.
    // 16 covers a job's whole life (a handful of events) at ~0.5 KiB per
    // watched job; 256 cost 8 KiB per job, and a watcher that does fall
    // behind loses nothing: it is caught up from the log.
    #[arg(long, env = "JOBSTATUS_WATCH_BUFFER", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub watch_buffer: u64,
    /// HTTP/2 streams per connection (each call is one). Above
    /// --max-watches-per-user, so a browser's one HTTP/2 connection never
    /// queues a call behind its own watches.
    #[arg(long, env = "JOBSTATUS_MAX_STREAMS", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,
    /// Connections open at once; one more is closed as soon as it is accepted.
    #[arg(long, env = "JOBSTATUS_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_connections: u64,
    /// How long a new connection may take over its TLS handshake and its
    /// HTTP opening (HTTP/2 preface, or an HTTP/1.1 request head); also how
    /// long an HTTP/1.1 connection may wait for its next request head.
    #[arg(long, env = "JOBSTATUS_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..=300_000))]
    pub handshake_timeout_ms: u64,
    /// How long a request's message may take to arrive; a slower one is
    /// ended (DEADLINE_EXCEEDED) and what it had sent is freed.
    #[arg(long, env = "JOBSTATUS_REQUEST_READ_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..=300_000))]
    pub request_read_timeout_ms: u64,
    /// An HTTP/2 connection with no call open this long is closed (GOAWAY).
    #[arg(long, env = "JOBSTATUS_IDLE_TIMEOUT_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout_secs: u64,
    /// HTTP/2 PING and TCP keepalive interval on every connection.
    #[arg(long, env = "JOBSTATUS_KEEPALIVE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub keepalive_secs: u64,
    /// How long a PING may go unanswered before the connection is closed.
    #[arg(long, env = "JOBSTATUS_KEEPALIVE_TIMEOUT_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub keepalive_timeout_secs: u64,
    /// Largest HTTP/1.1 request head (request line and headers, token
    /// included); it also bounds each HTTP/1.1 connection's read buffer.
    #[arg(long, env = "JOBSTATUS_HTTP1_MAX_HEAD_BYTES", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(8192..=1_048_576))]
    pub http1_max_head_bytes: u32,
    /// Largest HTTP/2 request header list (HPACK size: names, values and
    /// 32 bytes per field).
    #[arg(long, env = "JOBSTATUS_HTTP2_MAX_HEADER_BYTES", default_value_t = 16_384, value_parser = clap::value_parser!(u32).range(4096..=1_048_576))]
    pub http2_max_header_bytes: u32,
    /// HTTP/2 flow-control window per stream: request bytes a client may
    /// send ahead of the server reading them.
    #[arg(long, env = "JOBSTATUS_HTTP2_STREAM_WINDOW_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(65_535..=16_777_216))]
    pub http2_stream_window_bytes: u32,
    /// HTTP/2 flow-control window per connection, over all its streams.
    #[arg(long, env = "JOBSTATUS_HTTP2_CONNECTION_WINDOW_BYTES", default_value_t = 1_048_576, value_parser = clap::value_parser!(u32).range(65_535..=1_073_741_824))]
    pub http2_connection_window_bytes: u32,
    /// HTTP/2 response bytes queued per stream for a client that does not read.
    #[arg(long, env = "JOBSTATUS_HTTP2_SEND_BUFFER_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub http2_send_buffer_bytes: u32,
    /// Largest request message JobService and JobAdminService accept
    /// (RESOURCE_EXHAUSTED beyond).
    #[arg(long, env = "JOBSTATUS_MAX_REQUEST_BYTES", default_value_t = 262_144, value_parser = clap::value_parser!(u64).range(1024..=67_108_864))]
    pub max_request_bytes: u64,
    /// Largest request message health checking and reflection accept
    /// (they need no token).
    #[arg(long, env = "JOBSTATUS_MAX_ANONYMOUS_REQUEST_BYTES", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(256..=1_048_576))]
    pub max_anonymous_request_bytes: u64,
    /// Calls without a valid token (health, reflection, refused tokens) one
    /// connection may have open at once.
    #[arg(long, env = "JOBSTATUS_MAX_ANONYMOUS_STREAMS", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_anonymous_streams: u64,
    /// Watch streams (WatchJob and WatchMyJobs together) one user may hold
    /// open in this process.
    #[arg(long, env = "JOBSTATUS_MAX_WATCHES_PER_USER", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_watches_per_user: u64,
    /// Watch streams one service token's subject may hold open in this process.
    #[arg(long, env = "JOBSTATUS_MAX_WATCHES_PER_SERVICE", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_watches_per_service: u64,
    /// How often health checking probes the database (and, while writes
    /// fail, tries one).
    #[arg(long, env = "JOBSTATUS_HEALTH_INTERVAL_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub health_interval_ms: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default; with
    /// --dev, on at 127.0.0.1:9464). Keep it on an address only your
    /// Prometheus reaches.
    #[arg(long, env = "JOBSTATUS_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Refused authentications logged per second at most (the first line
    /// after a flood says how many were left out).
    #[arg(long, env = "JOBSTATUS_AUTH_LOG_PER_SEC", default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub auth_log_per_sec: u32,
    /// Seconds in-flight calls get to finish on shutdown.
    #[arg(long, env = "JOBSTATUS_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// A browser origin allowed to call the API with grpc-web, such as
    /// https://app.example.com (repeat the flag, or comma-separate in the
    /// variable). No wildcards. --dev also allows any localhost origin.
    #[arg(
        long = "cors-origin",
        env = "JOBSTATUS_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub cors_origins: Vec<String>,
    /// PEM certificate chain: serve TLS (browsers then use HTTP/2).
    #[arg(long, env = "JOBSTATUS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "JOBSTATUS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl ServeArgs {
    pub fn database_url(&self) -> String {
        match (&self.database_url, self.dev) {
            (Some(url), _) => url.clone(),
            (None, true) => "sqlite://jobstatus-dev.db".into(),
            (None, false) => "sqlite://jobstatus.db".into(),
        }
    }

    /// Where to serve metrics: the flag, or with --dev a local default
    /// (port 9464, or any free port when another process has it: two demo
    /// servers must not fail each other's start).
    pub fn metrics_listen(&self) -> Option<SocketAddr> {
        if self.metrics_listen.is_some() || !self.dev {
            return self.metrics_listen;
        }
        let preferred = SocketAddr::from(([127, 0, 0, 1], DEV_METRICS_PORT));
        let free = std::net::TcpListener::bind(preferred).is_ok();
        Some(if free {
            preferred
        } else {
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs)
    }

    /// What one connection may hold, and for how long.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            request_read_timeout: Duration::from_millis(self.request_read_timeout_ms),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            keepalive_interval: Duration::from_secs(self.keepalive_secs),
            keepalive_timeout: Duration::from_secs(self.keepalive_timeout_secs),
            max_concurrent_streams: self.max_concurrent_streams,
            http1_max_head_bytes: self.http1_max_head_bytes,
            http2_max_header_bytes: self.http2_max_header_bytes,
            stream_window: self.http2_stream_window_bytes,
            connection_window: self.http2_connection_window_bytes,
            send_buffer: self.http2_send_buffer_bytes,
        }
    }

    /// What one call, or one caller, may hold.
    pub fn call_limits(&self) -> CallLimits {
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        CallLimits {
            max_request_bytes: size(self.max_request_bytes),
            max_anonymous_request_bytes: size(self.max_anonymous_request_bytes),
            max_anonymous_streams: size(self.max_anonymous_streams),
            max_watches_per_user: size(self.max_watches_per_user),
            max_watches_per_service: size(self.max_watches_per_service),
            auth_log_per_sec: self.auth_log_per_sec,
        }
    }

    /// The browser origins allowed by --cors-origin (and --dev).
    pub fn cors_policy(&self) -> Result<crate::grpc::web::CorsPolicy, String> {
        let origins = self
            .cors_origins
            .iter()
            .filter(|o| !o.trim().is_empty())
            .map(|o| crate::grpc::web::parse_origin(o))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::grpc::web::CorsPolicy {
            origins,
            allow_localhost: self.dev,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user (or, with --service, the service) the token names.
    #[arg(long)]
    pub sub: String,
    /// Mint a service token (admits to JobAdminService).
    #[arg(long)]
    pub service: bool,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: i64,
    #[command(flatten)]
    pub jwt: JwtArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_missing_secrets_are_refused_with_advice() {
        let args = JwtArgs {
            jwt_secret: Vec::new(),
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_secs: 30,
            token_cache_size: 100,
        };
        assert!(
            args.settings()
                .unwrap_err()
                .contains("JOBSTATUS_JWT_SECRET")
        );
        let args = JwtArgs {
            jwt_secret: vec!["short".into()],
            ..args
        };
        assert!(args.settings().unwrap_err().contains("at least 32"));
        // Several: the first signs, the others also verify; each is checked.
        let long = |c: char| c.to_string().repeat(32);
        let args = JwtArgs {
            jwt_secret: vec![long('a'), long('b')],
            ..args
        };
        let settings = args.settings().unwrap();
        assert_eq!(settings.secret, long('a').into_bytes());
        assert_eq!(settings.also_accept, vec![long('b').into_bytes()]);
        assert_eq!(settings.cache_size, 100);
        let args = JwtArgs {
            jwt_secret: vec![long('a'), "short".into()],
            ..args
        };
        assert!(args.settings().unwrap_err().contains("number 2"));
        let cli = Cli::try_parse_from([
            "jobstatus",
            "serve",
            "--jwt-secret",
            &long('a'),
            "--jwt-secret",
            &long('b'),
        ])
        .unwrap();
        let Command::Serve(serve) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(serve.jwt.jwt_secret.len(), 2);
    }

    #[test]
    fn cli_parses() {
        let cli = Cli::try_parse_from(["jobstatus", "serve", "--dev", "--listen", "127.0.0.1:0"])
            .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(args.database_url(), "sqlite://jobstatus-dev.db");
        assert!(Cli::try_parse_from(["jobstatus", "serve", "--heartbeat-secs", "0"]).is_err());
    }

    /// The flags' defaults are the library's defaults (which the tests and
    /// the README describe), and every limit refuses zero.
    #[test]
    fn limit_flags_default_to_the_documented_values() {
        let cli = Cli::try_parse_from(["jobstatus", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        let connections = args.connection_limits();
        let defaults = ConnectionLimits::default();
        assert_eq!(format!("{connections:?}"), format!("{defaults:?}"));
        let calls = args.call_limits();
        assert_eq!(format!("{calls:?}"), format!("{:?}", CallLimits::default()));
        assert_eq!(args.jwt.settings().map(|s| s.leeway_secs).ok(), None);
        assert_eq!(args.jwt.jwt_leeway_secs, 30);
        for flag in [
            "--max-connections",
            "--max-watches-per-user",
            "--max-anonymous-streams",
            "--max-concurrent-streams",
            "--idle-timeout-secs",
        ] {
            assert!(
                Cli::try_parse_from(["jobstatus", "serve", flag, "0"]).is_err(),
                "{flag} 0 must be refused"
            );
        }
        assert!(
            Cli::try_parse_from(["jobstatus", "serve", "--http1-max-head-bytes", "4096"]).is_err()
        );
    }

    #[test]
    fn sqlite_readers_are_bounded() {
        let cli = Cli::try_parse_from(["jobstatus", "serve", "--sqlite-readers", "2"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(args.sqlite_readers, 2);
        for bad in ["0", "257"] {
            assert!(
                Cli::try_parse_from(["jobstatus", "serve", "--sqlite-readers", bad]).is_err(),
                "--sqlite-readers {bad} must be refused"
            );
        }
    }

    #[test]
    fn sqlite_job_cache_is_bounded() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(["jobstatus", "serve"].iter().chain(args)).unwrap();
            let Command::Serve(args) = cli.command else {
                panic!("serve expected")
            };
            args.sqlite_job_cache
        };
        assert_eq!(parse(&[]), 65_536);
        assert_eq!(parse(&["--sqlite-job-cache", "0"]), 0);
        assert_eq!(parse(&["--sqlite-job-cache", "16777216"]), 16_777_216);
        assert!(
            Cli::try_parse_from(["jobstatus", "serve", "--sqlite-job-cache", "16777217"]).is_err(),
            "--sqlite-job-cache above its bound must be refused"
        );
    }

    #[test]
    fn postgres_tuning_has_defaults_and_bounds() {
        let cli = Cli::try_parse_from(["jobstatus", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(args.db_pool_size, 10);
        assert_eq!(args.sqlite_readers, 2);
        assert_eq!(args.db_statement_timeout_ms, 5000);
        assert_eq!(args.listener_backoff_ms, 200);
        assert_eq!(args.listener_backoff_max_ms, 5000);
        let cli = Cli::try_parse_from([
            "jobstatus",
            "serve",
            "--database-url",
            "postgres://u:p@db/jobstatus",
            "--db-pool-size",
            "32",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(args.database_url(), "postgres://u:p@db/jobstatus");
        assert_eq!(args.db_pool_size, 32);
        assert!(Cli::try_parse_from(["jobstatus", "serve", "--db-pool-size", "0"]).is_err());
    }

    #[test]
    fn cors_origins_repeat_and_wildcards_are_refused() {
        let cli = Cli::try_parse_from([
            "jobstatus",
            "serve",
            "--cors-origin",
            "https://a.example.com",
            "--cors-origin",
            "http://localhost:5173,https://B.example.com",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        let policy = args.cors_policy().unwrap();
        assert_eq!(
            policy.origins,
            [
                "https://a.example.com",
                "http://localhost:5173",
                "https://b.example.com"
            ]
        );
        assert!(!policy.allow_localhost);
        let cli = Cli::try_parse_from(["jobstatus", "serve", "--cors-origin", "*"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        assert!(args.cors_policy().unwrap_err().contains("wildcards"));
        // A certificate without its key (or the reverse) is refused.
        assert!(Cli::try_parse_from(["jobstatus", "serve", "--tls-cert", "c.pem"]).is_err());
    }
}
