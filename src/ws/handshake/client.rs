//! The client's side of the opening handshake, RFC 6455 §4.1: the request it sends and the checks
//! it makes on the server's answer. Used by `wschat-client`, the benchmark client, the examples and
//! tests. A client may offer permessage-deflate (RFC 7692, [`crate::ws::deflate`]) and learns from
//! the answer whether the server took it, and with which parameters.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{MAX_HEADERS, accept_key, tokens};
use crate::ws::deflate::{self, DeflateParams, ExtensionError};

/// A server answer the client must refuse (§4.1, "the client MUST _Fail the WebSocket
/// Connection_").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHandshakeError {
    /// Not a valid HTTP response head.
    Malformed(String),
    /// §4.1 item 1: any status other than 101 (e.g. 426, 503); carries the status code.
    Status(u16),
    /// §4.1 items 2-3: `Upgrade: websocket` and `Connection: Upgrade` are required.
    NotUpgraded,
    /// §4.1 item 4: `Sec-WebSocket-Accept` is missing or does not match our key.
    WrongAccept,
    /// §4.1 items 5-6: the server chose an extension or subprotocol we did not offer.
    Unrequested(&'static str),
    /// RFC 7692 §5, §7: the server's answer to our permessage-deflate offer is invalid.
    Extension(ExtensionError),
}

impl fmt::Display for ClientHandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed HTTP response: {why}"),
            Self::Status(code) => write!(f, "server answered {code}, not 101"),
            Self::NotUpgraded => f.write_str("response lacks Upgrade: websocket / Connection: Upgrade"),
            Self::WrongAccept => f.write_str("Sec-WebSocket-Accept does not match the key"),
            Self::Unrequested(what) => write!(f, "server chose a {what} we did not offer"),
            Self::Extension(error) => write!(f, "server's permessage-deflate answer: {error}"),
        }
    }
}

impl std::error::Error for ClientHandshakeError {}

/// One handshake attempt: the request to send and what to expect in the answer.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    request: Vec<u8>,
    expected_accept: String,
    /// The request offers permessage-deflate ([`deflate::CLIENT_OFFER`]).
    offers_deflate: bool,
}

/// A server answer the client accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Length of the response head; the bytes after it are the first frames.
    pub head_len: usize,
    /// The permessage-deflate agreement, if we offered it and the server took it; hand it to
    /// [`crate::ws::protocol::Connection::with_deflate`].
    pub deflate: Option<DeflateParams>,
}

impl ClientHandshake {
    /// A request for `path` on `host`, with `nonce` as the key, offering no extension. §4.1 wants
    /// the nonce "randomly selected"; callers take it from a random source.
    pub fn new(host: &str, path: &str, nonce: [u8; 16]) -> Self {
        Self::build(host, path, nonce, false)
    }

    /// Like [`ClientHandshake::new`], also offering permessage-deflate.
    pub fn with_deflate(host: &str, path: &str, nonce: [u8; 16]) -> Self {
        Self::build(host, path, nonce, true)
    }

    fn build(host: &str, path: &str, nonce: [u8; 16], offers_deflate: bool) -> Self {
        let key = BASE64.encode(nonce);
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        );
        if offers_deflate {
            request.push_str(&format!(
                "Sec-WebSocket-Extensions: {}\r\n",
                deflate::CLIENT_OFFER
            ));
        }
        request.push_str("\r\n");
        Self {
            request: request.into_bytes(),
            expected_accept: accept_key(&key),
            offers_deflate,
        }
    }

    /// The bytes to send.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// Checks the response at the front of `buf`. `Ok(None)`: incomplete, read more.
    /// `Ok(Some(head_len))`: accepted; bytes from `head_len` on are the first frames. (See
    /// [`ClientHandshake::parse_answer`] for the extension the server agreed to.)
    pub fn parse_response(&self, buf: &[u8]) -> Result<Option<usize>, ClientHandshakeError> {
        Ok(self.parse_answer(buf)?.map(|answer| answer.head_len))
    }

    /// Checks the response at the front of `buf`, like [`ClientHandshake::parse_response`], and
    /// also returns the permessage-deflate agreement.
    pub fn parse_answer(&self, buf: &[u8]) -> Result<Option<Answer>, ClientHandshakeError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(error) => return Err(ClientHandshakeError::Malformed(error.to_string())),
        };
        let code = response.code.unwrap_or(0);
        if code != 101 {
            return Err(ClientHandshakeError::Status(code));
        }
        let header = |name: &str| -> Vec<String> {
            response
                .headers
                .iter()
                .filter(|header| header.name.eq_ignore_ascii_case(name))
                .map(|header| String::from_utf8_lossy(header.value).trim().to_owned())
                .collect()
        };
        let has_token = |name: &str, token: &str| {
            header(name)
                .iter()
                .any(|value| tokens(value).any(|t| t.eq_ignore_ascii_case(token)))
        };
        if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
            return Err(ClientHandshakeError::NotUpgraded);
        }
        if !header("sec-websocket-accept").contains(&self.expected_accept) {
            return Err(ClientHandshakeError::WrongAccept);
        }
        let extensions = header("sec-websocket-extensions");
        let deflate = if self.offers_deflate {
            deflate::accept_response(&extensions).map_err(ClientHandshakeError::Extension)?
        } else if extensions.is_empty() {
            None
        } else {
            return Err(ClientHandshakeError::Unrequested("extension"));
        };
        if !header("sec-websocket-protocol").is_empty() {
            return Err(ClientHandshakeError::Unrequested("subprotocol"));
        }
        Ok(Some(Answer { head_len, deflate }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::handshake::Policy;

    /// The RFC's sample nonce, "the sample nonce" in ASCII (§1.3 / §4.1).
    const SAMPLE_NONCE: [u8; 16] = *b"the sample nonce";

    #[test]
    fn request_carries_the_base64_nonce_and_version_13() {
        let handshake = ClientHandshake::new("server.example.com", "/chat", SAMPLE_NONCE);
        let text = String::from_utf8(handshake.request().to_vec()).unwrap();
        assert!(text.starts_with("GET /chat HTTP/1.1\r\nHost: server.example.com\r\n"));
        assert!(text.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn our_server_accepts_our_client_and_the_client_accepts_the_answer() {
        let handshake = ClientHandshake::new("localhost", "/", SAMPLE_NONCE);
        let mut response = crate::testing::handshake_answer(handshake.request(), &Policy::default());
        let head_len = response.len();
        response.extend_from_slice(&[0x81, 0x00]);
        assert_eq!(handshake.parse_response(&response), Ok(Some(head_len)));
        assert_eq!(handshake.parse_response(&response[..head_len - 1]), Ok(None));
    }

    #[test]
    fn offering_deflate_adds_the_offer_to_the_request() {
        let plain =
            String::from_utf8(ClientHandshake::new("h", "/", SAMPLE_NONCE).request().to_vec()).unwrap();
        assert!(!plain.contains("Sec-WebSocket-Extensions"));
        let handshake = ClientHandshake::with_deflate("h", "/", SAMPLE_NONCE);
        let text = String::from_utf8(handshake.request().to_vec()).unwrap();
        assert!(
            text.ends_with("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n")
        );
        let (request, _) = crate::ws::handshake::parse_request(handshake.request())
            .unwrap()
            .unwrap();
        assert!(
            request.validate(&Policy::default()).is_ok(),
            "still a valid upgrade"
        );
    }

    /// The RFC's sample 101 response with `extra` header lines.
    fn answer_with(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extra}\r\n"
        )
    }

    #[test]
    fn client_learns_the_deflate_agreement_from_the_answer() {
        let handshake = ClientHandshake::with_deflate("localhost", "/", SAMPLE_NONCE);
        let (params, value) =
            crate::ws::deflate::negotiate(&[crate::ws::deflate::CLIENT_OFFER], &Default::default()).unwrap();
        let response = answer_with(&format!("Sec-WebSocket-Extensions: {value}\r\n"));
        let answer = handshake.parse_answer(response.as_bytes()).unwrap().unwrap();
        assert_eq!(answer.deflate, Some(params));
        assert_eq!(answer.head_len, response.len());
        let declined = handshake
            .parse_answer(answer_with("").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(declined.deflate, None, "the server may decline");
        let limited =
            answer_with("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=9\r\n");
        let params = handshake
            .parse_answer(limited.as_bytes())
            .unwrap()
            .unwrap()
            .deflate
            .unwrap();
        assert_eq!(params.client_max_window_bits, 9);
    }

    #[test]
    fn client_fails_on_a_deflate_answer_it_cannot_accept() {
        let handshake = ClientHandshake::with_deflate("localhost", "/", SAMPLE_NONCE);
        let table = [
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; hello\r\n",
            "Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Extensions: permessage-deflate\r\n",
        ];
        for extra in table {
            assert!(
                matches!(
                    handshake.parse_answer(answer_with(extra).as_bytes()),
                    Err(ClientHandshakeError::Extension(_))
                ),
                "{extra}"
            );
        }
    }

    #[test]
    fn answers_the_client_must_refuse() {
        let handshake = ClientHandshake::new("localhost", "/", SAMPLE_NONCE);
        let good = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
        let table = [
            (
                "HTTP/1.1 426 Upgrade Required\r\n\r\n".to_owned(),
                ClientHandshakeError::Status(426),
            ),
            (
                good.replace("websocket", "h2c") + "\r\n",
                ClientHandshakeError::NotUpgraded,
            ),
            (
                good.replace("s3pP", "AAAA") + "\r\n",
                ClientHandshakeError::WrongAccept,
            ),
            (
                format!("{good}Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
                ClientHandshakeError::Unrequested("extension"),
            ),
            (
                format!("{good}Sec-WebSocket-Protocol: chat\r\n\r\n"),
                ClientHandshakeError::Unrequested("subprotocol"),
            ),
        ];
        for (response, error) in table {
            assert_eq!(
                handshake.parse_response(response.as_bytes()),
                Err(error),
                "{response}"
            );
        }
        assert_eq!(
            handshake.parse_response(format!("{good}\r\n").as_bytes()),
            Ok(Some(good.len() + 2))
        );
    }
}
