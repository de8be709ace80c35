//! The chat over the wire: the real binary, several independent `tungstenite` clients on 127.0.0.1.
//!
//! Absence ("B never got that") is shown without sleeping: after the step under test, someone posts
//! a marker and the client reads up to it. The server handles one input at a time and each client's
//! output is a FIFO, so anything that step sent the client would have arrived before the marker.
#![allow(clippy::disallowed_methods)] // A program at the I/O edge: it reads the clock itself.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{Value, json};
use tungstenite::Message;

/// The chat messages (payloads) among `messages`.
fn chat_messages(messages: &[Value]) -> Vec<&Value> {
    messages
        .iter()
        .filter(|message| message["type"] == "message")
        .map(|message| &message["payload"])
        .collect()
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn every_message_reaches_every_other_client_exactly_once_in_order() {
    const CLIENTS: usize = 3;
    const EACH: usize = 20;
    let server = TestServer::start(&GENEROUS);
    let clients: Vec<Client> = (0..CLIENTS).map(|_| Client::connect(&server)).collect();
    let names: Vec<String> = clients.iter().map(Client::nickname).collect();

    // All send at once; each reads until it has its acks and everyone else's messages.
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(me, mut client)| {
            thread::spawn(move || {
                for n in 0..EACH {
                    client.send("message", json!(format!("{me}:{n}")));
                }
                let (mut acks, mut received) = (Vec::new(), Vec::new());
                while acks.len() < EACH || received.len() < EACH * (CLIENTS - 1) {
                    let message = client.recv();
                    match message["type"].as_str().unwrap() {
                        "ack" => acks.push(message["payload"].clone()),
                        "message" => received.push(message["payload"].clone()),
                        "joined" => {}
                        other => panic!("client {me}: unexpected {other}: {message}"),
                    }
                }
                (client, acks, received)
            })
        })
        .collect();
    let results: Vec<(Client, Vec<Value>, Vec<Value>)> =
        threads.into_iter().map(|thread| thread.join().unwrap()).collect();

    // Each sender's ack ids, in order: the ids its messages carry everywhere else.
    let ack_ids: Vec<Vec<u64>> = results
        .iter()
        .map(|(_, acks, _)| acks.iter().map(|ack| ack["id"].as_u64().unwrap()).collect())
        .collect();
    for (me, (_, _, received)) in results.iter().enumerate() {
        let mut by_sender: HashMap<usize, Vec<(usize, u64)>> = HashMap::new();
        for message in received {
            let text = message["text"].as_str().unwrap();
            let (sender, n) = text.split_once(':').unwrap();
            let (sender, n): (usize, usize) = (sender.parse().unwrap(), n.parse().unwrap());
            assert_ne!(sender, me, "client {me} got its own message back");
            assert_eq!(message["nickname"], names[sender].as_str());
            assert_eq!(message["room"], "lobby");
            by_sender
                .entry(sender)
                .or_default()
                .push((n, message["id"].as_u64().unwrap()));
        }
        for sender in (0..CLIENTS).filter(|sender| *sender != me) {
            let got = &by_sender[&sender];
            let numbers: Vec<usize> = got.iter().map(|(n, _)| *n).collect();
            assert_eq!(
                numbers,
                (0..EACH).collect::<Vec<_>>(),
                "client {me} from {sender}: all, once, in order"
            );
            let ids: Vec<u64> = got.iter().map(|(_, id)| *id).collect();
            assert_eq!(ids, ack_ids[sender], "client {me}: ids match {sender}'s acks");
        }
        // Acks and messages share one id sequence, and each client sees it increasing.
        let mut seen: Vec<u64> = ack_ids[me].clone();
        seen.extend(received.iter().map(|message| message["id"].as_u64().unwrap()));
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), CLIENTS * EACH, "client {me}: no id twice");
        let in_arrival_order: Vec<u64> = received
            .iter()
            .map(|message| message["id"].as_u64().unwrap())
            .collect();
        assert!(
            in_arrival_order.windows(2).all(|pair| pair[0] < pair[1]),
            "client {me}: ids increase"
        );
    }

    // Nothing more is on its way: each client in turn posts a marker that the others read up to.
    let mut clients: Vec<Client> = results.into_iter().map(|(client, _, _)| client).collect();
    for marker_from in 0..CLIENTS {
        let text = format!("end from {marker_from}");
        clients[marker_from].post(&text);
        for reader in (0..CLIENTS).filter(|reader| *reader != marker_from) {
            let (_, before) = clients[reader].read_until_message(&names[marker_from], &text);
            assert!(before.is_empty(), "client {reader} got extra: {before:?}");
        }
    }
}

#[test]
fn sender_gets_an_ack_whose_id_the_others_see() {
    let server = TestServer::start(&GENEROUS);
    let mut alice = Client::connect(&server);
    let mut bob = Client::connect(&server);
    alice.expect("joined");
    alice.send("nickname", json!("alice"));
    alice.expect("renamed");
    bob.expect("renamed");

    let before = unix_ms();
    let mut last = 0;
    for text in ["hello", "how are you?", "ünïcødé 😀"] {
        alice.send("message", json!(text));
        let ack = alice.expect("ack");
        let message = bob.expect("message");
        assert_eq!(ack.as_object().unwrap().len(), 1, "{ack}");
        assert_eq!(message["id"], ack["id"]);
        assert!(message["id"].as_u64().unwrap() > last);
        last = message["id"].as_u64().unwrap();
        assert_eq!(message["room"], "lobby");
        assert_eq!(message["nickname"], "alice");
        assert_eq!(message["text"], text);
        let ts = message["ts"].as_u64().unwrap();
        assert!(before <= ts && ts <= unix_ms(), "ts {ts} is the server's unix ms");
    }
}

#[test]
fn rooms_isolate_messages() {
    let server = TestServer::start(&GENEROUS);
    let mut lobby_a = Client::connect(&server);
    let mut lobby_b = Client::connect(&server);
    let mut rust_c = Client::connect(&server);
    let mut rust_d = Client::connect(&server);
    for client in [&mut rust_c, &mut rust_d] {
        client.send("join", json!("rust"));
        let (welcome, _) = client.skip_to("welcome");
        assert_eq!(welcome["room"], "rust");
    }
    rust_c.skip_to("joined"); // d arrived

    rust_c.post("rust talk");
    lobby_a.post("lobby talk");
    let (message, _) = rust_d.read_until_message(&rust_c.nickname(), "rust talk");
    assert_eq!(message["room"], "rust");
    let (message, before) = lobby_b.read_until_message(&lobby_a.nickname(), "lobby talk");
    assert_eq!(message["room"], "lobby");
    assert!(
        chat_messages(&before).is_empty(),
        "the lobby heard rust: {before:?}"
    );

    // And the other way round: d hears nothing from the lobby before c's next message.
    rust_c.post("rust marker");
    let (_, before) = rust_d.read_until_message(&rust_c.nickname(), "rust marker");
    assert!(before.is_empty(), "rust heard the lobby: {before:?}");
    // Neither room's history holds the other's.
    lobby_a.send("history", json!({"since": 0}));
    assert_eq!(texts(&lobby_a.expect("history")["messages"]), ["lobby talk"]);
    rust_d.send("history", json!({"since": 0}));
    assert_eq!(
        texts(&rust_d.expect("history")["messages"]),
        ["rust talk", "rust marker"]
    );
}

#[test]
fn history_after_reconnect_returns_exactly_the_missed_messages() {
    let server = TestServer::start(&GENEROUS);
    let mut alice = Client::connect(&server);
    let mut bob = Client::connect(&server);
    alice.post("before");
    let (seen, _) = bob.read_until_message(&alice.nickname(), "before");
    let last_id = seen["id"].as_u64().unwrap();
    bob.close();
    alice.skip_to("left");

    let missed: Vec<u64> = ["while", "you", "were away"]
        .iter()
        .map(|text| alice.post(text))
        .collect();

    let mut bob = Client::connect(&server);
    assert_eq!(
        texts(&bob.welcome["history"]),
        ["before", "while", "you", "were away"]
    );
    bob.send("history", json!({"since": last_id}));
    let history = bob.expect("history");
    assert_eq!(history["room"], "lobby");
    assert_eq!(texts(&history["messages"]), ["while", "you", "were away"]);
    let ids: Vec<u64> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, missed);
    // Caught up: nothing newer.
    bob.send("history", json!({"since": missed[2]}));
    assert_eq!(bob.expect("history")["messages"], json!([]));
}

#[test]
fn history_is_bounded_over_the_wire() {
    let mut args = GENEROUS.to_vec();
    args.extend(["--history-size", "3"]);
    let server = TestServer::start(&args);
    let mut alice = Client::connect(&server);
    for n in 1..=5 {
        alice.post(&format!("m{n}"));
    }
    let bob = Client::connect(&server);
    assert_eq!(texts(&bob.welcome["history"]), ["m3", "m4", "m5"]);
}

#[test]
fn notices_tell_the_room_who_joined_left_and_renamed() {
    let server = TestServer::start(&GENEROUS);
    let mut a = Client::connect(&server);
    assert_eq!(a.welcome["room"], "lobby");
    assert_eq!(a.welcome["online"], json!([a.nickname()]));

    let mut b = Client::connect(&server);
    let b_default = b.nickname();
    assert_eq!(
        a.expect("joined"),
        json!({"room": "lobby", "nickname": b_default})
    );
    let mut online = vec![a.nickname(), b_default.clone()];
    online.sort_by_key(|name| name.to_lowercase());
    assert_eq!(b.welcome["online"], json!(online));

    b.send("nickname", json!("bob"));
    let renamed = json!({"room": "lobby", "from": b_default, "to": "bob"});
    assert_eq!(b.expect("renamed"), renamed);
    assert_eq!(a.expect("renamed"), renamed);

    b.send("join", json!("rust"));
    let welcome = b.expect("welcome");
    assert_eq!(
        (welcome["room"].clone(), welcome["online"].clone()),
        (json!("rust"), json!(["bob"]))
    );
    assert_eq!(a.expect("left"), json!({"room": "lobby", "nickname": "bob"}));

    let mut c = Client::connect(&server);
    let c_name = c.nickname();
    assert_eq!(a.expect("joined"), json!({"room": "lobby", "nickname": c_name}));
    c.send("join", json!("rust"));
    assert_eq!(
        c.expect("welcome")["online"],
        json!([c_name, "bob"]),
        "sorted case-insensitively"
    );
    assert_eq!(a.expect("left"), json!({"room": "lobby", "nickname": c_name}));
    assert_eq!(b.expect("joined"), json!({"room": "rust", "nickname": c_name}));

    c.close();
    assert_eq!(b.expect("left"), json!({"room": "rust", "nickname": c_name}));
    // a, in the lobby, heard nothing of that: its next message is b's return.
    b.send("join", json!("lobby"));
    b.expect("welcome");
    assert_eq!(a.expect("joined"), json!({"room": "lobby", "nickname": "bob"}));
}

#[test]
fn every_error_code_over_the_wire_and_the_connection_stays_open() {
    let server = TestServer::start(&[
        "--max-text-chars",
        "10",
        "--rate-limit",
        "0.001",
        "--rate-burst",
        "5",
        "--flood-limit",
        "100",
    ]);
    let mut holder = Client::connect(&server);
    holder.send("nickname", json!("alice"));
    holder.expect("renamed");

    let thirty_three = format!(r#"{{"type":"nickname","payload":"{}"}}"#, "x".repeat(33));
    let cases: &[(&str, &str)] = &[
        ("bad_json", "this is not JSON"),
        ("bad_json", r#"{"payload":"no type"}"#),
        ("bad_json", r#"["message","an array"]"#),
        ("unknown_type", r#"{"type":"shout","payload":"hi"}"#),
        ("bad_payload", r#"{"type":"message","payload":42}"#),
        ("bad_payload", r#"{"type":"message","payload":"   "}"#),
        ("bad_payload", r#"{"type":"nickname","payload":""}"#),
        ("bad_payload", r#"{"type":"nickname","payload":"a\u0007b"}"#),
        ("bad_payload", &thirty_three),
        ("bad_payload", r#"{"type":"join","payload":null}"#),
        ("bad_payload", r#"{"type":"history","payload":{"since":"41"}}"#),
        ("nickname_taken", r#"{"type":"nickname","payload":"ALICE"}"#),
        ("too_long", r#"{"type":"message","payload":"eleven char"}"#),
    ];
    for (code, input) in cases {
        let mut client = Client::connect(&server);
        client.send_raw(input);
        client.expect_error(code);
        // Still connected, still in the lobby under its default name.
        client.send("message", json!("still here"));
        client.expect("ack");
        client.close();
    }

    // rate_limited: the burst of 5 goes through, the 6th does not; the connection stays open.
    let mut client = Client::connect(&server);
    for n in 0..5 {
        client.post(&format!("{n}"));
    }
    client.send("message", json!("too fast"));
    client.expect_error("rate_limited");
    client.send("message", json!("still too fast"));
    client.expect_error("rate_limited");
}

#[test]
fn flooding_closes_with_1008() {
    let server = TestServer::start(&["--rate-limit", "0.001", "--rate-burst", "2", "--flood-limit", "3"]);
    let mut witness = Client::connect(&server);
    let mut flooder = Client::connect(&server);
    let flooder_name = flooder.nickname();
    witness.expect("joined");
    for n in 0..10 {
        flooder.send("message", json!(format!("flood {n}")));
    }
    let (code, reason, before) = flooder.expect_close();
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("flood"), "{reason}");
    let kinds: Vec<&str> = before
        .iter()
        .map(|message| message["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ack", "ack", "error", "error", "error"], "{before:?}");
    assert!(
        before[2..]
            .iter()
            .all(|error| error["payload"]["code"] == "rate_limited")
    );

    // The room got the two accepted messages, then the flooder left.
    assert_eq!(witness.expect("message")["text"], "flood 0");
    assert_eq!(witness.expect("message")["text"], "flood 1");
    assert_eq!(witness.expect("left")["nickname"], flooder_name.as_str());
}

#[test]
fn binary_frame_closes_with_1003() {
    let server = TestServer::start(&GENEROUS);
    let mut witness = Client::connect(&server);
    let mut client = Client::connect(&server);
    witness.expect("joined");
    client.post("text first");
    client.ws.send(Message::binary(vec![1, 2, 3])).unwrap();
    let (code, reason, before) = client.expect_close();
    assert_eq!(code, 1003, "{reason}");
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(witness.expect("message")["text"], "text first");
    assert_eq!(witness.expect("left")["nickname"], client.nickname().as_str());
    // The chat goes on.
    let mut other = Client::connect(&server);
    other.post("still up");
}

#[test]
fn slow_consumer_is_closed_with_1008_while_a_fast_one_gets_everything() {
    const CAP: usize = 65536;
    const BATCH: usize = 20;
    const MOST: usize = 10_000; // 18 MB: far more than loopback buffers hold.
    let cap = CAP.to_string();
    let mut args = GENEROUS.to_vec();
    args.extend(["--max-queued-output", &cap]);
    let server = TestServer::start(&args);

    // The slow one: a raw socket that completes the handshake and then reads nothing.
    let (mut slow, mut slow_pending) = raw_websocket(server.addr, "/");
    let mut fast = Client::connect(&server);
    let mut sender = Client::connect(&server);
    let sender_name = sender.nickname();
    fast.expect("joined");
    // Which nickname is the slow one's: the one that is neither of the others'.
    let slow_name = fast.welcome["online"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| name.as_str().unwrap().to_owned())
        .find(|name| *name != fast.nickname())
        .unwrap();

    // The fast one reads on its own thread and reports progress.
    let (progress_tx, progress_rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut texts = Vec::new();
        let mut slow_left = false;
        loop {
            let message = fast.recv();
            match message["type"].as_str().unwrap() {
                "message" => {
                    let text = message["payload"]["text"].as_str().unwrap().to_owned();
                    if text == "done" {
                        return (texts, slow_left);
                    }
                    texts.push(text);
                }
                "left" if message["payload"]["nickname"] == slow_name.as_str() => slow_left = true,
                _ => {}
            }
            let _ = progress_tx.send((texts.len(), slow_left));
        }
    });

    // 1800-character messages in batches; the next batch only when the fast one has the last, so it
    // never has more than a batch queued. Until the slow one is let go, with a bound.
    let text_of = |n: usize| format!("{n:06}{}", "x".repeat(1794));
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut sent, mut slow_left) = (0, false);
    while !slow_left && sent < MOST {
        for _ in 0..BATCH {
            sender.send("message", json!(text_of(sent)));
            sent += 1;
        }
        for _ in 0..BATCH {
            sender.skip_to("ack");
        }
        loop {
            let (received, left) = progress_rx
                .recv_timeout(READ_TIMEOUT)
                .expect("the fast client stalled");
            slow_left |= left;
            if received == sent {
                break;
            }
        }
        assert!(Instant::now() < deadline, "took too long");
    }
    assert!(
        slow_left,
        "the slow client was never let go after {sent} messages"
    );
    sender.post("done");
    let (fast_texts, _) = reader.join().unwrap();
    assert_eq!(fast_texts.len(), sent, "the fast client got every message");
    assert!(
        fast_texts.iter().enumerate().all(|(n, text)| *text == text_of(n)),
        "in order"
    );

    // Now the slow one reads: a prefix of the messages, in order, nothing skipped, then Close 1008.
    let mut slow_texts = Vec::new();
    let close = loop {
        let frame = read_server_frame(&mut slow, &mut slow_pending).expect("a Close before EOF");
        match frame.opcode {
            0x1 => {
                let message: Value = serde_json::from_slice(&frame.payload).unwrap();
                if message["type"] == "message" {
                    assert_eq!(message["payload"]["nickname"], sender_name.as_str());
                    slow_texts.push(message["payload"]["text"].as_str().unwrap().to_owned());
                }
            }
            0x8 => break frame,
            0x9 | 0xA => {}
            other => panic!("unexpected opcode {other}"),
        }
    };
    assert_eq!(close.close_code(), Some(1008));
    let reason = String::from_utf8_lossy(&close.payload[2..]).into_owned();
    assert!(reason.contains("slow consumer"), "{reason}");
    assert!(
        !slow_texts.is_empty() && slow_texts.len() < sent,
        "{} of {sent}",
        slow_texts.len()
    );
    assert!(
        slow_texts.iter().enumerate().all(|(n, text)| *text == text_of(n)),
        "a prefix, in order"
    );
    // Nothing after the Close but, once we answer it, the end of the stream.
    slow.write_all(&client_frame(true, 0, 0x8, &1008u16.to_be_bytes()))
        .unwrap();
    assert!(read_server_frame(&mut slow, &mut slow_pending).is_none());
}

/// `welcome` carries the room's history in one frame, which may alone exceed
/// `--max-queued-output`. The cap is about falling behind, so a frame that meets an empty queue is
/// always sent: a big history must not lock newcomers out of the room.
#[test]
fn a_welcome_larger_than_the_output_cap_is_still_delivered() {
    let mut args = GENEROUS.to_vec();
    args.extend(["--max-queued-output", "65536"]);
    let server = TestServer::start(&args);
    let mut spammer = Client::connect(&server);
    for _ in 0..100 {
        spammer.post(&"x".repeat(2000));
    }
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let (mut ws, _) = tungstenite::client(server.url("/"), stream).unwrap();
    match ws.read().expect("read") {
        Message::Text(text) => assert!(text.as_str().starts_with(r#"{"type":"welcome""#)),
        other => panic!("newcomer got {other:?} instead of welcome"),
    }
}
