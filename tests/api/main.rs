//! The integration suite: the real server on a random port, driven by the
//! generated tonic clients. One binary, one module per concern, run by its
//! own runner ([`harness`]) so that tests needing PostgreSQL or grpcurl are
//! reported ignored, in the summary, where those are absent.

// Tests may unwrap: a panic is a failed assertion. (clippy's
// allow-unwrap-in-tests does not see this runner's trials as tests.)
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod harness;
mod helpers;

mod disk;
mod errors;
mod flows;
mod lifecycle;
mod my_jobs;
mod replicas;
mod watch;

fn main() -> std::process::ExitCode {
    let arguments = libtest_mimic::Arguments::from_args();
    let trials = [
        disk::trials(),
        errors::backend_trials(),
        errors::trials(),
        flows::backend_trials(),
        lifecycle::backend_trials(),
        lifecycle::trials(),
        my_jobs::backend_trials(),
        replicas::trials(),
        watch::backend_trials(),
    ]
    .into_iter()
    .flatten()
    .collect();
    libtest_mimic::run(&arguments, trials).exit_code()
}
