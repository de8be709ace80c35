//! The chat over every transport, on the real binary: WebSocket, Server-Sent Events with
//! `POST /send`, and long-polling with `POST /send`, alone and talking to each other.
#![allow(clippy::disallowed_methods)] // A program at the I/O edge: it reads the clock itself.

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// How long any one wait may take.
const WAIT: Duration = Duration::from_secs(10);

/// A chat client, whatever carries it.
trait Chatter {
    fn send(&mut self, envelope: Value);
    /// The next event, within [`WAIT`].
    fn next(&mut self) -> Value;
    /// Waits for the `welcome`.
    fn greeted(&mut self) {
        next_of(self, "welcome");
    }
}

/// The WebSocket client of tests/chat.rs.
impl Chatter for Client {
    fn send(&mut self, envelope: Value) {
        Client::send(
            self,
            envelope["type"].as_str().unwrap(),
            envelope["payload"].clone(),
        );
    }

    fn next(&mut self) -> Value {
        self.recv()
    }

    /// [`Client::connect`] already read it.
    fn greeted(&mut self) {}
}

/// One HTTP/1.1 connection, kept alive, for requests whose answers have a `Content-Length`.
struct Http {
    reader: BufReader<TcpStream>,
}

impl Http {
    fn connect(server: &TestServer) -> Self {
        let stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Self {
            reader: BufReader::new(stream),
        }
    }

    /// Sends a request and reads its answer: status and body.
    fn request(&mut self, method: &str, target: &str, body: &str) -> (u16, String) {
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.reader.get_mut().write_all(request.as_bytes()).unwrap();
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status = status_line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        (status, String::from_utf8(body).unwrap())
    }
}

/// An event stream for receiving, and `POST /send` on another connection for sending.
struct SseClient {
    stream: BufReader<TcpStream>,
    sid: String,
    sender: Http,
    pending: VecDeque<Value>,
}

impl SseClient {
    fn connect(server: &TestServer) -> Self {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
            .write_all(b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut client = Self {
            stream: BufReader::new(stream),
            sid: String::new(),
            sender: Http::connect(server),
            pending: VecDeque::new(),
        };
        let mut line = String::new();
        while line != "\r\n" {
            line.clear();
            client.stream.read_line(&mut line).unwrap();
        }
        // The first event names the session.
        let (name, data) = client.event();
        assert_eq!(name.as_deref(), Some("session"));
        client.sid = data["sid"].as_str().unwrap().to_owned();
        client
    }

    /// Reads one chunk of the chunked body.
    fn chunk(&mut self) -> String {
        let mut size = String::new();
        self.stream.read_line(&mut size).unwrap();
        let len = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut data = vec![0; len + 2];
        self.stream.read_exact(&mut data).unwrap();
        data.truncate(len);
        String::from_utf8(data).unwrap()
    }

    /// The next event with data: its name, and the data as JSON.
    fn event(&mut self) -> (Option<String>, Value) {
        loop {
            let chunk = self.chunk();
            for block in chunk.split("\n\n") {
                let mut name = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        name = Some(value.to_owned());
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(value).unwrap());
                    }
                }
                if let Some(data) = data {
                    return (name, data);
                }
            }
        }
    }
}

impl Chatter for SseClient {
    fn send(&mut self, envelope: Value) {
        let (status, body) =
            self.sender
                .request("POST", &format!("/send?sid={}", self.sid), &envelope.to_string());
        assert_eq!(status, 204, "{body}");
    }

    fn next(&mut self) -> Value {
        if let Some(event) = self.pending.pop_front() {
            return event;
        }
        self.event().1
    }
}

/// Long-polls for receiving, `POST /send` for sending.
struct PollClient {
    poller: Http,
    sender: Http,
    sid: String,
    since: usize,
    pending: VecDeque<Value>,
}

impl PollClient {
    fn connect(server: &TestServer) -> Self {
        let mut poller = Http::connect(server);
        let (status, body) = poller.request("GET", "/poll", "");
        assert_eq!(status, 200);
        let mut answer: VecDeque<Value> = serde_json::from_str::<Vec<Value>>(&body).unwrap().into();
        let session = answer.pop_front().unwrap();
        assert_eq!(session["type"], "session");
        Self {
            poller,
            sender: Http::connect(server),
            sid: session["sid"].as_str().unwrap().to_owned(),
            since: answer.len(),
            pending: answer,
        }
    }
}

impl Chatter for PollClient {
    fn send(&mut self, envelope: Value) {
        let (status, body) =
            self.sender
                .request("POST", &format!("/send?sid={}", self.sid), &envelope.to_string());
        assert_eq!(status, 204, "{body}");
    }

    fn next(&mut self) -> Value {
        let start = Instant::now();
        while self.pending.is_empty() {
            assert!(start.elapsed() < WAIT, "nothing arrived");
            let (status, body) =
                self.poller
                    .request("GET", &format!("/poll?sid={}&since={}", self.sid, self.since), "");
            assert_eq!(status, 200, "{body}");
            let events: Vec<Value> = serde_json::from_str(&body).unwrap();
            // The n-th event of the answer to `since=N` is event N+n.
            self.since += events.len();
            self.pending.extend(events);
        }
        self.pending.pop_front().unwrap()
    }
}

/// Reads events until one of type `kind`.
fn next_of(client: &mut (impl Chatter + ?Sized), kind: &str) -> Value {
    loop {
        let event = client.next();
        if event["type"] == kind {
            return event["payload"].clone();
        }
    }
}

/// Three people, one on each transport, each say `count` things: everybody gets every other
/// person's messages once, in the order the server accepted them, and their own acks in order.
fn talk(clients: &mut [Box<dyn Chatter>], count: usize) {
    let names: Vec<String> = (0..clients.len()).map(|i| format!("person{i}")).collect();
    for (client, name) in clients.iter_mut().zip(&names) {
        client.greeted();
        client.send(json!({"type": "nickname", "payload": name}));
        next_of(client.as_mut(), "renamed");
    }
    let mut acked: Vec<Vec<u64>> = vec![Vec::new(); clients.len()];
    let mut seen: Vec<Vec<(u64, String)>> = vec![Vec::new(); clients.len()];
    for round in 0..count {
        for (i, client) in clients.iter_mut().enumerate() {
            client.send(json!({"type": "message", "payload": {"text": format!("{} says {round}", names[i]), "key": format!("k{i}-{round}")}}));
        }
    }
    let expected_others = count * (clients.len() - 1);
    for (i, client) in clients.iter_mut().enumerate() {
        while acked[i].len() < count || seen[i].len() < expected_others {
            let event = client.next();
            match event["type"].as_str().unwrap() {
                "ack" => acked[i].push(event["payload"]["id"].as_u64().unwrap()),
                "message" => seen[i].push((
                    event["payload"]["id"].as_u64().unwrap(),
                    event["payload"]["text"].as_str().unwrap().to_owned(),
                )),
                _ => {}
            }
        }
    }
    for i in 0..clients.len() {
        assert!(
            acked[i].windows(2).all(|w| w[0] < w[1]),
            "acks in order: {:?}",
            acked[i]
        );
        let ids: Vec<u64> = seen[i].iter().map(|(id, _)| *id).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "each once, in order: {ids:?}"
        );
        assert!(
            seen[i]
                .iter()
                .all(|(_, text)| !text.starts_with(&format!("{} ", names[i]))),
            "not one's own"
        );
        assert_eq!(seen[i].len(), expected_others);
    }
}

#[test]
fn a_websocket_an_event_stream_and_a_poller_talk_to_each_other() {
    let server = TestServer::start(&["--rate-limit", "1000", "--rate-burst", "1000"]);
    let mut clients: Vec<Box<dyn Chatter>> = vec![
        Box::new(Client::connect(&server)),
        Box::new(SseClient::connect(&server)),
        Box::new(PollClient::connect(&server)),
    ];
    talk(&mut clients, 20);
}

#[test]
fn event_streams_alone_carry_the_chat() {
    let server = TestServer::start(&["--rate-limit", "1000", "--rate-burst", "1000"]);
    let mut clients: Vec<Box<dyn Chatter>> = (0..3)
        .map(|_| Box::new(SseClient::connect(&server)) as Box<dyn Chatter>)
        .collect();
    talk(&mut clients, 15);
}

#[test]
fn long_polls_alone_carry_the_chat() {
    let server = TestServer::start(&["--rate-limit", "1000", "--rate-burst", "1000"]);
    let mut clients: Vec<Box<dyn Chatter>> = (0..3)
        .map(|_| Box::new(PollClient::connect(&server)) as Box<dyn Chatter>)
        .collect();
    talk(&mut clients, 15);
}

#[test]
#[ignore = "needs a Redis server: tests/redis/run.sh"]
fn every_transport_on_a_different_node_through_redis() {
    let url = std::env::var("WSCHAT_REDIS_URL").expect("WSCHAT_REDIS_URL (run tests/redis/run.sh)");
    // A database of its own: the other Redis tests use their own key prefixes in database 0.
    let url = format!("{url}/3");
    let node = |name: &str| {
        TestServer::start(&[
            "--rate-limit",
            "1000",
            "--rate-burst",
            "1000",
            "--redis",
            &url,
            "--node",
            name,
        ])
    };
    let (a, b, c) = (node("ws"), node("sse"), node("poll"));
    let mut clients: Vec<Box<dyn Chatter>> = vec![
        Box::new(Client::connect(&a)),
        Box::new(SseClient::connect(&b)),
        Box::new(PollClient::connect(&c)),
    ];
    talk(&mut clients, 20);
}
