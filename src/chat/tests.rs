//! The chat protocol, rule by rule, without sockets.

use super::*;

/// Decodes the JSON carried by a shared text frame.
fn json_of(frame: &SharedFrame) -> Value {
    let bytes = frame.bytes();
    let (header, len) = crate::frame::FrameHeader::parse(bytes).unwrap().unwrap();
    assert_eq!(header.opcode, crate::frame::OpCode::Text);
    serde_json::from_slice(&bytes[len..]).unwrap()
}

/// Everything `client` was sent by `actions`, as JSON.
fn sent_to(actions: &[Action], client: ClientId) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Send { to, frame } if to.contains(&client) => Some(json_of(frame)),
            _ => None,
        })
        .collect()
}

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_ms: 1_700_000_000_000,
    }
}

#[test]
fn connecting_client_gets_welcome_with_a_default_nickname_in_the_lobby() {
    let mut chat = Chat::new(ChatConfig::default());
    let mut actions = Vec::new();
    chat.connect(1, now(), &mut actions);
    let welcome = &sent_to(&actions, 1)[0];
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["payload"]["nickname"], "Anonymous1");
    assert_eq!(welcome["payload"]["room"], "lobby");
}
