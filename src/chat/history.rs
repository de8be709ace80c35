//! What the chat keeps of each room's history in memory: a cache in front of the store, with one
//! byte budget for all rooms together.
//!
//! The store holds every message; the cache holds, per room, a window of its most recent messages
//! so that a `welcome` can be answered without a round trip to the store. A window is *complete*
//! when it holds everything a welcome shows (the room's last `per_room` messages, or all of them if
//! the room has fewer); only then does it answer. Messages enter at the commit that makes them
//! visible, or by the page the store returns for a room the cache did not know. When the cache is
//! over its budget, the oldest cached messages (the lowest ids, whatever their room) go first, and
//! their rooms' windows stop being complete: the next welcome there reads from the store again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use super::protocol::ChatMessage;

/// Bytes a cached message costs beyond its strings: the `Rc` allocation, the message's fields,
/// the queue slot and the index entry, rounded up.
const OVERHEAD: usize = 160;

#[derive(Debug, Default)]
struct Window {
    messages: VecDeque<Rc<ChatMessage>>,
    complete: bool,
}

/// Recent messages per room, within a byte budget.
#[derive(Debug)]
pub struct HistoryCache {
    per_room: usize,
    budget: usize,
    used: usize,
    rooms: HashMap<String, Window>,
    /// Every cached message's room, by id: the order of eviction.
    by_id: BTreeMap<u64, String>,
}

/// What one cached message costs.
fn cost(message: &ChatMessage) -> usize {
    message.text.len() + message.nickname.len() + message.room.len() + OVERHEAD
}

impl HistoryCache {
    /// A cache that keeps up to `per_room` messages of each room, `budget` bytes in all.
    pub fn new(per_room: usize, budget: usize) -> Self {
        Self {
            per_room,
            budget,
            used: 0,
            rooms: HashMap::new(),
            by_id: BTreeMap::new(),
        }
    }

    /// Bytes the cached messages cost now.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The messages a welcome to `room` shows, oldest first, if the cache holds all of them.
    pub fn latest(&self, room: &str) -> Option<Vec<&ChatMessage>> {
        let window = self.rooms.get(room).filter(|window| window.complete)?;
        Some(window.messages.iter().map(Rc::as_ref).collect())
    }

    /// Whether a welcome to `room` can be answered from memory.
    pub fn knows(&self, room: &str) -> bool {
        self.rooms.get(room).is_some_and(|window| window.complete)
    }

    /// Whether anything of `room` is cached.
    pub fn holds(&self, room: &str) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|window| !window.messages.is_empty())
    }

    /// A message the store just committed: the newest of its room.
    pub fn push(&mut self, message: Rc<ChatMessage>) {
        let room = message.room.clone();
        let window = self.rooms.entry(room.clone()).or_default();
        self.used += cost(&message);
        self.by_id.insert(message.id, room.clone());
        window.messages.push_back(message);
        if window.messages.len() > self.per_room {
            // A welcome shows no more than `per_room`: the window stays complete.
            self.pop_front(&room, false);
        }
        self.evict_over_budget();
    }

    /// The newest messages of `room`, as the store returned them (oldest first): the window now
    /// holds exactly them, and is complete.
    pub fn fill(&mut self, room: &str, messages: Vec<ChatMessage>) {
        self.forget(room);
        let skip = messages.len().saturating_sub(self.per_room);
        let mut window = Window {
            messages: VecDeque::with_capacity(messages.len() - skip),
            complete: true,
        };
        for message in messages.into_iter().skip(skip) {
            self.used += cost(&message);
            self.by_id.insert(message.id, room.to_owned());
            window.messages.push_back(Rc::new(message));
        }
        self.rooms.insert(room.to_owned(), window);
        self.evict_over_budget();
    }

    /// Drops `room`'s window (the room is gone from memory; the store still has its messages).
    pub fn forget(&mut self, room: &str) {
        if let Some(window) = self.rooms.remove(room) {
            for message in window.messages {
                self.used -= cost(&message);
                self.by_id.remove(&message.id);
            }
        }
    }

    /// The id of `room`'s newest cached message (for ordering rooms by age).
    pub fn newest_id(&self, room: &str) -> u64 {
        self.rooms
            .get(room)
            .and_then(|window| window.messages.back())
            .map_or(0, |message| message.id)
    }

    /// Over budget: drop the oldest cached messages, whatever their room.
    fn evict_over_budget(&mut self) {
        while self.used > self.budget {
            let Some((id, room)) = self.by_id.first_key_value().map(|(id, room)| (*id, room.clone())) else {
                return;
            };
            self.pop_front(&room, true);
            // Windows are in id order, so the room's front was that message; never loop on an
            // index entry that outlived it.
            self.by_id.remove(&id);
        }
    }

    /// Removes the oldest message of `room`'s window; after a budget eviction the window no
    /// longer holds everything a welcome shows.
    fn pop_front(&mut self, room: &str, evicted: bool) {
        let Some(window) = self.rooms.get_mut(room) else {
            return;
        };
        if let Some(message) = window.messages.pop_front() {
            self.used -= cost(&message);
            self.by_id.remove(&message.id);
        }
        if evicted {
            window.complete = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: u64, room: &str, text: &str) -> ChatMessage {
        ChatMessage {
            id,
            room: room.into(),
            nickname: "n".into(),
            text: text.into(),
            ts: 0,
        }
    }

    #[test]
    fn a_room_the_store_has_not_answered_for_is_not_known() {
        let mut cache = HistoryCache::new(10, 1 << 20);
        assert_eq!(cache.latest("lobby"), None);
        cache.push(Rc::new(message(1, "lobby", "hi")));
        assert_eq!(cache.latest("lobby"), None, "older messages may be in the store");
        cache.fill("lobby", vec![message(1, "lobby", "hi")]);
        assert_eq!(cache.latest("lobby").unwrap().len(), 1);
    }

    #[test]
    fn a_window_keeps_the_last_per_room_messages_and_stays_complete() {
        let mut cache = HistoryCache::new(3, 1 << 20);
        cache.fill("a", Vec::new());
        for id in 1..=5 {
            cache.push(Rc::new(message(id, "a", "x")));
        }
        let ids: Vec<u64> = cache.latest("a").unwrap().iter().map(|m| m.id).collect();
        assert_eq!(ids, [3, 4, 5]);
    }

    #[test]
    fn over_budget_the_oldest_messages_of_any_room_go_first() {
        let one = cost(&message(0, "a", "0123456789"));
        let mut cache = HistoryCache::new(100, 3 * one);
        cache.fill("a", Vec::new());
        cache.fill("b", Vec::new());
        cache.push(Rc::new(message(1, "a", "0123456789")));
        cache.push(Rc::new(message(2, "b", "0123456789")));
        cache.push(Rc::new(message(3, "b", "0123456789")));
        assert!(cache.knows("a") && cache.knows("b"));
        cache.push(Rc::new(message(4, "b", "0123456789")));
        assert!(cache.used() <= 3 * one);
        assert!(
            !cache.knows("a"),
            "a lost its only message: its window is no longer complete"
        );
        assert!(cache.knows("b"), "b lost nothing");
    }

    #[test]
    fn the_budget_holds_however_the_messages_arrive() {
        let mut cache = HistoryCache::new(100, 50_000);
        for id in 0..2_000u64 {
            let room = format!("room{}", id % 300);
            if id < 300 {
                cache.fill(&room, Vec::new());
            }
            cache.push(Rc::new(message(id, &room, &"🙂".repeat(200))));
            assert!(cache.used() <= 50_000);
        }
    }

    #[test]
    fn forgetting_a_room_gives_its_bytes_back() {
        let mut cache = HistoryCache::new(10, 1 << 20);
        cache.fill("a", vec![message(1, "a", "x"), message(2, "a", "y")]);
        assert!(cache.used() > 0);
        cache.forget("a");
        assert_eq!(cache.used(), 0);
        assert!(!cache.holds("a"));
    }
}
