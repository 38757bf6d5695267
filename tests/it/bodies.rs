//! Issue 3 through the running gateway: strict body reading, field policy,
//! schema refusals, re-serialised forwarding, shadow mode, list queries.
//! The parser, policy and schemas have their own unit tests; these prove
//! what a caller sees and what ComplyCube (the sandbox) receives.

use crate::common::*;
use serde_json::{Value, json};

/// Sends `body` as raw bytes with exactly the given headers (besides the
/// token), so tests can send wrong content types and invalid UTF-8.
async fn send_bytes(
    env: &TestEnv,
    token: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Resp {
    let mut rb = env
        .http
        .post(env.url(path))
        .header("authorization", token)
        .body(body);
    for (n, v) in headers {
        rb = rb.header(*n, *v);
    }
    Resp::from(rb.send().await.unwrap()).await
}

const JSON: &[(&str, &str)] = &[("content-type", "application/json")];

#[tokio::test]
async fn type_on_update_is_stripped_for_a_and_refused_for_b_and_duplicates_never_pass() {
    let env = TestEnv::start().await;
    let id = env.create_client(TOKEN_A).await;
    env.sandbox.clear_recorded();

    // Tenant A: stripped, reported, the rest forwarded.
    let r = env
        .post(
            TOKEN_A,
            &format!("/v1/clients/{id}"),
            r#"{"type":"company","email":"new.a@example.com"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["x-cubegate-stripped"], "/type");
    let rec = env.recorded();
    assert_eq!(rec.len(), 1);
    assert_eq!(
        rec[0].json().unwrap(),
        json!({"email": "new.a@example.com"})
    );
    let g = env.get(TOKEN_A, &format!("/v1/clients/{id}")).await;
    assert_eq!(g.json["type"], "person", "{}", g.text);
    assert_eq!(g.json["email"], "new.a@example.com");

    // Tenant B rejects it: 400 naming the field, nothing forwarded.
    let id_b = env.create_client(TOKEN_B).await;
    let hits = env.sandbox.faults().api_hits();
    let r = env
        .post(
            TOKEN_B,
            &format!("/v1/clients/{id_b}"),
            &format!(r#"{{"type":"company","email":"{PII_EMAIL}"}}"#),
        )
        .await;
    r.assert_error(400, "invalid_request");
    assert_eq!(r.json["param"], "type", "{}", r.text);
    assert!(r.headers.get("x-cubegate-stripped").is_none());
    assert_eq!(
        env.sandbox.faults().api_hits(),
        hits,
        "B's body was forwarded"
    );

    // Duplicates, plain and escaped, for both tenants: refused before policy.
    for (tok, cid) in [(TOKEN_A, &id), (TOKEN_B, &id_b)] {
        for body in [
            r#"{"type":"person","type":"company"}"#,
            r#"{"type":"person","\u0074ype":"company"}"#,
            r#"{"email":"a@b.c","\u0065mail":"c@d.e"}"#,
        ] {
            let r = env.post(tok, &format!("/v1/clients/{cid}"), body).await;
            r.assert_error(400, "invalid_request");
            assert!(!r.text.contains("company"), "{}", r.text);
        }
    }
    assert_eq!(
        env.sandbox.faults().api_hits(),
        hits,
        "a duplicate was forwarded"
    );
}

#[tokio::test]
async fn every_strict_reading_failure_is_refused_without_forwarding_or_echo() {
    let env = TestEnv::start().await;
    let id = env.create_client(TOKEN_A).await;
    let path = format!("/v1/clients/{id}");
    let good = format!(r#"{{"email":"{PII_EMAIL}"}}"#).into_bytes();
    let with = |prefix: &str, suffix: &[u8]| {
        let mut b =
            format!(r#"{{"email":"{PII_EMAIL}","lastName":"{PII_NAME}{prefix}"#).into_bytes();
        b.extend_from_slice(suffix);
        b
    };
    let deep = {
        let mut s = String::new();
        for _ in 0..40 {
            s.push_str(r#"{"a":"#);
        }
        s.push_str(&format!("\"{PII_NAME}\""));
        s.push_str(&"}".repeat(40));
        s.into_bytes()
    };
    let big = format!(
        r#"{{"email":"{PII_EMAIL}","x":"{}"}}"#,
        "a".repeat(65 * 1024)
    )
    .into_bytes();
    let number = |n: &str| format!(r#"{{"email":"{PII_EMAIL}","n":{n}}}"#).into_bytes();
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "text/plain",
            vec![("content-type", "text/plain")],
            good.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            "form",
            vec![("content-type", "application/x-www-form-urlencoded")],
            good.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            "no content-type",
            vec![],
            good.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            "gzip",
            vec![
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            good.clone(),
            415,
            "unsupported_media_type",
        ),
        ("over 64 KiB", JSON.to_vec(), big, 413, "payload_too_large"),
        (
            "invalid UTF-8",
            JSON.to_vec(),
            with("\u{e9}", b"\xff\xfe\"}"),
            400,
            "invalid_request",
        ),
        (
            "lone surrogate",
            JSON.to_vec(),
            with("\\ud800", b"\"}"),
            400,
            "invalid_request",
        ),
        ("depth 40", JSON.to_vec(), deep, 400, "invalid_request"),
        (
            "1e400",
            JSON.to_vec(),
            number("1e400"),
            400,
            "invalid_request",
        ),
        (
            "1e-400",
            JSON.to_vec(),
            number("1e-400"),
            400,
            "invalid_request",
        ),
        (
            "2^53+1",
            JSON.to_vec(),
            number("9007199254740993"),
            400,
            "invalid_request",
        ),
        (
            "trailing garbage",
            JSON.to_vec(),
            with("\"} ", format!("{{\"{PII_NAME}\":1}}").as_bytes()),
            400,
            "invalid_request",
        ),
        ("empty", JSON.to_vec(), Vec::new(), 400, "invalid_request"),
    ];
    let hits = env.sandbox.faults().api_hits();
    for (what, headers, body, status, kind) in cases {
        let r = send_bytes(&env, TOKEN_A, &path, &headers, body).await;
        assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text);
        r.assert_error(status, kind);
        assert_no_canary(what, &r.text);
        for h in r.headers.values() {
            assert_no_canary(what, &String::from_utf8_lossy(h.as_bytes()));
        }
        assert_eq!(
            env.sandbox.faults().api_hits(),
            hits,
            "{what} was forwarded"
        );
    }
    // The same route accepts the good body, so the refusals were about the bytes.
    let r = send_bytes(&env, TOKEN_A, &path, JSON, good).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn the_upload_route_takes_a_five_megabyte_image() {
    let env = TestEnv::start().await;
    let id = env.create_client(TOKEN_A).await;
    let r = env
        .post(
            TOKEN_A,
            "/v1/documents",
            &format!(r#"{{"clientId":"{id}","type":"passport"}}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let doc = r.json["id"].as_str().unwrap().to_string();
    // 5 MB of base64 (what a ~3.7 MB JPEG becomes).
    let data = "QUJD".repeat(5 * 1024 * 1024 / 4);
    let body = format!(r#"{{"fileName":"front.jpg","data":"{data}"}}"#);
    assert!(body.len() > 5 * 1024 * 1024);
    let r = env
        .post(TOKEN_A, &format!("/v1/documents/{doc}/upload/front"), &body)
        .await;
    assert_eq!(r.status, 200, "{}", &r.text[..r.text.len().min(300)]);
    let last = env.recorded().pop().unwrap();
    assert_eq!(last.body.len(), body.len(), "forwarded whole and unchanged");
    // The same body on a normal route is over its cap.
    let r = env.post(TOKEN_A, &format!("/v1/clients/{id}"), &body).await;
    r.assert_error(413, "payload_too_large");
}

#[tokio::test]
async fn a_schema_violation_names_the_field_and_never_the_value() {
    let env = TestEnv::start().await;
    let id = env.create_client(TOKEN_A).await;
    let hits = env.sandbox.faults().api_hits();
    let body = format!(
        r#"{{"email":"{PII_EMAIL}","personDetails":{{"lastName":"{PII_NAME}","dob":"{PII_NAME}","nationality":"XX"}},"metadata":{{"k":5}}}}"#
    );
    let r = env.post(TOKEN_A, &format!("/v1/clients/{id}"), &body).await;
    r.assert_error(400, "invalid_request");
    let param = r.json["param"].as_str().unwrap();
    assert!(
        [
            "personDetails.dob",
            "personDetails.nationality",
            "metadata.k"
        ]
        .contains(&param),
        "{}",
        r.text
    );
    let errors = r.json["errors"].as_array().unwrap();
    let paths: Vec<&str> = errors.iter().map(|e| e["path"].as_str().unwrap()).collect();
    for p in [
        "/personDetails/dob",
        "/personDetails/nationality",
        "/metadata/k",
    ] {
        assert!(paths.contains(&p), "{p} missing: {}", r.text);
    }
    for e in errors {
        assert!(e["rule"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
        assert!(e["message"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
    }
    assert!(!r.text.contains("XX"), "value echoed: {}", r.text);
    assert_eq!(env.sandbox.faults().api_hits(), hits);
}

#[tokio::test]
async fn the_sandbox_receives_the_checked_value_re_serialised() {
    let env = TestEnv::start().await;
    let id = env.create_client(TOKEN_A).await;
    env.sandbox.clear_recorded();
    let body = "{ \"personDetails\" : {\n \"firstName\" : \"\\u0041nn\" ,\t\"lastName\":\"L\\u00e9a\\/x\" } ,\r\n\"email\": \"a@b.c\" }  \n";
    let r = env.post(TOKEN_A, &format!("/v1/clients/{id}"), body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let rec = env.recorded();
    let got = &rec[0];
    let text = std::str::from_utf8(&got.body).unwrap();
    let expected =
        json!({"personDetails": {"firstName": "Ann", "lastName": "Léa/x"}, "email": "a@b.c"});
    assert_eq!(got.json().unwrap(), expected);
    assert_eq!(
        text,
        serde_json::to_string(&expected).unwrap(),
        "compact JSON"
    );
    assert_eq!(
        got.header_values("content-length"),
        vec![got.body.len().to_string().as_str()]
    );
    assert_eq!(got.header_values("content-type"), vec!["application/json"]);
}

/// A valid `clients.update` body, generated; `type` may be added (and must
/// be stripped).
#[derive(Clone, Debug)]
struct UpdateBody(Value);

impl quickcheck::Arbitrary for UpdateBody {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        let s = |g: &mut quickcheck::Gen| String::arbitrary(g);
        let mut o = serde_json::Map::new();
        for k in ["email", "mobile", "externalId"] {
            if bool::arbitrary(g) {
                o.insert(k.into(), Value::String(s(g)));
            }
        }
        if bool::arbitrary(g) {
            let mut p = serde_json::Map::new();
            for k in ["firstName", "lastName"] {
                if bool::arbitrary(g) {
                    p.insert(k.into(), Value::String(s(g)));
                }
            }
            if bool::arbitrary(g) {
                let y = 1900 + u32::arbitrary(g) % 130;
                let m = 1 + u32::arbitrary(g) % 12;
                let d = 1 + u32::arbitrary(g) % 28;
                p.insert("dob".into(), Value::String(format!("{y:04}-{m:02}-{d:02}")));
            }
            if bool::arbitrary(g) {
                let c = *g.choose(&["GB", "FR", "US", "DE", "JP", "BR"]).unwrap();
                p.insert("nationality".into(), Value::String(c.into()));
            }
            o.insert("personDetails".into(), Value::Object(p));
        }
        if bool::arbitrary(g) {
            let mut m = serde_json::Map::new();
            for _ in 0..usize::arbitrary(g) % 21 {
                let k: String = s(g).chars().take(40).collect();
                let v: String = s(g).chars().take(500).collect();
                m.insert(k, Value::String(v));
            }
            o.insert("metadata".into(), Value::Object(m));
        }
        if bool::arbitrary(g) {
            o.insert("type".into(), Value::String("company".into()));
        }
        UpdateBody(Value::Object(o))
    }
}

struct PropEnv {
    rt: tokio::runtime::Runtime,
    env: TestEnv,
    client: String,
}

thread_local! {
    // quickcheck takes plain `fn`s; the gateway lives here for the run.
    static PROP: std::cell::RefCell<Option<PropEnv>> = const { std::cell::RefCell::new(None) };
}

fn forwarded_is_generated_minus_type(b: UpdateBody) -> bool {
    PROP.with(|p| {
        let p = p.borrow();
        let p = p.as_ref().unwrap();
        let text = serde_json::to_string(&b.0).unwrap();
        let r = p.rt.block_on(
            p.env
                .post(TOKEN_A, &format!("/v1/clients/{}", p.client), &text),
        );
        if r.status != 200 {
            eprintln!("status {} for {text}: {}", r.status, r.text);
            return false;
        }
        let mut expected = b.0.clone();
        let had_type = expected.as_object_mut().unwrap().remove("type").is_some();
        let stripped = r
            .headers
            .get("x-cubegate-stripped")
            .map(|v| v.to_str().unwrap().to_string());
        let got = p.env.recorded().last().and_then(|q| q.json());
        got == Some(expected) && stripped == had_type.then(|| "/type".to_string())
    })
}

#[test]
fn property_forwarded_bytes_are_the_validated_value_minus_stripped_fields() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let env = rt.block_on(TestEnv::start());
    let client = rt.block_on(env.create_client(TOKEN_A));
    PROP.with(|p| *p.borrow_mut() = Some(PropEnv { rt, env, client }));
    quickcheck::QuickCheck::new()
        .tests(40)
        .max_tests(400)
        .quickcheck(forwarded_is_generated_minus_type as fn(UpdateBody) -> bool);
    if let Some(p) = PROP.with(|p| p.borrow_mut().take()) {
        let PropEnv { rt, env, .. } = p;
        rt.block_on(async move { drop(env) });
    }
}

#[tokio::test]
async fn shadow_mode_forwards_an_invalid_create_and_reports_it() {
    let env = TestEnv::with(Opts {
        extra: "[validation]\nshadow = [\"clients.create\"]\n".into(),
        ..Opts::default()
    })
    .await;
    let labels = [("operation", "clients.create"), ("mode", "shadow")];
    let before = metric_value(
        &env.metrics().await,
        "cubegate_validation_refusals_total",
        &labels,
    );
    let hits = env.sandbox.faults().api_hits();
    // Invalid for the schema (bad nationality), fine for the sandbox.
    let r = env
        .send(
            "POST",
            Some(TOKEN_A),
            "/v1/clients",
            Some(r#"{"type":"person","email":"s@example.com","personDetails":{"firstName":"A","lastName":"B","nationality":"XX"}}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(env.sandbox.faults().api_hits(), hits + 1);
    let after = metric_value(
        &env.metrics().await,
        "cubegate_validation_refusals_total",
        &labels,
    );
    assert!(after >= before + 1.0, "{before} -> {after}");
    let rid = r.headers["x-request-id"].to_str().unwrap();
    let recs: Vec<Value> = env
        .audit_records()
        .into_iter()
        .filter(|r| r["request_id"] == rid)
        .collect();
    assert!(!recs.is_empty());
    assert!(
        recs.iter().any(|r| r["kind"] == "outcome"
            && r["reason"] == "shadow_validation_failure"
            && r["decision"] == "allowed"
            && r["status"] == 200),
        "{recs:?}"
    );
    // Not in shadow: update stays enforced.
    let id = r.json["id"].as_str().unwrap();
    let r = env
        .post(
            TOKEN_A,
            &format!("/v1/clients/{id}"),
            r#"{"personDetails":{"nationality":"XX"}}"#,
        )
        .await;
    r.assert_error(400, "invalid_request");
}

#[tokio::test]
async fn list_queries_pass_only_documented_parameters() {
    let env = TestEnv::start().await;
    let hits = env.sandbox.faults().api_hits();
    for (q, param) in [
        ("?bogus=1", "bogus"),
        ("?page=0", "page"),
        ("?pageSize=1001", "pageSize"),
        ("?pageSize=0", "pageSize"),
        (
            &format!("?email={PII_EMAIL}&password=x") as &str,
            "password",
        ),
    ] {
        let r = env.get(TOKEN_A, &format!("/v1/clients{q}")).await;
        r.assert_error(400, "invalid_request");
        assert_eq!(r.json["param"], param, "{q}: {}", r.text);
    }
    assert_eq!(env.sandbox.faults().api_hits(), hits);
    env.sandbox.clear_recorded();
    let q = "email=a%40b.c&type=person&page=2&pageSize=1000&metadata.crm=x";
    let r = env.get(TOKEN_A, &format!("/v1/clients?{q}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let listed = env
        .audit_records()
        .into_iter()
        .rfind(|r| r["operation"] == "clients.list")
        .unwrap();
    assert!(lists(&listed, "query_params", "metadata"), "{listed}");
    assert!(
        !env.audit_text().contains("crm"),
        "a metadata filter key in the trail"
    );
    let rec = env.recorded();
    assert_eq!(rec[0].path, "/v1/clients");
    assert_eq!(rec[0].query.as_deref(), Some(q));
}

#[tokio::test]
async fn configured_rules_strip_fields_also_inside_arrays() {
    let env = TestEnv::with(Opts {
        extra: r#"
[[policy.rules]]
operation = "clients.*"
pointer = "/metadata/internal"
action = "strip"

[[policy.rules]]
operation = "customLists.addRecord"
pointer = "/names/*/middleName"
"#
        .into(),
        ..Opts::default()
    })
    .await;
    let id = env.create_client(TOKEN_A).await;
    env.sandbox.clear_recorded();
    let r = env
        .post(
            TOKEN_A,
            &format!("/v1/clients/{id}"),
            r#"{"type":"person","metadata":{"internal":"secret-note","crm":"7"}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let stripped = r.headers["x-cubegate-stripped"].to_str().unwrap();
    // The header, like the trail, names the free-form object, never the
    // caller-chosen key below it (issue 19).
    assert!(
        stripped.contains("/metadata") && stripped.contains("/type"),
        "{stripped}"
    );
    assert!(!stripped.contains("internal"), "{stripped}");
    assert_eq!(
        env.recorded()[0].json().unwrap(),
        json!({"metadata": {"crm": "7"}})
    );
    // The trail says metadata was sent and stripped, never which keys (the
    // caller chose them; they may be personal data).
    let intent = env
        .audit_records()
        .into_iter()
        .rfind(|r| r["kind"] == "intent" && r["operation"] == "clients.update")
        .unwrap();
    assert!(lists(&intent, "stripped", "/metadata/*"), "{intent}");
    assert!(lists(&intent, "fields", "/metadata"), "{intent}");
    for key in ["internal", "crm"] {
        assert!(
            !env.audit_text().contains(key),
            "metadata key {key} in the audit trail"
        );
    }

    let r = env
        .post(
            TOKEN_A,
            "/v1/customLists/5f0000000000000000000001/records",
            r#"{"entityType":"person","names":[
                {"firstName":"A","middleName":"M1","lastName":"B"},
                {"firstName":"C","lastName":"D","type":"alias"},
                {"firstName":"E","middleName":"M3","lastName":"F"}]}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let stripped = r.headers["x-cubegate-stripped"].to_str().unwrap();
    assert!(
        stripped.contains("/names/0/middleName") && stripped.contains("/names/2/middleName"),
        "{stripped}"
    );
    let sent = env.recorded().last().unwrap().json().unwrap();
    assert_eq!(
        sent["names"],
        json!([
            {"firstName":"A","lastName":"B"},
            {"firstName":"C","lastName":"D","type":"alias"},
            {"firstName":"E","lastName":"F"}
        ])
    );
}

/// Whether the audit record's array field `field` holds the string `item`.
fn lists(record: &serde_json::Value, field: &str, item: &str) -> bool {
    record[field]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == item))
}
