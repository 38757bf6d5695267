//! Set-up shared by the criterion benches (`#[path]`-included by each): the
//! bench caller, tenant and body, a compiled [`Snapshot`] around a given
//! `[upstream]` section, the caller's request headers, the production access
//! line formatted into a sink, and a [`Shared`] gateway state with or without
//! an audit log. Each bench uses part of it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cubegate::audit::{AuditKeys, AuditLog, AuditSettings};
use cubegate::config::{self, ConfigSource};
use cubegate::pipeline::forward::Upstream;
use cubegate::pipeline::rate_limit::RateLimiter;
use cubegate::snapshot::{self, Snapshot};
use cubegate::state::{Runtime, Shared};
use cubegate::{secret, telemetry};
use http::{HeaderMap, HeaderValue};

pub const TOKEN: &str = "cgw_benchtoken000000000000000000000000000000000000000000000000001";
pub const KEY: &str = "test_benchkey0123456789";
/// A valid ~300-byte `clients.update` (the load bench's body), `type` included
/// so the policy strips it.
pub const CLIENTS_UPDATE: &str = r#"{"type":"person","email":"john.doe@example.com","mobile":"+447700900123","telephone":"+442079460000","joinedDate":"2024-03-01","personDetails":{"firstName":"John","middleName":"Quincy","lastName":"Doe","dob":"1990-01-31","nationality":"GB","birthCountry":"GB","gender":"male","nationalIdentityNumber":"QQ123456C"}}"#;

/// One tenant (`bench`, test key [`KEY`]) and one caller ([`TOKEN`], every
/// operation), limits far above any load, audit off, behind `upstream` (the
/// body of the `[upstream]` section).
pub fn snapshot(upstream: &str) -> Snapshot {
    let toml = format!(
        r#"
[listener]
address = "127.0.0.1:0"
[admin]
address = "127.0.0.1:0"
enabled = false
[upstream]
{upstream}
[[tenants]]
id = "bench"
test_key = "env:BENCH_TEST_KEY"
[[callers]]
id = "bench-caller"
token_sha256 = "{token}"
tenant = "bench"
environment = "test"
operations = ["*"]
[rate_limit]
default_test = {{ per_second = 1e9, burst = 1000000000 }}
[audit]
enabled = false
"#,
        token = secret::sha256_hex(TOKEN.as_bytes())
    );
    let raw = config::load_raw(
        &ConfigSource::Text {
            name: "bench",
            toml: &toml,
        },
        &HashMap::new(),
    )
    .unwrap();
    let env: HashMap<String, String> = [("BENCH_TEST_KEY".to_string(), KEY.to_string())].into();
    snapshot::compile(raw, "bench", &env, Path::new(".")).unwrap()
}

/// What the official Python SDK sends with a JSON body.
pub fn caller_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", HeaderValue::from_static(TOKEN));
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
    h.insert(
        "user-agent",
        HeaderValue::from_static("complycube-python/1.0"),
    );
    h.insert("accept", HeaderValue::from_static("*/*"));
    h
}

/// The crypto provider, the metrics recorder, and the gateway's JSON access
/// line formatted by the production layer (no span layer: traces off) into a
/// sink: its cost is the formatting, not the terminal.
pub fn init_telemetry() {
    use tracing_subscriber::prelude::*;
    cubegate::install_crypto_provider();
    let _ = telemetry::metrics_handle();
    tracing_subscriber::registry()
        .with(telemetry::json_log_layer(
            std::io::sink,
            tracing_subscriber::filter::LevelFilter::INFO,
        ))
        .init();
}

pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An audit log in `dir` with fixed bench keys.
pub fn audit_log(dir: &Path, fsync: bool) -> AuditLog {
    let settings = AuditSettings {
        dir: dir.to_path_buf(),
        instance: Some("bench".into()),
        fsync,
        ..AuditSettings::default()
    };
    let keys = AuditKeys {
        checkpoint_key: b"checkpoint-key".to_vec(),
        fingerprint_key: b"fingerprint-key".to_vec(),
        field_hmac_key: b"field-key".to_vec(),
    };
    AuditLog::open(&settings, keys).unwrap()
}

/// The gateway's shared state for `snap`, as `Gateway::start` builds it.
pub fn shared(
    rt: &tokio::runtime::Runtime,
    snap: Arc<Snapshot>,
    audit: Option<AuditLog>,
) -> Arc<Shared> {
    let upstream = Upstream::new(&snap.upstream).unwrap();
    let limiter = rt.block_on(RateLimiter::new(&snap.rate_limit)).unwrap();
    Arc::new(Shared::new(
        Runtime {
            snapshot: snap,
            upstream: Arc::new(upstream),
        },
        limiter,
        audit,
    ))
}
