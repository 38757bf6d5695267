//! OTLP export of traces and audit log records: whether and where each
//! signal goes (the `OTEL_*` variables win over `[telemetry]`, one rule for
//! every signal), the SDK pipelines with their bounded queues, and the
//! exporters' result counters.
//!
//! With export on, every audit record made durable is also shipped as an
//! OpenTelemetry log record (`/v1/logs`, event `cubegate.audit`): the body is
//! the record's exact JSON line (so a central store can re-check the hash
//! chain), attributes are its seq, instance, kind and operation, and the
//! trace context is the request's. Same bounded-queue rule as spans: a slow
//! collector drops log records, never delays a request or the audit writer;
//! the audit file stays the source of truth.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogger, SdkLoggerProvider};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::audit::{RecordRef, RecordSink};
use crate::config::TelemetrySettings;

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

pub(super) fn tracer_provider(plan: &ExportPlan) -> Result<SdkTracerProvider, String> {
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
        super::metrics::otel_spans_exported(r.is_ok(), n);
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

pub(super) fn logger_provider(plan: &ExportPlan) -> Result<SdkLoggerProvider, String> {
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
        super::metrics::otel_audit_logs_exported(r.is_ok(), n);
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

/// Attach `provider`'s logger as the process's audit-record sink.
pub(super) fn set_audit_sink(provider: &SdkLoggerProvider) {
    use opentelemetry::logs::LoggerProvider as _;
    let sink = AuditLogSink {
        logger: provider.logger("cubegate.audit"),
    };
    let _ = AUDIT_SINK.set(std::sync::Arc::new(sink));
}

/// The audit-record sink [`init`](super::init) built when log export is
/// on; the gateway attaches it to its audit log.
pub fn audit_sink() -> Option<std::sync::Arc<dyn RecordSink>> {
    AUDIT_SINK.get().cloned()
}
