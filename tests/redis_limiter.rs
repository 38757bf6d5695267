//! The Redis backend against a real `redis-server` that this test starts
//! itself on a free loopback port (no persistence). Three `RateLimiter`s with
//! their own connections stand for three gateway replicas.
//!
//! Proves: one budget is shared exactly (300 concurrent requests from idle
//! admit exactly `burst`); with shaping over a 2 s window the replicas
//! together admit at most rate x time + burst; caller quotas and upstream
//! pauses are shared; when Redis dies mid-run, `fail = "closed"` refuses every
//! call within a bounded time and `fail = "local"` admits at budget ÷ replicas;
//! a hung (SIGSTOPped) Redis costs one timeout, then recovery is automatic.
//! A missing `redis-server` binary is a test failure, never a skip.

// Test support code: a failed setup step must stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cubegate::pipeline::rate_limit::{
    Backend, Budget, BudgetKey, FailMode, LimiterSettings, RateLimiter, RefusalReason,
};

#[path = "util/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

fn settings(url: &str, fail: FailMode, timeout_ms: u64) -> LimiterSettings {
    LimiterSettings {
        backend: Backend::Redis,
        redis_url: Some(url.to_owned()),
        redis_timeout_ms: timeout_ms,
        fail,
        replicas: 3,
        ..LimiterSettings::default()
    }
}

async fn replicas(s: &LimiterSettings) -> Vec<Arc<RateLimiter>> {
    let mut v = Vec::new();
    for _ in 0..3 {
        v.push(Arc::new(RateLimiter::new(s).await.unwrap()));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_burst_exactly() {
    let server = RedisServer::start().await;
    // Generous timeout: this proves accuracy, not latency, on a busy machine.
    let gw = replicas(&settings(&server.url, FailMode::Closed, 2000)).await;
    let key = BudgetKey::new("acme", true);
    // 1/s: the 300 decisions take far less than the second a refill needs,
    // so "within the same instant" holds and the answer must be the burst.
    let budget = Budget {
        per_second: 1.0,
        burst: 20,
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let l = Arc::clone(&gw[i % 3]);
        tasks.push(tokio::spawn(async move {
            l.acquire(key, &budget, None, Duration::ZERO).await
        }));
    }
    let mut admitted = 0u64;
    for t in tasks {
        match t.await.unwrap() {
            Ok(a) => {
                assert_eq!(a.waited.as_secs(), 0);
                admitted += 1;
            }
            Err(r) => assert_eq!(r.reason, RefusalReason::Budget),
        }
    }
    let elapsed = started.elapsed();
    let allowed = u64::from(budget.burst) + (elapsed.as_secs_f64() * budget.per_second) as u64;
    println!(
        "3 replicas, 300 concurrent, burst 20: admitted {admitted}, allowed {allowed} ({elapsed:?})"
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "too slow to test the instant: {elapsed:?}"
    );
    assert_eq!(admitted, 20);
    for l in &gw {
        assert_eq!(l.stats().redis_errors, 0);
        assert_eq!(l.stats().fallbacks, 0);
    }

    // A caller quota is shared too, and its refusals leave the tenant alone.
    let key = BudgetKey::new("acme", false);
    let tenant = Budget {
        per_second: 1.0,
        burst: 6,
    };
    let quota = Budget {
        per_second: 0.5,
        burst: 2,
    };
    let mut got = Vec::new();
    for i in 0..12 {
        got.push(
            gw[i % 3]
                .acquire(key, &tenant, Some(("batch", &quota)), Duration::ZERO)
                .await,
        );
    }
    let ok = got.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 2);
    assert!(
        got.iter()
            .filter_map(|r| r.err())
            .all(|r| r.reason == RefusalReason::CallerQuota)
    );
    // The 10 quota refusals consumed nothing: 6 - 2 = 4 tenant slots remain.
    let web = Budget {
        per_second: 10.0,
        burst: 10,
    };
    let mut ok = 0;
    for i in 0..8 {
        match gw[i % 3]
            .acquire(key, &tenant, Some(("web", &web)), Duration::ZERO)
            .await
        {
            Ok(_) => ok += 1,
            Err(r) => assert_eq!(r.reason, RefusalReason::Budget),
        }
    }
    assert_eq!(ok, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shaping_across_replicas_never_exceeds_rate_times_time_plus_burst() {
    let server = RedisServer::start().await;
    let gw = replicas(&settings(&server.url, FailMode::Closed, 2000)).await;
    let key = BudgetKey::new("acme", true);
    let budget = Budget {
        per_second: 10.0,
        burst: 5,
    };
    let window = Duration::from_secs(2);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let l = Arc::clone(&gw[i % 3]);
        tasks.push(tokio::spawn(async move {
            let mut admitted = Vec::new();
            let mut refused = 0u32;
            while started.elapsed() < window {
                match l
                    .acquire(key, &budget, None, Duration::from_millis(300))
                    .await
                {
                    Ok(_) => admitted.push(started.elapsed()),
                    Err(r) => {
                        assert_eq!(r.reason, RefusalReason::Budget);
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (admitted, refused)
        }));
    }
    let mut admitted = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (a, r) = t.await.unwrap();
        admitted.extend(a);
        refused += r;
    }
    let last = admitted.iter().copied().max().unwrap();
    let allowed = u64::from(budget.burst) + (last.as_secs_f64() * budget.per_second) as u64;
    let waits: u64 = gw.iter().map(|l| l.stats().waits).sum();
    println!(
        "2 s window at 10/s burst 5 over 3 replicas: admitted {} (allowed {allowed} by {last:?}), \
         refused {refused}, admitted after waiting {waits}",
        admitted.len()
    );
    assert!(admitted.len() as u64 <= allowed);
    // Shaping keeps the budget busy: close to the allowed number, with waits.
    assert!(admitted.len() as u64 >= allowed * 3 / 4, "budget left idle");
    assert!(waits > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_pause_reaches_every_replica() {
    let server = RedisServer::start().await;
    let gw = replicas(&settings(&server.url, FailMode::Closed, 2000)).await;
    let key = BudgetKey::new("acme", true);
    let budget = Budget {
        per_second: 8.0,
        burst: 8,
    };
    assert!(
        gw[1]
            .acquire(key, &budget, None, Duration::ZERO)
            .await
            .is_ok()
    );
    gw[0].pause(key, Some(Duration::from_secs(20)));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match gw[2].acquire(key, &budget, None, Duration::ZERO).await {
            Err(r) if r.reason == RefusalReason::Paused => {
                assert!(r.retry_after > Duration::from_secs(15));
                assert!(r.retry_after <= Duration::from_secs(20));
                break;
            }
            other => {
                assert!(other.is_ok(), "{other:?}");
                assert!(
                    Instant::now() < deadline,
                    "pause never reached the other replica"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let other = BudgetKey::new("acme", false);
    assert!(
        gw[2]
            .acquire(other, &budget, None, Duration::ZERO)
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dying_mid_run_applies_the_fail_mode_and_nothing_hangs() {
    let mut server = RedisServer::start().await;
    let timeout_ms = 100;
    let closed = Arc::new(
        RateLimiter::new(&settings(&server.url, FailMode::Closed, timeout_ms))
            .await
            .unwrap(),
    );
    let local = RateLimiter::new(&settings(&server.url, FailMode::Local, timeout_ms))
        .await
        .unwrap();
    let key = BudgetKey::new("acme", true);
    // Redis-backed: 9 at once. Local fallback on 3 replicas: 3 at once, 1/s.
    let budget = Budget {
        per_second: 3.0,
        burst: 9,
    };
    let other = Budget {
        per_second: 1000.0,
        burst: 1000,
    };
    // Load running on the fail-closed replica while Redis goes away.
    let load = {
        let closed = Arc::clone(&closed);
        tokio::spawn(async move {
            let key = BudgetKey::new("load", true);
            let (mut slowest, mut unavailable, mut ok) = (Duration::ZERO, 0u32, 0u32);
            let end = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < end {
                let t = Instant::now();
                match closed
                    .acquire(key, &other, None, Duration::from_millis(300))
                    .await
                {
                    Ok(_) => ok += 1,
                    Err(r) => {
                        assert_eq!(r.reason, RefusalReason::BackendUnavailable);
                        assert_eq!(r.retry_after, Duration::from_secs(1));
                        unavailable += 1;
                    }
                }
                slowest = slowest.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (slowest, unavailable, ok)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        closed.stats().redis_errors,
        0,
        "Redis was not in use before the kill"
    );
    assert!(
        local
            .acquire(key, &budget, None, Duration::ZERO)
            .await
            .is_ok()
    );
    assert_eq!(local.stats().fallbacks, 0);
    server.kill();

    let mut admitted = 0;
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        match local.acquire(key, &budget, None, Duration::ZERO).await {
            Ok(_) => admitted += 1,
            Err(r) => assert_eq!(r.reason, RefusalReason::Budget),
        }
        slowest = slowest.max(t.elapsed());
    }
    let (closed_slowest, unavailable, ok) = load.await.unwrap();
    println!(
        "redis killed: fail=closed {ok} admitted before / {unavailable} refused after, slowest call \
         {closed_slowest:?}; fail=local admitted {admitted} of 20, slowest {slowest:?}"
    );
    // budget ÷ 3 replicas = burst 3 at 1/s, and 20 calls take well under 1 s.
    assert_eq!(admitted, 3);
    assert!(local.stats().fallbacks >= 20);
    assert!(ok > 0 && unavailable > 0);
    // 2 x timeout, plus slack for a machine shared by several builds.
    let bound = Duration::from_millis(2 * timeout_ms + 300);
    assert!(
        closed_slowest < bound,
        "fail=closed call took {closed_slowest:?}"
    );
    assert!(slowest < bound, "fail=local call took {slowest:?}");
}

fn signal(server: &RedisServer, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_at_most_the_timeout_and_recovery_is_automatic() {
    let server = RedisServer::start().await;
    let timeout_ms = 100;
    let l = RateLimiter::new(&settings(&server.url, FailMode::Closed, timeout_ms))
        .await
        .unwrap();
    let key = BudgetKey::new("acme", true);
    let budget = Budget {
        per_second: 1000.0,
        burst: 1000,
    };
    assert!(l.acquire(key, &budget, None, Duration::ZERO).await.is_ok());
    // A stopped process keeps its socket open but never answers: only our
    // timeout can end the call.
    signal(&server, "-STOP");
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let r = l
            .acquire(key, &budget, None, Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(r.reason, RefusalReason::BackendUnavailable);
        slowest = slowest.max(t.elapsed());
    }
    // One call waited for the timeout; the rest skipped Redis for a second.
    assert_eq!(l.stats().redis_errors, 1);
    assert!(
        slowest < Duration::from_millis(2 * timeout_ms + 300),
        "a call took {slowest:?}"
    );
    signal(&server, "-CONT");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while l.acquire(key, &budget, None, Duration::ZERO).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "never recovered after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("hung redis: slowest refusal {slowest:?}, then recovered");
}
