//! Entry points for the `cargo fuzz` targets in `fuzz/`: each takes arbitrary bytes and panics only
//! when an invariant is broken. They live in the crate (hidden from the docs) so that the targets
//! stay one-liners and the invariants are compiled, linted and unit-tested with everything else.
//!
//! Split points, where a target needs them, are taken from the input itself: the fuzzer then
//! explores "the same bytes, cut differently" as readily as new bytes.

use std::time::Instant;

use crate::http;
use crate::ws::deflate::{self, DeflateParams, DeflatePolicy, Extension};
use crate::ws::frame::{FrameHeader, LengthForm, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OpCode};
use crate::ws::handshake::{Policy, Request};
use crate::ws::mask::{apply_mask, apply_mask_bytewise};
use crate::ws::protocol::{
    Config, Connection, DeflateConfig, Event, Limits, OwnedEvent, ProtocolError, Role, State, Timeouts,
};
use crate::ws::utf8::Utf8Validator;

/// Cuts `data` into a prefix of split instructions and the stream: the first byte says how many
/// cut points follow (0-15), each a little-endian `u16` taken modulo the stream length. Returns the
/// stream and the cut points, sorted and deduplicated.
pub fn split_input(data: &[u8]) -> (&[u8], Vec<usize>) {
    let Some((&count, rest)) = data.split_first() else {
        return (data, Vec::new());
    };
    let count = usize::from(count & 0x0f).min(rest.len() / 2);
    let (cuts, stream) = rest.split_at(count * 2);
    let mut points: Vec<usize> = cuts
        .chunks_exact(2)
        .map(|pair| usize::from(u16::from_le_bytes([pair[0], pair[1]])))
        .filter(|_| !stream.is_empty())
        .map(|point| point % stream.len())
        .collect();
    points.sort_unstable();
    points.dedup();
    (stream, points)
}

/// A fixed moment for the targets' frozen clock: nothing here is timed, it only needs an origin.
#[allow(clippy::disallowed_methods)]
fn clock_origin() -> Instant {
    Instant::now()
}

/// The pieces of `stream` between the cut points.
fn pieces<'a>(stream: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &cut in cuts {
        pieces.push(&stream[start..cut]);
        start = cut;
    }
    pieces.push(&stream[start..]);
    pieces
}

/// `frame` target: headers parse within bounds, re-encode to the same bytes when the sender used
/// the minimal length form, and the fast mask agrees with the definition.
pub fn frame(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((header, len))) = FrameHeader::parse(rest) {
        assert!(len <= MAX_HEADER_LEN && len <= rest.len());
        assert!(header.rsv <= 0b111);
        if header.opcode.is_control() {
            assert!(header.fin && header.payload_len <= MAX_CONTROL_PAYLOAD as u64);
        }
        let mut encoded = Vec::new();
        header.encode(&mut encoded);
        assert_eq!(encoded.len(), header.encoded_len());
        let (reparsed, reparsed_len) = FrameHeader::parse(&encoded)
            .expect("our own encoding parses")
            .expect("our own encoding is complete");
        assert_eq!(reparsed_len, encoded.len());
        assert_eq!(
            (
                reparsed.fin,
                reparsed.rsv,
                reparsed.opcode,
                reparsed.mask,
                reparsed.payload_len
            ),
            (
                header.fin,
                header.rsv,
                header.opcode,
                header.mask,
                header.payload_len
            )
        );
        if header.length_form == LengthForm::minimal(header.payload_len) {
            assert_eq!(encoded, rest[..len], "minimal headers round-trip byte for byte");
        }
        rest = &rest[len..];
        let payload_len = rest
            .len()
            .min(usize::try_from(header.payload_len).unwrap_or(usize::MAX));
        if let Some(key) = header.mask {
            let offset = usize::from(rest.first().copied().unwrap_or(0) & 3);
            let mut fast = rest[..payload_len].to_vec();
            let mut slow = fast.clone();
            assert_eq!(
                apply_mask(&mut fast, key, offset),
                apply_mask_bytewise(&mut slow, key, offset)
            );
            assert_eq!(fast, slow);
        }
        rest = &rest[payload_len..];
    }
}

/// `handshake` target: a request read by the HTTP layer and judged by the handshake rules; every
/// outcome renders a response that parses as HTTP with the status the outcome claims, and only an
/// offered subprotocol is ever chosen.
pub fn handshake(data: &[u8]) {
    let policy = Policy {
        allowed_origins: vec!["http://allowed.example".into()],
        protocols: vec!["chat".into()],
        deflate: Some(DeflatePolicy::default()),
    };
    let mut conn = http::Conn::new(http::Limits::default());
    conn.receive(data);
    conn.receive_eof();
    let status = match conn.next_event() {
        Ok(http::Event::Head(head)) => {
            assert!(head.minor_version <= 1);
            forwarded_client(&head);
            let request = Request::from_head(&head);
            let (status, response) = match request.validate(&policy) {
                Ok(accepted) => {
                    if let Some(protocol) = &accepted.protocol {
                        assert!(
                            request.protocols.contains(protocol),
                            "only an offered subprotocol"
                        );
                    }
                    (101, accepted.response())
                }
                Err(error) => (error.status().code(), error.response()),
            };
            if conn.respond(&response).is_err() {
                // The HTTP layer refuses a 101 it cannot give (a request with a body): fine.
                return;
            }
            status
        }
        Ok(_) => return,
        Err(error) => error.status().code(),
    };
    let mut output = Vec::new();
    conn.outbox()
        .write_to(&mut output)
        .expect("writing to a Vec cannot fail");
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let complete = parsed.parse(&output).expect("our response is valid HTTP");
    assert!(complete.is_complete());
    assert_eq!(parsed.code, Some(status));
}

/// Whatever `X-Forwarded-For` says, the client it names for a request is the peer itself or an
/// address written in the field, and never anything but the peer for an untrusted peer.
fn forwarded_client(head: &http::RequestHead) {
    use crate::http::forwarded::TrustedProxies;
    use std::net::{IpAddr, Ipv4Addr};
    let proxies = ["10.0.0.0/8", "::1"].map(|prefix| prefix.parse().expect("a valid prefix"));
    let trusted = TrustedProxies::new(proxies.to_vec());
    let untrusted_peer = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(trusted.client_addr(untrusted_peer, head), untrusted_peer);
    let proxy = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    let client = trusted.client_addr(proxy, head);
    let written = head
        .header_values(http::forwarded::X_FORWARDED_FOR)
        .collect::<Vec<_>>()
        .join(",");
    let in_field = written
        .split(',')
        .filter_map(|entry| http::forwarded::parse_hop(entry.trim_matches([' ', '\t'])))
        .any(|hop| hop == client);
    assert!(
        client == proxy || in_field,
        "{client} is neither the peer nor written in {written:?}"
    );
}

/// Events are compared as owned copies.
type Seen = OwnedEvent;

/// Small limits, so the fuzzer reaches them.
const FUZZ_LIMITS: Limits = Limits {
    max_frame_size: 1024,
    max_message_size: 4096,
    max_fragments: 16,
};

fn fuzz_config() -> Config {
    Config {
        limits: FUZZ_LIMITS,
        timeouts: Timeouts {
            ping_interval: None,
            idle_timeout: None,
            close_timeout: std::time::Duration::from_secs(5),
        },
    }
}

/// What a server connection that echoes every message did with a stream fed in `pieces`.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<Seen>,
    output: Vec<u8>,
    state: State,
    /// The rule the stream broke, if it did.
    error: Option<ProtocolError>,
}

/// A connection in `role` with the fuzz limits, and permessage-deflate if given.
fn fuzz_connection(role: Role, config: Config, deflate: Option<DeflateConfig>, now: Instant) -> Connection {
    let conn = Connection::new(role, config, now);
    match deflate {
        Some(deflate) => conn.with_deflate(deflate),
        None => conn,
    }
}

fn serve(pieces: &[&[u8]], now: Instant, deflate: Option<DeflateConfig>) -> Outcome {
    let mut conn = fuzz_connection(Role::Server, fuzz_config(), deflate, now);
    let mut events = Vec::new();
    let mut output = Vec::new();
    for piece in pieces {
        let mut input = piece.to_vec();
        conn.receive(&mut input, now, |event, sender| {
            match event {
                Event::Text(text) => {
                    let _ = sender.send_text(text);
                }
                Event::Binary(data) => {
                    let _ = sender.send_binary(data);
                }
                _ => {}
            }
            if let Event::Text(text) = event {
                assert!(
                    text.len() <= FUZZ_LIMITS.max_message_size,
                    "over the limit, delivered"
                );
            }
            if let Event::Binary(data) = event {
                assert!(
                    data.len() <= FUZZ_LIMITS.max_message_size,
                    "over the limit, delivered"
                );
            }
            events.push(Seen::from(event));
        });
        // Memory stays bounded by the limits, compressed messages included (they are limited as
        // they inflate): at most one message and one control frame, with room for the vector's
        // growth.
        let bound = 2 * (FUZZ_LIMITS.max_message_size + MAX_CONTROL_PAYLOAD);
        assert!(conn.buffered() <= bound, "{} bytes buffered", conn.buffered());
        conn.outbox()
            .write_to(&mut output)
            .expect("writing to a Vec cannot fail");
    }
    Outcome {
        events,
        output,
        state: conn.state(),
        error: conn.close_status().and_then(|status| status.error),
    }
}

/// `connection` target: a server connection fed arbitrary bytes split at arbitrary points.
/// - the same stream split differently yields the same events, output and state;
/// - every byte the server emits parses, with our own parser in client role, as valid unmasked
///   server frames, without any protocol error, and carries back exactly the messages received;
/// - nothing follows a Close, and a broken rule is answered with its close code;
/// - buffered memory stays within the limits, and no message over the limit is delivered
///   (checked in `serve`).
pub fn connection(data: &[u8]) {
    serve_split(data, None);
}

/// `connection_deflate` target: the `connection` target on a connection that negotiated
/// permessage-deflate. The first byte chooses the agreement (see [`deflate_from`]); the rest is
/// the `connection` target's input. On top of its invariants: a compressed message is limited by
/// its inflated size (a bomb fails with 1009 and holds no more than the limit), and what the
/// server compresses inflates, on a client with the same agreement, to what it echoed.
pub fn connection_deflate(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    serve_split(rest, Some(deflate_from(flags)));
}

/// An agreement from one byte: bit 0 the client's `no_context_takeover`, bits 1-3 and 4-6 the
/// server's and the client's window (8 + n), bit 7 whether every message we send is compressed.
/// The server always has `server_no_context_takeover`, as ours always asks.
pub fn deflate_from(flags: u8) -> DeflateConfig {
    DeflateConfig {
        params: DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: flags & 1 != 0,
            server_max_window_bits: 8 + (flags >> 1 & 7),
            client_max_window_bits: 8 + (flags >> 4 & 7),
        },
        deflate_threshold: if flags & 0x80 != 0 { 0 } else { 64 },
    }
}

fn serve_split(data: &[u8], deflate: Option<DeflateConfig>) {
    let (stream, cuts) = split_input(data);
    let now = clock_origin();
    let whole = serve(&[stream], now, deflate);
    let split = serve(&pieces(stream, &cuts), now, deflate);
    assert_eq!(whole, split, "split at {cuts:?}");
    check_server_output(&whole, now, deflate);
}

/// Reads the server's output as a client with the same agreement would, with limits generous
/// enough for any echo: the frames are well formed, unmasked, nothing follows a Close, a broken
/// rule is answered with its code, and the echoes read back as the messages received.
fn check_server_output(outcome: &Outcome, now: Instant, deflate: Option<DeflateConfig>) {
    let (last_close, echoed) = read_server_frames(&outcome.output, now, deflate);
    if let Some(error) = outcome.error {
        let code = last_close.and_then(|payload| {
            payload
                .get(..2)
                .map(|code| u16::from_be_bytes([code[0], code[1]]))
        });
        assert_eq!(
            code,
            Some(error.close_code().as_u16()),
            "{error} is answered with its code"
        );
    }
    let received: Vec<&Seen> = outcome
        .events
        .iter()
        .filter(|event| matches!(event, Seen::Text(_) | Seen::Binary(_)))
        .collect();
    assert!(
        received.iter().copied().eq(echoed.iter()),
        "the echoes read back as the messages received"
    );
}

/// Checks `output` as a stream of server frames (well formed, unmasked, nothing after a Close, no
/// protocol error for a client with the same agreement). Returns the last Close's payload and the
/// data messages the client read.
fn read_server_frames(
    output: &[u8],
    now: Instant,
    deflate: Option<DeflateConfig>,
) -> (Option<Vec<u8>>, Vec<Seen>) {
    let mut rest = output;
    let mut last_close = None;
    while !rest.is_empty() {
        let (header, len) = FrameHeader::parse(rest)
            .expect("server frames are well formed")
            .expect("server frames are complete");
        assert!(header.mask.is_none(), "server frames are not masked");
        let end = len + usize::try_from(header.payload_len).expect("payload fits in memory");
        assert!(end <= rest.len(), "server frames are complete");
        if header.opcode == OpCode::Close {
            last_close = Some(rest[len..end].to_vec());
        }
        rest = &rest[end..];
        if header.opcode == OpCode::Close {
            assert!(rest.is_empty(), "nothing after Close");
        }
    }
    let mut config = fuzz_config();
    config.limits.max_frame_size = usize::MAX;
    config.limits.max_message_size = usize::MAX;
    config.limits.max_fragments = usize::MAX;
    let mut client = fuzz_connection(Role::Client, config, deflate, now);
    let mut echoed = Vec::new();
    client.receive(&mut output.to_vec(), now, |event, _| {
        if matches!(event, Event::Text(_) | Event::Binary(_)) {
            echoed.push(Seen::from(event));
        }
    });
    let error = client.close_status().and_then(|status| status.error);
    assert_eq!(
        error, None,
        "the client found a protocol error in the server's output"
    );
    (last_close, echoed)
}

/// `extensions` target: the input is `Sec-WebSocket-Extensions` values, one per line.
/// - a header that parses renders back to a header that parses to the same list;
/// - whatever the server answers, our client accepts, with the same agreement on all the server
///   decides, and within the ranges of §7.1;
/// - the client's check of arbitrary answers never panics, and what it accepts is in range.
pub fn extensions(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let values: Vec<&str> = text.split('\n').collect();
    if let Ok(parsed) = deflate::parse_extensions(&values) {
        let rendered = render_extensions(&parsed);
        assert_eq!(
            deflate::parse_extensions(&[rendered.as_str()]),
            Ok(parsed),
            "{rendered}"
        );
    }
    if let Some((params, answer)) = deflate::negotiate(&values, &DeflatePolicy::default()) {
        assert_in_range(&params);
        assert!(params.server_no_context_takeover, "we always ask for it");
        let accepted = deflate::accept_response(&[answer.as_str()])
            .expect("our answer is valid")
            .expect("our answer accepts");
        assert_eq!(
            (
                accepted.server_no_context_takeover,
                accepted.client_no_context_takeover,
                accepted.server_max_window_bits
            ),
            (
                params.server_no_context_takeover,
                params.client_no_context_takeover,
                params.server_max_window_bits
            ),
            "{answer}"
        );
        // The answer may leave out a window the client promised itself.
        assert!(accepted.client_max_window_bits >= params.client_max_window_bits);
        if params.client_no_context_takeover {
            // Parameter names are matched ignoring ASCII case.
            let offers = text.to_ascii_lowercase();
            assert!(offers.contains("client_no_context_takeover"), "only when offered");
        }
    }
    if let Ok(Some(params)) = deflate::accept_response(&values) {
        assert_in_range(&params);
    }
}

fn assert_in_range(params: &DeflateParams) {
    let range = deflate::MIN_WINDOW_BITS..=deflate::MAX_WINDOW_BITS;
    assert!(range.contains(&params.server_max_window_bits) && range.contains(&params.client_max_window_bits));
}

/// A header value for `extensions` (values are tokens once parsed).
fn render_extensions(extensions: &[Extension]) -> String {
    extensions
        .iter()
        .map(|extension| {
            let mut element = extension.name.clone();
            for param in &extension.params {
                element.push_str("; ");
                element.push_str(&param.name);
                if let Some(value) = &param.value {
                    element.push('=');
                    element.push_str(value);
                }
            }
            element
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `http` target: an HTTP/1.1 server connection ([`crate::http::Conn`]) driven by the scripted
/// server of [`crate::http::transcript`] over arbitrary bytes split at arbitrary points.
/// - the same stream split differently yields the same events, output, answers and end state;
/// - input memory stays within the limits (checked in `serve`);
/// - everything written reads back as HTTP that answers each request in turn, each error answered
///   with the status it claims (checked in `check_output`).
pub fn http(data: &[u8]) {
    use crate::http::{Limits, transcript};
    // Small limits, so the fuzzer reaches them.
    const LIMITS: Limits = Limits {
        max_head_bytes: 1024,
        max_headers: 16,
        max_body_bytes: 256,
    };
    let (stream, cuts) = split_input(data);
    let whole = transcript::serve(&[stream], LIMITS);
    let split = transcript::serve(&pieces(stream, &cuts), LIMITS);
    assert_eq!(whole, split, "split at {cuts:?}");
    transcript::check_output(&whole);
}

/// `utf8` target: the streaming validator agrees with `std::str::from_utf8` for every split, and
/// fails exactly at the piece where the input stops being a prefix of valid UTF-8 — never earlier,
/// never later.
pub fn utf8(data: &[u8]) {
    let (stream, cuts) = split_input(data);
    let mut validator = Utf8Validator::new();
    // The byte range of the piece the validator rejected.
    let mut failed_in = None;
    let mut offset = 0;
    for piece in pieces(stream, &cuts) {
        if validator.feed(piece).is_err() {
            failed_in = Some(offset..offset + piece.len());
            break;
        }
        offset += piece.len();
    }
    match std::str::from_utf8(stream) {
        Ok(_) => {
            assert_eq!(failed_in, None);
            assert!(validator.finish().is_ok());
        }
        Err(error) => match (error.error_len(), failed_in) {
            // Cut short inside a character: only `finish` can tell.
            (None, None) => assert!(validator.finish().is_err()),
            (None, Some(_)) => panic!("failed on a valid prefix"),
            (Some(len), Some(piece)) => {
                let detect = first_invalid_prefix_end(stream, error.valid_up_to() + len);
                assert!(
                    piece.contains(&detect),
                    "bad byte at {detect}, failed in {piece:?}"
                );
            }
            (Some(_), None) => panic!("invalid UTF-8 accepted"),
        },
    }
}

/// The index of the byte at which `stream` stops being a prefix of valid UTF-8, given the end of
/// the invalid sequence `from_utf8` reported: either its last byte (a byte that can never appear
/// there) or the byte after it (a byte that cannot continue it).
fn first_invalid_prefix_end(stream: &[u8], invalid_end: usize) -> usize {
    match std::str::from_utf8(&stream[..invalid_end]) {
        Err(error) if error.error_len().is_some() => invalid_end - 1,
        _ => invalid_end,
    }
}

/// `stack` target: one socket's whole protocol stack — HTTP requests (pipelined, kept alive),
/// the upgrade, then frames to the echo or the chat. The input's cut points are the turns of the
/// loop: the bytes of one read, after which the hub's outputs are applied.
/// - a turn's bytes fed in one piece or in many small ones give the same bytes out and the same
///   final phase (what the hub answers may depend on where turns end, as it does on a real
///   network; how TCP cut the bytes of one read must not);
/// - the output is HTTP responses, then (after a 101) only well-formed server frames;
/// - the input the stack holds stays within the HTTP and WebSocket limits.
pub fn stack(data: &[u8]) {
    let (stream, cuts) = split_input(data);
    let turns = pieces(stream, &cuts);
    let whole = drive_stack(&turns, usize::MAX);
    // Small pieces, but not single bytes for long inputs, so a run stays quick.
    let small = 1 + stream.len() / 512;
    let split = drive_stack(&turns, small);
    assert_eq!(whole, split, "turns at {cuts:?}, pieces of {small}");
    check_stack_output(&whole.0);
}

/// Feeds `turns` to a fresh stack (the echo endpoint on, small limits), each turn's bytes in
/// pieces of at most `piece_len`; after each turn applies whatever the hub asks of that same
/// connection. Returns everything written and the final phase.
fn drive_stack(turns: &[&[u8]], piece_len: usize) -> (Vec<u8>, &'static str) {
    use crate::chat::Now;
    use crate::conn::{ConnId, Ctx, Opening, Stack, StackConfig};
    use crate::hub::{Hub, HubConfig, Output};

    let origin = clock_origin();
    let config = StackConfig {
        http: http::Limits {
            max_head_bytes: 1024,
            max_headers: 16,
            max_body_bytes: 0,
        },
        websocket: fuzz_config(),
        handshake_timeout: std::time::Duration::from_secs(10),
        close_timeout: std::time::Duration::from_secs(5),
        max_queued_output: 1 << 20,
        deflate_threshold: 16,
    };
    let mut next_token = 0u128;
    let tokens = Box::new(move || {
        next_token += 1;
        next_token
    });
    let hub_config = HubConfig {
        echo: true,
        policy: Policy {
            deflate: Some(DeflatePolicy::default()),
            ..Policy::default()
        },
        ..HubConfig::default()
    };
    let mut hub = Hub::new(hub_config, "0123456789abcdef".into(), tokens, origin);
    let mut store = crate::store::memory::MemoryStore::new(1000);
    let id = ConnId::new(0, 1);
    let now = Now {
        instant: origin,
        unix_ms: 0,
    };
    let mut stack = Stack::new(
        id,
        "127.0.0.1:1".parse().expect("an address"),
        Opening::default(),
        &config,
        origin,
    );
    let mut output = Vec::new();
    let mut step = |stack: &mut Stack, hub: &mut Hub, input: Option<&[u8]>| {
        let mut ctx = Ctx {
            hub,
            config: &config,
            now,
        };
        match input {
            Some(turn) => {
                for piece in turn.chunks(piece_len.max(1)) {
                    stack.receive(&mut piece.to_vec(), &mut ctx);
                }
            }
            None => stack.receive_eof(),
        }
        loop {
            // The store answers within the turn, as a fast disk would.
            for outcome in store.execute(ctx.hub.take_store_commands(), origin) {
                ctx.hub.store_outcome(outcome, origin);
            }
            while let Some(output) = ctx.hub.poll_output() {
                match output {
                    Output::Deliver { to, event } if to.contains(&id) => stack.deliver(&event, &mut ctx),
                    Output::Close { conn, code, reason } if conn == id => {
                        stack.close(code, &reason, &mut ctx)
                    }
                    _ => {}
                }
            }
            if let Some(outbox) = stack.outbox() {
                outbox
                    .write_to(&mut output)
                    .expect("writing to a Vec cannot fail");
            }
            stack.settle(&mut ctx);
            if !stack.wants_write() && !ctx.hub.has_output() && !ctx.hub.has_store_commands() {
                break;
            }
        }
        let held = match stack.phase() {
            crate::conn::Phase::WebSocket { conn, .. } => conn.buffered(),
            crate::conn::Phase::Http { conn, .. } => conn.buffered(),
            _ => 0,
        };
        let bound = 2 * (FUZZ_LIMITS.max_message_size + MAX_CONTROL_PAYLOAD) + 2 * 1024 + 65536;
        assert!(held <= bound, "{held} bytes held");
    };
    for turn in turns {
        step(&mut stack, &mut hub, Some(turn));
    }
    step(&mut stack, &mut hub, None);
    (output, stack.phase().name())
}

/// Reads the stack's output as a client would: complete HTTP responses, and after a 101, frames.
fn check_stack_output(mut output: &[u8]) {
    while !output.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(output).expect("responses are valid HTTP") {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => panic!("a response head cut short"),
        };
        let code = response.code.expect("a status");
        if code == 101 {
            // Read the frames as a client holding the agreement the 101 states.
            let extensions: Vec<&str> = response
                .headers
                .iter()
                .filter(|header| header.name.eq_ignore_ascii_case("sec-websocket-extensions"))
                .filter_map(|header| std::str::from_utf8(header.value).ok())
                .collect();
            let agreed = deflate::accept_response(&extensions).expect("our answer is one our client accepts");
            read_server_frames(
                &output[head_len..],
                clock_origin(),
                agreed.map(DeflateConfig::new),
            );
            return;
        }
        let length = response
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case("content-length"))
            .and_then(|header| std::str::from_utf8(header.value).ok()?.parse::<usize>().ok())
            .expect("every response has a Content-Length");
        output = output
            .get(head_len + length..)
            .expect("a response body cut short");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_input_takes_cut_points_from_the_front() {
        let data = [2, 1, 0, 3, 0, b'a', b'b', b'c', b'd'];
        let (stream, cuts) = split_input(&data);
        assert_eq!(stream, b"abcd");
        assert_eq!(cuts, [1, 3]);
        assert_eq!(pieces(stream, &cuts), [&b"a"[..], b"bc", b"d"]);
    }

    #[test]
    fn targets_accept_the_rfc_examples() {
        let hello = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        frame(&hello);
        let mut split = vec![3, 1, 0, 5, 0, 9, 0];
        split.extend_from_slice(&hello);
        split.extend_from_slice(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
        connection(&split);
        // RFC 7692 §7.2.3.1, compressed "Hello" in two fragments, to a server that compresses
        // its echo.
        let mut compressed = vec![0x80 | 0x1e, 2, 0, 9, 0];
        compressed.extend_from_slice(&[0x41, 0x83, 0, 0, 0, 0, 0xf2, 0x48, 0xcd]);
        compressed.extend_from_slice(&[0x80, 0x84, 0, 0, 0, 0, 0xc9, 0xc9, 0x07, 0x00]);
        connection_deflate(&compressed);
        extensions(
            b"permessage-deflate; client_max_window_bits\npermessage-deflate; server_max_window_bits=\"10\"",
        );
        handshake(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
        utf8(&[1, 2, 0, 0xce, 0xba, 0xf4, 0x90]);
        let mut session = b"\x02\x10\x00\x30\x00GET /style.css HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        session.extend_from_slice(
            b"GET /echo HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n",
        );
        session.extend_from_slice(
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        session.extend_from_slice(&hello);
        stack(&session);
    }

    /// Found by the fuzzer: an upgrade and an invalid frame in one read. The welcome the hub
    /// queued for the new session is applied after the frame failed the connection, so it is
    /// dropped, while the same bytes over two reads deliver it first. Turns are therefore part of
    /// the target's input, and only how a turn's bytes are cut must not matter.
    #[test]
    fn the_handshake_target_walks_hostile_forwarded_fields() {
        for field in [
            "203.0.113.7",
            "203.0.113.7, 10.0.0.1",
            "10.0.0.1, 10.0.0.2",
            "[2001:db8::1]:443, ::1",
            "::ffff:10.0.0.1, ::FFFF:192.0.2.9",
            "unknown, 10.0.0.1",
            "\"quoted, 1.2.3.4\", 10.0.0.1",
            ",,, , \t,",
            "999.1.1.1, 10.0.0.1",
            "010.0.0.1",
            "[::1, 10.0.0.1]",
        ] {
            let request = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: {field}\r\n\r\n");
            handshake(request.as_bytes());
        }
    }

    #[test]
    fn regression_upgrade_then_bad_frame_in_one_read() {
        stack(include_bytes!(
            "../fuzz/corpus/stack/seed_regression_upgrade_then_bad_frame_in_one_read"
        ));
    }

    #[test]
    fn inputs_the_fuzzer_found() {
        // Parameter names match ignoring ASCII case, in the invariant too.
        extensions(b"permessage-deflate; client_no_context_tadow_b0its=7, permessage-deflate; client_no_context_takeovEr; client_max_window_bits");
        // Text that turns invalid, then data that is not DEFLATE: whole, zlib met both in one
        // call and reported the corruption; cut, the bad text came first. The first fault in
        // the stream now wins either way.
        connection_deflate(&[
            0x80, 0x04, 0x01, 0x00, 0x03, 0x00, 0x07, 0x00, 0x14, 0x00, 0xc1, 0xa3, 0x37, 0xfa, 0x21, 0x3d,
            0x0d, 0x4d, 0xca, 0x41, 0xf8, 0x03, 0xc7, 0x4e, 0x4a, 0x34, 0x4c, 0xe8, 0x66, 0xb2, 0xef, 0x75,
            0x1b, 0xab, 0xe9, 0xf4, 0xfb, 0xb1, 0x00, 0xc1, 0x88, 0x37, 0xfa, 0x21, 0x3d, 0xc4, 0xb2, 0xec,
            0xf4, 0xfe, 0xfd, 0x21, 0x74, 0x05, 0x00, 0xd0, 0x1b, 0x17, 0x0d, 0xd0, 0x6b, 0x3e, 0xd2, 0xfa,
            0x21,
        ]);
    }

    #[test]
    fn a_decompression_bomb_keeps_the_invariants() {
        // 512 KiB of zeros in one compressed frame of about 500 bytes, to a server whose limit
        // is 4 KiB.
        let mut payload = Vec::new();
        deflate::compress_shared(15, &vec![0; 512 << 10], &mut payload).unwrap();
        let mut data = vec![0x80, 0];
        data.extend(crate::testing::masked_frame(0xc2, &payload, [1, 2, 3, 4]));
        connection_deflate(&data);
        let outcome = serve(&[&data[2..]], clock_origin(), Some(deflate_from(0x80)));
        assert_eq!(outcome.error, Some(ProtocolError::InflatedTooBig { max: 4096 }));
    }

    #[test]
    fn garbage_does_not_break_any_invariant() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..400 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            frame(&data);
            handshake(&data);
            connection(&data);
            connection_deflate(&data);
            extensions(&data);
            utf8(&data);
            stack(&data);
        }
    }
}
