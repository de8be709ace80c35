//! Echo server on fastwebsockets, after its `examples/echo_server.rs`: hyper serves HTTP/1.1 and
//! upgrades, each connection is a task on a single-threaded (`current_thread`) tokio runtime.
//! Text and binary messages go back as they came; pings and closes are answered by fastwebsockets
//! itself (auto-pong and auto-close are on by default). Any path. No permessage-deflate (not
//! supported by fastwebsockets). Deviation from the example: TCP_NODELAY on every accepted socket,
//! as a latency-sensitive WebSocket server sets it (wschat and Node's ws both do).
//!
//! Usage: fastwebsockets-echo PORT   (listens on 127.0.0.1:PORT)

use fastwebsockets::{FragmentCollector, OpCode, WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::net::TcpListener;

async fn handle_client(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}

async fn server_upgrade(mut req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::task::spawn(async move {
        if let Err(e) = tokio::task::unconstrained(handle_client(fut)).await {
            eprintln!("Error in websocket connection: {e}");
        }
    });
    Ok(response)
}

fn main() -> Result<(), WebSocketError> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .expect("usage: fastwebsockets-echo PORT");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        eprintln!("fastwebsockets-echo listening on 127.0.0.1:{port}");
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn_fut = http1::Builder::new()
                    .serve_connection(io, service_fn(server_upgrade))
                    .with_upgrades();
                if let Err(e) = conn_fut.await {
                    eprintln!("An error occurred: {e:?}");
                }
            });
        }
    })
}
