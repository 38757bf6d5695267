//! The object keys each operation's JSON Schema names, as a tree: which
//! keys of a body are the API's own names and which the caller chose.
//!
//! Input: the schema documents by `$id`. Output: one [`KeyTree`] per
//! operation: at each object, the keys its `properties` declare (through
//! `$ref`, `allOf`/`anyOf`/`oneOf`, `if`/`then`/`else`), and the tree of
//! array `items`. Keys matched only by `additionalProperties` or
//! `patternProperties` are caller-chosen (metadata keys, option names the
//! schema leaves open): the audit trail shows them as `*`.
//! Failures: none; a `$ref` that does not resolve names nothing (the
//! validator refuses such a schema set at start-up anyway).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// Deeper than any shipped schema nests; stops a `$ref` cycle.
const MAX_DEPTH: usize = 32;

/// The named keys below one place of a body.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyTree {
    /// Declared property -> what it names below.
    pub props: BTreeMap<String, KeyTree>,
    /// What array elements here name.
    pub items: Option<Box<KeyTree>>,
}

impl KeyTree {
    /// The subtree of a declared key, or None for a caller-chosen one.
    pub fn key(&self, k: &str) -> Option<&KeyTree> {
        self.props.get(k)
    }

    /// The subtree for array elements (empty: nothing named).
    pub fn item(&self) -> &KeyTree {
        static EMPTY: std::sync::OnceLock<KeyTree> = std::sync::OnceLock::new();
        self.items
            .as_deref()
            .unwrap_or_else(|| EMPTY.get_or_init(KeyTree::default))
    }

    fn merge(&mut self, other: KeyTree) {
        for (k, t) in other.props {
            self.props.entry(k).or_default().merge(t);
        }
        if let Some(i) = other.items {
            match &mut self.items {
                Some(mine) => mine.merge(*i),
                None => self.items = Some(i),
            }
        }
    }
}

/// Each operation's tree merged with those of the other operations on the
/// same resource (`clients.update` names `type` because `clients.create`
/// does, though the update's schema refuses it): a name of the API is
/// never hidden, whichever operation it reached.
pub fn by_resource(trees: BTreeMap<String, KeyTree>) -> BTreeMap<String, KeyTree> {
    let resource = |op: &str| op.split_once('.').map_or(op, |(r, _)| r).to_string();
    let mut merged: BTreeMap<String, KeyTree> = BTreeMap::new();
    for (op, t) in &trees {
        merged.entry(resource(op)).or_default().merge(t.clone());
    }
    trees
        .keys()
        .map(|op| {
            let t = merged.get(&resource(op)).cloned().unwrap_or_default();
            (op.clone(), t)
        })
        .collect()
}

/// The tree of the schema `doc` whose `$id` is `base`.
pub fn tree(doc: &Value, base: &str, docs: &HashMap<String, Value>) -> KeyTree {
    build(doc, base, docs, 0)
}

fn build(node: &Value, base: &str, docs: &HashMap<String, Value>, depth: usize) -> KeyTree {
    let mut t = KeyTree::default();
    let Some(obj) = node.as_object() else {
        return t;
    };
    if depth > MAX_DEPTH {
        return t;
    }
    if let Some(r) = obj.get("$ref").and_then(Value::as_str)
        && let Some((target, target_base)) = resolve(r, base, docs)
    {
        t.merge(build(target, &target_base, docs, depth + 1));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, sub) in props {
            t.props
                .entry(k.clone())
                .or_default()
                .merge(build(sub, base, docs, depth + 1));
        }
    }
    if let Some(items) = obj.get("items") {
        t.merge(KeyTree {
            props: BTreeMap::new(),
            items: Some(Box::new(build(items, base, docs, depth + 1))),
        });
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for sub in obj.get(key).and_then(Value::as_array).into_iter().flatten() {
            t.merge(build(sub, base, docs, depth + 1));
        }
    }
    for key in ["if", "then", "else"] {
        if let Some(sub) = obj.get(key) {
            t.merge(build(sub, base, docs, depth + 1));
        }
    }
    t
}

/// A `$ref` relative to `base` (`defs/x.json`, `x.json#/$defs/y`, `#/…`):
/// the node it points at and that document's `$id`.
fn resolve<'a>(
    r: &str,
    base: &str,
    docs: &'a HashMap<String, Value>,
) -> Option<(&'a Value, String)> {
    let (file, fragment) = r.split_once('#').unwrap_or((r, ""));
    let id = if file.is_empty() {
        base.to_string()
    } else if file.contains("://") {
        file.to_string()
    } else {
        let dir = base.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{file}")
    };
    let doc = docs.get(&id)?;
    let node = if fragment.is_empty() {
        doc
    } else {
        doc.pointer(fragment)?
    };
    Some((node, id))
}

#[cfg(test)]
mod tests {
    use crate::pipeline::validate::Schemas;

    #[test]
    fn shipped_schemas_name_their_keys_and_leave_open_objects_open() {
        let s = Schemas::embedded().unwrap();
        let t = s.named_keys("clients.create");
        assert!(t.key("email").is_some());
        let pd = t.key("personDetails").expect("through $ref and allOf");
        assert!(pd.key("firstName").is_some());
        let md = t.key("metadata").expect("metadata itself is named");
        assert!(md.props.is_empty(), "its keys are the caller's");
        let checks = s.named_keys("checks.create");
        let opts = checks.key("options").unwrap();
        assert!(opts.key("screeningListsScope").is_some());
        assert!(opts.key("Zyxkeyname").is_none());
        assert!(s.named_keys("no.such.op").props.is_empty());
    }
}
