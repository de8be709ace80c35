//! The store's semantics in a few lines of memory, answering at once: the model the SQLite and
//! Redis stores are held to, and the store of tests and fuzz targets that drive the chat and the
//! loop without a writer thread or a network.
//!
//! It keeps what the store's contract promises and nothing more durable than a process: ids that
//! only grow, keys unique per room, retention of the newest `keep_per_room` messages per room,
//! pages oldest first with `more` and `prev`, the feed ([`Outcome::Posted`] after each message
//! stored, with its room's previous id), and the coordination of one process
//! ([`Coordination`]). [`MemoryStore::fail_appends`] makes every append fail, like a full disk.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::local::Coordination;
use super::{
    Appended, Command, MAX_PAGE_LEN, NewMessage, Outcome, Page, Posted, Range, Read, StoreError,
    StoredMessage,
};

/// A message and the id of its room's message before it.
#[derive(Debug, Clone)]
struct Kept {
    message: StoredMessage,
    prev: u64,
}

/// An in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    last_id: u64,
    keep_per_room: usize,
    /// Each room's messages by id.
    rooms: HashMap<String, BTreeMap<u64, Kept>>,
    /// Each room's newest id, kept when its messages are pruned.
    newest: HashMap<String, u64>,
    /// (room, key) → id of the message that key stored.
    keys: HashMap<(String, String), u64>,
    failing: bool,
    coordination: Coordination,
}

impl MemoryStore {
    /// A store that keeps the newest `keep_per_room` messages of each room.
    pub fn new(keep_per_room: usize) -> Self {
        Self {
            keep_per_room: keep_per_room.max(1),
            ..Self::default()
        }
    }

    /// While on, every append fails with [`StoreError::SimulatedFailure`]; reads still work.
    pub fn fail_appends(&mut self, on: bool) {
        self.failing = on;
    }

    /// The highest id ever given.
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Runs one turn's commands in order at `now` (resume tokens expire), and answers each token,
    /// in order; every message stored is also announced ([`Outcome::Posted`]) right after its
    /// answer.
    pub fn execute(&mut self, commands: Vec<Command>, now: Instant) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for command in commands {
            match command {
                Command::Append(messages) => {
                    for message in messages {
                        let token = message.token;
                        let result = self.append(message);
                        let posted = result.as_ref().ok().and_then(|(_, posted)| posted.clone());
                        outcomes.push(Outcome::Append {
                            token,
                            result: result.map(|(appended, _)| appended),
                        });
                        outcomes.extend(posted.map(Outcome::Posted));
                    }
                }
                Command::Read(read) => outcomes.push(Outcome::Read {
                    token: read.token,
                    result: Ok(self.read(&read)),
                }),
                coordination => self.coordination.execute(coordination, now, &mut outcomes),
            }
        }
        outcomes
    }

    /// Stores a message: its answer, and its announcement if it was stored now.
    fn append(&mut self, message: NewMessage) -> Result<(Appended, Option<Posted>), StoreError> {
        if self.failing {
            return Err(StoreError::SimulatedFailure);
        }
        let NewMessage {
            token,
            room,
            nickname,
            text,
            ts,
            key,
            lease,
        } = message;
        if let Some(key) = &key
            && let Some(&id) = self.keys.get(&(room.clone(), key.as_str().to_owned()))
        {
            return Ok((Appended::Duplicate { id }, None));
        }
        if lease.is_some_and(|lease| !self.coordination.holds(&lease)) {
            return Err(StoreError::NotOwner);
        }
        self.last_id += 1;
        let id = self.last_id;
        if let Some(key) = key {
            self.keys.insert((room.clone(), key.as_str().to_owned()), id);
        }
        let prev = self.newest.insert(room.clone(), id).unwrap_or(0);
        let stored = StoredMessage {
            id,
            room: room.clone(),
            nickname,
            text,
            ts,
        };
        let messages = self.rooms.entry(room.clone()).or_default();
        messages.insert(
            id,
            Kept {
                message: stored.clone(),
                prev,
            },
        );
        while messages.len() > self.keep_per_room {
            if let Some((old, _)) = messages.pop_first() {
                // A key lives as long as its message.
                self.keys
                    .retain(|(key_room, _), kept| !(key_room == &room && *kept == old));
            }
        }
        let posted = Posted {
            message: stored,
            prev_id: prev,
            origin: Some(token),
        };
        Ok((Appended::Stored { id }, Some(posted)))
    }

    fn read(&self, read: &Read) -> Page {
        let Some(messages) = self.rooms.get(&read.room) else {
            return Page::default();
        };
        let limit = read.limit.min(MAX_PAGE_LEN);
        let (page, more) = match read.range {
            Range::Since(after) => {
                let mut newer = messages.range(after.saturating_add(1)..).map(|(_, kept)| kept);
                let page: Vec<&Kept> = newer.by_ref().take(limit).collect();
                (page, newer.next().is_some())
            }
            Range::Before(before) => newest(messages.range(..before).map(|(_, kept)| kept), limit),
            Range::Latest => newest(messages.values(), limit),
        };
        Page {
            prev: page.first().map(|first| first.prev),
            messages: page.iter().map(|kept| kept.message.clone()).collect(),
            more,
        }
    }
}

/// The newest `limit` of `kept` (given oldest first), oldest first, and whether older remain.
fn newest<'a>(kept: impl DoubleEndedIterator<Item = &'a Kept>, limit: usize) -> (Vec<&'a Kept>, bool) {
    let mut older = kept.rev();
    let mut page: Vec<&Kept> = older.by_ref().take(limit).collect();
    page.reverse();
    (page, older.next().is_some())
}
