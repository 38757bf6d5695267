//! Decision cost per request of the rate limiter: in-process GCRA versus one
//! Lua script round trip to a local `redis-server` (started here on a free
//! port; the bench fails if the binary is missing). Budgets are large enough
//! that every request is admitted, so this measures the decision, not waiting.

// Test support code: a failed setup step must stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use cubegate::pipeline::rate_limit::{Backend, Budget, BudgetKey, LimiterSettings, RateLimiter};

const OPEN: Budget = Budget {
    per_second: 1e9,
    burst: 1_000_000_000,
};

#[path = "../tests/util/redis_server.rs"]
mod redis_server;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = BudgetKey::new("acme", true);
    let caller = Budget {
        per_second: 1e9,
        burst: 1_000_000_000,
    };

    let local = rt
        .block_on(RateLimiter::new(&LimiterSettings::default()))
        .unwrap();
    // What driving one future costs by itself, to subtract from the rest.
    c.bench_function("baseline: block_on(ready)", |b| {
        b.iter(|| rt.block_on(async { black_box(1) }))
    });
    c.bench_function("local: budget", |b| {
        b.iter(|| rt.block_on(local.acquire(black_box(key), &OPEN, None, Duration::ZERO)))
    });
    c.bench_function("local: budget + caller quota", |b| {
        b.iter(|| rt.block_on(local.acquire(key, &OPEN, Some(("svc", &caller)), Duration::ZERO)))
    });

    let server = rt.block_on(redis_server::RedisServer::start());
    let settings = LimiterSettings {
        backend: Backend::Redis,
        redis_url: Some(server.url.clone()),
        redis_timeout_ms: 1000,
        ..LimiterSettings::default()
    };
    let shared = rt.block_on(RateLimiter::new(&settings)).unwrap();
    c.bench_function("redis: budget", |b| {
        b.iter(|| rt.block_on(shared.acquire(black_box(key), &OPEN, None, Duration::ZERO)))
    });
    c.bench_function("redis: budget + caller quota", |b| {
        b.iter(|| rt.block_on(shared.acquire(key, &OPEN, Some(("svc", &caller)), Duration::ZERO)))
    });
    assert_eq!(
        shared.stats().redis_errors,
        0,
        "redis calls failed during the bench"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = bench
}
criterion_main!(benches);
