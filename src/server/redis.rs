//! The sockets of the Redis store: its command connection and its subscription, driven in the loop
//! as the module docs of [`crate::store::redis`] describe. Both are registered for reading and
//! writing at once (mio is edge-triggered: a writable event comes only when the socket turns
//! writable again, so it costs nothing while idle); each turn reads until `WouldBlock`, writes what
//! the endpoint queued, and carries out its connect and disconnect requests.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

use log::{info, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::store::redis::{Action, DownReason, Link, RedisConfig, RedisStore, Subscriber};

/// What the loop needs of a connection's endpoint ([`Link`] or [`Subscriber`]).
pub trait Endpoint {
    fn poll_action(&mut self) -> Option<Action>;
    fn connected(&mut self, now: Instant);
    fn lost(&mut self, reason: DownReason, now: Instant);
    fn output(&self) -> &[u8];
    fn consume_output(&mut self, written: usize);
    fn receive(&mut self, bytes: &[u8], now: Instant);
}

macro_rules! endpoint {
    ($type:ty) => {
        impl Endpoint for $type {
            fn poll_action(&mut self) -> Option<Action> {
                <$type>::poll_action(self)
            }
            fn connected(&mut self, now: Instant) {
                <$type>::connected(self, now)
            }
            fn lost(&mut self, reason: DownReason, now: Instant) {
                <$type>::lost(self, reason, now)
            }
            fn output(&self) -> &[u8] {
                <$type>::output(self)
            }
            fn consume_output(&mut self, written: usize) {
                <$type>::consume_output(self, written)
            }
            fn receive(&mut self, bytes: &[u8], now: Instant) {
                <$type>::receive(self, bytes, now)
            }
        }
    };
}
endpoint!(Link);
endpoint!(Subscriber);

/// One connection's socket.
#[derive(Debug)]
struct Conn {
    token: Token,
    socket: Option<TcpStream>,
    /// Connect started, not yet seen writable.
    connecting: bool,
    name: &'static str,
}

impl Conn {
    fn new(token: Token, name: &'static str) -> Self {
        Self {
            token,
            socket: None,
            connecting: false,
            name,
        }
    }

    /// Carries out what the endpoint asks (connect, disconnect), reads what arrived if
    /// `readable`, and writes what it queued.
    fn drive<E: Endpoint>(
        &mut self,
        endpoint: &mut E,
        registry: &Registry,
        address: &str,
        readable: bool,
        now: Instant,
    ) {
        while let Some(action) = endpoint.poll_action() {
            match action {
                Action::Connect => self.connect(endpoint, registry, address, now),
                Action::Disconnect => self.close(registry),
            }
        }
        if self.connecting
            && self
                .socket
                .as_ref()
                .is_some_and(|socket| socket.peer_addr().is_ok())
        {
            self.connecting = false;
            endpoint.connected(now);
        } else if self.connecting
            && let Some(Ok(Some(error)) | Err(error)) = self.socket.as_ref().map(TcpStream::take_error)
        {
            self.close(registry);
            endpoint.lost(DownReason::ConnectFailed(error.to_string()), now);
        }
        if readable && !self.connecting {
            self.read(endpoint, registry, now);
        }
        self.write(endpoint, registry, now);
        // Reading or writing may have asked for a reconnect.
        while let Some(action) = endpoint.poll_action() {
            match action {
                Action::Connect => self.connect(endpoint, registry, address, now),
                Action::Disconnect => self.close(registry),
            }
        }
    }

    fn connect<E: Endpoint>(&mut self, endpoint: &mut E, registry: &Registry, address: &str, now: Instant) {
        self.close(registry);
        let result = resolve(address).and_then(|addr| {
            let mut socket = TcpStream::connect(addr)?;
            registry.register(&mut socket, self.token, Interest::READABLE | Interest::WRITABLE)?;
            Ok(socket)
        });
        match result {
            Ok(socket) => {
                self.socket = Some(socket);
                self.connecting = true;
            }
            Err(error) => endpoint.lost(DownReason::ConnectFailed(error.to_string()), now),
        }
    }

    fn close(&mut self, registry: &Registry) {
        if let Some(mut socket) = self.socket.take() {
            let _ = registry.deregister(&mut socket);
        }
        self.connecting = false;
    }

    fn read<E: Endpoint>(&mut self, endpoint: &mut E, registry: &Registry, now: Instant) {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let Some(socket) = self.socket.as_mut() else {
                return;
            };
            match socket.read(&mut buffer) {
                Ok(0) => {
                    info!("redis {}: closed by the server", self.name);
                    self.close(registry);
                    endpoint.lost(DownReason::Closed, now);
                    return;
                }
                Ok(read) => endpoint.receive(buffer.get(..read).unwrap_or_default(), now),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    warn!("redis {}: {error}", self.name);
                    self.close(registry);
                    endpoint.lost(DownReason::Io(error.to_string()), now);
                    return;
                }
            }
        }
    }

    fn write<E: Endpoint>(&mut self, endpoint: &mut E, registry: &Registry, now: Instant) {
        if self.connecting {
            return;
        }
        while !endpoint.output().is_empty() {
            let Some(socket) = self.socket.as_mut() else {
                return;
            };
            match socket.write(endpoint.output()) {
                Ok(written) => endpoint.consume_output(written),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    self.close(registry);
                    endpoint.lost(DownReason::Io(error.to_string()), now);
                    return;
                }
            }
        }
    }
}

/// The first address `host:port` names. (A host name is resolved by the system's blocking
/// resolver; deployments name Redis by address or by a name in /etc/hosts.)
fn resolve(address: &str) -> io::Result<SocketAddr> {
    address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{address} resolves to nothing")))
}

/// The Redis store with its two sockets.
#[derive(Debug)]
pub struct RedisBackend {
    pub store: RedisStore,
    address: String,
    link: Conn,
    sub: Conn,
    was_healthy: Option<bool>,
}

impl RedisBackend {
    pub fn new(config: &RedisConfig, node: &str, seed: u64, tokens: [Token; 2], now: Instant) -> Self {
        Self {
            store: RedisStore::new(config, node, seed, now),
            address: config.address(),
            link: Conn::new(tokens[0], "commands"),
            sub: Conn::new(tokens[1], "subscription"),
            was_healthy: None,
        }
    }

    /// One pass over both connections: `readable` names the socket that had an event.
    pub fn drive(&mut self, registry: &Registry, readable: Option<Token>, now: Instant) {
        let link_readable = readable == Some(self.link.token);
        let sub_readable = readable == Some(self.sub.token);
        self.link
            .drive(self.store.link_mut(), registry, &self.address, link_readable, now);
        self.sub.drive(
            self.store.subscriber_mut(),
            registry,
            &self.address,
            sub_readable,
            now,
        );
        self.store.process(now);
        let healthy = self.store.health();
        if self.was_healthy != Some(healthy.is_ok()) {
            match &healthy {
                Ok(()) => info!("redis {}: connected", self.address),
                Err(why) => warn!("redis {}: {why}", self.address),
            }
            self.was_healthy = Some(healthy.is_ok());
        }
    }
}
