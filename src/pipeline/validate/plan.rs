//! Which body fields an operation declares: each operation's schema reduced,
//! once at start, to a walk plan (the objects it closes with
//! `additionalProperties: false`, their declared properties, which of those
//! are `readOnly`, and array items), so that undeclared fields can be removed
//! before validation without reading a schema per request.
//!
//! Input: a parsed body and a [`FieldAction`] for undeclared fields. Output:
//! the body without its read-only fields (always: ComplyCube ignores them,
//! and SDKs send whole models back) and, with `Strip`, without fields a
//! closed object does not declare; the removed pointers are appended in
//! document order. With `Reject`, undeclared fields stay for the schema to
//! refuse (400 `unexpected field`). Free-form objects (no
//! `additionalProperties: false`, such as `metadata` or check `options`) are
//! never entered, so no caller-chosen key below them is ever removed or named.
//! A shape the plan does not model (`patternProperties`, a `$ref` that does
//! not resolve, very deep nesting) is left open: the schema still decides.

use std::collections::HashMap;

use serde_json::Value;

use crate::config::FieldAction;
use crate::pipeline::body::push_pointer_token;

/// Nesting beyond this is left open (and cyclic `$ref`s end here).
const MAX_PLAN_DEPTH: usize = 32;

/// What the schema says about one place in the body.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Node {
    /// `additionalProperties: false`: members not in `props` are undeclared.
    closed: bool,
    props: HashMap<String, Prop>,
    /// The plan for every element when this place is an array.
    items: Option<Box<Node>>,
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Prop {
    read_only: bool,
    node: Node,
}

impl Node {
    /// The plan of `schema`, found in the document whose `$id` is `base`;
    /// `documents` holds every schema file by `$id` for `$ref`s.
    pub(super) fn compile(schema: &Value, base: &str, documents: &HashMap<String, Value>) -> Node {
        compile(schema, base, documents, 0)
    }

    /// Removes read-only fields and, with `Strip`, undeclared ones; appends
    /// their pointers to `out`.
    pub(super) fn strip(&self, body: &mut Value, unknown: FieldAction, out: &mut Vec<String>) {
        self.walk(body, unknown, &mut String::new(), out);
    }

    fn walk(&self, v: &mut Value, unknown: FieldAction, path: &mut String, out: &mut Vec<String>) {
        let len = path.len();
        match v {
            Value::Object(map) => {
                if !self.closed && self.props.is_empty() {
                    return;
                }
                map.retain(|key, child| {
                    push_pointer_token(path, key);
                    let keep = match self.props.get(key) {
                        Some(p) if p.read_only => false,
                        Some(p) => {
                            p.node.walk(child, unknown, path, out);
                            true
                        }
                        None => !(self.closed && unknown == FieldAction::Strip),
                    };
                    if !keep {
                        out.push(path.clone());
                    }
                    path.truncate(len);
                    keep
                });
            }
            Value::Array(items) => {
                let Some(node) = &self.items else {
                    return;
                };
                for (i, child) in items.iter_mut().enumerate() {
                    push_pointer_token(path, &i.to_string());
                    node.walk(child, unknown, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
}

fn compile(schema: &Value, base: &str, documents: &HashMap<String, Value>, depth: usize) -> Node {
    let mut node = Node::default();
    if depth > MAX_PLAN_DEPTH {
        return node;
    }
    if let Some((target, target_base)) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| resolve(r, base, documents))
    {
        node = compile(target, &target_base, documents, depth + 1);
    }
    if schema.get("patternProperties").is_some() {
        // Which names a pattern admits is the schema's business: stay open.
        node.closed = false;
        return node;
    }
    node.closed |= schema.get("additionalProperties") == Some(&Value::Bool(false));
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let prop = Prop {
                read_only: sub.get("readOnly") == Some(&Value::Bool(true)),
                node: compile(sub, base, documents, depth + 1),
            };
            node.props.insert(name.clone(), prop);
        }
    }
    if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
        node.items = Some(Box::new(compile(items, base, documents, depth + 1)));
    }
    node
}

/// The schema a `$ref` names, with the `$id` it lives under: absolute, or
/// relative to the directory of `base`, with an optional JSON-pointer fragment.
fn resolve<'d>(
    reference: &str,
    base: &str,
    documents: &'d HashMap<String, Value>,
) -> Option<(&'d Value, String)> {
    let (uri, fragment) = reference.split_once('#').unwrap_or((reference, ""));
    let id = if uri.is_empty() {
        base.to_owned()
    } else if uri.contains("://") {
        uri.to_owned()
    } else {
        let dir = base.rsplit_once('/').map_or("", |(dir, _)| dir);
        format!("{dir}/{uri}")
    };
    let document = documents.get(&id)?;
    let target = if fragment.is_empty() {
        document
    } else {
        document.pointer(fragment)?
    };
    Some((target, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn docs() -> HashMap<String, Value> {
        let mut d = HashMap::new();
        d.insert(
            "https://x.test/defs/person.json".to_owned(),
            json!({"type": "object", "properties": {"name": {"type": "string"}}, "additionalProperties": false}),
        );
        d
    }

    fn plan() -> Node {
        let schema = json!({
            "type": "object",
            "properties": {
                "id": {"type": "string", "readOnly": true},
                "email": {"type": "string"},
                "person": {"$ref": "defs/person.json", "description": "d"},
                "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                "names": {"type": "array", "items": {"type": "object", "properties": {"first": {}}, "additionalProperties": false}}
            },
            "additionalProperties": false
        });
        Node::compile(&schema, "https://x.test/op.json", &docs())
    }

    #[test]
    fn strips_undeclared_and_read_only_fields_but_never_inside_free_form_objects() {
        let mut body = json!({
            "id": "c1", "email": "a@b.c", "key1": "v", "a/b": 1,
            "person": {"name": "N", "nick": "x"},
            "metadata": {"anything": "goes"},
            "names": [{"first": "A", "x": 1}, {"first": "B"}]
        });
        let mut out = Vec::new();
        plan().strip(&mut body, FieldAction::Strip, &mut out);
        assert_eq!(out, ["/id", "/key1", "/a~1b", "/person/nick", "/names/0/x"]);
        assert_eq!(
            body,
            json!({"email": "a@b.c", "person": {"name": "N"}, "metadata": {"anything": "goes"}, "names": [{"first": "A"}, {"first": "B"}]})
        );
    }

    #[test]
    fn reject_mode_keeps_undeclared_fields_for_the_schema_but_drops_read_only_ones() {
        let mut body = json!({"id": "c1", "key1": "v", "person": {"nick": "x"}});
        let mut out = Vec::new();
        plan().strip(&mut body, FieldAction::Reject, &mut out);
        assert_eq!(out, ["/id"]);
        assert_eq!(body, json!({"key1": "v", "person": {"nick": "x"}}));
    }

    #[test]
    fn unmodelled_shapes_stay_open() {
        let open = json!({"type": "object", "patternProperties": {"^x": {}}, "additionalProperties": false});
        let mut body = json!({"y": 1});
        let mut out = Vec::new();
        Node::compile(&open, "https://x.test/op.json", &docs()).strip(
            &mut body,
            FieldAction::Strip,
            &mut out,
        );
        assert!(out.is_empty());
        let dangling = json!({"$ref": "defs/missing.json"});
        assert_eq!(
            Node::compile(&dangling, "https://x.test/op.json", &docs()),
            Node::default()
        );
    }
}
