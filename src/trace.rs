//! The wire trace: every handshake head and every frame, both directions, one annotated line each.
//!
//! Turned on with `wschat --trace` (or `RUST_LOG=wschat::trace=trace`). Lines go to the log target
//! `wschat::trace` at level TRACE, so when the trace is off the only cost is the check
//! [`enabled`], made once per connection: a connection that is not traced never formats anything.
//!
//! ```text
//! #1 <- FIN RSV=000 TEXT   MASK=37fa213d len=5      (7-bit)  "Hello"
//! #1 -> FIN RSV=000 TEXT   MASK=-        len=5      (7-bit)  "Hello"
//! #1 <- FIN RSV=000 CLOSE  MASK=0c0d0e0f len=5      (7-bit)  code=1000 (normal closure) reason="bye"
//! #2 <- FIN RSV=100 TEXT   MASK=37fa213d len=7      (7-bit)  compressed, inflated len=5 "Hello"
//! ```
//!
//! `<-` is what the peer sent, `->` what we sent. Fragments show `...` instead of `FIN`. A frame of
//! a message compressed with permessage-deflate (RSV1 on its first frame, RFC 7692) shows its
//! length on the wire, then what it inflated to, and the inflated text.

use std::fmt::Write as _;

use crate::ws::close::{CloseCode, parse_close_payload};
use crate::ws::frame::{FrameHeader, LengthForm, OpCode};
use crate::ws::protocol::ProtocolError;

/// The log target of trace lines.
pub const TARGET: &str = "wschat::trace";
/// Payload bytes shown per frame.
pub const PREVIEW_LEN: usize = 40;

/// Whether trace lines would be printed. Cheap: with the trace off, the `log` crate answers from a
/// single global level before asking the logger.
pub fn enabled() -> bool {
    log::log_enabled!(target: TARGET, log::Level::Trace)
}

/// Which way a frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the peer to us.
    In,
    /// From us to the peer.
    Out,
}

impl Direction {
    fn arrow(self) -> &'static str {
        match self {
            Direction::In => "<-",
            Direction::Out => "->",
        }
    }
}

/// The first [`PREVIEW_LEN`] bytes of a payload, collected as it streams in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preview {
    bytes: Vec<u8>,
}

impl Preview {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps what still fits of `piece`.
    pub fn extend(&mut self, piece: &[u8]) {
        let room = PREVIEW_LEN.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&piece[..room.min(piece.len())]);
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// One frame as a trace line (without the connection prefix).
pub fn format_frame(direction: Direction, header: &FrameHeader, preview: &[u8]) -> String {
    let mut line = header_fields(direction, header);
    describe_payload(&mut line, header.opcode, preview, header.payload_len);
    line.trim_end().to_owned()
}

/// A frame of a compressed message (RFC 7692) as a trace line: `inflated_len` bytes came out of
/// its `header.payload_len` bytes on the wire, and `preview` is the start of them.
pub fn format_compressed_frame(
    direction: Direction,
    header: &FrameHeader,
    inflated_len: u64,
    preview: &[u8],
) -> String {
    let mut line = header_fields(direction, header);
    line.push_str(&format!("compressed, inflated len={inflated_len} "));
    describe_payload(&mut line, header.opcode, preview, inflated_len);
    line.trim_end().to_owned()
}

/// The header's fields, in fixed-width columns.
fn header_fields(direction: Direction, header: &FrameHeader) -> String {
    let form = match header.length_form {
        LengthForm::Bits7 => "(7-bit)",
        LengthForm::Bits16 => "(16-bit)",
        LengthForm::Bits64 => "(64-bit)",
    };
    format!(
        "{} {} RSV={:03b} {:<6} MASK={:<8} len={:<6} {form:<8} ",
        direction.arrow(),
        if header.fin { "FIN" } else { "..." },
        header.rsv,
        header.opcode.name(),
        header.mask.map_or_else(|| "-".to_owned(), hex),
        header.payload_len,
    )
}

/// The start of a payload of `len` bytes, as text, hex or a Close body; `...` when cut.
fn describe_payload(line: &mut String, opcode: OpCode, preview: &[u8], len: u64) {
    let complete = preview.len() as u64 == len;
    match opcode {
        OpCode::Close if complete => line.push_str(&describe_close(preview)),
        OpCode::Text | OpCode::Continuation => line.push_str(&quote(preview)),
        // Binary data, and pings that carry it (e.g. a counter), read better as hex.
        _ if !is_printable(preview) => line.push_str(&hex(preview)),
        _ => line.push_str(&quote(preview)),
    }
    if !complete && opcode != OpCode::Close {
        line.push_str("...");
    }
}

/// A Close payload: its code with the RFC's meaning, and its reason.
fn describe_close(payload: &[u8]) -> String {
    match parse_close_payload(payload) {
        Ok(None) => "no code (1005)".to_owned(),
        Ok(Some((code, reason))) => format!("code={code} reason={}", quote(reason.as_bytes())),
        Err(error) => match payload {
            [hi, lo, ..] => format!(
                "code={} INVALID: {error}",
                CloseCode::from_u16(u16::from_be_bytes([*hi, *lo]))
            ),
            _ => format!("INVALID: {error}"),
        },
    }
}

/// Why a connection failed, with the rule's section.
pub fn format_failure(error: &ProtocolError) -> String {
    format!(
        "!! fail: {} -> close {} ({} {})",
        error,
        error.close_code(),
        error.rfc(),
        error.rfc_section()
    )
}

/// UTF-8 without control characters other than line breaks and tabs.
fn is_printable(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes)
        .is_ok_and(|text| text.chars().all(|c| !c.is_control() || c == '\n' || c == '\t'))
}

/// Bytes as lower-case hex.
fn hex(bytes: impl AsRef<[u8]>) -> String {
    bytes.as_ref().iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// Text in double quotes with non-printable characters escaped; invalid UTF-8 as `\xNN`.
fn quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.extend(c.escape_default()),
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out.push('"');
    out
}

/// The start of a text, quoted and escaped like a frame's preview.
pub fn preview_text(text: &str) -> String {
    let end = text.len().min(PREVIEW_LEN);
    let mut cut = end;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut line = quote(&text.as_bytes()[..cut]);
    if cut < text.len() {
        line.push_str("...");
    }
    line
}

/// Prints one trace line for connection `id`.
pub fn line(id: u64, text: &str) {
    log::trace!(target: TARGET, "#{id} {text}");
}

/// Logging to stderr for a binary: `RUST_LOG`, else `default_filter`; with `trace`, the wire trace
/// too. Trace lines are printed bare, so that frames line up in a terminal.
pub fn init_logging(trace: bool, default_filter: &str) {
    use std::io::Write;

    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter));
    if trace {
        builder.filter_module(TARGET, log::LevelFilter::Trace);
    }
    builder.format(|out, record| {
        if record.target() == TARGET {
            writeln!(out, "{}", record.args())
        } else {
            writeln!(
                out,
                "[{} {:<5} {}] {}",
                out.timestamp_seconds(),
                record.level(),
                record.target(),
                record.args()
            )
        }
    });
    builder.init();
}

/// Prints an HTTP head (request or response), one line per header line.
pub fn http_head(id: u64, direction: Direction, head: &[u8]) {
    for header_line in String::from_utf8_lossy(head).lines().filter(|l| !l.is_empty()) {
        line(id, &format!("{} {}", direction.arrow(), header_line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(fin: bool, opcode: OpCode, mask: Option<[u8; 4]>, len: u64) -> FrameHeader {
        FrameHeader {
            fin,
            rsv: 0,
            opcode,
            mask,
            payload_len: len,
            length_form: LengthForm::minimal(len),
        }
    }

    #[test]
    fn text_frame_line_names_every_field() {
        let line = format_frame(
            Direction::In,
            &header(true, OpCode::Text, Some([0x37, 0xfa, 0x21, 0x3d]), 5),
            b"Hello",
        );
        assert_eq!(
            line,
            "<- FIN RSV=000 TEXT   MASK=37fa213d len=5      (7-bit)  \"Hello\""
        );
    }

    #[test]
    fn long_payloads_are_cut_and_marked() {
        let line = format_frame(
            Direction::Out,
            &header(false, OpCode::Binary, None, 70_000),
            &[0xab; 4],
        );
        assert!(
            line.starts_with("-> ... RSV=000 BINARY MASK=-        len=70000  (64-bit) abababab..."),
            "{line}"
        );
    }

    #[test]
    fn close_line_gives_code_meaning_and_reason() {
        let line = format_frame(
            Direction::In,
            &header(true, OpCode::Close, None, 5),
            b"\x03\xe8bye",
        );
        assert!(
            line.ends_with("code=1000 (normal closure) reason=\"bye\""),
            "{line}"
        );
        let bad = format_frame(Direction::In, &header(true, OpCode::Close, None, 2), b"\x03\xec");
        assert!(
            bad.ends_with("code=1004 (reserved) INVALID: close code 1004 may not be sent"),
            "{bad}"
        );
    }

    #[test]
    fn binary_pings_are_shown_as_hex_and_text_pings_as_text() {
        let binary = format_frame(Direction::In, &header(true, OpCode::Ping, None, 4), &[0, 0, 0, 1]);
        assert!(binary.ends_with(" 00000001"), "{binary}");
        let text = format_frame(Direction::In, &header(true, OpCode::Ping, None, 2), b"hi");
        assert!(text.ends_with(" \"hi\""), "{text}");
    }

    #[test]
    fn control_characters_and_invalid_utf8_are_escaped() {
        assert_eq!(quote(b"a\n\"b\"\xff"), "\"a\\n\\\"b\\\"\\xff\"");
    }

    #[test]
    fn failure_line_names_the_rule_and_section() {
        assert_eq!(
            format_failure(&ProtocolError::UnmaskedClientFrame),
            "!! fail: client frame is not masked -> close 1002 (protocol error) (RFC 6455 §5.1)"
        );
        assert_eq!(
            format_failure(&ProtocolError::CompressedControlFrame),
            "!! fail: compressed control frame -> close 1002 (protocol error) (RFC 7692 §6)"
        );
    }

    #[test]
    fn compressed_frame_line_shows_rsv1_both_lengths_and_the_inflated_text() {
        let mut compressed = header(true, OpCode::Text, Some([0x37, 0xfa, 0x21, 0x3d]), 7);
        compressed.rsv = 0b100;
        assert_eq!(
            format_compressed_frame(Direction::In, &compressed, 5, b"Hello"),
            "<- FIN RSV=100 TEXT   MASK=37fa213d len=7      (7-bit)  compressed, inflated len=5 \"Hello\""
        );
        let line = format_compressed_frame(
            Direction::Out,
            &header(true, OpCode::Binary, None, 30),
            4000,
            &[0; 3],
        );
        assert!(
            line.ends_with("compressed, inflated len=4000 000000..."),
            "{line}"
        );
    }

    #[test]
    fn preview_keeps_only_the_first_bytes() {
        let mut preview = Preview::new();
        preview.extend(&[1; 20]);
        preview.extend(&[2; 20]);
        assert_eq!(preview.bytes().len(), PREVIEW_LEN);
        assert_eq!(preview.bytes()[19..21], [1, 2]);
    }
}
