//! The stack's own rules, without a socket: phases, deadlines and the hand-off to the WebSocket.
#![allow(clippy::disallowed_methods)] // An origin for the tests' hand-moved clock; nothing is timed.

use clap::Parser;

use super::*;
use crate::config::Config;
use crate::hub::Hub;

struct Fixture {
    hub: Hub,
    config: StackConfig,
    start: Instant,
}

impl Fixture {
    fn new(args: &[&str]) -> Self {
        let config = Config::parse_from(std::iter::once("wschat").chain(args.iter().copied()));
        Self {
            hub: crate::testing::hub(config.hub()),
            config: config.stack(),
            start: Instant::now(),
        }
    }

    fn ctx(&mut self, after: Duration) -> Ctx<'_> {
        Ctx {
            hub: &mut self.hub,
            config: &self.config,
            now: Now {
                instant: self.start + after,
                unix_ms: 0,
            },
        }
    }

    fn stack(&mut self) -> Stack {
        Stack::new(
            ConnId::new(0, 1),
            "127.0.0.1:1".parse().unwrap(),
            Opening::default(),
            &self.config,
            self.start,
        )
    }
}

const UPGRADE: &str = "GET /echo HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn a_new_connection_waits_for_its_request_until_the_handshake_deadline() {
    let mut f = Fixture::new(&["--handshake-timeout", "3"]);
    let stack = f.stack();
    assert_eq!(stack.phase().name(), "http");
    assert_eq!(stack.poll_timeout(), Some(f.start + Duration::from_secs(3)));
}

#[test]
fn a_timer_that_fires_before_the_deadline_changes_nothing() {
    let mut f = Fixture::new(&["--handshake-timeout", "3"]);
    let mut stack = f.stack();
    stack.handle_timeout(&mut f.ctx(Duration::from_secs(2)));
    assert_eq!(stack.phase().name(), "http");
    stack.handle_timeout(&mut f.ctx(Duration::from_secs(3)));
    assert!(stack.is_closed());
}

#[test]
fn an_upgrade_moves_to_the_websocket_with_its_own_timers() {
    let mut f = Fixture::new(&["--echo", "--ping-interval", "7", "--idle-timeout", "0"]);
    let mut stack = f.stack();
    stack.receive(&mut UPGRADE.as_bytes().to_vec(), &mut f.ctx(Duration::ZERO));
    assert_eq!(stack.phase().name(), "websocket (echo)");
    assert!(stack.wants_write(), "the 101 is queued");
    assert_eq!(
        stack.poll_timeout(),
        Some(f.start + Duration::from_secs(7)),
        "the ping timer"
    );
}

#[test]
fn the_same_request_split_at_every_byte_upgrades_the_same_way() {
    for cut in 0..UPGRADE.len() {
        let mut f = Fixture::new(&["--echo"]);
        let mut stack = f.stack();
        let (a, b) = UPGRADE.as_bytes().split_at(cut);
        stack.receive(&mut a.to_vec(), &mut f.ctx(Duration::ZERO));
        stack.receive(&mut b.to_vec(), &mut f.ctx(Duration::ZERO));
        assert_eq!(stack.phase().name(), "websocket (echo)", "cut at {cut}");
    }
}

#[test]
fn the_peers_fin_during_a_request_ends_the_connection() {
    let mut f = Fixture::new(&[]);
    let mut stack = f.stack();
    stack.receive(&mut b"GET / HT".to_vec(), &mut f.ctx(Duration::ZERO));
    stack.receive_eof();
    // A request cut short is a 400, written before the connection goes.
    assert_eq!(stack.settle(&mut f.ctx(Duration::ZERO)), SocketAction::None);
    assert!(stack.wants_write());
    if let Some(outbox) = stack.outbox() {
        outbox.clear(); // as if written
    }
    assert_eq!(stack.settle(&mut f.ctx(Duration::ZERO)), SocketAction::Remove);
}

#[test]
fn a_websocket_is_not_read_while_its_queue_is_over_the_cap() {
    let mut f = Fixture::new(&["--echo", "--max-queued-output", "64"]);
    let mut stack = f.stack();
    stack.receive(&mut UPGRADE.as_bytes().to_vec(), &mut f.ctx(Duration::ZERO));
    assert!(!stack.wants_read(&f.config), "the 101 alone is over 64 bytes");
    if let Some(outbox) = stack.outbox() {
        outbox.clear();
    }
    assert!(stack.wants_read(&f.config));
}
