//! The two ways an HTTP exchange goes wrong.
//!
//! [`Error`]: the peer broke a rule of RFC 9110 / RFC 9112. Each variant is one rule; [`Error::status`]
//! maps them to status codes in one place and [`Error::response`] renders the answer that names the
//! rule. After one, the connection is over.
//!
//! [`UsageError`]: our own code asked the connection for something HTTP does not allow (a second
//! response to one request, content on a 204, a framing field set by hand). That is a bug on our
//! side, never the peer's doing, so it has no status code: the connection refuses the call and
//! nothing is sent.

use std::fmt;

use super::{Response, Status};

/// A request that breaks a rule of HTTP/1.1. The connection cannot go on after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The head (request line and header fields) is longer than the limit, which bounds the
    /// memory one connection can hold before a request is understood.
    HeadTooLarge { limit: usize },
    /// More header fields than the limit.
    TooManyHeaders { limit: usize },
    /// The bytes are not a request head by RFC 9112 §3 and §5 (httparse's reason).
    Malformed(httparse::Error),
    /// RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
    /// request message that lacks a Host header field".
    MissingHost,
    /// RFC 9112 §3.2: ... "and to any request message that contains more than one Host header
    /// field line".
    RepeatedHost,
    /// RFC 9110 §8.6: `Content-Length = 1*DIGIT`.
    InvalidContentLength(String),
    /// Content-Length given more than once, or as a list: RFC 9112 §6.3 item 5 treats anything
    /// but one valid number as unrecoverable framing (two numbers cannot both be the length, and
    /// two equal ones are a sign that fields were joined along the way).
    RepeatedContentLength,
    /// RFC 9112 §6.1: a request with both Content-Length and Transfer-Encoding is the shape of a
    /// smuggling attack (two parsers picking different framings); we reject it.
    ContentLengthWithTransferEncoding,
    /// RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request means "the framing is faulty".
    TransferEncodingInHttp10,
    /// RFC 9112 §6.3 item 4: "If a Transfer-Encoding header field is present in a request and the
    /// chunked transfer coding is not the final encoding ... the server MUST respond with the 400
    /// (Bad Request)". Chunked applied twice falls under it too (§7: "MUST NOT apply the chunked
    /// transfer coding more than once").
    ChunkedNotFinal,
    /// RFC 9112 §6.1: a transfer coding before `chunked` that we do not implement "SHOULD" get 501.
    UnsupportedTransferCoding(String),
    /// The body is longer than the limit: announced by Content-Length, or by chunk sizes adding
    /// up past it. Detected before the excess is read.
    BodyTooLarge { limit: usize },
    /// RFC 9112 §7.1: `chunk-size = 1*HEXDIG`, and only a chunk extension or CRLF may follow it.
    ChunkSize,
    /// RFC 9112 §7.1.1: a control byte inside a chunk extension.
    ChunkExtension,
    /// A chunk-size line (size and extensions) longer than [`chunked::MAX_SIZE_LINE`](super::chunked::MAX_SIZE_LINE).
    ChunkLineTooLong,
    /// RFC 9112 §7.1: a chunk-size line ends with CRLF, exactly (no bare LF, no CR alone).
    ChunkLineEnding,
    /// RFC 9112 §7.1: chunk data is followed by CRLF, exactly.
    ChunkDataEnding,
    /// The trailer section is longer than the head limit.
    TrailersTooLarge { limit: usize },
    /// More trailer fields than the header limit.
    TooManyTrailers { limit: usize },
    /// RFC 9112 §7.1.2: the trailer section is not a list of field lines (httparse's reason).
    MalformedTrailers(httparse::Error),
    /// RFC 9112 §8: the connection closed before the request (head or body) was complete.
    Incomplete,
}

impl Error {
    pub fn status(&self) -> Status {
        match self {
            Self::HeadTooLarge { .. }
            | Self::TooManyHeaders { .. }
            | Self::TrailersTooLarge { .. }
            | Self::TooManyTrailers { .. } => Status::HEADERS_TOO_LARGE,
            Self::BodyTooLarge { .. } => Status::CONTENT_TOO_LARGE,
            Self::UnsupportedTransferCoding(_) => Status::NOT_IMPLEMENTED,
            Self::Malformed(_)
            | Self::MissingHost
            | Self::RepeatedHost
            | Self::InvalidContentLength(_)
            | Self::RepeatedContentLength
            | Self::ContentLengthWithTransferEncoding
            | Self::TransferEncodingInHttp10
            | Self::ChunkedNotFinal
            | Self::ChunkSize
            | Self::ChunkExtension
            | Self::ChunkLineTooLong
            | Self::ChunkLineEnding
            | Self::ChunkDataEnding
            | Self::MalformedTrailers(_)
            | Self::Incomplete => Status::BAD_REQUEST,
        }
    }

    /// The answer: the status, `Connection: close` (nothing after a broken request can be trusted
    /// to start where the peer thinks it does), and one line saying which rule was broken.
    pub fn response(&self) -> Response {
        Response::text(self.status(), &self.to_string()).close()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HeadTooLarge { limit } => write!(f, "request head exceeds {limit} bytes"),
            Self::TooManyHeaders { limit } => write!(f, "more than {limit} header fields"),
            Self::Malformed(why) => write!(f, "malformed HTTP request: {why}"),
            Self::MissingHost => f.write_str("an HTTP/1.1 request needs a Host header"),
            Self::RepeatedHost => f.write_str("more than one Host header"),
            Self::InvalidContentLength(value) => {
                write!(f, "Content-Length {value:?} is not a decimal number")
            }
            Self::RepeatedContentLength => f.write_str("Content-Length must be one number, given once"),
            Self::ContentLengthWithTransferEncoding => {
                f.write_str("Content-Length and Transfer-Encoding together are ambiguous")
            }
            Self::TransferEncodingInHttp10 => f.write_str("HTTP/1.0 has no Transfer-Encoding"),
            Self::ChunkedNotFinal => f.write_str("chunked must be the last transfer coding, applied once"),
            Self::UnsupportedTransferCoding(coding) => {
                write!(
                    f,
                    "transfer coding {coding:?} is not implemented; send chunked alone"
                )
            }
            Self::BodyTooLarge { limit } => write!(f, "request body exceeds {limit} bytes"),
            Self::ChunkSize => f.write_str("chunk size must be hexadecimal digits"),
            Self::ChunkExtension => f.write_str("control byte in a chunk extension"),
            Self::ChunkLineTooLong => f.write_str("chunk size line too long"),
            Self::ChunkLineEnding => f.write_str("chunk size line must end with CRLF"),
            Self::ChunkDataEnding => f.write_str("chunk data must be followed by CRLF"),
            Self::TrailersTooLarge { limit } => write!(f, "trailer section exceeds {limit} bytes"),
            Self::TooManyTrailers { limit } => write!(f, "more than {limit} trailer fields"),
            Self::MalformedTrailers(why) => write!(f, "malformed trailer section: {why}"),
            Self::Incomplete => f.write_str("connection closed before the request was complete"),
        }
    }
}

impl std::error::Error for Error {}

/// A call the connection refused because HTTP does not allow it at this point. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// A response before a request head was read in this cycle.
    NoRequest,
    /// A second response to the same request.
    AlreadyResponded,
    /// Body bytes or an end of body without [`Conn::respond_streaming`](super::Conn::respond_streaming)
    /// first, or after the body ended.
    NotStreaming,
    /// The peer broke a rule or the protocol was switched: this connection sends nothing more.
    Finished,
    /// A header field name that is not a token (RFC 9110 §5.1).
    InvalidFieldName(String),
    /// A header field value with a control byte: CR or LF would let the value write fields or
    /// messages of its own (RFC 9110 §5.5).
    InvalidFieldValue(String),
    /// Content-Length, Transfer-Encoding and Connection are written by the connection, which alone
    /// knows the framing.
    FramingField(String),
    /// 1xx, 204 and 304 responses have no content (RFC 9110 §6.4.1).
    ContentNotAllowed(Status),
    /// An interim (1xx) response other than 101: the connection sends 100 Continue itself and no
    /// other interim status is supported.
    Interim(Status),
    /// A 101 that RFC 9110 §7.8 and §15.2 forbid here; the text says which rule.
    CannotSwitch(&'static str),
    /// The next cycle starts only after the request was read to its end and the response written
    /// to its end.
    CycleNotFinished,
    /// The connection will close after this response: there is no next cycle.
    NotReusable,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRequest => f.write_str("no request to respond to"),
            Self::AlreadyResponded => f.write_str("this request already has a response"),
            Self::NotStreaming => f.write_str("no streamed response body is open"),
            Self::Finished => f.write_str("the connection sends nothing more"),
            Self::InvalidFieldName(name) => write!(f, "header name {name:?} is not a token"),
            Self::InvalidFieldValue(name) => write!(f, "header {name} has a control byte in its value"),
            Self::FramingField(name) => write!(f, "header {name} is written by the connection"),
            Self::ContentNotAllowed(status) => write!(f, "a {} response has no content", status.0),
            Self::Interim(status) => write!(f, "interim response {} is not supported", status.0),
            Self::CannotSwitch(why) => write!(f, "cannot switch protocols: {why}"),
            Self::CycleNotFinished => f.write_str("the request or the response is not finished"),
            Self::NotReusable => f.write_str("the connection closes after this response"),
        }
    }
}

impl std::error::Error for UsageError {}
