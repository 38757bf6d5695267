//! Fuzz target for the `framing` stage (issue 19): arbitrary bytes as a
//! request head, parsed by httparse (the parser hyper uses), then checked by
//! `framing::check` exactly as the gateway checks hyper's parsed request.
//!
//! Properties: the check never panics, and it accepts a head only when an
//! independent reading of the raw header lines says the framing is
//! unambiguous: no `Transfer-Encoding` or exactly one holding `chunked`;
//! exactly one `Host` on HTTP/1.1, at most one on HTTP/1.0; no body on
//! HTTP/1.0. A broken property panics, which libFuzzer reports as a crash.
//! The black-box counterpart (generated heads and chunked framings against a
//! running gateway) is `tests/it/edge.rs`'s quickcheck test.
//!
//! Run: `cargo +nightly fuzz run edge_framing` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/pipeline/framing.rs"]
#[allow(dead_code)]
mod framing;

fn named<'a, 'b>(
    raw: &'a [httparse::Header<'b>],
    n: &'static str,
) -> impl Iterator<Item = &'a httparse::Header<'b>> {
    raw.iter().filter(move |h| h.name.eq_ignore_ascii_case(n))
}

fn oracle_accepts(version: u8, raw: &[httparse::Header<'_>]) -> bool {
    let named = |n| named(raw, n);
    let te: Vec<&[u8]> = named("transfer-encoding").map(|h| h.value).collect();
    let te_ok = match te.as_slice() {
        [] => true,
        [one] => String::from_utf8_lossy(one).trim().eq_ignore_ascii_case("chunked"),
        _ => false,
    };
    let hosts = named("host").count();
    let host_ok = if version == 1 { hosts == 1 } else { hosts <= 1 };
    let body_10 = !te.is_empty() || named("content-length").any(|h| h.value.trim_ascii() != b"0");
    te_ok && host_ok && (version == 1 || !body_10)
}

fuzz_target!(|data: &[u8]| {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut slots);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return;
    };
    let Some(version) = req.version else { return };
    let mut headers = http::HeaderMap::new();
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(h.name.as_bytes()),
            http::HeaderValue::from_bytes(h.value),
        ) else {
            // hyper refuses such a head before any stage runs.
            return;
        };
        headers.append(name, value);
    }
    let v = if version == 1 {
        http::Version::HTTP_11
    } else {
        http::Version::HTTP_10
    };
    let accepted = framing::check(v, &headers).is_ok();
    if accepted && !oracle_accepts(version, req.headers) {
        panic!("framing accepted a head the oracle refuses");
    }
    if !accepted && oracle_accepts(version, req.headers) {
        panic!("framing refused a head the oracle accepts");
    }
});
