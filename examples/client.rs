//! A small WebSocket client on wschat's sans-IO core: connect, send one text message, print the
//! reply, close.
//!
//! ```sh
//! cargo run --example client -- 127.0.0.1:9002 / "Hello"       # against examples/echo_server
//! cargo run --example client -- 127.0.0.1:8080 /echo "Hello"   # against `wschat --echo`
//! ```
#![allow(clippy::disallowed_methods)] // A program at the I/O edge: it reads the clock itself.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use wschat::ws::close::CloseCode;
use wschat::ws::handshake::client::ClientHandshake;
use wschat::ws::protocol::{Config, Connection, Event, Role, State, random_seed};

#[allow(dead_code)] // When tests include this file, they call `exchange` instead.
fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9002".into());
    let path = args.next().unwrap_or_else(|| "/".into());
    let message = args.next().unwrap_or_else(|| "Hello, WebSocket!".into());
    println!("{}", exchange(&addr, &path, &message)?);
    Ok(())
}

/// Sends `message` to the server at `addr` and returns its first text reply.
pub fn exchange(addr: &str, path: &str, message: &str) -> io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;

    // 1. The opening handshake (§4.1), with a random 16-byte nonce as the key.
    let seeds = [random_seed(), random_seed()];
    let nonce: [u8; 16] = std::array::from_fn(|i| seeds[i / 8].to_le_bytes()[i % 8]);
    let handshake = ClientHandshake::new(addr, path, nonce);
    stream.write_all(handshake.request())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_len = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head_len) = handshake.parse_response(&buf).map_err(io::Error::other)? {
            break head_len;
        }
    };

    // 2. One message each way. A client masks every frame (§5.3); the connection does it.
    let mut conn = Connection::new(Role::Client, Config::default(), Instant::now());
    conn.sender(Instant::now())
        .send_text(message)
        .map_err(io::Error::other)?;
    conn.outbox().write_to(&mut stream)?;
    let mut reply = None;
    let mut input = buf.split_off(head_len);
    let mut len = input.len();
    loop {
        conn.receive(&mut input[..len], Instant::now(), |event, _| {
            if let Event::Text(text) = event {
                reply.get_or_insert_with(|| text.to_owned());
            }
        });
        // 3. Closing (§7): we start it once we have the reply, then wait for the server's Close
        //    and for it to close TCP.
        if reply.is_some() && conn.state() == State::Open {
            conn.close(CloseCode::Normal, "done", Instant::now());
        }
        conn.outbox().write_to(&mut stream)?;
        if conn.state() == State::Closed {
            break;
        }
        input.resize(4096, 0);
        len = stream.read(&mut input)?;
        if len == 0 {
            break;
        }
    }
    reply.ok_or_else(|| io::Error::other("the server sent no text reply"))
}
