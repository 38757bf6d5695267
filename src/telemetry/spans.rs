//! Request ids, W3C trace context and the two spans of a request: the
//! server span (parented by a valid incoming `traceparent`; a malformed one
//! starts a new trace) and the client span around the upstream call, with
//! the trace headers sent upstream. Span attributes are bounded: the
//! method (standard ones only), route templates, operation, tenant and
//! caller ids from config, status codes — never raw paths, query strings,
//! header or body values.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderValue, StatusCode};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::RequestSummary;

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
pub(super) fn parse_traceparent(v: &str) -> Option<(&str, &str)> {
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
/// only known later are declared empty and filled by [`request_done`](super::request_done).
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

/// Fill in the request span's late attributes from its summary.
pub(super) fn record_span(s: &RequestSummary<'_>) {
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
