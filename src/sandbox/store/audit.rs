//! The sandbox's own audit log, shaped like ComplyCube's audit log object.
//!
//! Input: one change to a stored object (its kind, the object before and
//! after). Output: an `auditLogs` entry in the same partition with
//! `resourceType`, `resourceId`, `clientId`, `memberId` (the change's
//! `lastActionBy`, else null), `trigger` (`updateClient`, ...), `action`
//! (`create` | `update` | `delete`), a `diff` of old and new values and
//! `createdAt`. Entries are stored like any other object, so `GET
//! /auditLogs` filters them with the same equality rules; each key keeps
//! its newest entries up to the store's cap.

use serde_json::{Map, Value, json};

use super::{Kind, Obj, Store, now_iso};

/// What happened to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Create,
    Update,
    Delete,
    /// The sandbox itself completed a check or workflow session.
    Complete,
}

impl Change {
    fn action(self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Update | Change::Complete => "update",
            Change::Delete => "delete",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Update => "update",
            Change::Delete => "delete",
            Change::Complete => "complete",
        }
    }
}

impl Store {
    /// Records one change; `before` is `None` for a create, `after` for a
    /// delete.
    pub(crate) fn audit(
        &mut self,
        key: &str,
        change: Change,
        kind: Kind,
        before: Option<&Obj>,
        after: Option<&Obj>,
    ) {
        let Some(subject) = after.or(before) else {
            return;
        };
        let resource_id = subject.get("id").cloned().unwrap_or(Value::Null);
        let client_id = if kind == Kind::Client {
            resource_id.clone()
        } else {
            subject.get("clientId").cloned().unwrap_or(Value::Null)
        };
        let member = after
            .and_then(|o| o.get("lastActionBy"))
            .filter(|v| v.is_string())
            .cloned()
            .unwrap_or(Value::Null);
        let noun = kind.resource_type();
        let mut trigger = change.verb().to_string();
        let mut chars = noun.chars();
        if let Some(first) = chars.next() {
            trigger.extend(first.to_uppercase());
            trigger.push_str(chars.as_str());
        }
        let mut diff = Vec::new();
        // A missing side counts as `{}`, so a create lists every field as new.
        let whole = |o: Option<&Obj>| Value::Object(o.cloned().unwrap_or_default());
        let (old, new) = (whole(before), whole(after));
        diff_into(&mut diff, &mut Vec::new(), Some(&old), Some(&new));
        let entry = json!({
            "id": self.new_id(),
            "memberId": member,
            "resourceType": noun,
            "resourceId": resource_id,
            "clientId": client_id,
            "trigger": trigger,
            "action": change.action(),
            "diff": diff,
            "createdAt": now_iso(),
        });
        if self.max_audit == 0 {
            return;
        }
        if let Value::Object(o) = entry {
            let id = o
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            self.insert(key, Kind::AuditLog, o);
            let order = self.audit_order.entry(key.to_string()).or_default();
            order.push_back(id);
            let mut dropped = Vec::new();
            while order.len() > self.max_audit {
                dropped.extend(order.pop_front());
            }
            for old in dropped {
                self.remove(key, Kind::AuditLog, &old);
            }
        }
    }
}

/// Appends the differences between `old` and `new` at `path`: objects are
/// compared key by key, anything else as a whole value.
fn diff_into(
    out: &mut Vec<Value>,
    path: &mut Vec<String>,
    old: Option<&Value>,
    new: Option<&Value>,
) {
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().collect();
            keys.extend(b.keys().filter(|k| !a.contains_key(*k)));
            for k in keys {
                path.push(k.clone());
                diff_into(out, path, a.get(k), b.get(k));
                path.pop();
            }
        }
        (Some(a), Some(b)) if a == b => {}
        (None, None) => {}
        (a, b) => {
            let mut d = Map::new();
            let action = match (a, b) {
                (None, _) => "new",
                (_, None) => "delete",
                _ => "update",
            };
            d.insert("action".into(), Value::String(action.into()));
            d.insert("path".into(), json!(path));
            if let Some(a) = a {
                d.insert("old".into(), a.clone());
            }
            if let Some(b) = b {
                d.insert("new".into(), b.clone());
            }
            out.push(Value::Object(d));
        }
    }
}
