//! The store and the fan-out in Redis, for many wschat processes serving one chat: same rooms,
//! nicknames, ids, history and exactly-once keys on every node.
//!
//! Like the rest of wschat this layer is sans-IO. A [`Link`] is one connection to Redis as a state
//! machine: it is handed the bytes that arrived and the time, and leaves bytes to write and events
//! to read; the event loop owns the socket (mio), so Redis is spoken from the loop's own thread,
//! with every command of a turn pipelined in one write. A [`Subscriber`] is the second connection,
//! in subscribe mode, through which every node hears the messages stored by the others.
//!
//! The design follows Centrifugo's Redis engine: one Lua script per publish (checks, id, append,
//! announce, atomically), per-room history in a stream, an epoch for the life of the data, and
//! announcements that carry the previous id of their room, so a node that missed one knows it and
//! reads the gap from the history, or learns that it cannot (the history moved on, or the epoch
//! changed).
//!
//! ## Key layout
//!
//! With the default prefix `wschat:` ([`keys::Keys`] builds every name):
//!
//! | key | type | holds | lives |
//! |---|---|---|---|
//! | `wschat:epoch` | string | the data's [`Epoch`], 16 hex digits | as long as the data: created with `SET NX` by the first node |
//! | `wschat:last_id` | string (integer) | the highest message id ever given | as long as the data; `INCR` only |
//! | `wschat:history:<room>` | stream | the room's messages: entry id `<id>-0`, fields `n` nickname, `t` text, `ts` unix ms | trimmed to at least the room's quota (`MAXLEN ~`) on each append |
//! | `wschat:dedup:<room>` | sorted set | the room's idempotency keys, scored by the id each stored | a key goes once its message left the stream |
//! | `wschat:nick:<lowercase nickname>` | string, expiring | the owner of the nickname's lease | until released, or its expiry if not renewed |
//! | `wschat:presence:<room>` | hash | member → node holding it | fields removed on leave, or when the node is found dead |
//! | `wschat:alive:<node>` | string, expiring | the node's heartbeat | renewed by the node; its expiry bounds how long a dead node's members are listed |
//! | `wschat:resume:<token>` | string, expiring | the session (nickname, room) a resume token stands for | taken once (`GETDEL`) or expired |
//!
//! Channels (pub/sub, not keys; they carry the database number, see [`keys`]):
//!
//! | channel | carries |
//! |---|---|
//! | `wschat:<db>:room:<room>` | `m<epoch> <id> <previous id> <ts> <nickname length> <nickname><text>` for each stored message (published by the script), `e<data>` for the lead's room events |
//! | `wschat:<db>:node:<node>` | opaque messages addressed to one node |
//!
//! ## What is guaranteed
//!
//! - **Ids strictly increase and are never reused**: one counter for all rooms, taken inside the
//!   publish script, persisted with the data (AOF or RDB, as the Redis server is configured). If the
//!   data is lost the epoch is lost with it, and the next one differs.
//! - **Exactly once** per room and key, for as long as the message is retained (the script checks
//!   and records the key in the same atomic step that stores the message).
//! - **One nickname owner at a time**: a lease is taken with `SET NX PX` semantics and checked by
//!   the publish script, so a node that lost the lease (it stalled past the lease's life) cannot post
//!   in the new owner's name.
//! - **Durable as Redis is configured.** An answer means the script ran on the primary. What
//!   survives a crash is Redis's own promise: with `appendonly yes` and `appendfsync always` every
//!   write is on disk before the answer; with the default `appendfsync everysec` up to a second of
//!   writes may be lost. The SQLite store's "durable before acked" holds here only with
//!   `appendfsync always`.
//! - **Nothing silent**: every request gets exactly one [`Reply`], in submission order: its answer,
//!   or an error saying whether it was never sent ([`RedisError::Unavailable`]) or sent on a
//!   connection that broke before answering ([`RedisError::Disconnected`]: it may have run, and a
//!   message resent with the same key counts once).
//!
//! Not supported: Redis Cluster (one global counter, and scripts that touch keys they compute).
//! One primary, with replicas and Sentinel if wanted, is the model.
//!
//! ## Driving a link from the event loop
//!
//! Each turn, for the [`Link`] and the [`Subscriber`] alike:
//!
//! 1. `poll_action()`: on [`Action::Connect`] open a non-blocking `mio::net::TcpStream` to
//!    [`RedisConfig::address`] and register it; when it is writable (and `take_error()` is clean)
//!    call `connected(now)`, else `lost(DownReason::ConnectFailed(..), now)`. On
//!    [`Action::Disconnect`] deregister and drop the socket.
//! 2. Readable: read until `WouldBlock`, `receive(bytes, now)` each read; a read of 0 bytes is
//!    `lost(DownReason::Closed, now)`, an error `lost(DownReason::Io(..), now)`.
//! 3. Submit the turn's requests (`submit`, `submit_command`), then write `output()` and
//!    `consume_output(written)`; keep WRITABLE interest while output remains.
//! 4. Drain `poll_event()`: [`Event::Reply`] → [`Reply::route`] gives the store outcomes the chat
//!    already understands; [`SubEvent::Message`] → compare with the room's last id
//!    ([`RemoteMessage::follows`]) and read any gap with `Range::Since`.
//! 5. Include `poll_timeout()` in the poll timeout and call `handle_timeout(now)` when it passes.

use std::fmt;
use std::time::Duration;

use crate::store::{Epoch, StoreError};

pub mod keys;
pub mod link;
pub mod ops;
pub mod resp;
pub mod scripts;
pub mod store;

pub use keys::{Channel, Keys};
pub use link::{Action, Event, Link, LinkState, SubEvent, Subscriber};
pub use ops::{
    Answer, Continuity, Lease, Member, Published, RemoteMessage, Reply, Request, Routed, Session, Tag,
};
pub use store::RedisStore;

/// The Redis port when the URL names none.
pub const DEFAULT_PORT: u16 = 6379;

/// The key prefix when none is configured.
pub const DEFAULT_PREFIX: &str = "wschat:";

/// Where Redis is and how to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// The logical database (`SELECT`), 0 by default.
    pub db: u32,
    /// The start of every key and channel name.
    pub prefix: String,
    /// Retention: each room's stream keeps at least this many messages.
    pub keep_per_room: usize,
    pub timeouts: Timeouts,
    /// Send every request at once (true), or one at a time, each after the previous one's reply
    /// (false: only to measure what pipelining buys).
    pub pipeline: bool,
}

impl RedisConfig {
    /// Reads `redis://HOST[:PORT][/DB]` (HOST may be a bracketed IPv6 address).
    pub fn from_url(url: &str) -> Result<Self, UrlError> {
        let rest = url.strip_prefix("redis://").ok_or(UrlError::Scheme)?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err(UrlError::Credentials);
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or(UrlError::Host)?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(UrlError::Host);
        }
        let port = match port {
            Some(port) => port.parse().map_err(|_| UrlError::Port(port.to_owned()))?,
            None => DEFAULT_PORT,
        };
        let db = if path.is_empty() {
            0
        } else {
            path.parse().map_err(|_| UrlError::Database(path.to_owned()))?
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            db,
            prefix: DEFAULT_PREFIX.to_owned(),
            keep_per_room: crate::store::sqlite::DEFAULT_KEEP_PER_ROOM.get(),
            timeouts: Timeouts::default(),
            pipeline: true,
        })
    }

    /// `host:port`, as `ToSocketAddrs` reads it.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn keys(&self) -> Keys {
        Keys::new(&self.prefix, self.db)
    }
}

/// Why a `--redis` URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// It does not start with `redis://` (TLS, `rediss://`, is not supported).
    Scheme,
    /// No host, or an unclosed `[`.
    Host,
    Port(String),
    Database(String),
    /// `user:password@` is not supported (no AUTH yet): refused rather than ignored.
    Credentials,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scheme => write!(f, "a Redis URL starts with redis://"),
            Self::Host => write!(f, "a Redis URL names a host: redis://HOST:PORT/DB"),
            Self::Port(port) => write!(f, "{port:?} is not a port number"),
            Self::Database(db) => write!(f, "{db:?} is not a database number"),
            Self::Credentials => write!(f, "credentials in a Redis URL are not supported"),
        }
    }
}

impl std::error::Error for UrlError {}

/// Every timer of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a TCP connect may take before it counts as failed.
    pub connect: Duration,
    /// How long the oldest request may wait for its reply before the connection counts as dead.
    pub reply: Duration,
    /// After this long without traffic, a PING checks the connection (a subscriber hears nothing
    /// in a quiet room, and a dead peer without a RST is noticed only by asking).
    pub ping_interval: Duration,
    /// The first wait before reconnecting; doubled after each failure.
    pub backoff_min: Duration,
    /// The longest wait before reconnecting.
    pub backoff_max: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            // A local network connects in milliseconds; a lost SYN is retried by the kernel after
            // 1 s, so 2 s allows one retry.
            connect: Duration::from_secs(2),
            // Redis's own limit for a busy script (`busy-reply-threshold`) is 5 s: past that it
            // answers BUSY to everyone, so a reply slower than that is not coming.
            reply: Duration::from_secs(5),
            // Well inside the 10 s or more that load balancers and NAT tables keep an idle flow.
            ping_interval: Duration::from_secs(5),
            // Retry almost at once (a restart, a failover), then back off to spare a Redis that is
            // struggling from every node's reconnects at once.
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Why a connection went down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// The TCP connect failed.
    ConnectFailed(String),
    /// The TCP connect did not complete in time.
    ConnectTimeout,
    /// The server closed the connection.
    Closed,
    /// Reading or writing failed.
    Io(String),
    /// The oldest request got no reply in time.
    ReplyTimeout,
    /// The server sent bytes that are not RESP2.
    Protocol(String),
    /// A step of the connection's set-up was refused (SELECT, SCRIPT LOAD, the epoch).
    Setup(String),
    /// The link was shut down by its owner.
    Shutdown,
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConnectFailed(detail) => write!(f, "connect failed: {detail}"),
            Self::ConnectTimeout => write!(f, "connect timed out"),
            Self::Closed => write!(f, "closed by the server"),
            Self::Io(detail) => write!(f, "I/O error: {detail}"),
            Self::ReplyTimeout => write!(f, "no reply in time"),
            Self::Protocol(detail) => write!(f, "protocol error: {detail}"),
            Self::Setup(detail) => write!(f, "connection set-up refused: {detail}"),
            Self::Shutdown => write!(f, "shut down"),
        }
    }
}

/// Why one request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisError {
    /// Not sent: there was no usable connection. Nothing happened.
    Unavailable(DownReason),
    /// Sent, but the connection went down before the reply: it may or may not have run.
    Disconnected(DownReason),
    /// Redis answered with an error.
    Server(String),
    /// Redis answered something this request never gets (a bug, or foreign data in our keys).
    Unexpected(String),
    /// The data's epoch is not the one the link knew: Redis lost its data (or was flushed) since.
    /// Nothing was stored; the link reads the new epoch and reports it ([`Event::Epoch`]).
    EpochChanged { current: Option<Epoch> },
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(reason) => write!(f, "Redis unavailable ({reason}); nothing was sent"),
            Self::Disconnected(reason) => {
                write!(
                    f,
                    "Redis connection lost before the reply ({reason}); it may have run"
                )
            }
            Self::Server(message) => write!(f, "Redis error: {message}"),
            Self::Unexpected(detail) => write!(f, "unexpected Redis reply: {detail}"),
            Self::EpochChanged { current: Some(epoch) } => write!(f, "the store's epoch is now {epoch}"),
            Self::EpochChanged { current: None } => write!(f, "the store lost its epoch (data flushed)"),
        }
    }
}

impl std::error::Error for RedisError {}

/// The store boundary's meaning of a Redis failure: the one place it is decided.
impl From<RedisError> for StoreError {
    fn from(error: RedisError) -> Self {
        match error {
            RedisError::Unavailable(_) | RedisError::Disconnected(_) => Self::Io(error.to_string()),
            RedisError::Unexpected(_) => Self::Corrupt(error.to_string()),
            RedisError::Server(_) | RedisError::EpochChanged { .. } => Self::Other(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
