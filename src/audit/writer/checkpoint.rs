//! Checkpoints: a signed line in the checkpoint file that anchors the
//! chain head up to a `seq`, written by count, by time, on flush and on
//! close, only ever by the writer thread.
//!
//! Contract: a checkpoint never anchors a record that is not durable (with
//! `fsync = false` the log is synced first, and after a failed sync the
//! unsynced bytes are written again before anything is anchored); its
//! fsyncs run without the writer lock, so inline appends go on meanwhile;
//! a failed checkpoint is retried after a pause, not in a tight loop.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::super::chain::Checkpoint;
use super::batch::lock_writer;
use super::file::{UNSYNCED_TAIL_CAP, Writer, now_rfc3339};
use super::sync::Syncer;

/// Pause before retrying a failed checkpoint.
pub(super) const CP_RETRY: Duration = Duration::from_secs(1);

impl Writer {
    /// Enough records for a checkpoint, unless the last one failed and its
    /// retry pause has not passed: with inline writes this is asked on the
    /// request path, and a failing disk must not be retried at the request rate.
    pub(super) fn cp_due_by_count(&self) -> bool {
        (self.seq >= self.last_cp_seq.saturating_add(self.cp_every_records)
            || self.unsynced_tail.len() >= UNSYNCED_TAIL_CAP)
            && (!self.cp_failed || Instant::now() >= self.cp_due)
    }

    /// After a failed checkpoint: retry after the pause, not sooner (not per
    /// inline write either, see [`Writer::cp_due_by_count`]).
    pub(super) fn cp_retry_later(&mut self) {
        self.cp_failed = true;
        self.cp_due = Instant::now() + self.cp_every.min(self.cp_retry);
    }

    /// What a checkpoint covers and the handles it needs, taken while the
    /// writer is held. `Err` when the log is in an unknown state (the next
    /// batch repairs it), `None` when there is nothing to do.
    pub(super) fn cp_begin(&mut self) -> Result<Option<CpJob>, ()> {
        let res = (|| {
            if self.dirty {
                return Err(());
            }
            // After a failed sync nothing is anchored before the rewrite.
            if self.resync
                && let Err(e) = self.repair()
            {
                self.fail("rewriting the log after a failed sync", &e);
                return Err(());
            }
            if self.seq == self.last_cp_seq && !self.unsynced() {
                return Ok(None);
            }
            let log = if self.unsynced() {
                match self.file.as_ref().map(File::try_clone) {
                    Some(Ok(f)) => Some(f),
                    Some(Err(_)) => {
                        // No second handle (say, out of descriptors): sync
                        // here, holding the writer, rather than not at all
                        // while the unsynced copy grows.
                        self.sync_now("fsync of the log before a checkpoint")?;
                        None
                    }
                    None => return Err(()),
                }
            } else {
                None
            };
            Ok(Some(CpJob {
                seq: self.seq,
                head: self.head.clone(),
                sync_only: self.seq == self.last_cp_seq,
                log,
                log_len: self.file_len,
                log_synced: false,
                sync: self.sync.clone(),
                cp: std::mem::take(&mut self.cp),
            }))
        })();
        if res.is_err() {
            self.cp_retry_later();
        }
        res
    }

    /// Takes back what [`Writer::cp_begin`] lent and records the result.
    pub(super) fn cp_end(&mut self, job: CpJob, res: Result<(), CpFailure>) -> Result<(), ()> {
        self.cp = job.cp;
        if job.log_synced {
            // Only what the job's sync covered: bytes written since it
            // began stay in the copy.
            self.synced(job.log_len);
        }
        let res = match res {
            Ok(()) => {
                self.cp_failed = false;
                if !job.sync_only {
                    self.last_cp_seq = job.seq;
                    self.cp_due = Instant::now() + self.cp_every;
                    self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(CpFailure::Sync(e)) => {
                self.sync_failed("fsync before checkpoint", &e);
                Err(())
            }
            Err(CpFailure::Write(e)) => {
                self.fail("checkpoint", &e);
                if self.cp.dirty {
                    self.cp.file = None;
                }
                Err(())
            }
        };
        if res.is_err() {
            self.cp_retry_later();
        }
        res
    }
}

/// A checkpoint in progress: the chain head it covers and the file handles
/// it uses, away from the writer while its fsyncs run.
pub(super) struct CpJob {
    seq: u64,
    head: String,
    /// Nothing new to anchor: only the log's unsynced records to sync.
    sync_only: bool,
    /// A second handle on the log file, when records were written without
    /// fsync: they must be durable before a checkpoint covers them.
    log: Option<File>,
    /// The log's length when the job began: what its sync covers (inline
    /// writes may add more meanwhile).
    log_len: u64,
    /// The log's sync succeeded (also when writing the checkpoint then failed).
    log_synced: bool,
    sync: Arc<dyn Syncer>,
    cp: CpFile,
}

/// The checkpoint file, its good length, and whether a failed write left
/// bytes past it (cut before the next line).
#[derive(Default)]
pub(super) struct CpFile {
    pub(super) file: Option<File>,
    pub(super) len: u64,
    pub(super) dirty: bool,
}

pub(super) enum CpFailure {
    Sync(std::io::Error),
    Write(std::io::Error),
}

impl CpJob {
    /// The blocking part: sync the log (if needed), append the signed line
    /// to the checkpoint file and sync it.
    pub(super) fn run(
        &mut self,
        cp_key: &[u8],
        instance: &str,
        cp_path: &Path,
    ) -> Result<(), CpFailure> {
        if let Some(log) = &self.log {
            self.sync.sync_data(log).map_err(CpFailure::Sync)?;
            self.log_synced = true;
        }
        if self.sync_only {
            return Ok(());
        }
        (|| -> std::io::Result<()> {
            if self.cp.file.is_none() {
                self.cp.file = Some(super::file::open_appending(cp_path)?);
            }
            let Some(f) = &mut self.cp.file else {
                return Err(std::io::Error::other("no checkpoint file"));
            };
            if self.cp.dirty {
                f.set_len(self.cp.len)?;
                self.cp.dirty = false;
            }
            let cp = Checkpoint::sign(
                cp_key,
                instance,
                self.seq,
                &self.head,
                &now_rfc3339(SystemTime::now()),
            );
            let mut line = serde_json::to_vec(&cp).map_err(std::io::Error::other)?;
            line.push(b'\n');
            if let Err(e) = f.write_all(&line).and_then(|()| self.sync.sync_data(f)) {
                self.cp.dirty = true;
                return Err(e);
            }
            self.cp.len += line.len() as u64;
            Ok(())
        })()
        .map_err(CpFailure::Write)
    }
}

/// A checkpoint whose fsyncs run without the writer lock: with
/// `fsync = false` appenders write inline meanwhile instead of waiting for
/// two fsyncs (docs/performance.md). Only the writer thread checkpoints, so
/// no two jobs overlap.
pub(super) fn checkpoint_unlocked(
    writer: &Mutex<Writer>,
    mut w: MutexGuard<'_, Writer>,
) -> Result<(), ()> {
    let mut job = match w.cp_begin() {
        Ok(Some(job)) => job,
        Ok(None) => return Ok(()),
        Err(()) => return Err(()),
    };
    let (key, instance, path) = (w.cp_key.clone(), w.instance.clone(), w.cp_path());
    drop(w);
    let res = job.run(&key, &instance, &path);
    lock_writer(writer).cp_end(job, res)
}
