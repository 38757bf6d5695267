//! The `read body` stage: strict reading of a request body, before any schema.
//!
//! Input: the request headers and the body stream of a route that carries a
//! JSON body, plus that route's size cap and nesting limit.
//! Output: the body as a [`serde_json::Value`] (key order kept), and on demand
//! the JSON pointers of the fields it holds ([`field_pointers`], for audit).
//! Failures, as [`BodyError`]:
//! - `UnsupportedMediaType` (415): Content-Type is not `application/json`
//!   (a charset other than utf-8 is refused too), or a Content-Encoding other
//!   than `identity` is present.
//! - `TooLarge` (413): declared or actual size over the cap. Reading stops at
//!   the first chunk that crosses the cap; the rest is never buffered.
//! - `Malformed` (400 `invalid_request`): anything outside RFC 8259 / I-JSON
//!   (RFC 7493): invalid UTF-8, BOM, lone surrogates, duplicate keys (compared
//!   after unescaping), nesting over the limit, numbers that do not survive a
//!   round trip through an IEEE double, trailing bytes, empty body.
//! - `Read` (400): the body stream failed (client abort, idle timeout).
//!
//! No error ever quotes the input: they carry a static reason and a byte
//! offset, because bodies hold PII. The parser never panics and bounds its
//! recursion by the depth limit before descending.

use std::fmt::Display;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use serde_json::{Map, Number, Value};

/// Default body cap for JSON routes.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;
/// Body cap for routes that carry base64 images (ComplyCube caps images at
/// 4 MiB; base64 inflates by 4/3 plus the JSON envelope).
pub const UPLOAD_MAX_BYTES: usize = 6 * 1024 * 1024;
/// Default nesting limit (objects and arrays).
pub const DEFAULT_MAX_DEPTH: usize = 32;
/// Whatever the configuration says, recursion never goes deeper than this,
/// so a misconfigured limit cannot turn into a stack overflow.
pub const HARD_MAX_DEPTH: usize = 256;
/// Largest integer an IEEE double holds exactly (I-JSON, RFC 7493 §2.2).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body must be application/json in UTF-8 without content encoding")]
    UnsupportedMediaType,
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body is not valid JSON at byte {offset}: {reason}")]
    Malformed { reason: &'static str, offset: usize },
    #[error("the body could not be read: {0}")]
    Read(String),
    /// No body bytes arrived for `ms` milliseconds (a slow or stalled client).
    #[error("no request body data for {ms} ms")]
    Timeout { ms: u64 },
}

impl BodyError {
    /// The HTTP status cubegate answers with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            BodyError::UnsupportedMediaType => http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyError::TooLarge { .. } => http::StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Malformed { .. } | BodyError::Read(_) => http::StatusCode::BAD_REQUEST,
            BodyError::Timeout { .. } => http::StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The stable error `type` of the response body (see DESIGN.md).
    pub fn error_type(&self) -> &'static str {
        match self {
            BodyError::UnsupportedMediaType => "unsupported_media_type",
            BodyError::TooLarge { .. } => "payload_too_large",
            BodyError::Malformed { .. } | BodyError::Read(_) => "invalid_request",
            BodyError::Timeout { .. } => "request_timeout",
        }
    }
}

fn malformed(reason: &'static str, offset: usize) -> BodyError {
    BodyError::Malformed { reason, offset }
}

/// Content-Type must be `application/json` (parameters such as
/// `; charset=utf-8` allowed, any other charset refused); any Content-Encoding
/// other than `identity` is refused, since cubegate never inflates bodies
/// (a compressed body would dodge the size cap).
pub fn check_content_type(headers: &HeaderMap) -> Result<(), BodyError> {
    for value in headers.get_all(CONTENT_ENCODING) {
        let value = value
            .to_str()
            .map_err(|_| BodyError::UnsupportedMediaType)?;
        for coding in value.split(',').map(str::trim) {
            if !coding.is_empty() && !coding.eq_ignore_ascii_case("identity") {
                return Err(BodyError::UnsupportedMediaType);
            }
        }
    }

    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        // Missing, or several (ambiguous): refuse both.
        return Err(BodyError::UnsupportedMediaType);
    };
    let value = value
        .to_str()
        .map_err(|_| BodyError::UnsupportedMediaType)?;
    let (media_type, params) = value.split_once(';').unwrap_or((value, ""));
    if !media_type.trim().eq_ignore_ascii_case("application/json") {
        return Err(BodyError::UnsupportedMediaType);
    }
    for param in params.split(';').map(str::trim) {
        if param.is_empty() {
            continue;
        }
        let Some((name, val)) = param.split_once('=') else {
            return Err(BodyError::UnsupportedMediaType);
        };
        if name.trim().eq_ignore_ascii_case("charset") {
            let val = val.trim();
            let val = val
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(val);
            if !val.eq_ignore_ascii_case("utf-8") {
                return Err(BodyError::UnsupportedMediaType);
            }
        }
    }
    Ok(())
}

/// Collects the body, failing with `TooLarge` as soon as the running total
/// crosses `limit` (the rest of the stream is not read), or at once when the
/// body's size hint (Content-Length for `hyper::body::Incoming`) is over it.
/// Trailers are ignored. No timeout: see [`read_capped_idle`].
pub async fn read_capped<B>(body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Display,
{
    read_capped_idle(body, limit, None).await
}

/// [`read_capped`] with a body idle timeout: fails with `Timeout` when no
/// frame arrives for `idle` (a client trickling or stalling its body holds a
/// connection and a request slot; the total time stays bounded by
/// `limit / bytes-per-idle-period` as well).
pub async fn read_capped_idle<B>(
    body: B,
    limit: usize,
    idle: Option<std::time::Duration>,
) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Display,
{
    let declared = body.size_hint().lower();
    if declared > limit as u64 {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = std::pin::pin!(body);
    // A single-chunk body (the common case) is returned without copying.
    let mut single: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut total: usize = 0;
    loop {
        let next = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx));
        let frame = match idle {
            Some(d) => tokio::time::timeout(d, next)
                .await
                .map_err(|_| BodyError::Timeout {
                    ms: d.as_millis() as u64,
                })?,
            None => next.await,
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(BodyError::TooLarge { limit });
        }
        if let Some(buf) = joined.as_mut() {
            buf.extend_from_slice(&data);
        } else if let Some(first) = single.take() {
            // `declared <= limit` here, so the capacity is bounded by the cap.
            let capacity = usize::try_from(declared).unwrap_or(limit).max(total);
            let mut buf = BytesMut::with_capacity(capacity);
            buf.extend_from_slice(&first);
            buf.extend_from_slice(&data);
            joined = Some(buf);
        } else {
            single = Some(data);
        }
    }
    Ok(joined.map(BytesMut::freeze).or(single).unwrap_or_default())
}

/// Strict single-pass JSON parser producing a `serde_json::Value`.
///
/// Accepts exactly RFC 8259 JSON text with the I-JSON restrictions listed in
/// the module doc; `max_depth` counts nested objects/arrays (a scalar at the
/// top is depth 0) and is itself capped at [`HARD_MAX_DEPTH`].
pub fn parse_strict(bytes: &[u8], max_depth: usize) -> Result<Value, BodyError> {
    // Validating the whole body up front lets the string scanner slice `&str`
    // at ASCII delimiters without re-checking, and catches invalid bytes even
    // where the grammar would fail first.
    let text =
        std::str::from_utf8(bytes).map_err(|e| malformed("invalid UTF-8", e.valid_up_to()))?;
    if text.starts_with('\u{feff}') {
        return Err(malformed("byte order mark before the JSON value", 0));
    }
    let mut parser = Parser {
        text,
        bytes,
        pos: 0,
        max_depth: max_depth.min(HARD_MAX_DEPTH),
    };
    parser.skip_ws();
    if parser.pos == bytes.len() {
        return Err(malformed("empty body", 0));
    }
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != bytes.len() {
        return Err(malformed(
            "trailing characters after the JSON value",
            parser.pos,
        ));
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    max_depth: usize,
}

impl<'a> Parser<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn err(&self, reason: &'static str) -> BodyError {
        malformed(reason, self.pos)
    }

    fn depth_err(&self) -> BodyError {
        // The reason must be 'static; name the default limit when it applies.
        let reason = if self.max_depth == DEFAULT_MAX_DEPTH {
            "nesting deeper than 32"
        } else {
            "nesting deeper than the configured limit"
        };
        self.err(reason)
    }

    /// `&text[start..end]`; both ends sit next to ASCII delimiters, so this
    /// cannot fail on validated input, but stays panic-free regardless.
    fn slice(&self, start: usize, end: usize) -> Result<&'a str, BodyError> {
        self.text
            .get(start..end)
            .ok_or_else(|| malformed("invalid UTF-8", start))
    }

    fn value(&mut self, depth: usize) -> Result<Value, BodyError> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => {
                self.pos += 1;
                self.string().map(Value::String)
            }
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number().map(Value::Number),
            Some(_) => Err(self.err("expected a JSON value")),
            None => Err(self.err("unexpected end of input")),
        }
    }

    fn literal(&mut self, word: &'static [u8], value: Value) -> Result<Value, BodyError> {
        if self.bytes.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.err("expected a JSON value"))
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, BodyError> {
        if depth > self.max_depth {
            return Err(self.depth_err());
        }
        self.pos += 1;
        let mut map = Map::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(map));
        }
        loop {
            match self.peek() {
                Some(b'"') => {}
                Some(b'}') => return Err(self.err("trailing comma")),
                Some(_) => return Err(self.err("expected a string object key")),
                None => return Err(self.err("unexpected end of input")),
            }
            let key_at = self.pos;
            self.pos += 1;
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' after an object key"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth)?;
            // Keys are compared decoded, so `"type"` and `"\u0074ype"` clash.
            if map.insert(key, value).is_some() {
                return Err(malformed("duplicate object key", key_at));
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(map));
                }
                Some(_) => return Err(self.err("expected ',' or '}' in an object")),
                None => return Err(self.err("unexpected end of input")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, BodyError> {
        if depth > self.max_depth {
            return Err(self.depth_err());
        }
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            if self.peek() == Some(b']') {
                return Err(self.err("trailing comma"));
            }
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                Some(_) => return Err(self.err("expected ',' or ']' in an array")),
                None => return Err(self.err("unexpected end of input")),
            }
        }
    }

    /// Advances over bytes that need no attention inside a string: stops at
    /// `"`, `\`, a control character, or the end. Eight bytes at a time,
    /// because upload bodies are megabytes of base64 in one string.
    #[inline]
    fn skip_plain(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        #[inline]
        fn has_zero(x: u64) -> u64 {
            x.wrapping_sub(ONES) & !x & HIGHS
        }
        while let Some(chunk) = self.bytes.get(self.pos..self.pos + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let x = u64::from_le_bytes(word);
            // Bytes < 0x20 (x - 0x20 borrows into the high bit only for those
            // bytes, as long as the byte's own high bit is clear), `"`, `\`.
            let special = (x.wrapping_sub(ONES * 0x20) & !x & HIGHS)
                | has_zero(x ^ (ONES * u64::from(b'"')))
                | has_zero(x ^ (ONES * u64::from(b'\\')));
            if special != 0 {
                break;
            }
            self.pos += 8;
        }
        while let Some(b) = self.peek() {
            if b == b'"' || b == b'\\' || b < 0x20 {
                return;
            }
            self.pos += 1;
        }
    }

    /// Parses a string body; `pos` is just past the opening quote.
    fn string(&mut self) -> Result<String, BodyError> {
        let start = self.pos;
        self.skip_plain();
        let mut out: Option<String> = None;
        let mut run_start = start;
        loop {
            match self.peek() {
                Some(b'"') => {
                    let tail = self.slice(run_start, self.pos)?;
                    self.pos += 1;
                    return Ok(match out {
                        Some(mut s) => {
                            s.push_str(tail);
                            s
                        }
                        None => tail.to_owned(),
                    });
                }
                Some(b'\\') => {
                    let run = self.slice(run_start, self.pos)?;
                    let buf = out.get_or_insert_with(|| String::with_capacity(run.len() + 16));
                    buf.push_str(run);
                    self.escape(buf)?;
                    run_start = self.pos;
                    self.skip_plain();
                }
                Some(_) => return Err(self.err("control character in string")),
                None => return Err(self.err("unterminated string")),
            }
        }
    }

    /// Decodes one escape; `pos` is at the backslash.
    fn escape(&mut self, out: &mut String) -> Result<(), BodyError> {
        let at = self.pos;
        let Some(kind) = self.bytes.get(self.pos + 1).copied() else {
            return Err(malformed("unterminated string", at));
        };
        self.pos += 2;
        let decoded = match kind {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4(at)?;
                let code = match first {
                    0xD800..=0xDBFF => {
                        if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(malformed("lone surrogate in \\u escape", at));
                        }
                        self.pos += 2;
                        let second = self.hex4(at)?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err(malformed("lone surrogate in \\u escape", at));
                        }
                        0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(malformed("lone surrogate in \\u escape", at)),
                    other => other,
                };
                char::from_u32(code).ok_or_else(|| malformed("lone surrogate in \\u escape", at))?
            }
            _ => return Err(malformed("invalid escape in string", at)),
        };
        out.push(decoded);
        Ok(())
    }

    fn hex4(&mut self, at: usize) -> Result<u32, BodyError> {
        let Some(digits) = self.bytes.get(self.pos..self.pos + 4) else {
            return Err(malformed("invalid \\u escape", at));
        };
        let mut code = 0u32;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(malformed("invalid \\u escape", at)),
            };
            code = (code << 4) | u32::from(v);
        }
        self.pos += 4;
        Ok(code)
    }

    fn skip_digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Number, BodyError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(malformed("leading zero in number", start));
                }
            }
            Some(b'1'..=b'9') => {
                self.skip_digits();
            }
            _ => return Err(malformed("invalid number", start)),
        }
        let int_end = self.pos;
        let mut mantissa_nonzero = self
            .bytes
            .get(int_start..int_end)
            .is_some_and(|d| d.iter().any(|&b| b != b'0'));
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let frac_start = self.pos;
            if self.skip_digits() == 0 {
                return Err(malformed("invalid number", start));
            }
            mantissa_nonzero |= self
                .bytes
                .get(frac_start..self.pos)
                .is_some_and(|d| d.iter().any(|&b| b != b'0'));
            is_float = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.skip_digits() == 0 {
                return Err(malformed("invalid number", start));
            }
            is_float = true;
        }

        if !is_float {
            let digits = self.bytes.get(int_start..int_end).unwrap_or_default();
            // 2^53 - 1 has 16 digits; more cannot be safe (no leading zeros).
            if digits.len() > 16 {
                return Err(malformed("integer beyond ±(2^53−1)", start));
            }
            let magnitude = digits
                .iter()
                .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
            if magnitude > MAX_SAFE_INTEGER {
                return Err(malformed("integer beyond ±(2^53−1)", start));
            }
            return Ok(match (negative, magnitude) {
                (false, m) => Number::from(m),
                // serde_json reads `-0` as the float -0.0; do the same so both
                // parsers agree on every document this one accepts.
                (true, 0) => Number::from_f64(-0.0).unwrap_or_else(|| Number::from(0u64)),
                (true, m) => Number::from(-(m as i64)),
            });
        }

        let literal = self.slice(start, self.pos)?;
        let value: f64 = literal
            .parse()
            .map_err(|_| malformed("invalid number", start))?;
        if value.is_infinite() {
            return Err(malformed("number out of range", start));
        }
        // Every double beyond 2^53 - 1 is integral and not exactly the
        // integer written; refuse it however it is spelled.
        if value.abs() > MAX_SAFE_INTEGER as f64 {
            return Err(malformed("integer beyond ±(2^53−1)", start));
        }
        if value == 0.0 && mantissa_nonzero {
            return Err(malformed("number underflows to zero", start));
        }
        Number::from_f64(value).ok_or_else(|| malformed("number out of range", start))
    }
}

/// Appends `/token` to `out`, escaped per RFC 6901 (`~` -> `~0`, `/` -> `~1`).
pub fn push_pointer_token(out: &mut String, token: &str) {
    out.push('/');
    if token.contains(['~', '/']) {
        for c in token.chars() {
            match c {
                '~' => out.push_str("~0"),
                '/' => out.push_str("~1"),
                c => out.push(c),
            }
        }
    } else {
        out.push_str(token);
    }
}

/// The JSON pointers of every field present, in document order: object
/// members by (escaped) key, array elements by index, recursively; the root
/// itself is not listed. Names only, never values — this feeds the audit trail.
pub fn field_pointers(v: &Value) -> Vec<String> {
    fn walk(v: &Value, prefix: &mut String, out: &mut Vec<String>) {
        let len = prefix.len();
        match v {
            Value::Object(map) => {
                for (key, child) in map {
                    push_pointer_token(prefix, key);
                    out.push(prefix.clone());
                    walk(child, prefix, out);
                    prefix.truncate(len);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    push_pointer_token(prefix, &i.to_string());
                    out.push(prefix.clone());
                    walk(child, prefix, out);
                    prefix.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut String::new(), &mut out);
    out
}

/// The invariant the fuzz target (`fuzz/fuzz_targets/body_policy.rs`) and the
/// corpus test check, on arbitrary bytes: the header check and the parser
/// never panic; whatever `parse_strict` accepts, serde_json accepts with the
/// same value; after the `clients.update` policy only present pointers were
/// stripped and they are gone; and serialising then re-parsing strictly gives
/// back exactly the same value. Returns which property broke.
#[doc(hidden)]
pub fn roundtrip_property(data: &[u8]) -> Result<(), &'static str> {
    if let Ok(value) =
        http::HeaderValue::from_bytes(data.get(..data.len().min(128)).unwrap_or(data))
    {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, value);
        let _ = check_content_type(&headers);
    }
    if data.len() > DEFAULT_MAX_BYTES {
        return Ok(());
    }
    let mut value = match parse_strict(data, DEFAULT_MAX_DEPTH) {
        Ok(value) => value,
        Err(BodyError::Malformed { offset, .. }) if offset <= data.len() => return Ok(()),
        Err(_) => return Err("parse error outside the input or of the wrong kind"),
    };
    let reference: Value = serde_json::from_slice(data)
        .map_err(|_| "serde_json refused a body parse_strict accepted")?;
    if reference != value {
        return Err("parse_strict and serde_json disagree");
    }
    let before = field_pointers(&value);
    let outcome = super::policy::apply(&mut value, &super::policy::builtin_rules("clients.update"))
        .map_err(|_| "a strip-only policy rejected")?;
    let after = field_pointers(&value);
    for pointer in &outcome.stripped {
        if !before.contains(pointer) {
            return Err("stripped a pointer that was not present");
        }
        if after.contains(pointer) {
            return Err("a stripped pointer is still present");
        }
    }
    let bytes = serde_json::to_vec(&value).map_err(|_| "serialisation failed")?;
    let again =
        parse_strict(&bytes, DEFAULT_MAX_DEPTH).map_err(|_| "re-serialised body refused")?;
    if again != value {
        return Err("re-parsed body differs");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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
                assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
                assert_eq!(e.error_type(), "invalid_request");
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
        assert_eq!(
            (err.status().as_u16(), err.error_type()),
            (415, "unsupported_media_type")
        );
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
        assert_eq!(
            (err.status().as_u16(), err.error_type()),
            (413, "payload_too_large")
        );
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
        assert_eq!(err.status().as_u16(), 400);
        assert!(!format!("{err} {err:?}").contains(CANARY));
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
                s.len() == segments.len()
                    && s.iter().zip(&segments).all(|(a, b)| *b == "*" || a == b)
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
        let reparsed =
            parse_strict(&serde_json::to_vec(&body).unwrap(), DEFAULT_MAX_DEPTH).unwrap();
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
}
