//! Objects with a life of their own: checks and workflow sessions (which
//! complete after the sandbox's delay with ComplyCube's test-data outcome),
//! reports, live videos, hosted-flow sessions, SDK
//! tokens and the audit log that records every change.
//!
//! Test-data triggers (ComplyCube's "testing data" page): a client whose
//! last name is `attention` gets outcome `attention`; `failed` gets
//! `not_processed` (checks only); anything else `clear`.
//! Failures are replies: 400 `invalid_request` with `param`, 404 for unknown
//! ids, 422 `invalid_check_update` / `pending_check_unmodifiable` on check
//! updates, as documented.

use serde_json::{Map, Value, json};

use super::{Ctx, Reply, exists, required_str};
use crate::sandbox::store::{Change, Kind, Obj, now_iso};

/// The documented check types (API v1.7.3 list).
pub(super) const CHECK_TYPES: &[&str] = &[
    "standard_screening_check",
    "extensive_screening_check",
    "document_check",
    "identity_check",
    "enhanced_identity_check",
    "proof_of_address_check",
    "multi_bureau_check",
    "eid_check",
    "ssn_check",
    "age_estimation_check",
    "identity_fraud_check",
    "driving_license_check",
    "device_intelligence_check",
    "email_intelligence_check",
    "mobile_intelligence_check",
    "face_authentication_check",
];

/// Which stored object each check type runs on, as ComplyCube requires.
fn needs(check_type: &str) -> &'static [(&'static str, Kind)] {
    use Kind::*;
    match check_type {
        "document_check" | "proof_of_address_check" | "driving_license_check" => {
            &[("documentId", Document)]
        }
        "identity_check" => &[("documentId", Document), ("livePhotoId", LivePhoto)],
        "enhanced_identity_check" => &[("documentId", Document), ("liveVideoId", LiveVideo)],
        "age_estimation_check" | "face_authentication_check" => &[("livePhotoId", LivePhoto)],
        "multi_bureau_check" | "identity_fraud_check" => &[("addressId", Address)],
        _ => &[],
    }
}

/// Completes whatever of this key's partition is due, before the request
/// that may read it is answered (no background task needed).
pub(super) fn settle(c: &mut Ctx<'_>) {
    for (kind, id) in c.store.take_due(c.key) {
        let Some(before) = c.store.get(c.key, kind, &id).cloned() else {
            continue; // deleted while pending
        };
        let outcome = outcome_for(c, &before, kind);
        let result = (kind == Kind::Check).then(|| check_result(c, &before, outcome));
        let Some(o) = c.store.get_mut(c.key, kind, &id) else {
            continue;
        };
        o.insert("status".into(), Value::String("complete".into()));
        match result {
            Some(r) => o.insert("result".into(), r),
            None => o.insert("outcome".into(), Value::String(outcome.into())),
        };
        o.insert("updatedAt".into(), Value::String(now_iso()));
        let after = o.clone();
        c.store
            .audit(c.key, Change::Complete, kind, Some(&before), Some(&after));
    }
}

/// The person details of the object's client, if any.
fn details_of<'a>(c: &'a Ctx<'_>, obj: &Obj) -> Option<&'a Obj> {
    obj.get("clientId")
        .and_then(Value::as_str)
        .and_then(|id| c.store.get(c.key, Kind::Client, id))
        .and_then(|cl| cl.get("personDetails"))
        .and_then(Value::as_object)
}

fn outcome_for(c: &Ctx<'_>, obj: &Obj, kind: Kind) -> &'static str {
    let last = details_of(c, obj)
        .and_then(|d| d.get("lastName"))
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    match last.as_deref() {
        Some("attention") => "attention",
        Some("failed") if kind == Kind::Check => "not_processed",
        _ => "clear",
    }
}

/// A completed check's `result`. Screening checks carry
/// `breakdown.matches`: one politically-exposed match for a client whose
/// outcome is `attention` or whose middle name is `medium-risk` (the
/// sandbox's risk-profile trigger for political exposure), which makes the
/// outcome `attention` until the match is validated.
fn check_result(c: &Ctx<'_>, check: &Obj, outcome: &str) -> Value {
    let screening = check
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.ends_with("_screening_check"));
    if !screening {
        return json!({ "outcome": outcome });
    }
    let pep = details_of(c, check)
        .and_then(|d| d.get("middleName"))
        .and_then(Value::as_str)
        == Some("medium-risk");
    let mut matches = Vec::new();
    if outcome == "attention" || pep {
        matches.push(json!({
            "id": c.store.new_id(),
            "entityType": "person",
            "matchType": "pep",
            "score": 90,
            "name": check.get("entityName").cloned().unwrap_or(Value::Null),
            "listName": "Sandbox PEP list",
        }));
    }
    let outcome = if matches.is_empty() {
        outcome
    } else {
        "attention"
    };
    json!({ "outcome": outcome, "breakdown": { "matches": matches } })
}

/// Validates a check's outcome. A screening check's matches are validated
/// one at a time (`matchId` required); once every match is rejected the
/// check is `clear`, and the answer is the check's outcome after the change.
fn validate_check(c: &mut Ctx<'_>, id: &str) -> Result<Reply, Reply> {
    let b = c.obj()?;
    let outcome = required_str(&b, "outcome")?.to_string();
    if !["confirmed", "rejected", "attention"].contains(&outcome.as_str()) {
        return Err(Reply::invalid(
            "outcome",
            "'outcome' must be one of [confirmed, rejected, attention]",
        ));
    }
    let Some(before) = c.store.get(c.key, Kind::Check, id).cloned() else {
        return Err(Reply::not_found("check", id));
    };
    if before.get("status").and_then(Value::as_str) != Some("complete") {
        return Err(Reply::error(
            422,
            "pending_check_unmodifiable",
            "A pending check cannot be validated",
            None,
        ));
    }
    let Some(Value::Array(matches)) = before
        .get("result")
        .and_then(|r| r.pointer("/breakdown/matches"))
        .cloned()
    else {
        return Ok(Reply::ok(json!({ "outcome": outcome })));
    };
    let match_id = required_str(&b, "matchId")?.to_string();
    let mut matches = matches;
    let Some(m) = matches.iter_mut().find(|m| m["id"] == match_id.as_str()) else {
        return Err(Reply::not_found("match", &match_id));
    };
    m["validation"] = Value::String(outcome);
    let overall = if matches.iter().all(|m| m["validation"] == "rejected") {
        "clear"
    } else {
        "attention"
    };
    let patch = json!({"result": {"outcome": overall, "breakdown": {"matches": matches}}});
    if let Value::Object(p) = patch {
        c.update(Kind::Check, id, p);
    }
    Ok(Reply::ok(json!({ "outcome": overall })))
}

/// Checks.
pub(super) fn checks(c: &mut Ctx<'_>, method: &str, segs: &[&str]) -> Result<Reply, Reply> {
    use Kind::*;
    let r = match (method, segs) {
        ("POST", ["checks"]) => create_check(c)?,
        ("GET", ["checks"]) => c.list(Check, false),
        ("GET", ["checks", id]) => c.get(Check, id),
        ("POST", ["checks", id]) => update_check(c, id)?,
        ("POST", ["checks", id, "validate"]) => validate_check(c, id)?,
        ("POST", ["checks", id, "redact"]) => {
            c.obj()?;
            c.get(Check, id)
        }
        _ => Reply::unknown_route(),
    };
    Ok(r)
}

fn create_check(c: &mut Ctx<'_>) -> Result<Reply, Reply> {
    use Kind::*;
    let mut b = c.obj()?;
    c.client_exists(&b)?;
    let ty = required_str(&b, "type")?.to_string();
    if !CHECK_TYPES.contains(&ty.as_str()) {
        return Err(Reply::invalid(
            "type",
            &format!("'type' must be one of [{}]", CHECK_TYPES.join(", ")),
        ));
    }
    for (field, kind) in needs(&ty) {
        let id = required_str(&b, field)
            .map_err(|_| Reply::invalid(field, &format!("'{field}' is required for a {ty}")))?;
        exists(c, *kind, id)?;
    }
    let entity = b
        .get("clientId")
        .and_then(Value::as_str)
        .and_then(|id| c.store.get(c.key, Client, id))
        .and_then(|cl| cl.get("entityName"))
        .cloned()
        .unwrap_or(Value::Null);
    b.insert("entityName".into(), entity);
    b.insert("status".into(), Value::String("pending".into()));
    b.entry("enableMonitoring").or_insert(Value::Bool(false));
    let o = c.create(Check, b);
    if let Some(id) = o.get("id").and_then(Value::as_str) {
        c.store.schedule(c.key, Check, id);
    }
    Ok(Reply::ok(Value::Object(o)))
}

/// Only `enableMonitoring` of a completed screening check may change.
fn update_check(c: &mut Ctx<'_>, id: &str) -> Result<Reply, Reply> {
    let b = c.obj()?;
    let Some(stored) = c.store.get(c.key, Kind::Check, id) else {
        return Ok(Reply::not_found("check", id));
    };
    let mut patch = Map::new();
    if let Some(v) = b.get("enableMonitoring") {
        let screening = stored
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with("_screening_check"));
        if !screening {
            return Err(Reply::error(
                422,
                "invalid_check_update",
                "Only screening checks can be monitored",
                None,
            ));
        }
        if stored.get("status").and_then(Value::as_str) == Some("pending") {
            return Err(Reply::error(
                422,
                "pending_check_unmodifiable",
                "A pending check cannot be modified",
                None,
            ));
        }
        patch.insert("enableMonitoring".into(), v.clone());
    }
    Ok(c.update(Kind::Check, id, patch))
}

/// Workflow sessions: created by a workflow-driven hosted-flow session,
/// `started` until asked to complete, then `processing` until the delay
/// has passed, then `complete` with an `outcome`.
pub(super) fn workflow_sessions(
    c: &mut Ctx<'_>,
    method: &str,
    segs: &[&str],
) -> Result<Reply, Reply> {
    use Kind::*;
    let r = match (method, segs) {
        ("GET", ["workflowSessions"]) => c.list(WorkflowSession, false),
        ("GET", ["workflowSessions", id]) => c.get(WorkflowSession, id),
        ("POST", ["workflowSessions", id, "complete"]) => {
            let Some(o) = c.store.get_mut(c.key, WorkflowSession, id) else {
                return Ok(Reply::not_found(WorkflowSession.name(), id));
            };
            if o.get("status").and_then(Value::as_str) == Some("started") {
                o.insert("status".into(), Value::String("processing".into()));
                o.insert("updatedAt".into(), Value::String(now_iso()));
                c.store.schedule(c.key, WorkflowSession, id);
            }
            let status = c
                .store
                .get(c.key, WorkflowSession, id)
                .and_then(|o| o.get("status"))
                .cloned()
                .unwrap_or(Value::Null);
            Reply::ok(json!({ "status": status }))
        }
        _ => Reply::unknown_route(),
    };
    Ok(r)
}

/// Hosted flow and SDK tokens.
pub(super) fn flow_and_tokens(
    c: &mut Ctx<'_>,
    method: &str,
    segs: &[&str],
) -> Result<Reply, Reply> {
    let r = match (method, segs) {
        ("POST", ["flow", "sessions"]) => {
            let b = c.obj()?;
            c.client_exists(&b)?;
            let session = c.store.new_id();
            if let Some(t) = b.get("workflowTemplateId").and_then(Value::as_str) {
                let mut s = Map::new();
                s.insert("clientId".into(), b["clientId"].clone());
                s.insert("workflowTemplateId".into(), Value::String(t.to_string()));
                s.insert("status".into(), Value::String("started".into()));
                let o = c.create(Kind::WorkflowSession, s);
                if let Some(Value::String(id)) = o.get("id") {
                    return Ok(Reply::ok(json!({
                        "redirectUrl": format!("https://flow.complycube.com/{id}")
                    })));
                }
            }
            Reply::ok(json!({"redirectUrl": format!("https://flow.complycube.com/{session}")}))
        }
        ("POST", ["tokens"]) => {
            let b = c.obj()?;
            c.client_exists(&b)?;
            token_target_ok(&b)?;
            Reply::ok(
                json!({"token": format!("eyJhbGciOiJIUzI1NiJ9.sandbox.{}", c.store.new_id())}),
            )
        }
        _ => Reply::unknown_route(),
    };
    Ok(r)
}

/// A token is for a web page (`referrer`, a Chrome-style match pattern
/// `<scheme>://<host>/<path>` with `*` wildcards) or a mobile app (`appId`,
/// a reverse-domain bundle id); anything else is what ComplyCube refuses.
fn token_target_ok(b: &Obj) -> Result<(), Reply> {
    if let Some(v) = b.get("referrer") {
        let ok = v.as_str().is_some_and(match_pattern_ok);
        if !ok {
            return Err(Reply::invalid(
                "referrer",
                "'referrer' must be a URL match pattern such as 'https://*.example.com/*'",
            ));
        }
    }
    if let Some(v) = b.get("appId") {
        let ok = v.as_str().is_some_and(|s| {
            let parts: Vec<&str> = s.split('.').collect();
            parts.len() >= 2
                && parts.iter().all(|p| {
                    !p.is_empty()
                        && p.chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
                })
        });
        if !ok {
            return Err(Reply::invalid(
                "appId",
                "'appId' must be an application id such as 'com.example.app'",
            ));
        }
    }
    Ok(())
}

pub(super) fn match_pattern_ok(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    if !["*", "http", "https"].contains(&scheme) {
        return false;
    }
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = host.strip_prefix("*.").unwrap_or(host);
    let host_ok = host == "*"
        || (!host.is_empty()
            && host.split(':').next().is_some_and(|h| {
                !h.is_empty()
                    && h.chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '.' || ch == '-')
            }));
    host_ok && !path.chars().any(char::is_whitespace)
}

/// Reports of a client or a check; a pending check's report says so (PHP's
/// integration suite asks for one right after creating the check).
pub(super) fn reports(c: &mut Ctx<'_>, method: &str, segs: &[&str]) -> Result<Reply, Reply> {
    use Kind::*;
    let r = match (method, segs) {
        ("GET", ["reports"]) => {
            let (kind, id) = if let Some(id) = c.q("clientId") {
                (Client, id.to_string())
            } else if let Some(id) = c.q("checkId") {
                (Check, id.to_string())
            } else {
                return Err(Reply::invalid(
                    "clientId",
                    "'clientId' or 'checkId' must be provided",
                ));
            };
            let Some(o) = c.store.get(c.key, kind, &id) else {
                return Err(Reply::not_found(kind.name(), &id));
            };
            Reply::ok(json!({"contentType": "application/pdf", "data": report_pdf(kind, o)}))
        }
        _ => Reply::unknown_route(),
    };
    Ok(r)
}

/// A small but well-formed PDF naming the report's subject, base64-encoded.
fn report_pdf(kind: Kind, o: &Obj) -> String {
    let s = |k: &str| {
        o.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let line = match kind {
        Kind::Check => format!(
            "Check {} ({}) outcome: {}",
            s("id"),
            s("type"),
            o.get("result")
                .and_then(|r| r.get("outcome"))
                .and_then(Value::as_str)
                .unwrap_or("pending")
        ),
        _ => format!("Client {} report", s("id")),
    };
    let text: String = line
        .chars()
        .filter(|ch| ch.is_ascii_alphanumeric() || " _:-".contains(*ch))
        .collect();
    let stream = format!("BT /F1 12 Tf 72 720 Td (ComplyCube sandbox: {text}) Tj ET");
    let objs = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    let mut pdf = String::from("%PDF-1.4\n");
    let mut offsets = Vec::new();
    for (i, body) in objs.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.push_str(&format!("{} 0 obj\n{body}\nendobj\n", i + 1));
    }
    let xref = pdf.len();
    pdf.push_str(&format!(
        "xref\n0 {}\n0000000000 65535 f \n",
        objs.len() + 1
    ));
    for off in offsets {
        pdf.push_str(&format!("{off:010} 00000 n \n"));
    }
    pdf.push_str(&format!(
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objs.len() + 1
    ));
    base64(pdf.as_bytes())
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Live videos: the create the PHP SDK calls answers with the challenges a
/// capture would have shown.
pub(super) fn live_videos(c: &mut Ctx<'_>, method: &str, segs: &[&str]) -> Result<Reply, Reply> {
    use Kind::*;
    let r = match (method, segs) {
        ("POST", ["liveVideos"]) => {
            let b = c.obj()?;
            c.client_exists(&b)?;
            let mut v = Map::new();
            v.insert("clientId".into(), b["clientId"].clone());
            v.insert("language".into(), Value::String("en".into()));
            v.insert(
                "challenges".into(),
                json!([
                    {"type": "head_turn", "value": "left"},
                    {"type": "recite_digits", "value": "4921"}
                ]),
            );
            Reply::ok(Value::Object(c.create(LiveVideo, v)))
        }
        ("GET", ["liveVideos"]) => c.list(LiveVideo, true),
        ("GET", ["liveVideos", id]) => c.get(LiveVideo, id),
        ("POST", ["liveVideos", id, "redact"]) => c.get(LiveVideo, id),
        ("DELETE", ["liveVideos", id]) => c.delete(LiveVideo, id),
        _ => Reply::unknown_route(),
    };
    Ok(r)
}

/// The audit log (read only) and team members (none in the sandbox, so
/// every id is unknown).
pub(super) fn audit_logs(c: &mut Ctx<'_>, method: &str, segs: &[&str]) -> Result<Reply, Reply> {
    let r = match (method, segs) {
        ("GET", ["auditLogs"]) => c.list(Kind::AuditLog, false),
        ("GET", ["auditLogs", id]) => c.get(Kind::AuditLog, id),
        _ => Reply::unknown_route(),
    };
    Ok(r)
}

#[cfg(test)]
mod tests;
