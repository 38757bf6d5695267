//! The metric catalogue: every metric cubegate emits — name, kind, labels,
//! description, and which of its series exist before their first event —
//! and the functions the rest of the crate calls to update them. No other
//! module names a metric; [`describe`] and [`register_at_start`] walk
//! [`CATALOGUE`], so a metric added here is described and seeded with the
//! rest.
//!
//! Labels are bounded: operation ids, status classes, tenant ids from
//! config and fixed reason words — never raw paths, header or body values.
//!
//! Which series exist at zero from start: every series the shipped
//! dashboard (`deploy/grafana-dashboard.json`) or alert rules
//! (`deploy/prometheus-alerts.yaml`) query, so a healthy gateway's panels
//! read zero rather than "no data" and its alerts are not blind. Labels
//! known at start get their values (configured tenants, refusal reasons,
//! export results). Operation and status class are only known per request
//! and their product is large, so a series keyed by them is seeded once,
//! without labels, as a placeholder nothing updates; the per-tenant request
//! series use the one combination a tenant's caller can produce without
//! reaching an operation (`operation="none"`, `4xx`: an unknown route), so
//! the dashboard's tenant selector lists every configured tenant. Metrics
//! the shipped files do not query appear with their first event, as
//! before.

use std::collections::HashMap;
use std::time::Duration;

use http::StatusCode;
use metrics::{counter, gauge, histogram};

/// What a metric is, in Prometheus terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A label set, as `(name, value)` pairs.
type Labels = &'static [(&'static str, &'static str)];

/// Which series of a metric exist, at zero, before its first event.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AtStart {
    /// None: the series appear with their first event.
    OnEvent,
    /// One series per label set listed.
    Each(&'static [Labels]),
    /// For every configured tenant, one series per label set listed, each
    /// with `tenant` added.
    PerTenant(&'static [Labels]),
}

/// One metric of the catalogue.
#[derive(Debug)]
pub(crate) struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
    pub at_start: AtStart,
}

use AtStart::{Each, OnEvent, PerTenant};
use Kind::{Counter, Gauge, Histogram};

/// The unlabelled series (for a labelled metric: a placeholder, see the
/// module doc).
const UNLABELLED: &[Labels] = &[&[]];
/// A tenant's caller on a route cubegate does not serve.
const UNROUTED: &[Labels] = &[&[("operation", "none"), ("status_class", "4xx")]];
/// Every `RefusalReason::as_str` (a test keeps the two equal).
pub(super) const EACH_REASON: &[Labels] = &[
    &[("reason", "budget")],
    &[("reason", "caller_quota")],
    &[("reason", "paused")],
    &[("reason", "queue_full")],
    &[("reason", "backend_unavailable")],
];
const EACH_RESULT: &[Labels] = &[&[("result", "ok")], &[("result", "error")]];

pub(crate) const REQUESTS: Metric = Metric {
    name: "cubegate_requests_total",
    kind: Counter,
    labels: &["operation", "status_class", "tenant"],
    help: "Requests handled, by operation, status class and tenant",
    at_start: PerTenant(UNROUTED),
};
pub(crate) const REQUEST_DURATION: Metric = Metric {
    name: "cubegate_request_duration_seconds",
    kind: Histogram,
    labels: &["operation", "status_class", "tenant"],
    help: "Time from request head to response head",
    at_start: PerTenant(UNROUTED),
};
pub(crate) const UPSTREAM_DURATION: Metric = Metric {
    name: "cubegate_upstream_duration_seconds",
    kind: Histogram,
    labels: &["operation", "status_class"],
    help: "Time ComplyCube took to answer (response head)",
    at_start: Each(UNLABELLED),
};
pub(crate) const IN_FLIGHT: Metric = Metric {
    name: "cubegate_in_flight_requests",
    kind: Gauge,
    labels: &[],
    help: "Requests being handled now",
    at_start: Each(UNLABELLED),
};
pub(crate) const RATE_LIMIT_WAITS: Metric = Metric {
    name: "cubegate_rate_limit_waits_total",
    kind: Counter,
    labels: &["tenant"],
    help: "Requests delayed (shaped) by the rate limiter",
    at_start: PerTenant(UNLABELLED),
};
pub(crate) const RATE_LIMIT_WAIT: Metric = Metric {
    name: "cubegate_rate_limit_wait_seconds",
    kind: Histogram,
    labels: &["tenant"],
    help: "Time a shaped request waited for its rate-limit slot",
    at_start: OnEvent,
};
pub(crate) const RATE_LIMIT_REFUSALS: Metric = Metric {
    name: "cubegate_rate_limit_refusals_total",
    kind: Counter,
    labels: &["tenant", "reason"],
    help: "Requests refused with 429 by cubegate, by tenant and reason \
           (budget|caller_quota|paused|queue_full|backend_unavailable)",
    at_start: PerTenant(EACH_REASON),
};
pub(crate) const RATE_LIMIT_BACKEND_ERRORS: Metric = Metric {
    name: "cubegate_rate_limit_backend_errors_total",
    kind: Counter,
    labels: &[],
    help: "Redis rate-limit calls that failed or timed out",
    at_start: OnEvent,
};
pub(crate) const RATE_LIMIT_FALLBACKS: Metric = Metric {
    name: "cubegate_rate_limit_fallbacks_total",
    kind: Counter,
    labels: &[],
    help: "Rate-limit decisions taken in-process because Redis was unavailable (fail = local)",
    at_start: OnEvent,
};
pub(crate) const RATE_LIMIT_TRACKED_KEYS: Metric = Metric {
    name: "cubegate_rate_limit_tracked_keys",
    kind: Gauge,
    labels: &[],
    help: "Budget, quota and pause entries held in memory after the last idle sweep",
    at_start: OnEvent,
};
pub(crate) const VALIDATION_REFUSALS: Metric = Metric {
    name: "cubegate_validation_refusals_total",
    kind: Counter,
    labels: &["operation", "mode"],
    help: "Schema violations, by operation and mode (enforce|shadow)",
    at_start: Each(UNLABELLED),
};
pub(crate) const FIELDS_STRIPPED: Metric = Metric {
    name: "cubegate_fields_stripped_total",
    kind: Counter,
    labels: &["operation"],
    help: "Body fields removed by policy",
    at_start: Each(UNLABELLED),
};
pub(crate) const AUDIT_WRITE: Metric = Metric {
    name: "cubegate_audit_write_seconds",
    kind: Histogram,
    labels: &[],
    help: "Time to make an audit record durable",
    at_start: Each(UNLABELLED),
};
/// The one count histogram; the others are seconds (see `buckets_for`).
pub(crate) const AUDIT_BATCH_RECORDS: Metric = Metric {
    name: "cubegate_audit_batch_records",
    kind: Histogram,
    labels: &[],
    help: "Records per audit write (and fsync): the group-commit factor",
    at_start: OnEvent,
};
pub(crate) const AUDIT_FAILURES: Metric = Metric {
    name: "cubegate_audit_failures_total",
    kind: Counter,
    labels: &[],
    help: "Audit records that could not be written",
    at_start: Each(UNLABELLED),
};
pub(crate) const AUDIT_REWRITTEN_BYTES: Metric = Metric {
    name: "cubegate_audit_rewritten_bytes_total",
    kind: Counter,
    labels: &[],
    help: "Audit log bytes written again after a failed fsync, or at start-up without fsync",
    at_start: OnEvent,
};
pub(crate) const SLOW_READERS_DROPPED: Metric = Metric {
    name: "cubegate_slow_readers_dropped_total",
    kind: Counter,
    labels: &[],
    help: "Connections dropped for taking no response bytes within listener.write_stall_timeout_ms",
    at_start: OnEvent,
};
pub(crate) const SLOW_CLIENTS_DROPPED: Metric = Metric {
    name: "cubegate_slow_clients_dropped_total",
    kind: Counter,
    labels: &[],
    help: "Connections dropped for not completing the TLS handshake and first request head \
           within listener.header_read_timeout_ms",
    at_start: OnEvent,
};
pub(crate) const TLS_HANDSHAKE_FAILURES: Metric = Metric {
    name: "cubegate_tls_handshake_failures_total",
    kind: Counter,
    labels: &[],
    help: "TLS handshakes refused (no, unknown or expired client certificate; bad handshake)",
    at_start: OnEvent,
};
pub(crate) const UPSTREAM_429: Metric = Metric {
    name: "cubegate_upstream_429_total",
    kind: Counter,
    labels: &["tenant"],
    help: "429 answers from ComplyCube",
    at_start: PerTenant(UNLABELLED),
};
pub(crate) const KEY_PAUSES: Metric = Metric {
    name: "cubegate_key_pauses_total",
    kind: Counter,
    labels: &["tenant"],
    help: "Upstream keys paused after a ComplyCube 429",
    at_start: OnEvent,
};
pub(crate) const BREAKER_TRANSITIONS: Metric = Metric {
    name: "cubegate_upstream_breaker_transitions_total",
    kind: Counter,
    labels: &["to"],
    help: "Upstream circuit breaker state changes, by new state (open|half_open|closed)",
    at_start: OnEvent,
};
pub(crate) const BREAKER_OPEN: Metric = Metric {
    name: "cubegate_upstream_breaker_open",
    kind: Gauge,
    labels: &[],
    help: "1 while the upstream circuit breaker is open or half-open, 0 once it closes",
    at_start: OnEvent,
};
pub(crate) const CONFIG_RELOADS: Metric = Metric {
    name: "cubegate_config_reloads_total",
    kind: Counter,
    labels: &["result"],
    help: "Config reloads, by result",
    at_start: OnEvent,
};
/// Sampled at each scrape, before rendering, so it is on every scrape; a
/// zero registered at start would read "unready" to an OTLP-only collector.
pub(crate) const READY: Metric = Metric {
    name: "cubegate_ready",
    kind: Gauge,
    labels: &[],
    help: "1 when /readyz would answer 200 (sampled at each scrape)",
    at_start: OnEvent,
};
/// Set at each readiness check (so on every scrape) and by audited writes.
pub(crate) const AUDIT_DISK_FREE: Metric = Metric {
    name: "cubegate_audit_disk_free_bytes",
    kind: Gauge,
    labels: &[],
    help: "Free bytes on the audit directory's file system",
    at_start: OnEvent,
};
/// Set with [`AUDIT_DISK_FREE`].
pub(crate) const AUDIT_WATERMARK: Metric = Metric {
    name: "cubegate_audit_watermark_tripped",
    kind: Gauge,
    labels: &[],
    help: "1 while the audit file system is below audit.min_free_bytes: audited writes get 503",
    at_start: OnEvent,
};
pub(crate) const OTEL_SPANS_EXPORTED: Metric = Metric {
    name: "cubegate_otel_spans_exported_total",
    kind: Counter,
    labels: &["result"],
    help: "Spans handed to the OTLP collector, by result (ok|error)",
    at_start: Each(EACH_RESULT),
};
pub(crate) const OTEL_METRIC_EXPORTS: Metric = Metric {
    name: "cubegate_otel_metric_exports_total",
    kind: Counter,
    labels: &["result"],
    help: "Metric exports to the OTLP collector, by result (ok|error)",
    at_start: OnEvent,
};
pub(crate) const OTEL_AUDIT_LOGS_EXPORTED: Metric = Metric {
    name: "cubegate_otel_audit_logs_exported_total",
    kind: Counter,
    labels: &["result"],
    help: "Audit records handed to the OTLP collector as log records, by result (ok|error)",
    at_start: OnEvent,
};

pub(crate) const BODY_BUDGET_BYTES: Metric = Metric {
    name: "cubegate_inflight_body_bytes",
    kind: Gauge,
    labels: &[],
    help: "Bytes of the in-flight body budget held now (each body counts twice \
           its declared length: raw bytes and parsed copy)",
    at_start: Each(UNLABELLED),
};
pub(crate) const BODY_BUDGET_REFUSALS: Metric = Metric {
    name: "cubegate_body_budget_refusals_total",
    kind: Counter,
    labels: &["scope"],
    help: "Requests refused with 503 before their body was read because the \
           in-flight body budget stayed full, by scope (global|caller)",
    at_start: Each(&[&[("scope", "global")], &[("scope", "caller")]]),
};

/// Every metric cubegate emits.
pub(crate) static CATALOGUE: &[Metric] = &[
    BODY_BUDGET_BYTES,
    BODY_BUDGET_REFUSALS,
    REQUESTS,
    REQUEST_DURATION,
    UPSTREAM_DURATION,
    IN_FLIGHT,
    RATE_LIMIT_WAITS,
    RATE_LIMIT_WAIT,
    RATE_LIMIT_REFUSALS,
    RATE_LIMIT_BACKEND_ERRORS,
    RATE_LIMIT_FALLBACKS,
    RATE_LIMIT_TRACKED_KEYS,
    VALIDATION_REFUSALS,
    FIELDS_STRIPPED,
    AUDIT_WRITE,
    AUDIT_BATCH_RECORDS,
    AUDIT_FAILURES,
    AUDIT_REWRITTEN_BYTES,
    SLOW_READERS_DROPPED,
    SLOW_CLIENTS_DROPPED,
    TLS_HANDSHAKE_FAILURES,
    UPSTREAM_429,
    KEY_PAUSES,
    BREAKER_TRANSITIONS,
    BREAKER_OPEN,
    CONFIG_RELOADS,
    READY,
    AUDIT_DISK_FREE,
    AUDIT_WATERMARK,
    OTEL_SPANS_EXPORTED,
    OTEL_METRIC_EXPORTS,
    OTEL_AUDIT_LOGS_EXPORTED,
];

/// Describe every metric to the recorder (once, when it is installed).
pub(super) fn describe() {
    for m in CATALOGUE {
        match m.kind {
            Counter => metrics::describe_counter!(m.name, m.help),
            Gauge => metrics::describe_gauge!(m.name, m.help),
            Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// Register the series each metric has from start ([`AtStart`]), at zero,
/// for the tenants configured now. Idempotent: an existing series keeps
/// its value. Counters and gauges also get a zero update, so the OTLP side
/// exports a point for them too.
pub fn register_at_start<'a>(tenants: impl IntoIterator<Item = &'a str> + Clone) {
    for m in CATALOGUE {
        match m.at_start {
            OnEvent => {}
            Each(sets) => sets.iter().for_each(|l| register(m, l, None)),
            PerTenant(sets) => {
                for t in tenants.clone() {
                    sets.iter().for_each(|l| register(m, l, Some(t)));
                }
            }
        }
    }
}

fn register(m: &Metric, labels: Labels, tenant: Option<&str>) {
    // In the catalogue's label order, the order the update functions below
    // use: a seeded series is the very series they update later.
    let set: Vec<metrics::Label> = m
        .labels
        .iter()
        .filter_map(|name| {
            let value = match labels.iter().find(|(k, _)| k == name) {
                Some((_, v)) => v.to_string(),
                None => tenant.filter(|_| *name == "tenant")?.to_string(),
            };
            Some(metrics::Label::new(*name, value))
        })
        .collect();
    match m.kind {
        Counter => counter!(m.name, set).increment(0),
        // An increment by zero, not a set: another gateway in the same
        // process may have requests in flight.
        Gauge => gauge!(m.name, set).increment(0.0),
        Histogram => {
            let _ = histogram!(m.name, set);
        }
    }
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Counts a request in flight for as long as it lives.
pub struct InFlight;
impl InFlight {
    pub fn start() -> InFlight {
        SERIES.with_borrow_mut(|c| c.globals().in_flight.increment(1.0));
        InFlight
    }
}
impl Drop for InFlight {
    fn drop(&mut self) {
        // `try_with`: a drop must not panic, even during thread teardown.
        let _ = SERIES.try_with(|c| c.borrow_mut().globals().in_flight.decrement(1.0));
    }
}

/// The metrics of one finished request (see `request_done`).
pub(super) fn request_finished(
    op: &'static str,
    status: StatusCode,
    tenant: &str,
    latency: Duration,
    stripped: usize,
) {
    SERIES.with_borrow_mut(|c| {
        let r = c.request(op, status_class(status), tenant);
        r.requests.increment(1);
        r.duration.record(latency.as_secs_f64());
        if stripped > 0 {
            c.stripped(op).increment(stripped as u64);
        }
    });
}

pub fn upstream_response(op: &'static str, status: StatusCode, took: Duration) {
    SERIES.with_borrow_mut(|c| {
        c.upstream(op, status_class(status))
            .record(took.as_secs_f64())
    });
}

/// The two series every finished request updates, for one label set.
struct RequestSeries {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// Handles of the series every request (or audit batch) updates, per
/// thread. `counter!` builds a key (allocating the tenant label), hashes it
/// and looks it up in the recorder's registry on every call, labels or not;
/// a handle is that series itself, so it is kept. Label sets are bounded
/// (operations, status classes, every tenant configured since start:
/// handles of a tenant removed by a reload stay until exit, a few hundred
/// bytes each). Emptied when the recorder changes
/// ([`otlp_metrics::generation`](super::otlp_metrics::generation)): handles
/// made before OTLP was bound would miss the OTLP side.
#[derive(Default)]
struct SeriesCache {
    generation: u8,
    requests: HashMap<(&'static str, &'static str), HashMap<Box<str>, RequestSeries>>,
    upstream: HashMap<(&'static str, &'static str), metrics::Histogram>,
    stripped: HashMap<&'static str, metrics::Counter>,
    /// Refusals by reason and tenant: a flood of refused requests is the
    /// path that must stay cheapest.
    refused: HashMap<&'static str, HashMap<Box<str>, metrics::Counter>>,
    globals: Option<GlobalSeries>,
}

/// A tenant's series in `map`, registered with `make` on first use. Looked
/// up by `&str` first, so a known tenant costs no allocation. Registering a
/// series never calls back into the cache, so the borrow is not re-entered.
fn tenant_series<'a, V>(
    map: &'a mut HashMap<Box<str>, V>,
    tenant: &str,
    make: impl FnOnce(&str) -> V,
) -> &'a V {
    if !map.contains_key(tenant) {
        let series = make(tenant);
        map.insert(tenant.into(), series);
    }
    // Inserted just above: indexing cannot fail.
    &map[tenant]
}

/// The unlabelled series, registered together on first use.
struct GlobalSeries {
    in_flight: metrics::Gauge,
    audit_write: metrics::Histogram,
    audit_batch: metrics::Histogram,
}

thread_local! {
    static SERIES: std::cell::RefCell<SeriesCache> = std::cell::RefCell::default();
}

impl SeriesCache {
    fn current(&mut self) -> &mut Self {
        let g = super::otlp_metrics::generation();
        if g != self.generation {
            *self = SeriesCache::default();
            self.generation = g;
        }
        self
    }

    fn request(&mut self, op: &'static str, class: &'static str, tenant: &str) -> &RequestSeries {
        let by_tenant = self.current().requests.entry((op, class)).or_default();
        tenant_series(by_tenant, tenant, |t| RequestSeries {
            requests: counter!(REQUESTS.name, "operation" => op, "status_class" => class, "tenant" => t.to_string()),
            duration: histogram!(REQUEST_DURATION.name, "operation" => op, "status_class" => class, "tenant" => t.to_string()),
        })
    }

    fn upstream(&mut self, op: &'static str, class: &'static str) -> &metrics::Histogram {
        self.current().upstream.entry((op, class)).or_insert_with(
            || histogram!(UPSTREAM_DURATION.name, "operation" => op, "status_class" => class),
        )
    }

    fn stripped(&mut self, op: &'static str) -> &metrics::Counter {
        self.current()
            .stripped
            .entry(op)
            .or_insert_with(|| counter!(FIELDS_STRIPPED.name, "operation" => op))
    }

    fn refused(&mut self, reason: &'static str, tenant: &str) -> &metrics::Counter {
        let by_tenant = self.current().refused.entry(reason).or_default();
        tenant_series(
            by_tenant,
            tenant,
            |t| counter!(RATE_LIMIT_REFUSALS.name, "tenant" => t.to_string(), "reason" => reason),
        )
    }

    fn globals(&mut self) -> &GlobalSeries {
        self.current().globals.get_or_insert_with(|| GlobalSeries {
            in_flight: gauge!(IN_FLIGHT.name),
            audit_write: histogram!(AUDIT_WRITE.name),
            audit_batch: histogram!(AUDIT_BATCH_RECORDS.name),
        })
    }
}

/// A request was admitted by the rate limiter after waiting `waited`
/// (nothing is counted for requests admitted at once).
pub fn rate_limit_waited(tenant: &str, waited: Duration) {
    if waited.is_zero() {
        return;
    }
    counter!(RATE_LIMIT_WAITS.name, "tenant" => tenant.to_string()).increment(1);
    histogram!(RATE_LIMIT_WAIT.name, "tenant" => tenant.to_string()).record(waited.as_secs_f64());
}

/// cubegate answered 429 itself; `reason` is a fixed label
/// (`RefusalReason::as_str`).
pub fn rate_limit_refused(tenant: &str, reason: &'static str) {
    SERIES.with_borrow_mut(|c| c.refused(reason, tenant).increment(1));
}

pub fn rate_limit_backend_error() {
    counter!(RATE_LIMIT_BACKEND_ERRORS.name).increment(1);
}

pub fn rate_limit_fallback() {
    counter!(RATE_LIMIT_FALLBACKS.name).increment(1);
}

pub fn rate_limit_tracked_keys(n: usize) {
    gauge!(RATE_LIMIT_TRACKED_KEYS.name).set(n as f64);
}

pub fn upstream_429(tenant: &str) {
    counter!(UPSTREAM_429.name, "tenant" => tenant.to_string()).increment(1);
}

/// An upstream key paused after a ComplyCube 429 (not while limiting is off).
pub fn key_paused(tenant: &str) {
    counter!(KEY_PAUSES.name, "tenant" => tenant.to_string()).increment(1);
}

pub fn validation_refused(op: &'static str, shadow: bool) {
    let mode = if shadow { "shadow" } else { "enforce" };
    counter!(VALIDATION_REFUSALS.name, "operation" => op, "mode" => mode).increment(1);
}

pub fn audit_write(took: Duration, ok: bool) {
    SERIES.with_borrow_mut(|c| c.globals().audit_write.record(took.as_secs_f64()));
    if !ok {
        counter!(AUDIT_FAILURES.name).increment(1);
    }
}

/// Audit log bytes written a second time (see `AuditStats::rewritten_bytes`).
pub fn audit_rewritten(bytes: u64) {
    counter!(AUDIT_REWRITTEN_BYTES.name).increment(bytes);
}

/// One audit batch written (and fsynced when configured), on the writer thread.
pub fn audit_batch(records: usize) {
    SERIES.with_borrow_mut(|c| c.globals().audit_batch.record(records as f64));
}

/// A connection dropped for a stalled response (`listener.write_stall_timeout_ms`).
pub fn slow_reader_dropped() {
    counter!(SLOW_READERS_DROPPED.name).increment(1);
}

/// A connection dropped before its first request head arrived
/// (`listener.header_read_timeout_ms`, TLS handshake included).
pub fn slow_client_dropped() {
    counter!(SLOW_CLIENTS_DROPPED.name).increment(1);
}

/// A TLS handshake the listener refused.
pub fn tls_handshake_failed() {
    counter!(TLS_HANDSHAKE_FAILURES.name).increment(1);
}

/// The upstream circuit breaker moved to `to` (`open`, `half_open`, `closed`).
pub fn breaker_transition(to: &'static str) {
    counter!(BREAKER_TRANSITIONS.name, "to" => to).increment(1);
    gauge!(BREAKER_OPEN.name).set(if to == "closed" { 0.0 } else { 1.0 });
}

/// The in-flight body budget now holds `bytes`.
pub fn body_budget_held(bytes: usize) {
    gauge!(BODY_BUDGET_BYTES.name).set(bytes as f64);
}

/// A request refused because the body budget stayed full (`global` or `caller`).
pub fn body_budget_refused(scope: &'static str) {
    counter!(BODY_BUDGET_REFUSALS.name, "scope" => scope).increment(1);
}

pub fn ready(ready: bool) {
    gauge!(READY.name).set(if ready { 1.0 } else { 0.0 });
}

/// The audit file system's free bytes (when known) and whether the
/// watermark is tripped.
pub fn audit_disk(free: Option<u64>, tripped: bool) {
    if let Some(f) = free {
        gauge!(AUDIT_DISK_FREE.name).set(f as f64);
    }
    gauge!(AUDIT_WATERMARK.name).set(if tripped { 1.0 } else { 0.0 });
}

pub fn config_reload(ok: bool) {
    counter!(CONFIG_RELOADS.name, "result" => if ok { "ok" } else { "refused" }).increment(1);
}

fn result(ok: bool) -> &'static str {
    if ok { "ok" } else { "error" }
}

/// `n` spans handed to the collector (or not: `ok` false).
pub(super) fn otel_spans_exported(ok: bool, n: u64) {
    counter!(OTEL_SPANS_EXPORTED.name, "result" => result(ok)).increment(n);
}

/// `n` audit records handed to the collector as log records.
pub(super) fn otel_audit_logs_exported(ok: bool, n: u64) {
    counter!(OTEL_AUDIT_LOGS_EXPORTED.name, "result" => result(ok)).increment(n);
}

/// One metric export to the collector.
pub(super) fn otel_metric_export(ok: bool) {
    counter!(OTEL_METRIC_EXPORTS.name, "result" => result(ok)).increment(1);
}
