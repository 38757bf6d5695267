//! The one secret type. A `Secret` holds an upstream key, a token or a signing
//! key. It has a redacted `Debug`, no `Display` and no `Serialize`, so the only
//! way to see the value is the explicit [`Secret::expose`], and equality is
//! constant-time. Config never holds secret values, only references
//! (`env:NAME`, `file:PATH`) that [`resolve`] turns into a `Secret` at load time.

use std::fmt;
use std::path::Path;

use subtle::ConstantTimeEq;

#[derive(Clone)]
pub struct Secret(Box<str>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into().into_boxed_str())
    }

    /// The raw value. Call sites are grep-able: inject (the upstream key),
    /// identify (hashing a token) and the audit key fingerprint.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn ct_eq(&self, other: &str) -> bool {
        self.0.as_bytes().ct_eq(other.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other.expose())
    }
}
impl Eq for Secret {}

/// Why a secret reference could not be resolved. Never contains the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretRefError {
    #[error("must be a reference `env:NAME` or `file:PATH`, not a literal value")]
    NotAReference,
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("file {0} cannot be read: {1}")]
    FileUnreadable(String, String),
    #[error("the referenced value is empty")]
    Empty,
}

/// Where secret references are looked up. Production reads the process
/// environment; tests pass a map so they never touch global state.
pub trait EnvSource: Send + Sync {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;
impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Resolve `env:NAME` or `file:PATH` (relative paths against `base_dir`).
/// Surrounding whitespace (a trailing newline in a mounted file) is trimmed.
pub fn resolve(
    reference: &str,
    env: &dyn EnvSource,
    base_dir: &Path,
) -> Result<Secret, SecretRefError> {
    let value = if let Some(name) = reference.strip_prefix("env:") {
        env.var(name)
            .ok_or_else(|| SecretRefError::EnvMissing(name.to_string()))?
    } else if let Some(path) = reference.strip_prefix("file:") {
        let p = base_dir.join(path);
        std::fs::read_to_string(&p).map_err(|e| {
            SecretRefError::FileUnreadable(p.display().to_string(), e.kind().to_string())
        })?
    } else {
        return Err(SecretRefError::NotAReference);
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(SecretRefError::Empty);
    }
    Ok(Secret::new(trimmed))
}

/// SHA-256 of a token, as lowercase hex: what config stores instead of tokens.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Decode lowercase or uppercase hex; None on any non-hex character or odd length.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nib = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

/// A fresh random caller token: `cgw_` and 64 hex characters (256 bits).
pub fn new_token() -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut buf = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut buf)?;
    Ok(format!("cgw_{}", hex(&buf)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("test_CANARYKEY123");
        let shown = format!("{s:?} {:?} {:#?}", Some(&s), vec![s.clone()]);
        assert!(!shown.contains("CANARY"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn resolves_env_and_file_references_and_refuses_literals() {
        let mut env = HashMap::new();
        env.insert("K".to_string(), "test_abc\n".to_string());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), "live_xyz\n").unwrap();
        assert_eq!(
            resolve("env:K", &env, dir.path()).unwrap().expose(),
            "test_abc"
        );
        assert_eq!(
            resolve("file:k", &env, dir.path()).unwrap().expose(),
            "live_xyz"
        );
        assert_eq!(
            resolve("test_abc", &env, dir.path()),
            Err(SecretRefError::NotAReference)
        );
        assert_eq!(
            resolve("env:NOPE", &env, dir.path()),
            Err(SecretRefError::EnvMissing("NOPE".into()))
        );
        env.insert("E".into(), "  ".into());
        assert_eq!(
            resolve("env:E", &env, dir.path()),
            Err(SecretRefError::Empty)
        );
    }

    #[test]
    fn hex_round_trips_and_sha256_matches_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            unhex(&hex(&[0, 1, 254, 255])).unwrap(),
            vec![0, 1, 254, 255]
        );
        assert!(unhex("zz").is_none());
        let t = new_token().unwrap();
        assert!(t.starts_with("cgw_") && t.len() == 68);
    }
}
