//! Throwaway PKI for the sandbox: a fresh CA and a server certificate for
//! `localhost` and `127.0.0.1` signed by it, made at every start.
//!
//! Input: nothing. Output: the CA (PEM and DER, what clients must trust) and
//! a rustls `ServerConfig` offering ALPN `h2` and `http/1.1`.
//! Failures: key generation, signing or rustls config errors, as `anyhow`.
//! A CA plus leaf (rather than one self-signed leaf) keeps strict verifiers
//! (OpenSSL's X509_STRICT, webpki) happy.

use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub(crate) struct Pki {
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
    pub server_config: Arc<rustls::ServerConfig>,
}

pub(crate) fn generate() -> anyhow::Result<Pki> {
    let _ = rustls::crypto::ring::default_provider().install_default();

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "cubegate sandbox CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)
        .context("self-signing the sandbox CA")?;

    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca)
        .context("signing the sandbox server certificate")?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
        .context("building the sandbox TLS config")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    Ok(Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server_config: Arc::new(cfg),
    })
}
