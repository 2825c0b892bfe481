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

/// Probes the database every `interval` and reports. The caller owns the
/// task and aborts it when the server stops.
pub fn spawn_probe(reporter: HealthReporter, jobs: Jobs, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let healthy = matches!(
                tokio::time::timeout(interval.max(Duration::from_secs(1)), jobs.store().ping())
                    .await,
                Ok(Ok(()))
            );
            let status = if healthy {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if last != Some(status) {
                if healthy {
                    tracing::info!("database reachable: SERVING");
                } else {
                    tracing::warn!("database unreachable: NOT_SERVING");
                }
                for service in SERVICES {
                    reporter.set_service_status(service, status).await;
                }
                last = Some(status);
            }
            tokio::time::sleep(interval).await;
        }
    })
}
