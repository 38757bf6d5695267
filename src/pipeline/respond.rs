//! Stage `respond`: the upstream response goes back streamed and unchanged
//! except for hop-by-hop headers (RFC 9110 §7.6.1, plus any named in
//! `Connection`), with `X-Request-Id` and, when the policy removed fields,
//! `X-Cubegate-Stripped` (field pointers, never values, and never a
//! caller-chosen key below a free-form object: the audit's collapse rule,
//! `policy::shown_pointer`). A body that breaks
//! off upstream breaks off here too: it is never presented as complete.

use crate::pipeline::inject::connection_tokens;
use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;

pub type GatewayBody = BoxBody<Bytes, hyper::Error>;

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_STRIPPED: HeaderName = HeaderName::from_static("x-cubegate-stripped");

pub fn full(b: Bytes) -> GatewayBody {
    http_body_util::Full::new(b)
        .map_err(|never| match never {})
        .boxed()
}

/// The upstream answer (its body boxed, or already read to find a created
/// id) with hop-by-hop headers removed and cubegate's added.
pub fn from_upstream(
    resp: Response<GatewayBody>,
    request_id: &str,
    stripped: &[String],
) -> Response<GatewayBody> {
    let (mut parts, body) = resp.into_parts();
    let named = connection_tokens(&parts.headers);
    for n in named {
        parts.headers.remove(n);
    }
    for h in HOP_BY_HOP {
        parts.headers.remove(*h);
    }
    decorate(&mut parts.headers, request_id, stripped);
    Response::from_parts(parts, body)
}

/// The pointers as one header value, each as the audit shows it (a key
/// below `/metadata` collapses to `/metadata`), each once. A removed field's
/// name may still hold any character: bytes that cannot appear in a header,
/// the list separator `,` and `%` itself are percent-encoded, so one odd
/// name never costs the caller the whole list.
fn header_list(stripped: &[String]) -> String {
    let mut out = String::new();
    let mut shown: Vec<&str> = Vec::with_capacity(stripped.len());
    for p in stripped {
        let p = crate::pipeline::policy::shown_pointer(p);
        if !shown.contains(&p) {
            shown.push(p);
        }
    }
    for (i, p) in shown.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for b in p.bytes() {
            if b.is_ascii_graphic() && b != b',' && b != b'%' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

pub fn decorate(h: &mut http::HeaderMap, request_id: &str, stripped: &[String]) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(X_REQUEST_ID.clone(), v);
    }
    if !stripped.is_empty()
        && let Ok(v) = HeaderValue::from_str(&header_list(stripped))
    {
        h.insert(X_STRIPPED.clone(), v);
    }
    h.remove(header::SERVER);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripped_header_survives_names_a_header_cannot_carry() {
        let mut h = http::HeaderMap::new();
        let stripped = ["/type".to_owned(), "/naïve, key%".to_owned()];
        decorate(&mut h, "rid", &stripped);
        assert_eq!(h[&X_STRIPPED], "/type, /na%C3%AFve%2C%20key%25");
        assert_eq!(h[&X_REQUEST_ID], "rid");
        let below = [
            "/metadata/jane@example.com".to_owned(),
            "/metadata/x".to_owned(),
        ];
        decorate(&mut h, "rid", &below);
        assert_eq!(h[&X_STRIPPED], "/metadata");
        decorate(&mut h, "rid2", &[]);
        assert_eq!(h[&X_REQUEST_ID], "rid2");
    }
}
