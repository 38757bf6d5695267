//! `cubegate audit verify`: proves a set of audit files is complete and
//! unchanged.
//!
//! Input: files and/or directories (expanded one level), an optional
//! checkpoint key.
//! Output: a [`VerifyReport`] with counts per instance, or the
//! [`VerifyFailure`] of the first broken record: file, line, seq and what is
//! wrong.
//! Failures and how each tamper shows:
//! - a record deleted → `Deleted` (seq gap) at the record after the hole;
//! - two records swapped / moved → `Reordered` at the first misplaced one;
//! - a record changed → `Changed` at that record (its hash no longer matches
//!   the next record's `prev`, or a checkpoint's head hash);
//! - the tail cut → `Truncated` (a checkpoint names a seq past the end);
//! - a middle file removed → `FileMissing`;
//! - unparsable / torn lines → `Malformed`; forged or edited checkpoints →
//!   `BadCheckpoint` (with a key).
//!
//! Limits: a change to records after the last checkpoint that also rewrites
//! every later link, or cutting only records after the last checkpoint, is
//! not detectable from the files alone; `unanchored` in the report says how
//! many records that is. The chain must start at seq 1 (the first file), so
//! archive whole chains.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::chain::{self, Checkpoint};
use super::record::{Record, SCHEMA_VERSION};
use super::{AuditError, expand};

/// What kind of break was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Not a valid record line (bad JSON, torn write, wrong version).
    Malformed,
    /// A seq is missing: record(s) deleted.
    Deleted,
    /// A seq appears out of order: records swapped, moved or duplicated.
    Reordered,
    /// A record's bytes differ from what the chain or a checkpoint commits to.
    Changed,
    /// The log ends before a checkpointed seq.
    Truncated,
    /// A file of the rotation sequence is absent.
    FileMissing,
    /// A record of another instance inside this instance's files.
    WrongInstance,
    /// A checkpoint is malformed, has a bad MAC, or is missing.
    BadCheckpoint,
    /// A file could not be read.
    Io,
}

impl FailureKind {
    fn as_str(self) -> &'static str {
        match self {
            FailureKind::Malformed => "malformed",
            FailureKind::Deleted => "deleted",
            FailureKind::Reordered => "reordered",
            FailureKind::Changed => "changed",
            FailureKind::Truncated => "truncated",
            FailureKind::FileMissing => "file missing",
            FailureKind::WrongInstance => "wrong instance",
            FailureKind::BadCheckpoint => "bad checkpoint",
            FailureKind::Io => "io error",
        }
    }
}

/// The first broken record. Details never contain record values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    /// The file holding (or that should hold) the broken record.
    pub file: PathBuf,
    /// 1-based line number, when it points at a line.
    pub line: Option<usize>,
    /// The seq of the broken record, when known.
    pub seq: Option<u64>,
    /// The instance whose chain is broken.
    pub instance: Option<String>,
    /// The category.
    pub kind: FailureKind,
    /// Human explanation.
    pub detail: String,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(s) = self.seq {
            write!(f, " seq {s}")?;
        }
        write!(f, ": {}: {}", self.kind.as_str(), self.detail)
    }
}

impl std::error::Error for VerifyFailure {}

/// What was verified for one instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceReport {
    /// Log files in the chain.
    pub files: usize,
    /// Records checked.
    pub records: u64,
    /// Last seq.
    pub last_seq: u64,
    /// Checkpoints checked.
    pub checkpoints: usize,
    /// Whether checkpoint MACs were checked (a key was given).
    pub macs_verified: bool,
    /// Records after the last checkpoint (not protected against truncation).
    pub unanchored: u64,
}

/// A verified set of chains.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Per instance id.
    pub instances: BTreeMap<String, InstanceReport>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (inst, r) in &self.instances {
            writeln!(
                f,
                "{inst}: OK — {} records in {} file(s), last seq {}, {} checkpoint(s){}, {} record(s) after the last checkpoint",
                r.records,
                r.files,
                r.last_seq,
                r.checkpoints,
                if r.macs_verified {
                    " (MACs verified)"
                } else {
                    " (MACs NOT verified: no key)"
                },
                r.unanchored
            )?;
        }
        Ok(())
    }
}

fn fail(
    file: &Path,
    line: Option<usize>,
    seq: Option<u64>,
    instance: &str,
    kind: FailureKind,
    detail: impl Into<String>,
) -> VerifyFailure {
    VerifyFailure {
        file: file.to_path_buf(),
        line,
        seq,
        instance: Some(instance.to_string()),
        kind,
        detail: detail.into(),
    }
}

/// Verifies every chain found under `paths` (see the module docs).
pub fn verify(
    paths: &[PathBuf],
    checkpoint_key: Option<&[u8]>,
) -> Result<VerifyReport, VerifyFailure> {
    let (logs, cps) = expand(paths).map_err(|e| {
        let file = match &e {
            AuditError::Io { path, .. } | AuditError::Corrupt { path, .. } => path.clone(),
            _ => PathBuf::new(),
        };
        VerifyFailure {
            file,
            line: None,
            seq: None,
            instance: None,
            kind: FailureKind::Io,
            detail: e.to_string(),
        }
    })?;
    let mut by_instance: BTreeMap<String, BTreeMap<u64, PathBuf>> = BTreeMap::new();
    for p in logs {
        if let Some((inst, n)) = chain::parse_log_file_name(&p) {
            by_instance.entry(inst).or_default().insert(n, p);
        }
    }
    let mut cp_by_instance: BTreeMap<String, PathBuf> = BTreeMap::new();
    for p in cps {
        if let Some(inst) = chain::parse_checkpoint_file_name(&p) {
            cp_by_instance.insert(inst, p);
        }
    }
    if by_instance.is_empty() {
        return Err(VerifyFailure {
            file: paths.first().cloned().unwrap_or_default(),
            line: None,
            seq: None,
            instance: None,
            kind: FailureKind::FileMissing,
            detail: "no audit files found".into(),
        });
    }
    let mut report = VerifyReport::default();
    for (inst, files) in &by_instance {
        let r = verify_instance(inst, files, cp_by_instance.get(inst), checkpoint_key)?;
        report.instances.insert(inst.clone(), r);
    }
    Ok(report)
}

fn load_checkpoints(
    inst: &str,
    path: &Path,
    key: Option<&[u8]>,
) -> Result<Vec<(usize, Checkpoint)>, VerifyFailure> {
    let data = std::fs::read(path)
        .map_err(|e| fail(path, None, None, inst, FailureKind::Io, e.to_string()))?;
    let mut out = Vec::new();
    for (i, line) in split_lines(&data).enumerate() {
        let ln = i + 1;
        let line = line.map_err(|()| {
            fail(
                path,
                Some(ln),
                None,
                inst,
                FailureKind::BadCheckpoint,
                "torn checkpoint line",
            )
        })?;
        let cp: Checkpoint = serde_json::from_slice(line).map_err(|_| {
            fail(
                path,
                Some(ln),
                None,
                inst,
                FailureKind::BadCheckpoint,
                "not a valid checkpoint",
            )
        })?;
        if cp.instance != inst {
            return Err(fail(
                path,
                Some(ln),
                Some(cp.seq),
                inst,
                FailureKind::BadCheckpoint,
                "checkpoint of another instance",
            ));
        }
        if let Some(k) = key
            && !cp.mac_ok(k)
        {
            return Err(fail(
                path,
                Some(ln),
                Some(cp.seq),
                inst,
                FailureKind::BadCheckpoint,
                "checkpoint MAC is invalid (forged or edited checkpoint, or wrong key)",
            ));
        }
        out.push((ln, cp));
    }
    Ok(out)
}

/// Lines of a file; `Err(())` for a final line without its newline (torn).
fn split_lines(data: &[u8]) -> impl Iterator<Item = Result<&[u8], ()>> {
    let complete = data.last() == Some(&b'\n');
    let mut parts: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    // `split` yields an empty piece after the final newline.
    if complete || data.is_empty() {
        parts.pop();
    }
    let n = parts.len();
    parts.into_iter().enumerate().map(move |(i, l)| {
        if i + 1 == n && !complete {
            Err(())
        } else {
            Ok(l)
        }
    })
}

struct Loc {
    file: PathBuf,
    line: usize,
    seq: u64,
}

/// Verifies one instance's chain: its file sequence, every record in file
/// order against the chain and the checkpoints, then the end of the log.
fn verify_instance(
    inst: &str,
    files: &BTreeMap<u64, PathBuf>,
    cp_path: Option<&PathBuf>,
    key: Option<&[u8]>,
) -> Result<InstanceReport, VerifyFailure> {
    check_file_sequence(inst, files)?;
    let checkpoints = match cp_path {
        Some(p) => load_checkpoints(inst, p, key)?,
        None => Vec::new(),
    };
    let report = InstanceReport {
        files: files.len(),
        macs_verified: key.is_some(),
        checkpoints: checkpoints.len(),
        ..Default::default()
    };
    let mut walk = Walk::new(inst, &checkpoints, report);
    for p in files.values() {
        walk.file(p)?;
    }
    walk.seq_order()?;
    let last_cp = checkpoints.iter().map(|(_, c)| c.seq).max().unwrap_or(0);
    walk.end(last_cp, key.is_some() && cp_path.is_none())
}

/// File sequence: must start at 1 and have no holes.
fn check_file_sequence(inst: &str, files: &BTreeMap<u64, PathBuf>) -> Result<(), VerifyFailure> {
    let mut expected_no = 1u64;
    for (&n, p) in files {
        if n != expected_no {
            let missing = p.with_file_name(chain::log_file_name(inst, expected_no));
            return Err(fail(
                &missing,
                None,
                None,
                inst,
                FailureKind::FileMissing,
                format!(
                    "file(s) {:06}..{:06} of the rotation are missing before {}",
                    expected_no,
                    n - 1,
                    p.file_name()
                        .map(|f| f.to_string_lossy())
                        .unwrap_or_default()
                ),
            ));
        }
        expected_no = n + 1;
    }
    Ok(())
}

/// The walk over one instance's records in file order: where the chain
/// stands, and the first seq-order break, classified once every later seq
/// has been seen.
struct Walk<'a> {
    inst: &'a str,
    cp_at: BTreeMap<u64, Vec<&'a Checkpoint>>,
    report: InstanceReport,
    expected_seq: u64,
    expected_prev: String,
    prev_loc: Option<Loc>,
    last_file: PathBuf,
    last_line: usize,
    seq_break: Option<(VerifyFailure, u64)>,
    seen: Vec<u64>,
}

impl<'a> Walk<'a> {
    fn new(inst: &'a str, checkpoints: &'a [(usize, Checkpoint)], report: InstanceReport) -> Self {
        let mut cp_at: BTreeMap<u64, Vec<&Checkpoint>> = BTreeMap::new();
        for (_, cp) in checkpoints {
            cp_at.entry(cp.seq).or_default().push(cp);
        }
        Walk {
            inst,
            cp_at,
            report,
            expected_seq: 1,
            expected_prev: chain::genesis(inst),
            prev_loc: None,
            last_file: PathBuf::new(),
            last_line: 0,
            seq_break: None,
            seen: Vec::new(),
        }
    }

    /// Every line of log file `p`.
    fn file(&mut self, p: &Path) -> Result<(), VerifyFailure> {
        let data = std::fs::read(p)
            .map_err(|e| fail(p, None, None, self.inst, FailureKind::Io, e.to_string()))?;
        self.last_file = p.to_path_buf();
        self.last_line = 0;
        for (i, line) in split_lines(&data).enumerate() {
            self.last_line = i + 1;
            self.line(p, i + 1, line)?;
        }
        Ok(())
    }

    /// One line: parsed, its seq noted; after a seq-order break only the
    /// seqs are collected (a torn or malformed line is then passed over).
    fn line(&mut self, p: &Path, ln: usize, line: Result<&[u8], ()>) -> Result<(), VerifyFailure> {
        let inst = self.inst;
        let bad = |kind, detail: &str| fail(p, Some(ln), None, inst, kind, detail);
        let Ok(line) = line else {
            if self.seq_break.is_some() {
                return Ok(());
            }
            return Err(bad(
                FailureKind::Malformed,
                "torn line: incomplete write at end of file",
            ));
        };
        let rec: Record = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => {
                if self.seq_break.is_some() {
                    return Ok(());
                }
                return Err(bad(
                    FailureKind::Malformed,
                    &format!(
                        "not a valid v1 record ({:?} error at column {})",
                        e.classify(),
                        e.column()
                    ),
                ));
            }
        };
        self.seen.push(rec.seq);
        if self.seq_break.is_some() {
            return Ok(());
        }
        self.link(p, ln, line, &rec)
    }

    /// Checks a record against the chain so far and the checkpoints at its
    /// seq, and moves the chain on by it.
    fn link(
        &mut self,
        p: &Path,
        ln: usize,
        line: &[u8],
        rec: &Record,
    ) -> Result<(), VerifyFailure> {
        let inst = self.inst;
        let at = |kind, detail: String| fail(p, Some(ln), Some(rec.seq), inst, kind, detail);
        if rec.v != SCHEMA_VERSION {
            return Err(at(
                FailureKind::Malformed,
                format!("unsupported schema version {}", rec.v),
            ));
        }
        if rec.instance.as_str() != inst {
            return Err(at(
                FailureKind::WrongInstance,
                "record of another instance in this chain".into(),
            ));
        }
        if rec.seq != self.expected_seq {
            self.seq_break = Some((
                at(
                    FailureKind::Deleted,
                    format!("expected seq {}, found {}", self.expected_seq, rec.seq),
                ),
                self.expected_seq,
            ));
            return Ok(());
        }
        if rec.prev != self.expected_prev {
            return Err(match &self.prev_loc {
                Some(l) => fail(
                    &l.file,
                    Some(l.line),
                    Some(l.seq),
                    inst,
                    FailureKind::Changed,
                    format!("record does not hash to the `prev` stored in seq {} (record changed)", rec.seq),
                ),
                None => at(
                    FailureKind::Changed,
                    "first record does not link to this instance's genesis (changed, or the chain does not start here)".into(),
                ),
            });
        }
        let hash = chain::line_hash(line);
        if let Some(cps) = self.cp_at.get(&rec.seq)
            && cps.iter().any(|c| c.head_hash != hash)
        {
            return Err(at(
                FailureKind::Changed,
                "record does not match the head hash of the checkpoint at this seq (record changed)".into(),
            ));
        }
        self.report.records += 1;
        self.report.last_seq = rec.seq;
        self.expected_seq += 1;
        self.expected_prev = hash;
        self.prev_loc = Some(Loc {
            file: p.to_path_buf(),
            line: ln,
            seq: rec.seq,
        });
        Ok(())
    }

    /// The first seq-order break, if any: a deletion, or a reorder when the
    /// missing seq turned up later.
    fn seq_order(&mut self) -> Result<(), VerifyFailure> {
        let Some((mut f, missing)) = self.seq_break.take() else {
            return Ok(());
        };
        if self.seen.contains(&missing) {
            f.kind = FailureKind::Reordered;
            f.detail = format!(
                "{}: seq {missing} appears later (records swapped or moved)",
                f.detail
            );
        } else {
            f.detail = format!("{}: seq {missing} is missing (record deleted)", f.detail);
        }
        Err(f)
    }

    /// The end of the log against the last checkpoint (`last_cp`), and a
    /// checkpoint file that a key requires (`cp_file_missing`).
    fn end(self, last_cp: u64, cp_file_missing: bool) -> Result<InstanceReport, VerifyFailure> {
        let mut report = self.report;
        if last_cp > report.last_seq {
            return Err(fail(
                &self.last_file,
                Some(self.last_line + 1),
                Some(report.last_seq + 1),
                self.inst,
                FailureKind::Truncated,
                format!(
                    "log ends at seq {} but a checkpoint covers seq {last_cp}: records {}..{last_cp} were cut",
                    report.last_seq,
                    report.last_seq + 1
                ),
            ));
        }
        if cp_file_missing && report.records > 0 {
            return Err(fail(
                &self
                    .last_file
                    .with_file_name(chain::checkpoint_file_name(self.inst)),
                None,
                None,
                self.inst,
                FailureKind::BadCheckpoint,
                "checkpoint file missing (it must sit beside the log files)",
            ));
        }
        report.unanchored = report.last_seq - last_cp;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::super::AuditSettings;
    use super::super::test_util::*;
    use super::*;

    /// A 3+-file chain of 30 records with a checkpoint at the end.
    async fn chain(dir: &Path) -> Vec<PathBuf> {
        let s = AuditSettings {
            rotate_bytes: 3000,
            ..settings(dir)
        };
        drop(write_n(&s, 30).await);
        let files = log_files(dir);
        assert!(files.len() >= 3, "{files:?}");
        files
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    fn write_lines(p: &Path, l: &[String]) {
        let mut s = l.join("\n");
        if !l.is_empty() {
            s.push('\n');
        }
        std::fs::write(p, s).unwrap();
    }

    fn seq_of(line: &str) -> u64 {
        serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
            .as_u64()
            .unwrap()
    }

    fn run(dir: &Path) -> Result<VerifyReport, VerifyFailure> {
        verify(&[dir.to_path_buf()], Some(CP_KEY))
    }

    #[tokio::test]
    async fn untouched_multi_file_chain_passes() {
        let d = tempfile::tempdir().unwrap();
        let files = chain(d.path()).await;
        let r = run(d.path()).unwrap();
        let i = &r.instances["t1"];
        assert_eq!((i.records, i.last_seq, i.files), (30, 30, files.len()));
        assert!(i.checkpoints >= 1 && i.macs_verified);
        assert!(r.to_string().contains("t1: OK"));
        // Files listed one by one work too (checkpoints found beside them).
        assert_eq!(verify(&files, Some(CP_KEY)).unwrap(), r);
        // Without the key the chain is still checked, MACs are not.
        assert!(!verify(&files, None).unwrap().instances["t1"].macs_verified);
    }

    #[tokio::test]
    async fn deleted_record_is_named() {
        let d = tempfile::tempdir().unwrap();
        let files = chain(d.path()).await;
        let mut l = lines(&files[0]);
        let gone = l.remove(2);
        write_lines(&files[0], &l);
        let f = run(d.path()).unwrap_err();
        assert_eq!(f.kind, FailureKind::Deleted, "{f}");
        assert_eq!(f.file, files[0].canonicalize().unwrap());
        assert_eq!(f.line, Some(3));
        assert_eq!(f.seq, Some(seq_of(&gone) + 1));
        assert!(f.to_string().contains("deleted"));
    }

    #[tokio::test]
    async fn changed_field_is_named() {
        let d = tempfile::tempdir().unwrap();
        let files = chain(d.path()).await;
        let mut l = lines(&files[1]);
        let target = seq_of(&l[1]);
        l[1] = l[1].replace("\"svc-a\"", "\"svc-b\"");
        write_lines(&files[1], &l);
        let f = run(d.path()).unwrap_err();
        assert_eq!(f.kind, FailureKind::Changed, "{f}");
        assert_eq!(f.seq, Some(target));
        assert_eq!(f.line, Some(2));
        assert_eq!(f.file, files[1].canonicalize().unwrap());
    }

    #[tokio::test]
    async fn changed_last_record_caught_by_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let files = chain(d.path()).await;
        let last = files.last().unwrap();
        let mut l = lines(last);
        let n = l.len();
        l[n - 1] = l[n - 1].replace("\"status\":200", "\"status\":201");
        write_lines(last, &l);
        let f = run(d.path()).unwrap_err();
        assert_eq!(f.kind, FailureKind::Changed, "{f}");
        assert_eq!(f.seq, Some(30));
    }

    #[tokio::test]
    async fn swapped_records_are_named() {
        let d = tempfile::tempdir().unwrap();
        let files = chain(d.path()).await;
        let mut l = lines(&files[0]);
        let first = seq_of(&l[3]);
        l.swap(3, 4);
        write_lines(&files[0], &l);
        let f = run(d.path()).unwrap_err();
        assert_eq!(f.kind, FailureKind::Reordered, "{f}");
        assert_eq!(f.line, Some(4));
        assert_eq!(f.seq, Some(first + 1));
    }

    #[tokio::test]
    async fn truncated_tail_is_detected() {
        let d = tempfile::tempdir().unwrap();
        let files = chain(d.path()).await;
        // Cut the last three records.
        let last = files.last().unwrap();
        let mut l = lines(last);
        l.truncate(l.len() - 3);
        write_lines(last, &l);
        let f = run(d.path()).unwrap_err();
        assert_eq!(f.kind, FailureKind::Truncated, "{f}");
        assert_eq!(f.seq, Some(28));
        // Removing the whole last file is truncation too.
        std::fs::remove_file(last).unwrap();
        assert_eq!(run(d.path()).unwrap_err().kind, FailureKind::Truncated);
    }

    #[tokio::test]
    async fn missing_middle_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        let files = chain(d.path()).await;
        std::fs::remove_file(&files[1]).unwrap();
        let f = run(d.path()).unwrap_err();
        assert_eq!(f.kind, FailureKind::FileMissing, "{f}");
        assert!(f.file.ends_with("audit-t1-000002.jsonl"), "{f}");
        // And the first file of the chain.
        std::fs::remove_file(&files[0]).unwrap();
        let f = run(d.path()).unwrap_err();
        assert_eq!(f.kind, FailureKind::FileMissing);
        assert!(f.file.ends_with("audit-t1-000001.jsonl"), "{f}");
    }

    #[tokio::test]
    async fn forged_checkpoints_and_wrong_key_fail() {
        let d = tempfile::tempdir().unwrap();
        chain(d.path()).await;
        assert_eq!(
            verify(&[d.path().to_path_buf()], Some(b"wrong"))
                .unwrap_err()
                .kind,
            FailureKind::BadCheckpoint
        );
        // An attacker who truncates and re-signs without the key.
        let cp = d.path().join("t1.checkpoints");
        let forged = Checkpoint::sign(b"guess", "t1", 5, "00", "2026-01-01T00:00:00.000Z");
        std::fs::write(
            &cp,
            format!("{}\n", serde_json::to_string(&forged).unwrap()),
        )
        .unwrap();
        assert_eq!(run(d.path()).unwrap_err().kind, FailureKind::BadCheckpoint);
        // Deleting the checkpoint file is noticed when a key is given.
        std::fs::remove_file(&cp).unwrap();
        assert_eq!(run(d.path()).unwrap_err().kind, FailureKind::BadCheckpoint);
    }

    #[tokio::test]
    async fn malformed_and_torn_lines_fail() {
        let d = tempfile::tempdir().unwrap();
        let files = chain(d.path()).await;
        let mut l = lines(&files[0]);
        l[0] = "{not json".into();
        write_lines(&files[0], &l);
        let f = run(d.path()).unwrap_err();
        assert_eq!((f.kind, f.line), (FailureKind::Malformed, Some(1)));
    }

    #[test]
    fn nothing_to_verify_fails() {
        let d = tempfile::tempdir().unwrap();
        assert!(run(d.path()).is_err());
        let other = d.path().join("notes.txt");
        std::fs::write(&other, "x").unwrap();
        assert_eq!(verify(&[other], None).unwrap_err().kind, FailureKind::Io);
    }

    #[tokio::test]
    async fn instances_are_verified_separately() {
        let d = tempfile::tempdir().unwrap();
        chain(d.path()).await;
        let s2 = AuditSettings {
            instance: Some("web-2".into()),
            ..settings(d.path())
        };
        drop(write_n(&s2, 4).await);
        let r = run(d.path()).unwrap();
        assert_eq!(r.instances["t1"].records, 30);
        assert_eq!(r.instances["web-2"].records, 4);
    }
}
