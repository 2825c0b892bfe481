//! The process around the service: graceful shutdown with resumable
//! streams, durability across restarts, health checking and reflection.

use crate::harness::{Need, Trial, trial};
use crate::helpers::*;
use jobstatus::grpc::pb::job_service_client::JobServiceClient;
use jobstatus::grpc::pb::{self, EventType, PaymentMethod};
use tokio_stream::StreamExt;
use tonic::Code;

crate::backend_tests!(
    shutdown_ends_streams_resumably_and_restart_loses_nothing,
    health_and_reflection_answer_without_a_token,
);

async fn shutdown_ends_streams_resumably_and_restart_loses_nothing(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    app.create_job(1).await;
    let mut client = app.client(CLIENT).await;
    let mut worker = app.client(WORKER).await;
    let mut w = watch(&mut client, 1, None).await;
    snapshot(&mut w).await;
    worker.mark_complete(mark(1)).await.expect("mark");
    assert_eq!(event(&mut w).await.revision, 2);

    app.stop().await;
    let status = end(&mut w).await.expect_err("shutdown is not a clean end");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("after_revision=2"),
        "the status says where to resume: {}",
        status.message()
    );

    // A new process on the same database: acknowledged changes survived, and
    // a change made while the watcher was away is replayed on resume.
    let app = TestApp::start(app.db.clone(), app.options.clone()).await;
    let mut client = app.client(CLIENT).await;
    client
        .approve_completion(approve(1, PaymentMethod::Cash))
        .await
        .expect("approve after restart");
    let mut resumed = watch(&mut client, 1, Some(2)).await;
    let e = event(&mut resumed).await;
    assert_eq!(e.revision, 3);
    assert_eq!(e.event(), EventType::ClientApprovedCompletion);
    assert_eq!(e.payment_method(), PaymentMethod::Cash);
}

async fn health_and_reflection_answer_without_a_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    for service in [
        "",
        "jobstatus.v1.JobService",
        "jobstatus.v1.JobAdminService",
    ] {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            // Until the first database probe has reported, a service is
            // not registered yet (NOT_FOUND); under load that can take a
            // moment, so keep asking like a load balancer would.
            let status = match health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
            {
                Ok(response) => response.into_inner().status,
                Err(status) if status.code() == tonic::Code::NotFound => -1,
                Err(status) => panic!("health answers: {status:?}"),
            };
            if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service:?} never SERVING"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    // Reflection v1.
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(app.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection v1")
            .into_inner();
        let response = responses.next().await.expect("a response").expect("ok");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("expected a service list");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for wanted in [
            "jobstatus.v1.JobService",
            "jobstatus.v1.JobAdminService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == wanted),
                "{wanted} missing from {names:?}"
            );
        }
    }
    // Reflection v1alpha, which older grpcurl versions speak.
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(app.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "jobstatus.v1.JobService".into(),
            )),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection v1alpha")
            .into_inner();
        let response = responses.next().await.expect("a response").expect("ok");
        let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
            panic!("expected file descriptors");
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }
}

/// grpcurl, the tool the README's examples use, against the real server.
async fn grpcurl_lists_and_calls_the_services() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.create_job(1).await;
    let addr = app.addr.to_string();
    let run = move |args: Vec<String>| {
        let out = std::process::Command::new("grpcurl")
            .args(&args)
            .output()
            .expect("grpcurl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let a = addr.clone();
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || run(vec!["-plaintext".into(), a, "list".into()]))
            .await
            .expect("join");
    assert!(ok, "grpcurl list failed: {err}");
    assert!(out.contains("jobstatus.v1.JobService"), "{out}");
    assert!(out.contains("jobstatus.v1.JobAdminService"), "{out}");

    let a = addr.clone();
    let auth = format!("authorization: Bearer {}", token(WORKER));
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        run(vec![
            "-plaintext".into(),
            "-H".into(),
            auth,
            "-d".into(),
            r#"{"job_id": 1}"#.into(),
            a,
            "jobstatus.v1.JobService/MarkComplete".into(),
        ])
    })
    .await
    .expect("join");
    assert!(ok, "grpcurl MarkComplete failed: {err}");
    assert!(out.contains("JOB_STATUS_AWAITING_CLIENT_APPROVAL"), "{out}");

    let a = addr.clone();
    let auth = format!("authorization: Bearer {}", token(STRANGER));
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        run(vec![
            "-plaintext".into(),
            "-H".into(),
            auth,
            "-d".into(),
            r#"{"job_id": 1}"#.into(),
            a,
            "jobstatus.v1.JobService/GetJob".into(),
        ])
    })
    .await
    .expect("join");
    assert!(!ok);
    assert!(err.contains("PermissionDenied"), "{err}");
    let _ = pb::JobStatus::Open;
}

/// The real binary, as an operator runs it: `jobstatus token` mints a token
/// the server accepts, and SIGTERM ends watch streams with the resumable
/// status and exits 0 after draining.
async fn the_binary_serves_and_drains_on_sigterm() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let db = format!("sqlite://{}", dir.path().join("bin.db").display());
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobstatus"))
        .args(["serve", "--listen", &addr, "--database-url", &db])
        .env("JOBSTATUS_JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("server starts");

    let mint = |sub: &str, service: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_jobstatus"));
        cmd.args(["token", "--sub", sub])
            .env("JOBSTATUS_JWT_SECRET", SECRET);
        if service {
            cmd.arg("--service");
        }
        let out = cmd.output().expect("token subcommand runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    };
    let (service, client) = (mint(SERVICE, true), mint(CLIENT, false));

    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("uri");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let channel = loop {
        match endpoint.connect().await {
            Ok(channel) => break channel,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "server never listened: {e}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    let mut admin = pb::job_admin_service_client::JobAdminServiceClient::with_interceptor(
        channel.clone(),
        Bearer::new(&service),
    );
    admin
        .create_job(pb::CreateJobRequest {
            job_id: 1,
            client_id: CLIENT.into(),
            worker_id: WORKER.into(),
            request_id: String::new(),
        })
        .await
        .expect("create with a minted service token");
    let mut c =
        pb::job_service_client::JobServiceClient::with_interceptor(channel, Bearer::new(&client));
    let mut w = watch(&mut c, 1, None).await;
    snapshot(&mut w).await;

    let pid = server.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    assert_status(end(&mut w).await, Code::Unavailable, "after_revision=1");
    let status = tokio::time::timeout(PATIENCE, server.wait())
        .await
        .expect("exits after draining")
        .expect("wait");
    assert!(status.success(), "graceful exit, got {status}");
}

/// `serve --dev` prints grpcurl hints that work as printed: plain text
/// without TLS, and with `--tls-cert` hints for a TLS port; the printed
/// `list` command is run.
async fn serve_dev_prints_grpcurl_hints_that_work() {
    use tokio::io::AsyncBufReadExt;

    let dir = tempfile::TempDir::new().expect("temp dir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");

    for tls in [false, true] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let db = format!(
            "sqlite://{}",
            dir.path().join(format!("dev-{tls}.db")).display()
        );
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobstatus"));
        cmd.args(["serve", "--dev", "--listen", &addr, "--database-url", &db])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        if tls {
            cmd.arg("--tls-cert").arg(&cert).arg("--tls-key").arg(&key);
        }
        let mut server = cmd.spawn().expect("server starts");
        let mut lines = tokio::io::BufReader::new(server.stdout.take().expect("stdout")).lines();
        let mut hints = Vec::new();
        tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                let done = line.contains("api=");
                hints.push(line);
                if done {
                    break;
                }
            }
        })
        .await
        .expect("the hints are printed");
        let text = hints.join("\n");
        let (flag, scheme) = if tls {
            ("grpcurl -insecure", "api=https://")
        } else {
            ("grpcurl -plaintext", "api=http://")
        };
        assert!(text.contains(flag) && text.contains(scheme), "{text}");
        if tls {
            assert!(!text.contains("-plaintext"), "{text}");
        }
        {
            let list = hints
                .iter()
                .map(|l| l.trim())
                .find(|l| l.starts_with("grpcurl") && l.ends_with(" list"))
                .expect("a grpcurl list hint")
                .to_owned();
            let out = tokio::task::spawn_blocking(move || {
                let mut words = list.split_whitespace();
                let program = words.next().expect("program");
                std::process::Command::new(program)
                    .args(words)
                    .output()
                    .expect("grpcurl runs")
            })
            .await
            .expect("join");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("jobstatus.v1.JobService"),
                "tls={tls}: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        server.kill().await.expect("stop the server");
    }
}

/// A `serve --dev` process on `db`, and the lines it printed up to the
/// last sign-in link.
async fn serve_dev(
    db: &std::path::Path,
    extra: &[&str],
) -> (tokio::process::Child, String, Vec<String>) {
    use tokio::io::AsyncBufReadExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let url = format!("sqlite://{}", db.display());
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobstatus"))
        .args(["serve", "--dev", "--listen", &addr, "--database-url", &url])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .env_remove("JOBSTATUS_JWT_SECRET")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("server starts");
    let mut lines = tokio::io::BufReader::new(server.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            let done = line.contains("as the worker:");
            printed.push(line);
            if done {
                break;
            }
        }
    })
    .await
    .expect("the start-up lines are printed");
    (server, addr, printed)
}

fn printed_token(lines: &[String], name: &str) -> String {
    let prefix = format!("export {name}=");
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{name} printed: {lines:#?}"))
        .to_owned()
}

async fn get_job_as(addr: &str, token: &str) -> Result<pb::Job, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    JobServiceClient::with_interceptor(channel, Bearer::new(token))
        .get_job(pb::GetJobRequest { job_id: 1 })
        .await
        .map(tonic::Response::into_inner)
}

/// `--dev` keeps its secret beside the demo database (mode 0600), so tokens
/// printed by one run still work after a restart; the start-up line tells
/// the demo job's real state; the sign-in links carry each role's token;
/// `--dev --reset` starts over with a new secret and a new demo job;
/// `--dev-page-url` moves the links.
async fn serve_dev_survives_restarts_and_resets_on_request() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let db = dir.path().join("demo.db");

    let (mut first, addr, lines) = serve_dev(&db, &[]).await;
    let text = lines.join("\n");
    assert!(
        text.contains(
            "demo job 1 (client client-alice, worker worker-bob) is in_progress at revision 1"
        ),
        "{text}"
    );
    assert!(text.contains("a new secret kept in"), "{text}");
    let client = printed_token(&lines, "CLIENT_TOKEN");
    let worker = printed_token(&lines, "WORKER_TOKEN");
    assert!(
        text.contains(&format!(
            "as the client: http://localhost:5173/?api=http://{addr}&job=1#token={client}"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("&job=1#token={worker}")), "{text}");
    let secret = dir.path().join("demo.secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret)
            .expect("secret kept")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the secret is readable by its owner only"
        );
    }
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    JobServiceClient::with_interceptor(channel, Bearer::new(&worker))
        .mark_complete(mark(1))
        .await
        .expect("the worker marks the demo job complete");
    first.kill().await.expect("stop");

    // Restarted: the job's real state, and the old tokens still work.
    let (mut second, addr, lines) = serve_dev(&db, &[]).await;
    let text = lines.join("\n");
    assert!(
        text.contains("is awaiting_client_approval at revision 2"),
        "{text}"
    );
    assert!(text.contains("since an earlier run"), "{text}");
    let job = get_job_as(&addr, &client)
        .await
        .expect("a token from the first run works");
    assert_eq!(job.revision, 2);
    second.kill().await.expect("stop");

    // Reset: a new demo and a new secret; the old tokens are refused.
    // The links open wherever --dev-page-url says the page is hosted.
    let (mut third, addr, lines) = serve_dev(
        &db,
        &["--reset", "--dev-page-url", "http://127.0.0.1:8080/jobs/"],
    )
    .await;
    let text = lines.join("\n");
    assert!(text.contains("is in_progress at revision 1"), "{text}");
    assert!(text.contains("a new secret kept in"), "{text}");
    assert!(
        text.contains(&format!(
            "as the client: http://127.0.0.1:8080/jobs/?api=http://{addr}&job=1#token="
        )),
        "{text}"
    );
    let refused = get_job_as(&addr, &client)
        .await
        .expect_err("old token refused");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let fresh = printed_token(&lines, "CLIENT_TOKEN");
    assert_eq!(
        get_job_as(&addr, &fresh).await.expect("new token").revision,
        1
    );
    third.kill().await.expect("stop");
}

/// `jobstatus --version` names the allocator the binary was built with, so
/// that an operator and the benchmark can tell a production build.
async fn the_binary_names_its_allocator() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobstatus"))
        .arg("--version")
        .output()
        .await
        .expect("--version runs");
    assert!(out.status.success());
    let version = String::from_utf8(out.stdout).expect("utf-8");
    let allocator = if cfg!(all(feature = "jemalloc", not(target_env = "msvc"))) {
        "jemalloc"
    } else {
        "system"
    };
    assert_eq!(
        version.trim(),
        format!(
            "jobstatus {} (allocator: {allocator})",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// The tests of this module that are not per backend.
pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "lifecycle::grpcurl_lists_and_calls_the_services",
            &[Need::Grpcurl],
            grpcurl_lists_and_calls_the_services,
        ),
        trial(
            "lifecycle::the_binary_serves_and_drains_on_sigterm",
            &[],
            the_binary_serves_and_drains_on_sigterm,
        ),
        trial(
            "lifecycle::the_binary_names_its_allocator",
            &[],
            the_binary_names_its_allocator,
        ),
        trial(
            "lifecycle::serve_dev_prints_grpcurl_hints_that_work",
            &[Need::Grpcurl],
            serve_dev_prints_grpcurl_hints_that_work,
        ),
        trial(
            "lifecycle::serve_dev_survives_restarts_and_resets_on_request",
            &[],
            serve_dev_survives_restarts_and_resets_on_request,
        ),
    ]
}
