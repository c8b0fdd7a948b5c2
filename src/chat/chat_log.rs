//! The chat log's storage: messages in position order, with holes where retention
//! (`--retain-messages`) dropped old messages, cheap to capture and bounded in memory.
//!
//! A position is a message's 1-based place in the whole chat (all rooms): assigned once, in
//! order, never reused. Dropping a message leaves a hole at its position; the log remembers the
//! highest position ever assigned ([`ChatLog::last_position`]) separately from how many messages
//! it still holds ([`ChatLog::len`]).
//!
//! Layout: immutable chunks (`Arc<[ChatMessage]>`, shared with any snapshot captured from the
//! log) followed by a mutable tail. A dropped message in a chunk is only marked dead (the chunk
//! is shared, it cannot change); once fewer than half of a chunk's messages are live, the chunk
//! is rebuilt from its survivors, and a chunk with none left is removed. So the messages held,
//! dead or alive, are at most twice the live ones in chunks plus one tail, and every dropped
//! message is freed eventually (once no captured snapshot shares its chunk).
//!
//! Invariants (checked in full by [`ChatLog::check`]; `state` checks the cheap ones after every
//! entry in debug builds):
//! - every held slot's position (chunks in order, then the tail) strictly increases, and is at
//!   most `last_position`; without drops the positions are exactly `1..=last_position`.
//! - a chunk holds `1..=CHUNK_LEN` messages, at least one and at least half of them live; its
//!   `holes` are empty (none dead) or one bit per message, and its `live` counts the rest.
//! - the tail holds fewer than `CHUNK_LEN` slots; `tail_live` counts its live ones; a tail whose
//!   slots are all dead is emptied.
//! - `live` is the number of live messages in chunks and tail.
//!
//! # Backed by the message store (`with_store`)
//!
//! Without retention a log may be backed by the message store (`crate::history`): every pushed
//! message is appended to the store too (unless the store already has its position: a restart
//! replays what it may hold), and once more than `keep_chunks` chunks are held, the oldest chunk
//! the store has is dropped from memory. Positions up to `evicted_through` are then read from
//! the store (`get` and `iter_from` hand out owned messages for them, borrowed ones otherwise),
//! and a capture carries a [`HistoryReader`] for them. All of them are live (no retention), so
//! `live` still counts them. A store that fails (a write error, damage found by a read) is
//! logged once; the log then keeps everything in memory, and a read that fails answers `None`.
//!
//! `push` returns the new `evicted_through` when it dropped chunks, so the rooms (`state`)
//! drop the same positions. A log restored from a version-5 snapshot starts [`ChatLog::resumed`]
//! after the snapshot's `stored_through`, with nothing before it in memory.
//! `capture_incremental` is what such a snapshot needs instead of the chunks: the store, the
//! last position it holds and its segments (see `snapshot`).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::message::ChatMessage;
use crate::history::{History, HistoryReader, ReadJob};

/// Slots per chunk of the chat log. A snapshot shares the chunks and copies only the tail, so
/// capturing one costs at most `CHUNK_LEN - 1` message clones.
pub(crate) const CHUNK_LEN: usize = 4096;
/// [`CHUNK_LEN`] for the server, which sizes what the chat log keeps in memory in chunks.
pub const CHUNK_MESSAGES: usize = CHUNK_LEN;

/// Which slots of a chunk (or of the tail) are dead: empty when none is (the common case, and
/// free to copy), else one bit per slot.
#[derive(Clone, Debug, Default)]
pub(crate) struct Holes {
    words: Vec<u64>,
}

impl Holes {
    fn is_dead(&self, k: usize) -> bool {
        self.words
            .get(k / 64)
            .is_some_and(|word| word & (1 << (k % 64)) != 0)
    }

    /// Marks slot `k` of `slots` dead; false if it already was.
    fn mark(&mut self, k: usize, slots: usize) -> bool {
        if self.words.is_empty() {
            self.words = vec![0; slots.div_ceil(64)];
        }
        let Some(word) = self.words.get_mut(k / 64) else {
            return false;
        };
        let bit = 1 << (k % 64);
        let fresh = *word & bit == 0;
        *word |= bit;
        fresh
    }

    #[cfg(test)]
    fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// The live messages of `messages` (with dead slots `holes`) whose position is `>= position`.
fn live_from<'a>(
    messages: &'a [ChatMessage],
    holes: &'a Holes,
    position: u64,
) -> impl Iterator<Item = &'a ChatMessage> + 'a {
    let start = messages.partition_point(|m| m.position < position);
    messages[start..]
        .iter()
        .enumerate()
        .filter(move |(k, _)| !holes.is_dead(start + k))
        .map(|(_, m)| m)
}

/// An immutable run of messages in position order, some of them maybe dead.
#[derive(Clone, Debug)]
pub(crate) struct Chunk {
    messages: Arc<[ChatMessage]>,
    holes: Holes,
    live: usize,
}

impl Chunk {
    fn all_live(messages: Vec<ChatMessage>) -> Chunk {
        Chunk {
            live: messages.len(),
            messages: Arc::from(messages),
            holes: Holes::default(),
        }
    }

    fn last_position(&self) -> u64 {
        self.messages.last().map_or(0, |m| m.position)
    }

    /// The live messages, in position order.
    pub(crate) fn live_messages(&self) -> impl Iterator<Item = &ChatMessage> + '_ {
        live_from(&self.messages, &self.holes, 0)
    }

    pub(crate) fn live(&self) -> usize {
        self.live
    }
}

/// The message store behind a log; see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Disk {
    store: Arc<Mutex<History>>,
    /// Positions up to this are no longer in memory: only the store has them.
    evicted_through: u64,
    /// Chunks kept in memory (at least 1).
    keep_chunks: usize,
    /// Set once the store failed (logged once); nothing more is appended or evicted.
    failed: bool,
}

impl Disk {
    fn fail(&mut self, what: &str, why: &dyn std::fmt::Display) {
        if !self.failed {
            log::error!("message store: {what}: {why}; keeping the chat in memory");
        }
        self.failed = true;
    }

    fn read(&self, position: u64, max: usize) -> Vec<ChatMessage> {
        let result = match self.store.lock() {
            Ok(store) => store.read_range(position, max).map_err(|e| e.to_string()),
            Err(_) => Err("the store's lock is poisoned".to_string()),
        };
        result.unwrap_or_else(|why| {
            log::error!("message store: reading from position {position}: {why}");
            Vec::new()
        })
    }
}

/// The messages of a store-backed log that only the store has, read a page at a time.
struct DiskIter<'a> {
    disk: Option<&'a Disk>,
    at: u64,
    page: VecDeque<ChatMessage>,
    page_len: usize,
}

impl Iterator for DiskIter<'_> {
    type Item = ChatMessage;

    fn next(&mut self) -> Option<ChatMessage> {
        if self.page.is_empty() {
            let disk = self.disk?;
            if self.at > disk.evicted_through {
                return None;
            }
            let left = usize::try_from(disk.evicted_through - self.at + 1).unwrap_or(usize::MAX);
            self.page = disk.read(self.at, self.page_len.min(left)).into();
            // Small first pages for callers that want one message; larger ones for a stream.
            self.page_len = (self.page_len * 4).min(1024);
            match self.page.back() {
                Some(last) => self.at = last.position + 1,
                None => self.disk = None,
            }
        }
        self.page.pop_front()
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct ChatLog {
    chunks: Vec<Chunk>,
    tail: Vec<ChatMessage>,
    tail_holes: Holes,
    tail_live: usize,
    /// The highest position ever assigned; 0 before the first message.
    last_position: u64,
    live: u64,
    disk: Option<Disk>,
}

/// Equal contents: the same last position and the same live messages. (Chunking is not part
/// of it: a log restored from a snapshot holds the same messages in fewer chunks.)
impl PartialEq for ChatLog {
    fn eq(&self, other: &ChatLog) -> bool {
        self.last_position == other.last_position
            && self.live == other.live
            && self.iter_from(0).eq(other.iter_from(0))
    }
}

impl Eq for ChatLog {}

/// The part of a captured store-backed log that only the store holds: a reader and the last
/// position to read with it; or why the store could not give one.
pub(crate) type StoredPart = Result<(HistoryReader, u64), String>;

/// What an incremental snapshot needs of a store-backed log (`capture_incremental`).
#[derive(Clone, Debug)]
pub(crate) struct Incremental {
    pub(crate) store: Arc<Mutex<History>>,
    /// The store holds `1..=through`.
    pub(crate) through: u64,
    /// The store's segments `(seq, base_position)` holding positions up to `through`.
    pub(crate) segments: Vec<(u64, u64)>,
    /// The messages after `through`, in order.
    pub(crate) after: Vec<ChatMessage>,
}

/// Where a held slot is.
enum Slot {
    Chunk(usize, usize),
    Tail(usize),
}

impl ChatLog {
    /// How many live messages the log holds.
    pub(crate) fn len(&self) -> u64 {
        self.live
    }

    /// The highest position ever assigned (dropped or not); 0 before the first message.
    pub(crate) fn last_position(&self) -> u64 {
        self.last_position
    }

    /// Slots held in memory, live or dead (for tests of the memory bound).
    pub(crate) fn held_slots(&self) -> usize {
        self.chunks.iter().map(|c| c.messages.len()).sum::<usize>() + self.tail.len()
    }

    #[cfg(test)]
    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    fn slot_of(&self, position: u64) -> Option<Slot> {
        let c = self
            .chunks
            .partition_point(|c| c.last_position() < position);
        match self.chunks.get(c) {
            Some(chunk) => {
                let k = chunk
                    .messages
                    .binary_search_by_key(&position, |m| m.position)
                    .ok()?;
                Some(Slot::Chunk(c, k))
            }
            None => {
                let k = self
                    .tail
                    .binary_search_by_key(&position, |m| m.position)
                    .ok()?;
                Some(Slot::Tail(k))
            }
        }
    }

    /// A log backed by `store` (see the module docs), keeping `keep_chunks` chunks (at least
    /// one) in memory.
    pub(crate) fn with_store(store: Arc<Mutex<History>>, keep_chunks: usize) -> ChatLog {
        ChatLog {
            disk: Some(Disk {
                store,
                evicted_through: 0,
                keep_chunks: keep_chunks.max(1),
                failed: false,
            }),
            ..ChatLog::default()
        }
    }

    /// The store behind this log, if any.
    pub(crate) fn store(&self) -> Option<&Arc<Mutex<History>>> {
        self.disk.as_ref().map(|d| &d.store)
    }

    /// Positions up to this are read from the store (0 for a log held in memory).
    pub(crate) fn evicted_through(&self) -> u64 {
        self.disk.as_ref().map_or(0, |d| d.evicted_through)
    }

    /// The live message at `position`; `None` for one never assigned or dropped.
    pub(crate) fn get(&self, position: u64) -> Option<Cow<'_, ChatMessage>> {
        if let Some(disk) = self.disk.as_ref().filter(|d| position <= d.evicted_through) {
            let found = disk.read(position, 1).pop();
            return found.filter(|m| m.position == position).map(Cow::Owned);
        }
        match self.slot_of(position)? {
            Slot::Chunk(c, k) => {
                let chunk = &self.chunks[c];
                (!chunk.holes.is_dead(k)).then(|| Cow::Borrowed(&chunk.messages[k]))
            }
            Slot::Tail(k) => (!self.tail_holes.is_dead(k)).then(|| Cow::Borrowed(&self.tail[k])),
        }
    }

    /// The newest live message.
    pub(crate) fn last(&self) -> Option<&ChatMessage> {
        let in_tail = (0..self.tail.len())
            .rev()
            .find(|&k| !self.tail_holes.is_dead(k))
            .map(|k| &self.tail[k]);
        in_tail.or_else(|| {
            let chunk = self.chunks.last()?;
            (0..chunk.messages.len())
                .rev()
                .find(|&k| !chunk.holes.is_dead(k))
                .map(|k| &chunk.messages[k])
        })
    }

    /// Appends a message whose position is beyond `last_position`; a tail that reaches
    /// `CHUNK_LEN` slots becomes an immutable chunk of its live messages. Returns the new
    /// `evicted_through` when chunks were dropped from memory (the rooms drop them too).
    pub(crate) fn push(&mut self, message: ChatMessage) -> Option<u64> {
        debug_assert!(message.position > self.last_position);
        if let Some(disk) = self.disk.as_mut().filter(|d| !d.failed) {
            let appended = match disk.store.lock() {
                Ok(mut store) if message.position > store.last_position() => {
                    store.append(&message).map_err(|e| e.to_string())
                }
                Ok(_) => Ok(()),
                Err(_) => Err("the store's lock is poisoned".to_string()),
            };
            if let Err(why) = appended {
                disk.fail(&format!("appending position {}", message.position), &why);
            }
        }
        if self.tail.capacity() == 0 {
            self.tail.reserve_exact(CHUNK_LEN);
        }
        self.last_position = message.position;
        self.tail.push(message);
        self.tail_live += 1;
        self.live += 1;
        if self.tail.len() == CHUNK_LEN {
            let full = std::mem::replace(&mut self.tail, Vec::with_capacity(CHUNK_LEN));
            let holes = std::mem::take(&mut self.tail_holes);
            let live = std::mem::take(&mut self.tail_live);
            if live == full.len() {
                self.chunks.push(Chunk::all_live(full));
            } else if live > 0 {
                let survivors = full
                    .into_iter()
                    .enumerate()
                    .filter(|(k, _)| !holes.is_dead(*k))
                    .map(|(_, m)| m)
                    .collect();
                self.chunks.push(Chunk::all_live(survivors));
            }
            return self.evict();
        }
        None
    }

    /// Store-backed: drops the oldest chunks beyond `keep_chunks` that the store holds;
    /// returns the new `evicted_through` if any was dropped.
    fn evict(&mut self) -> Option<u64> {
        let disk = self.disk.as_mut().filter(|d| !d.failed)?;
        if self.chunks.len() <= disk.keep_chunks {
            return None;
        }
        // Written first: the store (without a cache) serves only what reached its files.
        let flushed = match disk.store.lock() {
            Ok(mut store) => store
                .flush()
                .map(|()| store.last_position())
                .map_err(|e| e.to_string()),
            Err(_) => return None,
        };
        let stored = match flushed {
            Ok(stored) => stored,
            Err(why) => {
                disk.fail("writing", &why);
                return None;
            }
        };
        let before = disk.evicted_through;
        while self.chunks.len() > disk.keep_chunks {
            let last = self.chunks[0].last_position();
            if last > stored || self.chunks[0].live != self.chunks[0].messages.len() {
                break;
            }
            self.chunks.remove(0);
            disk.evicted_through = last;
        }
        (disk.evicted_through > before).then_some(disk.evicted_through)
    }

    /// The time of the newest message (which retention never drops): from memory, or for a
    /// log resumed from a version-5 snapshot with nothing after it yet, from the store.
    pub(crate) fn newest_timestamp_ms(&self) -> Option<u64> {
        if let Some(last) = self.last() {
            return Some(last.timestamp_ms);
        }
        let disk = self.disk.as_ref().filter(|d| d.evicted_through > 0)?;
        disk.read(disk.evicted_through, 1)
            .pop()
            .map(|m| m.timestamp_ms)
    }

    /// The last `max` messages of `room` before position `before`, which must be at most
    /// `evicted_through + 1`: through the store's room index. Empty for a log held in memory
    /// or when the store fails (logged).
    pub(crate) fn room_page(&self, room: &str, before: u64, max: usize) -> Vec<ChatMessage> {
        let Some(disk) = &self.disk else {
            return Vec::new();
        };
        let before = before.min(disk.evicted_through + 1);
        let page = match disk.store.lock() {
            Ok(store) => store
                .room_page(room, before, max)
                .map_err(|e| e.to_string()),
            Err(_) => Err("the store's lock is poisoned".to_string()),
        };
        page.unwrap_or_else(|why| {
            log::error!("message store: reading #{room} before position {before}: {why}");
            Vec::new()
        })
    }

    /// What [`ChatLog::room_page`] would read, as a job to run off the event loop (see
    /// `history::ReadJob`); `None` for a log held in memory. Reads nothing now.
    pub(crate) fn plan_room_page(&self, room: &str, before: u64, max: usize) -> Option<ReadJob> {
        let disk = self.disk.as_ref()?;
        let before = before.min(disk.evicted_through + 1);
        Some(match disk.store.lock() {
            Ok(store) => store.plan_room_page(room, before, max),
            Err(_) => ReadJob::Failed("the store's lock is poisoned".to_string()),
        })
    }

    /// The part of `iter_from(position)` that only the store has, at most `max` messages of
    /// it, as a job to run off the event loop; `None` when `position` is held in memory.
    /// The rest follows from [`ChatLog::iter_memory`] at `evicted_through + 1`.
    pub(crate) fn plan_from(&self, position: u64, max: usize) -> Option<ReadJob> {
        let disk = self
            .disk
            .as_ref()
            .filter(|d| position.max(1) <= d.evicted_through)?;
        Some(match disk.store.lock() {
            Ok(store) => store.plan_range(position.max(1), disk.evicted_through, max),
            Err(_) => ReadJob::Failed("the store's lock is poisoned".to_string()),
        })
    }

    /// A log backed by `store` that resumes after position `stored_through`, all of whose
    /// messages only the store holds (a version-5 snapshot's restore; the caller checked the
    /// store holds them).
    pub(crate) fn resumed(
        store: Arc<Mutex<History>>,
        keep_chunks: usize,
        stored_through: u64,
    ) -> ChatLog {
        let mut log = ChatLog::with_store(store, keep_chunks);
        if let Some(disk) = log.disk.as_mut() {
            disk.evicted_through = stored_through;
        }
        log.last_position = stored_through;
        log.live = stored_through;
        log
    }

    /// Sets the last assigned position of a log rebuilt from a snapshot whose newest messages
    /// were dropped (never lowers it).
    pub(crate) fn set_last_position(&mut self, last_position: u64) {
        self.last_position = self.last_position.max(last_position);
    }

    /// Drops the message at `position`; false if there is none live there (or it is only in
    /// the store, which never drops single messages: retention and the store exclude each
    /// other).
    pub(crate) fn remove(&mut self, position: u64) -> bool {
        if position <= self.evicted_through() {
            return false;
        }
        match self.slot_of(position) {
            None => false,
            Some(Slot::Tail(k)) => {
                if !self.tail_holes.mark(k, CHUNK_LEN) {
                    return false;
                }
                self.tail_live -= 1;
                self.live -= 1;
                if self.tail_live == 0 {
                    // Every slot is dead: free them now (positions stay, `last_position` holds).
                    self.tail.clear();
                    self.tail_holes = Holes::default();
                }
                true
            }
            Some(Slot::Chunk(c, k)) => {
                let chunk = &mut self.chunks[c];
                if !chunk.holes.mark(k, chunk.messages.len()) {
                    return false;
                }
                chunk.live -= 1;
                self.live -= 1;
                if chunk.live == 0 {
                    self.chunks.remove(c);
                } else if chunk.live * 2 < chunk.messages.len() {
                    // Copies at most half a chunk once per half a chunk of drops: O(1) amortized.
                    let survivors: Vec<ChatMessage> = chunk.live_messages().cloned().collect();
                    *chunk = Chunk::all_live(survivors);
                }
                true
            }
        }
    }

    /// The live messages with a position `>= position`, in order: owned for those read from
    /// the store, borrowed for those in memory.
    pub(crate) fn iter_from(
        &self,
        position: u64,
    ) -> impl Iterator<Item = Cow<'_, ChatMessage>> + '_ {
        let from_disk = DiskIter {
            disk: self.disk.as_ref(),
            at: position.max(1),
            page: VecDeque::new(),
            page_len: 16,
        };
        from_disk
            .map(Cow::Owned)
            .chain(self.iter_memory(position).map(Cow::Borrowed))
    }

    /// The live messages in memory with a position `>= position`, in order.
    pub(crate) fn iter_memory(&self, position: u64) -> impl Iterator<Item = &ChatMessage> + '_ {
        let c = self
            .chunks
            .partition_point(|c| c.last_position() < position);
        self.chunks[c..]
            .iter()
            .flat_map(move |chunk| live_from(&chunk.messages, &chunk.holes, position))
            .chain(live_from(&self.tail, &self.tail_holes, position))
    }

    /// For an incremental (version-5) snapshot of a store-backed log whose store works: the
    /// store, the last position it holds (checked under its lock, at most `last_position`,
    /// at least `evicted_through`), its segments `(seq, base)`, and copies of the messages in
    /// memory after that position (none unless the store lags). `None`: capture it whole.
    pub(crate) fn capture_incremental(&self) -> Option<Incremental> {
        let disk = self.disk.as_ref().filter(|d| !d.failed)?;
        let store = disk.store.lock().ok()?;
        let through = store.last_position().min(self.last_position);
        if through < disk.evicted_through {
            return None;
        }
        let segments = store
            .segments()
            .into_iter()
            .filter(|&(_, base)| base <= through)
            .collect();
        drop(store);
        Some(Incremental {
            store: Arc::clone(&disk.store),
            through,
            segments,
            after: self.iter_memory(through + 1).cloned().collect(),
        })
    }

    /// Whether this log's snapshots are incremental: it is backed by a store that works.
    pub(crate) fn is_incremental(&self) -> bool {
        self.disk.as_ref().is_some_and(|d| !d.failed)
    }

    /// The chunks and a copy of the tail's live messages, for a snapshot; for a store-backed
    /// log also a reader of the store and the last position to read from it (the rest is in
    /// the chunks), or why no reader could be had.
    pub(crate) fn capture(&self) -> (Vec<Chunk>, Vec<ChatMessage>, Option<StoredPart>) {
        let tail = live_from(&self.tail, &self.tail_holes, 0)
            .cloned()
            .collect();
        let stored = self
            .disk
            .as_ref()
            .filter(|d| d.evicted_through > 0)
            .map(|d| {
                let reader = match d.store.lock() {
                    Ok(mut store) => store.reader().map_err(|e| e.to_string()),
                    Err(_) => Err("the store's lock is poisoned".to_string()),
                };
                reader.map(|reader| (reader, d.evicted_through))
            });
        (self.chunks.clone(), tail, stored)
    }

    /// Checks every invariant in the module docs; O(held slots).
    #[cfg(test)]
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut previous = self.evicted_through();
        let mut live = self.evicted_through();
        let mut check_run = |what: &str, messages: &[ChatMessage]| -> Result<(), String> {
            for m in messages {
                if m.position <= previous || m.position > self.last_position {
                    return Err(format!(
                        "{what}: position {} after {previous} (last {})",
                        m.position, self.last_position
                    ));
                }
                previous = m.position;
            }
            Ok(())
        };
        for (c, chunk) in self.chunks.iter().enumerate() {
            let len = chunk.messages.len();
            check_run(&format!("chunk {c}"), &chunk.messages)?;
            if len == 0 || len > CHUNK_LEN {
                return Err(format!("chunk {c} holds {len} messages"));
            }
            if !chunk.holes.words.is_empty() && chunk.holes.words.len() != len.div_ceil(64) {
                return Err(format!("chunk {c} has a hole map of the wrong size"));
            }
            if chunk.live != len - chunk.holes.count() {
                return Err(format!("chunk {c} counts {} live wrongly", chunk.live));
            }
            if chunk.live == 0 || chunk.live * 2 < len {
                return Err(format!("chunk {c}: {} of {len} live", chunk.live));
            }
            live += chunk.live as u64;
        }
        check_run("tail", &self.tail)?;
        if self.tail.len() >= CHUNK_LEN {
            return Err(format!("tail of {} slots", self.tail.len()));
        }
        let tail_dead = (0..self.tail.len())
            .filter(|&k| self.tail_holes.is_dead(k))
            .count();
        if self.tail_holes.count() != tail_dead || self.tail_live != self.tail.len() - tail_dead {
            return Err("tail live count is wrong".to_string());
        }
        if !self.tail.is_empty() && self.tail_live == 0 {
            return Err("a tail of dead slots was kept".to_string());
        }
        live += self.tail_live as u64;
        if live != self.live {
            return Err(format!("{live} live messages, counted {}", self.live));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(position: u64) -> ChatMessage {
        ChatMessage {
            position,
            index: position,
            room: "r".into(),
            nick: "n".into(),
            text: format!("{position}"),
            timestamp_ms: 0,
        }
    }

    fn positions(log: &ChatLog, from: u64) -> Vec<u64> {
        log.iter_from(from).map(|m| m.position).collect()
    }

    #[test]
    fn holes_anywhere_read_back_consistently() {
        let mut log = ChatLog::default();
        let n = 3 * CHUNK_LEN as u64 + 100;
        for p in 1..=n {
            log.push(message(p));
        }
        // Drop every position divisible by 3 or 5, and most of the second chunk.
        let dropped = |p: u64| {
            p.is_multiple_of(3) || p.is_multiple_of(5) || (4097..=8000).contains(&p) || p == n - 1
        };
        for p in (1..=n).filter(|&p| dropped(p)) {
            assert!(log.remove(p), "{p}");
            assert!(!log.remove(p), "{p} twice");
        }
        log.check().unwrap();
        let expected: Vec<u64> = (1..=n).filter(|&p| !dropped(p)).collect();
        assert_eq!(log.len(), expected.len() as u64);
        assert_eq!(log.last_position(), n);
        for p in 0..=n + 2 {
            assert_eq!(
                log.get(p).map(|m| m.position),
                expected.contains(&p).then_some(p)
            );
        }
        for from in [0, 1, 3, 4096, 4097, 8000, 8001, n - 1, n, n + 1] {
            let want: Vec<u64> = expected.iter().copied().filter(|&p| p >= from).collect();
            assert_eq!(positions(&log, from), want, "from {from}");
        }
        // The second chunk fell under half live and was rebuilt from its survivors.
        assert!(log.held_slots() < n as usize);
        assert_eq!(log.last().map(|m| m.position), Some(n));
    }

    #[test]
    fn dropping_everything_frees_everything() {
        let mut log = ChatLog::default();
        let n = 2 * CHUNK_LEN as u64 + 10;
        for p in 1..=n {
            log.push(message(p));
            if p > 10 {
                assert!(log.remove(p - 10));
            }
            log.check().unwrap();
        }
        assert_eq!(log.len(), 10);
        assert!(log.held_slots() <= 10 + CHUNK_LEN, "{}", log.held_slots());
        for p in n - 9..=n {
            assert!(log.remove(p));
        }
        log.check().unwrap();
        assert_eq!((log.len(), log.held_slots(), log.chunk_count()), (0, 0, 0));
        assert_eq!(log.last_position(), n);
        assert!(log.get(n).is_none() && log.last().is_none());
        log.push(message(n + 1));
        assert_eq!(positions(&log, 0), vec![n + 1]);
    }

    #[test]
    fn a_capture_keeps_what_the_log_drops_later() {
        let mut log = ChatLog::default();
        for p in 1..=CHUNK_LEN as u64 + 5 {
            log.push(message(p));
        }
        let (chunks, tail, _) = log.capture();
        for p in 1..=CHUNK_LEN as u64 {
            log.remove(p);
        }
        assert_eq!(log.chunk_count(), 0);
        assert_eq!(chunks[0].live_messages().count(), CHUNK_LEN);
        assert_eq!(tail.len(), 5);
    }
}
