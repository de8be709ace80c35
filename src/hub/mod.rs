//! The hub: everything connections share — routing, sessions and the chat — sans-IO.
//!
//! Connections never reach each other directly. A connection's stack reports what happened as an
//! input ([`Hub::opened`], [`Hub::text`], [`Hub::closed`]); the hub updates the shared state and
//! queues [`Output`]s ("deliver this event to these connections", "close that one"). The server
//! drains the queue once per turn of its loop, after every readiness event of that turn, and only
//! then flushes the connections the outputs touched. So no handler ever calls back into reading or
//! settling another connection, and the order of effects is the order of the queue (quinn-proto's
//! `Endpoint`/`Connection` split, with events in both directions).
//!
//! Inputs:  [`Hub::route`] (a request head) · `opened` · `text` · `closed` · `store_outcome`
//! Outputs: [`Output::Deliver`] · [`Output::Close`] · store commands ([`Hub::take_store_commands`])
//!
//! A chat client is a *session* ([`SessionId`]), which the chat addresses, whatever carries it: a
//! WebSocket, for its whole life; or plain HTTP ([`session::HttpSession`]): an event stream or
//! long-polls that come and go, reading numbered events from the session's queue, and `POST /send`
//! requests carrying what the client says. The hub maps sessions to their carriers, and each
//! outgoing event, serialized once, to each carrier's encoding.
//!
//! HTTP inputs: [`Hub::open_stream`] · [`Hub::open_poll`] · [`Hub::reader_gone`] ·
//! [`Hub::begin_send`] · [`Hub::send`] · [`Hub::end_send`]; HTTP outputs: [`Output::Session`]
//! ([`SessionOutput`]). Sessions without a reader expire after a grace
//! period ([`Hub::poll_timeout`], [`Hub::handle_timeout`]).

mod event;
mod ops;
mod route;
pub mod session;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub use event::Event;
pub use ops::{Admission, Listener, NotReady, REFUSAL_LOG_INTERVAL, RefusalKind};
pub use route::{Endpoint, Route, RouteError};
pub use session::{HttpSession, Reader, Sid};

use crate::chat::{Action, Chat, ChatConfig, Now, SessionId, TokenSource};
use crate::conn::per_ip::{DEFAULT_MAX_PER_ADDRESS, LogLimiter, PerAddress, PerAddressLimits};
use crate::conn::{ConnId, Wire};
use crate::http::RequestHead;
use crate::http::forwarded::TrustedProxies;
use crate::metrics::{Metrics, PolicyClose};
use crate::store::{Command, Outcome};
use crate::ws::close::CloseCode;
use crate::ws::handshake::Policy;

/// What the hub needs to know from the command line.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Serve `/echo`.
    pub echo: bool,
    /// Who may open a WebSocket (and, by its Origin rule, use the HTTP transports).
    pub policy: Policy,
    pub chat: ChatConfig,
    /// HTTP sessions: their queue's bound and how long they wait for a reader.
    pub sessions: SessionConfig,
    /// Proxies whose `X-Forwarded-For` is believed (`--trusted-proxy`).
    pub trusted_proxies: TrustedProxies,
    /// Connections per client address (`--max-connections-per-ip`).
    pub max_per_address: u32,
    /// `--max-connections`, which also bounds the per-address table.
    pub max_connections: usize,
    /// `/metrics` is served only on `--metrics-listen`, not on the public listener.
    pub metrics_separate: bool,
}

impl Default for HubConfig {
    /// The command line's defaults.
    fn default() -> Self {
        Self {
            echo: false,
            policy: Policy::default(),
            chat: ChatConfig::default(),
            sessions: SessionConfig::default(),
            trusted_proxies: TrustedProxies::default(),
            max_per_address: DEFAULT_MAX_PER_ADDRESS,
            max_connections: 10_000,
            metrics_separate: false,
        }
    }
}

/// The rules of sessions carried over plain HTTP.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// Bytes of events a session may hold for its client (`--max-queued-output`): past it the
    /// session is closed, like a WebSocket client that cannot keep up.
    pub queue_cap: usize,
    /// How long a session waits for a reader (an event stream or a poll) before it ends.
    pub grace: Duration,
}

impl Default for SessionConfig {
    /// The command line's defaults.
    fn default() -> Self {
        Self {
            queue_cap: 1024 * 1024,
            grace: Duration::from_secs(30),
        }
    }
}

/// Something the hub asks the server to do to a connection.
#[derive(Debug, Clone)]
pub enum Output {
    /// Queue `event` on each of `to`, in order. A recipient that has fallen too far behind is
    /// closed instead (the slow-consumer rule, [`crate::conn::Stack::deliver`]).
    Deliver { to: Vec<ConnId>, event: Rc<Event> },
    /// Close `conn` with `code` (a chat flood, today).
    Close {
        conn: ConnId,
        code: CloseCode,
        reason: String,
    },
    /// Something for `conn`, the reader of an HTTP session.
    Session { conn: ConnId, output: SessionOutput },
}

/// What the hub asks of a connection that reads an HTTP session.
#[derive(Debug, Clone)]
pub enum SessionOutput {
    /// Write these numbered events on the event stream.
    Stream(Vec<(u64, Rc<Event>)>),
    /// Answer the parked poll.
    Answer(PollAnswer),
    /// End the event stream: its session is over (or another stream took its place).
    EndStream,
}

/// How a parked poll is answered.
#[derive(Debug, Clone)]
pub enum PollAnswer {
    /// These events, as a JSON array.
    Events(Vec<(u64, Rc<Event>)>),
    /// A newer poll of the same session took its place, or the session ended: `204 No Content`.
    Superseded,
}

/// How an event stream starts.
#[derive(Debug)]
pub enum StreamStart {
    /// A new session: its id, then the events queued so far.
    New { sid: Sid, events: Vec<(u64, Rc<Event>)> },
    /// The session goes on: the events after the resume point.
    Resumed { events: Vec<(u64, Rc<Event>)> },
    /// The session, or the resume point, is no longer held: `204`, and the client starts over.
    NotHeld,
}

/// How a poll starts.
#[derive(Debug)]
pub enum PollStart {
    /// A new session: its id and the events queued so far (answered at once).
    New { sid: Sid, events: Vec<(u64, Rc<Event>)> },
    /// Events after `since` exist: answered at once.
    Answer(Vec<(u64, Rc<Event>)>),
    /// Nothing new: the poll waits for an event or its time limit.
    Parked,
    /// No such session (it expired, or never was): `404`.
    Unknown,
}

/// Why a `POST /send` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendRefusal {
    /// No such session: `404`.
    UnknownSession,
    /// Another POST of the session is still arriving: `409`, so that what one client says keeps
    /// its order.
    Busy,
    /// The body is neither a chat envelope nor an array of them: `400`.
    BadBody,
}

/// Where a session's events go.
#[derive(Debug)]
enum Carrier {
    WebSocket(ConnId),
    Http(Box<HttpSession>),
}

/// Session and connection ids are handed out in sequence by this process, never chosen by a peer,
/// so the map needs no protection against crafted collisions: the id itself is the hash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing spreads sequential ids over the table's high bits.
        self.0 = (self.0.rotate_left(5) ^ id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Shared state and the queue of outputs.
pub struct Hub {
    config: HubConfig,
    chat: Chat,
    /// The session each connection carries or serves (a WebSocket, an HTTP session's reader or
    /// sender), and each session's carrier.
    session_of: IdMap<ConnId, SessionId>,
    carriers: IdMap<SessionId, Carrier>,
    /// HTTP sessions by their secret id.
    by_sid: HashMap<Sid, SessionId>,
    /// 128-bit random values, for session ids (shared with the chat's resume tokens).
    random: Rc<RefCell<TokenSource>>,
    /// The time of the input being handled, for the timers it sets.
    now: Instant,
    last_session: u64,
    /// Scratch for the chat's answers to one input.
    actions: Vec<Action>,
    /// Store commands the chat asked for, for the server to hand over once per turn.
    store_commands: Vec<Command>,
    outputs: VecDeque<Output>,
    /// Deliveries (recipient × event) waiting in `outputs`.
    backlog: usize,
    ops: ops::Ops,
}

impl Hub {
    /// A hub over a store of epoch `epoch`, drawing resume tokens and session ids from `random`;
    /// `now` starts its clock.
    pub fn new(config: HubConfig, epoch: String, random: TokenSource, now: Instant) -> Self {
        let random = Rc::new(RefCell::new(random));
        let tokens = {
            let random = Rc::clone(&random);
            Box::new(move || (random.borrow_mut())()) as TokenSource
        };
        let chat = Chat::new(config.chat.clone(), epoch, tokens);
        let ops = ops::Ops {
            per_address: PerAddress::new(PerAddressLimits {
                max_per_address: config.max_per_address,
                max_addresses: config.max_connections,
            }),
            refusal_log: LogLimiter::new(REFUSAL_LOG_INTERVAL),
            metrics: Metrics::new(),
            store_error: None,
        };
        Self {
            ops,
            config,
            chat,
            store_commands: Vec::new(),
            session_of: IdMap::default(),
            carriers: IdMap::default(),
            by_sid: HashMap::new(),
            random,
            now,
            last_session: 0,
            actions: Vec::new(),
            outputs: VecDeque::new(),
            backlog: 0,
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Names this process among those sharing the store ([`Chat::set_node`]).
    pub fn set_node(&mut self, node: &str) {
        self.chat.set_node(node);
    }

    /// What `head`, which came in on `listener`, gets: a page, an upgrade, or a refusal.
    /// `refusal`: the connection was accepted only to be told this.
    pub fn route(&self, head: &RequestHead, listener: Listener, refusal: Option<&RouteError>) -> Route {
        route::route(head, &self.config, listener, refusal)
    }

    /// A chat WebSocket is open on `conn`, from client address `addr`: it starts a session, which
    /// joins the lobby.
    pub fn opened(&mut self, conn: ConnId, addr: IpAddr, now: Now) {
        self.now = now.instant;
        let session = self.new_session(Carrier::WebSocket(conn));
        self.session_of.insert(conn, session);
        self.chat.connect(session, addr, now, &mut self.actions);
        self.queue_actions();
    }

    /// A text message arrived on the chat connection `conn`.
    pub fn text(&mut self, conn: ConnId, text: &str, now: Now) {
        self.now = now.instant;
        let Some(&session) = self.session_of.get(&conn) else {
            return;
        };
        self.chat.on_text(session, text, now, &mut self.actions);
        self.queue_actions();
    }

    /// The WebSocket `conn` stopped carrying chat messages (it is closing or gone): its session
    /// ends. Calling it for a connection that has no session does nothing, so callers need not
    /// track it.
    pub fn closed(&mut self, conn: ConnId, now: Now) {
        self.now = now.instant;
        let Some(&session) = self.session_of.get(&conn) else {
            return;
        };
        if !matches!(self.carriers.get(&session), Some(Carrier::WebSocket(carrier)) if *carrier == conn) {
            return;
        }
        self.session_of.remove(&conn);
        self.end_session(session, now);
    }

    /// The store answered a command: the chat acts on it (acks, broadcasts, welcomes).
    pub fn store_outcome(&mut self, outcome: Outcome, now: Instant) {
        self.now = now;
        self.note_store_health(&outcome);
        self.chat.on_store(outcome, &mut self.actions);
        self.queue_actions();
    }

    // --- sessions over plain HTTP ----------------------------------------------------------------

    /// `GET /sse`: the event stream `conn` becomes the reader of session `sid` (a new session
    /// without one, counted for client address `addr`), from the point after `since` (the
    /// client's `Last-Event-ID`). A stream the
    /// session had before is ended: one reader at a time.
    pub fn open_stream(
        &mut self,
        conn: ConnId,
        addr: IpAddr,
        sid: Option<Sid>,
        since: Option<u64>,
        now: Now,
    ) -> StreamStart {
        self.now = now.instant;
        let Some(sid) = sid else {
            let (sid, session) = self.new_http_session(addr, now);
            let events = self
                .take_reader(session, Reader::Stream(conn), 0)
                .unwrap_or_default();
            self.session_of.insert(conn, session);
            return StreamStart::New { sid, events };
        };
        let Some(&session) = self.by_sid.get(&sid) else {
            return StreamStart::NotHeld;
        };
        match self.take_reader(session, Reader::Stream(conn), since.unwrap_or(0)) {
            Some(events) => {
                self.session_of.insert(conn, session);
                StreamStart::Resumed { events }
            }
            None => StreamStart::NotHeld,
        }
    }

    /// `GET /poll`: the events of session `sid` after `since`, at once if there are any,
    /// otherwise `conn` is parked as the session's reader until one comes. Without `sid`, a new
    /// session.
    pub fn open_poll(
        &mut self,
        conn: ConnId,
        addr: IpAddr,
        sid: Option<Sid>,
        since: u64,
        now: Now,
    ) -> PollStart {
        self.now = now.instant;
        let Some(sid) = sid else {
            let (sid, session) = self.new_http_session(addr, now);
            let events = self.take_reader(session, Reader::None, 0).unwrap_or_default();
            return PollStart::New { sid, events };
        };
        let Some(&session) = self.by_sid.get(&sid) else {
            return PollStart::Unknown;
        };
        match self.take_reader(session, Reader::Poll(conn), since) {
            None => PollStart::Unknown,
            Some(events) if events.is_empty() => {
                self.session_of.insert(conn, session);
                PollStart::Parked
            }
            Some(events) => {
                // Answered at once: the session has no reader again.
                self.drop_reader(session, conn);
                PollStart::Answer(events)
            }
        }
    }

    /// The reader `conn` (an event stream, a parked poll) is gone; its session waits for another
    /// until its grace period ends.
    pub fn reader_gone(&mut self, conn: ConnId, now: Now) {
        self.now = now.instant;
        if let Some(session) = self.session_of.remove(&conn) {
            self.drop_reader(session, conn);
        }
    }

    /// `POST /send` of session `sid` starts on `conn`: allowed unless another is still arriving.
    pub fn begin_send(&mut self, conn: ConnId, sid: Sid) -> Result<(), SendRefusal> {
        let http = self
            .by_sid
            .get(&sid)
            .and_then(|session| self.carriers.get_mut(session))
            .and_then(Carrier::http_mut)
            .filter(|http| !http.closed)
            .ok_or(SendRefusal::UnknownSession)?;
        match http.sending {
            Some(other) if other != conn => Err(SendRefusal::Busy),
            _ => {
                http.sending = Some(conn);
                Ok(())
            }
        }
    }

    /// The whole body of the `POST /send` on `conn` arrived: one chat envelope, or an array of
    /// them, each handled as if it came on a WebSocket. The POST is over either way.
    pub fn send(&mut self, conn: ConnId, sid: Sid, body: &[u8], now: Now) -> Result<(), SendRefusal> {
        self.now = now.instant;
        let session = self.end_send(conn, sid).ok_or(SendRefusal::UnknownSession)?;
        let messages = split_envelopes(body).ok_or(SendRefusal::BadBody)?;
        self.ops.metrics.messages_received(Wire::Send, messages.len());
        for message in messages {
            self.chat.on_text(session, &message, now, &mut self.actions);
        }
        self.queue_actions();
        Ok(())
    }

    /// The `POST /send` on `conn` ended without a body to handle (refused, or its connection
    /// failed): the session may send again. Returns the session.
    pub fn end_send(&mut self, conn: ConnId, sid: Sid) -> Option<SessionId> {
        let session = *self.by_sid.get(&sid)?;
        let http = self.carriers.get_mut(&session).and_then(Carrier::http_mut)?;
        if http.sending == Some(conn) {
            http.sending = None;
        }
        Some(session)
    }

    /// When [`Hub::handle_timeout`] has something to do: the first HTTP session to expire.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self
            .carriers
            .values()
            .filter_map(|carrier| match carrier {
                Carrier::Http(http) => http.expires,
                Carrier::WebSocket(_) => None,
            })
            .min();
        [expiry, self.ops.refusal_log.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Ends the HTTP sessions whose grace period is over, and writes the summaries of refusals
    /// left out of the log.
    pub fn handle_timeout(&mut self, now: Now) {
        self.now = now.instant;
        self.log_refusal_summaries(now.instant);
        let expired: Vec<SessionId> = self
            .carriers
            .iter()
            .filter(|(_, carrier)| {
                matches!(carrier, Carrier::Http(http) if http.expires.is_some_and(|at| at <= now.instant))
            })
            .map(|(session, _)| *session)
            .collect();
        for session in expired {
            self.end_session(session, now);
        }
    }

    /// The store commands queued since the last call, in order: the server hands them to the
    /// store in one batch per turn, which the store commits as one group.
    pub fn take_store_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.store_commands)
    }

    /// Whether store commands wait to be handed over.
    pub fn has_store_commands(&self) -> bool {
        !self.store_commands.is_empty()
    }

    /// The chat, for what it can tell about itself (sessions, memory).
    pub fn chat(&self) -> &Chat {
        &self.chat
    }

    /// The next thing to do, in the order the inputs caused them.
    pub fn poll_output(&mut self) -> Option<Output> {
        let output = self.outputs.pop_front()?;
        if let Output::Deliver { to, .. } = &output {
            self.backlog -= to.len();
        }
        Some(output)
    }

    /// Whether outputs wait to be drained.
    pub fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }

    /// Deliveries waiting to be applied, counted per recipient: what the queue costs in memory
    /// until it is drained.
    pub fn backlog(&self) -> usize {
        self.backlog
    }

    /// Chat sessions open now, whatever carries them.
    pub fn sessions(&self) -> usize {
        self.carriers.len()
    }

    fn new_session(&mut self, carrier: Carrier) -> SessionId {
        self.last_session += 1;
        let session = SessionId(self.last_session);
        self.carriers.insert(session, carrier);
        session
    }

    /// A session carried over HTTP, with a fresh secret id; it joins the lobby like any other.
    fn new_http_session(&mut self, addr: IpAddr, now: Now) -> (Sid, SessionId) {
        let sid = loop {
            let sid = (self.random.borrow_mut())();
            if !self.by_sid.contains_key(&sid) {
                break sid;
            }
        };
        let http = HttpSession::new(sid, self.config.sessions.queue_cap);
        let session = self.new_session(Carrier::Http(Box::new(http)));
        self.by_sid.insert(sid, session);
        self.chat.connect(session, addr, now, &mut self.actions);
        self.queue_actions();
        (sid, session)
    }

    /// Makes `reader` the reader of `session` from the point after `since` (confirming the events
    /// up to it). Returns the events after it, or `None` if the session no longer holds them. A
    /// reader it had before is let go: a stream is ended, a parked poll answered 204.
    fn take_reader(
        &mut self,
        session: SessionId,
        reader: Reader,
        since: u64,
    ) -> Option<Vec<(u64, Rc<Event>)>> {
        let http = self.carriers.get_mut(&session).and_then(Carrier::http_mut)?;
        let events = http.after(since)?;
        http.confirm(since);
        let previous = std::mem::replace(&mut http.reader, reader);
        http.expires = match reader {
            Reader::None => Some(self.now + self.config.sessions.grace),
            Reader::Stream(_) | Reader::Poll(_) => None,
        };
        match previous {
            Reader::Stream(old) => {
                self.session_of.remove(&old);
                self.outputs.push_back(Output::Session {
                    conn: old,
                    output: SessionOutput::EndStream,
                });
            }
            Reader::Poll(old) => {
                self.session_of.remove(&old);
                self.outputs.push_back(Output::Session {
                    conn: old,
                    output: SessionOutput::Answer(PollAnswer::Superseded),
                });
            }
            Reader::None => {}
        }
        Some(events)
    }

    /// `conn` no longer reads `session`: the session starts waiting for another reader.
    fn drop_reader(&mut self, session: SessionId, conn: ConnId) {
        let grace = self.config.sessions.grace;
        let now = self.now;
        if let Some(http) = self.carriers.get_mut(&session).and_then(Carrier::http_mut)
            && matches!(http.reader, Reader::Stream(reader) | Reader::Poll(reader) if reader == conn)
        {
            http.reader = Reader::None;
            http.expires = Some(now + grace);
        }
    }

    /// The session is over: the chat hears it left, and its HTTP reader is let go.
    fn end_session(&mut self, session: SessionId, now: Now) {
        match self.carriers.remove(&session) {
            Some(Carrier::Http(http)) => {
                self.by_sid.remove(&http.sid);
                match http.reader {
                    Reader::Stream(conn) => {
                        self.session_of.remove(&conn);
                        self.outputs.push_back(Output::Session {
                            conn,
                            output: SessionOutput::EndStream,
                        });
                    }
                    Reader::Poll(conn) => {
                        self.session_of.remove(&conn);
                        self.outputs.push_back(Output::Session {
                            conn,
                            output: SessionOutput::Answer(PollAnswer::Superseded),
                        });
                    }
                    Reader::None => {}
                }
                if http.closed {
                    return; // The chat already let it go.
                }
            }
            Some(Carrier::WebSocket(_)) => {}
            None => return,
        }
        self.chat.disconnect(session, now, &mut self.actions);
        self.queue_actions();
    }

    /// Turns the chat's actions (addressed to sessions) into outputs (addressed to connections).
    fn queue_actions(&mut self) {
        let actions = std::mem::take(&mut self.actions);
        for action in actions {
            match action {
                Action::Send { to, json } => self.deliver(&to, Event::new(&json)),
                Action::Close { client, code, reason } => {
                    // The chat closes a client with 1008 for one thing only: flooding.
                    if code == CloseCode::PolicyViolation {
                        self.ops.metrics.policy_close(PolicyClose::Flood);
                    }
                    self.close_session(client, code, reason);
                }
                Action::Store(command) => self.store_commands.push(command),
            }
        }
    }

    /// One event to sessions: WebSocket recipients in one output (the event framed once for all
    /// of them), HTTP sessions each into its queue and on to its reader.
    fn deliver(&mut self, to: &[SessionId], event: Rc<Event>) {
        // Sized once: a filtered iterator would grow the vector by doubling.
        let mut conns = Vec::with_capacity(to.len());
        let mut overflowed = Vec::new();
        for session in to {
            match self.carriers.get_mut(session) {
                Some(Carrier::WebSocket(conn)) => conns.push(*conn),
                Some(Carrier::Http(http)) => match http.push(Rc::clone(&event)) {
                    Ok(seq) => match http.reader {
                        Reader::Stream(conn) => self.outputs.push_back(Output::Session {
                            conn,
                            output: SessionOutput::Stream(vec![(seq, Rc::clone(&event))]),
                        }),
                        Reader::Poll(conn) => {
                            http.reader = Reader::None;
                            http.expires = Some(self.now + self.config.sessions.grace);
                            self.session_of.remove(&conn);
                            self.outputs.push_back(Output::Session {
                                conn,
                                output: SessionOutput::Answer(PollAnswer::Events(vec![(
                                    seq,
                                    Rc::clone(&event),
                                )])),
                            });
                        }
                        Reader::None => {}
                    },
                    Err(session::Overflow) => overflowed.push(*session),
                },
                None => {}
            }
        }
        if !conns.is_empty() {
            self.backlog += conns.len();
            self.outputs.push_back(Output::Deliver { to: conns, event });
        }
        for session in overflowed {
            self.ops.metrics.policy_close(PolicyClose::SlowConsumer);
            let reason = format!(
                "slow consumer: over {} bytes of events not read",
                self.config.sessions.queue_cap
            );
            self.close_session(session, CloseCode::PolicyViolation, reason);
        }
    }

    /// The chat (a flood) or the queue bound (a slow reader) ends a session: a WebSocket is
    /// closed with `code`; an HTTP session gets a last `closed` event saying why, which its reader
    /// may still fetch until the session expires.
    fn close_session(&mut self, session: SessionId, code: CloseCode, reason: String) {
        match self.carriers.get_mut(&session) {
            Some(Carrier::WebSocket(conn)) => {
                let conn = *conn;
                self.outputs.push_back(Output::Close { conn, code, reason });
            }
            Some(Carrier::Http(http)) => {
                if http.closed {
                    return;
                }
                http.closed = true;
                let json = format!(
                    r#"{{"type":"closed","payload":{{"code":{},"reason":{}}}}}"#,
                    code.as_u16(),
                    serde_json::Value::String(reason)
                );
                let event = Event::new(&json);
                // Past the bound or not, the last word goes in.
                http.push_final(Rc::clone(&event));
                let seq = http.last_seq();
                match http.reader {
                    Reader::Stream(conn) => self.outputs.push_back(Output::Session {
                        conn,
                        output: SessionOutput::Stream(vec![(seq, event)]),
                    }),
                    Reader::Poll(conn) => {
                        http.reader = Reader::None;
                        self.session_of.remove(&conn);
                        self.outputs.push_back(Output::Session {
                            conn,
                            output: SessionOutput::Answer(PollAnswer::Events(vec![(seq, event)])),
                        });
                    }
                    Reader::None => {}
                }
                http.expires = Some(self.now + self.config.sessions.grace);
                let now = Now {
                    instant: self.now,
                    unix_ms: 0,
                };
                self.chat.disconnect(session, now, &mut self.actions);
                self.queue_actions();
            }
            None => {}
        }
    }
}

impl Carrier {
    fn http_mut(&mut self) -> Option<&mut HttpSession> {
        match self {
            Carrier::Http(http) => Some(http),
            Carrier::WebSocket(_) => None,
        }
    }
}

/// A `POST /send` body: one chat envelope (a JSON object), or a JSON array of them, each returned
/// as its own JSON text. `None` for anything else.
fn split_envelopes(body: &[u8]) -> Option<Vec<String>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match value {
        serde_json::Value::Array(items) => Some(items.iter().map(serde_json::Value::to_string).collect()),
        serde_json::Value::Object(_) => Some(vec![value.to_string()]),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
