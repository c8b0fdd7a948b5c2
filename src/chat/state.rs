//! The replicated state machine: the chat log, its rooms and the key-value state.
//!
//! It owns everything committed entries change and nothing else: no sessions (who is connected,
//! which nick, which room is a connection's current one: the server keeps those), no IO, no
//! clock (a message's time is the leader's, carried in the entry). `apply` is a pure function of
//! the state and the entry, so every node that applies the same entries in the same order holds
//! an equal `StateMachine` and computes equal `Outcome`s; a command that does not decode or
//! breaks a rule is `Rejected` with the same reason everywhere, never a panic.
//!
//! Invariants (checked in `debug_assert_invariants`):
//! - `chat_log[i].position == i + 1`: positions start at 1 and have no gaps.
//! - chat log `index`es strictly increase, and are all `<= applied_index`.
//! - chat log timestamps never decrease (a leader whose clock lags its predecessor's cannot make
//!   time run backwards in the log: its messages take the latest time seen).
//! - every room's position list is increasing and names messages of that room; the lists
//!   partition the chat log.
//! - every key's revision is in `1..=revision`.

use std::collections::BTreeMap;

use super::command::{Command, Op, Origin};
use super::validate::{validate_key, validate_nick, validate_room, validate_text, validate_value};
use crate::raft::Index;

/// The room every node has from the start, so the seed's `msg Hello, Raft!` works with no set-up.
pub const DEFAULT_ROOM: &str = "general";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// 1-based position in the whole chat log (all rooms), no gaps.
    pub position: u64,
    /// The Raft index of the entry that carried it.
    pub index: Index,
    pub room: String,
    pub nick: String,
    pub text: String,
    pub timestamp_ms: u64,
}

/// What applying one command did, for the client waiting on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Posted {
        position: u64,
    },
    RoomCreated {
        existed: bool,
    },
    /// A Set, Del or successful Cas; `revision` is the store's revision after it.
    KvAck {
        revision: u64,
    },
    /// A Cas whose expectation did not hold; `current` is the value it found.
    CasFailed {
        current: Option<String>,
    },
    /// A Del of a key that does not exist.
    NotFound,
    /// A command that does not decode or breaks a rule; the reason is one human line.
    Rejected(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Who waits for `outcome`; `None` when the entry did not decode (nobody can be told).
    pub origin: Option<Origin>,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct KvValue {
    value: String,
    /// The store revision of the write that set this value (etcd's `mod_revision`).
    revision: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateMachine {
    applied_index: Index,
    chat_log: Vec<ChatMessage>,
    /// Room name (without '#') to the positions of its messages, oldest first.
    rooms: BTreeMap<String, Vec<u64>>,
    kv: BTreeMap<String, KvValue>,
    /// Bumped by every successful key-value write; 0 before the first.
    revision: u64,
}

impl Default for StateMachine {
    fn default() -> StateMachine {
        let mut rooms = BTreeMap::new();
        rooms.insert(DEFAULT_ROOM.to_string(), Vec::new());
        StateMachine {
            applied_index: 0,
            chat_log: Vec::new(),
            rooms,
            kv: BTreeMap::new(),
            revision: 0,
        }
    }
}

impl StateMachine {
    /// Applies the command in the committed entry at `index`. Entries must come in log order,
    /// each once: `index > applied_index()`. (A release build that is handed an already applied
    /// index changes nothing and answers `Rejected`, rather than applying a command twice.)
    pub fn apply(&mut self, index: Index, data: &[u8]) -> Applied {
        debug_assert!(
            index > self.applied_index,
            "entry {index} applied after {}",
            self.applied_index
        );
        if index <= self.applied_index {
            return Applied {
                origin: None,
                outcome: Outcome::Rejected(format!(
                    "entry {index} is already applied (applied index {})",
                    self.applied_index
                )),
            };
        }
        self.applied_index = index;
        let applied = match Command::decode(data) {
            Err(err) => Applied {
                origin: None,
                outcome: Outcome::Rejected(format!("undecodable command: {err}")),
            },
            Ok(cmd) => Applied {
                origin: Some(cmd.origin),
                outcome: self.apply_op(index, cmd.timestamp_ms, cmd.op),
            },
        };
        self.debug_assert_invariants();
        applied
    }

    /// A leader's no-op entry: nothing changes but the applied index.
    pub fn apply_noop(&mut self, index: Index) {
        debug_assert!(index > self.applied_index);
        self.applied_index = self.applied_index.max(index);
    }

    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    /// Every message of every room, in position order: `chat_log()[p - 1]` is position `p`, so
    /// the messages after position `p` are `chat_log()[p..]`.
    pub fn chat_log(&self) -> &[ChatMessage] {
        &self.chat_log
    }

    pub fn message(&self, position: u64) -> Option<&ChatMessage> {
        let at = usize::try_from(position.checked_sub(1)?).ok()?;
        self.chat_log.get(at)
    }

    /// The last `n` messages of `room` (without '#'), oldest first; empty for an unknown room.
    pub fn room_history(&self, room: &str, n: usize) -> Vec<&ChatMessage> {
        let Some(positions) = self.rooms.get(room) else {
            return Vec::new();
        };
        let from = positions.len().saturating_sub(n);
        positions[from..]
            .iter()
            .map(|&position| &self.chat_log[(position - 1) as usize])
            .collect()
    }

    /// Every room with its message count, sorted by name.
    pub fn rooms(&self) -> Vec<(&str, u64)> {
        self.rooms
            .iter()
            .map(|(name, positions)| (name.as_str(), positions.len() as u64))
            .collect()
    }

    pub fn room_exists(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// The value of `key` and the revision of the write that set it.
    pub fn get(&self, key: &str) -> Option<(&str, u64)> {
        self.kv
            .get(key)
            .map(|entry| (entry.value.as_str(), entry.revision))
    }

    /// Every key that starts with `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<&str> {
        self.kv
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .map(|(key, _)| key.as_str())
            .take_while(|key| key.starts_with(prefix))
            .collect()
    }

    /// The store's revision: how many successful key-value writes have been applied.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn apply_op(&mut self, index: Index, timestamp_ms: u64, op: Op) -> Outcome {
        let result = match op {
            Op::Post { room, nick, text } => self.post(index, timestamp_ms, room, nick, text),
            Op::CreateRoom { room } => self.create_room(room),
            Op::Set { key, value } => self.set(key, value),
            Op::Del { key } => self.del(key),
            Op::Cas { key, expected, new } => self.cas(key, expected, new),
        };
        result.unwrap_or_else(Outcome::Rejected)
    }

    fn post(
        &mut self,
        index: Index,
        timestamp_ms: u64,
        room: String,
        nick: String,
        text: String,
    ) -> Result<Outcome, String> {
        validate_room(&room)?;
        validate_nick(&nick)?;
        validate_text(&text)?;
        let Some(positions) = self.rooms.get_mut(&room) else {
            return Err(format!("unknown room #{room}: join it first"));
        };
        let position = self.chat_log.len() as u64 + 1;
        positions.push(position);
        let timestamp_ms = match self.chat_log.last() {
            Some(last) => timestamp_ms.max(last.timestamp_ms),
            None => timestamp_ms,
        };
        self.chat_log.push(ChatMessage {
            position,
            index,
            room,
            nick,
            text,
            timestamp_ms,
        });
        Ok(Outcome::Posted { position })
    }

    fn create_room(&mut self, room: String) -> Result<Outcome, String> {
        validate_room(&room)?;
        let existed = self.rooms.contains_key(&room);
        if !existed {
            self.rooms.insert(room, Vec::new());
        }
        Ok(Outcome::RoomCreated { existed })
    }

    fn set(&mut self, key: String, value: String) -> Result<Outcome, String> {
        validate_key(&key)?;
        validate_value(&value)?;
        Ok(self.write(key, value))
    }

    fn del(&mut self, key: String) -> Result<Outcome, String> {
        validate_key(&key)?;
        if self.kv.remove(&key).is_none() {
            return Ok(Outcome::NotFound);
        }
        self.revision += 1;
        Ok(Outcome::KvAck {
            revision: self.revision,
        })
    }

    fn cas(
        &mut self,
        key: String,
        expected: Option<String>,
        new: String,
    ) -> Result<Outcome, String> {
        validate_key(&key)?;
        if let Some(expected) = &expected {
            validate_value(expected)?;
        }
        validate_value(&new)?;
        let current = self.kv.get(&key).map(|entry| &entry.value);
        if current != expected.as_ref() {
            return Ok(Outcome::CasFailed {
                current: current.cloned(),
            });
        }
        Ok(self.write(key, new))
    }

    fn write(&mut self, key: String, value: String) -> Outcome {
        self.revision += 1;
        let revision = self.revision;
        self.kv.insert(key, KvValue { value, revision });
        Outcome::KvAck { revision }
    }

    /// Checks the invariants in the module comment; O(1) per call except for the last message.
    fn debug_assert_invariants(&self) {
        if let Some(last) = self.chat_log.last() {
            debug_assert_eq!(last.position, self.chat_log.len() as u64);
            debug_assert!(last.index <= self.applied_index);
            debug_assert_eq!(
                self.rooms.get(&last.room).and_then(|p| p.last()),
                Some(&last.position)
            );
            if let Some(before) = self.chat_log.len().checked_sub(2) {
                let before = &self.chat_log[before];
                debug_assert!(before.index < last.index);
                debug_assert!(before.timestamp_ms <= last.timestamp_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn encode(op: Op, node: u64, req: u64, timestamp_ms: u64) -> Vec<u8> {
        let mut out = Vec::new();
        Command {
            origin: Origin { node, req },
            timestamp_ms,
            op,
        }
        .encode(&mut out);
        out
    }

    /// A state machine plus the next index, for terse tests.
    struct Harness {
        sm: StateMachine,
        next_index: Index,
        next_req: u64,
    }

    impl Harness {
        fn new() -> Harness {
            Harness {
                sm: StateMachine::default(),
                next_index: 1,
                next_req: 1,
            }
        }

        fn apply(&mut self, op: Op) -> Outcome {
            self.apply_at(op, 1_700_000_000_000 + self.next_index * 1000)
        }

        fn apply_at(&mut self, op: Op, timestamp_ms: u64) -> Outcome {
            let req = self.next_req;
            self.next_req += 1;
            let data = encode(op, 7, req, timestamp_ms);
            let index = self.next_index;
            self.next_index += 1;
            let applied = self.sm.apply(index, &data);
            assert_eq!(applied.origin, Some(Origin { node: 7, req }));
            assert_eq!(self.sm.applied_index(), index);
            applied.outcome
        }

        fn post(&mut self, room: &str, text: &str) -> Outcome {
            self.apply(Op::Post {
                room: room.into(),
                nick: "alice".into(),
                text: text.into(),
            })
        }

        fn create(&mut self, room: &str) -> Outcome {
            self.apply(Op::CreateRoom { room: room.into() })
        }

        fn set(&mut self, key: &str, value: &str) -> Outcome {
            self.apply(Op::Set {
                key: key.into(),
                value: value.into(),
            })
        }

        fn cas(&mut self, key: &str, expected: Option<&str>, new: &str) -> Outcome {
            self.apply(Op::Cas {
                key: key.into(),
                expected: expected.map(str::to_string),
                new: new.into(),
            })
        }
    }

    fn rejected(outcome: Outcome) -> String {
        match outcome {
            Outcome::Rejected(reason) => reason,
            other => panic!("expected Rejected, got {other:?}"),
        }
    }

    #[test]
    fn default_room_exists_from_the_start() {
        let mut h = Harness::new();
        assert!(h.sm.room_exists(DEFAULT_ROOM));
        assert_eq!(h.sm.rooms(), vec![(DEFAULT_ROOM, 0)]);
        assert_eq!(
            h.post(DEFAULT_ROOM, "Hello, Raft!"),
            Outcome::Posted { position: 1 }
        );
        let msg = h.sm.message(1).unwrap();
        assert_eq!(
            (
                msg.index,
                msg.room.as_str(),
                msg.nick.as_str(),
                msg.text.as_str()
            ),
            (1, "general", "alice", "Hello, Raft!")
        );
        assert_eq!(msg.timestamp_ms, 1_700_000_001_000);
    }

    #[test]
    fn positions_have_no_gaps_across_rooms_rejections_and_noops() {
        let mut h = Harness::new();
        assert_eq!(h.create("rust"), Outcome::RoomCreated { existed: false });
        for i in 0..50u64 {
            let room = if i % 3 == 0 { "rust" } else { DEFAULT_ROOM };
            assert_eq!(
                h.post(room, &format!("m{i}")),
                Outcome::Posted { position: i + 1 }
            );
            // Rejections, KV writes and no-ops between posts take no position.
            rejected(h.post("nowhere", "x"));
            h.set("k", "v");
            h.sm.apply_noop(h.next_index);
            h.next_index += 1;
        }
        for (i, msg) in h.sm.chat_log().iter().enumerate() {
            assert_eq!(msg.position, i as u64 + 1);
            assert_eq!(h.sm.message(msg.position), Some(msg));
        }
        assert!(h.sm.chat_log().windows(2).all(|w| w[0].index < w[1].index));
        assert_eq!(h.sm.message(0), None);
        assert_eq!(h.sm.message(51), None);
        assert_eq!(h.sm.message(u64::MAX), None);
        assert_eq!(h.sm.rooms(), vec![("general", 33), ("rust", 17)]);
    }

    #[test]
    fn room_history_is_the_last_n_oldest_first() {
        let mut h = Harness::new();
        h.create("a");
        for i in 0..10 {
            h.post("a", &format!("a{i}"));
            h.post(DEFAULT_ROOM, &format!("g{i}"));
        }
        let texts = |n| -> Vec<String> {
            h.sm.room_history("a", n)
                .iter()
                .map(|m| m.text.clone())
                .collect()
        };
        assert_eq!(texts(3), vec!["a7", "a8", "a9"]);
        assert_eq!(texts(10).len(), 10);
        assert_eq!(texts(1000).len(), 10);
        assert_eq!(texts(1000)[0], "a0");
        assert!(texts(0).is_empty());
        assert!(h.sm.room_history("a", 5).iter().all(|m| m.room == "a"));
        assert!(h.sm.room_history("nowhere", 5).is_empty());
        assert!(h.sm.room_history("b", 5).is_empty());
    }

    #[test]
    fn posting_requires_an_existing_room_and_valid_fields() {
        let mut h = Harness::new();
        assert_eq!(
            rejected(h.post("rust", "hi")),
            "unknown room #rust: join it first"
        );
        assert_eq!(h.create("rust"), Outcome::RoomCreated { existed: false });
        assert_eq!(h.create("rust"), Outcome::RoomCreated { existed: true });
        assert_eq!(h.post("rust", "hi"), Outcome::Posted { position: 1 });
        rejected(h.post("rust", ""));
        rejected(h.post("rust", &"x".repeat(4097)));
        rejected(h.post("rust", "bell\u{7}"));
        rejected(h.post("#rust", "hi"));
        rejected(h.create("#rust"));
        rejected(h.create("a b"));
        rejected(h.apply(Op::Post {
            room: "rust".into(),
            nick: "bad nick".into(),
            text: "hi".into(),
        }));
        assert_eq!(h.sm.chat_log().len(), 1);
        assert_eq!(h.sm.rooms(), vec![("general", 0), ("rust", 1)]);
    }

    #[test]
    fn timestamps_never_run_backwards() {
        let mut h = Harness::new();
        let post = |h: &mut Harness, ts| {
            h.apply_at(
                Op::Post {
                    room: DEFAULT_ROOM.into(),
                    nick: "n".into(),
                    text: "t".into(),
                },
                ts,
            )
        };
        post(&mut h, 5_000);
        post(&mut h, 3_000); // a new leader with a lagging clock
        post(&mut h, 9_000);
        let times: Vec<u64> = h.sm.chat_log().iter().map(|m| m.timestamp_ms).collect();
        assert_eq!(times, vec![5_000, 5_000, 9_000]);
    }

    #[test]
    fn kv_revisions_like_etcd() {
        let mut h = Harness::new();
        assert_eq!(h.sm.revision(), 0);
        assert_eq!(h.set("a", "hello world"), Outcome::KvAck { revision: 1 });
        assert_eq!(h.set("b", ""), Outcome::KvAck { revision: 2 });
        assert_eq!(h.set("a", "again"), Outcome::KvAck { revision: 3 });
        assert_eq!(h.sm.get("a"), Some(("again", 3)));
        assert_eq!(h.sm.get("b"), Some(("", 2)));
        assert_eq!(h.sm.get("c"), None);
        assert_eq!(
            h.apply(Op::Del { key: "c".into() }),
            Outcome::NotFound,
            "deleting an absent key is NotFound and bumps nothing"
        );
        assert_eq!(h.sm.revision(), 3);
        assert_eq!(
            h.apply(Op::Del { key: "b".into() }),
            Outcome::KvAck { revision: 4 }
        );
        assert_eq!(h.sm.get("b"), None);
        // Rejected writes bump nothing.
        rejected(h.set("chatLog", "x"));
        rejected(h.set("a b", "x"));
        rejected(h.set("k", "line\nbreak"));
        rejected(h.apply(Op::Del { key: "".into() }));
        assert_eq!(h.sm.revision(), 4);
        assert_eq!(h.sm.get("chatLog"), None);
    }

    #[test]
    fn cas_semantics() {
        let mut h = Harness::new();
        // Expect absent, key absent: written.
        assert_eq!(h.cas("lock", None, "n1"), Outcome::KvAck { revision: 1 });
        // Expect absent, key present: fails and reports the current value.
        assert_eq!(
            h.cas("lock", None, "n2"),
            Outcome::CasFailed {
                current: Some("n1".into())
            }
        );
        // Expect the wrong value.
        assert_eq!(
            h.cas("lock", Some("n2"), "n3"),
            Outcome::CasFailed {
                current: Some("n1".into())
            }
        );
        // Expect a value, key absent.
        assert_eq!(
            h.cas("other", Some("x"), "y"),
            Outcome::CasFailed { current: None }
        );
        assert_eq!(h.sm.revision(), 1, "failed cas bumps nothing");
        // Expect the right value.
        assert_eq!(
            h.cas("lock", Some("n1"), "n2"),
            Outcome::KvAck { revision: 2 }
        );
        assert_eq!(h.sm.get("lock"), Some(("n2", 2)));
        // The empty string is a value, not absence.
        h.set("e", "");
        assert_eq!(
            h.cas("e", None, "x"),
            Outcome::CasFailed {
                current: Some("".into())
            }
        );
        assert_eq!(h.cas("e", Some(""), "x"), Outcome::KvAck { revision: 4 });
        rejected(h.cas("chatLog", None, "x"));
        rejected(h.cas("k", Some("a\u{0}"), "x"));
        rejected(h.cas("k", None, "a\u{0}"));
    }

    #[test]
    fn keys_by_prefix_sorted() {
        let mut h = Harness::new();
        for key in ["user-b", "user-a", "userz", "admin", "user-", "v"] {
            h.set(key, "1");
        }
        assert_eq!(h.sm.keys("user-"), vec!["user-", "user-a", "user-b"]);
        assert_eq!(
            h.sm.keys("user"),
            vec!["user-", "user-a", "user-b", "userz"]
        );
        assert_eq!(
            h.sm.keys(""),
            vec!["admin", "user-", "user-a", "user-b", "userz", "v"]
        );
        assert!(h.sm.keys("w").is_empty());
        assert!(h.sm.keys("user-aa").is_empty());
    }

    #[test]
    fn undecodable_entries_are_rejected_without_origin() {
        let mut sm = StateMachine::default();
        let applied = sm.apply(1, b"");
        assert_eq!(applied.origin, None);
        assert!(rejected(applied.outcome).starts_with("undecodable command"));
        assert_eq!(sm.applied_index(), 1);
        assert_eq!(
            sm.apply(2, &[9, 9, 9]).outcome,
            Outcome::Rejected("undecodable command: unknown command format version 9".into())
        );
    }

    #[test]
    fn noops_advance_the_applied_index_only() {
        let mut h = Harness::new();
        h.post(DEFAULT_ROOM, "a");
        let before = h.sm.clone();
        h.sm.apply_noop(5);
        assert_eq!(h.sm.applied_index(), 5);
        assert_eq!(h.sm.chat_log(), before.chat_log());
        h.next_index = 6;
        assert_eq!(h.post(DEFAULT_ROOM, "b"), Outcome::Posted { position: 2 });
        assert_eq!(h.sm.message(2).map(|m| m.index), Some(6));
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "applied after")]
    fn applying_out_of_order_is_a_driver_bug() {
        let mut sm = StateMachine::default();
        sm.apply_noop(3);
        sm.apply(3, b"");
    }

    #[cfg(not(debug_assertions))]
    #[test]
    fn reapplying_an_index_changes_nothing_in_release() {
        let mut h = Harness::new();
        h.post(DEFAULT_ROOM, "once");
        let before = h.sm.clone();
        let data = encode(
            Op::Post {
                room: DEFAULT_ROOM.into(),
                nick: "n".into(),
                text: "twice".into(),
            },
            1,
            1,
            0,
        );
        rejected(h.sm.apply(1, &data).outcome);
        assert_eq!(h.sm, before);
    }

    /// A random mix of valid, invalid and garbage entries, the same sequence for any seed.
    fn random_entries(seed: u64, count: usize) -> Vec<Option<Vec<u8>>> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let rooms = ["general", "rust", "raft", "bad room", "#x"];
        let keys = ["a", "b", "c", "chatLog", "a b"];
        let values = ["1", "2", "", "x\ty"];
        (0..count)
            .map(|i| {
                let pick = |rng: &mut SmallRng, from: &[&str]| {
                    from[rng.gen_range(0..from.len())].to_string()
                };
                let op = match rng.gen_range(0..10) {
                    0 => return None, // a no-op entry
                    1 => {
                        let len = rng.gen_range(0..40);
                        return Some((0..len).map(|_| rng.gen()).collect());
                    }
                    2 => Op::CreateRoom {
                        room: pick(&mut rng, &rooms),
                    },
                    3 | 4 => Op::Post {
                        room: pick(&mut rng, &rooms),
                        nick: pick(&mut rng, &["alice", "bob", "", "a b"]),
                        text: pick(&mut rng, &["hi", "", "hello world", "\u{1b}"]),
                    },
                    5 | 6 => Op::Set {
                        key: pick(&mut rng, &keys),
                        value: pick(&mut rng, &values),
                    },
                    7 => Op::Del {
                        key: pick(&mut rng, &keys),
                    },
                    _ => Op::Cas {
                        key: pick(&mut rng, &keys),
                        expected: if rng.gen_bool(0.3) {
                            None
                        } else {
                            Some(pick(&mut rng, &values))
                        },
                        new: pick(&mut rng, &values),
                    },
                };
                let mut data = encode(op, rng.gen_range(0..3), i as u64, rng.gen_range(0..1 << 40));
                if rng.gen_bool(0.05) {
                    let at = rng.gen_range(0..data.len());
                    data[at] ^= 1 << rng.gen_range(0..8);
                }
                Some(data)
            })
            .collect()
    }

    #[test]
    fn same_entries_same_state_and_outcomes() {
        for seed in 0..20 {
            let entries = random_entries(seed, 500);
            let mut a = StateMachine::default();
            let mut b = StateMachine::default();
            for (i, entry) in entries.iter().enumerate() {
                let index = i as Index + 1;
                match entry {
                    None => {
                        a.apply_noop(index);
                        b.apply_noop(index);
                    }
                    Some(data) => assert_eq!(a.apply(index, data), b.apply(index, data)),
                }
            }
            assert_eq!(a, b);
            assert_eq!(a.applied_index(), 500);
            assert!(a
                .chat_log()
                .windows(2)
                .all(|w| w[0].position + 1 == w[1].position));
        }
    }

    #[test]
    fn garbage_is_rejected_never_a_panic() {
        let mut rng = SmallRng::seed_from_u64(42);
        let mut sm = StateMachine::default();
        let mut rejections = 0;
        for i in 0..20_000u64 {
            let len = rng.gen_range(0..80);
            let mut data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if i % 2 == 0 {
                // A valid version byte, so the garbage reaches the op and field decoding.
                data.insert(0, crate::chat::command::FORMAT_V1);
            }
            let before = sm.clone();
            let applied = sm.apply(i + 1, &data);
            if Command::decode(&data).is_err() {
                assert_eq!(applied.origin, None);
                assert!(rejected(applied.outcome).starts_with("undecodable command: "));
                // A rejected entry changes nothing but the applied index.
                assert_eq!(sm.chat_log, before.chat_log);
                assert_eq!(sm.kv, before.kv);
                assert_eq!(sm.rooms, before.rooms);
                rejections += 1;
            }
        }
        assert!(rejections > 19_000, "{rejections}");
        assert_eq!(sm.applied_index(), 20_000);
    }
}
