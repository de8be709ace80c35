//! The opening handshake, RFC 6455 §4.2 (server side) — a request head in, a decision out.
//!
//! The HTTP layer ([`crate::http::Conn`]) reads the request head; [`Request::from_head`] keeps the
//! fields the handshake looks at, and [`Request::validate`] checks them against §4.2.1. The answer
//! is either the [`Accepted`] upgrade, whose [`Accepted::response`] is the `101 Switching
//! Protocols`, or a [`HandshakeError`] that knows its HTTP status and renders its own one-line
//! explanation. [`parse_request`] does both reading steps at once on a byte buffer, for tools and
//! tests that have no connection.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

use crate::http::{self, RequestHead, Response, Status};
use crate::ws::deflate::{self, DeflateParams, DeflatePolicy};

pub mod client;

pub use crate::http::conn::{MAX_HEAD_BYTES, MAX_HEADERS};
pub use crate::http::head::list_elements as tokens;

/// §1.3: the GUID appended to the key before hashing.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// §4.2.1 item 6: the only version this server speaks.
const SUPPORTED_VERSION: &str = "13";

/// An upgrade request that breaks a rule of §4.2.1 (or the Origin policy), one variant per rule;
/// [`HandshakeError::status`] maps each to its HTTP status in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// §4.2.1 item 1: "An HTTP/1.1 or higher GET request".
    MethodNotAllowed(String),
    /// §4.2.1 item 1: HTTP/1.0 cannot upgrade.
    HttpVersion,
    /// §4.2.1 item 2: a `Host` header field.
    MissingHost,
    /// §4.2.1 item 3: `Upgrade` containing `websocket`.
    NotWebSocketUpgrade,
    /// §4.2.1 item 4: `Connection` containing the `Upgrade` token.
    MissingConnectionUpgrade,
    /// §4.2.1 item 5: `Sec-WebSocket-Key`, base64 of 16 bytes, exactly once.
    BadKey,
    /// §4.2.1 item 6: `Sec-WebSocket-Version` is required.
    MissingVersion,
    /// §4.2.2: a version we do not speak: 426 with the version we do.
    UnsupportedVersion(String),
    /// §4.2.2 item 2 / §10.2: the `Origin` is not one we serve.
    ForbiddenOrigin(String),
}

impl HandshakeError {
    pub fn status(&self) -> Status {
        match self {
            Self::HttpVersion
            | Self::MissingHost
            | Self::NotWebSocketUpgrade
            | Self::MissingConnectionUpgrade
            | Self::BadKey
            | Self::MissingVersion => Status::BAD_REQUEST,
            Self::MethodNotAllowed(_) => Status::METHOD_NOT_ALLOWED,
            Self::UnsupportedVersion(_) => Status::UPGRADE_REQUIRED,
            Self::ForbiddenOrigin(_) => Status::FORBIDDEN,
        }
    }

    /// The response: status, the headers the RFC asks for, and a one-line body. The connection
    /// closes after it: a client that got the handshake wrong is not worth keeping.
    pub fn response(&self) -> Response {
        let response = Response::text(self.status(), &self.to_string()).close();
        match self {
            Self::UnsupportedVersion(_) | Self::MissingVersion => {
                response.header("Sec-WebSocket-Version", SUPPORTED_VERSION)
            }
            Self::MethodNotAllowed(_) => response.header("Allow", "GET"),
            _ => response,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MethodNotAllowed(method) => write!(f, "method {method} cannot upgrade; use GET"),
            Self::HttpVersion => f.write_str("WebSocket upgrade requires HTTP/1.1"),
            Self::MissingHost => f.write_str("missing Host header"),
            Self::NotWebSocketUpgrade => f.write_str("Upgrade header must contain \"websocket\""),
            Self::MissingConnectionUpgrade => f.write_str("Connection header must contain \"Upgrade\""),
            Self::BadKey => f.write_str("Sec-WebSocket-Key must be one base64 value of 16 bytes"),
            Self::MissingVersion => f.write_str("missing Sec-WebSocket-Version header"),
            Self::UnsupportedVersion(version) => {
                write!(f, "Sec-WebSocket-Version {version:?} is not supported; use 13")
            }
            Self::ForbiddenOrigin(origin) => write!(f, "origin {origin:?} is not allowed"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// The parts of a request head the handshake looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target without its query string.
    pub path: String,
    /// HTTP minor version: 1 for HTTP/1.1.
    pub minor_version: u8,
    pub host: Option<String>,
    /// Tokens of every `Upgrade` field, lower-cased.
    pub upgrade: Vec<String>,
    /// Tokens of every `Connection` field, lower-cased.
    pub connection: Vec<String>,
    /// Every `Sec-WebSocket-Key` value.
    pub keys: Vec<String>,
    pub version: Option<String>,
    pub origin: Option<String>,
    /// Subprotocols the client offered, in its order of preference.
    pub protocols: Vec<String>,
    /// Every `Sec-WebSocket-Extensions` value, as sent (§9.1; negotiated by the extension).
    pub extensions: Vec<String>,
}

/// Who may connect and what we speak: the policy side of validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// When not empty, only these `Origin` values may connect (compared ignoring ASCII case).
    /// Requests without `Origin` come from non-browser clients, which carry no ambient
    /// credentials, so they are let through (§10.2).
    pub allowed_origins: Vec<String>,
    /// Subprotocols this endpoint speaks; one is chosen only if the client offered it.
    pub protocols: Vec<String>,
    /// Whether (and how) we accept permessage-deflate (RFC 7692); `None`: every offer is declined.
    pub deflate: Option<DeflatePolicy>,
}

/// A validated upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// `Sec-WebSocket-Accept`, §4.2.2 item 5.4.
    pub accept: String,
    /// The subprotocol chosen from the client's list, if any.
    pub protocol: Option<String>,
    /// The permessage-deflate agreement and the `Sec-WebSocket-Extensions` value that states it
    /// (RFC 7692 §7.1), when an offer was acceptable.
    pub deflate: Option<(DeflateParams, String)>,
}

impl Accepted {
    /// The `101 Switching Protocols` response (§4.2.2 item 5); the HTTP layer adds
    /// `Connection: Upgrade`. An extension appears only if the client offered it (§9.1).
    pub fn response(&self) -> Response {
        let mut response = Response::new(Status::SWITCHING_PROTOCOLS)
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Accept", self.accept.clone());
        if let Some(protocol) = &self.protocol {
            response = response.header("Sec-WebSocket-Protocol", protocol.clone());
        }
        if let Some((_, extension)) = &self.deflate {
            response = response.header("Sec-WebSocket-Extensions", extension.clone());
        }
        response
    }
}

/// §1.3 / §4.2.2: base64 of the SHA-1 of the key followed by the GUID.
pub fn accept_key(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha1.finalize())
}

/// Reads the request head at the front of `buf` (with the HTTP layer's limits). `Ok(None)`: not
/// complete yet, read more. `Ok(Some((request, head_len)))`: bytes from `head_len` on belong to
/// the WebSocket stream.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, http::Error> {
    let parsed = http::parse_head(buf, &http::Limits::default())?;
    Ok(parsed.map(|(head, len)| (Request::from_head(&head), len)))
}

impl Request {
    /// The fields of `head` the handshake needs: token lists split and lower-cased, values as sent.
    pub fn from_head(head: &RequestHead) -> Self {
        let lower_tokens = |name| head.tokens(name).map(str::to_ascii_lowercase).collect();
        Self {
            method: head.method.clone(),
            path: head.path.clone(),
            minor_version: head.minor_version,
            host: head.header("host").map(str::to_owned),
            upgrade: lower_tokens("upgrade"),
            connection: lower_tokens("connection"),
            keys: head
                .header_values("sec-websocket-key")
                .map(str::to_owned)
                .collect(),
            version: head.header("sec-websocket-version").map(str::to_owned),
            origin: head.header("origin").map(str::to_owned),
            protocols: head.tokens("sec-websocket-protocol").map(str::to_owned).collect(),
            extensions: head
                .header_values("sec-websocket-extensions")
                .map(str::to_owned)
                .collect(),
        }
    }

    /// Whether the client asked for any upgrade at all. A request without `Upgrade` is a plain
    /// HTTP request (e.g. a browser loading the chat page).
    pub fn wants_upgrade(&self) -> bool {
        !self.upgrade.is_empty()
    }

    /// Checks the request against §4.2.1 and the policy, in the order the RFC lists the rules.
    pub fn validate(&self, policy: &Policy) -> Result<Accepted, HandshakeError> {
        if self.method != "GET" {
            return Err(HandshakeError::MethodNotAllowed(self.method.clone()));
        }
        if self.minor_version < 1 {
            return Err(HandshakeError::HttpVersion);
        }
        if self.host.as_deref().is_none_or(str::is_empty) {
            return Err(HandshakeError::MissingHost);
        }
        if !self.upgrade.iter().any(|token| token == "websocket") {
            return Err(HandshakeError::NotWebSocketUpgrade);
        }
        if !self.connection.iter().any(|token| token == "upgrade") {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        let key = match self.keys.as_slice() {
            [key] if BASE64.decode(key).is_ok_and(|bytes| bytes.len() == 16) => key,
            _ => return Err(HandshakeError::BadKey),
        };
        match self.version.as_deref() {
            None => return Err(HandshakeError::MissingVersion),
            Some(SUPPORTED_VERSION) => {}
            Some(other) => return Err(HandshakeError::UnsupportedVersion(other.to_owned())),
        }
        if let Some(origin) = &self.origin
            && !policy.allowed_origins.is_empty()
            && !policy
                .allowed_origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin))
        {
            return Err(HandshakeError::ForbiddenOrigin(origin.clone()));
        }
        Ok(Accepted {
            accept: accept_key(key),
            protocol: select_protocol(&self.protocols, &policy.protocols),
            // RFC 7692 §5: an offer we cannot accept is declined by not answering it, never by
            // failing the handshake.
            deflate: policy
                .deflate
                .and_then(|deflate| deflate::negotiate(&self.extensions, &deflate)),
        })
    }
}

/// §4.2.2 item 5.4: the first subprotocol, in the client's order of preference, that we speak.
/// Never one the client did not offer.
pub fn select_protocol(offered: &[String], supported: &[String]) -> Option<String> {
    offered
        .iter()
        .find(|protocol| supported.contains(protocol))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_REQUEST: &str = "GET /echo HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: Upgrade\r\n\
        Pragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0\r\nUpgrade: websocket\r\n\
        Origin: http://127.0.0.1:8080\r\nSec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate, br\r\n\
        Accept-Language: en-US,en;q=0.9\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

    fn parse(text: &str) -> Request {
        parse_request(text.as_bytes()).unwrap().unwrap().0
    }

    /// A valid request with one header line replaced (or removed, when `with` is empty).
    fn request_with(name: &str, with: &str) -> String {
        let mut lines: Vec<String> = CHROME_REQUEST
            .split("\r\n")
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect();
        lines.retain(|line| {
            !line
                .to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        });
        if !with.is_empty() {
            lines.push(with.to_owned());
        }
        format!("{}\r\n\r\n", lines.join("\r\n"))
    }

    fn validate(text: &str) -> Result<Accepted, HandshakeError> {
        parse(text).validate(&Policy::default())
    }

    /// The server's whole answer to `text`, as the HTTP layer writes it.
    fn answer(text: &str, policy: &Policy) -> String {
        String::from_utf8(crate::testing::handshake_answer(text.as_bytes(), policy)).unwrap()
    }

    #[test]
    fn rfc_1_3_accept_key_test_vector() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn browser_request_is_accepted_with_the_101_response() {
        let response = answer(CHROME_REQUEST, &Policy::default());
        assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(response.contains("Upgrade: websocket\r\n"));
        assert!(response.contains("Connection: Upgrade\r\n"));
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(
            !response.contains("Sec-WebSocket-Extensions"),
            "the extension is declined when the policy has none"
        );
        assert!(!response.contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn an_acceptable_deflate_offer_is_answered_in_the_101() {
        let policy = Policy {
            deflate: Some(DeflatePolicy::default()),
            ..Policy::default()
        };
        let response = answer(CHROME_REQUEST, &policy);
        assert!(
            response.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"),
            "{response}"
        );
        let accepted = parse(CHROME_REQUEST).validate(&policy).unwrap();
        assert!(
            accepted
                .deflate
                .is_some_and(|(params, _)| params.server_no_context_takeover)
        );
    }

    #[test]
    fn an_unacceptable_deflate_offer_is_declined_not_refused() {
        let policy = Policy {
            deflate: Some(DeflatePolicy::default()),
            ..Policy::default()
        };
        let odd = request_with(
            "sec-websocket-extensions",
            "Sec-WebSocket-Extensions: permessage-deflate; mystery=1",
        );
        let accepted = parse(&odd).validate(&policy).expect("still upgraded");
        assert_eq!(accepted.deflate, None);
        assert!(!answer(&odd, &policy).contains("Sec-WebSocket-Extensions"));
    }

    #[test]
    fn request_split_into_any_pieces_parses_once_complete() {
        let bytes = CHROME_REQUEST.as_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(parse_request(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse_request(bytes).unwrap().unwrap().1, bytes.len());
    }

    #[test]
    fn bytes_after_the_head_are_not_part_of_it() {
        let mut bytes = CHROME_REQUEST.as_bytes().to_vec();
        bytes.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
        let (_, head_len) = parse_request(&bytes).unwrap().unwrap();
        assert_eq!(&bytes[head_len..], [0x81, 0x80, 1, 2, 3, 4]);
    }

    #[test]
    fn header_names_and_tokens_are_case_insensitive() {
        let text = request_with("connection", "CONNECTION: keep-alive, UPGRADE");
        let text = text.replace("Upgrade: websocket", "upgrade: WebSocket");
        assert!(validate(&text).is_ok());
    }

    #[test]
    fn rejections_table() {
        let post = CHROME_REQUEST.replacen("GET", "POST", 1);
        let http10 = CHROME_REQUEST.replacen("HTTP/1.1", "HTTP/1.0", 1);
        let two_keys = request_with("", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==");
        let table: &[(&str, String, u16)] = &[
            ("non-GET upgrade", post, 405),
            ("HTTP/1.0", http10, 400),
            ("no Host", request_with("host", ""), 400),
            (
                "Upgrade is not websocket",
                request_with("upgrade", "Upgrade: h2c"),
                400,
            ),
            (
                "no Connection: upgrade",
                request_with("connection", "Connection: keep-alive"),
                400,
            ),
            ("no key", request_with("sec-websocket-key", ""), 400),
            (
                "key of 15 bytes",
                request_with("sec-websocket-key", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA"),
                400,
            ),
            (
                "key not base64",
                request_with("sec-websocket-key", "Sec-WebSocket-Key: !!!!"),
                400,
            ),
            ("two keys", two_keys, 400),
            ("no version", request_with("sec-websocket-version", ""), 400),
            (
                "version 8",
                request_with("sec-websocket-version", "Sec-WebSocket-Version: 8"),
                426,
            ),
        ];
        for (rule, text, status) in table {
            let error = validate(text).expect_err(rule);
            assert_eq!(error.status().code(), *status, "{rule}: {error}");
        }
    }

    #[test]
    fn wrong_version_answer_names_the_supported_version() {
        let request = request_with("sec-websocket-version", "Sec-WebSocket-Version: 7");
        let response = answer(&request, &Policy::default());
        assert!(response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(response.contains("Sec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn oversized_head_is_431() {
        let huge = format!("GET / HTTP/1.1\r\nX-Padding: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        let error = parse_request(huge.as_bytes()).unwrap_err();
        assert_eq!(error.status().code(), 431);
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut text = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            text.push_str(&format!("X-H{i}: v\r\n"));
        }
        text.push_str("\r\n");
        let error = parse_request(text.as_bytes()).unwrap_err();
        assert_eq!(error.status().code(), 431);
    }

    #[test]
    fn garbage_is_400() {
        let error = parse_request(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").unwrap_err();
        assert_eq!(error.status().code(), 400);
    }

    #[test]
    fn origin_outside_the_allowed_list_is_403() {
        let policy = Policy {
            allowed_origins: vec!["https://chat.example".into()],
            ..Policy::default()
        };
        let error = parse(CHROME_REQUEST).validate(&policy).unwrap_err();
        assert_eq!(error.status().code(), 403);
        let allowed = CHROME_REQUEST.replace("http://127.0.0.1:8080", "HTTPS://chat.example");
        assert!(parse(&allowed).validate(&policy).is_ok());
        let no_origin = request_with("origin", "");
        assert!(
            parse(&no_origin).validate(&policy).is_ok(),
            "non-browser clients send no Origin"
        );
    }

    #[test]
    fn subprotocol_is_chosen_only_from_the_clients_list() {
        let policy = Policy {
            protocols: vec!["chat.v2".into(), "chat.v1".into()],
            ..Policy::default()
        };
        let offered = request_with("", "Sec-WebSocket-Protocol: other, chat.v1, chat.v2");
        let accepted = parse(&offered).validate(&policy).unwrap();
        assert_eq!(
            accepted.protocol.as_deref(),
            Some("chat.v1"),
            "client's preference wins"
        );
        assert!(answer(&offered, &policy).contains("Sec-WebSocket-Protocol: chat.v1\r\n"));
        let unknown = request_with("", "Sec-WebSocket-Protocol: mqtt");
        assert_eq!(parse(&unknown).validate(&policy).unwrap().protocol, None);
    }

    #[test]
    fn query_string_is_not_part_of_the_path() {
        assert_eq!(
            parse(&CHROME_REQUEST.replacen("/echo", "/echo?token=1", 1)).path,
            "/echo"
        );
    }
}
