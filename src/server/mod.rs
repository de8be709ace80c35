//! The event loop: one thread, one `mio::Poll`. The only module that touches sockets and the clock.
//!
//! Each accepted socket is a `Peer` that goes through phases:
//!
//! ```text
//! Handshake ──(101)──► WebSocket ──(Close exchanged / failed)──► Draining ──(EOF / timeout)──► gone
//!     │                                                             ▲
//!     └──(4xx/5xx or the chat page)──► Responding ──(written)───────┘
//! ```
//!
//! Reads drain the socket until `WouldBlock` into one loop-wide scratch buffer and hand each read to
//! the handshake parser or the connection; what that produces is written at once, and only what the
//! socket does not take is queued, with WRITABLE interest while anything is queued. A peer whose
//! queue passes `--max-queued-output` is not read until it drains. Closing is graceful: after the
//! last byte is written we shut down our sending side and read until the peer's FIN (bounded by the
//! close timeout), so the kernel never answers unread data with a reset that could destroy our
//! Close frame in flight (RFC 6455 §7.1.1: the server closes TCP first).
//!
//! Timers (handshake deadline, pings, idle and close timeouts) sit in one binary heap keyed by
//! deadline; each peer says when it next wants to wake and stale entries are skipped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::chat::{self, Action, Chat};
use crate::config::Config;
use crate::outbox::Outbox;
use crate::page;
use crate::trace::{self, Direction};
use crate::ws::close::CloseCode;
use crate::ws::handshake::{self, HandshakeError, Request};
use crate::ws::protocol::{Connection, Event, Role, Sender, State};

const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
/// One read's worth of bytes; shared by every connection, so idle ones hold no read buffer.
const SCRATCH_LEN: usize = 64 * 1024;
/// Connections accepted past `--max-connections` only to be told 503; beyond this many they are
/// dropped at once.
const OVERFLOW_SLACK: usize = 64;
/// Reads from one peer per turn of the loop (up to 1 MiB): a peer that sends as fast as we read
/// must not keep every other peer, and the timers, waiting.
const READS_PER_TURN: usize = 16;
/// How long a shutdown waits for Close handshakes to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// What a WebSocket connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `/echo`: every message goes back to its sender.
    Echo,
    /// `/`: the chat.
    Chat,
}

#[derive(Debug)]
enum Phase {
    /// Reading the HTTP request head.
    Handshake { head: Vec<u8>, deadline: Instant },
    /// Writing an HTTP response, then closing.
    Responding { out: Box<Outbox>, deadline: Instant },
    /// After a successful upgrade.
    WebSocket {
        conn: Box<Connection>,
        endpoint: Endpoint,
    },
    /// Our side is shut down; reading until the peer's FIN.
    Draining { deadline: Instant },
}

impl Phase {
    /// The bytes waiting to go out, in the phases that send any.
    fn outbox(&mut self) -> Option<&mut Outbox> {
        match self {
            Phase::Responding { out, .. } => Some(out),
            Phase::WebSocket { conn, .. } => Some(conn.outbox()),
            Phase::Handshake { .. } | Phase::Draining { .. } => None,
        }
    }
}

#[derive(Debug)]
struct Peer {
    /// Unique for the process lifetime (slab keys are reused); shown in logs.
    id: u64,
    stream: TcpStream,
    addr: SocketAddr,
    phase: Phase,
    /// The peer sent FIN.
    eof: bool,
    /// The socket failed (reset, broken pipe): drop the peer.
    broken: bool,
    /// Not reading until the outbox drains below the cap.
    read_paused: bool,
    /// WRITABLE is part of the registered interest.
    writable_registered: bool,
    /// The deadline this peer has an entry for in the timer heap.
    timer: Option<Instant>,
    /// Past `--max-connections`: answer 503 once the request head is read.
    over_capacity: bool,
    /// The WebSocket is closed but its last bytes (our Close) are still queued: if the peer has not
    /// read them by then, it is dropped.
    flush_deadline: Option<Instant>,
}

impl Peer {
    fn queued(&mut self) -> usize {
        self.phase.outbox().map_or(0, |out| out.len())
    }

    /// Writes what is queued until the socket would block.
    fn flush(&mut self) {
        let Some(out) = self.phase.outbox().filter(|out| !out.is_empty()) else {
            return;
        };
        if let Err(error) = out.write_to(&mut self.stream) {
            debug!("#{} write failed: {error}", self.id);
            out.clear();
            self.broken = true;
        }
    }

    /// When this peer next needs attention without any I/O.
    fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Handshake { deadline, .. }
            | Phase::Responding { deadline, .. }
            | Phase::Draining { deadline } => Some(*deadline),
            Phase::WebSocket { conn, .. } => conn.poll_timeout().or(self.flush_deadline),
        }
    }
}

/// The server: listener, peers, timers and the chat.
pub struct Server {
    config: Config,
    poll: Poll,
    listener: Option<TcpListener>,
    signals: Signals,
    peers: Slab<Peer>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    scratch: Vec<u8>,
    /// Peers (key, id) that used up their reads before their socket would block: read again on the
    /// next turn, without waiting for an event (readiness is edge-triggered).
    more_input: Vec<(usize, u64)>,
    chat: Chat,
    /// Actions the chat produced, applied after the connection that caused them is done.
    actions: Vec<Action>,
    next_peer_id: u64,
    shutdown_deadline: Option<Instant>,
}

impl Server {
    /// Binds the listener and installs the SIGINT/SIGTERM handlers.
    pub fn bind(config: Config) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = listen(config.listen)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let chat = Chat::new(config.chat.clone());
        Ok(Self {
            config,
            poll,
            listener: Some(listener),
            signals,
            peers: Slab::new(),
            timers: BinaryHeap::new(),
            scratch: vec![0; SCRATCH_LEN],
            more_input: Vec::new(),
            chat,
            actions: Vec::new(),
            next_peer_id: 1,
            shutdown_deadline: None,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.listener {
            Some(listener) => listener.local_addr(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Runs until SIGINT or SIGTERM, then closes every connection with 1001 and returns.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if let Some(deadline) = self.shutdown_deadline
                && (self.peers.is_empty() || now >= deadline)
            {
                info!("shutdown complete, {} connection(s) cut off", self.peers.len());
                return Ok(());
            }
            let timeout = if self.more_input.is_empty() {
                self.poll_timeout(now)
            } else {
                Some(Duration::ZERO)
            };
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    SIGNALS => self.on_signal(now),
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(key, now);
                        }
                        // A writable socket is flushed (and a paused peer resumed) by `settle`.
                        self.settle(key, now);
                    }
                }
            }
            for (key, id) in std::mem::take(&mut self.more_input) {
                if self.peers.get(key).is_some_and(|peer| peer.id == id) {
                    self.read(key, now);
                    self.settle(key, now);
                }
            }
            self.fire_timers(Instant::now());
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        let next_timer = self.timers.peek().map(|Reverse((deadline, _, _))| *deadline);
        [next_timer, self.shutdown_deadline]
            .into_iter()
            .flatten()
            .min()
            .map(|deadline| deadline.saturating_duration_since(now))
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let Some(listener) = &self.listener else { return };
            let (mut stream, addr) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // EMFILE and friends: leave the rest in the backlog until a slot frees up.
                    warn!("accept failed: {error}");
                    return;
                }
            };
            if self.peers.len() >= self.config.max_connections + OVERFLOW_SLACK {
                debug!("dropping {addr}: far over the connection limit");
                continue;
            }
            // Chat frames are small and latency-bound: don't let Nagle hold them back.
            if let Err(error) = stream.set_nodelay(true) {
                debug!("set_nodelay failed for {addr}: {error}");
            }
            let over_capacity = self.peers.len() >= self.config.max_connections;
            let id = self.next_peer_id;
            self.next_peer_id += 1;
            let entry = self.peers.vacant_entry();
            let key = entry.key();
            if let Err(error) = self
                .poll
                .registry()
                .register(&mut stream, Token(key), Interest::READABLE)
            {
                warn!("register failed for {addr}: {error}");
                continue;
            }
            entry.insert(Peer {
                id,
                stream,
                addr,
                phase: Phase::Handshake {
                    head: Vec::new(),
                    deadline: now + self.config.handshake_timeout,
                },
                eof: false,
                broken: false,
                read_paused: false,
                writable_registered: false,
                timer: None,
                over_capacity,
                flush_deadline: None,
            });
            debug!("#{id} {addr} accepted");
            self.settle(key, now);
        }
    }

    /// Reads until the socket would block (or the peer's turn is used up), handing each read to the
    /// peer's current phase.
    fn read(&mut self, key: usize, now: Instant) {
        for _ in 0..READS_PER_TURN {
            let Some(peer) = self.peers.get_mut(key) else {
                return;
            };
            if peer.read_paused || peer.eof || peer.broken {
                return;
            }
            let len = match peer.stream.read(&mut self.scratch) {
                Ok(0) => {
                    peer.eof = true;
                    return;
                }
                Ok(len) => len,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    debug!("#{} read failed: {error}", peer.id);
                    peer.broken = true;
                    return;
                }
            };
            self.on_bytes(key, len, now);
            self.apply_actions(now);
            let Some(peer) = self.peers.get_mut(key) else {
                return;
            };
            // Write first: whatever these bytes produced goes out now, in one write.
            peer.flush();
            if peer.queued() >= self.config.max_queued_output {
                peer.read_paused = true;
            }
            if len < self.scratch.len() {
                // A short read emptied the socket's receive queue. Readiness is edge-triggered:
                // bytes that arrive from now on raise a new event, so the read that would only
                // say WouldBlock is a syscall we can skip.
                return;
            }
        }
        if let Some(peer) = self.peers.get(key)
            && !self.more_input.contains(&(key, peer.id))
        {
            self.more_input.push((key, peer.id));
        }
    }

    /// Handles `self.scratch[..len]`, just read from peer `key`.
    fn on_bytes(&mut self, key: usize, len: usize, now: Instant) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        let input = &mut self.scratch[..len];
        let parsed = match &mut peer.phase {
            Phase::Handshake { head, .. } => {
                head.extend_from_slice(input);
                match handshake::parse_request(head) {
                    Ok(None) => return,
                    Ok(Some((request, head_len))) => {
                        if trace::enabled() {
                            trace::http_head(peer.id, Direction::In, &head[..head_len]);
                        }
                        Ok((request, head.split_off(head_len)))
                    }
                    Err(error) => Err(error),
                }
            }
            Phase::WebSocket { conn, endpoint } => {
                let (endpoint, chat, actions) = (*endpoint, &mut self.chat, &mut self.actions);
                conn.receive(input, now, |event, sender| {
                    on_event(endpoint, key, event, sender, chat, actions)
                });
                return;
            }
            // Nothing more is expected from the peer; its bytes are read only to reach its FIN.
            Phase::Responding { .. } | Phase::Draining { .. } => return,
        };
        match parsed {
            Ok((request, rest)) => self.on_request(key, &request, rest, now),
            Err(error) => self.reject(key, &error, now),
        }
    }

    /// A complete request head arrived: route it, then upgrade or answer over HTTP.
    fn on_request(&mut self, key: usize, request: &Request, rest: Vec<u8>, now: Instant) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        if peer.over_capacity {
            return self.reject(key, &HandshakeError::ServerFull, now);
        }
        let endpoint = match request.path.as_str() {
            "/echo" if self.config.echo => Some(Endpoint::Echo),
            "/" => Some(Endpoint::Chat),
            _ => None,
        };
        if !request.wants_upgrade() {
            return self.serve_http(key, request, endpoint, now);
        }
        let Some(endpoint) = endpoint else {
            return self.reject(key, &HandshakeError::NotFound(request.path.clone()), now);
        };
        let accepted = match request.validate(&self.config.policy()) {
            Ok(accepted) => accepted,
            Err(error) => return self.reject(key, &error, now),
        };
        let mut conn = Box::new(Connection::new(Role::Server, self.config.connection(), now));
        let response = accepted.response();
        if trace::enabled() {
            trace::http_head(peer.id, Direction::Out, &response);
            conn.enable_trace(peer.id);
        }
        conn.outbox().append_with(|out| out.extend_from_slice(&response));
        info!(
            "#{} {} open {} ({:?})",
            peer.id, peer.addr, request.path, endpoint
        );
        peer.phase = Phase::WebSocket { conn, endpoint };
        peer.flush();
        if endpoint == Endpoint::Chat {
            self.chat.connect(key, chat::Now::system(), &mut self.actions);
            self.apply_actions(now);
        }
        if !rest.is_empty() {
            // Frames that came in the same read as the request head (§4.1: the client may send
            // as soon as it has sent the handshake).
            for chunk in rest.chunks(SCRATCH_LEN) {
                self.scratch[..chunk.len()].copy_from_slice(chunk);
                self.on_bytes(key, chunk.len(), now);
            }
        }
    }

    /// A request without `Upgrade`: the chat page and its assets, or an error.
    fn serve_http(&mut self, key: usize, request: &Request, endpoint: Option<Endpoint>, now: Instant) {
        if let Some(asset) = page::asset(&request.path) {
            if request.method != "GET" && request.method != "HEAD" {
                return self.reject(
                    key,
                    &HandshakeError::MethodNotAllowed(request.method.clone()),
                    now,
                );
            }
            let response = asset.response(request.method == "HEAD");
            return self.respond(key, response, now);
        }
        let error = match endpoint {
            Some(_) => HandshakeError::UpgradeRequired,
            None => HandshakeError::NotFound(request.path.clone()),
        };
        self.reject(key, &error, now);
    }

    fn reject(&mut self, key: usize, error: &HandshakeError, now: Instant) {
        if let Some(peer) = self.peers.get(key) {
            info!(
                "#{} {} rejected: {} {}",
                peer.id,
                peer.addr,
                error.status().code(),
                error
            );
        }
        self.respond(key, error.response(), now);
    }

    fn respond(&mut self, key: usize, response: Vec<u8>, now: Instant) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        if trace::enabled() {
            let head_end = response
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or(response.len());
            trace::http_head(peer.id, Direction::Out, &response[..head_end]);
        }
        let mut out = Box::new(Outbox::new());
        out.append_with(|buf| buf.extend_from_slice(&response));
        peer.phase = Phase::Responding {
            out,
            deadline: now + self.config.close_timeout,
        };
    }

    /// Carries out what the chat asked for: deliveries (closing slow consumers) and closes.
    fn apply_actions(&mut self, now: Instant) {
        let cap = self.config.max_queued_output;
        let mut touched = Vec::new();
        for action in std::mem::take(&mut self.actions) {
            match action {
                Action::Send { to, frame } => {
                    touched.extend_from_slice(&to);
                    for client in to {
                        let Some(conn) = self.websocket(client) else {
                            continue;
                        };
                        // The cap is about falling behind: a frame that meets an empty queue
                        // is sent whatever its size.
                        if conn.queued() > 0 && conn.queued() + frame.len() > cap {
                            // Never skip a message silently: a client that cannot keep up is told
                            // why and let go.
                            let reason = format!("slow consumer: over {cap} bytes queued");
                            conn.close(CloseCode::PolicyViolation, &reason, now);
                            continue;
                        }
                        // Fails only when the connection is closing, and then it gets nothing more.
                        let _ = conn.sender(now).send_shared(&frame);
                    }
                }
                Action::Close { client, code, reason } => {
                    touched.push(client);
                    if let Some(conn) = self.websocket(client) {
                        conn.close(code, &reason, now);
                    }
                }
            }
        }
        // Write first: each recipient gets its bytes now; only what its socket refuses stays queued.
        touched.sort_unstable();
        touched.dedup();
        for key in touched {
            self.settle(key, now);
        }
    }

    fn websocket(&mut self, key: usize) -> Option<&mut Connection> {
        match &mut self.peers.get_mut(key)?.phase {
            Phase::WebSocket { conn, .. } => Some(conn),
            _ => None,
        }
    }

    /// After anything happened to a peer: move it to its next phase, drop it when done, and bring
    /// its interest and timer up to date.
    fn settle(&mut self, key: usize, now: Instant) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        peer.flush();
        // Whatever flush brought the queue under the cap (a WRITABLE event, or a timer's or a
        // read's flush that found room without one) resumes reading: once the queue is empty no
        // WRITABLE event will come to do it.
        if peer.read_paused && peer.queued() < self.config.max_queued_output {
            peer.read_paused = false;
            self.read(key, now);
        }
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        let close_timeout = self.config.close_timeout;
        let mut leave_chat = false;
        let mut remove = peer.broken;
        // Whether we have said our last word: then our side is shut down and we drain.
        let done_sending = match &mut peer.phase {
            Phase::Handshake { .. } | Phase::Draining { .. } => {
                remove |= peer.eof;
                false
            }
            Phase::WebSocket { conn, endpoint } => {
                if peer.eof {
                    conn.receive_eof();
                }
                if conn.state() != State::Open && *endpoint == Endpoint::Chat {
                    leave_chat = true;
                }
                let closed = conn.state() == State::Closed;
                let done = closed && (conn.queued() == 0 || peer.eof || peer.broken);
                if done {
                    log_close(peer.id, peer.addr, conn);
                } else if closed {
                    // A peer that never reads would otherwise hold the connection forever.
                    peer.flush_deadline.get_or_insert(now + close_timeout);
                }
                done
            }
            // A client may half-close right after its request; it still gets the answer.
            Phase::Responding { out, .. } => out.is_empty(),
        };
        if done_sending {
            peer.phase = Phase::Draining {
                deadline: now + close_timeout,
            };
            let _ = peer.stream.shutdown(Shutdown::Write);
            remove |= peer.eof;
        }
        if leave_chat && self.chat.contains(key) {
            self.chat.disconnect(key, &mut self.actions);
            self.apply_actions(now);
        }
        if remove {
            self.remove(key);
            return;
        }
        self.update_interest(key);
        self.schedule(key);
        // A phase change may have left bytes in the socket that no new event will announce
        // (edge-triggered readiness): draining peers read on.
        if let Some(peer) = self.peers.get_mut(key)
            && matches!(peer.phase, Phase::Draining { .. })
            && !peer.eof
        {
            self.read(key, now);
            if self.peers.get(key).is_some_and(|peer| peer.eof || peer.broken) {
                self.remove(key);
            }
        }
    }

    fn update_interest(&mut self, key: usize) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        let wants_write = peer.queued() > 0;
        if wants_write == peer.writable_registered {
            return;
        }
        let interest = if wants_write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        match self
            .poll
            .registry()
            .reregister(&mut peer.stream, Token(key), interest)
        {
            Ok(()) => peer.writable_registered = wants_write,
            Err(error) => {
                debug!("#{} reregister failed: {error}", peer.id);
                peer.broken = true;
            }
        }
    }

    fn schedule(&mut self, key: usize) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        let Some(deadline) = peer.deadline() else { return };
        if peer.timer.is_none_or(|scheduled| deadline < scheduled) {
            peer.timer = Some(deadline);
            self.timers.push(Reverse((deadline, key, peer.id)));
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((deadline, key, id))) = self.timers.peek().copied() {
            if deadline > now {
                break;
            }
            self.timers.pop();
            let Some(peer) = self.peers.get_mut(key) else {
                continue;
            };
            if peer.id != id || peer.timer != Some(deadline) {
                continue; // Stale: the peer was replaced or rescheduled earlier.
            }
            peer.timer = None;
            // The entry may be one the peer outgrew: a phase change can move its deadline later
            // without a new entry (see `schedule`), so check that the phase's own deadline passed.
            let due = peer.deadline().is_some_and(|deadline| deadline <= now);
            match &mut peer.phase {
                Phase::WebSocket { conn, .. } if conn.state() != State::Closed => conn.handle_timeout(now),
                _ if !due => {}
                Phase::Handshake { .. } => {
                    info!("#{} {} handshake timed out", peer.id, peer.addr);
                    self.remove(key);
                    continue;
                }
                // Responding or draining too long, or a closed WebSocket whose last bytes never
                // left because the peer stopped reading.
                _ => {
                    self.remove(key);
                    continue;
                }
            }
            self.settle(key, now);
        }
    }

    fn on_signal(&mut self, now: Instant) {
        let received: Vec<i32> = self.signals.pending().collect();
        if received.is_empty() || self.shutdown_deadline.is_some() {
            return;
        }
        info!("signal {received:?}: closing {} connection(s)", self.peers.len());
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.shutdown_deadline = Some(now + SHUTDOWN_GRACE);
        let keys: Vec<usize> = self.peers.iter().map(|(key, _)| key).collect();
        for key in keys {
            match self.peers.get_mut(key).map(|peer| &mut peer.phase) {
                Some(Phase::WebSocket { conn, .. }) => {
                    conn.close(CloseCode::GoingAway, "server shutting down", now);
                    self.settle(key, now);
                }
                Some(Phase::Handshake { .. }) => self.remove(key),
                _ => {}
            }
        }
    }

    fn remove(&mut self, key: usize) {
        if self.chat.contains(key) {
            self.chat.disconnect(key, &mut self.actions);
        }
        if let Some(mut peer) = self.peers.try_remove(key) {
            if let Phase::WebSocket { conn, .. } = &mut peer.phase {
                conn.receive_eof();
                log_close(peer.id, peer.addr, conn);
            }
            let _ = self.poll.registry().deregister(&mut peer.stream);
            debug!("#{} {} gone", peer.id, peer.addr);
        }
        let now = Instant::now();
        self.apply_actions(now);
    }
}

/// Connections the kernel may hold for us to accept. mio's `bind` asks for 128, which a burst of
/// clients (a reconnect storm after a restart, a benchmark opening thousands) overflows: the
/// dropped SYNs are retried only after a second. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

/// A non-blocking listening socket with `SO_REUSEADDR` (restarts do not wait out TIME_WAIT).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// The connection's one close line in the log.
fn log_close(id: u64, addr: SocketAddr, conn: &Connection) {
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

/// Hands one event of a WebSocket connection to its endpoint.
fn on_event(
    endpoint: Endpoint,
    key: usize,
    event: Event<'_>,
    sender: &mut Sender<'_>,
    chat: &mut Chat,
    actions: &mut Vec<Action>,
) {
    // Sends fail only once the connection is closing, when there is no one left to answer.
    match (endpoint, event) {
        (Endpoint::Echo, Event::Text(text)) => {
            let _ = sender.send_text(text);
        }
        (Endpoint::Echo, Event::Binary(data)) => {
            let _ = sender.send_binary(data);
        }
        (Endpoint::Chat, Event::Text(text)) => chat.on_text(key, text, chat::Now::system(), actions),
        (Endpoint::Chat, Event::Binary(_)) => {
            sender.close(
                CloseCode::UnsupportedData,
                "the chat speaks JSON text frames only",
            );
        }
        _ => {}
    }
}
