//! What watchers are promised: snapshot first, every revision exactly once
//! and in order (live, resumed, or recovered after lag), access enforced
//! for the life of the stream, and nothing held after a disconnect.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::helpers::*;
use jobstatus::grpc::pb::job_service_client::JobServiceClient;
use jobstatus::grpc::pb::watch_job_response::Kind;
use jobstatus::grpc::pb::{self, EventType, JobStatus, PaymentMethod, SnapshotReason};
use tonic::Code;
use tonic::transport::Endpoint;

crate::backend_tests!(
    snapshot_first_reflects_the_state_at_subscribe,
    resume_replays_missed_events_then_goes_live,
    resume_from_zero_replays_the_whole_log,
    resume_ahead_of_the_log_gets_a_resync_snapshot,
    lagging_watcher_is_caught_up_from_the_log,
    concurrent_changes_reach_every_watcher_in_order,
    repeats_publish_nothing,
    reassigned_worker_loses_the_stream,
    expired_token_ends_the_stream,
    idle_streams_get_heartbeats,
    disconnect_frees_the_topic,
    a_worker_assigned_later_may_replay_the_whole_log,
    resuming_a_finished_job_at_its_last_revision_ends_cleanly,
    a_change_committed_after_its_caller_gave_up_reaches_watchers,
);

/// Drives job `id` through `n` transitions (alternating MarkComplete and
/// RequestChanges), returning the final revision.
async fn churn(app: &TestApp, id: i64, n: usize) -> i64 {
    let mut worker = app.client(WORKER).await;
    let mut client = app.client(CLIENT).await;
    let mut revision = 0;
    for i in 0..n {
        let job = if i % 2 == 0 {
            worker.mark_complete(mark(id)).await
        } else {
            client.request_changes(changes(id, "again")).await
        };
        revision = job.expect("transition").into_inner().revision;
    }
    revision
}

/// Reads events until `last`, asserting each revision is exactly the next.
async fn expect_revisions(stream: &mut Watch, from: i64, last: i64) {
    for expected in from..=last {
        let e = event(stream).await;
        assert_eq!(e.revision, expected, "revisions must be contiguous");
    }
}

async fn snapshot_first_reflects_the_state_at_subscribe(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(1).await;
    churn(&app, 1, 2).await;
    let mut client = app.client(CLIENT).await;
    let mut w = watch(&mut client, 1, None).await;
    let s = snapshot(&mut w).await;
    assert_eq!(s.reason(), SnapshotReason::Initial);
    assert_eq!(s.job.expect("job").revision, 3);
    churn(&app, 1, 1).await;
    assert_eq!(event(&mut w).await.revision, 4);
}

async fn resume_replays_missed_events_then_goes_live(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(2).await;
    let mut client = app.client(CLIENT).await;
    {
        let mut w = watch(&mut client, 2, None).await;
        assert_eq!(snapshot(&mut w).await.job.expect("job").revision, 1);
    } // disconnected
    let last = churn(&app, 2, 3).await;
    assert_eq!(last, 4);
    let mut w = watch(&mut client, 2, Some(1)).await;
    // The replay comes straight from the log: no snapshot, no gap.
    for expected in 2..=4 {
        match next(&mut w).await {
            Ok(Some(Kind::Event(e))) => assert_eq!(e.revision, expected),
            other => panic!("expected event {expected}, got {other:?}"),
        }
    }
    // Then a heartbeat says the replay is over and names the revision.
    match next(&mut w).await {
        Ok(Some(Kind::Heartbeat(h))) => assert_eq!(h.revision, 4),
        other => panic!("expected the caught-up heartbeat, got {other:?}"),
    }
    client
        .request_changes(changes(2, "live again"))
        .await
        .expect("changes");
    assert_eq!(event(&mut w).await.revision, 5);
}

async fn resume_from_zero_replays_the_whole_log(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(3).await;
    churn(&app, 3, 2).await;
    let mut client = app.client(CLIENT).await;
    let mut w = watch(&mut client, 3, Some(0)).await;
    let first = event(&mut w).await;
    assert_eq!(first.event(), EventType::JobCreated);
    assert_eq!(first.revision, 1);
    expect_revisions(&mut w, 2, 3).await;
}

async fn resume_ahead_of_the_log_gets_a_resync_snapshot(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(4).await;
    let mut client = app.client(CLIENT).await;
    let mut w = watch(&mut client, 4, Some(99)).await;
    let s = snapshot(&mut w).await;
    assert_eq!(s.reason(), SnapshotReason::Resync);
    assert_eq!(s.job.expect("job").revision, 1);
    churn(&app, 4, 1).await;
    assert_eq!(event(&mut w).await.revision, 2);
}

async fn lagging_watcher_is_caught_up_from_the_log(backend: Backend) {
    // A two-event buffer, and a client whose HTTP/2 windows are tiny, so the
    // server cannot drain the watcher into socket buffers while it does not
    // read: its broadcast receiver must lag.
    let app = TestApp::spawn_with(
        backend,
        TestOptions {
            watch_buffer: 2,
            ..TestOptions::default()
        },
    )
    .await;
    app.create_job(5).await;
    let channel = Endpoint::from_shared(format!("http://{}", app.addr))
        .expect("uri")
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await
        .expect("connect");
    let mut slow = JobServiceClient::with_interceptor(channel, Bearer::new(&token(CLIENT)));
    let mut w = watch(&mut slow, 5, None).await;
    assert_eq!(snapshot(&mut w).await.job.expect("job").revision, 1);

    let last = churn(&app, 5, 120).await;
    assert_eq!(last, 121);
    expect_revisions(&mut w, 2, last).await;
    assert!(
        app.jobs.stats().catch_ups.load(Ordering::Relaxed) > 0,
        "the watcher should have lagged and been caught up from the log"
    );
    // Live again afterwards.
    churn(&app, 5, 1).await;
    assert_eq!(event(&mut w).await.revision, last + 1);
}

async fn concurrent_changes_reach_every_watcher_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    const JOBS: i64 = 12;
    const STEPS: usize = 10;
    let mut streams = Vec::new();
    for id in 1..=JOBS {
        app.create_job(id).await;
        for who in [CLIENT, WORKER] {
            let mut c = app.client(who).await;
            let mut w = watch(&mut c, id, None).await;
            snapshot(&mut w).await;
            streams.push((id, c, w));
        }
    }
    let app = std::sync::Arc::new(app);
    let writers: Vec<_> = (1..=JOBS)
        .map(|id| {
            let app = app.clone();
            tokio::spawn(async move { churn(&app, id, STEPS).await })
        })
        .collect();
    for w in writers {
        assert_eq!(w.await.expect("writer"), 1 + STEPS as i64);
    }
    for (_, _, w) in streams.iter_mut() {
        expect_revisions(w, 2, 1 + STEPS as i64).await;
    }
}

async fn repeats_publish_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(6).await;
    let mut worker = app.client(WORKER).await;
    let mut client = app.client(CLIENT).await;
    let mut w = watch(&mut client, 6, None).await;
    snapshot(&mut w).await;
    let first = worker
        .mark_complete(mark(6))
        .await
        .expect("mark")
        .into_inner();
    let again = worker
        .mark_complete(mark(6))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(first.revision, 2);
    assert_eq!(again.revision, 2, "a repeat changes nothing");
    client
        .approve_completion(approve(6, PaymentMethod::Gcash))
        .await
        .expect("approve");
    let same = client
        .approve_completion(approve(6, PaymentMethod::Gcash))
        .await
        .expect("same method again")
        .into_inner();
    assert_eq!(same.revision, 3);
    assert_status(
        client
            .approve_completion(approve(6, PaymentMethod::Cash))
            .await,
        Code::FailedPrecondition,
        "already approved with GCASH",
    );
    // The watcher saw exactly two events, then nothing more.
    assert_eq!(event(&mut w).await.revision, 2);
    assert_eq!(event(&mut w).await.revision, 3);
    app.admin()
        .await
        .cancel_job(pb::CancelJobRequest {
            job_id: 6,
            reason: "test over".into(),
            ..Default::default()
        })
        .await
        .expect("cancel");
    let e = event(&mut w).await;
    assert_eq!(e.revision, 4, "no event slipped in between");
    assert_eq!(e.event(), EventType::JobCancelled);
    assert_eq!(e.reason, "test over");
    end(&mut w).await.expect("cancelled is terminal");
}

async fn reassigned_worker_loses_the_stream(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(7).await;
    let mut worker = app.client(WORKER).await;
    let mut client = app.client(CLIENT).await;
    let mut ww = watch(&mut worker, 7, None).await;
    let mut cw = watch(&mut client, 7, None).await;
    snapshot(&mut ww).await;
    snapshot(&mut cw).await;
    app.admin()
        .await
        .assign_worker(pb::AssignWorkerRequest {
            job_id: 7,
            worker_id: OTHER_WORKER.into(),
            ..Default::default()
        })
        .await
        .expect("reassign");
    assert_status(
        end(&mut ww).await,
        Code::PermissionDenied,
        "no longer have access",
    );
    let e = event(&mut cw).await;
    assert_eq!(e.event(), EventType::WorkerAssigned);
    assert_eq!(e.job.expect("job").worker_id, OTHER_WORKER);
    // The old worker can no longer act or watch; the new one can.
    assert_status(
        worker.mark_complete(mark(7)).await,
        Code::PermissionDenied,
        "job 7",
    );
    let mut new_worker = app.client(OTHER_WORKER).await;
    let mut nw = watch(&mut new_worker, 7, None).await;
    assert_eq!(
        snapshot(&mut nw).await.job.expect("job").status(),
        JobStatus::InProgress
    );
    new_worker
        .mark_complete(mark(7))
        .await
        .expect("new worker marks");
}

async fn expired_token_ends_the_stream(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(8).await;
    let mut short = app
        .client_for(&token_for(CLIENT, chrono::Duration::seconds(2)))
        .await;
    let mut w = watch(&mut short, 8, None).await;
    snapshot(&mut w).await;
    assert_status(end(&mut w).await, Code::Unauthenticated, "expired");
}

async fn idle_streams_get_heartbeats(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        TestOptions {
            heartbeat: Duration::from_secs(1),
            ..TestOptions::default()
        },
    )
    .await;
    app.create_job(9).await;
    let mut client = app.client(CLIENT).await;
    let mut w = watch(&mut client, 9, None).await;
    snapshot(&mut w).await;
    for _ in 0..2 {
        match next(&mut w).await {
            Ok(Some(Kind::Heartbeat(h))) => {
                assert_eq!(h.revision, 1);
                assert!(h.server_time.is_some());
            }
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
    churn(&app, 9, 1).await;
    assert_eq!(event(&mut w).await.revision, 2);
}

async fn disconnect_frees_the_topic(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(10).await;
    let mut client = app.client(CLIENT).await;
    let mut w = watch(&mut client, 10, None).await;
    snapshot(&mut w).await;
    assert_eq!(app.jobs.hub().topic_count(), 1);
    drop(w);
    drop(client);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while app.jobs.hub().topic_count() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the topic should be removed once its last watcher disconnects"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_worker_assigned_later_may_replay_the_whole_log(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.admin()
        .await
        .create_job(pb::CreateJobRequest {
            job_id: 11,
            client_id: CLIENT.into(),
            ..Default::default()
        })
        .await
        .expect("create open job");
    app.admin()
        .await
        .assign_worker(pb::AssignWorkerRequest {
            job_id: 11,
            worker_id: WORKER.into(),
            ..Default::default()
        })
        .await
        .expect("assign");
    // Revision 1 names no worker, but the job is the worker's now.
    let mut worker = app.client(WORKER).await;
    let mut w = watch(&mut worker, 11, Some(0)).await;
    assert_eq!(event(&mut w).await.event(), EventType::JobCreated);
    assert_eq!(event(&mut w).await.event(), EventType::WorkerAssigned);
    worker.mark_complete(mark(11)).await.expect("mark");
    assert_eq!(event(&mut w).await.revision, 3);
}

async fn resuming_a_finished_job_at_its_last_revision_ends_cleanly(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_job(12).await;
    app.admin()
        .await
        .cancel_job(pb::CancelJobRequest {
            job_id: 12,
            ..Default::default()
        })
        .await
        .expect("cancel");
    let mut client = app.client(CLIENT).await;
    let mut w = watch(&mut client, 12, Some(2)).await;
    end(&mut w)
        .await
        .expect("nothing more can happen: a clean end");
}

/// Makes every later update of a job row take far longer than the tests'
/// short `--db-timeout-ms` (a trigger that burns about a second), so that
/// a change is committed after its caller stopped waiting for it.
async fn slow_down_job_updates(app: &TestApp) {
    match app.db.backend {
        Backend::Sqlite => {
            use sqlx::Connection;
            let mut conn = sqlite_connection(app).await;
            // A cross join of 6 000 rows with themselves: 36 million rows
            // the trigger compares, about a second of CPU (a WITH clause
            // cannot be used in a trigger).
            sqlx::raw_sql(
                "CREATE TABLE slow (x INTEGER); \
                 WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 6000) \
                 INSERT INTO slow SELECT x FROM n; \
                 CREATE TRIGGER slow_updates AFTER UPDATE ON jobs BEGIN \
                   SELECT count(*) FROM slow a, slow b WHERE a.x * b.x < 0; \
                 END;",
            )
            .execute(&mut conn)
            .await
            .expect("slow trigger");
            conn.close().await.expect("close");
        }
        Backend::Postgres => {
            let mut conn = app.db.pg().connect().await;
            sqlx::raw_sql(
                "CREATE FUNCTION slow_update() RETURNS trigger LANGUAGE plpgsql AS \
                   $$ BEGIN PERFORM pg_sleep(1.5); RETURN NEW; END $$; \
                 CREATE TRIGGER slow_updates AFTER UPDATE ON jobs \
                   FOR EACH ROW EXECUTE FUNCTION slow_update();",
            )
            .execute(&mut conn)
            .await
            .expect("slow trigger");
        }
    }
}

/// A change the database commits after its caller stopped waiting
/// (`--db-timeout-ms`) stands, so its watchers hear of it like any other:
/// the caller was told UNAVAILABLE, and a retry with a request id would
/// find it, but a watcher has nobody to retry for it.
async fn a_change_committed_after_its_caller_gave_up_reaches_watchers(backend: Backend) {
    let defaults = TestOptions::default();
    let options = TestOptions {
        store: jobstatus::storage::StoreOptions {
            busy_timeout: Duration::from_millis(400),
            ..defaults.store.clone()
        },
        ..defaults
    };
    let app = TestApp::spawn_with(backend, options).await;
    app.create_job(13).await;
    let mut client = app.client(CLIENT).await;
    let mut w = watch(&mut client, 13, None).await;
    let revision = snapshot(&mut w).await.job.expect("a job").revision;
    slow_down_job_updates(&app).await;

    let started = std::time::Instant::now();
    let status = app
        .client(WORKER)
        .await
        .mark_complete(mark(13))
        .await
        .expect_err("the caller gives up before the commit");
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "the caller waited {:?}: the trigger must outlast its timeout",
        started.elapsed()
    );

    let e = event(&mut w).await;
    assert_eq!(e.event(), EventType::WorkerMarkedComplete);
    assert_eq!(e.revision, revision + 1);
    let job = client
        .get_job(pb::GetJobRequest { job_id: 13 })
        .await
        .expect("the job")
        .into_inner();
    assert_eq!(job.revision, revision + 1, "the change stands");
}
