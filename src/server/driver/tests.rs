//! The loop's rules — phases, keep-alive, backpressure, timers, the hub's outputs, shutdown — one
//! test per rule, without a process: the driver runs over in-memory pipes and a clock the test
//! moves by hand.
//!
//! The client side of each pipe is our own protocol core in the client role, the way quinn's tests
//! pair two endpoints: a [`Client`] writes bytes into its pipe, and decodes what the server wrote.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;

use super::*;
use crate::config::Config;
use crate::conn::Phase;
use crate::store::memory::MemoryStore;
use crate::testing::{first_byte, masked_frame};
use crate::ws::protocol::{Connection, OwnedEvent, Role};

const KEY: [u8; 4] = [0x12, 0x34, 0x56, 0x78];
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;

/// Both directions of one in-memory TCP connection.
#[derive(Debug)]
struct PipeState {
    /// Written by the client, not yet read by the server.
    to_server: VecDeque<u8>,
    /// The client shut down its sending side.
    client_fin: bool,
    /// Written by the server, not yet read by the client.
    to_client: Vec<u8>,
    /// How many unread bytes the server may have in flight before its writes would block (the
    /// socket buffers).
    capacity: usize,
    /// The server shut down its sending side.
    server_fin: bool,
    /// The connection was reset: every call fails.
    reset: bool,
}

/// The server's end of a pipe.
#[derive(Debug, Clone)]
struct Pipe(Rc<RefCell<PipeState>>);

impl Pipe {
    fn new(capacity: usize) -> Self {
        Self(Rc::new(RefCell::new(PipeState {
            to_server: VecDeque::new(),
            client_fin: false,
            to_client: Vec::new(),
            capacity,
            server_fin: false,
            reset: false,
        })))
    }
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self.0.borrow_mut();
        if state.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if state.to_server.is_empty() {
            return if state.client_fin {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let len = buf.len().min(state.to_server.len());
        for (slot, byte) in buf.iter_mut().zip(state.to_server.drain(..len)) {
            *slot = byte;
        }
        Ok(len)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.0.borrow_mut();
        if state.reset {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        assert!(!state.server_fin, "the server wrote after shutting down its side");
        let room = state.capacity.saturating_sub(state.to_client.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let len = room.min(buf.len());
        state.to_client.extend_from_slice(&buf[..len]);
        Ok(len)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Socket for Pipe {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.0.borrow_mut().server_fin = true;
        Ok(())
    }
}

/// A driver with a clock that moves only when told to, and a store in memory that answers at the
/// end of each turn (as a disk that keeps up would).
struct Harness {
    driver: Driver<Pipe>,
    store: MemoryStore,
    start: Instant,
    elapsed: Duration,
    /// Socket buffer size of new pipes.
    capacity: usize,
}

/// A client: its pipe, and the bytes the server sent it that were not consumed yet.
struct Client {
    id: ConnId,
    pipe: Pipe,
    received: Vec<u8>,
    websocket: Option<Connection>,
}

impl Harness {
    /// A driver configured as `wschat <args>` would be.
    fn new(args: &[&str]) -> Self {
        let config = Config::parse_from(std::iter::once("wschat").chain(args.iter().copied()));
        #[allow(clippy::disallowed_methods)] // The fake clock needs an origin; nothing is timed.
        let start = Instant::now();
        Self {
            driver: Driver::new(
                config.stack(),
                crate::testing::hub(config.hub()),
                config.max_connections,
            ),
            store: MemoryStore::new(10_000),
            start,
            elapsed: Duration::ZERO,
            capacity: 1 << 20,
        }
    }

    fn now(&self) -> Now {
        Now {
            instant: self.start + self.elapsed,
            unix_ms: 1_700_000_000_000 + self.elapsed.as_millis() as u64,
        }
    }

    /// Lets `by` pass, then ends a turn (timers fire).
    fn advance(&mut self, by: Duration) {
        self.elapsed += by;
        self.turn();
    }

    /// The rest of a turn whose readiness events the test has delivered, then (like the event
    /// loop, which polls without waiting while a socket may hold more) further turns until no
    /// socket does.
    fn turn(&mut self) {
        let now = self.now();
        self.driver.end_turn(now);
        self.answer_store(now);
        for _ in 0..1000 {
            if self.driver.poll_timeout(now.instant) != Some(now.instant) {
                break;
            }
            self.driver.start_turn(now);
            self.driver.end_turn(now);
            self.answer_store(now);
        }
        while self.driver.poll_interest().is_some() {}
    }

    /// The store's answers arrive (the event loop's store wake-up) and are delivered in another
    /// turn, as long as the chat asks the store for anything.
    fn answer_store(&mut self, now: Now) {
        loop {
            let commands = self.driver.take_store_commands();
            if commands.is_empty() {
                return;
            }
            for outcome in self.store.execute(commands) {
                self.driver.store_outcome(outcome, now);
            }
            self.driver.end_turn(now);
        }
    }

    fn connect(&mut self) -> Client {
        let pipe = Pipe::new(self.capacity);
        let now = self.now();
        let id = self
            .driver
            .accept(pipe.clone(), "127.0.0.1:40000".parse().unwrap(), now)
            .expect("accepted");
        self.turn();
        Client {
            id,
            pipe,
            received: Vec::new(),
            websocket: None,
        }
    }

    /// A client that completed the upgrade to `path`.
    fn websocket(&mut self, path: &str) -> Client {
        let mut client = self.connect();
        client.send(self, upgrade_request(path).as_bytes());
        let head = client.response_head(self);
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        client.websocket = Some(Connection::with_mask_seed(
            Role::Client,
            Default::default(),
            self.now().instant,
            7,
        ));
        client
    }

    fn phase(&self, client: &Client) -> Option<&'static str> {
        self.driver.stack(client.id).map(|stack| stack.phase().name())
    }

    fn is_open(&self, client: &Client) -> bool {
        self.driver.stack(client.id).is_some()
    }
}

impl Client {
    /// Writes `bytes` to the server; the server sees a readiness event, then the turn ends.
    fn send(&mut self, harness: &mut Harness, bytes: &[u8]) {
        self.pipe.0.borrow_mut().to_server.extend(bytes);
        let now = harness.now();
        harness.driver.readable(self.id, now);
        harness.turn();
    }

    /// Writes without the server noticing yet (to build up a backlog).
    fn send_unseen(&mut self, bytes: &[u8]) {
        self.pipe.0.borrow_mut().to_server.extend(bytes);
    }

    /// Shuts down the client's sending side.
    fn fin(&mut self, harness: &mut Harness) {
        self.pipe.0.borrow_mut().client_fin = true;
        let now = harness.now();
        harness.driver.readable(self.id, now);
        harness.turn();
    }

    /// Takes what the server wrote; the freed buffer space is a WRITABLE event for the server.
    fn read(&mut self, harness: &mut Harness) -> Vec<u8> {
        let bytes = std::mem::take(&mut self.pipe.0.borrow_mut().to_client);
        let now = harness.now();
        harness.driver.writable(self.id, now);
        harness.turn();
        bytes
    }

    fn server_fin(&self) -> bool {
        self.pipe.0.borrow().server_fin
    }

    /// Reads one HTTP response head, keeping what follows it.
    fn response_head(&mut self, harness: &mut Harness) -> String {
        let bytes = self.read(harness);
        self.received.extend_from_slice(&bytes);
        let end = self
            .received
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "no response head in {:?}",
                    String::from_utf8_lossy(&self.received)
                )
            });
        let head = String::from_utf8_lossy(&self.received[..end + 4]).into_owned();
        self.received.drain(..end + 4);
        head
    }

    /// Reads one whole response (head and a `Content-Length` body); returns its status and body.
    fn response(&mut self, harness: &mut Harness) -> (u16, String) {
        let head = self.response_head(harness);
        let status = head[9..12].parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .map_or(0, |value| value.trim().parse().unwrap());
        let more = self.read(harness);
        self.received.extend_from_slice(&more);
        assert!(self.received.len() >= length, "body cut short: {head}");
        let body = String::from_utf8_lossy(&self.received[..length]).into_owned();
        self.received.drain(..length);
        (status, body)
    }

    /// Sends one masked client frame.
    fn frame(&mut self, harness: &mut Harness, fin: bool, opcode: u8, payload: &[u8]) {
        self.send(harness, &masked_frame(first_byte(fin, 0, opcode), payload, KEY));
    }

    fn text(&mut self, harness: &mut Harness, text: &str) {
        self.frame(harness, true, TEXT, text.as_bytes());
    }

    /// Decodes everything the server sent since the last call into events.
    fn events(&mut self, harness: &mut Harness) -> Vec<OwnedEvent> {
        let mut bytes = std::mem::take(&mut self.received);
        bytes.extend(self.read(harness));
        let now = harness.now().instant;
        let websocket = self.websocket.as_mut().expect("upgraded");
        let mut events = Vec::new();
        websocket.receive(&mut bytes, now, |event, _| events.push(OwnedEvent::from(event)));
        events
    }

    /// The chat messages among `events`, as JSON.
    fn chat(&mut self, harness: &mut Harness) -> Vec<Value> {
        self.events(harness)
            .into_iter()
            .filter_map(|event| match event {
                OwnedEvent::Text(text) => Some(serde_json::from_str(&text).unwrap()),
                _ => None,
            })
            .collect()
    }

    /// The close code the server sent, among `events`.
    fn close_code(&mut self, harness: &mut Harness) -> Option<u16> {
        self.events(harness).into_iter().find_map(|event| match event {
            OwnedEvent::Close(Some((code, _))) => Some(code),
            _ => None,
        })
    }
}

fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n")
}

fn types(messages: &[Value]) -> Vec<&str> {
    messages.iter().map(|m| m["type"].as_str().unwrap()).collect()
}

// --- HTTP phase --------------------------------------------------------------------------------

#[test]
fn the_pages_three_resources_load_over_one_kept_alive_connection() {
    let mut h = Harness::new(&[]);
    let mut client = h.connect();
    for path in ["/", "/app.js", "/style.css"] {
        client.send(&mut h, get(path, "").as_bytes());
        let (status, body) = client.response(&mut h);
        assert_eq!(status, 200, "{path}");
        assert!(!body.is_empty());
        assert_eq!(h.phase(&client), Some("http"), "kept alive after {path}");
    }
    assert!(!client.server_fin());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut h = Harness::new(&[]);
    let mut client = h.connect();
    let requests = [get("/style.css", ""), get("/missing", ""), get("/", "")].concat();
    client.send(&mut h, requests.as_bytes());
    let (first, _) = client.response(&mut h);
    assert_eq!(first, 200);
    let (second, body) = client.response(&mut h);
    assert_eq!((second, body.trim()), (404, "no endpoint at /missing"));
    // A rejection closes the connection: the third request is never answered.
    assert!(client.received.is_empty());
    assert!(client.server_fin());
}

#[test]
fn connection_close_is_honoured_after_the_response() {
    let mut h = Harness::new(&[]);
    let mut client = h.connect();
    client.send(&mut h, get("/", "Connection: close\r\n").as_bytes());
    let head = client.response_head(&mut h);
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert_eq!(h.phase(&client), Some("draining"));
    assert!(client.server_fin(), "our side is shut down after the last byte");
    client.fin(&mut h);
    assert!(!h.is_open(&client), "the peer's FIN ends draining");
}

#[test]
fn a_silent_client_is_dropped_at_the_handshake_timeout() {
    let mut h = Harness::new(&["--handshake-timeout", "2"]);
    let mut client = h.connect();
    client.send(&mut h, b"GET / HTTP/1.1\r\n");
    h.advance(Duration::from_millis(1999));
    assert!(h.is_open(&client));
    h.advance(Duration::from_millis(1));
    assert!(!h.is_open(&client));
}

#[test]
fn an_idle_kept_alive_connection_times_out() {
    let mut h = Harness::new(&["--handshake-timeout", "2"]);
    let mut client = h.connect();
    h.advance(Duration::from_secs(1));
    client.send(&mut h, get("/", "").as_bytes());
    client.response(&mut h);
    // The clock for the next request starts when the previous one was answered.
    h.advance(Duration::from_millis(1999));
    assert!(h.is_open(&client));
    h.advance(Duration::from_millis(1));
    assert!(!h.is_open(&client));
}

#[test]
fn a_connection_over_the_limit_is_answered_503() {
    let mut h = Harness::new(&["--max-connections", "1"]);
    let _first = h.websocket("/");
    let mut second = h.connect();
    second.send(&mut h, upgrade_request("/").as_bytes());
    let (status, _) = second.response(&mut h);
    assert_eq!(status, 503);
}

// --- upgrade -------------------------------------------------------------------------------------

#[test]
fn frames_behind_the_request_head_reach_the_websocket() {
    let mut h = Harness::new(&["--echo"]);
    let mut client = h.connect();
    let mut bytes = upgrade_request("/echo").into_bytes();
    bytes.extend(masked_frame(first_byte(true, 0, TEXT), b"early", KEY));
    client.send(&mut h, &bytes);
    let head = client.response_head(&mut h);
    assert!(head.starts_with("HTTP/1.1 101 "));
    client.websocket = Some(Connection::new(Role::Client, Default::default(), h.now().instant));
    assert_eq!(client.events(&mut h), [OwnedEvent::Text("early".into())]);
}

#[test]
fn an_echo_is_written_in_the_turn_that_read_its_message() {
    let mut h = Harness::new(&["--echo"]);
    let mut client = h.websocket("/echo");
    client
        .pipe
        .0
        .borrow_mut()
        .to_server
        .extend(masked_frame(0x81, b"now", KEY));
    let now = h.now();
    h.driver.readable(client.id, now);
    // Before the end of the turn, the answer is already on the wire.
    assert!(!client.pipe.0.borrow().to_client.is_empty());
    assert_eq!(client.events(&mut h), [OwnedEvent::Text("now".into())]);
}

// --- the hub's outputs -------------------------------------------------------------------------

#[test]
fn chat_deliveries_are_applied_at_the_end_of_the_turn() {
    let mut h = Harness::new(&["--rate-limit", "1000", "--rate-burst", "1000"]);
    let mut alice = h.websocket("/");
    let mut bob = h.websocket("/");
    alice.chat(&mut h);
    bob.chat(&mut h);
    alice.pipe.0.borrow_mut().to_server.extend(masked_frame(
        0x81,
        br#"{"type":"message","payload":"hi"}"#,
        KEY,
    ));
    let now = h.now();
    h.driver.readable(alice.id, now);
    assert!(
        bob.pipe.0.borrow().to_client.is_empty(),
        "not inside the reader's handler"
    );
    h.turn();
    let got = bob.chat(&mut h);
    assert_eq!(types(&got), ["message"]);
    assert_eq!(got[0]["payload"]["text"], "hi");
    assert_eq!(types(&alice.chat(&mut h)), ["ack"]);
}

#[test]
fn a_chat_client_that_falls_behind_is_closed_with_1008() {
    let mut h = Harness::new(&[
        "--max-queued-output",
        "4096",
        "--rate-limit",
        "1000",
        "--rate-burst",
        "1000",
    ]);
    h.capacity = 1024;
    let mut slow = h.websocket("/");
    let mut fast = h.websocket("/");
    slow.chat(&mut h);
    let text = "x".repeat(500);
    for _ in 0..20 {
        fast.text(&mut h, &format!(r#"{{"type":"message","payload":"{text}"}}"#));
        fast.chat(&mut h);
    }
    // The slow client reads at last: messages in order, then the reason it was let go.
    let mut events = Vec::new();
    for _ in 0..100 {
        events.extend(slow.events(&mut h));
    }
    let Some(OwnedEvent::Close(Some((code, reason)))) = events.last() else {
        panic!("no close: {events:?}");
    };
    assert_eq!(*code, 1008);
    assert!(reason.contains("slow consumer"), "{reason}");
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|event| matches!(event, OwnedEvent::Text(_)))
    );
}

#[test]
fn a_turn_of_many_messages_does_not_close_a_receiver_that_keeps_reading() {
    let mut h = Harness::new(&[
        "--max-queued-output",
        "4096",
        "--rate-limit",
        "1000",
        "--rate-burst",
        "1000",
    ]);
    let mut receiver = h.websocket("/");
    let mut senders: Vec<Client> = (0..20).map(|_| h.websocket("/")).collect();
    receiver.chat(&mut h);
    let text = "y".repeat(400);
    let message = masked_frame(
        0x81,
        format!(r#"{{"type":"message","payload":"{text}"}}"#).as_bytes(),
        KEY,
    );
    // Twenty senders, one turn: 8 KB for a receiver whose cap is 4 KB, but whose socket takes it.
    let now = h.now();
    for sender in &mut senders {
        sender.send_unseen(&message);
        h.driver.readable(sender.id, now);
    }
    h.turn();
    let got = receiver.chat(&mut h);
    assert_eq!(
        types(&got).iter().filter(|kind| **kind == "message").count(),
        20,
        "{got:?}"
    );
    assert!(h.is_open(&receiver));
}

#[test]
fn a_storm_of_joins_in_one_turn_is_drained_before_the_queue_passes_its_budget() {
    let mut h = Harness::new(&[]);
    // The lobby's history is in memory once somebody entered it: each join is admitted at once.
    let _first = h.websocket("/");
    let clients: Vec<Client> = (0..300).map(|_| h.connect()).collect();
    let now = h.now();
    let mut largest = 0;
    for client in &clients {
        client
            .pipe
            .0
            .borrow_mut()
            .to_server
            .extend(upgrade_request("/").bytes());
        h.driver.readable(client.id, now);
        largest = largest.max(h.driver.hub().backlog());
    }
    // Each join tells every member: 45,000 deliveries in all, never more than the budget (plus
    // the one join that crossed it) at a time.
    assert!(largest <= DRAIN_BACKLOG + clients.len(), "{largest}");
    assert!(
        largest > DRAIN_BACKLOG / 2,
        "the budget was actually reached: {largest}"
    );
    h.turn();
    assert_eq!(h.driver.hub().backlog(), 0);
}

#[test]
fn an_id_kept_after_its_connection_left_never_reaches_the_slots_next_occupant() {
    let mut h = Harness::new(&["--echo"]);
    let mut first = h.connect();
    let stale = first.id;
    first.fin(&mut h);
    assert!(!h.is_open(&first));
    let second = h.websocket("/echo");
    assert_eq!(second.id.index(), stale.index(), "the slot is reused");
    assert!(h.driver.stack(stale).is_none());
    assert!(h.driver.socket_mut(stale).is_none());
}

// --- backpressure ------------------------------------------------------------------------------

#[test]
fn a_websocket_whose_queue_is_over_the_cap_is_not_read_until_it_drains() {
    let mut h = Harness::new(&["--echo", "--max-queued-output", "8192"]);
    h.capacity = 1024;
    let mut client = h.websocket("/echo");
    // More than one read's worth: the first read alone queues far more than the cap.
    let frame = masked_frame(0x82, &[7; 1000], KEY);
    for _ in 0..100 {
        client.send_unseen(&frame);
    }
    let now = h.now();
    h.driver.readable(client.id, now);
    h.turn();
    let unread = client.pipe.0.borrow().to_server.len();
    assert!(unread > 0, "reading stopped at the cap");
    // The client reads everything: the server resumes by itself and echoes all 100.
    let mut echoed = 0;
    for _ in 0..200 {
        echoed += client
            .events(&mut h)
            .iter()
            .filter(|event| matches!(event, OwnedEvent::Binary(_)))
            .count();
    }
    assert_eq!(echoed, 100);
}

#[test]
fn a_peer_that_never_stops_sending_gets_one_read_per_turn() {
    let mut h = Harness::new(&[
        "--echo",
        "--max-message-size",
        "10000000",
        "--max-frame-size",
        "10000000",
    ]);
    let mut client = h.websocket("/echo");
    let big = masked_frame(0x82, &vec![1; SCRATCH_LEN * 4], KEY);
    client.send_unseen(&big);
    let now = h.now();
    h.driver.readable(client.id, now);
    let left = client.pipe.0.borrow().to_server.len();
    assert_eq!(left, big.len() - SCRATCH_LEN);
    assert_eq!(
        h.driver.poll_timeout(now.instant),
        Some(now.instant),
        "read again at once"
    );
    h.driver.start_turn(now);
    assert_eq!(
        client.pipe.0.borrow().to_server.len(),
        left - SCRATCH_LEN,
        "one more read"
    );
}

#[test]
fn what_a_read_causes_reaches_the_other_connections_before_the_next_read() {
    let mut h = Harness::new(&["--rate-limit", "100000", "--rate-burst", "100000"]);
    let mut sender = h.websocket("/");
    let mut receiver = h.websocket("/");
    sender.chat(&mut h);
    receiver.chat(&mut h);
    // Far more than one read's worth of chat messages, all waiting in the socket.
    let message = masked_frame(0x81, br#"{"type":"message","payload":"x"}"#, KEY);
    let count = 3 * SCRATCH_LEN / message.len();
    for _ in 0..count {
        sender.send_unseen(&message);
    }
    let now = h.now();
    h.driver.readable(sender.id, now);
    h.driver.end_turn(now);
    // The store commits what the read carried, and its answer is delivered.
    h.answer_store(now);
    // What the receiver's socket holds now, read without giving the server another turn.
    let mut bytes = std::mem::take(&mut receiver.pipe.0.borrow_mut().to_client);
    let mut first_turn = 0;
    let websocket = receiver.websocket.as_mut().expect("upgraded");
    websocket.receive(&mut bytes, now.instant, |_, _| first_turn += 1);
    let per_read = SCRATCH_LEN / message.len();
    assert!(first_turn > 0, "delivered at the end of the first turn");
    assert!(
        first_turn <= per_read + 1,
        "only what one read carried: {first_turn}"
    );
    h.turn();
    let rest = types(&receiver.chat(&mut h)).len();
    assert_eq!(first_turn + rest, count, "and everything, turn by turn");
}

// --- timers ------------------------------------------------------------------------------------

#[test]
fn a_quiet_websocket_is_pinged_every_ping_interval() {
    let mut h = Harness::new(&["--echo", "--ping-interval", "3", "--idle-timeout", "0"]);
    let mut client = h.websocket("/echo");
    h.advance(Duration::from_secs(3));
    assert_eq!(client.events(&mut h), [OwnedEvent::Ping(Vec::new())]);
    h.advance(Duration::from_secs(3));
    assert_eq!(client.events(&mut h), [OwnedEvent::Ping(Vec::new())]);
}

#[test]
fn a_silent_websocket_is_closed_with_1001_at_the_idle_timeout() {
    let mut h = Harness::new(&["--echo", "--ping-interval", "0", "--idle-timeout", "5"]);
    let mut client = h.websocket("/echo");
    h.advance(Duration::from_secs(5));
    assert_eq!(client.close_code(&mut h), Some(1001));
}

#[test]
fn a_peer_that_never_answers_our_close_is_dropped_after_the_close_timeout() {
    let mut h = Harness::new(&[
        "--echo",
        "--ping-interval",
        "0",
        "--idle-timeout",
        "5",
        "--close-timeout",
        "2",
    ]);
    let mut client = h.websocket("/echo");
    h.advance(Duration::from_secs(5));
    assert_eq!(client.close_code(&mut h), Some(1001));
    h.advance(Duration::from_secs(2));
    assert_eq!(h.phase(&client), Some("draining"), "gave up waiting, closed TCP");
    h.advance(Duration::from_secs(2));
    assert!(!h.is_open(&client), "and the FIN never came either");
}

#[test]
fn a_closed_websocket_whose_peer_never_reads_is_dropped_after_the_close_timeout() {
    let mut h = Harness::new(&["--echo", "--close-timeout", "2"]);
    let mut client = h.websocket("/echo");
    // The socket's buffers are full: our answer cannot leave.
    client.pipe.0.borrow_mut().capacity = 0;
    client.frame(
        &mut h,
        true,
        CLOSE,
        b"\x03\xe8bye, and I will not read your answer",
    );
    assert_eq!(
        h.phase(&client),
        Some("websocket (echo)"),
        "our Close waits in the queue"
    );
    h.advance(Duration::from_secs(2));
    assert!(!h.is_open(&client));
}

#[test]
fn draining_ends_at_the_peers_fin_or_the_close_timeout() {
    let mut h = Harness::new(&["--echo", "--close-timeout", "2"]);
    let mut polite = h.websocket("/echo");
    let mut silent = h.websocket("/echo");
    for client in [&mut polite, &mut silent] {
        client.frame(&mut h, true, CLOSE, b"\x03\xe8");
        assert_eq!(client.close_code(&mut h), Some(1000));
        assert_eq!(h.phase(client), Some("draining"));
    }
    polite.fin(&mut h);
    assert!(!h.is_open(&polite));
    h.advance(Duration::from_secs(2));
    assert!(!h.is_open(&silent));
}

// --- shutdown ----------------------------------------------------------------------------------

#[test]
fn shutdown_closes_websockets_with_1001_and_drops_idle_http_connections() {
    let mut h = Harness::new(&["--echo"]);
    let mut websocket = h.websocket("/echo");
    let idle = h.connect();
    let now = h.now();
    h.driver.shutdown(now);
    assert!(!h.is_open(&idle));
    assert_eq!(websocket.close_code(&mut h), Some(1001));
    websocket.frame(&mut h, true, CLOSE, b"\x03\xe9");
    websocket.fin(&mut h);
    assert!(h.driver.is_empty());
}

// --- phases ------------------------------------------------------------------------------------

#[test]
fn a_reset_socket_ends_the_chat_session_at_once() {
    let mut h = Harness::new(&[]);
    let mut alice = h.websocket("/");
    let mut bob = h.websocket("/");
    alice.chat(&mut h);
    bob.chat(&mut h);
    alice.pipe.0.borrow_mut().reset = true;
    let now = h.now();
    h.driver.readable(alice.id, now);
    h.turn();
    assert!(!h.is_open(&alice));
    assert_eq!(types(&bob.chat(&mut h)), ["left"]);
    assert_eq!(h.driver.hub().sessions(), 1);
}

#[test]
fn every_phase_is_named_for_the_trace() {
    let mut h = Harness::new(&["--echo"]);
    let client = h.connect();
    assert_eq!(h.phase(&client), Some("http"));
    let mut upgraded = h.websocket("/echo");
    assert_eq!(h.phase(&upgraded), Some("websocket (echo)"));
    upgraded.frame(&mut h, true, CLOSE, b"");
    assert!(matches!(
        h.driver.stack(upgraded.id).map(Stack::phase),
        Some(Phase::Draining { .. })
    ));
}

#[test]
fn over_tls_a_full_socket_is_resumed_when_writable_and_close_notify_goes_before_the_fin() {
    use crate::conn::tls::testing::{Pki, client_input, client_output, client_send};
    let pki = Pki::new();
    let mut h = Harness::new(&[]);
    let capacity = 500; // the page (2 KiB and more) takes several writable events
    h.capacity = capacity;
    h.driver.set_tls(pki.server_config());
    let mut client = h.connect();
    let mut tls = pki.client();
    while tls.is_handshaking() {
        client.send(&mut h, &client_output(&mut tls));
        let flight = client.read(&mut h);
        client_input(&mut tls, &flight);
    }
    let request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    client.send(&mut h, &client_send(&mut tls, request));
    let mut plaintext = Vec::new();
    // The pipe asserts that nothing is written after the FIN: the alert must come first.
    while !client.server_fin() {
        let ciphertext = client.read(&mut h);
        assert!(!ciphertext.is_empty() || client.server_fin(), "stalled");
        plaintext.extend(client_input(&mut tls, &ciphertext));
    }
    plaintext.extend(client_input(&mut tls, &client.read(&mut h)));
    assert!(
        tls.process_new_packets().unwrap().peer_has_closed(),
        "close_notify before the FIN"
    );
    let text = String::from_utf8_lossy(&plaintext);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        length > 3 * capacity,
        "a page of {length} bytes spans several writes"
    );
    assert_eq!(body.len(), length);
    assert_eq!(h.phase(&client), Some("draining"));
}
