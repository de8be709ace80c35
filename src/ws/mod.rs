//! RFC 6455, sans-IO: the wire format ([`frame`], [`mask`], [`utf8`], [`close`]), the opening
//! handshake's rules ([`handshake`], both roles), and the connection state machine ([`protocol`]).
//! Nothing here touches a socket or reads a clock.

pub mod close;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod protocol;
pub mod utf8;
