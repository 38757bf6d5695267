//! The audit record schema (version 1) and the value types it is built from.
//!
//! Input: what the pipeline knows about a request — names, JSON pointers,
//! path ids, enums and numbers — filled into an [`AuditEvent`].
//! Output: one [`Record`] per line of an audit file (`"v": 1`).
//! Failures: every text field is a validated newtype; a constructor refuses
//! anything outside its narrow alphabet with a [`RecordError`] that names the
//! field kind, never the rejected text.
//!
//! Why newtypes and not `String`: the audit trail must never hold a value
//! from a body, a query string or a response (PII). `AuditEvent` therefore has
//! no field that accepts free text. A [`Name`] is a short identifier
//! (`[A-Za-z0-9_.:-]`, no `@`, no spaces), a [`Pointer`] is a JSON pointer
//! whose segments are identifier-like (an e-mail address or a sentence is not
//! a valid segment), ids are `[A-Za-z0-9_-]`, and the two digest types
//! ([`Fingerprint`], [`Digest`]) can only be produced by the keyed HMAC
//! functions in this module (or parsed back from a file as lowercase hex).
//! A value can therefore only get in if someone deliberately passes a
//! PII value that happens to look like an identifier as an id — which is why
//! resource ids must come from the route's validated path parameters only.
//!
//! A line (shown wrapped; optional keys are omitted when empty):
//!
//! ```text
//! {"v":1,"seq":42,"time":"2026-11-29T10:00:00.123Z","instance":"web-1",
//!  "kind":"outcome","request_id":"6f1c…","trace_id":"4bf9…","caller":"onboarding",
//!  "tenant":"acme","environment":"live","operation":"clients.update",
//!  "resource_ids":{"id":"5f3b1c2d9e8a7b6c5d4e3f2a"},"fields":["/email","/type"],
//!  "stripped":["/type"],"query_params":[],"decision":"allowed","status":200,
//!  "latency_ms":87,"key_fingerprint":"9c1e0a7b3d5f2e4a",
//!  "field_hmacs":{"/email":"<64 hex>"},"prev":"<64 hex: SHA-256 of line 41>"}
//! ```

use std::collections::BTreeMap;
use std::fmt;

use ring::hmac;

use crate::secret::hex;
use serde::{Deserialize, Serialize};

/// The schema version written into every record as `"v"`.
pub const SCHEMA_VERSION: u32 = 1;

/// A value refused by one of the newtype constructors. Names the field kind,
/// never the refused text (it may be PII).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid audit {kind}: must be {rule}")]
pub struct RecordError {
    /// Which newtype refused (`name`, `pointer`, `id`, `digest`).
    pub kind: &'static str,
    /// The rule that was broken, in words.
    pub rule: &'static str,
}

fn check(
    s: &str,
    kind: &'static str,
    rule: &'static str,
    max: usize,
    ok: impl Fn(char) -> bool,
) -> Result<(), RecordError> {
    // Every alphabet here is ASCII, so a byte test is the char test (a
    // non-ASCII byte maps to a char no predicate accepts).
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| ok(b as char)) {
        return Err(RecordError { kind, rule });
    }
    Ok(())
}

/// Serialised as the plain string. (serde's `into = "String"` would clone
/// it first: an allocation per field on every audit line.)
macro_rules! serialize_as_str {
    ($name:ty) => {
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $rule:literal, $max:expr, $pred:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        serialize_as_str!($name);

        impl $name {
            /// Validates and wraps `s`; the error never contains `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, RecordError> {
                let s = s.into();
                check(&s, $kind, $rule, $max, $pred)?;
                Ok(Self(s))
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = RecordError;
            fn try_from(s: String) -> Result<Self, RecordError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
}

fn is_hex_char(c: char) -> bool {
    c.is_ascii_digit() || ('a'..='f').contains(&c)
}

text_newtype!(
    /// A short identifier: caller, tenant, operation id, instance, reason,
    /// query parameter name, path parameter name.
    Name, "name", "1-64 chars of [A-Za-z0-9_.:-]", 64, is_name_char
);

text_newtype!(
    /// A resource id taken from a validated path parameter (a ComplyCube id).
    ResourceId, "id", "1-64 chars of [A-Za-z0-9_-]", 64, is_id_char
);

text_newtype!(
    /// A request or trace id (gateway-generated or W3C trace id).
    RequestId, "request id", "1-128 chars of [A-Za-z0-9_-]", 128, is_id_char
);

/// A JSON pointer (RFC 6901) naming a body field, e.g. `/address/line`.
/// Segments are limited to `[A-Za-z0-9_-]` plus the `~0`/`~1` escapes, so a
/// free-text value cannot pass as a pointer by accident; a segment `*`
/// stands for keys the caller chose (which are never written).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Pointer(String);

serialize_as_str!(Pointer);

/// [`POINTER_RULE`] in one pass over the bytes (this runs for every field
/// of every audited request).
fn pointer_ok(s: &[u8]) -> bool {
    if s.len() > 256 || s.first() != Some(&b'/') {
        return false;
    }
    let mut seg_len = 0usize;
    for (i, &c) in s.iter().enumerate().skip(1) {
        match c {
            b'/' if seg_len == 0 => return false,
            b'/' => seg_len = 0,
            // A lone `~` not followed by 0/1 is not a valid pointer escape.
            b'~' if !matches!(s.get(i + 1), Some(b'0' | b'1')) => return false,
            b'~' | b'_' | b'-' => seg_len += 1,
            // `*` stands for caller-chosen keys: only as a whole segment.
            b'*' if seg_len == 0 && matches!(s.get(i + 1), None | Some(b'/')) => seg_len += 1,
            c if c.is_ascii_alphanumeric() => seg_len += 1,
            _ => return false,
        }
        if seg_len > 64 {
            return false;
        }
    }
    seg_len > 0
}

const POINTER_RULE: &str =
    "a JSON pointer of at most 256 chars whose segments are 1-64 chars of [A-Za-z0-9_~-] or `*`";

impl Pointer {
    /// Validates and wraps a pointer; the error never contains `s`.
    pub fn new(s: impl Into<String>) -> Result<Self, RecordError> {
        let s = s.into();
        if !pointer_ok(s.as_bytes()) {
            return Err(RecordError {
                kind: "pointer",
                rule: POINTER_RULE,
            });
        }
        Ok(Self(s))
    }

    /// The validated pointer text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Pointer {
    type Error = RecordError;
    fn try_from(s: String) -> Result<Self, RecordError> {
        Self::new(s)
    }
}

impl From<Pointer> for String {
    fn from(v: Pointer) -> String {
        v.0
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// First 16 hex chars of HMAC-SHA256(fingerprint key, upstream key): tells
/// which upstream key was used without revealing it. Only [`key_fingerprint`]
/// creates one (deserialising checks the shape).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Fingerprint(String);

serialize_as_str!(Fingerprint);

impl TryFrom<String> for Fingerprint {
    type Error = RecordError;
    fn try_from(s: String) -> Result<Self, RecordError> {
        check(&s, "fingerprint", "16 lowercase hex chars", 16, is_hex_char)?;
        if s.len() != 16 {
            return Err(RecordError {
                kind: "fingerprint",
                rule: "16 lowercase hex chars",
            });
        }
        Ok(Self(s))
    }
}

impl From<Fingerprint> for String {
    fn from(v: Fingerprint) -> String {
        v.0
    }
}

impl Fingerprint {
    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Full hex HMAC-SHA256 of a field value under the field-HMAC key. Only
/// [`field_hmac`] creates one (deserialising checks the shape).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Digest(String);

serialize_as_str!(Digest);

impl TryFrom<String> for Digest {
    type Error = RecordError;
    fn try_from(s: String) -> Result<Self, RecordError> {
        check(&s, "digest", "64 lowercase hex chars", 64, is_hex_char)?;
        if s.len() != 64 {
            return Err(RecordError {
                kind: "digest",
                rule: "64 lowercase hex chars",
            });
        }
        Ok(Self(s))
    }
}

impl From<Digest> for String {
    fn from(v: Digest) -> String {
        v.0
    }
}

impl Digest {
    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    hmac_hex_keyed(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
}

fn hmac_hex_keyed(key: &hmac::Key, data: &[u8]) -> String {
    hex(hmac::sign(key, data).as_ref())
}

/// Keyed fingerprint of an upstream (ComplyCube) key: the first 16 hex chars
/// of HMAC-SHA256(`key`, `upstream_key`). Without `key` it cannot be
/// brute-forced from the log; it never contains the upstream key.
pub fn key_fingerprint(key: &[u8], upstream_key: &str) -> String {
    fingerprint(key, upstream_key).0
}

/// Typed form of [`key_fingerprint`] for an [`AuditEvent`].
pub fn fingerprint(key: &[u8], upstream_key: &str) -> Fingerprint {
    fingerprint_keyed(&hmac::Key::new(hmac::HMAC_SHA256, key), upstream_key)
}

/// Hex HMAC-SHA256 of a field value under the field-HMAC key, so equal values
/// can be matched across records without storing them.
pub fn field_hmac(key: &[u8], value_bytes: &[u8]) -> String {
    hmac_hex(key, value_bytes)
}

/// Typed form of [`field_hmac`] for [`AuditEvent::field_hmacs`].
pub fn field_digest(key: &[u8], value_bytes: &[u8]) -> Digest {
    Digest(field_hmac(key, value_bytes))
}

/// [`fingerprint`] with the key already prepared (the log keeps one, so the
/// HMAC key schedule is not redone on every request).
pub(crate) fn fingerprint_keyed(key: &hmac::Key, upstream_key: &str) -> Fingerprint {
    let mut h = hmac_hex_keyed(key, upstream_key.as_bytes());
    h.truncate(16);
    Fingerprint(h)
}

/// [`field_digest`] with the key already prepared.
pub(crate) fn field_digest_keyed(key: &hmac::Key, value_bytes: &[u8]) -> Digest {
    Digest(hmac_hex_keyed(key, value_bytes))
}

/// Which step of a request a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Written (durably) before a PII request goes upstream.
    Intent,
    /// What happened: upstream or gateway status, latency.
    Outcome,
    /// A security event with no intent: a refusal (auth, policy, …).
    Event,
}

impl Kind {
    /// The snake_case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Intent => "intent",
            Kind::Outcome => "outcome",
            Kind::Event => "event",
        }
    }
}

pub use crate::model::Environment;

/// What the gateway decided about the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Forwarded (or about to be) upstream.
    Allowed,
    /// 401: no/unknown credential, raw ComplyCube key presented.
    RefusedAuth,
    /// 403: caller may not use this operation or environment.
    RefusedForbidden,
    /// 404/405 or a refused path (dot segments, odd ids).
    RefusedRoute,
    /// 400/413/415 before the schema: malformed JSON, too large, wrong type.
    RefusedBody,
    /// A field the operation must not send.
    RefusedPolicy,
    /// JSON Schema violation.
    RefusedValidation,
    /// 429 after the allowed wait.
    RefusedRateLimit,
    /// 503 `audit_unavailable`. The event itself usually cannot be written
    /// either; the failure is counted in `cubegate_audit_failures_total`.
    RefusedAudit,
}

impl Decision {
    /// The snake_case wire name (`refused_policy`).
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::RefusedAuth => "refused_auth",
            Decision::RefusedForbidden => "refused_forbidden",
            Decision::RefusedRoute => "refused_route",
            Decision::RefusedBody => "refused_body",
            Decision::RefusedPolicy => "refused_policy",
            Decision::RefusedValidation => "refused_validation",
            Decision::RefusedRateLimit => "refused_rate_limit",
            Decision::RefusedAudit => "refused_audit",
        }
    }
}

/// What the pipeline fills in for one record. Every field is a name, pointer,
/// id, enum, number or keyed digest — there is deliberately no field that can
/// hold a body, query or response value (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// intent / outcome / event.
    pub kind: Kind,
    /// The gateway's own request id; joins intent and outcome. Never taken
    /// from the caller, so two requests can never share it.
    pub request_id: RequestId,
    /// The caller's `X-Request-Id`, when it sent a valid one: kept beside
    /// the gateway's id to find the caller's request, never used to join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_request_id: Option<RequestId>,
    /// W3C trace id when tracing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<RequestId>,
    /// The identified caller; `None` when identification failed.
    #[serde(default)]
    pub caller: Option<Name>,
    /// The caller's tenant.
    #[serde(default)]
    pub tenant: Option<Name>,
    /// live / test.
    #[serde(default)]
    pub environment: Option<Environment>,
    /// Operation id (`clients.update`); `None` when routing failed.
    #[serde(default)]
    pub operation: Option<Name>,
    /// Path parameter name -> id (`{"id": "5f…"}`).
    #[serde(default)]
    pub resource_ids: BTreeMap<Name, ResourceId>,
    /// JSON pointers of the fields present in the body as received: the
    /// first few, caller-chosen keys shown as `*` (see [`FieldSummary`]).
    #[serde(default)]
    pub fields: Vec<Pointer>,
    /// How many members and elements the body held in all, when `fields`
    /// does not list them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields_total: Option<u64>,
    /// The body's nesting depth, when `fields` does not list every field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields_depth: Option<u32>,
    /// JSON pointers removed by policy.
    #[serde(default)]
    pub stripped: Vec<Pointer>,
    /// Query parameter names (values carry PII and are never recorded).
    #[serde(default)]
    pub query_params: Vec<Name>,
    /// The gateway's decision.
    pub decision: Decision,
    /// A summary record of the refusal budget: this many refusals of the
    /// kind in `reason` were answered 429 and not recorded one by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
    /// Short error type (`unauthorized`, `invalid_request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Name>,
    /// Upstream or gateway status (outcome and event records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Time from accept to response, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Keyed fingerprint of the upstream key used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<Fingerprint>,
    /// Pointer -> keyed HMAC of that field's value, configured pointers only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub field_hmacs: BTreeMap<Pointer, Digest>,
    /// Lists were cut: to the configured number of pointers, or to keep the
    /// record under the size bound ([`AuditEvent::fit`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl AuditEvent {
    /// An event with only the mandatory parts; the pipeline sets the rest.
    pub fn new(kind: Kind, request_id: RequestId, decision: Decision) -> Self {
        Self {
            kind,
            request_id,
            caller_request_id: None,
            trace_id: None,
            caller: None,
            tenant: None,
            environment: None,
            operation: None,
            resource_ids: BTreeMap::new(),
            fields: Vec::new(),
            fields_total: None,
            fields_depth: None,
            stripped: Vec::new(),
            query_params: Vec::new(),
            decision,
            suppressed: None,
            reason: None,
            status: None,
            latency_ms: None,
            key_fingerprint: None,
            field_hmacs: BTreeMap::new(),
            truncated: false,
        }
    }

    /// The matching outcome of this intent: same identity, new kind, status
    /// and latency.
    pub fn into_outcome(mut self, status: u16, latency_ms: u64) -> Self {
        self.kind = Kind::Outcome;
        self.status = Some(status);
        self.latency_ms = Some(latency_ms);
        self
    }
}

/// One line of an audit file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Schema version, [`SCHEMA_VERSION`].
    pub v: u32,
    /// Per-instance sequence number, from 1, continuing across files.
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The writing instance.
    pub instance: Name,
    /// The event itself.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Hex SHA-256 of the previous record's line bytes (without the newline),
    /// or of the instance's genesis marker for seq 1.
    pub prev: String,
}

/// A record as it is written: borrows its parts, so appending copies
/// nothing. Serialises exactly as [`Record`] (same fields, same order, the
/// event flattened); a unit test holds the two together. The log writes it
/// with [`RecordRef::write_json`]; the `Serialize` derive stays as the
/// reference that writer is tested against (and for the criterion bench).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RecordRef<'a> {
    /// Schema version, [`SCHEMA_VERSION`].
    pub v: u32,
    /// Per-instance sequence number.
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds.
    pub time: &'a str,
    /// The writing instance.
    pub instance: &'a Name,
    /// The event itself.
    #[serde(flatten)]
    pub event: &'a AuditEvent,
    /// Hex SHA-256 of the previous record's line.
    pub prev: &'a str,
}

impl RecordRef<'_> {
    /// Appends the record's line (without the newline) to `out`: byte for
    /// byte what `serde_json::to_writer(out, self)` writes (unit tests hold
    /// the two together), written by hand because serde's `flatten` goes
    /// through its map machinery and every string through the escaper,
    /// while every text here is a newtype whose alphabet needs no escape
    /// (the cost is in docs/performance.md). Each string is still checked
    /// and escaped by serde_json if it needed it, so the output never
    /// depends on those invariants.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"v\":");
        num(out, u64::from(self.v));
        out.extend_from_slice(b",\"seq\":");
        num(out, self.seq);
        out.extend_from_slice(b",\"time\":");
        text(out, self.time);
        out.extend_from_slice(b",\"instance\":");
        text(out, self.instance.as_str());
        write_event(out, self.event);
        out.extend_from_slice(b",\"prev\":");
        text(out, self.prev);
        out.push(b'}');
    }
}

/// The event's fields of a record line, in [`AuditEvent`]'s order, each
/// preceded by its comma.
fn write_event(out: &mut Vec<u8>, event: &AuditEvent) {
    // Every field by name, no `..`: a field added to the event does not
    // compile here until it is written (and the test then compares it).
    let AuditEvent {
        kind,
        request_id,
        caller_request_id,
        trace_id,
        caller,
        tenant,
        environment,
        operation,
        resource_ids,
        fields,
        fields_total,
        fields_depth,
        stripped,
        query_params,
        decision,
        suppressed,
        reason,
        status,
        latency_ms,
        key_fingerprint,
        field_hmacs,
        truncated,
    } = event;
    out.extend_from_slice(b",\"kind\":");
    text(out, kind.as_str());
    out.extend_from_slice(b",\"request_id\":");
    text(out, request_id.as_str());
    if let Some(c) = caller_request_id {
        out.extend_from_slice(b",\"caller_request_id\":");
        text(out, c.as_str());
    }
    if let Some(t) = trace_id {
        out.extend_from_slice(b",\"trace_id\":");
        text(out, t.as_str());
    }
    out.extend_from_slice(b",\"caller\":");
    opt_text(out, caller.as_ref().map(Name::as_str));
    out.extend_from_slice(b",\"tenant\":");
    opt_text(out, tenant.as_ref().map(Name::as_str));
    out.extend_from_slice(b",\"environment\":");
    opt_text(out, environment.map(Environment::as_str));
    out.extend_from_slice(b",\"operation\":");
    opt_text(out, operation.as_ref().map(Name::as_str));
    out.extend_from_slice(b",\"resource_ids\":");
    map(
        out,
        resource_ids.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    out.extend_from_slice(b",\"fields\":");
    list(out, fields.iter().map(Pointer::as_str));
    opt_num(out, b",\"fields_total\":", *fields_total);
    opt_num(out, b",\"fields_depth\":", fields_depth.map(u64::from));
    out.extend_from_slice(b",\"stripped\":");
    list(out, stripped.iter().map(Pointer::as_str));
    out.extend_from_slice(b",\"query_params\":");
    list(out, query_params.iter().map(Name::as_str));
    out.extend_from_slice(b",\"decision\":");
    text(out, decision.as_str());
    opt_num(out, b",\"suppressed\":", *suppressed);
    write_tail(
        out,
        reason.as_ref(),
        *status,
        *latency_ms,
        key_fingerprint.as_ref(),
        field_hmacs,
        *truncated,
    );
}

/// The optional parts after `decision`, in [`AuditEvent`]'s order.
fn write_tail(
    out: &mut Vec<u8>,
    reason: Option<&Name>,
    status: Option<u16>,
    latency_ms: Option<u64>,
    key_fingerprint: Option<&Fingerprint>,
    field_hmacs: &BTreeMap<Pointer, Digest>,
    truncated: bool,
) {
    if let Some(r) = reason {
        out.extend_from_slice(b",\"reason\":");
        text(out, r.as_str());
    }
    if let Some(st) = status {
        out.extend_from_slice(b",\"status\":");
        num(out, u64::from(st));
    }
    if let Some(ms) = latency_ms {
        out.extend_from_slice(b",\"latency_ms\":");
        num(out, ms);
    }
    if let Some(f) = key_fingerprint {
        out.extend_from_slice(b",\"key_fingerprint\":");
        text(out, f.as_str());
    }
    if !field_hmacs.is_empty() {
        out.extend_from_slice(b",\"field_hmacs\":");
        map(
            out,
            field_hmacs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
    }
    if truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
}

/// `key` and the number, when there is one (a key skipped when absent).
fn opt_num(out: &mut Vec<u8>, key: &[u8], n: Option<u64>) {
    if let Some(n) = n {
        out.extend_from_slice(key);
        num(out, n);
    }
}

fn num(out: &mut Vec<u8>, n: u64) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{n}");
}

/// A JSON string: as is when nothing in it needs escaping (always, for the
/// newtypes), else serde_json's escaping.
fn text(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Serialising a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn opt_text(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => text(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn list<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = &'a str>) {
    out.push(b'[');
    for (i, s) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        text(out, s);
    }
    out.push(b']');
}

fn map<'a>(out: &mut Vec<u8>, entries: impl Iterator<Item = (&'a str, &'a str)>) {
    out.push(b'{');
    for (i, (k, v)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        text(out, k);
        out.push(b':');
        text(out, v);
    }
    out.push(b'}');
}

mod fit;
pub use fit::{ENVELOPE_BYTES, event_len_bound};

#[cfg(test)]
mod tests;
