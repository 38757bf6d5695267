//! `cubegate-loadgen`: the HTTP/1.1 load generator `bench/run.sh` drives.
//!
//! Input: one target (`--url`, `http://` or `https://` with `--ca` to trust),
//! one request shape (`--method`, `--body-file`, repeated `--header`), a
//! number of keep-alive connections (`-c`), a duration and optionally a
//! fixed rate (`--rate`). Output: one JSON line on stdout with throughput,
//! errors and latency percentiles in microseconds.
//!
//! Two modes:
//! - **open loop** (`--rate R`): wrk2-style. Request `i` is *due* at
//!   `t0 + i/R`, dealt round-robin to the connections by one pacer thread;
//!   latency runs from when it was due, not from when it was sent, so a
//!   server stall that delays later requests is counted in full (no
//!   coordinated omission). The pacer's own lateness (OS sleep granularity,
//!   ~0.1 ms) is reported as `pacer_late_p99_us`; it is the same bias for
//!   every system measured.
//! - **closed loop** (no `--rate`): every connection sends its next request
//!   as soon as the previous answer is read (saturation throughput).
//!
//! Only requests due after `--warmup` seconds are counted. Any non-2xx
//! answer or transport error counts as an error (and its latency is still
//! recorded). Failures to parse arguments or connect exit non-zero.
//!
//! `--report-every SECS` also prints, every SECS seconds of the run, one JSON
//! line for the counted requests answered in that slice (`interval_end_s`,
//! `requests`, `errors`, `p50_us`, `p99_us`, `max_us`), before the summary
//! line: `bench/soak.sh` needs p99 and errors per interval of one long,
//! uninterrupted load, not one figure for the whole run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

struct Args {
    url: Uri,
    method: Method,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    ca: Option<String>,
    connections: usize,
    duration: f64,
    warmup: f64,
    rate: Option<f64>,
    label: String,
    report_every: Option<f64>,
}

fn usage() -> ! {
    eprintln!(
        "usage: loadgen --url URL [--method M] [--body-file F] [--header 'K: V']... [--ca PEM]\n\
         \x20              [-c CONNS] [--duration SECS] [--warmup SECS] [--rate RPS] [--label L]\n\
         \x20              [--report-every SECS]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        url: Uri::from_static("http://127.0.0.1:8080/"),
        method: Method::GET,
        body: Bytes::new(),
        headers: Vec::new(),
        ca: None,
        connections: 16,
        duration: 10.0,
        warmup: 1.0,
        rate: None,
        label: String::new(),
        report_every: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--url" => a.url = val().parse().unwrap_or_else(|_| usage()),
            "--method" => a.method = val().parse().unwrap_or_else(|_| usage()),
            "--body-file" => {
                a.body = std::fs::read(val()).map(Bytes::from).unwrap_or_else(|e| {
                    eprintln!("loadgen: body file: {e}");
                    std::process::exit(2)
                })
            }
            "--header" => {
                let h = val();
                let (k, v) = h.split_once(':').unwrap_or_else(|| usage());
                a.headers.push((
                    k.trim().parse().unwrap_or_else(|_| usage()),
                    v.trim().parse().unwrap_or_else(|_| usage()),
                ));
            }
            "--ca" => a.ca = Some(val()),
            "-c" | "--connections" => a.connections = val().parse().unwrap_or_else(|_| usage()),
            "--duration" => a.duration = val().parse().unwrap_or_else(|_| usage()),
            "--warmup" => a.warmup = val().parse().unwrap_or_else(|_| usage()),
            "--rate" => a.rate = Some(val().parse().unwrap_or_else(|_| usage())),
            "--label" => a.label = val(),
            "--report-every" => a.report_every = Some(val().parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    if a.connections == 0 || a.duration <= 0.0 || a.report_every.is_some_and(|r| r <= 0.0) {
        usage()
    }
    a
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

struct Target {
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
}

async fn connect(t: &Target) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect((t.host.as_str(), t.port)).await?;
    tcp.set_nodelay(true)?;
    match &t.tls {
        None => {
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            Ok(s)
        }
        Some(c) => {
            let name = ServerName::try_from(t.host.clone())?;
            let tls = c.connect(name, tcp).await?;
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            Ok(s)
        }
    }
}

#[derive(Default)]
struct Stats {
    latencies_us: Vec<u32>,
    late_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    /// Every answered request, warm-up included (for CPU per request).
    total: u64,
}

/// The counted answers of the current `--report-every` slice, shared by the
/// workers and taken (emptied) by the reporter at each slice's end.
#[derive(Default)]
struct Slice {
    latencies_us: Vec<u32>,
    errors: u64,
}

/// Takes the current slice and prints its line (`t`: seconds since the start).
fn report_slice(slice: &Mutex<Slice>, t: f64) {
    let s = std::mem::take(&mut *slice.lock().unwrap_or_else(PoisonError::into_inner));
    let mut l = s.latencies_us;
    l.sort_unstable();
    println!(
        "{{\"interval_end_s\":{t:.3},\"requests\":{},\"errors\":{},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
        l.len(),
        s.errors,
        pct(&l, 50.0),
        pct(&l, 99.0),
        l.last().copied().unwrap_or(0),
    );
}

/// `--report-every`: the slice the workers fill and the thread that prints
/// it every `every` seconds from `t0`.
struct Reporter {
    slice: Arc<Mutex<Slice>>,
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    t0: Instant,
}

impl Reporter {
    fn start(every: f64, t0: Instant) -> Reporter {
        let slice = Arc::new(Mutex::new(Slice::default()));
        let done = Arc::new(AtomicBool::new(false));
        let (sl, dn) = (slice.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut k = 1u32;
            while !dn.load(Ordering::Relaxed) {
                let end = t0 + Duration::from_secs_f64(f64::from(k) * every);
                let now = Instant::now();
                if end > now {
                    // Short naps, so the thread notices `done` promptly.
                    std::thread::sleep((end - now).min(Duration::from_millis(100)));
                    continue;
                }
                report_slice(&sl, f64::from(k) * every);
                k += 1;
            }
        });
        Reporter {
            slice,
            done,
            thread,
            t0,
        }
    }

    /// Once every worker has finished: stops the thread and prints the last,
    /// partial slice.
    fn finish(self) {
        self.done.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        report_slice(&self.slice, self.t0.elapsed().as_secs_f64());
    }
}

struct Shot {
    due: Instant,
    counted: bool,
}

async fn worker(
    args: Arc<Args>,
    target: Arc<Target>,
    mut tickets: Option<mpsc::UnboundedReceiver<Shot>>,
    stop: Arc<AtomicBool>,
    t0: Instant,
    slice: Option<Arc<Mutex<Slice>>>,
) -> Stats {
    let mut st = Stats::default();
    let mut sender = match connect(&target).await {
        Ok(s) => Some(s),
        Err(e) => {
            st.errors += 1;
            st.first_error = Some(format!("connect: {e}"));
            None
        }
    };
    let path = args
        .url
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let authority = args
        .url
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let warm_end = t0 + Duration::from_secs_f64(args.warmup);
    loop {
        let (due, counted) = match tickets.as_mut() {
            Some(rx) => match rx.recv().await {
                Some(s) => (s.due, s.counted),
                None => break,
            },
            None => {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let now = Instant::now();
                (now, now >= warm_end)
            }
        };
        let sent = Instant::now();
        if sender.is_none() {
            sender = connect(&target).await.ok();
        }
        let ok = match sender.as_mut() {
            None => Err("no connection".to_string()),
            Some(s) => {
                let mut rb = Request::builder()
                    .method(args.method.clone())
                    .uri(path.as_str())
                    .header(http::header::HOST, authority.as_str());
                for (k, v) in &args.headers {
                    rb = rb.header(k, v);
                }
                match rb.body(Full::new(args.body.clone())) {
                    Err(e) => Err(e.to_string()),
                    Ok(req) => match s.send_request(req).await {
                        Err(e) => Err(e.to_string()),
                        Ok(resp) => {
                            let status = resp.status();
                            match resp.into_body().collect().await {
                                Err(e) => Err(e.to_string()),
                                Ok(_) if status.is_success() => Ok(()),
                                Ok(_) => Err(format!("status {status}")),
                            }
                        }
                    },
                }
            }
        };
        let done = Instant::now();
        st.total += 1;
        if ok.as_ref().is_err_and(|e| !e.starts_with("status")) {
            sender = None; // transport error: reconnect next time
        }
        if counted {
            let latency_us = done
                .saturating_duration_since(due)
                .as_micros()
                .min(u32::MAX as u128) as u32;
            st.latencies_us.push(latency_us);
            if let Some(slice) = &slice {
                let mut sl = slice.lock().unwrap_or_else(PoisonError::into_inner);
                sl.latencies_us.push(latency_us);
                sl.errors += u64::from(ok.is_err());
            }
            st.late_us.push(
                sent.saturating_duration_since(due)
                    .as_micros()
                    .min(u32::MAX as u128) as u32,
            );
            if let Err(e) = ok {
                st.errors += 1;
                st.first_error.get_or_insert(e);
            }
        }
    }
    st
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args = Arc::new(parse_args());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let https = args.url.scheme_str() == Some("https");
    let tls = if https {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &args.ca {
            let pem = std::fs::read(ca).unwrap_or_else(|e| {
                eprintln!("loadgen: --ca: {e}");
                std::process::exit(2)
            });
            for c in CertificateDer::pem_slice_iter(&pem).flatten() {
                let _ = roots.add(c);
            }
        }
        let cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
    } else {
        None
    };
    let target = Arc::new(Target {
        host: args.url.host().unwrap_or("127.0.0.1").to_string(),
        port: args.url.port_u16().unwrap_or(if https { 443 } else { 80 }),
        tls,
    });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: runtime: {e}");
            std::process::exit(1)
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let total = args.warmup + args.duration;
    let t0 = Instant::now();
    let mut txs = Vec::new();
    let mut handles = Vec::new();
    let reporter = args.report_every.map(|every| Reporter::start(every, t0));
    for _ in 0..args.connections {
        let rx = if args.rate.is_some() {
            let (tx, rx) = mpsc::unbounded_channel();
            txs.push(tx);
            Some(rx)
        } else {
            None
        };
        let slice = reporter.as_ref().map(|r| r.slice.clone());
        let w = worker(args.clone(), target.clone(), rx, stop.clone(), t0, slice);
        handles.push(rt.spawn(w));
    }
    // The pacer: a plain thread, so the schedule does not depend on the
    // runtime's 1 ms timer wheel.
    if let Some(rate) = args.rate {
        let interval = 1.0 / rate;
        let n = (total * rate) as u64;
        for i in 0..n {
            let due = t0 + Duration::from_secs_f64(i as f64 * interval);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let counted = i as f64 * interval >= args.warmup;
            let _ = txs[(i as usize) % txs.len()].send(Shot { due, counted });
        }
        txs.clear();
    } else {
        std::thread::sleep(Duration::from_secs_f64(total));
        stop.store(true, Ordering::Relaxed);
    }
    let end_sched = Instant::now();
    let mut all = Stats::default();
    rt.block_on(async {
        for h in handles {
            // Give stragglers a bounded time to finish.
            match tokio::time::timeout(Duration::from_secs(30), h).await {
                Ok(Ok(s)) => {
                    all.latencies_us.extend(s.latencies_us);
                    all.late_us.extend(s.late_us);
                    all.errors += s.errors;
                    all.total += s.total;
                    if all.first_error.is_none() {
                        all.first_error = s.first_error;
                    }
                }
                _ => all.errors += 1,
            }
        }
    });
    if let Some(r) = reporter {
        r.finish();
    }
    let window = match args.rate {
        // Open loop: throughput over the time it took to serve what was due.
        Some(_) => (end_sched.max(Instant::now()) - t0).as_secs_f64() - args.warmup,
        None => args.duration,
    };
    all.latencies_us.sort_unstable();
    all.late_us.sort_unstable();
    let n = all.latencies_us.len();
    let l = &all.latencies_us;
    println!(
        "{{\"label\":\"{}\",\"mode\":\"{}\",\"connections\":{},\"requests\":{},\"total\":{},\"errors\":{},\"rps\":{:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"pacer_late_p99_us\":{},\"first_error\":{}}}",
        args.label,
        if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        args.connections,
        n,
        all.total,
        all.errors,
        n as f64 / window.max(1e-9),
        pct(l, 50.0),
        pct(l, 90.0),
        pct(l, 99.0),
        pct(l, 99.9),
        l.last().copied().unwrap_or(0),
        pct(&all.late_us, 99.0),
        serde_json::to_string(&all.first_error).unwrap_or_else(|_| "null".into()),
    );
}
