//! Issue 7: graceful shutdown of the real binary. On SIGTERM `/readyz`
//! fails at once, requests in flight finish with their real answers, new
//! requests get 503 `draining` with `Connection: close` while the drain
//! lasts, the audit trail is flushed (and verifies), and the exit code is 0.

use cubegate::sandbox::FaultMode;

use crate::common::*;

#[tokio::test]
async fn sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_0() {
    let mut gw = Served::start(Opts::default(), &[]).await;
    let sandbox = &gw.sandbox;

    // Slow upstream: every answer takes 3 s.
    sandbox.faults().set(FaultMode::Delay { ms: 3000 });
    let mut slow = Vec::new();
    for i in 0..4 {
        let url = gw.url("/v1/clients");
        slow.push(tokio::spawn(async move {
            let r = http_client()
                .post(url)
                .header("authorization", TOKEN_A)
                .header("content-type", "application/json")
                .header("x-request-id", format!("slow-{i}"))
                .body(CLIENT_BODY)
                .send()
                .await
                .unwrap();
            Resp::from(r).await
        }));
    }
    // All four are at the upstream before the signal.
    for _ in 0..200 {
        if sandbox.faults().api_hits() == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(sandbox.faults().api_hits(), 4);
    gw.signal("TERM");

    // Readiness fails while the slow requests are still running.
    let admin = http_client();
    let mut not_ready = false;
    for _ in 0..100 {
        match admin.get(gw.admin_url("/readyz")).send().await {
            Ok(r) if r.status() == 200 => {}
            _ => {
                not_ready = true;
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(not_ready, "readyz still 200 after SIGTERM");
    assert!(
        slow.iter().all(|h| !h.is_finished()),
        "readiness must fail before in-flight requests end"
    );

    // A new request (new connection) during the drain: 503 draining, close.
    // The listener stays open while requests drain, so this is never a
    // connection refusal.
    let r = Resp::from(
        http_client()
            .get(gw.url("/v1/clients"))
            .header("authorization", TOKEN_A)
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.assert_error(503, "draining");
    assert_eq!(r.headers["connection"], "close");
    assert_eq!(sandbox.faults().api_hits(), 4, "nothing new forwarded");

    for h in slow {
        let r = h.await.unwrap();
        assert_eq!(r.status, 200, "in-flight request cut off: {}", r.text);
        assert!(r.json["id"].is_string());
    }
    assert_eq!(gw.wait().await, Some(0), "{}", gw.logs());

    // The audit trail was flushed: every slow request has its outcome, and
    // the chain verifies.
    let audit = gw.audit().text();
    for i in 0..4 {
        assert!(
            audit.lines().any(|l| l.contains(&format!("\"slow-{i}\""))
                && l.contains("\"outcome\"")
                && l.contains("\"status\":200")),
            "no outcome record for slow-{i}"
        );
    }
    assert_verifies(&gw.audit_dir(), "after the drain");
    assert_no_canary("serve logs", &gw.logs());
    assert_no_canary("audit", &audit);
}
