//! Fault switches that make the sandbox misbehave on purpose.
//!
//! Input: a [`FaultMode`] set from a test (in process, [`Faults::set`]) or over
//! HTTP (`POST /__sandbox/faults` with `{"mode": "...", ..., "times": n}`).
//! Output: the mode the next API request must suffer ([`Faults::take`]), a
//! count of API requests that reached the handler ([`Faults::api_hits`]) and
//! of those refused unprocessed ([`Faults::refused`]).
//! Failures: none; a poisoned lock is recovered because the guarded value is
//! always left consistent.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How the sandbox answers API requests while the switch is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum FaultMode {
    /// Normal behaviour.
    #[default]
    None,
    /// Answer normally, but only after `ms` milliseconds.
    Delay { ms: u64 },
    /// Answer with this status and a ComplyCube-shaped error body; `Retry-After`
    /// is set when given.
    Status {
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Read the request fully, then drop the connection without an answer
    /// (SO_LINGER 0, so the peer sees a TCP RST).
    ResetBeforeResponse,
    /// Send headers announcing N body bytes, then only N/2 bytes, then close.
    TruncatedBody,
    /// Answer normally, then close the connection (`Connection: close` on
    /// HTTP/1.1, GOAWAY on HTTP/2).
    CloseAfterResponse,
    /// Answer normally, with a `padding` string of `bytes` bytes added to a
    /// JSON object body (a large response, for slow-reader tests).
    LargeBody { bytes: usize },
    /// Answer normally, but end each connection gracefully once `every` API
    /// requests arrived on it, as nginx does at `keepalive_requests`: GOAWAY
    /// (NO_ERROR) on HTTP/2, the requests already in flight still answered;
    /// `Connection: close` on that answer on HTTP/1.1.
    RecycleConnections { every: u64 },
    /// As `RecycleConnections`, and the requests that still arrive on an
    /// HTTP/2 connection after its GOAWAY went out (sent before the client
    /// saw it) are refused unprocessed and unrecorded (RST_STREAM
    /// REFUSED_STREAM): streams the upstream will not process, which a
    /// client may safely send again.
    RefuseAfterGoaway { every: u64 },
}

#[derive(Debug, Default)]
struct Active {
    mode: FaultMode,
    /// `None` = until cleared; `Some(n)` = only for the next n API requests.
    remaining: Option<u64>,
}

/// Shared, thread-safe fault switches of one sandbox.
#[derive(Debug, Default)]
pub struct Faults {
    active: Mutex<Active>,
    hits: AtomicU64,
    refused: AtomicU64,
}

impl Faults {
    /// Applies `f` to every following API request until [`Faults::clear`].
    pub fn set(&self, f: FaultMode) {
        self.set_inner(f, None);
    }

    /// Applies `f` to the next `times` API requests only, then behaves
    /// normally again (e.g. "fail once, then succeed" for retry tests).
    pub fn set_times(&self, f: FaultMode, times: u64) {
        self.set_inner(f, Some(times));
    }

    /// Back to normal behaviour.
    pub fn clear(&self) {
        self.set_inner(FaultMode::None, None);
    }

    /// The mode currently set (without consuming a use).
    pub fn current(&self) -> FaultMode {
        self.lock().mode.clone()
    }

    /// Number of API requests (not control requests) that reached the handler.
    pub fn api_hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::SeqCst);
    }

    /// Number of API requests refused unprocessed (`RefuseAfterGoaway`);
    /// they are not in [`Faults::api_hits`].
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    pub(crate) fn refuse(&self) {
        self.refused.fetch_add(1, Ordering::SeqCst);
    }

    /// The mode for the request being handled now; consumes one use of a
    /// counted fault.
    pub(crate) fn take(&self) -> FaultMode {
        let mut a = self.lock();
        let mode = a.mode.clone();
        if let Some(n) = a.remaining {
            if n <= 1 {
                *a = Active::default();
            } else {
                a.remaining = Some(n - 1);
            }
        }
        mode
    }

    fn set_inner(&self, f: FaultMode, remaining: Option<u64>) {
        let mut a = self.lock();
        if remaining == Some(0) {
            *a = Active::default();
        } else {
            *a = Active { mode: f, remaining };
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Parses the body of `POST /__sandbox/faults`: a [`FaultMode`] object with an
/// optional `times` field.
pub(crate) fn parse_fault_request(body: &[u8]) -> Result<(FaultMode, Option<u64>), String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let times = match v.get("times") {
        None | Some(serde_json::Value::Null) => None,
        Some(t) => Some(
            t.as_u64()
                .ok_or_else(|| "'times' must be a non-negative integer".to_string())?,
        ),
    };
    let mode: FaultMode =
        serde_json::from_value(v).map_err(|e| format!("invalid fault mode: {e}"))?;
    Ok((mode, times))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_fault_expires_and_permanent_one_stays() {
        let f = Faults::default();
        f.set_times(FaultMode::ResetBeforeResponse, 2);
        assert_eq!(f.take(), FaultMode::ResetBeforeResponse);
        assert_eq!(f.take(), FaultMode::ResetBeforeResponse);
        assert_eq!(f.take(), FaultMode::None);
        f.set(FaultMode::Delay { ms: 5 });
        for _ in 0..3 {
            assert_eq!(f.take(), FaultMode::Delay { ms: 5 });
        }
        f.clear();
        assert_eq!(f.take(), FaultMode::None);
    }

    #[test]
    fn parses_http_fault_bodies() {
        let (m, t) =
            parse_fault_request(br#"{"mode":"status","status":429,"retry_after":3,"times":1}"#)
                .unwrap();
        assert_eq!(
            m,
            FaultMode::Status {
                status: 429,
                retry_after: Some(3)
            }
        );
        assert_eq!(t, Some(1));
        let (m, t) = parse_fault_request(br#"{"mode":"truncated_body"}"#).unwrap();
        assert_eq!((m, t), (FaultMode::TruncatedBody, None));
        let (m, _) = parse_fault_request(br#"{"mode":"recycle_connections","every":50}"#).unwrap();
        assert_eq!(m, FaultMode::RecycleConnections { every: 50 });
        let (m, _) = parse_fault_request(br#"{"mode":"refuse_after_goaway","every":7}"#).unwrap();
        assert_eq!(m, FaultMode::RefuseAfterGoaway { every: 7 });
        assert!(parse_fault_request(br#"{"mode":"explode"}"#).is_err());
        assert!(parse_fault_request(br#"{"mode":"none","times":-1}"#).is_err());
    }
}
