//! The suite's test runner (libtest-mimic, `harness = false`): every test
//! is a trial, run on its own two-thread tokio runtime. A trial that needs
//! PostgreSQL, grpcurl or tmpfs mounts where they are absent is reported *ignored* in the
//! runner's own summary, with the reason as its kind, and a line at the
//! start says what is missing; `JOBSTATUS_REQUIRE_POSTGRES=1` and
//! `JOBSTATUS_REQUIRE_GRPCURL=1` (set by `.ci/run`) make such trials fail
//! instead. No test decides by itself to pass without running.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use libtest_mimic::Failed;
pub use libtest_mimic::Trial;

/// Something outside the suite a trial needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A PostgreSQL server at `JOBSTATUS_TEST_POSTGRES`.
    Postgres,
    /// The grpcurl command.
    Grpcurl,
    /// Mounting a small tmpfs (root, or CAP_SYS_ADMIN): a disk that fills.
    Tmpfs,
}

impl Need {
    fn kind(self) -> &'static str {
        match self {
            Need::Postgres => "needs PostgreSQL",
            Need::Grpcurl => "needs grpcurl",
            Need::Tmpfs => "needs tmpfs mounts",
        }
    }

    fn required_by(self) -> &'static str {
        match self {
            Need::Postgres => "JOBSTATUS_REQUIRE_POSTGRES",
            Need::Grpcurl => "JOBSTATUS_REQUIRE_GRPCURL",
            Need::Tmpfs => "JOBSTATUS_REQUIRE_TMPFS",
        }
    }

    fn required(self) -> bool {
        std::env::var(self.required_by()).is_ok_and(|v| v == "1")
    }
}

/// What this machine offers, probed once before any trial runs.
#[derive(Debug)]
pub struct Environment {
    postgres: Result<(), String>,
    grpcurl: Result<(), String>,
    tmpfs: Result<(), String>,
}

impl Environment {
    fn probe() -> Self {
        let postgres = tokio::runtime::Runtime::new()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(async {
                    use sqlx::Connection;
                    let conn =
                        tokio::time::timeout(Duration::from_secs(3), crate::helpers::pg_admin())
                            .await;
                    match conn {
                        Ok(Ok(conn)) => {
                            let _ = conn.close().await;
                            Ok(())
                        }
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("no answer within 3 s".to_owned()),
                    }
                })
            })
            .map_err(|e| {
                format!(
                    "PostgreSQL not reachable at {}: {e}",
                    jobstatus::storage::redact(&crate::helpers::postgres_server())
                )
            });
        let grpcurl = std::process::Command::new("grpcurl")
            .arg("-version")
            .output()
            .map_err(|e| format!("grpcurl not installed: {e}"))
            .map(|_| ());
        let tmpfs = crate::helpers::SmallDisk::mount(64 * 1024)
            .map(drop)
            .map_err(|e| format!("cannot mount a tmpfs: {e}"));
        Self {
            postgres,
            grpcurl,
            tmpfs,
        }
    }

    fn check(&self, need: Need) -> &Result<(), String> {
        match need {
            Need::Postgres => &self.postgres,
            Need::Grpcurl => &self.grpcurl,
            Need::Tmpfs => &self.tmpfs,
        }
    }

    /// Says on stderr what is missing and what that means for the run.
    fn report(&self) {
        for need in [Need::Postgres, Need::Grpcurl, Need::Tmpfs] {
            if let Err(why) = self.check(need) {
                if need.required() {
                    eprintln!(
                        "{why}: the trials that need it FAIL ({} is set)",
                        need.required_by()
                    );
                } else {
                    eprintln!(
                        "{why}: the trials that need it are reported ignored [{}]; set {}=1 to require them",
                        need.kind(),
                        need.required_by()
                    );
                }
            }
        }
    }
}

/// The probed environment.
pub fn environment() -> &'static Environment {
    static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let env = Environment::probe();
        env.report();
        env
    })
}

/// A trial named `name` that runs `test` on a fresh two-thread runtime,
/// or is ignored (or fails, when required) if something it needs is absent.
pub fn trial<F, Fut>(name: impl Into<String>, needs: &[Need], test: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let env = environment();
    let missing = needs.iter().copied().find(|n| env.check(*n).is_err());
    let name = name.into();
    match missing {
        Some(need) if !need.required() => Trial::test(name, || Ok(()))
            .with_kind(need.kind())
            .with_ignored_flag(true),
        Some(need) => {
            let why = env.check(need).clone().err().unwrap_or_default();
            Trial::test(name, move || {
                Err(Failed::from(format!(
                    "{why}, and {} is set",
                    need.required_by()
                )))
            })
            .with_kind(need.kind())
        }
        None => Trial::test(name, move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| Failed::from(format!("cannot start a runtime: {e}")))?;
            runtime.block_on(test());
            Ok(())
        }),
    }
}
