//! Tenants (with resolved keys, per-operation field rules and the answer to
//! undeclared fields) and callers (with the operations they may call),
//! compiled from `[[tenants]]` and `[[callers]]`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{
    self, ConfigError, FieldAction, Origin, RawCaller, RawConfig, TenantBudgets, resolve_tenant_key,
};
use crate::model::Environment;
use crate::operations::{self, OPERATIONS, OpIndex};
use crate::pipeline::policy::{self, FieldRule};
use crate::pipeline::rate_limit::{Budget, LimiterSettings};
use crate::pipeline::validate;
use crate::secret::{self, Secret};

/// A caller as identified by its token or client certificate.
#[derive(Debug)]
pub struct Caller {
    pub id: String,
    /// Index into [`super::Snapshot::tenants`].
    pub tenant: usize,
    pub environment: Environment,
    allowed: u128,
    pub quota: Option<Budget>,
    pub max_wait: Option<Duration>,
}

impl Caller {
    pub fn may(&self, op: OpIndex) -> bool {
        self.allowed & (1u128 << op.0) != 0
    }
}

/// What one operation needs from a tenant's config.
#[derive(Debug)]
pub struct TenantOp {
    /// Field rules (built-in + global + tenant), in the order they apply.
    pub rules: Arc<[FieldRule]>,
    /// Undeclared body fields: stripped (default) or refused.
    pub unknown_fields: FieldAction,
}

#[derive(Debug)]
pub struct Tenant {
    pub id: String,
    pub live_key: Option<Secret>,
    pub test_key: Option<Secret>,
    /// One per operation, by [`OpIndex`].
    ops: Box<[TenantOp]>,
    pub budgets: TenantBudgets,
}

impl Tenant {
    /// This tenant's settings for operation `op`.
    pub fn op(&self, op: OpIndex) -> &TenantOp {
        &self.ops[op.0 as usize]
    }

    /// The budget of this tenant's key in `env`: its override or the default.
    pub fn budget(&self, env: Environment, defaults: &LimiterSettings) -> Budget {
        let own = match env {
            Environment::Live => self.budgets.live,
            Environment::Test => self.budgets.test,
        };
        own.unwrap_or_else(|| *defaults.default_budget(env == Environment::Live))
    }

    pub fn key(&self, env: Environment) -> Option<&Secret> {
        match env {
            Environment::Live => self.live_key.as_ref(),
            Environment::Test => self.test_key.as_ref(),
        }
    }
}

/// `[[tenants]]`: unique ids, keys resolved and in the right environment,
/// field rules compiled by the policy stage.
pub(super) fn compile_tenants(raw: &RawConfig, o: &Origin<'_>) -> Result<Vec<Tenant>, ConfigError> {
    let mut seen = HashMap::new();
    let mut tenants = Vec::new();
    for (i, t) in raw.tenants.iter().enumerate() {
        let key = format!("tenants[{i}]");
        config::validate_tenant_id(&t.id, &key, o)?;
        if seen.insert(t.id.clone(), i).is_some() {
            return Err(o.err(format!("{key}.id"), format!("duplicate tenant id {}", t.id)));
        }
        let live_key = resolve_tenant_key(
            t.live_key.as_deref(),
            &format!("{key}.live_key"),
            Environment::Live,
            o,
        )?;
        let test_key = resolve_tenant_key(
            t.test_key.as_deref(),
            &format!("{key}.test_key"),
            Environment::Test,
            o,
        )?;
        if live_key.is_none() && test_key.is_none() {
            return Err(o.err(key, "a tenant needs live_key or test_key"));
        }
        let rules = policy::compile_rules(&raw.policy, &t.policy, &key, o)?;
        let unknown = validate::unknown_fields(&raw.validation, t, &key, o)?;
        let ops = rules.into_iter().zip(unknown);
        tenants.push(Tenant {
            id: t.id.clone(),
            live_key,
            test_key,
            ops: ops
                .map(|(rules, unknown_fields)| TenantOp {
                    rules,
                    unknown_fields,
                })
                .collect(),
            budgets: t.rate_limit.clone(),
        });
    }
    Ok(tenants)
}

/// The callers, found by token hash or by client-certificate SAN.
pub(super) struct Callers {
    pub by_token: HashMap<[u8; 32], Arc<Caller>>,
    pub by_cert_san: HashMap<String, Arc<Caller>>,
    pub count: usize,
}

/// `[[callers]]`: unique ids, tokens and SANs; a known tenant that has a key
/// for the caller's environment; operation patterns that match something.
pub(super) fn compile_callers(
    raw: &[RawCaller],
    tenants: &[Tenant],
    o: &Origin<'_>,
) -> Result<Callers, ConfigError> {
    let tenant_index: HashMap<&str, usize> = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let mut out = Callers {
        by_token: HashMap::new(),
        by_cert_san: HashMap::new(),
        count: 0,
    };
    let mut ids = HashMap::new();
    for (i, c) in raw.iter().enumerate() {
        let key = format!("callers[{i}]");
        config::validate_caller_id(&c.id, &key, o)?;
        if ids.insert(c.id.clone(), i).is_some() {
            return Err(o.err(format!("{key}.id"), format!("duplicate caller id {}", c.id)));
        }
        let (hash, san) = credentials(c, &key, o)?;
        let tenant = *tenant_index.get(c.tenant.as_str()).ok_or_else(|| {
            o.err(
                format!("{key}.tenant"),
                format!("unknown tenant {}", c.tenant),
            )
        })?;
        if tenants[tenant].key(c.environment).is_none() {
            return Err(o.err(
                format!("{key}.environment"),
                format!("tenant {} has no {} key", c.tenant, c.environment.as_str()),
            ));
        }
        let caller = Arc::new(Caller {
            id: c.id.clone(),
            tenant,
            environment: c.environment,
            allowed: allowed_ops(&c.operations, &key, o)?,
            quota: c.quota,
            max_wait: c.max_wait_ms.map(Duration::from_millis),
        });
        if let Some(san) = san
            && out.by_cert_san.insert(san, caller.clone()).is_some()
        {
            return Err(o.err(
                format!("{key}.cert_san"),
                "two callers share one certificate SAN",
            ));
        }
        if let Some(hash) = hash
            && out.by_token.insert(hash, caller).is_some()
        {
            return Err(o.err(format!("{key}.token_sha256"), "two callers share one token"));
        }
    }
    out.count = ids.len();
    Ok(out)
}

/// A caller's token hash and normalised certificate SAN; at least one.
fn credentials(
    c: &RawCaller,
    key: &str,
    o: &Origin<'_>,
) -> Result<(Option<[u8; 32]>, Option<String>), ConfigError> {
    let hash: Option<[u8; 32]> = if c.token_sha256.is_empty() {
        None
    } else {
        Some(
            secret::unhex(&c.token_sha256)
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| {
                    o.err(
                        format!("{key}.token_sha256"),
                        "must be 64 hex characters (SHA-256 of the token)",
                    )
                })?,
        )
    };
    let san = match c.cert_san.as_deref() {
        None => None,
        Some(s) => Some(config::normalise_san(s).ok_or_else(|| {
            o.err(
                format!("{key}.cert_san"),
                "must be a URI SAN (spiffe://…) or dns:<name>",
            )
        })?),
    };
    if hash.is_none() && san.is_none() {
        return Err(o.err(key, "a caller needs token_sha256 or cert_san"));
    }
    Ok((hash, san))
}

/// The operations the patterns allow, one bit per operation index.
fn allowed_ops(patterns: &[String], key: &str, o: &Origin<'_>) -> Result<u128, ConfigError> {
    let mut allowed = 0u128;
    for (j, p) in patterns.iter().enumerate() {
        if !operations::pattern_is_known(p) {
            return Err(o.err(
                format!("{key}.operations[{j}]"),
                format!("matches no operation: {p}"),
            ));
        }
        for (idx, op) in OPERATIONS.iter().enumerate() {
            if operations::pattern_matches(p, op.id) {
                allowed |= 1u128 << idx;
            }
        }
    }
    Ok(allowed)
}
