//! Wiring: opens the store, binds the listener, runs the server and shuts
//! everything down in order. The one place that knows every component.
//!
//! Shutdown order: stop accepting and end every watch stream (they tell
//! their clients to resume), let in-flight calls finish within the grace
//! period, stop the PostgreSQL listener (if any), then let the store commit
//! what is queued and close.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{JwtSettings, Verifier};
use crate::grpc::listen::EdgeStats;
use crate::grpc::{self, ServeOptions};
use crate::hub::Hub;
use crate::hub::pg_listen::{self, ListenOptions, ListenerStats};
use crate::jobs::Jobs;
use crate::storage::{Store, StoreOptions};
use crate::telemetry;

/// Everything [`App::build`] needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: String,
    pub jwt: JwtSettings,
    pub heartbeat: Duration,
    pub store: StoreOptions,
    pub watch_buffer: usize,
    pub serve: ServeOptions,
    pub shutdown_grace: Duration,
    /// Serve Prometheus metrics at `/metrics` on this address.
    pub metrics_listen: Option<SocketAddr>,
}

/// Why the service could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {reason}")]
    Metrics { addr: SocketAddr, reason: String },
    #[error("cannot open the database: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("cannot serve TLS: {0}")]
    Tls(#[from] crate::grpc::tls::TlsError),
}

#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    jobs: Jobs,
    store: Store,
    verifier: Verifier,
    shutdown: CancellationToken,
    settings: Settings,
    /// What the PostgreSQL listener task has done (all zero on SQLite).
    listener_stats: Arc<ListenerStats>,
    /// What the accept loop has done (connections refused, timed out...).
    edge_stats: Arc<EdgeStats>,
    /// The metrics endpoint's listener and the recorder's handle.
    metrics: Option<(TcpListener, PrometheusHandle)>,
}

impl App {
    /// Opens the database (running migrations) and binds the listener, so
    /// that when this returns the service accepts connections.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        // The store's writers publish what they commit themselves, so that
        // a change whose caller has gone still reaches its watchers.
        let hub = Hub::new(settings.watch_buffer);
        let store = Store::connect(
            &settings.database_url,
            &settings.store,
            Arc::new(hub.clone()),
        )
        .await?;
        // The metrics endpoint is bound before the service's port, so that
        // anything that waits for the service to accept (an orchestrator's
        // probe, a test) finds its metrics there too.
        let metrics = match settings.metrics_listen {
            None => None,
            Some(addr) => {
                let failed = |reason: String| StartError::Metrics { addr, reason };
                let handle = telemetry::metrics::install().map_err(failed)?;
                let listener = telemetry::metrics::bind(addr)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                Some((listener, handle))
            }
        };
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: settings.listen,
            source,
        })?;
        let shutdown = CancellationToken::new();
        let jobs = Jobs::new(store.clone(), hub, shutdown.clone(), settings.heartbeat);
        Ok(Self {
            listener,
            local_addr,
            jobs,
            store,
            verifier: Verifier::new(&settings.jwt),
            shutdown,
            settings,
            listener_stats: Arc::default(),
            edge_stats: Arc::default(),
            metrics,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// The PostgreSQL listener's counters (they stay zero on SQLite).
    pub fn listener_stats(&self) -> Arc<ListenerStats> {
        self.listener_stats.clone()
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// The accept loop's counters.
    pub fn edge_stats(&self) -> Arc<EdgeStats> {
        self.edge_stats.clone()
    }

    /// Serves until `signal` resolves, then shuts down gracefully.
    pub async fn run(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let Self {
            listener,
            local_addr,
            jobs,
            store,
            verifier,
            shutdown,
            settings,
            listener_stats,
            edge_stats,
            metrics,
        } = self;
        tracing::info!(%local_addr, database = %crate::storage::redact(&settings.database_url), "jobstatus listening");
        // On PostgreSQL, events other replicas commit reach local watchers
        // through this task. It is started here rather than in `build` so
        // that `run` owns it: it ends on the shutdown token and is awaited
        // below, before the store (and its listen pool) closes.
        let pg_listener = match &store {
            Store::Postgres(pg) => Some(tokio::spawn(pg_listen::run(
                pg.clone(),
                jobs.hub().clone(),
                ListenOptions {
                    backoff: settings.store.listener_backoff,
                    backoff_max: settings.store.listener_backoff_max,
                },
                listener_stats.clone(),
                shutdown.child_token(),
            ))),
            Store::Sqlite(_) => None,
        };
        // The metrics endpoint outlives the drain (a last scrape may see
        // it), and ends with the process.
        let metrics_done = CancellationToken::new();
        let metrics_task = metrics.map(|(listener, handle)| {
            let refresh = scrape_refresh(
                jobs.clone(),
                verifier.clone(),
                edge_stats.clone(),
                matches!(store, Store::Postgres(_)).then(|| listener_stats.clone()),
            );
            tokio::spawn(telemetry::metrics::serve(
                listener,
                handle,
                refresh,
                metrics_done.clone(),
            ))
        });
        let server = grpc::serve(
            listener,
            jobs,
            verifier,
            settings.serve.clone(),
            edge_stats,
            shutdown.clone().cancelled_owned(),
        );
        tokio::pin!(server);
        let result = tokio::select! {
            result = &mut server => result,
            () = signal => {
                tracing::info!("shutting down: ending watch streams, finishing in-flight calls");
                shutdown.cancel();
                match tokio::time::timeout(settings.shutdown_grace, &mut server).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(grace = ?settings.shutdown_grace, "calls still running after the grace period were dropped");
                        Ok(())
                    }
                }
            }
        };
        shutdown.cancel();
        if let Some(task) = pg_listener
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "the PostgreSQL listener task failed");
        }
        store.close().await;
        metrics_done.cancel();
        if let Some(task) = metrics_task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "the metrics task failed");
        }
        tracing::info!("stopped");
        result.map_err(StartError::from)
    }
}

/// Sets, before each scrape, the series that are read rather than recorded.
fn scrape_refresh(
    jobs: Jobs,
    verifier: Verifier,
    edge: Arc<EdgeStats>,
    listener: Option<Arc<ListenerStats>>,
) -> telemetry::metrics::Refresh {
    use std::sync::atomic::Ordering::Relaxed;
    use telemetry::metrics as m;
    Arc::new(move || {
        metrics::gauge!(m::HUB_TOPICS).set(jobs.hub().topic_count() as f64);
        metrics::gauge!(m::HUB_USERS).set(jobs.hub().users().sizes().0 as f64);
        for (http2, protocol) in [(false, "http1"), (true, "http2")] {
            for (tls, over_tls) in [(false, "false"), (true, "true")] {
                metrics::gauge!(m::CONNECTIONS_OPEN, "protocol" => protocol, "tls" => over_tls)
                    .set(edge.open_with(http2, tls) as f64);
            }
        }
        metrics::counter!(m::CONNECTIONS_ACCEPTED).absolute(edge.accepted.load(Relaxed));
        for (reason, count) in [
            ("at_capacity", &edge.refused_at_capacity),
            ("handshake_timeout", &edge.handshake_timeouts),
            ("handshake_failed", &edge.handshake_failures),
            ("idle", &edge.idle_closed),
        ] {
            metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => reason)
                .absolute(count.load(Relaxed));
        }
        metrics::counter!(m::ACCEPT_ERRORS).absolute(edge.accept_errors.load(Relaxed));
        metrics::gauge!(m::TOKEN_CACHE_ENTRIES).set(verifier.cached_tokens() as f64);
        if let Some(listener) = &listener {
            metrics::counter!(m::LISTEN_SESSIONS).absolute(listener.sessions.load(Relaxed));
            metrics::counter!(m::LISTEN_BREAKS).absolute(listener.breaks.load(Relaxed));
            metrics::counter!(m::LISTEN_RESYNCED).absolute(listener.resynced.load(Relaxed));
            metrics::counter!(m::LISTEN_DOWN_SECONDS).absolute(listener.down_for().as_secs());
            metrics::gauge!(m::LISTEN_CONNECTED).set(if listener.connected() { 1.0 } else { 0.0 });
        }
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
