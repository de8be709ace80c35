//! RESP2, the Redis serialization protocol, as a codec over byte slices.
//!
//! A client speaks to Redis in *frames* (the protocol specification, "RESP protocol description"):
//!
//! | first byte | frame | example |
//! |---|---|---|
//! | `+` | simple string | `+OK\r\n` |
//! | `-` | error | `-NOSCRIPT No matching script\r\n` |
//! | `:` | integer | `:42\r\n` |
//! | `$` | bulk string (length, bytes) or null (`$-1`) | `$5\r\nhello\r\n` |
//! | `*` | array (count, frames) or null (`*-1`) | `*2\r\n:1\r\n:2\r\n` |
//!
//! A command is always an array of bulk strings (the spec's "Sending commands to a Redis server"),
//! so every argument is binary-safe: a room name or a message text needs no escaping.
//!
//! Redis answers each command with exactly one frame, in the order the commands arrived, so a
//! client may write many commands before reading any answer (*pipelining*) and match the answers
//! to its queue of questions by position alone. A connection in subscribe mode is the exception:
//! it also receives frames nobody asked for (published messages), which the subscriber tells apart
//! by their first element.
//!
//! Decoding the frame grammar is the `redis-protocol` crate's job (RESP2 only; this client never
//! sends `HELLO 3`). This module adds what a sans-IO client needs around it: [`encode_command`]
//! appends one command to an output buffer, and [`Decoder`] holds the bytes of a frame that has
//! not fully arrived, so input may be cut at any byte.

use std::fmt;

use redis_protocol::resp2::decode;
pub use redis_protocol::resp2::types::OwnedFrame as Frame;

/// Most bytes one frame may occupy before it is complete. The largest answer this client asks for
/// is a page of [`crate::store::MAX_PAGE_LEN`] messages; at chat sizes that is a few MB at most.
/// Anything much bigger is not an answer to us (a wrong port, a server gone mad), and without a
/// bound a bulk header like `$9999999999` would make us buffer forever.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Appends `args` to `out` as one RESP command: an array of bulk strings,
/// `*<count>\r\n` then `$<length>\r\n<bytes>\r\n` for each argument.
///
/// Written by hand rather than through the crate's encoder: the grammar of a command is these two
/// lines, and this way encoding cannot fail, so a command queued is always a command sent (the
/// link counts on that to match replies by position).
pub fn encode_command<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    let header = |out: &mut Vec<u8>, kind: u8, count: usize| {
        out.push(kind);
        out.extend_from_slice(count.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    header(out, b'*', args.len());
    for arg in args {
        let arg = arg.as_ref();
        header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Why the bytes from the server are not RESP2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes break the frame grammar.
    Malformed(String),
    /// A frame grew past the decoder's limit ([`MAX_FRAME_BYTES`]) without ending.
    TooLarge { buffered: usize, limit: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(detail) => write!(f, "not a RESP2 frame: {detail}"),
            Self::TooLarge { buffered, limit } => write!(
                f,
                "a RESP2 frame exceeds {limit} bytes ({buffered} buffered and not complete)"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Turns the byte stream from one connection back into frames.
///
/// Bytes are appended with [`Decoder::feed`]; [`Decoder::next_frame`] returns the next complete
/// frame, or `None` until enough bytes have arrived. A frame cut anywhere is simply kept: the
/// decoder tries again from its first byte when more arrive (cheap next to the network: the
/// answers this client asks for are small, and a big one arrives in few reads).
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already returned as frames; dropped on the next `feed`.
    used: usize,
    /// Most bytes one frame may take ([`MAX_FRAME_BYTES`] but in tests).
    limit: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::with_limit(MAX_FRAME_BYTES)
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that refuses frames longer than `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            used: 0,
            limit,
        }
    }

    /// Adds bytes that arrived.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.used > 0 {
            self.buf.drain(..self.used);
            self.used = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if the bytes at hand hold one. After an error the stream cannot be
    /// resynchronised (RESP has no frame markers): the connection must be dropped.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let pending = &self.buf[self.used..];
        if pending.is_empty() {
            return Ok(None);
        }
        match decode::decode(pending) {
            Ok(Some((frame, consumed))) => {
                self.used += consumed;
                if self.used == self.buf.len() {
                    self.buf.clear();
                    self.used = 0;
                }
                Ok(Some(frame))
            }
            Ok(None) if pending.len() > self.limit => Err(DecodeError::TooLarge {
                buffered: pending.len(),
                limit: self.limit,
            }),
            Ok(None) => Ok(None),
            Err(error) => Err(DecodeError::Malformed(error.to_string())),
        }
    }

    /// Bytes held that are not yet a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.used
    }

    /// Forgets everything held (the connection they came from is gone).
    pub fn clear(&mut self) {
        self.buf = Vec::new();
        self.used = 0;
    }
}

/// The text of a bulk or simple string, if the frame is one and its bytes are UTF-8.
pub fn text(frame: &Frame) -> Option<&str> {
    match frame {
        Frame::BulkString(bytes) | Frame::SimpleString(bytes) => std::str::from_utf8(bytes).ok(),
        _ => None,
    }
}

/// The bytes of a bulk or simple string.
pub fn bytes(frame: &Frame) -> Option<&[u8]> {
    match frame {
        Frame::BulkString(bytes) | Frame::SimpleString(bytes) => Some(bytes),
        _ => None,
    }
}

/// A short description of a frame for error messages: its kind and (for strings) a prefix.
pub fn describe(frame: &Frame) -> String {
    /// Enough of a string to recognise it, not so much that a log line becomes a page.
    const SHOWN: usize = 40;
    match frame {
        Frame::SimpleString(bytes) | Frame::BulkString(bytes) => {
            let shown = &bytes[..bytes.len().min(SHOWN)];
            format!("string {:?}", String::from_utf8_lossy(shown))
        }
        Frame::Error(message) => format!("error {message:?}"),
        Frame::Integer(value) => format!("integer {value}"),
        Frame::Array(items) => format!("array of {}", items.len()),
        Frame::Null => "null".to_owned(),
    }
}

#[cfg(test)]
mod tests;
