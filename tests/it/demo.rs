//! `cubegate demo`, the README's first command: it seeds a client and prints
//! a curl that updates it through the gateway; that curl, sent as printed,
//! answers 200 with the client's `type` stripped.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::http_client;

/// The printed curl's URL, token and body, read from the demo's banner.
fn parse_curl(lines: &[String]) -> Option<(String, String, String)> {
    let find = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::to_string))
    };
    let url = find("curl -s -X POST ")?
        .split_whitespace()
        .next()?
        .to_string();
    let token = find("-H 'Authorization: ")?
        .trim_end_matches(['\'', ' ', '\\'])
        .to_string();
    let body = find("-d '")?
        .trim_end_matches(" -i")
        .trim_end_matches('\'')
        .to_string();
    Some((url, token, body))
}

#[tokio::test]
async fn the_demos_printed_curl_updates_the_seeded_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cubegate"))
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Keep reading for the child's whole life, so its later prints never
    // meet a closed pipe.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("-d '")) {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => lines.push(l),
            Err(_) => break,
        }
    }
    let text = lines.join("\n");
    let parsed = parse_curl(&lines);
    let resp = match &parsed {
        Some((url, token, body)) if !url.contains('<') => Some(
            http_client()
                .post(url)
                .header("authorization", token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap(),
        ),
        _ => None,
    };
    let _ = child.kill();
    let _ = child.wait();
    let resp = resp.unwrap_or_else(|| panic!("the demo printed no usable curl:\n{text}"));
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("x-cubegate-stripped")
            .and_then(|v| v.to_str().ok()),
        Some("/type")
    );
}
