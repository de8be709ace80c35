//! The store's semantics in a few lines of memory, answering at once: the model the SQLite store is
//! held to, and the store of tests and fuzz targets that drive the chat and the loop without a
//! writer thread.
//!
//! It keeps what the store's contract promises and nothing more durable than a process: ids that
//! only grow, keys unique per room, retention of the newest `keep_per_room` messages per room,
//! pages oldest first with `more`. [`MemoryStore::fail_appends`] makes every append fail, like a
//! full disk.

use std::collections::{BTreeMap, HashMap};

use super::{Appended, Command, MAX_PAGE_LEN, Outcome, Page, Range, Read, StoreError, StoredMessage};

/// An in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    last_id: u64,
    keep_per_room: usize,
    /// Each room's messages by id.
    rooms: HashMap<String, BTreeMap<u64, StoredMessage>>,
    /// (room, key) → id of the message that key stored.
    keys: HashMap<(String, String), u64>,
    failing: bool,
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

    /// Runs one turn's commands in order, and answers each token, in order.
    pub fn execute(&mut self, commands: Vec<Command>) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for command in commands {
            match command {
                Command::Append(messages) => {
                    for message in messages {
                        let result = if self.failing {
                            Err(StoreError::SimulatedFailure)
                        } else {
                            Ok(self.append(
                                message.room,
                                message.nickname,
                                message.text,
                                message.ts,
                                message.key,
                            ))
                        };
                        outcomes.push(Outcome::Append {
                            token: message.token,
                            result,
                        });
                    }
                }
                Command::Read(read) => outcomes.push(Outcome::Read {
                    token: read.token,
                    result: Ok(self.read(&read)),
                }),
            }
        }
        outcomes
    }

    fn append(
        &mut self,
        room: String,
        nickname: String,
        text: String,
        ts: u64,
        key: Option<super::IdempotencyKey>,
    ) -> Appended {
        if let Some(key) = &key
            && let Some(&id) = self.keys.get(&(room.clone(), key.as_str().to_owned()))
        {
            return Appended::Duplicate { id };
        }
        self.last_id += 1;
        let id = self.last_id;
        if let Some(key) = key {
            self.keys.insert((room.clone(), key.as_str().to_owned()), id);
        }
        let messages = self.rooms.entry(room.clone()).or_default();
        messages.insert(
            id,
            StoredMessage {
                id,
                room: room.clone(),
                nickname,
                text,
                ts,
            },
        );
        while messages.len() > self.keep_per_room {
            if let Some((old, _)) = messages.pop_first() {
                // A key lives as long as its message.
                self.keys
                    .retain(|(key_room, _), kept| !(key_room == &room && *kept == old));
            }
        }
        Appended::Stored { id }
    }

    fn read(&self, read: &Read) -> Page {
        let Some(messages) = self.rooms.get(&read.room) else {
            return Page::default();
        };
        let limit = read.limit.min(MAX_PAGE_LEN);
        match read.range {
            Range::Since(after) => {
                let mut newer = messages.range(after.saturating_add(1)..).map(|(_, m)| m.clone());
                let page: Vec<StoredMessage> = newer.by_ref().take(limit).collect();
                Page {
                    more: newer.next().is_some(),
                    messages: page,
                }
            }
            Range::Before(before) => newest(messages.range(..before).map(|(_, m)| m), limit),
            Range::Latest => newest(messages.values(), limit),
        }
    }
}

/// The newest `limit` of `messages` (given oldest first), oldest first, and whether older remain.
fn newest<'a>(messages: impl DoubleEndedIterator<Item = &'a StoredMessage>, limit: usize) -> Page {
    let mut older = messages.rev();
    let mut page: Vec<StoredMessage> = older.by_ref().take(limit).cloned().collect();
    page.reverse();
    Page {
        more: older.next().is_some(),
        messages: page,
    }
}
