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
//! - `TooMany` (400 `invalid_request`, `param` = the container): an array
//!   longer, an object with more members, or a body with more values than
//!   [`JsonLimits`] allow (depth alone does not bound a flat body's cost).
//! - `Read` (400): the body stream failed (client abort).
//! - `Timeout` / `Deadline` (408, connection closed): no data for the idle
//!   timeout, or the whole body not arrived within the body deadline.
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
/// 4 MiB; base64 inflates by 4/3 plus the JSON envelope). The one upload cap:
/// `[body] upload_max_bytes` defaults to it.
pub const UPLOAD_MAX_BYTES: usize = 6 * 1024 * 1024;
/// Default longest array (elements), widest object (members) and most JSON
/// values in one body: far above any ComplyCube body, far below what would
/// make parsing or schema validation expensive.
pub const DEFAULT_MAX_ARRAY_LEN: usize = 1000;
pub const DEFAULT_MAX_OBJECT_MEMBERS: usize = 256;
pub const DEFAULT_MAX_NODES: usize = 10_000;
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
    /// The whole body had not arrived `ms` milliseconds after reading began
    /// (a trickling client that keeps the idle timer happy).
    #[error("the request body did not arrive within {ms} ms")]
    Deadline { ms: u64 },
    /// A container or the whole body holds more than [`JsonLimits`] allow.
    /// `pointer` is the container's JSON pointer (empty for the body).
    #[error("the body has more {what} than the limit of {limit}")]
    TooMany {
        what: &'static str,
        limit: usize,
        pointer: String,
    },
    /// A bodiless operation was sent a body: refused, not silently dropped.
    #[error("this operation takes no request body")]
    NotExpected,
}

fn malformed(reason: &'static str, offset: usize) -> BodyError {
    BodyError::Malformed { reason, offset }
}

impl BodyError {
    /// A `TooMany` raised inside the member `token` is about `/token/...`:
    /// each level prepends its token while the error unwinds, so the happy
    /// path keeps no path at all.
    fn within(mut self, token: &str) -> BodyError {
        if let BodyError::TooMany { pointer, .. } = &mut self {
            let mut p = String::with_capacity(pointer.len() + token.len() + 1);
            push_pointer_token(&mut p, token);
            p.push_str(pointer);
            *pointer = p;
        }
        self
    }
}

/// Size limits of a JSON body besides its byte cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonLimits {
    pub max_depth: usize,
    pub max_array_len: usize,
    pub max_object_members: usize,
    /// Every value counts: objects, arrays, strings, numbers, literals.
    pub max_nodes: usize,
}

impl JsonLimits {
    pub const DEFAULT: JsonLimits = JsonLimits {
        max_depth: DEFAULT_MAX_DEPTH,
        max_array_len: DEFAULT_MAX_ARRAY_LEN,
        max_object_members: DEFAULT_MAX_OBJECT_MEMBERS,
        max_nodes: DEFAULT_MAX_NODES,
    };
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

/// What the stage needs to know about the route it reads for.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    pub kind: crate::operations::BodyKind,
    /// The route's size cap in bytes.
    pub cap: usize,
    pub json: JsonLimits,
    /// Longest wait for the next body frame.
    pub idle: std::time::Duration,
    /// Longest time for the whole body, from the start of reading.
    pub deadline: std::time::Duration,
}

impl BodyLimits {
    /// The most bytes the stage reads: the route's cap, or a little for a
    /// bodiless route (enough to tell a stray body from none).
    pub fn read_cap(&self) -> usize {
        match self.kind {
            crate::operations::BodyKind::None => 1024,
            _ => self.cap,
        }
    }
}

/// The stage: the request's body as JSON, or None for a route without one.
/// A bodiless route refuses any body bytes (Node's SDK sends a Content-Type
/// on GET, which is harmless); an optional body may be empty.
pub async fn read<B>(
    limits: BodyLimits,
    headers: &HeaderMap,
    body: B,
) -> Result<Option<Value>, BodyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Display,
{
    use crate::operations::BodyKind;
    let idle = Some(limits.idle);
    let cap = limits.read_cap();
    if matches!(limits.kind, BodyKind::Json | BodyKind::Upload) {
        check_content_type(headers)?;
    }
    let ms = limits.deadline.as_millis() as u64;
    let bytes = tokio::time::timeout(limits.deadline, read_capped_idle(body, cap, idle))
        .await
        .map_err(|_| BodyError::Deadline { ms })??;
    match limits.kind {
        BodyKind::None if bytes.is_empty() => Ok(None),
        BodyKind::None => Err(BodyError::NotExpected),
        BodyKind::Optional if bytes.is_empty() => Ok(None),
        BodyKind::Optional => {
            check_content_type(headers)?;
            parse_limited(&bytes, limits.json).map(Some)
        }
        BodyKind::Json | BodyKind::Upload => parse_limited(&bytes, limits.json).map(Some),
    }
}

/// The checked body as it goes upstream (re-serialised from the parsed form,
/// so nothing the strict parse did not see is forwarded).
pub fn to_bytes(v: &Value) -> Result<Bytes, serde_json::Error> {
    serde_json::to_vec(v).map(Bytes::from)
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
    let unbounded = usize::MAX;
    parse_limited(
        bytes,
        JsonLimits {
            max_depth,
            max_array_len: unbounded,
            max_object_members: unbounded,
            max_nodes: unbounded,
        },
    )
}

/// [`parse_strict`] with every [`JsonLimits`] limit (what the stage uses).
pub fn parse_limited(bytes: &[u8], limits: JsonLimits) -> Result<Value, BodyError> {
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
        max_depth: limits.max_depth.min(HARD_MAX_DEPTH),
        limits,
        nodes: 0,
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
    limits: JsonLimits,
    /// Values seen so far, against `limits.max_nodes`.
    nodes: usize,
}

fn too_many(what: &'static str, limit: usize) -> BodyError {
    BodyError::TooMany {
        what,
        limit,
        pointer: String::new(),
    }
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
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            return Err(too_many("JSON values", self.limits.max_nodes));
        }
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
            if map.len() >= self.limits.max_object_members {
                return Err(too_many("object members", self.limits.max_object_members));
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
            let value = self.value(depth).map_err(|e| e.within(&key))?;
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
            if items.len() >= self.limits.max_array_len {
                return Err(too_many("array elements", self.limits.max_array_len));
            }
            let index = items.len();
            items.push(
                self.value(depth)
                    .map_err(|e| e.within(&index.to_string()))?,
            );
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

        if is_float {
            self.float(start, mantissa_nonzero)
        } else {
            self.integer(start, int_start, int_end, negative)
        }
    }

    /// An integer literal, within I-JSON's exact range.
    fn integer(
        &self,
        start: usize,
        int_start: usize,
        int_end: usize,
        negative: bool,
    ) -> Result<Number, BodyError> {
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
        Ok(match (negative, magnitude) {
            (false, m) => Number::from(m),
            // serde_json reads `-0` as the float -0.0; do the same so both
            // parsers agree on every document this one accepts.
            (true, 0) => Number::from_f64(-0.0).unwrap_or_else(|| Number::from(0u64)),
            (true, m) => Number::from(-(m as i64)),
        })
    }

    /// A literal with a fraction or exponent, from `start` to the cursor.
    fn float(&self, start: usize, mantissa_nonzero: bool) -> Result<Number, BodyError> {
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
        Err(BodyError::TooMany { .. }) => return Ok(()),
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
mod tests;
