//! Test harness: a real sandbox (TLS, generated CA) and a real gateway on
//! ephemeral ports, configured from a TOML file in a temp dir with keys in
//! files, exactly as an operator would. Canary values let tests prove that
//! keys, tokens and PII never leak.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cubegate::Gateway;
use cubegate::config::ConfigSource;
use cubegate::sandbox::{RecordedRequest, Sandbox, SandboxOptions};
use cubegate::secret;
use cubegate::snapshot;
use reqwest::StatusCode;
use serde_json::Value;

pub const KEY_A_TEST: &str = "test_CANARYKEYA7d1f0c2b9e";
pub const KEY_A_LIVE: &str = "live_CANARYKEYALIVE55aa1c";
pub const KEY_B_TEST: &str = "test_CANARYKEYB8e2a1d3c0f";
pub const TOKEN_A: &str = "cgw_CANARYTOKENA0000000000000000000000000000000000000000000000000001";
pub const TOKEN_A_LIVE: &str =
    "cgw_CANARYTOKENALIVE00000000000000000000000000000000000000000000002";
pub const TOKEN_A_READONLY: &str =
    "cgw_CANARYTOKENARO000000000000000000000000000000000000000000000003";
pub const TOKEN_B: &str = "cgw_CANARYTOKENB0000000000000000000000000000000000000000000000000004";
pub const TOKEN_A_QUOTA: &str =
    "cgw_CANARYTOKENAQUOTA0000000000000000000000000000000000000000000005";
/// Every test config's `field_hmac_key` (used when a test sets `hmac_fields`).
pub const FIELD_HMAC_KEY: &str = "CANARYHMACKEY-for-tests";
pub const PII_EMAIL: &str = "canary.pii.3b9f@example.com";
pub const PII_NAME: &str = "Zanzibarovichcanary";
pub const PII_DOB: &str = "1971-03-14";

/// Every value that must never appear in logs, audit files, metrics or
/// gateway-made error bodies.
pub const CANARIES: &[&str] = &[
    "CANARYKEYA",
    "CANARYKEYB",
    "CANARYTOKEN",
    "CANARYHMACKEY",
    "canary.pii.3b9f",
    "Zanzibarovichcanary",
    "1971-03-14",
];

pub struct Opts {
    /// Extra TOML appended to the config (sections not otherwise written).
    pub extra: String,
    /// The `[rate_limit]` section body.
    pub rate_limit: String,
    /// Tenant B refuses `type` on clients.update instead of stripping it.
    pub b_rejects_type: bool,
    pub audit: bool,
    /// Extra `[audit]` keys (e.g. `fsync = false`).
    pub audit_settings: String,
    pub sandbox: SandboxOptions,
    /// Listener settings (body of `[listener]` besides the address).
    pub listener: String,
    pub upstream: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            extra: String::new(),
            rate_limit: "default_test = { per_second = 10000.0, burst = 10000 }\ndefault_live = { per_second = 10000.0, burst = 10000 }\n".into(),
            b_rejects_type: true,
            audit: true,
            audit_settings: String::new(),
            sandbox: SandboxOptions::default(),
            listener: String::new(),
            upstream: "connect_timeout_ms = 2000\nresponse_timeout_ms = 5000\n".into(),
        }
    }
}

pub struct TestEnv {
    pub sandbox: Sandbox,
    pub gw: Gateway,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub config_path: PathBuf,
}

pub fn write(path: &Path, s: &str) {
    std::fs::write(path, s).unwrap();
}

/// The config file text for a sandbox at `base_url` (with `/v1`).
pub fn config_text(dir: &Path, base_url: &str, opts: &Opts, listen: &str) -> String {
    write(&dir.join("a-test-key"), &format!("{KEY_A_TEST}\n"));
    write(&dir.join("a-live-key"), KEY_A_LIVE);
    write(&dir.join("b-test-key"), KEY_B_TEST);
    write(&dir.join("checkpoint-key"), "checkpoint-secret-for-tests");
    write(&dir.join("fingerprint-key"), "fingerprint-secret-for-tests");
    write(&dir.join("field-hmac-key"), FIELD_HMAC_KEY);
    let h = |t: &str| secret::sha256_hex(t.as_bytes());
    let b_policy = if opts.b_rejects_type {
        "policy = [{ operation = \"clients.update\", pointer = \"/type\", action = \"reject\" }]"
    } else {
        ""
    };
    format!(
        r#"
[listener]
address = "{listen}"
{listener}

[admin]
address = "127.0.0.1:0"

[upstream]
base_url = "{base_url}"
ca_file = "sandbox-ca.pem"
webpki_roots = false
{upstream}

[[tenants]]
id = "tenant-a"
test_key = "file:a-test-key"
live_key = "file:a-live-key"

[[tenants]]
id = "tenant-b"
test_key = "file:b-test-key"
{b_policy}

[[callers]]
id = "a-all"
token_sha256 = "{ta}"
tenant = "tenant-a"
environment = "test"
operations = ["*"]

[[callers]]
id = "a-live"
token_sha256 = "{tal}"
tenant = "tenant-a"
environment = "live"
operations = ["*"]

[[callers]]
id = "a-readonly"
token_sha256 = "{tar}"
tenant = "tenant-a"
environment = "test"
operations = ["clients.get", "clients.list"]

[[callers]]
id = "b-all"
token_sha256 = "{tb}"
tenant = "tenant-b"
environment = "test"
operations = ["*"]

[[callers]]
id = "a-quota"
token_sha256 = "{taq}"
tenant = "tenant-a"
environment = "test"
operations = ["*"]
quota = {{ per_second = 1.0, burst = 1 }}
max_wait_ms = 0

[rate_limit]
{rate_limit}

[audit]
enabled = {audit}
dir = "audit"
instance = "test"
checkpoint_every_records = 5
{audit_settings}

[audit_keys]
checkpoint_key = "file:checkpoint-key"
fingerprint_key = "file:fingerprint-key"
field_hmac_key = "file:field-hmac-key"

{extra}
"#,
        listener = opts.listener,
        upstream = opts.upstream,
        ta = h(TOKEN_A),
        tal = h(TOKEN_A_LIVE),
        tar = h(TOKEN_A_READONLY),
        tb = h(TOKEN_B),
        taq = h(TOKEN_A_QUOTA),
        rate_limit = opts.rate_limit,
        audit = opts.audit,
        audit_settings = opts.audit_settings,
        extra = opts.extra,
    )
}

pub fn http_client() -> reqwest::Client {
    cubegate::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

impl TestEnv {
    pub async fn start() -> TestEnv {
        TestEnv::with(Opts::default()).await
    }

    /// Writes the config for `opts` over this gateway's file and reloads it.
    pub fn rewrite_config(&self, opts: &Opts) {
        let base_url = format!("{}/v1", self.sandbox.base_url());
        write(
            &self.config_path,
            &config_text(self.dir.path(), &base_url, opts, "127.0.0.1:0"),
        );
        self.gw
            .reload_file(&self.config_path)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    pub async fn with(opts: Opts) -> TestEnv {
        cubegate::install_crypto_provider();
        let sandbox = Sandbox::start(opts.sandbox.clone()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("sandbox-ca.pem"), &sandbox.ca_cert_pem());
        let text = config_text(
            dir.path(),
            &format!("{}/v1", sandbox.base_url()),
            &opts,
            "127.0.0.1:0",
        );
        let config_path = dir.path().join("cubegate.toml");
        write(&config_path, &text);
        let snap = snapshot::load(
            &ConfigSource::File(&config_path),
            &Default::default(),
            &secret::ProcessEnv,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let gw = Gateway::start(snap).await.unwrap();
        TestEnv {
            sandbox,
            gw,
            dir,
            http: http_client(),
            config_path,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.url())
    }

    pub fn audit_dir(&self) -> PathBuf {
        self.dir.path().join("audit")
    }

    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.sandbox.recorded()
    }

    pub async fn send(
        &self,
        method: &str,
        token: Option<&str>,
        path: &str,
        body: Option<&str>,
    ) -> Resp {
        let mut rb = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(t) = token {
            rb = rb.header("authorization", t);
        }
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        Resp::from(rb.send().await.unwrap()).await
    }

    pub async fn post(&self, token: &str, path: &str, body: &str) -> Resp {
        self.send("POST", Some(token), path, Some(body)).await
    }

    pub async fn get(&self, token: &str, path: &str) -> Resp {
        self.send("GET", Some(token), path, None).await
    }

    /// Create a person client through the gateway; returns its id.
    pub async fn create_client(&self, token: &str) -> String {
        let r = self
            .post(
                token,
                "/v1/clients",
                &format!(r#"{{"type":"person","email":"{PII_EMAIL}","personDetails":{{"firstName":"Ann","lastName":"{PII_NAME}","dob":"{PII_DOB}"}}}}"#),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["id"].as_str().unwrap().to_string()
    }

    pub async fn metrics(&self) -> String {
        let a = self.gw.admin_addr().unwrap();
        self.http
            .get(format!("http://{a}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// All audit file contents concatenated.
    pub fn audit_text(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(self.audit_dir()) {
            for e in rd.flatten() {
                s.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        s
    }

    /// Audit records (parsed), in file order.
    pub fn audit_records(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.audit_dir())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<Value>>()
            })
            .collect()
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    pub async fn from(r: reqwest::Response) -> Resp {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    /// A gateway-made error: ComplyCube's shape plus the request id.
    pub fn assert_error(&self, status: u16, kind: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.json["type"], kind, "{}", self.text);
        assert!(self.json["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(
            self.json["requestId"].as_str(),
            self.headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
        );
        for c in CANARIES {
            // Name the canary only: the body holding it stays out of CI logs.
            assert!(!self.text.contains(c), "error body leaks {c}");
        }
    }
}

/// Fails if any canary appears in `text`, naming where.
pub fn assert_no_canary(what: &str, text: &str) {
    for c in CANARIES {
        assert!(!text.contains(c), "{what} contains canary {c}");
    }
}
