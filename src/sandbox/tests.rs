//! Black-box tests of the sandbox over real sockets: reqwest over TLS for the
//! API, raw TCP on a plain listener where the exact bytes matter (faults).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const KEY: &str = "test_sandbox_key_1";

async fn start(opts: SandboxOptions) -> Sandbox {
    Sandbox::start(opts).await.unwrap()
}

fn client_for(sb: &Sandbox, h1_only: bool) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = reqwest::Certificate::from_der(sb.ca_cert_der().as_ref()).unwrap();
    let mut b = reqwest::Client::builder().tls_certs_only([cert]);
    if h1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

async fn send(
    c: &reqwest::Client,
    sb: &Sandbox,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut rb = c.request(method, format!("{}{path}", sb.base_url()));
    if let Some(k) = key {
        rb = rb.header("Authorization", k);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, v)
}

fn person(first: &str, last: &str) -> Value {
    json!({
        "type": "person",
        "email": format!("{first}@example.com"),
        "personDetails": {"firstName": first, "lastName": last, "dob": "1990-01-01"},
        "metadata": {"source": "tests"}
    })
}

/// Sends raw HTTP/1.1 bytes to a plain-HTTP sandbox and reads until the
/// peer closes.
async fn raw_exchange(sb: &Sandbox, req: &str) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(sb.addr()).await?;
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("timed out"))??;
    Ok(out)
}

fn get_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {KEY}\r\n\r\n")
}

#[tokio::test]
async fn client_lifecycle_over_tls_matches_complycube() {
    let sb = start(SandboxOptions::default()).await;
    let c = client_for(&sb, false);
    use reqwest::Method as M;

    // create
    let (st, created) = send(
        &c,
        &sb,
        M::POST,
        "/v1/clients",
        Some(KEY),
        Some(person("Ada", "Lovelace")),
    )
    .await;
    assert_eq!(st, 200);
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 24);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(created["entityName"], "Ada Lovelace");
    assert_eq!(created["personDetails"]["dob"], "1990-01-01");
    let created_at = created["createdAt"].as_str().unwrap();
    assert_eq!(created_at.len(), "2020-01-04T17:24:29.146Z".len());
    assert!(created_at.ends_with('Z') && created_at.as_bytes()[19] == b'.');

    // get, with and without trailing slash
    let (st, got) = send(
        &c,
        &sb,
        M::GET,
        &format!("/v1/clients/{id}/"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!((st, &got), (StatusCode::OK, &created));

    // update merges nested objects; same type ignored
    let (st, upd) = send(
        &c,
        &sb,
        M::POST,
        &format!("/v1/clients/{id}"),
        Some(KEY),
        Some(json!({"type": "person", "personDetails": {"lastName": "King"}, "mobile": "+44 1"})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(upd["personDetails"]["firstName"], "Ada");
    assert_eq!(upd["personDetails"]["lastName"], "King");
    assert_eq!(upd["personDetails"]["dob"], "1990-01-01");
    assert_eq!(upd["entityName"], "Ada King");
    assert_eq!(upd["createdAt"], created["createdAt"]);

    // type can never change
    let (st, err) = send(
        &c,
        &sb,
        M::POST,
        &format!("/v1/clients/{id}"),
        Some(KEY),
        Some(json!({"type": "company"})),
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(err["type"], "invalid_request");
    assert_eq!(err["param"], "type");
    let (_, still) = send(
        &c,
        &sb,
        M::GET,
        &format!("/v1/clients/{id}"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(still["type"], "person");

    // list: newest first, envelope, pagination, dotted filters
    for (f, l) in [("Bob", "One"), ("Cy", "Two"), ("Bob", "Three")] {
        send(
            &c,
            &sb,
            M::POST,
            "/v1/clients/",
            Some(KEY),
            Some(person(f, l)),
        )
        .await;
    }
    let (st, page) = send(
        &c,
        &sb,
        M::GET,
        "/v1/clients?page=2&pageSize=3",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        (page["page"].as_u64(), page["pageSize"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(
        (page["totalItems"].as_u64(), page["pages"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], id.as_str(), "oldest comes last");
    let (_, bobs) = send(
        &c,
        &sb,
        M::GET,
        "/v1/clients?personDetails.firstName=Bob",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(bobs["totalItems"], 2);
    assert_eq!(bobs["items"][0]["personDetails"]["lastName"], "Three");
    let (_, by_mail) = send(
        &c,
        &sb,
        M::GET,
        "/v1/clients?email=Cy%40example.com&metadata.source=tests",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(by_mail["totalItems"], 1);

    // delete: 204, empty body, then 404 in ComplyCube's words
    let resp = c
        .delete(format!("{}/v1/clients/{id}", sb.base_url()))
        .header("Authorization", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.bytes().await.unwrap().is_empty());
    let (st, nf) = send(
        &c,
        &sb,
        M::GET,
        &format!("/v1/clients/{id}"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(
        nf,
        json!({"type": "resource_not_found", "message": format!("Invalid client id '{id}'")})
    );

    // create validation
    let (st, e) = send(
        &c,
        &sb,
        M::POST,
        "/v1/clients",
        Some(KEY),
        Some(json!({"type": "person", "email": "x@y.z"})),
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(e["param"], "personDetails");
    sb.shutdown().await;
}

#[tokio::test]
async fn authorization_must_be_exactly_one_accepted_raw_key() {
    let sb = start(SandboxOptions {
        keys: vec![KEY.to_string()],
        ..Default::default()
    })
    .await;
    let c = client_for(&sb, false);
    let url = format!("{}/v1/clients", sb.base_url());
    let unauthorized =
        json!({"type": "unauthorized", "message": "The 'Authorization' header is invalid"});
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("missing", vec![]),
        ("wrong", vec!["test_other_key"]),
        ("bearer", vec!["Bearer test_sandbox_key_1"]),
        ("duplicate", vec![KEY, KEY]),
    ];
    for (name, values) in cases {
        let mut headers = reqwest::header::HeaderMap::new();
        for v in values {
            headers.append("authorization", v.parse().unwrap());
        }
        let resp = c.get(&url).headers(headers).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{name}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/json; charset=utf-8"
        );
        assert_eq!(resp.json::<Value>().await.unwrap(), unauthorized, "{name}");
    }
    let resp = c
        .get(&url)
        .header("authorization", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // every API request is recorded, the rejected ones too
    let recs = sb.recorded();
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[3].header_values("authorization"), vec![KEY, KEY]);

    // with no key list, any test_/live_ key with >= 4 more chars is accepted
    let open = start(SandboxOptions::default()).await;
    let c = client_for(&open, false);
    for (k, want) in [
        ("test_abcd", 200),
        ("live_abcd", 200),
        ("test_abc", 401),
        ("prod_abcd", 401),
    ] {
        let (st, _) = send(
            &c,
            &open,
            reqwest::Method::GET,
            "/v1/clients",
            Some(k),
            None,
        )
        .await;
        assert_eq!(st.as_u16(), want, "{k}");
    }
}

#[tokio::test]
async fn keys_never_see_each_others_data() {
    let sb = start(SandboxOptions::default()).await;
    let c = client_for(&sb, false);
    use reqwest::Method as M;
    let (_, made) = send(
        &c,
        &sb,
        M::POST,
        "/v1/clients",
        Some("test_aaaa"),
        Some(person("T", "Est")),
    )
    .await;
    let id = made["id"].as_str().unwrap();
    for other in ["live_aaaa", "test_bbbb"] {
        let (st, _) = send(
            &c,
            &sb,
            M::GET,
            &format!("/v1/clients/{id}"),
            Some(other),
            None,
        )
        .await;
        assert_eq!(st, 404, "{other}");
        let (_, list) = send(&c, &sb, M::GET, "/v1/clients", Some(other), None).await;
        assert_eq!(list["totalItems"], 0, "{other}");
        let (st, _) = send(
            &c,
            &sb,
            M::DELETE,
            &format!("/v1/clients/{id}"),
            Some(other),
            None,
        )
        .await;
        assert_eq!(st, 404, "{other}");
        let (st, _) = send(
            &c,
            &sb,
            M::POST,
            "/v1/addresses",
            Some(other),
            Some(json!({"clientId": id, "line": "1", "city": "c", "country": "GB"})),
        )
        .await;
        assert_eq!(st, 404, "{other}");
    }
    let (st, _) = send(
        &c,
        &sb,
        M::GET,
        &format!("/v1/clients/{id}"),
        Some("test_aaaa"),
        None,
    )
    .await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn negotiates_h2_over_tls_and_keeps_h1_alive() {
    let sb = start(SandboxOptions::default()).await;
    let h2 = client_for(&sb, false);
    let resp = h2
        .get(format!("{}/v1/accountInfo", sb.base_url()))
        .header("authorization", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);

    let h1 = client_for(&sb, true);
    for _ in 0..2 {
        let resp = h1
            .get(format!("{}/v1/static/screeningLists", sb.base_url()))
            .header("authorization", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_11);
        let body = resp.bytes().await.unwrap();
        assert!(serde_json::from_slice::<Vec<String>>(&body).is_ok());
    }
    // Plain HTTP/1.1 keep-alive: two requests on one socket, both answered.
    let plain = start(SandboxOptions {
        tls: false,
        ..Default::default()
    })
    .await;
    let mut s = TcpStream::connect(plain.addr()).await.unwrap();
    let two = format!(
        "{}{}",
        get_req("/v1/accountInfo"),
        get_req("/v1/accountInfo")
    );
    s.write_all(two.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = String::new();
    while got.matches("HTTP/1.1 200").count() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.contains("content-type: application/json; charset=utf-8"));
}

#[tokio::test]
async fn records_exact_headers_and_body_and_serves_control_endpoints() {
    let sb = start(SandboxOptions::default()).await;
    let c = client_for(&sb, true);
    c.post(format!("{}/v1/clients?x=1", sb.base_url()))
        .header("authorization", KEY)
        .header("x-trace", "abc")
        .header("x-trace", "def")
        .header("content-type", "application/json")
        .body(r#"{"type":"company"}"#)
        .send()
        .await
        .unwrap();
    let recs = sb.recorded();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.query.as_deref()),
        ("POST", "/v1/clients", Some("x=1"))
    );
    assert_eq!(r.header_values("authorization"), vec![KEY]);
    assert_eq!(r.header_values("x-trace"), vec!["abc", "def"]);
    assert!(
        r.headers
            .iter()
            .all(|(n, _)| n.chars().all(|ch| !ch.is_ascii_uppercase()))
    );
    assert_eq!(r.body, br#"{"type":"company"}"#);
    assert!(
        !format!("{r:?}").contains(KEY),
        "Debug must not show the key"
    );

    // control endpoints need no key and are not recorded
    let base = sb.base_url();
    let list: Value = c
        .get(format!("{base}/__sandbox/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["body"], r#"{"type":"company"}"#);
    assert_eq!(list[0]["headers"][0][0], "authorization");
    let health = c
        .get(format!("{base}/__sandbox/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let set = c
        .post(format!("{base}/__sandbox/faults"))
        .body(r#"{"mode":"status","status":503,"times":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let (st, body) = send(
        &c,
        &sb,
        reqwest::Method::GET,
        "/v1/accountInfo",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(
        (st.as_u16(), body["type"].as_str()),
        (503, Some("service_unavailable"))
    );
    let (st, _) = send(
        &c,
        &sb,
        reqwest::Method::GET,
        "/v1/accountInfo",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(st, 200, "a counted fault expires");
    let del = c
        .delete(format!("{base}/__sandbox/requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    assert!(sb.recorded().is_empty());
    assert_eq!(sb.faults().api_hits(), 3);
}

#[tokio::test]
async fn status_and_delay_faults() {
    let sb = start(SandboxOptions::default()).await;
    let c = client_for(&sb, false);
    sb.faults().set(FaultMode::Status {
        status: 429,
        retry_after: Some(7),
    });
    for _ in 0..2 {
        let resp = c
            .get(format!("{}/v1/clients", sb.base_url()))
            .header("authorization", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "7");
        let b: Value = resp.json().await.unwrap();
        assert_eq!(b["type"], "rate_limit_exceeded");
        assert!(b["message"].is_string());
    }
    sb.faults().set(FaultMode::Delay { ms: 3_000 });
    let slow = c
        .get(format!("{}/v1/clients", sb.base_url()))
        .header("authorization", KEY)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(slow.unwrap_err().is_timeout());
    sb.faults().clear();
    let (st, _) = send(
        &c,
        &sb,
        reqwest::Method::GET,
        "/v1/clients",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(sb.faults().api_hits(), 4);
}

#[tokio::test]
async fn reset_fault_sends_rst_after_reading_the_request() {
    let sb = start(SandboxOptions {
        tls: false,
        ..Default::default()
    })
    .await;
    sb.faults().set_times(FaultMode::ResetBeforeResponse, 1);
    let body = r#"{"type":"person"}"#;
    let req = format!(
        "POST /v1/clients HTTP/1.1\r\nHost: x\r\nAuthorization: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let err = raw_exchange(&sb, &req).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    // the request was read in full before the reset
    assert_eq!(sb.recorded()[0].body, body.as_bytes());
    // and the next connection is served normally
    let ok = raw_exchange(
        &sb,
        &get_req("/v1/accountInfo").replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"),
    )
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&ok).starts_with("HTTP/1.1 200"));

    // over TLS, the client sees a failed request, not an answer
    let tls = start(SandboxOptions::default()).await;
    tls.faults().set(FaultMode::ResetBeforeResponse);
    let c = client_for(&tls, false);
    let r = c
        .get(format!("{}/v1/clients", tls.base_url()))
        .header("authorization", KEY)
        .send()
        .await;
    assert!(r.is_err());
}

#[tokio::test]
async fn truncated_body_fault_sends_half_of_the_announced_length() {
    let sb = start(SandboxOptions {
        tls: false,
        ..Default::default()
    })
    .await;
    sb.faults().set(FaultMode::TruncatedBody);
    let out = raw_exchange(&sb, &get_req("/v1/static/screeningLists"))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let announced: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(announced > 10);
    assert_eq!(body.len(), announced / 2);

    let tls = start(SandboxOptions::default()).await;
    tls.faults().set(FaultMode::TruncatedBody);
    for h1 in [true, false] {
        let c = client_for(&tls, h1);
        let resp = c
            .get(format!("{}/v1/accountInfo", tls.base_url()))
            .header("authorization", KEY)
            .send()
            .await
            .unwrap();
        assert!(resp.bytes().await.is_err(), "h1={h1}");
    }
}

#[tokio::test]
async fn close_after_response_fault_answers_then_closes() {
    let sb = start(SandboxOptions {
        tls: false,
        ..Default::default()
    })
    .await;
    sb.faults().set(FaultMode::CloseAfterResponse);
    // read_to_end returns only when the server closes the keep-alive socket
    let out = raw_exchange(&sb, &get_req("/v1/accountInfo"))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("connection: close"));
    assert!(text.ends_with('}'), "full body before the close");

    // h2: each answer arrives and the client transparently reconnects
    let tls = start(SandboxOptions::default()).await;
    tls.faults().set(FaultMode::CloseAfterResponse);
    let c = client_for(&tls, false);
    for _ in 0..3 {
        let (st, b) = send(
            &c,
            &tls,
            reqwest::Method::GET,
            "/v1/accountInfo",
            Some(KEY),
            None,
        )
        .await;
        assert_eq!((st.as_u16(), b["plan"].as_str()), (200, Some("sandbox")));
    }
}

#[tokio::test]
async fn recycle_fault_closes_each_connection_after_n_requests() {
    let sb = start(SandboxOptions {
        tls: false,
        ..Default::default()
    })
    .await;
    sb.faults().set(FaultMode::RecycleConnections { every: 2 });
    // Two pipelined requests: the first answer keeps the connection, the
    // second says close, and the sandbox closes (read_to_end returns).
    let two = get_req("/v1/accountInfo").repeat(2);
    let out = raw_exchange(&sb, &two).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert_eq!(text.matches("connection: close").count(), 1, "{text}");
    assert!(text.ends_with('}'), "full body before the close");
    // A new connection starts its own count.
    let out = raw_exchange(&sb, &two).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out)
            .matches("HTTP/1.1 200")
            .count(),
        2
    );

    // h2: each connection ends with a GOAWAY; the client reconnects and
    // every request is answered (none is in flight at the GOAWAY).
    let tls = start(SandboxOptions::default()).await;
    tls.faults().set(FaultMode::RefuseAfterGoaway { every: 2 });
    let c = client_for(&tls, false);
    for _ in 0..6 {
        let (st, _) = send(
            &c,
            &tls,
            reqwest::Method::GET,
            "/v1/accountInfo",
            Some(KEY),
            None,
        )
        .await;
        assert_eq!(st, 200);
    }
    assert_eq!(tls.faults().api_hits(), 6);
    assert_eq!(tls.faults().refused(), 0, "nothing sent after a GOAWAY");
}

#[tokio::test]
async fn rate_limit_answers_429_per_key_and_still_records() {
    let sb = start(SandboxOptions {
        rate_limit_per_sec: Some(2),
        ..Default::default()
    })
    .await;
    let c = client_for(&sb, false);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (st, b) = send(
            &c,
            &sb,
            reqwest::Method::GET,
            "/v1/clients",
            Some("test_aaaa"),
            None,
        )
        .await;
        if st == 429 {
            assert_eq!(b["type"], "rate_limit_exceeded");
        }
        statuses.push(st.as_u16());
    }
    // 6 requests cannot all fit in rolling 1 s windows of 2 unless each took
    // over half a second; the first two always pass.
    assert_eq!(&statuses[..2], &[200, 200]);
    assert!(statuses.contains(&429), "{statuses:?}");
    let (st, _) = send(
        &c,
        &sb,
        reqwest::Method::GET,
        "/v1/clients",
        Some("test_bbbb"),
        None,
    )
    .await;
    assert_eq!(st, 200, "another key has its own window");
    assert_eq!(sb.recorded().len(), 7);
}

#[tokio::test]
async fn other_documented_operations_answer_plausibly() {
    let sb = start(SandboxOptions::default()).await;
    let c = client_for(&sb, false);
    use reqwest::Method as M;
    let (_, cl) = send(
        &c,
        &sb,
        M::POST,
        "/v1/clients",
        Some(KEY),
        Some(person("O", "Ps")),
    )
    .await;
    let cid = cl["id"].as_str().unwrap();
    let (st, chk) = send(
        &c,
        &sb,
        M::POST,
        "/v1/checks",
        Some(KEY),
        Some(json!({"clientId": cid, "type": "standard_screening_check"})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        (chk["status"].as_str(), chk["clientId"].as_str()),
        (Some("pending"), Some(cid))
    );
    let (_, tok) = send(
        &c,
        &sb,
        M::POST,
        "/v1/tokens",
        Some(KEY),
        Some(json!({"clientId": cid, "referrer": "*://*/*"})),
    )
    .await;
    assert!(tok["token"].is_string());
    let (_, wh) = send(
        &c,
        &sb,
        M::POST,
        "/v1/webhooks",
        Some(KEY),
        Some(json!({"url": "https://x.test/h", "enabled": true, "events": ["*"]})),
    )
    .await;
    assert!(wh["secret"].is_string());
    let (_, wh2) = send(
        &c,
        &sb,
        M::GET,
        &format!("/v1/webhooks/{}", wh["id"].as_str().unwrap()),
        Some(KEY),
        None,
    )
    .await;
    assert!(wh2.get("secret").is_none(), "secret only at creation");
    // Every sandbox account has its owner (issue 20: documented fields, and
    // PHP's integration suite lists, reads and filters team members).
    let (_, lists) = send(&c, &sb, M::GET, "/v1/teamMembers", Some(KEY), None).await;
    assert_eq!(
        (
            lists["pages"].as_u64(),
            lists["items"].as_array().map(Vec::len)
        ),
        (Some(1), Some(1))
    );
    for f in ["id", "firstName", "lastName", "role", "createdAt"] {
        assert!(lists["items"][0].get(f).is_some(), "{f}");
    }
    let (st, _) = send(
        &c,
        &sb,
        M::DELETE,
        "/v1/liveVideos/5f0000000000000000000000",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(st, 404, "unknown ids are 404 everywhere (issue 20)");
    let (st, rep) = send(
        &c,
        &sb,
        M::GET,
        &format!("/v1/reports?clientId={cid}"),
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(
        (st.as_u16(), rep["contentType"].as_str()),
        (200, Some("application/pdf"))
    );
    let (st, e) = send(&c, &sb, M::GET, "/v1/not/a/route", Some(KEY), None).await;
    assert_eq!(
        (st.as_u16(), e["type"].as_str()),
        (404, Some("resource_not_found"))
    );
    let (st, _) = send(&c, &sb, M::GET, "/clients", Some(KEY), None).await;
    assert_eq!(st, 404, "only /v1 is served");
}

#[tokio::test]
async fn recording_keeps_only_the_newest_requests_up_to_the_cap() {
    let sb = start(SandboxOptions {
        tls: false,
        max_recorded: 2,
        ..Default::default()
    })
    .await;
    for p in ["/v1/a", "/v1/b", "/v1/c"] {
        let req = get_req(p).replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
        raw_exchange(&sb, &req).await.unwrap();
    }
    let paths: Vec<String> = sb.recorded().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/v1/b", "/v1/c"]);
    assert_eq!(sb.faults().api_hits(), 3);
}
