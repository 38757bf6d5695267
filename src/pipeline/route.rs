//! Stage `route`: method + request target -> [`Routed`] (the operation, its
//! validated path ids, the upstream path rebuilt from the template, and the
//! checked query). Default deny. `/x` and `/x/` are the same route. Dot
//! segments, percent-encoding in the path (encoded slashes, backslashes),
//! absolute-form targets, empty segments and odd ids are refused, never
//! normalised. Failures: 400 bad target/query, 400 with `param` for a value
//! outside an enum segment's set (`side` is `front|back`) on a path that is
//! otherwise the operation's, 404 unknown path, 405 known path with another
//! method, 414 target too long.

use std::sync::LazyLock;

use http::{Method, Uri, Version};

use crate::operations::{OPERATIONS, OpIndex, PAGING, QuerySpec};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("{0}")]
    BadTarget(&'static str),
    #[error("not a ComplyCube v1 operation served by cubegate")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: String },
    #[error("request target too long")]
    UriTooLong { limit: usize },
    #[error("{message}")]
    BadQuery { message: String, param: String },
    /// A path segment outside its enum; `param` is the template's name.
    #[error("{param} must be one of: {allowed}")]
    BadSegment {
        param: &'static str,
        allowed: String,
    },
}

/// The routed operation and what goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub op: OpIndex,
    /// Path parameters by template name, e.g. `[("id", "5f1b…")]`.
    pub ids: Vec<(&'static str, String)>,
    /// Path (under the upstream base) and query, rebuilt from the template.
    pub upstream_path: String,
    /// Names of the query parameters (for the audit trail: never values).
    pub query_names: Vec<String>,
}

#[derive(Debug)]
enum Seg {
    Lit(&'static str),
    Id(&'static str),
    /// A segment with a fixed set of values, e.g. `{side}`.
    Enum(&'static str, &'static [&'static str]),
}

/// The template names whose segment is one of a fixed set (§2: a document
/// side is `front` or `back`).
const PATH_ENUMS: &[(&str, &[&str])] = &[("side", &["front", "back"])];

static TABLE: LazyLock<Vec<Vec<Seg>>> = LazyLock::new(|| {
    OPERATIONS
        .iter()
        .map(|o| {
            o.template
                .split('/')
                .skip(1)
                .map(|s| {
                    if !s.starts_with('{') {
                        return Seg::Lit(s);
                    }
                    let name = s.trim_matches(|c| c == '{' || c == '}');
                    match PATH_ENUMS.iter().find(|(n, _)| *n == name) {
                        Some((n, values)) => Seg::Enum(n, values),
                        None => Seg::Id(name),
                    }
                })
                .collect()
        })
        .collect()
});

/// `[A-Za-z0-9_-]{1,64}`: every ComplyCube id we have seen fits, and nothing
/// that could change the meaning of a path does.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn route(
    method: &Method,
    uri: &Uri,
    version: Version,
    max_uri_bytes: usize,
) -> Result<Routed, RouteError> {
    let path = uri.path();
    let query = uri.query();
    let segs = check_target(method, uri, version, max_uri_bytes)?;
    let i = match_template(method, &segs)?;
    let def = &OPERATIONS[i];
    let (ids, mut upstream_path) = rebuild(&TABLE[i], &segs, path.len());
    let pairs = check_query(def.query, query)?;
    // Re-encoded from the parsed form: what goes upstream is exactly what
    // was checked, whatever encoding the caller chose.
    for (i, (name, value)) in pairs.iter().enumerate() {
        upstream_path.push(if i == 0 { '?' } else { '&' });
        percent_encode_into(&mut upstream_path, name);
        upstream_path.push('=');
        percent_encode_into(&mut upstream_path, value);
    }
    let query_names = pairs.into_iter().map(|(name, _)| name).collect();
    Ok(Routed {
        op: OpIndex(i as u8),
        ids,
        upstream_path,
        query_names,
    })
}

/// The refusals that need no route table: length, form, method and the
/// path's characters. Returns the path's segments under `/v1/`.
fn check_target<'u>(
    method: &Method,
    uri: &'u Uri,
    version: Version,
    max_uri_bytes: usize,
) -> Result<Vec<&'u str>, RouteError> {
    let path = uri.path();
    let target_len = path.len() + uri.query().map_or(0, |q| q.len() + 1);
    if target_len > max_uri_bytes {
        return Err(RouteError::UriTooLong {
            limit: max_uri_bytes,
        });
    }
    // HTTP/2 always carries scheme and authority pseudo-headers; in HTTP/1 an
    // absolute-form target means someone is using us as a forward proxy.
    if version < Version::HTTP_2 && (uri.scheme().is_some() || uri.authority().is_some()) {
        return Err(RouteError::BadTarget(
            "absolute-form request targets are not accepted",
        ));
    }
    if *method == Method::CONNECT {
        return Err(RouteError::BadTarget("CONNECT is not supported"));
    }
    if path.contains('%') {
        return Err(RouteError::BadTarget(
            "percent-encoded characters are not allowed in the path",
        ));
    }
    if path.contains('\\') {
        return Err(RouteError::BadTarget(
            "backslashes are not allowed in the path",
        ));
    }
    let rest = path.strip_prefix("/v1/").ok_or(RouteError::NotFound)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segs: Vec<&str> = rest.split('/').collect();
    for s in &segs {
        if *s == "." || *s == ".." {
            return Err(RouteError::BadTarget(
                "dot segments are not allowed in the path",
            ));
        }
        if s.is_empty() {
            return Err(RouteError::BadTarget("empty path segments are not allowed"));
        }
    }
    Ok(segs)
}

/// How a path's segments fit one template.
enum Fit {
    Yes,
    /// The literals fit but an id is malformed.
    BadId,
    /// The literals fit but an enum segment holds another value.
    BadEnum(&'static str, &'static [&'static str]),
    No,
}

fn fit(tmpl: &[Seg], segs: &[&str]) -> Fit {
    if tmpl.len() != segs.len() {
        return Fit::No;
    }
    let mut bad_id = false;
    let mut bad_enum = None;
    for (t, s) in tmpl.iter().zip(segs) {
        match t {
            Seg::Lit(l) if l != s => return Fit::No,
            Seg::Enum(name, values) if !values.contains(s) => {
                bad_enum = bad_enum.or(Some((*name, *values)));
            }
            Seg::Id(_) if !valid_id(s) => bad_id = true,
            _ => {}
        }
    }
    match (bad_id, bad_enum) {
        (true, _) => Fit::BadId,
        (false, Some((name, values))) => Fit::BadEnum(name, values),
        (false, None) => Fit::Yes,
    }
}

/// The operation whose template and method fit; otherwise 405 with the
/// methods the path allows, 400 for a malformed id, 400 naming the enum
/// segment of the operation with this method whose other segments fit, or
/// 404. A bad enum value under another method is not that operation's path.
fn match_template(method: &Method, segs: &[&str]) -> Result<usize, RouteError> {
    let mut allow: Vec<&str> = Vec::new();
    let mut bad_id = false;
    let mut bad_enum = None;
    for (i, tmpl) in TABLE.iter().enumerate() {
        match fit(tmpl, segs) {
            Fit::No => continue,
            Fit::BadId => {
                bad_id = true;
                continue;
            }
            Fit::BadEnum(name, values) => {
                if OPERATIONS[i].method == *method {
                    bad_enum = bad_enum.or(Some((name, values)));
                }
                continue;
            }
            Fit::Yes => {}
        }
        let def = &OPERATIONS[i];
        if def.method == *method {
            return Ok(i);
        }
        allow.push(def.method.as_str());
    }
    if !allow.is_empty() {
        allow.sort_unstable();
        allow.dedup();
        return Err(RouteError::MethodNotAllowed {
            allow: allow.join(", "),
        });
    }
    if bad_id {
        return Err(RouteError::BadTarget("malformed id in the path"));
    }
    if let Some((param, values)) = bad_enum {
        return Err(RouteError::BadSegment {
            param,
            allowed: values.join(", "),
        });
    }
    Err(RouteError::NotFound)
}

/// The upstream path rebuilt from the template and the validated ids (never
/// copied from the input), and the ids by name.
fn rebuild(tmpl: &[Seg], segs: &[&str], len_hint: usize) -> (Vec<(&'static str, String)>, String) {
    let mut ids = Vec::new();
    let mut upstream_path = String::with_capacity(len_hint + 8);
    for (t, s) in tmpl.iter().zip(segs) {
        upstream_path.push('/');
        match t {
            Seg::Lit(l) => upstream_path.push_str(l),
            Seg::Id(name) => {
                upstream_path.push_str(s);
                ids.push((*name, (*s).to_string()));
            }
            Seg::Enum(name, _) => {
                upstream_path.push_str(s);
                ids.push((*name, (*s).to_string()));
            }
        }
    }
    (ids, upstream_path)
}

fn bad_query(message: impl Into<String>, param: &str) -> RouteError {
    RouteError::BadQuery {
        message: message.into(),
        param: param.to_string(),
    }
}

/// Only documented filter and paging parameters pass (§6). Values are not
/// inspected beyond paging bounds: filters carry PII and ComplyCube answers a
/// malformed filter with an empty list. Names that look like query operators
/// (`[`, `]`, `$`: `metadata.x[$ne]`) are refused: no operation documents
/// one. Returns the decoded (name, value) pairs.
pub fn check_query(
    spec: QuerySpec,
    query: Option<&str>,
) -> Result<Vec<(String, String)>, RouteError> {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return Ok(Vec::new());
    };
    let (filters, paging): (&[&str], bool) = match spec {
        QuerySpec::None => {
            return Err(bad_query("this operation takes no query parameters", ""));
        }
        QuerySpec::List(f) => (f, true),
        QuerySpec::Only(f) => (f, false),
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    for pair in q.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(raw_name)
            .ok_or_else(|| bad_query("malformed percent-encoding in the query", ""))?;
        let value = percent_decode(raw_value)
            .ok_or_else(|| bad_query("malformed percent-encoding in the query", &name))?;
        check_name(&name, filters, paging)?;
        if pairs.iter().any(|(n, _)| *n == name) {
            return Err(bad_query(
                format!("query parameter '{name}' given twice"),
                &name,
            ));
        }
        match name.as_str() {
            "page" => match value.parse::<u32>() {
                Ok(n) if n >= 1 => {}
                _ => return Err(bad_query("page must be an integer of at least 1", "page")),
            },
            "pageSize" => match value.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => {}
                _ => {
                    return Err(bad_query(
                        "pageSize must be an integer from 1 to 1000",
                        "pageSize",
                    ));
                }
            },
            _ => {}
        }
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// A query parameter name: not operator-looking, and documented for the
/// operation (a filter, or paging on a list).
fn check_name(name: &str, filters: &[&str], paging: bool) -> Result<(), RouteError> {
    if name.contains(['[', ']', '$']) {
        let shown = crate::pipeline::policy::shown_query_name(name);
        let shown = if shown.contains(['[', ']', '$']) {
            ""
        } else {
            shown
        };
        return Err(bad_query(
            "query parameter names with '[', ']' or '$' are not accepted",
            shown,
        ));
    }
    let known = (paging && PAGING.contains(&name))
        || filters.iter().any(|f| match f.strip_suffix('.') {
            Some(prefix) => name
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('.'))
                .is_some_and(|k| !k.is_empty() && k.len() <= 40),
            None => *f == name,
        });
    if !known {
        let shown = if name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            name.to_string()
        } else {
            String::new()
        };
        let msg = if shown.is_empty() {
            "unknown query parameter".to_string()
        } else {
            format!("unknown query parameter '{shown}'")
        };
        return Err(bad_query(msg, &shown));
    }
    Ok(())
}

/// RFC 3986 unreserved bytes as they are, every other byte `%XX`.
fn percent_encode_into(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(m: &str, t: &str) -> Result<Routed, RouteError> {
        route(
            &m.parse().unwrap(),
            &t.parse().unwrap(),
            Version::HTTP_11,
            4096,
        )
    }

    #[test]
    fn routes_every_template_with_and_without_trailing_slash() {
        for (i, o) in OPERATIONS.iter().enumerate() {
            let path = format!(
                "/v1{}",
                o.template
                    .replace("{side}", "front")
                    .replace("{id}", "5f1b2c3d4e5f6a7b8c9d0e1f")
            );
            for p in [path.clone(), format!("{path}/")] {
                let got = r(o.method.as_str(), &p).unwrap_or_else(|e| panic!("{} {p}: {e}", o.id));
                assert_eq!(got.op, OpIndex(i as u8), "{p}");
                assert_eq!(got.upstream_path, path.trim_start_matches("/v1"));
            }
        }
    }

    #[test]
    fn refusals() {
        use RouteError::*;
        assert!(matches!(
            r("GET", "/v1/clients/../accountInfo"),
            Err(BadTarget(_))
        ));
        assert!(matches!(r("GET", "/v1/clients/./x"), Err(BadTarget(_))));
        assert!(matches!(r("GET", "/v1/clients/a%2Fb"), Err(BadTarget(_))));
        assert!(matches!(r("GET", "/v1/clients/a%2fb"), Err(BadTarget(_))));
        assert!(matches!(r("GET", "/v1/clients/a%5Cb"), Err(BadTarget(_))));
        assert!(matches!(r("GET", "/v1/clients//x"), Err(BadTarget(_))));
        assert!(matches!(
            r("GET", "http://evil.example/v1/clients"),
            Err(BadTarget(_))
        ));
        assert!(matches!(r("GET", "/v1/clients/a.b"), Err(BadTarget(_))));
        assert!(matches!(
            r("GET", &format!("/v1/clients/{}", "a".repeat(65))),
            Err(BadTarget(_))
        ));
        assert_eq!(r("GET", "/v1/nothing"), Err(NotFound));
        assert_eq!(r("GET", "/v2/clients"), Err(NotFound));
        assert_eq!(r("GET", "/__sandbox/requests"), Err(NotFound));
        assert_eq!(
            r("PUT", "/v1/clients/abc"),
            Err(MethodNotAllowed {
                allow: "DELETE, GET, POST".into()
            })
        );
        assert_eq!(
            r("PATCH", "/v1/clients"),
            Err(MethodNotAllowed {
                allow: "GET, POST".into()
            })
        );
        assert!(matches!(
            r("GET", &format!("/v1/clients?email={}", "a".repeat(5000))),
            Err(UriTooLong { .. })
        ));
        // Issue 20: a value outside an enum segment is a 400 naming it.
        assert_eq!(
            r("GET", "/v1/documents/abc/download/side"),
            Err(BadSegment {
                param: "side",
                allowed: "front, back".into()
            })
        );
    }

    #[test]
    fn every_enum_segment_refuses_other_values_with_its_name() {
        use RouteError::*;
        for o in OPERATIONS.iter().filter(|o| o.template.contains("{side}")) {
            let path = format!(
                "/v1{}",
                o.template
                    .replace("{side}", "INVALIDSIDE")
                    .replace("{id}", "d1")
            );
            match r(o.method.as_str(), &path) {
                Err(BadSegment { param, .. }) => assert_eq!(param, "side", "{path}"),
                other => panic!("{} {path}: {other:?}", o.id),
            }
        }
        // Another method on a literal route keeps its 405; under a method no
        // side-taking operation has, a bad side is no operation's path.
        assert!(matches!(
            r("DELETE", "/v1/documents/d1/redact"),
            Err(MethodNotAllowed { .. })
        ));
        assert_eq!(r("GET", "/v1/documents/d1/INVALIDSIDE"), Err(NotFound));
        // A malformed id still wins: it is the more basic refusal.
        assert!(matches!(
            r("GET", "/v1/documents/a.b/download/x"),
            Err(BadTarget(_))
        ));
    }

    #[test]
    fn ids_are_rebuilt_from_the_template() {
        let got = r("POST", "/v1/documents/doc_1/upload/back").unwrap();
        assert_eq!(got.op.def().id, "documents.upload");
        assert_eq!(
            got.ids,
            vec![("id", "doc_1".to_string()), ("side", "back".to_string())]
        );
        assert_eq!(got.upstream_path, "/documents/doc_1/upload/back");
        assert_eq!(
            r("POST", "/v1/documents/d1/redact").unwrap().op.def().id,
            "documents.redact"
        );
        assert_eq!(
            r("DELETE", "/v1/documents/d1/front").unwrap().op.def().id,
            "documents.deleteImage"
        );
    }

    #[test]
    fn query_strings() {
        let ok = r(
            "GET",
            "/v1/clients?page=2&pageSize=5&email=a%40b.c&metadata.crm=1",
        )
        .unwrap();
        assert_eq!(
            ok.query_names,
            vec!["page", "pageSize", "email", "metadata.crm"]
        );
        assert_eq!(
            ok.upstream_path,
            "/clients?page=2&pageSize=5&email=a%40b.c&metadata.crm=1"
        );
        for bad in [
            "/v1/clients?page=0",
            "/v1/clients?pageSize=1001",
            "/v1/clients?pageSize=x",
            "/v1/clients?secret=1",
            "/v1/clients?page=1&page=2",
            "/v1/clients/abc?x=1",
            "/v1/clients?email=%zz",
            "/v1/reports?page=1",
        ] {
            assert!(
                matches!(r("GET", bad), Err(RouteError::BadQuery { .. })),
                "{bad}"
            );
        }
        assert!(r("GET", "/v1/reports?clientId=abc").is_ok());
        for op in [
            "metadata.x[$ne]",
            "metadata.x%5B%24ne%5D",
            "email[$ne]",
            "$where",
        ] {
            let got = r("GET", &format!("/v1/clients?{op}=1"));
            assert!(matches!(got, Err(RouteError::BadQuery { .. })), "{op}");
        }
        let reencoded = r("GET", "/v1/clients?email=a+b%2ec@d&metadata.k=%7e").unwrap();
        assert_eq!(
            reencoded.upstream_path,
            "/clients?email=a%20b.c%40d&metadata.k=~"
        );
        assert!(r("GET", "/v1/documents?clientId=abc&type=passport").is_ok());
    }
}
