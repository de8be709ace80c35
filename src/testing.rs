//! Helpers for tests and tools outside the crate (hidden from the docs).

/// A client frame with every header field under the caller's control — reserved bits and
/// opcodes included, which [`crate::ws::frame::FrameHeader`] cannot express — masked with `key`
/// by the byte-wise definition of RFC 6455 §5.3. For feeding malformed input to a server.
pub fn masked_frame(first_byte: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = vec![first_byte];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    crate::ws::mask::apply_mask_bytewise(&mut out[start..], key, 0);
    out
}

/// The first byte of a frame: FIN, the three RSV bits (RSV1 = 0b100) and the 4-bit opcode.
pub fn first_byte(fin: bool, rsv: u8, opcode: u8) -> u8 {
    (u8::from(fin) << 7) | ((rsv & 0b111) << 4) | (opcode & 0x0f)
}

/// The server's whole answer to a request, as the HTTP layer writes it: the `101 Switching
/// Protocols` when the handshake rules accept it, otherwise the refusal with its status.
pub fn handshake_answer(request: &[u8], policy: &crate::ws::handshake::Policy) -> Vec<u8> {
    use crate::http::{Conn, Event, Limits};
    use crate::ws::handshake::Request;

    let mut conn = Conn::new(Limits::default());
    conn.receive(request);
    if let Ok(Event::Head(head)) = conn.next_event() {
        let response = match Request::from_head(&head).validate(policy) {
            Ok(accepted) => accepted.response(),
            Err(error) => error.response(),
        };
        conn.respond(&response)
            .expect("a handshake answer is a valid response");
    }
    let mut bytes = Vec::new();
    conn.outbox()
        .write_to(&mut bytes)
        .expect("writing to a Vec cannot fail");
    bytes
}

/// The epoch the stores of tests report.
pub const TEST_EPOCH: &str = "00000000000000e1";

/// Resume tokens 1, 2, 3, ...: predictable, which only a test may be.
pub fn counting_tokens() -> crate::chat::TokenSource {
    let mut last = 0u128;
    Box::new(move || {
        last += 1;
        last
    })
}

/// A hub for tests: the test epoch, counting resume tokens, a clock starting now.
#[allow(clippy::disallowed_methods)] // An origin for the tests' hand-moved clock; nothing is timed.
pub fn hub(config: crate::hub::HubConfig) -> crate::hub::Hub {
    crate::hub::Hub::new(
        config,
        TEST_EPOCH.into(),
        counting_tokens(),
        std::time::Instant::now(),
    )
}
