//! Speed of the `read body` + `policy` stages against plain serde_json.
//!
//! Two bodies: a typical ~300-byte `clients.update` and a 5 MB image upload
//! (`{"fileName":"a.png","data":"<base64>"}`). For each: the whole stage work
//! (`parse_strict` + `apply` + `to_vec`), `parse_strict` alone, and the
//! `serde_json::from_slice` baseline (which does none of the strict checks).
//!
//! Run: `cargo bench --bench body -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cubegate::pipeline::body::{DEFAULT_MAX_DEPTH, parse_strict};
use cubegate::pipeline::policy::{apply, builtin_rules};
use serde_json::Value;

const CLIENTS_UPDATE: &[u8] = br#"{"type":"person","email":"john.doe@example.com","mobile":"+447700900123","telephone":"+442079460000","joinedDate":"2024-03-01","personDetails":{"firstName":"John","middleName":"Quincy","lastName":"Doe","dob":"1990-01-31","nationality":"GB","birthCountry":"GB","gender":"male","nin":"QQ123456C"}}"#;

/// Deterministic base64 text of `len` bytes (content does not matter to a
/// JSON parser, only the alphabet does).
fn upload_body(len: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state: u32 = 0x2545_F491;
    let mut body = br#"{"fileName":"a.png","data":""#.to_vec();
    body.extend((0..len).map(|_| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        ALPHABET[(state % 64) as usize]
    }));
    body.extend_from_slice(b"==\"}");
    body
}

fn bench_body(c: &mut Criterion, name: &str, body: &[u8]) {
    let rules = builtin_rules("clients.update");
    // Checked once up front so the timed closures can return the Results
    // as-is (no unwrap) while still timing the success path.
    assert!(serde_json::from_slice::<Value>(body).is_ok());
    assert!(parse_strict(body, DEFAULT_MAX_DEPTH).is_ok_and(|mut v| apply(&mut v, &rules).is_ok()));
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("parse_strict+apply+to_vec", |b| {
        b.iter(|| {
            parse_strict(black_box(body), DEFAULT_MAX_DEPTH).map(|mut value| {
                let outcome = apply(&mut value, &rules);
                (serde_json::to_vec(&value).ok(), outcome.ok())
            })
        })
    });
    group.bench_function("parse_strict", |b| {
        b.iter(|| parse_strict(black_box(body), DEFAULT_MAX_DEPTH))
    });
    group.bench_function("serde_json::from_slice", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(body)))
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    assert!((250..400).contains(&CLIENTS_UPDATE.len()));
    bench_body(c, "clients.update ~300B", CLIENTS_UPDATE);
    let upload = upload_body(5 * 1024 * 1024);
    bench_body(c, "upload 5MB", &upload);
}

criterion_group!(body, benches);
criterion_main!(body);
