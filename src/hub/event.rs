//! One outgoing chat event, transport-neutral.
//!
//! The chat serializes an event to JSON once. Each transport that carries it to a client needs its
//! own encoding of those bytes: a WebSocket text frame, or its permessage-deflate form (one per
//! server window size); Server-Sent Events lines and long-poll arrays are coming. An [`Event`]
//! makes each encoding the first time a recipient needs it and keeps it, so a broadcast to a
//! thousand clients costs one serialization, at most one encoding per transport (and one
//! compression per window size), and a thousand reference-counted queue slots.

use std::cell::OnceCell;
use std::rc::Rc;

use crate::outbox::SharedBytes;
use crate::ws::frame::MAX_HEADER_LEN;
use crate::ws::protocol::{Message, SharedMessage};

/// A serialized chat event and its per-transport encodings, made lazily and shared.
#[derive(Debug)]
pub struct Event {
    websocket: SharedMessage,
    sse: OnceCell<SharedBytes>,
}

impl Event {
    pub fn new(json: &str) -> Rc<Self> {
        Rc::new(Self {
            websocket: SharedMessage::new(Message::Text(json)),
            sse: OnceCell::new(),
        })
    }

    /// The event as the chat serialized it.
    pub fn json(&self) -> &str {
        match self.websocket.message() {
            Message::Text(text) => text,
            // Built from text above; a binary message never gets here.
            Message::Binary(_) => "",
        }
    }

    /// The event as a WebSocket message, whose frames (plain, or compressed per window) are
    /// encoded on first use and shared.
    pub fn websocket(&self) -> &SharedMessage {
        &self.websocket
    }

    /// The event's `data:` line of a Server-Sent Events stream, with the blank line that ends the
    /// event; the `id:` line before it is each session's own. The JSON is one line (serde_json
    /// escapes line breaks inside strings), so one `data:` line carries it whole.
    pub fn sse_data(&self) -> &SharedBytes {
        self.sse.get_or_init(|| {
            let mut bytes = Vec::with_capacity(self.json().len() + 8);
            bytes.extend_from_slice(b"data: ");
            bytes.extend_from_slice(self.json().as_bytes());
            bytes.extend_from_slice(b"\n\n");
            bytes.into()
        })
    }

    /// At most how many bytes the event adds to a WebSocket queue, in whichever form it is sent
    /// (a compressed frame is never larger than the plain one plus a few bytes of block overhead,
    /// and messages below the compression threshold are sent plain).
    pub fn websocket_len_bound(&self) -> usize {
        self.websocket.len() + MAX_HEADER_LEN + 5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_frame_is_encoded_once_and_shared() {
        let event = Event::new(r#"{"type":"ack","payload":{"id":1}}"#);
        let first = event.websocket().plain().bytes().as_ptr();
        let second = event.websocket().plain().bytes().as_ptr();
        assert_eq!(first, second, "the second recipient reuses the first encoding");
        assert_eq!(&event.websocket().plain().bytes()[..2], [0x81, 33]);
        assert_eq!(&event.websocket().plain().bytes()[2..], event.json().as_bytes());
        assert!(event.websocket_len_bound() >= event.websocket().plain().len());
    }
}
