//! Stage `identify`: the caller's gateway token (in `Authorization`, raw as
//! the ComplyCube SDKs send their key, or `Bearer …`) -> [`Caller`]; then
//! `authorize` checks the caller may run the routed operation.
//! Failures: missing/unknown token or a raw ComplyCube key -> 401 (the key is
//! flagged as a security event, never logged); operation not allowed -> 403.

use std::sync::Arc;

use http::HeaderMap;

use crate::config::{Caller, Snapshot};
use crate::operations::OpIndex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    #[error("missing Authorization header: send your cubegate caller token")]
    Missing,
    #[error("unknown caller token")]
    Unknown,
    #[error(
        "a ComplyCube API key was sent; callers must send their cubegate caller token, never a ComplyCube key"
    )]
    RawComplyCubeKey,
    #[error("more than one Authorization header")]
    Ambiguous,
}

impl IdentifyError {
    /// A raw key reaching the gateway means a key leaked to an internal
    /// service: the security team wants to see it.
    pub fn is_security_event(self) -> bool {
        matches!(
            self,
            IdentifyError::RawComplyCubeKey | IdentifyError::Ambiguous
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

pub fn identify(snapshot: &Snapshot, headers: &HeaderMap) -> Result<Arc<Caller>, IdentifyError> {
    let token = presented_token(headers)?;
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
