//! Per-address accounting: how many connections each client address holds open, and log lines
//! about refusals that cannot flood the log.
//!
//! `--max-connections` protects the process; it does not stop one host from taking every slot.
//! [`PerAddress`] counts open connections per client address and refuses the one over
//! `max_per_address`. The address is the one limits apply to: the socket's peer, or, behind a
//! trusted proxy, the client [`forwarded`](crate::http::forwarded) names.
//!
//! **IPv6 hosts are counted by /64** ([`IpPrefix::host`] says why). Counting by /64 may group a
//! few hosts of one network, as IPv4 NAT already does.
//!
//! **Memory is bounded.** An entry exists only while its address holds a connection, so the table
//! has at most as many entries as there are open connections; `max_addresses` caps it again in
//! case of a leak elsewhere. An accepted connection gets a [`Slot`], which is the only way to give
//! its count back ([`PerAddress::release`]): it cannot be copied or released twice.
//!
//! [`LogLimiter`] keeps a flood of refusals (an attack is thousands a second) from becoming a flood
//! of log lines: at most one line per interval per reason, and the next line says how many were
//! left out. Like everything outside `server`, both take the time as an argument.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::http::Status;
use crate::http::forwarded::IpPrefix;

/// Default for `--max-connections-per-ip`: a browser opens one WebSocket per tab, and a household
/// or an office behind one NAT address may have dozens of tabs open; at this default one host
/// holds at most 64 of `--max-connections`' 10,000 slots.
pub const DEFAULT_MAX_PER_ADDRESS: u32 = 64;

/// RFC 6585 §4: "the user has sent too many requests" (here: holds too many connections).
pub const TOO_MANY_REQUESTS: Status = Status(429, "Too Many Requests");

/// The limits of a [`PerAddress`] table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerAddressLimits {
    /// Most connections one address (IPv4) or /64 (IPv6) may hold open.
    pub max_per_address: u32,
    /// Most addresses tracked at once: `--max-connections`, as each holds at least one.
    pub max_addresses: usize,
}

/// Open connections per client address.
#[derive(Debug)]
pub struct PerAddress {
    limits: PerAddressLimits,
    open: HashMap<IpPrefix, Count>,
}

/// What one address holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Count {
    /// Connections it was allowed to open.
    admitted: u32,
    /// Connections over its limit that are waiting for their refusal to be sent.
    refusing: u32,
}

/// One open connection's share of its address's count. Give it back with
/// [`PerAddress::release`] when the connection closes.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a slot that is dropped instead of released keeps its address's count up forever"]
pub struct Slot {
    key: IpPrefix,
    kind: SlotKind,
}

/// Which count a [`Slot`] is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotKind {
    Admitted,
    Refusing,
}

impl Slot {
    /// The address, or IPv6 /64, this slot is counted under.
    pub fn key(&self) -> IpPrefix {
        self.key
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The address already holds `limit` connections.
    TooManyFromAddress { key: IpPrefix, limit: u32 },
    /// `limit` addresses are tracked already.
    TooManyAddresses { limit: usize },
}

impl Refused {
    /// The answer to a handshake refused for this (a socket refused before its request is
    /// simply closed): 429 for the client's own excess, 503 for the server's.
    pub fn status(&self) -> Status {
        match self {
            Refused::TooManyFromAddress { .. } => TOO_MANY_REQUESTS,
            Refused::TooManyAddresses { .. } => Status::SERVICE_UNAVAILABLE,
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::TooManyFromAddress { key, limit } => {
                write!(f, "{key} is at its limit of {limit} open connections")
            }
            Refused::TooManyAddresses { limit } => write!(f, "{limit} client addresses are connected"),
        }
    }
}

impl std::error::Error for Refused {}

impl PerAddress {
    pub fn new(limits: PerAddressLimits) -> Self {
        Self {
            limits,
            open: HashMap::new(),
        }
    }

    /// Counts one more connection from `addr`, or says why not.
    pub fn try_acquire(&mut self, addr: IpAddr) -> Result<Slot, Refused> {
        let key = key_of(addr);
        let count = self.entry(key)?;
        if count.admitted >= self.limits.max_per_address {
            return Err(Refused::TooManyFromAddress {
                key,
                limit: self.limits.max_per_address,
            });
        }
        self.open.entry(key).or_default().admitted += 1;
        Ok(Slot {
            key,
            kind: SlotKind::Admitted,
        })
    }

    /// Counts a connection from `addr` that [`PerAddress::try_acquire`] refused, while it waits to
    /// be told so (its request head has not arrived yet). An address may have as many of these as
    /// it may hold connections; past that, `None`: drop it unanswered. Without this bound, one
    /// host over its limit could still fill the connection table with connections that are
    /// "being refused" and never send a request.
    pub fn hold_refusal(&mut self, addr: IpAddr) -> Option<Slot> {
        let key = key_of(addr);
        let count = self.entry(key).ok()?;
        if count.refusing >= self.limits.max_per_address {
            return None;
        }
        self.open.entry(key).or_default().refusing += 1;
        Some(Slot {
            key,
            kind: SlotKind::Refusing,
        })
    }

    /// The count of `key` so far, or the refusal for a new address when the table is full.
    fn entry(&self, key: IpPrefix) -> Result<Count, Refused> {
        match self.open.get(&key) {
            Some(count) => Ok(*count),
            None if self.open.len() >= self.limits.max_addresses => Err(Refused::TooManyAddresses {
                limit: self.limits.max_addresses,
            }),
            None => Ok(Count::default()),
        }
    }

    /// Gives a closed connection's count back; the address's entry goes with its last one.
    pub fn release(&mut self, slot: Slot) {
        if let Some(count) = self.open.get_mut(&slot.key) {
            let held = match slot.kind {
                SlotKind::Admitted => &mut count.admitted,
                SlotKind::Refusing => &mut count.refusing,
            };
            *held = held.saturating_sub(1);
            if *count == Count::default() {
                self.open.remove(&slot.key);
            }
        }
    }

    /// Connections `addr` (or its /64) holds open.
    pub fn open(&self, addr: IpAddr) -> u32 {
        self.open.get(&key_of(addr)).map_or(0, |count| count.admitted)
    }

    /// Addresses holding at least one connection.
    pub fn addresses(&self) -> usize {
        self.open.len()
    }
}

/// What `addr` is counted under: itself for IPv4, its /64 for IPv6.
fn key_of(addr: IpAddr) -> IpPrefix {
    IpPrefix::host(addr)
}

/// At most one log line per `interval` for each reason. `R` names the reasons and should be a
/// small enum: the limiter keeps one entry per reason ever seen.
#[derive(Debug)]
pub struct LogLimiter<R> {
    interval: Duration,
    reasons: HashMap<R, Window>,
}

#[derive(Debug)]
struct Window {
    /// When the next line for this reason may be written.
    next: Instant,
    /// Lines left out since the last one written.
    suppressed: u64,
}

/// A line to write now, and how many like it were left out before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub suppressed: u64,
}

impl fmt::Display for Admitted {
    /// Nothing when nothing was left out; otherwise a suffix for the line: ` (3 more since the
    /// last line)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.suppressed {
            0 => Ok(()),
            n => write!(f, " ({n} more since the last line)"),
        }
    }
}

impl<R: Eq + Hash + Copy> LogLimiter<R> {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            reasons: HashMap::new(),
        }
    }

    /// Whether to write a line for `reason` now. `Some` says yes, with the count of lines left
    /// out before it (its `Display` is a suffix for the line); `None` says no, and counts it.
    pub fn admit(&mut self, reason: R, now: Instant) -> Option<Admitted> {
        let next = now + self.interval;
        match self.reasons.get_mut(&reason) {
            Some(window) if now < window.next => {
                window.suppressed += 1;
                None
            }
            Some(window) => {
                let suppressed = std::mem::take(&mut window.suppressed);
                window.next = next;
                Some(Admitted { suppressed })
            }
            None => {
                self.reasons.insert(reason, Window { next, suppressed: 0 });
                Some(Admitted { suppressed: 0 })
            }
        }
    }

    /// When a reason's left-out lines become due for a summary ([`LogLimiter::handle_timeout`]):
    /// the end of the earliest window that left lines out. A flood that stops is still reported.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.reasons
            .values()
            .filter(|window| window.suppressed > 0)
            .map(|window| window.next)
            .min()
    }

    /// The reasons whose window has ended with lines left out, and how many: log one summary
    /// line for each. Their counts start again from zero.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<(R, u64)> {
        let mut due = Vec::new();
        for (reason, window) in &mut self.reasons {
            if window.suppressed > 0 && now >= window.next {
                due.push((*reason, std::mem::take(&mut window.suppressed)));
            }
        }
        due
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // An origin for the tests' hand-moved clock; nothing is timed.
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn table(max_per_address: u32, max_addresses: usize) -> PerAddress {
        PerAddress::new(PerAddressLimits {
            max_per_address,
            max_addresses,
        })
    }

    #[test]
    fn an_address_may_hold_up_to_its_limit() {
        let mut t = table(3, 100);
        let slots: Vec<Slot> = (0..3).map(|_| t.try_acquire(ip("192.0.2.1")).unwrap()).collect();
        assert_eq!(t.open(ip("192.0.2.1")), 3);
        let refused = t.try_acquire(ip("192.0.2.1"));
        assert_eq!(
            refused,
            Err(Refused::TooManyFromAddress {
                key: "192.0.2.1".parse().unwrap(),
                limit: 3
            })
        );
        // Other addresses are not affected.
        let other = t.try_acquire(ip("192.0.2.2"));
        assert!(other.is_ok());
        drop((slots, other));
    }

    #[test]
    fn a_released_slot_frees_room_for_the_next_connection() {
        let mut t = table(1, 100);
        let slot = t.try_acquire(ip("192.0.2.1")).unwrap();
        assert!(t.try_acquire(ip("192.0.2.1")).is_err());
        t.release(slot);
        assert_eq!(t.open(ip("192.0.2.1")), 0);
        assert!(t.try_acquire(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn an_address_leaves_the_table_with_its_last_connection() {
        let mut t = table(5, 100);
        let a = t.try_acquire(ip("192.0.2.1")).unwrap();
        let b = t.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(t.addresses(), 1);
        t.release(a);
        assert_eq!(t.addresses(), 1);
        t.release(b);
        assert_eq!(t.addresses(), 0);
    }

    #[test]
    fn ipv6_addresses_are_counted_by_their_64() {
        let mut t = table(2, 100);
        let _a = t.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        let _b = t.try_acquire(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")).unwrap();
        // A third address of the same /64 is the same host for the limit.
        assert!(matches!(
            t.try_acquire(ip("2001:db8:1:2:dead:beef::1")),
            Err(Refused::TooManyFromAddress { .. })
        ));
        // The next /64 is another.
        assert!(t.try_acquire(ip("2001:db8:1:3::1")).is_ok());
        assert_eq!(t.open(ip("2001:db8:1:2::42")), 2);
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let mut t = table(1, 100);
        let _slot = t.try_acquire(ip("192.0.2.1")).unwrap();
        assert!(t.try_acquire(ip("::ffff:192.0.2.1")).is_err());
    }

    #[test]
    fn the_table_tracks_at_most_max_addresses() {
        let mut t = table(10, 2);
        let _a = t.try_acquire(ip("192.0.2.1")).unwrap();
        let _b = t.try_acquire(ip("192.0.2.2")).unwrap();
        assert_eq!(
            t.try_acquire(ip("192.0.2.3")),
            Err(Refused::TooManyAddresses { limit: 2 })
        );
        // Addresses already tracked still get their share.
        assert!(t.try_acquire(ip("192.0.2.1")).is_ok());
        assert_eq!(t.addresses(), 2);
    }

    #[test]
    fn a_limit_of_zero_refuses_everything_and_tracks_nothing() {
        let mut t = table(0, 10);
        assert!(t.try_acquire(ip("192.0.2.1")).is_err());
        assert_eq!(t.addresses(), 0);
    }

    #[test]
    fn a_flood_of_addresses_leaves_no_entries_behind() {
        let mut t = table(1, 1_000);
        for i in 0..100_000u32 {
            let slot = t.try_acquire(IpAddr::V4(i.into())).unwrap();
            t.release(slot);
        }
        assert_eq!(t.addresses(), 0);
        assert!(
            t.open.capacity() < 1_000,
            "the map never held more than one entry"
        );
    }

    #[test]
    fn an_address_over_its_limit_may_have_as_many_refusals_pending() {
        let mut t = table(2, 100);
        let _open: Vec<Slot> = (0..2).map(|_| t.try_acquire(ip("192.0.2.1")).unwrap()).collect();
        let pending: Vec<Slot> = (0..2).map(|_| t.hold_refusal(ip("192.0.2.1")).unwrap()).collect();
        assert_eq!(
            t.hold_refusal(ip("192.0.2.1")),
            None,
            "the third is dropped unanswered"
        );
        // Pending refusals do not count as open connections.
        assert_eq!(t.open(ip("192.0.2.1")), 2);
        for slot in pending {
            t.release(slot);
        }
        assert!(t.hold_refusal(ip("192.0.2.1")).is_some());
    }

    #[test]
    fn an_address_leaves_the_table_when_nothing_of_it_is_held() {
        let mut t = table(1, 100);
        let open = t.try_acquire(ip("192.0.2.1")).unwrap();
        let refusing = t.hold_refusal(ip("192.0.2.1")).unwrap();
        t.release(open);
        assert_eq!(t.addresses(), 1, "its refusal is still pending");
        t.release(refusing);
        assert_eq!(t.addresses(), 0);
    }

    #[test]
    fn refusals_map_to_429_and_503() {
        let own = Refused::TooManyFromAddress {
            key: "192.0.2.1/32".parse().unwrap(),
            limit: 1,
        };
        assert_eq!(own.status().code(), 429);
        assert_eq!(Refused::TooManyAddresses { limit: 1 }.status().code(), 503);
        assert_eq!(
            own.to_string(),
            "192.0.2.1/32 is at its limit of 1 open connections"
        );
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    enum Reason {
        PerAddress,
        Full,
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_line_of_a_reason_is_written() {
        let mut log = LogLimiter::new(10 * SECOND);
        let t0 = Instant::now();
        assert_eq!(
            log.admit(Reason::PerAddress, t0),
            Some(Admitted { suppressed: 0 })
        );
    }

    #[test]
    fn lines_within_the_interval_are_counted_not_written() {
        let mut log = LogLimiter::new(10 * SECOND);
        let t0 = Instant::now();
        assert!(log.admit(Reason::PerAddress, t0).is_some());
        for i in 1..=5 {
            assert_eq!(log.admit(Reason::PerAddress, t0 + i * SECOND), None);
        }
        // The window ends 10 s after the line written: the next line carries the count.
        assert_eq!(log.admit(Reason::PerAddress, t0 + 9 * SECOND), None);
        assert_eq!(
            log.admit(Reason::PerAddress, t0 + 10 * SECOND),
            Some(Admitted { suppressed: 6 })
        );
        assert_eq!(log.admit(Reason::PerAddress, t0 + 11 * SECOND), None);
        assert_eq!(
            log.admit(Reason::PerAddress, t0 + 20 * SECOND),
            Some(Admitted { suppressed: 1 })
        );
    }

    #[test]
    fn each_reason_has_its_own_window() {
        let mut log = LogLimiter::new(10 * SECOND);
        let t0 = Instant::now();
        assert!(log.admit(Reason::PerAddress, t0).is_some());
        assert!(log.admit(Reason::Full, t0 + SECOND).is_some());
        assert!(log.admit(Reason::PerAddress, t0 + SECOND).is_none());
    }

    #[test]
    fn left_out_lines_are_summarized_when_the_window_ends() {
        let mut log = LogLimiter::new(10 * SECOND);
        let t0 = Instant::now();
        assert_eq!(log.poll_timeout(), None);
        assert!(log.admit(Reason::PerAddress, t0).is_some());
        // Nothing left out yet: no wake-up needed.
        assert_eq!(log.poll_timeout(), None);
        assert!(log.admit(Reason::PerAddress, t0 + SECOND).is_none());
        assert!(log.admit(Reason::PerAddress, t0 + 2 * SECOND).is_none());
        assert_eq!(log.poll_timeout(), Some(t0 + 10 * SECOND));
        assert_eq!(log.handle_timeout(t0 + 9 * SECOND), []);
        assert_eq!(log.handle_timeout(t0 + 10 * SECOND), [(Reason::PerAddress, 2)]);
        // Reported once: the count starts again.
        assert_eq!(log.poll_timeout(), None);
        assert_eq!(log.handle_timeout(t0 + 11 * SECOND), []);
    }

    #[test]
    fn the_admitted_suffix_counts_what_was_left_out() {
        assert_eq!(Admitted { suppressed: 0 }.to_string(), "");
        assert_eq!(
            Admitted { suppressed: 3 }.to_string(),
            " (3 more since the last line)"
        );
    }
}
