//! HTTP/1.1 for the server side: message syntax from RFC 9112, semantics from RFC 9110.
//!
//! - [`Conn`] is a sans-IO server connection in the style of Python's h11: bytes go in
//!   ([`Conn::receive`]), requests come out as [`Event`]s ([`Conn::next_event`]), and responses are
//!   queued as bytes in its outbox ([`Conn::respond`], or [`Conn::respond_streaming`] for a body
//!   produced over time). It decides keep-alive, pipelining, body framing and the request-smuggling
//!   checks; it never touches a socket or a clock.
//! - [`head`] reads a request head ([`parse_head`]), [`chunked`] decodes the chunked transfer
//!   coding, [`Response`] is what the caller answers with.
//! - [`Error`] is a rule the peer broke (each knows its status code and renders its own response);
//!   [`UsageError`] is a rule our own code broke by asking the connection for something HTTP does
//!   not allow.
//!
//! [`response()`] and [`error_response`] render a single self-contained response that closes the
//! connection, for callers that answer one request and hang up.

pub mod chunked;
pub mod conn;
mod error;
pub mod forwarded;
pub mod head;
mod response;
#[doc(hidden)]
pub mod transcript;

pub use conn::{Conn, Event, Limits, Upgraded};
pub use error::{Error, UsageError};
pub use head::{RequestHead, parse_head};
pub use response::{Response, ResponseHead};

/// A status line: code and reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16, pub &'static str);

impl Status {
    pub const CONTINUE: Status = Status(100, "Continue");
    pub const SWITCHING_PROTOCOLS: Status = Status(101, "Switching Protocols");
    pub const OK: Status = Status(200, "OK");
    pub const NO_CONTENT: Status = Status(204, "No Content");
    pub const NOT_MODIFIED: Status = Status(304, "Not Modified");
    pub const BAD_REQUEST: Status = Status(400, "Bad Request");
    pub const FORBIDDEN: Status = Status(403, "Forbidden");
    pub const NOT_FOUND: Status = Status(404, "Not Found");
    pub const METHOD_NOT_ALLOWED: Status = Status(405, "Method Not Allowed");
    pub const CONFLICT: Status = Status(409, "Conflict");
    /// RFC 9110 §15.5.14 renamed "Payload Too Large" to "Content Too Large".
    pub const CONTENT_TOO_LARGE: Status = Status(413, "Content Too Large");
    pub const UPGRADE_REQUIRED: Status = Status(426, "Upgrade Required");
    pub const HEADERS_TOO_LARGE: Status = Status(431, "Request Header Fields Too Large");
    pub const NOT_IMPLEMENTED: Status = Status(501, "Not Implemented");
    pub const SERVICE_UNAVAILABLE: Status = Status(503, "Service Unavailable");

    pub fn code(self) -> u16 {
        self.0
    }

    /// 1xx: an interim response, sent before the final one (RFC 9110 §15.2).
    pub fn is_informational(self) -> bool {
        (100..200).contains(&self.0)
    }

    /// Statuses whose responses never carry content, and so carry no `Content-Length` either
    /// (RFC 9110 §8.6, §15.3.5, §15.4.5; RFC 9112 §6.3 item 1).
    pub fn forbids_content(self) -> bool {
        self.is_informational() || self.0 == 204 || self.0 == 304
    }
}

/// Renders a complete response with `Content-Length` and `Connection: close`.
pub fn response(status: Status, headers: &[(&str, &str)], content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(256 + body.len());
    response::render_head(
        &mut bytes,
        status,
        Some(content_type),
        response::Framing::Length(body.len()),
        Some("close"),
        headers.iter().copied(),
    );
    bytes.extend_from_slice(body);
    bytes
}

/// A plain-text error response whose body is one line saying what was wrong.
pub fn error_response(status: Status, headers: &[(&str, &str)], message: &str) -> Vec<u8> {
    response(
        status,
        headers,
        response::TEXT_PLAIN,
        format!("{message}\n").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_has_length_and_closes_the_connection() {
        let bytes = error_response(Status::NOT_FOUND, &[("X-Test", "1")], "no such path");
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Content-Length: 13\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.contains("X-Test: 1\r\n"));
        assert!(text.ends_with("\r\n\r\nno such path\n"));
    }
}
