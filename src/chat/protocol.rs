//! The chat's JSON protocol: `{"type": ..., "payload": ...}` in both directions.
//!
//! One enum for what clients send ([`Inbound`], read by [`parse_inbound`]) and one for what the
//! server sends ([`Outbound`], serialized once per event by [`Outbound::json`]). Every input that
//! does not parse is a [`Rejection`]: an `error` with its [`ErrorCode`] and a sentence, never a
//! closed connection.

use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::IdempotencyKey;

/// Longest nickname and room name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// A chat message as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub id: u64,
    pub room: String,
    pub nickname: String,
    pub text: String,
    /// Unix time in milliseconds when the server accepted it.
    pub ts: u64,
}

impl From<crate::store::StoredMessage> for ChatMessage {
    fn from(stored: crate::store::StoredMessage) -> Self {
        Self {
            id: stored.id,
            room: stored.room,
            nickname: stored.nickname,
            text: stored.text,
            ts: stored.ts,
        }
    }
}

/// Error codes of the `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadJson,
    UnknownType,
    BadPayload,
    NicknameTaken,
    TooLong,
    RateLimited,
    /// The message store could not take the message (disk full, I/O error): it was not stored,
    /// not broadcast, and may be sent again (with the same key) later.
    StoreUnavailable,
    /// A `resume` token that is unknown, expired, or already used.
    ResumeFailed,
}

/// Server-to-client messages.
#[derive(Debug, Serialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum Outbound<'a> {
    Welcome {
        nickname: &'a str,
        room: &'a str,
        online: Vec<&'a str>,
        history: Vec<&'a ChatMessage>,
        /// Fixed for the life of the message store: a different epoch means another history.
        epoch: &'a str,
        /// Presented in a `resume` by a later connection, it takes this session's place.
        resume: &'a str,
    },
    Message(&'a ChatMessage),
    Ack {
        id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        key: Option<&'a str>,
    },
    Joined {
        room: &'a str,
        nickname: &'a str,
    },
    Left {
        room: &'a str,
        nickname: &'a str,
    },
    Renamed {
        room: &'a str,
        from: &'a str,
        to: &'a str,
    },
    History {
        room: &'a str,
        messages: Vec<&'a ChatMessage>,
        /// Whether the store holds further messages in the direction asked for.
        more: bool,
    },
    /// The room's messages with ids above `after`, up to `until`, were pruned from the store before
    /// this server could show them: they will never be shown (never a silent hole).
    Missed {
        room: &'a str,
        after: u64,
        until: u64,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

impl Outbound<'_> {
    /// Serializes once, for every recipient.
    pub fn json(&self) -> Rc<str> {
        // Serializing these plain structs cannot fail: no maps with non-string keys, no custom
        // serializers. Fall back to an error message rather than panic all the same.
        let json = serde_json::to_string(self).unwrap_or_else(|error| {
            format!(r#"{{"type":"error","payload":{{"code":"bad_payload","message":"{error}"}}}}"#)
        });
        Rc::from(json)
    }
}

/// Which part of a room's history a `history` request wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRange {
    /// Messages after this id, oldest first (catching up).
    Since(u64),
    /// Messages before this id, the newest of them, oldest first (scrolling back).
    Before(u64),
}

/// Client-to-server messages, after their envelope was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Nickname(String),
    Message {
        text: String,
        key: Option<IdempotencyKey>,
    },
    Join(String),
    History {
        range: HistoryRange,
        limit: Option<usize>,
    },
    Resume(String),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryRequest {
    since: Option<u64>,
    before: Option<u64>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyedMessage {
    text: String,
    key: String,
}

/// A rejected input: its code and the sentence sent with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(pub ErrorCode, pub String);

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(code, message.into())
    }
}

/// Reads the envelope, then the payload its type calls for.
pub fn parse_inbound(text: &str) -> Result<Inbound, Rejection> {
    let bad_json = |error: &dyn std::fmt::Display| {
        Rejection::new(
            ErrorCode::BadJson,
            format!("expected {{\"type\": ..., \"payload\": ...}}: {error}"),
        )
    };
    // Serde reads a struct from a JSON array too (`["message", "hi"]`); the protocol is objects.
    if !text.trim_start().starts_with('{') {
        return Err(bad_json(&"not a JSON object"));
    }
    let envelope: Envelope = serde_json::from_str(text).map_err(|error| bad_json(&error))?;
    let string_payload = |what: &str| match &envelope.payload {
        Value::String(text) => Ok(text.clone()),
        _ => Err(Rejection::new(
            ErrorCode::BadPayload,
            format!("{what} payload must be a string"),
        )),
    };
    match envelope.kind.as_str() {
        "nickname" => string_payload("nickname").map(Inbound::Nickname),
        "message" => parse_message(&envelope.payload),
        "join" => string_payload("join").map(Inbound::Join),
        "history" => parse_history(&envelope.payload),
        "resume" => string_payload("resume").map(Inbound::Resume),
        other => Err(Rejection::new(
            ErrorCode::UnknownType,
            format!("unknown message type {other:?}"),
        )),
    }
}

/// `"text"`, or `{"text": "...", "key": "..."}` for a send that must count once however often it
/// is repeated (the key names it).
fn parse_message(payload: &Value) -> Result<Inbound, Rejection> {
    const SHAPE: &str = "message payload must be a string or {\"text\": \"...\", \"key\": \"...\"}";
    match payload {
        Value::String(text) => Ok(Inbound::Message {
            text: text.clone(),
            key: None,
        }),
        // An object only: serde would read `["hi", "k"]` as a struct too.
        Value::Object(_) => {
            let keyed: KeyedMessage = serde_json::from_value(payload.clone())
                .map_err(|_| Rejection::new(ErrorCode::BadPayload, SHAPE))?;
            let key = IdempotencyKey::new(keyed.key)
                .map_err(|error| Rejection::new(ErrorCode::BadPayload, error.to_string()))?;
            Ok(Inbound::Message {
                text: keyed.text,
                key: Some(key),
            })
        }
        _ => Err(Rejection::new(ErrorCode::BadPayload, SHAPE)),
    }
}

/// `{"since": N}` or `{"before": N}`, each with an optional `"limit"`.
fn parse_history(payload: &Value) -> Result<Inbound, Rejection> {
    const SHAPE: &str =
        "history payload must be {\"since\": <id>} or {\"before\": <id>}, with an optional \"limit\"";
    let request = match payload {
        Value::Object(_) => serde_json::from_value::<HistoryRequest>(payload.clone()).ok(),
        _ => None,
    }
    .ok_or_else(|| Rejection::new(ErrorCode::BadPayload, SHAPE))?;
    let range = match (request.since, request.before) {
        (Some(since), None) => HistoryRange::Since(since),
        (None, Some(before)) => HistoryRange::Before(before),
        _ => return Err(Rejection::new(ErrorCode::BadPayload, SHAPE)),
    };
    if request.limit == Some(0) {
        return Err(Rejection::new(
            ErrorCode::BadPayload,
            "history limit must be at least 1",
        ));
    }
    Ok(Inbound::History {
        range,
        limit: request.limit,
    })
}
