//! Issue 7: upstream faults. Each fault gives its documented status, the
//! number of upstream attempts is as documented (never two for a POST), and
//! nothing secret or personal leaks into error bodies or the audit trail.

use std::time::Duration;

use cubegate::sandbox::FaultMode;

use crate::common::*;

fn no_leaks(env: &TestEnv) {
    assert_no_canary("audit", &env.audit_text());
}

#[tokio::test]
async fn connect_refused_is_502_and_sends_nothing() {
    let env = TestEnv::with(Opts {
        upstream_url: Some(format!("https://127.0.0.1:{}/v1", closed_port())),
        ..Opts::default()
    })
    .await;
    env.post(TOKEN_A, "/v1/clients", CLIENT_BODY)
        .await
        .assert_error(502, "upstream_unavailable");
    env.get(TOKEN_A, "/v1/clients")
        .await
        .assert_error(502, "upstream_unavailable");
    assert_eq!(env.sandbox.faults().api_hits(), 0);
    no_leaks(&env);
}

#[tokio::test]
async fn answer_later_than_the_response_timeout_is_504_after_one_attempt() {
    let env = TestEnv::with(Opts {
        upstream: "connect_timeout_ms = 2000\nresponse_timeout_ms = 300\n".into(),
        ..Opts::default()
    })
    .await;
    env.sandbox.faults().set(FaultMode::Delay { ms: 3000 });
    env.post(TOKEN_A, "/v1/clients", CLIENT_BODY)
        .await
        .assert_error(504, "upstream_timeout");
    assert_eq!(env.sandbox.faults().api_hits(), 1, "a POST is sent once");
    env.get(TOKEN_A, "/v1/clients")
        .await
        .assert_error(504, "upstream_timeout");
    assert_eq!(
        env.sandbox.faults().api_hits(),
        2,
        "a GET that was sent is not retried"
    );
    env.sandbox.faults().clear();
    assert_eq!(env.get(TOKEN_A, "/v1/clients").await.status, 200);
    no_leaks(&env);
}

#[tokio::test]
async fn reset_after_the_request_was_sent_is_502_and_never_resent() {
    let env = TestEnv::start().await;
    // Permanent: a retry would be reset too, and would show in api_hits.
    env.sandbox.faults().set(FaultMode::ResetBeforeResponse);
    env.post(TOKEN_A, "/v1/clients", CLIENT_BODY)
        .await
        .assert_error(502, "upstream_unavailable");
    assert_eq!(
        env.sandbox.faults().api_hits(),
        1,
        "exactly one upstream attempt for a POST"
    );
    let posts = env.recorded().iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, 1, "the sandbox saw the check-creating POST once");
    env.get(TOKEN_A, "/v1/clients")
        .await
        .assert_error(502, "upstream_unavailable");
    assert_eq!(
        env.sandbox.faults().api_hits(),
        2,
        "a GET that reached the upstream is not retried either"
    );
    env.sandbox.faults().clear();
    assert_eq!(env.get(TOKEN_A, "/v1/clients").await.status, 200);
    no_leaks(&env);
}

#[tokio::test]
async fn upstream_closing_a_keep_alive_connection_is_invisible_to_callers() {
    let env = TestEnv::start().await;
    for i in 0..10 {
        env.sandbox
            .faults()
            .set_times(FaultMode::CloseAfterResponse, 1);
        let r = env.post(TOKEN_A, "/v1/clients", CLIENT_BODY).await;
        assert_eq!(r.status, 200, "round {i}: {}", r.text);
        let r = env.get(TOKEN_A, "/v1/clients").await;
        assert_eq!(r.status, 200, "round {i}: {}", r.text);
        let r = env.post(TOKEN_A, "/v1/clients", CLIENT_BODY).await;
        assert_eq!(r.status, 200, "round {i}: {}", r.text);
    }
    // Every request reached the upstream exactly once: nothing duplicated.
    assert_eq!(env.sandbox.faults().api_hits(), 30);
}

#[tokio::test]
async fn truncated_upstream_body_is_never_presented_as_complete() {
    let env = TestEnv::start().await;
    let id = env.create_client(TOKEN_A).await;
    let full = env.get(TOKEN_A, &format!("/v1/clients/{id}")).await;
    assert_eq!(full.status, 200);
    env.sandbox.faults().set(FaultMode::TruncatedBody);
    for _ in 0..3 {
        let r = env
            .http
            .get(env.url(&format!("/v1/clients/{id}")))
            .header("authorization", TOKEN_A)
            .send()
            .await;
        match r {
            // Headers may already be on their way: then the body must fail.
            Ok(r) => {
                let body = r.bytes().await;
                assert!(
                    body.is_err(),
                    "a cut-off body was delivered as complete: {:?}",
                    body.map(|b| String::from_utf8_lossy(&b).into_owned())
                );
            }
            Err(e) => assert!(!e.is_timeout(), "{e}"),
        }
    }
    env.sandbox.faults().clear();
    assert_eq!(
        env.get(TOKEN_A, &format!("/v1/clients/{id}")).await.status,
        200
    );
}

#[tokio::test]
async fn upstream_certificate_that_does_not_verify_means_the_key_never_leaves() {
    // The gateway trusts a CA that did not sign the sandbox's certificate.
    let other_ca = rcgen::generate_simple_self_signed(vec!["not-the-sandbox".into()])
        .unwrap()
        .cert
        .pem();
    let env = TestEnv::with(Opts {
        upstream_ca: Some(other_ca),
        ..Opts::default()
    })
    .await;
    env.post(TOKEN_A, "/v1/clients", CLIENT_BODY)
        .await
        .assert_error(502, "upstream_unavailable");
    env.get(TOKEN_A, "/v1/clients")
        .await
        .assert_error(502, "upstream_unavailable");
    assert_eq!(env.sandbox.faults().api_hits(), 0);
    assert!(env.recorded().is_empty(), "no request (and no key) arrived");
    no_leaks(&env);
}

#[tokio::test]
async fn breaker_opens_on_transport_failures_fails_fast_and_recovers() {
    let env = TestEnv::with(Opts {
        upstream: "connect_timeout_ms = 2000\nresponse_timeout_ms = 5000\nbreaker_failures = 2\nbreaker_cooldown_ms = 300\n".into(),
        ..Opts::default()
    })
    .await;
    // ComplyCube's own errors are answers: they never open the breaker.
    env.sandbox.faults().set(FaultMode::Status {
        status: 500,
        retry_after: None,
    });
    for _ in 0..4 {
        assert_eq!(env.get(TOKEN_A, "/v1/clients").await.status, 500);
    }
    env.sandbox.faults().set(FaultMode::ResetBeforeResponse);
    for _ in 0..2 {
        env.post(TOKEN_A, "/v1/clients", CLIENT_BODY)
            .await
            .assert_error(502, "upstream_unavailable");
    }
    let hits = env.sandbox.faults().api_hits();
    // Open: refused at once with 503, nothing sent.
    let r = env.post(TOKEN_A, "/v1/clients", CLIENT_BODY).await;
    r.assert_error(503, "upstream_unavailable");
    assert_eq!(
        env.sandbox.faults().api_hits(),
        hits,
        "open breaker sends nothing"
    );
    let m = env.metrics().await;
    assert!(
        metric_value(
            &m,
            "cubegate_upstream_breaker_transitions_total",
            &[("to", "open")]
        ) >= 1.0,
        "{m}"
    );
    // Upstream healthy again: after the cool-down one probe closes it.
    env.sandbox.faults().clear();
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = env.get(TOKEN_A, "/v1/clients").await;
        if r.status == 200 {
            ok = true;
            break;
        }
        r.assert_error(503, "upstream_unavailable");
    }
    assert!(ok, "the breaker never closed again");
    assert_eq!(
        env.post(TOKEN_A, "/v1/clients", CLIENT_BODY).await.status,
        200
    );
    no_leaks(&env);
}
