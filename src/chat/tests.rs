//! The chat protocol, rule by rule, without sockets.
//!
//! A [`Harness`] drives a [`Chat`] with a clock the test moves by hand and an in-memory store
//! ([`MemoryStore`]) that answers every store effect at once, unless a test holds the answers back;
//! it decodes the [`Action`]s the chat returns, so each test reads as "client 1 sends this, client 2
//! is sent that".
#![allow(clippy::disallowed_methods)] // An origin for the tests' hand-moved clock; nothing is timed.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::store::memory::MemoryStore;
use crate::testing::{TEST_EPOCH, counting_tokens};

/// Tests name sessions by plain numbers.
type ClientId = u64;

/// Decodes one serialized event.
fn json_of(json: &str) -> Value {
    serde_json::from_str(json).unwrap()
}

/// Everything `client` was sent by `actions`, as JSON, in order. Also checks that no action names
/// a recipient twice (every frame reaches each recipient once).
fn sent_to(actions: &[Action], client: ClientId) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Send { to, json } if to.contains(&SessionId(client)) => {
                let copies = to.iter().filter(|member| **member == SessionId(client)).count();
                assert_eq!(copies, 1, "{to:?}");
                Some(json_of(json))
            }
            _ => None,
        })
        .collect()
}

/// The `type` of everything `client` was sent.
fn types_sent_to(actions: &[Action], client: ClientId) -> Vec<String> {
    sent_to(actions, client)
        .iter()
        .map(|message| message["type"].as_str().unwrap().to_owned())
        .collect()
}

/// The one message of type `kind` that `client` was sent.
fn only(actions: &[Action], client: ClientId, kind: &str) -> Value {
    let matching: Vec<Value> = sent_to(actions, client)
        .into_iter()
        .filter(|message| message["type"] == kind)
        .collect();
    assert_eq!(matching.len(), 1, "{kind} to client {client}: {matching:?}");
    matching.into_iter().next().unwrap()["payload"].clone()
}

/// Every client that `actions` sends anything to.
fn recipients(actions: &[Action]) -> BTreeSet<ClientId> {
    actions
        .iter()
        .flat_map(|action| match action {
            Action::Send { to, .. } => to.iter().map(|session| session.0).collect(),
            Action::Close { .. } | Action::Store(_) => Vec::new(),
        })
        .collect()
}

/// The Close actions among `actions`.
fn closes(actions: &[Action]) -> Vec<(ClientId, CloseCode)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Close { client, code, .. } => Some((client.0, *code)),
            Action::Send { .. } | Action::Store(_) => None,
        })
        .collect()
}

/// Asserts that `actions` is exactly one `error` with `code`, to `client` alone.
#[track_caller]
fn assert_error(actions: &[Action], client: ClientId, code: &str) {
    assert_eq!(recipients(actions), BTreeSet::from([client]), "{actions:?}");
    assert!(closes(actions).is_empty(), "bad input never closes: {actions:?}");
    let sent = sent_to(actions, client);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["type"], "error", "{sent:?}");
    assert_eq!(sent[0]["payload"]["code"], code, "{sent:?}");
    assert!(
        sent[0]["payload"]["message"]
            .as_str()
            .is_some_and(|text| !text.is_empty()),
        "{sent:?}"
    );
}

const EPOCH_MS: u64 = 1_700_000_000_000;

/// Default policies, but a rate limit no test trips by accident.
fn generous() -> ChatConfig {
    ChatConfig {
        rate_limit: 1e6,
        rate_burst: 1_000_000,
        ..ChatConfig::default()
    }
}

/// A chat, a store and a clock that only moves when told to.
struct Harness {
    chat: Chat,
    store: MemoryStore,
    /// Store commands not yet answered (while `hold_store` is on).
    held: Vec<Command>,
    hold_store: bool,
    start: Instant,
    elapsed: Duration,
}

impl Harness {
    fn new(config: ChatConfig) -> Self {
        Self {
            chat: Chat::new(config, TEST_EPOCH.into(), counting_tokens()),
            store: MemoryStore::new(10_000),
            held: Vec::new(),
            hold_store: false,
            start: Instant::now(),
            elapsed: Duration::ZERO,
        }
    }

    /// Runs the store effects among `actions` (unless held), feeding the answers back, until the
    /// chat asks for nothing more; the answers' actions are appended.
    fn settle(&mut self, actions: &mut Vec<Action>) {
        let mut done = 0;
        loop {
            let commands: Vec<Command> = actions[done..]
                .iter()
                .filter_map(|action| match action {
                    Action::Store(command) => Some(command.clone()),
                    _ => None,
                })
                .collect();
            done = actions.len();
            if self.hold_store {
                self.held.extend(commands);
                return;
            }
            if commands.is_empty() {
                return;
            }
            for outcome in self.store.execute(commands, self.start + self.elapsed) {
                self.chat.on_store(outcome, actions);
            }
        }
    }

    /// Answers every held store command now; returns what the answers caused.
    fn release_store(&mut self) -> Vec<Action> {
        self.hold_store = false;
        let mut actions = Vec::new();
        for outcome in self
            .store
            .execute(std::mem::take(&mut self.held), self.start + self.elapsed)
        {
            self.chat.on_store(outcome, &mut actions);
        }
        self.settle(&mut actions);
        actions
    }

    /// Default policies, but a rate limit no test trips by accident.
    fn unlimited() -> Self {
        Self::new(generous())
    }

    fn now(&self) -> Now {
        Now {
            instant: self.start + self.elapsed,
            unix_ms: EPOCH_MS + self.elapsed.as_millis() as u64,
        }
    }

    fn advance(&mut self, by: Duration) {
        self.elapsed += by;
    }

    fn connect(&mut self, id: ClientId) -> Vec<Action> {
        // Each client from an address of its own, unless a test says otherwise.
        self.connect_from(id, IpAddr::V4(Ipv4Addr::from(0xc000_0200 + id as u32)))
    }

    fn connect_from(&mut self, id: ClientId, addr: IpAddr) -> Vec<Action> {
        let mut actions = Vec::new();
        let now = self.now();
        self.chat.connect(SessionId(id), addr, now, &mut actions);
        self.settle(&mut actions);
        actions
    }

    fn disconnect(&mut self, id: ClientId) -> Vec<Action> {
        let mut actions = Vec::new();
        let now = self.now();
        self.chat.disconnect(SessionId(id), now, &mut actions);
        self.settle(&mut actions);
        actions
    }

    fn text(&mut self, id: ClientId, text: &str) -> Vec<Action> {
        let mut actions = Vec::new();
        let now = self.now();
        self.chat.on_text(SessionId(id), text, now, &mut actions);
        self.settle(&mut actions);
        actions
    }

    fn send(&mut self, id: ClientId, kind: &str, payload: Value) -> Vec<Action> {
        self.text(id, &json!({ "type": kind, "payload": payload }).to_string())
    }

    /// Posts `text` and returns the id the sender was acknowledged with.
    #[track_caller]
    fn post(&mut self, id: ClientId, text: &str) -> u64 {
        let actions = self.send(id, "message", json!(text));
        only(&actions, id, "ack")["id"].as_u64().unwrap()
    }

    #[track_caller]
    fn rename(&mut self, id: ClientId, nickname: &str) {
        let actions = self.send(id, "nickname", json!(nickname));
        only(&actions, id, "renamed");
    }

    #[track_caller]
    fn join(&mut self, id: ClientId, room: &str) {
        let actions = self.send(id, "join", json!(room));
        only(&actions, id, "welcome");
    }

    /// The payload of the `history` answer to `{"since": since}`.
    #[track_caller]
    fn history(&mut self, id: ClientId, since: u64) -> Value {
        let actions = self.send(id, "history", json!({ "since": since }));
        assert_eq!(recipients(&actions), BTreeSet::from([id]));
        only(&actions, id, "history")
    }
}

/// The texts of a list of chat messages.
fn texts(messages: &Value) -> Vec<&str> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["text"].as_str().unwrap())
        .collect()
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|name| name.as_str().unwrap())
        .collect()
}

// --- connecting, welcome, disconnecting ---

#[test]
fn connecting_client_gets_welcome_with_a_default_nickname_in_the_lobby() {
    let mut h = Harness::new(ChatConfig::default());
    let actions = h.connect(1);
    assert_eq!(recipients(&actions), BTreeSet::from([1]));
    let welcome = &sent_to(&actions, 1)[0];
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["payload"]["nickname"], "Anonymous1");
    assert_eq!(welcome["payload"]["room"], "lobby");
    assert_eq!(welcome["payload"]["online"], json!(["Anonymous1"]));
    assert_eq!(welcome["payload"]["history"], json!([]));
}

#[test]
fn default_nicknames_count_up_and_skip_names_already_taken() {
    let mut h = Harness::unlimited();
    assert_eq!(only(&h.connect(1), 1, "welcome")["nickname"], "Anonymous1");
    h.rename(1, "anonymous2");
    assert_eq!(only(&h.connect(2), 2, "welcome")["nickname"], "Anonymous3");
    assert_eq!(only(&h.connect(3), 3, "welcome")["nickname"], "Anonymous4");
}

#[test]
fn welcome_lists_who_is_online_in_the_room_and_its_history() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.rename(1, "bob");
    h.connect(2);
    h.rename(2, "Alice");
    h.connect(3);
    h.join(3, "elsewhere");
    h.post(1, "first");
    h.post(2, "second");
    h.post(3, "not in the lobby");

    let welcome = only(&h.connect(4), 4, "welcome");
    assert_eq!(welcome["room"], "lobby");
    // Sorted case-insensitively, the newcomer included, other rooms' members not.
    assert_eq!(names(&welcome["online"]), ["Alice", "Anonymous4", "bob"]);
    assert_eq!(texts(&welcome["history"]), ["first", "second"]);
    let first = &welcome["history"][0];
    assert_eq!(first["nickname"], "bob");
    assert_eq!(first["room"], "lobby");
    assert_eq!(first["ts"], EPOCH_MS);
}

#[test]
fn welcome_history_is_bounded_by_history_size() {
    let mut h = Harness::new(ChatConfig {
        history_size: 3,
        ..generous()
    });
    h.connect(1);
    for n in 1..=5 {
        h.post(1, &format!("m{n}"));
    }
    let welcome = only(&h.connect(2), 2, "welcome");
    assert_eq!(texts(&welcome["history"]), ["m3", "m4", "m5"]);
}

#[test]
fn connecting_tells_the_room_joined_but_not_the_newcomer() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    h.join(2, "rust");
    let actions = h.connect(3);
    assert_eq!(types_sent_to(&actions, 3), ["welcome"]);
    assert_eq!(
        only(&actions, 1, "joined"),
        json!({"room": "lobby", "nickname": "Anonymous3"})
    );
    assert!(sent_to(&actions, 2).is_empty(), "other rooms hear nothing");
}

#[test]
fn disconnect_tells_the_room_left() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    h.connect(3);
    h.join(3, "rust");
    h.rename(2, "bob");
    let actions = h.disconnect(2);
    assert_eq!(
        only(&actions, 1, "left"),
        json!({"room": "lobby", "nickname": "bob"})
    );
    assert_eq!(recipients(&actions), BTreeSet::from([1]));
    assert!(!h.chat.contains(SessionId(2)));
    assert_eq!(h.chat.client_count(), 2);
    assert!(h.disconnect(2).is_empty(), "a second disconnect is a no-op");
    assert!(
        h.text(2, r#"{"type":"message","payload":"hi"}"#).is_empty(),
        "nor can it talk"
    );
}

#[test]
fn disconnect_frees_the_nickname() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    h.rename(1, "alice");
    assert_error(&h.send(2, "nickname", json!("Alice")), 2, "nickname_taken");
    h.disconnect(1);
    h.rename(2, "Alice");
    // The default name of the one who left is free again too.
    h.connect(3);
    h.rename(3, "anonymous1");
}

// --- nicknames ---

#[test]
fn nickname_renames_and_tells_the_whole_room_including_the_sender() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    h.connect(3);
    h.join(3, "rust");
    let actions = h.send(1, "nickname", json!("  alice  "));
    let expected = json!({"room": "lobby", "from": "Anonymous1", "to": "alice"});
    assert_eq!(only(&actions, 1, "renamed"), expected);
    assert_eq!(only(&actions, 2, "renamed"), expected);
    assert_eq!(
        recipients(&actions),
        BTreeSet::from([1, 2]),
        "other rooms hear nothing"
    );
    // The new name is the one messages carry.
    let message = only(&h.send(1, "message", json!("hi")), 2, "message");
    assert_eq!(message["nickname"], "alice");
}

#[test]
fn nickname_taken_is_case_insensitive() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    h.rename(1, "Alice");
    for taken in ["Alice", "alice", "ALICE", " aLiCe ", "anonymous1", "Anonymous1"] {
        if taken.eq_ignore_ascii_case("anonymous1") {
            // Client 1's default name was freed by its rename; client 2's is still held.
            h.rename(2, taken);
            h.rename(2, "Anonymous2");
            continue;
        }
        assert_error(&h.send(2, "nickname", json!(taken)), 2, "nickname_taken");
    }
    assert_error(&h.send(1, "nickname", json!("ANONYMOUS2")), 1, "nickname_taken");
}

#[test]
fn nickname_taken_is_case_insensitive_beyond_ascii() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    h.rename(1, "Ödön");
    assert_error(&h.send(2, "nickname", json!("öDÖN")), 2, "nickname_taken");
}

#[test]
fn renaming_to_your_own_name_in_another_case_is_allowed() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    h.rename(1, "alice");
    let actions = h.send(1, "nickname", json!("ALICE"));
    assert_eq!(only(&actions, 2, "renamed")["from"], "alice");
    assert_eq!(only(&actions, 2, "renamed")["to"], "ALICE");
    // Still held by client 1 in every case.
    assert_error(&h.send(2, "nickname", json!("alice")), 2, "nickname_taken");
}

#[test]
fn renaming_frees_the_old_nickname() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    h.rename(1, "alice");
    h.rename(1, "bob");
    h.rename(2, "alice");
    assert_error(&h.send(2, "nickname", json!("bob")), 2, "nickname_taken");
}

#[test]
fn invalid_nicknames_are_bad_payload() {
    let cases: &[(&str, Value)] = &[
        ("empty", json!("")),
        ("only spaces", json!("   ")),
        ("33 characters", json!("a".repeat(33))),
        ("33 characters, multi-byte", json!("é".repeat(33))),
        ("bell inside", json!("al\u{7}ice")),
        ("newline inside", json!("al\nice")),
        ("escape inside", json!("\u{1b}[31mred")),
        ("DEL inside", json!("al\u{7f}ice")),
        ("C1 control inside", json!("al\u{85}ice")),
        ("number", json!(42)),
        ("null", Value::Null),
        ("object", json!({"name": "alice"})),
        ("array", json!(["alice"])),
        ("bool", json!(true)),
    ];
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    for (case, payload) in cases {
        let actions = h.send(1, "nickname", payload.clone());
        assert_eq!(recipients(&actions), BTreeSet::from([1]), "{case}");
        assert_error(&actions, 1, "bad_payload");
    }
    // A missing payload too.
    assert_error(&h.text(1, r#"{"type":"nickname"}"#), 1, "bad_payload");
    // Nothing changed.
    assert_eq!(
        only(&h.send(1, "message", json!("hi")), 2, "message")["nickname"],
        "Anonymous1"
    );
}

#[test]
fn valid_nicknames_at_the_limits() {
    let cases = [
        ("one character", "x".to_owned(), "x".to_owned()),
        ("32 characters", "a".repeat(32), "a".repeat(32)),
        ("32 multi-byte characters", "😀".repeat(32), "😀".repeat(32)),
        (
            "32 after trimming",
            format!("  {}\t\n", "b".repeat(32)),
            "b".repeat(32),
        ),
        ("an inner space", "a b".to_owned(), "a b".to_owned()),
    ];
    let mut h = Harness::unlimited();
    h.connect(1);
    for (case, raw, expected) in cases {
        let actions = h.send(1, "nickname", json!(raw));
        assert_eq!(only(&actions, 1, "renamed")["to"], expected.as_str(), "{case}");
    }
}

// --- messages ---

#[test]
fn message_goes_to_everyone_else_in_the_room_and_the_sender_gets_an_ack() {
    let mut h = Harness::unlimited();
    for id in 1..=4 {
        h.connect(id);
    }
    h.join(4, "rust");
    h.rename(1, "alice");
    h.advance(Duration::from_millis(1234));
    let actions = h.send(1, "message", json!("hello"));

    assert_eq!(
        types_sent_to(&actions, 1),
        ["ack"],
        "the sender gets an ack, not the message"
    );
    let ack = only(&actions, 1, "ack");
    let expected = json!({
        "id": ack["id"],
        "room": "lobby",
        "nickname": "alice",
        "text": "hello",
        "ts": EPOCH_MS + 1234,
    });
    for other in [2, 3] {
        assert_eq!(types_sent_to(&actions, other), ["message"]);
        assert_eq!(only(&actions, other, "message"), expected);
    }
    assert!(sent_to(&actions, 4).is_empty(), "other rooms hear nothing");
}

#[test]
fn message_text_is_kept_as_sent() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    for text in [
        "  padded  ",
        "line\nbreak",
        "quote \" and \\ backslash",
        "ünïcødé 😀",
        "<b>html</b>",
    ] {
        let actions = h.send(1, "message", json!(text));
        assert_eq!(only(&actions, 2, "message")["text"], text);
    }
}

#[test]
fn message_alone_in_a_room_is_still_acked_and_kept() {
    let mut h = Harness::unlimited();
    h.connect(1);
    let id = h.post(1, "anyone?");
    assert_eq!(texts(&h.history(1, 0)["messages"]), ["anyone?"]);
    assert_eq!(h.history(1, 0)["messages"][0]["id"], id);
}

#[test]
fn message_ids_increase_across_senders_and_rooms() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    h.connect(3);
    h.join(3, "rust");
    let mut ids = Vec::new();
    for round in 0..5 {
        for id in [1, 2, 3] {
            ids.push(h.post(id, &format!("{id}:{round}")));
        }
    }
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    assert!(ids[0] > 0);
}

#[test]
fn every_receiver_sees_messages_in_accepted_order() {
    let mut h = Harness::unlimited();
    for id in 1..=3 {
        h.connect(id);
    }
    let mut seen: HashMap<ClientId, Vec<u64>> = HashMap::new();
    for round in 0..10 {
        for sender in 1..=3 {
            let actions = h.send(sender, "message", json!(format!("{sender}:{round}")));
            for receiver in 1..=3 {
                for message in sent_to(&actions, receiver) {
                    if message["type"] == "message" {
                        seen.entry(receiver)
                            .or_default()
                            .push(message["payload"]["id"].as_u64().unwrap());
                    }
                }
            }
        }
    }
    for receiver in 1..=3 {
        let ids = &seen[&receiver];
        assert_eq!(ids.len(), 20, "each receives the others' 20 messages");
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    }
}

#[test]
fn empty_messages_are_bad_payload() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    for text in ["", " ", "\n\t "] {
        assert_error(&h.send(1, "message", json!(text)), 1, "bad_payload");
    }
    assert_eq!(h.history(1, 0)["messages"], json!([]));
}

#[test]
fn control_characters_other_than_newline_and_tab_are_bad_payload() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    for text in ["bell\u{7}", "nul\u{0}", "esc\u{1b}[31m", "c1\u{85}"] {
        assert_error(&h.send(1, "message", json!(text)), 1, "bad_payload");
    }
    let text = "two\nlines\tand a tab";
    assert_eq!(
        only(&h.send(1, "message", json!(text)), 2, "message")["text"],
        text
    );
}

#[test]
fn too_long_counts_characters_not_bytes() {
    let mut h = Harness::new(ChatConfig {
        max_text_chars: 10,
        ..generous()
    });
    h.connect(1);
    h.connect(2);
    // At the limit, in 1-, 2- and 4-byte characters: accepted.
    for text in ["a".repeat(10), "é".repeat(10), "😀".repeat(10)] {
        assert_eq!(
            only(&h.send(1, "message", json!(text)), 2, "message")["text"],
            text.as_str()
        );
    }
    for text in ["a".repeat(11), "é".repeat(11), "😀".repeat(11)] {
        let actions = h.send(1, "message", json!(text));
        assert_error(&actions, 1, "too_long");
    }
    assert_eq!(
        h.history(1, 0)["messages"].as_array().unwrap().len(),
        3,
        "rejected ones are not kept"
    );
}

#[test]
fn too_long_with_default_limit() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.post(1, &"x".repeat(2000));
    assert_error(&h.send(1, "message", json!("x".repeat(2001))), 1, "too_long");
}

// --- rooms ---

#[test]
fn join_moves_to_the_room_with_welcome_left_and_joined() {
    let mut h = Harness::unlimited();
    for id in 1..=4 {
        h.connect(id);
    }
    h.join(3, "rust");
    h.join(4, "go");
    h.rename(1, "alice");
    h.rename(3, "carol");
    let actions = h.send(1, "join", json!("rust"));

    let welcome = only(&actions, 1, "welcome");
    assert_eq!(welcome["room"], "rust");
    assert_eq!(welcome["nickname"], "alice");
    assert_eq!(names(&welcome["online"]), ["alice", "carol"]);
    assert_eq!(types_sent_to(&actions, 1), ["welcome"], "no notice about oneself");
    assert_eq!(types_sent_to(&actions, 2), ["left"]);
    assert_eq!(
        only(&actions, 2, "left"),
        json!({"room": "lobby", "nickname": "alice"})
    );
    assert_eq!(types_sent_to(&actions, 3), ["joined"]);
    assert_eq!(
        only(&actions, 3, "joined"),
        json!({"room": "rust", "nickname": "alice"})
    );
    assert!(sent_to(&actions, 4).is_empty());
}

#[test]
fn join_welcome_carries_the_new_rooms_history() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    h.post(1, "in the lobby");
    h.join(1, "rust");
    h.post(1, "in rust");
    let welcome = only(&h.send(2, "join", json!("rust")), 2, "welcome");
    assert_eq!(texts(&welcome["history"]), ["in rust"]);
    let welcome = only(&h.send(2, "join", json!("lobby")), 2, "welcome");
    assert_eq!(texts(&welcome["history"]), ["in the lobby"]);
}

#[test]
fn join_trims_and_room_names_are_case_sensitive() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    assert_eq!(
        only(&h.send(1, "join", json!("  rust ")), 1, "welcome")["room"],
        "rust"
    );
    let actions = h.send(2, "join", json!("Rust"));
    assert_eq!(only(&actions, 2, "welcome")["room"], "Rust");
    assert!(
        sent_to(&actions, 1).is_empty(),
        "\"Rust\" is another room than \"rust\""
    );
}

#[test]
fn joining_the_room_you_are_in_only_repeats_the_welcome() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    h.post(2, "hi");
    let actions = h.send(1, "join", json!("lobby"));
    assert_eq!(
        recipients(&actions),
        BTreeSet::from([1]),
        "the room hears no left/joined"
    );
    let welcome = only(&actions, 1, "welcome");
    assert_eq!(names(&welcome["online"]), ["Anonymous1", "Anonymous2"]);
    assert_eq!(texts(&welcome["history"]), ["hi"]);
}

#[test]
fn invalid_room_names_are_bad_payload() {
    let cases: &[(&str, Value)] = &[
        ("empty", json!("")),
        ("spaces", json!("  ")),
        ("33 characters", json!("r".repeat(33))),
        ("control character", json!("ru\u{0}st")),
        ("number", json!(1)),
        ("null", Value::Null),
        ("object", json!({"room": "rust"})),
    ];
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    for (case, payload) in cases {
        let actions = h.send(1, "join", payload.clone());
        assert_eq!(recipients(&actions), BTreeSet::from([1]), "{case}");
        assert_error(&actions, 1, "bad_payload");
    }
    // Still in the lobby.
    assert_eq!(
        only(&h.send(1, "message", json!("hi")), 2, "message")["room"],
        "lobby"
    );
}

#[test]
fn rooms_isolate_messages() {
    let mut h = Harness::unlimited();
    for id in 1..=4 {
        h.connect(id);
    }
    h.join(3, "rust");
    h.join(4, "rust");
    let in_lobby = h.send(1, "message", json!("lobby talk"));
    assert_eq!(recipients(&in_lobby), BTreeSet::from([1, 2]));
    let in_rust = h.send(3, "message", json!("rust talk"));
    assert_eq!(recipients(&in_rust), BTreeSet::from([3, 4]));
    assert_eq!(only(&in_rust, 4, "message")["room"], "rust");
    assert_eq!(texts(&h.history(1, 0)["messages"]), ["lobby talk"]);
    assert_eq!(texts(&h.history(3, 0)["messages"]), ["rust talk"]);
}

#[test]
fn notices_go_to_the_members_of_the_right_room() {
    let mut h = Harness::unlimited();
    // 1, 2 in the lobby; 3, 4 in "rust"; 5 in "go".
    for id in 1..=5 {
        h.connect(id);
    }
    h.join(3, "rust");
    h.join(4, "rust");
    h.join(5, "go");

    let renamed = h.send(3, "nickname", json!("carol"));
    assert_eq!(
        recipients(&renamed),
        BTreeSet::from([3, 4]),
        "renamed: the renamer's room"
    );

    let moved = h.send(3, "join", json!("go"));
    assert_eq!(only(&moved, 4, "left")["nickname"], "carol");
    assert_eq!(only(&moved, 5, "joined")["nickname"], "carol");
    assert_eq!(recipients(&moved), BTreeSet::from([3, 4, 5]));

    let gone = h.disconnect(5);
    assert_eq!(
        only(&gone, 3, "left"),
        json!({"room": "go", "nickname": "Anonymous5"})
    );
    assert_eq!(recipients(&gone), BTreeSet::from([3]));
}

#[test]
fn max_rooms_refuses_new_rooms_but_not_existing_ones() {
    let mut h = Harness::new(ChatConfig {
        max_rooms: 2,
        ..generous()
    });
    h.connect(1);
    h.connect(2);
    h.connect(3);
    h.join(1, "rust"); // lobby + rust: full.
    assert_error(&h.send(2, "join", json!("go")), 2, "bad_payload");
    h.join(2, "rust"); // An existing room is fine,
    h.join(2, "lobby"); // and so is the lobby.
    assert_eq!(
        only(&h.send(3, "message", json!("hi")), 2, "message")["room"],
        "lobby"
    );
}

#[test]
fn max_rooms_recycles_rooms_nobody_is_in() {
    let mut h = Harness::new(ChatConfig {
        max_rooms: 2,
        ..generous()
    });
    h.connect(1);
    h.connect(2);
    h.join(1, "rust");
    h.post(1, "old rust talk");
    h.join(1, "lobby"); // "rust" is empty now (but has history).
    h.join(2, "go"); // So it makes way for "go".
    assert_error(&h.send(1, "join", json!("zig")), 1, "bad_payload");
    // "go" empties too; "rust" can come back, and its history with it: the store kept it.
    h.join(2, "lobby");
    let actions = h.send(1, "join", json!("rust"));
    assert_eq!(texts(&only(&actions, 1, "welcome")["history"]), ["old rust talk"]);
}

#[test]
fn the_lobby_always_exists() {
    let mut h = Harness::new(ChatConfig {
        max_rooms: 1,
        ..generous()
    });
    h.connect(1);
    h.post(1, "kept");
    assert_error(&h.send(1, "join", json!("rust")), 1, "bad_payload");
    h.connect(2);
    h.join(2, "lobby");
    assert_eq!(texts(&h.history(2, 0)["messages"]), ["kept"]);
}

// --- history ---

#[test]
fn history_since_n_returns_only_later_messages_of_the_room() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    h.join(2, "rust");
    let a = h.post(1, "a");
    let _elsewhere = h.post(2, "elsewhere");
    let b = h.post(1, "b");
    let c = h.post(1, "c");

    let cases = [
        (0, vec!["a", "b", "c"]),
        (a, vec!["b", "c"]),
        (b, vec!["c"]),
        (c, vec![]),
        (u64::MAX, vec![]),
    ];
    for (since, expected) in cases {
        let history = h.history(1, since);
        assert_eq!(history["room"], "lobby");
        assert_eq!(texts(&history["messages"]), expected, "since {since}");
    }
    let first = &h.history(1, 0)["messages"][0];
    assert_eq!(first["id"], a);
    assert_eq!(first["nickname"], "Anonymous1");
    // Since an id from another room: what came after it here.
    assert_eq!(texts(&h.history(1, a + 1)["messages"]), ["b", "c"]);
}

#[test]
fn history_size_bounds_the_welcome_and_the_default_page() {
    let mut h = Harness::new(ChatConfig {
        history_size: 5,
        ..generous()
    });
    h.connect(1);
    let ids: Vec<u64> = (1..=12).map(|n| h.post(1, &format!("m{n}"))).collect();
    let actions = h.send(1, "join", json!("lobby"));
    assert_eq!(
        texts(&only(&actions, 1, "welcome")["history"]),
        ["m8", "m9", "m10", "m11", "m12"]
    );
    // `history` reads the store, oldest first, a page of `history_size` unless asked otherwise.
    let page = h.history(1, 0);
    assert_eq!(texts(&page["messages"]), ["m1", "m2", "m3", "m4", "m5"]);
    assert_eq!(page["more"], true);
    let last = h.history(1, ids[9]);
    assert_eq!(texts(&last["messages"]), ["m11", "m12"]);
    assert_eq!(last["more"], false);
    // Each room has its own history.
    h.join(1, "rust");
    h.post(1, "r1");
    assert_eq!(texts(&h.history(1, 0)["messages"]), ["r1"]);
}

#[test]
fn history_size_zero_keeps_nothing() {
    let mut h = Harness::new(ChatConfig {
        history_size: 0,
        ..generous()
    });
    h.connect(1);
    h.post(1, "gone");
    assert_eq!(h.history(1, 0)["messages"], json!([]));
}

#[test]
fn history_payload_must_be_an_object_with_since() {
    let cases: &[(&str, Value)] = &[
        ("missing", Value::Null),
        ("number", json!(41)),
        ("string", json!("41")),
        ("array", json!([41])),
        ("empty object", json!({})),
        ("since a string", json!({"since": "41"})),
        ("since negative", json!({"since": -1})),
        ("since fractional", json!({"since": 1.5})),
        ("since null", json!({"since": null})),
    ];
    let mut h = Harness::unlimited();
    h.connect(1);
    for (case, payload) in cases {
        let actions = h.send(1, "history", payload.clone());
        assert_eq!(recipients(&actions), BTreeSet::from([1]), "{case}");
        assert_error(&actions, 1, "bad_payload");
    }
}

// --- malformed input ---

#[test]
fn bad_json_for_anything_that_is_not_an_envelope() {
    let cases = [
        ("not JSON", "hello"),
        ("empty", ""),
        ("truncated", r#"{"type":"message","payload":"hi""#),
        ("missing type", r#"{"payload":"hi"}"#),
        ("empty object", "{}"),
        ("type not a string", r#"{"type":5,"payload":"hi"}"#),
        ("type null", r#"{"type":null,"payload":"hi"}"#),
        ("a string", r#""message""#),
        ("a number", "42"),
        ("null", "null"),
        ("an array in envelope order", r#"["message","hi"]"#),
        ("trailing garbage", r#"{"type":"message","payload":"hi"} x"#),
        (
            "duplicate type",
            r#"{"type":"message","type":"join","payload":"hi"}"#,
        ),
    ];
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    for (case, text) in cases {
        let actions = h.text(1, text);
        assert_eq!(recipients(&actions), BTreeSet::from([1]), "{case}");
        assert_error(&actions, 1, "bad_json");
    }
    assert_eq!(h.history(1, 0)["messages"], json!([]), "nothing got through");
}

#[test]
fn unknown_type_is_refused() {
    let mut h = Harness::unlimited();
    h.connect(1);
    for kind in ["shout", "", "Message", "MESSAGE", "welcome", "ack", "error"] {
        let actions = h.send(1, kind, json!("hi"));
        assert_error(&actions, 1, "unknown_type");
    }
}

#[test]
fn message_payload_must_be_a_string() {
    let mut h = Harness::unlimited();
    h.connect(1);
    for payload in [
        Value::Null,
        json!(1),
        json!(["hi"]),
        json!({"text": "hi"}),
        json!(false),
    ] {
        assert_error(&h.send(1, "message", payload), 1, "bad_payload");
    }
    assert_error(&h.text(1, r#"{"type":"message"}"#), 1, "bad_payload");
}

#[test]
fn extra_envelope_fields_are_ignored() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    let actions = h.text(1, r#"{"payload":"hi","id":7,"type":"message"}"#);
    assert_eq!(only(&actions, 2, "message")["text"], "hi");
}

#[test]
fn unknown_clients_are_ignored() {
    let mut h = Harness::unlimited();
    h.connect(1);
    assert!(h.text(9, r#"{"type":"message","payload":"hi"}"#).is_empty());
    assert!(h.disconnect(9).is_empty());
}

// --- rate limiting ---

fn limited(rate_limit: f64, rate_burst: u32, flood_limit: u32) -> Harness {
    Harness::new(ChatConfig {
        rate_limit,
        rate_burst,
        flood_limit,
        ..ChatConfig::default()
    })
}

#[test]
fn rate_limited_after_the_burst() {
    let mut h = limited(1.0, 3, 100);
    h.connect(1);
    h.connect(2);
    for n in 0..3 {
        h.post(1, &format!("{n}"));
    }
    let actions = h.send(1, "message", json!("one too many"));
    assert_error(&actions, 1, "rate_limited");
    assert_eq!(h.history(2, 0)["messages"].as_array().unwrap().len(), 3);
}

#[test]
fn every_input_costs_a_token_even_bad_ones() {
    let mut h = limited(1.0, 2, 100);
    h.connect(1);
    assert_error(&h.text(1, "garbage"), 1, "bad_json");
    assert_error(&h.send(1, "nickname", json!("")), 1, "bad_payload");
    assert_error(&h.text(1, "garbage"), 1, "rate_limited");
}

#[test]
fn token_bucket_refills_over_time() {
    let mut h = limited(2.0, 4, 100);
    h.connect(1);
    for n in 0..4 {
        h.post(1, &format!("burst {n}"));
    }
    assert_error(&h.send(1, "message", json!("x")), 1, "rate_limited");

    // 2 per second: a token every 500 ms.
    h.advance(Duration::from_millis(400));
    assert_error(&h.send(1, "message", json!("x")), 1, "rate_limited");
    h.advance(Duration::from_millis(100));
    h.post(1, "refilled");
    assert_error(&h.send(1, "message", json!("x")), 1, "rate_limited");

    // A long pause refills up to the burst, not beyond.
    h.advance(Duration::from_secs(3600));
    for n in 0..4 {
        h.post(1, &format!("second burst {n}"));
    }
    assert_error(&h.send(1, "message", json!("x")), 1, "rate_limited");

    // Sustained at the rate: never limited.
    for n in 0..20 {
        h.advance(Duration::from_millis(500));
        h.post(1, &format!("steady {n}"));
    }
}

#[test]
fn rate_limits_are_per_client() {
    let mut h = limited(1.0, 2, 100);
    h.connect(1);
    h.connect(2);
    h.post(1, "a");
    h.post(1, "b");
    assert_error(&h.send(1, "message", json!("c")), 1, "rate_limited");
    h.post(2, "d");
    h.post(2, "e");
}

/// A chat whose sessions may send 100 per second each, but whose addresses only 1 per second
/// with a burst of `ip_burst`.
fn limited_per_address(ip_burst: u32) -> Harness {
    Harness::new(ChatConfig {
        rate_limit: 100.0,
        rate_burst: 100,
        ip_rate_limit: 1.0,
        ip_rate_burst: ip_burst,
        flood_limit: 100,
        ..ChatConfig::default()
    })
}

const HOST_A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
const HOST_B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));

#[test]
fn sessions_of_one_address_share_its_rate_limit() {
    let mut h = limited_per_address(3);
    h.connect_from(1, HOST_A);
    h.connect_from(2, HOST_A);
    h.post(1, "a");
    h.post(2, "b");
    h.post(1, "c");
    let actions = h.send(2, "message", json!("the address's fourth"));
    assert_error(&actions, 2, "rate_limited");
    assert!(
        sent_to(&actions, 2)[0]["payload"]["message"]
            .as_str()
            .unwrap()
            .contains("from one address")
    );
}

#[test]
fn other_addresses_keep_their_own_rate_limit() {
    let mut h = limited_per_address(1);
    h.connect_from(1, HOST_A);
    h.connect_from(2, HOST_B);
    h.post(1, "a");
    assert_error(&h.send(1, "message", json!("b")), 1, "rate_limited");
    h.post(2, "from elsewhere");
}

#[test]
fn ipv6_addresses_of_one_64_share_a_rate_limit() {
    let mut h = limited_per_address(1);
    h.connect_from(1, "2001:db8:1:2::1".parse().unwrap());
    h.connect_from(2, "2001:db8:1:2::ffff".parse().unwrap());
    h.connect_from(3, "2001:db8:1:3::1".parse().unwrap());
    h.post(1, "a");
    assert_error(&h.send(2, "message", json!("same /64")), 2, "rate_limited");
    h.post(3, "next /64");
}

#[test]
fn a_message_refused_by_the_address_limit_costs_the_session_nothing() {
    let mut h = Harness::new(ChatConfig {
        rate_limit: 1.0,
        rate_burst: 1,
        ip_rate_limit: 1.0,
        ip_rate_burst: 1,
        flood_limit: 100,
        ..ChatConfig::default()
    });
    h.connect_from(1, HOST_A);
    h.connect_from(2, HOST_A);
    h.post(1, "spends the address's token");
    assert_error(&h.send(2, "message", json!("refused")), 2, "rate_limited");
    h.advance(Duration::from_secs(1));
    // Session 2's own token is still there: only the address's was missing.
    h.post(2, "now");
}

#[test]
fn an_address_is_forgotten_with_its_last_session() {
    let mut h = limited_per_address(5);
    h.connect_from(1, HOST_A);
    h.connect_from(2, HOST_A);
    h.connect_from(3, HOST_B);
    assert_eq!(h.chat.host_count(), 2);
    h.disconnect(1);
    assert_eq!(h.chat.host_count(), 2);
    h.disconnect(2);
    h.disconnect(3);
    assert_eq!(h.chat.host_count(), 0);
}

#[test]
fn flooding_closes_with_1008_after_flood_limit_strikes() {
    let flood_limit = 5;
    let mut h = limited(1.0, 2, flood_limit);
    h.connect(1);
    h.connect(2);
    h.post(1, "a");
    h.post(1, "b");
    for strike in 1..=flood_limit {
        let actions = h.send(1, "message", json!(format!("strike {strike}")));
        assert_error(&actions, 1, "rate_limited");
    }
    let actions = h.send(1, "message", json!("one strike too many"));
    assert_eq!(closes(&actions), [(1, CloseCode::PolicyViolation)]);
    assert!(recipients(&actions).is_empty(), "{actions:?}");
    let Action::Close { reason, .. } = &actions[0] else {
        unreachable!()
    };
    assert!(
        !reason.is_empty() && reason.len() <= 123,
        "fits a Close frame: {reason:?}"
    );
    // The others heard nothing of it.
    assert_eq!(h.history(2, 0)["messages"].as_array().unwrap().len(), 2);
}

#[test]
fn an_accepted_message_resets_the_strikes() {
    let flood_limit = 3;
    let mut h = limited(1.0, 1, flood_limit);
    h.connect(1);
    for round in 0..5 {
        h.advance(Duration::from_secs(1));
        h.post(1, &format!("round {round}"));
        for _ in 0..flood_limit {
            let actions = h.send(1, "message", json!("too fast"));
            assert_error(&actions, 1, "rate_limited");
        }
    }
    let actions = h.send(1, "message", json!("too fast"));
    assert_eq!(closes(&actions), [(1, CloseCode::PolicyViolation)]);
}

#[test]
fn flood_limit_zero_closes_on_the_first_refusal() {
    let mut h = limited(1.0, 1, 0);
    h.connect(1);
    h.post(1, "a");
    assert_eq!(
        closes(&h.send(1, "message", json!("b"))),
        [(1, CloseCode::PolicyViolation)]
    );
}

// --- all together: random sessions against a model ---

mod model {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    const ROOMS: [&str; 3] = ["lobby", "a", "b"];
    const NAMES: [&str; 5] = ["alice", "Alice", "bob", "BOB", "carol"];

    #[derive(Debug, Clone)]
    enum Op {
        Connect(ClientId),
        Disconnect(ClientId),
        Join(ClientId, &'static str),
        Post(ClientId),
        Rename(ClientId, &'static str),
    }

    fn op() -> impl Strategy<Value = Op> {
        let id = 0..5u64;
        prop_oneof![
            id.clone().prop_map(Op::Connect),
            id.clone().prop_map(Op::Disconnect),
            (id.clone(), prop::sample::select(&ROOMS[..])).prop_map(|(id, room)| Op::Join(id, room)),
            id.clone().prop_map(Op::Post),
            (id, prop::sample::select(&NAMES[..])).prop_map(|(id, name)| Op::Rename(id, name)),
        ]
    }

    /// What the chat should know: each connected client's nickname and room.
    #[derive(Default)]
    struct Model {
        clients: BTreeMap<ClientId, (String, String)>,
    }

    impl Model {
        fn members(&self, room: &str) -> BTreeSet<ClientId> {
            self.clients
                .iter()
                .filter(|(_, (_, in_room))| in_room == room)
                .map(|(id, _)| *id)
                .collect()
        }

        fn others(&self, room: &str, except: ClientId) -> BTreeSet<ClientId> {
            let mut members = self.members(room);
            members.remove(&except);
            members
        }

        fn online(&self, room: &str) -> Vec<String> {
            let mut names: Vec<String> = self
                .members(room)
                .iter()
                .map(|id| self.clients[id].0.clone())
                .collect();
            names.sort_by_key(|name| name.to_lowercase());
            names
        }
    }

    /// Who got a message of type `kind`.
    fn got(actions: &[Action], kind: &str, among: impl IntoIterator<Item = ClientId>) -> BTreeSet<ClientId> {
        among
            .into_iter()
            .filter(|id| {
                sent_to(actions, *id)
                    .iter()
                    .any(|message| message["type"] == kind)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Every message reaches exactly the other members of its room once, in id order; notices
        /// reach exactly the room; nicknames stay unique.
        #[test]
        fn random_sessions_match_the_model(ops in prop::collection::vec(op(), 1..80)) {
            let mut h = Harness::unlimited();
            let mut model = Model::default();
            let mut last_seen: HashMap<ClientId, u64> = HashMap::new();
            let everyone = 0..5u64;
            for op in ops {
                let connected = |id: &ClientId| model.clients.contains_key(id);
                let actions = match op {
                    Op::Connect(id) if connected(&id) => continue,
                    Op::Connect(id) => {
                        let actions = h.connect(id);
                        let welcome = only(&actions, id, "welcome");
                        let nickname = welcome["nickname"].as_str().unwrap().to_owned();
                        let joined_by = model.members(LOBBY);
                        model.clients.insert(id, (nickname, LOBBY.to_owned()));
                        assert_eq!(welcome["online"], json!(model.online(LOBBY)));
                        assert_eq!(got(&actions, "joined", everyone.clone()), joined_by);
                        actions
                    }
                    Op::Disconnect(id) => {
                        let actions = h.disconnect(id);
                        if let Some((_, room)) = model.clients.remove(&id) {
                            assert_eq!(recipients(&actions), model.members(&room));
                            assert_eq!(got(&actions, "left", everyone.clone()), model.members(&room));
                        } else {
                            assert!(actions.is_empty());
                        }
                        actions
                    }
                    Op::Join(id, room) => {
                        let actions = h.send(id, "join", json!(room));
                        let Some((_, old)) = model.clients.get(&id).cloned() else {
                            assert!(actions.is_empty());
                            continue;
                        };
                        model.clients.get_mut(&id).unwrap().1 = room.to_owned();
                        let welcome = only(&actions, id, "welcome");
                        assert_eq!(welcome["online"], json!(model.online(room)));
                        if old == room {
                            assert_eq!(recipients(&actions), BTreeSet::from([id]));
                        } else {
                            assert_eq!(got(&actions, "left", everyone.clone()), model.others(&old, id));
                            assert_eq!(got(&actions, "joined", everyone.clone()), model.others(room, id));
                        }
                        actions
                    }
                    Op::Post(id) => {
                        let actions = h.send(id, "message", json!("hi"));
                        let Some((nickname, room)) = model.clients.get(&id).cloned() else {
                            assert!(actions.is_empty());
                            continue;
                        };
                        assert_eq!(types_sent_to(&actions, id), ["ack"]);
                        let others = model.others(&room, id);
                        assert_eq!(got(&actions, "message", everyone.clone()), others);
                        for other in others {
                            let message = only(&actions, other, "message");
                            assert_eq!(message["nickname"], nickname.as_str());
                            assert_eq!(message["room"], room.as_str());
                        }
                        actions
                    }
                    Op::Rename(id, name) => {
                        let actions = h.send(id, "nickname", json!(name));
                        let Some((_, room)) = model.clients.get(&id).cloned() else {
                            assert!(actions.is_empty());
                            continue;
                        };
                        let taken = model
                            .clients
                            .iter()
                            .any(|(other, (nickname, _))| *other != id && nickname.eq_ignore_ascii_case(name));
                        if taken {
                            assert_error(&actions, id, "nickname_taken");
                        } else {
                            assert_eq!(got(&actions, "renamed", everyone.clone()), model.members(&room));
                            model.clients.get_mut(&id).unwrap().0 = name.to_owned();
                        }
                        actions
                    }
                };
                // Whatever a client is sent that carries an id (ack or message) comes in id order.
                for id in everyone.clone() {
                    for message in sent_to(&actions, id) {
                        if let Some(message_id) = message["payload"]["id"].as_u64() {
                            let last = last_seen.entry(id).or_default();
                            assert!(message_id > *last, "client {id}: {message_id} after {last}");
                            *last = message_id;
                        }
                    }
                }
            }
        }
    }
}

/// The chat against a store that is slow and sometimes fails, checked by properties.
mod slow_store {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum StoreOp {
        Connect(ClientId),
        Disconnect(ClientId),
        Post(ClientId),
        Hold,
        Release,
        Fail(bool),
    }

    fn store_op() -> impl Strategy<Value = StoreOp> {
        let id = 0..4u64;
        prop_oneof![
            1 => id.clone().prop_map(StoreOp::Connect),
            1 => id.clone().prop_map(StoreOp::Disconnect),
            4 => id.prop_map(StoreOp::Post),
            1 => Just(StoreOp::Hold),
            1 => Just(StoreOp::Release),
            1 => any::<bool>().prop_map(StoreOp::Fail),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// With a store that holds its answers for a while and sometimes fails: every post of a
        /// connected client is answered exactly once, in the order it was sent (an ack, or
        /// `store_unavailable`); a message reaches each other member at most once, in id order, and
        /// only if its sender was acked; ids only grow.
        #[test]
        fn a_slow_and_failing_store_never_reorders_or_duplicates(ops in prop::collection::vec(store_op(), 1..80)) {
            let mut h = Harness::unlimited();
            let mut connected: BTreeSet<ClientId> = BTreeSet::new();
            let mut posts: HashMap<ClientId, usize> = HashMap::new();
            let mut received: HashMap<ClientId, Vec<Value>> = HashMap::new();
            for op in ops {
                let actions = match op {
                    StoreOp::Connect(id) if connected.contains(&id) => continue,
                    StoreOp::Connect(id) => {
                        connected.insert(id);
                        posts.insert(id, 0);
                        received.insert(id, Vec::new());
                        h.connect(id)
                    }
                    StoreOp::Disconnect(id) => {
                        connected.remove(&id);
                        h.disconnect(id)
                    }
                    StoreOp::Post(id) => {
                        if connected.contains(&id) {
                            *posts.entry(id).or_default() += 1;
                        }
                        h.send(id, "message", json!("p"))
                    }
                    StoreOp::Hold => {
                        h.hold_store = true;
                        continue;
                    }
                    StoreOp::Release => h.release_store(),
                    StoreOp::Fail(on) => {
                        h.store.fail_appends(on);
                        continue;
                    }
                };
                for id in connected.iter() {
                    received.entry(*id).or_default().extend(sent_to(&actions, *id));
                }
            }
            let last = h.release_store();
            for id in connected.iter() {
                received.entry(*id).or_default().extend(sent_to(&last, *id));
            }
            let mut acked = BTreeSet::new();
            for (id, events) in &received {
                let answers: Vec<&Value> = events
                    .iter()
                    .filter(|e| e["type"] == "ack" || e["payload"]["code"] == "store_unavailable")
                    .collect();
                if connected.contains(id) {
                    prop_assert_eq!(answers.len(), posts[id], "client {}: {:?}", id, events);
                }
                let ack_ids: Vec<u64> = answers.iter().filter_map(|e| e["payload"]["id"].as_u64()).collect();
                prop_assert!(ack_ids.windows(2).all(|w| w[0] < w[1]), "acks in order: {:?}", ack_ids);
                acked.extend(ack_ids);
            }
            for events in received.values() {
                let seen: Vec<u64> = events
                    .iter()
                    .filter(|e| e["type"] == "message")
                    .map(|e| e["payload"]["id"].as_u64().unwrap())
                    .collect();
                prop_assert!(seen.windows(2).all(|w| w[0] < w[1]), "once each, in order: {:?}", seen);
                // Senders that stayed connected were acked for everything others saw.
                for id in seen {
                    prop_assert!(id <= h.store.last_id());
                }
            }
        }
    }
}

// --- durability: the store decides -------------------------------------------------------------

#[test]
fn a_message_is_acked_and_shown_only_once_the_store_has_it() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    h.hold_store = true;
    let sent = h.send(1, "message", json!("durable"));
    assert!(
        recipients(&sent).is_empty(),
        "nothing before the commit: {sent:?}"
    );
    let released = h.release_store();
    assert_eq!(only(&released, 1, "ack")["id"], 1);
    assert_eq!(only(&released, 2, "message")["text"], "durable");
}

#[test]
fn acks_follow_the_order_the_store_answers_in() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.hold_store = true;
    for text in ["a", "b", "c"] {
        h.send(1, "message", json!(text));
    }
    let released = h.release_store();
    let acks: Vec<u64> = sent_to(&released, 1)
        .iter()
        .filter(|m| m["type"] == "ack")
        .map(|m| m["payload"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(acks, [1, 2, 3]);
}

#[test]
fn a_refused_message_is_answered_store_unavailable_and_shown_to_nobody() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    h.store.fail_appends(true);
    assert_error(&h.send(1, "message", json!("lost?")), 1, "store_unavailable");
    h.store.fail_appends(false);
    // The store works again: so does the chat.
    assert_eq!(h.post(1, "kept"), 1);
    assert_eq!(
        h.chat.accepted(),
        1,
        "refused messages are not counted as accepted"
    );
}

#[test]
fn a_key_the_room_has_accepted_is_acked_again_with_the_original_id_and_not_shown_again() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    let first = h.send(1, "message", json!({"text": "once", "key": "k-1"}));
    assert_eq!(only(&first, 1, "ack"), json!({"id": 1, "key": "k-1"}));
    assert_eq!(types_sent_to(&first, 2), ["message"]);
    let again = h.send(1, "message", json!({"text": "once", "key": "k-1"}));
    assert_eq!(only(&again, 1, "ack"), json!({"id": 1, "key": "k-1"}));
    assert!(sent_to(&again, 2).is_empty(), "not broadcast twice: {again:?}");
    assert_eq!(h.chat.accepted(), 1, "accepted once");
}

#[test]
fn keys_must_be_printable_ascii_of_1_to_64_characters() {
    let mut h = Harness::unlimited();
    h.connect(1);
    for key in [
        json!(""),
        json!("é"),
        json!("x".repeat(65)),
        json!("a b\n"),
        json!(7),
    ] {
        let actions = h.send(1, "message", json!({"text": "t", "key": key}));
        assert_error(&actions, 1, "bad_payload");
    }
    let actions = h.send(1, "message", json!({"text": "t", "key": "x".repeat(64)}));
    only(&actions, 1, "ack");
}

#[test]
fn welcome_carries_the_stores_epoch_and_a_resume_token() {
    let mut h = Harness::unlimited();
    let actions = h.connect(1);
    let welcome = only(&actions, 1, "welcome");
    assert_eq!(welcome["epoch"], TEST_EPOCH);
    assert_eq!(welcome["resume"].as_str().unwrap().len(), 32);
}

#[test]
fn a_session_entering_a_room_the_cache_does_not_know_waits_for_its_history() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.post(1, "before");
    // A new chat over the same store: the lobby's history is only on disk.
    h.chat = Chat::new(generous(), TEST_EPOCH.into(), counting_tokens());
    h.hold_store = true;
    let connected = h.connect(2);
    assert!(
        sent_to(&connected, 2).is_empty(),
        "no welcome before the history is read"
    );
    let released = h.release_store();
    assert_eq!(texts(&only(&released, 2, "welcome")["history"]), ["before"]);
}

#[test]
fn sessions_entering_together_find_each_other_in_their_welcome_not_in_notices() {
    let mut h = Harness::unlimited();
    h.hold_store = true;
    for id in 1..=3 {
        h.connect(id);
    }
    let released = h.release_store();
    for id in 1..=3 {
        assert_eq!(types_sent_to(&released, id), ["welcome"]);
        assert_eq!(names(&only(&released, id, "welcome")["online"]).len(), 3);
    }
}

#[test]
fn history_before_pages_back_through_everything_kept() {
    let mut h = Harness::unlimited();
    h.connect(1);
    for n in 1..=7 {
        h.post(1, &format!("m{n}"));
    }
    let page = only(
        &h.send(1, "history", json!({"before": 8, "limit": 3})),
        1,
        "history",
    );
    assert_eq!(texts(&page["messages"]), ["m5", "m6", "m7"]);
    assert_eq!(page["more"], true);
    let page = only(
        &h.send(1, "history", json!({"before": 5, "limit": 10})),
        1,
        "history",
    );
    assert_eq!(texts(&page["messages"]), ["m1", "m2", "m3", "m4"]);
    assert_eq!(page["more"], false);
}

#[test]
fn a_history_limit_is_capped_by_the_server() {
    let mut h = Harness::new(ChatConfig {
        history_page_limit: 2,
        ..generous()
    });
    h.connect(1);
    for n in 1..=5 {
        h.post(1, &format!("m{n}"));
    }
    let page = only(
        &h.send(1, "history", json!({"since": 0, "limit": 100})),
        1,
        "history",
    );
    assert_eq!(texts(&page["messages"]), ["m1", "m2"]);
    assert_eq!(page["more"], true);
}

#[test]
fn history_requests_that_are_not_a_range_are_bad_payloads() {
    let mut h = Harness::unlimited();
    h.connect(1);
    for payload in [
        json!({}),
        json!({"since": 1, "before": 2}),
        json!({"since": 1, "limit": 0}),
        json!([1]),
    ] {
        assert_error(&h.send(1, "history", payload), 1, "bad_payload");
    }
}

#[test]
fn resume_takes_over_a_live_session_and_closes_its_connection() {
    let mut h = Harness::unlimited();
    let welcome = only(&h.connect(1), 1, "welcome");
    h.rename(1, "alice");
    h.join(1, "rust");
    h.connect(9);
    h.join(9, "rust");
    h.connect(2);
    let token = welcome["resume"].as_str().unwrap().to_owned();
    let actions = h.send(2, "resume", json!(token));
    assert_eq!(closes(&actions), [(1, RESUMED_ELSEWHERE)]);
    let resumed = only(&actions, 2, "welcome");
    assert_eq!(
        (resumed["nickname"].as_str(), resumed["room"].as_str()),
        (Some("alice"), Some("rust"))
    );
    assert_ne!(resumed["resume"], welcome["resume"], "a fresh token");
    assert!(
        !types_sent_to(&actions, 9)
            .iter()
            .any(|kind| kind == "left" || kind == "joined")
    );
    // The token worked once.
    h.connect(3);
    assert_error(&h.send(3, "resume", json!(token)), 3, "resume_failed");
}

#[test]
fn a_resumed_session_counts_for_the_address_of_its_new_connection() {
    let mut h = limited_per_address(1);
    let welcome = only(&h.connect_from(1, HOST_A), 1, "welcome");
    h.connect_from(2, HOST_B);
    let token = welcome["resume"].as_str().unwrap().to_owned();
    h.send(2, "resume", json!(token));
    h.disconnect(1);
    // Only HOST_B holds a session now; its one token was spent on the resume.
    assert_eq!(h.chat.host_count(), 1);
    assert_error(&h.send(2, "message", json!("x")), 2, "rate_limited");
    h.disconnect(2);
    assert_eq!(h.chat.host_count(), 0);
}

#[test]
fn resume_after_the_session_ended_restores_its_name_and_room_until_it_expires() {
    let mut h = Harness::new(ChatConfig {
        resume_ttl: Duration::from_secs(60),
        ..generous()
    });
    let token = only(&h.connect(1), 1, "welcome")["resume"]
        .as_str()
        .unwrap()
        .to_owned();
    h.rename(1, "bob");
    h.join(1, "go");
    h.disconnect(1);
    h.connect(2);
    let actions = h.send(2, "resume", json!(token));
    let welcome = only(&actions, 2, "welcome");
    assert_eq!(
        (welcome["nickname"].as_str(), welcome["room"].as_str()),
        (Some("bob"), Some("go"))
    );
    h.disconnect(2);
    let token = welcome["resume"].as_str().unwrap().to_owned();
    h.advance(Duration::from_secs(61));
    h.connect(3);
    assert_error(&h.send(3, "resume", json!(token)), 3, "resume_failed");
}

#[test]
fn a_garbled_resume_token_fails_without_closing_anything() {
    let mut h = Harness::unlimited();
    h.connect(1);
    assert_error(&h.send(1, "resume", json!("not-hex")), 1, "resume_failed");
    assert_error(&h.send(1, "resume", json!(7)), 1, "bad_payload");
}

#[test]
fn resume_of_a_session_still_waiting_for_its_rooms_history_gets_the_welcome_when_it_comes() {
    let mut h = Harness::unlimited();
    h.hold_store = true;
    let connected = h.connect(1);
    assert!(
        sent_to(&connected, 1).is_empty(),
        "waiting for the lobby's history"
    );
    // The token of session 1 is the first the counting source gave.
    h.connect(2);
    let resumed = h.send(2, "resume", json!(format!("{:032x}", 1)));
    assert!(
        closes(&resumed).is_empty(),
        "the resume waits behind session 2's nickname claim"
    );
    let released = h.release_store();
    assert_eq!(closes(&released), [(1, RESUMED_ELSEWHERE)]);
    assert_eq!(types_sent_to(&released, 2), ["welcome"], "{released:?}");
}

#[test]
fn a_look_alike_of_a_taken_nickname_is_taken() {
    let mut h = Harness::unlimited();
    h.connect(1);
    h.connect(2);
    h.rename(1, "alice");
    for look_alike in ["ALICE", "ａｌｉｃｅ", "Alice\u{fe0f}"] {
        assert_error(&h.send(2, "nickname", json!(look_alike)), 2, "nickname_taken");
    }
}

#[test]
fn invisible_and_direction_changing_characters_are_refused_in_names() {
    let mut h = Harness::unlimited();
    h.connect(1);
    for hostile in ["al\u{200b}ice", "\u{202e}ecila", "bob\u{2066}", "a\u{feff}"] {
        assert_error(&h.send(1, "nickname", json!(hostile)), 1, "bad_payload");
        assert_error(&h.send(1, "join", json!(hostile)), 1, "bad_payload");
    }
}

#[test]
fn a_join_sent_before_the_first_welcome_is_answered_after_it() {
    let mut h = Harness::unlimited();
    h.hold_store = true;
    let connected = h.connect(1);
    assert!(
        types_sent_to(&connected, 1).is_empty(),
        "the lobby is still loading"
    );
    let joined = h.send(1, "join", json!("elsewhere"));
    assert!(types_sent_to(&joined, 1).is_empty(), "{joined:?}");
    let released = h.release_store();
    // The lobby's read owes nothing to a session that left it before it arrived.
    assert_eq!(types_sent_to(&released, 1), ["welcome"], "{released:?}");
    assert_eq!(only(&released, 1, "welcome")["room"], "elsewhere");
    // And the session works after it.
    let id = h.post(1, "hello");
    assert!(id > 0);
}
