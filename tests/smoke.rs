//! The harness itself works: the binary starts, echoes, and answers plain HTTP.

mod common;

use common::*;
use std::io::Write;

#[test]
fn echo_endpoint_echoes_a_masked_text_frame() {
    let server = TestServer::start(&["--echo"]);
    let (mut stream, mut pending) = raw_websocket(server.addr, "/echo");
    stream.write_all(&client_frame(true, 0, 0x1, b"Hello")).unwrap();
    let frame = read_server_frame(&mut stream, &mut pending).expect("echo");
    assert_eq!((frame.opcode, frame.payload.as_slice()), (0x1, &b"Hello"[..]));
}
