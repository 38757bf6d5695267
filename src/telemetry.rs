//! Telemetry: request ids, W3C trace context, OpenTelemetry traces (OTLP/HTTP
//! export, off unless configured), Prometheus metrics (through the `metrics`
//! facade; rendered on the admin listener, and pushed over OTLP alongside
//! traces: see `otlp_metrics`), and the tracing subscriber with
//! one access line per request. Labels and span attributes are bounded:
//! operation ids and route templates, tenant and caller ids from config,
//! status classes — never raw paths, query strings, header values or body
//! values. Exporting never blocks a request: spans go to a bounded queue
//! drained by the SDK's own thread; a full queue drops spans.
//!
//! With export on, every audit record made durable is also shipped as an
//! OpenTelemetry log record (`/v1/logs`, event `cubegate.audit`): the body is
//! the record's exact JSON line (so a central store can re-check the hash
//! chain), attributes are its seq, instance, kind and operation, and the
//! trace context is the request's. Same bounded-queue rule: a slow collector
//! drops log records, never delays a request or the audit writer; the audit
//! file stays the source of truth.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogger, SdkLoggerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::audit::{RecordRef, RecordSink};
use crate::config::{LogFormat, TelemetrySettings};

mod otlp_metrics;
pub use otlp_metrics::metrics_endpoint;

mod json_line;
use json_line::JsonLine;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Histogram bucket bounds (seconds), on `/metrics` and over OTLP alike.
const LATENCY: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The one count histogram (records per audit batch); the others are seconds.
const AUDIT_BATCH_RECORDS: &str = "cubegate_audit_batch_records";

/// Bucket bounds for [`AUDIT_BATCH_RECORDS`] (a count, not seconds).
const BATCH_RECORDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
];

/// The bucket bounds of one histogram, the same on `/metrics` and OTLP.
pub(crate) fn buckets_for(name: &str) -> &'static [f64] {
    match name {
        AUDIT_BATCH_RECORDS => BATCH_RECORDS,
        _ => LATENCY,
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
                    metrics_exporter_prometheus::Matcher::Full(AUDIT_BATCH_RECORDS.into()),
                    buckets_for(AUDIT_BATCH_RECORDS),
                )
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            // Fans out to OTLP too once `init` binds a meter provider.
            otlp_metrics::install(recorder).ok()?;
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
    describe_histogram!(
        AUDIT_BATCH_RECORDS,
        "Records per audit write (and fsync): the group-commit factor"
    );
    describe_counter!(
        "cubegate_audit_failures_total",
        "Audit records that could not be written"
    );
    describe_counter!(
        "cubegate_audit_rewritten_bytes_total",
        "Audit log bytes written again after a failed fsync, or at start-up without fsync"
    );
    describe_counter!(
        "cubegate_slow_readers_dropped_total",
        "Connections dropped for taking no response bytes within listener.write_stall_timeout_ms"
    );
    describe_counter!("cubegate_upstream_429_total", "429 answers from ComplyCube");
    describe_counter!(
        "cubegate_key_pauses_total",
        "Upstream keys paused after a ComplyCube 429"
    );
    describe_counter!("cubegate_config_reloads_total", "Config reloads, by result");
    describe_gauge!(
        "cubegate_ready",
        "1 when /readyz would answer 200 (sampled at each scrape)"
    );
    describe_counter!(
        "cubegate_otel_spans_exported_total",
        "Spans handed to the OTLP collector, by result (ok|error)"
    );
    describe_counter!(
        "cubegate_otel_metric_exports_total",
        "Metric exports to the OTLP collector, by result (ok|error)"
    );
    describe_counter!(
        "cubegate_otel_audit_logs_exported_total",
        "Audit records handed to the OTLP collector as log records, by result (ok|error)"
    );
}

/// Keeps the trace pipeline alive; [`TelemetryGuard::shutdown`] flushes
/// buffered spans (call it on exit, or they are lost).
#[must_use]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    meters: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
    logs: Option<SdkLoggerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported (OTLP configured and not disabled).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Whether audit records are shipped as OTel log records.
    pub fn exporting_audit_logs(&self) -> bool {
        self.logs.is_some()
    }

    /// Flush and stop the exporters (bounded by the SDK's export timeout).
    /// Call after the gateway shut down, so the last audit records and the
    /// final metric values are in.
    pub fn shutdown(self) {
        // Final metric export: the values since the last periodic one.
        if let Some(m) = self.meters
            && let Err(e) = m.shutdown()
        {
            tracing::warn!(error = %e, "metric exporter shutdown");
        }
        if let Some(p) = self.logs
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "audit log exporter shutdown");
        }
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "trace exporter shutdown");
        }
    }
}

/// Where spans go, resolved from the `OTEL_*` variables (which win, as in
/// every OpenTelemetry SDK) and the `[telemetry]` config section.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportPlan {
    /// Explicit endpoint from config (`…/v1/traces`); None = the SDK reads
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    pub service_name: String,
    /// Parent-based ratio sampler from config; None = the SDK reads
    /// `OTEL_TRACES_SAMPLER`/`_ARG` (default: parent-based always-on).
    pub sample_ratio: Option<f64>,
    /// Ship audit records as log records: the LOGS signal is on by the same
    /// rule as the others ([`otlp_signal_on`]); it rides on the trace export.
    pub audit_logs: bool,
    /// Explicit logs endpoint from config (`…/v1/logs`); None = the SDK
    /// reads `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub logs_endpoint: Option<String>,
}

/// Whether OTLP export of `signal` (`TRACES`, `METRICS`, `LOGS`) is on:
/// `[telemetry] enabled`, else any endpoint in config or in
/// `OTEL_EXPORTER_OTLP_[<SIGNAL>_]ENDPOINT`; `OTEL_SDK_DISABLED=true` and
/// `OTEL_<SIGNAL>_EXPORTER=none` switch it off. One rule for every signal.
pub(crate) fn otlp_signal_on(
    settings: &TelemetrySettings,
    env: &dyn Fn(&str) -> Option<String>,
    signal: &str,
) -> bool {
    let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let is = |k: &str, want: &str| set(k).is_some_and(|v| v.trim().eq_ignore_ascii_case(want));
    if is("OTEL_SDK_DISABLED", "true") || is(&format!("OTEL_{signal}_EXPORTER"), "none") {
        return false;
    }
    settings
        .enabled
        .unwrap_or(signal_env_endpoint(env, signal) || settings.otlp_endpoint.is_some())
}

fn signal_env_endpoint(env: &dyn Fn(&str) -> Option<String>, signal: &str) -> bool {
    let set = |k: &str| env(k).filter(|v| !v.trim().is_empty()).is_some();
    set(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")) || set("OTEL_EXPORTER_OTLP_ENDPOINT")
}

/// Where `signal` goes: None when an `OTEL_EXPORTER_OTLP_*ENDPOINT` variable
/// is set (the SDK reads it, and appends the path itself), else the config's
/// collector with `/v1/<path>` (a configured `…/v1/traces` names the base).
pub(crate) fn otlp_signal_endpoint(
    settings: &TelemetrySettings,
    env: &dyn Fn(&str) -> Option<String>,
    signal: &str,
    path: &str,
) -> Option<String> {
    if signal_env_endpoint(env, signal) {
        return None;
    }
    settings.otlp_endpoint.as_ref().map(|e| {
        let e = e.trim_end_matches('/');
        let base = e.strip_suffix("/v1/traces").unwrap_or(e);
        format!("{base}/v1/{path}")
    })
}

/// Decide whether and where to export. `env` is the process environment
/// (injected for tests).
pub fn export_plan(
    settings: &TelemetrySettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<ExportPlan> {
    if !otlp_signal_on(settings, env, "TRACES") {
        return None;
    }
    let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let endpoint = otlp_signal_endpoint(settings, env, "TRACES", "traces");
    let service_name = set("OTEL_SERVICE_NAME")
        .or_else(|| settings.service_name.clone())
        .unwrap_or_else(|| "cubegate".to_string());
    let sample_ratio = if set("OTEL_TRACES_SAMPLER").is_some() {
        None
    } else {
        settings.sample_ratio.map(|r| r.clamp(0.0, 1.0))
    };
    // The same rule as every other signal: a traces-only endpoint must not
    // send audit records to the SDK's default collector on localhost.
    let audit_logs = otlp_signal_on(settings, env, "LOGS");
    let logs_endpoint = otlp_signal_endpoint(settings, env, "LOGS", "logs");
    Some(ExportPlan {
        endpoint,
        service_name,
        sample_ratio,
        audit_logs,
        logs_endpoint,
    })
}

fn tracer_provider(plan: &ExportPlan) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler};
    let mut b = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    if let Some(e) = &plan.endpoint {
        b = b.with_endpoint(e.clone());
    }
    let exporter = b.build().map_err(|e| e.to_string())?;
    // Bounded queue (OTEL_BSP_MAX_QUEUE_SIZE, default 2048) on the SDK's own
    // thread: a slow or dead collector costs dropped spans, never latency.
    let processor = BatchSpanProcessor::builder(CountingExporter(exporter))
        .with_batch_config(BatchConfigBuilder::default().build())
        .build();
    let mut pb = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource(plan));
    if let Some(r) = plan.sample_ratio {
        pb = pb.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            r,
        ))));
    }
    Ok(pb.build())
}

/// Counts what reached (or failed to reach) the collector, so a broken
/// export pipeline shows on `/metrics`. (The SDK keeps its queue-full drop
/// count private; spans created but never counted here were dropped.)
#[derive(Debug)]
struct CountingExporter<E>(E);

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let r = self.0.export(batch).await;
        let result = if r.is_ok() { "ok" } else { "error" };
        counter!("cubegate_otel_spans_exported_total", "result" => result).increment(n);
        r
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource)
    }
}

fn resource(plan: &ExportPlan) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder()
        .with_service_name(plan.service_name.clone())
        .build()
}

fn logger_provider(plan: &ExportPlan) -> Result<SdkLoggerProvider, String> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::logs::{BatchConfigBuilder, BatchLogProcessor};
    let mut b = opentelemetry_otlp::LogExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    if let Some(e) = &plan.logs_endpoint {
        b = b.with_endpoint(e.clone());
    }
    let exporter = b.build().map_err(|e| e.to_string())?;
    // Bounded queue (OTEL_BLRP_MAX_QUEUE_SIZE, default 2048) on the SDK's
    // own thread: the audit writer only enqueues.
    let processor = BatchLogProcessor::builder(CountingLogExporter(exporter))
        .with_batch_config(BatchConfigBuilder::default().build())
        .build();
    Ok(SdkLoggerProvider::builder()
        .with_log_processor(processor)
        .with_resource(resource(plan))
        .build())
}

#[derive(Debug)]
struct CountingLogExporter<E>(E);

impl<E: LogExporter> LogExporter for CountingLogExporter<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let n = batch.iter().count() as u64;
        let r = self.0.export(batch).await;
        let result = if r.is_ok() { "ok" } else { "error" };
        counter!("cubegate_otel_audit_logs_exported_total", "result" => result).increment(n);
        r
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource)
    }
}

/// Ships durable audit records as OTel log records (see the module doc).
struct AuditLogSink {
    logger: SdkLogger,
}

impl RecordSink for AuditLogSink {
    /// Runs in the appending task, inside the request's span: the record
    /// joins the request's trace. A record whose caller went away is shipped
    /// by whoever completes its batch, inside the span that was current where
    /// the append was dropped (usually its request's; if none, the log record
    /// has no trace context, and the line itself still holds `trace_id`).
    fn durable(&self, line: &[u8], record: &RecordRef<'_>) {
        use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
        let cx = tracing::Span::current().context();
        let sc = cx.span().span_context().clone();
        let mut r = self.logger.create_log_record();
        r.set_event_name("cubegate.audit");
        if let Ok(t) = humantime::parse_rfc3339(record.time) {
            r.set_timestamp(t);
        }
        r.set_severity_number(Severity::Info);
        r.set_severity_text("INFO");
        // serde_json writes UTF-8, so this is the exact line; bytes otherwise.
        r.set_body(match std::str::from_utf8(line) {
            Ok(s) => AnyValue::String(s.to_owned().into()),
            Err(_) => AnyValue::Bytes(Box::new(line.to_vec())),
        });
        r.add_attribute("cubegate.audit.seq", record.seq as i64);
        r.add_attribute(
            "cubegate.audit.instance",
            record.instance.as_str().to_owned(),
        );
        r.add_attribute("cubegate.audit.kind", record.event.kind.as_str());
        if let Some(op) = &record.event.operation {
            r.add_attribute("cubegate.operation", op.as_str().to_owned());
        }
        if sc.is_valid() {
            r.set_trace_context(sc.trace_id(), sc.span_id(), Some(sc.trace_flags()));
        }
        self.logger.emit(r);
    }
}

static AUDIT_SINK: OnceLock<std::sync::Arc<dyn RecordSink>> = OnceLock::new();

/// The audit-record sink [`init`] built when log export is on; the gateway
/// attaches it to its audit log.
pub fn audit_sink() -> Option<std::sync::Arc<dyn RecordSink>> {
    AUDIT_SINK.get().cloned()
}

/// The JSON log layer: one [`JsonLine`] per event passing `filter`, written
/// to `writer`. It is kept out of spans altogether (JSON lines never show
/// span context): otherwise it re-formats a span's fields on every
/// `span.record`, which was 11% of the gateway's CPU at saturation.
pub fn json_log_layer<S, W, F>(
    writer: W,
    filter: F,
) -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
    F: tracing_subscriber::layer::Filter<S> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::{FilterExt, filter_fn};
    tracing_subscriber::fmt::layer()
        .event_format(JsonLine)
        .with_writer(writer)
        .with_filter(filter.and(filter_fn(|m| m.is_event())))
}

/// Initialise logging (and trace export when configured) for the binary.
/// `RUST_LOG` wins over the config level for logs; spans from cubegate are
/// exported at `info` whatever the log level.
pub fn init(settings: &TelemetrySettings, format_override: Option<LogFormat>) -> TelemetryGuard {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = match format_override.unwrap_or(settings.log_format) {
        LogFormat::Json => json_log_layer(std::io::stdout, filter).boxed(),
        // Text logs (for people at a terminal) keep span context.
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stdout)
            .with_filter(filter)
            .boxed(),
    };
    let env = |k: &str| std::env::var(k).ok();
    let mut export_error = None;
    let plan = export_plan(settings, &env);
    let provider = plan.as_ref().and_then(|plan| match tracer_provider(plan) {
        Ok(p) => Some(p),
        Err(e) => {
            export_error = Some(e);
            None
        }
    });
    let mut logs_error = None;
    let logs =
        plan.as_ref()
            .filter(|p| p.audit_logs)
            .and_then(|plan| match logger_provider(plan) {
                Ok(p) => Some(p),
                Err(e) => {
                    logs_error = Some(e);
                    None
                }
            });
    if let Some(p) = &logs {
        use opentelemetry::logs::LoggerProvider as _;
        let sink = AuditLogSink {
            logger: p.logger("cubegate.audit"),
        };
        let _ = AUDIT_SINK.set(std::sync::Arc::new(sink));
    }
    let otel_layer = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("cubegate"))
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(Targets::new().with_target("cubegate", LevelFilter::INFO))
    });
    // A second init (tests) keeps the first subscriber. No `Option` layer:
    // a `None` one still makes the registry build every span (it answers
    // "interested" for it), which costs span bookkeeping on every request
    // when nothing exports them.
    let _ = match otel_layer {
        Some(otel) => tracing_subscriber::registry()
            .with(fmt_layer)
            .with(otel)
            .try_init(),
        None => tracing_subscriber::registry().with(fmt_layer).try_init(),
    };
    if let Some(e) = export_error {
        tracing::error!(error = %e, "trace export not started; serving without it");
    }
    if let Some(e) = logs_error {
        tracing::error!(error = %e, "audit log export not started; serving without it");
    }
    let meters = init_metrics(settings, &env);
    TelemetryGuard {
        provider,
        meters,
        logs,
    }
}

/// OTLP metric export, on the same switch as traces (see
/// [`metrics_endpoint`]); a failure is logged and `/metrics` keeps working.
fn init_metrics(
    settings: &TelemetrySettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<opentelemetry_sdk::metrics::SdkMeterProvider> {
    let endpoint = metrics_endpoint(settings, env)?;
    let _ = metrics_handle();
    let service_name = env("OTEL_SERVICE_NAME")
        .filter(|v| !v.trim().is_empty())
        .or_else(|| settings.service_name.clone())
        .unwrap_or_else(|| "cubegate".to_string());
    match otlp_metrics::meter_provider(endpoint, service_name) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::error!(error = %e, "metric export not started; serving without it");
            None
        }
    }
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);
static REQUEST_PREFIX: OnceLock<String> = OnceLock::new();

/// The caller's `X-Request-Id` when it is a sane token, else a fresh one
/// (a random per-process prefix and a counter: unique, cheap, no syscall).
pub fn request_id(h: &HeaderMap) -> String {
    caller_request_id(h).unwrap_or_else(new_request_id)
}

/// The caller's `X-Request-Id` when it is a sane id (1-64 chars of
/// `[A-Za-z0-9_-]`); anything else is ignored.
pub fn caller_request_id(h: &HeaderMap) -> Option<String> {
    let v = h.get("x-request-id").and_then(|v| v.to_str().ok())?;
    (!v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then(|| v.to_string())
}

/// A new gateway request id: a per-process random prefix and a counter,
/// so no two requests of one instance share it.
pub fn new_request_id() -> String {
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

struct HeaderExtractor<'a>(&'a HeaderMap);
impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[derive(Default)]
struct TraceOut {
    traceparent: Option<HeaderValue>,
    tracestate: Option<HeaderValue>,
}
impl Injector for TraceOut {
    fn set(&mut self, key: &str, value: String) {
        let v = HeaderValue::from_str(&value).ok();
        match key {
            "traceparent" => self.traceparent = v,
            "tracestate" => self.tracestate = v.filter(|v| !v.is_empty() && v.len() <= 512),
            _ => {}
        }
    }
}

/// The method as an attribute value: the standard ones, else `_OTHER`
/// (semconv; an extension method is caller-chosen text).
fn method_attr(m: &http::Method) -> &'static str {
    use http::Method as M;
    match *m {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::PATCH => "PATCH",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// The server span for one request, parented by a valid incoming
/// `traceparent` (a malformed one starts a new trace). Attributes that are
/// only known later are declared empty and filled by [`request_done`].
pub fn request_span(
    h: &HeaderMap,
    method: &http::Method,
    listen_host: &str,
    listen_port: Option<u16>,
) -> tracing::Span {
    let m = method_attr(method);
    let span = tracing::info_span!(
        target: "cubegate::request",
        "request",
        otel.name = m,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = m,
        http.route = Empty,
        http.response.status_code = Empty,
        server.address = listen_host,
        server.port = listen_port,
        error.type = Empty,
        cubegate.operation = Empty,
        cubegate.tenant = Empty,
        cubegate.caller = Empty,
        cubegate.environment = Empty,
    );
    if !span.is_disabled() {
        let valid = h
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent)
            .is_some();
        if valid {
            let _ = span.set_parent(TraceContextPropagator::new().extract(&HeaderExtractor(h)));
        }
    }
    span
}

/// `server.address` and `server.port` of the request span, from the listen
/// address (an unparsable one is reported as it is, without a port).
pub(crate) fn listen_parts(listen: &str) -> (String, Option<u16>) {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(a) => (a.ip().to_string(), Some(a.port())),
        Err(_) => (listen.to_string(), None),
    }
}

/// The client span around the upstream call.
pub fn upstream_span(
    method: &http::Method,
    operation: &'static str,
    authority: &str,
) -> tracing::Span {
    let m = method_attr(method);
    tracing::info_span!(
        target: "cubegate::upstream",
        "upstream",
        otel.name = format!("{m} upstream {operation}"),
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = m,
        server.address = authority,
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

/// Record the upstream answer (or failure) on the client span.
pub fn upstream_done(
    span: &tracing::Span,
    status: Option<StatusCode>,
    error: Option<&'static str>,
) {
    if let Some(s) = status {
        span.record("http.response.status_code", s.as_u16());
        if s.is_server_error() {
            span.record("error.type", s.as_str());
            span.record("otel.status_code", "error");
        }
    }
    if let Some(e) = error {
        span.record("error.type", e);
        span.record("otel.status_code", "error");
    }
}

/// The trace id of `span` when traces are on (it continues a valid incoming
/// `traceparent`), else the incoming one, else None.
pub fn trace_id(span: &tracing::Span, h: &HeaderMap) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        return Some(sc.trace_id().to_string());
    }
    let v = h.get("traceparent")?.to_str().ok()?;
    parse_traceparent(v).map(|(t, _)| t.to_string())
}

/// Trace context to send upstream. With traces on: the current trace, its
/// parent being `span` (the upstream call). Otherwise a valid incoming
/// `traceparent` (and its `tracestate`) is passed on; anything malformed is
/// dropped.
pub fn upstream_trace_headers(
    span: &tracing::Span,
    h: &HeaderMap,
) -> (Option<HeaderValue>, Option<HeaderValue>) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        let mut out = TraceOut::default();
        TraceContextPropagator::new().inject_context(&cx, &mut out);
        return (out.traceparent, out.tracestate);
    }
    trace_headers(h)
}

/// Pass-through of the caller's trace context (traces off).
fn trace_headers(h: &HeaderMap) -> (Option<HeaderValue>, Option<HeaderValue>) {
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

pub struct RequestSummary<'a> {
    /// The server span from [`request_span`]; attributes land on it.
    pub span: &'a tracing::Span,
    pub method: &'a http::Method,
    /// The route template (`/v1/clients/{id}`), when routed.
    pub route: Option<&'static str>,
    pub trace_id: Option<&'a str>,
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
    let class = status_class(s.status);
    SERIES.with_borrow_mut(|c| {
        let r = c.request(op, class, s.tenant.unwrap_or("none"));
        r.requests.increment(1);
        r.duration.record(s.latency.as_secs_f64());
        if s.stripped > 0 {
            c.stripped(op).increment(s.stripped as u64);
        }
    });
    record_span(&s);
    tracing::info!(
        target: "cubegate::access",
        request_id = s.request_id,
        trace_id = s.trace_id.unwrap_or("-"),
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

fn record_span(s: &RequestSummary<'_>) {
    let span = s.span;
    if span.is_disabled() {
        return;
    }
    span.record("http.response.status_code", s.status.as_u16());
    if let Some(r) = &s.route {
        span.record("http.route", *r);
    }
    if let Some(op) = s.operation {
        span.record("cubegate.operation", op);
        // The name is fixed once the span is built; rename it on the OTel side.
        span.context()
            .span()
            .update_name(format!("{} {op}", method_attr(s.method)));
    }
    if let Some(t) = s.tenant {
        span.record("cubegate.tenant", t);
    }
    if let Some(c) = s.caller {
        span.record("cubegate.caller", c);
    }
    if let Some(e) = s.environment {
        span.record("cubegate.environment", e);
    }
    match s.error_type {
        Some(e) => {
            span.record("error.type", e);
        }
        None if s.status.is_server_error() => {
            span.record("error.type", s.status.as_str());
        }
        None => {}
    }
    if s.status.is_server_error() {
        span.record("otel.status_code", "error");
    }
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
/// a handle is that series itself, so it is kept. Label sets are bounded (operations, status
/// classes, every tenant configured since start: handles of a tenant removed
/// by a reload stay until exit, a few hundred bytes each). Emptied when the
/// recorder changes
/// ([`otlp_metrics::generation`]): handles made before OTLP was bound
/// would miss the OTLP side.
#[derive(Default)]
struct SeriesCache {
    generation: u8,
    requests: std::collections::HashMap<
        (&'static str, &'static str),
        std::collections::HashMap<Box<str>, RequestSeries>,
    >,
    upstream: std::collections::HashMap<(&'static str, &'static str), metrics::Histogram>,
    stripped: std::collections::HashMap<&'static str, metrics::Counter>,
    /// Refusals by reason and tenant: a flood of refused requests is the
    /// path that must stay cheapest.
    refused: std::collections::HashMap<
        &'static str,
        std::collections::HashMap<Box<str>, metrics::Counter>,
    >,
    globals: Option<GlobalSeries>,
}

/// A tenant's series in `map`, registered with `make` on first use. Looked
/// up by `&str` first, so a known tenant costs no allocation. Registering a
/// series never calls back into the cache, so the borrow is not re-entered.
fn tenant_series<'a, V>(
    map: &'a mut std::collections::HashMap<Box<str>, V>,
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
        let g = otlp_metrics::generation();
        if g != self.generation {
            *self = SeriesCache::default();
            self.generation = g;
        }
        self
    }

    fn request(&mut self, op: &'static str, class: &'static str, tenant: &str) -> &RequestSeries {
        let by_tenant = self.current().requests.entry((op, class)).or_default();
        tenant_series(by_tenant, tenant, |t| RequestSeries {
            requests: counter!("cubegate_requests_total", "operation" => op, "status_class" => class, "tenant" => t.to_string()),
            duration: histogram!("cubegate_request_duration_seconds", "operation" => op, "status_class" => class, "tenant" => t.to_string()),
        })
    }

    fn upstream(&mut self, op: &'static str, class: &'static str) -> &metrics::Histogram {
        self.current().upstream.entry((op, class)).or_insert_with(|| {
            histogram!("cubegate_upstream_duration_seconds", "operation" => op, "status_class" => class)
        })
    }

    fn stripped(&mut self, op: &'static str) -> &metrics::Counter {
        self.current()
            .stripped
            .entry(op)
            .or_insert_with(|| counter!("cubegate_fields_stripped_total", "operation" => op))
    }

    fn refused(&mut self, reason: &'static str, tenant: &str) -> &metrics::Counter {
        let by_tenant = self.current().refused.entry(reason).or_default();
        tenant_series(
            by_tenant,
            tenant,
            |t| counter!("cubegate_rate_limit_refusals_total", "tenant" => t.to_string(), "reason" => reason),
        )
    }

    fn globals(&mut self) -> &GlobalSeries {
        self.current().globals.get_or_insert_with(|| GlobalSeries {
            in_flight: gauge!("cubegate_in_flight_requests"),
            audit_write: histogram!("cubegate_audit_write_seconds"),
            audit_batch: histogram!(AUDIT_BATCH_RECORDS),
        })
    }
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
    SERIES.with_borrow_mut(|c| c.refused(reason, tenant).increment(1));
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
}

/// An upstream key paused after a ComplyCube 429 (not while limiting is off).
pub fn key_paused(tenant: &str) {
    counter!("cubegate_key_pauses_total", "tenant" => tenant.to_string()).increment(1);
}

pub fn validation_refused(op: &'static str, shadow: bool) {
    counter!("cubegate_validation_refusals_total", "operation" => op, "mode" => if shadow { "shadow" } else { "enforce" })
        .increment(1);
}

pub fn audit_write(took: Duration, ok: bool) {
    SERIES.with_borrow_mut(|c| c.globals().audit_write.record(took.as_secs_f64()));
    if !ok {
        counter!("cubegate_audit_failures_total").increment(1);
    }
}

/// A connection dropped for a stalled response (`listener.write_stall_timeout_ms`).
pub fn slow_reader_dropped() {
    counter!("cubegate_slow_readers_dropped_total").increment(1);
}

/// Audit log bytes written a second time (see `AuditStats::rewritten_bytes`).
pub fn audit_rewritten(bytes: u64) {
    counter!("cubegate_audit_rewritten_bytes_total").increment(bytes);
}

/// One audit batch written (and fsynced when configured), on the writer thread.
pub fn audit_batch(records: usize) {
    SERIES.with_borrow_mut(|c| c.globals().audit_batch.record(records as f64));
}

pub fn ready(ready: bool) {
    gauge!("cubegate_ready").set(if ready { 1.0 } else { 0.0 });
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
    fn export_is_off_by_default_and_otel_variables_win_over_config() {
        let none = |_: &str| None;
        let cfg = TelemetrySettings::default();
        assert_eq!(export_plan(&cfg, &none), None, "off by default");
        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://c:4318".to_string()),
            "OTEL_SERVICE_NAME" => Some("gw-eu".to_string()),
            "OTEL_TRACES_SAMPLER" => Some("always_on".to_string()),
            _ => None,
        };
        let cfg = TelemetrySettings {
            otlp_endpoint: Some("http://from-config:4318/".into()),
            service_name: Some("from-config".into()),
            sample_ratio: Some(0.1),
            ..Default::default()
        };
        let p = export_plan(&cfg, &env).unwrap();
        assert_eq!(p.endpoint, None, "the SDK reads the OTEL endpoint itself");
        assert_eq!(p.service_name, "gw-eu");
        assert_eq!(p.sample_ratio, None, "OTEL_TRACES_SAMPLER wins");
        assert_eq!(p.logs_endpoint, None, "the SDK derives …/v1/logs itself");
        assert!(p.audit_logs, "audit records ship with the traces");
        let p = export_plan(&cfg, &none).unwrap();
        assert_eq!(
            p.endpoint.as_deref(),
            Some("http://from-config:4318/v1/traces")
        );
        assert_eq!(p.service_name, "from-config");
        assert_eq!(
            p.logs_endpoint.as_deref(),
            Some("http://from-config:4318/v1/logs")
        );
        assert_eq!(p.sample_ratio, Some(0.1));
        let traces_url = TelemetrySettings {
            otlp_endpoint: Some("http://c:4318/v1/traces".into()),
            ..Default::default()
        };
        let p = export_plan(&traces_url, &none).unwrap();
        assert_eq!(p.logs_endpoint.as_deref(), Some("http://c:4318/v1/logs"));
        let logs_env =
            |k: &str| (k == "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT").then(|| "http://l:1/x".to_string());
        let p = export_plan(&traces_url, &logs_env).unwrap();
        assert_eq!(
            p.logs_endpoint, None,
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT wins"
        );
        assert!(p.endpoint.is_some(), "traces keep the config endpoint");
        let traces_only_env = |k: &str| {
            (k == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").then(|| "http://t:1/v1/traces".to_string())
        };
        let p = export_plan(&TelemetrySettings::default(), &traces_only_env).unwrap();
        assert!(
            !p.audit_logs,
            "a traces-only endpoint says nothing about where audit logs go"
        );
        let no_logs = |k: &str| (k == "OTEL_LOGS_EXPORTER").then(|| "none".to_string());
        let p = export_plan(&traces_url, &no_logs).unwrap();
        assert!(
            !p.audit_logs,
            "OTEL_LOGS_EXPORTER=none keeps traces, drops logs"
        );
        let disabled = |k: &str| (k == "OTEL_SDK_DISABLED").then(|| "true".to_string());
        assert_eq!(export_plan(&cfg, &disabled), None);
        let off = TelemetrySettings {
            enabled: Some(false),
            ..Default::default()
        };
        assert_eq!(export_plan(&off, &env), None, "config can switch it off");
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
