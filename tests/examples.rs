//! The examples work: `examples/client.rs` talks to `examples/echo_server.rs` and to the real
//! server. The example files are compiled into this test as modules, so what runs here is exactly
//! the code the README points to.

#[path = "../examples/client.rs"]
mod client;
#[path = "../examples/echo_server.rs"]
mod echo_server;

mod common;

use std::net::TcpListener;

#[test]
fn example_client_and_example_echo_server_talk() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || echo_server::serve(listener));
    let reply = client::exchange(&addr, "/", "Hello from the example").unwrap();
    assert_eq!(reply, "Hello from the example");
}

#[test]
fn example_client_talks_to_the_real_server() {
    let server = common::TestServer::start(&["--echo"]);
    let reply = client::exchange(&server.addr.to_string(), "/echo", "κόσμε").unwrap();
    assert_eq!(reply, "κόσμε");
    server
        .wait_for_log("closed 1000", std::time::Duration::from_secs(5))
        .expect("the client closed with 1000");
}
