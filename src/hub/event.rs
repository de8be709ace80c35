//! One outgoing chat event, transport-neutral.
//!
//! The chat serializes an event to JSON once. Each transport that carries it to a client needs its
//! own encoding of those bytes (a WebSocket text frame today; compressed frames, Server-Sent Events
//! lines and long-poll arrays are coming). An [`Event`] makes each encoding the first time a
//! recipient needs it and keeps it, so a broadcast to a thousand clients costs one serialization,
//! at most one encoding per transport, and a thousand reference-counted queue slots.

use std::cell::OnceCell;
use std::rc::Rc;

use crate::ws::protocol::{Message, SharedFrame};

/// A serialized chat event and its per-transport encodings, made lazily and shared.
#[derive(Debug)]
pub struct Event {
    json: Rc<str>,
    websocket: OnceCell<SharedFrame>,
}

impl Event {
    pub fn new(json: Rc<str>) -> Rc<Self> {
        Rc::new(Self {
            json,
            websocket: OnceCell::new(),
        })
    }

    /// The event as the chat serialized it.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The event as one unmasked WebSocket text frame, encoded on first use.
    pub fn websocket_frame(&self) -> &SharedFrame {
        self.websocket
            .get_or_init(|| SharedFrame::new(Message::Text(&self.json)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_frame_is_encoded_once_and_shared() {
        let event = Event::new(Rc::from(r#"{"type":"ack","payload":{"id":1}}"#));
        let first = event.websocket_frame().bytes().as_ptr();
        let second = event.websocket_frame().bytes().as_ptr();
        assert_eq!(first, second, "the second recipient reuses the first encoding");
        assert_eq!(&event.websocket_frame().bytes()[..2], [0x81, 33]);
        assert_eq!(&event.websocket_frame().bytes()[2..], event.json().as_bytes());
    }
}
