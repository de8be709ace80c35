//! The Redis layer's pure parts: the URL, the key layout, the scripts' shape, each request's
//! command and each reply's reading, and the pub/sub payloads.

use std::time::Duration;

use super::keys::{Channel, Keys};
use super::ops::{self, Call, Context, RoomPayload};
use super::resp::Frame;
use super::scripts::{self, Script};
use super::*;
use crate::store::{
    Appended, IdempotencyKey, MAX_PAGE_LEN, NewMessage, Outcome, Page, Range, Read, StoreError, StoredMessage,
};

fn bulk(text: &str) -> Frame {
    Frame::BulkString(text.as_bytes().to_vec())
}

fn strings(args: &[Vec<u8>]) -> Vec<String> {
    args.iter()
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

mod url {
    use super::*;

    #[test]
    fn a_redis_url_names_host_port_and_database() {
        /// Host, port, database.
        type Parsed = (&'static str, u16, u32);
        let cases: &[(&str, Result<Parsed, UrlError>)] = &[
            ("redis://127.0.0.1:6380/2", Ok(("127.0.0.1", 6380, 2))),
            ("redis://cache.internal", Ok(("cache.internal", DEFAULT_PORT, 0))),
            ("redis://cache.internal/", Ok(("cache.internal", DEFAULT_PORT, 0))),
            ("redis://[::1]:7000/3", Ok(("::1", 7000, 3))),
            ("redis://[::1]", Ok(("::1", DEFAULT_PORT, 0))),
            ("http://127.0.0.1:6379", Err(UrlError::Scheme)),
            ("rediss://127.0.0.1:6379", Err(UrlError::Scheme)),
            ("redis://", Err(UrlError::Host)),
            ("redis://:6379", Err(UrlError::Host)),
            ("redis://[::1:6379", Err(UrlError::Host)),
            ("redis://h:port", Err(UrlError::Port("port".to_owned()))),
            ("redis://h:70000", Err(UrlError::Port("70000".to_owned()))),
            ("redis://h/one", Err(UrlError::Database("one".to_owned()))),
            ("redis://user:secret@h:6379", Err(UrlError::Credentials)),
        ];
        for (url, expected) in cases {
            let parsed = RedisConfig::from_url(url).map(|config| (config.host, config.port, config.db));
            let expected = expected
                .clone()
                .map(|(host, port, db)| (host.to_owned(), port, db));
            assert_eq!(parsed, expected, "{url}");
        }
    }

    #[test]
    fn an_ipv6_address_is_bracketed_again_for_connecting() {
        let v6 = RedisConfig::from_url("redis://[::1]:7000").expect("valid");
        assert_eq!(v6.address(), "[::1]:7000");
        let v4 = RedisConfig::from_url("redis://10.0.0.1:7000").expect("valid");
        assert_eq!(v4.address(), "10.0.0.1:7000");
    }

    #[test]
    fn a_url_gets_the_default_prefix_and_retention() {
        let config = RedisConfig::from_url("redis://h").expect("valid");
        assert_eq!(config.prefix, DEFAULT_PREFIX);
        assert_eq!(
            config.keep_per_room,
            crate::store::sqlite::DEFAULT_KEEP_PER_ROOM.get()
        );
    }
}

#[test]
fn each_redis_failure_has_one_store_error() {
    let cases = [
        (RedisError::Unavailable(DownReason::Closed), "Io"),
        (RedisError::Disconnected(DownReason::ReplyTimeout), "Io"),
        (RedisError::Server("OOM command not allowed".to_owned()), "Other"),
        (RedisError::Unexpected("array of 3".to_owned()), "Corrupt"),
        (RedisError::EpochChanged { current: None }, "Other"),
    ];
    for (error, kind) in cases {
        let text = error.to_string();
        let mapped = StoreError::from(error);
        let (found, detail) = match &mapped {
            StoreError::Io(detail) => ("Io", detail),
            StoreError::Other(detail) => ("Other", detail),
            StoreError::Corrupt(detail) => ("Corrupt", detail),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!((found, detail.as_str()), (kind, text.as_str()));
    }
}

mod layout {
    use super::*;

    #[test]
    fn every_key_starts_with_the_prefix_and_a_word_for_its_kind() {
        let keys = Keys::new("wschat:", 0);
        let cases = [
            (keys.epoch(), "wschat:epoch"),
            (keys.last_id(), "wschat:last_id"),
            (keys.history("lobby"), "wschat:history:lobby"),
            (keys.dedup("lobby"), "wschat:dedup:lobby"),
            (keys.lease("Alice"), "wschat:nick:alice"),
            (keys.presence("lobby"), "wschat:presence:lobby"),
            (keys.alive("node-1"), "wschat:alive:node-1"),
            (keys.resume("abc"), "wschat:resume:abc"),
        ];
        for (key, expected) in cases {
            assert_eq!(key, expected);
        }
    }

    #[test]
    fn a_nickname_lease_is_the_same_key_whatever_the_case() {
        let keys = Keys::new("p:", 0);
        assert_eq!(keys.lease("ÉLODIE"), keys.lease("élodie"));
        assert_ne!(keys.lease("alice"), keys.lease("alicia"));
    }

    #[test]
    fn channel_names_carry_the_database_number() {
        let zero = Keys::new("wschat:", 0);
        let three = Keys::new("wschat:", 3);
        assert_eq!(zero.room_channel("lobby"), "wschat:0:room:lobby");
        assert_eq!(three.room_channel("lobby"), "wschat:3:room:lobby");
        assert_eq!(three.node_channel("n1"), "wschat:3:node:n1");
        assert_eq!(zero.parse_channel(three.room_channel("lobby").as_bytes()), None);
    }

    #[test]
    fn a_channel_name_reads_back_whatever_the_room_is_called() {
        let keys = Keys::new("wschat:", 0);
        for room in ["lobby", "a:b", "room:x", "node:y", "", "κόσμε"] {
            assert_eq!(
                keys.parse_channel(keys.room_channel(room).as_bytes()),
                Some(Channel::Room(room.to_owned())),
                "{room:?}"
            );
        }
        assert_eq!(
            keys.parse_channel(keys.node_channel("n:1").as_bytes()),
            Some(Channel::Node("n:1".to_owned()))
        );
        assert_eq!(keys.parse_channel(b"other:0:room:lobby"), None);
        assert_eq!(keys.parse_channel(b"wschat:0:elsewhere:lobby"), None);
    }
}

mod lua {
    use super::*;

    #[test]
    fn a_script_is_named_by_the_sha1_of_its_text() {
        // The digest Redis itself answers to `SCRIPT LOAD "return 1"`.
        let script = Script {
            name: "one",
            body: "return 1",
        };
        assert_eq!(script.sha(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }

    #[test]
    fn every_script_has_its_own_name_and_digest() {
        let mut names: Vec<&str> = scripts::ALL.iter().map(|script| script.name).collect();
        let mut shas: Vec<String> = scripts::ALL.iter().map(|script| script.sha()).collect();
        names.sort_unstable();
        names.dedup();
        shas.sort_unstable();
        shas.dedup();
        assert_eq!(
            (names.len(), shas.len()),
            (scripts::ALL.len(), scripts::ALL.len())
        );
    }

    /// Redis does not undo a failed script's writes: every refusal must come before the first
    /// write.
    #[test]
    fn the_publish_script_refuses_before_it_writes() {
        let body = scripts::PUBLISH.body;
        let code: String = body
            .lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        let last_refusal = ["return {3", "return {1", "return {2"]
            .iter()
            .filter_map(|refusal| code.find(refusal))
            .max()
            .expect("the refusals");
        let first_write = ["'INCR'", "'XADD'", "'ZADD'", "'ZREMRANGEBYSCORE'", "'PUBLISH'"]
            .iter()
            .filter_map(|write| code.find(write))
            .min()
            .expect("the writes");
        assert!(last_refusal < first_write, "a refusal after a write");
    }

    #[test]
    fn ids_are_formatted_as_integers_in_lua() {
        // Lua's default number formatting (%.14g) would print a 15-digit id in exponent form.
        assert!(
            scripts::PUBLISH
                .body
                .contains("string.format('%d', redis.call('INCR'")
        );
    }
}

fn message(key: Option<&str>) -> NewMessage {
    NewMessage {
        token: 7,
        room: "lobby".to_owned(),
        nickname: "Alice B".to_owned(),
        text: "hi there\n".to_owned(),
        ts: 1_700_000_000_123,
        key: key.map(|key| IdempotencyKey::new(key).expect("valid")),
        lease: None,
    }
}

mod commands {
    use super::*;

    fn call(request: &Request) -> Result<Call, Answer> {
        let keys = Keys::new("wschat:", 0);
        let context = Context {
            keys: &keys,
            epoch: Some(crate::store::Epoch(0xab)),
            keep_per_room: 500,
            candidate: crate::store::Epoch(0xcd),
        };
        ops::call(request, &context)
    }

    fn plain(request: &Request) -> Vec<String> {
        match call(request) {
            Ok(Call::Plain(args)) => strings(&args),
            other => panic!("wanted a plain command, got {other:?}"),
        }
    }

    fn scripted(request: &Request) -> (&'static str, Vec<String>, Vec<String>) {
        match call(request) {
            Ok(Call::Script { script, keys, args }) => (script.name, strings(&keys), strings(&args)),
            other => panic!("wanted a script call, got {other:?}"),
        }
    }

    #[test]
    fn a_publish_passes_every_key_and_the_message() {
        let request = Request::Publish {
            message: message(Some("k-1")),
            owner: Some("node1/42".to_owned()),
        };
        let (name, keys, args) = scripted(&request);
        assert_eq!(name, "publish");
        assert_eq!(
            keys,
            [
                "wschat:epoch",
                "wschat:last_id",
                "wschat:history:lobby",
                "wschat:dedup:lobby",
                "wschat:nick:alice b",
            ]
        );
        assert_eq!(
            args,
            [
                "00000000000000ab",
                "node1/42",
                "k-1",
                "500",
                "Alice B",
                "hi there\n",
                "1700000000123",
                "wschat:0:room:lobby",
                "1700000000123 7 Alice Bhi there\n",
            ]
        );
    }

    #[test]
    fn a_publish_without_key_or_owner_passes_empty_strings() {
        let (_, _, args) = scripted(&Request::Publish {
            message: message(None),
            owner: None,
        });
        assert_eq!((args[1].as_str(), args[2].as_str()), ("", ""));
    }

    #[test]
    fn each_read_is_one_range_command_asking_one_past_the_limit() {
        let read = |range, limit| {
            Request::Read(Read {
                token: 1,
                room: "lobby".to_owned(),
                range,
                limit,
            })
        };
        let past_cap = (MAX_PAGE_LEN + 1).to_string();
        let cases: Vec<(Request, Vec<&str>)> = vec![
            (
                read(Range::Since(41), 50),
                vec!["XRANGE", "wschat:history:lobby", "(41-0", "+", "COUNT", "51"],
            ),
            (
                read(Range::Since(0), 0),
                vec!["XRANGE", "wschat:history:lobby", "(0-0", "+", "COUNT", "1"],
            ),
            (
                read(Range::Before(41), 50),
                vec!["XREVRANGE", "wschat:history:lobby", "(41-0", "-", "COUNT", "51"],
            ),
            (
                read(Range::Latest, 10),
                vec!["XREVRANGE", "wschat:history:lobby", "+", "-", "COUNT", "11"],
            ),
            (
                read(Range::Latest, usize::MAX),
                vec!["XREVRANGE", "wschat:history:lobby", "+", "-", "COUNT", &past_cap],
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(plain(&request), expected, "{request:?}");
        }
    }

    #[test]
    fn nothing_lies_before_id_zero_so_no_command_is_sent() {
        let request = Request::Read(Read {
            token: 1,
            room: "lobby".to_owned(),
            range: Range::Before(0),
            limit: 10,
        });
        assert_eq!(call(&request), Err(Answer::Page(Page::default())));
    }

    #[test]
    fn plain_requests_are_single_commands() {
        let ttl = Duration::from_millis(1500);
        let cases: Vec<(Request, Vec<&str>)> = vec![
            (Request::LastId, vec!["GET", "wschat:last_id"]),
            (
                Request::Join {
                    room: "lobby".to_owned(),
                    member: "alice".to_owned(),
                    node: "n1".to_owned(),
                },
                vec!["HSET", "wschat:presence:lobby", "alice", "n1"],
            ),
            (
                Request::Heartbeat {
                    node: "n1".to_owned(),
                    ttl,
                },
                vec!["SET", "wschat:alive:n1", "1", "PX", "1500"],
            ),
            (
                Request::NodeDown {
                    node: "n1".to_owned(),
                },
                vec!["DEL", "wschat:alive:n1"],
            ),
            (
                Request::PutToken {
                    token: "t".to_owned(),
                    session: Session {
                        nickname: "al ice".to_owned(),
                        room: "lobby".to_owned(),
                        owner: "n1.4".to_owned(),
                    },
                    ttl,
                },
                vec!["SET", "wschat:resume:t", "6 al ice5 lobbyn1.4", "PX", "1500"],
            ),
            (
                Request::TakeToken {
                    token: "t".to_owned(),
                },
                vec!["GETDEL", "wschat:resume:t"],
            ),
            (
                Request::RoomEvent {
                    room: "lobby".to_owned(),
                    data: b"joined".to_vec(),
                },
                vec!["PUBLISH", "wschat:0:room:lobby", "ejoined"],
            ),
            (
                Request::NodeMessage {
                    node: "n2".to_owned(),
                    data: b"close 9".to_vec(),
                },
                vec!["PUBLISH", "wschat:0:node:n2", "close 9"],
            ),
        ];
        for (request, expected) in cases {
            assert!(!request.is_script(), "{request:?}");
            assert_eq!(plain(&request), expected, "{request:?}");
        }
    }

    #[test]
    fn scripted_requests_name_their_script() {
        let ttl = Duration::from_secs(30);
        let cases: Vec<(Request, &str, Vec<&str>, Vec<&str>)> = vec![
            (
                Request::Epoch,
                "epoch",
                vec!["wschat:epoch"],
                vec!["00000000000000cd"],
            ),
            (
                Request::Acquire {
                    nickname: "Alice".to_owned(),
                    owner: "n1/1".to_owned(),
                    ttl,
                    replacing: Some("n2/9".to_owned()),
                },
                "lease_acquire",
                vec!["wschat:nick:alice"],
                vec!["n1/1", "30000", "n2/9"],
            ),
            (
                Request::Renew {
                    nickname: "Alice".to_owned(),
                    owner: "n1/1".to_owned(),
                    ttl,
                },
                "lease_renew",
                vec!["wschat:nick:alice"],
                vec!["n1/1", "30000"],
            ),
            (
                Request::Release {
                    nickname: "Alice".to_owned(),
                    owner: "n1/1".to_owned(),
                },
                "lease_release",
                vec!["wschat:nick:alice"],
                vec!["n1/1"],
            ),
            (
                Request::Leave {
                    room: "lobby".to_owned(),
                    member: "alice".to_owned(),
                    node: "n1".to_owned(),
                },
                "presence_leave",
                vec!["wschat:presence:lobby"],
                vec!["alice", "n1"],
            ),
            (
                Request::Members {
                    room: "lobby".to_owned(),
                },
                "presence_members",
                vec!["wschat:presence:lobby"],
                vec!["wschat:alive:"],
            ),
        ];
        for (request, name, keys, args) in cases {
            assert!(request.is_script(), "{request:?}");
            assert_eq!(scripted(&request), (name, to_strings(&keys), to_strings(&args)));
        }
    }

    fn to_strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn a_lease_never_gets_a_zero_expiry() {
        // Redis refuses PX 0; a zero ttl means "as short as possible".
        let (_, _, args) = scripted(&Request::Renew {
            nickname: "a".to_owned(),
            owner: "o".to_owned(),
            ttl: Duration::ZERO,
        });
        assert_eq!(args[1], "1");
    }

    #[test]
    fn a_script_call_is_evalsha_or_eval_with_the_key_count() {
        let call = Call::Script {
            script: &scripts::LEASE_RELEASE,
            keys: vec![b"k".to_vec()],
            args: vec![b"o".to_vec()],
        };
        let mut by_sha = Vec::new();
        call.encode(ops::ScriptBy::Sha("abc"), &mut by_sha);
        assert_eq!(
            by_sha,
            b"*5\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$1\r\nk\r\n$1\r\no\r\n"
        );
        let mut by_body = Vec::new();
        call.encode(ops::ScriptBy::Body, &mut by_body);
        let mut expected = Vec::new();
        resp::encode_command(
            &mut expected,
            &["EVAL", scripts::LEASE_RELEASE.body, "1", "k", "o"],
        );
        assert_eq!(by_body, expected);
    }
}

mod replies {
    use super::*;

    fn publish() -> Request {
        Request::Publish {
            message: message(None),
            owner: None,
        }
    }

    #[test]
    fn the_publish_status_reads_as_its_case() {
        let epoch = "00000000000000ff";
        let cases = [
            (
                Frame::Array(vec![Frame::Integer(0), Frame::Integer(42)]),
                Ok(Answer::Published(Published::Stored { id: 42 })),
            ),
            (
                Frame::Array(vec![Frame::Integer(1), Frame::Integer(7)]),
                Ok(Answer::Published(Published::Duplicate { id: 7 })),
            ),
            (
                Frame::Array(vec![Frame::Integer(2)]),
                Ok(Answer::Published(Published::NotOwner)),
            ),
            (
                Frame::Array(vec![Frame::Integer(3), bulk(epoch)]),
                Err(RedisError::EpochChanged {
                    current: Some(crate::store::Epoch(0xff)),
                }),
            ),
            (
                Frame::Array(vec![Frame::Integer(3), Frame::Null]),
                Err(RedisError::EpochChanged { current: None }),
            ),
            (
                Frame::Array(vec![Frame::Integer(3)]),
                Err(RedisError::EpochChanged { current: None }),
            ),
            (
                Frame::Error("ERR something".to_owned()),
                Err(RedisError::Server("ERR something".to_owned())),
            ),
        ];
        for (frame, expected) in cases {
            assert_eq!(ops::parse(&publish(), frame.clone()), expected, "{frame:?}");
        }
    }

    #[test]
    fn a_reply_of_the_wrong_shape_is_unexpected_not_a_panic() {
        let wrong = [
            Frame::Integer(0),
            Frame::Array(vec![]),
            Frame::Array(vec![Frame::Integer(0)]),
            Frame::Array(vec![Frame::Integer(0), Frame::Integer(-1)]),
            Frame::Array(vec![Frame::Integer(9), Frame::Integer(1)]),
            Frame::Array(vec![Frame::Integer(3), bulk("not hex")]),
        ];
        for frame in wrong {
            assert!(
                matches!(
                    ops::parse(&publish(), frame.clone()),
                    Err(RedisError::Unexpected(_))
                ),
                "{frame:?}"
            );
        }
    }

    fn entry(id: u64, nickname: &str, text: &str) -> Frame {
        Frame::Array(vec![
            bulk(&format!("{id}-0")),
            Frame::Array(vec![
                bulk("n"),
                bulk(nickname),
                bulk("t"),
                bulk(text),
                bulk("ts"),
                bulk(&(1000 + id).to_string()),
            ]),
        ])
    }

    fn stored(id: u64) -> StoredMessage {
        StoredMessage {
            id,
            room: "lobby".to_owned(),
            nickname: "al".to_owned(),
            text: format!("m{id}"),
            ts: 1000 + id,
        }
    }

    fn read(range: Range, limit: usize) -> Request {
        Request::Read(Read {
            token: 1,
            room: "lobby".to_owned(),
            range,
            limit,
        })
    }

    #[test]
    fn pages_are_oldest_first_and_the_extra_entry_means_more() {
        let forward =
            |ids: &[u64]| Frame::Array(ids.iter().map(|&id| entry(id, "al", &format!("m{id}"))).collect());
        let cases = [
            // XRANGE answers oldest first.
            (read(Range::Since(0), 2), forward(&[1, 2, 3]), vec![1, 2], true),
            (
                read(Range::Since(0), 3),
                forward(&[1, 2, 3]),
                vec![1, 2, 3],
                false,
            ),
            // XREVRANGE answers newest first.
            (read(Range::Latest, 2), forward(&[9, 8, 7]), vec![8, 9], true),
            (read(Range::Before(9), 5), forward(&[8, 7]), vec![7, 8], false),
            (read(Range::Latest, 0), forward(&[9]), vec![], true),
            (read(Range::Latest, 0), forward(&[]), vec![], false),
        ];
        for (request, frame, ids, more) in cases {
            let expected = Page {
                // These entries predate the `p` field: their previous id reads as 0.
                prev: (!ids.is_empty()).then_some(0),
                messages: ids.into_iter().map(stored).collect(),
                more,
            };
            assert_eq!(
                ops::parse(&request, frame),
                Ok(Answer::Page(expected)),
                "{request:?}"
            );
        }
    }

    #[test]
    fn a_damaged_stream_entry_is_unexpected() {
        let damaged = [
            Frame::Array(vec![bulk("x-0"), Frame::Array(vec![])]),
            Frame::Array(vec![bulk("5"), Frame::Array(vec![])]),
            Frame::Array(vec![bulk("5-0"), Frame::Array(vec![bulk("n")])]),
            Frame::Array(vec![bulk("5-0"), Frame::Array(vec![bulk("ts"), bulk("soon")])]),
            Frame::Array(vec![bulk("5-0")]),
        ];
        for entry in damaged {
            let frame = Frame::Array(vec![entry.clone()]);
            assert!(
                matches!(
                    ops::parse(&read(Range::Latest, 5), frame),
                    Err(RedisError::Unexpected(_))
                ),
                "{entry:?}"
            );
        }
    }

    #[test]
    fn other_replies_read_as_their_answers() {
        let ttl = Duration::from_secs(1);
        let acquire = Request::Acquire {
            nickname: "a".to_owned(),
            owner: "o".to_owned(),
            ttl,
            replacing: None,
        };
        let release = Request::Release {
            nickname: "a".to_owned(),
            owner: "o".to_owned(),
        };
        let take = Request::TakeToken {
            token: "t".to_owned(),
        };
        let members = Request::Members { room: "r".to_owned() };
        let leave = Request::Leave {
            room: "r".to_owned(),
            member: "m".to_owned(),
            node: "n".to_owned(),
        };
        let cases = [
            (Request::LastId, Frame::Null, Answer::LastId(0)),
            (Request::LastId, bulk("41"), Answer::LastId(41)),
            (
                Request::Epoch,
                bulk("0123456789abcdef"),
                Answer::Epoch(crate::store::Epoch(0x0123_4567_89ab_cdef)),
            ),
            (acquire.clone(), Frame::Integer(1), Answer::Lease(Lease::Held)),
            (acquire, Frame::Integer(0), Answer::Lease(Lease::NotOwner)),
            (release.clone(), Frame::Integer(1), Answer::Lease(Lease::Released)),
            (release, Frame::Integer(0), Answer::Lease(Lease::NotOwner)),
            (take.clone(), Frame::Null, Answer::Session(None)),
            (
                take,
                bulk("5 alice5 lobbyn1.4"),
                Answer::Session(Some(Session {
                    nickname: "alice".to_owned(),
                    room: "lobby".to_owned(),
                    owner: "n1.4".to_owned(),
                })),
            ),
            (
                members.clone(),
                Frame::Array(vec![bulk("alice"), bulk("n1"), bulk("bob"), bulk("n2")]),
                Answer::Members(vec![
                    Member {
                        member: "alice".to_owned(),
                        node: "n1".to_owned(),
                    },
                    Member {
                        member: "bob".to_owned(),
                        node: "n2".to_owned(),
                    },
                ]),
            ),
            (members, Frame::Array(vec![]), Answer::Members(vec![])),
            (leave.clone(), Frame::Integer(1), Answer::Removed(true)),
            (leave, Frame::Integer(0), Answer::Removed(false)),
            (
                Request::Heartbeat {
                    node: "n".to_owned(),
                    ttl,
                },
                Frame::SimpleString(b"OK".to_vec()),
                Answer::Done,
            ),
            (
                Request::NodeMessage {
                    node: "n".to_owned(),
                    data: vec![],
                },
                Frame::Integer(2),
                Answer::Receivers(2),
            ),
        ];
        for (request, frame, expected) in cases {
            assert_eq!(ops::parse(&request, frame), Ok(expected), "{request:?}");
        }
    }

    #[test]
    fn an_odd_member_list_is_unexpected() {
        let members = Request::Members { room: "r".to_owned() };
        let frame = Frame::Array(vec![bulk("alice")]);
        assert!(matches!(
            ops::parse(&members, frame),
            Err(RedisError::Unexpected(_))
        ));
    }
}

mod outcomes {
    use super::*;

    fn reply(request: Request, result: Result<Answer, RedisError>) -> Reply {
        Reply {
            tag: 99,
            request,
            result,
        }
    }

    fn publish() -> Request {
        Request::Publish {
            message: message(None),
            owner: Some("o".to_owned()),
        }
    }

    #[test]
    fn a_publish_reply_is_the_messages_append_outcome() {
        let cases = [
            (
                Ok(Answer::Published(Published::Stored { id: 5 })),
                Ok(Appended::Stored { id: 5 }),
            ),
            (
                Ok(Answer::Published(Published::Duplicate { id: 3 })),
                Ok(Appended::Duplicate { id: 3 }),
            ),
            (
                Ok(Answer::Published(Published::NotOwner)),
                Err(StoreError::NotOwner),
            ),
            (
                Err(RedisError::Disconnected(DownReason::Closed)),
                Err(StoreError::from(RedisError::Disconnected(DownReason::Closed))),
            ),
        ];
        for (result, expected) in cases {
            assert_eq!(
                reply(publish(), result).route(),
                Routed::Store(Outcome::Append {
                    // The message's own token, not the reply's tag.
                    token: 7,
                    result: expected
                })
            );
        }
    }

    #[test]
    fn a_read_reply_is_the_reads_outcome() {
        let read = Read {
            token: 12,
            room: "lobby".to_owned(),
            range: Range::Latest,
            limit: 5,
        };
        let outcome = reply(Request::Read(read), Ok(Answer::Page(Page::default()))).route();
        assert_eq!(
            outcome,
            Routed::Store(Outcome::Read {
                token: 12,
                result: Ok(Page::default())
            })
        );
    }

    #[test]
    fn other_replies_are_given_back() {
        let other = reply(Request::LastId, Ok(Answer::LastId(1)));
        assert_eq!(other.clone().route(), Routed::Other(other));
    }
}

mod payloads {
    use super::*;

    /// What the publish script sends: its own prefix, then the tail the sender built.
    fn announced(epoch: &str, id: u64, prev: u64, message: &NewMessage) -> Vec<u8> {
        format!("m{epoch} {id} {prev} {}", ops::message_tail(message)).into_bytes()
    }

    #[test]
    fn an_announced_message_reads_back_whole() {
        for (nickname, text) in [
            ("alice", "hello"),
            ("Alice B", "two words"),
            ("9 lives", "starts with a digit"),
            ("κόσμε", "line one\nline two"),
            ("bob", ""),
            ("x", " leading space"),
        ] {
            let mut sent = message(None);
            sent.nickname = nickname.to_owned();
            sent.text = text.to_owned();
            let payload = announced("00000000000000ff", 42, 40, &sent);
            let expected = RoomPayload::Message(RemoteMessage {
                epoch: crate::store::Epoch(0xff),
                prev_id: 40,
                message: StoredMessage {
                    id: 42,
                    room: "lobby".to_owned(),
                    nickname: nickname.to_owned(),
                    text: text.to_owned(),
                    ts: sent.ts,
                },
            });
            assert_eq!(
                ops::parse_room_payload("lobby", &payload),
                Some(expected),
                "{nickname:?}"
            );
        }
    }

    #[test]
    fn a_room_event_is_its_bytes() {
        assert_eq!(
            ops::parse_room_payload("lobby", b"e{\"joined\":1}"),
            Some(RoomPayload::Event(b"{\"joined\":1}".to_vec()))
        );
    }

    #[test]
    fn an_unreadable_payload_is_none_not_a_panic() {
        let cases: &[&[u8]] = &[
            b"",
            b"x",
            b"m",
            b"mnothex 1 0 5 1 ab",
            b"m00000000000000ff one 0 5 1 ab",
            b"m00000000000000ff 1 0 5 9 ab",
            // The nickname length ends inside a two-byte character.
            "m00000000000000ff 1 0 5 1 éa".as_bytes(),
            b"m00000000000000ff 1 0 5 \xff ab",
        ];
        for payload in cases {
            assert_eq!(ops::parse_room_payload("lobby", payload), None, "{payload:?}");
        }
    }

    #[test]
    fn a_session_reads_back_whole() {
        for (nickname, room) in [("alice", "lobby"), ("a b", "c d"), ("", ""), ("12", "3 4")] {
            let session = Session {
                nickname: nickname.to_owned(),
                room: room.to_owned(),
                owner: format!("{room}.{nickname}"),
            };
            assert_eq!(ops::decode_session(&ops::encode_session(&session)), Some(session));
        }
        assert_eq!(ops::decode_session("nonsense"), None);
        assert_eq!(ops::decode_session("99 short"), None);
    }

    #[test]
    fn continuity_compares_the_previous_id_with_the_last_one_seen() {
        let remote = |id, prev_id| RemoteMessage {
            epoch: crate::store::Epoch(1),
            prev_id,
            message: StoredMessage {
                id,
                room: "r".to_owned(),
                nickname: "n".to_owned(),
                text: "t".to_owned(),
                ts: 0,
            },
        };
        let cases = [
            // (id, prev, last seen) → verdict
            (10, 7, 7, Continuity::Next),
            (10, 0, 0, Continuity::Next),
            (10, 9, 7, Continuity::Gap { after: 7 }),
            (10, 9, 0, Continuity::Gap { after: 0 }),
            (10, 7, 10, Continuity::Seen),
            (10, 7, 12, Continuity::Seen),
        ];
        for (id, prev, last, expected) in cases {
            assert_eq!(
                remote(id, prev).follows(last),
                expected,
                "{id} after {prev}, seen {last}"
            );
        }
    }
}
