//! Several real `wschat` processes sharing one real `redis-server`: one chat. Each test starts its
//! own Redis (Debian's `redis-server` on a free loopback port, a temporary directory, stopped by
//! its pid when the test ends) and its own nodes, so the tests are independent of each other.
//!
//! Ignored by default (they need `redis-server`); `tests/redis/run.sh` runs them.
#![allow(clippy::disallowed_methods)] // A program at the I/O edge: it reads the clock itself.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A throw-away `redis-server`, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Self {
        Self::start_with(&["--appendonly", "no"])
    }

    /// A server with `args` on top of: loopback, a free port, its own directory, no RDB saves.
    fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Self::start_in(dir, free_port(), args)
    }

    fn start_in(dir: tempfile::TempDir, port: u16, args: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (tests/redis/run.sh installs it)");
        let redis = Self { child, port, dir };
        redis.wait_until_up();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn wait_until_up(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// kill -9, and the same server started again on the same port and directory (its AOF, if it
    /// had one, read back).
    fn crash_and_restart(mut self, args: &[&str]) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (port, dir) = (
            self.port,
            std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()),
        );
        Self::start_in(dir, port, args)
    }

    fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// A wschat node on `redis`.
fn node(redis: &Redis, name: &str) -> TestServer {
    node_with(redis, name, &[])
}

/// A wschat node on `redis`, with `extra` flags.
fn node_with(redis: &Redis, name: &str, extra: &[&str]) -> TestServer {
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str(), "--node", name];
    args.extend(GENEROUS);
    args.extend(extra);
    TestServer::start(&args)
}

/// Polls `/readyz` of `server` until it answers `status` (at most 15 s: a reconnect backs off up to
/// 5 s).
fn wait_for_readyz(server: &TestServer, status: u16) {
    let start = Instant::now();
    loop {
        let (got, response) = http_exchange(
            server.addr,
            b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        if got == status {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "/readyz still {got}: {response}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// What one client of a room saw: its room, its number, the (id, text) of each message.
type Seen = (usize, usize, Vec<(u64, String)>);

/// Reads until `client` has `count` chat messages; returns their (id, text), notices skipped.
fn read_messages(client: &mut Client, count: usize) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let message = client.recv();
        if message["type"] == "message" {
            let payload = &message["payload"];
            seen.push((
                payload["id"].as_u64().unwrap(),
                payload["text"].as_str().unwrap().to_owned(),
            ));
        }
    }
    seen
}

#[test]
#[ignore = "needs redis-server: tests/redis/run.sh"]
fn a_message_posted_on_one_node_reaches_the_room_on_another() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = Client::connect(&a);
    let mut bob = Client::connect(&b);
    // Alice hears Bob arrive on the other node.
    let (joined, _) = alice.skip_to("joined");
    assert_eq!(joined["nickname"], bob.nickname().as_str());
    assert_ne!(
        alice.nickname(),
        bob.nickname(),
        "anonymous names are counted cluster-wide"
    );
    let id = alice.post("hello from a");
    let (message, _) = bob.read_until_message(&alice.nickname(), "hello from a");
    assert_eq!(message["id"].as_u64(), Some(id));
    // And back.
    let id_b = bob.post("hello from b");
    let (message, _) = alice.read_until_message(&bob.nickname(), "hello from b");
    assert_eq!(message["id"].as_u64(), Some(id_b));
    assert!(id_b > id);
}

#[test]
#[ignore = "needs redis-server: tests/redis/run.sh"]
fn thirty_clients_on_three_nodes_see_one_order_per_room() {
    const NODES: usize = 3;
    const ROOMS: usize = 3;
    const PER_ROOM: usize = 10;
    /// Each client's messages: 1,000 per room.
    const EACH: usize = 100;
    let redis = Redis::start();
    let nodes: Vec<TestServer> = (0..NODES).map(|n| node(&redis, &format!("n{n}"))).collect();
    // Client i is in room i % ROOMS, on node (i / ROOMS) % NODES: every room spans every node.
    let clients: Vec<(usize, Client)> = (0..ROOMS * PER_ROOM)
        .map(|i| {
            let mut client = Client::connect(&nodes[(i / ROOMS) % NODES]);
            let room = i % ROOMS;
            client.send("join", json!(format!("room{room}")));
            let _ = client.skip_to("welcome");
            (room, client)
        })
        .collect();
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(me, (room, mut client))| {
            thread::spawn(move || {
                for n in 0..EACH {
                    client.send("message", json!(format!("r{room}:c{me}:{n}")));
                }
                (room, me, read_messages(&mut client, (PER_ROOM - 1) * EACH))
            })
        })
        .collect();
    let results: Vec<Seen> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut rooms: Vec<std::collections::BTreeMap<u64, String>> = vec![Default::default(); ROOMS];
    for (room, me, seen) in &results {
        // One order: the room's ids, increasing, each once; only this room's, none of its own.
        let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
        assert!(
            ids.windows(2).all(|pair| pair[0] < pair[1]),
            "client {me}: in id order, each once"
        );
        assert!(
            seen.iter()
                .all(|(_, text)| text.starts_with(&format!("r{room}:")))
        );
        assert!(
            seen.iter()
                .all(|(_, text)| !text.starts_with(&format!("r{room}:c{me}:")))
        );
        for (id, text) in seen {
            let previous = rooms[*room].insert(*id, text.clone());
            assert!(
                previous.is_none_or(|previous| previous == *text),
                "one text per id everywhere"
            );
        }
    }
    for (room, messages) in rooms.iter().enumerate() {
        assert_eq!(
            messages.len(),
            PER_ROOM * EACH,
            "room {room}: every message, with one id each"
        );
    }
    // The same sequence for every client of a room: each client's sequence is the room's
    // sequence without its own messages.
    for (room, me, seen) in &results {
        let expected: Vec<&String> = rooms[*room]
            .values()
            .filter(|text| !text.starts_with(&format!("r{room}:c{me}:")))
            .collect();
        let got: Vec<&String> = seen.iter().map(|(_, text)| text).collect();
        assert_eq!(got, expected, "client {me}");
    }
}

#[test]
#[ignore = "needs redis-server: tests/redis/run.sh"]
fn a_nickname_is_held_by_one_client_in_the_whole_cluster() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = Client::connect(&a);
    let mut other = Client::connect(&b);
    alice.send("nickname", json!("Alice"));
    let _ = alice.skip_to("renamed");
    other.send("nickname", json!("ALICE"));
    other.expect_error("nickname_taken");
    // Released when she leaves: the other node can have it.
    alice.close();
    let start = Instant::now();
    loop {
        other.send("nickname", json!("alice"));
        let answer = loop {
            let message = other.recv();
            if message["type"] == "renamed" || message["type"] == "error" {
                break message;
            }
        };
        if answer["type"] == "renamed" && answer["payload"]["to"] == "alice" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{answer}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs redis-server: tests/redis/run.sh"]
fn history_and_resume_are_the_clusters() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = Client::connect(&a);
    alice.send("nickname", json!("alice"));
    let _ = alice.skip_to("renamed");
    let id = alice.post("remember me");
    let token = alice.welcome["resume"].as_str().unwrap().to_owned();
    // A newcomer on the other node finds it in its welcome.
    let newcomer = Client::connect(&b);
    let texts: Vec<&str> = newcomer.welcome["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|message| message["text"].as_str())
        .collect();
    assert!(texts.contains(&"remember me"), "{}", newcomer.welcome);
    // Alice's connection drops; she resumes on the other node and is alice again.
    alice.close();
    let mut back = Client::connect(&b);
    back.send("resume", json!(token));
    let (welcome, _) = back.skip_to("welcome");
    assert_eq!(welcome["nickname"], "alice", "{welcome}");
    back.send("history", json!({"since": id - 1}));
    let (history, _) = back.skip_to("history");
    assert_eq!(history["messages"][0]["text"], "remember me");
}

#[test]
#[ignore = "needs redis-server: tests/redis/run.sh"]
fn while_redis_is_down_sends_are_refused_and_sockets_stay_open_then_it_carries_on() {
    let redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = Client::connect(&a);
    let mut bob = Client::connect(&b);
    // Acked messages, the last one just before Redis is killed -9.
    let acked: Vec<u64> = (0..30).map(|n| alice.post(&format!("acked {n}"))).collect();
    let before = alice.post("before");
    let _ = bob.read_until_message(&alice.nickname(), "before");
    let redis = {
        let mut redis = redis;
        let _ = redis.child.kill();
        let _ = redis.child.wait();
        // Down: not ready for new clients, and a send is refused, never shown only here.
        wait_for_readyz(&a, 503);
        alice.send("message", json!("during"));
        let answer = alice.ack_or_error();
        assert_eq!(answer["type"], "error", "{answer}");
        assert_eq!(answer["payload"]["code"], "store_unavailable", "{answer}");
        // Back with its data (AOF, fsync always): the cluster carries on.
        let (port, dir) = (
            redis.port,
            std::mem::replace(&mut redis.dir, tempfile::tempdir().unwrap()),
        );
        Redis::start_in(dir, port, &["--appendonly", "yes", "--appendfsync", "always"])
    };
    wait_for_readyz(&a, 200);
    let start = Instant::now();
    let after = loop {
        alice.send("message", json!("after"));
        let answer = alice.ack_or_error();
        if answer["type"] == "ack" {
            break answer["payload"]["id"].as_u64().unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{answer}");
        thread::sleep(Duration::from_millis(200));
    };
    assert!(after > before, "no id reused: {after} after {before}");
    // Redis ran with appendfsync always: every acked message survived its kill -9.
    alice.send("history", json!({ "since": 0, "limit": 500 }));
    let (history, _) = alice.skip_to("history");
    let kept: Vec<u64> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|message| message["id"].as_u64())
        .collect();
    for id in acked.iter().chain([&before]) {
        assert!(kept.contains(id), "acked {id} lost: {kept:?}");
    }
    let (message, seen) = bob.read_until_message(&alice.nickname(), "after");
    assert_eq!(message["id"].as_u64(), Some(after));
    assert!(
        !seen.iter().any(|message| message["payload"]["text"] == "during"),
        "{seen:?}"
    );
    drop(redis);
}

#[test]
#[ignore = "needs redis-server: tests/redis/run.sh"]
fn redis_restarted_empty_is_a_new_epoch_and_clients_are_told() {
    let redis = Redis::start();
    let a = node(&redis, "a");
    let mut alice = Client::connect(&a);
    let epoch = alice.welcome["epoch"].as_str().unwrap().to_owned();
    alice.post("old history");
    let redis = redis.crash_and_restart(&["--appendonly", "no"]);
    // The node finds the data gone when it reconnects: a fresh welcome with another epoch.
    let (welcome, _) = alice.skip_to("welcome");
    assert_ne!(welcome["epoch"].as_str(), Some(epoch.as_str()), "{welcome}");
    assert_eq!(redis.cli(&["EXISTS", "wschat:epoch"]), "1");
}

#[test]
#[ignore = "needs redis-server: tests/redis/run.sh"]
fn a_killed_subscription_is_caught_up_without_a_hole() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = Client::connect(&a);
    let mut bob = Client::connect(&b);
    let mut ids = Vec::new();
    for n in 0..60 {
        if n == 20 || n == 40 {
            redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        }
        ids.push(alice.post(&format!("m{n}")));
    }
    let seen: Vec<u64> = read_messages(&mut bob, ids.len())
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(seen, ids, "bob saw every message once, in order");
}

#[test]
#[ignore = "needs redis-server: tests/redis/run.sh"]
fn two_processes_share_one_port_with_reuse_port() {
    let redis = Redis::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let url = redis.url();
    let args = |name: &'static str| {
        let mut args = vec![
            "--listen",
            listen.as_str(),
            "--reuse-port",
            "--redis",
            url.as_str(),
            "--node",
            name,
        ];
        args.extend(GENEROUS);
        args
    };
    let a = TestServer::start(&args("a"));
    let b = TestServer::start(&args("b"));
    assert_eq!(a.addr, b.addr);
    // The kernel spreads connections over both: enough clients that both get some.
    let mut clients: Vec<Client> = (0..24).map(|_| Client::connect(&a)).collect();
    let served = |server: &TestServer| {
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains("open / (Chat)"))
            .count()
    };
    assert!(
        served(&a) > 0 && served(&b) > 0,
        "a: {}, b: {}",
        served(&a),
        served(&b)
    );
    // And they are one chat.
    let last = clients.len() - 1;
    let sender = clients[0].nickname();
    let id = clients[0].post("one room");
    let (message, _) = clients[last].read_until_message(&sender, "one room");
    assert_eq!(message["id"].as_u64(), Some(id));
}

#[test]
#[ignore = "needs redis-server: tests/redis/run.sh"]
fn two_nodes_race_for_one_nickname_and_exactly_one_wins_each_time() {
    const ROUNDS: usize = 500;
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let racers: Vec<_> = [Client::connect(&a), Client::connect(&b)]
        .into_iter()
        .map(|mut client| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut won = Vec::new();
                let mut name = client.nickname();
                for round in 0..ROUNDS {
                    barrier.wait();
                    client.send("nickname", json!(format!("race{round}")));
                    // Its own answer: `renamed` from its own name (not the notice of the other's
                    // rename), or `nickname_taken`.
                    let answer = loop {
                        let message = client.recv();
                        let mine = message["type"] == "error"
                            || (message["type"] == "renamed" && message["payload"]["from"] == name.as_str());
                        if mine {
                            break message;
                        }
                    };
                    if answer["type"] == "renamed" {
                        name = answer["payload"]["to"].as_str().unwrap().to_owned();
                        assert_eq!(name, format!("race{round}"));
                    }
                    won.push(answer["type"] == "renamed");
                    if answer["type"] == "error" {
                        assert_eq!(answer["payload"]["code"], "nickname_taken", "{answer}");
                    }
                }
                won
            })
        })
        .collect();
    let results: Vec<Vec<bool>> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    for (round, (a_won, b_won)) in results[0].iter().zip(&results[1]).enumerate() {
        assert!(a_won ^ b_won, "round {round}: a won {a_won}, b won {b_won}");
    }
}

#[test]
#[ignore = "needs redis-server: tests/redis/run.sh"]
fn a_killed_nodes_clients_resume_elsewhere_and_its_names_come_free() {
    let redis = Redis::start();
    let mut a = node(&redis, "a");
    let b = node(&redis, "b");
    let mut alice = Client::connect(&a);
    alice.send("nickname", json!("alice"));
    let _ = alice.skip_to("renamed");
    let mut carol = Client::connect(&a);
    carol.send("nickname", json!("carol"));
    let _ = carol.skip_to("renamed");
    let mut dave = Client::connect(&a);
    dave.send("nickname", json!("dave"));
    let _ = dave.skip_to("renamed");
    let seen = alice.post("before the crash");
    let token = alice.welcome["resume"].as_str().unwrap().to_owned();
    let mut bob = Client::connect(&b);
    // Node a dies: no goodbye, its leases and presence stay in Redis until they expire.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let missed = bob.post("while alice was away");
    // Alice reconnects to b with her token: her name (taken over from the dead session's lease)
    // and what she missed.
    let mut back = Client::connect(&b);
    back.send("resume", json!(token));
    let (welcome, _) = back.skip_to("welcome");
    assert_eq!(welcome["nickname"], "alice", "{welcome}");
    back.send("history", json!({ "since": seen }));
    let (history, _) = back.skip_to("history");
    let ids: Vec<u64> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|message| message["id"].as_u64())
        .collect();
    assert_eq!(ids, [missed], "{history}");
    // Carol did not come back: her name is free within the lease's life.
    let start = Instant::now();
    let mut heard = Vec::new();
    loop {
        bob.send("nickname", json!("carol"));
        let answer = loop {
            let message = bob.recv();
            if message["type"] == "error"
                || (message["type"] == "renamed" && message["payload"]["to"] == "carol")
            {
                break message;
            }
            heard.push(message);
        };
        if answer["type"] == "renamed" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(12), "still taken: {answer}");
        thread::sleep(Duration::from_millis(250));
    }
    let freed = start.elapsed();
    assert!(
        freed > Duration::from_secs(2),
        "a dead node's lease outlives it for a while: {freed:?}"
    );
    // And the room is told Dave (who did not come back either, and whose name nobody took) left,
    // once the dead node's liveness key expired.
    let left = |message: &Value| message["type"] == "left" && message["payload"]["nickname"] == "dave";
    while !heard.iter().any(left) {
        assert!(
            start.elapsed() < Duration::from_secs(16),
            "no `left` for dave: {heard:?}"
        );
        heard.push(bob.recv());
    }
    drop((carol, dave));
}

#[test]
#[ignore = "needs redis-server: tests/redis/run.sh"]
fn a_paused_redis_delays_but_loses_nothing() {
    let redis = Redis::start_with(&["--appendonly", "no", "--enable-debug-command", "yes"]);
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut alice = Client::connect(&a);
    let mut bob = Client::connect(&b);
    let port = redis.port.to_string();
    let mut ids = Vec::new();
    let mut sleeper = None;
    for n in 0..40 {
        if n == 10 {
            // Redis stops answering for a second (under the reply timeout): everything waits.
            let port = port.clone();
            sleeper = Some(thread::spawn(move || {
                Command::new("redis-cli")
                    .args(["-p", &port, "DEBUG", "SLEEP", "1"])
                    .stdout(Stdio::null())
                    .status()
                    .expect("redis-cli")
            }));
            thread::sleep(Duration::from_millis(100));
        }
        ids.push(alice.post(&format!("p{n}")));
    }
    let seen: Vec<u64> = read_messages(&mut bob, ids.len())
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(seen, ids);
    assert!(sleeper.expect("the pause ran").join().unwrap().success());
}

#[test]
fn an_unreachable_redis_stops_the_start_with_one_line() {
    let port = free_port().to_string();
    let url = format!("redis://127.0.0.1:{port}");
    let (status, log) = run_to_exit(&["--redis", &url], Duration::from_secs(20));
    assert!(!status.success());
    let errors: Vec<&String> = log.iter().filter(|line| line.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{log:?}");
    assert!(errors[0].contains("Connection refused"), "{}", errors[0]);
}

#[test]
fn a_server_that_is_not_redis_stops_the_start_with_one_line() {
    // A wschat (HTTP) where Redis should be.
    let not_redis = TestServer::start(&[]);
    let url = format!("redis://{}", not_redis.addr);
    let (status, log) = run_to_exit(&["--redis", &url], Duration::from_secs(20));
    assert!(!status.success());
    let errors: Vec<&String> = log.iter().filter(|line| line.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{log:?}");
    assert!(errors[0].contains("no usable Redis"), "{}", errors[0]);
}

#[test]
fn a_url_that_is_not_redis_stops_the_start() {
    let (status, log) = run_to_exit(&["--redis", "http://127.0.0.1:6379"], Duration::from_secs(10));
    assert!(!status.success());
    assert!(log.iter().any(|line| line.contains("redis://")), "{log:?}");
}

#[test]
#[ignore = "needs redis-server: tests/redis/run.sh"]
fn a_hole_the_history_no_longer_holds_is_said_never_silent() {
    // Rooms keep 5 messages (Redis trims whole stream nodes, so a few hundred in practice).
    let redis = Redis::start();
    let keep = ["--retain-messages", "5"];
    let (a, b) = (node_with(&redis, "a", &keep), node_with(&redis, "b", &keep));
    let mut alice = Client::connect(&a);
    let mut bob = Client::connect(&b);
    let _ = alice.skip_to("joined");
    // Bob's node stops hearing announcements while Alice posts far more than the room keeps.
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    const POSTS: usize = 600;
    for n in 0..POSTS {
        alice.send("message", json!(format!("flood {n}")));
    }
    let mut acked = Vec::new();
    while acked.len() < POSTS {
        let message = alice.recv();
        if message["type"] == "ack" {
            acked.push(message["payload"]["id"].as_u64().unwrap());
        }
    }
    let last = *acked.last().unwrap();
    // Bob sees each message or is told it is gone: every acked id is shown or inside a `missed`.
    let (mut shown, mut missed) = (Vec::new(), Vec::new());
    while shown.last() != Some(&last) {
        let message = bob.recv();
        match message["type"].as_str() {
            Some("message") => shown.push(message["payload"]["id"].as_u64().unwrap()),
            Some("missed") => missed.push((
                message["payload"]["after"].as_u64().unwrap(),
                message["payload"]["until"].as_u64().unwrap(),
            )),
            _ => {}
        }
    }
    assert!(
        shown.windows(2).all(|pair| pair[0] < pair[1]),
        "in order, each once"
    );
    for id in &acked {
        let said = shown.contains(id) || missed.iter().any(|(after, until)| after < id && id <= until);
        assert!(
            said,
            "message {id} neither shown nor said missed: missed {missed:?}"
        );
    }
    eprintln!("shown {} of {POSTS}, missed ranges {missed:?}", shown.len());
}
