//! Compiling whole configs: what each section becomes, which key an error
//! names, and what `check-config` prints.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::{ConfigSource, load_raw};
use crate::model::Environment;
use crate::operations::OpIndex;
use crate::secret;

// ---- [rate_limit] and its check-config lines ----

fn compile_with(
    rate_limit: &str,
    env: &[(&str, &str)],
) -> Result<(RawConfig, Snapshot), ConfigError> {
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
    let snap = compile(raw.clone(), "t.toml", &vars, Path::new("."))?;
    Ok((raw, snap))
}

#[test]
fn redis_url_reference_is_resolved_and_never_printed() {
    let (raw, s) = compile_with(
        "backend = \"redis\"\nredis_url = \"env:REDIS_URL\"\nfail = \"local\"\nreplicas = 3",
        &[("REDIS_URL", "redis://:hunter2@cache:6379/0")],
    )
    .unwrap();
    assert_eq!(
        s.rate_limit.redis_url.as_deref(),
        Some("redis://:hunter2@cache:6379/0")
    );
    let text = summary(&raw, &s);
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
    let (raw_on, on) = compile_with("", &[]).unwrap();
    assert!(on.rate_limit.enabled, "on by default");
    assert!(!summary(&raw_on, &on).contains("OFF"));
    let (raw_off, off) = compile_with("enabled = false", &[]).unwrap();
    assert!(!off.rate_limit.enabled);
    let text = summary(&raw_off, &off);
    assert!(text.contains("rate limit: rate limiting is OFF"), "{text}");
    assert!(!text.contains("default live"), "{text}");
}

#[test]
fn literal_redis_url_with_a_password_is_refused_without_echoing_it() {
    for url in [
        "redis://:hunter2@cache:6379/0",
        "rediss://user:hunter2@cache/1",
    ] {
        let e =
            compile_with(&format!("backend = \"redis\"\nredis_url = \"{url}\""), &[]).unwrap_err();
        assert_eq!(e.key, "rate_limit.redis_url");
        assert!(e.reason.contains("must not contain a password"), "{e}");
        assert!(!e.to_string().contains("hunter2"));
    }
    let (raw, s) = compile_with(
        "backend = \"redis\"\nredis_url = \"redis://cache:6379/0\"",
        &[],
    )
    .unwrap();
    assert!(summary(&raw, &s).contains("literal URL without password"));
    let e = compile_with("redis_url = \"env:NOPE\"", &[]).unwrap_err();
    assert!(e.reason.contains("NOPE is not set"), "{e}");
    let e = compile_with("redis_url = \"http://cache\"", &[]).unwrap_err();
    assert!(e.reason.contains("redis://"), "{e}");
}

// ---- callers, tenants, upstream, errors ----

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
        &secret::unhex("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08").unwrap(),
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
    assert_eq!(s.tenants[0].op(upd).rules.len(), 1);
    assert_eq!(s.tenants[0].op(OpIndex(0)).rules.len(), 0);
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
    let rules = &s.tenants[0].op(upd).rules;
    assert_eq!(rules.len(), 1);
    let mut body = serde_json::json!({"type": "company"});
    assert!(crate::pipeline::policy::apply(&mut body, rules).is_err());
}

#[test]
fn unknown_fields_mode_most_specific_pattern_then_tenant_wins() {
    use crate::config::FieldAction::{Reject, Strip};
    let op = |id| operations::by_id(id).unwrap();
    let mode = |s: &Snapshot, id| s.tenants[0].op(op(id)).unknown_fields;
    // Default: strip everywhere.
    let s = compile_text(BASE, &env()).unwrap();
    assert!(
        operations::OPERATIONS
            .iter()
            .all(|o| mode(&s, o.id) == Strip)
    );
    // Global table: an id beats its prefix, which beats `*`, whatever the order.
    let global = format!(
        "{BASE}\n[validation]\nunknown_fields_by_operation = {{ \"clients.update\" = \"strip\", \"*\" = \"strip\", \"clients.*\" = \"reject\" }}\n"
    );
    let s = compile_text(&global, &env()).unwrap();
    assert_eq!(mode(&s, "clients.create"), Reject);
    assert_eq!(mode(&s, "clients.update"), Strip);
    assert_eq!(mode(&s, "webhooks.update"), Strip);
    // The tenant's own setting, then its own table, win over the global ones.
    let tenant = global.replace(
        "live_key = \"env:ACME_LIVE\"",
        "live_key = \"env:ACME_LIVE\"\nunknown_fields = \"reject\"\nunknown_fields_by_operation = { \"webhooks.update\" = \"strip\" }",
    );
    let s = compile_text(&tenant, &env()).unwrap();
    assert_eq!(mode(&s, "clients.update"), Reject);
    assert_eq!(mode(&s, "checks.create"), Reject);
    assert_eq!(mode(&s, "webhooks.update"), Strip);
    // A pattern that matches nothing refuses to start, naming the key.
    let bad = format!(
        "{BASE}\n[validation]\nunknown_fields_by_operation = {{ \"nope.*\" = \"reject\" }}\n"
    );
    let e = compile_text(&bad, &env()).unwrap_err().to_string();
    assert!(
        e.contains("validation.unknown_fields_by_operation.nope.*"),
        "{e}"
    );
}
