//! `wschat-client URL`: a line-oriented WebSocket client on wschat's sans-IO core in client role.
//!
//! Each line of standard input goes out as a text message; each text message that arrives is
//! printed on its own line to standard output. At the end of input it closes with 1000 and waits
//! (at most the close timeout) for the server's Close and for the server to close TCP, as RFC 6455
//! §7.1.1 has the server close first. permessage-deflate (RFC 7692) is offered unless
//! `--no-deflate`; `--trace` prints the annotated wire trace, from the client's side, to stderr.
//!
//! ```sh
//! wschat --echo &
//! echo hello | wschat-client ws://127.0.0.1:8080/echo
//! wschat-client --trace ws://127.0.0.1:8080/      # the chat: type JSON lines
//! ```
//!
//! Blocking `std::net` with a short read timeout, one thread: between reads it takes the lines a
//! second thread read from stdin. `examples/autobahn_client.rs` drives Autobahn|Testsuite with the
//! same [`Session`].
#![allow(clippy::disallowed_methods)] // A program at the I/O edge: it reads the clock itself.

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use clap::Parser;
use wschat::trace::{self, Direction};
use wschat::ws::close::CloseCode;
use wschat::ws::deflate;
use wschat::ws::handshake::client::ClientHandshake;
use wschat::ws::protocol::{
    Config, Connection, DeflateConfig, Event, Limits, Role, Sender, State, Timeouts, random_seed,
};

/// How long a read waits before the loop looks at stdin and the timers again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// The wire trace's connection id: there is one connection.
const TRACE_ID: u64 = 1;

/// wschat-client: send stdin lines as text messages, print the text messages that arrive.
#[derive(Parser, Debug)]
#[command(name = "wschat-client", version, about)]
struct Args {
    /// Server URL: `ws://host[:port][/path]` (no TLS: `wss://` is not supported).
    url: String,
    /// Do not offer permessage-deflate.
    #[arg(long)]
    no_deflate: bool,
    /// Print the wire trace to stderr: handshake heads and every frame in both directions.
    #[arg(long)]
    trace: bool,
    /// Seconds to wait for the server's Close after ours (and for it to close TCP).
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    close_timeout: f64,
}

#[allow(dead_code)] // When autobahn_client includes this file, it uses `Session` only.
fn main() -> ExitCode {
    let args = Args::parse();
    trace::init_logging(args.trace, "warn");
    let close_timeout = Duration::try_from_secs_f64(args.close_timeout).unwrap_or(Duration::from_secs(5));
    let options = Options {
        offer_deflate: !args.no_deflate,
        deflate_threshold: deflate::DEFAULT_THRESHOLD,
        config: Config {
            limits: Limits::default(),
            timeouts: Timeouts {
                ping_interval: None,
                idle_timeout: None,
                close_timeout,
            },
        },
        trace: args.trace,
    };
    match run(&args.url, &options) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("wschat-client: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The whole session: lines out, messages in, close at the end of input. Succeeds if the server
/// ended it with a normal closure (1000), whoever started it.
fn run(url: &str, options: &Options) -> io::Result<ExitCode> {
    let mut session = Session::connect(url, options)?;
    let lines = read_lines_in_background();
    let mut stdout = io::stdout();
    let mut input_done = false;
    while session.conn.state() != State::Closed {
        if !input_done {
            input_done = send_lines(&lines, &mut session);
        }
        session.pump(|event, _| match event {
            Event::Text(text) => {
                let _ = writeln!(stdout, "{text}");
            }
            Event::Binary(data) => eprintln!("wschat-client: (binary message of {} bytes)", data.len()),
            _ => {}
        })?;
    }
    session.wait_for_eof(options.config.timeouts.close_timeout)?;
    Ok(match session.conn.close_status() {
        Some(status) if status.code == CloseCode::Normal => ExitCode::SUCCESS,
        Some(status) => {
            eprintln!("wschat-client: closed {} {}", status.code, status.reason);
            ExitCode::FAILURE
        }
        None => ExitCode::FAILURE,
    })
}

/// Lines of stdin, read on their own thread so that the main loop never blocks on the terminal.
fn read_lines_in_background() -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Sends the lines that are ready; at the end of input starts the close handshake. Returns
/// whether the input is done.
fn send_lines(lines: &Receiver<String>, session: &mut Session) -> bool {
    let now = Instant::now();
    loop {
        match lines.try_recv() {
            Ok(line) => {
                if session.conn.sender(now).send_text(&line).is_err() {
                    return true;
                }
            }
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => {
                session.conn.close(CloseCode::Normal, "", now);
                return true;
            }
        }
    }
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct Options {
    pub offer_deflate: bool,
    /// Messages of at least this many bytes go out compressed, when deflate was agreed.
    pub deflate_threshold: usize,
    pub config: Config,
    pub trace: bool,
}

/// The parts of a `ws://` URL a connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// `host:port`, to connect to.
    pub addr: String,
    /// The `Host` header: the authority as written.
    pub host: String,
    /// The request target: path and query, `/` when empty.
    pub path: String,
}

impl WsUrl {
    /// Parses `ws://host[:port][/path][?query]` (RFC 6455 §3); the port defaults to 80.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("ws") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("wss") => {
                return Err("wss:// needs TLS, which wschat-client does not speak".into());
            }
            _ => return Err(format!("{url:?} is not a ws:// URL")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{url:?} has no usable host"));
        }
        // A port follows the last ':' unless that ':' is inside an IPv6 literal's brackets.
        let has_port = authority
            .rfind(':')
            .is_some_and(|colon| !authority[colon..].contains(']'));
        let addr = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(Self {
            addr,
            host: authority.to_owned(),
            path,
        })
    }
}

/// One blocking client connection: the socket and the protocol core in client role.
pub struct Session {
    stream: TcpStream,
    pub conn: Connection,
    /// Bytes read and not yet given to the connection (what followed the handshake's head).
    pending: Vec<u8>,
    buf: Vec<u8>,
}

impl Session {
    /// Connects, performs the opening handshake (offering permessage-deflate if asked) and
    /// returns the open session.
    pub fn connect(url: &str, options: &Options) -> io::Result<Self> {
        let url = WsUrl::parse(url).map_err(io::Error::other)?;
        let mut stream = TcpStream::connect(&url.addr)?;
        stream.set_nodelay(true)?;
        let seeds = [random_seed(), random_seed()];
        let nonce: [u8; 16] = std::array::from_fn(|i| seeds[i / 8].to_le_bytes()[i % 8]);
        let handshake = if options.offer_deflate {
            ClientHandshake::with_deflate(&url.host, &url.path, nonce)
        } else {
            ClientHandshake::new(&url.host, &url.path, nonce)
        };
        if options.trace {
            trace::http_head(TRACE_ID, Direction::Out, handshake.request());
        }
        stream.write_all(handshake.request())?;
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        let answer = loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed during the handshake",
                ));
            }
            received.extend_from_slice(&chunk[..n]);
            if let Some(answer) = handshake.parse_answer(&received).map_err(io::Error::other)? {
                break answer;
            }
        };
        if options.trace {
            trace::http_head(TRACE_ID, Direction::In, &received[..answer.head_len]);
        }
        // Replies still on their way when we close at the end of input are printed all the same.
        let mut conn =
            Connection::new(Role::Client, options.config, Instant::now()).deliver_data_while_closing();
        if let Some(params) = answer.deflate {
            conn = conn.with_deflate(DeflateConfig {
                params,
                deflate_threshold: options.deflate_threshold,
            });
        }
        if options.trace {
            conn.enable_trace(TRACE_ID);
        }
        stream.set_read_timeout(Some(POLL_INTERVAL))?;
        Ok(Self {
            stream,
            conn,
            pending: received.split_off(answer.head_len),
            buf: vec![0; 64 * 1024],
        })
    }

    /// One turn of the loop: writes what is queued, reads what arrived (waiting at most
    /// [`POLL_INTERVAL`]), hands it to the connection, runs its timers and writes the answers.
    pub fn pump(&mut self, mut on_event: impl FnMut(Event<'_>, &mut Sender<'_>)) -> io::Result<()> {
        self.flush()?;
        let now = Instant::now();
        if !self.pending.is_empty() {
            let mut pending = std::mem::take(&mut self.pending);
            self.conn.receive(&mut pending, now, &mut on_event);
        }
        match self.stream.read(&mut self.buf) {
            Ok(0) => self.conn.receive_eof(),
            Ok(n) => self
                .conn
                .receive(&mut self.buf[..n], Instant::now(), &mut on_event),
            Err(error) if is_timeout(&error) => {}
            Err(error) => return Err(error),
        }
        let now = Instant::now();
        if self.conn.poll_timeout().is_some_and(|due| now >= due) {
            self.conn.handle_timeout(now);
        }
        self.flush()
    }

    /// Writes everything queued (the socket is blocking for writes).
    pub fn flush(&mut self) -> io::Result<()> {
        while self.conn.queued() > 0 {
            self.conn.outbox().write_to(&mut self.stream)?;
        }
        Ok(())
    }

    /// After the close handshake: waits for the server to close TCP (§7.1.1), at most `limit`.
    pub fn wait_for_eof(&mut self, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.stream.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(error) if is_timeout(&error) => {}
                // A reset after the close handshake is the server giving up on us: done either way.
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }
}

/// A read that ran into the socket's read timeout (`WouldBlock` on Unix, `TimedOut` on Windows).
fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls_table() {
        let table = [
            ("ws://127.0.0.1:9001", "127.0.0.1:9001", "127.0.0.1:9001", "/"),
            ("ws://localhost/chat", "localhost:80", "localhost", "/chat"),
            (
                "WS://example.com:8080/echo?x=1",
                "example.com:8080",
                "example.com:8080",
                "/echo?x=1",
            ),
            (
                "ws://[::1]:9001/runCase?case=1",
                "[::1]:9001",
                "[::1]:9001",
                "/runCase?case=1",
            ),
            ("ws://[::1]", "[::1]:80", "[::1]", "/"),
            ("ws://h?agent=a", "h:80", "h", "/?agent=a"),
        ];
        for (url, addr, host, path) in table {
            assert_eq!(
                WsUrl::parse(url),
                Ok(WsUrl {
                    addr: addr.into(),
                    host: host.into(),
                    path: path.into()
                }),
                "{url}"
            );
        }
    }

    #[test]
    fn urls_we_cannot_connect_to_are_errors() {
        for url in [
            "http://h/",
            "wss://h/",
            "ws://",
            "ws:///path",
            "h:80",
            "ws://user@h/",
        ] {
            assert!(WsUrl::parse(url).is_err(), "{url}");
        }
    }
}
