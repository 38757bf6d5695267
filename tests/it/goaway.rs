//! Issue 23: an upstream that ends its connections on purpose (HTTP/2
//! GOAWAY with NO_ERROR, as nginx does after `keepalive_requests`; HTTP/1.1
//! keep-alive connections closed between requests) is invisible to callers:
//! under concurrent load across dozens of recycles no caller sees an error,
//! the circuit breaker never opens, and no POST reaches the upstream twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cubegate::sandbox::FaultMode;

use crate::common::*;

const TOTAL: usize = 3_000;
const TASKS: usize = 32;
const EVERY: u64 = 50;

async fn env(http2: bool) -> TestEnv {
    // One counted failure opens the breaker: a recycle miscounted as a
    // failure cannot hide.
    let mut upstream = Opts::default().upstream;
    upstream.push_str("breaker_failures = 1\n");
    if !http2 {
        upstream.push_str("http2 = false\n");
    }
    TestEnv::with(Opts {
        upstream,
        audit: false,
        ..Opts::default()
    })
    .await
}

/// Request `i` of the load: every other one a POST creating a client whose
/// e-mail names it, the rest GETs of the client list.
fn email(i: usize) -> String {
    format!("load-{i}@example.com")
}

/// What a load run saw.
struct Outcome {
    /// (request, status, body) of every answer that was not 200.
    failed: Vec<(usize, u16, String)>,
    /// This gateway's breaker was seen open while the load ran. (Watched
    /// directly: `/metrics` is shared by every gateway in this test binary.)
    breaker_opened: bool,
}

/// `TOTAL` requests over `TASKS` concurrent callers.
async fn load(env: &TestEnv) -> Outcome {
    let upstream = env.gw.shared().runtime().upstream.clone();
    let done = Arc::new(AtomicBool::new(false));
    let watching = done.clone();
    let watcher = tokio::spawn(async move {
        let mut opened = false;
        while !watching.load(Ordering::Relaxed) {
            opened |= upstream.breaker().is_open();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        opened
    });
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let http = env.http.clone();
        let url = env.url("/v1/clients");
        tasks.spawn(async move {
            let mut failed = Vec::new();
            for i in (t..TOTAL).step_by(TASKS) {
                let rb = if i % 2 == 0 {
                    let body = format!(
                        r#"{{"type":"person","email":"{}","personDetails":{{"firstName":"Load","lastName":"Test"}}}}"#,
                        email(i)
                    );
                    http.post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                } else {
                    http.get(&url)
                };
                // A transport error talking to the gateway counts as status 0.
                match rb.header("authorization", TOKEN_A).send().await {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => {
                        let status = r.status().as_u16();
                        failed.push((i, status, r.text().await.unwrap_or_default()));
                    }
                    Err(e) => failed.push((i, 0, format!("{e:?}"))),
                }
            }
            failed
        });
    }
    let mut failed = Vec::new();
    while let Some(f) = tasks.join_next().await {
        failed.extend(f.unwrap());
    }
    done.store(true, Ordering::Relaxed);
    Outcome {
        failed,
        breaker_opened: watcher.await.unwrap(),
    }
}

/// No errors, the breaker never opened, every POST recorded exactly once
/// and the connections really were recycled dozens of times.
fn assert_invisible(env: &TestEnv, run: &Outcome) {
    let failed = &run.failed;
    assert!(
        failed.is_empty(),
        "{} of {TOTAL} requests failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(!run.breaker_opened, "the breaker opened");
    let mut posts: HashMap<String, usize> = HashMap::new();
    for r in env.recorded().iter().filter(|r| r.method == "POST") {
        let e = r.json().unwrap()["email"].as_str().unwrap().to_string();
        *posts.entry(e).or_default() += 1;
    }
    for i in (0..TOTAL).step_by(2) {
        assert_eq!(
            posts.get(&email(i)),
            Some(&1),
            "POST {i} reached the upstream"
        );
    }
    let hits = env.sandbox.faults().api_hits();
    assert!(
        hits >= TOTAL as u64,
        "{hits} API requests reached the sandbox"
    );
    assert!(hits / EVERY >= 24, "only {} recycles", hits / EVERY);
}

#[tokio::test]
async fn http2_upstream_ending_connections_gracefully_is_invisible() {
    let env = env(true).await;
    env.sandbox
        .faults()
        .set(FaultMode::RecycleConnections { every: EVERY });
    let run = load(&env).await;
    assert_invisible(&env, &run);
}

#[tokio::test]
async fn streams_refused_after_a_goaway_are_sent_again_once() {
    let env = env(true).await;
    env.sandbox
        .faults()
        .set(FaultMode::RefuseAfterGoaway { every: EVERY });
    let run = load(&env).await;
    assert_invisible(&env, &run);
    assert!(
        env.sandbox.faults().refused() > 0,
        "no stream was refused: the retry was not exercised"
    );
}

#[tokio::test]
async fn http1_upstream_closing_keep_alive_connections_is_invisible() {
    let env = env(false).await;
    env.sandbox
        .faults()
        .set(FaultMode::RecycleConnections { every: EVERY });
    let run = load(&env).await;
    assert_invisible(&env, &run);
}
