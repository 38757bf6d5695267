//! The official ComplyCube Python SDK against the gateway (issues 2 and 3).

use crate::common::*;

#[tokio::test]
async fn official_python_sdk_works_through_the_gateway() {
    let env = TestEnv::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/python_sdk_flow.py");
    let url = env.gw.url();
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&url)
        .arg(TOKEN_A)
        .output()
        .await
        .expect("python3 must be installed (the README's test command installs the SDK)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK script failed:\n{stdout}\n{stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
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
}
