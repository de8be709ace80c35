//! One HTTP/1.1 server connection, sans-IO (RFC 9112 message syntax and connection management,
//! RFC 9110 semantics), in the style of Python's h11.
//!
//! The caller feeds the bytes that arrived ([`Conn::receive`], [`Conn::receive_eof`]) and asks for
//! what they mean ([`Conn::next_event`]); it answers with [`Conn::respond`] (or
//! [`Conn::respond_streaming`] and then [`Conn::send_body`] ... [`Conn::end_body`]), and writes
//! out whatever the connection queued in its [`Outbox`]. The connection never touches a socket or
//! reads a clock, so every rule below is tested by feeding it bytes.
//!
//! # One request, one response: the cycle
//!
//! A connection carries a series of exchanges, each a request and its response. Each side of the
//! current exchange has its own state:
//!
//! ```text
//!  request  Head ──head read──────► Body ──body read, End returned──► Finished
//!             │                                                        ▲
//!             └──head read, no body──► End ───────End returned─────────┘
//!
//!  response Idle ──respond─────────────────────────────────────────────► Finished
//!             ├───respond_streaming──► Streaming ──send_body*, end_body─┘
//!             └───respond with 101───► Switched  (the connection now speaks another protocol)
//! ```
//!
//! When both sides are finished and the connection persists, [`Conn::start_next_cycle`] puts
//! both back at the start. Until then [`Conn::next_event`] answers [`Event::Paused`]: a client may
//! send several requests without waiting (pipelining, RFC 9112 §9.3.2), and the responses must go
//! out in the order of the requests, so the next request is not even looked at before the
//! current one is answered. Its bytes wait in the input buffer, which stops asking for more
//! ([`Conn::wants_read`]) once it holds a head's worth.
//!
//! # Whether the connection persists
//!
//! RFC 9112 §9.3: an HTTP/1.1 connection persists unless a `Connection: close` says otherwise; an
//! HTTP/1.0 one only if the client asked with `Connection: keep-alive`. On top of that, the
//! connection closes after a response that was sent before the request was read to its end (the
//! rest of the request could not be told apart from the next one — h11 does the same), after a
//! response the handler marked [`ResponseHead::close`], after a body that only the close can end
//! (a streamed body to an HTTP/1.0 client), and after any broken rule. The response itself says
//! `Connection: close` exactly when the connection closes after it (RFC 9112 §9.6).
//!
//! # When the peer breaks a rule
//!
//! [`Conn::next_event`] returns the [`Error`]. If no response to this request was started, the
//! error's own response ([`Error::response`], with `Connection: close`) is queued at once. From
//! then on the connection is dead: it reads nothing, refuses to send anything, returns the same
//! error again, and [`Conn::must_close`] is true. The caller writes out the outbox and closes.

use std::ops::Range;

use crate::outbox::{Outbox, SharedBytes};
use crate::trace::{self, Direction};

use super::chunked::{ChunkedDecoder, Decoded};
use super::head::{self, RequestHead, SectionScan};
use super::response::{self, Framing, Response, ResponseHead};
use super::{Error, Status, UsageError};

/// Largest request head (request line and header fields). Browsers send well under 2 KiB; 8 KiB is
/// what common servers and proxies allow.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most header fields in a request head. A browser sends about 15.
pub const MAX_HEADERS: usize = 32;
/// Largest request body. This server takes no uploads: the bodies it reads are chat messages,
/// which the WebSocket side limits to 64 KiB as well.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Bounds on what a peer may make one connection hold. The head limits also bound a chunked
/// body's trailer section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_head_bytes: usize,
    /// At most [`head::HEADER_SLOTS`]; more is capped there.
    pub max_headers: usize,
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head_bytes: MAX_HEAD_BYTES,
            max_headers: MAX_HEADERS,
            max_body_bytes: MAX_BODY_BYTES,
        }
    }
}

/// What the next bytes of the request side mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A request head. Its body framing is already checked, so a request that got this far has a
    /// well-defined end.
    Head(RequestHead),
    /// The next piece of the request body, decoded (chunk framing removed). Borrowed from the
    /// input buffer until the next call.
    Body(&'a [u8]),
    /// The request is complete. For a request without a body it comes right after `Head`.
    End,
    /// More input is needed ([`Conn::receive`] or [`Conn::receive_eof`]).
    NeedMore,
    /// The request is complete, and the next one waits until its response is finished and
    /// [`Conn::start_next_cycle`] is called.
    Paused,
    /// The peer closed the connection between requests: a normal end.
    Closed,
}

/// A connection handed over to another protocol after a `101 Switching Protocols`.
#[derive(Debug)]
pub struct Upgraded {
    /// Bytes queued and not yet written (the 101 itself, if it was not flushed).
    pub output: Outbox,
    /// Every byte the peer sent after the request, untouched: the new protocol's first bytes may
    /// have arrived in the same read as the request.
    pub trailing: Vec<u8>,
}

/// The request side of the current cycle.
#[derive(Debug)]
enum Reading {
    /// Waiting for a request head.
    Head,
    /// Reading the body of the request whose head was returned.
    Body(BodyReader),
    /// The request is complete; [`Event::End`] is still to be returned.
    End,
    /// [`Event::End`] was returned.
    Finished,
}

/// How the end of the request body is found (RFC 9112 §6.3).
#[derive(Debug)]
enum BodyReader {
    /// Content-Length: the bytes still to come.
    Length { remaining: u64 },
    /// Transfer-Encoding: chunked.
    Chunked(ChunkedDecoder),
}

/// The response side of the current cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writing {
    /// No response yet.
    Idle,
    /// The head of a streamed response is queued; its body follows.
    Streaming(Stream),
    /// The response is complete.
    Finished,
    /// A 101 was queued: HTTP is over on this connection.
    Switched,
}

/// How the pieces of a streamed body go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    /// HTTP/1.1: each piece a chunk (RFC 9112 §7.1).
    Chunked,
    /// HTTP/1.0, which has no chunked coding: the pieces as they are, ended by closing (RFC 9112
    /// §6.3 item 8).
    UntilClose,
    /// The request was HEAD: the head went out, the body is not sent at all (RFC 9110 §9.3.2).
    Discarded,
}

/// Facts about the current request that decide how it is answered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Cycle {
    minor_version: u8,
    head_method: bool,
    /// The client waits for `100 Continue` before sending the body, and none was sent yet.
    expects_continue: bool,
    /// The request may be answered with a 101.
    offers_upgrade: bool,
}

/// An HTTP/1.1 server connection. See the module documentation.
#[derive(Debug)]
pub struct Conn {
    limits: Limits,
    /// Bytes received; the first `consumed` are used up. Empty and unallocated between reads.
    input: Vec<u8>,
    consumed: usize,
    /// The peer will send nothing more.
    eof: bool,
    /// How far the unread input was searched for the end of a head.
    scan: SectionScan,
    reading: Reading,
    writing: Writing,
    cycle: Cycle,
    /// Whether the connection may carry another exchange after this one.
    keep_alive: bool,
    /// The rule the peer broke, once it did.
    error: Option<Error>,
    outbox: Outbox,
    /// The connection's number in the wire trace, when it is traced.
    trace_id: Option<u64>,
}

/// What [`Conn::advance`] found, before it is lent out as an [`Event`].
enum Step {
    Event(Event<'static>),
    /// Body bytes: this range of the input buffer.
    Body(Range<usize>),
}

impl Conn {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            input: Vec::new(),
            consumed: 0,
            eof: false,
            scan: SectionScan::default(),
            reading: Reading::Head,
            writing: Writing::Idle,
            cycle: Cycle::default(),
            keep_alive: true,
            error: None,
            outbox: Outbox::new(),
            trace_id: None,
        }
    }

    /// Prints every request and response head of this connection to the wire trace
    /// ([`crate::trace`]) as `#id`.
    pub fn enable_trace(&mut self, id: u64) {
        self.trace_id = Some(id);
    }

    /// Appends bytes that arrived from the peer. Ignored after [`Conn::receive_eof`] and after the
    /// peer broke a rule.
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.eof || self.error.is_some() || bytes.is_empty() {
            return;
        }
        self.input.drain(..self.consumed);
        self.consumed = 0;
        self.input.extend_from_slice(bytes);
    }

    /// The peer closed its side: nothing more will arrive.
    pub fn receive_eof(&mut self) {
        self.eof = true;
    }

    /// What the input means, one event at a time. See [`Event`] for each answer.
    pub fn next_event(&mut self) -> Result<Event<'_>, Error> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        if self.consumed == self.input.len() && self.input.capacity() > 0 {
            // Everything received is used up: give the buffer back, an idle connection holds none.
            self.input = Vec::new();
            self.consumed = 0;
        }
        match self.advance() {
            Ok(Step::Event(event)) => Ok(event),
            Ok(Step::Body(range)) => Ok(Event::Body(self.input.get(range).unwrap_or_default())),
            Err(error) => Err(self.fail(error)),
        }
    }

    fn advance(&mut self) -> Result<Step, Error> {
        if matches!(self.reading, Reading::Body(_)) {
            self.send_continue_if_expected();
        }
        let unread = self.input.get(self.consumed..).unwrap_or_default();
        match &mut self.reading {
            Reading::Head => self.read_head(),
            Reading::Body(reader) => {
                let (used, decoded) = reader.read(unread)?;
                let start = self.consumed;
                self.consumed += used;
                match decoded {
                    Decoded::Data(range) => Ok(Step::Body(start + range.start..start + range.end)),
                    Decoded::End => {
                        self.reading = Reading::Finished;
                        Ok(Step::Event(Event::End))
                    }
                    Decoded::NeedMore if self.eof => Err(Error::Incomplete),
                    Decoded::NeedMore => Ok(Step::Event(Event::NeedMore)),
                }
            }
            Reading::End => {
                self.reading = Reading::Finished;
                Ok(Step::Event(Event::End))
            }
            Reading::Finished => Ok(Step::Event(Event::Paused)),
        }
    }

    fn read_head(&mut self) -> Result<Step, Error> {
        let empty_lines = head::leading_empty_lines(self.unread());
        if empty_lines > 0 {
            self.consumed += empty_lines;
            self.scan = SectionScan::default();
        }
        let unread = self.input.get(self.consumed..).unwrap_or_default();
        if unread.is_empty() && self.eof {
            return Ok(Step::Event(Event::Closed));
        }
        let parsed = if self.scan.worth_parsing(unread, self.limits.max_head_bytes) {
            head::parse_head(unread, &self.limits)?
        } else {
            None
        };
        match parsed {
            Some((head, len)) => {
                if let Some(id) = self.trace_id {
                    trace::http_head(id, Direction::In, &unread[..len]);
                }
                self.consumed += len;
                self.scan = SectionScan::default();
                self.begin_request(head)
            }
            None if self.eof => Err(Error::Incomplete),
            None => Ok(Step::Event(Event::NeedMore)),
        }
    }

    /// Takes in a request head: what it says about persistence, `100 Continue` and upgrades, and
    /// whether its body is framed by rules we can follow.
    fn begin_request(&mut self, head: RequestHead) -> Result<Step, Error> {
        let http11 = head.minor_version >= 1;
        self.cycle = Cycle {
            minor_version: head.minor_version,
            head_method: head.method == "HEAD",
            // RFC 9110 §10.1.1: "A server that receives a 100-continue expectation in an HTTP/1.0
            // request MUST ignore that expectation."
            expects_continue: http11 && head.has_token("expect", "100-continue"),
            // RFC 9110 §7.8: "A server MUST ignore an Upgrade header field that is received in an
            // HTTP/1.0 request."
            offers_upgrade: http11 && head.header("upgrade").is_some(),
        };
        self.keep_alive = persists(&head);
        check_host(&head)?;
        self.reading = match request_body(&head, &self.limits)? {
            Some(reader) => Reading::Body(reader),
            None => {
                // RFC 9110 §10.1.1: a 100 may be omitted "if the framing indicates that there is no
                // content".
                self.cycle.expects_continue = false;
                Reading::End
            }
        };
        Ok(Step::Event(Event::Head(head)))
    }

    /// RFC 9110 §10.1.1: a client that sent `Expect: 100-continue` may wait for `100 Continue`
    /// before sending the body. The caller asking for the body is our cue; a caller that answers
    /// first has decided without it, and then no 100 is sent (see [`Conn::queue_head`]).
    fn send_continue_if_expected(&mut self) {
        if self.cycle.expects_continue && self.writing == Writing::Idle {
            self.cycle.expects_continue = false;
            self.push_head(|out| {
                response::render_head(
                    out,
                    Status::CONTINUE,
                    None,
                    Framing::Unframed,
                    None,
                    std::iter::empty(),
                )
            });
        }
    }

    /// The peer broke a rule: queue its answer if we still can, and let nothing more happen.
    fn fail(&mut self, error: Error) -> Error {
        if self.writing == Writing::Idle {
            let response = error.response();
            self.queue_head(&response.head, Framing::Length(response.body.len()), true);
            self.queue_content(&response.body);
        }
        // A streamed response cut short stays cut short: the missing last chunk (or the close
        // before the promised length) tells the client it is incomplete.
        self.writing = Writing::Finished;
        self.keep_alive = false;
        self.error = Some(error.clone());
        error
    }

    /// Queues a complete response to the current request. For `HEAD` only its head goes out,
    /// with the `Content-Length` the body would have had (RFC 9110 §9.3.2, §8.6).
    ///
    /// A `101 Switching Protocols` hands the connection to the protocol the request offered in
    /// `Upgrade`; the handler's head must name it in its own `Upgrade` field, and `Connection:
    /// Upgrade` is added. Then [`Conn::upgrade`].
    pub fn respond(&mut self, response: &Response) -> Result<(), UsageError> {
        let head = &response.head;
        let status = head.status;
        self.check_can_respond(head)?;
        if status.forbids_content() && !response.body.is_empty() {
            return Err(UsageError::ContentNotAllowed(status));
        }
        if status.code() == Status::SWITCHING_PROTOCOLS.code() {
            return self.switch_protocols(head);
        }
        if status.is_informational() {
            return Err(UsageError::Interim(status));
        }
        let framing = if status.forbids_content() {
            // RFC 9110 §8.6: "A server MUST NOT send a Content-Length header field in any response
            // with a status code of 1xx (Informational) or 204 (No Content)."
            Framing::Unframed
        } else {
            Framing::Length(response.body.len())
        };
        self.queue_head(head, framing, false);
        self.queue_content(&response.body);
        self.writing = Writing::Finished;
        Ok(())
    }

    /// Queues the head of a response whose body follows in pieces ([`Conn::send_body`],
    /// [`Conn::send_shared_body`]) until [`Conn::end_body`]: chunked for HTTP/1.1, and for
    /// HTTP/1.0 sent as is and ended by closing the connection. For `HEAD`, only the head.
    pub fn respond_streaming(&mut self, head: &ResponseHead) -> Result<(), UsageError> {
        self.check_can_respond(head)?;
        if head.status.forbids_content() {
            return Err(UsageError::ContentNotAllowed(head.status));
        }
        let http11 = self.cycle.minor_version >= 1;
        let (stream, framing) = match (self.cycle.head_method, http11) {
            // RFC 9110 §9.3.2: the same head as for GET, no content.
            (true, true) => (Stream::Discarded, Framing::Chunked),
            (true, false) => (Stream::Discarded, Framing::Unframed),
            (false, true) => (Stream::Chunked, Framing::Chunked),
            // RFC 9112 §6.1: "A server MUST NOT send a response containing Transfer-Encoding
            // unless the corresponding request indicates HTTP/1.1 (or later minor revisions)."
            (false, false) => (Stream::UntilClose, Framing::Unframed),
        };
        self.queue_head(head, framing, stream == Stream::UntilClose);
        self.writing = Writing::Streaming(stream);
        Ok(())
    }

    /// Queues the next piece of a streamed body. An empty piece sends nothing: as a chunk it would
    /// be the last one (RFC 9112 §7.1) and end the body early.
    pub fn send_body(&mut self, data: &[u8]) -> Result<(), UsageError> {
        self.send_piece(data.len(), |outbox| {
            outbox.append_with(|out| out.extend_from_slice(data))
        })
    }

    /// [`Conn::send_body`] for bytes shared with other connections (one event sent to many
    /// listeners), queued without a copy.
    pub fn send_shared_body(&mut self, data: SharedBytes) -> Result<(), UsageError> {
        self.send_piece(data.len(), |outbox| outbox.push_shared(data))
    }

    /// [`Conn::send_body`] of `prefix` followed by shared bytes, as one piece (one chunk): an
    /// event stream's own `id:` line before the `data:` line every listener shares.
    pub fn send_body_with_shared(&mut self, prefix: &[u8], data: SharedBytes) -> Result<(), UsageError> {
        self.send_piece(prefix.len() + data.len(), |outbox| {
            outbox.append_with(|out| out.extend_from_slice(prefix));
            outbox.push_shared(data);
        })
    }

    fn send_piece(&mut self, len: usize, queue: impl FnOnce(&mut Outbox)) -> Result<(), UsageError> {
        let stream = self.open_stream()?;
        if len == 0 {
            return Ok(());
        }
        match stream {
            Stream::Chunked => {
                // RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
                self.outbox
                    .append_with(|out| out.extend_from_slice(format!("{len:x}\r\n").as_bytes()));
                queue(&mut self.outbox);
                self.outbox.append_with(|out| out.extend_from_slice(b"\r\n"));
            }
            Stream::UntilClose => queue(&mut self.outbox),
            Stream::Discarded => {}
        }
        Ok(())
    }

    /// Ends a streamed body.
    pub fn end_body(&mut self) -> Result<(), UsageError> {
        if self.open_stream()? == Stream::Chunked {
            // RFC 9112 §7.1: the last chunk, an empty trailer section, and the final CRLF.
            self.outbox.append_with(|out| out.extend_from_slice(b"0\r\n\r\n"));
        }
        self.writing = Writing::Finished;
        Ok(())
    }

    fn open_stream(&self) -> Result<Stream, UsageError> {
        match self.writing {
            _ if self.http_over() => Err(UsageError::Finished),
            Writing::Streaming(stream) => Ok(stream),
            Writing::Idle | Writing::Finished | Writing::Switched => Err(UsageError::NotStreaming),
        }
    }

    /// HTTP is over on this connection: the peer broke a rule, or a 101 switched protocols.
    fn http_over(&self) -> bool {
        self.error.is_some() || self.writing == Writing::Switched
    }

    /// Starts the next exchange: allowed once the request was read to its end, the response
    /// written to its end, and the connection persists.
    pub fn start_next_cycle(&mut self) -> Result<(), UsageError> {
        if self.http_over() {
            return Err(UsageError::Finished);
        }
        if !matches!(self.reading, Reading::Finished) || self.writing != Writing::Finished {
            return Err(UsageError::CycleNotFinished);
        }
        if !self.keep_alive {
            return Err(UsageError::NotReusable);
        }
        self.reading = Reading::Head;
        self.writing = Writing::Idle;
        self.cycle = Cycle::default();
        Ok(())
    }

    /// Whether the connection may carry another exchange after the current one, as far as is
    /// known now.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive && !self.http_over()
    }

    /// Whether the connection is over: our last response is complete (or the peer broke a rule,
    /// or left between requests) and nothing more will be exchanged. Write out the outbox, then
    /// close.
    pub fn must_close(&self) -> bool {
        self.error.is_some()
            || (self.writing == Writing::Finished && !self.keep_alive)
            || (matches!(self.reading, Reading::Head) && self.eof && self.unread().is_empty())
    }

    /// Whether reading more input is useful now. False after the end of input, once the
    /// connection is over, after a 101 (the caller upgrades), once the request is read and the
    /// connection closes after its response, and while the input buffer holds more than a head's
    /// worth of bytes not yet used (requests pipelined behind one not yet answered).
    pub fn wants_read(&self) -> bool {
        // The request is read and the connection closes after its response: nothing follows.
        let last_request_read = !self.keep_alive && matches!(self.reading, Reading::End | Reading::Finished);
        if self.eof || self.must_close() || self.writing == Writing::Switched || last_request_read {
            return false;
        }
        self.unread().len() <= self.limits.max_head_bytes
    }

    /// How many bytes wait to be written.
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// Bytes waiting to be written.
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// Hands the connection over to the protocol a 101 switched to: what is still to be written,
    /// and every input byte after the request. The connection is left empty.
    pub fn upgrade(&mut self) -> Upgraded {
        let mut trailing = std::mem::take(&mut self.input);
        trailing.drain(..self.consumed);
        self.consumed = 0;
        Upgraded {
            output: std::mem::take(&mut self.outbox),
            trailing,
        }
    }

    /// Memory held for input: the connection's own cost between reads.
    pub fn buffered(&self) -> usize {
        self.input.capacity()
    }

    fn unread(&self) -> &[u8] {
        self.input.get(self.consumed..).unwrap_or_default()
    }

    fn check_can_respond(&self, head: &ResponseHead) -> Result<(), UsageError> {
        if self.http_over() {
            return Err(UsageError::Finished);
        }
        if matches!(self.reading, Reading::Head) {
            return Err(UsageError::NoRequest);
        }
        if self.writing != Writing::Idle {
            return Err(UsageError::AlreadyResponded);
        }
        head.check_fields()
    }

    fn switch_protocols(&mut self, head: &ResponseHead) -> Result<(), UsageError> {
        // RFC 9110 §7.8: "A server MUST NOT switch to a protocol that was not indicated by the
        // client in the corresponding request's Upgrade header field." (HTTP/1.0 requests never
        // offer one: §15.2, "A server MUST NOT send a 1xx response to an HTTP/1.0 client".)
        if !self.cycle.offers_upgrade {
            return Err(UsageError::CannotSwitch("the request offered no upgrade"));
        }
        // The new protocol starts after the request; bytes of its body are not the new protocol's.
        if matches!(self.reading, Reading::Body(_)) {
            return Err(UsageError::CannotSwitch("the request body is not read yet"));
        }
        // RFC 9110 §15.2.2: "The server MUST generate an Upgrade header field in the response".
        if !head.names_upgrade() {
            return Err(UsageError::CannotSwitch(
                "a 101 must name the protocol in Upgrade",
            ));
        }
        // `Upgrade` and then `Connection: Upgrade`, in the order of RFC 6455's example (§1.3)
        // that readers of the trace compare it with.
        let is_upgrade = |name: &str| name.eq_ignore_ascii_case("upgrade");
        let fields = head.headers.iter().map(|(name, value)| (*name, value.as_ref()));
        let upgrade = fields.clone().filter(|(name, _)| is_upgrade(name));
        let others = fields.filter(|(name, _)| !is_upgrade(name));
        let fields = upgrade.chain([("Connection", "Upgrade")]).chain(others);
        self.push_head(|out| {
            response::render_head(
                out,
                head.status,
                head.content_type,
                Framing::Unframed,
                None,
                fields,
            )
        });
        self.writing = Writing::Switched;
        Ok(())
    }

    /// Queues a final response's head, settling now whether the connection persists after it.
    fn queue_head(&mut self, head: &ResponseHead, framing: Framing, closes: bool) {
        // The request is not read to its end: its remaining bytes (which a client waiting for 100
        // Continue may never send) cannot be told apart from the next request.
        let request_unread = matches!(self.reading, Reading::Body(_));
        // The peer closed its side and nothing follows this request: no next request will come.
        let peer_gone = self.eof && self.unread().is_empty();
        if closes || head.close || request_unread || peer_gone {
            self.keep_alive = false;
        }
        self.cycle.expects_continue = false;
        // RFC 9112 §9.6: a server closing the connection "SHOULD send a 'close' connection option
        // in its final response"; Appendix C.2.2: an HTTP/1.0 client that asked for keep-alive
        // learns that it got it only from our "keep-alive" in return.
        let connection = match (self.keep_alive, self.cycle.minor_version) {
            (false, _) => Some("close"),
            (true, 0) => Some("keep-alive"),
            (true, _) => None,
        };
        let fields = head.headers.iter().map(|(name, value)| (*name, value.as_ref()));
        self.push_head(|out| {
            response::render_head(out, head.status, head.content_type, framing, connection, fields)
        });
    }

    /// Queues a response head that `render` writes, printing it to the trace first when traced.
    fn push_head(&mut self, render: impl FnOnce(&mut Vec<u8>)) {
        let Some(id) = self.trace_id else {
            return self.outbox.append_with(render);
        };
        let mut head = Vec::new();
        render(&mut head);
        trace::http_head(id, Direction::Out, &head);
        self.outbox.append_with(|out| out.extend_from_slice(&head));
    }

    /// Queues a complete body, unless the request was HEAD (RFC 9110 §9.3.2: "the server MUST NOT
    /// send content in the response").
    fn queue_content(&mut self, body: &[u8]) {
        if !self.cycle.head_method && !body.is_empty() {
            self.outbox.append_with(|out| out.extend_from_slice(body));
        }
    }
}

impl BodyReader {
    fn read(&mut self, input: &[u8]) -> Result<(usize, Decoded), Error> {
        match self {
            Self::Length { remaining: 0 } => Ok((0, Decoded::End)),
            Self::Length { .. } if input.is_empty() => Ok((0, Decoded::NeedMore)),
            Self::Length { remaining } => {
                let len = usize::try_from(*remaining).map_or(input.len(), |left| left.min(input.len()));
                *remaining -= len as u64;
                Ok((len, Decoded::Data(0..len)))
            }
            Self::Chunked(decoder) => decoder.decode(input),
        }
    }
}

/// RFC 9112 §9.3: "If the 'close' connection option is present, the connection will not persist
/// after the current response; else, If the received protocol is HTTP/1.1 (or later), the
/// connection will persist after the current response; else, If the received protocol is
/// HTTP/1.0, the 'keep-alive' connection option is present, ... the connection will persist";
/// otherwise it closes.
fn persists(head: &RequestHead) -> bool {
    if head.has_token("connection", "close") {
        return false;
    }
    head.minor_version >= 1 || head.has_token("connection", "keep-alive")
}

/// RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1
/// request message that lacks a Host header field and to any request message that contains more
/// than one Host header field line".
fn check_host(head: &RequestHead) -> Result<(), Error> {
    let mut hosts = head.header_values("host");
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Err(Error::RepeatedHost),
        (None, None) if head.minor_version >= 1 => Err(Error::MissingHost),
        _ => Ok(()),
    }
}

/// RFC 9112 §6.3: how the request body ends, if there is one.
fn request_body(head: &RequestHead, limits: &Limits) -> Result<Option<BodyReader>, Error> {
    let mut lengths = head.header_values("content-length");
    let (length, repeated) = (lengths.next(), lengths.next().is_some());
    if head.header("transfer-encoding").is_some() {
        // RFC 9112 §6.1: "A server or client that receives an HTTP/1.0 message containing a
        // Transfer-Encoding header field MUST treat the message as if the framing is faulty".
        if head.minor_version == 0 {
            return Err(Error::TransferEncodingInHttp10);
        }
        // RFC 9112 §6.1: "A server MAY reject a request that contains both Content-Length and
        // Transfer-Encoding ... Regardless, the server MUST close the connection after responding
        // to such a request".
        if length.is_some() {
            return Err(Error::ContentLengthWithTransferEncoding);
        }
        check_codings(head.tokens("transfer-encoding"))?;
        return Ok(Some(BodyReader::Chunked(ChunkedDecoder::new(*limits))));
    }
    let length = match (length, repeated) {
        // RFC 9112 §6.3 item 7: "If this is a request message and none of the above are true,
        // then the message body length is zero".
        (None, _) => return Ok(None),
        (Some(value), false) if !value.contains(',') => content_length(value, limits)?,
        // RFC 9112 §6.3 item 5: anything but one valid length is "an unrecoverable error".
        _ => return Err(Error::RepeatedContentLength),
    };
    Ok((length > 0).then_some(BodyReader::Length { remaining: length }))
}

/// RFC 9112 §6.3 item 4: chunked must be the final coding, and §7: applied once. A coding before
/// it would be one we must undo, and we implement none (§6.1: 501).
fn check_codings<'a>(codings: impl Iterator<Item = &'a str>) -> Result<(), Error> {
    let codings: Vec<&str> = codings.collect();
    let is_chunked = |coding: &&str| coding.eq_ignore_ascii_case("chunked");
    match codings.split_last() {
        Some((last, before)) if is_chunked(last) => match before {
            _ if before.iter().any(is_chunked) => Err(Error::ChunkedNotFinal),
            [] => Ok(()),
            [first, ..] => Err(Error::UnsupportedTransferCoding((*first).to_owned())),
        },
        _ => Err(Error::ChunkedNotFinal),
    }
}

/// RFC 9110 §8.6: `Content-Length = 1*DIGIT`; a length over the limit is refused before any of
/// the body is read.
fn content_length(value: &str, limits: &Limits) -> Result<u64, Error> {
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(Error::InvalidContentLength(value.to_owned()));
    }
    // Digits only, so parsing fails only for a number past u64, which is past any limit too.
    let limit = u64::try_from(limits.max_body_bytes).unwrap_or(u64::MAX);
    value
        .parse::<u64>()
        .ok()
        .filter(|&length| length <= limit)
        .ok_or(Error::BodyTooLarge {
            limit: limits.max_body_bytes,
        })
}

#[cfg(test)]
mod tests;
