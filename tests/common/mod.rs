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
        // Tests run in parallel: each server keeps its messages in memory unless the test names
        // a database of its own.
        let memory = (!args.contains(&"--db")).then_some(["--db", ":memory:"]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_wschat"))
            .args(["--listen", "127.0.0.1:0"])
            .args(memory.iter().flatten())
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
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
