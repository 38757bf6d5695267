//! The Prometheus side of the metrics: the one process-wide recorder
//! (installed once, behind the OTLP fan-out), the histogram bucket bounds,
//! and the recorder's upkeep on its own schedule.
//!
//! Histogram samples wait in the recorder's per-series buckets until an
//! upkeep folds them into their distributions. A scrape of `/metrics` runs
//! one, but a deployment that only exports over OTLP never scrapes, so
//! [`upkeep_task`] runs it on an interval as well: without it, memory grows
//! with every request.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

use super::metrics::AUDIT_BATCH_RECORDS;
use super::otlp_metrics;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Histogram bucket bounds (seconds), on `/metrics` and over OTLP alike.
const LATENCY: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Bucket bounds for the audit batch size histogram (a count, not seconds).
const BATCH_RECORDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
];

/// The bucket bounds of one histogram, the same on `/metrics` and OTLP.
pub(crate) fn buckets_for(name: &str) -> &'static [f64] {
    if name == AUDIT_BATCH_RECORDS.name {
        BATCH_RECORDS
    } else {
        LATENCY
    }
}

/// Install the process-wide metrics recorder once; later calls (several
/// gateways in one test process) share it.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY)
                .ok()?
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(AUDIT_BATCH_RECORDS.name.into()),
                    buckets_for(AUDIT_BATCH_RECORDS.name),
                )
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            // Fans out to OTLP too once `init` binds a meter provider.
            otlp_metrics::install(recorder).ok()?;
            super::metrics::describe();
            Some(handle)
        })
        .clone()
}

/// Default time between two scheduled upkeeps.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Interval of upkeep tasks started from now on, in ms (0 = the default).
static UPKEEP_MS: AtomicU64 = AtomicU64::new(0);
/// Scheduled upkeeps completed since start.
static UPKEEPS: AtomicU64 = AtomicU64::new(0);

/// Set the interval of the upkeep tasks started after this call (tests use
/// a short one; the gateway's default is 5 s).
pub fn set_upkeep_interval(every: Duration) {
    let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
    UPKEEP_MS.store(ms, Ordering::Relaxed);
}

/// How many scheduled upkeeps have completed (tests wait for the next one).
pub fn upkeeps() -> u64 {
    UPKEEPS.load(Ordering::Acquire)
}

/// Fold the histogram samples recorded so far into their distributions, as
/// a scrape does.
pub fn run_upkeep() {
    if let Some(Some(h)) = PROMETHEUS.get() {
        h.run_upkeep();
    }
}

/// Run [`run_upkeep`] on an interval until `stop` turns true (or its
/// sender is dropped); one more upkeep on the way out.
pub async fn upkeep_task(mut stop: watch::Receiver<bool>) {
    let every = match UPKEEP_MS.load(Ordering::Relaxed) {
        0 => UPKEEP_EVERY,
        ms => Duration::from_millis(ms),
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { break },
        }
        run_upkeep();
        UPKEEPS.fetch_add(1, Ordering::AcqRel);
    }
    run_upkeep();
}
