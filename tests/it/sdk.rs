//! The official ComplyCube SDKs (Python from PyPI, Node from npm) against
//! the gateway (issues 2, 3 and 20): a service team's whole KYC flow with
//! only the base URL and the key changed, through to a completed check.

use std::time::Duration;

use crate::common::*;

/// A gateway whose sandbox completes checks after a short delay, so the
/// flows' polling loops run more than once and still end within seconds.
async fn flow_env() -> TestEnv {
    let mut opts = Opts::default();
    opts.sandbox.completion_delay = Duration::from_millis(400);
    TestEnv::with(opts).await
}

/// Runs one SDK flow script and returns the JSON it printed.
async fn run_flow(program: &str, script: &str, env: &TestEnv) -> serde_json::Value {
    let path = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let started = std::time::Instant::now();
    let out = tokio::process::Command::new(program)
        .arg(&path)
        .arg(env.gw.url())
        .arg(TOKEN_A)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("{program} must be installed (scripts/test.sh installs it): {e}")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{script} took {:?}",
        started.elapsed()
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// What both SDKs' flows must have seen.
fn assert_common_flow(v: &serde_json::Value, sdk: &str) {
    assert_eq!(v["company_type"], "company", "{sdk}");
    assert_eq!(v["unknown_field_kept"], false, "{sdk}: key1 is stripped");
    assert_eq!(
        v["address_client"].as_str().map(str::len),
        Some(24),
        "{sdk}"
    );
    assert_eq!(v["upload_side"], "front", "{sdk}");
    assert!(
        v["upload_size"].as_u64().unwrap() > 3_000_000,
        "{sdk}: {}",
        v["upload_size"]
    );
    assert_eq!(v["check_initial_status"], "pending", "{sdk}");
    assert_eq!(
        (&v["check_status"], &v["check_outcome"]),
        (&serde_json::json!("complete"), &serde_json::json!("clear")),
        "{sdk}"
    );
    assert!(
        v["check_polls"].as_u64().unwrap() >= 1,
        "{sdk}: the loop polled"
    );
    assert_eq!(v["report_content_type"], "application/pdf", "{sdk}");
    assert_eq!(v["report_is_pdf"], true, "{sdk}");
    assert_eq!(v["webhook_secret"], true, "{sdk}");
    assert_eq!(v["webhook_updated_enabled"], false, "{sdk}");
    for case in [
        "webhook_after_delete",
        "company_after_delete",
        "schema_check_type",
    ] {
        assert!(v[case]["raised"].is_string(), "{sdk} {case}: {}", v[case]);
    }
    let msg = v["schema_check_type"]["message"].as_str().unwrap();
    assert!(msg.contains("standard_screening_check"), "{sdk}: {msg}");
}

#[tokio::test]
async fn official_python_sdk_works_through_the_gateway() {
    let env = flow_env().await;
    let v = run_flow("python3", "python_sdk_flow.py", &env).await;
    let id = v["created_id"].as_str().unwrap();
    assert_eq!(v["created_type"], "person");
    assert_eq!(v["updated_email"], "sdk.updated@example.com");
    assert_eq!(
        v["updated_type"], "person",
        "type was stripped, never changed"
    );
    assert_eq!(v["got_email"], "sdk.updated@example.com");
    assert!(v["list_ids"].as_array().unwrap().iter().any(|x| x == id));
    for (case, needle) in [
        ("after_delete", "Invalid client id"),
        ("not_found", "Invalid client id"),
        ("bad_token", "unknown caller token"),
        ("raw_key", "cubegate caller token"),
        ("schema", "personDetails.dob"),
        ("missing_details", "personDetails is required"),
    ] {
        assert_eq!(
            v[case]["raised"], "ComplyCubeAPIError",
            "{case}: {}",
            v[case]
        );
        let msg = v[case]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{case}: {msg}");
    }
    assert_eq!(v["unknown_field_email"], "flow.updated@example.com");
    assert_common_flow(&v, "python");
    // What the sandbox saw: the SDK's own user agent, the tenant key only.
    let rec = env.recorded();
    assert!(!rec.is_empty());
    for q in &rec {
        assert_eq!(q.header_values("authorization"), vec![KEY_A_TEST]);
        assert!(q.header_values("user-agent")[0].starts_with("complycube-python/"));
    }
    // the update went upstream without `type`
    let upd = rec
        .iter()
        .find(|q| q.method == "POST" && q.path == format!("/v1/clients/{id}"))
        .unwrap();
    assert!(upd.json().unwrap().get("type").is_none());
    // nor did the unknown field
    assert!(
        rec.iter()
            .filter(|q| q.method == "POST")
            .all(|q| q.json().is_none_or(|b| b.get("key1").is_none()))
    );
}

#[tokio::test]
async fn official_node_sdk_works_through_the_gateway() {
    let env = flow_env().await;
    let v = run_flow("node", "node_sdk_flow.js", &env).await;
    assert_eq!(v["person_type"], "person");
    assert_eq!(v["unknown_field_email"], "node.updated@example.com");
    assert_eq!(v["list_has_person"], true);
    assert_common_flow(&v, "node");
    // Readable errors: the SDK's ComplyCubeApiError with status, type, message.
    for (case, status, kind, needle) in [
        ("bad_token", 401, "unauthorized", "unknown caller token"),
        ("not_found", 404, "resource_not_found", "Invalid client id"),
        ("schema", 400, "invalid_request", "personDetails.dob"),
        ("schema_check_type", 400, "invalid_request", "type"),
    ] {
        let e = &v[case];
        assert_eq!(e["raised"], "ComplyCubeApiError", "{case}: {e}");
        assert_eq!(
            (e["statusCode"].as_u64(), e["type"].as_str()),
            (Some(status), Some(kind)),
            "{case}: {e}"
        );
        assert!(
            e["message"].as_str().unwrap().contains(needle),
            "{case}: {e}"
        );
    }
    let rec = env.recorded();
    assert!(
        rec.iter()
            .all(|q| q.header_values("authorization") == vec![KEY_A_TEST])
    );
    assert!(
        rec.iter()
            .all(|q| q.header_values("user-agent")[0].starts_with("complycube-nodejs/"))
    );
}

/// curl and PHP's Guzzle send `Expect: 100-continue` before a large body
/// and wait for the interim answer: the gateway must give it and then take
/// the multi-megabyte upload.
#[tokio::test]
async fn a_large_upload_with_expect_100_continue_goes_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::start().await;
    let cid = env.create_client(TOKEN_A).await;
    let doc = env
        .post(
            TOKEN_A,
            "/v1/documents",
            &format!(r#"{{"clientId":"{cid}","type":"passport"}}"#),
        )
        .await;
    let did = doc.json["id"].as_str().unwrap();
    let body = format!(
        r#"{{"fileName":"front.jpg","data":"/9j/{}"}}"#,
        "A".repeat(4 * 1024 * 1024)
    );
    let head = format!(
        "POST /v1/documents/{did}/upload/front HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN_A}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an interim 100 Continue, not silence")
        .unwrap();
    let interim = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    s.write_all(body.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    let mut chunk = vec![0u8; 4096];
    while !String::from_utf8_lossy(&rest).contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&rest));
        rest.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&rest);
    let status_line = if interim.contains("\r\n\r\nHTTP/1.1") {
        interim.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
    } else {
        text.lines().next().unwrap_or("").to_string()
    };
    assert!(status_line.starts_with("HTTP/1.1 200"), "{interim}{text}");
}
