//! The frame header, RFC 6455 §5.2.
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
//! [`FrameHeader`] is the parsed value; [`FrameHeader::parse`] reads it from the front of a byte
//! slice (answering "need more bytes" when the header is cut short, so a caller can resume) and
//! [`FrameHeader::encode`] writes it back. The rules that are about the wire format alone are checked
//! here; the rules that depend on the connection (masking direction, extensions, fragmentation
//! state, limits) belong to [`crate::ws::protocol`].

use std::fmt;

/// Bit 7 of byte 0: this is the final fragment of a message.
const FIN: u8 = 0b1000_0000;
/// Bits 6..4 of byte 0: RSV1, RSV2, RSV3, reserved for extensions.
const RSV: u8 = 0b0111_0000;
/// Bits 3..0 of byte 0.
const OPCODE: u8 = 0b0000_1111;
/// Bit 7 of byte 1: a masking key follows the length.
const MASK: u8 = 0b1000_0000;
/// Bits 6..0 of byte 1: the length, or a marker for a longer form.
const LEN7: u8 = 0b0111_1111;
/// 7-bit length value announcing a 16-bit extended length.
const LEN_IS_16_BIT: u8 = 126;
/// 7-bit length value announcing a 64-bit extended length.
const LEN_IS_64_BIT: u8 = 127;
/// §5.5: "All control frames MUST have a payload length of 125 bytes or less".
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// The longest header: 2 fixed bytes, 8 bytes of length, 4 bytes of masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// Frame opcodes, RFC 6455 §5.2 and §11.8. The reserved values 3-7 and 0xB-0xF have no variant: a
/// frame carrying one is rejected while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    /// Reads the 4-bit opcode field.
    pub fn from_bits(bits: u8) -> Result<Self, FrameError> {
        Ok(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            other => return Err(FrameError::ReservedOpcode(other)),
        })
    }

    /// §5.5: opcodes with the most significant bit set are control frames.
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }

    /// The opcode's name as the RFC writes it, for logs and traces.
    pub fn name(self) -> &'static str {
        match self {
            Self::Continuation => "CONT",
            Self::Text => "TEXT",
            Self::Binary => "BINARY",
            Self::Close => "CLOSE",
            Self::Ping => "PING",
            Self::Pong => "PONG",
        }
    }
}

/// A frame header that breaks a wire-format rule of §5.2 or §5.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// §5.2: "If an unknown opcode is received, the receiving endpoint MUST _Fail the WebSocket
    /// Connection_."
    ReservedOpcode(u8),
    /// §5.2: "the most significant bit MUST be 0" in the 64-bit length.
    LengthHighBitSet,
    /// §5.5: control frames carry at most 125 bytes.
    ControlFrameTooLong(u64),
    /// §5.5: "Control frames themselves MUST NOT be fragmented."
    FragmentedControlFrame,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            Self::LengthHighBitSet => f.write_str("64-bit payload length has its high bit set"),
            Self::ControlFrameTooLong(len) => write!(f, "control frame of {len} bytes (max 125)"),
            Self::FragmentedControlFrame => f.write_str("fragmented control frame"),
        }
    }
}

impl std::error::Error for FrameError {}

/// How the payload length was written on the wire (§5.2 "Payload length").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthForm {
    /// 0-125, in the 7-bit field.
    Bits7,
    /// 126 followed by a 16-bit length.
    Bits16,
    /// 127 followed by a 64-bit length.
    Bits64,
}

impl LengthForm {
    /// The form a sender must use for `len`: §5.2 asks for "the minimal number of bytes".
    pub fn minimal(len: u64) -> Self {
        match len {
            0..=125 => Self::Bits7,
            126..=0xFFFF => Self::Bits16,
            _ => Self::Bits64,
        }
    }

    /// Bytes of extended length that follow the two fixed header bytes.
    fn extra_bytes(self) -> usize {
        match self {
            Self::Bits7 => 0,
            Self::Bits16 => 2,
            Self::Bits64 => 8,
        }
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits (RSV1 = 0b100).
    pub rsv: u8,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// How the length was encoded; [`FrameHeader::encode`] always writes the minimal form.
    pub length_form: LengthForm,
}

impl FrameHeader {
    /// A header for sending: minimal length form, no reserved bits.
    pub fn new(fin: bool, opcode: OpCode, mask: Option<[u8; 4]>, payload_len: usize) -> Self {
        let payload_len = payload_len as u64;
        Self {
            fin,
            rsv: 0,
            opcode,
            mask,
            payload_len,
            length_form: LengthForm::minimal(payload_len),
        }
    }

    /// Parses a header from the front of `buf`. Returns `Ok(None)` when `buf` ends before the
    /// header does, or the header and the number of bytes it occupied.
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, usize)>, FrameError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let fin = b0 & FIN != 0;
        let opcode = OpCode::from_bits(b0 & OPCODE)?;
        let length_form = match b1 & LEN7 {
            LEN_IS_16_BIT => LengthForm::Bits16,
            LEN_IS_64_BIT => LengthForm::Bits64,
            _ => LengthForm::Bits7,
        };
        if opcode.is_control() {
            // Checked before the extended length is even read: these are decided by byte 0 and 1.
            if !fin {
                return Err(FrameError::FragmentedControlFrame);
            }
            if length_form != LengthForm::Bits7 || usize::from(b1 & LEN7) > MAX_CONTROL_PAYLOAD {
                return Err(FrameError::ControlFrameTooLong(u64::from(b1 & LEN7)));
            }
        }
        let masked = b1 & MASK != 0;
        let len_end = 2 + length_form.extra_bytes();
        let header_len = len_end + if masked { 4 } else { 0 };
        if buf.len() < header_len {
            return Ok(None);
        }
        let payload_len = match length_form {
            LengthForm::Bits7 => u64::from(b1 & LEN7),
            LengthForm::Bits16 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
            LengthForm::Bits64 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&buf[2..10]);
                let len = u64::from_be_bytes(bytes);
                if len >> 63 != 0 {
                    return Err(FrameError::LengthHighBitSet);
                }
                len
            }
        };
        let mask = masked.then(|| [buf[len_end], buf[len_end + 1], buf[len_end + 2], buf[len_end + 3]]);
        let header = Self {
            fin,
            rsv: (b0 & RSV) >> 4,
            opcode,
            mask,
            payload_len,
            length_form,
        };
        Ok(Some((header, header_len)))
    }

    /// Number of bytes [`FrameHeader::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        2 + LengthForm::minimal(self.payload_len).extra_bytes() + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Appends the header in its minimal form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut b0 = (self.rsv << 4) & RSV | self.opcode as u8;
        if self.fin {
            b0 |= FIN;
        }
        let mask_bit = if self.mask.is_some() { MASK } else { 0 };
        match LengthForm::minimal(self.payload_len) {
            LengthForm::Bits7 => out.extend_from_slice(&[b0, mask_bit | self.payload_len as u8]),
            LengthForm::Bits16 => {
                out.extend_from_slice(&[b0, mask_bit | LEN_IS_16_BIT]);
                out.extend_from_slice(&(self.payload_len as u16).to_be_bytes());
            }
            LengthForm::Bits64 => {
                out.extend_from_slice(&[b0, mask_bit | LEN_IS_64_BIT]);
                out.extend_from_slice(&self.payload_len.to_be_bytes());
            }
        }
        if let Some(key) = self.mask {
            out.extend_from_slice(&key);
        }
    }
}

/// Appends a whole frame (header and payload, masked when `mask` is given) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, fin: bool, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) {
    let header = FrameHeader::new(fin, opcode, mask, payload.len());
    out.reserve(header.encoded_len() + payload.len());
    header.encode(out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        crate::ws::mask::apply_mask(&mut out[start..], key, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> Result<Option<(FrameHeader, usize)>, FrameError> {
        FrameHeader::parse(bytes)
    }

    #[test]
    fn opcodes_table() {
        let table = [
            (0x0, Ok(OpCode::Continuation)),
            (0x1, Ok(OpCode::Text)),
            (0x2, Ok(OpCode::Binary)),
            (0x8, Ok(OpCode::Close)),
            (0x9, Ok(OpCode::Ping)),
            (0xA, Ok(OpCode::Pong)),
        ];
        for (bits, expected) in table {
            assert_eq!(OpCode::from_bits(bits), expected);
        }
        for reserved in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                OpCode::from_bits(reserved),
                Err(FrameError::ReservedOpcode(reserved))
            );
        }
    }

    #[test]
    fn rfc_5_7_single_frame_unmasked_text() {
        let bytes = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (header, len) = parse_all(&bytes).unwrap().unwrap();
        assert_eq!(len, 2);
        assert!(header.fin);
        assert_eq!(header.opcode, OpCode::Text);
        assert_eq!(header.mask, None);
        assert_eq!(header.payload_len, 5);
    }

    #[test]
    fn rfc_5_7_single_frame_masked_text() {
        let bytes = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let (header, len) = parse_all(&bytes).unwrap().unwrap();
        assert_eq!(len, 6);
        assert_eq!(header.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(header.payload_len, 5);
    }

    #[test]
    fn rfc_5_7_fragmented_unmasked_text() {
        let first = parse_all(&[0x01, 0x03, 0x48, 0x65, 0x6c]).unwrap().unwrap().0;
        assert!(!first.fin);
        assert_eq!(first.opcode, OpCode::Text);
        let second = parse_all(&[0x80, 0x02, 0x6c, 0x6f]).unwrap().unwrap().0;
        assert!(second.fin);
        assert_eq!(second.opcode, OpCode::Continuation);
    }

    #[test]
    fn rfc_5_7_sixteen_and_sixty_four_bit_lengths() {
        let (header, len) = parse_all(&[0x82, 0x7E, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!(
            (header.payload_len, len, header.length_form),
            (256, 4, LengthForm::Bits16)
        );
        let bytes = [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00];
        let (header, len) = parse_all(&bytes).unwrap().unwrap();
        assert_eq!(
            (header.payload_len, len, header.length_form),
            (65536, 10, LengthForm::Bits64)
        );
    }

    #[test]
    fn sixty_four_bit_length_with_high_bit_set_is_an_error() {
        let bytes = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_all(&bytes), Err(FrameError::LengthHighBitSet));
    }

    #[test]
    fn control_frame_over_125_bytes_is_an_error() {
        assert_eq!(
            parse_all(&[0x89, 0x7E]),
            Err(FrameError::ControlFrameTooLong(126))
        );
        let (header, _) = parse_all(&[0x89, 0x7D]).unwrap().unwrap();
        assert_eq!(header.payload_len, 125, "125 bytes is allowed");
    }

    #[test]
    fn fragmented_control_frame_is_an_error() {
        assert_eq!(parse_all(&[0x09, 0x00]), Err(FrameError::FragmentedControlFrame));
    }

    #[test]
    fn reserved_bits_are_reported_not_rejected() {
        let (header, _) = parse_all(&[0xF1, 0x00]).unwrap().unwrap();
        assert_eq!(header.rsv, 0b111);
    }

    #[test]
    fn a_header_cut_anywhere_asks_for_more() {
        let mut frame = Vec::new();
        encode_frame(&mut frame, true, OpCode::Binary, &[7; 70000], Some([1, 2, 3, 4]));
        for cut in 0..14 {
            assert_eq!(parse_all(&frame[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse_all(&frame).unwrap().unwrap().1, 14);
    }

    #[test]
    fn encode_uses_the_minimal_length_form() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = Vec::new();
            FrameHeader::new(true, OpCode::Binary, None, len).encode(&mut out);
            assert_eq!(out.len(), header_len, "payload of {len}");
            let (parsed, used) = parse_all(&out).unwrap().unwrap();
            assert_eq!((parsed.payload_len, used), (len as u64, header_len));
        }
    }

    #[test]
    fn encode_frame_masks_the_payload() {
        let mut out = Vec::new();
        encode_frame(
            &mut out,
            true,
            OpCode::Text,
            b"Hello",
            Some([0x37, 0xfa, 0x21, 0x3d]),
        );
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    mod round_trip {
        use super::*;
        use proptest::prelude::*;

        fn opcode() -> impl Strategy<Value = OpCode> {
            prop_oneof![
                Just(OpCode::Continuation),
                Just(OpCode::Text),
                Just(OpCode::Binary),
                Just(OpCode::Close),
                Just(OpCode::Ping),
                Just(OpCode::Pong),
            ]
        }

        proptest! {
            #[test]
            fn any_header_round_trips(
                fin in any::<bool>(),
                rsv in 0u8..8,
                opcode in opcode(),
                mask in proptest::option::of(any::<[u8; 4]>()),
                payload_len in prop_oneof![0u64..=125, 126u64..=0xFFFF, 0x10000u64..(1 << 63)],
            ) {
                // Control frames are final and short by definition (§5.5).
                let (fin, payload_len) = if opcode.is_control() { (true, payload_len % 126) } else { (fin, payload_len) };
                let header = FrameHeader { fin, rsv, opcode, mask, payload_len, length_form: LengthForm::minimal(payload_len) };
                let mut bytes = Vec::new();
                header.encode(&mut bytes);
                prop_assert_eq!(bytes.len(), header.encoded_len());
                prop_assert_eq!(FrameHeader::parse(&bytes), Ok(Some((header, bytes.len()))));
            }

            #[test]
            fn any_frame_round_trips_with_its_payload(
                opcode in prop_oneof![Just(OpCode::Text), Just(OpCode::Binary)],
                payload in proptest::collection::vec(any::<u8>(), 0..1_000),
                mask in proptest::option::of(any::<[u8; 4]>()),
            ) {
                let mut bytes = Vec::new();
                encode_frame(&mut bytes, true, opcode, &payload, mask);
                let (header, len) = FrameHeader::parse(&bytes).unwrap().unwrap();
                prop_assert_eq!(header.payload_len as usize, payload.len());
                let mut body = bytes[len..].to_vec();
                if let Some(key) = header.mask {
                    crate::ws::mask::apply_mask(&mut body, key, 0);
                }
                prop_assert_eq!(body, payload);
            }
        }
    }
}
