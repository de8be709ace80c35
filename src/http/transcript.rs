//! A scripted server, for the unit tests and the `http` fuzz target (hidden from the docs).
//!
//! [`serve`] drives a [`Conn`] over a byte stream that arrives in given pieces, the way the event
//! loop would: it feeds a piece whenever the connection wants to read, takes every event, answers
//! every request by a fixed rule chosen by the request's path, starts the next cycle when it can,
//! and writes the outbox out. It records what happened in a [`Transcript`], so two runs over the
//! same bytes cut differently can be compared. [`check_output`] then reads back everything the
//! server wrote, as a client would, and checks that it is well-formed HTTP that answers each
//! request in turn.
//!
//! The answering rules, by path prefix:
//!
//! | path        | answer                                                                 |
//! |-------------|------------------------------------------------------------------------|
//! | `/early`    | 200 as soon as the head is read, before the body                       |
//! | `/stream`   | a streamed 200 in three pieces (one empty, one shared)                 |
//! | `/upgrade`  | 101 and [`Conn::upgrade`] if the request offered an upgrade, else 426  |
//! | `/close`    | 200 that closes the connection                                         |
//! | `/empty`    | 204                                                                    |
//! | other       | 200 saying the method, the path and how many body bytes arrived       |

use std::rc::Rc;

use super::chunked::{ChunkedDecoder, Decoded};
use super::{Conn, Error, Event, Limits, RequestHead, Response, ResponseHead, Status, UsageError};

/// What the request side produced, with body pieces joined: pieces depend on how the input was
/// cut, their concatenation must not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Head(RequestHead),
    Body(Vec<u8>),
    End,
    Closed,
    Failed(Error),
}

/// A response the server meant to write, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Whether it answers a HEAD request (no content follows its head); `None` when the request's
    /// head was never returned (an error response to a head that broke a rule).
    pub to_head: Option<bool>,
}

/// Everything observable about one run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Transcript {
    pub events: Vec<Seen>,
    /// Every byte written, in order.
    pub output: Vec<u8>,
    pub answers: Vec<Answer>,
    /// After a 101: the bytes handed to the new protocol, with every later piece appended.
    pub upgraded: Option<Vec<u8>>,
    pub must_close: bool,
}

/// Where the driver stopped.
enum Stop {
    /// Waiting for input (or for nothing, the connection being over).
    Waiting,
    /// A 101 was queued.
    Switched,
}

/// The state of the request being answered.
#[derive(Default)]
struct Current {
    head: Option<RequestHead>,
    body_len: usize,
    answered: bool,
}

/// Runs the scripted server over `pieces`, then the end of input. Panics if the connection holds
/// more input memory than its limits allow for.
pub fn serve(pieces: &[&[u8]], limits: Limits) -> Transcript {
    let mut conn = Conn::new(limits);
    let mut transcript = Transcript::default();
    let mut current = Current::default();
    let mut pieces = pieces.iter();
    let mut largest_piece = 0;
    loop {
        let stop = drive(&mut conn, &mut current, &mut transcript);
        // A connection that stops reading at a head's worth holds at most that and one read more;
        // a growing Vec may have reserved up to twice what it held.
        let bound = (2 * (limits.max_head_bytes + largest_piece)).max(8);
        assert!(
            conn.buffered() <= bound,
            "{} bytes buffered, bound {bound}",
            conn.buffered()
        );
        conn.outbox().write_to(&mut transcript.output).unwrap_or_default();
        if let Stop::Switched = stop {
            let mut upgraded = conn.upgrade();
            upgraded
                .output
                .write_to(&mut transcript.output)
                .unwrap_or_default();
            for piece in pieces {
                upgraded.trailing.extend_from_slice(piece);
            }
            transcript.upgraded = Some(upgraded.trailing);
            return transcript;
        }
        if !conn.wants_read() {
            break;
        }
        match pieces.next() {
            Some(piece) => {
                largest_piece = largest_piece.max(piece.len());
                conn.receive(piece);
            }
            None => conn.receive_eof(),
        }
    }
    transcript.must_close = conn.must_close();
    transcript
}

/// Takes events until the connection needs input or is over.
fn drive(conn: &mut Conn, current: &mut Current, transcript: &mut Transcript) -> Stop {
    loop {
        match conn.next_event() {
            Ok(Event::Head(head)) => {
                *current = Current {
                    head: Some(head.clone()),
                    ..Current::default()
                };
                let early = head.path.starts_with("/early");
                transcript.events.push(Seen::Head(head));
                if early && let Some(stop) = answer(conn, current, transcript) {
                    return stop;
                }
                if conn.must_close() {
                    // Answered before the body: the rest of the request is not worth reading.
                    return Stop::Waiting;
                }
            }
            Ok(Event::Body(data)) => {
                current.body_len += data.len();
                match transcript.events.last_mut() {
                    Some(Seen::Body(joined)) => joined.extend_from_slice(data),
                    _ => transcript.events.push(Seen::Body(data.to_vec())),
                }
            }
            Ok(Event::End) => {
                transcript.events.push(Seen::End);
                if !current.answered
                    && let Some(stop) = answer(conn, current, transcript)
                {
                    return stop;
                }
            }
            Ok(Event::Paused) => {
                if conn.start_next_cycle().is_err() {
                    return Stop::Waiting;
                }
                *current = Current::default();
            }
            Ok(Event::NeedMore) => return Stop::Waiting,
            Ok(Event::Closed) => {
                transcript.events.push(Seen::Closed);
                return Stop::Waiting;
            }
            Err(error) => {
                if !current.answered {
                    transcript.answers.push(Answer {
                        status: error.status().code(),
                        to_head: current.head.as_ref().map(is_head_request),
                    });
                }
                transcript.events.push(Seen::Failed(error));
                return Stop::Waiting;
            }
        }
    }
}

/// Answers the current request by the rule for its path. `Some` when the driver must stop.
/// Panics if the connection refuses an answer that HTTP allows.
fn answer(conn: &mut Conn, current: &mut Current, transcript: &mut Transcript) -> Option<Stop> {
    let head = current.head.as_ref()?;
    current.answered = true;
    let (status, stop) = respond_by_path(conn, head, current.body_len)
        .unwrap_or_else(|error| panic!("a valid answer was refused: {error}"));
    transcript.answers.push(Answer {
        status: status.code(),
        to_head: Some(is_head_request(head)),
    });
    stop
}

fn respond_by_path(
    conn: &mut Conn,
    head: &RequestHead,
    body_len: usize,
) -> Result<(Status, Option<Stop>), UsageError> {
    let path = head.path.as_str();
    if path.starts_with("/stream") {
        stream(conn, path)?;
        return Ok((Status::OK, None));
    }
    if path.starts_with("/upgrade") {
        let switch = Response::new(Status::SWITCHING_PROTOCOLS).header("Upgrade", "websocket");
        return match conn.respond(&switch) {
            Ok(()) => Ok((Status::SWITCHING_PROTOCOLS, Some(Stop::Switched))),
            // The request offered no upgrade (or was HTTP/1.0).
            Err(UsageError::CannotSwitch(_)) => {
                let refusal = Response::text(Status::UPGRADE_REQUIRED, "upgrade required")
                    .header("Upgrade", "websocket");
                conn.respond(&refusal)?;
                Ok((Status::UPGRADE_REQUIRED, None))
            }
            Err(error) => Err(error),
        };
    }
    let response = match path {
        _ if path.starts_with("/close") => Response::text(Status::OK, "bye").close(),
        _ if path.starts_with("/empty") => Response::new(Status::NO_CONTENT),
        _ => Response::text(Status::OK, &format!("{} {path} {body_len}", head.method)),
    };
    conn.respond(&response)?;
    Ok((response.head.status, None))
}

/// A streamed body in three pieces: owned, empty (which must send nothing), shared.
fn stream(conn: &mut Conn, path: &str) -> Result<(), UsageError> {
    conn.respond_streaming(&ResponseHead::new(Status::OK).content_type("text/event-stream"))?;
    conn.send_body(format!("data: {path}\n\n").as_bytes())?;
    conn.send_body(b"")?;
    conn.send_shared_body(Rc::from(&b"data: shared\n\n"[..]))?;
    conn.end_body()
}

fn is_head_request(head: &RequestHead) -> bool {
    head.method == "HEAD"
}

/// Reads `transcript.output` as a client would and checks that it answers each request in turn:
/// every response parses, has the status the server meant, and is framed so that a client finds
/// its end (`Content-Length`, chunked, or the close for a body the close ends); no content follows
/// the answer to a HEAD, nor any response after one that says `Connection: close`; `100
/// Continue` may come before a final response; nothing follows a 101. Panics otherwise.
pub fn check_output(transcript: &Transcript) {
    let mut rest = transcript.output.as_slice();
    for (index, answer) in transcript.answers.iter().enumerate() {
        let last = index + 1 == transcript.answers.len();
        loop {
            let response = read_response_head(rest);
            rest = &rest[response.len..];
            if response.status == 100 {
                assert_eq!(response.framing, None, "100 Continue has no content");
                continue;
            }
            assert_eq!(response.status, answer.status, "response {index}");
            rest = skip_content(rest, &response, answer, last);
            if response.closes || answer.status == 101 {
                assert!(last && rest.is_empty(), "bytes after the last response: {rest:?}");
            }
            break;
        }
    }
    assert!(rest.is_empty(), "bytes no answer accounts for: {rest:?}");
}

/// The parts of a response head that decide where the response ends.
struct ResponseInfo {
    status: u16,
    len: usize,
    framing: Option<Framing>,
    closes: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
}

fn read_response_head(bytes: &[u8]) -> ResponseInfo {
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut slots);
    let len = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!("not a complete response head ({other:?}): {bytes:?}"),
    };
    let value = |name: &str| {
        let mut values = parsed
            .headers
            .iter()
            .filter(|field| field.name.eq_ignore_ascii_case(name));
        let first = values
            .next()
            .map(|field| String::from_utf8_lossy(field.value).into_owned());
        assert!(values.next().is_none(), "{name} appears twice");
        first
    };
    let framing = match (value("content-length"), value("transfer-encoding")) {
        (Some(length), None) => Some(Framing::Length(length.parse().expect("a decimal length"))),
        (None, Some(coding)) if coding == "chunked" => Some(Framing::Chunked),
        (None, None) => None,
        other => panic!("conflicting framing {other:?}"),
    };
    let status = parsed.code.unwrap_or_default();
    let connection = value("connection");
    if status == 101 {
        assert_eq!(connection.as_deref(), Some("Upgrade"));
        assert!(value("upgrade").is_some(), "a 101 names the new protocol");
    }
    ResponseInfo {
        status,
        len,
        framing,
        closes: connection.as_deref() == Some("close"),
    }
}

/// Skips the content of a response and returns what follows.
fn skip_content<'a>(rest: &'a [u8], response: &ResponseInfo, answer: &Answer, last: bool) -> &'a [u8] {
    if matches!(response.status, 100..=199 | 204 | 304) {
        assert_eq!(
            response.framing, None,
            "status {} has no framing",
            response.status
        );
        return rest;
    }
    match (&response.framing, answer.to_head) {
        // RFC 9112 §6.3 item 1: a response to HEAD ends with its head, whatever it announces.
        (_, Some(true)) => rest,
        (None, _) => {
            // Only the close ends this body.
            assert!(
                response.closes && last,
                "an unframed response must close the connection"
            );
            &[]
        }
        (Some(Framing::Length(len)), Some(false)) => {
            assert!(rest.len() >= *len, "content shorter than its Content-Length");
            &rest[*len..]
        }
        // The answer to a head never returned: HEAD or not, it is the last thing written.
        (Some(Framing::Length(len)), None) => {
            assert!(
                last && (rest.is_empty() || rest.len() == *len),
                "error response framing"
            );
            &[]
        }
        (Some(Framing::Chunked), _) => skip_chunked(rest),
    }
}

fn skip_chunked(mut rest: &[u8]) -> &[u8] {
    let unlimited = Limits {
        max_body_bytes: usize::MAX,
        ..Limits::default()
    };
    let mut decoder = ChunkedDecoder::new(unlimited);
    loop {
        match decoder.decode(rest) {
            Ok((used, Decoded::End)) => return &rest[used..],
            Ok((used, Decoded::Data(_))) => rest = &rest[used..],
            Ok((_, Decoded::NeedMore)) => panic!("chunked body cut short"),
            Err(error) => panic!("our chunked body does not decode: {error}"),
        }
    }
}
