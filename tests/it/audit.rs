//! Issue 5 through the running gateway: what the audit trail holds for each
//! kind of request, that it never holds a value or a key, that the real
//! `cubegate audit` CLI verifies and queries it, and that PII writes stop
//! (and non-PII reads go on) while the trail cannot be written.
//! Chain and tamper detection have unit tests in `src/audit/`.

use crate::common::*;
use serde_json::Value;

/// Sends a request with our own `X-Request-Id`.
pub async fn send_rid(
    env: &TestEnv,
    method: &str,
    token: &str,
    path: &str,
    body: Option<&str>,
    rid: &str,
) -> Resp {
    env.send_with(method, Some(token), path, body, &[("x-request-id", rid)])
        .await
}

fn by_rid(env: &TestEnv, rid: &str) -> Vec<Value> {
    with_rid(&env.audit_records(), rid)
        .into_iter()
        .cloned()
        .collect()
}

/// The records of one request, from records read once for many requests.
fn with_rid<'a>(records: &'a [Value], rid: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["caller_request_id"] == rid)
        .collect()
}

fn assert_common(r: &Value, rid: &str, caller: &str) {
    assert_eq!(r["v"], 1);
    assert!(r["seq"].as_u64().is_some_and(|s| s >= 1), "{r}");
    let t = r["time"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(t).is_ok(), "time {t}");
    assert_eq!(r["instance"], "test");
    assert_eq!(r["caller_request_id"], rid);
    assert_ne!(r["request_id"], rid, "the gateway's own id joins records");
    assert_eq!(r["caller"], caller);
    assert_eq!(r["tenant"], "tenant-a");
    assert_eq!(r["environment"], "test");
    assert_eq!(r["prev"].as_str().map(str::len), Some(64), "{r}");
}

#[tokio::test]
async fn audit_records_say_who_did_what_and_never_hold_a_value() {
    let env = TestEnv::start().await;
    let id = env.create_client(TOKEN_A).await;

    // A successful update.
    let upd = format!(
        r#"{{"email":"{PII_EMAIL}","personDetails":{{"lastName":"{PII_NAME}","dob":"{PII_DOB}"}}}}"#
    );
    let path = format!("/v1/clients/{id}");
    let r = send_rid(&env, "POST", TOKEN_A, &path, Some(&upd), "rid-update").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["x-request-id"], "rid-update");
    let recs = by_rid(&env, "rid-update");
    assert_eq!(recs.len(), 2, "{recs:?}");
    let (intent, outcome) = (&recs[0], &recs[1]);
    for rec in [intent, outcome] {
        assert_common(rec, "rid-update", "a-all");
        assert_eq!(rec["operation"], "clients.update");
        assert_eq!(rec["resource_ids"], serde_json::json!({"id": id}));
        assert_eq!(
            rec["fields"],
            serde_json::json!([
                "/email",
                "/personDetails",
                "/personDetails/lastName",
                "/personDetails/dob"
            ]),
        );
        assert_eq!(rec["stripped"], serde_json::json!([]));
        assert_eq!(rec["query_params"], serde_json::json!([]));
        assert_eq!(rec["decision"], "allowed");
        let fp = rec["key_fingerprint"].as_str().unwrap();
        assert_eq!(fp.len(), 16);
        assert!(!KEY_A_TEST.contains(fp) && !fp.contains("CANARY"));
        assert!(rec.get("reason").is_none(), "{rec}");
    }
    assert_eq!(intent["kind"], "intent");
    assert!(intent.get("status").is_none() && intent.get("latency_ms").is_none());
    assert_eq!(outcome["kind"], "outcome");
    assert_eq!(outcome["status"], 200);
    assert!(outcome["latency_ms"].as_u64().is_some());
    assert!(outcome["seq"].as_u64() > intent["seq"].as_u64());
    assert_eq!(outcome["key_fingerprint"], intent["key_fingerprint"]);

    // A stripped `type`.
    let r = send_rid(
        &env,
        "POST",
        TOKEN_A,
        &path,
        Some(r#"{"type":"company","mobile":"+44"}"#),
        "rid-strip",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let recs = by_rid(&env, "rid-strip");
    assert_eq!(recs.len(), 2);
    for rec in &recs {
        assert_common(rec, "rid-strip", "a-all");
        assert_eq!(rec["fields"], serde_json::json!(["/type", "/mobile"]));
        assert_eq!(rec["stripped"], serde_json::json!(["/type"]));
        assert_eq!(rec["decision"], "allowed");
    }
    assert_eq!(recs[1]["status"], 200);

    // A schema refusal: one security event, no intent.
    let bad = format!(r#"{{"email":"{PII_EMAIL}","personDetails":{{"dob":"{PII_NAME}"}}}}"#);
    let r = send_rid(&env, "POST", TOKEN_A, &path, Some(&bad), "rid-schema").await;
    r.assert_error(400, "invalid_request");
    let recs = by_rid(&env, "rid-schema");
    assert_eq!(recs.len(), 1, "{recs:?}");
    let ev = &recs[0];
    assert_common(ev, "rid-schema", "a-all");
    assert_eq!(ev["kind"], "event");
    assert_eq!(ev["decision"], "refused_validation");
    assert_eq!(ev["reason"], "invalid_request");
    assert_eq!(ev["status"], 400);
    assert_eq!(ev["operation"], "clients.update");
    assert_eq!(ev["resource_ids"]["id"], id.as_str());

    // A 401: an event without a caller.
    let r = send_rid(&env, "GET", "cgw_nobody", &path, None, "rid-401").await;
    r.assert_error(401, "unauthorized");
    let recs = by_rid(&env, "rid-401");
    assert_eq!(recs.len(), 1, "{recs:?}");
    let ev = &recs[0];
    assert_eq!(ev["kind"], "event");
    assert_eq!(ev["decision"], "refused_auth");
    assert_eq!(ev["reason"], "unauthorized");
    assert_eq!(ev["status"], 401);
    assert!(ev["caller"].is_null() && ev["tenant"].is_null(), "{ev}");
    assert!(ev.get("key_fingerprint").is_none());

    // A 429: the quota caller has a burst of one and does not wait.
    let a = send_rid(&env, "GET", TOKEN_A_QUOTA, &path, None, "rid-q1").await;
    let b = send_rid(&env, "GET", TOKEN_A_QUOTA, &path, None, "rid-q2").await;
    assert_eq!(a.status, 200, "{}", a.text);
    b.assert_error(429, "rate_limit_exceeded");
    let recs = by_rid(&env, "rid-q2");
    assert_eq!(recs.len(), 1, "{recs:?}");
    let ev = &recs[0];
    assert_common(ev, "rid-q2", "a-quota");
    assert_eq!(ev["kind"], "event");
    assert_eq!(ev["decision"], "refused_rate_limit");
    assert_eq!(ev["reason"], "rate_limit_exceeded");
    assert_eq!(ev["status"], 429);
    assert_eq!(ev["operation"], "clients.get");

    // An upstream 5xx: intent, then an outcome carrying the status.
    env.sandbox
        .faults()
        .set(cubegate::sandbox::FaultMode::Status {
            status: 500,
            retry_after: None,
        });
    let r = send_rid(
        &env,
        "POST",
        TOKEN_A,
        &path,
        Some(r#"{"mobile":"+1"}"#),
        "rid-5xx",
    )
    .await;
    env.sandbox.faults().clear();
    assert_eq!(r.status, 500, "{}", r.text);
    let recs = by_rid(&env, "rid-5xx");
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[0]["kind"], "intent");
    assert_eq!(recs[1]["kind"], "outcome");
    assert_eq!(recs[1]["decision"], "allowed");
    assert_eq!(recs[1]["status"], 500);

    // A PII read: one outcome. A list: parameter names only.
    let r = send_rid(&env, "GET", TOKEN_A, &path, None, "rid-read").await;
    assert_eq!(r.status, 200);
    let recs = by_rid(&env, "rid-read");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["kind"], "outcome");
    assert_eq!(recs[0]["operation"], "clients.get");
    assert_eq!(recs[0]["status"], 200);
    let q = format!("/v1/clients?email={PII_EMAIL}&joinedDate={PII_DOB}&page=1");
    let r = send_rid(&env, "GET", TOKEN_A, &q, None, "rid-list").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let recs = by_rid(&env, "rid-list");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(
        recs[0]["query_params"],
        serde_json::json!(["email", "joinedDate", "page"])
    );

    // The whole chain: each prev is the hash of the line before.
    let lines = env.audit().lines();
    assert_eq!(
        serde_json::from_str::<Value>(&lines[0]).unwrap()["prev"],
        cubegate::audit::genesis("test")
    );
    for w in lines.windows(2) {
        let next: Value = serde_json::from_str(&w[1]).unwrap();
        assert_eq!(next["prev"], cubegate::audit::line_hash(w[0].as_bytes()));
    }

    // No canary (PII, keys, tokens) anywhere in the audit directory.
    assert_no_canary("audit files", &env.audit_text());

    // The security team's CLI.
    assert_verifies(&env.audit_dir(), "at the end");
    let out = cli(
        &["audit", "query", "--client", &id, "--json"],
        &[&env.audit_dir()],
    );
    assert!(out.status.success());
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = rows
        .iter()
        .find(|r| r["caller_request_id"] == "rid-update")
        .unwrap();
    assert_eq!(row["status"], 200);
    assert_eq!(row["operation"], "clients.update");
    assert_eq!(row["caller"], "a-all");
    assert!(row["outcome_seq"].as_u64().is_some());
    assert!(
        rows.iter()
            .any(|r| r["caller_request_id"] == "rid-5xx" && r["status"] == 500)
    );
    // Every row is on the client: by its path id, or (the create) by the
    // id the answer gave.
    assert!(
        rows.iter().all(|r| r["resource_ids"]["id"] == id.as_str()
            || r["resource_ids"]["created"] == id.as_str())
    );
}

/// `hmac_fields`: intent and outcome hold the keyed digest of each
/// configured field's value (equal values, equal digests: "was this email
/// used before?" is answerable from the trail), never the value; a field the
/// body lacks gets none; a request the limiter refuses records no digest.
#[tokio::test]
async fn hmac_fields_hold_keyed_digests_and_a_rate_limited_request_none() {
    let env = TestEnv::with(Opts {
        audit_settings: r#"hmac_fields = ["/email", "/personDetails/dob", "/mobile"]"#.into(),
        ..Opts::default()
    })
    .await;
    let id = env.create_client(TOKEN_A).await;
    let path = format!("/v1/clients/{id}");
    let upd = format!(
        r#"{{"email":"{PII_EMAIL}","personDetails":{{"lastName":"{PII_NAME}","dob":"{PII_DOB}"}}}}"#
    );
    let digest = |v: &str| {
        serde_json::to_value(cubegate::audit::field_digest(
            FIELD_HMAC_KEY.as_bytes(),
            v.as_bytes(),
        ))
        .unwrap()
    };
    let want =
        serde_json::json!({"/email": digest(PII_EMAIL), "/personDetails/dob": digest(PII_DOB)});

    let r = send_rid(&env, "POST", TOKEN_A, &path, Some(&upd), "rid-h1").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let recs = by_rid(&env, "rid-h1");
    assert_eq!(recs.len(), 2, "{recs:?}");
    for rec in &recs {
        assert_eq!(rec["field_hmacs"], want, "{rec}");
    }

    // Five at once through the quota caller (1/s, burst 1, no wait): those
    // let through carry the same digests; those the limiter refuses, none.
    let send = |i: usize| {
        let (env, path, upd) = (&env, &path, &upd);
        async move {
            let rid = format!("rid-q{i}");
            let r = send_rid(env, "POST", TOKEN_A_QUOTA, path, Some(upd), &rid).await;
            (rid, r)
        }
    };
    let (r0, r1, r2, r3, r4) = tokio::join!(send(0), send(1), send(2), send(3), send(4));
    let results = [r0, r1, r2, r3, r4];
    let records = env.audit_records();
    let mut refused = 0;
    for (rid, r) in &results {
        let recs = with_rid(&records, rid);
        if r.status == 200 {
            assert_eq!(recs.len(), 2, "{recs:?}");
            for rec in recs {
                assert_eq!(rec["field_hmacs"], want, "{rec}");
            }
        } else {
            r.assert_error(429, "rate_limit_exceeded");
            refused += 1;
            assert_eq!(recs.len(), 1, "{recs:?}");
            assert_eq!(recs[0]["decision"], "refused_rate_limit");
            assert!(recs[0].get("field_hmacs").is_none(), "{}", recs[0]);
        }
    }
    assert!(refused >= 1, "the quota refused none of 5 requests at once");
    assert!(refused < 5, "the quota let none through");

    // Values and the HMAC key are canaries.
    assert_no_canary("audit files", &env.audit_text());
    assert_verifies(&env.audit_dir(), "after hmac_fields records");
}

async fn readyz(env: &TestEnv) -> u16 {
    env.readyz().await.0
}

#[tokio::test]
async fn an_unwritable_audit_dir_stops_pii_writes_only_and_recovers() {
    let env = TestEnv::start().await;
    let id = env.create_client(TOKEN_A).await;
    let path = format!("/v1/clients/{id}");
    assert_eq!(readyz(&env).await, 200);

    let frozen = cubegate::audit::testing::freeze_dir(&env.audit_dir())
        .expect("chattr +i must work on the test filesystem");
    let hits = env.sandbox.faults().api_hits();
    let body = format!(r#"{{"email":"{PII_EMAIL}"}}"#);
    let r = send_rid(&env, "POST", TOKEN_A, &path, Some(&body), "rid-frozen").await;
    r.assert_error(503, "audit_unavailable");
    assert_eq!(
        env.sandbox.faults().api_hits(),
        hits,
        "forwarded without an intent"
    );
    // Non-PII reads still work.
    let r = env.get(TOKEN_A, "/v1/accountInfo").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = env.get(TOKEN_A, "/v1/static/screeningLists").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        readyz(&env).await,
        503,
        "ready while the audit is unwritable"
    );

    frozen.thaw().unwrap();
    // Ready again without needing a request first (a load balancer sends
    // none to an unready replica).
    assert_eq!(
        readyz(&env).await,
        200,
        "still unready after the disk came back"
    );
    let r = send_rid(&env, "POST", TOKEN_A, &path, Some(&body), "rid-thawed").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(by_rid(&env, "rid-thawed").len(), 2);
    assert!(
        by_rid(&env, "rid-frozen")
            .iter()
            .all(|r| r["kind"] != "intent")
    );
    assert_verifies(&env.audit_dir(), "at the end");
}

/// With `fsync = false` each request's own task writes its records (no
/// writer thread in between): under concurrent updates from two tenants
/// every answered request already has its intent and outcome in the file,
/// in order, and the chain, with the checkpoints the writer thread wrote
/// meanwhile (every 5 records here), verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fsync_concurrent_requests_are_all_recorded_in_order() {
    let env = std::sync::Arc::new(
        TestEnv::with(Opts {
            audit_settings: "fsync = false".into(),
            ..Opts::default()
        })
        .await,
    );
    let a = env.create_client(TOKEN_A).await;
    let b = env.create_client(TOKEN_B).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (token, id) = if i % 2 == 0 {
            (TOKEN_A, &a)
        } else {
            (TOKEN_B, &b)
        };
        let (env, path, rid) = (
            env.clone(),
            format!("/v1/clients/{id}"),
            format!("nofsync-{i}"),
        );
        tasks.spawn(async move {
            let body = format!(r#"{{"email":"{PII_EMAIL}"}}"#);
            let r = send_rid(&env, "POST", token, &path, Some(&body), &rid).await;
            (rid, r.status)
        });
    }
    let mut rids = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (rid, status) = done.unwrap();
        assert_eq!(status, 200, "{rid}");
        rids.push(rid);
    }
    assert_eq!(rids.len(), 40);
    // Read at once: nothing here waits for a writer thread.
    let records = env.audit_records();
    for rid in &rids {
        let recs = with_rid(&records, rid);
        assert_eq!(recs.len(), 2, "{rid}: {recs:?}");
        assert_eq!(recs[0]["kind"], "intent");
        assert_eq!(recs[1]["kind"], "outcome");
        assert_eq!(recs[1]["status"], 200);
        assert!(recs[0]["seq"].as_u64() < recs[1]["seq"].as_u64());
    }
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "seq order in the file"
    );
    assert_eq!(env.gw.shared().audit().unwrap().stats().fsyncs, 0);
    assert_no_canary("audit files", &env.audit_text());
    assert_verifies(&env.audit_dir(), "at the end");
}
