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
    #[serde(default)]
    pub reload: ReloadSettings,
}

/// Reload when the config file or a file it references changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadSettings {
    /// Poll the files (`serve` only; SIGHUP always reloads).
    pub watch: bool,
    pub poll_interval_ms: u64,
}

impl Default for ReloadSettings {
    fn default() -> Self {
        ReloadSettings {
            watch: true,
            poll_interval_ms: 1_000,
        }
    }
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
    pub body_timeout_ms: u64,
    /// Longest a client may go without taking any response bytes while
    /// cubegate has some to send; past it the connection is dropped (its
    /// upstream exchange slot with it). 0: no limit.
    pub write_stall_timeout_ms: u64,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_uri_bytes: usize,
    pub drain_timeout_ms: u64,
    /// Serve TLS (optionally mTLS) instead of plain HTTP.
    pub tls: Option<ListenerTls>,
}

/// `[listener.tls]`: the gateway's own certificate and client-certificate
/// policy. Paths are relative to the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// Whether callers must present a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    None,
    /// Verified when presented; callers may use tokens instead.
    Optional,
    /// The handshake fails without a certificate from the client CA.
    Required,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        ListenerSettings {
            address: "127.0.0.1:8080".into(),
            max_connections: 4096,
            header_read_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            write_stall_timeout_ms: 30_000,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_uri_bytes: 4096,
            drain_timeout_ms: 20_000,
            tls: None,
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
    /// Most upstream exchanges in flight (with HTTP/1.1: connections); more
    /// wait for one, within `response_timeout_ms`.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Offer HTTP/2 to the upstream (ALPN; the default): one multiplexed
    /// connection. Off: a pool of HTTP/1.1 keep-alive connections. The two
    /// cost the same CPU per request within this machine's noise once span
    /// formatting was fixed (docs/performance.md); HTTP/2 opens fewer
    /// connections to ComplyCube.
    #[serde(default = "yes")]
    pub http2: bool,
    /// Consecutive transport failures (connect/TLS/reset/timeout) that open
    /// the circuit breaker; 0 disables it.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker fails fast before letting one probe through.
    #[serde(default = "default_breaker_cooldown")]
    pub breaker_cooldown_ms: u64,
}

fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown() -> u64 {
    5_000
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
fn default_max_connections() -> usize {
    64
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
    /// Empty for a caller identified only by its client certificate.
    #[serde(default)]
    pub token_sha256: String,
    /// The client-certificate SAN identifying this caller on an mTLS
    /// listener: a URI (`spiffe://corp/ns/kyc/sa/onboarding`) or `dns:name`.
    #[serde(default)]
    pub cert_san: Option<String>,
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
    /// Export traces and metrics over OTLP/HTTP. Unset: on when an OTLP endpoint is
    /// given (here or in `OTEL_EXPORTER_OTLP_*`). `OTEL_SDK_DISABLED=true`
    /// always turns it off.
    pub enabled: Option<bool>,
    /// Collector base URL (`http://127.0.0.1:4318`); `/v1/traces` (and
    /// `/v1/metrics` for metrics) is added.
    /// The `OTEL_EXPORTER_OTLP_*ENDPOINT` variables win.
    pub otlp_endpoint: Option<String>,
    /// `service.name`; `OTEL_SERVICE_NAME` wins. Default `cubegate`.
    pub service_name: Option<String>,
    /// Parent-based ratio sampling (0.0–1.0); `OTEL_TRACES_SAMPLER` wins.
    /// Default: record every trace.
    pub sample_ratio: Option<f64>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            log_format: LogFormat::Json,
            log_level: "info".into(),
            enabled: None,
            otlp_endpoint: None,
            service_name: None,
            sample_ratio: None,
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
    pub max_connections: usize,
    pub http2: bool,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
}

/// The compiled, immutable configuration a request runs against.
pub struct Snapshot {
    pub source: String,
    pub raw: RawConfig,
    pub listener: ListenerSettings,
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
    if raw
        .telemetry
        .sample_ratio
        .is_some_and(|r| !(0.0..=1.0).contains(&r))
    {
        return Err(err(
            source,
            "telemetry.sample_ratio",
            "must be between 0.0 and 1.0",
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
    let mut cert_callers = HashMap::new();
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
        let hash: Option<[u8; 32]> = if c.token_sha256.is_empty() {
            None
        } else {
            Some(
                secret::unhex(&c.token_sha256)
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| {
                        err(
                            source,
                            format!("{key}.token_sha256"),
                            "must be 64 hex characters (SHA-256 of the token)",
                        )
                    })?,
            )
        };
        let san = match c.cert_san.as_deref() {
            None => None,
            Some(s) => Some(normalise_san(s).ok_or_else(|| {
                err(
                    source,
                    format!("{key}.cert_san"),
                    "must be a URI SAN (spiffe://…) or dns:<name>",
                )
            })?),
        };
        if hash.is_none() && san.is_none() {
            return Err(err(source, key, "a caller needs token_sha256 or cert_san"));
        }
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
        if let Some(san) = san
            && cert_callers.insert(san, caller.clone()).is_some()
        {
            return Err(err(
                source,
                format!("{key}.cert_san"),
                "two callers share one certificate SAN",
            ));
        }
        if let Some(hash) = hash
            && callers.insert(hash, caller).is_some()
        {
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
    // Every operation that carries a body must have a schema: an unchecked
    // body would reach ComplyCube unvalidated.
    if let Some(o) = OPERATIONS
        .iter()
        .find(|o| o.body != operations::BodyKind::None && !schemas.has(o.id))
    {
        return Err(err(
            source,
            "validation.schemas_dir",
            format!("no schema for operation {}", o.id),
        ));
    }

    let rate_limit = compile_rate_limit(&raw.rate_limit, source, env, base_dir)?;
    let tls = match &raw.listener.tls {
        Some(t) => Some(
            crate::server::tls::server_config(t, base_dir)
                .map_err(|e| err(source, "listener.tls", e))?,
        ),
        None => None,
    };
    let audit_keys = compile_audit(&raw, source, env, base_dir)?;
    let mut audit = raw.audit.clone();
    if audit.dir.is_relative() {
        audit.dir = base_dir.join(&audit.dir);
    }

    let (listen_host, listen_port) = crate::telemetry::listen_parts(&raw.listener.address);
    Ok(Snapshot {
        source: source.to_string(),
        rate_limit,
        audit,
        audit_keys,
        listener: raw.listener.clone(),
        listen_host,
        listen_port,
        upstream,
        tenants,
        caller_count: caller_ids.len(),
        callers,
        cert_callers,
        tls,
        body_caps,
        max_depth: raw.body.max_depth,
        shadow,
        schemas: Arc::new(schemas),
        raw,
    })
}

/// Validates `[rate_limit]` and resolves `redis_url`: a reference
/// (`env:NAME` / `file:PATH`) to a URL that may carry a password, or a literal
/// `redis://host:port/db` without one. A literal URL with a password is
/// refused, so passwords live only in secret stores, never in the config file.
/// The compiled settings hold the resolved URL (redacted in their Debug).
fn compile_rate_limit(
    raw: &LimiterSettings,
    source: &str,
    env: &dyn EnvSource,
    base_dir: &Path,
) -> Result<LimiterSettings, ConfigError> {
    let mut out = raw.clone();
    if let Some(r) = &raw.redis_url {
        let url = if r.starts_with("env:") || r.starts_with("file:") {
            secret::resolve(r, env, base_dir)
                .map_err(|e| err(source, "rate_limit.redis_url", e.to_string()))?
                .expose()
                .to_string()
        } else if url_has_password(r) {
            return Err(err(
                source,
                "rate_limit.redis_url",
                "a literal URL must not contain a password: put the whole URL in a secret \
                 and reference it (env:NAME or file:PATH)",
            ));
        } else {
            r.clone()
        };
        // The redis crate is built without TLS: a rediss:// URL would pass
        // here and then fail at start, so it is refused with the reason.
        if url.starts_with("rediss://") {
            return Err(err(
                source,
                "rate_limit.redis_url",
                "rediss:// (TLS) is not supported by this build: use redis:// on a private network",
            ));
        }
        if !url.starts_with("redis://") {
            return Err(err(
                source,
                "rate_limit.redis_url",
                "must be a redis:// URL (or a reference to one)",
            ));
        }
        out.redis_url = Some(url);
    }
    out.validate()
        .map_err(|e| err(source, "rate_limit", e.to_string()))?;
    Ok(out)
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

/// `spiffe://…` (any URI) stays as written; `dns:Name` is lower-cased.
fn normalise_san(s: &str) -> Option<String> {
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
    // Credentials in the URL would travel into span attributes and logs;
    // the upstream is authenticated by the tenant key alone.
    if authority.contains('@') {
        return Err(err(
            source,
            "upstream.base_url",
            "must not carry a user or password",
        ));
    }
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
    if u.max_connections == 0 {
        return Err(err(
            source,
            "upstream.max_connections",
            "must be at least 1",
        ));
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
        if let Some(san) = &c.cert_san {
            let _ = writeln!(out, "caller {}: client certificate SAN {san}", c.id);
        }
    }
    rate_limit_summary(&mut out, s);
    let _ = writeln!(
        out,
        "operations: {} served, default body cap {} B, upload cap {} B",
        OPERATIONS.len(),
        s.raw.body.default_max_bytes,
        s.raw.body.upload_max_bytes
    );
    out
}

/// The effective limits, as `check-config` prints them. The Redis URL is
/// never printed (it may hold a password): only its reference, or "literal".
fn rate_limit_summary(out: &mut String, s: &Snapshot) {
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
            let url = match s.raw.rate_limit.redis_url.as_deref() {
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
    for c in &s.raw.callers {
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

#[cfg(test)]
mod rate_limit_tests {
    use super::*;

    fn compile_with(rate_limit: &str, env: &[(&str, &str)]) -> Result<Snapshot, ConfigError> {
        let toml = format!(
            "[upstream]\nbase_url = \"https://api.complycube.com/v1\"\n\
             [[tenants]]\nid = \"acme\"\nlive_key = \"env:ACME_LIVE\"\n\
             rate_limit = {{ live = {{ per_second = 5.0, burst = 1 }} }}\n\
             [[callers]]\nid = \"svc\"\ntoken_sha256 = \"{}\"\ntenant = \"acme\"\n\
             environment = \"live\"\noperations = [\"*\"]\n\
             quota = {{ per_second = 2.0, burst = 1 }}\nmax_wait_ms = 100\n\
             [audit]\nenabled = false\n[rate_limit]\n{rate_limit}\n",
            "ab".repeat(32)
        );
        let mut vars: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        vars.insert("ACME_LIVE".into(), "live_abcdef".into());
        let raw = load_raw(
            &ConfigSource::Text {
                name: "t.toml",
                toml: &toml,
            },
            &HashMap::new(),
        )?;
        compile(raw, "t.toml", &vars, Path::new("."))
    }

    #[test]
    fn redis_url_reference_is_resolved_and_never_printed() {
        let s = compile_with(
            "backend = \"redis\"\nredis_url = \"env:REDIS_URL\"\nfail = \"local\"\nreplicas = 3",
            &[("REDIS_URL", "redis://:hunter2@cache:6379/0")],
        )
        .unwrap();
        assert_eq!(
            s.rate_limit.redis_url.as_deref(),
            Some("redis://:hunter2@cache:6379/0")
        );
        let text = summary(&s);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redis env:REDIS_URL -> <redacted>"), "{text}");
        assert!(text.contains("budget / 3 replicas"), "{text}");
        assert!(
            text.contains("default live 8/s burst 2, test 4/s burst 1"),
            "{text}"
        );
        assert!(
            text.contains("tenant acme: live 5/s burst 1 (override)"),
            "{text}"
        );
        assert!(
            text.contains("caller svc: quota 2/s burst 1, max wait 100 ms"),
            "{text}"
        );
        assert!(!format!("{:?}", s.rate_limit).contains("hunter2"));
    }

    #[test]
    fn check_config_says_when_rate_limiting_is_off() {
        let on = compile_with("", &[]).unwrap();
        assert!(on.rate_limit.enabled, "on by default");
        assert!(!summary(&on).contains("OFF"));
        let off = compile_with("enabled = false", &[]).unwrap();
        assert!(!off.rate_limit.enabled);
        let text = summary(&off);
        assert!(text.contains("rate limit: rate limiting is OFF"), "{text}");
        assert!(!text.contains("default live"), "{text}");
    }

    #[test]
    fn literal_redis_url_with_a_password_is_refused_without_echoing_it() {
        for url in [
            "redis://:hunter2@cache:6379/0",
            "rediss://user:hunter2@cache/1",
        ] {
            let e = compile_with(&format!("backend = \"redis\"\nredis_url = \"{url}\""), &[])
                .unwrap_err();
            assert_eq!(e.key, "rate_limit.redis_url");
            assert!(e.reason.contains("must not contain a password"), "{e}");
            assert!(!e.to_string().contains("hunter2"));
        }
        let s = compile_with(
            "backend = \"redis\"\nredis_url = \"redis://cache:6379/0\"",
            &[],
        )
        .unwrap();
        assert!(summary(&s).contains("literal URL without password"));
        let e = compile_with("redis_url = \"env:NOPE\"", &[]).unwrap_err();
        assert!(e.reason.contains("NOPE is not set"), "{e}");
        let e = compile_with("redis_url = \"http://cache\"", &[]).unwrap_err();
        assert!(e.reason.contains("redis://"), "{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[upstream]
base_url = "https://api.complycube.com/v1/"

[[tenants]]
id = "acme"
test_key = "env:ACME_TEST"
live_key = "env:ACME_LIVE"

[[callers]]
id = "svc"
token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
tenant = "acme"
environment = "test"
operations = ["clients.*", "checks.get"]

[audit]
enabled = false
"#;

    fn env() -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("ACME_TEST".into(), "test_abc123".into());
        m.insert("ACME_LIVE".into(), "live_abc123".into());
        m
    }

    fn compile_text(toml: &str, env: &HashMap<String, String>) -> Result<Snapshot, ConfigError> {
        let src = ConfigSource::Text {
            name: "t.toml",
            toml,
        };
        let raw = load_raw(&src, env)?;
        compile(raw, "t.toml", env, Path::new("."))
    }

    #[test]
    fn compiles_callers_tenants_and_upstream() {
        let s = compile_text(BASE, &env()).unwrap();
        assert_eq!(s.upstream.base, "https://api.complycube.com/v1");
        assert_eq!(s.upstream.authority, "api.complycube.com");
        let mut h = [0u8; 32];
        h.copy_from_slice(
            &secret::unhex("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
                .unwrap(),
        );
        let c = s.caller_by_token_hash(&h).unwrap();
        assert!(c.may(operations::by_id("clients.update").unwrap()));
        assert!(c.may(operations::by_id("checks.get").unwrap()));
        assert!(!c.may(operations::by_id("checks.create").unwrap()));
        assert_eq!(
            s.tenants[0].key(Environment::Test).unwrap().expose(),
            "test_abc123"
        );
        // built-in policy: `type` is stripped from clients.update only
        let upd = operations::by_id("clients.update").unwrap();
        assert_eq!(s.tenants[0].rules[upd.0 as usize].len(), 1);
        assert_eq!(s.tenants[0].rules[0].len(), 0);
    }

    #[test]
    fn errors_name_the_key_and_never_the_value() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "[upstream]\nbase_url = \"https://x/v1\"\nbogus = 1\n",
                "bogus",
                "bogus",
            ),
            (
                &BASE.replace("env:ACME_TEST", "env:NOPE"),
                "tenants[0].test_key",
                "NOPE",
            ),
            (
                &BASE.replace("env:ACME_TEST", "env:ACME_LIVE"),
                "tenants[0].test_key",
                "wrong environment",
            ),
            (
                // A literal key: the error must not echo it (abc123, below).
                &BASE.replace("env:ACME_TEST", "test_abc123"),
                "tenants[0].test_key",
                "reference",
            ),
            (
                &BASE.replace("https://api", "http://api"),
                "upstream.base_url",
                "https",
            ),
            (
                &BASE.replace("https://api", "https://user:abc123@api"),
                "upstream.base_url",
                "user or password",
            ),
            (
                &BASE.replace("\"clients.*\"", "\"nope.*\""),
                "callers[0].operations[0]",
                "matches no operation",
            ),
            (
                &BASE.replace("tenant = \"acme\"", "tenant = \"other\""),
                "callers[0].tenant",
                "unknown tenant",
            ),
            (
                &BASE.replace("9f86d0", "zz86d0"),
                "callers[0].token_sha256",
                "64 hex",
            ),
            (
                &BASE.replace("[audit]\nenabled = false", "[audit]\nenabled = true"),
                "audit_keys.checkpoint_key",
                "required",
            ),
        ];
        for (text, key, reason) in cases {
            let e = compile_text(text, &env())
                .err()
                .unwrap_or_else(|| panic!("accepted: {key}"));
            assert_eq!(e.source, "t.toml");
            assert!(e.key.contains(key) || e.reason.contains(key), "{e}");
            assert!(e.to_string().contains(reason), "{e}");
            assert!(!e.to_string().contains("abc123"), "{e}");
        }
    }

    #[test]
    fn env_overrides_use_double_underscores() {
        let mut e = env();
        e.insert(
            "CUBEGATE__UPSTREAM__CONNECT_TIMEOUT_MS".into(),
            "1500".into(),
        );
        e.insert(
            "CUBEGATE__LISTENER__ADDRESS".into(),
            "127.0.0.1:18080".into(),
        );
        let s = compile_text(BASE, &e).unwrap();
        assert_eq!(s.upstream.connect_timeout, Duration::from_millis(1500));
        assert_eq!(s.listener.address, "127.0.0.1:18080");
    }

    #[test]
    fn tenant_policy_can_turn_the_builtin_strip_into_reject() {
        let text = BASE.replace(
            "live_key = \"env:ACME_LIVE\"",
            "live_key = \"env:ACME_LIVE\"\npolicy = [{ operation = \"clients.update\", pointer = \"/type\", action = \"reject\" }]",
        );
        let s = compile_text(&text, &env()).unwrap();
        let upd = operations::by_id("clients.update").unwrap();
        let rules = &s.tenants[0].rules[upd.0 as usize];
        assert_eq!(rules.len(), 1);
        let mut body = serde_json::json!({"type": "company"});
        assert!(crate::pipeline::policy::apply(&mut body, rules).is_err());
    }
}

#[cfg(test)]
mod prod_tests {
    use super::*;

    #[test]
    fn cert_sans_are_uris_or_dns_names() {
        assert_eq!(
            normalise_san("spiffe://corp/ns/kyc/sa/x").as_deref(),
            Some("spiffe://corp/ns/kyc/sa/x")
        );
        assert_eq!(
            normalise_san("dns:Reports.KYC.svc").as_deref(),
            Some("dns:reports.kyc.svc")
        );
        for bad in [
            "",
            "dns:",
            "onboarding",
            "://x",
            "spiffe://",
            "dns:a b",
            "spiffe://a b",
        ] {
            assert_eq!(normalise_san(bad), None, "{bad}");
        }
    }
}
