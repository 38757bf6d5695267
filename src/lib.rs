//! cubegate: the one way internal services reach the ComplyCube API.
//! [`Gateway::start`] builds and runs a gateway from a compiled config
//! [`snapshot::Snapshot`]; the binary (`main.rs`) and the tests both use it.

pub mod audit;
pub mod config;
pub mod error;
pub mod model;
pub mod operations;
pub mod pipeline;
pub mod reload;
pub mod sandbox;
pub mod secret;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod telemetry;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::pipeline::forward::Upstream;
use crate::pipeline::rate_limit::RateLimiter;
use crate::snapshot::Snapshot;
use crate::state::{Runtime, Shared};

/// Install the ring crypto provider for rustls once per process. Safe to
/// call repeatedly (tests, several gateways in one process).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A running gateway: its listeners and shared state.
pub struct Gateway {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    gateway_task: JoinHandle<()>,
    admin_task: Option<JoinHandle<()>>,
    watch_task: Option<JoinHandle<()>>,
    upkeep_task: JoinHandle<()>,
}

impl Gateway {
    /// Bind the listeners named in the snapshot (port 0 picks a free one)
    /// and start serving.
    pub async fn start(snapshot: Snapshot) -> anyhow::Result<Gateway> {
        install_crypto_provider();
        let _ = telemetry::metrics_handle();
        // Every series the shipped dashboard and alerts query, at zero.
        telemetry::register_at_start(snapshot.tenants.iter().map(|t| t.id.as_str()));
        let upstream = Upstream::new(&snapshot.upstream)?;
        let limiter = RateLimiter::new(&snapshot.rate_limit)
            .await
            .map_err(|e| anyhow::anyhow!("rate limiter: {e}"))?;
        if !snapshot.rate_limit.enabled {
            tracing::warn!("{}", pipeline::rate_limit::OFF_NOTICE);
        }
        let audit = snapshot.open_audit()?;
        // Ship durable records as OTel logs when telemetry::init turned that on.
        if let (Some(a), Some(sink)) = (&audit, telemetry::audit_sink()) {
            a.set_sink(sink);
        }
        let (listener, addr) = server::bind(&snapshot.listener.address).await?;
        let admin = if snapshot.admin.enabled {
            Some(server::bind(&snapshot.admin.address).await?)
        } else {
            None
        };
        let shared = Arc::new(Shared::new(
            Runtime {
                snapshot: Arc::new(snapshot),
                upstream: Arc::new(upstream),
            },
            limiter,
            audit,
        ));
        let (stop, rx) = watch::channel(false);
        let gateway_task = tokio::spawn(server::run_gateway(listener, shared.clone(), rx.clone()));
        // Histogram samples are only released by an upkeep: without a
        // scraper, this task is what keeps memory flat.
        let upkeep_task = tokio::spawn(telemetry::upkeep_task(rx.clone()));
        let (admin_task, admin_addr) = match admin {
            Some((l, a)) => (
                Some(tokio::spawn(server::run_admin(l, shared.clone(), rx))),
                Some(a),
            ),
            None => (None, None),
        };
        Ok(Gateway {
            addr,
            admin_addr,
            shared,
            stop,
            gateway_task,
            admin_task,
            watch_task: None,
            upkeep_task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (`https://` with `[listener.tls]`) — point
    /// an SDK at `{url}/v1`.
    pub fn url(&self) -> String {
        let scheme = if self.shared.runtime().snapshot.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Swap in a new snapshot (and an upstream client built for it).
    /// Requests in flight finish on the old one; limiter and audit carry on.
    pub fn reload(&self, snapshot: Snapshot) -> anyhow::Result<()> {
        reload::swap(&self.shared, snapshot)
    }

    /// Load `path` again and swap it in; on error the old snapshot keeps
    /// serving (logged, counted as refused).
    pub fn reload_file(&self, path: &Path) -> anyhow::Result<()> {
        reload::reload_file(&self.shared, path)
    }

    /// Reload whenever `path` or a file it references changes (polling
    /// every `reload.poll_interval_ms`). Stops at shutdown.
    pub fn watch_config(&mut self, path: PathBuf) {
        let task = tokio::spawn(reload::watch(
            self.shared.clone(),
            path,
            self.stop.subscribe(),
        ));
        self.watch_task = Some(task);
    }

    /// Graceful shutdown: readiness fails and new requests get 503
    /// `draining` at once; in-flight requests get up to the drain time;
    /// then listeners close and the audit log is flushed.
    pub async fn shutdown(self) {
        self.shared.start_draining();
        let drain = Duration::from_millis(self.shared.runtime().snapshot.listener.drain_timeout_ms);
        let deadline = Instant::now() + drain;
        while self.shared.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.stop.send(true);
        let _ = self.gateway_task.await;
        if let Some(t) = self.admin_task {
            let _ = t.await;
        }
        if let Some(t) = self.watch_task {
            let _ = t.await;
        }
        let _ = self.upkeep_task.await;
        if let Some(a) = self.shared.audit()
            && let Err(e) = a.flush().await
        {
            tracing::error!(error = %e, "audit flush at shutdown failed");
        }
    }
}
