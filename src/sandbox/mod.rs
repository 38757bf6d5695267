//! A local stand-in for the ComplyCube v1 API, used by tests, the demo and
//! benchmarks.
//!
//! Input: [`SandboxOptions`] (listen address, TLS on/off, artificial latency,
//! accepted keys, optional per-key rate limit, check completion delay).
//! Output: a running [`Sandbox`] serving HTTP/1.1 keep-alive and HTTP/2 (ALPN
//! over TLS with a freshly generated CA, or plain/h2c without TLS) under
//! `/v1/...`, which behaves like ComplyCube's sandbox: objects stored per key
//! (so test_ and live_ data never mix), checks that complete after the delay
//! with the documented test-data outcomes, reports, its own audit log, 404
//! for unknown ids (docs/sandbox.md). Every API request is recorded exactly
//! as received.
//! Control endpoints under `/__sandbox/` (no key needed): `GET|DELETE
//! requests`, `GET|POST|DELETE faults`, `GET health` (with open connections
//! and API requests in flight, now and at their peak).
//! Failures: [`Sandbox::start`] fails if the address cannot be bound or the
//! certificates cannot be made; at run time every problem is an HTTP answer
//! (401 `unauthorized`, 400 `invalid_request`, 404 `resource_not_found`,
//! 429 `rate_limit_exceeded`) or a deliberate fault ([`FaultMode`]).

mod api;
mod faults;
mod store;
pub(crate) mod tls;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, ready};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

pub use faults::{FaultMode, Faults};

use api::Reply;
use store::Store;

/// How to run a sandbox.
#[derive(Clone)]
pub struct SandboxOptions {
    /// Where to listen; `127.0.0.1:0` in tests.
    pub listen: SocketAddr,
    /// HTTPS with a freshly generated certificate (default), or plain HTTP.
    pub tls: bool,
    /// Artificial delay before every API answer; zero ("fast mode") by default.
    pub latency: Duration,
    /// Accepted API keys; empty accepts any `test_`/`live_` key with at
    /// least 4 more characters.
    pub keys: Vec<String>,
    /// When set, API requests above N per rolling second per key get
    /// ComplyCube's 429 `rate_limit_exceeded`.
    pub rate_limit_per_sec: Option<u32>,
    /// How many recorded requests, and audit log entries per key, are kept
    /// (oldest dropped first), so long benchmark runs do not grow memory
    /// without bound.
    pub max_recorded: usize,
    /// How long a check (or a workflow session asked to complete) stays
    /// pending before it completes with its test-data outcome; zero by
    /// default so tests never wait, about a second in the demo.
    pub completion_delay: Duration,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: true,
            latency: Duration::ZERO,
            keys: Vec::new(),
            rate_limit_per_sec: None,
            max_recorded: 100_000,
            completion_delay: Duration::ZERO,
        }
    }
}

impl fmt::Debug for SandboxOptions {
    // Keys are credentials: only their number is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxOptions")
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("latency", &self.latency)
            .field("keys", &format_args!("<{} keys>", self.keys.len()))
            .field("rate_limit_per_sec", &self.rate_limit_per_sec)
            .field("max_recorded", &self.max_recorded)
            .field("completion_delay", &self.completion_delay)
            .finish()
    }
}

/// One API request as the sandbox received it.
#[derive(Clone, serde::Serialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Every header as received: lower-case names, in order, repeats kept.
    pub headers: Vec<(String, String)>,
    #[serde(serialize_with = "lossy_utf8")]
    pub body: Vec<u8>,
    /// Milliseconds since the sandbox started (monotonic clock).
    pub at_ms: u128,
}

impl RecordedRequest {
    /// All values of header `name` (lower-case), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

impl fmt::Debug for RecordedRequest {
    // Bodies, queries and the Authorization value can hold keys and PII;
    // Debug shows their size only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: <{} bytes>", v.len()))
            .collect();
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field(
                "query",
                &self.query.as_ref().map(|q| format!("<{} bytes>", q.len())),
            )
            .field("headers", &headers)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .field("at_ms", &self.at_ms)
            .finish()
    }
}

impl RecordedRequest {
    /// The request as received, stamped with its time since `started`.
    fn of(parts: &http::request::Parts, body: &[u8], started: Instant) -> RecordedRequest {
        RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
            at_ms: started.elapsed().as_millis(),
        }
    }
}

fn lossy_utf8<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

struct Shared {
    started: Instant,
    keys: Vec<String>,
    latency: Duration,
    rate_limit: Option<u32>,
    recorded: Mutex<VecDeque<RecordedRequest>>,
    max_recorded: usize,
    faults: Faults,
    store: Mutex<Store>,
    windows: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// Open connections and API requests being answered, with their peaks
    /// (on `GET /__sandbox/health`): what a gateway's upstream caps bound.
    connections: Gauge,
    in_flight: Gauge,
}

/// A current value and its high-water mark.
#[derive(Default)]
struct Gauge {
    now: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

impl Gauge {
    fn enter(&self) -> GaugeGuard<'_> {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.now.fetch_add(1, Relaxed) + 1;
        self.peak.fetch_max(n, Relaxed);
        GaugeGuard(self)
    }
    fn json(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        serde_json::json!({"now": self.now.load(Relaxed), "peak": self.peak.load(Relaxed)})
    }
    fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// High-water marks since start (also on `GET /__sandbox/health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peaks {
    /// API requests being answered at once.
    pub in_flight: usize,
    /// Connections open at once.
    pub connections: usize,
}

struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0
            .now
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent, so a panic elsewhere
    // must not take the sandbox down.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn accepts(&self, key: &str) -> bool {
        if self.keys.is_empty() {
            ["test_", "live_"]
                .iter()
                .any(|p| key.strip_prefix(p).is_some_and(|rest| rest.len() >= 4))
        } else {
            self.keys.iter().any(|k| k == key)
        }
    }

    fn record(&self, r: RecordedRequest) {
        if self.max_recorded == 0 {
            return;
        }
        let mut recs = lock(&self.recorded);
        while recs.len() >= self.max_recorded {
            recs.pop_front();
        }
        recs.push_back(r);
    }

    /// Rolling one-second window per key; only admitted requests count, so a
    /// caller that keeps over the limit still gets N per second through.
    fn admit(&self, key: &str, limit: u32) -> bool {
        let now = Instant::now();
        let mut w = lock(&self.windows);
        let q = w.entry(key.to_string()).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            q.pop_front();
        }
        if q.len() >= limit as usize {
            false
        } else {
            q.push_back(now);
            true
        }
    }
}

/// A running sandbox; stops when [`Sandbox::shutdown`] is awaited or when
/// dropped.
pub struct Sandbox {
    addr: SocketAddr,
    tls: bool,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Binds `opts.listen` and starts serving in the background.
    pub async fn start(opts: SandboxOptions) -> anyhow::Result<Sandbox> {
        let pki = tls::generate()?;
        let listener = TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("binding the sandbox to {}", opts.listen))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            started: Instant::now(),
            keys: opts.keys,
            latency: opts.latency,
            rate_limit: opts.rate_limit_per_sec,
            recorded: Mutex::new(VecDeque::new()),
            max_recorded: opts.max_recorded,
            faults: Faults::default(),
            store: Mutex::new(Store::new(opts.completion_delay).with_audit_cap(opts.max_recorded)),
            windows: Mutex::new(HashMap::new()),
            connections: Gauge::default(),
            in_flight: Gauge::default(),
        });
        let acceptor = opts
            .tls
            .then(|| TlsAcceptor::from(pki.server_config.clone()));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, acceptor, shared.clone(), stop_rx));
        Ok(Sandbox {
            addr,
            tls: opts.tls,
            ca_pem: pki.ca_pem,
            ca_der: pki.ca_der,
            shared,
            stop,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT` (or `http://` without TLS); no `/v1`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// PEM of the CA that clients must trust.
    pub fn ca_cert_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// DER of the CA that clients must trust.
    pub fn ca_cert_der(&self) -> CertificateDer<'static> {
        self.ca_der.clone()
    }

    /// Every API request received so far (control endpoints excluded).
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.recorded).iter().cloned().collect()
    }

    /// High-water marks of connections and API requests in flight.
    pub fn peaks(&self) -> Peaks {
        Peaks {
            in_flight: self.shared.in_flight.peak(),
            connections: self.shared.connections.peak(),
        }
    }

    pub fn clear_recorded(&self) {
        lock(&self.shared.recorded).clear();
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Stops accepting, lets open connections finish (at most 2 s), then
    /// returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    conns.spawn(serve_conn(stream, acceptor.clone(), shared.clone(), stop.clone()));
                }
                // Out of fds or similar: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    conns.abort_all();
}

/// Per-connection switches a request handler can pull.
#[derive(Default)]
struct ConnCtl {
    /// Drop the connection now, with an RST.
    kill: Notify,
    /// Finish in-flight requests, then close (GOAWAY on h2).
    goaway: Notify,
    /// API requests counted on this connection by a recycling fault.
    served: AtomicU64,
    /// Set when a `RefuseAfterGoaway` connection decided to end.
    refuse: AtomicBool,
    /// Set once the connection started its graceful end (GOAWAY sent on
    /// h2): with `refuse`, requests that still arrive were sent before the
    /// client saw the GOAWAY, and are refused unprocessed.
    gone_away: AtomicBool,
}

impl ConnCtl {
    /// `RecycleConnections` / `RefuseAfterGoaway`: on the `every`-th API
    /// request of a connection, starts its graceful end on HTTP/2, or
    /// returns true when this answer must carry `Connection: close`
    /// (HTTP/1.1).
    fn recycle(&self, fault: &FaultMode, version: Version) -> bool {
        let (every, refuse) = match fault {
            FaultMode::RecycleConnections { every } => (*every, false),
            FaultMode::RefuseAfterGoaway { every } => (*every, true),
            _ => return false,
        };
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        if every == 0 || !n.is_multiple_of(every) {
            return false;
        }
        if version != Version::HTTP_2 {
            return true;
        }
        if refuse {
            self.refuse.store(true, Ordering::Relaxed);
        }
        self.goaway.notify_one();
        false
    }
}

async fn serve_conn(
    stream: TcpStream,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let held = shared.clone();
    let _open = held.connections.enter();
    // A second handle on the socket so a fault can set SO_LINGER 0 after
    // hyper and rustls own the stream.
    let dup = stream
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(std::net::TcpStream::from);
    match acceptor {
        Some(a) => {
            if let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), a.accept(stream)).await
            {
                drive(TokioIo::new(tls), shared, dup, stop).await;
            }
        }
        None => drive(TokioIo::new(stream), shared, dup, stop).await,
    }
}

async fn drive<I>(
    io: I,
    shared: Arc<Shared>,
    dup: Option<std::net::TcpStream>,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let ctl = Arc::new(ConnCtl::default());
    let svc = {
        let ctl = ctl.clone();
        service_fn(move |req| {
            let shared = shared.clone();
            let ctl = ctl.clone();
            async move { handle(shared, ctl, req).await }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Timers make hyper's header-read and keep-alive timeouts effective.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = ctl.kill.notified() => {
                reset(dup);
                return; // dropping `conn` closes the last handle: RST goes out
            }
            _ = ctl.goaway.notified(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
                ctl.gone_away.store(true, Ordering::Relaxed);
            }
            _ = stop.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Sets SO_LINGER 0 so that closing the socket sends RST instead of FIN.
fn reset(dup: Option<std::net::TcpStream>) {
    if let Some(d) = dup
        && d.set_nonblocking(true).is_ok()
        && let Ok(t) = TcpStream::from_std(d)
    {
        let _ = t.set_zero_linger();
    }
}

/// One request. The only error is a refusal (`RefuseAfterGoaway`), which
/// hyper sends as RST_STREAM with its reason.
async fn handle(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    req: Request<Incoming>,
) -> Result<Response<SandboxBody>, h2::Error> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return Ok(reply_response(Reply::error(
                400,
                "invalid_request",
                "The request body could not be read",
                None,
            )));
        }
    };
    let path = parts.uri.path();
    if path == "/__sandbox" || path.starts_with("/__sandbox/") {
        return Ok(control(&shared, &parts.method, path, &body));
    }
    if ctl.refuse.load(Ordering::Relaxed) && ctl.gone_away.load(Ordering::Relaxed) {
        shared.faults.refuse();
        return Err(h2::Error::from(h2::Reason::REFUSED_STREAM));
    }
    let _answering = shared.in_flight.enter();

    shared.record(RecordedRequest::of(&parts, &body, shared.started));
    shared.faults.hit();
    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }

    let fault = shared.faults.take();
    let close = ctl.recycle(&fault, parts.version);
    match &fault {
        FaultMode::Delay { ms } => tokio::time::sleep(Duration::from_millis(*ms)).await,
        FaultMode::Status {
            status,
            retry_after,
        } => return Ok(fault_status(*status, *retry_after)),
        FaultMode::ResetBeforeResponse => {
            ctl.kill.notify_one();
            // The connection task drops this future together with the socket.
            return std::future::pending().await;
        }
        _ => {}
    }

    let mut reply = api_reply(&shared, &parts, &body);
    if let FaultMode::LargeBody { bytes } = fault
        && let Some(serde_json::Value::Object(m)) = &mut reply.body
    {
        m.insert("padding".into(), "x".repeat(bytes).into());
    }
    let mut resp = reply_response(reply);
    match fault {
        FaultMode::TruncatedBody => truncate(&mut resp),
        FaultMode::CloseAfterResponse => {
            if parts.version == Version::HTTP_2 {
                ctl.goaway.notify_one();
            } else {
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
        }
        _ if close => {
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    Ok(resp)
}

/// Authentication, rate limit, then the ComplyCube behaviour.
fn api_reply(shared: &Shared, parts: &http::request::Parts, body: &[u8]) -> Reply {
    let values: Vec<&HeaderValue> = parts.headers.get_all(AUTHORIZATION).iter().collect();
    let key = match values.as_slice() {
        [one] => one.to_str().ok().filter(|k| shared.accepts(k)),
        _ => None,
    };
    let Some(key) = key else {
        return Reply::error(
            401,
            "unauthorized",
            "The 'Authorization' header is invalid",
            None,
        );
    };
    if let Some(limit) = shared.rate_limit
        && !shared.admit(key, limit)
    {
        return Reply::error(
            429,
            "rate_limit_exceeded",
            "You have exceeded the rate limit for your plan",
            None,
        );
    }
    let path = parts.uri.path();
    let rest = path.strip_prefix("/v1").unwrap_or_default();
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if !rest.starts_with('/') || rest.contains("//") {
        return Reply::unknown_route();
    }
    let query = parse_query(parts.uri.query().unwrap_or_default());
    let mut store = lock(&shared.store);
    api::handle(&mut store, key, parts.method.as_str(), rest, &query, body)
}

fn control(
    shared: &Shared,
    method: &http::Method,
    path: &str,
    body: &[u8],
) -> Response<SandboxBody> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let ok = |v: serde_json::Value| Reply {
        status: 200,
        body: Some(v),
    };
    let no_content = Reply {
        status: 204,
        body: None,
    };
    let faults_state = || {
        ok(serde_json::json!({
            "fault": shared.faults.current(),
            "apiHits": shared.faults.api_hits(),
            "refused": shared.faults.refused(),
        }))
    };
    let r = match (method.as_str(), path) {
        ("GET", "/__sandbox/health") => ok(serde_json::json!({
            "status": "ok",
            "connections": shared.connections.json(),
            "inFlight": shared.in_flight.json(),
        })),
        ("GET", "/__sandbox/requests") => {
            let recs: Vec<RecordedRequest> = lock(&shared.recorded).iter().cloned().collect();
            ok(serde_json::to_value(recs).unwrap_or_default())
        }
        ("DELETE", "/__sandbox/requests") => {
            lock(&shared.recorded).clear();
            no_content
        }
        ("GET", "/__sandbox/faults") => faults_state(),
        ("POST", "/__sandbox/faults") => match faults::parse_fault_request(body) {
            Ok((mode, Some(n))) => {
                shared.faults.set_times(mode, n);
                faults_state()
            }
            Ok((mode, None)) => {
                shared.faults.set(mode);
                faults_state()
            }
            Err(e) => Reply::error(400, "invalid_request", &e, Some("mode")),
        },
        ("DELETE", "/__sandbox/faults") => {
            shared.faults.clear();
            no_content
        }
        _ => Reply::unknown_route(),
    };
    reply_response(r)
}

fn fault_status(status: u16, retry_after: Option<u64>) -> Response<SandboxBody> {
    let (kind, message) = match status {
        400 => ("invalid_request", "The request is invalid"),
        401 => ("unauthorized", "The 'Authorization' header is invalid"),
        403 => (
            "unauthorized",
            "Your current plan does not include access to this service",
        ),
        404 => (
            "resource_not_found",
            "The requested resource does not exist",
        ),
        429 => (
            "rate_limit_exceeded",
            "You have exceeded the rate limit for your plan",
        ),
        503 => (
            "service_unavailable",
            "The service is temporarily unavailable, please retry later",
        ),
        s if s >= 500 => (
            "internal_server_error",
            "An internal error occurred, please retry and contact support if it persists",
        ),
        _ => ("sandbox_fault", "Status set by a sandbox fault"),
    };
    let mut resp = reply_response(Reply::error(status, kind, message, None));
    if let Some(s) = retry_after {
        resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

fn reply_response(r: Reply) -> Response<SandboxBody> {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(SandboxBody::Full(None));
    *resp.status_mut() = status;
    if let Some(v) = r.body {
        let bytes = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
        let h = resp.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        h.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        *resp.body_mut() = SandboxBody::Full(Some(bytes));
    }
    resp
}

/// Keeps the announced Content-Length but sends only half of the body.
fn truncate(resp: &mut Response<SandboxBody>) {
    if let SandboxBody::Full(Some(b)) = resp.body_mut() {
        let half = b.slice(..b.len() / 2);
        *resp.body_mut() = SandboxBody::Truncated {
            head: Some(half),
            pause: Box::pin(tokio::time::sleep(Duration::from_millis(20))),
        };
    }
}

/// Response bodies: whole, or deliberately cut short.
enum SandboxBody {
    Full(Option<Bytes>),
    /// Sends `head`, waits so it is flushed, then fails, which makes hyper
    /// abort the connection (or reset the h2 stream) mid-body.
    Truncated {
        head: Option<Bytes>,
        pause: Pin<Box<tokio::time::Sleep>>,
    },
}

impl Body for SandboxBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            SandboxBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            SandboxBody::Truncated { head, pause } => {
                if let Some(h) = head.take() {
                    return Poll::Ready(Some(Ok(Frame::data(h))));
                }
                ready!(pause.as_mut().poll(cx));
                Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "sandbox fault: truncated body",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, SandboxBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SandboxBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            SandboxBody::Full(None) => SizeHint::with_exact(0),
            SandboxBody::Truncated { .. } => SizeHint::default(),
        }
    }
}

/// `application/x-www-form-urlencoded` query decoding (`+` is a space, as
/// Python's requests encodes it).
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let v = b
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match v {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
