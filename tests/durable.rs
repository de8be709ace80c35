//! The durable chat over the wire: the real binary on a database file in a temporary directory,
//! stopped (SIGTERM), killed (SIGKILL) and restarted on it, starved of disk, and pointed at files
//! that are not its store. README, "What is kept, and what is guaranteed", seen from the outside.
//!
//! Absence ("nobody saw that") is shown as in `tests/chat.rs`: after the step under test a marker
//! is posted and read up to; the server answers in order, so anything the step sent came first.
#![allow(clippy::disallowed_methods)] // A program at the I/O edge: it reads the clock itself.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::{Value, json};
use tempfile::TempDir;
use tungstenite::Message;

/// How long a start that must fail may take, and a clean stop.
const EXIT_WAIT: Duration = Duration::from_secs(10);

fn temp_dir() -> TempDir {
    tempfile::tempdir().expect("temporary directory")
}

fn db_in(dir: &TempDir) -> PathBuf {
    dir.path().join("chat.db")
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// `wschat --db <db>` with limits no test trips, and `extra`.
fn start_on(db: &Path, extra: &[&str]) -> TestServer {
    TestServer::start(&server_args(db, extra))
}

fn server_args<'a>(db: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = GENEROUS.to_vec();
    args.extend(["--db", path_arg(db)]);
    args.extend(extra);
    args
}

/// SIGKILL: no shutdown, no destructor, no checkpoint.
fn kill_9(mut server: TestServer) {
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("wait for the killed server");
}

/// SIGTERM, and the server must exit 0.
fn stop(mut server: TestServer) {
    let status = server
        .signal_and_wait("TERM", EXIT_WAIT)
        .expect("the server exits after SIGTERM");
    assert!(status.success(), "{status}");
}

fn id_of(value: &Value) -> u64 {
    value["id"].as_u64().unwrap_or_else(|| panic!("no id in {value}"))
}

fn text_of(message: &Value) -> String {
    message["text"].as_str().expect("text").to_owned()
}

/// The client's room from the oldest message on, one `history` page at a time (`since` the last
/// id of the previous page while `more` says there is more); ids must increase throughout.
fn whole_history(client: &mut Client) -> Vec<Value> {
    const PAGE: usize = 500;
    let mut messages: Vec<Value> = Vec::new();
    loop {
        let since = messages.last().map_or(0, id_of);
        client.send("history", json!({"since": since, "limit": PAGE}));
        let (page, before) = client.skip_to("history");
        assert!(before.iter().all(is_notice), "{before:?}");
        let batch = page["messages"].as_array().expect("messages").clone();
        assert!(batch.len() <= PAGE, "a page of {}", batch.len());
        messages.extend(batch);
        if page["more"] != json!(true) {
            break;
        }
    }
    assert!(
        messages.windows(2).all(|pair| id_of(&pair[0]) < id_of(&pair[1])),
        "history ids increase"
    );
    messages
}

/// Posts `{"text", "key"}` and returns its `ack`, which must name the key.
fn post_keyed(client: &mut Client, text: &str, key: &str) -> u64 {
    client.send("message", json!({"text": text, "key": key}));
    let (ack, before) = client.skip_to("ack");
    assert!(before.iter().all(is_notice), "{before:?}");
    assert_eq!(ack["key"], key, "{ack}");
    id_of(&ack)
}

// ---- kill -9 during a burst ----

const WRITERS: usize = 5;
const EACH: usize = 2_000;
/// Messages each writer keeps sent but unanswered: enough that the kill lands on some in flight.
const IN_FLIGHT: usize = 8;
/// Acks, all writers together, after which the server is killed: well inside the burst.
const KILL_AFTER_ACKS: usize = 3_000;
/// The burst is not pruned under the test, and no writer, busy sending, is let go as a slow reader.
const BURST_SERVER_ARGS: [&str; 4] = ["--retain-messages", "1000000", "--max-queued-output", "67108864"];

fn key_prefix(writer: usize) -> String {
    format!("w{writer}-")
}

fn burst_key(writer: usize, n: usize) -> String {
    format!("{}{n}", key_prefix(writer))
}

fn burst_text(writer: usize, n: usize) -> String {
    format!("burst from writer {writer}, message {n}")
}

/// Which of a writer's messages an `ack` answers, from the key it echoes.
fn burst_number(writer: usize, ack: &Value) -> usize {
    let key = ack["key"]
        .as_str()
        .unwrap_or_else(|| panic!("an ack without its key: {ack}"));
    key.strip_prefix(&key_prefix(writer))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("writer {writer} got the ack of another's key: {ack}"))
}

/// Sends `numbers` (keyed messages of `writer`) keeping [`IN_FLIGHT`] unanswered, and records
/// what comes back, until every one is acked or the connection ends. Returns number → acked id,
/// and the other writers' messages as received.
fn send_keyed(
    client: &mut Client,
    writer: usize,
    numbers: &[usize],
    acks: &AtomicUsize,
) -> (BTreeMap<usize, u64>, Vec<Value>) {
    let (mut acked, mut received) = (BTreeMap::new(), Vec::new());
    let (mut next, mut in_flight) = (0, 0);
    loop {
        while in_flight < IN_FLIGHT && next < numbers.len() {
            let n = numbers[next];
            let payload = json!({"text": burst_text(writer, n), "key": burst_key(writer, n)});
            let frame = json!({"type": "message", "payload": payload}).to_string();
            if client.ws.send(Message::text(frame)).is_err() {
                return (acked, received); // the server is gone
            }
            next += 1;
            in_flight += 1;
        }
        if in_flight == 0 {
            return (acked, received);
        }
        let message: Value = match client.ws.read() {
            Ok(Message::Text(text)) => serde_json::from_str(text.as_str()).expect("JSON"),
            Ok(Message::Close(_)) | Err(_) => return (acked, received),
            Ok(_) => continue,
        };
        match message["type"].as_str().unwrap_or_default() {
            "ack" => {
                let n = burst_number(writer, &message["payload"]);
                let earlier = acked.insert(n, id_of(&message["payload"]));
                assert_eq!(earlier, None, "writer {writer}: message {n} acked twice");
                in_flight -= 1;
                acks.fetch_add(1, Ordering::Relaxed);
            }
            "message" => received.push(message["payload"].clone()),
            _ if is_notice(&message) => {}
            _ => panic!("writer {writer}: {message}"),
        }
    }
}

/// After the restart: `writer` sends `numbers` again on a new connection, then a marker, and reads
/// until it has every other writer's marker. Returns number → acked id, and the other writers'
/// messages it received.
fn resend(mut client: Client, writer: usize, numbers: &[usize]) -> (BTreeMap<usize, u64>, Vec<Value>) {
    let (acked, mut received) = send_keyed(&mut client, writer, numbers, &AtomicUsize::new(0));
    assert_eq!(acked.len(), numbers.len(), "writer {writer}: every resend acked");
    // Its messages are all stored now, so its marker comes after them in the store's order: once
    // a writer has every other writer's marker, it has every broadcast of theirs.
    client.send("message", json!(marker(writer)));
    let mut waiting: HashSet<String> = (0..WRITERS).filter(|w| *w != writer).map(marker).collect();
    // A quicker writer's marker may have come while this one was still sending.
    received.retain(|message| !waiting.remove(&text_of(message)));
    let mut marker_acked = false;
    while !(marker_acked && waiting.is_empty()) {
        let message = client.recv();
        match message["type"].as_str().unwrap_or_default() {
            "ack" if !marker_acked => marker_acked = true,
            "message" if waiting.remove(&text_of(&message["payload"])) => {}
            "message" => received.push(message["payload"].clone()),
            _ if is_notice(&message) => {}
            _ => panic!("writer {writer}: {message}"),
        }
    }
    (acked, received)
}

fn marker(writer: usize) -> String {
    format!("writer {writer} is done")
}

#[test]
fn kill_9_during_a_burst_loses_no_ack_ids_continue_and_resent_keys_count_once() {
    let dir = temp_dir();
    let db = db_in(&dir);
    let server = start_on(&db, &BURST_SERVER_ARGS);
    let clients: Vec<Client> = (0..WRITERS).map(|_| Client::connect(&server)).collect();
    let acks = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(writer, mut client)| {
            let acks = Arc::clone(&acks);
            thread::spawn(move || {
                let all: Vec<usize> = (0..EACH).collect();
                send_keyed(&mut client, writer, &all, &acks).0
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks.load(Ordering::Relaxed) < KILL_AFTER_ACKS {
        assert!(
            Instant::now() < deadline,
            "only {} acks",
            acks.load(Ordering::Relaxed)
        );
        thread::sleep(Duration::from_millis(1));
    }
    kill_9(server);
    let acked: Vec<BTreeMap<usize, u64>> = writers.into_iter().map(|writer| writer.join().unwrap()).collect();
    let total_acked: usize = acked.iter().map(BTreeMap::len).sum();
    assert!(
        total_acked < WRITERS * EACH,
        "the kill came after the burst had ended"
    );

    // Restarted on the same file: every acked id holds its text.
    let server = start_on(&db, &BURST_SERVER_ARGS);
    let mut reader = Client::connect(&server);
    let kept = whole_history(&mut reader);
    let kept_ids: HashMap<String, u64> = kept
        .iter()
        .map(|message| (text_of(message), id_of(message)))
        .collect();
    assert_eq!(kept_ids.len(), kept.len(), "a text stored twice");
    for (writer, acked) in acked.iter().enumerate() {
        for (&n, &id) in acked {
            assert_eq!(
                kept_ids.get(&burst_text(writer, n)),
                Some(&id),
                "writer {writer}'s acked message {n} (id {id})"
            );
        }
    }
    // The welcome shows the newest of them, as the store has them.
    let shown = reader.welcome["history"].as_array().unwrap();
    assert_eq!(shown[..], kept[kept.len() - shown.len()..]);
    // New ids continue above everything stored, acked or not.
    let last_kept = kept.last().map_or(0, id_of);
    let after_restart = reader.post("the first message after the restart");
    assert!(after_restart > last_kept, "{after_restart} after {last_kept}");
    reader.close();

    // Every writer, on a new connection, sends again whatever it has no ack for.
    let unacked: Vec<Vec<usize>> = acked
        .iter()
        .map(|acked| (0..EACH).filter(|n| !acked.contains_key(n)).collect())
        .collect();
    let clients: Vec<Client> = (0..WRITERS).map(|_| Client::connect(&server)).collect();
    let resenders: Vec<_> = clients
        .into_iter()
        .zip(unacked.clone())
        .enumerate()
        .map(|(writer, (client, numbers))| thread::spawn(move || resend(client, writer, &numbers)))
        .collect();
    let resent: Vec<(BTreeMap<usize, u64>, Vec<Value>)> = resenders
        .into_iter()
        .map(|writer| writer.join().unwrap())
        .collect();

    // A key stored before the crash keeps its id and is not shown again; the others are new.
    let mut newly_stored: Vec<Vec<(u64, String)>> = vec![Vec::new(); WRITERS];
    let mut stored_unacked = 0;
    for (writer, (acked, _)) in resent.iter().enumerate() {
        for (&n, &id) in acked {
            match kept_ids.get(&burst_text(writer, n)) {
                Some(&original) => {
                    assert_eq!(id, original, "writer {writer}'s message {n} keeps its id");
                    stored_unacked += 1;
                }
                None => {
                    assert!(id > after_restart, "writer {writer}'s message {n}: {id}");
                    newly_stored[writer].push((id, burst_text(writer, n)));
                }
            }
        }
    }
    // Each writer saw every other writer's new messages once, in id order, and nothing else.
    for (writer, (_, received)) in resent.iter().enumerate() {
        let got: Vec<(u64, String)> = received
            .iter()
            .map(|message| (id_of(message), text_of(message)))
            .collect();
        let mut expected: Vec<(u64, String)> = (0..WRITERS)
            .filter(|other| *other != writer)
            .flat_map(|other| newly_stored[other].clone())
            .collect();
        expected.sort();
        assert_eq!(got, expected, "what writer {writer} saw after the restart");
    }

    // In the end the room holds every message of the burst exactly once.
    let mut reader = Client::connect(&server);
    let everything = whole_history(&mut reader);
    let mut count: HashMap<String, usize> = HashMap::new();
    for message in &everything {
        *count.entry(text_of(message)).or_default() += 1;
    }
    for writer in 0..WRITERS {
        for n in 0..EACH {
            assert_eq!(
                count.get(&burst_text(writer, n)),
                Some(&1),
                "writer {writer}'s message {n}"
            );
        }
    }
    assert_eq!(
        everything.len(),
        WRITERS * EACH + 1 + WRITERS,
        "the burst, the post after the restart and the markers"
    );
    eprintln!(
        "{total_acked} acked before the kill, {} kept (of which {stored_unacked} unacked), {} resent",
        kept.len(),
        unacked.iter().map(Vec::len).sum::<usize>()
    );
}

// ---- a failing disk ----

/// The soft file-size limit the store is started under: the new store fits, a few dozen long
/// messages more do not.
const FILE_SIZE_LIMIT: u64 = 256 * 1024;

/// The status of `GET path` (the health and readiness probes).
fn probe(server: &TestServer, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    http_exchange(server.addr, request.as_bytes()).0
}

/// Fails the test (never skips it) where util-linux's `prlimit` is missing.
fn require_prlimit() {
    let found = Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "this test needs prlimit(1) to limit the server's file size: install util-linux"
    );
}

#[test]
fn a_failing_disk_gives_store_unavailable_and_the_server_keeps_serving() {
    require_prlimit();
    let dir = temp_dir();
    let db = db_in(&dir);
    let limit = format!("--fsize={FILE_SIZE_LIMIT}:");
    let mut server = TestServer::start_under(&["prlimit", &limit, "--"], &server_args(&db, &[]));
    let mut poster = Client::connect(&server);
    let mut witness = Client::connect(&server);
    poster.expect("joined");

    // Long messages until the write-ahead log reaches the limit.
    let long = |n: usize| format!("{n:04} {}", "x".repeat(1900));
    let mut stored: Vec<String> = Vec::new();
    loop {
        assert!(stored.len() < 400, "the store never failed under {limit}");
        let text = long(stored.len());
        poster.send("message", json!(text));
        let answer = poster.ack_or_error();
        if answer["type"] == "ack" {
            stored.push(text);
        } else {
            assert_eq!(answer["payload"]["code"], "store_unavailable", "{answer}");
            break;
        }
    }
    assert!(!stored.is_empty(), "the first message already failed");
    // While the limit holds, every message is refused, a keyed one too.
    let refused_key = "sent while the disk was full";
    poster.send("message", json!({"text": "keyed, refused", "key": refused_key}));
    poster.expect_error("store_unavailable");
    for n in 0..3 {
        poster.send("message", json!(format!("refused {n}")));
        poster.expect_error("store_unavailable");
    }
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "the server died"
    );
    // A load balancer is told not to send new clients here, while the loop itself is alive.
    assert_eq!(probe(&server, "/readyz"), 503);
    assert_eq!(probe(&server, "/healthz"), 200);

    // Everything that needs no write still works.
    poster.send("nickname", json!("poster"));
    poster.expect("renamed");
    let mut newcomer = Client::connect(&server);
    let shown = texts(&newcomer.welcome["history"]);
    assert_eq!(shown, stored[stored.len() - shown.len()..]);
    newcomer.send("history", json!({"since": 0, "limit": 500}));
    assert_eq!(texts(&newcomer.expect("history")["messages"]), stored);
    newcomer.send("join", json!("elsewhere"));
    let welcome = newcomer.expect("welcome");
    assert_eq!(
        (&welcome["room"], &welcome["history"]),
        (&json!("elsewhere"), &json!([]))
    );
    newcomer.send("nickname", json!("newcomer"));
    newcomer.expect("renamed");

    // The disk "comes back": messages are accepted again, and a refused key was never used.
    let status = Command::new("prlimit")
        .args(["--pid", &server.pid().to_string(), "--fsize=unlimited:"])
        .status()
        .expect("prlimit runs");
    assert!(status.success(), "raising the limit: {status}");
    poster.post("the disk is back");
    assert_eq!(probe(&server, "/readyz"), 200);
    let resent = post_keyed(&mut poster, "keyed, sent again", refused_key);

    // The room saw exactly the stored messages: nothing refused.
    let (message, before) = witness.read_until_message("poster", "keyed, sent again");
    assert_eq!(id_of(&message), resent);
    let seen: Vec<String> = before
        .iter()
        .filter(|message| message["type"] == "message")
        .map(|message| text_of(&message["payload"]))
        .collect();
    let mut kept = stored.clone();
    kept.extend(["the disk is back".to_owned(), "keyed, sent again".to_owned()]);
    assert_eq!(seen, kept[..kept.len() - 1]);
    witness.send("history", json!({"since": 0, "limit": 500}));
    assert_eq!(texts(&witness.expect("history")["messages"]), kept);
    assert!(
        server
            .wait_for_log("messages failed", Duration::from_secs(5))
            .is_some(),
        "the failures were logged"
    );
}

// ---- files that are not a store to start on ----

/// Every file in `dir` with its bytes and modification time.
fn snapshot(dir: &Path) -> BTreeMap<OsString, (Vec<u8>, SystemTime)> {
    std::fs::read_dir(dir)
        .expect("read the directory")
        .map(|entry| {
            let entry = entry.expect("directory entry");
            let modified = entry.metadata().and_then(|meta| meta.modified()).expect("mtime");
            let bytes = std::fs::read(entry.path()).expect("read the file");
            (entry.file_name(), (bytes, modified))
        })
        .collect()
}

/// Starting on `db` must fail with one logged line that names the file and says `problem`,
/// leaving every file in its directory as it was.
#[track_caller]
fn assert_start_refused(db: &Path, problem: &str) {
    let dir = db.parent().expect("a directory");
    let before = snapshot(dir);
    let (status, log) = run_to_exit(&["--db", path_arg(db)], EXIT_WAIT);
    assert!(!status.success(), "{status}: {log:?}");
    assert_eq!(log.len(), 1, "one line: {log:#?}");
    let line = &log[0];
    assert!(line.contains("ERROR") && line.contains("cannot start"), "{line}");
    assert!(line.contains(path_arg(db)), "names the file: {line}");
    assert!(line.contains(problem), "says {problem:?}: {line}");
    assert!(snapshot(dir) == before, "the files were changed");
}

#[test]
fn a_file_that_is_not_a_database_stops_the_start_with_one_line() {
    let dir = temp_dir();
    let db = db_in(&dir);
    std::fs::write(&db, "these are somebody's notes, not a database\n".repeat(200)).unwrap();
    assert_start_refused(&db, "is not a database");
}

#[test]
fn a_database_in_use_by_a_running_server_stops_a_second_start_with_one_line() {
    let dir = temp_dir();
    let db = db_in(&dir);
    let first = start_on(&db, &[]);
    let mut client = Client::connect(&first);
    client.post("before the second start");
    assert_start_refused(&db, "in use by another running wschat");
    // The first server is untouched by the attempt.
    client.post("after the second start");
}

#[test]
fn a_database_of_another_program_stops_the_start_with_one_line() {
    let dir = temp_dir();
    let db = db_in(&dir);
    let other = rusqlite::Connection::open(&db).unwrap();
    other
        .execute_batch(
            "CREATE TABLE recipes (name TEXT PRIMARY KEY, steps TEXT);
             INSERT INTO recipes VALUES ('bread', 'flour, water, salt, time');",
        )
        .unwrap();
    drop(other);
    assert_start_refused(&db, "a database of another program");
}

#[test]
fn a_database_of_a_newer_schema_stops_the_start_with_one_line() {
    let dir = temp_dir();
    let db = db_in(&dir);
    let server = start_on(&db, &[]);
    Client::connect(&server).post("written by this wschat");
    stop(server);
    let newer = rusqlite::Connection::open(&db).unwrap();
    newer.pragma_update(None, "user_version", 99).unwrap();
    drop(newer);
    assert_start_refused(&db, "schema version 99, newer than");
}

// ---- restarts ----

#[test]
fn restart_on_the_same_database_keeps_history_and_epoch_and_ids_continue() {
    let dir = temp_dir();
    let db = db_in(&dir);
    let server = start_on(&db, &[]);
    let mut alice = Client::connect(&server);
    let epoch = alice.welcome["epoch"].as_str().unwrap().to_owned();
    assert!(
        epoch.len() == 16 && epoch.bytes().all(|byte| byte.is_ascii_hexdigit()),
        "{epoch}"
    );
    for text in ["one", "two", "three"] {
        alice.post(text);
    }
    alice.send("history", json!({"since": 0}));
    let posted = alice.expect("history")["messages"].clone();
    stop(server);

    let server = start_on(&db, &[]);
    let mut bob = Client::connect(&server);
    assert_eq!(bob.welcome["epoch"], epoch.as_str());
    assert_eq!(
        bob.welcome["history"], posted,
        "every field, as before the restart"
    );
    let last = posted.as_array().unwrap().last().map(id_of).unwrap();
    assert!(bob.post("four") > last);
}

#[test]
fn a_new_database_has_another_epoch() {
    let epochs: Vec<Value> = (0..2)
        .map(|_| {
            let dir = temp_dir();
            let server = start_on(&db_in(&dir), &[]);
            Client::connect(&server).welcome["epoch"].clone()
        })
        .collect();
    assert_ne!(epochs[0], epochs[1]);
}

#[test]
fn a_key_acked_before_a_crash_gets_the_same_id_after_the_restart() {
    let dir = temp_dir();
    let db = db_in(&dir);
    let server = start_on(&db, &[]);
    let mut alice = Client::connect(&server);
    alice.send("nickname", json!("alice"));
    alice.expect("renamed");
    let id = post_keyed(&mut alice, "exactly once", "k-17");
    kill_9(server);

    let server = start_on(&db, &[]);
    let mut witness = Client::connect(&server);
    let mut alice = Client::connect(&server);
    alice.send("nickname", json!("alice"));
    alice.expect("renamed");
    // The same send again, and the same key with another text: both name the message stored.
    assert_eq!(post_keyed(&mut alice, "exactly once", "k-17"), id);
    assert_eq!(post_keyed(&mut alice, "another text", "k-17"), id);
    alice.post("marker");
    let (_, before) = witness.read_until_message("alice", "marker");
    assert!(before.iter().all(is_notice), "shown again: {before:?}");
    witness.send("history", json!({"since": 0}));
    assert_eq!(
        texts(&witness.expect("history")["messages"]),
        ["exactly once", "marker"]
    );
}

// ---- resume ----

#[test]
fn resume_takes_over_a_dropped_connection_which_is_closed_with_4001() {
    let server = TestServer::start(&GENEROUS);
    let mut old = Client::connect(&server);
    old.send("nickname", json!("alice"));
    old.expect("renamed");
    old.send("join", json!("rust"));
    let old_welcome = old.expect("welcome");
    let token = old_welcome["resume"].as_str().unwrap().to_owned();
    let mut witness = Client::connect(&server);
    witness.send("join", json!("rust"));
    witness.skip_to("welcome");

    // `old`'s network "drops": its socket stays open, but nothing more goes over it.
    let mut new = Client::connect(&server);
    new.send("resume", json!(token));
    let (welcome, before) = new.skip_to("welcome");
    assert!(before.iter().all(is_notice), "{before:?}");
    assert_eq!(
        (&welcome["nickname"], &welcome["room"]),
        (&json!("alice"), &json!("rust"))
    );
    let mut online = vec!["alice".to_owned(), witness.nickname()];
    online.sort_by_key(|name| name.to_lowercase());
    assert_eq!(welcome["online"], json!(online));
    assert_eq!(welcome["epoch"], old_welcome["epoch"]);
    assert_ne!(welcome["resume"], old_welcome["resume"], "a token works once");

    let (code, reason, _) = old.expect_close();
    assert_eq!((code, reason.as_str()), (4001, "resumed by a new connection"));
    // Once the old connection is fully closed, the room has still heard nobody leave or join.
    loop {
        match old.ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(error) => panic!("closing the old connection: {error}"),
        }
    }
    new.post("back");
    let (message, before) = witness.read_until_message("alice", "back");
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(message["room"], "rust");

    // The spent token resumes nothing.
    let mut late = Client::connect(&server);
    late.send("resume", json!(token));
    late.expect_error("resume_failed");
}
