//! Echo server on tokio-tungstenite, after its `examples/echo-server.rs`: each connection is a task
//! on a single-threaded (`current_thread`) tokio runtime that forwards every text and binary
//! message back to its sender. Pings and closes are answered by tungstenite itself. Any path.
//! No permessage-deflate (tungstenite does not offer it). Deviation from the example: TCP_NODELAY
//! on every accepted socket, which tokio-tungstenite's docs ask for when latency matters (and
//! which its own `connect_async` sets).
//!
//! Usage: tungstenite-echo PORT   (listens on 127.0.0.1:PORT)

use std::io::Error;

use futures_util::{StreamExt, TryStreamExt, future};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .expect("usage: tungstenite-echo PORT");
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("tungstenite-echo listening on 127.0.0.1:{port}");
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(accept_connection(stream));
    }
    Ok(())
}

async fn accept_connection(stream: TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        eprintln!("set_nodelay: {e}");
    }
    let ws_stream = match tokio_tungstenite::accept_async(stream).await {
        Ok(ws_stream) => ws_stream,
        Err(e) => return eprintln!("handshake: {e}"),
    };
    let (write, read) = ws_stream.split();
    // Forward only data messages; control frames are handled inside tungstenite.
    if let Err(e) = read
        .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
        .forward(write)
        .await
    {
        eprintln!("forward: {e}");
    }
}
