//! In-memory object store of the sandbox, partitioned by API key.
//!
//! Input: JSON objects to insert, ids to read, update or delete, list queries
//! (equality filters, dotted paths, pagination). Output: stored objects with
//! ComplyCube-style ids (24 lowercase hex, like Mongo ObjectIds) and ISO-8601
//! UTC timestamps with milliseconds; list pages in ComplyCube's envelope.
//! Failures: [`ListError`] for a bad `page`/`pageSize`; a missing id is `None`.
//! Two keys never share a partition, so test_ and live_ data never mix.
//! Objects that settle later (checks, workflow sessions) are scheduled here
//! and handed back by [`Store::take_due`] once their delay has passed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

mod audit;
pub(crate) use audit::Change;

/// A JSON object as stored.
pub(crate) type Obj = Map<String, Value>;

/// Resource kinds the sandbox stores (others are answered synthetically).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Client,
    Address,
    Document,
    LivePhoto,
    LiveVideo,
    Check,
    Webhook,
    WorkflowSession,
    AuditLog,
    CustomList,
    Company,
    TeamMember,
}

impl Kind {
    /// The words used in ComplyCube's "Invalid <name> id '<id>'" messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Client => "client",
            Kind::Address => "address",
            Kind::Document => "document",
            Kind::LivePhoto => "live photo",
            Kind::LiveVideo => "live video",
            Kind::Check => "check",
            Kind::Webhook => "webhook",
            Kind::WorkflowSession => "workflow session",
            Kind::AuditLog => "audit log",
            Kind::CustomList => "custom list",
            Kind::Company => "company details",
            Kind::TeamMember => "team member",
        }
    }

    /// The `resourceType` of audit logs, also the noun of their `trigger`
    /// (`createClient`, `updateLivePhoto`, ...).
    pub(crate) fn resource_type(self) -> &'static str {
        match self {
            Kind::Client => "client",
            Kind::Address => "address",
            Kind::Document => "document",
            Kind::LivePhoto => "livePhoto",
            Kind::LiveVideo => "liveVideo",
            Kind::Check => "check",
            Kind::Webhook => "webhook",
            Kind::WorkflowSession => "workflowSession",
            Kind::AuditLog => "auditLog",
            Kind::CustomList => "customList",
            Kind::Company => "companyLookup",
            Kind::TeamMember => "teamMember",
        }
    }
}

/// An object waiting to settle (a check or workflow session to complete).
#[derive(Debug)]
struct Due {
    key: String,
    kind: Kind,
    id: String,
    at: Instant,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    obj: Obj,
}

#[derive(Debug, Default)]
struct Partition {
    seq: u64,
    kinds: HashMap<Kind, HashMap<String, Entry>>,
}

/// All sandbox data; callers hold it behind one mutex.
#[derive(Debug)]
pub(crate) struct Store {
    partitions: HashMap<String, Partition>,
    ids: IdGen,
    settle_after: Duration,
    due: Vec<Due>,
    /// Audit log entries kept per key, and their ids oldest first, so a
    /// long benchmark's history stays bounded like its recorded requests.
    max_audit: usize,
    audit_order: HashMap<String, VecDeque<String>>,
}

/// Why a list query was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ListError {
    pub param: &'static str,
    pub message: &'static str,
}

impl Store {
    /// A store whose scheduled objects settle `settle_after` after
    /// [`Store::schedule`].
    pub(crate) fn new(settle_after: Duration) -> Store {
        Store {
            partitions: HashMap::new(),
            ids: IdGen::new(),
            settle_after,
            due: Vec::new(),
            max_audit: 100_000,
            audit_order: HashMap::new(),
        }
    }

    /// Keeps at most `n` audit log entries per key (oldest dropped first).
    pub(crate) fn with_audit_cap(mut self, n: usize) -> Store {
        self.max_audit = n;
        self
    }

    /// Marks an object to settle once the store's delay has passed.
    pub(crate) fn schedule(&mut self, key: &str, kind: Kind, id: &str) {
        self.due.push(Due {
            key: key.to_string(),
            kind,
            id: id.to_string(),
            at: Instant::now() + self.settle_after,
        });
    }

    /// The objects of `key` whose delay has passed, oldest first; each is
    /// handed out once.
    pub(crate) fn take_due(&mut self, key: &str) -> Vec<(Kind, String)> {
        let now = Instant::now();
        let (ready, waiting): (Vec<Due>, Vec<Due>) = std::mem::take(&mut self.due)
            .into_iter()
            .partition(|d| d.key == key && d.at <= now);
        self.due = waiting;
        ready.into_iter().map(|d| (d.kind, d.id)).collect()
    }

    pub(crate) fn new_id(&self) -> String {
        self.ids.next()
    }

    /// Stores `obj` (which must already carry its `id`) under `key`.
    pub(crate) fn insert(&mut self, key: &str, kind: Kind, obj: Obj) {
        let id = obj
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let p = self.partitions.entry(key.to_string()).or_default();
        p.seq += 1;
        let seq = p.seq;
        p.kinds
            .entry(kind)
            .or_default()
            .insert(id, Entry { seq, obj });
    }

    pub(crate) fn get(&self, key: &str, kind: Kind, id: &str) -> Option<&Obj> {
        self.partitions
            .get(key)?
            .kinds
            .get(&kind)?
            .get(id)
            .map(|e| &e.obj)
    }

    pub(crate) fn get_mut(&mut self, key: &str, kind: Kind, id: &str) -> Option<&mut Obj> {
        self.partitions
            .get_mut(key)?
            .kinds
            .get_mut(&kind)?
            .get_mut(id)
            .map(|e| &mut e.obj)
    }

    pub(crate) fn remove(&mut self, key: &str, kind: Kind, id: &str) -> Option<Obj> {
        self.partitions
            .get_mut(key)?
            .kinds
            .get_mut(&kind)?
            .remove(id)
            .map(|e| e.obj)
    }

    /// One page of the objects of `kind` matching every filter in `query`,
    /// newest first, in ComplyCube's list envelope.
    pub(crate) fn list(
        &self,
        key: &str,
        kind: Kind,
        query: &[(String, String)],
    ) -> Result<Value, ListError> {
        let mut page: u64 = 1;
        let mut page_size: u64 = 100;
        let mut filters = Vec::new();
        for (k, v) in query {
            match k.as_str() {
                "page" => {
                    page = v.parse().ok().filter(|p| *p >= 1).ok_or(ListError {
                        param: "page",
                        message: "'page' must be an integer greater than or equal to 1",
                    })?;
                }
                "pageSize" => {
                    page_size =
                        v.parse()
                            .ok()
                            .filter(|p| (1..=1000).contains(p))
                            .ok_or(ListError {
                                param: "pageSize",
                                message: "'pageSize' must be an integer between 1 and 1000",
                            })?;
                }
                _ => filters.push((k.as_str(), v.as_str())),
            }
        }
        let mut hits: Vec<&Entry> = self
            .partitions
            .get(key)
            .and_then(|p| p.kinds.get(&kind))
            .map(|m| {
                m.values()
                    .filter(|e| filters.iter().all(|(k, v)| matches(&e.obj, k, v)))
                    .collect()
            })
            .unwrap_or_default();
        hits.sort_by_key(|e| std::cmp::Reverse(e.seq));
        let total = hits.len() as u64;
        let pages = total.div_ceil(page_size);
        let start = usize::try_from((page - 1).saturating_mul(page_size)).unwrap_or(usize::MAX);
        let items: Vec<Value> = hits
            .into_iter()
            .skip(start)
            .take(usize::try_from(page_size).unwrap_or(usize::MAX))
            .map(|e| Value::Object(e.obj.clone()))
            .collect();
        Ok(json!({
            "page": page,
            "pageSize": page_size,
            "totalItems": total,
            "pages": pages,
            "items": items,
        }))
    }
}

/// One equality filter: `createdAfter`-style bounds compare timestamps,
/// anything else compares the (possibly dotted) attribute's text.
fn matches(obj: &Obj, key: &str, want: &str) -> bool {
    let ts = |field: &str| obj.get(field).and_then(Value::as_str).unwrap_or_default();
    match key {
        "createdAfter" => ts("createdAt") > want,
        "createdBefore" => ts("createdAt") < want,
        "updatedAfter" => ts("updatedAt") > want,
        "updatedBefore" => ts("updatedAt") < want,
        _ => {
            let mut cur: Option<&Value> = None;
            for (i, part) in key.split('.').enumerate() {
                cur = if i == 0 {
                    obj.get(part)
                } else {
                    cur.and_then(|c| c.get(part))
                };
            }
            match cur {
                Some(Value::String(s)) => s == want,
                Some(Value::Bool(b)) => b.to_string() == want,
                Some(Value::Number(n)) => n.to_string() == want,
                Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(want)),
                _ => false,
            }
        }
    }
}

/// Merges `patch` into `target`: nested objects merge key by key, anything
/// else replaces, `null` removes (ComplyCube leaves empty fields out).
pub(crate) fn merge(target: &mut Obj, patch: &Obj) {
    for (k, v) in patch {
        match (target.get_mut(k), v) {
            (_, Value::Null) => {
                target.remove(k);
            }
            (Some(Value::Object(t)), Value::Object(p)) => merge(t, p),
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Now as ISO-8601 UTC with milliseconds, e.g. `2020-01-04T17:24:29.146Z`.
pub(crate) fn now_iso() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// ObjectId-shaped ids: 4 bytes of seconds, 5 random bytes per process, a
/// 3-byte counter, so ids are unique and sort roughly by creation.
#[derive(Debug)]
struct IdGen {
    random: [u8; 5],
    counter: AtomicU32,
}

impl IdGen {
    fn new() -> IdGen {
        use ring::rand::SecureRandom;
        let rng = ring::rand::SystemRandom::new();
        let mut seed = [0u8; 8];
        // A failed fill only makes ids less random; they stay unique per store.
        let _ = rng.fill(&mut seed);
        let mut random = [0u8; 5];
        random.copy_from_slice(&seed[..5]);
        let counter = u32::from_be_bytes([0, seed[5], seed[6], seed[7]]);
        IdGen {
            random,
            counter: AtomicU32::new(counter),
        }
    }

    fn next(&self) -> String {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0) as u32;
        let c = self.counter.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
        let mut out = String::with_capacity(24);
        for b in secs
            .to_be_bytes()
            .iter()
            .chain(self.random.iter())
            .chain(c.to_be_bytes()[1..].iter())
        {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Obj {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn ids_are_24_lowercase_hex_and_unique() {
        let g = IdGen::new();
        let a = g.next();
        let b = g.next();
        assert_eq!(a.len(), 24);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn merge_is_deep_and_null_removes() {
        let mut t = obj(json!({"a": {"x": 1, "y": 2}, "b": 1, "c": 3}));
        merge(&mut t, &obj(json!({"a": {"y": 5}, "b": null, "d": [1]})));
        assert_eq!(
            Value::Object(t),
            json!({"a": {"x": 1, "y": 5}, "c": 3, "d": [1]})
        );
    }

    #[test]
    fn list_filters_pages_and_partitions() {
        let mut s = Store::new(std::time::Duration::ZERO);
        for i in 0..5 {
            let id = s.new_id();
            s.insert(
                "test_aaaa",
                Kind::Client,
                obj(json!({"id": id, "n": i, "personDetails": {"firstName": if i % 2 == 0 {"Ann"} else {"Bob"}}})),
            );
        }
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let page = s
            .list(
                "test_aaaa",
                Kind::Client,
                &q(&[("pageSize", "2"), ("page", "2")]),
            )
            .unwrap();
        assert_eq!(page["totalItems"], 5);
        assert_eq!(page["pages"], 3);
        // newest first: n = 4,3 on page 1, 2,1 on page 2
        assert_eq!(page["items"][0]["n"], 2);
        assert_eq!(page["items"][1]["n"], 1);
        let anns = s
            .list(
                "test_aaaa",
                Kind::Client,
                &q(&[("personDetails.firstName", "Ann")]),
            )
            .unwrap();
        assert_eq!(anns["totalItems"], 3);
        let other = s.list("live_aaaa", Kind::Client, &[]).unwrap();
        assert_eq!(other["totalItems"], 0);
        assert_eq!(other["pages"], 0);
        assert_eq!(
            s.list("test_aaaa", Kind::Client, &q(&[("pageSize", "0")]))
                .unwrap_err()
                .param,
            "pageSize"
        );
    }
}
