//! The Redis layer against a real Redis server, over real TCP.
//!
//! Ignored by default: `tests/redis/run.sh` starts a throw-away `redis-server` and runs these with
//! `WSCHAT_REDIS_URL=redis://127.0.0.1:PORT -- --ignored --test-threads=1` (one at a time: some
//! flush scripts or kill connections, which would disturb a neighbour).
//!
//! The driver below is the event loop in miniature: blocking connect, non-blocking reads polled
//! every millisecond, the link's actions, output and timers. Each test uses its own key prefix.
#![allow(clippy::disallowed_methods)] // A program at the I/O edge: it reads the clock itself.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use wschat::store::memory::MemoryStore;
use wschat::store::redis::link::LinkState;
use wschat::store::redis::resp::{self, Decoder, Frame};
use wschat::store::redis::{
    Action, Answer, Continuity, Event, Lease, Link, Published, RedisConfig, RedisError, Reply, Request,
    Session, SubEvent, Subscriber,
};
use wschat::store::{Appended, Command, IdempotencyKey, NewMessage, Outcome, Range, Read};

/// How long any one wait in these tests may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

fn config(prefix: &str, db: u32) -> RedisConfig {
    let url = std::env::var("WSCHAT_REDIS_URL").expect("WSCHAT_REDIS_URL (run tests/redis/run.sh)");
    let mut config = RedisConfig::from_url(&format!("{url}/{db}")).expect("a redis:// URL");
    config.prefix = format!("test-{prefix}:");
    config
}

/// What the driver needs of a link or a subscriber.
trait Endpoint {
    fn poll_action(&mut self) -> Option<Action>;
    fn connected(&mut self, now: Instant);
    fn lost(&mut self, reason: wschat::store::redis::DownReason, now: Instant);
    fn output(&self) -> &[u8];
    fn consume_output(&mut self, written: usize);
    fn receive(&mut self, bytes: &[u8], now: Instant);
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_timeout(&mut self, now: Instant);
}

macro_rules! endpoint {
    ($type:ty) => {
        impl Endpoint for $type {
            fn poll_action(&mut self) -> Option<Action> {
                <$type>::poll_action(self)
            }
            fn connected(&mut self, now: Instant) {
                <$type>::connected(self, now)
            }
            fn lost(&mut self, reason: wschat::store::redis::DownReason, now: Instant) {
                <$type>::lost(self, reason, now)
            }
            fn output(&self) -> &[u8] {
                <$type>::output(self)
            }
            fn consume_output(&mut self, written: usize) {
                <$type>::consume_output(self, written)
            }
            fn receive(&mut self, bytes: &[u8], now: Instant) {
                <$type>::receive(self, bytes, now)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                <$type>::poll_timeout(self)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$type>::handle_timeout(self, now)
            }
        }
    };
}
endpoint!(Link);
endpoint!(Subscriber);

/// One connection's socket, driven for its endpoint.
struct Driver<E> {
    endpoint: E,
    address: String,
    stream: Option<TcpStream>,
}

impl<E: Endpoint> Driver<E> {
    fn new(endpoint: E, config: &RedisConfig) -> Self {
        Self {
            endpoint,
            address: config.address(),
            stream: None,
        }
    }

    /// The local address of the current socket (what CLIENT KILL ADDR names).
    fn local_addr(&self) -> Option<SocketAddr> {
        self.stream.as_ref().and_then(|stream| stream.local_addr().ok())
    }

    /// One turn: actions, writes, reads, timers.
    fn turn(&mut self) {
        let now = Instant::now();
        while let Some(action) = self.endpoint.poll_action() {
            match action {
                Action::Connect => match TcpStream::connect(&self.address) {
                    Ok(stream) => {
                        stream.set_nonblocking(true).expect("non-blocking");
                        stream.set_nodelay(true).expect("nodelay");
                        self.stream = Some(stream);
                        self.endpoint.connected(now);
                    }
                    Err(error) => self.endpoint.lost(
                        wschat::store::redis::DownReason::ConnectFailed(error.to_string()),
                        now,
                    ),
                },
                Action::Disconnect => self.stream = None,
            }
        }
        if let Some(stream) = &mut self.stream {
            while !self.endpoint.output().is_empty() {
                match stream.write(self.endpoint.output()) {
                    Ok(written) => self.endpoint.consume_output(written),
                    Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                    Err(error) => {
                        self.stream = None;
                        let reason = wschat::store::redis::DownReason::Io(error.to_string());
                        self.endpoint.lost(reason, now);
                        break;
                    }
                }
            }
        }
        if let Some(stream) = &mut self.stream {
            let mut buf = [0u8; 16 * 1024];
            match stream.read(&mut buf) {
                Ok(0) => {
                    self.stream = None;
                    self.endpoint.lost(wschat::store::redis::DownReason::Closed, now);
                }
                Ok(read) => self.endpoint.receive(&buf[..read], now),
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(error) => {
                    self.stream = None;
                    self.endpoint
                        .lost(wschat::store::redis::DownReason::Io(error.to_string()), now);
                }
            }
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
        if self
            .endpoint
            .poll_timeout()
            .is_some_and(|due| Instant::now() >= due)
        {
            self.endpoint.handle_timeout(Instant::now());
        }
    }
}

impl Driver<Link> {
    fn connect(config: &RedisConfig) -> Self {
        let mut driver = Self::new(Link::new(config, seed(), Instant::now()), config);
        driver.until(|event| matches!(event, Event::Ready).then_some(()));
        driver
    }

    /// Turns until `wanted` picks an event; events before it are dropped (they are asserted on
    /// where they matter).
    fn until<T>(&mut self, mut wanted: impl FnMut(&Event) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            while let Some(event) = self.endpoint.poll_event() {
                if let Some(found) = wanted(&event) {
                    return found;
                }
            }
            assert!(start.elapsed() < PATIENCE, "no such event in {PATIENCE:?}");
            self.turn();
        }
    }

    /// Submits every request in one turn (one pipelined write) and returns their replies in
    /// order.
    fn ask_all(&mut self, requests: Vec<Request>) -> Vec<Reply> {
        let count = requests.len();
        for (tag, request) in requests.into_iter().enumerate() {
            self.endpoint.submit(tag as u64, request, Instant::now());
        }
        let mut replies = Vec::new();
        while replies.len() < count {
            replies.push(self.until(|event| match event {
                Event::Reply(reply) => Some(Reply::clone(reply)),
                _ => None,
            }));
        }
        replies
    }

    fn ask(&mut self, request: Request) -> Result<Answer, RedisError> {
        self.ask_all(vec![request]).remove(0).result
    }
}

impl Driver<Subscriber> {
    fn subscribe(config: &RedisConfig, node: &str, rooms: &[&str]) -> Self {
        let mut subscriber = Subscriber::new(config, node, seed(), Instant::now());
        for room in rooms {
            subscriber.subscribe(room, Instant::now());
        }
        let mut driver = Self::new(subscriber, config);
        driver.until(|event| matches!(event, SubEvent::Up).then_some(()));
        driver
    }

    fn until<T>(&mut self, mut wanted: impl FnMut(&SubEvent) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            while let Some(event) = self.endpoint.poll_event() {
                if let Some(found) = wanted(&event) {
                    return found;
                }
            }
            assert!(
                start.elapsed() < PATIENCE,
                "no such subscriber event in {PATIENCE:?}"
            );
            self.turn();
        }
    }
}

fn seed() -> u64 {
    wschat::store::Epoch::random().expect("random").0
}

/// One raw command on a connection of its own (FLUSHDB, SCRIPT FLUSH, CLIENT KILL...).
fn raw(config: &RedisConfig, args: &[&str]) -> Frame {
    let mut stream = TcpStream::connect(config.address()).expect("connect");
    let mut out = Vec::new();
    resp::encode_command(&mut out, &["SELECT", &config.db.to_string()]);
    resp::encode_command(&mut out, args);
    stream.write_all(&out).expect("write");
    let mut decoder = Decoder::new();
    let mut frames = Vec::new();
    let mut buf = [0u8; 4096];
    while frames.len() < 2 {
        let read = stream.read(&mut buf).expect("read");
        assert!(read > 0, "redis closed the connection");
        decoder.feed(&buf[..read]);
        while let Some(frame) = decoder.next_frame().expect("RESP") {
            frames.push(frame);
        }
    }
    frames.remove(1)
}

fn message(token: u64, room: &str, nickname: &str, text: &str, key: Option<&str>) -> NewMessage {
    NewMessage {
        token,
        room: room.to_owned(),
        nickname: nickname.to_owned(),
        text: text.to_owned(),
        ts: 1_700_000_000_000 + token,
        key: key.map(|key| IdempotencyKey::new(key).expect("valid key")),
        lease: None,
    }
}

fn publish(message: NewMessage, owner: Option<&str>) -> Request {
    Request::Publish {
        message,
        owner: owner.map(str::to_owned),
    }
}

fn published(result: &Result<Answer, RedisError>) -> Published {
    match result {
        Ok(Answer::Published(published)) => *published,
        other => panic!("wanted a publish answer, got {other:?}"),
    }
}

#[test]
#[ignore = "needs a Redis server: tests/redis/run.sh"]
fn publish_gives_increasing_ids_dedups_per_room_and_announces_with_the_previous_id() {
    let config = config("publish", 0);
    let mut link = Driver::connect(&config);
    let mut sub = Driver::subscribe(&config, "n1", &["lobby"]);
    let replies = link.ask_all(vec![
        publish(message(1, "lobby", "alice", "one", Some("k1")), None),
        publish(
            message(2, "lobby", "bob", "two with spaces\nand a newline", None),
            None,
        ),
        publish(message(3, "lobby", "alice", "one again", Some("k1")), None),
        publish(
            message(4, "rust", "alice", "same key, other room", Some("k1")),
            None,
        ),
    ]);
    let ids: Vec<Published> = replies.iter().map(|reply| published(&reply.result)).collect();
    assert_eq!(
        ids,
        [
            Published::Stored { id: 1 },
            Published::Stored { id: 2 },
            Published::Duplicate { id: 1 },
            Published::Stored { id: 3 },
        ]
    );
    assert_eq!(link.ask(Request::LastId), Ok(Answer::LastId(3)));
    // The store boundary's outcomes come from the same replies.
    let outcomes: Vec<Outcome> = replies
        .into_iter()
        .map(|reply| reply.route().outcome().expect("a store outcome"))
        .collect();
    assert_eq!(
        outcomes[2],
        Outcome::Append {
            token: 3,
            result: Ok(Appended::Duplicate { id: 1 })
        }
    );
    // The lobby's subscriber hears 1 then 2 (not the duplicate, not the other room), each with the
    // previous id of its room.
    let mut heard = Vec::new();
    while heard.len() < 2 {
        heard.push(sub.until(|event| match event {
            SubEvent::Message(message) => Some(message.clone()),
            _ => None,
        }));
    }
    assert_eq!((heard[0].message.id, heard[0].prev_id), (1, 0));
    assert_eq!((heard[1].message.id, heard[1].prev_id), (2, 1));
    assert_eq!(heard[1].message.text, "two with spaces\nand a newline");
    assert_eq!(heard[1].message.nickname, "bob");
    assert_eq!(Some(heard[1].epoch), link.endpoint.epoch());
    assert_eq!(heard[1].follows(1), Continuity::Next);
}

#[test]
#[ignore = "needs a Redis server: tests/redis/run.sh"]
fn history_pages_match_the_memory_store() {
    let config = config("history", 0);
    let mut link = Driver::connect(&config);
    let mut model = MemoryStore::new(1000);
    let messages: Vec<NewMessage> = (1..=25)
        .map(|n| message(n, "lobby", "alice", &format!("message {n}"), None))
        .collect();
    model.execute(vec![Command::Append(messages.clone())], Instant::now());
    let replies = link.ask_all(messages.into_iter().map(|m| publish(m, None)).collect());
    assert!(
        replies
            .iter()
            .all(|reply| matches!(reply.result, Ok(Answer::Published(_))))
    );
    let ranges = [
        (Range::Latest, 10),
        (Range::Before(16), 10),
        (Range::Before(6), 10),
        (Range::Before(1), 10),
        (Range::Before(0), 10),
        (Range::Since(0), 10),
        (Range::Since(20), 10),
        (Range::Since(25), 10),
        (Range::Latest, 0),
        (Range::Since(24), 0),
        (Range::Latest, 5000),
    ];
    for (token, (range, limit)) in ranges.into_iter().enumerate() {
        for room in ["lobby", "empty"] {
            let read = Read {
                token: token as u64,
                room: room.to_owned(),
                range,
                limit,
            };
            let expected = model.execute(vec![Command::Read(read.clone())], Instant::now());
            let reply = link.ask_all(vec![Request::Read(read)]).remove(0);
            assert_eq!(
                vec![reply.route().outcome().expect("a read outcome")],
                expected,
                "{room} {range:?} limit {limit}"
            );
        }
    }
}

#[test]
#[ignore = "needs a Redis server: tests/redis/run.sh"]
fn a_key_is_forgotten_once_its_message_left_the_stream() {
    let mut config = config("retention", 0);
    config.keep_per_room = 10;
    let mut link = Driver::connect(&config);
    let first = link.ask(publish(
        message(1, "lobby", "alice", "first", Some("first")),
        None,
    ));
    assert_eq!(published(&first), Published::Stored { id: 1 });
    // MAXLEN ~ trims whole stream nodes (100 entries by default): 300 more messages push the
    // first one out for sure.
    let more: Vec<Request> = (2..=301)
        .map(|n| publish(message(n, "lobby", "alice", "filler", None), None))
        .collect();
    link.ask_all(more);
    let oldest = link.ask(Request::Read(Read {
        token: 0,
        room: "lobby".to_owned(),
        range: Range::Since(0),
        limit: 1,
    }));
    let Ok(Answer::Page(page)) = oldest else {
        panic!("wanted a page, got {oldest:?}");
    };
    assert!(page.messages[0].id > 1, "the first message was trimmed");
    let again = link.ask(publish(
        message(302, "lobby", "alice", "first", Some("first")),
        None,
    ));
    assert_eq!(published(&again), Published::Stored { id: 302 });
}

#[test]
#[ignore = "needs a Redis server: tests/redis/run.sh"]
fn a_nickname_lease_has_one_owner_even_when_two_nodes_race() {
    let config = config("lease", 0);
    let mut a = Driver::connect(&config);
    let mut b = Driver::connect(&config);
    let ttl = Duration::from_secs(30);
    let acquire = |nickname: &str, owner: &str| Request::Acquire {
        nickname: nickname.to_owned(),
        owner: owner.to_owned(),
        ttl,
        replacing: None,
    };
    // Both links write their 50 acquisitions before either reads an answer: Redis interleaves
    // the two pipelines as it likes.
    let names: Vec<String> = (0..50).map(|n| format!("User{n}")).collect();
    for (tag, name) in names.iter().enumerate() {
        a.endpoint.submit(tag as u64, acquire(name, "A"), Instant::now());
        b.endpoint
            .submit(tag as u64, acquire(&name.to_lowercase(), "B"), Instant::now());
    }
    for _ in 0..5 {
        a.turn();
        b.turn();
    }
    let take = |driver: &mut Driver<Link>| -> Vec<Lease> {
        (0..50)
            .map(|_| {
                driver.until(|event| match event {
                    Event::Reply(reply) => match reply.result {
                        Ok(Answer::Lease(lease)) => Some(lease),
                        _ => None,
                    },
                    _ => None,
                })
            })
            .collect()
    };
    let (won_a, won_b) = (take(&mut a), take(&mut b));
    for (n, (lease_a, lease_b)) in won_a.iter().zip(&won_b).enumerate() {
        let held = [lease_a, lease_b]
            .iter()
            .filter(|lease| ***lease == Lease::Held)
            .count();
        assert_eq!(held, 1, "User{n}: {lease_a:?} / {lease_b:?}");
    }
    // Renewal and release only by the owner.
    let owner_of_0 = if won_a[0] == Lease::Held { "A" } else { "B" };
    let other = if owner_of_0 == "A" { "B" } else { "A" };
    let renew = |owner: &str| Request::Renew {
        nickname: "user0".to_owned(),
        owner: owner.to_owned(),
        ttl,
    };
    let release = |owner: &str| Request::Release {
        nickname: "USER0".to_owned(),
        owner: owner.to_owned(),
    };
    assert_eq!(a.ask(renew(other)), Ok(Answer::Lease(Lease::NotOwner)));
    assert_eq!(a.ask(renew(owner_of_0)), Ok(Answer::Lease(Lease::Held)));
    // A round's renewals in one call: each only by its owner, answered in order.
    let many = Request::RenewMany {
        leases: vec![
            ("user0".to_owned(), other.to_owned()),
            ("user0".to_owned(), owner_of_0.to_owned()),
            ("nobody".to_owned(), owner_of_0.to_owned()),
        ],
        ttl,
    };
    assert_eq!(a.ask(many), Ok(Answer::Renewed(vec![false, true, false])));
    assert_eq!(a.ask(release(other)), Ok(Answer::Lease(Lease::NotOwner)));
    // A message under a nickname someone else holds is refused, and nothing is stored.
    let refused = a.ask(publish(message(1, "lobby", "User0", "hi", None), Some(other)));
    assert_eq!(published(&refused), Published::NotOwner);
    assert_eq!(a.ask(Request::LastId), Ok(Answer::LastId(0)));
    let allowed = a.ask(publish(
        message(2, "lobby", "User0", "hi", None),
        Some(owner_of_0),
    ));
    assert_eq!(published(&allowed), Published::Stored { id: 1 });
    assert_eq!(a.ask(release(owner_of_0)), Ok(Answer::Lease(Lease::Released)));
    assert_eq!(b.ask(acquire("user0", other)), Ok(Answer::Lease(Lease::Held)));
    // A resume on another node takes the lease over from the session it replaces.
    let takeover = Request::Acquire {
        nickname: "user0".to_owned(),
        owner: "C".to_owned(),
        ttl,
        replacing: Some(other.to_owned()),
    };
    assert_eq!(a.ask(takeover), Ok(Answer::Lease(Lease::Held)));
    // A lease nobody renews expires.
    let short = Request::Acquire {
        nickname: "brief".to_owned(),
        owner: "A".to_owned(),
        ttl: Duration::from_millis(100),
        replacing: None,
    };
    assert_eq!(a.ask(short), Ok(Answer::Lease(Lease::Held)));
    assert_eq!(b.ask(acquire("brief", "B")), Ok(Answer::Lease(Lease::NotOwner)));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(b.ask(acquire("brief", "B")), Ok(Answer::Lease(Lease::Held)));
}

#[test]
#[ignore = "needs a Redis server: tests/redis/run.sh"]
fn a_dead_nodes_members_disappear_once_its_heartbeat_expires() {
    let config = config("presence", 0);
    let mut link = Driver::connect(&config);
    let join = |member: &str, node: &str| Request::Join {
        room: "lobby".to_owned(),
        member: member.to_owned(),
        node: node.to_owned(),
    };
    let members = |link: &mut Driver<Link>| -> Vec<(String, String)> {
        match link.ask(Request::Members {
            room: "lobby".to_owned(),
        }) {
            Ok(Answer::Members(members)) => {
                let mut pairs: Vec<_> = members.into_iter().map(|m| (m.member, m.node)).collect();
                pairs.sort();
                pairs
            }
            other => panic!("wanted members, got {other:?}"),
        }
    };
    let pair = |member: &str, node: &str| (member.to_owned(), node.to_owned());
    let replies = link.ask_all(vec![
        Request::Heartbeat {
            node: "short".to_owned(),
            ttl: Duration::from_millis(300),
        },
        Request::Heartbeat {
            node: "long".to_owned(),
            ttl: Duration::from_secs(30),
        },
        join("alice", "short"),
        join("bob", "short"),
        join("carol", "long"),
    ]);
    assert!(
        replies.iter().all(|reply| reply.result == Ok(Answer::Done)),
        "{replies:?}"
    );
    assert_eq!(
        members(&mut link),
        [
            pair("alice", "short"),
            pair("bob", "short"),
            pair("carol", "long")
        ]
    );
    // Leaving only removes the caller's own entry.
    let leave = |member: &str, node: &str| Request::Leave {
        room: "lobby".to_owned(),
        member: member.to_owned(),
        node: node.to_owned(),
    };
    assert_eq!(link.ask(leave("carol", "short")), Ok(Answer::Removed(false)));
    assert_eq!(link.ask(leave("bob", "short")), Ok(Answer::Removed(true)));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(members(&mut link), [pair("carol", "long")]);
    // A node that shuts down cleanly takes its members with it at once.
    assert_eq!(
        link.ask(Request::NodeDown {
            node: "long".to_owned()
        }),
        Ok(Answer::Removed(true))
    );
    assert_eq!(members(&mut link), []);
}

#[test]
#[ignore = "needs a Redis server: tests/redis/run.sh"]
fn a_resume_token_works_once() {
    let config = config("tokens", 0);
    let mut link = Driver::connect(&config);
    let session = Session {
        nickname: "alice smith".to_owned(),
        room: "room with spaces".to_owned(),
        owner: "n 1.2".to_owned(),
    };
    let put = Request::PutToken {
        token: "t1".to_owned(),
        session: session.clone(),
        ttl: Duration::from_secs(30),
    };
    assert_eq!(link.ask(put), Ok(Answer::Done));
    let take = || Request::TakeToken {
        token: "t1".to_owned(),
    };
    assert_eq!(link.ask(take()), Ok(Answer::Session(Some(session))));
    assert_eq!(link.ask(take()), Ok(Answer::Session(None)));
}

#[test]
#[ignore = "needs a Redis server: tests/redis/run.sh"]
fn a_flushed_redis_gets_a_new_epoch_and_publishes_are_refused_until_it_is_known() {
    // Database 1: FLUSHDB must not touch the other tests' keys.
    let config = config("epoch", 1);
    raw(&config, &["FLUSHDB"]);
    let mut link = Driver::connect(&config);
    let first = link.endpoint.epoch().expect("an epoch after set-up");
    let stored = link.ask(publish(message(1, "lobby", "alice", "before", None), None));
    assert_eq!(published(&stored), Published::Stored { id: 1 });
    assert_eq!(raw(&config, &["FLUSHDB"]), Frame::SimpleString(b"OK".to_vec()));
    let refused = link.ask(publish(message(2, "lobby", "alice", "after", None), None));
    assert_eq!(refused, Err(RedisError::EpochChanged { current: None }));
    let second = link.until(|event| match event {
        Event::Epoch(epoch) => Some(*epoch),
        _ => None,
    });
    assert_ne!(second, first);
    // A second node connecting now reads the same new epoch.
    assert_eq!(Driver::connect(&config).endpoint.epoch(), Some(second));
    let again = link.ask(publish(message(3, "lobby", "alice", "after", None), None));
    assert_eq!(published(&again), Published::Stored { id: 1 });
}

#[test]
#[ignore = "needs a Redis server: tests/redis/run.sh"]
fn scripts_are_sent_again_after_script_flush_in_submission_order() {
    let config = config("noscript", 0);
    let mut link = Driver::connect(&config);
    assert_eq!(
        raw(&config, &["SCRIPT", "FLUSH"]),
        Frame::SimpleString(b"OK".to_vec())
    );
    assert_eq!(
        raw(&config, &["CONFIG", "RESETSTAT"]),
        Frame::SimpleString(b"OK".to_vec())
    );
    let mut requests: Vec<Request> = (1..=5)
        .map(|n| publish(message(n, "lobby", "alice", &n.to_string(), None), None))
        .collect();
    requests.insert(
        2,
        Request::Read(Read {
            token: 99,
            room: "lobby".to_owned(),
            range: Range::Latest,
            limit: 10,
        }),
    );
    let replies = link.ask_all(requests);
    let ids: Vec<u64> = replies
        .iter()
        .filter_map(|reply| match reply.result {
            Ok(Answer::Published(Published::Stored { id })) => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5], "{replies:?}");
    // All five were pipelined before the first NOSCRIPT came back, so all five were sent again
    // in full.
    let stats = raw(&config, &["INFO", "commandstats"]);
    let stats = resp::text(&stats).expect("INFO text");
    assert!(stats.contains("cmdstat_eval:calls=5,"), "{stats}");
    let page = link.ask(Request::Read(Read {
        token: 0,
        room: "lobby".to_owned(),
        range: Range::Latest,
        limit: 10,
    }));
    let Ok(Answer::Page(page)) = page else {
        panic!("wanted a page, got {page:?}");
    };
    let texts: Vec<&str> = page.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        ["1", "2", "3", "4", "5"],
        "each sender's order survives the retry"
    );
}

#[test]
#[ignore = "needs a Redis server: tests/redis/run.sh"]
fn both_connections_come_back_after_client_kill_and_the_gap_is_readable() {
    let mut config = config("reconnect", 0);
    config.timeouts.backoff_min = Duration::from_millis(20);
    let mut link = Driver::connect(&config);
    let mut sub = Driver::subscribe(&config, "n1", &["lobby"]);
    let first = link.ask(publish(message(1, "lobby", "alice", "one", None), None));
    assert_eq!(published(&first), Published::Stored { id: 1 });
    sub.until(|event| matches!(event, SubEvent::Message(_)).then_some(()));

    // The subscription drops: a message published meanwhile is not heard...
    let sub_addr = sub.local_addr().expect("subscriber connected").to_string();
    assert_eq!(
        raw(&config, &["CLIENT", "KILL", "ADDR", &sub_addr]),
        Frame::Integer(1)
    );
    sub.until(|event| matches!(event, SubEvent::Down(_)).then_some(()));
    let missed = link.ask(publish(message(2, "lobby", "alice", "two", None), None));
    assert_eq!(published(&missed), Published::Stored { id: 2 });
    // ...the subscriber comes back on its own, and the next message tells it there is a gap.
    sub.until(|event| matches!(event, SubEvent::Up).then_some(()));
    link.ask(publish(message(3, "lobby", "alice", "three", None), None))
        .expect("stored");
    let third = sub.until(|event| match event {
        SubEvent::Message(message) => Some(message.clone()),
        _ => None,
    });
    assert_eq!(third.follows(1), Continuity::Gap { after: 1 });
    let gap = link.ask(Request::Read(Read {
        token: 0,
        room: "lobby".to_owned(),
        range: Range::Since(1),
        limit: 100,
    }));
    let Ok(Answer::Page(gap)) = gap else {
        panic!("wanted a page, got {gap:?}");
    };
    let ids: Vec<u64> = gap.messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, [2, 3]);

    // The command link drops: it reconnects, sets up again and serves requests.
    let link_addr = link.local_addr().expect("link connected").to_string();
    assert_eq!(
        raw(&config, &["CLIENT", "KILL", "ADDR", &link_addr]),
        Frame::Integer(1)
    );
    link.until(|event| matches!(event, Event::Down(_)).then_some(()));
    link.until(|event| matches!(event, Event::Ready).then_some(()));
    assert_eq!(link.endpoint.state(), LinkState::Ready);
    let after = link.ask(publish(message(4, "lobby", "alice", "four", None), None));
    assert_eq!(published(&after), Published::Stored { id: 4 });
}
