//! Group commit: the open batch that appenders fill under one mutex, the
//! outcome every append of a batch waits for, and who writes a batch (the
//! writer thread, or with `fsync = false` an appender that finds the
//! writer free).
//!
//! Contract: batches reach the file in chain order whoever writes them
//! (the writer lock is held from taking a batch until it is answered);
//! every batch is answered exactly once, as failed if its writer panics;
//! a record whose appender went away is still shipped to the sink once
//! durable, and never if not.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, oneshot};

use super::super::AuditError;
use super::super::chain;
use super::super::record::{self, AuditEvent, Name, RecordRef};
use super::RecordSink;
use super::file::{Writer, now_rfc3339};

/// The outcome of one batch, shared by every append in it: set once by the
/// writer thread, which then wakes all of them with one call.
#[derive(Default)]
pub(super) struct Batch {
    durable: OnceLock<bool>,
    done: Notify,
    /// Records whose appending task was dropped before the batch completed:
    /// shipped to the sink by whoever completes it, if it is durable.
    orphans: Mutex<Vec<Orphan>>,
}

/// A record still to be shipped to the sink after its appender is gone.
pub(super) struct Orphan {
    sink: Arc<dyn RecordSink>,
    line: Vec<u8>,
    time: String,
    prev: String,
    seq: u64,
    instance: Name,
    event: AuditEvent,
    /// The span current where the append was dropped (its request's, when
    /// traced): entered while shipping, so the sink sees that request's
    /// trace context, not none (writer thread) or another request's (a
    /// task writing inline).
    span: tracing::Span,
}

impl Orphan {
    /// Runs on the writer thread or in a drop: a panicking sink must take
    /// down neither the writer (every later append would fail) nor the
    /// process (a panic during an unwinding drop aborts).
    fn ship(&self) {
        let _entered = self.span.enter();
        let shipped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ship(
                &*self.sink,
                &self.line,
                self.seq,
                &self.time,
                &self.prev,
                &self.instance,
                &self.event,
            )
        }));
        if shipped.is_err() {
            tracing::error!(
                seq = self.seq,
                "audit: the record sink panicked; record not shipped"
            );
        }
    }
}

/// Hands one durable record to the sink, as the view it serialised from.
pub(super) fn ship(
    sink: &dyn RecordSink,
    line: &[u8],
    seq: u64,
    time: &str,
    prev: &str,
    instance: &Name,
    event: &AuditEvent,
) {
    sink.durable(
        line,
        &RecordRef {
            v: record::SCHEMA_VERSION,
            seq,
            time,
            instance,
            event,
            prev,
        },
    );
}

impl Batch {
    pub(super) fn complete(&self, durable: bool) {
        let _ = self.durable.set(durable);
        self.done.notify_waiters();
        // After `durable` is set: an orphan added from now on sees it and
        // ships itself (see `adopt`), so none is missed or shipped twice.
        let orphans = std::mem::take(&mut *self.orphans.lock().unwrap_or_else(|p| p.into_inner()));
        // What was stored decides (the first answer, were there ever two).
        if self.durable.get().copied().unwrap_or(false) {
            orphans.iter().for_each(Orphan::ship);
        }
    }

    /// Takes over the shipping of a record whose appender was dropped.
    pub(super) fn adopt(&self, o: Orphan) {
        let mut orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
        match self.durable.get() {
            None => orphans.push(o),
            Some(true) => {
                drop(orphans);
                o.ship();
            }
            Some(false) => {}
        }
    }

    pub(super) async fn wait(&self) -> bool {
        loop {
            // Registered before the check, so a completion between the two
            // is not missed.
            let notified = self.done.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(&durable) = self.durable.get() {
                return durable;
            }
            notified.await;
        }
    }
}

/// A record's line, time and `prev`, kept for the sink until its batch is
/// durable.
pub(super) struct Pending {
    pub(super) line: Vec<u8>,
    pub(super) time: String,
    pub(super) prev: String,
}

/// An append waiting for its batch: if its future is dropped meanwhile (the
/// caller went away), the shipping is handed to the batch, because the
/// record is in the file then and the sink must still get it.
pub(super) struct Unshipped<'a> {
    pub(super) pending: Option<Pending>,
    pub(super) sink: Option<&'a Arc<dyn RecordSink>>,
    pub(super) batch: &'a Batch,
    pub(super) seq: u64,
    pub(super) instance: &'a Name,
    pub(super) event: &'a AuditEvent,
}

impl Drop for Unshipped<'_> {
    fn drop(&mut self) {
        if let (Some(sink), Some(p)) = (self.sink, self.pending.take()) {
            self.batch.adopt(Orphan {
                sink: sink.clone(),
                line: p.line,
                time: p.time,
                prev: p.prev,
                seq: self.seq,
                instance: self.instance.clone(),
                event: self.event.clone(),
                span: tracing::Span::current(),
            });
        }
    }
}

/// A batch the writer has taken: answered exactly once, as failed if it is
/// dropped unanswered (the writer thread panicked mid-write).
pub(super) struct Unanswered(Option<Arc<Batch>>);

impl Unanswered {
    pub(super) fn answer(mut self, durable: bool) {
        if let Some(b) = self.0.take() {
            b.complete(durable);
        }
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.complete(false);
        }
    }
}

/// What appenders and the writer thread share, under [`Shared::open`].
pub(super) struct OpenBatch {
    /// Last `seq` handed out (durable or still in a batch).
    pub(super) seq: u64,
    /// Hash of that record's line: the next record's `prev`.
    pub(super) head: String,
    /// Lines appended since the writer last took a batch.
    pub(super) buf: Vec<u8>,
    pub(super) records: usize,
    pub(super) batch: Arc<Batch>,
    pub(super) flushes: Vec<oneshot::Sender<Result<(), AuditError>>>,
    /// The writer thread is waiting for work: the next append wakes it.
    pub(super) writer_waiting: bool,
    /// An appender wrote inline and the checkpoint schedule changed (the
    /// first record since the last checkpoint, or enough records for the
    /// next one): the thread re-reads it.
    pub(super) poke: bool,
    /// The last handle is gone or the writer stopped: appends are refused.
    pub(super) closed: bool,
    /// The current millisecond and its RFC 3339 text (formatted once per
    /// millisecond, not once per record).
    pub(super) clock: (u128, String),
}

impl OpenBatch {
    /// Wakes the writer thread if it is waiting for work (it re-checks the
    /// batch, flushes and `poke` under this lock before waiting).
    pub(super) fn wake_writer(&mut self, work: &Condvar) {
        if self.writer_waiting {
            self.writer_waiting = false;
            work.notify_one();
        }
    }

    fn time(&mut self) -> &str {
        let now = SystemTime::now();
        let ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        if ms != self.clock.0 || self.clock.1.is_empty() {
            self.clock = (ms, now_rfc3339(now));
        }
        &self.clock.1
    }
}

pub(super) struct Shared {
    pub(super) open: Mutex<OpenBatch>,
    /// Signalled when the writer has work (records, a flush, close).
    pub(super) work: Condvar,
    /// The file side. Whoever takes a batch out of `open` holds it from
    /// before the take until the batch is answered, so batches reach the file
    /// in chain order whoever writes them. Lock order: `writer`, then `open`.
    pub(super) writer: Mutex<Writer>,
    /// `fsync = false`: an appender that finds the writer free writes the
    /// batch itself (see [`write_inline`]). The same setting as
    /// `Writer::fsync`, kept here so appenders read it without the writer
    /// lock.
    pub(super) inline: bool,
}

impl Shared {
    /// The state shared by appenders and the writer thread, which resumes
    /// from `writer`'s chain head. `inline`: appenders write batches
    /// themselves when they find the writer free (`fsync = false`).
    pub(super) fn new(writer: Writer, inline: bool) -> Shared {
        Shared {
            open: Mutex::new(OpenBatch {
                seq: writer.seq,
                head: writer.head.clone(),
                buf: Vec::new(),
                records: 0,
                batch: Arc::default(),
                flushes: Vec::new(),
                writer_waiting: false,
                poke: false,
                closed: false,
                clock: (0, String::new()),
            }),
            work: Condvar::new(),
            writer: Mutex::new(writer),
            inline,
        }
    }

    /// Serialises `ev` as the next record straight into the open batch (the
    /// hash covers exactly the line's bytes) and links it into the chain.
    /// Returns its `seq`, the batch it joined and, when a sink wants it,
    /// what shipping the record needs.
    pub(super) fn link(
        &self,
        instance: &Name,
        ev: &AuditEvent,
        for_sink: bool,
    ) -> Result<(u64, Arc<Batch>, Option<Pending>), AuditError> {
        let mut guard = self.lock();
        let open = &mut *guard;
        if open.closed {
            return Err(AuditError::Closed);
        }
        let at = open.buf.len();
        open.time();
        let rec = RecordRef {
            v: record::SCHEMA_VERSION,
            seq: open.seq + 1,
            time: &open.clock.1,
            instance,
            event: ev,
            prev: &open.head,
        };
        rec.write_json(&mut open.buf);
        let line = &open.buf[at..];
        let pending = for_sink.then(|| Pending {
            line: line.to_vec(),
            time: open.clock.1.clone(),
            prev: open.head.clone(),
        });
        open.head = chain::line_hash(line);
        open.seq += 1;
        open.buf.push(b'\n');
        open.records += 1;
        if !self.inline {
            open.wake_writer(&self.work);
        }
        Ok((open.seq, open.batch.clone(), pending))
    }

    /// Poisoning cannot leave the batch half-updated in a way that matters
    /// (every field is consistent after each statement that could panic),
    /// so a poisoned lock is used as is rather than failing every append.
    pub(super) fn lock(&self) -> MutexGuard<'_, OpenBatch> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Poisoning: the writer's state is made consistent by each batch's own
    /// failure handling (cut back, rewind), as after an I/O error.
    pub(super) fn writer(&self) -> MutexGuard<'_, Writer> {
        lock_writer(&self.writer)
    }

    pub(super) fn try_writer(&self) -> Option<MutexGuard<'_, Writer>> {
        match self.writer.try_lock() {
            Ok(w) => Some(w),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

/// `fsync = false`: the appending task writes the open batch itself when
/// the writer is free. Without an fsync to wait for, handing each record to
/// the thread would cost two cross-thread wake-ups per record for a `write`
/// to the page cache. When the writer is busy (the thread is writing or
/// checkpointing, or another worker is writing), or the write needs the
/// thread (repair, rotation), the batch is left to the thread.
pub(super) fn write_inline(shared: &Shared) {
    let wrote = match shared.try_writer() {
        Some(mut w) if w.can_write_inline() => {
            let unchecked_before = w.seq > w.last_cp_seq;
            let _ = w.write_open_batch(shared, false);
            // The thread schedules time-based checkpoints from the first
            // record after one, and writes count-based ones.
            let cp_changed = !unchecked_before || w.cp_due_by_count();
            drop(w);
            if cp_changed {
                let mut open = shared.lock();
                open.poke = true;
                open.wake_writer(&shared.work);
            }
            true
        }
        _ => false,
    };
    if !wrote {
        let mut open = shared.lock();
        if open.records > 0 {
            open.wake_writer(&shared.work);
        }
    }
}

impl Writer {
    /// Takes the open batch (and, for the thread, the pending flushes) and
    /// writes it; answers every append in it. Called with the writer lock
    /// held, which keeps batches in chain order. Only the thread rotates:
    /// an inline write goes to the current file (rotation, which fsyncs the
    /// old file, is left to the thread's next batch).
    pub(super) fn write_open_batch(
        &mut self,
        shared: &Shared,
        by_thread: bool,
    ) -> Vec<oneshot::Sender<Result<(), AuditError>>> {
        let mut open = shared.lock();
        if !by_thread && open.records == 0 {
            // Another appender wrote it already.
            return Vec::new();
        }
        let records = std::mem::take(&mut open.records);
        let buf = std::mem::replace(&mut open.buf, std::mem::take(&mut self.spare));
        let batch = std::mem::take(&mut open.batch);
        let (seq, head) = (open.seq, open.head.clone());
        let flushes = if by_thread {
            std::mem::take(&mut open.flushes)
        } else {
            Vec::new()
        };
        drop(open);

        self.last_batch = records;
        // Completed as failed if this panics before it answers.
        let batch = Unanswered(Some(batch));
        if records > 0 {
            let durable = self.write_batch(&buf, records, seq, head, by_thread);
            if !durable {
                // The records appended meanwhile chain from the lost
                // ones: refuse them too and rewind to the durable head.
                let mut open = shared.lock();
                open.seq = self.seq;
                open.head = self.head.clone();
                open.buf.clear();
                open.records = 0;
                let behind = std::mem::take(&mut open.batch);
                drop(open);
                behind.complete(false);
            }
            batch.answer(durable);
        }
        self.spare = buf;
        self.spare.clear();
        flushes
    }
}

/// A panic while holding the writer leaves it consistent enough to go on:
/// every batch is answered (`Unanswered`) and a dirty file is repaired
/// before the next write.
pub(super) fn lock_writer(writer: &Mutex<Writer>) -> MutexGuard<'_, Writer> {
    writer.lock().unwrap_or_else(|p| p.into_inner())
}
