//! The transport's rules, against a rustls client, with no socket: certificates made at test time.

use super::testing::{Pki, client_input, client_output, client_send};
use super::*;

/// Runs the handshake between `client` and `server` over in-memory bytes.
fn handshake(client: &mut rustls::ClientConnection, server: &mut Tls) {
    while client.is_handshaking() || server.is_handshaking() {
        let records = client_output(client);
        assert!(
            server
                .receive(&records)
                .expect("a valid handshake")
                .plaintext
                .is_empty()
        );
        let mut reply = Vec::new();
        server.write_to(None, &mut reply).expect("writing to a Vec");
        client_input(client, &reply);
    }
}

/// A writer that takes at most `room` bytes in all, then would block.
struct Full {
    taken: Vec<u8>,
    room: usize,
}

impl Write for Full {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.room);
        self.taken.extend_from_slice(&buf[..n]);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The rule a configuration error names.
fn rule(error: &TlsConfigError) -> &'static str {
    match error {
        TlsConfigError::NoCertificate => "no certificate",
        TlsConfigError::Certificate(_) => "malformed certificate",
        TlsConfigError::NoKey => "no key",
        TlsConfigError::Key(_) => "malformed key",
        TlsConfigError::KeyMismatch => "key mismatch",
        TlsConfigError::Rejected(_) => "rejected",
    }
}

#[test]
fn certificate_and_key_files_are_checked_rule_by_rule() {
    let pki = Pki::new();
    let other = pki.ca.issue("another server");
    let (cert, key) = (pki.server.cert_pem.as_str(), pki.server.key_pem.as_str());
    let garbled = cert.replace("MII", "M!I");
    let garbled_key = key.replace("MIG", "M!G");
    let cases = [
        ("empty certificate file", "", key, "no certificate"),
        ("key given as certificate", key, key, "no certificate"),
        ("garbled certificate", &garbled, key, "malformed certificate"),
        ("empty key file", cert, "", "no key"),
        ("garbled key", cert, &garbled_key, "malformed key"),
        ("certificate given as key", cert, cert, "no key"),
        ("another certificate's key", cert, &other.key_pem, "key mismatch"),
    ];
    for (name, cert, key, expected) in cases {
        match server_config(cert.as_bytes(), key.as_bytes()) {
            Ok(_) => panic!("{name}: accepted"),
            Err(error) => assert_eq!(rule(&error), expected, "{name}: {error}"),
        }
    }
    assert!(server_config(cert.as_bytes(), key.as_bytes()).is_ok());
}

#[test]
fn application_data_flows_both_ways_after_the_handshake() {
    let pki = Pki::new();
    let mut client = pki.client();
    let mut server = Tls::new(pki.server_config()).unwrap();
    handshake(&mut client, &mut server);
    let received = server.receive(&client_send(&mut client, b"hello")).unwrap();
    assert_eq!(
        received,
        Received {
            plaintext: b"hello".to_vec(),
            closed: false
        }
    );
    let mut outbox = Outbox::new();
    outbox.append_with(|out| out.extend_from_slice(b"world"));
    let mut wire = Vec::new();
    server.write_to(Some(&mut outbox), &mut wire).unwrap();
    assert!(outbox.is_empty() && !server.wants_write());
    assert_eq!(client_input(&mut client, &wire), b"world");
}

#[test]
fn ciphertext_fed_one_byte_at_a_time_yields_the_same_plaintext() {
    let pki = Pki::new();
    let mut client = pki.client();
    let mut server = Tls::new(pki.server_config()).unwrap();
    // The handshake, byte by byte in both directions.
    while client.is_handshaking() || server.is_handshaking() {
        for byte in client_output(&mut client) {
            assert!(server.receive(&[byte]).unwrap().plaintext.is_empty());
        }
        let mut reply = Vec::new();
        server.write_to(None, &mut reply).unwrap();
        for byte in reply {
            client_input(&mut client, &[byte]);
        }
    }
    let message = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut plaintext = Vec::new();
    for byte in client_send(&mut client, message) {
        plaintext.extend(server.receive(&[byte]).unwrap().plaintext);
    }
    assert_eq!(plaintext, message);
}

#[test]
fn plain_http_sent_to_the_tls_port_is_refused_without_an_answer() {
    let pki = Pki::new();
    let mut server = Tls::new(pki.server_config()).unwrap();
    match server.receive(b"GET / HTTP/1.1\r\n\r\n") {
        Err(TlsError::NotTls { first_byte: b'G' }) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        !server.wants_write(),
        "nothing is said to a peer that does not speak TLS"
    );
}

#[test]
fn a_malformed_client_hello_is_answered_with_an_alert() {
    let pki = Pki::new();
    let mut server = Tls::new(pki.server_config()).unwrap();
    // A handshake record (22), TLS 1.0 record version, 4 bytes of a message that is not a hello.
    let record = [0x16, 0x03, 0x01, 0x00, 0x04, 0xff, 0x00, 0x00, 0x00];
    assert!(matches!(server.receive(&record), Err(TlsError::Protocol(_))));
    let mut wire = Vec::new();
    server.write_to(None, &mut wire).unwrap();
    // RFC 8446 §5.1: content type 21 is an alert.
    assert_eq!(wire.first(), Some(&0x15), "{wire:02x?}");
}

#[test]
fn the_phases_bytes_wait_in_its_outbox_during_the_handshake() {
    let pki = Pki::new();
    let mut client = pki.client();
    let mut server = Tls::new(pki.server_config()).unwrap();
    server.receive(&client_output(&mut client)).unwrap();
    let mut outbox = Outbox::new();
    outbox.append_with(|out| out.extend_from_slice(b"early"));
    let mut wire = Vec::new();
    server.write_to(Some(&mut outbox), &mut wire).unwrap();
    assert!(!wire.is_empty(), "the server's handshake flight went");
    assert_eq!(outbox.len(), 5, "the phase's bytes wait for the keys");
    client_input(&mut client, &wire);
    handshake(&mut client, &mut server);
    let mut wire = Vec::new();
    server.write_to(Some(&mut outbox), &mut wire).unwrap();
    assert_eq!(client_input(&mut client, &wire), b"early");
}

#[test]
fn a_writer_that_blocks_leaves_the_rest_as_plaintext_and_at_most_the_limit_sealed() {
    let pki = Pki::new();
    let mut client = pki.client();
    let mut server = Tls::new(pki.server_config()).unwrap();
    handshake(&mut client, &mut server);
    let message: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut outbox = Outbox::new();
    outbox.append_with(|out| out.extend_from_slice(&message));
    let mut full = Full {
        taken: Vec::new(),
        room: 100_000,
    };
    server.write_to(Some(&mut outbox), &mut full).unwrap();
    assert_eq!(full.taken.len(), 100_000);
    let sealed = message.len() - outbox.len();
    assert!(
        sealed < 100_000 + SEALED_LIMIT,
        "sealed {sealed} bytes for a writer that took 100,000"
    );
    let mut rest = Vec::new();
    server.write_to(Some(&mut outbox), &mut rest).unwrap();
    assert!(outbox.is_empty() && !server.wants_write());
    full.taken.extend(rest);
    assert_eq!(client_input(&mut client, &full.taken), message);
}

#[test]
fn the_peers_close_notify_is_its_end_of_stream() {
    let pki = Pki::new();
    let mut client = pki.client();
    let mut server = Tls::new(pki.server_config()).unwrap();
    handshake(&mut client, &mut server);
    client.writer().write_all(b"bye").unwrap();
    client.send_close_notify();
    let received = server.receive(&client_output(&mut client)).unwrap();
    assert_eq!(
        received,
        Received {
            plaintext: b"bye".to_vec(),
            closed: true
        }
    );
}

#[test]
fn closing_says_close_notify() {
    let pki = Pki::new();
    let mut client = pki.client();
    let mut server = Tls::new(pki.server_config()).unwrap();
    handshake(&mut client, &mut server);
    assert!(!server.close(), "the alert is queued, not yet written");
    let mut wire = Vec::new();
    server.write_to(None, &mut wire).unwrap();
    assert!(server.close(), "written; asking again queues nothing more");
    client.read_tls(&mut wire.as_slice()).unwrap();
    assert!(client.process_new_packets().unwrap().peer_has_closed());
}
