//! SQLite on a disk that fills up: writes are refused UNAVAILABLE naming
//! the full disk (so clients that retry UNAVAILABLE keep retrying), reads
//! and open watches keep working, health checking says NOT_SERVING, and
//! writes resume by themselves, with no restart, once space returns.

use std::time::{Duration, Instant};

use jobstatus::app::{App, Settings};
use jobstatus::grpc::ServeOptions;
use jobstatus::grpc::pb;
use jobstatus::grpc::pb::job_admin_service_client::JobAdminServiceClient;
use jobstatus::grpc::pb::watch_job_response::Kind;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::common::{Running, authed, service_token, token};
use crate::harness::{Need, Trial, trial};
use crate::helpers::*;

pub fn trials() -> Vec<Trial> {
    vec![trial(
        "disk::a_full_disk_is_unavailable_and_writes_resume_when_space_returns",
        &[Need::Tmpfs],
        a_full_disk_is_unavailable_and_writes_resume_when_space_returns,
    )]
}

async fn health(channel: &tonic::transport::Channel) -> i32 {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "jobstatus.v1.JobService".into(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

async fn health_becomes(channel: &tonic::transport::Channel, want: ServingStatus) {
    let deadline = Instant::now() + PATIENCE;
    while health(channel).await != want as i32 {
        assert!(Instant::now() < deadline, "health never became {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_full_disk_is_unavailable_and_writes_resume_when_space_returns() {
    let disk = SmallDisk::mount(1024 * 1024).expect("tmpfs");
    let url = format!("sqlite://{}", disk.path.join("jobs.db").display());
    let settings = Settings {
        heartbeat: Duration::from_millis(300),
        serve: ServeOptions {
            health_interval: Duration::from_millis(100),
            ..ServeOptions::default()
        },
        ..crate::common::settings(url)
    };
    let app = App::build(settings).await.expect("server starts");
    let mut running = Running::start(app);
    let channel = running.channel().await;
    let mut admin = JobAdminServiceClient::new(channel.clone());
    let create = |id: i64| {
        authed(
            pb::CreateJobRequest {
                job_id: id,
                client_id: CLIENT.into(),
                worker_id: WORKER.into(),
                request_id: format!("create-{id}"),
            },
            &service_token(),
        )
    };
    admin.create_job(create(1)).await.expect("job 1");
    let mut watch = jobstatus::grpc::pb::job_service_client::JobServiceClient::new(channel.clone())
        .watch_job(authed(
            pb::WatchJobRequest {
                job_id: 1,
                after_revision: None,
            },
            &token(CLIENT),
        ))
        .await
        .expect("watch opens")
        .into_inner();
    assert!(matches!(
        watch.message().await.unwrap().unwrap().kind,
        Some(Kind::Snapshot(_))
    ));
    health_becomes(&channel, ServingStatus::Serving).await;

    // Fill the disk with jobs until a write is refused.
    let mut refused = None;
    let mut next = 2;
    while next < 100_000 {
        match admin.create_job(create(next)).await {
            Ok(_) => next += 1,
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let refused = refused.expect("the disk filled up");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("disk is full"), "{refused:?}");
    assert!(
        refused.message().contains("nothing was written"),
        "{refused:?}"
    );

    // Reads still work, an open watch still gets its heartbeats, and
    // health checking tells load balancers.
    let job = jobstatus::grpc::pb::job_service_client::JobServiceClient::new(channel.clone())
        .get_job(authed(pb::GetJobRequest { job_id: 1 }, &token(CLIENT)))
        .await
        .expect("reads work on a full disk")
        .into_inner();
    assert_eq!(job.revision, 1);
    let beat = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .expect("a heartbeat in time")
        .expect("the watch is healthy")
        .expect("the watch is open");
    assert!(matches!(beat.kind, Some(Kind::Heartbeat(_))), "{beat:?}");
    health_becomes(&channel, ServingStatus::NotServing).await;
    let again = admin
        .create_job(create(next))
        .await
        .expect_err("still full");
    assert_eq!(again.code(), Code::Unavailable);

    // Space returns: health recovers by itself (its probe writes), the same
    // write succeeds with no restart, and the watcher sees the next change.
    disk.resize(16 * 1024 * 1024);
    health_becomes(&channel, ServingStatus::Serving).await;
    admin
        .create_job(create(next))
        .await
        .expect("writes resume once space returns");
    jobstatus::grpc::pb::job_service_client::JobServiceClient::new(channel.clone())
        .mark_complete(authed(mark(1), &token(WORKER)))
        .await
        .expect("mark complete");
    loop {
        let message = tokio::time::timeout(PATIENCE, watch.message())
            .await
            .expect("the event in time")
            .expect("healthy")
            .expect("open");
        match message.kind {
            Some(Kind::Heartbeat(_)) => continue,
            Some(Kind::Event(e)) => {
                assert_eq!(e.revision, 2);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    running.stop().await;
}
