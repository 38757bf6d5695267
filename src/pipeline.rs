//! The stage order, and the only code that knows it:
//!
//! ```text
//! framing ─ identify ─ route ─ authorize ─ body budget ─ read body ─ policy ─ validate ─ rate limit
//!   ─ audit intent ─ inject ─ forward ─ respond ─ audit outcome + telemetry
//! ```
//!
//! [`run`] calls the stages in this order, one line each. Each stage returns
//! `Result<_, its own error>`; `?` wraps the error by stage into a
//! [`GatewayError`], and [`GatewayError::rescue`] alone decides what a
//! failure means (status, body, audit decision). [`finish`] always runs and
//! receives the failure itself: outcome record, metrics, one access log line.

pub mod audit;
pub mod body;
pub mod budget;
pub mod forward;
pub mod framing;
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
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tracing::{Instrument, info_span};

use crate::audit::{AuditEvent, Digest, Fingerprint, Pointer};
use crate::error::{GatewayError, Rescue};
use crate::snapshot::{Caller, Snapshot};
use crate::state::{Runtime, Shared};
use crate::telemetry;
use forward::UpstreamBody;
use respond::GatewayBody;
use route::Routed;

/// What one request has accumulated on its way through the stages. Nothing
/// about a failure is kept here: [`finish`] receives the error itself.
pub struct Ctx {
    /// The gateway's own id: joins the request's audit records.
    pub request_id: String,
    /// The caller's valid `X-Request-Id`, if it sent one: echoed back and
    /// passed upstream as today, recorded beside `request_id`.
    pub caller_request_id: Option<String>,
    /// The server span; stage spans are its children.
    pub span: tracing::Span,
    pub method: http::Method,
    pub trace_id: Option<String>,
    pub started: Instant,
    pub caller: Option<Arc<Caller>>,
    pub routed: Option<Routed>,
    /// The body's fields as the audit record shows them.
    pub fields: audit::FieldList,
    /// Link ids from the body (`clientId`, …), for the audit record.
    pub links: Vec<(&'static str, String)>,
    /// Ids from a create's answer (`id`, `clientId`), for the outcome.
    pub answer: audit::AnswerIds,
    pub stripped: Vec<String>,
    /// Shadow-mode validation failed and the request went on.
    pub shadow_violation: bool,
    pub upstream_latency: Option<Duration>,
    pub rate_limit_wait: Option<Duration>,
    pub key_fingerprint: Option<Fingerprint>,
    pub field_hmacs: BTreeMap<Pointer, Digest>,
    /// The durable intent record; the outcome is derived from it rather
    /// than rebuilt (same identity, fields and fingerprints).
    pub intent: Option<AuditEvent>,
    /// A refusal past the refusal budget: no record of its own.
    pub audit_suppressed: bool,
}

impl Ctx {
    fn new(request_id: String, method: http::Method, span: tracing::Span) -> Ctx {
        Ctx {
            request_id,
            caller_request_id: None,
            span,
            method,
            trace_id: None,
            started: Instant::now(),
            caller: None,
            routed: None,
            fields: Default::default(),
            links: Vec::new(),
            answer: Default::default(),
            stripped: Vec::new(),
            shadow_violation: false,
            upstream_latency: None,
            rate_limit_wait: None,
            key_fingerprint: None,
            field_hmacs: BTreeMap::new(),
            intent: None,
            audit_suppressed: false,
        }
    }

    /// The id the caller sees (`X-Request-Id`, error bodies) and ComplyCube
    /// gets: the caller's own when it sent one, else the gateway's.
    pub fn reply_id(&self) -> &str {
        self.caller_request_id
            .as_deref()
            .unwrap_or(&self.request_id)
    }
}

/// Entry point for every gateway request.
pub async fn handle<B>(shared: Arc<Shared>, req: Request<B>) -> Response<GatewayBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    let rt = shared.runtime();
    let snap = &rt.snapshot;
    let span = telemetry::request_span(
        req.headers(),
        req.method(),
        &snap.listen_host,
        snap.listen_port,
    );
    let mut ctx = Ctx::new(
        telemetry::new_request_id(),
        req.method().clone(),
        span.clone(),
    );
    ctx.caller_request_id = telemetry::caller_request_id(req.headers());
    let peer = req
        .extensions()
        .get::<crate::model::PeerAddr>()
        .map(|p| p.0);
    ctx.trace_id = telemetry::trace_id(&span, req.headers());
    let in_flight = telemetry::InFlight::start();
    let entered = shared.enter();
    let result = if shared.is_draining() {
        Err(GatewayError::Draining)
    } else {
        run(&shared, &rt, &mut ctx, req)
            .instrument(span.clone())
            .await
    };
    let (resp, failure) = match result {
        Ok(resp) => (resp, None),
        Err(e) => {
            let e = charge_refusal(&shared, snap, &mut ctx, e, peer).await;
            (error_response(&ctx, &e), Some(e))
        }
    };
    finish(&shared, snap, &mut ctx, resp.status(), failure.as_ref())
        .instrument(span)
        .await;
    drop(in_flight);
    drop(entered);
    resp
}

/// The stages, in order.
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
    let audit_log = shared.audit();
    let (parts, body) = req.into_parts();
    framing::check(parts.version, &parts.headers)?;
    let caller = info_span!("identify")
        .in_scope(|| identify::identify(snap, &parts.headers, parts.extensions.get()))?;
    ctx.caller = Some(caller.clone());
    let (method, uri, max_uri) = (&parts.method, &parts.uri, snap.listener.max_uri_bytes);
    let routed =
        info_span!("route").in_scope(|| route::route(method, uri, parts.version, max_uri))?;
    let op = routed.op;
    let def = op.def();
    ctx.routed = Some(routed);
    identify::authorize(&caller, op)?;
    let tenant = &snap.tenants[caller.tenant];
    let limits = body::BodyLimits {
        kind: def.body,
        cap: snap.op(op).body_cap,
        json: snap.json,
        idle: Duration::from_millis(snap.listener.body_timeout_ms),
        deadline: Duration::from_millis(snap.listener.body_deadline_ms),
    };
    // hyper's exact size: Content-Length, or 0 for a request without a body.
    let charge = budget::charge(body.size_hint().exact(), limits.read_cap());
    let _held = (shared.body_budget.reserve(&caller.id, charge, snap.budget))
        .instrument(info_span!("body_budget"))
        .await?;
    let mut value = body::read(limits, &parts.headers, body)
        .instrument(info_span!("read_body"))
        .await?;
    if let Some(v) = value.as_mut() {
        info_span!("policy")
            .in_scope(|| apply_policy(snap, ctx, tenant, op, v, audit_log.is_some()))?;
    }
    if let Some(v) = &value
        && snap.validation_enabled
    {
        let _s = info_span!("validate").entered();
        let shadow = snap.op(op).shadow;
        ctx.shadow_violation = validate::check(&snap.schemas, def.id, shadow, v, &ctx.request_id)?;
    }
    let upstream_body = value.as_ref().map(body::to_bytes).transpose()?;
    let field_values = audit::field_values(audit_log, snap, def, value.as_ref());
    // The parsed body is not needed past here: freeing it keeps it out of
    // what every request waiting on the limiter or the upstream holds.
    drop(value);
    ctx.rate_limit_wait = rate_limit::admit(shared, snap, &caller, tenant)
        .instrument(info_span!("rate_limit"))
        .await?;
    let key = tenant.key(caller.environment);
    audit::intent(audit_log, snap, ctx, field_values, key).await?;
    let (upstream_req, upstream_span) = upstream_request(snap, ctx, &parts, key, upstream_body)?;
    drop(parts);
    let resp = exchange(shared, rt, ctx, upstream_req, upstream_span).await?;
    let resp = if audit_log.is_some() && audit::records_created_id(def, snap) {
        audit::peek_created(resp, snap, &mut ctx.answer).await?
    } else {
        resp.map(http_body_util::BodyExt::boxed)
    };
    Ok(respond::from_upstream(resp, ctx.reply_id(), &ctx.stripped))
}

/// The `policy` stage: the configured field rules, then undeclared and
/// read-only fields stripped (or refused, per the tenant's setting). The
/// audit record's field summary and links are taken first, from what the
/// caller sent.
fn apply_policy(
    snap: &Snapshot,
    ctx: &mut Ctx,
    tenant: &crate::snapshot::Tenant,
    op: crate::operations::OpIndex,
    v: &mut serde_json::Value,
    audited: bool,
) -> Result<(), policy::PolicyViolation> {
    let id = op.def().id;
    if audited {
        let cap = snap.audit.field_list_cap();
        ctx.fields = audit::summarise(v, snap.schemas.named_keys(id), cap);
        ctx.links = audit::links(v);
    }
    let t_op = tenant.op(op);
    ctx.stripped = policy::apply(v, &t_op.rules)?.stripped;
    (snap.schemas).strip_undeclared(id, v, t_op.unknown_fields, &mut ctx.stripped);
    Ok(())
}

/// The `inject` stage with its upstream span (whose trace context goes on
/// the upstream request).
fn upstream_request(
    snap: &Snapshot,
    ctx: &Ctx,
    parts: &Parts,
    key: Option<&crate::secret::Secret>,
    body: Option<Bytes>,
) -> Result<(Request<Full<Bytes>>, tracing::Span), GatewayError> {
    let routed = ctx
        .routed
        .as_ref()
        .ok_or_else(|| GatewayError::Internal("route lost".into()))?;
    let span =
        telemetry::upstream_span(&parts.method, routed.op.def().id, &snap.upstream.authority);
    let (traceparent, tracestate) = telemetry::upstream_trace_headers(&span, &parts.headers);
    let tracestate = tracestate.filter(|_| snap.upstream.forward_tracestate);
    let req = inject::build(inject::UpstreamRequestParts {
        method: parts.method.clone(),
        base: &snap.upstream.base,
        path_and_query: &routed.upstream_path,
        caller_headers: &parts.headers,
        key,
        request_id: ctx.reply_id(),
        traceparent,
        tracestate,
        body,
    })?;
    Ok((req, span))
}

/// The `forward` stage: one exchange with the upstream, its span and
/// metrics; a 429 from ComplyCube pauses the tenant's key.
async fn exchange(
    shared: &Shared,
    rt: &Runtime,
    ctx: &mut Ctx,
    req: Request<Full<Bytes>>,
    span: tracing::Span,
) -> Result<Response<UpstreamBody>, forward::ForwardError> {
    let snap = &rt.snapshot;
    let op = req_op(ctx);
    let t = Instant::now();
    let result = rt.upstream.send(req).instrument(span.clone()).await;
    ctx.upstream_latency = Some(t.elapsed());
    telemetry::upstream_done(
        &span,
        result.as_ref().ok().map(|r| r.status()),
        result.as_ref().err().map(|e| e.type_str()),
    );
    let resp = result.inspect_err(|e| tracing::warn!(error = %e, "upstream call failed"))?;
    if let Some(op) = op {
        telemetry::upstream_response(op, resp.status(), t.elapsed());
    }
    if resp.status() == StatusCode::TOO_MANY_REQUESTS
        && let Some(caller) = ctx.caller.as_deref()
    {
        let tenant = &snap.tenants[caller.tenant];
        rate_limit::upstream_429(shared, snap, caller, tenant, resp.headers());
    }
    Ok(resp)
}

fn req_op(ctx: &Ctx) -> Option<&'static str> {
    ctx.routed.as_ref().map(|r| r.op.def().id)
}

/// A refusal costs its caller ([`rate_limit::refusals`]): past the refusal
/// budget it becomes a 429 without a record of its own, and now and then
/// a summary record.
async fn charge_refusal(
    shared: &Shared,
    snap: &Snapshot,
    ctx: &mut Ctx,
    e: GatewayError,
    peer: Option<std::net::IpAddr>,
) -> GatewayError {
    let Some(kind) = e
        .rescue()
        .decision
        .filter(|d| rate_limit::refusals::charged(*d))
    else {
        return e;
    };
    let caller = ctx.caller.clone();
    let Some((limited, summary)) = rate_limit::refused(shared, snap, caller.as_deref(), peer, kind)
    else {
        return e;
    };
    if let Some(c) = caller.as_deref() {
        telemetry::rate_limit_refused(&snap.tenants[c.tenant].id, limited.reason);
    }
    ctx.audit_suppressed = true;
    if let (Some(n), Some(log)) = (summary, shared.audit()) {
        audit::summary(log, snap, ctx, kind, n).await;
    }
    GatewayError::RateLimited(limited)
}

/// A gateway-made answer in ComplyCube's shape, with the request id.
fn error_response(ctx: &Ctx, e: &GatewayError) -> Response<GatewayBody> {
    tracing::debug!(request_id = %ctx.request_id, error = %e, "request refused or failed");
    let (mut parts, body) = e.to_response(ctx.reply_id()).into_parts();
    respond::decorate(&mut parts.headers, ctx.reply_id(), &ctx.stripped);
    Response::from_parts(parts, respond::full(body))
}

/// The last phase, for every request: audit outcome, metrics and the access
/// log line. It receives the failure itself, if there was one.
async fn finish(
    shared: &Shared,
    snap: &Snapshot,
    ctx: &mut Ctx,
    status: StatusCode,
    failure: Option<&GatewayError>,
) {
    let rescue: Option<Rescue<'_>> = failure.map(GatewayError::rescue);
    if let Some(log) = shared.audit() {
        audit::outcome(log, snap, ctx, status.as_u16(), rescue.as_ref()).await;
    }
    let op = ctx.routed.as_ref().map(|r| r.op.def());
    let caller = ctx.caller.as_deref();
    telemetry::request_done(telemetry::RequestSummary {
        span: &ctx.span,
        method: &ctx.method,
        route: op.map(|o| o.route()),
        trace_id: ctx.trace_id.as_deref(),
        request_id: &ctx.request_id,
        operation: op.map(|o| o.id),
        tenant: caller.map(|c| snap.tenants[c.tenant].id.as_str()),
        caller: caller.map(|c| c.id.as_str()),
        environment: caller.map(|c| c.environment.as_str()),
        status,
        error_type: rescue.as_ref().map(|r| r.kind),
        latency: ctx.started.elapsed(),
        upstream_latency: ctx.upstream_latency,
        stripped: ctx.stripped.len(),
        rate_limit_wait: ctx.rate_limit_wait,
    });
}

#[cfg(test)]
mod tests;
