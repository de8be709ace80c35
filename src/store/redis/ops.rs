//! The typed operations of the Redis store: each [`Request`] becomes one Redis command (or one
//! script call), and its reply becomes one [`Answer`].
//!
//! Everything here is pure: [`call`] builds a command from a request, [`parse`] reads the reply
//! frame, and the pub/sub payload and the resume token's value have their own small encodings
//! ([`message_tail`], [`parse_room_payload`], [`encode_session`], [`decode_session`]). The
//! [`Link`](super::link::Link) queues, sends and matches them.

use std::time::Duration;

use super::keys::Keys;
use super::resp::{self, Frame};
use super::scripts::{self, Script, publish_status};
use super::{DownReason, RedisError};
use crate::store::{
    Appended, Epoch, MAX_PAGE_LEN, NewMessage, Outcome, Page, Range, Read, StoreError, StoredMessage,
};

/// The caller's name for a request, echoed in its [`Reply`].
pub type Tag = u64;

/// One thing to ask of Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Store a chat message and announce it to the room's channel ([`scripts::PUBLISH`]). With an
    /// `owner`, only if that owner holds the nickname's lease. Owners are never empty: the script
    /// reads an empty owner as "no lease check".
    Publish {
        message: NewMessage,
        owner: Option<String>,
    },
    /// Read part of a room's history.
    Read(Read),
    /// The highest id ever given (0 if none).
    LastId,
    /// The next number for an anonymous nickname (`Anonymous<N>`), counted for the whole cluster.
    NextAnonymous,
    /// The data's epoch, created if absent.
    Epoch,
    /// Take a nickname's lease for `owner` for `ttl`; also succeeds if `owner` already holds it, or
    /// if `replacing` does (a session taken over by a resume).
    Acquire {
        nickname: String,
        owner: String,
        ttl: Duration,
        replacing: Option<String>,
    },
    /// Extend the lease for `ttl`, if `owner` still holds it.
    Renew {
        nickname: String,
        owner: String,
        ttl: Duration,
    },
    /// Extend each lease (nickname key, owner) for `ttl`, if its owner still holds it.
    RenewMany {
        leases: Vec<(String, String)>,
        ttl: Duration,
    },
    /// Give the lease back, if `owner` holds it.
    Release { nickname: String, owner: String },
    /// Record `member` as present in `room`, held by `node`.
    Join {
        room: String,
        member: String,
        node: String,
    },
    /// Remove `member` from `room`, if `node` is the one holding it.
    Leave {
        room: String,
        member: String,
        node: String,
    },
    /// The room's members on live nodes.
    Members { room: String },
    /// Prove `node` alive for `ttl` more.
    Heartbeat { node: String, ttl: Duration },
    /// `node` is shutting down: its members stop being listed at once.
    NodeDown { node: String },
    /// Remember a resume token's session for `ttl`.
    PutToken {
        token: String,
        session: Session,
        ttl: Duration,
    },
    /// Take a resume token's session, deleting the token (a token works once).
    TakeToken { token: String },
    /// Send an opaque event to every node subscribed to the room (joined, left, renamed...).
    RoomEvent { room: String, data: Vec<u8> },
    /// Send an opaque message to one node's channel (close a session a resume took over...).
    NodeMessage { node: String, data: Vec<u8> },
}

impl Request {
    /// Whether the request runs a script (and may meet NOSCRIPT).
    pub fn is_script(&self) -> bool {
        matches!(
            self,
            Self::Publish { .. }
                | Self::Epoch
                | Self::Acquire { .. }
                | Self::Renew { .. }
                | Self::RenewMany { .. }
                | Self::Release { .. }
                | Self::Leave { .. }
                | Self::Members { .. }
        )
    }
}

/// What a resume token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub nickname: String,
    pub room: String,
    /// The session that held the nickname's lease (`<node>.<session>`): a resume elsewhere takes
    /// the lease over from it, and its node is asked to close it.
    pub owner: String,
}

/// What the publish script did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Stored and announced with this new id.
    Stored { id: u64 },
    /// The room already had a message with this key: nothing stored, `id` is the original's.
    Duplicate { id: u64 },
    /// The sender does not hold its nickname's lease: nothing stored.
    NotOwner,
}

/// The answer to a lease operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// The caller holds the lease now (acquired or renewed).
    Held,
    /// The lease was the caller's and is now free.
    Released,
    /// Someone else holds it (or, for renew and release, no one does).
    NotOwner,
}

/// One present member and the node holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub member: String,
    pub node: String,
}

/// A successful reply, by request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// To [`Request::Publish`].
    Published(Published),
    /// To [`Request::Read`].
    Page(Page),
    /// To [`Request::LastId`].
    LastId(u64),
    /// To [`Request::NextAnonymous`].
    Anonymous(u64),
    /// To [`Request::Epoch`].
    Epoch(Epoch),
    /// To [`Request::Acquire`], [`Request::Renew`], [`Request::Release`].
    Lease(Lease),
    /// To [`Request::RenewMany`]: whether each lease was renewed, in order.
    Renewed(Vec<bool>),
    /// To [`Request::Members`].
    Members(Vec<Member>),
    /// To [`Request::TakeToken`]: the session, or `None` if the token is unknown or expired.
    Session(Option<Session>),
    /// To [`Request::Leave`] and [`Request::NodeDown`]: whether anything was removed.
    Removed(bool),
    /// To [`Request::RoomEvent`] and [`Request::NodeMessage`]: how many subscribers got it.
    Receivers(u64),
    /// To [`Request::Join`], [`Request::Heartbeat`], [`Request::PutToken`].
    Done,
}

/// One request's fate, handed back in submission order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub tag: Tag,
    /// The request, returned to its owner (to retry it, or to build the store's [`Outcome`]).
    pub request: Request,
    pub result: Result<Answer, RedisError>,
}

/// A reply sorted by who awaits it: the chat's store boundary, or the lead's own code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// The answer to a publish or a read, as the store boundary's [`Outcome`].
    Store(Outcome),
    /// Any other reply, unchanged.
    Other(Reply),
}

impl Routed {
    /// The store outcome, if it is one.
    pub fn outcome(self) -> Option<Outcome> {
        match self {
            Self::Store(outcome) => Some(outcome),
            Self::Other(_) => None,
        }
    }
}

impl Reply {
    /// The store's outcome for a publish or a read, so the chat's store boundary works unchanged:
    /// the token is the message's or the read's own. A sender that lost its nickname gets an error
    /// (the store boundary has no such case; the chat refuses such a message before it gets here,
    /// so this is the race where the lease expired in between). Other requests are given back.
    pub fn route(self) -> Routed {
        let failed = |error: RedisError| StoreError::from(error);
        match (self.request, self.result) {
            (Request::Publish { message, .. }, result) => Routed::Store(Outcome::Append {
                token: message.token,
                result: match result {
                    Ok(Answer::Published(Published::Stored { id })) => Ok(Appended::Stored { id }),
                    Ok(Answer::Published(Published::Duplicate { id })) => Ok(Appended::Duplicate { id }),
                    Ok(Answer::Published(Published::NotOwner)) => Err(StoreError::NotOwner),
                    Ok(other) => Err(failed(unexpected("a publish answer", &other))),
                    Err(error) => Err(failed(error)),
                },
            }),
            (Request::Read(read), result) => Routed::Store(Outcome::Read {
                token: read.token,
                result: match result {
                    Ok(Answer::Page(page)) => Ok(page),
                    Ok(other) => Err(failed(unexpected("a page", &other))),
                    Err(error) => Err(failed(error)),
                },
            }),
            (request, result) => Routed::Other(Self {
                tag: self.tag,
                request,
                result,
            }),
        }
    }
}

fn unexpected(wanted: &str, got: &Answer) -> RedisError {
    RedisError::Unexpected(format!("wanted {wanted}, got {got:?}"))
}

/// A request made concrete: a plain command, or a script call with its keys and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Plain(Vec<Vec<u8>>),
    Script {
        script: &'static Script,
        keys: Vec<Vec<u8>>,
        args: Vec<Vec<u8>>,
    },
}

/// How a script is named on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptBy<'a> {
    /// `EVALSHA <sha>`: the server's cached copy.
    Sha(&'a str),
    /// `EVAL <body>`: the full text (after `NOSCRIPT`).
    Body,
}

impl Call {
    /// Appends the command to `out`.
    pub fn encode(&self, by: ScriptBy<'_>, out: &mut Vec<u8>) {
        match self {
            Self::Plain(args) => resp::encode_command(out, args),
            Self::Script { script, keys, args } => {
                let (verb, name): (&[u8], &[u8]) = match by {
                    ScriptBy::Sha(sha) => (b"EVALSHA", sha.as_bytes()),
                    ScriptBy::Body => (b"EVAL", script.body.as_bytes()),
                };
                let count = keys.len().to_string();
                let mut all: Vec<&[u8]> = vec![verb, name, count.as_bytes()];
                all.extend(keys.iter().map(Vec::as_slice));
                all.extend(args.iter().map(Vec::as_slice));
                resp::encode_command(out, &all);
            }
        }
    }

    /// The script this call runs, if it is one.
    pub fn script(&self) -> Option<&'static Script> {
        match self {
            Self::Plain(_) => None,
            Self::Script { script, .. } => Some(script),
        }
    }
}

/// What building a command needs besides the request.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub keys: &'a Keys,
    /// The epoch the link knows (publishes are refused under any other).
    pub epoch: Option<Epoch>,
    /// Messages kept per room (the stream's `MAXLEN ~`).
    pub keep_per_room: usize,
    /// A fresh epoch, used only if the data has none.
    pub candidate: Epoch,
}

fn plain<const N: usize>(args: [&[u8]; N]) -> Call {
    Call::Plain(args.iter().map(|arg| arg.to_vec()).collect())
}

fn script<const K: usize, const A: usize>(
    script: &'static Script,
    keys: [&[u8]; K],
    args: [&[u8]; A],
) -> Call {
    Call::Script {
        script,
        keys: keys.iter().map(|key| key.to_vec()).collect(),
        args: args.iter().map(|arg| arg.to_vec()).collect(),
    }
}

/// Milliseconds for `PX` and `PEXPIRE`: at least 1 (Redis refuses 0).
fn millis(ttl: Duration) -> String {
    ttl.as_millis().clamp(1, u128::from(u64::MAX)).to_string()
}

/// A stream entry id for message `id`.
fn entry_id(id: u64) -> String {
    format!("{id}-0")
}

/// Builds the command for `request`, or answers it at once when no command is needed.
pub fn call(request: &Request, context: &Context<'_>) -> Result<Call, Answer> {
    let keys = context.keys;
    Ok(match request {
        Request::Publish { message, owner } => {
            let epoch = context.epoch.map(|epoch| epoch.to_string()).unwrap_or_default();
            let keep = context.keep_per_room.max(1).to_string();
            let ts = message.ts.to_string();
            let key = message.key.as_ref().map_or("", |key| key.as_str());
            script(
                &scripts::PUBLISH,
                [
                    keys.epoch().as_bytes(),
                    keys.last_id().as_bytes(),
                    keys.history(&message.room).as_bytes(),
                    keys.dedup(&message.room).as_bytes(),
                    keys.lease(
                        message
                            .lease
                            .as_ref()
                            .map_or(&message.nickname, |lease| &lease.key),
                    )
                    .as_bytes(),
                ],
                [
                    epoch.as_bytes(),
                    owner.as_deref().unwrap_or("").as_bytes(),
                    key.as_bytes(),
                    keep.as_bytes(),
                    message.nickname.as_bytes(),
                    message.text.as_bytes(),
                    ts.as_bytes(),
                    keys.room_channel(&message.room).as_bytes(),
                    message_tail(message).as_bytes(),
                ],
            )
        }
        Request::Read(read) => return read_call(read, keys),
        Request::LastId => plain([b"GET", keys.last_id().as_bytes()]),
        Request::NextAnonymous => plain([b"INCR", keys.anonymous().as_bytes()]),
        Request::Epoch => script(
            &scripts::EPOCH,
            [keys.epoch().as_bytes()],
            [context.candidate.to_string().as_bytes()],
        ),
        Request::Acquire {
            nickname,
            owner,
            ttl,
            replacing,
        } => script(
            &scripts::LEASE_ACQUIRE,
            [keys.lease(nickname).as_bytes()],
            [
                owner.as_bytes(),
                millis(*ttl).as_bytes(),
                replacing.as_deref().unwrap_or("").as_bytes(),
            ],
        ),
        Request::Renew { nickname, owner, ttl } => script(
            &scripts::LEASE_RENEW,
            [keys.lease(nickname).as_bytes()],
            [owner.as_bytes(), millis(*ttl).as_bytes()],
        ),
        Request::RenewMany { leases, ttl } => {
            let ttl = millis(*ttl);
            let mut args = vec![ttl.into_bytes()];
            args.extend(leases.iter().map(|(_, owner)| owner.as_bytes().to_vec()));
            Call::Script {
                script: &scripts::LEASE_RENEW_MANY,
                keys: leases
                    .iter()
                    .map(|(key, _)| keys.lease(key).into_bytes())
                    .collect(),
                args,
            }
        }
        Request::Release { nickname, owner } => script(
            &scripts::LEASE_RELEASE,
            [keys.lease(nickname).as_bytes()],
            [owner.as_bytes()],
        ),
        Request::Join { room, member, node } => plain([
            b"HSET",
            keys.presence(room).as_bytes(),
            member.as_bytes(),
            node.as_bytes(),
        ]),
        Request::Leave { room, member, node } => script(
            &scripts::PRESENCE_LEAVE,
            [keys.presence(room).as_bytes()],
            [member.as_bytes(), node.as_bytes()],
        ),
        Request::Members { room } => script(
            &scripts::PRESENCE_MEMBERS,
            [keys.presence(room).as_bytes()],
            [keys.alive_prefix().as_bytes()],
        ),
        Request::Heartbeat { node, ttl } => plain([
            b"SET",
            keys.alive(node).as_bytes(),
            b"1",
            b"PX",
            millis(*ttl).as_bytes(),
        ]),
        Request::NodeDown { node } => plain([b"DEL", keys.alive(node).as_bytes()]),
        Request::PutToken { token, session, ttl } => plain([
            b"SET",
            keys.resume(token).as_bytes(),
            encode_session(session).as_bytes(),
            b"PX",
            millis(*ttl).as_bytes(),
        ]),
        // GETDEL (Redis 6.2): reading and deleting in one command, so of two nodes racing to
        // resume the same token exactly one gets the session.
        Request::TakeToken { token } => plain([b"GETDEL", keys.resume(token).as_bytes()]),
        Request::RoomEvent { room, data } => {
            let mut payload = Vec::with_capacity(data.len() + 1);
            payload.push(ROOM_EVENT);
            payload.extend_from_slice(data);
            plain([b"PUBLISH", keys.room_channel(room).as_bytes(), &payload])
        }
        Request::NodeMessage { node, data } => plain([b"PUBLISH", keys.node_channel(node).as_bytes(), data]),
    })
}

/// The range command for a read. Every page is asked for one message past its limit: that extra
/// message, dropped from the page, is how `more` is known without a second command.
fn read_call(read: &Read, keys: &Keys) -> Result<Call, Answer> {
    let limit = read.limit.min(MAX_PAGE_LEN);
    let count = (limit + 1).to_string();
    let stream = keys.history(&read.room);
    // "(" makes a bound exclusive (Redis 6.2).
    Ok(match read.range {
        Range::Since(after) => plain([
            b"XRANGE",
            stream.as_bytes(),
            format!("({}", entry_id(after)).as_bytes(),
            b"+",
            b"COUNT",
            count.as_bytes(),
        ]),
        // Nothing lies before the first possible id (and "(0-0" is no valid reverse bound).
        Range::Before(0) => return Err(Answer::Page(Page::default())),
        Range::Before(before) => plain([
            b"XREVRANGE",
            stream.as_bytes(),
            format!("({}", entry_id(before)).as_bytes(),
            b"-",
            b"COUNT",
            count.as_bytes(),
        ]),
        Range::Latest => plain([
            b"XREVRANGE",
            stream.as_bytes(),
            b"+",
            b"-",
            b"COUNT",
            count.as_bytes(),
        ]),
    })
}

/// Reads the reply to `request`.
pub fn parse(request: &Request, frame: Frame) -> Result<Answer, RedisError> {
    if let Frame::Error(message) = frame {
        return Err(RedisError::Server(message));
    }
    let shape =
        |wanted: &str| RedisError::Unexpected(format!("wanted {wanted}, got {}", resp::describe(&frame)));
    match request {
        Request::Publish { .. } => parse_published(&frame).ok_or_else(|| shape("a publish status"))?,
        Request::Read(read) => parse_page(read, &frame)
            .map(Answer::Page)
            .ok_or_else(|| shape("stream entries")),
        Request::LastId => match &frame {
            Frame::Null => Ok(Answer::LastId(0)),
            other => number(other).map(Answer::LastId).ok_or_else(|| shape("an id")),
        },
        Request::NextAnonymous => number(&frame)
            .map(Answer::Anonymous)
            .ok_or_else(|| shape("a count")),
        Request::Epoch => resp::text(&frame)
            .and_then(Epoch::parse)
            .map(Answer::Epoch)
            .ok_or_else(|| shape("an epoch of 16 hex digits")),
        Request::Acquire { .. } | Request::Renew { .. } => match frame {
            Frame::Integer(1) => Ok(Answer::Lease(Lease::Held)),
            Frame::Integer(0) => Ok(Answer::Lease(Lease::NotOwner)),
            _ => Err(shape("0 or 1")),
        },
        Request::RenewMany { leases, .. } => match &frame {
            Frame::Array(items) if items.len() == leases.len() => items
                .iter()
                .map(|item| match item {
                    Frame::Integer(1) => Some(true),
                    Frame::Integer(0) => Some(false),
                    _ => None,
                })
                .collect::<Option<Vec<bool>>>()
                .map(Answer::Renewed)
                .ok_or_else(|| shape("0 or 1 per lease")),
            _ => Err(shape("0 or 1 per lease")),
        },
        Request::Release { .. } => match frame {
            Frame::Integer(1) => Ok(Answer::Lease(Lease::Released)),
            Frame::Integer(0) => Ok(Answer::Lease(Lease::NotOwner)),
            _ => Err(shape("0 or 1")),
        },
        Request::Leave { .. } | Request::NodeDown { .. } => match frame {
            Frame::Integer(removed) => Ok(Answer::Removed(removed > 0)),
            _ => Err(shape("a count")),
        },
        Request::Members { .. } => parse_members(&frame)
            .map(Answer::Members)
            .ok_or_else(|| shape("member, node pairs")),
        Request::Join { .. } => match frame {
            Frame::Integer(_) => Ok(Answer::Done),
            _ => Err(shape("a count")),
        },
        Request::Heartbeat { .. } | Request::PutToken { .. } => match resp::text(&frame) {
            Some("OK") => Ok(Answer::Done),
            _ => Err(shape("OK")),
        },
        Request::TakeToken { .. } => match &frame {
            Frame::Null => Ok(Answer::Session(None)),
            other => resp::text(other)
                .and_then(decode_session)
                .map(|session| Answer::Session(Some(session)))
                .ok_or_else(|| shape("a session")),
        },
        Request::RoomEvent { .. } | Request::NodeMessage { .. } => match frame {
            Frame::Integer(receivers) => Ok(Answer::Receivers(u64::try_from(receivers).unwrap_or(0))),
            _ => Err(shape("a count")),
        },
    }
}

/// The publish script's `{status, value}`.
fn parse_published(frame: &Frame) -> Option<Result<Answer, RedisError>> {
    let Frame::Array(items) = frame else {
        return None;
    };
    let published = |published| Some(Ok(Answer::Published(published)));
    match items.as_slice() {
        [Frame::Integer(publish_status::STORED), id] => published(Published::Stored { id: number(id)? }),
        [Frame::Integer(publish_status::DUPLICATE), id] => {
            published(Published::Duplicate { id: number(id)? })
        }
        [Frame::Integer(publish_status::NOT_OWNER)] => published(Published::NotOwner),
        [Frame::Integer(publish_status::EPOCH_CHANGED), epoch] => {
            let current = match epoch {
                Frame::Null => None,
                other => Some(resp::text(other).and_then(Epoch::parse)?),
            };
            Some(Err(RedisError::EpochChanged { current }))
        }
        // Lua's `{3, false}` may also arrive cut at the false (a Lua table ends at its first nil).
        [Frame::Integer(publish_status::EPOCH_CHANGED)] => {
            Some(Err(RedisError::EpochChanged { current: None }))
        }
        _ => None,
    }
}

/// A non-negative integer, sent as an integer or as decimal text.
fn number(frame: &Frame) -> Option<u64> {
    match frame {
        Frame::Integer(value) => u64::try_from(*value).ok(),
        other => resp::text(other)?.parse().ok(),
    }
}

/// XRANGE / XREVRANGE entries, as a page oldest first.
fn parse_page(read: &Read, frame: &Frame) -> Option<Page> {
    let Frame::Array(entries) = frame else {
        return None;
    };
    let limit = read.limit.min(MAX_PAGE_LEN);
    let mut messages = entries
        .iter()
        .map(|entry| parse_entry(&read.room, entry))
        .collect::<Option<Vec<_>>>()?;
    let more = messages.len() > limit;
    messages.truncate(limit);
    if !matches!(read.range, Range::Since(_)) {
        // XREVRANGE gave them newest first.
        messages.reverse();
    }
    // Each entry records its room's previous id (`p`), so a page says whether the history still
    // reaches back to where a reader stands.
    let prev = messages.first().map(|(_, prev)| *prev);
    let messages = messages.into_iter().map(|(message, _)| message).collect();
    Some(Page { messages, more, prev })
}

/// One stream entry: `[id, [field, value, ...]]`, and the id of its room's message before it (0 if
/// the entry predates the `p` field).
fn parse_entry(room: &str, entry: &Frame) -> Option<(StoredMessage, u64)> {
    let Frame::Array(parts) = entry else {
        return None;
    };
    let [id, Frame::Array(fields)] = parts.as_slice() else {
        return None;
    };
    let (id, _sequence) = resp::text(id)?.split_once('-')?;
    let mut message = StoredMessage {
        id: id.parse().ok()?,
        room: room.to_owned(),
        nickname: String::new(),
        text: String::new(),
        ts: 0,
    };
    let mut prev = 0;
    for pair in fields.chunks(2) {
        let [name, value] = pair else {
            return None;
        };
        let value = resp::text(value)?;
        match resp::bytes(name)? {
            b"n" => value.clone_into(&mut message.nickname),
            b"t" => value.clone_into(&mut message.text),
            b"ts" => message.ts = value.parse().ok()?,
            b"p" => prev = value.parse().ok()?,
            // A field a later version added: not ours to refuse.
            _ => {}
        }
    }
    Some((message, prev))
}

fn parse_members(frame: &Frame) -> Option<Vec<Member>> {
    let Frame::Array(items) = frame else {
        return None;
    };
    items
        .chunks(2)
        .map(|pair| match pair {
            [member, node] => Some(Member {
                member: resp::text(member)?.to_owned(),
                node: resp::text(node)?.to_owned(),
            }),
            _ => None,
        })
        .collect()
}

/// `"<byte length of a> <a><b>"`: two strings in one, the first counted so it may hold anything
/// (spaces included) and the second running to the end.
fn counted(a: &str, b: &str) -> String {
    format!("{} {a}{b}", a.len())
}

/// The reverse of [`counted`].
fn uncounted(text: &str) -> Option<(&str, &str)> {
    let (len, rest) = text.split_once(' ')?;
    let len: usize = len.parse().ok()?;
    Some((rest.get(..len)?, rest.get(len..)?))
}

/// A resume token's value: the session's nickname, room and owner.
pub fn encode_session(session: &Session) -> String {
    counted(&session.nickname, &counted(&session.room, &session.owner))
}

pub fn decode_session(text: &str) -> Option<Session> {
    let (nickname, rest) = uncounted(text)?;
    let (room, owner) = uncounted(rest)?;
    Some(Session {
        nickname: nickname.to_owned(),
        room: room.to_owned(),
        owner: owner.to_owned(),
    })
}

/// First byte of a room channel payload that carries a stored message.
pub const ROOM_MESSAGE: u8 = b'm';
/// First byte of a room channel payload that carries an opaque room event.
pub const ROOM_EVENT: u8 = b'e';

/// The part of a message's pub/sub payload the sender builds: `"<ts> <nickname length>
/// <nickname><text>"`. The publish script puts `m<epoch> <id> <previous id> ` in front.
pub fn message_tail(message: &NewMessage) -> String {
    format!("{} {}", message.ts, counted(&message.nickname, &message.text))
}

/// A message another node (or this one) stored, as its room's channel announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMessage {
    /// The epoch the message was stored under.
    pub epoch: Epoch,
    /// The id of the room's message before this one (0 if it was the first one kept).
    pub prev_id: u64,
    pub message: StoredMessage,
}

/// How a message relates to the last one a node saw in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// The next message: nothing in between.
    Next,
    /// Messages after `after` and before this one were missed: read them from the history
    /// (`Range::Since(after)`) before showing this one.
    Gap { after: u64 },
    /// Already seen (a catch-up read and the channel both carried it).
    Seen,
}

impl RemoteMessage {
    /// Compares with `last_seen`, the newest id of this room the node has shown.
    pub fn follows(&self, last_seen: u64) -> Continuity {
        if self.message.id <= last_seen {
            Continuity::Seen
        } else if self.prev_id > last_seen {
            Continuity::Gap { after: last_seen }
        } else {
            Continuity::Next
        }
    }
}

/// What a room channel carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomPayload {
    Message(RemoteMessage),
    Event(Vec<u8>),
}

/// Reads a room channel payload; `None` if it is not one this version writes.
pub fn parse_room_payload(room: &str, payload: &[u8]) -> Option<RoomPayload> {
    match payload.split_first()? {
        (&ROOM_EVENT, data) => Some(RoomPayload::Event(data.to_vec())),
        (&ROOM_MESSAGE, rest) => {
            let rest = std::str::from_utf8(rest).ok()?;
            let (epoch, rest) = rest.split_once(' ')?;
            let (id, rest) = rest.split_once(' ')?;
            let (prev_id, rest) = rest.split_once(' ')?;
            let (ts, rest) = rest.split_once(' ')?;
            let (nickname, text) = uncounted(rest)?;
            Some(RoomPayload::Message(RemoteMessage {
                epoch: Epoch::parse(epoch)?,
                prev_id: prev_id.parse().ok()?,
                message: StoredMessage {
                    id: id.parse().ok()?,
                    room: room.to_owned(),
                    nickname: nickname.to_owned(),
                    text: text.to_owned(),
                    ts: ts.parse().ok()?,
                },
            }))
        }
        _ => None,
    }
}

/// The error for every request of a connection that went down, by whether it had been sent.
pub fn lost(sent: bool, reason: &DownReason) -> RedisError {
    if sent {
        RedisError::Disconnected(reason.clone())
    } else {
        RedisError::Unavailable(reason.clone())
    }
}
