//! Issue 6 (and the trace-level canary of issue 2): traces, metrics,
//! readiness, logs without secrets, and the deploy/ files.
//!
//! Traces are checked end to end: the real `cubegate serve` binary exports
//! over OTLP/HTTP (configured only by `OTEL_*` variables) to a tiny
//! collector in this process that decodes the protobuf with
//! `opentelemetry-proto`. That is no heavier than the SDK's in-memory
//! exporter (prost and the generated types are already compiled for the
//! real exporter) and it also proves the env configuration, the batch
//! processor and the flush at shutdown.

// Test helpers (collector, child process) unwrap freely, as tests do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

// ---------------------------------------------------------------- collector

#[derive(Debug, Clone)]
struct GotSpan {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    attrs: BTreeMap<String, String>,
    service: String,
}

/// One OTLP log record as received.
#[derive(Debug, Clone)]
struct GotLog {
    body: String,
    event_name: String,
    trace_id: String,
    span_id: String,
    attrs: BTreeMap<String, String>,
    service: String,
}

const KIND_SERVER: i32 = 2;
const KIND_CLIENT: i32 = 3;

/// One exported metric data point (OTLP metrics).
#[derive(Debug, Clone)]
struct GotPoint {
    name: String,
    /// "sum" (with `monotonic`), "gauge" or "histogram".
    kind: &'static str,
    monotonic: bool,
    attrs: BTreeMap<String, String>,
    /// Sum value, gauge value, or histogram sum.
    value: f64,
    /// Histogram count.
    count: u64,
    bounds: Vec<f64>,
    service: String,
}

/// An OTLP/HTTP (protobuf) trace, metrics and log receiver on 127.0.0.1:0.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<GotSpan>>>,
    /// Metric points, one Vec per export request, in arrival order.
    metrics: Arc<Mutex<Vec<Vec<GotPoint>>>>,
    /// Debug text of every metrics request (for the canary check).
    metrics_raw: Arc<Mutex<String>>,
    logs: Arc<Mutex<Vec<GotLog>>>,
}

fn metric_points(
    msg: opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
) -> Vec<GotPoint> {
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
    let attrs = |kv: &[KeyValue]| -> BTreeMap<String, String> {
        kv.iter()
            .map(|kv| (kv.key.clone(), any_value(&kv.value)))
            .collect()
    };
    let num = |v: &Option<Value>| match v {
        Some(Value::AsDouble(d)) => *d,
        Some(Value::AsInt(i)) => *i as f64,
        None => f64::NAN,
    };
    let mut out = Vec::new();
    for rm in msg.resource_metrics {
        let service = rm
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .map(|kv| any_value(&kv.value))
            .unwrap_or_default();
        for sm in rm.scope_metrics {
            for m in sm.metrics {
                let p = |kind, monotonic, attrs, value, count, bounds| GotPoint {
                    name: m.name.clone(),
                    kind,
                    monotonic,
                    attrs,
                    value,
                    count,
                    bounds,
                    service: service.clone(),
                };
                match &m.data {
                    Some(Data::Sum(s)) => {
                        for d in &s.data_points {
                            out.push(p(
                                "sum",
                                s.is_monotonic,
                                attrs(&d.attributes),
                                num(&d.value),
                                0,
                                vec![],
                            ));
                        }
                    }
                    Some(Data::Gauge(g)) => {
                        for d in &g.data_points {
                            out.push(p(
                                "gauge",
                                false,
                                attrs(&d.attributes),
                                num(&d.value),
                                0,
                                vec![],
                            ));
                        }
                    }
                    Some(Data::Histogram(h)) => {
                        for d in &h.data_points {
                            out.push(p(
                                "histogram",
                                false,
                                attrs(&d.attributes),
                                d.sum.unwrap_or_default(),
                                d.count,
                                d.explicit_bounds.clone(),
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

fn resource_service(r: &Option<opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    r.iter()
        .flat_map(|r| r.attributes.iter())
        .find(|kv| kv.key == "service.name")
        .map(|kv| any_value(&kv.value))
        .unwrap_or_default()
}

fn decode_logs(body: bytes::Bytes, out: &mut Vec<GotLog>) {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use prost::Message;
    let msg = ExportLogsServiceRequest::decode(body).unwrap();
    for rl in msg.resource_logs {
        let service = resource_service(&rl.resource);
        for sl in rl.scope_logs {
            for l in sl.log_records {
                out.push(GotLog {
                    body: any_value(&l.body),
                    event_name: l.event_name,
                    trace_id: hex(&l.trace_id),
                    span_id: hex(&l.span_id),
                    attrs: l
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), any_value(&kv.value)))
                        .collect(),
                    service: service.clone(),
                });
            }
        }
    }
}

fn any_value(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

use cubegate::secret::hex;

impl Collector {
    async fn start() -> Collector {
        use http_body_util::BodyExt;
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans: Arc<Mutex<Vec<GotSpan>>> = Arc::default();
        let logs: Arc<Mutex<Vec<GotLog>>> = Arc::default();
        let store = spans.clone();
        let metrics: Arc<Mutex<Vec<Vec<GotPoint>>>> = Arc::default();
        let metrics_raw: Arc<Mutex<String>> = Arc::default();
        let (mstore, mraw) = (metrics.clone(), metrics_raw.clone());
        let log_store = logs.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let store = store.clone();
                let (mstore, mraw) = (mstore.clone(), mraw.clone());
                let log_store = log_store.clone();
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        let (mstore, mraw) = (mstore.clone(), mraw.clone());
                        let log_store = log_store.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let ok = || {
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .header("content-type", "application/x-protobuf")
                                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                                        .unwrap(),
                                )
                            };
                            if path == "/v1/metrics" {
                                use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest as M;
                                let msg = M::decode(body).unwrap();
                                mraw.lock().unwrap().push_str(&format!("{msg:?}\n"));
                                mstore.lock().unwrap().push(metric_points(msg));
                                return ok();
                            }
                            if path == "/v1/logs" {
                                decode_logs(body, &mut log_store.lock().unwrap());
                                return ok();
                            }
                            assert_eq!(path, "/v1/traces");
                            let msg = ExportTraceServiceRequest::decode(body).unwrap();
                            let mut out = store.lock().unwrap();
                            for rs in msg.resource_spans {
                                let service = resource_service(&rs.resource);
                                for ss in rs.scope_spans {
                                    for s in ss.spans {
                                        out.push(GotSpan {
                                            trace_id: hex(&s.trace_id),
                                            span_id: hex(&s.span_id),
                                            parent: hex(&s.parent_span_id),
                                            name: s.name,
                                            kind: s.kind,
                                            attrs: s
                                                .attributes
                                                .iter()
                                                .map(|kv| (kv.key.clone(), any_value(&kv.value)))
                                                .collect(),
                                            service: service.clone(),
                                        });
                                    }
                                }
                            }
                            drop(out);
                            ok()
                        }
                    },
                );
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Collector {
            addr,
            spans,
            metrics,
            metrics_raw,
            logs,
        }
    }

    fn metric_exports(&self) -> Vec<Vec<GotPoint>> {
        self.metrics.lock().unwrap().clone()
    }

    fn spans(&self) -> Vec<GotSpan> {
        self.spans.lock().unwrap().clone()
    }

    fn logs(&self) -> Vec<GotLog> {
        self.logs.lock().unwrap().clone()
    }
}

fn otel_env(c: &Collector) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", c.addr)),
        ("OTEL_SERVICE_NAME", "cubegate-it".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ]
}

const TRACE_1: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_1: &str = "00f067aa0ba902b7";
const TRACE_2: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_2: &str = "b7ad6b7169203331";

fn traceparent(t: &str, p: &str) -> String {
    format!("00-{t}-{p}-01")
}

fn server_span<'a>(spans: &'a [GotSpan], trace: &str) -> &'a GotSpan {
    let found: Vec<&GotSpan> = spans
        .iter()
        .filter(|s| s.trace_id == trace && s.kind == KIND_SERVER)
        .collect();
    assert_eq!(found.len(), 1, "server spans of {trace}: {spans:#?}");
    found[0]
}

fn children<'a>(spans: &'a [GotSpan], parent: &GotSpan) -> Vec<&'a GotSpan> {
    spans
        .iter()
        .filter(|s| s.trace_id == parent.trace_id && s.parent == parent.span_id)
        .collect()
}

#[tokio::test]
async fn spans_carry_route_operation_and_caller_continue_the_callers_trace_and_reach_upstream() {
    let collector = Collector::start().await;
    let mut gw = Served::start(Opts::default(), &otel_env(&collector)).await;
    let created = gw
        .send_with(
            "POST",
            Some(TOKEN_A),
            "/v1/clients",
            Some(&format!(r#"{{"type":"person","email":"{PII_EMAIL}","personDetails":{{"firstName":"Ann","lastName":"{PII_NAME}"}}}}"#)),
            &[],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_string();
    gw.sandbox.clear_recorded();

    // a successful update, continuing the caller's trace
    let tp1 = traceparent(TRACE_1, PARENT_1);
    let ok = gw
        .send_with(
            "POST",
            Some(TOKEN_A),
            &format!("/v1/clients/{id}"),
            Some(&format!(r#"{{"email":"{PII_EMAIL}"}}"#)),
            &[("traceparent", tp1.as_str())],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    // a refused one (this caller may only read)
    let tp2 = traceparent(TRACE_2, PARENT_2);
    let refused = gw
        .send_with(
            "POST",
            Some(TOKEN_A_READONLY),
            &format!("/v1/clients/{id}"),
            Some(r#"{"email":"x@example.com"}"#),
            &[("traceparent", tp2.as_str())],
        )
        .await;
    refused.assert_error(403, "forbidden");
    // a malformed traceparent starts a new trace
    let bad_tp = format!("00-{}-{PARENT_1}-01", TRACE_1.to_uppercase());
    let r = gw
        .send_with(
            "GET",
            Some(TOKEN_A),
            "/v1/clients?page=1",
            None,
            &[("traceparent", bad_tp.as_str())],
        )
        .await;
    assert_eq!(r.status, 200);
    // unrouted
    let r = gw
        .send_with("GET", Some(TOKEN_A), "/v1/nothing-here", None, &[])
        .await;
    r.assert_error(404, "route_not_found");

    let rec = gw.sandbox.recorded();
    assert_eq!(rec.len(), 2, "the update and the list reached upstream");
    let upstream_tp = rec[0].header_values("traceparent");
    assert_eq!(upstream_tp.len(), 1, "{:?}", rec[0].headers);
    gw.stop().await;
    let spans = collector.spans();

    // the update
    let server = server_span(&spans, TRACE_1);
    assert_eq!(server.name, "POST clients.update");
    assert_eq!(
        server.parent, PARENT_1,
        "parented by the incoming traceparent"
    );
    assert_eq!(server.service, "cubegate-it");
    let want = [
        ("http.request.method", "POST"),
        ("http.route", "/v1/clients/{id}"),
        ("http.response.status_code", "200"),
        ("server.address", "127.0.0.1"),
        ("server.port", gw.addr.port().to_string().as_str()),
        ("cubegate.tenant", "tenant-a"),
        ("cubegate.caller", "a-all"),
        ("cubegate.environment", "test"),
        ("cubegate.operation", "clients.update"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    for (k, v) in &want {
        assert_eq!(server.attrs.get(k), Some(v), "{k} in {:?}", server.attrs);
    }
    assert!(!server.attrs.contains_key("error.type"));
    let kids = children(&spans, server);
    let mut names: Vec<&str> = kids.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    for stage in [
        "identify",
        "route",
        "read_body",
        "policy",
        "validate",
        "rate_limit",
        "audit_intent",
        "POST upstream clients.update",
        "audit_outcome",
    ] {
        assert!(
            names.contains(&stage),
            "stage span {stage} missing: {names:?}"
        );
    }
    let upstream = kids.iter().find(|s| s.kind == KIND_CLIENT).unwrap();
    assert_eq!(upstream.attrs["http.response.status_code"], "200");
    // the sandbox got the same trace, parented by our upstream-call span
    assert_eq!(
        upstream_tp[0],
        format!("00-{TRACE_1}-{}-01", upstream.span_id),
        "upstream traceparent"
    );

    // the refusal
    let server = server_span(&spans, TRACE_2);
    assert_eq!(server.name, "POST clients.update");
    assert_eq!(server.parent, PARENT_2);
    assert_eq!(server.attrs["http.response.status_code"], "403");
    assert_eq!(server.attrs["error.type"], "forbidden");
    assert_eq!(server.attrs["cubegate.caller"], "a-readonly");
    assert_eq!(server.attrs["http.route"], "/v1/clients/{id}");
    assert!(
        children(&spans, server)
            .iter()
            .all(|s| s.kind != KIND_CLIENT)
    );

    // the malformed traceparent: a root span in a new trace
    let lists: Vec<&GotSpan> = spans
        .iter()
        .filter(|s| s.kind == KIND_SERVER && s.name == "GET clients.list")
        .collect();
    assert_eq!(lists.len(), 1);
    assert_ne!(lists[0].trace_id, TRACE_1);
    assert!(lists[0].parent.is_empty() || lists[0].parent == "0000000000000000");
    assert_eq!(
        rec[1].header_values("traceparent")[0].split('-').nth(1),
        Some(lists[0].trace_id.as_str())
    );

    // unrouted: named after the method only, no route
    let unrouted: Vec<&GotSpan> = spans
        .iter()
        .filter(|s| {
            s.kind == KIND_SERVER
                && s.attrs.get("error.type").map(String::as_str) == Some("route_not_found")
        })
        .collect();
    assert_eq!(unrouted.len(), 1);
    assert_eq!(unrouted[0].name, "GET");
    assert!(!unrouted[0].attrs.contains_key("http.route"));

    // never the path with ids, the query, or any value
    for s in &spans {
        for (k, v) in &s.attrs {
            assert!(!v.contains(&id), "{}: {k}={v} holds the client id", s.name);
            assert!(!v.contains("page=1"), "{}: {k}={v} holds the query", s.name);
            assert_no_canary(&format!("span {} attribute {k}", s.name), v);
        }
    }
    // the audit records carry the span's trace id
    let audit = gw.audit().lines().join("\n");
    assert!(audit.contains(TRACE_1), "audit trace id");
}

/// Issue 5: with OTLP export on, every durable audit record also reaches the
/// collector as a log record whose body is the exact line in the audit file
/// (so a central store can re-verify the chain), with its seq, instance,
/// kind and operation, in the request's trace.
#[tokio::test]
async fn audit_records_are_shipped_as_otel_log_records_equal_to_the_file_lines() {
    let collector = Collector::start().await;
    let mut env = otel_env(&collector);
    env.push(("OTEL_BLRP_SCHEDULE_DELAY", "100".into()));
    let mut gw = Served::start(Opts::default(), &env).await;
    let created = gw
        .send_with(
            "POST",
            Some(TOKEN_A),
            "/v1/clients",
            Some(&format!(r#"{{"type":"person","email":"{PII_EMAIL}","personDetails":{{"firstName":"Ann","lastName":"{PII_NAME}","dob":"{PII_DOB}"}}}}"#)),
            &[],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_string();
    let tp1 = traceparent(TRACE_1, PARENT_1);
    let ok = gw
        .send_with(
            "POST",
            Some(TOKEN_A),
            &format!("/v1/clients/{id}"),
            Some(&format!(r#"{{"email":"{PII_EMAIL}"}}"#)),
            &[("traceparent", tp1.as_str())],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let tp2 = traceparent(TRACE_2, PARENT_2);
    let bad_token = format!("{KEY_A_TEST}-not-a-token");
    let refused = gw
        .send_with(
            "POST",
            Some(&bad_token),
            &format!("/v1/clients/{id}"),
            Some(&format!(r#"{{"email":"{PII_EMAIL}"}}"#)),
            &[("traceparent", tp2.as_str())],
        )
        .await;
    refused.assert_error(401, "unauthorized");
    // SIGTERM: the drain flushes the audit log, then the logger provider
    // flushes its queue.
    gw.stop().await;

    let lines = gw.audit().lines();
    let logs = collector.logs();
    let mut bodies: Vec<&str> = logs.iter().map(|l| l.body.as_str()).collect();
    bodies.sort();
    let mut want: Vec<&str> = lines.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(
        bodies, want,
        "one log record per audit line, body = the exact line"
    );
    // create + update (intent and outcome each) and the 401 event
    assert_eq!(lines.len(), 5, "{lines:#?}");

    for l in &logs {
        let rec: serde_json::Value = serde_json::from_str(&l.body).unwrap();
        assert_eq!(l.event_name, "cubegate.audit");
        assert_eq!(l.service, "cubegate-it");
        assert_eq!(l.attrs["cubegate.audit.seq"], rec["seq"].to_string());
        assert_eq!(
            l.attrs["cubegate.audit.instance"],
            rec["instance"].as_str().unwrap()
        );
        assert_eq!(
            l.attrs["cubegate.audit.kind"],
            rec["kind"].as_str().unwrap()
        );
        assert_eq!(
            l.attrs.get("cubegate.operation").map(String::as_str),
            rec["operation"].as_str(),
        );
        let mut keys: Vec<&str> = l.attrs.keys().map(String::as_str).collect();
        keys.retain(|k| {
            ![
                "cubegate.audit.seq",
                "cubegate.audit.instance",
                "cubegate.audit.kind",
                "cubegate.operation",
            ]
            .contains(k)
        });
        assert!(
            keys.is_empty(),
            "only the record's own attributes: {keys:?}"
        );
        assert_no_canary("audit log record body", &l.body);
        for (k, v) in &l.attrs {
            assert_no_canary(&format!("audit log record attribute {k}"), v);
        }
        // The request's trace: the same trace id the record itself holds.
        assert_eq!(l.trace_id.len(), 32, "{l:?}");
        assert_ne!(l.span_id, "0000000000000000");
        if let Some(t) = rec["trace_id"].as_str() {
            assert_eq!(l.trace_id, t);
        }
    }
    let by_trace = |t: &str| -> Vec<String> {
        let mut k: Vec<String> = logs
            .iter()
            .filter(|l| l.trace_id == t)
            .map(|l| l.attrs["cubegate.audit.kind"].clone())
            .collect();
        k.sort();
        k
    };
    assert_eq!(by_trace(TRACE_1), ["intent", "outcome"], "the update");
    assert_eq!(by_trace(TRACE_2), ["event"], "the 401");
    let update = logs
        .iter()
        .find(|l| l.trace_id == TRACE_1 && l.attrs["cubegate.audit.kind"] == "outcome")
        .unwrap();
    assert_eq!(update.attrs["cubegate.operation"], "clients.update");
    let rec: serde_json::Value = serde_json::from_str(&update.body).unwrap();
    assert_eq!(rec["status"], 200);
    let unauth = logs.iter().find(|l| l.trace_id == TRACE_2).unwrap();
    let rec: serde_json::Value = serde_json::from_str(&unauth.body).unwrap();
    assert_eq!(rec["decision"], "refused_auth");
    assert_eq!(rec["status"], 401);
    // A central store can re-verify the chain from the shipped bodies alone:
    // put them, in seq order, into a file of their own and run `verify`.
    let mut shipped: Vec<(u64, &str)> = logs
        .iter()
        .map(|l| {
            (
                l.attrs["cubegate.audit.seq"].parse().unwrap(),
                l.body.as_str(),
            )
        })
        .collect();
    shipped.sort();
    let central = tempfile::tempdir().unwrap();
    let instance = &logs[0].attrs["cubegate.audit.instance"];
    let text: String = shipped.iter().map(|(_, b)| format!("{b}\n")).collect();
    write(
        &central
            .path()
            .join(format!("audit-{instance}-000001.jsonl")),
        &text,
    );
    let o = Command::new(env!("CARGO_BIN_EXE_cubegate"))
        .args(["audit", "verify"])
        .arg(central.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("OK"), "{out}");
}

/// Every refusal case plus successful PII traffic with the real binary at
/// `RUST_LOG=trace`: no key, token or PII value in the logs, in `/metrics`
/// or in any exported span attribute.
#[tokio::test]
async fn no_canary_in_trace_level_logs_metrics_or_spans() {
    let collector = Collector::start().await;
    let mut env = otel_env(&collector);
    env.push(("RUST_LOG", "trace".into()));
    let mut gw = Served::start(Opts::default(), &env).await;
    let created = gw
        .send_with(
            "POST",
            Some(TOKEN_A),
            "/v1/clients",
            Some(&format!(r#"{{"type":"person","email":"{PII_EMAIL}","personDetails":{{"firstName":"Ann","lastName":"{PII_NAME}","dob":"{PII_DOB}"}}}}"#)),
            &[],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_string();
    let upd = gw
        .send_with(
            "POST",
            Some(&format!("Bearer {TOKEN_A}")),
            &format!("/v1/clients/{id}"),
            Some(&format!(
                r#"{{"email":"{PII_EMAIL}","personDetails":{{"lastName":"{PII_NAME}"}}}}"#
            )),
            &[],
        )
        .await;
    assert_eq!(upd.status, 200, "{}", upd.text);
    let got = gw
        .send_with(
            "GET",
            Some(TOKEN_A),
            &format!("/v1/clients/{id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(got.status, 200);
    assert!(
        got.text.contains(PII_EMAIL),
        "the caller gets its data back"
    );

    let big = format!(
        r#"{{"email":"{PII_EMAIL}","x":"{}"}}"#,
        "a".repeat(70 * 1024)
    );
    let raw_key = KEY_A_TEST.to_string();
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        String,
        Option<String>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("GET", None, "/v1/clients".into(), None, 401, "unauthorized"),
        (
            "GET",
            Some("cgw_CANARYTOKENwrong000"),
            "/v1/clients".into(),
            None,
            401,
            "unauthorized",
        ),
        (
            "GET",
            Some(raw_key.as_str()),
            "/v1/clients".into(),
            None,
            401,
            "unauthorized",
        ),
        (
            "POST",
            Some(TOKEN_A_READONLY),
            format!("/v1/clients/{id}"),
            Some(format!(r#"{{"email":"{PII_EMAIL}"}}"#)),
            403,
            "forbidden",
        ),
        (
            "GET",
            Some(TOKEN_A),
            "/v1/unknown".into(),
            None,
            404,
            "route_not_found",
        ),
        (
            "GET",
            Some(TOKEN_A),
            "/v1/clients/abc%2Fdef".into(),
            None,
            400,
            "invalid_request",
        ),
        (
            "POST",
            Some(TOKEN_A),
            format!("/v1/clients/{id}"),
            Some(big),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            Some(TOKEN_A),
            "/v1/clients".into(),
            Some(format!(
                r#"{{"type":"person","email":"{PII_EMAIL}","personDetails":{{"lastName":"{PII_NAME}""#
            )),
            400,
            "invalid_request",
        ),
        (
            "POST",
            Some(TOKEN_A),
            "/v1/clients".into(),
            Some(format!(
                r#"{{"type":"{PII_NAME}","email":"{PII_EMAIL}","personDetails":{{"firstName":"Ann","lastName":"{PII_NAME}","dob":"{PII_DOB}"}}}}"#
            )),
            400,
            "invalid_request",
        ),
    ];
    for (m, tok, path, body, status, kind) in cases {
        let r = gw.send_with(m, tok, &path, body.as_deref(), &[]).await;
        r.assert_error(status, kind);
    }
    // dot segments (raw: reqwest would normalise them)
    let st = gw
        .raw(&format!("GET /v1/clients/../clients HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN_A}\r\nConnection: close\r\n\r\n"))
        .await;
    assert!(st.starts_with("HTTP/1.1 400"), "{st}");
    // 429: the quota caller's burst is one request
    let body = format!(r#"{{"email":"{PII_EMAIL}"}}"#);
    let first = gw
        .send_with(
            "POST",
            Some(TOKEN_A_QUOTA),
            &format!("/v1/clients/{id}"),
            Some(&body),
            &[],
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    let second = gw
        .send_with(
            "POST",
            Some(TOKEN_A_QUOTA),
            &format!("/v1/clients/{id}"),
            Some(&body),
            &[],
        )
        .await;
    second.assert_error(429, "rate_limit_exceeded");

    let (status, metrics) = gw.admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("cubegate_requests_total"), "{metrics}");
    assert_no_canary("/metrics", &metrics);
    gw.stop().await;

    let logs = gw.logs();
    // the run really logged at trace level, from our crate and from the stack
    assert!(
        logs.lines().count() > 100,
        "only {} log lines",
        logs.lines().count()
    );
    assert!(logs.contains("\"level\":\"TRACE\""), "not at trace level");
    assert!(logs.contains("cubegate::access"));
    assert_no_canary("trace-level logs", &logs);
    assert!(!logs.contains(&id), "client id (from a path) in the logs");
    let spans = collector.spans();
    assert!(spans.len() > 20, "spans exported: {}", spans.len());
    for s in &spans {
        assert_no_canary(&format!("span name {}", s.name), &s.name);
        for (k, v) in &s.attrs {
            assert_no_canary(&format!("span {} attribute {k}", s.name), v);
        }
    }
}

// ------------------------------------------------------ metrics, readiness

#[tokio::test]
async fn metrics_move_for_success_validation_refusal_and_rate_limit_refusal() {
    let env = TestEnv::start().await;
    let ok = [
        ("operation", "clients.create"),
        ("status_class", "2xx"),
        ("tenant", "tenant-a"),
    ];
    let bad = [("operation", "clients.create"), ("mode", "enforce")];
    let limited = [("tenant", "tenant-a")];
    let before = env.metrics().await;
    env.create_client(TOKEN_A).await;
    let r = env
        .post(
            TOKEN_A,
            "/v1/clients",
            r#"{"type":"alien","email":"a@example.com"}"#,
        )
        .await;
    r.assert_error(400, "invalid_request");
    let id = env.create_client(TOKEN_A).await;
    let body = r#"{"email":"q@example.com"}"#;
    assert_eq!(
        env.post(TOKEN_A_QUOTA, &format!("/v1/clients/{id}"), body)
            .await
            .status,
        200
    );
    env.post(TOKEN_A_QUOTA, &format!("/v1/clients/{id}"), body)
        .await
        .assert_error(429, "rate_limit_exceeded");
    let after = env.metrics().await;
    // Other tests share the process-wide recorder: counters only grow, so
    // "moved by at least ours" is the exact claim.
    let d = |name: &str, l: &[(&str, &str)]| {
        metric_value(&after, name, l) - metric_value(&before, name, l)
    };
    assert!(d("cubegate_requests_total", &ok) >= 2.0, "{after}");
    assert!(d("cubegate_request_duration_seconds_count", &ok) >= 2.0);
    assert!(
        d("cubegate_validation_refusals_total", &bad) >= 1.0,
        "{after}"
    );
    assert!(
        d("cubegate_rate_limit_refusals_total", &limited) >= 1.0,
        "{after}"
    );
    assert!(
        d(
            "cubegate_requests_total",
            &[("operation", "clients.update"), ("status_class", "4xx")]
        ) >= 1.0
    );
    assert!(
        d(
            "cubegate_upstream_duration_seconds_count",
            &[("operation", "clients.create")]
        ) >= 2.0
    );
    assert!(d("cubegate_audit_write_seconds_count", &[]) >= 2.0);
    assert!(after.contains("cubegate_in_flight_requests"));
    assert!(!after.contains(&id), "a client id became a label");
}

#[tokio::test]
async fn readyz_fails_when_the_audit_dir_is_unwritable_and_when_draining() {
    let env = TestEnv::start().await;
    env.create_client(TOKEN_A).await;
    let (s, v) = env.readyz().await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ready"], true);
    assert_eq!(v["config_loaded"], true);
    assert_eq!(v["upstream_reachable"], true);

    let frozen = cubegate::audit::testing::freeze_dir(&env.audit_dir()).unwrap();
    let (s, v) = env.readyz().await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["audit_writable"], false);
    frozen.thaw().unwrap();
    let (s, v) = env.readyz().await;
    assert_eq!(s, 200, "thawed: {v}");

    env.gw.shared().start_draining();
    let (s, v) = env.readyz().await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["draining"], true);
    let a = env.gw.admin_addr().unwrap();
    let h = env
        .http
        .get(format!("http://{a}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200, "alive while draining");
}

#[tokio::test]
async fn readyz_fails_while_the_upstream_is_unreachable() {
    let env = TestEnv::with(Opts {
        upstream: "connect_timeout_ms = 500\nresponse_timeout_ms = 1000\n".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(env.readyz().await.0, 200, "no traffic yet");
    env.sandbox
        .faults()
        .set(cubegate::sandbox::FaultMode::ResetBeforeResponse);
    let r = env.get(TOKEN_A, "/v1/clients").await;
    r.assert_error(502, "upstream_unavailable");
    let (s, v) = env.readyz().await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["upstream_reachable"], false);
}

// ------------------------------------------------------------------ deploy/

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The collector config and the alert rules are written in the JSON subset
/// of YAML (any YAML parser reads them) with `#` comment lines; parse them
/// as such rather than pull in a YAML crate.
fn yaml_json(p: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo(p)).unwrap();
    let json: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Every `cubegate_*` metric named in `text` is one the code emits.
fn assert_known_metrics(what: &str, text: &str) {
    let code = std::fs::read_to_string(repo("src/telemetry/metrics.rs")).unwrap();
    let mut seen = 0;
    for (i, _) in text.match_indices("cubegate_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .fold(name.clone(), |n, s| {
                n.strip_suffix(s).map(str::to_string).unwrap_or(n)
            });
        if base == "cubegate_" {
            continue;
        }
        assert!(
            code.contains(&format!("\"{base}\"")),
            "{what} uses unknown metric {name}"
        );
        seen += 1;
    }
    assert!(seen > 5, "{what} names too few metrics");
}

#[test]
fn deploy_files_parse_and_use_the_metrics_the_code_emits() {
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("deploy/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 6);
    let exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.iter().any(|e| e.contains("histogram_quantile(0.99")));
    assert_known_metrics("dashboard", &exprs.join("\n"));

    let col = yaml_json("deploy/otel-collector.yaml");
    assert!(col["receivers"]["otlp"]["protocols"]["http"].is_object());
    assert!(col["receivers"]["prometheus"].is_object());
    assert!(col["exporters"]["prometheus"].is_object());
    let traces = &col["service"]["pipelines"]["traces"];
    assert_eq!(traces["receivers"][0], "otlp");
    assert!(
        col["service"]["pipelines"]["metrics"]["exporters"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("prometheus"))
    );

    let alerts = yaml_json("deploy/prometheus-alerts.yaml");
    let rules: Vec<&serde_json::Value> = alerts["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert!(rules.len() >= 4);
    for r in &rules {
        assert!(r["alert"].is_string() && r["expr"].is_string(), "{r}");
    }
    let all: String = rules
        .iter()
        .map(|r| r["expr"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    assert_known_metrics("alerts", &all);
}

// ------------------------------------------------------------ OTLP metrics

/// The last exported point of `name` whose attributes include `attrs`.
fn last_point<'a>(
    exports: &'a [Vec<GotPoint>],
    name: &str,
    attrs: &[(&str, &str)],
) -> Option<&'a GotPoint> {
    exports.iter().rev().find_map(|e| {
        e.iter().find(|p| {
            p.name == name
                && attrs
                    .iter()
                    .all(|(k, v)| p.attrs.get(*k).map(String::as_str) == Some(*v))
        })
    })
}

const CREATED_OK: [(&str, &str); 3] = [
    ("operation", "clients.create"),
    ("status_class", "2xx"),
    ("tenant", "tenant-a"),
];
const CREATE_REFUSED: [(&str, &str); 3] = [
    ("operation", "clients.create"),
    ("status_class", "4xx"),
    ("tenant", "tenant-a"),
];

/// A success and a schema refusal, both carrying PII canaries.
async fn success_and_validation_refusal(gw: &Served) {
    let created = gw
        .send_with(
            "POST",
            Some(TOKEN_A),
            "/v1/clients",
            Some(&format!(r#"{{"type":"person","email":"{PII_EMAIL}","personDetails":{{"firstName":"Ann","lastName":"{PII_NAME}"}}}}"#)),
            &[],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    gw.send_with(
        "POST",
        Some(TOKEN_A),
        "/v1/clients",
        Some(&format!(r#"{{"type":"alien","email":"{PII_EMAIL}"}}"#)),
        &[],
    )
    .await
    .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn metrics_are_exported_over_otlp_periodically_with_the_prometheus_names_and_labels() {
    let collector = Collector::start().await;
    let mut env = otel_env(&collector);
    env.push(("OTEL_METRIC_EXPORT_INTERVAL", "300".into()));
    let mut gw = Served::start(Opts::default(), &env).await;
    success_and_validation_refusal(&gw).await;

    // Periodic export, while the gateway keeps running.
    let deadline = Instant::now() + Duration::from_secs(20);
    let exports = loop {
        let e = collector.metric_exports();
        let refused = last_point(&e, "cubegate_requests_total", &CREATE_REFUSED);
        if refused.is_some_and(|p| p.value >= 1.0) {
            break e;
        }
        assert!(Instant::now() < deadline, "no periodic export: {e:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ok = last_point(&exports, "cubegate_requests_total", &CREATED_OK).expect("2xx series");
    assert_eq!((ok.kind, ok.monotonic), ("sum", true), "{ok:?}");
    assert_eq!(ok.value, 1.0);
    assert_eq!(ok.service, "cubegate-it");
    let h = last_point(&exports, "cubegate_request_duration_seconds", &CREATED_OK)
        .expect("duration histogram");
    assert_eq!(h.kind, "histogram");
    assert_eq!(h.count, 1);
    assert!(h.value > 0.0, "{h:?}");
    // The Prometheus bucket bounds, not the OTel defaults.
    assert_eq!(
        h.bounds,
        [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0
        ]
    );
    let v = last_point(
        &exports,
        "cubegate_validation_refusals_total",
        &[("operation", "clients.create"), ("mode", "enforce")],
    )
    .expect("validation refusals");
    assert_eq!(v.value, 1.0);
    let g = last_point(&exports, "cubegate_in_flight_requests", &[]).expect("in-flight gauge");
    assert_eq!((g.kind, g.value), ("gauge", 0.0), "{g:?}");

    // /metrics reads the same series: same names, labels and values.
    let (st, prom) = gw.admin_get("/metrics").await;
    assert_eq!(st, 200);
    assert_eq!(
        metric_value(&prom, "cubegate_requests_total", &CREATED_OK),
        1.0
    );
    assert_eq!(
        metric_value(&prom, "cubegate_requests_total", &CREATE_REFUSED),
        1.0
    );
    assert_eq!(
        metric_value(
            &prom,
            "cubegate_request_duration_seconds_count",
            &CREATED_OK
        ),
        1.0
    );
    assert!(
        metric_value(
            &prom,
            "cubegate_otel_metric_exports_total",
            &[("result", "ok")]
        ) >= 1.0,
        "{prom}"
    );
    gw.stop().await;
    assert_no_canary("OTLP metrics", &collector.metrics_raw.lock().unwrap());
}

#[tokio::test]
async fn an_unreachable_metrics_collector_is_counted_and_requests_still_succeed() {
    // Nothing listens on this port.
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let gw = Served::start(
        Opts::default(),
        &[
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                format!("{dead}/v1/metrics"),
            ),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200".into()),
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = gw
            .send_with("GET", Some(TOKEN_A), "/v1/clients?page=1", None, &[])
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let (_, prom) = gw.admin_get("/metrics").await;
        if metric_value(
            &prom,
            "cubegate_otel_metric_exports_total",
            &[("result", "error")],
        ) >= 1.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed export counted: {prom}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_last_metric_values_are_flushed_on_sigterm() {
    let collector = Collector::start().await;
    // The default interval (60 s) never fires during this test: whatever
    // arrives was sent by the shutdown flush.
    let mut gw = Served::start(Opts::default(), &otel_env(&collector)).await;
    success_and_validation_refusal(&gw).await;
    assert!(collector.metric_exports().is_empty());
    gw.stop().await;
    let exports = collector.metric_exports();
    assert_eq!(exports.len(), 1, "one final export: {exports:#?}");
    for (attrs, want) in [(CREATED_OK, 1.0), (CREATE_REFUSED, 1.0)] {
        let p = last_point(&exports, "cubegate_requests_total", &attrs).expect("flushed");
        assert_eq!(p.value, want, "{p:?}");
    }
    let h = last_point(
        &exports,
        "cubegate_request_duration_seconds",
        &CREATE_REFUSED,
    )
    .expect("flushed histogram");
    assert_eq!((h.kind, h.count), ("histogram", 1));
    assert_no_canary("OTLP metrics", &collector.metrics_raw.lock().unwrap());
}
