//! The turn of the loop, over any socket: the connection table, the timer heap, and the hub's
//! outputs drained in one place.
//!
//! [`Driver`] is everything the event loop does except waiting for readiness: it owns each socket
//! with its [`Stack`], reads and writes them, keeps the timers, and pumps the [`Hub`]. It is generic
//! over the socket ([`Socket`]) and takes the time as an argument, so the same code runs under mio
//! in [`super::Server`] and under byte pipes and a hand-moved clock in the tests — every phase,
//! backpressure, timer and shutdown rule is tested without a process.
//!
//! One turn, in order:
//! 1. [`Driver::start_turn`]: sockets whose last read filled the whole buffer are read again
//!    (they may hold more, and readiness is edge-triggered: no new event will say so);
//! 2. readiness events: [`Driver::readable`] reads a socket once (at most [`SCRATCH_LEN`] bytes),
//!    feeds the bytes to its stack and writes what they produced at once; [`Driver::writable`]
//!    writes what was queued;
//! 3. [`Driver::end_turn`]: due timers fire, and then the hub's outputs are drained — deliveries
//!    and closes go to their connections' queues — and each connection they touched is flushed
//!    and settled once.
//!
//! One read per socket per turn bounds a turn's work: a peer that sends as fast as we read cannot
//! keep the timers or the other peers waiting, and what its messages cause reaches the other
//! connections (and their sockets) after every read's worth, so a flood of chat messages never
//! piles up in the queues faster than one read can produce.
//!
//! (A turn that has queued more than [`DRAIN_BACKLOG`] deliveries drains the hub early, between
//! two readiness events, to bound the memory the queue holds.)
//!
//! Nothing called from a stack reaches another connection: the stack talks to the hub, the hub
//! queues outputs, and only step 2 applies them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use log::debug;
use slab::Slab;

use crate::chat::Now;
use crate::conn::{ConnId, Ctx, Opening, SocketAction, Stack, StackConfig};
use crate::hub::{Admission, Hub, Listener, Output, RouteError};
use crate::metrics;
use crate::store::{Command, Outcome};

/// One read's worth of bytes; shared by every connection, so idle ones hold no read buffer.
pub const SCRATCH_LEN: usize = 64 * 1024;
/// Deliveries (recipient × event) the hub may hold before the driver drains it in the middle of a
/// turn. Draining once per turn batches each recipient's writes, but a turn of many joins into a
/// big room (a reconnect storm after a restart: up to 1,024 events per turn, each a `joined` notice
/// to every member) would hold millions of queue slots at once; past this budget the turn drains
/// early. 16,384 is sixteen messages to a room of a thousand.
pub const DRAIN_BACKLOG: usize = 16 * 1024;
/// Connections accepted past `--max-connections` only to be told 503; beyond this many they are
/// dropped at once.
pub const OVERFLOW_SLACK: usize = 64;

/// What the driver needs of a socket: bytes both ways, and half-closing our side.
pub trait Socket: Read + Write {
    /// Shuts down the sending side (TCP FIN), keeping the receiving side open.
    fn shutdown_write(&mut self) -> io::Result<()>;
}

/// How the event loop must (re)register a socket for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// A new socket: register for reading.
    Register,
    /// Reading always; writing only while something is queued (`writable`).
    Update { writable: bool },
}

#[derive(Debug)]
struct Peer<S> {
    socket: S,
    stack: Stack,
    /// The deadline this peer has an entry for in the timer heap.
    timer: Option<Instant>,
    /// Whether the event loop was last told to watch for writability.
    writable: bool,
    /// Reading stopped because the stack did not want more input (its queue was full).
    paused: bool,
    /// Listed in `touched` this turn (so a broadcast lists each recipient once, without a sort).
    touched: bool,
    /// The phase the metrics count it in now.
    counted: Option<metrics::Phase>,
}

/// The connection table, timers and hub of one event loop.
pub struct Driver<S> {
    peers: Slab<Peer<S>>,
    last_serial: u64,
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    hub: Hub,
    config: StackConfig,
    max_connections: usize,
    scratch: Vec<u8>,
    /// Sockets whose last read filled the buffer, or that may hold input no new event will
    /// announce (readiness is edge-triggered): read again at the start of the next turn.
    more_input: Vec<ConnId>,
    /// Connections the hub's outputs reached this turn: flushed and settled once each.
    touched: Vec<ConnId>,
    /// Registrations the event loop must make before it waits again.
    interest: Vec<(ConnId, Interest)>,
}

impl<S: Socket> Driver<S> {
    pub fn new(config: StackConfig, hub: Hub, max_connections: usize) -> Self {
        Self {
            peers: Slab::new(),
            last_serial: 0,
            timers: BinaryHeap::new(),
            hub,
            config,
            max_connections,
            scratch: vec![0; SCRATCH_LEN],
            more_input: Vec::new(),
            touched: Vec::new(),
            interest: Vec::new(),
        }
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub fn hub_mut(&mut self) -> &mut Hub {
        &mut self.hub
    }

    /// The connection in table slot `index` (a readiness event names only the slot).
    pub fn id_at(&self, index: usize) -> Option<ConnId> {
        self.peers.get(index).map(|peer| peer.stack.id())
    }

    pub fn socket_mut(&mut self, id: ConnId) -> Option<&mut S> {
        self.peer_mut(id).map(|peer| &mut peer.socket)
    }

    pub fn stack(&self, id: ConnId) -> Option<&Stack> {
        self.peers
            .get(id.index())
            .filter(|peer| peer.stack.id() == id)
            .map(|peer| &peer.stack)
    }

    /// The next registration change the event loop must make.
    pub fn poll_interest(&mut self) -> Option<(ConnId, Interest)> {
        self.interest.pop()
    }

    /// When the loop must wake up even without readiness: `now` if a socket still has input.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if !self.more_input.is_empty() {
            return Some(now);
        }
        let next_timer = self.timers.peek().map(|Reverse((deadline, _))| *deadline);
        [next_timer, self.hub.poll_timeout()].into_iter().flatten().min()
    }

    /// Takes a freshly accepted socket, which came in on `listener`. Returns `None` (and drops
    /// the socket) when the server is so far over its limit that it will not even answer 503, or
    /// when the client's address is over its limit with as many refusals already pending.
    pub fn accept(&mut self, socket: S, addr: SocketAddr, listener: Listener, now: Now) -> Option<ConnId> {
        if self.peers.len() >= self.max_connections + OVERFLOW_SLACK {
            debug!("dropping {addr}: far over the connection limit");
            return None;
        }
        let opening = if self.peers.len() >= self.max_connections {
            self.hub.server_full(addr.ip(), now.instant);
            Opening {
                listener,
                slot: None,
                refusal: Some(RouteError::ServerFull),
            }
        } else {
            match self.hub.admit(addr.ip(), now.instant) {
                Admission::Open(slot) => Opening {
                    listener,
                    slot,
                    refusal: None,
                },
                Admission::Refuse(slot, refused) => Opening {
                    listener,
                    slot: Some(slot),
                    refusal: Some(RouteError::PerAddress(refused)),
                },
                Admission::Drop => {
                    debug!("dropping {addr}: over its address's limit, with refusals pending");
                    return None;
                }
            }
        };
        self.last_serial += 1;
        let entry = self.peers.vacant_entry();
        let id = ConnId::new(entry.key(), self.last_serial);
        let stack = Stack::new(id, addr, opening, &self.config, now.instant);
        self.hub.metrics_mut().accepted(stack.metrics_transport());
        entry.insert(Peer {
            socket,
            stack,
            timer: None,
            writable: false,
            paused: false,
            touched: false,
            counted: None,
        });
        debug!("#{id} {addr} accepted");
        self.interest.push((id, Interest::Register));
        self.settle(id, now);
        Some(id)
    }

    /// The socket of `id` may have input (or reached end of stream, or failed).
    pub fn readable(&mut self, id: ConnId, now: Now) {
        self.read(id, now);
        self.settle(id, now);
        if self.hub.backlog() > DRAIN_BACKLOG {
            self.drain_hub(now);
        }
    }

    /// The socket of `id` may take more output.
    pub fn writable(&mut self, id: ConnId, now: Now) {
        self.settle(id, now);
    }

    /// The start of a turn: sockets that may still hold input are read again.
    pub fn start_turn(&mut self, now: Now) {
        for id in std::mem::take(&mut self.more_input) {
            self.readable(id, now);
        }
    }

    /// The end of a turn: due timers (the connections', then the hub's), then the hub's outputs.
    pub fn end_turn(&mut self, now: Now) {
        self.fire_timers(now);
        if self.hub.poll_timeout().is_some_and(|at| at <= now.instant) {
            self.hub.handle_timeout(now);
        }
        self.drain_hub(now);
    }

    /// Server shutdown: every WebSocket is closed with 1001; connections between HTTP requests are
    /// dropped.
    pub fn shutdown(&mut self, now: Now) {
        let Self {
            peers,
            hub,
            config,
            touched,
            ..
        } = self;
        let mut ctx = Ctx { hub, config, now };
        for (_, peer) in peers.iter_mut() {
            peer.stack.shutdown(&mut ctx);
            touch(peer, touched);
        }
        self.drain_hub(now);
    }

    /// The store commands the hub queued since the last call, for the event loop to hand to the
    /// store in one batch (one group commit) per turn.
    pub fn take_store_commands(&mut self) -> Vec<Command> {
        self.hub.take_store_commands()
    }

    /// The store answered a command: the hub acts on it, and what that sends goes out at the end
    /// of the turn, like every other output.
    pub fn store_outcome(&mut self, outcome: Outcome, now: Now) {
        self.hub.store_outcome(outcome, now.instant);
        if self.hub.backlog() > DRAIN_BACKLOG {
            self.drain_hub(now);
        }
    }

    /// The event loop could not watch the socket of `id`: give it up.
    pub fn fail(&mut self, id: ConnId, now: Now) {
        let Self {
            peers, hub, config, ..
        } = self;
        if let Some(peer) = peer_at(peers, id) {
            peer.stack.fail(&mut Ctx { hub, config, now });
        }
        self.settle(id, now);
    }

    fn peer_mut(&mut self, id: ConnId) -> Option<&mut Peer<S>> {
        peer_at(&mut self.peers, id)
    }

    /// Reads the socket once, unless the stack wants no input now.
    fn read(&mut self, id: ConnId, now: Now) {
        let Self {
            peers,
            hub,
            config,
            scratch,
            more_input,
            ..
        } = self;
        let Some(peer) = peer_at(peers, id) else {
            return;
        };
        let mut ctx = Ctx { hub, config, now };
        if !peer.stack.wants_read(ctx.config) {
            peer.paused = true;
            return;
        }
        let len = loop {
            match peer.socket.read(scratch) {
                Ok(len) => break len,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    debug!("#{id} read failed: {error}");
                    return peer.stack.fail(&mut ctx);
                }
            }
        };
        if len == 0 {
            return peer.stack.receive_eof();
        }
        peer.stack.receive(&mut scratch[..len], &mut ctx);
        // Counted after the bytes were read: a request counts for the transport it asked for (the
        // upgrade for the WebSocket, `GET /sse` for the event stream).
        ctx.hub.metrics_mut().bytes_received(peer.stack.wire(), len);
        // Write first: whatever these bytes produced goes out now, in one write.
        flush(peer, &mut ctx);
        // A short read emptied the socket's receive queue, and bytes that arrive from now on raise
        // a new (edge-triggered) event: the read that would only say WouldBlock is a syscall we
        // skip. A full one may have left more behind.
        if len == scratch.len() {
            more_input.push(id);
        }
    }

    /// Brings a connection up to date after anything happened to it: writes what is queued, lets
    /// the stack move on, acts on what it asks of the socket, and refreshes interest and timer.
    fn settle(&mut self, id: ConnId, now: Now) {
        let Self {
            peers,
            hub,
            config,
            more_input,
            timers,
            interest,
            ..
        } = self;
        let Some(peer) = peer_at(peers, id) else {
            return;
        };
        let mut ctx = Ctx { hub, config, now };
        loop {
            let wrote_all = flush(peer, &mut ctx);
            match peer.stack.settle(&mut ctx) {
                SocketAction::None => {}
                SocketAction::ShutdownWrite => {
                    if let Err(error) = peer.socket.shutdown_write() {
                        debug!("#{id} shutdown failed: {error}");
                    }
                    // Draining reads on; bytes already in the socket raise no new event.
                    more_input.push(id);
                }
                SocketAction::Remove => {
                    debug!("#{id} {} gone", peer.stack.addr());
                    let transport = peer.stack.metrics_transport();
                    ctx.hub.metrics_mut().phase_changed(transport, peer.counted, None);
                    peers.remove(id.index());
                    return;
                }
            }
            // Settling may have queued more (the answer to a pipelined request): write it too,
            // unless the socket is already full.
            if !(wrote_all && peer.stack.wants_write()) {
                break;
            }
        }
        if peer.paused && peer.stack.wants_read(ctx.config) {
            // The queue drained below the cap: resume reading. No event will announce the input
            // that waited meanwhile.
            peer.paused = false;
            more_input.push(id);
        }
        let phase = peer.stack.metrics_phase();
        if phase != peer.counted {
            let transport = peer.stack.metrics_transport();
            ctx.hub
                .metrics_mut()
                .phase_changed(transport, peer.counted, phase);
            peer.counted = phase;
        }
        let writable = peer.stack.wants_write();
        if writable != peer.writable {
            peer.writable = writable;
            interest.push((id, Interest::Update { writable }));
        }
        if let Some(deadline) = peer.stack.poll_timeout()
            && peer.timer.is_none_or(|scheduled| deadline < scheduled)
        {
            peer.timer = Some(deadline);
            timers.push(Reverse((deadline, id)));
        }
    }

    fn fire_timers(&mut self, now: Now) {
        while let Some(Reverse((deadline, id))) = self.timers.peek().copied() {
            if deadline > now.instant {
                break;
            }
            self.timers.pop();
            let Self {
                peers, hub, config, ..
            } = self;
            let Some(peer) = peer_at(peers, id) else {
                continue; // The connection is gone.
            };
            if peer.timer != Some(deadline) {
                continue; // Stale: the connection was rescheduled earlier since.
            }
            peer.timer = None;
            peer.stack.handle_timeout(&mut Ctx { hub, config, now });
            self.settle(id, now);
        }
    }

    /// Applies the hub's outputs, then flushes and settles each connection they touched once.
    /// Settling may end chat sessions, which queues more outputs (`left` notices): repeat until
    /// the hub is quiet.
    fn drain_hub(&mut self, now: Now) {
        loop {
            while let Some(output) = self.hub.poll_output() {
                self.apply(output, now);
            }
            if self.touched.is_empty() {
                return;
            }
            let mut touched = std::mem::take(&mut self.touched);
            for id in touched.drain(..) {
                if let Some(peer) = self.peer_mut(id) {
                    peer.touched = false;
                }
                self.settle(id, now);
            }
            // Keep the allocation for the next turn.
            self.touched = touched;
        }
    }

    fn apply(&mut self, output: Output, now: Now) {
        let Self {
            peers,
            hub,
            config,
            touched,
            ..
        } = self;
        let mut ctx = Ctx { hub, config, now };
        match output {
            Output::Deliver { to, event } => {
                let len = event.websocket_len_bound();
                for id in to {
                    if let Some(peer) = peer_at(peers, id) {
                        // Before the slow-consumer rule judges a full queue, give the socket the
                        // chance to take it: a turn's worth of deliveries must not close a client
                        // that reads as fast as it can.
                        if peer.stack.queued() + len > ctx.config.max_queued_output {
                            flush(peer, &mut ctx);
                        }
                        peer.stack.deliver(&event, &mut ctx);
                        touch(peer, touched);
                    }
                }
            }
            Output::Close { conn, code, reason } => {
                if let Some(peer) = peer_at(peers, conn) {
                    peer.stack.close(code, &reason, &mut ctx);
                    touch(peer, touched);
                }
            }
            Output::Session { conn, output } => {
                if let Some(peer) = peer_at(peers, conn) {
                    peer.stack.apply_session_output(output, &mut ctx);
                    touch(peer, touched);
                }
            }
        }
    }
}

/// Lists `peer` among the connections to settle at the end of the drain, once.
fn touch<S>(peer: &mut Peer<S>, touched: &mut Vec<ConnId>) {
    if !peer.touched {
        peer.touched = true;
        touched.push(peer.stack.id());
    }
}

/// The peer `id` names, if it is still there (and not a later occupant of its slot).
fn peer_at<S>(peers: &mut Slab<Peer<S>>, id: ConnId) -> Option<&mut Peer<S>> {
    peers.get_mut(id.index()).filter(|peer| peer.stack.id() == id)
}

/// Writes what the stack has queued until the socket would block. Returns whether everything
/// went; a failed socket fails the stack.
fn flush<S: Socket>(peer: &mut Peer<S>, ctx: &mut Ctx<'_>) -> bool {
    let on_wire = peer.stack.wire();
    let Some(outbox) = peer.stack.outbox().filter(|outbox| !outbox.is_empty()) else {
        return true;
    };
    match outbox.write_to(&mut peer.socket) {
        Ok(written) => {
            ctx.hub.metrics_mut().bytes_sent(on_wire, written);
            outbox.is_empty()
        }
        Err(error) => {
            debug!("#{} write failed: {error}", peer.stack.id());
            peer.stack.fail(ctx);
            false
        }
    }
}

#[cfg(test)]
mod tests;
