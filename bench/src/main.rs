//! `jobstatus-bench`: fan-out, capacity and throughput of jobstatus,
//! measured side by side against a bare in-memory baseline.
//!
//! It starts the real server (`jobstatus serve`, SQLite in a temp directory
//! or the `--database-url` given) and its own `bare-server` mode as child
//! processes, one fresh pair per workload and size, drives them over
//! loopback only, and prints every figure with its ratio to the baseline.
//! Every phase is bounded in count and by `--phase-timeout-secs`.
//!
//! ```text
//! cargo build --release -p jobstatus -p jobstatus-bench
//! target/release/jobstatus-bench                 # the full run (~15 min)
//! target/release/jobstatus-bench --smoke         # tiny sizes; non-zero exit on any failed check
//! target/release/jobstatus-bench bare-server --listen 127.0.0.1:50099
//! ```
//!
//! See BENCHMARKS.md for the workloads, the recorded figures and the plots.

mod abuse;
mod bare;
mod floor;
mod floor_pg;
mod harness;
mod report;
mod workloads;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use harness::{ServerSpec, Target};
use workloads::{Ctx, Curve, Knobs, Row, W3Mode};

#[derive(Debug, Parser)]
#[command(
    name = "jobstatus-bench",
    about = "Fan-out, capacity and throughput of jobstatus against a bare baseline",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Serve the same proto from memory (no storage, no auth): the baseline.
    BareServer {
        #[arg(long, default_value = "127.0.0.1:50099")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        max_concurrent_streams: u32,
        /// Hand each CreateJob, MarkComplete and ApproveCompletion to a
        /// thread of its own and back, as jobstatus hands changes to its
        /// SQLite writer, with no storage: what the hand-off costs
        /// (BENCHMARKS.md).
        #[arg(long)]
        hand_off: bool,
    },
    /// The storage work the real server must do per operation, done the
    /// cheapest correct way (SQLite, WAL, synchronous=FULL, no server);
    /// prints one JSON line with wall and CPU seconds, to divide the real
    /// server's cost per operation by.
    StorageFloor(floor::FloorArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    W1,
    W2,
    W3,
    W4,
    /// Attacks on the edge, with the shipped limits (real server only).
    Abuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ConnProtocol {
    GrpcWeb,
    H2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TargetArg {
    Real,
    Bare,
    /// The bare server with the writer's hand-off (`bare-server
    /// --hand-off`): reported beside the durable floor of W1 and W4.
    HandOff,
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// Tiny sizes (J=50, W=100, N=200, W4 1 s), for CI: exits non-zero if
    /// any check fails. Writes to a temp directory unless --out is given.
    #[arg(long)]
    smoke: bool,
    /// Workloads to run.
    #[arg(long, value_delimiter = ',', default_value = "w1,w2,w3,w4,abuse")]
    workloads: Vec<Workload>,
    /// Servers to measure (bare is the baseline of every ratio).
    #[arg(long, value_delimiter = ',', default_value = "bare,real")]
    targets: Vec<TargetArg>,
    /// W1: jobs J (each watched by its client and its worker: 2J streams).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000,20000")]
    w1_jobs: Vec<usize>,
    /// W2: watchers W of the one hot job.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000,20000")]
    w2_watchers: Vec<usize>,
    /// W3: idle streams N, many per HTTP/2 connection (a ramp on one server).
    #[arg(long, value_delimiter = ',', default_value = "10000,50000,100000")]
    w3_streams: Vec<usize>,
    /// W3: idle streams, one per connection (a ramp on one server). Each
    /// process needs one fd per connection: 19500 fits a hard
    /// RLIMIT_NOFILE of 20000, which an unprivileged container cannot raise.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,19500")]
    w3_conn_streams: Vec<usize>,
    /// W3 one-per-connection watchers: grpc-web over HTTP/1.1 (browsers)
    /// or native gRPC over HTTP/2.
    #[arg(long, value_enum, default_value = "grpc-web")]
    w3_conn_protocol: ConnProtocol,
    /// W3: streams per HTTP/2 connection in the multiplexed run.
    #[arg(long, default_value_t = 1000)]
    w3_streams_per_connection: usize,
    /// W3: seconds each level is held.
    #[arg(long, default_value_t = 10)]
    w3_hold_secs: u64,
    /// W4: seconds of MarkComplete calls.
    #[arg(long, default_value_t = 10)]
    w4_secs: u64,
    /// W1 and W4 (each size, each target, the storage floor with the real
    /// server) run this many times, the targets taking turns, and every
    /// figure reported is the median of the runs: on a shared host one
    /// run moves by 10–25 %. Each run is kept in the JSON (`repeats`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
    repeat: u32,
    /// W4: in-progress jobs created beforehand (the phase ends early if they run out).
    #[arg(long, default_value_t = 100_000)]
    w4_jobs: usize,
    /// HTTP/2 connections the watch streams of W1 and W2 are spread over.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// HTTP/2 connections for unary calls.
    #[arg(long, default_value_t = 4)]
    rpc_connections: usize,
    /// Job flows (W1) or calls (W4, set-up) in flight.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Time-out of every phase (stream opening, the measured phase, delivery).
    #[arg(long, default_value_t = 180)]
    phase_timeout_secs: u64,
    /// The server's HTTP/2 max concurrent streams per connection.
    #[arg(long, default_value_t = 10_000)]
    max_concurrent_streams: u32,
    /// Database for the real server; default: a fresh SQLite file per
    /// workload in a temp directory. A postgres:// URL is passed through.
    #[arg(long)]
    database_url: Option<String>,
    /// W1 only: real server processes sharing a PostgreSQL database; each
    /// job's client watches one replica and its worker another.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// The `jobstatus` binary; default: next to this one.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Target a running real server (loopback) instead of starting one;
    /// needs --jwt-secret. RSS and CPU are read only with --server-pid.
    #[arg(long)]
    connect: Option<SocketAddr>,
    #[arg(long)]
    server_pid: Option<u32>,
    /// The HS256 secret (generated when the tool starts the server).
    #[arg(long, env = "JOBSTATUS_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// The servers' log filter (RUST_LOG): `info` logs a line per call, as a
    /// production server would; `warn` measures without it.
    #[arg(long, default_value = "warn")]
    server_log: String,
    /// Where to write results-<backend>.json and the SVG plots.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Machine {
    cores: usize,
    cpu: String,
    memory: String,
    kernel: String,
}

#[derive(Debug, Serialize)]
struct Record<'a> {
    tool: &'static str,
    started_at: String,
    command: Vec<String>,
    backend: &'a str,
    machine: Machine,
    /// `jobstatus --version` of the server binary run (its allocator
    /// included); none when the server was not started by the tool.
    server_build: Option<String>,
    /// The allocator the bare baseline and the storage floor ran on.
    bench_allocator: &'static str,
    connections: usize,
    in_flight: usize,
    rows: &'a [Row],
    /// With --repeat: every run of W1 and W4, of which `rows` holds the
    /// medians.
    repeats: &'a [Row],
    curves: &'a [Curve],
    targets: &'a [report::TargetCheck],
    durable_floor: &'a [report::FloorLine],
    errors: &'a [String],
    total_seconds: f64,
}

/// Keeps the runs of one workload and size: as they are for one run each,
/// else their medians in `rows` and the runs themselves in `repeats`.
fn medians(runs: Vec<Row>, repeat: u32, rows: &mut Vec<Row>, repeats: &mut Vec<Row>) {
    if repeat <= 1 {
        rows.extend(runs);
        return;
    }
    rows.extend(report::medians(&runs));
    repeats.extend(runs);
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(|m| m.trim().to_owned())
        .unwrap_or_default();
    Machine {
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        cpu,
        memory,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
const BENCH_ALLOCATOR: &str = "jemalloc";
#[cfg(not(all(feature = "jemalloc", not(target_env = "msvc"))))]
const BENCH_ALLOCATOR: &str = "system";

/// What `jobstatus --version` says of the server binary, and a warning on
/// stderr if it was built with another allocator than this tool: the bare
/// baseline and the storage floor would then compare allocators, not code.
fn server_build(server_bin: &std::path::Path) -> Option<String> {
    let out = std::process::Command::new(server_bin)
        .arg("--version")
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    eprintln!("server: {version}; bare baseline and storage floor: allocator {BENCH_ALLOCATOR}");
    if !version.contains(&format!("(allocator: {BENCH_ALLOCATOR})")) {
        eprintln!(
            "warning: the server and this tool use different allocators; build both in one \
             command (`cargo build --release -p jobstatus -p jobstatus-bench`) to compare code"
        );
    }
    Some(version)
}

/// 20k one-stream connections need ~20k fds in each process: raise the
/// soft limit (and, as root, the hard one); children inherit it.
fn raise_fd_limit() {
    let want = 262_144;
    if let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE)
        && rlimit::setrlimit(rlimit::Resource::NOFILE, want, want.max(hard)).is_err()
    {
        let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, hard.max(soft), hard);
    }
    if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        eprintln!("open files limit: {soft}");
    }
}

/// The allocator the server runs on (see the server's `main.rs`).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Sub::StorageFloor(args)) = &cli.command {
        // No async runtime: nothing but the measured thread may run.
        return match floor::run(args) {
            Ok(result) => match serde_json::to_string(&result) {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Sub::BareServer {
            listen,
            max_concurrent_streams,
            hand_off,
        }) => match runtime.block_on(bare::serve(listen, max_concurrent_streams, hand_off)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Sub::StorageFloor(_)) => ExitCode::FAILURE, // handled above
        None => {
            raise_fd_limit();
            runtime.block_on(run(cli.run))
        }
    }
}

async fn run(mut args: RunArgs) -> ExitCode {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339();
    if args.smoke {
        args.w1_jobs = vec![50];
        args.w2_watchers = vec![100];
        args.w3_streams = vec![200];
        args.w3_conn_streams = vec![200];
        args.w3_streams_per_connection = 50;
        args.w3_hold_secs = 1;
        args.w4_secs = 1;
        args.w4_jobs = 3000;
        args.connections = 8;
        args.phase_timeout_secs = args.phase_timeout_secs.min(30);
    }
    let self_bin = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find this binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server_bin = args
        .server_bin
        .clone()
        .unwrap_or_else(|| self_bin.with_file_name("jobstatus"));
    let backend = match &args.database_url {
        Some(u) if u.starts_with("postgres") => "postgres",
        _ => "sqlite",
    };
    let wants_real = args.targets.contains(&TargetArg::Real);
    if wants_real && args.connect.is_none() && !server_bin.exists() {
        eprintln!(
            "error: {} not found: run `cargo build --release --bin jobstatus` or pass --server-bin",
            server_bin.display()
        );
        return ExitCode::FAILURE;
    }
    if args.replicas > 1 && backend != "postgres" {
        eprintln!("error: --replicas needs a postgres:// --database-url (SQLite has one writer)");
        return ExitCode::from(2);
    }
    if args.connect.is_some_and(|a| !a.ip().is_loopback()) {
        eprintln!("error: --connect must be a loopback address");
        return ExitCode::FAILURE;
    }
    let secret = match (&args.jwt_secret, args.connect) {
        (Some(s), _) => s.clone(),
        (None, Some(_)) => {
            eprintln!("error: --connect needs --jwt-secret (the server's)");
            return ExitCode::from(2);
        }
        (None, None) => jobstatus::dev::generate_secret(),
    };
    let tmp = std::env::temp_dir().join(format!("jobstatus-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&tmp) {
        eprintln!("error: cannot create {}: {e}", tmp.display());
        return ExitCode::FAILURE;
    }
    let out_dir = args.out.clone().unwrap_or_else(|| {
        if args.smoke {
            tmp.join("out")
        } else {
            PathBuf::from("bench-results")
        }
    });
    let build = if wants_real && args.connect.is_none() {
        server_build(&server_bin)
    } else {
        None
    };
    let spec = ServerSpec {
        server_bin,
        self_bin,
        database_url: args.database_url.clone(),
        tmp_dir: tmp.clone(),
        secret,
        max_streams: args.max_concurrent_streams,
        connect: args.connect,
        connect_pid: args.server_pid,
        replicas: args.replicas.max(1),
        shipped_limits: false,
        extra_args: Vec::new(),
        server_log: args.server_log.clone(),
    };
    let knobs = Knobs {
        connections: args.connections.max(1),
        rpc_connections: args.rpc_connections.max(1),
        in_flight: args.in_flight.max(1),
        phase_timeout: Duration::from_secs(args.phase_timeout_secs.max(1)),
        w3_streams_per_connection: args.w3_streams_per_connection.max(1),
        w3_hold: Duration::from_secs(args.w3_hold_secs),
        w3_conn_grpc_web: args.w3_conn_protocol == ConnProtocol::GrpcWeb,
        w4_duration: Duration::from_secs(args.w4_secs.max(1)),
        w4_jobs: args.w4_jobs.max(1),
    };
    let ctx = match Ctx::new(spec, knobs) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The baseline first, then the real server, at every size: side by side.
    let targets: Vec<Target> = [TargetArg::Bare, TargetArg::HandOff, TargetArg::Real]
        .into_iter()
        .filter(|t| args.targets.contains(t))
        .map(|t| match t {
            TargetArg::Real => Target::Real,
            TargetArg::Bare => Target::Bare,
            TargetArg::HandOff => Target::HandOff,
        })
        .collect();
    // The hand-off only stands beside the durable floor, which is W1's
    // and W4's.
    let plain: Vec<Target> = targets
        .iter()
        .copied()
        .filter(|t| *t != Target::HandOff)
        .collect();

    let mut rows: Vec<Row> = Vec::new();
    let mut curves: Vec<Curve> = Vec::new();
    let mut repeats: Vec<Row> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut keep = |result: Result<Row, String>, rows: &mut Vec<Row>| match result {
        Ok(row) => {
            eprintln!(
                "  {} size={} {}: {}",
                row.workload,
                row.size,
                row.target.name(),
                if row.ok { "ok" } else { "FAILED" }
            );
            rows.push(row);
        }
        Err(e) => {
            eprintln!("  error: {e}");
            errors.push(e);
        }
    };
    for workload in [
        Workload::W1,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::Abuse,
    ] {
        if !args.workloads.contains(&workload) {
            continue;
        }
        eprintln!(
            "== {workload:?} ({:.0} s so far)",
            started.elapsed().as_secs_f64()
        );
        match workload {
            Workload::W1 => {
                for &j in &args.w1_jobs {
                    let mut runs = Vec::new();
                    for _ in 0..args.repeat {
                        for &t in &targets {
                            keep(workloads::w1(&ctx, t, j).await, &mut runs);
                        }
                    }
                    medians(runs, args.repeat, &mut rows, &mut repeats);
                }
            }
            Workload::W2 => {
                for &w in &args.w2_watchers {
                    for &t in &plain {
                        keep(workloads::w2(&ctx, t, w).await, &mut rows);
                    }
                }
            }
            Workload::W3 => {
                for (mode, sizes) in [
                    (W3Mode::Mux, &args.w3_streams),
                    (W3Mode::Conn, &args.w3_conn_streams),
                ] {
                    for &t in &plain {
                        match workloads::w3(&ctx, t, mode, sizes).await {
                            Ok((rs, curve)) => {
                                for r in rs {
                                    keep(Ok(r), &mut rows);
                                }
                                curves.push(curve);
                            }
                            Err(e) => keep(Err(e), &mut rows),
                        }
                    }
                }
            }
            Workload::W4 => {
                let mut runs = Vec::new();
                for _ in 0..args.repeat {
                    for &t in &targets {
                        keep(workloads::w4(&ctx, t).await, &mut runs);
                    }
                }
                medians(runs, args.repeat, &mut rows, &mut repeats);
            }
            Workload::Abuse if targets.contains(&Target::Real) && args.connect.is_none() => {
                let sizes = if args.smoke {
                    abuse::Sizes::smoke()
                } else {
                    abuse::Sizes::full()
                };
                match abuse::abuse(&ctx, sizes).await {
                    Ok(rs) => {
                        for r in rs {
                            keep(Ok(r), &mut rows);
                        }
                    }
                    Err(e) => keep(Err(e), &mut rows),
                }
            }
            Workload::Abuse => {
                eprintln!("  skipped: the abuse workload starts its own real server")
            }
        }
    }

    let checks = report::targets(&rows);
    let floor = report::durable_floor(&rows);
    println!("{}", report::table(&rows, &checks));
    print!("{}", report::floor_table(&floor));
    let record = Record {
        tool: "jobstatus-bench",
        started_at,
        command: std::env::args().collect(),
        backend,
        machine: machine(),
        server_build: build,
        bench_allocator: BENCH_ALLOCATOR,
        connections: ctx.knobs.connections,
        in_flight: ctx.knobs.in_flight,
        rows: &rows,
        repeats: &repeats,
        curves: &curves,
        targets: &checks,
        durable_floor: &floor,
        errors: &errors,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    let mut wrote_ok = true;
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        eprintln!("error: cannot create {}: {e}", out_dir.display());
        wrote_ok = false;
    } else {
        let json = out_dir.join(format!("results-{backend}.json"));
        match serde_json::to_string_pretty(&record) {
            Ok(text) => {
                if let Err(e) = std::fs::write(&json, text) {
                    eprintln!("error: cannot write {}: {e}", json.display());
                    wrote_ok = false;
                }
            }
            Err(e) => {
                eprintln!("error: cannot encode the results: {e}");
                wrote_ok = false;
            }
        }
        let latency = out_dir.join(format!("latency-{backend}.svg"));
        let rss = out_dir.join(format!("rss-{backend}.svg"));
        let has_latency = rows
            .iter()
            .any(|r| r.workload == "W1" || r.workload == "W2");
        let plots = [
            has_latency.then(|| (report::plot_latency(&rows, &latency), &latency)),
            (!curves.is_empty()).then(|| (report::plot_rss(&curves, &rss), &rss)),
        ];
        for (result, path) in plots.into_iter().flatten() {
            if let Err(e) = result {
                eprintln!("error: {}: {e}", path.display());
                wrote_ok = false;
            }
        }
        if args.smoke && args.out.is_none() {
            eprintln!("results: not kept (pass --out DIR to keep the smoke run's files)");
        } else {
            eprintln!("results: {} (json, svg)", out_dir.display());
        }
    }
    // Remove the temporary databases (and, for --smoke, the outputs too
    // unless --out was given).
    if args.smoke && args.out.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    } else {
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            if entry
                .path()
                .extension()
                .is_some_and(|e| e != "svg" && e != "json")
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let _ = std::fs::remove_dir(&tmp);
    }
    eprintln!("total {:.0} s", started.elapsed().as_secs_f64());
    // Delivery correctness (W1, W2) and errors always fail the run; with
    // --smoke every check does (W3 must open all, W4 must not fail).
    let delivery_failed = rows
        .iter()
        .any(|r| !r.ok && (r.workload == "W1" || r.workload == "W2"));
    let any_failed = rows.iter().any(|r| !r.ok);
    // A smoke run also needs every operation's storage floor measured,
    // unless it ran against a server the tool did not start (no floor).
    let floor_missing =
        args.connect.is_none() && floor.iter().any(|l| l.storage_floor_us.is_none());
    if delivery_failed
        || !errors.is_empty()
        || !wrote_ok
        || (args.smoke && (any_failed || floor_missing))
    {
        eprintln!("FAILED: see the notes above");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
