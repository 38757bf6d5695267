//! Configuration: raw TOML + environment overrides (`CUBEGATE__SECTION__KEY`)
//! -> [`RawConfig`] (serde, unknown keys refused) -> validated and compiled
//! into an immutable [`Snapshot`] (routes, callers, tenants with resolved keys,
//! policies, schemas, limits). The request path only ever reads a `Snapshot`;
//! a reload builds a whole new one. Every failure is a [`ConfigError`] naming
//! the source, the key and the reason, never a secret value.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::audit::{AuditKeys, AuditLog, AuditSettings};
use crate::operations::{self, OPERATIONS, OpIndex};
use crate::pipeline::rate_limit::{Budget, LimiterSettings};
use crate::secret::{self, EnvSource, Secret};

/// Default body cap (DESIGN: 64 KiB) and the cap for image uploads (4 MB
/// decoded is ~5.4 MB of base64 plus the JSON wrapper).
pub const DEFAULT_BODY_CAP: usize = 64 * 1024;
pub const UPLOAD_BODY_CAP: usize = 6 * 1024 * 1024 + 512 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listener: ListenerSettings,
    #[serde(default)]
    pub admin: AdminSettings,
    pub upstream: UpstreamSettings,
    #[serde(default)]
    pub tenants: Vec<RawTenant>,
    #[serde(default)]
    pub callers: Vec<RawCaller>,
    #[serde(default)]
    pub body: BodySettings,
    #[serde(default)]
    pub policy: PolicySettings,
    #[serde(default)]
    pub validation: ValidationSettings,
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    #[serde(default)]
    pub rate_limit: LimiterSettings,
    #[serde(default)]
    pub audit: AuditSettings,
    #[serde(default)]
    pub audit_keys: AuditKeyRefs,
}

/// References to the audit trail's keys (`env:`/`file:`), resolved at load.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditKeyRefs {
    /// Signs checkpoints (HMAC-SHA256). Keep it away from the audit files.
    pub checkpoint_key: Option<String>,
    /// Keys the upstream-key fingerprint in each record.
    pub fingerprint_key: Option<String>,
    /// Keys `field_hmacs` (only needed with `audit.hmac_fields`).
    pub field_hmac_key: Option<String>,
}

/// Per-tenant budget overrides.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TenantBudgets {
    pub live: Option<Budget>,
    pub test: Option<Budget>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerSettings {
    pub address: String,
    pub max_connections: usize,
    pub header_read_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_uri_bytes: usize,
    pub drain_timeout_ms: u64,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        ListenerSettings {
            address: "127.0.0.1:8080".into(),
            max_connections: 4096,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            body_timeout_ms: 30_000,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_uri_bytes: 4096,
            drain_timeout_ms: 20_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    pub address: String,
    pub enabled: bool,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            address: "127.0.0.1:9090".into(),
            enabled: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// `https://api.complycube.com/v1` in production.
    pub base_url: String,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_response_timeout")]
    pub response_timeout_ms: u64,
    /// Extra CA certificates (PEM) to trust, e.g. the sandbox's in tests.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Trust the bundled Mozilla roots (webpki-roots). Off only in tests.
    #[serde(default = "yes")]
    pub webpki_roots: bool,
    #[serde(default = "default_pool_idle")]
    pub pool_idle_timeout_ms: u64,
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle_per_host: usize,
}

fn default_connect_timeout() -> u64 {
    3_000
}
fn default_response_timeout() -> u64 {
    30_000
}
fn default_pool_idle() -> u64 {
    50_000
}
fn default_pool_max_idle() -> usize {
    64
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub id: String,
    /// Reference (`env:NAME` / `file:PATH`) to the `live_…` key.
    #[serde(default)]
    pub live_key: Option<String>,
    /// Reference to the `test_…` key.
    #[serde(default)]
    pub test_key: Option<String>,
    /// Field rules for this tenant only, on top of the global ones.
    #[serde(default)]
    pub policy: Vec<RawFieldRule>,
    #[serde(default)]
    pub rate_limit: TenantBudgets,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }
    fn key_prefix(self) -> &'static str {
        match self {
            Environment::Live => "live_",
            Environment::Test => "test_",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCaller {
    pub id: String,
    /// Lowercase hex SHA-256 of the caller's token (`cubegate token new`).
    pub token_sha256: String,
    pub tenant: String,
    pub environment: Environment,
    /// Patterns: `*`, `clients.*`, `clients.get`.
    pub operations: Vec<String>,
    /// This caller's own quota inside the tenant budget.
    #[serde(default)]
    pub quota: Option<Budget>,
    /// Longest wait for a rate-limit slot before 429 (default: rate_limit.max_wait_ms).
    #[serde(default)]
    pub max_wait_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BodySettings {
    pub default_max_bytes: usize,
    pub upload_max_bytes: usize,
    pub max_depth: usize,
    /// Per-operation caps overriding the defaults, by operation id.
    pub max_bytes: HashMap<String, usize>,
}

impl Default for BodySettings {
    fn default() -> Self {
        BodySettings {
            default_max_bytes: DEFAULT_BODY_CAP,
            upload_max_bytes: UPLOAD_BODY_CAP,
            max_depth: 32,
            max_bytes: HashMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FieldAction {
    #[default]
    Strip,
    Reject,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFieldRule {
    /// Operation id or pattern (`clients.update`, `clients.*`).
    pub operation: String,
    /// JSON pointer; `*` matches every array element / object member.
    pub pointer: String,
    #[serde(default)]
    pub action: FieldAction,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettings {
    /// What to do with a built-in forbidden field (`type` on clients.update).
    pub builtin_action: FieldAction,
    pub rules: Vec<RawFieldRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationSettings {
    /// Validate bodies against the operation schemas at all (default true).
    /// Off exists to measure what validation costs (`bench/run.sh`); the
    /// strict JSON parse and the field policy still run.
    pub enabled: bool,
    /// Schema directory overriding the schemas embedded in the binary.
    pub schemas_dir: Option<PathBuf>,
    /// Operations (patterns) validated in shadow mode: reported, still forwarded.
    pub shadow: Vec<String>,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        ValidationSettings {
            enabled: true,
            schemas_dir: None,
            shadow: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// `RUST_LOG`-style filter; the `RUST_LOG` variable wins when set.
    pub log_level: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            log_format: LogFormat::Json,
            log_level: "info".into(),
        }
    }
}

/// A configuration problem: where (file), which key, why. One line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: String,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.source, self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where a configuration comes from.
pub enum ConfigSource<'a> {
    File(&'a Path),
    /// Embedded TOML text, named for error messages.
    Text {
        name: &'a str,
        toml: &'a str,
    },
}

impl ConfigSource<'_> {
    fn name(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Text { name, .. } => (*name).to_string(),
        }
    }
    fn base_dir(&self) -> PathBuf {
        match self {
            ConfigSource::File(p) => p
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            ConfigSource::Text { .. } => PathBuf::from("."),
        }
    }
}

/// Read TOML plus `CUBEGATE__…` overrides from `env` into a [`RawConfig`].
pub fn load_raw(
    src: &ConfigSource<'_>,
    env: &HashMap<String, String>,
) -> Result<RawConfig, ConfigError> {
    use config::{Config, Environment as Env, File, FileFormat};
    let name = src.name();
    let file = match src {
        ConfigSource::File(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                source: name.clone(),
                key: String::new(),
                reason: format!("cannot read: {}", e.kind()),
            })?;
            File::from_str(&text, FileFormat::Toml)
        }
        ConfigSource::Text { toml, .. } => File::from_str(toml, FileFormat::Toml),
    };
    let overrides: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("CUBEGATE__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let built = Config::builder()
        .add_source(file)
        .add_source(
            Env::with_prefix("CUBEGATE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| config_crate_error(&name, e))?;
    built
        .try_deserialize::<RawConfig>()
        .map_err(|e| config_crate_error(&name, e))
}

fn config_crate_error(source: &str, e: config::ConfigError) -> ConfigError {
    // The config crate formats as "<reason> for key `a.b`" / "... in <origin>";
    // split the key out so our one line reads file: key: reason.
    let text = e.to_string();
    let (reason, key) = match text.find(" for key `") {
        Some(i) => {
            let rest = &text[i + 10..];
            let key = rest.split('`').next().unwrap_or("").to_string();
            (text[..i].to_string(), key)
        }
        None => (text.clone(), String::new()),
    };
    ConfigError {
        source: source.to_string(),
        key,
        reason,
    }
}

/// A caller as identified by its token.
#[derive(Debug)]
pub struct Caller {
    pub id: String,
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

#[derive(Debug)]
pub struct Tenant {
    pub id: String,
    pub live_key: Option<Secret>,
    pub test_key: Option<Secret>,
    /// Field rules per operation index (built-in + global + tenant).
    pub rules: Vec<Arc<[crate::pipeline::policy::FieldRule]>>,
    pub budgets: TenantBudgets,
}

impl Tenant {
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
}

/// The compiled, immutable configuration a request runs against.
pub struct Snapshot {
    pub source: String,
    pub raw: RawConfig,
    pub listener: ListenerSettings,
    pub upstream: UpstreamTarget,
    pub tenants: Vec<Tenant>,
    callers: HashMap<[u8; 32], Arc<Caller>>,
    pub caller_count: usize,
    pub body_caps: Vec<usize>,
    pub max_depth: usize,
    pub shadow: Vec<bool>,
    pub schemas: Arc<crate::pipeline::validate::Schemas>,
    pub rate_limit: LimiterSettings,
    pub audit: AuditSettings,
    audit_keys: Option<AuditKeys>,
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

    pub fn body_cap(&self, op: OpIndex) -> usize {
        self.body_caps[op.0 as usize]
    }
}

fn err(source: &str, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        source: source.to_string(),
        key: key.into(),
        reason: reason.into(),
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
    let upstream = compile_upstream(&raw.upstream, source, base_dir)?;
    for (key, addr) in [
        ("listener.address", &raw.listener.address),
        ("admin.address", &raw.admin.address),
    ] {
        addr.parse::<std::net::SocketAddr>()
            .map_err(|_| err(source, key, "must be host:port with an IP address"))?;
    }
    if raw.listener.max_connections == 0 {
        return Err(err(
            source,
            "listener.max_connections",
            "must be at least 1",
        ));
    }

    let mut tenant_index = HashMap::new();
    let mut tenants = Vec::new();
    for (i, t) in raw.tenants.iter().enumerate() {
        let key = format!("tenants[{i}]");
        if t.id.is_empty()
            || !t
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(err(
                source,
                format!("{key}.id"),
                "must be non-empty [A-Za-z0-9._-]",
            ));
        }
        if tenant_index.insert(t.id.clone(), i).is_some() {
            return Err(err(
                source,
                format!("{key}.id"),
                format!("duplicate tenant id {}", t.id),
            ));
        }
        let resolve_key = |slot: &str, r: &Option<String>, env_kind: Environment| {
            let Some(r) = r else { return Ok(None) };
            let s = secret::resolve(r, env, base_dir)
                .map_err(|e| err(source, format!("{key}.{slot}"), e.to_string()))?;
            if !s.expose().starts_with(env_kind.key_prefix()) {
                return Err(err(
                    source,
                    format!("{key}.{slot}"),
                    format!(
                        "the referenced key does not start with `{}`: wrong environment",
                        env_kind.key_prefix()
                    ),
                ));
            }
            Ok(Some(s))
        };
        let live_key = resolve_key("live_key", &t.live_key, Environment::Live)?;
        let test_key = resolve_key("test_key", &t.test_key, Environment::Test)?;
        if live_key.is_none() && test_key.is_none() {
            return Err(err(source, key, "a tenant needs live_key or test_key"));
        }
        let rules = compile_rules(&raw.policy, &t.policy, source, &key)?;
        tenants.push(Tenant {
            id: t.id.clone(),
            live_key,
            test_key,
            rules,
            budgets: t.rate_limit.clone(),
        });
    }

    let mut callers = HashMap::new();
    let mut caller_ids = HashMap::new();
    for (i, c) in raw.callers.iter().enumerate() {
        let key = format!("callers[{i}]");
        if c.id.is_empty()
            || !c
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c))
        {
            return Err(err(
                source,
                format!("{key}.id"),
                "must be non-empty [A-Za-z0-9._:@-]",
            ));
        }
        if caller_ids.insert(c.id.clone(), i).is_some() {
            return Err(err(
                source,
                format!("{key}.id"),
                format!("duplicate caller id {}", c.id),
            ));
        }
        let hash: [u8; 32] = secret::unhex(&c.token_sha256)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| {
                err(
                    source,
                    format!("{key}.token_sha256"),
                    "must be 64 hex characters (SHA-256 of the token)",
                )
            })?;
        let tenant = *tenant_index.get(&c.tenant).ok_or_else(|| {
            err(
                source,
                format!("{key}.tenant"),
                format!("unknown tenant {}", c.tenant),
            )
        })?;
        if tenants[tenant].key(c.environment).is_none() {
            return Err(err(
                source,
                format!("{key}.environment"),
                format!("tenant {} has no {} key", c.tenant, c.environment.as_str()),
            ));
        }
        let mut allowed = 0u128;
        for (j, p) in c.operations.iter().enumerate() {
            if !operations::pattern_is_known(p) {
                return Err(err(
                    source,
                    format!("{key}.operations[{j}]"),
                    format!("matches no operation: {p}"),
                ));
            }
            for (idx, o) in OPERATIONS.iter().enumerate() {
                if operations::pattern_matches(p, o.id) {
                    allowed |= 1u128 << idx;
                }
            }
        }
        let caller = Arc::new(Caller {
            id: c.id.clone(),
            tenant,
            environment: c.environment,
            allowed,
            quota: c.quota,
            max_wait: c.max_wait_ms.map(Duration::from_millis),
        });
        if callers.insert(hash, caller).is_some() {
            return Err(err(
                source,
                format!("{key}.token_sha256"),
                "two callers share one token",
            ));
        }
    }

    let mut body_caps: Vec<usize> = OPERATIONS
        .iter()
        .map(|o| match o.body {
            operations::BodyKind::Upload => raw.body.upload_max_bytes,
            _ => raw.body.default_max_bytes,
        })
        .collect();
    for (id, cap) in &raw.body.max_bytes {
        let idx = operations::by_id(id).ok_or_else(|| {
            err(
                source,
                format!("body.max_bytes.{id}"),
                "unknown operation id",
            )
        })?;
        body_caps[idx.0 as usize] = *cap;
    }
    if raw.body.max_depth == 0 || raw.body.max_depth > 128 {
        return Err(err(source, "body.max_depth", "must be between 1 and 128"));
    }

    let mut shadow = vec![false; OPERATIONS.len()];
    for (j, p) in raw.validation.shadow.iter().enumerate() {
        if !operations::pattern_is_known(p) {
            return Err(err(
                source,
                format!("validation.shadow[{j}]"),
                format!("matches no operation: {p}"),
            ));
        }
        for (idx, o) in OPERATIONS.iter().enumerate() {
            shadow[idx] |= operations::pattern_matches(p, o.id);
        }
    }
    let schemas = match &raw.validation.schemas_dir {
        Some(dir) => crate::pipeline::validate::Schemas::from_dir(&base_dir.join(dir)),
        None => crate::pipeline::validate::Schemas::embedded(),
    }
    .map_err(|e| err(source, "validation.schemas_dir", e.to_string()))?;

    raw.rate_limit
        .validate()
        .map_err(|e| err(source, "rate_limit", e.to_string()))?;
    let audit_keys = compile_audit(&raw, source, env, base_dir)?;
    let mut audit = raw.audit.clone();
    if audit.dir.is_relative() {
        audit.dir = base_dir.join(&audit.dir);
    }

    Ok(Snapshot {
        source: source.to_string(),
        rate_limit: raw.rate_limit.clone(),
        audit,
        audit_keys,
        listener: raw.listener.clone(),
        upstream,
        tenants,
        caller_count: callers.len(),
        callers,
        body_caps,
        max_depth: raw.body.max_depth,
        shadow,
        schemas: Arc::new(schemas),
        raw,
    })
}

fn compile_audit(
    raw: &RawConfig,
    source: &str,
    env: &dyn EnvSource,
    base_dir: &Path,
) -> Result<Option<AuditKeys>, ConfigError> {
    if !raw.audit.enabled {
        return Ok(None);
    }
    raw.audit
        .instance_id()
        .map_err(|e| err(source, "audit.instance", e.to_string()))?;
    raw.audit
        .hmac_pointers()
        .map_err(|e| err(source, "audit.hmac_fields", e.to_string()))?;
    let get = |name: &str, r: &Option<String>, required: bool| -> Result<Vec<u8>, ConfigError> {
        match r {
            Some(r) => secret::resolve(r, env, base_dir)
                .map(|s| s.expose().as_bytes().to_vec())
                .map_err(|e| err(source, format!("audit_keys.{name}"), e.to_string())),
            None if required => Err(err(
                source,
                format!("audit_keys.{name}"),
                "required while audit.enabled (a reference env:NAME or file:PATH)",
            )),
            None => Ok(Vec::new()),
        }
    };
    let k = &raw.audit_keys;
    Ok(Some(AuditKeys {
        checkpoint_key: get("checkpoint_key", &k.checkpoint_key, true)?,
        fingerprint_key: get("fingerprint_key", &k.fingerprint_key, true)?,
        field_hmac_key: get(
            "field_hmac_key",
            &k.field_hmac_key,
            !raw.audit.hmac_fields.is_empty(),
        )?,
    }))
}

fn compile_upstream(
    u: &UpstreamSettings,
    source: &str,
    base_dir: &Path,
) -> Result<UpstreamTarget, ConfigError> {
    let base = u.base_url.trim_end_matches('/').to_string();
    let uri: http::Uri = base
        .parse()
        .map_err(|_| err(source, "upstream.base_url", "not a valid URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(err(
            source,
            "upstream.base_url",
            "must be https:// (the key travels on it)",
        ));
    }
    let authority = uri
        .authority()
        .map(|a| a.to_string())
        .ok_or_else(|| err(source, "upstream.base_url", "has no host"))?;
    if uri.query().is_some() {
        return Err(err(source, "upstream.base_url", "must not have a query"));
    }
    let ca_pem = match &u.ca_file {
        Some(p) => Some(std::fs::read(base_dir.join(p)).map_err(|e| {
            err(
                source,
                "upstream.ca_file",
                format!("cannot read: {}", e.kind()),
            )
        })?),
        None => None,
    };
    if !u.webpki_roots && ca_pem.is_none() {
        return Err(err(
            source,
            "upstream.webpki_roots",
            "false needs upstream.ca_file",
        ));
    }
    if u.connect_timeout_ms == 0 || u.response_timeout_ms == 0 {
        return Err(err(source, "upstream", "timeouts must be positive"));
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
    })
}

fn compile_rules(
    global: &PolicySettings,
    tenant: &[RawFieldRule],
    source: &str,
    tenant_key: &str,
) -> Result<Vec<Arc<[crate::pipeline::policy::FieldRule]>>, ConfigError> {
    use crate::pipeline::policy::{self, FieldRule};
    let mut out = Vec::with_capacity(OPERATIONS.len());
    let all: Vec<(String, &RawFieldRule)> = global
        .rules
        .iter()
        .enumerate()
        .map(|(j, r)| (format!("policy.rules[{j}]"), r))
        .chain(
            tenant
                .iter()
                .enumerate()
                .map(|(j, r)| (format!("{tenant_key}.policy[{j}]"), r)),
        )
        .collect();
    for (key, r) in &all {
        if !operations::pattern_is_known(&r.operation) {
            return Err(err(
                source,
                format!("{key}.operation"),
                format!("matches no operation: {}", r.operation),
            ));
        }
        FieldRule::parse(&r.pointer, to_action(r.action))
            .map_err(|e| err(source, format!("{key}.pointer"), e.to_string()))?;
    }
    for o in OPERATIONS {
        let mut rules: Vec<FieldRule> = policy::builtin_rules(o.id)
            .into_iter()
            .filter_map(|r| FieldRule::parse(r.pointer(), to_action(global.builtin_action)).ok())
            .collect();
        for (_, r) in &all {
            if operations::pattern_matches(&r.operation, o.id) {
                // A later rule for the same pointer (e.g. a tenant choosing
                // reject for a built-in) replaces the earlier one.
                rules.retain(|x| x.pointer() != r.pointer);
                if let Ok(rule) = FieldRule::parse(&r.pointer, to_action(r.action)) {
                    rules.push(rule);
                }
            }
        }
        out.push(Arc::from(rules));
    }
    Ok(out)
}

fn to_action(a: FieldAction) -> crate::pipeline::policy::PolicyAction {
    match a {
        FieldAction::Strip => crate::pipeline::policy::PolicyAction::Strip,
        FieldAction::Reject => crate::pipeline::policy::PolicyAction::Reject,
    }
}

/// Load and compile in one step (serve, check-config, reload).
pub fn load(
    src: &ConfigSource<'_>,
    env_map: &HashMap<String, String>,
    env: &dyn EnvSource,
) -> Result<Snapshot, ConfigError> {
    let raw = load_raw(src, env_map)?;
    compile(raw, &src.name(), env, &src.base_dir())
}

/// The process environment as a map (for `CUBEGATE__` overrides).
pub fn process_env() -> HashMap<String, String> {
    std::env::vars().collect()
}

/// A human summary for `check-config`: no secret values, only references
/// and whether each key resolved.
pub fn summary(s: &Snapshot) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "config: {} (ok)", s.source);
    let _ = writeln!(
        out,
        "listener: {}  admin: {}",
        s.raw.listener.address, s.raw.admin.address
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
    for (t, raw) in s.tenants.iter().zip(&s.raw.tenants) {
        let show = |k: &Option<Secret>, r: &Option<String>| match (k, r) {
            (Some(_), Some(r)) => format!("{r} -> <redacted>"),
            _ => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "tenant {}: live {}; test {}",
            t.id,
            show(&t.live_key, &raw.live_key),
            show(&t.test_key, &raw.test_key)
        );
    }
    for c in &s.raw.callers {
        let _ = writeln!(
            out,
            "caller {}: tenant {} env {} ops [{}] token sha256 {}…",
            c.id,
            c.tenant,
            c.environment.as_str(),
            c.operations.join(", "),
            &c.token_sha256[..8.min(c.token_sha256.len())]
        );
    }
    let _ = writeln!(
        out,
        "operations: {} served, default body cap {} B, upload cap {} B",
        OPERATIONS.len(),
        s.raw.body.default_max_bytes,
        s.raw.body.upload_max_bytes
    );
    out
}
