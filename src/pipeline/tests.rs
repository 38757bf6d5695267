//! The pipeline driven in-process: `handle` called directly, the upstream a
//! fake HTTPS server reached through in-memory pipes (no sockets). Each
//! stage's refusal: its status and `type`, its audit decision, and that
//! nothing reached the upstream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

use super::handle;
use crate::config::ConfigSource;
use crate::pipeline::forward::Upstream;
use crate::pipeline::rate_limit::RateLimiter;
use crate::state::{Runtime, Shared};

const TOKEN: &str = "cgw_INPROCESS_all_0000000000000000000000000000000000000000000000001";
const TOKEN_READONLY: &str = "cgw_INPROCESS_ro_00000000000000000000000000000000000000000000000002";
const TOKEN_QUOTA: &str = "cgw_INPROCESS_quota_000000000000000000000000000000000000000000000003";
const UPSTREAM_KEY: &str = "test_INPROCESSKEY0001";

/// What the fake upstream received: method, path and query, Authorization.
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

struct Harness {
    shared: Arc<Shared>,
    seen: Seen,
    dir: tempfile::TempDir,
}

fn config_text(dir: &Path) -> String {
    let h = |t: &str| crate::secret::sha256_hex(t.as_bytes());
    format!(
        r#"
[listener]
address = "127.0.0.1:0"

[upstream]
base_url = "https://localhost/v1"
ca_file = "{ca}"
webpki_roots = false

[[tenants]]
id = "tenant-a"
test_key = "env:CG_TEST_KEY"
policy = [{{ operation = "clients.update", pointer = "/type", action = "reject" }}]

[[callers]]
id = "all"
token_sha256 = "{all}"
tenant = "tenant-a"
environment = "test"
operations = ["*"]

[[callers]]
id = "readonly"
token_sha256 = "{ro}"
tenant = "tenant-a"
environment = "test"
operations = ["clients.get"]

[[callers]]
id = "quota"
token_sha256 = "{quota}"
tenant = "tenant-a"
environment = "test"
operations = ["*"]
quota = {{ per_second = 0.01, burst = 1 }}
max_wait_ms = 0

[audit]
enabled = true
dir = "{audit}"
instance = "inproc"

[audit_keys]
checkpoint_key = "env:CG_CHECKPOINT_KEY"
fingerprint_key = "env:CG_FINGERPRINT_KEY"
field_hmac_key = "env:CG_FIELD_KEY"
"#,
        ca = dir.join("ca.pem").display(),
        audit = dir.join("audit").display(),
        all = h(TOKEN),
        ro = h(TOKEN_READONLY),
        quota = h(TOKEN_QUOTA),
    )
}

/// A fake ComplyCube: TLS with a throwaway CA, answers every request with
/// `{"id":"5f00000000000000000000aa"}` and records what it was sent.
fn fake_upstream(
    tls: Arc<rustls::ServerConfig>,
    seen: Seen,
) -> crate::pipeline::forward::connector::Dial {
    Arc::new(move || {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
        let seen = seen.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(server).await else {
                return;
            };
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let seen = seen.clone();
                async move {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let target = req.uri().path_and_query().map(|p| p.to_string());
                    seen.lock().unwrap().push((
                        req.method().to_string(),
                        target.unwrap_or_default(),
                        auth,
                    ));
                    let _ = req.into_body().collect().await;
                    let body =
                        Full::new(Bytes::from_static(br#"{"id":"5f00000000000000000000aa"}"#));
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .header("content-type", "application/json")
                            .body(body)
                            .unwrap(),
                    )
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
        Ok(client)
    })
}

impl Harness {
    async fn start() -> Harness {
        crate::install_crypto_provider();
        let pki = crate::sandbox::tls::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
        let text = config_text(dir.path());
        let env: HashMap<String, String> = [
            ("CG_TEST_KEY", UPSTREAM_KEY),
            ("CG_CHECKPOINT_KEY", "checkpoint-key-in-process"),
            ("CG_FINGERPRINT_KEY", "fingerprint-key-in-process"),
            ("CG_FIELD_KEY", "field-key-in-process"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let src = ConfigSource::Text {
            name: "in-process",
            toml: &text,
        };
        let snap = crate::snapshot::load(&src, &Default::default(), &env)
            .unwrap_or_else(|e| panic!("{e}"));
        let seen = Seen::default();
        let dial = fake_upstream(pki.server_config.clone(), seen.clone());
        let upstream = Upstream::in_memory(&snap.upstream, dial).unwrap();
        let limiter = RateLimiter::new(&snap.rate_limit).await.unwrap();
        let audit = snap.open_audit().unwrap();
        let runtime = Runtime {
            snapshot: Arc::new(snap),
            upstream: Arc::new(upstream),
        };
        Harness {
            shared: Arc::new(Shared::new(runtime, limiter, audit)),
            seen,
            dir,
        }
    }

    async fn call(
        &self,
        method: &str,
        target: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder()
            .method(method)
            .uri(target)
            .header("host", "cubegate.test");
        if let Some(t) = token {
            b = b.header("authorization", t);
        }
        if !body.is_empty() {
            b = b.header("content-type", "application/json");
        }
        let req = b.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let resp = handle(self.shared.clone(), req).await;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn upstream_calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Every audit record written so far, in order.
    async fn audit_records(&self) -> Vec<Value> {
        self.shared.audit().unwrap().flush().await.unwrap();
        let mut files: Vec<_> = std::fs::read_dir(self.dir.path().join("audit"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        files.sort();
        files
            .iter()
            .flat_map(|f| {
                let text = std::fs::read_to_string(f).unwrap();
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    async fn last_decision(&self) -> String {
        let records = self.audit_records().await;
        let last = records.last().expect("an audit record");
        last["decision"].as_str().unwrap_or_default().to_string()
    }
}

const UPDATE: &str = "/v1/clients/5f00000000000000000000aa";

#[tokio::test]
async fn an_allowed_request_reaches_the_upstream_with_the_tenant_key_and_is_audited() {
    let h = Harness::start().await;
    let (status, body) = h
        .call(
            "POST",
            UPDATE,
            Some(TOKEN),
            r#"{"email":"someone@example.com"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], "5f00000000000000000000aa");
    let seen = h.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![(
            "POST".to_string(),
            "/v1/clients/5f00000000000000000000aa".to_string(),
            UPSTREAM_KEY.to_string()
        )]
    );
    let records = h.audit_records().await;
    let kinds: Vec<_> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["intent", "outcome"]);
    assert!(records.iter().all(|r| r["decision"] == "allowed"));
    assert_eq!(records[1]["status"], 200);
}

/// Every refusal, stage by stage: the answer, the audit decision, and that
/// the upstream saw nothing.
#[tokio::test]
async fn each_stage_refusal_is_answered_and_recorded_under_its_own_decision() {
    let h = Harness::start().await;
    let good = r#"{"email":"someone@example.com"}"#;
    // method, target, token, body; status, type, audit decision
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        &'a str,
        u16,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            UPDATE,
            None,
            good,
            401,
            "unauthorized",
            "refused_auth",
        ),
        (
            "POST",
            UPDATE,
            Some(UPSTREAM_KEY),
            good,
            401,
            "unauthorized",
            "refused_auth",
        ),
        (
            "POST",
            UPDATE,
            Some(TOKEN_READONLY),
            good,
            403,
            "forbidden",
            "refused_forbidden",
        ),
        (
            "GET",
            "/v1/clients/a/../b",
            Some(TOKEN),
            "",
            400,
            "invalid_request",
            "refused_route",
        ),
        (
            "GET",
            "/v1/clients?page=x",
            Some(TOKEN),
            "",
            400,
            "invalid_request",
            "refused_route",
        ),
        (
            "GET",
            "/v1/nothing",
            Some(TOKEN),
            "",
            404,
            "route_not_found",
            "refused_route",
        ),
        (
            "PUT",
            UPDATE,
            Some(TOKEN),
            good,
            405,
            "method_not_allowed",
            "refused_route",
        ),
        (
            "POST",
            UPDATE,
            Some(TOKEN),
            "{\"email\":",
            400,
            "invalid_request",
            "refused_body",
        ),
        (
            "GET",
            UPDATE,
            Some(TOKEN),
            "{}",
            400,
            "invalid_request",
            "refused_body",
        ),
        (
            "POST",
            UPDATE,
            Some(TOKEN),
            r#"{"type":"company"}"#,
            400,
            "invalid_request",
            "refused_policy",
        ),
        (
            "POST",
            UPDATE,
            Some(TOKEN),
            r#"{"email":7}"#,
            400,
            "invalid_request",
            "refused_validation",
        ),
    ];
    for (method, target, token, body, status, kind, decision) in cases {
        let (got, answer) = h.call(method, target, token, body).await;
        let what = format!("{method} {target} {body}");
        assert_eq!(got.as_u16(), status, "{what}: {answer}");
        assert_eq!(answer["type"], kind, "{what}: {answer}");
        assert!(answer["requestId"].is_string(), "{what}: {answer}");
        assert_eq!(h.last_decision().await, decision, "{what}");
    }
    assert_eq!(
        h.upstream_calls(),
        0,
        "a refused request reached the upstream"
    );
}

#[tokio::test]
async fn a_refused_path_is_recorded_as_refused_route() {
    let h = Harness::start().await;
    let (status, _) = h.call("GET", "/v1/clients/%2e%2e/x", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let records = h.audit_records().await;
    let last = records.last().unwrap();
    assert_eq!(last["decision"], "refused_route");
    assert_eq!(last["kind"], "event");
    assert_eq!(h.upstream_calls(), 0);
}

#[tokio::test]
async fn a_caller_over_its_quota_is_refused_by_the_rate_limit_stage() {
    let h = Harness::start().await;
    let first = h.call("GET", UPDATE, Some(TOKEN_QUOTA), "").await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    let (status, body) = h.call("GET", UPDATE, Some(TOKEN_QUOTA), "").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["type"], "rate_limit_exceeded");
    assert_eq!(h.last_decision().await, "refused_rate_limit");
    assert_eq!(h.upstream_calls(), 1);
}

#[tokio::test]
async fn a_draining_gateway_refuses_without_reaching_any_stage() {
    let h = Harness::start().await;
    h.shared.start_draining();
    let (status, body) = h.call("GET", UPDATE, Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["type"], "draining");
    assert_eq!(h.upstream_calls(), 0);
}
