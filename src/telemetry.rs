//! Telemetry: request ids, W3C trace context, Prometheus metrics (through the
//! `metrics` facade; rendered on the admin listener), and the tracing
//! subscriber with one access line per request. Labels are bounded: operation
//! ids, tenant and caller ids from config, status classes — never raw paths,
//! query strings, header values or body values.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::{LogFormat, TelemetrySettings};

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the process-wide metrics recorder once; later calls (several
/// gateways in one test process) share it.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            const LATENCY: &[f64] = &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "cubegate_requests_total",
        "Requests handled, by operation, status class and tenant"
    );
    describe_histogram!(
        "cubegate_request_duration_seconds",
        "Time from request head to response head"
    );
    describe_histogram!(
        "cubegate_upstream_duration_seconds",
        "Time ComplyCube took to answer (response head)"
    );
    describe_gauge!("cubegate_in_flight_requests", "Requests being handled now");
    describe_counter!(
        "cubegate_rate_limit_waits_total",
        "Requests delayed (shaped) by the rate limiter"
    );
    describe_histogram!(
        "cubegate_rate_limit_wait_seconds",
        "Time a shaped request waited for its rate-limit slot"
    );
    describe_counter!(
        "cubegate_rate_limit_refusals_total",
        "Requests refused with 429 by cubegate, by tenant and reason \
         (budget|caller_quota|paused|queue_full|backend_unavailable)"
    );
    describe_counter!(
        "cubegate_rate_limit_backend_errors_total",
        "Redis rate-limit calls that failed or timed out"
    );
    describe_counter!(
        "cubegate_rate_limit_fallbacks_total",
        "Rate-limit decisions taken in-process because Redis was unavailable (fail = local)"
    );
    describe_gauge!(
        "cubegate_rate_limit_tracked_keys",
        "Budget, quota and pause entries held in memory after the last idle sweep"
    );
    describe_counter!(
        "cubegate_validation_refusals_total",
        "Schema violations, by operation and mode (enforce|shadow)"
    );
    describe_counter!(
        "cubegate_fields_stripped_total",
        "Body fields removed by policy"
    );
    describe_histogram!(
        "cubegate_audit_write_seconds",
        "Time to make an audit record durable"
    );
    describe_counter!(
        "cubegate_audit_failures_total",
        "Audit records that could not be written"
    );
    describe_counter!("cubegate_upstream_429_total", "429 answers from ComplyCube");
    describe_counter!(
        "cubegate_key_pauses_total",
        "Upstream keys paused after a ComplyCube 429"
    );
    describe_counter!("cubegate_config_reloads_total", "Config reloads, by result");
}

/// Initialise logging for the binary. `RUST_LOG` wins over the config level.
pub fn init_logging(settings: &TelemetrySettings, format_override: Option<LogFormat>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let r = match format_override.unwrap_or(settings.log_format) {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = r;
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);
static REQUEST_PREFIX: OnceLock<String> = OnceLock::new();

/// The caller's `X-Request-Id` when it is a sane token, else a fresh one
/// (a random per-process prefix and a counter: unique, cheap, no syscall).
pub fn request_id(h: &HeaderMap) -> String {
    if let Some(v) = h.get("x-request-id").and_then(|v| v.to_str().ok())
        && !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return v.to_string();
    }
    let prefix = REQUEST_PREFIX.get_or_init(|| {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 6];
        let _ = ring::rand::SystemRandom::new().fill(&mut b);
        crate::secret::hex(&b)
    });
    let n = REQUEST_SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{n:010x}")
}

/// Parse a W3C `traceparent`: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`,
/// ids not all zero. A malformed one is ignored (a new trace starts).
fn parse_traceparent(v: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = v.trim().split('-').collect();
    if parts.len() < 4 {
        return None;
    }
    let hex_ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let (ver, trace, span, flags) = (parts[0], parts[1], parts[2], parts[3]);
    if !hex_ok(ver, 2) || ver == "ff" || (ver == "00" && parts.len() != 4) {
        return None;
    }
    if !hex_ok(trace, 32) || !hex_ok(span, 16) || !hex_ok(flags, 2) {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') || span.bytes().all(|b| b == b'0') {
        return None;
    }
    Some((trace, span))
}

pub fn incoming_trace_id(h: &HeaderMap) -> Option<String> {
    let v = h.get("traceparent")?.to_str().ok()?;
    parse_traceparent(v).map(|(t, _)| t.to_string())
}

/// Trace context to pass upstream: a valid incoming `traceparent` (and its
/// `tracestate`) continues; anything malformed is dropped.
pub fn trace_headers(h: &HeaderMap) -> (Option<HeaderValue>, Option<HeaderValue>) {
    let Some(tp) = h.get("traceparent") else {
        return (None, None);
    };
    let valid = tp.to_str().ok().and_then(parse_traceparent).is_some();
    if !valid {
        return (None, None);
    }
    let ts = h.get("tracestate").filter(|v| v.len() <= 512).cloned();
    (Some(tp.clone()), ts)
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
        gauge!("cubegate_in_flight_requests").increment(1.0);
        InFlight
    }
}
impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!("cubegate_in_flight_requests").decrement(1.0);
    }
}

pub struct RequestSummary<'a> {
    pub request_id: &'a str,
    pub operation: Option<&'static str>,
    pub tenant: Option<&'a str>,
    pub caller: Option<&'a str>,
    pub environment: Option<&'static str>,
    pub status: StatusCode,
    pub error_type: Option<&'static str>,
    pub latency: Duration,
    pub upstream_latency: Option<Duration>,
    pub stripped: usize,
    pub rate_limit_wait: Option<Duration>,
}

pub fn request_done(s: RequestSummary<'_>) {
    let op = s.operation.unwrap_or("none");
    let tenant = s.tenant.unwrap_or("none").to_string();
    let class = status_class(s.status);
    counter!("cubegate_requests_total", "operation" => op, "status_class" => class, "tenant" => tenant.clone()).increment(1);
    histogram!("cubegate_request_duration_seconds", "operation" => op, "status_class" => class, "tenant" => tenant.clone())
        .record(s.latency.as_secs_f64());
    if s.stripped > 0 {
        counter!("cubegate_fields_stripped_total", "operation" => op).increment(s.stripped as u64);
    }
    tracing::info!(
        target: "cubegate::access",
        request_id = s.request_id,
        operation = op,
        tenant = s.tenant.unwrap_or("-"),
        caller = s.caller.unwrap_or("-"),
        environment = s.environment.unwrap_or("-"),
        status = s.status.as_u16(),
        error = s.error_type.unwrap_or("-"),
        latency_ms = s.latency.as_secs_f64() * 1000.0,
        upstream_ms = s.upstream_latency.map(|d| d.as_secs_f64() * 1000.0),
        rate_limit_wait_ms = s.rate_limit_wait.map(|d| d.as_secs_f64() * 1000.0),
        "request"
    );
}

pub fn upstream_response(op: &'static str, status: StatusCode, took: Duration) {
    histogram!("cubegate_upstream_duration_seconds", "operation" => op, "status_class" => status_class(status))
        .record(took.as_secs_f64());
}

/// A request was admitted by the rate limiter after waiting `waited`
/// (nothing is counted for requests admitted at once).
pub fn rate_limit_waited(tenant: &str, waited: Duration) {
    if waited.is_zero() {
        return;
    }
    counter!("cubegate_rate_limit_waits_total", "tenant" => tenant.to_string()).increment(1);
    histogram!("cubegate_rate_limit_wait_seconds", "tenant" => tenant.to_string())
        .record(waited.as_secs_f64());
}

/// cubegate answered 429 itself; `reason` is a fixed label
/// (`RefusalReason::as_str`).
pub fn rate_limit_refused(tenant: &str, reason: &'static str) {
    counter!("cubegate_rate_limit_refusals_total", "tenant" => tenant.to_string(), "reason" => reason)
        .increment(1);
}

pub fn rate_limit_backend_error() {
    counter!("cubegate_rate_limit_backend_errors_total").increment(1);
}

pub fn rate_limit_fallback() {
    counter!("cubegate_rate_limit_fallbacks_total").increment(1);
}

pub fn rate_limit_tracked_keys(n: usize) {
    gauge!("cubegate_rate_limit_tracked_keys").set(n as f64);
}

pub fn upstream_429(tenant: &str) {
    counter!("cubegate_upstream_429_total", "tenant" => tenant.to_string()).increment(1);
    counter!("cubegate_key_pauses_total", "tenant" => tenant.to_string()).increment(1);
}

pub fn validation_refused(op: &'static str, shadow: bool) {
    counter!("cubegate_validation_refusals_total", "operation" => op, "mode" => if shadow { "shadow" } else { "enforce" })
        .increment(1);
}

pub fn audit_write(took: Duration, ok: bool) {
    histogram!("cubegate_audit_write_seconds").record(took.as_secs_f64());
    if !ok {
        counter!("cubegate_audit_failures_total").increment(1);
    }
}

pub fn config_reload(ok: bool) {
    counter!("cubegate_config_reloads_total", "result" => if ok { "ok" } else { "refused" })
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing() {
        assert!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some()
        );
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn request_ids_accept_sane_caller_ids_only() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("a b<script>"));
        let generated = request_id(&h);
        assert_ne!(generated, "a b<script>");
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }
}
