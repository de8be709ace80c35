//! Routing: what a request head asks for, and whether we serve it.
//!
//! One port serves the chat page over plain HTTP and the WebSocket endpoints over an upgrade. The
//! decision is a pure function of the head, the configuration and whether the server had room for
//! the connection; its answer is a [`Route`]. Every refusal is a [`RouteError`] variant whose HTTP
//! status is chosen in one place, [`RouteError::status`].

use std::fmt;

use crate::http::{RequestHead, Response, Status};
use crate::page::{self, Asset};
use crate::ws::handshake::{Accepted, HandshakeError, Request};

use super::{HubConfig, Listener, Sid};
use crate::conn::per_ip::Refused;

/// What a WebSocket connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/echo`: every message goes back to its sender.
    Echo,
    /// `/`: the chat.
    Chat,
}

/// The answer to one request.
#[derive(Debug)]
pub enum Route {
    /// A file of the chat page (for GET or HEAD; the HTTP layer leaves out the body of the latter).
    Page(&'static Asset),
    /// A valid WebSocket upgrade to `endpoint`.
    Upgrade { endpoint: Endpoint, accepted: Accepted },
    /// `GET /sse`: an event stream for session `sid` (a new one without), resuming after `since`
    /// (`Last-Event-ID`, or `?since=` when a proxy lost the header).
    Stream { sid: Option<Sid>, since: Option<u64> },
    /// `GET /poll`: the events of session `sid` after `since` (a new session without `sid`).
    Poll { sid: Option<Sid>, since: u64 },
    /// `POST /send`: what session `sid` says.
    Send { sid: Sid },
    /// `GET /metrics`: the Prometheus exposition.
    Metrics,
    /// `GET /healthz`: the event loop answers, so it is alive.
    Health,
    /// `GET /readyz`: whether the server can take clients (its store works).
    Ready,
    /// A refusal, answered with its status and the connection closed.
    Reject(RouteError),
}

/// Why a request is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// The upgrade breaks a rule of RFC 6455 §4.2.1 (or the Origin policy).
    Handshake(HandshakeError),
    /// No endpoint at this path.
    NotFound(String),
    /// A plain HTTP request at an endpoint that only speaks WebSocket.
    UpgradeRequired,
    /// The page is only fetched with GET or HEAD.
    MethodNotAllowed(String),
    /// Only `POST /send` takes a request body; reading and discarding one would only cost us.
    BodyNotAccepted,
    /// A query parameter that is not what the endpoint expects (`sid`: 32 hex digits; `since`: a
    /// number).
    BadQuery(&'static str),
    /// A browser request from an origin `--allowed-origin` does not list (the rule of the
    /// WebSocket upgrade, applied to the HTTP transports too).
    ForbiddenOrigin(String),
    /// The server is at `--max-connections`.
    ServerFull,
    /// The client's address holds its share of connections (`--max-connections-per-ip`), or the
    /// table of addresses is full.
    PerAddress(Refused),
}

impl RouteError {
    pub fn status(&self) -> Status {
        match self {
            Self::Handshake(error) => error.status(),
            Self::NotFound(_) => Status::NOT_FOUND,
            Self::UpgradeRequired => Status::UPGRADE_REQUIRED,
            Self::MethodNotAllowed(_) => Status::METHOD_NOT_ALLOWED,
            Self::BodyNotAccepted => Status::CONTENT_TOO_LARGE,
            Self::BadQuery(_) => Status::BAD_REQUEST,
            Self::ForbiddenOrigin(_) => Status::FORBIDDEN,
            Self::ServerFull => Status::SERVICE_UNAVAILABLE,
            Self::PerAddress(refused) => refused.status(),
        }
    }

    /// The response: status, the headers the status calls for, and a one-line body. A refused
    /// request closes its connection, as it always has here.
    pub fn response(&self) -> Response {
        let response = Response::text(self.status(), &self.to_string()).close();
        match self {
            Self::Handshake(error) => error.response(),
            Self::UpgradeRequired => response.header("Upgrade", "websocket"),
            Self::MethodNotAllowed(_) => response.header("Allow", "GET, HEAD"),
            _ => response,
        }
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Handshake(error) => error.fmt(f),
            Self::NotFound(path) => write!(f, "no endpoint at {path}"),
            Self::UpgradeRequired => f.write_str("this endpoint speaks WebSocket only"),
            Self::MethodNotAllowed(method) => write!(f, "method {method} is not allowed here; use GET"),
            Self::BodyNotAccepted => f.write_str("only POST /send accepts a request body"),
            Self::BadQuery(why) => f.write_str(why),
            Self::ForbiddenOrigin(origin) => write!(f, "origin {origin:?} is not allowed"),
            Self::ServerFull => f.write_str("server is at its connection limit; try again later"),
            Self::PerAddress(refused) => write!(f, "{refused}; try again later"),
        }
    }
}

impl std::error::Error for RouteError {}

impl From<HandshakeError> for RouteError {
    fn from(error: HandshakeError) -> Self {
        Self::Handshake(error)
    }
}

/// Decides what `head`, which came in on `listener`, gets. `refusal`: the connection was accepted
/// only to be told this (the server or the client's address is at its limit).
pub fn route(
    head: &RequestHead,
    config: &HubConfig,
    listener: Listener,
    refusal: Option<&RouteError>,
) -> Route {
    match decide(head, config, listener, refusal) {
        Ok(route) => route,
        Err(error) => Route::Reject(error),
    }
}

fn decide(
    head: &RequestHead,
    config: &HubConfig,
    listener: Listener,
    refusal: Option<&RouteError>,
) -> Result<Route, RouteError> {
    if let Some(refusal) = refusal {
        return Err(refusal.clone());
    }
    if let Some(route) = operations(head, config, listener)? {
        return Ok(route);
    }
    if let Some(route) = fallback(head, config)? {
        return Ok(route);
    }
    if has_body(head) {
        return Err(RouteError::BodyNotAccepted);
    }
    let endpoint = match head.path.as_str() {
        "/echo" if config.echo => Some(Endpoint::Echo),
        "/" => Some(Endpoint::Chat),
        _ => None,
    };
    let request = Request::from_head(head);
    if !request.wants_upgrade() {
        if let Some(asset) = page::asset(&head.path) {
            return match head.method.as_str() {
                "GET" | "HEAD" => Ok(Route::Page(asset)),
                other => Err(RouteError::MethodNotAllowed(other.to_owned())),
            };
        }
        return Err(match endpoint {
            Some(_) => RouteError::UpgradeRequired,
            None => RouteError::NotFound(head.path.clone()),
        });
    }
    let endpoint = endpoint.ok_or_else(|| RouteError::NotFound(head.path.clone()))?;
    let accepted = request.validate(&config.policy)?;
    Ok(Route::Upgrade { endpoint, accepted })
}

/// The endpoints for operators: `/metrics`, `/healthz`, `/readyz`. The metrics listener serves
/// only these; the public one serves the health checks (a load balancer reaches them there), and
/// `/metrics` unless `--metrics-listen` moved it away.
fn operations(
    head: &RequestHead,
    config: &HubConfig,
    listener: Listener,
) -> Result<Option<Route>, RouteError> {
    let route = match head.path.as_str() {
        "/healthz" => Route::Health,
        "/readyz" => Route::Ready,
        "/metrics" if listener == Listener::Metrics || !config.metrics_separate => Route::Metrics,
        path if listener == Listener::Metrics => return Err(RouteError::NotFound(path.to_owned())),
        _ => return Ok(None),
    };
    if !matches!(head.method.as_str(), "GET" | "HEAD") {
        return Err(RouteError::MethodNotAllowed(head.method.clone()));
    }
    if has_body(head) {
        return Err(RouteError::BodyNotAccepted);
    }
    Ok(Some(route))
}

/// Reads the route of one endpoint from a request head.
type RouteOf = fn(&RequestHead) -> Result<Route, RouteError>;

/// The plain-HTTP transports of the chat: `/sse`, `/poll` and `/send`. They answer HTTP/1.0 too
/// (a default nginx speaks it to its upstream), and the WebSocket's Origin rule applies to them.
fn fallback(head: &RequestHead, config: &HubConfig) -> Result<Option<Route>, RouteError> {
    let (method, route): (&str, RouteOf) = match head.path.as_str() {
        "/sse" => ("GET", |head| {
            let since = match head.header("last-event-id") {
                Some(id) => Some(parse_number(id, "Last-Event-ID must be a number")?),
                None => query_number(head, "since")?,
            };
            Ok(Route::Stream {
                sid: query_sid(head)?,
                since,
            })
        }),
        "/poll" => ("GET", |head| {
            Ok(Route::Poll {
                sid: query_sid(head)?,
                since: query_number(head, "since")?.unwrap_or(0),
            })
        }),
        "/send" => ("POST", |head| {
            let sid = query_sid(head)?.ok_or(RouteError::BadQuery("POST /send needs ?sid=<session id>"))?;
            Ok(Route::Send { sid })
        }),
        _ => return Ok(None),
    };
    if head.method != method {
        return Err(RouteError::MethodNotAllowed(head.method.clone()));
    }
    if method != "POST" && has_body(head) {
        return Err(RouteError::BodyNotAccepted);
    }
    check_origin(head, config)?;
    route(head).map(Some)
}

/// `--allowed-origin` for requests without an upgrade: a browser says where the request comes from
/// in `Sec-Fetch-Site` (same-origin: fine) and `Origin`; a request with neither is not from a
/// browser, carries no ambient credentials, and passes (RFC 6455 §10.2's reasoning).
fn check_origin(head: &RequestHead, config: &HubConfig) -> Result<(), RouteError> {
    let allowed = &config.policy.allowed_origins;
    if allowed.is_empty() {
        return Ok(());
    }
    if matches!(head.header("sec-fetch-site"), Some("same-origin" | "none")) {
        return Ok(());
    }
    match head.header("origin") {
        Some(origin) if !allowed.iter().any(|ok| ok.eq_ignore_ascii_case(origin)) => {
            Err(RouteError::ForbiddenOrigin(origin.to_owned()))
        }
        Some(_) => Ok(()),
        // A cross-site fetch without Origin would be odd; only a request with no browser header
        // at all passes.
        None if head.header("sec-fetch-site").is_some() => Err(RouteError::ForbiddenOrigin(String::new())),
        None => Ok(()),
    }
}

/// `?sid=`: 32 hex digits, when present.
fn query_sid(head: &RequestHead) -> Result<Option<Sid>, RouteError> {
    const WHY: &str = "sid must be 32 hex digits";
    match head.query_param("sid") {
        None => Ok(None),
        Some(text) if text.len() == 32 => Sid::from_str_radix(text, 16)
            .map(Some)
            .map_err(|_| RouteError::BadQuery(WHY)),
        Some(_) => Err(RouteError::BadQuery(WHY)),
    }
}

fn query_number(head: &RequestHead, name: &str) -> Result<Option<u64>, RouteError> {
    head.query_param(name)
        .map(|text| parse_number(text, "since must be a number"))
        .transpose()
}

fn parse_number(text: &str, why: &'static str) -> Result<u64, RouteError> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(RouteError::BadQuery(why));
    }
    text.parse().map_err(|_| RouteError::BadQuery(why))
}

/// Whether the request announces a body (RFC 9112 §6.3: a `Transfer-Encoding`, or a
/// `Content-Length` other than 0).
fn has_body(head: &RequestHead) -> bool {
    head.header("transfer-encoding").is_some()
        || head
            .header_values("content-length")
            .any(|value| value.trim() != "0")
}
