//! One room's feed: the store's announcements of stored messages, turned into one gapless order.
//!
//! The store announces every message it stores with the id of the room's message before it
//! ([`Posted::prev_id`]). The feed remembers the last id it let through; an announcement whose
//! previous id is that one is the next message, one at or below it was seen already (a duplicate,
//! or a message a history read delivered first), and one whose previous id is higher reveals a
//! hole: messages announced while this process was not listening, or lost in transit. Then the
//! feed stops letting messages through, reads the hole from the store's history
//! ([`Range::Since`]), delivers what it finds, and only then goes on with what waited meanwhile.
//!
//! If the history no longer holds what is missing (the store pruned it), the feed says so with a
//! [`Step::Missed`] rather than leave a silent hole. A hole is judged lost only when a catch-up
//! read that started after the messages on either side of it were announced did not find it:
//! announcements reach this process in the order the store made them, so a message still in
//! flight when the read ran is announced before anything after it.
//!
//! It is plain state, fed the store's answers: no tokens of its own, no clock. The chat issues the
//! reads it asks for ([`Progress::catch_up`], [`Progress::load`]) and acts on its [`Step`]s.

use std::collections::BTreeMap;

use crate::store::{MAX_PAGE_LEN, Page, Posted, Range, Token};

/// Announcements held while a read is in flight. A room hears this many messages in the few
/// milliseconds a read takes only under a flood; past it, further announcements are dropped and
/// another catch-up read fetches them from the store, which has them.
pub const MAX_WAITING: usize = 4096;

/// What the feed asks the chat to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Show this message to the room: it is the next one.
    Deliver(Posted),
    /// The room's messages with ids above `after`, up to `until`, are gone from the store: the
    /// room is told, and the feed goes on after them.
    Missed { after: u64, until: u64 },
}

/// What one input made the feed do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub steps: Vec<Step>,
    /// A catch-up read to issue; its token goes to [`Feed::started`].
    pub catch_up: Option<Range>,
    /// The feed knows nothing yet (its first read failed): start a load ([`Feed::start_load`]).
    pub load: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No read has told where the room is: news waits for a load.
    Unloaded,
    /// A read of the room's recent history is in flight (`fresh`: the first, which tells where
    /// the room is; otherwise a refill of the chat's cache, up to the last id seen).
    Loading { token: Token, fresh: bool },
    /// Every announcement is compared with the last id seen as it comes.
    Live,
    /// A hole is being read from the history; news waits.
    CatchingUp { token: Token },
    /// A catch-up read failed: the next news tries again.
    Stalled,
}

/// How the waiting announcements are judged once a read is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// A hole means: read it.
    Normal,
    /// A catch-up read just finished: whatever hole remains, the history did not hold.
    AfterCatchUp,
}

/// The ordered feed of one room.
#[derive(Debug)]
pub struct Feed {
    state: State,
    last_seen: u64,
    /// Announcements that came while a read was in flight, by id.
    waiting: BTreeMap<u64, Posted>,
    /// The store said "read what came before" while a read was in flight: read again after it.
    recheck: bool,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
}

impl Feed {
    pub fn new() -> Self {
        Self {
            state: State::Unloaded,
            last_seen: 0,
            waiting: BTreeMap::new(),
            recheck: false,
        }
    }

    /// The newest id delivered (or, after a load, the newest in the room then).
    pub fn last_seen(&self) -> u64 {
        self.last_seen
    }

    /// Whether the last id seen means something (a load succeeded).
    pub fn knows_where(&self) -> bool {
        !matches!(self.state, State::Unloaded | State::Loading { fresh: true, .. })
    }

    /// Whether no read is in flight and none is owed: a refill may start.
    pub fn is_live(&self) -> bool {
        self.state == State::Live
    }

    /// Whether a load (first or refill) is in flight.
    pub fn is_loading(&self) -> bool {
        matches!(self.state, State::Loading { .. })
    }

    /// Forgets everything: the store's history is another one now.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// A load read with `token` starts: the room's recent history when nothing is known, or a
    /// refill up to the last id seen (so the page meets the feed exactly). Returns its range.
    pub fn start_load(&mut self, token: Token) -> Range {
        let fresh = !self.knows_where();
        self.state = State::Loading { token, fresh };
        if fresh {
            Range::Latest
        } else {
            Range::Before(self.last_seen.saturating_add(1))
        }
    }

    /// The catch-up read asked for by the last [`Progress`] has `token`.
    pub fn started(&mut self, token: Token) {
        if let State::CatchingUp { token: slot } = &mut self.state {
            *slot = token;
        }
    }

    /// A load's answer (`None`: it failed). `None` back if `token` is not the load in flight.
    pub fn loaded(&mut self, token: Token, page: Option<&Page>) -> Option<Progress> {
        let State::Loading {
            token: expected,
            fresh,
        } = self.state
        else {
            return None;
        };
        if expected != token {
            return None;
        }
        let mut progress = Progress::default();
        match (page, fresh) {
            (Some(page), true) => {
                self.last_seen = page.messages.last().map_or(0, |message| message.id);
                self.state = State::Live;
            }
            // A refill's page ends at the last id seen; the feed is where it was.
            (Some(_), false) | (None, false) => self.state = State::Live,
            (None, true) => {
                self.state = State::Unloaded;
                return Some(progress);
            }
        }
        self.after_read(Drain::Normal, &mut progress);
        Some(progress)
    }

    /// A catch-up read's answer (`None`: it failed). `None` back if `token` is not the read in
    /// flight.
    pub fn caught_up(&mut self, token: Token, page: Option<&Page>) -> Option<Progress> {
        if self.state != (State::CatchingUp { token }) {
            return None;
        }
        let mut progress = Progress::default();
        let Some(page) = page else {
            self.state = State::Stalled;
            return Some(progress);
        };
        let mut prev = self.last_seen;
        if let (Some(first), Some(page_prev)) = (page.messages.first(), page.prev)
            && first.id > self.last_seen
            && page_prev > self.last_seen
        {
            // The history starts after the hole: what was between is pruned.
            progress.steps.push(Step::Missed {
                after: self.last_seen,
                until: page_prev,
            });
            prev = page_prev;
        }
        for message in &page.messages {
            if message.id <= self.last_seen {
                continue;
            }
            let posted = Posted {
                message: message.clone(),
                prev_id: prev,
                origin: None,
            };
            prev = message.id;
            self.deliver(posted, &mut progress);
        }
        if page.more {
            self.begin_catch_up(&mut progress);
            return Some(progress);
        }
        self.state = State::Live;
        self.after_read(Drain::AfterCatchUp, &mut progress);
        Some(progress)
    }

    /// An announcement.
    pub fn posted(&mut self, posted: Posted) -> Progress {
        let mut progress = Progress::default();
        match self.state {
            State::Live => self.judge(posted, Drain::Normal, &mut progress),
            State::Stalled => {
                self.wait(posted);
                self.begin_catch_up(&mut progress);
            }
            State::Unloaded => {
                self.wait(posted);
                progress.load = true;
            }
            State::Loading { .. } | State::CatchingUp { .. } => self.wait(posted),
        }
        progress
    }

    /// The store says announcements reach this process from now on, and any before may have been
    /// missed: read since the last id seen.
    pub fn following(&mut self) -> Progress {
        let mut progress = Progress::default();
        match self.state {
            State::Live | State::Stalled => self.begin_catch_up(&mut progress),
            State::Unloaded => progress.load = true,
            State::Loading { .. } | State::CatchingUp { .. } => self.recheck = true,
        }
        progress
    }

    /// A read is done and the feed is live: read again if asked meanwhile, else go through what
    /// waited.
    fn after_read(&mut self, drain: Drain, progress: &mut Progress) {
        if self.recheck {
            self.recheck = false;
            self.begin_catch_up(progress);
            return;
        }
        while self.state == State::Live {
            let Some((_, posted)) = self.waiting.pop_first() else {
                return;
            };
            self.judge(posted, drain, progress);
        }
    }

    /// Compares one announcement with the last id seen, while live.
    fn judge(&mut self, posted: Posted, drain: Drain, progress: &mut Progress) {
        if posted.message.id <= self.last_seen {
            return; // Seen already.
        }
        if posted.prev_id <= self.last_seen {
            return self.deliver(posted, progress);
        }
        match drain {
            Drain::Normal => {
                self.wait(posted);
                self.begin_catch_up(progress);
            }
            Drain::AfterCatchUp => {
                progress.steps.push(Step::Missed {
                    after: self.last_seen,
                    until: posted.prev_id,
                });
                self.deliver(posted, progress);
            }
        }
    }

    fn deliver(&mut self, posted: Posted, progress: &mut Progress) {
        self.last_seen = posted.message.id;
        progress.steps.push(Step::Deliver(posted));
    }

    fn wait(&mut self, posted: Posted) {
        if self.knows_where() && posted.message.id <= self.last_seen {
            return;
        }
        if self.waiting.len() >= MAX_WAITING {
            // Dropped here, found by the next catch-up read, which starts after it was stored.
            self.recheck = true;
            return;
        }
        self.waiting.insert(posted.message.id, posted);
    }

    fn begin_catch_up(&mut self, progress: &mut Progress) {
        // The token comes with `started`.
        self.state = State::CatchingUp { token: 0 };
        progress.catch_up = Some(Range::Since(self.last_seen));
    }
}

/// How many messages one catch-up read asks for: as many as the store gives in one page.
pub const CATCH_UP_PAGE: usize = MAX_PAGE_LEN;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredMessage;

    fn posted(id: u64, prev_id: u64) -> Posted {
        Posted {
            message: StoredMessage {
                id,
                room: "r".into(),
                nickname: "n".into(),
                text: format!("m{id}"),
                ts: 0,
            },
            prev_id,
            origin: None,
        }
    }

    fn page(ids: &[u64], prev: Option<u64>, more: bool) -> Page {
        Page {
            messages: ids.iter().map(|&id| posted(id, 0).message).collect(),
            more,
            prev,
        }
    }

    fn delivered(progress: &Progress) -> Vec<u64> {
        progress
            .steps
            .iter()
            .filter_map(|step| match step {
                Step::Deliver(posted) => Some(posted.message.id),
                Step::Missed { .. } => None,
            })
            .collect()
    }

    /// A feed loaded at `last`, live.
    fn live_at(last: u64) -> Feed {
        let mut feed = Feed::new();
        assert_eq!(feed.start_load(1), Range::Latest);
        let ids: Vec<u64> = (1..=last).collect();
        feed.loaded(1, Some(&page(&ids, Some(0), false))).unwrap();
        assert!(feed.is_live());
        feed
    }

    #[test]
    fn the_next_message_goes_through_at_once() {
        let mut feed = live_at(3);
        assert_eq!(delivered(&feed.posted(posted(5, 3))), [5]);
        assert_eq!(feed.last_seen(), 5);
    }

    #[test]
    fn a_message_seen_before_is_dropped() {
        let mut feed = live_at(3);
        assert_eq!(feed.posted(posted(3, 2)), Progress::default());
        assert_eq!(feed.posted(posted(2, 1)), Progress::default());
    }

    #[test]
    fn a_hole_is_read_from_the_history_before_anything_after_it_goes_through() {
        let mut feed = live_at(3);
        let progress = feed.posted(posted(9, 7));
        assert_eq!(progress.catch_up, Some(Range::Since(3)));
        assert!(progress.steps.is_empty());
        feed.started(20);
        // News during the read waits.
        assert_eq!(feed.posted(posted(11, 9)), Progress::default());
        let progress = feed.caught_up(20, Some(&page(&[7, 9], Some(3), false))).unwrap();
        assert_eq!(delivered(&progress), [7, 9, 11]);
        assert_eq!(progress.catch_up, None);
        assert!(feed.is_live());
    }

    #[test]
    fn a_hole_the_history_no_longer_holds_is_missed_not_silent() {
        let mut feed = live_at(3);
        feed.posted(posted(9, 7));
        feed.started(20);
        // The history was pruned up to 7: it starts at 7, whose previous is 5.
        let progress = feed.caught_up(20, Some(&page(&[7, 9], Some(5), false))).unwrap();
        assert_eq!(progress.steps[0], Step::Missed { after: 3, until: 5 });
        assert_eq!(delivered(&progress), [7, 9]);
    }

    #[test]
    fn a_hole_still_open_after_a_complete_catch_up_is_missed() {
        let mut feed = live_at(3);
        feed.posted(posted(9, 7));
        feed.started(20);
        let progress = feed.caught_up(20, Some(&page(&[], None, false))).unwrap();
        assert_eq!(progress.steps[0], Step::Missed { after: 3, until: 7 });
        assert_eq!(delivered(&progress), [9]);
    }

    #[test]
    fn a_long_hole_is_read_page_after_page() {
        let mut feed = live_at(0);
        feed.posted(posted(9, 8));
        feed.started(20);
        let progress = feed
            .caught_up(20, Some(&page(&[1, 2, 3], Some(0), true)))
            .unwrap();
        assert_eq!(delivered(&progress), [1, 2, 3]);
        assert_eq!(progress.catch_up, Some(Range::Since(3)));
        feed.started(21);
        assert_eq!(
            feed.caught_up(20, Some(&page(&[], None, false))),
            None,
            "a stale answer"
        );
        let progress = feed.caught_up(21, Some(&page(&[4, 8], Some(3), false))).unwrap();
        assert_eq!(delivered(&progress), [4, 8, 9]);
    }

    #[test]
    fn news_during_a_load_waits_and_is_judged_against_the_page() {
        let mut feed = Feed::new();
        feed.start_load(1);
        assert_eq!(feed.posted(posted(2, 1)), Progress::default());
        assert_eq!(feed.posted(posted(4, 2)), Progress::default());
        // The page already had 1 and 2.
        let progress = feed.loaded(1, Some(&page(&[1, 2], Some(0), false))).unwrap();
        assert_eq!(delivered(&progress), [4]);
    }

    #[test]
    fn following_reads_since_the_last_id_and_during_a_read_reads_again_after_it() {
        let mut feed = live_at(2);
        assert_eq!(feed.following().catch_up, Some(Range::Since(2)));
        feed.started(5);
        assert_eq!(feed.following(), Progress::default());
        let progress = feed.caught_up(5, Some(&page(&[], None, false))).unwrap();
        assert_eq!(progress.catch_up, Some(Range::Since(2)), "once more");
    }

    #[test]
    fn a_failed_read_stalls_until_the_next_news() {
        let mut feed = live_at(2);
        feed.posted(posted(5, 4));
        feed.started(5);
        assert_eq!(feed.caught_up(5, None), Some(Progress::default()));
        let progress = feed.posted(posted(6, 5));
        assert_eq!(progress.catch_up, Some(Range::Since(2)));
        feed.started(6);
        let progress = feed
            .caught_up(6, Some(&page(&[4, 5, 6], Some(2), false)))
            .unwrap();
        assert_eq!(delivered(&progress), [4, 5, 6]);
    }

    #[test]
    fn a_failed_first_load_waits_for_news_to_load_again() {
        let mut feed = Feed::new();
        feed.start_load(1);
        assert_eq!(feed.loaded(1, None), Some(Progress::default()));
        assert!(!feed.knows_where());
        assert!(feed.posted(posted(3, 2)).load);
        assert_eq!(feed.start_load(2), Range::Latest);
        let progress = feed.loaded(2, Some(&page(&[2, 3], Some(0), false))).unwrap();
        assert!(progress.steps.is_empty(), "the page is history, not news");
    }

    #[test]
    fn a_refill_reads_up_to_the_last_id_seen() {
        let mut feed = live_at(4);
        assert_eq!(feed.start_load(9), Range::Before(5));
        feed.posted(posted(6, 4));
        let progress = feed.loaded(9, Some(&page(&[3, 4], Some(2), false))).unwrap();
        assert_eq!(delivered(&progress), [6]);
    }

    #[test]
    fn dropped_duplicated_and_reordered_news_come_out_once_in_order() {
        // Every order of these announcements, with duplicates: the same delivery.
        let history: Vec<Posted> = (1..=6).map(|id| posted(id, id - 1)).collect();
        let orders: [&[usize]; 5] = [
            &[0, 1, 2, 3, 4, 5],
            &[1, 0, 3, 2, 5, 4],
            &[5, 4, 3, 2, 1, 0],
            &[0, 0, 2, 2, 5, 5],
            &[3, 5],
        ];
        for order in orders {
            let mut feed = live_at(0);
            let mut out = Vec::new();
            for &i in order {
                let mut progress = feed.posted(history[i].clone());
                // The store answers every catch-up read at once, from the whole history.
                while let Some(Range::Since(after)) = progress.catch_up {
                    out.extend(delivered(&progress));
                    feed.started(99);
                    let ids: Vec<u64> = (after + 1..=6).collect();
                    progress = feed.caught_up(99, Some(&page(&ids, Some(after), false))).unwrap();
                }
                out.extend(delivered(&progress));
            }
            // Whatever was dropped at the end, a resubscription finds.
            let mut progress = feed.following();
            while let Some(Range::Since(after)) = progress.catch_up {
                out.extend(delivered(&progress));
                feed.started(99);
                let ids: Vec<u64> = (after + 1..=6).collect();
                progress = feed.caught_up(99, Some(&page(&ids, Some(after), false))).unwrap();
            }
            out.extend(delivered(&progress));
            assert_eq!(out, [1, 2, 3, 4, 5, 6], "order {order:?}");
        }
    }
}
