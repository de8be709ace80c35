//! A rustls client for the sans-IO tests: certificates from a test CA, and a client connection
//! that trusts it, pumped against a server by hand.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

#[path = "../../../tests/common/certs.rs"]
mod certs;

pub use certs::{Issued, TestCa};

/// A CA and a server certificate it issued.
pub struct Pki {
    pub ca: TestCa,
    pub server: Issued,
}

impl Pki {
    pub fn new() -> Self {
        let ca = TestCa::new("wschat test CA");
        let server = ca.issue("wschat test server");
        Self { ca, server }
    }

    /// The server's configuration for the certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        super::server_config(self.server.cert_pem.as_bytes(), self.server.key_pem.as_bytes())
            .expect("a valid test certificate")
    }

    /// A client that trusts the CA, connecting to `localhost`.
    pub fn client(&self) -> ClientConnection {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca.pem().as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA certificate");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").expect("a DNS name");
        ClientConnection::new(Arc::new(config), name).expect("client connection")
    }
}

/// What the client has to send (its TLS records), drained.
pub fn client_output(client: &mut ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).expect("writing to a Vec");
    }
    out
}

/// Feeds the server's ciphertext to the client; returns the plaintext it yields.
pub fn client_input(client: &mut ClientConnection, mut ciphertext: &[u8]) -> Vec<u8> {
    let mut plaintext = Vec::new();
    while !ciphertext.is_empty() {
        client.read_tls(&mut ciphertext).expect("client reads");
        client.process_new_packets().expect("the server speaks valid TLS");
        let _ = client.reader().read_to_end(&mut plaintext);
    }
    plaintext
}

/// Queues application data on the client and returns its records.
pub fn client_send(client: &mut ClientConnection, plaintext: &[u8]) -> Vec<u8> {
    client.writer().write_all(plaintext).expect("client buffers");
    client_output(client)
}
