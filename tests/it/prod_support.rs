//! Helpers for the production-readiness tests (faults, drain, reload,
//! slow clients, TLS): a test env whose upstream URL or trusted CA differs
//! from the sandbox's, and a free-port picker for child-process tests.

use std::path::Path;

use cubegate::Gateway;
use cubegate::config::{self, ConfigSource};
use cubegate::sandbox::Sandbox;
use cubegate::secret;

use crate::common::*;

/// Like `TestEnv::with`, but the gateway's upstream is `base_url` (default:
/// the sandbox) and it trusts `ca_pem` (default: the sandbox's CA).
pub async fn env_with_upstream(
    opts: Opts,
    base_url: Option<String>,
    ca_pem: Option<String>,
) -> TestEnv {
    cubegate::install_crypto_provider();
    let sandbox = Sandbox::start(opts.sandbox.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("sandbox-ca.pem"),
        &ca_pem.unwrap_or_else(|| sandbox.ca_cert_pem()),
    );
    let base = base_url.unwrap_or_else(|| format!("{}/v1", sandbox.base_url()));
    let text = config_text(dir.path(), &base, &opts, "127.0.0.1:0");
    let config_path = dir.path().join("cubegate.toml");
    write(&config_path, &text);
    let snap = load(&config_path);
    let gw = Gateway::start(snap).await.unwrap();
    TestEnv {
        sandbox,
        gw,
        dir,
        http: http_client(),
        config_path,
    }
}

pub fn load(path: &Path) -> config::Snapshot {
    config::load(
        &ConfigSource::File(path),
        &Default::default(),
        &secret::ProcessEnv,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The value of one Prometheus sample line starting with `prefix`, summed
/// over its label sets.
pub fn metric_sum(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub const CLIENT_BODY: &str = r#"{"type":"person","email":"canary.pii.3b9f@example.com","personDetails":{"firstName":"Ann","lastName":"Zanzibarovichcanary"}}"#;
