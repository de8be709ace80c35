//! Running wschat on the internet, over the wire: connections counted per client address (and the
//! client named by a trusted proxy), chat rate limits shared by one address's sessions, nicknames
//! that cannot impersonate, and the operations endpoints (`/metrics`, `/healthz`, `/readyz`).
//!
//! The integration harness lifts the per-address limits for every other test (all test clients
//! are 127.0.0.1); the tests here name them, so they run with the limits they are about.
#![allow(clippy::disallowed_methods)] // A program at the I/O edge: it reads the clock itself.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, TestServer, raw_connect, read_response_head, status_of, upgrade_request};
use serde_json::{Value, json};

/// A chat handshake on a raw connection, with `X-Forwarded-For: forwarded` when given; its status,
/// and the connection, kept open so that it keeps counting.
fn upgrade_from(addr: SocketAddr, forwarded: Option<&str>) -> (u16, TcpStream) {
    let mut stream = raw_connect(addr);
    let request = upgrade_request("/");
    let request = match forwarded {
        Some(client) => request.replacen("\r\n\r\n", &format!("\r\nX-Forwarded-For: {client}\r\n\r\n"), 1),
        None => request,
    };
    stream.write_all(request.as_bytes()).unwrap();
    let (head, _) = read_response_head(&mut stream);
    (status_of(&head), stream)
}

/// `GET path` on its own connection: the status and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = raw_connect(addr);
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status_of(&text), body)
}

/// Retries `attempt` until it returns true, for at most 5 s: whether it did.
fn within(mut attempt: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !attempt() {
        if start.elapsed() > Duration::from_secs(5) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

// ---- connections per address ----

#[test]
fn connections_over_the_per_address_limit_are_refused_with_429_and_logged() {
    let server = TestServer::start(&["--max-connections-per-ip", "2"]);
    let first = Client::connect(&server);
    let _second = Client::connect(&server);
    let (status, _refused) = upgrade_from(server.addr, None);
    assert_eq!(status, 429);
    assert!(
        server
            .wait_for_log("refusing 127.0.0.1", Duration::from_secs(5))
            .is_some(),
        "no log line for the refusal"
    );
    // The page is a connection too: refused alike while the address holds its two.
    assert_eq!(get(server.addr, "/").0, 429);

    // A closed connection gives its slot back.
    first.close();
    assert!(
        within(|| upgrade_from(server.addr, None).0 == 101),
        "a slot freed by a close"
    );
}

#[test]
fn x_forwarded_for_names_the_client_only_from_a_trusted_proxy() {
    // From a trusted proxy, each forwarded client counts for itself.
    let trusting = TestServer::start(&["--max-connections-per-ip", "1", "--trusted-proxy", "127.0.0.1"]);
    let (status, _a) = upgrade_from(trusting.addr, Some("192.0.2.1"));
    assert_eq!(status, 101, "first client behind the proxy");
    let (status, _b) = upgrade_from(trusting.addr, Some("192.0.2.2"));
    assert_eq!(status, 101, "second client behind the proxy");
    let (status, _a_again) = upgrade_from(trusting.addr, Some("192.0.2.1"));
    assert_eq!(status, 429, "the first client's second connection");
    assert!(
        trusting
            .wait_for_log("192.0.2.1 via 127.0.0.1:", Duration::from_secs(5))
            .is_some(),
        "the log names the client and the proxy"
    );

    // From any other peer the header is the client's own claim, and ignored: both count as
    // 127.0.0.1.
    let wary = TestServer::start(&["--max-connections-per-ip", "1", "--trusted-proxy", "192.0.2.254"]);
    let (status, _a) = upgrade_from(wary.addr, Some("192.0.2.1"));
    assert_eq!(status, 101);
    let (status, _b) = upgrade_from(wary.addr, Some("192.0.2.2"));
    assert_eq!(status, 429, "a forged X-Forwarded-For does not buy a second slot");
}

#[test]
fn chat_rate_limit_is_shared_by_the_sessions_of_one_address() {
    // Each session alone could send 10; the address may send 4 in all (every message counts, a
    // join too).
    let server = TestServer::start(&[
        "--rate-limit",
        "0.001",
        "--rate-burst",
        "10",
        "--ip-rate-limit",
        "0.001",
        "--ip-rate-burst",
        "4",
    ]);
    let mut one = Client::connect(&server);
    let mut other = Client::connect(&server);
    // In another room, so that each reads only its own answers; the budget is the address's.
    other.send("join", json!("elsewhere"));
    other.skip_to("welcome");
    one.post("1");
    other.post("2");
    one.post("3");
    other.send("message", json!("4"));
    other.expect_error("rate_limited");
    one.send("message", json!("5"));
    one.expect_error("rate_limited");
}

// ---- nicknames ----

#[test]
fn look_alikes_of_a_taken_nickname_are_taken_over_the_wire() {
    let server = TestServer::start(&[]);
    let mut alice = Client::connect(&server);
    let mut mallory = Client::connect(&server);
    alice.send("nickname", json!("alice"));
    alice.skip_to("renamed");
    // Upper case, full-width letters, a variation selector.
    for look_alike in ["ALICE", "ａｌｉｃｅ", "alice\u{fe0f}"] {
        mallory.send("nickname", json!(look_alike));
        mallory.expect_error("nickname_taken");
    }
}

#[test]
fn invisible_and_direction_changing_characters_are_refused_over_the_wire() {
    let server = TestServer::start(&[]);
    let mut client = Client::connect(&server);
    // Zero-width space and joiner, right-to-left override, isolate, byte-order mark.
    for hostile in [
        "al\u{200b}ice",
        "al\u{200d}ice",
        "\u{202e}ecila",
        "bob\u{2066}",
        "\u{feff}eve",
    ] {
        client.send("nickname", json!(hostile));
        client.expect_error("bad_payload");
        client.send("join", json!(hostile));
        client.expect_error("bad_payload");
    }
}

// ---- health, readiness, metrics ----

#[test]
fn healthz_and_readyz_answer_200_while_the_store_works() {
    let server = TestServer::start(&[]);
    assert_eq!(get(server.addr, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(get(server.addr, "/readyz"), (200, "ready\n".to_owned()));
}

#[test]
fn metrics_listen_serves_metrics_there_and_not_on_the_public_port() {
    let server = TestServer::start(&["--metrics-listen", "127.0.0.1:0"]);
    let line = server
        .wait_for_log("metrics on http://", Duration::from_secs(5))
        .expect("the metrics address in the log");
    let metrics_addr: SocketAddr = line
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.trim().strip_suffix("/metrics"))
        .and_then(|addr| addr.parse().ok())
        .expect("an address");
    assert_eq!(get(server.addr, "/metrics").0, 404, "the public port");
    let (status, body) = get(metrics_addr, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE wschat_connections gauge"), "{body}");
    // The metrics port serves the probes and nothing else.
    assert_eq!(get(metrics_addr, "/healthz").0, 200);
    assert_eq!(get(metrics_addr, "/").0, 404);
}

/// One scrape: every sample (name with its labels, as written) and its value.
type Scrape = BTreeMap<String, f64>;

/// `name{a="1",b="2"}` with its labels in name order, so that two readers' series compare equal.
fn series(name: &str, mut labels: Vec<String>) -> String {
    labels.sort();
    if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{}}}", labels.join(","))
    }
}

/// Reads an exposition with a minimal reader of sample lines, enough for wschat's own label values
/// (no commas or quotes in them); the ignored test below has the real parser judge the same text.
fn read_samples(text: &str) -> Scrape {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (written, value) = line.rsplit_once(' ').expect("a sample is a series and a value");
            let (name, labels) = match written.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("labels end with }");
                    (name, labels.split(',').map(str::to_owned).collect())
                }
                None => (written, Vec::new()),
            };
            (series(name, labels), value.parse().expect("a number"))
        })
        .collect()
}

/// Reads an exposition with Python's `prometheus_client` (through tests/metrics/parse.py, which
/// also holds it to the format's strict grammar), into the same shape as [`read_samples`].
fn read_with_prometheus_client(python: &str, text: &str) -> Scrape {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/metrics/parse.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start parse.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().expect("parse.py ran");
    assert!(output.status.success(), "parse.py refused the scrape:\n{text}");
    let families: Vec<Value> = serde_json::from_slice(&output.stdout).expect("parse.py prints JSON");
    families
        .iter()
        .flat_map(|family| family["samples"].as_array().expect("samples").iter())
        .map(|sample| {
            let labels = sample["labels"].as_object().expect("labels");
            let pairs = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let name = sample["name"].as_str().expect("name");
            (
                series(name, pairs),
                sample["value"]
                    .as_str()
                    .expect("value")
                    .parse()
                    .expect("a number"),
            )
        })
        .collect()
}

/// Opens a connection, chats, closes: checks after each step that the figures moved.
fn metrics_move_with_traffic(read: impl Fn(&str) -> Scrape) {
    let server = TestServer::start(&[]);
    let scrape = || read(&get(server.addr, "/metrics").1);
    let value = |scrape: &Scrape, series: &str| scrape.get(series).copied().unwrap_or(0.0);
    let open = r#"wschat_connections{phase="websocket",transport="tcp"}"#;
    let received = r#"wschat_messages_received_total{protocol="websocket"}"#;
    let accepted = "wschat_chat_messages_accepted_total";
    // The test client's Close has no status code: counted as 1005 (RFC 6455 §7.1.5).
    let closed_by_client = r#"wschat_websocket_closes_total{by="client",code="1005"}"#;

    let before = scrape();
    assert_eq!(value(&before, open), 0.0);
    assert_eq!(value(&before, "wschat_store_up"), 1.0);

    let mut alice = Client::connect(&server);
    let mut bob = Client::connect(&server);
    let connected = scrape();
    assert_eq!(value(&connected, open), 2.0, "two WebSockets open");
    assert_eq!(value(&connected, "wschat_chat_sessions"), 2.0);

    alice.post("hello");
    bob.read_until_message(&alice.nickname(), "hello");
    bob.post("hi");
    let chatted = scrape();
    assert_eq!(value(&chatted, received) - value(&connected, received), 2.0);
    assert_eq!(value(&chatted, accepted) - value(&connected, accepted), 2.0);
    assert_eq!(value(&chatted, "wschat_store_commit_seconds_count"), 2.0);
    let bytes = r#"wschat_received_bytes_total{protocol="websocket"}"#;
    assert!(value(&chatted, bytes) > value(&connected, bytes));

    alice.close();
    bob.close();
    let mut last = Scrape::new();
    let counted = within(|| {
        last = scrape();
        value(&last, open) == 0.0 && value(&last, closed_by_client) == 2.0
    });
    assert!(counted, "both closes counted: {last:#?}");
}

#[test]
fn metrics_move_as_connections_open_messages_flow_and_closes_happen() {
    metrics_move_with_traffic(read_samples);
}

/// Run by tests/metrics/run.sh, which makes the virtualenv and names its Python.
#[test]
#[ignore = "needs Python's prometheus_client: run by tests/metrics/run.sh"]
fn a_live_scrape_is_read_by_prometheus_client_and_moves_with_traffic() {
    let python = std::env::var("WSCHAT_METRICS_PYTHON")
        .expect("WSCHAT_METRICS_PYTHON names the Python that has prometheus_client (tests/metrics/run.sh)");
    metrics_move_with_traffic(|text| {
        let parsed = read_with_prometheus_client(&python, text);
        assert_eq!(parsed, read_samples(text), "the two readers disagree");
        parsed
    });
}
