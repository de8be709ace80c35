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
//! A chat client is a *session* ([`SessionId`]), which the chat addresses; the hub maps sessions to
//! the connection that carries them ([`ConnId`]). Today one WebSocket carries one session for its
//! whole life; the map is what lets later transports (SSE, long-poll) and resumed sessions carry a
//! session over several connections.

mod event;
mod route;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

pub use event::Event;
pub use route::{Endpoint, Route, RouteError};

use crate::chat::{Action, Chat, ChatConfig, Now, SessionId, TokenSource};
use crate::conn::ConnId;
use crate::http::RequestHead;
use crate::store::{Command, Outcome};
use crate::ws::close::CloseCode;
use crate::ws::handshake::Policy;

/// What the hub needs to know from the command line.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Serve `/echo`.
    pub echo: bool,
    /// Who may open a WebSocket.
    pub policy: Policy,
    pub chat: ChatConfig,
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
    /// The session each chat connection carries, and back.
    session_of: IdMap<ConnId, SessionId>,
    conn_of: IdMap<SessionId, ConnId>,
    last_session: u64,
    /// Scratch for the chat's answers to one input.
    actions: Vec<Action>,
    /// Store commands the chat asked for, for the server to hand over once per turn.
    store_commands: Vec<Command>,
    outputs: VecDeque<Output>,
    /// Deliveries (recipient × event) waiting in `outputs`.
    backlog: usize,
}

impl Hub {
    /// A hub over a store of epoch `epoch`, drawing resume tokens from `tokens`.
    pub fn new(config: HubConfig, epoch: String, tokens: TokenSource) -> Self {
        let chat = Chat::new(config.chat.clone(), epoch, tokens);
        Self {
            config,
            chat,
            store_commands: Vec::new(),
            session_of: IdMap::default(),
            conn_of: IdMap::default(),
            last_session: 0,
            actions: Vec::new(),
            outputs: VecDeque::new(),
            backlog: 0,
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// What `head` gets: a page, an upgrade, or a refusal. `over_capacity`: the connection was
    /// accepted past `--max-connections` only to be told so.
    pub fn route(&self, head: &RequestHead, over_capacity: bool) -> Route {
        route::route(head, &self.config, over_capacity)
    }

    /// A chat WebSocket is open on `conn`: it starts a session, which joins the lobby.
    pub fn opened(&mut self, conn: ConnId, now: Now) {
        self.last_session += 1;
        let session = SessionId(self.last_session);
        self.session_of.insert(conn, session);
        self.conn_of.insert(session, conn);
        self.chat.connect(session, now, &mut self.actions);
        self.queue_actions();
    }

    /// A text message arrived on the chat connection `conn`.
    pub fn text(&mut self, conn: ConnId, text: &str, now: Now) {
        let Some(&session) = self.session_of.get(&conn) else {
            return;
        };
        self.chat.on_text(session, text, now, &mut self.actions);
        self.queue_actions();
    }

    /// `conn` stopped carrying chat messages (it is closing or gone): its session ends. Calling it
    /// for a connection that has no session does nothing, so callers need not track it.
    pub fn closed(&mut self, conn: ConnId, now: Now) {
        let Some(session) = self.session_of.remove(&conn) else {
            return;
        };
        self.conn_of.remove(&session);
        self.chat.disconnect(session, now, &mut self.actions);
        self.queue_actions();
    }

    /// The store answered a command: the chat acts on it (acks, broadcasts, welcomes).
    pub fn store_outcome(&mut self, outcome: Outcome) {
        self.chat.on_store(outcome, &mut self.actions);
        self.queue_actions();
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

    /// Chat sessions open now.
    pub fn sessions(&self) -> usize {
        self.session_of.len()
    }

    /// Turns the chat's actions (addressed to sessions) into outputs (addressed to connections).
    fn queue_actions(&mut self) {
        for action in self.actions.drain(..) {
            let output = match action {
                Action::Send { to, json } => {
                    // Sized once: a filtered iterator would grow the vector by doubling.
                    let mut conns = Vec::with_capacity(to.len());
                    conns.extend(to.iter().filter_map(|session| self.conn_of.get(session).copied()));
                    let to = conns;
                    self.backlog += to.len();
                    Output::Deliver {
                        to,
                        event: Event::new(&json),
                    }
                }
                Action::Close { client, code, reason } => match self.conn_of.get(&client) {
                    Some(&conn) => Output::Close { conn, code, reason },
                    None => continue,
                },
                Action::Store(command) => {
                    self.store_commands.push(command);
                    continue;
                }
            };
            self.outputs.push_back(output);
        }
    }
}

#[cfg(test)]
mod tests;
