//! One socket's protocol stack, sans-IO: the transport, then the phase the conversation is in.
//!
//! A [`Stack`] is what a socket carries, minus the socket. The server reads bytes and hands them to
//! [`Stack::receive`], writes what [`Stack::outbox`] holds, and asks the stack what it wants next:
//! to be read ([`Stack::wants_read`]), to be woken at a time ([`Stack::poll_timeout`]), to have its
//! sending side shut down or to be dropped ([`Stack::settle`]). Like the WebSocket connection it
//! wraps, it never touches a socket and never reads a clock.
//!
//! ```text
//!            request head: page ──► (keep-alive) next request ─┐
//!   Http ◄──────────────────────────────────────────────────────┘
//!     │ 101 Switching Protocols
//!     ├───────────────────────► WebSocket ──(Close exchanged / failed)──┐
//!     │ a response that closes, an error, a timeout                    ▼
//!     └──────────────────────────────────────────────────────────► Draining ──(peer's FIN / timeout)──► Closed
//! ```
//!
//! Each [`Phase`] variant holds its own state and deadline, so there is one place to ask when the
//! stack next needs attention ([`Stack::poll_timeout`]) and one place to act on it
//! ([`Stack::handle_timeout`]). Every phase change goes through one function (`Stack::set_phase`), which the wire
//! trace shows.
//!
//! Draining exists because of RFC 6455 §7.1.1 (the server closes TCP first) and a TCP detail: after
//! our last byte we shut down our sending side and keep reading until the peer's FIN, so the kernel
//! never answers unread input with a reset that could destroy our last bytes in flight.

mod fallback;
mod id;
pub mod per_ip;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use log::{info, warn};

pub use id::ConnId;
use per_ip::Slot;

use crate::chat::Now;
use crate::http::{self, RequestHead};
use crate::hub::{Endpoint, Event, Hub, Listener, Route, RouteError, SessionOutput, Sid};
use crate::metrics::{self, By, PolicyClose};
use crate::outbox::Outbox;
use crate::trace;
use crate::ws::close::CloseCode;
use crate::ws::handshake::Accepted;
use crate::ws::protocol::{self as ws, Connection, DeflateConfig, Role, Sender, State};

/// Limits and timers of every stack, from the command line.
#[derive(Debug, Clone)]
pub struct StackConfig {
    pub http: http::Limits,
    pub websocket: ws::Config,
    /// Time a client has to send a complete request head: after accepting the connection, and
    /// again after each response on a kept-alive connection (slowloris; idle keep-alive).
    pub handshake_timeout: Duration,
    /// How long a response, a closed WebSocket's last bytes, or the peer's FIN may take.
    pub close_timeout: Duration,
    /// Bytes queued for one connection before it counts as slow (see [`Stack::deliver`]).
    pub max_queued_output: usize,
    /// Messages at least this long go out compressed where permessage-deflate was agreed.
    pub deflate_threshold: usize,
}

/// The byte transform between the socket and the phase. Plain TCP passes bytes through; TLS will
/// decrypt on the way in and encrypt on the way out here, so no phase ever learns about it.
#[derive(Debug, Default)]
enum Transport {
    #[default]
    Plain,
}

/// Where the conversation on this socket is.
#[derive(Debug)]
pub enum Phase {
    /// HTTP/1.1 requests and responses, until an upgrade or the end of the connection.
    Http {
        conn: Box<http::Conn>,
        /// When the exchange needs attention: the current request head (or body) must be
        /// complete by then; an event stream's next comment is due; a parked poll is answered.
        deadline: Instant,
        /// Requests answered so far on this connection.
        requests: u32,
        /// What the current request is doing.
        exchange: Exchange,
    },
    /// After `101 Switching Protocols`.
    WebSocket {
        conn: Box<Connection>,
        endpoint: Endpoint,
        /// Once the WebSocket is closed but its last bytes are still queued: when to give up on a
        /// peer that does not read them.
        flush_deadline: Option<Instant>,
    },
    /// Our sending side is shut down; reading until the peer's FIN.
    Draining { deadline: Instant },
    /// Nothing more to do: drop the socket.
    Closed,
}

/// What an HTTP connection's current request is doing. The chat's plain-HTTP transports keep a
/// request open: an event stream, a parked poll, a message upload. They are exchanges of the HTTP
/// phase rather than phases of their own, because each ends with the connection back in the
/// request cycle (keep-alive) and all of them share the HTTP connection's state.
#[derive(Debug)]
pub enum Exchange {
    /// Reading a request head; answers go out at once.
    Requests,
    /// Reading the body of a `POST /send` of session `sid`.
    Upload { sid: Sid, body: Vec<u8> },
    /// `GET /sse`: the response is an open event stream; `sent` bytes of it so far.
    Stream { sent: usize },
    /// `GET /poll`: waiting for an event of the session, or `deadline`.
    Parked,
}

impl Phase {
    /// The phase's name, as the trace prints it.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Http {
                exchange: Exchange::Requests | Exchange::Upload { .. },
                ..
            } => "http",
            Phase::Http {
                exchange: Exchange::Stream { .. },
                ..
            } => "http (event stream)",
            Phase::Http {
                exchange: Exchange::Parked,
                ..
            } => "http (parked poll)",
            Phase::WebSocket {
                endpoint: Endpoint::Chat,
                ..
            } => "websocket (chat)",
            Phase::WebSocket {
                endpoint: Endpoint::Echo,
                ..
            } => "websocket (echo)",
            Phase::Draining { .. } => "draining",
            Phase::Closed => "closed",
        }
    }
}

/// Which transport a connection's bytes count for: what the chat's transports cost on the wire,
/// HTTP heads and framing included, is measured by these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Wire {
    /// Requests for the page and its files, refusals, and connections ending.
    Http,
    WebSocket,
    /// `GET /sse`.
    EventStream,
    /// `GET /poll`.
    Poll,
    /// `POST /send`.
    Send,
}

impl Wire {
    pub const ALL: [Wire; 5] = [
        Wire::Http,
        Wire::WebSocket,
        Wire::EventStream,
        Wire::Poll,
        Wire::Send,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Wire::Http => "http",
            Wire::WebSocket => "websocket",
            Wire::EventStream => "sse",
            Wire::Poll => "poll",
            Wire::Send => "send",
        }
    }
}

/// What the socket must do after [`Stack::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketAction {
    /// Nothing new.
    None,
    /// We have said our last word: shut down the sending side (then keep reading until FIN).
    ShutdownWrite,
    /// The stack is done: drop the socket.
    Remove,
}

/// How a connection starts: which listener it came in on, and what its admission decided.
#[derive(Debug, Default)]
pub struct Opening {
    pub listener: Listener,
    /// Its share of its address's count (none yet for a trusted proxy's connection).
    pub slot: Option<Slot>,
    /// It was accepted only to be told this (the server or its address is at its limit).
    pub refusal: Option<RouteError>,
}

/// What the stack needs from outside for one call: the shared state, its configuration and the time.
pub struct Ctx<'a> {
    pub hub: &'a mut Hub,
    pub config: &'a StackConfig,
    pub now: Now,
}

/// One socket's protocol stack.
#[derive(Debug)]
pub struct Stack {
    id: ConnId,
    /// The socket's peer.
    addr: SocketAddr,
    /// The client's address, which limits count for: the peer's, or behind a trusted proxy the
    /// one its `X-Forwarded-For` names.
    client: IpAddr,
    transport: Transport,
    phase: Phase,
    /// The peer sent FIN.
    eof: bool,
    /// Which listener it came in on (the metrics listener serves only the operators' endpoints).
    listener: Listener,
    /// Its share of its client address's count, given back when it closes.
    slot: Option<Slot>,
    /// It is only to be told this: the server, or its client's address, is at its limit.
    refusal: Option<RouteError>,
    /// Whether this connection is printed to the wire trace (decided when it opened).
    traced: bool,
    /// The transport of the latest request, which its answer's bytes count for.
    last_wire: Wire,
}

impl Stack {
    /// A connection just accepted at `now`: it starts by reading a request head.
    pub fn new(id: ConnId, addr: SocketAddr, opening: Opening, config: &StackConfig, now: Instant) -> Self {
        let traced = trace::enabled();
        let mut http = Box::new(http::Conn::new(config.http));
        if traced {
            http.enable_trace(id.serial());
        }
        Self {
            id,
            addr,
            client: addr.ip(),
            transport: Transport::Plain,
            phase: Phase::Http {
                conn: http,
                deadline: now + config.handshake_timeout,
                requests: 0,
                exchange: Exchange::Requests,
            },
            eof: false,
            listener: opening.listener,
            slot: opening.slot,
            refusal: opening.refusal,
            traced,
            last_wire: Wire::Http,
        }
    }

    pub fn id(&self) -> ConnId {
        self.id
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    // --- predicates -------------------------------------------------------------------------

    /// Whether the server should read the socket now. Not once the peer sent FIN; not while a
    /// WebSocket's queue is over the cap (the peer must read what it asked for before it may ask
    /// for more); not while the HTTP layer holds as much pipelined input as it will buffer.
    pub fn wants_read(&self, config: &StackConfig) -> bool {
        if self.eof {
            return false;
        }
        match &self.phase {
            Phase::Http { conn, .. } => conn.wants_read(),
            Phase::WebSocket { conn, .. } => conn.queued() < config.max_queued_output,
            Phase::Draining { .. } => true,
            Phase::Closed => false,
        }
    }

    /// The transport the connection's bytes count for now; a connection that changes exchange
    /// (a poll, then a POST, on one kept-alive connection) counts each exchange's bytes for it.
    pub fn wire(&self) -> Wire {
        match &self.phase {
            Phase::WebSocket { .. } => Wire::WebSocket,
            Phase::Http { exchange, .. } => match exchange {
                Exchange::Stream { .. } => Wire::EventStream,
                Exchange::Parked => Wire::Poll,
                Exchange::Upload { .. } => Wire::Send,
                Exchange::Requests => self.last_wire,
            },
            Phase::Draining { .. } | Phase::Closed => self.last_wire,
        }
    }

    /// The phase the metrics count this connection in; `None` once it is closed.
    pub fn metrics_phase(&self) -> Option<metrics::Phase> {
        Some(match &self.phase {
            Phase::Http { exchange, .. } => match exchange {
                Exchange::Stream { .. } => metrics::Phase::EventStream,
                Exchange::Parked => metrics::Phase::ParkedPoll,
                Exchange::Requests | Exchange::Upload { .. } => metrics::Phase::Http,
            },
            Phase::WebSocket { .. } => metrics::Phase::WebSocket,
            Phase::Draining { .. } => metrics::Phase::Draining,
            Phase::Closed => return None,
        })
    }

    /// The transport the metrics count this connection under.
    pub fn metrics_transport(&self) -> metrics::Transport {
        match self.transport {
            Transport::Plain => metrics::Transport::Tcp,
        }
    }

    /// Whether bytes wait to be written.
    pub fn wants_write(&self) -> bool {
        self.queued() > 0
    }

    /// Bytes waiting to be written.
    pub fn queued(&self) -> usize {
        match &self.phase {
            Phase::Http { conn, .. } => conn.queued(),
            Phase::WebSocket { conn, .. } => conn.queued(),
            Phase::Draining { .. } | Phase::Closed => 0,
        }
    }

    /// Whether the stack is finished and its socket can be dropped.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The bytes to write, in the phases that send any.
    pub fn outbox(&mut self) -> Option<&mut Outbox> {
        match &mut self.phase {
            Phase::Http { conn, .. } => Some(conn.outbox()),
            Phase::WebSocket { conn, .. } => Some(conn.outbox()),
            Phase::Draining { .. } | Phase::Closed => None,
        }
    }

    /// When [`Stack::handle_timeout`] next has something to do: the one deadline of the phase.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Http { deadline, .. } | Phase::Draining { deadline } => Some(*deadline),
            Phase::WebSocket {
                conn, flush_deadline, ..
            } => match conn.state() {
                State::Closed => *flush_deadline,
                State::Open | State::ClosingByUs => conn.poll_timeout(),
            },
            Phase::Closed => None,
        }
    }

    // --- inputs ------------------------------------------------------------------------------

    /// Bytes arrived from the socket. They may be modified in place (WebSocket payloads are
    /// unmasked where they lie).
    pub fn receive(&mut self, bytes: &mut [u8], ctx: &mut Ctx<'_>) {
        match self.transport {
            Transport::Plain => self.receive_plain(bytes, ctx),
        }
    }

    /// The peer closed its sending side (TCP FIN). What follows is decided by [`Stack::settle`].
    pub fn receive_eof(&mut self) {
        self.eof = true;
        if let Phase::Http { conn, .. } = &mut self.phase {
            conn.receive_eof();
        }
    }

    /// The socket failed (reset, broken pipe): nothing more can be sent or received.
    pub fn fail(&mut self, ctx: &mut Ctx<'_>) {
        self.eof = true;
        self.set_phase(Phase::Closed, ctx.hub, ctx.now);
    }

    /// Applies an output of the hub for an HTTP session this connection reads.
    pub fn apply_session_output(&mut self, output: SessionOutput, ctx: &mut Ctx<'_>) {
        match output {
            SessionOutput::Stream(events) => self.stream_events(&events, ctx),
            SessionOutput::Answer(answer) => self.answer_poll(answer, ctx),
            SessionOutput::EndStream => self.end_stream(ctx),
        }
    }

    /// Time passed: act on the phase's deadline if it is due. Harmless when nothing is due, so a
    /// timer that fires early (or late, or twice) never does the wrong thing.
    pub fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now.instant;
        let expired = match &mut self.phase {
            Phase::Http {
                deadline,
                exchange: Exchange::Stream { .. } | Exchange::Parked,
                ..
            } => {
                if now >= *deadline {
                    self.exchange_timeout(ctx);
                }
                false
            }
            Phase::Http {
                deadline, requests, ..
            } => {
                let expired = now >= *deadline;
                if expired && *requests == 0 {
                    info!("#{} {} handshake timed out", self.id, self.who());
                }
                expired
            }
            Phase::WebSocket {
                conn, flush_deadline, ..
            } => {
                if conn.state() != State::Closed {
                    conn.handle_timeout(now);
                }
                // A closed WebSocket whose peer stopped reading our last bytes.
                conn.state() == State::Closed && flush_deadline.is_some_and(|deadline| now >= deadline)
            }
            Phase::Draining { deadline } => now >= *deadline,
            Phase::Closed => false,
        };
        if expired {
            self.set_phase(Phase::Closed, ctx.hub, ctx.now);
        }
    }

    /// The hub asks to queue `event` (a chat delivery). The slow-consumer rule: a client that
    /// cannot keep up is closed with 1008 and told why, never silently skipped, so a chat client
    /// either receives every message in order or learns that it did not.
    pub fn deliver(&mut self, event: &Event, ctx: &mut Ctx<'_>) {
        let Phase::WebSocket { conn, .. } = &mut self.phase else {
            return;
        };
        let cap = ctx.config.max_queued_output;
        let queued = conn.queued();
        // The cap is about falling behind: a frame that meets an empty queue is sent whatever its
        // size (a welcome with a long history is larger than a message).
        if queued > 0 && queued + event.websocket_len_bound() > cap {
            let reason = format!("slow consumer: over {cap} bytes queued");
            conn.close(CloseCode::PolicyViolation, &reason, ctx.now.instant);
            ctx.hub.metrics_mut().policy_close(PolicyClose::SlowConsumer);
            return;
        }
        // Fails only when the connection is closing, and then it gets nothing more.
        if conn
            .sender(ctx.now.instant)
            .send_shared_message(event.websocket())
            .is_ok()
        {
            ctx.hub.metrics_mut().messages_sent(Wire::WebSocket, 1);
        }
    }

    /// Starts the close handshake with `code` (the hub's request, or server shutdown). A
    /// connection still speaking HTTP has no one to tell: it is dropped unless it is in the middle
    /// of writing a response, which it finishes.
    pub fn close(&mut self, code: CloseCode, reason: &str, ctx: &mut Ctx<'_>) {
        match &mut self.phase {
            Phase::WebSocket { conn, .. } => conn.close(code, reason, ctx.now.instant),
            Phase::Http { conn, .. } if conn.queued() == 0 => self.set_phase(Phase::Closed, ctx.hub, ctx.now),
            _ => {}
        }
    }

    /// After any input, write or timer: moves the stack to its next phase when its current one is
    /// finished, and tells the socket what follows from that.
    pub fn settle(&mut self, ctx: &mut Ctx<'_>) -> SocketAction {
        match &mut self.phase {
            Phase::Http { .. } => {
                // A response may have left (the next pipelined request can be answered), or the
                // peer's FIN may have cut a request short (it is answered 400).
                self.drive_http(ctx);
                if let Phase::Http { conn, .. } = &self.phase
                    && conn.queued() == 0
                    && (conn.must_close() || self.eof)
                {
                    return self.start_draining(ctx);
                }
            }
            Phase::WebSocket {
                conn,
                endpoint,
                flush_deadline,
            } => {
                if self.eof {
                    conn.receive_eof();
                }
                if conn.state() != State::Open && *endpoint == Endpoint::Chat {
                    // A closing client receives nothing more: its session ends now, not when
                    // the peer gets round to answering our Close.
                    ctx.hub.closed(self.id, ctx.now);
                }
                if conn.state() == State::Closed {
                    if conn.queued() == 0 || self.eof {
                        return self.start_draining(ctx);
                    }
                    flush_deadline.get_or_insert(ctx.now.instant + ctx.config.close_timeout);
                }
            }
            Phase::Draining { .. } if self.eof => self.set_phase(Phase::Closed, ctx.hub, ctx.now),
            Phase::Draining { .. } | Phase::Closed => {}
        }
        if self.is_closed() {
            SocketAction::Remove
        } else {
            SocketAction::None
        }
    }

    /// Server shutdown: WebSockets are told 1001; a connection between HTTP requests is dropped.
    pub fn shutdown(&mut self, ctx: &mut Ctx<'_>) {
        self.close(CloseCode::GoingAway, "server shutting down", ctx);
    }

    // --- internals ---------------------------------------------------------------------------

    fn receive_plain(&mut self, bytes: &mut [u8], ctx: &mut Ctx<'_>) {
        match &mut self.phase {
            Phase::Http { conn, .. } => {
                conn.receive(bytes);
                self.drive_http(ctx);
            }
            Phase::WebSocket { conn, endpoint, .. } => {
                let (id, endpoint, now) = (self.id, *endpoint, ctx.now);
                let hub = &mut *ctx.hub;
                conn.receive(bytes, now.instant, |event, sender| {
                    on_websocket_event(id, endpoint, event, sender, hub, now)
                });
            }
            // Nothing more is expected from the peer; its bytes are read only to reach its FIN.
            Phase::Draining { .. } | Phase::Closed => {}
        }
    }

    /// Takes HTTP events as far as they go: answers each request in turn, starts the next cycle
    /// of a kept-alive connection, and hands over to the WebSocket on an upgrade.
    fn drive_http(&mut self, ctx: &mut Ctx<'_>) {
        loop {
            let Phase::Http {
                conn,
                exchange,
                deadline,
                requests,
            } = &mut self.phase
            else {
                return;
            };
            let event = match conn.next_event() {
                Ok(event) => event,
                Err(error) => {
                    // The HTTP layer has queued the error's answer itself and closes after it.
                    ctx.hub.metrics_mut().http_response(error.status().code());
                    info!(
                        "#{} {} rejected: {} {}",
                        self.id,
                        self.who(),
                        error.status().code(),
                        error
                    );
                    return;
                }
            };
            match event {
                http::Event::Head(head) => {
                    if !self.on_request(&head, ctx) {
                        return;
                    }
                }
                http::Event::Body(piece) => {
                    // Only an upload reads a body: every other request with one was refused
                    // from its head (and its connection closes after the answer).
                    if let Exchange::Upload { body, .. } = exchange {
                        body.extend_from_slice(piece);
                    }
                }
                http::Event::End => self.end_upload(ctx),
                http::Event::NeedMore | http::Event::Closed => return,
                http::Event::Paused => {
                    // Pipelined requests wait until the answer to this one has left, so that a
                    // client cannot make us queue responses faster than it reads them; an open
                    // stream or a parked poll is an answer still being given.
                    if !matches!(exchange, Exchange::Requests)
                        || conn.must_close()
                        || conn.queued() > 0
                        || conn.start_next_cycle().is_err()
                    {
                        return;
                    }
                    // Each request head gets its own time to arrive.
                    *deadline = ctx.now.instant + ctx.config.handshake_timeout;
                    *requests += 1;
                }
            }
        }
    }

    /// Answers one request. Returns whether the stack is still speaking HTTP.
    fn on_request(&mut self, head: &RequestHead, ctx: &mut Ctx<'_>) -> bool {
        self.admit_forwarded(head, ctx);
        let route = ctx.hub.route(head, self.listener, self.refusal.as_ref());
        self.last_wire = match route {
            Route::Stream { .. } => Wire::EventStream,
            Route::Poll { .. } => Wire::Poll,
            Route::Send { .. } => Wire::Send,
            Route::Upgrade { .. } => Wire::WebSocket,
            Route::Page(_) | Route::Reject(_) | Route::Metrics | Route::Health | Route::Ready => Wire::Http,
        };
        match route {
            Route::Page(asset) => self.respond(ctx.hub, &asset.response()),
            Route::Reject(error) => {
                info!(
                    "#{} {} rejected: {} {}",
                    self.id,
                    self.who(),
                    error.status().code(),
                    error
                );
                self.respond(ctx.hub, &error.response());
            }
            Route::Upgrade { endpoint, accepted } => {
                self.upgrade(head, endpoint, &accepted, ctx);
                return false;
            }
            Route::Stream { sid, since } => self.open_stream(sid, since, ctx),
            Route::Poll { sid, since } => self.open_poll(sid, since, ctx),
            Route::Send { sid } => self.begin_upload(sid, ctx),
            Route::Metrics => {
                let body = ctx.hub.render_metrics();
                let response =
                    http::Response::with_body(http::Status::OK, metrics::CONTENT_TYPE, body.into_bytes());
                self.respond(ctx.hub, &response.header("Cache-Control", "no-store"));
            }
            Route::Health => {
                let response = http::Response::text(http::Status::OK, "ok");
                self.respond(ctx.hub, &response.header("Cache-Control", "no-store"));
            }
            Route::Ready => {
                let response = match ctx.hub.readiness() {
                    Ok(()) => http::Response::text(http::Status::OK, "ready"),
                    Err(why) => http::Response::text(http::Status::SERVICE_UNAVAILABLE, &why.to_string()),
                };
                self.respond(ctx.hub, &response.header("Cache-Control", "no-store"));
            }
        }
        true
    }

    /// A request that came through a trusted proxy counts for the client the proxy names: its
    /// connection's share moves to that address (a kept-alive proxy connection may carry one
    /// client's requests, then another's).
    fn admit_forwarded(&mut self, head: &RequestHead, ctx: &mut Ctx<'_>) {
        let peer = self.addr.ip();
        if matches!(self.refusal, Some(RouteError::ServerFull)) || !ctx.hub.trusts(peer) {
            return;
        }
        let client = ctx.hub.client_addr(peer, head);
        if client == self.client && (self.slot.is_some() || self.refusal.is_some()) {
            return;
        }
        if let Some(slot) = self.slot.take() {
            ctx.hub.release(slot);
        }
        self.client = client;
        self.refusal = match ctx.hub.admit_forwarded(client, ctx.now.instant) {
            Ok(slot) => {
                self.slot = Some(slot);
                None
            }
            Err(refused) => Some(RouteError::PerAddress(refused)),
        };
    }

    /// Who is on the other end, for the log.
    fn who(&self) -> Who {
        Who {
            peer: self.addr,
            client: self.client,
        }
    }

    fn respond(&mut self, hub: &mut Hub, response: &http::Response) {
        if let Phase::Http { conn, .. } = &mut self.phase {
            match conn.respond(response) {
                Ok(()) => hub.metrics_mut().http_response(response.head.status.code()),
                Err(error) => {
                    // Our own mistake (a response the request does not allow): say so, and end
                    // the connection rather than leave the client waiting.
                    warn!("#{} {} cannot respond: {error}", self.id, self.who());
                    self.eof = true;
                }
            }
        }
    }

    /// Switches to the WebSocket: queues the 101, opens the connection, and feeds it the bytes
    /// that arrived behind the request head (§4.1: a client may send frames right after it).
    fn upgrade(&mut self, head: &RequestHead, endpoint: Endpoint, accepted: &Accepted, ctx: &mut Ctx<'_>) {
        self.respond(ctx.hub, &accepted.response());
        let Phase::Http { conn, .. } = &mut self.phase else {
            return;
        };
        let upgraded = conn.upgrade();
        let mut websocket = Connection::new(Role::Server, ctx.config.websocket, ctx.now.instant);
        if let Some((params, _)) = accepted.deflate {
            websocket = websocket.with_deflate(DeflateConfig {
                params,
                deflate_threshold: ctx.config.deflate_threshold,
            });
        }
        let mut websocket = Box::new(websocket);
        if self.traced {
            websocket.enable_trace(self.id.serial());
        }
        // The 101 (and anything else not yet written) goes out first, from the WebSocket's queue.
        *websocket.outbox() = upgraded.output;
        info!("#{} {} open {} ({:?})", self.id, self.who(), head.path, endpoint);
        let next = Phase::WebSocket {
            conn: websocket,
            endpoint,
            flush_deadline: None,
        };
        self.set_phase(next, ctx.hub, ctx.now);
        if endpoint == Endpoint::Chat {
            ctx.hub.opened(self.id, self.client, ctx.now);
        }
        let mut trailing = upgraded.trailing;
        if !trailing.is_empty() {
            self.receive_plain(&mut trailing, ctx);
        }
    }

    /// Our last byte is out: shut down our side and read until the peer's FIN (or drop at once if
    /// it already sent it).
    fn start_draining(&mut self, ctx: &mut Ctx<'_>) -> SocketAction {
        if self.eof {
            self.set_phase(Phase::Closed, ctx.hub, ctx.now);
            return SocketAction::Remove;
        }
        let deadline = ctx.now.instant + ctx.config.close_timeout;
        self.set_phase(Phase::Draining { deadline }, ctx.hub, ctx.now);
        SocketAction::ShutdownWrite
    }

    /// Every phase change goes through here: the trace shows it, and leaving the WebSocket ends
    /// the chat session and writes the connection's one close line, however the WebSocket ended.
    fn set_phase(&mut self, next: Phase, hub: &mut Hub, now: Now) {
        if self.traced {
            let line = format!("== {} -> {}", self.phase.name(), next.name());
            trace::line(self.id.serial(), &line);
        }
        if let Phase::Http { exchange, .. } = &self.phase {
            match exchange {
                // An event stream or a parked poll that ends with its connection: the session waits
                // for another reader.
                Exchange::Stream { .. } | Exchange::Parked => hub.reader_gone(self.id, now),
                // An upload cut short: the session may send again.
                Exchange::Upload { sid, .. } => {
                    hub.end_send(self.id, *sid);
                }
                Exchange::Requests => {}
            }
        }
        let who = self.who();
        if let Phase::WebSocket { conn, endpoint, .. } = &mut self.phase {
            // A no-op after a completed close handshake; otherwise it records 1006 (§7.1.5).
            conn.receive_eof();
            log_close(self.id, who, conn);
            if let Some(status) = conn.close_status() {
                let by = if status.by_us { By::Server } else { By::Client };
                hub.metrics_mut().websocket_closed(Some(status.code.as_u16()), by);
            }
            if *endpoint == Endpoint::Chat {
                hub.closed(self.id, now);
            }
        }
        if matches!(next, Phase::Closed)
            && let Some(slot) = self.slot.take()
        {
            hub.release(slot);
        }
        self.phase = next;
    }
}

/// Who is on the other end of a connection, as the log shows it: the peer, or the client behind
/// a trusted proxy and the proxy (`192.0.2.7 via 127.0.0.1:50412`).
#[derive(Debug, Clone, Copy)]
struct Who {
    peer: SocketAddr,
    client: IpAddr,
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.client == self.peer.ip() || self.client == self.peer.ip().to_canonical() {
            self.peer.fmt(f)
        } else {
            write!(f, "{} via {}", self.client, self.peer)
        }
    }
}

/// Hands one event of a WebSocket connection to its endpoint.
fn on_websocket_event(
    id: ConnId,
    endpoint: Endpoint,
    event: ws::Event<'_>,
    sender: &mut Sender<'_>,
    hub: &mut Hub,
    now: Now,
) {
    if matches!(event, ws::Event::Text(_) | ws::Event::Binary(_)) {
        hub.metrics_mut().messages_received(Wire::WebSocket, 1);
    }
    // Sends fail only once the connection is closing, when there is no one left to answer.
    match (endpoint, event) {
        (Endpoint::Echo, ws::Event::Text(text)) => echoed(sender.send_text(text).is_ok(), hub),
        (Endpoint::Echo, ws::Event::Binary(data)) => echoed(sender.send_binary(data).is_ok(), hub),
        (Endpoint::Chat, ws::Event::Text(text)) => hub.text(id, text, now),
        (Endpoint::Chat, ws::Event::Binary(_)) => {
            sender.close(
                CloseCode::UnsupportedData,
                "the chat speaks JSON text frames only",
            );
        }
        _ => {}
    }
}

/// Counts an echo that was queued.
fn echoed(queued: bool, hub: &mut Hub) {
    if queued {
        hub.metrics_mut().messages_sent(Wire::WebSocket, 1);
    }
}

/// The connection's one close line in the log.
fn log_close(id: ConnId, addr: Who, conn: &Connection) {
    match conn.close_status() {
        Some(status) => info!(
            "#{id} {addr} closed {} by {}: {:?}{}",
            status.code,
            if status.by_us { "server" } else { "client" },
            status.reason,
            status
                .error
                .map(|error| format!(" (RFC 6455 {})", error.rfc_section()))
                .unwrap_or_default()
        ),
        None => info!("#{id} {addr} closed"),
    }
}
