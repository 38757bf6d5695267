//! The `policy` stage: fields an operation must not send upstream.
//!
//! Input: the parsed body (from `read body`) and the operation's rules — the
//! built-in ones ([`builtin_rules`]) followed by route and tenant rules from
//! config ([`FieldRule::parse`], validated once at config load).
//! Output: the body with every `Strip` match removed, and the concrete
//! pointers removed ([`PolicyOutcome::stripped`]) — names only, for the audit
//! trail.
//! Failures: [`PolicyViolation::Forbidden`] (400 `invalid_request` with
//! `param` = the pointer) when a `Reject` rule matches; the body is then left
//! exactly as received. Config errors ([`PolicyConfigError`]) name the pointer.
//!
//! Pointers are RFC 6901 (`~0` = `~`, `~1` = `/`), plus the segment `*`, which
//! matches every member of an object or element of an array (so a key that is
//! literally `*` cannot be targeted on its own). A numeric segment matches an
//! array index or an object key spelled the same, as in RFC 6901.
//!
//! Order: all `Reject` rules are checked first, in order, against the body as
//! received — that is what makes a refusal leave the body untouched, and it
//! means a field cannot slip past a `Reject` because a `Strip` removed its
//! parent. Then `Strip` rules run in order, each seeing the previous ones'
//! result (array indices in later pointers refer to the shortened arrays).

use std::sync::Arc;

use serde_json::Value;

use super::body::push_pointer_token;
use crate::config::{ConfigError, Origin, PolicySettings, RawFieldRule};
use crate::operations::{self, OPERATIONS};

/// What a rule does with a match: the config's `action` as written.
pub use crate::config::FieldAction as PolicyAction;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Any,
    Token(String),
}

/// One compiled rule: a pointer pattern and what to do with its matches.
#[derive(Debug, Clone)]
pub struct FieldRule {
    pointer: String,
    segments: Vec<Segment>,
    pub action: PolicyAction,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy pointer {pointer:?}: {reason}")]
pub struct PolicyConfigError {
    pub pointer: String,
    pub reason: &'static str,
}

impl FieldRule {
    /// Compiles `pointer` (RFC 6901 plus `*`). The empty pointer (the whole
    /// body) is refused: no operation can strip its entire body.
    pub fn parse(pointer: &str, action: PolicyAction) -> Result<FieldRule, PolicyConfigError> {
        let fail = |reason| PolicyConfigError {
            pointer: pointer.to_owned(),
            reason,
        };
        if pointer.is_empty() {
            return Err(fail("the whole body cannot be a policy target"));
        }
        let Some(rest) = pointer.strip_prefix('/') else {
            return Err(fail("a JSON pointer starts with '/'"));
        };
        let mut segments = Vec::new();
        for raw in rest.split('/') {
            if raw == "*" {
                segments.push(Segment::Any);
                continue;
            }
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    token.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => token.push('~'),
                    Some('1') => token.push('/'),
                    _ => return Err(fail("'~' must be followed by '0' or '1'")),
                }
            }
            segments.push(Segment::Token(token));
        }
        Ok(FieldRule {
            pointer: pointer.to_owned(),
            segments,
            action,
        })
    }

    /// The pointer as written in config.
    pub fn pointer(&self) -> &str {
        &self.pointer
    }
}

/// Built-in rules per operation id, applied before any configured rule.
pub fn builtin_rules(op_id: &str) -> Vec<FieldRule> {
    match op_id {
        // ComplyCube: a client's type can never change after creation.
        "clients.update" => vec![FieldRule {
            pointer: "/type".to_owned(),
            segments: vec![Segment::Token("type".to_owned())],
            action: PolicyAction::Strip,
        }],
        _ => Vec::new(),
    }
}

/// The rules of each operation (by index) for one tenant: the built-in
/// ones (with `policy.builtin_action`), then `policy.rules`, then the
/// tenant's own (`tenant_key` is e.g. `tenants[0]`, for error keys). A later
/// rule for the same pointer replaces the earlier one, so a tenant can turn
/// a built-in strip into a reject.
pub fn compile_rules(
    global: &PolicySettings,
    tenant: &[RawFieldRule],
    tenant_key: &str,
    o: &Origin<'_>,
) -> Result<Vec<Arc<[FieldRule]>>, ConfigError> {
    let all: Vec<(String, &RawFieldRule)> = global
        .rules
        .iter()
        .enumerate()
        .map(|(j, r)| (format!("policy.rules[{j}]"), r))
        .chain(
            tenant
                .iter()
                .enumerate()
                .map(|(j, r)| (format!("{tenant_key}.policy[{j}]"), r)),
        )
        .collect();
    for (key, r) in &all {
        if !operations::pattern_is_known(&r.operation) {
            return Err(o.err(
                format!("{key}.operation"),
                format!("matches no operation: {}", r.operation),
            ));
        }
        FieldRule::parse(&r.pointer, r.action)
            .map_err(|e| o.err(format!("{key}.pointer"), e.to_string()))?;
    }
    let mut out = Vec::with_capacity(OPERATIONS.len());
    for op in OPERATIONS {
        let mut rules: Vec<FieldRule> = builtin_rules(op.id)
            .into_iter()
            .filter_map(|r| FieldRule::parse(r.pointer(), global.builtin_action).ok())
            .collect();
        for (_, r) in &all {
            if operations::pattern_matches(&r.operation, op.id) {
                rules.retain(|x| x.pointer() != r.pointer);
                if let Ok(rule) = FieldRule::parse(&r.pointer, r.action) {
                    rules.push(rule);
                }
            }
        }
        out.push(Arc::from(rules));
    }
    Ok(out)
}

/// What the policy stage did to a body that passed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyOutcome {
    /// Concrete pointers removed, e.g. `/type`, `/names/0/middleName`.
    pub stripped: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyViolation {
    #[error("field {pointer} is not allowed for this operation")]
    Forbidden { pointer: String },
}

impl PolicyViolation {
    /// The offending pointer (the response's `param`).
    pub fn pointer(&self) -> &str {
        match self {
            PolicyViolation::Forbidden { pointer } => pointer,
        }
    }
}

/// Metadata keys are the caller's own words and may carry personal data.
/// Where a field pointer is recorded or reported to others (a policy error
/// body, a log line, the audit trail) it names the metadata object, never a
/// key; this is the one rule for that. The one exception is deliberate: the
/// `X-Cubegate-Stripped` response header goes back to the caller who sent
/// the keys, and lists `/metadata/<key>` so it can see what was removed.
pub fn shown_pointer(p: &str) -> &str {
    if p.starts_with("/metadata/") {
        "/metadata"
    } else {
        p
    }
}

/// [`shown_pointer`] for a `metadata.<key>` query filter name.
pub fn shown_query_name(q: &str) -> &str {
    if q.starts_with("metadata.") {
        "metadata"
    } else {
        q
    }
}

/// Applies `rules`: every `Reject` rule first (the first present match
/// fails, nothing modified), then every `Strip` rule in order.
pub fn apply(body: &mut Value, rules: &[FieldRule]) -> Result<PolicyOutcome, PolicyViolation> {
    for rule in rules.iter().filter(|r| r.action == PolicyAction::Reject) {
        let mut path = String::new();
        if find_first(body, &rule.segments, &mut path) {
            // The error (and any log of it) names the object, not the key.
            let pointer = shown_pointer(&path).to_string();
            return Err(PolicyViolation::Forbidden { pointer });
        }
    }
    let mut stripped = Vec::new();
    for rule in rules.iter().filter(|r| r.action == PolicyAction::Strip) {
        strip(body, &rule.segments, &mut String::new(), &mut stripped);
    }
    Ok(PolicyOutcome { stripped })
}

/// RFC 6901 array index: `0` or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.is_empty()
        || (token.len() > 1 && token.starts_with('0'))
        || !token.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    token.parse().ok()
}

/// Leaves in `path` the first match (document order) and returns true.
fn find_first(v: &Value, segments: &[Segment], path: &mut String) -> bool {
    let Some((segment, rest)) = segments.split_first() else {
        return true;
    };
    let len = path.len();
    let visit = |child: &Value, token: &str, path: &mut String| {
        push_pointer_token(path, token);
        if find_first(child, rest, path) {
            return true;
        }
        path.truncate(len);
        false
    };
    match (v, segment) {
        (Value::Object(map), Segment::Token(key)) => {
            map.get(key).is_some_and(|child| visit(child, key, path))
        }
        (Value::Object(map), Segment::Any) => {
            map.iter().any(|(key, child)| visit(child, key, path))
        }
        (Value::Array(items), Segment::Token(token)) => array_index(token)
            .and_then(|i| items.get(i))
            .is_some_and(|child| visit(child, token, path)),
        (Value::Array(items), Segment::Any) => items
            .iter()
            .enumerate()
            .any(|(i, child)| visit(child, &i.to_string(), path)),
        _ => false,
    }
}

fn record(path: &mut String, token: &str, out: &mut Vec<String>) {
    let len = path.len();
    push_pointer_token(path, token);
    out.push(path.clone());
    path.truncate(len);
}

/// Removes every match of `segments` under `v`, appending their pointers.
/// Only the last segment removes, so indices on the way down stay valid.
fn strip(v: &mut Value, segments: &[Segment], path: &mut String, out: &mut Vec<String>) {
    let Some((segment, rest)) = segments.split_first() else {
        return;
    };
    if rest.is_empty() {
        match (v, segment) {
            (Value::Object(map), Segment::Token(key)) => {
                // shift_remove keeps the other members' order.
                if map.shift_remove(key.as_str()).is_none() {
                    return;
                }
                record(path, key, out);
            }
            (Value::Object(map), Segment::Any) => {
                for key in map.keys() {
                    record(path, key, out);
                }
                map.clear();
            }
            (Value::Array(items), Segment::Token(token)) => {
                if let Some(i) = array_index(token)
                    && i < items.len()
                {
                    items.remove(i);
                    record(path, token, out);
                }
            }
            (Value::Array(items), Segment::Any) => {
                for i in 0..items.len() {
                    record(path, &i.to_string(), out);
                }
                items.clear();
            }
            _ => {}
        }
        return;
    }
    let len = path.len();
    match (v, segment) {
        (Value::Object(map), Segment::Token(key)) => {
            if let Some(child) = map.get_mut(key.as_str()) {
                push_pointer_token(path, key);
                strip(child, rest, path, out);
                path.truncate(len);
            }
        }
        (Value::Object(map), Segment::Any) => {
            for (key, child) in map.iter_mut() {
                push_pointer_token(path, key);
                strip(child, rest, path, out);
                path.truncate(len);
            }
        }
        (Value::Array(items), Segment::Token(token)) => {
            if let Some(child) = array_index(token).and_then(|i| items.get_mut(i)) {
                push_pointer_token(path, token);
                strip(child, rest, path, out);
                path.truncate(len);
            }
        }
        (Value::Array(items), Segment::Any) => {
            for (i, child) in items.iter_mut().enumerate() {
                push_pointer_token(path, &i.to_string());
                strip(child, rest, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn shown_names_hide_metadata_keys_only() {
        use super::{shown_pointer, shown_query_name};
        assert_eq!(shown_pointer("/metadata/jane.doe@example.com"), "/metadata");
        assert_eq!(shown_pointer("/metadata"), "/metadata");
        assert_eq!(shown_pointer("/metadataX/k"), "/metadataX/k");
        assert_eq!(
            shown_pointer("/personDetails/firstName"),
            "/personDetails/firstName"
        );
        assert_eq!(shown_query_name("metadata.crm-id"), "metadata");
        assert_eq!(shown_query_name("metadata"), "metadata");
        assert_eq!(shown_query_name("email"), "email");
    }

    #[test]
    fn a_rejected_metadata_key_is_not_named() {
        let rules = vec![FieldRule::parse("/metadata/*", PolicyAction::Reject).unwrap()];
        let mut body = serde_json::json!({"metadata": {"jane.doe@example.com": "x"}});
        let e = apply(&mut body, &rules).unwrap_err();
        assert_eq!(e.pointer(), "/metadata");
        assert!(!e.to_string().contains("jane.doe"), "{e}");
    }
    use super::*;
    use serde_json::json;

    fn strip_rule(p: &str) -> FieldRule {
        FieldRule::parse(p, PolicyAction::Strip).unwrap()
    }

    fn reject_rule(p: &str) -> FieldRule {
        FieldRule::parse(p, PolicyAction::Reject).unwrap()
    }

    #[test]
    fn clients_update_strips_type_and_keeps_order() {
        let mut body = json!({"email": "a@b.c", "type": "company", "mobile": "+1", "personDetails": {"type": "x"}});
        let outcome = apply(&mut body, &builtin_rules("clients.update")).unwrap();
        assert_eq!(outcome.stripped, ["/type"]);
        // Only the top-level field goes; order of the rest is preserved.
        assert_eq!(
            body.to_string(),
            r#"{"email":"a@b.c","mobile":"+1","personDetails":{"type":"x"}}"#
        );
        // Nothing to strip: no change, nothing recorded.
        let mut again = body.clone();
        assert_eq!(
            apply(&mut again, &builtin_rules("clients.update")).unwrap(),
            PolicyOutcome::default()
        );
        assert_eq!(again, body);
        assert!(builtin_rules("clients.create").is_empty());
        assert_eq!(builtin_rules("clients.update")[0].pointer(), "/type");
    }

    #[test]
    fn wildcard_reaches_every_array_element_and_object_member() {
        let mut body = json!({
            "names": [{"first": "A", "middleName": "M"}, {"first": "B"}, {"middleName": "N", "last": "L"}],
            "addresses": {"home": {"line": "1", "postcode": "X"}, "work": {"postcode": "Y"}}
        });
        let rules = [
            strip_rule("/names/*/middleName"),
            strip_rule("/addresses/*/postcode"),
        ];
        let outcome = apply(&mut body, &rules).unwrap();
        assert_eq!(
            outcome.stripped,
            [
                "/names/0/middleName",
                "/names/2/middleName",
                "/addresses/home/postcode",
                "/addresses/work/postcode"
            ]
        );
        assert_eq!(
            body,
            json!({"names": [{"first": "A"}, {"first": "B"}, {"last": "L"}], "addresses": {"home": {"line": "1"}, "work": {}}})
        );
    }

    #[test]
    fn trailing_wildcard_and_index_remove_elements() {
        let mut body = json!({"a": [1, 2, 3], "b": [10, 20, 30], "c": {"x": 1, "y": 2}});
        let outcome = apply(
            &mut body,
            &[
                strip_rule("/a/*"),
                strip_rule("/b/1"),
                strip_rule("/c/*"),
                strip_rule("/b/01"),
            ],
        )
        .unwrap();
        assert_eq!(
            outcome.stripped,
            ["/a/0", "/a/1", "/a/2", "/b/1", "/c/x", "/c/y"]
        );
        assert_eq!(body, json!({"a": [], "b": [10, 30], "c": {}}));
    }

    #[test]
    fn reject_leaves_body_untouched() {
        let original =
            json!({"type": "person", "email": "a@b.c", "docs": [{"ok": 1}, {"secret": 2}]});
        let mut body = original.clone();
        let rules = [strip_rule("/type"), reject_rule("/docs/*/secret")];
        let err = apply(&mut body, &rules).unwrap_err();
        assert_eq!(err.pointer(), "/docs/1/secret");
        assert_eq!(
            err.to_string(),
            "field /docs/1/secret is not allowed for this operation"
        );
        // The strip rule listed first did not run either.
        assert_eq!(body, original);
        // A reject rule that matches nothing lets the strips run.
        let mut body = original.clone();
        let outcome = apply(
            &mut body,
            &[strip_rule("/type"), reject_rule("/docs/*/missing")],
        )
        .unwrap();
        assert_eq!(outcome.stripped, ["/type"]);
    }

    #[test]
    fn reject_names_the_field_not_its_value() {
        let mut body = json!({"ssn": "CANARY-123-45-6789"});
        let err = apply(&mut body, &[reject_rule("/ssn")]).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("/ssn") && !shown.contains("CANARY"));
    }

    #[test]
    fn tilde_escapes_follow_rfc6901() {
        let mut body = json!({"a/b": 1, "m~n": 2, "~1": 3, "a": {"b": 4}, "*": 5});
        let rules = [strip_rule("/a~1b"), strip_rule("/m~0n"), strip_rule("/~01")];
        let outcome = apply(&mut body, &rules).unwrap();
        // Reported pointers are escaped again.
        assert_eq!(outcome.stripped, ["/a~1b", "/m~0n", "/~01"]);
        assert_eq!(body, json!({"a": {"b": 4}, "*": 5}));
    }

    #[test]
    fn index_segments_follow_rfc6901() {
        let mut body = json!({"0": "key", "list": ["x"]});
        let outcome = apply(
            &mut body,
            &[
                strip_rule("/0"),
                strip_rule("/list/-"),
                strip_rule("/list/5"),
            ],
        )
        .unwrap();
        assert_eq!(outcome.stripped, ["/0"]);
        assert_eq!(body, json!({"list": ["x"]}));
        // Scalars have no children to match.
        let mut scalar = json!("text");
        assert!(
            apply(&mut scalar, &[strip_rule("/*"), reject_rule("/x")])
                .unwrap()
                .stripped
                .is_empty()
        );
    }

    #[test]
    fn bad_pointers_are_config_errors_naming_the_pointer() {
        for (bad, reason) in [
            ("", "the whole body cannot be a policy target"),
            ("type", "a JSON pointer starts with '/'"),
            ("/a~2", "'~' must be followed by '0' or '1'"),
            ("/a~", "'~' must be followed by '0' or '1'"),
        ] {
            let err = FieldRule::parse(bad, PolicyAction::Reject).unwrap_err();
            assert_eq!(err.reason, reason);
            assert_eq!(err.pointer, bad);
            assert!(err.to_string().contains(&format!("{bad:?}")));
        }
        assert!(FieldRule::parse("/", PolicyAction::Strip).is_ok());
    }

    #[test]
    fn action_deserialises_lowercase_and_defaults_to_strip() {
        assert_eq!(
            serde_json::from_str::<PolicyAction>("\"reject\"").unwrap(),
            PolicyAction::Reject
        );
        assert_eq!(
            serde_json::from_str::<PolicyAction>("\"strip\"").unwrap(),
            PolicyAction::Strip
        );
        assert!(serde_json::from_str::<PolicyAction>("\"Strip\"").is_err());
        assert_eq!(PolicyAction::default(), PolicyAction::Strip);
    }
}
