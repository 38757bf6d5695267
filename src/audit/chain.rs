//! Hash chain, checkpoints and file naming shared by the writer, `verify` and
//! `query`.
//!
//! Input: record lines (exact bytes, without the trailing newline), an
//! instance id, a checkpoint key.
//! Output: the `prev` link of the next record (hex SHA-256 of the previous
//! line, or of the instance's genesis marker for seq 1); signed checkpoint
//! lines; the names `audit-<instance>-<NNNNNN>.jsonl` and
//! `<instance>.checkpoints`.
//! Failures: none here; parsing a file name that is not an audit file gives
//! `None`, a checkpoint with a bad MAC gives `false`.
//!
//! Why hash the exact line bytes: re-serialising a parsed record could
//! normalise an edit away (key order, number formatting); hashing the bytes
//! as stored means any change to a line breaks the next record's `prev`.

use std::path::Path;

use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::secret::{hex, unhex};

/// Hex SHA-256 of a record line (without its newline).
pub fn line_hash(line: &[u8]) -> String {
    crate::secret::sha256_hex(line)
}

/// The `prev` of an instance's first record. Binding the instance id in means
/// a chain cannot be passed off as another instance's.
pub fn genesis(instance: &str) -> String {
    line_hash(format!("cubegate-audit-genesis:v1:{instance}").as_bytes())
}

/// One line of `<instance>.checkpoints`: the head of the chain at `seq`,
/// authenticated with HMAC-SHA256 under the checkpoint key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Schema version (1).
    pub v: u32,
    /// Sequence number of the head record.
    pub seq: u64,
    /// [`line_hash`] of the record at `seq`.
    pub head_hash: String,
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The writing instance.
    pub instance: String,
    /// Hex HMAC-SHA256 over [`Checkpoint::signed_bytes`].
    pub mac: String,
}

impl Checkpoint {
    /// The canonical bytes the MAC covers (everything but the MAC).
    fn signed_bytes(v: u32, seq: u64, head_hash: &str, time: &str, instance: &str) -> Vec<u8> {
        format!("cubegate-audit-checkpoint:v{v}:{instance}:{seq}:{head_hash}:{time}").into_bytes()
    }

    /// A signed checkpoint for the head `seq`/`head_hash`.
    pub fn sign(key: &[u8], instance: &str, seq: u64, head_hash: &str, time: &str) -> Self {
        let k = hmac::Key::new(hmac::HMAC_SHA256, key);
        let msg = Self::signed_bytes(1, seq, head_hash, time, instance);
        Self {
            v: 1,
            seq,
            head_hash: head_hash.to_string(),
            time: time.to_string(),
            instance: instance.to_string(),
            mac: hex(hmac::sign(&k, &msg).as_ref()),
        }
    }

    /// Whether the MAC is valid under `key` (constant-time comparison).
    pub fn mac_ok(&self, key: &[u8]) -> bool {
        let Some(tag) = unhex(&self.mac) else {
            return false;
        };
        let k = hmac::Key::new(hmac::HMAC_SHA256, key);
        let msg = Self::signed_bytes(
            self.v,
            self.seq,
            &self.head_hash,
            &self.time,
            &self.instance,
        );
        hmac::verify(&k, &msg, &tag).is_ok()
    }
}

/// `audit-<instance>-<NNNNNN>.jsonl`.
pub fn log_file_name(instance: &str, number: u64) -> String {
    format!("audit-{instance}-{number:06}.jsonl")
}

/// `<instance>.checkpoints`.
pub fn checkpoint_file_name(instance: &str) -> String {
    format!("{instance}.checkpoints")
}

/// Splits an audit file name into (instance, number). The instance may itself
/// contain `-`, so the number is the part after the last one.
pub fn parse_log_file_name(path: &Path) -> Option<(String, u64)> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    let (instance, num) = rest.rsplit_once('-')?;
    if instance.is_empty() || num.len() < 6 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((instance.to_string(), num.parse().ok()?))
}

/// The instance of a `<instance>.checkpoints` file.
pub fn parse_checkpoint_file_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let inst = name.strip_suffix(".checkpoints")?;
    (!inst.is_empty()).then(|| inst.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_answer() {
        assert_eq!(
            line_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(genesis("a"), genesis("b"));
    }

    #[test]
    fn checkpoint_mac_detects_any_change() {
        let cp = Checkpoint::sign(
            b"key",
            "i1",
            7,
            &line_hash(b"x"),
            "2026-01-01T00:00:00.000Z",
        );
        assert!(cp.mac_ok(b"key"));
        assert!(!cp.mac_ok(b"other"));
        let mut c = cp.clone();
        c.seq = 8;
        assert!(!c.mac_ok(b"key"));
        let mut c = cp.clone();
        c.head_hash = line_hash(b"y");
        assert!(!c.mac_ok(b"key"));
        let mut c = cp;
        c.mac = "zz".into();
        assert!(!c.mac_ok(b"key"));
    }

    #[test]
    fn file_names_round_trip() {
        let n = log_file_name("web-1", 12);
        assert_eq!(n, "audit-web-1-000012.jsonl");
        assert_eq!(
            parse_log_file_name(Path::new(&n)),
            Some(("web-1".to_string(), 12))
        );
        assert_eq!(parse_log_file_name(Path::new("audit-x.jsonl")), None);
        assert_eq!(parse_log_file_name(Path::new("other-x-000001.jsonl")), None);
        assert_eq!(
            parse_checkpoint_file_name(Path::new("/d/web-1.checkpoints")),
            Some("web-1".to_string())
        );
    }
}
