//! `wschat-bench`: a load generator on `mio` that speaks WebSocket with wschat's own sans-IO core
//! in client role (every frame masked with a fresh key), against any server.
//!
//! - `echo`: C connections, K messages of S bytes in flight each; messages/s and round-trip latency.
//!   With `--chat-text` the messages are S-byte blocks of chat text, a different one each time.
//! - `broadcast`: C receivers in one chat room and one sender at R messages/s; deliveries/s,
//!   delivery latency, and whether every receiver got every message in order. With `--chat-text`
//!   each message carries a chat line as people type them ([`Corpus`]).
//! - `hold`: C idle connections for T seconds (answering pings), for memory measurement.
//! - `transports`: the chat over a WebSocket, Server-Sent Events and long-polls, one sender and
//!   one receiver each (blocking sockets, a thread per client): send → receipt latency and the
//!   bytes each client's sockets carried per message, and an idle client's bytes per minute.
//! - `chat`: C chat senders, each in a room of its own (or spread over R rooms), each with one
//!   message in flight: it sends the next when the `ack` of the last came back. Acknowledged
//!   messages/s and ack latency; optionally paced like the server's rate limit and stopped after M
//!   messages each (a room-filling attack, for memory measurement).
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
//!
//! `--tls` speaks TLS (rustls, the `ring` provider as in the server) to a server that serves
//! `wss://`, trusting the CA certificates of `--ca`; the server's name is the host of `--addr`.
//! `handshake` measures connection set-up: C connections at a time, each opening (TCP, TLS with
//! `--tls`, then the WebSocket upgrade) and closing at once; run it with and without `--tls` to see
//! what TLS costs per connection.
#![allow(clippy::disallowed_methods)] // A program at the I/O edge: it reads the clock itself.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
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
    about = "Load generator for WebSocket servers (echo, chat broadcast, idle hold, chat senders)"
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
    /// Connect over TLS (`wss://`), trusting the CA certificates in `--ca`.
    #[arg(long, global = true, requires = "ca")]
    tls: bool,
    /// PEM file of the CA certificates that `--tls` trusts.
    #[arg(long, global = true, value_name = "PEM")]
    ca: Option<PathBuf>,
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
    /// The chat over each transport (WebSocket, Server-Sent Events, long-polling): latency from
    /// send to the other client's receipt, the server's CPU per message (with `--server-pid`),
    /// bytes on the wire per message and per idle minute; prints a Markdown table. Give the
    /// server a rate limit above 1000 / `interval-ms` per second (the default 250 ms is under its
    /// default 5 per second), and lift its per-address limits: every client is 127.0.0.1.
    Transports {
        /// Chat lines the sender says on each transport, in each round.
        #[arg(short = 'n', long, default_value_t = 100)]
        messages: usize,
        /// Rounds: each measures every transport once, in an order rotated from round to round.
        /// The table gives medians over the rounds, and each transport's ratio to WebSocket is
        /// taken within a round (where the machine's load was alike) before its median.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        rounds: u32,
        /// Milliseconds between two of them.
        #[arg(long, default_value_t = 250)]
        interval_ms: u64,
        /// Seconds an idle client of each transport is watched (meanwhile, in rooms of their own).
        #[arg(long, default_value_t = 60.0)]
        idle: f64,
        /// Only these transports (repeatable; default all three).
        #[arg(long, value_enum)]
        only: Vec<Transport>,
    },
    /// Connection set-up: C at a time, each closed as soon as its upgrade is answered.
    Handshake {
        #[arg(long, default_value = "/echo")]
        path: String,
        /// Connections opened at once.
        #[arg(short = 'c', long, default_value_t = 50)]
        connections: usize,
        #[arg(short = 't', long, default_value_t = 10.0)]
        seconds: f64,
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
    /// Chat senders, each waiting for the `ack` of its message before sending the next.
    Chat {
        /// Path of the chat endpoint.
        #[arg(long, default_value = "/")]
        path: String,
        /// Senders.
        #[arg(short = 'c', long, default_value_t = 100)]
        connections: usize,
        /// Rooms the senders are spread over (sender i joins `bench-<i mod ROOMS>`). By default each
        /// sender has a room of its own, so that nobody receives the others' messages and the
        /// figures are those of the store, not of a broadcast.
        #[arg(long)]
        rooms: Option<usize>,
        /// Characters of text per message.
        #[arg(long, default_value_t = 16)]
        chars: usize,
        /// The character the text is made of (`😀` is four bytes of UTF-8).
        #[arg(long, default_value = "x", value_parser = parse_fill)]
        fill: char,
        /// Send the text as a plain string payload, without a key (the protocol before keys).
        #[arg(long)]
        plain: bool,
        /// Join at once after the handshake, without waiting for the lobby's `welcome` (by default a
        /// sender joins its room once the `welcome` it gets on connecting arrives).
        #[arg(long)]
        eager_join: bool,
        /// Each sender stops after this many acknowledged messages, and the run ends when all have:
        /// measured from the first connect, no warm-up, `-t` bounds the run.
        #[arg(long)]
        messages: Option<u64>,
        /// Pace each sender as a token bucket refilled at this many texts per second (the server's
        /// `--rate-limit`; the `join` counts too), so that the server never refuses one.
        #[arg(long, value_parser = parse_rate)]
        rate: Option<f64>,
        /// Size of that bucket (the server's `--rate-burst`).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        burst: u32,
        /// Measured seconds (with `--messages`: the most the run may take).
        #[arg(short = 't', long, default_value_t = 10.0)]
        seconds: f64,
        /// Unmeasured seconds before (not with `--messages`).
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
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
    /// With `--tls`: the TLS client between the socket and the protocol core. Boxed like the
    /// server's: a plain client carries one pointer.
    tls: Option<Box<rustls::ClientConnection>>,
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
    fn connect(
        addr: SocketAddr,
        host: &str,
        path: &str,
        seed: u64,
        deflate: bool,
        tls: Option<&TlsClient>,
    ) -> io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        let tls = match tls {
            Some(tls) => {
                let mut conn = rustls::ClientConnection::new(Arc::clone(&tls.config), tls.name.clone())
                    .map_err(io::Error::other)?;
                // The protocol core's outbox is the queue this client keeps; rustls takes all of it.
                conn.set_buffer_limit(None);
                Some(Box::new(conn))
            }
            None => None,
        };
        let nonce: [u8; 16] = std::array::from_fn(|i| (seed.rotate_left(i as u32 * 8) >> 3) as u8);
        let handshake = if deflate {
            ClientHandshake::with_deflate(host, path, nonce)
        } else {
            ClientHandshake::new(host, path, nonce)
        };
        Ok(Self {
            stream,
            tls,
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
// TLS (`--tls`)
// ------------------------------------------------------------------------------------------

/// What every TLS client shares: the configuration (trusting `--ca`) and the server's name.
struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
}

impl TlsClient {
    /// From `--tls` and `--ca`; the name is the host of `--addr` (a DNS name or an IP address,
    /// which the server's certificate must carry).
    fn from_args(args: &Args) -> io::Result<Option<Self>> {
        use rustls::pki_types::pem::PemObject;
        let (true, Some(ca)) = (args.tls, &args.ca) else {
            return Ok(None);
        };
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)
            .map_err(|error| invalid(format!("{}: {error}", ca.display())))?
        {
            let cert = cert.map_err(|error| invalid(format!("{}: {error}", ca.display())))?;
            roots.add(cert).map_err(io::Error::other)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let host = args
            .addr
            .rsplit_once(':')
            .map_or(args.addr.as_str(), |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|error| invalid(format!("{host}: {error}")))?;
        Ok(Some(Self {
            config: Arc::new(config),
            name,
        }))
    }
}

/// Ciphertext read from the socket, decrypted into `plaintext` (cleared first).
fn decrypt(
    tls: &mut rustls::ClientConnection,
    mut ciphertext: &[u8],
    plaintext: &mut Vec<u8>,
) -> io::Result<()> {
    plaintext.clear();
    while !ciphertext.is_empty() {
        if tls.read_tls(&mut ciphertext)? == 0 {
            break;
        }
        let state = tls
            .process_new_packets()
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
        let start = plaintext.len();
        plaintext.resize(start + state.plaintext_bytes_to_read(), 0);
        tls.reader().read_exact(&mut plaintext[start..])?;
    }
    Ok(())
}

/// Encrypts what the protocol core queued and writes the records until the socket would block.
fn write_tls(
    tls: &mut rustls::ClientConnection,
    outbox: &mut wschat::outbox::Outbox,
    stream: &mut TcpStream,
) -> io::Result<()> {
    outbox.write_to(&mut tls.writer())?;
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
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
    /// Print how many connections are open as they open (not in `handshake`, which opens many).
    progress: bool,
    /// With `--tls`: what one read decrypts to.
    plaintext: Vec<u8>,
    tls: Option<TlsClient>,
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
    fn new(addr: &str, deflate: bool, tls: Option<TlsClient>) -> io::Result<Self> {
        let resolved = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing"))?;
        Ok(Self {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            clients: Vec::new(),
            scratch: vec![0; 256 * 1024],
            plaintext: Vec::new(),
            progress: true,
            tls,
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
                    self.tls.as_ref(),
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
            if self.progress && (self.clients.len() >= 1000 || self.clients.len() == target) {
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
            plaintext,
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
            // What the protocol core reads: the bytes as read, or what they decrypt to.
            let data = match &mut client.tls {
                Some(tls) => {
                    decrypt(tls, &scratch[..len], plaintext)?;
                    plaintext.as_mut_slice()
                }
                None => &mut scratch[..len],
            };
            let mut start = 0;
            if let Some((handshake, buf)) = &mut client.handshake {
                buf.extend_from_slice(data);
                let answer = match handshake.parse_answer(buf) {
                    Ok(None) => continue,
                    Ok(Some(answer)) => answer,
                    Err(error) => return Err(io::Error::other(error.to_string())),
                };
                // Bytes after the head are frames; they are still at the end of `data`.
                start = data.len() - (buf.len() - answer.head_len);
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
            let received = &mut data[start..];
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
        let tls_pending = match &mut client.tls {
            Some(tls) => {
                write_tls(tls, client.conn.outbox(), &mut client.stream)?;
                tls.wants_write()
            }
            None => {
                client.conn.outbox().write_to(&mut client.stream)?;
                false
            }
        };
        let wants_write = client.conn.queued() > 0 || !client.request_sent || tls_pending;
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
    let mut bench = Bench::new(&args.addr, args.deflate, TlsClient::from_args(args)?)?;
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
    report.push("tls", bench.tls.is_some());
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
    let mut bench = Bench::new(&args.addr, args.deflate, TlsClient::from_args(args)?)?;
    let mut load = BroadcastLoad {
        sender: connections,
        start: Instant::now(),
        measuring: false,
        deliveries: 0,
        latencies_us: Vec::new(),
    };
    bench.open(connections, &path, &mut load)?;
    if let Some(sender_addr) = &sender_addr {
        let other = Bench::new(sender_addr, args.deflate, TlsClient::from_args(args)?)?;
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
    report.push("tls", bench.tls.is_some());
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
    let mut bench = Bench::new(&args.addr, args.deflate, TlsClient::from_args(args)?)?;
    let mut load = HoldLoad;
    bench.open(connections, &path, &mut load)?;
    let rss_at_open = args.server_pid.and_then(rss_kib);
    let probe = ServerProbe::start(args.server_pid);
    let started = Instant::now();
    bench.run_until(started + secs(seconds), None, &mut load, &mut |_, _| Ok(()))?;
    let mut report = Report(Vec::new());
    report.push("mode", "hold");
    report.push("tls", bench.tls.is_some());
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

/// Opens `connections` at a time and closes them as soon as each is upgraded, for `seconds`.
fn run_handshake(args: &Args, mode: &Mode) -> io::Result<Report> {
    let Mode::Handshake {
        path,
        connections,
        seconds,
    } = mode.clone()
    else {
        unreachable!("called for handshake")
    };
    let mut bench = Bench::new(&args.addr, args.deflate, TlsClient::from_args(args)?)?;
    bench.progress = false;
    let mut load = HoldLoad;
    let probe = ServerProbe::start(args.server_pid);
    let started = Instant::now();
    let mut opened = 0u64;
    while started.elapsed() < secs(seconds) {
        bench.open(connections, &path, &mut load)?;
        opened += bench.clients.len() as u64;
        for mut client in bench.clients.drain(..) {
            bench.poll.registry().deregister(&mut client.stream)?;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut report = Report(Vec::new());
    report.push("mode", "handshake");
    report.push("tls", bench.tls.is_some());
    report.push("concurrency", connections);
    report.push("seconds", format!("{elapsed:.2}"));
    report.push("handshakes", opened);
    report.push("handshakes_per_sec", format!("{:.0}", opened as f64 / elapsed));
    probe.finish(&mut report, "handshake", opened);
    Ok(report)
}

/// The most the timed chat run waits for every sender's welcome (as `Bench::open` for handshakes).
const ENTER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a sender waits before sending again a message the server refused for now
/// (`rate_limited`, `store_unavailable`).
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// One sender's copy of the server's rate limit (`--rate-limit`, `--rate-burst`): `burst` texts
/// at once, then `rate` per second, so that a sender that keeps to it is never refused.
///
/// The server refills its bucket between the moments it *processes* two texts, which are later
/// than the moments they were sent, by a delay that varies (a loaded server is slower for one
/// message than for the next). So this copy refills only between the answer to one text (which
/// came after the server processed it) and the sending of the next (which is before the server
/// processes that): each interval it counts lies inside the server's, and it never has more
/// tokens than the server. It fills when the 101 arrives, after the server filled its own.
#[derive(Debug, Clone, Copy)]
struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    /// Since when it refills; `None` while a text is in flight.
    refilling_since: Option<Instant>,
}

impl Pacer {
    fn new(rate: f64, burst: u32, now: Instant) -> Self {
        Self {
            rate,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            refilling_since: Some(now),
        }
    }

    /// Takes a token for a text sent now and answers `None` (refilling stops until its answer
    /// arrives), or answers when there will be one.
    fn take(&mut self, now: Instant) -> Option<Instant> {
        if let Some(since) = self.refilling_since {
            let elapsed = now.saturating_duration_since(since).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
            self.refilling_since = Some(now);
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refilling_since = None;
            None
        } else {
            // Rounded up to the next whole microsecond, and one more: at that moment the refill
            // gives a whole token despite the rounding of floats and durations (waiting exactly
            // the float quotient can leave 0.999… tokens and a wait of zero, for ever).
            let micros = ((1.0 - self.tokens) / self.rate * 1e6).ceil() as u64 + 1;
            Some(now + Duration::from_micros(micros))
        }
    }

    /// The answer to the text in flight arrived: refilling resumes.
    fn answered(&mut self, now: Instant) {
        self.refilling_since.get_or_insert(now);
    }
}

/// What one chat sender is doing.
#[derive(Debug)]
struct ChatSender {
    room: String,
    /// Its `join` went out.
    joined: bool,
    /// Its room's `welcome` arrived; it sends from then on.
    entered: bool,
    /// Messages acknowledged, which is also the number of the next one (its key).
    acked: u64,
    /// When the message in flight went out.
    in_flight: Option<Instant>,
    /// When it may send, while it waits for a token or to retry a refused message.
    due: Option<Instant>,
    pacer: Option<Pacer>,
}

struct ChatLoad {
    senders: Vec<ChatSender>,
    /// The text of every message.
    text: String,
    keyed: bool,
    /// Whether senders join right after the handshake instead of after the lobby's `welcome`.
    eager_join: bool,
    /// Messages per sender when the run stops after them.
    limit: Option<u64>,
    /// Rate and burst of every sender's pacer.
    pace: Option<(f64, u32)>,
    measuring: bool,
    /// Acknowledged in the measured window, and since the start.
    acked: u64,
    acked_total: u64,
    latencies_us: Vec<u32>,
    /// Senders that reached `limit`.
    finished: usize,
    /// Refusals of a message (each is sent again after `RETRY_AFTER`).
    rate_limited: u64,
    store_unavailable: u64,
    /// Acks that did not carry the key of the message in flight.
    wrong_key: u64,
    /// Senders that have a `due` time.
    waiting: Vec<usize>,
    /// An answer the run cannot go on after: a refused join, a message the server finds invalid.
    fatal: Option<String>,
}

/// The string value of `"name":"..."` in a server's JSON, found without a JSON parser (the load
/// generator must stay cheaper than the server). Only for values the bench chose or the server's
/// codes, none of which need escaping.
fn json_string<'a>(json: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let mark = format!("\"{name}\":\"");
    let at = json
        .windows(mark.len())
        .position(|window| window == mark.as_bytes())?
        + mark.len();
    let rest = &json[at..];
    Some(&rest[..rest.iter().position(|&b| b == b'"')?])
}

fn chat_key(sender: usize, number: u64) -> String {
    format!("c{sender}-{number}")
}

impl ChatLoad {
    fn chat_message(&self, sender: usize, number: u64) -> String {
        if self.keyed {
            let key = chat_key(sender, number);
            format!(
                "{{\"type\":\"message\",\"payload\":{{\"text\":\"{}\",\"key\":\"{key}\"}}}}",
                self.text
            )
        } else {
            format!("{{\"type\":\"message\",\"payload\":\"{}\"}}", self.text)
        }
    }

    /// Sends sender `i`'s `join`. It costs a token too; the bucket starts full (`--burst` is at
    /// least 1) and nothing was sent before, so there is one.
    fn join(&mut self, i: usize, sender: &mut Sender<'_>, now: Instant) {
        let state = &mut self.senders[i];
        if let Some(pacer) = state.pacer.as_mut() {
            pacer.take(now);
        }
        state.joined = true;
        let join = format!("{{\"type\":\"join\",\"payload\":\"{}\"}}", state.room);
        if let Err(error) = sender.send_text(&join) {
            self.fatal = Some(format!("sender {i}: {error}"));
        }
    }

    /// Sends sender `i`'s next message, or schedules it when its pacer has no token.
    fn send_next(&mut self, i: usize, sender: &mut Sender<'_>, now: Instant) {
        let state = &mut self.senders[i];
        if self.limit.is_some_and(|limit| state.acked >= limit) || state.in_flight.is_some() {
            return;
        }
        if let Some(at) = state.pacer.as_mut().and_then(|pacer| pacer.take(now)) {
            state.due = Some(at);
            self.waiting.push(i);
            return;
        }
        let number = state.acked;
        match sender.send_text(&self.chat_message(i, number)) {
            Ok(()) => self.senders[i].in_flight = Some(now),
            Err(error) => self.fatal = Some(format!("sender {i}: {error}")),
        }
    }

    /// Senders whose `due` time has come, which stop waiting.
    fn take_due(&mut self, now: Instant) -> Vec<usize> {
        let senders = &mut self.senders;
        let mut due = Vec::new();
        self.waiting.retain(|&i| {
            let ready = senders[i].due.is_some_and(|at| at <= now);
            if ready {
                senders[i].due = None;
                due.push(i);
            }
            !ready
        });
        due
    }

    fn next_due(&self) -> Option<Instant> {
        self.waiting.iter().filter_map(|&i| self.senders[i].due).min()
    }

    fn on_ack(&mut self, i: usize, ack: &[u8], sender: &mut Sender<'_>, now: Instant) {
        let state = &mut self.senders[i];
        let Some(sent) = state.in_flight.take() else {
            self.fatal = Some(format!("sender {i}: an ack with no message in flight"));
            return;
        };
        if let Some(pacer) = state.pacer.as_mut() {
            pacer.answered(now);
        }
        if self.keyed && json_string(ack, "key") != Some(chat_key(i, state.acked).as_bytes()) {
            self.wrong_key += 1;
        }
        state.acked += 1;
        if self.limit.is_some_and(|limit| state.acked >= limit) {
            self.finished += 1;
        }
        self.acked_total += 1;
        if self.measuring {
            self.acked += 1;
            let micros = now.saturating_duration_since(sent).as_micros();
            self.latencies_us.push(micros.min(u128::from(u32::MAX)) as u32);
        }
        self.send_next(i, sender, now);
    }

    /// A refusal of the message in flight that passes is retried; anything else ends the run.
    fn on_error(&mut self, i: usize, error: &[u8], now: Instant) {
        let state = &mut self.senders[i];
        let counter = match (state.in_flight, json_string(error, "code")) {
            (Some(_), Some(b"rate_limited")) => &mut self.rate_limited,
            (Some(_), Some(b"store_unavailable")) => &mut self.store_unavailable,
            _ => {
                let error = String::from_utf8_lossy(error);
                self.fatal = Some(format!("sender {i} (room {}): {error}", state.room));
                return;
            }
        };
        *counter += 1;
        state.in_flight = None;
        if let Some(pacer) = state.pacer.as_mut() {
            pacer.answered(now);
        }
        state.due = Some(now + RETRY_AFTER);
        self.waiting.push(i);
    }
}

impl Workload for ChatLoad {
    fn on_open(&mut self, i: usize, _: &mut PerClient, sender: &mut Sender<'_>, now: Instant) {
        self.senders[i].pacer = self.pace.map(|(rate, burst)| Pacer::new(rate, burst, now));
        if self.eager_join {
            self.join(i, sender, now);
        }
    }

    fn on_message(
        &mut self,
        i: usize,
        _: &mut PerClient,
        message: &[u8],
        sender: &mut Sender<'_>,
        now: Instant,
    ) {
        if message.starts_with(b"{\"type\":\"ack\"") {
            self.on_ack(i, message, sender, now);
        } else if message.starts_with(b"{\"type\":\"error\"") {
            self.on_error(i, message, now);
        } else if message.starts_with(b"{\"type\":\"welcome\"") {
            // The first `room` of a welcome is the room entered (the nickname before it cannot
            // hold a quote). The welcome of the lobby, on connect, is the cue to join.
            let state = &mut self.senders[i];
            if !state.joined {
                self.join(i, sender, now);
            } else if !state.entered && json_string(message, "room") == Some(state.room.as_bytes()) {
                state.entered = true;
                if let Some(pacer) = state.pacer.as_mut() {
                    pacer.answered(now);
                }
                self.send_next(i, sender, now);
            }
        }
        // Other members' messages and notices (with `--rooms`) are not answers to this sender.
    }
}

/// Runs the chat senders until `until` or until `done` holds, and says whether it did. Senders due
/// to send (paced, or retrying) are served after every turn.
fn drive_chat(
    bench: &mut Bench,
    load: &mut ChatLoad,
    until: Instant,
    done: fn(&ChatLoad) -> bool,
) -> io::Result<bool> {
    loop {
        if let Some(why) = load.fatal.take() {
            return Err(io::Error::other(why));
        }
        if done(load) {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= until {
            return Ok(false);
        }
        let wake = load.next_due().map_or(until, |due| due.min(until));
        let timeout = wake
            .saturating_duration_since(now)
            .min(Duration::from_millis(100));
        bench.turn(Some(timeout), load)?;
        let now = Instant::now();
        for i in load.take_due(now) {
            load.send_next(i, &mut bench.clients[i].conn.sender(now), now);
            // Writes what was queued (and reads anything that came meanwhile).
            bench.service(i, now, load)?;
        }
    }
}

fn run_chat(args: &Args, mode: &Mode) -> io::Result<Report> {
    let Mode::Chat {
        path,
        connections,
        rooms,
        chars,
        fill,
        plain,
        eager_join,
        messages,
        rate,
        burst,
        seconds,
        warmup,
    } = mode.clone()
    else {
        unreachable!("called for chat")
    };
    let rooms = rooms.unwrap_or(connections).max(1);
    let mut load = ChatLoad {
        senders: (0..connections)
            .map(|i| ChatSender {
                room: format!("bench-{}", i % rooms),
                joined: false,
                entered: false,
                acked: 0,
                in_flight: None,
                due: None,
                pacer: None,
            })
            .collect(),
        text: std::iter::repeat_n(fill, chars).collect(),
        keyed: !plain,
        eager_join,
        limit: messages,
        pace: rate.map(|rate| (rate, burst)),
        measuring: false,
        acked: 0,
        acked_total: 0,
        latencies_us: Vec::new(),
        finished: 0,
        rate_limited: 0,
        store_unavailable: 0,
        wrong_key: 0,
        waiting: Vec::new(),
        fatal: None,
    };
    let mut bench = Bench::new(&args.addr, args.deflate, TlsClient::from_args(args)?)?;
    let (probe, started) = if messages.is_some() {
        // Filling rooms is measured whole: connecting and joining are part of it.
        let probe = ServerProbe::start(args.server_pid);
        let started = Instant::now();
        load.measuring = true;
        bench.open(connections, &path, &mut load)?;
        if !drive_chat(&mut bench, &mut load, started + secs(seconds), |load| {
            load.finished == load.senders.len()
        })? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} of {connections} senders had their messages acknowledged in {seconds} s \
                     ({} had entered their rooms)",
                    load.finished,
                    load.senders.iter().filter(|state| state.entered).count()
                ),
            ));
        }
        (probe, started)
    } else {
        bench.open(connections, &path, &mut load)?;
        // The senders that entered send while the others still wait for their welcome (which
        // waits for the store to read the room's history); the warm-up starts once all are in.
        let entered = |load: &ChatLoad| load.senders.iter().all(|state| state.entered);
        if !drive_chat(&mut bench, &mut load, Instant::now() + ENTER_TIMEOUT, entered)? {
            let count = load.senders.iter().filter(|state| state.entered).count();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{count} of {connections} senders entered their rooms in {ENTER_TIMEOUT:?}"),
            ));
        }
        let never = |_: &ChatLoad| false;
        drive_chat(&mut bench, &mut load, Instant::now() + secs(warmup), never)?;
        load.measuring = true;
        let probe = ServerProbe::start(args.server_pid);
        let started = Instant::now();
        drive_chat(&mut bench, &mut load, started + secs(seconds), never)?;
        (probe, started)
    };
    load.measuring = false;
    let elapsed = started.elapsed().as_secs_f64();
    let mut report = Report(Vec::new());
    report.push("mode", "chat");
    report.push("connections", connections);
    report.push("rooms", rooms);
    report.push("chars", chars);
    report.push("text_bytes", load.text.len());
    report.push("keyed", !plain);
    if eager_join {
        report.push("eager_join", true);
    }
    if let Some((rate, burst)) = load.pace {
        report.push("pace_rate", rate);
        report.push("pace_burst", burst);
    }
    if let Some(messages) = messages {
        report.push("messages_per_sender", messages);
    }
    report.push("seconds", format!("{elapsed:.2}"));
    report.push(
        "senders_entered",
        load.senders.iter().filter(|state| state.entered).count(),
    );
    report.push("acked", load.acked);
    report.push("acked_per_sec", format!("{:.0}", load.acked as f64 / elapsed));
    // Everything acknowledged since the start (warm-up included), and what was still in flight at
    // the end: the server's own count of stored messages lies between the two sums.
    report.push("acked_total", load.acked_total);
    report.push(
        "in_flight_at_end",
        load.senders
            .iter()
            .filter(|state| state.in_flight.is_some())
            .count(),
    );
    report.push("rate_limited", load.rate_limited);
    report.push("store_unavailable", load.store_unavailable);
    report.push("wrong_key", load.wrong_key);
    add_latencies(&mut report, std::mem::take(&mut load.latencies_us));
    bench.add_deflate(&mut report);
    probe.finish(&mut report, "msg", load.acked);
    if let Some(peak) = args.server_pid.and_then(|pid| status_kib(pid, "VmHWM")) {
        report.push("server_hwm_kib", peak);
    }
    Ok(report)
}

/// A fill character for chat text: one that JSON carries as it is (no quote, backslash or control
/// character), so that messages can be written without a JSON serializer.
fn parse_fill(text: &str) -> Result<char, String> {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c != '"' && c != '\\' && !c.is_control() => Ok(c),
        _ => Err(format!(
            "{text:?} is not one character that JSON carries unescaped"
        )),
    }
}

/// A rate: a finite number above zero.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a rate above zero")),
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = match &args.mode {
        mode @ Mode::Echo { .. } => run_echo(&args, mode),
        mode @ Mode::Broadcast { .. } => run_broadcast(&args, mode),
        mode @ Mode::Hold { .. } => run_hold(&args, mode),
        mode @ Mode::Handshake { .. } => run_handshake(&args, mode),
        mode @ Mode::Chat { .. } => run_chat(&args, mode),
        mode @ Mode::Transports { .. } => {
            return match run_transports(&args, mode) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("wschat-bench: {error}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
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

/// Nanoseconds of CPU all threads of the process have run, from /proc/PID/task/*/schedstat (its
/// first field): exact where /proc/PID/stat counts in clock ticks (10 ms), too coarse for the few
/// milliseconds a slow stream of chat messages costs.
fn cpu_nanoseconds(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
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
    status_kib(pid, "VmRSS")
}

/// A figure in KiB of /proc/PID/status (`VmRSS`, `VmHWM`: the peak of VmRSS).
fn status_kib(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

// ------------------------------------------------------------------------------------------
// `transports`: the chat over a WebSocket, Server-Sent Events and long-polls, side by side
// ------------------------------------------------------------------------------------------

/// A chat transport, as the page tries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Transport {
    Websocket,
    Sse,
    Poll,
}

impl Transport {
    const ALL: [Self; 3] = [Self::Websocket, Self::Sse, Self::Poll];

    fn label(self) -> &'static str {
        match self {
            Self::Websocket => "WebSocket",
            Self::Sse => "Server-Sent Events + POST",
            Self::Poll => "long-polling + POST",
        }
    }

    fn connect(self, addr: SocketAddr, host: &str) -> io::Result<Box<dyn Chatter>> {
        Ok(match self {
            Self::Websocket => Box::new(WsChatter::connect(addr, host)?),
            Self::Sse => Box::new(SseChatter::connect(addr, host)?),
            Self::Poll => Box::new(PollChatter::connect(addr, host)?),
        })
    }
}

/// The header fields Chromium 156 sends with the page's `fetch` requests to `/poll` and `/send`
/// besides `Host` (and a POST's `Content-Type`, `Content-Length` and `Origin`), in its order, as
/// wschat's wire trace showed them in `tests/proxies`: a plain-HTTP transport pays them on every
/// request, so the figures count them. `{host}` is the server's address. (Cookies would add more;
/// the chat sets none. An event stream's request also asks for `text/event-stream` and no cache.)
const BROWSER_HEADERS: &str = "Connection: keep-alive\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36\r\n\
sec-ch-ua: \"Not:A-Brand\";v=\"8\", \"Chromium\";v=\"156\"\r\n\
Accept-Language: en-GB\r\n\
sec-ch-ua-mobile: ?0\r\n\
Accept: */*\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-Mode: cors\r\n\
Sec-Fetch-Dest: empty\r\n\
Referer: http://{host}/\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n";

/// How long any one answer may take before the run is given up: far above the server's 25 s poll
/// hold.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(40);

/// A socket that counts the bytes it carries each way: everything, HTTP heads and chunk framing
/// and WebSocket frame headers included.
struct Counted {
    stream: std::net::TcpStream,
    wire: Wire,
}

/// Bytes a client's sockets carried: up (to the server) and down.
#[derive(Debug, Default, Clone, Copy)]
struct Wire {
    up: u64,
    down: u64,
}

impl std::ops::Sub for Wire {
    type Output = Self;
    fn sub(self, earlier: Self) -> Self {
        Self {
            up: self.up - earlier.up,
            down: self.down - earlier.down,
        }
    }
}

impl std::ops::Add for Wire {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            up: self.up + other.up,
            down: self.down + other.down,
        }
    }
}

impl Counted {
    fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            wire: Wire::default(),
        })
    }

    /// Reads what is there within `wait`: `Ok(0)` when nothing came, an error at end of stream.
    fn read_within(&mut self, buf: &mut Vec<u8>, wait: Duration) -> io::Result<usize> {
        self.stream
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let mut chunk = [0; 16 * 1024];
        match self.read(&mut chunk) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )),
            Ok(len) => {
                buf.extend_from_slice(&chunk[..len]);
                Ok(len)
            }
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Ok(0)
            }
            Err(error) => Err(error),
        }
    }
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = self.stream.read(buf)?;
        self.wire.down += len as u64;
        Ok(len)
    }
}

impl io::Write for Counted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = self.stream.write(buf)?;
        self.wire.up += len as u64;
        Ok(len)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let len = self.stream.write_vectored(bufs)?;
        self.wire.up += len as u64;
        Ok(len)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// A chat client on one transport: blocking sockets, one thread.
trait Chatter {
    /// Says one chat envelope.
    fn send(&mut self, envelope: &str) -> io::Result<()>;
    /// The events that arrive within `wait` (none if none did).
    fn receive(&mut self, wait: Duration) -> io::Result<Vec<serde_json::Value>>;
    /// What its sockets carried so far.
    fn wire(&self) -> Wire;
}

/// Receives until an event of `kind` (`"welcome"`, ...), within [`ANSWER_TIMEOUT`].
fn await_event(chatter: &mut dyn Chatter, kind: &str) -> io::Result<()> {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    while Instant::now() < deadline {
        if chatter
            .receive(Duration::from_millis(100))?
            .iter()
            .any(|event| event["type"] == kind)
        {
            return Ok(());
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no {kind} event"),
    ))
}

/// The chat over a WebSocket (no extension: chat events are below the server's compression
/// threshold), pongs answered by the protocol core.
struct WsChatter {
    socket: Counted,
    conn: Connection,
    /// Chat events that came with the 101 (the welcome, often in the same read), for the first
    /// `receive`.
    early: Vec<serde_json::Value>,
}

impl WsChatter {
    fn connect(addr: SocketAddr, host: &str) -> io::Result<Self> {
        let mut socket = Counted::connect(addr)?;
        let seed = random_seed();
        let nonce: [u8; 16] = std::array::from_fn(|i| (seed >> (i % 8 * 8)) as u8 ^ i as u8);
        let handshake = ClientHandshake::new(host, "/", nonce);
        socket.write_all(handshake.request())?;
        let mut buf = Vec::new();
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let answer = loop {
            if let Some(answer) = handshake
                .parse_answer(&buf)
                .map_err(|error| io::Error::other(error.to_string()))?
            {
                break answer;
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no 101"));
            }
            socket.read_within(&mut buf, Duration::from_millis(100))?;
        };
        let mut chatter = Self {
            socket,
            conn: Connection::with_mask_seed(Role::Client, client_config(), Instant::now(), seed),
            early: Vec::new(),
        };
        let mut rest = buf.split_off(answer.head_len);
        chatter.early = chatter.take(&mut rest)?;
        Ok(chatter)
    }

    /// Hands bytes to the protocol core and sends what it answers (pongs).
    fn take(&mut self, bytes: &mut [u8]) -> io::Result<Vec<serde_json::Value>> {
        let mut events = Vec::new();
        self.conn.receive(bytes, Instant::now(), |event, _| {
            if let Event::Text(text) = event {
                events.extend(serde_json::from_str(text).ok());
            }
        });
        self.conn.outbox().write_to(&mut self.socket)?;
        Ok(events)
    }
}

impl Chatter for WsChatter {
    fn send(&mut self, envelope: &str) -> io::Result<()> {
        self.conn
            .sender(Instant::now())
            .send_text(envelope)
            .map_err(|error| io::Error::other(format!("{error:?}")))?;
        self.conn.outbox().write_to(&mut self.socket)?;
        Ok(())
    }

    fn receive(&mut self, wait: Duration) -> io::Result<Vec<serde_json::Value>> {
        if !self.early.is_empty() {
            return Ok(std::mem::take(&mut self.early));
        }
        let mut buf = Vec::new();
        self.socket.read_within(&mut buf, wait)?;
        self.take(&mut buf)
    }

    fn wire(&self) -> Wire {
        self.socket.wire
    }
}

/// A response head at the front of `buf`: status, the head's length, and its `Content-Length`.
fn response_head(buf: &[u8]) -> io::Result<Option<(u16, usize, Option<usize>)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(io::Error::other(error.to_string())),
    };
    let length = response
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("content-length"))
        .and_then(|header| std::str::from_utf8(header.value).ok()?.trim().parse().ok());
    Ok(Some((response.code.unwrap_or(0), head_len, length)))
}

/// A whole response with a `Content-Length` (or none, for 204) at the front of `buf`: its status
/// and body, taken off `buf`.
fn whole_response(buf: &mut Vec<u8>) -> io::Result<Option<(u16, Vec<u8>)>> {
    let Some((status, head_len, length)) = response_head(buf)? else {
        return Ok(None);
    };
    let end = head_len + length.unwrap_or(0);
    if buf.len() < end {
        return Ok(None);
    }
    let body = buf[head_len..end].to_vec();
    buf.drain(..end);
    Ok(Some((status, body)))
}

/// A request as the page's `fetch` sends it.
fn browser_request(method: &str, target: &str, host: &str, body: &str) -> String {
    let content = if method == "POST" {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\nOrigin: http://{host}\r\n",
            body.len()
        )
    } else {
        String::new()
    };
    let headers = BROWSER_HEADERS.replace("{host}", host);
    format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n{content}{headers}\r\n{body}")
}

/// One kept-alive connection for `POST /send`, a request at a time.
struct Poster {
    socket: Counted,
    host: String,
    target: String,
}

impl Poster {
    fn new(addr: SocketAddr, host: &str, sid: &str) -> io::Result<Self> {
        Ok(Self {
            socket: Counted::connect(addr)?,
            host: host.to_owned(),
            target: format!("/send?sid={sid}"),
        })
    }

    fn post(&mut self, envelope: &str) -> io::Result<()> {
        let request = browser_request("POST", &self.target, &self.host, envelope);
        self.socket.write_all(request.as_bytes())?;
        let mut buf = Vec::new();
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            if let Some((status, body)) = whole_response(&mut buf)? {
                return match status {
                    204 => Ok(()),
                    _ => Err(io::Error::other(format!(
                        "POST /send: {status} {}",
                        String::from_utf8_lossy(&body)
                    ))),
                };
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "POST /send unanswered"));
            }
            self.socket.read_within(&mut buf, Duration::from_millis(100))?;
        }
    }
}

/// The session id out of `{"sid":"…"}` or `{"type":"session","sid":"…"}`.
fn session_id(value: Option<&serde_json::Value>) -> io::Result<String> {
    value
        .and_then(|value| Some(value.get("sid")?.as_str()?.to_owned()))
        .ok_or_else(|| io::Error::other(format!("no session id in {value:?}")))
}

/// The chat over an event stream (`GET /sse`, read as it comes: chunked, then event blocks) and
/// `POST /send`.
struct SseChatter {
    stream: Counted,
    /// Bytes read and not yet decoded; `None` until the response head was read.
    raw: Vec<u8>,
    head_read: bool,
    /// Decoded body not yet cut into events.
    text: Vec<u8>,
    /// Chat events that came with the session's (the welcome, often in the same read), for the
    /// first `receive`.
    early: Vec<serde_json::Value>,
    poster: Poster,
}

impl SseChatter {
    fn connect(addr: SocketAddr, host: &str) -> io::Result<Self> {
        let mut stream = Counted::connect(addr)?;
        let request = browser_request("GET", "/sse", host, "").replacen(
            "Accept: */*",
            "Accept: text/event-stream\r\nPragma: no-cache\r\nCache-Control: no-cache",
            1,
        );
        stream.write_all(request.as_bytes())?;
        let mut chatter = Self {
            stream,
            raw: Vec::new(),
            head_read: false,
            text: Vec::new(),
            early: Vec::new(),
            // Replaced once the session's id is known.
            poster: Poster::new(addr, host, "")?,
        };
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let sid = loop {
            let (events, sid) = chatter.read_events(Duration::from_millis(100))?;
            chatter.early.extend(events);
            if let Some(sid) = sid {
                break sid;
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no session event"));
            }
        };
        chatter.poster.target = format!("/send?sid={sid}");
        Ok(chatter)
    }

    /// Reads within `wait`; returns the chat events complete so far and the session id if its
    /// event came.
    fn read_events(&mut self, wait: Duration) -> io::Result<(Vec<serde_json::Value>, Option<String>)> {
        self.stream.read_within(&mut self.raw, wait)?;
        if !self.head_read {
            let Some((status, head_len, _)) = response_head(&self.raw)? else {
                return Ok((Vec::new(), None));
            };
            if status != 200 {
                return Err(io::Error::other(format!("GET /sse: {status}")));
            }
            self.raw.drain(..head_len);
            self.head_read = true;
        }
        // RFC 9112 §7.1: chunk-size in hex, CRLF, the data, CRLF.
        while let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") {
            let size = std::str::from_utf8(&self.raw[..line_end])
                .ok()
                .and_then(|size| usize::from_str_radix(size.trim(), 16).ok())
                .ok_or_else(|| io::Error::other("bad chunk size"))?;
            if size == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the event stream ended",
                ));
            }
            let end = line_end + 2 + size + 2;
            if self.raw.len() < end {
                break;
            }
            self.text.extend_from_slice(&self.raw[line_end + 2..end - 2]);
            self.raw.drain(..end);
        }
        let mut events = Vec::new();
        let mut sid = None;
        while let Some(at) = self.text.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.text.drain(..at + 2).collect();
            let block = String::from_utf8_lossy(&block);
            let named = block.lines().any(|line| line == "event: session");
            let Some(data) = block.lines().find_map(|line| line.strip_prefix("data: ")) else {
                continue; // A comment: `: keep-alive`.
            };
            let data: serde_json::Value = serde_json::from_str(data)
                .map_err(|error| io::Error::other(format!("event data: {error}")))?;
            if named {
                sid = Some(session_id(Some(&data))?);
            } else {
                events.push(data);
            }
        }
        Ok((events, sid))
    }
}

impl Chatter for SseChatter {
    fn send(&mut self, envelope: &str) -> io::Result<()> {
        self.poster.post(envelope)
    }

    fn receive(&mut self, wait: Duration) -> io::Result<Vec<serde_json::Value>> {
        let mut events = std::mem::take(&mut self.early);
        events.extend(self.read_events(wait)?.0);
        Ok(events)
    }

    fn wire(&self) -> Wire {
        self.stream.wire + self.poster.socket.wire
    }
}

/// The chat over long-polls (`GET /poll?sid=S&since=N` on one kept-alive connection, a new one
/// as soon as the last was answered) and `POST /send` on another.
struct PollChatter {
    poller: Counted,
    host: String,
    sid: String,
    since: u64,
    /// A poll was sent and its answer is not complete yet.
    waiting: bool,
    raw: Vec<u8>,
    /// Chat events that came with the session's (the welcome), for the first `receive`.
    early: Vec<serde_json::Value>,
    poster: Poster,
}

impl PollChatter {
    fn connect(addr: SocketAddr, host: &str) -> io::Result<Self> {
        let mut poller = Counted::connect(addr)?;
        poller.write_all(browser_request("GET", "/poll", host, "").as_bytes())?;
        let mut raw = Vec::new();
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let body = loop {
            if let Some((status, body)) = whole_response(&mut raw)? {
                if status != 200 {
                    return Err(io::Error::other(format!("GET /poll: {status}")));
                }
                break body;
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "GET /poll unanswered"));
            }
            poller.read_within(&mut raw, Duration::from_millis(100))?;
        };
        let mut events = poll_events(&body)?;
        let sid = session_id(events.first())?;
        let early = events.split_off(1);
        Ok(Self {
            poller,
            host: host.to_owned(),
            // The answer's first element names the session; the events after it are 1, 2, ...
            since: early.len() as u64,
            sid: sid.clone(),
            waiting: false,
            raw,
            early,
            poster: Poster::new(addr, host, &sid)?,
        })
    }
}

/// A poll's answer: a JSON array of events.
fn poll_events(body: &[u8]) -> io::Result<Vec<serde_json::Value>> {
    serde_json::from_slice(body).map_err(|error| io::Error::other(format!("poll answer: {error}")))
}

impl Chatter for PollChatter {
    fn send(&mut self, envelope: &str) -> io::Result<()> {
        self.poster.post(envelope)
    }

    fn receive(&mut self, wait: Duration) -> io::Result<Vec<serde_json::Value>> {
        if !self.early.is_empty() {
            return Ok(std::mem::take(&mut self.early));
        }
        if !self.waiting {
            let target = format!("/poll?sid={}&since={}", self.sid, self.since);
            self.poller
                .write_all(browser_request("GET", &target, &self.host, "").as_bytes())?;
            self.waiting = true;
        }
        self.poller.read_within(&mut self.raw, wait)?;
        let Some((status, body)) = whole_response(&mut self.raw)? else {
            return Ok(Vec::new());
        };
        self.waiting = false;
        if status != 200 {
            return Err(io::Error::other(format!("GET /poll: {status}")));
        }
        let events = poll_events(&body)?;
        // Events are numbered without gaps: the n-th of the answer to `since=N` is event N+n.
        self.since += events.len() as u64;
        Ok(events)
    }

    fn wire(&self) -> Wire {
        self.poller.wire + self.poster.socket.wire
    }
}

/// What the clients of one transport measured while a sender said `messages` things to a
/// receiver.
struct TransportRun {
    transport: Transport,
    latencies_us: Vec<u32>,
    delivered: usize,
    acked: usize,
    sender: Wire,
    receiver: Wire,
    /// The server's CPU from the first message until the last was acked and received.
    server_cpu_ns: Option<u64>,
}

/// A client of `transport` alone in `room`, past its welcomes and the events of joining.
fn chatter_in(
    transport: Transport,
    addr: SocketAddr,
    host: &str,
    room: &str,
) -> io::Result<Box<dyn Chatter>> {
    let mut chatter = transport.connect(addr, host)?;
    await_event(chatter.as_mut(), "welcome")?;
    chatter.send(&serde_json::json!({"type": "join", "payload": room}).to_string())?;
    await_event(chatter.as_mut(), "welcome")?;
    Ok(chatter)
}

/// Receives for `wait`, events and all.
fn settle(chatter: &mut dyn Chatter, wait: Duration) -> io::Result<Vec<serde_json::Value>> {
    let until = Instant::now() + wait;
    let mut events = Vec::new();
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        events.extend(chatter.receive(left.min(Duration::from_millis(50)))?);
    }
    Ok(events)
}

/// One sender and one receiver of `transport` in a room of their own: the sender says `messages`
/// chat lines, one every `interval`; the receiver notes when each arrives. Both count the bytes
/// of their sockets from the first message on.
fn measure_transport(
    transport: Transport,
    server_pid: Option<u32>,
    addr: SocketAddr,
    host: &str,
    corpus: &Corpus,
    messages: usize,
    interval: Duration,
) -> io::Result<TransportRun> {
    let room = format!("bench-{transport:?}-{:x}", random_seed() & 0xffff_ffff);
    let start = Instant::now();
    let counting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = {
        let (host, room, counting) = (host.to_owned(), room.clone(), counting.clone());
        std::thread::spawn(move || -> io::Result<(Vec<u32>, Wire)> {
            let mut chatter = chatter_in(transport, addr, &host, &room)?;
            let _ = ready_tx.send(());
            while !counting.load(std::sync::atomic::Ordering::SeqCst) {
                chatter.receive(Duration::from_millis(10))?;
            }
            let before = chatter.wire();
            let mut latencies = Vec::with_capacity(messages);
            let deadline = Instant::now() + interval * messages as u32 + ANSWER_TIMEOUT;
            while latencies.len() < messages && Instant::now() < deadline {
                for event in chatter.receive(Duration::from_millis(50))? {
                    let sent_us = event["payload"]["text"]
                        .as_str()
                        .and_then(|text| parse_probe(format!("\"text\":\"{text}\"").as_bytes()));
                    if let (true, Some((_, sent_us))) = (event["type"] == "message", sent_us) {
                        let now_us = start.elapsed().as_micros() as u64;
                        latencies.push(now_us.saturating_sub(sent_us).min(u64::from(u32::MAX)) as u32);
                    }
                }
            }
            Ok((latencies, chatter.wire() - before))
        })
    };
    let receiver_ready = ready_rx.recv_timeout(ANSWER_TIMEOUT);
    let mut chatter = chatter_in(transport, addr, host, &room)?;
    if receiver_ready.is_err() {
        // Its thread ended (with the reason) or is stuck.
        let why = match receiver.is_finished().then(|| receiver.join()) {
            Some(Ok(Err(error))) => error.to_string(),
            Some(_) => "it panicked".to_owned(),
            None => "it took too long".to_owned(),
        };
        return Err(io::Error::other(format!(
            "the receiver did not get into its room: {why}"
        )));
    }
    // The receiver hears the sender join; then both start counting.
    settle(chatter.as_mut(), Duration::from_millis(300))?;
    counting.store(true, std::sync::atomic::Ordering::SeqCst);
    settle(chatter.as_mut(), Duration::from_millis(100))?;
    let before = chatter.wire();
    let cpu_before = server_pid.and_then(cpu_nanoseconds);
    let mut acked = 0;
    let first = Instant::now();
    for seq in 0..messages {
        while let Some(left) = (first + interval * seq as u32).checked_duration_since(Instant::now()) {
            acked += acks(chatter.receive(left.min(Duration::from_millis(50)))?)?;
        }
        let envelope = chat_message(Some(corpus), seq as u64, start.elapsed().as_micros());
        chatter.send(&envelope)?;
    }
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    while acked < messages && Instant::now() < deadline {
        acked += acks(chatter.receive(Duration::from_millis(50))?)?;
    }
    let sender = chatter.wire() - before;
    let (latencies_us, receiver) = receiver
        .join()
        .map_err(|_| io::Error::other("the receiver panicked"))??;
    let cpu_after = server_pid.and_then(cpu_nanoseconds);
    Ok(TransportRun {
        transport,
        delivered: latencies_us.len(),
        latencies_us,
        acked,
        sender,
        receiver,
        server_cpu_ns: cpu_before
            .zip(cpu_after)
            .map(|(before, after)| after.saturating_sub(before)),
    })
}

/// How many of `events` are acks; an error (a refused message) fails the run.
fn acks(events: Vec<serde_json::Value>) -> io::Result<usize> {
    let mut count = 0;
    for event in events {
        match event["type"].as_str() {
            Some("ack") => count += 1,
            Some("error") => return Err(io::Error::other(format!("the server refused a message: {event}"))),
            _ => {}
        }
    }
    Ok(count)
}

/// A client of `transport` that says nothing for `seconds`, alone in its room: what keeping it
/// connected costs (pings and pongs, stream comments, polls answered `[]`).
fn measure_idle(transport: Transport, addr: SocketAddr, host: &str, seconds: Duration) -> io::Result<Wire> {
    let room = format!("idle-{transport:?}-{:x}", random_seed() & 0xffff_ffff);
    let mut chatter = chatter_in(transport, addr, host, &room)?;
    settle(chatter.as_mut(), Duration::from_millis(500))?;
    let before = chatter.wire();
    settle(chatter.as_mut(), seconds)?;
    Ok(chatter.wire() - before)
}

fn run_transports(args: &Args, mode: &Mode) -> io::Result<()> {
    let Mode::Transports {
        messages,
        rounds,
        interval_ms,
        idle,
        only,
    } = mode
    else {
        return Err(io::Error::other("not the transports mode"));
    };
    let addr = args
        .addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing"))?;
    let host = args.addr.clone();
    let corpus = Corpus::load(args.text_corpus.as_deref())?;
    let transports = if only.is_empty() {
        Transport::ALL.to_vec()
    } else {
        only.clone()
    };
    let idle_for = secs(*idle);
    // The idle clients wait in rooms of their own meanwhile.
    let idlers: Vec<_> = transports
        .iter()
        .map(|&transport| {
            let host = host.clone();
            std::thread::spawn(move || measure_idle(transport, addr, &host, idle_for))
        })
        .collect();
    // runs[round][i]: transports[i] in that round.
    let mut runs = Vec::new();
    for round in 0..*rounds as usize {
        let mut this_round: Vec<Option<TransportRun>> = transports.iter().map(|_| None).collect();
        // Rotated, so that no transport always runs first (or last) after the machine's load changed.
        for i in (0..transports.len()).map(|k| (k + round) % transports.len()) {
            eprintln!(
                "wschat-bench: round {}/{rounds}: {}: {messages} messages, one every {interval_ms} ms",
                round + 1,
                transports[i].label()
            );
            this_round[i] = Some(measure_transport(
                transports[i],
                args.server_pid,
                addr,
                &host,
                &corpus,
                *messages,
                Duration::from_millis(*interval_ms),
            )?);
        }
        runs.push(this_round.into_iter().flatten().collect::<Vec<_>>());
    }
    eprintln!("wschat-bench: waiting for the idle clients ({idle} s)");
    let mut idles = Vec::new();
    for idler in idlers {
        idles.push(
            idler
                .join()
                .map_err(|_| io::Error::other("an idle client panicked"))??,
        );
    }
    let mean_envelope = (0..*messages as u64)
        .map(|seq| chat_message(Some(&corpus), seq, 1_000_000).len())
        .sum::<usize>() as f64
        / (*messages).max(1) as f64;
    print!(
        "{}",
        transports_table(&transports, &runs, &idles, *idle, mean_envelope)
    );
    let lost: Vec<String> = runs
        .iter()
        .flatten()
        .filter(|run| run.delivered < *messages || run.acked < *messages)
        .map(|run| {
            format!(
                "{}: {} delivered, {} acked of {messages}",
                run.transport.label(),
                run.delivered,
                run.acked
            )
        })
        .collect();
    if lost.is_empty() {
        Ok(())
    } else {
        Err(io::Error::other(lost.join("; ")))
    }
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => values.get(n / 2).copied(),
        _ => Some((values.get(n / 2 - 1)? + values.get(n / 2)?) / 2.0),
    }
}

/// One round's figures for a transport.
struct RoundFigures {
    /// Send → receipt latency, median and 99th percentile, in milliseconds.
    p50_ms: f64,
    p99_ms: f64,
    /// The server's CPU per delivered message, in microseconds (with `--server-pid`).
    cpu_us: Option<f64>,
}

fn round_figures(run: &TransportRun) -> RoundFigures {
    let mut sorted = run.latencies_us.clone();
    sorted.sort_unstable();
    let ms = |us: u32| f64::from(us) / 1000.0;
    let cpu = run
        .server_cpu_ns
        .filter(|_| run.delivered > 0)
        .map(|ns| ns as f64 / 1000.0 / run.delivered as f64);
    RoundFigures {
        p50_ms: ms(percentile(&sorted, 0.50)),
        p99_ms: ms(percentile(&sorted, 0.99)),
        cpu_us: cpu,
    }
}

/// The figures as a Markdown table, with a line saying how they were made: medians over the
/// rounds (`runs[round][i]` is `transports[i]`), ratios to WebSocket taken within each round.
fn transports_table(
    transports: &[Transport],
    runs: &[Vec<TransportRun>],
    idles: &[Wire],
    idle_seconds: f64,
    mean_envelope: f64,
) -> String {
    let per = |bytes: u64, count: usize| bytes as f64 / count.max(1) as f64;
    let per_minute = |bytes: u64| bytes as f64 * 60.0 / idle_seconds.max(f64::MIN_POSITIVE);
    let websocket = transports.iter().position(|&t| t == Transport::Websocket);
    let show = |value: Option<f64>, unit: &str, digits: usize| {
        value.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}{unit}"))
    };
    let mut table = String::from(
        "| transport | send → receipt p50 | p99 | p50 × WebSocket | server CPU per message | CPU × WebSocket \
         | sender ↑ / ↓ per message | receiver ↑ / ↓ per message | idle client ↑ / ↓ per minute |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (i, (transport, idle)) in transports.iter().zip(idles).enumerate() {
        let mine: Vec<_> = runs.iter().filter_map(|round| round.get(i)).collect();
        let figures: Vec<_> = mine.iter().map(|run| round_figures(run)).collect();
        // Within each round, this transport's figure over WebSocket's.
        let ratio = |pick: fn(&RoundFigures) -> Option<f64>| {
            let websocket = websocket?;
            median(
                runs.iter()
                    .filter_map(|round| {
                        let ours = pick(&round_figures(round.get(i)?))?;
                        let theirs = pick(&round_figures(round.get(websocket)?))?;
                        (theirs > 0.0).then(|| ours / theirs)
                    })
                    .collect(),
            )
        };
        let delivered: usize = mine.iter().map(|run| run.delivered).sum();
        let total =
            |side: fn(&TransportRun) -> Wire| mine.iter().fold(Wire::default(), |sum, run| sum + side(run));
        let (sender, receiver) = (total(|run| run.sender), total(|run| run.receiver));
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} B / {:.0} B | {:.0} B / {:.0} B | {:.0} B / {:.0} B |\n",
            transport.label(),
            show(median(figures.iter().map(|f| f.p50_ms).collect()), " ms", 2),
            show(median(figures.iter().map(|f| f.p99_ms).collect()), " ms", 2),
            show(ratio(|f| Some(f.p50_ms)), "×", 2),
            show(
                median(figures.iter().filter_map(|f| f.cpu_us).collect()),
                " µs",
                0
            ),
            show(ratio(|f| f.cpu_us), "×", 2),
            per(sender.up, delivered),
            per(sender.down, delivered),
            per(receiver.up, delivered),
            per(receiver.down, delivered),
            per_minute(idle.up),
            per_minute(idle.down),
        ));
    }
    let count = runs
        .first()
        .and_then(|round| round.first())
        .map_or(0, |run| run.delivered);
    table.push_str(&format!(
        "\n{count} chat lines per transport in each of {} round(s): medians over the rounds, \
         ratios to WebSocket taken within a round. JSON envelope {mean_envelope:.0} B on average; \
         server CPU (all its threads, /proc schedstat) from the first message until the last was \
         acked and received, per message; bytes counted on the clients' sockets (HTTP heads, chunk \
         framing and frame headers included; requests carry the header fields Chromium sends); \
         idle client watched for {idle_seconds} s.\n",
        runs.len()
    ));
    table
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

    #[test]
    fn median_is_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0]), Some(3.0));
        assert_eq!(median(vec![5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 8.0]), Some(3.0));
    }

    /// The server's rule (`TokenBucket` in `src/chat/mod.rs`): it refills between the moments it
    /// processes two texts, up to the burst, and refuses a text when less than one token is left.
    struct ServerBucket {
        tokens: f64,
        updated: Instant,
    }

    impl ServerBucket {
        fn take(&mut self, rate: f64, burst: u32, now: Instant) -> bool {
            let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
            self.updated = now;
            let granted = self.tokens >= 1.0;
            if granted {
                self.tokens -= 1.0;
            }
            granted
        }
    }

    #[test]
    fn a_paced_sender_is_not_refused_however_the_delays_vary() {
        let (rate, burst) = (5.0, 20);
        let ms = Duration::from_millis;
        let start = Instant::now();
        let mut server = ServerBucket {
            tokens: f64::from(burst),
            updated: start,
        };
        // The 101 reaches the client after the server filled its bucket.
        let mut now = start + ms(1);
        let mut pacer = Pacer::new(rate, burst, now);
        // A slow message followed by fast ones is what finds the server short when the client
        // counts the time in flight: the server's interval between them is shorter than its own.
        let delays = [150, 1, 0, 90, 2, 300, 0, 40, 1, 1];
        for (number, delay) in delays.iter().cycle().take(200).enumerate() {
            let sent = loop {
                match pacer.take(now) {
                    None => break now,
                    Some(at) => now = at,
                }
            };
            let processed = sent + ms(*delay);
            assert!(server.take(rate, burst, processed), "text {number} refused");
            now = processed + ms(1);
            pacer.answered(now);
        }
    }

    #[test]
    fn a_paced_sender_keeps_to_the_rate_after_the_burst() {
        let (rate, burst) = (5.0, 20);
        let start = Instant::now();
        let mut pacer = Pacer::new(rate, burst, start);
        let mut now = start;
        for _ in 0..(burst + 50) {
            while let Some(at) = pacer.take(now) {
                now = at;
            }
            pacer.answered(now);
        }
        // 50 texts beyond the burst need 50 / 5 = 10 s of refill, and no more.
        let elapsed = now.duration_since(start).as_secs_f64();
        assert!((elapsed - 10.0).abs() < 0.01, "{elapsed} s");
    }

    #[test]
    fn json_string_reads_the_first_field_of_that_name() {
        let cases: [(&str, &str, Option<&str>); 4] = [
            (
                r#"{"type":"ack","payload":{"id":3,"key":"c1-2"}}"#,
                "key",
                Some("c1-2"),
            ),
            (r#"{"type":"ack","payload":{"id":3}}"#, "key", None),
            (
                r#"{"type":"welcome","payload":{"nickname":"A","room":"bench-4","history":[{"room":"x"}]}}"#,
                "room",
                Some("bench-4"),
            ),
            (r#"{"type":"error","payload":{"code":"rate_limited"#, "code", None),
        ];
        for (json, name, expected) in cases {
            assert_eq!(
                json_string(json.as_bytes(), name),
                expected.map(str::as_bytes),
                "{json}"
            );
        }
    }
}
