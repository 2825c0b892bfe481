//! Standard gRPC health checking (`grpc.health.v1`): SERVING while the
//! database answers and takes writes; NOT_SERVING while it does not, while
//! writes fail for a condition that blocks them (a full disk, a read-only
//! database), and while the server drains. Each is logged as what it is.

use std::time::Duration;

use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::jobs::Jobs;
use crate::storage::{Condition, StorageError};

/// The services whose health follows the database. "" is the whole server.
const SERVICES: [&str; 3] = [
    "",
    "jobstatus.v1.JobService",
    "jobstatus.v1.JobAdminService",
];

/// Probes the database every `interval` and reports, until the server
/// starts shutting down. The caller owns the returned task handle. The first probe is reported
/// before this returns, so a health check never finds the services
/// unregistered (NOT_FOUND) just because the server is young.
pub async fn spawn_probe(reporter: HealthReporter, jobs: Jobs, interval: Duration) -> ProbeTask {
    let first = probe(&jobs, interval).await;
    report(&reporter, first).await;
    let handle = tokio::spawn(async move {
        let mut last = first;
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = jobs.shutdown_token().cancelled() => {
                    // Draining: tell load balancers to send new calls
                    // elsewhere while in-flight ones finish.
                    report(&reporter, Health::ShuttingDown).await;
                    return;
                }
            }
            let health = probe(&jobs, interval).await;
            if last != health {
                report(&reporter, health).await;
                last = health;
            }
        }
    });
    ProbeTask(handle)
}

/// Owns the probe task: dropping it (the server future ending, or being
/// dropped after the grace period) stops the probe.
#[derive(Debug)]
pub struct ProbeTask(JoinHandle<()>);

impl ProbeTask {
    /// Once the server drains: lets the probe report NOT_SERVING (it ends
    /// by itself on the shutdown token), a second at most.
    pub async fn finish(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.0).await;
    }
}

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the probe found, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Serving,
    DatabaseUnreachable,
    WritesFailing(Condition),
    ShuttingDown,
}

impl Health {
    fn status(self) -> ServingStatus {
        match self {
            Health::Serving => ServingStatus::Serving,
            _ => ServingStatus::NotServing,
        }
    }
}

async fn probe(jobs: &Jobs, interval: Duration) -> Health {
    let ping = tokio::time::timeout(interval.max(Duration::from_secs(1)), jobs.store().ping());
    match ping.await {
        Ok(Ok(())) => match jobs.store().write_failure() {
            None => Health::Serving,
            Some(condition) => Health::WritesFailing(condition),
        },
        Ok(Err(StorageError::Unavailable(condition, _))) if condition.blocks_writes() => {
            Health::WritesFailing(condition)
        }
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "health probe failed");
            Health::DatabaseUnreachable
        }
        Err(_) => Health::DatabaseUnreachable,
    }
}

async fn report(reporter: &HealthReporter, health: Health) {
    match health {
        Health::Serving => tracing::info!("database reachable: SERVING"),
        Health::DatabaseUnreachable => tracing::warn!("database unreachable: NOT_SERVING"),
        Health::WritesFailing(condition) => tracing::warn!(
            condition = condition.name(),
            "database writes fail ({}): NOT_SERVING until a write succeeds",
            condition.name()
        ),
        Health::ShuttingDown => tracing::info!("shutting down: NOT_SERVING"),
    }
    let status = health.status();
    let serving = if status == ServingStatus::Serving {
        1.0
    } else {
        0.0
    };
    metrics::gauge!(crate::telemetry::metrics::HEALTH_SERVING).set(serving);
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}
