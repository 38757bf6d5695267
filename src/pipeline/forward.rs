//! Stage `forward`: one pooled hyper-util client over rustls to the configured
//! upstream only. Connect timeout on the connector, response (headers)
//! timeout around the call. Failures: connect/TLS/reset -> 502, no answer in
//! time -> 504. Retries: hyper re-sends a request only when a pooled
//! connection was found dead before anything was written; on top of that a
//! request is sent once more (never twice more) through the pool, which no
//! longer hands out a connection that sent GOAWAY:
//! - whatever its method, POST included, when the upstream said it did not
//!   process it: an HTTP/2 stream above the last stream id of a GOAWAY (or
//!   opened after one), a stream refused with REFUSED_STREAM, or a request
//!   hyper never wrote because its connection closed first;
//! - an idempotent GET after a connect failure (nothing was sent).
//!
//! Any other POST that may have been processed is never sent twice: a
//! duplicated check costs money.
//! hyper-util's `retry_canceled_requests` only re-sends when hyper hands the
//! request back unwritten (a pooled connection found closed before the first
//! byte went out), so it never duplicates a POST either.
//! A per-upstream circuit breaker ([`breaker`]) opens after consecutive
//! transport failures and then fails fast with 503 until a probe succeeds.
//! A connection the upstream ended gracefully (GOAWAY with NO_ERROR, as nginx
//! does after `keepalive_requests`) is not a failure: it never counts toward
//! the breaker or readiness.

pub mod breaker;
pub mod connector;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::UpstreamTarget;
use breaker::Breaker;
use connector::{Connector, Dial};

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("no response within {0} ms")]
    Timeout(u64),
    #[error("upstream exchange failed: {0}")]
    Failed(String),
    #[error("circuit breaker open after repeated upstream failures")]
    CircuitOpen,
    /// Every upstream exchange slot (`max_connections`) stayed busy for the
    /// response timeout: a local backlog, not an upstream failure.
    #[error("all upstream exchange slots busy for {0} ms")]
    Saturated(u64),
}

impl ForwardError {
    /// `error.type` for the upstream span (matches the gateway error type).
    pub fn type_str(&self) -> &'static str {
        match self {
            ForwardError::Timeout(_) => "upstream_timeout",
            ForwardError::Saturated(_) => "gateway_overloaded",
            _ => "upstream_unavailable",
        }
    }
}

pub struct Upstream {
    client: Client<HttpsConnector<Connector>, Full<Bytes>>,
    /// At most this many exchanges in flight, each holding its permit until
    /// its response body is finished or dropped: with HTTP/1.1 that bounds
    /// the upstream connections (and their TLS buffers) however many
    /// callers are connected; the rest queue for a connection.
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    response_timeout: Duration,
    health: UpstreamHealth,
    authority: String,
    breaker: Arc<Breaker>,
}

/// When the upstream last answered and last failed (connect, TLS, reset,
/// timeout), for readiness. Two relaxed atomics per exchange: cheap.
#[derive(Default)]
pub struct UpstreamHealth {
    epoch: OnceLock<Instant>,
    /// Milliseconds since `epoch` + 1; 0 = never.
    last_ok: AtomicU64,
    last_failure: AtomicU64,
}

impl UpstreamHealth {
    fn now(&self) -> u64 {
        let epoch = *self.epoch.get_or_init(Instant::now);
        epoch.elapsed().as_millis() as u64 + 1
    }

    fn record(&self, ok: bool) {
        let slot = if ok {
            &self.last_ok
        } else {
            &self.last_failure
        };
        slot.store(self.now(), Ordering::Relaxed);
    }

    /// Reachable unless the latest exchange failed and nothing succeeded
    /// within `window` (no traffic yet, or idle since a success, counts as
    /// reachable: an idle gateway must stay ready).
    pub fn reachable_recently(&self, window: Duration) -> bool {
        let ok = self.last_ok.load(Ordering::Relaxed);
        let failed = self.last_failure.load(Ordering::Relaxed);
        if failed == 0 || ok >= failed {
            return true;
        }
        ok != 0 && self.now().saturating_sub(ok) <= window.as_millis() as u64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamBuildError {
    #[error("upstream CA file holds no usable certificate")]
    NoCa,
    #[error("TLS setup: {0}")]
    Tls(String),
}

impl Upstream {
    pub fn new(t: &UpstreamTarget) -> Result<Upstream, UpstreamBuildError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(t.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(30)));
        Upstream::with_connector(t, Connector::Tcp(http))
    }

    /// The same client, TLS and limits, reaching its upstream through
    /// in-process pipes instead of sockets (in-process tests, benchmarks).
    pub fn in_memory(t: &UpstreamTarget, dial: Dial) -> Result<Upstream, UpstreamBuildError> {
        Upstream::with_connector(t, Connector::Memory(dial))
    }

    fn with_connector(
        t: &UpstreamTarget,
        connector: Connector,
    ) -> Result<Upstream, UpstreamBuildError> {
        let mut roots = rustls::RootCertStore::empty();
        if t.webpki_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        if let Some(pem) = &t.ca_pem {
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(pem).flatten() {
                if roots.add(cert).is_ok() {
                    added += 1;
                }
            }
            if added == 0 {
                return Err(UpstreamBuildError::NoCa);
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| UpstreamBuildError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let h1 = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1();
        let https = if t.http2 {
            h1.enable_http2().wrap_connector(connector)
        } else {
            h1.wrap_connector(connector)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(t.pool_idle_timeout)
            .pool_max_idle_per_host(t.pool_max_idle_per_host)
            .retry_canceled_requests(true)
            .build(https);
        Ok(Upstream {
            client,
            in_flight: Arc::new(Semaphore::new(t.max_connections)),
            max_in_flight: t.max_connections,
            response_timeout: t.response_timeout,
            health: UpstreamHealth::default(),
            authority: t.authority.clone(),
            breaker: Arc::new(Breaker::new(t.breaker_failures, t.breaker_cooldown)),
        })
    }

    /// Built for a reload: keep the old breaker (its state is about the
    /// upstream, not the config) when the upstream authority is unchanged.
    pub fn succeeding(t: &UpstreamTarget, old: &Upstream) -> Result<Upstream, UpstreamBuildError> {
        let mut u = Upstream::new(t)?;
        if u.authority == old.authority {
            u.breaker = old.breaker.clone();
        }
        // Exchanges still running hold slots of the old semaphore: keep it, so
        // a reload does not let twice the cap reach the upstream.
        if u.max_in_flight == old.max_in_flight {
            u.in_flight = old.in_flight.clone();
        }
        Ok(u)
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    pub fn health(&self) -> &UpstreamHealth {
        &self.health
    }

    /// Send and wait for the response head. The body streams afterwards.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, ForwardError> {
        // The wait for a free exchange slot is the gateway's own queue: it is
        // bounded by its own timer and neither counts against the upstream's
        // response timeout nor feeds the breaker or readiness.
        let slot = tokio::time::timeout(
            self.response_timeout,
            self.in_flight.clone().acquire_owned(),
        )
        .await;
        let Ok(Ok(slot)) = slot else {
            return Err(ForwardError::Saturated(
                self.response_timeout.as_millis() as u64
            ));
        };
        let permit = self.breaker.admit().ok_or(ForwardError::CircuitOpen)?;
        let get = req.method() == Method::GET;
        // The body is `Bytes`: the copy shares it.
        let again = clone_request(&req);
        let result = match self.once(req).await {
            // Not processed, or (connect failure) not a byte sent: safe to
            // send once more.
            Err(f) if f.unprocessed || (get && matches!(f.error, ForwardError::Connect(_))) => {
                self.once(again).await
            }
            other => other,
        };
        match &result {
            Ok(_) => permit.success(),
            Err(f) if f.graceful => permit.no_verdict(),
            Err(_) => permit.failure(),
        }
        if !matches!(&result, Err(f) if f.graceful) {
            self.health.record(result.is_ok());
        }
        match result {
            Ok(resp) => Ok(resp.map(|inner| UpstreamBody { inner, _slot: slot })),
            Err(f) => Err(f.error),
        }
    }

    async fn once(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, Failure> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(Failure::of(ForwardError::Timeout(
                self.response_timeout.as_millis() as u64,
            ))),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => {
                Err(Failure::of(ForwardError::Connect(error_chain(&e))))
            }
            Ok(Err(e)) => {
                let (unprocessed, graceful) = unprocessed(&e);
                Err(Failure {
                    error: ForwardError::Failed(error_chain(&e)),
                    unprocessed,
                    graceful,
                })
            }
        }
    }
}

/// How one attempt failed, for the retry and breaker rules.
struct Failure {
    error: ForwardError,
    /// The upstream did not process the request: it may be sent again,
    /// whatever its method.
    unprocessed: bool,
    /// The upstream ended the connection on purpose (GOAWAY with NO_ERROR):
    /// no sign of a failing upstream.
    graceful: bool,
}

impl Failure {
    fn of(error: ForwardError) -> Failure {
        Failure {
            error,
            unprocessed: false,
            graceful: false,
        }
    }
}

/// Reads hyper's error chain: (the upstream did not process the request,
/// it ended the connection gracefully). RFC 9113 §8.7: streams above a
/// GOAWAY's last stream id and streams refused with REFUSED_STREAM were not
/// processed; h2 reports a remote GOAWAY only on those streams and on
/// requests opened after it. hyper's `canceled` means the request was never
/// written (its connection closed first).
fn unprocessed(e: &(dyn std::error::Error + 'static)) -> (bool, bool) {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(h2) = c.downcast_ref::<h2::Error>() {
            let refused = h2.is_remote()
                && (h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM));
            let graceful = h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR);
            return (refused, refused && graceful);
        }
        if c.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return (true, false);
        }
        cur = c.source();
    }
    (false, false)
}

/// The upstream response body, holding its exchange slot until it is
/// finished or dropped.
pub struct UpstreamBody {
    inner: Incoming,
    _slot: OwnedSemaphorePermit,
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn clone_request(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut r = Request::new(req.body().clone());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.headers_mut() = req.headers().clone();
    r
}

/// The cause chain as one line (for logs; never shown to callers).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_upstreams_own_refusal_marks_a_request_unprocessed() {
        // A reason h2 made up locally is not the upstream's word.
        let local = h2::Error::from(h2::Reason::REFUSED_STREAM);
        assert_eq!(unprocessed(&local), (false, false));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(unprocessed(&io), (false, false));
    }

    #[test]
    fn readiness_follows_the_latest_exchange() {
        let h = UpstreamHealth::default();
        let w = Duration::from_secs(30);
        assert!(h.reachable_recently(w), "no traffic yet");
        h.record(false);
        assert!(!h.reachable_recently(w), "only failures");
        h.record(true);
        assert!(h.reachable_recently(w), "answered since");
        h.record(false);
        assert!(h.reachable_recently(w), "a failure right after a success");
    }
}
