//! Checks of the raw settings that belong to no pipeline stage: listen
//! addresses, connection bounds, the sampling ratio, tenant and caller ids,
//! certificate SANs, tenant key references and the upstream target.
//! Stage sections (`[validation]`, `[policy]`, `[rate_limit]`, `[audit]`)
//! are checked by the stage that compiles them.

use std::time::Duration;

use super::{ConfigError, Origin, RawConfig, UpstreamSettings};
use crate::model::Environment;
use crate::secret::Secret;

/// Listener and admin addresses, the listener's connection bound and the
/// trace sampling ratio.
pub fn validate_settings(raw: &RawConfig, o: &Origin<'_>) -> Result<(), ConfigError> {
    for (key, addr) in [
        ("listener.address", &raw.listener.address),
        ("admin.address", &raw.admin.address),
    ] {
        addr.parse::<std::net::SocketAddr>()
            .map_err(|_| o.err(key, "must be host:port with an IP address"))?;
    }
    if raw.listener.max_connections == 0 {
        return Err(o.err("listener.max_connections", "must be at least 1"));
    }
    if raw
        .telemetry
        .sample_ratio
        .is_some_and(|r| !(0.0..=1.0).contains(&r))
    {
        return Err(o.err("telemetry.sample_ratio", "must be between 0.0 and 1.0"));
    }
    Ok(())
}

/// A tenant id (`key` is e.g. `tenants[0]`): non-empty `[A-Za-z0-9._-]`.
pub fn validate_tenant_id(id: &str, key: &str, o: &Origin<'_>) -> Result<(), ConfigError> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(o.err(format!("{key}.id"), "must be non-empty [A-Za-z0-9._-]"));
    }
    Ok(())
}

/// A caller id (`key` is e.g. `callers[0]`): non-empty `[A-Za-z0-9._:@-]`.
pub fn validate_caller_id(id: &str, key: &str, o: &Origin<'_>) -> Result<(), ConfigError> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c))
    {
        return Err(o.err(format!("{key}.id"), "must be non-empty [A-Za-z0-9._:@-]"));
    }
    Ok(())
}

/// Resolve a tenant's key reference at `key` (e.g. `tenants[0].live_key`)
/// and check the key belongs to `env` (a `live_` key in the test slot is a
/// mix-up that would reach the wrong ComplyCube environment).
pub fn resolve_tenant_key(
    r: Option<&str>,
    key: &str,
    env: Environment,
    o: &Origin<'_>,
) -> Result<Option<Secret>, ConfigError> {
    let Some(r) = r else { return Ok(None) };
    let s = o.resolve(key, r)?;
    if !s.expose().starts_with(env.key_prefix()) {
        return Err(o.err(
            key,
            format!(
                "the referenced key does not start with `{}`: wrong environment",
                env.key_prefix()
            ),
        ));
    }
    Ok(Some(s))
}

/// `spiffe://…` (any URI) stays as written; `dns:Name` is lower-cased.
pub fn normalise_san(s: &str) -> Option<String> {
    if let Some(name) = s.strip_prefix("dns:") {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.*".contains(c));
        return ok.then(|| format!("dns:{}", name.to_ascii_lowercase()));
    }
    let (scheme, rest) = s.split_once("://")?;
    let ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then(|| s.to_string())
}

/// Where requests go upstream.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    /// Base URL without a trailing slash, e.g. `https://api.complycube.com/v1`.
    pub base: String,
    pub authority: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub ca_pem: Option<Vec<u8>>,
    pub webpki_roots: bool,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub max_connections: usize,
    pub http2: bool,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    /// Pass the caller's `tracestate` on (`traceparent` always goes).
    pub forward_tracestate: bool,
}

impl UpstreamTarget {
    /// Check `[upstream]`: an https base URL without credentials or query, a
    /// readable extra CA, positive timeouts and connection bound.
    pub fn compile(u: &UpstreamSettings, o: &Origin<'_>) -> Result<UpstreamTarget, ConfigError> {
        let base = u.base_url.trim_end_matches('/').to_string();
        let uri: http::Uri = base
            .parse()
            .map_err(|_| o.err("upstream.base_url", "not a valid URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(o.err(
                "upstream.base_url",
                "must be https:// (the key travels on it)",
            ));
        }
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .ok_or_else(|| o.err("upstream.base_url", "has no host"))?;
        // Credentials in the URL would travel into span attributes and logs;
        // the upstream is authenticated by the tenant key alone.
        if authority.contains('@') {
            return Err(o.err("upstream.base_url", "must not carry a user or password"));
        }
        if uri.query().is_some() {
            return Err(o.err("upstream.base_url", "must not have a query"));
        }
        let ca_pem = match &u.ca_file {
            Some(p) => Some(
                std::fs::read(o.path(p))
                    .map_err(|e| o.err("upstream.ca_file", format!("cannot read: {}", e.kind())))?,
            ),
            None => None,
        };
        if !u.webpki_roots && ca_pem.is_none() {
            return Err(o.err("upstream.webpki_roots", "false needs upstream.ca_file"));
        }
        if u.connect_timeout_ms == 0 || u.response_timeout_ms == 0 {
            return Err(o.err("upstream", "timeouts must be positive"));
        }
        if u.max_connections == 0 {
            return Err(o.err("upstream.max_connections", "must be at least 1"));
        }
        Ok(UpstreamTarget {
            base,
            authority,
            connect_timeout: Duration::from_millis(u.connect_timeout_ms),
            response_timeout: Duration::from_millis(u.response_timeout_ms),
            ca_pem,
            webpki_roots: u.webpki_roots,
            pool_idle_timeout: Duration::from_millis(u.pool_idle_timeout_ms),
            pool_max_idle_per_host: u.pool_max_idle_per_host,
            max_connections: u.max_connections,
            http2: u.http2,
            breaker_failures: u.breaker_failures,
            breaker_cooldown: Duration::from_millis(u.breaker_cooldown_ms),
            forward_tracestate: u.forward_tracestate,
        })
    }
}
