//! Every error cubegate itself produces, and the one place that maps each to
//! an HTTP status, a stable ComplyCube-shaped `type`, a message and an
//! optional `param`. Messages never contain secret or PII values: stages put
//! only field names, limits and fixed text into them.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use serde::Serialize;

/// Who is at fault, for metrics, logs and the circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    Client,
    Upstream,
    Internal,
}

/// One failing field of a schema check (pointer, keyword, schema-derived text).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub rule: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
        errors: Vec<FieldError>,
    },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("not a ComplyCube v1 operation served by cubegate")]
    RouteNotFound,
    #[error("method not allowed for this path")]
    MethodNotAllowed { allow: String },
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("request target is longer than {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("request body must be application/json (identity encoding, UTF-8)")]
    UnsupportedMediaType,
    /// The client stopped sending its body (`listener.body_timeout_ms`).
    #[error("no request body data arrived for {ms} ms")]
    BodyTimeout { ms: u64 },
    #[error("{message}")]
    RateLimited {
        message: &'static str,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error("upstream did not answer within {0} ms")]
    UpstreamTimeout(u64),
    /// The circuit breaker is open: refused at once, nothing sent.
    #[error("ComplyCube is failing; cubegate is not sending requests for a short while")]
    UpstreamCircuitOpen,
    #[error("the audit trail cannot be written; request not forwarded")]
    AuditUnavailable,
    #[error("cubegate is shutting down")]
    Draining,
    /// Every upstream exchange slot stayed busy for this many ms: the
    /// gateway's own backlog, not ComplyCube's fault.
    #[error("cubegate is at its limit of requests in flight to ComplyCube; retry shortly")]
    Overloaded(u64),
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>) -> Self {
        GatewayError::InvalidRequest {
            message: message.into(),
            param: None,
            errors: Vec::new(),
        }
    }

    pub fn invalid_param(message: impl Into<String>, param: impl Into<String>) -> Self {
        GatewayError::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
            errors: Vec::new(),
        }
    }

    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Forbidden(_) => StatusCode::FORBIDDEN,
            RouteNotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            UpstreamCircuitOpen | AuditUnavailable | Draining | Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable `type` of the error body (ComplyCube's vocabulary where it has one).
    pub fn type_str(&self) -> &'static str {
        use GatewayError::*;
        match self {
            InvalidRequest { .. } => "invalid_request",
            Unauthorized(_) => "unauthorized",
            Forbidden(_) => "forbidden",
            RouteNotFound => "route_not_found",
            MethodNotAllowed { .. } => "method_not_allowed",
            PayloadTooLarge { .. } => "payload_too_large",
            UriTooLong { .. } => "uri_too_long",
            UnsupportedMediaType => "unsupported_media_type",
            BodyTimeout { .. } => "request_timeout",
            RateLimited { .. } => "rate_limit_exceeded",
            UpstreamUnavailable(_) | UpstreamCircuitOpen => "upstream_unavailable",
            UpstreamTimeout(_) => "upstream_timeout",
            AuditUnavailable => "audit_unavailable",
            Draining => "draining",
            Overloaded(_) => "gateway_overloaded",
            Internal(_) => "internal_error",
        }
    }

    pub fn blame(&self) -> Blame {
        use GatewayError::*;
        match self {
            UpstreamUnavailable(_) | UpstreamTimeout(_) | UpstreamCircuitOpen => Blame::Upstream,
            AuditUnavailable | Internal(_) | Draining | Overloaded(_) => Blame::Internal,
            _ => Blame::Client,
        }
    }

    /// The message shown to the caller. Upstream and internal causes stay in
    /// the logs; the caller gets fixed text.
    pub fn public_message(&self) -> String {
        use GatewayError::*;
        match self {
            UpstreamUnavailable(_) => {
                "ComplyCube could not be reached; the request was not completed".into()
            }
            Internal(_) => "cubegate failed to handle the request".into(),
            other => other.to_string(),
        }
    }

    /// The JSON error response: `{type, message, param?, errors?, requestId}`.
    pub fn to_response(&self, request_id: &str) -> Response<Bytes> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            message: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            param: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            errors: Option<&'a [FieldError]>,
            request_id: &'a str,
        }
        let (param, errors) = match self {
            GatewayError::InvalidRequest { param, errors, .. } => (
                param.as_deref(),
                (!errors.is_empty()).then_some(errors.as_slice()),
            ),
            _ => (None, None),
        };
        let body = Body {
            kind: self.type_str(),
            message: self.public_message(),
            param,
            errors,
            request_id,
        };
        // Serialising this struct cannot fail (strings and a slice of strings);
        // fall back to a fixed body rather than panic if it ever did.
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"type":"internal_error","message":"error body could not be built"}"#.to_vec()
        });
        let mut resp = Response::new(Bytes::from(bytes));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        match self {
            GatewayError::MethodNotAllowed { allow } => {
                if let Ok(v) = HeaderValue::from_str(allow) {
                    h.insert(header::ALLOW, v);
                }
            }
            GatewayError::RateLimited { headers, .. } => {
                for (k, v) in headers {
                    h.insert(k.clone(), v.clone());
                }
            }
            // The rest of a stalled body may still arrive: close rather than
            // parse it as the next request.
            GatewayError::Draining | GatewayError::BodyTimeout { .. } => {
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_complycube_shape_and_request_id() {
        let cases = vec![
            GatewayError::invalid_param("personDetails.dob must be a date", "personDetails.dob"),
            GatewayError::Unauthorized("missing credential"),
            GatewayError::Forbidden("nope".into()),
            GatewayError::RouteNotFound,
            GatewayError::MethodNotAllowed {
                allow: "GET".into(),
            },
            GatewayError::PayloadTooLarge { limit: 10 },
            GatewayError::UnsupportedMediaType,
            GatewayError::UpstreamUnavailable("tcp connect error 10.0.0.1".into()),
            GatewayError::UpstreamTimeout(5),
            GatewayError::UpstreamCircuitOpen,
            GatewayError::AuditUnavailable,
            GatewayError::Draining,
            GatewayError::Overloaded(5),
        ];
        for e in cases {
            let r = e.to_response("req-1");
            let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
            assert_eq!(v["type"], e.type_str());
            assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert_eq!(v["requestId"], "req-1");
            assert_eq!(r.status(), e.status());
            // upstream details (addresses, causes) stay out of the body
            assert!(!String::from_utf8_lossy(r.body()).contains("10.0.0.1"));
        }
    }

    #[test]
    fn invalid_request_carries_param_and_errors() {
        let e = GatewayError::InvalidRequest {
            message: "x".into(),
            param: Some("email".into()),
            errors: vec![FieldError {
                path: "/email".into(),
                rule: "required".into(),
                message: "email is required".into(),
            }],
        };
        let v: serde_json::Value = serde_json::from_slice(e.to_response("r").body()).unwrap();
        assert_eq!(v["param"], "email");
        assert_eq!(v["errors"][0]["rule"], "required");
    }
}
