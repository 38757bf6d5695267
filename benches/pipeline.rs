//! Cost per request of cubegate's own work, without any network:
//! every stage `pipeline::run` performs before `forward`, in the same order
//! and through the same public stage functions, on a ~300-byte
//! `clients.update` body against a compiled [`Snapshot`]:
//!
//! ```text
//! request id ─ identify ─ route ─ authorize ─ content type ─ read body
//!   ─ strict parse ─ field pointers ─ policy ─ validate ─ to_vec
//!   ─ rate limit ─ inject (build the upstream request)   + telemetry::request_done
//! ```
//!
//! Variants switch one feature off at a time (validation, rate limit,
//! metrics/access line), so each feature's cost is the difference. The
//! baseline is `serde_json::from_slice` of the same body: the least any
//! JSON-aware proxy must do. The audit is not among these stages: its record
//! alone is in `benches/audit.rs`, a whole request with it in
//! `benches/request.rs`, and under load in `bench/run.sh`.
//!
//! This mirrors the stage order by hand rather than calling
//! `pipeline::handle`, because `handle` always forwards upstream and the
//! network would dominate. Keep it in step with `pipeline::run`;
//! `benches/request.rs` times the real `handle` end to end (with the
//! network) and so catches what this copy could miss.
//!
//! Run: `cargo bench --bench pipeline -- --warm-up-time 1 --measurement-time 3`

// Bench support code: a failed setup step must stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use cubegate::pipeline::{body, identify, inject, policy, route};
use cubegate::state::Shared;
use cubegate::telemetry;
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body_util::Full;

#[path = "support/mod.rs"]
mod support;

const CLIENT_ID: &str = "5f1b2c3d4e5f60718293a4b5";
const CLIENTS_UPDATE: &[u8] = support::CLIENTS_UPDATE.as_bytes();

struct Bench {
    shared: Arc<Shared>,
    headers: HeaderMap,
    uri: Uri,
}

#[derive(Clone, Copy)]
struct Features {
    validate: bool,
    rate_limit: bool,
    telemetry: bool,
}

const ALL: Features = Features {
    validate: true,
    rate_limit: true,
    telemetry: true,
};

/// Everything `pipeline::run` does before `forward`, plus `finish`'s
/// metrics and access line; returns the upstream request.
async fn stages(b: &Bench, f: Features) -> Request<Full<Bytes>> {
    let started = Instant::now();
    let rt = b.shared.runtime();
    let snap = &rt.snapshot;
    let headers = &b.headers;
    let request_id = telemetry::request_id(headers);
    let span = telemetry::request_span(headers, &Method::POST, "127.0.0.1", Some(8080));
    let trace = telemetry::trace_id(&span, headers);
    let caller = identify::identify(snap, headers, None).unwrap();
    let routed = route::route(
        &Method::POST,
        &b.uri,
        Version::HTTP_11,
        snap.listener.max_uri_bytes,
    )
    .unwrap();
    let op = routed.op;
    let def = op.def();
    identify::authorize(&caller, op).unwrap();
    let tenant = &snap.tenants[caller.tenant];
    body::check_content_type(headers).unwrap();
    let bytes = body::read_capped(
        Full::new(Bytes::from_static(CLIENTS_UPDATE)),
        snap.op(op).body_cap,
    )
    .await
    .unwrap();
    let mut value = body::parse_strict(&bytes, snap.max_depth).unwrap();
    let fields = body::field_pointers(&value);
    let outcome = policy::apply(&mut value, &tenant.op(op).rules).unwrap();
    if f.validate && snap.validation_enabled {
        snap.schemas.validate(def.id, &value).unwrap();
    }
    let upstream_body = Bytes::from(serde_json::to_vec(&value).unwrap());
    let waited = if f.rate_limit {
        cubegate::pipeline::rate_limit::admit(&b.shared, snap, &caller, tenant)
            .await
            .unwrap()
    } else {
        None
    };
    let (traceparent, tracestate) = telemetry::upstream_trace_headers(&span, headers);
    let req = inject::build(inject::UpstreamRequestParts {
        method: Method::POST,
        base: &snap.upstream.base,
        path_and_query: &routed.upstream_path,
        caller_headers: headers,
        key: tenant.key(caller.environment),
        request_id: &request_id,
        traceparent,
        tracestate,
        body: Some(upstream_body),
    })
    .unwrap();
    if f.telemetry {
        telemetry::request_done(telemetry::RequestSummary {
            span: &span,
            method: &Method::POST,
            route: Some(def.route()),
            trace_id: trace.as_deref(),
            request_id: &request_id,
            operation: Some(def.id),
            tenant: Some(&tenant.id),
            caller: Some(&caller.id),
            environment: Some(caller.environment.as_str()),
            status: http::StatusCode::OK,
            error_type: None,
            latency: started.elapsed(),
            upstream_latency: Some(Duration::from_micros(300)),
            stripped: outcome.stripped.len(),
            rate_limit_wait: waited,
        });
    }
    black_box((fields, outcome));
    req
}

fn benches(c: &mut Criterion) {
    support::init_telemetry();
    assert!((250..400).contains(&CLIENTS_UPDATE.len()));
    let rt = support::current_thread();
    let snap = support::snapshot(r#"base_url = "https://api.complycube.com/v1""#);
    let shared = support::shared(&rt, Arc::new(snap), None);
    let headers = support::caller_headers();
    let b = Bench {
        shared,
        headers,
        uri: format!("/v1/clients/{CLIENT_ID}").parse().unwrap(),
    };
    // The request must really pass every stage (and `type` be stripped).
    let req = rt.block_on(stages(&b, ALL));
    assert_eq!(
        req.uri().to_string(),
        format!("https://api.complycube.com/v1/clients/{CLIENT_ID}")
    );

    let mut g = c.benchmark_group("pipeline clients.update ~300B");
    let variants = [
        ("all stages", ALL),
        (
            "no validation",
            Features {
                validate: false,
                ..ALL
            },
        ),
        (
            "no rate limit",
            Features {
                rate_limit: false,
                ..ALL
            },
        ),
        (
            "no metrics/access line",
            Features {
                telemetry: false,
                ..ALL
            },
        ),
    ];
    for (name, f) in variants {
        g.bench_function(name, |bn| bn.iter(|| rt.block_on(stages(&b, f))));
    }
    g.bench_function("baseline serde_json::from_slice", |bn| {
        bn.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(CLIENTS_UPDATE)).unwrap())
    });
    g.finish();
}

criterion_group!(name = group; config = Criterion::default(); targets = benches);
criterion_main!(group);
