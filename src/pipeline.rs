//! The stage order, and the only code that knows it:
//!
//! ```text
//! identify ─ route ─ authorize ─ read body ─ policy ─ validate ─ rate limit
//!   ─ audit intent ─ inject ─ forward ─ respond ─ audit outcome + telemetry
//! ```
//!
//! Each stage is a plain function over the per-request [`Ctx`] returning
//! `Result<_, its own error>`; `From` impls below turn each stage error into a
//! [`GatewayError`], which `error.rs` maps to status/type/message. `finish`
//! always runs: outcome record, metrics, one access log line.

pub mod body;
pub mod forward;
pub mod identify;
pub mod inject;
pub mod policy;
pub mod rate_limit;
pub mod respond;
pub mod route;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};

use crate::audit::{AuditEvent, Decision, Digest, Fingerprint, Kind, Pointer};
use crate::error::GatewayError;
use crate::operations::BodyKind;
use crate::snapshot::{Caller, Snapshot};
use crate::state::{Runtime, Shared};
use crate::telemetry;
use respond::GatewayBody;
use route::Routed;
use tracing::{Instrument, info_span};

/// What one request has accumulated on its way through the stages.
pub struct Ctx {
    pub request_id: String,
    /// The server span; stage spans are its children.
    pub span: tracing::Span,
    pub method: http::Method,
    pub trace_id: Option<String>,
    pub started: Instant,
    pub caller: Option<Arc<Caller>>,
    pub routed: Option<Routed>,
    pub fields: Vec<String>,
    pub stripped: Vec<String>,
    pub decision: Decision,
    pub shadow_violation: bool,
    pub upstream_status: Option<u16>,
    pub upstream_latency: Option<Duration>,
    pub rate_limit_wait: Option<Duration>,
    pub key_fingerprint: Option<Fingerprint>,
    pub field_hmacs: BTreeMap<Pointer, Digest>,
    pub error_type: Option<&'static str>,
    pub security_event: bool,
    /// The durable intent record; the outcome is derived from it rather
    /// than rebuilt (same identity, fields and fingerprints).
    pub intent: Option<AuditEvent>,
}

impl Ctx {
    fn new(request_id: String, method: http::Method, span: tracing::Span) -> Ctx {
        Ctx {
            request_id,
            span,
            method,
            trace_id: None,
            started: Instant::now(),
            caller: None,
            routed: None,
            fields: Vec::new(),
            stripped: Vec::new(),
            decision: Decision::Allowed,
            shadow_violation: false,
            upstream_status: None,
            upstream_latency: None,
            rate_limit_wait: None,
            key_fingerprint: None,
            field_hmacs: BTreeMap::new(),
            error_type: None,
            security_event: false,
            intent: None,
        }
    }
}

/// Entry point for every gateway request.
pub async fn handle<B>(shared: Arc<Shared>, req: Request<B>) -> Response<GatewayBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    let rt = shared.runtime();
    let span = telemetry::request_span(
        req.headers(),
        req.method(),
        &rt.snapshot.listen_host,
        rt.snapshot.listen_port,
    );
    let mut ctx = Ctx::new(
        telemetry::request_id(req.headers()),
        req.method().clone(),
        span.clone(),
    );
    ctx.trace_id = telemetry::trace_id(&span, req.headers());
    let in_flight = telemetry::InFlight::start();
    let entered = shared.enter();
    let resp = if shared.is_draining() {
        Err(GatewayError::Draining)
    } else {
        run(&shared, &rt, &mut ctx, req)
            .instrument(span.clone())
            .await
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            ctx.error_type = Some(e.type_str());
            if let Some(decision) = refusal_decision(&e)
                && matches!(ctx.decision, Decision::Allowed)
            {
                ctx.decision = decision;
            }
            if !matches!(ctx.decision, Decision::Allowed) {
                ctx.security_event = true;
            }
            tracing::debug!(request_id = %ctx.request_id, error = %e, "request refused or failed");
            let r = e.to_response(&ctx.request_id);
            let (mut parts, body) = r.into_parts();
            respond::decorate(&mut parts.headers, &ctx.request_id, &ctx.stripped);
            Response::from_parts(parts, respond::full(body))
        }
    };
    finish(&shared, &rt, &mut ctx, resp.status())
        .instrument(span)
        .await;
    drop(in_flight);
    drop(entered);
    resp
}

fn refusal_decision(e: &GatewayError) -> Option<Decision> {
    use GatewayError::*;
    Some(match e {
        Unauthorized(_) => Decision::RefusedAuth,
        Forbidden(_) => Decision::RefusedForbidden,
        RouteNotFound | MethodNotAllowed { .. } | UriTooLong { .. } => Decision::RefusedRoute,
        RateLimited { .. } => Decision::RefusedRateLimit,
        AuditUnavailable => Decision::RefusedAudit,
        InvalidRequest { .. }
        | PayloadTooLarge { .. }
        | UnsupportedMediaType
        | BodyTimeout { .. } => Decision::RefusedBody,
        _ => return None,
    })
}

async fn run<B>(
    shared: &Shared,
    rt: &Runtime,
    ctx: &mut Ctx,
    req: Request<B>,
) -> Result<Response<GatewayBody>, GatewayError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    let snap: &Snapshot = &rt.snapshot;
    let audit = shared.audit();
    let (parts, body) = req.into_parts();

    // identify
    let caller = {
        let _s = info_span!("identify").entered();
        identify::identify(snap, &parts.headers, parts.extensions.get()).inspect_err(|e| {
            ctx.security_event = e.is_security_event();
        })?
    };
    ctx.caller = Some(caller.clone());

    // route + authorize
    let routed = {
        let _s = info_span!("route").entered();
        route::route(
            &parts.method,
            &parts.uri,
            parts.version,
            snap.listener.max_uri_bytes,
        )?
    };
    let op = routed.op;
    let def = op.def();
    ctx.routed = Some(routed);
    identify::authorize(&caller, op)?;
    let tenant = &snap.tenants[caller.tenant];

    // read body
    let value = read_body(snap, ctx, def.body, &parts.headers, body, op)
        .instrument(info_span!("read_body"))
        .await?;

    // policy
    let mut value = value;
    if let Some(v) = value.as_mut() {
        let _s = info_span!("policy").entered();
        // Only the audit record reads the field list.
        if audit.is_some() {
            ctx.fields = body::field_pointers(v);
        }
        let outcome = policy::apply(v, &tenant.op(op).rules).inspect_err(|_| {
            ctx.decision = Decision::RefusedPolicy;
        })?;
        ctx.stripped = outcome.stripped;
    }

    // validate
    if let Some(v) = &value {
        let _s = info_span!("validate").entered();
        // No `has` guard: compile refuses a body operation without a schema,
        // and `validate` fails closed if one were missing.
        if snap.validation_enabled
            && let Err(failure) = snap.schemas.validate(def.id, v)
        {
            let shadow = snap.op(op).shadow;
            telemetry::validation_refused(def.id, shadow);
            if !shadow {
                ctx.decision = Decision::RefusedValidation;
                return Err(failure.into());
            }
            ctx.shadow_violation = true;
            tracing::warn!(request_id = %ctx.request_id, operation = def.id, param = %failure.param, "shadow validation failure (forwarded)");
        }
    }
    let upstream_body = match &value {
        Some(v) => Some(Bytes::from(
            serde_json::to_vec(v).map_err(|e| GatewayError::Internal(e.to_string()))?,
        )),
        None => None,
    };
    // The `hmac_fields` values are copied now, while the body exists, and
    // only for an operation whose record will be written (as `finish`
    // decides); hashed only once the limiter lets the request through, so a
    // rate-limit refusal neither pays for the HMACs nor records digests.
    // The copies are part of `upstream_body`, which waits on the limiter
    // anyway: no value is held longer than the request already holds it.
    let field_values = match (audit, &value) {
        (Some(audit), Some(v)) if audited_op(def, snap) => audit.field_values(v),
        _ => Default::default(),
    };
    // The parsed body is not needed past here; freeing it now keeps it out
    // of what every request waiting on the limiter, the audit or the
    // upstream holds (peak memory under many concurrent requests).
    drop(value);

    // rate limit
    let waited = shared
        .rate_limit(snap, &caller, tenant)
        .instrument(info_span!("rate_limit"))
        .await?;
    ctx.rate_limit_wait = waited;
    if let Some(audit) = audit
        && !field_values.is_empty()
    {
        ctx.field_hmacs = audit.field_hmacs(field_values);
    }

    // audit intent (write-ahead for anything that changes PII)
    let key = tenant.key(caller.environment);
    if let Some(audit) = audit {
        ctx.key_fingerprint = key.map(|k| audit.fingerprint(k.expose()));
        if def.changes_pii() {
            let t = Instant::now();
            let intent = audit_event(ctx, snap, Kind::Intent, None);
            let r = match &intent {
                Some(ev) => audit
                    .append(ev)
                    .instrument(info_span!("audit_intent"))
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("request id not recordable".to_string()),
            };
            telemetry::audit_write(t.elapsed(), r.is_ok());
            ctx.intent = intent;
            if let Err(e) = r {
                tracing::error!(request_id = %ctx.request_id, error = %e, "audit intent not written; refusing");
                ctx.decision = Decision::RefusedAudit;
                return Err(GatewayError::AuditUnavailable);
            }
        }
    }

    // inject
    let routed = ctx
        .routed
        .as_ref()
        .ok_or_else(|| GatewayError::Internal("route lost".into()))?;
    let upstream_span = telemetry::upstream_span(&parts.method, def.id, &snap.upstream.authority);
    let (traceparent, tracestate) =
        telemetry::upstream_trace_headers(&upstream_span, &parts.headers);
    let upstream_req = inject::build(inject::UpstreamRequestParts {
        method: parts.method.clone(),
        base: &snap.upstream.base,
        path_and_query: &routed.upstream_path,
        caller_headers: &parts.headers,
        key,
        request_id: &ctx.request_id,
        traceparent,
        tracestate,
        body: upstream_body,
    })?;
    // The caller's head (its header map) is not needed past here either.
    drop(parts);

    // forward
    let t = Instant::now();
    let result = rt
        .upstream
        .send(upstream_req)
        .instrument(upstream_span.clone())
        .await;
    ctx.upstream_latency = Some(t.elapsed());
    telemetry::upstream_done(
        &upstream_span,
        result.as_ref().ok().map(|r| r.status()),
        result.as_ref().err().map(|e| e.type_str()),
    );
    let resp = result?;
    ctx.upstream_status = Some(resp.status().as_u16());
    telemetry::upstream_response(def.id, resp.status(), t.elapsed());
    if resp.status() == StatusCode::TOO_MANY_REQUESTS {
        shared.upstream_429(snap, &caller, tenant, resp.headers());
    }

    // respond
    Ok(respond::from_upstream(resp, &ctx.request_id, &ctx.stripped))
}

async fn read_body<B>(
    snap: &Snapshot,
    ctx: &mut Ctx,
    kind: BodyKind,
    headers: &HeaderMap,
    body: B,
    op: crate::operations::OpIndex,
) -> Result<Option<serde_json::Value>, GatewayError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    let cap = snap.op(op).body_cap;
    let idle = Some(Duration::from_millis(snap.listener.body_timeout_ms));
    match kind {
        BodyKind::None => {
            // Bodiless operations: anything sent is refused, not silently dropped
            // (Node's SDK sends a Content-Type on GET, which is harmless).
            let bytes = body::read_capped_idle(body, 1024, idle)
                .await
                .map_err(|e| body_error(ctx, e))?;
            if !bytes.is_empty() {
                return Err(GatewayError::invalid(
                    "this operation takes no request body",
                ));
            }
            Ok(None)
        }
        BodyKind::Optional => {
            let bytes = body::read_capped_idle(body, cap, idle)
                .await
                .map_err(|e| body_error(ctx, e))?;
            if bytes.is_empty() {
                return Ok(None);
            }
            body::check_content_type(headers).map_err(|e| body_error(ctx, e))?;
            let v = body::parse_strict(&bytes, snap.max_depth).map_err(|e| body_error(ctx, e))?;
            Ok(Some(v))
        }
        BodyKind::Json | BodyKind::Upload => {
            body::check_content_type(headers).map_err(|e| body_error(ctx, e))?;
            let bytes = body::read_capped_idle(body, cap, idle)
                .await
                .map_err(|e| body_error(ctx, e))?;
            let v = body::parse_strict(&bytes, snap.max_depth).map_err(|e| body_error(ctx, e))?;
            Ok(Some(v))
        }
    }
}

fn body_error(ctx: &mut Ctx, e: body::BodyError) -> GatewayError {
    ctx.decision = Decision::RefusedBody;
    e.into()
}

/// Build an audit record from what the request has accumulated. Only names,
/// ids, pointers, numbers and keyed digests: [`AuditEvent`]'s field types
/// cannot hold a body or query value. Returns None only if the request id is
/// not recordable (never for ids cubegate generates or accepts). Called at
/// most once per request (the outcome is derived from the intent), so it
/// moves the field list out of `ctx` instead of copying it.
fn audit_event(
    ctx: &mut Ctx,
    snap: &Snapshot,
    kind: Kind,
    status: Option<u16>,
) -> Option<AuditEvent> {
    use crate::audit::{Name, RequestId, ResourceId};
    let mut ev = AuditEvent::new(
        kind,
        RequestId::new(ctx.request_id.clone()).ok()?,
        ctx.decision,
    );
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
        // `metadata.<key>` filters are recorded as `metadata`, once.
        let mut params: Vec<Name> = Vec::with_capacity(r.query_names.len());
        for q in &r.query_names {
            let q = policy::shown_query_name(q);
            if !params.iter().any(|p| p.as_str() == q)
                && let Some(n) = name(q)
            {
                params.push(n);
            }
        }
        ev.query_params = params;
    }
    ev.fields = audit_pointers(std::mem::take(&mut ctx.fields));
    // `stripped` is still needed for the response header.
    ev.stripped = audit_pointers(ctx.stripped.iter().cloned());
    ev.reason = audit_reason(ctx);
    ev.status = status;
    if kind != Kind::Intent {
        ev.latency_ms = Some(ctx.started.elapsed().as_millis() as u64);
    }
    ev.key_fingerprint = ctx.key_fingerprint.take();
    ev.field_hmacs = std::mem::take(&mut ctx.field_hmacs);
    Some(ev)
}

/// Every pointer an audit record holds passes through here: the trail
/// records that metadata was sent (or stripped) as `/metadata`, once, never
/// its keys (`policy::shown_pointer`).
fn audit_pointers(v: impl IntoIterator<Item = String>) -> Vec<crate::audit::Pointer> {
    let mut out: Vec<crate::audit::Pointer> = Vec::new();
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
        if let Ok(p) = crate::audit::Pointer::new(p) {
            out.push(p);
        }
    }
    out
}

/// The record's `reason`: a shadow-mode validation failure (the request was
/// forwarded anyway) wins over the error type.
fn audit_reason(ctx: &Ctx) -> Option<crate::audit::Name> {
    let t = if ctx.shadow_violation {
        "shadow_validation_failure"
    } else {
        ctx.error_type?
    };
    crate::audit::Name::new(t).ok()
}

/// Whether an allowed request of this operation gets a record: one rule for
/// `finish` (which also records every refusal and security event) and for
/// the `hmac_fields` values copied before the limiter for that record.
fn audited_op(def: &crate::operations::OperationDef, snap: &Snapshot) -> bool {
    def.touches_pii() || snap.audit.record_all
}

/// Audit outcome, metrics and the access log line. Always runs.
async fn finish(shared: &Shared, rt: &Runtime, ctx: &mut Ctx, status: StatusCode) {
    let snap = &rt.snapshot;
    let op = ctx.routed.as_ref().map(|r| r.op.def());
    if let Some(audit) = shared.audit() {
        let wanted = ctx.security_event
            || !matches!(ctx.decision, Decision::Allowed)
            || op.is_some_and(|o| audited_op(o, snap));
        let kind = if matches!(ctx.decision, Decision::Allowed) {
            Kind::Outcome
        } else {
            Kind::Event
        };
        let record = match ctx.intent.take() {
            // After an intent only the kind, decision, status, latency and
            // reason can be new.
            Some(intent) => {
                let mut ev =
                    intent.into_outcome(status.as_u16(), ctx.started.elapsed().as_millis() as u64);
                ev.kind = kind;
                ev.decision = ctx.decision;
                ev.reason = audit_reason(ctx);
                Some(ev)
            }
            // Build a record only when one is written: most non-PII
            // requests are not audited.
            None if wanted => audit_event(ctx, snap, kind, Some(status.as_u16())),
            None => None,
        };
        if let Some(ev) = record {
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
    }
    let tenant = ctx
        .caller
        .as_ref()
        .map(|c| snap.tenants[c.tenant].id.as_str());
    telemetry::request_done(telemetry::RequestSummary {
        span: &ctx.span,
        method: &ctx.method,
        route: op.map(|o| o.route()),
        trace_id: ctx.trace_id.as_deref(),
        request_id: &ctx.request_id,
        operation: op.map(|o| o.id),
        tenant,
        caller: ctx.caller.as_ref().map(|c| c.id.as_str()),
        environment: ctx.caller.as_ref().map(|c| c.environment.as_str()),
        status,
        error_type: ctx.error_type,
        latency: ctx.started.elapsed(),
        upstream_latency: ctx.upstream_latency,
        stripped: ctx.stripped.len(),
        rate_limit_wait: ctx.rate_limit_wait,
    });
}

// ---- stage errors -> GatewayError (the mapping to status lives in error.rs)

impl From<identify::IdentifyError> for GatewayError {
    fn from(e: identify::IdentifyError) -> Self {
        GatewayError::Unauthorized(match e {
            identify::IdentifyError::Missing => {
                "missing Authorization header: send your cubegate caller token"
            }
            identify::IdentifyError::Unknown => {
                "the 'Authorization' header is invalid: unknown caller token"
            }
            identify::IdentifyError::RawComplyCubeKey => {
                "a ComplyCube API key was sent: use your cubegate caller token instead, never a ComplyCube key"
            }
            identify::IdentifyError::Ambiguous => "more than one Authorization header",
            identify::IdentifyError::UnknownCertificate => {
                "the client certificate is valid but identifies no cubegate caller"
            }
            identify::IdentifyError::Conflict => {
                "the client certificate and the Authorization token identify different callers"
            }
        })
    }
}

impl From<identify::Forbidden> for GatewayError {
    fn from(e: identify::Forbidden) -> Self {
        GatewayError::Forbidden(e.to_string())
    }
}

impl From<route::RouteError> for GatewayError {
    fn from(e: route::RouteError) -> Self {
        match e {
            route::RouteError::BadTarget(m) => GatewayError::invalid(m),
            route::RouteError::NotFound => GatewayError::RouteNotFound,
            route::RouteError::MethodNotAllowed { allow } => {
                GatewayError::MethodNotAllowed { allow }
            }
            route::RouteError::UriTooLong { limit } => GatewayError::UriTooLong { limit },
            route::RouteError::BadQuery { message, param } => GatewayError::InvalidRequest {
                message,
                param: (!param.is_empty()).then_some(param),
                errors: Vec::new(),
            },
        }
    }
}

impl From<body::BodyError> for GatewayError {
    fn from(e: body::BodyError) -> Self {
        match e {
            body::BodyError::UnsupportedMediaType => GatewayError::UnsupportedMediaType,
            body::BodyError::TooLarge { limit } => GatewayError::PayloadTooLarge { limit },
            body::BodyError::Malformed { reason, .. } => {
                GatewayError::invalid(format!("malformed JSON body: {reason}"))
            }
            body::BodyError::Read(_) => GatewayError::invalid("the request body could not be read"),
            body::BodyError::Timeout { ms } => GatewayError::BodyTimeout { ms },
        }
    }
}

impl From<policy::PolicyViolation> for GatewayError {
    fn from(e: policy::PolicyViolation) -> Self {
        let policy::PolicyViolation::Forbidden { pointer } = &e;
        let param = pointer.trim_start_matches('/').replace('/', ".");
        GatewayError::invalid_param(e.to_string(), param)
    }
}

impl From<validate::ValidationFailure> for GatewayError {
    fn from(f: validate::ValidationFailure) -> Self {
        GatewayError::InvalidRequest {
            message: f.message,
            param: Some(f.param),
            errors: f
                .errors
                .into_iter()
                .map(|e| crate::error::FieldError {
                    path: e.path,
                    rule: e.rule,
                    message: e.message,
                })
                .collect(),
        }
    }
}

impl From<inject::InjectError> for GatewayError {
    fn from(e: inject::InjectError) -> Self {
        GatewayError::Internal(e.to_string())
    }
}

impl From<forward::ForwardError> for GatewayError {
    fn from(e: forward::ForwardError) -> Self {
        tracing::warn!(error = %e, "upstream call failed");
        match e {
            forward::ForwardError::Timeout(ms) => GatewayError::UpstreamTimeout(ms),
            forward::ForwardError::CircuitOpen => GatewayError::UpstreamCircuitOpen,
            forward::ForwardError::Saturated(ms) => GatewayError::Overloaded(ms),
            other => GatewayError::UpstreamUnavailable(other.to_string()),
        }
    }
}
