//! Stage `identify`: the caller's gateway token (in `Authorization`, raw as
//! the ComplyCube SDKs send their key, or `Bearer …`) or its verified mTLS
//! client certificate (a URI or DNS SAN, [`PeerCert`]) -> [`Caller`]; then
//! `authorize` checks the caller may run the routed operation. A presented
//! certificate wins: one whose SANs map to no caller is refused (no fallback
//! to a token), and a token naming a different caller is refused too.
//! Failures: missing/unknown token or a raw ComplyCube key -> 401 (the key is
//! flagged as a security event, never logged); operation not allowed -> 403.

use std::sync::Arc;

use http::HeaderMap;

use crate::operations::OpIndex;
use crate::server::tls::PeerCert;
use crate::snapshot::{Caller, Snapshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    #[error("missing Authorization header: send your cubegate caller token")]
    Missing,
    #[error("the 'Authorization' header is invalid: unknown caller token")]
    Unknown,
    #[error(
        "a ComplyCube API key was sent: use your cubegate caller token instead, never a ComplyCube key"
    )]
    RawComplyCubeKey,
    #[error("more than one Authorization header")]
    Ambiguous,
    #[error("the client certificate is valid but identifies no cubegate caller")]
    UnknownCertificate,
    #[error("the client certificate and the Authorization token identify different callers")]
    Conflict,
}

impl IdentifyError {
    /// A raw key reaching the gateway means a key leaked to an internal
    /// service: the security team wants to see it.
    pub fn is_security_event(self) -> bool {
        matches!(
            self,
            IdentifyError::RawComplyCubeKey
                | IdentifyError::Ambiguous
                | IdentifyError::UnknownCertificate
                | IdentifyError::Conflict
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error("caller is not allowed to call {operation}")]
pub struct Forbidden {
    pub operation: &'static str,
}

/// The token the caller presented, without a `Bearer ` prefix.
fn presented_token(headers: &HeaderMap) -> Result<&str, IdentifyError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let first = values.next().ok_or(IdentifyError::Missing)?;
    if values.next().is_some() {
        return Err(IdentifyError::Ambiguous);
    }
    let raw = first.to_str().map_err(|_| IdentifyError::Unknown)?.trim();
    let token = match raw.split_once(char::is_whitespace) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim_start(),
        _ if raw.eq_ignore_ascii_case("bearer") => "",
        _ => raw,
    };
    if token.is_empty() {
        return Err(IdentifyError::Missing);
    }
    Ok(token)
}

pub fn identify(
    snapshot: &Snapshot,
    headers: &HeaderMap,
    peer: Option<&PeerCert>,
) -> Result<Arc<Caller>, IdentifyError> {
    let Some(peer) = peer else {
        return by_token(snapshot, presented_token(headers)?);
    };
    let mut found: Option<&Arc<Caller>> = None;
    for san in &peer.sans {
        if let Some(c) = snapshot.caller_by_cert_san(san) {
            if found.is_some_and(|f| !Arc::ptr_eq(f, c)) {
                return Err(IdentifyError::Conflict);
            }
            found = Some(c);
        }
    }
    let caller = found.ok_or(IdentifyError::UnknownCertificate)?;
    // The SDKs always send some Authorization value: ignore one that is not
    // a known token, refuse a raw key or a token of another caller.
    match presented_token(headers) {
        Err(IdentifyError::Ambiguous) => Err(IdentifyError::Ambiguous),
        Err(_) => Ok(caller.clone()),
        Ok(token) => match by_token(snapshot, token) {
            Err(IdentifyError::RawComplyCubeKey) => Err(IdentifyError::RawComplyCubeKey),
            Ok(other) if !Arc::ptr_eq(&other, caller) => Err(IdentifyError::Conflict),
            _ => Ok(caller.clone()),
        },
    }
}

fn by_token(snapshot: &Snapshot, token: &str) -> Result<Arc<Caller>, IdentifyError> {
    if token.starts_with("live_") || token.starts_with("test_") {
        return Err(IdentifyError::RawComplyCubeKey);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    snapshot
        .caller_by_token_hash(&hash)
        .cloned()
        .ok_or(IdentifyError::Unknown)
}

pub fn authorize(caller: &Caller, op: OpIndex) -> Result<(), Forbidden> {
    if caller.may(op) {
        Ok(())
    } else {
        Err(Forbidden {
            operation: op.def().id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(values: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn token_forms() {
        assert_eq!(presented_token(&h(&["cgw_abc"])), Ok("cgw_abc"));
        assert_eq!(presented_token(&h(&["Bearer cgw_abc"])), Ok("cgw_abc"));
        assert_eq!(presented_token(&h(&["bearer   cgw_abc"])), Ok("cgw_abc"));
        assert_eq!(presented_token(&h(&[])), Err(IdentifyError::Missing));
        assert_eq!(
            presented_token(&h(&["Bearer "])),
            Err(IdentifyError::Missing)
        );
        assert_eq!(
            presented_token(&h(&["a", "b"])),
            Err(IdentifyError::Ambiguous)
        );
    }

    #[test]
    fn messages_never_contain_the_token() {
        for e in [
            IdentifyError::Missing,
            IdentifyError::Unknown,
            IdentifyError::RawComplyCubeKey,
        ] {
            assert!(!e.to_string().contains("test_"));
        }
    }
}
