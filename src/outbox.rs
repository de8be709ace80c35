//! The ordered queue of bytes waiting to go to one peer.
//!
//! Bytes enter in two ways: frames this connection encodes itself (pongs, close frames, echoes) are
//! appended to an owned buffer, and frames shared between many connections (a chat broadcast, encoded
//! once) are queued as a reference-counted handle to the same bytes, so a broadcast to a thousand
//! peers costs a thousand queue slots, not a thousand copies. [`Outbox::write_to`] hands as many
//! pieces as it can to one vectored write.
//!
//! The queue owns no memory while it is empty: a connection that has nothing to send costs nothing
//! here.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

/// Pieces handed to one `write_vectored` call; Linux accepts up to 1024 (`IOV_MAX`).
const MAX_IOVECS: usize = 64;

/// Bytes shared by several outboxes: an encoded frame that goes to many peers.
pub type SharedBytes = Rc<[u8]>;

#[derive(Debug)]
enum Chunk {
    Owned(Vec<u8>),
    Shared(SharedBytes),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(bytes) => bytes,
            Chunk::Shared(bytes) => bytes,
        }
    }
}

#[derive(Debug, Default)]
pub struct Outbox {
    /// The oldest chunk, kept inline: most of the time it is the only one, and it is written at
    /// once, so queueing it costs no allocation.
    head: Option<Chunk>,
    /// Chunks behind the head, allocated only when more than one is waiting.
    rest: VecDeque<Chunk>,
    /// Bytes of the head already written.
    written: usize,
    /// Bytes queued and not yet written.
    len: usize,
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes produced by `encode` (which writes into the owned tail buffer).
    pub fn append_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        let tail = match (self.rest.back_mut(), &mut self.head) {
            (Some(Chunk::Owned(tail)), _) | (None, Some(Chunk::Owned(tail))) => tail,
            _ => {
                self.push(Chunk::Owned(Vec::new()));
                match self.rest.back_mut().or(self.head.as_mut()) {
                    Some(Chunk::Owned(tail)) => tail,
                    _ => unreachable!("an owned chunk was just pushed"),
                }
            }
        };
        let before = tail.len();
        encode(tail);
        self.len += tail.len() - before;
    }

    /// Queues bytes shared with other outboxes, without copying them.
    pub fn push_shared(&mut self, bytes: SharedBytes) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        self.push(Chunk::Shared(bytes));
    }

    fn push(&mut self, chunk: Chunk) {
        if self.head.is_none() {
            self.head = Some(chunk);
        } else {
            self.rest.push_back(chunk);
        }
    }

    /// Writes queued bytes until the writer would block or the queue is empty. Returns the number
    /// of bytes written; `WouldBlock` is not an error, it just ends the attempt.
    pub fn write_to<W: Write + ?Sized>(&mut self, writer: &mut W) -> io::Result<usize> {
        let mut total = 0;
        while let Some(head) = &self.head {
            let head = &head.bytes()[self.written..];
            let result = if self.rest.is_empty() {
                writer.write(head)
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                slices[0] = IoSlice::new(head);
                let mut count = 1;
                for chunk in self.rest.iter().take(MAX_IOVECS - 1) {
                    slices[count] = IoSlice::new(chunk.bytes());
                    count += 1;
                }
                writer.write_vectored(&slices[..count])
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    total += n;
                    self.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Drops everything still queued (the peer is gone).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(head) = &self.head else { break };
            let remaining = head.bytes().len() - self.written;
            if n < remaining {
                self.written += n;
                return;
            }
            n -= remaining;
            self.written = 0;
            self.head = self.rest.pop_front();
        }
        if self.head.is_none() && self.rest.capacity() > 0 {
            // Give the queue's memory back: idle connections should hold none.
            self.rest = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts at most `limit` bytes per call and then blocks once.
    struct Trickle {
        out: Vec<u8>,
        limit: usize,
        block_next: bool,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if std::mem::take(&mut self.block_next) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.block_next = true;
            let n = buf.len().min(self.limit);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_leave_in_the_order_they_were_queued() {
        let shared: SharedBytes = Rc::from(&b"<shared>"[..]);
        let mut outbox = Outbox::new();
        outbox.append_with(|out| out.extend_from_slice(b"one,"));
        outbox.push_shared(shared.clone());
        outbox.append_with(|out| out.extend_from_slice(b"two,"));
        outbox.append_with(|out| out.extend_from_slice(b"three"));
        assert_eq!(outbox.len(), 21);
        let mut writer = Trickle {
            out: Vec::new(),
            limit: 3,
            block_next: false,
        };
        while !outbox.is_empty() {
            outbox.write_to(&mut writer).unwrap();
        }
        assert_eq!(writer.out, b"one,<shared>two,three");
    }

    #[test]
    fn would_block_keeps_the_rest_queued() {
        let mut outbox = Outbox::new();
        outbox.append_with(|out| out.extend_from_slice(b"0123456789"));
        let mut writer = Trickle {
            out: Vec::new(),
            limit: 4,
            block_next: false,
        };
        assert_eq!(outbox.write_to(&mut writer).unwrap(), 4);
        assert_eq!(outbox.len(), 6);
    }

    #[test]
    fn shared_bytes_are_not_copied() {
        let shared: SharedBytes = Rc::from(&b"broadcast"[..]);
        let mut a = Outbox::new();
        let mut b = Outbox::new();
        a.push_shared(shared.clone());
        b.push_shared(shared.clone());
        assert_eq!(Rc::strong_count(&shared), 3);
        a.write_to(&mut Vec::new()).unwrap();
        assert_eq!(Rc::strong_count(&shared), 2, "written bytes are released");
    }
}
