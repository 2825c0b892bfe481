//! The edge under abuse: what a hostile or broken client can make the
//! server hold, and for how long. Each test attacks one class of resource
//! with raw clients (plain TCP and TLS sockets, the `h2` crate, hand-written
//! HTTP/1.1), asserts that the server bounds it (the connection is closed
//! within its timeout, the limit answers with the right code) and that a
//! legitimate client on another connection is still served meanwhile.
//!
//! Timers are set small here so that every test takes a few seconds; the
//! shipped defaults are in the README ("Limits and timeouts"). Memory and
//! CPU figures under attack belong to the benchmark (`jobstatus-bench
//! --workload abuse`), not to these tests.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::transport::Channel;

use jobstatus::app::App;
use jobstatus::grpc::listen::{ConnectionLimits, EdgeStats};
use jobstatus::grpc::pb;
use jobstatus::grpc::pb::job_admin_service_client::JobAdminServiceClient;
use jobstatus::grpc::pb::job_service_client::JobServiceClient;
use jobstatus::grpc::tls::TlsPem;
use jobstatus::grpc::{CallLimits, ServeOptions};

mod common;
use common::{PATIENCE, Process, Running, authed, service_token, token};

const CLIENT: &str = "client-alice";
const WORKER: &str = "worker-bob";
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";
const GET_JOB: &str = "/jobstatus.v1.JobService/GetJob";

// ---------------------------------------------------------------- server

struct Server {
    addr: SocketAddr,
    running: Running,
    stats: Arc<EdgeStats>,
    /// PEM of the self-signed certificate, when serving TLS.
    cert_pem: Option<String>,
    _dir: TempDir,
}

/// Small timers, so that attacks end within a test's few seconds.
fn quick() -> ServeOptions {
    ServeOptions {
        connections: ConnectionLimits {
            handshake_timeout: Duration::from_millis(400),
            request_read_timeout: Duration::from_millis(600),
            ..ConnectionLimits::default()
        },
        ..ServeOptions::default()
    }
}

async fn spawn(mut serve: ServeOptions, tls: bool) -> Server {
    let dir = TempDir::new().unwrap();
    let mut cert_pem = None;
    if tls {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        cert_pem = Some(certified.cert.pem());
        serve.tls = Some(TlsPem {
            cert: certified.cert.pem().into_bytes(),
            key: certified.signing_key.serialize_pem().into_bytes(),
        });
    }
    let url = format!("sqlite://{}", dir.path().join("abuse.db").display());
    let settings = jobstatus::app::Settings {
        serve,
        ..common::settings(url)
    };
    let app = App::build(settings).await.unwrap();
    let stats = app.edge_stats();
    let running = Running::start(app);
    let server = Server {
        addr: running.addr,
        running,
        stats,
        cert_pem,
        _dir: dir,
    };
    server.create_job(1).await;
    server
}

impl Server {
    async fn channel(&self) -> Channel {
        match &self.cert_pem {
            None => self.running.channel().await,
            Some(pem) => {
                let tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                    .domain_name("localhost");
                Channel::from_shared(format!("https://{}", self.addr))
                    .unwrap()
                    .tls_config(tls)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap()
            }
        }
    }

    async fn create_job(&self, id: i64) {
        JobAdminServiceClient::new(self.channel().await)
            .create_job(authed(
                pb::CreateJobRequest {
                    job_id: id,
                    client_id: CLIENT.into(),
                    worker_id: WORKER.into(),
                    request_id: String::new(),
                },
                &service_token(),
            ))
            .await
            .unwrap();
    }

    /// A legitimate client, on a connection of its own, is served in time.
    async fn serves_a_legitimate_client(&self) {
        let call = async {
            JobServiceClient::new(self.channel().await)
                .get_job(authed(pb::GetJobRequest { job_id: 1 }, &token(CLIENT)))
                .await
        };
        let job = tokio::time::timeout(PATIENCE, call)
            .await
            .expect("a legitimate call is answered in time")
            .expect("a legitimate call succeeds")
            .into_inner();
        assert_eq!(job.job_id, 1);
    }

    async fn stop(mut self) {
        self.running.stop().await;
    }
}

/// Reads until the peer closes (true) or `within` passes (false).
async fn closed_within<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Everything the peer sends until it closes, within `within`.
async fn read_to_close<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the server did not close the connection within {within:?}; got {:?}",
                String::from_utf8_lossy(&all)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return all,
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// A gRPC length-prefixed frame.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

// ------------------------------------------------------------ raw HTTP/2

type H2 = h2::client::SendRequest<Bytes>;

/// A raw HTTP/2 connection (prior knowledge, clear text), and the task
/// driving it: it ends when the server closes the connection.
async fn h2_connect(addr: SocketAddr) -> (H2, tokio::task::JoinHandle<()>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    (send.ready().await.unwrap(), driver)
}

/// Opens a gRPC call on `h2` and sends `body` (ending the request when
/// `end` is set).
async fn h2_call(
    h2: &mut H2,
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    body: &[u8],
    end: bool,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    *h2 = h2.clone().ready().await.unwrap();
    let (response, mut stream) = h2.send_request(request.body(()).unwrap(), false).unwrap();
    stream.send_data(Bytes::copy_from_slice(body), end).unwrap();
    (response, stream)
}

/// How a raw gRPC call ended: its status, from the head (trailers-only) or
/// from the trailers after the body.
async fn h2_status(response: h2::client::ResponseFuture) -> tonic::Status {
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .expect("an answer in time")
        .expect("an HTTP/2 answer");
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return status;
    }
    let mut body = response.into_body();
    while let Some(chunk) = tokio::time::timeout(PATIENCE, body.data()).await.unwrap() {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = tokio::time::timeout(PATIENCE, body.trailers())
        .await
        .unwrap()
        .unwrap()
        .expect("trailers");
    tonic::Status::from_header_map(&trailers).expect("grpc-status in the trailers")
}

// ------------------------------------------------------------------- TLS

async fn tls_connect(
    addr: SocketAddr,
    cert_pem: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

// ---------------------------------------------------------------- tests

/// Connections that send nothing, part of the HTTP/2 preface, or part of an
/// HTTP/1.1 head are closed once the handshake timeout passes; meanwhile a
/// legitimate client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_their_opening_are_closed() {
    let server = spawn(quick(), false).await;
    let mut silent = Vec::new();
    for i in 0..60 {
        let mut socket = TcpStream::connect(server.addr).await.unwrap();
        match i % 3 {
            0 => {}
            1 => socket.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap(),
            _ => socket
                .write_all(b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nhost: x\r\n")
                .await
                .unwrap(),
        }
        silent.push(socket);
    }
    server.serves_a_legitimate_client().await;
    let started = Instant::now();
    for socket in &mut silent {
        assert!(
            closed_within(socket, Duration::from_secs(5)).await,
            "a silent connection must be closed"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nothing, and half a preface, are ours to time out; a half head is
    // hyper's (its header read timeout).
    assert!(server.stats.handshake_timeouts.load(Ordering::Relaxed) >= 40);
    server.serves_a_legitimate_client().await;
    server.stop().await;
}

/// The HTTP/2 preface must be followed by its SETTINGS frame in time too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preface_without_its_settings_frame_is_closed() {
    let server = spawn(quick(), false).await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x06\x04")
        .await
        .unwrap();
    assert!(closed_within(&mut socket, Duration::from_secs(3)).await);
    server.stop().await;
}

/// Over TLS: no ClientHello, half a ClientHello, and a finished handshake
/// followed by nothing are all closed after the handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_that_stall_are_closed() {
    let server = spawn(quick(), true).await;
    let mut nothing = TcpStream::connect(server.addr).await.unwrap();
    let mut half_hello = TcpStream::connect(server.addr).await.unwrap();
    // A handshake record header announcing 512 bytes, and 10 of them.
    half_hello
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .await
        .unwrap();
    let pem = server.cert_pem.clone().unwrap();
    let mut quiet = tls_connect(server.addr, &pem, &[b"h2"]).await;
    server.serves_a_legitimate_client().await;
    assert!(closed_within(&mut nothing, Duration::from_secs(3)).await);
    assert!(closed_within(&mut half_hello, Duration::from_secs(3)).await);
    assert!(closed_within(&mut quiet, Duration::from_secs(3)).await);
    assert!(server.stats.handshake_timeouts.load(Ordering::Relaxed) >= 3);
    server.serves_a_legitimate_client().await;
    server.stop().await;
}

/// HTTP/1.1 over TLS has the same head bound as in clear text: a 100 KiB
/// head is refused (431), a 7 KiB one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_heads_over_tls_are_bounded_like_clear_text() {
    let server = spawn(quick(), true).await;
    let pem = server.cert_pem.clone().unwrap();
    let ask = |padding: usize| {
        format!(
            "POST {HEALTH_CHECK} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/grpc-web+proto\r\nx-pad: {}\r\ncontent-length: 5\r\n\r\n\0\0\0\0\0",
            "a".repeat(padding)
        )
    };
    let mut small = tls_connect(server.addr, &pem, &[b"http/1.1"]).await;
    small.write_all(ask(7 * 1024).as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(PATIENCE, small.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let mut large = tls_connect(server.addr, &pem, &[b"http/1.1"]).await;
    // The server may close before it has read all of it.
    let _ = large.write_all(ask(100 * 1024).as_bytes()).await;
    let answer = read_to_close(&mut large, Duration::from_secs(5)).await;
    let head = String::from_utf8_lossy(&answer);
    // Refused with 431, or (when the close overtook it) not answered at all.
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 431"),
        "{head}"
    );
    server.stop().await;
}

/// A grpc-web request that declares a large body and trickles it, or a
/// chunked body that never ends, is ended when the request read timeout
/// passes: answered DEADLINE_EXCEEDED and the connection closed. With and
/// without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_bodies_are_ended_by_the_read_timeout() {
    let server = spawn(quick(), false).await;
    let bearer = format!("Bearer {}", token(CLIENT));
    let cases = [
        (HEALTH_CHECK, None, "content-length: 1073741824"),
        (HEALTH_CHECK, None, "transfer-encoding: chunked"),
        (GET_JOB, Some(bearer.as_str()), "content-length: 1073741824"),
        (GET_JOB, Some(bearer.as_str()), "transfer-encoding: chunked"),
    ];
    for (path, auth, length) in cases {
        let socket = TcpStream::connect(server.addr).await.unwrap();
        let (mut reader, mut writer) = socket.into_split();
        let auth = auth
            .map(|a| format!("authorization: {a}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc-web+proto\r\n{auth}{length}\r\n\r\n"
        );
        writer.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        // A byte every 100 ms, for longer than the read timeout allows,
        // while the answer is read.
        let chunked = length.contains("chunked");
        let trickle = tokio::spawn(async move {
            for _ in 0..40 {
                let piece: &[u8] = if chunked { b"1\r\n\0\r\n" } else { b"\0" };
                if writer.write_all(piece).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let answer = read_to_close(&mut reader, Duration::from_secs(8)).await;
        trickle.abort();
        let text = String::from_utf8_lossy(&answer);
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "{path} {length}: ended in {:?}",
            started.elapsed()
        );
        // In the head (trailers-only) or in the trailer frame.
        assert!(
            text.contains("grpc-status: 4") || text.contains("grpc-status:4"),
            "{path} {length}: {text}"
        );
        assert!(
            text.contains("request-read-timeout"),
            "{path} {length}: {text}"
        );
    }
    server.serves_a_legitimate_client().await;
    server.stop().await;
}

/// Over HTTP/2, a Health/Check that announces a 4 MiB message is refused at
/// once (RESOURCE_EXHAUSTED: health accepts only small messages), and one
/// that stops half-way through a small message is ended by the read
/// timeout; neither needs a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_health_messages_are_refused_or_ended() {
    let mut options = quick();
    // Long enough to tell "refused at once" from "ended by the timeout".
    options.connections.request_read_timeout = Duration::from_secs(3);
    let server = spawn(options, false).await;
    let (mut h2, _driver) = h2_connect(server.addr).await;

    let mut big = vec![0u8];
    big.extend_from_slice(&(4 * 1024 * 1024 - 1_u32).to_be_bytes());
    big.extend(std::iter::repeat_n(0u8, 16 * 1024));
    let started = Instant::now();
    let (response, _stream) = h2_call(&mut h2, server.addr, HEALTH_CHECK, None, &big, false).await;
    let status = h2_status(response).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("4194303"), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once"
    );

    let mut small = vec![0u8, 0, 0, 0, 100];
    small.extend_from_slice(&[0x0a; 10]);
    let started = Instant::now();
    let (response, _stream) =
        h2_call(&mut h2, server.addr, HEALTH_CHECK, None, &small, false).await;
    let status = h2_status(response).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(8),
        "{took:?}"
    );
    server.serves_a_legitimate_client().await;
    server.stop().await;
}

/// A connection may hold only so many calls without a valid token; more
/// are answered RESOURCE_EXHAUSTED, while a call with a token on the same
/// connection is served, and a place frees when one of them ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_token_are_bounded_per_connection() {
    let mut options = quick();
    options.calls = CallLimits {
        max_anonymous_streams: 4,
        ..CallLimits::default()
    };
    let server = spawn(options, false).await;
    let (mut h2, _driver) = h2_connect(server.addr).await;
    let mut watches = Vec::new();
    for _ in 0..4 {
        let (response, stream) =
            h2_call(&mut h2, server.addr, HEALTH_WATCH, None, &frame(&[]), true).await;
        let response = tokio::time::timeout(PATIENCE, response)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            tonic::Status::from_header_map(response.headers()).is_none(),
            "the watch is open"
        );
        watches.push((response, stream));
    }
    let (refused, _s) = h2_call(&mut h2, server.addr, HEALTH_CHECK, None, &frame(&[]), true).await;
    let status = h2_status(refused).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-anonymous-streams"),
        "{status:?}"
    );
    assert!(status.message().contains('4'), "{status:?}");
    // A forged token counts as none.
    let (forged, _s) = h2_call(
        &mut h2,
        server.addr,
        GET_JOB,
        Some("e30.e30.c2ln"),
        &frame(&pb::GetJobRequest { job_id: 1 }.encode_to_vec()),
        true,
    )
    .await;
    assert_eq!(h2_status(forged).await.code(), Code::ResourceExhausted);

    // With a valid token, on the same connection: served.
    let (served, _s) = h2_call(
        &mut h2,
        server.addr,
        GET_JOB,
        Some(&token(CLIENT)),
        &frame(&pb::GetJobRequest { job_id: 1 }.encode_to_vec()),
        true,
    )
    .await;
    assert_eq!(h2_status(served).await.code(), Code::Ok);

    // One watch ends: its place is free again.
    drop(watches.pop());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (again, _s) =
            h2_call(&mut h2, server.addr, HEALTH_CHECK, None, &frame(&[]), true).await;
        let code = h2_status(again).await.code();
        if code == Code::Ok {
            break;
        }
        assert_eq!(code, Code::ResourceExhausted);
        assert!(Instant::now() < deadline, "the place was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.serves_a_legitimate_client().await;
    server.stop().await;
}

/// WatchJob and WatchMyJobs together are capped per user (and, higher, per
/// service); the refusal names the limit, other users are unaffected, and
/// a place frees when a stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_are_capped_per_user_and_per_service() {
    let mut options = quick();
    options.calls = CallLimits {
        max_watches_per_user: 3,
        max_watches_per_service: 5,
        ..CallLimits::default()
    };
    let server = spawn(options, false).await;
    let channel = server.channel().await;
    let mut client = JobServiceClient::new(channel.clone());
    let watch = |who: &str| {
        authed(
            pb::WatchJobRequest {
                job_id: 1,
                after_revision: None,
            },
            who,
        )
    };
    let alice = token(CLIENT);
    let mut open = Vec::new();
    open.push(client.watch_job(watch(&alice)).await.unwrap().into_inner());
    open.push(client.watch_job(watch(&alice)).await.unwrap().into_inner());
    let mine = client
        .watch_my_jobs(authed(pb::WatchMyJobsRequest::default(), &alice))
        .await
        .unwrap()
        .into_inner();
    let refused = client.watch_job(watch(&alice)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("at most 3"), "{refused:?}");
    assert!(
        refused.message().contains("--max-watches-per-user"),
        "{refused:?}"
    );
    let refused = client
        .watch_my_jobs(authed(pb::WatchMyJobsRequest::default(), &alice))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);

    // The worker is another user: not affected.
    let bob = client.watch_job(watch(&token(WORKER))).await;
    assert!(bob.is_ok(), "{bob:?}");

    // Services have their own limit.
    let service = service_token();
    let mut services = Vec::new();
    for _ in 0..5 {
        services.push(
            client
                .watch_job(watch(&service))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let refused = client.watch_job(watch(&service)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("--max-watches-per-service"),
        "{refused:?}"
    );

    // One of alice's streams ends; she may open another.
    drop(mine);
    let deadline = Instant::now() + PATIENCE;
    loop {
        match client.watch_job(watch(&alice)).await {
            Ok(stream) => {
                open.push(stream.into_inner());
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                assert!(Instant::now() < deadline, "the place was never given back");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    server.stop().await;
}

/// Beyond --max-connections, a new connection is closed at once and
/// counted; when one closes, new clients get in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let mut options = quick();
    options.connections.max_connections = 4;
    let server = spawn(options, false).await;
    // The connection that created the job must have gone first.
    let deadline = Instant::now() + PATIENCE;
    while server.stats.open() > 0 {
        assert!(Instant::now() < deadline, "set-up connections stay open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(h2_connect(server.addr).await);
    }
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(2)).await,
        "a connection beyond the cap is closed at once"
    );
    assert!(server.stats.refused_at_capacity.load(Ordering::Relaxed) >= 1);
    drop(held.pop());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(2), async {
            JobServiceClient::new(server.running.channel().await)
                .get_job(authed(pb::GetJobRequest { job_id: 1 }, &token(CLIENT)))
                .await
        });
        if let Ok(Ok(job)) = attempt.await {
            assert_eq!(job.into_inner().job_id, 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after a connection closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// An HTTP/2 connection with no call open is closed (GOAWAY) after the idle
/// timeout; one holding a watch stream is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed() {
    let mut options = quick();
    options.connections.idle_timeout = Duration::from_millis(800);
    let server = spawn(options, false).await;
    let (_idle, idle_driver) = h2_connect(server.addr).await;
    let (mut busy, busy_driver) = h2_connect(server.addr).await;
    let (watch, _stream) = h2_call(
        &mut busy,
        server.addr,
        "/jobstatus.v1.JobService/WatchJob",
        Some(&token(CLIENT)),
        &frame(
            &pb::WatchJobRequest {
                job_id: 1,
                after_revision: None,
            }
            .encode_to_vec(),
        ),
        true,
    )
    .await;
    let watch = tokio::time::timeout(PATIENCE, watch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(watch.status(), 200);
    tokio::time::timeout(Duration::from_secs(4), idle_driver)
        .await
        .expect("the idle connection is closed")
        .unwrap();
    assert!(server.stats.idle_closed.load(Ordering::Relaxed) >= 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        !busy_driver.is_finished(),
        "a connection with an open call stays"
    );
    drop(watch);
    server.stop().await;
}

/// Two `authorization` headers are refused, over native gRPC and grpc-web,
/// even when both carry the same valid token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_are_unauthenticated() {
    let server = spawn(quick(), false).await;
    let bearer = format!("Bearer {}", token(CLIENT));
    let mut request = tonic::Request::new(pb::GetJobRequest { job_id: 1 });
    request
        .metadata_mut()
        .append("authorization", bearer.parse().unwrap());
    request
        .metadata_mut()
        .append("authorization", bearer.parse().unwrap());
    let refused = JobServiceClient::new(server.channel().await)
        .get_job(request)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused
            .message()
            .contains("more than one authorization header")
    );

    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let body = frame(&pb::GetJobRequest { job_id: 1 }.encode_to_vec());
    let head = format!(
        "POST {GET_JOB} HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc-web+proto\r\nauthorization: {bearer}\r\nauthorization: {bearer}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body).await.unwrap();
    let answer = read_to_close(&mut socket, PATIENCE).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("grpc-status: 16"), "{text}");
    server.stop().await;
}

/// A message over the size limit is RESOURCE_EXHAUSTED; a malformed one is
/// INVALID_ARGUMENT, without the decoder's own words, on the services and
/// on health checking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_messages_get_clear_statuses() {
    let mut options = quick();
    options.calls.max_request_bytes = 1024;
    let server = spawn(options, false).await;
    let (mut h2, _driver) = h2_connect(server.addr).await;
    let alice = token(CLIENT);

    let (response, _s) = h2_call(
        &mut h2,
        server.addr,
        GET_JOB,
        Some(&alice),
        &frame(&[0u8; 2000]),
        true,
    )
    .await;
    let status = h2_status(response).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "the request message is 2000 bytes; this method accepts at most 1024 bytes"
    );

    for (path, bearer) in [(GET_JOB, Some(alice.as_str())), (HEALTH_CHECK, None)] {
        let (response, _s) = h2_call(
            &mut h2,
            server.addr,
            path,
            bearer,
            &frame(&[0xff, 0xff, 0xff]),
            true,
        )
        .await;
        let status = h2_status(response).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert!(!status.message().contains("failed to decode"), "{status:?}");
        assert!(
            status.message().contains("not a valid protobuf message"),
            "{status:?}"
        );
    }
    server.serves_a_legitimate_client().await;
    server.stop().await;
}

/// A request larger than the HTTP/2 stream window still arrives: the
/// window only bounds what is buffered unread, not what may be sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_larger_than_the_stream_window_flow_through() {
    let mut options = quick();
    options.connections.stream_window = 65_535;
    options.connections.connection_window = 65_535;
    options.connections.send_buffer = 1024;
    let server = spawn(options, false).await;
    // A resume map of 10 000 jobs: about 90 KB, more than the window.
    let after_revisions: std::collections::HashMap<i64, i64> =
        (1_000_000..1_010_000).map(|id| (id, 1)).collect();
    assert!(
        pb::WatchMyJobsRequest {
            after_revisions: after_revisions.clone()
        }
        .encoded_len()
            > 65_535
    );
    let stream = JobServiceClient::new(server.channel().await)
        .watch_my_jobs(authed(
            pb::WatchMyJobsRequest { after_revisions },
            &token(CLIENT),
        ))
        .await;
    assert!(stream.is_ok(), "{stream:?}");
    server.stop().await;
}

// ------------------------------------------------- the real binary

/// Refused authentications are logged with the peer address and the
/// reason, never the token, and a flood of them is logged at the
/// configured rate with a count of what was left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_authentications_are_logged_at_a_bounded_rate() {
    let server = Process::start(&["--auth-log-per-sec", "3"]).await;
    // Signed with another secret: a forgery.
    let forged = jobstatus::auth::mint(
        &jobstatus::auth::JwtSettings::new(b"not-the-servers-secret-0123456789abcdef".to_vec()),
        CLIENT,
        jobstatus::auth::TokenKind::User,
        chrono::Duration::hours(1),
    )
    .unwrap();
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = JobServiceClient::new(channel);
    let started = Instant::now();
    for _ in 0..60 {
        let refused = client
            .get_job(authed(pb::GetJobRequest { job_id: 1 }, &forged))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
    // Past the window: the next refusal is logged with the count left out.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = client
        .get_job(authed(pb::GetJobRequest { job_id: 1 }, &forged))
        .await;
    let windows = started.elapsed().as_secs() + 1;
    let deadline = Instant::now() + PATIENCE;
    let lines = loop {
        let lines = server.logged("call refused: authentication");
        if lines
            .iter()
            .any(|l| l.contains("\"suppressed\":") && !l.contains("\"suppressed\":0"))
        {
            break lines;
        }
        assert!(Instant::now() < deadline, "no summary line: {lines:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        lines.len() as u64 <= 3 * windows,
        "{} lines in {windows} s",
        lines.len()
    );
    let first = &lines[0];
    assert!(first.contains("\"peer\":\"127.0.0.1:"), "{first}");
    assert!(
        first.contains("invalid token: its signature does not match"),
        "{first}"
    );
    let signature = forged.rsplit('.').next().unwrap();
    assert!(
        server
            .lines
            .lock()
            .unwrap()
            .iter()
            .all(|l| !l.contains(signature)),
        "no log line carries the token"
    );
}

/// With its open-files limit reached, the server backs off between failed
/// accepts instead of spinning, keeps serving the connections it has, and
/// accepts again once descriptors free up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_does_not_spin() {
    let server = Process::start(&["--handshake-timeout-ms", "60000"]).await;
    // A service token creates the job the legitimate client reads.
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    JobAdminServiceClient::new(channel.clone())
        .create_job(authed(
            pb::CreateJobRequest {
                job_id: 1,
                client_id: CLIENT.into(),
                worker_id: WORKER.into(),
                request_id: String::new(),
            },
            &service_token(),
        ))
        .await
        .unwrap();

    // Warm the read pool: the call after the limit is reached must need no
    // new descriptor.
    let mut client = JobServiceClient::new(channel.clone());
    client
        .get_job(authed(pb::GetJobRequest { job_id: 1 }, &token(CLIENT)))
        .await
        .unwrap();

    let pid = server.pid();
    let (mut soft, mut hard) = (0, 0);
    rlimit::prlimit(
        pid,
        rlimit::Resource::NOFILE,
        None,
        Some((&mut soft, &mut hard)),
    )
    .unwrap();
    let open_now = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let limit = open_now + 8;
    assert!(
        limit < soft,
        "the server raised its limit at start-up: {soft}"
    );
    rlimit::prlimit(pid, rlimit::Resource::NOFILE, Some((limit, hard)), None).unwrap();

    // Far more idle connections than descriptors are left.
    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.cpu_secs();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = server.cpu_secs() - before;
    assert!(
        used < 0.3,
        "the server used {used} s of CPU in 1 s: it spins"
    );
    // The connection it already had is still served.
    let job = client
        .get_job(authed(pb::GetJobRequest { job_id: 1 }, &token(CLIENT)))
        .await
        .unwrap();
    assert_eq!(job.into_inner().job_id, 1);
    assert!(!server.logged("accepting a connection failed").is_empty());

    // Descriptors free up: new clients get in again.
    drop(idle);
    rlimit::prlimit(pid, rlimit::Resource::NOFILE, Some((soft, hard)), None).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while server.get_job_code(&token(CLIENT)).await != Code::Ok {
        assert!(Instant::now() < deadline, "the server did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client that completes its opening and then never answers the
/// server's PINGs is closed after the keepalive interval and timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_do_not_answer_pings_are_closed() {
    let mut options = quick();
    options.connections.keepalive_interval = Duration::from_millis(500);
    options.connections.keepalive_timeout = Duration::from_millis(500);
    let server = spawn(options, false).await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    // The preface and an empty SETTINGS frame; after that, silence: the
    // server's SETTINGS and PINGs are read and never answered.
    socket
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut socket, Duration::from_secs(5)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "closed for not answering a PING, not before one was sent: {:?}",
        started.elapsed()
    );
    server.stop().await;
}

/// An HTTP/2 header list over --http2-max-header-bytes is refused before
/// any service sees it; one within it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_http2_header_lists_are_refused() {
    let mut options = quick();
    options.connections.http2_max_header_bytes = 8 * 1024;
    let server = spawn(options, false).await;
    let (mut h2, _driver) = h2_connect(server.addr).await;
    let ask = |padding: usize| {
        http::Request::builder()
            .method("POST")
            .uri(format!("http://{}{HEALTH_CHECK}", server.addr))
            .header("content-type", "application/grpc")
            .header("x-pad", "a".repeat(padding))
            .body(())
            .unwrap()
    };
    h2 = h2.ready().await.unwrap();
    let (small, mut body) = h2.send_request(ask(4 * 1024), false).unwrap();
    body.send_data(Bytes::from(frame(&[])), true).unwrap();
    assert_eq!(h2_status(small).await.code(), Code::Ok);

    h2 = h2.ready().await.unwrap();
    let (large, _body) = h2.send_request(ask(12 * 1024), false).unwrap();
    match tokio::time::timeout(PATIENCE, large).await.unwrap() {
        Ok(response) => assert_eq!(response.status(), 431),
        Err(err) => assert!(err.is_reset() || err.is_go_away(), "{err}"),
    }
    server.serves_a_legitimate_client().await;
    server.stop().await;
}
