//! The `cubegate` command: serve, demo, sandbox, check-config,
//! audit verify|query, token new. Exit codes: 0 ok, 1 runtime failure or a
//! failed audit verification, 2 bad configuration or usage.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Parser, Subcommand};

use cubegate::config::{self, ConfigSource, LogFormat};
use cubegate::sandbox::{Sandbox, SandboxOptions};
use cubegate::snapshot;
use cubegate::{Gateway, audit, secret, telemetry};

/// mimalloc instead of glibc's malloc, whose consolidation after many small
/// frees took a large share of the request path's CPU (docs/performance.md,
/// "Knobs that trade one figure for another").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEMO_TOML: &str = include_str!("../config/demo.toml");

#[derive(Parser)]
#[command(
    name = "cubegate",
    version,
    about = "The one way internal services reach the ComplyCube API"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway from a config file (SIGHUP reloads, SIGTERM drains).
    Serve {
        #[arg(long, env = "CUBEGATE_CONFIG")]
        config: PathBuf,
        /// Human-readable logs instead of JSON lines.
        #[arg(long)]
        text_logs: bool,
    },
    /// Gateway + local sandbox upstream with a demo tenant and caller.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: String,
        /// Where the demo keeps its keys and audit trail.
        #[arg(long, default_value = ".cubegate-demo")]
        dir: PathBuf,
        /// How long the sandbox's checks stay pending, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        completion_delay_ms: u64,
    },
    /// Run the sandbox (a local ComplyCube stand-in) alone.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Plain HTTP instead of HTTPS.
        #[arg(long)]
        plain: bool,
        /// Write the sandbox's CA certificate (PEM) here.
        #[arg(long)]
        ca_out: Option<PathBuf>,
        /// Artificial latency per request, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// How long checks stay pending before completing, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        completion_delay_ms: u64,
    },
    /// Validate a config and print a summary with every secret redacted.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// The audit trail: verify the chain, query records.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Caller tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check every link and checkpoint; exit 1 naming the first broken record.
    Verify {
        /// Audit files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Reference to the checkpoint key (`env:NAME` or `file:PATH`).
        #[arg(long)]
        checkpoint_key: Option<String>,
    },
    /// Print matching requests (intent and outcome joined).
    Query {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// A client id: requests on it and on what the trail links to it
        /// (addresses, documents and their uploads, checks, live photos and
        /// videos).
        #[arg(long)]
        client: Option<String>,
        /// A resource id: requests on it and on what the trail links below it.
        #[arg(long)]
        resource: Option<String>,
        #[arg(long)]
        caller: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        operation: Option<String>,
        /// RFC 3339 time, e.g. 2026-11-29T10:00:00Z.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// 2xx, 4xx, refused, allowed, outcome_unknown, a decision or a status.
        #[arg(long)]
        outcome: Option<String>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Print a fresh caller token once, and the line for the config.
    New {
        #[arg(long)]
        caller: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cubegate::install_crypto_provider();
    match cli.cmd {
        Cmd::CheckConfig { config } => check_config(&config),
        Cmd::Token {
            cmd: TokenCmd::New { caller },
        } => token_new(&caller),
        Cmd::Audit { cmd } => audit_cmd(cmd),
        other => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cubegate: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            rt.block_on(async_main(other))
        }
    }
}

async fn async_main(cmd: Cmd) -> ExitCode {
    let r = match cmd {
        Cmd::Serve { config, text_logs } => serve(&config, text_logs).await,
        Cmd::Demo {
            listen,
            admin,
            dir,
            completion_delay_ms,
        } => demo(&listen, &admin, &dir, completion_delay_ms).await,
        Cmd::Sandbox {
            listen,
            plain,
            ca_out,
            latency_ms,
            completion_delay_ms,
        } => sandbox(listen, plain, ca_out, latency_ms, completion_delay_ms).await,
        _ => Ok(()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cubegate: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn check_config(path: &Path) -> ExitCode {
    match snapshot::check(
        &ConfigSource::File(path),
        &config::process_env(),
        &secret::ProcessEnv,
    ) {
        Ok(summary) => {
            print!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn token_new(caller: &str) -> ExitCode {
    match secret::new_token() {
        Ok(token) => {
            println!("token (shown once; give it to the caller's service): {token}");
            println!();
            println!("config line for caller {caller}:");
            println!(
                "token_sha256 = \"{}\"",
                secret::sha256_hex(token.as_bytes())
            );
            ExitCode::SUCCESS
        }
        Err(_) => {
            eprintln!("cubegate: the system random generator failed");
            ExitCode::from(1)
        }
    }
}

fn parse_time(s: &Option<String>) -> Result<Option<SystemTime>, String> {
    s.as_deref()
        .map(|t| humantime::parse_rfc3339_weak(t).map_err(|e| format!("bad time {t}: {e}")))
        .transpose()
}

fn audit_cmd(cmd: AuditCmd) -> ExitCode {
    match cmd {
        AuditCmd::Verify {
            paths,
            checkpoint_key,
        } => {
            let key = match checkpoint_key
                .map(|r| secret::resolve(&r, &secret::ProcessEnv, Path::new(".")))
                .transpose()
            {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("--checkpoint-key: {e}");
                    return ExitCode::from(2);
                }
            };
            match audit::verify(&paths, key.as_ref().map(|k| k.expose().as_bytes())) {
                Ok(report) => {
                    println!("{report}");
                    if key.is_none() {
                        println!("note: checkpoint MACs not checked (no --checkpoint-key)");
                    }
                    ExitCode::SUCCESS
                }
                Err(f) => {
                    eprintln!("audit verification FAILED: {f}");
                    ExitCode::from(1)
                }
            }
        }
        AuditCmd::Query {
            paths,
            client,
            resource,
            caller,
            tenant,
            operation,
            since,
            until,
            outcome,
            json,
        } => {
            let (since, until) = match (parse_time(&since), parse_time(&until)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let filter = audit::QueryFilter {
                client,
                resource,
                caller,
                tenant,
                operation,
                since,
                until,
                outcome,
            };
            match audit::query(&paths, &filter) {
                Ok(rows) => {
                    if json {
                        print!("{}", audit::render_json_lines(&rows));
                    } else {
                        print!("{}", audit::render_table(&rows));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("audit query failed: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn serve(path: &Path, text_logs: bool) -> anyhow::Result<()> {
    let snapshot = snapshot::load(
        &ConfigSource::File(path),
        &config::process_env(),
        &secret::ProcessEnv,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let telemetry = telemetry::init(&snapshot.telemetry, text_logs.then_some(LogFormat::Text));
    let watch = snapshot.reload.watch;
    let mut gw = Gateway::start(snapshot).await?;
    if watch {
        gw.watch_config(path.to_path_buf());
    }
    tracing::info!(listen = %gw.addr(), admin = ?gw.admin_addr(), traces = telemetry.exporting(), audit_logs = telemetry.exporting_audit_logs(), "cubegate serving");
    let r = run_until_signal(gw, Some(path)).await;
    // Flush buffered spans; the exporter's blocking client must not run on
    // a runtime worker.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    r
}

/// Serve until SIGTERM/SIGINT (then drain); SIGHUP reloads when a loader is given.
async fn run_until_signal(gw: Gateway, config: Option<&Path>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => {
                if let Some(path) = config {
                    // Logged and counted inside; the old config keeps serving on error.
                    let _ = gw.reload_file(path);
                }
            }
        }
    }
    tracing::info!("draining");
    gw.shutdown().await;
    Ok(())
}

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    f.write_all(contents)?;
    Ok(())
}

fn random_hex(n: usize) -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| anyhow::anyhow!("random generator failed"))?;
    Ok(secret::hex(&b))
}

async fn demo(
    listen: &str,
    admin: &str,
    dir: &Path,
    completion_delay_ms: u64,
) -> anyhow::Result<()> {
    let sandbox = Sandbox::start(SandboxOptions {
        completion_delay: std::time::Duration::from_millis(completion_delay_ms),
        ..SandboxOptions::default()
    })
    .await?;
    let key_file = write_demo_files(dir, &sandbox)?;
    let token = secret::new_token().map_err(|_| anyhow::anyhow!("random generator failed"))?;
    let raw = demo_raw_config(listen, admin, dir, &sandbox, &key_file, &token)?;
    let snapshot = snapshot::compile(
        raw,
        "embedded demo config",
        &secret::ProcessEnv,
        Path::new("."),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let telemetry = telemetry::init(&snapshot.telemetry, None);
    let audit_dir = snapshot.audit.dir.clone();
    let gw = Gateway::start(snapshot).await?;
    let client_id = seed_demo_client(&gw, &token)
        .await
        .unwrap_or_else(|| "<client id>".into());
    print_demo_banner(&gw, &sandbox, &token, &client_id, &audit_dir, dir);
    let r = run_until_signal(gw, None).await;
    sandbox.shutdown().await;
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    r
}

/// The sandbox's CA, the demo's upstream key and the audit keys, in `dir`
/// (owner-only); keys already there are kept. Returns the upstream key's
/// path.
fn write_demo_files(dir: &Path, sandbox: &Sandbox) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    write_private(
        &dir.join("sandbox-ca.pem"),
        sandbox.ca_cert_pem().as_bytes(),
    )?;
    let key_file = dir.join("demo-test-key");
    if !key_file.exists() {
        write_private(
            &key_file,
            format!("test_demo{}", random_hex(16)?).as_bytes(),
        )?;
    }
    for name in ["audit-checkpoint-key", "audit-fingerprint-key"] {
        let p = dir.join(name);
        if !p.exists() {
            write_private(&p, random_hex(32)?.as_bytes())?;
        }
    }
    Ok(key_file)
}

/// The embedded demo config pointed at this sandbox, these addresses and
/// the files in `dir`, with `token` as the demo caller's credential.
fn demo_raw_config(
    listen: &str,
    admin: &str,
    dir: &Path,
    sandbox: &Sandbox,
    key_file: &Path,
    token: &str,
) -> anyhow::Result<config::RawConfig> {
    let mut raw = config::load_raw(
        &ConfigSource::Text {
            name: "embedded demo config",
            toml: DEMO_TOML,
        },
        &HashMap::new(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    raw.listener.address = listen.to_string();
    raw.admin.address = admin.to_string();
    raw.upstream.base_url = format!("{}/v1", sandbox.base_url());
    raw.upstream.ca_file = Some(dir.join("sandbox-ca.pem"));
    raw.tenants[0].test_key = Some(format!("file:{}", key_file.display()));
    raw.audit.dir = dir.join("audit");
    raw.audit_keys.checkpoint_key = Some(format!(
        "file:{}",
        dir.join("audit-checkpoint-key").display()
    ));
    raw.audit_keys.fingerprint_key = Some(format!(
        "file:{}",
        dir.join("audit-fingerprint-key").display()
    ));
    if let Some(c) = raw.callers.first_mut() {
        c.token_sha256 = secret::sha256_hex(token.as_bytes());
    }
    Ok(raw)
}

/// Where everything is, and a curl to try.
fn print_demo_banner(
    gw: &Gateway,
    sandbox: &Sandbox,
    token: &str,
    client_id: &str,
    audit_dir: &Path,
    dir: &Path,
) {
    let url = gw.url();
    println!();
    println!("cubegate demo is running");
    println!(
        "  gateway:   {url}/v1   (upstream: sandbox at {})",
        sandbox.base_url()
    );
    if let Some(a) = gw.admin_addr() {
        println!("  admin:     http://{a}/healthz  /readyz  /metrics");
    }
    println!("  audit:     {}", audit_dir.display());
    println!("  caller:    demo-onboarding (tenant demo, test environment, all operations)");
    println!("  token:     {token}");
    println!();
    println!("Update the seeded client through the gateway:");
    println!();
    println!(
        "  curl -s -X POST {url}/v1/clients/{client_id} \\\n    -H 'Authorization: {token}' \\\n    -H 'Content-Type: application/json' \\\n    -d '{{\"type\":\"company\",\"email\":\"jane.doe@example.com\",\"personDetails\":{{\"firstName\":\"Jane\",\"lastName\":\"Doe\",\"dob\":\"1990-01-01\"}}}}' -i"
    );
    println!();
    println!("(`type` is stripped by policy: see the X-Cubegate-Stripped header.)");
    println!(
        "Verify the audit trail:  cubegate audit verify {} --checkpoint-key file:{}",
        audit_dir.display(),
        dir.join("audit-checkpoint-key").display()
    );
    println!("Ctrl-C stops the demo.");
}

/// Create a client through the gateway's own pipeline so the demo curl has
/// an id to update (and the audit trail has a first record).
async fn seed_demo_client(gw: &Gateway, token: &str) -> Option<String> {
    use http_body_util::BodyExt;
    let body = r#"{"type":"person","email":"john.doe@example.com","personDetails":{"firstName":"John","lastName":"Doe"}}"#;
    let req = http::Request::builder()
        .method("POST")
        .uri("/v1/clients")
        // As over a connection: HTTP/1.1 needs its Host (the framing stage).
        .header("host", "localhost")
        .header("authorization", token)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            body.as_bytes(),
        )))
        .ok()?;
    let resp = cubegate::pipeline::handle(gw.shared().clone(), req).await;
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("id")?.as_str().map(str::to_string)
}

async fn sandbox(
    listen: SocketAddr,
    plain: bool,
    ca_out: Option<PathBuf>,
    latency_ms: u64,
    completion_delay_ms: u64,
) -> anyhow::Result<()> {
    let sb = Sandbox::start(SandboxOptions {
        listen,
        tls: !plain,
        latency: std::time::Duration::from_millis(latency_ms),
        completion_delay: std::time::Duration::from_millis(completion_delay_ms),
        ..SandboxOptions::default()
    })
    .await?;
    if let Some(p) = &ca_out {
        std::fs::write(p, sb.ca_cert_pem())?;
    }
    println!("sandbox listening on {}/v1", sb.base_url());
    if let Some(p) = ca_out {
        println!("CA certificate written to {}", p.display());
    }
    println!(
        "requests it received: GET {}/__sandbox/requests",
        sb.base_url()
    );
    tokio::signal::ctrl_c().await?;
    sb.shutdown().await;
    Ok(())
}
