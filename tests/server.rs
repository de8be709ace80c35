//! The core server against RFC 6455, one test per rule, on the real binary.
//!
//! Well-behaved traffic goes through `tungstenite`, an independent client; every malformed input is
//! written as raw bytes on a TCP socket, and the answer is checked exactly: the HTTP status of a
//! refused handshake, the status code of the Close frame that fails a connection, and that the
//! server then closes TCP without sending anything more. Timers run with fractional-second flags;
//! every read and wait is bounded.
#![allow(clippy::disallowed_methods)] // A program at the I/O edge: it reads the clock itself.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tungstenite::{ClientRequestBuilder, Message, WebSocket};

// Opcodes (§5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The masking key `client_frame` uses.
const KEY: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

/// The `Sec-WebSocket-Key` of `upgrade_request`, and its accept value, from RFC 6455 §1.3.
const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A handshake request, edited one header at a time so that each test breaks exactly one rule.
#[derive(Clone)]
struct Head {
    request_line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    /// A valid upgrade request for `path`.
    fn upgrade(path: &str) -> Self {
        Self {
            request_line: format!("GET {path} HTTP/1.1"),
            headers: [
                ("Host", "127.0.0.1"),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", RFC_KEY),
                ("Sec-WebSocket-Version", "13"),
            ]
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        }
    }

    fn request_line(mut self, line: &str) -> Self {
        self.request_line = line.to_owned();
        self
    }

    /// Replaces the header `name` (or adds it).
    fn with(mut self, name: &str, value: &str) -> Self {
        match self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(header) => header.1 = value.to_owned(),
            None => self.headers.push((name.to_owned(), value.to_owned())),
        }
        self
    }

    fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut text = format!("{}\r\n", self.request_line);
        for (name, value) in &self.headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        text.into_bytes()
    }
}

/// A complete HTTP response, read until the server closed the connection.
#[derive(Debug)]
struct HttpResponse {
    status: u16,
    head: String,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The error responses explain themselves in exactly one line of text.
    fn assert_one_line_body(&self) {
        assert!(
            self.body.ends_with('\n') && self.body.trim_end().lines().count() == 1,
            "body is not one line: {:?}",
            self.body
        );
        assert!(!self.body.trim().is_empty(), "body is empty");
        assert_eq!(
            self.header("Content-Length"),
            Some(self.body.len().to_string().as_str()),
            "{self:?}"
        );
    }
}

fn exchange(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let (status, text) = http_exchange(addr, request);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    HttpResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// A tungstenite client on a socket with bounded timeouts.
type Client = WebSocket<TcpStream>;

fn ws_connect(addr: SocketAddr, request: ClientRequestBuilder) -> Result<Client, tungstenite::Error> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    match tungstenite::client(request, stream) {
        Ok((ws, _response)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(error)) => Err(error),
        Err(tungstenite::HandshakeError::Interrupted(_)) => panic!("handshake timed out"),
    }
}

fn request_for(server: &TestServer, path: &str) -> ClientRequestBuilder {
    ClientRequestBuilder::new(server.url(path).parse().unwrap())
}

fn ws_echo_client(server: &TestServer) -> Client {
    ws_connect(server.addr, request_for(server, "/echo")).expect("handshake")
}

/// Sends `message` and expects it back unchanged.
fn assert_echoes(ws: &mut Client, message: Message) {
    ws.send(message.clone()).expect("send");
    assert_eq!(ws.read().expect("echo"), message);
}

/// Closes from the client side and reads until the server has closed TCP.
fn close_gracefully(mut ws: Client) {
    ws.close(None).expect("close");
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => return,
            Err(error) => panic!("unclean close: {error}"),
        }
    }
}

/// Raw WebSocket connection to `/echo`: the socket and bytes already read after the 101.
struct Raw {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Raw {
    fn open(server: &TestServer) -> Self {
        let (stream, pending) = raw_websocket(server.addr, "/echo");
        Self { stream, pending }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// The next frame, which must arrive within the socket's read timeout.
    fn frame(&mut self) -> ServerFrame {
        read_server_frame(&mut self.stream, &mut self.pending).expect("a frame from the server")
    }

    /// Expects a Close frame next and returns it.
    fn close_frame(&mut self) -> ServerFrame {
        let frame = self.frame();
        assert_eq!(frame.opcode, CLOSE, "expected Close, got {frame:?}");
        frame
    }

    /// Expects the server to close TCP with nothing more on the wire.
    fn assert_eof(&mut self, within: Duration) {
        let rest = read_to_eof(&mut self.stream, within);
        self.pending.extend_from_slice(&rest);
        assert!(
            self.pending.is_empty(),
            "bytes after the server's Close: {:?}",
            self.pending
        );
    }

    /// "Fail the WebSocket Connection" (§7.1.7): the server sends one Close with `code`, then closes
    /// TCP and sends nothing else.
    fn assert_failed_with(&mut self, code: u16) {
        let close = self.close_frame();
        assert_eq!(
            close.close_code(),
            Some(code),
            "close payload {:?}",
            close.payload
        );
        self.assert_eof(Duration::from_secs(2));
    }
}

/// Reads until EOF and returns what arrived; fails if the server has not closed within `within`.
fn read_to_eof(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "server did not close TCP within {within:?}");
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return bytes,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) => panic!("expected a clean EOF, got {error}"),
        }
    }
}

/// Sends `bytes` on a fresh `/echo` connection and returns the code of the server's Close (the one
/// that fails the connection, or the answer to the client's Close), checking that the server then
/// closes TCP with nothing in between.
fn close_code_answering(server: &TestServer, bytes: &[u8]) -> u16 {
    let mut raw = Raw::open(server);
    raw.send(bytes);
    let close = raw.close_frame();
    raw.assert_eof(Duration::from_secs(2));
    close.close_code().expect("a Close with a status code")
}

/// A Close frame payload.
fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

/// Log lines that mention the peer at `addr`.
fn log_lines_for(server: &TestServer, addr: SocketAddr) -> Vec<String> {
    let needle = format!(" {addr} ");
    server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains(&needle))
        .cloned()
        .collect()
}

/// Resident memory of a process, in KiB (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Writes echo requests of `frame` without ever reading, until the socket stops taking them for
/// `stall` (the server stopped reading) or `limit` bytes were written. Returns the bytes written.
fn flood_until_stalled(stream: &mut TcpStream, frame: &[u8], limit: usize, stall: Duration) -> usize {
    stream.set_write_timeout(Some(stall)).unwrap();
    let mut written = 0;
    while written < limit {
        let offset = written % frame.len();
        match stream.write(&frame[offset..]) {
            Ok(n) => written += n,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(error) => panic!("flood write failed: {error}"),
        }
    }
    written
}

// ---------------------------------------------------------------------------------------------
// Opening handshake (§4.2)
// ---------------------------------------------------------------------------------------------

#[test]
fn echo_endpoint_echoes_text_and_binary_to_a_conforming_client() {
    let server = TestServer::start(&["--echo"]);
    let mut ws = ws_echo_client(&server);
    let big: Vec<u8> = (0..60 * 1024).map(|i| (i % 251) as u8).collect();
    let big_text: String = "é€😀abc".chars().cycle().take(20 * 1024).collect();
    for message in [
        Message::text("Hello, echo"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::binary(big),
        Message::text(big_text),
        Message::text(""),
        Message::binary(Vec::new()),
    ] {
        assert_echoes(&mut ws, message);
    }
    close_gracefully(ws);
}

#[test]
fn request_head_split_into_many_small_writes_is_upgraded() {
    let server = TestServer::start(&["--echo"]);
    let mut stream = raw_connect(server.addr);
    for piece in upgrade_request("/echo").as_bytes().chunks(7) {
        stream.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(5));
    }
    let (head, pending) = read_response_head(&mut stream);
    assert_eq!(status_of(&head), 101, "{head}");
    let mut raw = Raw { stream, pending };
    // The first frame, a byte at a time: the frame parser resumes anywhere too.
    for byte in client_frame(true, 0, TEXT, b"split") {
        raw.send(&[byte]);
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(raw.frame().payload, b"split");
}

#[test]
fn frames_sent_in_the_same_write_as_the_request_head_are_processed() {
    let server = TestServer::start(&["--echo"]);
    let mut stream = raw_connect(server.addr);
    let mut bytes = upgrade_request("/echo").into_bytes();
    bytes.extend(client_frame(true, 0, TEXT, b"early"));
    bytes.extend(client_frame(true, 0, BINARY, b"bird"));
    bytes.extend(client_frame(true, 0, PING, b"p"));
    stream.write_all(&bytes).unwrap();
    let (head, pending) = read_response_head(&mut stream);
    assert_eq!(status_of(&head), 101, "{head}");
    let mut raw = Raw { stream, pending };
    let frames: Vec<(u8, Vec<u8>)> = (0..3)
        .map(|_| raw.frame())
        .map(|frame| (frame.opcode, frame.payload))
        .collect();
    assert_eq!(
        frames,
        [
            (TEXT, b"early".to_vec()),
            (BINARY, b"bird".to_vec()),
            (PONG, b"p".to_vec())
        ]
    );
}

#[test]
fn sec_websocket_accept_is_the_rfc_digest_of_the_key() {
    let server = TestServer::start(&["--echo"]);
    let mut stream = raw_connect(server.addr);
    stream.write_all(&Head::upgrade("/echo").bytes()).unwrap();
    let (head, _) = read_response_head(&mut stream);
    let response = HttpResponse {
        status: status_of(&head),
        head,
        body: String::new(),
    };
    assert_eq!(response.status, 101);
    assert!(response.head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert_eq!(response.header("Sec-WebSocket-Accept"), Some(RFC_ACCEPT));
    assert_eq!(
        response.header("Upgrade").map(str::to_ascii_lowercase).as_deref(),
        Some("websocket")
    );
    assert_eq!(
        response
            .header("Connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("upgrade")
    );
}

#[test]
fn unsupported_version_is_426_naming_version_13() {
    let server = TestServer::start(&["--echo"]);
    for version in ["8", "7", "14", "0"] {
        let response = exchange(
            server.addr,
            &Head::upgrade("/echo")
                .with("Sec-WebSocket-Version", version)
                .bytes(),
        );
        assert_eq!(response.status, 426, "version {version}: {response:?}");
        assert_eq!(response.header("Sec-WebSocket-Version"), Some("13"));
        response.assert_one_line_body();
    }
}

#[test]
fn malformed_upgrade_request_is_400_with_a_one_line_body() {
    let server = TestServer::start(&["--echo"]);
    let valid = Head::upgrade("/echo");
    let table: &[(&str, Head)] = &[
        ("missing Host", valid.clone().without("Host")),
        ("empty Host", valid.clone().with("Host", "")),
        ("missing key", valid.clone().without("Sec-WebSocket-Key")),
        (
            "key not base64",
            valid.clone().with("Sec-WebSocket-Key", "not base64!"),
        ),
        (
            "key of 15 bytes",
            valid.clone().with("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAA"),
        ),
        (
            "key of 17 bytes",
            valid
                .clone()
                .with("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAAA="),
        ),
        ("missing Connection", valid.clone().without("Connection")),
        (
            "Connection without upgrade",
            valid.clone().with("Connection", "keep-alive"),
        ),
        ("Upgrade not websocket", valid.clone().with("Upgrade", "h2c")),
        ("missing version", valid.clone().without("Sec-WebSocket-Version")),
        ("HTTP/1.0", valid.clone().request_line("GET /echo HTTP/1.0")),
    ];
    for (rule, head) in table {
        let response = exchange(server.addr, &head.bytes());
        assert_eq!(response.status, 400, "{rule}: {response:?}");
        response.assert_one_line_body();
    }
    let garbage = exchange(
        server.addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    );
    assert_eq!(garbage.status, 400, "not HTTP at all: {garbage:?}");
}

#[test]
fn upgrade_header_lists_and_case_are_accepted() {
    let server = TestServer::start(&["--echo"]);
    let firefox = Head::upgrade("/echo")
        .with("Connection", "keep-alive, Upgrade")
        .with("Upgrade", "WebSocket");
    let mut stream = raw_connect(server.addr);
    stream.write_all(&firefox.bytes()).unwrap();
    let (head, _) = read_response_head(&mut stream);
    assert_eq!(status_of(&head), 101, "{head}");
}

#[test]
fn post_upgrade_is_405() {
    let server = TestServer::start(&["--echo"]);
    let response = exchange(
        server.addr,
        &Head::upgrade("/echo").request_line("POST /echo HTTP/1.1").bytes(),
    );
    assert_eq!(response.status, 405, "{response:?}");
    assert_eq!(response.header("Allow"), Some("GET"));
    response.assert_one_line_body();
}

#[test]
fn upgrade_at_unknown_path_is_404() {
    let server = TestServer::start(&["--echo"]);
    for path in ["/nope", "/echo/", "/echoes"] {
        let response = exchange(server.addr, &Head::upgrade(path).bytes());
        assert_eq!(response.status, 404, "{path}: {response:?}");
        response.assert_one_line_body();
    }
}

#[test]
fn echo_path_without_echo_flag_is_404() {
    let server = TestServer::start(&[]);
    let response = exchange(server.addr, &Head::upgrade("/echo").bytes());
    assert_eq!(response.status, 404, "{response:?}");
    response.assert_one_line_body();
}

#[test]
fn plain_get_of_the_echo_endpoint_is_426() {
    let server = TestServer::start(&["--echo"]);
    let response = exchange(server.addr, b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(response.status, 426, "{response:?}");
    assert_eq!(response.header("Upgrade"), Some("websocket"));
    response.assert_one_line_body();
}

/// Reads one whole response (head and `Content-Length` body) from a kept-alive connection.
fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> HttpResponse {
    read_response_to(stream, pending, "GET")
}

/// [`read_response`] to a request made with `method`: the answer to HEAD has no body.
fn read_response_to(stream: &mut TcpStream, pending: &mut Vec<u8>, method: &str) -> HttpResponse {
    let mut chunk = [0u8; 16 * 1024];
    let end = loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).expect("read response head");
        assert!(n > 0, "connection closed before the response head");
        pending.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
    let mut response = HttpResponse {
        status: status_of(&head),
        head: head.trim_end().to_owned(),
        body: String::new(),
    };
    let length: usize = match method {
        "HEAD" => 0,
        _ => response
            .header("Content-Length")
            .map_or(0, |v| v.parse().unwrap()),
    };
    while pending.len() < end + length {
        let n = stream.read(&mut chunk).expect("read response body");
        assert!(n > 0, "connection closed inside the body");
        pending.extend_from_slice(&chunk[..n]);
    }
    response.body = String::from_utf8_lossy(&pending[end..end + length]).into_owned();
    pending.drain(..end + length);
    response
}

#[test]
fn the_pages_three_resources_load_over_one_kept_alive_connection() {
    let server = TestServer::start(&[]);
    let mut stream = raw_connect(server.addr);
    let mut pending = Vec::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .unwrap();
        let response = read_response(&mut stream, &mut pending);
        assert_eq!(response.status, 200, "{path}: {response:?}");
        assert!(
            response.header("Content-Type").unwrap().starts_with(kind),
            "{path}"
        );
        assert_eq!(response.header("Connection"), None, "{path}: kept alive");
        assert!(!response.body.is_empty());
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_then_upgraded() {
    let server = TestServer::start(&["--echo"]);
    let mut stream = raw_connect(server.addr);
    let mut requests =
        b"GET /style.css HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    requests.extend(Head::upgrade("/echo").bytes());
    requests.extend(client_frame(true, 0, TEXT, b"after three requests"));
    stream.write_all(&requests).unwrap();
    let mut pending = Vec::new();
    let css = read_response(&mut stream, &mut pending);
    assert!(css.header("Content-Type").unwrap().starts_with("text/css"));
    let head = read_response_to(&mut stream, &mut pending, "HEAD");
    assert!(head.header("Content-Type").unwrap().starts_with("text/html"));
    assert!(head.body.is_empty(), "HEAD has no body");
    let upgrade = read_response(&mut stream, &mut pending);
    assert_eq!(upgrade.status, 101);
    let echo = read_server_frame(&mut stream, &mut pending).expect("echo");
    assert_eq!(echo.payload, b"after three requests");
}

#[test]
fn request_bodies_and_smuggling_shapes_are_refused_and_the_connection_closed() {
    let server = TestServer::start(&[]);
    let table: &[(&str, &str, u16)] = &[
        (
            "a body nobody takes",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            413,
        ),
        (
            "Content-Length with Transfer-Encoding",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            "two different Content-Lengths",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            400,
        ),
        (
            "an unknown transfer coding",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        (
            "a body whose end cannot be found",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            400,
        ),
    ];
    for (rule, request, status) in table {
        let response = exchange(server.addr, request.as_bytes());
        assert_eq!(response.status, *status, "{rule}: {response:?}");
        assert_eq!(response.header("Connection"), Some("close"), "{rule}");
        response.assert_one_line_body();
    }
}

#[test]
fn request_head_over_8_kib_is_431() {
    let server = TestServer::start(&["--echo"]);
    // Complete, but too long.
    let complete = Head::upgrade("/echo")
        .with("X-Padding", &"a".repeat(9 * 1024))
        .bytes();
    let response = exchange(server.addr, &complete);
    assert_eq!(response.status, 431, "{response:?}");
    response.assert_one_line_body();
    // Never ending: refused once 8 KiB have arrived, without waiting for the end of the head.
    let mut endless = b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ".to_vec();
    endless.resize(9 * 1024, b'a');
    let response = exchange(server.addr, &endless);
    assert_eq!(response.status, 431, "{response:?}");
}

#[test]
fn too_many_header_fields_is_431() {
    let server = TestServer::start(&["--echo"]);
    let mut head = Head::upgrade("/echo");
    for i in 0..40 {
        head = head.with(&format!("X-Header-{i}"), "v");
    }
    let response = exchange(server.addr, &head.bytes());
    assert_eq!(response.status, 431, "{response:?}");
    response.assert_one_line_body();
}

#[test]
fn handshake_over_max_connections_is_503_until_a_slot_frees() {
    let server = TestServer::start(&["--echo", "--max-connections", "2"]);
    let first = ws_echo_client(&server);
    let mut second = ws_echo_client(&server);
    let response = exchange(server.addr, &Head::upgrade("/echo").bytes());
    assert_eq!(response.status, 503, "{response:?}");
    response.assert_one_line_body();
    assert_echoes(&mut second, Message::text("still served"));

    close_gracefully(first);
    // The server frees the slot when it sees our FIN, which races with the next connect: allow
    // it a moment, bounded.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut third = loop {
        match ws_connect(server.addr, request_for(&server, "/echo")) {
            Ok(ws) => break ws,
            Err(tungstenite::Error::Http(response))
                if response.status() == 503 && Instant::now() < deadline =>
            {
                thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("a freed slot is not reused: {error}"),
        }
    };
    assert_echoes(&mut third, Message::text("in the freed slot"));
}

#[test]
fn origin_outside_allowed_origins_is_403_and_allowed_origin_is_101() {
    let server = TestServer::start(&["--echo", "--allowed-origin", "https://chat.example"]);
    let forbidden = exchange(
        server.addr,
        &Head::upgrade("/echo")
            .with("Origin", "https://evil.example")
            .bytes(),
    );
    assert_eq!(forbidden.status, 403, "{forbidden:?}");
    forbidden.assert_one_line_body();

    for origin in ["https://chat.example", "HTTPS://CHAT.example"] {
        let mut ws = ws_connect(
            server.addr,
            request_for(&server, "/echo").with_header("Origin", origin),
        )
        .unwrap_or_else(|error| panic!("origin {origin}: {error}"));
        assert_echoes(&mut ws, Message::text("allowed"));
    }
    // A client without Origin is not a browser and carries no ambient credentials (§10.2).
    let mut ws = ws_echo_client(&server);
    assert_echoes(&mut ws, Message::text("no origin"));
}

#[test]
fn offered_subprotocols_are_not_chosen_when_the_endpoint_speaks_none() {
    let server = TestServer::start(&["--echo"]);
    let head = Head::upgrade("/echo").with("Sec-WebSocket-Protocol", "chat, superchat");
    let mut stream = raw_connect(server.addr);
    stream.write_all(&head.bytes()).unwrap();
    let (head, _) = read_response_head(&mut stream);
    assert_eq!(status_of(&head), 101, "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
        "{head}"
    );
}

#[test]
fn permessage_deflate_is_accepted_and_both_directions_compress() {
    let server = TestServer::start(&["--echo"]);
    let head = Head::upgrade("/echo").with(
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits",
    );
    let mut stream = raw_connect(server.addr);
    stream.write_all(&head.bytes()).unwrap();
    let (head, mut pending) = read_response_head(&mut stream);
    assert_eq!(status_of(&head), 101, "{head}");
    assert!(
        head.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"),
        "{head}"
    );
    // RFC 7692 §7.2.3.1: "Hello" compressed, with RSV1 on its frame.
    stream
        .write_all(&client_frame(
            true,
            0b100,
            TEXT,
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
        ))
        .unwrap();
    let echo = read_server_frame(&mut stream, &mut pending).expect("echo");
    assert_eq!(
        (echo.opcode, echo.payload.as_slice()),
        (TEXT, &b"Hello"[..]),
        "short: sent plain"
    );
    // A long message comes back compressed: RSV1 set, and fewer bytes than it carries.
    let long = "a chat line that repeats itself. ".repeat(20);
    stream
        .write_all(&client_frame(true, 0, TEXT, long.as_bytes()))
        .unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    while raw.len() < 2 {
        let n = stream.read(&mut chunk).unwrap();
        raw.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(raw[0], 0x80 | 0x40 | TEXT, "FIN, RSV1, text");
    assert!(
        usize::from(raw[1] & 0x7f) < long.len() / 4,
        "compressed to {} bytes",
        raw[1]
    );
}

#[test]
fn no_deflate_declines_the_extension_and_the_client_talks_uncompressed() {
    let server = TestServer::start(&["--echo", "--no-deflate"]);
    let head = Head::upgrade("/echo").with("Sec-WebSocket-Extensions", "permessage-deflate");
    let mut stream = raw_connect(server.addr);
    stream.write_all(&head.bytes()).unwrap();
    let (head, _) = read_response_head(&mut stream);
    assert_eq!(status_of(&head), 101, "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("sec-websocket-extensions"),
        "{head}"
    );
    let request = request_for(&server, "/echo").with_header("Sec-WebSocket-Extensions", "permessage-deflate");
    let mut ws = ws_connect(server.addr, request).expect("handshake");
    assert_echoes(&mut ws, Message::text("uncompressed"));
}

// ---------------------------------------------------------------------------------------------
// Frames (§5)
// ---------------------------------------------------------------------------------------------

#[test]
fn unmasked_client_frame_is_closed_with_1002() {
    let server = TestServer::start(&["--echo"]);
    assert_eq!(close_code_answering(&server, b"\x81\x05Hello"), 1002);
}

#[test]
fn reserved_bits_without_an_extension_are_closed_with_1002() {
    let server = TestServer::start(&["--echo"]);
    for rsv in 1..=7 {
        let code = close_code_answering(&server, &client_frame(true, rsv, TEXT, b"rsv"));
        assert_eq!(code, 1002, "RSV bits {rsv:03b}");
    }
}

#[test]
fn reserved_opcode_is_closed_with_1002() {
    let server = TestServer::start(&["--echo"]);
    for opcode in [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        let code = close_code_answering(&server, &client_frame(true, 0, opcode, b""));
        assert_eq!(code, 1002, "opcode {opcode:#x}");
    }
}

#[test]
fn control_frame_over_125_bytes_is_closed_with_1002() {
    let server = TestServer::start(&["--echo"]);
    for opcode in [PING, PONG, CLOSE] {
        let mut payload = close_payload(1000, b"");
        payload.resize(126, b'x');
        let code = close_code_answering(&server, &client_frame(true, 0, opcode, &payload));
        assert_eq!(code, 1002, "opcode {opcode:#x}");
    }
}

#[test]
fn fragmented_control_frame_is_closed_with_1002() {
    let server = TestServer::start(&["--echo"]);
    for opcode in [PING, PONG, CLOSE] {
        let code = close_code_answering(&server, &client_frame(false, 0, opcode, b""));
        assert_eq!(code, 1002, "opcode {opcode:#x}");
    }
}

#[test]
fn payload_length_with_most_significant_bit_set_is_closed_with_1002() {
    let server = TestServer::start(&["--echo"]);
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 63 | 5).to_be_bytes());
    header.extend_from_slice(&KEY);
    assert_eq!(close_code_answering(&server, &header), 1002);
}

#[test]
fn continuation_without_a_message_is_closed_with_1002() {
    let server = TestServer::start(&["--echo"]);
    for fin in [true, false] {
        let code = close_code_answering(&server, &client_frame(fin, 0, CONTINUATION, b"orphan"));
        assert_eq!(code, 1002, "fin {fin}");
    }
}

#[test]
fn new_message_inside_a_fragmented_message_is_closed_with_1002() {
    let server = TestServer::start(&["--echo"]);
    for (first, second) in [(TEXT, TEXT), (TEXT, BINARY), (BINARY, TEXT), (BINARY, BINARY)] {
        let mut bytes = client_frame(false, 0, first, b"start");
        bytes.extend(client_frame(true, 0, second, b"intruder"));
        assert_eq!(
            close_code_answering(&server, &bytes),
            1002,
            "{first:#x} then {second:#x}"
        );
    }
}

#[test]
fn invalid_utf8_text_is_closed_with_1007() {
    let server = TestServer::start(&["--echo"]);
    let table: &[(&str, &[u8])] = &[
        ("byte 0xFF", b"\xff"),
        ("lone continuation byte", b"abc\x80"),
        ("overlong encoding of '/'", b"\xc0\xaf"),
        ("UTF-16 surrogate", b"\xed\xa0\x80"),
        ("beyond U+10FFFF", b"\xf4\x90\x80\x80"),
        ("message ends inside a character", b"euro \xe2\x82"),
    ];
    for (rule, payload) in table {
        let code = close_code_answering(&server, &client_frame(true, 0, TEXT, payload));
        assert_eq!(code, 1007, "{rule}");
    }
    // Fragmented: a character left unfinished by the final fragment.
    let mut bytes = client_frame(false, 0, TEXT, b"euro \xe2");
    bytes.extend(client_frame(true, 0, CONTINUATION, b"\x82"));
    assert_eq!(close_code_answering(&server, &bytes), 1007, "fragmented");
}

#[test]
fn invalid_utf8_is_detected_before_the_frame_completes() {
    let server = TestServer::start(&["--echo"]);
    let mut payload = b"Hello \xff".to_vec();
    payload.resize(1000, b'a');
    let frame = client_frame(true, 0, TEXT, &payload);
    let header_len = 2 + 2 + 4;
    let mut raw = Raw::open(&server);
    // The header announces 1000 bytes; only the first 7 are sent, the last one invalid.
    raw.send(&frame[..header_len + 7]);
    raw.assert_failed_with(1007);

    // The same in the first fragment of a message: no need to wait for its end.
    let mut raw = Raw::open(&server);
    raw.send(&client_frame(false, 0, TEXT, b"ok \xc0 bad"));
    raw.assert_failed_with(1007);
}

#[test]
fn frame_over_max_frame_size_is_closed_with_1009_from_its_header_alone() {
    let server = TestServer::start(&["--echo", "--max-frame-size", "1024"]);
    let mut raw = Raw::open(&server);
    raw.send(&client_frame(true, 0, BINARY, &[7; 1024]));
    assert_eq!(raw.frame().payload.len(), 1024, "a frame at the limit is fine");

    let frame = client_frame(true, 0, BINARY, &[7; 1025]);
    raw.send(&frame[..2 + 2 + 4]); // Header only: the payload is never sent.
    raw.assert_failed_with(1009);
}

#[test]
fn message_over_max_message_size_across_fragments_is_closed_with_1009() {
    let server = TestServer::start(&["--echo", "--max-message-size", "1000"]);
    let mut raw = Raw::open(&server);
    raw.send(&client_frame(false, 0, BINARY, &[1; 400]));
    raw.send(&client_frame(false, 0, CONTINUATION, &[2; 400]));
    raw.send(&client_frame(true, 0, CONTINUATION, &[3; 200]));
    assert_eq!(raw.frame().payload.len(), 1000, "a message at the limit is fine");

    raw.send(&client_frame(false, 0, TEXT, &[b'a'; 400]));
    raw.send(&client_frame(false, 0, CONTINUATION, &[b'b'; 400]));
    let third = client_frame(true, 0, CONTINUATION, &[b'c'; 201]);
    raw.send(&third[..2 + 2 + 4]); // Refused from the header that crosses the limit.
    raw.assert_failed_with(1009);
}

#[test]
fn message_in_more_than_max_fragments_is_closed_with_1009() {
    let server = TestServer::start(&["--echo", "--max-fragments", "4"]);
    let mut raw = Raw::open(&server);
    let mut bytes = client_frame(false, 0, TEXT, b"1");
    for piece in [b"2", b"3"] {
        bytes.extend(client_frame(false, 0, CONTINUATION, piece));
    }
    bytes.extend(client_frame(true, 0, CONTINUATION, b"4"));
    raw.send(&bytes);
    assert_eq!(raw.frame().payload, b"1234", "4 fragments are fine");

    let mut bytes = client_frame(false, 0, TEXT, b"1");
    for piece in [b"2", b"3", b"4"] {
        bytes.extend(client_frame(false, 0, CONTINUATION, piece));
    }
    bytes.extend(client_frame(true, 0, CONTINUATION, b"5"));
    raw.send(&bytes);
    raw.assert_failed_with(1009);
}

#[test]
fn fragmented_message_is_reassembled_and_echoed_whole() {
    let server = TestServer::start(&["--echo"]);
    let mut raw = Raw::open(&server);
    // "€" is E2 82 AC: split across fragments, it is still one valid character.
    raw.send(&client_frame(false, 0, TEXT, b"Hello, \xe2"));
    raw.send(&client_frame(false, 0, CONTINUATION, b""));
    raw.send(&client_frame(false, 0, CONTINUATION, b"\x82"));
    raw.send(&client_frame(true, 0, CONTINUATION, b"\xac world"));
    let echo = raw.frame();
    assert_eq!((echo.fin, echo.opcode), (true, TEXT));
    assert_eq!(String::from_utf8(echo.payload).unwrap(), "Hello, € world");

    let mut bytes = client_frame(false, 0, BINARY, &[1, 2]);
    bytes.extend(client_frame(true, 0, CONTINUATION, &[3]));
    raw.send(&bytes);
    let echo = raw.frame();
    assert_eq!(
        (echo.fin, echo.opcode, echo.payload),
        (true, BINARY, vec![1, 2, 3])
    );
}

#[test]
fn ping_between_fragments_is_answered_at_once() {
    let server = TestServer::start(&["--echo"]);
    let mut raw = Raw::open(&server);
    raw.send(&client_frame(false, 0, TEXT, b"first half, "));
    raw.send(&client_frame(true, 0, PING, b"meanwhile"));
    // The message is still open; the Pong must not wait for it.
    let pong = raw.frame();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (PONG, &b"meanwhile"[..]));
    raw.send(&client_frame(true, 0, CONTINUATION, b"second half"));
    let echo = raw.frame();
    assert_eq!(
        (echo.opcode, echo.payload.as_slice()),
        (TEXT, &b"first half, second half"[..])
    );
}

#[test]
fn ping_is_answered_with_a_pong_of_the_same_payload() {
    let server = TestServer::start(&["--echo"]);
    let mut raw = Raw::open(&server);
    let all_bytes: Vec<u8> = (0..125).map(|i| (i * 2) as u8).collect();
    for payload in [&b""[..], b"x", b"\x00\xff binary", &all_bytes] {
        raw.send(&client_frame(true, 0, PING, payload));
        let pong = raw.frame();
        assert_eq!((pong.fin, pong.opcode), (true, PONG));
        assert_eq!(pong.payload, payload);
    }
}

#[test]
fn unsolicited_pong_gets_no_reply() {
    let server = TestServer::start(&["--echo", "--ping-interval", "0"]);
    let mut raw = Raw::open(&server);
    raw.send(&client_frame(true, 0, PONG, b"unsolicited"));
    raw.send(&client_frame(true, 0, PONG, b""));
    // The answer to this ping is the very next frame: nothing was sent for the pongs.
    raw.send(&client_frame(true, 0, PING, b"marker"));
    let next = raw.frame();
    assert_eq!((next.opcode, next.payload.as_slice()), (PONG, &b"marker"[..]));
}

// ---------------------------------------------------------------------------------------------
// Closing (§5.5.1, §7)
// ---------------------------------------------------------------------------------------------

#[test]
fn close_is_echoed_with_its_code_then_the_server_closes_tcp() {
    let server = TestServer::start(&["--echo"]);
    let mut raw = Raw::open(&server);
    raw.send(&client_frame(true, 0, CLOSE, &close_payload(1000, b"bye")));
    let close = raw.close_frame();
    assert_eq!(close.close_code(), Some(1000));
    // The server closes TCP first (§7.1.1): EOF while our socket is still open.
    raw.assert_eof(Duration::from_secs(2));
}

#[test]
fn empty_close_is_answered_with_empty_close() {
    let server = TestServer::start(&["--echo"]);
    let mut raw = Raw::open(&server);
    raw.send(&client_frame(true, 0, CLOSE, b""));
    let close = raw.close_frame();
    assert!(close.payload.is_empty(), "{close:?}");
    raw.assert_eof(Duration::from_secs(2));
}

#[test]
fn close_codes_that_may_be_sent_are_echoed_and_others_are_1002() {
    let server = TestServer::start(&["--echo"]);
    let echoed = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999,
    ];
    let refused = [
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ];
    for (codes, expected) in [(&echoed[..], None), (&refused[..], Some(1002))] {
        for &code in codes {
            let answer =
                close_code_answering(&server, &client_frame(true, 0, CLOSE, &close_payload(code, b"")));
            assert_eq!(answer, expected.unwrap_or(code), "close code {code}");
        }
    }
}

#[test]
fn one_byte_close_payload_is_closed_with_1002() {
    let server = TestServer::start(&["--echo"]);
    assert_eq!(
        close_code_answering(&server, &client_frame(true, 0, CLOSE, b"\x03")),
        1002
    );
}

#[test]
fn close_reason_that_is_not_utf8_is_closed_with_1007() {
    let server = TestServer::start(&["--echo"]);
    let payload = close_payload(1000, b"bye \xff");
    assert_eq!(
        close_code_answering(&server, &client_frame(true, 0, CLOSE, &payload)),
        1007
    );
}

#[test]
fn nothing_is_sent_after_the_servers_close() {
    let server = TestServer::start(&["--echo"]);
    let after: Vec<u8> = [
        client_frame(true, 0, PING, b"ping"),
        client_frame(true, 0, TEXT, b"text"),
        client_frame(true, 0, CLOSE, &close_payload(1000, b"")),
    ]
    .concat();

    // After answering the client's Close.
    let mut raw = Raw::open(&server);
    raw.send(&client_frame(true, 0, CLOSE, &close_payload(1000, b"")));
    raw.send(&after);
    assert_eq!(raw.close_frame().close_code(), Some(1000));
    raw.assert_eof(Duration::from_secs(2));

    // After failing the connection, even for frames that came in the same write.
    let mut raw = Raw::open(&server);
    raw.send(&[b"\x81\x02no".to_vec(), after.clone()].concat());
    raw.assert_failed_with(1002);
}

// ---------------------------------------------------------------------------------------------
// Timers
// ---------------------------------------------------------------------------------------------

#[test]
fn slowloris_is_disconnected_after_the_handshake_timeout() {
    let server = TestServer::start(&["--echo", "--handshake-timeout", "0.5"]);
    let start = Instant::now();
    let mut stream = raw_connect(server.addr);
    // Half a head, then a byte now and then: trickling does not extend the deadline.
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut byte = [0u8; 1];
    let outcome = loop {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "still connected after 3 s"
        );
        let _ = stream.write(b"X");
        match stream.read(&mut byte) {
            Ok(0) => break Ok(()),
            Ok(_) => break Err(format!("unexpected response byte {byte:?}")),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) if error.kind() == ErrorKind::ConnectionReset => break Ok(()),
            Err(error) => break Err(error.to_string()),
        }
    };
    let elapsed = start.elapsed();
    assert_eq!(outcome, Ok(()));
    assert!(
        elapsed >= Duration::from_millis(450),
        "dropped too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1500),
        "dropped too late: {elapsed:?}"
    );
    assert!(
        server
            .wait_for_log("handshake timed out", Duration::from_secs(1))
            .is_some(),
        "no log line"
    );
}

#[test]
fn ping_is_sent_every_ping_interval() {
    let server = TestServer::start(&["--echo", "--ping-interval", "0.3"]);
    let mut raw = Raw::open(&server);
    let start = Instant::now();
    for n in 1..=2u32 {
        let ping = raw.frame();
        let elapsed = start.elapsed();
        assert_eq!(ping.opcode, PING, "{ping:?}");
        assert!(
            elapsed >= Duration::from_millis(250) * n,
            "ping {n} at {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_millis(300) * n + Duration::from_secs(1),
            "ping {n} at {elapsed:?}"
        );
        raw.send(&client_frame(true, 0, PONG, &ping.payload));
    }
}

#[test]
fn silent_client_is_closed_with_1001_after_the_idle_timeout() {
    let server = TestServer::start(&["--echo", "--idle-timeout", "0.5", "--ping-interval", "0"]);
    let mut raw = Raw::open(&server);
    let start = Instant::now();
    raw.send(&client_frame(true, 0, TEXT, b"one message, then silence"));
    raw.frame();
    let close = raw.close_frame();
    let elapsed = start.elapsed();
    assert_eq!(close.close_code(), Some(1001));
    assert!(
        elapsed >= Duration::from_millis(450),
        "closed too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1500),
        "closed too late: {elapsed:?}"
    );
    // We answer; the server then closes TCP.
    raw.send(&client_frame(true, 0, CLOSE, &close.payload[..2]));
    raw.assert_eof(Duration::from_secs(1));
}

#[test]
fn client_that_never_answers_close_is_dropped_after_the_close_timeout() {
    let server = TestServer::start(&[
        "--echo",
        "--idle-timeout",
        "0.3",
        "--ping-interval",
        "0",
        "--close-timeout",
        "0.5",
    ]);
    let mut raw = Raw::open(&server);
    let local = raw.stream.local_addr().unwrap();
    assert_eq!(raw.close_frame().close_code(), Some(1001));
    let closed_at = Instant::now();
    raw.assert_eof(Duration::from_secs(2));
    let waited = closed_at.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "dropped before the close timeout: {waited:?}"
    );
    let line = server
        .wait_for_log(&format!("{local} closed"), Duration::from_secs(1))
        .expect("closed line");
    assert!(line.contains("no close from peer"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// Backpressure
// ---------------------------------------------------------------------------------------------

#[test]
fn client_that_does_not_read_is_paused_alone_with_bounded_memory() {
    let server = TestServer::start(&["--echo", "--max-queued-output", "65536"]);
    let mut flooder = Raw::open(&server);
    let rss_before = rss_kib(server.child.id());
    let frame = client_frame(true, 0, BINARY, &[0xAB; 16 * 1024]);
    let limit = 256 * 1024 * 1024;
    let written = flood_until_stalled(&mut flooder.stream, &frame, limit, Duration::from_millis(300));
    assert!(
        written < limit,
        "the server read {written} bytes without their echoes being read"
    );

    // Meanwhile everyone else is served.
    let mut other = ws_echo_client(&server);
    assert_echoes(&mut other, Message::text("not blocked by a slow peer"));

    if let (Some(before), Some(after)) = (rss_before, rss_kib(server.child.id())) {
        let grown = after.saturating_sub(before);
        assert!(
            grown < 16 * 1024,
            "server RSS grew by {grown} KiB while {written} bytes were flooded"
        );
    }

    // Once the client reads, every echo arrives: paused, not dropped.
    let sent_frames = written.div_ceil(frame.len());
    let expected = sent_frames * (4 + 16 * 1024);
    let mut reader = flooder.stream.try_clone().unwrap();
    let already = flooder.pending.len();
    let drain =
        thread::spawn(move || read_exactly_within(&mut reader, expected - already, Duration::from_secs(20)));
    flooder
        .stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    flooder.send(&frame[written % frame.len()..]);
    let received = drain.join().unwrap();
    assert_eq!(received + already, expected, "echoed bytes");
}

/// Reads `len` bytes (or until EOF, or `within` passes) and returns how many arrived.
fn read_exactly_within(stream: &mut TcpStream, len: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let mut chunk = vec![0u8; 256 * 1024];
    let mut total = 0;
    while total < len && Instant::now() < deadline {
        stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        match stream.read(&mut chunk[..(len - total).min(256 * 1024)]) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    total
}

#[test]
fn paused_client_is_read_again_once_its_queue_drains() {
    // Frequent pings make the server flush this client's queue from a timer, not only when the
    // socket reports it writable.
    let server = TestServer::start(&[
        "--echo",
        "--max-queued-output",
        "65536",
        "--ping-interval",
        "0.05",
        "--idle-timeout",
        "0",
    ]);
    let mut flooder = Raw::open(&server);
    let frame = client_frame(true, 0, BINARY, &[0xEF; 16 * 1024]);
    let written = flood_until_stalled(
        &mut flooder.stream,
        &frame,
        256 * 1024 * 1024,
        Duration::from_millis(300),
    );
    let sent_frames = written.div_ceil(frame.len());

    // Read slowly at first (a little, then a pause for the ping timer), then everything: all the
    // echoes arrive, then the echo of a marker sent last.
    let mut reader = flooder.stream.try_clone().unwrap();
    let mut pending = std::mem::take(&mut flooder.pending);
    let drain = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut echoes = 0;
        let mut sipped = 0;
        reader.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        while Instant::now() < deadline {
            let Some(frame) = read_server_frame(&mut reader, &mut pending) else {
                continue;
            };
            match frame.opcode {
                BINARY => echoes += 1,
                TEXT => return (echoes, Some(frame.payload)),
                _ => {}
            }
            if sipped < 5 && echoes % 4 == 0 {
                sipped += 1;
                thread::sleep(Duration::from_millis(60));
            }
        }
        (echoes, None)
    });
    flooder
        .stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let rest = [
        &frame[written % frame.len()..],
        &client_frame(true, 0, TEXT, b"marker"),
    ]
    .concat();
    let write = flooder.stream.write_all(&rest);
    let (echoes, marker) = drain.join().unwrap();
    assert!(write.is_ok(), "the server stopped reading: {write:?}");
    assert_eq!(echoes, sent_frames, "binary echoes");
    assert_eq!(marker.as_deref(), Some(&b"marker"[..]));
}

#[test]
fn client_that_never_reads_is_dropped_after_the_idle_and_close_timeouts() {
    // A queue limit larger than any kernel socket buffer (Linux caps them at a few MiB unless the
    // application reads), so that a client that never reads can never drain it: our Close stays
    // queued behind it for good.
    let server = TestServer::start(&[
        "--echo",
        "--max-queued-output",
        "16777216",
        "--idle-timeout",
        "0.5",
        "--close-timeout",
        "0.5",
        "--ping-interval",
        "0",
    ]);
    let mut flooder = Raw::open(&server);
    let local = flooder.stream.local_addr().unwrap();
    // It keeps sending and never reads.
    let writer = thread::spawn(move || {
        let frame = client_frame(true, 0, BINARY, &[0xCD; 16 * 1024]);
        flooder
            .stream
            .set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let start = Instant::now();
        let mut written = 0;
        while start.elapsed() < Duration::from_secs(5) {
            match flooder.stream.write(&frame[written % frame.len()..]) {
                Ok(n) => written += n,
                Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(error) => return Some(error.kind()),
            }
        }
        None
    });
    let line = server.wait_for_log(&format!("{local} closed"), Duration::from_secs(4));
    let line = line.unwrap_or_else(|| {
        panic!(
            "a client that never reads holds its connection forever: {:#?}",
            server.log.lock().unwrap()
        )
    });
    assert!(line.contains("closed 1001"), "{line}");
    // The server really let go of the socket: the client's writes now fail.
    let error = writer.join().unwrap();
    assert!(
        matches!(error, Some(ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)),
        "client writes after the drop: {error:?}"
    );
}

#[test]
fn peer_that_never_stops_sending_does_not_starve_the_others() {
    // The server closes it for idleness, and it streams data frames from then on, never its Close.
    let server = TestServer::start(&[
        "--echo",
        "--idle-timeout",
        "0.3",
        "--close-timeout",
        "0.5",
        "--ping-interval",
        "0",
    ]);
    let mut raw = Raw::open(&server);
    assert_eq!(raw.close_frame().close_code(), Some(1001));
    let mut stream = raw.stream.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let frame = client_frame(true, 0, BINARY, &[0x55; 60_000]);
        let burst = frame.repeat(16);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Err(error) = stream.write_all(&burst) {
                return (Some(error.kind()), start.elapsed());
            }
        }
        (None, start.elapsed())
    });
    thread::sleep(Duration::from_millis(100));

    let start = Instant::now();
    let mut ws = ws_echo_client(&server);
    assert_echoes(&mut ws, Message::text("served meanwhile"));
    let waited = start.elapsed();
    assert!(
        // Starved, it waited 3.8 s (before reads per turn were bounded); 2 s leaves room for a
        // loaded machine.
        waited < Duration::from_secs(2),
        "another client waited {waited:?}"
    );

    // Its close timeout still runs: it is dropped although it keeps sending.
    let (error, elapsed) = writer.join().unwrap();
    assert!(
        matches!(error, Some(ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)),
        "still connected after {elapsed:?}: {error:?}"
    );
    assert!(elapsed < Duration::from_secs(3), "dropped after {elapsed:?}");
}

// ---------------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------------

/// On `signal`, every open connection gets Close 1001 and the process exits 0 within ~1.5 s, even
/// with a client that never answers.
fn signal_closes_every_connection_with_1001_and_exits_0(signal: &str) {
    let mut server = TestServer::start(&["--echo"]);
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let mut ws = ws_echo_client(&server);
            assert_echoes(&mut ws, Message::text("before shutdown"));
            thread::spawn(move || {
                let mut close_code = None;
                loop {
                    match ws.read() {
                        Ok(Message::Close(frame)) => close_code = frame.map(|f| u16::from(f.code)),
                        Ok(_) => {}
                        Err(tungstenite::Error::ConnectionClosed) => return Ok(close_code),
                        Err(error) => return Err(error.to_string()),
                    }
                }
            })
        })
        .collect();
    let mut silent = Raw::open(&server);

    let start = Instant::now();
    let status = server
        .signal_and_wait(signal, Duration::from_millis(1500))
        .unwrap_or_else(|| panic!("still running 1.5 s after SIG{signal}"));
    assert!(status.success(), "exit status {status}");
    eprintln!("SIG{signal}: exited after {:?}", start.elapsed());
    for client in clients {
        assert_eq!(client.join().unwrap(), Ok(Some(1001)));
    }
    assert_eq!(silent.close_frame().close_code(), Some(1001));
}

#[test]
fn sigterm_closes_every_connection_with_1001_and_exits_0() {
    signal_closes_every_connection_with_1001_and_exits_0("TERM");
}

#[test]
fn sigint_closes_every_connection_with_1001_and_exits_0() {
    signal_closes_every_connection_with_1001_and_exits_0("INT");
}

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

#[test]
fn log_has_one_open_and_one_closed_line_per_connection() {
    let server = TestServer::start(&["--echo"]);

    let mut ws = ws_echo_client(&server);
    let normal = ws.get_ref().local_addr().unwrap();
    ws.close(Some(CloseFrame {
        code: WsCloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    while ws.read().is_ok() {}
    drop(ws);

    let mut raw = Raw::open(&server);
    let failed = raw.stream.local_addr().unwrap();
    raw.send(b"\x81\x02no");
    raw.assert_failed_with(1002);
    drop(raw);

    let dropped = {
        let raw = Raw::open(&server);
        raw.stream.local_addr().unwrap()
    };

    for (addr, expected) in [
        (normal, "closed 1000 (normal closure) by client: \"bye\""),
        (failed, "closed 1002 (protocol error) by server"),
        (dropped, "closed 1006 (abnormal closure)"),
    ] {
        let line = server.wait_for_log(&format!("{addr} closed"), Duration::from_secs(2));
        assert!(line.is_some(), "no closed line for {addr}");
        let lines = log_lines_for(&server, addr);
        let opens = lines.iter().filter(|line| line.contains(" open /echo")).count();
        let closes: Vec<_> = lines.iter().filter(|line| line.contains(" closed ")).collect();
        assert_eq!(opens, 1, "{lines:#?}");
        assert_eq!(closes.len(), 1, "{lines:#?}");
        assert!(closes[0].contains(expected), "{} lacks {expected:?}", closes[0]);
    }
    // The protocol failure names the rule.
    assert!(
        log_lines_for(&server, failed)
            .iter()
            .any(|line| line.contains("RFC 6455 §5.1"))
    );
}
