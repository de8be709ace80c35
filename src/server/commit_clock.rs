//! Store commit latency as the event loop sees it: from the turn that handed a message to the store
//! to the turn its answer arrived, the time a client waits for its `ack` beyond the loop's own work.
//!
//! Measured here, on the loop's thread, rather than inside the store's writer: it includes the
//! hand-over both ways (the channel, the waker, the loop's next turn), which is what a client
//! feels, and it keeps every clock read in `server`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::store::{Command, Outcome, Token};

/// Appends handed to the store and not yet answered, oldest first.
#[derive(Debug, Default)]
pub struct CommitClock {
    pending: VecDeque<(Token, Instant)>,
}

impl CommitClock {
    /// `commands` were handed to the store at `now`.
    pub fn submitted(&mut self, commands: &[Command], now: Instant) {
        for command in commands {
            if let Command::Append(messages) = command {
                self.pending
                    .extend(messages.iter().map(|message| (message.token, now)));
            }
        }
    }

    /// The store answered; for an append, how long it took. The store answers appends in the
    /// order it was given them, so the answer is at the front: anything older still there was
    /// answered without being seen (it cannot be, but then it is forgotten, not leaked).
    pub fn answered(&mut self, outcome: &Outcome, now: Instant) -> Option<Duration> {
        let Outcome::Append { token, .. } = outcome else {
            return None;
        };
        while let Some(&(front, since)) = self.pending.front() {
            if front > *token {
                return None;
            }
            self.pending.pop_front();
            if front == *token {
                return Some(now.saturating_duration_since(since));
            }
        }
        None
    }

    /// Appends waiting for their answer.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Appended, NewMessage, Range, Read};

    fn append(tokens: &[Token]) -> Command {
        Command::Append(
            tokens
                .iter()
                .map(|&token| NewMessage {
                    token,
                    room: "lobby".into(),
                    nickname: "a".into(),
                    text: "t".into(),
                    ts: 0,
                    key: None,
                    lease: None,
                })
                .collect(),
        )
    }

    fn stored(token: Token) -> Outcome {
        Outcome::Append {
            token,
            result: Ok(Appended::Stored { id: token }),
        }
    }

    #[test]
    fn an_append_is_timed_from_its_hand_over_to_its_answer() {
        let t0 = crate::server::clock().instant;
        let mut clock = CommitClock::default();
        clock.submitted(&[append(&[1, 2])], t0);
        clock.submitted(&[append(&[3])], t0 + Duration::from_millis(5));
        let at = t0 + Duration::from_millis(8);
        assert_eq!(clock.answered(&stored(1), at), Some(Duration::from_millis(8)));
        assert_eq!(clock.answered(&stored(2), at), Some(Duration::from_millis(8)));
        assert_eq!(clock.answered(&stored(3), at), Some(Duration::from_millis(3)));
        assert!(clock.is_empty());
    }

    #[test]
    fn reads_are_not_timed() {
        let t0 = crate::server::clock().instant;
        let mut clock = CommitClock::default();
        let read = Command::Read(Read {
            token: 7,
            room: "lobby".into(),
            range: Range::Latest,
            limit: 10,
        });
        clock.submitted(&[read], t0);
        assert!(clock.is_empty());
        let outcome = Outcome::Read {
            token: 7,
            result: Ok(Default::default()),
        };
        assert_eq!(clock.answered(&outcome, t0), None);
    }

    #[test]
    fn an_answer_never_seen_is_forgotten_not_leaked() {
        let t0 = crate::server::clock().instant;
        let mut clock = CommitClock::default();
        clock.submitted(&[append(&[1, 2, 3])], t0);
        assert!(clock.answered(&stored(3), t0).is_some());
        assert!(clock.is_empty());
        // An answer to something never handed over is not timed.
        assert_eq!(clock.answered(&stored(9), t0), None);
    }
}
