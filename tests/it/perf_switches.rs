//! `[validation] enabled = false` (issue 8: the switch that lets the load
//! benchmark show what schema validation costs): a schema-violating body is
//! forwarded, while the strict parse and the field policy still run; by
//! default the same body is refused and never reaches the upstream.

use crate::common::*;

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
