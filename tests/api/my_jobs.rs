//! WatchMyJobs, every job of one user on one stream: snapshots then
//! changes per job, jobs joining and leaving as access changes, resume from
//! a map of revisions, lag and concurrency, and how the stream ends. On
//! both backends.

use std::collections::HashMap;

use jobstatus::grpc::pb;
use jobstatus::grpc::pb::job_service_client::JobServiceClient;
use jobstatus::grpc::pb::watch_my_jobs_response::Kind as MyKind;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use crate::common::{assign, authed, create_job, mark_complete, next};
use crate::helpers::*;

crate::backend_tests!(
    watch_my_jobs_snapshots_every_job_then_streams_their_events,
    jobs_join_when_assigned_and_leave_when_reassigned_away,
    watch_my_jobs_resumes_from_a_map_of_revisions,
    watch_my_jobs_misses_nothing_across_many_concurrent_changes,
    watch_my_jobs_ends_unauthenticated_when_the_token_expires,
    watch_my_jobs_lists_recent_jobs_and_resumes_jobs_beyond_the_listing,
    watch_my_jobs_stops_tracking_a_job_once_its_terminal_event_is_sent,
    watch_my_jobs_looks_up_resumed_jobs_beyond_its_listing,
);

async fn watch_my_jobs(
    channel: &Channel,
    user_token: &str,
    after: HashMap<i64, i64>,
) -> Result<Streaming<pb::WatchMyJobsResponse>, tonic::Status> {
    JobServiceClient::new(channel.clone())
        .watch_my_jobs(authed(
            pb::WatchMyJobsRequest {
                after_revisions: after,
            },
            user_token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn my_next(stream: &mut Streaming<pb::WatchMyJobsResponse>) -> MyKind {
    next(stream).await.kind.expect("a kind")
}

/// Skips heartbeats (an idle test may see them at any point).
async fn my_next_change(stream: &mut Streaming<pb::WatchMyJobsResponse>) -> MyKind {
    loop {
        match my_next(stream).await {
            MyKind::Heartbeat(_) => continue,
            other => return other,
        }
    }
}

fn snapshot_of(kind: MyKind) -> pb::Job {
    match kind {
        MyKind::Snapshot(s) => s.job.expect("job"),
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

async fn watch_my_jobs_snapshots_every_job_then_streams_their_events(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let channel = app.channel().await;
    create_job(&channel, 11, CLIENT, WORKER).await;
    create_job(&channel, 12, "client-other", WORKER).await;
    create_job(&channel, 13, CLIENT, OTHER_WORKER).await;
    create_job(&channel, 14, "client-other", "worker-other").await;

    let mut worker = watch_my_jobs(&channel, &token(WORKER), HashMap::new())
        .await
        .unwrap();
    let a = snapshot_of(my_next(&mut worker).await);
    let b = snapshot_of(my_next(&mut worker).await);
    // Listed most recently changed first; the order is not the point here.
    let mut ids = [a.job_id, b.job_id];
    ids.sort_unstable();
    assert_eq!(ids, [11, 12], "the worker's jobs");
    let MyKind::Heartbeat(caught_up) = my_next(&mut worker).await else {
        panic!("a heartbeat says the initial snapshots are done")
    };
    assert_eq!(caught_up.revision, 0);

    let mut client = watch_my_jobs(&channel, &token(CLIENT), HashMap::new())
        .await
        .unwrap();
    let mut ids = [
        snapshot_of(my_next(&mut client).await).job_id,
        snapshot_of(my_next(&mut client).await).job_id,
    ];
    ids.sort_unstable();
    assert_eq!(ids, [11, 13]);

    mark_complete(&channel, 12, WORKER).await;
    mark_complete(&channel, 11, WORKER).await;
    mark_complete(&channel, 14, "worker-other").await;
    for expected in [12, 11] {
        let MyKind::Event(event) = my_next_change(&mut worker).await else {
            panic!("event")
        };
        assert_eq!((event.job_id, event.revision), (expected, 2));
    }
    let MyKind::Event(event) = my_next_change(&mut client).await else {
        panic!("event")
    };
    assert_eq!(
        (event.job_id, event.revision),
        (11, 2),
        "job 12 is not the client's"
    );

    // Service tokens have no jobs of their own.
    let mut service = watch_my_jobs(&channel, &service_token(), HashMap::new())
        .await
        .unwrap();
    let refused = tokio::time::timeout(PATIENCE, service.message())
        .await
        .unwrap()
        .expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied);

    // Shutdown ends the stream with UNAVAILABLE and resume advice.
    app.stop().await;
    let end = loop {
        match tokio::time::timeout(PATIENCE, worker.message())
            .await
            .unwrap()
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("must end with a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Unavailable);
    assert!(
        end.message().contains("after_revisions"),
        "{}",
        end.message()
    );
}

async fn jobs_join_when_assigned_and_leave_when_reassigned_away(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let channel = app.channel().await;
    create_job(&channel, 21, CLIENT, WORKER).await;
    let mut bob = watch_my_jobs(&channel, &token(WORKER), HashMap::new())
        .await
        .unwrap();
    assert_eq!(snapshot_of(my_next(&mut bob).await).job_id, 21);
    let mut carol = watch_my_jobs(&channel, &token(OTHER_WORKER), HashMap::new())
        .await
        .unwrap();
    let MyKind::Heartbeat(_) = my_next(&mut carol).await else {
        panic!("carol has no jobs yet: only the caught-up heartbeat")
    };

    // An open job gets Bob as its worker: it joins his stream.
    create_job(&channel, 22, CLIENT, "").await;
    assign(&channel, 22, WORKER).await;
    let joined = snapshot_of(my_next_change(&mut bob).await);
    assert_eq!((joined.job_id, joined.revision), (22, 2));
    assert_eq!(joined.worker_id, WORKER);

    // Job 21 goes to Carol: it leaves Bob's stream with a JobLeft saying
    // why, and joins Carol's.
    assign(&channel, 21, OTHER_WORKER).await;
    let MyKind::Left(left) = my_next_change(&mut bob).await else {
        panic!("job 21 leaves bob's stream")
    };
    assert_eq!(left.job_id, 21);
    assert_eq!(left.revision, 2);
    assert_eq!(left.cause, pb::EventType::WorkerAssigned as i32);
    let joined = snapshot_of(my_next_change(&mut carol).await);
    assert_eq!((joined.job_id, joined.revision), (21, 2));

    // Nothing more of job 21 reaches Bob; job 22 still does.
    mark_complete(&channel, 21, OTHER_WORKER).await;
    mark_complete(&channel, 22, WORKER).await;
    let MyKind::Event(event) = my_next_change(&mut bob).await else {
        panic!("event")
    };
    assert_eq!((event.job_id, event.revision), (22, 3));
    let MyKind::Event(event) = my_next_change(&mut carol).await else {
        panic!("event")
    };
    assert_eq!((event.job_id, event.revision), (21, 3));
    app.stop().await;
}

async fn watch_my_jobs_resumes_from_a_map_of_revisions(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let channel = app.channel().await;
    create_job(&channel, 31, CLIENT, WORKER).await;
    create_job(&channel, 32, CLIENT, WORKER).await;
    create_job(&channel, 33, CLIENT, WORKER).await;
    create_job(&channel, 34, CLIENT, WORKER).await;
    mark_complete(&channel, 31, WORKER).await; // 31 at revision 2
    assign(&channel, 33, OTHER_WORKER).await; // 33 is no longer Bob's
    // 34 is new to this watcher: no entry in the map.

    let after = HashMap::from([(31, 1), (32, 1), (33, 1), (35, 1), (36, 99)]);
    let mut bob = watch_my_jobs(&channel, &token(WORKER), after)
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        match my_next(&mut bob).await {
            MyKind::Heartbeat(_) => break,
            MyKind::Event(e) => seen.push(format!("event {} r{}", e.job_id, e.revision)),
            MyKind::Snapshot(s) => {
                let job = s.job.unwrap();
                seen.push(format!("snapshot {} r{}", job.job_id, job.revision));
            }
            MyKind::Left(l) => seen.push(format!("left {} r{}", l.job_id, l.revision)),
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            // Replayed from the log, not a snapshot; nothing for 32 (up to
            // date); a snapshot for 34; 33, 35 and 36 are not Bob's.
            "event 31 r2",
            "left 33 r0",
            "left 35 r0",
            "left 36 r0",
            "snapshot 34 r1",
        ]
    );

    // A revision ahead of the job's: a RESYNC snapshot replaces it.
    let mut resync = watch_my_jobs(&channel, &token(WORKER), HashMap::from([(32, 50)]))
        .await
        .unwrap();
    let mut reasons = HashMap::new();
    loop {
        match my_next(&mut resync).await {
            MyKind::Heartbeat(_) => break,
            MyKind::Snapshot(s) => {
                reasons.insert(s.job.unwrap().job_id, s.reason);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(reasons[&32], pb::SnapshotReason::Resync as i32);
    assert_eq!(reasons[&31], pb::SnapshotReason::Initial as i32);

    // Lost and regained while away: the job starts over (RESYNC) rather
    // than leaving, and the events in between are not sent.
    create_job(&channel, 37, CLIENT, WORKER).await;
    assign(&channel, 37, OTHER_WORKER).await;
    assign(&channel, 37, WORKER).await;
    let mut back = watch_my_jobs(&channel, &token(WORKER), HashMap::from([(37, 1)]))
        .await
        .unwrap();
    let mut for_37 = Vec::new();
    loop {
        match my_next(&mut back).await {
            MyKind::Heartbeat(_) => break,
            MyKind::Snapshot(s) if s.job.as_ref().unwrap().job_id == 37 => {
                for_37.push((s.reason, s.job.unwrap().revision));
            }
            MyKind::Event(e) if e.job_id == 37 => panic!("no replay across the gap: {e:?}"),
            MyKind::Left(l) if l.job_id == 37 => panic!("37 is Bob's again: {l:?}"),
            _ => {}
        }
    }
    assert_eq!(for_37, [(pb::SnapshotReason::Resync as i32, 3)]);

    // Bad input is refused up front.
    let bad = watch_my_jobs(&channel, &token(WORKER), HashMap::from([(0, 1)])).await;
    assert_eq!(bad.err().map(|s| s.code()), Some(Code::InvalidArgument));
    let bad = watch_my_jobs(&channel, &token(WORKER), HashMap::from([(31, -1)])).await;
    assert_eq!(bad.err().map(|s| s.code()), Some(Code::InvalidArgument));
    app.stop().await;
}

async fn watch_my_jobs_misses_nothing_across_many_concurrent_changes(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let channel = app.channel().await;
    for id in 41..=60 {
        create_job(&channel, id, CLIENT, WORKER).await;
    }
    let mut client = watch_my_jobs(&channel, &token(CLIENT), HashMap::new())
        .await
        .unwrap();
    let mut last: HashMap<i64, i64> = HashMap::new();
    loop {
        match my_next(&mut client).await {
            MyKind::Snapshot(s) => {
                let job = s.job.unwrap();
                last.insert(job.job_id, job.revision);
            }
            MyKind::Heartbeat(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(last.len(), 20);
    // Mark all twenty complete at once, from many tasks.
    let mut tasks = Vec::new();
    for id in 41..=60 {
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            mark_complete(&channel, id, WORKER).await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut events = 0;
    while events < 20 {
        if let MyKind::Event(e) = my_next_change(&mut client).await {
            let previous = last.insert(e.job_id, e.revision).expect("a known job");
            assert_eq!(e.revision, previous + 1, "contiguous per job");
            events += 1;
        }
    }
    assert!(last.values().all(|&r| r == 2));
    app.stop().await;
}

async fn watch_my_jobs_ends_unauthenticated_when_the_token_expires(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let channel = app.channel().await;
    create_job(&channel, 71, CLIENT, WORKER).await;
    let short = token_for(WORKER, chrono::Duration::seconds(2));
    let mut stream = watch_my_jobs(&channel, &short, HashMap::new())
        .await
        .unwrap();
    assert_eq!(snapshot_of(my_next(&mut stream).await).job_id, 71);
    let end = loop {
        match tokio::time::timeout(PATIENCE, stream.message())
            .await
            .unwrap()
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("must end with a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Unauthenticated);
    app.stop().await;
}

/// A user with more jobs than one listing holds: the listing keeps the
/// recently changed ones (not the oldest ids), and a resumed job outside
/// the listing is looked up instead of being declared gone.
async fn watch_my_jobs_lists_recent_jobs_and_resumes_jobs_beyond_the_listing(backend: Backend) {
    use futures_util::StreamExt;

    let mut app = TestApp::spawn(backend).await;
    let channel = app.channel().await;
    let limit = i64::from(jobstatus::my_jobs::MAX_LISTED_JOBS);
    // The highest id, created first: the last by id, the oldest by time.
    let late = 5_000;
    create_job(&channel, late, CLIENT, WORKER).await;
    futures_util::stream::iter(1..=limit)
        .map(|id| {
            let channel = channel.clone();
            async move { create_job(&channel, id, CLIENT, WORKER).await }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    // Now the most recently changed (and still Alice's).
    assign(&channel, late, OTHER_WORKER).await;

    let mut alice = watch_my_jobs(&channel, &token(CLIENT), HashMap::new())
        .await
        .unwrap();
    let mut listed = Vec::new();
    loop {
        match my_next(&mut alice).await {
            MyKind::Heartbeat(_) => break,
            MyKind::Snapshot(s) => listed.push(s.job.unwrap().job_id),
            other => panic!("expected snapshots, got {other:?}"),
        }
    }
    assert_eq!(listed.len() as i64, limit);
    assert!(listed.contains(&late), "the recently changed job is listed");
    drop(alice);

    // Resume every job at revision 1: one of them is beyond the listing,
    // and none has left.
    let after: HashMap<i64, i64> = (1..=limit).chain([late]).map(|id| (id, 1)).collect();
    let mut resumed = watch_my_jobs(&channel, &token(CLIENT), after)
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        match my_next(&mut resumed).await {
            MyKind::Heartbeat(_) => break,
            MyKind::Event(e) => seen.push(format!("event {} r{}", e.job_id, e.revision)),
            MyKind::Snapshot(s) => {
                let job = s.job.unwrap();
                seen.push(format!("snapshot {} r{}", job.job_id, job.revision));
            }
            MyKind::Left(l) => seen.push(format!("left {} r{}", l.job_id, l.revision)),
        }
    }
    assert_eq!(seen, ["event 5000 r2"]);
    app.stop().await;
}

/// A finished job cannot change again: once WatchMyJobs has sent its
/// terminal event it no longer tracks it (no catch-up reads on lag, no
/// resynchronisation), while the caller keeps it.
async fn watch_my_jobs_stops_tracking_a_job_once_its_terminal_event_is_sent(backend: Backend) {
    use jobstatus::domain::JobId;

    let app = TestApp::spawn(backend).await;
    app.create_job(1).await;
    app.create_job(2).await;
    let mut stream = app
        .client(CLIENT)
        .await
        .watch_my_jobs(pb::WatchMyJobsRequest::default())
        .await
        .expect("WatchMyJobs opens")
        .into_inner();
    let mut next_kind = async || {
        tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("in time")
            .expect("a message")
            .expect("the stream goes on")
            .kind
            .expect("a kind")
    };
    let mut snapshots = 0;
    while !matches!(next_kind().await, MyKind::Heartbeat(_)) {
        snapshots += 1;
    }
    assert_eq!(snapshots, 2);
    let (one, two) = (
        JobId::new(1).expect("job ids"),
        JobId::new(2).expect("job ids"),
    );
    let tracked = app.jobs.hub().users().watched().1;
    assert!(tracked.contains(&one) && tracked.contains(&two));

    app.admin()
        .await
        .cancel_job(pb::CancelJobRequest {
            job_id: 1,
            reason: "no longer needed".into(),
            ..Default::default()
        })
        .await
        .expect("cancel");
    loop {
        match next_kind().await {
            MyKind::Event(e) if e.job_id == 1 => break,
            MyKind::Heartbeat(_) => {}
            other => panic!("expected the cancellation, got {other:?}"),
        }
    }
    let tracked = app.jobs.hub().users().watched().1;
    assert!(!tracked.contains(&one), "a cancelled job is not tracked");
    assert!(tracked.contains(&two), "an open job still is");
}

/// A resume map names jobs the listing does not show: one of the caller's
/// beyond the listing's cap (caught up from the log), another user's job
/// and a job that does not exist (both leave, saying nothing more).
async fn watch_my_jobs_looks_up_resumed_jobs_beyond_its_listing(backend: Backend) {
    use futures_util::StreamExt;

    let app = TestApp::spawn(backend).await;
    let limit = i64::from(jobstatus::my_jobs::MAX_LISTED_JOBS);
    // Created first and then finished (cancelled): the listing puts
    // unfinished jobs first, so this one falls beyond its cap.
    let beyond = 50_000;
    app.create_job(beyond).await;
    let admin = app.admin().await;
    admin
        .clone()
        .cancel_job(pb::CancelJobRequest {
            job_id: beyond,
            reason: "not needed".into(),
            ..Default::default()
        })
        .await
        .expect("cancel");
    futures_util::stream::iter(1..=limit)
        .map(|id| {
            let mut admin = admin.clone();
            async move {
                // As the UNAVAILABLE message asks: on a busy machine a
                // write may outlast --db-timeout-ms; the same request_id
                // makes the retry safe.
                for _ in 0..5 {
                    match admin
                        .create_job(pb::CreateJobRequest {
                            job_id: id,
                            client_id: CLIENT.into(),
                            worker_id: WORKER.into(),
                            request_id: format!("listing-{id}"),
                        })
                        .await
                    {
                        Err(e) if e.code() == Code::Unavailable => continue,
                        answer => return answer.expect("create"),
                    }
                }
                panic!("job {id}: still unavailable after 5 attempts")
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    app.create_job_with(60_000, STRANGER, OTHER_WORKER).await;

    let after: std::collections::HashMap<i64, i64> = (1..=limit)
        .map(|id| (id, 1))
        .chain([(beyond, 1), (60_000, 1), (70_000, 1)])
        .collect();
    let mut stream = app
        .client(CLIENT)
        .await
        .watch_my_jobs(pb::WatchMyJobsRequest {
            after_revisions: after,
        })
        .await
        .expect("WatchMyJobs opens")
        .into_inner();
    let mut seen = Vec::new();
    loop {
        let kind = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("in time")
            .expect("a message")
            .expect("the stream goes on")
            .kind
            .expect("a kind");
        match kind {
            MyKind::Heartbeat(_) => break,
            MyKind::Event(e) => seen.push(format!("event {} r{}", e.job_id, e.revision)),
            MyKind::Snapshot(s) => seen.push(format!("snapshot {}", s.job.expect("job").job_id)),
            MyKind::Left(l) => seen.push(format!("left {} r{}", l.job_id, l.revision)),
        }
    }
    seen.sort();
    assert_eq!(seen, ["event 50000 r2", "left 60000 r0", "left 70000 r0"]);
}
