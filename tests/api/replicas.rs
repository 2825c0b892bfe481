//! Several replicas on one PostgreSQL: fan-out through LISTEN/NOTIFY
//! (including killed listeners, for WatchJob and WatchMyJobs), conflicting
//! commands and racing retries through different replicas, a watch resumed
//! on another replica, a stuck statement, and a database outage.
//! PostgreSQL only: each test skips loudly where the server is unreachable
//! (see `helpers`); the parametrised suite covers everything else on both
//! backends.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::harness::{Need, Trial, trial};
use crate::helpers::*;
use jobstatus::domain::JobId;
use jobstatus::grpc::pb::watch_job_response::Kind;
use jobstatus::grpc::pb::{self, PaymentMethod};
use jobstatus::storage::StoreOptions;
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
        // Bounded as a whole: heartbeats alone would keep `event` waiting.
        let e = tokio::time::timeout(PATIENCE, event(stream))
            .await
            .unwrap_or_else(|_| panic!("revision {expected} never arrived"));
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
    let job = if i.is_multiple_of(2) {
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
    assert_eq!(
        job.revision,
        events.len() as i64,
        "the job row matches its log"
    );
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

async fn watchers_on_each_replica_see_the_other_replicas_commits_in_order() {
    let (a, b) = two_replicas(options()).await;
    listening(&a, &b).await;
    a.create_job(1).await;
    let mut on_a = watcher(&a, CLIENT, 1, 1).await;
    let mut on_b = watcher(&b, WORKER, 1, 1).await;
    // Commits alternate between replicas, so each watcher sees some
    // revisions from its own replica and some only through NOTIFY.
    let n: usize = 12;
    for i in 0..n {
        let via = if i.is_multiple_of(3) { &a } else { &b };
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

async fn killed_listener_is_caught_up_and_watchers_miss_nothing() {
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
    // About 1.5 s of commits, spanning A's reconnect after its back-off.
    const MORE: usize = 60;
    let (mut worker, mut client) = (b.client(WORKER).await, b.client(CLIENT).await);
    let churn = tokio::spawn(async move {
        for i in 3..3 + MORE {
            let job = if i.is_multiple_of(2) {
                worker.mark_complete(mark(1)).await
            } else {
                client.request_changes(changes(1, "again")).await
            };
            job.expect("transition through B");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut kills = 0;
    while !churn.is_finished() && kills < 40 {
        kills += db.pg().kill_listeners().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    churn.await.expect("B's writer");
    assert!(
        kills >= 3,
        "listeners were killed while B committed ({kills})"
    );
    let last = (3 + MORE) as i64 + 1;
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
        assert!(
            tokio::time::Instant::now() < deadline,
            "listeners never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(assert_gap_free_log(&a, 1).await, last);
}

async fn conflicting_commands_through_two_replicas_have_one_winner() {
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

    // A retry racing its original through the other replica (same request
    // id): both get the one answer, and only one change is made.
    for id in 100..110 {
        let (mut admin_a, mut admin_b) = (a.admin().await, b.admin().await);
        let create = pb::CreateJobRequest {
            job_id: id,
            client_id: CLIENT.into(),
            worker_id: WORKER.into(),
            request_id: format!("create-{id}"),
        };
        let (ra, rb) = tokio::join!(
            admin_a.create_job(create.clone()),
            admin_b.create_job(create)
        );
        let (ra, rb) = (ra.expect("create"), rb.expect("create retry"));
        assert_eq!(ra.into_inner(), rb.into_inner());
        let (mut worker_a, mut worker_b) = (a.client(WORKER).await, b.client(WORKER).await);
        let request = pb::MarkCompleteRequest {
            job_id: id,
            request_id: format!("mark-{id}"),
            ..Default::default()
        };
        let (ra, rb) = tokio::join!(
            worker_a.mark_complete(request.clone()),
            worker_b.mark_complete(request)
        );
        let (ra, rb) = (ra.expect("mark"), rb.expect("mark retry"));
        assert_eq!(ra.into_inner(), rb.into_inner());
        assert_eq!(assert_gap_free_log(&a, id).await, 2);
    }

    // Many writers on one job through both replicas: whatever wins, the
    // history is one line, revisions 1, 2, 3… with no gaps or repeats.
    let id = 1_000;
    a.create_job(id).await;
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let via_a = t.is_multiple_of(2);
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

async fn database_outage_is_unavailable_and_not_serving_then_recovers() {
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
    // Many changes at once, more than there are writers: queueing and
    // waiting for a connection share one deadline, so none waits longer
    // than --db-timeout-ms (1 s here) before UNAVAILABLE.
    let timeout = StoreOptions::default().busy_timeout;
    // Two waves: the second arrives while every writer already waits for
    // a connection, which used to cost it that wait and then its own.
    let waits = two_waves(&worker, "queued", timeout).await;
    for (answer, waited) in &waits {
        let status = answer.as_ref().expect_err("the database is down");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            *waited <= timeout + Duration::from_millis(300),
            "a queued change waited {waited:?}, over the {timeout:?} timeout"
        );
    }
    wait_for_health(&mut health, ServingStatus::NotServing).await;
    // New watches cannot read their snapshot: UNAVAILABLE too. Open ones
    // hold no connection and stay open (checked below: they go on).
    let mut client_a = a.client(CLIENT).await;
    let opened = client_a
        .watch_job(pb::WatchJobRequest {
            job_id: 1,
            after_revision: None,
        })
        .await;
    match opened {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(stream) => {
            let mut stream = stream.into_inner();
            assert_status(next(&mut stream).await, Code::Unavailable, "");
        }
    }
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
    let again = worker
        .mark_complete(request)
        .await
        .expect("a retry replays");
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

async fn watch_my_jobs_on_one_replica_follows_the_other_even_across_a_killed_listener() {
    use pb::watch_my_jobs_response::Kind as MyKind;
    let db = TestDb::postgres(false).await;
    let mut slow = options();
    slow.store.listener_backoff = Duration::from_secs(1);
    slow.store.listener_backoff_max = Duration::from_secs(1);
    let a = TestApp::start(db.clone(), slow).await;
    let b = TestApp::start(db.clone(), options()).await;
    listening(&a, &b).await;
    let mut stream = a
        .client(WORKER)
        .await
        .watch_my_jobs(pb::WatchMyJobsRequest::default())
        .await
        .expect("WatchMyJobs opens")
        .into_inner();
    // Reads until `done` says the stream has shown what it should; every
    // job's revisions must arrive once and in order.
    let mut last: std::collections::HashMap<i64, i64> = Default::default();
    let mut read_until =
        async |stream: &mut tonic::Streaming<pb::WatchMyJobsResponse>,
               done: &dyn Fn(&std::collections::HashMap<i64, i64>) -> bool| {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while !done(&last) {
                let message = tokio::time::timeout_at(deadline, stream.message())
                    .await
                    .expect("WatchMyJobs delivers in time")
                    .expect("stream ok")
                    .expect("stream open");
                match message.kind.expect("a kind") {
                    MyKind::Snapshot(s) => {
                        let job = s.job.expect("job");
                        assert!(
                            last.insert(job.job_id, job.revision).is_none(),
                            "one snapshot"
                        );
                    }
                    MyKind::Event(e) => {
                        let before = last.insert(e.job_id, e.revision);
                        assert_eq!(before, Some(e.revision - 1), "contiguous revisions");
                    }
                    MyKind::Heartbeat(_) => {}
                    MyKind::Left(l) => panic!("unexpected JobLeft {l:?}"),
                }
            }
        };
    // A job created and changed through B joins the stream on A.
    b.create_job(1).await;
    step(&b, 1, 0).await;
    read_until(&mut stream, &|l| l.get(&1) == Some(&2)).await;
    // While A's listener is down: a new job for the worker, and a change.
    assert_eq!(db.pg().kill_listeners().await, 2);
    eventually("A noticed its LISTEN connection died", || {
        a.listener.breaks.load(Ordering::Relaxed) >= 1
    })
    .await;
    b.create_job(2).await;
    step(&b, 1, 1).await;
    read_until(&mut stream, &|l| {
        l.get(&1) == Some(&3) && l.get(&2) == Some(&1)
    })
    .await;
}

async fn a_stuck_statement_fails_unavailable_after_the_statement_timeout() {
    let db = TestDb::postgres(false).await;
    let mut quick = options();
    quick.store.statement_timeout = Duration::from_millis(300);
    let app = TestApp::start(db.clone(), quick).await;
    app.create_job(1).await;
    // Another session holds the job's row lock and does not let go.
    let mut blocker = db.pg().connect().await;
    sqlx::raw_sql("BEGIN; SELECT 1 FROM jobs WHERE job_id = 1 FOR UPDATE")
        .execute(&mut blocker)
        .await
        .expect("lock the row");
    let mut worker = app.client(WORKER).await;
    let started = tokio::time::Instant::now();
    assert_status(worker.mark_complete(mark(1)).await, Code::Unavailable, "");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "failed after {:?}",
        started.elapsed()
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .expect("release the row");
    let job = worker.mark_complete(mark(1)).await.expect("works again");
    assert_eq!(job.into_inner().revision, 2);
}

/// A replica starting while another holds the migrations' table (its own
/// migration, a long schema change) waits for it, however much longer than
/// the per-statement time-out that takes: start-up is not a call.
async fn migrations_wait_for_a_lock_longer_than_the_statement_timeout() {
    let db = TestDb::postgres(false).await;
    let first = TestApp::start(db.clone(), options()).await;
    let mut blocker = db.pg().connect().await;
    sqlx::raw_sql("BEGIN; LOCK TABLE _sqlx_migrations IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .expect("lock the migrations table");
    let hold = Duration::from_millis(1200);
    let release = tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut blocker)
            .await
            .expect("release the lock");
    });
    let mut quick = options();
    quick.store.statement_timeout = Duration::from_millis(200);
    let started = tokio::time::Instant::now();
    let second = TestApp::start(db.clone(), quick).await;
    assert!(
        started.elapsed() >= hold - Duration::from_millis(100),
        "started after {:?}, while the lock was still held",
        started.elapsed()
    );
    release.await.expect("released");
    second.create_job(7).await;
    drop(first);
}

/// Twelve changes to job 1 in two waves, the second sent while the first
/// still waits: each one's answer and how long it waited.
async fn two_waves(
    worker: &JobClient,
    prefix: &str,
    timeout: Duration,
) -> Vec<(Result<(), tonic::Status>, Duration)> {
    futures_util::future::join_all((0..12).map(|i| {
        let mut worker = worker.clone();
        let request_id = format!("{prefix}-{i}");
        async move {
            if i >= 6 {
                tokio::time::sleep(timeout / 2).await;
            }
            let started = tokio::time::Instant::now();
            let answer = worker
                .mark_complete(pb::MarkCompleteRequest {
                    job_id: 1,
                    request_id,
                    ..Default::default()
                })
                .await;
            (answer.map(drop), started.elapsed())
        }
    }))
    .await
}

/// A change waits for the database `--db-timeout-ms` at most in all
/// (queueing for a writer, a connection, and its statements), whatever the
/// statement timeout: with the job's row locked by another session, changes
/// sent in two waves all fail UNAVAILABLE within the timeout, saying a change
/// may still commit, and a retry with the same request id after the lock is
/// released applies each once.
async fn queued_changes_fail_within_the_database_timeout() {
    let db = TestDb::postgres(false).await;
    let mut opts = options();
    opts.store.busy_timeout = Duration::from_millis(800);
    opts.store.statement_timeout = Duration::from_secs(10);
    let timeout = opts.store.busy_timeout;
    let app = TestApp::start(db.clone(), opts).await;
    app.create_job(1).await;
    let mut blocker = db.pg().connect().await;
    sqlx::raw_sql("BEGIN; SELECT 1 FROM jobs WHERE job_id = 1 FOR UPDATE")
        .execute(&mut blocker)
        .await
        .expect("lock the row");
    let worker = app.client(WORKER).await;
    let waits = two_waves(&worker, "locked", timeout).await;
    for (answer, waited) in &waits {
        let status = answer.as_ref().expect_err("the row is locked");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("same request_id"), "{status:?}");
        assert!(
            *waited <= timeout + Duration::from_millis(300),
            "a change waited {waited:?} with a {timeout:?} timeout"
        );
    }
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .expect("release the row");
    // Once the lock is gone the first queued change commits (the others
    // repeat it: the same worker marking complete again changes nothing),
    // and a retry of any of them is answered, never applied twice.
    let mut worker = worker;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let job = loop {
        match worker
            .mark_complete(pb::MarkCompleteRequest {
                job_id: 1,
                request_id: "locked-0".into(),
                ..Default::default()
            })
            .await
        {
            Ok(job) => break job.into_inner(),
            Err(status) if status.code() == Code::Unavailable => {
                assert!(tokio::time::Instant::now() < deadline, "never recovered");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("unexpected {status:?}"),
        }
    };
    assert_eq!(job.revision, 2, "marked complete once");
}

async fn a_watch_resumes_on_another_replica_when_its_replica_goes_away() {
    let (mut a, b) = two_replicas(options()).await;
    listening(&a, &b).await;
    a.create_job(1).await;
    let mut on_a = watcher(&a, CLIENT, 1, 1).await;
    step(&b, 1, 0).await;
    assert_eq!(event(&mut on_a).await.revision, 2);
    // A goes away (a deploy): its stream ends, resumably.
    a.stop().await;
    let ended = end(&mut on_a).await;
    assert_status(ended, Code::Unavailable, "after_revision=2");
    step(&b, 1, 1).await;
    step(&b, 1, 2).await;
    // The client reconnects (through the load balancer) to B and resumes.
    let mut client = b.client(CLIENT).await;
    let mut on_b = watch(&mut client, 1, Some(2)).await;
    expect_exactly(&mut on_b, 3, 4).await;
    step(&b, 1, 3).await;
    expect_exactly(&mut on_b, 5, 5).await;
}

/// A burst of notifications costs one log read per batch, not one per
/// notification: those already received are taken together and each
/// (job, revision) is read and published once.
async fn a_burst_of_notifications_is_read_in_batches() {
    let app = TestApp::spawn_with(Backend::Postgres, options()).await;
    app.create_job(1).await;
    let _watch = watcher(&app, CLIENT, 1, 1).await;
    // Let the creation's own notification be forwarded first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = app.listener.forwarded.load(Ordering::Relaxed);

    // 300 notifications of revision 1 in one statement, delivered together
    // at commit (zero-padded: PostgreSQL folds identical payloads).
    let mut conn = app.db.pg().connect().await;
    sqlx::query(
        "SELECT pg_notify('jobstatus_events', '1:' || lpad('1', g, '0')) \
         FROM generate_series(1, 300) AS g",
    )
    .execute(&mut conn)
    .await
    .expect("notify");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while app.listener.forwarded.load(Ordering::Relaxed) == before {
        assert!(tokio::time::Instant::now() < deadline, "never forwarded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Time to forward the rest, one by one, had they been.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let forwarded = app.listener.forwarded.load(Ordering::Relaxed) - before;
    assert!(
        forwarded <= 30,
        "300 notifications of one revision were read {forwarded} times"
    );
}

/// The tests of this module that are not per backend.
pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "replicas::watchers_on_each_replica_see_the_other_replicas_commits_in_order",
            &[Need::Postgres],
            watchers_on_each_replica_see_the_other_replicas_commits_in_order,
        ),
        trial(
            "replicas::killed_listener_is_caught_up_and_watchers_miss_nothing",
            &[Need::Postgres],
            killed_listener_is_caught_up_and_watchers_miss_nothing,
        ),
        trial(
            "replicas::conflicting_commands_through_two_replicas_have_one_winner",
            &[Need::Postgres],
            conflicting_commands_through_two_replicas_have_one_winner,
        ),
        trial(
            "replicas::database_outage_is_unavailable_and_not_serving_then_recovers",
            &[Need::Postgres],
            database_outage_is_unavailable_and_not_serving_then_recovers,
        ),
        trial(
            "replicas::watch_my_jobs_on_one_replica_follows_the_other_even_across_a_killed_listener",
            &[Need::Postgres],
            watch_my_jobs_on_one_replica_follows_the_other_even_across_a_killed_listener,
        ),
        trial(
            "replicas::a_stuck_statement_fails_unavailable_after_the_statement_timeout",
            &[Need::Postgres],
            a_stuck_statement_fails_unavailable_after_the_statement_timeout,
        ),
        trial(
            "replicas::migrations_wait_for_a_lock_longer_than_the_statement_timeout",
            &[Need::Postgres],
            migrations_wait_for_a_lock_longer_than_the_statement_timeout,
        ),
        trial(
            "replicas::queued_changes_fail_within_the_database_timeout",
            &[Need::Postgres],
            queued_changes_fail_within_the_database_timeout,
        ),
        trial(
            "replicas::a_watch_resumes_on_another_replica_when_its_replica_goes_away",
            &[Need::Postgres],
            a_watch_resumes_on_another_replica_when_its_replica_goes_away,
        ),
        trial(
            "replicas::a_burst_of_notifications_is_read_in_batches",
            &[Need::Postgres],
            a_burst_of_notifications_is_read_in_batches,
        ),
    ]
}
