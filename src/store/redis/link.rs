//! Connections to Redis as sans-IO state machines: [`Link`] for commands, [`Subscriber`] for
//! pub/sub.
//!
//! Neither touches a socket or reads a clock. The event loop opens and closes the TCP connection
//! when asked ([`Action`]), hands over what arrived (`receive`), writes what is queued (`output`,
//! then `consume_output`), and passes the time to `handle_timeout` when `poll_timeout` says so.
//! Everything a caller needs to know comes out as events, in order.
//!
//! ```text
//!              connect ok                 set-up answered
//!  Connecting ───────────► SettingUp ─────────────────────► Ready
//!      │  ▲                    │                              │
//!      │  │ backoff over       │ any failure: connect error or timeout, EOF, I/O error,
//!      │  │                    │ no reply in time, bytes that are not RESP2, set-up refused
//!      ▼  │                    ▼                              ▼
//!     Backoff ◄────────────────┴──────────────────────────────┘
//! ```
//!
//! **Set-up.** On every new connection a [`Link`] sends `SELECT` (if the database is not 0),
//! `SCRIPT LOAD` for every script, and the epoch script, pipelined; requests wait until all of
//! that is answered, so none can run on the wrong database or before the epoch is known. A
//! [`Subscriber`] sends one `SUBSCRIBE` for its node channel and every room, and reports
//! [`SubEvent::Up`] once every channel is confirmed.
//!
//! **Requests** are written at once when the link is ready (all of a turn's requests go out in one
//! write: pipelining) and matched to replies by position. A request submitted while connecting
//! waits for the set-up; one submitted while backing off fails at once with
//! [`RedisError::Unavailable`]. Replies come out in submission order, exactly one per request.
//!
//! **NOSCRIPT.** If the server forgot the scripts (`SCRIPT FLUSH`), every `EVALSHA` already in
//! the pipeline fails without running. The link then stops writing, waits for every reply still
//! due, and sends the failed calls again as `EVAL` (in their original order) before anything
//! newer, so a sender's messages keep their order.
//!
//! **Reconnecting** waits `backoff_min`, doubling up to `backoff_max` after each failure, with
//! jitter (between half and all of the wait) so that nodes which lost Redis together do not return
//! in lockstep. A connection that completes its set-up resets the wait.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::keys::{Channel, Keys};
use super::ops::{self, Answer, Call, Context, Reply, Request, RoomPayload, ScriptBy, Tag};
use super::resp::{self, Decoder, Frame};
use super::scripts::{self, Script};
use super::{DownReason, RedisConfig, RedisError, RemoteMessage, Timeouts};
use crate::store::{Command, Epoch};

/// What the event loop must do with the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the configured address, then call `connected` or `lost`.
    Connect,
    /// Close the socket (the link gave up on it); nothing more is read from it.
    Disconnect,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Waiting for the TCP connect.
    Connecting,
    /// Connected; the set-up commands are answered.
    SettingUp,
    /// Requests flow.
    Ready,
    /// Down; waiting before the next connect.
    Backoff,
    /// Shut down by its owner; it never reconnects.
    Shutdown,
}

/// The lifecycle both connections share: state, timers, backoff, bytes in and out.
#[derive(Debug)]
struct Conn {
    state: LinkState,
    timeouts: Timeouts,
    actions: VecDeque<Action>,
    out: Vec<u8>,
    decoder: Decoder,
    /// When each reply still due was asked for, oldest first.
    awaiting: VecDeque<Instant>,
    /// When the server last sent anything (or the connection opened).
    last_heard: Instant,
    /// Connect deadline (Connecting) or end of the wait (Backoff).
    deadline: Instant,
    /// The next backoff wait before jitter.
    backoff: Duration,
    /// Why the connection last went down (what an unavailable request is told).
    last_down: DownReason,
    rng: u64,
}

/// A timer that came due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    ConnectTimeout,
    ReplyTimeout,
    Ping,
    Reconnect,
}

impl Conn {
    fn new(timeouts: Timeouts, seed: u64, now: Instant) -> Self {
        Self {
            state: LinkState::Connecting,
            timeouts,
            actions: VecDeque::from([Action::Connect]),
            out: Vec::new(),
            decoder: Decoder::new(),
            awaiting: VecDeque::new(),
            last_heard: now,
            deadline: now + timeouts.connect,
            backoff: timeouts.backoff_min,
            last_down: DownReason::ConnectTimeout,
            // Any seed but the one that xors to zero, the state xorshift never leaves.
            rng: match seed ^ 0x9e37_79b9_7f4a_7c15 {
                0 => 0x9e37_79b9_7f4a_7c15,
                state => state,
            },
        }
    }

    /// A pseudo-random number (xorshift64*): jitter, and candidate epochs. Not a secret.
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The TCP connect completed. False if the link was not waiting for one.
    fn connected(&mut self, now: Instant) -> bool {
        if self.state != LinkState::Connecting {
            return false;
        }
        self.state = LinkState::SettingUp;
        self.last_heard = now;
        true
    }

    /// Whether the loop holds a socket for this connection (connecting or connected).
    fn has_socket(&self) -> bool {
        self.is_up() || self.state == LinkState::Connecting
    }

    fn is_up(&self) -> bool {
        matches!(self.state, LinkState::SettingUp | LinkState::Ready)
    }

    fn ready(&mut self) {
        self.state = LinkState::Ready;
        self.backoff = self.timeouts.backoff_min;
    }

    /// Queues one command that will be answered.
    fn send(&mut self, encode: impl FnOnce(&mut Vec<u8>), now: Instant) {
        encode(&mut self.out);
        self.awaiting.push_back(now);
    }

    fn answered(&mut self) {
        self.awaiting.pop_front();
    }

    /// Goes to Backoff. `by_us`: the link gave up on a socket the loop still holds.
    fn down(&mut self, reason: DownReason, now: Instant, by_us: bool) {
        if by_us {
            self.actions.push_back(Action::Disconnect);
        }
        self.out.clear();
        self.decoder.clear();
        self.awaiting.clear();
        self.last_down = reason;
        if self.state == LinkState::Shutdown {
            return;
        }
        self.state = LinkState::Backoff;
        let wait = self.backoff;
        // Jitter: between half and all of the wait.
        let half = wait / 2;
        let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
        self.deadline = now + half + Duration::from_micros(self.random() % spread);
        self.backoff = (wait * 2).min(self.timeouts.backoff_max);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            LinkState::Connecting | LinkState::Backoff => Some(self.deadline),
            LinkState::SettingUp | LinkState::Ready => Some(match self.awaiting.front() {
                Some(asked) => *asked + self.timeouts.reply,
                None => self.last_heard + self.timeouts.ping_interval,
            }),
            LinkState::Shutdown => None,
        }
    }

    /// The timer due at `now`, if any; a reconnect is started here.
    fn due(&mut self, now: Instant) -> Option<Due> {
        let deadline = self.poll_timeout()?;
        if now < deadline {
            return None;
        }
        match self.state {
            LinkState::Connecting => Some(Due::ConnectTimeout),
            LinkState::Backoff => {
                self.state = LinkState::Connecting;
                self.deadline = now + self.timeouts.connect;
                self.actions.push_back(Action::Connect);
                Some(Due::Reconnect)
            }
            LinkState::SettingUp | LinkState::Ready if self.awaiting.is_empty() => Some(Due::Ping),
            LinkState::SettingUp | LinkState::Ready => Some(Due::ReplyTimeout),
            LinkState::Shutdown => None,
        }
    }

    /// Decodes what arrived into frames; an error means the stream is broken.
    fn receive(&mut self, bytes: &[u8], now: Instant) -> Result<Vec<Frame>, DownReason> {
        if !self.is_up() {
            return Ok(Vec::new());
        }
        self.last_heard = now;
        self.decoder.feed(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = self
            .decoder
            .next_frame()
            .map_err(|error| DownReason::Protocol(error.to_string()))?
        {
            frames.push(frame);
        }
        Ok(frames)
    }

    fn consume_output(&mut self, written: usize) {
        self.out.drain(..written.min(self.out.len()));
    }
}

/// What an awaited reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Select,
    Load(&'static Script),
    /// The epoch read by the set-up or after a publish found it gone.
    Epoch,
    Ping,
    /// The request with this sequence number.
    Request(u64),
}

/// A submitted request until its reply is handed out.
#[derive(Debug)]
struct Slot {
    tag: Tag,
    request: Request,
    result: Option<Result<Answer, RedisError>>,
}

/// What a [`Link`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The connection is set up; requests flow.
    Ready,
    /// The connection went down (requests in flight were answered with errors).
    Down(DownReason),
    /// The data's epoch, when first read and whenever it changes: a change means Redis lost its
    /// data, and ids known before belong to another history.
    Epoch(Epoch),
    /// One request's answer, in submission order (boxed: a reply carries its request, far larger
    /// than the other events).
    Reply(Box<Reply>),
}

/// The command connection.
#[derive(Debug)]
pub struct Link {
    conn: Conn,
    keys: Keys,
    db: u32,
    keep_per_room: usize,
    /// [`RedisConfig::pipeline`].
    pipeline: bool,
    /// Each script with its digest, computed once.
    shas: Vec<(&'static Script, String)>,
    epoch: Option<Epoch>,
    /// Requests not yet handed out, oldest first; the front has sequence number `first_seq`.
    slots: VecDeque<Slot>,
    first_seq: u64,
    /// Requests waiting to be written (for the set-up, or for a NOSCRIPT drain).
    unsent: VecDeque<u64>,
    /// What each reply due answers, in the order they will come.
    wire: VecDeque<Wire>,
    /// Requests that met NOSCRIPT, to send again with EVAL once no older reply is due.
    retry: Vec<u64>,
    /// Set-up replies still due.
    setup_left: usize,
    events: VecDeque<Event>,
}

impl Link {
    /// A link that will connect to `config`'s server. `seed` drives jitter and candidate epochs:
    /// pass something different per process (the lead passes `Epoch::random()`).
    pub fn new(config: &RedisConfig, seed: u64, now: Instant) -> Self {
        Self {
            conn: Conn::new(config.timeouts, seed, now),
            keys: config.keys(),
            db: config.db,
            keep_per_room: config.keep_per_room,
            pipeline: config.pipeline,
            shas: scripts::ALL
                .iter()
                .map(|script| (*script, script.sha()))
                .collect(),
            epoch: None,
            slots: VecDeque::new(),
            first_seq: 0,
            unsent: VecDeque::new(),
            wire: VecDeque::new(),
            retry: Vec::new(),
            setup_left: 0,
            events: VecDeque::new(),
        }
    }

    pub fn state(&self) -> LinkState {
        self.conn.state
    }

    /// The data's epoch, once read.
    /// Why the connection last went down (meaningful while it is not ready).
    pub fn last_down(&self) -> &DownReason {
        &self.conn.last_down
    }

    pub fn epoch(&self) -> Option<Epoch> {
        self.epoch
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Requests submitted and not yet answered.
    pub fn pending(&self) -> usize {
        self.slots.len()
    }

    /// What the loop must do with the socket next.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.conn.actions.pop_front()
    }

    /// Bytes to write.
    pub fn output(&self) -> &[u8] {
        &self.conn.out
    }

    /// `written` bytes of [`Link::output`] were written.
    pub fn consume_output(&mut self, written: usize) {
        self.conn.consume_output(written);
    }

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.conn.due(now) {
            Some(Due::ConnectTimeout) => self.go_down(DownReason::ConnectTimeout, now, true),
            Some(Due::ReplyTimeout) => self.go_down(DownReason::ReplyTimeout, now, true),
            Some(Due::Ping) => self.send_plain(&["PING"], Wire::Ping, now),
            Some(Due::Reconnect) | None => {}
        }
    }

    /// The TCP connection is open: send the set-up.
    pub fn connected(&mut self, now: Instant) {
        if !self.conn.connected(now) {
            return;
        }
        if self.db != 0 {
            let db = self.db.to_string();
            self.send_plain(&["SELECT", &db], Wire::Select, now);
        }
        for (script, _) in &self.shas {
            self.conn.send(
                |out| resp::encode_command(out, &["SCRIPT", "LOAD", script.body]),
                now,
            );
            self.wire.push_back(Wire::Load(script));
        }
        self.send_epoch(now);
        self.setup_left = self.wire.len();
    }

    /// The connection failed or ended (connect error, EOF, I/O error).
    pub fn lost(&mut self, reason: DownReason, now: Instant) {
        if self.conn.has_socket() {
            self.go_down(reason, now, false);
        }
    }

    /// Bytes that arrived.
    pub fn receive(&mut self, bytes: &[u8], now: Instant) {
        match self.conn.receive(bytes, now) {
            Ok(frames) => {
                for frame in frames {
                    if !self.conn.is_up() {
                        break;
                    }
                    self.on_frame(frame, now);
                }
            }
            Err(reason) => self.go_down(reason, now, true),
        }
    }

    /// Stops for good: every request not answered fails, the socket is to be closed.
    pub fn shutdown(&mut self, now: Instant) {
        let has_socket = self.conn.has_socket();
        self.conn.state = LinkState::Shutdown;
        self.fail_all(DownReason::Shutdown, now, has_socket);
    }

    /// Queues `request`; its [`Reply`] carries `tag`.
    pub fn submit(&mut self, tag: Tag, request: Request, now: Instant) {
        let seq = self.first_seq + self.slots.len() as u64;
        self.slots.push_back(Slot {
            tag,
            request,
            result: None,
        });
        match self.conn.state {
            LinkState::Backoff | LinkState::Shutdown => {
                let error = RedisError::Unavailable(self.conn.last_down.clone());
                self.complete(seq, Err(error));
            }
            LinkState::Ready if self.retry.is_empty() && (self.pipeline || !self.request_due()) => {
                self.send_request(seq, false, now)
            }
            _ => self.unsent.push_back(seq),
        }
        self.deliver();
    }

    /// Queues a storage command: each message is published (checked against its sender's lease, if
    /// it names one), a read is read; each reply's [`Reply::route`] gives the store's outcome.
    /// Coordination commands are not one request each; [`super::store::RedisStore`] runs them.
    pub fn submit_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Append(messages) => {
                for message in messages {
                    let owner = message.lease.as_ref().map(|lease| lease.owner.clone());
                    self.submit(message.token, Request::Publish { message, owner }, now);
                }
            }
            Command::Read(read) => self.submit(read.token, Request::Read(read), now),
            _ => {}
        }
    }

    fn sha(&self, script: &Script) -> &str {
        sha_of(&self.shas, script)
    }

    fn send_plain(&mut self, args: &[&str], wire: Wire, now: Instant) {
        self.conn.send(|out| resp::encode_command(out, args), now);
        self.wire.push_back(wire);
    }

    fn send_epoch(&mut self, now: Instant) {
        let candidate = Epoch(self.conn.random());
        if let Ok(call) = ops::call(&Request::Epoch, &self.context(candidate)) {
            self.send_call(&call, false, now);
            self.wire.push_back(Wire::Epoch);
        }
    }

    fn context(&self, candidate: Epoch) -> Context<'_> {
        Context {
            keys: &self.keys,
            epoch: self.epoch,
            keep_per_room: self.keep_per_room,
            candidate,
        }
    }

    fn send_call(&mut self, call: &Call, by_body: bool, now: Instant) {
        let by = match call.script() {
            Some(script) if !by_body => ScriptBy::Sha(sha_of(&self.shas, script)),
            _ => ScriptBy::Body,
        };
        self.conn.send(|out| call.encode(by, out), now);
    }

    /// Writes request `seq` (a script by digest, or by body after NOSCRIPT), or answers it
    /// locally.
    fn send_request(&mut self, seq: u64, by_body: bool, now: Instant) {
        let candidate = Epoch(self.conn.random());
        let Some(slot) = self.slot(seq) else {
            return;
        };
        match ops::call(&slot.request, &self.context(candidate)) {
            Ok(call) => {
                self.send_call(&call, by_body, now);
                self.wire.push_back(Wire::Request(seq));
            }
            Err(answer) => self.complete(seq, Ok(answer)),
        }
    }

    fn slot(&self, seq: u64) -> Option<&Slot> {
        self.slots
            .get(usize::try_from(seq.checked_sub(self.first_seq)?).ok()?)
    }

    fn complete(&mut self, seq: u64, result: Result<Answer, RedisError>) {
        let index = seq
            .checked_sub(self.first_seq)
            .and_then(|i| usize::try_from(i).ok());
        if let Some(slot) = index.and_then(|index| self.slots.get_mut(index)) {
            slot.result = Some(result);
        }
    }

    /// Hands out every finished request at the front, in submission order.
    fn deliver(&mut self) {
        while self.slots.front().is_some_and(|slot| slot.result.is_some()) {
            if let Some(Slot {
                tag,
                request,
                result: Some(result),
            }) = self.slots.pop_front()
            {
                self.first_seq += 1;
                self.events
                    .push_back(Event::Reply(Box::new(Reply { tag, request, result })));
            }
        }
    }

    fn on_frame(&mut self, frame: Frame, now: Instant) {
        self.conn.answered();
        let Some(wire) = self.wire.pop_front() else {
            let detail = format!("a reply nobody asked for: {}", resp::describe(&frame));
            self.go_down(DownReason::Protocol(detail), now, true);
            return;
        };
        match wire {
            Wire::Select | Wire::Load(_) => self.on_setup_step(wire, &frame, now),
            Wire::Epoch => {
                match ops::parse(&Request::Epoch, frame) {
                    Ok(Answer::Epoch(epoch)) => self.learn_epoch(epoch),
                    Ok(other) => log::warn!("redis: unexpected epoch answer {other:?}"),
                    Err(error) if self.setup_left > 0 => {
                        self.go_down(DownReason::Setup(format!("epoch: {error}")), now, true);
                        return;
                    }
                    Err(error) => log::warn!("redis: reading the epoch failed: {error}"),
                }
                self.setup_step_done(now);
            }
            Wire::Ping => {
                if let Frame::Error(message) = frame {
                    log::warn!("redis: PING answered {message}");
                }
            }
            Wire::Request(seq) => {
                self.on_reply(seq, frame, now);
                if !self.pipeline && self.retry.is_empty() && self.conn.state == LinkState::Ready {
                    // One at a time: the next one goes now that this one is answered.
                    self.flush_unsent(now);
                }
            }
        }
        self.deliver();
    }

    fn on_setup_step(&mut self, wire: Wire, frame: &Frame, now: Instant) {
        let refused = match (wire, frame) {
            (_, Frame::Error(message)) => Some(message.clone()),
            (Wire::Select, frame) if resp::text(frame) == Some("OK") => None,
            (Wire::Load(script), frame) if resp::text(frame) == Some(self.sha(script)) => None,
            (_, frame) => Some(format!("unexpected answer {}", resp::describe(frame))),
        };
        if let Some(detail) = refused {
            let step = match wire {
                Wire::Load(script) => format!("SCRIPT LOAD {}", script.name),
                _ => "SELECT".to_owned(),
            };
            self.go_down(DownReason::Setup(format!("{step}: {detail}")), now, true);
            return;
        }
        self.setup_step_done(now);
    }

    /// Counts a set-up reply; the last one makes the link ready and writes what waited.
    fn setup_step_done(&mut self, now: Instant) {
        if self.setup_left == 0 {
            return;
        }
        self.setup_left -= 1;
        if self.setup_left == 0 {
            self.conn.ready();
            self.events.push_back(Event::Ready);
            self.flush_unsent(now);
        }
    }

    fn learn_epoch(&mut self, epoch: Epoch) {
        if self.epoch != Some(epoch) {
            self.epoch = Some(epoch);
            self.events.push_back(Event::Epoch(epoch));
        }
    }

    fn on_reply(&mut self, seq: u64, frame: Frame, now: Instant) {
        let Some(slot) = self.slot(seq) else {
            return;
        };
        if slot.request.is_script()
            && matches!(&frame, Frame::Error(message) if message.starts_with("NOSCRIPT"))
        {
            // Not run: send again with the body once every older reply is in.
            self.retry.push(seq);
        } else {
            let result = ops::parse(&slot.request, frame);
            if let Err(RedisError::EpochChanged { current }) = &result {
                match current {
                    Some(epoch) => self.learn_epoch(*epoch),
                    // Gone with the data: draw the next one (SET NX: one node's draw wins).
                    None => self.send_epoch(now),
                }
            }
            self.complete(seq, result);
        }
        let older_due = self.wire.iter().any(|wire| matches!(wire, Wire::Request(_)));
        if !self.retry.is_empty() && !older_due {
            let mut retry = std::mem::take(&mut self.retry);
            retry.sort_unstable();
            for seq in retry {
                self.send_request(seq, true, now);
            }
            self.flush_unsent(now);
        }
    }

    fn flush_unsent(&mut self, now: Instant) {
        while self.pipeline || !self.request_due() {
            let Some(seq) = self.unsent.pop_front() else {
                return;
            };
            self.send_request(seq, false, now);
        }
    }

    /// Whether a request's reply is due.
    fn request_due(&self) -> bool {
        self.wire.iter().any(|wire| matches!(wire, Wire::Request(_)))
    }

    fn go_down(&mut self, reason: DownReason, now: Instant, by_us: bool) {
        self.events.push_back(Event::Down(reason.clone()));
        self.fail_all(reason, now, by_us);
    }

    /// Answers every request not yet answered: sent ones may have run, the others did not.
    fn fail_all(&mut self, reason: DownReason, now: Instant, by_us: bool) {
        self.conn.down(reason.clone(), now, by_us);
        for wire in std::mem::take(&mut self.wire) {
            if let Wire::Request(seq) = wire {
                self.complete(seq, Err(ops::lost(true, &reason)));
            }
        }
        let never_ran = std::mem::take(&mut self.retry)
            .into_iter()
            .chain(std::mem::take(&mut self.unsent));
        for seq in never_ran.collect::<Vec<_>>() {
            self.complete(seq, Err(ops::lost(false, &reason)));
        }
        self.setup_left = 0;
        self.deliver();
    }
}

/// The digest of `script` among the computed ones.
fn sha_of<'a>(shas: &'a [(&'static Script, String)], script: &Script) -> &'a str {
    shas.iter()
        .find(|(known, _)| known.name == script.name)
        .map_or("", |(_, sha)| sha.as_str())
}

/// What a [`Subscriber`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubEvent {
    /// Every channel is subscribed, after a (re)connect: whatever was published while the
    /// subscription was down is only in the history now, so read each room's gap.
    Up,
    /// The subscription is down; messages published from now on are not heard until `Up`.
    Down(DownReason),
    /// A room added while up is now subscribed: read its gap since the last id the node knows.
    Subscribed { room: String },
    /// A stored message announced on a subscribed room's channel.
    Message(RemoteMessage),
    /// An opaque room event ([`Request::RoomEvent`]).
    RoomEvent { room: String, data: Vec<u8> },
    /// An opaque message on this node's channel ([`Request::NodeMessage`]).
    NodeMessage(Vec<u8>),
}

/// The pub/sub connection: a node channel and one channel per room with members on this node.
#[derive(Debug)]
pub struct Subscriber {
    conn: Conn,
    keys: Keys,
    node: String,
    rooms: BTreeSet<String>,
    /// Subscribe confirmations the set-up still waits for.
    setup_left: usize,
    events: VecDeque<SubEvent>,
}

impl Subscriber {
    /// A subscriber for `node` (its own channel is always subscribed).
    pub fn new(config: &RedisConfig, node: &str, seed: u64, now: Instant) -> Self {
        Self {
            conn: Conn::new(config.timeouts, seed, now),
            keys: config.keys(),
            node: node.to_owned(),
            rooms: BTreeSet::new(),
            setup_left: 0,
            events: VecDeque::new(),
        }
    }

    pub fn state(&self) -> LinkState {
        self.conn.state
    }

    /// Why the connection last went down (meaningful while it is not ready).
    pub fn last_down(&self) -> &DownReason {
        &self.conn.last_down
    }

    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.iter().map(String::as_str)
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.conn.actions.pop_front()
    }

    pub fn output(&self) -> &[u8] {
        &self.conn.out
    }

    pub fn consume_output(&mut self, written: usize) {
        self.conn.consume_output(written);
    }

    pub fn poll_event(&mut self) -> Option<SubEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.conn.due(now) {
            Some(Due::ConnectTimeout) => self.go_down(DownReason::ConnectTimeout, now, true),
            Some(Due::ReplyTimeout) => self.go_down(DownReason::ReplyTimeout, now, true),
            // In subscribe mode PING is allowed and answered ["pong", ""].
            Some(Due::Ping) => self.send(&["PING"], now),
            Some(Due::Reconnect) | None => {}
        }
    }

    /// The TCP connection is open: subscribe to everything at once.
    pub fn connected(&mut self, now: Instant) {
        if !self.conn.connected(now) {
            return;
        }
        let mut channels = vec![self.keys.node_channel(&self.node)];
        channels.extend(self.rooms.iter().map(|room| self.keys.room_channel(room)));
        self.setup_left = channels.len();
        let mut args = vec!["SUBSCRIBE"];
        args.extend(channels.iter().map(String::as_str));
        self.conn.out.clear();
        resp::encode_command(&mut self.conn.out, &args);
        // One confirmation per channel.
        for _ in &channels {
            self.conn.awaiting.push_back(now);
        }
    }

    pub fn lost(&mut self, reason: DownReason, now: Instant) {
        if self.conn.has_socket() {
            self.go_down(reason, now, false);
        }
    }

    /// Listens to `room` from now on (at once if connected, else from the next connection).
    pub fn subscribe(&mut self, room: &str, now: Instant) {
        if self.rooms.insert(room.to_owned()) && self.conn.is_up() {
            let channel = self.keys.room_channel(room);
            self.send(&["SUBSCRIBE", &channel], now);
        }
    }

    /// Stops listening to `room`.
    pub fn unsubscribe(&mut self, room: &str, now: Instant) {
        if self.rooms.remove(room) && self.conn.is_up() {
            let channel = self.keys.room_channel(room);
            self.send(&["UNSUBSCRIBE", &channel], now);
        }
    }

    pub fn shutdown(&mut self, now: Instant) {
        let has_socket = self.conn.has_socket();
        self.conn.state = LinkState::Shutdown;
        self.conn.down(DownReason::Shutdown, now, has_socket);
    }

    pub fn receive(&mut self, bytes: &[u8], now: Instant) {
        match self.conn.receive(bytes, now) {
            Ok(frames) => {
                for frame in frames {
                    if !self.conn.is_up() {
                        break;
                    }
                    self.on_frame(frame, now);
                }
            }
            Err(reason) => self.go_down(reason, now, true),
        }
    }

    fn send(&mut self, args: &[&str], now: Instant) {
        self.conn.send(|out| resp::encode_command(out, args), now);
    }

    fn go_down(&mut self, reason: DownReason, now: Instant, by_us: bool) {
        self.conn.down(reason.clone(), now, by_us);
        self.setup_left = 0;
        self.events.push_back(SubEvent::Down(reason));
    }

    fn on_frame(&mut self, frame: Frame, now: Instant) {
        let Frame::Array(items) = frame else {
            // An error answers a command we sent; anything else has no place here.
            self.conn.answered();
            let detail = format!("in subscribe mode: {}", resp::describe(&frame));
            if self.setup_left > 0 {
                self.go_down(DownReason::Setup(detail), now, true);
            } else {
                log::warn!("redis subscriber: {detail}");
            }
            return;
        };
        let kind = items.first().and_then(resp::bytes).unwrap_or_default();
        let channel = items.get(1).and_then(resp::bytes).unwrap_or_default();
        match kind {
            b"message" => {
                let payload = items.get(2).and_then(resp::bytes).unwrap_or_default();
                self.on_message(channel, payload);
            }
            b"subscribe" => {
                self.conn.answered();
                if self.setup_left > 0 {
                    self.setup_left -= 1;
                    if self.setup_left == 0 {
                        self.conn.ready();
                        self.events.push_back(SubEvent::Up);
                    }
                } else if let Some(Channel::Room(room)) = self.keys.parse_channel(channel)
                    && self.rooms.contains(&room)
                {
                    self.events.push_back(SubEvent::Subscribed { room });
                }
            }
            b"unsubscribe" | b"pong" => self.conn.answered(),
            other => log::warn!(
                "redis subscriber: unexpected push {:?}",
                String::from_utf8_lossy(other)
            ),
        }
    }

    fn on_message(&mut self, channel: &[u8], payload: &[u8]) {
        match self.keys.parse_channel(channel) {
            Some(Channel::Room(room)) if self.rooms.contains(&room) => {
                match ops::parse_room_payload(&room, payload) {
                    Some(RoomPayload::Message(message)) => self.events.push_back(SubEvent::Message(message)),
                    Some(RoomPayload::Event(data)) => {
                        self.events.push_back(SubEvent::RoomEvent { room, data })
                    }
                    None => log::warn!(
                        "redis subscriber: unreadable payload on room {room:?}: {:?}",
                        String::from_utf8_lossy(&payload[..payload.len().min(60)])
                    ),
                }
            }
            Some(Channel::Node(node)) if node == self.node => {
                self.events.push_back(SubEvent::NodeMessage(payload.to_vec()));
            }
            // A room left a moment ago: its messages still in flight are no longer wanted.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
