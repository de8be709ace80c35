//! One test per rule of RFC 6455 §5-§7. Every input is fed twice, whole and one byte at a time, and
//! both runs must produce the same events, output bytes and final state.
#![allow(clippy::disallowed_methods)] // An origin for the tests' hand-moved clock; nothing is timed.

use std::rc::Rc;

use super::*;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const FIN: bool = true;
const MORE: bool = false;

/// Events are compared as owned copies.
type Seen = OwnedEvent;

/// A frame as the server wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Out {
    fin: bool,
    /// The reserved bits; RSV1 (0b100) marks a compressed message.
    rsv: u8,
    opcode: OpCode,
    payload: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
struct Run {
    events: Vec<Seen>,
    output: Vec<Out>,
    state: State,
}

impl Run {
    /// The close code in the last Close frame the server sent.
    fn sent_close_code(&self) -> Option<u16> {
        self.output
            .iter()
            .rev()
            .find(|frame| frame.opcode == OpCode::Close)
            .map(|frame| u16::from_be_bytes([frame.payload[0], frame.payload[1]]))
    }
}

/// A client frame with full control over every header field; masked with [`KEY`].
fn raw_frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    crate::testing::masked_frame(crate::testing::first_byte(fin, rsv, opcode), payload, KEY)
}

fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    raw_frame(fin, 0, opcode as u8, payload)
}

fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    frame(FIN, OpCode::Close, &payload)
}

fn parse_output(mut bytes: &[u8]) -> Vec<Out> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let (header, len) = FrameHeader::parse(bytes).unwrap().expect("whole frame");
        assert_eq!(header.mask, None, "server frames are never masked");
        let end = len + header.payload_len as usize;
        frames.push(Out {
            fin: header.fin,
            rsv: header.rsv,
            opcode: header.opcode,
            payload: bytes[len..end].to_vec(),
        });
        bytes = &bytes[end..];
    }
    frames
}

fn test_config(limits: Limits) -> Config {
    Config {
        limits,
        timeouts: Timeouts {
            ping_interval: None,
            idle_timeout: None,
            close_timeout: Duration::from_secs(5),
        },
    }
}

/// A server connection without extensions.
fn server(limits: Limits) -> Connection {
    Connection::new(Role::Server, test_config(limits), Instant::now())
}

/// Feeds `input` in pieces of `piece` bytes to `conn`, which echoes data messages.
fn run_in_pieces(input: &[u8], piece: usize, mut conn: Connection) -> Run {
    let now = Instant::now();
    let mut events = Vec::new();
    let mut data = input.to_vec();
    for chunk in data.chunks_mut(piece) {
        conn.receive(chunk, now, |event, sender| {
            match event {
                Event::Text(text) => sender.send_text(text).unwrap(),
                Event::Binary(data) => sender.send_binary(data).unwrap(),
                _ => {}
            }
            events.push(Seen::from(event));
        });
    }
    let mut output = Vec::new();
    conn.outbox().write_to(&mut output).unwrap();
    Run {
        events,
        output: parse_output(&output),
        state: conn.state(),
    }
}

/// Feeds `input` whole and one byte at a time to connections from `make`; both must agree.
fn run_on(input: &[u8], make: impl Fn() -> Connection) -> Run {
    let whole = run_in_pieces(input, input.len().max(1), make());
    let bytewise = run_in_pieces(input, 1, make());
    assert_eq!(whole, bytewise, "whole and byte-at-a-time runs differ");
    whole
}

fn run_with(input: &[u8], limits: Limits) -> Run {
    run_on(input, || server(limits))
}

fn run(input: &[u8]) -> Run {
    run_with(input, Limits::default())
}

fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

fn assert_fails_with(input: &[u8], code: u16) {
    let result = run(input);
    assert_eq!(result.sent_close_code(), Some(code), "{result:?}");
    assert_eq!(result.state, State::Closed);
}

// §5.2, §5.7: messages

#[test]
fn rfc_5_7_masked_text_message_is_delivered() {
    let input = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    let result = run(&input);
    assert_eq!(result.events, [Seen::Text("Hello".into())]);
    assert_eq!(result.output[0].payload, b"Hello");
}

#[test]
fn binary_message_with_16_bit_length_is_delivered() {
    let payload = vec![0xAB; 300];
    let result = run(&frame(FIN, OpCode::Binary, &payload));
    assert_eq!(result.events, [Seen::Binary(payload)]);
}

#[test]
fn empty_messages_are_delivered() {
    let result = run(&concat(&[
        frame(FIN, OpCode::Text, b""),
        frame(FIN, OpCode::Binary, b""),
    ]));
    assert_eq!(
        result.events,
        [Seen::Text(String::new()), Seen::Binary(Vec::new())]
    );
}

#[test]
fn many_messages_in_one_read_are_all_delivered_in_order() {
    let frames: Vec<Vec<u8>> = (0..20)
        .map(|i| frame(FIN, OpCode::Text, format!("m{i}").as_bytes()))
        .collect();
    let result = run(&concat(&frames));
    let expected: Vec<Seen> = (0..20).map(|i| Seen::Text(format!("m{i}"))).collect();
    assert_eq!(result.events, expected);
}

// §5.1, §5.2: header rules

#[test]
fn unmasked_client_frame_fails_with_1002() {
    assert_fails_with(&[0x81, 0x02, b'h', b'i'], 1002);
}

#[test]
fn reserved_bits_without_extension_fail_with_1002() {
    for rsv in 1..=7 {
        assert_fails_with(&raw_frame(FIN, rsv, 0x1, b"hi"), 1002);
    }
}

#[test]
fn reserved_opcodes_fail_with_1002() {
    for opcode in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        assert_fails_with(&raw_frame(FIN, 0, opcode, b""), 1002);
    }
}

#[test]
fn sixty_four_bit_length_with_high_bit_fails_with_1002() {
    let mut input = vec![0x82, 0x80 | 127];
    input.extend_from_slice(&(1u64 << 63).to_be_bytes());
    input.extend_from_slice(&KEY);
    assert_fails_with(&input, 1002);
}

// §5.5: control frames

#[test]
fn control_frame_over_125_bytes_fails_with_1002() {
    assert_fails_with(&frame(FIN, OpCode::Ping, &[0; 126]), 1002);
}

#[test]
fn fragmented_control_frame_fails_with_1002() {
    assert_fails_with(&frame(MORE, OpCode::Ping, b"x"), 1002);
}

#[test]
fn ping_is_answered_with_pong_carrying_the_same_payload() {
    let result = run(&frame(FIN, OpCode::Ping, b"are you there"));
    assert_eq!(result.events, [Seen::Ping(b"are you there".to_vec())]);
    assert_eq!(
        result.output,
        [Out {
            fin: true,
            rsv: 0,
            opcode: OpCode::Pong,
            payload: b"are you there".to_vec()
        }]
    );
}

#[test]
fn ping_with_125_byte_payload_is_answered() {
    let result = run(&frame(FIN, OpCode::Ping, &[7; 125]));
    assert_eq!(result.output[0].payload, [7; 125]);
}

#[test]
fn unsolicited_pong_is_ignored() {
    let result = run(&frame(FIN, OpCode::Pong, b"hi"));
    assert_eq!(result.events, [Seen::Pong(b"hi".to_vec())]);
    assert!(result.output.is_empty());
    assert_eq!(result.state, State::Open);
}

// §5.4: fragmentation

#[test]
fn rfc_5_7_fragmented_text_is_assembled() {
    let input = concat(&[
        frame(MORE, OpCode::Text, b"Hel"),
        frame(FIN, OpCode::Continuation, b"lo"),
    ]);
    let result = run(&input);
    assert_eq!(result.events, [Seen::Text("Hello".into())]);
}

#[test]
fn empty_fragments_are_allowed() {
    let input = concat(&[
        frame(MORE, OpCode::Binary, b""),
        frame(MORE, OpCode::Continuation, b"ab"),
        frame(FIN, OpCode::Continuation, b""),
    ]);
    assert_eq!(run(&input).events, [Seen::Binary(b"ab".to_vec())]);
}

#[test]
fn control_frames_between_fragments_are_handled_at_once() {
    let input = concat(&[
        frame(MORE, OpCode::Text, b"fragment "),
        frame(FIN, OpCode::Ping, b"p"),
        frame(FIN, OpCode::Continuation, b"done"),
    ]);
    let result = run(&input);
    assert_eq!(
        result.events,
        [Seen::Ping(b"p".to_vec()), Seen::Text("fragment done".into())]
    );
    assert_eq!(result.output[0].opcode, OpCode::Pong, "pong precedes the echo");
}

#[test]
fn continuation_without_a_message_fails_with_1002() {
    assert_fails_with(&frame(FIN, OpCode::Continuation, b"orphan"), 1002);
}

#[test]
fn new_data_frame_inside_a_fragmented_message_fails_with_1002() {
    let input = concat(&[frame(MORE, OpCode::Text, b"a"), frame(FIN, OpCode::Text, b"b")]);
    assert_fails_with(&input, 1002);
}

// §8.1: UTF-8

#[test]
fn invalid_utf8_text_fails_with_1007() {
    assert_fails_with(
        &frame(
            FIN,
            OpCode::Text,
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80",
        ),
        1007,
    );
}

#[test]
fn character_split_across_fragments_is_valid() {
    let input = concat(&[
        frame(MORE, OpCode::Text, b"\xce"),
        frame(FIN, OpCode::Continuation, b"\xba"),
    ]);
    assert_eq!(run(&input).events, [Seen::Text("κ".into())]);
}

#[test]
fn message_ending_inside_a_character_fails_with_1007() {
    let input = concat(&[
        frame(MORE, OpCode::Text, b"ok\xf0\x9f"),
        frame(FIN, OpCode::Continuation, b""),
    ]);
    assert_fails_with(&input, 1007);
}

#[test]
fn invalid_utf8_fails_before_the_frame_is_complete() {
    // Autobahn 6.4.x: the frame announces 20 bytes; the invalid byte is detected among the first
    // ones, so the Close goes out before the rest arrives.
    let mut payload = b"\xce\xba\xf4\x90".to_vec();
    payload.resize(20, b'a');
    let input = frame(FIN, OpCode::Text, &payload);
    let header_and_bad_bytes = &input[..6 + 4];
    let result = run(header_and_bad_bytes);
    assert_eq!(result.sent_close_code(), Some(1007));
}

#[test]
fn invalid_utf8_in_a_later_fragment_fails_before_it_is_complete() {
    let mut input = frame(MORE, OpCode::Text, "κόσμε".as_bytes());
    let second = frame(FIN, OpCode::Continuation, b"\xed\xa0\x80 and more text");
    input.extend_from_slice(&second[..6 + 2]);
    assert_eq!(run(&input).sent_close_code(), Some(1007));
}

// §10.4: limits, decided from the header

fn small_limits() -> Limits {
    Limits {
        max_frame_size: 10,
        max_message_size: 16,
        max_fragments: 3,
    }
}

#[test]
fn frame_over_the_limit_fails_with_1009_from_its_header_alone() {
    let input = frame(FIN, OpCode::Binary, &[0; 11]);
    let result = run_with(&input[..6], small_limits());
    assert_eq!(result.sent_close_code(), Some(1009));
}

#[test]
fn message_over_the_limit_fails_with_1009_at_the_fragment_that_crosses_it() {
    let input = concat(&[
        frame(MORE, OpCode::Binary, &[0; 10]),
        frame(FIN, OpCode::Continuation, &[0; 7]),
    ]);
    let result = run_with(&input, small_limits());
    assert_eq!(result.sent_close_code(), Some(1009));
    assert!(result.events.is_empty());
}

#[test]
fn message_in_too_many_fragments_fails_with_1009() {
    let input = concat(&[
        frame(MORE, OpCode::Binary, b"a"),
        frame(MORE, OpCode::Continuation, b"b"),
        frame(MORE, OpCode::Continuation, b"c"),
        frame(FIN, OpCode::Continuation, b"d"),
    ]);
    assert_eq!(run_with(&input, small_limits()).sent_close_code(), Some(1009));
}

#[test]
fn message_at_the_limits_is_accepted() {
    let input = concat(&[
        frame(MORE, OpCode::Binary, &[1; 10]),
        frame(MORE, OpCode::Continuation, &[2; 5]),
        frame(FIN, OpCode::Continuation, &[3; 1]),
    ]);
    assert_eq!(run_with(&input, small_limits()).events.len(), 1);
}

// §5.5.1, §7: closing

#[test]
fn close_is_answered_with_the_same_code() {
    let result = run(&close_frame(1000, "bye"));
    assert_eq!(result.events, [Seen::Close(Some((1000, "bye".into())))]);
    assert_eq!(result.sent_close_code(), Some(1000));
    assert_eq!(result.state, State::Closed);
}

#[test]
fn empty_close_is_answered_with_an_empty_close() {
    let result = run(&frame(FIN, OpCode::Close, b""));
    assert_eq!(result.events, [Seen::Close(None)]);
    assert_eq!(
        result.output,
        [Out {
            fin: true,
            rsv: 0,
            opcode: OpCode::Close,
            payload: Vec::new()
        }]
    );
}

#[test]
fn close_codes_table() {
    // (received code, code we answer with): valid codes are echoed, others fail with 1002.
    let table = [
        (1000, 1000),
        (1001, 1001),
        (1002, 1002),
        (1003, 1003),
        (1004, 1002),
        (1005, 1002),
        (1006, 1002),
        (1007, 1007),
        (1008, 1008),
        (1009, 1009),
        (1010, 1010),
        (1011, 1011),
        (1012, 1012),
        (1013, 1013),
        (1014, 1014),
        (1015, 1002),
        (1016, 1002),
        (2000, 1002),
        (2999, 1002),
        (3000, 3000),
        (3999, 3999),
        (4000, 4000),
        (4999, 4999),
        (5000, 1002),
        (65535, 1002),
        (0, 1002),
        (999, 1002),
    ];
    for (received, answered) in table {
        assert_eq!(
            run(&close_frame(received, "")).sent_close_code(),
            Some(answered),
            "code {received}"
        );
    }
}

#[test]
fn one_byte_close_payload_fails_with_1002() {
    assert_fails_with(&frame(FIN, OpCode::Close, &[0x03]), 1002);
}

#[test]
fn close_reason_that_is_not_utf8_fails_with_1007() {
    assert_fails_with(&frame(FIN, OpCode::Close, b"\x03\xe8\xff\xfe"), 1007);
}

#[test]
fn nothing_is_read_or_sent_after_close() {
    let input = concat(&[
        close_frame(1000, ""),
        frame(FIN, OpCode::Ping, b"late"),
        frame(FIN, OpCode::Text, b"late"),
    ]);
    let result = run(&input);
    assert_eq!(result.events.len(), 1);
    assert_eq!(result.output.len(), 1);
}

#[test]
fn nothing_is_sent_after_failing_the_connection() {
    let input = concat(&[
        frame(FIN, OpCode::Continuation, b"bad"),
        frame(FIN, OpCode::Ping, b"late"),
    ]);
    let result = run(&input);
    assert_eq!(result.output.len(), 1);
    assert_eq!(result.output[0].opcode, OpCode::Close);
}

/// A server connection that has sent Close and waits for the peer's.
fn closing_by_us(now: Instant) -> Connection {
    let mut conn = Connection::new(Role::Server, test_config(Limits::default()), now);
    conn.close(CloseCode::GoingAway, "shutting down", now);
    assert_eq!(conn.state(), State::ClosingByUs);
    conn
}

fn drain(conn: &mut Connection) -> Vec<Out> {
    let mut bytes = Vec::new();
    conn.outbox().write_to(&mut bytes).unwrap();
    parse_output(&bytes)
}

#[test]
fn our_close_carries_code_and_reason() {
    let now = Instant::now();
    let mut conn = closing_by_us(now);
    let out = drain(&mut conn);
    assert_eq!(out[0].opcode, OpCode::Close);
    assert_eq!(out[0].payload, b"\x03\xe9shutting down");
}

#[test]
fn peer_close_after_ours_completes_the_handshake_without_a_second_close() {
    let now = Instant::now();
    let mut conn = closing_by_us(now);
    drain(&mut conn);
    let mut input = concat(&[frame(FIN, OpCode::Text, b"in flight"), close_frame(1001, "")]);
    let mut events = Vec::new();
    conn.receive(&mut input, now, |event, _| events.push(Seen::from(event)));
    assert_eq!(
        events,
        [Seen::Close(Some((1001, String::new())))],
        "data after our Close is dropped"
    );
    assert_eq!(conn.state(), State::Closed);
    assert!(drain(&mut conn).is_empty());
}

#[test]
fn data_frames_cannot_be_sent_after_close() {
    let now = Instant::now();
    let mut conn = closing_by_us(now);
    assert_eq!(conn.sender(now).send_text("late"), Err(SendError::Closing));
    assert_eq!(conn.sender(now).ping(b""), Err(SendError::Closing));
}

#[test]
fn peer_that_never_answers_our_close_is_dropped_after_the_close_timeout() {
    let now = Instant::now();
    let mut conn = closing_by_us(now);
    let deadline = conn.poll_timeout().unwrap();
    assert_eq!(deadline, now + Duration::from_secs(5));
    conn.handle_timeout(deadline - Duration::from_millis(1));
    assert_eq!(conn.state(), State::ClosingByUs);
    conn.handle_timeout(deadline);
    assert_eq!(conn.state(), State::Closed);
}

#[test]
fn end_of_stream_without_close_is_abnormal_1006() {
    let now = Instant::now();
    let mut conn = Connection::new(Role::Server, test_config(Limits::default()), now);
    conn.receive_eof();
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(conn.close_status().unwrap().code, CloseCode::Abnormal);
}

// Timers: keep-alive and idle

fn with_timers(now: Instant) -> Connection {
    let config = Config {
        limits: Limits::default(),
        timeouts: Timeouts {
            ping_interval: Some(Duration::from_secs(10)),
            idle_timeout: Some(Duration::from_secs(25)),
            close_timeout: Duration::from_secs(5),
        },
    };
    Connection::new(Role::Server, config, now)
}

#[test]
fn server_pings_every_interval() {
    let start = Instant::now();
    let mut conn = with_timers(start);
    assert_eq!(conn.poll_timeout(), Some(start + Duration::from_secs(10)));
    conn.handle_timeout(start + Duration::from_secs(10));
    let out = drain(&mut conn);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].opcode, OpCode::Ping);
    assert_eq!(conn.poll_timeout(), Some(start + Duration::from_secs(20)));
}

#[test]
fn silent_peer_is_closed_after_the_idle_timeout() {
    let start = Instant::now();
    let mut conn = with_timers(start);
    conn.handle_timeout(start + Duration::from_secs(25));
    assert_eq!(conn.state(), State::ClosingByUs);
    assert_eq!(conn.close_status().unwrap().code, CloseCode::GoingAway);
}

#[test]
fn any_bytes_from_the_peer_reset_the_idle_timer() {
    let start = Instant::now();
    let mut conn = with_timers(start);
    let later = start + Duration::from_secs(20);
    conn.receive(&mut frame(FIN, OpCode::Pong, b""), later, |_, _| {});
    conn.handle_timeout(start + Duration::from_secs(25));
    assert_eq!(conn.state(), State::Open);
}

// Client role

#[test]
fn client_masks_what_it_sends_and_rejects_masked_server_frames() {
    let now = Instant::now();
    let mut client = Connection::with_mask_seed(Role::Client, test_config(Limits::default()), now, 42);
    client.sender(now).send_text("Hello").unwrap();
    let mut bytes = Vec::new();
    client.outbox().write_to(&mut bytes).unwrap();
    let (header, len) = FrameHeader::parse(&bytes).unwrap().unwrap();
    let key = header.mask.expect("client frames are masked");
    let mut payload = bytes[len..].to_vec();
    crate::ws::mask::apply_mask(&mut payload, key, 0);
    assert_eq!(payload, b"Hello");

    client.receive(&mut frame(FIN, OpCode::Text, b"masked"), now, |_, _| {});
    assert_eq!(
        client.close_status().unwrap().error,
        Some(ProtocolError::MaskedServerFrame)
    );
}

#[test]
fn client_cannot_send_shared_frames() {
    let now = Instant::now();
    let mut client = Connection::new(Role::Client, test_config(Limits::default()), now);
    let shared = SharedFrame::new(Message::Text("hi"));
    assert_eq!(
        client.sender(now).send_shared(&shared),
        Err(SendError::SharedFrameFromClient)
    );
}

#[test]
fn partial_message_memory_is_released_after_delivery() {
    let now = Instant::now();
    let mut conn = Connection::new(Role::Server, test_config(Limits::default()), now);
    let mut input = frame(FIN, OpCode::Binary, &[5; 1000]);
    let (first, second) = input.split_at_mut(500);
    conn.receive(first, now, |_, _| {});
    assert!(conn.buffered() > 0);
    conn.receive(second, now, |_, _| {});
    assert_eq!(conn.buffered(), 0);
}

// RFC 7692: permessage-deflate

/// What our server agrees with Chrome: the server compresses each message on its own, the client
/// keeps its context (and so may refer back to earlier messages).
const CHROME: DeflateParams = DeflateParams {
    server_no_context_takeover: true,
    client_no_context_takeover: false,
    server_max_window_bits: 15,
    client_max_window_bits: 15,
};

/// What our server agrees with a client that offered `client_no_context_takeover`.
const NO_TAKEOVER: DeflateParams = DeflateParams {
    client_no_context_takeover: true,
    ..CHROME
};

/// A server connection that negotiated permessage-deflate with `params`; messages of at least
/// `threshold` bytes go out compressed.
fn deflate_server(limits: Limits, params: DeflateParams, threshold: usize) -> Connection {
    server(limits).with_deflate(DeflateConfig {
        params,
        deflate_threshold: threshold,
    })
}

/// Feeds `input` (whole and byte by byte) to a server that negotiated `params` and compresses
/// every message it echoes.
fn run_deflate(input: &[u8], params: DeflateParams) -> Run {
    run_on(input, || deflate_server(Limits::default(), params, 0))
}

/// `message` as a compressed payload, each message on its own (as we always send).
fn compressed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    deflate::compress_shared(15, message, &mut out).unwrap();
    out
}

/// A compressed text message from the client in one frame.
fn compressed_text(text: &[u8]) -> Vec<u8> {
    raw_frame(FIN, RSV1, OpCode::Text as u8, &compressed(text))
}

/// The message a compressed frame the server wrote stands for.
fn inflate_out(frame: &Out) -> Vec<u8> {
    assert_eq!(frame.rsv, RSV1, "{frame:?}");
    let mut out = Vec::new();
    let mut decompressor = Decompressor::new(15);
    let mut inspect = |_: &[u8]| Ok::<(), InflateError>(());
    decompressor
        .inflate(&frame.payload, &mut out, usize::MAX, &mut inspect)
        .unwrap();
    decompressor.finish(&mut out, usize::MAX, &mut inspect).unwrap();
    out
}

#[test]
fn rfc7692_7_2_3_1_compressed_hello_is_delivered() {
    let input = raw_frame(FIN, RSV1, 0x1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    let result = run_deflate(&input, CHROME);
    assert_eq!(result.events, [Seen::Text("Hello".into())]);
}

#[test]
fn rfc7692_7_2_3_1_compressed_hello_in_two_fragments_is_delivered() {
    let input = concat(&[
        raw_frame(MORE, RSV1, 0x1, &[0xf2, 0x48, 0xcd]),
        raw_frame(FIN, 0, 0x0, &[0xc9, 0xc9, 0x07, 0x00]),
    ]);
    assert_eq!(run_deflate(&input, CHROME).events, [Seen::Text("Hello".into())]);
}

#[test]
fn rfc7692_7_2_3_2_message_referring_to_the_previous_one_is_delivered_when_the_peer_keeps_context() {
    let input = concat(&[
        raw_frame(FIN, RSV1, 0x1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]),
        raw_frame(FIN, RSV1, 0x1, &[0xf2, 0x00, 0x11, 0x00, 0x00]),
    ]);
    assert_eq!(
        run_deflate(&input, CHROME).events,
        [Seen::Text("Hello".into()), Seen::Text("Hello".into())]
    );
}

#[test]
fn rfc7692_7_2_3_payload_forms_table() {
    // (payload pieces of one message, first frame RSV1, the rest continuations)
    let table: [(&[&[u8]], &str); 5] = [
        // §7.2.3.3: a block with no compression.
        (
            &[&[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00]],
            "Hello",
        ),
        // §7.2.3.4: a final block, then the padding byte of the empty block after it.
        (&[&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]], "Hello"),
        // §7.2.3.5: two blocks.
        (
            &[&[
                0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
            ]],
            "Hello",
        ),
        // §7.2.3.6: the empty message, and an empty last fragment.
        (&[&[0x00]], ""),
        (&[&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], &[]], "Hello"),
    ];
    for (pieces, text) in table {
        let frames: Vec<Vec<u8>> = pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let (rsv, opcode) = if i == 0 { (RSV1, 0x1) } else { (0, 0x0) };
                raw_frame(i + 1 == pieces.len(), rsv, opcode, piece)
            })
            .collect();
        assert_eq!(
            run_deflate(&concat(&frames), CHROME).events,
            [Seen::Text(text.into())],
            "{pieces:x?}"
        );
    }
}

#[test]
fn uncompressed_message_on_a_deflate_connection_is_delivered() {
    let result = run_deflate(&frame(FIN, OpCode::Binary, b"plain"), CHROME);
    assert_eq!(result.events, [Seen::Binary(b"plain".to_vec())]);
}

#[test]
fn rsv1_on_a_control_frame_fails_with_1002() {
    for opcode in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
        let result = run_deflate(&raw_frame(FIN, RSV1, opcode as u8, b""), CHROME);
        assert_eq!(result.sent_close_code(), Some(1002), "{opcode:?}");
    }
}

#[test]
fn rsv1_on_a_continuation_fails_with_1002() {
    let input = concat(&[
        raw_frame(MORE, RSV1, 0x1, &[0xf2, 0x48, 0xcd]),
        raw_frame(FIN, RSV1, 0x0, &[0xc9, 0xc9, 0x07, 0x00]),
    ]);
    let result = run_deflate(&input, CHROME);
    assert_eq!(result.sent_close_code(), Some(1002));
    assert!(result.events.is_empty());
}

#[test]
fn rsv2_and_rsv3_still_fail_with_1002_when_deflate_claims_rsv1() {
    for rsv in [0b010, 0b001, 0b110, 0b111] {
        let result = run_deflate(&raw_frame(FIN, rsv, 0x1, &compressed(b"hi")), CHROME);
        assert_eq!(result.sent_close_code(), Some(1002), "rsv {rsv:03b}");
    }
}

#[test]
fn data_that_is_not_deflate_fails_with_1007() {
    let result = run_deflate(&raw_frame(FIN, RSV1, 0x2, &[0xff, 0xff, 0xff, 0xff]), CHROME);
    assert_eq!(result.sent_close_code(), Some(1007));
}

#[test]
fn compressed_message_inflating_past_the_limit_fails_with_1009() {
    let limits = Limits {
        max_frame_size: 1024,
        max_message_size: 4096,
        max_fragments: 4,
    };
    let bomb = compressed(&[0; 256 * 1024]);
    assert!(bomb.len() <= limits.max_frame_size, "a small frame on the wire");
    let input = raw_frame(FIN, RSV1, 0x2, &bomb);
    let result = run_on(&input, || deflate_server(limits, CHROME, 0));
    assert_eq!(result.sent_close_code(), Some(1009));
    assert!(result.events.is_empty());
    let now = Instant::now();
    let mut conn = deflate_server(limits, CHROME, 0);
    let (header, rest) = input.split_at(6 + 40);
    conn.receive(&mut header.to_vec(), now, |_, _| {});
    assert!(
        conn.buffered() <= 2 * limits.max_message_size,
        "{} bytes held",
        conn.buffered()
    );
    conn.receive(&mut rest.to_vec(), now, |_, _| {});
    assert_eq!(
        conn.close_status().unwrap().error,
        Some(ProtocolError::InflatedTooBig { max: 4096 })
    );
}

#[test]
fn compressed_message_inflating_to_exactly_the_limit_is_delivered() {
    let limits = small_limits();
    let message = vec![7; limits.max_message_size];
    let input = raw_frame(FIN, RSV1, 0x2, &compressed(&message));
    let result = run_on(&input, || deflate_server(limits, CHROME, usize::MAX));
    assert_eq!(result.events, [Seen::Binary(message)]);
}

#[test]
fn compressed_message_is_limited_by_its_inflated_size_not_its_wire_size() {
    // Incompressible bytes grow a little when "compressed": on the wire the message is longer
    // than the limit, inflated it fits.
    let mut seed = 0x9e37_79b9u32;
    let message: Vec<u8> = (0..1000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as u8
        })
        .collect();
    let payload = compressed(&message);
    assert!(payload.len() > message.len());
    let limits = Limits {
        max_frame_size: 2000,
        max_message_size: 1000,
        max_fragments: 4,
    };
    let input = raw_frame(FIN, RSV1, 0x2, &payload);
    let result = run_on(&input, || deflate_server(limits, CHROME, usize::MAX));
    assert_eq!(result.events, [Seen::Binary(message)]);
}

#[test]
fn invalid_utf8_in_compressed_text_fails_before_the_frame_is_complete() {
    let mut text = b"\xce\xba\xf4\x90 ".to_vec();
    text.extend(b"and a long tail of valid text after the bad bytes ".repeat(200));
    let input = raw_frame(FIN, RSV1, 0x1, &compressed(&text));
    let cut = input.len() * 2 / 3;
    let result = run_deflate(&input[..cut], CHROME);
    assert_eq!(result.sent_close_code(), Some(1007));
}

#[test]
fn compressed_text_that_ends_inside_a_character_fails_with_1007() {
    assert_eq!(
        run_deflate(&compressed_text(b"ok\xf0\x9f"), CHROME).sent_close_code(),
        Some(1007)
    );
}

#[test]
fn server_compresses_what_reaches_the_threshold_and_sends_the_rest_plain() {
    let long = "a chat line long enough to be worth compressing, ".repeat(4);
    let input = concat(&[
        frame(FIN, OpCode::Text, b"short"),
        frame(FIN, OpCode::Text, long.as_bytes()),
    ]);
    let result = run_on(&input, || deflate_server(Limits::default(), CHROME, 100));
    let expected_compressed = compressed(long.as_bytes());
    assert_eq!(
        result.output,
        [
            Out {
                fin: true,
                rsv: 0,
                opcode: OpCode::Text,
                payload: b"short".to_vec()
            },
            Out {
                fin: true,
                rsv: RSV1,
                opcode: OpCode::Text,
                payload: expected_compressed
            },
        ]
    );
    assert_eq!(inflate_out(&result.output[1]), long.as_bytes());
}

#[test]
fn control_frames_are_never_compressed() {
    let input = concat(&[
        frame(FIN, OpCode::Ping, b"ping payload"),
        close_frame(1000, "bye"),
    ]);
    let result = run_deflate(&input, CHROME);
    assert!(
        result.output.iter().all(|frame| frame.rsv == 0),
        "{:?}",
        result.output
    );
    assert_eq!(result.output.len(), 2);
}

#[test]
fn server_output_with_deflate_reads_back_on_a_client_connection() {
    let texts = ["x".repeat(300), "κόσμε ".repeat(50), String::new()];
    let frames: Vec<Vec<u8>> = texts
        .iter()
        .map(|text| compressed_text(text.as_bytes()))
        .collect();
    let server_run = run_deflate(&concat(&frames), CHROME);
    let mut bytes: Vec<u8> = Vec::new();
    for out in &server_run.output {
        let mut header = FrameHeader::new(out.fin, out.opcode, None, out.payload.len());
        header.rsv = out.rsv;
        encode(&mut bytes, &header, &out.payload);
    }
    let now = Instant::now();
    let mut client = Connection::new(Role::Client, test_config(Limits::default()), now)
        .with_deflate(DeflateConfig::new(CHROME));
    let mut events = Vec::new();
    client.receive(&mut bytes, now, |event, _| events.push(Seen::from(event)));
    let expected: Vec<Seen> = texts.iter().map(|text| Seen::Text(text.clone())).collect();
    assert_eq!(events, expected);
    assert_eq!(client.state(), State::Open);
}

#[test]
fn client_compresses_and_masks_what_it_sends() {
    let now = Instant::now();
    let params = DeflateParams {
        client_max_window_bits: 9,
        ..CHROME
    };
    let mut client = Connection::with_mask_seed(Role::Client, test_config(Limits::default()), now, 7)
        .with_deflate(DeflateConfig::new(params));
    let text = "client text, repeated until it is worth compressing. ".repeat(10);
    client.sender(now).send_text(&text).unwrap();
    let mut bytes = Vec::new();
    client.outbox().write_to(&mut bytes).unwrap();
    let (header, len) = FrameHeader::parse(&bytes).unwrap().unwrap();
    assert_eq!(header.rsv, RSV1);
    let key = header.mask.expect("client frames are masked");
    let mut payload = bytes[len..].to_vec();
    crate::ws::mask::apply_mask(&mut payload, key, 0);
    let mut expected = Vec::new();
    deflate::compress_shared(9, text.as_bytes(), &mut expected).unwrap();
    assert_eq!(
        payload, expected,
        "compressed for the 512-byte window the server asked for"
    );
}

/// Whether the connection holds a decompressor now.
fn holds_decompressor(conn: &Connection) -> bool {
    conn.rx
        .deflate
        .as_ref()
        .is_some_and(|deflate| deflate.inflating.is_some())
}

#[test]
fn decompressor_lives_only_during_a_message_when_the_peer_resets_each_one() {
    let now = Instant::now();
    let mut conn = deflate_server(Limits::default(), NO_TAKEOVER, 0);
    assert!(!holds_decompressor(&conn), "an idle connection holds none");
    let mut input = concat(&[
        raw_frame(MORE, RSV1, 0x1, &[0xf2, 0x48, 0xcd]),
        raw_frame(FIN, 0, 0x0, &[0xc9, 0xc9, 0x07, 0x00]),
    ]);
    let (first, second) = input.split_at_mut(9);
    conn.receive(first, now, |_, _| {});
    assert!(holds_decompressor(&conn), "during the message");
    conn.receive(second, now, |_, _| {});
    assert!(!holds_decompressor(&conn), "released with the message");
}

#[test]
fn decompressor_is_kept_between_messages_when_the_peer_keeps_context() {
    let now = Instant::now();
    let mut conn = deflate_server(Limits::default(), CHROME, 0);
    conn.receive(&mut frame(FIN, OpCode::Text, b"plain"), now, |_, _| {});
    assert!(
        !holds_decompressor(&conn),
        "made on the first compressed message only"
    );
    conn.receive(&mut compressed_text(b"Hello"), now, |_, _| {});
    assert!(holds_decompressor(&conn));
    assert_eq!(conn.buffered(), 0, "the message buffer is released all the same");
}

#[test]
fn data_after_our_close_is_skipped_without_inflating() {
    let now = Instant::now();
    let mut conn = deflate_server(Limits::default(), NO_TAKEOVER, 0);
    conn.close(CloseCode::GoingAway, "", now);
    let mut input = concat(&[compressed_text(b"in flight"), close_frame(1000, "")]);
    let mut events = Vec::new();
    conn.receive(&mut input, now, |event, _| events.push(Seen::from(event)));
    assert_eq!(events, [Seen::Close(Some((1000, String::new())))]);
    assert!(!holds_decompressor(&conn));
    assert_eq!(conn.state(), State::Closed);
}

/// Sends `message` on `conn` and returns the bytes it queued.
fn send_shared_to(conn: &mut Connection, message: &SharedMessage) -> Vec<u8> {
    let now = Instant::now();
    conn.sender(now).send_shared_message(message).unwrap();
    let mut bytes = Vec::new();
    conn.outbox().write_to(&mut bytes).unwrap();
    bytes
}

#[test]
fn shared_message_is_compressed_once_per_window_and_shared() {
    // A passage that comes back 1,200 bytes later: window 15 refers back to it, window 10 cannot.
    let mut seed = 0x2545_f491u32;
    let passage: String = (0..1200)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            char::from(b'a' + (seed % 26) as u8)
        })
        .collect();
    let text = passage.repeat(2);
    let message = SharedMessage::new(Message::Text(&text));
    let window_10 = DeflateParams {
        server_max_window_bits: 10,
        ..CHROME
    };
    let mut a = deflate_server(Limits::default(), CHROME, 100);
    let mut b = deflate_server(Limits::default(), NO_TAKEOVER, 100);
    let mut c = deflate_server(Limits::default(), window_10, 100);
    a.sender(Instant::now()).send_shared_message(&message).unwrap();
    b.sender(Instant::now()).send_shared_message(&message).unwrap();
    c.sender(Instant::now()).send_shared_message(&message).unwrap();
    let shared_15 = message.compressed[7].get().unwrap().as_ref().unwrap();
    assert_eq!(
        Rc::strong_count(shared_15),
        3,
        "the message and two outboxes hold one copy"
    );
    assert!(message.compressed[2].get().is_some(), "window 10 has its own");
    assert!(message.plain.get().is_none(), "nobody needed the plain frame");

    let outputs = [&mut a, &mut b, &mut c].map(|conn| {
        let mut bytes = Vec::new();
        conn.outbox().write_to(&mut bytes).unwrap();
        parse_output(&bytes)
    });
    for output in &outputs {
        assert_eq!(inflate_out(&output[0]), text.as_bytes());
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_ne!(outputs[0], outputs[2]);
    let mut expected = Vec::new();
    deflate::compress_shared(10, text.as_bytes(), &mut expected).unwrap();
    assert_eq!(outputs[2][0].payload, expected);
}

#[test]
fn shared_message_goes_plain_below_the_threshold_or_without_deflate() {
    let message = SharedMessage::new(Message::Text("short"));
    let plain = SharedFrame::new(Message::Text("short"));
    let mut with_deflate = deflate_server(Limits::default(), CHROME, 100);
    let mut without = server(Limits::default());
    assert_eq!(send_shared_to(&mut with_deflate, &message), plain.bytes());
    assert_eq!(send_shared_to(&mut without, &message), plain.bytes());
    let long = SharedMessage::new(Message::Binary(&[1; 500]));
    assert_eq!(parse_output(&send_shared_to(&mut without, &long))[0].rsv, 0);
}

#[test]
fn client_sends_a_shared_message_as_its_own_masked_copy() {
    let now = Instant::now();
    let mut client = Connection::new(Role::Client, test_config(Limits::default()), now);
    let bytes = send_shared_to(&mut client, &SharedMessage::new(Message::Text("hi")));
    let (header, _) = FrameHeader::parse(&bytes).unwrap().unwrap();
    assert!(header.mask.is_some());
}

#[test]
fn without_the_extension_nothing_is_compressed() {
    let long = "z".repeat(10_000);
    let result = run(&frame(FIN, OpCode::Text, long.as_bytes()));
    assert_eq!(result.output[0].rsv, 0);
    assert_eq!(result.output[0].payload, long.as_bytes());
}

#[test]
fn data_in_flight_after_our_close_is_delivered_when_asked() {
    let now = Instant::now();
    let mut conn = closing_by_us(now).deliver_data_while_closing();
    drain(&mut conn);
    let mut input = concat(&[frame(FIN, OpCode::Text, b"in flight"), close_frame(1000, "")]);
    let mut events = Vec::new();
    let mut sent = Vec::new();
    conn.receive(&mut input, now, |event, sender| {
        sent.push(sender.send_text("too late"));
        events.push(Seen::from(event));
    });
    assert_eq!(
        events,
        [
            Seen::Text("in flight".into()),
            Seen::Close(Some((1000, String::new())))
        ]
    );
    assert_eq!(sent[0], Err(SendError::Closing), "it can no longer be answered");
    assert_eq!(conn.state(), State::Closed);
}
