//! Unit tests of the limiter, on an injected clock.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn budget(per_second: f64, burst: u32) -> Budget {
    Budget { per_second, burst }
}

fn limiter(settings: LimiterSettings) -> (Arc<RateLimiter>, ManualClock) {
    let clock = ManualClock::new();
    // Start far from the clock origin so "idle" is not the same as "zero".
    clock.advance(Duration::from_secs(1000));
    let l = RateLimiter::with_clock(&settings, Arc::new(clock.clone())).unwrap();
    (Arc::new(l), clock)
}

// A decision that needs no wait must complete without the clock moving;
// a hang here means the limiter slept when it should have answered.
async fn now(
    l: &RateLimiter,
    key: BudgetKey,
    b: &Budget,
    caller: Option<(&str, &Budget)>,
    max_wait: Duration,
) -> Result<Admission, Refusal> {
    tokio::time::timeout(Duration::from_secs(5), l.acquire(key, b, caller, max_wait))
        .await
        .expect("acquire slept although the manual clock did not move")
}

// Lets spawned acquires run up to their sleep.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn header<'a>(h: &'a [(HeaderName, HeaderValue)], name: &str) -> &'a str {
    h.iter()
        .find(|(n, _)| n.as_str() == name)
        .map(|(_, v)| v.to_str().unwrap())
        .unwrap()
}

async fn burst_then_limited(l: &RateLimiter, key: BudgetKey, b: &Budget) {
    for i in 0..b.burst {
        let a = now(l, key, b, None, Duration::ZERO).await;
        assert_eq!(
            a,
            Ok(Admission {
                waited: Duration::ZERO
            }),
            "request {i}"
        );
    }
    let r = now(l, key, b, None, Duration::ZERO).await.unwrap_err();
    assert_eq!(r.reason, RefusalReason::Budget);
    assert_eq!(r.retry_after, 125 * MS);
    let h = r.headers();
    assert_eq!(header(&h, "retry-after"), "1");
    assert_eq!(header(&h, "ratelimit-policy"), "\"budget\";q=3;w=1");
    assert_eq!(header(&h, "ratelimit"), "\"budget\";r=0;t=1");
}

#[tokio::test]
async fn from_idle_exactly_burst_passes_then_next_waits_one_interval() {
    let (l, clock) = limiter(LimiterSettings::default());
    let key = BudgetKey::new("acme", true);
    let b = budget(8.0, 3);
    burst_then_limited(&l, key, &b).await;

    // With enough max_wait the next request gets the slot 125 ms out.
    let waiter = {
        let l = Arc::clone(&l);
        tokio::spawn(async move { l.acquire(key, &b, None, 200 * MS).await })
    };
    settle().await;
    clock.advance(124 * MS);
    settle().await;
    assert!(!waiter.is_finished(), "admitted before its slot");
    clock.advance(MS);
    assert_eq!(waiter.await.unwrap(), Ok(Admission { waited: 125 * MS }));

    // A long idle restores exactly the burst, not more.
    clock.advance(Duration::from_secs(3600));
    burst_then_limited(&l, key, &b).await;
}

#[tokio::test]
async fn a_flooding_tenant_does_not_delay_another() {
    let (l, _clock) = limiter(LimiterSettings::default());
    let flood = BudgetKey::new("noisy", true);
    let calm = BudgetKey::new("calm", true);
    let b = budget(8.0, 2);
    for _ in 0..160 {
        let _ = now(&l, flood, &b, None, Duration::ZERO).await;
    }
    for _ in 0..2 {
        let a = now(&l, calm, &b, None, 300 * MS).await;
        assert_eq!(
            a,
            Ok(Admission {
                waited: Duration::ZERO
            })
        );
    }
}

#[tokio::test]
async fn a_slot_beyond_max_wait_is_refused_at_once_without_consuming() {
    let (l, clock) = limiter(LimiterSettings::default());
    let key = BudgetKey::new("acme", false);
    let b = budget(1.0, 1);
    assert!(now(&l, key, &b, None, Duration::ZERO).await.is_ok());
    let r = now(&l, key, &b, None, 300 * MS).await.unwrap_err();
    assert_eq!(
        (r.reason, r.retry_after),
        (RefusalReason::Budget, Duration::from_secs(1))
    );
    assert_eq!(header(&r.headers(), "retry-after"), "1");
    // The refusal reserved nothing: the very next second is free.
    clock.advance(Duration::from_secs(1));
    assert!(now(&l, key, &b, None, Duration::ZERO).await.is_ok());
}

#[tokio::test]
async fn sustained_overload_admits_rate_times_time_plus_burst_never_more() {
    let (l, clock) = limiter(LimiterSettings::default());
    let key = BudgetKey::new("acme", true);
    let b = budget(8.0, 3);
    let mut admitted = 0u64;
    // One request per millisecond (125x the rate) for 10 s, inclusive.
    for ms in 0..=10_000u64 {
        if ms > 0 {
            clock.advance(MS);
        }
        if now(&l, key, &b, None, Duration::ZERO).await.is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 8 * 10 + 3);
    let s = l.stats();
    assert_eq!((s.admitted, s.refusals), (83, 10_001 - 83));
}

#[tokio::test]
async fn waiting_requests_are_served_first_come_first_served() {
    let (l, clock) = limiter(LimiterSettings::default());
    let key = BudgetKey::new("acme", true);
    let b = budget(10.0, 1);
    assert!(now(&l, key, &b, None, Duration::ZERO).await.is_ok());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for name in ["a", "b", "c"] {
        let (l, tx) = (Arc::clone(&l), tx.clone());
        tokio::spawn(async move {
            let r = l.acquire(key, &b, None, Duration::from_secs(1)).await;
            tx.send((name, r)).unwrap();
        });
        settle().await;
    }
    for (name, waited) in [("a", 100), ("b", 200), ("c", 300)] {
        clock.advance(100 * MS);
        settle().await;
        let got = rx.try_recv().unwrap();
        assert_eq!(
            got,
            (
                name,
                Ok(Admission {
                    waited: waited * MS
                })
            )
        );
        assert!(rx.try_recv().is_err(), "more than one admitted per slot");
    }
    assert_eq!(l.stats().waits, 3);
}

#[tokio::test]
async fn waiters_are_bounded_per_key() {
    let settings = LimiterSettings {
        max_waiters: 2,
        ..LimiterSettings::default()
    };
    let (l, clock) = limiter(settings);
    let key = BudgetKey::new("acme", true);
    let b = budget(10.0, 1);
    assert!(now(&l, key, &b, None, Duration::ZERO).await.is_ok());
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let l = Arc::clone(&l);
        waiting.push(tokio::spawn(async move {
            l.acquire(key, &b, None, Duration::from_secs(1)).await
        }));
        settle().await;
    }
    let r = now(&l, key, &b, None, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(
        (r.reason, r.retry_after),
        (RefusalReason::QueueFull, 300 * MS)
    );
    // Another key has its own queue.
    let other = BudgetKey::new("other", true);
    assert!(now(&l, other, &b, None, Duration::ZERO).await.is_ok());
    // Once the waiters are through, waiting is possible again.
    clock.advance(200 * MS);
    for w in waiting {
        assert!(w.await.unwrap().is_ok());
    }
    let next = {
        let l = Arc::clone(&l);
        tokio::spawn(async move { l.acquire(key, &b, None, Duration::from_secs(1)).await })
    };
    settle().await;
    clock.advance(100 * MS);
    assert_eq!(next.await.unwrap(), Ok(Admission { waited: 100 * MS }));
}

#[tokio::test]
async fn caller_quota_refusal_does_not_consume_the_tenant_budget() {
    let (l, _clock) = limiter(LimiterSettings::default());
    let key = BudgetKey::new("acme", true);
    let tenant = budget(8.0, 4);
    let greedy = budget(1.0, 1);
    let polite = budget(10.0, 10);
    assert!(
        now(&l, key, &tenant, Some(("greedy", &greedy)), Duration::ZERO)
            .await
            .is_ok()
    );
    for _ in 0..5 {
        let r = now(&l, key, &tenant, Some(("greedy", &greedy)), 300 * MS)
            .await
            .unwrap_err();
        assert_eq!(
            (r.reason, r.retry_after),
            (RefusalReason::CallerQuota, Duration::from_secs(1))
        );
        assert_eq!(
            header(&r.headers(), "ratelimit-policy"),
            "\"caller\";q=1;w=1"
        );
    }
    // The greedy caller's refusals left the other 3 of the burst intact.
    for _ in 0..3 {
        assert!(
            now(&l, key, &tenant, Some(("polite", &polite)), Duration::ZERO)
                .await
                .is_ok()
        );
    }
    let r = now(&l, key, &tenant, Some(("polite", &polite)), Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(r.reason, RefusalReason::Budget);
}

#[tokio::test]
async fn tenant_budget_refusal_does_not_consume_the_caller_quota() {
    let (l, clock) = limiter(LimiterSettings::default());
    let key = BudgetKey::new("acme", true);
    let tenant = budget(1.0, 1);
    let quota = budget(0.1, 2);
    let c = Some(("svc", &quota));
    assert!(now(&l, key, &tenant, c, Duration::ZERO).await.is_ok());
    let r = now(&l, key, &tenant, c, Duration::ZERO).await.unwrap_err();
    assert_eq!(r.reason, RefusalReason::Budget);
    clock.advance(Duration::from_secs(1));
    // Second token of the caller quota is still there.
    assert!(now(&l, key, &tenant, c, Duration::ZERO).await.is_ok());
    clock.advance(Duration::from_secs(1));
    let r = now(&l, key, &tenant, c, Duration::ZERO).await.unwrap_err();
    assert_eq!(r.reason, RefusalReason::CallerQuota);
}

#[tokio::test]
async fn upstream_429_pauses_the_key_until_retry_after() {
    let (l, clock) = limiter(LimiterSettings::default());
    let key = BudgetKey::new("acme", true);
    let other = BudgetKey::new("acme", false);
    let b = budget(8.0, 8);
    l.pause(key, Some(2500 * MS));
    let r = now(&l, key, &b, None, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert_eq!(
        (r.reason, r.retry_after),
        (RefusalReason::Paused, 2500 * MS)
    );
    assert_eq!(header(&r.headers(), "retry-after"), "3");
    assert!(
        now(&l, other, &b, None, Duration::ZERO).await.is_ok(),
        "only that key pauses"
    );
    // A shorter pause does not shorten the current one.
    l.pause(key, Some(Duration::from_secs(1)));
    clock.advance(2499 * MS);
    let r = now(&l, key, &b, None, Duration::ZERO).await.unwrap_err();
    assert_eq!((r.reason, r.retry_after), (RefusalReason::Paused, MS));
    clock.advance(MS);
    assert!(now(&l, key, &b, None, Duration::ZERO).await.is_ok());
    // Without Retry-After the configured default (30 s) applies.
    l.pause(key, None);
    clock.advance(Duration::from_secs(29));
    let r = now(&l, key, &b, None, Duration::ZERO).await.unwrap_err();
    assert_eq!(
        (r.reason, r.retry_after),
        (RefusalReason::Paused, Duration::from_secs(1))
    );
}

#[tokio::test]
async fn sweep_drops_only_idle_state() {
    let (l, clock) = limiter(LimiterSettings::default());
    let b = budget(8.0, 2);
    let q = budget(1.0, 1);
    for i in 0..100 {
        let key = BudgetKey::new(&format!("tenant-{i}"), i % 2 == 0);
        assert!(
            now(&l, key, &b, Some(("svc", &q)), Duration::ZERO)
                .await
                .is_ok()
        );
    }
    l.pause(BudgetKey::new("paused", true), Some(Duration::from_secs(5)));
    assert_eq!(l.stats().tracked_keys, 201);
    // Caller TATs (1 s out) outlive budget TATs (125 ms out).
    clock.advance(200 * MS);
    l.sweep();
    assert_eq!(l.stats().tracked_keys, 101);
    clock.advance(Duration::from_secs(5));
    l.sweep();
    assert_eq!(l.stats().tracked_keys, 0);
    // A swept key behaves exactly as a fresh one.
    let key = BudgetKey::new("tenant-0", true);
    for _ in 0..2 {
        assert!(now(&l, key, &b, None, Duration::ZERO).await.is_ok());
    }
    assert!(now(&l, key, &b, None, Duration::ZERO).await.is_err());
}

#[test]
fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
    let b = budget(8.0, 8);
    for (retry, want) in [(0, "1"), (1, "1"), (1000, "1"), (1001, "2"), (29_999, "30")] {
        let r = refusal(RefusalReason::Budget, Duration::from_millis(retry), &b, 0);
        assert_eq!(header(&r.headers(), "retry-after"), want, "{retry} ms");
    }
    let r = refusal(RefusalReason::Budget, 125 * MS, &budget(4.0, 8), 0);
    assert_eq!(
        header(&r.headers(), "ratelimit-policy"),
        "\"budget\";q=8;w=2"
    );
}

#[test]
fn settings_defaults_unknown_fields_and_redacted_url() {
    let s: LimiterSettings = serde_json::from_str("{}").unwrap();
    assert_eq!(s.default_live, budget(8.0, 2));
    assert_eq!(s.default_test, budget(4.0, 1));
    assert_eq!(
        (s.max_wait_ms, s.redis_timeout_ms, s.upstream_429_pause_secs),
        (300, 50, 30)
    );
    assert_eq!(
        (s.backend, s.fail, s.replicas),
        (Backend::Local, FailMode::Closed, 1)
    );
    assert!(serde_json::from_str::<LimiterSettings>(r#"{"burst": 3}"#).is_err());
    assert!(
        serde_json::from_str::<LimiterSettings>(
            r#"{"default_live": {"per_second": 8, "burst": 2, "x": 1}}"#
        )
        .is_err()
    );
    let s: LimiterSettings = serde_json::from_str(
        r#"{"backend": "redis", "redis_url": "redis://:hunter2@cache:6379", "fail": "local"}"#,
    )
    .unwrap();
    assert!(s.validate().is_ok());
    assert!(!format!("{s:?}").contains("hunter2"));
    let no_url = LimiterSettings {
        redis_url: None,
        ..s.clone()
    };
    assert!(no_url.validate().is_err());
    let zero = LimiterSettings {
        default_test: budget(0.0, 1),
        ..LimiterSettings::default()
    };
    assert!(zero.validate().is_err());
}

#[test]
fn reload_reports_only_settings_the_running_limiter_keeps() {
    let old = LimiterSettings::default();
    let per_request = LimiterSettings {
        enabled: false,
        max_wait_ms: 900,
        default_live: budget(1.0, 1),
        default_test: budget(1.0, 1),
        ..old.clone()
    };
    assert!(old.restart_only_changes(&per_request).is_empty());
    let restart = LimiterSettings {
        backend: Backend::Redis,
        redis_url: Some("redis://:hunter2@cache/".into()),
        fail: FailMode::Local,
        ..old.clone()
    };
    assert_eq!(
        old.restart_only_changes(&restart),
        vec!["backend", "redis_url", "fail"]
    );
}

#[test]
fn divided_budget_never_drops_below_one_request() {
    assert_eq!(budget(8.0, 8).divided(3), budget(8.0 / 3.0, 2));
    assert_eq!(budget(4.0, 1).divided(3).burst, 1);
    assert_eq!(budget(4.0, 1).divided(0), budget(4.0, 1));
}

fn unreachable_redis(fail: FailMode) -> LimiterSettings {
    // Port 1 on loopback refuses connections immediately.
    LimiterSettings {
        backend: Backend::Redis,
        redis_url: Some("redis://127.0.0.1:1/".into()),
        redis_timeout_ms: 200,
        fail,
        replicas: 2,
        ..LimiterSettings::default()
    }
}

#[tokio::test]
async fn redis_down_fail_closed_refuses_with_backend_unavailable() {
    let l = RateLimiter::new(&unreachable_redis(FailMode::Closed))
        .await
        .unwrap();
    let key = BudgetKey::new("acme", true);
    let r = l
        .acquire(key, &budget(8.0, 4), None, 300 * MS)
        .await
        .unwrap_err();
    assert_eq!(
        (r.reason, r.retry_after),
        (RefusalReason::BackendUnavailable, Duration::from_secs(1))
    );
    assert_eq!(l.stats().redis_errors, 1);
}

#[tokio::test]
async fn redis_down_fail_local_uses_this_replicas_share() {
    let l = RateLimiter::new(&unreachable_redis(FailMode::Local))
        .await
        .unwrap();
    let key = BudgetKey::new("acme", true);
    let b = budget(8.0, 4);
    // burst 4 / 2 replicas = 2 immediate, then refused (rate 4/s: 250 ms).
    for _ in 0..2 {
        assert!(l.acquire(key, &b, None, Duration::ZERO).await.is_ok());
    }
    let r = l.acquire(key, &b, None, Duration::ZERO).await.unwrap_err();
    assert_eq!(r.reason, RefusalReason::Budget);
    assert!(
        r.retry_after > 200 * MS && r.retry_after <= 250 * MS,
        "{:?}",
        r.retry_after
    );
    let s = l.stats();
    // One timed-out call, then Redis is left alone for a second.
    assert_eq!((s.fallbacks, s.redis_errors, s.admitted), (3, 1, 2));
}
