//! Issue 7: slow and abusive clients. Slowloris connections (a header byte
//! now and then) are closed at the header-read timeout while normal requests
//! keep succeeding; a client that stalls its body gets 408 at the body idle
//! timeout; connections above `max_connections` wait, never crash anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

fn slow_opts(extra_listener: &str) -> Opts {
    Opts {
        listener: format!("header_read_timeout_ms = 1000\nbody_timeout_ms = 500\n{extra_listener}"),
        ..Opts::default()
    }
}

/// Sends one byte of a request head every `gap` and reports whether the
/// gateway closed the connection before the head was complete.
async fn slowloris(addr: std::net::SocketAddr, gap: Duration) -> bool {
    let head = format!("GET /v1/clients HTTP/1.1\r\nhost: x\r\nauthorization: {TOKEN_A}\r\n\r\n");
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return true;
    };
    let mut buf = [0u8; 256];
    for b in head.as_bytes() {
        if s.write_all(&[*b]).await.is_err() {
            return true;
        }
        match tokio::time::timeout(gap, s.read(&mut buf)).await {
            Err(_) => {} // still open, nothing said
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {} // e.g. a 408 before the close
        }
    }
    false
}

#[tokio::test]
async fn slowloris_connections_are_closed_while_normal_requests_succeed() {
    let env = Arc::new(TestEnv::with(slow_opts("")).await);
    // The recorder is process-wide: count this test's drops, not others'.
    let dropped_before = metric_value(
        &env.metrics().await,
        "cubegate_slow_clients_dropped_total",
        &[],
    );
    let addr = env.gw.addr();
    let attackers: Vec<_> = (0..50)
        .map(|_| tokio::spawn(slowloris(addr, Duration::from_millis(300))))
        .collect();
    // Normal traffic alongside, on fresh connections each time.
    let ok = Arc::new(AtomicUsize::new(0));
    let normal = {
        let (env, ok) = (env.clone(), ok.clone());
        tokio::spawn(async move {
            for _ in 0..25 {
                let r = http_client()
                    .get(env.url("/v1/clients"))
                    .header("authorization", TOKEN_A)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                ok.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        })
    };
    for a in attackers {
        // The head has ~120 bytes: at one byte per 300 ms it would take
        // ~36 s; the gateway must hang up long before it completes.
        assert!(
            a.await.unwrap(),
            "a slowloris connection got its whole head through"
        );
    }
    normal.await.unwrap();
    assert_eq!(ok.load(Ordering::Relaxed), 25);
    assert!(
        env.sandbox.recorded().len() == 25,
        "only the normal requests reached the upstream"
    );
    let m = env.metrics().await;
    let dropped = metric_value(&m, "cubegate_slow_clients_dropped_total", &[]) - dropped_before;
    assert!(dropped >= 1.0, "slowloris drops not counted: {dropped}");
}

#[tokio::test]
async fn stalled_body_gets_408_at_the_body_idle_timeout_and_is_not_forwarded() {
    let env = TestEnv::with(slow_opts("")).await;
    let mut s = TcpStream::connect(env.gw.addr()).await.unwrap();
    let head = format!(
        "POST /v1/clients HTTP/1.1\r\nhost: x\r\nauthorization: {TOKEN_A}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"type\":\"per"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the gateway never answered the stalled body")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"type\":\"request_timeout\""), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert_no_canary("408 body", &text);
    assert!(env.recorded().is_empty(), "a partial body was forwarded");
}

#[tokio::test]
async fn connections_over_the_limit_wait_and_are_served_when_a_slot_frees() {
    let env = TestEnv::with(slow_opts("max_connections = 2")).await;
    // Two idle connections take both slots...
    let a = TcpStream::connect(env.gw.addr()).await.unwrap();
    let b = TcpStream::connect(env.gw.addr()).await.unwrap();
    // ...a third request waits until the header timeout frees them.
    let r = env.get(TOKEN_A, "/v1/clients").await;
    assert_eq!(r.status, 200, "{}", r.text);
    // It was served only after a slot was freed: one of the idle
    // connections had already been hung up on (without the limit it
    // would have been served at once, both idle ones still open).
    let hung_up = |s: &TcpStream| !matches!(s.try_read(&mut [0u8; 64]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(
        hung_up(&a) || hung_up(&b),
        "served while both slots were still held"
    );
    drop((a, b));
}

/// One upstream slot, a 500 ms write stall limit, and the next API answer
/// padded to `bytes`.
async fn one_slot_and_a_large_answer(bytes: usize) -> TestEnv {
    let env = TestEnv::with(Opts {
        listener: "write_stall_timeout_ms = 500\n".into(),
        upstream: "connect_timeout_ms = 2000\nresponse_timeout_ms = 10000\nmax_connections = 1\n"
            .into(),
        ..Opts::default()
    })
    .await;
    env.sandbox
        .faults()
        .set_times(cubegate::sandbox::FaultMode::LargeBody { bytes }, 1);
    env
}

/// After the stalled reader's exchange took the only slot: the next caller
/// is answered (not 503 after the response timeout). That the stalled
/// connection was closed, each test checks itself (the drop counter is
/// process-wide and the two tests run side by side).
async fn next_caller_gets_the_slot(env: &TestEnv) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = env.get(TOKEN_A, "/v1/clients").await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// A client that asks for a large response and then stops reading is
/// dropped at the write stall timeout, and the upstream exchange slot its
/// response held goes to the next caller. With one slot and no stall limit,
/// that caller would wait out the response timeout and get 503.
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_frees_its_upstream_slot() {
    const BIG: usize = 32 << 20;
    let env = one_slot_and_a_large_answer(BIG).await;
    // A small receive buffer, and nothing read: the gateway's writes stall.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut slow = sock.connect(env.gw.addr()).await.unwrap();
    let head = format!("GET /v1/clients HTTP/1.1\r\nhost: x\r\nauthorization: {TOKEN_A}\r\n\r\n");
    slow.write_all(head.as_bytes()).await.unwrap();
    next_caller_gets_the_slot(&env).await;

    // What reached the slow client before the drop, then the end: never the
    // whole body.
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the slow client's connection stays open");
    assert!(got < BIG, "{got} bytes: the whole body went through");
}

/// The same over HTTP/2, where the socket never stalls: the client keeps
/// reading frames and answering pings but grants no flow-control window for
/// the stream, so hyper stops asking the response for more. The connection
/// is dropped at the stall timeout and the upstream slot goes to the next
/// caller.
#[tokio::test]
async fn an_http2_client_that_withholds_window_is_dropped_and_frees_its_upstream_slot() {
    let env = one_slot_and_a_large_answer(8 << 20).await;
    let tcp = TcpStream::connect(env.gw.addr()).await.unwrap();
    let (mut h2c, connection) = h2::client::handshake(tcp).await.unwrap();
    // Drives the connection (reads frames, answers pings) until dropped.
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let req = http::Request::get(format!("http://{}/v1/clients", env.gw.addr()))
        .header("authorization", TOKEN_A)
        .body(())
        .unwrap();
    let (answer, _) = h2c.send_request(req, true).unwrap();
    let resp = answer.await.unwrap();
    assert_eq!(resp.status(), 200);
    // Never read: the received bytes are never released, so no
    // WINDOW_UPDATE goes out and the server runs out of window.
    let _body = resp.into_body();
    next_caller_gets_the_slot(&env).await;
    // The gateway closed the connection: the driver ends.
    assert!(
        tokio::time::timeout(Duration::from_secs(10), driver)
            .await
            .is_ok(),
        "the HTTP/2 connection stays open"
    );
}
