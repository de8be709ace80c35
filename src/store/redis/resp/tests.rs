//! RESP2 framing: commands as arrays of bulk strings, answers decoded whatever the cut.

use super::*;

/// Decodes `input` fed in pieces of the given sizes (the last piece takes the rest); returns the
/// frames in order, or the first error.
fn decode_in_pieces(input: &[u8], cuts: &[usize]) -> Result<Vec<Frame>, DecodeError> {
    let mut decoder = Decoder::new();
    let mut frames = Vec::new();
    let mut rest = input;
    let mut pieces: Vec<&[u8]> = Vec::new();
    for &cut in cuts {
        let (piece, after) = rest.split_at(cut.min(rest.len()));
        pieces.push(piece);
        rest = after;
    }
    pieces.push(rest);
    for piece in pieces {
        decoder.feed(piece);
        while let Some(frame) = decoder.next_frame()? {
            frames.push(frame);
        }
    }
    assert_eq!(decoder.buffered(), 0, "every byte belongs to a frame");
    Ok(frames)
}

/// The same frames whole, split at every byte, and one byte at a time.
fn assert_decodes_at_every_cut(input: &[u8], expected: &[Frame]) {
    assert_eq!(decode_in_pieces(input, &[]).as_deref(), Ok(expected), "whole");
    for cut in 0..=input.len() {
        assert_eq!(
            decode_in_pieces(input, &[cut]).as_deref(),
            Ok(expected),
            "split at byte {cut}"
        );
    }
    let single_bytes = vec![1; input.len()];
    assert_eq!(
        decode_in_pieces(input, &single_bytes).as_deref(),
        Ok(expected),
        "one byte at a time"
    );
}

#[test]
fn a_command_is_an_array_of_bulk_strings() {
    let mut out = Vec::new();
    encode_command(&mut out, &["SET", "wschat:epoch", "00000000000000ff", "NX"]);
    assert_eq!(
        out,
        b"*4\r\n$3\r\nSET\r\n$12\r\nwschat:epoch\r\n$16\r\n00000000000000ff\r\n$2\r\nNX\r\n"
    );
}

#[test]
fn command_arguments_are_binary_safe() {
    // CR LF and NUL inside an argument are data: the length prefix says where it ends.
    let mut out = Vec::new();
    encode_command(&mut out, &[&b"ECHO"[..], b"a\r\nb\0"]);
    assert_eq!(out, b"*2\r\n$4\r\nECHO\r\n$5\r\na\r\nb\0\r\n");
    assert_eq!(
        decode_in_pieces(&out, &[]),
        Ok(vec![Frame::Array(vec![
            Frame::BulkString(b"ECHO".to_vec()),
            Frame::BulkString(b"a\r\nb\0".to_vec()),
        ])])
    );
}

#[test]
fn an_empty_argument_is_a_zero_length_bulk_string() {
    let mut out = Vec::new();
    encode_command(&mut out, &["GET", ""]);
    assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n");
}

#[test]
fn commands_append_to_what_is_queued() {
    let mut out = b"*1\r\n$4\r\nPING\r\n".to_vec();
    encode_command(&mut out, &["PING"]);
    assert_eq!(out, b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n");
}

#[test]
fn pipelined_commands_round_trip_at_every_cut() {
    let commands: [&[&[u8]]; 3] = [
        &[
            b"XADD",
            b"wschat:history:lobby",
            b"*",
            b"t",
            "κόσμε\r\n".as_bytes(),
        ],
        &[b"PING"],
        &[b"SET", b"", b"0123456789"],
    ];
    let mut out = Vec::new();
    for command in commands {
        encode_command(&mut out, command);
    }
    let expected: Vec<Frame> = commands
        .iter()
        .map(|args| Frame::Array(args.iter().map(|arg| Frame::BulkString(arg.to_vec())).collect()))
        .collect();
    assert_decodes_at_every_cut(&out, &expected);
}

#[test]
fn every_frame_kind_decodes_at_every_cut() {
    let cases: Vec<(&[u8], Frame)> = vec![
        (b"+OK\r\n", Frame::SimpleString(b"OK".to_vec())),
        (
            b"-NOSCRIPT No matching script.\r\n",
            Frame::Error("NOSCRIPT No matching script.".to_owned()),
        ),
        (b":42\r\n", Frame::Integer(42)),
        (b":-1\r\n", Frame::Integer(-1)),
        (b"$5\r\nhello\r\n", Frame::BulkString(b"hello".to_vec())),
        (b"$0\r\n\r\n", Frame::BulkString(Vec::new())),
        (b"$-1\r\n", Frame::Null),
        (b"*-1\r\n", Frame::Null),
        (b"*0\r\n", Frame::Array(Vec::new())),
        (
            // An XRANGE entry: [id, [field, value, ...]].
            b"*1\r\n*2\r\n$4\r\n17-0\r\n*2\r\n$1\r\nn\r\n$5\r\nalice\r\n",
            Frame::Array(vec![Frame::Array(vec![
                Frame::BulkString(b"17-0".to_vec()),
                Frame::Array(vec![
                    Frame::BulkString(b"n".to_vec()),
                    Frame::BulkString(b"alice".to_vec()),
                ]),
            ])]),
        ),
        (
            // A bulk string holding CR LF: the length, not a terminator search, ends it.
            b"$4\r\n\r\n\r\n\r\n",
            Frame::BulkString(b"\r\n\r\n".to_vec()),
        ),
    ];
    for (input, expected) in cases {
        assert_decodes_at_every_cut(input, &[expected]);
    }
}

#[test]
fn pipelined_answers_come_out_in_order() {
    let input = b"+OK\r\n:7\r\n$-1\r\n*2\r\n:1\r\n$3\r\nabc\r\n-ERR wrong\r\n";
    let expected = [
        Frame::SimpleString(b"OK".to_vec()),
        Frame::Integer(7),
        Frame::Null,
        Frame::Array(vec![Frame::Integer(1), Frame::BulkString(b"abc".to_vec())]),
        Frame::Error("ERR wrong".to_owned()),
    ];
    assert_decodes_at_every_cut(input, &expected);
}

#[test]
fn an_unknown_type_byte_is_malformed() {
    let mut decoder = Decoder::new();
    decoder.feed(b"!oops\r\n");
    assert!(matches!(decoder.next_frame(), Err(DecodeError::Malformed(_))));
}

#[test]
fn a_non_numeric_length_is_malformed() {
    let mut decoder = Decoder::new();
    decoder.feed(b"$abc\r\nxyz\r\n");
    assert!(matches!(decoder.next_frame(), Err(DecodeError::Malformed(_))));
}

#[test]
fn a_frame_past_the_limit_is_refused_before_it_ends() {
    let mut decoder = Decoder::with_limit(16);
    decoder.feed(b"$1000\r\n");
    assert_eq!(decoder.next_frame(), Ok(None));
    decoder.feed(&[b'x'; 10]);
    assert_eq!(
        decoder.next_frame(),
        Err(DecodeError::TooLarge {
            buffered: 17,
            limit: 16
        })
    );
}

#[test]
fn a_frame_within_the_limit_is_kept_until_complete() {
    let mut decoder = Decoder::with_limit(16);
    decoder.feed(b"$5\r\nhel");
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(decoder.buffered(), 7);
    decoder.feed(b"lo\r\n");
    assert_eq!(
        decoder.next_frame(),
        Ok(Some(Frame::BulkString(b"hello".to_vec())))
    );
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn clear_forgets_a_partial_frame() {
    let mut decoder = Decoder::new();
    decoder.feed(b"$5\r\nhe");
    decoder.clear();
    decoder.feed(b":1\r\n");
    assert_eq!(decoder.next_frame(), Ok(Some(Frame::Integer(1))));
}
