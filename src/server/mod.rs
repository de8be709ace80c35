//! The event loop: one thread, one `mio::Poll`. The only module that names mio, sockets and
//! signals, and the only one that reads the clock ([`clock`]).
//!
//! [`Server`] is deliberately thin (rustls' `tlsserver-mio` example is the model): it accepts
//! sockets, waits for readiness, and passes each event, with the time, to the [`Driver`], which
//! owns every socket with its protocol stack, the timers and the hub. After each turn it applies
//! the registrations the driver asks for: READABLE always, WRITABLE only while a connection has
//! bytes queued. On SIGINT or SIGTERM it stops accepting, asks the driver to close every
//! connection (1001 for WebSockets), and keeps turning for up to a second while the close
//! handshakes finish.

mod commit_clock;
mod driver;

use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest as MioInterest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM, SIGXFSZ};
use signal_hook_mio::v1_0::Signals;

pub use commit_clock::CommitClock;
pub use driver::{Driver, Interest, SCRATCH_LEN, Socket};

use crate::chat::Now;
use crate::config::Config;
use crate::hub::{Hub, Listener};
use crate::store::local::Coordination;
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{Command, OpenError, StoreHandle};

const LISTENER: Token = Token(usize::MAX - 1);
/// `--metrics-listen`.
const METRICS_LISTENER: Token = Token(usize::MAX - 4);
const SIGNALS: Token = Token(usize::MAX - 2);
/// The store's writer thread wakes the loop through this when it has answers.
const STORE: Token = Token(usize::MAX - 3);
/// How long a shutdown waits for close handshakes to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The one place the process reads the clock: the monotonic time for timers and rate limits, and
/// the wall-clock time for message timestamps. Everything else is handed `now`.
#[allow(clippy::disallowed_methods)]
pub fn clock() -> Now {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    Now {
        instant: Instant::now(),
        unix_ms,
    }
}

impl Socket for TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// 128 bits from the operating system's random source, for resume tokens. Should the source fail
/// (it does not on Linux once booted), the standard library's per-process random hasher keys,
/// which come from the same source at start, are stretched instead.
fn os_random() -> u128 {
    let mut bytes = [0u8; 16];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u128::from_le_bytes(bytes),
        Err(_) => {
            use std::hash::{BuildHasher, Hasher};
            let half = || {
                std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish()
            };
            (u128::from(half()) << 64) | u128::from(half())
        }
    }
}

/// Why the server could not start; each prints as one line.
#[derive(Debug)]
pub enum StartError {
    Io(io::Error),
    Store(OpenError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(error) => error.fmt(f),
            Self::Store(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for StartError {}

impl From<io::Error> for StartError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

/// The server: listener, signals, the store and the driver.
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    signals: Signals,
    driver: Driver<TcpStream>,
    store: StoreHandle,
    /// Leases, presence and resume tokens of this one process, answered in the loop.
    coordination: Coordination,
    commit_clock: CommitClock,
    shutdown_deadline: Option<Instant>,
}

impl Server {
    /// Opens the store, binds the listener and installs the SIGINT/SIGTERM handlers. The store
    /// comes first: a database that is damaged, foreign, newer or in use stops the start before
    /// the port is taken.
    pub fn bind(config: Config) -> Result<Self, StartError> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), STORE)?);
        let wake = Box::new(move || {
            // Only fails if the poll is gone, when nobody is left to wake.
            let _ = waker.wake();
        });
        let keep_per_room = usize::try_from(config.retain_messages)
            .ok()
            .and_then(NonZeroUsize::new)
            .unwrap_or(NonZeroUsize::MIN);
        let (store, info) = SqliteStore::open(&config.db, SqliteOptions { keep_per_room }, wake)
            .map_err(StartError::Store)?;
        info!(
            "message store {}: epoch {}, last id {}",
            config.db.display(),
            info.epoch,
            info.last_id
        );
        let mut listener = listen(config.listen)?;
        poll.registry()
            .register(&mut listener, LISTENER, MioInterest::READABLE)?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                let mut metrics = listen(addr)?;
                poll.registry()
                    .register(&mut metrics, METRICS_LISTENER, MioInterest::READABLE)?;
                info!("metrics on http://{}/metrics", metrics.local_addr()?);
                Some(metrics)
            }
            None => None,
        };
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        // A file-size limit (ulimit -f) reached by the store must fail that write, which the store
        // reports as `store_unavailable`, not kill the server: SIGXFSZ gets a handler that does
        // nothing, and the write then fails with EFBIG.
        signal_hook::flag::register(SIGXFSZ, Arc::new(std::sync::atomic::AtomicBool::new(false)))?;
        poll.registry()
            .register(&mut signals, SIGNALS, MioInterest::READABLE)?;
        let hub = Hub::new(
            config.hub(),
            info.epoch.to_string(),
            Box::new(os_random),
            clock().instant,
        );
        let driver = Driver::new(config.stack(), hub, config.max_connections);
        Ok(Self {
            poll,
            listener: Some(listener),
            metrics_listener,
            signals,
            driver,
            store,
            coordination: Coordination::new(),
            commit_clock: CommitClock::default(),
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
            let now = clock();
            if let Some(deadline) = self.shutdown_deadline
                && (self.driver.is_empty() || now.instant >= deadline)
            {
                info!("shutdown complete, {} connection(s) cut off", self.driver.len());
                // Whatever the store still has queued is committed before the process ends.
                if let Err(error) = self.store.close() {
                    warn!("message store: {error}");
                }
                info!(
                    "socket bytes in/out by protocol: {}",
                    self.driver.hub().metrics().wire_summary()
                );
                let stats = self.store.stats();
                info!(
                    "message store: {} messages in {} commits ({:.1} per commit, at most {}), {} failed commits, {} pruned",
                    stats.messages,
                    stats.commits,
                    stats.messages as f64 / stats.commits.max(1) as f64,
                    stats.largest_commit,
                    stats.failed_commits,
                    stats.pruned
                );
                return Ok(());
            }
            let wake = [self.driver.poll_timeout(now.instant), self.shutdown_deadline]
                .into_iter()
                .flatten()
                .min();
            let timeout = wake.map(|at| at.saturating_duration_since(now.instant));
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            let now = clock();
            self.driver.start_turn(now);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(Listener::Public, now),
                    METRICS_LISTENER => self.accept(Listener::Metrics, now),
                    SIGNALS => self.on_signal(now),
                    STORE => {
                        for outcome in self.store.try_results() {
                            if let Some(latency) = self.commit_clock.answered(&outcome, now.instant) {
                                self.driver.hub_mut().metrics_mut().store_commit(latency);
                            }
                            self.driver.store_outcome(outcome, now);
                        }
                    }
                    Token(index) => {
                        // Events for a slot whose connection is gone (or replaced) are harmless:
                        // the driver checks what it finds.
                        let Some(id) = self.driver.id_at(index) else {
                            continue;
                        };
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.driver.readable(id, now);
                        } else {
                            self.driver.writable(id, now);
                        }
                    }
                }
            }
            self.driver.end_turn(now);
            let commands = self.settle_coordination(now);
            self.register();
            // Everything the chat asked of the store this turn goes in one batch: one commit.
            if !commands.is_empty() {
                self.commit_clock.submitted(&commands, now.instant);
                if let Err(error) = self.store.submit(commands) {
                    // The writer is gone; its handle answers every command with this error.
                    warn!("message store: {error}");
                    self.driver.hub_mut().store_failed(error.to_string());
                }
            }
        }
    }

    /// Answers the turn's coordination commands here and now (one process needs no round trip for
    /// them), until the chat asks for no more; returns the storage commands, in order, for the
    /// writer thread.
    fn settle_coordination(&mut self, now: Now) -> Vec<Command> {
        let mut storage = Vec::new();
        loop {
            let mut outcomes = Vec::new();
            for command in self.driver.take_store_commands() {
                if command.is_storage() {
                    storage.push(command);
                } else {
                    self.coordination.execute(command, now.instant, &mut outcomes);
                }
            }
            if outcomes.is_empty() {
                return storage;
            }
            for outcome in outcomes {
                self.driver.store_outcome(outcome, now);
            }
            self.driver.end_turn(now);
        }
    }

    fn accept(&mut self, kind: Listener, now: Now) {
        loop {
            let listener = match kind {
                Listener::Public => &self.listener,
                Listener::Metrics => &self.metrics_listener,
            };
            let Some(listener) = listener else {
                return;
            };
            let (stream, addr) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // EMFILE and friends: leave the rest in the backlog until a slot frees up.
                    warn!("accept failed: {error}");
                    return;
                }
            };
            // Chat frames are small and latency-bound: don't let Nagle hold them back.
            if let Err(error) = stream.set_nodelay(true) {
                log::debug!("set_nodelay failed for {addr}: {error}");
            }
            self.driver.accept(stream, addr, kind, now);
        }
    }

    /// Applies the registrations the driver asked for this turn.
    fn register(&mut self) {
        while let Some((id, interest)) = self.driver.poll_interest() {
            let registry = self.poll.registry();
            let Some(socket) = self.driver.socket_mut(id) else {
                continue;
            };
            let token = Token(id.index());
            let result = match interest {
                Interest::Register => registry.register(socket, token, MioInterest::READABLE),
                Interest::Update { writable: false } => {
                    registry.reregister(socket, token, MioInterest::READABLE)
                }
                Interest::Update { writable: true } => {
                    registry.reregister(socket, token, MioInterest::READABLE | MioInterest::WRITABLE)
                }
            };
            if let Err(error) = result {
                warn!("#{id} registration failed: {error}");
                self.driver.fail(id, clock());
            }
        }
    }

    fn on_signal(&mut self, now: Now) {
        let received: Vec<i32> = self.signals.pending().collect();
        if received.is_empty() || self.shutdown_deadline.is_some() {
            return;
        }
        info!("signal {received:?}: closing {} connection(s)", self.driver.len());
        for mut listener in [self.listener.take(), self.metrics_listener.take()]
            .into_iter()
            .flatten()
        {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.shutdown_deadline = Some(now.instant + SHUTDOWN_GRACE);
        self.driver.shutdown(now);
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
