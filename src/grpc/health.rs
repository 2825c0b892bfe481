//! Standard gRPC health checking (`grpc.health.v1`): SERVING while the
//! database answers, NOT_SERVING while it does not.

use std::time::Duration;

use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::jobs::Jobs;

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
        let mut last = Some(first);
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = jobs.shutdown_token().cancelled() => {
                    // Draining: tell load balancers to send new calls
                    // elsewhere while in-flight ones finish.
                    report(&reporter, ServingStatus::NotServing).await;
                    return;
                }
            }
            let status = probe(&jobs, interval).await;
            if last != Some(status) {
                report(&reporter, status).await;
                last = Some(status);
            }
        }
    });
    ProbeTask(handle)
}

/// Owns the probe task: dropping it (the server future ending, or being
/// dropped after the grace period) stops the probe.
#[derive(Debug)]
pub struct ProbeTask(JoinHandle<()>);

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn probe(jobs: &Jobs, interval: Duration) -> ServingStatus {
    let ping = tokio::time::timeout(interval.max(Duration::from_secs(1)), jobs.store().ping());
    if matches!(ping.await, Ok(Ok(()))) {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

async fn report(reporter: &HealthReporter, status: ServingStatus) {
    if status == ServingStatus::Serving {
        tracing::info!("database reachable: SERVING");
    } else {
        tracing::warn!("database unreachable: NOT_SERVING");
    }
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}
