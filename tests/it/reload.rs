//! Issue 7: reload without restart. Rotating a tenant's key file under load
//! loses no request, the upstream sees the new key after the swap and the
//! audit's key fingerprint shows the switch; an invalid config is refused
//! (metric) while the old snapshot keeps serving; limiter state survives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;

const KEY_A_ROTATED: &str = "test_ROTATEDKEYA44f0e1d2c3b";

fn reload_opts() -> Opts {
    Opts {
        extra: "[reload]\npoll_interval_ms = 50\n".into(),
        ..Opts::default()
    }
}

/// Replace a file the way operators and Kubernetes do: write aside, rename.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn refused_reloads(env: &TestEnv) -> f64 {
    metric_value(
        &env.metrics().await,
        "cubegate_config_reloads_total",
        &[("result", "refused")],
    )
}

#[tokio::test]
async fn rotating_a_key_file_under_load_loses_no_request() {
    let mut env = TestEnv::with(reload_opts()).await;
    let path = env.config_path.clone();
    env.gw.watch_config(path);
    let env = Arc::new(env);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (env, stop, failures, done) =
            (env.clone(), stop.clone(), failures.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = env.get(TOKEN_A, "/v1/clients").await;
                if r.status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed during rotation: {} {}", r.status, r.text);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    while done.load(Ordering::Relaxed) < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    replace_file(&env.dir.path().join("a-test-key"), KEY_A_ROTATED);
    // Wait until the upstream sees the new key, then keep the load on a bit.
    let mut swapped = false;
    for _ in 0..300 {
        let seen = env
            .recorded()
            .iter()
            .any(|r| r.header_values("authorization") == vec![KEY_A_ROTATED]);
        if seen {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(swapped, "the new key never reached the upstream");
    let after = done.load(Ordering::Relaxed);
    while done.load(Ordering::Relaxed) < after + 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during the key rotation"
    );
    // After the swap only the new key goes out: the last requests all carry it.
    let rec = env.recorded();
    let keys: Vec<String> = rec
        .iter()
        .map(|r| r.header_values("authorization").join(","))
        .collect();
    let first_new = keys.iter().position(|k| k == KEY_A_ROTATED).unwrap();
    assert!(keys[..first_new].iter().all(|k| k == KEY_A_TEST));
    // In-flight requests may finish on the old snapshot; later ones may not.
    let tail = &keys[(first_new + 8).min(keys.len())..];
    assert!(!tail.is_empty());
    assert!(
        tail.iter().all(|k| k == KEY_A_ROTATED),
        "old key used after the swap"
    );
    // The audit's key fingerprint shows the switch (and holds no key).
    let records = env.audit_records();
    let fps: Vec<&str> = records
        .iter()
        .filter(|r| r["caller"] == "a-all")
        .filter_map(|r| r["key_fingerprint"].as_str())
        .collect();
    assert!(fps.len() >= 40, "{}", fps.len());
    assert_ne!(fps.first(), fps.last(), "fingerprint did not change");
    let text = env.audit_text();
    assert_no_canary("audit", &text);
    assert!(!text.contains("ROTATEDKEY"));
}

#[tokio::test]
async fn invalid_config_is_refused_and_the_old_snapshot_keeps_serving() {
    let mut env = TestEnv::with(Opts {
        rate_limit: "default_test = { per_second = 0.001, burst = 4 }\ndefault_live = { per_second = 10000.0, burst = 10000 }\nmax_wait_ms = 0\n".into(),
        ..reload_opts()
    })
    .await;
    env.gw.watch_config(env.config_path.clone());
    // Spend 2 of the 4-token burst before any reload (a 3rd goes below).
    for _ in 0..2 {
        assert_eq!(env.get(TOKEN_A, "/v1/clients").await.status, 200);
    }
    let good = std::fs::read_to_string(&env.config_path).unwrap();
    let before = refused_reloads(&env).await;

    // 1: not TOML at all.
    replace_file(&env.config_path, "[listener\nthis is not toml");
    // 2 (after): a key of the wrong environment in a referenced key file.
    let mut refused = false;
    for _ in 0..200 {
        if refused_reloads(&env).await > before {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "broken config was not refused");
    let r = env.get(TOKEN_A, "/v1/clients").await;
    assert_eq!(r.status, 200, "old snapshot stopped serving: {}", r.text);

    // Counted before the files change: the watcher may refuse the reload
    // before a scrape taken afterwards returns.
    let before = refused_reloads(&env).await;
    replace_file(&env.config_path, &good);
    replace_file(&env.dir.path().join("a-test-key"), KEY_A_LIVE);
    let mut refused = false;
    for _ in 0..200 {
        if refused_reloads(&env).await > before {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "a live key in the test slot was not refused");
    // Still the old key, and the limiter kept its state across all of it:
    // the burst of 4 has one token left.
    env.sandbox.clear_recorded();
    assert_eq!(env.get(TOKEN_A, "/v1/clients").await.status, 200);
    assert_eq!(
        env.recorded()[0].header_values("authorization"),
        vec![KEY_A_TEST]
    );
    env.get(TOKEN_A, "/v1/clients")
        .await
        .assert_error(429, "rate_limit_exceeded");
}

#[tokio::test]
async fn sighup_reloads_the_real_binary_when_watching_is_off() {
    let opts = Opts {
        extra: "[reload]\nwatch = false\n".into(),
        ..Opts::default()
    };
    let mut gw = Served::start(opts, &[]).await;
    let (sandbox, dir) = (&gw.sandbox, &gw.dir);
    let http = http_client();
    let get = || async {
        http.get(gw.url("/v1/clients"))
            .header("authorization", TOKEN_A)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(get().await, 200);
    replace_file(&dir.path().join("a-test-key"), KEY_A_ROTATED);
    // Not watching: the old key stays until SIGHUP.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get().await, 200);
    assert!(
        sandbox
            .recorded()
            .iter()
            .all(|r| r.header_values("authorization") == vec![KEY_A_TEST])
    );
    gw.signal("HUP");
    let mut swapped = false;
    for _ in 0..100 {
        assert_eq!(get().await, 200);
        if sandbox
            .recorded()
            .last()
            .unwrap()
            .header_values("authorization")
            == vec![KEY_A_ROTATED]
        {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(swapped, "SIGHUP did not reload: {}", gw.logs());
    assert!(gw.logs().contains("config reloaded"));
    gw.signal("TERM");
    assert_eq!(gw.wait().await, Some(0));
    assert_no_canary("serve logs", &gw.logs());
    assert!(!gw.logs().contains("ROTATEDKEY"));
}
