//! Issue 19: the gateway's edge on raw sockets, as an attacker or a broken
//! client would probe it. Every refusal is checked three ways: the status
//! (and, where framing is in doubt, the connection closed), nothing reaching
//! the sandbox, and the next caller still served. Then the whole-body
//! deadline, the in-flight body budget under an upload flood (peak RSS of a
//! child gateway), and a randomized run of generated heads and chunked
//! framings.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// What came back on one raw connection.
struct Raw {
    text: String,
    /// Time from the head being written to the connection closing (or the
    /// read giving up).
    elapsed: Duration,
    /// The gateway closed the connection within the wait.
    closed: bool,
}

impl Raw {
    fn status(&self) -> u16 {
        self.text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<String> {
        let head = self.text.split("\r\n\r\n").next().unwrap_or("");
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    fn json(&self) -> Value {
        let body = self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or(Value::Null)
    }
}

/// Writes `head`, then each part after its delay, while reading whatever
/// the gateway answers until it closes the connection or `wait` passes.
async fn exchange(addr: SocketAddr, head: &[u8], parts: &[(u64, &[u8])], wait: Duration) -> Raw {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let head = head.to_vec();
    let parts: Vec<(u64, Vec<u8>)> = parts.iter().map(|(d, b)| (*d, b.to_vec())).collect();
    let writer = tokio::spawn(async move {
        // Write errors are expected: the gateway may close first.
        if wr.write_all(&head).await.is_err() {
            return;
        }
        for (delay, bytes) in parts {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
        }
        // Keep the write half open: a refusal must not depend on our EOF.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let start = Instant::now();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(wait, async {
        let mut chunk = [0u8; 4096];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .is_ok();
    writer.abort();
    Raw {
        text: String::from_utf8_lossy(&buf).into_owned(),
        elapsed: start.elapsed(),
        closed,
    }
}

/// One request on its own connection, refused and closed within 5 s.
async fn refused(env: &TestEnv, raw: &str) -> Raw {
    let before = env.recorded().len();
    let r = exchange(env.addr, raw.as_bytes(), &[], Duration::from_secs(5)).await;
    assert!(
        r.closed,
        "connection left open after a refusal: {raw:?} -> {}",
        r.text
    );
    assert_eq!(
        env.recorded().len(),
        before,
        "forwarded: {raw:?} -> {}",
        r.text
    );
    r
}

/// The next caller gets served: a plain list on a fresh connection.
async fn next_caller_served(addr: SocketAddr) {
    let head = format!(
        "GET /v1/clients HTTP/1.1\r\nHost: gw\r\nAuthorization: {TOKEN_A}\r\nConnection: close\r\n\r\n"
    );
    let r = exchange(addr, head.as_bytes(), &[], Duration::from_secs(10)).await;
    assert_eq!(
        r.status(),
        200,
        "the next caller was not served: {}",
        r.text
    );
}

fn post_head(path: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: {TOKEN_A}\r\nContent-Type: application/json\r\n{extra}"
    )
}

/// `body` as one chunk plus the last chunk.
fn chunked(body: &str) -> String {
    format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
}

async fn edge_env(extra: &str) -> TestEnv {
    TestEnv::with(Opts {
        listener: "body_deadline_ms = 1500\n".into(),
        extra: extra.into(),
        ..Opts::default()
    })
    .await
}

#[tokio::test]
async fn a_trickled_body_gets_408_within_the_deadline_and_the_connection_closes() {
    let env = edge_env("").await;
    let before = env.recorded().len();
    // 100 bytes declared, one every 250 ms: the idle timer (30 s) never
    // fires, the whole-body deadline (1.5 s) does.
    let head = post_head("/v1/clients", "Content-Length: 100\r\n\r\n");
    let trickle: Vec<(u64, &[u8])> = (0..40).map(|_| (250, &b" "[..])).collect();
    let r = exchange(env.addr, head.as_bytes(), &trickle, Duration::from_secs(6)).await;
    assert_eq!(r.status(), 408, "{}", r.text);
    assert_eq!(r.json()["type"], "request_timeout", "{}", r.text);
    assert!(r.closed, "connection kept after 408");
    assert!(
        r.elapsed < Duration::from_millis(1500 + 1000),
        "408 after {:?}",
        r.elapsed
    );
    assert_eq!(env.recorded().len(), before);
    next_caller_served(env.addr).await;
}

#[tokio::test]
async fn transfer_encoding_other_than_one_chunked_is_400_and_closed() {
    let env = edge_env("").await;
    let body = chunked(CLIENT_BODY);
    for te in [
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: identity, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
    ] {
        let raw = format!("{}{te}\r\n{body}", post_head("/v1/clients", ""));
        let r = refused(&env, &raw).await;
        assert_eq!(r.status(), 400, "{te:?}: {}", r.text);
    }
    // One `chunked` is still fine.
    let ok = format!(
        "{}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}",
        post_head("/v1/clients", "")
    );
    let r = exchange(env.addr, ok.as_bytes(), &[], Duration::from_secs(10)).await;
    assert_eq!(r.status(), 200, "{}", r.text);
    next_caller_served(env.addr).await;
}

#[tokio::test]
async fn two_host_headers_or_none_on_http11_is_400() {
    let env = edge_env("").await;
    let list = |hosts: &str| {
        format!("GET /v1/clients HTTP/1.1\r\n{hosts}Authorization: {TOKEN_A}\r\n\r\n")
    };
    for hosts in ["Host: a\r\nHost: b\r\n", "Host: a\r\nHost: a\r\n", ""] {
        let r = refused(&env, &list(hosts)).await;
        assert_eq!(r.status(), 400, "{hosts:?}: {}", r.text);
        assert_eq!(r.json()["type"], "invalid_request", "{}", r.text);
    }
    next_caller_served(env.addr).await;
}

#[tokio::test]
async fn a_body_over_http10_is_426_upgrade_required() {
    let env = edge_env("").await;
    let raw = format!(
        "POST /v1/clients HTTP/1.0\r\nHost: gw\r\nAuthorization: {TOKEN_A}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{CLIENT_BODY}",
        CLIENT_BODY.len()
    );
    let r = refused(&env, &raw).await;
    assert_eq!(r.status(), 426, "{}", r.text);
    assert_eq!(
        r.header("upgrade").as_deref(),
        Some("HTTP/1.1"),
        "{}",
        r.text
    );
    assert_eq!(r.json()["type"], "upgrade_required");
    // A bodiless HTTP/1.0 request is still served.
    let get = format!("GET /v1/clients HTTP/1.0\r\nAuthorization: {TOKEN_A}\r\n\r\n");
    let r = exchange(env.addr, get.as_bytes(), &[], Duration::from_secs(10)).await;
    assert_eq!(r.status(), 200, "{}", r.text);
    next_caller_served(env.addr).await;
}

#[tokio::test]
async fn json_bodies_over_the_array_member_and_value_limits_are_400_with_param() {
    let env = edge_env("").await;
    let zeros = |n: usize| vec!["0"; n].join(",");
    let keys = |n: usize| {
        (0..n)
            .map(|i| format!("\"k{i}\":0"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let wide_arrays = (0..11)
        .map(|i| format!("\"a{i}\":[{}]", zeros(950)))
        .collect::<Vec<_>>()
        .join(",");
    for (options, what) in [
        (format!("{{\"list\":[{}]}}", zeros(1001)), "array elements"),
        (format!("{{{}}}", keys(257)), "object members"),
        (format!("{{{wide_arrays}}}"), "JSON values"),
    ] {
        let body = format!(
            r#"{{"clientId":"5f00000000000000000000aa","type":"standard_screening_check","options":{options}}}"#
        );
        let raw = format!(
            "{}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            post_head("/v1/checks", ""),
            body.len()
        );
        let r = refused(&env, &raw).await;
        assert_eq!(r.status(), 400, "{what}: {}", r.text);
        let json = r.json();
        assert!(json["message"].as_str().unwrap().contains(what), "{json}");
        let param = json["param"].as_str().unwrap_or("");
        assert!(param.starts_with("options"), "{what}: param {param:?}");
    }
    // At the limits, the body passes the body stage (1000 elements, 256 members).
    let body = format!(
        r#"{{"clientId":"5f00000000000000000000aa","type":"standard_screening_check","options":{{"list":[{}]}}}}"#,
        zeros(1000)
    );
    let r = env.post(TOKEN_A, "/v1/checks", &body).await;
    assert!(
        !r.json["message"]
            .as_str()
            .unwrap_or("")
            .contains("array elements"),
        "{}",
        r.text
    );
    next_caller_served(env.addr).await;
}

#[tokio::test]
async fn operator_looking_query_names_are_refused_and_queries_reencoded() {
    let env = edge_env("").await;
    for target in [
        "/v1/clients?metadata.x[$ne]=1",
        "/v1/clients?metadata.x%5B%24ne%5D=1",
        "/v1/clients?email[$regex]=.*",
        "/v1/clients?$where=1",
    ] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: gw\r\nAuthorization: {TOKEN_A}\r\n\r\n");
        let before = env.recorded().len();
        let r = exchange(env.addr, raw.as_bytes(), &[], Duration::from_secs(3)).await;
        assert_eq!(r.status(), 400, "{target}: {}", r.text);
        assert_eq!(env.recorded().len(), before, "{target} forwarded");
        let param = r.json()["param"].as_str().unwrap_or("").to_string();
        assert!(
            !param.contains('$') && !param.contains('x'),
            "{target}: {param}"
        );
    }
    env.sandbox.clear_recorded();
    let raw = format!(
        "GET /v1/clients?email=a+b%2ec@d&metadata.k=%7e HTTP/1.1\r\nHost: gw\r\nAuthorization: {TOKEN_A}\r\nConnection: close\r\n\r\n"
    );
    let r = exchange(env.addr, raw.as_bytes(), &[], Duration::from_secs(10)).await;
    assert_eq!(r.status(), 200, "{}", r.text);
    let rec = env.recorded();
    assert_eq!(
        rec[0].query.as_deref(),
        Some("email=a%20b.c%40d&metadata.k=~")
    );
    next_caller_served(env.addr).await;
}

#[tokio::test]
async fn an_upload_declaring_more_than_the_cap_is_413_at_once() {
    let env = edge_env("").await;
    let cap = cubegate::pipeline::body::UPLOAD_MAX_BYTES;
    assert_eq!(cap, 6 * 1024 * 1024, "one upload cap");
    let head = post_head(
        "/v1/documents/5f00000000000000000000aa/upload/front",
        &format!("Content-Length: {}\r\n\r\n", cap + 1),
    );
    let r = refused(&env, &head).await;
    assert_eq!(r.status(), 413, "{}", r.text);
    assert!(
        r.elapsed < Duration::from_secs(1),
        "413 after {:?}",
        r.elapsed
    );
    next_caller_served(env.addr).await;
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn forwarded_trace_headers(env: &TestEnv) -> (Vec<String>, Vec<String>) {
    env.sandbox.clear_recorded();
    let raw = format!(
        "GET /v1/clients HTTP/1.1\r\nHost: gw\r\nAuthorization: {TOKEN_A}\r\ntraceparent: {TRACEPARENT}\r\ntracestate: vendor=internal-state\r\nConnection: close\r\n\r\n"
    );
    let r = exchange(env.addr, raw.as_bytes(), &[], Duration::from_secs(10)).await;
    assert_eq!(r.status(), 200, "{}", r.text);
    let rec = env.recorded();
    let owned = |v: Vec<&str>| v.into_iter().map(String::from).collect();
    (
        owned(rec[0].header_values("traceparent")),
        owned(rec[0].header_values("tracestate")),
    )
}

#[tokio::test]
async fn tracestate_is_not_forwarded_unless_configured() {
    let env = edge_env("").await;
    let (parent, state) = forwarded_trace_headers(&env).await;
    assert_eq!(parent.len(), 1, "traceparent still goes");
    assert!(state.is_empty(), "tracestate forwarded: {state:?}");
    next_caller_served(env.addr).await;
    let env = TestEnv::with(Opts {
        upstream: format!("{}forward_tracestate = true\n", Opts::default().upstream),
        ..Opts::default()
    })
    .await;
    let (_, state) = forwarded_trace_headers(&env).await;
    assert_eq!(state, ["vendor=internal-state"]);
}

#[tokio::test]
async fn the_stripped_header_never_names_keys_below_metadata() {
    let env = edge_env(
        "[[policy.rules]]\noperation = \"clients.*\"\npointer = \"/metadata/*\"\naction = \"strip\"\n",
    )
    .await;
    let id = env.create_client(TOKEN_A).await;
    let body = r#"{"metadata":{"jane.doe@example.com":"1","crm-7":"2"}}"#;
    let raw = format!(
        "{}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        post_head(&format!("/v1/clients/{id}"), ""),
        body.len()
    );
    let r = exchange(env.addr, raw.as_bytes(), &[], Duration::from_secs(10)).await;
    assert_eq!(r.status(), 200, "{}", r.text);
    let stripped = r.header("x-cubegate-stripped").unwrap_or_default();
    assert_eq!(stripped, "/metadata", "{}", r.text);
    next_caller_served(env.addr).await;
}

/// Peak resident set of `pid` in bytes (VmHWM).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// An upload announced with `Expect: 100-continue`, the way curl sends
/// large bodies: the body goes only after the gateway asks for it (once it
/// has reserved room for it), and then after `hold` (a slow uploader keeps
/// its reservation). Returns the final status and Retry-After.
async fn upload(
    addr: SocketAddr,
    path: &str,
    body: String,
    hold: Duration,
) -> (u16, Option<String>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{}Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        post_head(path, ""),
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    if buf.starts_with(b"HTTP/1.1 100") {
        tokio::time::sleep(hold).await;
        s.write_all(body.as_bytes()).await.unwrap();
        buf.clear();
    }
    let _ = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf)).await;
    let r = Raw {
        text: String::from_utf8_lossy(&buf).into_owned(),
        elapsed: Duration::ZERO,
        closed: true,
    };
    (r.status(), r.header("retry-after"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upload_flood_waits_then_gets_503_and_memory_stays_within_the_budget() {
    // Three 6 MB uploads fit (each is charged twice its length).
    const BUDGET: u64 = 40_000_000;
    const N: usize = 16;
    // Allocator rounding, buffers and transient copies of the admitted bodies.
    const SLACK: u64 = 24 * 1024 * 1024;
    let gw = Served::start(
        Opts {
            extra: format!(
                "[body]\ninflight_max_bytes = {BUDGET}\ninflight_per_caller_bytes = {BUDGET}\ninflight_wait_ms = 200\n"
            ),
            // Three 6 MB bodies through TLS on a busy CI machine: the
            // upstream timeout is not what this test is about.
            upstream: "connect_timeout_ms = 5000\nresponse_timeout_ms = 60000\n".into(),
            ..Opts::default()
        },
        &[],
    )
    .await;
    let id = gw.create_client(TOKEN_A).await;
    let doc_body = format!(r#"{{"clientId":"{id}","type":"passport"}}"#);
    let r = gw.post(TOKEN_A, "/v1/documents", &doc_body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let path = format!(
        "/v1/documents/{}/upload/front",
        r.json["id"].as_str().unwrap()
    );
    let baseline = peak_rss(gw.pid());
    let data = "QUJD".repeat(6_000_000 / 4);
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let body = format!(r#"{{"fileName":"flood-{i}.jpg","data":"{data}"}}"#);
            let (addr, path) = (gw.addr, path.clone());
            tokio::spawn(
                async move { upload(addr, &path, body, Duration::from_millis(1000)).await },
            )
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let peak = peak_rss(gw.pid());
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let overloaded: Vec<_> = results.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!(ok + overloaded.len(), N, "{results:?}");
    assert_eq!(ok, 3, "the budget admits three at a time: {results:?}");
    assert!(
        overloaded.iter().all(|(_, ra)| ra.as_deref() == Some("1")),
        "{results:?}"
    );
    // Every accepted upload reached the sandbox exactly once.
    let mut names: Vec<String> = gw
        .sandbox
        .recorded()
        .iter()
        .filter(|q| q.path.ends_with("/upload/front"))
        .filter_map(|q| q.json()?["fileName"].as_str().map(String::from))
        .collect();
    assert_eq!(names.len(), ok, "{names:?}");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), ok, "an upload forwarded twice");
    eprintln!(
        "upload flood: baseline VmHWM {} MiB, peak {} MiB, budget {} MiB",
        baseline >> 20,
        peak >> 20,
        BUDGET >> 20
    );
    assert!(
        peak < baseline + BUDGET + SLACK,
        "peak RSS {peak} over baseline {baseline} + budget {BUDGET} + slack {SLACK}"
    );
    let metrics = gw.metrics().await;
    let refused = metric_value(
        &metrics,
        "cubegate_body_budget_refusals_total",
        &[("scope", "caller")],
    );
    assert_eq!(refused as usize, overloaded.len(), "refusals metric");
    let (_, ready) = gw.readyz().await;
    assert_eq!(ready["body_budget"]["limit_bytes"], BUDGET, "{ready}");
    assert_eq!(ready["body_budget"]["held_bytes"], 0, "{ready}");
    next_caller_served(gw.addr).await;
}

// ------------------------------------------------------- randomized heads

/// A generated request: head and body framing, sane or not.
#[derive(Clone, Debug)]
struct Probe {
    http10: bool,
    post: bool,
    hosts: usize,
    /// Transfer-Encoding headers, as sent.
    te: Vec<&'static str>,
    /// Content-Length relative to the body: None, or the body length plus this.
    length_delta: Option<i64>,
    target: &'static str,
    body: &'static str,
    /// Chunk sizes the body is cut into (chunked framing only).
    cuts: Vec<usize>,
    chunk_ext: bool,
    bad_size: bool,
    trailer: bool,
    last_chunk: bool,
}

const TE_VALUES: &[&str] = &[
    "chunked",
    "Chunked",
    "chunked, chunked",
    "gzip, chunked",
    "identity, chunked",
    "gzip",
    "identity",
    "chunked, gzip",
    " chunked",
    "chunked;q=1",
    "",
];
const TARGETS: &[&str] = &[
    "/v1/clients",
    "/v1/clients?email=a%40b.c",
    "/v1/clients?metadata.x[$ne]=1",
    "/v1/clients?metadata.x%5B%24gt%5D=",
    "/v1/clients?page=1&page=2",
];
const BODIES: &[&str] = &[
    CLIENT_BODY,
    "",
    "{}",
    "{\"type\":\"person\",\"type\":\"company\"}",
    "[1,2",
    "{\"type\":\"person\",\"email\":\"q@example.com\"}",
];

impl quickcheck::Arbitrary for Probe {
    fn arbitrary(g: &mut quickcheck::Gen) -> Self {
        let pick = |g: &mut quickcheck::Gen, n: usize| usize::arbitrary(g) % n;
        let te_count = [0, 0, 1, 1, 1, 2][pick(g, 6)];
        let body = BODIES[pick(g, BODIES.len())];
        let cuts = (0..1 + pick(g, 4)).map(|_| 1 + pick(g, 40)).collect();
        Probe {
            http10: pick(g, 6) == 0,
            post: pick(g, 4) != 0,
            hosts: [1, 1, 1, 0, 2][pick(g, 5)],
            te: (0..te_count)
                .map(|_| TE_VALUES[pick(g, TE_VALUES.len())])
                .collect(),
            length_delta: [None, Some(0), Some(0), Some(-1), Some(3)][pick(g, 5)],
            target: TARGETS[pick(g, TARGETS.len())],
            body,
            cuts,
            chunk_ext: pick(g, 5) == 0,
            bad_size: pick(g, 8) == 0,
            trailer: pick(g, 5) == 0,
            last_chunk: pick(g, 8) != 0,
        }
    }
}

impl Probe {
    fn bytes(&self) -> Vec<u8> {
        let method = if self.post { "POST" } else { "GET" };
        let version = if self.http10 { "1.0" } else { "1.1" };
        let mut head = format!("{method} {} HTTP/{version}\r\n", self.target);
        for i in 0..self.hosts {
            head.push_str(&format!("Host: gw{i}\r\n"));
        }
        head.push_str(&format!(
            "Authorization: {TOKEN_A}\r\nContent-Type: application/json\r\nConnection: close\r\n"
        ));
        for te in &self.te {
            head.push_str(&format!("Transfer-Encoding: {te}\r\n"));
        }
        let body = if self.te.is_empty() {
            if let Some(d) = self.length_delta {
                let n = (self.body.len() as i64 + d).max(0);
                head.push_str(&format!("Content-Length: {n}\r\n"));
            }
            self.body.to_string()
        } else {
            self.chunked_body()
        };
        format!("{head}\r\n{body}").into_bytes()
    }

    fn chunked_body(&self) -> String {
        let mut out = String::new();
        let mut rest = self.body;
        let mut cuts = self.cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cuts.next().unwrap_or(&1)).min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            let size = if self.bad_size {
                format!("{:x}z", n)
            } else {
                format!("{n:x}")
            };
            let ext = if self.chunk_ext { ";name=value" } else { "" };
            out.push_str(&format!("{size}{ext}\r\n{chunk}\r\n"));
            rest = tail;
        }
        if self.last_chunk {
            out.push_str("0\r\n");
            if self.trailer {
                out.push_str("X-Trailer: 1\r\n");
            }
            out.push_str("\r\n");
        }
        out
    }

    /// What issue 19 says must be refused, whatever else happens.
    fn must_refuse(&self) -> bool {
        let te_ok = match self.te.as_slice() {
            [] => true,
            [one] => one.trim().eq_ignore_ascii_case("chunked"),
            _ => false,
        };
        let host_ok = if self.http10 {
            self.hosts <= 1
        } else {
            self.hosts == 1
        };
        let has_body = !self.te.is_empty()
            || self
                .length_delta
                .is_some_and(|d| self.body.len() as i64 + d > 0);
        let operator = self.target.contains('[') || self.target.contains("%5B");
        !te_ok || !host_ok || (self.http10 && has_body) || operator
    }
}

struct EdgeProp {
    rt: tokio::runtime::Runtime,
    env: TestEnv,
}

thread_local! {
    // quickcheck takes plain `fn`s; the gateway lives here for the run.
    static EDGE: std::cell::RefCell<Option<EdgeProp>> = const { std::cell::RefCell::new(None) };
}

/// The oracles: never a 5xx, never forwarded more than once, never
/// forwarded when refused (or when it must be refused), an answer or a
/// close within the body deadline plus a margin, and the next caller served.
fn probe_holds_the_oracles(p: Probe) -> bool {
    EDGE.with(|e| {
        let e = e.borrow();
        let e = e.as_ref().unwrap();
        let before = e.env.recorded().len();
        let r = e.rt.block_on(exchange(
            e.env.addr,
            &p.bytes(),
            &[],
            Duration::from_secs(4),
        ));
        let forwarded = e.env.recorded().len() - before;
        let status = r.status();
        let fine = r.closed
            && status != 0
            && status < 500
            && forwarded <= 1
            && (status == 200 || forwarded == 0)
            && !(p.must_refuse() && (status == 200 || forwarded > 0));
        if !fine {
            eprintln!(
                "probe {p:?}: status {status}, forwarded {forwarded}, closed {}: {}",
                r.closed, r.text
            );
            return false;
        }
        e.rt.block_on(next_caller_served(e.env.addr));
        true
    })
}

#[test]
fn property_generated_heads_and_chunked_framings_hold_the_oracles() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let env = rt.block_on(edge_env(""));
    EDGE.with(|e| *e.borrow_mut() = Some(EdgeProp { rt, env }));
    quickcheck::QuickCheck::new()
        .tests(60)
        .max_tests(600)
        .quickcheck(probe_holds_the_oracles as fn(Probe) -> bool);
    if let Some(p) = EDGE.with(|e| e.borrow_mut().take()) {
        let EdgeProp { rt, env } = p;
        rt.block_on(async move { drop(env) });
    }
}
