//! Prometheus metrics: every series jobstatus exports (named here, in one
//! list, so the README's table and the code cannot drift apart), the
//! process-wide recorder, and the `/metrics` endpoint that serves them.
//!
//! Events are recorded where they happen, through the `metrics` facade (a
//! no-op until the recorder is installed, which `--metrics-listen` does);
//! the series recorded on every call, event or delivery keep their handles
//! ([`Kept`]) rather than look their series up each time.
//! Counts that already live in the code as atomics or sizes (open
//! connections, hub topics, LISTEN sessions, cached tokens) are read at
//! scrape time by a [`Refresh`], so the hot paths pay nothing for them.
//! The endpoint must never block the service: it renders from memory, on
//! its own listener, with its own small limits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

// ------------------------------------------------------------- the series

/// RPCs started, by `grpc_service`, `grpc_method`, `grpc_type`.
pub const RPC_STARTED: &str = "grpc_server_started_total";
/// RPCs finished, by the same labels and `grpc_code`.
pub const RPC_HANDLED: &str = "grpc_server_handled_total";
/// Seconds from an RPC's start to its status (a stream's end, for streams).
pub const RPC_SECONDS: &str = "grpc_server_handling_seconds";
/// Messages sent on JobService's streams, by `grpc_method`.
pub const RPC_MSG_SENT: &str = "grpc_server_msg_sent_total";

/// Open watch streams, by `rpc` (WatchJob, WatchMyJobs).
pub const WATCHES_OPEN: &str = "jobstatus_watch_streams_open";
/// Watch streams ended, by `rpc` and `reason` (terminal, access_lost,
/// token_expired, shutdown, client_gone, limit, error).
pub const WATCHES_ENDED: &str = "jobstatus_watch_streams_ended_total";
/// Events delivered on watch streams, by `rpc`.
pub const EVENTS_DELIVERED: &str = "jobstatus_watch_events_delivered_total";
/// Times a watcher fell behind (lag, or a hole) and was caught up from the log.
pub const CATCH_UPS: &str = "jobstatus_watch_catch_ups_total";
/// Events read from the log to catch watchers up (resumes included).
pub const CATCH_UP_EVENTS: &str = "jobstatus_watch_catch_up_events_total";
/// RESYNC snapshots sent (a watcher's revision the log could not cover).
pub const RESYNCS: &str = "jobstatus_watch_resyncs_total";

/// Jobs with a broadcast topic (somebody watches them here).
pub const HUB_TOPICS: &str = "jobstatus_hub_topics";
/// Users with a WatchMyJobs topic here.
pub const HUB_USERS: &str = "jobstatus_hub_users";
/// Events handed to the hub (committed here, or forwarded from other replicas).
pub const EVENTS_PUBLISHED: &str = "jobstatus_events_published_total";

/// Open connections, by `protocol` (http1, http2) and `tls` (true, false).
pub const CONNECTIONS_OPEN: &str = "jobstatus_connections_open";
/// Connections accepted.
pub const CONNECTIONS_ACCEPTED: &str = "jobstatus_connections_accepted_total";
/// Connections closed by the server, by `reason` (at_capacity,
/// handshake_timeout, handshake_failed, idle).
pub const CONNECTIONS_CLOSED: &str = "jobstatus_connections_closed_total";
/// Failed accepts (out of file descriptors, say).
pub const ACCEPT_ERRORS: &str = "jobstatus_accept_errors_total";

/// Changes per committed batch.
pub const BATCH_SIZE: &str = "jobstatus_writer_batch_changes";
/// Seconds a batch took from its first statement to its commit.
pub const BATCH_SECONDS: &str = "jobstatus_writer_batch_seconds";
/// Batches whose transaction failed (each change is then tried alone).
pub const BATCHES_FAILED: &str = "jobstatus_writer_batches_failed_total";
/// Calls answered UNAVAILABLE because of the database, by `condition`
/// (unreachable, disk_full, io_error, read_only, locked).
pub const STORAGE_UNAVAILABLE: &str = "jobstatus_storage_unavailable_total";

/// PostgreSQL LISTEN sessions opened (the first, then each reconnect).
pub const LISTEN_SESSIONS: &str = "jobstatus_listen_sessions_total";
/// PostgreSQL LISTEN sessions that broke.
pub const LISTEN_BREAKS: &str = "jobstatus_listen_breaks_total";
/// 1 while the LISTEN session is up, 0 while it reconnects.
pub const LISTEN_CONNECTED: &str = "jobstatus_listen_connected";
/// Seconds the LISTEN session has been down, summed.
pub const LISTEN_DOWN_SECONDS: &str = "jobstatus_listen_disconnected_seconds_total";
/// Events published by the catch-up after each (re)connect.
pub const LISTEN_RESYNCED: &str = "jobstatus_listen_resynced_events_total";

/// Calls refused for their token, by `reason`.
pub const AUTH_REFUSALS: &str = "jobstatus_auth_refusals_total";
/// Token verifications answered from the cache, and those that were not.
pub const TOKEN_CACHE_HITS: &str = "jobstatus_token_cache_hits_total";
pub const TOKEN_CACHE_MISSES: &str = "jobstatus_token_cache_misses_total";
/// Verified tokens held in the cache.
pub const TOKEN_CACHE_ENTRIES: &str = "jobstatus_token_cache_entries";
/// SQLite job reads answered from memory, and those that read the file.
pub const JOB_CACHE_HITS: &str = "jobstatus_sqlite_job_cache_hits_total";
pub const JOB_CACHE_MISSES: &str = "jobstatus_sqlite_job_cache_misses_total";
/// Requests refused by a limit, by `limit`.
pub const LIMITS_HIT: &str = "jobstatus_limits_hit_total";

/// 1 while health checking reports SERVING, 0 otherwise.
pub const HEALTH_SERVING: &str = "jobstatus_health_serving";

/// Every series and its kind, for the README and the test that checks it.
pub const SERIES: [(&str, &str); 37] = [
    (RPC_STARTED, "counter"),
    (RPC_HANDLED, "counter"),
    (RPC_SECONDS, "histogram"),
    (RPC_MSG_SENT, "counter"),
    (WATCHES_OPEN, "gauge"),
    (WATCHES_ENDED, "counter"),
    (EVENTS_DELIVERED, "counter"),
    (CATCH_UPS, "counter"),
    (CATCH_UP_EVENTS, "counter"),
    (RESYNCS, "counter"),
    (HUB_TOPICS, "gauge"),
    (HUB_USERS, "gauge"),
    (EVENTS_PUBLISHED, "counter"),
    (CONNECTIONS_OPEN, "gauge"),
    (CONNECTIONS_ACCEPTED, "counter"),
    (CONNECTIONS_CLOSED, "counter"),
    (ACCEPT_ERRORS, "counter"),
    (BATCH_SIZE, "histogram"),
    (BATCH_SECONDS, "histogram"),
    (BATCHES_FAILED, "counter"),
    (STORAGE_UNAVAILABLE, "counter"),
    (LISTEN_SESSIONS, "counter"),
    (LISTEN_BREAKS, "counter"),
    (LISTEN_CONNECTED, "gauge"),
    (LISTEN_DOWN_SECONDS, "counter"),
    (LISTEN_RESYNCED, "counter"),
    (AUTH_REFUSALS, "counter"),
    (TOKEN_CACHE_HITS, "counter"),
    (TOKEN_CACHE_MISSES, "counter"),
    (TOKEN_CACHE_ENTRIES, "gauge"),
    (JOB_CACHE_HITS, "counter"),
    (JOB_CACHE_MISSES, "counter"),
    (LIMITS_HIT, "counter"),
    (HEALTH_SERVING, "gauge"),
    ("process_open_fds", "gauge"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_cpu_seconds_total", "counter"),
];

/// Seconds: from half a millisecond (a cached read) to ten (a stuck call).
const SECONDS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Changes per batch: powers of two up to what 512 calls in flight make.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

// --------------------------------------------------------- the recorder

/// The recorder, once [`install`] ran (or the reason it could not be).
static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// The process-wide recorder's handle: installed once, by the first caller.
pub fn install() -> Result<PrometheusHandle, String> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(RPC_SECONDS.into()), &SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BATCH_SECONDS.into()), &SECONDS_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), &BATCH_BUCKETS)
                })
                .map_err(|e| e.to_string())?;
            let handle = builder.install_recorder().map_err(|e| e.to_string())?;
            for (name, _) in SERIES {
                describe(name);
            }
            Ok(handle)
        })
        .clone()
}

/// Whether [`install`] installed the recorder.
fn installed() -> bool {
    matches!(HANDLE.get(), Some(Ok(_)))
}

/// A series' handle, registered with the recorder once and kept, for the
/// series recorded on every call, event or delivery. The facade's macros
/// build, hash and look up the series' key (its labels in a new vector)
/// on every use, about a tenth of a microsecond each, and a W1 transition
/// records a dozen of them; a kept handle is one atomic add.
///
/// Until the recorder is installed it gives nothing, and so nothing is
/// recorded, as with the facade: a handle made then would be the no-op
/// recorder's, and would stay one after [`install`].
#[derive(Debug)]
pub struct Kept<T>(OnceLock<T>);

impl<T> Kept<T> {
    pub const fn new() -> Self {
        Self(OnceLock::new())
    }

    /// The handle, made by `register` (one of the facade's macros) on
    /// first use once the recorder is installed.
    fn get(&self, register: impl FnOnce() -> T) -> Option<&T> {
        if let Some(handle) = self.0.get() {
            return Some(handle);
        }
        installed().then(|| self.0.get_or_init(register))
    }
}

impl Kept<metrics::Counter> {
    /// Adds `by`, registering the counter with `register` on first use.
    pub fn increment(&self, by: u64, register: impl FnOnce() -> metrics::Counter) {
        if let Some(counter) = self.get(register) {
            counter.increment(by);
        }
    }
}

impl Kept<metrics::Gauge> {
    /// Adds `by` (negative to take away), registering the gauge on first use.
    pub fn increment(&self, by: f64, register: impl FnOnce() -> metrics::Gauge) {
        if let Some(gauge) = self.get(register) {
            gauge.increment(by);
        }
    }
}

impl Kept<metrics::Histogram> {
    /// Records `value`, registering the histogram on first use.
    pub fn record(&self, value: f64, register: impl FnOnce() -> metrics::Histogram) {
        if let Some(histogram) = self.get(register) {
            histogram.record(value);
        }
    }
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Self::new()
    }
}

fn describe(name: &'static str) {
    // One help line per series, the doc comment's first sentence above.
    let help = match name {
        RPC_STARTED => "RPCs started.",
        RPC_HANDLED => "RPCs finished, by status code.",
        RPC_SECONDS => "Seconds from an RPC's start to its status.",
        RPC_MSG_SENT => "Messages sent on JobService's streams.",
        WATCHES_OPEN => "Open watch streams.",
        WATCHES_ENDED => "Watch streams ended, by reason.",
        EVENTS_DELIVERED => "Events delivered on watch streams.",
        CATCH_UPS => "Watchers that fell behind and were caught up from the log.",
        CATCH_UP_EVENTS => "Events read from the log to catch watchers up.",
        RESYNCS => "RESYNC snapshots sent.",
        HUB_TOPICS => "Jobs watched on this replica.",
        HUB_USERS => "Users with a WatchMyJobs stream on this replica.",
        EVENTS_PUBLISHED => "Events handed to the hub.",
        CONNECTIONS_OPEN => "Open connections.",
        CONNECTIONS_ACCEPTED => "Connections accepted.",
        CONNECTIONS_CLOSED => "Connections closed by the server, by reason.",
        ACCEPT_ERRORS => "Failed accepts.",
        BATCH_SIZE => "Changes per committed batch.",
        BATCH_SECONDS => "Seconds per batch transaction.",
        BATCHES_FAILED => "Batch transactions that failed.",
        STORAGE_UNAVAILABLE => "Calls answered UNAVAILABLE because of the database.",
        LISTEN_SESSIONS => "PostgreSQL LISTEN sessions opened.",
        LISTEN_BREAKS => "PostgreSQL LISTEN sessions that broke.",
        LISTEN_CONNECTED => "1 while the PostgreSQL LISTEN session is up.",
        LISTEN_DOWN_SECONDS => "Seconds the PostgreSQL LISTEN session was down.",
        LISTEN_RESYNCED => "Events published by catch-ups after a LISTEN (re)connect.",
        AUTH_REFUSALS => "Calls refused for their token, by reason.",
        TOKEN_CACHE_HITS => "Token verifications answered from the cache.",
        TOKEN_CACHE_MISSES => "Token verifications that decoded the token.",
        TOKEN_CACHE_ENTRIES => "Verified tokens in the cache.",
        JOB_CACHE_HITS => "SQLite job reads answered from memory.",
        JOB_CACHE_MISSES => "SQLite job reads that read the file.",
        LIMITS_HIT => "Requests refused by a limit.",
        HEALTH_SERVING => "1 while health checking reports SERVING.",
        "process_open_fds" => "Open file descriptors.",
        "process_resident_memory_bytes" => "Resident memory.",
        "process_cpu_seconds_total" => "CPU time used, user and system.",
        _ => return,
    };
    match SERIES.iter().find(|(n, _)| *n == name).map(|(_, k)| *k) {
        Some("counter") => metrics::describe_counter!(name, help),
        Some("gauge") => metrics::describe_gauge!(name, help),
        _ => metrics::describe_histogram!(name, help),
    }
}

/// Sets the series that are read rather than recorded, just before each
/// scrape renders.
pub type Refresh = Arc<dyn Fn() + Send + Sync>;

/// The process's own figures, from /proc (Linux; elsewhere they stay unset).
pub fn refresh_process() {
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("process_open_fds").set(entries.count() as f64);
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    {
        metrics::gauge!("process_resident_memory_bytes").set(kib * 1024.0);
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        && let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..))
    {
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
            // USER_HZ is 100 on every Linux this runs on.
            let seconds = (user + system) / 100.0;
            metrics::counter!("process_cpu_seconds_total").absolute(seconds as u64);
        }
    }
}

// ---------------------------------------------------------- the endpoint

/// Scrapes a connection may make before it is closed, and how long one may
/// take to send its request.
const SCRAPE_CONNECTIONS: usize = 16;
const SCRAPE_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `GET /metrics` on `listener` until `shutdown`: the text
/// exposition format, rendered by the exporter. Everything else is 404
/// (405 for other methods). At most a few connections at once, each with a
/// bounded head; the endpoint belongs on an address only Prometheus reaches.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    refresh: Refresh,
    shutdown: CancellationToken,
) {
    let capacity = Arc::new(Semaphore::new(SCRAPE_CONNECTIONS));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::debug!(error = %err, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = capacity.clone().try_acquire_owned() else {
            continue;
        };
        let (handle, refresh, shutdown) = (handle.clone(), refresh.clone(), shutdown.clone());
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = answer(&request, &handle, &refresh);
                async move { Ok::<_, Infallible>(response) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(SCRAPE_HEAD_TIMEOUT)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = shutdown.cancelled() => {}
            }
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
}

fn answer(
    request: &Request<Incoming>,
    handle: &PrometheusHandle,
    refresh: &Refresh,
) -> Response<Full<Bytes>> {
    let status = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            refresh();
            refresh_process();
            let body = handle.render();
            return Response::builder()
                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default();
        }
        (_, "/metrics") => StatusCode::METHOD_NOT_ALLOWED,
        _ => StatusCode::NOT_FOUND,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"GET /metrics\n")));
    *response.status_mut() = status;
    response
}

/// Binds the metrics listener (so a bad address fails at start-up).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table lists every series, so an operator reading it
    /// sees what the endpoint serves.
    #[test]
    fn the_readme_lists_every_series() {
        let readme = include_str!("../../README.md");
        let table = &readme[readme.find("## Metrics").unwrap()..];
        for (name, _) in SERIES {
            assert!(
                table.contains(&format!("`{name}`")),
                "{name} is not in the README"
            );
        }
    }
}
