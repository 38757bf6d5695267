//! `cubegate audit query`: who did what to whose data, from the audit files.
//!
//! Input: files and/or directories (expanded one level) and a
//! [`QueryFilter`].
//! Output: one [`QueryRow`] per request — an intent joined with its outcome
//! by `request_id` (an intent without outcome is `outcome_unknown`, e.g.
//! after a crash); refusals and single-record requests are rows of their
//! own — ordered by time, then instance and seq. Rendered as a fixed-width
//! table or JSON lines. `--client X` and `--resource ID` follow the links
//! the trail records ([`linked`]): a request on X, or on anything created
//! under X (its documents, their uploads, checks, …), matches.
//! Failures: unreadable files, or complete lines that are not records
//! ([`AuditError::Corrupt`], naming file and line). A torn last line (a
//! crash mid-write) is skipped. Query does not check the chain; run
//! `verify` for that.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

use super::record::{Decision, Kind, Record};
use super::{AuditError, expand, io_err};

/// Which rows to keep; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct QueryFilter {
    /// A client id: requests on it or on a resource linked to it.
    pub client: Option<String>,
    /// A resource id: requests on it or on a resource linked below it.
    pub resource: Option<String>,
    /// Caller name.
    pub caller: Option<String>,
    /// Tenant name.
    pub tenant: Option<String>,
    /// Operation id (`clients.update`).
    pub operation: Option<String>,
    /// Rows at or after this time.
    pub since: Option<SystemTime>,
    /// Rows at or before this time.
    pub until: Option<SystemTime>,
    /// `2xx`/`4xx`/…, `refused`, `allowed`, `outcome_unknown`, a decision
    /// name (`refused_policy`) or an exact status (`404`).
    pub outcome: Option<String>,
}

/// One request as the security team sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryRow {
    /// Time of the first record of the request.
    pub time: String,
    /// Writing instance.
    pub instance: String,
    /// Seq of the first record (intent, or the single record).
    pub seq: u64,
    /// Seq of the outcome record, when there is one separate from the intent.
    pub outcome_seq: Option<u64>,
    /// Gateway request id.
    pub request_id: String,
    /// The caller's own `X-Request-Id`, if it sent one.
    pub caller_request_id: Option<String>,
    /// Trace id, if any.
    pub trace_id: Option<String>,
    /// Caller.
    pub caller: Option<String>,
    /// Tenant.
    pub tenant: Option<String>,
    /// live / test.
    pub environment: Option<String>,
    /// Operation id.
    pub operation: Option<String>,
    /// Path parameter name -> id.
    pub resource_ids: BTreeMap<String, String>,
    /// Pointers present in the body.
    pub fields: Vec<String>,
    /// Pointers stripped by policy.
    pub stripped: Vec<String>,
    /// Query parameter names.
    pub query_params: Vec<String>,
    /// Gateway decision.
    pub decision: String,
    /// Short error type.
    pub reason: Option<String>,
    /// Final status, if known.
    pub status: Option<u16>,
    /// `"<status>"`, `"refused"` (refusal without status) or
    /// `"outcome_unknown"`.
    pub outcome: String,
    /// Latency in ms, if known.
    pub latency_ms: Option<u64>,
    /// Fingerprint of the upstream key.
    pub key_fingerprint: Option<String>,
    /// Pointer -> keyed HMAC.
    pub field_hmacs: BTreeMap<String, String>,
    /// A list in a record was cut (too many fields, or the size bound).
    pub truncated: bool,
}

fn row_from(rec: &Record) -> QueryRow {
    let e = &rec.event;
    QueryRow {
        time: rec.time.clone(),
        instance: rec.instance.to_string(),
        seq: rec.seq,
        outcome_seq: None,
        request_id: e.request_id.to_string(),
        caller_request_id: e.caller_request_id.as_ref().map(|c| c.to_string()),
        trace_id: e.trace_id.as_ref().map(|t| t.to_string()),
        caller: e.caller.as_ref().map(|v| v.to_string()),
        tenant: e.tenant.as_ref().map(|v| v.to_string()),
        environment: e.environment.map(|v| v.as_str().to_string()),
        operation: e.operation.as_ref().map(|v| v.to_string()),
        resource_ids: e
            .resource_ids
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        fields: e.fields.iter().map(|p| p.to_string()).collect(),
        stripped: e.stripped.iter().map(|p| p.to_string()).collect(),
        query_params: e.query_params.iter().map(|p| p.to_string()).collect(),
        decision: e.decision.as_str().to_string(),
        reason: e.reason.as_ref().map(|v| v.to_string()),
        status: e.status,
        outcome: outcome_label(e.kind, e.decision, e.status),
        latency_ms: e.latency_ms,
        key_fingerprint: e.key_fingerprint.as_ref().map(|f| f.as_str().to_string()),
        field_hmacs: e
            .field_hmacs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_str().to_string()))
            .collect(),
        truncated: e.truncated,
    }
}

fn outcome_label(kind: Kind, decision: Decision, status: Option<u16>) -> String {
    match (kind, status) {
        (Kind::Intent, _) => "outcome_unknown".into(),
        (_, Some(s)) => s.to_string(),
        (_, None) if decision != Decision::Allowed => "refused".into(),
        (_, None) => "outcome_unknown".into(),
    }
}

/// Reads, joins and filters the records under `paths`.
pub fn query(paths: &[PathBuf], filter: &QueryFilter) -> Result<Vec<QueryRow>, AuditError> {
    let (logs, _) = expand(paths)?;
    let mut rows: Vec<QueryRow> = Vec::new();
    // (instance, request id) -> index of the open intent row.
    let mut open: HashMap<(String, String), usize> = HashMap::new();
    for path in &logs {
        let data = std::fs::read(path).map_err(io_err(path))?;
        let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
        let n = lines.len();
        for (i, line) in lines.into_iter().enumerate() {
            if i + 1 == n {
                // After the final newline (empty) or a torn write.
                break;
            }
            let rec: Record = serde_json::from_slice(line).map_err(|e| AuditError::Corrupt {
                path: path.clone(),
                line: i + 1,
                detail: format!(
                    "not a valid record ({:?} error at column {})",
                    e.classify(),
                    e.column()
                ),
            })?;
            let key = (rec.instance.to_string(), rec.event.request_id.to_string());
            match rec.event.kind {
                Kind::Intent => {
                    open.insert(key, rows.len());
                    rows.push(row_from(&rec));
                }
                Kind::Outcome => {
                    if let Some(idx) = open.remove(&key)
                        && let Some(row) = rows.get_mut(idx)
                    {
                        let o = row_from(&rec);
                        row.outcome_seq = Some(rec.seq);
                        row.status = o.status;
                        row.outcome = o.outcome;
                        row.latency_ms = o.latency_ms;
                        row.decision = o.decision;
                        row.reason = o.reason;
                        if row.key_fingerprint.is_none() {
                            row.key_fingerprint = o.key_fingerprint;
                        }
                        // The outcome of a create adds the id it created.
                        for (k, v) in o.resource_ids {
                            row.resource_ids.entry(k).or_insert(v);
                        }
                        row.truncated |= o.truncated;
                    } else {
                        rows.push(row_from(&rec));
                    }
                }
                Kind::Event => rows.push(row_from(&rec)),
            }
        }
    }
    let client = filter.client.as_deref().map(|c| linked(&rows, c));
    let resource = filter.resource.as_deref().map(|r| linked(&rows, r));
    let mut rows: Vec<QueryRow> = rows
        .into_iter()
        .filter(|r| {
            [&client, &resource]
                .into_iter()
                .flatten()
                .all(|set| ids_of(r).any(|v| set.contains(v)))
                && matches(r, filter)
        })
        .collect();
    // RFC 3339 UTC with fixed millis sorts lexicographically by time.
    rows.sort_by(|a, b| (&a.time, &a.instance, a.seq).cmp(&(&b.time, &b.instance, b.seq)));
    Ok(rows)
}

/// Keys of `resource_ids` naming the request's own resource: the path id
/// and the id a create made.
const SELF_KEYS: &[&str] = &["id", "created"];
/// Keys naming a resource's parents (the pipeline's link keys).
const PARENT_KEYS: &[&str] = &[
    "clientId",
    "documentId",
    "addressId",
    "livePhotoId",
    "liveVideoId",
];

/// The ids a row is about (not `side` or other path words).
fn ids_of(r: &QueryRow) -> impl Iterator<Item = &str> {
    r.resource_ids
        .iter()
        .filter(|(k, _)| SELF_KEYS.contains(&k.as_str()) || PARENT_KEYS.contains(&k.as_str()))
        .map(|(_, v)| v.as_str())
}

/// `root` and every resource the trail links below it: a row whose parent
/// key holds a linked id links its own resource (`id`/`created`) in turn,
/// until nothing new is found. Rows of every directory queried take part,
/// so a document created on one instance and uploaded on another is found.
pub fn linked(rows: &[QueryRow], root: &str) -> std::collections::HashSet<String> {
    let mut set = std::collections::HashSet::from([root.to_string()]);
    loop {
        let before = set.len();
        for r in rows {
            let parent_linked = r
                .resource_ids
                .iter()
                .any(|(k, v)| PARENT_KEYS.contains(&k.as_str()) && set.contains(v));
            if parent_linked {
                for k in SELF_KEYS {
                    if let Some(v) = r.resource_ids.get(*k) {
                        set.insert(v.clone());
                    }
                }
            }
        }
        if set.len() == before {
            return set;
        }
    }
}

fn matches(r: &QueryRow, f: &QueryFilter) -> bool {
    let eq = |want: &Option<String>, have: &Option<String>| {
        want.as_ref()
            .is_none_or(|w| have.as_deref() == Some(w.as_str()))
    };
    if !eq(&f.caller, &r.caller) || !eq(&f.tenant, &r.tenant) || !eq(&f.operation, &r.operation) {
        return false;
    }
    if f.since.is_some() || f.until.is_some() {
        let Ok(t) = humantime::parse_rfc3339(&r.time) else {
            return false;
        };
        if f.since.is_some_and(|s| t < s) || f.until.is_some_and(|u| t > u) {
            return false;
        }
    }
    if let Some(o) = &f.outcome {
        let o = o.trim().to_ascii_lowercase();
        let ok = match o.as_str() {
            "outcome_unknown" | "unknown" => r.outcome == "outcome_unknown",
            "refused" => r.decision.starts_with("refused"),
            "allowed" => r.decision == "allowed",
            c if c.len() == 3 && c.ends_with("xx") => {
                let class = c.as_bytes()[0];
                r.status
                    .is_some_and(|s| s / 100 == u16::from(class.wrapping_sub(b'0')))
            }
            c if c.bytes().all(|b| b.is_ascii_digit()) => {
                r.status.is_some_and(|s| s.to_string() == c)
            }
            c => r.decision == c || r.reason.as_deref() == Some(c),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// One JSON object per row, newline-terminated.
pub fn render_json_lines(rows: &[QueryRow]) -> String {
    let mut out = String::new();
    for r in rows {
        if let Ok(s) = serde_json::to_string(r) {
            out.push_str(&s);
            out.push('\n');
        }
    }
    out
}

/// The table's columns, in order.
const TABLE_HEAD: [&str; 11] = [
    "TIME",
    "INSTANCE",
    "SEQ",
    "REQUEST",
    "CALLER",
    "TENANT",
    "ENV",
    "OPERATION",
    "RESOURCE",
    "OUTCOME",
    "FIELDS",
];

/// A fixed-width table with a header; long lists are shortened with `…`.
pub fn render_table(rows: &[QueryRow]) -> String {
    let cells: Vec<[String; 11]> = rows.iter().map(table_cells).collect();
    let mut widths = TABLE_HEAD.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut push_row = |row: &[String]| {
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(widths.iter()).enumerate() {
            line.push_str(c);
            if i + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', w - c.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(&TABLE_HEAD.map(String::from));
    for row in &cells {
        push_row(row);
    }
    out
}

/// One row's cells under [`TABLE_HEAD`]: `-` for what it lacks, the
/// decision (or reason) after the outcome, long texts cut.
fn table_cells(r: &QueryRow) -> [String; 11] {
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let cut = |s: String, max: usize| {
        if s.chars().count() > max {
            let mut t: String = s.chars().take(max - 1).collect();
            t.push('…');
            t
        } else {
            s
        }
    };
    let resource = if r.resource_ids.is_empty() {
        "-".to_string()
    } else {
        r.resource_ids
            .values()
            .cloned()
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut outcome = r.outcome.clone();
    if r.decision != "allowed" {
        outcome = format!("{outcome} {}", r.decision);
    } else if let Some(rs) = &r.reason {
        outcome = format!("{outcome} {rs}");
    }
    let mut fields = r.fields.join(",");
    if !r.stripped.is_empty() {
        fields = format!("{fields} stripped:{}", r.stripped.join(","));
    }
    if fields.is_empty() {
        fields = "-".into();
    }
    [
        r.time.clone(),
        r.instance.clone(),
        r.seq.to_string(),
        cut(r.request_id.clone(), 36),
        dash(&r.caller),
        dash(&r.tenant),
        dash(&r.environment),
        dash(&r.operation),
        cut(resource, 40),
        outcome,
        cut(fields, 60),
    ]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::record::{AuditEvent, Name, RequestId};
    use super::super::test_util::*;
    use super::super::{AuditLog, Pointer};
    use super::*;

    /// req-1: update of client A by svc-a, 200. req-2: update of client B by
    /// svc-b, crashed before the outcome. req-3: a 401 refusal. req-4: a read
    /// of client A (one outcome record). req-5: a policy refusal.
    async fn sample(dir: &std::path::Path) {
        let log = AuditLog::open(&settings(dir), keys()).unwrap();
        let i1 = event(Kind::Intent, "req-1", "svc-a", "clientA");
        log.append(&i1).await.unwrap();
        log.append(&event(Kind::Intent, "req-2", "svc-b", "clientB"))
            .await
            .unwrap();
        let mut refused = AuditEvent::new(
            Kind::Event,
            RequestId::new("req-3").unwrap(),
            Decision::RefusedAuth,
        );
        refused.status = Some(401);
        refused.reason = Some(Name::new("unauthorized").unwrap());
        log.append(&refused).await.unwrap();
        log.append(&i1.clone().into_outcome(200, 12)).await.unwrap();
        let mut read = event(Kind::Outcome, "req-4", "svc-a", "clientA");
        read.operation = Some(Name::new("clients.get").unwrap());
        read.fields.clear();
        read.stripped.clear();
        read.status = Some(200);
        log.append(&read).await.unwrap();
        let mut pol = event(Kind::Event, "req-5", "svc-b", "clientB");
        pol.decision = Decision::RefusedPolicy;
        pol.status = Some(400);
        pol.stripped = vec![Pointer::new("/type").unwrap()];
        log.append(&pol).await.unwrap();
        log.flush().await.unwrap();
    }

    fn ids(rows: &[QueryRow]) -> Vec<&str> {
        rows.iter().map(|r| r.request_id.as_str()).collect()
    }

    #[tokio::test]
    async fn joins_intent_and_outcome_and_reports_unknown() {
        let d = tempfile::tempdir().unwrap();
        sample(d.path()).await;
        let all = query(&[d.path().to_path_buf()], &QueryFilter::default()).unwrap();
        assert_eq!(ids(&all), ["req-1", "req-2", "req-3", "req-4", "req-5"]);
        let r1 = &all[0];
        assert_eq!((r1.seq, r1.outcome_seq), (1, Some(4)));
        assert_eq!(r1.status, Some(200));
        assert_eq!(r1.outcome, "200");
        assert_eq!(r1.latency_ms, Some(12));
        assert_eq!(r1.resource_ids["id"], "clientA");
        assert_eq!(r1.fields, ["/email", "/type"]);
        assert_eq!(r1.stripped, ["/type"]);
        assert_eq!(all[1].outcome, "outcome_unknown");
        assert_eq!(all[1].status, None);
        assert_eq!(all[2].outcome, "401");
        assert_eq!(all[2].decision, "refused_auth");
    }

    #[tokio::test]
    async fn filters() {
        let d = tempfile::tempdir().unwrap();
        sample(d.path()).await;
        let q = |f: QueryFilter| ids(&query(&[d.path().to_path_buf()], &f).unwrap()).join(" ");
        let client = |c: &str| QueryFilter {
            client: Some(c.into()),
            ..Default::default()
        };
        assert_eq!(q(client("clientA")), "req-1 req-4");
        assert_eq!(q(client("nobody")), "");
        assert_eq!(
            q(QueryFilter {
                caller: Some("svc-b".into()),
                ..Default::default()
            }),
            "req-2 req-5"
        );
        assert_eq!(
            q(QueryFilter {
                operation: Some("clients.get".into()),
                tenant: Some("acme".into()),
                ..Default::default()
            }),
            "req-4"
        );
        let outcome = |o: &str| QueryFilter {
            outcome: Some(o.into()),
            ..Default::default()
        };
        assert_eq!(q(outcome("outcome_unknown")), "req-2");
        assert_eq!(q(outcome("2xx")), "req-1 req-4");
        assert_eq!(q(outcome("4xx")), "req-3 req-5");
        assert_eq!(q(outcome("401")), "req-3");
        assert_eq!(q(outcome("refused")), "req-3 req-5");
        assert_eq!(q(outcome("refused_policy")), "req-5");
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        assert_eq!(
            q(QueryFilter {
                since: Some(now + hour),
                ..Default::default()
            }),
            ""
        );
        assert_eq!(
            q(QueryFilter {
                until: Some(now - hour),
                ..Default::default()
            }),
            ""
        );
        assert_eq!(
            q(QueryFilter {
                since: Some(now - hour),
                until: Some(now + hour),
                client: Some("clientB".into()),
                ..Default::default()
            }),
            "req-2 req-5"
        );
    }

    /// Client X created on instance a, its document D created on b (the
    /// client only in the answer's links), D uploaded on a; an unrelated
    /// client Y. `--client X` follows the links across both directories,
    /// `--resource D` finds only D's requests.
    #[tokio::test]
    async fn client_and_resource_follow_links_across_instances() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut sa = settings(da.path());
        sa.instance = Some("a".into());
        let mut sb = settings(db.path());
        sb.instance = Some("b".into());
        let (la, lb) = (
            AuditLog::open(&sa, keys()).unwrap(),
            AuditLog::open(&sb, keys()).unwrap(),
        );
        let rec = |req: &str, op: &str, ids: &[(&str, &str)]| {
            let mut e = event(Kind::Outcome, req, "svc-a", "x");
            e.resource_ids.clear();
            e.operation = Some(Name::new(op).unwrap());
            for (k, v) in ids {
                e.resource_ids.insert(
                    Name::new(*k).unwrap(),
                    super::super::record::ResourceId::new(*v).unwrap(),
                );
            }
            e
        };
        la.append(&rec("r1", "clients.create", &[("created", "X")]))
            .await
            .unwrap();
        // Distinct milliseconds: rows are ordered by time first.
        tokio::time::sleep(Duration::from_millis(3)).await;
        la.append(&rec("r2", "clients.update", &[("id", "X")]))
            .await
            .unwrap();
        // Distinct milliseconds: rows are ordered by time first.
        tokio::time::sleep(Duration::from_millis(3)).await;
        lb.append(&rec(
            "r3",
            "documents.create",
            &[("clientId", "X"), ("created", "D")],
        ))
        .await
        .unwrap();
        // Distinct milliseconds: rows are ordered by time first.
        tokio::time::sleep(Duration::from_millis(3)).await;
        la.append(&rec(
            "r4",
            "documents.upload",
            &[("id", "D"), ("side", "front")],
        ))
        .await
        .unwrap();
        // Distinct milliseconds: rows are ordered by time first.
        tokio::time::sleep(Duration::from_millis(3)).await;
        lb.append(&rec("r5", "clients.update", &[("id", "Y")]))
            .await
            .unwrap();
        la.flush().await.unwrap();
        lb.flush().await.unwrap();
        let dirs = [da.path().to_path_buf(), db.path().to_path_buf()];
        let q = |f: QueryFilter| ids(&query(&dirs, &f).unwrap()).join(" ");
        let x = q(QueryFilter {
            client: Some("X".into()),
            ..Default::default()
        });
        assert_eq!(x, "r1 r2 r3 r4");
        let d = q(QueryFilter {
            resource: Some("D".into()),
            ..Default::default()
        });
        assert_eq!(d, "r3 r4");
        let front = q(QueryFilter {
            resource: Some("front".into()),
            ..Default::default()
        });
        assert_eq!(front, "", "a path word is not an id");
    }

    #[tokio::test]
    async fn renders_table_and_json_lines() {
        let d = tempfile::tempdir().unwrap();
        sample(d.path()).await;
        let rows = query(&[d.path().to_path_buf()], &QueryFilter::default()).unwrap();
        let t = render_table(&rows);
        let tl: Vec<&str> = t.lines().collect();
        assert_eq!(tl.len(), 6);
        assert!(tl[0].starts_with("TIME") && tl[0].contains("OUTCOME"));
        // Columns line up: OPERATION starts at the same offset on every line.
        let col = tl[0].find("OPERATION").unwrap();
        assert!(tl[1][col..].starts_with("clients.update"));
        assert!(tl[2].contains("outcome_unknown"));
        assert!(tl[3].contains("401 refused_auth"));
        assert!(tl[1].contains("stripped:/type"));
        let j = render_json_lines(&rows);
        let parsed: Vec<serde_json::Value> = j
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(parsed.len(), 5);
        assert_eq!(parsed[1]["outcome"], "outcome_unknown");
    }

    #[tokio::test]
    async fn torn_tail_is_skipped_and_corrupt_lines_are_named() {
        let d = tempfile::tempdir().unwrap();
        sample(d.path()).await;
        let f = log_files(d.path()).pop().unwrap();
        let mut data = std::fs::read(&f).unwrap();
        data.extend_from_slice(b"{\"v\":1,\"se");
        std::fs::write(&f, &data).unwrap();
        assert_eq!(
            query(std::slice::from_ref(&f), &QueryFilter::default())
                .unwrap()
                .len(),
            5
        );
        data.extend_from_slice(b"\n");
        std::fs::write(&f, &data).unwrap();
        match query(&[f], &QueryFilter::default()) {
            Err(AuditError::Corrupt { line, .. }) => assert_eq!(line, 7),
            other => panic!("{other:?}"),
        }
    }
}
