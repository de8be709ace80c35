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
//! says it is durable, and only as it comes back through the store's *feed* of its room
//! ([`feed`]; [`Outcome::Posted`]): the feed is one order per room, the same for every process
//! sharing the store, so every client of a room sees the same messages in the same order, and the
//! sender's `ack` takes its message's place in it. A message the store refuses is answered with
//! `error` `store_unavailable` and nothing else (never shown "locally" first). A message with a key
//! the room has already accepted is not stored again: its sender gets the original `ack`. A hole in
//! the feed is read from the store's history before anything after it is shown; a hole the history
//! no longer holds is announced (`missed`), never silent.
//!
//! **One code path for one process and many.** What must hold across processes is asked of the
//! store too: nicknames are leases ([`Command::Claim`]; anonymous names come from the store, so two
//! processes never give the same one), presence is kept by the store and read back
//! ([`Command::Members`]: the `online` list and `joined`/`left` of members on other processes),
//! and resume tokens live in the store, so a session resumes on any process. A store of one process
//! answers all of it at once from memory ([`crate::store::local`]).
//!
//! **Requests in order.** A client's requests are handled one after another. While one waits for a
//! nickname claim or a resume token, the requests after it wait too (held, at most
//! [`MAX_HELD_INPUTS`]); answers go out in the order of the requests (`Chat::respond` queues each
//! behind those still owed).
//!
//! **What stays in memory**: this process's sessions, the rooms they are in, and a cache of each
//! room's recent messages within one byte budget ([`history::HistoryCache`]). A `welcome` is
//! answered from the cache when it holds the room's recent history; otherwise the session waits for
//! the store to read it, and enters the room (receiving its messages) at the moment that page
//! arrives, so it misses nothing and sees nothing twice.
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
//!
//! The server also sends, unasked: `message`, `joined`, `left`, `renamed` (others' doings),
//! `missed` (a hole the store no longer holds), and a fresh `welcome` when the store's epoch changed.

pub mod feed;
mod history;
pub mod names;
mod protocol;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use feed::{CATCH_UP_PAGE, Feed, Progress, Step};
pub use history::HistoryCache;
use names::NameKey;
pub use protocol::{ChatMessage, ErrorCode, MAX_NAME_CHARS};
use protocol::{HistoryRange, Inbound, Outbound, Rejection, parse_inbound};

use crate::http::forwarded::IpPrefix;
use crate::store::{
    self, Appended, Claim, Claimed, Command, IdempotencyKey, LeaseRef, Member, NewMessage, Nickname, Outcome,
    Posted, Range, Resumable, Token,
};
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

/// Requests a client may have waiting behind a nickname claim or a resume token in flight. The
/// rate limit's burst (20 by default) fits; a client that sends more while it waits is refused.
pub const MAX_HELD_INPUTS: usize = 64;

/// The name of this process among those sharing a store, when nobody set one.
pub const DEFAULT_NODE: &str = "local";

#[derive(Debug)]
struct Client {
    /// Empty until the store gave the session its first nickname.
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
    /// The holder of its nickname's lease and of its presence entries: `<node>.<session>`, unique
    /// across processes. It moves with the session when a resume takes it over on this process.
    owner: String,
    /// Answers to this client's requests, in the order of the requests: an answer that is ready
    /// waits behind one the store has not given yet (see [`Chat::respond`]).
    answers: VecDeque<Answer>,
    /// A nickname claim or resume-token read in flight: the client's later requests wait for it.
    busy: Option<Token>,
    /// Those requests, with the time each arrived.
    held: VecDeque<(String, Now)>,
}

/// One answer owed to a client.
#[derive(Debug)]
enum Answer {
    /// Waiting for the store's reply to this command (or for a room's welcome).
    Waiting(Token),
    /// Ready to go once everything before it has gone.
    Ready(Rc<str>),
    /// Close the connection (a flood), after the answers before it.
    Close(CloseCode, String),
}

/// A post the store stored, whose `ack` waits until the room's feed reaches its id.
#[derive(Debug)]
struct Parked {
    session: SessionId,
    key: Option<String>,
}

/// The reading of a room's members on every process.
#[derive(Debug, Default)]
struct PresenceRead {
    /// A first answer came: the room's `online` list is complete.
    loaded: bool,
    reading: Option<Token>,
    /// Asked again while a read was in flight.
    again: bool,
}

#[derive(Debug, Default)]
struct Room {
    members: BTreeSet<SessionId>,
    /// Sessions waiting to enter, with the token their welcome answers, in arrival order.
    entering: Vec<(SessionId, Token)>,
    feed: Feed,
    /// Members on other processes: owner → nickname.
    remote: BTreeMap<String, String>,
    presence: PresenceRead,
    /// Stored posts of this process's clients waiting for the feed, by (id, post token).
    parked: BTreeMap<(u64, Token), Parked>,
}

/// A store command whose answer is awaited.
#[derive(Debug)]
enum Pending {
    /// A message to acknowledge once stored and come through its room's feed.
    Post {
        session: SessionId,
        room: String,
        key: Option<String>,
    },
    /// A room's recent history: the feed's load, and the welcome of those entering.
    Load { room: String },
    /// A hole in a room's feed.
    CatchUp { room: String },
    /// A `history` request.
    History { session: SessionId, room: String },
    /// A room's members on every process.
    Members { room: String },
    /// A nickname lease.
    Claim {
        session: SessionId,
        owner: String,
        purpose: ClaimFor,
    },
    /// A resume token's session.
    Resume { session: SessionId },
}

/// Why a nickname is claimed.
#[derive(Debug)]
enum ClaimFor {
    /// A new session's anonymous name.
    Connect,
    /// A `nickname` request for this name.
    Rename { nickname: String },
    /// A `resume` of a session that ended, or lives on another process: its name, then its room.
    Adopt {
        room: String,
        from: String,
        nickname: String,
    },
}

/// The broadcast table.
pub struct Chat {
    config: ChatConfig,
    /// This process's name among those sharing the store.
    node: String,
    /// The store's epoch, as clients see it.
    epoch: String,
    clients: HashMap<SessionId, Client>,
    /// Rate limits per client address.
    hosts: HashMap<IpPrefix, Host>,
    rooms: HashMap<String, Room>,
    /// The nickname keys ([`NameKey`]: normalized, case-folded) this process's sessions hold → the
    /// session: a quick refusal of a name taken here, without asking the store.
    nicknames: HashMap<NameKey, SessionId>,
    history: HistoryCache,
    pending: HashMap<Token, Pending>,
    last_token: Token,
    tokens: TokenSource,
    /// Live sessions by resume token (the store has the token too, for other processes).
    resumable: HashMap<u128, SessionId>,
    /// Messages stored and shown since the start (by this process's feed: every process counts
    /// every message of the rooms it follows).
    accepted: u64,
}

impl std::fmt::Debug for Chat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat")
            .field("node", &self.node)
            .field("clients", &self.clients.len())
            .field("rooms", &self.rooms.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// The process part of an owner (`<node>.<session>`).
fn node_of(owner: &str) -> &str {
    owner.rsplit_once('.').map_or(owner, |(node, _)| node)
}

/// A resume token as clients and the store see it.
fn token_text(token: u128) -> String {
    format!("{token:032x}")
}

impl Chat {
    /// A chat over a store whose epoch is `epoch`, drawing resume tokens from `tokens`.
    pub fn new(config: ChatConfig, epoch: String, tokens: TokenSource) -> Self {
        let history = HistoryCache::new(config.history_size, config.history_memory);
        Self {
            config,
            node: DEFAULT_NODE.to_owned(),
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
            accepted: 0,
        }
    }

    /// Names this process among those sharing the store (no `.` in it: owners are
    /// `<node>.<session>`). Set before the first session connects.
    pub fn set_node(&mut self, node: &str) {
        node.replace('.', "-").clone_into(&mut self.node);
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The store's epoch, as clients are told.
    pub fn epoch(&self) -> &str {
        &self.epoch
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

    /// A client connected from `addr`: the store gives it a nickname, then it joins the lobby and
    /// receives `welcome`.
    pub fn connect(&mut self, id: SessionId, addr: IpAddr, now: Now, actions: &mut Vec<Action>) {
        let owner = format!("{}.{}", self.node, id.0);
        let host = IpPrefix::host(addr);
        let host_rate = self.config.host_rate();
        self.hosts
            .entry(host)
            .or_insert_with(|| Host {
                bucket: TokenBucket::full(host_rate, now.instant),
                sessions: 0,
            })
            .sessions += 1;
        let resume = self.new_resume_token(id);
        self.clients.insert(
            id,
            Client {
                nickname: String::new(),
                room: String::new(),
                entered: false,
                bucket: TokenBucket::full(self.config.session_rate(), now.instant),
                host,
                strikes: 0,
                resume,
                owner,
                answers: VecDeque::new(),
                busy: None,
                held: VecDeque::new(),
            },
        );
        self.claim(id, None, None, ClaimFor::Connect, actions);
    }

    /// A client left: the room hears `left`, its nickname is free, and its resume token stays
    /// valid for a while.
    pub fn disconnect(&mut self, id: SessionId, _now: Now, actions: &mut Vec<Action>) {
        let Some(client) = self.clients.remove(&id) else {
            return;
        };
        self.release_host(client.host);
        self.resumable.remove(&client.resume);
        if client.nickname.is_empty() {
            return; // Never named, never welcomed: nothing to give back.
        }
        self.drop_name(id, &client, actions);
        let room = if client.room.is_empty() {
            LOBBY.to_owned()
        } else {
            client.room.clone()
        };
        actions.push(Action::Store(Command::PutToken {
            resume: token_text(client.resume),
            session: Resumable {
                nickname: client.nickname.clone(),
                room,
                owner: client.owner.clone(),
            },
            ttl: self.config.resume_ttl,
            live: false,
        }));
        self.leave_room(id, &client, actions);
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
        if client.busy.is_some() {
            if client.held.len() >= MAX_HELD_INPUTS {
                let message = format!("too many requests waiting (at most {MAX_HELD_INPUTS})");
                self.reject(id, ErrorCode::RateLimited, message, actions);
            } else {
                client.held.push_back((text.to_owned(), now));
            }
            return;
        }
        self.handle(id, text, now, actions);
    }

    /// Parses and applies one request.
    fn handle(&mut self, id: SessionId, text: &str, now: Now, actions: &mut Vec<Action>) {
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

    /// The requests that waited behind a claim, now that it is answered (until another waits).
    fn resume_inputs(&mut self, id: SessionId, actions: &mut Vec<Action>) {
        loop {
            let Some(client) = self.clients.get_mut(&id) else {
                return;
            };
            if client.busy.is_some() {
                return;
            }
            let Some((text, now)) = client.held.pop_front() else {
                return;
            };
            self.handle(id, &text, now, actions);
        }
    }

    /// The store answered a command the chat gave it, or told news of its own accord.
    pub fn on_store(&mut self, outcome: Outcome, actions: &mut Vec<Action>) {
        match outcome {
            Outcome::Posted(posted) => self.on_posted(posted, actions),
            Outcome::Following { room } => {
                if let Some(entry) = self.rooms.get_mut(&room) {
                    let progress = entry.feed.following();
                    self.feed_progress(&room, progress, actions);
                }
            }
            Outcome::PresenceChanged { room } => self.read_members(&room, actions),
            Outcome::LeaseLost { owner } => self.lease_lost(&owner, actions),
            Outcome::Evicted { owner } => self.evicted(&owner, actions),
            Outcome::Epoch(epoch) => self.new_epoch(epoch.to_string(), actions),
            answer => self.on_answer(answer, actions),
        }
    }

    /// An answer to a command with a token.
    fn on_answer(&mut self, outcome: Outcome, actions: &mut Vec<Action>) {
        let Some(pending) = outcome.token().and_then(|token| self.pending.remove(&token)) else {
            return;
        };
        match (pending, outcome) {
            (Pending::Post { session, room, key }, Outcome::Append { token, result }) => {
                self.on_stored(token, session, &room, key, result, actions)
            }
            (Pending::Load { room }, Outcome::Read { token, result }) => {
                self.on_loaded(token, &room, result, actions)
            }
            (Pending::CatchUp { room }, Outcome::Read { token, result }) => {
                if let Some(entry) = self.rooms.get_mut(&room)
                    && let Some(progress) = entry.feed.caught_up(token, result.as_ref().ok())
                {
                    self.feed_progress(&room, progress, actions);
                }
            }
            (Pending::History { session, room }, Outcome::Read { token, result }) => {
                self.on_history(token, session, &room, result, actions)
            }
            (Pending::Members { room }, Outcome::Members { token, result }) => {
                self.on_members(token, &room, result, actions)
            }
            (
                Pending::Claim {
                    session,
                    owner,
                    purpose,
                },
                Outcome::Claim { token, result },
            ) => self.on_claimed(token, session, owner, purpose, result, actions),
            (Pending::Resume { session }, Outcome::Token { token, result }) => {
                self.on_token(token, session, result, actions)
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
            Inbound::Resume(token) => self.resume(id, &token, actions),
        }
    }

    // --- nicknames: leases in the store -----------------------------------------------------------

    /// Asks the store for a nickname's lease (`None`: the next anonymous one); the client's later
    /// requests wait for the answer.
    fn claim(
        &mut self,
        id: SessionId,
        nickname: Option<Nickname>,
        replacing: Option<String>,
        purpose: ClaimFor,
        actions: &mut Vec<Action>,
    ) {
        let token = self.next_token();
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        client.busy = Some(token);
        let owner = client.owner.clone();
        actions.push(Action::Store(Command::Claim(Claim {
            token,
            nickname,
            owner: owner.clone(),
            replacing,
        })));
        self.pending.insert(
            token,
            Pending::Claim {
                session: id,
                owner,
                purpose,
            },
        );
    }

    fn rename(&mut self, id: SessionId, nickname: &str, actions: &mut Vec<Action>) -> Result<(), Rejection> {
        let key = NameKey::of(nickname);
        let Some(client) = self.clients.get(&id) else {
            return Ok(());
        };
        if NameKey::of(&client.nickname) == key {
            // The lease is the same: only the way it is written changes.
            self.apply_rename(id, nickname, actions);
            return Ok(());
        }
        if self.nicknames.get(&key).is_some_and(|owner| *owner != id) {
            return Err(taken(nickname));
        }
        let wanted = Nickname {
            display: nickname.to_owned(),
            key: key.as_str().to_owned(),
        };
        let purpose = ClaimFor::Rename {
            nickname: nickname.to_owned(),
        };
        self.claim(id, Some(wanted), None, purpose, actions);
        Ok(())
    }

    /// The store answered a claim.
    fn on_claimed(
        &mut self,
        token: Token,
        session: SessionId,
        owner: String,
        purpose: ClaimFor,
        result: Result<Claimed, store::StoreError>,
        actions: &mut Vec<Action>,
    ) {
        let current = self
            .clients
            .get_mut(&session)
            .filter(|client| client.busy == Some(token));
        let Some(client) = current else {
            // Its session is gone, or moved on: a lease it got is nobody's.
            if let Ok(Claimed::Held { nickname }) = result {
                let key = NameKey::of(&nickname).as_str().to_owned();
                actions.push(Action::Store(Command::Release(LeaseRef { key, owner })));
            }
            return;
        };
        client.busy = None;
        match (purpose, result) {
            (ClaimFor::Connect, Ok(Claimed::Held { nickname })) => {
                self.nicknames.insert(NameKey::of(&nickname), session);
                if let Some(client) = self.clients.get_mut(&session) {
                    client.nickname = nickname;
                }
                self.enter_room(session, LOBBY.to_owned(), actions);
            }
            (ClaimFor::Connect, failed) => {
                let why = match failed {
                    Err(error) => error.to_string(),
                    Ok(_) => "the store has no anonymous nickname left".to_owned(),
                };
                let message = format!("no nickname can be given now: {why}");
                self.reject(session, ErrorCode::StoreUnavailable, message, actions);
                let reason = "no nickname available; try again later".to_owned();
                self.queue_answer(session, Answer::Close(CloseCode::TryAgainLater, reason), actions);
            }
            (ClaimFor::Rename { nickname }, result) => {
                if let Err(Rejection(code, message)) = self.claimed(session, &nickname, result, actions) {
                    self.reject(session, code, message, actions);
                }
            }
            (ClaimFor::Adopt { room, from, nickname }, result) => {
                let renamed = self.claimed(session, &nickname, result, actions);
                if renamed.is_ok() && node_of(&from) != self.node {
                    // The session lives on another process: that one closes it.
                    actions.push(Action::Store(Command::Evict { owner: from }));
                }
                let joined = self.join(session, room, actions);
                for result in [joined, renamed] {
                    if let Err(Rejection(code, message)) = result {
                        self.reject(session, code, message, actions);
                    }
                }
            }
        }
        self.resume_inputs(session, actions);
    }

    /// A rename's claim answered: the name is the session's now, or the refusal to send.
    fn claimed(
        &mut self,
        session: SessionId,
        wanted: &str,
        result: Result<Claimed, store::StoreError>,
        actions: &mut Vec<Action>,
    ) -> Result<(), Rejection> {
        match result {
            Ok(Claimed::Held { nickname }) => {
                self.apply_rename(session, &nickname, actions);
                Ok(())
            }
            Ok(Claimed::Taken) => Err(taken(wanted)),
            Err(error) => Err(Rejection::new(ErrorCode::StoreUnavailable, error.to_string())),
        }
    }

    /// `id` is called `nickname` now (its lease is held): the old name's lease goes back, the room
    /// hears `renamed`, the store's presence and resume token follow.
    fn apply_rename(&mut self, id: SessionId, nickname: &str, actions: &mut Vec<Action>) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let from = std::mem::replace(&mut client.nickname, nickname.to_owned());
        let (room, entered, owner) = (client.room.clone(), client.entered, client.owner.clone());
        let (old_key, new_key) = (NameKey::of(&from), NameKey::of(nickname));
        if old_key != new_key {
            if self.nicknames.get(&old_key) == Some(&id) {
                self.nicknames.remove(&old_key);
            }
            self.nicknames.insert(new_key, id);
            if !from.is_empty() {
                let key = old_key.as_str().to_owned();
                actions.push(Action::Store(Command::Release(LeaseRef {
                    key,
                    owner: owner.clone(),
                })));
            }
        }
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
            actions.push(Action::Store(Command::Present {
                room,
                owner,
                nickname: nickname.to_owned(),
            }));
        }
        // The renamed client's copy is the answer to its request, so it keeps its place among its
        // answers (after the `ack` of a message sent before); a client still entering its room is
        // told alone, and the room learns the name when it enters.
        self.respond(id, json, actions);
        self.save_token(id, actions);
    }

    /// `client` (session `id`) lets go of its nickname.
    fn drop_name(&mut self, id: SessionId, client: &Client, actions: &mut Vec<Action>) {
        if client.nickname.is_empty() {
            return;
        }
        let key = NameKey::of(&client.nickname);
        if self.nicknames.get(&key) == Some(&id) {
            self.nicknames.remove(&key);
        }
        actions.push(Action::Store(Command::Release(LeaseRef {
            key: key.as_str().to_owned(),
            owner: client.owner.clone(),
        })));
    }

    /// The store could not keep `owner`'s nickname: somebody else may hold it now, so its client
    /// is closed (1013) rather than go on under a name that may be two people's.
    fn lease_lost(&mut self, owner: &str, actions: &mut Vec<Action>) {
        let lost: Vec<SessionId> = self
            .clients
            .iter()
            .filter(|(_, client)| client.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        for client in lost {
            actions.push(Action::Close {
                client,
                code: CloseCode::TryAgainLater,
                reason: "the nickname's lease could not be kept; reconnect".into(),
            });
        }
    }

    // --- messages ---------------------------------------------------------------------------------

    /// Validates a message and asks the store to persist it; nobody sees it before the store's
    /// feed brings it back ([`Chat::deliver_posted`]).
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
        let token = self.next_token();
        let Some(client) = self.clients.get(&id) else {
            return Ok(());
        };
        let room = client.room.clone();
        let lease = LeaseRef {
            key: NameKey::of(&client.nickname).as_str().to_owned(),
            owner: client.owner.clone(),
        };
        let message = NewMessage {
            token,
            room: room.clone(),
            nickname: client.nickname.clone(),
            text,
            ts: now.unix_ms,
            key: key.clone(),
            lease: Some(lease),
        };
        actions.push(Action::Store(Command::Append(vec![message])));
        self.pending.insert(
            token,
            Pending::Post {
                session: id,
                room,
                key: key.map(|key| key.as_str().to_owned()),
            },
        );
        self.await_store(id, token);
        Ok(())
    }

    /// The store answered a message: durable now (or before, under the same key), or refused. The
    /// `ack` goes out once the room's feed has reached the message (at once, if it has).
    fn on_stored(
        &mut self,
        token: Token,
        session: SessionId,
        room: &str,
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
        let id = appended.id();
        if let Some(entry) = self.rooms.get_mut(room)
            && (!entry.feed.knows_where() || id > entry.feed.last_seen())
        {
            entry.parked.insert((id, token), Parked { session, key });
            return;
        }
        self.resolve(session, token, ack_json(id, key.as_deref()), actions);
    }

    /// A message the store announced.
    fn on_posted(&mut self, posted: Posted, actions: &mut Vec<Action>) {
        let room = posted.message.room.clone();
        let Some(entry) = self.rooms.get_mut(&room) else {
            return; // Not a room this process follows (any more).
        };
        let progress = entry.feed.posted(posted);
        self.feed_progress(&room, progress, actions);
    }

    /// Acts on what the feed of `room` did: deliveries, holes announced, reads to issue; then the
    /// acks it reached, and the sessions that can enter now.
    fn feed_progress(&mut self, room: &str, progress: Progress, actions: &mut Vec<Action>) {
        for step in progress.steps {
            match step {
                Step::Deliver(posted) => self.deliver_posted(room, posted, actions),
                Step::Missed { after, until } => {
                    let json = Outbound::Missed { room, after, until }.json();
                    actions.push(Action::Send {
                        to: self.members(room, None),
                        json,
                    });
                }
            }
        }
        if let Some(range) = progress.catch_up {
            let token = self.next_token();
            if let Some(entry) = self.rooms.get_mut(room) {
                entry.feed.started(token);
            }
            self.read(token, room, range, CATCH_UP_PAGE, actions);
            self.pending.insert(
                token,
                Pending::CatchUp {
                    room: room.to_owned(),
                },
            );
        }
        if progress.load {
            self.start_load(room, actions);
        }
        self.release_parked(room, actions);
        self.try_admit(room, actions);
    }

    /// Shows a message of the feed to its room: `message` to the members, and to its sender (if it
    /// is a client here) its `ack` in the message's place.
    fn deliver_posted(&mut self, room: &str, posted: Posted, actions: &mut Vec<Action>) {
        let id = posted.message.id;
        let mut own = None;
        if let Some(origin) = posted.origin
            && matches!(self.pending.get(&origin), Some(Pending::Post { room: posted_in, .. }) if posted_in == room)
            && let Some(Pending::Post { session, key, .. }) = self.pending.remove(&origin)
        {
            own = Some((session, origin, key));
        }
        if own.is_none()
            && let Some(entry) = self.rooms.get_mut(room)
            && let Some(&(parked_id, token)) = entry
                .parked
                .range((id, 0)..=(id, Token::MAX))
                .next()
                .map(|(k, _)| k)
            && let Some(parked) = entry.parked.remove(&(parked_id, token))
        {
            own = Some((parked.session, token, parked.key));
        }
        let sender = own.as_ref().map(|(session, ..)| *session);
        if let Some((session, token, key)) = own {
            self.resolve(session, token, ack_json(id, key.as_deref()), actions);
        }
        self.accepted += 1;
        let message = ChatMessage::from(posted.message);
        let json = Outbound::Message(&message).json();
        actions.push(Action::Send {
            to: self.members(room, sender),
            json,
        });
        self.history.push(Rc::new(message));
    }

    /// Sends the acks of stored posts the feed of `room` has reached.
    fn release_parked(&mut self, room: &str, actions: &mut Vec<Action>) {
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        if !entry.feed.knows_where() {
            return;
        }
        let reached = entry.feed.last_seen();
        let later = entry.parked.split_off(&(reached.saturating_add(1), 0));
        let released = std::mem::replace(&mut entry.parked, later);
        for ((id, token), parked) in released {
            self.resolve(
                parked.session,
                token,
                ack_json(id, parked.key.as_deref()),
                actions,
            );
        }
    }

    // --- rooms ------------------------------------------------------------------------------------

    fn join(&mut self, id: SessionId, room: String, actions: &mut Vec<Action>) -> Result<(), Rejection> {
        if !self.rooms.contains_key(&room) && self.rooms.len() >= self.config.max_rooms {
            return Err(Rejection::new(
                ErrorCode::BadPayload,
                "too many rooms; join an existing one",
            ));
        }
        let Some(client) = self.clients.get(&id) else {
            return Ok(());
        };
        if client.room == room {
            if client.entered {
                // Already there: a fresh welcome, without telling the room they left and came back.
                let welcome = self.welcome(id, &room);
                self.respond(id, welcome, actions);
            }
            return Ok(());
        }
        let (old_room, nickname, owner, entered) = (
            client.room.clone(),
            client.nickname.clone(),
            client.owner.clone(),
            client.entered,
        );
        self.leave(id, &old_room, &nickname, &owner, entered, actions);
        self.enter_room(id, room, actions);
        Ok(())
    }

    /// Puts `id` in `room`: at once if the room's feed is running and the cache holds its recent
    /// history, otherwise once the store has read it (the session waits outside meanwhile, so it
    /// misses nothing that comes after the read and sees nothing twice).
    fn enter_room(&mut self, id: SessionId, room: String, actions: &mut Vec<Action>) {
        let token = self.next_token();
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        client.room = room.clone();
        client.entered = false;
        client.answers.push_back(Answer::Waiting(token));
        if !self.rooms.contains_key(&room) {
            self.open_room(&room, actions);
        }
        if let Some(entry) = self.rooms.get_mut(&room) {
            entry.entering.push((id, token));
        }
        self.try_admit(&room, actions);
    }

    /// The first session of this process enters `room`: follow its feed, load its recent history,
    /// read who is there on other processes.
    fn open_room(&mut self, room: &str, actions: &mut Vec<Action>) {
        self.rooms.insert(room.to_owned(), Room::default());
        actions.push(Action::Store(Command::Follow {
            room: room.to_owned(),
        }));
        self.start_load(room, actions);
        self.read_members(room, actions);
    }

    /// The last session of this process left `room`: stop following it, forget its cache (other
    /// processes may add to it unheard), and send the acks that waited for its feed.
    fn close_room_if_empty(&mut self, room: &str, actions: &mut Vec<Action>) {
        let empty = self
            .rooms
            .get(room)
            .is_some_and(|entry| entry.members.is_empty() && entry.entering.is_empty());
        // The lobby is where every session starts: it is always followed.
        if !empty || room == LOBBY {
            return;
        }
        let Some(entry) = self.rooms.remove(room) else {
            return;
        };
        actions.push(Action::Store(Command::Unfollow {
            room: room.to_owned(),
        }));
        self.history.forget(room);
        for ((id, token), parked) in entry.parked {
            self.resolve(
                parked.session,
                token,
                ack_json(id, parked.key.as_deref()),
                actions,
            );
        }
    }

    /// Reads the room's recent history for its feed (first load, or a refill of the cache up to
    /// where the feed is).
    fn start_load(&mut self, room: &str, actions: &mut Vec<Action>) {
        let token = self.next_token();
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        let range = entry.feed.start_load(token);
        // At least one message even with no history shown: the page's newest id is where the feed
        // starts.
        let limit = self.config.history_size.max(1);
        self.read(token, room, range, limit, actions);
        self.pending.insert(
            token,
            Pending::Load {
                room: room.to_owned(),
            },
        );
    }

    fn read(&mut self, token: Token, room: &str, range: Range, limit: usize, actions: &mut Vec<Action>) {
        actions.push(Action::Store(Command::Read(store::Read {
            token,
            room: room.to_owned(),
            range,
            limit,
        })));
    }

    /// A load of a room's recent history arrived: the cache has it, the sessions waiting may enter
    /// (with an error first if it failed), and the news that waited goes on.
    fn on_loaded(
        &mut self,
        token: Token,
        room: &str,
        result: Result<store::Page, store::StoreError>,
        actions: &mut Vec<Action>,
    ) {
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        let Some(progress) = entry.feed.loaded(token, result.as_ref().ok()) else {
            return; // A load the feed gave up (the epoch changed).
        };
        match result {
            Ok(page) => {
                let messages = page.messages.into_iter().map(ChatMessage::from).collect();
                self.history.fill(room, messages);
                self.try_admit(room, actions);
            }
            Err(_) => {
                let entering = std::mem::take(&mut entry.entering);
                let message = "the room's history could not be read; it is shown from memory";
                let json = error_json(ErrorCode::StoreUnavailable, message.into());
                self.admit(entering, room, Some(json), actions);
            }
        }
        self.feed_progress(room, progress, actions);
    }

    /// Lets the sessions waiting to enter `room` in, if everything their welcome shows is known:
    /// the room's members everywhere, and its recent history up to where the feed is. Otherwise
    /// starts what is missing.
    fn try_admit(&mut self, room: &str, actions: &mut Vec<Action>) {
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        if entry.entering.is_empty() || !entry.presence.loaded || entry.feed.is_loading() {
            return;
        }
        let ready = entry.feed.knows_where() && self.history.knows(room);
        if !ready {
            // Unloaded (the first load failed), or the cache lost the room (memory budget): load,
            // unless a catch-up is running, after which this is tried again.
            if entry.feed.is_live() || !entry.feed.knows_where() {
                self.start_load(room, actions);
            }
            return;
        }
        let entering = std::mem::take(&mut entry.entering);
        self.admit(entering, room, None, actions);
    }

    /// Makes `entering` members of `room`: `welcome` to each (the answer owed for its token,
    /// `error` first if given), `joined` to those who were there. Sessions that enter together
    /// find each other in their welcome's online list rather than in `joined` notices, so a crowd
    /// entering at once (a reconnect storm after a restart) costs one welcome each, not a notice
    /// per pair.
    fn admit(
        &mut self,
        entering: Vec<(SessionId, Token)>,
        room: &str,
        error: Option<Rc<str>>,
        actions: &mut Vec<Action>,
    ) {
        let present = self.members(room, None);
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        let mut admitted = Vec::with_capacity(entering.len());
        let mut nicknames = Vec::with_capacity(entering.len());
        for (id, token) in entering {
            let Some(client) = self
                .clients
                .get_mut(&id)
                .filter(|client| client.room == room && !client.entered)
            else {
                continue;
            };
            client.entered = true;
            entry.members.insert(id);
            actions.push(Action::Store(Command::Present {
                room: room.to_owned(),
                owner: client.owner.clone(),
                nickname: client.nickname.clone(),
            }));
            if !entry.remote.values().any(|name| *name == client.nickname) {
                nicknames.push(client.nickname.clone());
            }
            admitted.push((id, token));
        }
        for (id, token) in admitted {
            if let Some(error) = &error {
                self.respond_before(id, token, error.clone(), actions);
            }
            let welcome = self.welcome(id, room);
            self.resolve(id, token, welcome, actions);
            self.save_token(id, actions);
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

    /// `client` (session `id`) leaves the room it is in or entering.
    fn leave_room(&mut self, id: SessionId, client: &Client, actions: &mut Vec<Action>) {
        self.leave(
            id,
            &client.room,
            &client.nickname,
            &client.owner,
            client.entered,
            actions,
        );
    }

    fn leave(
        &mut self,
        id: SessionId,
        room: &str,
        nickname: &str,
        owner: &str,
        entered: bool,
        actions: &mut Vec<Action>,
    ) {
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        if let Some(at) = entry.entering.iter().position(|(waiting, _)| *waiting == id) {
            // It no longer wants this room's welcome.
            let (_, token) = entry.entering.remove(at);
            self.resolve_silently(id, token, actions);
        }
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        if entered && entry.members.remove(&id) {
            actions.push(Action::Store(Command::Absent {
                room: room.to_owned(),
                owner: owner.to_owned(),
            }));
            // Still there on another process (a resume moving it): nobody left.
            if !entry.remote.values().any(|name| name == nickname) {
                let json = Outbound::Left { room, nickname }.json();
                actions.push(Action::Send {
                    to: self.members(room, None),
                    json,
                });
            }
        }
        self.close_room_if_empty(room, actions);
    }

    // --- presence on every process ----------------------------------------------------------------

    /// Reads who is in `room` on every process (one read at a time; asked during one, once more
    /// after it).
    fn read_members(&mut self, room: &str, actions: &mut Vec<Action>) {
        let token = self.next_token();
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        if entry.presence.reading.is_some() {
            entry.presence.again = true;
            return;
        }
        entry.presence.reading = Some(token);
        actions.push(Action::Store(Command::Members {
            token,
            room: room.to_owned(),
        }));
        self.pending.insert(
            token,
            Pending::Members {
                room: room.to_owned(),
            },
        );
    }

    /// The members of `room` on every process: those of other processes replace what was known,
    /// and the room hears who came, went or changed name there.
    fn on_members(
        &mut self,
        token: Token,
        room: &str,
        result: Result<Vec<Member>, store::StoreError>,
        actions: &mut Vec<Action>,
    ) {
        let local: BTreeSet<String> = self
            .members(room, None)
            .iter()
            .filter_map(|id| self.clients.get(id))
            .map(|client| client.nickname.clone())
            .collect();
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        if entry.presence.reading != Some(token) {
            return;
        }
        entry.presence.reading = None;
        if let Ok(members) = result {
            let remote: BTreeMap<String, String> = members
                .into_iter()
                .filter(|member| node_of(&member.owner) != self.node)
                .map(|member| (member.owner, member.nickname))
                .collect();
            let notices = if entry.presence.loaded {
                presence_notices(room, &entry.remote, &remote, &local)
            } else {
                Vec::new()
            };
            entry.remote = remote;
            let to: Vec<SessionId> = entry.members.iter().copied().collect();
            if !to.is_empty() {
                for json in notices {
                    actions.push(Action::Send { to: to.clone(), json });
                }
            }
        }
        // A failed read leaves the list as it was; the next change or refresh reads again.
        entry.presence.loaded = true;
        if std::mem::take(&mut entry.presence.again) {
            self.read_members(room, actions);
        }
        self.try_admit(room, actions);
    }

    // --- history requests -------------------------------------------------------------------------

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
        self.read(token, &room, range, limit, actions);
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

    // --- resume -----------------------------------------------------------------------------------

    /// `resume`: this connection takes the place of the session that was given `token`: at once if
    /// that session is live on this process, otherwise as the store remembers it.
    fn resume(&mut self, id: SessionId, token: &str, actions: &mut Vec<Action>) -> Result<(), Rejection> {
        let token = u128::from_str_radix(token, 16).map_err(|_| resume_failed())?;
        if let Some(&old) = self.resumable.get(&token) {
            if old == id {
                return Err(resume_failed());
            }
            self.take_over(id, old, actions);
            return Ok(());
        }
        let read = self.next_token();
        let Some(client) = self.clients.get_mut(&id) else {
            return Ok(());
        };
        client.busy = Some(read);
        actions.push(Action::Store(Command::TakeToken {
            token: read,
            resume: token_text(token),
        }));
        self.pending.insert(read, Pending::Resume { session: id });
        Ok(())
    }

    /// The store said what a resume token stands for.
    fn on_token(
        &mut self,
        token: Token,
        session: SessionId,
        result: Result<Option<Resumable>, store::StoreError>,
        actions: &mut Vec<Action>,
    ) {
        let Some(client) = self
            .clients
            .get_mut(&session)
            .filter(|client| client.busy == Some(token))
        else {
            return;
        };
        client.busy = None;
        let own_owner = client.owner.clone();
        match result {
            Ok(Some(resumed)) if resumed.owner != own_owner => {
                let live = self
                    .clients
                    .iter()
                    .find(|(_, client)| client.owner == resumed.owner)
                    .map(|(id, _)| *id);
                match live {
                    Some(old) => self.take_over(session, old, actions),
                    None => {
                        // It ended, or lives on another process: its name (taking the lease over
                        // from it), then its room.
                        let wanted = Nickname {
                            key: NameKey::of(&resumed.nickname).as_str().to_owned(),
                            display: resumed.nickname,
                        };
                        let purpose = ClaimFor::Adopt {
                            room: resumed.room,
                            from: resumed.owner.clone(),
                            nickname: wanted.display.clone(),
                        };
                        self.claim(session, Some(wanted), Some(resumed.owner), purpose, actions);
                    }
                }
            }
            Ok(_) => {
                let Rejection(code, message) = resume_failed();
                self.reject(session, code, message, actions);
            }
            Err(error) => self.reject(session, ErrorCode::StoreUnavailable, error.to_string(), actions),
        }
        self.resume_inputs(session, actions);
    }

    /// Session `new` becomes `old`: `old`'s connection is closed, and `new` takes its nickname and
    /// its place in its room without the room hearing anybody leave or join.
    fn take_over(&mut self, new: SessionId, old: SessionId, actions: &mut Vec<Action>) {
        let Some(mut client) = self.clients.remove(&old) else {
            return;
        };
        self.resumable.remove(&client.resume);
        actions.push(Action::Store(Command::DropToken {
            resume: token_text(client.resume),
        }));
        actions.push(Action::Close {
            client: old,
            code: RESUMED_ELSEWHERE,
            reason: "resumed by a new connection".into(),
        });
        // The new connection's own identity goes.
        if let Some(current) = self.clients.remove(&new) {
            self.resumable.remove(&current.resume);
            actions.push(Action::Store(Command::DropToken {
                resume: token_text(current.resume),
            }));
            self.drop_name(new, &current, actions);
            self.leave_room(new, &current, actions);
            // The session now lives on the new connection, and counts for its address.
            self.release_host(client.host);
            client.host = current.host;
            client.bucket = current.bucket;
        }
        if !client.nickname.is_empty() {
            self.nicknames.insert(NameKey::of(&client.nickname), new);
        }
        self.rename_session(old, new);
        let (room, entered) = (client.room.clone(), client.entered);
        client.resume = self.new_resume_token(new);
        // Answers ready for the old connection die with it, and so do its requests not yet
        // handled. Those still waiting for the store go to the new one: the acks (with their keys)
        // of what the old connection sent, and the welcome of a room it was entering.
        client
            .answers
            .retain(|answer| matches!(answer, Answer::Waiting(_)));
        client.held.clear();
        self.clients.insert(new, client);
        if entered {
            let welcome = self.welcome(new, &room);
            self.respond(new, welcome, actions);
        }
        self.save_token(new, actions);
    }

    /// Everything that names session `old` names `new` from now on: room places, awaited answers.
    fn rename_session(&mut self, old: SessionId, new: SessionId) {
        for entry in self.rooms.values_mut() {
            if entry.members.remove(&old) {
                entry.members.insert(new);
            }
            for (waiting, _) in &mut entry.entering {
                if *waiting == old {
                    *waiting = new;
                }
            }
            for parked in entry.parked.values_mut() {
                if parked.session == old {
                    parked.session = new;
                }
            }
        }
        for pending in self.pending.values_mut() {
            match pending {
                Pending::Post { session, .. }
                | Pending::History { session, .. }
                | Pending::Claim { session, .. }
                | Pending::Resume { session } => {
                    if *session == old {
                        *session = new;
                    }
                }
                Pending::Load { .. } | Pending::CatchUp { .. } | Pending::Members { .. } => {}
            }
        }
    }

    /// Another process resumed the session `owner`: close it here (its name and room are the
    /// other process's now; its token was used).
    fn evicted(&mut self, owner: &str, actions: &mut Vec<Action>) {
        let Some(id) = self
            .clients
            .iter()
            .find(|(_, client)| client.owner == owner)
            .map(|(id, _)| *id)
        else {
            return;
        };
        let Some(client) = self.clients.remove(&id) else {
            return;
        };
        self.resumable.remove(&client.resume);
        self.drop_name(id, &client, actions);
        self.leave_room(id, &client, actions);
        actions.push(Action::Close {
            client: id,
            code: RESUMED_ELSEWHERE,
            reason: "resumed by a new connection".into(),
        });
    }

    /// The store's data is another history now: every room is loaded again, and every client gets
    /// a fresh welcome naming the new epoch (the page then shows the new history, saying why).
    fn new_epoch(&mut self, epoch: String, actions: &mut Vec<Action>) {
        if epoch == self.epoch {
            return;
        }
        self.epoch = epoch;
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            self.history.forget(&room);
            let Some(entry) = self.rooms.get_mut(&room) else {
                continue;
            };
            // Acked under the old history; their ids mean nothing now, the acks still go.
            let parked = std::mem::take(&mut entry.parked);
            let members = std::mem::take(&mut entry.members);
            entry.feed.reset();
            entry.remote.clear();
            entry.presence = PresenceRead::default();
            for ((id, token), parked) in parked {
                self.resolve(
                    parked.session,
                    token,
                    ack_json(id, parked.key.as_deref()),
                    actions,
                );
            }
            for id in members {
                let token = self.next_token();
                if let Some(client) = self.clients.get_mut(&id) {
                    client.entered = false;
                    client.answers.push_back(Answer::Waiting(token));
                }
                if let Some(entry) = self.rooms.get_mut(&room) {
                    entry.entering.push((id, token));
                }
            }
            self.start_load(&room, actions);
            self.read_members(&room, actions);
        }
    }

    /// Tells the store what `id`'s resume token stands for now (its name and room), kept while the
    /// session runs.
    fn save_token(&mut self, id: SessionId, actions: &mut Vec<Action>) {
        let Some(client) = self.clients.get(&id).filter(|client| !client.nickname.is_empty()) else {
            return;
        };
        actions.push(Action::Store(Command::PutToken {
            resume: token_text(client.resume),
            session: Resumable {
                nickname: client.nickname.clone(),
                room: client.room.clone(),
                owner: client.owner.clone(),
            },
            ttl: self.config.resume_ttl,
            live: true,
        }));
    }

    /// What a client is told on entering `room`: its name, who is there (on every process), the
    /// room's recent history (as far as memory holds it), the store's epoch and its resume token.
    fn welcome(&self, id: SessionId, room: &str) -> Rc<str> {
        let Some(client) = self.clients.get(&id) else {
            return Rc::from("");
        };
        let resume = token_text(client.resume);
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

    /// Who is in `room`, here and on every other process, each name once.
    fn online(&self, room: &str) -> Vec<&str> {
        let Some(entry) = self.rooms.get(room) else {
            return Vec::new();
        };
        let here = entry
            .members
            .iter()
            .filter_map(|member| self.clients.get(member))
            .map(|client| client.nickname.as_str());
        let names: BTreeSet<&str> = here.chain(entry.remote.values().map(String::as_str)).collect();
        let mut names: Vec<&str> = names.into_iter().collect();
        // Lower-case each name once, not at every comparison.
        names.sort_by_cached_key(|name| name.to_lowercase());
        names
    }

    fn next_token(&mut self) -> Token {
        self.last_token += 1;
        self.last_token
    }

    /// A fresh resume token for `id`, never one in use here (the store's are 128 random bits, so
    /// another process's collide with a chance of one in 2^128).
    fn new_resume_token(&mut self, id: SessionId) -> u128 {
        loop {
            let token = (self.tokens)();
            if let std::collections::hash_map::Entry::Vacant(slot) = self.resumable.entry(token) {
                slot.insert(id);
                return token;
            }
        }
    }
}

/// What the room hears when the members of other processes change from `old` to `new` (owner →
/// nickname): `joined`, `left` and `renamed`, except for names that stay present (a session
/// moving between processes, or a name also held here: `local`).
fn presence_notices(
    room: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    local: &BTreeSet<String>,
) -> Vec<Rc<str>> {
    let names = |map: &BTreeMap<String, String>| -> BTreeSet<String> { map.values().cloned().collect() };
    let (before, after) = (names(old), names(new));
    let mut notices = Vec::new();
    for (owner, nickname) in new {
        if let Some(was) = old.get(owner)
            && was != nickname
        {
            notices.push(
                Outbound::Renamed {
                    room,
                    from: was,
                    to: nickname,
                }
                .json(),
            );
        }
    }
    let renamed_from: BTreeSet<&String> = new.keys().filter_map(|owner| old.get(owner)).collect();
    let renamed_to: BTreeSet<&String> = new
        .iter()
        .filter(|(owner, nickname)| old.get(*owner).is_some_and(|was| was != *nickname))
        .map(|(_, nickname)| nickname)
        .collect();
    for nickname in before.difference(&after) {
        if !local.contains(nickname) && !renamed_from.contains(nickname) {
            notices.push(Outbound::Left { room, nickname }.json());
        }
    }
    for nickname in after.difference(&before) {
        if !local.contains(nickname) && !renamed_to.contains(nickname) {
            notices.push(Outbound::Joined { room, nickname }.json());
        }
    }
    notices
}

fn taken(nickname: &str) -> Rejection {
    Rejection::new(ErrorCode::NicknameTaken, format!("{nickname:?} is taken"))
}

fn resume_failed() -> Rejection {
    Rejection::new(
        ErrorCode::ResumeFailed,
        "unknown, expired or already used resume token",
    )
}

/// An `ack` event.
fn ack_json(id: u64, key: Option<&str>) -> Rc<str> {
    Outbound::Ack { id, key }.json()
}

/// An `error` event.
fn error_json(code: ErrorCode, message: String) -> Rc<str> {
    Outbound::Error { code, message }.json()
}

#[cfg(test)]
mod tests;
