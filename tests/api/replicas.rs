//! Several replicas on one PostgreSQL: fan-out through LISTEN/NOTIFY
//! (including a killed listener), conflicting commands through different
//! replicas, and a database outage. PostgreSQL only: each test skips
//! loudly where the server is unreachable (see `helpers`).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::helpers::*;
use jobstatus::domain::JobId;
use jobstatus::grpc::pb::watch_job_response::Kind;
use jobstatus::grpc::pb::{self, PaymentMethod};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// Short heartbeats, so "nothing more arrived" is quick to observe.
fn options() -> TestOptions {
    TestOptions {
        heartbeat: Duration::from_secs(1),
        ..TestOptions::default()
    }
}

/// Two servers on one fresh database.
async fn two_replicas(options: TestOptions) -> (TestApp, TestApp) {
    let db = TestDb::postgres(false).await;
    let a = TestApp::start(db.clone(), options.clone()).await;
    let b = TestApp::start(db, options).await;
    (a, b)
}

/// Opens a watch and returns it after its snapshot (at `revision`).
async fn watcher(app: &TestApp, user: &str, job: i64, revision: i64) -> Watch {
    let mut client = app.client(user).await;
    let mut w = watch(&mut client, job, None).await;
    let s = snapshot(&mut w).await;
    assert_eq!(s.job.expect("job").revision, revision);
    w
}

/// Reads events `from..=last`, each exactly once and in order, then
/// asserts that nothing else follows: the next message is a heartbeat at
/// `last` (a duplicate would arrive before it).
async fn expect_exactly(stream: &mut Watch, from: i64, last: i64) {
    for expected in from..=last {
        let e = event(stream).await;
        assert_eq!(e.revision, expected, "every revision once, in order");
    }
    match next(stream).await {
        Ok(Some(Kind::Heartbeat(h))) => assert_eq!(h.revision, last),
        other => panic!("expected only a heartbeat after revision {last}, got {other:?}"),
    }
}

/// One transition of job `id` through `app`: even steps MarkComplete (the
/// worker), odd steps RequestChanges (the client). Returns the revision.
async fn step(app: &TestApp, id: i64, i: usize) -> i64 {
    let job = if i % 2 == 0 {
        app.client(WORKER).await.mark_complete(mark(id)).await
    } else {
        app.client(CLIENT)
            .await
            .request_changes(changes(id, "again"))
            .await
    };
    job.expect("transition").into_inner().revision
}

/// The stored log of `id` is exactly revisions 1..=n; returns n.
async fn assert_gap_free_log(app: &TestApp, id: i64) -> i64 {
    let events = app
        .jobs
        .store()
        .events_after(JobId::new(id).expect("id"), 0, 100_000)
        .await
        .expect("read the log");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.revision(), i as i64 + 1, "log revisions are 1, 2, 3…");
    }
    let job = app
        .jobs
        .store()
        .get_job(JobId::new(id).expect("id"))
        .await
        .expect("read the job")
        .expect("the job exists");
    assert_eq!(job.revision, events.len() as i64, "the job row matches its log");
    job.revision
}

/// Polls `f` every 20 ms until it holds, for at most PATIENCE.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Both listeners have opened a session: notifications flow from now on.
async fn listening(a: &TestApp, b: &TestApp) {
    eventually("both listeners are connected", || {
        a.listener.sessions.load(Ordering::Relaxed) >= 1
            && b.listener.sessions.load(Ordering::Relaxed) >= 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_on_each_replica_see_the_other_replicas_commits_in_order() {
    if !postgres_available("watchers_on_each_replica_see_the_other_replicas_commits_in_order").await
    {
        return;
    }
    let (a, b) = two_replicas(options()).await;
    listening(&a, &b).await;
    a.create_job(1).await;
    let mut on_a = watcher(&a, CLIENT, 1, 1).await;
    let mut on_b = watcher(&b, WORKER, 1, 1).await;
    // Commits alternate between replicas, so each watcher sees some
    // revisions from its own replica and some only through NOTIFY.
    let n = 12;
    for i in 0..n {
        let via = if i % 3 == 0 { &a } else { &b };
        assert_eq!(step(via, 1, i).await, i as i64 + 2);
    }
    let last = n as i64 + 1;
    expect_exactly(&mut on_a, 2, last).await;
    expect_exactly(&mut on_b, 2, last).await;
    assert!(
        a.listener.forwarded.load(Ordering::Relaxed) >= 1,
        "A received B's commits through its listener"
    );
    assert_gap_free_log(&a, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_listener_is_caught_up_and_watchers_miss_nothing() {
    if !postgres_available("killed_listener_is_caught_up_and_watchers_miss_nothing").await {
        return;
    }
    // A waits a whole second before reconnecting, so the commits below
    // certainly happen while it hears nothing: only the catch-up after its
    // reconnect can deliver them.
    let db = TestDb::postgres(false).await;
    let mut slow = options();
    slow.store.listener_backoff = Duration::from_secs(1);
    slow.store.listener_backoff_max = Duration::from_secs(1);
    let a = TestApp::start(db.clone(), slow).await;
    let b = TestApp::start(db.clone(), options()).await;
    listening(&a, &b).await;
    a.create_job(1).await;
    let mut watchers = vec![
        watcher(&a, CLIENT, 1, 1).await,
        watcher(&a, WORKER, 1, 1).await,
        watcher(&b, CLIENT, 1, 1).await,
    ];
    let resynced_before = a.listener.resynced.load(Ordering::Relaxed);

    // Deterministic: kill both listeners, wait until A noticed, commit
    // three revisions through B while A is deaf.
    assert_eq!(db.pg().kill_listeners().await, 2);
    eventually("A noticed its LISTEN connection died", || {
        a.listener.breaks.load(Ordering::Relaxed) >= 1
    })
    .await;
    for i in 0..3 {
        step(&b, 1, i).await;
    }
    // Then keep committing through B while listeners are killed again and
    // again: every watcher still gets every revision exactly once.
    let mut next_step = 3;
    for round in 0..4 {
        for _ in 0..5 {
            step(&b, 1, next_step).await;
            next_step += 1;
        }
        if round < 3 {
            db.pg().kill_listeners().await;
        }
    }
    let last = next_step as i64 + 1;
    for w in &mut watchers {
        expect_exactly(w, 2, last).await;
    }
    assert!(
        a.listener.resynced.load(Ordering::Relaxed) > resynced_before,
        "A caught up from the log after reconnecting"
    );
    assert!(a.listener.sessions.load(Ordering::Relaxed) >= 2);
    // Both replicas reconnected for real: two LISTEN sessions exist again.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while db.pg().listener_pids().await.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "listeners never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(assert_gap_free_log(&a, 1).await, last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_commands_through_two_replicas_have_one_winner() {
    if !postgres_available("conflicting_commands_through_two_replicas_have_one_winner").await {
        return;
    }
    let (a, b) = two_replicas(options()).await;
    const JOBS: i64 = 12;

    // Creating one job through both replicas at once: one is created, the
    // other is told it already exists.
    for id in 1..=JOBS {
        let (mut admin_a, mut admin_b) = (a.admin().await, b.admin().await);
        let create = |id| pb::CreateJobRequest {
            job_id: id,
            client_id: CLIENT.into(),
            worker_id: WORKER.into(),
            request_id: String::new(),
        };
        let (ra, rb) = tokio::join!(
            admin_a.create_job(create(id)),
            admin_b.create_job(create(id))
        );
        let codes = [ra.err().map(|s| s.code()), rb.err().map(|s| s.code())];
        assert!(
            codes == [None, Some(Code::AlreadyExists)]
                || codes == [Some(Code::AlreadyExists), None],
            "job {id}: one create wins, the other is ALREADY_EXISTS: {codes:?}"
        );
    }

    // Approve (through A) against RequestChanges (through B), at once:
    // exactly one wins; the other is refused with a clear status.
    for id in 1..=JOBS {
        step(&a, id, 0).await; // MarkComplete: revision 2
        let (mut client_a, mut client_b) = (a.client(CLIENT).await, b.client(CLIENT).await);
        let (ra, rb) = tokio::join!(
            client_a.approve_completion(approve(id, PaymentMethod::Cash)),
            client_b.request_changes(changes(id, "not yet"))
        );
        let (won, lost) = match (ra, rb) {
            (Ok(w), Err(l)) => (w.into_inner().revision, l),
            (Err(l), Ok(w)) => (w.into_inner().revision, l),
            other => panic!("job {id}: exactly one of two conflicting commands wins: {other:?}"),
        };
        assert_eq!(won, 3, "job {id}: the winner made revision 3");
        assert_eq!(lost.code(), Code::FailedPrecondition, "{}", lost.message());
        assert_eq!(assert_gap_free_log(&b, id).await, 3);
    }

    // Many writers on one job through both replicas: whatever wins, the
    // history is one line, revisions 1, 2, 3… with no gaps or repeats.
    let id = 1_000;
    a.create_job(id).await;
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let via_a = t % 2 == 0;
        let app_worker = if via_a {
            a.client(WORKER).await
        } else {
            b.client(WORKER).await
        };
        let app_client = if via_a {
            b.client(CLIENT).await
        } else {
            a.client(CLIENT).await
        };
        tasks.push(tokio::spawn(async move {
            let (mut worker, mut client) = (app_worker, app_client);
            let mut revisions = Vec::new();
            for _ in 0..10 {
                if let Ok(job) = worker.mark_complete(mark(id)).await {
                    revisions.push(job.into_inner().revision);
                }
                if let Ok(job) = client.request_changes(changes(id, "again")).await {
                    revisions.push(job.into_inner().revision);
                }
            }
            revisions
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        seen.extend(task.await.expect("writer task"));
    }
    let last = assert_gap_free_log(&a, id).await;
    assert!(last > 1, "some writers won");
    assert!(seen.iter().all(|r| (1..=last).contains(r)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_is_unavailable_and_not_serving_then_recovers() {
    if !postgres_available("database_outage_is_unavailable_and_not_serving_then_recovers").await
    {
        return;
    }
    // The servers connect as a role of this test's own, so blocking it
    // disturbs no other test.
    let db = TestDb::postgres(true).await;
    let a = TestApp::start(db.clone(), options()).await;
    let b = TestApp::start(db.clone(), options()).await;
    listening(&a, &b).await;
    a.create_job(1).await;
    let mut on_a = watcher(&a, CLIENT, 1, 1).await;
    let mut on_b = watcher(&b, CLIENT, 1, 1).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(a.channel().await);
    wait_for_health(&mut health, ServingStatus::Serving).await;

    db.pg().block().await;

    // Calls fail fast with UNAVAILABLE (not a hang, not INTERNAL).
    let mut worker = a.client(WORKER).await;
    let request = pb::MarkCompleteRequest {
        job_id: 1,
        request_id: "outage-1".into(),
        ..Default::default()
    };
    let started = tokio::time::Instant::now();
    let failed = worker.mark_complete(request.clone()).await;
    assert_status(failed, Code::Unavailable, "");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "UNAVAILABLE came after {:?}",
        started.elapsed()
    );
    let mut reader = b.client(CLIENT).await;
    assert_status(
        reader.get_job(pb::GetJobRequest { job_id: 1 }).await,
        Code::Unavailable,
        "",
    );
    wait_for_health(&mut health, ServingStatus::NotServing).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    db.pg().unblock().await;

    // Health and calls recover by themselves; the retried request (same
    // request id) is applied once.
    wait_for_health(&mut health, ServingStatus::Serving).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let job = loop {
        match worker.mark_complete(request.clone()).await {
            Ok(job) => break job.into_inner(),
            Err(status) if status.code() == Code::Unavailable => {
                assert!(tokio::time::Instant::now() < deadline, "never recovered");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("unexpected {status:?}"),
        }
    };
    assert_eq!(job.revision, 2);
    let again = worker.mark_complete(request).await.expect("a retry replays");
    assert_eq!(again.into_inner().revision, 2);
    // Committed through B: A's watcher gets it through A's listener, which
    // had to reconnect after the outage.
    let mut client_b = b.client(CLIENT).await;
    client_b
        .request_changes(changes(1, "after the outage"))
        .await
        .expect("B works again");
    expect_exactly(&mut on_a, 2, 3).await;
    expect_exactly(&mut on_b, 2, 3).await;
    assert_eq!(assert_gap_free_log(&a, 1).await, 3);
}

async fn wait_for_health(
    health: &mut tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>,
    want: ServingStatus,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "jobstatus.v1.JobService".into(),
            })
            .await
            .map(|r| r.into_inner().status);
        if status.as_ref().is_ok_and(|s| *s == want as i32) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health never became {want:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
