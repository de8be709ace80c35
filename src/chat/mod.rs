//! The chat: rooms, nicknames, history and the JSON protocol. Plain logic, no sockets.
//!
//! The hub tells the chat which session connected, what it said and when it left; the chat answers
//! with [`Action`]s: "send this JSON to these sessions" and, for abuse, "close this session". Every
//! outgoing message is serialized once, however many sessions receive it; how it travels (a
//! WebSocket frame today) is the hub's business, not the chat's. The chat reads no clock: the
//! caller passes [`Now`] in.
//!
//! Protocol (text frames carrying `{"type": ..., "payload": ...}`; see the README for the table):
//!
//! | client → server | payload                     | answer                                        |
//! |-----------------|-----------------------------|-----------------------------------------------|
//! | `nickname`      | `"alice"`                   | `renamed` to the room, or `error`              |
//! | `message`       | `"hello"`                   | `ack` to the sender, `message` to the others  |
//! | `join`          | `"rust"`                    | `welcome` to the sender, `left`/`joined`      |
//! | `history`       | `{"since": 41}`             | `history` with the room's messages after 41   |

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ws::close::CloseCode;

/// A chat client, whatever carries it. Sessions are numbered by the hub and never reused; they are
/// separate from connection ids because a session may outlive the connection that opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}", self.0)
    }
}

type ClientId = SessionId;

/// The room everybody starts in.
pub const LOBBY: &str = "lobby";
/// Longest nickname and room name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// Chat policies, as command-line flags.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct ChatConfig {
    /// Messages kept per room, replayed by `history` and in `welcome`.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub history_size: usize,

    /// Longest chat message, in characters (over it: `too_long` error).
    #[arg(long, default_value_t = 2000, value_name = "CHARS")]
    pub max_text_chars: usize,

    /// Messages per second a client may send, sustained (token bucket refill rate).
    #[arg(long, default_value_t = 5.0, value_name = "PER_SEC", value_parser = parse_rate)]
    pub rate_limit: f64,

    /// Messages a client may send in a burst (token bucket size).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub rate_burst: u32,

    /// Messages rejected in a row for the rate limit before the client is closed with 1008.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub flood_limit: u32,

    /// Most rooms that exist at once; joining a new room beyond it is refused.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_rooms: usize,
}

/// A rate: a finite number above zero.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a rate above zero")),
    }
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            history_size: 100,
            max_text_chars: 2000,
            rate_limit: 5.0,
            rate_burst: 20,
            flood_limit: 20,
            max_rooms: 1000,
        }
    }
}

/// What the server must do after the chat handled an input.
#[derive(Debug, Clone)]
pub enum Action {
    /// Send `json` (one serialized chat event, shared by every recipient) to each of `to`, in order.
    Send { to: Vec<SessionId>, json: Rc<str> },
    /// Close `client` with `code`.
    Close {
        client: ClientId,
        code: CloseCode,
        reason: String,
    },
}

/// A chat message as stored in history and sent to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub id: u64,
    pub room: String,
    pub nickname: String,
    pub text: String,
    /// Unix time in milliseconds when the server accepted it.
    pub ts: u64,
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
}

/// Server-to-client messages.
#[derive(Debug, Serialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
enum Outbound<'a> {
    Welcome {
        nickname: &'a str,
        room: &'a str,
        online: Vec<&'a str>,
        history: Vec<&'a ChatMessage>,
    },
    Message(&'a ChatMessage),
    Ack {
        id: u64,
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
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

impl Outbound<'_> {
    /// Serializes once, for every recipient.
    fn json(&self) -> Rc<str> {
        // Serializing these plain structs cannot fail: no maps with non-string keys, no custom
        // serializers. Fall back to an error message rather than panic all the same.
        let json = serde_json::to_string(self).unwrap_or_else(|error| {
            format!(r#"{{"type":"error","payload":{{"code":"bad_payload","message":"{error}"}}}}"#)
        });
        Rc::from(json)
    }
}

/// Client-to-server messages, after their envelope was read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Inbound {
    Nickname(String),
    Message(String),
    Join(String),
    History { since: u64 },
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Value,
}

#[derive(Deserialize)]
struct HistoryRequest {
    since: u64,
}

/// A rejected input: its code and the sentence sent with it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rejection(ErrorCode, String);

impl Rejection {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(code, message.into())
    }
}

/// Reads the envelope, then the payload its type calls for.
fn parse_inbound(text: &str) -> Result<Inbound, Rejection> {
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
        "message" => string_payload("message").map(Inbound::Message),
        "join" => string_payload("join").map(Inbound::Join),
        "history" => match &envelope.payload {
            // As above: `[41]` would otherwise be read as `{"since": 41}`.
            Value::Object(_) => serde_json::from_value::<HistoryRequest>(envelope.payload.clone()).ok(),
            _ => None,
        }
        .map(|request| Inbound::History { since: request.since })
        .ok_or_else(|| Rejection::new(ErrorCode::BadPayload, "history payload must be {\"since\": <id>}")),
        other => Err(Rejection::new(
            ErrorCode::UnknownType,
            format!("unknown message type {other:?}"),
        )),
    }
}

/// A nickname or room name: trimmed, 1 to [`MAX_NAME_CHARS`] characters, no control characters.
fn valid_name(what: &str, raw: &str) -> Result<String, Rejection> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(Rejection::new(
            ErrorCode::BadPayload,
            format!("{what} must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Rejection::new(
            ErrorCode::BadPayload,
            format!("{what} must not contain control characters"),
        ));
    }
    Ok(name.to_owned())
}

/// Token bucket: `burst` tokens, refilled at `rate` per second; one message costs one token.
#[derive(Debug, Clone)]
struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn new(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            updated: now,
        }
    }

    fn take(&mut self, config: &ChatConfig, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * config.rate_limit).min(f64::from(config.rate_burst));
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Client {
    nickname: String,
    room: String,
    bucket: TokenBucket,
    /// Messages refused by the rate limit since the last accepted one.
    strikes: u32,
}

#[derive(Debug, Default)]
struct Room {
    members: BTreeSet<ClientId>,
    history: VecDeque<Rc<ChatMessage>>,
}

/// The broadcast table.
#[derive(Debug)]
pub struct Chat {
    config: ChatConfig,
    clients: HashMap<ClientId, Client>,
    rooms: HashMap<String, Room>,
    /// Lower-cased nickname → its owner, for case-insensitive uniqueness.
    nicknames: HashMap<String, ClientId>,
    last_message_id: u64,
    anonymous_count: u64,
}

/// The two clocks the chat reads, passed in by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// For rate limits.
    pub instant: Instant,
    /// Unix milliseconds, for message timestamps.
    pub unix_ms: u64,
}

impl Chat {
    pub fn new(config: ChatConfig) -> Self {
        Self {
            config,
            clients: HashMap::new(),
            rooms: HashMap::new(),
            nicknames: HashMap::new(),
            last_message_id: 0,
            anonymous_count: 0,
        }
    }

    pub fn contains(&self, client: ClientId) -> bool {
        self.clients.contains_key(&client)
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// A client connected: it gets a default nickname, joins the lobby and receives `welcome`.
    pub fn connect(&mut self, id: ClientId, now: Now, actions: &mut Vec<Action>) {
        let nickname = self.fresh_anonymous_name();
        self.nicknames.insert(nickname.to_lowercase(), id);
        self.clients.insert(
            id,
            Client {
                nickname,
                room: String::new(),
                bucket: TokenBucket::new(self.config.rate_burst, now.instant),
                strikes: 0,
            },
        );
        self.enter_room(id, LOBBY.to_owned(), actions);
    }

    /// A client left: the room hears `left`.
    pub fn disconnect(&mut self, id: ClientId, actions: &mut Vec<Action>) {
        let Some(client) = self.clients.remove(&id) else {
            return;
        };
        self.nicknames.remove(&client.nickname.to_lowercase());
        self.leave_room(id, &client.room, &client.nickname, actions);
    }

    /// A text message arrived from `id`.
    pub fn on_text(&mut self, id: ClientId, text: &str, now: Now, actions: &mut Vec<Action>) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        if !client.bucket.take(&self.config, now.instant) {
            client.strikes += 1;
            if client.strikes > self.config.flood_limit {
                actions.push(Action::Close {
                    client: id,
                    code: CloseCode::PolicyViolation,
                    reason: "flooding: rate limit exceeded".into(),
                });
            } else {
                let message = format!(
                    "slow down: at most {} messages per second",
                    self.config.rate_limit
                );
                send_error(id, ErrorCode::RateLimited, message, actions);
            }
            return;
        }
        client.strikes = 0;
        let result = parse_inbound(text).and_then(|inbound| self.apply(id, inbound, now, actions));
        if let Err(Rejection(code, message)) = result {
            send_error(id, code, message, actions);
        }
    }

    fn apply(
        &mut self,
        id: ClientId,
        inbound: Inbound,
        now: Now,
        actions: &mut Vec<Action>,
    ) -> Result<(), Rejection> {
        match inbound {
            Inbound::Nickname(raw) => self.rename(id, &valid_name("nickname", &raw)?, actions),
            Inbound::Message(text) => self.post(id, text, now, actions),
            Inbound::Join(raw) => self.join(id, valid_name("room", &raw)?, actions),
            Inbound::History { since } => {
                self.replay(id, since, actions);
                Ok(())
            }
        }
    }

    fn rename(&mut self, id: ClientId, nickname: &str, actions: &mut Vec<Action>) -> Result<(), Rejection> {
        let key = nickname.to_lowercase();
        if self.nicknames.get(&key).is_some_and(|owner| *owner != id) {
            return Err(Rejection::new(
                ErrorCode::NicknameTaken,
                format!("{nickname:?} is taken"),
            ));
        }
        let Some(client) = self.clients.get_mut(&id) else {
            return Ok(());
        };
        let from = std::mem::replace(&mut client.nickname, nickname.to_owned());
        let room = client.room.clone();
        self.nicknames.remove(&from.to_lowercase());
        self.nicknames.insert(key, id);
        let json = Outbound::Renamed {
            room: &room,
            from: &from,
            to: nickname,
        }
        .json();
        actions.push(Action::Send {
            to: self.members(&room, None),
            json,
        });
        Ok(())
    }

    fn post(
        &mut self,
        id: ClientId,
        text: String,
        now: Now,
        actions: &mut Vec<Action>,
    ) -> Result<(), Rejection> {
        if text.trim().is_empty() {
            return Err(Rejection::new(ErrorCode::BadPayload, "message must not be empty"));
        }
        // Line breaks and tabs are text; other control characters only garble the page (and
        // cost six bytes each once escaped in JSON).
        if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(Rejection::new(
                ErrorCode::BadPayload,
                "message must not contain control characters other than newline and tab",
            ));
        }
        let chars = text.chars().count();
        if chars > self.config.max_text_chars {
            return Err(Rejection::new(
                ErrorCode::TooLong,
                format!(
                    "message of {chars} characters exceeds {}",
                    self.config.max_text_chars
                ),
            ));
        }
        let Some(client) = self.clients.get(&id) else {
            return Ok(());
        };
        self.last_message_id += 1;
        let message = Rc::new(ChatMessage {
            id: self.last_message_id,
            room: client.room.clone(),
            nickname: client.nickname.clone(),
            text,
            ts: now.unix_ms,
        });
        actions.push(Action::Send {
            to: vec![id],
            json: Outbound::Ack { id: message.id }.json(),
        });
        actions.push(Action::Send {
            to: self.members(&message.room, Some(id)),
            json: Outbound::Message(&message).json(),
        });
        let history_size = self.config.history_size;
        if let Some(room) = self.rooms.get_mut(&message.room) {
            room.history.push_back(message);
            while room.history.len() > history_size {
                room.history.pop_front();
            }
        }
        Ok(())
    }

    fn join(&mut self, id: ClientId, room: String, actions: &mut Vec<Action>) -> Result<(), Rejection> {
        if !self.rooms.contains_key(&room) && self.rooms.len() >= self.config.max_rooms {
            self.forget_unused_rooms();
            if self.rooms.len() >= self.config.max_rooms {
                return Err(Rejection::new(
                    ErrorCode::BadPayload,
                    "too many rooms; join an existing one",
                ));
            }
        }
        let Some(client) = self.clients.get(&id) else {
            return Ok(());
        };
        let (old_room, nickname) = (client.room.clone(), client.nickname.clone());
        if old_room == room {
            // Already there: a fresh welcome, without telling the room they left and came back.
            let welcome = self.welcome(&room, &nickname);
            actions.push(Action::Send {
                to: vec![id],
                json: welcome,
            });
            return Ok(());
        }
        self.leave_room(id, &old_room, &nickname, actions);
        self.enter_room(id, room, actions);
        Ok(())
    }

    fn replay(&self, id: ClientId, since: u64, actions: &mut Vec<Action>) {
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        let messages = self.history_since(&client.room, since);
        let json = Outbound::History {
            room: &client.room,
            messages,
        }
        .json();
        actions.push(Action::Send { to: vec![id], json });
    }

    /// Puts `id` in `room`: `welcome` to it, `joined` to the others.
    fn enter_room(&mut self, id: ClientId, room: String, actions: &mut Vec<Action>) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        client.room = room.clone();
        let nickname = client.nickname.clone();
        self.rooms.entry(room.clone()).or_default().members.insert(id);
        let welcome = self.welcome(&room, &nickname);
        actions.push(Action::Send {
            to: vec![id],
            json: welcome,
        });
        let joined = Outbound::Joined {
            room: &room,
            nickname: &nickname,
        }
        .json();
        actions.push(Action::Send {
            to: self.members(&room, Some(id)),
            json: joined,
        });
    }

    /// What a client is told on entering `room`: its name, who is there, the room's history.
    fn welcome(&self, room: &str, nickname: &str) -> Rc<str> {
        Outbound::Welcome {
            nickname,
            room,
            online: self.online(room),
            history: self.history_since(room, 0),
        }
        .json()
    }

    fn leave_room(&mut self, id: ClientId, room: &str, nickname: &str, actions: &mut Vec<Action>) {
        let Some(members) = self.rooms.get_mut(room).map(|room| &mut room.members) else {
            return;
        };
        members.remove(&id);
        let json = Outbound::Left { room, nickname }.json();
        actions.push(Action::Send {
            to: self.members(room, None),
            json,
        });
    }

    /// Rooms nobody is in and whose history is empty hold nothing worth keeping.
    fn forget_unused_rooms(&mut self) {
        self.rooms
            .retain(|name, room| name == LOBBY || !room.members.is_empty() || !room.history.is_empty());
        if self.rooms.len() >= self.config.max_rooms {
            // Still full: drop the history of empty rooms too, oldest last message first.
            let mut empty: Vec<(u64, String)> = self
                .rooms
                .iter()
                .filter(|(name, room)| room.members.is_empty() && name.as_str() != LOBBY)
                .map(|(name, room)| (room.history.back().map_or(0, |m| m.id), name.clone()))
                .collect();
            empty.sort();
            let excess = self.rooms.len() + 1 - self.config.max_rooms;
            for (_, name) in empty.into_iter().take(excess) {
                self.rooms.remove(&name);
            }
        }
    }

    fn members(&self, room: &str, except: Option<ClientId>) -> Vec<ClientId> {
        self.rooms.get(room).map_or_else(Vec::new, |room| {
            // Sized once: a filtered iterator would grow the vector by doubling.
            let mut members = Vec::with_capacity(room.members.len());
            members.extend(
                room.members
                    .iter()
                    .copied()
                    .filter(|member| Some(*member) != except),
            );
            members
        })
    }

    fn online(&self, room: &str) -> Vec<&str> {
        let mut names: Vec<&str> = self.rooms.get(room).map_or_else(Vec::new, |room| {
            room.members
                .iter()
                .filter_map(|member| self.clients.get(member))
                .map(|client| client.nickname.as_str())
                .collect()
        });
        // Lower-case each name once, not at every comparison.
        names.sort_by_cached_key(|name| name.to_lowercase());
        names
    }

    fn history_since(&self, room: &str, since: u64) -> Vec<&ChatMessage> {
        self.rooms.get(room).map_or_else(Vec::new, |room| {
            room.history
                .iter()
                .filter(|message| message.id > since)
                .map(|message| message.as_ref())
                .collect()
        })
    }

    fn fresh_anonymous_name(&mut self) -> String {
        loop {
            self.anonymous_count += 1;
            let name = format!("Anonymous{}", self.anonymous_count);
            if !self.nicknames.contains_key(&name.to_lowercase()) {
                return name;
            }
        }
    }
}

fn send_error(id: ClientId, code: ErrorCode, message: String, actions: &mut Vec<Action>) {
    actions.push(Action::Send {
        to: vec![id],
        json: Outbound::Error { code, message }.json(),
    });
}

#[cfg(test)]
mod tests;
