use super::spans::parse_traceparent;
use super::*;
use http::{HeaderMap, HeaderValue};

#[test]
fn traceparent_parsing() {
    assert!(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
    for bad in [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "garbage",
    ] {
        assert!(parse_traceparent(bad).is_none(), "{bad}");
    }
}

#[test]
fn export_is_off_by_default_and_otel_variables_win_over_config() {
    let none = |_: &str| None;
    let cfg = TelemetrySettings::default();
    assert_eq!(export_plan(&cfg, &none), None, "off by default");
    let env = |k: &str| match k {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://c:4318".to_string()),
        "OTEL_SERVICE_NAME" => Some("gw-eu".to_string()),
        "OTEL_TRACES_SAMPLER" => Some("always_on".to_string()),
        _ => None,
    };
    let cfg = TelemetrySettings {
        otlp_endpoint: Some("http://from-config:4318/".into()),
        service_name: Some("from-config".into()),
        sample_ratio: Some(0.1),
        ..Default::default()
    };
    let p = export_plan(&cfg, &env).unwrap();
    assert_eq!(p.endpoint, None, "the SDK reads the OTEL endpoint itself");
    assert_eq!(p.service_name, "gw-eu");
    assert_eq!(p.sample_ratio, None, "OTEL_TRACES_SAMPLER wins");
    assert_eq!(p.logs_endpoint, None, "the SDK derives …/v1/logs itself");
    assert!(p.audit_logs, "audit records ship with the traces");
    let p = export_plan(&cfg, &none).unwrap();
    assert_eq!(
        p.endpoint.as_deref(),
        Some("http://from-config:4318/v1/traces")
    );
    assert_eq!(p.service_name, "from-config");
    assert_eq!(
        p.logs_endpoint.as_deref(),
        Some("http://from-config:4318/v1/logs")
    );
    assert_eq!(p.sample_ratio, Some(0.1));
    let traces_url = TelemetrySettings {
        otlp_endpoint: Some("http://c:4318/v1/traces".into()),
        ..Default::default()
    };
    let p = export_plan(&traces_url, &none).unwrap();
    assert_eq!(p.logs_endpoint.as_deref(), Some("http://c:4318/v1/logs"));
    let logs_env =
        |k: &str| (k == "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT").then(|| "http://l:1/x".to_string());
    let p = export_plan(&traces_url, &logs_env).unwrap();
    assert_eq!(
        p.logs_endpoint, None,
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT wins"
    );
    assert!(p.endpoint.is_some(), "traces keep the config endpoint");
    let traces_only_env = |k: &str| {
        (k == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").then(|| "http://t:1/v1/traces".to_string())
    };
    let p = export_plan(&TelemetrySettings::default(), &traces_only_env).unwrap();
    assert!(
        !p.audit_logs,
        "a traces-only endpoint says nothing about where audit logs go"
    );
    let no_logs = |k: &str| (k == "OTEL_LOGS_EXPORTER").then(|| "none".to_string());
    let p = export_plan(&traces_url, &no_logs).unwrap();
    assert!(
        !p.audit_logs,
        "OTEL_LOGS_EXPORTER=none keeps traces, drops logs"
    );
    let disabled = |k: &str| (k == "OTEL_SDK_DISABLED").then(|| "true".to_string());
    assert_eq!(export_plan(&cfg, &disabled), None);
    let off = TelemetrySettings {
        enabled: Some(false),
        ..Default::default()
    };
    assert_eq!(export_plan(&off, &env), None, "config can switch it off");
}

#[test]
fn request_ids_accept_sane_caller_ids_only() {
    let mut h = HeaderMap::new();
    h.insert("x-request-id", HeaderValue::from_static("abc-123"));
    assert_eq!(request_id(&h), "abc-123");
    h.insert("x-request-id", HeaderValue::from_static("a b<script>"));
    let generated = request_id(&h);
    assert_ne!(generated, "a b<script>");
    assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
}

#[test]
fn the_catalogue_names_each_metric_once_and_seeds_only_its_declared_labels() {
    use super::metrics::{AtStart, CATALOGUE};
    let mut names = std::collections::HashSet::new();
    for m in CATALOGUE {
        assert!(names.insert(m.name), "{} listed twice", m.name);
        assert!(m.name.starts_with("cubegate_") && !m.help.is_empty());
        let sets = match m.at_start {
            AtStart::OnEvent => continue,
            AtStart::Each(sets) => sets,
            AtStart::PerTenant(sets) => {
                assert!(m.labels.contains(&"tenant"), "{}", m.name);
                sets
            }
        };
        for set in sets {
            for (k, _) in *set {
                assert!(m.labels.contains(k), "{}: seeded label {k}", m.name);
            }
        }
    }
}

#[test]
fn every_refusal_reason_is_seeded() {
    use crate::pipeline::rate_limit::RefusalReason::{self, *};
    let seeded: Vec<&str> = super::metrics::EACH_REASON
        .iter()
        .flat_map(|set| set.iter().map(|(_, v)| *v))
        .collect();
    // No `_` arm: a new reason fails to compile here until it is seeded.
    let listed = |r: RefusalReason| match r {
        Budget | CallerQuota | Paused | QueueFull | BackendUnavailable => {
            seeded.contains(&r.as_str())
        }
    };
    for r in [Budget, CallerQuota, Paused, QueueFull, BackendUnavailable] {
        assert!(listed(r), "{r:?} is not in EACH_REASON");
    }
}
