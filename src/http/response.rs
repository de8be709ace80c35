//! What a handler answers with, and the one function that writes a response head (RFC 9112 §4
//! status line, §5 field lines).
//!
//! A handler describes the response: status, content type, extra fields and body. The fields that
//! frame the message — `Content-Length`, `Transfer-Encoding`, `Connection` — are not the handler's
//! to write: they depend on the request (its version, whether it was `HEAD`, whether the
//! connection persists), so [`Conn`](super::Conn) adds them itself.

use std::borrow::Cow;

use super::{Status, UsageError};

/// The content type of every plain-text message we write.
pub(crate) const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// Field names the connection writes itself: handlers may not set them.
const FRAMING_FIELDS: [&str; 3] = ["content-length", "transfer-encoding", "connection"];

/// Status, content type and extra header fields: everything a response has except its body. This
/// is what [`Conn::respond_streaming`](super::Conn::respond_streaming) takes, the body following
/// piece by piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: Status,
    /// `Content-Type`, written only when there is one.
    pub content_type: Option<&'static str>,
    /// Extra fields, written in this order after the framing fields.
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    /// Close the connection after this response even if it could persist (a server going down,
    /// a handler that distrusts the peer).
    pub close: bool,
}

impl ResponseHead {
    pub fn new(status: Status) -> Self {
        Self {
            status,
            content_type: None,
            headers: Vec::new(),
            close: false,
        }
    }

    pub fn content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = Some(content_type);
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }

    /// Refuses what would corrupt the message: a field name that is not a token (RFC 9110 §5.1), a
    /// value holding a line break or other control byte (which would start a field, or a message,
    /// of the handler's choosing: "response splitting"), or a framing field.
    pub(crate) fn check_fields(&self) -> Result<(), UsageError> {
        let content_type = self.content_type.map(|value| ("Content-Type", value));
        let fields = self.headers.iter().map(|(name, value)| (*name, value.as_ref()));
        for (name, value) in content_type.into_iter().chain(fields) {
            if name.is_empty() || !name.bytes().all(is_tchar) {
                return Err(UsageError::InvalidFieldName(name.to_owned()));
            }
            if !value
                .bytes()
                .all(|byte| byte == b'\t' || !byte.is_ascii_control())
            {
                return Err(UsageError::InvalidFieldValue(name.to_owned()));
            }
            if FRAMING_FIELDS
                .iter()
                .any(|framing| name.eq_ignore_ascii_case(framing))
            {
                return Err(UsageError::FramingField(name.to_owned()));
            }
        }
        Ok(())
    }

    /// Whether the handler named the protocol it switches to (RFC 9110 §15.2.2: a 101 "MUST
    /// generate an Upgrade header field").
    pub(crate) fn names_upgrade(&self) -> bool {
        self.headers
            .iter()
            .any(|(name, value)| name.eq_ignore_ascii_case("upgrade") && !value.trim().is_empty())
    }
}

/// A complete response: its head and its whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub head: ResponseHead,
    /// Owned, or borrowed from the binary (an embedded page) without a copy until it is queued.
    pub body: Cow<'static, [u8]>,
}

impl Response {
    /// A response without content (the status alone says it all: 204, 304, or a bare 200).
    pub fn new(status: Status) -> Self {
        Self {
            head: ResponseHead::new(status),
            body: Cow::Borrowed(&[]),
        }
    }

    pub fn with_body(
        status: Status,
        content_type: &'static str,
        body: impl Into<Cow<'static, [u8]>>,
    ) -> Self {
        Self {
            head: ResponseHead::new(status).content_type(content_type),
            body: body.into(),
        }
    }

    /// A plain-text response of one line.
    pub fn text(status: Status, line: &str) -> Self {
        Self::with_body(status, TEXT_PLAIN, format!("{line}\n").into_bytes())
    }

    pub fn header(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Self {
        self.head = self.head.header(name, value);
        self
    }

    pub fn close(mut self) -> Self {
        self.head.close = true;
        self
    }
}

/// How the end of a response's body is found (RFC 9112 §6.3), which decides its framing field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Content-Length: n`.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// No framing field: the response has no content (1xx, 204, 304, the answer to a HEAD sent
    /// to an HTTP/1.0 client), or its content ends when the connection closes.
    Unframed,
}

/// Writes a status line, the content type, the framing field, `Connection`, the extra fields and
/// the blank line. Every response the crate writes goes through here.
pub(crate) fn render_head<'f>(
    out: &mut Vec<u8>,
    status: Status,
    content_type: Option<&str>,
    framing: Framing,
    connection: Option<&str>,
    headers: impl IntoIterator<Item = (&'f str, &'f str)>,
) {
    // RFC 9110 §6.2: we answer as the highest version we speak, also to HTTP/1.0 clients.
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", status.0, status.1).as_bytes());
    if let Some(content_type) = content_type {
        field(out, "Content-Type", content_type);
    }
    match framing {
        Framing::Length(len) => field(out, "Content-Length", &len.to_string()),
        Framing::Chunked => field(out, "Transfer-Encoding", "chunked"),
        Framing::Unframed => {}
    }
    if let Some(connection) = connection {
        field(out, "Connection", connection);
    }
    for (name, value) in headers {
        field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// RFC 9110 §5.6.2: the characters of a token.
pub(crate) fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_fields_that_would_corrupt_the_message_are_refused() {
        let table: &[(ResponseHead, UsageError)] = &[
            (
                ResponseHead::new(Status::OK).header("X-Evil", "a\r\nSet-Cookie: b"),
                UsageError::InvalidFieldValue("X-Evil".into()),
            ),
            (
                ResponseHead::new(Status::OK).header("X Evil", "a"),
                UsageError::InvalidFieldName("X Evil".into()),
            ),
            (
                ResponseHead::new(Status::OK).header("", "a"),
                UsageError::InvalidFieldName(String::new()),
            ),
            (
                ResponseHead::new(Status::OK).content_type("text/html\n"),
                UsageError::InvalidFieldValue("Content-Type".into()),
            ),
            (
                ResponseHead::new(Status::OK).header("content-LENGTH", "5"),
                UsageError::FramingField("content-LENGTH".into()),
            ),
            (
                ResponseHead::new(Status::OK).header("Transfer-Encoding", "gzip"),
                UsageError::FramingField("Transfer-Encoding".into()),
            ),
            (
                ResponseHead::new(Status::OK).header("Connection", "close"),
                UsageError::FramingField("Connection".into()),
            ),
        ];
        for (head, error) in table {
            assert_eq!(head.check_fields().as_ref(), Err(error), "{head:?}");
        }
        let fine = ResponseHead::new(Status::OK)
            .content_type(TEXT_PLAIN)
            .header("Cache-Control", "no-cache")
            .header("X-Tab", "a\tb");
        assert_eq!(fine.check_fields(), Ok(()));
    }

    #[test]
    fn head_lists_framing_before_the_handlers_fields() {
        let mut out = Vec::new();
        render_head(
            &mut out,
            Status::OK,
            Some(TEXT_PLAIN),
            Framing::Chunked,
            None,
            [("X-A", "1")],
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Transfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
        );
    }
}
