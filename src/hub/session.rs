//! A chat session carried over plain HTTP: Server-Sent Events or long-polls.
//!
//! A WebSocket hands each event to its connection as it happens. An HTTP session cannot: its
//! reader (an event stream, or a poll) comes and goes, and a reader may lose what was sent to it
//! (a proxy cuts a stream, a poll's answer never arrives). So its events wait in a queue, numbered,
//! until the client says it has them: an event stream's `Last-Event-ID` (or `?since=`) on
//! reconnecting, a poll's `since`. The queue is bounded in bytes like a WebSocket's output: a
//! session that falls behind is closed, never silently skipped.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use super::Event;
use crate::conn::ConnId;

/// A session's secret id: 128 bits from the OS random source.
pub type Sid = u128;

/// Who reads an HTTP session's events now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// Nobody: the session waits for a reader until it expires.
    None,
    /// An event stream (`GET /sse`) writes each event as it comes.
    Stream(ConnId),
    /// A long-poll (`GET /poll`) is parked until an event comes or its time runs out.
    Poll(ConnId),
}

/// The queue was full: the session fell too far behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// The numbered events of one HTTP session.
#[derive(Debug)]
pub struct HttpSession {
    pub sid: Sid,
    /// Events the client has not confirmed, oldest first.
    queue: VecDeque<(u64, Rc<Event>)>,
    queued_bytes: usize,
    cap: usize,
    /// The number of the last event given (events are numbered from 1).
    last_seq: u64,
    pub reader: Reader,
    /// When the session ends if no reader comes back (set while there is none).
    pub expires: Option<Instant>,
    /// A `POST /send` of this session whose body is still arriving.
    pub sending: Option<ConnId>,
    /// The session was ended by the server (a flood); only its last events remain to be read.
    pub closed: bool,
}

impl HttpSession {
    pub fn new(sid: Sid, cap: usize) -> Self {
        Self {
            sid,
            queue: VecDeque::new(),
            queued_bytes: 0,
            cap,
            last_seq: 0,
            reader: Reader::None,
            expires: None,
            sending: None,
            closed: false,
        }
    }

    /// Numbers and keeps `event`; refuses it when the queue is full (unless empty: one event
    /// always fits, like one frame on an empty WebSocket queue).
    pub fn push(&mut self, event: Rc<Event>) -> Result<u64, Overflow> {
        let len = event.json().len();
        if !self.queue.is_empty() && self.queued_bytes + len > self.cap {
            return Err(Overflow);
        }
        self.last_seq += 1;
        self.queued_bytes += len;
        self.queue.push_back((self.last_seq, event));
        Ok(self.last_seq)
    }

    /// Queues the session's last event whatever the bound (it says why the session ends).
    pub fn push_final(&mut self, event: Rc<Event>) {
        self.last_seq += 1;
        self.queued_bytes += event.json().len();
        self.queue.push_back((self.last_seq, event));
    }

    /// The client has every event up to `seq`: they need not be kept.
    pub fn confirm(&mut self, seq: u64) {
        while let Some((first, event)) = self.queue.front() {
            if *first > seq {
                break;
            }
            self.queued_bytes -= event.json().len();
            self.queue.pop_front();
        }
    }

    /// The events after `seq`, if the session still holds all of them: `None` when some were
    /// already dropped (the client asks for a point the server no longer holds), or `seq` is one
    /// the session never gave.
    pub fn after(&self, seq: u64) -> Option<Vec<(u64, Rc<Event>)>> {
        if seq > self.last_seq {
            return None;
        }
        let first_held = self.queue.front().map_or(self.last_seq + 1, |(first, _)| *first);
        if seq + 1 < first_held {
            return None;
        }
        Some(
            self.queue
                .iter()
                .filter(|(number, _)| *number > seq)
                .map(|(number, event)| (*number, event.clone()))
                .collect(),
        )
    }

    /// The number of the last event given.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Whether events wait that the client has not confirmed.
    pub fn has_pending(&self) -> bool {
        !self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(text: &str) -> Rc<Event> {
        Event::new(text)
    }

    #[test]
    fn events_are_numbered_from_one_and_replayed_after_a_point() {
        let mut session = HttpSession::new(1, 1 << 20);
        assert_eq!(session.push(event("a")), Ok(1));
        assert_eq!(session.push(event("b")), Ok(2));
        let after: Vec<u64> = session.after(1).unwrap().iter().map(|(n, _)| *n).collect();
        assert_eq!(after, [2]);
        assert_eq!(session.after(2).unwrap().len(), 0);
    }

    #[test]
    fn confirmed_events_are_dropped_and_a_point_before_them_is_no_longer_held() {
        let mut session = HttpSession::new(1, 1 << 20);
        for text in ["a", "b", "c"] {
            session.push(event(text)).unwrap();
        }
        session.confirm(2);
        assert_eq!(session.after(2).unwrap().len(), 1);
        assert!(session.after(0).is_none(), "events 1 and 2 are gone");
        assert!(session.after(9).is_none(), "a point never given");
    }

    #[test]
    fn a_full_queue_refuses_the_next_event() {
        let mut session = HttpSession::new(1, 10);
        assert!(
            session.push(event("0123456789ab")).is_ok(),
            "one event always fits"
        );
        assert_eq!(session.push(event("x")), Err(Overflow));
        session.confirm(1);
        assert!(session.push(event("x")).is_ok());
    }
}
