//! The service as an operator runs it: the real binary, its `/metrics`
//! endpoint scraped around a known flow (exact deltas, not just presence),
//! a clean stop that says what it is and leaves a complete database file,
//! and a SIGKILL in the middle of a burst of commands that loses, repeats
//! and reorders nothing acknowledged.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::transport::Channel;

use jobstatus::grpc::pb;
use jobstatus::grpc::pb::job_service_client::JobServiceClient;
use jobstatus::grpc::pb::watch_job_response::Kind;

mod common;
use common::{PATIENCE, Process, authed, token};

const CLIENT: &str = "client-ops";
const WORKER: &str = "worker-ops";

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn create(channel: &Channel, id: i64) {
    common::create_job(channel, id, CLIENT, WORKER).await;
}

// ---------------------------------------------------------------- metrics

/// One scrape: every sample by its name and its labels (sorted).
async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    tokio::time::timeout(PATIENCE, socket.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let mut samples = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let key = match series.split_once('{') {
            None => series.to_owned(),
            Some((name, labels)) => {
                let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                labels.sort_unstable();
                format!("{name}{{{}}}", labels.join(","))
            }
        };
        samples.insert(key, value.parse().unwrap());
    }
    samples
}

/// `after - before` for one series (a series not yet exported counts 0).
fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, key: &str) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}

fn rpc(name: &str, service: &str, method: &str, kind: &str, code: Option<&str>) -> String {
    let mut labels = vec![
        format!("grpc_method=\"{method}\""),
        format!("grpc_service=\"{service}\""),
        format!("grpc_type=\"{kind}\""),
    ];
    if let Some(code) = code {
        labels.push(format!("grpc_code=\"{code}\""));
    }
    labels.sort_unstable();
    format!("{name}{{{}}}", labels.join(","))
}

const JOBS: &str = "jobstatus.v1.JobService";

/// Around a known flow (a watched job's whole CASH life, a stranger, a
/// forged token, a second watch over the per-user limit), every series it
/// touches moves by exactly what the flow did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_flow_exactly() {
    let metrics = free_addr();
    let server = Process::start(&[
        "--metrics-listen",
        &metrics.to_string(),
        "--max-watches-per-user",
        "1",
    ])
    .await;
    let channel = channel(server.addr).await;
    create(&channel, 1).await;
    // The set-up's own calls are done; everything after this is the flow.
    let before = scrape(metrics).await;

    let mut client = JobServiceClient::new(channel.clone());
    let mut watch = client
        .watch_job(authed(
            pb::WatchJobRequest {
                job_id: 1,
                after_revision: None,
            },
            &token(CLIENT),
        ))
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert!(matches!(first.kind, Some(Kind::Snapshot(_))));
    // Over the limit: the client already watches once.
    let refused = client
        .watch_job(authed(
            pb::WatchJobRequest {
                job_id: 1,
                after_revision: None,
            },
            &token(CLIENT),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let during = scrape(metrics).await;
    assert_eq!(
        delta(
            &before,
            &during,
            "jobstatus_watch_streams_open{rpc=\"WatchJob\"}"
        ),
        1.0
    );

    for step in Step::ALL {
        step.send(&mut client, 1).await.unwrap();
    }
    // The watch sees four events and ends: the job is finished.
    let mut events = 0;
    while let Some(message) = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .unwrap()
        .unwrap()
    {
        if matches!(message.kind, Some(Kind::Event(_))) {
            events += 1;
        }
    }
    assert_eq!(events, 4);
    let stranger = client
        .get_job(authed(pb::GetJobRequest { job_id: 1 }, &token("stranger")))
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), Code::PermissionDenied);
    let forged = client
        .get_job(authed(pb::GetJobRequest { job_id: 1 }, "e30.e30.c2ln"))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::Unauthenticated);

    // Streams and calls are recorded as they end; give the server a moment
    // to see the watch's end, then scrape.
    let deadline = Instant::now() + PATIENCE;
    let after = loop {
        let after = scrape(metrics).await;
        if delta(
            &before,
            &after,
            "jobstatus_watch_streams_ended_total{reason=\"terminal\",rpc=\"WatchJob\"}",
        ) == 1.0
        {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "the watch's end was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let expect = [
        (
            rpc(
                "grpc_server_started_total",
                JOBS,
                "WatchJob",
                "server_stream",
                None,
            ),
            2.0,
        ),
        (
            rpc(
                "grpc_server_handled_total",
                JOBS,
                "WatchJob",
                "server_stream",
                Some("OK"),
            ),
            1.0,
        ),
        (
            rpc(
                "grpc_server_handled_total",
                JOBS,
                "WatchJob",
                "server_stream",
                Some("ResourceExhausted"),
            ),
            1.0,
        ),
        (
            rpc(
                "grpc_server_started_total",
                JOBS,
                "MarkComplete",
                "unary",
                None,
            ),
            1.0,
        ),
        (
            rpc(
                "grpc_server_handled_total",
                JOBS,
                "MarkComplete",
                "unary",
                Some("OK"),
            ),
            1.0,
        ),
        (
            rpc(
                "grpc_server_handling_seconds_count",
                JOBS,
                "MarkComplete",
                "unary",
                None,
            ),
            1.0,
        ),
        (
            rpc(
                "grpc_server_handled_total",
                JOBS,
                "ApproveCompletion",
                "unary",
                Some("OK"),
            ),
            1.0,
        ),
        (
            rpc(
                "grpc_server_handled_total",
                JOBS,
                "SubmitPaymentProof",
                "unary",
                Some("OK"),
            ),
            1.0,
        ),
        (
            rpc(
                "grpc_server_handled_total",
                JOBS,
                "ConfirmPayment",
                "unary",
                Some("OK"),
            ),
            1.0,
        ),
        (
            rpc(
                "grpc_server_handled_total",
                JOBS,
                "GetJob",
                "unary",
                Some("PermissionDenied"),
            ),
            1.0,
        ),
        (
            rpc(
                "grpc_server_handled_total",
                JOBS,
                "GetJob",
                "unary",
                Some("Unauthenticated"),
            ),
            1.0,
        ),
        (
            rpc(
                "grpc_server_msg_sent_total",
                JOBS,
                "WatchJob",
                "server_stream",
                None,
            ),
            5.0,
        ),
        (
            "jobstatus_watch_events_delivered_total{rpc=\"WatchJob\"}".into(),
            4.0,
        ),
        ("jobstatus_watch_streams_open{rpc=\"WatchJob\"}".into(), 0.0),
        ("jobstatus_events_published_total".into(), 4.0),
        ("jobstatus_writer_batch_changes_count".into(), 4.0),
        ("jobstatus_writer_batch_changes_sum".into(), 4.0),
        (
            "jobstatus_auth_refusals_total{reason=\"invalid\"}".into(),
            1.0,
        ),
        (
            "jobstatus_limits_hit_total{limit=\"watches_per_user\"}".into(),
            1.0,
        ),
        ("jobstatus_watch_resyncs_total".into(), 0.0),
    ];
    let mut wrong = Vec::new();
    for (series, want) in &expect {
        let got = delta(&before, &after, series);
        if (got - want).abs() > f64::EPSILON {
            wrong.push(format!("{series}: moved by {got}, expected {want}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}\n{after:#?}");
    assert_eq!(after.get("jobstatus_health_serving"), Some(&1.0));
    assert!(
        after
            .get("process_resident_memory_bytes")
            .copied()
            .unwrap_or(0.0)
            > 0.0
    );
    // Every series the README lists is exported once something used it.
    for name in [
        "jobstatus_connections_accepted_total",
        "jobstatus_token_cache_entries",
        "jobstatus_hub_topics",
    ] {
        assert!(after.keys().any(|k| k.starts_with(name)), "{name} exported");
    }
}

/// The endpoint answers GET /metrics only, and a HEAD or another path
/// gets an honest status rather than metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_serves_only_get_metrics() {
    let metrics = free_addr();
    let _server = Process::start(&["--metrics-listen", &metrics.to_string()]).await;
    for (request, status) in [
        ("GET /other HTTP/1.1", "404"),
        ("POST /metrics HTTP/1.1", "405"),
    ] {
        let mut socket = TcpStream::connect(metrics).await.unwrap();
        socket
            .write_all(
                format!("{request}\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut raw = String::new();
        tokio::time::timeout(PATIENCE, socket.read_to_string(&mut raw))
            .await
            .unwrap()
            .unwrap();
        assert!(
            raw.starts_with(&format!("HTTP/1.1 {status}")),
            "{request}: {raw}"
        );
    }
}

// ---------------------------------------------------------- clean stops

/// A clean stop says it is shutting down (never that the database is
/// unreachable), exits 0, and leaves the SQLite file complete on its own:
/// a copy of `jobstatus.db` alone, without its `-wal`, holds every job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_is_truthful_and_leaves_a_complete_database_file() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("ops.db");
    let url = format!("sqlite://{}", db.display());
    let mut server = Process::start_on(dir, &url, &[]).await;
    let channel = channel(server.addr).await;
    for id in 1..=25 {
        create(&channel, id).await;
    }
    drop(channel);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(PATIENCE, server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit 0 after SIGTERM, got {status}");
    // The log says what happened, and only that.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!server.logged("shutting down: NOT_SERVING").is_empty());
    assert!(
        server.logged("database unreachable").is_empty(),
        "{:#?}",
        server.lines.lock().unwrap()
    );
    assert!(!server.logged("\"stopped\"").is_empty());

    // Only the .db file, as an operator copying it would.
    let copy_dir = TempDir::new().unwrap();
    let copy = copy_dir.path().join("copy.db");
    std::fs::copy(&db, &copy).unwrap();
    let wal = server.dir.path().join("ops.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "the WAL was merged into the database file"
    );
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", copy.display()))
        .await
        .unwrap();
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(jobs, 25);
}

// ------------------------------------------------------------ crash safety

/// One command of the burst, as a client sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Step {
    Mark,
    Approve,
    Proof,
    Confirm,
}

impl Step {
    const ALL: [Step; 4] = [Step::Mark, Step::Approve, Step::Proof, Step::Confirm];

    fn request_id(self, job: i64) -> String {
        format!("{self:?}-{job}")
    }

    fn event(self) -> pb::EventType {
        match self {
            Step::Mark => pb::EventType::WorkerMarkedComplete,
            Step::Approve => pb::EventType::ClientApprovedCompletion,
            Step::Proof => pb::EventType::PaymentProofSubmitted,
            Step::Confirm => pb::EventType::PaymentConfirmed,
        }
    }

    async fn send(
        self,
        client: &mut JobServiceClient<Channel>,
        job: i64,
    ) -> Result<pb::Job, tonic::Status> {
        let request_id = self.request_id(job);
        let (worker, customer) = (token(WORKER), token(CLIENT));
        let answer = match self {
            Step::Mark => {
                client
                    .mark_complete(authed(
                        pb::MarkCompleteRequest {
                            job_id: job,
                            request_id,
                            expected_revision: None,
                        },
                        &worker,
                    ))
                    .await
            }
            Step::Approve => {
                client
                    .approve_completion(authed(
                        pb::ApproveCompletionRequest {
                            job_id: job,
                            payment_method: pb::PaymentMethod::Cash.into(),
                            request_id,
                            expected_revision: None,
                        },
                        &customer,
                    ))
                    .await
            }
            Step::Proof => {
                client
                    .submit_payment_proof(authed(
                        pb::SubmitPaymentProofRequest {
                            job_id: job,
                            proof_ref: format!("uploads/{job}.jpg"),
                            request_id,
                            expected_revision: None,
                        },
                        &customer,
                    ))
                    .await
            }
            Step::Confirm => {
                client
                    .confirm_payment(authed(
                        pb::ConfirmPaymentRequest {
                            job_id: job,
                            request_id,
                            expected_revision: None,
                        },
                        &worker,
                    ))
                    .await
            }
        };
        answer.map(tonic::Response::into_inner)
    }
}

/// Every event of `job` in the log, replayed by a watch from revision 0.
async fn replay(channel: &Channel, job: i64, after: i64) -> Vec<pb::JobEvent> {
    let mut stream = JobServiceClient::new(channel.clone())
        .watch_job(authed(
            pb::WatchJobRequest {
                job_id: job,
                after_revision: Some(after),
            },
            &token(CLIENT),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(PATIENCE, stream.message())
            .await
            .unwrap()
            .unwrap()
        {
            Some(pb::WatchJobResponse {
                kind: Some(Kind::Event(e)),
            }) => {
                let terminal = e.status == pb::JobStatus::Completed as i32;
                events.push(e);
                if terminal {
                    break;
                }
            }
            // The heartbeat that says the replay is over.
            Some(pb::WatchJobResponse {
                kind: Some(Kind::Heartbeat(_)),
            })
            | None => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    events
}

/// SIGKILL in the middle of a burst of commands from many clients: after a
/// restart on the same database, every acknowledged change is in the log
/// exactly once, at the revision it was acknowledged with; retries with the
/// same request ids apply nothing twice; and watchers that resume with
/// `after_revision` see every revision once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_burst_loses_and_repeats_nothing_acknowledged() {
    const JOBS: i64 = 120;
    let dir = TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("crash.db").display());
    let keep = TempDir::new().unwrap();
    let mut server = Process::start_on(keep, &url, &[]).await;
    let setup = channel(server.addr).await;
    for id in 1..=JOBS {
        create(&setup, id).await;
    }
    // Watchers on a few jobs, to resume after the crash.
    let mut watched: HashMap<i64, i64> = HashMap::new();
    let mut watch_tasks = Vec::new();
    let seen = Arc::new(Mutex::new(HashMap::<i64, i64>::new()));
    for id in [1, 30, 60, 90] {
        watched.insert(id, 1);
        let channel = setup.clone();
        let seen = seen.clone();
        watch_tasks.push(tokio::spawn(async move {
            let mut stream = JobServiceClient::new(channel)
                .watch_job(authed(
                    pb::WatchJobRequest {
                        job_id: id,
                        after_revision: None,
                    },
                    &token(CLIENT),
                ))
                .await
                .unwrap()
                .into_inner();
            while let Ok(Some(message)) = stream.message().await {
                let revision = match message.kind {
                    Some(Kind::Snapshot(s)) => s.job.unwrap().revision,
                    Some(Kind::Event(e)) => e.revision,
                    _ => continue,
                };
                let mut seen = seen.lock().unwrap();
                let last = seen.entry(id).or_insert(0);
                assert!(
                    revision == *last + 1 || *last == 0,
                    "in order before the crash"
                );
                *last = revision;
            }
        }));
    }

    // Eight clients, each walking its share of the jobs through all four
    // steps; every acknowledgement is recorded with its revision.
    let acked = Arc::new(Mutex::new(HashMap::<(i64, Step), i64>::new()));
    let mut clients = Vec::new();
    for worker in 0..8 {
        let channel = channel(server.addr).await;
        let acked = acked.clone();
        clients.push(tokio::spawn(async move {
            let mut client = JobServiceClient::new(channel);
            for step in Step::ALL {
                for job in (1..=JOBS).filter(|j| j % 8 == worker) {
                    match step.send(&mut client, job).await {
                        Ok(answer) => {
                            acked.lock().unwrap().insert((job, step), answer.revision);
                        }
                        Err(_) => return, // the server is gone
                    }
                }
            }
        }));
    }
    // Kill it once part of the burst is acknowledged.
    let deadline = Instant::now() + PATIENCE;
    while acked.lock().unwrap().len() < (JOBS as usize) {
        assert!(Instant::now() < deadline, "the burst did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.start_kill().unwrap();
    let _ = server.child.wait().await;
    for client in clients {
        client.await.unwrap();
    }
    for task in watch_tasks {
        task.abort();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() < (JOBS as usize) * 4,
        "killed mid-burst, not after it"
    );

    // The same database, a new process.
    let again = TempDir::new().unwrap();
    let server = Process::start_on(again, &url, &[]).await;
    let channel = channel(server.addr).await;
    for job in 1..=JOBS {
        let events = replay(&channel, job, 0).await;
        let revisions: Vec<i64> = events.iter().map(|e| e.revision).collect();
        let expected: Vec<i64> = (1..=revisions.len() as i64).collect();
        assert_eq!(revisions, expected, "job {job}: contiguous, no repeats");
        for step in Step::ALL {
            let found: Vec<&pb::JobEvent> = events
                .iter()
                .filter(|e| e.request_id == step.request_id(job))
                .collect();
            assert!(found.len() <= 1, "job {job} {step:?} applied twice");
            if let Some(&revision) = acked.get(&(job, step)) {
                assert_eq!(
                    found.len(),
                    1,
                    "job {job} {step:?} was acknowledged and is in the log"
                );
                assert_eq!(found[0].revision, revision);
                assert_eq!(found[0].event, step.event() as i32);
            }
        }
    }
    // Every client retries everything with the same request ids: what was
    // acknowledged answers with its revision, the rest applies once.
    let mut client = JobServiceClient::new(channel.clone());
    for job in 1..=JOBS {
        for step in Step::ALL {
            let answer = step.send(&mut client, job).await.unwrap();
            if let Some(&revision) = acked.get(&(job, step)) {
                let events = replay(&channel, job, revision - 1).await;
                assert_eq!(events.first().map(|e| e.revision), Some(revision));
                assert!(answer.revision >= revision);
            }
        }
        let events = replay(&channel, job, 0).await;
        let kinds: Vec<i32> = events.iter().map(|e| e.event).collect();
        let mut expected = vec![pb::EventType::JobCreated as i32];
        expected.extend(Step::ALL.iter().map(|s| s.event() as i32));
        assert_eq!(
            kinds, expected,
            "job {job}: each step exactly once, in order"
        );
    }
    // Watchers resume from the last revision they saw: every later revision
    // once, in order.
    let seen = seen.lock().unwrap().clone();
    for (job, last) in seen {
        let events = replay(&channel, job, last).await;
        let revisions: Vec<i64> = events.iter().map(|e| e.revision).collect();
        assert_eq!(
            revisions,
            ((last + 1)..=5).collect::<Vec<_>>(),
            "job {job} resumed after {last}"
        );
    }
    drop(watched);
}

// ------------------------------------------------------------------ logs

/// Every call's log line names its peer, its request id (the caller's
/// `x-request-id`, or a new one), method, job, caller, code and duration,
/// and the response echoes the request id. Refusals are logged at info,
/// successes at debug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_logged_with_peer_request_id_code_and_duration() {
    let server = Process::start_logging("info,jobstatus::grpc=debug", &[]).await;
    let channel = channel(server.addr).await;
    create(&channel, 7).await;
    let mut client = JobServiceClient::new(channel.clone());
    let mut request = authed(pb::GetJobRequest { job_id: 7 }, &token(CLIENT));
    request
        .metadata_mut()
        .insert("x-request-id", "ops-trace-1".parse().unwrap());
    let answer = client.get_job(request).await.unwrap();
    assert_eq!(
        answer.metadata().get("x-request-id").unwrap(),
        "ops-trace-1"
    );
    // Without one, a new id comes back, and a refusal carries one too.
    let refused = client
        .get_job(authed(pb::GetJobRequest { job_id: 7 }, &token("stranger")))
        .await
        .unwrap_err();
    let made = refused
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(made.len(), 16, "{made}");

    let deadline = Instant::now() + PATIENCE;
    let (ok, denied) = loop {
        let ok = server.logged("\"request_id\":\"ops-trace-1\"");
        let denied = server.logged(&format!("\"request_id\":\"{made}\""));
        if !ok.is_empty() && !denied.is_empty() {
            break (ok, denied);
        }
        assert!(Instant::now() < deadline, "the calls were not logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let line = ok
        .iter()
        .find(|l| l.contains("\"message\":\"ok\""))
        .unwrap();
    for field in [
        "\"method\":\"GetJob\"",
        "\"job_id\":7",
        "\"caller\":\"client-ops\"",
        "\"peer\":\"127.0.0.1:",
        "\"code\":\"OK\"",
        "\"micros\":",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    let line = denied.iter().find(|l| l.contains("refused")).unwrap();
    for field in [
        "\"level\":\"INFO\"",
        "\"method\":\"GetJob\"",
        "\"caller\":\"stranger\"",
        "\"peer\":\"127.0.0.1:",
        "\"code\":\"PermissionDenied\"",
        "\"micros\":",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    assert!(
        ok.iter().any(|l| l.contains("\"level\":\"DEBUG\"")),
        "{ok:#?}"
    );
}
