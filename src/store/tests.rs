//! The storage-agnostic boundary: keys, epochs and the handle's promises that need no database.

use super::*;

#[test]
fn idempotency_key_is_1_to_64_printable_ascii() {
    let longest = "k".repeat(MAX_KEY_LEN);
    let too_long = "k".repeat(MAX_KEY_LEN + 1);
    let cases: &[(&str, Result<(), KeyError>)] = &[
        ("a", Ok(())),
        (" ", Ok(())),
        ("~", Ok(())),
        ("0f8fad5b-d9cb-469f-a165-70867728950e", Ok(())),
        (&longest, Ok(())),
        ("", Err(KeyError::Empty)),
        (&too_long, Err(KeyError::TooLong { len: MAX_KEY_LEN + 1 })),
        ("tab\there", Err(KeyError::NotPrintableAscii { position: 3 })),
        ("del\x7f", Err(KeyError::NotPrintableAscii { position: 3 })),
        ("é", Err(KeyError::NotPrintableAscii { position: 0 })),
        ("new\nline", Err(KeyError::NotPrintableAscii { position: 3 })),
    ];
    for (key, expected) in cases {
        let result = IdempotencyKey::new(*key);
        assert_eq!(
            result.as_ref().map(|_| ()),
            expected.as_ref().map(|_| ()),
            "{key:?}"
        );
        if let Ok(accepted) = result {
            assert_eq!(accepted.as_str(), *key);
        }
    }
}

#[test]
fn epoch_is_sixteen_hex_digits_and_reads_back() {
    for value in [0, 1, 0xdead_beef, u64::MAX] {
        let text = Epoch(value).to_string();
        assert_eq!(text.len(), 16, "{text}");
        assert_eq!(Epoch::parse(&text), Some(Epoch(value)));
    }
    for bad in ["", "123", "0123456789abcdefa", "0123456789abcdeg"] {
        assert_eq!(Epoch::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn new_epochs_come_from_the_random_source() {
    // Two draws equal by chance: one in 2^64.
    assert_ne!(Epoch::random().unwrap(), Epoch::random().unwrap());
}

/// A backend that answers every message with `Stored { id: token }` and every read with an empty
/// page, counting its turns.
struct Echo {
    turns: Arc<AtomicU64>,
}

impl Backend for Echo {
    fn run_turn(&mut self, commands: Vec<Command>, shared: &Shared) -> Vec<Outcome> {
        self.turns.fetch_add(1, Ordering::Relaxed);
        let mut outcomes = Vec::new();
        for command in commands {
            match command {
                Command::Append(messages) => {
                    shared.record_commit(messages.len() as u64);
                    outcomes.extend(messages.into_iter().map(|message| Outcome::Append {
                        token: message.token,
                        result: Ok(Appended::Stored { id: message.token }),
                    }))
                }
                Command::Read(read) => outcomes.push(Outcome::Read {
                    token: read.token,
                    result: Ok(Page::default()),
                }),
                _ => {}
            }
        }
        outcomes
    }

    fn upkeep_pending(&self) -> bool {
        false
    }

    fn upkeep(&mut self, _: &Shared) {}
}

fn message(token: Token) -> NewMessage {
    NewMessage {
        token,
        room: "lobby".to_owned(),
        nickname: "ann".to_owned(),
        text: format!("message {token}"),
        ts: 0,
        key: None,
        lease: None,
    }
}

fn read(token: Token) -> Command {
    Command::Read(Read {
        token,
        room: "lobby".to_owned(),
        range: Range::Latest,
        limit: 10,
    })
}

#[test]
fn close_finishes_every_queued_command_first() {
    let turns = Arc::new(AtomicU64::new(0));
    let mut handle = StoreHandle::start(
        Echo {
            turns: Arc::clone(&turns),
        },
        Box::new(|| {}),
    )
    .unwrap();
    for token in 0..50 {
        handle
            .submit(vec![Command::Append(vec![message(token)]), read(1000 + token)])
            .unwrap();
    }
    handle.close().unwrap();
    let tokens: Vec<Token> = handle
        .try_results()
        .filter_map(|outcome| outcome.token())
        .collect();
    let expected: Vec<Token> = (0..50).flat_map(|token| [token, 1000 + token]).collect();
    assert_eq!(tokens, expected);
    assert!(turns.load(Ordering::Relaxed) >= 1);
}

#[test]
fn submit_after_close_answers_every_token_with_stopped() {
    let mut handle = StoreHandle::start(
        Echo {
            turns: Arc::default(),
        },
        Box::new(|| {}),
    )
    .unwrap();
    handle.close().unwrap();
    let commands = vec![Command::Append(vec![message(1), message(2)]), read(3)];
    assert_eq!(handle.submit(commands), Err(StoreError::Stopped));
    let outcomes: Vec<Outcome> = handle.try_results().collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Append {
                token: 1,
                result: Err(StoreError::Stopped)
            },
            Outcome::Append {
                token: 2,
                result: Err(StoreError::Stopped)
            },
            Outcome::Read {
                token: 3,
                result: Err(StoreError::Stopped)
            },
        ]
    );
}

#[test]
fn an_empty_submit_is_not_a_turn() {
    let turns = Arc::new(AtomicU64::new(0));
    let mut handle = StoreHandle::start(
        Echo {
            turns: Arc::clone(&turns),
        },
        Box::new(|| {}),
    )
    .unwrap();
    handle.submit(Vec::new()).unwrap();
    handle.close().unwrap();
    assert_eq!(turns.load(Ordering::Relaxed), 0);
}

#[test]
fn every_runtime_error_displays_as_one_line() {
    let errors = [
        StoreError::DiskFull,
        StoreError::ReadOnly,
        StoreError::Io("disk I/O error".to_owned()),
        StoreError::Corrupt("database disk image is malformed".to_owned()),
        StoreError::Stopped,
        StoreError::SimulatedFailure,
        StoreError::Other("something".to_owned()),
    ];
    for error in errors {
        let line = error.to_string();
        assert!(line.starts_with("message store unavailable: "), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }
}
