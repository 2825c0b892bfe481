//! The abuse workload: what each class of attack makes the real server
//! hold, with its shipped limits, and whether a legitimate client notices.
//!
//! Each attack gets a fresh server (shipped defaults, SQLite), so that one
//! attack's memory does not hide in the next one's figures. While it runs,
//! a legitimate client calls GetJob every 20 ms on its own, already open,
//! connection; the phase reports that client's latency, the server's RSS
//! before and at the end of the attack, and the server's CPU during it. A
//! `quiet` phase with no attack comes first, for comparison.
//! Everything is loopback and bounded: each phase holds for `hold` and then
//! lets go of everything it opened.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jobstatus::auth::TokenKind;
use jobstatus::grpc::pb;
use pb::job_service_client::JobServiceClient;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tonic::metadata::AsciiMetadataValue;

use crate::harness::{
    Server, Target, authed, connect_one, create_jobs, new_histogram, record_ns, summarize,
};
use crate::workloads::{Ctx, Row};

/// How many of each thing an attack opens.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Phase length.
    pub hold: Duration,
    /// Connections that send nothing, or half a preface.
    pub silent: usize,
    /// HTTP/2 connections each opening streams without a token.
    pub anonymous_connections: usize,
    /// Streams without a token each of those tries to open.
    pub anonymous_streams: usize,
    /// HTTP/1.1 requests trickling a huge declared body.
    pub slow_bodies: usize,
    /// WatchJob streams one user tries to open.
    pub watches: usize,
    /// Connections beyond which the server refuses (its --max-connections).
    pub connection_flood: usize,
}

impl Sizes {
    pub fn full() -> Self {
        Self {
            hold: Duration::from_secs(5),
            silent: 3_000,
            anonymous_connections: 100,
            anonymous_streams: 100,
            slow_bodies: 1_000,
            watches: 20_000,
            connection_flood: 12_000,
        }
    }

    pub fn smoke() -> Self {
        Self {
            hold: Duration::from_secs(1),
            silent: 50,
            anonymous_connections: 4,
            anonymous_streams: 40,
            slow_bodies: 20,
            watches: 150,
            connection_flood: 200,
        }
    }
}

/// What one attack left open when its phase ended.
struct Held {
    /// Things the attacker still had open (connections or streams).
    open: usize,
    /// Things the server refused at once.
    refused: usize,
    /// Everything the attacker holds, dropped when the phase ends.
    _keep: Vec<Box<dyn Send>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The workload: every attack in turn, each against a fresh real server.
pub async fn abuse(ctx: &Ctx, sizes: Sizes) -> Result<Vec<Row>, String> {
    let mut spec = ctx.spec.clone();
    spec.shipped_limits = true;
    if sizes.connection_flood < 10_000 {
        // Smoke sizes: a cap the small flood can reach.
        spec.extra_args = vec![
            "--max-connections".into(),
            (sizes.connection_flood / 2).to_string(),
        ];
    }
    let mut rows = Vec::new();
    let phases: [(&'static str, usize); 8] = [
        ("ABUSE quiet", 0),
        ("ABUSE silent connections", sizes.silent),
        ("ABUSE half HTTP/2 prefaces", sizes.silent),
        ("ABUSE 4 MiB health messages", sizes.anonymous_connections),
        (
            "ABUSE health watches without a token",
            sizes.anonymous_connections * sizes.anonymous_streams,
        ),
        ("ABUSE trickled grpc-web bodies", sizes.slow_bodies),
        ("ABUSE one user's watch flood", sizes.watches),
        ("ABUSE connection flood", sizes.connection_flood),
    ];
    for (i, (name, size)) in phases.into_iter().enumerate() {
        eprintln!("  {name} (N={size})");
        let server = Server::start(&spec, Target::Real, &format!("abuse-{i}")).await?;
        let row = phase(ctx, &server, sizes, name, size).await;
        server.stop().await;
        rows.push(row?);
    }
    Ok(rows)
}

/// One attack against `server`, beside a legitimate client.
async fn phase(
    ctx: &Ctx,
    server: &Server,
    sizes: Sizes,
    name: &'static str,
    size: usize,
) -> Result<Row, String> {
    let addr = server.addr;
    let setup = connect_one(addr).await?;
    let job_id = ctx.alloc(1)[0];
    let (failed, first) = create_jobs(
        std::slice::from_ref(&setup),
        &ctx.service,
        &[job_id],
        |id| format!("w{id}"),
        1,
        "abuse",
    )
    .await;
    drop(setup);
    if failed > 0 {
        return Err(format!("{name}: CreateJob failed: {first:?}"));
    }
    let customer = ctx.tokens.bearer(&format!("c{job_id}"), TokenKind::User)?;
    let prober = connect_one(addr).await?;
    let rss_before = server.rss_kib();
    let cpu_before = server.cpu_secs();
    let stop = Arc::new(AtomicBool::new(false));
    let probe = tokio::spawn(probe(
        JobServiceClient::new(prober.clone()),
        customer.clone(),
        job_id,
        stop.clone(),
    ));
    let started = Instant::now();
    let held = match name {
        "ABUSE quiet" => Ok(Held::nothing()),
        "ABUSE silent connections" => silent(addr, size, b"").await,
        "ABUSE half HTTP/2 prefaces" => silent(addr, size, b"PRI * HTTP/2.0\r\n").await,
        "ABUSE 4 MiB health messages" => big_health(addr, size).await,
        "ABUSE health watches without a token" => {
            health_watches(addr, sizes.anonymous_connections, sizes.anonymous_streams).await
        }
        "ABUSE trickled grpc-web bodies" => trickled(addr, size).await,
        "ABUSE one user's watch flood" => watch_flood(addr, &customer, job_id, size).await,
        _ => connection_flood(addr, size).await,
    };
    let held = match held {
        Ok(held) => held,
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            return Err(format!("{name}: {e}"));
        }
    };
    let opened_in = started.elapsed();
    tokio::time::sleep(sizes.hold.saturating_sub(opened_in)).await;
    let rss_during = server.rss_kib();
    let cpu_during = server.cpu_secs();
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (latency, calls_failed) = probe
        .await
        .map_err(|e| format!("{name}: the legitimate client's task failed: {e}"))?;
    let (open, refused) = (held.open, held.refused);
    drop(held);

    let mut row = Row::new(name, size, Target::Real);
    row.put("legit_p50", "ms", latency.p50_ms);
    row.put("legit_p99", "ms", latency.p99_ms);
    row.put("legit_max", "ms", latency.max_ms);
    row.put("legit_calls", "", latency.count as f64);
    row.put("legit_failed", "", calls_failed as f64);
    row.put("held_open", "", open as f64);
    row.put("refused", "", refused as f64);
    let mib = |k: u64| k as f64 / 1024.0;
    row.put_opt("rss_before", "MiB", rss_before.map(mib));
    row.put_opt("rss_during", "MiB", rss_during.map(mib));
    if let (Some(a), Some(b)) = (rss_before, rss_during)
        && open > 0
    {
        row.put(
            "rss_per_held",
            "B",
            (b.saturating_sub(a) * 1024) as f64 / open as f64,
        );
    }
    if let (Some(a), Some(b)) = (cpu_before, cpu_during) {
        row.put("server_cpu", "%", (b - a) / elapsed * 100.0);
    }
    row.check(calls_failed == 0, || {
        format!("{calls_failed} legitimate calls failed during the attack")
    });
    row.check(latency.count > 0, || {
        "the legitimate client got no answer".into()
    });
    Ok(row)
}

impl Held {
    fn nothing() -> Self {
        Self {
            open: 0,
            refused: 0,
            _keep: Vec::new(),
            tasks: Vec::new(),
        }
    }
}

/// GetJob every 20 ms until `stop`: the latency of each, and how many failed.
async fn probe(
    mut client: JobServiceClient<tonic::transport::Channel>,
    bearer: AsciiMetadataValue,
    job_id: i64,
    stop: Arc<AtomicBool>,
) -> (crate::harness::Latency, usize) {
    let mut hist = new_histogram();
    let mut failed = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let started = Instant::now();
        let call = client.get_job(authed(pb::GetJobRequest { job_id }, &bearer));
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(_)) => record_ns(&mut hist, started.elapsed().as_nanos() as u64),
            _ => failed += 1,
        }
    }
    (summarize(&hist), failed)
}

/// `n` connections that send `opening` (maybe nothing) and then nothing more.
async fn silent(addr: SocketAddr, n: usize, opening: &'static [u8]) -> Result<Held, String> {
    let mut keep: Vec<Box<dyn Send>> = Vec::with_capacity(n);
    for _ in 0..n {
        let mut socket = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if !opening.is_empty() {
            socket
                .write_all(opening)
                .await
                .map_err(|e| format!("write: {e}"))?;
        }
        keep.push(Box::new(socket));
    }
    Ok(Held {
        open: n,
        refused: 0,
        _keep: keep,
        tasks: Vec::new(),
    })
}

async fn h2_connect(
    addr: SocketAddr,
) -> Result<(h2::client::SendRequest<Bytes>, JoinHandle<()>), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (send, connection) = h2::client::handshake(tcp)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((send, driver))
}

fn grpc_request(addr: SocketAddr, path: &str) -> http::Request<()> {
    let mut request = http::Request::new(());
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = format!("http://{addr}{path}").parse().unwrap_or_default();
    let headers = request.headers_mut();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert("te", http::HeaderValue::from_static("trailers"));
    request
}

/// On `connections` HTTP/2 connections, as many Health/Check streams as the
/// server takes, each announcing a 4 MiB message, sending 64 KiB of it and
/// stalling.
async fn big_health(addr: SocketAddr, connections: usize) -> Result<Held, String> {
    let refused = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (send, driver) = h2_connect(addr).await?;
        tasks.push(driver);
        let (refused, open) = (refused.clone(), open.clone());
        tasks.push(tokio::spawn(async move {
            let mut streams = Vec::new();
            for _ in 0..40 {
                let Ok(mut send) = send.clone().ready().await else {
                    return;
                };
                let Ok((response, mut body)) =
                    send.send_request(grpc_request(addr, "/grpc.health.v1.Health/Check"), false)
                else {
                    return;
                };
                let mut message = vec![0u8];
                message.extend_from_slice(&(4 * 1024 * 1024 - 1_u32).to_be_bytes());
                message.resize(64 * 1024, 0);
                let _ = body.send_data(Bytes::from(message), false);
                streams.push((response, body));
            }
            for (response, body) in streams {
                match tokio::time::timeout(Duration::from_millis(500), response).await {
                    Ok(Ok(answer)) if answer.headers().contains_key("grpc-status") => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        open.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(body);
            }
            std::future::pending::<()>().await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    Ok(Held {
        open: open.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        _keep: Vec::new(),
        tasks,
    })
}

/// On `connections` HTTP/2 connections, `streams` Health/Watch streams each,
/// without a token.
async fn health_watches(
    addr: SocketAddr,
    connections: usize,
    streams: usize,
) -> Result<Held, String> {
    let refused = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (send, driver) = h2_connect(addr).await?;
        tasks.push(driver);
        let (refused, open) = (refused.clone(), open.clone());
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..streams {
                let Ok(mut send) = send.clone().ready().await else {
                    return;
                };
                let Ok((response, mut body)) =
                    send.send_request(grpc_request(addr, "/grpc.health.v1.Health/Watch"), false)
                else {
                    return;
                };
                let _ = body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true);
                match tokio::time::timeout(Duration::from_secs(5), response).await {
                    Ok(Ok(answer)) if answer.headers().contains_key("grpc-status") => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(answer)) => {
                        open.fetch_add(1, Ordering::Relaxed);
                        held.push(answer);
                    }
                    _ => {}
                }
            }
            std::future::pending::<()>().await;
        }));
    }
    // Every stream has been answered one way or the other by then.
    let deadline = Instant::now() + Duration::from_secs(30);
    while open.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed) < connections * streams
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Held {
        open: open.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        _keep: Vec::new(),
        tasks,
    })
}

/// `n` grpc-web requests over HTTP/1.1 declaring a 1 GiB body and sending
/// a byte of it every 500 ms (ended by the server's read timeout).
async fn trickled(addr: SocketAddr, n: usize) -> Result<Held, String> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let mut socket = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        socket
            .write_all(
                b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc-web+proto\r\ncontent-length: 1073741824\r\n\r\n",
            )
            .await
            .map_err(|e| format!("write: {e}"))?;
        tasks.push(tokio::spawn(async move {
            loop {
                if socket.write_all(b"\0").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    Ok(Held {
        open: n,
        refused: 0,
        _keep: Vec::new(),
        tasks,
    })
}

/// One user opens `n` WatchJob streams over 20 connections.
async fn watch_flood(
    addr: SocketAddr,
    bearer: &AsciiMetadataValue,
    job_id: i64,
    n: usize,
) -> Result<Held, String> {
    let mut channels = Vec::new();
    for _ in 0..20 {
        channels.push(connect_one(addr).await?);
    }
    let mut keep: Vec<Box<dyn Send>> = Vec::new();
    let (mut open, mut refused) = (0, 0);
    for i in 0..n {
        let mut client = JobServiceClient::new(channels[i % channels.len()].clone());
        let call = client.watch_job(authed(
            pb::WatchJobRequest {
                job_id,
                after_revision: None,
            },
            bearer,
        ));
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(stream)) => {
                open += 1;
                keep.push(Box::new(stream.into_inner()));
            }
            Ok(Err(status)) if status.code() == tonic::Code::ResourceExhausted => refused += 1,
            Ok(Err(status)) => return Err(format!("WatchJob: {status}")),
            Err(_) => return Err("WatchJob did not answer within 5 s".into()),
        }
    }
    keep.push(Box::new(channels));
    Ok(Held {
        open,
        refused,
        _keep: keep,
        tasks: Vec::new(),
    })
}

/// `n` HTTP/2 connections that finish their handshake and then idle. The
/// server closes those beyond its cap at once, which ends their driver.
async fn connection_flood(addr: SocketAddr, n: usize) -> Result<Held, String> {
    let mut drivers = Vec::with_capacity(n);
    let mut keep: Vec<Box<dyn Send>> = Vec::with_capacity(n);
    for _ in 0..n {
        let (send, driver) = h2_connect(addr).await?;
        keep.push(Box::new(send));
        drivers.push(driver);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let refused = drivers.iter().filter(|d| d.is_finished()).count();
    Ok(Held {
        open: n - refused,
        refused,
        _keep: keep,
        tasks: drivers,
    })
}
