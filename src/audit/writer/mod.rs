//! The audit writer: group commit, rotation, checkpoints, resume after
//! restart, self-healing after I/O errors. This file is its public API;
//! the parts live beside it: `batch` (the open batch appenders fill and
//! who writes it), `thread` (the writer thread's loop), `file` (the log
//! file, its repair and rotation), `checkpoint`, `recover` (resuming the
//! chain at start-up) and `sync` (the syncs, behind a trait tests share).
//!
//! Input: [`AuditEvent`]s through [`AuditLog::append`] from any task.
//! Output: the record's `seq`, returned only once its line is written and
//! (with `fsync = true`) fsynced; appends that arrive while a batch is being
//! written share the next single write + fsync.
//! Failures: any I/O error in a batch fails every append of that batch, and
//! of the batch being filled behind it (its records chain from the failed
//! ones), with [`AuditError::Unavailable`]. The file is cut back to its last
//! good length (now, or before the next batch if the cut fails too) and the
//! chain is rewound to its last durable record, so a half-written line never
//! stays in the chain; the next append simply tries again, which is how the
//! log recovers by itself.
//!
//! Who does what: the appending task serialises its record, links it into
//! the chain and adds the line to the open batch, all under one mutex (a
//! few microseconds), then waits for that batch. One dedicated thread per
//! log takes the open batch, writes it with one `write` and one `fdatasync`,
//! and wakes every waiter of the batch at once. With `fsync = false` there
//! is nothing to wait for but a `write` to the page cache, so the appending
//! task writes the batch itself when the writer is free (see `write_inline`);
//! the thread keeps rotation, repair, checkpoints and whatever found the
//! writer busy. Why not hand each event to the thread: that costs two
//! cross-thread round trips per request, a copy of the event, and frees of
//! the task's memory on another thread (docs/performance.md). Why a plain
//! thread for the I/O and not a tokio task: write, fsync and ftruncate are
//! blocking syscalls; a thread keeps them off the runtime's workers and
//! drives the time-based checkpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::oneshot;

use super::record::{self, AuditEvent, Digest, Fingerprint, Name, Pointer, RecordRef};
use super::{AuditError, AuditKeys, AuditSettings};
use batch::{Shared, Unshipped, ship, write_inline};
use file::Writer;
use sync::{OsSync, Syncer};

mod batch;
mod checkpoint;
mod file;
mod recover;
mod sync;
mod thread;

#[cfg(test)]
mod tests;

/// Counters since open. `fsyncs` counts fsyncs of the log file by batches,
/// so `records / fsyncs` is the group-commit factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditStats {
    /// Records made durable.
    pub records: u64,
    /// Successful batches (one write each).
    pub batches: u64,
    /// fsyncs of the log file for batches.
    pub fsyncs: u64,
    /// Failed batches and failed checkpoint writes.
    pub failures: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Log bytes written a second time because a sync had failed (or, at
    /// start-up without fsync, because they were not yet anchored).
    pub rewritten_bytes: u64,
}

#[derive(Default)]
struct Counters {
    records: AtomicU64,
    batches: AtomicU64,
    fsyncs: AtomicU64,
    failures: AtomicU64,
    checkpoints: AtomicU64,
    rewritten_bytes: AtomicU64,
}

/// Receives every record once it is durable, for shipping elsewhere (the
/// OpenTelemetry log export). Nothing but the record is handed over, so a
/// sink sees exactly what the file holds: names, ids, pointers — no values.
pub trait RecordSink: Send + Sync {
    /// Called after the record's batch was written and fsynced, never for a
    /// record that failed to become durable: in the appending task (where
    /// the request's span is current), or, when that task was dropped while
    /// it waited (the caller went away), by whoever completed the batch,
    /// right after: the writer thread, or with `fsync = false` another
    /// request's task writing inline (or in the drop itself, if the batch
    /// had completed already). Those calls hold the writer: a slow sink
    /// delays every append. It must not block. `line` is exactly the bytes
    /// in the file, without the newline.
    fn durable(&self, line: &[u8], record: &RecordRef<'_>);
}

type Sink = Arc<OnceLock<Arc<dyn RecordSink>>>;

struct Inner {
    shared: Option<Arc<Shared>>,
    counters: Arc<Counters>,
    healthy: Arc<AtomicBool>,
    instance: Name,
    dir: PathBuf,
    /// Prepared once: the HMAC key schedule is not redone per request.
    fingerprint_key: ring::hmac::Key,
    field_hmac_key: ring::hmac::Key,
    hmac_pointers: Vec<Pointer>,
    sink: Sink,
    /// The bound on one line (`[audit] max_record_bytes`).
    max_record_bytes: usize,
    /// The audit file system's free space, for the watermark.
    free: super::FreeSpace,
}

impl Drop for Inner {
    /// The writer writes what is still open, checkpoints and stops.
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.lock().closed = true;
            shared.work.notify_one();
        }
    }
}

/// Handle to the audit trail; clone freely (one `Arc`). The writer thread
/// stops, after a final checkpoint, when the last clone is dropped; call
/// [`AuditLog::flush`] on graceful shutdown so that happens before exit.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("instance", &self.inner.instance)
            .field("dir", &self.inner.dir)
            .field("enabled", &self.inner.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or resumes) this instance's chain in `settings.dir` and starts
    /// the writer thread. A torn last line from a crash is cut off. With
    /// `enabled = false` nothing is opened and `append` returns `Ok(0)`.
    pub fn open(settings: &AuditSettings, keys: AuditKeys) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(settings, keys, Arc::new(OsSync))
    }

    /// [`AuditLog::open`], making its syncs through `sync` (the tests pass
    /// a fault injector here).
    fn open_with(
        settings: &AuditSettings,
        keys: AuditKeys,
        sync: Arc<dyn Syncer>,
    ) -> Result<AuditLog, AuditError> {
        let instance = settings.instance_id()?;
        let hmac_pointers = settings.hmac_pointers()?;
        let counters = Arc::new(Counters::default());
        let healthy = Arc::new(AtomicBool::new(true));
        let mut inner = Inner {
            shared: None,
            counters: counters.clone(),
            healthy: healthy.clone(),
            instance: instance.clone(),
            dir: settings.dir.clone(),
            fingerprint_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &keys.fingerprint_key),
            field_hmac_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &keys.field_hmac_key),
            hmac_pointers,
            sink: Sink::default(),
            max_record_bytes: settings.max_record_bytes.clamp(
                *crate::config::RECORD_BYTES_RANGE.start(),
                *crate::config::RECORD_BYTES_RANGE.end(),
            ),
            free: Default::default(),
        };
        if !settings.enabled {
            return Ok(AuditLog {
                inner: Arc::new(inner),
            });
        }
        if keys.checkpoint_key.is_empty() {
            return Err(AuditError::Settings("checkpoint key must not be empty"));
        }
        if settings.rotate_bytes == 0 || settings.checkpoint_every_records == 0 {
            return Err(AuditError::Settings(
                "rotate_bytes and checkpoint_every_records must be > 0",
            ));
        }
        let writer = Writer::resume(
            settings,
            instance.as_str(),
            keys.checkpoint_key,
            sync,
            counters,
            healthy,
        )?;
        let shared = Arc::new(Shared::new(writer, !settings.fsync));
        thread::spawn(shared.clone(), settings, &instance)?;
        inner.shared = Some(shared);
        Ok(AuditLog {
            inner: Arc::new(inner),
        })
    }

    /// Appends one record; resolves with its `seq` once it is durable.
    /// `Err(Unavailable)` means it is not in the log: do not forward. A
    /// record longer than `max_record_bytes` is cut first
    /// ([`AuditEvent::fit`]), so no request can make a line longer.
    pub async fn append(&self, ev: &AuditEvent) -> Result<u64, AuditError> {
        let Some(shared) = &self.inner.shared else {
            return Ok(0);
        };
        let cut;
        let ev =
            if record::event_len_bound(ev) + record::ENVELOPE_BYTES > self.inner.max_record_bytes {
                let mut e = ev.clone();
                e.fit(self.inner.max_record_bytes);
                cut = e;
                &cut
            } else {
                ev
            };
        let sink = self.inner.sink.get();
        let (seq, batch, pending) = shared.link(&self.inner.instance, ev, sink.is_some())?;
        if shared.inline {
            write_inline(shared);
        }
        // Hands the shipping to the batch if this future is dropped while
        // it waits (the caller went away): the record is in the file then,
        // so the sink must still get it.
        let mut unshipped = Unshipped {
            pending,
            sink,
            batch: &batch,
            seq,
            instance: &self.inner.instance,
            event: ev,
        };
        let durable = batch.wait().await;
        let pending = unshipped.pending.take();
        if !durable {
            return Err(AuditError::Unavailable);
        }
        if let (Some(sink), Some(p)) = (sink, pending) {
            ship(
                &**sink,
                &p.line,
                seq,
                &p.time,
                &p.prev,
                &self.inner.instance,
                ev,
            );
        }
        Ok(seq)
    }

    /// Free bytes on the audit directory's file system (a reading at most
    /// a quarter second old), None when unknown.
    pub fn disk_free(&self) -> Option<u64> {
        self.inner.free.get(&self.inner.dir)
    }

    /// Hands every record made durable from now on to `sink` as well. Set
    /// once per log; returns false (and keeps the first) on a second call.
    pub fn set_sink(&self, sink: Arc<dyn RecordSink>) -> bool {
        self.inner.sink.set(sink).is_ok()
    }

    /// Waits until every record appended before this call is fsynced and a
    /// checkpoint covers it.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let Some(shared) = &self.inner.shared else {
            return Ok(());
        };
        let (otx, orx) = oneshot::channel();
        {
            let mut open = shared.lock();
            if open.closed {
                return Err(AuditError::Closed);
            }
            open.flushes.push(otx);
            open.wake_writer(&shared.work);
        }
        orx.await.map_err(|_| AuditError::Closed)?
    }

    /// False after a failed batch until the next successful one.
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    /// Counters since open.
    pub fn stats(&self) -> AuditStats {
        let c = &self.inner.counters;
        AuditStats {
            records: c.records.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
            rewritten_bytes: c.rewritten_bytes.load(Ordering::Relaxed),
        }
    }

    /// This log's instance id.
    pub fn instance(&self) -> &Name {
        &self.inner.instance
    }

    /// The audit directory (for the "audit trail at …" start-up line).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Fingerprint of the upstream key for [`AuditEvent::key_fingerprint`].
    pub fn fingerprint(&self, upstream_key: &str) -> Fingerprint {
        record::fingerprint_keyed(&self.inner.fingerprint_key, upstream_key)
    }

    /// The configured `hmac_fields` present in `body`, copied out so the
    /// body can be freed; [`AuditLog::field_hmacs`] hashes them. Split in
    /// two so a request the rate limiter refuses pays for the copies only,
    /// not for the HMACs (a flood of refused requests must stay cheap). A
    /// string is taken as its UTF-8 bytes, anything else as compact JSON.
    pub fn field_values(&self, body: &serde_json::Value) -> FieldValues {
        let mut out = Vec::new();
        for p in &self.inner.hmac_pointers {
            let Some(v) = body.pointer(p.as_str()) else {
                continue;
            };
            let bytes = match v {
                serde_json::Value::String(s) => s.as_bytes().to_vec(),
                other => serde_json::to_vec(other).unwrap_or_default(),
            };
            out.push((p.clone(), bytes));
        }
        FieldValues(out)
    }

    /// Keyed HMACs of values taken by [`AuditLog::field_values`].
    pub fn field_hmacs(&self, values: FieldValues) -> BTreeMap<Pointer, Digest> {
        values
            .0
            .into_iter()
            .map(|(p, bytes)| {
                let d = record::field_digest_keyed(&self.inner.field_hmac_key, &bytes);
                (p, d)
            })
            .collect()
    }
}

/// Body values of the configured `hmac_fields`, between
/// [`AuditLog::field_values`] and [`AuditLog::field_hmacs`]. They are PII:
/// no `Debug`, `Clone` or serialisation, so they can only be hashed or dropped.
#[derive(Default)]
pub struct FieldValues(Vec<(Pointer, Vec<u8>)>);

impl FieldValues {
    /// How many configured fields the body had.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the body had none of the configured fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
