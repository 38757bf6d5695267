//! `[validation] enabled = false` (issue 8: the switch that lets the load
//! benchmark show what schema validation costs): a schema-violating body is
//! forwarded, while the strict parse and the field policy still run; by
//! default the same body is refused and never reaches the upstream.

use crate::common::*;
use cubegate::sandbox::SandboxOptions;

const BAD_DOB: &str = r#"{"type":"company","email":"x@example.com","personDetails":{"firstName":"Ann","dob":"31/01/1990"}}"#;

#[tokio::test]
async fn validation_on_by_default_refuses_a_schema_violation() {
    let env = TestEnv::start().await;
    let id = env.create_client(TOKEN_A).await;
    env.sandbox.clear_recorded();
    let r = env
        .post(TOKEN_A, &format!("/v1/clients/{id}"), BAD_DOB)
        .await;
    r.assert_error(400, "invalid_request");
    assert_eq!(r.json["param"], "personDetails.dob", "{}", r.text);
    assert!(env.recorded().is_empty(), "a refused body went upstream");
}

#[tokio::test]
async fn validation_disabled_forwards_but_still_parses_and_applies_policy() {
    let env = TestEnv::with(Opts {
        extra: "[validation]\nenabled = false\n".into(),
        ..Opts::default()
    })
    .await;
    let id = env.create_client(TOKEN_A).await;
    env.sandbox.clear_recorded();
    let path = format!("/v1/clients/{id}");
    env.post(TOKEN_A, &path, BAD_DOB).await;
    let rec = env.recorded();
    assert_eq!(rec.len(), 1, "the unvalidated body must be forwarded");
    let sent = rec[0].json().unwrap();
    assert_eq!(sent["personDetails"]["dob"], "31/01/1990");
    assert!(sent.get("type").is_none(), "policy still strips `type`");

    // The strict parse is not part of validation: malformed JSON is refused.
    env.sandbox.clear_recorded();
    let r = env
        .post(
            TOKEN_A,
            &path,
            r#"{"email":"a@example.com","email":"b@example.com"}"#,
        )
        .await;
    r.assert_error(400, "invalid_request");
    assert!(env.recorded().is_empty());
}

/// 8 callers at once against a slow upstream: `[upstream] max_connections`
/// bounds what reaches it (the rest queue and are answered, not refused),
/// and without the cap the same load does reach it 8 at a time.
#[tokio::test]
async fn upstream_max_connections_bounds_what_reaches_comply_cube() {
    for (cap, want_peak) in [(Some(2), 2), (None, 8)] {
        // HTTP/1.1: one connection per exchange, so the cap bounds
        // connections too (with HTTP/2 one connection carries them all).
        let mut upstream = Opts::default().upstream;
        upstream.push_str("http2 = false\n");
        if let Some(c) = cap {
            upstream.push_str(&format!("max_connections = {c}\n"));
        }
        let env = TestEnv::with(Opts {
            upstream,
            sandbox: SandboxOptions {
                latency: std::time::Duration::from_millis(300),
                ..SandboxOptions::default()
            },
            ..Opts::default()
        })
        .await;
        let id = env.create_client(TOKEN_A).await;
        assert_eq!(concurrent_reads(&env, &id, 8).await, [200; 8]);
        let peaks = env.sandbox.peaks();
        assert_eq!(peaks.in_flight, want_peak, "cap {cap:?}");
        if cap.is_some() {
            assert!(peaks.connections <= 2, "{peaks:?} with cap {cap:?}");
        } else {
            assert!(peaks.connections > 2, "{peaks:?} without a cap");
        }
    }
}

/// Reads client `id` `n` times at once; the statuses, sorted.
async fn concurrent_reads(env: &TestEnv, id: &str, n: usize) -> Vec<u16> {
    let url = env.url(&format!("/v1/clients/{id}"));
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..n {
        let req = env.http.get(&url).header("authorization", TOKEN_A);
        calls.spawn(async move { req.send().await.unwrap().status().as_u16() });
    }
    let mut statuses = Vec::new();
    while let Some(s) = calls.join_next().await {
        statuses.push(s.unwrap());
    }
    statuses.sort_unstable();
    statuses
}

/// Waiting for a free exchange slot is the gateway's own queue: when it
/// outlasts the response timeout the caller gets a 503, but the upstream is
/// not blamed: the breaker does not open and readiness stays green.
#[tokio::test]
async fn a_full_local_queue_is_not_counted_against_the_upstream() {
    let env = TestEnv::with(Opts {
        upstream: "max_connections = 1\nresponse_timeout_ms = 400\nbreaker_failures = 1\n".into(),
        sandbox: SandboxOptions {
            latency: std::time::Duration::from_millis(300),
            ..SandboxOptions::default()
        },
        ..Opts::default()
    })
    .await;
    let id = env.create_client(TOKEN_A).await;
    let statuses = concurrent_reads(&env, &id, 4).await;
    assert_eq!(statuses.first(), Some(&200), "{statuses:?}");
    assert!(
        statuses.contains(&503),
        "some must outwait the queue: {statuses:?}"
    );
    assert!(
        !statuses.contains(&502) && !statuses.contains(&504),
        "{statuses:?}"
    );
    assert_eq!(env.sandbox.peaks().in_flight, 1);
    // With breaker_failures = 1 a single counted failure would open it.
    let r = env.get(TOKEN_A, &format!("/v1/clients/{id}")).await;
    assert_eq!(r.status, 200, "breaker opened by a local queue: {}", r.text);
}
