//! TLS end to end, against the real binary: `https://` and `wss://` on one port with certificates
//! made at test time, plain bytes sent to the TLS port, certificate reload on SIGHUP, and the files
//! that stop the start.
#![allow(clippy::disallowed_methods)] // Tests at the I/O edge wait on a real clock.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::certs::{Issued, TestCa};
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::{Message, WebSocket};

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A CA, a server certificate it issued, and both written to a temporary directory.
struct Files {
    ca: TestCa,
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let files = Self {
            ca: TestCa::new("wschat test CA"),
            dir: tempfile::tempdir().unwrap(),
        };
        files.install(&files.ca.issue("first"));
        files
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// Puts `issued` where the server reads its certificate and key.
    fn install(&self, issued: &Issued) {
        std::fs::write(self.cert(), &issued.cert_pem).unwrap();
        std::fs::write(self.key(), &issued.key_pem).unwrap();
    }

    fn start_server(&self) -> TestServer {
        let (cert, key) = (self.cert(), self.key());
        TestServer::start(&[
            "--echo",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
    }

    /// A TLS connection to `addr` from a client that trusts only the test CA.
    fn connect(&self, addr: SocketAddr) -> TlsStream {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca.pem().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(Arc::new(config), name).unwrap();
        let mut stream = StreamOwned::new(conn, raw_connect(addr));
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).expect("TLS handshake");
        }
        stream
    }

    fn wss_echo(&self, addr: SocketAddr) -> WebSocket<TlsStream> {
        let url = format!("wss://localhost:{}/echo", addr.port());
        let (ws, _) = tungstenite::client(url, self.connect(addr)).expect("WebSocket handshake");
        ws
    }
}

/// The certificate the server presented on `stream`.
fn presented(stream: &TlsStream) -> Vec<u8> {
    stream.conn.peer_certificates().expect("a server certificate")[0].to_vec()
}

fn der(issued: &Issued) -> Vec<u8> {
    CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
        .unwrap()
        .to_vec()
}

fn echo(ws: &mut WebSocket<TlsStream>, text: &str) {
    ws.send(Message::text(text)).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(text));
}

#[test]
fn wss_echoes_through_a_client_that_trusts_the_ca() {
    let files = Files::new();
    let server = files.start_server();
    let mut ws = files.wss_echo(server.addr);
    echo(&mut ws, "hello over TLS");
    let big = "x".repeat(60_000);
    echo(&mut ws, &big);
}

#[test]
fn https_serves_the_page_on_the_same_port() {
    let files = Files::new();
    let server = files.start_server();
    let mut stream = files.connect(server.addr);
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("the server ends with close_notify");
    let text = String::from_utf8_lossy(&response);
    assert_eq!(status_of(&text), 200);
    assert!(text.contains("<html"), "{text}");
}

#[test]
fn plain_http_to_the_tls_port_is_dropped_and_the_server_goes_on() {
    let files = Files::new();
    let server = files.start_server();
    let mut plain = raw_connect(server.addr);
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    // Closed (a FIN or, with our bytes unread, a reset), with nothing said.
    let _ = plain.read_to_end(&mut answer);
    assert!(answer.is_empty(), "answered {answer:?}");
    let mut ws = files.wss_echo(server.addr);
    echo(&mut ws, "still serving");
}

#[test]
fn sighup_serves_a_renewed_certificate_to_new_connections_and_keeps_open_ones() {
    let files = Files::new();
    let server = files.start_server();
    let mut open = files.wss_echo(server.addr);
    let first = presented(open.get_ref());

    let renewed = files.ca.issue("renewed");
    files.install(&renewed);
    signal(&server, "HUP");
    server
        .wait_for_log("SIGHUP: reloaded TLS certificate", Duration::from_secs(5))
        .expect("reload logged");
    let mut fresh = files.wss_echo(server.addr);
    assert_eq!(presented(fresh.get_ref()), der(&renewed));
    assert_ne!(presented(fresh.get_ref()), first);
    echo(&mut open, "the old connection is still open");
    echo(&mut fresh, "and the new one works");

    // A bad reload (a key of another certificate) keeps the renewed certificate, and says why.
    let stray = files.ca.issue("stray");
    std::fs::write(files.key(), stray.key_pem).unwrap();
    signal(&server, "HUP");
    let line = server
        .wait_for_log("SIGHUP: reload failed", Duration::from_secs(5))
        .expect("failed reload logged");
    assert!(line.contains("does not match"), "{line}");
    let again = files.connect(server.addr);
    assert_eq!(presented(&again), der(&renewed));
    echo(&mut open, "still open after the failed reload");
}

fn signal(server: &TestServer, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Runs the server with `cert` and `key` and returns its exit status and stderr.
fn start_with(cert: &Path, key: &Path) -> (std::process::ExitStatus, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wschat"))
        .args(["--listen", "127.0.0.1:0", "--db", ":memory:", "--tls-cert"])
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn unreadable_or_mismatched_files_stop_the_start_with_one_line() {
    let files = Files::new();
    let dir = files.dir.path();
    let missing = dir.join("missing.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let stray_key = dir.join("stray-key.pem");
    std::fs::write(&stray_key, files.ca.issue("stray").key_pem).unwrap();
    let (cert, key) = (files.cert(), files.key());
    let cases: [(&str, &Path, &Path, &str); 6] = [
        (
            "missing certificate",
            &missing,
            &key,
            "cannot read TLS certificate",
        ),
        (
            "certificate is a directory",
            dir,
            &key,
            "cannot read TLS certificate",
        ),
        ("missing key", &cert, &missing, "cannot read TLS key"),
        ("not PEM", &garbage, &key, "no PEM certificate"),
        ("key given as certificate", &key, &key, "no PEM certificate"),
        (
            "mismatched key",
            &cert,
            &stray_key,
            "does not match the certificate",
        ),
    ];
    for (name, cert, key, expected) in cases {
        let (status, stderr) = start_with(cert, key);
        assert!(!status.success(), "{name}: started");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{name}: {stderr}");
        assert!(lines[0].contains(expected), "{name}: {stderr}");
    }
}
