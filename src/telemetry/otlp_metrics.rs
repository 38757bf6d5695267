//! OpenTelemetry metrics: the same series as `/metrics`, pushed over OTLP.
//!
//! Contract: every `counter!`/`gauge!`/`histogram!` call in cubegate goes
//! through one process-wide fan-out [`metrics::Recorder`]. It always feeds
//! the Prometheus recorder (so `/metrics` is unchanged), and — once
//! [`meter_provider`] has bound an OTel meter (OTLP export on) — also an
//! OTel instrument of the same name, with the labels as attributes and, for
//! histograms, the Prometheus bucket boundaries. Counters map to monotonic
//! `u64` counters, histograms to `f64` histograms, gauges (absolute, incr,
//! decr) to `f64` gauges holding the current value.
//!
//! Nothing here blocks a request: recording is in-memory aggregation; a
//! periodic reader on the SDK's own thread exports every
//! `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60 s) with a blocking client,
//! and [`opentelemetry_sdk::metrics::SdkMeterProvider::shutdown`] sends the
//! last values on exit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Level, Metadata,
    Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::PrometheusRecorder;
use metrics_util::registry::{Registry, Storage};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{SdkMeterProvider, Temporality};

use crate::config::TelemetrySettings;

/// The fan-out recorder's state; static so the OTel storage can reach the
/// Prometheus recorder when it creates a series.
struct FanOut {
    prom: PrometheusRecorder,
    /// `describe_*` texts, used as OTel instrument descriptions.
    descriptions: RwLock<HashMap<String, String>>,
    /// Bound once, when OTLP export starts; empty = Prometheus only.
    otel: OnceLock<Registry<Key, OtelStorage>>,
}

static FANOUT: OnceLock<FanOut> = OnceLock::new();

/// What the global recorder is: a handle on [`FANOUT`].
struct Global(&'static FanOut);

/// Install the fan-out as the global `metrics` recorder around `prom`.
pub(super) fn install(prom: PrometheusRecorder) -> Result<(), String> {
    if FANOUT.get().is_some() {
        return Err("metrics recorder already installed".into());
    }
    let fan = FANOUT.get_or_init(|| FanOut {
        prom,
        descriptions: RwLock::default(),
        otel: OnceLock::new(),
    });
    metrics::set_global_recorder(Global(fan)).map_err(|e| e.to_string())
}

/// Which recorder `counter!` and friends reach now: 0 none installed, 1
/// Prometheus only, 2 Prometheus and OTLP. Cached handles are only valid
/// within one generation.
pub(super) fn generation() -> u8 {
    match FANOUT.get() {
        None => 0,
        Some(f) if f.otel.get().is_none() => 1,
        Some(_) => 2,
    }
}

/// Labels become attributes (they are already bounded: see `telemetry`).
fn attrs(key: &Key) -> Vec<KeyValue> {
    key.labels()
        .map(|l| KeyValue::new(l.key().to_owned(), l.value().to_owned()))
        .collect()
}

// Prometheus ignores the metadata; one fixed value keeps creation cheap.
static META: Metadata<'static> = Metadata::new("cubegate", Level::INFO, None);

impl FanOut {
    fn describe(&self, key: &KeyName, description: &SharedString) {
        if let Ok(mut d) = self.descriptions.write() {
            d.insert(key.as_str().to_owned(), description.to_string());
        }
    }
    fn description(&self, name: &str) -> String {
        self.descriptions
            .read()
            .ok()
            .and_then(|d| d.get(name).cloned())
            .unwrap_or_default()
    }
}

impl Recorder for Global {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe(&key, &description);
        self.0.prom.describe_counter(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe(&key, &description);
        self.0.prom.describe_gauge(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe(&key, &description);
        self.0.prom.describe_histogram(key, unit, description);
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        match self.0.otel.get() {
            // Cached per series: after the first call this is a sharded
            // map lookup and an Arc clone, as in the Prometheus recorder.
            Some(r) => r.get_or_create_counter(key, |c| Counter::from_arc(c.clone())),
            None => self.0.prom.register_counter(key, metadata),
        }
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        match self.0.otel.get() {
            Some(r) => r.get_or_create_gauge(key, |g| Gauge::from_arc(g.clone())),
            None => self.0.prom.register_gauge(key, metadata),
        }
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        match self.0.otel.get() {
            Some(r) => r.get_or_create_histogram(key, |h| Histogram::from_arc(h.clone())),
            None => self.0.prom.register_histogram(key, metadata),
        }
    }
}

/// Creates one fan-out series per key (both sides at once).
struct OtelStorage {
    fan: &'static FanOut,
    meter: Meter,
}

impl Storage<Key> for OtelStorage {
    type Counter = Arc<BothCounter>;
    type Gauge = Arc<BothGauge>;
    type Histogram = Arc<BothHistogram>;

    fn counter(&self, key: &Key) -> Self::Counter {
        let name = key.name().to_owned();
        let otel = self
            .meter
            .u64_counter(name.clone())
            .with_description(self.fan.description(&name))
            .build();
        Arc::new(BothCounter {
            prom: self.fan.prom.register_counter(key, &META),
            otel,
            attrs: attrs(key),
        })
    }
    fn gauge(&self, key: &Key) -> Self::Gauge {
        let name = key.name().to_owned();
        let otel = self
            .meter
            .f64_gauge(name.clone())
            .with_description(self.fan.description(&name))
            .build();
        Arc::new(BothGauge {
            prom: self.fan.prom.register_gauge(key, &META),
            otel,
            attrs: attrs(key),
            value: Mutex::new(0.0),
        })
    }
    fn histogram(&self, key: &Key) -> Self::Histogram {
        let name = key.name().to_owned();
        let otel = self
            .meter
            .f64_histogram(name.clone())
            .with_description(self.fan.description(&name))
            .with_boundaries(super::buckets_for(&name).to_vec())
            .build();
        Arc::new(BothHistogram {
            prom: self.fan.prom.register_histogram(key, &META),
            otel,
            attrs: attrs(key),
        })
    }
}

struct BothCounter {
    prom: Counter,
    otel: opentelemetry::metrics::Counter<u64>,
    attrs: Vec<KeyValue>,
}

impl CounterFn for BothCounter {
    fn increment(&self, value: u64) {
        self.prom.increment(value);
        self.otel.add(value, &self.attrs);
    }
    /// cubegate never sets a counter to an absolute value; keeping a running
    /// total on every increment just for this would cost every counter.
    fn absolute(&self, value: u64) {
        self.prom.absolute(value);
    }
}

struct BothGauge {
    prom: Gauge,
    otel: opentelemetry::metrics::Gauge<f64>,
    attrs: Vec<KeyValue>,
    /// The current value; the lock spans the OTel record so concurrent
    /// increments cannot leave a stale value as the last one recorded.
    value: Mutex<f64>,
}

impl BothGauge {
    fn update(&self, f: impl FnOnce(f64) -> f64) {
        let mut v = self.value.lock().unwrap_or_else(|e| e.into_inner());
        *v = f(*v);
        self.otel.record(*v, &self.attrs);
    }
}

impl GaugeFn for BothGauge {
    fn increment(&self, value: f64) {
        self.prom.increment(value);
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.prom.decrement(value);
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.prom.set(value);
        self.update(|_| value);
    }
}

struct BothHistogram {
    prom: Histogram,
    otel: opentelemetry::metrics::Histogram<f64>,
    attrs: Vec<KeyValue>,
}

impl HistogramFn for BothHistogram {
    fn record(&self, value: f64) {
        self.prom.record(value);
        self.otel.record(value, &self.attrs);
    }
}

/// Where metrics go: `None` = off. `Some(None)` = the SDK reads
/// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`;
/// `Some(Some(url))` = the config's collector, `/v1/metrics` appended.
/// The switch is the one traces use (`[telemetry] enabled`, an endpoint in
/// config or env, `OTEL_SDK_DISABLED`), plus `OTEL_METRICS_EXPORTER=none`.
pub fn metrics_endpoint(
    settings: &TelemetrySettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Option<String>> {
    if !super::otlp_signal_on(settings, env, "METRICS") {
        return None;
    }
    Some(super::otlp_signal_endpoint(
        settings, env, "METRICS", "metrics",
    ))
}

/// Build the OTLP meter provider and bind it to the fan-out recorder, so
/// every series (including ones already on `/metrics`, from their next
/// update) is also exported. Call after the recorder is installed.
pub(super) fn meter_provider(
    endpoint: Option<String>,
    service_name: String,
) -> Result<SdkMeterProvider, String> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let fan = FANOUT
        .get()
        .ok_or_else(|| "metrics recorder not installed".to_string())?;
    let mut b = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    if let Some(e) = endpoint {
        b = b.with_endpoint(e);
    }
    let exporter = CountingExporter(b.build().map_err(|e| e.to_string())?);
    // The periodic reader runs on its own thread and reads
    // OTEL_METRIC_EXPORT_INTERVAL (ms, default 60 000).
    let provider = SdkMeterProvider::builder()
        .with_periodic_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name)
                .build(),
        )
        .build();
    let storage = OtelStorage {
        fan,
        meter: provider.meter("cubegate"),
    };
    fan.otel
        .set(Registry::new(storage))
        .map_err(|_| "OTLP metrics already bound".to_string())?;
    Ok(provider)
}

/// Counts exports by result, so a collector that refuses or is unreachable
/// shows on `/metrics` (and, once it recovers, over OTLP).
struct CountingExporter<E>(E);

impl<E: PushMetricExporter> PushMetricExporter for CountingExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let r = self.0.export(metrics).await;
        // Recorded after the SDK's collection: no lock of the reader is held.
        super::metrics::otel_metric_export(r.is_ok());
        r
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self) -> Temporality {
        self.0.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_follow_the_trace_switch_and_their_own_variables() {
        let none = |_: &str| None;
        assert_eq!(
            metrics_endpoint(&TelemetrySettings::default(), &none),
            None,
            "off by default"
        );
        let cfg = TelemetrySettings {
            otlp_endpoint: Some("http://c:4318/v1/traces".into()),
            ..Default::default()
        };
        assert_eq!(
            metrics_endpoint(&cfg, &none),
            Some(Some("http://c:4318/v1/metrics".into()))
        );
        let cfg = TelemetrySettings {
            otlp_endpoint: Some("http://c:4318/".into()),
            ..Default::default()
        };
        assert_eq!(
            metrics_endpoint(&cfg, &none),
            Some(Some("http://c:4318/v1/metrics".into()))
        );
        let env = |k: &str| {
            (k == "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").then(|| "http://m:4318/x".to_string())
        };
        assert_eq!(metrics_endpoint(&cfg, &env), Some(None), "the SDK reads it");
        let env = |k: &str| (k == "OTEL_METRICS_EXPORTER").then(|| "none".to_string());
        assert_eq!(metrics_endpoint(&cfg, &env), None);
        let env = |k: &str| (k == "OTEL_SDK_DISABLED").then(|| "true".to_string());
        assert_eq!(metrics_endpoint(&cfg, &env), None);
        let off = TelemetrySettings {
            enabled: Some(false),
            ..cfg
        };
        assert_eq!(metrics_endpoint(&off, &none), None);
    }
}
