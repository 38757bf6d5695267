//! Stage `inject`: build the request that goes upstream. Only an allowlist of
//! the caller's headers survives (content type, accept, user agent, trace
//! context) minus any named in `Connection`; every credential the caller sent
//! is dropped by construction; `Authorization` is set to the tenant's key for
//! the caller's environment, marked sensitive (kept out of HPACK tables and
//! debug output). This is the only place a ComplyCube key is exposed.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::Full;

use crate::secret::Secret;

/// Caller headers worth passing on. Everything else (cookies, proxy and
/// gateway credentials, forwarding headers, encodings) stays here.
const FORWARDED: &[HeaderName] = &[header::CONTENT_TYPE, header::ACCEPT, header::USER_AGENT];

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("the tenant has no key for this environment")]
    NoKey,
    #[error("the upstream key is not a valid header value")]
    BadKey,
    #[error("upstream URL could not be built")]
    BadUri,
}

pub struct UpstreamRequestParts<'a> {
    pub method: Method,
    pub base: &'a str,
    pub path_and_query: &'a str,
    pub caller_headers: &'a HeaderMap,
    pub key: Option<&'a Secret>,
    pub request_id: &'a str,
    pub traceparent: Option<HeaderValue>,
    pub tracestate: Option<HeaderValue>,
    pub body: Option<Bytes>,
}

pub fn build(p: UpstreamRequestParts<'_>) -> Result<Request<Full<Bytes>>, InjectError> {
    let key = p.key.ok_or(InjectError::NoKey)?;
    let uri: Uri = format!("{}{}", p.base, p.path_and_query)
        .parse()
        .map_err(|_| InjectError::BadUri)?;
    let connection_named = connection_tokens(p.caller_headers);
    let mut headers = HeaderMap::with_capacity(8);
    for name in FORWARDED {
        if connection_named.iter().any(|c| c == name) {
            continue;
        }
        if *name == header::CONTENT_TYPE && p.body.is_none() {
            continue;
        }
        if let Some(v) = p.caller_headers.get(name) {
            headers.insert(name.clone(), v.clone());
        }
    }
    if let Some(tp) = p.traceparent {
        headers.insert(HeaderName::from_static("traceparent"), tp);
    }
    if let Some(ts) = p.tracestate {
        headers.insert(HeaderName::from_static("tracestate"), ts);
    }
    if let Ok(id) = HeaderValue::from_str(p.request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), id);
    }
    let mut auth = HeaderValue::from_str(key.expose()).map_err(|_| InjectError::BadKey)?;
    auth.set_sensitive(true);
    headers.insert(header::AUTHORIZATION, auth);
    let body = match p.body {
        Some(b) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            b
        }
        None => Bytes::new(),
    };
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = p.method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Header names listed in `Connection` (hop-by-hop by declaration).
pub fn connection_tokens(h: &HeaderMap) -> Vec<HeaderName> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_tenant_key_and_allowlisted_headers_go_upstream() {
        let mut caller = HeaderMap::new();
        caller.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("cgw_callertoken"),
        );
        caller.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        caller.insert(header::COOKIE, HeaderValue::from_static("session=abc"));
        caller.insert(
            header::USER_AGENT,
            HeaderValue::from_static("complycube-python/1.1.6"),
        );
        caller.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        caller.insert(header::CONNECTION, HeaderValue::from_static("accept"));
        caller.insert(
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_static("k"),
        );
        let key = Secret::new("test_tenantkey");
        let req = build(UpstreamRequestParts {
            method: Method::POST,
            base: "https://api.complycube.com/v1",
            path_and_query: "/clients/abc",
            caller_headers: &caller,
            key: Some(&key),
            request_id: "rid",
            traceparent: None,
            tracestate: None,
            body: Some(Bytes::from_static(b"{}")),
        })
        .unwrap();
        let h = req.headers();
        assert_eq!(h.get_all(header::AUTHORIZATION).iter().count(), 1);
        assert_eq!(h[header::AUTHORIZATION], "test_tenantkey");
        assert!(h[header::AUTHORIZATION].is_sensitive());
        assert!(h.get(header::PROXY_AUTHORIZATION).is_none());
        assert!(h.get(header::COOKIE).is_none());
        assert!(h.get("x-api-key").is_none());
        assert!(h.get(header::ACCEPT).is_none(), "named in Connection");
        assert_eq!(h[header::USER_AGENT], "complycube-python/1.1.6");
        assert_eq!(h[header::CONTENT_TYPE], "application/json");
        assert_eq!(req.uri(), "https://api.complycube.com/v1/clients/abc");
    }
}
