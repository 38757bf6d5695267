//! The JSON log line: one object per event, written straight into the fmt
//! layer's buffer. Keys: `timestamp` (RFC 3339, UTC, microseconds), `level`,
//! the event's fields flattened (`message` first when present), `target`:
//! the same shape tracing-subscriber's JSON formatter produces with
//! `flatten_event(true)`, without its per-event map of `serde_json::Value`s
//! (the access line is written once per request, so this is a hot path).
//! Strings are escaped per RFC 8259; non-finite floats become `null`.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Event formatter for `log_format = "json"`.
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        w.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut w, std::time::SystemTime::now())?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(meta.level().as_str())?;
        w.write_char('"')?;
        let mut v = Fields {
            w: &mut w,
            result: Ok(()),
        };
        event.record(&mut v);
        v.result?;
        w.write_str(",\"target\":")?;
        write_str(&mut w, meta.target())?;
        w.write_str("}\n")
    }
}

struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.w.write_char(',')?;
        write_str(self.w, field.name())?;
        self.w.write_char(':')
    }

    fn put(&mut self, field: &Field, f: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| f(self.w));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |w| write_str(w, value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| write!(w, "{value}"));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| write!(w, "{value}"));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put(field, |w| write!(w, "{value}"));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field, |w| write!(w, "{value}"));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, |w| {
            if value.is_finite() {
                write!(w, "{value}")
            } else {
                w.write_str("null")
            }
        });
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| w.write_str(if value { "true" } else { "false" }));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value}")?;
            w.write_char('"')
        });
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// A quoted, escaped JSON string.
fn write_str(w: &mut impl Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(s)?;
    w.write_char('"')
}

/// Escapes what is written through it as JSON string contents, so
/// `Display`/`Debug` output needs no intermediate `String`.
struct Escaped<'a, W: Write + ?Sized>(&'a mut W);

impl<W: Write + ?Sized> Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let esc: &str = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f | 0x7f => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if esc.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(esc)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

/// `2026-11-29T18:00:00.123456Z`.
fn write_timestamp(w: &mut impl Write, t: std::time::SystemTime) -> fmt::Result {
    write!(w, "{}", humantime::format_rfc3339_micros(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, UNIX_EPOCH};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn lines(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let buf = Buf::default();
        let sub = tracing_subscriber::fmt()
            .event_format(JsonLine)
            .with_writer(buf.clone())
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::with_default(sub, f);
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn every_field_kind_is_valid_json_with_the_documented_keys() {
        let err = std::io::Error::other("disk \"full\"\n");
        let got = lines(|| {
            tracing::info!(
                target: "cubegate::access",
                s = "a\"b\\c\n\t\u{1}é",
                u = 7u64,
                i = -3i64,
                f = 1.5f64,
                nan = f64::NAN,
                b = true,
                none = None::<f64>,
                some = Some(2.25f64),
                d = ?vec![1, 2],
                e = &err as &(dyn std::error::Error + 'static),
                "request {}", 42
            );
        });
        assert_eq!(got.len(), 1);
        let v = &got[0];
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "cubegate::access");
        assert_eq!(v["message"], "request 42");
        assert_eq!(v["s"], "a\"b\\c\n\t\u{1}é");
        assert_eq!(v["u"], 7);
        assert_eq!(v["i"], -3);
        assert_eq!(v["f"], 1.5);
        assert!(v["nan"].is_null());
        assert_eq!(v["b"], true);
        assert!(v.get("none").is_none());
        assert_eq!(v["some"], 2.25);
        assert_eq!(v["d"], "[1, 2]");
        assert_eq!(v["e"], "disk \"full\"\n");
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), "2026-11-29T18:00:00.123456Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let mut s = String::new();
        write_timestamp(&mut s, UNIX_EPOCH + Duration::new(1_709_251_199, 1_000)).unwrap();
        assert_eq!(s, "2024-02-29T23:59:59.000001Z");
    }
}
