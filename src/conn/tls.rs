//! TLS as a byte transform between the socket and the phase (RFC 8446, TLS 1.3; RFC 5246, TLS 1.2),
//! by rustls, sans-IO.
//!
//! ```text
//!   socket ──ciphertext──► Tls::receive ──plaintext──► phase (HTTP, WebSocket)
//!   socket ◄──ciphertext── Tls::write_to ◄──plaintext── the phase's outbox
//! ```
//!
//! The phase never learns that it is encrypted: it is handed plaintext and queues plaintext, exactly
//! as on a plain socket. rustls' buffered connection does the record layer; this module decides
//! when bytes move between it, the phase and the writer:
//!
//! - **In**: ciphertext from one read is fed to rustls a record buffer at a time, and the plaintext
//!   each batch of records yields is collected for the phase in one piece.
//! - **Out**: the phase's outbox is the plaintext queue. Plaintext is sealed into records only when
//!   rustls' ciphertext queue (the transport's outbox) has gone to the writer, and at most
//!   [`SEALED_LIMIT`] bytes of it at once, so a slow reader costs plaintext (where a broadcast
//!   frame is a shared handle) rather than ciphertext. While the handshake runs, whatever the phase
//!   has queued simply stays in its outbox: that is the pending buffer.
//! - **Last word**: before our side of TCP is shut down, a `close_notify` alert (RFC 8446 §6.1)
//!   tells the peer that the end of the stream is the end of our data, not a truncation.
//!
//! Plain connections never reach this module: [`super::Stack`] holds a `Transport::Plain` that
//! passes the scratch buffer straight to the phase.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConfig;
use rustls::{InconsistentKeys, ServerConnection};

use crate::outbox::Outbox;

/// RFC 8446 §5.1 (and RFC 5246 §6.2.1): every TLS conversation starts with a record of content
/// type `handshake` (22), the ClientHello. A connection whose first byte is anything else is not
/// speaking TLS (typically plain HTTP sent to the TLS port: `G` of `GET`).
const HANDSHAKE_CONTENT_TYPE: u8 = 0x16;

/// Ciphertext that may wait in rustls for the writer: plaintext is sealed only while less than
/// this is pending. 64 KiB is rustls' own default and a typical socket send buffer; the phase's
/// queue (with its `--max-queued-output` cap) holds the rest, as plaintext.
pub const SEALED_LIMIT: usize = 64 * 1024;

/// The only application protocol served (RFC 7301 ALPN): HTTP/1.1, which carries both the page
/// and the WebSocket upgrade (RFC 6455 §4.1). A browser that offers `h2` too settles on it.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// What is wrong with a certificate and key pair. One variant per rule; the server adds the file
/// names.
#[derive(Debug)]
pub enum TlsConfigError {
    /// The certificate file holds no PEM `CERTIFICATE` section.
    NoCertificate,
    /// A PEM section of the certificate file is malformed.
    Certificate(pem::Error),
    /// The key file holds no PEM private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`).
    NoKey,
    /// The key file's PEM is malformed.
    Key(pem::Error),
    /// The private key is not the one the (first) certificate was issued for.
    KeyMismatch,
    /// rustls refused the pair: a key type it cannot sign with, a certificate it cannot parse.
    Rejected(rustls::Error),
}

impl std::fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoCertificate => {
                f.write_str("no PEM certificate (BEGIN CERTIFICATE) in the certificate file")
            }
            Self::Certificate(error) => write!(f, "unreadable certificate PEM: {error}"),
            Self::NoKey => f.write_str("no PEM private key (BEGIN PRIVATE KEY) in the key file"),
            Self::Key(error) => write!(f, "unreadable private key PEM: {error}"),
            Self::KeyMismatch => f.write_str("the private key does not match the certificate"),
            Self::Rejected(error) => write!(f, "certificate and key refused: {error}"),
        }
    }
}

impl std::error::Error for TlsConfigError {}

/// The server's TLS configuration from a PEM certificate chain (leaf first) and its PEM private
/// key: TLS 1.3 and 1.2 with rustls' safe defaults, the `ring` crypto provider, no client
/// certificates, ALPN `http/1.1`. Checks that the key belongs to the certificate.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsConfigError::Certificate)?;
    if chain.is_empty() {
        return Err(TlsConfigError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsConfigError::NoKey,
        error => TlsConfigError::Key(error),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsConfigError::Rejected)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => TlsConfigError::KeyMismatch,
            error => TlsConfigError::Rejected(error),
        })?;
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// Why a TLS connection cannot go on. Each ends the connection; rustls has queued the alert that
/// tells the peer, where there is one to send.
#[derive(Debug)]
pub enum TlsError {
    /// The first byte was not a handshake record: the peer is not speaking TLS (RFC 8446 §5.1).
    NotTls { first_byte: u8 },
    /// The peer broke the TLS protocol, or refused our certificate (its alert).
    Protocol(rustls::Error),
    /// A record or handshake message longer than rustls buffers.
    Oversized(io::Error),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotTls { first_byte } => {
                write!(
                    f,
                    "not TLS (first byte {first_byte:#04x}, a handshake starts with 0x16)"
                )
            }
            Self::Protocol(error) => write!(f, "TLS: {error}"),
            Self::Oversized(error) => write!(f, "TLS: {error}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// What one batch of ciphertext yielded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Application data for the phase, in order; empty during the handshake.
    pub plaintext: Vec<u8>,
    /// The peer sent `close_notify`: it will send nothing more (a TLS-level FIN).
    pub closed: bool,
}

/// One TLS server connection.
#[derive(Debug)]
pub struct Tls {
    conn: ServerConnection,
    /// No byte received yet: the next one must start a handshake record.
    fresh: bool,
}

impl Tls {
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        conn.set_buffer_limit(Some(SEALED_LIMIT));
        Ok(Self { conn, fresh: true })
    }

    /// Whether the handshake is still running (no application data flows yet).
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether ciphertext waits for the writer (handshake messages, records, alerts).
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Ciphertext arrived: decrypts it, and returns the plaintext it completes. Bytes of a record
    /// not yet complete stay in rustls until the rest arrives.
    pub fn receive(&mut self, mut ciphertext: &[u8]) -> Result<Received, TlsError> {
        if self.fresh
            && let Some(&first_byte) = ciphertext.first()
        {
            self.fresh = false;
            if first_byte != HANDSHAKE_CONTENT_TYPE {
                return Err(TlsError::NotTls { first_byte });
            }
        }
        let mut received = Received::default();
        while !ciphertext.is_empty() && !received.closed {
            // rustls takes what fits its record buffer (a few KiB at a time) and advances the slice.
            if self.conn.read_tls(&mut ciphertext).map_err(TlsError::Oversized)? == 0 {
                break; // after close_notify it takes nothing more
            }
            let state = self.conn.process_new_packets().map_err(TlsError::Protocol)?;
            let start = received.plaintext.len();
            received
                .plaintext
                .resize(start + state.plaintext_bytes_to_read(), 0);
            // Exactly what rustls just said it holds: this read cannot come up short.
            self.conn
                .reader()
                .read_exact(&mut received.plaintext[start..])
                .map_err(TlsError::Oversized)?;
            received.closed = state.peer_has_closed();
        }
        Ok(received)
    }

    /// Writes ciphertext to `writer` until it would block or nothing is left: first what rustls
    /// already holds, then, once the handshake is over, the phase's plaintext from `plaintext`,
    /// sealed [`SEALED_LIMIT`] bytes at a time as the writer takes them. Returns the ciphertext
    /// bytes the writer took.
    pub fn write_to<W: Write>(
        &mut self,
        mut plaintext: Option<&mut Outbox>,
        writer: &mut W,
    ) -> io::Result<usize> {
        let mut written = 0;
        loop {
            while self.conn.wants_write() {
                match self.conn.write_tls(writer) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => written += n,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(written),
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(error),
                }
            }
            let Some(outbox) = plaintext.as_deref_mut().filter(|outbox| !outbox.is_empty()) else {
                return Ok(written);
            };
            if self.conn.is_handshaking() {
                return Ok(written); // the phase's bytes wait in its outbox for the keys
            }
            outbox.write_to(&mut Sealer(self.conn.writer()))?;
        }
    }

    /// Queues `close_notify` (RFC 8446 §6.1: each side sends it before closing its write side).
    /// Returns whether everything, the alert included, has been written.
    pub fn close(&mut self) -> bool {
        self.conn.send_close_notify();
        !self.conn.wants_write()
    }
}

/// rustls' writer as seen by [`Outbox::write_to`]: a full ciphertext queue is a writer that would
/// block, so the outbox keeps the rest.
struct Sealer<'a>(rustls::Writer<'a>);

impl Write for Sealer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sealed(buf.is_empty(), self.0.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // rustls packs all the slices into as few records as they fill.
        sealed(bufs.iter().all(|buf| buf.is_empty()), self.0.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

fn sealed(nothing_asked: bool, written: io::Result<usize>) -> io::Result<usize> {
    match written? {
        0 if !nothing_asked => Err(io::ErrorKind::WouldBlock.into()),
        n => Ok(n),
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
