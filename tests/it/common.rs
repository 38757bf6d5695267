//! The one test harness: a real sandbox (TLS, generated CA) and a real
//! gateway on ephemeral ports, configured from a TOML file in a temp dir
//! with keys in files, exactly as an operator would. `Opts` is the builder;
//! `TestEnv::with` runs the gateway in this process, `Served::start` runs
//! the real `cubegate serve` binary as a child. Both talk through `Conn`
//! (requests, `/metrics`, `/readyz`, raw bytes) and read their trail with
//! `AuditDir`; `metric_value` and `metric_series` read a `/metrics` scrape.
//! Canary values let tests prove that keys, tokens and PII never leak.

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// How to build a test gateway: the config it gets and the sandbox behind
/// it. Every field has a default that serves a plain test.
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
    /// `[listener.tls]`: serve HTTPS, optionally asking for client certificates.
    pub tls: Option<ListenerTls>,
    /// `[upstream]` settings besides the URL and the CA.
    pub upstream: String,
    /// The upstream base URL (with `/v1`) instead of the sandbox's.
    pub upstream_url: Option<String>,
    /// The CA (PEM) the gateway trusts for the upstream instead of the
    /// sandbox's.
    pub upstream_ca: Option<String>,
}

/// The gateway's own certificate and, for mTLS, the CA its callers'
/// certificates must chain to.
pub struct ListenerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: PathBuf,
    /// `"required"` or `"optional"`.
    pub client_auth: String,
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
            tls: None,
            upstream: "connect_timeout_ms = 2000\nresponse_timeout_ms = 5000\n".into(),
            upstream_url: None,
            upstream_ca: None,
        }
    }
}

impl Opts {
    /// The body of `[listener]` besides the address, TLS table included.
    fn listener_section(&self) -> String {
        let Some(t) = &self.tls else {
            return self.listener.clone();
        };
        format!(
            "{}\n[listener.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\nclient_auth = \"{}\"\n",
            self.listener,
            t.cert_file.display(),
            t.key_file.display(),
            t.client_ca_file.display(),
            t.client_auth,
        )
    }

    /// The upstream base URL: the override, else the sandbox's.
    fn upstream_base(&self, sandbox: &Sandbox) -> String {
        self.upstream_url
            .clone()
            .unwrap_or_else(|| format!("{}/v1", sandbox.base_url()))
    }

    /// A fresh sandbox and a temp dir holding the config (listening on
    /// `listen`), the key files and the upstream CA: where both kinds of
    /// gateway start from.
    async fn prepare(&self, listen: &str) -> (Sandbox, tempfile::TempDir, PathBuf) {
        cubegate::install_crypto_provider();
        let sandbox = Sandbox::start(self.sandbox.clone()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = self
            .upstream_ca
            .clone()
            .unwrap_or_else(|| sandbox.ca_cert_pem());
        write(&dir.path().join("sandbox-ca.pem"), &ca);
        let text = config_text(dir.path(), &self.upstream_base(&sandbox), self, listen);
        let config_path = dir.path().join("cubegate.toml");
        write(&config_path, &text);
        (sandbox, dir, config_path)
    }
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
        listener = opts.listener_section(),
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

/// The snapshot a config file loads to (no environment overrides).
pub fn load(path: &Path) -> snapshot::Snapshot {
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

/// A free fixed address for a child's listener.
pub fn free_addr() -> SocketAddr {
    format!("127.0.0.1:{}", closed_port()).parse().unwrap()
}

pub const CLIENT_BODY: &str = r#"{"type":"person","email":"canary.pii.3b9f@example.com","personDetails":{"firstName":"Ann","lastName":"Zanzibarovichcanary"}}"#;

// ------------------------------------------------------------ requests

/// How a test talks to a running gateway, in-process or child: its
/// addresses and one HTTP client. `TestEnv` and `Served` deref to it, so
/// the same calls work on both.
pub struct Conn {
    pub http: reqwest::Client,
    /// `http://host:port` or `https://host:port`.
    base: String,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The child's log file, shown when a request fails in transport.
    log: Option<PathBuf>,
}

impl Conn {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The child's log so far (empty for an in-process gateway).
    pub fn logs(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    pub async fn send(
        &self,
        method: &str,
        token: Option<&str>,
        path: &str,
        body: Option<&str>,
    ) -> Resp {
        self.send_with(method, token, path, body, &[]).await
    }

    /// `send` with extra request headers (a request id, a traceparent).
    pub async fn send_with(
        &self,
        method: &str,
        token: Option<&str>,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
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
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        // A transport error shows the gateway's own log (a crash, a panic).
        let r = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:?}\n{}", self.logs()));
        Resp::from(r).await
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

    /// A GET on the admin listener: status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = self.http.get(self.admin_url(path)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The `/metrics` scrape (read it with `metric_value`, `metric_series`).
    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics").await.1
    }

    /// `/readyz`: status and the JSON report.
    pub async fn readyz(&self) -> (u16, Value) {
        let (status, body) = self.admin_get("/readyz").await;
        (status, serde_json::from_str(&body).unwrap())
    }

    /// Send raw bytes (for targets reqwest would normalise) and return the
    /// status line.
    pub async fn raw(&self, raw: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        String::from_utf8_lossy(&buf)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    }
}

// ------------------------------------------------------ in-process gateway

/// A sandbox and a `Gateway` running in this process.
pub struct TestEnv {
    pub sandbox: Sandbox,
    pub gw: Gateway,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub conn: Conn,
}

impl Deref for TestEnv {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl TestEnv {
    pub async fn start() -> TestEnv {
        TestEnv::with(Opts::default()).await
    }

    pub async fn with(opts: Opts) -> TestEnv {
        let (sandbox, dir, config_path) = opts.prepare("127.0.0.1:0").await;
        let gw = Gateway::start(load(&config_path)).await.unwrap();
        let conn = Conn {
            http: http_client(),
            base: gw.url(),
            addr: gw.addr(),
            admin: gw
                .admin_addr()
                .expect("the test config has an admin listener"),
            log: None,
        };
        TestEnv {
            sandbox,
            gw,
            dir,
            config_path,
            conn,
        }
    }

    /// Another gateway on this env's config file (a replica sharing its
    /// sandbox and, with Redis, its budgets).
    pub async fn replica(&self) -> Gateway {
        Gateway::start(load(&self.config_path)).await.unwrap()
    }

    /// Writes the config for `opts` over this gateway's file and reloads it.
    pub fn rewrite_config(&self, opts: &Opts) {
        write(
            &self.config_path,
            &config_text(
                self.dir.path(),
                &opts.upstream_base(&self.sandbox),
                opts,
                "127.0.0.1:0",
            ),
        );
        self.gw
            .reload_file(&self.config_path)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }

    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.sandbox.recorded()
    }

    pub fn audit_dir(&self) -> PathBuf {
        self.dir.path().join("audit")
    }

    pub fn audit(&self) -> AuditDir {
        AuditDir(self.audit_dir())
    }

    /// All audit file contents concatenated.
    pub fn audit_text(&self) -> String {
        self.audit().text()
    }

    /// Audit records (parsed), in file order.
    pub fn audit_records(&self) -> Vec<Value> {
        self.audit().records()
    }
}

// ------------------------------------------------------------ real binary

/// The real `cubegate serve --config FILE` as a child process against an
/// in-process sandbox, logging to a file in its temp dir. The admin address
/// comes in through an environment override, the way an operator would set
/// it. Killed (by its own pid) if a test fails before it exits.
pub struct Served {
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub conn: Conn,
    child: Child,
    /// Extra environment of every start (OTEL_*, RUST_LOG).
    env: Vec<(String, String)>,
    starts: usize,
}

impl Deref for Served {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

/// Inherited variables that would change what a child does.
const CHILD_ENV_REMOVED: &[&str] = &[
    "CUBEGATE_CONFIG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_LOGS_EXPORTER",
    "OTEL_SDK_DISABLED",
    "OTEL_METRIC_EXPORT_INTERVAL",
];

impl Served {
    /// Starts the binary for `opts` with `env` on two ports picked free
    /// beforehand, and waits until `/readyz` answers 200. A port can be
    /// taken by another test between the pick and the child's bind; the
    /// child then exits ("cannot listen on") before it is ready, and the
    /// start is retried on fresh ports.
    pub async fn start(opts: Opts, env: &[(&str, String)]) -> Served {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let mut last_log = String::new();
        for _ in 0..4 {
            let (addr, admin) = (free_addr(), free_addr());
            let (sandbox, dir, config_path) = opts.prepare(&addr.to_string()).await;
            let log = dir.path().join("serve-1.log");
            let child = spawn(&config_path, dir.path(), admin, &env, &log);
            let mut s = Served {
                sandbox,
                dir,
                config_path,
                conn: Conn {
                    http: http_client(),
                    base: format!("http://{addr}"),
                    addr,
                    admin,
                    log: Some(log),
                },
                child,
                env: env.clone(),
                starts: 1,
            };
            match s.wait_ready().await {
                Ok(()) => return s,
                Err(log) => last_log = log,
            }
        }
        panic!("cubegate did not start on free ports in 4 attempts; last log:\n{last_log}");
    }

    /// Starts the binary again on the same config and ports (after `kill`),
    /// logging to a new file; waits until it is ready.
    pub async fn restart(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_some(),
            "restart of a running child"
        );
        self.starts += 1;
        let log = self.dir.path().join(format!("serve-{}.log", self.starts));
        self.child = spawn(
            &self.config_path,
            self.dir.path(),
            self.admin,
            &self.env,
            &log,
        );
        self.conn.log = Some(log);
        if let Err(log) = self.wait_ready().await {
            panic!("cubegate could not listen again: {log}");
        }
    }

    /// Waits for `/readyz` to answer 200; Err(the child's log) when it
    /// could not bind one of its ports.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                let log = self.logs();
                if log.contains("cannot listen on") {
                    return Err(log);
                }
                panic!("cubegate exited with {st}: {log}");
            }
            let r = self.http.get(self.admin_url("/readyz")).send().await;
            if r.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "cubegate serve did not become ready: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// The child's process id (for /proc/PID/status).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Wait for the process to exit (bounded); its exit code.
    pub async fn wait(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(
                Instant::now() < deadline,
                "cubegate did not exit: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then wait for the drain and the flushes; the exit must be
    /// clean.
    pub async fn stop(&mut self) {
        self.signal("TERM");
        let code = self.wait().await;
        assert_eq!(code, Some(0), "cubegate exit: {}", self.logs());
    }

    pub fn audit_dir(&self) -> PathBuf {
        self.dir.path().join("audit")
    }

    pub fn audit(&self) -> AuditDir {
        AuditDir(self.audit_dir())
    }
}

/// `cubegate serve --config <config>` in `dir`, admin on `admin`, logging
/// to `log`.
fn spawn(
    config: &Path,
    dir: &Path,
    admin: SocketAddr,
    env: &[(String, String)],
    log: &Path,
) -> Child {
    let f = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cubegate"));
    cmd.args(["serve", "--config"])
        .arg(config)
        .current_dir(dir)
        .env("CUBEGATE__ADMIN__ADDRESS", admin.to_string())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::from(f.try_clone().unwrap()))
        .stderr(Stdio::from(f));
    for k in CHILD_ENV_REMOVED {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.spawn().unwrap()
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ------------------------------------------------------------ audit trail

/// An audit directory as tests read it: the log files in order (rotation
/// numbers them), their lines and parsed records, and every file's text.
pub struct AuditDir(pub PathBuf);

impl AuditDir {
    /// The log files (`*.jsonl`), oldest first; none if the dir is missing.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.0)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Raw audit lines of every log file, in file then line order.
    pub fn lines(&self) -> Vec<String> {
        self.files()
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Audit records (parsed), in file order.
    pub fn records(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Every file in the directory concatenated (the logs and whatever else
    /// the writer keeps there): what a leak scan reads.
    pub fn text(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(&self.0) {
            for e in rd.flatten() {
                s.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        s
    }
}

/// The real `cubegate` binary with `args` then `paths`.
pub fn cli(args: &[&str], paths: &[&Path]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cubegate"))
        .args(args)
        .args(paths)
        .output()
        .unwrap()
}

/// `cubegate audit verify <dir> --checkpoint-key file:<dir>/../checkpoint-key`.
pub fn verify(dir: &Path) -> std::process::Output {
    let key = format!("file:{}", dir.join("../checkpoint-key").display());
    cli(&["audit", "verify", "--checkpoint-key", &key], &[dir])
}

/// `cubegate audit verify` succeeds on `dir`; `when` names the moment.
pub fn assert_verifies(dir: &Path, when: &str) {
    let out = verify(dir);
    assert!(
        out.status.success(),
        "verify failed {when}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------- metrics

/// The series name of a Prometheus sample line (`#` lines have none).
fn series_name(line: &str) -> &str {
    line.split(['{', ' ']).next().unwrap_or("")
}

fn has_labels(line: &str, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
}

/// Sum of the samples of the series `name` whose labels include every pair
/// in `labels` (a histogram's series are `name_count`, `name_sum`, ...).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| series_name(l) == name && has_labels(l, labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sample lines of the metric `name` whose labels include every pair in
/// `labels`; a histogram's `_bucket`, `_sum` and `_count` lines count as
/// its own. Only lines that counted something (non-zero) are returned.
pub fn metric_series<'a>(text: &'a str, name: &str, labels: &[(&str, &str)]) -> Vec<&'a str> {
    // Non-zero lines only: the series the dashboard queries exist at zero
    // from start, so "counted something" is the claim, not "exists".
    text.lines()
        .filter(|l| {
            series_name(l)
                .strip_prefix(name)
                .is_some_and(|rest| ["", "_bucket", "_sum", "_count"].contains(&rest))
        })
        .filter(|l| has_labels(l, labels))
        .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) != Some(0.0))
        .collect()
}

// ------------------------------------------------------------ responses

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
