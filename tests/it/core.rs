//! Issue 2: the gateway core, black-box against the sandbox.

use crate::common::*;

#[tokio::test]
async fn seed_example_sends_exactly_the_tenant_key_and_no_caller_headers() {
    let env = TestEnv::start().await;
    let id = env.create_client(TOKEN_A).await;
    env.sandbox.clear_recorded();
    let r = env
        .http
        .post(env.url(&format!("/v1/clients/{id}")))
        .header("authorization", TOKEN_A)
        .header("content-type", "application/json")
        .header("cookie", "session=abc")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-internal-secret", "s3cr3t")
        .header("x-forwarded-for", "10.1.2.3")
        .header("user-agent", "complycube-python/1.1.6")
        .header("x-request-id", "caller-rid-1")
        .body(
            r#"{"email":"new@example.com","personDetails":{"firstName":"Jane","lastName":"Doe"}}"#,
        )
        .send()
        .await
        .unwrap();
    let r = Resp::from(r).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["email"], "new@example.com");
    assert_eq!(
        r.json["personDetails"]["dob"], PII_DOB,
        "nested objects merge"
    );
    assert_eq!(r.headers["x-request-id"], "caller-rid-1");
    let rec = env.recorded();
    assert_eq!(rec.len(), 1);
    let req = &rec[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, format!("/v1/clients/{id}"));
    assert_eq!(req.header_values("authorization"), vec![KEY_A_TEST]);
    for h in [
        "cookie",
        "proxy-authorization",
        "x-internal-secret",
        "x-forwarded-for",
    ] {
        assert!(req.header_values(h).is_empty(), "{h} was forwarded");
    }
    assert_eq!(
        req.header_values("user-agent"),
        vec!["complycube-python/1.1.6"]
    );
    assert_eq!(req.header_values("x-request-id"), vec!["caller-rid-1"]);
    let names: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
    for n in &names {
        assert!(
            [
                "authorization",
                "content-type",
                "content-length",
                "user-agent",
                "x-request-id",
                "host",
                "accept"
            ]
            .contains(n),
            "unexpected header upstream: {n}"
        );
    }
}

#[tokio::test]
async fn bearer_prefix_and_trailing_slash_work_and_live_callers_use_the_live_key() {
    let env = TestEnv::start().await;
    let r = env.get(&format!("Bearer {TOKEN_A}"), "/v1/clients/").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["items"], serde_json::json!([]));
    let r = env.get(TOKEN_A_LIVE, "/v1/clients").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let keys: Vec<String> = env
        .recorded()
        .iter()
        .map(|q| q.header_values("authorization").join(","))
        .collect();
    assert_eq!(keys, vec![KEY_A_TEST.to_string(), KEY_A_LIVE.to_string()]);
}

#[tokio::test]
async fn every_refusal_is_complycube_shaped_and_nothing_reaches_upstream() {
    let env = TestEnv::start().await;
    let bearer_b = format!("Bearer {KEY_B_TEST}");
    let big = format!(r#"{{"email":"{}"}}"#, "a".repeat(70 * 1024));
    let cases: Vec<(&str, Option<&str>, String, Option<String>, u16, &str)> = vec![
        ("GET", None, "/v1/clients".into(), None, 401, "unauthorized"),
        ("GET", Some("cgw_wrong"), "/v1/clients".into(), None, 401, "unauthorized"),
        ("GET", Some("Bearer cgw_wrong"), "/v1/clients".into(), None, 401, "unauthorized"),
        ("GET", Some(KEY_A_TEST), "/v1/clients".into(), None, 401, "unauthorized"),
        ("GET", Some(bearer_b.as_str()), "/v1/clients".into(), None, 401, "unauthorized"),
        ("POST", Some(TOKEN_A_READONLY), "/v1/clients".into(), Some(r#"{"type":"person","email":"x@y.z","personDetails":{"firstName":"A","lastName":"B"}}"#.into()), 403, "forbidden"),
        ("DELETE", Some(TOKEN_A_READONLY), "/v1/clients/abc".into(), None, 403, "forbidden"),
        ("GET", Some(TOKEN_A), "/v1/unknown".into(), None, 404, "route_not_found"),
        ("GET", Some(TOKEN_A), "/v2/clients".into(), None, 404, "route_not_found"),
        ("GET", Some(TOKEN_A), "/__sandbox/requests".into(), None, 404, "route_not_found"),
        ("PUT", Some(TOKEN_A), "/v1/clients/abc".into(), None, 405, "method_not_allowed"),
        ("GET", Some(TOKEN_A), "/v1/clients/abc%2F..%2Fx".into(), None, 400, "invalid_request"),
        ("GET", Some(TOKEN_A), "/v1/clients/abc%5Cx".into(), None, 400, "invalid_request"),
        ("GET", Some(TOKEN_A), "/v1/clients/a.b".into(), None, 400, "invalid_request"),
        ("POST", Some(TOKEN_A), "/v1/clients/abc".into(), Some(big), 413, "payload_too_large"),
        ("GET", Some(TOKEN_A), format!("/v1/clients?email={}", "x".repeat(5000)), None, 414, "uri_too_long"),
    ];
    for (m, tok, path, body, status, kind) in cases {
        let r = env.send(m, tok, &path, body.as_deref()).await;
        r.assert_error(status, kind);
        if status == 405 {
            assert_eq!(r.headers["allow"], "DELETE, GET, POST");
        }
    }
    // reqwest normalises dot segments client-side; send raw ones over TCP.
    for target in [
        "/v1/clients/./abc",
        "/v1/clients/../clients",
        "http://evil.example/v1/clients",
        "/v1//clients",
    ] {
        let status = env.raw(&format!("GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN_A}\r\nConnection: close\r\n\r\n")).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{target}: {status}");
    }
    assert_eq!(env.sandbox.faults().api_hits(), 0, "sandbox was reached");
    assert!(env.recorded().is_empty());
}

#[tokio::test]
async fn oversized_headers_are_refused_without_a_crash() {
    let env = TestEnv::start().await;
    let huge = "x".repeat(20 * 1024);
    let status = env.raw(&format!("GET /v1/clients HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN_A}\r\nX-Big: {huge}\r\nConnection: close\r\n\r\n")).await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let status = env
        .raw(&format!(
            "GET /v1/clients HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n"
        ))
        .await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    // the gateway still serves
    assert_eq!(env.get(TOKEN_A, "/v1/clients").await.status, 200);
    assert_eq!(env.sandbox.faults().api_hits(), 1);
}

#[tokio::test]
async fn a_caller_of_tenant_a_can_never_cause_tenant_bs_key_to_be_sent() {
    let env = TestEnv::start().await;
    let id_b = env.create_client(TOKEN_B).await;
    env.sandbox.clear_recorded();
    // Everything a caller of A might try: B's ids, tenant-ish headers, B's key.
    let attempts = [
        env.http
            .get(env.url(&format!("/v1/clients/{id_b}")))
            .header("authorization", TOKEN_A),
        env.http
            .get(env.url("/v1/clients"))
            .header("authorization", TOKEN_A)
            .header("x-tenant", "tenant-b"),
        env.http
            .get(env.url("/v1/clients"))
            .header("authorization", TOKEN_A)
            .header("x-api-key", KEY_B_TEST),
        env.http
            .get(env.url("/v1/clients?clientId=x"))
            .header("authorization", TOKEN_A)
            .header("cookie", "tenant=tenant-b"),
    ];
    for a in attempts {
        let r = Resp::from(a.send().await.unwrap()).await;
        assert_ne!(r.status, 500);
    }
    // A cannot see B's client: the sandbox partitions by key.
    let r = env.get(TOKEN_A, &format!("/v1/clients/{id_b}")).await;
    assert_eq!(r.status, 404);
    for q in env.recorded() {
        assert_eq!(
            q.header_values("authorization"),
            vec![KEY_A_TEST],
            "{}",
            q.path
        );
        assert!(q.headers.iter().all(|(_, v)| !v.contains("CANARYKEYB")));
    }
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged() {
    let env = TestEnv::start().await;
    let r = env
        .get(TOKEN_A, "/v1/clients/5f0000000000000000000000")
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json["type"], "resource_not_found");
    let id = env.create_client(TOKEN_A).await;
    let r = env
        .send("DELETE", Some(TOKEN_A), &format!("/v1/clients/{id}"), None)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.text, "");
}

#[tokio::test]
async fn check_config_refuses_missing_and_wrong_environment_keys_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("sandbox-ca.pem"), "");
    let base = config_text(
        dir.path(),
        "https://127.0.0.1:1/v1",
        &Opts::default(),
        "127.0.0.1:0",
    );
    let bin = env!("CARGO_BIN_EXE_cubegate");
    let run = |text: &str| {
        let p = dir.path().join("c.toml");
        write(&p, text);
        std::process::Command::new(bin)
            .args(["check-config", "--config"])
            .arg(&p)
            .env("CUBEGATE_TEST_UNSET", "")
            .output()
            .unwrap()
    };
    // a live_ key in the test slot
    write(&dir.path().join("wrong"), KEY_A_LIVE);
    let out = run(&base.replace(
        "test_key = \"file:a-test-key\"",
        "test_key = \"file:wrong\"",
    ));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("c.toml")
            && err.contains("tenants[0].test_key")
            && err.contains("wrong environment"),
        "{err}"
    );
    assert_no_canary("check-config error", &err);
    // a missing key reference
    let out = run(&base.replace(
        "test_key = \"file:a-test-key\"",
        "test_key = \"env:CUBEGATE_TEST_NOT_SET_ANYWHERE\"",
    ));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tenants[0].test_key") && err.contains("CUBEGATE_TEST_NOT_SET_ANYWHERE"),
        "{err}"
    );
    // a literal key instead of a reference
    let out = run(&base.replace(
        "test_key = \"file:a-test-key\"",
        &format!("test_key = \"{KEY_A_TEST}\""),
    ));
    assert_eq!(out.status.code(), Some(2));
    assert_no_canary("check-config error", &String::from_utf8_lossy(&out.stderr));
    // an unknown key
    let out = run(&format!("{base}\n[bogus]\nx = 1\n"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
    // and the good one passes, secrets redacted
    let out = run(&base.replace("ca_file = \"sandbox-ca.pem\"\nwebpki_roots = false", ""));
    let so = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{so}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(so.contains("file:a-test-key -> <redacted>"), "{so}");
    assert_no_canary("check-config summary", &so);
}

#[tokio::test]
async fn env_overrides_apply() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("sandbox-ca.pem"), "");
    let text = config_text(
        dir.path(),
        "https://127.0.0.1:1/v1",
        &Opts::default(),
        "127.0.0.1:0",
    )
    .replace("ca_file = \"sandbox-ca.pem\"\nwebpki_roots = false", "");
    let p = dir.path().join("c.toml");
    write(&p, &text);
    let mut env = std::collections::HashMap::new();
    env.insert(
        "CUBEGATE__UPSTREAM__RESPONSE_TIMEOUT_MS".to_string(),
        "1234".to_string(),
    );
    let s = cubegate::snapshot::load(
        &cubegate::config::ConfigSource::File(&p),
        &env,
        &cubegate::secret::ProcessEnv,
    )
    .unwrap();
    assert_eq!(s.upstream.response_timeout.as_millis(), 1234);
}

/// The shipped configs (the example and demo configs, the Kubernetes ConfigMap) must keep
/// parsing: unknown keys are errors, so a renamed setting would break them.
#[test]
fn shipped_configs_parse() {
    use cubegate::config::{ConfigSource, load_raw};
    let root = env!("CARGO_MANIFEST_DIR");
    let example = std::fs::read_to_string(format!("{root}/config/cubegate.example.toml")).unwrap();
    let demo = std::fs::read_to_string(format!("{root}/config/demo.toml")).unwrap();
    let cm = std::fs::read_to_string(format!("{root}/deploy/kubernetes/configmap.yaml")).unwrap();
    // The TOML block under `cubegate.toml: |`, de-indented by 4.
    let embedded: String = cm
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("cubegate.toml: |"))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    assert!(embedded.contains("[upstream]"), "{embedded}");
    for (name, toml) in [
        ("example", &example),
        ("demo", &demo),
        ("configmap", &embedded),
    ] {
        let raw = load_raw(&ConfigSource::Text { name, toml }, &Default::default());
        assert!(
            raw.is_ok(),
            "{name}: {}",
            raw.err().map(|e| e.to_string()).unwrap_or_default()
        );
    }
}
