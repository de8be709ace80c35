//! The SQLite store, rule by rule, on real files in a temporary directory.
//!
//! A [`Harness`] plays the event loop: it submits one turn's commands and waits (on the wake-up
//! callback) until every token is answered. Tests that need another process re-run this test
//! binary with [`CHILD_ROLE`] set; [`child_process`] is that other process.
#![allow(clippy::disallowed_methods)] // The tests wait for a real writer thread, bounded in time.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::*;
use crate::store::{IdempotencyKey, StoreStats, Token};

/// Longest wait for anything the store does in the background.
const WAIT: Duration = Duration::from_secs(20);

/// The loop's side of an open store.
struct Harness {
    handle: StoreHandle,
    info: OpenInfo,
    woken: Receiver<()>,
    next_token: Token,
}

fn open(path: &Path) -> Result<Harness, OpenError> {
    open_keeping(path, DEFAULT_KEEP_PER_ROOM.get())
}

fn open_keeping(path: &Path, keep_per_room: usize) -> Result<Harness, OpenError> {
    let (wake, woken) = mpsc::channel();
    let options = SqliteOptions {
        keep_per_room: NonZeroUsize::new(keep_per_room).unwrap(),
    };
    let (handle, info) = SqliteStore::open(
        path,
        options,
        Box::new(move || {
            let _ = wake.send(());
        }),
    )?;
    Ok(Harness {
        handle,
        info,
        woken,
        next_token: 1,
    })
}

fn temp_dir() -> TempDir {
    tempfile::tempdir().unwrap()
}

fn db_in(dir: &TempDir) -> PathBuf {
    dir.path().join("chat.db")
}

fn message(token: Token, room: &str, text: &str, key: Option<&str>) -> NewMessage {
    NewMessage {
        token,
        room: room.to_owned(),
        nickname: "ann".to_owned(),
        text: text.to_owned(),
        ts: 1_700_000_000_000 + token,
        key: key.map(|key| IdempotencyKey::new(key).unwrap()),
        lease: None,
    }
}

fn tokens_of(commands: &[Command]) -> usize {
    commands
        .iter()
        .map(|command| match command {
            Command::Append(messages) => messages.len(),
            Command::Read(_) => 1,
            _ => 0,
        })
        .sum()
}

/// Answers until `expected` tokens are answered (announcements of stored messages left out).
fn collect(handle: &mut StoreHandle, woken: &Receiver<()>, expected: usize) -> Vec<Outcome> {
    let deadline = Instant::now() + WAIT;
    let answers = |handle: &mut StoreHandle| -> Vec<Outcome> {
        handle
            .try_results()
            .filter(|outcome| outcome.token().is_some())
            .collect()
    };
    let mut outcomes: Vec<Outcome> = answers(handle);
    while outcomes.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        woken.recv_timeout(left).expect("the store answered in time");
        outcomes.extend(answers(handle));
    }
    assert_eq!(outcomes.len(), expected, "one outcome per token");
    outcomes
}

fn appended(outcome: &Outcome) -> Result<Appended, StoreError> {
    match outcome {
        Outcome::Append { result, .. } => result.clone(),
        _ => panic!("not an append's answer: {outcome:?}"),
    }
}

fn page_of(outcome: &Outcome) -> Page {
    match outcome {
        Outcome::Read { result: Ok(page), .. } => page.clone(),
        _ => panic!("not a page: {outcome:?}"),
    }
}

fn texts(page: &Page) -> Vec<&str> {
    page.messages
        .iter()
        .map(|message| message.text.as_str())
        .collect()
}

impl Harness {
    fn token(&mut self) -> Token {
        self.next_token += 1;
        self.next_token
    }

    /// One loop turn: submit, then wait for every answer.
    fn turn(&mut self, commands: Vec<Command>) -> Vec<Outcome> {
        let expected = tokens_of(&commands);
        self.handle.submit(commands).unwrap();
        collect(&mut self.handle, &self.woken, expected)
    }

    /// Appends `(room, text, key)`s as one command.
    fn append_all(&mut self, items: &[(&str, &str, Option<&str>)]) -> Vec<Result<Appended, StoreError>> {
        let messages = items
            .iter()
            .map(|(room, text, key)| message(self.token(), room, text, *key))
            .collect();
        self.turn(vec![Command::Append(messages)])
            .iter()
            .map(appended)
            .collect()
    }

    fn append(&mut self, room: &str, text: &str, key: Option<&str>) -> Result<Appended, StoreError> {
        self.append_all(&[(room, text, key)]).remove(0)
    }

    fn stored(&mut self, room: &str, text: &str) -> u64 {
        match self.append(room, text, None) {
            Ok(Appended::Stored { id }) => id,
            other => panic!("not stored: {other:?}"),
        }
    }

    fn read(&mut self, room: &str, range: Range, limit: usize) -> Page {
        let token = self.token();
        let outcomes = self.turn(vec![Command::Read(Read {
            token,
            room: room.to_owned(),
            range,
            limit,
        })]);
        page_of(&outcomes[0])
    }

    /// Every message of `room`, walking forward page by page.
    fn everything_in(&mut self, room: &str) -> Vec<StoredMessage> {
        let mut all: Vec<StoredMessage> = Vec::new();
        loop {
            let after = all.last().map_or(0, |message| message.id);
            let page = self.read(room, Range::Since(after), MAX_PAGE_LEN);
            all.extend(page.messages);
            if !page.more {
                return all;
            }
        }
    }

    /// Waits until the background pruning has removed `count` messages in all.
    fn wait_for_pruned(&self, count: u64) -> StoreStats {
        let deadline = Instant::now() + WAIT;
        loop {
            let stats = self.handle.stats();
            if stats.pruned >= count || Instant::now() > deadline {
                return stats;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

// ---- the connection ----

#[test]
fn store_is_opened_in_wal_mode_with_full_sync_and_an_exclusive_lock() {
    let dir = temp_dir();
    let (backend, _) = SqliteBackend::open(&db_in(&dir), SqliteOptions::default()).unwrap();
    let pragma = |name: &str| -> String {
        backend
            .conn
            .pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
            .map_or_else(
                |error| error.to_string(),
                |value| match value {
                    rusqlite::types::Value::Integer(number) => number.to_string(),
                    rusqlite::types::Value::Text(text) => text.to_lowercase(),
                    other => format!("{other:?}"),
                },
            )
    };
    assert_eq!(pragma("journal_mode"), "wal");
    assert_eq!(
        pragma("synchronous"),
        "2",
        "FULL: the log is fsynced at every commit"
    );
    assert_eq!(pragma("locking_mode"), "exclusive");
}

// ---- ids ----

#[test]
fn ids_increase_across_reopen() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    assert_eq!(store.info.last_id, 0);
    let first: Vec<u64> = (0..3)
        .map(|n| store.stored("lobby", &format!("before {n}")))
        .collect();
    assert!(first.windows(2).all(|pair| pair[0] < pair[1]), "{first:?}");
    drop(store);

    let mut store = open(&db_in(&dir)).unwrap();
    assert_eq!(store.info.last_id, first[2]);
    let next = store.stored("lobby", "after");
    assert!(next > first[2], "{next} after {first:?}");
}

#[test]
fn ids_are_never_reused_after_the_newest_message_is_gone() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    let newest = (0..3)
        .map(|n| store.stored("lobby", &format!("{n}")))
        .last()
        .unwrap();
    drop(store);
    // A moderator removes the newest message by hand.
    Connection::open(db_in(&dir))
        .unwrap()
        .execute("DELETE FROM messages WHERE id = ?1", [sql_int(newest)])
        .unwrap();

    let mut store = open(&db_in(&dir)).unwrap();
    assert_eq!(
        store.info.last_id, newest,
        "the highest id ever given, not the highest present"
    );
    assert!(store.stored("lobby", "next") > newest);
}

// ---- idempotency keys ----

#[test]
fn key_already_accepted_in_the_room_is_a_duplicate_of_the_original() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    let original = store.append("lobby", "hello", Some("k-1")).unwrap();
    assert!(matches!(original, Appended::Stored { .. }));
    let again = store.append("lobby", "hello (resent)", Some("k-1")).unwrap();
    assert_eq!(again, Appended::Duplicate { id: original.id() });
    assert_eq!(
        texts(&store.read("lobby", Range::Latest, 10)),
        ["hello"],
        "nothing stored twice"
    );
}

#[test]
fn key_repeated_within_one_batch_is_a_duplicate_of_the_first() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    let results = store.append_all(&[
        ("lobby", "a", Some("k")),
        ("lobby", "b", None),
        ("lobby", "a again", Some("k")),
    ]);
    let first = results[0].clone().unwrap();
    assert!(matches!(first, Appended::Stored { .. }));
    assert!(matches!(results[1], Ok(Appended::Stored { .. })));
    assert_eq!(results[2], Ok(Appended::Duplicate { id: first.id() }));
    assert_eq!(texts(&store.read("lobby", Range::Latest, 10)), ["a", "b"]);
}

#[test]
fn key_dedups_across_reopen() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    let original = store.append("lobby", "hello", Some("k-1")).unwrap();
    drop(store);
    let mut store = open(&db_in(&dir)).unwrap();
    assert_eq!(
        store.append("lobby", "hello", Some("k-1")),
        Ok(Appended::Duplicate { id: original.id() })
    );
}

#[test]
fn same_key_in_another_room_is_a_new_message() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    let in_lobby = store.append("lobby", "hello", Some("k-1")).unwrap();
    let in_rust = store.append("rust", "hello", Some("k-1")).unwrap();
    assert!(matches!(in_rust, Appended::Stored { .. }));
    assert_ne!(in_rust.id(), in_lobby.id());
}

#[test]
fn messages_without_keys_are_never_duplicates() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    let results = store.append_all(&[("lobby", "same", None), ("lobby", "same", None)]);
    assert!(
        results
            .iter()
            .all(|result| matches!(result, Ok(Appended::Stored { .. }))),
        "{results:?}"
    );
}

// ---- group commit ----

#[test]
fn one_submit_of_n_appends_is_one_commit() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    let commands: Vec<Command> = (0..10)
        .map(|n| Command::Append(vec![message(n, "lobby", &format!("{n}"), None)]))
        .collect();
    store.turn(commands);
    let stats = store.handle.stats();
    assert_eq!((stats.commits, stats.messages, stats.largest_commit), (1, 10, 10));
}

#[test]
fn group_commit_puts_every_append_queued_meanwhile_into_one_transaction() {
    let dir = temp_dir();
    // The wake-up callback runs on the writer thread: holding it there keeps the writer busy
    // while the "loop" submits five more turns.
    let HeldWriter {
        mut handle,
        writer_waiting,
        release,
    } = open_held(&db_in(&dir), 100);

    handle
        .submit(vec![Command::Append(vec![message(0, "lobby", "first", None)])])
        .unwrap();
    writer_waiting.recv_timeout(WAIT).unwrap();
    for token in 1..=5 {
        handle
            .submit(vec![Command::Append(vec![message(
                token, "lobby", "queued", None,
            )])])
            .unwrap();
    }
    release.send(()).unwrap();
    writer_waiting.recv_timeout(WAIT).unwrap();
    release.send(()).unwrap();
    drop(release);

    let outcomes: Vec<Outcome> = handle
        .try_results()
        .filter(|outcome| outcome.token().is_some())
        .collect();
    assert_eq!(
        outcomes.iter().filter_map(Outcome::token).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    assert!(
        outcomes.iter().all(|outcome| appended(outcome).is_ok()),
        "{outcomes:?}"
    );
    let stats = handle.stats();
    assert_eq!(
        (stats.commits, stats.messages, stats.largest_commit),
        (2, 6, 5),
        "{stats:?}"
    );
}

// ---- order ----

#[test]
fn outcomes_come_back_in_submission_order_and_reads_see_earlier_appends() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    let read = |token, limit| {
        Command::Read(Read {
            token,
            room: "lobby".to_owned(),
            range: Range::Latest,
            limit,
        })
    };
    let outcomes = store.turn(vec![
        read(1, 10),
        Command::Append(vec![
            message(2, "lobby", "a", None),
            message(3, "lobby", "b", None),
        ]),
        read(4, 10),
        Command::Append(vec![message(5, "lobby", "c", None)]),
        read(6, 10),
    ]);
    assert_eq!(
        outcomes.iter().filter_map(Outcome::token).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(texts(&page_of(&outcomes[0])), Vec::<&str>::new());
    assert_eq!(texts(&page_of(&outcomes[3])), ["a", "b"]);
    assert_eq!(texts(&page_of(&outcomes[5])), ["a", "b", "c"]);
    let ids: Vec<u64> = [1, 2, 4]
        .iter()
        .map(|&index| appended(&outcomes[index]).unwrap().id())
        .collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids follow submission order: {ids:?}"
    );
}

// ---- reads ----

/// Two rooms, interleaved, so a room's ids have gaps.
fn two_rooms(store: &mut Harness, count: usize) -> (Vec<u64>, Vec<u64>) {
    let mut lobby = Vec::new();
    let mut rust = Vec::new();
    for n in 0..count {
        lobby.push(store.stored("lobby", &format!("lobby {n}")));
        if n % 3 == 0 {
            rust.push(store.stored("rust", &format!("rust {n}")));
        }
    }
    (lobby, rust)
}

#[test]
fn since_pages_walk_forward_over_everything_exactly_once() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    let (lobby, _) = two_rooms(&mut store, 23);
    for page_len in [1, 5, 23, 50] {
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = store.read("lobby", Range::Since(after), page_len);
            assert!(page.messages.len() <= page_len);
            seen.extend(page.messages.iter().map(|message| message.id));
            match page.messages.last() {
                Some(last) if page.more => after = last.id,
                _ => break,
            }
        }
        assert_eq!(seen, lobby, "page length {page_len}");
    }
}

#[test]
fn before_pages_walk_back_over_everything_exactly_once() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    let (lobby, _) = two_rooms(&mut store, 23);
    for page_len in [1, 5, 23, 50] {
        let mut page = store.read("lobby", Range::Latest, page_len);
        let mut seen: Vec<u64> = page.messages.iter().map(|message| message.id).collect();
        while page.more {
            let oldest = seen[0];
            page = store.read("lobby", Range::Before(oldest), page_len);
            assert!(page.messages.iter().all(|message| message.id < oldest));
            seen.splice(0..0, page.messages.iter().map(|message| message.id));
        }
        assert_eq!(seen, lobby, "page length {page_len}");
    }
}

#[test]
fn latest_is_the_newest_messages_oldest_first() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    let (lobby, rust) = two_rooms(&mut store, 10);
    let page = store.read("lobby", Range::Latest, 3);
    assert_eq!(
        page.messages.iter().map(|message| message.id).collect::<Vec<_>>(),
        lobby[7..]
    );
    assert_eq!(texts(&page), ["lobby 7", "lobby 8", "lobby 9"]);
    assert!(page.more);
    let page = store.read("rust", Range::Latest, 10);
    assert_eq!(
        page.messages.iter().map(|message| message.id).collect::<Vec<_>>(),
        rust
    );
    assert!(!page.more);
    assert!(
        page.messages
            .iter()
            .all(|message| message.room == "rust" && message.nickname == "ann")
    );
}

#[test]
fn a_read_of_limit_zero_tells_only_whether_messages_exist() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    let id = store.stored("lobby", "only");
    assert_eq!(
        store.read("lobby", Range::Latest, 0),
        Page {
            messages: Vec::new(),
            more: true,
            prev: None
        }
    );
    assert_eq!(
        store.read("lobby", Range::Since(id), 0),
        Page {
            messages: Vec::new(),
            more: false,
            prev: None
        }
    );
    assert_eq!(
        store.read("nowhere", Range::Latest, 0),
        Page {
            messages: Vec::new(),
            more: false,
            prev: None
        }
    );
}

#[test]
fn a_read_returns_at_most_max_page_len_messages() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    let items: Vec<(&str, &str, Option<&str>)> = vec![("lobby", "x", None); MAX_PAGE_LEN + 1];
    store.append_all(&items);
    let page = store.read("lobby", Range::Since(0), usize::MAX);
    assert_eq!((page.messages.len(), page.more), (MAX_PAGE_LEN, true));
}

#[test]
fn stored_message_reads_back_as_written() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    let token = store.token();
    let written = message(token, "lobby", "κόσμε 👋", None);
    let outcomes = store.turn(vec![Command::Append(vec![written.clone()])]);
    let id = appended(&outcomes[0]).unwrap().id();
    let read = store.read("lobby", Range::Latest, 1);
    let expected = StoredMessage {
        id,
        room: written.room,
        nickname: written.nickname,
        text: written.text,
        ts: written.ts,
    };
    assert_eq!(read.messages, [expected]);
}

// ---- retention ----

#[test]
fn retention_prunes_oldest_first() {
    let dir = temp_dir();
    let mut store = open_keeping(&db_in(&dir), 3).unwrap();
    let (lobby, rust) = two_rooms(&mut store, 10);
    // rust has 4 messages: one over the quota; lobby 10: seven over.
    let stats = store.wait_for_pruned(8);
    assert_eq!(stats.pruned, 8);
    let kept: Vec<u64> = store
        .everything_in("lobby")
        .iter()
        .map(|message| message.id)
        .collect();
    assert_eq!(kept, lobby[7..]);
    let kept: Vec<u64> = store
        .everything_in("rust")
        .iter()
        .map(|message| message.id)
        .collect();
    assert_eq!(kept, rust[1..]);
}

#[test]
fn retention_keeps_the_keys_of_retained_messages_and_frees_the_others() {
    let dir = temp_dir();
    let mut store = open_keeping(&db_in(&dir), 2).unwrap();
    let ids: Vec<u64> = ["k0", "k1", "k2", "k3"]
        .iter()
        .map(|key| store.append("lobby", key, Some(key)).unwrap().id())
        .collect();
    store.wait_for_pruned(2);
    assert_eq!(
        store.append("lobby", "k3", Some("k3")),
        Ok(Appended::Duplicate { id: ids[3] })
    );
    assert_eq!(
        store.append("lobby", "k2", Some("k2")),
        Ok(Appended::Duplicate { id: ids[2] })
    );
    // A key lives as long as its message: k0's message was pruned, so k0 is new again.
    assert!(matches!(
        store.append("lobby", "k0", Some("k0")),
        Ok(Appended::Stored { .. })
    ));
}

#[test]
fn retention_applies_at_open_to_a_lowered_quota() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    let ids: Vec<u64> = (0..10).map(|n| store.stored("lobby", &format!("{n}"))).collect();
    drop(store);
    let mut store = open_keeping(&db_in(&dir), 4).unwrap();
    assert_eq!(store.wait_for_pruned(6).pruned, 6);
    let kept: Vec<u64> = store
        .everything_in("lobby")
        .iter()
        .map(|message| message.id)
        .collect();
    assert_eq!(kept, ids[6..]);
}

#[test]
fn pruning_a_large_backlog_takes_several_small_transactions() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    let items: Vec<(&str, &str, Option<&str>)> = vec![("lobby", "x", None); 2 * PRUNE_CHUNK + 10];
    store.append_all(&items);
    drop(store);
    let mut store = open_keeping(&db_in(&dir), 5).unwrap();
    let over = (2 * PRUNE_CHUNK + 5) as u64;
    assert_eq!(store.wait_for_pruned(over).pruned, over);
    assert_eq!(store.everything_in("lobby").len(), 5);
}

// ---- epoch ----

#[test]
fn epoch_is_fixed_for_the_life_of_the_store() {
    let dir = temp_dir();
    let store = open(&db_in(&dir)).unwrap();
    let epoch = store.info.epoch;
    drop(store);
    assert_eq!(open(&db_in(&dir)).unwrap().info.epoch, epoch);
    let other = open(&dir.path().join("other.db")).unwrap();
    assert_ne!(other.info.epoch, epoch, "another store, another history");
}

// ---- :memory: ----

#[test]
fn memory_store_works_and_keeps_nothing() {
    let memory = Path::new(":memory:");
    let mut store = open(memory).unwrap();
    let id = store.append("lobby", "hi", Some("k")).unwrap().id();
    assert_eq!(
        store.append("lobby", "hi", Some("k")),
        Ok(Appended::Duplicate { id })
    );
    assert_eq!(texts(&store.read("lobby", Range::Latest, 5)), ["hi"]);
    let epoch = store.info.epoch;
    drop(store);
    let store = open(memory).unwrap();
    assert_eq!(store.info.last_id, 0);
    assert_ne!(store.info.epoch, epoch);
}

// ---- schema versions ----

/// Builds a store file of schema `version` with the shipped migration steps, as that version of
/// wschat would have left it, holding `rooms_and_texts`.
fn build_old_store(path: &Path, version: u32, rooms_and_texts: &[(&str, &str)]) {
    let mut conn = Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    apply_migrations(&tx, 0, version).unwrap();
    tx.execute(
        "INSERT INTO meta (name, value) VALUES ('epoch', ?1)",
        [Epoch(42).to_string()],
    )
    .unwrap();
    for (n, (room, text)) in rooms_and_texts.iter().enumerate() {
        tx.execute(
            "INSERT INTO messages (room, nickname, text, ts) VALUES (?1, 'old', ?2, ?3)",
            params![room, text, n as i64],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn older_schema_is_migrated_on_open_and_keeps_its_messages() {
    let dir = temp_dir();
    build_old_store(&db_in(&dir), 1, &[("lobby", "from v1"), ("lobby", "also v1")]);

    let mut store = open(&db_in(&dir)).unwrap();
    assert_eq!(store.info.migrated_from, Some(1));
    assert_eq!(store.info.schema, SCHEMA_VERSION);
    assert_eq!(
        store.info.epoch,
        Epoch(42),
        "a migration keeps the history's epoch"
    );
    assert_eq!(store.info.last_id, 2);
    assert_eq!(
        texts(&store.read("lobby", Range::Latest, 10)),
        ["from v1", "also v1"]
    );
    // Version 2's rule works on the migrated file.
    let id = store.append("lobby", "keyed", Some("k")).unwrap().id();
    assert_eq!(
        store.append("lobby", "keyed", Some("k")),
        Ok(Appended::Duplicate { id })
    );
    drop(store);

    let store = open(&db_in(&dir)).unwrap();
    assert_eq!(store.info.migrated_from, None, "migrated once");
}

#[test]
fn every_schema_version_migrates_to_the_current_one() {
    for version in 1..SCHEMA_VERSION {
        let dir = temp_dir();
        build_old_store(&db_in(&dir), version, &[("lobby", "old")]);
        let mut store = open(&db_in(&dir)).unwrap();
        assert_eq!(store.info.migrated_from, Some(version));
        assert_eq!(texts(&store.read("lobby", Range::Latest, 10)), ["old"]);
    }
}

#[test]
fn new_store_is_marked_with_the_application_id_and_current_version() {
    let dir = temp_dir();
    let store = open(&db_in(&dir)).unwrap();
    assert_eq!(store.info.migrated_from, Some(0));
    drop(store);
    let conn = Connection::open(db_in(&dir)).unwrap();
    let application_id: i32 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .unwrap();
    let user_version: u32 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!((application_id, user_version), (APPLICATION_ID, SCHEMA_VERSION));
}

// ---- open errors ----

/// Opens `path` expecting `check` to accept the error, and the file to be unchanged after.
fn assert_open_fails(path: &Path, check: impl Fn(&OpenError) -> bool) -> OpenError {
    let before = std::fs::read(path).ok();
    let started = Instant::now();
    let error = open(path).map(|_| ()).expect_err("the open must fail");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "failed quickly: {:?}",
        started.elapsed()
    );
    assert!(check(&error), "{error:?}");
    let line = error.to_string();
    assert!(!line.is_empty() && !line.contains('\n'), "one line: {line:?}");
    assert_eq!(std::fs::read(path).ok(), before, "the file is left untouched");
    error
}

#[test]
fn file_that_is_not_a_database_is_refused() {
    let dir = temp_dir();
    std::fs::write(
        db_in(&dir),
        "these are somebody's notes, not a database\n".repeat(100),
    )
    .unwrap();
    assert_open_fails(&db_in(&dir), |error| {
        matches!(error, OpenError::NotADatabase { .. })
    });
}

#[test]
fn damaged_store_is_refused() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    store.stored("lobby", "hello");
    drop(store);
    // Page 1 holds the schema table; its b-tree page header starts after the 100-byte file header.
    // An impossible page type there makes the schema unreadable.
    let mut bytes = std::fs::read(db_in(&dir)).unwrap();
    bytes[100] = 0x42;
    std::fs::write(db_in(&dir), &bytes).unwrap();
    assert_open_fails(&db_in(&dir), |error| matches!(error, OpenError::Corrupt { .. }));
}

#[test]
fn database_of_another_program_is_refused() {
    let dir = temp_dir();
    let conn = Connection::open(db_in(&dir)).unwrap();
    conn.execute_batch("CREATE TABLE users (name TEXT); INSERT INTO users VALUES ('ann');")
        .unwrap();
    drop(conn);
    assert_open_fails(&db_in(&dir), |error| matches!(error, OpenError::Foreign { .. }));
}

#[test]
fn database_of_another_program_with_no_tables_but_its_own_marks_is_refused() {
    let dir = temp_dir();
    let conn = Connection::open(db_in(&dir)).unwrap();
    conn.pragma_update(None, "application_id", 0x1234).unwrap();
    drop(conn);
    assert_open_fails(&db_in(&dir), |error| matches!(error, OpenError::Foreign { .. }));
}

#[test]
fn empty_file_becomes_a_new_store() {
    let dir = temp_dir();
    std::fs::write(db_in(&dir), b"").unwrap();
    let store = open(&db_in(&dir)).unwrap();
    assert_eq!((store.info.migrated_from, store.info.last_id), (Some(0), 0));
}

#[test]
fn newer_schema_is_refused() {
    let dir = temp_dir();
    build_old_store(&db_in(&dir), SCHEMA_VERSION, &[("lobby", "hello")]);
    Connection::open(db_in(&dir))
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let error = assert_open_fails(&db_in(&dir), |error| {
        matches!(error, OpenError::NewerSchema { .. })
    });
    assert_eq!(
        error,
        OpenError::NewerSchema {
            path: db_in(&dir).display().to_string(),
            found: SCHEMA_VERSION + 1,
            supported: SCHEMA_VERSION
        }
    );
}

#[test]
fn second_open_of_the_same_path_is_locked() {
    let dir = temp_dir();
    let mut first = open(&db_in(&dir)).unwrap();
    first.stored("lobby", "hello");
    assert_open_fails(&db_in(&dir), |error| matches!(error, OpenError::Locked { .. }));
    // The first is unharmed, and the lock goes with it.
    first.stored("lobby", "still here");
    drop(first);
    let mut third = open(&db_in(&dir)).unwrap();
    assert_eq!(
        texts(&third.read("lobby", Range::Latest, 5)),
        ["hello", "still here"]
    );
}

#[test]
fn a_new_store_is_locked_before_anything_is_appended() {
    let dir = temp_dir();
    let _first = open(&db_in(&dir)).unwrap();
    assert_open_fails(&db_in(&dir), |error| matches!(error, OpenError::Locked { .. }));
}

#[test]
fn open_from_another_process_is_locked() {
    let dir = temp_dir();
    let _running = open(&db_in(&dir)).unwrap();
    let started = Instant::now();
    let output = child(Role::Open, &db_in(&dir)).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(started.elapsed() < Duration::from_secs(10));
    let expected = OpenError::Locked {
        path: db_in(&dir).display().to_string(),
    };
    assert!(stdout.contains(&format!("open: {expected}\n")), "{stdout}");
}

#[test]
fn missing_directory_cannot_be_opened() {
    let dir = temp_dir();
    let path = dir.path().join("no such directory").join("chat.db");
    assert_open_fails(&path, |error| matches!(error, OpenError::CannotOpen { .. }));
    assert!(!path.exists());
}

#[test]
fn every_open_error_displays_as_one_line() {
    let path = || "/var/lib/wschat/chat.db".to_owned();
    let detail = || "something broke".to_owned();
    let errors = [
        OpenError::CannotOpen {
            path: path(),
            detail: detail(),
        },
        OpenError::NotADatabase { path: path() },
        OpenError::Corrupt {
            path: path(),
            detail: detail(),
        },
        OpenError::Foreign { path: path() },
        OpenError::NewerSchema {
            path: path(),
            found: 3,
            supported: 2,
        },
        OpenError::Locked { path: path() },
        OpenError::ReadOnly { path: path() },
        OpenError::Migration {
            path: path(),
            from: 1,
            to: 2,
            detail: detail(),
        },
        OpenError::Random { detail: detail() },
        OpenError::Thread { detail: detail() },
        OpenError::Other {
            path: path(),
            detail: detail(),
        },
    ];
    let mut lines = std::collections::HashSet::new();
    for error in errors {
        let line = error.to_string();
        assert!(!line.is_empty() && !line.contains('\n'), "{line:?}");
        assert!(lines.insert(line), "each variant says something different");
    }
}

// ---- run-time failures ----

#[test]
fn failed_batch_is_answered_whole_and_a_later_batch_succeeds() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    let before = store.stored("lobby", "before");

    store.handle.simulate_disk_failure(true);
    let failed = store.append_all(&[
        ("lobby", "lost 1", None),
        ("lobby", "lost 2", Some("k")),
        ("rust", "lost 3", None),
    ]);
    assert_eq!(failed, vec![Err(StoreError::SimulatedFailure); 3]);
    assert_eq!(
        texts(&store.read("lobby", Range::Latest, 10)),
        ["before"],
        "reads still work"
    );

    store.handle.simulate_disk_failure(false);
    let after = store.append_all(&[("lobby", "after", Some("k"))]);
    let Ok(Appended::Stored { id }) = after[0] else {
        panic!("{after:?}")
    };
    assert!(id > before);
    assert_eq!(
        texts(&store.read("lobby", Range::Latest, 10)),
        ["before", "after"],
        "nothing of the failed batch"
    );
    assert_eq!(texts(&store.read("rust", Range::Latest, 10)), Vec::<&str>::new());
    let stats = store.handle.stats();
    assert_eq!((stats.commits, stats.failed_commits), (2, 1), "{stats:?}");
}

#[test]
fn reads_in_a_failed_turn_are_still_answered() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    store.stored("lobby", "kept");
    store.handle.simulate_disk_failure(true);
    let read = Command::Read(Read {
        token: 9,
        room: "lobby".to_owned(),
        range: Range::Latest,
        limit: 5,
    });
    let outcomes = store.turn(vec![
        Command::Append(vec![message(8, "lobby", "lost", None)]),
        read,
    ]);
    assert_eq!(appended(&outcomes[0]), Err(StoreError::SimulatedFailure));
    assert_eq!(
        texts(&page_of(&outcomes[1])),
        ["kept"],
        "the read sees the state without the failed batch"
    );
}

/// A store whose wake-up callback holds the writer thread until the test releases it (dropping
/// `release` lets every later wake-up through).
struct HeldWriter {
    handle: StoreHandle,
    writer_waiting: Receiver<()>,
    release: mpsc::Sender<()>,
}

fn open_held(path: &Path, keep_per_room: usize) -> HeldWriter {
    let (entered, writer_waiting) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let wake = Box::new(move || {
        let _ = entered.send(());
        let _ = released.recv();
    });
    let options = SqliteOptions {
        keep_per_room: NonZeroUsize::new(keep_per_room).unwrap(),
    };
    let (handle, _) = SqliteStore::open(path, options, wake).unwrap();
    HeldWriter {
        handle,
        writer_waiting,
        release,
    }
}

/// Polls the stats until `done` holds.
fn wait_for_stats(handle: &StoreHandle, done: impl Fn(&StoreStats) -> bool) -> StoreStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = handle.stats();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn pruning_that_failed_waits_for_the_next_successful_commit() {
    let dir = temp_dir();
    let HeldWriter {
        mut handle,
        writer_waiting,
        release,
    } = open_held(&db_in(&dir), 2);
    let three = (0..3).map(|token| message(token, "lobby", "x", None)).collect();
    handle.submit(vec![Command::Append(three)]).unwrap();
    writer_waiting.recv_timeout(WAIT).unwrap();
    // Committed, one over the quota; pruning comes next, onto a failing disk.
    handle.simulate_disk_failure(true);
    drop(release);
    let stats = wait_for_stats(&handle, |stats| stats.prune_failures > 0);
    assert_eq!((stats.prune_failures, stats.pruned), (1, 0));

    // Not retried on its own, even once the disk works again: only a commit shows that it does.
    std::thread::sleep(Duration::from_millis(200));
    handle.simulate_disk_failure(false);
    std::thread::sleep(Duration::from_millis(200));
    let stats = handle.stats();
    assert_eq!((stats.prune_failures, stats.pruned), (1, 0), "{stats:?}");

    handle
        .submit(vec![Command::Append(vec![message(3, "lobby", "x", None)])])
        .unwrap();
    let stats = wait_for_stats(&handle, |stats| stats.pruned >= 2);
    assert_eq!(
        (stats.commits, stats.pruned, stats.prune_failures),
        (2, 2, 1),
        "{stats:?}"
    );
}

/// `chattr +i` on files for as long as it lives: an immutable file cannot be written even by root
/// (these tests run as root, where permission bits stop nothing). `None` where the filesystem or
/// the user cannot do it (tmpfs, no CAP_LINUX_IMMUTABLE).
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(paths: &[&Path]) -> Option<Self> {
        let guard = Self(paths.iter().map(|path| path.to_path_buf()).collect());
        if chattr("+i", &guard.0) {
            Some(guard)
        } else {
            eprintln!("chattr +i refused here; skipping the read-only file test");
            None
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        // Else the temporary directory could not be removed.
        assert!(chattr("-i", &self.0), "chattr -i {:?}", self.0);
    }
}

fn chattr(flag: &str, paths: &[PathBuf]) -> bool {
    Process::new("chattr")
        .arg(flag)
        .args(paths)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn immutable_database_file_is_refused_as_read_only() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    store.stored("lobby", "hello");
    drop(store);
    let Some(_immutable) = Immutable::set(&[&db_in(&dir)]) else {
        return;
    };
    assert_open_fails(&db_in(&dir), |error| matches!(error, OpenError::ReadOnly { .. }));
}

#[test]
fn database_made_unwritable_while_open_fails_batches_until_it_is_writable_again() {
    let dir = temp_dir();
    let mut store = open(&db_in(&dir)).unwrap();
    store.stored("lobby", "before");
    let wal = dir.path().join("chat.db-wal");
    let immutable = Immutable::set(&[&db_in(&dir), &wal]);
    if immutable.is_none() {
        return;
    }
    let failed = store.append_all(&[("lobby", "lost 1", None), ("lobby", "lost 2", None)]);
    assert!(
        failed
            .iter()
            .all(|result| matches!(result, Err(StoreError::Io(_) | StoreError::ReadOnly))),
        "{failed:?}"
    );
    drop(immutable);
    store.stored("lobby", "after");
    assert_eq!(
        texts(&store.read("lobby", Range::Latest, 10)),
        ["before", "after"]
    );
}

#[test]
fn real_write_failure_fails_the_batch_and_the_store_recovers() {
    let dir = temp_dir();
    let output = child(Role::FileSizeLimit, &db_in(&dir)).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains("limited: every message failed ("),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("unlimited: stored\n"), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("kept: [\"before\", \"after\"]\n"),
        "{stdout}\n{stderr}"
    );
}

// ---- crash safety ----

#[test]
fn acked_appends_survive_sigkill() {
    const ACKS_BEFORE_KILL: usize = 300;
    let dir = temp_dir();
    let mut process = child(Role::Crash, &db_in(&dir))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
    let mut acked: Vec<(Token, u64)> = Vec::new();
    let deadline = Instant::now() + WAIT;
    let parse = |line: String, acked: &mut Vec<(Token, u64)>| {
        if let Some(rest) = line.strip_prefix("acked ") {
            let (token, id) = rest.split_once(' ').unwrap();
            acked.push((token.parse().unwrap(), id.parse().unwrap()));
        }
    };
    while acked.len() < ACKS_BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "the child acked only {} messages",
            acked.len()
        );
        parse(
            lines.next().expect("the child is still running").unwrap(),
            &mut acked,
        );
    }
    process.kill().unwrap(); // SIGKILL: no destructor, no flush, no checkpoint
    process.wait().unwrap();
    // Acks printed before the kill are still in the pipe.
    for line in lines {
        parse(line.unwrap(), &mut acked);
    }

    let mut store = open(&db_in(&dir)).unwrap();
    let kept: std::collections::HashMap<u64, String> = store
        .everything_in(CRASH_ROOM)
        .into_iter()
        .map(|message| (message.id, message.text))
        .collect();
    for (token, id) in &acked {
        assert_eq!(
            kept.get(id),
            Some(&crash_text(*token)),
            "acked id {id} (token {token}) survived"
        );
    }
    assert!(store.info.last_id >= acked.iter().map(|(_, id)| *id).max().unwrap());
}

// ---- the other process ----

/// What the re-run test binary does (the value of the [`CHILD_ROLE`] variable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Append forever, printing `acked TOKEN ID` as each ack arrives.
    Crash,
    /// Try to open the store and print `open: ok` or `open: ERROR`.
    Open,
    /// Fail appends with a real write error from the kernel (a file size limit), then recover.
    FileSizeLimit,
}

const CHILD_ROLE: &str = "WSCHAT_STORE_CHILD_ROLE";
const CHILD_DB: &str = "WSCHAT_STORE_CHILD_DB";
const CRASH_ROOM: &str = "crash";

fn crash_text(token: Token) -> String {
    format!("message {token}")
}

/// This test binary again, running only [`child_process`] in `role` on `path`.
fn child(role: Role, path: &Path) -> Process {
    let mut process = Process::new(std::env::current_exe().unwrap());
    process
        .args([
            "--exact",
            "store::sqlite::tests::child_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROLE, format!("{role:?}"))
        .env(CHILD_DB, path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    process
}

#[test]
#[ignore = "the other process of the tests above; does nothing when run alone"]
fn child_process() {
    let (Ok(role), Some(path)) = (std::env::var(CHILD_ROLE), std::env::var_os(CHILD_DB)) else {
        return;
    };
    let path = PathBuf::from(path);
    match role.as_str() {
        "Crash" => append_until_killed(&path),
        "Open" => {
            let line = match open(&path) {
                Ok(_) => "open: ok".to_owned(),
                Err(error) => format!("open: {error}"),
            };
            say(&line);
        }
        "FileSizeLimit" => fail_on_file_size_limit(&path),
        other => panic!("unknown role {other}"),
    }
}

/// One line to the parent, in one write, at once.
fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(format!("{line}\n").as_bytes()).unwrap();
    stdout.flush().unwrap();
}

fn append_until_killed(path: &Path) -> ! {
    /// Messages submitted but not yet answered: enough that the kill lands mid-commit.
    const IN_FLIGHT: usize = 64;
    let mut store = open(path).unwrap();
    let mut next: Token = 0;
    let mut waiting = 0;
    loop {
        let mut batch = Vec::new();
        while waiting + batch.len() < IN_FLIGHT {
            next += 1;
            batch.push(message(
                next,
                CRASH_ROOM,
                &crash_text(next),
                Some(&format!("key-{next}")),
            ));
        }
        waiting += batch.len();
        store.handle.submit(vec![Command::Append(batch)]).unwrap();
        store.woken.recv_timeout(WAIT).unwrap();
        // Announcements of what was stored are not answers.
        for outcome in store
            .handle
            .try_results()
            .filter(|outcome| outcome.token().is_some())
        {
            waiting -= 1;
            if let Ok(Appended::Stored { id }) = appended(&outcome) {
                say(&format!("acked {} {id}", outcome.token().unwrap_or_default()));
            }
        }
    }
}

fn fail_on_file_size_limit(path: &Path) {
    // Past the limit the kernel sends SIGXFSZ, which would kill the process; caught, the write
    // fails with EFBIG instead, as it would on a full disk.
    let caught = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGXFSZ, Arc::clone(&caught)).unwrap();
    let mut store = open(path).unwrap();
    store.stored("lobby", "before");
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let limit = [path, &wal]
        .iter()
        .map(|file| std::fs::metadata(file).map_or(0, |meta| meta.len()))
        .max()
        .unwrap();
    set_file_size_limit(&format!("{limit}:"));

    let big = "x".repeat(16 * 1024);
    let failed = store.append_all(&vec![("lobby", big.as_str(), None); 16]);
    if failed
        .iter()
        .all(|result| matches!(result, Err(StoreError::Io(_) | StoreError::DiskFull)))
    {
        say(&format!("limited: every message failed ({:?})", failed[0]));
    } else {
        say(&format!("limited: {failed:?}"));
    }

    set_file_size_limit("unlimited:");
    match store.append("lobby", "after", None) {
        Ok(Appended::Stored { .. }) => say("unlimited: stored"),
        other => say(&format!("unlimited: {other:?}")),
    }
    say(&format!(
        "kept: {:?}",
        texts(&store.read("lobby", Range::Latest, 100))
    ));
}

/// Sets this process's soft RLIMIT_FSIZE (`prlimit` syntax: `SOFT:`).
fn set_file_size_limit(soft: &str) {
    let status = Process::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--fsize={soft}"),
        ])
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success());
}
