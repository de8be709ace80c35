//! # wschat: RFC 6455, read in working code
//!
//! wschat is a WebSocket server written from scratch, with a chat built on it. This page walks one
//! message from the first TCP byte to the closing handshake, section by section of
//! [RFC 6455](https://www.rfc-editor.org/rfc/rfc6455), and links each step to the code that does
//! it. Every example below is a doc-test: `cargo test --doc` checks that the code still says what
//! the RFC says. To watch the same steps on a live connection, run `cargo run --release -- --echo
//! --trace` and connect a client (see the README).
//!
//! ## The rooms of the house
//!
//! Each folder has one job, and only the last one touches the outside world:
//!
//! | module | job | RFC |
//! |---|---|---|
//! | [`ws`] | the WebSocket protocol: frames, masking, UTF-8, close codes, the upgrade's rules (both roles), and the connection state machine | 6455 |
//! | [`http`] | HTTP/1.1 as a connection object: request heads and bodies in, events out, responses queued, keep-alive and pipelining, the hand-off to the WebSocket | 9110, 9112 |
//! | [`conn`] | one socket's protocol stack: the transport, then the phase (HTTP, WebSocket, draining) with its deadline | |
//! | [`hub`] | what connections share: routing, sessions, the chat; takes inputs, queues outputs | |
//! | [`chat`] | the chat's rules and its JSON protocol | |
//! | [`store`] | durable messages: commands the chat emits, outcomes it is told; SQLite on a writer thread, the Redis protocol | |
//! | [`metrics`] | the Prometheus text exposition, written by hand, and wschat's own figures | |
//! | [`server`] | the event loop: mio, sockets, signals, and the one read of the clock ([`server::clock`]) | |
//!
//! Everything above [`server`] is *sans-IO*: pure functions and state machines over byte slices,
//! told the time rather than reading it, and tested without a socket. `clippy.toml` enforces the
//! clock rule. Where to find each rule of the loop, in one place each:
//!
//! - the HTTP request cycle: [`http::Conn`];
//! - the per-socket stack and its phases: [`conn::Stack`], [`conn::Phase`];
//! - the hub's inputs and outputs: [`hub::Hub`], [`hub::Output`];
//! - the timer rule: [`conn::Stack::poll_timeout`] / [`conn::Stack::handle_timeout`], over the
//!   WebSocket's own [`ws::protocol::Connection::poll_timeout`];
//! - the turn of the loop: [`server::Driver`];
//! - the only clock read: [`server::clock`].
//!
//! ## 1. The opening handshake (§4)
//!
//! A WebSocket starts as an HTTP/1.1 `GET` with `Upgrade: websocket`. The HTTP layer,
//! [`http::Conn`], is fed bytes until it can say "here is a request head" (built on `httparse`);
//! the head may arrive in any number of pieces, and the same connection also serves the chat page
//! over keep-alive HTTP. [`Request::validate`](ws::handshake::Request::validate) checks the rules of
//! §4.2.1 and either accepts, or names the broken rule with its HTTP status (400, 403, 405, 426;
//! the HTTP layer itself answers 400 and 431, and routing 404 and 503).
//!
//! To accept, the server proves it read the request: it appends a fixed GUID to the client's
//! `Sec-WebSocket-Key`, hashes the result with SHA-1 and sends it back base64-encoded as
//! `Sec-WebSocket-Accept` ([`handshake::accept_key`](ws::handshake::accept_key)). The RFC's own example (§1.3):
//!
//! ```
//! use wschat::ws::handshake::accept_key;
//! assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
//! ```
//!
//! The whole exchange, as the server sees it:
//!
//! ```
//! use wschat::http::{Conn, Event, Limits};
//! use wschat::ws::handshake::{Policy, Request};
//!
//! let mut http = Conn::new(Limits::default());
//! http.receive(b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
//!     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!     Sec-WebSocket-Version: 13\r\n\r\n\x81\x85"); // ... and the first frame's first bytes
//! let Ok(Event::Head(head)) = http.next_event() else { panic!("the head is complete") };
//! let accepted = Request::from_head(&head).validate(&Policy::default()).unwrap();
//! http.respond(&accepted.response()).unwrap();
//! let mut upgraded = http.upgrade(); // HTTP is over on this connection
//! let mut response = Vec::new();
//! upgraded.output.write_to(&mut response).unwrap();
//! assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"));
//! assert_eq!(upgraded.trailing, b"\x81\x85"); // already WebSocket frames: for the connection
//! ```
//!
//! From here on, both sides speak frames.
//!
//! ## 2. Frames (§5.2)
//!
//! Every message travels in frames. A frame is a 2-to-14-byte header and a payload:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! | Masking-key (continued)       |          Payload Data         |
//! +-------------------------------- - - - - - - - - - - - - - - - +
//! ```
//!
//! [`frame::FrameHeader::parse`](ws::frame::FrameHeader::parse) reads one header from the front of a byte slice and answers
//! `Ok(None)` when the slice ends first, so the caller can wait for more bytes. The §5.7 example
//! "a single-frame unmasked text message":
//!
//! ```
//! use wschat::ws::frame::{FrameHeader, OpCode};
//!
//! let bytes = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]; // FIN + TEXT, length 5, "Hello"
//! let (header, header_len) = FrameHeader::parse(&bytes).unwrap().unwrap();
//! assert!(header.fin);
//! assert_eq!(header.opcode, OpCode::Text);
//! assert_eq!(header.payload_len, 5);
//! assert_eq!(&bytes[header_len..], b"Hello");
//! ```
//!
//! Lengths up to 125 fit in the 7-bit field; 126 announces a 16-bit length and 127 a 64-bit one.
//! The §5.7 examples of a 256-byte and a 64 KiB binary message:
//!
//! ```
//! use wschat::ws::frame::{FrameHeader, LengthForm};
//!
//! let (header, _) = FrameHeader::parse(&[0x82, 0x7E, 0x01, 0x00]).unwrap().unwrap();
//! assert_eq!((header.payload_len, header.length_form), (256, LengthForm::Bits16));
//! let (header, _) = FrameHeader::parse(&[0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]).unwrap().unwrap();
//! assert_eq!((header.payload_len, header.length_form), (65536, LengthForm::Bits64));
//! ```
//!
//! The rules that concern the header alone (reserved opcodes, the 64-bit length's high bit,
//! control frames over 125 bytes or fragmented) are checked in [`frame`](ws::frame); those that depend on the
//! connection (masking direction, reserved bits without an extension, fragmentation state, size
//! limits) in [`protocol`](ws::protocol).
//!
//! ## 3. Masking (§5.3)
//!
//! Every frame a client sends is masked: each payload byte is XORed with one of four key bytes,
//! in turn. A server that receives an unmasked frame must fail the connection (1002). Unmasking is
//! the same XOR; [`mask::apply_mask`](ws::mask::apply_mask) does it a machine word at a time and carries the position in
//! the key from one read to the next. The §5.7 "single-frame masked text message":
//!
//! ```
//! use wschat::ws::frame::FrameHeader;
//! use wschat::ws::mask::apply_mask;
//!
//! let mut bytes = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
//! let (header, header_len) = FrameHeader::parse(&bytes).unwrap().unwrap();
//! let key = header.mask.expect("a client frame is masked");
//! let payload = &mut bytes[header_len..];
//! // The payload may arrive in pieces: the key offset returned by one call starts the next.
//! let offset = apply_mask(&mut payload[..2], key, 0);
//! apply_mask(&mut payload[2..], key, offset);
//! assert_eq!(payload, b"Hello");
//! ```
//!
//! ## 4. Messages and fragmentation (§5.4, §6.2)
//!
//! A message may be split into fragments: a first frame with `FIN` clear, continuation frames,
//! and a last one with `FIN` set. [`protocol::Connection`](ws::protocol::Connection) is the state machine that assembles
//! them: it is fed whatever bytes arrived ([`protocol::Connection::receive`](ws::protocol::Connection::receive)) and reports complete
//! messages as [`protocol::Event`](ws::protocol::Event)s. It never reads a socket, so it can play either role; here it
//! is a client receiving the §5.7 "fragmented unmasked text message":
//!
//! ```
//! use std::time::Instant;
//! use wschat::ws::protocol::{Config, Connection, Event, Role};
//!
//! let mut client = Connection::new(Role::Client, Config::default(), Instant::now());
//! let mut bytes = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]; // "Hel" + "lo"
//! let mut messages = Vec::new();
//! client.receive(&mut bytes, Instant::now(), |event, _| {
//!     if let Event::Text(text) = event {
//!         messages.push(text.to_owned());
//!     }
//! });
//! assert_eq!(messages, ["Hello"]);
//! ```
//!
//! Control frames may come between fragments and are handled at once. A continuation without a
//! message, or a new message inside a fragmented one, is a protocol error (1002).
//!
//! ## 5. Text is UTF-8 (§5.6, §8.1)
//!
//! A text message must be valid UTF-8 as a whole, but an endpoint should fail as soon as it sees a
//! byte that cannot be part of valid UTF-8 — even in the middle of a frame whose rest has not
//! arrived. [`utf8::Utf8Validator`](ws::utf8::Utf8Validator) is fed each piece as it arrives:
//!
//! ```
//! use wschat::ws::utf8::Utf8Validator;
//!
//! let mut validator = Utf8Validator::new();
//! assert!(validator.feed(b"\xce").is_ok());       // the first byte of "κ": could still be valid
//! assert!(validator.feed(b"\xba\xf4").is_ok());   // "κ" complete; 0xf4 starts a 4-byte character
//! assert!(validator.feed(b"\x90").is_err());      // 0xf4 0x90 would be above U+10FFFF: fail now
//! ```
//!
//! A failure closes the connection with 1007.
//!
//! ## 6. Ping and pong (§5.5.2, §5.5.3)
//!
//! A Ping must be answered with a Pong carrying the same payload. The connection does it by
//! itself; the answer waits in its [`outbox::Outbox`] for the I/O layer to write. The §5.7 example
//! "unmasked Ping request and masked Ping response", from the client's side:
//!
//! ```
//! use std::time::Instant;
//! use wschat::ws::frame::{FrameHeader, OpCode};
//! use wschat::ws::mask::apply_mask;
//! use wschat::ws::protocol::{Config, Connection, Role};
//!
//! let mut client = Connection::new(Role::Client, Config::default(), Instant::now());
//! client.receive(&mut [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f], Instant::now(), |_, _| {});
//! let mut pong = Vec::new();
//! client.outbox().write_to(&mut pong).unwrap();
//! assert_eq!(pong[..2], [0x8a, 0x85]); // FIN + PONG, masked, length 5
//! let (header, header_len) = FrameHeader::parse(&pong).unwrap().unwrap();
//! assert_eq!(header.opcode, OpCode::Pong);
//! apply_mask(&mut pong[header_len..], header.mask.unwrap(), 0);
//! assert_eq!(&pong[header_len..], b"Hello");
//! ```
//!
//! The [`server`] also pings every connection on a timer and closes those that stay silent: the
//! connection says when it next needs to wake ([`protocol::Connection::poll_timeout`](ws::protocol::Connection::poll_timeout)) and the
//! server calls [`protocol::Connection::handle_timeout`](ws::protocol::Connection::handle_timeout) then, passing the time in.
//!
//! ## 7. Closing (§5.5.1, §7)
//!
//! Either side may send Close, with an optional 2-byte status code ([`close::CloseCode`](ws::close::CloseCode)) and a
//! UTF-8 reason. The other side answers with a Close of its own, after which nothing more is sent;
//! the server then closes TCP first (§7.1.1). [`close::parse_close_payload`](ws::close::parse_close_payload) enforces what a
//! receiver must check:
//!
//! ```
//! use wschat::ws::close::{parse_close_payload, CloseCode, CloseError};
//!
//! assert_eq!(parse_close_payload(b"\x03\xe8bye"), Ok(Some((CloseCode::Normal, "bye"))));
//! assert_eq!(parse_close_payload(b""), Ok(None)); // no code at all: reported as 1005
//! assert_eq!(parse_close_payload(b"\x03"), Err(CloseError::OneBytePayload));
//! assert_eq!(parse_close_payload(b"\x03\xed"), Err(CloseError::InvalidCode(1005)));
//! ```
//!
//! A connection that breaks a rule is *failed* (§7.1.7): it sends Close with the code of the rule
//! ([`protocol::ProtocolError::close_code`](ws::protocol::ProtocolError::close_code): 1002 protocol error, 1007 invalid data, 1009 too big)
//! and reads no more.
//!
//! ## 8. The event loop and the chat
//!
//! [`server::Server`] is one thread and one `mio::Poll`. For each socket the [`server::Driver`]
//! keeps a [`conn::Stack`]: bytes read go through it (HTTP requests until an upgrade, then the
//! WebSocket connection), and what it produced is written at once; only what the socket does not
//! take is queued. Endpoints that need nothing shared answer on the spot (`/echo`); the chat's
//! messages go to the [`hub`] as inputs. The hub's answers are outputs in a queue, drained once per
//! turn of the loop into the recipients' stacks: a broadcast is serialized once, framed once
//! ([`hub::Event`]), and shared by every recipient's queue.
//!
//! ## Where to go next
//!
//! - `examples/echo_server.rs` and `examples/client.rs`: the same core in a few dozen lines each.
//! - [`trace`]: every frame of a live connection, annotated, with `--trace`.
//! - The unit tests next to each module: one per rule, named for it.
#![forbid(unsafe_code)]

pub mod chat;
pub mod config;
pub mod conn;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod page;
pub mod server;
pub mod store;
#[doc(hidden)]
pub mod testing;
pub mod trace;
pub mod ws;
