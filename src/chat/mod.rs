//! The chat: rooms, nicknames, history and the JSON protocol. Plain logic, no sockets, no disk.
//!
//! The hub tells the chat which session connected, what it said and when it left; the chat answers
//! with [`Action`]s: "send this JSON to these sessions", for abuse "close this session", and, for
//! what must outlive the process, *store effects* ([`Action::Store`]): "persist this message",
//! "read this part of a room's history". The store's answers come back later as inputs
//! ([`Chat::on_store`]), like bytes and time. The chat never waits for them and never calls a
//! database, so every rule here is tested with a fake store that delays, batches and fails.
//!
//! **When a message counts.** A message is acknowledged, and shown to anybody, only once the store
//! says it is durable: its id is the store's, and the `ack` and the broadcast go out when the
//! store's answer arrives, in the order the store answered. A message the store refuses is
//! answered with `error` `store_unavailable` and nothing else. A message with a key the room has
//! already accepted is not stored again: its sender gets the original `ack`.
//!
//! **What stays in memory**: nicknames, rooms and presence, and a cache of each room's recent
//! messages within one byte budget ([`history::HistoryCache`]). A `welcome` is answered from the
//! cache when it holds the room's recent history; otherwise the session waits for the store to
//! read it, and enters the room (receiving its messages) at the moment that page arrives, so it
//! misses nothing and sees nothing twice.
//!
//! Every outgoing event is serialized once, however many sessions receive it; how it travels is the
//! hub's business. The chat reads no clock (the caller passes [`Now`]) and draws no randomness (the
//! caller gives it a source of resume tokens).
//!
//! Protocol (text messages carrying `{"type": ..., "payload": ...}`; the README has the table):
//!
//! | client → server | payload                          | answer                                    |
//! |-----------------|----------------------------------|-------------------------------------------|
//! | `nickname`      | `"alice"`                        | `renamed` to the room, or `error`          |
//! | `message`       | `"hello"` or `{"text", "key"}`   | `ack` to the sender, `message` to the others, once stored |
//! | `join`          | `"rust"`                         | `welcome` to the sender, `left`/`joined`  |
//! | `history`       | `{"since": 41}` / `{"before": 41}`, `"limit"` | `history` with `more`       |
//! | `resume`        | the token of an earlier `welcome` | that session's nickname and room, a fresh `welcome` |

mod history;
pub mod names;
mod protocol;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub use history::HistoryCache;
use names::NameKey;
pub use protocol::{ChatMessage, ErrorCode, MAX_NAME_CHARS};
use protocol::{HistoryRange, Inbound, Outbound, Rejection, parse_inbound};

use crate::http::forwarded::IpPrefix;
use crate::store::{self, Appended, Command, IdempotencyKey, NewMessage, Outcome, Range, Token};
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

/// The room everybody starts in.
pub const LOBBY: &str = "lobby";
/// The close code of a connection whose session another connection took over with `resume`
/// (private use, RFC 6455 §7.4.2).
pub const RESUMED_ELSEWHERE: CloseCode = CloseCode::Private(4001);

/// Chat policies, as command-line flags.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct ChatConfig {
    /// Messages of a room shown in `welcome` (and kept in memory per room for it).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub history_size: usize,

    /// Bytes of recent messages kept in memory for `welcome`, all rooms together; older messages
    /// are read from the store.
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    pub history_memory: usize,

    /// Most messages one `history` answer carries (a request's `limit` is capped to it).
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub history_page_limit: usize,

    /// Longest chat message, in characters (over it: `too_long` error).
    #[arg(long, default_value_t = 2000, value_name = "CHARS")]
    pub max_text_chars: usize,

    /// Messages per second a client may send, sustained (token bucket refill rate).
    #[arg(long, default_value_t = 5.0, value_name = "PER_SEC", value_parser = parse_rate)]
    pub rate_limit: f64,

    /// Messages a client may send in a burst (token bucket size).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub rate_burst: u32,

    /// Messages per second all clients of one address (an IPv4 address, an IPv6 /64) may send
    /// together, sustained: a host that opens many connections does not get many rate limits.
    #[arg(long, default_value_t = 20.0, value_name = "PER_SEC", value_parser = parse_rate)]
    pub ip_rate_limit: f64,

    /// Messages all clients of one address may send together in a burst.
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub ip_rate_burst: u32,

    /// Messages rejected in a row for the rate limit before the client is closed with 1008.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub flood_limit: u32,

    /// Most rooms that exist at once; joining a new room beyond it is refused.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_rooms: usize,

    /// Seconds a `resume` token stays valid after its session ended.
    #[arg(long, default_value = "600", value_name = "SECS", value_parser = crate::config::parse_seconds)]
    pub resume_ttl: Duration,
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
            history_memory: 16 * 1024 * 1024,
            history_page_limit: 500,
            max_text_chars: 2000,
            rate_limit: 5.0,
            rate_burst: 20,
            ip_rate_limit: 20.0,
            ip_rate_burst: 60,
            flood_limit: 20,
            max_rooms: 1000,
            resume_ttl: Duration::from_secs(600),
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
        client: SessionId,
        code: CloseCode,
        reason: String,
    },
    /// Hand this to the store; its answer comes back through [`Chat::on_store`].
    Store(Command),
}

/// Resume tokens: 128 bits from a source the caller provides (the OS random source in the server).
pub type TokenSource = Box<dyn FnMut() -> u128>;

/// The two clocks the chat reads, passed in by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// For rate limits and token expiry.
    pub instant: Instant,
    /// Unix milliseconds, for message timestamps.
    pub unix_ms: u64,
}

/// A rate limit: `per_sec` sustained, `burst` at once.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_sec: f64,
    burst: u32,
}

impl ChatConfig {
    /// The limit of one session.
    fn session_rate(&self) -> Rate {
        Rate {
            per_sec: self.rate_limit,
            burst: self.rate_burst,
        }
    }

    /// The limit all sessions of one address share.
    fn host_rate(&self) -> Rate {
        Rate {
            per_sec: self.ip_rate_limit,
            burst: self.ip_rate_burst,
        }
    }
}

/// Token bucket: `burst` tokens, refilled at `per_sec`; one message costs one token.
#[derive(Debug, Clone)]
struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            updated: now,
        }
    }

    /// Adds what the time since the last refill earned, up to the burst; says whether a token is
    /// there to spend.
    fn refill(&mut self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(f64::from(rate.burst));
        self.updated = now;
        self.tokens >= 1.0
    }

    fn spend(&mut self) {
        self.tokens -= 1.0;
    }
}

/// What all sessions of one address share: the address's rate limit.
#[derive(Debug)]
struct Host {
    bucket: TokenBucket,
    /// Sessions of this address; the entry goes with the last one, so the table holds at most one
    /// entry per session.
    sessions: u32,
}

/// Which rate limit refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Session,
    Host,
}

#[derive(Debug)]
struct Client {
    nickname: String,
    /// The room the client is in, or is entering (waiting for its history to load).
    room: String,
    /// Whether it is a member of `room` yet (has had its welcome).
    entered: bool,
    bucket: TokenBucket,
    /// The address (IPv4) or /64 (IPv6) it connected from, whose rate limit it shares.
    host: IpPrefix,
    /// Messages refused by the rate limit since the last accepted one.
    strikes: u32,
    resume: u128,
    /// Answers to this client's requests, in the order of the requests: an answer that is ready
    /// waits behind one the store has not given yet (see [`Chat::respond`]).
    answers: VecDeque<Answer>,
}

/// One answer owed to a client.
#[derive(Debug)]
enum Answer {
    /// Waiting for the store's reply to this command.
    Waiting(Token),
    /// Ready to go once everything before it has gone.
    Ready(Rc<str>),
    /// Close the connection (a flood), after the answers before it.
    Close(CloseCode, String),
}

#[derive(Debug, Default)]
struct Room {
    members: BTreeSet<SessionId>,
    /// Sessions waiting for the room's history to load before they enter, in arrival order.
    entering: Vec<SessionId>,
    /// The store read of the room's recent history, while it is in flight.
    loading: Option<Token>,
}

/// A store command whose answer is awaited.
#[derive(Debug)]
enum Pending {
    /// A message to acknowledge and broadcast once stored.
    Post {
        session: SessionId,
        message: ChatMessage,
        key: Option<String>,
    },
    /// The recent history of a room that sessions are entering.
    Enter { room: String },
    /// A `history` request.
    History { session: SessionId, room: String },
}

/// A session that ended, remembered for `resume` until its token expires.
#[derive(Debug)]
struct Departed {
    nickname: String,
    room: String,
    expires: Instant,
}

/// The broadcast table.
pub struct Chat {
    config: ChatConfig,
    /// The store's epoch, as clients see it.
    epoch: String,
    clients: HashMap<SessionId, Client>,
    /// Rate limits per client address.
    hosts: HashMap<IpPrefix, Host>,
    rooms: HashMap<String, Room>,
    /// A nickname's comparison key ([`NameKey`]: normalized, case-folded) → its owner, so that
    /// look-alike variants of a taken name count as taken.
    nicknames: HashMap<NameKey, SessionId>,
    history: HistoryCache,
    pending: HashMap<Token, Pending>,
    last_token: Token,
    tokens: TokenSource,
    /// Live sessions by resume token.
    resumable: HashMap<u128, SessionId>,
    /// Ended sessions by resume token, and their tokens in order of expiry.
    departed: HashMap<u128, Departed>,
    expiring: VecDeque<(Instant, u128)>,
    anonymous_count: u64,
    /// Messages stored and broadcast since the start.
    accepted: u64,
}

impl std::fmt::Debug for Chat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat")
            .field("clients", &self.clients.len())
            .field("rooms", &self.rooms.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Chat {
    /// A chat over a store whose epoch is `epoch`, drawing resume tokens from `tokens`.
    pub fn new(config: ChatConfig, epoch: String, tokens: TokenSource) -> Self {
        let history = HistoryCache::new(config.history_size, config.history_memory);
        Self {
            config,
            epoch,
            clients: HashMap::new(),
            hosts: HashMap::new(),
            rooms: HashMap::new(),
            nicknames: HashMap::new(),
            history,
            pending: HashMap::new(),
            last_token: 0,
            tokens,
            resumable: HashMap::new(),
            departed: HashMap::new(),
            expiring: VecDeque::new(),
            anonymous_count: 0,
            accepted: 0,
        }
    }

    pub fn contains(&self, client: SessionId) -> bool {
        self.clients.contains_key(&client)
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Rooms that exist now.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Messages stored and broadcast since the start (not counting duplicates of a key).
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Client addresses with a rate limit of their own (one per address with a session).
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Bytes of history held in memory.
    pub fn history_bytes(&self) -> usize {
        self.history.used()
    }

    /// Store commands whose answers have not come back.
    pub fn pending_store_commands(&self) -> usize {
        self.pending.len()
    }

    /// A client connected from `addr`: it gets a default nickname, joins the lobby and receives
    /// `welcome`.
    pub fn connect(&mut self, id: SessionId, addr: IpAddr, now: Now, actions: &mut Vec<Action>) {
        let host = IpPrefix::host(addr);
        let host_rate = self.config.host_rate();
        self.hosts
            .entry(host)
            .or_insert_with(|| Host {
                bucket: TokenBucket::full(host_rate, now.instant),
                sessions: 0,
            })
            .sessions += 1;
        let nickname = self.fresh_anonymous_name();
        self.nicknames.insert(NameKey::of(&nickname), id);
        let resume = self.new_resume_token(id);
        self.clients.insert(
            id,
            Client {
                nickname,
                room: String::new(),
                entered: false,
                bucket: TokenBucket::full(self.config.session_rate(), now.instant),
                host,
                strikes: 0,
                resume,
                answers: VecDeque::new(),
            },
        );
        self.enter_room(id, LOBBY.to_owned(), actions);
    }

    /// A client left: the room hears `left`, and its resume token stays valid for a while.
    pub fn disconnect(&mut self, id: SessionId, now: Now, actions: &mut Vec<Action>) {
        let Some(client) = self.clients.remove(&id) else {
            return;
        };
        self.release_host(client.host);
        self.nicknames.remove(&NameKey::of(&client.nickname));
        self.resumable.remove(&client.resume);
        self.forget_expired(now.instant);
        let expires = now.instant + self.config.resume_ttl;
        self.expiring.push_back((expires, client.resume));
        self.departed.insert(
            client.resume,
            Departed {
                nickname: client.nickname.clone(),
                room: client.room.clone(),
                expires,
            },
        );
        self.leave_room(id, &client.room, &client.nickname, client.entered, actions);
    }

    /// A text message arrived from `id`.
    pub fn on_text(&mut self, id: SessionId, text: &str, now: Now, actions: &mut Vec<Action>) {
        if let Some(limit) = self.rate_limit(id, now.instant) {
            let Some(client) = self.clients.get_mut(&id) else {
                return;
            };
            client.strikes += 1;
            if client.strikes > self.config.flood_limit {
                let reason = "flooding: rate limit exceeded".to_owned();
                self.queue_answer(id, Answer::Close(CloseCode::PolicyViolation, reason), actions);
            } else {
                let message = match limit {
                    Limit::Session => format!(
                        "slow down: at most {} messages per second",
                        self.config.rate_limit
                    ),
                    Limit::Host => format!(
                        "slow down: at most {} messages per second from one address",
                        self.config.ip_rate_limit
                    ),
                };
                self.reject(id, ErrorCode::RateLimited, message, actions);
            }
            return;
        }
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        client.strikes = 0;
        let result = parse_inbound(text).and_then(|inbound| self.apply(id, inbound, now, actions));
        if let Err(Rejection(code, message)) = result {
            self.reject(id, code, message, actions);
        }
    }

    /// A session of `host` is gone; the address's entry goes with its last one.
    fn release_host(&mut self, host: IpPrefix) {
        if let Some(entry) = self.hosts.get_mut(&host) {
            entry.sessions -= 1;
            if entry.sessions == 0 {
                self.hosts.remove(&host);
            }
        }
    }

    /// Spends a token of the session's bucket and of its address's, or says which limit is
    /// reached (then neither is spent: a refused message costs nothing).
    fn rate_limit(&mut self, id: SessionId, now: Instant) -> Option<Limit> {
        let client = self.clients.get_mut(&id)?;
        if !client.bucket.refill(self.config.session_rate(), now) {
            return Some(Limit::Session);
        }
        let host = self.hosts.get_mut(&client.host)?;
        if !host.bucket.refill(self.config.host_rate(), now) {
            return Some(Limit::Host);
        }
        client.bucket.spend();
        host.bucket.spend();
        None
    }

    /// The store answered a command the chat gave it.
    pub fn on_store(&mut self, outcome: Outcome, actions: &mut Vec<Action>) {
        let Some(pending) = self.pending.remove(&outcome.token()) else {
            return;
        };
        match (pending, outcome) {
            (
                Pending::Post {
                    session,
                    message,
                    key,
                },
                Outcome::Append { token, result },
            ) => self.on_stored(token, session, message, key, result, actions),
            (Pending::Enter { room }, Outcome::Read { token, result }) => {
                self.on_room_loaded(token, &room, result, actions)
            }
            (Pending::History { session, room }, Outcome::Read { token, result }) => {
                self.on_history(token, session, &room, result, actions)
            }
            // An answer of the wrong kind for its token: the store broke its contract. Nothing
            // sensible can be sent; the command is dropped.
            _ => {}
        }
    }

    fn apply(
        &mut self,
        id: SessionId,
        inbound: Inbound,
        now: Now,
        actions: &mut Vec<Action>,
    ) -> Result<(), Rejection> {
        match inbound {
            Inbound::Nickname(raw) => self.rename(id, &names::nickname(&raw)?.into_parts().0, actions),
            Inbound::Message { text, key } => self.post(id, text, key, now, actions),
            Inbound::Join(raw) => self.join(id, names::room(&raw)?.into_parts().0, actions),
            Inbound::History { range, limit } => {
                self.replay(id, range, limit, actions);
                Ok(())
            }
            Inbound::Resume(token) => self.resume(id, &token, now, actions),
        }
    }

    fn rename(&mut self, id: SessionId, nickname: &str, actions: &mut Vec<Action>) -> Result<(), Rejection> {
        let key = NameKey::of(nickname);
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
        let (room, entered) = (client.room.clone(), client.entered);
        self.nicknames.remove(&NameKey::of(&from));
        self.nicknames.insert(key, id);
        let json = Outbound::Renamed {
            room: &room,
            from: &from,
            to: nickname,
        }
        .json();
        if entered {
            actions.push(Action::Send {
                to: self.members(&room, Some(id)),
                json: json.clone(),
            });
        }
        // The renamed client's copy is the answer to its request, so it keeps its place among its
        // answers (after the `ack` of a message sent before); a client still entering its room is
        // told alone, and the room learns the name when it enters.
        self.respond(id, json, actions);
        Ok(())
    }

    /// Validates a message and asks the store to persist it; nobody sees it before the store
    /// answers ([`Chat::on_stored`]).
    fn post(
        &mut self,
        id: SessionId,
        text: String,
        key: Option<IdempotencyKey>,
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
        let message = ChatMessage {
            id: 0,
            room: client.room.clone(),
            nickname: client.nickname.clone(),
            text,
            ts: now.unix_ms,
        };
        let token = self.next_token();
        actions.push(Action::Store(Command::Append(vec![NewMessage {
            token,
            room: message.room.clone(),
            nickname: message.nickname.clone(),
            text: message.text.clone(),
            ts: message.ts,
            key: key.clone(),
        }])));
        self.pending.insert(
            token,
            Pending::Post {
                session: id,
                message,
                key: key.map(|key| key.as_str().to_owned()),
            },
        );
        self.await_store(id, token);
        Ok(())
    }

    /// The store answered a message: durable now (or before, under the same key), or refused.
    fn on_stored(
        &mut self,
        token: Token,
        session: SessionId,
        mut message: ChatMessage,
        key: Option<String>,
        result: Result<Appended, store::StoreError>,
        actions: &mut Vec<Action>,
    ) {
        let appended = match result {
            Ok(appended) => appended,
            Err(error) => {
                let json = error_json(ErrorCode::StoreUnavailable, error.to_string());
                self.resolve(session, token, json, actions);
                return;
            }
        };
        message.id = appended.id();
        let ack = Outbound::Ack {
            id: message.id,
            key: key.as_deref(),
        }
        .json();
        self.resolve(session, token, ack, actions);
        if let Appended::Stored { .. } = appended {
            self.accepted += 1;
            let json = Outbound::Message(&message).json();
            actions.push(Action::Send {
                to: self.members(&message.room, Some(session)),
                json,
            });
            self.history.push(Rc::new(message));
        }
    }

    fn join(&mut self, id: SessionId, room: String, actions: &mut Vec<Action>) -> Result<(), Rejection> {
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
        let (old_room, nickname, entered) = (client.room.clone(), client.nickname.clone(), client.entered);
        if old_room == room {
            if entered {
                // Already there: a fresh welcome, without telling the room they left and came back.
                let welcome = self.welcome(id, &room);
                self.respond(id, welcome, actions);
            }
            return Ok(());
        }
        self.leave_room(id, &old_room, &nickname, entered, actions);
        self.enter_room(id, room, actions);
        Ok(())
    }

    /// Answers `history` from the store, which holds everything (the cache holds only the recent).
    fn replay(
        &mut self,
        id: SessionId,
        range: HistoryRange,
        limit: Option<usize>,
        actions: &mut Vec<Action>,
    ) {
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        let room = client.room.clone();
        let limit = limit
            .unwrap_or(self.config.history_size)
            .min(self.config.history_page_limit);
        let token = self.next_token();
        let range = match range {
            HistoryRange::Since(id) => Range::Since(id),
            HistoryRange::Before(id) => Range::Before(id),
        };
        actions.push(Action::Store(Command::Read(store::Read {
            token,
            room: room.clone(),
            range,
            limit,
        })));
        self.pending.insert(token, Pending::History { session: id, room });
        self.await_store(id, token);
    }

    fn on_history(
        &mut self,
        token: Token,
        session: SessionId,
        room: &str,
        result: Result<store::Page, store::StoreError>,
        actions: &mut Vec<Action>,
    ) {
        let json = match result {
            Ok(page) => {
                let messages: Vec<ChatMessage> = page.messages.into_iter().map(ChatMessage::from).collect();
                Outbound::History {
                    room,
                    messages: messages.iter().collect(),
                    more: page.more,
                }
                .json()
            }
            Err(error) => error_json(ErrorCode::StoreUnavailable, error.to_string()),
        };
        self.resolve(session, token, json, actions);
    }

    /// `resume`: this connection takes the place of the session that was given `token`.
    fn resume(
        &mut self,
        id: SessionId,
        token: &str,
        now: Now,
        actions: &mut Vec<Action>,
    ) -> Result<(), Rejection> {
        let failed = || {
            Rejection::new(
                ErrorCode::ResumeFailed,
                "unknown, expired or already used resume token",
            )
        };
        let token = u128::from_str_radix(token, 16).map_err(|_| failed())?;
        self.forget_expired(now.instant);
        if let Some(&old) = self.resumable.get(&token) {
            if old == id {
                return Err(failed());
            }
            self.take_over(id, old, actions);
            return Ok(());
        }
        let departed = self.departed.remove(&token).ok_or_else(failed)?;
        // The earlier session is gone: this one takes its name if nobody else has, and its room.
        let renamed = self.rename(id, &departed.nickname, actions);
        self.join(id, departed.room, actions)?;
        renamed
    }

    /// Session `new` becomes `old`: `old`'s connection is closed, and `new` takes its nickname and
    /// its place in its room without the room hearing anybody leave or join.
    fn take_over(&mut self, new: SessionId, old: SessionId, actions: &mut Vec<Action>) {
        let Some(mut client) = self.clients.remove(&old) else {
            return;
        };
        self.resumable.remove(&client.resume);
        actions.push(Action::Close {
            client: old,
            code: RESUMED_ELSEWHERE,
            reason: "resumed by a new connection".into(),
        });
        // The new connection's own anonymous identity goes.
        if let Some(current) = self.clients.remove(&new) {
            self.nicknames.remove(&NameKey::of(&current.nickname));
            self.resumable.remove(&current.resume);
            self.leave_room(new, &current.room, &current.nickname, current.entered, actions);
            // The session now lives on the new connection, and counts for its address.
            self.release_host(client.host);
            client.host = current.host;
            client.bucket = current.bucket;
        }
        self.nicknames.insert(NameKey::of(&client.nickname), new);
        if let Some(room) = self.rooms.get_mut(&client.room) {
            if room.members.remove(&old) {
                room.members.insert(new);
            }
            for waiting in &mut room.entering {
                if *waiting == old {
                    *waiting = new;
                }
            }
        }
        let (room, entered) = (client.room.clone(), client.entered);
        client.resume = self.new_resume_token(new);
        // Answers ready for the old connection die with it. Those still waiting for the store go
        // to the new one: the acks (with their keys) of what the old connection sent, and the
        // welcome of a room it was entering.
        client
            .answers
            .retain(|answer| matches!(answer, Answer::Waiting(_)));
        self.clients.insert(new, client);
        if entered {
            let welcome = self.welcome(new, &room);
            self.respond(new, welcome, actions);
        }
    }

    /// Puts `id` in `room`: at once if the cache holds the room's recent history, otherwise once the
    /// store has read it (the session waits outside meanwhile, so it misses nothing that is
    /// committed after the read and sees nothing twice).
    fn enter_room(&mut self, id: SessionId, room: String, actions: &mut Vec<Action>) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        client.room = room.clone();
        client.entered = false;
        if self.history.knows(&room) {
            self.admit(&[id], &room, None, actions);
            return;
        }
        let entry = self.rooms.entry(room.clone()).or_default();
        entry.entering.push(id);
        let token = match entry.loading {
            // The read is already in flight: this session waits for the same page.
            Some(token) => token,
            None => {
                let token = self.next_token();
                actions.push(Action::Store(Command::Read(store::Read {
                    token,
                    room: room.clone(),
                    range: Range::Latest,
                    limit: self.config.history_size,
                })));
                self.pending.insert(token, Pending::Enter { room: room.clone() });
                if let Some(entry) = self.rooms.get_mut(&room) {
                    entry.loading = Some(token);
                }
                token
            }
        };
        self.await_store(id, token);
    }

    /// The recent history of a room arrived: every session waiting for it enters.
    fn on_room_loaded(
        &mut self,
        token: Token,
        room: &str,
        result: Result<store::Page, store::StoreError>,
        actions: &mut Vec<Action>,
    ) {
        let failed = result.is_err();
        if let Ok(page) = result {
            self.history
                .fill(room, page.messages.into_iter().map(ChatMessage::from).collect());
        }
        let waiting = match self.rooms.get_mut(room) {
            Some(entry) => {
                entry.loading = None;
                std::mem::take(&mut entry.entering)
            }
            None => Vec::new(),
        };
        // A session that moved on (or left) meanwhile no longer wants this room; it still owes
        // nothing for this read.
        let (entering, moved): (Vec<SessionId>, Vec<SessionId>) = waiting.into_iter().partition(|id| {
            self.clients
                .get(id)
                .is_some_and(|client| client.room == room && !client.entered)
        });
        for id in moved {
            self.resolve_silently(id, token, actions);
        }
        if failed {
            for &id in &entering {
                let message = "the room's history could not be read; it is shown from memory";
                let json = error_json(ErrorCode::StoreUnavailable, message.into());
                self.respond_before(id, token, json, actions);
            }
        }
        self.admit(&entering, room, Some(token), actions);
    }

    /// Makes `entering` members of `room`: `welcome` to each (the answer owed for `token`, when
    /// they waited for the room's history), `joined` to those who were there. Sessions that enter
    /// together find each other in their welcome's online list rather than in `joined` notices, so
    /// a crowd entering at once (a reconnect storm after a restart) costs one welcome each, not a
    /// notice per pair.
    fn admit(&mut self, entering: &[SessionId], room: &str, token: Option<Token>, actions: &mut Vec<Action>) {
        let present = self.members(room, None);
        let entry = self.rooms.entry(room.to_owned()).or_default();
        let mut nicknames = Vec::with_capacity(entering.len());
        for &id in entering {
            if let Some(client) = self.clients.get_mut(&id) {
                client.entered = true;
                entry.members.insert(id);
                nicknames.push(client.nickname.clone());
            }
        }
        for &id in entering {
            let welcome = self.welcome(id, room);
            match token {
                Some(token) => self.resolve(id, token, welcome, actions),
                None => self.respond(id, welcome, actions),
            }
        }
        if present.is_empty() {
            return;
        }
        for nickname in nicknames {
            let joined = Outbound::Joined {
                room,
                nickname: &nickname,
            }
            .json();
            actions.push(Action::Send {
                to: present.clone(),
                json: joined,
            });
        }
    }

    /// What a client is told on entering `room`: its name, who is there, the room's recent history
    /// (as far as memory holds it), the store's epoch and its resume token.
    fn welcome(&self, id: SessionId, room: &str) -> Rc<str> {
        let Some(client) = self.clients.get(&id) else {
            return Rc::from("");
        };
        let resume = format!("{:032x}", client.resume);
        Outbound::Welcome {
            nickname: &client.nickname,
            room,
            online: self.online(room),
            history: self.history.latest(room).unwrap_or_default(),
            epoch: &self.epoch,
            resume: &resume,
        }
        .json()
    }

    // --- answers, in the order of the requests ------------------------------------------------

    /// Sends `json` to `id` as the answer to its latest request: now, unless answers to earlier
    /// requests are still owed (the store has not replied), then after them.
    fn respond(&mut self, id: SessionId, json: Rc<str>, actions: &mut Vec<Action>) {
        self.queue_answer(id, Answer::Ready(json), actions);
    }

    /// An `error` answer.
    fn reject(&mut self, id: SessionId, code: ErrorCode, message: String, actions: &mut Vec<Action>) {
        self.respond(id, error_json(code, message), actions);
    }

    fn queue_answer(&mut self, id: SessionId, answer: Answer, actions: &mut Vec<Action>) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        client.answers.push_back(answer);
        self.release_answers(id, actions);
    }

    /// `id`'s next answers wait for the store's reply to `token`.
    fn await_store(&mut self, id: SessionId, token: Token) {
        if let Some(client) = self.clients.get_mut(&id) {
            client.answers.push_back(Answer::Waiting(token));
        }
    }

    /// The store replied to `token`: `json` is `id`'s answer for it, and whatever waited behind it
    /// goes too.
    fn resolve(&mut self, id: SessionId, token: Token, json: Rc<str>, actions: &mut Vec<Action>) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        if let Some(slot) = client
            .answers
            .iter_mut()
            .find(|answer| matches!(answer, Answer::Waiting(waiting) if *waiting == token))
        {
            *slot = Answer::Ready(json);
        }
        self.release_answers(id, actions);
    }

    /// The reply to `token` owes `id` nothing after all (it left the room it was entering).
    fn resolve_silently(&mut self, id: SessionId, token: Token, actions: &mut Vec<Action>) {
        if let Some(client) = self.clients.get_mut(&id) {
            client
                .answers
                .retain(|answer| !matches!(answer, Answer::Waiting(waiting) if *waiting == token));
        }
        self.release_answers(id, actions);
    }

    /// Puts `json` just before the answer still waiting for `token` (an error that explains it).
    fn respond_before(&mut self, id: SessionId, token: Token, json: Rc<str>, actions: &mut Vec<Action>) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let at = client
            .answers
            .iter()
            .position(|answer| matches!(answer, Answer::Waiting(waiting) if *waiting == token))
            .unwrap_or(client.answers.len());
        client.answers.insert(at, Answer::Ready(json));
        self.release_answers(id, actions);
    }

    /// Sends the answers at the front of `id`'s queue that are ready.
    fn release_answers(&mut self, id: SessionId, actions: &mut Vec<Action>) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        while let Some(answer) = client.answers.front() {
            match answer {
                Answer::Waiting(_) => return,
                Answer::Ready(json) => actions.push(Action::Send {
                    to: vec![id],
                    json: json.clone(),
                }),
                Answer::Close(code, reason) => actions.push(Action::Close {
                    client: id,
                    code: *code,
                    reason: reason.clone(),
                }),
            }
            client.answers.pop_front();
        }
    }

    fn leave_room(
        &mut self,
        id: SessionId,
        room: &str,
        nickname: &str,
        entered: bool,
        actions: &mut Vec<Action>,
    ) {
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        let was_waiting = entry.entering.contains(&id);
        entry.entering.retain(|waiting| *waiting != id);
        if let (true, Some(token)) = (was_waiting, entry.loading) {
            // It leaves before the room's history arrived: that read owes it no welcome, and the
            // answers queued behind it must not wait for one.
            self.resolve_silently(id, token, actions);
            return;
        }
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        if !entered || !entry.members.remove(&id) {
            return;
        }
        let json = Outbound::Left { room, nickname }.json();
        actions.push(Action::Send {
            to: self.members(room, None),
            json,
        });
    }

    /// Rooms nobody is in or entering hold nothing the store does not have: forget them, their
    /// cached history first, least recently active first.
    fn forget_unused_rooms(&mut self) {
        let mut unused: Vec<(u64, String)> = self
            .rooms
            .iter()
            .filter(|(name, room)| {
                name.as_str() != LOBBY && room.members.is_empty() && room.entering.is_empty()
            })
            .map(|(name, _)| (self.history.newest_id(name), name.clone()))
            .collect();
        unused.sort();
        let excess = (self.rooms.len() + 1).saturating_sub(self.config.max_rooms);
        for (_, name) in unused.into_iter().take(excess.max(1)) {
            self.rooms.remove(&name);
            self.history.forget(&name);
        }
    }

    fn members(&self, room: &str, except: Option<SessionId>) -> Vec<SessionId> {
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

    fn fresh_anonymous_name(&mut self) -> String {
        loop {
            self.anonymous_count += 1;
            let name = format!("Anonymous{}", self.anonymous_count);
            if !self.nicknames.contains_key(&NameKey::of(&name)) {
                return name;
            }
        }
    }

    fn next_token(&mut self) -> Token {
        self.last_token += 1;
        self.last_token
    }

    /// A fresh resume token for `id`, never one in use or remembered.
    fn new_resume_token(&mut self, id: SessionId) -> u128 {
        loop {
            let token = (self.tokens)();
            if !self.resumable.contains_key(&token) && !self.departed.contains_key(&token) {
                self.resumable.insert(token, id);
                return token;
            }
        }
    }

    fn forget_expired(&mut self, now: Instant) {
        while let Some(&(expires, token)) = self.expiring.front() {
            if expires > now {
                break;
            }
            self.expiring.pop_front();
            if self
                .departed
                .get(&token)
                .is_some_and(|departed| departed.expires <= now)
            {
                self.departed.remove(&token);
            }
        }
    }
}

/// An `error` event.
fn error_json(code: ErrorCode, message: String) -> Rc<str> {
    Outbound::Error { code, message }.json()
}

#[cfg(test)]
mod tests;
