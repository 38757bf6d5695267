//! Issue 4: rate limiting and shaping, black-box through real gateways.
//!
//! Metrics are process-wide (one Prometheus recorder for the whole test
//! binary), so assertions about one tenant's metrics use a tenant that only
//! one test configures; per-gateway facts come from the gateway's own limiter
//! stats. No test asserts a wall-clock duration: time bounds are computed
//! from what the test itself measured, and timeouts only guard against hangs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cubegate::Gateway;
use cubegate::config::{self, ConfigSource};
use cubegate::sandbox::{FaultMode, SandboxOptions};
use cubegate::secret;

use crate::common::*;

#[path = "../util/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

/// A tenant and one caller of it that only the test using it configures
/// (for metric labels no other test touches). Its key lives in `dir`.
fn own_tenant(dir: &std::path::Path, id: &str, token: &str, budget: &str) -> String {
    let key = dir.join(format!("{id}-key"));
    write(&key, &format!("test_{id}-ownkey"));
    format!(
        r#"
[[tenants]]
id = "{id}"
test_key = "file:{key}"
rate_limit = {{ test = {budget} }}

[[callers]]
id = "{id}-svc"
token_sha256 = "{hash}"
tenant = "{id}"
environment = "test"
operations = ["*"]
"#,
        key = key.display(),
        hash = secret::sha256_hex(token.as_bytes()),
    )
}

fn rate_limit_opts(rate_limit: &str) -> Opts {
    Opts {
        rate_limit: rate_limit.into(),
        audit: false,
        ..Opts::default()
    }
}

/// `n` concurrent `GET /v1/clients` with `token`; statuses in request order.
async fn burst(env: &TestEnv, token: &str, n: usize) -> Vec<Resp> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (http, url, token) = (env.http.clone(), env.url("/v1/clients"), token.to_string());
        tasks.push(tokio::spawn(async move {
            Resp::from(
                http.get(url)
                    .header("authorization", token)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn count(rs: &[Resp], status: u16) -> usize {
    rs.iter().filter(|r| r.status.as_u16() == status).count()
}

fn header<'a>(r: &'a Resp, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header: {:?}", r.headers))
}

/// cubegate's own 429: ComplyCube-shaped body with request id, whole-second
/// `Retry-After` >= 1 and the IETF draft headers for `policy` ("budget" or
/// "caller").
fn assert_refused(r: &Resp, policy: &str) {
    r.assert_error(429, "rate_limit_exceeded");
    let retry: u64 = header(r, "retry-after")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(retry >= 1);
    assert!(
        header(r, "ratelimit-policy").starts_with(&format!("\"{policy}\";q=")),
        "{:?}",
        r.headers
    );
    assert!(
        header(r, "ratelimit").starts_with(&format!("\"{policy}\";r=0;t=")),
        "{:?}",
        r.headers
    );
}

/// Metric lines of `name` carrying `label` that counted something.
fn metric_lines<'a>(metrics: &'a str, name: &str, label: &str) -> Vec<&'a str> {
    // Non-zero lines only: series the dashboard queries exist at zero from
    // start, so "counted something" is the claim, not "exists".
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) != Some(0.0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_flooding_at_20x_its_budget_does_not_delay_another() {
    let keys = tempfile::tempdir().unwrap();
    const CALM: &str = "cgw_limits_calm_token_0000000000000000000000000000000000000000001";
    let mut opts = rate_limit_opts(
        "max_wait_ms = 400\nmax_waiters = 20\ndefault_test = { per_second = 5.0, burst = 5 }",
    );
    opts.extra = own_tenant(
        keys.path(),
        "iso-calm",
        CALM,
        "{ per_second = 100.0, burst = 20 }",
    );
    let env = TestEnv::with(opts).await;

    // Tenant A: 100 concurrent requests (20x its 5/s), while the calm tenant
    // sends 15 of its own.
    let flood = {
        let http = env.http.clone();
        let url = env.url("/v1/clients");
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..100 {
                let (http, url) = (http.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    http.get(url)
                        .header("authorization", TOKEN_A)
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                }));
            }
            let mut statuses = Vec::new();
            for t in tasks {
                statuses.push(t.await.unwrap());
            }
            statuses
        })
    };
    let calm = burst(&env, CALM, 15).await;
    let flood = flood.await.unwrap();

    for r in &calm {
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert!(flood.iter().all(|s| *s == 200 || *s == 429), "{flood:?}");
    let flood_refused = flood.iter().filter(|s| **s == 429).count();
    assert!(flood_refused > 0, "the flood was not limited: {flood:?}");
    let stats = env.gw.shared().limiter.stats();
    assert!(stats.waits > 0, "the flood was not shaped: {stats:?}");

    // The calm tenant was never delayed nor refused; the flooding one was.
    let m = env.metrics().await;
    assert_eq!(
        metric_lines(&m, "cubegate_requests_total", "tenant=\"iso-calm\"").len(),
        1,
        "{m}"
    );
    for name in [
        "cubegate_rate_limit_waits_total",
        "cubegate_rate_limit_wait_seconds",
        "cubegate_rate_limit_refusals_total",
    ] {
        assert!(
            metric_lines(&m, name, "tenant=\"iso-calm\"").is_empty(),
            "{name}: {m}"
        );
    }
    assert!(!metric_lines(&m, "cubegate_rate_limit_waits_total", "tenant=\"tenant-a\"").is_empty());
    assert!(
        !metric_lines(
            &m,
            "cubegate_rate_limit_refusals_total",
            "reason=\"budget\""
        )
        .is_empty(),
        "{m}"
    );
    // Everything the calm tenant sent reached the upstream with its key.
    let calm_upstream = env
        .recorded()
        .iter()
        .filter(|r| r.header_values("authorization") == vec!["test_iso-calm-ownkey"])
        .count();
    assert_eq!(calm_upstream, 15);
}

/// `[rate_limit] enabled = false` (what the load bench's `cg-norl` measures):
/// no budget or quota applies, every request is forwarded; a reload that
/// turns it back on applies the same budget from the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limiting_off_forwards_everything_and_a_reload_turns_it_back_on() {
    let tight = "max_wait_ms = 0\ndefault_test = { per_second = 1.0, burst = 1 }\n";
    let env = TestEnv::with(rate_limit_opts(&format!("enabled = false\n{tight}"))).await;
    let off = burst(&env, TOKEN_A, 10).await;
    assert_eq!(count(&off, 200), 10);
    // The quota caller (1/s, burst 1, no wait) too.
    let quota = burst(&env, TOKEN_A_QUOTA, 5).await;
    assert_eq!(count(&quota, 200), 5);
    assert_eq!(env.gw.shared().limiter.stats().refusals, 0);
    assert_eq!(env.sandbox.faults().api_hits(), 15);
    // An upstream 429 reaches the caller and pauses nothing: neither now nor
    // (a 60 s pause would refuse with "paused") once it is back on.
    env.sandbox.faults().set_times(
        FaultMode::Status {
            status: 429,
            retry_after: Some(60),
        },
        1,
    );
    let upstream = burst(&env, TOKEN_A, 1).await;
    // ComplyCube's own answer, passed through (not one cubegate made).
    assert_eq!(upstream[0].status, 429);
    assert!(upstream[0].headers.get("ratelimit-policy").is_none());
    assert_eq!(count(&burst(&env, TOKEN_A, 3).await, 200), 3);
    assert_eq!(env.sandbox.faults().api_hits(), 19);

    // Back on: the same config without `enabled = false`, reloaded.
    env.rewrite_config(&rate_limit_opts(tight));
    assert!(env.gw.shared().runtime().snapshot.rate_limit.enabled);
    let started = Instant::now();
    let on = burst(&env, TOKEN_A, 10).await;
    let elapsed = started.elapsed();
    let passed = count(&on, 200);
    // Burst 1 at 1/s and no wait: one, plus one per second the burst took.
    assert!(
        passed >= 1 && passed as u64 <= 1 + elapsed.as_secs(),
        "{passed} of 10 passed in {elapsed:?}"
    );
    for r in on.iter().filter(|r| r.status != 200) {
        assert_refused(r, "budget");
    }
    assert_eq!(env.sandbox.faults().api_hits(), 19 + passed as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_quota_protects_the_other_callers_of_the_tenant() {
    let env = TestEnv::with(rate_limit_opts(
        "default_test = { per_second = 100.0, burst = 100 }",
    ))
    .await;
    let started = Instant::now();
    let greedy = burst(&env, TOKEN_A_QUOTA, 20).await;
    let polite = burst(&env, TOKEN_A, 20).await;
    let elapsed = started.elapsed();

    // a-quota: 1/s, burst 1, no wait.
    let admitted = count(&greedy, 200) as u64;
    assert!(
        admitted >= 1 && admitted <= 1 + elapsed.as_secs(),
        "{admitted}"
    );
    for r in greedy.iter().filter(|r| r.status != 200) {
        assert_refused(r, "caller");
        assert_eq!(header(r, "ratelimit-policy"), "\"caller\";q=1;w=1");
    }
    // a-all, same tenant and upstream key: untouched by a-quota's refusals.
    assert_eq!(count(&polite, 200), 20);
    let s = env.gw.shared().limiter.stats();
    assert_eq!(s.refused.caller_quota, 20 - admitted);
    assert_eq!(s.refused.budget, 0);
    assert_eq!(env.sandbox.faults().api_hits(), 20 + admitted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_burst_waits_for_its_slot_and_beyond_max_wait_gets_429() {
    let env = TestEnv::with(Opts {
        rate_limit: "max_wait_ms = 600\ndefault_test = { per_second = 10.0, burst = 2 }".into(),
        ..Opts::default()
    })
    .await;

    // 6 at once: 2 pass, 4 wait 100..400 ms for their slots. None refused.
    let first = burst(&env, TOKEN_A, 6).await;
    assert_eq!(count(&first, 200), 6);
    let s = env.gw.shared().limiter.stats();
    assert_eq!((s.waits, s.refusals), (4, 0));

    // 30 more at once: only slots within 600 ms are handed out; the rest
    // are refused at once and never forwarded.
    let second = burst(&env, TOKEN_A, 30).await;
    let ok = count(&second, 200);
    assert!((1..30).contains(&ok), "{ok}");
    for r in second.iter().filter(|r| r.status != 200) {
        assert_refused(r, "budget");
        assert_eq!(header(r, "ratelimit-policy"), "\"budget\";q=2;w=1");
    }
    assert_eq!(env.sandbox.faults().api_hits() as usize, 6 + ok);
    assert_eq!(env.recorded().len(), 6 + ok);
    let s = env.gw.shared().limiter.stats();
    assert_eq!(s.refused.budget as usize, 30 - ok);

    // Refusals are in the audit trail as rate-limit refusals.
    env.gw.shared().audit().unwrap().flush().await.unwrap();
    let refused = env
        .audit_records()
        .iter()
        .filter(|r| r["decision"] == "refused_rate_limit")
        .count();
    assert_eq!(refused, 30 - ok, "{:?}", env.audit_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_never_sees_more_than_the_budget_in_any_second() {
    // ComplyCube-like upstream limit of 10/s per key; cubegate at the
    // production ratio (8/s, burst 2: at most 9 in any second).
    let env = TestEnv::with(Opts {
        rate_limit: "max_wait_ms = 300\ndefault_test = { per_second = 8.0, burst = 2 }".into(),
        audit: false,
        sandbox: SandboxOptions {
            rate_limit_per_sec: Some(10),
            ..SandboxOptions::default()
        },
        ..Opts::default()
    })
    .await;
    let env = Arc::new(env);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..8 {
        let env = Arc::clone(&env);
        workers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut upstream_429 = 0;
            while started.elapsed() < Duration::from_millis(2500) {
                let r = env.get(TOKEN_A, "/v1/clients").await;
                if r.status == 429 && r.json.get("requestId").is_none() {
                    upstream_429 += 1;
                }
                statuses.push(r.status.as_u16());
            }
            (statuses, upstream_429)
        }));
    }
    let mut statuses = Vec::new();
    let mut upstream_429 = 0;
    for w in workers {
        let (s, u) = w.await.unwrap();
        statuses.extend(s);
        upstream_429 += u;
    }
    let elapsed = started.elapsed();

    assert_eq!(upstream_429, 0, "ComplyCube (the sandbox) answered 429");
    assert_eq!(env.gw.shared().limiter.stats().pauses, 0);
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429));
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!(statuses.len() > admitted, "the flood was not limited");
    // GCRA: never more than burst + rate x time.
    assert!(
        admitted as f64 <= 2.0 + 8.0 * elapsed.as_secs_f64(),
        "{admitted} in {elapsed:?}"
    );
    // What the sandbox recorded, in any one-second window: at most
    // rate + burst (9 by the algorithm; the +1 absorbs the transit jitter
    // between the gateway's slot and the sandbox's timestamp).
    let mut at: Vec<u128> = env.recorded().iter().map(|r| r.at_ms).collect();
    at.sort_unstable();
    assert_eq!(at.len(), admitted);
    let worst = (0..at.len())
        .map(|i| at[i..].iter().take_while(|t| **t < at[i] + 1000).count())
        .max()
        .unwrap_or(0);
    println!("sandbox: {admitted} requests in {elapsed:?}, at most {worst} in any second");
    assert!(worst <= 10, "{worst} requests within one second upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_429_passes_through_and_pauses_the_key() {
    let env = TestEnv::with(rate_limit_opts("")).await;
    assert_eq!(env.get(TOKEN_A, "/v1/clients").await.status, 200);
    env.sandbox.faults().set_times(
        FaultMode::Status {
            status: 429,
            retry_after: Some(1),
        },
        1,
    );
    // ComplyCube's own 429, unchanged (its body has no cubegate request id).
    let r = env.get(TOKEN_A, "/v1/clients").await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json,
        serde_json::json!({"type": "rate_limit_exceeded",
            "message": "You have exceeded the rate limit for your plan"})
    );
    assert_eq!(header(&r, "retry-after"), "1");
    let hits = env.sandbox.faults().api_hits();

    // Inside the pause: cubegate answers 429 itself, nothing goes upstream.
    let r = env.get(TOKEN_A, "/v1/clients").await;
    assert_refused(&r, "budget");
    assert_eq!(header(&r, "retry-after"), "1");
    // Other keys are not paused: tenant A's live key, tenant B.
    assert_eq!(env.get(TOKEN_A_LIVE, "/v1/clients").await.status, 200);
    assert_eq!(env.get(TOKEN_B, "/v1/clients").await.status, 200);
    let s = env.gw.shared().limiter.stats();
    assert_eq!((s.pauses, s.refused.paused), (1, 1));
    assert_eq!(env.sandbox.faults().api_hits(), hits + 2);

    // After the pause the key works again; every attempt before that was
    // answered by cubegate without reaching the sandbox.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refused_meanwhile = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let r = env.get(TOKEN_A, "/v1/clients").await;
        if r.status == 200 {
            break;
        }
        assert_refused(&r, "budget");
        refused_meanwhile += 1;
        assert!(Instant::now() < deadline, "the key stayed paused");
    }
    assert_eq!(env.sandbox.faults().api_hits(), hits + 3);
    assert_eq!(
        env.gw.shared().limiter.stats().refused.paused,
        1 + refused_meanwhile
    );
    let m = env.metrics().await;
    assert!(
        !metric_lines(&m, "cubegate_key_pauses_total", "tenant=\"tenant-a\"").is_empty(),
        "{m}"
    );
    assert!(
        !metric_lines(
            &m,
            "cubegate_rate_limit_refusals_total",
            "reason=\"paused\""
        )
        .is_empty(),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_new_tenant_budgets_to_the_running_limiter() {
    let keys = tempfile::tempdir().unwrap();
    const TOKEN: &str = "cgw_limits_reload_token_00000000000000000000000000000000000000001";
    let opts_with = |budget: &str| {
        let mut o = rate_limit_opts("max_wait_ms = 0");
        o.extra = own_tenant(keys.path(), "reload-t", TOKEN, budget);
        o
    };
    let env = TestEnv::with(opts_with("{ per_second = 1.0, burst = 1 }")).await;
    let reload = |budget: &str| env.rewrite_config(&opts_with(budget));

    let started = Instant::now();
    assert_eq!(env.get(TOKEN, "/v1/clients").await.status, 200);
    let r = env.get(TOKEN, "/v1/clients").await;
    assert_refused(&r, "budget");
    assert_eq!(header(&r, "ratelimit-policy"), "\"budget\";q=1;w=1");

    // Burst 1 -> 5: the request already admitted counts against the new
    // burst, so 4 more pass now (plus one per second the test has taken).
    reload("{ per_second = 1.0, burst = 5 }");
    let after = burst(&env, TOKEN, 10).await;
    let ok = count(&after, 200) as u64;
    let elapsed = started.elapsed().as_secs();
    assert!(ok >= 4 && ok <= 4 + elapsed, "{ok} admitted");
    for r in after.iter().filter(|r| r.status != 200) {
        assert_refused(r, "budget");
        assert_eq!(header(r, "ratelimit-policy"), "\"budget\";q=5;w=5");
    }
    // And back down: the state carried over, so the next one is refused.
    reload("{ per_second = 1.0, burst = 1 }");
    let r = env.get(TOKEN, "/v1/clients").await;
    assert_refused(&r, "budget");
    assert_eq!(header(&r, "ratelimit-policy"), "\"budget\";q=1;w=1");
}

/// Three gateways with `backend = "redis"` (URL by file reference) in front
/// of one sandbox; tenant A's test key has a burst of 20 and a rate so low
/// (1 per 1000 s) that the allowed number during the run is exactly 20.
struct Replicas {
    env: TestEnv,
    others: Vec<Gateway>,
    redis: RedisServer,
    _refs: tempfile::TempDir,
}

impl Replicas {
    async fn start(fail: &str) -> Replicas {
        let redis = RedisServer::start().await;
        let refs = tempfile::tempdir().unwrap();
        let url_file = refs.path().join("redis-url");
        write(&url_file, &redis.url);
        let env = TestEnv::with(rate_limit_opts(&format!(
            "backend = \"redis\"\nredis_url = \"file:{}\"\nredis_timeout_ms = 10000\n\
             fail = \"{fail}\"\nreplicas = 3\nmax_wait_ms = 0\n\
             default_test = {{ per_second = 0.001, burst = 20 }}",
            url_file.display()
        )))
        .await;
        let mut others = Vec::new();
        for _ in 0..2 {
            let snap = config::load(
                &ConfigSource::File(&env.config_path),
                &Default::default(),
                &secret::ProcessEnv,
            )
            .unwrap();
            others.push(Gateway::start(snap).await.unwrap());
        }
        Replicas {
            env,
            others,
            redis,
            _refs: refs,
        }
    }

    fn gateways(&self) -> Vec<&Gateway> {
        std::iter::once(&self.env.gw).chain(&self.others).collect()
    }

    /// `n` concurrent requests spread round-robin over the three gateways;
    /// a client timeout guards against hangs (it is not a speed assertion).
    async fn flood(&self, token: &str, n: usize) -> Vec<Resp> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        let urls: Vec<String> = self
            .gateways()
            .iter()
            .map(|g| format!("{}/v1/clients", g.url()))
            .collect();
        let mut tasks = Vec::new();
        for i in 0..n {
            let (http, url, token) = (http.clone(), urls[i % 3].clone(), token.to_string());
            tasks.push(tokio::spawn(async move {
                let r = http
                    .get(url)
                    .header("authorization", token)
                    .send()
                    .await
                    .expect("a request hung or failed");
                Resp::from(r).await
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    fn stats_sum(&self, f: impl Fn(cubegate::pipeline::rate_limit::LimiterStats) -> u64) -> u64 {
        self.gateways()
            .iter()
            .map(|g| f(g.shared().limiter.stats()))
            .sum()
    }

    /// 300 concurrent requests for one key: exactly the burst is admitted.
    /// (The Redis timeout is generous: this proves accuracy, not latency, on
    /// a busy CI machine; `tests/redis_limiter.rs` covers a hung Redis.)
    async fn shared_budget_is_exact(&self) {
        let started = Instant::now();
        let rs = self.flood(TOKEN_A, 300).await;
        let elapsed = started.elapsed();
        let admitted = count(&rs, 200) as u64;
        let allowed = 20 + (0.001 * elapsed.as_secs_f64()) as u64;
        println!(
            "3 replicas via redis, 300 concurrent: admitted {admitted}, allowed {allowed} \
             ({elapsed:?})"
        );
        assert_eq!(admitted, allowed);
        for r in rs.iter().filter(|r| r.status != 200) {
            assert_refused(r, "budget");
        }
        assert_eq!(self.env.sandbox.faults().api_hits(), admitted);
        assert_eq!(self.stats_sum(|s| s.refused.budget), 300 - admitted);
        assert_eq!(self.stats_sum(|s| s.redis_errors), 0);
    }

    /// Traffic while Redis is killed: every request completes (200 or 429).
    async fn kill_redis_mid_run(&mut self) {
        let traffic = {
            let http = http_client();
            let url = format!("{}/v1/clients", self.others[0].url());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..40 {
                    let r = tokio::time::timeout(
                        Duration::from_secs(15),
                        http.get(&url).header("authorization", TOKEN_A).send(),
                    )
                    .await
                    .expect("a request hung while Redis went away")
                    .unwrap();
                    statuses.push(r.status().as_u16());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                statuses
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.redis.kill();
        let statuses = traffic.await.unwrap();
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 429),
            "{statuses:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_one_budget_through_redis_and_fail_closed() {
    let mut r = Replicas::start("closed").await;
    r.shared_budget_is_exact().await;
    r.kill_redis_mid_run().await;

    // Redis gone, fail = "closed": every request is refused by cubegate
    // (Retry-After 1) and none reaches the upstream.
    let hits = r.env.sandbox.faults().api_hits();
    let before = r.stats_sum(|s| s.refused.backend_unavailable);
    let rs = r.flood(TOKEN_B, 30).await;
    for resp in &rs {
        assert_refused(resp, "budget");
        assert_eq!(header(resp, "retry-after"), "1");
    }
    assert_eq!(r.env.sandbox.faults().api_hits(), hits);
    assert_eq!(r.stats_sum(|s| s.refused.backend_unavailable) - before, 30);
    assert!(r.stats_sum(|s| s.redis_errors) >= 1);
    let m = r.env.metrics().await;
    assert!(
        !metric_lines(
            &m,
            "cubegate_rate_limit_refusals_total",
            "reason=\"backend_unavailable\""
        )
        .is_empty(),
        "{m}"
    );
    assert!(
        m.contains("cubegate_rate_limit_backend_errors_total"),
        "{m}"
    );
    for g in r.others.drain(..) {
        g.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_fall_back_to_their_share_when_redis_dies_and_fail_local() {
    let mut r = Replicas::start("local").await;
    r.shared_budget_is_exact().await;
    r.kill_redis_mid_run().await;

    // Redis gone, fail = "local": each gateway decides alone at budget / 3
    // (burst 20 / 3 = 6). Tenant B's key is untouched so far: exactly 18.
    let hits = r.env.sandbox.faults().api_hits();
    let rs = r.flood(TOKEN_B, 60).await;
    let admitted = count(&rs, 200) as u64;
    println!("fail = local, 3 replicas: admitted {admitted} of 60, allowed 3 x 6 = 18");
    assert_eq!(admitted, 18);
    for resp in rs.iter().filter(|x| x.status != 200) {
        assert_refused(resp, "budget");
    }
    assert_eq!(r.env.sandbox.faults().api_hits(), hits + 18);
    for g in r.gateways() {
        let s = g.shared().limiter.stats();
        assert!(s.fallbacks >= 20, "{s:?}");
    }
    let m = r.env.metrics().await;
    assert!(m.contains("cubegate_rate_limit_fallbacks_total"), "{m}");
    for g in r.others.drain(..) {
        g.shutdown().await;
    }
}
