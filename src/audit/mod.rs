//! The tamper-evident, write-ahead audit trail (issue #5).
//!
//! Input: [`AuditEvent`]s from the pipeline (names, pointers, ids, enums,
//! numbers — never values), [`AuditSettings`] from config and [`AuditKeys`]
//! resolved from `[audit_keys]` ([`AuditKeys::compile`]).
//! Output: hash-chained JSON-lines files `<dir>/audit-<instance>-<NNNNNN>.jsonl`
//! plus signed checkpoints in `<dir>/<instance>.checkpoints`; [`verify`] and
//! [`query`] for the `cubegate audit` CLI.
//! Failures: [`AuditError::Unavailable`] when a record cannot be made durable
//! (the pipeline answers 503 `audit_unavailable` and does not forward);
//! [`VerifyFailure`] names the first broken record.
//!
//! Pipeline contract: for a PII-changing operation, `append` an intent and
//! await it *before* forwarding; always append the outcome afterwards. PII
//! reads and refusals get one record (`outcome` / `event`).

mod chain;
mod disk;
mod query;
mod record;
mod verify;
mod writer;

use std::path::{Path, PathBuf};

pub use chain::{Checkpoint, genesis, line_hash};
pub use disk::{FreeSpace, disk_free};
pub use query::{QueryFilter, QueryRow, query, render_json_lines, render_table};
pub use record::{
    AuditEvent, Decision, Digest, Environment, Fingerprint, Kind, Name, Pointer, Record,
    RecordError, RecordRef, RequestId, ResourceId, SCHEMA_VERSION, field_digest, field_hmac,
    fingerprint, key_fingerprint,
};
pub use verify::{FailureKind, InstanceReport, VerifyFailure, VerifyReport, verify};
pub use writer::{AuditLog, AuditStats, FieldValues, RecordSink};

pub use crate::config::AuditSettings;
use crate::config::{AuditKeyRefs, ConfigError, Origin};

impl AuditSettings {
    /// The effective instance id: the configured one, else the host name
    /// reduced to `[A-Za-z0-9_.:-]`, else `cubegate`.
    pub fn instance_id(&self) -> Result<Name, AuditError> {
        if let Some(i) = &self.instance {
            return Name::new(i.clone()).map_err(AuditError::Invalid);
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_default();
        let cleaned: String = host
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
            .take(64)
            .collect();
        Name::new(cleaned)
            .or_else(|_| Name::new("cubegate"))
            .map_err(AuditError::Invalid)
    }

    /// Validated JSON pointers of `hmac_fields`.
    pub fn hmac_pointers(&self) -> Result<Vec<Pointer>, AuditError> {
        self.hmac_fields
            .iter()
            .map(|p| Pointer::new(p.clone()).map_err(AuditError::Invalid))
            .collect()
    }
}

/// Secrets of the audit trail, resolved by [`AuditKeys::compile`] from `env:`/`file:`
/// references. Debug is redacted.
#[derive(Clone, Default)]
pub struct AuditKeys {
    /// Signs checkpoints.
    pub checkpoint_key: Vec<u8>,
    /// Keys the upstream-key fingerprint.
    pub fingerprint_key: Vec<u8>,
    /// Keys `field_hmacs`.
    pub field_hmac_key: Vec<u8>,
}

impl AuditKeys {
    /// Checks `[audit]` (instance id, `hmac_fields`) and resolves the keys
    /// `[audit_keys]` references. None while the trail is off.
    pub fn compile(
        audit: &AuditSettings,
        refs: &AuditKeyRefs,
        o: &Origin<'_>,
    ) -> Result<Option<AuditKeys>, ConfigError> {
        if !audit.enabled {
            return Ok(None);
        }
        audit
            .instance_id()
            .map_err(|e| o.err("audit.instance", e.to_string()))?;
        audit
            .hmac_pointers()
            .map_err(|e| o.err("audit.hmac_fields", e.to_string()))?;
        let range = crate::config::RECORD_BYTES_RANGE;
        if !range.contains(&audit.max_record_bytes) {
            return Err(o.err(
                "audit.max_record_bytes",
                format!("must be between {} and {}", range.start(), range.end()),
            ));
        }
        if audit.max_fields == Some(0) {
            return Err(o.err("audit.max_fields", "must be at least 1"));
        }
        let get = |name: &str, r: &Option<String>, required: bool| match r {
            Some(r) => o
                .resolve(format!("audit_keys.{name}"), r)
                .map(|s| s.expose().as_bytes().to_vec()),
            None if required => Err(o.err(
                format!("audit_keys.{name}"),
                "required while audit.enabled (a reference env:NAME or file:PATH)",
            )),
            None => Ok(Vec::new()),
        };
        Ok(Some(AuditKeys {
            checkpoint_key: get("checkpoint_key", &refs.checkpoint_key, true)?,
            fingerprint_key: get("fingerprint_key", &refs.fingerprint_key, true)?,
            field_hmac_key: get(
                "field_hmac_key",
                &refs.field_hmac_key,
                !audit.hmac_fields.is_empty(),
            )?,
        }))
    }
}

impl std::fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKeys { <redacted> }")
    }
}

/// Audit errors. Messages carry paths and field kinds, never values.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The record could not be made durable (disk full, read-only, I/O
    /// error). Maps to 503 `audit_unavailable`.
    #[error("audit log unavailable")]
    Unavailable,
    /// The writer thread is gone.
    #[error("audit writer stopped")]
    Closed,
    /// Opening or reading audit files failed.
    #[error("audit I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An audit file holds a line that is not a valid record.
    #[error("corrupt audit file {path} line {line}: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong (no values).
        detail: String,
    },
    /// A setting or event value failed validation.
    #[error(transparent)]
    Invalid(#[from] RecordError),
    /// Settings that cannot work (e.g. an empty checkpoint key).
    #[error("invalid audit settings: {0}")]
    Settings(&'static str),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Readiness probe: whether a file can be created, written, fsynced and
/// removed in `dir` right now.
pub fn probe_writable(dir: &Path) -> bool {
    use std::io::Write;
    // One name per probe: `/readyz` and a `/metrics` scrape probe at the same
    // time, and a shared name let one remove the other's file (a false 503).
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = dir.join(format!(".probe-{}-{n}", std::process::id()));
    let ok = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&p)
        .and_then(|mut f| {
            f.write_all(b"probe\n")?;
            f.sync_data()
        })
        .is_ok();
    let removed = std::fs::remove_file(&p).is_ok();
    ok && removed
}

/// Audit files found under `paths`: directories are expanded (not
/// recursively), files are taken as given. Returns log files and checkpoint
/// files; anything else passed explicitly is an error.
pub(crate) fn expand(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<PathBuf>), AuditError> {
    let mut logs = Vec::new();
    let mut cps = Vec::new();
    for p in paths {
        if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(io_err(p))?;
            for entry in rd {
                let e = entry.map_err(io_err(p))?.path();
                if chain::parse_log_file_name(&e).is_some() {
                    logs.push(e);
                } else if chain::parse_checkpoint_file_name(&e).is_some() {
                    cps.push(e);
                }
            }
        } else if chain::parse_log_file_name(p).is_some() {
            // Checkpoints live beside the logs; pick them up so verifying a
            // single file still checks truncation.
            if let Some((inst, _)) = chain::parse_log_file_name(p) {
                let cp = p.with_file_name(chain::checkpoint_file_name(&inst));
                if cp.is_file() {
                    cps.push(cp);
                }
            }
            logs.push(p.clone());
        } else if chain::parse_checkpoint_file_name(p).is_some() {
            cps.push(p.clone());
        } else if !p.exists() {
            return Err(AuditError::Io {
                path: p.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        } else {
            return Err(AuditError::Corrupt {
                path: p.clone(),
                line: 0,
                detail: "not an audit file (expected audit-<instance>-<NNNNNN>.jsonl)".into(),
            });
        }
    }
    let canon = |v: &mut Vec<PathBuf>| {
        for p in v.iter_mut() {
            if let Ok(c) = p.canonicalize() {
                *p = c;
            }
        }
        v.sort();
        v.dedup();
    };
    canon(&mut logs);
    canon(&mut cps);
    Ok((logs, cps))
}

/// Test support: make writes really fail for root. `chmod` does not stop
/// root, so this sets the ext4 immutable attribute (`chattr +i`) on a
/// directory and every file in it, and clears it again on drop (also when a
/// test panics). Works on ext2/3/4, xfs, btrfs; errors elsewhere.
#[doc(hidden)]
pub mod testing {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// Immutable flag on a set of paths, cleared on drop.
    #[derive(Debug)]
    pub struct Frozen {
        paths: Vec<PathBuf>,
    }

    fn chattr(flag: &str, p: &Path) -> std::io::Result<()> {
        let st = Command::new("chattr").arg(flag).arg(p).status()?;
        if st.success() {
            Ok(())
        } else {
            Err(std::io::Error::other("chattr failed"))
        }
    }

    /// Freezes `dir` and every regular file in it: creating, writing,
    /// truncating and removing all fail with EPERM, for root too.
    pub fn freeze_dir(dir: &Path) -> std::io::Result<Frozen> {
        let mut frozen = Frozen { paths: Vec::new() };
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_file() {
                chattr("+i", &p)?;
                frozen.paths.push(p);
            }
        }
        chattr("+i", dir)?;
        frozen.paths.push(dir.to_path_buf());
        Ok(frozen)
    }

    /// Freezes one file: writing or truncating it fails with EPERM.
    pub fn freeze_file(path: &Path) -> std::io::Result<Frozen> {
        chattr("+i", path)?;
        Ok(Frozen {
            paths: vec![path.to_path_buf()],
        })
    }

    impl Frozen {
        /// Clears the flags now.
        pub fn thaw(mut self) -> std::io::Result<()> {
            self.clear()
        }

        fn clear(&mut self) -> std::io::Result<()> {
            let mut res = Ok(());
            for p in self.paths.drain(..).rev() {
                if let Err(e) = chattr("-i", &p) {
                    res = Err(e);
                }
            }
            res
        }
    }

    impl Drop for Frozen {
        fn drop(&mut self) {
            let _ = self.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_defaults_and_unknown_fields() {
        let s: AuditSettings = serde_json::from_str("{}").unwrap();
        assert!(s.enabled && s.fsync && s.rotate_daily && !s.record_all && !s.writer_sched_batch);
        assert_eq!(s.dir, PathBuf::from("audit"));
        assert_eq!(s.checkpoint_every_records, 1000);
        assert_eq!(s.checkpoint_every_secs, 60);
        assert_eq!(s.rotate_bytes, 64 * 1024 * 1024);
        assert!(serde_json::from_str::<AuditSettings>(r#"{"bogus":1}"#).is_err());
        assert!(!s.instance_id().unwrap().as_str().is_empty());
    }

    #[test]
    fn keys_debug_is_redacted() {
        let k = AuditKeys {
            checkpoint_key: b"sekrit-cp".to_vec(),
            fingerprint_key: b"sekrit-fp".to_vec(),
            field_hmac_key: b"sekrit-f".to_vec(),
        };
        let d = format!("{k:?}");
        assert!(!d.contains("sekrit"));
    }

    #[test]
    fn probe_detects_frozen_dir() {
        let d = tempfile::tempdir().unwrap();
        assert!(probe_writable(d.path()));
        let f = testing::freeze_dir(d.path()).unwrap();
        assert!(!probe_writable(d.path()));
        f.thaw().unwrap();
        assert!(probe_writable(d.path()));
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;

    pub const CP_KEY: &[u8] = b"checkpoint-key-for-tests";

    pub fn settings(dir: &Path) -> AuditSettings {
        AuditSettings {
            dir: dir.to_path_buf(),
            instance: Some("t1".into()),
            ..AuditSettings::default()
        }
    }

    pub fn keys() -> AuditKeys {
        AuditKeys {
            checkpoint_key: CP_KEY.to_vec(),
            fingerprint_key: b"fp-key".to_vec(),
            field_hmac_key: b"field-key".to_vec(),
        }
    }

    /// An update of `client` by `caller`, as the pipeline would build it.
    pub fn event(kind: Kind, req: &str, caller: &str, client: &str) -> AuditEvent {
        let mut ev = AuditEvent::new(kind, RequestId::new(req).unwrap(), Decision::Allowed);
        ev.caller = Some(Name::new(caller).unwrap());
        ev.tenant = Some(Name::new("acme").unwrap());
        ev.environment = Some(Environment::Test);
        ev.operation = Some(Name::new("clients.update").unwrap());
        ev.resource_ids
            .insert(Name::new("id").unwrap(), ResourceId::new(client).unwrap());
        ev.fields = vec![
            Pointer::new("/email").unwrap(),
            Pointer::new("/type").unwrap(),
        ];
        ev.stripped = vec![Pointer::new("/type").unwrap()];
        ev
    }

    /// Writes `n` records (intent/outcome pairs) and flushes; returns the log.
    pub async fn write_n(s: &AuditSettings, n: u64) -> AuditLog {
        let log = AuditLog::open(s, keys()).unwrap();
        for i in 0..n {
            let kind = if i % 2 == 0 {
                Kind::Intent
            } else {
                Kind::Outcome
            };
            let mut ev = event(
                kind,
                &format!("req-{}", i / 2),
                "svc-a",
                "5f00000000000000000000aa",
            );
            if kind == Kind::Outcome {
                ev.status = Some(200);
                ev.latency_ms = Some(3);
            }
            log.append(&ev).await.unwrap();
        }
        log.flush().await.unwrap();
        log
    }

    pub fn log_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        v.sort();
        v
    }
}
