//! The compiled, immutable configuration a request runs against.
//!
//! Input: a [`RawConfig`] (from [`crate::config`]). [`compile`] checks the
//! settings that belong to no stage, asks each stage to compile its own
//! section (schemas and shadow mode from `validate`, field rules from
//! `policy`, limiter settings from `rate_limit`, keys from `audit`, the TLS
//! listener from `server::tls`) and assembles one [`Snapshot`]: callers and
//! tenants with resolved keys, and one [`CompiledOp`] per operation. The raw
//! config is not kept. A reload builds a whole new snapshot.
//! Failures: the first [`ConfigError`], naming the source, key and reason.

mod callers;
mod summary;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use callers::{Caller, Tenant, TenantOp};
pub use summary::summary;

use crate::audit::{AuditKeys, AuditLog, AuditSettings};
use crate::config::{
    self, AdminSettings, ConfigError, ConfigSource, ListenerSettings, Origin, RawConfig,
    ReloadSettings, TelemetrySettings, UpstreamTarget,
};
use crate::operations::{self, OPERATIONS, OpIndex};
use crate::pipeline::body::JsonLimits;
use crate::pipeline::budget::BudgetLimits;
use crate::pipeline::rate_limit::LimiterSettings;
use crate::pipeline::validate::{self, Schemas};
use crate::secret::EnvSource;

/// What one operation needs at request time, compiled from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledOp {
    /// Largest accepted body, in bytes.
    pub body_cap: usize,
    /// Schema failures are reported, and the request still forwarded.
    pub shadow: bool,
}

/// The compiled, immutable configuration a request runs against.
pub struct Snapshot {
    pub source: String,
    pub listener: ListenerSettings,
    pub admin: AdminSettings,
    pub telemetry: TelemetrySettings,
    pub reload: ReloadSettings,
    /// The request span's `server.address` / `server.port`, from the
    /// listen address (parsed once here, not per request).
    pub listen_host: String,
    pub listen_port: Option<u16>,
    pub upstream: UpstreamTarget,
    pub tenants: Vec<Tenant>,
    callers: HashMap<[u8; 32], Arc<Caller>>,
    cert_callers: HashMap<String, Arc<Caller>>,
    pub caller_count: usize,
    /// The listener's TLS config (None = plain HTTP).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// One per operation, by [`OpIndex`].
    ops: Box<[CompiledOp]>,
    pub max_depth: usize,
    /// Array, object and value-count limits of JSON bodies (depth included).
    pub json: JsonLimits,
    /// The in-flight body budget's limits.
    pub budget: BudgetLimits,
    /// `[validation] enabled`: check bodies against the schemas at all.
    pub validation_enabled: bool,
    pub schemas: Arc<Schemas>,
    pub rate_limit: LimiterSettings,
    pub audit: AuditSettings,
    audit_keys: Option<AuditKeys>,
    /// Files the config references (`file:` keys, the upstream CA), as
    /// written (relative to the config's directory), for the reload watcher.
    referenced_files: Vec<PathBuf>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("source", &self.source)
            .field("tenants", &self.tenants.len())
            .field("callers", &self.caller_count)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// The compiled settings of operation `op`.
    pub fn op(&self, op: OpIndex) -> &CompiledOp {
        &self.ops[op.0 as usize]
    }

    /// Files of the TLS listener (certificate, key, client CA), for the
    /// reload watcher.
    pub fn listener_tls_files(&self) -> Vec<PathBuf> {
        self.listener
            .tls
            .iter()
            .flat_map(|t| {
                [
                    Some(&t.cert_file),
                    Some(&t.key_file),
                    t.client_ca_file.as_ref(),
                ]
                .into_iter()
                .flatten()
                .cloned()
            })
            .collect()
    }

    /// Files the config references besides TLS ones (`file:` key
    /// references, the upstream CA), relative to the config's directory.
    pub fn referenced_files(&self) -> &[PathBuf] {
        &self.referenced_files
    }

    /// The caller a verified client certificate's SAN maps to.
    pub fn caller_by_cert_san(&self, san: &str) -> Option<&Arc<Caller>> {
        self.cert_callers.get(san)
    }

    /// Find the caller whose token hashes to `hash`. Tokens are never
    /// compared directly: the lookup is keyed by the SHA-256 of the presented
    /// token, so the time a comparison takes depends on hash bytes an
    /// attacker cannot steer towards a valid token (no timing oracle).
    pub fn caller_by_token_hash(&self, hash: &[u8; 32]) -> Option<&Arc<Caller>> {
        self.callers.get(hash)
    }

    /// Open the audit log this snapshot describes (None when disabled).
    pub fn open_audit(&self) -> anyhow::Result<Option<AuditLog>> {
        if !self.audit.enabled {
            return Ok(None);
        }
        let keys = self
            .audit_keys
            .clone()
            .ok_or_else(|| anyhow::anyhow!("audit keys missing"))?;
        AuditLog::open(&self.audit, keys)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("audit log at {}: {e}", self.audit.dir.display()))
    }
}

/// Validate and compile a raw config. `env` resolves `env:` references;
/// `base_dir` anchors relative `file:` references and paths.
pub fn compile(
    raw: RawConfig,
    source: &str,
    env: &dyn EnvSource,
    base_dir: &Path,
) -> Result<Snapshot, ConfigError> {
    let o = Origin {
        source,
        env,
        base_dir,
    };
    let upstream = UpstreamTarget::compile(&raw.upstream, &o)?;
    config::validate_settings(&raw, &o)?;
    let tenants = callers::compile_tenants(&raw, &o)?;
    let callers = callers::compile_callers(&raw.callers, &tenants, &o)?;
    let ops = compile_ops(&raw, &o)?;
    let (json, budget) = compile_body_limits(&raw, &o)?;
    let schemas = Schemas::from_config(&raw.validation, &o)?;
    let rate_limit = LimiterSettings::compile(&raw.rate_limit, &o)?;
    let tls = match &raw.listener.tls {
        Some(t) => Some(
            crate::server::tls::server_config(t, base_dir).map_err(|e| o.err("listener.tls", e))?,
        ),
        None => None,
    };
    let audit_keys = AuditKeys::compile(&raw.audit, &raw.audit_keys, &o)?;
    let mut audit = raw.audit.clone();
    if audit.dir.is_relative() {
        audit.dir = base_dir.join(&audit.dir);
    }
    let (listen_host, listen_port) = crate::telemetry::listen_parts(&raw.listener.address);
    Ok(Snapshot {
        source: source.to_string(),
        referenced_files: referenced_files(&raw),
        rate_limit,
        audit,
        audit_keys,
        listen_host,
        listen_port,
        upstream,
        tenants,
        caller_count: callers.count,
        callers: callers.by_token,
        cert_callers: callers.by_cert_san,
        tls,
        ops,
        max_depth: raw.body.max_depth,
        json,
        budget,
        validation_enabled: raw.validation.enabled,
        schemas: Arc::new(schemas),
        listener: raw.listener,
        admin: raw.admin,
        telemetry: raw.telemetry,
        reload: raw.reload,
    })
}

/// One [`CompiledOp`] per operation: body caps (`[body]`, uploads get the
/// larger default) and shadow mode (`validation.shadow`).
fn compile_ops(raw: &RawConfig, o: &Origin<'_>) -> Result<Box<[CompiledOp]>, ConfigError> {
    let mut body_caps: Vec<usize> = OPERATIONS
        .iter()
        .map(|op| match op.body {
            operations::BodyKind::Upload => raw.body.upload_max_bytes,
            _ => raw.body.default_max_bytes,
        })
        .collect();
    for (id, cap) in &raw.body.max_bytes {
        let idx = operations::by_id(id)
            .ok_or_else(|| o.err(format!("body.max_bytes.{id}"), "unknown operation id"))?;
        body_caps[idx.0 as usize] = *cap;
    }
    if raw.body.max_depth == 0 || raw.body.max_depth > 128 {
        return Err(o.err("body.max_depth", "must be between 1 and 128"));
    }
    let shadow = validate::shadowed(&raw.validation, o)?;
    Ok(body_caps
        .into_iter()
        .zip(shadow)
        .map(|(body_cap, shadow)| CompiledOp { body_cap, shadow })
        .collect())
}

/// `[body]`'s JSON size limits and in-flight budget: every count at least
/// 1, a caller's share no larger than the whole.
fn compile_body_limits(
    raw: &RawConfig,
    o: &Origin<'_>,
) -> Result<(JsonLimits, BudgetLimits), ConfigError> {
    let b = &raw.body;
    for (key, n) in [
        ("body.max_array_len", b.max_array_len),
        ("body.max_object_members", b.max_object_members),
        ("body.max_json_values", b.max_json_values),
        ("body.inflight_max_bytes", b.inflight_max_bytes),
        (
            "body.inflight_per_caller_bytes",
            b.inflight_per_caller_bytes,
        ),
    ] {
        if n == 0 {
            return Err(o.err(key, "must be at least 1"));
        }
    }
    if b.inflight_per_caller_bytes > b.inflight_max_bytes {
        return Err(o.err(
            "body.inflight_per_caller_bytes",
            "must not exceed body.inflight_max_bytes",
        ));
    }
    if raw.listener.body_deadline_ms == 0 {
        return Err(o.err("listener.body_deadline_ms", "must be at least 1"));
    }
    let json = JsonLimits {
        max_depth: b.max_depth,
        max_array_len: b.max_array_len,
        max_object_members: b.max_object_members,
        max_nodes: b.max_json_values,
    };
    let budget = BudgetLimits {
        total: b.inflight_max_bytes,
        per_caller: b.inflight_per_caller_bytes,
        wait: std::time::Duration::from_millis(b.inflight_wait_ms),
    };
    Ok((json, budget))
}

/// The `file:` references and the upstream CA of `raw`, as written.
fn referenced_files(raw: &RawConfig) -> Vec<PathBuf> {
    let k = &raw.audit_keys;
    let refs = raw
        .tenants
        .iter()
        .flat_map(|t| [t.live_key.as_deref(), t.test_key.as_deref()])
        .chain([
            k.checkpoint_key.as_deref(),
            k.fingerprint_key.as_deref(),
            k.field_hmac_key.as_deref(),
        ])
        .flatten()
        .filter_map(|r| r.strip_prefix("file:"))
        .map(PathBuf::from);
    refs.chain(raw.upstream.ca_file.clone()).collect()
}

/// Load and compile in one step (serve, reload).
pub fn load(
    src: &ConfigSource<'_>,
    env_map: &HashMap<String, String>,
    env: &dyn EnvSource,
) -> Result<Snapshot, ConfigError> {
    let raw = config::load_raw(src, env_map)?;
    compile(raw, &src.name(), env, &src.base_dir())
}

/// `check-config`: load, compile and describe the result (see [`summary`]).
pub fn check(
    src: &ConfigSource<'_>,
    env_map: &HashMap<String, String>,
    env: &dyn EnvSource,
) -> Result<String, ConfigError> {
    let raw = config::load_raw(src, env_map)?;
    let snap = compile(raw.clone(), &src.name(), env, &src.base_dir())?;
    Ok(summary(&raw, &snap))
}
