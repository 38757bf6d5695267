//! What `check-config` prints: the compiled config described for a human,
//! with references (`env:NAME`, `file:PATH`) in place of secret values.

use super::Snapshot;
use crate::config::RawConfig;
use crate::model::Environment;
use crate::operations::OPERATIONS;
use crate::pipeline::rate_limit::Budget;
use crate::secret::Secret;

/// A human summary for `check-config` of `raw` as compiled into `s`: no
/// secret values, only references and whether each key resolved.
pub fn summary(raw: &RawConfig, s: &Snapshot) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "config: {} (ok)", s.source);
    let _ = writeln!(
        out,
        "listener: {}  admin: {}",
        raw.listener.address, raw.admin.address
    );
    let _ = writeln!(
        out,
        "upstream: {} (connect {} ms, response {} ms, extra CA: {})",
        s.upstream.base,
        s.upstream.connect_timeout.as_millis(),
        s.upstream.response_timeout.as_millis(),
        if s.upstream.ca_pem.is_some() {
            "yes"
        } else {
            "no"
        }
    );
    for (t, rt) in s.tenants.iter().zip(&raw.tenants) {
        let show = |k: &Option<Secret>, r: &Option<String>| match (k, r) {
            (Some(_), Some(r)) => format!("{r} -> <redacted>"),
            _ => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "tenant {}: live {}; test {}",
            t.id,
            show(&t.live_key, &rt.live_key),
            show(&t.test_key, &rt.test_key)
        );
    }
    for c in &raw.callers {
        let _ = writeln!(
            out,
            "caller {}: tenant {} env {} ops [{}] token sha256 {}…",
            c.id,
            c.tenant,
            c.environment.as_str(),
            c.operations.join(", "),
            &c.token_sha256[..8.min(c.token_sha256.len())]
        );
        if let Some(san) = &c.cert_san {
            let _ = writeln!(out, "caller {}: client certificate SAN {san}", c.id);
        }
    }
    rate_limit_summary(&mut out, raw, s);
    let _ = writeln!(
        out,
        "operations: {} served, default body cap {} B, upload cap {} B",
        OPERATIONS.len(),
        raw.body.default_max_bytes,
        raw.body.upload_max_bytes
    );
    out
}

/// The effective limits, as `check-config` prints them. The Redis URL is
/// never printed (it may hold a password): only its reference, or "literal".
fn rate_limit_summary(out: &mut String, raw: &RawConfig, s: &Snapshot) {
    use crate::pipeline::rate_limit::{Backend, FailMode};
    use std::fmt::Write;
    let rl = &s.rate_limit;
    if !rl.enabled {
        let _ = writeln!(
            out,
            "rate limit: {}",
            crate::pipeline::rate_limit::OFF_NOTICE
        );
        return;
    }
    let b = |b: &Budget| format!("{}/s burst {}", b.per_second, b.burst);
    let backend = match rl.backend {
        Backend::Local => "local (this process only)".to_string(),
        Backend::Redis => {
            let url = match raw.rate_limit.redis_url.as_deref() {
                Some(r) if r.starts_with("env:") || r.starts_with("file:") => {
                    format!("{r} -> <redacted>")
                }
                Some(_) => "literal URL without password".to_string(),
                None => "-".to_string(),
            };
            let fail = match rl.fail {
                FailMode::Closed => {
                    "closed (refuse with 429 while Redis is unavailable)".to_string()
                }
                FailMode::Local => format!(
                    "local (budget / {} replicas in-process while Redis is unavailable)",
                    rl.replicas
                ),
            };
            format!(
                "redis {url}, timeout {} ms, fail {fail}",
                rl.redis_timeout_ms
            )
        }
    };
    let _ = writeln!(out, "rate limit: backend {backend}");
    let _ = writeln!(
        out,
        "rate limit: default live {}, test {}; max wait {} ms, at most {} waiting per key; \
         upstream 429 without Retry-After pauses the key {} s",
        b(&rl.default_live),
        b(&rl.default_test),
        rl.max_wait_ms,
        rl.max_waiters,
        rl.upstream_429_pause_secs
    );
    for t in &s.tenants {
        let envs = [
            (Environment::Live, t.live_key.is_some(), t.budgets.live),
            (Environment::Test, t.test_key.is_some(), t.budgets.test),
        ];
        let parts: Vec<String> = envs
            .iter()
            .filter(|(_, has_key, _)| *has_key)
            .map(|(env, _, own)| {
                let how = if own.is_some() { "override" } else { "default" };
                format!("{} {} ({how})", env.as_str(), b(&t.budget(*env, rl)))
            })
            .collect();
        let _ = writeln!(out, "rate limit: tenant {}: {}", t.id, parts.join("; "));
    }
    for c in &raw.callers {
        if c.quota.is_none() && c.max_wait_ms.is_none() {
            continue;
        }
        let quota = c.quota.as_ref().map_or("none".to_string(), &b);
        let wait = c.max_wait_ms.unwrap_or(rl.max_wait_ms);
        let _ = writeln!(
            out,
            "rate limit: caller {}: quota {quota}, max wait {wait} ms",
            c.id
        );
    }
}
