//! The rate-limit stage's part of the config: `[rate_limit]` checked, with
//! `redis_url` resolved.

use crate::config::{ConfigError, LimiterSettings, Origin};

impl LimiterSettings {
    /// Checks `[rate_limit]` and resolves `redis_url`: a reference (`env:NAME`
    /// / `file:PATH`) to a URL that may carry a password, or a literal
    /// `redis://host:port/db` without one. A literal URL with a password is
    /// refused, so passwords live only in secret stores, never in the config
    /// file. The result holds the resolved URL (redacted in its Debug).
    pub fn compile(raw: &LimiterSettings, o: &Origin<'_>) -> Result<LimiterSettings, ConfigError> {
        let mut out = raw.clone();
        if let Some(r) = &raw.redis_url {
            out.redis_url = Some(redis_url(r, o)?);
        }
        out.validate()
            .map_err(|e| o.err("rate_limit", e.to_string()))?;
        Ok(out)
    }
}

fn redis_url(r: &str, o: &Origin<'_>) -> Result<String, ConfigError> {
    const KEY: &str = "rate_limit.redis_url";
    let url = if r.starts_with("env:") || r.starts_with("file:") {
        o.resolve(KEY, r)?.expose().to_string()
    } else if url_has_password(r) {
        return Err(o.err(
            KEY,
            "a literal URL must not contain a password: put the whole URL in a secret \
             and reference it (env:NAME or file:PATH)",
        ));
    } else {
        r.to_string()
    };
    // The redis crate is built without TLS: a rediss:// URL would pass
    // here and then fail at start, so it is refused with the reason.
    if url.starts_with("rediss://") {
        return Err(o.err(
            KEY,
            "rediss:// (TLS) is not supported by this build: use redis:// on a private network",
        ));
    }
    if !url.starts_with("redis://") {
        return Err(o.err(KEY, "must be a redis:// URL (or a reference to one)"));
    }
    Ok(url)
}

/// Whether `scheme://user:password@host…` carries a non-empty password.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo.split_once(':').is_some_and(|(_, p)| !p.is_empty()),
        None => false,
    }
}
