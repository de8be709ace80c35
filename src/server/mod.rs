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
//!
//! With `--tls-cert` and `--tls-key` every socket accepted on `--listen` speaks TLS (the stack's
//! transport does it, [`crate::conn::tls`]; `--metrics-listen` stays plain HTTP); the files are
//! read here, before anything else at start, and again on SIGHUP, when new connections get the new
//! certificate and open ones keep theirs.

mod commit_clock;
mod driver;
mod redis;

use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest as MioInterest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGXFSZ};
use signal_hook_mio::v1_0::Signals;

pub use commit_clock::CommitClock;
pub use driver::{Driver, Interest, SCRATCH_LEN, Socket};

use crate::chat::Now;
use crate::config::Config;
use crate::conn::tls::{self, TlsConfigError};
use crate::hub::{Hub, Listener};
use crate::store::local::Coordination;
use crate::store::redis::RedisConfig;
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{Command, OpenError, StoreHandle};
use redis::RedisBackend;

const LISTENER: Token = Token(usize::MAX - 1);
/// `--metrics-listen`.
const METRICS_LISTENER: Token = Token(usize::MAX - 4);
const SIGNALS: Token = Token(usize::MAX - 2);
/// The store's writer thread wakes the loop through this when it has answers.
const STORE: Token = Token(usize::MAX - 3);
/// The Redis store's command connection and subscription.
const REDIS_LINK: Token = Token(usize::MAX - 5);
const REDIS_SUB: Token = Token(usize::MAX - 6);
/// How long the start waits for Redis to answer (connect, scripts, epoch) before it gives up.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(5);
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
    Tls(TlsLoadError),
    /// `--redis` is not a Redis URL, or Redis did not answer in time.
    Redis(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(error) => error.fmt(f),
            Self::Store(error) => error.fmt(f),
            Self::Tls(error) => error.fmt(f),
            Self::Redis(why) => write!(f, "--redis: {why}"),
        }
    }
}

/// The certificate and key files the TLS configuration is read from, at start and on SIGHUP.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why the certificate and key could not be loaded; prints as one line that names the file.
#[derive(Debug)]
pub enum TlsLoadError {
    /// A file could not be read (missing, a directory, no permission).
    Read {
        what: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    /// The files were read and are not a usable certificate and key.
    Invalid {
        cert: PathBuf,
        key: PathBuf,
        error: TlsConfigError,
    },
}

impl fmt::Display for TlsLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { what, path, error } => {
                write!(f, "cannot read TLS {what} {}: {error}", path.display())
            }
            Self::Invalid { cert, key, error } => write!(
                f,
                "TLS certificate {} with key {}: {error}",
                cert.display(),
                key.display()
            ),
        }
    }
}

impl std::error::Error for TlsLoadError {}

impl TlsFiles {
    /// Reads both files and builds the configuration new connections are served with.
    pub fn load(&self) -> Result<Arc<rustls::ServerConfig>, TlsLoadError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|error| TlsLoadError::Read {
                what,
                path: path.to_owned(),
                error,
            })
        };
        let cert = read("certificate", &self.cert)?;
        let key = read("key", &self.key)?;
        tls::server_config(&cert, &key).map_err(|error| TlsLoadError::Invalid {
            cert: self.cert.clone(),
            key: self.key.clone(),
            error,
        })
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
    backend: Backend,
    shutdown_deadline: Option<Instant>,
    /// Where the TLS configuration comes from (reloaded on SIGHUP); `None` serves plain TCP.
    tls: Option<TlsFiles>,
}

/// Where the chat's store commands go.
// One value per process: the size of its variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Backend {
    /// One process: SQLite on its writer thread for messages, the coordination in the loop.
    Local {
        store: StoreHandle,
        /// Leases, presence and resume tokens of this one process, answered in the loop.
        coordination: Coordination,
        commit_clock: CommitClock,
    },
    /// Many processes: everything in Redis.
    Redis(Box<RedisBackend>),
}

impl Server {
    /// Loads the TLS certificate and key (if any), opens the store, binds the listener and installs
    /// the SIGINT/SIGTERM (and, with TLS, SIGHUP) handlers. Files come first, then the store: bad
    /// certificate files, or a database that is damaged, foreign, newer or in use, stop the start
    /// before the port is taken.
    pub fn bind(config: Config) -> Result<Self, StartError> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let tls_config = tls
            .as_ref()
            .map(TlsFiles::load)
            .transpose()
            .map_err(StartError::Tls)?;
        let mut poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), STORE)?);
        let wake = Box::new(move || {
            // Only fails if the poll is gone, when nobody is left to wake.
            let _ = waker.wake();
        });
        let keep_per_room = usize::try_from(config.retain_messages)
            .ok()
            .and_then(NonZeroUsize::new)
            .unwrap_or(NonZeroUsize::MIN);
        let node = config
            .node
            .clone()
            .unwrap_or_else(|| format!("{:012x}", os_random() >> 80));
        let (backend, epoch) = match &config.redis {
            None => {
                let (store, info) = SqliteStore::open(&config.db, SqliteOptions { keep_per_room }, wake)
                    .map_err(StartError::Store)?;
                info!(
                    "message store {}: epoch {}, last id {}",
                    config.db.display(),
                    info.epoch,
                    info.last_id
                );
                let backend = Backend::Local {
                    store,
                    coordination: Coordination::new(),
                    commit_clock: CommitClock::default(),
                };
                (backend, info.epoch.to_string())
            }
            Some(url) => {
                let mut redis =
                    RedisConfig::from_url(url).map_err(|error| StartError::Redis(error.to_string()))?;
                redis.keep_per_room = keep_per_room.get();
                redis.pipeline = !config.redis_no_pipeline;
                let backend = connect_redis(&mut poll, &redis, &node)?;
                let epoch = backend
                    .store
                    .epoch()
                    .map(|epoch| epoch.to_string())
                    .unwrap_or_default();
                info!(
                    "message store redis://{}/{}: epoch {epoch}, node {node}",
                    redis.address(),
                    redis.db
                );
                (Backend::Redis(Box::new(backend)), epoch)
            }
        };
        let mut listener = listen(config.listen, config.reuse_port)?;
        poll.registry()
            .register(&mut listener, LISTENER, MioInterest::READABLE)?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                let mut metrics = listen(addr, false)?;
                poll.registry()
                    .register(&mut metrics, METRICS_LISTENER, MioInterest::READABLE)?;
                info!("metrics on http://{}/metrics", metrics.local_addr()?);
                Some(metrics)
            }
            None => None,
        };
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        if tls.is_some() {
            // Only with TLS: a plain server keeps SIGHUP's default (a hang-up ends it).
            signals.add_signal(SIGHUP)?;
        }
        // A file-size limit (ulimit -f) reached by the store must fail that write, which the store
        // reports as `store_unavailable`, not kill the server: SIGXFSZ gets a handler that does
        // nothing, and the write then fails with EFBIG.
        signal_hook::flag::register(SIGXFSZ, Arc::new(std::sync::atomic::AtomicBool::new(false)))?;
        poll.registry()
            .register(&mut signals, SIGNALS, MioInterest::READABLE)?;
        let mut hub = Hub::new(config.hub(), epoch, Box::new(os_random), clock().instant);
        hub.set_node(&node);
        let mut driver = Driver::new(config.stack(), hub, config.max_connections);
        if let Some(tls_config) = tls_config {
            driver.set_tls(tls_config);
        }
        Ok(Self {
            poll,
            listener: Some(listener),
            metrics_listener,
            signals,
            driver,
            backend,
            shutdown_deadline: None,
            tls,
        })
    }

    /// Whether the server speaks TLS (`https://`, `wss://`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
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
                info!(
                    "socket bytes in/out by protocol: {}",
                    self.driver.hub().metrics().wire_summary()
                );
                self.close_store(now);
                return Ok(());
            }
            let redis_timeout = match &self.backend {
                Backend::Redis(redis) => redis.store.poll_timeout(),
                Backend::Local { .. } => None,
            };
            let wake = [
                self.driver.poll_timeout(now.instant),
                self.shutdown_deadline,
                redis_timeout,
            ]
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
                        if let Backend::Local {
                            store, commit_clock, ..
                        } = &mut self.backend
                        {
                            for outcome in store.try_results() {
                                if let Some(latency) = commit_clock.answered(&outcome, now.instant) {
                                    self.driver.hub_mut().metrics_mut().store_commit(latency);
                                }
                                self.driver.store_outcome(outcome, now);
                            }
                        }
                    }
                    token @ (REDIS_LINK | REDIS_SUB) => {
                        if let Backend::Redis(redis) = &mut self.backend {
                            redis.drive(self.poll.registry(), Some(token), now.instant);
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
            match &mut self.backend {
                Backend::Local { .. } => {
                    let commands = self.settle_coordination(now);
                    self.register();
                    self.submit_local(commands, now);
                }
                Backend::Redis(_) => {
                    self.settle_redis(now);
                    self.register();
                }
            }
        }
    }

    /// Everything the chat asked of the store this turn goes to the writer in one batch: one
    /// commit.
    fn submit_local(&mut self, commands: Vec<Command>, now: Now) {
        let Backend::Local {
            store, commit_clock, ..
        } = &mut self.backend
        else {
            return;
        };
        if !commands.is_empty() {
            commit_clock.submitted(&commands, now.instant);
            if let Err(error) = store.submit(commands) {
                // The writer is gone; its handle answers every command with this error.
                warn!("message store: {error}");
                self.driver.hub_mut().store_failed(error.to_string());
            }
        }
    }

    /// Hands the turn's commands to Redis (pipelined: one write per connection per pass), runs
    /// its timers, and feeds back what it answered, until the chat asks for no more this turn.
    fn settle_redis(&mut self, now: Now) {
        let Backend::Redis(redis) = &mut self.backend else {
            return;
        };
        if redis.store.poll_timeout().is_some_and(|at| at <= now.instant) {
            redis.store.handle_timeout(now.instant);
        }
        loop {
            let commands = self.driver.take_store_commands();
            for command in commands {
                redis.store.execute(command, now.instant);
            }
            redis.drive(self.poll.registry(), None, now.instant);
            self.driver.hub_mut().store_health(redis.store.health());
            let mut answered = false;
            while let Some(outcome) = redis.store.poll_outcome() {
                answered = true;
                self.driver.store_outcome(outcome, now);
            }
            if !answered && !self.driver.hub().has_store_commands() {
                return;
            }
            self.driver.end_turn(now);
        }
    }

    /// The end: SQLite commits what it still has queued; Redis is told this node is gone (its
    /// members unlisted and its leases given back at once).
    fn close_store(&mut self, now: Now) {
        match &mut self.backend {
            Backend::Local { store, .. } => {
                if let Err(error) = store.close() {
                    warn!("message store: {error}");
                }
                let stats = store.stats();
                info!(
                    "message store: {} messages in {} commits ({:.1} per commit, at most {}), {} failed commits, {} pruned",
                    stats.messages,
                    stats.commits,
                    stats.messages as f64 / stats.commits.max(1) as f64,
                    stats.largest_commit,
                    stats.failed_commits,
                    stats.pruned
                );
            }
            Backend::Redis(redis) => {
                redis.store.shutdown(now.instant);
                redis.drive(self.poll.registry(), None, now.instant);
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
                } else if let Backend::Local { coordination, .. } = &mut self.backend {
                    coordination.execute(command, now.instant, &mut outcomes);
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
        if received.contains(&SIGHUP) {
            self.reload_tls();
        }
        if !received
            .iter()
            .any(|&signal| signal == SIGINT || signal == SIGTERM)
            || self.shutdown_deadline.is_some()
        {
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

impl Server {
    /// SIGHUP: reads the certificate and key again. New connections are served the new ones; open
    /// connections keep what they negotiated. A failed reload changes nothing.
    fn reload_tls(&mut self) {
        let Some(files) = &self.tls else {
            return;
        };
        match files.load() {
            Ok(config) => {
                self.driver.set_tls(config);
                info!(
                    "SIGHUP: reloaded TLS certificate {} and key {}",
                    files.cert.display(),
                    files.key.display()
                );
            }
            Err(error) => warn!("SIGHUP: reload failed, keeping the current certificate: {error}"),
        }
    }
}

/// Connects to Redis and waits (a few seconds at most) until it is usable: the scripts loaded, the
/// epoch read, the subscription up. A start against a Redis that is not there, or not Redis, stops
/// with one line rather than serve a chat that cannot store anything.
fn connect_redis(poll: &mut Poll, config: &RedisConfig, node: &str) -> Result<RedisBackend, StartError> {
    let start = clock().instant;
    let seed = os_random() as u64;
    let mut backend = RedisBackend::new(config, node, seed, [REDIS_LINK, REDIS_SUB], start);
    let mut events = Events::with_capacity(16);
    let mut ready = None;
    loop {
        let now = clock().instant;
        backend.drive(poll.registry(), ready.take(), now);
        for event in events.iter() {
            backend.drive(poll.registry(), Some(event.token()), now);
        }
        if backend.store.epoch().is_some() && backend.store.health().is_ok() {
            return Ok(backend);
        }
        if now >= start + REDIS_START_TIMEOUT {
            let why = backend
                .store
                .health()
                .err()
                .unwrap_or_else(|| "no epoch read".to_owned());
            return Err(StartError::Redis(format!(
                "no usable Redis at {} within {:?}: {why}",
                config.address(),
                REDIS_START_TIMEOUT
            )));
        }
        if backend.store.poll_timeout().is_some_and(|at| at <= now) {
            backend.store.handle_timeout(now);
        }
        // Short waits: the connections' own timers (connect timeout, backoff) run meanwhile.
        let wait = backend
            .store
            .poll_timeout()
            .map_or(START_POLL, |at| at.saturating_duration_since(now).min(START_POLL));
        poll.poll(&mut events, Some(wait))?;
    }
}

/// The longest single wait while the start waits for Redis.
const START_POLL: Duration = Duration::from_millis(50);

/// Connections the kernel may hold for us to accept. mio's `bind` asks for 128, which a burst of
/// clients (a reconnect storm after a restart, a benchmark opening thousands) overflows: the
/// dropped SYNs are retried only after a second. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

/// A non-blocking listening socket with `SO_REUSEADDR` (restarts do not wait out TIME_WAIT), and
/// `SO_REUSEPORT` if asked (several processes on one address, the kernel spreading connections).
fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}
