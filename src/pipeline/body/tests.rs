use super::*;

/// The status and error `type` the caller gets for a body refusal.
fn answer(e: BodyError) -> (u16, &'static str) {
    let e = crate::error::GatewayError::from(e);
    let r = e.rescue();
    (r.status.as_u16(), r.kind)
}
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

const CANARY: &str = "CANARY-PII-7731";

fn reason_of(input: &[u8], depth: usize) -> &'static str {
    match parse_strict(input, depth) {
        Ok(v) => panic!("accepted {:?} as {v}", String::from_utf8_lossy(input)),
        Err(e @ BodyError::Malformed { reason, offset }) => {
            assert!(offset <= input.len(), "offset {offset} outside input");
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(CANARY), "error quotes the input: {shown}");
            assert!(!shown.contains("CANARY"), "error quotes the input: {shown}");
            assert_eq!(answer(e), (400, "invalid_request"));
            reason
        }
        Err(other) => panic!("wrong error kind {other:?}"),
    }
}

fn nested(depth: usize) -> String {
    format!("{}\"{CANARY}\"{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn strictness_failures_are_malformed_and_never_quote_input() {
    let c = CANARY;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            format!(r#"{{"type":"{c}","type":"company"}}"#).into(),
            "duplicate object key",
        ),
        (
            format!(r#"{{"type":"{c}","\u0074ype":"company"}}"#).into(),
            "duplicate object key",
        ),
        (
            format!(r#"{{"a":{{"x":1,"\u0078":"{c}"}}}}"#).into(),
            "duplicate object key",
        ),
        (
            format!(r#"{{"a":"{c}"}}x"#).into(),
            "trailing characters after the JSON value",
        ),
        (
            format!(r#"{{"a":"{c}"}} {{}}"#).into(),
            "trailing characters after the JSON value",
        ),
        (nested(33).into(), "nesting deeper than 32"),
        (b"1e400".to_vec(), "number out of range"),
        (b"-1e400".to_vec(), "number out of range"),
        (format!(r#"{{"{c}":1e400}}"#).into(), "number out of range"),
        (b"1e-400".to_vec(), "number underflows to zero"),
        (b"-0.000001e-400".to_vec(), "number underflows to zero"),
        (b"9007199254740992".to_vec(), "integer beyond ±(2^53−1)"),
        (b"-9007199254740992".to_vec(), "integer beyond ±(2^53−1)"),
        (
            b"123456789012345678901234567890".to_vec(),
            "integer beyond ±(2^53−1)",
        ),
        (b"9007199254740993.0".to_vec(), "integer beyond ±(2^53−1)"),
        (b"9.007199254740992e15".to_vec(), "integer beyond ±(2^53−1)"),
        (b"1e16".to_vec(), "integer beyond ±(2^53−1)"),
        (
            format!(r#"["{c}\ud800"]"#).into(),
            "lone surrogate in \\u escape",
        ),
        (
            format!(r#"["{c}\udc00\ud800"]"#).into(),
            "lone surrogate in \\u escape",
        ),
        (
            format!(r#"["{c}\ud800\u0041"]"#).into(),
            "lone surrogate in \\u escape",
        ),
        (
            format!(r#"["{c}\ud800"#).into(),
            "lone surrogate in \\u escape",
        ),
        (
            [format!(r#"{{"n":"{c}"#).as_bytes(), b"\xff\"}"].concat(),
            "invalid UTF-8",
        ),
        (
            [format!(r#"{{"n":"{c}"#).as_bytes(), b"\xc0\xaf\"}"].concat(),
            "invalid UTF-8",
        ),
        (
            [format!(r#"{{"n":"{c}"#).as_bytes(), b"\xed\xa0\x80\"}"].concat(),
            "invalid UTF-8",
        ),
        ([b"{}".as_slice(), b"\xfe"].concat(), "invalid UTF-8"),
        (
            [
                b"\xef\xbb\xbf".as_slice(),
                format!(r#"{{"n":"{c}"}}"#).as_bytes(),
            ]
            .concat(),
            "byte order mark before the JSON value",
        ),
        (
            format!("{{\"n\":\"{c}\u{1}\"}}").into(),
            "control character in string",
        ),
        (
            format!("{{\"n\":\"{c}\n\"}}").into(),
            "control character in string",
        ),
        (
            format!("{{\"n\":\"{c}\t\"}}").into(),
            "control character in string",
        ),
        (b"".to_vec(), "empty body"),
        (b" \r\n\t ".to_vec(), "empty body"),
        (b"01".to_vec(), "leading zero in number"),
        (b"-01".to_vec(), "leading zero in number"),
        (b"+1".to_vec(), "expected a JSON value"),
        (b".5".to_vec(), "expected a JSON value"),
        (b"1.".to_vec(), "invalid number"),
        (b"1.e3".to_vec(), "invalid number"),
        (b"1e".to_vec(), "invalid number"),
        (b"1e+".to_vec(), "invalid number"),
        (b"-".to_vec(), "invalid number"),
        (b"-a".to_vec(), "invalid number"),
        (b"NaN".to_vec(), "expected a JSON value"),
        (b"Infinity".to_vec(), "expected a JSON value"),
        (b"-Infinity".to_vec(), "invalid number"),
        (format!(r#"["{c}",]"#).into(), "trailing comma"),
        (format!(r#"{{"a":"{c}",}}"#).into(), "trailing comma"),
        (
            format!(r#"{{a:"{c}"}}"#).into(),
            "expected a string object key",
        ),
        (
            format!(r#"{{'a':"{c}"}}"#).into(),
            "expected a string object key",
        ),
        (
            format!(r#"["{c}" // comment"#).into(),
            "expected ',' or ']' in an array",
        ),
        (format!(r#"/* {c} */ {{}}"#).into(), "expected a JSON value"),
        (
            format!(r#"["{c}" "x"]"#).into(),
            "expected ',' or ']' in an array",
        ),
        (
            format!(r#"{{"a":"{c}" "b":1}}"#).into(),
            "expected ',' or '}' in an object",
        ),
        (
            format!(r#"{{"a" "{c}"}}"#).into(),
            "expected ':' after an object key",
        ),
        (
            format!(r#"{{"{c}"}}"#).into(),
            "expected ':' after an object key",
        ),
        (format!(r#"["{c}", tru]"#).into(), "expected a JSON value"),
        (format!(r#"["{c}", nul"#).into(), "expected a JSON value"),
        (format!(r#"["{c}\x"]"#).into(), "invalid escape in string"),
        (format!(r#"["{c}\u12"]"#).into(), "invalid \\u escape"),
        (format!(r#"["{c}\u12g4"]"#).into(), "invalid \\u escape"),
        (format!(r#"["{c}"#).into(), "unterminated string"),
        (format!(r#"["{c}\"#).into(), "unterminated string"),
        (format!(r#"{{"a":["{c}""#).into(), "unexpected end of input"),
        (format!(r#"{{"a":"{c}""#).into(), "unexpected end of input"),
        (b"[".to_vec(), "unexpected end of input"),
        (b"{\"a\":".to_vec(), "unexpected end of input"),
    ];
    for (input, expected) in &cases {
        assert_eq!(
            reason_of(input, DEFAULT_MAX_DEPTH),
            *expected,
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn depth_limit_is_exact_and_configurable() {
    assert!(parse_strict(nested(32).as_bytes(), 32).is_ok());
    assert_eq!(
        reason_of(nested(33).as_bytes(), 32),
        "nesting deeper than 32"
    );
    let objects = format!("{}1{}", "{\"a\":".repeat(33), "}".repeat(33));
    assert_eq!(reason_of(objects.as_bytes(), 32), "nesting deeper than 32");
    assert!(parse_strict(nested(4).as_bytes(), 4).is_ok());
    assert_eq!(
        reason_of(nested(5).as_bytes(), 4),
        "nesting deeper than the configured limit"
    );
    // A huge configured limit is capped, so a hostile body cannot blow the stack.
    let hostile = "[".repeat(1_000_000);
    assert_eq!(
        reason_of(hostile.as_bytes(), usize::MAX),
        "nesting deeper than the configured limit"
    );
    assert_eq!(reason_of(hostile.as_bytes(), 32), "nesting deeper than 32");
}

#[test]
fn accepted_edge_values() {
    let ok = |s: &str| parse_strict(s.as_bytes(), 32).unwrap_or_else(|e| panic!("{s}: {e}"));
    assert_eq!(ok("0e-400"), serde_json::json!(0.0));
    assert_eq!(ok("-0.0e-999"), serde_json::json!(-0.0));
    assert_eq!(
        ok("9007199254740991"),
        serde_json::json!(9007199254740991u64)
    );
    assert_eq!(
        ok("-9007199254740991"),
        serde_json::json!(-9007199254740991i64)
    );
    assert_eq!(
        ok("9007199254740991.0"),
        serde_json::json!(9007199254740991.0)
    );
    assert_eq!(ok("5e-324"), serde_json::json!(5e-324));
    assert_eq!(ok("1.5E+3"), serde_json::json!(1500.0));
    assert_eq!(ok(r#""\ud83d\ude00""#), serde_json::json!("😀"));
    assert_eq!(
        ok(r#""\u00e9\/\b\f\n\r\t\"\\""#),
        serde_json::json!("é/\u{8}\u{c}\n\r\t\"\\")
    );
    assert_eq!(
        ok(" [ true , false , null ] \n"),
        serde_json::json!([true, false, null])
    );
    assert_eq!(ok("\"\u{7f}ü\""), serde_json::json!("\u{7f}ü"));
    // Integers keep their integer kind, exactly as serde_json reads them.
    for s in ["0", "-0", "42", "-42", "1.0", "-0.0", "1e2"] {
        let strict = ok(s);
        let reference: Value = serde_json::from_str(s).unwrap();
        assert_eq!(strict, reference, "{s}");
        assert_eq!(strict.to_string(), reference.to_string(), "{s}");
    }
}

#[test]
fn key_order_is_kept() {
    let v = parse_strict(br#"{"z":1,"a":2,"m":{"y":1,"b":2}}"#, 32).unwrap();
    assert_eq!(v.to_string(), r#"{"z":1,"a":2,"m":{"y":1,"b":2}}"#);
}

fn large_document() -> String {
    let mut clients = Vec::new();
    for i in 0..2_000 {
        clients.push(serde_json::json!({
            "type": if i % 3 == 0 { "company" } else { "person" },
            "email": format!("user{i}@example.com"),
            "mobile": format!("+44 7700 {i:06}"),
            "personDetails": {
                "firstName": format!("Fïrst\"{i}\\"),
                "lastName": "Ñame \u{1F600} \u{7} end",
                "dob": "1990-01-31",
                "score": (i as f64) * 1.37e-3 - 0.5,
                "ratio": 1.0 / ((i as f64) + 3.0),
                "tiny": 2.2250738585072014e-308 * (i as f64),
                "count": i * 1_000_003,
                "neg": -(i as i64) * 7,
                "flags": [true, false, null, [], {}],
            },
            "metadata": { "a/b": "x~y", "": "" },
        }));
    }
    serde_json::to_string_pretty(&Value::Array(clients)).unwrap()
}

#[test]
fn large_valid_document_equals_serde_json() {
    let doc = large_document();
    assert!(doc.len() > 1_000_000, "document is {} bytes", doc.len());
    let strict = parse_strict(doc.as_bytes(), 32).unwrap();
    let reference: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(strict, reference);
    assert_eq!(
        serde_json::to_string(&strict).unwrap(),
        serde_json::to_string(&reference).unwrap()
    );
}

#[test]
fn field_pointers_lists_names_in_document_order() {
    let v = parse_strict(
        br#"{"email":"a@b.c","personDetails":{"dob":"1990-01-01"},"names":[{"m/x":1},{"t~":2}],"e":{}}"#,
        32,
    )
    .unwrap();
    assert_eq!(
        field_pointers(&v),
        [
            "/email",
            "/personDetails",
            "/personDetails/dob",
            "/names",
            "/names/0",
            "/names/0/m~1x",
            "/names/1",
            "/names/1/t~0",
            "/e"
        ]
    );
    assert!(field_pointers(&serde_json::json!("scalar")).is_empty());
    let joined = field_pointers(&v).join(" ");
    assert!(!joined.contains("a@b.c") && !joined.contains("1990"));
}

#[test]
fn content_type_rules() {
    let check = |pairs: &[(&str, &str)]| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        check_content_type(&h).is_ok()
    };
    assert!(check(&[("content-type", "application/json")]));
    assert!(check(&[(
        "content-type",
        "Application/JSON; charset=UTF-8"
    )]));
    assert!(check(&[(
        "content-type",
        "application/json;charset=\"utf-8\""
    )]));
    assert!(check(&[("content-type", "application/json; foo=bar")]));
    assert!(check(&[
        ("content-type", "application/json"),
        ("content-encoding", "identity")
    ]));
    assert!(!check(&[]));
    assert!(!check(&[("content-type", "text/plain")]));
    assert!(!check(&[("content-type", "application/jsonx")]));
    assert!(!check(&[(
        "content-type",
        "application/x-www-form-urlencoded"
    )]));
    assert!(!check(&[(
        "content-type",
        "multipart/form-data; boundary=x"
    )]));
    assert!(!check(&[(
        "content-type",
        "application/json; charset=latin1"
    )]));
    assert!(!check(&[(
        "content-type",
        "application/json; charset=utf-16"
    )]));
    assert!(!check(&[("content-type", "application/json; garbage")]));
    assert!(!check(&[
        ("content-type", "application/json"),
        ("content-type", "application/json")
    ]));
    assert!(!check(&[
        ("content-type", "application/json"),
        ("content-encoding", "gzip")
    ]));
    assert!(!check(&[
        ("content-type", "application/json"),
        ("content-encoding", "identity, br")
    ]));
    let err = BodyError::UnsupportedMediaType;
    assert_eq!(answer(err), (415, "unsupported_media_type"));
}

/// A body that yields `chunk`-byte frames forever (or `frames` of them),
/// counting how many were pulled, with an optional declared length.
struct CountingBody {
    chunk: Bytes,
    frames_left: Option<usize>,
    polled: Arc<AtomicUsize>,
    declared: Option<u64>,
}

impl http_body::Body for CountingBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.polled.fetch_add(1, Ordering::SeqCst);
        match self.frames_left.as_mut() {
            Some(0) => return Poll::Ready(None),
            Some(n) => *n -= 1,
            None => {}
        }
        Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.clone()))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.declared {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}

fn counting(
    chunk: usize,
    frames: Option<usize>,
    declared: Option<u64>,
) -> (CountingBody, Arc<AtomicUsize>) {
    let polled = Arc::new(AtomicUsize::new(0));
    let body = CountingBody {
        chunk: Bytes::from(vec![b' '; chunk]),
        frames_left: frames,
        polled: polled.clone(),
        declared,
    };
    (body, polled)
}

#[tokio::test]
async fn read_capped_stops_at_the_cap_on_an_endless_body() {
    let (body, polled) = counting(1024, None, None);
    let err = read_capped(body, 10 * 1024).await.unwrap_err();
    assert!(matches!(err, BodyError::TooLarge { limit: 10240 }));
    assert_eq!(answer(err), (413, "payload_too_large"));
    // 10 frames fit exactly; the 11th crosses the cap and reading stops.
    assert_eq!(polled.load(Ordering::SeqCst), 11);
}

#[tokio::test]
async fn read_capped_refuses_declared_length_before_reading() {
    let (body, polled) = counting(1, None, Some(1_000_000));
    let err = read_capped(body, 64 * 1024).await.unwrap_err();
    assert!(matches!(err, BodyError::TooLarge { limit: 65536 }));
    assert_eq!(polled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn read_capped_collects_bodies_up_to_the_cap() {
    let (body, _) = counting(1024, Some(10), Some(10 * 1024));
    let bytes = read_capped(body, 10 * 1024).await.unwrap();
    assert_eq!(bytes.len(), 10 * 1024);
    let (body, _) = counting(7, Some(1), None);
    assert_eq!(read_capped(body, 7).await.unwrap().len(), 7);
    let (body, _) = counting(7, Some(0), None);
    assert!(read_capped(body, 7).await.unwrap().is_empty());
    let full = http_body_util::Full::new(Bytes::from_static(b"{\"a\":1}"));
    assert_eq!(read_capped(full, 64).await.unwrap().as_ref(), b"{\"a\":1}");
}

/// Yields one data frame holding the canary, then fails like a reset.
struct FailingBody(u8);

impl http_body::Body for FailingBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0 += 1;
        Poll::Ready(match self.0 {
            1 => Some(Ok(http_body::Frame::data(Bytes::from(CANARY)))),
            2 => Some(Err(std::io::Error::other("connection reset"))),
            _ => None,
        })
    }
}

#[tokio::test]
async fn read_errors_are_reported_without_body_bytes() {
    let err = read_capped(FailingBody(0), 1024).await.unwrap_err();
    assert!(matches!(err, BodyError::Read(ref m) if m == "connection reset"));
    assert!(!format!("{err} {err:?}").contains(CANARY));
    assert_eq!(answer(err).0, 400);
}

// ---- property tests ----------------------------------------------------

use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

#[derive(Debug, Clone)]
struct ArbJson(Value);

fn arb_value(g: &mut Gen, depth: usize) -> Value {
    let kinds: &[u8] = if depth == 0 {
        &[0, 1, 2, 3, 4]
    } else {
        &[0, 1, 2, 3, 4, 5, 6, 5, 6]
    };
    let width = g.size().min(6);
    match g.choose(kinds).copied().unwrap_or(0) {
        0 => Value::Null,
        1 => Value::Bool(bool::arbitrary(g)),
        2 => {
            let i = i64::arbitrary(g) % (MAX_SAFE_INTEGER as i64 + 1);
            Value::from(i)
        }
        3 => {
            let mut f = f64::arbitrary(g);
            if !f.is_finite() || f.abs() > MAX_SAFE_INTEGER as f64 {
                f = f64::from(i32::arbitrary(g)) / 7.0;
            }
            Value::from(f)
        }
        4 => Value::String(String::arbitrary(g)),
        5 => {
            let n = usize::arbitrary(g) % (width + 1);
            Value::Array((0..n).map(|_| arb_value(g, depth - 1)).collect())
        }
        _ => {
            let n = usize::arbitrary(g) % (width + 1);
            let mut map = Map::new();
            for _ in 0..n {
                // Map::insert keeps keys unique, as the strict parser requires.
                map.insert(String::arbitrary(g), arb_value(g, depth - 1));
            }
            Value::Object(map)
        }
    }
}

impl Arbitrary for ArbJson {
    fn arbitrary(g: &mut Gen) -> Self {
        let depth = usize::arbitrary(g) % 6;
        ArbJson(arb_value(g, depth))
    }
}

fn prop_roundtrip(v: ArbJson) -> bool {
    let bytes = serde_json::to_vec(&v.0).unwrap();
    parse_strict(&bytes, DEFAULT_MAX_DEPTH).ok() == Some(v.0)
}

fn split_pointer(p: &str) -> Vec<&str> {
    p.split('/').skip(1).collect()
}

/// `v` without the nodes at `remove` (concrete pointers), rebuilt from
/// scratch so it does not share code with `policy::apply`.
fn without(v: &Value, remove: &[String], prefix: &str) -> Value {
    let keep = |p: &String| !remove.contains(p);
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter_map(|(k, child)| {
                    let mut p = prefix.to_owned();
                    push_pointer_token(&mut p, k);
                    keep(&p).then(|| (k.clone(), without(child, remove, &p)))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, child)| {
                    let p = format!("{prefix}/{i}");
                    keep(&p).then(|| without(child, remove, &p))
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn prop_strip(v: ArbJson, pick: usize, wildcard: Option<usize>) -> TestResult {
    use super::super::policy::{FieldRule, PolicyAction, apply};
    let pointers = field_pointers(&v.0);
    if pointers.is_empty() {
        return TestResult::discard();
    }
    let mut segments = split_pointer(&pointers[pick % pointers.len()]);
    if let Some(w) = wildcard {
        let n = segments.len();
        segments[w % n] = "*";
    }
    let pattern = format!("/{}", segments.join("/"));
    let rule = FieldRule::parse(&pattern, PolicyAction::Strip).unwrap();
    let mut expected_removed: Vec<String> = pointers
        .iter()
        .filter(|p| {
            let s = split_pointer(p);
            s.len() == segments.len() && s.iter().zip(&segments).all(|(a, b)| *b == "*" || a == b)
        })
        .cloned()
        .collect();
    let mut body = v.0.clone();
    let outcome = apply(&mut body, std::slice::from_ref(&rule)).unwrap();
    let mut removed = outcome.stripped.clone();
    removed.sort();
    expected_removed.sort();
    if removed != expected_removed || removed.is_empty() {
        return TestResult::error(format!(
            "{pattern}: removed {removed:?}, expected {expected_removed:?}"
        ));
    }
    let expected = without(&v.0, &expected_removed, "");
    let reparsed = parse_strict(&serde_json::to_vec(&body).unwrap(), DEFAULT_MAX_DEPTH).unwrap();
    TestResult::from_bool(reparsed == expected && body == expected)
}

#[test]
fn quickcheck_serde_output_parses_back_identically() {
    QuickCheck::new()
        .tests(500)
        .quickcheck(prop_roundtrip as fn(ArbJson) -> bool);
}

#[test]
fn quickcheck_strip_removes_exactly_the_matches() {
    QuickCheck::new()
        .tests(500)
        .quickcheck(prop_strip as fn(ArbJson, usize, Option<usize>) -> TestResult);
}

// ---- the fuzz property over the seed corpus plus mutations -------------

fn corpus() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/body_policy");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 8, "seed corpus too small");
    seeds
}

/// splitmix64: deterministic, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    const INTERESTING: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b",",
        b":",
        b"\\",
        b"\\u",
        b"\\ud800",
        b"\\udc00",
        b"\\u0074",
        b"0",
        b"-",
        b".",
        b"e",
        b"E+",
        b"1e400",
        b"1e-400",
        b"9007199254740992",
        b"\"type\":",
        b"null",
        b"tru",
        b" ",
        b"\n",
        b"\x00",
        b"\x1f",
        b"\x7f",
        b"\xc3\xa9",
        b"\xf0\x9f\x98\x80",
        b"\xff",
        b"\xed\xa0\x80",
        b"\xef\xbb\xbf",
        b"*",
        b"~",
        b"/",
    ];
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(8).min(len - i);
                input.drain(i..i + n);
            }
            2 => {
                let at = rng.below(len + 1);
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                input.splice(at..at, piece.iter().copied());
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(32).min(len - i);
                let copy = input[i..i + n].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, copy);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                let at = rng.below(len + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            _ => {
                let at = rng.below(len + 1);
                input.insert(at, rng.next() as u8);
            }
        }
    }
}

#[test]
fn fuzz_property_holds_on_corpus_and_mutations() {
    let seeds = corpus();
    let mut accepted = 0;
    for seed in &seeds {
        roundtrip_property(seed)
            .unwrap_or_else(|e| panic!("seed {:?}: {e}", String::from_utf8_lossy(seed)));
        accepted += usize::from(parse_strict(seed, DEFAULT_MAX_DEPTH).is_ok());
    }
    assert!(accepted >= 4, "too few valid seeds");
    let mut rng = Rng(0x00C0_FFEE_CB0D_7A7E);
    let mut accepted_mutants = 0;
    for round in 0..20_000 {
        let mut input = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &mut input, &seeds);
        if let Err(e) = roundtrip_property(&input) {
            panic!("mutant {round} {:?}: {e}", String::from_utf8_lossy(&input));
        }
        accepted_mutants += usize::from(parse_strict(&input, DEFAULT_MAX_DEPTH).is_ok());
    }
    // The mutants must reach the accepting paths too, not only errors.
    assert!(
        accepted_mutants > 1_000,
        "only {accepted_mutants} mutants parsed"
    );
}

/// Array length, object width and value count are limited besides depth;
/// the refusal names the container's pointer, built as the error unwinds.
#[test]
fn json_limits_refuse_with_the_container_pointer() {
    let small = JsonLimits {
        max_depth: 8,
        max_array_len: 3,
        max_object_members: 2,
        max_nodes: 12,
    };
    let too_many = |body: &str| match parse_limited(body.as_bytes(), small) {
        Err(BodyError::TooMany { what, pointer, .. }) => Some((what, pointer)),
        Ok(_) => None,
        Err(e) => panic!("{body}: {e}"),
    };
    assert_eq!(too_many(r#"{"a":[1,2,3],"b":{"x":1,"y":2}}"#), None);
    assert_eq!(
        too_many(r#"{"a":[1,2,3,4]}"#),
        Some(("array elements", "/a".into()))
    );
    assert_eq!(
        too_many(r#"{"o":{"l":[{"x":1,"y":2,"z~/":3}]}}"#),
        Some(("object members", "/o/l/0".into()))
    );
    assert_eq!(
        too_many(r#"[[1,2,3],[1,2,3],[1,2,3]]"#),
        Some(("JSON values", "/2/2".into()))
    );
    // parse_strict keeps only the depth limit.
    assert!(parse_strict(format!("[{}]", vec!["0"; 5000].join(",")).as_bytes(), 32).is_ok());
}
