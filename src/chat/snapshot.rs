//! The chat state machine's snapshot form: a cheap in-memory capture, its binary encoding, and
//! the checked rebuild of a [`StateMachine`] from that encoding.
//!
//! It owns the snapshot *body* (the bytes a snapshot file carries); it never touches files,
//! checksums or Raft metadata (`storage::snapshot` frames the body with those).
//!
//! [`StateMachine::capture`] takes O(keys + sessions + chunks + `CHUNK_LEN`) time: the chunks of
//! the chat log are immutable and shared by `Arc` (with their small map of dropped messages),
//! only the mutable tail is copied. The capture is
//! `Send + 'static`, so [`ChatSnapshot::write_to`] can run on a background thread while the
//! event loop keeps applying entries.
//!
//! # Encoding (version 4, all integers little-endian)
//!
//! ```text
//! body      = magic "RCHATSM1" | version u32 | applied_index u64 | clock_ms u64
//!             | session_count u64 session* | revision u64 | key_count u64 kv*
//!             | room_count u64 room* | retain_messages u64 | last_position u64
//!             | message_count u64 message* | account_count u64 account*
//!             | meta_count u64 room_meta* | members string | end magic "RCHATEND"
//! session   = id u64 | last_active_ms u64 | lowest_retained_seq u64
//!             | retained_count u64 (seq u64 | outcome)*
//! outcome   = tag u8 | fields: 1 Posted position u64 | 2 RoomCreated existed u8
//!             | 3 KvAck revision u64 | 4 CasFailed has u8 [string] | 5 NotFound
//!             | 6 Rejected string | 7 SessionOpened session_id u64 | 8 SessionExpired
//!             | 9 AccountSaved
//!             | 10 RoomUpdated | 11 Kicked room string nick string
//! account   = nick string | argon2 PHC hash string   (sorted by nick)
//! room_meta = room string | private u8 | topic string | op_count u64 nick string*
//!             | invited_count u64 nick string*    (sorted by room, nicks sorted; room exists)
//! kv        = key string | value string | revision u64
//! room      = name string                      (sorted, including rooms with no messages)
//! message   = position u64 | index u64 | room u32 (into the room list) | nick string
//!             | text string | timestamp_ms u64
//! string    = len u32 | UTF-8 bytes
//! ```
//!
//! # Version 5: the messages are in the message store
//!
//! A store-backed machine (`StateMachine::with_store`, the server's default) leaves its history
//! out of the body: every position `1..=stored_through` is in the node's message store
//! (`crate::history`), which the snapshot writer syncs before the file gets its name
//! ([`ChatSnapshot::sync_store`]), so the body's size does not grow with the history:
//!
//! ```text
//! body      = magic | version u32 (5) | applied_index u64 | clock_ms u64 | stored_through u64
//!             | the version-4 sections, but message* holds only positions > stored_through
//!               (message_count = last_position - stored_through)
//!             | manifest | end magic
//! manifest  = segment_count u64 (seq u64 | base_position u64)*   the store's segments up to
//!                                           stored_through, from base 1, strictly increasing
//!             | room_count u64 total u64*   each room's message count, in room-list order
//! ```
//!
//! The first 36 bytes are the header [`peek_header`] reads. Restoring one
//! (`restore_with_store`) takes time independent of the history: it checks, before anything
//! else, that the store holds `1..=stored_through` (else "the message store ends at position
//! X but the snapshot needs 1..=S"), checks the newest stored message against the header and
//! the body's first message, and resumes the chat log after `stored_through` with nothing
//! before it in memory; rooms get their counts from the manifest and hold only the positions
//! in the body. The segment list is informational (nodes may cut segments at other
//! positions): it is checked for order only; the store is checked by its positions. A node
//! without a store (`--retain-messages`) refuses a version-5 body. A capture is version 5 only
//! when the machine's store works (else version 4, the whole chat, read from the store where
//! it has it); a machine held in memory keeps writing version 4.
//!
//! Room position lists are not stored: [`restore`] rebuilds them from the messages. Sessions,
//! keys and rooms are in ascending order; restore insists on it, so an encoding is canonical.
//!
//! Version 4 adds `members`: the member table (`members.rs`) in its text form (empty: the
//! cluster still runs its bootstrap list). Versions 2 and 3 are read as an unset table.
//!
//! Version 3 adds the accounts and room owner sections; a version 2 body (no accounts section) is still read,
//! as a state with no accounts, so snapshots written before accounts existed stay loadable.
//!
//! Version 2 carries retention: only the retained messages are written, with their positions
//! (strictly increasing, holes where messages were dropped), plus `last_position`, the highest
//! position ever assigned (the next message's position minus one). `retain_messages` is the
//! node's `--retain-messages` when the snapshot was taken: it is node configuration that must be
//! the same on every node and for the life of the data (replaying entries with another value
//! would drop other messages than the rest of the cluster did), so restore refuses a snapshot
//! taken with a value other than the node's own rather than diverge silently. Version 1 (no
//! holes, no retention) is no longer read: nothing written by it needs to be.
//!
//! # Restore never trusts its input
//!
//! Every length is bounded before anything is allocated for it, every name and value passes the
//! same validation `apply` uses, and the invariants of `state` (contiguous positions, increasing
//! indexes, non-decreasing timestamps, distinct revisions in range) and of `session` are checked.
//! Garbage or truncated input is an `Err` naming the first problem, never a panic.

use crate::codec::{put_bytes32_le, put_u32_le, put_u64_le};
use byteorder::{LittleEndian as LE, ReadBytesExt};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{self, Read, Write};

use super::chat_log::{Chunk, Incremental};
use super::session::{Session, SessionConfig, Sessions};
use super::state::{
    ChatLog, ChatMessage, KvValue, Outcome, RoomMeta, RoomPositions, StateMachine, StoredPart,
};
use super::validate::{
    validate_key, validate_nick, validate_password_hash, validate_room, validate_text,
    validate_value,
};
use crate::history::History;
use crate::raft::Index;
use std::sync::{Arc, Mutex};

const MAGIC: &[u8; 8] = b"RCHATSM1";
const END_MAGIC: &[u8; 8] = b"RCHATEND";
/// The encoding version this code writes (it also reads `SNAPSHOT_FORMAT_VERSION_NO_ACCOUNTS`).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 4;
/// Version 3: the same body without the members section.
pub const SNAPSHOT_FORMAT_VERSION_NO_MEMBERS: u32 = 3;
/// The previous version: the same body without the accounts section.
pub const SNAPSHOT_FORMAT_VERSION_NO_ACCOUNTS: u32 = 2;
/// No string in a valid snapshot is longer (texts and values are at most 4 KiB; a `Rejected`
/// reason quotes at most a few of those).
const STRING_BYTES_MAX: u32 = 1 << 20;
/// Untrusted counts never reserve more than this many elements up front.
const PREALLOCATE_MAX: u64 = 1 << 16;
/// Messages read from the message store per page while writing.
const STORED_PAGE_MESSAGES: usize = 4096;
/// Bytes gathered before one `write_all` to the caller's writer.
const WRITE_BATCH_BYTES: usize = 64 << 10;

/// The encoding version of a snapshot whose messages live in the message store (issue 20's
/// incremental snapshots): `magic | version u32 | applied_index u64 | clock_ms u64 |
/// stored_through u64 | ...`, where every position `1..=stored_through` is in the node's
/// message store (synced before the snapshot file got its name) and the body carries only the
/// messages after it.
pub const SNAPSHOT_FORMAT_VERSION_STORED: u32 = 5;

/// The header fields every version shares, and for a version-5 body the `stored_through`
/// position. Reads only the first 36 bytes, so a follower can learn from a received file how
/// much of the message store it needs before restoring it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyHeader {
    pub version: u32,
    pub applied_index: Index,
    /// Positions `1..=stored_through` must be in the message store (0 before version 5).
    pub stored_through: u64,
}

/// Bytes [`peek_header`] needs.
pub const BODY_HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 8;

/// Reads the header of a snapshot body from its first bytes; `None` if they are not a body.
pub fn peek_header(prefix: &[u8]) -> Option<BodyHeader> {
    let mut input = Input { r: prefix };
    input.magic(MAGIC, "magic").ok()?;
    let version = input.u32("version").ok()?;
    if !(SNAPSHOT_FORMAT_VERSION_NO_ACCOUNTS..=SNAPSHOT_FORMAT_VERSION_STORED).contains(&version) {
        return None;
    }
    let applied_index = input.u64("applied index").ok()?;
    let _clock_ms = input.u64("log time").ok()?;
    let stored_through = if version >= SNAPSHOT_FORMAT_VERSION_STORED {
        input.u64("stored through").ok()?
    } else {
        0
    };
    Some(BodyHeader {
        version,
        applied_index,
        stored_through,
    })
}

/// A snapshot of a [`StateMachine`] at its applied index, cheap to take and independent of the
/// machine afterwards (`Send + 'static`): write it out with [`ChatSnapshot::write_to`] anywhere.
#[derive(Clone, Debug)]
pub struct ChatSnapshot {
    applied_index: Index,
    sessions: Sessions,
    kv: BTreeMap<String, KvValue>,
    revision: u64,
    rooms: Vec<String>,
    /// Each room's message count, in `rooms` order (written in version 5).
    room_totals: Vec<u64>,
    /// Version 5: the store holds the messages up to `through`; the body carries the rest.
    incremental: Option<Incremental>,
    chunks: Vec<Chunk>,
    /// The tail's live messages.
    tail: Vec<ChatMessage>,
    /// A store-backed log's messages before the chunks: read from the store when written.
    stored: Option<StoredPart>,
    last_position: u64,
    retain_messages: u64,
    accounts: BTreeMap<String, String>,
    room_meta: BTreeMap<String, RoomMeta>,
    members: super::members::MemberTable,
}

/// Why a snapshot body could not be restored: one human line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreError(pub String);

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad chat snapshot: {}", self.0)
    }
}

impl std::error::Error for RestoreError {}

impl From<RestoreError> for String {
    fn from(e: RestoreError) -> String {
        e.to_string()
    }
}

impl StateMachine {
    /// Captures the state at `applied_index()`: shares the chat log's chunks, copies the tail
    /// (< `CHUNK_LEN` messages), the key-value map, the room names and the session table.
    /// A store-backed machine whose store works is captured for a version-5 body (see
    /// [`StateMachine::capture_with`]).
    pub fn capture(&self) -> ChatSnapshot {
        self.capture_with(true)
    }

    /// [`StateMachine::capture`]; with `incremental`, a store-backed machine whose store works
    /// is captured for a version-5 body: no messages but those the store lacks (none when it
    /// keeps up), the store's segments and each room's count.
    pub(crate) fn capture_with(&self, incremental: bool) -> ChatSnapshot {
        let incremental = if incremental {
            self.chat_log.capture_incremental()
        } else {
            None
        };
        let (chunks, tail, stored) = match incremental {
            Some(_) => (Vec::new(), Vec::new(), None),
            None => self.chat_log.capture(),
        };
        ChatSnapshot {
            applied_index: self.applied_index,
            sessions: self.sessions.clone(),
            kv: self.kv.clone(),
            revision: self.revision,
            rooms: self.rooms.keys().cloned().collect(),
            room_totals: self.rooms.values().map(RoomPositions::count).collect(),
            incremental,
            chunks,
            tail,
            stored,
            last_position: self.chat_log.last_position(),
            retain_messages: self.retain_messages,
            accounts: self.accounts.clone(),
            room_meta: self.room_meta.clone(),
            members: self.members.clone(),
        }
    }

    /// Rebuilds a state machine from a body [`ChatSnapshot::write_to`] wrote. `config` must be
    /// the cluster's session configuration (it is not in the snapshot), `retain_messages` the
    /// node's retention (a snapshot taken with another is refused). Checks everything; see the
    /// module docs.
    pub fn restore(
        r: &mut impl Read,
        config: SessionConfig,
        retain_messages: u64,
    ) -> Result<StateMachine, RestoreError> {
        restore(r, config, retain_messages, None)
    }

    /// As [`StateMachine::restore`], into a machine backed by the message store `store`
    /// (`with_store`): the messages go to the store as they are read (those it already has are
    /// skipped), and only the newest `keep_chunks` chunks stay in memory.
    pub fn restore_with_store(
        r: &mut impl Read,
        config: SessionConfig,
        retain_messages: u64,
        store: Arc<Mutex<History>>,
        keep_chunks: usize,
    ) -> Result<StateMachine, RestoreError> {
        restore(r, config, retain_messages, Some((store, keep_chunks)))
    }
}

impl ChatSnapshot {
    /// The index of the last entry the captured state includes.
    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    /// How many chat messages the snapshot holds (retained ones only), in its body or, for
    /// version 5, in the message store.
    pub fn message_count(&self) -> u64 {
        if let Some(inc) = &self.incremental {
            return inc.through + inc.after.len() as u64;
        }
        let stored = match &self.stored {
            Some(Ok((_, through))) => *through,
            _ => 0,
        };
        stored + (self.chunks.iter().map(Chunk::live).sum::<usize>() + self.tail.len()) as u64
    }

    /// The highest message position assigned at the snapshot.
    pub fn last_position(&self) -> u64 {
        self.last_position
    }

    /// The body's version: 5 for an incremental capture, else 4.
    pub fn version(&self) -> u32 {
        match self.incremental {
            Some(_) => SNAPSHOT_FORMAT_VERSION_STORED,
            None => SNAPSHOT_FORMAT_VERSION,
        }
    }

    /// Version 5: positions `1..=stored_through` are in the message store (0 before).
    pub fn stored_through(&self) -> u64 {
        self.incremental.as_ref().map_or(0, |inc| inc.through)
    }

    /// Version 5: makes the message store durable up to `stored_through` (writes its buffer
    /// under the lock, fsyncs without it, checks it holds that position). The snapshot file must not get its name before: from
    /// then on the Raft log may forget the entries that carried those messages. Nothing to do
    /// for other versions.
    pub fn sync_store(&self) -> io::Result<()> {
        let Some(inc) = &self.incremental else {
            return Ok(());
        };
        let poisoned = || io::Error::other("the message store's lock is poisoned");
        // The lock only to write what is buffered: the fsync runs without it, so the event
        // loop, which appends under the same lock, is not held up by this thread's disk.
        let ticket = inc
            .store
            .lock()
            .map_err(|_| poisoned())?
            .begin_sync()
            .map_err(|e| io::Error::other(format!("syncing the message store: {e}")))?;
        let last = ticket.through();
        if let Err(e) = ticket.wait() {
            inc.store.lock().map_err(|_| poisoned())?.mark_failed(&e);
            return Err(io::Error::other(format!("syncing the message store: {e}")));
        }
        if last < inc.through {
            return Err(io::Error::other(format!(
                "the message store ends at position {last}, before the snapshot's {}",
                inc.through
            )));
        }
        Ok(())
    }

    /// Streams the encoding (module docs) into `w`, in batches of about 64 KiB: one section
    /// after another, each written by the `write_*` function paired with its `read_*`.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut out = Vec::with_capacity(WRITE_BATCH_BYTES + (16 << 10));
        out.extend_from_slice(MAGIC);
        put_u32_le(&mut out, self.version());
        put_u64_le(&mut out, self.applied_index);
        put_u64_le(&mut out, self.sessions.clock_ms());
        if let Some(inc) = &self.incremental {
            put_u64_le(&mut out, inc.through);
        }
        self.write_sessions(&mut out, w)?;
        self.write_kv(&mut out, w)?;
        let room_ids = self.write_rooms(&mut out)?;
        self.write_messages(&mut out, w, &room_ids)?;
        self.write_accounts(&mut out, w)?;
        self.write_room_meta(&mut out, w)?;
        write_str(&mut out, &self.members.encode_text())?;
        if let Some(inc) = &self.incremental {
            self.write_manifest(&mut out, inc);
        }
        out.extend_from_slice(END_MAGIC);
        w.write_all(&out)
    }

    /// Version 5: `segment_count u64 (seq u64 | base u64)* | room_count u64 total u64*`; see
    /// [`read_manifest`].
    fn write_manifest(&self, out: &mut Vec<u8>, inc: &Incremental) {
        put_u64_le(out, inc.segments.len() as u64);
        for &(seq, base) in &inc.segments {
            put_u64_le(out, seq);
            put_u64_le(out, base);
        }
        put_u64_le(out, self.room_totals.len() as u64);
        for &total in &self.room_totals {
            put_u64_le(out, total);
        }
    }

    /// `session_count u64 session*`; see [`read_sessions`].
    fn write_sessions(&self, out: &mut Vec<u8>, w: &mut impl Write) -> io::Result<()> {
        put_u64_le(out, self.sessions.len() as u64);
        for (id, session) in self.sessions.iter() {
            put_u64_le(out, id);
            put_u64_le(out, session.last_active_ms());
            put_u64_le(out, session.lowest_retained_seq());
            put_u64_le(out, session.retained_count() as u64);
            for (seq, outcome) in session.retained() {
                put_u64_le(out, seq);
                write_outcome(out, outcome)?;
            }
            flush_batch(out, w)?;
        }
        Ok(())
    }

    /// `account_count u64 (nick string | hash string)*`; see [`read_accounts`].
    fn write_accounts(&self, out: &mut Vec<u8>, w: &mut impl Write) -> io::Result<()> {
        put_u64_le(out, self.accounts.len() as u64);
        for (nick, hash) in &self.accounts {
            write_str(out, nick)?;
            write_str(out, hash)?;
            flush_batch(out, w)?;
        }
        Ok(())
    }

    /// `meta_count u64 room_meta*`; see [`read_room_meta`].
    fn write_room_meta(&self, out: &mut Vec<u8>, w: &mut impl Write) -> io::Result<()> {
        put_u64_le(out, self.room_meta.len() as u64);
        for (room, meta) in &self.room_meta {
            write_str(out, room)?;
            out.push(meta.private as u8);
            write_str(out, &meta.topic)?;
            for nicks in [&meta.ops, &meta.invited] {
                put_u64_le(out, nicks.len() as u64);
                for nick in nicks {
                    write_str(out, nick)?;
                }
            }
            flush_batch(out, w)?;
        }
        Ok(())
    }

    /// `revision u64 | key_count u64 kv*`; see [`read_kv`].
    fn write_kv(&self, out: &mut Vec<u8>, w: &mut impl Write) -> io::Result<()> {
        put_u64_le(out, self.revision);
        put_u64_le(out, self.kv.len() as u64);
        for (key, value) in &self.kv {
            write_str(out, key)?;
            write_str(out, &value.value)?;
            put_u64_le(out, value.revision);
            flush_batch(out, w)?;
        }
        Ok(())
    }

    /// `room_count u64 room*`; returns each room's number, which messages name it by. See
    /// [`read_rooms`].
    fn write_rooms(&self, out: &mut Vec<u8>) -> io::Result<BTreeMap<&str, u32>> {
        put_u64_le(out, self.rooms.len() as u64);
        for room in &self.rooms {
            write_str(out, room)?;
        }
        Ok(self
            .rooms
            .iter()
            .enumerate()
            .map(|(id, room)| (room.as_str(), id as u32))
            .collect())
    }

    /// `retain_messages u64 | last_position u64 | message_count u64 message*`; see
    /// [`read_messages`].
    fn write_messages(
        &self,
        out: &mut Vec<u8>,
        w: &mut impl Write,
        room_ids: &BTreeMap<&str, u32>,
    ) -> io::Result<()> {
        put_u64_le(out, self.retain_messages);
        put_u64_le(out, self.last_position);
        if let Some(inc) = &self.incremental {
            put_u64_le(out, inc.after.len() as u64);
            for message in &inc.after {
                Self::write_message(out, w, room_ids, message)?;
            }
            return Ok(());
        }
        put_u64_le(out, self.message_count());
        if let Some(stored) = &self.stored {
            let (reader, through) = stored.as_ref().map_err(|why| {
                io::Error::other(format!("the message store gave no reader: {why}"))
            })?;
            // Positions 1..=through (no retention: no holes), a page at a time.
            let mut at = 1;
            while at <= *through {
                let left = usize::try_from(*through - at + 1).unwrap_or(usize::MAX);
                let page = reader
                    .read_range(at, left.min(STORED_PAGE_MESSAGES))
                    .map_err(|e| io::Error::other(format!("reading the message store: {e}")))?;
                if page.first().map(|m| m.position) != Some(at) {
                    return Err(io::Error::other(format!(
                        "the message store does not hold position {at}"
                    )));
                }
                for message in &page {
                    Self::write_message(out, w, room_ids, message)?;
                }
                at += page.len() as u64;
            }
        }
        let messages = self
            .chunks
            .iter()
            .flat_map(|c| c.live_messages())
            .chain(&self.tail);
        for message in messages {
            Self::write_message(out, w, room_ids, message)?;
        }
        Ok(())
    }

    /// One `message`; see [`read_message`].
    fn write_message(
        out: &mut Vec<u8>,
        w: &mut impl Write,
        room_ids: &BTreeMap<&str, u32>,
        message: &ChatMessage,
    ) -> io::Result<()> {
        {
            let room = room_ids
                .get(message.room.as_str())
                .copied()
                .ok_or_else(|| {
                    io::Error::other(format!("message {} in unknown room", message.position))
                })?;
            put_u64_le(out, message.position);
            put_u64_le(out, message.index);
            put_u32_le(out, room);
            write_str(out, &message.nick)?;
            write_str(out, &message.text)?;
            put_u64_le(out, message.timestamp_ms);
            flush_batch(out, w)?;
        }
        Ok(())
    }
}

fn flush_batch(out: &mut Vec<u8>, w: &mut impl Write) -> io::Result<()> {
    if out.len() >= WRITE_BATCH_BYTES {
        w.write_all(out)?;
        out.clear();
    }
    Ok(())
}

fn write_str(out: &mut Vec<u8>, s: &str) -> io::Result<()> {
    if s.len() > STRING_BYTES_MAX as usize {
        return Err(io::Error::other(format!("string of {} bytes", s.len())));
    }
    put_bytes32_le(out, s.as_bytes());
    Ok(())
}

fn write_outcome(out: &mut Vec<u8>, outcome: &Outcome) -> io::Result<()> {
    match outcome {
        Outcome::Posted { position } => {
            out.push(1);
            put_u64_le(out, *position);
        }
        Outcome::RoomCreated { existed } => {
            out.push(2);
            out.push(*existed as u8);
        }
        Outcome::KvAck { revision } => {
            out.push(3);
            put_u64_le(out, *revision);
        }
        Outcome::CasFailed { current } => {
            out.push(4);
            match current {
                None => out.push(0),
                Some(value) => {
                    out.push(1);
                    write_str(out, value)?;
                }
            }
        }
        Outcome::NotFound => out.push(5),
        Outcome::Rejected(reason) => {
            out.push(6);
            write_str(out, reason)?;
        }
        Outcome::SessionOpened { session_id } => {
            out.push(7);
            put_u64_le(out, *session_id);
        }
        Outcome::SessionExpired => out.push(8),
        Outcome::AccountSaved => out.push(9),
        Outcome::RoomUpdated => out.push(10),
        Outcome::Kicked { room, nick } => {
            out.push(11);
            write_str(out, room)?;
            write_str(out, nick)?;
        }
    }
    Ok(())
}

/// A reader that names what it was reading when the input ended.
struct Input<R> {
    r: R,
}

impl<R: Read> Input<R> {
    fn fail(field: &str, e: io::Error) -> RestoreError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            RestoreError(format!("truncated in {field}"))
        } else {
            RestoreError(format!("reading {field}: {e}"))
        }
    }

    fn u8(&mut self, field: &str) -> Result<u8, RestoreError> {
        self.r.read_u8().map_err(|e| Self::fail(field, e))
    }

    fn u32(&mut self, field: &str) -> Result<u32, RestoreError> {
        self.r.read_u32::<LE>().map_err(|e| Self::fail(field, e))
    }

    fn u64(&mut self, field: &str) -> Result<u64, RestoreError> {
        self.r.read_u64::<LE>().map_err(|e| Self::fail(field, e))
    }

    fn magic(&mut self, expected: &[u8; 8], field: &str) -> Result<(), RestoreError> {
        let mut found = [0u8; 8];
        self.r
            .read_exact(&mut found)
            .map_err(|e| Self::fail(field, e))?;
        if &found != expected {
            return Err(RestoreError(format!("bad {field} {found:?}")));
        }
        Ok(())
    }

    fn string(&mut self, field: &str) -> Result<String, RestoreError> {
        let len = self.u32(field)?;
        if len > STRING_BYTES_MAX {
            return Err(RestoreError(format!("{field} of {len} bytes")));
        }
        // At most 1 MiB even when the length is garbage; a short input fails `read_exact`.
        let mut bytes = vec![0u8; len as usize];
        self.r
            .read_exact(&mut bytes)
            .map_err(|e| Self::fail(field, e))?;
        String::from_utf8(bytes).map_err(|_| RestoreError(format!("{field} is not UTF-8")))
    }

    /// A count of elements, each at least `min_bytes` long, capped at `max`.
    fn count(&mut self, field: &str, max: u64) -> Result<u64, RestoreError> {
        let count = self.u64(field)?;
        if count > max {
            return Err(RestoreError(format!("{field} {count} exceeds {max}")));
        }
        Ok(count)
    }

    fn outcome(&mut self) -> Result<Outcome, RestoreError> {
        Ok(match self.u8("outcome tag")? {
            1 => Outcome::Posted {
                position: self.u64("posted position")?,
            },
            2 => Outcome::RoomCreated {
                existed: self.flag("room existed flag")?,
            },
            3 => Outcome::KvAck {
                revision: self.u64("kv ack revision")?,
            },
            4 => Outcome::CasFailed {
                current: match self.flag("cas current flag")? {
                    false => None,
                    true => Some(self.string("cas current value")?),
                },
            },
            5 => Outcome::NotFound,
            6 => Outcome::Rejected(self.string("rejection reason")?),
            7 => Outcome::SessionOpened {
                session_id: self.u64("opened session id")?,
            },
            8 => Outcome::SessionExpired,
            9 => Outcome::AccountSaved,
            10 => Outcome::RoomUpdated,
            11 => Outcome::Kicked {
                room: self.string("kicked room")?,
                nick: self.string("kicked nick")?,
            },
            tag => return Err(RestoreError(format!("unknown outcome tag {tag}"))),
        })
    }

    fn flag(&mut self, field: &str) -> Result<bool, RestoreError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(RestoreError(format!("{field} is {other}, not 0 or 1"))),
        }
    }
}

/// See [`StateMachine::restore`]. Reads the sections in order, each with the `read_*` function
/// paired with the `write_*` that wrote it.
pub fn restore(
    r: &mut impl Read,
    config: SessionConfig,
    retain_messages: u64,
    store: Option<(Arc<Mutex<History>>, usize)>,
) -> Result<StateMachine, RestoreError> {
    let mut input = Input {
        r: io::BufReader::with_capacity(64 << 10, r),
    };
    input.magic(MAGIC, "magic")?;
    let version = input.u32("version")?;
    if !(SNAPSHOT_FORMAT_VERSION_NO_ACCOUNTS..=SNAPSHOT_FORMAT_VERSION_STORED).contains(&version) {
        return bad(format!("unknown snapshot format version {version}"));
    }
    let applied_index = input.u64("applied index")?;
    let clock_ms = input.u64("log time")?;
    let store = store.filter(|_| retain_messages == 0);
    // Version 5: the store must already hold what the body leaves out (checked first, in
    // constant time, so a node learns at once that it lacks it).
    let (chat_log, stored_through, stored_last) = if version >= SNAPSHOT_FORMAT_VERSION_STORED {
        let stored_through = input.u64("stored through")?;
        let Some((store, keep_chunks)) = store else {
            return bad(format!(
                "the snapshot's messages 1..={stored_through} are in a message store, and \
                 this node keeps none (--retain-messages, or no store)"
            ));
        };
        if stored_through > applied_index {
            return bad(format!(
                "stored through position {stored_through} but applied index {applied_index}"
            ));
        }
        let last = newest_stored(&store, stored_through, applied_index, clock_ms)?;
        let chat_log = ChatLog::resumed(store, keep_chunks, stored_through);
        (chat_log, stored_through, last)
    } else {
        let chat_log = match store {
            Some((store, keep_chunks)) => ChatLog::with_store(store, keep_chunks),
            None => ChatLog::default(),
        };
        (chat_log, 0, None)
    };
    let sessions = read_sessions(&mut input, config, applied_index, clock_ms)?;
    let (revision, kv) = read_kv(&mut input)?;
    let room_names = read_rooms(&mut input)?;
    let bounds = MessageBounds {
        applied_index,
        clock_ms,
        retain_messages,
        last_position: 0,
        stored_through,
    };
    let (chat_log, positions) =
        read_messages(&mut input, &room_names, bounds, chat_log, stored_last)?;
    let (accounts, room_meta) = if version == SNAPSHOT_FORMAT_VERSION_NO_ACCOUNTS {
        (BTreeMap::new(), BTreeMap::new())
    } else {
        let accounts = read_accounts(&mut input)?;
        (accounts, read_room_meta(&mut input, &room_names)?)
    };
    let members = if version >= SNAPSHOT_FORMAT_VERSION {
        let text = input.string("members")?;
        super::members::MemberTable::decode_text(&text).map_err(RestoreError)?
    } else {
        Default::default()
    };
    let mut rooms: Vec<RoomPositions> = positions
        .into_iter()
        .map(|held| RoomPositions { held, stored: 0 })
        .collect();
    if version >= SNAPSHOT_FORMAT_VERSION_STORED {
        read_manifest(&mut input, stored_through, &mut rooms)?;
    }
    read_end(&mut input)?;
    // Positions the chat log no longer holds in memory are only counted (see `state`).
    let evicted_through = chat_log.evicted_through();
    let rooms = room_names
        .into_iter()
        .zip(rooms)
        .map(|(name, mut room)| {
            room.evict_through(evicted_through);
            (name, room)
        })
        .collect();
    let mut sm = StateMachine::from_parts(
        applied_index,
        chat_log,
        rooms,
        kv,
        revision,
        sessions,
        retain_messages,
    );
    sm.accounts = accounts;
    sm.room_meta = room_meta;
    sm.members = members;
    Ok(sm)
}

/// Room owners and settings, in ascending room order, each for a room in the room list.
fn read_room_meta<R: Read>(
    input: &mut Input<R>,
    room_names: &[String],
) -> Result<BTreeMap<String, RoomMeta>, RestoreError> {
    let count = input.count("room owner count", room_names.len() as u64)?;
    let mut metas: BTreeMap<String, RoomMeta> = BTreeMap::new();
    for _ in 0..count {
        let room = input.string("owned room")?;
        if room_names.binary_search(&room).is_err() {
            return bad(format!("owners for unknown room {room:?}"));
        }
        if metas
            .last_key_value()
            .is_some_and(|(previous, _)| room <= *previous)
        {
            return bad(format!("room owners {room:?} out of order"));
        }
        let private = input.flag("room private flag")?;
        let topic = input.string("room topic")?;
        if !topic.is_empty() {
            validate_text(&topic).map_err(RestoreError)?;
        }
        let mut lists = [BTreeSet::new(), BTreeSet::new()];
        for nicks in &mut lists {
            let n = input.count("room nick count", u64::MAX)?;
            for _ in 0..n {
                let nick = input.string("room nick")?;
                validate_nick(&nick).map_err(RestoreError)?;
                if nicks.last().is_some_and(|previous| nick <= *previous) {
                    return bad(format!("room nick {nick:?} out of order"));
                }
                nicks.insert(nick);
            }
        }
        let [ops, invited] = lists;
        let meta = RoomMeta {
            ops,
            topic,
            private,
            invited,
        };
        metas.insert(room, meta);
    }
    Ok(metas)
}

/// The accounts, in ascending nick order; each nick and hash passes apply's validation.
fn read_accounts<R: Read>(input: &mut Input<R>) -> Result<BTreeMap<String, String>, RestoreError> {
    let count = input.count("account count", u64::MAX)?;
    let mut accounts: BTreeMap<String, String> = BTreeMap::new();
    for _ in 0..count {
        let nick = input.string("account nick")?;
        validate_nick(&nick).map_err(RestoreError)?;
        if accounts
            .last_key_value()
            .is_some_and(|(previous, _)| nick <= *previous)
        {
            return bad(format!("account {nick:?} out of order"));
        }
        let hash = input.string("account hash")?;
        validate_password_hash(&hash).map_err(RestoreError)?;
        accounts.insert(nick, hash);
    }
    Ok(accounts)
}

fn bad<T>(reason: String) -> Result<T, RestoreError> {
    Err(RestoreError(reason))
}

/// The session table; `Sessions::restore` checks the table's own rules.
fn read_sessions<R: Read>(
    input: &mut Input<R>,
    config: SessionConfig,
    applied_index: Index,
    clock_ms: u64,
) -> Result<Sessions, RestoreError> {
    let session_count = input.count("session count", u64::MAX)?;
    if session_count > config.sessions_max.max(1) as u64 {
        return bad(format!(
            "{session_count} sessions, more than the configured {}",
            config.sessions_max
        ));
    }
    let mut sessions = Vec::with_capacity(session_count.min(PREALLOCATE_MAX) as usize);
    let mut previous_id = None;
    for _ in 0..session_count {
        let id = input.u64("session id")?;
        if previous_id.is_some_and(|previous| id <= previous) {
            return bad(format!("session {id} out of order"));
        }
        if id == 0 || id > applied_index {
            return bad(format!(
                "session {id} not opened by an applied entry (applied index {applied_index})"
            ));
        }
        previous_id = Some(id);
        sessions.push((id, read_session(input, &config, id)?));
    }
    let sessions = Sessions::restore(config, clock_ms, sessions).map_err(RestoreError)?;
    if sessions.len() as u64 != session_count {
        return bad("a session is already expired at the snapshot's log time".to_string());
    }
    Ok(sessions)
}

/// One session after its id: activity, lowest retained seq and the retained outcomes.
fn read_session<R: Read>(
    input: &mut Input<R>,
    config: &SessionConfig,
    id: u64,
) -> Result<Session, RestoreError> {
    let last_active_ms = input.u64("session activity")?;
    let lowest_retained_seq = input.u64("session lowest retained seq")?;
    let retained_count = input.count(
        "retained outcome count",
        config.retained_per_session_max.max(1) as u64,
    )?;
    let mut retained = BTreeMap::new();
    let mut previous_seq = None;
    for _ in 0..retained_count {
        let seq = input.u64("retained seq")?;
        if seq == 0 || previous_seq.is_some_and(|previous| seq <= previous) {
            return bad(format!("session {id} retains seq {seq} out of order"));
        }
        previous_seq = Some(seq);
        retained.insert(seq, input.outcome()?);
    }
    Ok(Session::restored(
        last_active_ms,
        lowest_retained_seq,
        retained,
    ))
}

/// The key-value store: its revision and its keys, each valid, in order, with a distinct
/// revision in `1..=revision`.
fn read_kv<R: Read>(
    input: &mut Input<R>,
) -> Result<(u64, BTreeMap<String, KvValue>), RestoreError> {
    let revision = input.u64("store revision")?;
    let key_count = input.count("key count", u64::MAX)?;
    let mut kv: BTreeMap<String, KvValue> = BTreeMap::new();
    let mut revisions = std::collections::BTreeSet::new();
    for _ in 0..key_count {
        let key = input.string("key")?;
        validate_key(&key).map_err(RestoreError)?;
        if kv
            .last_key_value()
            .is_some_and(|(previous, _)| key <= *previous)
        {
            return bad(format!("key {key:?} out of order"));
        }
        let value = input.string("value")?;
        validate_value(&value).map_err(RestoreError)?;
        let key_revision = input.u64("key revision")?;
        if key_revision == 0 || key_revision > revision {
            return bad(format!(
                "key {key:?} has revision {key_revision}, outside 1..={revision}"
            ));
        }
        // Every write bumps the revision, so no two live keys share one.
        if !revisions.insert(key_revision) {
            return bad(format!("key {key:?} shares revision {key_revision}"));
        }
        kv.insert(
            key,
            KvValue {
                value,
                revision: key_revision,
            },
        );
    }
    if kv.len() as u64 > revision {
        return bad(format!("{} keys but store revision {revision}", kv.len()));
    }
    Ok((revision, kv))
}

/// The room names, valid, in order, including the default room.
fn read_rooms<R: Read>(input: &mut Input<R>) -> Result<Vec<String>, RestoreError> {
    let room_count = input.count("room count", u64::from(u32::MAX))?;
    let mut room_names: Vec<String> = Vec::with_capacity(room_count.min(PREALLOCATE_MAX) as usize);
    for _ in 0..room_count {
        let room = input.string("room name")?;
        validate_room(&room).map_err(RestoreError)?;
        if room_names.last().is_some_and(|previous| room <= *previous) {
            return bad(format!("room {room:?} out of order"));
        }
        room_names.push(room);
    }
    if room_names
        .binary_search_by(|r| r.as_str().cmp(super::DEFAULT_ROOM))
        .is_err()
    {
        return bad(format!("no room {}", super::DEFAULT_ROOM));
    }
    Ok(room_names)
}

/// What every message must respect, from the sections before it.
#[derive(Clone, Copy)]
struct MessageBounds {
    applied_index: Index,
    clock_ms: u64,
    retain_messages: u64,
    last_position: u64,
    /// Version 5: the body's messages start after this position (0 before version 5).
    stored_through: u64,
}

/// Version 5: checks that `store` holds positions `1..=stored_through` and returns the
/// newest of them (which the body's first message must follow), checked against the header.
fn newest_stored(
    store: &Arc<Mutex<History>>,
    stored_through: u64,
    applied_index: Index,
    clock_ms: u64,
) -> Result<Option<PreviousMessage>, RestoreError> {
    if stored_through == 0 {
        return Ok(None);
    }
    let mut store = store
        .lock()
        .map_err(|_| RestoreError("the message store's lock is poisoned".into()))?;
    // A store without a cache reads only what it wrote.
    store
        .flush()
        .map_err(|e| RestoreError(format!("writing the message store: {e}")))?;
    let (first, last) = (store.first_position(), store.last_position());
    if last < stored_through {
        return bad(format!(
            "the message store ends at position {last} but the snapshot needs 1..={stored_through}"
        ));
    }
    if first > 1 {
        return bad(format!(
            "the message store starts at position {first} but the snapshot needs 1..={stored_through}"
        ));
    }
    let message = store
        .get(stored_through)
        .map_err(|e| RestoreError(format!("reading the message store: {e}")))?
        .ok_or_else(|| {
            RestoreError(format!(
                "the message store does not hold position {stored_through}"
            ))
        })?;
    if message.index == 0 || message.index > applied_index || message.timestamp_ms > clock_ms {
        return bad(format!(
            "the message store's position {stored_through} (index {}) is not covered by the \
             snapshot (applied index {applied_index})",
            message.index
        ));
    }
    Ok(Some(PreviousMessage {
        position: message.position,
        index: message.index,
        timestamp_ms: message.timestamp_ms,
    }))
}

/// Version 5's manifest: the store's segments `(seq, base)` up to `stored_through` (strictly
/// increasing, the first at position 1; for information: nodes may cut their segments at
/// other positions, so restore checks the store by its positions), then every room's total
/// count, which sets its `stored` count (the total less its messages in the body; they add up
/// to `stored_through`).
fn read_manifest<R: Read>(
    input: &mut Input<R>,
    stored_through: u64,
    rooms: &mut [RoomPositions],
) -> Result<(), RestoreError> {
    let segment_count = input.count("segment count", stored_through)?;
    if (segment_count == 0) != (stored_through == 0) {
        return bad(format!(
            "{segment_count} segments for stored positions 1..={stored_through}"
        ));
    }
    let mut previous: Option<(u64, u64)> = None;
    for k in 0..segment_count {
        let seq = input.u64("segment seq")?;
        let base = input.u64("segment base")?;
        let in_order = match previous {
            None => base == 1,
            Some((s, b)) => seq > s && base > b,
        };
        if !in_order || base > stored_through {
            return bad(format!(
                "manifest segment {k} (seq {seq}, base {base}) out of order"
            ));
        }
        previous = Some((seq, base));
    }
    let room_count = input.count("room total count", u64::from(u32::MAX))?;
    if room_count != rooms.len() as u64 {
        return bad(format!(
            "{room_count} room totals for {} rooms",
            rooms.len()
        ));
    }
    let mut stored = 0u64;
    for room in rooms.iter_mut() {
        let total = input.u64("room total")?;
        let held = room.held.len() as u64;
        if total < held || total - held > stored_through {
            return bad(format!(
                "a room totals {total} messages, {held} of them in the body"
            ));
        }
        room.stored = total - held;
        stored += room.stored;
    }
    if stored != stored_through {
        return bad(format!(
            "the rooms count {stored} stored messages, the snapshot {stored_through}"
        ));
    }
    Ok(())
}

/// The messages, which also rebuild the rooms' position lists (one list per room name).
fn read_messages<R: Read>(
    input: &mut Input<R>,
    room_names: &[String],
    mut bounds: MessageBounds,
    mut chat_log: ChatLog,
    mut previous: Option<PreviousMessage>,
) -> Result<(ChatLog, Vec<VecDeque<u64>>), RestoreError> {
    let stored_through = bounds.stored_through;
    let (retain_messages, applied_index) = (bounds.retain_messages, bounds.applied_index);
    let snapshot_retain = input.u64("retained messages per room")?;
    if snapshot_retain != retain_messages {
        return bad(format!(
            "taken with --retain-messages {snapshot_retain}, but this node has \
             --retain-messages {retain_messages} (every node must use the same value, always)"
        ));
    }
    // Every position was assigned by an applied entry.
    let last_position = input.u64("last position")?;
    if last_position > applied_index {
        return bad(format!(
            "last position {last_position} but applied index {applied_index}"
        ));
    }
    if last_position < stored_through {
        return bad(format!(
            "last position {last_position} before the stored {stored_through}"
        ));
    }
    bounds.last_position = last_position;
    let message_count = input.count("message count", last_position - stored_through)?;
    if retain_messages == 0 && message_count != last_position - stored_through {
        return bad(format!(
            "{message_count} messages up to position {last_position} without retention"
        ));
    }
    let mut positions: Vec<VecDeque<u64>> = vec![VecDeque::new(); room_names.len()];
    for k in 0..message_count {
        let (message, room) = read_message(input, k, room_names, bounds, &mut previous)?;
        positions[room].push_back(message.position);
        if retain_messages > 0 && positions[room].len() as u64 > retain_messages {
            return bad(format!(
                "room {} holds more than {retain_messages} messages",
                message.room
            ));
        }
        chat_log.push(message);
    }
    // The newest message is never dropped (retention drops a room's oldest, after a post).
    let previous_position = previous.map_or(0, |p: PreviousMessage| p.position);
    if last_position > 0 && previous_position != last_position {
        return bad(format!(
            "the newest message {last_position} is missing (last held {previous_position})"
        ));
    }
    chat_log.set_last_position(last_position);
    Ok((chat_log, positions))
}

/// The message read before the current one, which the current one must follow.
#[derive(Clone, Copy)]
struct PreviousMessage {
    position: u64,
    index: Index,
    timestamp_ms: u64,
}

/// Message number `k` (0-based), checked against the bounds and the message before it;
/// returns it with its room's number.
fn read_message<R: Read>(
    input: &mut Input<R>,
    k: u64,
    room_names: &[String],
    bounds: MessageBounds,
    previous: &mut Option<PreviousMessage>,
) -> Result<(ChatMessage, usize), RestoreError> {
    let MessageBounds {
        applied_index,
        clock_ms,
        retain_messages,
        last_position,
        stored_through,
    } = bounds;
    let previous_position = previous.map_or(0, |p| p.position);
    let position = input.u64("message position")?;
    if retain_messages == 0 && position != stored_through + k + 1 {
        return bad(format!(
            "message {} has position {position}",
            stored_through + k + 1
        ));
    }
    if position <= previous_position || position > last_position {
        return bad(format!(
            "message position {position} after {previous_position} (last {last_position})"
        ));
    }
    let index = input.u64("message index")?;
    let room = input.u32("message room")? as usize;
    let nick = input.string("message nick")?;
    let text = input.string("message text")?;
    let timestamp_ms = input.u64("message time")?;
    let Some(room_name) = room_names.get(room) else {
        return bad(format!(
            "message {position} names room #{room} of {}",
            room_names.len()
        ));
    };
    if index == 0 || index > applied_index {
        return bad(format!(
            "message {position} at index {index}, beyond the applied index {applied_index}"
        ));
    }
    if let Some(before) = previous {
        if index <= before.index {
            return bad(format!(
                "message {position} index {index} does not increase"
            ));
        }
        if timestamp_ms < before.timestamp_ms {
            return bad(format!("message {position} time runs backwards"));
        }
    }
    if timestamp_ms > clock_ms {
        return bad(format!("message {position} is later than the log time"));
    }
    validate_nick(&nick).map_err(RestoreError)?;
    validate_text(&text).map_err(RestoreError)?;
    *previous = Some(PreviousMessage {
        position,
        index,
        timestamp_ms,
    });
    let message = ChatMessage {
        position,
        index,
        room: room_name.clone(),
        nick,
        text,
        timestamp_ms,
    };
    Ok((message, room))
}

/// The end magic, and nothing after it.
fn read_end<R: Read>(input: &mut Input<R>) -> Result<(), RestoreError> {
    input.magic(END_MAGIC, "end magic")?;
    let mut rest = [0u8; 1];
    match input.r.read(&mut rest) {
        Ok(0) => Ok(()),
        Ok(_) => bad("bytes after the end".to_string()),
        Err(e) => Err(Input::<&[u8]>::fail("end", e)),
    }
}

#[cfg(test)]
#[path = "snapshot_v5_tests.rs"]
mod v5_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::command::{Command, Op, Origin, SessionRef};
    use crate::chat::state::tests::session_workload;
    use crate::chat::state::CHUNK_LEN;
    use crate::chat::{Applied, DEFAULT_ROOM};
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    const T0_MS: u64 = 1_700_000_000_000;

    fn encode(sm: &StateMachine) -> Vec<u8> {
        let mut out = Vec::new();
        sm.capture().write_to(&mut out).unwrap();
        out
    }

    fn restored(bytes: &[u8], config: SessionConfig) -> StateMachine {
        StateMachine::restore(&mut &bytes[..], config, 0).unwrap()
    }

    fn command(index: Index, session: Option<SessionRef>, op: Op) -> Vec<u8> {
        let mut data = Vec::new();
        Command {
            origin: Origin {
                node: 1,
                req: index,
            },
            timestamp_ms: T0_MS + index,
            session,
            op,
        }
        .encode(&mut data);
        data
    }

    fn apply_entry(
        sm: &mut StateMachine,
        index: Index,
        entry: &Option<Vec<u8>>,
    ) -> Option<Applied> {
        match entry {
            Some(data) => Some(sm.apply(index, data)),
            None => {
                sm.apply_noop(index);
                None
            }
        }
    }

    /// A machine with rooms (one empty), keys (one deleted), more than two chunks of messages
    /// and a session retaining outcomes.
    fn busy_machine(messages: u64) -> StateMachine {
        busy_machine_retaining(messages, 0)
    }

    /// [`busy_machine`] keeping `retain` messages per room (0: all).
    fn busy_machine_retaining(messages: u64, retain: u64) -> StateMachine {
        let mut sm = StateMachine::default().with_retention(retain);
        let mut index = 0;
        let mut next = |sm: &mut StateMachine, session, op| {
            index += 1;
            sm.apply(index, &command(index, session, op))
        };
        for room in ["alpha", "beta", "empty"] {
            next(&mut sm, None, Op::CreateRoom { room: room.into() });
        }
        let session = next(&mut sm, None, Op::OpenSession);
        let Outcome::SessionOpened { session_id } = session.outcome else {
            panic!("{session:?}")
        };
        for (key, value) in [("a", "1"), ("b", "2"), ("a", "3")] {
            let op = Op::Set {
                key: key.into(),
                value: value.into(),
            };
            next(&mut sm, None, op);
        }
        next(&mut sm, None, Op::Del { key: "b".into() });
        for seq in 1..=3 {
            let request = SessionRef {
                id: session_id,
                seq,
                lowest_unacked_seq: 1,
            };
            let op = Op::Cas {
                key: "a".into(),
                expected: Some("nope".into()),
                new: format!("{seq}"),
            };
            next(&mut sm, Some(request), op);
        }
        for k in 0..messages {
            let room = ["alpha", "beta", DEFAULT_ROOM][(k % 3) as usize];
            let op = Op::Post {
                room: room.into(),
                nick: format!("n{}", k % 7),
                text: format!("message {k}"),
            };
            next(&mut sm, None, op);
        }
        sm
    }

    #[test]
    fn every_outcome_round_trips() {
        let outcomes = [
            Outcome::Posted { position: 9 },
            Outcome::RoomCreated { existed: true },
            Outcome::RoomCreated { existed: false },
            Outcome::KvAck { revision: u64::MAX },
            Outcome::CasFailed { current: None },
            Outcome::CasFailed {
                current: Some("v".into()),
            },
            Outcome::NotFound,
            Outcome::Rejected("no: \u{e9}".into()),
            Outcome::SessionOpened { session_id: 3 },
            Outcome::SessionExpired,
            Outcome::AccountSaved,
            Outcome::RoomUpdated,
            Outcome::Kicked {
                room: "rust".into(),
                nick: "eve".into(),
            },
        ];
        let mut bytes = Vec::new();
        for outcome in &outcomes {
            write_outcome(&mut bytes, outcome).unwrap();
        }
        let mut input = Input { r: &bytes[..] };
        for outcome in &outcomes {
            assert_eq!(&input.outcome().unwrap(), outcome);
        }
        assert!(input.r.is_empty());
        let mut bad = Input { r: &[12u8][..] };
        assert_eq!(bad.outcome().unwrap_err().0, "unknown outcome tag 12");
    }

    const HASH_A: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
    const HASH_B: &str = "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0$b3RoZXJoYXNo";

    #[test]
    fn accounts_round_trip_and_a_version_2_body_still_loads() {
        let mut sm = StateMachine::default();
        let ops = [
            Op::Register {
                nick: "carol".into(),
                hash: HASH_A.into(),
            },
            Op::Register {
                nick: "alice".into(),
                hash: HASH_A.into(),
            },
            Op::SetPassword {
                nick: "alice".into(),
                hash: HASH_B.into(),
            },
        ];
        for (i, op) in ops.into_iter().enumerate() {
            let index = i as u64 + 1;
            let applied = sm.apply(index, &command(index, None, op));
            assert_eq!(applied.outcome, Outcome::AccountSaved);
        }
        let room_ops = [
            Op::JoinRoom {
                room: "rust".into(),
                nick: "alice".into(),
            },
            Op::RoomAdmin {
                room: "rust".into(),
                by: "alice".into(),
                action: crate::chat::RoomAction::Private,
            },
            Op::RoomAdmin {
                room: "rust".into(),
                by: "alice".into(),
                action: crate::chat::RoomAction::Invite("carol".into()),
            },
            Op::RoomAdmin {
                room: "rust".into(),
                by: "alice".into(),
                action: crate::chat::RoomAction::Topic("t o p i c".into()),
            },
        ];
        for (i, op) in room_ops.into_iter().enumerate() {
            let index = i as u64 + 4;
            let applied = sm.apply(index, &command(index, None, op));
            assert!(
                !matches!(applied.outcome, Outcome::Rejected(_)),
                "{applied:?}"
            );
        }
        let bytes = encode(&sm);
        let back = restored(&bytes, SessionConfig::default());
        assert_eq!(back, sm);
        assert_eq!(back.account_hash("alice"), Some(HASH_B));
        assert_eq!(back.account_hash("carol"), Some(HASH_A));
        assert_eq!(back.account_count(), 2);
        let meta = back.room_meta("rust").unwrap();
        assert!(meta.private && meta.invited.contains("carol") && meta.topic == "t o p i c");

        // A hash that is not an argon2 PHC string is refused on restore.
        let mut forged = bytes.clone();
        let at = forged
            .windows(HASH_B.len())
            .position(|w| w == HASH_B.as_bytes())
            .unwrap();
        forged[at + 1] = b'X';
        let err = StateMachine::restore(&mut &forged[..], SessionConfig::default(), 0);
        assert!(err.unwrap_err().0.contains("bad password hash"));

        // Version 2 (written before accounts existed): no accounts section, still restored.
        let plain = busy_machine(40);
        let mut v2 = encode(&plain);
        v2[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION_NO_ACCOUNTS.to_le_bytes());
        let end = v2.len() - END_MAGIC.len();
        assert_eq!(
            &v2[end - 20..end],
            &[0u8; 20],
            "the empty account and room owner counts, the empty members string"
        );
        v2.drain(end - 20..end);
        assert_eq!(restored(&v2, SessionConfig::default()), plain);
        // ... and a version 3 body without the section is truncated, not misread.
        let mut cut = v2.clone();
        cut[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
        assert!(StateMachine::restore(&mut &cut[..], SessionConfig::default(), 0).is_err());
    }

    #[test]
    fn the_member_table_travels_in_its_own_section() {
        use crate::chat::members::MemberChange;
        let mut sm = busy_machine(10);
        let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        sm.bootstrap_members((0..3).map(|id| (id, addr(9000 + id as u16))));
        let next = sm.applied_index() + 1;
        assert!(sm.apply_member_change(next, MemberChange::AddLearner(3), b"127.0.0.1:9003"));
        let back = restored(&encode(&sm), SessionConfig::default());
        assert_eq!(back.members(), sm.members());
        assert_eq!(back.members().learners().collect::<Vec<_>>(), vec![3]);
        // Version 3 (before members): the section is absent, the table unset.
        let plain = busy_machine(10);
        let mut v3 = encode(&plain);
        v3[8..12].copy_from_slice(&SNAPSHOT_FORMAT_VERSION_NO_MEMBERS.to_le_bytes());
        let end = v3.len() - END_MAGIC.len();
        v3.drain(end - 4..end);
        assert!(!restored(&v3, SessionConfig::default()).members().is_set());
        // A damaged members section is an error, not a panic.
        let mut bad = encode(&sm);
        let at = bad.windows(5).position(|w| w == b"voter").unwrap();
        bad[at] = b'V';
        assert!(StateMachine::restore(&mut &bad[..], SessionConfig::default(), 0).is_err());
    }

    #[test]
    fn the_header_of_a_body_is_read_from_its_first_bytes() {
        let sm = busy_machine(10);
        let bytes = encode(&sm);
        let header = peek_header(&bytes[..BODY_HEADER_BYTES]).unwrap();
        assert_eq!(header.version, SNAPSHOT_FORMAT_VERSION);
        assert_eq!(header.applied_index, sm.applied_index());
        assert_eq!(header.stored_through, 0);
        assert_eq!(peek_header(&bytes[..7]), None);
        assert_eq!(peek_header(b"RCHATSM1\x63\0\0\0"), None);
    }

    #[test]
    fn an_empty_machine_round_trips() {
        let sm = StateMachine::default();
        let bytes = encode(&sm);
        assert_eq!(restored(&bytes, SessionConfig::default()), sm);
        assert_eq!(sm.capture().applied_index(), 0);
    }

    #[test]
    fn a_busy_machine_round_trips_and_then_behaves_the_same() {
        let messages = 2 * CHUNK_LEN as u64 + 17;
        let mut sm = busy_machine(messages);
        let snapshot = sm.capture();
        assert_eq!(snapshot.message_count(), messages);
        assert_eq!(snapshot.applied_index(), sm.applied_index());
        let mut bytes = Vec::new();
        snapshot.write_to(&mut bytes).unwrap();
        let mut copy = restored(&bytes, SessionConfig::default());
        assert_eq!(copy, sm);
        assert_eq!(copy.rooms(), sm.rooms());
        assert_eq!(copy.room_history("empty", 10).len(), 0);
        assert!(copy.room_exists("empty"));
        assert_eq!(copy.get("a"), Some(("3", 3)));
        assert_eq!(copy.get("b"), None);
        assert_eq!(copy.revision(), 4);
        assert_eq!(copy.room_history("beta", 2), sm.room_history("beta", 2));
        // Reading across chunk boundaries gives the same messages.
        for from in [
            0,
            1,
            2,
            4095,
            4096,
            4097,
            8192,
            8193,
            messages,
            messages + 1,
        ] {
            let a: Vec<_> = copy.messages_from(from).collect();
            let b: Vec<_> = sm.messages_from(from).collect();
            assert_eq!(a, b, "from {from}");
            let first = from.max(1);
            assert_eq!(a.len() as u64, (messages + 1).saturating_sub(first));
            assert!(a.iter().zip(first..).all(|(m, p)| m.position == p));
        }
        // The same further entries give the same outcomes, duplicates included.
        let session_id = sm.sessions().iter().next().unwrap().0;
        let retry = SessionRef {
            id: session_id,
            seq: 2,
            lowest_unacked_seq: 2,
        };
        let op = Op::Cas {
            key: "a".into(),
            expected: Some("nope".into()),
            new: "2".into(),
        };
        let mut index = sm.applied_index();
        let mut applied = Vec::new();
        for (session, op) in [
            (Some(retry), op.clone()),
            (
                Some(SessionRef {
                    seq: 1,
                    lowest_unacked_seq: 1,
                    ..retry
                }),
                op,
            ),
            (
                None,
                Op::Post {
                    room: "empty".into(),
                    nick: "z".into(),
                    text: "first".into(),
                },
            ),
        ] {
            index += 1;
            let data = command(index, session, op);
            let a = sm.apply(index, &data);
            assert_eq!(a, copy.apply(index, &data));
            applied.push(a);
        }
        assert!(applied[0].duplicate, "{:?}", applied[0]);
        assert!(
            matches!(&applied[1].outcome, Outcome::Rejected(r) if r.starts_with("request already answered"))
        );
        assert_eq!(
            applied[2].outcome,
            Outcome::Posted {
                position: messages + 1
            }
        );
        assert_eq!(copy, sm);
    }

    #[test]
    fn a_capture_is_independent_of_later_changes() {
        let mut sm = busy_machine(CHUNK_LEN as u64 - 2);
        let before = sm.clone();
        let snapshot = sm.capture();
        let mut index = sm.applied_index();
        for k in 0..10 {
            index += 1;
            let op = Op::Post {
                room: DEFAULT_ROOM.into(),
                nick: "later".into(),
                text: format!("{k}"),
            };
            sm.apply(index, &command(index, None, op));
        }
        index += 1;
        sm.apply(
            index,
            &command(
                index,
                None,
                Op::Set {
                    key: "a".into(),
                    value: "x".into(),
                },
            ),
        );
        let handle = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            snapshot.write_to(&mut bytes).unwrap();
            bytes
        });
        let bytes = handle.join().unwrap();
        assert_eq!(restored(&bytes, SessionConfig::default()), before);
        assert_ne!(before, sm);
    }

    #[test]
    fn session_workloads_round_trip_at_any_point() {
        let mut duplicates_after_restore = 0;
        for seed in 0..10 {
            let entries = session_workload(seed, 1_500);
            let split = 300 + seed as usize * 100;
            let mut original = StateMachine::default();
            for (i, entry) in entries[..split].iter().enumerate() {
                apply_entry(&mut original, i as Index + 1, entry);
            }
            let bytes = encode(&original);
            let mut copy = restored(&bytes, SessionConfig::default());
            assert_eq!(copy, original, "seed {seed}");
            assert_eq!(
                encode(&copy),
                bytes,
                "seed {seed}: the encoding is canonical"
            );
            for (i, entry) in entries.iter().enumerate().skip(split) {
                let index = i as Index + 1;
                let a = apply_entry(&mut original, index, entry);
                let b = apply_entry(&mut copy, index, entry);
                assert_eq!(a, b, "seed {seed} index {index}");
                duplicates_after_restore += a.is_some_and(|a| a.duplicate) as u32;
            }
            assert_eq!(copy, original, "seed {seed}");
        }
        assert!(duplicates_after_restore > 50, "{duplicates_after_restore}");
    }

    #[test]
    fn a_machine_with_holes_round_trips_and_then_behaves_the_same() {
        let config = SessionConfig::default();
        for retain in [1, 7, 1000] {
            let messages = 3 * CHUNK_LEN as u64 + 5;
            let mut sm = busy_machine_retaining(messages, retain);
            let kept = sm.message_count();
            assert_eq!(kept, 3 * retain.min(messages / 3));
            let bytes = encode(&sm);
            let mut copy = StateMachine::restore(&mut &bytes[..], config, retain).unwrap();
            assert_eq!(copy, sm, "retain {retain}");
            assert_eq!(copy.last_position(), sm.last_position());
            assert_eq!(copy.message_count(), kept);
            assert_eq!(encode(&copy), bytes, "retain {retain}: canonical");
            copy.check_invariants_full().unwrap();
            // More posts drop the same messages on both.
            let mut index = sm.applied_index();
            for k in 0..2 * CHUNK_LEN as u64 {
                index += 1;
                let room = ["alpha", "beta", DEFAULT_ROOM, "empty"][(k % 4) as usize];
                let op = Op::Post {
                    room: room.into(),
                    nick: "later".into(),
                    text: format!("later {k}"),
                };
                let data = command(index, None, op);
                assert_eq!(sm.apply(index, &data), copy.apply(index, &data));
            }
            assert_eq!(copy, sm, "retain {retain}");
            copy.check_invariants_full().unwrap();
            sm.check_invariants_full().unwrap();
            assert_eq!(copy.last_position(), messages + 2 * CHUNK_LEN as u64);
            assert_eq!(copy.message_count(), 4 * retain);
        }
    }

    #[test]
    fn broken_invariants_are_refused_with_a_reason() {
        let sm = busy_machine(10);
        let bytes = encode(&sm);
        let config = SessionConfig::default();
        let err = |bytes: &[u8]| {
            StateMachine::restore(&mut &bytes[..], config, 0)
                .unwrap_err()
                .0
        };
        assert!(err(&bytes[..bytes.len() - 1]).contains("truncated"));
        assert!(err(&[]).contains("truncated in magic"));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(err(&longer), "bytes after the end");
        let mut version = bytes.clone();
        version[8] = 9;
        assert!(err(&version).contains("version 9"));
        // Holes only with retention, and only with the node's own retention.
        let kept = busy_machine_retaining(10, 2);
        let holed = encode(&kept);
        assert_eq!(
            StateMachine::restore(&mut &holed[..], config, 2).unwrap(),
            kept
        );
        assert!(err(&holed).starts_with("taken with --retain-messages 2, but this node has"));
        // Positions 5..=10 survive (two per room); the fields before them: retain, last, count.
        let at = |bytes: &[u8], fields: [u64; 3]| {
            let pattern: Vec<u8> = fields.iter().flat_map(|f| f.to_le_bytes()).collect();
            bytes
                .windows(24)
                .position(|w| w == pattern)
                .expect("the retention fields")
        };
        let patched = |fields: [u64; 3]| {
            let mut bytes = holed.clone();
            let at = at(&holed, [2, 10, 6]);
            let new: Vec<u8> = fields.iter().flat_map(|f| f.to_le_bytes()).collect();
            bytes[at..at + 24].copy_from_slice(&new);
            bytes
        };
        assert_eq!(
            err(&patched([0, 10, 6])),
            "6 messages up to position 10 without retention"
        );
        assert_eq!(err(&patched([0, 6, 6])), "message 1 has position 5");
        let too_many = patched([1, 10, 6]);
        assert!(StateMachine::restore(&mut &too_many[..], config, 1)
            .unwrap_err()
            .0
            .contains("holds more than 1 messages"));
        let beyond = patched([2, 9, 6]);
        assert_eq!(
            StateMachine::restore(&mut &beyond[..], config, 2)
                .unwrap_err()
                .0,
            "message position 10 after 9 (last 9)"
        );
        let newest_missing = patched([2, kept.applied_index(), 6]);
        assert!(StateMachine::restore(&mut &newest_missing[..], config, 2)
            .unwrap_err()
            .0
            .contains("the newest message"));
        // Fewer sessions allowed than the snapshot holds.
        let small = SessionConfig {
            sessions_max: 1,
            ..config
        };
        let mut two = sm.clone();
        two.sessions.open(two.applied_index);
        let mut encoded = Vec::new();
        two.capture().write_to(&mut encoded).unwrap();
        assert!(StateMachine::restore(&mut &encoded[..], small, 0)
            .unwrap_err()
            .0
            .contains("more than the configured 1"));
    }

    /// `bytes` damaged the `round % 3`th way: truncated, a few bits flipped, or a short run
    /// overwritten with random bytes.
    pub(super) fn damage(bytes: &[u8], round: usize, rng: &mut SmallRng) -> Vec<u8> {
        let mut damaged = bytes.to_vec();
        match round % 3 {
            0 => damaged.truncate(rng.gen_range(0..bytes.len())),
            1 => {
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..damaged.len());
                    damaged[at] ^= 1 << rng.gen_range(0..8);
                }
            }
            _ => {
                let at = rng.gen_range(0..damaged.len());
                let len = rng.gen_range(1..=8.min(damaged.len() - at));
                rng.fill(&mut damaged[at..at + len]);
            }
        }
        damaged
    }

    #[test]
    fn damaged_encodings_never_panic() {
        let sm = busy_machine(300);
        let bytes = encode(&sm);
        let config = SessionConfig::default();
        let mut rng = SmallRng::seed_from_u64(11);
        let mut refused = 0;
        for round in 0..3_000 {
            let damaged = damage(&bytes, round, &mut rng);
            match StateMachine::restore(&mut &damaged[..], config, 0) {
                Err(_) => refused += 1,
                Ok(_) => assert_ne!(round % 3, 0, "a truncation was accepted"),
            }
        }
        assert!(refused > 2_000, "{refused}");
    }
}
