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

use super::HubConfig;

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
    /// No endpoint takes a request body (yet); reading and discarding one would only cost us.
    BodyNotAccepted,
    /// The server is at `--max-connections`.
    ServerFull,
}

impl RouteError {
    pub fn status(&self) -> Status {
        match self {
            Self::Handshake(error) => error.status(),
            Self::NotFound(_) => Status::NOT_FOUND,
            Self::UpgradeRequired => Status::UPGRADE_REQUIRED,
            Self::MethodNotAllowed(_) => Status::METHOD_NOT_ALLOWED,
            Self::BodyNotAccepted => Status::CONTENT_TOO_LARGE,
            Self::ServerFull => Status::SERVICE_UNAVAILABLE,
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
            Self::BodyNotAccepted => f.write_str("no endpoint accepts a request body"),
            Self::ServerFull => f.write_str("server is at its connection limit; try again later"),
        }
    }
}

impl std::error::Error for RouteError {}

impl From<HandshakeError> for RouteError {
    fn from(error: HandshakeError) -> Self {
        Self::Handshake(error)
    }
}

/// Decides what `head` gets. `over_capacity`: the connection was accepted past the limit only to
/// be told so.
pub fn route(head: &RequestHead, config: &HubConfig, over_capacity: bool) -> Route {
    match decide(head, config, over_capacity) {
        Ok(route) => route,
        Err(error) => Route::Reject(error),
    }
}

fn decide(head: &RequestHead, config: &HubConfig, over_capacity: bool) -> Result<Route, RouteError> {
    if over_capacity {
        return Err(RouteError::ServerFull);
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

/// Whether the request announces a body (RFC 9112 §6.3: a `Transfer-Encoding`, or a
/// `Content-Length` other than 0).
fn has_body(head: &RequestHead) -> bool {
    head.header("transfer-encoding").is_some()
        || head
            .header_values("content-length")
            .any(|value| value.trim() != "0")
}
