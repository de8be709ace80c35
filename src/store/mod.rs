//! The durable message store: what the chat may ask of storage, and what it is told back.
//!
//! The chat never calls a database. Like bytes and time, storage is an input: the chat emits
//! [`Command`]s (owned values, `Send`), the event loop hands one turn's worth to the store in a
//! single [`StoreHandle::submit`], and the answers come back later as [`Outcome`]s, read without
//! blocking by [`StoreHandle::try_results`] after the store called the loop's wake-up callback.
//!
//! One writer thread owns the storage connection. Each time it wakes it takes *every* command
//! queued so far and commits all their appends in one transaction (group commit): under load one
//! disk flush acknowledges many messages, and a quiet server still answers a lone message after one
//! flush. The thread then sends all the turn's outcomes and calls the wake-up callback once.
//!
//! Every implementation ([`sqlite`] behind a writer thread, [`redis`] in the event loop, and
//! [`memory`] for tests) keeps these promises:
//!
//! - **Durable before acked.** An [`Appended`] outcome is sent only after the transaction that holds
//!   the message is on disk. A batch either commits whole or every message in it fails with the
//!   same [`StoreError`]; nothing is ever partly acknowledged. (Redis: as durable as its
//!   `appendfsync` setting; see [`redis`].)
//! - **Ids strictly increase** across restarts and are never reused, even after their message was
//!   pruned, so "messages after id N" means the same thing before and after a restart.
//! - **Exactly once.** A message carrying an [`IdempotencyKey`] its room already accepted is not
//!   stored again; the sender is told [`Appended::Duplicate`] with the original id. A key lives as
//!   long as its message.
//! - **One outcome per token, in submission order**, including failures.
//! - **Retention.** Each room keeps its newest N messages; older ones are pruned in the background.
//! - **One history per [`Epoch`].** The epoch is drawn at random when the store is created and never
//!   changes; a client that sees a different epoch knows its ids refer to another history.
//!
//! ## The feed: one order per room
//!
//! A stored message is not shown by the one who stored it. Every store also *announces* what it
//! stored, as [`Outcome::Posted`] carrying the id of the room's previous message, and the chat shows
//! a message to its room only when the announcement arrives. With one process that is the writer
//! thread telling the loop right after its commit; with many processes sharing Redis it is Redis's
//! pub/sub, heard by every process. So every client of a room, on every process, sees the room's
//! messages in the one order the store gave them, and a process that notices a hole (an
//! announcement whose previous id is not the last it showed) reads the hole from the history before
//! showing more ([`Range::Since`]; [`Page::prev`] says whether the history still reaches back to it).
//! A process *follows* the rooms its clients are in ([`Command::Follow`]); [`Outcome::Following`]
//! says "from here on you hear every announcement; read what came before".
//!
//! ## Coordination: what many processes must agree on
//!
//! Besides messages, the chat asks the store for the rules that hold across processes, so that one
//! code path serves one process and many ([`local::Coordination`] keeps them in memory for one
//! process; [`redis`] keeps them in Redis for many):
//!
//! - **Nicknames are leases** ([`Command::Claim`], [`Command::Release`]): exactly one owner at a
//!   time, whole cluster. A store that holds them remotely renews them; if it cannot, it says so
//!   ([`Outcome::LeaseLost`]) and the chat closes that client.
//! - **Presence** ([`Command::Present`], [`Command::Absent`], [`Command::Members`]): who is in a room
//!   on every process; [`Outcome::PresenceChanged`] says a room's list should be read again.
//! - **Resume tokens** ([`Command::PutToken`], [`Command::TakeToken`]): a session's name and room,
//!   taken once, by any process; [`Command::Evict`] asks the process holding a taken-over session to
//!   close it ([`Outcome::Evicted`]).
//! - **Epoch changes** ([`Outcome::Epoch`]): the store lost its data and started another history.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

pub mod local;
pub mod memory;
pub mod redis;
pub mod sqlite;

/// The caller's name for one message or read, echoed in its [`Outcome`].
pub type Token = u64;

/// Longest idempotency key, in bytes. A client-made UUID (36) or ULID (26) fits with room to spare;
/// the bound keeps the per-room key index small.
pub const MAX_KEY_LEN: usize = 64;

/// Most messages one read returns, whatever `limit` asks: one answer must not hold a whole room in
/// memory. The chat's own pages (welcome history, scroll-back) are far smaller.
pub const MAX_PAGE_LEN: usize = 1000;

/// A client's idempotency key: 1 to [`MAX_KEY_LEN`] printable ASCII characters (`' '` to `'~'`).
///
/// Checked once, here, so a store never sees a key it would have to reject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn new(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong { len: key.len() });
        }
        if let Some(position) = key.bytes().position(|byte| !(b' '..=b'~').contains(&byte)) {
            return Err(KeyError::NotPrintableAscii { position });
        }
        Ok(Self(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a string is not an [`IdempotencyKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    Empty,
    TooLong {
        len: usize,
    },
    /// The byte at `position` is a control character or not ASCII.
    NotPrintableAscii {
        position: usize,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "an idempotency key cannot be empty"),
            Self::TooLong { len } => {
                write!(
                    f,
                    "an idempotency key is at most {MAX_KEY_LEN} bytes, this one has {len}"
                )
            }
            Self::NotPrintableAscii { position } => {
                write!(f, "an idempotency key is printable ASCII; byte {position} is not")
            }
        }
    }
}

impl std::error::Error for KeyError {}

/// A message to append. The store gives it its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub token: Token,
    pub room: String,
    pub nickname: String,
    pub text: String,
    /// Unix time in milliseconds when the server accepted it.
    pub ts: u64,
    pub key: Option<IdempotencyKey>,
    /// The sender's nickname lease: a store that keeps leases refuses the message unless this owner
    /// still holds it ([`StoreError::NotOwner`]). `None`: no check.
    pub lease: Option<LeaseRef>,
}

/// A nickname lease and the owner that claims to hold it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseRef {
    /// The nickname's comparison key ([`crate::chat::names::NameKey`]): look-alikes share it.
    pub key: String,
    /// Who holds it: a session, named uniquely across processes (`<node>.<session>`).
    pub owner: String,
}

/// A message as the store holds it. Its idempotency key stays inside the store: it is the sender's
/// business, and a key shown to the room could be replayed by another member to mask a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: u64,
    pub room: String,
    pub nickname: String,
    pub text: String,
    pub ts: u64,
}

/// One piece of a turn's work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Store these messages; each gets its own [`Outcome::Append`], and each one stored is also
    /// announced ([`Outcome::Posted`]) to those following its room.
    Append(Vec<NewMessage>),
    /// Read part of a room's history; answered by one [`Outcome::Read`].
    Read(Read),
    /// Announce the room's messages to this process from now on; answered (now, and again after
    /// any interruption) by [`Outcome::Following`].
    Follow { room: String },
    /// Stop announcing the room's messages to this process. No outcome.
    Unfollow { room: String },
    /// Take a nickname's lease; answered by [`Outcome::Claim`].
    Claim(Claim),
    /// Give a lease back, if `owner` holds it. No outcome.
    Release(LeaseRef),
    /// `owner` (a session) is in `room` under `nickname` (also: its nickname changed). No outcome.
    Present {
        room: String,
        owner: String,
        nickname: String,
    },
    /// `owner` left `room`. No outcome.
    Absent { room: String, owner: String },
    /// Who is in the room, on every process; answered by [`Outcome::Members`].
    Members { token: Token, room: String },
    /// Remember what a resume token stands for. `live`: its session is running, so the token is
    /// kept as long as it runs (a store shared by processes renews it); otherwise it is kept for
    /// `ttl`. No outcome.
    PutToken {
        resume: String,
        session: Resumable,
        ttl: Duration,
        live: bool,
    },
    /// Take what a resume token stands for, and forget it (a token works once); answered by
    /// [`Outcome::Token`].
    TakeToken { token: Token, resume: String },
    /// Forget a resume token. No outcome.
    DropToken { resume: String },
    /// The session `owner` was taken over by a resume elsewhere: the process that holds it closes
    /// it ([`Outcome::Evicted`] there). No outcome here.
    Evict { owner: String },
}

impl Command {
    /// Whether the command is about stored messages (appends, reads), as opposed to coordination.
    pub fn is_storage(&self) -> bool {
        matches!(self, Self::Append(_) | Self::Read(_))
    }
}

/// A request for a nickname's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub token: Token,
    /// The nickname wanted, or `None` for the next free anonymous one (`Anonymous<N>`).
    pub nickname: Option<Nickname>,
    /// The session that would hold it.
    pub owner: String,
    /// A session whose lease this one may take over (a resume).
    pub replacing: Option<String>,
}

/// A nickname as shown, and its comparison key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nickname {
    pub display: String,
    pub key: String,
}

/// What a claim got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The owner holds the lease of this nickname now.
    Held { nickname: String },
    /// Another owner holds it.
    Taken,
}

/// The first anonymous nickname a store gives, and the form of all of them.
pub fn anonymous_nickname(number: u64) -> String {
    format!("Anonymous{number}")
}

/// What a resume token stands for: a session's nickname, room and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumable {
    pub nickname: String,
    pub room: String,
    pub owner: String,
}

/// One member of a room, on some process.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub owner: String,
    pub nickname: String,
}

/// A stored message, announced to the processes following its room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub message: StoredMessage,
    /// The id of the room's message before this one (0: none).
    pub prev_id: u64,
    /// The token of the [`NewMessage`] if this process stored it.
    pub origin: Option<Token>,
}

/// A read of one room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub token: Token,
    pub room: String,
    pub range: Range,
    /// Most messages wanted (capped at [`MAX_PAGE_LEN`]). Zero asks only whether any exist.
    pub limit: usize,
}

/// Which messages of the room a [`Read`] wants. Every page lists them oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// The oldest `limit` messages with an id above this one (catching up after a reconnect).
    Since(u64),
    /// The newest `limit` messages with an id below this one (scrolling back).
    Before(u64),
    /// The newest `limit` messages (a welcome the chat's cache could not serve).
    Latest,
}

/// What the store did with one command (or one message of an append), or what it tells of its own
/// accord (the feed, and the coordination's news).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Append {
        token: Token,
        result: Result<Appended, StoreError>,
    },
    Read {
        token: Token,
        result: Result<Page, StoreError>,
    },
    Claim {
        token: Token,
        result: Result<Claimed, StoreError>,
    },
    Members {
        token: Token,
        result: Result<Vec<Member>, StoreError>,
    },
    /// What a resume token stood for; `None` if it is unknown, expired or already taken.
    Token {
        token: Token,
        result: Result<Option<Resumable>, StoreError>,
    },
    /// A message stored in a followed room.
    Posted(Posted),
    /// Announcements of `room` reach this process from here on; anything stored before may have
    /// been missed (read it).
    Following { room: String },
    /// The room's members may have changed on another process: read them again.
    PresenceChanged { room: String },
    /// The store could not keep `owner`'s lease: somebody else may hold the nickname now.
    LeaseLost { owner: String },
    /// The session `owner` was resumed elsewhere: close it.
    Evicted { owner: String },
    /// The store's data is another history now (lost, flushed): ids known before mean nothing.
    Epoch(Epoch),
}

impl Outcome {
    /// The token of the command this answers; `None` for what the store tells of its own accord.
    pub fn token(&self) -> Option<Token> {
        match self {
            Self::Append { token, .. }
            | Self::Read { token, .. }
            | Self::Claim { token, .. }
            | Self::Members { token, .. }
            | Self::Token { token, .. } => Some(*token),
            Self::Posted(_)
            | Self::Following { .. }
            | Self::PresenceChanged { .. }
            | Self::LeaseLost { .. }
            | Self::Evicted { .. }
            | Self::Epoch(_) => None,
        }
    }
}

/// A message that is durably stored, now or before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Stored {
        id: u64,
    },
    /// The room already had a message with this key: nothing was stored, `id` is the original's.
    Duplicate {
        id: u64,
    },
}

impl Appended {
    pub fn id(self) -> u64 {
        match self {
            Self::Stored { id } | Self::Duplicate { id } => id,
        }
    }
}

/// The answer to a [`Read`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// Oldest first.
    pub messages: Vec<StoredMessage>,
    /// Whether the room holds further messages in the direction read (newer for `Since`, older for
    /// `Before` and `Latest`), so the client knows whether to ask again.
    pub more: bool,
    /// The id of the room's message before the first one of the page (0: none), if the store
    /// knows it. A `Since(n)` page whose `prev` is above `n` starts after a hole: the messages in
    /// between were pruned. `None`: the store cannot tell.
    pub prev: Option<u64>,
}

/// Why a command failed at run time. The store keeps running: a later turn may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The disk (or a size limit) is full.
    DiskFull,
    /// The database can no longer be written (file, directory or filesystem made read-only).
    ReadOnly,
    /// The operating system reported an I/O error.
    Io(String),
    /// The stored data is damaged.
    Corrupt(String),
    /// The writer thread is gone; nothing more will be stored.
    Stopped,
    /// The test hook [`StoreHandle::simulate_disk_failure`] is on.
    SimulatedFailure,
    /// The sender does not hold its nickname's lease (it expired, or another session took it).
    NotOwner,
    /// Anything else the storage engine reported.
    Other(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DiskFull => write!(f, "message store unavailable: the disk is full"),
            Self::ReadOnly => write!(f, "message store unavailable: the database became read-only"),
            Self::Io(detail) => write!(f, "message store unavailable: I/O error ({detail})"),
            Self::Corrupt(detail) => write!(f, "message store unavailable: damaged data ({detail})"),
            Self::Stopped => write!(f, "message store unavailable: its writer thread has stopped"),
            Self::SimulatedFailure => write!(f, "message store unavailable: simulated disk failure"),
            Self::NotOwner => write!(f, "refused: the sender no longer holds its nickname"),
            Self::Other(detail) => write!(f, "message store unavailable: {detail}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Why a store could not be opened. Every variant leaves the existing file as it was: a store never
/// starts empty on top of data it could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The path cannot be opened or created (missing directory, permissions, a directory itself).
    CannotOpen { path: String, detail: String },
    /// The file exists but is not a database (or its header is destroyed).
    NotADatabase { path: String },
    /// The file is a database whose structure is damaged.
    Corrupt { path: String, detail: String },
    /// A database that belongs to another program: it has content but not wschat's marks.
    Foreign { path: String },
    /// Written by a newer wschat: this one cannot know what its schema means.
    NewerSchema {
        path: String,
        found: u32,
        supported: u32,
    },
    /// Another running wschat (or another handle in this process) has it open.
    Locked { path: String },
    /// The file cannot be written (permissions or a read-only filesystem).
    ReadOnly { path: String },
    /// Upgrading an older schema failed; the upgrade was rolled back.
    Migration {
        path: String,
        from: u32,
        to: u32,
        detail: String,
    },
    /// The operating system gave no random bytes for a new store's epoch.
    Random { detail: String },
    /// The writer thread could not be started.
    Thread { detail: String },
    /// Anything else the storage engine reported while opening.
    Other { path: String, detail: String },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CannotOpen { path, detail } => write!(f, "cannot open message store {path}: {detail}"),
            Self::NotADatabase { path } => {
                write!(
                    f,
                    "message store {path} is not a database (or its header is destroyed); left untouched"
                )
            }
            Self::Corrupt { path, detail } => {
                write!(f, "message store {path} is damaged ({detail}); left untouched")
            }
            Self::Foreign { path } => {
                write!(
                    f,
                    "{path} is a database of another program, not a wschat message store; left untouched"
                )
            }
            Self::NewerSchema {
                path,
                found,
                supported,
            } => write!(
                f,
                "message store {path} has schema version {found}, newer than the {supported} this wschat knows"
            ),
            Self::Locked { path } => {
                write!(f, "message store {path} is in use by another running wschat")
            }
            Self::ReadOnly { path } => write!(f, "message store {path} cannot be written (read-only)"),
            Self::Migration {
                path,
                from,
                to,
                detail,
            } => write!(
                f,
                "upgrading message store {path} from schema {from} to {to} failed ({detail}); left as it was"
            ),
            Self::Random { detail } => {
                write!(f, "no random bytes for a new message store's epoch: {detail}")
            }
            Self::Thread { detail } => write!(f, "cannot start the message store's writer thread: {detail}"),
            Self::Other { path, detail } => write!(f, "opening message store {path} failed: {detail}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// A store's identity: drawn from the OS random source when the store is created, fixed for its
/// life. Shown as 16 hex digits; send it to clients as that string, since a JSON number above 2^53
/// loses digits in JavaScript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(pub u64);

impl Epoch {
    /// A new epoch from the operating system's random source.
    pub fn random() -> Result<Self, OpenError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|error| OpenError::Random {
            detail: error.to_string(),
        })?;
        Ok(Self(u64::from_le_bytes(bytes)))
    }

    /// Reads the 16-hex-digit form back.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 16 {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(Self)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What the loop learns when a store opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenInfo {
    pub epoch: Epoch,
    /// The highest id ever given (0 for a new store); the next message gets a higher one.
    pub last_id: u64,
    /// The schema version the store has now.
    pub schema: u32,
    /// The version it was upgraded from during this open, if it was.
    pub migrated_from: Option<u32>,
}

/// Counters since open. Messages per commit is `messages / commits`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Committed transactions that carried at least one append.
    pub commits: u64,
    /// Messages in those transactions (stored or found duplicate).
    pub messages: u64,
    /// Most messages one commit carried.
    pub largest_commit: u64,
    /// Transactions with appends that failed (every message in them was answered with an error).
    pub failed_commits: u64,
    /// Messages removed by retention.
    pub pruned: u64,
    /// Pruning steps that failed (each is retried after the next successful commit).
    pub prune_failures: u64,
}

/// Called by the writer thread after it sent a turn's outcomes. The event loop passes something
/// that wakes its poll (a `mio::Waker`); the store knows nothing of mio.
pub type Wake = Box<dyn Fn() + Send>;

/// State the loop's handle shares with the writer thread.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    commits: AtomicU64,
    messages: AtomicU64,
    largest_commit: AtomicU64,
    failed_commits: AtomicU64,
    pruned: AtomicU64,
    prune_failures: AtomicU64,
    simulate_failure: AtomicBool,
}

impl Shared {
    pub(crate) fn record_commit(&self, messages: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.largest_commit.fetch_max(messages, Ordering::Relaxed);
    }

    pub(crate) fn record_failed_commit(&self) {
        self.failed_commits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_pruned(&self, messages: u64) {
        self.pruned.fetch_add(messages, Ordering::Relaxed);
    }

    pub(crate) fn record_prune_failure(&self) {
        self.prune_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether every write transaction must fail now (the test hook).
    pub(crate) fn failure_simulated(&self) -> bool {
        self.simulate_failure.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> StoreStats {
        StoreStats {
            commits: self.commits.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
            largest_commit: self.largest_commit.load(Ordering::Relaxed),
            failed_commits: self.failed_commits.load(Ordering::Relaxed),
            pruned: self.pruned.load(Ordering::Relaxed),
            prune_failures: self.prune_failures.load(Ordering::Relaxed),
        }
    }
}

/// What a storage implementation does on the writer thread. The thread itself (queue, group
/// commit, wake-ups, background work, shutdown) is [`StoreHandle::start`], the same for all.
pub(crate) trait Backend: Send + 'static {
    /// Runs one turn's commands in order, all appends in one transaction; returns one outcome per
    /// token, in order.
    fn run_turn(&mut self, commands: Vec<Command>, shared: &Shared) -> Vec<Outcome>;

    /// Whether background work (such as pruning) is waiting.
    fn upkeep_pending(&self) -> bool;

    /// One small, bounded step of background work.
    fn upkeep(&mut self, shared: &Shared);
}

/// Under sustained load the writer never finds its queue empty; after this many busy turns it
/// does one step of background work anyway, so retention cannot starve. One step per 8 commits
/// costs at most one extra transaction in 9.
const UPKEEP_EVERY_BUSY_TURNS: u32 = 8;

/// The event loop's side of a store: submit one turn's commands, collect outcomes.
pub struct StoreHandle {
    commands: Option<Sender<Vec<Command>>>,
    outcomes: Receiver<Vec<Outcome>>,
    /// Failures made by `submit` itself when the writer is gone, handed out by `try_results`.
    stranded: Vec<Outcome>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl StoreHandle {
    /// Starts the writer thread that owns `backend`.
    pub(crate) fn start(backend: impl Backend, wake: Wake) -> Result<Self, OpenError> {
        let (command_sender, command_receiver) = mpsc::channel();
        let (outcome_sender, outcome_receiver) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("wschat-store".to_owned())
            .spawn(move || writer_loop(backend, &command_receiver, &outcome_sender, &wake, &writer_shared))
            .map_err(|error| OpenError::Thread {
                detail: error.to_string(),
            })?;
        Ok(Self {
            commands: Some(command_sender),
            outcomes: outcome_receiver,
            stranded: Vec::new(),
            shared,
            writer: Some(writer),
        })
    }

    /// Queues one loop turn's commands (one channel send). Never blocks. If the writer thread is
    /// gone, every token is answered at once with [`StoreError::Stopped`] (through `try_results`)
    /// and the same error is returned.
    pub fn submit(&mut self, commands: Vec<Command>) -> Result<(), StoreError> {
        if commands.is_empty() {
            return Ok(());
        }
        let Some(sender) = &self.commands else {
            return Err(self.strand(commands));
        };
        sender.send(commands).map_err(|returned| self.strand(returned.0))
    }

    fn strand(&mut self, commands: Vec<Command>) -> StoreError {
        self.stranded.extend(fail_all(&commands, &StoreError::Stopped));
        StoreError::Stopped
    }

    /// Every outcome that has arrived, in submission order. Never blocks.
    pub fn try_results(&mut self) -> impl Iterator<Item = Outcome> + '_ {
        let stranded = std::mem::take(&mut self.stranded);
        self.outcomes.try_iter().flatten().chain(stranded)
    }

    pub fn stats(&self) -> StoreStats {
        self.shared.snapshot()
    }

    /// **For tests.** While on, every transaction that would write (appends, pruning) fails as
    /// if the disk had refused it: it rolls back and each message in it is answered with
    /// [`StoreError::SimulatedFailure`]. Reads still work. Compiled always so integration tests
    /// and the bench can reach it; the server never calls it.
    pub fn simulate_disk_failure(&self, on: bool) {
        self.shared.simulate_failure.store(on, Ordering::Relaxed);
    }

    /// Finishes every queued command, stops the writer and closes storage. Outcomes of the
    /// finished work are still readable by `try_results` until the handle is dropped. Returns
    /// [`StoreError::Stopped`] if the writer had died.
    pub fn close(&mut self) -> Result<(), StoreError> {
        // Closing the channel is the writer's signal to stop once the queue is empty.
        self.commands = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Err(_)) => Err(StoreError::Stopped),
            Some(Ok(())) | None => Ok(()),
        }
    }
}

impl Drop for StoreHandle {
    fn drop(&mut self) {
        // A writer that panicked has nobody left to tell.
        let _ = self.close();
    }
}

impl fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreHandle")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The same error for every token of `commands`, in order.
pub(crate) fn fail_all(commands: &[Command], error: &StoreError) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for command in commands {
        match command {
            Command::Append(messages) => outcomes.extend(messages.iter().map(|message| Outcome::Append {
                token: message.token,
                result: Err(error.clone()),
            })),
            Command::Read(read) => outcomes.push(Outcome::Read {
                token: read.token,
                result: Err(error.clone()),
            }),
            Command::Claim(claim) => outcomes.push(Outcome::Claim {
                token: claim.token,
                result: Err(error.clone()),
            }),
            Command::Members { token, .. } => outcomes.push(Outcome::Members {
                token: *token,
                result: Err(error.clone()),
            }),
            Command::TakeToken { token, .. } => outcomes.push(Outcome::Token {
                token: *token,
                result: Err(error.clone()),
            }),
            Command::Follow { .. }
            | Command::Unfollow { .. }
            | Command::Release(_)
            | Command::Present { .. }
            | Command::Absent { .. }
            | Command::PutToken { .. }
            | Command::DropToken { .. }
            | Command::Evict { .. } => {}
        }
    }
    outcomes
}

/// The writer thread: wait for commands, take everything queued, run it as one turn, answer,
/// wake the loop once; background work when the queue is empty. Returns when the handle closed
/// the channel and the queue is drained.
fn writer_loop(
    mut backend: impl Backend,
    commands: &Receiver<Vec<Command>>,
    outcomes: &Sender<Vec<Outcome>>,
    wake: &Wake,
    shared: &Shared,
) {
    let mut busy_turns = 0;
    loop {
        let first = if backend.upkeep_pending() {
            match commands.try_recv() {
                Ok(first) => first,
                Err(TryRecvError::Empty) => {
                    backend.upkeep(shared);
                    busy_turns = 0;
                    continue;
                }
                Err(TryRecvError::Disconnected) => return,
            }
        } else {
            match commands.recv() {
                Ok(first) => first,
                Err(_) => return,
            }
        };
        let mut turn = first;
        // Group commit: everything that arrived while the last turn ran goes into this one.
        while let Ok(more) = commands.try_recv() {
            turn.extend(more);
        }
        let answers = backend.run_turn(turn, shared);
        // The handle is gone only while closing; nobody is left to read then.
        if !answers.is_empty() && outcomes.send(answers).is_ok() {
            wake();
        }
        busy_turns += 1;
        if busy_turns >= UPKEEP_EVERY_BUSY_TURNS && backend.upkeep_pending() {
            backend.upkeep(shared);
            busy_turns = 0;
        }
    }
}

#[cfg(test)]
mod tests;
