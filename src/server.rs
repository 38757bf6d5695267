//! Listeners: the gateway listener (HTTP/1.1 and h2c via hyper-util's auto
//! builder, or HTTPS/mTLS with `[listener.tls]`, see [`tls`]) with limits on
//! connections, header size and count, header-read time, stalled response
//! writes; the admin listener (`/healthz`, `/readyz`, `/metrics`); graceful
//! shutdown: on drain the gateway answers 503 `draining` with
//! `Connection: close`, in-flight requests finish within the drain time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub mod tls;

use crate::config::ListenerSettings;
use crate::pipeline;
use crate::state::Shared;

/// Open connections, for drain accounting.
pub static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

struct ConnGuard;
impl Drop for ConnGuard {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

fn conn_builder(l: &ListenerSettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(l.header_read_timeout_ms))
        .max_buf_size(l.max_header_bytes.max(8192))
        .max_headers(l.max_headers)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(l.max_header_bytes as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    b
}

/// Accept gateway connections until `stop` turns true, then wait for open
/// connections to finish (bounded by the drain time).
pub async fn run_gateway(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let settings = shared.runtime().snapshot.listener.clone();
    let builder = Arc::new(conn_builder(&settings));
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        let tls_config = shared.runtime().snapshot.tls.clone();
        tokio::spawn(serve_one(
            stream,
            tls_config,
            shared.clone(),
            builder.clone(),
            graceful.watcher(),
            permit,
            settings.clone(),
        ));
    }
    let drain = Duration::from_millis(settings.drain_timeout_ms);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain time over; closing remaining connections");
    }
}

/// A connection whose peer stops taking response bytes is dropped after
/// `limit` without progress (`listener.write_stall_timeout_ms`): otherwise a
/// client that never reads a large response would hold its upstream
/// exchange slot (`[upstream] max_connections`) for good, and a few such
/// clients would starve every other caller. Only time spent with bytes
/// waiting to be sent counts: an idle keep-alive connection never writes.
/// It sits on the TCP stream (below TLS). An HTTP/2 stream starved of
/// flow-control window while the socket stays drained is caught per
/// response instead ([`Responses`]).
struct WriteStall<T> {
    inner: T,
    limit: Duration,
    /// Armed at the first `Pending` write after progress; allocated once.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
}

impl<T> WriteStall<T> {
    fn new(inner: T, limit: Duration) -> Self {
        WriteStall {
            inner,
            limit,
            timer: None,
            armed: false,
        }
    }

    /// Passes a write result through, timing how long writes stay pending.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        res: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        if !res.is_pending() || self.limit.is_zero() {
            self.armed = false;
            return res;
        }
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !self.armed {
            timer.as_mut().reset(tokio::time::Instant::now() + limit);
            self.armed = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                crate::telemetry::slow_reader_dropped();
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client took no response bytes within the write stall timeout",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteStall<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteStall<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, res)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, res)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, res)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, res)
    }
}

/// What hyper serves: a plain TCP stream or a TLS stream over one.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// One gateway connection: TLS handshake (bounded by the header-read
/// timeout), then HTTP with the verified client certificate, if any, in
/// every request's extensions for `identify`.
///
/// hyper's h1 header_read_timeout starts only after hyper-util has sniffed
/// the protocol (up to the 24-byte h2 preface, no timeout), and h2 has no
/// header timer at all, so a client trickling the preface or its first
/// HEADERS would hold the connection: the first request's head must arrive
/// within the header-read timeout, counted from accept. Later requests on an
/// h1 connection are covered by hyper's own timer.
///
/// No ceiling on a busy connection's life: cutting it would abort a request
/// mid-flight (and a client might resend a POST). Idle HTTP/1.1 connections
/// close at hyper's header-read timeout (it also runs while waiting for the
/// next request); HTTP/2 peers are pinged and dropped when they stop
/// answering; stalled responses are dropped; max_connections bounds the
/// rest.
async fn serve_one(
    stream: tokio::net::TcpStream,
    tls_config: Option<Arc<rustls::ServerConfig>>,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    permit: tokio::sync::OwnedSemaphorePermit,
    settings: ListenerSettings,
) {
    let _g = ConnGuard;
    let _permit = permit;
    let header_timeout = Duration::from_millis(settings.header_read_timeout_ms);
    let deadline = tokio::time::Instant::now() + header_timeout;
    // Under TLS, not above it: rustls's flush pushes records out and still
    // answers Pending until its buffer is empty, so above it a client that
    // reads slowly but steadily would look stalled.
    let stall_limit = Duration::from_millis(settings.write_stall_timeout_ms);
    let addr = peer_addr(&stream);
    let stream = WriteStall::new(stream, stall_limit);
    let (io, peer): (Box<dyn Io>, Option<tls::PeerCert>) = match tls_config {
        None => (Box::new(stream), None),
        Some(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                Ok(Ok(s)) => {
                    let peer = tls::peer_cert(s.get_ref().1.peer_certificates());
                    (Box::new(s), peer)
                }
                Ok(Err(e)) => {
                    // No cert when required, unknown CA, expired: the
                    // handshake fails and nothing reaches the pipeline.
                    tracing::info!(error = %e, "TLS handshake refused");
                    crate::telemetry::tls_handshake_failed();
                    return;
                }
                Err(_) => {
                    crate::telemetry::slow_client_dropped();
                    return;
                }
            }
        }
    };
    let first_request = Arc::new(AtomicBool::new(false));
    let seen = first_request.clone();
    let responses = Arc::new(Responses::new());
    let watched = responses.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        seen.store(true, Ordering::Release);
        let req = tag(req, peer.as_ref(), addr);
        serve_request(shared.clone(), watched.clone(), stall_limit, req)
    });
    let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
    let mut conn = std::pin::pin!(watcher.watch(conn));
    let header_deadline = tokio::time::sleep_until(deadline);
    let mut header_deadline = std::pin::pin!(header_deadline);
    let mut header_checked = false;
    let mut tick = tokio::time::interval((stall_limit / 2).max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = header_deadline.as_mut(), if !header_checked => {
                header_checked = true;
                if !first_request.load(Ordering::Acquire) {
                    crate::telemetry::slow_client_dropped();
                    return;
                }
            }
            _ = tick.tick(), if !stall_limit.is_zero() => {
                if responses.stalled(stall_limit) {
                    crate::telemetry::slow_reader_dropped();
                    return;
                }
            }
        }
    }
}

/// The connection's source address, for the refusal budget of
/// unauthenticated requests.
fn peer_addr(stream: &tokio::net::TcpStream) -> Option<crate::model::PeerAddr> {
    stream
        .peer_addr()
        .ok()
        .map(|a| crate::model::PeerAddr(a.ip()))
}

/// What the connection knows about its peer, in the request's extensions:
/// the verified client certificate (for `identify`) and the source address.
fn tag(
    mut req: Request<Incoming>,
    cert: Option<&tls::PeerCert>,
    addr: Option<crate::model::PeerAddr>,
) -> Request<Incoming> {
    if let Some(p) = cert {
        req.extensions_mut().insert(p.clone());
    }
    if let Some(a) = addr {
        req.extensions_mut().insert(a);
    }
    req
}

/// One request through the pipeline. Only HTTP/2 responses can stall with
/// the socket drained (flow control); an HTTP/1.1 one stalls on the socket,
/// where `WriteStall` sees it, and is spared the per-response bookkeeping.
async fn serve_request(
    shared: Arc<Shared>,
    watched: Arc<Responses>,
    stall_limit: Duration,
    req: Request<Incoming>,
) -> Result<Response<pipeline::respond::GatewayBody>, Infallible> {
    let watch = req.version() == http::Version::HTTP_2 && !stall_limit.is_zero();
    let resp = pipeline::handle(shared, req).await;
    if !watch {
        return Ok(resp);
    }
    Ok(resp.map(|body| watched.watch(body)))
}

/// The HTTP/2 responses of one connection still being sent, for the stall
/// check in [`serve_one`]: a response whose last chunk went to hyper and
/// that hyper has not asked for more for `write_stall_timeout_ms` is stuck
/// behind its client. [`WriteStall`] sees a stalled socket; this sees a
/// stream starved of flow-control window while the socket stays drained (a
/// client that stops granting window but keeps answering pings), where
/// hyper stops polling the body and its upstream slot would stay taken.
struct Responses {
    origin: tokio::time::Instant,
    live: std::sync::Mutex<Vec<std::sync::Weak<ResponseClock>>>,
}

/// Milliseconds since [`Responses::origin`] (at least 1) at which the body
/// last handed hyper a chunk without being polled since; 0 while hyper has
/// asked (the body then waits on the upstream, not on the client).
#[derive(Default)]
struct ResponseClock(std::sync::atomic::AtomicU64);

fn ms_since(origin: tokio::time::Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Responses {
    fn new() -> Self {
        Responses {
            origin: tokio::time::Instant::now(),
            live: std::sync::Mutex::default(),
        }
    }

    fn watch(&self, body: pipeline::respond::GatewayBody) -> pipeline::respond::GatewayBody {
        use http_body_util::BodyExt as _;
        let clock = Arc::new(ResponseClock::default());
        {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            // Finished responses leave dead entries behind (a connection
            // serves many): pruned as they pile up.
            if live.len() >= 32 {
                live.retain(|w| w.strong_count() > 0);
            }
            live.push(Arc::downgrade(&clock));
        }
        WatchedBody {
            inner: body,
            clock,
            origin: self.origin,
        }
        .boxed()
    }

    fn stalled(&self, limit: Duration) -> bool {
        let now = ms_since(self.origin);
        let limit = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|w| w.strong_count() > 0);
        live.iter().filter_map(std::sync::Weak::upgrade).any(|c| {
            let since = c.0.load(Ordering::Relaxed);
            since != 0 && now.saturating_sub(since) >= limit
        })
    }
}

struct WatchedBody {
    inner: pipeline::respond::GatewayBody,
    clock: Arc<ResponseClock>,
    origin: tokio::time::Instant,
}

impl hyper::body::Body for WatchedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        self.clock.0.store(0, Ordering::Relaxed);
        let res = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &res {
            self.clock.0.store(ms_since(self.origin), Ordering::Relaxed);
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

pub type AdminBody = http_body_util::Full<Bytes>;

fn text(status: StatusCode, body: String, ctype: &'static str) -> Response<AdminBody> {
    let mut r = Response::new(http_body_util::Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    r
}

async fn admin(shared: Arc<Shared>, req: Request<Incoming>) -> Response<AdminBody> {
    match req.uri().path() {
        "/healthz" => text(
            StatusCode::OK,
            "{\"status\":\"ok\"}\n".into(),
            "application/json",
        ),
        "/readyz" => {
            let (ready, checks) = readiness(&shared).await;
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, checks.to_string(), "application/json")
        }
        "/metrics" => match crate::telemetry::metrics_handle() {
            Some(h) => {
                // Readiness as a gauge, so alerts see what the probe sees.
                crate::telemetry::ready(readiness(&shared).await.0);
                h.run_upkeep();
                text(StatusCode::OK, h.render(), "text/plain; version=0.0.4")
            }
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "metrics recorder unavailable\n".into(),
                "text/plain",
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "{\"type\":\"route_not_found\"}\n".into(),
            "application/json",
        ),
    }
}

/// How long after a failed exchange the upstream counts as unreachable
/// unless something succeeded meanwhile.
const UPSTREAM_WINDOW: Duration = Duration::from_secs(30);

/// Also reports the in-flight body budget (held and limit) without gating
/// on it.
/// Ready when not draining, the config is loaded (a snapshot exists once
/// serving), the audit log (if on) is writable with more free space than
/// `audit.min_free_bytes`, and the upstream answered
/// recently (or has not been tried yet). Flags, plus one small file
/// create+fsync+remove in the audit dir (off the async workers), so a dir
/// that became unwritable shows before a request needs it. The probe also
/// runs while the log is unhealthy after a failed write: an unready replica
/// gets no traffic, so waiting for a successful write would keep it out of
/// rotation for good; it turns ready as soon as the disk is writable.
pub async fn readiness(shared: &Shared) -> (bool, serde_json::Value) {
    let rt = shared.runtime();
    let draining = shared.is_draining();
    let audit_ok = match shared.audit() {
        None => true,
        Some(a) => {
            let dir = a.dir().to_path_buf();
            tokio::task::spawn_blocking(move || crate::audit::probe_writable(&dir))
                .await
                .unwrap_or(false)
        }
    };
    let upstream_ok = rt.upstream.health().reachable_recently(UPSTREAM_WINDOW);
    let watermark = shared
        .audit()
        .is_some_and(|a| crate::pipeline::audit::below_watermark(a, &rt.snapshot));
    let ready = !draining && audit_ok && upstream_ok && !watermark;
    (
        ready,
        serde_json::json!({
            "ready": ready,
            "draining": draining,
            "audit_writable": audit_ok,
            "audit_disk_free_bytes": shared.audit().and_then(|a| a.disk_free()),
            "audit_watermark_tripped": watermark,
            "upstream_reachable": upstream_ok,
            "config_loaded": true,
            "config": rt.snapshot.source,
            // Reported, not gating: a full budget is load (answered 503 per
            // request), not a broken replica.
            "body_budget": {
                "held_bytes": shared.body_budget.held(),
                "limit_bytes": rt.snapshot.budget.total,
            },
        }),
    )
}

pub async fn run_admin(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let builder = hyper::server::conn::http1::Builder::new();
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            _ = stop.changed() => break,
        };
        let shared = shared.clone();
        let svc = service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(admin(shared, req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

/// Bind a listener, naming the address in the error.
pub async fn bind(addr: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let a = l.local_addr()?;
    Ok((l, a))
}
