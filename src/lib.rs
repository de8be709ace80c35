//! wschat: an RFC 6455 WebSocket server written from scratch, and a chat built on it.
#![forbid(unsafe_code)]

pub mod chat;
pub mod close;
pub mod config;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod http;
pub mod mask;
pub mod outbox;
pub mod page;
pub mod protocol;
pub mod server;
pub mod trace;
pub mod utf8;
