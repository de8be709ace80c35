//! The connection state machines, driven by hand: the test plays the event loop and the server.
#![allow(clippy::disallowed_methods)] // An origin for the tests' hand-moved clock; nothing is timed.

use std::time::{Duration, Instant};

use redis_protocol::resp2::encode;
use redis_protocol::resp2::types::Resp2Frame as _;

use super::*;
use crate::store::redis::ops::Published;
use crate::store::redis::resp::{Decoder, Frame};
use crate::store::{IdempotencyKey, LeaseRef, NewMessage, Page, Range, Read, StoredMessage};

const EPOCH: Epoch = Epoch(0x0123_4567_89ab_cdef);

fn config(db: u32) -> RedisConfig {
    let mut config = RedisConfig::from_url(&format!("redis://127.0.0.1:6379/{db}")).expect("valid");
    config.keep_per_room = 100;
    config
}

/// The bytes a server sends for `frames`.
fn wire(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        let mut buf = vec![0; frame.encode_len(false)];
        let written = encode::encode(&mut buf, frame, false).expect("encodable");
        out.extend_from_slice(&buf[..written]);
    }
    out
}

fn bulk(text: &str) -> Frame {
    Frame::BulkString(text.as_bytes().to_vec())
}

fn ok() -> Frame {
    Frame::SimpleString(b"OK".to_vec())
}

fn stored(id: i64) -> Frame {
    Frame::Array(vec![Frame::Integer(0), Frame::Integer(id)])
}

fn noscript() -> Frame {
    Frame::Error("NOSCRIPT No matching script. Please use EVAL.".to_owned())
}

/// The commands written so far (each as its arguments), taken out of the output.
fn commands(output: &[u8]) -> Vec<Vec<String>> {
    let mut decoder = Decoder::new();
    decoder.feed(output);
    let mut commands = Vec::new();
    while let Some(frame) = decoder.next_frame().expect("we write RESP") {
        let Frame::Array(args) = frame else {
            panic!("a command is an array: {frame:?}");
        };
        commands.push(
            args.iter()
                .map(|arg| String::from_utf8_lossy(resp::bytes(arg).expect("bulk")).into_owned())
                .collect(),
        );
    }
    assert_eq!(decoder.buffered(), 0, "whole commands only");
    commands
}

fn take_commands(link: &mut Link) -> Vec<Vec<String>> {
    let written = commands(link.output());
    link.consume_output(link.output().len());
    written
}

fn take_events(link: &mut Link) -> Vec<Event> {
    std::iter::from_fn(|| link.poll_event()).collect()
}

fn replies(link: &mut Link) -> Vec<Reply> {
    take_events(link)
        .into_iter()
        .filter_map(|event| match event {
            Event::Reply(reply) => Some(*reply),
            _ => None,
        })
        .collect()
}

/// The answers Redis gives to a link's set-up (database `db`).
fn setup_answers(db: u32) -> Vec<Frame> {
    let mut answers = Vec::new();
    if db != 0 {
        answers.push(ok());
    }
    answers.extend(scripts::ALL.iter().map(|script| bulk(&script.sha())));
    answers.push(bulk(&EPOCH.to_string()));
    answers
}

/// A link through its set-up, at `now`, with nothing left to read or write.
fn ready_link(db: u32, now: Instant) -> Link {
    let mut link = Link::new(&config(db), 7, now);
    assert_eq!(link.poll_action(), Some(Action::Connect));
    link.connected(now);
    link.consume_output(link.output().len());
    link.receive(&wire(&setup_answers(db)), now);
    assert_eq!(take_events(&mut link), [Event::Epoch(EPOCH), Event::Ready]);
    assert_eq!(link.state(), LinkState::Ready);
    link
}

fn message(token: u64, text: &str) -> NewMessage {
    NewMessage {
        token,
        room: "lobby".to_owned(),
        nickname: "alice".to_owned(),
        text: text.to_owned(),
        ts: 1000 + token,
        key: Some(IdempotencyKey::new(format!("k{token}")).expect("valid")),
        lease: None,
    }
}

fn publish(token: u64) -> Request {
    Request::Publish {
        message: message(token, &format!("text {token}")),
        owner: None,
    }
}

fn latest(token: u64) -> Request {
    Request::Read(Read {
        token,
        room: "lobby".to_owned(),
        range: Range::Latest,
        limit: 10,
    })
}

mod setup {
    use super::*;

    #[test]
    fn a_new_link_asks_to_connect_and_writes_nothing_yet() {
        let now = Instant::now();
        let mut link = Link::new(&config(0), 7, now);
        assert_eq!(link.state(), LinkState::Connecting);
        assert_eq!(link.poll_action(), Some(Action::Connect));
        assert_eq!(link.poll_action(), None);
        link.submit(1, Request::LastId, now);
        assert!(link.output().is_empty(), "requests wait for the set-up");
        assert_eq!(link.pending(), 1);
    }

    #[test]
    fn the_set_up_selects_the_database_loads_every_script_and_reads_the_epoch() {
        for db in [0, 3] {
            let now = Instant::now();
            let mut link = Link::new(&config(db), 7, now);
            link.connected(now);
            let written = take_commands(&mut link);
            let mut expected: Vec<Vec<String>> = Vec::new();
            if db != 0 {
                expected.push(vec!["SELECT".to_owned(), db.to_string()]);
            }
            for script in scripts::ALL {
                expected.push(vec![
                    "SCRIPT".to_owned(),
                    "LOAD".to_owned(),
                    script.body.to_owned(),
                ]);
            }
            assert_eq!(written[..expected.len()], expected[..], "db {db}");
            let epoch = &written[expected.len()];
            assert_eq!(
                epoch[..4],
                [
                    "EVALSHA".to_owned(),
                    scripts::EPOCH.sha(),
                    "1".to_owned(),
                    "wschat:epoch".to_owned()
                ]
            );
            assert_eq!(written.len(), expected.len() + 1);
        }
    }

    #[test]
    fn requests_submitted_while_connecting_go_out_after_the_set_up_in_order() {
        let now = Instant::now();
        let mut link = Link::new(&config(0), 7, now);
        link.submit(1, Request::LastId, now);
        link.connected(now);
        link.submit(2, latest(2), now);
        let during = take_commands(&mut link);
        assert!(
            during
                .iter()
                .all(|command| command[0] != "GET" && command[0] != "XREVRANGE")
        );
        link.receive(&wire(&setup_answers(0)), now);
        let after = take_commands(&mut link);
        assert_eq!(after[0], ["GET", "wschat:last_id"]);
        assert_eq!(after[1][0], "XREVRANGE");
        link.receive(&wire(&[bulk("5"), Frame::Array(vec![])]), now);
        let tags: Vec<(Tag, Result<Answer, RedisError>)> = replies(&mut link)
            .into_iter()
            .map(|reply| (reply.tag, reply.result))
            .collect();
        assert_eq!(
            tags,
            [(1, Ok(Answer::LastId(5))), (2, Ok(Answer::Page(Page::default())))]
        );
    }

    #[test]
    fn a_refused_set_up_step_takes_the_link_down_and_fails_what_waited() {
        let cases = [
            (
                3,
                Frame::Error("ERR DB index is out of range".to_owned()),
                "SELECT",
            ),
            (
                0,
                bulk("0000000000000000000000000000000000000000"),
                "SCRIPT LOAD publish",
            ),
            (0, Frame::Error("NOPERM".to_owned()), "SCRIPT LOAD publish"),
        ];
        for (db, first_answer, step) in cases {
            let now = Instant::now();
            let mut link = Link::new(&config(db), 7, now);
            link.poll_action();
            link.submit(1, Request::LastId, now);
            link.connected(now);
            link.receive(&wire(&[first_answer]), now);
            let events = take_events(&mut link);
            let Some(Event::Down(DownReason::Setup(detail))) = events.first() else {
                panic!("wanted a set-up failure, got {events:?}");
            };
            assert!(detail.starts_with(step), "{detail}");
            assert!(matches!(
                &events[1],
                Event::Reply(reply) if matches!(reply.result, Err(RedisError::Unavailable(DownReason::Setup(_))))
            ));
            assert_eq!(link.poll_action(), Some(Action::Disconnect));
            assert_eq!(link.state(), LinkState::Backoff);
        }
    }

    #[test]
    fn the_epoch_is_reported_again_only_when_it_changes() {
        let now = Instant::now();
        let mut link = ready_link(0, now);
        link.lost(DownReason::Closed, now);
        take_events(&mut link);
        let later = now + Duration::from_secs(1);
        link.handle_timeout(later);
        assert_eq!(link.poll_action(), Some(Action::Connect));
        link.connected(later);
        link.receive(&wire(&setup_answers(0)), later);
        assert_eq!(take_events(&mut link), [Event::Ready], "same epoch: not reported");
    }
}

mod requests {
    use super::*;

    #[test]
    fn a_publish_is_one_evalsha_of_the_publish_script() {
        let now = Instant::now();
        let mut link = ready_link(0, now);
        link.submit(1, publish(1), now);
        let written = take_commands(&mut link);
        assert_eq!(written.len(), 1);
        assert_eq!(
            written[0][..3],
            ["EVALSHA".to_owned(), scripts::PUBLISH.sha(), "5".to_owned()]
        );
        // The epoch the link knows is what the script checks.
        assert_eq!(written[0][8], EPOCH.to_string());
    }

    #[test]
    fn pipelined_replies_come_back_in_order_whatever_the_cut() {
        let answers = wire(&[
            stored(1),
            Frame::Array(vec![Frame::Array(vec![
                bulk("1-0"),
                Frame::Array(vec![
                    bulk("n"),
                    bulk("alice"),
                    bulk("t"),
                    bulk("text 1"),
                    bulk("ts"),
                    bulk("1001"),
                ]),
            ])]),
            Frame::Array(vec![Frame::Integer(1), Frame::Integer(1)]),
        ]);
        let expected = vec![
            (1, Ok(Answer::Published(Published::Stored { id: 1 }))),
            (
                2,
                Ok(Answer::Page(Page {
                    messages: vec![StoredMessage {
                        id: 1,
                        room: "lobby".to_owned(),
                        nickname: "alice".to_owned(),
                        text: "text 1".to_owned(),
                        ts: 1001,
                    }],
                    prev: Some(0),
                    more: false,
                })),
            ),
            (3, Ok(Answer::Published(Published::Duplicate { id: 1 }))),
        ];
        for cut in 0..=answers.len() {
            let now = Instant::now();
            let mut link = ready_link(0, now);
            link.submit(1, publish(1), now);
            link.submit(2, latest(2), now);
            link.submit(3, publish(1), now);
            assert_eq!(take_commands(&mut link).len(), 3, "all three in one write");
            let (first, second) = answers.split_at(cut);
            link.receive(first, now);
            link.receive(second, now);
            let got: Vec<(Tag, Result<Answer, RedisError>)> = replies(&mut link)
                .into_iter()
                .map(|reply| (reply.tag, reply.result))
                .collect();
            assert_eq!(got, expected, "cut at {cut}");
            assert_eq!(link.pending(), 0);
        }
    }

    #[test]
    fn an_answer_needing_no_command_still_waits_its_turn() {
        let now = Instant::now();
        let mut link = ready_link(0, now);
        link.submit(1, Request::LastId, now);
        link.submit(
            2,
            Request::Read(Read {
                token: 2,
                room: "lobby".to_owned(),
                range: Range::Before(0),
                limit: 10,
            }),
            now,
        );
        assert_eq!(take_commands(&mut link).len(), 1, "Before(0) needs no command");
        assert!(
            replies(&mut link).is_empty(),
            "the local answer waits behind request 1"
        );
        link.receive(&wire(&[bulk("9")]), now);
        let tags: Vec<Tag> = replies(&mut link).iter().map(|reply| reply.tag).collect();
        assert_eq!(tags, [1, 2]);
    }

    #[test]
    fn without_pipelining_a_request_is_sent_only_after_the_previous_reply() {
        let now = Instant::now();
        let mut unpipelined = config(0);
        unpipelined.pipeline = false;
        let mut link = Link::new(&unpipelined, 7, now);
        assert_eq!(link.poll_action(), Some(Action::Connect));
        link.connected(now);
        link.consume_output(link.output().len());
        link.receive(&wire(&setup_answers(0)), now);
        take_events(&mut link);
        link.submit(1, publish(1), now);
        link.submit(2, publish(2), now);
        assert_eq!(take_commands(&mut link).len(), 1, "one at a time");
        link.receive(&wire(&[stored(1)]), now);
        assert_eq!(take_commands(&mut link).len(), 1, "the next after the reply");
        link.receive(&wire(&[stored(2)]), now);
        let tags: Vec<Tag> = replies(&mut link).iter().map(|reply| reply.tag).collect();
        assert_eq!(tags, [1, 2]);
    }

    #[test]
    fn a_store_command_becomes_one_request_per_message_with_its_owner() {
        let now = Instant::now();
        let mut link = ready_link(0, now);
        let owned = |token: u64, text: &str| NewMessage {
            lease: Some(LeaseRef {
                key: "alice".to_owned(),
                owner: format!("owner-{token}"),
            }),
            ..message(token, text)
        };
        let command = Command::Append(vec![owned(10, "a"), owned(11, "b")]);
        link.submit_command(command, now);
        link.submit_command(
            Command::Read(Read {
                token: 12,
                room: "lobby".to_owned(),
                range: Range::Since(3),
                limit: 5,
            }),
            now,
        );
        let written = take_commands(&mut link);
        let owners: Vec<&str> = written[..2].iter().map(|command| command[9].as_str()).collect();
        assert_eq!(owners, ["owner-10", "owner-11"]);
        assert_eq!(written[2][0], "XRANGE");
        link.receive(&wire(&[stored(4), stored(5), Frame::Array(vec![])]), now);
        let outcomes: Vec<_> = replies(&mut link)
            .into_iter()
            .map(|reply| reply.route().outcome().expect("store outcomes"))
            .filter_map(|outcome| outcome.token())
            .collect();
        assert_eq!(outcomes, [10, 11, 12]);
    }

    #[test]
    fn noscript_sends_the_calls_again_in_full_and_in_order_before_anything_newer() {
        let now = Instant::now();
        let mut link = ready_link(0, now);
        link.submit(1, publish(1), now);
        link.submit(2, latest(2), now);
        link.submit(3, publish(3), now);
        take_commands(&mut link);
        // The first NOSCRIPT: nothing is sent again while an older reply is still due.
        link.receive(&wire(&[noscript()]), now);
        assert!(take_commands(&mut link).is_empty());
        link.submit(4, publish(4), now);
        assert!(
            take_commands(&mut link).is_empty(),
            "newer requests wait behind the retries"
        );
        link.receive(&wire(&[Frame::Array(vec![]), noscript()]), now);
        let resent = take_commands(&mut link);
        let verbs: Vec<(&str, &str)> = resent
            .iter()
            .map(|command| (command[0].as_str(), command[command.len() - 1].as_str()))
            .collect();
        assert_eq!(
            verbs,
            [
                ("EVAL", "1001 5 alicetext 1"),
                ("EVAL", "1003 5 alicetext 3"),
                ("EVALSHA", "1004 5 alicetext 4"),
            ]
        );
        assert_eq!(resent[0][1], scripts::PUBLISH.body);
        link.receive(&wire(&[stored(1), stored(2), stored(3)]), now);
        let got: Vec<(Tag, Result<Answer, RedisError>)> = replies(&mut link)
            .into_iter()
            .map(|reply| (reply.tag, reply.result))
            .collect();
        assert_eq!(
            got,
            [
                (1, Ok(Answer::Published(Published::Stored { id: 1 }))),
                (2, Ok(Answer::Page(Page::default()))),
                (3, Ok(Answer::Published(Published::Stored { id: 2 }))),
                (4, Ok(Answer::Published(Published::Stored { id: 3 }))),
            ]
        );
    }

    #[test]
    fn a_plain_command_meeting_noscript_is_just_an_error() {
        let now = Instant::now();
        let mut link = ready_link(0, now);
        link.submit(1, Request::LastId, now);
        take_commands(&mut link);
        link.receive(&wire(&[noscript()]), now);
        let got = replies(&mut link);
        assert!(
            matches!(&got[0].result, Err(RedisError::Server(message)) if message.starts_with("NOSCRIPT"))
        );
        assert!(take_commands(&mut link).is_empty());
    }

    #[test]
    fn a_changed_epoch_is_learnt_from_the_refusal() {
        let now = Instant::now();
        let mut link = ready_link(0, now);
        link.submit(1, publish(1), now);
        take_commands(&mut link);
        let next = Epoch(0xfeed);
        link.receive(
            &wire(&[Frame::Array(vec![Frame::Integer(3), bulk(&next.to_string())])]),
            now,
        );
        let events = take_events(&mut link);
        assert_eq!(events[0], Event::Epoch(next));
        assert!(matches!(
            &events[1],
            Event::Reply(reply) if reply.result == Err(RedisError::EpochChanged { current: Some(next) })
        ));
        assert_eq!(link.epoch(), Some(next));
        link.submit(2, publish(2), now);
        assert_eq!(
            take_commands(&mut link)[0][8],
            next.to_string(),
            "new publishes carry it"
        );
    }

    #[test]
    fn a_lost_epoch_is_drawn_again() {
        let now = Instant::now();
        let mut link = ready_link(0, now);
        link.submit(1, publish(1), now);
        take_commands(&mut link);
        link.receive(&wire(&[Frame::Array(vec![Frame::Integer(3), Frame::Null])]), now);
        let written = take_commands(&mut link);
        assert_eq!(written[0][..2], ["EVALSHA".to_owned(), scripts::EPOCH.sha()]);
        let next = Epoch(0xbeef);
        link.receive(&wire(&[bulk(&next.to_string())]), now);
        let events = take_events(&mut link);
        assert!(events.contains(&Event::Epoch(next)), "{events:?}");
        assert_eq!(link.epoch(), Some(next));
    }
}

mod failures {
    use super::*;

    #[test]
    fn a_lost_connection_fails_sent_requests_as_maybe_run_and_waiting_ones_as_not_sent() {
        let now = Instant::now();
        let mut link = ready_link(0, now);
        link.submit(1, publish(1), now);
        link.submit(2, publish(2), now);
        take_commands(&mut link);
        link.receive(&wire(&[noscript()]), now);
        link.submit(3, Request::LastId, now);
        // Request 1 met NOSCRIPT (never ran), 2 is on the wire, 3 waits for the drain.
        link.lost(DownReason::Closed, now);
        let events = take_events(&mut link);
        assert_eq!(events[0], Event::Down(DownReason::Closed));
        let results: Vec<(Tag, Result<Answer, RedisError>)> = events[1..]
            .iter()
            .map(|event| match event {
                Event::Reply(reply) => (reply.tag, reply.result.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            results,
            [
                (1, Err(RedisError::Unavailable(DownReason::Closed))),
                (2, Err(RedisError::Disconnected(DownReason::Closed))),
                (3, Err(RedisError::Unavailable(DownReason::Closed))),
            ]
        );
        assert_eq!(
            link.poll_action(),
            None,
            "the loop reported the loss: its socket is gone"
        );
        assert_eq!(link.state(), LinkState::Backoff);
    }

    #[test]
    fn a_request_while_backing_off_fails_at_once() {
        let now = Instant::now();
        let mut link = ready_link(0, now);
        link.lost(DownReason::Io("reset".to_owned()), now);
        take_events(&mut link);
        link.submit(1, Request::LastId, now);
        assert_eq!(
            replies(&mut link)[0].result,
            Err(RedisError::Unavailable(DownReason::Io("reset".to_owned())))
        );
        assert!(link.output().is_empty());
    }

    #[test]
    fn a_second_loss_report_changes_nothing() {
        let now = Instant::now();
        let mut link = ready_link(0, now);
        link.lost(DownReason::Closed, now);
        take_events(&mut link);
        let wait = link.poll_timeout();
        link.lost(DownReason::Closed, now);
        assert!(take_events(&mut link).is_empty());
        assert_eq!(link.poll_timeout(), wait);
    }

    #[test]
    fn bytes_that_are_not_resp_take_the_link_down() {
        let now = Instant::now();
        let mut link = ready_link(0, now);
        link.submit(1, Request::LastId, now);
        link.receive(b"!garbage\r\n", now);
        assert!(matches!(
            take_events(&mut link)[0],
            Event::Down(DownReason::Protocol(_))
        ));
        assert_eq!(link.poll_action(), Some(Action::Disconnect));
    }

    #[test]
    fn a_reply_nobody_asked_for_takes_the_link_down() {
        let now = Instant::now();
        let mut link = ready_link(0, now);
        link.receive(&wire(&[ok()]), now);
        assert!(matches!(
            take_events(&mut link)[0],
            Event::Down(DownReason::Protocol(_))
        ));
        assert_eq!(link.poll_action(), Some(Action::Disconnect));
    }

    #[test]
    fn bytes_after_the_link_went_down_are_ignored() {
        let now = Instant::now();
        let mut link = ready_link(0, now);
        link.submit(1, Request::LastId, now);
        link.lost(DownReason::Closed, now);
        take_events(&mut link);
        link.receive(&wire(&[bulk("1")]), now);
        assert!(take_events(&mut link).is_empty());
    }

    #[test]
    fn shutdown_fails_everything_and_never_reconnects() {
        let now = Instant::now();
        let mut link = ready_link(0, now);
        link.submit(1, Request::LastId, now);
        link.shutdown(now);
        assert_eq!(
            replies(&mut link)[0].result,
            Err(RedisError::Disconnected(DownReason::Shutdown))
        );
        assert_eq!(link.poll_action(), Some(Action::Disconnect));
        assert_eq!(link.state(), LinkState::Shutdown);
        assert_eq!(link.poll_timeout(), None);
        link.submit(2, Request::LastId, now);
        assert_eq!(
            replies(&mut link)[0].result,
            Err(RedisError::Unavailable(DownReason::Shutdown))
        );
    }
}

mod timers {
    use super::*;

    #[test]
    fn a_connect_that_takes_too_long_is_given_up() {
        let now = Instant::now();
        let mut link = Link::new(&config(0), 7, now);
        link.poll_action();
        let deadline = link.poll_timeout().expect("a connect deadline");
        assert_eq!(deadline, now + Timeouts::default().connect);
        link.handle_timeout(deadline - Duration::from_millis(1));
        assert_eq!(link.state(), LinkState::Connecting);
        link.handle_timeout(deadline);
        assert_eq!(take_events(&mut link), [Event::Down(DownReason::ConnectTimeout)]);
        assert_eq!(link.poll_action(), Some(Action::Disconnect));
    }

    #[test]
    fn a_reply_that_takes_too_long_takes_the_link_down() {
        let now = Instant::now();
        let mut link = ready_link(0, now);
        let asked = now + Duration::from_secs(1);
        link.submit(1, Request::LastId, asked);
        let deadline = link.poll_timeout().expect("a reply deadline");
        assert_eq!(deadline, asked + Timeouts::default().reply);
        link.handle_timeout(deadline);
        let events = take_events(&mut link);
        assert_eq!(events[0], Event::Down(DownReason::ReplyTimeout));
        assert_eq!(link.poll_action(), Some(Action::Disconnect));
    }

    #[test]
    fn a_quiet_connection_is_pinged_and_the_pong_is_not_a_reply() {
        let now = Instant::now();
        let mut link = ready_link(0, now);
        let due = link.poll_timeout().expect("a ping time");
        assert_eq!(due, now + Timeouts::default().ping_interval);
        link.handle_timeout(due);
        assert_eq!(take_commands(&mut link), [["PING"]]);
        link.receive(&wire(&[Frame::SimpleString(b"PONG".to_vec())]), due);
        assert!(take_events(&mut link).is_empty());
        assert_eq!(link.poll_timeout(), Some(due + Timeouts::default().ping_interval));
    }

    /// Each failure doubles the wait up to the maximum; jitter keeps each wait between half and
    /// all of it; a completed set-up starts again from the minimum.
    #[test]
    fn reconnecting_backs_off_exponentially_with_jitter() {
        let timeouts = Timeouts::default();
        let mut now = Instant::now();
        let mut link = Link::new(&config(0), 7, now);
        link.poll_action();
        let mut wait = timeouts.backoff_min;
        for _ in 0..10 {
            link.lost(DownReason::ConnectFailed("refused".to_owned()), now);
            let until = link.poll_timeout().expect("a backoff");
            assert!(
                until >= now + wait / 2 && until <= now + wait,
                "{:?} for {wait:?}",
                until - now
            );
            link.handle_timeout(until - Duration::from_micros(1));
            assert_eq!(link.poll_action(), None, "not before the wait is over");
            link.handle_timeout(until);
            assert_eq!(link.poll_action(), Some(Action::Connect));
            now = until;
            wait = (wait * 2).min(timeouts.backoff_max);
        }
        assert_eq!(wait, timeouts.backoff_max);
        link.connected(now);
        link.receive(&wire(&setup_answers(0)), now);
        link.lost(DownReason::Closed, now);
        let until = link.poll_timeout().expect("a backoff");
        assert!(
            until <= now + timeouts.backoff_min,
            "reset after a good connection"
        );
    }

    #[test]
    fn two_links_with_different_seeds_do_not_reconnect_in_lockstep() {
        let now = Instant::now();
        let waits: Vec<Option<Instant>> = [1, 2]
            .iter()
            .map(|seed| {
                let mut link = Link::new(&config(0), *seed, now);
                link.lost(DownReason::Closed, now);
                link.poll_timeout()
            })
            .collect();
        assert_ne!(waits[0], waits[1]);
    }
}

mod subscriber {
    use super::*;

    fn push(kind: &str, channel: &str, payload: Frame) -> Frame {
        Frame::Array(vec![bulk(kind), bulk(channel), payload])
    }

    fn confirm(channel: &str, count: i64) -> Frame {
        push("subscribe", channel, Frame::Integer(count))
    }

    fn take_commands(subscriber: &mut Subscriber) -> Vec<Vec<String>> {
        let written = commands(subscriber.output());
        subscriber.consume_output(subscriber.output().len());
        written
    }

    fn take_events(subscriber: &mut Subscriber) -> Vec<SubEvent> {
        std::iter::from_fn(|| subscriber.poll_event()).collect()
    }

    /// A subscriber to `rooms`, up, at `now`.
    fn up(rooms: &[&str], now: Instant) -> Subscriber {
        let config = config(0);
        let keys = config.keys();
        let mut subscriber = Subscriber::new(&config, "n1", 7, now);
        for room in rooms {
            subscriber.subscribe(room, now);
        }
        assert_eq!(subscriber.poll_action(), Some(Action::Connect));
        subscriber.connected(now);
        take_commands(&mut subscriber);
        let mut confirmations = vec![confirm(&keys.node_channel("n1"), 1)];
        confirmations.extend(rooms.iter().map(|room| confirm(&keys.room_channel(room), 2)));
        subscriber.receive(&wire(&confirmations), now);
        assert_eq!(take_events(&mut subscriber), [SubEvent::Up]);
        subscriber
    }

    fn announcement(id: u64, prev: u64) -> Frame {
        bulk(&format!("m{EPOCH} {id} {prev} 1700 5 alicehello"))
    }

    #[test]
    fn connecting_subscribes_to_the_node_and_every_room_in_one_command() {
        let now = Instant::now();
        let mut subscriber = Subscriber::new(&config(0), "n1", 7, now);
        subscriber.subscribe("lobby", now);
        subscriber.subscribe("rust", now);
        assert!(subscriber.output().is_empty(), "nothing before the connection");
        subscriber.connected(now);
        assert_eq!(
            take_commands(&mut subscriber),
            [[
                "SUBSCRIBE",
                "wschat:0:node:n1",
                "wschat:0:room:lobby",
                "wschat:0:room:rust"
            ]]
        );
        subscriber.receive(
            &wire(&[confirm("wschat:0:node:n1", 1), confirm("wschat:0:room:lobby", 2)]),
            now,
        );
        assert!(
            take_events(&mut subscriber).is_empty(),
            "up only once every channel is confirmed"
        );
        subscriber.receive(&wire(&[confirm("wschat:0:room:rust", 3)]), now);
        assert_eq!(take_events(&mut subscriber), [SubEvent::Up]);
        assert_eq!(subscriber.state(), LinkState::Ready);
    }

    #[test]
    fn an_announcement_is_a_typed_message_whatever_the_cut() {
        let bytes = wire(&[push("message", "wschat:0:room:lobby", announcement(42, 40))]);
        let expected = vec![SubEvent::Message(RemoteMessage {
            epoch: EPOCH,
            prev_id: 40,
            message: StoredMessage {
                id: 42,
                room: "lobby".to_owned(),
                nickname: "alice".to_owned(),
                text: "hello".to_owned(),
                ts: 1700,
            },
        })];
        for cut in 0..=bytes.len() {
            let now = Instant::now();
            let mut subscriber = up(&["lobby"], now);
            let (first, second) = bytes.split_at(cut);
            subscriber.receive(first, now);
            subscriber.receive(second, now);
            assert_eq!(take_events(&mut subscriber), expected, "cut at {cut}");
        }
    }

    #[test]
    fn room_events_and_node_messages_come_out_as_sent() {
        let now = Instant::now();
        let mut subscriber = up(&["lobby"], now);
        subscriber.receive(
            &wire(&[
                push("message", "wschat:0:room:lobby", bulk("ejoined alice")),
                push("message", "wschat:0:node:n1", bulk("close 9")),
            ]),
            now,
        );
        assert_eq!(
            take_events(&mut subscriber),
            [
                SubEvent::RoomEvent {
                    room: "lobby".to_owned(),
                    data: b"joined alice".to_vec()
                },
                SubEvent::NodeMessage(b"close 9".to_vec()),
            ]
        );
    }

    #[test]
    fn messages_for_rooms_not_subscribed_or_other_nodes_are_not_ours() {
        let now = Instant::now();
        let mut subscriber = up(&["lobby"], now);
        subscriber.receive(
            &wire(&[
                push("message", "wschat:0:room:rust", announcement(1, 0)),
                push("message", "wschat:0:node:n2", bulk("close 9")),
                push("message", "wschat:0:room:lobby", bulk("garbage")),
            ]),
            now,
        );
        assert!(take_events(&mut subscriber).is_empty());
    }

    #[test]
    fn a_room_joined_while_up_is_subscribed_at_once_and_confirmed() {
        let now = Instant::now();
        let mut subscriber = up(&["lobby"], now);
        subscriber.subscribe("rust", now);
        subscriber.subscribe("rust", now);
        assert_eq!(
            take_commands(&mut subscriber),
            [["SUBSCRIBE", "wschat:0:room:rust"]]
        );
        subscriber.receive(&wire(&[confirm("wschat:0:room:rust", 3)]), now);
        assert_eq!(
            take_events(&mut subscriber),
            [SubEvent::Subscribed {
                room: "rust".to_owned()
            }]
        );
        subscriber.unsubscribe("lobby", now);
        assert_eq!(
            take_commands(&mut subscriber),
            [["UNSUBSCRIBE", "wschat:0:room:lobby"]]
        );
        subscriber.receive(
            &wire(&[push("unsubscribe", "wschat:0:room:lobby", Frame::Integer(2))]),
            now,
        );
        assert!(take_events(&mut subscriber).is_empty());
        assert_eq!(subscriber.rooms().collect::<Vec<_>>(), ["rust"]);
    }

    #[test]
    fn a_dropped_subscription_comes_back_with_every_room() {
        let now = Instant::now();
        let mut subscriber = up(&["lobby"], now);
        subscriber.lost(DownReason::Closed, now);
        assert_eq!(take_events(&mut subscriber), [SubEvent::Down(DownReason::Closed)]);
        // Joined while down: part of the next subscription, no separate confirmation.
        subscriber.subscribe("rust", now);
        assert!(subscriber.output().is_empty());
        let later = subscriber.poll_timeout().expect("a backoff");
        subscriber.handle_timeout(later);
        assert_eq!(subscriber.poll_action(), Some(Action::Connect));
        subscriber.connected(later);
        assert_eq!(
            take_commands(&mut subscriber),
            [[
                "SUBSCRIBE",
                "wschat:0:node:n1",
                "wschat:0:room:lobby",
                "wschat:0:room:rust"
            ]]
        );
    }

    #[test]
    fn a_refused_subscription_takes_the_subscriber_down() {
        let now = Instant::now();
        let mut subscriber = Subscriber::new(&config(0), "n1", 7, now);
        subscriber.connected(now);
        subscriber.receive(&wire(&[Frame::Error("NOPERM".to_owned())]), now);
        assert!(matches!(
            take_events(&mut subscriber)[..],
            [SubEvent::Down(DownReason::Setup(_))]
        ));
    }

    #[test]
    fn a_quiet_subscription_is_pinged_and_dropped_if_the_pong_never_comes() {
        let now = Instant::now();
        let mut subscriber = up(&[], now);
        let due = subscriber.poll_timeout().expect("a ping time");
        subscriber.handle_timeout(due);
        assert_eq!(take_commands(&mut subscriber), [["PING"]]);
        subscriber.receive(&wire(&[Frame::Array(vec![bulk("pong"), bulk("")])]), due);
        assert!(take_events(&mut subscriber).is_empty());
        let next = subscriber.poll_timeout().expect("the next ping");
        subscriber.handle_timeout(next);
        take_commands(&mut subscriber);
        let deadline = subscriber.poll_timeout().expect("a pong deadline");
        subscriber.handle_timeout(deadline);
        assert_eq!(
            take_events(&mut subscriber),
            [SubEvent::Down(DownReason::ReplyTimeout)]
        );
        assert_eq!(subscriber.poll_action(), Some(Action::Disconnect));
    }
}
