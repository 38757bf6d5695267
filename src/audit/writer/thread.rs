//! The writer thread: one per log. It writes the batches appenders leave
//! to it (every batch with `fsync = true`), answers flushes with a
//! checkpoint, writes checkpoints by count and by time, and on close writes
//! what is still open and a final checkpoint.
//!
//! Contract: whatever way the thread ends (close or panic), the log is
//! marked closed and every waiting append and flush is answered.

use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use super::super::record::Name;
use super::super::{AuditError, AuditSettings, io_err};
use super::batch::{OpenBatch, Shared};
use super::checkpoint::checkpoint_unlocked;

/// Starts the writer thread of `shared` (named after the instance, under
/// `SCHED_BATCH` if the settings ask for it).
pub(super) fn spawn(
    shared: Arc<Shared>,
    settings: &AuditSettings,
    instance: &Name,
) -> Result<(), AuditError> {
    let sched_batch = settings.writer_sched_batch;
    std::thread::Builder::new()
        .name(format!("audit-{}", instance.as_str()))
        .spawn(move || {
            if sched_batch && let Err(e) = set_sched_batch() {
                tracing::warn!(error = %e, "audit: writer thread keeps the default scheduling policy");
            }
            run(&shared)
        })
        .map_err(io_err(&settings.dir))?;
    Ok(())
}

/// Whatever way the thread ends, no append waits forever.
struct Stop<'a>(&'a Shared);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let mut open = self.0.lock();
        open.closed = true;
        // Failed here, so nobody may write them later (an appender
        // writing inline after a panic of this thread).
        open.buf.clear();
        open.records = 0;
        open.batch.complete(false);
        for tx in open.flushes.drain(..) {
            let _ = tx.send(Err(AuditError::Closed));
        }
    }
}

/// The checkpoint schedule and batching state, read from the writer
/// before waiting; an inline write that changes it pokes the thread.
struct Schedule {
    cp_pending: bool,
    cp_due: Instant,
    last_batch: usize,
    group_commit_wait: Duration,
}

impl Schedule {
    fn read(shared: &Shared) -> Schedule {
        let w = shared.writer();
        Schedule {
            cp_pending: w.seq > w.last_cp_seq,
            cp_due: w.cp_due,
            last_batch: w.last_batch,
            group_commit_wait: w.group_commit_wait,
        }
    }
}

/// The writer thread: group commit with fsync, checkpoints by count and
/// time, flushes, the final checkpoint on close; with `fsync = false`
/// also every batch an appender could not write inline.
fn run(shared: &Shared) {
    let _stop = Stop(shared);
    loop {
        let sched = Schedule::read(shared);
        let open = wait_for_work(shared, &sched);
        if open.records == 0 && open.flushes.is_empty() {
            let closed = open.closed;
            drop(open);
            checkpoint_when_idle(shared, closed);
            if closed {
                return;
            }
            continue;
        }
        // Under concurrent load, let more records join this batch's
        // fsync. Appenders do not wake this thread while it sleeps.
        let gather = open.records > 0 && sched.last_batch > 1 && !sched.group_commit_wait.is_zero();
        drop(open);
        if gather {
            std::thread::sleep(sched.group_commit_wait);
        }
        write_and_answer(shared);
    }
}

/// Waits until there are records, a flush, a close or a poke, or until a
/// pending checkpoint is due by time; returns with the open batch locked.
fn wait_for_work<'a>(shared: &'a Shared, sched: &Schedule) -> MutexGuard<'a, OpenBatch> {
    let mut open = shared.lock();
    while open.records == 0 && open.flushes.is_empty() && !open.closed && !open.poke {
        let wait = if sched.cp_pending {
            sched.cp_due.saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(3600)
        };
        if wait.is_zero() {
            break;
        }
        open.writer_waiting = true;
        open = match shared.work.wait_timeout(open, wait) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
        open.writer_waiting = false;
    }
    open.poke = false;
    open
}

/// Nothing to write: checkpoints if closing, or if one is due (by time, or
/// by count after inline writes).
fn checkpoint_when_idle(shared: &Shared, closed: bool) {
    let w = shared.writer();
    if w.seq > w.last_cp_seq && (closed || Instant::now() >= w.cp_due || w.cp_due_by_count()) {
        let res = checkpoint_unlocked(&shared.writer, w);
        // Last chance on close: a failed sync is retried once, after the
        // rewrite (`cp_begin`).
        if closed && res.is_err() && shared.writer().resync {
            let _ = checkpoint_unlocked(&shared.writer, shared.writer());
        }
    }
}

/// Writes the open batch, then answers the flushes taken with it (after a
/// checkpoint covering them), or checkpoints if one is due.
fn write_and_answer(shared: &Shared) {
    let mut w = shared.writer();
    let flushes = w.write_open_batch(shared, true);
    if !flushes.is_empty() {
        let res = checkpoint_unlocked(&shared.writer, w);
        for tx in flushes {
            let r = match &res {
                Ok(()) => Ok(()),
                Err(_) => Err(AuditError::Unavailable),
            };
            let _ = tx.send(r);
        }
    } else if w.cp_due_by_count() || (w.seq > w.last_cp_seq && Instant::now() >= w.cp_due) {
        let _ = checkpoint_unlocked(&shared.writer, w);
    }
}

/// Puts the calling thread under `SCHED_BATCH` (see
/// `AuditSettings::writer_sched_batch`). On Linux with glibc,
/// `sched_setscheduler(0, …)` changes the calling *thread* only (POSIX would
/// mean the process): the request workers keep the normal policy. Threads
/// spawned from the writer would inherit it; it spawns none. Elsewhere
/// (musl returns ENOSYS; other systems have no such policy) it does nothing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_sched_batch() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a plain system call on the calling thread (pid 0) with a
    // valid, initialised parameter struct that outlives the call; it touches
    // no memory of ours besides reading `param`.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_sched_batch() -> std::io::Result<()> {
    Ok(())
}
