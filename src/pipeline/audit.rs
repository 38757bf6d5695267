//! The pipeline's two audit steps. `intent`: before anything that changes
//! personal data goes upstream, a durable record of who asked for what
//! (failing with [`IntentNotWritten`], so the request is refused). `outcome`:
//! after every request, the record of what happened, derived from the intent
//! when there was one. Records hold only names, ids, pointers, numbers and
//! keyed digests: [`AuditEvent`]'s field types cannot hold a body or query
//! value.

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
    if let Some(r) = &ctx.routed {
        ev.operation = name(r.op.def().id);
        ev.resource_ids = r
            .ids
            .iter()
            .filter_map(|(k, v)| Some((name(k)?, ResourceId::new(v.clone()).ok()?)))
            .collect();
        ev.query_params = query_params(&r.query_names);
    }
    ev.fields = pointers(std::mem::take(&mut ctx.fields));
    // `stripped` is still needed for the response header.
    ev.stripped = pointers(ctx.stripped.iter().cloned());
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

/// Every pointer a record holds passes through here: the trail records that
/// metadata was sent (or stripped) as `/metadata`, once, never its keys
/// (`policy::shown_pointer`).
fn pointers(v: impl IntoIterator<Item = String>) -> Vec<Pointer> {
    let mut out: Vec<Pointer> = Vec::new();
    let mut metadata = false;
    for p in v {
        let shown = policy::shown_pointer(&p);
        if shown == "/metadata" {
            if metadata {
                continue;
            }
            metadata = true;
        }
        let p = if shown.len() == p.len() {
            p
        } else {
            shown.to_string()
        };
        if let Ok(p) = Pointer::new(p) {
            out.push(p);
        }
    }
    out
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
