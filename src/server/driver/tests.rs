//! The loop's rules — phases, keep-alive, backpressure, timers, the hub's outputs, shutdown — one
//! test per rule, without a process: the driver runs over in-memory pipes and a clock the test
//! moves by hand.
//!
//! The client side of each pipe is our own protocol core in the client role, the way quinn's tests
//! pair two endpoints: a [`Client`] writes bytes into its pipe, and decodes what the server wrote.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;

use super::*;
use crate::config::Config;
use crate::conn::tls::testing::{Pki, client_input, client_output, client_send};
use crate::conn::{Phase, Wire};
use crate::hub::Listener;
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
    /// Connections made so far: each comes from an address of its own unless a test names one.
    connections: u32,
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
            connections: 0,
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
            for outcome in self.store.execute(commands, now.instant) {
                self.driver.store_outcome(outcome, now);
            }
            self.driver.end_turn(now);
        }
    }

    fn connect(&mut self) -> Client {
        self.connections += 1;
        let addr = SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + self.connections), 40000));
        self.connect_from(addr, Listener::Public).expect("accepted")
    }

    /// A connection from `addr` to `listener`, unless the driver drops it at once.
    fn connect_from(&mut self, addr: SocketAddr, listener: Listener) -> Option<Client> {
        let pipe = Pipe::new(self.capacity);
        let now = self.now();
        let id = self.driver.accept(pipe.clone(), addr, listener, now)?;
        self.turn();
        Some(Client {
            id,
            pipe,
            received: Vec::new(),
            websocket: None,
        })
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
        // The nickname claim is answered at once (the coordination of one process is in the loop),
        // and the join it makes tells every member.
        let commands = h.driver.take_store_commands();
        for outcome in h.store.execute(commands, now.instant) {
            h.driver.store_outcome(outcome, now);
        }
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
    let mut h = Harness::new(&[
        "--rate-limit",
        "100000",
        "--rate-burst",
        "100000",
        "--ip-rate-limit",
        "100000",
        "--ip-rate-burst",
        "100000",
    ]);
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

// --- over TLS ------------------------------------------------------------------------------------

/// A TLS client's conversation with the driver, and the ciphertext that crossed the pipe.
struct TlsClient {
    client: Client,
    tls: rustls::ClientConnection,
    /// Bytes on the pipe: sent to the server, received from it.
    wire: (usize, usize),
}

impl TlsClient {
    /// Connects and completes the TLS handshake with a driver serving `pki`'s certificate.
    fn connect(h: &mut Harness, pki: &Pki) -> Self {
        let client = h.connect();
        Self::handshake(client, h, pki)
    }

    /// Completes the TLS handshake on a connection just made.
    fn handshake(client: Client, h: &mut Harness, pki: &Pki) -> Self {
        let mut client = Self {
            client,
            tls: pki.client(),
            wire: (0, 0),
        };
        while client.tls.is_handshaking() {
            let flight = client_output(&mut client.tls);
            client.send_ciphertext(h, &flight);
            client.receive(h);
        }
        client
    }

    fn send_ciphertext(&mut self, h: &mut Harness, ciphertext: &[u8]) {
        self.wire.0 += ciphertext.len();
        self.client.send(h, ciphertext);
    }

    fn send(&mut self, h: &mut Harness, plaintext: &[u8]) {
        let ciphertext = client_send(&mut self.tls, plaintext);
        self.send_ciphertext(h, &ciphertext);
    }

    /// Reads what the server wrote; returns the plaintext it carried.
    fn receive(&mut self, h: &mut Harness) -> Vec<u8> {
        let ciphertext = self.client.read(h);
        self.wire.1 += ciphertext.len();
        client_input(&mut self.tls, &ciphertext)
    }
}

/// The value of one series in the driver's `/metrics` rendering.
fn metric(h: &Harness, series: &str) -> Option<String> {
    let text = h.driver.hub().metrics().render();
    text.lines()
        .find_map(|line| Some(line.strip_prefix(series)?.strip_prefix(' ')?.to_owned()))
}

#[test]
fn over_tls_a_connection_counts_under_transport_tls_with_its_socket_bytes() {
    let pki = Pki::new();
    let mut h = Harness::new(&[]);
    h.driver.set_tls(pki.server_config());
    let mut client = TlsClient::connect(&mut h, &pki);
    client.send(&mut h, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let response = client.receive(&mut h);
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let accepted = |transport| format!(r#"wschat_connections_accepted_total{{transport="{transport}"}}"#);
    assert_eq!(metric(&h, &accepted("tls")).as_deref(), Some("1"));
    assert_eq!(metric(&h, &accepted("tcp")).as_deref(), Some("0"));
    let open = r#"wschat_connections{transport="tls",phase="http"}"#;
    assert_eq!(metric(&h, open).as_deref(), Some("1"));
    // What the socket carried (records, the handshake included), not the plaintext inside.
    let (received, sent) = h.driver.hub().metrics().wire_bytes(Wire::Http);
    assert_eq!((received as usize, sent as usize), client.wire);
    assert!(client.wire.1 > response.len());
}

#[test]
fn over_tls_a_second_connection_over_the_per_address_limit_is_told_429_over_tls() {
    let pki = Pki::new();
    let mut h = Harness::new(&["--max-connections-per-ip", "1"]);
    h.driver.set_tls(pki.server_config());
    let addr = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 7), 40000));
    let connect = |h: &mut Harness| {
        let client = h.connect_from(addr, Listener::Public).expect("accepted");
        TlsClient::handshake(client, h, &pki)
    };
    let _first = connect(&mut h);
    let mut second = connect(&mut h);
    second.send(&mut h, upgrade_request("/").as_bytes());
    let response = second.receive(&mut h);
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 429 "), "{text}");
    assert_eq!(
        metric(&h, r#"wschat_connections_refused_total{reason="per_address"}"#).as_deref(),
        Some("1")
    );
}

#[test]
fn with_tls_on_the_metrics_listener_still_speaks_plain_http() {
    let pki = Pki::new();
    let mut h = Harness::new(&[]);
    h.driver.set_tls(pki.server_config());
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 40000));
    let mut client = h.connect_from(addr, Listener::Metrics).expect("accepted");
    client.send(&mut h, get("/metrics", "").as_bytes());
    let head = client.response_head(&mut h);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let open = r#"wschat_connections{transport="tcp",phase="http"}"#;
    assert_eq!(metric(&h, open).as_deref(), Some("1"));
}

#[test]
fn over_tls_a_full_socket_is_resumed_when_writable_and_close_notify_goes_before_the_fin() {
    let pki = Pki::new();
    let mut h = Harness::new(&[]);
    let capacity = 500; // the page (2 KiB and more) takes several writable events
    h.capacity = capacity;
    h.driver.set_tls(pki.server_config());
    let TlsClient {
        mut client, mut tls, ..
    } = TlsClient::connect(&mut h, &pki);
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

// --- the chat over plain HTTP: event streams, polls, POST /send ----------------------------------

/// A chunked body's content (RFC 9112 §7.1), as far as whole chunks go.
fn dechunk(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let Ok(len) = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap_or("x"), 16) else {
            break;
        };
        let start = end + 2;
        if len == 0 || rest.len() < start + len + 2 {
            break;
        }
        out.extend_from_slice(&rest[start..start + len]);
        rest = &rest[start + len + 2..];
    }
    out
}

/// The events of an event stream's (chunked) bytes: (id, event name, data) of each, in order.
fn sse_events(bytes: &[u8]) -> Vec<(Option<u64>, Option<String>, String)> {
    let bytes = dechunk(bytes);
    let text = String::from_utf8_lossy(&bytes);
    text.split("\n\n")
        .filter_map(|block| {
            let mut id = None;
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("id: ") {
                    id = value.parse().ok();
                } else if let Some(value) = line.strip_prefix("event: ") {
                    name = Some(value.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data = Some(value.to_owned());
                }
            }
            data.map(|data| (id, name, data))
        })
        .collect()
}

impl Client {
    /// Sends one HTTP request.
    fn request(&mut self, harness: &mut Harness, text: &str) {
        self.send(harness, text.as_bytes());
    }

    /// What the server wrote since the last call, as text.
    fn written(&mut self, harness: &mut Harness) -> String {
        let mut bytes = std::mem::take(&mut self.received);
        bytes.extend(self.read(harness));
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Opens an event stream on a new connection; returns the client, the session id and what the
/// stream carried so far (after the response head).
fn open_stream(h: &mut Harness, query: &str, extra: &str) -> (Client, String, String) {
    let mut client = h.connect();
    client.request(h, &format!("GET /sse{query} HTTP/1.1\r\nHost: h\r\n{extra}\r\n"));
    // The stream opens at once; a new session's welcome follows once the store has read the
    // lobby's history.
    let mut text = client.written(h);
    text += &client.written(h);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(head.contains("Content-Type: text/event-stream"), "{head}");
    assert!(head.contains("Cache-Control: no-store"), "{head}");
    assert!(head.contains("X-Accel-Buffering: no"), "{head}");
    let sid = sse_events(body.as_bytes())
        .iter()
        .find(|(_, name, _)| name.as_deref() == Some("session"))
        .map(|(_, _, data)| {
            serde_json::from_str::<Value>(data).unwrap()["sid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .unwrap_or_default();
    (client, sid, body.to_owned())
}

/// A poll; returns the status and the JSON answer (`Null` without a body).
fn poll(h: &mut Harness, client: &mut Client, query: &str) -> (u16, Value) {
    client.request(h, &format!("GET /poll{query} HTTP/1.1\r\nHost: h\r\n\r\n"));
    let (status, body) = client.response(h);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A new session by polling: its id, and `since` after its welcome (the first poll answers with
/// the session at once; the welcome, which waits for the store, comes with the next).
fn new_poll_session(h: &mut Harness) -> (Client, String, usize) {
    let mut client = h.connect();
    let (status, first) = poll(h, &mut client, "");
    assert_eq!(status, 200);
    let sid = first[0]["sid"].as_str().unwrap().to_owned();
    let mut since = first.as_array().unwrap().len() - 1;
    if since == 0 {
        let (_, more) = poll(h, &mut client, &format!("?sid={sid}&since=0"));
        since = more.as_array().unwrap().len();
        assert_eq!(more[0]["type"], "welcome", "{more}");
    }
    (client, sid, since)
}

/// A POST /send; returns the status.
fn post(h: &mut Harness, client: &mut Client, sid: &str, body: &str) -> u16 {
    client.request(
        h,
        &format!(
            "POST /send?sid={sid} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    client.response(h).0
}

#[test]
fn an_event_stream_starts_with_a_prelude_then_its_session_then_the_welcome() {
    let mut h = Harness::new(&[]);
    let (_, sid, body) = open_stream(&mut h, "", "");
    let content = String::from_utf8(dechunk(body.as_bytes())).unwrap();
    assert!(
        content.starts_with("retry: "),
        "the prelude comes first: {content:?}"
    );
    assert_eq!(sid.len(), 32, "a 128-bit session id");
    let events = sse_events(body.as_bytes());
    let welcome = events
        .iter()
        .find(|(_, _, data)| data.contains("\"welcome\""))
        .expect("welcome");
    assert_eq!(welcome.0, Some(1), "numbered from 1");
}

#[test]
fn a_stream_resumed_with_last_event_id_replays_exactly_what_came_after() {
    let mut h = Harness::new(&["--rate-limit", "1000", "--rate-burst", "1000"]);
    let (mut stream, sid, _) = open_stream(&mut h, "", "");
    let mut other = h.websocket("/");
    other.chat(&mut h);
    stream.written(&mut h);
    for text in ["one", "two", "three"] {
        other.text(&mut h, &format!(r#"{{"type":"message","payload":"{text}"}}"#));
    }
    let carried = sse_events(stream.written(&mut h).as_bytes());
    let ids: Vec<u64> = carried.iter().filter_map(|(id, _, _)| *id).collect();
    assert!(ids.len() >= 3, "{carried:?}");
    // The stream breaks; the browser comes back with the id of the second message it got.
    stream.fin(&mut h);
    let resume_at = ids[ids.len() - 2];
    let (_, _, replay) = open_stream(
        &mut h,
        &format!("?sid={sid}"),
        &format!("Last-Event-ID: {resume_at}\r\n"),
    );
    let replayed = sse_events(replay.as_bytes());
    assert_eq!(
        replayed.iter().filter_map(|(id, _, _)| *id).collect::<Vec<_>>(),
        [ids[ids.len() - 1]]
    );
    assert!(replayed[0].2.contains("three"));
}

#[test]
fn a_resume_point_the_session_no_longer_holds_is_answered_204() {
    let mut h = Harness::new(&[]);
    let mut client = h.connect();
    client.request(
        &mut h,
        &format!("GET /sse?sid={:032x} HTTP/1.1\r\nHost: h\r\n\r\n", 42),
    );
    let (status, _) = client.response(&mut h);
    assert_eq!(status, 204, "an unknown session: start a new one");
}

#[test]
fn an_idle_event_stream_carries_a_comment_every_15_seconds() {
    let mut h = Harness::new(&[]);
    let (mut stream, _, _) = open_stream(&mut h, "", "");
    h.advance(Duration::from_secs(15));
    assert!(stream.written(&mut h).contains(": keep-alive\n\n"));
}

#[test]
fn a_poll_without_a_session_creates_one_and_its_answer_begins_with_it() {
    let mut h = Harness::new(&[]);
    let mut client = h.connect();
    let (status, answer) = poll(&mut h, &mut client, "");
    assert_eq!(status, 200);
    assert_eq!(answer[0]["type"], "session");
    assert_eq!(answer[0]["sid"].as_str().unwrap().len(), 32);
    // The welcome is event 1 of the session, whenever it is ready.
    let sid = answer[0]["sid"].as_str().unwrap().to_owned();
    let (_, events) = poll(&mut h, &mut client, &format!("?sid={sid}&since=0"));
    assert_eq!(events[0]["type"], "welcome", "{events}");
}

#[test]
fn a_poll_with_nothing_new_is_parked_and_answered_when_an_event_comes() {
    let mut h = Harness::new(&[]);
    let (mut client, sid, since) = new_poll_session(&mut h);
    client.request(
        &mut h,
        &format!("GET /poll?sid={sid}&since={since} HTTP/1.1\r\nHost: h\r\n\r\n"),
    );
    assert!(client.written(&mut h).is_empty(), "parked");
    let mut other = h.websocket("/");
    other.chat(&mut h);
    let (status, body) = client.response(&mut h);
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer[0]["type"], "joined", "{answer}");
}

#[test]
fn a_parked_poll_with_nothing_new_is_answered_empty_after_25_seconds() {
    let mut h = Harness::new(&["--session-grace", "60"]);
    let (mut client, sid, since) = new_poll_session(&mut h);
    client.request(
        &mut h,
        &format!("GET /poll?sid={sid}&since={since} HTTP/1.1\r\nHost: h\r\n\r\n"),
    );
    h.advance(Duration::from_secs(24));
    assert!(client.written(&mut h).is_empty());
    h.advance(Duration::from_secs(1));
    let (status, body) = client.response(&mut h);
    assert_eq!((status, body.as_str()), (200, "[]"));
}

#[test]
fn a_newer_poll_of_the_same_session_ends_the_held_one_with_204() {
    let mut h = Harness::new(&[]);
    let (mut first, sid, since) = new_poll_session(&mut h);
    first.request(
        &mut h,
        &format!("GET /poll?sid={sid}&since={since} HTTP/1.1\r\nHost: h\r\n\r\n"),
    );
    let mut second = h.connect();
    second.request(
        &mut h,
        &format!("GET /poll?sid={sid}&since={since} HTTP/1.1\r\nHost: h\r\n\r\n"),
    );
    assert_eq!(first.response(&mut h).0, 204);
    assert!(second.written(&mut h).is_empty(), "the newer one is parked");
}

#[test]
fn a_message_posted_is_acked_on_the_stream_and_reaches_a_websocket_client() {
    let mut h = Harness::new(&[]);
    let (mut stream, sid, _) = open_stream(&mut h, "", "");
    let mut websocket = h.websocket("/");
    websocket.chat(&mut h);
    stream.written(&mut h);
    let mut sender = h.connect();
    let status = post(
        &mut h,
        &mut sender,
        &sid,
        r#"{"type":"message","payload":"over HTTP"}"#,
    );
    assert_eq!(status, 204);
    let got = websocket.chat(&mut h);
    assert_eq!(got[0]["payload"]["text"], "over HTTP");
    let carried = stream.written(&mut h);
    assert!(carried.contains(r#""type":"ack""#), "{carried}");
    // And back: the WebSocket client's message reaches the stream.
    websocket.text(&mut h, r#"{"type":"message","payload":"over WebSocket"}"#);
    assert!(stream.written(&mut h).contains("over WebSocket"));
}

#[test]
fn a_post_may_carry_an_array_of_envelopes_answered_in_order() {
    let mut h = Harness::new(&["--rate-limit", "1000", "--rate-burst", "1000"]);
    let (mut stream, sid, _) = open_stream(&mut h, "", "");
    stream.written(&mut h);
    let mut sender = h.connect();
    let body = r#"[{"type":"message","payload":"a"},{"type":"nonsense"},{"type":"message","payload":"b"}]"#;
    assert_eq!(post(&mut h, &mut sender, &sid, body), 204);
    let kinds: Vec<String> = sse_events(stream.written(&mut h).as_bytes())
        .iter()
        .map(|(_, _, data)| {
            serde_json::from_str::<Value>(data).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["ack", "error", "ack"]);
}

#[test]
fn posts_are_refused_with_their_status() {
    let mut h = Harness::new(&["--max-message-size", "64"]);
    let (_, sid, _) = open_stream(&mut h, "", "");
    let mut client = h.connect();
    assert_eq!(
        post(&mut h, &mut client, &format!("{:032x}", 9), "{}"),
        404,
        "unknown session"
    );
    let mut client = h.connect();
    assert_eq!(post(&mut h, &mut client, &sid, "not json"), 400);
    let mut client = h.connect();
    assert_eq!(
        post(
            &mut h,
            &mut client,
            &sid,
            &format!(r#"{{"type":"message","payload":"{}"}}"#, "x".repeat(80))
        ),
        413
    );
    // A second POST while the first one's body is still arriving.
    let mut slow = h.connect();
    slow.request(
        &mut h,
        &format!("POST /send?sid={sid} HTTP/1.1\r\nHost: h\r\nContent-Length: 30\r\n\r\n{{"),
    );
    let mut client = h.connect();
    assert_eq!(
        post(&mut h, &mut client, &sid, r#"{"type":"message","payload":"x"}"#),
        409
    );
}

#[test]
fn the_origin_rule_applies_to_the_http_transports() {
    let mut h = Harness::new(&["--allowed-origin", "https://chat.example"]);
    let mut client = h.connect();
    client.request(
        &mut h,
        "GET /poll HTTP/1.1\r\nHost: h\r\nOrigin: https://evil.example\r\n\r\n",
    );
    assert_eq!(client.response(&mut h).0, 403);
    let mut client = h.connect();
    client.request(
        &mut h,
        "GET /poll HTTP/1.1\r\nHost: h\r\nSec-Fetch-Site: same-origin\r\nOrigin: https://other\r\n\r\n",
    );
    assert_eq!(
        client.response(&mut h).0,
        200,
        "same-origin by the browser's word"
    );
    let mut client = h.connect();
    client.request(&mut h, "GET /poll HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(client.response(&mut h).0, 200, "not a browser");
}

#[test]
fn a_session_without_a_reader_ends_after_its_grace_period() {
    let mut h = Harness::new(&["--session-grace", "5"]);
    let (mut client, sid, _) = new_poll_session(&mut h);
    assert_eq!(h.driver.hub().sessions(), 1);
    h.advance(Duration::from_secs(5));
    assert_eq!(h.driver.hub().sessions(), 0);
    let (status, _) = poll(&mut h, &mut client, &format!("?sid={sid}"));
    assert_eq!(status, 404);
}

#[test]
fn a_session_that_falls_behind_is_closed_and_told_why() {
    let mut h = Harness::new(&[
        "--max-queued-output",
        "2048",
        "--rate-limit",
        "1000",
        "--rate-burst",
        "1000",
    ]);
    let (mut client, sid, _) = new_poll_session(&mut h);
    let mut talker = h.websocket("/");
    talker.chat(&mut h);
    for _ in 0..20 {
        talker.text(
            &mut h,
            &format!(r#"{{"type":"message","payload":"{}"}}"#, "y".repeat(200)),
        );
    }
    let (_, events) = poll(&mut h, &mut client, &format!("?sid={sid}&since=1"));
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["type"], "closed", "{events}");
    assert_eq!(last["payload"]["code"], 1008);
}

#[test]
fn an_event_stream_to_an_http_10_client_ends_by_closing() {
    let mut h = Harness::new(&[]);
    let mut client = h.connect();
    client.request(&mut h, "GET /sse HTTP/1.0\r\n\r\n");
    let text = client.written(&mut h);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(
        !text.contains("Transfer-Encoding"),
        "no chunked coding for HTTP/1.0: {text}"
    );
    assert!(text.contains("Connection: close"), "{text}");
}

#[test]
fn socket_bytes_are_counted_for_the_transport_they_carry() {
    let mut h = Harness::new(&[]);
    let mut page = h.connect();
    page.request(&mut h, "GET /style.css HTTP/1.1\r\nHost: h\r\n\r\n");
    page.response(&mut h);
    let (_, sid, _) = open_stream(&mut h, "", "");
    let (mut poller, _, _) = new_poll_session(&mut h);
    post(
        &mut h,
        &mut poller,
        &sid,
        r#"{"type":"message","payload":"counted"}"#,
    );
    let mut websocket = h.websocket("/");
    websocket.chat(&mut h);
    let metrics = h.driver.hub().metrics();
    for kind in Wire::ALL {
        let (received, sent) = metrics.wire_bytes(kind);
        assert!(received > 0 && sent > 0, "{}: {received}/{sent}", kind.name());
    }
}
