//! The store boundary over Redis: the chat's [`Command`]s in, its [`Outcome`]s out, with the two
//! connections ([`Link`] for commands, [`Subscriber`] for pub/sub) underneath. Still sans-IO: the
//! event loop moves the bytes of both connections (see the module docs of [`super`]) and passes the
//! time in; this type turns commands into requests and replies and announcements into outcomes.
//!
//! How each command is served:
//!
//! | command | in Redis |
//! |---|---|
//! | `Append` | the publish script, one per message: lease check, dedup, id, stream, `PUBLISH` |
//! | `Read` | `XRANGE` / `XREVRANGE` on the room's stream |
//! | `Follow` / `Unfollow` | `SUBSCRIBE` / `UNSUBSCRIBE` the room's channel; `Following` once subscribed, and again after every resubscription |
//! | `Claim` | the lease script (`SET PX` if free or already the owner's); an anonymous name first takes a number from a cluster-wide `INCR` |
//! | `Release` | the release script (deletes only the owner's lease) |
//! | `Present` / `Absent` | a field `<owner> <nickname>` → node in the room's presence hash, then a room event so the other nodes read it again |
//! | `Members` | the members script (entries of dead nodes dropped) |
//! | `PutToken` / `TakeToken` / `DropToken` | `SET PX` / `GETDEL` |
//! | `Evict` | a message on the owning node's channel |
//!
//! What this type does of its own accord, on its timer ([`RedisStore::handle_timeout`]): renews the
//! node's liveness key and every lease it holds, re-puts the resume tokens of live sessions before
//! they expire, and asks the chat to reread each room's members (so a dead node's members go within
//! a bounded time). A lease whose renewal is refused, or that could not be renewed for
//! [`LEASE_TTL`] less a margin because Redis was unreachable, is reported lost
//! ([`Outcome::LeaseLost`]): the chat closes that client rather than let two people hold one name.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::link::{Event, Link, LinkState, SubEvent, Subscriber};
use super::ops::{Answer, Lease, Reply, Request, Routed, Session, Tag};
use super::{RedisConfig, RedisError};
use crate::store::{
    Claimed, Command, Epoch, LeaseRef, Member, Outcome, Posted, Resumable, StoreError, Token,
    anonymous_nickname,
};

/// How long a nickname's lease lives without renewal: after a node dies (kill -9, power loss), its
/// users' names are free again this long after its last renewal. Short enough that a user
/// reconnecting to another node gets their name back within seconds; long enough that a Redis
/// failover or a stalled loop of a few seconds costs no names.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// How often leases, the node's liveness key and live resume tokens are renewed: three chances
/// within one lease's life.
pub const RENEW_EVERY: Duration = Duration::from_millis(3300);

/// How long a node's members stay listed after its last sign of life (its liveness key's life).
pub const NODE_TTL: Duration = Duration::from_secs(10);

/// A lease not confirmed for this long is given up (reported lost) before it can expire in Redis
/// and be taken by somebody else: the lease's life less a margin for clock drift and the time the
/// last renewal spent in flight.
pub const LEASE_GIVE_UP: Duration = Duration::from_secs(7);

/// Leases renewed by one script call: a round of a node with many sessions is a few calls, each
/// short enough not to hold Redis (one `GET` and one `PEXPIRE` per lease) for long.
const RENEW_BATCH: usize = 500;

/// Tries at an anonymous name before the claim fails (each number is taken from the cluster's
/// counter, so a name is only taken if somebody chose it by hand).
const ANONYMOUS_TRIES: u32 = 8;

/// The room event that says "this room's members changed: read them again".
const PRESENCE_EVENT: &[u8] = b"p";

/// The node message that asks to close a session a resume took over elsewhere.
const EVICT_PREFIX: &str = "evict ";

/// Internal tags start here, far above the chat's tokens (which count from 1), so one reply queue
/// serves both.
const FIRST_INTERNAL_TAG: Tag = 1 << 62;

/// What an internal request's reply is for.
#[derive(Debug)]
enum Pending {
    /// A number for an anonymous name, then its lease.
    Anonymous {
        token: Token,
        owner: String,
        tries: u32,
    },
    /// A nickname's lease for a claim.
    Acquire {
        token: Token,
        display: String,
        key: String,
        owner: String,
        anonymous: Option<u32>,
    },
    Renew {
        key: String,
        owner: String,
    },
    /// A round's renewals: (key, owner) in the order of the answer.
    RenewMany {
        leases: Vec<(String, String)>,
    },
    /// A presence entry's removal (retried when the connection is back, if it failed).
    Leave {
        room: String,
        member: String,
    },
    Members {
        token: Token,
    },
    TakeToken {
        token: Token,
    },
    /// Fire and forget: the reply says nothing the chat needs (its failure shows in the link's
    /// state).
    Ignore,
}

/// A message published and not yet answered, so its announcement can name its origin.
type InFlight = HashMap<(String, u64, String, String), Token>;

/// The chat's store, in Redis.
#[derive(Debug)]
pub struct RedisStore {
    link: Link,
    sub: Subscriber,
    node: String,
    epoch: Option<Epoch>,
    pending: HashMap<Tag, Pending>,
    next_tag: Tag,
    /// Publishes in flight, by (room, ts, nickname, text): the announcement may overtake the
    /// reply, and names its sender's token through this.
    in_flight: InFlight,
    followed: BTreeSet<String>,
    /// Leases held by this node's sessions: key → owner.
    leases: BTreeMap<String, String>,
    /// When the leases were last all renewed (or the link last ready).
    confirmed: Instant,
    /// Presence entries this node wrote: (room, owner) → nickname.
    presence: BTreeMap<(String, String), String>,
    /// Presence entries whose removal failed: (room, member field).
    unleft: BTreeSet<(String, String)>,
    /// Resume tokens of live sessions, re-put before they expire: token → (session, ttl, when
    /// last put).
    live_tokens: HashMap<String, (Session, Duration, Instant)>,
    next_tick: Instant,
    outcomes: VecDeque<Outcome>,
}

impl RedisStore {
    /// A store for the node `node` (no spaces or dots) of a cluster sharing `config`'s Redis.
    pub fn new(config: &RedisConfig, node: &str, seed: u64, now: Instant) -> Self {
        Self {
            link: Link::new(config, seed, now),
            sub: Subscriber::new(config, node, seed.rotate_left(17) ^ 0x9e37_79b9, now),
            node: node.to_owned(),
            epoch: None,
            pending: HashMap::new(),
            next_tag: FIRST_INTERNAL_TAG,
            in_flight: HashMap::new(),
            followed: BTreeSet::new(),
            leases: BTreeMap::new(),
            confirmed: now,
            presence: BTreeMap::new(),
            unleft: BTreeSet::new(),
            live_tokens: HashMap::new(),
            next_tick: now,
            outcomes: VecDeque::new(),
        }
    }

    pub fn link_mut(&mut self) -> &mut Link {
        &mut self.link
    }

    pub fn subscriber_mut(&mut self) -> &mut Subscriber {
        &mut self.sub
    }

    /// The data's epoch, once read.
    pub fn epoch(&self) -> Option<Epoch> {
        self.epoch
    }

    /// Why the store cannot serve now, if it cannot: `/readyz` and `wschat_store_up`.
    pub fn health(&self) -> Result<(), String> {
        let describe = |state: LinkState, last_down: &super::DownReason| match state {
            LinkState::Ready => "up".to_owned(),
            LinkState::Connecting | LinkState::SettingUp => format!("{state:?}").to_lowercase(),
            LinkState::Backoff | LinkState::Shutdown => format!("down ({last_down})"),
        };
        match (self.link.state(), self.sub.state()) {
            (LinkState::Ready, LinkState::Ready) => Ok(()),
            (link, sub) => Err(format!(
                "redis unavailable: commands {}, subscription {}",
                describe(link, self.link.last_down()),
                describe(sub, self.sub.last_down())
            )),
        }
    }

    /// Hands one chat command to Redis.
    pub fn execute(&mut self, command: Command, now: Instant) {
        match command {
            Command::Append(messages) => {
                for message in &messages {
                    let key = (
                        message.room.clone(),
                        message.ts,
                        message.nickname.clone(),
                        message.text.clone(),
                    );
                    self.in_flight.insert(key, message.token);
                }
                self.link.submit_command(Command::Append(messages), now);
            }
            read @ Command::Read(_) => self.link.submit_command(read, now),
            Command::Follow { room } => {
                if self.followed.insert(room.clone()) {
                    self.sub.subscribe(&room, now);
                }
            }
            Command::Unfollow { room } => {
                if self.followed.remove(&room) {
                    self.sub.unsubscribe(&room, now);
                }
            }
            Command::Claim(claim) => match claim.nickname {
                None => self.next_anonymous(claim.token, claim.owner, 0, now),
                Some(nickname) => {
                    let pending = Pending::Acquire {
                        token: claim.token,
                        display: nickname.display,
                        key: nickname.key.clone(),
                        owner: claim.owner.clone(),
                        anonymous: None,
                    };
                    let request = Request::Acquire {
                        nickname: nickname.key,
                        owner: claim.owner,
                        ttl: LEASE_TTL,
                        replacing: claim.replacing,
                    };
                    self.ask(request, pending, now);
                }
            },
            Command::Release(LeaseRef { key, owner }) => {
                if self.leases.get(&key) == Some(&owner) {
                    self.leases.remove(&key);
                }
                self.ask(Request::Release { nickname: key, owner }, Pending::Ignore, now);
            }
            Command::Present {
                room,
                owner,
                nickname,
            } => {
                let entry = (room.clone(), owner.clone());
                if let Some(old) = self.presence.insert(entry, nickname.clone()) {
                    if old == nickname {
                        return;
                    }
                    let member = member_field(&owner, &old);
                    self.leave(room.clone(), member, now);
                }
                let request = Request::Join {
                    room: room.clone(),
                    member: member_field(&owner, &nickname),
                    node: self.node.clone(),
                };
                self.ask(request, Pending::Ignore, now);
                self.presence_changed(room, now);
            }
            Command::Absent { room, owner } => {
                if let Some(nickname) = self.presence.remove(&(room.clone(), owner.clone())) {
                    let member = member_field(&owner, &nickname);
                    self.leave(room.clone(), member, now);
                    self.presence_changed(room, now);
                }
            }
            Command::Members { token, room } => {
                self.ask(Request::Members { room }, Pending::Members { token }, now);
            }
            Command::PutToken {
                resume,
                session,
                ttl,
                live,
            } => {
                let session = Session {
                    nickname: session.nickname,
                    room: session.room,
                    owner: session.owner,
                };
                if live {
                    self.live_tokens
                        .insert(resume.clone(), (session.clone(), ttl, now));
                } else {
                    self.live_tokens.remove(&resume);
                }
                let request = Request::PutToken {
                    token: resume,
                    session,
                    ttl,
                };
                self.ask(request, Pending::Ignore, now);
            }
            Command::TakeToken { token, resume } => {
                self.live_tokens.remove(&resume);
                self.ask(
                    Request::TakeToken { token: resume },
                    Pending::TakeToken { token },
                    now,
                );
            }
            Command::DropToken { resume } => {
                self.live_tokens.remove(&resume);
                self.ask(Request::TakeToken { token: resume }, Pending::Ignore, now);
            }
            Command::Evict { owner } => {
                let node = node_of(&owner).to_owned();
                let data = format!("{EVICT_PREFIX}{owner}").into_bytes();
                self.ask(Request::NodeMessage { node, data }, Pending::Ignore, now);
            }
        }
    }

    /// The next outcome for the chat, after the connections' events were read ([`Self::process`]).
    pub fn poll_outcome(&mut self) -> Option<Outcome> {
        self.outcomes.pop_front()
    }

    /// When [`Self::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.link.poll_timeout(),
            self.sub.poll_timeout(),
            Some(self.next_tick),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Timers: the connections' (connect, reply, ping, reconnect) and the renewals.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.link.handle_timeout(now);
        self.sub.handle_timeout(now);
        if now >= self.next_tick {
            self.next_tick = now + RENEW_EVERY;
            self.renew(now);
        }
        self.process(now);
    }

    /// Reads what both connections reported, into outcomes.
    pub fn process(&mut self, now: Instant) {
        while let Some(event) = self.link.poll_event() {
            self.on_link_event(event, now);
        }
        while let Some(event) = self.sub.poll_event() {
            self.on_sub_event(event);
        }
        if self.link.state() != LinkState::Ready
            && !self.leases.is_empty()
            && now.saturating_duration_since(self.confirmed) >= LEASE_GIVE_UP
        {
            // Redis has been out of reach for most of a lease's life: these leases may expire
            // there and be taken before this node can renew them.
            let lost: BTreeSet<String> = std::mem::take(&mut self.leases).into_values().collect();
            self.outcomes
                .extend(lost.into_iter().map(|owner| Outcome::LeaseLost { owner }));
        }
    }

    /// The node is stopping: its members stop being listed and its leases are given back now,
    /// not when they expire.
    pub fn shutdown(&mut self, now: Instant) {
        let leases = std::mem::take(&mut self.leases);
        for (key, owner) in leases {
            self.ask(Request::Release { nickname: key, owner }, Pending::Ignore, now);
        }
        let node = self.node.clone();
        self.ask(Request::NodeDown { node }, Pending::Ignore, now);
    }

    /// Requests still unanswered (the shutdown waits for them, up to a deadline).
    pub fn pending(&self) -> usize {
        self.link.pending()
    }

    fn ask(&mut self, request: Request, pending: Pending, now: Instant) {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.pending.insert(tag, pending);
        self.link.submit(tag, request, now);
    }

    /// Removes a presence entry of this node; one that could not be removed (Redis away) is
    /// removed when the connection is back, or it would list somebody gone for as long as this
    /// node lives.
    fn leave(&mut self, room: String, member: String, now: Instant) {
        let request = Request::Leave {
            room: room.clone(),
            member: member.clone(),
            node: self.node.clone(),
        };
        self.ask(request, Pending::Leave { room, member }, now);
    }

    fn presence_changed(&mut self, room: String, now: Instant) {
        let request = Request::RoomEvent {
            room,
            data: PRESENCE_EVENT.to_vec(),
        };
        self.ask(request, Pending::Ignore, now);
    }

    fn next_anonymous(&mut self, token: Token, owner: String, tries: u32, now: Instant) {
        self.ask(
            Request::NextAnonymous,
            Pending::Anonymous { token, owner, tries },
            now,
        );
    }

    /// One round of renewals: liveness, leases, live tokens; and a reread of every followed
    /// room's members (a dead node's members go once its liveness key expired).
    fn renew(&mut self, now: Instant) {
        if self.link.state() != LinkState::Ready {
            return;
        }
        let node = self.node.clone();
        self.ask(Request::Heartbeat { node, ttl: NODE_TTL }, Pending::Ignore, now);
        let leases: Vec<(String, String)> = self.leases.iter().map(|(k, o)| (k.clone(), o.clone())).collect();
        for batch in leases.chunks(RENEW_BATCH) {
            let request = Request::RenewMany {
                leases: batch.to_vec(),
                ttl: LEASE_TTL,
            };
            self.ask(
                request,
                Pending::RenewMany {
                    leases: batch.to_vec(),
                },
                now,
            );
        }
        // The round is sent: until a reply says otherwise, the leases are as good as renewed now.
        self.confirmed = now;
        // A live session's token is put again once half its life is gone: it never lapses while
        // the session runs, and lapses `ttl` after its node died.
        let mut due = Vec::new();
        for (token, (session, ttl, put_at)) in &mut self.live_tokens {
            if now.saturating_duration_since(*put_at) >= *ttl / 2 {
                *put_at = now;
                due.push((token.clone(), session.clone(), *ttl));
            }
        }
        for (token, session, ttl) in due {
            self.ask(Request::PutToken { token, session, ttl }, Pending::Ignore, now);
        }
        self.outcomes.extend(
            self.followed
                .iter()
                .map(|room| Outcome::PresenceChanged { room: room.clone() }),
        );
    }

    fn on_link_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Ready => {
                // Back: prove the node alive at once, and renew what could not be renewed. The
                // presence entries are written again: one written while Redis was away never
                // arrived (writing one twice is harmless).
                self.next_tick = now;
                let entries: Vec<(String, String)> = self
                    .presence
                    .iter()
                    .map(|((room, owner), nickname)| (room.clone(), member_field(owner, nickname)))
                    .collect();
                let mut rooms = BTreeSet::new();
                for (room, member) in entries {
                    let node = self.node.clone();
                    self.ask(
                        Request::Join {
                            room: room.clone(),
                            member,
                            node,
                        },
                        Pending::Ignore,
                        now,
                    );
                    rooms.insert(room);
                }
                for (room, member) in std::mem::take(&mut self.unleft) {
                    // Unless it came back meanwhile (the same session, the same name).
                    let back = self
                        .presence
                        .iter()
                        .any(|((r, o), n)| *r == room && member_field(o, n) == member);
                    if !back {
                        self.leave(room.clone(), member, now);
                        rooms.insert(room);
                    }
                }
                for room in rooms {
                    self.presence_changed(room, now);
                }
            }
            Event::Down(_) => {}
            Event::Epoch(epoch) => {
                let changed = self.epoch.is_some_and(|known| known != epoch);
                self.epoch = Some(epoch);
                if changed {
                    log::warn!("redis: the data is another history now (epoch {epoch})");
                    // Another history: this node's presence entries and leases went with the data.
                    // The chat enters its rooms again (presence follows); the leases are taken
                    // again, and one somebody else took meanwhile is reported lost.
                    self.presence.clear();
                    self.outcomes.push_back(Outcome::Epoch(epoch));
                    let leases: Vec<(String, String)> =
                        self.leases.iter().map(|(k, o)| (k.clone(), o.clone())).collect();
                    for (key, owner) in leases {
                        let request = Request::Acquire {
                            nickname: key.clone(),
                            owner: owner.clone(),
                            ttl: LEASE_TTL,
                            replacing: None,
                        };
                        self.ask(request, Pending::Renew { key, owner }, now);
                    }
                }
            }
            Event::Reply(reply) => self.on_reply(*reply, now),
        }
    }

    fn on_reply(&mut self, reply: Reply, now: Instant) {
        if let Request::Publish { message, .. } = &reply.request {
            let key = (
                message.room.clone(),
                message.ts,
                message.nickname.clone(),
                message.text.clone(),
            );
            self.in_flight.remove(&key);
        }
        let tag = reply.tag;
        let reply = match reply.route() {
            Routed::Store(outcome) => {
                self.outcomes.push_back(outcome);
                return;
            }
            Routed::Other(reply) => reply,
        };
        let Some(pending) = self.pending.remove(&tag) else {
            return;
        };
        let result = reply.result;
        match pending {
            Pending::Ignore => {}
            Pending::Leave { room, member } => {
                if result.is_err() {
                    self.unleft.insert((room, member));
                }
            }
            Pending::Anonymous { token, owner, tries } => match result {
                Ok(Answer::Anonymous(number)) => {
                    let display = anonymous_nickname(number);
                    let key = display.to_lowercase();
                    let request = Request::Acquire {
                        nickname: key.clone(),
                        owner: owner.clone(),
                        ttl: LEASE_TTL,
                        replacing: None,
                    };
                    let pending = Pending::Acquire {
                        token,
                        display,
                        key,
                        owner,
                        anonymous: Some(tries),
                    };
                    self.ask(request, pending, now);
                }
                other => self.claimed(token, failed(other)),
            },
            Pending::Acquire {
                token,
                display,
                key,
                owner,
                anonymous,
            } => match (result, anonymous) {
                (Ok(Answer::Lease(Lease::Held)), _) => {
                    self.leases.insert(key, owner);
                    self.claimed(token, Ok(Claimed::Held { nickname: display }));
                }
                (Ok(Answer::Lease(_)), Some(tries)) if tries + 1 < ANONYMOUS_TRIES => {
                    self.next_anonymous(token, owner, tries + 1, now);
                }
                (Ok(Answer::Lease(_)), _) => self.claimed(token, Ok(Claimed::Taken)),
                (other, _) => self.claimed(token, failed(other)),
            },
            Pending::Renew { key, owner } => {
                if let Ok(Answer::Lease(Lease::NotOwner)) = result
                    && self.leases.get(&key) == Some(&owner)
                {
                    self.leases.remove(&key);
                    self.outcomes.push_back(Outcome::LeaseLost { owner });
                }
            }
            Pending::RenewMany { leases } => {
                let Ok(Answer::Renewed(renewed)) = result else {
                    return; // Unanswered: the next round asks again, or the give-up rule ends them.
                };
                for ((key, owner), held) in leases.into_iter().zip(renewed) {
                    if !held && self.leases.get(&key) == Some(&owner) {
                        self.leases.remove(&key);
                        self.outcomes.push_back(Outcome::LeaseLost { owner });
                    }
                }
            }
            Pending::Members { token } => {
                let result = match result {
                    Ok(Answer::Members(members)) => Ok(members
                        .into_iter()
                        .filter_map(|member| parse_member_field(&member.member))
                        .collect()),
                    other => failed(other),
                };
                self.outcomes.push_back(Outcome::Members { token, result });
            }
            Pending::TakeToken { token } => {
                let result = match result {
                    Ok(Answer::Session(session)) => Ok(session.map(|session| Resumable {
                        nickname: session.nickname,
                        room: session.room,
                        owner: session.owner,
                    })),
                    other => failed(other),
                };
                self.outcomes.push_back(Outcome::Token { token, result });
            }
        }
    }

    fn claimed(&mut self, token: Token, result: Result<Claimed, StoreError>) {
        self.outcomes.push_back(Outcome::Claim { token, result });
    }

    fn on_sub_event(&mut self, event: SubEvent) {
        match event {
            SubEvent::Up => {
                // Whatever was announced while the subscription was down is only in the history
                // now: every followed room reads its gap, and its members again.
                for room in &self.followed {
                    self.outcomes.push_back(Outcome::Following { room: room.clone() });
                    self.outcomes
                        .push_back(Outcome::PresenceChanged { room: room.clone() });
                }
            }
            SubEvent::Down(_) => {}
            SubEvent::Subscribed { room } => {
                if self.followed.contains(&room) {
                    self.outcomes.push_back(Outcome::Following { room });
                }
            }
            SubEvent::Message(remote) => {
                if self.epoch.is_some_and(|epoch| epoch != remote.epoch) {
                    return; // Stored under another history; the epoch change will reload.
                }
                let message = remote.message;
                let key = (
                    message.room.clone(),
                    message.ts,
                    message.nickname.clone(),
                    message.text.clone(),
                );
                let origin = self.in_flight.remove(&key);
                self.outcomes.push_back(Outcome::Posted(Posted {
                    message,
                    prev_id: remote.prev_id,
                    origin,
                }));
            }
            SubEvent::RoomEvent { room, data } => {
                if data == PRESENCE_EVENT {
                    self.outcomes.push_back(Outcome::PresenceChanged { room });
                }
            }
            SubEvent::NodeMessage(data) => {
                if let Some(owner) = std::str::from_utf8(&data)
                    .ok()
                    .and_then(|text| text.strip_prefix(EVICT_PREFIX))
                {
                    self.outcomes.push_back(Outcome::Evicted {
                        owner: owner.to_owned(),
                    });
                }
            }
        }
    }
}

/// A reply that is not the answer wanted, as the chat's error.
fn failed<T>(result: Result<Answer, RedisError>) -> Result<T, StoreError> {
    Err(match result {
        Err(error) => StoreError::from(error),
        Ok(other) => StoreError::from(RedisError::Unexpected(format!("unexpected answer {other:?}"))),
    })
}

/// The node part of an owner (`<node>.<session>`).
fn node_of(owner: &str) -> &str {
    owner.rsplit_once('.').map_or(owner, |(node, _)| node)
}

/// A presence hash field: the owner (no spaces: `<node>.<session>`), a space, the nickname.
fn member_field(owner: &str, nickname: &str) -> String {
    format!("{owner} {nickname}")
}

fn parse_member_field(field: &str) -> Option<Member> {
    let (owner, nickname) = field.split_once(' ')?;
    Some(Member {
        owner: owner.to_owned(),
        nickname: nickname.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // An origin for the tests' hand-moved clock.

    use redis_protocol::resp2::encode;
    use redis_protocol::resp2::types::Resp2Frame as _;

    use super::*;
    use crate::store::redis::Action;
    use crate::store::redis::resp::Frame;
    use crate::store::redis::scripts;
    use crate::store::{Claim, NewMessage, Nickname};

    const EPOCH: Epoch = Epoch(0x0123_4567_89ab_cdef);

    fn wire(frames: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in frames {
            let mut buf = vec![0; frame.encode_len(false)];
            let written = encode::encode(&mut buf, frame, false).expect("encodable");
            out.extend_from_slice(&buf[..written]);
        }
        out
    }

    fn bulk(text: &str) -> Frame {
        Frame::BulkString(text.as_bytes().to_vec())
    }

    fn push(kind: &str, channel: &str, payload: Frame) -> Frame {
        Frame::Array(vec![bulk(kind), bulk(channel), payload])
    }

    /// A store whose two connections are through their set-up, at `now`, following `lobby`.
    fn ready(now: Instant) -> RedisStore {
        let config = RedisConfig::from_url("redis://127.0.0.1:6379").expect("valid");
        let keys = config.keys();
        let mut store = RedisStore::new(&config, "n1", 7, now);
        store.execute(Command::Follow { room: "lobby".into() }, now);
        let link = store.link_mut();
        assert_eq!(link.poll_action(), Some(Action::Connect));
        link.connected(now);
        link.consume_output(link.output().len());
        let mut answers: Vec<Frame> = scripts::ALL.iter().map(|script| bulk(&script.sha())).collect();
        answers.push(bulk(&EPOCH.to_string()));
        link.receive(&wire(&answers), now);
        let sub = store.subscriber_mut();
        assert_eq!(sub.poll_action(), Some(Action::Connect));
        sub.connected(now);
        sub.consume_output(sub.output().len());
        let confirmations = [
            push("subscribe", &keys.node_channel("n1"), Frame::Integer(1)),
            push("subscribe", &keys.room_channel("lobby"), Frame::Integer(2)),
        ];
        sub.receive(&wire(&confirmations), now);
        store.process(now);
        assert_eq!(store.health(), Ok(()));
        assert_eq!(store.epoch(), Some(EPOCH));
        assert_eq!(
            outcomes(&mut store),
            [
                Outcome::Following { room: "lobby".into() },
                Outcome::PresenceChanged { room: "lobby".into() }
            ]
        );
        store
    }

    fn outcomes(store: &mut RedisStore) -> Vec<Outcome> {
        std::iter::from_fn(|| store.poll_outcome()).collect()
    }

    /// Answers what the command connection sent so far with `frames`, in order.
    fn answer(store: &mut RedisStore, frames: &[Frame], now: Instant) {
        let link = store.link_mut();
        link.consume_output(link.output().len());
        link.receive(&wire(frames), now);
        store.process(now);
    }

    fn claim(token: Token, name: &str, owner: &str) -> Command {
        Command::Claim(Claim {
            token,
            nickname: Some(Nickname {
                display: name.into(),
                key: name.to_lowercase(),
            }),
            owner: owner.into(),
            replacing: None,
        })
    }

    fn held(store: &mut RedisStore, now: Instant) {
        store.execute(claim(1, "Ann", "n1.1"), now);
        answer(store, &[Frame::Integer(1)], now);
        assert_eq!(
            outcomes(store),
            [Outcome::Claim {
                token: 1,
                result: Ok(Claimed::Held {
                    nickname: "Ann".into()
                })
            }]
        );
    }

    #[test]
    fn an_announcement_that_overtakes_its_reply_names_its_sender() {
        let now = Instant::now();
        let mut store = ready(now);
        let message = NewMessage {
            token: 5,
            room: "lobby".into(),
            nickname: "ann".into(),
            text: "hi there".into(),
            ts: 1700,
            key: None,
            lease: None,
        };
        store.execute(Command::Append(vec![message]), now);
        let announcement = bulk(&format!("m{EPOCH} 9 7 1700 3 annhi there"));
        let sub = store.subscriber_mut();
        sub.receive(
            &wire(&[push("message", "wschat:0:room:lobby", announcement)]),
            now,
        );
        store.process(now);
        let got = outcomes(&mut store);
        let [Outcome::Posted(posted)] = got.as_slice() else {
            panic!("one announcement: {got:?}");
        };
        assert_eq!(
            (posted.message.id, posted.prev_id, posted.origin),
            (9, 7, Some(5))
        );
    }

    #[test]
    fn a_refused_renewal_reports_the_lease_lost() {
        let now = Instant::now();
        let mut store = ready(now);
        held(&mut store, now);
        store.handle_timeout(now);
        // The heartbeat, then the round's renewals (one script call), which find the lease
        // somebody else's.
        let refused = Frame::Array(vec![Frame::Integer(0)]);
        answer(&mut store, &[Frame::SimpleString(b"OK".to_vec()), refused], now);
        let lost: Vec<Outcome> = outcomes(&mut store)
            .into_iter()
            .filter(|outcome| matches!(outcome, Outcome::LeaseLost { .. }))
            .collect();
        assert_eq!(lost, [Outcome::LeaseLost { owner: "n1.1".into() }]);
    }

    #[test]
    fn leases_redis_could_not_renew_for_most_of_their_life_are_given_up() {
        let now = Instant::now();
        let mut store = ready(now);
        held(&mut store, now);
        store
            .link_mut()
            .lost(crate::store::redis::DownReason::Closed, now);
        store.process(now + LEASE_GIVE_UP - Duration::from_millis(1));
        assert!(
            !outcomes(&mut store)
                .iter()
                .any(|outcome| matches!(outcome, Outcome::LeaseLost { .. })),
            "still within its life"
        );
        store.process(now + LEASE_GIVE_UP);
        assert_eq!(
            outcomes(&mut store),
            [Outcome::LeaseLost { owner: "n1.1".into() }]
        );
        assert!(store.health().is_err());
    }

    #[test]
    fn a_new_epoch_is_told_and_the_leases_are_taken_again() {
        let now = Instant::now();
        let mut store = ready(now);
        held(&mut store, now);
        let next = Epoch(42);
        reconnect(&mut store, next, now, now + Duration::from_secs(1));
        assert!(outcomes(&mut store).contains(&Outcome::Epoch(next)));
        let written = String::from_utf8_lossy(store.link_mut().output()).into_owned();
        assert!(
            written.contains("wschat:nick:ann"),
            "the lease asked for again: {written}"
        );
    }

    /// The command connection goes down at `now` and is back, through its set-up, at `later`,
    /// with the data's epoch `epoch`.
    fn reconnect(store: &mut RedisStore, epoch: Epoch, now: Instant, later: Instant) {
        store
            .link_mut()
            .lost(crate::store::redis::DownReason::Closed, now);
        store.process(now);
        store.handle_timeout(later);
        let link = store.link_mut();
        assert_eq!(link.poll_action(), Some(Action::Connect));
        link.connected(later);
        link.consume_output(link.output().len());
        let mut answers: Vec<Frame> = scripts::ALL.iter().map(|script| bulk(&script.sha())).collect();
        answers.push(bulk(&epoch.to_string()));
        link.receive(&wire(&answers), later);
        store.process(later);
    }

    #[test]
    fn a_presence_entry_that_could_not_be_removed_is_removed_when_redis_is_back() {
        let now = Instant::now();
        let mut store = ready(now);
        let present = Command::Present {
            room: "lobby".into(),
            owner: "n1.1".into(),
            nickname: "Ann".into(),
        };
        store.execute(present, now);
        answer(&mut store, &[Frame::Integer(1), Frame::Integer(1)], now);
        store
            .link_mut()
            .lost(crate::store::redis::DownReason::Closed, now);
        store.execute(
            Command::Absent {
                room: "lobby".into(),
                owner: "n1.1".into(),
            },
            now,
        );
        store.process(now);
        let later = now + Duration::from_secs(1);
        reconnect(&mut store, EPOCH, now, later);
        let written = String::from_utf8_lossy(store.link_mut().output()).into_owned();
        assert!(written.contains("n1.1 Ann"), "the removal sent again: {written}");
        assert!(!written.contains("HSET"), "and not the entry: {written}");
    }

    #[test]
    fn a_presence_field_reads_back_as_owner_and_nickname() {
        let field = member_field("n1.4", "Ann Lee");
        assert_eq!(
            parse_member_field(&field),
            Some(Member {
                owner: "n1.4".into(),
                nickname: "Ann Lee".into()
            })
        );
        assert_eq!(parse_member_field("no-space"), None);
    }
}
