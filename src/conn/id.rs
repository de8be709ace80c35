//! Connection ids: a slot in the server's connection table, checked by a serial number.

use std::fmt;
use std::hash::{Hash, Hasher};

/// Names one connection for its whole life. The table slot (`index`) is reused once the
/// connection is gone; the `serial` never is, so an id kept by someone else (a chat session, a
/// queued output, a timer) can never reach the slot's next occupant: every lookup compares both.
/// The serial is also the connection's number in logs and traces (`#17`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnId {
    index: usize,
    serial: u64,
}

impl ConnId {
    pub fn new(index: usize, serial: u64) -> Self {
        Self { index, serial }
    }

    /// The slot in the connection table (and the mio token).
    pub fn index(self) -> usize {
        self.index
    }

    /// Unique for the life of the process.
    pub fn serial(self) -> u64 {
        self.serial
    }
}

/// The serial alone identifies a connection; hashing the index too would only cost time.
impl Hash for ConnId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.serial.hash(state);
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.serial.fmt(f)
    }
}
