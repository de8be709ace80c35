//! The wire trace of a scripted session (handshake, fragmented text with an interleaved ping,
//! close) matches the expected transcript in `tests/trace/session.txt`, line for line.

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;

/// The client frames of the session, masked with a fixed key so the transcript is stable.
fn scripted_frames() -> Vec<Vec<u8>> {
    vec![
        masked(0x01, b"Hel"),         // text, not final
        masked(0x89, b"ping!"),       // ping between the fragments
        masked(0x80, b"lo"),          // final continuation
        masked(0x88, b"\x03\xe8bye"), // close 1000 "bye"
    ]
}

fn masked(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    wschat::testing::masked_frame(first_byte, payload, [1, 2, 3, 4])
}

#[test]
fn trace_of_a_scripted_session_matches_the_transcript() {
    let server = TestServer::start(&["--echo", "--trace"]);
    let (mut stream, mut pending) = raw_websocket(server.addr, "/echo");
    for frame in scripted_frames() {
        stream.write_all(&frame).unwrap();
        // One frame per read, so the transcript does not depend on how TCP coalesces writes.
        std::thread::sleep(Duration::from_millis(30));
    }
    // Pong, echoed "Hello", Close: then the server closes TCP.
    for _ in 0..3 {
        read_server_frame(&mut stream, &mut pending).expect("frame");
    }
    server
        .wait_for_log("closed 1000", Duration::from_secs(5))
        .expect("connection closed");
    let traced: Vec<String> = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|line| {
            ["#1 <-", "#1 ->", "#1 !!", "#1 =="]
                .iter()
                .any(|prefix| line.starts_with(prefix))
        })
        .cloned()
        .collect();
    let expected: Vec<&str> = include_str!("trace/session.txt").lines().collect();
    assert_eq!(traced, expected);
}

#[test]
fn without_the_flag_nothing_is_traced() {
    let server = TestServer::start(&["--echo"]);
    let (mut stream, mut pending) = raw_websocket(server.addr, "/echo");
    stream.write_all(&masked(0x81, b"quiet")).unwrap();
    read_server_frame(&mut stream, &mut pending).expect("echo");
    assert!(
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .all(|line| !line.contains(" <- ") && !line.contains(" -> "))
    );
}
