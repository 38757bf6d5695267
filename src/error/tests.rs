use super::*;

#[test]
fn every_error_has_complycube_shape_and_request_id() {
    let cases = vec![
        GatewayError::Policy(PolicyViolation::Forbidden {
            pointer: "/personDetails/dob".into(),
        }),
        GatewayError::Identify(IdentifyError::Missing),
        GatewayError::Forbidden(Forbidden {
            operation: "clients.get",
        }),
        GatewayError::Route(RouteError::NotFound),
        GatewayError::Route(RouteError::MethodNotAllowed {
            allow: "GET".into(),
        }),
        GatewayError::Body(BodyError::TooLarge { limit: 10 }),
        GatewayError::Body(BodyError::UnsupportedMediaType),
        GatewayError::Forward(ForwardError::Failed("tcp connect error 10.0.0.1".into())),
        GatewayError::Forward(ForwardError::Timeout(5)),
        GatewayError::Forward(ForwardError::CircuitOpen),
        GatewayError::AuditUnavailable(IntentNotWritten("disk full at 10.0.0.1".into())),
        GatewayError::Draining,
        GatewayError::Forward(ForwardError::Saturated(5)),
        GatewayError::Internal("10.0.0.1".into()),
        GatewayError::Framing(FramingError::Host),
        GatewayError::Framing(FramingError::Http10Body),
        GatewayError::Body(BodyError::Deadline { ms: 5 }),
        GatewayError::Overloaded(Overloaded {
            scope: "global",
            waited_ms: 5,
        }),
    ];
    for e in cases {
        let r = e.to_response("req-1");
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["type"], e.rescue().kind);
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(v["requestId"], "req-1");
        assert_eq!(r.status(), e.rescue().status);
        // upstream details (addresses, causes) stay out of the body
        assert!(!String::from_utf8_lossy(r.body()).contains("10.0.0.1"));
    }
}

#[test]
fn invalid_request_carries_param_and_errors() {
    let e = GatewayError::Validation(ValidationFailure {
        message: "x".into(),
        param: "email".into(),
        errors: vec![FieldError {
            path: "/email".into(),
            rule: "required".into(),
            message: "email is required".into(),
        }],
    });
    let v: serde_json::Value = serde_json::from_slice(e.to_response("r").body()).unwrap();
    assert_eq!(v["param"], "email");
    assert_eq!(v["errors"][0]["rule"], "required");
}

/// Each stage's refusal is recorded under its own decision; a failure after
/// the request was allowed (upstream, internal, draining) is not a refusal.
#[test]
fn each_stage_refusal_has_its_own_audit_decision() {
    let cases: Vec<(GatewayError, Option<Decision>)> = vec![
        (IdentifyError::Unknown.into(), Some(Decision::RefusedAuth)),
        (
            Forbidden {
                operation: "clients.get",
            }
            .into(),
            Some(Decision::RefusedForbidden),
        ),
        (
            RouteError::BadTarget("dot segments are not allowed").into(),
            Some(Decision::RefusedRoute),
        ),
        (
            RouteError::BadQuery {
                message: "x".into(),
                param: "page".into(),
            }
            .into(),
            Some(Decision::RefusedRoute),
        ),
        (RouteError::NotFound.into(), Some(Decision::RefusedRoute)),
        (BodyError::NotExpected.into(), Some(Decision::RefusedBody)),
        (
            BodyError::Timeout { ms: 5 }.into(),
            Some(Decision::RefusedBody),
        ),
        (
            PolicyViolation::Forbidden {
                pointer: "/type".into(),
            }
            .into(),
            Some(Decision::RefusedPolicy),
        ),
        (
            GatewayError::AuditUnavailable(IntentNotWritten("x".into())),
            Some(Decision::RefusedAudit),
        ),
        (ForwardError::Timeout(5).into(), None),
        (InjectError::NoKey.into(), None),
        (GatewayError::Draining, None),
        (
            FramingError::TransferEncoding.into(),
            Some(Decision::RefusedRoute),
        ),
        (
            Overloaded {
                scope: "caller",
                waited_ms: 5,
            }
            .into(),
            Some(Decision::RefusedBody),
        ),
    ];
    for (e, decision) in cases {
        assert_eq!(e.rescue().decision, decision, "{e}");
    }
}

#[test]
fn only_credential_problems_are_security_events() {
    assert!(
        GatewayError::from(IdentifyError::RawComplyCubeKey)
            .rescue()
            .security_event
    );
    assert!(
        !GatewayError::from(IdentifyError::Missing)
            .rescue()
            .security_event
    );
    assert!(
        !GatewayError::from(RouteError::NotFound)
            .rescue()
            .security_event
    );
}

/// Issue 19's refusals: framing and budget refusals close the connection;
/// 426 names the protocol to upgrade to, 503 when to retry; a JSON size
/// refusal names the container, never a caller-chosen key below metadata.
#[test]
fn edge_refusals_close_and_carry_their_headers() {
    let r = GatewayError::from(FramingError::Http10Body).to_response("r");
    assert_eq!(r.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(r.headers()[header::UPGRADE], "HTTP/1.1");
    assert_eq!(r.headers()[header::CONNECTION], "close");
    let busy = Overloaded {
        scope: "global",
        waited_ms: 1,
    };
    let r = GatewayError::from(busy).to_response("r");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    assert_eq!(r.headers()[header::CONNECTION], "close");
    let e = GatewayError::Body(BodyError::Deadline { ms: 9 });
    assert_eq!(e.rescue().status, StatusCode::REQUEST_TIMEOUT);
    assert!(e.rescue().close);
    let param = |pointer: &str| {
        let e = GatewayError::Body(BodyError::TooMany {
            what: "object members",
            limit: 256,
            pointer: pointer.into(),
        });
        e.rescue().param.map(|p| p.into_owned())
    };
    assert_eq!(param("/options/list").as_deref(), Some("options.list"));
    assert_eq!(
        param("/metadata/jane@example.com").as_deref(),
        Some("metadata")
    );
    assert_eq!(param(""), None);
}
