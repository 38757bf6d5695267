//! Every metric the shipped Grafana dashboard and Prometheus alert rules
//! query is on a fresh gateway's first scrape, before any request: on a
//! healthy gateway the panels read zero, not "no data", and the alerts are
//! not blind.
//!
//! The recorder is process-wide, so when the whole binary runs, other tests
//! may have emitted a series first; run alone (`cargo test --test it
//! metric_catalogue`) this gateway is the process's first and the check is
//! exact.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use crate::common::TestEnv;

fn read(p: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `expr` string anywhere in `v` (panels, rows, rule groups).
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

/// The alert rules are the JSON subset of YAML with `#` comment lines.
fn alert_exprs() -> Vec<String> {
    let text: String = read("deploy/prometheus-alerts.yaml")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    exprs(&serde_json::from_str(&text).unwrap(), &mut out);
    out
}

fn dashboard_exprs() -> Vec<String> {
    let mut out = Vec::new();
    exprs(
        &serde_json::from_str(&read("deploy/grafana-dashboard.json")).unwrap(),
        &mut out,
    );
    out
}

/// The metric names (`cubegate_[a-z0-9_]+`) a PromQL expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.match_indices("cubegate_")
        .map(|(i, _)| {
            expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| n != "cubegate_")
        .collect()
}

/// Sample names (`name` or `name{…} value`) and the `# TYPE` of each family.
fn scrape_names(text: &str) -> (BTreeSet<String>, BTreeSet<(String, String)>) {
    let mut samples = BTreeSet::new();
    let mut types = BTreeSet::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let mut it = t.split_whitespace();
            if let (Some(n), Some(k)) = (it.next(), it.next()) {
                types.insert((n.to_string(), k.to_string()));
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_string());
        }
    }
    (samples, types)
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_query_is_on_the_first_scrape() {
    let env = TestEnv::start().await;
    let first = env.metrics().await;
    let (samples, types) = scrape_names(&first);
    let mut queried: Vec<(&str, String)> = Vec::new();
    for e in dashboard_exprs() {
        queried.extend(metric_names(&e).into_iter().map(|n| ("dashboard", n)));
    }
    for e in alert_exprs() {
        queried.extend(metric_names(&e).into_iter().map(|n| ("alerts", n)));
    }
    assert!(queried.len() > 10, "too few names parsed: {queried:?}");
    let mut missing = BTreeSet::new();
    for (file, name) in &queried {
        // A histogram's `_bucket`/`_sum`/`_count` are its sample names; the
        // family under the base name must be a histogram.
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s));
        let typed = match base {
            Some(b) => types.contains(&(b.to_string(), "histogram".to_string())),
            None => true,
        };
        if !samples.contains(name) || !typed {
            missing.insert(format!("{name} ({file})"));
        }
    }
    assert!(
        missing.is_empty(),
        "queried but not on the first scrape: {missing:#?}\n--- /metrics ---\n{first}"
    );
}
