//! The log file: the writer's state ([`Writer`]), writing a batch to the
//! current file, repairing the file after a failed write or sync, and
//! rotation to the next file by size or by day.
//!
//! Contract: after a failed write nothing of the batch stays in the file
//! or the chain (cut now, or before the next write); after a failed sync
//! (`fsync = false`) the unsynced bytes are written again from memory
//! before anything counts as durable; the chain moves to a new file only
//! once the old file and the new directory entry are durable.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::super::chain;
use super::super::{AuditError, io_err};
use super::Counters;
use super::checkpoint::CpFile;
use super::sync::Syncer;

/// With `fsync = false`, the log bytes not yet covered by a successful sync
/// are also kept in memory (see [`Writer::unsynced_tail`]); past this much a
/// checkpoint (which syncs) is due whatever the record count, so the copy
/// stays bounded however the checkpoint interval is set.
pub(super) const UNSYNCED_TAIL_CAP: usize = 4 * 1024 * 1024;

pub(super) fn now_rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub(super) fn day_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0)
}

/// The file side of the log, behind the writer lock.
pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) instance: String,
    pub(super) fsync: bool,
    /// See `AuditSettings::group_commit_wait_us`; zero without fsync.
    pub(super) group_commit_wait: Duration,
    /// Records in the previous batch: more than one means concurrent load.
    pub(super) last_batch: usize,
    /// The buffer the previous batch was written from, kept for reuse.
    pub(super) spare: Vec<u8>,
    pub(super) rotate_bytes: u64,
    pub(super) rotate_daily: bool,
    pub(super) cp_every_records: u64,
    pub(super) cp_every: Duration,
    /// Shared with each checkpoint job instead of copied for it.
    pub(super) cp_key: Arc<[u8]>,

    pub(super) file: Option<File>,
    pub(super) file_no: u64,
    /// Length of the file up to its last durable, complete line.
    pub(super) file_len: u64,
    pub(super) file_day: Option<u64>,
    /// A failed write may have left bytes past `file_len`.
    pub(super) dirty: bool,
    /// Length of the current file up to its last successful sync.
    pub(super) synced_len: u64,
    /// With `fsync = false`: a copy of the file's bytes after `synced_len`.
    /// After a failed `fdatasync` Linux may drop those pages' dirty state,
    /// and a later sync then reports success without writing them (the
    /// "fsyncgate" behaviour): a checkpoint would anchor records that a power
    /// loss erases. So the bytes are written again from this copy first.
    pub(super) unsynced_tail: Vec<u8>,
    /// A sync of the log failed: `unsynced_tail` must be written again (in
    /// place from `synced_len`, then synced) before anything else counts as
    /// durable. Appenders leave their batches to the thread meanwhile.
    pub(super) resync: bool,
    /// Every sync the writer makes goes through it (tests inject faults).
    pub(super) sync: Arc<dyn Syncer>,
    pub(super) seq: u64,
    pub(super) head: String,

    /// The checkpoint file; lent to a `CpJob` while it runs.
    pub(super) cp: CpFile,
    pub(super) last_cp_seq: u64,
    /// The last checkpoint attempt failed (retried at `cp_due`).
    pub(super) cp_failed: bool,
    /// When the next time-based checkpoint (or a retry of a failed one) is
    /// due; a failed checkpoint is retried after a pause, not in a tight
    /// loop that would hammer a broken disk.
    pub(super) cp_due: Instant,
    /// The pause before retrying a failed checkpoint or rotation
    /// (`CP_RETRY`; tests that must not meet a retry set it longer).
    pub(super) cp_retry: Duration,
    /// After a failed rotation: not retried before this.
    pub(super) rotate_retry_at: Option<Instant>,

    pub(super) counters: Arc<Counters>,
    pub(super) healthy: Arc<AtomicBool>,
}

impl Writer {
    pub(super) fn log_path(&self) -> PathBuf {
        self.dir
            .join(chain::log_file_name(&self.instance, self.file_no))
    }

    pub(super) fn cp_path(&self) -> PathBuf {
        self.dir.join(chain::checkpoint_file_name(&self.instance))
    }

    pub(super) fn open_log_file(&mut self) -> Result<(), AuditError> {
        let path = self.log_path();
        let f = open_appending(&path).map_err(io_err(&path))?;
        // The new directory entry must survive a crash too (see
        // `maybe_rotate`), with or without fsync.
        self.sync.sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        self.file = Some(f);
        Ok(())
    }

    /// Whether an appender may write the open batch itself: only a plain
    /// `write` to a healthy, open file is done on an async worker; repair,
    /// rotation (which fsyncs the old file) and checkpoints stay on the thread.
    pub(super) fn can_write_inline(&self) -> bool {
        self.file.is_some()
            && !self.dirty
            && !self.resync
            && self.unsynced_tail.len() < 2 * UNSYNCED_TAIL_CAP
            && !self.rotation_due(SystemTime::now())
    }

    pub(super) fn fail(&self, what: &'static str, e: &std::io::Error) {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        self.healthy.store(false, Ordering::Relaxed);
        tracing::error!(dir = %self.dir.display(), error = %e, "audit: {what} failed");
    }

    /// Brings the file back to its last good length after a failed write,
    /// and after a failed sync writes the unsynced bytes again (see
    /// [`Writer::unsynced_tail`]).
    pub(super) fn repair(&mut self) -> std::io::Result<()> {
        if self.file.is_none() {
            let path = self.log_path();
            self.file = Some(open_appending(&path)?);
        }
        if self.dirty {
            if let Some(f) = &self.file {
                f.set_len(self.file_len)?;
            }
            self.dirty = false;
        }
        if self.resync {
            // The pages after `synced_len` are of unknown fate: write the
            // copy over them (same offset, so dirty again whatever the
            // cache held) and sync. Not cut first: a crash or a failing
            // write part-way would lose what may well be on disk already.
            // A second handle without O_APPEND, which would ignore the offset.
            let f = OpenOptions::new().write(true).open(self.log_path())?;
            f.write_all_at(&self.unsynced_tail, self.synced_len)?;
            self.sync.sync_data(&f)?;
            self.rewritten(self.unsynced_tail.len() as u64);
            tracing::warn!(
                bytes = self.unsynced_tail.len(),
                "audit: log bytes written again after a failed sync, now durable"
            );
            self.synced_len = self.file_len;
            self.unsynced_tail.clear();
            self.resync = false;
        }
        Ok(())
    }

    /// Syncs the log on this thread, holding the writer (see `cp_begin`, and
    /// `write_batch` past the hard cap on the unsynced copy).
    pub(super) fn sync_now(&mut self, what: &'static str) -> Result<(), ()> {
        let Some(f) = &self.file else {
            return Err(());
        };
        match self.sync.sync_data(f) {
            Ok(()) => {
                self.synced(self.file_len);
                Ok(())
            }
            Err(e) => {
                self.sync_failed(what, &e);
                Err(())
            }
        }
    }

    /// Counts log bytes written a second time (stats and metric alike).
    pub(super) fn rewritten(&self, bytes: u64) {
        self.counters
            .rewritten_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        crate::telemetry::audit_rewritten(bytes);
    }

    /// Records written but not yet synced (only with `fsync = false`): the
    /// copy of them is what is unsynced.
    pub(super) fn unsynced(&self) -> bool {
        !self.unsynced_tail.is_empty()
    }

    /// A sync covered the current file up to `len`: that much of the copy
    /// is no longer needed.
    pub(super) fn synced(&mut self, len: u64) {
        if len <= self.synced_len {
            return;
        }
        let n = usize::try_from(len - self.synced_len)
            .unwrap_or(usize::MAX)
            .min(self.unsynced_tail.len());
        self.unsynced_tail.drain(..n);
        self.synced_len = len;
    }

    /// A sync of the log failed (with `fsync = false`): see
    /// [`Writer::resync`].
    pub(super) fn sync_failed(&mut self, what: &'static str, e: &std::io::Error) {
        self.fail(what, e);
        self.resync = true;
    }

    /// Whether the current file is full or of another day (and no failed
    /// rotation's pause is running).
    pub(super) fn rotation_due(&self, now: SystemTime) -> bool {
        self.file_len > 0
            && (self.file_len >= self.rotate_bytes
                || (self.rotate_daily && self.file_day.is_some_and(|d| d != day_of(now))))
            && self.rotate_retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// A rotation failed: keep the current file and retry after a pause,
    /// not on every batch (a directory that cannot be synced would otherwise
    /// cost a create, an fsync and a remove per batch, and keep inline
    /// writes off for good).
    pub(super) fn rotation_failed(&mut self, what: &'static str, e: &std::io::Error) {
        self.fail(what, e);
        self.rotate_retry_at = Some(Instant::now() + self.cp_retry);
    }

    pub(super) fn maybe_rotate(&mut self, now: SystemTime) {
        if !self.rotation_due(now) {
            return;
        }
        // The old file must be durable before the chain moves on. On
        // failure rotation is retried next batch, after the rewrite (a plain
        // retry of the sync could succeed without writing anything).
        if self.unsynced() && self.sync_now("fsync before rotation").is_err() {
            return;
        }
        let next = self
            .dir
            .join(chain::log_file_name(&self.instance, self.file_no + 1));
        let opened = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&next)
            .or_else(|e| {
                // An empty file left by an earlier failed attempt (its
                // removal failed too) is ours to use; anything else is not.
                let empty = std::fs::metadata(&next).is_ok_and(|m| m.len() == 0);
                if e.kind() == std::io::ErrorKind::AlreadyExists && empty {
                    OpenOptions::new().read(true).append(true).open(&next)
                } else {
                    Err(e)
                }
            });
        match opened {
            Ok(f) => {
                // The new directory entry must survive a crash too, also
                // without fsync: records acknowledged in the new file (or
                // anchored there later) must not vanish with the entry. Once
                // per file; if it fails, the new file is not used.
                if let Err(e) = self.sync.sync_dir(&self.dir) {
                    self.rotation_failed("fsync of the audit directory after rotation", &e);
                    // Still empty; if the removal fails, the retry adopts it.
                    drop(f);
                    let _ = std::fs::remove_file(&next);
                    return;
                }
                self.rotate_retry_at = None;
                self.file = Some(f);
                self.file_no += 1;
                self.file_len = 0;
                self.file_day = None;
                self.synced_len = 0;
                self.unsynced_tail.clear();
            }
            // Keep writing the current file; rotation is retried later.
            Err(e) => self.rotation_failed("rotation", &e),
        }
    }

    /// Writes one batch: `buf` holds `records` complete lines ending at
    /// `seq` with line hash `head`. True once written (and fsynced); on
    /// false nothing of it stays in the file or the chain.
    pub(super) fn write_batch(
        &mut self,
        buf: &[u8],
        records: usize,
        seq: u64,
        head: String,
        may_rotate: bool,
    ) -> bool {
        if let Err(e) = self.repair() {
            self.fail("repair after earlier failure", &e);
            self.file = None;
            return false;
        }
        // The copy's hard bound: past twice the cap (checkpoints are not
        // keeping up: a stalled disk, a failing checkpoint file) the thread
        // syncs before it writes more; inline writers leave it their batches.
        if !self.fsync
            && self.unsynced_tail.len() >= 2 * UNSYNCED_TAIL_CAP
            && self
                .sync_now("fsync of the log past the unsynced cap")
                .is_err()
        {
            return false;
        }
        let now = SystemTime::now();
        if may_rotate {
            self.maybe_rotate(now);
        }

        let res = match &mut self.file {
            Some(f) => f.write_all(buf).and_then(|()| {
                if self.fsync {
                    self.sync.sync_data(f)
                } else {
                    Ok(())
                }
            }),
            None => Err(std::io::Error::other("no audit file open")),
        };
        if let Err(e) = res {
            self.fail("write", &e);
            self.dirty = true;
            // Cut the partial batch off now if possible; otherwise repair()
            // does it before the next write. Reopening also drops a
            // descriptor whose fsync error state is unknown.
            if let Some(f) = &self.file
                && f.set_len(self.file_len).is_ok()
            {
                self.dirty = false;
            }
            if self.dirty {
                self.file = None;
            }
            return false;
        }

        self.file_len += buf.len() as u64;
        if self.fsync {
            self.synced_len = self.file_len;
        } else {
            self.unsynced_tail.extend_from_slice(buf);
        }
        self.seq = seq;
        self.head = head;
        self.file_day.get_or_insert(day_of(now));
        let c = &self.counters;
        c.records.fetch_add(records as u64, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::audit_batch(records);
        if self.fsync {
            c.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        self.healthy.store(true, Ordering::Relaxed);
        true
    }
}

/// A log or checkpoint file opened for appending (and reading back),
/// created if missing: every file the writer extends is opened this way.
pub(super) fn open_appending(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
}
