//! Shared by the integration tests: run the real `wschat` binary on a free port and talk to it.
#![allow(clippy::disallowed_methods)] // A program at the I/O edge: it reads the clock itself.
#![allow(dead_code)]

pub mod certs;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// A running server process, killed when dropped.
pub struct TestServer {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every line the server logged to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    /// Starts `wschat --listen 127.0.0.1:0 <args>` and waits for its "listening on" line.
    pub fn start(args: &[&str]) -> Self {
        Self::start_under(&[], args)
    }

    /// Like [`TestServer::start`], with `wrapper` (a program and its arguments that runs the rest
    /// of its command line in its own place, such as `prlimit --fsize=N --`) before the binary.
    pub fn start_under(wrapper: &[&str], args: &[&str]) -> Self {
        let mut child = wschat_command(wrapper, args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wschat");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // "listening on http://ADDR", or https:// with --tls-cert.
                if let Some(addr) = line
                    .split("listening on http")
                    .nth(1)
                    .and_then(|rest| rest.split("://").nth(1))
                {
                    let _ = addr_tx.send(addr.trim().parse::<SocketAddr>().expect("address in log"));
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server did not start");
        Self { child, addr, log }
    }

    /// The server's process id (a wrapper execs the binary in its own process, so it is the same).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Waits until a logged line contains `needle`, for at most `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(line) = self.log.lock().unwrap().iter().find(|line| line.contains(needle)) {
                return Some(line.clone());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends `signal` (e.g. "TERM") with kill(1) and waits for the exit status.
    pub fn signal_and_wait(&mut self, signal: &str, timeout: Duration) -> Option<std::process::ExitStatus> {
        Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill(1)");
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// `[wrapper...] wschat [defaults the test did not name, --listen 127.0.0.1:0 first] <args>`, logging at
/// info level.
fn wschat_command(wrapper: &[&str], args: &[&str]) -> Command {
    // Tests run in parallel: each server keeps its messages in memory unless the test names a
    // database of its own. Every test client comes from 127.0.0.1, so the per-address limits are
    // lifted unless the test is about them.
    let defaults = [
        ("--listen", "127.0.0.1:0"),
        ("--db", ":memory:"),
        ("--max-connections-per-ip", "1000000"),
        ("--ip-rate-limit", "1000000"),
        ("--ip-rate-burst", "1000000"),
    ];
    let unnamed = defaults
        .into_iter()
        .filter(|(flag, _)| !args.contains(flag))
        .flat_map(|(flag, value)| [flag, value]);
    let binary = env!("CARGO_BIN_EXE_wschat");
    let mut command = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut command = Command::new(program);
            command.args(wrapper_args).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command
        .args(unnamed)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// Runs `wschat <args>` when it is expected to stop by itself (a start that must fail): its exit
/// status and the lines it logged. Fails the test if it is still running after `timeout`.
pub fn run_to_exit(args: &[&str], timeout: Duration) -> (std::process::ExitStatus, Vec<String>) {
    let child = wschat_command(&[], args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wschat");
    let pid = child.id();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    let Ok(output) = done_rx.recv_timeout(timeout) else {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        panic!("wschat {args:?} was still running after {timeout:?}");
    };
    let output = output.expect("wait for wschat");
    let log = String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect();
    (output.status, log)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw TCP connection with a read timeout, for malformed input.
pub fn raw_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A valid handshake request for `path`.
pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Reads an HTTP response head (through the blank line); returns it and any bytes after it.
pub fn read_response_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return (String::from_utf8_lossy(&buf).into_owned(), rest);
        }
        let n = stream.read(&mut chunk).expect("read response");
        assert!(
            n > 0,
            "connection closed before the response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The status code of an HTTP response head.
pub fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status line")
}

/// Sends `request` raw and returns the response's status and whole text (until the server closes).
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = raw_connect(addr);
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    (status_of(&text), text)
}

/// A masked client frame with full control over the header (for malformed input).
pub fn client_frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    const KEY: [u8; 4] = [0x12, 0x34, 0x56, 0x78];
    wschat::testing::masked_frame(wschat::testing::first_byte(fin, rsv, opcode), payload, KEY)
}

/// A frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The status code of a Close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 0x8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Reads one unmasked server frame, starting with `pending` bytes already read.
pub fn read_server_frame(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<ServerFrame> {
    let mut chunk = [0u8; 65536];
    loop {
        if let Some((frame, used)) = parse_server_frame(pending) {
            pending.drain(..used);
            return Some(frame);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

fn parse_server_frame(buf: &[u8]) -> Option<(ServerFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames are never masked");
    let (len, header) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        len => (len as usize, 2),
    };
    let payload = buf.get(header..header + len)?.to_vec();
    Some((
        ServerFrame {
            fin: buf[0] & 0x80 != 0,
            opcode: buf[0] & 0x0f,
            payload,
        },
        header + len,
    ))
}

/// Completes a WebSocket handshake on a raw socket; returns the stream and any early frame bytes.
pub fn raw_websocket(addr: SocketAddr, path: &str) -> (TcpStream, Vec<u8>) {
    let mut stream = raw_connect(addr);
    stream.write_all(upgrade_request(path).as_bytes()).unwrap();
    let (head, rest) = read_response_head(&mut stream);
    assert_eq!(status_of(&head), 101, "{head}");
    (stream, rest)
}

// ---- the chat, as its clients see it ----

/// How long any single read may block before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits no test trips unless it means to.
pub const GENEROUS: [&str; 6] = [
    "--rate-limit",
    "100000",
    "--rate-burst",
    "100000",
    "--flood-limit",
    "100000",
];

/// A chat client with its own connection.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    /// The payload of the `welcome` it was greeted with.
    pub welcome: Value,
}

impl Client {
    /// Connects to the chat and reads its `welcome`.
    pub fn connect(server: &TestServer) -> Self {
        let stream = TcpStream::connect(server.addr).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let (ws, response) =
            tungstenite::client(server.url("/"), stream).unwrap_or_else(|error| panic!("handshake: {error}"));
        assert_eq!(response.status(), 101);
        let mut client = Self {
            ws,
            welcome: Value::Null,
        };
        client.welcome = client.expect("welcome");
        client
    }

    pub fn nickname(&self) -> String {
        self.welcome["nickname"].as_str().unwrap().to_owned()
    }

    pub fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    pub fn send(&mut self, kind: &str, payload: Value) {
        self.send_raw(&json!({ "type": kind, "payload": payload }).to_string());
    }

    /// The next JSON message; pings and pongs are skipped, anything else fails the test.
    pub fn recv(&mut self) -> Value {
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => return serde_json::from_str(text.as_str()).expect("JSON"),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(other) => panic!("expected a text message, got {other:?}"),
                Err(error) => panic!("read failed (timeout is {READ_TIMEOUT:?}): {error}"),
            }
        }
    }

    /// The payload of the next message, which must be of type `kind`.
    #[track_caller]
    pub fn expect(&mut self, kind: &str) -> Value {
        let message = self.recv();
        assert_eq!(message["type"], kind, "{message}");
        message["payload"].clone()
    }

    /// Reads until a message of type `kind` and returns its payload, with what came before it.
    pub fn skip_to(&mut self, kind: &str) -> (Value, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let message = self.recv();
            if message["type"] == kind {
                return (message["payload"].clone(), before);
            }
            before.push(message);
        }
    }

    /// The payload of the `error` the next input produced (skipping notices about others).
    #[track_caller]
    pub fn expect_error(&mut self, code: &str) -> Value {
        let (error, before) = self.skip_to("error");
        assert!(before.iter().all(is_notice), "{before:?}");
        assert_eq!(error["code"], code, "{error}");
        assert!(
            error["message"].as_str().is_some_and(|text| !text.is_empty()),
            "{error}"
        );
        error
    }

    /// The next answer to this client's own request that is an `ack` or an `error` (whole, with its
    /// type), skipping notices about others; anything else fails the test.
    #[track_caller]
    pub fn ack_or_error(&mut self) -> Value {
        loop {
            let message = self.recv();
            if message["type"] == "ack" || message["type"] == "error" {
                return message;
            }
            assert!(is_notice(&message), "{message}");
        }
    }

    /// Posts `text` and returns the id of its `ack`.
    pub fn post(&mut self, text: &str) -> u64 {
        self.send("message", json!(text));
        let (ack, before) = self.skip_to("ack");
        assert!(before.iter().all(is_notice), "{before:?}");
        ack["id"].as_u64().unwrap()
    }

    /// Reads until `nickname` posts `text`; returns that message's payload and what came before.
    pub fn read_until_message(&mut self, nickname: &str, text: &str) -> (Value, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let message = self.recv();
            let payload = &message["payload"];
            if message["type"] == "message" && payload["nickname"] == nickname && payload["text"] == text {
                return (payload.clone(), before);
            }
            before.push(message);
        }
    }

    /// Reads until the server's Close frame; returns its code and reason. Messages before it are
    /// returned too.
    pub fn expect_close(&mut self) -> (u16, String, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => before.push(serde_json::from_str(text.as_str()).unwrap()),
                Ok(Message::Close(Some(frame))) => {
                    return (u16::from(frame.code), frame.reason.to_string(), before);
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(other) => panic!("expected a Close, got {other:?}"),
                Err(error) => panic!("no Close frame: {error}"),
            }
        }
    }

    /// Closes cleanly and waits for the server's answer.
    pub fn close(mut self) {
        self.ws.close(None).expect("close");
        loop {
            match self.ws.read() {
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed) => return,
                Err(error) => panic!("closing: {error}"),
            }
        }
    }
}

/// `joined`, `left` and `renamed`: what others' comings and goings produce.
pub fn is_notice(message: &Value) -> bool {
    ["joined", "left", "renamed"].contains(&message["type"].as_str().unwrap_or_default())
}

pub fn texts(messages: &Value) -> Vec<&str> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["text"].as_str().unwrap())
        .collect()
}
