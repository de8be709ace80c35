//! The chat over plain HTTP, for clients behind proxies that do not pass WebSocket: Server-Sent
//! Events (the WHATWG HTML "server-sent events" format) and long-polling, with `POST /send` for
//! what the client says. These are exchanges of the HTTP phase ([`Exchange`]): each is a request
//! whose answer the hub fills over time, after which the connection goes back to its request cycle.
//!
//! - `GET /sse[?sid=S]`: an event stream. It starts with `retry:` and a comment, so proxies and the
//!   browser see it begin; a new session's first event is `session` with its id; then one event per
//!   chat event, whose `id:` is the session's sequence number (the browser sends it back as
//!   `Last-Event-ID` when it reconnects, and the session replays what came after). A comment every
//!   [`COMMENT_EVERY`] keeps idle proxies from cutting it, and the stream ends after
//!   [`STREAM_BYTES`] so that the browser reconnects and the session can drop what it confirmed.
//! - `GET /poll?sid=S&since=N`: the events after N as a JSON array, at once if there are any, or as
//!   soon as one comes, or `[]` after [`POLL_HOLD`]. Events are numbered without gaps, so the n-th
//!   element of the answer to `since=N` is event N+n: the next poll asks `since=N+len`.
//! - `POST /send?sid=S`: one chat envelope or an array of them. `204` once handed to the chat;
//!   what it answers (acks, errors) arrives on the stream or the next poll, in order.

use std::rc::Rc;
use std::time::Duration;

use super::{Ctx, Exchange, Phase, Stack, Wire};
use crate::http::{Response, ResponseHead, Status};
use crate::hub::{Event, PollAnswer, PollStart, SendRefusal, Sid, StreamStart};
use crate::trace;

/// How often an idle event stream carries a comment: below the 30-60 s after which proxies and
/// load balancers commonly cut a silent connection.
pub const COMMENT_EVERY: Duration = Duration::from_secs(15);
/// How long a poll waits for an event before it answers `[]`: below common proxy timeouts (60 s).
pub const POLL_HOLD: Duration = Duration::from_secs(25);
/// Bytes after which an event stream ends, so that the browser reconnects with `Last-Event-ID`
/// and the session may drop the events it confirmed (it holds them until then, within
/// `--max-queued-output`).
pub const STREAM_BYTES: usize = 256 * 1024;
/// What the browser waits before reconnecting an event stream that ended, in milliseconds.
const RETRY_MS: u32 = 2000;

/// `Cache-Control: no-store` on everything these endpoints answer: every answer is for one
/// client, once.
fn no_store(response: Response) -> Response {
    response.header("Cache-Control", "no-store")
}

/// A poll's answer: the events as a JSON array, after the session's id when it is new.
fn events_body(sid: Option<Sid>, events: &[(u64, Rc<Event>)]) -> Vec<u8> {
    let mut body = Vec::from(&b"["[..]);
    let mut first = true;
    let mut push = |json: &str| {
        if !std::mem::take(&mut first) {
            body.push(b',');
        }
        body.extend_from_slice(json.as_bytes());
    };
    if let Some(sid) = sid {
        push(&format!(r#"{{"type":"session","sid":"{sid:032x}"}}"#));
    }
    for (_, event) in events {
        push(event.json());
    }
    body.push(b']');
    body
}

impl Stack {
    /// `GET /sse`: opens the session's event stream, or answers 204 when the session (or the point
    /// to resume from) is gone and the client must start over.
    pub(super) fn open_stream(&mut self, sid: Option<Sid>, since: Option<u64>, ctx: &mut Ctx<'_>) {
        let (new_sid, events) = match ctx.hub.open_stream(self.id, self.client, sid, since, ctx.now) {
            StreamStart::NotHeld => {
                self.trace(&format!(
                    "-> SSE    resume point not held: 204 (sid {})",
                    short(sid)
                ));
                return self.respond(ctx.hub, &no_store(Response::new(Status::NO_CONTENT)));
            }
            StreamStart::New { sid, events } => (Some(sid), events),
            StreamStart::Resumed { events } => (None, events),
        };
        let head = ResponseHead::new(Status::OK)
            .content_type("text/event-stream; charset=utf-8")
            .header("Cache-Control", "no-store")
            // nginx buffers proxied responses unless told not to: an event stream must flow.
            .header("X-Accel-Buffering", "no");
        let Phase::Http {
            conn,
            deadline,
            exchange,
            ..
        } = &mut self.phase
        else {
            return;
        };
        if conn.respond_streaming(&head).is_err() {
            return;
        }
        ctx.hub.metrics_mut().http_response(Status::OK.code());
        let mut prelude = format!("retry: {RETRY_MS}\n: wschat event stream\n\n");
        if let Some(sid) = new_sid {
            prelude.push_str(&format!("event: session\ndata: {{\"sid\":\"{sid:032x}\"}}\n\n"));
        }
        let _ = conn.send_body(prelude.as_bytes());
        *exchange = Exchange::Stream { sent: prelude.len() };
        *deadline = ctx.now.instant + COMMENT_EVERY;
        self.trace(&format!(
            "-> SSE    stream opened (sid {})",
            short(new_sid.or(sid))
        ));
        self.stream_events(&events, ctx);
    }

    /// Writes events on the open event stream, each as `id: N` and its shared `data:` line; ends
    /// the stream once it has carried [`STREAM_BYTES`].
    pub(super) fn stream_events(&mut self, events: &[(u64, Rc<Event>)], ctx: &mut Ctx<'_>) {
        let traced = self.traced;
        let id = self.id;
        let Phase::Http {
            conn,
            exchange: Exchange::Stream { sent },
            ..
        } = &mut self.phase
        else {
            return;
        };
        for (seq, event) in events {
            let id_line = format!("id: {seq}\n");
            let data = event.sse_data();
            let _ = conn.send_body_with_shared(id_line.as_bytes(), data.clone());
            *sent += id_line.len() + data.len();
            if traced {
                trace::line(
                    id.serial(),
                    &format!("-> SSE    id={seq:<6} {}", trace::preview_text(event.json())),
                );
            }
        }
        ctx.hub
            .metrics_mut()
            .messages_sent(Wire::EventStream, events.len());
        if *sent >= STREAM_BYTES {
            self.end_stream(ctx);
        }
    }

    /// Ends the event stream (the hub let it go, or it carried enough): the browser reconnects.
    pub(super) fn end_stream(&mut self, ctx: &mut Ctx<'_>) {
        let Phase::Http {
            conn,
            exchange: exchange @ Exchange::Stream { .. },
            deadline,
            requests,
        } = &mut self.phase
        else {
            return;
        };
        let _ = conn.end_body();
        *exchange = Exchange::Requests;
        *deadline = ctx.now.instant + ctx.config.handshake_timeout;
        *requests += 1;
        ctx.hub.reader_gone(self.id, ctx.now);
        self.trace("-> SSE    stream ended");
    }

    /// `GET /poll`: answers at once, or parks until the hub has something (or [`POLL_HOLD`]).
    pub(super) fn open_poll(&mut self, sid: Option<Sid>, since: u64, ctx: &mut Ctx<'_>) {
        let body = match ctx.hub.open_poll(self.id, self.client, sid, since, ctx.now) {
            PollStart::Unknown => {
                self.trace(&format!("-> POLL   unknown session: 404 (sid {})", short(sid)));
                let response = Response::text(Status::NOT_FOUND, "no such session; start a new one");
                return self.respond(ctx.hub, &no_store(response));
            }
            PollStart::Parked => {
                if let Phase::Http {
                    deadline, exchange, ..
                } = &mut self.phase
                {
                    *exchange = Exchange::Parked;
                    *deadline = ctx.now.instant + POLL_HOLD;
                }
                self.trace(&format!("<- POLL   since={since}: parked"));
                return;
            }
            PollStart::New { sid, events } => {
                ctx.hub.metrics_mut().messages_sent(Wire::Poll, events.len());
                self.trace(&format!(
                    "<- POLL   new session {}: {} event(s)",
                    short(Some(sid)),
                    events.len()
                ));
                events_body(Some(sid), &events)
            }
            PollStart::Answer(events) => {
                ctx.hub.metrics_mut().messages_sent(Wire::Poll, events.len());
                self.trace(&format!("<- POLL   since={since}: {} event(s)", events.len()));
                events_body(None, &events)
            }
        };
        self.respond(
            ctx.hub,
            &no_store(Response::with_body(Status::OK, "application/json", body)),
        );
    }

    /// The hub answers the parked poll (events came, or a newer poll or the session's end let it go).
    pub(super) fn answer_poll(&mut self, answer: PollAnswer, ctx: &mut Ctx<'_>) {
        if !matches!(
            self.phase,
            Phase::Http {
                exchange: Exchange::Parked,
                ..
            }
        ) {
            return;
        }
        self.unpark(ctx);
        let response = match answer {
            PollAnswer::Events(events) => {
                ctx.hub.metrics_mut().messages_sent(Wire::Poll, events.len());
                self.trace(&format!("-> POLL   {} event(s)", events.len()));
                Response::with_body(Status::OK, "application/json", events_body(None, &events))
            }
            PollAnswer::Superseded => {
                self.trace("-> POLL   superseded: 204");
                Response::new(Status::NO_CONTENT)
            }
        };
        self.respond(ctx.hub, &no_store(response));
    }

    /// Back to the request cycle after a parked poll.
    fn unpark(&mut self, ctx: &mut Ctx<'_>) {
        if let Phase::Http {
            exchange,
            deadline,
            requests,
            ..
        } = &mut self.phase
        {
            *exchange = Exchange::Requests;
            *deadline = ctx.now.instant + ctx.config.handshake_timeout;
            *requests += 1;
        }
    }

    /// An event stream's or a parked poll's deadline: a comment on the stream, `[]` to the poll.
    pub(super) fn exchange_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let Phase::Http {
            conn,
            exchange,
            deadline,
            ..
        } = &mut self.phase
        else {
            return;
        };
        match exchange {
            Exchange::Stream { sent } => {
                const COMMENT: &[u8] = b": keep-alive\n\n";
                let _ = conn.send_body(COMMENT);
                *sent += COMMENT.len();
                *deadline = ctx.now.instant + COMMENT_EVERY;
            }
            Exchange::Parked => {
                ctx.hub.reader_gone(self.id, ctx.now);
                self.unpark(ctx);
                self.trace("-> POLL   nothing new: []");
                self.respond(
                    ctx.hub,
                    &no_store(Response::with_body(Status::OK, "application/json", &b"[]"[..])),
                );
            }
            Exchange::Requests | Exchange::Upload { .. } => {}
        }
    }

    /// `POST /send`: reads the body if the session may send now (one POST at a time per session).
    pub(super) fn begin_upload(&mut self, sid: Sid, ctx: &mut Ctx<'_>) {
        match ctx.hub.begin_send(self.id, sid) {
            Ok(()) => {
                if let Phase::Http { exchange, .. } = &mut self.phase {
                    *exchange = Exchange::Upload {
                        sid,
                        body: Vec::new(),
                    };
                }
            }
            Err(refusal) => self.refuse_send(sid, refusal, ctx),
        }
    }

    /// The end of a request: for an upload, its body goes to the hub.
    pub(super) fn end_upload(&mut self, ctx: &mut Ctx<'_>) {
        let Phase::Http {
            exchange: exchange @ Exchange::Upload { .. },
            ..
        } = &mut self.phase
        else {
            return;
        };
        let Exchange::Upload { sid, body } = std::mem::replace(exchange, Exchange::Requests) else {
            return;
        };
        match ctx.hub.send(self.id, sid, &body, ctx.now) {
            Ok(()) => {
                self.trace(&format!("<- POST   /send {} bytes: 204", body.len()));
                self.respond(ctx.hub, &no_store(Response::new(Status::NO_CONTENT)));
            }
            Err(refusal) => self.refuse_send(sid, refusal, ctx),
        }
    }

    fn refuse_send(&mut self, sid: Sid, refusal: SendRefusal, ctx: &mut Ctx<'_>) {
        let response = match refusal {
            SendRefusal::UnknownSession => {
                Response::text(Status::NOT_FOUND, "no such session; start a new one")
            }
            SendRefusal::Busy => Response::text(
                Status::CONFLICT,
                "another POST of this session is still arriving; send after it",
            ),
            SendRefusal::BadBody => Response::text(
                Status::BAD_REQUEST,
                "expected a chat envelope {\"type\": ..., \"payload\": ...} or an array of them",
            ),
        };
        self.trace(&format!(
            "<- POST   /send refused: {} (sid {})",
            response.head.status.code(),
            short(Some(sid))
        ));
        self.respond(ctx.hub, &no_store(response));
    }

    /// A trace line for this connection, when it is traced.
    fn trace(&self, text: &str) {
        if self.traced {
            trace::line(self.id.serial(), text);
        }
    }
}

/// A session id as logs and traces show it: its first 8 hex digits only, since the whole id is
/// what lets anyone act as that client.
fn short(sid: Option<Sid>) -> String {
    match sid {
        Some(sid) => format!("{:08x}…", sid >> 96),
        None => "new".to_owned(),
    }
}
