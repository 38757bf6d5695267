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
//! This module is the API the rest of the crate calls; behind it `metrics`
//! is the one catalogue of every metric, `prometheus` the recorder,
//! `spans` the request and upstream spans, `export` the OTLP pipelines
//! (audit records shipped as log records included).

use std::time::Duration;

use http::StatusCode;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::config::{LogFormat, TelemetrySettings};

mod export;
mod json_line;
mod metrics;
mod otlp_metrics;
mod prometheus;
mod spans;
#[cfg(test)]
mod tests;

pub use self::metrics::{
    InFlight, audit_batch, audit_disk, audit_rewritten, audit_write, body_budget_held,
    body_budget_refused, breaker_transition, config_reload, key_paused, rate_limit_backend_error,
    rate_limit_fallback, rate_limit_refused, rate_limit_tracked_keys, rate_limit_waited, ready,
    register_at_start, slow_client_dropped, slow_reader_dropped, tls_handshake_failed,
    upstream_429, upstream_response, validation_refused,
};
pub use export::{ExportPlan, audit_sink, export_plan};
pub(crate) use export::{otlp_signal_endpoint, otlp_signal_on};
use json_line::JsonLine;
pub use otlp_metrics::metrics_endpoint;
pub(crate) use prometheus::buckets_for;
pub use prometheus::{metrics_handle, run_upkeep, set_upkeep_interval, upkeep_task, upkeeps};
pub(crate) use spans::listen_parts;
pub use spans::{
    caller_request_id, new_request_id, request_id, request_span, trace_id, upstream_done,
    upstream_span, upstream_trace_headers,
};

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

/// The JSON log layer: one [`JsonLine`] per event passing `filter`, written
/// to `writer`. It is kept out of spans altogether (JSON lines never show
/// span context): otherwise it would re-format a span's fields on every
/// `span.record`, on the request path.
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
    let provider = plan
        .as_ref()
        .and_then(|plan| match export::tracer_provider(plan) {
            Ok(p) => Some(p),
            Err(e) => {
                export_error = Some(e);
                None
            }
        });
    let mut logs_error = None;
    let logs =
        plan.as_ref().filter(|p| p.audit_logs).and_then(|plan| {
            match export::logger_provider(plan) {
                Ok(p) => Some(p),
                Err(e) => {
                    logs_error = Some(e);
                    None
                }
            }
        });
    if let Some(p) = &logs {
        export::set_audit_sink(p);
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

/// What `request_done` needs of a finished request.
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

/// One request finished: its metrics, its span's late attributes and the
/// access log line.
pub fn request_done(s: RequestSummary<'_>) {
    let op = s.operation.unwrap_or("none");
    let tenant = s.tenant.unwrap_or("none");
    metrics::request_finished(op, s.status, tenant, s.latency, s.stripped);
    spans::record_span(&s);
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
