//! The chunked transfer coding, RFC 9112 §7.1, decoded strictly and incrementally.
//!
//! ```text
//! chunked-body = *chunk last-chunk trailer-section CRLF
//! chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size   = 1*HEXDIG
//! last-chunk   = 1*("0") [ chunk-ext ] CRLF
//! chunk-ext    = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! ```
//!
//! A chunked body is where two HTTP parsers most often disagree about where a message ends, and a
//! disagreement between a proxy and a server is a smuggled request. So the decoder accepts the
//! grammar and nothing near it: a size is hex digits only and may not overflow, a line ends with
//! CRLF and never a bare LF, chunk data is followed by exactly CRLF. Everything it holds between
//! reads is bounded: the size line by [`MAX_SIZE_LINE`], the sum of the sizes by the body limit
//! (checked digit by digit, before any of an oversized chunk is read), the trailer section by the
//! head limits.
//!
//! The decoder copies nothing: [`ChunkedDecoder::decode`] says how many input bytes it used and
//! where in them the next piece of data is. Bytes it did not use (a trailer section not yet
//! complete) must be offered again, followed by whatever arrived since.

use std::ops::Range;

use super::Error;
use super::conn::Limits;
use super::head::{self, SectionScan};

/// Longest chunk-size line, extensions included. A size needs at most 16 hex digits; RFC 9112
/// defines no extension and §7.1.1 asks servers to bound the ones clients invent. 1 KiB is far more
/// than any client sends and little to hold.
pub const MAX_SIZE_LINE: usize = 1024;

/// Where the decoder is in the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the framing around the data, read a byte at a time.
    Framing(Framing),
    /// Inside chunk data.
    Data { remaining: u64 },
    /// After the last chunk: the trailer section and the final empty line.
    Trailers,
    /// The body is complete.
    Done,
}

/// The byte-at-a-time parts of the grammar: size lines, and the CRLF after chunk data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Reading the hex digits of a chunk size; `None` before the first.
    Size(Option<u64>),
    /// Whitespace after the size, which may only lead to `;` (the BWS of `chunk-ext`).
    AfterSize(u64),
    /// Inside chunk extensions, up to the CR. They are skipped (§7.1.1: a recipient "MUST ignore
    /// unrecognized chunk extensions").
    Extension(u64),
    /// The CR of a size line was read; the LF must follow.
    SizeLineFeed(u64),
    /// After chunk data: the CR, then the LF.
    DataCr,
    DataLf,
}

impl Framing {
    /// Whether the byte belongs to a size line, whose length is bounded.
    fn in_size_line(self) -> bool {
        matches!(self, Self::Size(_) | Self::AfterSize(_) | Self::Extension(_))
    }
}

/// What one call to [`ChunkedDecoder::decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes: this range of the input.
    Data(Range<usize>),
    /// The body is complete (trailer section included).
    End,
    /// Every input byte offered was used or must be offered again with more.
    NeedMore,
}

/// Decodes one chunked body. See the module documentation.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    limits: Limits,
    /// The sum of the chunk sizes announced so far, never more than `limits.max_body_bytes`.
    announced: u64,
    /// Bytes of the current size line, before its CR.
    line_len: usize,
    scan: SectionScan,
}

impl ChunkedDecoder {
    /// A decoder for one body; the body and trailer limits come from `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            state: State::Framing(Framing::Size(None)),
            limits,
            announced: 0,
            line_len: 0,
            scan: SectionScan::default(),
        }
    }

    /// Decodes from the front of `input`. Returns the number of bytes used and what they gave: at
    /// most one piece of data per call, so that the caller can hand it on before the next.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Decoded), Error> {
        let mut used = 0;
        loop {
            let rest = input.get(used..).unwrap_or_default();
            match self.state {
                State::Done => return Ok((used, Decoded::End)),
                State::Data { .. } if rest.is_empty() => return Ok((used, Decoded::NeedMore)),
                State::Data { remaining } => {
                    let len =
                        usize::try_from(remaining).map_or(rest.len(), |remaining| remaining.min(rest.len()));
                    let left = remaining - len as u64;
                    self.state = if left == 0 {
                        State::Framing(Framing::DataCr)
                    } else {
                        State::Data { remaining: left }
                    };
                    return Ok((used + len, Decoded::Data(used..used + len)));
                }
                State::Trailers => {
                    if !self.scan.worth_parsing(rest, self.limits.max_head_bytes) {
                        return Ok((used, Decoded::NeedMore));
                    }
                    return match head::parse_trailers(rest, &self.limits)? {
                        Some(len) => {
                            self.state = State::Done;
                            Ok((used + len, Decoded::End))
                        }
                        None => Ok((used, Decoded::NeedMore)),
                    };
                }
                State::Framing(framing) => {
                    let Some(&byte) = rest.first() else {
                        return Ok((used, Decoded::NeedMore));
                    };
                    self.state = self.step(framing, byte)?;
                    used += 1;
                }
            }
        }
    }

    /// One byte of the framing around the data.
    fn step(&mut self, framing: Framing, byte: u8) -> Result<State, Error> {
        if framing.in_size_line() {
            self.line_len += 1;
            if self.line_len > MAX_SIZE_LINE {
                return Err(Error::ChunkLineTooLong);
            }
        }
        let next = match framing {
            Framing::Size(size) => match (hex_digit(byte), size) {
                (Some(digit), _) => Framing::Size(Some(self.grow(size.unwrap_or(0), digit)?)),
                // RFC 9112 §7.1: chunk-size = 1*HEXDIG.
                (None, None) => return Err(Error::ChunkSize),
                (None, Some(size)) => after_size(byte, size)?,
            },
            // Whitespace may only lead to an extension: `5 \r\n` is not in the grammar.
            Framing::AfterSize(size) => match byte {
                b' ' | b'\t' => Framing::AfterSize(size),
                b';' => Framing::Extension(size),
                _ => return Err(Error::ChunkSize),
            },
            Framing::Extension(size) => match byte {
                b'\r' => Framing::SizeLineFeed(size),
                b'\n' => return Err(Error::ChunkLineEnding),
                b'\t' => Framing::Extension(size),
                _ if byte.is_ascii_control() => return Err(Error::ChunkExtension),
                _ => Framing::Extension(size),
            },
            // RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF ...
            Framing::SizeLineFeed(size) if byte == b'\n' => {
                self.announced += size;
                self.line_len = 0;
                // RFC 9112 §7.1: last-chunk = 1*("0") [ chunk-ext ] CRLF, then the trailers.
                return Ok(if size == 0 {
                    State::Trailers
                } else {
                    State::Data { remaining: size }
                });
            }
            Framing::SizeLineFeed(_) => return Err(Error::ChunkLineEnding),
            // RFC 9112 §7.1: ... chunk-data CRLF.
            Framing::DataCr if byte == b'\r' => Framing::DataLf,
            Framing::DataLf if byte == b'\n' => Framing::Size(None),
            Framing::DataCr | Framing::DataLf => return Err(Error::ChunkDataEnding),
        };
        Ok(State::Framing(next))
    }

    /// The size so far with one more hex digit appended, refused as soon as the body it announces
    /// would pass the limit. RFC 9112 §7.1: recipients "MUST anticipate potentially large
    /// hexadecimal numerals and prevent parsing errors due to integer conversion overflows".
    fn grow(&self, size: u64, digit: u8) -> Result<u64, Error> {
        let limit = u64::try_from(self.limits.max_body_bytes).unwrap_or(u64::MAX);
        let allowed = limit.saturating_sub(self.announced);
        size.checked_mul(16)
            .and_then(|size| size.checked_add(u64::from(digit)))
            .filter(|&size| size <= allowed)
            .ok_or(Error::BodyTooLarge {
                limit: self.limits.max_body_bytes,
            })
    }
}

/// The first byte after the size digits: whitespace before an extension, the extension's `;`, or
/// the line's CR.
fn after_size(byte: u8, size: u64) -> Result<Framing, Error> {
    match byte {
        b' ' | b'\t' => Ok(Framing::AfterSize(size)),
        b';' => Ok(Framing::Extension(size)),
        b'\r' => Ok(Framing::SizeLineFeed(size)),
        b'\n' => Err(Error::ChunkLineEnding),
        _ => Err(Error::ChunkSize),
    }
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_head_bytes: 64,
        max_headers: 2,
        max_body_bytes: 32,
    };

    /// What decoding `input` produced: the data, and how the body ended: `Ok(Some(used))` complete
    /// after `used` bytes, `Ok(None)` still incomplete when the input ran out.
    #[derive(Debug, PartialEq, Eq)]
    struct Outcome {
        data: Vec<u8>,
        end: Result<Option<usize>, Error>,
    }

    /// Decodes `input` offered in pieces cut at `cuts`, as a connection would: unused bytes are
    /// offered again with the next piece.
    fn decode_in_pieces(input: &[u8], cuts: &[usize], limits: Limits) -> Outcome {
        let mut decoder = ChunkedDecoder::new(limits);
        let mut data = Vec::new();
        let mut used = 0;
        for arrived in cuts.iter().copied().chain([input.len()]) {
            loop {
                let offered = &input[used..arrived];
                let (n, decoded) = match decoder.decode(offered) {
                    Ok(step) => step,
                    Err(error) => {
                        return Outcome {
                            data,
                            end: Err(error),
                        };
                    }
                };
                if let Decoded::Data(range) = &decoded {
                    data.extend_from_slice(&offered[range.clone()]);
                }
                used += n;
                match decoded {
                    Decoded::Data(_) => {}
                    Decoded::End => {
                        return Outcome {
                            data,
                            end: Ok(Some(used)),
                        };
                    }
                    Decoded::NeedMore => break,
                }
            }
        }
        Outcome { data, end: Ok(None) }
    }

    /// Decodes whole, cut at every byte, and a byte at a time; all must agree.
    fn decode(input: &[u8], limits: Limits) -> Outcome {
        let whole = decode_in_pieces(input, &[], limits);
        for cut in 0..input.len() {
            assert_eq!(decode_in_pieces(input, &[cut], limits), whole, "cut at {cut}");
        }
        let every_byte: Vec<usize> = (0..input.len()).collect();
        assert_eq!(
            decode_in_pieces(input, &every_byte, limits),
            whole,
            "byte at a time"
        );
        whole
    }

    #[test]
    fn chunks_extensions_and_trailers_decode_to_the_data() {
        let input = b"5;name=value;quoted=\"a b\"\r\nhello\r\nA \t;x\r\n, world!!!\r\n\
                      000\r\nExpires: never\r\nX-Sum: 1\r\n\r\nNEXT";
        let outcome = decode(input, LIMITS);
        assert_eq!(outcome.data, b"hello, world!!!");
        assert_eq!(
            outcome.end,
            Ok(Some(input.len() - 4)),
            "bytes after the body are not used"
        );
    }

    #[test]
    fn empty_body_is_the_last_chunk_alone() {
        let outcome = decode(b"0\r\n\r\n", LIMITS);
        assert_eq!((outcome.data.len(), outcome.end), (0, Ok(Some(5))));
    }

    #[test]
    fn hex_digits_of_either_case() {
        let body = [b'x'; 26];
        let mut input = b"1a\r\n".to_vec();
        input.extend_from_slice(&body);
        input.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(decode(&input, LIMITS).data, body);
        input[1] = b'A';
        assert_eq!(decode(&input, LIMITS).data, body);
    }

    #[test]
    fn broken_framing_table() {
        let long_line = format!("1;{}\r\n", "x".repeat(MAX_SIZE_LINE));
        let table: &[(&[u8], Error)] = &[
            (b"\r\n", Error::ChunkSize),
            (b"x\r\n", Error::ChunkSize),
            (b"-5\r\n", Error::ChunkSize),
            (b"0x5\r\n", Error::ChunkSize),
            (b"5 \r\n", Error::ChunkSize),
            (b"5\n", Error::ChunkLineEnding),
            (b"5\rX", Error::ChunkLineEnding),
            (b"5;a\nhello", Error::ChunkLineEnding),
            (b"5;a\x00\r\n", Error::ChunkExtension),
            (b"5\r\nhelloX", Error::ChunkDataEnding),
            (b"5\r\nhello\n", Error::ChunkDataEnding),
            (b"5\r\nhello\rX", Error::ChunkDataEnding),
            (long_line.as_bytes(), Error::ChunkLineTooLong),
            (
                b"0\r\nNo Colon\r\n\r\n",
                Error::MalformedTrailers(httparse::Error::HeaderName),
            ),
            (
                b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
                Error::TooManyTrailers { limit: 2 },
            ),
        ];
        for (input, error) in table {
            let outcome = decode(input, LIMITS);
            assert_eq!(
                outcome.end.as_ref(),
                Err(error),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn trailer_section_is_bounded_by_the_head_limit() {
        let input = format!("0\r\nX: {}\r\n\r\n", "a".repeat(LIMITS.max_head_bytes));
        let outcome = decode(input.as_bytes(), LIMITS);
        assert_eq!(outcome.end, Err(Error::TrailersTooLarge { limit: 64 }));
        assert_eq!(Error::TrailersTooLarge { limit: 64 }.status().code(), 431);
    }

    #[test]
    fn size_over_the_body_limit_is_413_before_any_of_its_data() {
        // The limit is 32 = 0x20: a chunk of 0x21 is refused on its second digit.
        let outcome = decode(b"21\r\nxxxxxxxx", LIMITS);
        assert_eq!(outcome.end, Err(Error::BodyTooLarge { limit: 32 }));
        assert_eq!(outcome.data.len(), 0);
        let exact = format!("20\r\n{}\r\n0\r\n\r\n", "x".repeat(32));
        assert_eq!(decode(exact.as_bytes(), LIMITS).end, Ok(Some(exact.len())));
    }

    #[test]
    fn sizes_adding_up_past_the_limit_are_413() {
        let input = format!("10\r\n{0}\r\n10\r\n{0}\r\n1\r\nx\r\n", "x".repeat(16));
        let outcome = decode(input.as_bytes(), LIMITS);
        assert_eq!(outcome.end, Err(Error::BodyTooLarge { limit: 32 }));
        assert_eq!(outcome.data.len(), 32);
    }

    #[test]
    fn a_size_too_large_for_any_integer_does_not_overflow() {
        let unlimited = Limits {
            max_body_bytes: usize::MAX,
            ..LIMITS
        };
        let outcome = decode(b"fffffffffffffffff\r\n", unlimited);
        assert_eq!(outcome.end, Err(Error::BodyTooLarge { limit: usize::MAX }));
        let outcome = decode(
            b"0000000000000000000000000000000000000001\r\nx\r\n0\r\n\r\n",
            unlimited,
        );
        assert_eq!(outcome.data, b"x", "leading zeros are fine");
        assert!(matches!(outcome.end, Ok(Some(_))));
    }
}
