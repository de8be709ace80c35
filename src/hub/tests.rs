//! Routing and the session map, without connections.

use std::time::Instant;

use super::*;
use crate::conn::ConnId;
use crate::http::{Limits, RequestHead, parse_head};
use crate::hub::SessionConfig;
use crate::store::memory::MemoryStore;

fn config(echo: bool) -> HubConfig {
    HubConfig {
        echo,
        policy: Policy::default(),
        chat: ChatConfig::default(),
        sessions: SessionConfig {
            queue_cap: 1 << 20,
            grace: std::time::Duration::from_secs(30),
        },
    }
}

fn head(text: &str) -> RequestHead {
    parse_head(text.as_bytes(), &Limits::default())
        .expect("valid head")
        .expect("complete head")
        .0
}

const UPGRADE: &str = "Host: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// What each request gets: a page, an upgrade, or a refusal with its status.
#[test]
fn routing_table() {
    let table: &[(&str, bool, String, &str)] = &[
        (
            "the page",
            false,
            "GET / HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "page",
        ),
        (
            "the page, HEAD",
            false,
            "HEAD /app.js HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "page",
        ),
        (
            "the page, POST",
            false,
            "POST / HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "405",
        ),
        (
            "chat upgrade",
            false,
            format!("GET / HTTP/1.1\r\n{UPGRADE}\r\n"),
            "chat",
        ),
        (
            "echo upgrade",
            true,
            format!("GET /echo HTTP/1.1\r\n{UPGRADE}\r\n"),
            "echo",
        ),
        (
            "echo without --echo",
            false,
            format!("GET /echo HTTP/1.1\r\n{UPGRADE}\r\n"),
            "404",
        ),
        (
            "plain GET of /echo",
            true,
            "GET /echo HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "426",
        ),
        (
            "unknown path",
            false,
            "GET /nope HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "404",
        ),
        (
            "upgrade at an unknown path",
            false,
            format!("GET /nope HTTP/1.1\r\n{UPGRADE}\r\n"),
            "404",
        ),
        (
            "upgrade by POST",
            false,
            format!("POST / HTTP/1.1\r\n{UPGRADE}\r\n"),
            "405",
        ),
        (
            "a request body",
            false,
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n".into(),
            "413",
        ),
        (
            "a chunked body",
            false,
            "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
            "413",
        ),
        (
            "an event stream",
            false,
            "GET /sse HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "sse",
        ),
        (
            "an event stream over HTTP/1.0",
            false,
            "GET /sse HTTP/1.0\r\n\r\n".into(),
            "sse",
        ),
        (
            "a malformed sid",
            false,
            "GET /sse?sid=xyz HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "400",
        ),
        (
            "a Last-Event-ID that is not a number",
            false,
            "GET /sse HTTP/1.1\r\nHost: h\r\nLast-Event-ID: x\r\n\r\n".into(),
            "400",
        ),
        (
            "a poll",
            false,
            "GET /poll?since=3 HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "poll",
        ),
        (
            "a poll by POST",
            false,
            "POST /poll HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "405",
        ),
        (
            "a send",
            false,
            format!(
                "POST /send?sid={:032x} HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n",
                7
            ),
            "send",
        ),
        (
            "a send without sid",
            false,
            "POST /send HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "400",
        ),
        (
            "a send by GET",
            false,
            "GET /send HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "405",
        ),
        (
            "an event stream with a body",
            false,
            "GET /sse HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n".into(),
            "413",
        ),
        (
            "an empty body is no body",
            false,
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n".into(),
            "page",
        ),
    ];
    for (rule, echo, request, expected) in table {
        let got = match crate::testing::hub(config(*echo)).route(&head(request), false) {
            Route::Page(_) => "page".to_owned(),
            Route::Upgrade {
                endpoint: Endpoint::Chat,
                ..
            } => "chat".to_owned(),
            Route::Upgrade {
                endpoint: Endpoint::Echo,
                ..
            } => "echo".to_owned(),
            Route::Stream { .. } => "sse".to_owned(),
            Route::Poll { .. } => "poll".to_owned(),
            Route::Send { .. } => "send".to_owned(),
            Route::Reject(error) => error.status().code().to_string(),
        };
        assert_eq!(got, *expected, "{rule}");
    }
}

#[test]
fn a_connection_over_the_limit_is_refused_whatever_it_asks() {
    for request in [
        "GET / HTTP/1.1\r\nHost: h\r\n\r\n".to_owned(),
        format!("GET / HTTP/1.1\r\n{UPGRADE}\r\n"),
    ] {
        let Route::Reject(error) = crate::testing::hub(config(false)).route(&head(&request), true) else {
            panic!("served over capacity");
        };
        assert_eq!(error.status().code(), 503);
    }
}

#[test]
fn refusals_render_their_status_with_a_one_line_reason() {
    for error in [
        RouteError::NotFound("/x".into()),
        RouteError::UpgradeRequired,
        RouteError::MethodNotAllowed("PUT".into()),
        RouteError::BodyNotAccepted,
        RouteError::ServerFull,
    ] {
        let response = error.response();
        assert_eq!(response.head.status, error.status());
        assert!(response.head.close, "{error}: a refusal closes the connection");
        let body = String::from_utf8_lossy(&response.body).into_owned();
        assert_eq!(body, format!("{error}\n"));
    }
}

fn now() -> Now {
    #[allow(clippy::disallowed_methods)] // An origin for the fake clock; nothing is timed.
    let instant = Instant::now();
    Now {
        instant,
        unix_ms: 1_700_000_000_000,
    }
}

/// Answers the store commands the hub queued (at once, from memory), then returns every output
/// queued so far.
fn drain(hub: &mut Hub, store: &mut MemoryStore) -> Vec<Output> {
    while hub.has_store_commands() {
        for outcome in store.execute(hub.take_store_commands(), now().instant) {
            hub.store_outcome(outcome, now().instant);
        }
    }
    std::iter::from_fn(|| hub.poll_output()).collect()
}

#[test]
fn store_commands_wait_for_the_server_and_their_answers_come_back_as_inputs() {
    let mut hub = crate::testing::hub(config(false));
    let mut store = MemoryStore::new(100);
    let a = ConnId::new(0, 1);
    hub.opened(a, now());
    // The lobby's history is not in memory yet: the welcome waits for the store.
    assert!(hub.has_store_commands());
    assert!(!hub.has_output());
    let outputs = drain(&mut hub, &mut store);
    assert_eq!(outputs.len(), 1, "the welcome; nobody else is there to be told");
}

#[test]
fn chat_events_are_addressed_to_the_connections_that_carry_the_sessions() {
    let mut hub = crate::testing::hub(config(false));
    let (a, b) = (ConnId::new(0, 1), ConnId::new(1, 2));
    let mut store = MemoryStore::new(100);
    hub.opened(a, now());
    hub.opened(b, now());
    drain(&mut hub, &mut store);
    hub.text(a, r#"{"type":"message","payload":"hi"}"#, now());
    assert!(!hub.has_output(), "nothing is shown before the store has it");
    let outputs = drain(&mut hub, &mut store);
    let recipients: Vec<Vec<ConnId>> = outputs
        .iter()
        .map(|output| match output {
            Output::Deliver { to, .. } => to.clone(),
            Output::Close { .. } | Output::Session { .. } => panic!("{output:?}"),
        })
        .collect();
    assert_eq!(
        recipients,
        [vec![a], vec![b]],
        "the ack to the sender, the message to the other"
    );
}

#[test]
fn a_closed_connection_ends_its_session_once() {
    let mut hub = crate::testing::hub(config(false));
    let (a, b) = (ConnId::new(0, 1), ConnId::new(1, 2));
    let mut store = MemoryStore::new(100);
    hub.opened(a, now());
    hub.opened(b, now());
    drain(&mut hub, &mut store);
    hub.closed(a, now());
    assert_eq!(drain(&mut hub, &mut store).len(), 1, "the room hears `left`");
    hub.closed(a, now());
    assert!(
        drain(&mut hub, &mut store).is_empty(),
        "a second report does nothing"
    );
    assert_eq!(hub.sessions(), 1);
}

#[test]
fn input_from_a_connection_without_a_session_is_ignored() {
    let mut hub = crate::testing::hub(config(false));
    hub.text(ConnId::new(3, 9), r#"{"type":"message","payload":"hi"}"#, now());
    assert!(drain(&mut hub, &mut MemoryStore::new(100)).is_empty());
}
