//! The replicated state machine: the chat log, its rooms, the key-value state and the client
//! sessions that make writes exactly-once.
//!
//! It owns everything committed entries change and nothing else: no connection state (who is
//! connected, which nick, which room is a connection's current one: the server keeps those), no
//! IO, no clock (a message's time is the leader's, carried in the entry). `apply` is a pure
//! function of the state and the entry, so every node that applies the same entries in the same
//! order holds an equal `StateMachine` and computes equal `Outcome`s; a command that does not
//! decode or breaks a rule is `Rejected` with the same reason everywhere, never a panic.
//!
//! A command that carries a session ([`SessionRef`]) is applied at most once: the session
//! table ([`Sessions`], see `session` for its rules) admits it, answers a retry with the
//! original outcome (`Applied::duplicate`), or refuses it. A command without one (telnet) is
//! applied every time it is committed.
//!
//! Retention (`with_retention(n)`, the server's `--retain-messages n`, off by default): after a
//! post makes its room hold more than `n` messages, the room's oldest ones are dropped. Like
//! session expiry it is a pure function of the applied entries and the configured `n`, so every
//! node drops the same messages. Positions are never reused: dropped messages leave holes, so
//! [`StateMachine::message_count`] (messages held) and [`StateMachine::last_position`] (newest
//! position ever assigned) differ once anything was dropped.
//!
//! Invariants (the cheap ones checked after every entry in `debug_assert_invariants`, all of
//! them in `check_invariants_full`):
//! - the chat log keeps the invariants of `chat_log`: positions strictly increase, are at most
//!   `last_position`, and without retention are exactly `1..=last_position` (no holes); dropped
//!   messages are freed eventually (chunks under half live are rebuilt).
//! - chat log `index`es strictly increase, and are all `<= applied_index`.
//! - chat log timestamps never decrease (a leader whose clock lags its predecessor's cannot make
//!   time run backwards in the log: its messages take the latest time seen).
//! - every room's position list is increasing and names live messages of that room; the lists
//!   partition the chat log's live messages held in memory; with retention `n > 0` none is
//!   longer than `n`. A room's `stored` count is its messages before the chat log's
//!   `evicted_through` (only in the message store); the counts add up to `evicted_through`.
//!
//! # Rooms of a store-backed log
//!
//! With the message store (`with_store`) a room keeps in memory only the positions of its
//! messages the chat log still holds in memory, plus how many older ones it has
//! ([`RoomPositions`]): when the chat log evicts chunks, the rooms drop the positions up to its
//! new `evicted_through`. `room_history` reads what it needs beyond the held positions through
//! the store's room index (`History::room_page`), so its answers are those of the chat held in
//! memory; `rooms` counts from the in-memory counts. `room_history_read` (`chat::read`) gives
//! the same answer without reading the store on the caller's thread. Memory per room: 8 bytes per message
//! still in memory, nothing per message only on disk.
//! - every key's revision is in `1..=revision`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub(crate) use super::chat_log::{ChatLog, StoredPart, CHUNK_LEN};
use super::command::{Command, Op, Origin, RoomAction, SessionRef};
pub use super::message::ChatMessage;
pub use super::outcome::Outcome;
use super::session::{Admission, SessionConfig, Sessions};
use super::validate::{
    validate_key, validate_nick, validate_password_hash, validate_room, validate_text,
    validate_value,
};
use crate::raft::Index;
use std::borrow::Cow;

/// The room every node has from the start, so the seed's `msg Hello, Raft!` works with no set-up.
pub const DEFAULT_ROOM: &str = "general";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Who waits for `outcome`; `None` when the entry did not decode (nobody can be told).
    pub origin: Option<Origin>,
    pub outcome: Outcome,
    /// The entry was a retry of a session request applied earlier: `outcome` is that earlier
    /// outcome, and this entry changed nothing (no new position, no revision). A server must
    /// not push a duplicate `Posted` message to listeners again.
    pub duplicate: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KvValue {
    pub(crate) value: String,
    /// The store revision of the write that set this value (etcd's `mod_revision`).
    pub(crate) revision: u64,
}

/// A room's owners and settings; only rooms created by a logged-in account have one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomMeta {
    /// The creator and everyone it (or another owner) made an owner with `op`.
    pub ops: BTreeSet<String>,
    /// Empty: no topic.
    pub topic: String,
    /// Join by invitation only.
    pub private: bool,
    pub invited: BTreeSet<String>,
}

impl RoomMeta {
    /// Whether `nick` may join: anyone in a public room, owners and invited nicks otherwise.
    pub fn admits(&self, nick: &str) -> bool {
        !self.private || self.ops.contains(nick) || self.invited.contains(nick)
    }
}

/// A room's messages: the positions of those held in memory (oldest first) and how many older
/// ones only the message store has (see the module docs).
#[derive(Clone, Debug, Default)]
pub(crate) struct RoomPositions {
    pub(crate) held: VecDeque<u64>,
    pub(crate) stored: u64,
}

impl RoomPositions {
    /// The room's messages, wherever they are.
    pub(crate) fn count(&self) -> u64 {
        self.stored + self.held.len() as u64
    }

    /// Forgets the held positions up to `through` (the chat log evicted them), counting them
    /// as stored.
    pub(crate) fn evict_through(&mut self, through: u64) {
        while self.held.front().is_some_and(|&p| p <= through) {
            self.held.pop_front();
            self.stored += 1;
        }
    }
}

/// The same room: the same count, and where both hold a position in memory, the same one (a
/// room of a store-backed machine holds fewer than the same room held in memory).
impl PartialEq for RoomPositions {
    fn eq(&self, other: &RoomPositions) -> bool {
        let (short, long) = if self.held.len() <= other.held.len() {
            (&self.held, &other.held)
        } else {
            (&other.held, &self.held)
        };
        self.count() == other.count() && long.iter().skip(long.len() - short.len()).eq(short)
    }
}

impl Eq for RoomPositions {}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateMachine {
    pub(super) applied_index: Index,
    pub(super) chat_log: ChatLog,
    /// Room name (without '#') to the positions of its retained messages held in memory,
    /// oldest first, and the count of older ones in the message store.
    pub(super) rooms: BTreeMap<String, RoomPositions>,
    pub(super) kv: BTreeMap<String, KvValue>,
    /// Bumped by every successful key-value write; 0 before the first.
    pub(super) revision: u64,
    pub(super) sessions: Sessions,
    /// Messages kept per room (`--retain-messages`); 0 keeps everything. Node configuration,
    /// like the session limits: the same on every node, and recorded in snapshots.
    pub(super) retain_messages: u64,
    /// Registered nick to its argon2 PHC password hash. Written by `Register`/`SetPassword`
    /// with hashes computed before proposing, so applying never hashes (deterministic, cheap).
    pub(super) accounts: BTreeMap<String, String>,
    /// Owners and settings of rooms created by logged-in accounts (`JoinRoom`).
    pub(super) room_meta: BTreeMap<String, RoomMeta>,
    /// The cluster's members (issue 16; `members.rs`): changed only by configuration entries.
    pub(super) members: super::members::MemberTable,
}

/// Sessions expire after `session::DEFAULT_SESSION_EXPIRY_MS` (10 minutes) of log time.
impl Default for StateMachine {
    fn default() -> StateMachine {
        StateMachine::with_session_config(SessionConfig::default())
    }
}

impl StateMachine {
    /// A state machine whose sessions expire after `session_expiry_ms` of log time without a
    /// request, with the default limits otherwise. Every node of a cluster must use the same
    /// value: it is not in the log.
    pub fn with_session_expiry_ms(session_expiry_ms: u64) -> StateMachine {
        StateMachine::with_session_config(SessionConfig {
            expiry_ms: session_expiry_ms,
            ..SessionConfig::default()
        })
    }

    /// A state machine with the given session limits (the same on every node of a cluster).
    pub fn with_session_config(config: SessionConfig) -> StateMachine {
        let mut rooms = BTreeMap::new();
        rooms.insert(DEFAULT_ROOM.to_string(), RoomPositions::default());
        StateMachine {
            applied_index: 0,
            chat_log: ChatLog::default(),
            rooms,
            kv: BTreeMap::new(),
            revision: 0,
            sessions: Sessions::new(config),
            retain_messages: 0,
            accounts: BTreeMap::new(),
            room_meta: BTreeMap::new(),
            members: Default::default(),
        }
    }

    /// This machine, keeping only the newest `retain_messages` messages of each room (0 keeps
    /// everything, the default). For a new machine: every node of a cluster must use the same
    /// value from its first entry on (it is not in the log; snapshots record it and a node
    /// refuses one taken with another value).
    pub fn with_retention(mut self, retain_messages: u64) -> StateMachine {
        debug_assert_eq!(self.applied_index, 0, "retention is set on a new machine");
        self.retain_messages = retain_messages;
        self
    }

    /// This machine, its chat log backed by the message store `store` (see `chat_log`): only
    /// the newest `keep_chunks` chunks of `CHUNK_LEN` messages stay in memory, the rest is read
    /// from the store. Node configuration, not replicated state: equal machines may differ in
    /// it. Ignored with retention (which bounds memory itself; the store never drops single
    /// messages). For a new machine, after `with_retention`.
    pub fn with_store(
        mut self,
        store: std::sync::Arc<std::sync::Mutex<crate::history::History>>,
        keep_chunks: usize,
    ) -> StateMachine {
        debug_assert_eq!(self.applied_index, 0, "the store is set on a new machine");
        if self.retain_messages == 0 {
            self.chat_log = ChatLog::with_store(store, keep_chunks);
        }
        self
    }

    /// The message store behind the chat log, if any (`with_store`).
    pub fn store(&self) -> Option<&std::sync::Arc<std::sync::Mutex<crate::history::History>>> {
        self.chat_log.store()
    }

    /// Whether this machine's snapshots are incremental (version 5): its chat log is backed by
    /// a message store that works (see `snapshot`).
    pub fn incremental_snapshots(&self) -> bool {
        self.chat_log.is_incremental()
    }

    /// Messages kept per room; 0 = all.
    pub fn retain_messages(&self) -> u64 {
        self.retain_messages
    }

    /// A state machine from checked parts (see `snapshot::restore`).
    pub(super) fn from_parts(
        applied_index: Index,
        chat_log: ChatLog,
        rooms: BTreeMap<String, RoomPositions>,
        kv: BTreeMap<String, KvValue>,
        revision: u64,
        sessions: Sessions,
        retain_messages: u64,
    ) -> StateMachine {
        let sm = StateMachine {
            applied_index,
            chat_log,
            rooms,
            kv,
            revision,
            sessions,
            retain_messages,
            accounts: BTreeMap::new(),
            room_meta: BTreeMap::new(),
            members: Default::default(),
        };
        sm.debug_assert_invariants();
        sm
    }

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
                duplicate: false,
            };
        }
        self.applied_index = index;
        let applied = match Command::decode(data) {
            Err(err) => Applied {
                origin: None,
                outcome: Outcome::Rejected(format!("undecodable command: {err}")),
                duplicate: false,
            },
            Ok(cmd) => {
                self.sessions.advance_clock(cmd.timestamp_ms);
                let (outcome, duplicate) = match cmd.session {
                    None => (self.apply_op(index, cmd.timestamp_ms, cmd.op), false),
                    Some(request) => {
                        self.apply_in_session(index, cmd.timestamp_ms, request, cmd.op)
                    }
                };
                Applied {
                    origin: Some(cmd.origin),
                    outcome,
                    duplicate,
                }
            }
        };
        self.debug_assert_invariants();
        applied
    }

    /// Applies `op` at most once for `request`; the flag is `Applied::duplicate`.
    fn apply_in_session(
        &mut self,
        index: Index,
        timestamp_ms: u64,
        request: SessionRef,
        op: Op,
    ) -> (Outcome, bool) {
        if matches!(op, Op::OpenSession) {
            let reason = "an OpenSession request carries no session".to_string();
            return (Outcome::Rejected(reason), false);
        }
        match self.sessions.admit(&request) {
            Admission::Apply => {
                let outcome = self.apply_op(index, timestamp_ms, op);
                self.sessions.retain(&request, outcome.clone());
                (outcome, false)
            }
            Admission::Duplicate(outcome) => (outcome, true),
            Admission::Refuse(outcome) => (outcome, false),
        }
    }

    /// A leader's no-op entry: nothing changes but the applied index.
    pub fn apply_noop(&mut self, index: Index) {
        debug_assert!(index > self.applied_index);
        self.applied_index = self.applied_index.max(index);
    }

    /// Applies the configuration entry at `index` to the member table (`members.rs`).
    /// Returns false when the change did not fit the table (nothing changed).
    pub fn apply_member_change(
        &mut self,
        index: Index,
        change: super::members::MemberChange,
        context: &[u8],
    ) -> bool {
        self.apply_noop(index);
        self.members.apply(change, context)
    }

    /// The member table (unset until bootstrapped, changed or restored from a snapshot).
    pub fn members(&self) -> &super::members::MemberTable {
        &self.members
    }

    /// Fills an unset member table with the cluster's bootstrap list (all voters).
    pub fn bootstrap_members(
        &mut self,
        voters: impl IntoIterator<Item = (u64, std::net::SocketAddr)>,
    ) {
        self.members.bootstrap(voters);
    }

    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    /// How many messages the chat log holds now. Without retention that is also the last
    /// position (positions are `1..=count`); with it, dropped messages are not counted: use
    /// [`StateMachine::last_position`] for the newest position.
    pub fn message_count(&self) -> u64 {
        self.chat_log.len()
    }

    /// The highest position ever assigned (0 before the first message): the next message gets
    /// `last_position() + 1`. Equal to `message_count()` unless retention dropped messages.
    pub fn last_position(&self) -> u64 {
        self.chat_log.last_position()
    }

    /// Message slots held in memory, live or dropped-but-not-yet-freed: at most twice the
    /// retained messages plus `CHUNK_LEN` (see `chat_log`). For tests of the memory bound.
    pub fn held_message_slots(&self) -> usize {
        self.chat_log.held_slots()
    }

    /// The message at `position` (1-based); `None` for 0, beyond the end, or dropped. Owned
    /// when read from the message store, borrowed when in memory.
    pub fn message(&self, position: u64) -> Option<Cow<'_, ChatMessage>> {
        self.chat_log.get(position)
    }

    /// Every retained message with a position `>= position`, in position order (all of them
    /// for 0 or 1; none beyond the end). The messages after position `p` are
    /// `messages_from(p + 1)`.
    pub fn messages_from(&self, position: u64) -> impl Iterator<Item = Cow<'_, ChatMessage>> + '_ {
        self.chat_log.iter_from(position)
    }

    /// The last `n` retained messages of `room` (without '#'), oldest first; empty for an
    /// unknown room.
    pub fn room_history(&self, room: &str, n: usize) -> Vec<Cow<'_, ChatMessage>> {
        let Some(positions) = self.rooms.get(room) else {
            return Vec::new();
        };
        let held = &positions.held;
        let mut out = Vec::new();
        // Older than the held positions: from the store's room index.
        let from_store = n.saturating_sub(held.len());
        let from_store =
            usize::try_from(positions.stored).map_or(from_store, |s| s.min(from_store));
        if from_store > 0 {
            let before = held
                .front()
                .copied()
                .unwrap_or(self.chat_log.evicted_through() + 1);
            let page = self.chat_log.room_page(room, before, from_store);
            out.extend(page.into_iter().map(Cow::Owned));
        }
        let from = held.len().saturating_sub(n);
        out.extend(
            held.range(from..)
                .filter_map(|&position| self.message(position)),
        );
        out
    }

    /// Every room with its retained message count, sorted by name.
    pub fn rooms(&self) -> Vec<(&str, u64)> {
        self.rooms
            .iter()
            .map(|(name, positions)| (name.as_str(), positions.count()))
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

    /// Live client sessions (expired ones are removed as log time passes them).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The session table, for status and snapshots.
    /// The password hash of the registered nick, or `None` if `nick` is not registered.
    pub fn account_hash(&self, nick: &str) -> Option<&str> {
        self.accounts.get(nick).map(String::as_str)
    }

    /// The owners and settings of `room`, if it has an owner.
    pub fn room_meta(&self, room: &str) -> Option<&RoomMeta> {
        self.room_meta.get(room)
    }

    /// How many accounts are registered.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    fn apply_op(&mut self, index: Index, timestamp_ms: u64, op: Op) -> Outcome {
        let result = match op {
            Op::Post { room, nick, text } => self.post(index, timestamp_ms, room, nick, text),
            Op::CreateRoom { room } => self.create_room(room),
            Op::Set { key, value } => self.set(key, value),
            Op::Del { key } => self.del(key),
            Op::Cas { key, expected, new } => self.cas(key, expected, new),
            Op::OpenSession => Ok(self.open_session(index)),
            Op::Register { nick, hash } => self.register(nick, hash),
            Op::SetPassword { nick, hash } => self.set_password(nick, hash),
            Op::JoinRoom { room, nick } => self.join_room(room, nick),
            Op::RoomAdmin { room, by, action } => self.room_admin(room, by, action),
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
        let position = self.chat_log.last_position() + 1;
        positions.held.push_back(position);
        let timestamp_ms = match self.chat_log.newest_timestamp_ms() {
            Some(last) => timestamp_ms.max(last),
            None => timestamp_ms,
        };
        let evicted = self.chat_log.push(ChatMessage {
            position,
            index,
            room,
            nick,
            text,
            timestamp_ms,
        });
        if let Some(through) = evicted {
            // The chat log dropped chunks from memory: so do the rooms. (Only a store-backed
            // log evicts, and it has no retention: nothing more to do.)
            for positions in self.rooms.values_mut() {
                positions.evict_through(through);
            }
            return Ok(Outcome::Posted { position });
        }
        // Retention: the room's oldest messages go, the same on every node (a pure function
        // of the entries and `retain_messages`). The new message is never among them.
        if self.retain_messages > 0 {
            while positions.held.len() as u64 > self.retain_messages {
                if let Some(oldest) = positions.held.pop_front() {
                    let dropped = self.chat_log.remove(oldest);
                    debug_assert!(dropped, "a room lists position {oldest}, not in the log");
                }
            }
        }
        Ok(Outcome::Posted { position })
    }

    fn join_room(&mut self, room: String, nick: String) -> Result<Outcome, String> {
        validate_room(&room)?;
        validate_nick(&nick)?;
        if !self.rooms.contains_key(&room) {
            self.rooms.insert(room.clone(), RoomPositions::default());
            let meta = RoomMeta {
                ops: BTreeSet::from([nick]),
                ..RoomMeta::default()
            };
            self.room_meta.insert(room, meta);
            return Ok(Outcome::RoomCreated { existed: false });
        }
        match self.room_meta.get(&room) {
            Some(meta) if !meta.admits(&nick) => Err(private_room(&room)),
            _ => Ok(Outcome::RoomCreated { existed: true }),
        }
    }

    fn room_admin(
        &mut self,
        room: String,
        by: String,
        action: RoomAction,
    ) -> Result<Outcome, String> {
        validate_room(&room)?;
        validate_nick(&by)?;
        match &action {
            RoomAction::Op(nick) | RoomAction::Kick(nick) | RoomAction::Invite(nick) => {
                validate_nick(nick)?
            }
            RoomAction::Topic(text) => validate_text(text)?,
            RoomAction::Private => {}
        }
        let Some(meta) = self.room_meta.get_mut(&room) else {
            return Err(format!(
                "#{room} has no owner: only rooms created by a logged-in account do"
            ));
        };
        if !meta.ops.contains(&by) {
            return Err(format!("only an owner of #{room} can do that"));
        }
        match action {
            RoomAction::Op(nick) => {
                meta.ops.insert(nick);
            }
            RoomAction::Kick(nick) => {
                if meta.ops.contains(&nick) {
                    return Err(format!(
                        "{nick} is an owner of #{room}: owners cannot be kicked"
                    ));
                }
                meta.invited.remove(&nick);
                return Ok(Outcome::Kicked { room, nick });
            }
            RoomAction::Topic(text) => meta.topic = text,
            RoomAction::Private => meta.private = true,
            RoomAction::Invite(nick) => {
                meta.invited.insert(nick);
            }
        }
        Ok(Outcome::RoomUpdated)
    }

    fn create_room(&mut self, room: String) -> Result<Outcome, String> {
        validate_room(&room)?;
        if self.room_meta.get(&room).is_some_and(|meta| meta.private) {
            return Err(private_room(&room));
        }
        let existed = self.rooms.contains_key(&room);
        if !existed {
            self.rooms.insert(room, RoomPositions::default());
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

    fn register(&mut self, nick: String, hash: String) -> Result<Outcome, String> {
        validate_nick(&nick)?;
        validate_password_hash(&hash)?;
        if self.accounts.contains_key(&nick) {
            return Err(format!("nick {nick} is already registered"));
        }
        self.accounts.insert(nick, hash);
        Ok(Outcome::AccountSaved)
    }

    fn set_password(&mut self, nick: String, hash: String) -> Result<Outcome, String> {
        validate_nick(&nick)?;
        validate_password_hash(&hash)?;
        match self.accounts.get_mut(&nick) {
            Some(stored) => {
                *stored = hash;
                Ok(Outcome::AccountSaved)
            }
            None => Err(format!("no account {nick}: register it first")),
        }
    }

    /// A session's id is its entry's index: unique, and the same on every node.
    fn open_session(&mut self, index: Index) -> Outcome {
        self.sessions.open(index);
        Outcome::SessionOpened { session_id: index }
    }

    fn write(&mut self, key: String, value: String) -> Outcome {
        self.revision += 1;
        let revision = self.revision;
        self.kv.insert(key, KvValue { value, revision });
        Outcome::KvAck { revision }
    }

    /// Checks the cheap invariants of the module comment after every entry (debug builds):
    /// O(1) but for finding the newest live message and its predecessor.
    fn debug_assert_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        debug_assert!(self.chat_log.len() <= self.chat_log.last_position());
        if self.retain_messages == 0 {
            debug_assert_eq!(self.chat_log.len(), self.chat_log.last_position());
        }
        if let Some(last) = self.chat_log.last() {
            debug_assert!(last.position <= self.chat_log.last_position());
            debug_assert!(last.index <= self.applied_index);
            let room = self.rooms.get(&last.room);
            debug_assert_eq!(room.and_then(|p| p.held.back()), Some(&last.position));
            if self.retain_messages > 0 {
                debug_assert!(room.map_or(0, |p| p.held.len()) as u64 <= self.retain_messages);
            }
            let before = self
                .chat_log
                .iter_from(last.position.saturating_sub(CHUNK_LEN as u64 / 8))
                .take_while(|m| m.position < last.position)
                .last();
            if let Some(before) = before {
                debug_assert!(before.index < last.index);
                debug_assert!(before.timestamp_ms <= last.timestamp_ms);
            }
        }
    }

    /// Checks every invariant of the module comment and of the chat log; O(state). For tests.
    #[cfg(test)]
    pub(crate) fn check_invariants_full(&self) -> Result<(), String> {
        self.chat_log.check()?;
        if self.retain_messages == 0 && self.chat_log.len() != self.chat_log.last_position() {
            return Err("holes in the chat log without retention".into());
        }
        let mut previous: Option<Cow<'_, ChatMessage>> = None;
        for m in self.chat_log.iter_from(0) {
            if m.index > self.applied_index {
                return Err(format!("message {} beyond the applied index", m.position));
            }
            if let Some(p) = previous {
                if p.index >= m.index || p.timestamp_ms > m.timestamp_ms {
                    return Err(format!("message {} out of order", m.position));
                }
            }
            previous = Some(m);
        }
        let mut listed = 0u64;
        let mut stored = 0u64;
        for (room, positions) in &self.rooms {
            if self.retain_messages > 0 && positions.count() > self.retain_messages {
                return Err(format!("room {room} keeps {} messages", positions.count()));
            }
            stored += positions.stored;
            let mut last = self.chat_log.evicted_through();
            for &position in &positions.held {
                let message = self.chat_log.get(position);
                if position <= last || message.is_none_or(|m| &m.room != room) {
                    return Err(format!("room {room} lists position {position}"));
                }
                last = position;
            }
            listed += positions.count();
        }
        if stored != self.chat_log.evicted_through() {
            return Err(format!(
                "rooms count {stored} stored messages, the store holds {}",
                self.chat_log.evicted_through()
            ));
        }
        if listed != self.chat_log.len() {
            return Err(format!(
                "rooms list {listed} messages, the log holds {}",
                self.chat_log.len()
            ));
        }
        for (key, value) in &self.kv {
            if value.revision == 0 || value.revision > self.revision {
                return Err(format!("key {key} has revision {}", value.revision));
            }
        }
        Ok(())
    }
}

fn private_room(room: &str) -> String {
    format!("#{room} is private: ask an owner for an invitation")
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::chat::session::DEFAULT_SESSION_EXPIRY_MS;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;

    /// The whole chat log, in position order.
    fn all(sm: &StateMachine) -> Vec<Cow<'_, ChatMessage>> {
        sm.messages_from(1).collect()
    }

    fn encode(op: Op, node: u64, req: u64, timestamp_ms: u64) -> Vec<u8> {
        let mut out = Vec::new();
        Command {
            origin: Origin { node, req },
            timestamp_ms,
            session: None,
            op,
        }
        .encode(&mut out);
        out
    }

    /// A state machine plus the next index, for terse tests.
    const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
    const PHC2: &str = "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0$b3RoZXJoYXNo";

    #[test]
    fn accounts_register_once_and_change_password() {
        let mut h = Harness::new();
        let register = |nick: &str, hash: &str| Op::Register {
            nick: nick.into(),
            hash: hash.into(),
        };
        assert_eq!(h.apply(register("alice", PHC)), Outcome::AccountSaved);
        assert_eq!(h.sm.account_hash("alice"), Some(PHC));
        let before = h.sm.clone();
        let rejected = [
            register("alice", PHC2),
            register("al ice", PHC),
            register("bob", "plaintext-password"),
            register("bob", &format!("$argon2id${}", "x".repeat(300))),
            Op::SetPassword {
                nick: "nobody".into(),
                hash: PHC2.into(),
            },
            Op::SetPassword {
                nick: "alice".into(),
                hash: "md5:abc".into(),
            },
        ];
        for op in rejected {
            let outcome = h.apply(op.clone());
            assert!(
                matches!(outcome, Outcome::Rejected(_)),
                "{op:?}: {outcome:?}"
            );
            // A rejected command changes nothing but the applied index.
            // (and the log clock, which every entry advances)
            let mut expected = before.clone();
            expected.applied_index = h.sm.applied_index;
            expected.sessions.advance_clock(h.sm.sessions.clock_ms());
            assert_eq!(h.sm, expected, "{op:?}");
        }
        assert_eq!(
            h.apply(register("alice", PHC2)),
            Outcome::Rejected("nick alice is already registered".into())
        );
        let change = Op::SetPassword {
            nick: "alice".into(),
            hash: PHC2.into(),
        };
        assert_eq!(h.apply(change), Outcome::AccountSaved);
        assert_eq!(h.sm.account_hash("alice"), Some(PHC2));
        assert_eq!(h.sm.account_hash("bob"), None);
        assert_eq!(h.sm.account_count(), 1);
    }

    #[test]
    fn room_owners_ops_kick_topic_and_private_rooms() {
        let mut h = Harness::new();
        let join = |room: &str, nick: &str| Op::JoinRoom {
            room: room.into(),
            nick: nick.into(),
        };
        let admin = |by: &str, action: RoomAction| Op::RoomAdmin {
            room: "rust".into(),
            by: by.into(),
            action,
        };
        assert_eq!(
            h.apply(join("rust", "alice")),
            Outcome::RoomCreated { existed: false }
        );
        let meta = h.sm.room_meta("rust").unwrap();
        assert!(meta.ops.contains("alice") && !meta.private);
        // Only owners administer; the default room and anonymous rooms have no owner.
        let not_owner = h.apply(admin("bob", RoomAction::Private));
        assert_eq!(
            not_owner,
            Outcome::Rejected("only an owner of #rust can do that".into())
        );
        assert_eq!(
            h.apply(admin("alice", RoomAction::Op("bob".into()))),
            Outcome::RoomUpdated
        );
        let topic = RoomAction::Topic("Rust and Raft".into());
        assert_eq!(h.apply(admin("bob", topic)), Outcome::RoomUpdated);
        assert_eq!(h.sm.room_meta("rust").unwrap().topic, "Rust and Raft");
        assert_eq!(
            h.apply(admin("alice", RoomAction::Private)),
            Outcome::RoomUpdated
        );
        // Private: strangers and anonymous joins are refused, invited nicks and owners admitted.
        let refused = Outcome::Rejected("#rust is private: ask an owner for an invitation".into());
        assert_eq!(h.apply(join("rust", "carol")), refused);
        assert_eq!(
            h.apply(Op::CreateRoom {
                room: "rust".into()
            }),
            refused
        );
        assert_eq!(
            h.apply(join("rust", "bob")),
            Outcome::RoomCreated { existed: true }
        );
        let invite = RoomAction::Invite("carol".into());
        assert_eq!(h.apply(admin("alice", invite)), Outcome::RoomUpdated);
        assert_eq!(
            h.apply(join("rust", "carol")),
            Outcome::RoomCreated { existed: true }
        );
        // A kick takes the invitation back; owners cannot be kicked.
        assert_eq!(
            h.apply(admin("alice", RoomAction::Kick("carol".into()))),
            Outcome::Kicked {
                room: "rust".into(),
                nick: "carol".into()
            }
        );
        assert_eq!(h.apply(join("rust", "carol")), refused);
        assert!(matches!(
            h.apply(admin("bob", RoomAction::Kick("alice".into()))),
            Outcome::Rejected(_)
        ));
        let general = Op::RoomAdmin {
            room: DEFAULT_ROOM.into(),
            by: "alice".into(),
            action: RoomAction::Private,
        };
        assert!(matches!(h.apply(general), Outcome::Rejected(_)));
        assert!(h.sm.room_meta(DEFAULT_ROOM).is_none());
    }

    /// Random account commands (valid and not, fixed seeds): two machines fed the same entries
    /// agree, and every rejected command leaves the state as it was.
    #[test]
    fn random_account_commands_are_deterministic() {
        use rand::{rngs::SmallRng, Rng, SeedableRng};
        let nicks = ["alice", "bob", "c", "bad nick", ""];
        let hashes = [PHC, PHC2, "$argon2", "nope", "$argon2id$ spaced"];
        for seed in 0..4u64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut a = StateMachine::default();
            let mut b = StateMachine::default();
            for index in 1..=300u64 {
                let nick = nicks[rng.gen_range(0..nicks.len())].to_string();
                let hash = hashes[rng.gen_range(0..hashes.len())].to_string();
                let op = if rng.gen_bool(0.5) {
                    Op::Register { nick, hash }
                } else {
                    Op::SetPassword { nick, hash }
                };
                let data = encode(op, 1, index, 1_700_000_000_000 + index);
                let before = a.clone();
                let applied = a.apply(index, &data);
                assert_eq!(applied, b.apply(index, &data));
                if matches!(applied.outcome, Outcome::Rejected(_)) {
                    let mut expected = before;
                    expected.applied_index = index;
                    expected.sessions.advance_clock(a.sessions.clock_ms());
                    assert_eq!(a, expected);
                }
                assert_eq!(a, b);
            }
        }
    }

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
        for (i, msg) in all(&h.sm).iter().enumerate() {
            assert_eq!(msg.position, i as u64 + 1);
            assert_eq!(h.sm.message(msg.position).as_ref(), Some(msg));
        }
        assert!(all(&h.sm).windows(2).all(|w| w[0].index < w[1].index));
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
        assert_eq!(all(&h.sm).len(), 1);
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
        let times: Vec<u64> = all(&h.sm).iter().map(|m| m.timestamp_ms).collect();
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
        assert_eq!(all(&h.sm), all(&before));
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

    /// Applies `entries` (`None`: a no-op) to two copies of `sm`, asserting equal outcomes at
    /// every step; returns both machines.
    fn apply_to_two(sm: StateMachine, entries: &[Option<Vec<u8>>]) -> (StateMachine, StateMachine) {
        let (mut a, mut b) = (sm.clone(), sm);
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
        (a, b)
    }

    #[test]
    fn same_entries_same_state_and_outcomes() {
        for seed in 0..20 {
            let entries = random_entries(seed, 500);
            let (a, b) = apply_to_two(StateMachine::default(), &entries);
            assert_eq!(a, b);
            assert_eq!(a.applied_index(), 500);
            assert!(all(&a)
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
            // A valid version byte, so the garbage reaches the session, op and field decoding.
            match i % 3 {
                0 => data.insert(0, crate::chat::command::FORMAT_V1),
                1 => data.insert(0, crate::chat::command::FORMAT_V2),
                _ => {}
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
                assert_eq!(sm.sessions, before.sessions);
                rejections += 1;
            }
        }
        assert!(rejections > 19_000, "{rejections}");
        assert_eq!(sm.applied_index(), 20_000);
    }

    // ---- Retention (`--retain-messages`) ----

    fn post_entry(index: Index, room: &str, text: &str) -> Vec<u8> {
        encode(post_op(room, text), 1, index, T0_MS + index)
    }

    /// Posts `count` messages over `rooms` (room `k % rooms.len()`, but every seventh message
    /// to the first room, so rooms fill unevenly), after creating the rooms.
    fn retention_entries(rooms: &[&str], count: u64) -> Vec<Vec<u8>> {
        let mut entries: Vec<Vec<u8>> = rooms
            .iter()
            .enumerate()
            .map(|(i, room)| {
                encode(
                    Op::CreateRoom {
                        room: room.to_string(),
                    },
                    1,
                    i as u64,
                    T0_MS,
                )
            })
            .collect();
        for k in 0..count {
            let room = if k % 7 == 0 {
                rooms[0]
            } else {
                rooms[k as usize % rooms.len()]
            };
            let index = entries.len() as Index + 1;
            entries.push(post_entry(index, room, &format!("{room}-{k}")));
        }
        entries
    }

    fn apply_all(sm: &mut StateMachine, entries: &[Vec<u8>]) -> Vec<Applied> {
        let first = sm.applied_index() + 1;
        entries
            .iter()
            .enumerate()
            .map(|(i, data)| sm.apply(first + i as Index, data))
            .collect()
    }

    #[test]
    fn retention_keeps_exactly_the_last_n_of_each_room() {
        let rooms = ["general", "a", "b"];
        let n = 5;
        let entries = retention_entries(&rooms, 200);
        let mut full = StateMachine::default();
        let mut kept = StateMachine::default().with_retention(n);
        assert_eq!(kept.retain_messages(), n);
        let a = apply_all(&mut full, &entries);
        let b = apply_all(&mut kept, &entries);
        // The same outcomes: positions are assigned as without retention, never reused.
        assert_eq!(a, b);
        kept.check_invariants_full().unwrap();
        assert_eq!(kept.last_position(), 200);
        assert_eq!(full.last_position(), 200);
        assert_eq!(kept.message_count(), 3 * n);
        for room in rooms {
            let expected = full.room_history(room, n as usize);
            assert_eq!(kept.room_history(room, 100), expected, "{room}");
            assert_eq!(kept.room_history(room, 2), expected[3..].to_vec());
            let count = kept
                .rooms()
                .into_iter()
                .find(|(r, _)| *r == room)
                .unwrap()
                .1;
            assert_eq!(count, n);
        }
        // `message` and `messages_from` see exactly the survivors, in position order.
        let survivors: Vec<u64> = rooms
            .iter()
            .flat_map(|room| kept.room_history(room, 100))
            .map(|m| m.position)
            .collect::<BTreeSet<u64>>()
            .into_iter()
            .collect();
        for p in 0..=202 {
            let expected = survivors.contains(&p).then(|| full.message(p).unwrap());
            assert_eq!(kept.message(p), expected, "position {p}");
            let from: Vec<u64> = kept.messages_from(p).map(|m| m.position).collect();
            let want: Vec<u64> = survivors.iter().copied().filter(|&s| s >= p).collect();
            assert_eq!(from, want, "from {p}");
        }
        // The next post takes the next position, and pushes its room's oldest out.
        let oldest_general = kept.room_history("general", 1_000)[0].position;
        let next = post_entry(kept.applied_index() + 1, "general", "new");
        let applied = kept.apply(kept.applied_index() + 1, &next);
        assert_eq!(applied.outcome, Outcome::Posted { position: 201 });
        assert_eq!(kept.message(oldest_general), None);
        assert_eq!(kept.message_count(), 3 * n);
        assert_eq!(kept.messages_from(0).last().map(|m| m.position), Some(201));
    }

    #[test]
    fn retention_zero_keeps_everything() {
        let entries = retention_entries(&["general", "a"], 300);
        let mut a = StateMachine::default();
        let mut b = StateMachine::default().with_retention(0);
        apply_all(&mut a, &entries);
        apply_all(&mut b, &entries);
        assert_eq!(a, b);
        assert_eq!((b.message_count(), b.last_position()), (300, 300));
        b.check_invariants_full().unwrap();
    }

    #[test]
    fn retention_is_deterministic_across_machines() {
        for seed in 0..10 {
            let entries = random_entries(seed, 2_000);
            let (a, b) = apply_to_two(StateMachine::default().with_retention(3), &entries);
            assert_eq!(a, b, "seed {seed}");
            a.check_invariants_full().unwrap();
            let all_a: Vec<_> = a.messages_from(0).collect();
            let all_b: Vec<_> = b.messages_from(0).collect();
            assert_eq!(all_a, all_b);
            assert!(a.rooms().iter().all(|(_, count)| *count <= 3));
        }
    }

    #[test]
    fn retention_frees_dropped_messages() {
        let n = 100;
        let rooms = ["general", "a", "b", "c"];
        let entries = retention_entries(&rooms, 100_000);
        let mut sm = StateMachine::default().with_retention(n);
        let mut peak = 0;
        let first = 1;
        for (i, data) in entries.iter().enumerate() {
            sm.apply(first + i as Index, data);
            peak = peak.max(sm.held_message_slots());
            if i % 10_000 == 0 {
                sm.check_invariants_full().unwrap();
            }
        }
        sm.check_invariants_full().unwrap();
        let live = sm.message_count() as usize;
        assert_eq!(live, rooms.len() * n as usize);
        assert_eq!(sm.last_position(), 100_000);
        // At most twice the live messages in chunks, plus one tail: not 100,000.
        let bound = 2 * live + CHUNK_LEN;
        assert!(peak <= bound, "held {peak} slots, bound {bound}");
        assert!(sm.chat_log.chunk_count() <= live);
        // A capture shares what it needs and keeps it alive; the machine still frees its own.
        let snapshot = sm.capture();
        assert_eq!(snapshot.message_count(), live as u64);
    }

    // ---- Client sessions: exactly-once application (Ongaro §6.3) ----

    const T0_MS: u64 = 1_700_000_000_000;

    fn in_session(id: u64, seq: u64, lowest_unacked_seq: u64) -> Option<SessionRef> {
        Some(SessionRef {
            id,
            seq,
            lowest_unacked_seq,
        })
    }

    fn post_op(room: &str, text: &str) -> Op {
        Op::Post {
            room: room.into(),
            nick: "alice".into(),
            text: text.into(),
        }
    }

    impl Harness {
        fn with_sm(sm: StateMachine) -> Harness {
            Harness {
                sm,
                ..Harness::new()
            }
        }

        /// Applies `op` in `session` at `timestamp_ms`, as a fresh request id of node 7.
        fn apply_full(
            &mut self,
            op: Op,
            session: Option<SessionRef>,
            timestamp_ms: u64,
        ) -> Applied {
            let req = self.next_req;
            self.next_req += 1;
            let mut data = Vec::new();
            Command {
                origin: Origin { node: 7, req },
                timestamp_ms,
                session,
                op,
            }
            .encode(&mut data);
            let index = self.next_index;
            self.next_index += 1;
            let applied = self.sm.apply(index, &data);
            assert_eq!(applied.origin, Some(Origin { node: 7, req }));
            self.sm.sessions.assert_invariants_full();
            applied
        }

        fn open_at(&mut self, timestamp_ms: u64) -> u64 {
            let index = self.next_index;
            let applied = self.apply_full(Op::OpenSession, None, timestamp_ms);
            assert_eq!(
                applied.outcome,
                Outcome::SessionOpened { session_id: index }
            );
            assert!(!applied.duplicate);
            index
        }

        fn post_in(&mut self, session: Option<SessionRef>, text: &str) -> Applied {
            self.apply_full(post_op(DEFAULT_ROOM, text), session, T0_MS)
        }
    }

    fn fresh(outcome: Outcome) -> (Outcome, bool) {
        (outcome, false)
    }

    fn duplicate(outcome: Outcome) -> (Outcome, bool) {
        (outcome, true)
    }

    fn pair(applied: Applied) -> (Outcome, bool) {
        (applied.outcome, applied.duplicate)
    }

    #[test]
    fn a_retried_post_is_applied_once_and_answered_again() {
        let mut h = Harness::new();
        h.post(DEFAULT_ROOM, "before"); // index 1: the session id is not always 1
        let id = h.open_at(T0_MS);
        assert_eq!(id, 2);
        assert_eq!(h.sm.session_count(), 1);
        assert_eq!(
            pair(h.post_in(in_session(id, 1, 1), "once")),
            fresh(Outcome::Posted { position: 2 })
        );
        let before = h.sm.clone();
        // The retry is a new entry (a new request id, maybe a new leader's proposal).
        assert_eq!(
            pair(h.post_in(in_session(id, 1, 1), "once")),
            duplicate(Outcome::Posted { position: 2 })
        );
        assert_eq!(all(&h.sm), all(&before));
        assert_eq!(h.sm.rooms, before.rooms);
        let log = all(&h.sm);
        let texts: Vec<&str> = log.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, vec!["before", "once"]);

        // The same for a key-value write: no second revision.
        let set = Op::Set {
            key: "k".into(),
            value: "v".into(),
        };
        let first = h.apply_full(set.clone(), in_session(id, 2, 1), T0_MS);
        assert_eq!(pair(first), fresh(Outcome::KvAck { revision: 1 }));
        let again = h.apply_full(set, in_session(id, 2, 2), T0_MS);
        assert_eq!(pair(again), duplicate(Outcome::KvAck { revision: 1 }));
        assert_eq!(h.sm.revision(), 1);
        assert_eq!(h.sm.get("k"), Some(("v", 1)));
    }

    #[test]
    fn commands_without_a_session_are_applied_every_time() {
        let mut h = Harness::new();
        let a = h.post_in(None, "same");
        let b = h.post_in(None, "same");
        assert_eq!(pair(a), fresh(Outcome::Posted { position: 1 }));
        assert_eq!(pair(b), fresh(Outcome::Posted { position: 2 }));
        assert_eq!(h.sm.session_count(), 0);
    }

    #[test]
    fn pipelined_requests_may_commit_out_of_order() {
        let mut h = Harness::new();
        let id = h.open_at(T0_MS);
        // Sent as 1, 2, 3, 4; committed as 3, 1, 4, 2 (e.g. via different leaders).
        for (seq, position) in [(3, 1), (1, 2), (4, 3), (2, 4)] {
            assert_eq!(
                pair(h.post_in(in_session(id, seq, 1), &format!("s{seq}"))),
                fresh(Outcome::Posted { position })
            );
        }
        // Every retry gets its own original answer, in any order.
        for (seq, position) in [(2, 4), (4, 3), (1, 2), (3, 1)] {
            assert_eq!(
                pair(h.post_in(in_session(id, seq, 1), &format!("s{seq}"))),
                duplicate(Outcome::Posted { position })
            );
        }
        assert_eq!(all(&h.sm).len(), 4);
        for msg in all(&h.sm) {
            assert_eq!(all(&h.sm).iter().filter(|m| m.text == msg.text).count(), 1);
        }
        assert_eq!(h.sm.sessions().get(id).unwrap().retained_count(), 4);
    }

    #[test]
    fn acknowledged_results_are_forgotten_and_their_retries_rejected() {
        let mut h = Harness::new();
        let id = h.open_at(T0_MS);
        for seq in 1..=3 {
            h.post_in(in_session(id, seq, 1), &format!("s{seq}"));
        }
        assert_eq!(h.sm.sessions().get(id).unwrap().retained_count(), 3);
        // Seq 4 says 1 and 2 were answered: their results go.
        assert_eq!(
            pair(h.post_in(in_session(id, 4, 3), "s4")),
            fresh(Outcome::Posted { position: 4 })
        );
        let session = h.sm.sessions().get(id).unwrap();
        assert_eq!(
            session.retained().map(|(seq, _)| seq).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(session.lowest_retained_seq(), 3);

        // A late retry of seq 2 (still carrying lowest_unacked 1) is refused, not re-applied.
        let before = h.sm.clone();
        let late = h.post_in(in_session(id, 2, 1), "s2");
        assert!(!late.duplicate);
        assert!(rejected(late.outcome).starts_with("request already answered"));
        assert_eq!(all(&h.sm), all(&before));
        // Seq 3 is still retained.
        assert_eq!(
            pair(h.post_in(in_session(id, 3, 1), "s3")),
            duplicate(Outcome::Posted { position: 3 })
        );
        assert_eq!(all(&h.sm).len(), 4);
    }

    #[test]
    fn rejected_outcomes_are_retained_like_any_other() {
        let mut h = Harness::new();
        let id = h.open_at(T0_MS);
        let first = h.apply_full(post_op("rust", "hi"), in_session(id, 1, 1), T0_MS);
        let reason = rejected(first.outcome);
        h.create("rust");
        // The room exists now, but a retry of seq 1 must get the answer seq 1 got.
        let retry = h.apply_full(post_op("rust", "hi"), in_session(id, 1, 1), T0_MS);
        assert_eq!(pair(retry), duplicate(Outcome::Rejected(reason)));
        assert!(all(&h.sm).is_empty());
    }

    #[test]
    fn malformed_session_requests_are_rejected_and_apply_nothing() {
        let mut h = Harness::new();
        let id = h.open_at(T0_MS);
        for session in [in_session(id, 0, 0), in_session(id, 2, 3)] {
            let applied = h.post_in(session, "x");
            assert!(rejected(applied.outcome).starts_with("invalid session request"));
        }
        let open = h.apply_full(Op::OpenSession, in_session(id, 1, 1), T0_MS);
        assert_eq!(
            rejected(open.outcome),
            "an OpenSession request carries no session"
        );
        assert_eq!(h.sm.session_count(), 1);
        assert!(all(&h.sm).is_empty());
        // Nothing was retained: seq 2 is still free.
        assert_eq!(
            pair(h.post_in(in_session(id, 2, 1), "y")),
            fresh(Outcome::Posted { position: 1 })
        );
    }

    #[test]
    fn unknown_sessions_are_expired() {
        let mut h = Harness::new();
        let before = h.sm.clone();
        for id in [0, 1, 99, u64::MAX] {
            let applied = h.post_in(in_session(id, 1, 1), "x");
            assert_eq!(pair(applied), fresh(Outcome::SessionExpired));
        }
        assert_eq!(all(&h.sm), all(&before));
        assert_eq!(h.sm.session_count(), 0);
    }

    #[test]
    fn sessions_expire_by_log_time() {
        let expiry_ms = 60_000;
        let mut h = Harness::with_sm(StateMachine::with_session_expiry_ms(expiry_ms));
        let post = |h: &mut Harness, id, seq, timestamp_ms| {
            let op = post_op(DEFAULT_ROOM, &format!("s{seq}"));
            h.apply_full(op, in_session(id, seq, seq), timestamp_ms)
                .outcome
        };
        let a = h.open_at(T0_MS);
        // Exactly the expiry of idleness is still live; each request restarts the idle time.
        assert_eq!(
            post(&mut h, a, 1, T0_MS + expiry_ms),
            Outcome::Posted { position: 1 }
        );
        assert_eq!(
            post(&mut h, a, 2, T0_MS + 2 * expiry_ms),
            Outcome::Posted { position: 2 }
        );
        // One millisecond more is expired: nothing applied, and the session is gone.
        assert_eq!(
            post(&mut h, a, 3, T0_MS + 3 * expiry_ms + 1),
            Outcome::SessionExpired
        );
        assert_eq!(all(&h.sm).len(), 2);
        assert_eq!(h.sm.session_count(), 0);

        // Other traffic moves log time too: an idle session goes when it passes its deadline,
        // without a request of its own (telnet posts and no-ops here).
        let t1 = T0_MS + 10 * expiry_ms;
        let b = h.open_at(t1);
        let c = h.open_at(t1 + expiry_ms / 2);
        h.sm.apply_noop(h.next_index); // no timestamp: time stands still
        h.next_index += 1;
        assert_eq!(h.sm.session_count(), 2);
        h.apply_full(post_op(DEFAULT_ROOM, "telnet"), None, t1 + expiry_ms + 1);
        assert_eq!(h.sm.session_count(), 1);
        assert!(h.sm.sessions().get(b).is_none());
        // A leader with a lagging clock cannot bring it back: log time never runs backwards.
        assert_eq!(post(&mut h, b, 1, t1), Outcome::SessionExpired);
        assert_eq!(h.sm.sessions().clock_ms(), t1 + expiry_ms + 1);
        assert_eq!(post(&mut h, c, 1, t1), Outcome::Posted { position: 4 });
        assert_eq!(
            h.sm.sessions().get(c).unwrap().last_active_ms(),
            t1 + expiry_ms + 1
        );
    }

    #[test]
    fn the_default_expiry_is_ten_minutes() {
        let mut h = Harness::new();
        let id = h.open_at(T0_MS);
        let ten_minutes_ms = 10 * 60 * 1000;
        h.apply_full(post_op(DEFAULT_ROOM, "x"), None, T0_MS + ten_minutes_ms);
        assert_eq!(h.sm.session_count(), 1);
        h.apply_full(post_op(DEFAULT_ROOM, "x"), None, T0_MS + ten_minutes_ms + 1);
        assert_eq!(h.sm.session_count(), 0);
        assert_eq!(
            h.post_in(in_session(id, 1, 1), "late").outcome,
            Outcome::SessionExpired
        );
    }

    #[test]
    fn too_many_unacknowledged_requests_are_refused_until_acknowledged() {
        let config = SessionConfig {
            retained_per_session_max: 4,
            ..SessionConfig::default()
        };
        let mut h = Harness::with_sm(StateMachine::with_session_config(config));
        let id = h.open_at(T0_MS);
        for seq in 1..=4 {
            h.post_in(in_session(id, seq, 1), "x");
        }
        let refused = h.post_in(in_session(id, 5, 1), "x");
        assert!(rejected(refused.outcome).starts_with("too many unacknowledged requests"));
        assert_eq!(all(&h.sm).len(), 4);
        // Retries of retained seqs are still answered at the cap.
        assert_eq!(
            pair(h.post_in(in_session(id, 4, 1), "x")),
            duplicate(Outcome::Posted { position: 4 })
        );
        // Acknowledging makes room; the refused seq was never applied, so it is still free.
        assert_eq!(
            pair(h.post_in(in_session(id, 5, 3), "x")),
            fresh(Outcome::Posted { position: 5 })
        );
    }

    #[test]
    fn opening_beyond_the_limit_evicts_the_least_recently_active() {
        let config = SessionConfig {
            sessions_max: 2,
            ..SessionConfig::default()
        };
        let mut h = Harness::with_sm(StateMachine::with_session_config(config));
        let a = h.open_at(T0_MS);
        let b = h.open_at(T0_MS + 1);
        h.apply_full(post_op(DEFAULT_ROOM, "x"), in_session(a, 1, 1), T0_MS + 2);
        let c = h.open_at(T0_MS + 3);
        assert_eq!(h.sm.session_count(), 2);
        assert_eq!(
            h.post_in(in_session(b, 1, 1), "x").outcome,
            Outcome::SessionExpired
        );
        assert!(h.sm.sessions().get(a).is_some() && h.sm.sessions().get(c).is_some());
    }

    /// What a simulated client remembers about one of its requests.
    struct Sent {
        op: Op,
        acked: bool,
    }

    struct Client {
        id: u64,
        next_seq: u64,
        sent: BTreeMap<u64, Sent>,
    }

    impl Client {
        fn lowest_unacked_seq(&self) -> u64 {
            self.sent
                .iter()
                .find(|(_, sent)| !sent.acked)
                .map_or(self.next_seq, |(&seq, _)| seq)
        }
    }

    /// Clients opening sessions and sending, retrying, acknowledging and abandoning requests,
    /// interleaved at random with telnet commands, no-ops, garbage, lagging and jumping leader
    /// clocks, and requests on sessions that never existed; the same entries for the same seed.
    /// Every sessioned request's text (or key) is unique, so exactly-once is checkable.
    pub(in crate::chat) fn session_workload(seed: u64, count: usize) -> Vec<Option<Vec<u8>>> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut clients: Vec<Client> = Vec::new();
        let mut now_ms = T0_MS;
        let mut entries = Vec::with_capacity(count);
        for req in 0..count as u64 {
            let index = req + 1;
            now_ms = match rng.gen_range(0..100) {
                0 => now_ms + 2 * DEFAULT_SESSION_EXPIRY_MS / 3, // a long pause
                1..=4 => now_ms.saturating_sub(rng.gen_range(0..5_000)), // a lagging leader
                _ => now_ms + rng.gen_range(0..2_000),
            };
            let command = |session, op| {
                let mut data = Vec::new();
                Command {
                    origin: Origin {
                        node: index % 3,
                        req,
                    },
                    timestamp_ms: now_ms,
                    session,
                    op,
                }
                .encode(&mut data);
                Some(data)
            };
            let roll = rng.gen_range(0..100);
            let entry = if clients.is_empty() || roll < 4 {
                clients.push(Client {
                    id: index,
                    next_seq: 1,
                    sent: BTreeMap::new(),
                });
                command(None, Op::OpenSession)
            } else if roll < 6 {
                None // a leader's no-op
            } else if roll < 7 {
                let len = rng.gen_range(0..60);
                Some((0..len).map(|_| rng.gen()).collect())
            } else if roll < 9 {
                command(None, post_op(DEFAULT_ROOM, "telnet"))
            } else if roll < 10 {
                // Ids no entry of this log has (0, or beyond its last index): a client that
                // lies about a live session's seqs is not a client exactly-once can protect.
                let bogus = SessionRef {
                    id: rng.gen_range(count as u64..count as u64 * 2) * rng.gen_range(0..2),
                    seq: rng.gen_range(0..5),
                    lowest_unacked_seq: rng.gen_range(0..5),
                };
                command(Some(bogus), post_op(DEFAULT_ROOM, "bogus"))
            } else {
                let at = rng.gen_range(0..clients.len());
                let client = &mut clients[at];
                let action = rng.gen_range(0..10);
                if action < 5 || client.sent.is_empty() {
                    // A new request.
                    let seq = client.next_seq;
                    let lowest_unacked_seq = match rng.gen_range(0..30) {
                        0 => seq + 1, // a client bug: acknowledges what it has not sent
                        _ => client.lowest_unacked_seq(),
                    };
                    client.next_seq += 1;
                    let unique = format!("c{}s{seq}", client.id);
                    let op = match rng.gen_range(0..6) {
                        0 => Op::Set {
                            key: unique,
                            value: "v".into(),
                        },
                        1 => post_op("nowhere", &unique), // rejected, and retained
                        _ => post_op(DEFAULT_ROOM, &unique),
                    };
                    let session = SessionRef {
                        id: client.id,
                        seq,
                        lowest_unacked_seq,
                    };
                    client.sent.insert(
                        seq,
                        Sent {
                            op: op.clone(),
                            acked: false,
                        },
                    );
                    command(Some(session), op)
                } else {
                    let seqs: Vec<u64> = client.sent.keys().copied().collect();
                    let seq = seqs[rng.gen_range(0..seqs.len())];
                    if action < 8 {
                        // A retry of any earlier request, acknowledged or not (a confused
                        // client, or a retry that was delayed in the network).
                        let session = SessionRef {
                            id: client.id,
                            seq,
                            lowest_unacked_seq: client.lowest_unacked_seq().min(seq),
                        };
                        let op = client.sent[&seq].op.clone();
                        command(Some(session), op)
                    } else {
                        // The client saw an answer: nothing is proposed, but later requests
                        // acknowledge it. A no-op stands in for the entry.
                        client.sent.get_mut(&seq).expect("picked from keys").acked = true;
                        None
                    }
                }
            };
            entries.push(entry);
        }
        entries
    }

    #[test]
    fn sessions_are_deterministic_and_exactly_once_under_random_interleavings() {
        let mut totals = BTreeMap::<&str, u64>::new();
        for seed in 0..20 {
            let entries = session_workload(seed, 2_000);
            let mut a = StateMachine::default();
            let mut b = StateMachine::default();
            // First outcome of every (session, seq) that was applied, for checking retries, and
            // every (session, seq) that got any answer (a refusal is an answer too).
            let mut first: BTreeMap<(u64, u64), Outcome> = BTreeMap::new();
            let mut answered: BTreeSet<(u64, u64)> = BTreeSet::new();
            for (i, entry) in entries.iter().enumerate() {
                let index = i as Index + 1;
                let Some(data) = entry else {
                    a.apply_noop(index);
                    b.apply_noop(index);
                    continue;
                };
                let applied = a.apply(index, data);
                assert_eq!(applied, b.apply(index, data), "seed {seed} index {index}");
                let Ok(Command {
                    session: Some(request),
                    ..
                }) = Command::decode(data)
                else {
                    continue;
                };
                let key = (request.id, request.seq);
                let kind = match (&applied.outcome, applied.duplicate) {
                    (outcome, true) => {
                        assert_eq!(first.get(&key), Some(outcome), "seed {seed} {key:?}");
                        "duplicate"
                    }
                    (Outcome::SessionExpired, false) => "expired",
                    (Outcome::Rejected(reason), false)
                        if reason.starts_with("request already answered") =>
                    {
                        assert!(answered.contains(&key), "seed {seed} {key:?}");
                        "already answered"
                    }
                    (Outcome::Rejected(reason), false)
                        if reason.starts_with("invalid session request") =>
                    {
                        "invalid"
                    }
                    (outcome, false) => {
                        let earlier = first.insert(key, outcome.clone());
                        assert_eq!(earlier, None, "seed {seed}: {key:?} applied twice");
                        "applied"
                    }
                };
                answered.insert(key);
                *totals.entry(kind).or_default() += 1;
                if index.is_multiple_of(256) {
                    a.sessions.assert_invariants_full();
                }
            }
            assert_eq!(a, b);
            // Exactly once: every unique text is in the chat log at most once.
            let log = all(&a);
            let mut texts: Vec<&str> = log
                .iter()
                .map(|m| m.text.as_str())
                .filter(|text| text.starts_with('c'))
                .collect();
            let posted = texts.len();
            texts.sort_unstable();
            texts.dedup();
            assert_eq!(
                texts.len(),
                posted,
                "seed {seed}: a request was posted twice"
            );
            assert!(a.session_count() <= a.sessions().config().sessions_max);
        }
        // Every path must have been exercised, or the test proves little.
        for kind in [
            "applied",
            "duplicate",
            "expired",
            "already answered",
            "invalid",
        ] {
            assert!(
                totals.get(kind).copied().unwrap_or(0) > 10,
                "{kind}: {totals:?}"
            );
        }
    }

    #[test]
    fn mutated_session_commands_never_panic() {
        let mut rng = SmallRng::seed_from_u64(7);
        let entries: Vec<Vec<u8>> = session_workload(99, 3_000).into_iter().flatten().collect();
        let mut sm = StateMachine::with_session_expiry_ms(5_000);
        let mut decoded = 0;
        for (i, data) in entries.iter().enumerate() {
            let mut data = data.clone();
            if !data.is_empty() {
                for _ in 0..rng.gen_range(0..3) {
                    let at = rng.gen_range(0..data.len());
                    data[at] ^= 1 << rng.gen_range(0..8);
                }
            }
            let applied = sm.apply(i as Index + 1, &data);
            if Command::decode(&data).is_ok() {
                assert!(applied.origin.is_some());
                decoded += 1;
            }
        }
        sm.sessions.assert_invariants_full();
        assert!(decoded > 1_000, "{decoded}");
    }
}
