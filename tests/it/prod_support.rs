//! Helpers for the production-readiness tests (faults, drain, reload,
//! slow clients, TLS): a test env whose upstream URL or trusted CA differs
//! from the sandbox's, and a free-port picker for child-process tests.

use std::path::Path;

use cubegate::Gateway;
use cubegate::config::ConfigSource;
use cubegate::sandbox::Sandbox;
use cubegate::secret;
use cubegate::snapshot::{self, Snapshot};

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

pub fn load(path: &Path) -> Snapshot {
    snapshot::load(
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

/// The real `cubegate` binary running `serve` as a child process, with its
/// logs in files. Killed (by its own pid) if a test fails before it exits.
pub struct ServeChild {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    pub log_path: std::path::PathBuf,
}

impl ServeChild {
    /// Start `cubegate serve --config <config>` listening on fixed free
    /// ports (the admin address comes in through an env override, the way
    /// an operator would set it), and wait until `/readyz` answers 200.
    pub async fn start(dir: &Path, config: &Path, listen: std::net::SocketAddr) -> ServeChild {
        let admin: std::net::SocketAddr = format!("127.0.0.1:{}", closed_port()).parse().unwrap();
        let log_path = dir.join("serve.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_cubegate"))
            .args(["serve", "--config"])
            .arg(config)
            .env("CUBEGATE__ADMIN__ADDRESS", admin.to_string())
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = ServeChild {
            child,
            addr: listen,
            admin,
            log_path,
        };
        let http = http_client();
        for _ in 0..200 {
            if let Ok(r) = http.get(c.admin_url("/readyz")).send().await
                && r.status() == 200
            {
                return c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("cubegate serve did not become ready: {}", c.logs());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Wait for the process to exit (bounded); its exit code.
    pub async fn wait(&mut self) -> Option<i32> {
        for _ in 0..600 {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("cubegate did not exit: {}", self.logs());
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A free fixed address for a child's gateway listener.
pub fn free_addr() -> std::net::SocketAddr {
    format!("127.0.0.1:{}", closed_port()).parse().unwrap()
}
