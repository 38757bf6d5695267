//! Every way a request can fail, wrapped by the stage that failed it, and
//! the one exhaustive function ([`GatewayError::rescue`]) that turns a
//! failure into everything the last phase needs: the HTTP status, the
//! ComplyCube-shaped `type`, message and `param`, the audit decision and
//! whether the security team should see it. Messages never contain secret
//! or PII values: stages put only field names, limits and fixed text in them.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use crate::audit::Decision;
use crate::pipeline::audit::IntentNotWritten;
use crate::pipeline::body::BodyError;
use crate::pipeline::budget::{self, Overloaded};
use crate::pipeline::forward::ForwardError;
use crate::pipeline::framing::FramingError;
use crate::pipeline::identify::{Forbidden, IdentifyError};
use crate::pipeline::inject::InjectError;
use crate::pipeline::policy::PolicyViolation;
use crate::pipeline::rate_limit::RateLimited;
use crate::pipeline::route::RouteError;
use crate::pipeline::validate::{FieldError, ValidationFailure};

/// A failed request, by the stage that failed it.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("framing: {0}")]
    Framing(#[from] FramingError),
    #[error("identify: {0}")]
    Identify(#[from] IdentifyError),
    #[error("authorize: {0}")]
    Forbidden(#[from] Forbidden),
    #[error("route: {0}")]
    Route(#[from] RouteError),
    /// The in-flight body budget stayed full; the body was not read.
    #[error("body budget: {0}")]
    Overloaded(#[from] Overloaded),
    #[error("read body: {0}")]
    Body(#[from] BodyError),
    #[error("policy: {0}")]
    Policy(#[from] PolicyViolation),
    #[error("validate: {0}")]
    Validation(#[from] ValidationFailure),
    #[error("rate limit: {0}")]
    RateLimited(#[from] RateLimited),
    /// The intent record could not be written (the cause, for the log).
    #[error("audit intent: {0}")]
    AuditUnavailable(#[from] IntentNotWritten),
    #[error("inject: {0}")]
    Inject(#[from] InjectError),
    #[error("forward: {0}")]
    Forward(#[from] ForwardError),
    #[error("cubegate is shutting down")]
    Draining,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<serde_json::Error> for GatewayError {
    fn from(e: serde_json::Error) -> Self {
        GatewayError::Internal(e.to_string())
    }
}

/// What a failure means to the caller, the audit trail and the security team.
#[derive(Debug)]
pub struct Rescue<'a> {
    pub status: StatusCode,
    /// The stable `type` of the error body (ComplyCube's vocabulary where it has one).
    pub kind: &'static str,
    pub message: Cow<'a, str>,
    /// The failing field or query parameter in ComplyCube's dotted form.
    pub param: Option<Cow<'a, str>>,
    pub errors: &'a [FieldError],
    /// The audit decision of a refusal; None for a request that was allowed
    /// and then failed (upstream, internal, draining).
    pub decision: Option<Decision>,
    /// A credential problem the security team wants to see (a raw ComplyCube
    /// key, two credentials naming different callers).
    pub security_event: bool,
    /// The rest of the request may still arrive: close the connection
    /// rather than parse it as the next request.
    pub close: bool,
}

impl<'a> Rescue<'a> {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<Cow<'a, str>>) -> Self {
        Rescue {
            status,
            kind,
            message: message.into(),
            param: None,
            errors: &[],
            decision: None,
            security_event: false,
            close: false,
        }
    }

    fn refused(mut self, decision: Decision) -> Self {
        self.decision = Some(decision);
        self
    }

    fn param(mut self, param: impl Into<Cow<'a, str>>) -> Self {
        self.param = Some(param.into());
        self
    }
}

const BAD_REQUEST: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "invalid_request");
const UNAVAILABLE: &str = "upstream_unavailable";

impl GatewayError {
    /// The one mapping from a failure to its status, body, audit decision
    /// and security flag. Exhaustive on purpose: a new error variant must be
    /// decided here.
    pub fn rescue(&self) -> Rescue<'_> {
        use GatewayError as E;
        let (bad, invalid) = BAD_REQUEST;
        match self {
            E::Framing(e) => framing_rescue(e),
            E::Overloaded(_) => Rescue {
                close: true,
                ..Rescue::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "gateway_overloaded",
                    "cubegate holds as many request bodies as it may; retry after the time in Retry-After",
                )
                .refused(Decision::RefusedBody)
            },
            E::Identify(e) => Rescue {
                security_event: e.is_security_event(),
                ..Rescue::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
                    .refused(Decision::RefusedAuth)
            },
            E::Forbidden(e) => Rescue::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
                .refused(Decision::RefusedForbidden),
            E::Route(e) => route_rescue(e).refused(Decision::RefusedRoute),
            E::Body(e) => body_rescue(e).refused(Decision::RefusedBody),
            E::Policy(e) => Rescue::new(bad, invalid, e.to_string())
                .param(e.pointer().trim_start_matches('/').replace('/', "."))
                .refused(Decision::RefusedPolicy),
            E::Validation(f) => Rescue {
                errors: &f.errors,
                ..Rescue::new(bad, invalid, f.message.as_str())
                    .param(f.param.as_str())
                    .refused(Decision::RefusedValidation)
            },
            E::RateLimited(_) => Rescue::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "rate limit exceeded for this tenant or caller; retry after the time in Retry-After",
            )
            .refused(Decision::RefusedRateLimit),
            E::AuditUnavailable(_) => Rescue::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                "the audit trail cannot be written; request not forwarded",
            )
            .refused(Decision::RefusedAudit),
            E::Inject(_) | E::Internal(_) => Rescue::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "cubegate failed to handle the request",
            ),
            E::Forward(e) => forward_rescue(e),
            E::Draining => Rescue {
                close: true,
                ..Rescue::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "draining",
                    "cubegate is shutting down",
                )
            },
        }
    }

    /// The JSON error response: `{type, message, param?, errors?, requestId}`.
    pub fn to_response(&self, request_id: &str) -> Response<Bytes> {
        let r = self.rescue();
        let mut resp = Response::new(error_body(&r, request_id));
        *resp.status_mut() = r.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if r.close {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        for (k, v) in self.extra_headers() {
            h.insert(k, v);
        }
        resp
    }

    fn extra_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        match self {
            GatewayError::Route(RouteError::MethodNotAllowed { allow }) => {
                HeaderValue::from_str(allow)
                    .map(|v| vec![(header::ALLOW, v)])
                    .unwrap_or_default()
            }
            GatewayError::RateLimited(r) => r.headers.clone(),
            GatewayError::Overloaded(_) => vec![(
                header::RETRY_AFTER,
                HeaderValue::from(budget::RETRY_AFTER_S),
            )],
            GatewayError::Framing(FramingError::Http10Body) => {
                vec![(header::UPGRADE, HeaderValue::from_static("HTTP/1.1"))]
            }
            _ => Vec::new(),
        }
    }
}

/// Framing refusals close the connection: where one request ends is exactly
/// what is in doubt.
fn framing_rescue(e: &FramingError) -> Rescue<'_> {
    let (status, kind) = match e {
        FramingError::Http10Body => (StatusCode::UPGRADE_REQUIRED, "upgrade_required"),
        _ => BAD_REQUEST,
    };
    Rescue {
        close: true,
        ..Rescue::new(status, kind, e.to_string()).refused(Decision::RefusedRoute)
    }
}

fn route_rescue(e: &RouteError) -> Rescue<'_> {
    let (bad, invalid) = BAD_REQUEST;
    match e {
        RouteError::BadTarget(m) => Rescue::new(bad, invalid, *m),
        RouteError::NotFound => Rescue::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "not a ComplyCube v1 operation served by cubegate",
        ),
        RouteError::MethodNotAllowed { .. } => Rescue::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed for this path",
        ),
        RouteError::UriTooLong { limit } => Rescue::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("request target is longer than {limit} bytes"),
        ),
        RouteError::BadQuery { message, param } => Rescue {
            param: (!param.is_empty()).then_some(Cow::Borrowed(param.as_str())),
            ..Rescue::new(bad, invalid, message.as_str())
        },
        RouteError::BadSegment { param, allowed } => Rescue {
            param: Some(Cow::Borrowed(param)),
            ..Rescue::new(bad, invalid, format!("{param} must be one of: {allowed}"))
        },
    }
}

fn body_rescue(e: &BodyError) -> Rescue<'_> {
    let (bad, invalid) = BAD_REQUEST;
    match e {
        BodyError::UnsupportedMediaType => Rescue::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "request body must be application/json (identity encoding, UTF-8)",
        ),
        BodyError::TooLarge { limit } => Rescue::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        ),
        BodyError::Malformed { reason, .. } => {
            Rescue::new(bad, invalid, format!("malformed JSON body: {reason}"))
        }
        BodyError::Read(_) => Rescue::new(bad, invalid, "the request body could not be read"),
        BodyError::NotExpected => Rescue::new(bad, invalid, "this operation takes no request body"),
        BodyError::TooMany {
            what,
            limit,
            pointer,
        } => {
            let r = Rescue::new(
                bad,
                invalid,
                format!("request body has more {what} than the limit of {limit}"),
            );
            // Caller-chosen keys stay out of the answer, as in the audit.
            let shown = crate::pipeline::policy::shown_pointer(pointer);
            match shown.trim_start_matches('/') {
                "" => r,
                p => r.param(p.replace('/', ".")),
            }
        }
        BodyError::Deadline { ms } => Rescue {
            close: true,
            ..Rescue::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the request body did not arrive within {ms} ms"),
            )
        },
        BodyError::Timeout { ms } => Rescue {
            close: true,
            ..Rescue::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("no request body data arrived for {ms} ms"),
            )
        },
    }
}

/// Upstream causes (addresses, TLS errors) stay in the logs; the caller
/// gets fixed text.
fn forward_rescue(e: &ForwardError) -> Rescue<'_> {
    match e {
        ForwardError::Timeout(ms) => Rescue::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("upstream did not answer within {ms} ms"),
        ),
        ForwardError::CircuitOpen => Rescue::new(
            StatusCode::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            "ComplyCube is failing; cubegate is not sending requests for a short while",
        ),
        ForwardError::Saturated(_) => Rescue::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "gateway_overloaded",
            "cubegate is at its limit of requests in flight to ComplyCube; retry shortly",
        ),
        ForwardError::Connect(_) | ForwardError::Failed(_) => Rescue::new(
            StatusCode::BAD_GATEWAY,
            UNAVAILABLE,
            "ComplyCube could not be reached; the request was not completed",
        ),
    }
}

fn error_body(r: &Rescue<'_>, request_id: &str) -> Bytes {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        param: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        errors: Option<&'a [FieldError]>,
        request_id: &'a str,
    }
    let body = Body {
        kind: r.kind,
        message: &r.message,
        param: r.param.as_deref(),
        errors: (!r.errors.is_empty()).then_some(r.errors),
        request_id,
    };
    // Serialising strings cannot fail; fall back to a fixed body rather than
    // panic if it ever did.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_else(|_| {
        br#"{"type":"internal_error","message":"error body could not be built"}"#.to_vec()
    }))
}

#[cfg(test)]
mod tests;
