//! Streaming UTF-8 validation, RFC 6455 §5.6 and §8.1.
//!
//! A text message must be valid UTF-8 as a whole, but it arrives in frames, and frames arrive in
//! reads: a multi-byte character may be cut anywhere. §8.1 asks an endpoint to fail the connection
//! as soon as it sees invalid data, so the validator is fed each piece as it arrives and reports the
//! first byte that can no longer begin or continue a valid sequence, even mid-frame (Autobahn cases
//! 6.4.x check exactly this).
//!
//! The bulk of each piece is checked by `std::str::from_utf8`. Its error tells apart "invalid here"
//! (`error_len() == Some(_)`) from "ended inside a sequence that could still be valid"
//! (`error_len() == None`), which is what makes streaming possible: the unfinished sequence (at most
//! three bytes) is kept and completed with the next piece.

/// The bytes seen so far are not a prefix of any valid UTF-8 string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl std::fmt::Display for InvalidUtf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid UTF-8")
    }
}

impl std::error::Error for InvalidUtf8 {}

/// Incremental validator: feed pieces with [`Utf8Validator::feed`], then call
/// [`Utf8Validator::finish`] at the end of the message.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// The start of a character cut off at the end of the previous piece.
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            let used = self.complete_pending(bytes)?;
            bytes = &bytes[used..];
            if self.pending_len > 0 {
                return Ok(());
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(error) if error.error_len().is_none() => {
                let tail = &bytes[error.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Ends the stream: a character still unfinished at this point is an error. The validator is
    /// reset either way, ready for the next message.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.pending_len == 0;
        *self = Self::default();
        if complete { Ok(()) } else { Err(InvalidUtf8) }
    }

    /// Whether the bytes fed so far end on a character boundary.
    pub fn is_complete(&self) -> bool {
        self.pending_len == 0
    }

    /// Moves bytes from the front of `bytes` into the pending character until it is complete (or
    /// `bytes` runs out), checking the prefix at every step. Returns how many bytes it used.
    fn complete_pending(&mut self, bytes: &[u8]) -> Result<usize, InvalidUtf8> {
        let len = usize::from(self.pending_len);
        let wanted = sequence_len(self.pending[0]);
        let used = (wanted - len).min(bytes.len());
        self.pending[len..len + used].copy_from_slice(&bytes[..used]);
        let filled = len + used;
        match std::str::from_utf8(&self.pending[..filled]) {
            Ok(_) => self.pending_len = 0,
            Err(error) if error.error_len().is_none() => self.pending_len = filled as u8,
            Err(_) => return Err(InvalidUtf8),
        }
        Ok(used)
    }
}

/// Length of the sequence a lead byte announces. Only called on bytes `from_utf8` accepted as the
/// start of an unfinished sequence, which are always multi-byte leads.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` split into pieces of `piece` bytes and reports the outcome and, on error, the
    /// offset of the piece that failed.
    fn validate_in_pieces(bytes: &[u8], piece: usize) -> Result<(), usize> {
        let mut validator = Utf8Validator::new();
        for (i, chunk) in bytes.chunks(piece.max(1)).enumerate() {
            validator.feed(chunk).map_err(|_| i * piece)?;
        }
        validator.finish().map_err(|_| bytes.len())
    }

    #[test]
    fn agrees_with_std_for_every_split() {
        let samples: &[&[u8]] = &[
            b"",
            b"Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!",
            "κόσμε 🌍 𝄞".as_bytes(),
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"\xe0\x80\xaf",
            b"\xed\xa0\x80",
            b"\xf0\x9f\x98",
            b"abc\xff",
            b"\x80",
        ];
        for sample in samples {
            let expected = std::str::from_utf8(sample).is_ok();
            for piece in 1..=sample.len().max(1) {
                assert_eq!(
                    validate_in_pieces(sample, piece).is_ok(),
                    expected,
                    "{sample:x?} in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn fails_at_the_first_invalid_byte_before_the_stream_ends() {
        // Autobahn 6.4.3: U+10FFFF + 1 is detected at its second byte (0x90 after 0xf4).
        let mut validator = Utf8Validator::new();
        assert_eq!(validator.feed("κόσμε".as_bytes()), Ok(()));
        assert_eq!(validator.feed(b"\xf4"), Ok(()));
        assert_eq!(validator.feed(b"\x90"), Err(InvalidUtf8));
    }

    #[test]
    fn surrogate_half_fails_at_its_second_byte() {
        let mut validator = Utf8Validator::new();
        assert_eq!(validator.feed(b"\xed"), Ok(()));
        assert_eq!(validator.feed(b"\xa0"), Err(InvalidUtf8));
    }

    #[test]
    fn truncated_character_fails_only_at_finish() {
        let mut validator = Utf8Validator::new();
        assert_eq!(validator.feed(b"\xf0\x9f\x98"), Ok(()));
        assert!(!validator.is_complete());
        assert_eq!(validator.finish(), Err(InvalidUtf8));
        assert!(validator.is_complete(), "finish resets for the next message");
    }
}
