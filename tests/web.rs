//! Browser-facing transport, tested from outside: grpc-web (binary and text)
//! over plain HTTP/1.1 on the native gRPC port, the CORS policy, TLS with a
//! certificate made here, and heartbeats. (WatchMyJobs is tested in
//! tests/api/my_jobs.rs, on both backends.)
//!
//! HTTP/1.1 requests are written by hand on a TCP socket, exactly as a
//! browser would put them on the wire, so nothing in between can paper over
//! a protocol mistake.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::Message;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use jobstatus::app::{App, Settings};
use jobstatus::grpc::ServeOptions;
use jobstatus::grpc::pb;
use jobstatus::grpc::pb::job_service_client::JobServiceClient;
use jobstatus::grpc::pb::watch_job_response::Kind as WatchKind;
use jobstatus::grpc::tls::TlsPem;
use jobstatus::grpc::web::CorsPolicy;

mod common;
use common::{PATIENCE, Running, authed, create_job, mark_complete, next, token};

const CLIENT: &str = "client-alice";
const WORKER: &str = "worker-bob";
const STRANGER: &str = "stranger-eve";
const ALLOWED_ORIGIN: &str = "http://app.example.test:5173";

// ---------------------------------------------------------------- server

struct Opts {
    heartbeat: Duration,
    cors: CorsPolicy,
    tls: Option<TlsPem>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            cors: CorsPolicy {
                origins: vec![ALLOWED_ORIGIN.into()],
                allow_localhost: false,
            },
            tls: None,
        }
    }
}

struct Server {
    addr: SocketAddr,
    database_url: String,
    running: Running,
    _dir: Arc<TempDir>,
}

async fn spawn(opts: Opts) -> Server {
    let dir = TempDir::new().expect("temp dir");
    let database_url = format!("sqlite://{}", dir.path().join("web.db").display());
    let settings = Settings {
        heartbeat: opts.heartbeat,
        serve: ServeOptions {
            cors: opts.cors,
            tls: opts.tls,
            ..ServeOptions::default()
        },
        ..common::settings(database_url.clone())
    };
    let app = App::build(settings).await.expect("server starts");
    let running = Running::start(app);
    Server {
        addr: running.addr,
        database_url,
        running,
        _dir: Arc::new(dir),
    }
}

impl Server {
    async fn channel(&self) -> Channel {
        self.running.channel().await
    }

    async fn stop(&mut self) {
        self.running.stop().await;
    }
}

// ------------------------------------------------- raw HTTP/1.1 client

/// A response read from a raw HTTP/1.1 connection. The body is decoded
/// incrementally (chunked or by length), so streams can be read frame by
/// frame.
struct Http1 {
    socket: TcpStream,
    status: u16,
    headers: Vec<(String, String)>,
    raw: Vec<u8>,
    body: Vec<u8>,
    chunked: bool,
    remaining: Option<usize>,
    done: bool,
}

impl Http1 {
    async fn send(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Self {
        let mut socket = TcpStream::connect(addr).await.expect("connect");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        socket.write_all(head.as_bytes()).await.expect("write");
        socket.write_all(body).await.expect("write");
        let mut this = Self {
            socket,
            status: 0,
            headers: Vec::new(),
            raw: Vec::new(),
            body: Vec::new(),
            chunked: false,
            remaining: None,
            done: false,
        };
        this.read_head().await;
        this
    }

    async fn fill(&mut self) -> bool {
        let mut buf = [0u8; 8192];
        let n = tokio::time::timeout(PATIENCE, self.socket.read(&mut buf))
            .await
            .expect("bytes in time")
            .expect("read");
        self.raw.extend_from_slice(&buf[..n]);
        n > 0
    }

    async fn read_head(&mut self) {
        loop {
            if let Some(end) = find(&self.raw, b"\r\n\r\n") {
                let head = String::from_utf8(self.raw[..end].to_vec()).expect("ascii head");
                self.raw.drain(..end + 4);
                let mut lines = head.split("\r\n");
                let status_line = lines.next().expect("status line");
                assert!(
                    status_line.starts_with("HTTP/1.1 "),
                    "an HTTP/1.1 answer: {status_line}"
                );
                self.status = status_line[9..12].parse().expect("status");
                for line in lines {
                    let (name, value) = line.split_once(':').expect("header line");
                    self.headers
                        .push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
                self.chunked = self
                    .header("transfer-encoding")
                    .is_some_and(|v| v.contains("chunked"));
                self.remaining = self.header("content-length").map(|v| v.parse().unwrap());
                if self.remaining == Some(0) {
                    self.done = true;
                }
                return;
            }
            assert!(self.fill().await, "connection closed before the head");
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Decodes more of the body; false once it has ended.
    async fn more(&mut self) -> bool {
        if self.done {
            return false;
        }
        if self.chunked {
            loop {
                if let Some(line_end) = find(&self.raw, b"\r\n") {
                    let size_text = std::str::from_utf8(&self.raw[..line_end]).expect("size");
                    let size = usize::from_str_radix(size_text.split(';').next().unwrap(), 16)
                        .expect("chunk size");
                    if size == 0 {
                        self.done = true;
                        return false;
                    }
                    if self.raw.len() >= line_end + 2 + size + 2 {
                        let start = line_end + 2;
                        self.body.extend_from_slice(&self.raw[start..start + size]);
                        self.raw.drain(..start + size + 2);
                        return true;
                    }
                }
                if !self.fill().await {
                    self.done = true;
                    return false;
                }
            }
        }
        if self.raw.is_empty() && !self.fill().await {
            self.done = true;
            return false;
        }
        let take = self.raw.len().min(self.remaining.unwrap_or(usize::MAX));
        self.body.extend(self.raw.drain(..take));
        if let Some(left) = self.remaining.as_mut() {
            *left -= take;
            if *left == 0 {
                self.done = true;
            }
        }
        true
    }

    async fn whole_body(&mut self) -> Vec<u8> {
        while self.more().await {}
        std::mem::take(&mut self.body)
    }

    /// The next grpc-web frame, which must be a data frame holding a Job.
    async fn next_job(&mut self) -> pb::Job {
        let (flag, payload) = self.next_frame().await.expect("data frame");
        assert_eq!(flag, 0, "{}", String::from_utf8_lossy(&payload));
        pb::Job::decode(payload.as_slice()).expect("a Job")
    }

    /// The next grpc-web frame (flag byte, payload) of a binary body.
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some(frame) = take_frame(&mut self.body) {
                return Some(frame);
            }
            if !self.more().await {
                return None;
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn frame(message: &impl Message) -> Vec<u8> {
    frame_bytes(&message.encode_to_vec())
}

/// A grpc-web data frame around an already encoded message.
fn frame_bytes(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A JobService call over grpc-web on a new HTTP/1.1 connection.
async fn post(addr: SocketAddr, rpc: &str, headers: &[(&str, &str)], body: &[u8]) -> Http1 {
    let path = format!("/jobstatus.v1.JobService/{rpc}");
    Http1::send(addr, "POST", &path, headers, body).await
}

/// GetJob over grpc-web binary on a new HTTP/1.1 connection, answered OK.
async fn get_job_over_http1(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> pb::Job {
    let mut response = post(addr, "GetJob", headers, body).await;
    assert_eq!(response.status, 200);
    response.next_job().await
}

fn take_frame(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    let flag = buf[0];
    let payload = buf[5..5 + len].to_vec();
    buf.drain(..5 + len);
    Some((flag, payload))
}

/// The grpc-status and grpc-message of an answer without a message: in
/// the headers (trailers-only) or in the trailer frame.
async fn grpc_status(response: &mut Http1) -> (String, String) {
    if let Some(code) = response.header("grpc-status") {
        let message = response.header("grpc-message").unwrap_or_default();
        return (code.to_owned(), message.to_owned());
    }
    let (flag, payload) = response.next_frame().await.expect("trailers");
    assert_eq!(flag, 0x80);
    let mut trailers = trailers(&payload);
    let message = trailers.remove("grpc-message").unwrap_or_default();
    (
        trailers.remove("grpc-status").expect("grpc-status"),
        message,
    )
}

/// grpc-web trailers (a frame with the 0x80 flag) as a map.
fn trailers(payload: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(payload)
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

fn grpc_web_headers<'a>(token: &'a str, content_type: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("content-type", content_type),
        ("x-grpc-web", "1"),
        ("x-user-agent", "grpc-web-test"),
        ("authorization", token),
    ]
}

// ----------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_binary_over_http1_answers_unary_calls_and_errors() {
    let mut server = spawn(Opts::default()).await;
    let channel = server.channel().await;
    create_job(&channel, 1, CLIENT, WORKER).await;

    let bearer = format!("Bearer {}", token(CLIENT));
    let mut origin_headers = grpc_web_headers(&bearer, "application/grpc-web+proto");
    origin_headers.push(("origin", ALLOWED_ORIGIN));
    let mut response = post(
        server.addr,
        "GetJob",
        &origin_headers,
        &frame(&pb::GetJobRequest { job_id: 1 }),
    )
    .await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("application/grpc-web+proto")
    );
    // The page's origin is granted and may read the gRPC status headers.
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    let exposed = response
        .header("access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(name), "{name} exposed in {exposed}");
    }
    assert!(
        response
            .header("vary")
            .is_some_and(|v| v.to_ascii_lowercase().contains("origin"))
    );
    let job = response.next_job().await;
    assert_eq!(
        (job.job_id, job.client_id.as_str(), job.revision),
        (1, CLIENT, 1)
    );
    let (flag, payload) = response.next_frame().await.expect("trailer frame");
    assert_eq!(flag, 0x80);
    assert_eq!(trailers(&payload)["grpc-status"], "0");

    // A stranger: the refusal travels as grpc-status, readable by the page.
    let bearer = format!("Bearer {}", token(STRANGER));
    let mut response = post(
        server.addr,
        "GetJob",
        &grpc_web_headers(&bearer, "application/grpc-web+proto"),
        &frame(&pb::GetJobRequest { job_id: 1 }),
    )
    .await;
    assert_eq!(response.status, 200);
    // Without an `Origin` (no browser sent it) the answer carries no CORS
    // headers at all: there is no origin to grant or to vary by.
    for name in [
        "access-control-allow-origin",
        "access-control-expose-headers",
        "vary",
    ] {
        assert_eq!(response.header(name), None, "{name}");
    }
    let (status, _) = grpc_status(&mut response).await;
    assert_eq!(status, (Code::PermissionDenied as i32).to_string());
    server.stop().await;
}

/// HTTP/1.1 connections read into at most 8 KiB (what keeps an idle
/// browser watch small): a request head that fits is served, a body larger
/// than the buffer streams through it, and a head that does not fit is
/// refused at once rather than left hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_requests_are_read_through_a_bounded_buffer() {
    let mut server = spawn(Opts::default()).await;
    let channel = server.channel().await;
    create_job(&channel, 1, CLIENT, WORKER).await;
    let bearer = format!("Bearer {}", token(CLIENT));

    // A head just under 8 KiB (a token and a large cookie, say).
    let cookie = "c".repeat(7 * 1024);
    let mut headers = grpc_web_headers(&bearer, "application/grpc-web+proto");
    headers.push(("cookie", &cookie));
    let body = frame(&pb::GetJobRequest { job_id: 1 });
    assert_eq!(
        get_job_over_http1(server.addr, &headers, &body)
            .await
            .job_id,
        1
    );

    // A 64 KiB body: the request plus a field this server does not know,
    // which protobuf skips. It arrives in several reads of the buffer.
    let mut message = pb::GetJobRequest { job_id: 1 }.encode_to_vec();
    prost::encoding::bytes::encode(15, &vec![7u8; 64 * 1024], &mut message);
    let headers = grpc_web_headers(&bearer, "application/grpc-web+proto");
    let job = get_job_over_http1(server.addr, &headers, &frame_bytes(&message)).await;
    assert_eq!(job.job_id, 1);

    // A 9 KiB head: refused with 431 and the connection closed. The close
    // may overtake the answer (the server leaves the rest of the head
    // unread), so a reset is accepted too; a 200 or silence is not.
    let cookie = "c".repeat(9 * 1024);
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /jobstatus.v1.JobService/GetJob HTTP/1.1\r\nhost: {}\r\n\
         content-type: application/grpc-web+proto\r\nauthorization: {bearer}\r\n\
         cookie: {cookie}\r\ncontent-length: 0\r\n\r\n",
        server.addr
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, socket.read_to_end(&mut answer))
        .await
        .expect("the server answers or closes in time, never hangs");
    let answer = String::from_utf8_lossy(&answer);
    match read {
        Ok(_) => assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "a too-large head is refused: {answer}"
        ),
        Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}"),
    }
    server.stop().await;
}

/// The caller's deadline (grpc-timeout) is enforced on the server, in the
/// caller's framing: a browser without a timer of its own still gets
/// DEADLINE_EXCEEDED when its call is stuck (here: the test holds SQLite's
/// write lock, and the store would wait a second for it), and a generous
/// or malformed deadline changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_calls_get_deadline_exceeded_when_their_grpc_timeout_passes() {
    use sqlx::Connection;

    let mut server = spawn(Opts::default()).await;
    let channel = server.channel().await;
    create_job(&channel, 1, CLIENT, WORKER).await;
    let bearer = format!("Bearer {}", token(WORKER));
    let body = frame(&pb::MarkCompleteRequest {
        job_id: 1,
        request_id: "deadline-1".into(),
        expected_revision: None,
    });

    let mut lock = sqlx::SqliteConnection::connect(&server.database_url)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .unwrap();
    let mut headers = grpc_web_headers(&bearer, "application/grpc-web+proto");
    headers.push(("grpc-timeout", "200m"));
    let mut response = post(server.addr, "MarkComplete", &headers, &body).await;
    assert_eq!(response.status, 200);
    let (status, message) = grpc_status(&mut response).await;
    assert_eq!(
        status,
        (Code::DeadlineExceeded as i32).to_string(),
        "{message}"
    );
    assert!(message.contains("request_id"), "{message}");
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();

    // As the message says, the change went on once the lock was free; the
    // same request_id answers with it, whatever the deadline.
    for deadline in ["10S", "bogus"] {
        let mut headers = grpc_web_headers(&bearer, "application/grpc-web+proto");
        headers.push(("grpc-timeout", deadline));
        let mut response = post(server.addr, "MarkComplete", &headers, &body).await;
        let job = response.next_job().await;
        assert_eq!(job.status, pb::JobStatus::AwaitingClientApproval as i32);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_text_over_http1_is_base64_both_ways() {
    let mut server = spawn(Opts::default()).await;
    let channel = server.channel().await;
    create_job(&channel, 7, CLIENT, WORKER).await;
    let bearer = format!("Bearer {}", token(WORKER));
    let body = BASE64.encode(frame(&pb::GetJobRequest { job_id: 7 }));
    let mut response = post(
        server.addr,
        "GetJob",
        &[
            grpc_web_headers(&bearer, "application/grpc-web-text"),
            // grpc-web text clients ask for a text answer this way.
            vec![("accept", "application/grpc-web-text")],
        ]
        .concat(),
        body.as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("application/grpc-web-text"),
        "{:?}",
        response.headers
    );
    let text = response.whole_body().await;
    // Each grpc-web-text message is base64 on its own (padding may appear
    // between the data frame and the trailers), so decode piece by piece.
    let mut decoded = Vec::new();
    for piece in String::from_utf8(text).unwrap().split_inclusive('=') {
        let piece = piece.trim_start_matches('=');
        if piece.is_empty() {
            continue;
        }
        let padded = format!("{piece}{}", "=".repeat((4 - piece.len() % 4) % 4));
        decoded.extend(
            BASE64
                .decode(padded.trim_end_matches("===="))
                .expect("base64"),
        );
    }
    let (flag, payload) = take_frame(&mut decoded).expect("data frame");
    assert_eq!(flag, 0);
    assert_eq!(pb::Job::decode(payload.as_slice()).unwrap().job_id, 7);
    let (flag, payload) = take_frame(&mut decoded).expect("trailers");
    assert_eq!(flag, 0x80);
    assert_eq!(trailers(&payload)["grpc-status"], "0");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_server_streaming_over_http1_delivers_snapshot_events_and_heartbeats() {
    let mut server = spawn(Opts {
        heartbeat: Duration::from_secs(1),
        ..Opts::default()
    })
    .await;
    let channel = server.channel().await;
    create_job(&channel, 3, CLIENT, WORKER).await;
    let bearer = format!("Bearer {}", token(CLIENT));
    let mut stream = post(
        server.addr,
        "WatchJob",
        &grpc_web_headers(&bearer, "application/grpc-web+proto"),
        &frame(&pb::WatchJobRequest {
            job_id: 3,
            after_revision: None,
        }),
    )
    .await;
    assert_eq!(stream.status, 200);
    let decode = |payload: Vec<u8>| {
        pb::WatchJobResponse::decode(payload.as_slice())
            .unwrap()
            .kind
            .unwrap()
    };
    let (_, first) = stream.next_frame().await.expect("snapshot");
    let WatchKind::Snapshot(snapshot) = decode(first) else {
        panic!("snapshot first")
    };
    assert_eq!(snapshot.job.unwrap().revision, 1);
    let (_, second) = stream.next_frame().await.expect("heartbeat");
    let WatchKind::Heartbeat(beat) = decode(second) else {
        panic!("an idle stream beats")
    };
    assert_eq!(beat.revision, 1);
    mark_complete(&channel, 3, WORKER).await;
    let (_, third) = stream.next_frame().await.expect("event");
    let WatchKind::Event(event) = decode(third) else {
        panic!("the change")
    };
    assert_eq!(event.revision, 2);
    assert!(event.worker_marked_complete && event.awaiting_client_verification);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_grants_listed_origins_only() {
    let mut server = spawn(Opts::default()).await;
    let preflight = |origin: &'static str| {
        let addr = server.addr;
        async move {
            let mut response = Http1::send(
                addr,
                "OPTIONS",
                "/jobstatus.v1.JobService/WatchJob",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    (
                        "access-control-request-headers",
                        "authorization,content-type,x-grpc-web,x-user-agent,grpc-timeout",
                    ),
                ],
                b"",
            )
            .await;
            let _ = response.whole_body().await;
            response
        }
    };

    let granted = preflight(ALLOWED_ORIGIN).await;
    assert!(
        (200..300).contains(&granted.status),
        "status {}",
        granted.status
    );
    assert_eq!(
        granted.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    let allowed_headers = granted
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
    ] {
        assert!(
            allowed_headers.contains(name),
            "{name} in {allowed_headers}"
        );
    }
    assert!(
        granted
            .header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert!(granted.header("access-control-max-age").is_some());
    assert!(
        granted
            .header("vary")
            .unwrap()
            .to_ascii_lowercase()
            .contains("origin")
    );
    // Never a wildcard, never credentials.
    assert_ne!(granted.header("access-control-allow-origin"), Some("*"));
    assert!(granted.header("access-control-allow-credentials").is_none());

    for origin in [
        "http://evil.example.test",
        "http://app.example.test:5174",
        "http://localhost:5173",
    ] {
        let refused = preflight(origin).await;
        assert!(
            refused.header("access-control-allow-origin").is_none(),
            "{origin} must get no CORS grant"
        );
    }

    // A real call from a refused origin is answered (the browser is the one
    // who blocks it) but carries no grant either.
    let bearer = format!("Bearer {}", token(CLIENT));
    let mut headers = grpc_web_headers(&bearer, "application/grpc-web+proto");
    headers.push(("origin", "http://evil.example.test"));
    let mut response = post(
        server.addr,
        "GetJob",
        &headers,
        &frame(&pb::GetJobRequest { job_id: 1 }),
    )
    .await;
    let _ = response.whole_body().await;
    // (tower-http may still list exposed headers: without an allowed
    // origin they grant nothing.)
    assert!(response.header("access-control-allow-origin").is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_policy_allows_any_localhost_port() {
    let mut server = spawn(Opts {
        cors: CorsPolicy {
            origins: vec![],
            allow_localhost: true,
        },
        ..Opts::default()
    })
    .await;
    for (origin, granted) in [
        ("http://localhost:41234", true),
        ("http://127.0.0.1:5173", true),
        ("http://localhost.evil.test", false),
    ] {
        let mut response = Http1::send(
            server.addr,
            "OPTIONS",
            "/jobstatus.v1.JobService/GetJob",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization,content-type",
                ),
            ],
            b"",
        )
        .await;
        let _ = response.whole_body().await;
        assert_eq!(
            response.header("access-control-allow-origin") == Some(origin),
            granted,
            "{origin}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_grpc_heartbeats_carry_the_current_revision_on_the_same_port() {
    let mut server = spawn(Opts {
        heartbeat: Duration::from_secs(1),
        ..Opts::default()
    })
    .await;
    let channel = server.channel().await;
    create_job(&channel, 4, CLIENT, WORKER).await;
    let mut watch = JobServiceClient::new(channel.clone())
        .watch_job(authed(
            pb::WatchJobRequest {
                job_id: 4,
                after_revision: None,
            },
            &token(CLIENT),
        ))
        .await
        .expect("watch")
        .into_inner();
    let Some(WatchKind::Snapshot(_)) = next(&mut watch).await.kind else {
        panic!("snapshot first")
    };
    let started = tokio::time::Instant::now();
    let Some(WatchKind::Heartbeat(beat)) = next(&mut watch).await.kind else {
        panic!("heartbeat while idle")
    };
    assert_eq!(beat.revision, 1);
    assert!(beat.server_time.is_some());
    assert!(started.elapsed() >= Duration::from_millis(800));
    mark_complete(&channel, 4, WORKER).await;
    let Some(WatchKind::Event(event)) = next(&mut watch).await.kind else {
        panic!("event")
    };
    assert_eq!(event.revision, 2);
    let Some(WatchKind::Heartbeat(beat)) = next(&mut watch).await.kind else {
        panic!("heartbeat after the event")
    };
    assert_eq!(beat.revision, 2, "heartbeats follow the latest revision");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_self_signed_certificate_serves_grpc() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("self-signed certificate");
    let cert_pem = certified.cert.pem();
    let dir = TempDir::new().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let pem = TlsPem::load(&cert_path, &key_path).expect("loads");

    let mut server = spawn(Opts {
        tls: Some(pem),
        ..Opts::default()
    })
    .await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS connection trusting the test CA");
    let job = create_job(&channel, 9, CLIENT, WORKER).await;
    assert_eq!(job.revision, 1);
    let got = JobServiceClient::new(channel)
        .get_job(authed(pb::GetJobRequest { job_id: 9 }, &token(CLIENT)))
        .await
        .expect("get over TLS")
        .into_inner();
    assert_eq!(got.job_id, 9);

    // A client that does not trust the certificate cannot connect.
    let untrusted = Channel::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(ClientTlsConfig::new().domain_name("localhost"))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = untrusted {
        let refused = JobServiceClient::new(channel)
            .get_job(authed(pb::GetJobRequest { job_id: 9 }, &token(CLIENT)))
            .await;
        assert!(refused.is_err(), "an untrusted certificate must fail");
    }
    // Plain text on a TLS port fails too.
    let plain = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await;
    if let Ok(channel) = plain {
        assert!(
            JobServiceClient::new(channel)
                .get_job(authed(pb::GetJobRequest { job_id: 9 }, &token(CLIENT)))
                .await
                .is_err()
        );
    }
    server.stop().await;
}

#[test]
fn tls_refuses_a_key_that_does_not_parse() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("c.pem"), certified.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("k.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    assert!(TlsPem::load(&dir.path().join("c.pem"), &dir.path().join("k.pem")).is_err());
}
