//! Routing and the session map, without connections.

use std::time::Instant;

use super::*;
use crate::conn::ConnId;
use crate::http::{Limits, RequestHead, parse_head};
use crate::store::memory::MemoryStore;

fn config(echo: bool) -> HubConfig {
    HubConfig {
        echo,
        ..HubConfig::default()
    }
}

fn head(text: &str) -> RequestHead {
    parse_head(text.as_bytes(), &Limits::default())
        .expect("valid head")
        .expect("complete head")
        .0
}

/// The client address of every connection here.
const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

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
        (
            "the metrics",
            false,
            "GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "metrics",
        ),
        (
            "the liveness check",
            false,
            "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "health",
        ),
        (
            "the readiness check, by HEAD",
            false,
            "HEAD /readyz HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "ready",
        ),
        (
            "the metrics by POST",
            false,
            "POST /metrics HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "405",
        ),
    ];
    for (rule, echo, request, expected) in table {
        let got = match crate::testing::hub(config(*echo)).route(&head(request), Listener::Public, None) {
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
            Route::Metrics => "metrics".to_owned(),
            Route::Health => "health".to_owned(),
            Route::Ready => "ready".to_owned(),
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
        let hub = crate::testing::hub(config(false));
        let refusal = RouteError::ServerFull;
        let Route::Reject(error) = hub.route(&head(&request), Listener::Public, Some(&refusal)) else {
            panic!("served over capacity");
        };
        assert_eq!(error.status().code(), 503);
    }
}

/// What `request` gets on `listener` from a hub whose metrics are (or are not) on their own
/// listener: the route's name or the refusal's status.
fn route_on(listener: Listener, metrics_separate: bool, request: &str) -> String {
    let hub = crate::testing::hub(HubConfig {
        metrics_separate,
        ..HubConfig::default()
    });
    match hub.route(&head(request), listener, None) {
        Route::Metrics => "metrics".into(),
        Route::Health => "health".into(),
        Route::Ready => "ready".into(),
        Route::Page(_) => "page".into(),
        Route::Reject(error) => error.status().code().to_string(),
        other => format!("{other:?}"),
    }
}

#[test]
fn with_a_metrics_listener_the_public_one_does_not_serve_metrics() {
    let scrape = "GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_eq!(route_on(Listener::Public, true, scrape), "404");
    assert_eq!(route_on(Listener::Metrics, true, scrape), "metrics");
    assert_eq!(route_on(Listener::Public, false, scrape), "metrics");
}

#[test]
fn the_metrics_listener_serves_only_the_operators_endpoints() {
    for (request, expected) in [
        ("GET / HTTP/1.1\r\nHost: h\r\n\r\n", "404"),
        ("GET /app.js HTTP/1.1\r\nHost: h\r\n\r\n", "404"),
        ("GET /sse HTTP/1.1\r\nHost: h\r\n\r\n", "404"),
        ("GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n", "health"),
        ("GET /readyz HTTP/1.1\r\nHost: h\r\n\r\n", "ready"),
    ] {
        assert_eq!(route_on(Listener::Metrics, true, request), expected, "{request}");
    }
}

#[test]
fn health_checks_are_served_on_the_public_listener_too() {
    let request = "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_eq!(route_on(Listener::Public, true, request), "health");
}

#[test]
fn a_connection_over_its_addresss_limit_is_refused_with_429() {
    let hub = crate::testing::hub(config(false));
    let refused = RouteError::PerAddress(crate::conn::per_ip::Refused::TooManyFromAddress {
        key: "192.0.2.1".parse().unwrap(),
        limit: 2,
    });
    let Route::Reject(error) = hub.route(
        &head("GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
        Listener::Public,
        Some(&refused),
    ) else {
        panic!("served over the limit");
    };
    assert_eq!(error.status().code(), 429);
}

/// A hub allowing `limit` connections per address, trusting the proxies `trusted`.
fn hub_with_limit(limit: u32, trusted: &[&str]) -> Hub {
    let prefixes = trusted.iter().map(|p| p.parse().expect("a prefix")).collect();
    crate::testing::hub(HubConfig {
        max_per_address: limit,
        trusted_proxies: TrustedProxies::new(prefixes),
        ..HubConfig::default()
    })
}

fn addr(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

#[test]
fn an_address_over_its_limit_is_refused_and_its_slot_comes_back_on_close() {
    let mut hub = hub_with_limit(2, &[]);
    let at = now().instant;
    let Admission::Open(Some(first)) = hub.admit(addr("192.0.2.1"), at) else {
        panic!("the first connection is refused");
    };
    assert!(matches!(
        hub.admit(addr("192.0.2.1"), at),
        Admission::Open(Some(_))
    ));
    assert!(matches!(
        hub.admit(addr("192.0.2.1"), at),
        Admission::Refuse(_, _)
    ));
    // Other addresses are not affected.
    assert!(matches!(
        hub.admit(addr("192.0.2.2"), at),
        Admission::Open(Some(_))
    ));
    hub.release(first);
    assert!(matches!(
        hub.admit(addr("192.0.2.1"), at),
        Admission::Open(Some(_))
    ));
}

#[test]
fn refusals_beyond_the_limits_worth_are_dropped_unanswered() {
    let mut hub = hub_with_limit(2, &[]);
    let at = now().instant;
    let admitted: Vec<Admission> = (0..6).map(|_| hub.admit(addr("192.0.2.1"), at)).collect();
    let kinds: Vec<&str> = admitted
        .iter()
        .map(|admission| match admission {
            Admission::Open(_) => "open",
            Admission::Refuse(..) => "refuse",
            Admission::Drop => "drop",
        })
        .collect();
    assert_eq!(kinds, ["open", "open", "refuse", "refuse", "drop", "drop"]);
}

#[test]
fn a_trusted_proxy_is_counted_per_forwarded_client_not_per_socket() {
    let mut hub = hub_with_limit(1, &["127.0.0.1"]);
    let at = now().instant;
    // The proxy's sockets are not counted at accept: they carry many clients.
    for _ in 0..3 {
        assert!(matches!(hub.admit(addr("127.0.0.1"), at), Admission::Open(None)));
    }
    let forwarded = head("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n");
    let client = hub.client_addr(addr("127.0.0.1"), &forwarded);
    assert_eq!(client, addr("198.51.100.7"));
    assert!(hub.admit_forwarded(client, at).is_ok());
    assert!(
        hub.admit_forwarded(client, at).is_err(),
        "the client's second connection"
    );
    // From anyone else the header is only a claim.
    assert_eq!(hub.client_addr(addr("192.0.2.9"), &forwarded), addr("192.0.2.9"));
}

#[test]
fn readiness_follows_the_stores_last_answer() {
    let mut hub = crate::testing::hub(config(false));
    assert!(hub.readiness().is_ok());
    let failed = crate::store::Outcome::Read {
        token: 1,
        result: Err(crate::store::StoreError::DiskFull),
    };
    hub.store_outcome(failed, now().instant);
    let error = hub.readiness().expect_err("not ready while the store fails");
    assert!(error.to_string().contains("full"), "{error}");
    assert!(hub.render_metrics().contains("wschat_store_up 0\n"));
    hub.store_failed("the store's writer thread is gone".into());
    assert!(hub.readiness().is_err());
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
    hub.opened(a, LOCALHOST, now());
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
    hub.opened(a, LOCALHOST, now());
    hub.opened(b, LOCALHOST, now());
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
    hub.opened(a, LOCALHOST, now());
    hub.opened(b, LOCALHOST, now());
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
