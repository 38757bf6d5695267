//! The gateway's TLS listener and mTLS caller identity.
//!
//! Input: `[listener.tls]` (certificate chain and key PEM files, optional
//! client CA file, `client_auth` = none | optional | required). Output: a
//! rustls `ServerConfig` (ALPN h2 + http/1.1) compiled into the snapshot, so
//! a reload also rotates the listener certificate; and, per connection, the
//! [`PeerCert`] of a verified client certificate: its URI SANs (SPIFFE ids,
//! as written) and DNS SANs (`dns:name`), which `identify` maps to callers.
//! Failures: unreadable or unusable files are config errors; a client
//! certificate that does not chain to the client CA, is expired, or is
//! missing while required fails the handshake (nothing reaches the pipeline).

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ClientAuth, ListenerTls};

/// The identities in a verified client certificate. Only present on
/// requests whose connection presented one (rustls verified the chain).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCert {
    /// `spiffe://…`-style URI SANs as written, and DNS SANs as `dns:<name>`.
    pub sans: Vec<String>,
}

/// Build the listener's rustls config.
pub fn server_config(
    t: &ListenerTls,
    base_dir: &Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let read = |p: &Path, what: &str| {
        std::fs::read(base_dir.join(p)).map_err(|e| format!("{what}: cannot read: {}", e.kind()))
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(&t.cert_file, "cert_file")?)
            .collect::<Result<_, _>>()
            .map_err(|_| "cert_file: not PEM certificates".to_string())?;
    if certs.is_empty() {
        return Err("cert_file: holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&t.key_file, "key_file")?)
        .map_err(|_| "key_file: no PEM private key".to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match (t.client_auth, &t.client_ca_file) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => return Err("client_ca_file: required unless client_auth = \"none\"".into()),
        (mode, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&read(ca, "client_ca_file")?) {
                let c = c.map_err(|_| "client_ca_file: not PEM certificates".to_string())?;
                roots
                    .add(c)
                    .map_err(|e| format!("client_ca_file: unusable certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("client_ca_file: holds no certificate".into());
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if mode == ClientAuth::Optional {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| e.to_string())?)
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("cert_file/key_file: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The SANs of the (already verified) leaf certificate the peer presented.
pub fn peer_cert(certs: Option<&[CertificateDer<'_>]>) -> Option<PeerCert> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let leaf = certs?.first()?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::URI(u) => sans.push((*u).to_string()),
                GeneralName::DNSName(d) => sans.push(format!("dns:{}", d.to_ascii_lowercase())),
                _ => {}
            }
        }
    }
    Some(PeerCert { sans })
}
