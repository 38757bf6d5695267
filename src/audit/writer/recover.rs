//! Recovery at start-up: resuming this instance's chain from the files an
//! earlier run left, and the backward readers that find its last record.
//!
//! Contract: writing continues in the newest file; the chain head is the
//! last complete line of the newest non-empty file; a torn last line (a
//! crash mid-write) is cut off; a last line that is not a record of this
//! instance fails the start. With `fsync = false` the records after the
//! last checkpoint are written again and synced before any checkpoint can
//! anchor them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::super::chain::{self, Checkpoint};
use super::super::record::Record;
use super::super::{AuditError, AuditSettings, io_err};
use super::Counters;
use super::checkpoint::{CP_RETRY, CpFile};
use super::file::{Writer, day_of};
use super::sync::Syncer;

impl Writer {
    /// Opens the writer on `s.dir`, resuming the chain (see the module doc).
    pub(super) fn resume(
        s: &AuditSettings,
        instance: &str,
        cp_key: Vec<u8>,
        sync: Arc<dyn Syncer>,
        counters: Arc<Counters>,
        healthy: Arc<AtomicBool>,
    ) -> Result<Writer, AuditError> {
        std::fs::create_dir_all(&s.dir).map_err(io_err(&s.dir))?;
        let numbers = log_file_numbers(&s.dir, instance)?;
        let mut w = Writer::new(s, instance, cp_key, sync, counters, healthy);
        w.file_no = numbers.last().copied().unwrap_or(1);
        w.find_head(&numbers)?;
        if w.file.is_none() {
            w.open_log_file()?;
        }
        w.resume_checkpoints()?;
        if !s.fsync {
            w.rewrite_unanchored_tail()?;
        }
        Ok(w)
    }

    /// A writer at the chain's genesis, with no file open yet.
    fn new(
        s: &AuditSettings,
        instance: &str,
        cp_key: Vec<u8>,
        sync: Arc<dyn Syncer>,
        counters: Arc<Counters>,
        healthy: Arc<AtomicBool>,
    ) -> Writer {
        Writer {
            dir: s.dir.clone(),
            instance: instance.to_string(),
            fsync: s.fsync,
            group_commit_wait: if s.fsync {
                Duration::from_micros(s.group_commit_wait_us)
            } else {
                Duration::ZERO
            },
            last_batch: 0,
            spare: Vec::new(),
            rotate_bytes: s.rotate_bytes,
            rotate_daily: s.rotate_daily,
            cp_every_records: s.checkpoint_every_records,
            cp_every: Duration::from_secs(s.checkpoint_every_secs.max(1)),
            cp_key: cp_key.into(),
            file: None,
            file_no: 1,
            file_len: 0,
            file_day: None,
            dirty: false,
            synced_len: 0,
            unsynced_tail: Vec::new(),
            resync: false,
            sync,
            seq: 0,
            head: chain::genesis(instance),
            cp: CpFile::default(),
            last_cp_seq: 0,
            cp_failed: false,
            cp_due: Instant::now() + Duration::from_secs(s.checkpoint_every_secs.max(1)),
            cp_retry: CP_RETRY,
            rotate_retry_at: None,
            counters,
            healthy,
        }
    }

    /// The newest file is where writing continues; the chain head is the
    /// last complete line of the newest non-empty file.
    fn find_head(&mut self, numbers: &[u64]) -> Result<(), AuditError> {
        for (idx, &n) in numbers.iter().enumerate().rev() {
            let newest = idx + 1 == numbers.len();
            let path = self.dir.join(chain::log_file_name(&self.instance, n));
            let (f, good_len, last) = open_cutting_torn_line(&path)?;
            if newest {
                self.file_len = good_len;
                self.synced_len = good_len;
            }
            let found = last.is_some();
            if let Some(line) = last {
                let rec = last_record(&path, &line, &self.instance)?;
                self.seq = rec.seq;
                self.head = chain::line_hash(&line);
                if newest {
                    self.file_day = humantime::parse_rfc3339(&rec.time).ok().map(day_of);
                }
            }
            if newest {
                self.file = Some(f);
            }
            if found {
                break;
            }
        }
        Ok(())
    }

    /// With `fsync = false`, at start-up: the newest file's records after the
    /// last checkpoint were written by an earlier run that may have met a
    /// failed sync (or died before its next one); a sync now could report
    /// success for pages the kernel never wrote. So they are read back and
    /// written again in place, a chunk at a time, and synced, before the
    /// first checkpoint can anchor them. What is read is what the file holds
    /// now; if the page cache lost them already, the chain shows the loss.
    /// A failure here fails the start, like the other start-up I/O.
    fn rewrite_unanchored_tail(&mut self) -> Result<(), AuditError> {
        const CHUNK: usize = 1024 * 1024;
        let path = self.log_path();
        let Some(f) = &self.file else {
            return Ok(());
        };
        let from = line_end_of_seq(f, self.last_cp_seq, self.file_len).map_err(io_err(&path))?;
        if from >= self.file_len {
            return Ok(());
        }
        let out = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut buf = vec![0u8; CHUNK];
        let mut at = from;
        while at < self.file_len {
            let n = usize::try_from(self.file_len - at).map_or(CHUNK, |left| left.min(CHUNK));
            let chunk = &mut buf[..n];
            f.read_exact_at(chunk, at).map_err(io_err(&path))?;
            out.write_all_at(chunk, at).map_err(io_err(&path))?;
            at += n as u64;
        }
        self.sync.sync_data(&out).map_err(io_err(&path))?;
        self.rewritten(self.file_len - from);
        Ok(())
    }

    fn resume_checkpoints(&mut self) -> Result<(), AuditError> {
        let path = self.cp_path();
        let f = super::file::open_appending(&path).map_err(io_err(&path))?;
        let (good_len, last) = last_line(&f).map_err(io_err(&path))?;
        if good_len < f.metadata().map_err(io_err(&path))?.len() {
            f.set_len(good_len).map_err(io_err(&path))?;
        }
        self.cp.len = good_len;
        if let Some(line) = last
            && let Ok(cp) = serde_json::from_slice::<Checkpoint>(&line)
        {
            if cp.seq > self.seq {
                tracing::error!(
                    checkpoint_seq = cp.seq,
                    log_seq = self.seq,
                    "audit: log ends before its last checkpoint; verify will report the loss"
                );
            }
            self.last_cp_seq = cp.seq.min(self.seq);
        }
        self.cp.file = Some(f);
        Ok(())
    }
}

/// The numbers of this instance's log files in `dir`, ascending.
fn log_file_numbers(dir: &Path, instance: &str) -> Result<Vec<u64>, AuditError> {
    let mut numbers: Vec<u64> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| chain::parse_log_file_name(&e.path()))
        .filter(|(i, _)| i == instance)
        .map(|(_, n)| n)
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// Opens a log file for appending, cuts a torn last line off (synced), and
/// returns it with its good length and last complete line.
fn open_cutting_torn_line(path: &PathBuf) -> Result<(File, u64, Option<Vec<u8>>), AuditError> {
    let f = OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    let (good_len, last) = last_line(&f).map_err(io_err(path))?;
    let len = f.metadata().map_err(io_err(path))?.len();
    if good_len < len {
        tracing::warn!(file = %path.display(), cut_bytes = len - good_len, "audit: cutting torn last line left by a crash");
        f.set_len(good_len).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
    }
    Ok((f, good_len, last))
}

/// The record on a log file's last line, which must be this instance's.
fn last_record(path: &Path, line: &[u8], instance: &str) -> Result<Record, AuditError> {
    let rec: Record = serde_json::from_slice(line).map_err(|e| AuditError::Corrupt {
        path: path.to_path_buf(),
        line: 0,
        detail: format!(
            "last line is not a valid record ({:?} error at column {})",
            e.classify(),
            e.column()
        ),
    })?;
    if rec.instance.as_str() != instance {
        return Err(AuditError::Corrupt {
            path: path.to_path_buf(),
            line: 0,
            detail: "last record belongs to another instance".into(),
        });
    }
    Ok(rec)
}

/// Where the line of record `seq` ends in `file` (the first `len` bytes):
/// reading backwards, the end of the last line whose `seq` is at most
/// `seq`; 0 if every line is later (or the file is empty). Reads only the
/// lines after it, so it stays cheap when the tail is short.
pub(super) fn line_end_of_seq(file: &File, seq: u64, len: u64) -> std::io::Result<u64> {
    #[derive(serde::Deserialize)]
    struct SeqOnly {
        seq: u64,
    }
    // `buf` holds the bytes from `pos` to `end`, the end of the line being
    // looked at; everything after `end` is later than `seq`.
    let (mut pos, mut end) = (len, len);
    let mut buf: Vec<u8> = Vec::new();
    while end > 0 {
        let rel_end = buf.len();
        let start = match buf[..rel_end.saturating_sub(1)]
            .iter()
            .rposition(|&b| b == b'\n')
        {
            Some(i) => i + 1,
            None if pos == 0 => 0,
            None => {
                pos = read_back(file, pos, &mut buf)?;
                continue;
            }
        };
        let line = &buf[start..rel_end];
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        // An unreadable line counts as later: the scan goes on before it.
        if serde_json::from_slice::<SeqOnly>(line).is_ok_and(|r| r.seq <= seq) {
            return Ok(end);
        }
        end = pos + start as u64;
        buf.truncate(start);
    }
    Ok(0)
}

/// The last complete line of `file` and the length up to and including its
/// newline. Bytes after the last newline are a torn write; the caller cuts
/// them off. Reads backwards so resuming a large file stays cheap.
fn last_line(file: &File) -> std::io::Result<(u64, Option<Vec<u8>>)> {
    let len = file.metadata()?.len();
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = len;
    let mut good_len: Option<u64> = None;
    loop {
        if let Some(gl) = good_len {
            // Need the newline before the last line (or the file start).
            let end = usize::try_from(gl - 1 - pos).unwrap_or(usize::MAX);
            if let Some(i) = buf[..end.min(buf.len())].iter().rposition(|&b| b == b'\n') {
                return Ok((gl, Some(buf[i + 1..end].to_vec())));
            }
            if pos == 0 {
                return Ok((gl, Some(buf[..end].to_vec())));
            }
        } else if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            good_len = Some(pos + i as u64 + 1);
            continue;
        } else if pos == 0 {
            return Ok((0, None));
        }
        pos = read_back(file, pos, &mut buf)?;
    }
}

/// Reading a file backwards: prepends the (up to 64 KiB) chunk before `pos`
/// to `buf`, which holds the bytes from `pos` on; returns the new `pos`.
fn read_back(file: &File, pos: u64, buf: &mut Vec<u8>) -> std::io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let start = pos.saturating_sub(CHUNK);
    let mut chunk = vec![0u8; usize::try_from(pos - start).unwrap_or(0)];
    file.read_exact_at(&mut chunk, start)?;
    chunk.extend_from_slice(buf);
    *buf = chunk;
    Ok(start)
}
