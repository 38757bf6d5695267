//! Tests of the record schema: the hand-written line equals serde's, and
//! the newtypes refuse what they must.

use super::*;

#[test]
fn record_ref_writes_exactly_what_record_reads() {
    let mut ev = super::super::test_util::event(Kind::Intent, "r1", "svc-a", "5f0a");
    ev.status = Some(200);
    ev.field_hmacs.insert(
        Pointer::new("/email").unwrap(),
        Digest::try_from("ab".repeat(32)).unwrap(),
    );
    let instance = Name::new("gw-1").unwrap();
    let owned = Record {
        v: SCHEMA_VERSION,
        seq: 7,
        time: "2026-11-29T20:00:00.123Z".into(),
        instance: instance.clone(),
        event: ev.clone(),
        prev: "00".repeat(32),
    };
    let borrowed = RecordRef {
        v: SCHEMA_VERSION,
        seq: 7,
        time: &owned.time,
        instance: &instance,
        event: &ev,
        prev: &owned.prev,
    };
    let line = serde_json::to_vec(&borrowed).unwrap();
    assert_eq!(line, serde_json::to_vec(&owned).unwrap());
    assert_eq!(serde_json::from_slice::<Record>(&line).unwrap(), owned);
}

/// Every shape an event can take (each optional part on and off, every
/// kind, decision and environment), plus `time`/`prev` texts that need
/// escaping: the hand-written line equals serde's, and reads back.
#[test]
fn write_json_is_byte_for_byte_serdes_line() {
    let decisions = [
        Decision::Allowed,
        Decision::RefusedAuth,
        Decision::RefusedForbidden,
        Decision::RefusedRoute,
        Decision::RefusedBody,
        Decision::RefusedPolicy,
        Decision::RefusedValidation,
        Decision::RefusedRateLimit,
        Decision::RefusedAudit,
    ];
    let kinds = [Kind::Intent, Kind::Outcome, Kind::Event];
    let instance = Name::new("gw-1:a.b_c").unwrap();
    let mut checked = 0;
    for shape in 0u32..128 {
        for (i, &decision) in decisions.iter().enumerate() {
            let on = |bit: u32| shape & (1 << bit) != 0;
            let mut ev = AuditEvent::new(
                kinds[i % 3],
                RequestId::new(format!("req-{shape}-{i}")).unwrap(),
                decision,
            );
            if on(0) {
                ev.trace_id = Some(RequestId::new("4bf92f3577b34da6a3ce929d0e0e4736").unwrap());
                ev.caller = Some(Name::new("svc-a").unwrap());
                ev.environment = Some(Environment::Live);
            }
            if on(1) {
                ev.tenant = Some(Name::new("acme").unwrap());
                ev.operation = Some(Name::new("clients.update").unwrap());
                ev.environment = Some(Environment::Test);
            }
            if on(2) {
                for (k, v) in [("id", "5f3b1c2d9e8a7b6c5d4e3f2a"), ("documentId", "d-1")] {
                    ev.resource_ids
                        .insert(Name::new(k).unwrap(), ResourceId::new(v).unwrap());
                }
                ev.query_params = vec![Name::new("page").unwrap(), Name::new("metadata").unwrap()];
            }
            if on(3) {
                ev.fields = ["/email", "/personDetails/dob", "/a~1b", "/items/0"]
                    .iter()
                    .map(|p| Pointer::new(*p).unwrap())
                    .collect();
                ev.stripped = vec![Pointer::new("/type").unwrap()];
                ev.reason = Some(Name::new("invalid_request").unwrap());
            }
            if on(4) {
                ev.status = Some(if i % 2 == 0 { 200 } else { 503 });
                ev.latency_ms = Some(u64::from(shape) * 1_000_003);
                ev.key_fingerprint = Some(fingerprint(b"k", "test_key"));
            }
            if on(5) {
                for f in ["/email", "/mobile"] {
                    ev.field_hmacs
                        .insert(Pointer::new(f).unwrap(), field_digest(b"k", f.as_bytes()));
                }
            }
            if on(6) {
                ev.caller_request_id = Some(RequestId::new("caller-rid-1").unwrap());
                ev.fields_total = Some(70_000);
                ev.fields_depth = Some(5);
                ev.truncated = true;
                ev.suppressed = Some(159);
            }
            let (time, prev) = if i == 0 {
                // Not produced by the writer, but must still come out as serde writes it.
                ("t\"\\\n\u{1}é".to_string(), "p\t".to_string())
            } else {
                ("2026-11-29T20:00:00.123Z".to_string(), "0a".repeat(32))
            };
            let rec = RecordRef {
                v: SCHEMA_VERSION,
                seq: u64::from(shape) * 7919 + i as u64,
                time: &time,
                instance: &instance,
                event: &ev,
                prev: &prev,
            };
            let mut ours = b"previous bytes stay".to_vec();
            rec.write_json(&mut ours);
            let serde = serde_json::to_vec(&rec).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&ours[19..]),
                String::from_utf8_lossy(&serde),
                "shape {shape}, decision {decision:?}"
            );
            assert_eq!(&ours[..19], b"previous bytes stay");
            let back: Record = serde_json::from_slice(&ours[19..]).unwrap();
            assert_eq!(back.event, ev);
            checked += 1;
        }
    }
    assert_eq!(checked, 128 * 9);
}

/// The one-pass pointer check accepts exactly what the rule (written the
/// obvious way here) accepts, over every string of up to 4 chars from an
/// alphabet with the interesting characters, and some long ones.
#[test]
fn pointer_check_matches_the_rule() {
    fn by_the_rule(s: &str) -> bool {
        s.len() <= 256
            && s.starts_with('/')
            && s[1..].split('/').all(|seg| {
                seg == "*"
                    || !seg.is_empty()
                        && seg.len() <= 64
                        && seg
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '~'))
                        && seg
                            .match_indices('~')
                            .all(|(i, _)| matches!(seg.as_bytes().get(i + 1), Some(b'0' | b'1')))
            })
    }
    let alphabet = [
        '/', 'a', 'Z', '0', '1', '2', '~', '_', '-', '.', ' ', '@', 'é', '*',
    ];
    let mut cases: Vec<String> = vec![String::new()];
    let mut frontier = cases.clone();
    for _ in 0..4 {
        let mut next = Vec::new();
        for p in &frontier {
            for c in alphabet {
                next.push(format!("{p}{c}"));
            }
        }
        cases.extend(next.iter().cloned());
        frontier = next;
    }
    for n in [63, 64, 65] {
        cases.push(format!("/{}", "a".repeat(n)));
        cases.push(format!("/x/{}~0", "b".repeat(n - 2)));
    }
    for n in [255, 256, 257] {
        cases.push(format!("/{}", "ab/".repeat(n / 3 + 1))[..n].to_string());
    }
    let mut accepted = 0;
    for c in &cases {
        assert_eq!(pointer_ok(c.as_bytes()), by_the_rule(c), "{c:?}");
        accepted += usize::from(by_the_rule(c));
    }
    assert!(accepted > 100, "{accepted}");
}

#[test]
fn names_refuse_free_text_without_echoing_it() {
    for bad in ["john@example.com", "John Smith", "", "a/b", "x\n", "é"] {
        let e = Name::new(bad).unwrap_err();
        assert!(bad.is_empty() || !e.to_string().contains(bad));
    }
    assert!(Name::new("clients.update").is_ok());
    assert!(Name::new("a".repeat(65)).is_err());
}

#[test]
fn pointers_accept_field_paths_only() {
    for ok in [
        "/email",
        "/address/line",
        "/personDetails/dob",
        "/a~1b",
        "/items/0",
    ] {
        assert!(Pointer::new(ok).is_ok(), "{ok}");
    }
    for bad in [
        "email",
        "/",
        "/john@example.com",
        "/a b",
        "/a//b",
        "/a~2",
        "/x~",
    ] {
        assert!(Pointer::new(bad).is_err(), "{bad}");
    }
}

#[test]
fn ids_refuse_dots_and_at() {
    assert!(ResourceId::new("5f3b1c2d9e8a7b6c5d4e3f2a").is_ok());
    assert!(ResourceId::new("../x").is_err());
    assert!(ResourceId::new("a@b").is_err());
}

#[test]
fn fingerprint_is_keyed_and_hides_the_key() {
    let upstream = "live_abcdefghijklmnopqrstuvwxyz0123456789";
    let a = key_fingerprint(b"k1", upstream);
    let b = key_fingerprint(b"k2", upstream);
    assert_eq!(a.len(), 16);
    assert_ne!(a, b);
    assert!(!a.contains("live_"));
    assert!(!upstream.contains(&a));
    assert_eq!(a, key_fingerprint(b"k1", upstream));
    // Known answer: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
    assert_eq!(
        field_hmac(b"key", b"The quick brown fox jumps over the lazy dog"),
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    );
    // The fingerprint is its first 16 hex chars, through the prepared key.
    assert_eq!(
        key_fingerprint(b"key", "The quick brown fox jumps over the lazy dog"),
        "f7bc83f430538424"
    );
    let k = hmac::Key::new(hmac::HMAC_SHA256, b"key");
    assert_eq!(
        field_digest_keyed(&k, b"The quick brown fox jumps over the lazy dog").as_str(),
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    );
}

#[test]
fn a_config_environment_keeps_its_name_in_the_record() {
    for (e, name) in [(Environment::Live, "live"), (Environment::Test, "test")] {
        let quoted = format!("\"{name}\"");
        assert_eq!(serde_json::from_str::<Environment>(&quoted).unwrap(), e);
        assert_eq!(serde_json::to_string(&e).unwrap(), quoted);
        assert_eq!(e.as_str(), name);
    }
}

#[test]
fn digests_from_files_must_be_hex() {
    assert!(Digest::try_from("zz".to_string()).is_err());
    assert!(Fingerprint::try_from("0123456789abcdef".to_string()).is_ok());
    assert!(Fingerprint::try_from("0123456789ABCDEF".to_string()).is_err());
}

#[test]
fn record_round_trips_and_rejects_smuggled_values() {
    let mut ev = AuditEvent::new(
        Kind::Intent,
        RequestId::new("req-1").unwrap(),
        Decision::Allowed,
    );
    ev.fields.push(Pointer::new("/email").unwrap());
    let rec = Record {
        v: 1,
        seq: 1,
        time: "2026-01-01T00:00:00.000Z".into(),
        instance: Name::new("i1").unwrap(),
        event: ev,
        prev: "00".into(),
    };
    let line = serde_json::to_string(&rec).unwrap();
    let back: Record = serde_json::from_str(&line).unwrap();
    assert_eq!(back, rec);
    let smuggled = line.replace("\"/email\"", "\"john@example.com\"");
    assert!(serde_json::from_str::<Record>(&smuggled).is_err());
}

/// A record of any size is cut to the bound: fields first, the identity
/// kept, `truncated` set, and the line still reads back as a record.
#[test]
fn fit_cuts_to_the_bound_deterministically() {
    let mut ev = super::super::test_util::event(Kind::Event, "r1", "svc-a", "5f0a");
    ev.fields = (0..5000)
        .map(|i| Pointer::new(format!("/zz/k{i}")).unwrap())
        .collect();
    ev.stripped = (0..50)
        .map(|i| Pointer::new(format!("/s{i}")).unwrap())
        .collect();
    let mut again = ev.clone();
    assert!(ev.fit(4096));
    again.fit(4096);
    assert_eq!(ev, again, "the same event is cut the same way");
    assert!(ev.truncated);
    assert_eq!(ev.fields_total, Some(5000));
    assert_eq!(ev.stripped.len(), 50, "fields go first");
    assert_eq!(ev.fields[0].as_str(), "/zz/k0", "the first pointers stay");
    let instance = Name::new("i".repeat(64)).unwrap();
    let prev = "0".repeat(64);
    let rec = RecordRef {
        v: SCHEMA_VERSION,
        seq: u64::MAX,
        time: "2026-11-29T20:00:00.123Z",
        instance: &instance,
        event: &ev,
        prev: &prev,
    };
    let mut line = Vec::new();
    rec.write_json(&mut line);
    assert!(line.len() <= 4096, "{}", line.len());
    assert!(
        line.len() > 3500,
        "the budget is used, not wasted: {}",
        line.len()
    );
    let back: Record = serde_json::from_slice(&line).unwrap();
    assert_eq!(back.event, ev);
    // A record already under the bound is left alone.
    let mut small = super::super::test_util::event(Kind::Event, "r2", "svc-a", "5f0a");
    let before = small.clone();
    assert!(!small.fit(1024));
    assert_eq!(small, before);
}
