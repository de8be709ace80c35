//! RFC 6455, sans-IO: the wire format ([`frame`], [`mask`], [`utf8`], [`close`]), the opening
//! handshake's rules ([`handshake`], both roles), the connection state machine ([`protocol`]) and
//! the permessage-deflate extension ([`deflate`]).
//! Nothing here touches a socket or reads a clock.

pub mod close;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod protocol;
pub mod utf8;
