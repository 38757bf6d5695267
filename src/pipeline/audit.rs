//! The pipeline's two audit steps. `intent`: before anything that changes
//! personal data goes upstream, a durable record of who asked for what
//! (failing with [`IntentNotWritten`], so the request is refused). `outcome`:
//! after every request, the record of what happened, derived from the intent
//! when there was one. Records hold only names, ids, pointers, numbers and
//! keyed digests: [`AuditEvent`]'s field types cannot hold a body or query
//! value. What of a body is shown is in `fields` (caller-chosen keys as `*`,
//! lists capped); the ids a create's answer links are in `answer`.

use std::time::Instant;

use tracing::{Instrument, info_span};

use super::Ctx;
use super::policy;
use crate::audit::{AuditEvent, AuditLog, Decision, FieldValues, Kind, Name, Pointer};
use crate::error::Rescue;
use crate::operations::OperationDef;
use crate::secret::Secret;
use crate::snapshot::Snapshot;
use crate::telemetry;

mod answer;
mod fields;
pub use answer::{AnswerIds, MAX_PEEK_BYTES, records_created_id};
pub use fields::{FieldList, LINK_KEYS, collapse, links, summarise};

/// [`answer::peek_created`] with the snapshot's idle bound.
pub async fn peek_created(
    resp: http::Response<crate::pipeline::forward::UpstreamBody>,
    snap: &Snapshot,
    out: &mut AnswerIds,
) -> Result<
    http::Response<crate::pipeline::respond::GatewayBody>,
    crate::pipeline::forward::ForwardError,
> {
    let idle = std::time::Duration::from_millis(snap.listener.body_timeout_ms);
    answer::peek_created(resp, idle, out).await
}

/// The intent record could not be written; the request is not forwarded.
#[derive(Debug, thiserror::Error)]
#[error("audit intent not written: {0}")]
pub struct IntentNotWritten(pub String);

/// Whether an allowed request of this operation gets a record: one rule for
/// the outcome (which also records every refusal) and for the field values
/// copied before the limiter for that record.
pub fn audited_op(def: &OperationDef, snap: &Snapshot) -> bool {
    def.touches_pii() || snap.audit.record_all
}

/// The `hmac_fields` values of a body whose record will be written. They
/// are hashed only once the limiter lets the request through, so a
/// rate-limit refusal neither pays for the HMACs nor records digests.
pub fn field_values(
    audit: Option<&AuditLog>,
    snap: &Snapshot,
    def: &OperationDef,
    body: Option<&serde_json::Value>,
) -> FieldValues {
    match (audit, body) {
        (Some(audit), Some(v)) if audited_op(def, snap) => audit.field_values(v),
        _ => Default::default(),
    }
}

/// Keyed digests and the key fingerprint, then the write-ahead intent for an
/// operation that changes PII.
pub async fn intent(
    audit: Option<&AuditLog>,
    snap: &Snapshot,
    ctx: &mut Ctx,
    values: FieldValues,
    key: Option<&Secret>,
) -> Result<(), IntentNotWritten> {
    let Some(audit) = audit else {
        return Ok(());
    };
    if !values.is_empty() {
        ctx.field_hmacs = audit.field_hmacs(values);
    }
    ctx.key_fingerprint = key.map(|k| audit.fingerprint(k.expose()));
    let changes_pii = ctx
        .routed
        .as_ref()
        .is_some_and(|r| r.op.def().changes_pii());
    if !changes_pii {
        return Ok(());
    }
    if below_watermark(audit, snap) {
        return Err(IntentNotWritten("audit disk below min_free_bytes".into()));
    }
    let t = Instant::now();
    let intent = event(ctx, snap, Kind::Intent, Decision::Allowed, None, None);
    let r = match &intent {
        Some(ev) => audit
            .append(ev)
            .instrument(info_span!("audit_intent"))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        None => Err("request id not recordable".to_string()),
    };
    telemetry::audit_write(t.elapsed(), r.is_ok());
    ctx.intent = intent;
    r.map_err(IntentNotWritten)
}

/// Whether the audit file system has less free space than
/// `[audit] min_free_bytes` (never when that is 0 or unknown). Sets the
/// watermark gauges, so the metric follows what requests see.
pub fn below_watermark(audit: &AuditLog, snap: &Snapshot) -> bool {
    let min = snap.audit.min_free_bytes;
    let free = audit.disk_free();
    let tripped = min > 0 && free.is_some_and(|f| f < min);
    telemetry::audit_disk(free, tripped);
    tripped
}

/// The outcome record: every refusal, every allowed request of an audited
/// operation, and the outcome of every intent. A failure to write it is
/// logged and counted; the answer has already been decided.
pub async fn outcome(
    audit: &AuditLog,
    snap: &Snapshot,
    ctx: &mut Ctx,
    status: u16,
    rescue: Option<&Rescue<'_>>,
) {
    if ctx.audit_suppressed {
        return;
    }
    let decision = rescue.and_then(|r| r.decision).unwrap_or(Decision::Allowed);
    let reason = reason(ctx, rescue);
    let kind = if decision == Decision::Allowed {
        Kind::Outcome
    } else {
        Kind::Event
    };
    let record = match ctx.intent.take() {
        // After an intent only the kind, decision, status, latency and
        // reason can be new.
        Some(intent) => {
            let mut ev = intent.into_outcome(status, ctx.started.elapsed().as_millis() as u64);
            ev.kind = kind;
            ev.decision = decision;
            ev.reason = reason;
            add_answer(&mut ev, &ctx.answer);
            Some(ev)
        }
        None => {
            let wanted = decision != Decision::Allowed
                || rescue.is_some_and(|r| r.security_event)
                || ctx
                    .routed
                    .as_ref()
                    .is_some_and(|r| audited_op(r.op.def(), snap));
            // Most non-PII requests are not audited: build nothing for them.
            if !wanted {
                return;
            }
            event(ctx, snap, kind, decision, Some(status), reason)
        }
    };
    let Some(ev) = record else {
        return;
    };
    let t = Instant::now();
    let r = audit
        .append(&ev)
        .instrument(info_span!("audit_outcome"))
        .await;
    telemetry::audit_write(t.elapsed(), r.is_ok());
    if let Err(e) = r {
        tracing::error!(request_id = %ctx.request_id, error = %e, "audit outcome not written");
    }
}

/// The refusal budget's summary: `count` refusals of `kind` by this
/// request's caller (or source) were answered 429 and not recorded; this
/// request's identity stands for them, without its fields.
pub async fn summary(audit: &AuditLog, snap: &Snapshot, ctx: &mut Ctx, kind: Decision, count: u64) {
    ctx.fields = FieldList::default();
    let Some(mut ev) = event(
        ctx,
        snap,
        Kind::Event,
        Decision::RefusedRateLimit,
        Some(429),
        Name::new(kind.as_str()).ok(),
    ) else {
        return;
    };
    ev.stripped.clear();
    ev.field_hmacs.clear();
    ev.suppressed = Some(count);
    let t = Instant::now();
    let r = audit.append(&ev).await;
    telemetry::audit_write(t.elapsed(), r.is_ok());
    if let Err(e) = r {
        tracing::error!(request_id = %ctx.request_id, error = %e, "refusal summary not written");
    }
}

/// Build a record from what the request has accumulated. Returns None only
/// if the request id is not recordable (never for ids cubegate generates or
/// accepts). Called at most once per request (the outcome is derived from
/// the intent), so it moves the field list out of `ctx` instead of copying.
fn event(
    ctx: &mut Ctx,
    snap: &Snapshot,
    kind: Kind,
    decision: Decision,
    status: Option<u16>,
    reason: Option<Name>,
) -> Option<AuditEvent> {
    use crate::audit::{RequestId, ResourceId};
    let mut ev = AuditEvent::new(kind, RequestId::new(ctx.request_id.clone()).ok()?, decision);
    ev.caller_request_id = ctx
        .caller_request_id
        .as_ref()
        .and_then(|c| RequestId::new(c.clone()).ok());
    let name = |s: &str| Name::new(s.to_string()).ok();
    ev.trace_id = ctx
        .trace_id
        .as_ref()
        .and_then(|t| RequestId::new(t.clone()).ok());
    if let Some(c) = ctx.caller.as_deref() {
        ev.caller = name(&c.id);
        ev.tenant = name(&snap.tenants[c.tenant].id);
        ev.environment = Some(c.environment);
    }
    let keys = ctx
        .routed
        .as_ref()
        .map(|r| snap.schemas.named_keys(r.op.def().id));
    if let Some(r) = &ctx.routed {
        ev.operation = name(r.op.def().id);
        ev.resource_ids = r
            .ids
            .iter()
            .chain(ctx.links.iter())
            .filter_map(|(k, v)| Some((name(k)?, ResourceId::new(v.clone()).ok()?)))
            .collect();
        ev.query_params = query_params(&r.query_names);
    }
    let fields = std::mem::take(&mut ctx.fields);
    if fields.truncated {
        ev.truncated = true;
        ev.fields_total = Some(fields.total);
        ev.fields_depth = Some(fields.depth);
    }
    ev.fields = pointers(fields.pointers);
    // `stripped` is still needed for the response header.
    ev.stripped = match keys {
        Some(k) => pointers(ctx.stripped.iter().map(|p| collapse(p, k))),
        None => pointers(ctx.stripped.iter().cloned()),
    };
    add_answer(&mut ev, &ctx.answer);
    ev.reason = reason;
    ev.status = status;
    if kind != Kind::Intent {
        ev.latency_ms = Some(ctx.started.elapsed().as_millis() as u64);
    }
    ev.key_fingerprint = ctx.key_fingerprint.take();
    ev.field_hmacs = std::mem::take(&mut ctx.field_hmacs);
    Some(ev)
}

/// Query parameter names; `metadata.<key>` filters are recorded as
/// `metadata`, once.
fn query_params(names: &[String]) -> Vec<Name> {
    let mut params: Vec<Name> = Vec::with_capacity(names.len());
    for q in names {
        let q = policy::shown_query_name(q);
        if !params.iter().any(|p| p.as_str() == q)
            && let Ok(n) = Name::new(q.to_string())
        {
            params.push(n);
        }
    }
    params
}

/// Pointers for the record, each once (several caller keys all show as
/// the same `/options/*`).
fn pointers(v: impl IntoIterator<Item = String>) -> Vec<Pointer> {
    let mut out: Vec<Pointer> = Vec::new();
    for p in v {
        if out.iter().any(|q| q.as_str() == p) {
            continue;
        }
        if let Ok(p) = Pointer::new(p) {
            out.push(p);
        }
    }
    out
}

/// The ids of a create's answer: `created` (the new resource) and the
/// client it belongs to, unless the body named one already.
fn add_answer(ev: &mut AuditEvent, a: &AnswerIds) {
    use crate::audit::ResourceId;
    let entries = [("created", &a.id), ("clientId", &a.client_id)];
    for (k, v) in entries {
        if let (Some(v), Ok(k)) = (v, Name::new(k))
            && let Ok(v) = ResourceId::new(v.clone())
        {
            ev.resource_ids.entry(k).or_insert(v);
        }
    }
}

/// The record's `reason`: a shadow-mode validation failure (the request was
/// forwarded anyway) wins over the error type.
fn reason(ctx: &Ctx, rescue: Option<&Rescue<'_>>) -> Option<Name> {
    let t = if ctx.shadow_violation {
        "shadow_validation_failure"
    } else {
        rescue?.kind
    };
    Name::new(t).ok()
}
