//! The raw configuration: the TOML file plus `CUBEGATE__` overrides as
//! serde reads them, one struct per section, unknown keys refused
//! (`deny_unknown_fields`). Nothing here is checked beyond its type; that is
//! `validate`'s job and each stage's `compile`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::Environment;

/// Default body cap (DESIGN: 64 KiB) and the cap for image uploads (4 MB
/// decoded is ~5.4 MB of base64 plus the JSON wrapper): one number, the
/// body stage's.
pub const DEFAULT_BODY_CAP: usize = crate::pipeline::body::DEFAULT_MAX_BYTES;
pub const UPLOAD_BODY_CAP: usize = crate::pipeline::body::UPLOAD_MAX_BYTES;

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
    /// Longest time for a whole request body, however steadily it trickles.
    pub body_deadline_ms: u64,
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
            body_deadline_ms: 30_000,
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
    /// connection. Off: a pool of HTTP/1.1 keep-alive connections. HTTP/2 is
    /// the default because it opens fewer connections to ComplyCube at no
    /// measurable CPU cost.
    #[serde(default = "yes")]
    pub http2: bool,
    /// Consecutive transport failures (connect/TLS/reset/timeout) that open
    /// the circuit breaker; 0 disables it.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker fails fast before letting one probe through.
    #[serde(default = "default_breaker_cooldown")]
    pub breaker_cooldown_ms: u64,
    /// Pass the caller's `tracestate` on to ComplyCube with `traceparent`.
    /// Off by default: vendor trace state is internal to the caller's side.
    #[serde(default)]
    pub forward_tracestate: bool,
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
    /// This tenant's answer to undeclared body fields, for every operation
    /// (overrides `[validation]`).
    #[serde(default)]
    pub unknown_fields: Option<FieldAction>,
    /// Per operation (id or pattern) overrides of `unknown_fields` for this tenant.
    #[serde(default)]
    pub unknown_fields_by_operation: BTreeMap<String, FieldAction>,
    #[serde(default)]
    pub rate_limit: TenantBudgets,
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
    /// Longest array, widest object and most values in one JSON body.
    pub max_array_len: usize,
    pub max_object_members: usize,
    pub max_json_values: usize,
    /// Per-operation caps overriding the defaults, by operation id.
    pub max_bytes: HashMap<String, usize>,
    /// Memory all request bodies in flight may hold together, and one
    /// caller's share of it; past either a request waits up to
    /// `inflight_wait_ms`, then gets 503 before its body is read.
    pub inflight_max_bytes: usize,
    pub inflight_per_caller_bytes: usize,
    pub inflight_wait_ms: u64,
}

impl Default for BodySettings {
    fn default() -> Self {
        BodySettings {
            default_max_bytes: DEFAULT_BODY_CAP,
            upload_max_bytes: UPLOAD_BODY_CAP,
            max_depth: 32,
            max_array_len: crate::pipeline::body::DEFAULT_MAX_ARRAY_LEN,
            max_object_members: crate::pipeline::body::DEFAULT_MAX_OBJECT_MEMBERS,
            max_json_values: crate::pipeline::body::DEFAULT_MAX_NODES,
            max_bytes: HashMap::new(),
            inflight_max_bytes: 256 * 1024 * 1024,
            inflight_per_caller_bytes: 64 * 1024 * 1024,
            inflight_wait_ms: 1000,
        }
    }
}

/// What a field rule does with a field it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldAction {
    /// Remove the field and forward the rest.
    #[default]
    Strip,
    /// Refuse the request if the field is present.
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
    /// What a body field the operation's schema does not declare gets:
    /// `strip` (removed and reported, the default) or `reject` (400).
    pub unknown_fields: FieldAction,
    /// Per operation (id or pattern) overrides of `unknown_fields`; the most
    /// specific pattern wins (`clients.update` over `clients.*` over `*`).
    pub unknown_fields_by_operation: BTreeMap<String, FieldAction>,
}

impl Default for ValidationSettings {
    fn default() -> Self {
        ValidationSettings {
            enabled: true,
            schemas_dir: None,
            shadow: Vec::new(),
            unknown_fields: FieldAction::Strip,
            unknown_fields_by_operation: BTreeMap::new(),
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

// ---- [rate_limit] ----

/// A GCRA budget: a sustained rate and how many requests may pass at once
/// from idle.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Local,
    Redis,
}

/// What to do when the Redis backend cannot decide in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Refuse (429 with Retry-After 1): never risk the upstream limit.
    #[default]
    Closed,
    /// Decide in-process at budget ÷ replicas.
    Local,
}

/// The `[rate_limit]` section of the configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimiterSettings {
    /// Off: no budget or quota is checked and an upstream 429 pauses
    /// nothing; every request goes straight on (ComplyCube's own 429s still
    /// reach the caller). Read per request, so a reload applies it. Exists to measure
    /// what the limiter costs (`bench/run.sh` variant `cg-norl`), like
    /// `[validation] enabled`; cubegate warns at start when it is off.
    pub enabled: bool,
    pub backend: Backend,
    /// `redis://host:port/db`; may carry a password, so it is never printed.
    pub redis_url: Option<String>,
    pub redis_timeout_ms: u64,
    pub fail: FailMode,
    /// Number of gateway replicas sharing the budgets (for `fail = "local"`).
    pub replicas: u32,
    /// Default longest wait for a slot before refusing.
    pub max_wait_ms: u64,
    /// Most requests waiting at once per budget key (per replica). A request
    /// holds a place while its decision is made, so with Redis a very large
    /// number of concurrent decisions can also fill it.
    pub max_waiters: usize,
    /// Default budget of a live key: 80 % of ComplyCube's 10/s.
    pub default_live: Budget,
    /// Default budget of a test key: 80 % of ComplyCube's 5/s.
    pub default_test: Budget,
    /// Pause after an upstream 429 without Retry-After (ComplyCube advises 30 s).
    pub upstream_429_pause_secs: u64,
    /// How often idle state is dropped.
    pub idle_cleanup_secs: u64,
    /// Refused requests each caller (or, unauthenticated, each source
    /// address) may cause per replica before further refusals get 429 and
    /// are summarised instead of recorded one by one.
    pub refusals: Budget,
    /// At most one summary record per caller and refusal kind this often.
    pub refusal_summary_secs: u64,
}

impl Default for LimiterSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: Backend::Local,
            redis_url: None,
            redis_timeout_ms: 50,
            fail: FailMode::Closed,
            replicas: 1,
            max_wait_ms: 300,
            max_waiters: 1000,
            // GCRA lets `burst - 1 + rate` requests into any one-second
            // window. Burst 2 at 8/s gives at most 9 (< 10) and burst 1 at 4/s
            // at most 4 (< 5), so ComplyCube never sees more than its limit.
            default_live: Budget {
                per_second: 8.0,
                burst: 2,
            },
            default_test: Budget {
                per_second: 4.0,
                burst: 1,
            },
            upstream_429_pause_secs: 30,
            idle_cleanup_secs: 60,
            refusals: Budget {
                per_second: 20.0,
                burst: 40,
            },
            refusal_summary_secs: 10,
        }
    }
}

impl std::fmt::Debug for LimiterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimiterSettings")
            .field("enabled", &self.enabled)
            .field("backend", &self.backend)
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<redacted>"))
            .field("redis_timeout_ms", &self.redis_timeout_ms)
            .field("fail", &self.fail)
            .field("replicas", &self.replicas)
            .field("max_wait_ms", &self.max_wait_ms)
            .field("max_waiters", &self.max_waiters)
            .field("default_live", &self.default_live)
            .field("default_test", &self.default_test)
            .field("upstream_429_pause_secs", &self.upstream_429_pause_secs)
            .field("idle_cleanup_secs", &self.idle_cleanup_secs)
            .field("refusals", &self.refusals)
            .field("refusal_summary_secs", &self.refusal_summary_secs)
            .finish()
    }
}

// ---- [audit] ----

/// The `[audit]` section of the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// Write the trail at all. Off means `append` succeeds without writing.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Directory of the audit files (created if missing).
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// Instance id in file names and records; default: host name, else
    /// `cubegate`.
    #[serde(default)]
    pub instance: Option<String>,
    /// fsync every batch before `append` returns.
    #[serde(default = "yes")]
    pub fsync: bool,
    /// Group commit under load: when the previous batch held more than one
    /// record (requests are arriving concurrently), the writer waits this
    /// long after the first record before its write + fsync, so more
    /// records share it. A lone request never waits. 0 turns it off; only
    /// used with `fsync = true`.
    #[serde(default = "default_group_commit_wait")]
    pub group_commit_wait_us: u64,
    /// Run the writer thread under Linux's `SCHED_BATCH` policy: it still
    /// gets its fair share of CPU, but waking it (a new record, a finished
    /// fsync) does not preempt the request workers. That saves CPU on a
    /// saturated core and costs tail latency at moderate load
    /// (docs/performance.md, "Knobs that trade one figure for another"), so
    /// it is opt-in.
    /// Ignored where the policy does not exist.
    #[serde(default)]
    pub writer_sched_batch: bool,
    /// Record every operation, not only PII ones and refusals (used by the
    /// pipeline; the writer does not look at it).
    #[serde(default)]
    pub record_all: bool,
    /// Write a checkpoint after this many records…
    #[serde(default = "default_cp_records")]
    pub checkpoint_every_records: u64,
    /// …or after this many seconds with new records.
    #[serde(default = "default_cp_secs")]
    pub checkpoint_every_secs: u64,
    /// Start a new file when the current one reaches this size.
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// Start a new file when the UTC day changes.
    #[serde(default = "yes")]
    pub rotate_daily: bool,
    /// JSON pointers whose values get a keyed HMAC in `field_hmacs`.
    #[serde(default)]
    pub hmac_fields: Vec<String>,
    /// Hard bound on one record's line, in bytes (1 KiB to 64 KiB): longer
    /// records are cut (`truncated: true`), whatever the request held.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// How many field pointers a record lists before it summarises (count
    /// and depth); default: `max_record_bytes / 64`.
    #[serde(default)]
    pub max_fields: Option<usize>,
    /// Free space the audit directory's file system must keep: below it,
    /// readiness fails and writes that need an intent get 503
    /// `audit_unavailable`, before the disk is full. 0 turns it off. Read
    /// per request, so a reload applies it.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
}

fn default_min_free_bytes() -> u64 {
    64 * 1024 * 1024
}

/// The smallest and largest `max_record_bytes` accepted.
pub const RECORD_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=65536;

fn default_max_record_bytes() -> usize {
    4096
}

impl AuditSettings {
    /// The number of field pointers a record lists.
    pub fn field_list_cap(&self) -> usize {
        self.max_fields.unwrap_or(self.max_record_bytes / 64)
    }
}

fn default_group_commit_wait() -> u64 {
    200
}
fn default_dir() -> PathBuf {
    PathBuf::from("audit")
}
fn default_cp_records() -> u64 {
    1000
}
fn default_cp_secs() -> u64 {
    60
}
fn default_rotate_bytes() -> u64 {
    64 * 1024 * 1024
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: default_dir(),
            instance: None,
            fsync: true,
            group_commit_wait_us: default_group_commit_wait(),
            writer_sched_batch: false,
            record_all: false,
            checkpoint_every_records: default_cp_records(),
            checkpoint_every_secs: default_cp_secs(),
            rotate_bytes: default_rotate_bytes(),
            rotate_daily: true,
            hmac_fields: Vec::new(),
            max_record_bytes: default_max_record_bytes(),
            max_fields: None,
            min_free_bytes: default_min_free_bytes(),
        }
    }
}
