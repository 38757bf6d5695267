//! The audit record's cost on the request path, in-process: building the
//! line (hand-written `RecordRef::write_json` against serde's derive, the
//! same bytes), and a whole `AuditLog::append` with `fsync = false`, which
//! the appending task completes itself (serialise, chain hash, `write`
//! to the file in a temp dir; no writer-thread hand-off to time).
//!
//! Run: `cargo bench --bench audit -- --warm-up-time 1 --measurement-time 3`

// Set-up code: a failure here is a broken bench, not a request path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use cubegate::audit::{
    AuditEvent, Decision, Environment, Kind, Name, Pointer, RecordRef, RequestId, ResourceId,
    SCHEMA_VERSION, fingerprint,
};

#[path = "support/mod.rs"]
mod support;

/// A `clients.update` intent as the pipeline builds it for the bench body
/// of `bench/run.sh` (its 14 field pointers, `type` stripped).
fn clients_update_intent(i: u64) -> AuditEvent {
    let mut ev = AuditEvent::new(
        Kind::Intent,
        RequestId::new(format!("0f3c9a1e7b2d4c5a8e6f{i:012}")).unwrap(),
        Decision::Allowed,
    );
    ev.trace_id = Some(RequestId::new("4bf92f3577b34da6a3ce929d0e0e4736").unwrap());
    ev.caller = Some(Name::new("bench-caller").unwrap());
    ev.tenant = Some(Name::new("bench").unwrap());
    ev.environment = Some(Environment::Test);
    ev.operation = Some(Name::new("clients.update").unwrap());
    ev.resource_ids.insert(
        Name::new("id").unwrap(),
        ResourceId::new("5f3b1c2d9e8a7b6c5d4e3f2a").unwrap(),
    );
    ev.fields = [
        "/type",
        "/email",
        "/mobile",
        "/telephone",
        "/joinedDate",
        "/personDetails",
        "/personDetails/firstName",
        "/personDetails/middleName",
        "/personDetails/lastName",
        "/personDetails/dob",
        "/personDetails/nationality",
        "/personDetails/birthCountry",
        "/personDetails/gender",
        "/personDetails/nationalIdentityNumber",
    ]
    .iter()
    .map(|p| Pointer::new(*p).unwrap())
    .collect();
    ev.stripped = vec![Pointer::new("/type").unwrap()];
    ev.key_fingerprint = Some(fingerprint(
        b"fingerprint-key",
        "test_bench0123456789abcdef",
    ));
    ev
}

fn benches(c: &mut Criterion) {
    let ev = clients_update_intent(1);
    let instance = Name::new("bench").unwrap();
    let prev = "0a".repeat(32);
    let rec = RecordRef {
        v: SCHEMA_VERSION,
        seq: 123_456,
        time: "2026-11-30T02:00:00.123Z",
        instance: &instance,
        event: &ev,
        prev: &prev,
    };
    let mut ours = Vec::new();
    rec.write_json(&mut ours);
    assert_eq!(ours, serde_json::to_vec(&rec).unwrap(), "the same bytes");

    let mut g = c.benchmark_group("audit record clients.update");
    let mut buf = Vec::with_capacity(2048);
    g.bench_function("line: RecordRef::write_json", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&rec).write_json(&mut buf);
            black_box(buf.len())
        })
    });
    g.bench_function("line: serde_json::to_writer (derive)", |b| {
        b.iter(|| {
            buf.clear();
            serde_json::to_writer(&mut buf, black_box(&rec)).map(|()| buf.len())
        })
    });

    let rt = support::current_thread();
    g.bench_function("AuditLog::append, fsync off (write inline)", |b| {
        // A fresh log per sample, deleted after it: a run appends hundreds
        // of MB otherwise. Only the appends are timed.
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let log = support::audit_log(dir.path(), false);
            let started = std::time::Instant::now();
            for _ in 0..iters {
                rt.block_on(log.append(black_box(&ev))).unwrap();
            }
            started.elapsed()
        })
    });
    g.finish();
}

criterion_group!(name = group; config = Criterion::default(); targets = benches);
criterion_main!(group);
