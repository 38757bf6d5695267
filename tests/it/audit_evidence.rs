//! Issue 18 through the running gateway: the audit trail as evidence. A
//! hostile body cannot make a record longer than the bound, caller-chosen
//! keys and request ids never become part of the trail's structure, and
//! `audit query --client/--resource` follows the links a create records.
//! Each runs with fsync on and off.

use std::path::Path;

use crate::common::*;
use serde_json::Value;

/// The default bound on one audit line.
const MAX_RECORD: usize = 4096;

/// The JSON size limits are raised out of the way: by default the parser
/// already refuses the amplification body (its 32k-element array), and
/// these tests check the record bound for bodies that get past it.
fn opts(fsync: bool) -> Opts {
    Opts {
        audit_settings: format!("fsync = {fsync}\n"),
        extra: "[body]\nmax_array_len = 100000\nmax_json_values = 100000\n".into(),
        ..Opts::default()
    }
}

/// The amplification body of issue 18: three 60-char caller keys deep, then
/// as many zeros as make it 65,529 bytes (the size the issue measured).
/// `email` is the issue's `"a@b.c"` (the unknown `zz` is stripped and the
/// update goes through) or a number (refused by the schema).
pub fn amplification_body(email: &str) -> String {
    let key = |c: char| format!("Zyxamp{}", c.to_string().repeat(54));
    let with = |n: usize| {
        let zeros = vec!["0"; n].join(",");
        format!(
            r#"{{"email":{email},"zz":{{"{}":{{"{}":{{"{}":[{zeros}]}}}}}}}}"#,
            key('a'),
            key('b'),
            key('c')
        )
    };
    let overhead = with(1).len() - 1;
    with((65_529 - overhead).div_ceil(2))
}

fn longest_line(env: &TestEnv) -> usize {
    env.audit()
        .lines()
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn an_amplification_body_gives_a_record_under_the_bound() {
    for fsync in [true, false] {
        let env = TestEnv::with(opts(fsync)).await;
        let id = env.create_client(TOKEN_A).await;
        // Accepted (the undeclared `zz` stripped: an intent and an
        // outcome) and refused (one event): every record under the bound.
        for (email, status) in [(r#""a@b.c""#, 200), ("0", 400)] {
            let body = amplification_body(email);
            assert!((65_000..=65_536).contains(&body.len()), "{}", body.len());
            let r = env.post(TOKEN_A, &format!("/v1/clients/{id}"), &body).await;
            assert_eq!(r.status, status, "fsync {fsync}: {}", r.text);
            let rec = env
                .audit_records()
                .into_iter()
                .rfind(|r| r["operation"] == "clients.update")
                .unwrap();
            assert_eq!(rec["truncated"], true, "{rec}");
            let total = rec["fields_total"].as_u64().unwrap();
            assert!((32_650..32_670).contains(&total), "{rec}");
            assert_eq!(rec["fields_depth"], 5, "{rec}");
        }
        let longest = longest_line(&env);
        assert!(longest <= MAX_RECORD, "fsync {fsync}");
        eprintln!("amplification records (fsync {fsync}): longest line {longest} bytes");
        assert!(
            !env.audit_text().contains("Zyxamp"),
            "a caller key in the trail"
        );
        assert_verifies(&env.audit_dir(), "after the amplification body");
    }
}

#[tokio::test]
async fn caller_chosen_keys_never_reach_the_trail() {
    for fsync in [true, false] {
        let env = TestEnv::with(opts(fsync)).await;
        let id = env.create_client(TOKEN_A).await;
        let check = format!(
            r#"{{"clientId":"{id}","type":"standard_screening_check","options":{{"Zyxkeyname":1}}}}"#
        );
        let r = env.post(TOKEN_A, "/v1/checks", &check).await;
        assert!(r.status.is_success() || r.status == 400, "{}", r.text);
        // Accepted: metadata keys are free, the unknown key is stripped.
        let upd = r#"{"metadata":{"Zyxmetakey":"v"},"Zyxtopkey":{"Zyxinner":[1]}}"#;
        let r = env.post(TOKEN_A, &format!("/v1/clients/{id}"), upd).await;
        assert_eq!(r.status, 200, "{}", r.text);
        // Refused by the schema.
        let bad = r#"{"email":0,"Zyxbadkey":{"Zyxinner":[1]}}"#;
        let r = env.post(TOKEN_A, &format!("/v1/clients/{id}"), bad).await;
        assert_eq!(r.status, 400, "{}", r.text);
        let text = env.audit_text();
        assert!(
            !text.contains("Zyx"),
            "fsync {fsync}: a caller key in the trail"
        );
        let records = env.audit_records();
        let check = records
            .iter()
            .find(|r| r["operation"] == "checks.create")
            .unwrap();
        let fields: Vec<&str> = check["fields"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(fields.contains(&"/options/*"), "{fields:?}");
        assert!(fields.contains(&"/clientId"), "{fields:?}");
        assert_eq!(check["resource_ids"]["clientId"], id.as_str(), "{check}");
    }
}

/// The records with this caller request id.
fn by_caller_rid(env: &TestEnv, rid: &str) -> Vec<Value> {
    env.audit_records()
        .into_iter()
        .filter(|r| r["caller_request_id"] == rid)
        .collect()
}

#[tokio::test]
async fn the_callers_request_id_is_kept_but_never_joins() {
    for fsync in [true, false] {
        let env = TestEnv::with(opts(fsync)).await;
        let id = env.create_client(TOKEN_A).await;
        let path = format!("/v1/clients/{id}");
        let canary = "canary-rid-5e1d";
        let r = env
            .conn
            .send_with(
                "POST",
                Some(TOKEN_A),
                &path,
                Some(r#"{"mobile":"+44"}"#),
                &[("x-request-id", canary)],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.headers["x-request-id"], canary, "echoed as before");
        let recs = by_caller_rid(&env, canary);
        assert_eq!(recs.len(), 2, "{recs:?}");
        assert_eq!(recs[0]["request_id"], recs[1]["request_id"]);
        assert!(
            env.audit_records()
                .iter()
                .all(|r| r["request_id"] != canary),
            "the caller's id became a join key"
        );

        // Two concurrent requests with the same caller id.
        let body = Some(r#"{"mobile":"+45"}"#);
        let hdr = [("x-request-id", "same-rid")];
        let (a, b) = tokio::join!(
            env.conn.send_with("POST", Some(TOKEN_A), &path, body, &hdr),
            env.conn.send_with("POST", Some(TOKEN_A), &path, body, &hdr),
        );
        assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
        let recs = by_caller_rid(&env, "same-rid");
        assert_eq!(recs.len(), 4, "{recs:?}");
        let mut ids: Vec<&str> = recs
            .iter()
            .map(|r| r["request_id"].as_str().unwrap())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 2, "each request its own gateway id");
        for gid in ids {
            let kinds: Vec<&str> = recs
                .iter()
                .filter(|r| r["request_id"] == gid)
                .map(|r| r["kind"].as_str().unwrap())
                .collect();
            assert_eq!(kinds, ["intent", "outcome"], "fsync {fsync}");
        }
        let rows = query_json(&env.audit_dir(), &["--client", &id]);
        let same: Vec<&Value> = rows
            .iter()
            .filter(|r| r["caller_request_id"] == "same-rid")
            .collect();
        assert_eq!(same.len(), 2);
        assert!(same.iter().all(|r| r["outcome"] == "200"), "{same:?}");
    }
}

/// `cubegate audit query <dir> <args> --json`, one value per row.
fn query_json(dir: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "query", "--json"];
    all.extend_from_slice(args);
    let out = cli(&all, &[dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn query_follows_a_client_to_its_documents_and_uploads() {
    for fsync in [true, false] {
        let env = TestEnv::with(opts(fsync)).await;
        let id = env.create_client(TOKEN_A).await;
        let other = env.create_client(TOKEN_A).await;
        let r = env
            .post(TOKEN_A, &format!("/v1/clients/{id}"), r#"{"mobile":"+44"}"#)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let r = env
            .post(
                TOKEN_A,
                "/v1/documents",
                &format!(r#"{{"clientId":"{id}","type":"passport"}}"#),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let doc = r.json["id"].as_str().unwrap().to_string();
        let r = env
            .post(
                TOKEN_A,
                &format!("/v1/documents/{doc}/upload/front"),
                r#"{"fileName":"front.jpg","data":"QUJD"}"#,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);

        let rows = query_json(&env.audit_dir(), &["--client", &id]);
        let ops: Vec<&str> = rows
            .iter()
            .map(|r| r["operation"].as_str().unwrap())
            .collect();
        assert_eq!(
            ops,
            [
                "clients.create",
                "clients.update",
                "documents.create",
                "documents.upload"
            ],
            "fsync {fsync}"
        );
        assert_eq!(rows[0]["resource_ids"]["created"], id.as_str());
        assert_eq!(rows[2]["resource_ids"]["created"], doc.as_str());
        let rows = query_json(&env.audit_dir(), &["--resource", &doc]);
        let ops: Vec<&str> = rows
            .iter()
            .map(|r| r["operation"].as_str().unwrap())
            .collect();
        assert_eq!(ops, ["documents.create", "documents.upload"]);
        let rows = query_json(&env.audit_dir(), &["--client", &other]);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_no_canary("audit trail", &env.audit_text());
    }
}

fn audit_bytes(env: &TestEnv) -> usize {
    env.audit().lines().iter().map(|l| l.len() + 1).sum()
}

/// Sends `n` POSTs, `at_once` at a time; returns the statuses.
async fn burst(
    env: &TestEnv,
    n: usize,
    at_once: usize,
    token: Option<&str>,
    path: &str,
    body: &str,
) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n.div_ceil(at_once) {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..at_once {
            let mut rb = env
                .conn
                .http
                .post(env.conn.url(path))
                .header("content-type", "application/json")
                .body(body.to_string());
            if let Some(t) = token {
                rb = rb.header("authorization", t);
            }
            set.spawn(async move { rb.send().await.unwrap().status().as_u16() });
        }
        while let Some(s) = set.join_next().await {
            statuses.push(s.unwrap());
        }
    }
    statuses
}

#[tokio::test]
async fn a_burst_of_refusals_costs_the_caller_not_the_disk() {
    for fsync in [true, false] {
        // A debug build parses a 65 KB body slowly enough for the default
        // 20/s to refill during the burst: a smaller budget, same shape.
        let mut o = opts(fsync);
        o.rate_limit
            .push_str("refusals = { per_second = 2.0, burst = 10 }\n");
        let env = TestEnv::with(o).await;
        let id = env.create_client(TOKEN_A).await;
        let path = format!("/v1/clients/{id}");
        let before = audit_bytes(&env);
        let t = std::time::Instant::now();
        let statuses = burst(
            &env,
            200,
            20,
            Some(TOKEN_A),
            &path,
            &amplification_body("0"),
        )
        .await;
        // One summary per `refusal_summary_secs` (10) at most.
        let max_summaries = t.elapsed().as_secs() as usize / 10 + 1;
        let limited = statuses.iter().filter(|s| **s == 429).count();
        assert!(
            statuses.iter().all(|s| *s == 400 || *s == 429),
            "{statuses:?}"
        );
        assert!(
            limited > 100,
            "fsync {fsync}: only {limited} of 200 got 429"
        );
        let written = audit_bytes(&env) - before;
        assert!(
            written < 1024 * 1024,
            "fsync {fsync}: {written} bytes of audit"
        );
        eprintln!(
            "refusal burst (fsync {fsync}): {limited} of 200 got 429, {written} audit bytes, {} per request",
            written / 200
        );
        let records = env.audit_records();
        let summaries: Vec<&Value> = records
            .iter()
            .filter(|r| r["suppressed"].as_u64().is_some())
            .collect();
        assert!(
            !summaries.is_empty() && summaries.len() <= max_summaries,
            "{summaries:?}"
        );
        let suppressed: u64 = summaries
            .iter()
            .filter_map(|r| r["suppressed"].as_u64())
            .sum();
        assert!(suppressed <= limited as u64, "{suppressed} > {limited}");
        assert_eq!(summaries[0]["caller"], "a-all");
        assert_eq!(summaries[0]["reason"], "refused_validation");
        // The caller's good traffic and another caller's keep working.
        let r = env.get(TOKEN_A, &path).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let r = env.post(TOKEN_A, &path, r#"{"mobile":"+44"}"#).await;
        assert_eq!(r.status, 200, "{}", r.text);
        env.create_client(TOKEN_B).await;
        // Unauthenticated refusals are bounded per source address.
        let before = audit_bytes(&env);
        let statuses = burst(&env, 100, 20, Some("cgw_nobody"), &path, "{}").await;
        let limited = statuses.iter().filter(|s| **s == 429).count();
        assert!(limited >= 50, "fsync {fsync}: {statuses:?}");
        let r = env.get(TOKEN_A, &path).await;
        assert_eq!(
            r.status, 200,
            "an authenticated caller from the same address"
        );
        assert!(audit_bytes(&env) - before < 256 * 1024);
        assert_verifies(&env.audit_dir(), "after the bursts");
    }
}

/// Rewrites `min_free_bytes` in the served config and reloads it by
/// SIGHUP; waits until readiness shows the watermark `tripped` or not.
async fn set_watermark(gw: &Served, bytes: u64, tripped: bool) {
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("min_free_bytes") {
                format!("min_free_bytes = {bytes}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    write(&gw.config_path, &text);
    gw.signal("HUP");
    for _ in 0..100 {
        if gw.readyz().await.1["audit_watermark_tripped"] == tripped {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the watermark did not become {tripped}: {}", gw.logs());
}

#[tokio::test]
async fn below_the_disk_watermark_audited_writes_stop_and_resume() {
    for fsync in [true, false] {
        // The binary, so its metrics are its own.
        let o = Opts {
            audit_settings: format!("fsync = {fsync}\nmin_free_bytes = 1\n"),
            ..Opts::default()
        };
        let mut gw = Served::start(o, &[]).await;
        let id = gw.create_client(TOKEN_A).await;
        let path = format!("/v1/clients/{id}");
        // A watermark above any disk's free space, by reload.
        set_watermark(&gw, 9_000_000_000_000_000_000, true).await;
        let (status, report) = gw.readyz().await;
        assert_eq!(status, 503, "{report}");
        assert!(
            report["audit_disk_free_bytes"]
                .as_u64()
                .is_some_and(|b| b > 0)
        );
        let m = gw.metrics().await;
        assert_eq!(
            metric_value(&m, "cubegate_audit_watermark_tripped", &[]),
            1.0
        );
        assert!(metric_value(&m, "cubegate_audit_disk_free_bytes", &[]) > 0.0);
        let hits = gw.sandbox.faults().api_hits();
        let r = gw.post(TOKEN_A, &path, r#"{"mobile":"+44"}"#).await;
        r.assert_error(503, "audit_unavailable");
        assert_eq!(
            gw.sandbox.faults().api_hits(),
            hits,
            "forwarded below the watermark"
        );
        for _ in 0..3 {
            let r = gw.get(TOKEN_A, "/v1/accountInfo").await;
            assert_eq!(r.status, 200, "non-audited traffic flows: {}", r.text);
        }
        // Lowered again: ready, writes resume, the trail verifies.
        set_watermark(&gw, 1, false).await;
        assert_eq!(gw.readyz().await.0, 200);
        let r = gw.post(TOKEN_A, &path, r#"{"mobile":"+45"}"#).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let r = gw.get(TOKEN_A, "/v1/accountInfo").await;
        assert_eq!(r.status, 200);
        assert_eq!(
            metric_value(&gw.metrics().await, "cubegate_audit_watermark_tripped", &[]),
            0.0
        );
        gw.stop().await;
        assert_verifies(&gw.audit_dir(), "after the watermark cleared");
    }
}
