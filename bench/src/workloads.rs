//! The four workloads. Each starts a fresh server (real or bare), sets up
//! its jobs, measures one phase bounded by a time-out, checks what every
//! watcher received, and stops the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use jobstatus::auth::TokenKind;
use jobstatus::grpc::pb;
use pb::job_service_client::JobServiceClient;
use serde::Serialize;
use tokio::task::JoinHandle;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use crate::floor::{self, FloorDatabase, FloorOp};
use crate::harness::{
    Cluster, Progress, Server, ServerSpec, Target, Tokens, Via, WatchOutcome, WatchShared, authed,
    connect_many, create_jobs, grpc_web_watcher, new_histogram, record_ns, summarize, wait_for,
    watcher,
};

/// Sizes and knobs shared by every workload.
#[derive(Debug, Clone)]
pub struct Knobs {
    pub connections: usize,
    pub rpc_connections: usize,
    pub in_flight: usize,
    pub phase_timeout: Duration,
    pub w3_streams_per_connection: usize,
    pub w3_hold: Duration,
    /// One-stream-per-connection watchers speak grpc-web over HTTP/1.1 (as
    /// browsers do) rather than HTTP/2.
    pub w3_conn_grpc_web: bool,
    pub w4_duration: Duration,
    pub w4_jobs: usize,
}

pub struct Ctx {
    pub spec: ServerSpec,
    pub tokens: Tokens,
    pub service: AsciiMetadataValue,
    pub knobs: Knobs,
    next_id: AtomicI64,
}

impl Ctx {
    pub fn new(spec: ServerSpec, knobs: Knobs) -> Result<Self, String> {
        let tokens = Tokens::new(&spec.secret);
        let service = tokens.bearer("bench", TokenKind::Service)?;
        // Distinct ids per run, so a reused (PostgreSQL) database never clashes.
        let millis = chrono::Utc::now().timestamp_millis();
        Ok(Self {
            spec,
            tokens,
            service,
            knobs,
            next_id: AtomicI64::new(millis.max(1) * 1000),
        })
    }

    pub(crate) fn alloc(&self, n: usize) -> Vec<i64> {
        let n64 = i64::try_from(n).unwrap_or(i64::MAX);
        let first = self.next_id.fetch_add(n64, Ordering::Relaxed);
        (first..first + n64).collect()
    }
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub value: f64,
}

/// The figures of one workload at one size against one target.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: &'static str,
    pub size: u64,
    pub target: Target,
    pub metrics: Vec<Metric>,
    /// Every correctness check passed.
    pub ok: bool,
    pub notes: Vec<String>,
}

impl Row {
    pub(crate) fn new(workload: &'static str, size: usize, target: Target) -> Self {
        Self {
            workload,
            size: size as u64,
            target,
            metrics: Vec::new(),
            ok: true,
            notes: Vec::new(),
        }
    }

    pub(crate) fn put(&mut self, name: &'static str, unit: &'static str, value: f64) {
        self.metrics.push(Metric { name, unit, value });
    }

    pub(crate) fn put_opt(&mut self, name: &'static str, unit: &'static str, value: Option<f64>) {
        if let Some(v) = value {
            self.put(name, unit, v);
        }
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    pub(crate) fn check(&mut self, ok: bool, note: impl FnOnce() -> String) {
        if !ok {
            self.ok = false;
            self.notes.push(note());
        }
    }
}

/// RSS against open streams, for the plot.
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    pub name: String,
    /// (open streams, RSS MiB)
    pub points: Vec<(f64, f64)>,
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

fn cpu_delta(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

fn server_name(workload: &str, size: usize, target: Target) -> String {
    format!("{workload}-{size}-{}", target.name())
}

/// Stops every watcher and collects what each saw (bounded wait).
async fn collect(
    shared: &WatchShared,
    handles: Vec<JoinHandle<WatchOutcome>>,
) -> Vec<WatchOutcome> {
    shared.stop.cancel();
    let joined = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(handles),
    )
    .await;
    match joined {
        Ok(results) => results.into_iter().filter_map(Result::ok).collect(),
        Err(_) => Vec::new(),
    }
}

fn progress_of(
    shared: &Arc<WatchShared>,
    f: fn(&WatchShared) -> usize,
) -> impl Fn() -> usize + Send + 'static {
    let shared = shared.clone();
    move || f(&shared)
}

fn ready_or_failed(s: &WatchShared) -> usize {
    s.ready.load(Ordering::Relaxed) + s.failed.load(Ordering::Relaxed)
}

/// Waits until every watcher has its snapshot (or failed).
async fn await_snapshots(shared: &Arc<WatchShared>, total: usize, deadline: Instant, label: &str) {
    let p = Progress::start(
        format!("{label} snapshots"),
        total,
        progress_of(shared, |s| s.ready.load(Ordering::Relaxed)),
    );
    wait_for(deadline, total, progress_of(shared, ready_or_failed)).await;
    p.finish();
}

// ---------------------------------------------------------------- W1

pub async fn w1(ctx: &Ctx, target: Target, j: usize) -> Result<Row, String> {
    let name = server_name("w1", j, target);
    let cluster = Cluster::start(&ctx.spec, target, &name, ctx.spec.replicas).await?;
    let result = w1_inner(ctx, &cluster, target, j).await;
    cluster.stop().await;
    let mut row = result?;
    // The same storage work done the cheapest correct way, measured with
    // the server stopped: J creations, 2J job reads (the watches' opens),
    // 2J changes, batched as the real writer batched them.
    add_floors(
        ctx,
        &mut row,
        &name,
        &[
            (FloorOp::Create, j, j, "floor_create_us"),
            (FloorOp::Read, j, 2 * j, "floor_open_us"),
            (FloorOp::Change, j, 2 * j, "floor_transition_us"),
        ],
    )
    .await;
    Ok(row)
}

/// Runs the storage floor for each (operation, jobs, operations, metric)
/// of a real row and puts its CPU per operation (µs) into `row` as
/// `metric`. Changes and creations are batched like the row's writer
/// (its `change_batch_mean` or `create_batch_mean`, rounded; 1 if none).
/// On PostgreSQL the floor runs on the real run's server, and PostgreSQL's
/// own CPU per operation goes into `<metric>` with `_db` (see
/// [`db_metric`]); a change floor also records its changes per second, and
/// those of a transaction per change, which batching should beat.
async fn add_floors(
    ctx: &Ctx,
    row: &mut Row,
    label: &str,
    floors: &[(FloorOp, usize, usize, &'static str)],
) {
    if row.target != Target::Real || !row.ok {
        return;
    }
    let at = match (ctx.spec.postgres_url(), &ctx.spec.database_url) {
        _ if ctx.spec.connect.is_some() => None,
        (Some(url), _) => Some(FloorDatabase::Postgres(url)),
        (None, None) => Some(FloorDatabase::Sqlite(&ctx.spec.tmp_dir)),
        (None, Some(_)) => None,
    };
    let Some(at) = at else {
        row.notes
            .push("storage floor: not measured for a server the tool did not start".into());
        return;
    };
    let postgres = matches!(at, FloorDatabase::Postgres(_));
    for &(op, jobs, ops, metric) in floors {
        let batch_metric = match op {
            FloorOp::Change => Some("change_batch_mean"),
            FloorOp::Create => Some("create_batch_mean"),
            FloorOp::Read => None,
        };
        let batch = batch_metric
            .and_then(|m| row.metric(m))
            .map_or(1, |b| b.round().max(1.0) as usize);
        let floor = floor::in_own_process(&ctx.spec.self_bin, at, label, op, jobs, ops, batch);
        let rate = match floor.await {
            Ok(f) if f.ops > 0 => {
                let per_op = |secs: f64| secs * 1e6 / f.ops as f64;
                row.put(metric, "us", per_op(f.cpu_secs));
                if let (Some(db), Some(name)) = (f.db_cpu_secs, db_metric(metric)) {
                    row.put(name, "us", per_op(db));
                }
                f.ops as f64 / f.wall_secs.max(1e-9)
            }
            Ok(_) => continue,
            Err(e) => {
                row.notes.push(e);
                continue;
            }
        };
        if !(postgres && op == FloorOp::Change) {
            continue;
        }
        row.put("floor_changes_per_s", "1/s", rate);
        // A transaction per change waits for a WAL flush each: its rate
        // needs far fewer changes to measure, and would take minutes.
        let single = if batch == 1 {
            Ok(rate)
        } else {
            let (jobs, ops) = (jobs.min(SINGLE_CHANGES), ops.min(SINGLE_CHANGES));
            floor::in_own_process(&ctx.spec.self_bin, at, label, op, jobs, ops, 1)
                .await
                .map(|f| f.ops as f64 / f.wall_secs.max(1e-9))
        };
        match single {
            Ok(rate) => row.put("floor_changes_per_s_single", "1/s", rate),
            Err(e) => row.notes.push(e),
        }
    }
}

/// How many changes the transaction-per-change floor makes.
const SINGLE_CHANGES: usize = 2_000;

/// The metric PostgreSQL's own CPU per operation is recorded under, beside
/// a CPU metric of the servers or of the floor.
pub fn db_metric(metric: &str) -> Option<&'static str> {
    Some(match metric {
        "floor_transition_us" => "floor_transition_us_db",
        "floor_open_us" => "floor_open_us_db",
        "floor_create_us" => "floor_create_us_db",
        "floor_call_us" => "floor_call_us_db",
        "cpu_per_transition" => "cpu_per_transition_db",
        "open_cpu_per_stream" => "open_cpu_per_stream_db",
        "create_cpu_per_job" => "create_cpu_per_job_db",
        "server_cpu_per_call" => "server_cpu_per_call_db",
        _ => return None,
    })
}

async fn w1_inner(ctx: &Ctx, server: &Cluster, target: Target, j: usize) -> Result<Row, String> {
    let label = format!("W1 J={j} {}", target.name());
    let k = &ctx.knobs;
    // With replicas, each job's two watchers sit on different replicas and
    // its two calls go to different replicas, so fan-out crosses them.
    let n = server.len();
    let mut rpc = Vec::with_capacity(n);
    let mut watch = Vec::with_capacity(n);
    for r in 0..n {
        rpc.push(connect_many(server.addr(r), k.rpc_connections).await?);
        watch.push(connect_many(server.addr(r), (k.connections / n).max(1)).await?);
    }
    let connections: usize = watch.iter().map(Vec::len).sum();
    let ids = ctx.alloc(j);
    let before_create = server.mark().await;
    let (failed, first) = create_jobs(
        &rpc[0],
        &ctx.service,
        &ids,
        |id| format!("w{id}"),
        k.in_flight,
        &label,
    )
    .await;
    let before_open = server.mark().await;
    let create = before_create.until(&before_open, j);
    if failed > 0 {
        return Err(format!(
            "{label}: {failed} CreateJob calls failed, first: {first:?}"
        ));
    }
    let mut clients = Vec::with_capacity(j);
    let mut workers = Vec::with_capacity(j);
    for id in &ids {
        clients.push(ctx.tokens.bearer(&format!("c{id}"), TokenKind::User)?);
        workers.push(ctx.tokens.bearer(&format!("w{id}"), TokenKind::User)?);
    }

    let shared = WatchShared::new(Instant::now(), 1024);
    let watchers = 2 * j;
    let handles: Vec<_> = (0..watchers)
        .map(|w| {
            let i = w / 2;
            let auth = if w % 2 == 0 { &clients[i] } else { &workers[i] };
            let conns = &watch[(i + w % 2) % n];
            tokio::spawn(watcher(
                Via::Shared(conns[(w / n) % conns.len()].clone()),
                auth.clone(),
                ids[i],
                w,
                2,
                shared.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + k.phase_timeout;
    await_snapshots(&shared, watchers, deadline, &label).await;
    let ready = shared.ready.load(Ordering::Relaxed);
    let open_failures = shared.failed.load(Ordering::Relaxed);
    let before_changes = server.mark().await;
    let open = before_open.until(&before_changes, watchers);

    // The phase: every job MarkComplete, then ApproveCompletion(GCASH).
    let starts: Arc<Vec<AtomicU64>> = Arc::new((0..2 * j).map(|_| AtomicU64::new(0)).collect());
    let rss_before = server.rss_kib();
    let cpu_before = before_changes.cpu_secs;
    let deadline = Instant::now() + k.phase_timeout;
    let t0 = shared.now_ns();
    let completed = Arc::new(AtomicUsize::new(0));
    let p = Progress::start(format!("{label} flows"), j, {
        let c = completed.clone();
        move || c.load(Ordering::Relaxed)
    });
    let flows = futures_util::stream::iter(0..j)
        .map(|i| {
            let (first, second) = (&rpc[i % n], &rpc[(i + 1) % n]);
            let mut client = JobServiceClient::new(first[(i / n) % first.len()].clone());
            let mut client2 = JobServiceClient::new(second[(i / n) % second.len()].clone());
            let (job_id, worker, customer) = (ids[i], workers[i].clone(), clients[i].clone());
            let (shared, starts, completed) = (shared.clone(), starts.clone(), completed.clone());
            async move {
                let s1 = shared.now_ns();
                starts[2 * i].store(s1, Ordering::Relaxed);
                let r1 = client
                    .mark_complete(authed(
                        pb::MarkCompleteRequest {
                            job_id,
                            ..Default::default()
                        },
                        &worker,
                    ))
                    .await;
                let e1 = shared.now_ns();
                if let Err(s) = r1 {
                    return Err(format!("MarkComplete {job_id}: {s}"));
                }
                let s2 = shared.now_ns();
                starts[2 * i + 1].store(s2, Ordering::Relaxed);
                let r2 = client2
                    .approve_completion(authed(
                        pb::ApproveCompletionRequest {
                            job_id,
                            payment_method: pb::PaymentMethod::Gcash as i32,
                            ..Default::default()
                        },
                        &customer,
                    ))
                    .await;
                let e2 = shared.now_ns();
                completed.fetch_add(1, Ordering::Relaxed);
                r2.map(|_| (e1 - s1, e2 - s2))
                    .map_err(|s| format!("ApproveCompletion {job_id}: {s}"))
            }
        })
        .buffer_unordered(k.in_flight.max(1))
        .collect::<Vec<_>>();
    let flow_results = tokio::time::timeout_at(deadline.into(), flows).await;
    p.finish();
    let rpcs_end = shared.now_ns();
    let mut rpc_hist = new_histogram();
    let mut rpc_errors = 0usize;
    let mut first_rpc_error = None;
    match flow_results {
        Ok(results) => {
            for r in results {
                match r {
                    Ok((a, b)) => {
                        record_ns(&mut rpc_hist, a);
                        record_ns(&mut rpc_hist, b);
                    }
                    Err(e) => {
                        rpc_errors += 1;
                        first_rpc_error.get_or_insert(e);
                    }
                }
            }
        }
        Err(_) => {
            rpc_errors += 1;
            first_rpc_error = Some("the flows did not finish within the phase time-out".into());
        }
    }
    let p = Progress::start(
        format!("{label} watchers done"),
        ready,
        progress_of(&shared, |s| s.done.load(Ordering::Relaxed)),
    );
    let mid_failures = {
        let shared = shared.clone();
        move || {
            shared.done.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
                - open_failures
        }
    };
    wait_for(deadline, ready, mid_failures).await;
    p.finish();
    let after_changes = server.mark().await;
    let changes = before_changes.until(&after_changes, 2 * j);
    let cpu_after = after_changes.cpu_secs;
    let rss_after = server.rss_kib();
    let stream_failures = shared.failed.load(Ordering::Relaxed);
    let first_error = shared.first_error();
    let outcomes = collect(&shared, handles).await;

    let mut hist = new_histogram();
    let (mut received, mut duplicates, mut gaps, mut unexpected) = (0u64, 0u64, 0u64, 0u64);
    let mut last = rpcs_end;
    for o in &outcomes {
        duplicates += u64::from(o.duplicates);
        gaps += u64::from(o.gaps);
        for &(revision, at) in &o.events {
            received += 1;
            last = last.max(at);
            match revision {
                2 | 3 => {
                    let start =
                        starts[2 * (o.index / 2) + (revision as usize - 2)].load(Ordering::Relaxed);
                    record_ns(&mut hist, at.saturating_sub(start));
                }
                _ => unexpected += 1,
            }
        }
    }
    let wall = Duration::from_nanos(last.saturating_sub(t0))
        .as_secs_f64()
        .max(1e-9);
    let delivery = summarize(&hist);
    let unary = summarize(&rpc_hist);
    let expected = 4 * j as u64;

    let mut row = Row::new("W1", j, target);
    row.put("transitions_per_s", "1/s", 2.0 * j as f64 / wall);
    row.put("delivery_p50", "ms", delivery.p50_ms);
    row.put("delivery_p99", "ms", delivery.p99_ms);
    row.put("delivery_max", "ms", delivery.max_ms);
    row.put("events_expected", "", expected as f64);
    row.put("events_received", "", received as f64);
    row.put("duplicates", "", duplicates as f64);
    row.put("gaps", "", gaps as f64);
    row.put("rpc_p50", "ms", unary.p50_ms);
    row.put("rpc_p99", "ms", unary.p99_ms);
    row.put("phase_wall", "s", wall);
    row.put("streams", "", watchers as f64);
    row.put("connections", "", connections as f64);
    row.put("replicas", "", n as f64);
    row.put_opt("server_cpu", "s", cpu_delta(cpu_before, cpu_after));
    // Per operation: a transition is one call and its two deliveries.
    row.put_opt("cpu_per_transition", "us", changes.cpu_per_op_us);
    row.put_opt("change_batch_mean", "", changes.batch_mean);
    row.put_opt("open_cpu_per_stream", "us", open.cpu_per_op_us);
    row.put_opt("create_cpu_per_job", "us", create.cpu_per_op_us);
    row.put_opt("create_batch_mean", "", create.batch_mean);
    for (metric, phase) in [
        ("cpu_per_transition", &changes),
        ("open_cpu_per_stream", &open),
        ("create_cpu_per_job", &create),
    ] {
        if let Some(name) = db_metric(metric) {
            row.put_opt(name, "us", phase.db_cpu_per_op_us);
        }
    }
    row.put_opt("server_rss_before", "MiB", mib(rss_before));
    row.put_opt("server_rss_after", "MiB", mib(rss_after));
    row.check(received == expected, || {
        format!("events: expected {expected}, received {received}")
    });
    row.check(duplicates == 0, || format!("{duplicates} duplicate events"));
    row.check(gaps == 0, || format!("{gaps} revision gaps"));
    row.check(unexpected == 0, || {
        format!("{unexpected} events with unexpected revisions")
    });
    row.check(rpc_errors == 0, || {
        format!("{rpc_errors} failed flows, first: {first_rpc_error:?}")
    });
    row.check(stream_failures == 0, || {
        format!("{stream_failures} watch streams failed, first: {first_error:?}")
    });
    Ok(row)
}

// ---------------------------------------------------------------- W2

pub async fn w2(ctx: &Ctx, target: Target, w: usize) -> Result<Row, String> {
    let cluster = Cluster::start(&ctx.spec, target, &server_name("w2", w, target), 1).await?;
    let result = w2_inner(ctx, cluster.first(), target, w).await;
    cluster.stop().await;
    result
}

async fn w2_inner(ctx: &Ctx, server: &Server, target: Target, w: usize) -> Result<Row, String> {
    let label = format!("W2 W={w} {}", target.name());
    let k = &ctx.knobs;
    let rpc = connect_many(server.addr, 1).await?;
    let watch = connect_many(server.addr, k.connections).await?;
    let ids = ctx.alloc(1);
    let job_id = ids[0];
    let (failed, first) =
        create_jobs(&rpc, &ctx.service, &ids, |id| format!("w{id}"), 1, &label).await;
    if failed > 0 {
        return Err(format!("{label}: CreateJob failed: {first:?}"));
    }
    let customer = ctx.tokens.bearer(&format!("c{job_id}"), TokenKind::User)?;
    let worker = ctx.tokens.bearer(&format!("w{job_id}"), TokenKind::User)?;
    let shared = WatchShared::new(Instant::now(), 1024);
    let handles: Vec<_> = (0..w)
        .map(|i| {
            tokio::spawn(watcher(
                Via::Shared(watch[i % watch.len()].clone()),
                customer.clone(),
                job_id,
                i,
                1,
                shared.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + k.phase_timeout;
    await_snapshots(&shared, w, deadline, &label).await;
    let ready = shared.ready.load(Ordering::Relaxed);
    let open_failures = shared.failed.load(Ordering::Relaxed);

    let cpu_before = server.cpu_secs();
    let deadline = Instant::now() + k.phase_timeout;
    let mut client = JobServiceClient::new(rpc[0].clone());
    let start = shared.now_ns();
    let call = client.mark_complete(authed(
        pb::MarkCompleteRequest {
            job_id,
            ..Default::default()
        },
        &worker,
    ));
    let rpc_result = tokio::time::timeout_at(deadline.into(), call).await;
    let rpc_ns = shared.now_ns() - start;
    let rpc_error = match rpc_result {
        Ok(Ok(_)) => None,
        Ok(Err(s)) => Some(format!("MarkComplete: {s}")),
        Err(_) => Some("MarkComplete timed out".to_owned()),
    };
    let p = Progress::start(
        format!("{label} delivered"),
        ready,
        progress_of(&shared, |s| s.done.load(Ordering::Relaxed)),
    );
    wait_for(deadline, ready, {
        let shared = shared.clone();
        move || {
            shared.done.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
                - open_failures
        }
    })
    .await;
    p.finish();
    let cpu_after = server.cpu_secs();
    let rss = server.rss_kib();
    let stream_failures = shared.failed.load(Ordering::Relaxed);
    let first_error = shared.first_error();
    let outcomes = collect(&shared, handles).await;

    let mut hist = new_histogram();
    let (mut got, mut duplicates, mut gaps, mut p100) = (0usize, 0u64, 0u64, 0u64);
    for o in &outcomes {
        duplicates += u64::from(o.duplicates);
        gaps += u64::from(o.gaps);
        if let Some(&(2, at)) = o.events.first() {
            got += 1;
            let lat = at.saturating_sub(start);
            p100 = p100.max(lat);
            record_ns(&mut hist, lat);
        }
        if o.events.len() > 1 {
            gaps += 1;
        }
    }
    let lat = summarize(&hist);
    let mut row = Row::new("W2", w, target);
    row.put("p100", "ms", p100 as f64 / 1e6);
    row.put("p50", "ms", lat.p50_ms);
    row.put("p99", "ms", lat.p99_ms);
    row.put("watchers", "", w as f64);
    row.put("watchers_got_it", "", got as f64);
    row.put("duplicates", "", duplicates as f64);
    row.put("gaps", "", gaps as f64);
    row.put("rpc", "ms", rpc_ns as f64 / 1e6);
    row.put("connections", "", watch.len() as f64);
    row.put_opt("server_cpu", "s", cpu_delta(cpu_before, cpu_after));
    row.put_opt("server_rss", "MiB", mib(rss));
    row.check(got == w, || format!("{got} of {w} watchers got the event"));
    row.check(duplicates == 0, || format!("{duplicates} duplicates"));
    row.check(gaps == 0, || format!("{gaps} gaps or extra events"));
    row.check(rpc_error.is_none(), || format!("{rpc_error:?}"));
    row.check(stream_failures == 0, || {
        format!("{stream_failures} watch streams failed, first: {first_error:?}")
    });
    Ok(row)
}

// ---------------------------------------------------------------- W3

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum W3Mode {
    /// Many streams per HTTP/2 connection (native clients).
    Mux,
    /// One stream per connection (a browser's grpc-web over HTTP/1.1).
    Conn,
}

impl W3Mode {
    fn workload(self) -> &'static str {
        match self {
            W3Mode::Mux => "W3-mux",
            W3Mode::Conn => "W3-conn",
        }
    }
}

/// Ramps idle watch streams through `sizes` (ascending) on one server,
/// holding each level, and stops at the first errors.
pub async fn w3(
    ctx: &Ctx,
    target: Target,
    mode: W3Mode,
    sizes: &[usize],
) -> Result<(Vec<Row>, Curve), String> {
    let max = sizes.iter().copied().max().unwrap_or(0);
    let name = server_name(mode.workload(), max, target).to_lowercase();
    let cluster = Cluster::start(&ctx.spec, target, &name, 1).await?;
    let result = w3_inner(ctx, cluster.first(), target, mode, sizes).await;
    cluster.stop().await;
    result
}

async fn sample(server: &Server, shared: &WatchShared, curve: &mut Curve) {
    if let Some(rss) = mib(server.rss_kib()) {
        curve
            .points
            .push((shared.ready.load(Ordering::Relaxed) as f64, rss));
    }
}

async fn w3_inner(
    ctx: &Ctx,
    server: &Server,
    target: Target,
    mode: W3Mode,
    sizes: &[usize],
) -> Result<(Vec<Row>, Curve), String> {
    let k = &ctx.knobs;
    let mut sizes = sizes.to_vec();
    sizes.sort_unstable();
    let max = sizes.last().copied().unwrap_or(0);
    let label = format!("{} {}", mode.workload(), target.name());
    let rpc = connect_many(server.addr, k.rpc_connections).await?;
    let ids = ctx.alloc(max.div_ceil(2).max(1));
    let (failed, first) = create_jobs(
        &rpc,
        &ctx.service,
        &ids,
        |id| format!("w{id}"),
        k.in_flight,
        &label,
    )
    .await;
    if failed > 0 {
        return Err(format!(
            "{label}: {failed} CreateJob calls failed, first: {first:?}"
        ));
    }
    let shared_conns: Vec<Channel> = match mode {
        W3Mode::Mux => {
            connect_many(
                server.addr,
                max.div_ceil(k.w3_streams_per_connection.max(1)),
            )
            .await?
        }
        W3Mode::Conn => Vec::new(),
    };
    // Let the allocator settle after the set-up, then take the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = server.rss_kib();
    let mut curve = Curve {
        name: format!("{} {}", mode.workload(), target.name()),
        points: Vec::new(),
    };
    let shared = WatchShared::new(Instant::now(), 512);
    sample(server, &shared, &mut curve).await;
    let mut handles = Vec::with_capacity(max);
    let mut rows = Vec::new();
    let addr: SocketAddr = server.addr;
    for &size in &sizes {
        let opened = handles.len();
        let open_started = Instant::now();
        for s in opened..size {
            let via = match mode {
                W3Mode::Mux => Via::Shared(shared_conns[s % shared_conns.len()].clone()),
                W3Mode::Conn => Via::Own(addr),
            };
            let (auth, job_id, shared) = (ctx.service.clone(), ids[s / 2], shared.clone());
            handles.push(if mode == W3Mode::Conn && k.w3_conn_grpc_web {
                tokio::spawn(grpc_web_watcher(addr, auth, job_id, s, shared))
            } else {
                tokio::spawn(watcher(via, auth, job_id, s, 0, shared))
            });
        }
        let deadline = Instant::now() + k.phase_timeout;
        let p = Progress::start(
            format!("{label} open streams"),
            size,
            progress_of(&shared, |s| s.ready.load(Ordering::Relaxed)),
        );
        // Sample RSS about once a second while streams open (bounded by the deadline).
        let mut next_sample = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline && ready_or_failed(&shared) < size {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if Instant::now() >= next_sample {
                sample(server, &shared, &mut curve).await;
                next_sample += Duration::from_secs(1);
            }
        }
        p.finish();
        let open_s = open_started.elapsed().as_secs_f64();
        let ready = shared.ready.load(Ordering::Relaxed);
        let errors = shared.failed.load(Ordering::Relaxed);
        // Hold the level; sample once a second.
        let hold_steps = k.w3_hold.as_secs().max(1);
        eprintln!("    {label}: {ready} streams open, holding {hold_steps} s");
        for _ in 0..hold_steps {
            tokio::time::sleep(Duration::from_secs(1)).await;
            sample(server, &shared, &mut curve).await;
        }
        let still_open =
            shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) - errors;
        let errors_after_hold = shared.failed.load(Ordering::Relaxed);
        let rss_after = server.rss_kib();
        let mut row = Row::new(mode.workload(), size, target);
        if mode == W3Mode::Conn {
            row.notes.push(
                if k.w3_conn_grpc_web {
                    "one grpc-web stream per HTTP/1.1 connection"
                } else {
                    "one native gRPC stream per HTTP/2 connection"
                }
                .to_owned(),
            );
        }
        row.put("streams_open", "", ready as f64);
        row.put("errors", "", errors_after_hold as f64);
        row.put("open_time", "s", open_s);
        row.put_opt("rss_before", "MiB", mib(rss_before));
        row.put_opt("rss_after", "MiB", mib(rss_after));
        if let (Some(b), Some(a)) = (rss_before, rss_after)
            && ready > 0
        {
            let per = (a.saturating_sub(b) * 1024) as f64 / ready as f64;
            row.put(
                match mode {
                    W3Mode::Mux => "bytes_per_stream",
                    W3Mode::Conn => "bytes_per_connection",
                },
                "B",
                per,
            );
        }
        let _ = still_open;
        row.check(errors_after_hold == 0, || {
            format!(
                "{errors_after_hold} streams failed (ramp stops here), first: {:?}",
                shared.first_error()
            )
        });
        row.check(ready == size, || {
            format!("{ready} of {size} streams opened")
        });
        let stop = !row.ok;
        rows.push(row);
        if stop {
            break;
        }
    }
    collect(&shared, handles).await;
    Ok((rows, curve))
}

// ---------------------------------------------------------------- W4

pub async fn w4(ctx: &Ctx, target: Target) -> Result<Row, String> {
    let n = ctx.knobs.w4_jobs;
    let name = server_name("w4", n, target);
    let cluster = Cluster::start(&ctx.spec, target, &name, 1).await?;
    let result = w4_inner(ctx, cluster.first(), target).await;
    cluster.stop().await;
    let mut row = result?;
    // N creations, then one change of each job called (no watchers).
    let calls = row.metric("calls").map_or(0, |c| c as usize);
    add_floors(
        ctx,
        &mut row,
        &name,
        &[
            (FloorOp::Create, n, n, "floor_create_us"),
            (FloorOp::Change, calls, calls, "floor_call_us"),
        ],
    )
    .await;
    Ok(row)
}

async fn w4_inner(ctx: &Ctx, server: &Server, target: Target) -> Result<Row, String> {
    let k = &ctx.knobs;
    let n = k.w4_jobs;
    let label = format!("W4 {}", target.name());
    let rpc = connect_many(server.addr, k.rpc_connections).await?;
    let ids = Arc::new(ctx.alloc(n));
    let before_create = server.mark().await;
    let (failed, first) = create_jobs(
        &rpc,
        &ctx.service,
        &ids,
        |_| "w4-worker".to_owned(),
        k.in_flight,
        &label,
    )
    .await;
    let before_calls = server.mark().await;
    let create = before_create.until(&before_calls, n);
    if failed > 0 {
        return Err(format!(
            "{label}: {failed} CreateJob calls failed, first: {first:?}"
        ));
    }
    let worker = ctx.tokens.bearer("w4-worker", TokenKind::User)?;
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = before_calls.cpu_secs;
    let started = Instant::now();
    let deadline = started + k.w4_duration;
    let p = Progress::start(format!("{label} calls"), n, {
        let next = next.clone();
        move || next.load(Ordering::Relaxed).min(n)
    });
    let tasks: Vec<_> = (0..k.in_flight.max(1))
        .map(|t| {
            let mut client = JobServiceClient::new(rpc[t % rpc.len()].clone());
            let (ids, next, worker) = (ids.clone(), next.clone(), worker.clone());
            let timeout = k.phase_timeout;
            tokio::spawn(async move {
                let mut hist = new_histogram();
                let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
                // Bounded by the job count and by the deadline.
                for _ in 0..ids.len() {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&job_id) = ids.get(i) else { break };
                    let s = Instant::now();
                    let call = client.mark_complete(authed(
                        pb::MarkCompleteRequest {
                            job_id,
                            ..Default::default()
                        },
                        &worker,
                    ));
                    match tokio::time::timeout(timeout, call).await {
                        Ok(Ok(_)) => {
                            ok += 1;
                            record_ns(&mut hist, s.elapsed().as_nanos() as u64);
                        }
                        Ok(Err(st)) => {
                            errors += 1;
                            first_error
                                .get_or_insert_with(|| format!("MarkComplete {job_id}: {st}"));
                        }
                        Err(_) => {
                            errors += 1;
                            first_error
                                .get_or_insert_with(|| format!("MarkComplete {job_id} timed out"));
                        }
                    }
                }
                (hist, ok, errors, first_error)
            })
        })
        .collect();
    let mut hist = new_histogram();
    let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
    for t in futures_util::future::join_all(tasks).await {
        let (h, o, e, f) = t.map_err(|e| format!("{label}: a caller task failed: {e}"))?;
        hist.add(&h).map_err(|e| format!("histogram: {e}"))?;
        ok += o;
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    p.finish();
    let after_calls = server.mark().await;
    let calls = before_calls.until(&after_calls, 1);
    let cpu = cpu_delta(cpu_before, after_calls.cpu_secs);
    let lat = summarize(&hist);
    let mut row = Row::new("W4", k.in_flight, target);
    row.put("rps", "1/s", ok as f64 / elapsed);
    row.put("p50", "ms", lat.p50_ms);
    row.put("p99", "ms", lat.p99_ms);
    row.put("max", "ms", lat.max_ms);
    row.put("calls", "", ok as f64);
    row.put("errors", "", errors as f64);
    row.put("duration", "s", elapsed);
    row.put_opt("server_cpu", "s", cpu);
    if let Some(c) = cpu
        && ok > 0
    {
        row.put("server_cpu_per_call", "us", c * 1e6 / ok as f64);
    }
    row.put_opt("change_batch_mean", "", calls.batch_mean);
    row.put_opt("create_cpu_per_job", "us", create.cpu_per_op_us);
    row.put_opt("create_batch_mean", "", create.batch_mean);
    if next.load(Ordering::Relaxed) >= n {
        row.notes.push(format!(
            "ran out of the {n} pre-created jobs after {elapsed:.1} s"
        ));
    }
    row.check(errors == 0, || {
        format!("{errors} failed calls, first: {first_error:?}")
    });
    Ok(row)
}
