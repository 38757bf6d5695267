//! One whole request through the gateway's real code, in-process: the same
//! `pipeline::handle` the server calls (every stage in the pipeline's own
//! order, `finish`'s audit outcome, metrics and access line), forwarding
//! over a real TLS (HTTP/2) connection on loopback to the sandbox running on
//! the same thread. Beside it the floor: the same upstream client sending the
//! already-built request straight to the sandbox. `handle − direct` is what
//! the gateway adds per request, measured on the code that ships, so unlike
//! `benches/pipeline.rs` (the stage-by-stage breakdown, which mirrors the
//! stage order by hand) it cannot drift from the pipeline.
//!
//! Variants: audit off; audit on without fsync (records written inline);
//! audit on with fsync (two group commits per request, one request at a
//! time: the flush latency of the disk under the temp dir, not CPU; where
//! `/tmp` is tmpfs there is no disk to wait for, set `TMPDIR` to measure one).
//!
//! Run: `cargo bench --bench request -- --warm-up-time 1 --measurement-time 3`

// Set-up code: a failure here is a broken bench, not a request path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use cubegate::pipeline::{self, forward::Upstream, inject};
use cubegate::sandbox::{Sandbox, SandboxOptions};
use cubegate::state::Shared;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

#[path = "support/mod.rs"]
mod support;
use support::{CLIENTS_UPDATE, caller_headers};

const CLIENTS_CREATE: &str = r#"{"type":"person","email":"john.doe@example.com","personDetails":{"firstName":"John","lastName":"Doe"}}"#;

/// One request through `pipeline::handle`, its response body read to the end.
async fn through_gateway(
    shared: &Arc<Shared>,
    path: &str,
    body: &'static str,
) -> (StatusCode, Bytes) {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    *req.headers_mut() = caller_headers();
    let resp = pipeline::handle(shared.clone(), req).await;
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn benches(c: &mut Criterion) {
    support::init_telemetry();
    let rt = support::current_thread();
    let dir = tempfile::tempdir().unwrap();
    let sandbox = rt
        .block_on(Sandbox::start(SandboxOptions {
            // Nothing reads them; keep memory flat over millions of requests.
            max_recorded: 16,
            ..SandboxOptions::default()
        }))
        .unwrap();
    let ca = dir.path().join("sandbox-ca.pem");
    std::fs::write(&ca, sandbox.ca_cert_pem()).unwrap();
    let snap = Arc::new(support::snapshot(&format!(
        "base_url = \"{}/v1\"\nca_file = \"{}\"\nwebpki_roots = false",
        sandbox.base_url(),
        ca.display()
    )));

    let gateway = |audit: Option<bool>| {
        let log = audit.map(|fsync| {
            let d = dir.path().join(format!("audit-fsync-{fsync}"));
            std::fs::create_dir_all(&d).unwrap();
            support::audit_log(&d, fsync)
        });
        support::shared(&rt, snap.clone(), log)
    };
    let no_audit = gateway(None);
    let (status, created) = rt.block_on(through_gateway(&no_audit, "/v1/clients", CLIENTS_CREATE));
    assert_eq!(status, StatusCode::OK, "{created:?}");
    let id = serde_json::from_slice::<serde_json::Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path: &'static str = Box::leak(format!("/v1/clients/{id}").into_boxed_str());

    // The floor: the request the gateway would send (key injected, `type`
    // stripped), built once, sent by the same kind of upstream client.
    let direct = Upstream::new(&snap.upstream).unwrap();
    let mut stripped: serde_json::Value = serde_json::from_str(CLIENTS_UPDATE).unwrap();
    stripped.as_object_mut().unwrap().remove("type");
    let direct_body = Bytes::from(serde_json::to_vec(&stripped).unwrap());
    let key = snap.tenants[0].key(cubegate::model::Environment::Test);
    let upstream_path = format!("/clients/{id}");
    let direct_req = || {
        inject::build(inject::UpstreamRequestParts {
            method: Method::POST,
            base: &snap.upstream.base,
            path_and_query: &upstream_path,
            caller_headers: &caller_headers(),
            key,
            request_id: "bench-direct",
            traceparent: None,
            tracestate: None,
            body: Some(direct_body.clone()),
        })
        .unwrap()
    };
    let direct_once = || async {
        let resp = direct.send(direct_req()).await.unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    };
    let (status, body) = rt.block_on(direct_once());
    assert_eq!(status, StatusCode::OK, "{body:?}");

    let audit_nofsync = gateway(Some(false));
    let audit_fsync = gateway(Some(true));
    // Every variant must really pass every stage and reach the sandbox.
    for g in [&no_audit, &audit_nofsync, &audit_fsync] {
        let (status, body) = rt.block_on(through_gateway(g, path, CLIENTS_UPDATE));
        assert_eq!(status, StatusCode::OK, "{body:?}");
    }

    let mut grp = c.benchmark_group("request clients.update ~300B, loopback TLS sandbox");
    grp.bench_function("direct: the upstream client alone (floor)", |b| {
        b.iter(|| rt.block_on(direct_once()))
    });
    // A variant that started failing mid-run would time error answers.
    let mut not_ok = 0u64;
    let mut timed = [0u64; 3];
    for (i, (name, g)) in [
        ("pipeline::handle, audit off", &no_audit),
        ("pipeline::handle, audit without fsync", &audit_nofsync),
        ("pipeline::handle, audit with fsync", &audit_fsync),
    ]
    .into_iter()
    .enumerate()
    {
        grp.bench_function(name, |b| {
            b.iter(|| {
                let (status, body) = rt.block_on(through_gateway(g, path, CLIENTS_UPDATE));
                not_ok += u64::from(status != StatusCode::OK);
                timed[i] += 1;
                black_box(body)
            })
        });
    }
    grp.finish();
    assert_eq!(not_ok, 0, "requests answered with an error while timed");
    // Intent and outcome of every audited request (the check above, then
    // each timed one) are in the log.
    for (i, g) in [(1, &audit_nofsync), (2, &audit_fsync)] {
        let s = g.audit().unwrap().stats();
        assert_eq!(s.failures, 0);
        assert_eq!(s.records, 2 * (1 + timed[i]), "{s:?}");
    }
}

criterion_group!(name = group; config = Criterion::default(); targets = benches);
criterion_main!(group);
