//! The load generator's plumbing: starting and measuring server processes,
//! HTTP/2 connections, tokens, the watcher task every workload uses, and
//! bounded waiting with progress on stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use jobstatus::auth::{JwtSettings, TokenKind, mint};
use jobstatus::grpc::pb;
use jobstatus::grpc::pb::watch_job_response::Kind;
use pb::job_admin_service_client::JobAdminServiceClient;
use pb::job_service_client::JobServiceClient;
use serde::Serialize;
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

/// Which server a measurement ran against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// `jobstatus serve`: storage, auth, hub.
    Real,
    /// `jobstatus-bench bare-server`: the same proto in memory.
    Bare,
    /// `jobstatus-bench bare-server --hand-off`: the bare server handing
    /// each change to a thread of its own and back, as jobstatus hands one
    /// to its SQLite writer; set beside the durable floor, never in it.
    HandOff,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Real => "real",
            Target::Bare => "bare",
            Target::HandOff => "hand-off",
        }
    }
}

/// How to start (or reach) a server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub server_bin: PathBuf,
    pub self_bin: PathBuf,
    /// None: a fresh SQLite file in `tmp_dir` per start.
    pub database_url: Option<String>,
    pub tmp_dir: PathBuf,
    pub secret: String,
    pub max_streams: u32,
    /// A running real server to target instead of starting one.
    pub connect: Option<SocketAddr>,
    pub connect_pid: Option<u32>,
    /// Real server processes sharing the (PostgreSQL) database in W1.
    pub replicas: usize,
    /// Start the real server with its shipped limits (the abuse workload)
    /// rather than with room for every capacity workload.
    pub shipped_limits: bool,
    /// More flags for the real server.
    pub extra_args: Vec<String>,
    /// The servers' RUST_LOG.
    pub server_log: String,
}

impl ServerSpec {
    /// The PostgreSQL server the real servers share, if they do.
    pub fn postgres_url(&self) -> Option<&str> {
        self.database_url
            .as_deref()
            .filter(|u| u.starts_with("postgres"))
    }
}

/// One or more server processes of one target (replicas share the
/// database; the bare baseline is always one process).
#[derive(Debug)]
pub struct Cluster {
    servers: Vec<Server>,
    /// The real servers share a PostgreSQL server on this machine, whose
    /// processes' CPU every mark reads too.
    postgres: bool,
}

impl Cluster {
    pub async fn start(
        spec: &ServerSpec,
        target: Target,
        label: &str,
        replicas: usize,
    ) -> Result<Cluster, String> {
        let n = if target == Target::Real && spec.connect.is_none() {
            replicas.max(1)
        } else {
            1
        };
        let mut servers = Vec::with_capacity(n);
        for r in 0..n {
            let name = if n == 1 {
                label.to_owned()
            } else {
                format!("{label}-r{r}")
            };
            match Server::start(spec, target, &name).await {
                Ok(s) => servers.push(s),
                Err(e) => {
                    for s in servers {
                        s.stop().await;
                    }
                    return Err(e);
                }
            }
        }
        let postgres = target == Target::Real && spec.postgres_url().is_some();
        Ok(Cluster { servers, postgres })
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn addr(&self, replica: usize) -> SocketAddr {
        self.servers[replica % self.servers.len()].addr
    }

    pub fn first(&self) -> &Server {
        &self.servers[0]
    }

    /// Summed over the replicas; None if any is unknown.
    pub fn rss_kib(&self) -> Option<u64> {
        self.servers.iter().map(Server::rss_kib).sum()
    }

    /// The servers' CPU and writer batches so far, summed over replicas;
    /// a figure unknown for any replica is unknown.
    pub async fn mark(&self) -> Mark {
        let mut total = Mark {
            cpu_secs: Some(0.0),
            batches: Some((0.0, 0.0)),
            db_cpu_secs: if self.postgres {
                postgres_cpu_secs()
            } else {
                None
            },
        };
        for s in &self.servers {
            let m = s.mark().await;
            total.cpu_secs = total.cpu_secs.zip(m.cpu_secs).map(|(a, b)| a + b);
            total.batches = total
                .batches
                .zip(m.batches)
                .map(|((s0, c0), (s1, c1))| (s0 + s1, c0 + c1));
        }
        total
    }

    pub async fn stop(self) {
        for s in self.servers {
            s.stop().await;
        }
    }
}

/// A running server: a child process, or one we were pointed at.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    /// The real server's `--metrics-listen` address (one we started).
    metrics: Option<SocketAddr>,
    child: Option<Child>,
}

/// A server's counters at one moment, to take the difference of two.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    pub cpu_secs: Option<f64>,
    /// The writer's committed batches: (changes in them, batches).
    pub batches: Option<(f64, f64)>,
    /// PostgreSQL's own processes (None on SQLite).
    pub db_cpu_secs: Option<f64>,
}

/// What a phase between two marks cost.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// Server CPU per operation, µs.
    pub cpu_per_op_us: Option<f64>,
    /// Mean changes per committed batch during the phase.
    pub batch_mean: Option<f64>,
    /// PostgreSQL's CPU per operation, µs (None on SQLite).
    pub db_cpu_per_op_us: Option<f64>,
}

impl Mark {
    pub fn until(&self, later: &Mark, ops: usize) -> Phase {
        let per_op = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if ops > 0 => Some((b - a) * 1e6 / ops as f64),
            _ => None,
        };
        let cpu = per_op(self.cpu_secs, later.cpu_secs);
        let batch_mean = match (self.batches, later.batches) {
            (Some((s0, c0)), Some((s1, c1))) if c1 > c0 => Some((s1 - s0) / (c1 - c0)),
            _ => None,
        };
        Phase {
            cpu_per_op_us: cpu,
            batch_mean,
            db_cpu_per_op_us: per_op(self.db_cpu_secs, later.db_cpu_secs),
        }
    }
}

/// CPU seconds (user + system, every thread, the ended ones included) of
/// process `pid` (or `self`) so far: from the kernel's CPU clock of the
/// process, in nanoseconds, or, where that clock cannot be read, from
/// `/proc` in 10 ms ticks (assumes USER_HZ = 100).
pub fn proc_cpu_secs(pid: &str) -> Option<f64> {
    cpu_clock_secs(pid).or_else(|| proc_tick_secs(pid))
}

fn cpu_clock_secs(pid: &str) -> Option<f64> {
    use nix::time::{ClockId, clock_getcpuclockid};
    let clock = if pid == "self" {
        ClockId::CLOCK_PROCESS_CPUTIME_ID
    } else {
        clock_getcpuclockid(nix::unistd::Pid::from_raw(pid.parse().ok()?)).ok()?
    };
    let now = clock.now().ok()?;
    Some(now.tv_sec() as f64 + now.tv_nsec() as f64 * 1e-9)
}

fn proc_tick_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// User + system CPU seconds of every `postgres` process on the machine
/// (the server, its backends and its background workers), from `/proc`.
/// A backend that exits takes its CPU with it, so compare two readings
/// only across a span in which the connections of interest stay open.
pub fn postgres_cpu_secs() -> Option<f64> {
    let mut total = 0.0;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let comm = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map(|(comm, _)| comm);
        if comm == Some("postgres")
            && let Some(cpu) = proc_cpu_secs(pid)
        {
            total += cpu;
            found = true;
        }
    }
    found.then_some(total)
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

impl Server {
    /// Starts `target` as a child process and waits (bounded) until it
    /// accepts connections.
    pub async fn start(spec: &ServerSpec, target: Target, label: &str) -> Result<Server, String> {
        if let (Target::Real, Some(addr)) = (target, spec.connect) {
            return Ok(Server {
                addr,
                pid: spec.connect_pid,
                metrics: None,
                child: None,
            });
        }
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let metrics: Option<SocketAddr> = match target {
            Target::Real => Some(([127, 0, 0, 1], free_port()?).into()),
            Target::Bare | Target::HandOff => None,
        };
        let streams = spec.max_streams.to_string();
        let mut cmd = match target {
            Target::Real => {
                let url = match &spec.database_url {
                    Some(url) => url.clone(),
                    None => {
                        let path = spec.tmp_dir.join(format!("{label}.db"));
                        format!("sqlite://{}", path.display())
                    }
                };
                let mut cmd = Command::new(&spec.server_bin);
                cmd.arg("serve")
                    .arg("--listen")
                    .arg(addr.to_string())
                    .arg("--database-url")
                    .arg(url)
                    .args(&spec.extra_args)
                    .env("JOBSTATUS_JWT_SECRET", &spec.secret);
                if let Some(m) = metrics {
                    // The writer's batch sizes, which the durable floor
                    // batches like (scraped between phases, not during).
                    cmd.arg("--metrics-listen").arg(m.to_string());
                }
                if !spec.shipped_limits {
                    // Capacity workloads open far more connections and
                    // watches (one user watching a job 20 000 times) than
                    // the shipped limits let one client hold.
                    cmd.arg("--max-concurrent-streams")
                        .arg(&streams)
                        .arg("--max-connections")
                        .arg("1000000")
                        .arg("--max-watches-per-user")
                        .arg("10000000")
                        .arg("--max-watches-per-service")
                        .arg("10000000");
                }
                cmd
            }
            Target::Bare | Target::HandOff => {
                let mut cmd = Command::new(&spec.self_bin);
                cmd.arg("bare-server")
                    .arg("--listen")
                    .arg(addr.to_string())
                    .arg("--max-concurrent-streams")
                    .arg(&streams);
                if target == Target::HandOff {
                    cmd.arg("--hand-off");
                }
                cmd
            }
        };
        cmd.env("RUST_LOG", &spec.server_log)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the {} server: {e}", target.name()))?;
        let pid = child.id();
        // Bounded: 300 tries, 50 ms apart.
        for _ in 0..300 {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the {} server exited at start: {status}",
                    target.name()
                ));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(Server {
                    addr,
                    pid,
                    metrics,
                    child: Some(child),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "the {} server did not listen on {addr} within 15 s",
            target.name()
        ))
    }

    /// The writer's committed batches so far, (changes, batches), from the
    /// real server's metrics endpoint; None for the baseline or on error.
    pub async fn writer_batches(&self) -> Option<(f64, f64)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics?;
        let scrape = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
            stream
                .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
                .await
                .ok()?;
            let mut body = String::new();
            stream.read_to_string(&mut body).await.ok()?;
            Some(body)
        };
        let body = tokio::time::timeout(Duration::from_secs(5), scrape)
            .await
            .ok()??;
        let total = |name: &str| -> f64 {
            body.lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let name = jobstatus::telemetry::metrics::BATCH_SIZE;
        Some((
            total(&format!("{name}_sum")),
            total(&format!("{name}_count")),
        ))
    }

    pub async fn mark(&self) -> Mark {
        Mark {
            cpu_secs: self.cpu_secs(),
            batches: self.writer_batches().await,
            db_cpu_secs: None,
        }
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// User + system CPU seconds used so far.
    pub fn cpu_secs(&self) -> Option<f64> {
        proc_cpu_secs(&self.pid?.to_string())
    }

    pub async fn stop(mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }
}

fn endpoint(addr: SocketAddr) -> Result<Endpoint, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map(|e| {
            e.tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(10))
                .buffer_size(4096)
        })
        .map_err(|e| format!("bad endpoint: {e}"))
}

/// One HTTP/2 connection.
pub async fn connect_one(addr: SocketAddr) -> Result<Channel, String> {
    endpoint(addr)?
        .connect()
        .await
        .map_err(|e| format!("connect {addr}: {e} ({e:?})"))
}

/// `n` HTTP/2 connections (a tonic `Channel` is one connection).
pub async fn connect_many(addr: SocketAddr, n: usize) -> Result<Vec<Channel>, String> {
    futures_util::stream::iter(0..n.max(1))
        .map(|_| connect_one(addr))
        .buffered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Mints bearer tokens with the server's secret.
#[derive(Debug, Clone)]
pub struct Tokens {
    settings: JwtSettings,
}

impl Tokens {
    pub fn new(secret: &str) -> Self {
        Self {
            settings: JwtSettings::new(secret.as_bytes().to_vec()),
        }
    }

    pub fn bearer(&self, subject: &str, kind: TokenKind) -> Result<AsciiMetadataValue, String> {
        let token = mint(&self.settings, subject, kind, chrono::Duration::hours(4))
            .map_err(|e| format!("mint: {e}"))?;
        format!("Bearer {token}")
            .parse()
            .map_err(|e| format!("token is not ASCII metadata: {e}"))
    }
}

/// A request with the `authorization` header set.
pub fn authed<T>(message: T, auth: &AsciiMetadataValue) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", auth.clone());
    request
}

/// Creates IN_PROGRESS jobs (client `c{id}`, worker `worker(id)`), `in_flight`
/// at a time. Returns how many failed and the first error.
pub async fn create_jobs(
    channels: &[Channel],
    service: &AsciiMetadataValue,
    ids: &[i64],
    worker: impl Fn(i64) -> String,
    in_flight: usize,
    label: &str,
) -> (usize, Option<String>) {
    let done = Arc::new(AtomicUsize::new(0));
    let progress = Progress::start(format!("{label} creating jobs"), ids.len(), {
        let done = done.clone();
        move || done.load(Ordering::Relaxed)
    });
    let results: Vec<Result<(), String>> = futures_util::stream::iter(ids.iter().enumerate())
        .map(|(i, &id)| {
            let mut client = JobAdminServiceClient::new(channels[i % channels.len()].clone());
            let request = authed(
                pb::CreateJobRequest {
                    job_id: id,
                    client_id: format!("c{id}"),
                    worker_id: worker(id),
                    request_id: String::new(),
                },
                service,
            );
            let done = done.clone();
            async move {
                let r = client.create_job(request).await;
                done.fetch_add(1, Ordering::Relaxed);
                r.map(|_| ()).map_err(|s| format!("CreateJob {id}: {s}"))
            }
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    progress.finish();
    let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    (failed.len(), failed.into_iter().next())
}

/// Shared by every watcher of one phase.
#[derive(Debug)]
pub struct WatchShared {
    /// Watchers that have their snapshot.
    pub ready: AtomicUsize,
    /// Watchers that received every event they expect.
    pub done: AtomicUsize,
    /// Watchers that failed (open refused, or ended before done).
    pub failed: AtomicUsize,
    pub first_error: Mutex<Option<String>>,
    /// Ends the phase: every watcher drops its stream.
    pub stop: CancellationToken,
    /// Timestamps are nanoseconds since this instant.
    pub base: Instant,
    /// Bounds the stream opens in flight.
    pub opening: Semaphore,
}

impl WatchShared {
    pub fn new(base: Instant, opening: usize) -> Arc<Self> {
        Arc::new(Self {
            ready: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            stop: CancellationToken::new(),
            base,
            opening: Semaphore::new(opening.max(1)),
        })
    }

    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn fail(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock()
            && first.is_none()
        {
            *first = Some(error);
        }
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|e| e.clone())
    }
}

/// How a watcher reaches the server.
#[derive(Debug, Clone)]
pub enum Via {
    /// A stream on a shared HTTP/2 connection.
    Shared(Channel),
    /// A connection of its own (one stream per connection).
    Own(SocketAddr),
}

/// What one watcher saw.
#[derive(Debug, Default)]
pub struct WatchOutcome {
    pub index: usize,
    pub snapshot_revision: Option<i64>,
    /// (revision, receipt time in ns since `base`), in arrival order.
    pub events: Vec<(i64, u64)>,
    pub duplicates: u32,
    pub gaps: u32,
}

/// Opens a WatchJob stream, checks the snapshot comes first, then records
/// every event until `stop`. `expect` events make it "done".
pub async fn watcher(
    via: Via,
    auth: AsciiMetadataValue,
    job_id: i64,
    index: usize,
    expect: usize,
    shared: Arc<WatchShared>,
) -> WatchOutcome {
    let mut out = WatchOutcome {
        index,
        ..WatchOutcome::default()
    };
    let permit = tokio::select! {
        () = shared.stop.cancelled() => return out,
        p = shared.opening.acquire() => p,
    };
    let opened = async {
        let channel = match via {
            Via::Shared(c) => c,
            Via::Own(addr) => connect_one(addr).await?,
        };
        let mut client = JobServiceClient::new(channel);
        let mut stream = client
            .watch_job(authed(
                pb::WatchJobRequest {
                    job_id,
                    after_revision: None,
                },
                &auth,
            ))
            .await
            .map_err(|s| format!("WatchJob {job_id}: {s}"))?
            .into_inner();
        match stream.message().await {
            Ok(Some(pb::WatchJobResponse {
                kind: Some(Kind::Snapshot(snapshot)),
            })) => Ok((stream, snapshot.job.map(|j| j.revision).unwrap_or(0))),
            Ok(other) => Err(format!(
                "WatchJob {job_id}: first message is not a snapshot: {other:?}"
            )),
            Err(s) => Err(format!("WatchJob {job_id}: {s}")),
        }
    };
    let opened = tokio::select! {
        () = shared.stop.cancelled() => return out,
        o = opened => o,
    };
    drop(permit);
    let (mut stream, mut last) = match opened {
        Ok(x) => x,
        Err(e) => {
            shared.fail(e);
            return out;
        }
    };
    out.snapshot_revision = Some(last);
    shared.ready.fetch_add(1, Ordering::Relaxed);
    let mut done = expect == 0;
    loop {
        let message = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            m = stream.message() => m,
        };
        match message {
            Ok(Some(pb::WatchJobResponse {
                kind: Some(Kind::Event(event)),
            })) => {
                let at = shared.now_ns();
                if event.revision <= last {
                    out.duplicates += 1;
                    continue;
                }
                if event.revision != last + 1 {
                    out.gaps += 1;
                }
                last = event.revision;
                out.events.push((event.revision, at));
                if !done && out.events.len() >= expect {
                    done = true;
                    shared.done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Some(pb::WatchJobResponse {
                kind: Some(Kind::Snapshot(_)),
            })) => {
                // A resync snapshot mid-stream means the server lost track.
                out.gaps += 1;
            }
            Ok(Some(_)) => {} // heartbeats
            Ok(None) => {
                if !done {
                    shared.fail(format!("WatchJob {job_id}: stream ended early"));
                }
                break;
            }
            Err(s) => {
                if !done {
                    shared.fail(format!("WatchJob {job_id}: {s}"));
                }
                break;
            }
        }
    }
    out
}

/// Prints `label: n/total` on stderr once a second until finished.
#[derive(Debug)]
pub struct Progress {
    stop: CancellationToken,
}

impl Progress {
    pub fn start(
        label: String,
        total: usize,
        count: impl Fn() -> usize + Send + 'static,
    ) -> Progress {
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            // Bounded by the token, and by 4 hours in any case.
            for _ in 0..4 * 3600 {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = tick.tick() => {
                        eprintln!("    {label}: {}/{total} ({:.0} s)", count(), started.elapsed().as_secs_f64());
                    }
                }
            }
        });
        Progress { stop }
    }

    pub fn finish(self) {
        self.stop.cancel();
    }
}

/// Waits until `count() >= target` or the deadline; polls every 10 ms.
/// Returns whether the target was reached.
pub async fn wait_for(deadline: Instant, target: usize, count: impl Fn() -> usize) -> bool {
    while Instant::now() < deadline {
        if count() >= target {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    count() >= target
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub fn new_histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 1 h, 3 significant figures.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

pub fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record((ns / 1000).max(1));
}

pub fn summarize(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

/// A browser-like watcher: grpc-web over its own HTTP/1.1 connection
/// (plain TCP, hand-written HTTP/1.1 with a chunked response). It checks the
/// first grpc-web frame is a snapshot, then holds the connection, draining
/// whatever arrives, until `stop`.
pub async fn grpc_web_watcher(
    addr: SocketAddr,
    auth: AsciiMetadataValue,
    job_id: i64,
    index: usize,
    shared: Arc<WatchShared>,
) -> WatchOutcome {
    use tokio::io::AsyncReadExt;
    let mut out = WatchOutcome {
        index,
        ..WatchOutcome::default()
    };
    let permit = tokio::select! {
        () = shared.stop.cancelled() => return out,
        p = shared.opening.acquire() => p,
    };
    let opened = tokio::select! {
        () = shared.stop.cancelled() => return out,
        o = grpc_web_open(addr, &auth, job_id) => o,
    };
    drop(permit);
    let mut stream = match opened {
        Ok((stream, revision)) => {
            out.snapshot_revision = Some(revision);
            stream
        }
        Err(e) => {
            shared.fail(format!("grpc-web WatchJob {job_id}: {e}"));
            return out;
        }
    };
    shared.ready.fetch_add(1, Ordering::Relaxed);
    let mut sink = [0u8; 512];
    loop {
        let read = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            r = stream.read(&mut sink) => r,
        };
        match read {
            Ok(0) => {
                shared.fail(format!("grpc-web WatchJob {job_id}: connection closed"));
                break;
            }
            Ok(_) => {} // heartbeats or events: idle streams ignore them
            Err(e) => {
                shared.fail(format!("grpc-web WatchJob {job_id}: {e}"));
                break;
            }
        }
    }
    out
}

/// Sends the grpc-web request and reads until the first message (which must
/// be a snapshot) is complete. Returns the connection and the snapshot's
/// revision.
async fn grpc_web_open(
    addr: SocketAddr,
    auth: &AsciiMetadataValue,
    job_id: i64,
) -> Result<(tokio::net::TcpStream, i64), String> {
    use prost::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const MAX_HEAD: usize = 64 * 1024;
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    let message = pb::WatchJobRequest {
        job_id,
        after_revision: None,
    }
    .encode_to_vec();
    let len = u32::try_from(message.len()).map_err(|_| "request too large".to_owned())?;
    let auth = auth.to_str().map_err(|e| format!("token: {e}"))?;
    let mut request = format!(
        "POST /jobstatus.v1.JobService/WatchJob HTTP/1.1\r\nhost: {addr}\r\n\
         content-type: application/grpc-web+proto\r\naccept: application/grpc-web+proto\r\n\
         x-grpc-web: 1\r\nauthorization: {auth}\r\ncontent-length: {}\r\n\r\n",
        message.len() + 5
    )
    .into_bytes();
    request.push(0);
    request.extend_from_slice(&len.to_be_bytes());
    request.extend_from_slice(&message);
    stream
        .write_all(&request)
        .await
        .map_err(|e| format!("write: {e}"))?;

    let mut raw: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // Bounded: at most MAX_HEAD bytes are read before the snapshot.
    loop {
        if let Some(revision) = parse_first_snapshot(&raw)? {
            return Ok((stream, revision));
        }
        if raw.len() > MAX_HEAD {
            return Err("no snapshot in the first 64 KiB".into());
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "closed before a snapshot: {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(300)])
            ));
        }
        raw.extend_from_slice(&chunk[..n]);
    }
}

/// Parses an HTTP/1.1 response (chunked) far enough to decode its first
/// grpc-web frame. Ok(None): need more bytes.
fn parse_first_snapshot(raw: &[u8]) -> Result<Option<i64>, String> {
    use prost::Message;
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(format!("response: {:?}", head.lines().next().unwrap_or("")));
    }
    if let Some(status) = head
        .lines()
        .find_map(|l| l.strip_prefix("grpc-status:"))
        .map(str::trim)
        && status != "0"
    {
        return Err(format!("grpc-status {status} in headers: {head:?}"));
    }
    let chunked = head.contains("transfer-encoding: chunked");
    let mut body = Vec::new();
    let rest = &raw[head_end + 4..];
    if chunked {
        let mut at = 0;
        // Bounded by the input length.
        while at < rest.len() {
            let Some(eol) = rest[at..].windows(2).position(|w| w == b"\r\n") else {
                break;
            };
            let size_text = String::from_utf8_lossy(&rest[at..at + eol]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            let start = at + eol + 2;
            if size == 0 || rest.len() < start + size {
                break;
            }
            body.extend_from_slice(&rest[start..start + size]);
            at = start + size + 2;
        }
    } else {
        body.extend_from_slice(rest);
    }
    if body.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() < 5 + len {
        return Ok(None);
    }
    if body[0] & 0x80 != 0 {
        return Err(format!(
            "trailers before any message: {:?}",
            String::from_utf8_lossy(&body[5..5 + len])
        ));
    }
    match pb::WatchJobResponse::decode(&body[5..5 + len]) {
        Ok(pb::WatchJobResponse {
            kind: Some(Kind::Snapshot(snapshot)),
        }) => Ok(Some(snapshot.job.map(|j| j.revision).unwrap_or(0))),
        Ok(other) => Err(format!("first message is not a snapshot: {other:?}")),
        Err(e) => Err(format!("cannot decode the first message: {e}")),
    }
}
