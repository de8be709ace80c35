//! One test per rule. Framing tests run the scripted server of [`transcript`] over the input whole,
//! cut in two at every byte, and a byte at a time: every run must give the same events, output and
//! end state, and the output must read back as well-formed HTTP. Tests of what the caller may do
//! drive a [`Conn`] by hand.

use super::*;
use crate::http::transcript::{self, Answer, Seen, Transcript};

const LIMITS: Limits = Limits {
    max_head_bytes: 256,
    max_headers: 8,
    max_body_bytes: 64,
};

const GET: &str = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

/// Serves `input` whole, cut in two at every byte, and a byte at a time; all runs must agree, and
/// the output must read back as HTTP answering each request.
fn serve(input: &str) -> Transcript {
    let input = input.as_bytes();
    let whole = transcript::serve(&[input], LIMITS);
    for cut in 0..=input.len() {
        let (front, back) = input.split_at(cut);
        assert_eq!(transcript::serve(&[front, back], LIMITS), whole, "cut at {cut}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(transcript::serve(&bytes, LIMITS), whole, "a byte at a time");
    transcript::check_output(&whole);
    whole
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The scripted server's answer to a plain request: a 200 with a one-line text body.
fn ok(line: &str, connection: Option<&str>) -> String {
    let body = format!("{line}\n");
    let connection = connection.map_or(String::new(), |value| format!("Connection: {value}\r\n"));
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{connection}\r\n{body}",
        body.len()
    )
}

/// The error's response as the connection writes it.
fn error_answer(error: &Error) -> String {
    let body = format!("{error}\n");
    let status = error.status();
    format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        status.0,
        status.1,
        body.len()
    )
}

fn head_of(request: &str) -> RequestHead {
    head::parse_head(request.as_bytes(), &LIMITS).unwrap().unwrap().0
}

/// Asserts that serving `request` fails with `error` before any head comes out, answered with the
/// error's response and nothing else.
fn assert_refused(request: &str, error: Error) {
    let run = serve(request);
    assert_eq!(run.events, [Seen::Failed(error.clone())], "{request:?}");
    assert_eq!(text(&run.output), error_answer(&error), "{request:?}");
    assert!(run.must_close);
}

/// A connection that has read `request` and returned its head.
fn conn_at_head(request: &str) -> Conn {
    let mut conn = Conn::new(LIMITS);
    conn.receive(request.as_bytes());
    assert!(matches!(conn.next_event(), Ok(Event::Head(_))));
    conn
}

fn take_output(conn: &mut Conn) -> String {
    let mut out = Vec::new();
    conn.outbox().write_to(&mut out).unwrap();
    text(&out)
}

// Persistence (RFC 9112 §9.3).

#[test]
fn persistence_follows_the_version_and_the_connection_field() {
    let table: &[(&str, bool)] = &[
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        ("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, CLOSE\r\n\r\n",
            false,
        ),
        ("GET / HTTP/1.0\r\n\r\n", false),
        ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        (
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
            false,
        ),
    ];
    for (request, persists) in table {
        let run = serve(&format!("{request}{GET}"));
        let http10 = request.contains("HTTP/1.0");
        let first = match (persists, http10) {
            (false, _) => ok("GET / 0", Some("close")),
            (true, true) => ok("GET / 0", Some("keep-alive")),
            (true, false) => ok("GET / 0", None),
        };
        let expected = if *persists {
            format!("{first}{}", ok("GET / 0", None))
        } else {
            first
        };
        assert_eq!(text(&run.output), expected, "{request:?}");
        assert_eq!(run.answers.len(), 1 + usize::from(*persists), "{request:?}");
    }
}

#[test]
fn response_before_the_body_is_read_closes_the_connection() {
    let run = serve(&format!(
        "POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello{GET}"
    ));
    assert_eq!(text(&run.output), ok("POST /early 0", Some("close")));
    assert!(run.must_close);
}

#[test]
fn handler_may_close_a_persistent_connection() {
    let run = serve(&format!("GET /close HTTP/1.1\r\nHost: a\r\n\r\n{GET}"));
    assert_eq!(
        text(&run.output),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 4\r\n\
         Connection: close\r\n\r\nbye\n"
    );
    assert!(run.must_close);
}

#[test]
fn peer_gone_after_its_request_gets_a_closing_response() {
    let mut conn = conn_at_head(GET);
    conn.receive_eof();
    assert_eq!(conn.next_event(), Ok(Event::End));
    conn.respond(&Response::text(Status::OK, "hi")).unwrap();
    assert!(take_output(&mut conn).contains("Connection: close\r\n"));
    assert!(conn.must_close());
    assert_eq!(conn.start_next_cycle(), Err(UsageError::NotReusable));
}

#[test]
fn peer_closing_between_requests_is_a_normal_end() {
    let run = serve(GET);
    assert_eq!(run.events, [Seen::Head(head_of(GET)), Seen::End, Seen::Closed]);
    assert_eq!(text(&run.output), ok("GET / 0", None));
    assert!(run.must_close);
}

// Pipelining (RFC 9112 §9.3.2).

#[test]
fn pipelined_requests_come_out_one_cycle_at_a_time() {
    let requests: String = (1..=3)
        .map(|n| format!("GET /{n} HTTP/1.1\r\nHost: a\r\n\r\n"))
        .collect();
    let mut conn = Conn::new(LIMITS);
    conn.receive(requests.as_bytes());
    for n in 1..=3 {
        let Ok(Event::Head(head)) = conn.next_event() else {
            panic!("request {n} expected")
        };
        assert_eq!(head.path, format!("/{n}"));
        assert_eq!(conn.next_event(), Ok(Event::End));
        assert_eq!(conn.next_event(), Ok(Event::Paused));
        conn.respond(&Response::text(Status::OK, &n.to_string())).unwrap();
        assert_eq!(
            conn.next_event(),
            Ok(Event::Paused),
            "paused until the next cycle starts"
        );
        conn.start_next_cycle().unwrap();
    }
    assert_eq!(conn.next_event(), Ok(Event::NeedMore));
    let output = take_output(&mut conn);
    let bodies: Vec<&str> = output
        .match_indices("\r\n\r\n")
        .map(|(at, _)| &output[at + 4..at + 6])
        .collect();
    assert_eq!(bodies, ["1\n", "2\n", "3\n"], "answered in order");
    // And the same bytes through the scripted server, however they are cut.
    assert_eq!(serve(&requests).answers.len(), 3);
}

#[test]
fn next_cycle_waits_for_both_sides_to_finish() {
    let mut conn = conn_at_head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(
        conn.start_next_cycle(),
        Err(UsageError::CycleNotFinished),
        "body not read"
    );
    assert_eq!(conn.next_event(), Ok(Event::Body(&b"hi"[..])));
    assert_eq!(conn.next_event(), Ok(Event::End));
    assert_eq!(
        conn.start_next_cycle(),
        Err(UsageError::CycleNotFinished),
        "no response"
    );
    conn.respond_streaming(&ResponseHead::new(Status::OK)).unwrap();
    assert_eq!(
        conn.start_next_cycle(),
        Err(UsageError::CycleNotFinished),
        "body not ended"
    );
    conn.end_body().unwrap();
    assert_eq!(conn.start_next_cycle(), Ok(()));
}

#[test]
fn paused_connection_holds_at_most_a_heads_worth_of_input() {
    let mut conn = conn_at_head(GET);
    assert_eq!(conn.next_event(), Ok(Event::End));
    assert_eq!(conn.next_event(), Ok(Event::Paused));
    let next = format!("GET /next HTTP/1.1\r\nHost: a\r\nX: {}", "a".repeat(200));
    conn.receive(next.as_bytes());
    assert!(conn.wants_read(), "{} bytes held", next.len());
    conn.receive(&[b'a'; 100]);
    assert!(!conn.wants_read(), "more than a head's worth held");
    assert_eq!(conn.next_event(), Ok(Event::Paused), "still not looked at");
    conn.respond(&Response::new(Status::OK)).unwrap();
    conn.start_next_cycle().unwrap();
    assert_eq!(conn.next_event(), Err(Error::HeadTooLarge { limit: 256 }));
}

// Upgrade (RFC 9110 §7.8).

#[test]
fn upgrade_hands_over_every_byte_after_the_head() {
    let request = "GET /upgrade HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    // A WebSocket frame, and bytes that merely look like HTTP: neither is ours to parse.
    let after = format!("\u{81}\u{05}Hello{GET}");
    let run = serve(&format!("{request}{after}"));
    assert_eq!(
        text(&run.output),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    );
    assert_eq!(run.upgraded, Some(after.into_bytes()));
    assert_eq!(run.events, [Seen::Head(head_of(request)), Seen::End]);
}

#[test]
fn a_101_needs_an_offered_upgrade_and_must_name_it() {
    let switch = Response::new(Status::SWITCHING_PROTOCOLS).header("Upgrade", "websocket");
    let table: &[(&str, &Response, &str)] = &[
        (GET, &switch, "the request offered no upgrade"),
        (
            "GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            &switch,
            "the request offered no upgrade",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\n",
            &switch,
            "the request body is not read yet",
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
            &Response::new(Status::SWITCHING_PROTOCOLS),
            "a 101 must name the protocol in Upgrade",
        ),
    ];
    for (request, response, why) in table {
        let mut conn = conn_at_head(request);
        assert_eq!(
            conn.respond(response),
            Err(UsageError::CannotSwitch(why)),
            "{request:?}"
        );
        assert_eq!(take_output(&mut conn), "", "nothing is sent");
    }
    let mut conn = conn_at_head("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(conn.respond(&switch), Ok(()));
    assert!(!conn.wants_read() && !conn.must_close() && !conn.keep_alive());
    assert_eq!(
        conn.respond(&Response::new(Status::OK)),
        Err(UsageError::Finished)
    );
}

// Head limits and syntax (RFC 9112 §2-§5).

#[test]
fn head_longer_than_the_limit_is_431() {
    let long = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "a".repeat(LIMITS.max_head_bytes)
    );
    assert_refused(&long, Error::HeadTooLarge { limit: 256 });
    // With no end in sight the verdict comes once the limit is passed, without waiting for more.
    let mut conn = Conn::new(LIMITS);
    conn.receive(&long.as_bytes()[..=LIMITS.max_head_bytes]);
    assert_eq!(conn.next_event(), Err(Error::HeadTooLarge { limit: 256 }));
}

#[test]
fn more_header_fields_than_the_limit_is_431() {
    let fields: String = (0..=LIMITS.max_headers)
        .map(|n| format!("X-{n}: v\r\n"))
        .collect();
    assert_refused(
        &format!("GET / HTTP/1.1\r\n{fields}\r\n"),
        Error::TooManyHeaders { limit: 8 },
    );
}

#[test]
fn malformed_head_is_400_with_httparses_reason() {
    assert_refused(
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        Error::Malformed(httparse::Error::HeaderName),
    );
    assert!(error_answer(&Error::Malformed(httparse::Error::HeaderName)).ends_with("invalid header name\n"));
}

#[test]
fn empty_lines_before_a_request_are_ignored() {
    let run = serve(&format!("\r\n\n\r\n{GET}\r\n{GET}"));
    assert_eq!(text(&run.output), ok("GET / 0", None).repeat(2));
}

#[test]
fn host_must_be_given_once_in_http11() {
    assert_refused("GET / HTTP/1.1\r\n\r\n", Error::MissingHost);
    assert_refused(
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        Error::RepeatedHost,
    );
    assert_refused(
        "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
        Error::RepeatedHost,
    );
    let run = serve("GET / HTTP/1.0\r\n\r\n");
    assert_eq!(
        text(&run.output),
        ok("GET / 0", Some("close")),
        "HTTP/1.0 needs no Host"
    );
}

// Request bodies (RFC 9112 §6, §7).

#[test]
fn content_length_body_comes_out_whole_and_in_order() {
    let post = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n";
    let run = serve(&format!("{post}hello world{GET}"));
    assert_eq!(
        run.events,
        [
            Seen::Head(head_of(post)),
            Seen::Body(b"hello world".to_vec()),
            Seen::End,
            Seen::Head(head_of(GET)),
            Seen::End,
            Seen::Closed,
        ]
    );
    assert_eq!(
        text(&run.output),
        format!("{}{}", ok("POST / 11", None), ok("GET / 0", None))
    );
}

#[test]
fn content_length_must_be_decimal_digits() {
    for value in ["-1", "+5", "5a", "0x5", "5 5", "", "\u{661}"] {
        let request = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {value}\r\n\r\n");
        assert_refused(&request, Error::InvalidContentLength(value.to_owned()));
    }
}

#[test]
fn content_length_over_the_limit_is_413_before_the_body() {
    for value in ["65", "99999999999999999999999"] {
        let request = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {value}\r\n\r\n");
        assert_refused(&request, Error::BodyTooLarge { limit: 64 });
    }
    let body = "x".repeat(64);
    let run = serve(&format!(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 64\r\n\r\n{body}"
    ));
    assert_eq!(text(&run.output), ok("POST / 64", None), "at the limit is fine");
}

#[test]
fn content_length_twice_or_as_a_list_is_400() {
    for fields in [
        "Content-Length: 5\r\nContent-Length: 5",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 5, 5",
        "Content-Length: 5,",
    ] {
        let request = format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n\r\nhello");
        assert_refused(&request, Error::RepeatedContentLength);
    }
}

#[test]
fn content_length_with_transfer_encoding_is_400() {
    assert_refused(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Error::ContentLengthWithTransferEncoding,
    );
}

#[test]
fn chunked_must_be_the_only_and_final_transfer_coding() {
    let table: &[(&str, Option<Error>)] = &[
        ("Transfer-Encoding: chunked", None),
        ("Transfer-Encoding: CHUNKED", None),
        (
            "Transfer-Encoding: gzip, chunked",
            Some(Error::UnsupportedTransferCoding("gzip".into())),
        ),
        (
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
            Some(Error::UnsupportedTransferCoding("gzip".into())),
        ),
        ("Transfer-Encoding: chunked, gzip", Some(Error::ChunkedNotFinal)),
        ("Transfer-Encoding: gzip", Some(Error::ChunkedNotFinal)),
        (
            "Transfer-Encoding: chunked, chunked",
            Some(Error::ChunkedNotFinal),
        ),
        ("Transfer-Encoding: ,", Some(Error::ChunkedNotFinal)),
        ("Transfer-Encoding: chunked;x=1", Some(Error::ChunkedNotFinal)),
    ];
    for (field, error) in table {
        let request = format!("POST / HTTP/1.1\r\nHost: a\r\n{field}\r\n\r\n0\r\n\r\n");
        match error {
            Some(error) => assert_refused(&request, error.clone()),
            None => assert_eq!(text(&serve(&request).output), ok("POST / 0", None), "{field}"),
        }
    }
    assert_eq!(
        Error::UnsupportedTransferCoding("gzip".into()).status().code(),
        501
    );
}

#[test]
fn chunked_in_http10_is_400() {
    assert_refused(
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Error::TransferEncodingInHttp10,
    );
}

#[test]
fn chunked_body_comes_out_decoded() {
    let post = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let body = "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    let run = serve(&format!("{post}{body}{GET}"));
    assert_eq!(
        run.events,
        [
            Seen::Head(head_of(post)),
            Seen::Body(b"hello world".to_vec()),
            Seen::End,
            Seen::Head(head_of(GET)),
            Seen::End,
            Seen::Closed,
        ]
    );
    assert_eq!(
        text(&run.output),
        format!("{}{}", ok("POST / 11", None), ok("GET / 0", None))
    );
}

#[test]
fn chunked_body_over_the_limit_is_413_when_its_size_arrives() {
    let post = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let run = serve(&format!("{post}20\r\n{}\r\n21\r\n", "x".repeat(32)));
    let error = Error::BodyTooLarge { limit: 64 };
    assert_eq!(
        run.events,
        [
            Seen::Head(head_of(post)),
            Seen::Body(vec![b'x'; 32]),
            Seen::Failed(error.clone())
        ]
    );
    assert_eq!(text(&run.output), error_answer(&error));
}

#[test]
fn broken_chunk_framing_is_400_and_closes() {
    let post = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let run = serve(&format!("{post}5\r\nhelloXX{GET}"));
    assert_eq!(
        run.events,
        [
            Seen::Head(head_of(post)),
            Seen::Body(b"hello".to_vec()),
            Seen::Failed(Error::ChunkDataEnding)
        ]
    );
    assert_eq!(text(&run.output), error_answer(&Error::ChunkDataEnding));
    assert!(run.must_close);
}

#[test]
fn end_of_input_inside_a_request_is_400() {
    for input in [
        "GET / HTTP/1.1\r\nHost:",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n",
    ] {
        let run = serve(input);
        assert_eq!(
            run.events.last(),
            Some(&Seen::Failed(Error::Incomplete)),
            "{input:?}"
        );
        assert!(text(&run.output).starts_with("HTTP/1.1 400 Bad Request\r\n"));
    }
}

// Expect: 100-continue (RFC 9110 §10.1.1).

const EXPECTS: &str = "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";

#[test]
fn continue_is_sent_when_the_body_is_first_asked_for() {
    let mut conn = conn_at_head(EXPECTS);
    assert_eq!(take_output(&mut conn), "", "not before the caller asks");
    assert_eq!(conn.next_event(), Ok(Event::NeedMore));
    assert_eq!(take_output(&mut conn), "HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(conn.next_event(), Ok(Event::NeedMore));
    conn.receive(b"hello");
    assert_eq!(conn.next_event(), Ok(Event::Body(&b"hello"[..])));
    assert_eq!(conn.next_event(), Ok(Event::End));
    conn.respond(&Response::new(Status::OK)).unwrap();
    assert_eq!(
        take_output(&mut conn),
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        "one 100 only, and the connection persists"
    );
}

#[test]
fn answering_before_asking_for_the_body_sends_no_continue_and_closes() {
    let mut conn = conn_at_head(EXPECTS);
    conn.respond(&Response::text(Status::CONFLICT, "no")).unwrap();
    let output = take_output(&mut conn);
    assert!(output.starts_with("HTTP/1.1 409 Conflict\r\n"), "{output}");
    assert!(output.contains("Connection: close\r\n"));
    assert_eq!(conn.next_event(), Ok(Event::NeedMore));
    assert_eq!(take_output(&mut conn), "", "no 100 after a final response");
    assert!(conn.must_close());
}

#[test]
fn continue_is_not_sent_without_a_body_or_to_http10() {
    let no_body = "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n";
    assert_eq!(text(&serve(no_body).output), ok("GET / 0", None));
    let http10 = "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(text(&serve(http10).output), ok("POST / 5", Some("close")));
    let through_serve = serve(&format!("{EXPECTS}hello"));
    assert!(text(&through_serve.output).starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"));
}

// HEAD (RFC 9110 §9.3.2).

#[test]
fn head_response_has_the_length_but_no_body() {
    let run = serve(&format!("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n{GET}"));
    let head_only = ok("HEAD / 0", None).replace("HEAD / 0\n", "");
    assert!(head_only.contains("Content-Length: 9\r\n"));
    assert_eq!(text(&run.output), format!("{head_only}{}", ok("GET / 0", None)));
}

#[test]
fn streamed_response_to_head_is_its_head_alone() {
    let run = serve(&format!("HEAD /stream HTTP/1.1\r\nHost: a\r\n\r\n{GET}"));
    assert_eq!(
        text(&run.output),
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            ok("GET / 0", None)
        )
    );
}

#[test]
fn error_response_to_head_has_no_body() {
    let mut conn = Conn::new(LIMITS);
    conn.receive(b"HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n");
    let error = Error::InvalidContentLength("x".into());
    assert_eq!(conn.next_event(), Err(error.clone()));
    let answer = error_answer(&error);
    let head_only = &answer[..answer.find("\r\n\r\n").unwrap() + 4];
    assert_eq!(take_output(&mut conn), head_only);
}

// Responses (RFC 9110 §6.4.1, §8.6; RFC 9112 §6).

#[test]
fn every_response_with_content_has_its_length() {
    let mut conn = conn_at_head(GET);
    conn.respond(&Response::new(Status::OK)).unwrap();
    assert_eq!(
        take_output(&mut conn),
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn no_content_statuses_have_neither_length_nor_content() {
    for status in [Status::NO_CONTENT, Status::NOT_MODIFIED] {
        let mut conn = conn_at_head(GET);
        let with_body = Response::with_body(status, "text/plain", &b"x"[..]);
        assert_eq!(
            conn.respond(&with_body),
            Err(UsageError::ContentNotAllowed(status))
        );
        assert_eq!(
            conn.respond_streaming(&ResponseHead::new(status)),
            Err(UsageError::ContentNotAllowed(status))
        );
        conn.respond(&Response::new(status)).unwrap();
        assert_eq!(
            take_output(&mut conn),
            format!("HTTP/1.1 {} {}\r\n\r\n", status.0, status.1)
        );
    }
    assert!(
        serve(&format!("GET /empty HTTP/1.1\r\nHost: a\r\n\r\n{GET}"))
            .answers
            .len()
            == 2
    );
}

#[test]
fn interim_responses_other_than_101_are_refused() {
    for status in [
        Status::CONTINUE,
        Status(102, "Processing"),
        Status(103, "Early Hints"),
    ] {
        let mut conn = conn_at_head(GET);
        assert_eq!(
            conn.respond(&Response::new(status)),
            Err(UsageError::Interim(status))
        );
    }
}

#[test]
fn one_response_per_request_and_only_after_it() {
    let mut conn = Conn::new(LIMITS);
    assert_eq!(
        conn.respond(&Response::new(Status::OK)),
        Err(UsageError::NoRequest)
    );
    conn.receive(GET.as_bytes());
    assert!(matches!(conn.next_event(), Ok(Event::Head(_))));
    conn.respond(&Response::new(Status::OK)).unwrap();
    assert_eq!(
        conn.respond(&Response::new(Status::OK)),
        Err(UsageError::AlreadyResponded)
    );
    assert_eq!(
        conn.respond_streaming(&ResponseHead::new(Status::OK)),
        Err(UsageError::AlreadyResponded)
    );
}

#[test]
fn framing_fields_are_the_connections_to_write() {
    let mut conn = conn_at_head(GET);
    let response = Response::new(Status::OK).header("Content-Length", "10");
    assert_eq!(
        conn.respond(&response),
        Err(UsageError::FramingField("Content-Length".into()))
    );
    assert_eq!(take_output(&mut conn), "");
}

#[test]
fn streamed_body_is_chunked_in_http11() {
    let run = serve(&format!("GET /stream HTTP/1.1\r\nHost: a\r\n\r\n{GET}"));
    assert_eq!(
        text(&run.output),
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
             f\r\ndata: /stream\n\n\r\ne\r\ndata: shared\n\n\r\n0\r\n\r\n{}",
            ok("GET / 0", None)
        )
    );
}

#[test]
fn streamed_body_in_http10_is_ended_by_the_close() {
    let run = serve("GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(
        text(&run.output),
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n\
         data: /stream\n\ndata: shared\n\n"
    );
    assert!(run.must_close);
}

#[test]
fn body_pieces_need_an_open_stream() {
    let mut conn = conn_at_head(GET);
    assert_eq!(conn.send_body(b"x"), Err(UsageError::NotStreaming));
    assert_eq!(conn.end_body(), Err(UsageError::NotStreaming));
    conn.respond_streaming(&ResponseHead::new(Status::OK)).unwrap();
    conn.end_body().unwrap();
    assert_eq!(conn.send_body(b"x"), Err(UsageError::NotStreaming));
}

// Broken rules (every error answers with its status and closes).

#[test]
fn after_an_error_the_connection_is_dead() {
    let mut conn = Conn::new(LIMITS);
    conn.receive(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(conn.next_event(), Err(Error::MissingHost));
    assert_eq!(take_output(&mut conn), error_answer(&Error::MissingHost));
    assert!(conn.must_close() && !conn.wants_read() && !conn.keep_alive());
    conn.receive(GET.as_bytes());
    assert_eq!(
        conn.next_event(),
        Err(Error::MissingHost),
        "the same answer again"
    );
    assert_eq!(
        conn.respond(&Response::new(Status::OK)),
        Err(UsageError::Finished)
    );
    assert_eq!(conn.start_next_cycle(), Err(UsageError::Finished));
    assert_eq!(take_output(&mut conn), "", "nothing more is sent");
}

#[test]
fn error_during_a_streamed_response_cuts_it_short() {
    let mut conn = conn_at_head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    conn.respond_streaming(&ResponseHead::new(Status::OK)).unwrap();
    conn.send_body(b"partial").unwrap();
    conn.receive(b"zz\r\n");
    assert_eq!(conn.next_event(), Err(Error::ChunkSize));
    assert_eq!(
        take_output(&mut conn),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n7\r\npartial\r\n",
        "no error response, no last chunk"
    );
    assert_eq!(conn.send_body(b"more"), Err(UsageError::Finished));
    assert!(conn.must_close());
}

#[test]
fn every_error_has_its_status() {
    let table: &[(Error, u16)] = &[
        (Error::HeadTooLarge { limit: 1 }, 431),
        (Error::TooManyHeaders { limit: 1 }, 431),
        (Error::TrailersTooLarge { limit: 1 }, 431),
        (Error::TooManyTrailers { limit: 1 }, 431),
        (Error::BodyTooLarge { limit: 1 }, 413),
        (Error::UnsupportedTransferCoding("gzip".into()), 501),
        (Error::Malformed(httparse::Error::Token), 400),
        (Error::MissingHost, 400),
        (Error::RepeatedHost, 400),
        (Error::InvalidContentLength("x".into()), 400),
        (Error::RepeatedContentLength, 400),
        (Error::ContentLengthWithTransferEncoding, 400),
        (Error::TransferEncodingInHttp10, 400),
        (Error::ChunkedNotFinal, 400),
        (Error::ChunkSize, 400),
        (Error::ChunkExtension, 400),
        (Error::ChunkLineTooLong, 400),
        (Error::ChunkLineEnding, 400),
        (Error::ChunkDataEnding, 400),
        (Error::MalformedTrailers(httparse::Error::HeaderName), 400),
        (Error::Incomplete, 400),
    ];
    for (error, code) in table {
        assert_eq!(error.status().code(), *code, "{error}");
        let response = error.response();
        assert_eq!(response.body.as_ref(), format!("{error}\n").as_bytes());
        assert!(response.head.close, "{error}");
    }
}

// Memory.

#[test]
fn input_memory_is_given_back_once_used() {
    let mut conn = conn_at_head(GET);
    assert!(conn.buffered() > 0);
    assert_eq!(conn.next_event(), Ok(Event::End));
    assert_eq!(conn.next_event(), Ok(Event::Paused));
    assert_eq!(conn.buffered(), 0);
}

// The fuzz target's invariants hold on its seeds and on noise.

#[test]
fn fuzz_target_holds_on_its_seeds_and_on_noise() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/http");
    let mut seeds = 0;
    for entry in std::fs::read_dir(corpus).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        crate::fuzzing::http(&data);
        seeds += 1;
    }
    assert!(seeds > 0);
    // Mostly bytes that matter to HTTP, so the noise gets past the request line now and then.
    const NOISE: &[u8] =
        b"GET /stream /upgrade HTTP/1.1\r\n\r\n:0123456789abcdef;chunked Content-Length Transfer-Encoding";
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for len in 0..300 {
        let data: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                NOISE[(state % NOISE.len() as u64) as usize]
            })
            .collect();
        crate::fuzzing::http(&data);
    }
}

#[test]
fn scripted_server_answers_match_its_requests() {
    let run = serve(&format!(
        "GET /empty HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.1\r\nHost: a\r\n\r\n{GET}"
    ));
    assert_eq!(
        run.answers,
        [
            Answer {
                status: 204,
                to_head: Some(false)
            },
            Answer {
                status: 200,
                to_head: Some(true)
            },
            Answer {
                status: 200,
                to_head: Some(false)
            },
        ]
    );
}
