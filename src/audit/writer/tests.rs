//! The writer's tests: group commit, the sink, resume, rotation, write and
//! sync failures (through [`SyncFaults`], the fault-injecting [`Syncer`]),
//! checkpoints, inline writes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::super::chain;
use super::super::record::{AuditEvent, Record, RecordRef};
use super::super::test_util::*;
use super::super::{AuditError, AuditSettings, Kind, testing, verify};
use super::batch::lock_writer;
use super::checkpoint::checkpoint_unlocked;
use super::file::UNSYNCED_TAIL_CAP;
use super::recover::line_end_of_seq;
use super::sync::Syncer;
use super::*;

/// A [`Syncer`] whose next [`SyncFaults::fail_next`] syncs fail; each
/// failure overwrites the file's bytes since its last good sync with NULs
/// (no JSON line holds one), which is what a power loss can leave of pages
/// whose writeback failed (the kernel kept them in the cache, clean: no
/// later sync writes them). Every other sync is a real one.
#[derive(Clone, Default)]
struct SyncFaults(Arc<Mutex<SyncFaultState>>);

#[derive(Default)]
struct SyncFaultState {
    fail: u32,
    /// Directory syncs to fail (nothing is overwritten for those).
    fail_dir: u32,
    /// inode → length at its last good sync.
    synced: std::collections::HashMap<u64, u64>,
}

impl Syncer for SyncFaults {
    fn sync_data(&self, f: &File) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let meta = f.metadata()?;
        let from = st
            .synced
            .get(&meta.ino())
            .copied()
            .unwrap_or(0)
            .min(meta.len());
        if st.fail > 0 {
            st.fail -= 1;
            // A second description without O_APPEND, to write in place.
            let w = OpenOptions::new()
                .write(true)
                .open(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
            let lost = usize::try_from(meta.len() - from).unwrap_or(0);
            w.write_at(&vec![0u8; lost], from)?;
            return Err(std::io::Error::other("injected fdatasync failure"));
        }
        f.sync_data()?;
        st.synced.insert(meta.ino(), meta.len());
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if st.fail_dir > 0 {
            st.fail_dir -= 1;
            return Err(std::io::Error::other("injected directory fsync failure"));
        }
        File::open(dir)?.sync_all()
    }
}

impl SyncFaults {
    fn fail_next(&self, n: u32) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).fail = n;
    }

    fn fail_next_dir_sync(&self, n: u32) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).fail_dir = n;
    }
}

fn verify_ok(dir: &Path) -> super::super::VerifyReport {
    match verify(&[dir.to_path_buf()], Some(CP_KEY)) {
        Ok(r) => r,
        Err(f) => panic!("verify failed: {f}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_fsyncs_and_keeps_seqs_contiguous() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&settings(d.path()), keys()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            log.append(&event(Kind::Intent, &format!("r{i}"), "svc-a", "c1"))
                .await
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    let st = log.stats();
    assert_eq!(st.records, 200);
    assert_eq!(st.failures, 0);
    assert!(st.fsyncs < 200, "no group commit: {st:?}");
    assert_eq!(st.fsyncs, st.batches);
    log.flush().await.unwrap();
    assert_all_anchored(d.path(), 200);
}

/// The scheduling policy (field 41 of /proc/<tid>/stat) of this
/// process's thread named `name`, if there is one.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn thread_policy(name: &str) -> Option<u32> {
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
        // Fields after the parenthesised command name, which may hold spaces.
        let rest = &stat[stat.rfind(')')? + 2..];
        return rest.split(' ').nth(38)?.parse().ok();
    }
    None
}

/// (Run the tests under the normal policy: threads inherit it, so under
/// `chrt -b` the "off" case would see SCHED_BATCH too.)
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test]
async fn writer_thread_runs_under_sched_batch_only_when_asked() {
    assert!(!AuditSettings::default().writer_sched_batch, "opt-in");
    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    for (instance, batch, want) in [("sb-on", true, SCHED_BATCH), ("sb-off", false, SCHED_OTHER)] {
        let d = tempfile::tempdir().unwrap();
        let s = AuditSettings {
            instance: Some(instance.into()),
            writer_sched_batch: batch,
            ..settings(d.path())
        };
        let log = AuditLog::open(&s, keys()).unwrap();
        log.append(&event(Kind::Intent, "r1", "svc-a", "c1"))
            .await
            .unwrap();
        assert_eq!(
            thread_policy(&format!("audit-{instance}")),
            Some(want),
            "{instance}"
        );
    }
}

/// Collects what the log ships: the line, its seq, the request id the
/// record borrowed, and the thread that shipped it.
/// (line, seq, request id, shipping thread's name, span current while
/// shipping, as `dispatch` sees it)
type Shipped = (Vec<u8>, u64, String, Option<String>, Option<u64>);
#[derive(Default)]
struct Collect {
    got: std::sync::Mutex<Vec<Shipped>>,
    /// Whose current span to record (the OTLP sink reads the current
    /// span's trace context the same way).
    dispatch: Option<tracing::Dispatch>,
}
impl RecordSink for Collect {
    fn durable(&self, line: &[u8], record: &RecordRef<'_>) {
        let span = self
            .dispatch
            .as_ref()
            .and_then(|d| d.current_span().id().map(|id| id.into_u64()));
        self.got.lock().unwrap().push((
            line.to_vec(),
            record.seq,
            record.event.request_id.as_str().to_owned(),
            std::thread::current().name().map(str::to_owned),
            span,
        ));
    }
}

#[tokio::test]
async fn sink_gets_the_exact_durable_lines_and_never_failed_ones() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&settings(d.path()), keys()).unwrap();
    let sink = Arc::new(Collect::default());
    assert!(log.set_sink(sink.clone()));
    assert!(!log.set_sink(Arc::new(Collect::default())), "set once");
    for i in 0..3 {
        log.append(&event(Kind::Intent, &format!("r{i}"), "svc-a", "c1"))
            .await
            .unwrap();
    }
    let frozen = testing::freeze_dir(d.path()).expect("chattr +i must work here");
    assert!(
        log.append(&event(Kind::Intent, "lost", "svc-a", "c1"))
            .await
            .is_err()
    );
    frozen.thaw().unwrap();
    log.append(&event(Kind::Outcome, "r3", "svc-a", "c1"))
        .await
        .unwrap();
    log.flush().await.unwrap();

    let file: Vec<Vec<u8>> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .flat_map(|p| {
            std::fs::read(p)
                .unwrap()
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect();
    let got = sink.got.lock().unwrap().clone();
    assert_eq!(file.len(), 4);
    assert_eq!(
        got.iter().map(|g| g.0.clone()).collect::<Vec<_>>(),
        file,
        "the sink sees exactly the file's lines, and not the failed append"
    );
    assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(
        got.iter().map(|g| g.2.as_str()).collect::<Vec<_>>(),
        ["r0", "r1", "r2", "r3"]
    );
    // Shipped from the appending task (where the request's span is
    // current), never from the writer thread.
    assert!(got.iter().all(|g| g.3.as_deref() != Some("audit-t1")));
    // What the sink is given is what the line says.
    for g in &got {
        let rec: Record = serde_json::from_slice(&g.0).unwrap();
        assert_eq!(rec.seq, g.1);
    }
}

/// A caller that goes away while its record waits for the fsync drops
/// the append future; the record is in the file all the same, so the
/// sink must get it too (from the writer thread, or the drop itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_gets_records_whose_append_was_dropped_while_waiting() {
    /// Polls an append once (its record joins the open batch), then
    /// drops it; true if it was still waiting.
    fn poll_once_then_drop(log: &AuditLog, ev: &AuditEvent) -> bool {
        let mut f = std::pin::pin!(log.append(ev));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        f.as_mut().poll(&mut cx).is_pending()
    }
    use std::future::Future as _;
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&settings(d.path()), keys()).unwrap();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry());
    let sink = Arc::new(Collect {
        dispatch: Some(dispatch.clone()),
        ..Collect::default()
    });
    assert!(log.set_sink(sink.clone()));
    let mut dropped = Vec::new();
    // Dropped inside the requests' span: their records, shipped later
    // by the writer thread, must carry that span (its trace), not
    // whatever that thread has current.
    let dropper = tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!("dropped-request");
        let _in = span.enter();
        for i in 0..20 {
            let id = format!("gone{i}");
            if poll_once_then_drop(&log, &event(Kind::Intent, &id, "svc-a", "c1")) {
                dropped.push(id);
            }
        }
        span.id().map(|id| id.into_u64())
    });
    assert!(dropper.is_some());
    assert!(
        dropped.len() >= 10,
        "appends done at their first poll: {dropped:?}"
    );
    // Their batches complete (nothing is shipped by this): before the
    // freeze below, or it could fail a batch still holding some of them.
    log.flush().await.unwrap();
    // A dropped append whose batch fails is never shipped.
    let frozen = testing::freeze_dir(d.path()).expect("chattr +i must work here");
    assert!(poll_once_then_drop(
        &log,
        &event(Kind::Intent, "lost", "svc-a", "c1")
    ));
    let failed = log
        .append(&event(Kind::Intent, "lost2", "svc-a", "c1"))
        .await;
    assert!(failed.is_err(), "the frozen dir must fail the batch");
    frozen.thaw().unwrap();
    log.append(&event(Kind::Intent, "back", "svc-a", "c1"))
        .await
        .unwrap();
    log.flush().await.unwrap();
    let got = sink.got.lock().unwrap().clone();
    let shipped: Vec<&str> = got.iter().map(|g| g.2.as_str()).collect();
    for id in &dropped {
        assert!(
            shipped.contains(&id.as_str()),
            "{id} not shipped: {shipped:?}"
        );
    }
    for g in got.iter().filter(|g| dropped.contains(&g.2)) {
        assert_eq!(g.4, dropper, "{} shipped outside its request's span", g.2);
    }
    assert!(
        !shipped.iter().any(|s| s.starts_with("lost")),
        "{shipped:?}"
    );
    assert_eq!(got.len(), 21, "each record shipped once (20, and `back`)");
    let file = log_files(d.path())
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<String>();
    for g in &got {
        assert!(
            file.contains(std::str::from_utf8(&g.0).unwrap()),
            "shipped = the file's line"
        );
    }
}

#[tokio::test]
async fn restart_resumes_the_chain() {
    let d = tempfile::tempdir().unwrap();
    let s = settings(d.path());
    drop(write_n(&s, 5).await);
    let log = AuditLog::open(&s, keys()).unwrap();
    let seq = log
        .append(&event(Kind::Intent, "after", "svc-a", "c1"))
        .await
        .unwrap();
    assert_eq!(seq, 6);
    log.flush().await.unwrap();
    let r = verify_ok(d.path());
    assert_eq!(r.instances["t1"].records, 6);
    assert_eq!(r.instances["t1"].files, 1);
}

#[tokio::test]
async fn torn_last_line_is_cut_and_chain_continues() {
    let d = tempfile::tempdir().unwrap();
    let s = settings(d.path());
    drop(write_n(&s, 3).await);
    let file = log_files(d.path()).pop().unwrap();
    let good = std::fs::read(&file).unwrap();
    let mut torn = good.clone();
    torn.extend_from_slice(br#"{"v":1,"seq":4,"time":"2026-"#);
    std::fs::write(&file, &torn).unwrap();
    // Torn as found after a crash: verify must refuse it…
    assert!(verify(&[d.path().to_path_buf()], Some(CP_KEY)).is_err());
    // …and a restart cuts it and continues.
    let log = AuditLog::open(&s, keys()).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), good);
    let seq = log
        .append(&event(Kind::Intent, "next", "svc-a", "c1"))
        .await
        .unwrap();
    assert_eq!(seq, 4);
    log.flush().await.unwrap();
    assert_eq!(verify_ok(d.path()).instances["t1"].records, 4);
}

#[tokio::test]
async fn rotates_by_size_and_chain_spans_files() {
    // With fsync off, appenders write inline and leave rotation to the thread.
    for fsync in [true, false] {
        rotates_by_size(fsync).await;
    }
}

async fn rotates_by_size(fsync: bool) {
    let d = tempfile::tempdir().unwrap();
    let s = AuditSettings {
        rotate_bytes: 1500,
        fsync,
        ..settings(d.path())
    };
    drop(write_n(&s, 20).await);
    let files = log_files(d.path());
    assert!(files.len() >= 3, "{files:?}");
    assert!(files[0].ends_with("audit-t1-000001.jsonl"));
    let r = verify_ok(d.path());
    assert_eq!(r.instances["t1"].records, 20);
    assert_eq!(r.instances["t1"].files, files.len());
    // Restart continues in the newest file and the chain still verifies.
    drop(write_n(&s, 4).await);
    assert_eq!(verify_ok(d.path()).instances["t1"].records, 24);
}

#[test]
fn rotates_when_the_day_changes_and_cuts_partial_writes() {
    let d = tempfile::tempdir().unwrap();
    let s = settings(d.path());
    let c = Arc::new(Counters::default());
    let h = Arc::new(AtomicBool::new(true));
    let sync = Arc::new(SyncFaults::default());
    let mut w = Writer::resume(&s, "t1", CP_KEY.to_vec(), sync, c, h.clone()).unwrap();
    let instance = Name::new("t1").unwrap();
    // What appenders would hand over: `n` lines chained from the head.
    let lines = |w: &Writer, n: usize| {
        let (mut seq, mut head, mut buf) = (w.seq, w.head.clone(), Vec::new());
        for i in 0..n {
            let ev = event(Kind::Intent, &format!("x{i}"), "svc-a", "c1");
            let at = buf.len();
            let rec = RecordRef {
                v: record::SCHEMA_VERSION,
                seq: seq + 1,
                time: "2026-11-29T00:00:00.000Z",
                instance: &instance,
                event: &ev,
                prev: &head,
            };
            rec.write_json(&mut buf);
            head = chain::line_hash(&buf[at..]);
            seq += 1;
            buf.push(b'\n');
        }
        (buf, n, seq, head)
    };
    let (buf, n, seq, head) = lines(&w, 2);
    assert!(w.write_batch(&buf, n, seq, head, true));
    assert_eq!(w.seq, 2);
    // Pretend the file was started yesterday.
    w.file_day = w.file_day.map(|d| d - 1);
    // Simulate a half-written line from a failed write (disk full).
    let p = w.log_path();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .unwrap()
        .write_all(b"{\"v\":1,\"se")
        .unwrap();
    w.dirty = true;
    let (buf, n, seq, head) = lines(&w, 1);
    assert!(w.write_batch(&buf, n, seq, head, true));
    assert_eq!(w.seq, 3);
    assert_eq!(w.file_no, 2);
    assert!(h.load(Ordering::Relaxed));
    let w = Mutex::new(w);
    checkpoint_unlocked(&w, lock_writer(&w)).unwrap();
    let r = verify_ok(d.path());
    assert_eq!(r.instances["t1"].files, 2);
    assert_eq!(r.instances["t1"].records, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_failure_fails_the_batch_then_recovers() {
    // With fsync off the first failure is an inline write's.
    for fsync in [true, false] {
        write_failure_then_recovery(fsync).await;
    }
}

async fn write_failure_then_recovery(fsync: bool) {
    let d = tempfile::tempdir().unwrap();
    let log = write_n(
        &AuditSettings {
            fsync,
            ..settings(d.path())
        },
        3,
    )
    .await;
    assert!(log.is_healthy());

    // chattr +i: EPERM on write/truncate/create even for root. If this
    // cannot be set up, the test fails (it must not silently skip).
    let frozen = testing::freeze_dir(d.path()).expect("chattr +i must work here");
    let mut tasks = Vec::new();
    for i in 0..10 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            log.append(&event(Kind::Intent, &format!("f{i}"), "svc-a", "c1"))
                .await
        }));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Err(AuditError::Unavailable)));
    }
    assert!(!log.is_healthy());
    assert!(log.stats().failures >= 1);
    // Still failing on a later try while the disk is bad.
    assert!(
        log.append(&event(Kind::Intent, "g", "svc-a", "c1"))
            .await
            .is_err()
    );
    frozen.thaw().unwrap();

    let seq = log
        .append(&event(Kind::Intent, "back", "svc-a", "c1"))
        .await
        .unwrap();
    assert_eq!(seq, 4, "failed records must not use up seqs");
    assert!(log.is_healthy());
    log.flush().await.unwrap();
    assert_eq!(verify_ok(d.path()).instances["t1"].records, 4);
}

#[tokio::test]
async fn checkpoints_by_count_and_by_time() {
    // With fsync off the records are written inline, and the thread
    // still checkpoints by count and by time.
    for fsync in [true, false] {
        checkpoints_by_count_and_time(fsync).await;
    }
}

/// With fsync off, only the inline writer knows the count is reached:
/// its poke must get the thread to checkpoint (the timer is an hour away).
#[tokio::test]
async fn without_fsync_a_checkpoint_comes_by_count_alone() {
    let d = tempfile::tempdir().unwrap();
    let s = AuditSettings {
        checkpoint_every_records: 10,
        checkpoint_every_secs: 3600,
        fsync: false,
        ..settings(d.path())
    };
    let log = AuditLog::open(&s, keys()).unwrap();
    for i in 0..25 {
        // One at a time with the thread idle in between, so it cannot
        // happen upon the count by itself.
        wait_until_writer_idle(&log);
        log.append(&event(Kind::Intent, &format!("r{i}"), "svc-a", "c1"))
            .await
            .unwrap();
    }
    for _ in 0..100 {
        if log.stats().checkpoints >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(log.stats().checkpoints >= 1, "{:?}", log.stats());
    assert!(verify_ok(d.path()).instances["t1"].unanchored < 25);
}

async fn checkpoints_by_count_and_time(fsync: bool) {
    let d = tempfile::tempdir().unwrap();
    let s = AuditSettings {
        checkpoint_every_records: 10,
        checkpoint_every_secs: 1,
        fsync,
        ..settings(d.path())
    };
    let log = AuditLog::open(&s, keys()).unwrap();
    for i in 0..25 {
        log.append(&event(Kind::Intent, &format!("r{i}"), "svc-a", "c1"))
            .await
            .unwrap();
    }
    let settle = |want: u64| {
        let log = log.clone();
        async move {
            for _ in 0..100 {
                if log.stats().checkpoints >= want {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            log.stats()
        }
    };
    if fsync {
        // Sequential appends are separate batches: one checkpoint per 10.
        assert!(log.stats().checkpoints >= 2, "{:?}", log.stats());
    } else {
        // Inline records are checkpointed by the thread as it gets to
        // them (one checkpoint may cover more than 10).
        let st = settle(1).await;
        assert!(st.checkpoints >= 1, "{st:?}");
    }
    let before = log.stats().checkpoints;
    if fsync {
        // The remaining 5 get a checkpoint from the timer, without any call.
        let st = settle(before + 1).await;
        assert_eq!(st.checkpoints, before + 1);
    } else {
        // Once the 25 are anchored, 3 more (fewer than the count) can
        // only be anchored by the timer.
        let anchored = |dir: PathBuf| async move {
            for _ in 0..100 {
                if verify_ok(&dir).instances["t1"].unanchored == 0 {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        };
        assert!(anchored(d.path().to_path_buf()).await);
        for i in 25..28 {
            log.append(&event(Kind::Intent, &format!("r{i}"), "svc-a", "c1"))
                .await
                .unwrap();
        }
        assert_eq!(verify_ok(d.path()).instances["t1"].unanchored, 3);
        assert!(anchored(d.path().to_path_buf()).await);
    }
    let r = verify_ok(d.path());
    assert_eq!(r.instances["t1"].unanchored, 0);
}

fn wait_until_writer_idle(log: &AuditLog) {
    let shared = log.inner.shared.as_ref().unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        {
            let open = shared.lock();
            if open.writer_waiting && !open.poke {
                return;
            }
        }
        assert!(Instant::now() < until, "the writer thread never went idle");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `fsync = false`: an append is written by its own task, so it is done
/// at its first poll (no hand-off to the writer thread), and the records
/// are in the file, chained, in order, at that point.
#[tokio::test]
async fn without_fsync_appends_are_written_inline() {
    use std::future::Future as _;
    let d = tempfile::tempdir().unwrap();
    let s = AuditSettings {
        fsync: false,
        ..settings(d.path())
    };
    let log = AuditLog::open(&s, keys()).unwrap();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for i in 0..50u64 {
        // The thread takes the writer briefly when it wakes (at start,
        // after a poke); an append meeting it then rightly hands its
        // record over. Poll only once it is back waiting.
        wait_until_writer_idle(&log);
        let ev = event(Kind::Intent, &format!("r{i}"), "svc-a", "c1");
        let mut f = std::pin::pin!(log.append(&ev));
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => assert_eq!(r.unwrap(), i + 1),
            std::task::Poll::Pending => panic!("append {i} waited for the thread"),
        }
        let lines = std::fs::read_to_string(d.path().join(chain::log_file_name("t1", 1))).unwrap();
        assert_eq!(lines.lines().count() as u64, i + 1);
    }
    assert_eq!(log.stats().records, 50);
    log.flush().await.unwrap();
    assert_all_anchored(d.path(), 50);
    // With fsync on, the same append waits for the thread's batch.
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&settings(d.path()), keys()).unwrap();
    let ev = event(Kind::Intent, "f", "svc-a", "c1");
    let mut f = std::pin::pin!(log.append(&ev));
    assert!(f.as_mut().poll(&mut cx).is_pending());
    assert_eq!(f.await.unwrap(), 1);
}

#[tokio::test]
async fn disabled_log_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let s = AuditSettings {
        enabled: false,
        dir: d.path().join("never"),
        ..settings(d.path())
    };
    let log = AuditLog::open(&s, AuditKeys::default()).unwrap();
    assert_eq!(
        log.append(&event(Kind::Intent, "r", "svc-a", "c1"))
            .await
            .unwrap(),
        0
    );
    assert!(!d.path().join("never").exists());
}

#[tokio::test]
async fn empty_checkpoint_key_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let k = AuditKeys {
        checkpoint_key: Vec::new(),
        ..keys()
    };
    assert!(matches!(
        AuditLog::open(&settings(d.path()), k),
        Err(AuditError::Settings(_))
    ));
}

#[tokio::test]
async fn canary_values_never_reach_the_files() {
    const CANARY: &str = "Canary-Jane-Doe-4242@example.org";
    const KEY: &str = "test_CANARYKEY0123456789abcdef";
    let d = tempfile::tempdir().unwrap();
    let s = AuditSettings {
        hmac_fields: vec!["/email".into(), "/missing".into()],
        ..settings(d.path())
    };
    let log = AuditLog::open(&s, keys()).unwrap();
    let body = serde_json::json!({"email": CANARY, "type": "person"});
    let mut ev = event(Kind::Intent, "r1", "svc-a", "c1");
    ev.key_fingerprint = Some(log.fingerprint(KEY));
    let values = log.field_values(&body);
    assert_eq!(values.len(), 1, "only the present configured field");
    ev.field_hmacs = log.field_hmacs(values);
    assert_eq!(ev.field_hmacs.len(), 1);
    // The body value cannot be smuggled in through any typed field.
    assert!(Name::new(CANARY).is_err());
    assert!(Pointer::new(format!("/{CANARY}")).is_err());
    assert!(super::super::ResourceId::new(CANARY).is_err());
    log.append(&ev).await.unwrap();
    log.append(&ev.clone().into_outcome(200, 5)).await.unwrap();
    log.flush().await.unwrap();
    for e in std::fs::read_dir(d.path()).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        assert!(!text.contains(CANARY));
        assert!(!text.contains("CANARYKEY"));
        assert!(!text.contains(KEY));
    }
    // Same value -> same HMAC (answers "was it used twice?").
    let again = log.field_hmacs(log.field_values(&body));
    assert_eq!(again, ev.field_hmacs);
    // A number is hashed as its JSON text, keyed.
    let n = log.field_hmacs(log.field_values(&serde_json::json!({"email": 42})));
    assert_eq!(
        n.values().next(),
        Some(&record::field_digest_keyed(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"field-key"),
            b"42"
        ))
    );
    let dbg = format!("{log:?}");
    assert!(!dbg.contains("fp-key") && !dbg.contains("field-key"));
}

#[tokio::test]
async fn failed_checkpoints_back_off_instead_of_spinning() {
    let d = tempfile::tempdir().unwrap();
    let s = AuditSettings {
        checkpoint_every_secs: 1,
        ..settings(d.path())
    };
    let log = AuditLog::open(&s, keys()).unwrap();
    log.append(&event(Kind::Intent, "r", "svc-a", "c1"))
        .await
        .unwrap();
    let frozen = testing::freeze_dir(d.path()).unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let failures = log.stats().failures;
    frozen.thaw().unwrap();
    // Due after 1 s, then retried about once a second: a handful, not
    // thousands.
    assert!((1..=6).contains(&failures), "{failures}");
    assert!(!log.is_healthy());
    log.flush().await.unwrap();
    assert_eq!(verify_ok(d.path()).instances["t1"].unanchored, 0);
}

/// With fsync off, records are written inline and every write past the
/// checkpoint count asks for a checkpoint: a checkpoint file that cannot
/// be written must still be retried about once a second, not at the
/// request rate.
#[tokio::test]
async fn failing_checkpoints_are_not_retried_per_inline_write() {
    let d = tempfile::tempdir().unwrap();
    let s = AuditSettings {
        fsync: false,
        checkpoint_every_records: 2,
        ..settings(d.path())
    };
    let log = AuditLog::open(&s, keys()).unwrap();
    let cp = d.path().join(chain::checkpoint_file_name("t1"));
    let frozen = testing::freeze_file(&cp).expect("chattr +i must work here");
    let started = Instant::now();
    for i in 0..400 {
        log.append(&event(Kind::Intent, &format!("r{i}"), "svc-a", "c1"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let failures = log.stats().failures;
    // The log's syncs before those checkpoints succeeded: what they
    // covered is no longer kept in memory.
    let kept = log
        .inner
        .shared
        .as_ref()
        .unwrap()
        .writer()
        .unsynced_tail
        .len();
    let written = std::fs::metadata(&log_files(d.path())[0]).unwrap().len();
    assert!(
        (kept as u64) < written,
        "{kept} of {written} bytes still kept"
    );
    frozen.thaw().unwrap();
    // The first failure, then one retry per second at most.
    assert!(
        failures >= 1 && failures as f64 <= secs + 3.0,
        "{failures} failures in {secs:.1} s"
    );
    assert_eq!(log.stats().records, 400, "the log itself kept working");
    log.flush().await.unwrap();
    assert_eq!(verify_ok(d.path()).instances["t1"].unanchored, 0);
}

/// Settings for the failed-sync tests: no fsync, and no checkpoint but
/// the ones a test asks for with `flush`.
fn no_fsync_manual_checkpoints(dir: &Path) -> AuditSettings {
    AuditSettings {
        fsync: false,
        checkpoint_every_records: 1_000_000,
        checkpoint_every_secs: 3600,
        ..settings(dir)
    }
}

/// Opens a log for the failed-sync tests: a failed checkpoint is not
/// retried by the thread on its own (an hour away), so what a test sees
/// is what its own appends and flushes did.
fn open_without_retries(s: &AuditSettings) -> (AuditLog, SyncFaults) {
    let faults = SyncFaults::default();
    let log = AuditLog::open_with(s, keys(), Arc::new(faults.clone())).unwrap();
    log.inner.shared.as_ref().unwrap().writer().cp_retry = Duration::from_secs(3600);
    (log, faults)
}

fn file_has_lost_bytes(dir: &Path) -> bool {
    log_files(dir)
        .iter()
        .any(|f| std::fs::read(f).unwrap().contains(&0u8))
}

async fn append_n(log: &AuditLog, from: usize, to: usize) {
    for i in from..to {
        log.append(&event(Kind::Intent, &format!("r{i}"), "svc-a", "c1"))
            .await
            .unwrap();
    }
}

/// A log (fsync off, manual checkpoints) with `synced` records
/// checkpointed, `total - synced` more written, and a flush whose sync
/// failed (`failures` injected failures: that one and the next ones).
async fn after_a_failed_flush(
    dir: &Path,
    synced: usize,
    total: usize,
    failures: u32,
) -> (AuditLog, SyncFaults) {
    let (log, faults) = open_without_retries(&no_fsync_manual_checkpoints(dir));
    append_n(&log, 0, synced).await;
    log.flush().await.unwrap();
    append_n(&log, synced, total).await;
    faults.fail_next(failures);
    assert!(matches!(log.flush().await, Err(AuditError::Unavailable)));
    (log, faults)
}

/// The chain verifies, holds `records`, and a checkpoint covers them all.
fn assert_all_anchored(dir: &Path, records: u64) {
    let r = verify_ok(dir);
    assert_eq!(r.instances["t1"].records, records);
    assert_eq!(r.instances["t1"].unanchored, 0);
}

/// With fsync off, a failed `fdatasync` before a checkpoint: the records
/// since the last good sync may be lost although a later sync succeeds.
/// The injected failure overwrites them on disk (as a power loss may);
/// the writer must write them again from memory before anything else,
/// so the next checkpoint anchors what is really in the file.
#[tokio::test]
async fn without_fsync_a_failed_sync_writes_the_unsynced_records_again() {
    let d = tempfile::tempdir().unwrap();
    let (log, _) = after_a_failed_flush(d.path(), 3, 8, 1).await;
    assert!(!log.is_healthy());
    assert!(
        file_has_lost_bytes(d.path()),
        "the injected loss is in the file"
    );

    let seq = log
        .append(&event(Kind::Intent, "after", "svc-a", "c1"))
        .await
        .unwrap();
    assert_eq!(seq, 9);
    assert!(log.is_healthy());
    assert!(log.stats().rewritten_bytes > 0);
    log.flush().await.unwrap();
    assert_all_anchored(d.path(), 9);
    assert_eq!(log.stats().checkpoints, 2);
}

/// When the rewrite's own sync fails too, appends are refused (nothing
/// is acknowledged on a log whose tail is not durable) until the disk
/// is back; then the rewrite succeeds and the chain goes on unbroken.
#[tokio::test]
async fn without_fsync_a_failing_rewrite_refuses_appends_until_it_succeeds() {
    let d = tempfile::tempdir().unwrap();
    let (log, _) = after_a_failed_flush(d.path(), 2, 6, 2).await;
    assert!(matches!(
        log.append(&event(Kind::Intent, "refused", "svc-a", "c1"))
            .await,
        Err(AuditError::Unavailable)
    ));
    assert!(!log.is_healthy());

    let seq = log
        .append(&event(Kind::Intent, "back", "svc-a", "c1"))
        .await
        .unwrap();
    assert_eq!(seq, 7, "the refused record used no seq");
    log.flush().await.unwrap();
    assert_all_anchored(d.path(), 7);
}

/// Rotation syncs the old file first; when that sync fails, the file is
/// not left behind with records a later sync only pretends to cover.
#[tokio::test]
async fn without_fsync_a_failed_sync_before_rotation_writes_the_old_file_again() {
    let d = tempfile::tempdir().unwrap();
    let s = AuditSettings {
        rotate_bytes: 2_000,
        rotate_daily: false,
        ..no_fsync_manual_checkpoints(d.path())
    };
    let (log, faults) = open_without_retries(&s);
    append_n(&log, 0, 1).await;
    log.flush().await.unwrap();
    // Past rotate_bytes: the next batch goes to the thread, which syncs
    // the old file before rotating.
    append_n(&log, 1, 6).await;
    faults.fail_next(1);
    append_n(&log, 6, 12).await;
    log.flush().await.unwrap();
    assert!(log_files(d.path()).len() >= 2, "rotated");
    assert!(log.stats().failures >= 1, "the injected failure happened");
    assert!(
        log.stats().rewritten_bytes > 0,
        "the old file was written again"
    );
    assert_all_anchored(d.path(), 12);
}

/// A checkpoint asked for right after a failed one, with no append in
/// between, rewrites the records before it anchors them.
#[tokio::test]
async fn without_fsync_a_checkpoint_after_a_failed_one_rewrites_first() {
    let d = tempfile::tempdir().unwrap();
    let (log, _) = after_a_failed_flush(d.path(), 2, 7, 1).await;
    assert!(file_has_lost_bytes(d.path()));
    log.flush().await.unwrap();
    assert!(!file_has_lost_bytes(d.path()));
    assert_all_anchored(d.path(), 7);
}

/// Closing after a failed checkpoint: the final checkpoint rewrites
/// first, and gets one more try when the rewrite's own sync fails.
#[tokio::test]
async fn without_fsync_closing_after_a_failed_sync_leaves_a_verified_log() {
    let d = tempfile::tempdir().unwrap();
    // The flush's sync, then the rewrite's sync in the final checkpoint.
    let (log, _) = after_a_failed_flush(d.path(), 2, 6, 2).await;
    drop(log);
    let cp = d.path().join(chain::checkpoint_file_name("t1"));
    for _ in 0..100 {
        if std::fs::read(&cp)
            .unwrap()
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            >= 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!file_has_lost_bytes(d.path()));
    assert_all_anchored(d.path(), 6);
}

/// At start-up with fsync off, the records after the last checkpoint
/// (an earlier run may have met a failed sync, or died before its next
/// one) are written again before the first checkpoint anchors them.
#[tokio::test]
async fn without_fsync_start_up_writes_the_unanchored_records_again() {
    let d = tempfile::tempdir().unwrap();
    let s = no_fsync_manual_checkpoints(d.path());
    let log = AuditLog::open(&s, keys()).unwrap();
    append_n(&log, 0, 3).await;
    log.flush().await.unwrap();
    append_n(&log, 3, 8).await;
    // A crash: no final checkpoint (the thread is left idle).
    std::mem::forget(log);
    let file = log_files(d.path()).pop().unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let third_end = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(2)
        .unwrap()
        .0
        + 1;

    let (log, _) = open_without_retries(&s);
    assert_eq!(
        log.stats().rewritten_bytes,
        (bytes.len() - third_end) as u64,
        "exactly the records after the checkpoint were written again"
    );
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    log.flush().await.unwrap();
    assert!(!file_has_lost_bytes(d.path()));
    assert_all_anchored(d.path(), 8);
}

#[test]
fn line_end_of_seq_finds_the_anchored_prefix() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    let lines: Vec<String> = (1..=5).map(|i| format!("{{\"seq\":{i}}}\n")).collect();
    std::fs::write(&p, lines.concat()).unwrap();
    let f = File::open(&p).unwrap();
    let len = f.metadata().unwrap().len();
    let end = |n: usize| lines[..n].iter().map(String::len).sum::<usize>() as u64;
    for seq in 0..=6u64 {
        let want = end(usize::try_from(seq.min(5)).unwrap());
        assert_eq!(line_end_of_seq(&f, seq, len).unwrap(), want, "seq {seq}");
    }
    // A long file read in several chunks, with an unreadable line.
    let mut big = String::new();
    for i in 1..=3000u64 {
        big.push_str(&format!("{{\"seq\":{i},\"pad\":\"{}\"}}\n", "p".repeat(60)));
    }
    let cut = big.len();
    big.push_str("not json\n");
    std::fs::write(&p, &big).unwrap();
    let f = File::open(&p).unwrap();
    let len = f.metadata().unwrap().len();
    assert_eq!(line_end_of_seq(&f, 3000, len).unwrap(), cut as u64);
    let at_10 = big.match_indices('\n').nth(9).unwrap().0 as u64 + 1;
    assert_eq!(line_end_of_seq(&f, 10, len).unwrap(), at_10);
    assert_eq!(line_end_of_seq(&f, 0, 0).unwrap(), 0);
}

/// With or without fsync: when the directory entry of a new file
/// cannot be made durable, the gateway keeps writing the old file (its
/// acknowledged records would vanish with the entry on a power loss)
/// and rotates on a later batch.
#[tokio::test]
async fn a_failed_directory_sync_keeps_the_old_file_until_it_works() {
    for fsync in [true, false] {
        let d = tempfile::tempdir().unwrap();
        let s = AuditSettings {
            fsync,
            rotate_bytes: 2_000,
            rotate_daily: false,
            ..no_fsync_manual_checkpoints(d.path())
        };
        let (log, faults) = open_without_retries(&s);
        let mut n = 0;
        while std::fs::metadata(&log_files(d.path())[0]).unwrap().len() < 2_000 {
            append_n(&log, n, n + 1).await;
            n += 1;
        }
        faults.fail_next_dir_sync(1);
        append_n(&log, n, n + 1).await;
        assert_eq!(log_files(d.path()).len(), 1, "fsync {fsync}: not rotated");
        assert!(log.stats().failures >= 1);
        // Not retried on every batch: after a pause.
        append_n(&log, n + 1, n + 2).await;
        assert_eq!(
            log_files(d.path()).len(),
            1,
            "fsync {fsync}: retried at once"
        );
        // The pause over, with an empty leftover of the failed attempt
        // in the way (as when its removal failed too): it is adopted.
        let second = d.path().join(chain::log_file_name("t1", 2));
        std::fs::write(&second, b"").unwrap();
        log.inner.shared.as_ref().unwrap().writer().rotate_retry_at = Some(Instant::now());
        append_n(&log, n + 2, n + 3).await;
        assert_eq!(log_files(d.path()).len(), 2);
        let in_second = std::fs::read(&second).unwrap();
        assert!(
            in_second.ends_with(b"\n"),
            "fsync {fsync}: rotated on retry"
        );
        log.flush().await.unwrap();
        assert_all_anchored(d.path(), n as u64 + 3);
    }
}

/// The in-memory copy of unsynced bytes stays bounded: past
/// `UNSYNCED_TAIL_CAP` a checkpoint comes whatever the record count.
#[tokio::test]
async fn without_fsync_unsynced_bytes_bring_a_checkpoint() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&no_fsync_manual_checkpoints(d.path()), keys()).unwrap();
    let mut n = 0;
    while std::fs::metadata(&log_files(d.path())[0]).unwrap().len() < 2 * UNSYNCED_TAIL_CAP as u64 {
        append_n(&log, n, n + 500).await;
        n += 500;
    }
    for _ in 0..100 {
        if log.stats().checkpoints >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(log.stats().checkpoints >= 1, "{:?}", log.stats());
    let tail = log
        .inner
        .shared
        .as_ref()
        .unwrap()
        .writer()
        .unsynced_tail
        .len();
    assert!(tail < 2 * UNSYNCED_TAIL_CAP, "{tail} bytes kept");
}

/// Prints append latency and the group-commit factor, with and without
/// fsync (`cargo test --lib audit::writer::tests::measure -- --nocapture`).
/// It asserts nothing about timing, so it passes on any machine: only that
/// each wave's appends are all counted, in batches, without failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_append_latency_and_group_commit() {
    for fsync in [true, false] {
        let d = tempfile::tempdir().unwrap();
        let s = AuditSettings {
            fsync,
            ..settings(d.path())
        };
        let log = AuditLog::open(&s, keys()).unwrap();
        let mut lat = Vec::new();
        for i in 0..500 {
            let t = Instant::now();
            log.append(&event(Kind::Intent, &format!("r{i}"), "svc-a", "c1"))
                .await
                .unwrap();
            lat.push(t.elapsed());
        }
        lat.sort();
        println!(
            "fsync={fsync} sequential: p50 {:?} p99 {:?}",
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100]
        );
        for conc in [8usize, 64, 256] {
            let before = log.stats();
            let t = Instant::now();
            let mut tasks = Vec::new();
            for i in 0..conc * 10 {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    let t = Instant::now();
                    log.append(&event(Kind::Intent, &format!("c{i}"), "svc-a", "c1"))
                        .await
                        .unwrap();
                    t.elapsed()
                }));
                if tasks.len() == conc {
                    // keep at most `conc` in flight
                    let mut l = Vec::new();
                    for t in tasks.drain(..) {
                        l.push(t.await.unwrap());
                    }
                    lat.extend(l);
                }
            }
            let after = log.stats();
            let recs = after.records - before.records;
            let batches = after.batches - before.batches;
            assert_eq!(recs, conc as u64 * 10, "fsync {fsync}, waves of {conc}");
            assert!((1..=recs).contains(&batches), "{batches} batches");
            assert_eq!(after.failures, 0);
            println!(
                "fsync={fsync} waves of {conc}: {recs} records in {batches} batches ({:.1} per write+fsync), {:?} total",
                recs as f64 / batches as f64,
                t.elapsed()
            );
        }
    }
}
