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
        let mut upstream = Opts::default().upstream;
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
        let url = env.url(&format!("/v1/clients/{id}"));
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let req = env.http.get(&url).header("authorization", TOKEN_A);
            calls.spawn(async move { req.send().await.unwrap().status().as_u16() });
        }
        while let Some(status) = calls.join_next().await {
            assert_eq!(status.unwrap(), 200);
        }
        let peaks = env.sandbox.peaks();
        assert_eq!(peaks.in_flight, want_peak, "cap {cap:?}");
        if cap.is_some() {
            assert!(peaks.connections <= 2, "{peaks:?} with cap {cap:?}");
        }
    }
}
