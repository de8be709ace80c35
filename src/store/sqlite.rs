//! The message store in one SQLite file, written by one thread.
//!
//! ## Schema (version 2)
//!
//! ```sql
//! CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);   -- 'epoch' → 16 hex digits
//! CREATE TABLE messages (
//!     id       INTEGER PRIMARY KEY AUTOINCREMENT,
//!     room     TEXT NOT NULL,
//!     nickname TEXT NOT NULL,
//!     text     TEXT NOT NULL,
//!     ts       INTEGER NOT NULL,                 -- unix ms
//!     key      TEXT                              -- since version 2
//! );
//! CREATE INDEX messages_by_room ON messages (room, id);
//! CREATE UNIQUE INDEX messages_key_per_room ON messages (room, key) WHERE key IS NOT NULL;
//! ```
//!
//! The file is marked as wschat's by `PRAGMA application_id` and carries its schema version in
//! `PRAGMA user_version` (both live in the 100-byte file header, so they can be read before
//! trusting anything else in the file). Version N+1 is reached from N by `MIGRATIONS[N]`; an open
//! runs every step the file is missing, in one transaction with the new version number.
//!
//! ## Choices
//!
//! - **Ids: `AUTOINCREMENT`.** A plain `INTEGER PRIMARY KEY` hands out `max(id) + 1`, which gives an
//!   id again once the newest message is gone (a room deleted, a message taken down). With
//!   `AUTOINCREMENT` SQLite keeps the highest id ever used in `sqlite_sequence`, inside the same
//!   transactions, so ids only grow, across restarts and deletions alike. The price is one more row
//!   write per commit. Ids of a batch that failed were never acknowledged and may be used again.
//! - **Locking: `locking_mode=EXCLUSIVE`** set before the first read. In WAL mode SQLite then takes
//!   the file's exclusive lock on first access and keeps it until the connection closes (and uses no
//!   shared-memory file), so a second wschat, or a second handle in this process, gets
//!   `SQLITE_BUSY` at once ([`LOCK_WAIT`] is zero) and reports [`OpenError::Locked`]. The lock is a
//!   POSIX lock: the kernel drops it when the process dies, so a crash never leaves a stale lock.
//! - **Durability: WAL with `synchronous=FULL`**: every commit fsyncs the log before `COMMIT`
//!   returns, and outcomes are sent only after that.
//! - **Pruning** (retention) runs between turns, on the writer thread, one room and at most
//!   [`PRUNE_CHUNK`] messages per transaction. It runs whenever the queue is found empty, and
//!   under sustained load after every few turns anyway (see `UPKEEP_EVERY_BUSY_TURNS`); a room
//!   can hold more than its quota until then. Rooms become due when they are appended to, and every
//!   room is due once after open (the quota may have been lowered). A failed pruning step waits
//!   for the next successful commit before trying again, so a broken disk is not hammered.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use log::warn;
use rusqlite::{
    Connection, ErrorCode, MAIN_DB, OpenFlags, OptionalExtension, Row, TransactionBehavior, params,
};

use super::{
    Appended, Backend, Command, Epoch, MAX_PAGE_LEN, NewMessage, OpenError, OpenInfo, Outcome, Page, Posted,
    Range, Read, Shared, StoreError, StoreHandle, StoredMessage, Wake, fail_all,
};

/// Marks a file as a wschat store in the SQLite header ("wsch" in ASCII).
pub const APPLICATION_ID: i32 = 0x7773_6368;

/// One schema upgrade, from the version equal to its index in [`MIGRATIONS`] to the next.
struct Migration {
    sql: &'static str,
}

/// Every schema step, oldest first. Append new steps; never edit one that has shipped.
const MIGRATIONS: &[Migration] = &[
    // 0 → 1: the in-memory chat's history, made durable.
    Migration {
        sql: "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
              CREATE TABLE messages (
                  id INTEGER PRIMARY KEY AUTOINCREMENT,
                  room TEXT NOT NULL,
                  nickname TEXT NOT NULL,
                  text TEXT NOT NULL,
                  ts INTEGER NOT NULL
              );
              CREATE INDEX messages_by_room ON messages (room, id);",
    },
    // 1 → 2: client idempotency keys, unique per room (messages of version 1 have none).
    Migration {
        sql: "ALTER TABLE messages ADD COLUMN key TEXT;
              CREATE UNIQUE INDEX messages_key_per_room ON messages (room, key) WHERE key IS NOT NULL;",
    },
];

/// The schema version this code writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How long an open waits for another holder of the file's lock: not at all. The only holder can
/// be another running wschat (or a person's `sqlite3` shell), which will not let go by itself;
/// starting a second server must fail at once with a clear message.
pub const LOCK_WAIT: Duration = Duration::ZERO;

/// Most messages one pruning transaction deletes. Deleting 500 rows and their index entries
/// takes a few milliseconds, the longest a commit that arrives meanwhile has to wait.
pub const PRUNE_CHUNK: usize = 500;

/// Messages kept per room unless the caller says otherwise: days of a busy room, a few MB.
pub const DEFAULT_KEEP_PER_ROOM: NonZeroUsize = match NonZeroUsize::new(10_000) {
    Some(keep) => keep,
    None => NonZeroUsize::MIN,
};

/// How a SQLite store behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Retention: each room keeps its newest this many messages.
    pub keep_per_room: NonZeroUsize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            keep_per_room: DEFAULT_KEEP_PER_ROOM,
        }
    }
}

/// The SQLite implementation of the store.
#[derive(Debug)]
pub struct SqliteStore;

impl SqliteStore {
    /// Opens (or creates) the store at `path` (`:memory:` keeps nothing, for tests and benches),
    /// upgrades an older schema, and starts the writer thread, which calls `wake` after each turn.
    pub fn open(
        path: impl AsRef<Path>,
        options: SqliteOptions,
        wake: Wake,
    ) -> Result<(StoreHandle, OpenInfo), OpenError> {
        let (backend, info) = SqliteBackend::open(path.as_ref(), options)?;
        Ok((StoreHandle::start(backend, wake)?, info))
    }
}

/// What the file turned out to be, read from its header before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// No content at all (a new or zero-length file): ours to create.
    Empty,
    /// A wschat store with this schema version.
    Store { version: u32 },
}

/// The writer thread's state.
struct SqliteBackend {
    conn: Connection,
    keep_per_room: i64,
    /// Rooms that may hold more than `keep_per_room` messages.
    due_for_pruning: BTreeSet<String>,
    /// Set when a pruning step failed; cleared by the next successful commit.
    pruning_blocked: bool,
}

impl SqliteBackend {
    fn open(path: &Path, options: SqliteOptions) -> Result<(Self, OpenInfo), OpenError> {
        let name = path.display().to_string();
        let fail = |error: rusqlite::Error| open_error(&name, &error);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(fail)?;
        // SQLite falls back to opening an unwritable file read-only; a store must write.
        if conn.is_readonly(MAIN_DB).map_err(fail)? {
            return Err(OpenError::ReadOnly { path: name });
        }
        conn.busy_timeout(LOCK_WAIT).map_err(fail)?;
        // Must precede the first read: see "Locking" in the module docs.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(fail)?;
        let found = identify(&conn, &name)?;
        // Only now, knowing the file is ours, may anything be written to it.
        let journal: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(fail)?;
        if !journal.eq_ignore_ascii_case("wal") && !journal.eq_ignore_ascii_case("memory") {
            return Err(OpenError::Other {
                path: name,
                detail: format!("journal mode stayed {journal:?}"),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(fail)?;
        let from = match found {
            Found::Empty => 0,
            Found::Store { version } => version,
        };
        let migrated_from = migrate(&mut conn, &name, from)?;
        let info = OpenInfo {
            epoch: read_epoch(&conn, &name)?,
            last_id: read_last_id(&conn).map_err(fail)?,
            schema: SCHEMA_VERSION,
            migrated_from,
        };
        let due_for_pruning = read_rooms(&conn).map_err(fail)?;
        let keep_per_room = i64::try_from(options.keep_per_room.get()).unwrap_or(i64::MAX);
        Ok((
            Self {
                conn,
                keep_per_room,
                due_for_pruning,
                pruning_blocked: false,
            },
            info,
        ))
    }

    /// Runs the turn in one transaction. A failed read is that read's answer; a failed append
    /// fails the whole turn.
    fn try_turn(
        &mut self,
        commands: &[Command],
        writes: bool,
        shared: &Shared,
    ) -> Result<Vec<Outcome>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut outcomes = Vec::new();
        for command in commands {
            match command {
                Command::Append(messages) => {
                    for message in messages {
                        let (appended, prev) = append(&tx, message)?;
                        outcomes.push(Outcome::Append {
                            token: message.token,
                            result: Ok(appended),
                        });
                        // Announced in the same answer, right after the commit: the feed of one
                        // process is the writer's own order.
                        if let (Appended::Stored { id }, Some(prev_id)) = (appended, prev) {
                            outcomes.push(Outcome::Posted(Posted {
                                message: StoredMessage {
                                    id,
                                    room: message.room.clone(),
                                    nickname: message.nickname.clone(),
                                    text: message.text.clone(),
                                    ts: message.ts,
                                },
                                prev_id,
                                origin: Some(message.token),
                            }));
                        }
                    }
                }
                Command::Read(read) => {
                    let result = read_page(&tx, read);
                    // Some errors (I/O, full disk) make SQLite roll the transaction back by itself;
                    // appends after that would each commit alone, outside the batch.
                    match &result {
                        Err(error) if tx.is_autocommit() => return Err(error.clone()),
                        _ => {}
                    }
                    outcomes.push(Outcome::Read {
                        token: read.token,
                        result,
                    });
                }
                // Coordination is the loop's own (`store::local`), never sent here.
                _ => {}
            }
        }
        if writes && shared.failure_simulated() {
            return Err(StoreError::SimulatedFailure);
        }
        tx.commit()?;
        Ok(outcomes)
    }

    /// The answers to a turn whose transaction failed: every message fails with `error`; reads
    /// are retried on their own, since they need no write.
    fn answer_failed_turn(&self, commands: &[Command], error: &StoreError) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for command in commands {
            match command {
                Command::Read(read) => outcomes.push(Outcome::Read {
                    token: read.token,
                    result: read_page(&self.conn, read),
                }),
                other => outcomes.extend(fail_all(std::slice::from_ref(other), error)),
            }
        }
        outcomes
    }

    /// Leaves no transaction open after a failure (a failed rollback would otherwise wedge every
    /// later turn on "cannot start a transaction within a transaction").
    fn ensure_rolled_back(&self) {
        if self.conn.is_autocommit() {
            return;
        }
        if let Err(error) = self.conn.execute_batch("ROLLBACK") {
            warn!("message store: rollback failed: {error}");
        }
    }

    /// Deletes up to [`PRUNE_CHUNK`] of `room`'s oldest messages beyond its quota. Returns how
    /// many, and whether the room is now within its quota.
    fn prune_step(&mut self, room: &str, shared: &Shared) -> Result<(u64, bool), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let newest_beyond_quota: Option<i64> = tx
            .prepare_cached("SELECT id FROM messages WHERE room = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2")?
            .query_row(params![room, self.keep_per_room], |row| row.get(0))
            .optional()?;
        let Some(newest_beyond_quota) = newest_beyond_quota else {
            return Ok((0, true));
        };
        let deleted = tx
            .prepare_cached(
                "DELETE FROM messages WHERE id IN
                 (SELECT id FROM messages WHERE room = ?1 AND id <= ?2 ORDER BY id LIMIT ?3)",
            )?
            .execute(params![room, newest_beyond_quota, PRUNE_CHUNK as i64])?;
        if shared.failure_simulated() {
            return Err(StoreError::SimulatedFailure);
        }
        tx.commit()?;
        Ok((deleted as u64, deleted < PRUNE_CHUNK))
    }
}

impl Backend for SqliteBackend {
    fn run_turn(&mut self, commands: Vec<Command>, shared: &Shared) -> Vec<Outcome> {
        let messages: u64 = commands
            .iter()
            .map(|command| match command {
                Command::Append(messages) => messages.len() as u64,
                _ => 0,
            })
            .sum();
        match self.try_turn(&commands, messages > 0, shared) {
            Ok(outcomes) => {
                if messages > 0 {
                    shared.record_commit(messages);
                    self.pruning_blocked = false;
                }
                for command in commands {
                    if let Command::Append(appended) = command {
                        self.due_for_pruning
                            .extend(appended.into_iter().map(|message| message.room));
                    }
                }
                outcomes
            }
            Err(error) => {
                self.ensure_rolled_back();
                if messages > 0 {
                    shared.record_failed_commit();
                }
                warn!("message store: a turn of {messages} messages failed: {error}");
                self.answer_failed_turn(&commands, &error)
            }
        }
    }

    fn upkeep_pending(&self) -> bool {
        !self.pruning_blocked && !self.due_for_pruning.is_empty()
    }

    fn upkeep(&mut self, shared: &Shared) {
        let Some(room) = self.due_for_pruning.first().cloned() else {
            return;
        };
        match self.prune_step(&room, shared) {
            Ok((deleted, within_quota)) => {
                shared.record_pruned(deleted);
                if within_quota {
                    self.due_for_pruning.remove(&room);
                }
            }
            Err(error) => {
                self.ensure_rolled_back();
                self.pruning_blocked = true;
                shared.record_prune_failure();
                warn!("message store: pruning room {room:?} failed, retrying after the next commit: {error}");
            }
        }
    }
}

/// Reads the header marks and decides whether the file is ours, without writing anything.
fn identify(conn: &Connection, name: &str) -> Result<Found, OpenError> {
    let fail = |error: rusqlite::Error| open_error(name, &error);
    let application_id: i32 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(fail)?;
    let user_version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(fail)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(fail)?;
    if application_id != APPLICATION_ID {
        // An unmarked file with nothing in it is a store not yet created; anything else belongs
        // to someone else and must not be touched.
        return if application_id == 0 && user_version == 0 && objects == 0 {
            Ok(Found::Empty)
        } else {
            Err(OpenError::Foreign {
                path: name.to_owned(),
            })
        };
    }
    match u32::try_from(user_version) {
        Ok(version) if version <= SCHEMA_VERSION => Ok(Found::Store { version }),
        _ => Err(OpenError::NewerSchema {
            path: name.to_owned(),
            found: u32::try_from(user_version).unwrap_or(u32::MAX),
            supported: SCHEMA_VERSION,
        }),
    }
}

/// Brings the schema from version `from` to [`SCHEMA_VERSION`] in one transaction; a new store
/// also gets its epoch there. Returns `Some(from)` if anything was done.
fn migrate(conn: &mut Connection, name: &str, from: u32) -> Result<Option<u32>, OpenError> {
    if from == SCHEMA_VERSION {
        return Ok(None);
    }
    let epoch = if from == 0 { Some(Epoch::random()?) } else { None };
    let fail = |error: rusqlite::Error| OpenError::Migration {
        path: name.to_owned(),
        from,
        to: SCHEMA_VERSION,
        detail: error.to_string(),
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    apply_migrations(&tx, from, SCHEMA_VERSION).map_err(fail)?;
    if let Some(epoch) = epoch {
        tx.execute(
            "INSERT INTO meta (name, value) VALUES ('epoch', ?1)",
            [epoch.to_string()],
        )
        .map_err(fail)?;
    }
    tx.commit().map_err(fail)?;
    Ok(Some(from))
}

/// Runs the steps from version `from` to `to` and marks the file with `to`. The caller owns the
/// transaction. Tests use it to build files of older versions.
fn apply_migrations(conn: &Connection, from: u32, to: u32) -> rusqlite::Result<()> {
    for step in MIGRATIONS.iter().take(to as usize).skip(from as usize) {
        conn.execute_batch(step.sql)?;
    }
    conn.pragma_update(None, "application_id", APPLICATION_ID)?;
    conn.pragma_update(None, "user_version", to)
}

fn read_epoch(conn: &Connection, name: &str) -> Result<Epoch, OpenError> {
    let text: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE name = 'epoch'", [], |row| {
            row.get(0)
        })
        .optional()
        .map_err(|error| open_error(name, &error))?;
    text.as_deref()
        .and_then(Epoch::parse)
        .ok_or_else(|| OpenError::Corrupt {
            path: name.to_owned(),
            detail: "no valid epoch in the meta table".to_owned(),
        })
}

/// The highest id ever handed out, including those of pruned messages.
fn read_last_id(conn: &Connection) -> rusqlite::Result<u64> {
    let seq = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'messages'",
            [],
            |row| unsigned(row, 0),
        )
        .optional()?;
    Ok(seq.unwrap_or(0))
}

fn read_rooms(conn: &Connection) -> rusqlite::Result<BTreeSet<String>> {
    let mut statement = conn.prepare("SELECT DISTINCT room FROM messages")?;
    let rooms = statement
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rooms)
}

/// Stores `message`, or finds the message its key already names. A message stored now comes with
/// the id of its room's message before it (0: none).
fn append(conn: &Connection, message: &NewMessage) -> Result<(Appended, Option<u64>), StoreError> {
    if let Some(key) = &message.key {
        let original = conn
            .prepare_cached("SELECT id FROM messages WHERE room = ?1 AND key = ?2")?
            .query_row(params![message.room, key.as_str()], |row| unsigned(row, 0))
            .optional()?;
        if let Some(id) = original {
            return Ok((Appended::Duplicate { id }, None));
        }
    }
    // The room's newest message is never pruned (retention keeps at least one), so this is the
    // message before the new one. One step down the (room, id) index.
    let prev: Option<i64> = conn
        .prepare_cached("SELECT max(id) FROM messages WHERE room = ?1")?
        .query_row(params![message.room], |row| row.get(0))?;
    let prev = prev.and_then(|id| u64::try_from(id).ok()).unwrap_or(0);
    conn.prepare_cached("INSERT INTO messages (room, nickname, text, ts, key) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![
            message.room,
            message.nickname,
            message.text,
            sql_int(message.ts),
            message.key.as_ref().map(|key| key.as_str()),
        ])?;
    let id =
        u64::try_from(conn.last_insert_rowid()).map_err(|_| StoreError::Corrupt("negative id".to_owned()))?;
    Ok((Appended::Stored { id }, Some(prev)))
}

/// Answers a read. One query serves all three ranges: `Latest` is "before the end".
fn read_page(conn: &Connection, read: &Read) -> Result<Page, StoreError> {
    let limit = read.limit.min(MAX_PAGE_LEN);
    let (sql, bound, newest_first) = match read.range {
        Range::Since(id) => (
            "SELECT id, room, nickname, text, ts FROM messages WHERE room = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            sql_int(id),
            false,
        ),
        Range::Before(id) => (BEFORE_SQL, sql_int(id), true),
        Range::Latest => (BEFORE_SQL, i64::MAX, true),
    };
    // One row past the limit tells whether there is more.
    let fetch = limit as i64 + 1;
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map(params![read.room, bound, fetch], message_from_row)?;
    let mut messages = rows.collect::<Result<Vec<_>, _>>()?;
    let more = messages.len() > limit;
    messages.truncate(limit);
    if newest_first {
        messages.reverse();
    }
    // The previous id of a page is not known here (pruning takes it); it is never needed: one
    // process's feed comes from this thread in order, and has no holes to find.
    Ok(Page {
        messages,
        more,
        prev: None,
    })
}

const BEFORE_SQL: &str =
    "SELECT id, room, nickname, text, ts FROM messages WHERE room = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3";

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        id: unsigned(row, 0)?,
        room: row.get(1)?,
        nickname: row.get(2)?,
        text: row.get(3)?,
        ts: unsigned(row, 4)?,
    })
}

/// Reads an id or a time. The store never writes a negative one; a file edited by hand might.
fn unsigned(row: &Row<'_>, column: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(column)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(column, value))
}

/// SQLite integers are signed 64-bit; ids and times beyond that cannot occur, and a bound beyond
/// it means "the end".
fn sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The open-time meaning of a SQLite error.
fn open_error(name: &str, error: &rusqlite::Error) -> OpenError {
    let path = name.to_owned();
    let detail = error.to_string();
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => OpenError::Locked { path },
        Some(ErrorCode::NotADatabase) => OpenError::NotADatabase { path },
        Some(ErrorCode::DatabaseCorrupt) => OpenError::Corrupt { path, detail },
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => OpenError::CannotOpen { path, detail },
        Some(ErrorCode::ReadOnly) => OpenError::ReadOnly { path },
        _ => OpenError::Other { path, detail },
    }
}

/// The run-time meaning of a SQLite error.
impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        match error.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => Self::DiskFull,
            Some(ErrorCode::ReadOnly) => Self::ReadOnly,
            Some(ErrorCode::SystemIoFailure | ErrorCode::CannotOpen) => Self::Io(error.to_string()),
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Self::Corrupt(error.to_string()),
            _ => Self::Other(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
