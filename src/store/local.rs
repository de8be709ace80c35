//! The coordination of one process, in memory: nickname leases, presence, resume tokens and the
//! rooms followed, answered at once.
//!
//! With one process, what [`crate::store::redis`] keeps in Redis for many is plain bookkeeping: a
//! lease is an entry in a map and never needs renewing, presence lists only this process's members,
//! and a followed room is followed from the moment it is asked for. The chat sends the same
//! commands either way, so it has one code path for one process and for many; this is the model
//! the Redis implementation is held to (`tests/redis_link.rs` compares them).
//!
//! It serves [`super::memory::MemoryStore`] (tests, fuzzing) and the single-process server beside
//! the SQLite store, which keeps only messages.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::{Claim, Claimed, Command, LeaseRef, Member, Outcome, Resumable, anonymous_nickname};

/// A resume token's session, and until when it is kept (`None`: while its session runs).
#[derive(Debug, Clone)]
struct Kept {
    session: Resumable,
    expires: Option<Instant>,
}

/// Leases, presence and resume tokens of one process.
#[derive(Debug, Default)]
pub struct Coordination {
    /// Lease key → owner.
    leases: HashMap<String, String>,
    /// The numbers of anonymous nicknames given so far.
    anonymous: u64,
    /// Room → owner → nickname.
    presence: HashMap<String, BTreeMap<String, String>>,
    tokens: HashMap<String, Kept>,
}

impl Coordination {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs one coordination command (storage commands are not its business and are ignored);
    /// answers, if the command has an answer, go to `outcomes`.
    pub fn execute(&mut self, command: Command, now: Instant, outcomes: &mut Vec<Outcome>) {
        match command {
            Command::Append(_) | Command::Read(_) => {}
            // One process hears everything it stores, from the moment it asks.
            Command::Follow { room } => outcomes.push(Outcome::Following { room }),
            Command::Unfollow { .. } => {}
            Command::Claim(claim) => outcomes.push(Outcome::Claim {
                token: claim.token,
                result: Ok(self.claim(claim)),
            }),
            Command::Release(lease) => self.release(&lease),
            Command::Present {
                room,
                owner,
                nickname,
            } => {
                self.presence.entry(room).or_default().insert(owner, nickname);
            }
            Command::Absent { room, owner } => {
                if let Some(members) = self.presence.get_mut(&room) {
                    members.remove(&owner);
                    if members.is_empty() {
                        self.presence.remove(&room);
                    }
                }
            }
            Command::Members { token, room } => outcomes.push(Outcome::Members {
                token,
                result: Ok(self.members(&room)),
            }),
            Command::PutToken {
                resume,
                session,
                ttl,
                live,
            } => {
                let expires = (!live).then(|| now + ttl);
                self.tokens.insert(resume, Kept { session, expires });
            }
            Command::TakeToken { token, resume } => {
                let session = self
                    .tokens
                    .remove(&resume)
                    .filter(|kept| kept.expires.is_none_or(|at| now < at))
                    .map(|kept| kept.session);
                outcomes.push(Outcome::Token {
                    token,
                    result: Ok(session),
                });
            }
            Command::DropToken { resume } => {
                self.tokens.remove(&resume);
            }
            // Every owner is this process's own.
            Command::Evict { owner } => outcomes.push(Outcome::Evicted { owner }),
        }
        self.forget_expired(now);
    }

    /// Whether `owner` holds the lease `key`.
    pub fn holds(&self, lease: &LeaseRef) -> bool {
        self.leases.get(&lease.key) == Some(&lease.owner)
    }

    fn claim(&mut self, claim: Claim) -> Claimed {
        let Some(nickname) = claim.nickname else {
            return Claimed::Held {
                nickname: self.claim_anonymous(&claim.owner),
            };
        };
        let free = match self.leases.get(&nickname.key) {
            None => true,
            Some(holder) => *holder == claim.owner || claim.replacing.as_ref() == Some(holder),
        };
        if !free {
            return Claimed::Taken;
        }
        self.leases.insert(nickname.key, claim.owner);
        Claimed::Held {
            nickname: nickname.display,
        }
    }

    /// The next `Anonymous<N>` nobody holds. Their keys are the plain lowercase form (ASCII).
    fn claim_anonymous(&mut self, owner: &str) -> String {
        loop {
            self.anonymous += 1;
            let nickname = anonymous_nickname(self.anonymous);
            let key = nickname.to_lowercase();
            if let std::collections::hash_map::Entry::Vacant(slot) = self.leases.entry(key) {
                slot.insert(owner.to_owned());
                return nickname;
            }
        }
    }

    fn release(&mut self, lease: &LeaseRef) {
        if self.holds(lease) {
            self.leases.remove(&lease.key);
        }
    }

    fn members(&self, room: &str) -> Vec<Member> {
        self.presence.get(room).map_or_else(Vec::new, |members| {
            members
                .iter()
                .map(|(owner, nickname)| Member {
                    owner: owner.clone(),
                    nickname: nickname.clone(),
                })
                .collect()
        })
    }

    /// Departed sessions' tokens past their time. Checked on every command, a few at a time would
    /// do; the map holds at most the sessions of the last `resume_ttl`.
    fn forget_expired(&mut self, now: Instant) {
        if self.tokens.len() < EXPIRY_SWEEP_MIN {
            return;
        }
        self.tokens
            .retain(|_, kept| kept.expires.is_none_or(|at| now < at));
    }
}

/// Below this many tokens, expired ones are only forgotten when taken: a sweep would cost more
/// than they do.
const EXPIRY_SWEEP_MIN: usize = 4096;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::Nickname;

    fn now() -> Instant {
        #[allow(clippy::disallowed_methods)] // An origin for the tests' clock; nothing is timed.
        Instant::now()
    }

    fn claim(
        coordination: &mut Coordination,
        nickname: Option<&str>,
        owner: &str,
        replacing: Option<&str>,
    ) -> Claimed {
        let mut outcomes = Vec::new();
        let command = Command::Claim(Claim {
            token: 1,
            nickname: nickname.map(|name| Nickname {
                display: name.to_owned(),
                key: name.to_lowercase(),
            }),
            owner: owner.to_owned(),
            replacing: replacing.map(str::to_owned),
        });
        coordination.execute(command, now(), &mut outcomes);
        match outcomes.as_slice() {
            [
                Outcome::Claim {
                    result: Ok(claimed), ..
                },
            ] => claimed.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn held(nickname: &str) -> Claimed {
        Claimed::Held {
            nickname: nickname.to_owned(),
        }
    }

    #[test]
    fn a_nickname_has_one_owner_until_released() {
        let mut c = Coordination::new();
        assert_eq!(claim(&mut c, Some("Ann"), "n.1", None), held("Ann"));
        assert_eq!(claim(&mut c, Some("ann"), "n.2", None), Claimed::Taken);
        assert_eq!(
            claim(&mut c, Some("Ann"), "n.1", None),
            held("Ann"),
            "already the owner's"
        );
        let lease = |owner: &str| LeaseRef {
            key: "ann".into(),
            owner: owner.into(),
        };
        c.execute(Command::Release(lease("n.2")), now(), &mut Vec::new());
        assert!(c.holds(&lease("n.1")), "only the owner releases");
        c.execute(Command::Release(lease("n.1")), now(), &mut Vec::new());
        assert_eq!(claim(&mut c, Some("ANN"), "n.2", None), held("ANN"));
    }

    #[test]
    fn a_resume_takes_over_the_lease_of_the_session_it_replaces() {
        let mut c = Coordination::new();
        claim(&mut c, Some("bob"), "n.1", None);
        assert_eq!(claim(&mut c, Some("bob"), "n.2", Some("n.9")), Claimed::Taken);
        assert_eq!(claim(&mut c, Some("bob"), "n.2", Some("n.1")), held("bob"));
    }

    #[test]
    fn anonymous_nicknames_count_up_and_skip_names_held() {
        let mut c = Coordination::new();
        assert_eq!(claim(&mut c, None, "n.1", None), held("Anonymous1"));
        claim(&mut c, Some("anonymous2"), "n.2", None);
        assert_eq!(claim(&mut c, None, "n.3", None), held("Anonymous3"));
    }

    #[test]
    fn a_token_works_once_and_a_departed_one_expires() {
        let mut c = Coordination::new();
        let start = now();
        let session = Resumable {
            nickname: "ann".into(),
            room: "lobby".into(),
            owner: "n.1".into(),
        };
        let put = |resume: &str, live: bool| Command::PutToken {
            resume: resume.into(),
            session: session.clone(),
            ttl: Duration::from_secs(10),
            live,
        };
        let take = |c: &mut Coordination, resume: &str, at: Instant| {
            let mut outcomes = Vec::new();
            c.execute(
                Command::TakeToken {
                    token: 7,
                    resume: resume.into(),
                },
                at,
                &mut outcomes,
            );
            match outcomes.as_slice() {
                [
                    Outcome::Token {
                        token: 7,
                        result: Ok(found),
                    },
                ] => found.clone(),
                other => panic!("{other:?}"),
            }
        };
        c.execute(put("live", true), start, &mut Vec::new());
        c.execute(put("gone", false), start, &mut Vec::new());
        c.execute(put("late", false), start, &mut Vec::new());
        let later = start + Duration::from_secs(3600);
        assert_eq!(
            take(&mut c, "live", later),
            Some(session.clone()),
            "a live session's never expires"
        );
        assert_eq!(take(&mut c, "live", later), None, "once");
        assert_eq!(
            take(&mut c, "gone", start + Duration::from_secs(9)),
            Some(session.clone())
        );
        assert_eq!(
            take(&mut c, "late", start + Duration::from_secs(10)),
            None,
            "expired"
        );
    }

    #[test]
    fn presence_lists_who_is_present_until_absent() {
        let mut c = Coordination::new();
        let present = |owner: &str, nickname: &str| Command::Present {
            room: "r".into(),
            owner: owner.into(),
            nickname: nickname.into(),
        };
        c.execute(present("n.1", "ann"), now(), &mut Vec::new());
        c.execute(present("n.2", "bob"), now(), &mut Vec::new());
        c.execute(present("n.1", "anna"), now(), &mut Vec::new());
        c.execute(
            Command::Absent {
                room: "r".into(),
                owner: "n.2".into(),
            },
            now(),
            &mut Vec::new(),
        );
        let mut outcomes = Vec::new();
        c.execute(
            Command::Members {
                token: 3,
                room: "r".into(),
            },
            now(),
            &mut outcomes,
        );
        let expected = vec![Member {
            owner: "n.1".into(),
            nickname: "anna".into(),
        }];
        assert_eq!(
            outcomes,
            [Outcome::Members {
                token: 3,
                result: Ok(expected)
            }]
        );
    }

    #[test]
    fn following_is_answered_at_once_and_an_eviction_comes_back() {
        let mut c = Coordination::new();
        let mut outcomes = Vec::new();
        c.execute(Command::Follow { room: "r".into() }, now(), &mut outcomes);
        c.execute(Command::Evict { owner: "n.4".into() }, now(), &mut outcomes);
        assert_eq!(
            outcomes,
            [
                Outcome::Following { room: "r".into() },
                Outcome::Evicted { owner: "n.4".into() }
            ]
        );
    }
}
