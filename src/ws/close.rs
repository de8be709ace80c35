//! Close codes and the Close frame payload, RFC 6455 §5.5.1, §7.4 and the IANA registry (§11.7).
//!
//! A Close frame's payload is either empty, or a 2-byte big-endian status code followed by a UTF-8
//! reason. [`parse_close_payload`] enforces what a receiver must check; [`encode_close_payload`]
//! builds what we send.

use std::fmt;

/// A status code from a Close frame (§7.4.1 and the IANA "WebSocket Close Code Number Registry").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    Normal,
    /// 1001: a server going down or a browser leaving the page.
    GoingAway,
    /// 1002: the peer broke the protocol.
    ProtocolError,
    /// 1003: a data type the endpoint cannot accept (e.g. binary on a text-only endpoint).
    UnsupportedData,
    /// 1005: no code was present. Reported locally, never sent.
    NoStatus,
    /// 1006: the connection dropped without a Close frame. Reported locally, never sent.
    Abnormal,
    /// 1007: message data inconsistent with its type (e.g. invalid UTF-8 in a text message).
    InvalidPayload,
    /// 1008: a message that violates the endpoint's policy.
    PolicyViolation,
    /// 1009: a message too big to process.
    MessageTooBig,
    /// 1010: (client only) an extension the server did not negotiate.
    MandatoryExtension,
    /// 1011: an unexpected condition on the server.
    InternalError,
    /// 1012: the service is restarting (IANA).
    ServiceRestart,
    /// 1013: try again later (IANA).
    TryAgainLater,
    /// 1014: bad gateway (IANA).
    BadGateway,
    /// 1015: TLS handshake failure. Reported locally, never sent.
    TlsHandshake,
    /// 3000-3999: registered with IANA by libraries and frameworks.
    Registered(u16),
    /// 4000-4999: private use by applications.
    Private(u16),
    /// Any other number: reserved or unassigned, never valid on the wire.
    Reserved(u16),
}

impl CloseCode {
    pub fn from_u16(code: u16) -> Self {
        match code {
            1000 => Self::Normal,
            1001 => Self::GoingAway,
            1002 => Self::ProtocolError,
            1003 => Self::UnsupportedData,
            1005 => Self::NoStatus,
            1006 => Self::Abnormal,
            1007 => Self::InvalidPayload,
            1008 => Self::PolicyViolation,
            1009 => Self::MessageTooBig,
            1010 => Self::MandatoryExtension,
            1011 => Self::InternalError,
            1012 => Self::ServiceRestart,
            1013 => Self::TryAgainLater,
            1014 => Self::BadGateway,
            1015 => Self::TlsHandshake,
            3000..=3999 => Self::Registered(code),
            4000..=4999 => Self::Private(code),
            other => Self::Reserved(other),
        }
    }

    pub fn as_u16(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::ProtocolError => 1002,
            Self::UnsupportedData => 1003,
            Self::NoStatus => 1005,
            Self::Abnormal => 1006,
            Self::InvalidPayload => 1007,
            Self::PolicyViolation => 1008,
            Self::MessageTooBig => 1009,
            Self::MandatoryExtension => 1010,
            Self::InternalError => 1011,
            Self::ServiceRestart => 1012,
            Self::TryAgainLater => 1013,
            Self::BadGateway => 1014,
            Self::TlsHandshake => 1015,
            Self::Registered(code) | Self::Private(code) | Self::Reserved(code) => code,
        }
    }

    /// §7.4: whether an endpoint may put this code in a Close frame. 1005, 1006 and 1015 are
    /// "designated for use in applications expecting a status code to indicate" a local condition
    /// and "MUST NOT be set as a status code in a Close control frame by an endpoint".
    pub fn is_sendable(self) -> bool {
        !matches!(
            self,
            Self::NoStatus | Self::Abnormal | Self::TlsHandshake | Self::Reserved(_)
        )
    }

    /// What the code means, in the words of §7.4.1 / IANA, for logs and traces.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::Normal => "normal closure",
            Self::GoingAway => "going away",
            Self::ProtocolError => "protocol error",
            Self::UnsupportedData => "unsupported data",
            Self::NoStatus => "no status received",
            Self::Abnormal => "abnormal closure",
            Self::InvalidPayload => "invalid frame payload data",
            Self::PolicyViolation => "policy violation",
            Self::MessageTooBig => "message too big",
            Self::MandatoryExtension => "mandatory extension",
            Self::InternalError => "internal error",
            Self::ServiceRestart => "service restart",
            Self::TryAgainLater => "try again later",
            Self::BadGateway => "bad gateway",
            Self::TlsHandshake => "TLS handshake",
            Self::Registered(_) => "registered (library/framework)",
            Self::Private(_) => "private use",
            Self::Reserved(_) => "reserved",
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.as_u16(), self.meaning())
    }
}

/// A Close payload that a receiver must reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseError {
    /// §5.5.1: a body, when present, starts with a 2-byte code, so 1 byte cannot be valid.
    OneBytePayload,
    /// §7.4: a code that may not appear on the wire.
    InvalidCode(u16),
    /// §5.5.1: the reason "is not guaranteed to be human readable" but must be UTF-8.
    ReasonNotUtf8,
}

impl fmt::Display for CloseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OneBytePayload => f.write_str("close payload of 1 byte"),
            Self::InvalidCode(code) => write!(f, "close code {code} may not be sent"),
            Self::ReasonNotUtf8 => f.write_str("close reason is not UTF-8"),
        }
    }
}

impl std::error::Error for CloseError {}

/// The content of a received Close frame: `None` when it had no body (reported as 1005).
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<(CloseCode, &str)>, CloseError> {
    match payload {
        [] => Ok(None),
        [_] => Err(CloseError::OneBytePayload),
        [hi, lo, reason @ ..] => {
            let code = CloseCode::from_u16(u16::from_be_bytes([*hi, *lo]));
            if !code.is_sendable() {
                return Err(CloseError::InvalidCode(code.as_u16()));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| CloseError::ReasonNotUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Room for the reason after the 2-byte code in a control frame.
pub const MAX_REASON_LEN: usize = crate::ws::frame::MAX_CONTROL_PAYLOAD - 2;

/// Builds a Close payload. The reason is cut at a character boundary to fit the 125-byte limit on
/// control frames, so what we send is always valid.
pub fn encode_close_payload(code: CloseCode, reason: &str) -> Vec<u8> {
    let reason = truncate_to_char_boundary(reason, MAX_REASON_LEN);
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.as_u16().to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    payload
}

fn truncate_to_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_code_validity_table() {
        // (code, may appear in a Close frame) per §7.4.1, §7.4.2 and the IANA registry.
        let table: &[(u16, bool)] = &[
            (0, false),
            (999, false),
            (1000, true),
            (1001, true),
            (1002, true),
            (1003, true),
            (1004, false),
            (1005, false),
            (1006, false),
            (1007, true),
            (1008, true),
            (1009, true),
            (1010, true),
            (1011, true),
            (1012, true),
            (1013, true),
            (1014, true),
            (1015, false),
            (1016, false),
            (1100, false),
            (2000, false),
            (2999, false),
            (3000, true),
            (3999, true),
            (4000, true),
            (4999, true),
            (5000, false),
            (65535, false),
        ];
        for &(code, valid) in table {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice(b"reason");
            let parsed = parse_close_payload(&payload);
            assert_eq!(parsed.is_ok(), valid, "code {code}");
            assert_eq!(CloseCode::from_u16(code).as_u16(), code);
        }
    }

    #[test]
    fn empty_payload_means_no_status() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
    }

    #[test]
    fn one_byte_payload_is_an_error() {
        assert_eq!(parse_close_payload(&[0x03]), Err(CloseError::OneBytePayload));
    }

    #[test]
    fn reason_must_be_utf8() {
        assert_eq!(
            parse_close_payload(&[0x03, 0xe8, 0xff]),
            Err(CloseError::ReasonNotUtf8)
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xe8, b'o', b'k']),
            Ok(Some((CloseCode::Normal, "ok")))
        );
    }

    #[test]
    fn encoded_reason_fits_a_control_frame_on_a_char_boundary() {
        let long = "é".repeat(100);
        let payload = encode_close_payload(CloseCode::GoingAway, &long);
        assert!(payload.len() <= crate::ws::frame::MAX_CONTROL_PAYLOAD);
        assert!(parse_close_payload(&payload).is_ok());
    }

    mod round_trip {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_sendable_code_and_reason_round_trip(
                code in prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999],
                reason in ".{0,200}",
            ) {
                let code = CloseCode::from_u16(code);
                let payload = encode_close_payload(code, &reason);
                let (parsed_code, parsed_reason) = parse_close_payload(&payload).unwrap().unwrap();
                prop_assert_eq!(parsed_code, code);
                prop_assert!(reason.starts_with(parsed_reason), "the reason is only ever cut short");
                prop_assert!(payload.len() <= crate::ws::frame::MAX_CONTROL_PAYLOAD);
            }

            #[test]
            fn any_payload_parses_or_is_rejected_without_panic(payload in proptest::collection::vec(any::<u8>(), 0..130)) {
                let _ = parse_close_payload(&payload);
            }
        }
    }
}
