//! `wschat-bench`: a load generator on `mio` that speaks WebSocket with wschat's own sans-IO core
//! in client role (every frame masked with a fresh key), against any server.
//!
//! - `echo`: C connections, K messages of S bytes in flight each; messages/s and round-trip latency.
//!   With `--chat-text` the messages are S-byte blocks of chat text, a different one each time.
//! - `broadcast`: C receivers in one chat room and one sender at R messages/s; deliveries/s,
//!   delivery latency, and whether every receiver got every message in order. With `--chat-text`
//!   each message carries a chat line as people type them ([`Corpus`]).
//! - `hold`: C idle connections for T seconds (answering pings), for memory measurement.
//!
//! Each run prints one line of `key=value` figures (or JSON with `--json`); progress goes to stderr.
//! With `--server-pid`, the server's CPU time (utime+stime from /proc) over the measured window and
//! its resident memory are reported too: CPU per message stays meaningful on a noisy machine where
//! messages/s does not. The load generator's own CPU is reported beside it (`bench_cpu_busy`): near
//! 1.0, the client, not the server, set the pace.
//!
//! `--deflate` offers permessage-deflate (RFC 7692) on every connection; each uses what its server
//! answered. The report counts the connections that agreed (`deflate_negotiated`) and, for what
//! the clients received, compares the bytes on the wire (frame headers included) with the bytes of
//! the messages they carried (`wire_ratio`). The clients share one inflater cache ([`InflateCache`])
//! so that a thousand receivers of the same compressed broadcast do not inflate it a thousand times.
#![allow(clippy::disallowed_methods)] // A program at the I/O edge: it reads the clock itself.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use wschat::ws::deflate::{Decompressor, DeflateParams, InflateError};
use wschat::ws::frame::{self, FrameHeader, OpCode};
use wschat::ws::handshake::client::ClientHandshake;
use wschat::ws::protocol::{
    Config, Connection, DeflateConfig, Event, Limits, Message, Role, Sender, Timeouts, random_seed,
};

#[derive(Parser, Debug)]
#[command(
    name = "wschat-bench",
    about = "Load generator for WebSocket servers (echo, chat broadcast, idle hold)"
)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8080", global = true)]
    addr: String,
    /// PID of the server, to report its CPU time and memory.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Print the figures as one JSON object instead of key=value pairs.
    #[arg(long, global = true)]
    json: bool,
    /// Offer permessage-deflate (RFC 7692) on every connection and use it where the server agrees.
    #[arg(long, global = true)]
    deflate: bool,
    /// Chat lines for `--chat-text`, one message per line, instead of the built-in set
    /// (bench/chat-lines.txt).
    #[arg(long, global = true, value_name = "FILE")]
    text_corpus: Option<PathBuf>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug, Clone)]
enum Mode {
    /// Round trips through an echo endpoint.
    Echo {
        /// Path of the echo endpoint.
        #[arg(long, default_value = "/echo")]
        path: String,
        /// Connections.
        #[arg(short = 'c', long, default_value_t = 100)]
        connections: usize,
        /// Messages in flight per connection.
        #[arg(short = 'k', long, default_value_t = 1)]
        in_flight: usize,
        /// Message size in bytes.
        #[arg(short = 's', long, default_value_t = 16)]
        size: usize,
        /// Measured seconds.
        #[arg(short = 't', long, default_value_t = 10.0)]
        seconds: f64,
        /// Unmeasured seconds before.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Send text frames instead of binary.
        #[arg(long)]
        text: bool,
        /// Send blocks of `size` bytes of chat text (text frames), a different block each time,
        /// instead of `size` times the letter x.
        #[arg(long)]
        chat_text: bool,
    },
    /// One sender, many receivers in one chat room.
    Broadcast {
        /// Path of the chat endpoint.
        #[arg(long, default_value = "/")]
        path: String,
        /// Receivers.
        #[arg(short = 'c', long, default_value_t = 1000)]
        connections: usize,
        /// Messages per second from the sender.
        #[arg(short = 'r', long, default_value_t = 100.0)]
        rate: f64,
        /// Measured seconds.
        #[arg(short = 't', long, default_value_t = 10.0)]
        seconds: f64,
        /// Unmeasured seconds before.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Most seconds to wait, once the sender stops, for the receivers to catch up.
        #[arg(long, default_value_t = 10.0)]
        drain: f64,
        /// Follow each message's probe with a chat line, as people type them, instead of sending
        /// the bare probe.
        #[arg(long)]
        chat_text: bool,
        /// Connect the sender to this address instead of `--addr` (another node sharing the same
        /// Redis): the latencies are then cross-node.
        #[arg(long, value_name = "ADDR")]
        sender_addr: Option<String>,
    },
    /// Idle connections that only answer pings.
    Hold {
        #[arg(long, default_value = "/echo")]
        path: String,
        #[arg(short = 'c', long, default_value_t = 10_000)]
        connections: usize,
        #[arg(short = 't', long, default_value_t = 10.0)]
        seconds: f64,
    },
}

/// What a workload keeps per connection.
#[derive(Debug, Default)]
struct PerClient {
    /// Echo: send times and payloads (indices into the payloads) of the messages in flight, oldest
    /// first (echo preserves order).
    in_flight: VecDeque<(Instant, usize)>,
    /// Echo: messages sent so far.
    sent: usize,
    /// Broadcast: the next sequence number this receiver expects.
    next_seq: u64,
    /// Broadcast: a message arrived out of order or was missed.
    out_of_order: bool,
}

/// One client connection: the handshake, then the protocol core in client role.
struct Client {
    stream: TcpStream,
    /// Until the 101 arrives: the handshake and the response bytes read so far.
    handshake: Option<(ClientHandshake, Vec<u8>)>,
    request_sent: bool,
    conn: Connection,
    /// In front of `conn` once permessage-deflate was agreed. Boxed: an idle connection without
    /// the extension carries one pointer.
    splitter: Option<Box<FrameSplitter>>,
    traffic: Traffic,
    state: PerClient,
    writable_registered: bool,
}

/// What a client received while the bench was counting.
#[derive(Debug, Default, Clone, Copy)]
struct Traffic {
    /// Bytes read after the handshake: frames as they came over the wire, headers included.
    wire_bytes: u64,
    /// Data messages delivered, and their bytes as delivered (inflated).
    messages: u64,
    message_bytes: u64,
    /// Data messages that arrived compressed (RSV1 on their first frame).
    compressed: u64,
}

impl std::ops::AddAssign for Traffic {
    fn add_assign(&mut self, other: Self) {
        self.wire_bytes += other.wire_bytes;
        self.messages += other.messages;
        self.message_bytes += other.message_bytes;
        self.compressed += other.compressed;
    }
}

fn client_config() -> Config {
    Config {
        limits: Limits {
            max_frame_size: 64 << 20,
            max_message_size: 64 << 20,
            max_fragments: 1 << 20,
        },
        // The load generator answers pings but sends none and never times out by itself.
        timeouts: Timeouts {
            ping_interval: None,
            idle_timeout: None,
            close_timeout: Duration::from_secs(5),
        },
    }
}

impl Client {
    fn connect(addr: SocketAddr, host: &str, path: &str, seed: u64, deflate: bool) -> io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        let nonce: [u8; 16] = std::array::from_fn(|i| (seed.rotate_left(i as u32 * 8) >> 3) as u8);
        let handshake = if deflate {
            ClientHandshake::with_deflate(host, path, nonce)
        } else {
            ClientHandshake::new(host, path, nonce)
        };
        Ok(Self {
            stream,
            handshake: Some((handshake, Vec::new())),
            request_sent: false,
            conn: Connection::with_mask_seed(Role::Client, client_config(), Instant::now(), seed),
            splitter: None,
            traffic: Traffic::default(),
            state: PerClient::default(),
            writable_registered: true,
        })
    }

    /// Turns on permessage-deflate as the server's answer agreed it: for what we send (compressed
    /// from the default threshold on, as `wschat-client` does) and for what we receive.
    fn use_deflate(&mut self, params: DeflateParams, now: Instant) {
        // `with_deflate` takes the connection by value; the stand-in lives for this one line.
        let stand_in = Connection::with_mask_seed(Role::Client, client_config(), now, 1);
        self.conn = std::mem::replace(&mut self.conn, stand_in).with_deflate(DeflateConfig::new(params));
        self.splitter = Some(Box::new(FrameSplitter::new(params)));
    }
}

// ------------------------------------------------------------------------------------------
// Receiving compressed messages: inflate each distinct one once
// ------------------------------------------------------------------------------------------

/// Compressed messages up to this size (payload and header) go through the [`InflateCache`]; a
/// bigger one is passed to the connection as it comes. Chat events are a few hundred bytes, and
/// holding a big frame back until it is complete would only delay it.
const MAX_CACHED_FRAME: u64 = 64 * 1024;

/// Messages per generation of the [`InflateCache`]: four seconds of a broadcast at 1,000
/// messages/s, far more than receivers lag behind one another, in a few MB.
const INFLATE_CACHE_GENERATION: usize = 4096;

/// RSV1 as [`FrameHeader::rsv`] holds it: permessage-deflate's "Per-Message Compressed" bit
/// (RFC 7692 §6).
const RSV1: u8 = 0b100;

/// One client's incoming byte stream cut into frames in front of its [`Connection`], so that a
/// compressed message can be inflated once for every receiver instead of once by each.
///
/// A thousand receivers of a broadcast get the same compressed frame for every message; inflating
/// it a thousand times would make the load generator, not the server, the bottleneck. When the
/// server compresses every message on its own (it agreed to `server_no_context_takeover`, RFC 7692
/// §7.1.1.1, which wschat always does), a message's compressed payload alone decides what it
/// inflates to. So a compressed single-frame message is looked up in the [`InflateCache`] (and
/// inflated there once), and the connection is handed the plain frame it stands for, which it
/// checks like any other (UTF-8, limits). Everything else passes through as it came and the
/// connection inflates it itself: control frames, fragments, anything malformed (the connection
/// then fails as it should), and every message of a server that keeps its context (such as ws),
/// whose messages depend on what came before on that connection.
#[derive(Debug)]
struct FrameSplitter {
    /// Messages may go through the shared cache: the server compresses each one on its own.
    shared: bool,
    /// The server's window (RFC 7692 §7.1.2.1).
    window_bits: u8,
    /// The start of a frame cut off by the end of a read: a header, or a compressed frame.
    partial: Vec<u8>,
    /// Payload bytes of the current frame still to pass through as they come.
    passing: u64,
}

impl FrameSplitter {
    fn new(params: DeflateParams) -> Self {
        Self {
            shared: params.server_no_context_takeover,
            window_bits: params.server_max_window_bits,
            partial: Vec::new(),
            passing: 0,
        }
    }

    /// Appends `input` to `out` with every compressed single-frame message replaced by the plain
    /// frame it inflates to (when the cache may be used); returns how many compressed messages
    /// began in it.
    fn rewrite(&mut self, input: &[u8], out: &mut Vec<u8>, cache: &mut InflateCache) -> u64 {
        if self.partial.is_empty() {
            return self.split(input, out, cache);
        }
        let mut joined = std::mem::take(&mut self.partial);
        joined.extend_from_slice(input);
        self.split(&joined, out, cache)
    }

    fn split(&mut self, mut input: &[u8], out: &mut Vec<u8>, cache: &mut InflateCache) -> u64 {
        let mut compressed = 0;
        loop {
            if self.passing > 0 {
                let n = usize::try_from(self.passing).map_or(input.len(), |passing| passing.min(input.len()));
                out.extend_from_slice(&input[..n]);
                self.passing -= n as u64;
                input = &input[n..];
            }
            if input.is_empty() {
                return compressed;
            }
            let (header, header_len) = match FrameHeader::parse(input) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => {
                    self.partial.extend_from_slice(input);
                    return compressed;
                }
                Err(_) => {
                    // From a broken frame on, the connection gets everything as it came, and fails.
                    self.passing = u64::MAX;
                    continue;
                }
            };
            let starts_compressed =
                header.rsv & RSV1 != 0 && matches!(header.opcode, OpCode::Text | OpCode::Binary);
            let frame_len = header_len as u64 + header.payload_len;
            if self.shared
                && starts_compressed
                && header.fin
                && header.mask.is_none()
                && frame_len <= MAX_CACHED_FRAME
            {
                let Some(end) = usize::try_from(frame_len).ok().filter(|&end| end <= input.len()) else {
                    self.partial.extend_from_slice(input);
                    return compressed;
                };
                if let Some(message) = cache.inflate(&input[header_len..end], self.window_bits) {
                    frame::encode_frame(out, true, header.opcode, &message, None);
                    compressed += 1;
                    input = &input[end..];
                    continue;
                }
            }
            compressed += u64::from(starts_compressed);
            out.extend_from_slice(&input[..header_len]);
            self.passing = header.payload_len;
            input = &input[header_len..];
        }
    }
}

/// Messages inflated once for every receiver, keyed by their compressed payload. Two
/// generations: when the newer is full it becomes the older and the oldest goes, so a receiver
/// that lags less than a generation behind the first one still finds what it needs; one further
/// behind inflates on its own (same result, more work).
#[derive(Debug, Default)]
struct InflateCache {
    newer: HashMap<Box<[u8]>, Rc<[u8]>, BuildHasherDefault<WordHasher>>,
    older: HashMap<Box<[u8]>, Rc<[u8]>, BuildHasherDefault<WordHasher>>,
}

impl InflateCache {
    /// What `compressed`, a whole message compressed on its own with a window of
    /// `2^window_bits` bytes, inflates to; `None` if it does not (the connection will say why).
    fn inflate(&mut self, compressed: &[u8], window_bits: u8) -> Option<Rc<[u8]>> {
        if let Some(message) = self.newer.get(compressed).or_else(|| self.older.get(compressed)) {
            return Some(message.clone());
        }
        let limit = client_config().limits.max_message_size;
        let mut message = Vec::new();
        let mut decompressor = Decompressor::new(window_bits);
        let accept = |_: &[u8]| Ok::<(), InflateError>(());
        decompressor
            .inflate(compressed, &mut message, limit, accept)
            .ok()?;
        decompressor.finish(&mut message, limit, accept).ok()?;
        let message: Rc<[u8]> = message.into();
        if self.newer.len() >= INFLATE_CACHE_GENERATION {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(compressed.into(), message.clone());
        Some(message)
    }
}

/// A hasher for the cache's keys, compressed chat events of a few hundred bytes: eight bytes per
/// step (FxHash's mixing). SipHash, the default, would cost each receiver more than the rest of the
/// lookup; the keys come from our own test server, so there is no flooding to resist.
#[derive(Debug, Default)]
struct WordHasher(u64);

impl WordHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.mix(<[u8; 8]>::try_from(word).map_or(0, u64::from_le_bytes));
        }
        let rest = words.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        self.mix(u64::from_le_bytes(last) ^ rest.len() as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

// ------------------------------------------------------------------------------------------
// Chat text
// ------------------------------------------------------------------------------------------

/// The built-in chat lines: a work team's chat room, 110 lines of 20-400 characters, short ones
/// the most common and a few sent more than once, as in a real chat. Our own text.
const BUILTIN_CORPUS: &str = include_str!("../../bench/chat-lines.txt");

/// Distinct echo payloads of chat text in a run. A server that keeps its compression context
/// (ws) remembers 32 KiB of each connection's stream; 64 blocks of 1 KiB never show it the same
/// block twice within that (the lines in them do recur: the corpus is small).
const ECHO_BLOCKS: usize = 64;

/// Chat lines to send, the built-in ones or a file's.
struct Corpus {
    lines: Vec<String>,
}

impl Corpus {
    /// Reads the lines of `path`, or takes the built-in ones; blank lines are skipped.
    fn load(path: Option<&Path>) -> io::Result<Self> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path)?,
            None => BUILTIN_CORPUS.to_owned(),
        };
        let lines: Vec<String> = text
            .lines()
            .map(str::trim_end)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect();
        if lines.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the text corpus has no lines",
            ));
        }
        Ok(Self { lines })
    }

    /// The line of message `n`: a pseudo-random pick that depends on `n` alone, so that every run,
    /// with compression or without and against any server, sends the same text in the same order.
    fn line(&self, n: u64) -> &str {
        let pick = splitmix64(n) % self.lines.len() as u64;
        self.lines.get(pick as usize).map_or("", String::as_str)
    }

    /// Exactly `size` bytes of chat text: the lines of messages `n`, `n + 1`, ..., one per line, cut
    /// at a character boundary and padded with spaces.
    fn block(&self, n: u64, size: usize) -> String {
        let mut block = String::with_capacity(size + 512);
        let mut next = n;
        while block.len() < size {
            block.push_str(self.line(next));
            block.push('\n');
            next += 1;
        }
        let mut end = size;
        while !block.is_char_boundary(end) {
            end -= 1;
        }
        block.truncate(end);
        block.extend(std::iter::repeat_n(' ', size - end));
        block
    }
}

/// SplitMix64's output function: consecutive numbers spread over all of `u64`.
fn splitmix64(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a mode does with the events of its clients.
trait Workload {
    /// The handshake of client `i` completed.
    fn on_open(&mut self, i: usize, state: &mut PerClient, sender: &mut Sender<'_>, now: Instant);
    /// A message arrived on client `i`.
    fn on_message(
        &mut self,
        i: usize,
        state: &mut PerClient,
        message: &[u8],
        sender: &mut Sender<'_>,
        now: Instant,
    );
}

/// The shared machinery: a poll, the clients, and one read buffer.
struct Bench {
    poll: Poll,
    events: Events,
    clients: Vec<Client>,
    scratch: Vec<u8>,
    /// What a [`FrameSplitter`] hands the connection, rewritten from `scratch`.
    rewritten: Vec<u8>,
    inflated: InflateCache,
    addr: SocketAddr,
    host: String,
    /// Offer permessage-deflate.
    deflate: bool,
    /// Add what the clients receive to their [`Traffic`].
    counting: bool,
}

impl Bench {
    fn new(addr: &str, deflate: bool) -> io::Result<Self> {
        let resolved = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing"))?;
        Ok(Self {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            clients: Vec::new(),
            scratch: vec![0; 256 * 1024],
            rewritten: Vec::new(),
            inflated: InflateCache::default(),
            addr: resolved,
            host: addr.to_owned(),
            deflate,
            counting: false,
        })
    }

    /// What `clients` received while counting, in all.
    fn traffic(clients: &[Client]) -> Traffic {
        let mut total = Traffic::default();
        for client in clients {
            total += client.traffic;
        }
        total
    }

    /// Whether permessage-deflate was offered, and how many connections agreed to it.
    fn add_deflate(&self, report: &mut Report) {
        report.push("deflate_offered", self.deflate);
        let agreed: Vec<DeflateConfig> = self
            .clients
            .iter()
            .filter_map(|client| client.conn.deflate())
            .collect();
        report.push("deflate_negotiated", agreed.len());
        if let Some(first) = agreed.first() {
            // Whether the server compresses each message on its own (wschat) or keeps its context
            // (ws); only the former lets receivers share the inflater cache.
            report.push(
                "deflate_server_no_context_takeover",
                first.params.server_no_context_takeover,
            );
        }
    }

    /// Opens `count` more connections to `path`, a batch at a time, and runs the loop until every
    /// handshake is done.
    fn open(&mut self, count: usize, path: &str, workload: &mut dyn Workload) -> io::Result<()> {
        let seed = random_seed();
        let target = self.clients.len() + count;
        while self.clients.len() < target {
            let start = self.clients.len();
            for i in start..(start + 250).min(target) {
                let mut client = Client::connect(
                    self.addr,
                    &self.host,
                    path,
                    seed.wrapping_add(i as u64 * 0x9e37),
                    self.deflate,
                )?;
                self.poll.registry().register(
                    &mut client.stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                self.clients.push(client);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.clients.iter().any(|client| client.handshake.is_some()) {
                if Instant::now() > deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "handshakes did not complete",
                    ));
                }
                self.turn(Some(Duration::from_millis(100)), workload)?;
            }
            if self.clients.len() >= 1000 || self.clients.len() == target {
                eprintln!("wschat-bench: {} connections open", self.clients.len());
            }
        }
        Ok(())
    }

    /// One poll and the handling of its events.
    fn turn(&mut self, timeout: Option<Duration>, workload: &mut dyn Workload) -> io::Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => return Ok(()),
            other => other?,
        }
        let now = Instant::now();
        let ready: Vec<usize> = self.events.iter().map(|event| event.token().0).collect();
        for i in ready {
            self.service(i, now, workload)?;
        }
        Ok(())
    }

    /// Sends the handshake once connected, reads what client `i` has, then writes what it queued.
    fn service(&mut self, i: usize, now: Instant, workload: &mut dyn Workload) -> io::Result<()> {
        let Self {
            clients,
            scratch,
            rewritten,
            inflated,
            poll,
            counting,
            ..
        } = self;
        let counting = *counting;
        let client = &mut clients[i];
        if let Some((handshake, _)) = &client.handshake
            && !client.request_sent
        {
            match client.stream.peer_addr() {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(error) => return Err(error),
            }
            let request = handshake.request();
            client
                .conn
                .outbox()
                .append_with(|out| out.extend_from_slice(request));
            client.request_sent = true;
        }
        loop {
            let len = match client.stream.read(scratch) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("server closed connection {i}"),
                    ));
                }
                Ok(len) => len,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::NotConnected => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            let mut start = 0;
            if let Some((handshake, buf)) = &mut client.handshake {
                buf.extend_from_slice(&scratch[..len]);
                let answer = match handshake.parse_answer(buf) {
                    Ok(None) => continue,
                    Ok(Some(answer)) => answer,
                    Err(error) => return Err(io::Error::other(error.to_string())),
                };
                // Bytes after the head are frames; they are still at the end of `scratch`.
                start = len - (buf.len() - answer.head_len);
                client.handshake = None;
                if let Some(params) = answer.deflate {
                    client.use_deflate(params, now);
                }
                workload.on_open(i, &mut client.state, &mut client.conn.sender(now), now);
            }
            let Client {
                conn,
                state,
                splitter,
                traffic,
                ..
            } = client;
            let received = &mut scratch[start..len];
            if counting {
                traffic.wire_bytes += received.len() as u64;
            }
            let input = match splitter {
                Some(splitter) => {
                    rewritten.clear();
                    let compressed = splitter.rewrite(received, rewritten, inflated);
                    if counting {
                        traffic.compressed += compressed;
                    }
                    rewritten.as_mut_slice()
                }
                None => received,
            };
            conn.receive(input, now, |event, sender| {
                let message = match event {
                    Event::Text(text) => text.as_bytes(),
                    Event::Binary(data) => data,
                    _ => return,
                };
                if counting {
                    traffic.messages += 1;
                    traffic.message_bytes += message.len() as u64;
                }
                workload.on_message(i, state, message, sender, now);
            });
            if len < scratch.len() {
                // A short read emptied the socket (edge-triggered: new bytes raise a new event).
                break;
            }
        }
        // Everything this read produced goes out in one write.
        client.conn.outbox().write_to(&mut client.stream)?;
        let wants_write = client.conn.queued() > 0 || !client.request_sent;
        if wants_write != client.writable_registered {
            let interest = if wants_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            poll.registry()
                .reregister(&mut client.stream, Token(i), interest)?;
            client.writable_registered = wants_write;
        }
        Ok(())
    }

    /// Runs the loop until `until`, calling `tick` after every turn.
    fn run_until(
        &mut self,
        until: Instant,
        tick_every: Option<Duration>,
        workload: &mut dyn Workload,
        tick: &mut dyn FnMut(&mut Self, Instant) -> io::Result<()>,
    ) -> io::Result<()> {
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            let timeout = tick_every.unwrap_or(Duration::from_millis(100)).min(until - now);
            self.turn(Some(timeout), workload)?;
            tick(self, Instant::now())?;
        }
    }
}

/// Server CPU time and memory around the measured window, and the load generator's own CPU.
struct ServerProbe {
    pid: Option<u32>,
    cpu_at_start: Option<(f64, f64)>,
    own_cpu_at_start: Option<(f64, f64)>,
    started: Instant,
}

impl ServerProbe {
    fn start(pid: Option<u32>) -> Self {
        Self {
            pid,
            cpu_at_start: pid.and_then(cpu_seconds),
            own_cpu_at_start: cpu_seconds(std::process::id()),
            started: Instant::now(),
        }
    }

    /// Adds the server's CPU time over the window (`server_cpu_s`, and per `unit`:
    /// `server_{cpu,user,sys}_us_per_<unit>`) and its resident memory to the report. User-space time is what the
    /// server's own code costs; kernel time is mostly the socket calls, much the same for any server.
    /// Also the load generator's CPU seconds per second over the same time (`bench_cpu_busy`): near 1,
    /// the client was the bottleneck.
    fn finish(&self, report: &mut Report, unit: &str, count: u64) {
        let seconds = self.started.elapsed().as_secs_f64();
        if let (Some((user0, sys0)), Some((user1, sys1)), true) = (
            self.own_cpu_at_start,
            cpu_seconds(std::process::id()),
            seconds > 0.0,
        ) {
            report.push(
                "bench_cpu_busy",
                format!("{:.2}", (user1 - user0 + sys1 - sys0) / seconds),
            );
        }
        let Some(pid) = self.pid else { return };
        if let (Some((user0, sys0)), Some((user1, sys1))) = (self.cpu_at_start, cpu_seconds(pid)) {
            let (user, system) = (user1 - user0, sys1 - sys0);
            report.push("server_cpu_s", format!("{:.3}", user + system));
            if count > 0 {
                let per = |seconds: f64| format!("{:.3}", seconds * 1e6 / count as f64);
                report.push(format!("server_cpu_us_per_{unit}"), per(user + system));
                report.push(format!("server_user_us_per_{unit}"), per(user));
                report.push(format!("server_sys_us_per_{unit}"), per(system));
            }
        }
        if let Some(rss) = rss_kib(pid) {
            report.push("server_rss_kib", rss);
        }
    }
}

struct EchoLoad {
    /// What the connections send, in turn: one payload, or [`ECHO_BLOCKS`] blocks of chat text.
    payloads: Vec<Box<[u8]>>,
    /// Echoes that differ from what was sent.
    mismatched: u64,
    text: bool,
    in_flight: usize,
    measuring: bool,
    count: u64,
    latencies_us: Vec<u32>,
}

impl EchoLoad {
    /// Sends client `i`'s next payload. Clients start at different payloads, so that the server
    /// is not handed the same one by every connection at once.
    fn send(&self, i: usize, state: &mut PerClient, sender: &mut Sender<'_>, now: Instant) {
        let index = (i + state.sent) % self.payloads.len().max(1);
        let Some(payload) = self.payloads.get(index) else {
            return;
        };
        let message = match (self.text, std::str::from_utf8(payload)) {
            (true, Ok(text)) => Message::Text(text),
            _ => Message::Binary(payload),
        };
        if sender.send(message).is_ok() {
            state.in_flight.push_back((now, index));
            state.sent += 1;
        }
    }
}

impl Workload for EchoLoad {
    fn on_open(&mut self, i: usize, state: &mut PerClient, sender: &mut Sender<'_>, now: Instant) {
        for _ in 0..self.in_flight {
            self.send(i, state, sender, now);
        }
    }

    fn on_message(
        &mut self,
        i: usize,
        state: &mut PerClient,
        echoed: &[u8],
        sender: &mut Sender<'_>,
        now: Instant,
    ) {
        let Some((sent, index)) = state.in_flight.pop_front() else {
            return;
        };
        if self.payloads.get(index).map(|payload| &payload[..]) != Some(echoed) {
            self.mismatched += 1;
        }
        if self.measuring {
            self.count += 1;
            self.latencies_us.push(
                now.saturating_duration_since(sent)
                    .as_micros()
                    .min(u32::MAX as u128) as u32,
            );
        }
        self.send(i, state, sender, now);
    }
}

struct BroadcastLoad {
    /// The sender's index; every other client is a receiver.
    sender: usize,
    start: Instant,
    measuring: bool,
    deliveries: u64,
    latencies_us: Vec<u32>,
}

/// The chat `message` the sender sends as message `seq`, `micros` after the start: the probe
/// `b<seq>:<micros>`, then a space and a chat line from `corpus` (`--chat-text`).
fn chat_message(corpus: Option<&Corpus>, seq: u64, micros: u128) -> String {
    let probe = format!("b{seq}:{micros}");
    let text = match corpus {
        Some(corpus) => format!("{probe} {}", corpus.line(seq)),
        None => probe,
    };
    format!(
        "{{\"type\":\"message\",\"payload\":{}}}",
        serde_json::Value::String(text)
    )
}

/// Reads `b<seq>:<micros>` out of a chat `message` frame without a JSON parser: the load generator
/// must stay cheaper than the server it measures. The probe ends at the text's end or at the space
/// before a chat line.
fn parse_probe(json: &[u8]) -> Option<(u64, u64)> {
    const MARK: &[u8] = b"\"text\":\"b";
    let at = json.windows(MARK.len()).position(|window| window == MARK)? + MARK.len();
    let rest = &json[at..];
    let end = rest.iter().position(|&b| b == b'"' || b == b' ')?;
    let (seq, micros) = std::str::from_utf8(&rest[..end]).ok()?.split_once(':')?;
    Some((seq.parse().ok()?, micros.parse().ok()?))
}

impl Workload for BroadcastLoad {
    fn on_open(&mut self, _: usize, _: &mut PerClient, _: &mut Sender<'_>, _: Instant) {}

    fn on_message(
        &mut self,
        i: usize,
        state: &mut PerClient,
        message: &[u8],
        _: &mut Sender<'_>,
        now: Instant,
    ) {
        if i == self.sender || !message.starts_with(b"{\"type\":\"message\"") {
            return;
        }
        let Some((seq, sent_us)) = parse_probe(message) else {
            return;
        };
        if seq != state.next_seq {
            state.out_of_order = true;
        }
        state.next_seq = seq + 1;
        if self.measuring {
            self.deliveries += 1;
            let now_us = now.duration_since(self.start).as_micros() as u64;
            self.latencies_us
                .push(now_us.saturating_sub(sent_us).min(u64::from(u32::MAX)) as u32);
        }
    }
}

/// Does nothing: pings are answered by the protocol core.
struct HoldLoad;

impl Workload for HoldLoad {
    fn on_open(&mut self, _: usize, _: &mut PerClient, _: &mut Sender<'_>, _: Instant) {}
    fn on_message(&mut self, _: usize, _: &mut PerClient, _: &[u8], _: &mut Sender<'_>, _: Instant) {}
}

fn add_latencies(report: &mut Report, mut latencies: Vec<u32>) {
    latencies.sort_unstable();
    report.push("p50_us", percentile(&latencies, 0.50));
    report.push("p99_us", percentile(&latencies, 0.99));
    report.push("max_us", latencies.last().copied().unwrap_or(0));
}

/// What the clients received while counting: bytes on the wire against bytes of the messages
/// they carried. `wire_ratio` is the first over the second (frame headers included), so about 1.01
/// uncompressed and below 1 where compression pays.
fn add_traffic(report: &mut Report, traffic: Traffic) {
    report.push("wire_bytes", traffic.wire_bytes);
    report.push("message_bytes", traffic.message_bytes);
    report.push("messages_received", traffic.messages);
    report.push("compressed_messages", traffic.compressed);
    if traffic.messages > 0 {
        report.push(
            "mean_message_bytes",
            format!("{:.0}", traffic.message_bytes as f64 / traffic.messages as f64),
        );
    }
    if traffic.message_bytes > 0 {
        report.push(
            "wire_ratio",
            format!("{:.3}", traffic.wire_bytes as f64 / traffic.message_bytes as f64),
        );
    }
}

/// The size of the chat corpus, when one is used: a compressor that keeps its context across
/// messages (ws) gains more the more often the same lines recur within its window.
fn add_corpus(report: &mut Report, corpus: Option<&Corpus>) {
    report.push("chat_text", corpus.is_some());
    if let Some(corpus) = corpus {
        report.push("corpus_lines", corpus.lines.len());
        report.push(
            "corpus_bytes",
            corpus.lines.iter().map(|line| line.len() + 1).sum::<usize>(),
        );
    }
}

/// The chat lines, when `--chat-text` (or `--text-corpus`) asks for them.
fn corpus(args: &Args, chat_text: bool) -> io::Result<Option<Corpus>> {
    if chat_text || args.text_corpus.is_some() {
        Corpus::load(args.text_corpus.as_deref()).map(Some)
    } else {
        Ok(None)
    }
}

fn secs(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.max(0.0))
}

fn run_echo(args: &Args, mode: &Mode) -> io::Result<Report> {
    let Mode::Echo {
        path,
        connections,
        in_flight,
        size,
        seconds,
        warmup,
        text,
        chat_text,
    } = mode.clone()
    else {
        unreachable!("called for echo")
    };
    let corpus = corpus(args, chat_text)?;
    let payloads = match &corpus {
        // Blocks far apart in the corpus's sequence of picks, so that no two begin alike.
        Some(corpus) => (0..ECHO_BLOCKS as u64)
            .map(|k| corpus.block(k << 32, size).into_bytes().into_boxed_slice())
            .collect(),
        None => vec![vec![b'x'; size].into_boxed_slice()],
    };
    let mut bench = Bench::new(&args.addr, args.deflate)?;
    let mut load = EchoLoad {
        payloads,
        mismatched: 0,
        text: text || corpus.is_some(),
        in_flight,
        measuring: false,
        count: 0,
        latencies_us: Vec::new(),
    };
    bench.open(connections, &path, &mut load)?;
    let warm_until = Instant::now() + secs(warmup);
    bench.run_until(warm_until, None, &mut load, &mut |_, _| Ok(()))?;
    load.measuring = true;
    bench.counting = true;
    let probe = ServerProbe::start(args.server_pid);
    let started = Instant::now();
    bench.run_until(started + secs(seconds), None, &mut load, &mut |_, _| Ok(()))?;
    load.measuring = false;
    bench.counting = false;
    let elapsed = started.elapsed().as_secs_f64();
    let mut report = Report(Vec::new());
    report.push("mode", "echo");
    report.push("connections", connections);
    report.push("in_flight", in_flight);
    report.push("size", size);
    add_corpus(&mut report, corpus.as_ref());
    report.push("seconds", format!("{elapsed:.2}"));
    report.push("messages", load.count);
    report.push("msgs_per_sec", format!("{:.0}", load.count as f64 / elapsed));
    report.push("mismatched", load.mismatched);
    add_latencies(&mut report, std::mem::take(&mut load.latencies_us));
    bench.add_deflate(&mut report);
    add_traffic(&mut report, Bench::traffic(&bench.clients));
    probe.finish(&mut report, "msg", load.count);
    Ok(report)
}

fn run_broadcast(args: &Args, mode: &Mode) -> io::Result<Report> {
    let Mode::Broadcast {
        path,
        connections,
        rate,
        seconds,
        warmup,
        drain,
        chat_text,
        sender_addr,
    } = mode.clone()
    else {
        unreachable!("called for broadcast")
    };
    let corpus = corpus(args, chat_text)?;
    let mut bench = Bench::new(&args.addr, args.deflate)?;
    let mut load = BroadcastLoad {
        sender: connections,
        start: Instant::now(),
        measuring: false,
        deliveries: 0,
        latencies_us: Vec::new(),
    };
    bench.open(connections, &path, &mut load)?;
    if let Some(sender_addr) = &sender_addr {
        let other = Bench::new(sender_addr, args.deflate)?;
        bench.addr = other.addr;
        bench.host = other.host;
    }
    bench.open(1, &path, &mut load)?;
    // Let the joined notices of the last connections settle before the clock starts.
    bench.run_until(
        Instant::now() + Duration::from_millis(500),
        None,
        &mut load,
        &mut |_, _| Ok(()),
    )?;
    load.start = Instant::now();
    let mut sent: u64 = 0;
    let mut pace = |bench: &mut Bench, now: Instant, start: Instant| -> io::Result<()> {
        let due = (now.duration_since(start).as_secs_f64() * rate) as u64;
        let sender = &mut bench.clients[connections];
        while sent < due {
            let text = chat_message(corpus.as_ref(), sent, now.duration_since(start).as_micros());
            sender
                .conn
                .sender(now)
                .send_text(&text)
                .map_err(|e| io::Error::other(e.to_string()))?;
            sent += 1;
        }
        sender.conn.outbox().write_to(&mut sender.stream).map(|_| ())
    };
    let start = load.start;
    let tick = Some(Duration::from_millis(1));
    bench.run_until(start + secs(warmup), tick, &mut load, &mut |bench, now| {
        pace(bench, now, start)
    })?;
    load.measuring = true;
    // The receivers' traffic counts from here to the end of the drain, like the deliveries that
    // CPU per delivery divides by.
    bench.counting = true;
    let probe = ServerProbe::start(args.server_pid);
    let measured_from = Instant::now();
    bench.run_until(
        measured_from + secs(seconds),
        tick,
        &mut load,
        &mut |bench, now| pace(bench, now, start),
    )?;
    let elapsed = measured_from.elapsed().as_secs_f64();
    let deliveries = load.deliveries;
    let total_sent = sent;
    // Stop sending and wait (bounded) for the last deliveries to arrive. They still count (as
    // `drained_deliveries`), but not towards deliveries/s.
    let drain_from = Instant::now();
    let drain_until = drain_from + secs(drain);
    while Instant::now() < drain_until
        && bench.clients[..connections]
            .iter()
            .any(|client| client.state.next_seq < total_sent)
    {
        bench.turn(Some(Duration::from_millis(50)), &mut load)?;
    }
    let receivers = &bench.clients[..connections];
    // Told apart, since a receiver still behind when the drain gives up is not one that got
    // messages out of order.
    let short = receivers
        .iter()
        .filter(|client| client.state.next_seq != total_sent)
        .count();
    let out_of_order = receivers
        .iter()
        .filter(|client| client.state.out_of_order)
        .count();
    let complete = short == 0 && out_of_order == 0;
    let mut report = Report(Vec::new());
    report.push("mode", "broadcast");
    report.push("receivers", connections);
    report.push("cross_node", sender_addr.is_some());
    report.push("rate", rate);
    add_corpus(&mut report, corpus.as_ref());
    report.push("seconds", format!("{elapsed:.2}"));
    report.push("sent", total_sent);
    report.push("deliveries", deliveries);
    report.push(
        "deliveries_per_sec",
        format!("{:.0}", deliveries as f64 / elapsed),
    );
    report.push("all_in_order", complete);
    report.push("receivers_short", short);
    report.push("receivers_out_of_order", out_of_order);
    report.push("drain_s", format!("{:.2}", drain_from.elapsed().as_secs_f64()));
    report.push("drained_deliveries", load.deliveries - deliveries);
    add_latencies(&mut report, std::mem::take(&mut load.latencies_us));
    bench.add_deflate(&mut report);
    add_traffic(&mut report, Bench::traffic(receivers));
    // The server's CPU is read now, after the drain, so it is divided by the deliveries up to now:
    // a backlog written out during the drain would otherwise be charged to the window's deliveries.
    probe.finish(&mut report, "delivery", load.deliveries);
    Ok(report)
}

fn run_hold(args: &Args, mode: &Mode) -> io::Result<Report> {
    let Mode::Hold {
        path,
        connections,
        seconds,
    } = mode.clone()
    else {
        unreachable!("called for hold")
    };
    let mut bench = Bench::new(&args.addr, args.deflate)?;
    let mut load = HoldLoad;
    bench.open(connections, &path, &mut load)?;
    let rss_at_open = args.server_pid.and_then(rss_kib);
    let probe = ServerProbe::start(args.server_pid);
    let started = Instant::now();
    bench.run_until(started + secs(seconds), None, &mut load, &mut |_, _| Ok(()))?;
    let mut report = Report(Vec::new());
    report.push("mode", "hold");
    report.push("connections", bench.clients.len());
    report.push("seconds", format!("{:.2}", started.elapsed().as_secs_f64()));
    bench.add_deflate(&mut report);
    if let Some(rss) = rss_at_open {
        report.push("server_rss_kib_at_open", rss);
    }
    probe.finish(&mut report, "connection", 0);
    if let (Some(pid), true) = (args.server_pid, connections > 0) {
        if let Some(rss) = rss_kib(pid) {
            report.push("server_rss_bytes_per_conn", rss * 1024 / connections as u64);
        }
    }
    Ok(report)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = match &args.mode {
        mode @ Mode::Echo { .. } => run_echo(&args, mode),
        mode @ Mode::Broadcast { .. } => run_broadcast(&args, mode),
        mode @ Mode::Hold { .. } => run_hold(&args, mode),
    };
    match result {
        Ok(report) => {
            report.print(args.json);
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("wschat-bench: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Figures of one run, printed in order.
struct Report(Vec<(String, String)>);

impl Report {
    fn push(&mut self, key: impl Into<String>, value: impl ToString) {
        self.0.push((key.into(), value.to_string()));
    }

    fn print(&self, json: bool) {
        let fields: Vec<String> = if json {
            self.0
                .iter()
                .map(|(key, value)| match value.parse::<f64>() {
                    Ok(_) => format!("\"{key}\":{value}"),
                    Err(_) if value == "true" || value == "false" => format!("\"{key}\":{value}"),
                    Err(_) => format!("\"{key}\":\"{value}\""),
                })
                .collect()
        } else {
            self.0
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect()
        };
        if json {
            println!("{{{}}}", fields.join(","));
        } else {
            println!("{}", fields.join(" "));
        }
    }
}

/// CPU seconds the process has spent in user space and in the kernel, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: count fields after its closing parenthesis
    // (utime and stime are fields 14 and 15 of proc(5), the 12th and 13th after it).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user = fields.get(11)?.parse::<f64>().ok()?;
    let system = fields.get(12)?.parse::<f64>().ok()?;
    let ticks = clock_ticks_per_second();
    Some((user / ticks, system / ticks))
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Resident memory of the process in KiB, from /proc/PID/status.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use wschat::ws::deflate::{self, DeflatePolicy};
    use wschat::ws::protocol::State;

    /// Messages below this go out plain from the test server, the others compressed.
    const THRESHOLD: usize = 32;

    /// What wschat agrees to when our client offers the extension.
    fn wschat_agreement() -> DeflateParams {
        let (params, _) = deflate::negotiate(&[deflate::CLIENT_OFFER], &DeflatePolicy::default()).unwrap();
        assert!(params.server_no_context_takeover);
        params
    }

    /// A short message, long ones (one of them twice, one not ASCII) and a ping in between: what a
    /// server with `params` sends.
    fn server_stream(params: DeflateParams) -> (Vec<u8>, Vec<String>) {
        let long = "morning! did anyone see the build break last night? the build, the build";
        let messages: Vec<String> = vec![
            "hi".into(),
            long.into(),
            "günaydın, çay hazır mı? günaydın, çay hazır mı? evet, çay hazır".into(),
            long.into(),
            "a \"quoted\" line that is long enough to be compressed".into(),
        ];
        let now = Instant::now();
        let mut server = Connection::new(Role::Server, Config::default(), now).with_deflate(DeflateConfig {
            params,
            deflate_threshold: THRESHOLD,
        });
        for (k, message) in messages.iter().enumerate() {
            server.sender(now).send_text(message).unwrap();
            if k == 1 {
                server.sender(now).ping(b"still there?").unwrap();
            }
        }
        let mut wire = Vec::new();
        server.outbox().write_to(&mut wire).unwrap();
        (wire, messages)
    }

    /// What a client with `params` delivers from `wire` read in `pieces`, through a splitter or
    /// not, and how many compressed messages the splitter saw.
    fn deliver(
        params: DeflateParams,
        pieces: &[&[u8]],
        cache: &mut InflateCache,
        split: bool,
    ) -> (Vec<String>, State, u64) {
        let now = Instant::now();
        let mut conn = Connection::with_mask_seed(Role::Client, client_config(), now, 7)
            .with_deflate(DeflateConfig::new(params));
        let mut splitter = FrameSplitter::new(params);
        let (mut messages, mut compressed) = (Vec::new(), 0);
        for piece in pieces {
            let mut input = Vec::new();
            if split {
                compressed += splitter.rewrite(piece, &mut input, cache);
            } else {
                input.extend_from_slice(piece);
            }
            conn.receive(&mut input, now, |event, _| {
                if let Event::Text(text) = event {
                    messages.push(text.to_owned());
                }
            });
        }
        (messages, conn.state(), compressed)
    }

    fn compressed_count(messages: &[String]) -> u64 {
        messages
            .iter()
            .filter(|message| message.len() >= THRESHOLD)
            .count() as u64
    }

    #[test]
    fn splitter_delivers_the_same_messages_read_whole_or_cut_at_every_byte() {
        let params = wschat_agreement();
        let (wire, sent) = server_stream(params);
        let mut cache = InflateCache::default();
        for cut in 0..=wire.len() {
            let (first, second) = wire.split_at(cut);
            let got = deliver(params, &[first, second], &mut cache, true);
            assert_eq!(
                got,
                (sent.clone(), State::Open, compressed_count(&sent)),
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        let got = deliver(params, &bytes, &mut cache, true);
        assert_eq!(got, (sent.clone(), State::Open, compressed_count(&sent)));
    }

    #[test]
    fn cache_inflates_each_distinct_message_once() {
        let params = wschat_agreement();
        let (wire, sent) = server_stream(params);
        let mut cache = InflateCache::default();
        for _ in 0..3 {
            deliver(params, &[&wire], &mut cache, true);
        }
        let distinct: std::collections::HashSet<&String> =
            sent.iter().filter(|message| message.len() >= THRESHOLD).collect();
        assert_eq!(cache.newer.len(), distinct.len());
    }

    #[test]
    fn server_that_keeps_its_context_is_passed_through_untouched() {
        let params = DeflateParams {
            server_no_context_takeover: false,
            ..wschat_agreement()
        };
        let (wire, sent) = server_stream(params);
        let mut cache = InflateCache::default();
        let mut splitter = FrameSplitter::new(params);
        let mut out = Vec::new();
        let compressed = splitter.rewrite(&wire, &mut out, &mut cache);
        assert_eq!(out, wire);
        assert_eq!(compressed, compressed_count(&sent));
        assert!(cache.newer.is_empty());
        assert_eq!(deliver(params, &[&wire], &mut cache, true).0, sent);
    }

    #[test]
    fn corrupt_compressed_frame_fails_the_connection_as_it_would_without_the_splitter() {
        let params = wschat_agreement();
        // BFINAL=1 with the reserved block type 11: not DEFLATE (RFC 1951 §3.2.3).
        let payload = [0xff, 0xff, 0xff];
        let mut header = FrameHeader::new(true, OpCode::Text, None, payload.len());
        header.rsv = RSV1;
        let mut wire = Vec::new();
        header.encode(&mut wire);
        wire.extend_from_slice(&payload);
        let mut cache = InflateCache::default();
        let direct = deliver(params, &[&wire], &mut cache, false);
        let split = deliver(params, &[&wire], &mut cache, true);
        assert_eq!(direct.1, State::Closed);
        assert_eq!((split.0, split.1), (direct.0, direct.1));
    }

    #[test]
    fn chat_text_block_is_exactly_the_size_asked_cut_at_a_character_boundary() {
        let corpus = Corpus {
            lines: vec!["çay".into(), "günaydın herkese".into()],
        };
        for size in 0..64 {
            assert_eq!(corpus.block(3, size).len(), size, "size {size}");
        }
    }

    #[test]
    fn probe_is_read_back_from_the_chat_event_with_or_without_a_chat_line() {
        let corpus = Corpus {
            lines: vec!["she said \"ship it\" \\ and left".into()],
        };
        for corpus in [None, Some(&corpus)] {
            let sent: serde_json::Value = serde_json::from_str(&chat_message(corpus, 12, 3456)).unwrap();
            // The chat's `message` event carries the text in `payload.text`, among other fields.
            let event = serde_json::json!({
                "type": "message",
                "payload": {"id": 1, "room": "lobby", "nickname": "a", "text": sent["payload"], "ts": 2},
            });
            assert_eq!(parse_probe(event.to_string().as_bytes()), Some((12, 3456)));
        }
    }
}
