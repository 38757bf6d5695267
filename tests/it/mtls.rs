//! Issue 7: the TLS listener and mTLS callers. A client certificate's URI
//! (SPIFFE) or DNS SAN maps to its caller; no certificate when required, an
//! unknown CA, an expired certificate, or a SAN that maps to no caller is
//! refused (handshake failure or 401) with nothing forwarded; tokens and
//! certificates both work on one listener with `client_auth = "optional"`.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::common::*;

const SPIFFE_ID: &str = "spiffe://corp.example/ns/kyc/sa/onboarding";
const DNS_NAME: &str = "reports.kyc.svc";

struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        Ca(CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap())
    }

    fn pem(&self) -> String {
        self.0.pem()
    }

    /// A leaf certificate; `(cert PEM, key PEM)`.
    fn leaf(&self, sans: Vec<SanType>, server: bool, expired: bool) -> (String, String) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = sans;
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        p.use_authority_key_identifier_extension = true;
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.0).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}
fn dns(s: &str) -> SanType {
    SanType::DnsName(s.try_into().unwrap())
}

struct Pki {
    corp: Ca,
    dir: tempfile::TempDir,
}

/// The corp CA signs the gateway's server certificate and the callers'
/// client certificates; the files go where the config points.
fn pki() -> Pki {
    let corp = Ca::new("corp CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = corp.leaf(
        vec![
            SanType::IpAddress("127.0.0.1".parse().unwrap()),
            dns("localhost"),
        ],
        true,
        false,
    );
    write(&dir.path().join("gw-cert.pem"), &cert);
    write(&dir.path().join("gw-key.pem"), &key);
    write(&dir.path().join("client-ca.pem"), &corp.pem());
    Pki { corp, dir }
}

fn tls_opts(pki: &Pki, client_auth: &str) -> Opts {
    let d = pki.dir.path();
    Opts {
        tls: Some(ListenerTls {
            cert_file: d.join("gw-cert.pem"),
            key_file: d.join("gw-key.pem"),
            client_ca_file: d.join("client-ca.pem"),
            client_auth: client_auth.into(),
        }),
        extra: format!(
            r#"
[[callers]]
id = "svc-spiffe"
cert_san = "{SPIFFE_ID}"
tenant = "tenant-a"
environment = "test"
operations = ["*"]

[[callers]]
id = "svc-dns"
cert_san = "dns:{DNS_NAME}"
tenant = "tenant-b"
environment = "test"
operations = ["clients.get", "clients.list"]
"#
        ),
        ..Opts::default()
    }
}

/// An HTTPS client trusting the corp CA, presenting `identity` if given.
fn client(pki: &Pki, identity: Option<(String, String)>) -> reqwest::Client {
    cubegate::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.corp.pem().as_bytes()).unwrap())
        .unwrap();
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = match identity {
        Some((cert, key)) => b
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(
    c: &reqwest::Client,
    env: &TestEnv,
    token: Option<&str>,
    path: &str,
) -> Result<Resp, reqwest::Error> {
    let mut rb = c.get(env.url(path));
    if let Some(t) = token {
        rb = rb.header("authorization", t);
    }
    Ok(Resp::from(rb.send().await?).await)
}

#[tokio::test]
async fn client_certificates_map_to_their_callers_and_bad_ones_are_refused() {
    let pki = pki();
    let env = TestEnv::with(tls_opts(&pki, "required")).await;
    assert!(env.gw.url().starts_with("https://"));

    // URI SAN (SPIFFE id) -> svc-spiffe (tenant A). The SDKs always send an
    // Authorization value; one that is not a token is ignored.
    let spiffe = client(
        &pki,
        Some(pki.corp.leaf(vec![uri(SPIFFE_ID)], false, false)),
    );
    let r = get(&spiffe, &env, Some("mtls"), "/v1/clients")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let r = spiffe
        .post(env.url("/v1/clients"))
        .header("content-type", "application/json")
        .body(r#"{"type":"person","email":"a@example.com","personDetails":{"firstName":"A","lastName":"B"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rec = env.recorded();
    assert_eq!(rec.len(), 2);
    assert!(
        rec.iter()
            .all(|r| r.header_values("authorization") == vec![KEY_A_TEST])
    );

    // DNS SAN -> svc-dns (tenant B, read-only).
    let dns_client = client(&pki, Some(pki.corp.leaf(vec![dns(DNS_NAME)], false, false)));
    let r = get(&dns_client, &env, None, "/v1/clients").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        env.recorded()[2].header_values("authorization"),
        vec![KEY_B_TEST]
    );
    let r = Resp::from(
        dns_client
            .post(env.url("/v1/clients"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.assert_error(403, "forbidden");

    // The audit names the certificate's caller.
    let callers: Vec<String> = env
        .audit_records()
        .iter()
        .filter_map(|r| r["caller"].as_str().map(str::to_string))
        .collect();
    assert!(callers.contains(&"svc-spiffe".to_string()));
    assert!(callers.contains(&"svc-dns".to_string()));
    let forwarded = env.recorded().len();

    // A valid certificate whose SAN maps to no caller: 401, even with a
    // valid token beside it (a certificate wins; no fallback).
    let stranger = client(
        &pki,
        Some(pki.corp.leaf(
            vec![uri("spiffe://corp.example/ns/x/sa/stranger")],
            false,
            false,
        )),
    );
    get(&stranger, &env, None, "/v1/clients")
        .await
        .unwrap()
        .assert_error(401, "unauthorized");
    get(&stranger, &env, Some(TOKEN_A), "/v1/clients")
        .await
        .unwrap()
        .assert_error(401, "unauthorized");
    // Certificate and token naming different callers: 401.
    get(&spiffe, &env, Some(TOKEN_B), "/v1/clients")
        .await
        .unwrap()
        .assert_error(401, "unauthorized");

    // Handshake failures: no certificate (required), unknown CA, expired.
    let none = client(&pki, None);
    assert!(
        get(&none, &env, Some(TOKEN_A), "/v1/clients")
            .await
            .is_err()
    );
    let other = Ca::new("other CA");
    let foreign = client(&pki, Some(other.leaf(vec![uri(SPIFFE_ID)], false, false)));
    assert!(get(&foreign, &env, None, "/v1/clients").await.is_err());
    let expired = client(&pki, Some(pki.corp.leaf(vec![uri(SPIFFE_ID)], false, true)));
    assert!(get(&expired, &env, None, "/v1/clients").await.is_err());

    assert_eq!(
        env.recorded().len(),
        forwarded,
        "a refused caller got through"
    );
    let m = env.metrics().await;
    assert!(m.contains("cubegate_tls_handshake_failures_total"), "{m}");
}

#[tokio::test]
async fn tokens_and_certificates_both_work_on_one_optional_mtls_listener() {
    let pki = pki();
    let env = TestEnv::with(tls_opts(&pki, "optional")).await;
    // Token only, no certificate.
    let plain = client(&pki, None);
    let r = get(&plain, &env, Some(TOKEN_A), "/v1/clients")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    get(&plain, &env, None, "/v1/clients")
        .await
        .unwrap()
        .assert_error(401, "unauthorized");
    // Certificate only.
    let spiffe = client(
        &pki,
        Some(pki.corp.leaf(vec![uri(SPIFFE_ID)], false, false)),
    );
    let r = get(&spiffe, &env, None, "/v1/clients").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    // A certificate plus another caller's token: 401 (conflict).
    get(&spiffe, &env, Some(TOKEN_A_READONLY), "/v1/clients")
        .await
        .unwrap()
        .assert_error(401, "unauthorized");
    // Even optional mode refuses an untrusted certificate at the handshake.
    let other = Ca::new("other CA");
    let foreign = client(&pki, Some(other.leaf(vec![uri(SPIFFE_ID)], false, false)));
    assert!(
        get(&foreign, &env, Some(TOKEN_A), "/v1/clients")
            .await
            .is_err()
    );
    assert_eq!(env.recorded().len(), 2);
}
