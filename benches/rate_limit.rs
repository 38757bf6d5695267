//! Decision cost per request of the rate limiter: in-process GCRA versus one
//! Lua script round trip to a local `redis-server` (started here on a free
//! port; the bench fails if the binary is missing). Budgets are large enough
//! that every request is admitted, so this measures the decision, not waiting.

// Test support code: a failed setup step must stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use cubegate::pipeline::rate_limit::{Backend, Budget, BudgetKey, LimiterSettings, RateLimiter};

const OPEN: Budget = Budget {
    per_second: 1e9,
    burst: 1_000_000_000,
};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis(rt: &tokio::runtime::Runtime) -> (Server, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start `redis-server` ({e}); install it to run this bench")
        });
    let url = format!("redis://127.0.0.1:{port}/");
    let client = redis::Client::open(url.as_str()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    rt.block_on(async {
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                break;
            }
            assert!(Instant::now() < deadline, "redis-server did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (Server(child), url)
}

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

    let (_server, url) = start_redis(&rt);
    let settings = LimiterSettings {
        backend: Backend::Redis,
        redis_url: Some(url),
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
