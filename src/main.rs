//! The `jobstatus` binary: parses the command line and wires. All logic
//! lives in the library.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use jobstatus::app::{self, App, Settings};
use jobstatus::auth::{TokenKind, mint};
use jobstatus::config::{Cli, Command, ServeArgs, TokenArgs};
use jobstatus::grpc::ServeOptions;
use jobstatus::grpc::listen;
use jobstatus::grpc::tls::TlsPem;
use jobstatus::storage::StoreOptions;
use jobstatus::{dev, telemetry};

/// With `--features jemalloc` (production builds): an idle connection holds
/// about a quarter less memory than with the system's malloc, and a call
/// spends less CPU (BENCHMARKS.md).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Token(args) => token(&args),
        Command::Serve(args) => {
            telemetry::init(args.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(serve(*args))
        }
    }
}

fn token(args: &TokenArgs) -> ExitCode {
    let settings = match args.jwt.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let kind = if args.service {
        TokenKind::Service
    } else {
        TokenKind::User
    };
    match mint(
        &settings,
        &args.sub,
        kind,
        chrono::Duration::seconds(args.ttl_secs),
    ) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every connection is a file descriptor: raise the soft limit to the hard
/// one, and say so if --max-connections cannot fit under it.
fn open_files_limit(max_connections: u64) {
    /// Descriptors the process needs besides connections (database, log,
    /// listener, runtime).
    const RESERVED: u64 = 64;
    match listen::raise_open_files_limit() {
        Ok(limit) if limit < max_connections.saturating_add(RESERVED) => tracing::warn!(
            open_files = limit,
            max_connections,
            "the open-files limit is below --max-connections; new connections will fail before that limit is reached (raise the hard limit, e.g. LimitNOFILE=)"
        ),
        Ok(limit) => tracing::info!(open_files = limit, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-files limit"),
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let database_url = args.database_url();
    if args.reset {
        match dev::reset(&database_url) {
            Ok(removed) => {
                for path in removed {
                    tracing::info!(path = %path.display(), "--reset removed");
                }
            }
            Err(e) => {
                tracing::error!("cannot reset the demo: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let (jwt, secret_source) = match (args.jwt.settings(), args.dev) {
        (Ok(s), _) => (s, dev::SecretSource::Given),
        (Err(_), true) if args.jwt.jwt_secret.is_empty() => {
            let path = dev::secret_path(&database_url);
            match dev::load_or_create_secret(&path) {
                Ok((secret, new)) => (
                    args.jwt.with_secrets(secret.into_bytes(), Vec::new()),
                    dev::SecretSource::Kept { path, new },
                ),
                Err(e) => {
                    tracing::error!("cannot keep the demo's secret in {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        (Err(e), _) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let cors = match args.cors_policy() {
        Ok(cors) => cors,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match TlsPem::load(cert, key) {
            Ok(pem) => Some(pem),
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let speaks_tls = tls.is_some();
    open_files_limit(args.max_connections);
    let settings = Settings {
        listen: args.listen,
        database_url,
        jwt: jwt.clone(),
        heartbeat: args.heartbeat(),
        store: StoreOptions {
            busy_timeout: Duration::from_millis(args.db_timeout_ms),
            pool_size: args.db_pool_size,
            read_connections: args.sqlite_readers,
            job_cache: args.sqlite_job_cache as usize,
            statement_timeout: Duration::from_millis(args.db_statement_timeout_ms),
            listener_backoff: Duration::from_millis(args.listener_backoff_ms),
            listener_backoff_max: Duration::from_millis(args.listener_backoff_max_ms),
            ..StoreOptions::default()
        },
        watch_buffer: usize::try_from(args.watch_buffer).unwrap_or(16),
        serve: ServeOptions {
            cors,
            tls,
            health_interval: Duration::from_millis(args.health_interval_ms),
            connections: args.connection_limits(),
            calls: args.call_limits(),
        },
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        metrics_listen: args.metrics_listen(),
    };
    let app = match App::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = app.metrics_addr() {
        tracing::info!("metrics at http://{addr}/metrics");
    }
    if args.dev
        && let Err(e) = dev::prepare(
            app.jobs(),
            &jwt,
            &secret_source,
            app.local_addr(),
            speaks_tls,
            &args.dev_page_url,
        )
        .await
    {
        tracing::error!("cannot prepare the demo job: {e}");
        return ExitCode::FAILURE;
    }
    match app.run(app::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
