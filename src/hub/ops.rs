//! What the operator of an exposed server needs from the shared state: who may connect (per-address
//! limits, client addresses behind trusted proxies), and what the server says about itself
//! (metrics, liveness, readiness).
//!
//! **Admission.** A connection from an address that is not a trusted proxy is counted under its
//! address when it is accepted ([`Hub::admit`]), so that connections which never send a request
//! (slowloris) count too. A trusted proxy's connections carry other people's requests: they are
//! counted at each request head, under the client address the proxy names in `X-Forwarded-For`
//! ([`Hub::admit_forwarded`]). Either way a refusal is answered with 429 (or 503 when the address
//! table itself is full) once the request head is read, and logged at most once per
//! [`REFUSAL_LOG_INTERVAL`] per reason.
//!
//! **Health.** `/healthz` is answered by the event loop itself, so an answer means the loop turns;
//! `/readyz` says whether the store works (its last operation succeeded): a load balancer sends
//! new clients elsewhere while it does not, and the chat's own clients are told
//! `store_unavailable` for what they send meanwhile.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use log::warn;

use crate::conn::per_ip::{LogLimiter, PerAddress, Refused, Slot};
use crate::http::RequestHead;
use crate::metrics::{ChatFigures, Metrics, Refusal};
use crate::store::{Outcome, StoreError};

use super::Hub;

/// How often each kind of refusal may be logged (the lines left out are counted in the next).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Which listening socket a connection came in on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Listener {
    /// The chat's address (`--listen`).
    #[default]
    Public,
    /// `--metrics-listen`: only `/metrics`, `/healthz` and `/readyz`.
    Metrics,
}

/// What becomes of a connection that was just accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Counted under its address (or, from a trusted proxy, not yet: at its request head).
    Open(Option<Slot>),
    /// Over its address's limit: its request is answered with the refusal. The slot counts it
    /// among its address's pending refusals meanwhile.
    Refuse(Slot, Refused),
    /// Over its address's limit with as many refusals already pending: dropped unanswered.
    Drop,
}

/// The kinds of refusal, each logged at most once per interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    ServerFull,
    PerAddress,
    AddressTable,
}

impl RefusalKind {
    fn of(refused: &Refused) -> Self {
        match refused {
            Refused::TooManyFromAddress { .. } => Self::PerAddress,
            Refused::TooManyAddresses { .. } => Self::AddressTable,
        }
    }

    fn metric(self) -> Refusal {
        match self {
            Self::ServerFull => Refusal::MaxConnections,
            Self::PerAddress => Refusal::PerAddress,
            Self::AddressTable => Refusal::AddressTable,
        }
    }
}

/// Why `/readyz` answers 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// The store's last operation failed (or its writer is gone), with the error.
    Store(String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Store(error) => write!(f, "message store: {error}"),
        }
    }
}

/// The hub's share of operations: the per-address table, the refusal log, the metrics, and
/// what is known of the store's health.
#[derive(Debug)]
pub(super) struct Ops {
    pub(super) per_address: PerAddress,
    pub(super) refusal_log: LogLimiter<RefusalKind>,
    pub(super) metrics: Metrics,
    /// The error of the store's last operation, if it failed.
    pub(super) store_error: Option<String>,
}

impl Hub {
    /// Whether requests from `peer` may name their client in `X-Forwarded-For`.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.config.trusted_proxies.contains(peer)
    }

    /// The address a request from `peer` counts for: the peer's own, or the one a trusted proxy
    /// names.
    pub fn client_addr(&self, peer: IpAddr, head: &RequestHead) -> IpAddr {
        self.config.trusted_proxies.client_addr(peer, head)
    }

    /// A connection from `peer` was accepted: counted under its address, or refused (a trusted
    /// proxy's connection is counted later, per request).
    pub fn admit(&mut self, peer: IpAddr, now: Instant) -> Admission {
        if self.trusts(peer) {
            return Admission::Open(None);
        }
        match self.ops.per_address.try_acquire(peer) {
            Ok(slot) => Admission::Open(Some(slot)),
            Err(refused) => {
                self.note_refusal(RefusalKind::of(&refused), peer, &refused.to_string(), now);
                match self.ops.per_address.hold_refusal(peer) {
                    Some(slot) => Admission::Refuse(slot, refused),
                    None => Admission::Drop,
                }
            }
        }
    }

    /// A request from a trusted proxy names `client`: count it under that address.
    pub fn admit_forwarded(&mut self, client: IpAddr, now: Instant) -> Result<Slot, Refused> {
        self.ops.per_address.try_acquire(client).inspect_err(|refused| {
            self.note_refusal(RefusalKind::of(refused), client, &refused.to_string(), now);
        })
    }

    /// A connection that held `slot` is gone.
    pub fn release(&mut self, slot: Slot) {
        self.ops.per_address.release(slot);
    }

    /// A connection from `client` was accepted past `--max-connections`, to be told 503.
    pub fn server_full(&mut self, client: IpAddr, now: Instant) {
        let why = format!("{} connections are open", self.config.max_connections);
        self.note_refusal(RefusalKind::ServerFull, client, &why, now);
    }

    /// Counts a refusal and logs it, unless a line for its kind was written within the interval.
    fn note_refusal(&mut self, kind: RefusalKind, client: IpAddr, why: &str, now: Instant) {
        self.ops.metrics.refused(kind.metric());
        if let Some(admitted) = self.ops.refusal_log.admit(kind, now) {
            warn!("refusing {client}: {why}{admitted}");
        }
    }

    /// Summary lines for refusals left out of the log whose interval has ended.
    pub(super) fn log_refusal_summaries(&mut self, now: Instant) {
        for (kind, count) in self.ops.refusal_log.handle_timeout(now) {
            warn!("{count} more connection(s) refused ({kind:?}) in the last {REFUSAL_LOG_INTERVAL:?}");
        }
    }

    pub fn metrics_mut(&mut self) -> &mut Metrics {
        &mut self.ops.metrics
    }

    pub fn metrics(&self) -> &Metrics {
        &self.ops.metrics
    }

    /// The body of a scrape: the metrics, with the chat's own counts copied in.
    pub fn render_metrics(&mut self) -> String {
        let figures = ChatFigures {
            accepted: self.chat.accepted(),
            sessions: self.sessions(),
            rooms: self.chat.room_count(),
        };
        self.ops.metrics.chat(figures);
        self.ops.metrics.store_up(self.ops.store_error.is_none());
        self.ops.metrics.render()
    }

    /// Whether the server can take new clients: `/readyz`.
    pub fn readiness(&self) -> Result<(), NotReady> {
        match &self.ops.store_error {
            Some(error) => Err(NotReady::Store(error.clone())),
            None => Ok(()),
        }
    }

    /// The store could not be reached at all (its writer is gone): not ready until it answers
    /// again.
    pub fn store_failed(&mut self, error: String) {
        self.ops.store_error = Some(error);
    }

    /// The store's own word on its health (Redis: both connections up), each turn it is known.
    pub fn store_health(&mut self, health: Result<(), String>) {
        match health {
            Ok(()) => {
                // Cleared only if the error was the connection's: an answer's error stands until
                // an answer succeeds.
                if self
                    .ops
                    .store_error
                    .as_deref()
                    .is_some_and(|error| error.starts_with("redis "))
                {
                    self.ops.store_error = None;
                }
            }
            Err(why) => self.ops.store_error = Some(why),
        }
    }

    /// What an answer of the store says about its health. A refusal that is the sender's own
    /// (it no longer holds its nickname) says nothing about the store; news carries no health.
    pub(super) fn note_store_health(&mut self, outcome: &Outcome) {
        fn health<T>(result: &Result<T, StoreError>) -> Option<String> {
            match result {
                Ok(_) | Err(StoreError::NotOwner) => None,
                Err(error) => Some(error.to_string()),
            }
        }
        self.ops.store_error = match outcome {
            Outcome::Append { result, .. } => health(result),
            Outcome::Read { result, .. } => health(result),
            Outcome::Claim { result, .. } => health(result),
            Outcome::Members { result, .. } => health(result),
            Outcome::Token { result, .. } => health(result),
            Outcome::Posted(_)
            | Outcome::Following { .. }
            | Outcome::PresenceChanged { .. }
            | Outcome::LeaseLost { .. }
            | Outcome::Evicted { .. }
            | Outcome::Epoch(_) => return,
        };
    }
}
