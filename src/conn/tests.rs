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

// --- over TLS -------------------------------------------------------------------------------

mod over_tls {
    use super::*;
    use crate::conn::tls::testing::{Pki, client_input, client_output, client_send};

    fn tls_stack(f: &mut Fixture, pki: &Pki) -> Stack {
        f.stack().with_tls(Tls::new(pki.server_config()).unwrap())
    }

    /// Everything the stack has to write, as the client receives it (decrypted).
    fn to_client(stack: &mut Stack, client: &mut rustls::ClientConnection) -> Vec<u8> {
        let mut wire = Vec::new();
        stack.write_to(&mut wire).unwrap();
        client_input(client, &wire)
    }

    fn handshake(f: &mut Fixture, stack: &mut Stack, client: &mut rustls::ClientConnection) {
        while client.is_handshaking() {
            stack.receive(&mut client_output(client), &mut f.ctx(Duration::ZERO));
            to_client(stack, client);
        }
    }

    #[test]
    fn the_page_is_served_over_tls_and_the_phase_never_knows() {
        let (mut f, pki) = (Fixture::new(&[]), Pki::new());
        let (mut stack, mut client) = (tls_stack(&mut f, &pki), pki.client());
        handshake(&mut f, &mut stack, &mut client);
        let request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
        stack.receive(&mut client_send(&mut client, request), &mut f.ctx(Duration::ZERO));
        let response = to_client(&mut stack, &mut client);
        assert!(
            response.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{:?}",
            String::from_utf8_lossy(&response)
        );
        assert_eq!(stack.phase().name(), "http", "kept alive for the next request");
    }

    #[test]
    fn a_websocket_echoes_over_tls() {
        let (mut f, pki) = (Fixture::new(&["--echo"]), Pki::new());
        let (mut stack, mut client) = (tls_stack(&mut f, &pki), pki.client());
        handshake(&mut f, &mut stack, &mut client);
        let mut records = client_send(&mut client, UPGRADE.as_bytes());
        records.extend(client_send(
            &mut client,
            &crate::testing::masked_frame(0x81, b"over tls", [1, 2, 3, 4]),
        ));
        stack.receive(&mut records, &mut f.ctx(Duration::ZERO));
        assert_eq!(stack.phase().name(), "websocket (echo)");
        let output = to_client(&mut stack, &mut client);
        let echo = [&[0x81, 8][..], b"over tls"].concat();
        assert!(output.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(output.ends_with(&echo), "{output:02x?}");
    }

    #[test]
    fn the_handshake_timeout_covers_the_tls_handshake() {
        let (mut f, pki) = (Fixture::new(&["--handshake-timeout", "3"]), Pki::new());
        let (mut stack, mut client) = (tls_stack(&mut f, &pki), pki.client());
        // The ClientHello, and then nothing: a client stuck in the TLS handshake.
        stack.receive(&mut client_output(&mut client), &mut f.ctx(Duration::ZERO));
        assert_eq!(stack.poll_timeout(), Some(f.start + Duration::from_secs(3)));
        stack.handle_timeout(&mut f.ctx(Duration::from_secs(3)));
        assert!(stack.is_closed());
    }

    #[test]
    fn plaintext_on_a_tls_stack_closes_it_without_an_answer() {
        let (mut f, pki) = (Fixture::new(&[]), Pki::new());
        let mut stack = tls_stack(&mut f, &pki);
        let request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
        stack.receive(&mut request.to_vec(), &mut f.ctx(Duration::ZERO));
        assert!(stack.is_closed());
        assert!(!stack.wants_write());
        assert_eq!(stack.settle(&mut f.ctx(Duration::ZERO)), SocketAction::Remove);
    }

    #[test]
    fn over_tls_our_side_is_shut_down_only_after_close_notify_is_written() {
        let (mut f, pki) = (Fixture::new(&[]), Pki::new());
        let (mut stack, mut client) = (tls_stack(&mut f, &pki), pki.client());
        handshake(&mut f, &mut stack, &mut client);
        let request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        stack.receive(&mut client_send(&mut client, request), &mut f.ctx(Duration::ZERO));
        let response = to_client(&mut stack, &mut client);
        assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
        // The response is out; the alert is queued, and the FIN must wait for it.
        assert_eq!(stack.settle(&mut f.ctx(Duration::ZERO)), SocketAction::None);
        assert!(stack.wants_write());
        assert_eq!(to_client(&mut stack, &mut client), b"");
        assert!(client.process_new_packets().unwrap().peer_has_closed());
        assert_eq!(
            stack.settle(&mut f.ctx(Duration::ZERO)),
            SocketAction::ShutdownWrite
        );
        assert_eq!(stack.phase().name(), "draining");
    }

    #[test]
    fn the_peers_close_notify_counts_as_its_fin() {
        let (mut f, pki) = (Fixture::new(&[]), Pki::new());
        let (mut stack, mut client) = (tls_stack(&mut f, &pki), pki.client());
        handshake(&mut f, &mut stack, &mut client);
        client.send_close_notify();
        stack.receive(&mut client_output(&mut client), &mut f.ctx(Duration::ZERO));
        assert!(!stack.wants_read(&f.config));
        // As the driver does after every read: the TLS 1.3 session tickets that the client's
        // Finished (sent along with the alert) made the server queue go first.
        to_client(&mut stack, &mut client);
        assert_eq!(stack.settle(&mut f.ctx(Duration::ZERO)), SocketAction::Remove);
    }
}
