//! What of a body reaches the audit record: the field list, summarised and
//! with caller-chosen keys hidden, and the link ids (`clientId`, …).
//!
//! Input: the parsed body, the keys its operation's schema names
//! ([`KeyTree`]) and a cap on pointers. Output: a [`FieldList`]: the first
//! `cap` distinct pointers in document order, where every object key the
//! schema does not name is written `*` (`/options/*`, `/metadata/*`, `/*`
//! for an unknown top-level key), plus the total count of members and
//! elements, the nesting depth, and whether the list was cut.
//! Failures: none. Why: a body's keys outside the schema were chosen by the
//! caller and may be personal data, and a list with one entry per element
//! would let one request write megabytes of audit.

use serde_json::Value;

use crate::pipeline::body::push_pointer_token;
use crate::pipeline::validate::KeyTree;

/// The record's view of a body's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldList {
    /// Distinct shown pointers, in document order, at most `cap`.
    pub pointers: Vec<String>,
    /// Every member and element of the body.
    pub total: u64,
    /// The deepest pointer's number of segments.
    pub depth: u32,
    /// Some pointers were left out because of the cap.
    pub truncated: bool,
}

/// Top-level body members that link a resource to its parents: each holds
/// a ComplyCube id, never personal data.
pub const LINK_KEYS: &[&str] = &[
    "clientId",
    "documentId",
    "addressId",
    "livePhotoId",
    "liveVideoId",
];

struct Walk<'a> {
    out: &'a mut FieldList,
    seen: std::collections::HashSet<String>,
    cap: usize,
}

impl Walk<'_> {
    fn visit(&mut self, v: &Value, keys: Option<&KeyTree>, prefix: &mut String, depth: u32) {
        let len = prefix.len();
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let named = keys.and_then(|t| t.key(k));
                    match named {
                        Some(_) => push_pointer_token(prefix, k),
                        None => prefix.push_str("/*"),
                    }
                    self.field(prefix, depth + 1);
                    self.visit(child, named, prefix, depth + 1);
                    prefix.truncate(len);
                }
            }
            Value::Array(items) => {
                let item_keys = keys.map(KeyTree::item);
                for (i, child) in items.iter().enumerate() {
                    prefix.push('/');
                    prefix.push_str(&i.to_string());
                    self.field(prefix, depth + 1);
                    self.visit(child, item_keys, prefix, depth + 1);
                    prefix.truncate(len);
                }
            }
            _ => {}
        }
    }

    fn field(&mut self, p: &str, depth: u32) {
        self.out.total += 1;
        self.out.depth = self.out.depth.max(depth);
        if self.seen.contains(p) {
            return;
        }
        if self.out.pointers.len() >= self.cap {
            self.out.truncated = true;
            return;
        }
        self.seen.insert(p.to_string());
        self.out.pointers.push(p.to_string());
    }
}

/// The field list of `body` for the record (see the module docs).
pub fn summarise(body: &Value, keys: &KeyTree, cap: usize) -> FieldList {
    let mut out = FieldList::default();
    let mut walk = Walk {
        out: &mut out,
        seen: Default::default(),
        cap,
    };
    walk.visit(body, Some(keys), &mut String::new(), 0);
    out
}

/// A pointer the policy produced (e.g. a stripped `/metadata/crm`), with
/// every segment the schema does not name written `*`; an array index is
/// kept where the schema has an array.
pub fn collapse(p: &str, keys: &KeyTree) -> String {
    let mut out = String::with_capacity(p.len());
    let mut at = Some(keys);
    for raw in p.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        let is_index = !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit());
        at = match at {
            Some(t) if t.key(&seg).is_some() => {
                push_pointer_token(&mut out, &seg);
                t.key(&seg)
            }
            Some(t) if is_index && t.items.is_some() => {
                push_pointer_token(&mut out, &seg);
                Some(t.item())
            }
            _ => {
                out.push_str("/*");
                None
            }
        };
    }
    out
}

/// The link ids of a body: top-level [`LINK_KEYS`] members holding an id.
pub fn links(body: &Value) -> Vec<(&'static str, String)> {
    LINK_KEYS
        .iter()
        .filter_map(|k| {
            let v = body.get(*k)?.as_str()?;
            crate::audit::ResourceId::new(v.to_string()).ok()?;
            Some((*k, v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::validate::Schemas;
    use serde_json::json;

    #[test]
    fn caller_keys_are_stars_and_the_list_is_capped() {
        let s = Schemas::embedded().unwrap();
        let body = json!({"clientId": "5f00", "type": "standard_screening_check",
            "options": {"Zyxkeyname": 1, "screeningListsScope": {"mode": "inclusion"}}});
        let f = summarise(&body, s.named_keys("checks.create"), 64);
        assert_eq!(
            f.pointers,
            [
                "/clientId",
                "/type",
                "/options",
                "/options/*",
                "/options/screeningListsScope",
                "/options/screeningListsScope/mode"
            ]
        );
        assert!(!f.truncated);
        assert_eq!((f.total, f.depth), (6, 3));
        let zeros = vec![0; 1000];
        let body = json!({"email": "a@b.c", "zz": {"k1": {"k2": {"k3": zeros}}}});
        let f = summarise(&body, s.named_keys("clients.update"), 64);
        assert_eq!(f.pointers.len(), 64);
        assert!(f.truncated);
        assert_eq!(f.total, 1005);
        assert_eq!(f.depth, 5);
        assert_eq!(&f.pointers[..4], ["/email", "/*", "/*/*", "/*/*/*"]);
        assert!(f.pointers.iter().all(|p| !p.contains('k')), "{f:?}");
    }

    #[test]
    fn policy_pointers_collapse_the_same_way() {
        let s = Schemas::embedded().unwrap();
        let k = s.named_keys("clients.update");
        assert_eq!(collapse("/metadata/crm", k), "/metadata/*");
        assert_eq!(collapse("/personDetails/dob", k), "/personDetails/dob");
        assert_eq!(collapse("/type", k), "/type", "named by clients.create");
        assert_eq!(collapse("/zz/k1", k), "/*/*");
        let k = s.named_keys("customLists.addRecord");
        assert_eq!(collapse("/names/0/middleName", k), "/names/0/middleName");
        assert_eq!(
            links(&json!({"clientId": "5f0a", "documentId": "a b", "x": "1"})),
            [("clientId", "5f0a".to_string())]
        );
    }
}
