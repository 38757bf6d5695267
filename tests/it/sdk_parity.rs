//! Issue 20, gateway half: what the official SDKs send is served the way
//! ComplyCube serves it. Undeclared fields are stripped (and reported) by
//! default, read-only model fields always; `reject` mode per operation and
//! per tenant keeps the old refusal; every SDK route exists; a bad enum in
//! the path or the body is a 400 naming it.

use crate::common::*;
use serde_json::json;

/// A tenant whose own setting refuses undeclared fields (appended to the
/// shared test config; the array of tenants may be extended later on).
const TOKEN_C: &str = "cgw_CANARYTOKENC0000000000000000000000000000000000000000000000000009";

fn tenant_c_rejects() -> String {
    let h = cubegate::secret::sha256_hex(TOKEN_C.as_bytes());
    format!(
        r#"
[[tenants]]
id = "tenant-c"
test_key = "file:b-test-key"
unknown_fields = "reject"

[[callers]]
id = "c-all"
token_sha256 = "{h}"
tenant = "tenant-c"
environment = "test"
operations = ["*"]
"#
    )
}

fn stripped_header(r: &Resp) -> Vec<String> {
    r.headers
        .get("x-cubegate-stripped")
        .map(|v| v.to_str().unwrap().split(", ").map(str::to_owned).collect())
        .unwrap_or_default()
}

fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn unknown_fields_on_a_client_update_are_stripped_named_counted_and_never_forwarded() {
    let env = TestEnv::start().await;
    let id = env.create_client(TOKEN_A).await;
    env.sandbox.clear_recorded();
    let body = json!({
        "email": "sdk.parity@example.com",
        "key1": "value1",
        "key2": {"nested": true},
        "personDetails": {"firstName": "Ann", "nickname": "A"},
        "metadata": {"free-form": "kept"}
    });
    let r = env
        .post(TOKEN_A, &format!("/v1/clients/{id}"), &body.to_string())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        stripped_header(&r),
        ["/key1", "/key2", "/personDetails/nickname"]
    );
    let rec = env.recorded();
    assert_eq!(rec.len(), 1);
    assert_eq!(
        rec[0].json().unwrap(),
        json!({
            "email": "sdk.parity@example.com",
            "personDetails": {"firstName": "Ann"},
            "metadata": {"free-form": "kept"}
        }),
        "the sandbox received none of the undeclared fields"
    );
    let intent = env
        .audit_records()
        .into_iter()
        .rfind(|r| r["kind"] == "intent" && r["operation"] == "clients.update")
        .unwrap();
    // The caller named them in its body; the trail shows where, never the
    // names (issue 18: keys the schema does not declare are the caller's).
    assert_eq!(
        intent["stripped"],
        json!(["/*", "/personDetails/*"]),
        "{intent}"
    );
    let m = env.metrics().await;
    let n = metric(
        &m,
        "cubegate_fields_stripped_total",
        "operation=\"clients.update\"",
    );
    assert!(n >= 3.0, "{n}");
}

#[tokio::test]
async fn a_webhook_update_with_the_whole_model_strips_the_read_only_fields() {
    let env = TestEnv::start().await;
    let created = env
        .post(
            TOKEN_A,
            "/v1/webhooks",
            r#"{"url":"https://hooks.example/cc","enabled":true,"events":["*"]}"#,
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_owned();
    env.sandbox.clear_recorded();
    // The PHP SDK's WebhookTest sends back what it was given.
    let model = json!({
        "id": id,
        "url": "https://hooks.example/cc2",
        "enabled": false,
        "events": ["check.completed"],
        "secret": created.json["secret"],
        "createdAt": "2024-01-01T00:00:00.000Z",
        "updatedAt": "2024-01-01T00:00:00.000Z"
    });
    let r = env
        .post(TOKEN_A, &format!("/v1/webhooks/{id}"), &model.to_string())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        stripped_header(&r),
        ["/id", "/secret", "/createdAt", "/updatedAt"]
    );
    assert_eq!(r.json["url"], "https://hooks.example/cc2");
    assert_eq!(
        env.recorded()[0].json().unwrap(),
        json!({"url": "https://hooks.example/cc2", "enabled": false, "events": ["check.completed"]})
    );
}

#[tokio::test]
async fn post_live_videos_routes_to_the_upstream() {
    let env = TestEnv::start().await;
    let id = env.create_client(TOKEN_A).await;
    env.sandbox.clear_recorded();
    let r = env
        .post(
            TOKEN_A,
            "/v1/liveVideos",
            &format!(r#"{{"clientId":"{id}","language":"en"}}"#),
        )
        .await;
    assert_ne!(r.status, 405, "{}", r.text);
    assert_ne!(r.json["type"], "route_not_found", "{}", r.text);
    let rec = env.recorded();
    let sent = rec
        .iter()
        .find(|q| q.method == "POST" && q.path == "/v1/liveVideos")
        .expect("the create went upstream");
    assert_eq!(sent.json().unwrap(), json!({"clientId": id}));
    assert_eq!(stripped_header(&r), ["/language"]);
    // Its schema still applies.
    let r = env.post(TOKEN_A, "/v1/liveVideos", "{}").await;
    r.assert_error(400, "invalid_request");
    assert_eq!(r.json["param"], "clientId", "{}", r.text);
}

#[tokio::test]
async fn an_invalid_document_side_is_a_400_naming_the_segment() {
    let env = TestEnv::start().await;
    let hits = env.sandbox.faults().api_hits();
    let upload = r#"{"fileName":"a.jpg","data":"QUJD"}"#;
    for (method, path, body) in [
        ("GET", "/v1/documents/doc1/download/INVALIDSIDE", ""),
        ("POST", "/v1/documents/doc1/upload/INVALIDSIDE", upload),
        ("DELETE", "/v1/documents/doc1/INVALIDSIDE", ""),
    ] {
        let mut rb = env
            .http
            .request(method.parse().unwrap(), env.url(path))
            .header("authorization", TOKEN_A);
        if !body.is_empty() {
            rb = rb
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let r = Resp::from(rb.send().await.unwrap()).await;
        r.assert_error(400, "invalid_request");
        assert_eq!(r.json["param"], "side", "{method} {path}: {}", r.text);
        let msg = r.json["message"].as_str().unwrap();
        assert!(msg.contains("front") && msg.contains("back"), "{msg}");
        assert!(!msg.contains("INVALIDSIDE"), "{msg}");
    }
    assert_eq!(env.sandbox.faults().api_hits(), hits, "nothing forwarded");
    let last = env.audit_records().pop().unwrap();
    assert_eq!(last["decision"], "refused_route", "{last}");
}

#[tokio::test]
async fn reject_mode_for_one_operation_refuses_unknown_fields_there_only() {
    let env = TestEnv::with(Opts {
        extra: "[validation]\nunknown_fields_by_operation = { \"clients.update\" = \"reject\" }\n"
            .into(),
        ..Opts::default()
    })
    .await;
    let id = env.create_client(TOKEN_A).await;
    let hits = env.sandbox.faults().api_hits();
    let r = env
        .post(
            TOKEN_A,
            &format!("/v1/clients/{id}"),
            r#"{"email":"a@example.com","key1":"value1"}"#,
        )
        .await;
    r.assert_error(400, "invalid_request");
    assert_eq!(r.json["param"], "key1", "{}", r.text);
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("unexpected field")
    );
    assert_eq!(env.sandbox.faults().api_hits(), hits, "nothing forwarded");
    // `type` keeps its own setting (policy.builtin_action, strip by default).
    let r = env
        .post(
            TOKEN_A,
            &format!("/v1/clients/{id}"),
            r#"{"type":"company","email":"a@example.com"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(stripped_header(&r), ["/type"]);
    // Other operations keep the default.
    let r = env
        .post(
            TOKEN_A,
            "/v1/addresses",
            &format!(
                r#"{{"clientId":"{id}","line":"1 Main St","city":"X","country":"GB","key1":1}}"#
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(stripped_header(&r), ["/key1"]);
}

#[tokio::test]
async fn reject_mode_for_one_tenant_refuses_unknown_fields_for_it_only() {
    let env = TestEnv::with(Opts {
        extra: tenant_c_rejects(),
        ..Opts::default()
    })
    .await;
    let body = r#"{"email":"a@example.com","key1":"value1"}"#;
    let id_c = env.create_client(TOKEN_C).await;
    let hits = env.sandbox.faults().api_hits();
    let r = env
        .post(TOKEN_C, &format!("/v1/clients/{id_c}"), body)
        .await;
    r.assert_error(400, "invalid_request");
    assert_eq!(r.json["param"], "key1", "{}", r.text);
    assert_eq!(env.sandbox.faults().api_hits(), hits, "nothing forwarded");
    // Read-only fields are not unknown: stripped even in reject mode.
    let r = env
        .post(
            TOKEN_C,
            &format!("/v1/clients/{id_c}"),
            &format!(r#"{{"id":"{id_c}","email":"b@example.com","updatedAt":"x"}}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(stripped_header(&r), ["/id", "/updatedAt"]);
    // Tenant A keeps the default.
    let id_a = env.create_client(TOKEN_A).await;
    let r = env
        .post(TOKEN_A, &format!("/v1/clients/{id_a}"), body)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(stripped_header(&r), ["/key1"]);
}

#[tokio::test]
async fn an_invalid_check_type_is_a_400_naming_type() {
    let env = TestEnv::start().await;
    let id = env.create_client(TOKEN_A).await;
    let hits = env.sandbox.faults().api_hits();
    let r = env
        .post(
            TOKEN_A,
            "/v1/checks",
            &format!(r#"{{"clientId":"{id}","type":"standard_screening_chek"}}"#),
        )
        .await;
    r.assert_error(400, "invalid_request");
    assert_eq!(r.json["param"], "type", "{}", r.text);
    let msg = r.json["message"].as_str().unwrap();
    assert!(msg.contains("standard_screening_check"), "{msg}");
    assert_eq!(env.sandbox.faults().api_hits(), hits, "nothing forwarded");
    let r = env
        .post(
            TOKEN_A,
            "/v1/checks",
            &format!(r#"{{"clientId":"{id}","type":"standard_screening_check"}}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}
