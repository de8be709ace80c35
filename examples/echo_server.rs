//! A minimal WebSocket echo server on wschat's public API: blocking `std::net`, one thread per
//! client, and the same sans-IO core the real server uses.
//!
//! ```sh
//! cargo run --example echo_server            # listens on 127.0.0.1:9002
//! cargo run --example client -- 127.0.0.1:9002 / "Hello"
//! ```
#![allow(clippy::disallowed_methods)] // A program at the I/O edge: it reads the clock itself.

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use wschat::http;
use wschat::ws::handshake::{Policy, Request};
use wschat::ws::protocol::{Config, Connection, Event, Role, State};

#[allow(dead_code)] // When tests include this file, they call `serve` instead.
fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9002".into());
    let listener = TcpListener::bind(addr)?;
    println!("echo server on ws://{}/", listener.local_addr()?);
    serve(listener)
}

/// Accepts clients forever, each on its own thread.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || {
            if let Err(error) = handle(stream) {
                eprintln!("connection failed: {error}");
            }
        });
    }
    Ok(())
}

fn handle(mut stream: TcpStream) -> io::Result<()> {
    // 1. The opening handshake (RFC 6455 §4.2): the HTTP layer reads the request head, however
    //    many reads it takes; the handshake rules judge it.
    let mut http = http::Conn::new(http::Limits::default());
    let mut chunk = [0u8; 4096];
    let head = loop {
        match http.next_event() {
            Ok(http::Event::Head(head)) => break head,
            Ok(http::Event::NeedMore) => match stream.read(&mut chunk)? {
                0 => return Ok(()),
                n => http.receive(&chunk[..n]),
            },
            // A malformed request: the HTTP layer queued its answer (400, 431, ...).
            _ => return http.outbox().write_to(&mut stream).map(drop),
        }
    };
    let accepted = Request::from_head(&head).validate(&Policy::default());
    let response = match &accepted {
        Ok(accepted) => accepted.response(),
        Err(error) => error.response(),
    };
    http.respond(&response).map_err(io::Error::other)?;
    let mut upgraded = http.upgrade();
    upgraded.output.write_to(&mut stream)?;
    if accepted.is_err() {
        return Ok(());
    }

    // 2. Messages (§5, §6): the connection parses, unmasks, validates and answers pings and
    //    Close; we only move bytes. Bytes after the request head are already frames.
    let mut conn = Connection::new(Role::Server, Config::default(), Instant::now());
    let mut input = upgraded.trailing;
    let mut len = input.len();
    loop {
        conn.receive(&mut input[..len], Instant::now(), |event, sender| {
            let _ = match event {
                Event::Text(text) => sender.send_text(text),
                Event::Binary(data) => sender.send_binary(data),
                _ => Ok(()),
            };
        });
        conn.outbox().write_to(&mut stream)?;
        // 3. Closing (§7): once Close went both ways, the server closes TCP first.
        if conn.state() == State::Closed {
            return Ok(());
        }
        input.resize(4096, 0);
        len = stream.read(&mut input)?;
        if len == 0 {
            return Ok(());
        }
    }
}
