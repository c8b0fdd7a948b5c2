//! The message store: every committed chat message on disk, in immutable checksummed segment
//! files with an index by position and by room, and a bounded cache of the newest messages.
//!
//! It is derived data: the Raft log (and the snapshots that cover it) stay the truth. The
//! caller appends each message as its entry is applied, and must `sync` the store before a
//! snapshot lets the log forget the entries that carried them. A crash may lose the store's
//! unsynced tail; the caller re-appends it from the log (`last_position` says where it ends).
//!
//! This module owns the store's directory. It never knows about Raft, sockets or the chat's
//! rules (rooms are just a field to index by); it never reuses a position.
//!
//! # On disk (the shape of Kafka's log segments)
//!
//! ```text
//! <dir>/hist-<seq:020>-<base_position:020>.seg   one segment: header record*
//! <dir>/hist-<seq:020>-<base_position:020>.idx   its index, written when the segment is sealed
//! <dir>/hist-....tmp                             being created or sealed; removed on open
//!
//! header  = magic "RCHATHST" | version u32 | crc32c u32 (of the next 24 bytes)
//!           | cluster_id u64 | seq u64 | base_position u64                 (40 bytes, LE)
//! record  = body_len u32 | crc32c u32 (of body_len and body) | body        (the WAL's framing)
//! body    = position u64 | index u64 | timestamp_ms u64 | room str16 | nick str16 | text str32
//! ```
//!
//! A segment holds consecutive positions from its `base_position`; the next segment starts at
//! the position after its predecessor's last. The newest segment is the *active* one: records
//! are appended to it (buffered, written by `flush`, made durable by `sync`). Once it reaches
//! `segment_bytes` it is *sealed*: written, and its index file (`format::SealedIndex`: a
//! sparse index with the offset of every `SPARSE_EVERY`th record, and per room the positions of
//! its records, each part checksummed) written beside it as `.idx.tmp`; the sealing thread
//! (`sealer`) then fsyncs both and names the index, off the caller's thread. A sealed segment
//! never changes again; retention (`drop_before`) deletes whole sealed segments, oldest first.
//!
//! # Crash rules (those of the write-ahead log)
//!
//! - A segment and its index get their names only when complete (written to `.tmp`, renamed);
//!   an index is named only once its segment's data is durable.
//! - On open the active segment (the last one, without an index) is scanned: an incomplete or
//!   damaged last record with nothing valid after it is a torn tail, cut off and reported
//!   ([`Opened::torn_tail`]); a damaged record followed by a valid one, a record with the wrong
//!   position, or a bad header is `StorageError::Corrupt` naming the file and the offset.
//! - A sealed segment is checked on open by its header and its length against its index (and
//!   record by record with `verify_sealed`); every read checks each record's checksum, so
//!   damage found later is also `Corrupt` with the file and offset, never wrong data. A sealed
//!   segment whose index is missing or damaged is scanned and its index rewritten (the index
//!   is derived; the scan refuses any damage to the segment itself), except a torn tail: that
//!   is a seal a crash interrupted before its fsync, so the segment is cut, becomes the active
//!   one, and the newer segments are deleted (the log appends their messages again).
//! - After a failed write the store is poisoned (as the WAL is): reopen instead.
//!
//! # Memory
//!
//! Held per sealed segment: one open file, its sparse index (8 bytes per `SPARSE_EVERY`
//! records) and one entry per room that posted in it (no positions). Held for the active
//! segment: its sparse index and 4 bytes per record for the room index (bounded by
//! `segment_bytes`). The cache holds the newest messages up to `cache_bytes`, plus any not yet
//! written. Everything else is read from disk on demand.

mod format;
mod read;
mod sealer;
mod segment;

pub use read::{ReadJob, SealedRoomPart};

use crate::chat::ChatMessage;
use crate::storage::{StorageError, TornTail};
use format::{SealedIndex, SegmentHeader};
use sealer::{SealJob, Sealer};
use segment::SPARSE_EVERY;
use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Seal a segment once it holds this many bytes (default of [`HistoryOptions::segment_bytes`]).
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// Default of [`HistoryOptions::cache_bytes`].
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;
/// Buffered record bytes are written once they reach this.
const FLUSH_BYTES: usize = 256 << 10;

/// Where the store lives and how it behaves.
#[derive(Clone, Debug)]
pub struct HistoryOptions {
    pub dir: PathBuf,
    /// Written into every segment header and checked on open.
    pub cluster_id: u64,
    /// A segment is sealed once it reaches this many bytes.
    pub segment_bytes: u64,
    /// The cache of the newest messages holds about this many bytes. 0: no cache, and no copy
    /// of each appended message; reads then see what was written (`flush`), not what is still
    /// buffered (a caller that holds the newest messages itself, as the chat log does).
    pub cache_bytes: usize,
    /// fsync segments when sealed and created, files when cut, and the directory on renames.
    pub fsync: bool,
    /// Read and check every record of every sealed segment on open (slow for a long history;
    /// without it sealed records are checked as they are read).
    pub verify_sealed: bool,
}

impl HistoryOptions {
    pub fn new(dir: impl Into<PathBuf>, cluster_id: u64) -> HistoryOptions {
        HistoryOptions {
            dir: dir.into(),
            cluster_id,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            cache_bytes: DEFAULT_CACHE_BYTES,
            fsync: true,
            verify_sealed: false,
        }
    }
}

/// What `open` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// The last segment's torn tail, now cut; what it held must come again from the log.
    pub torn_tail: Option<TornTail>,
    /// Sealed segments whose index was missing or damaged and was rebuilt.
    pub indexes_rebuilt: usize,
}

/// A sealed segment: immutable, indexed by its index file.
#[derive(Debug)]
struct Sealed {
    path: PathBuf,
    file: Arc<File>,
    /// Its `sparse` is moved to `sparse` (shared with readers).
    index: SealedIndex,
    sparse: Arc<[u64]>,
    /// The index file, open: room pages read it through this handle, which stays valid
    /// across the rename that names it (see `sealer`).
    index_file: Arc<File>,
    /// False while its seal is pending (`sealer`): not yet durable, not to be deleted.
    durable: Arc<AtomicBool>,
}

impl Sealed {
    fn new(
        path: PathBuf,
        file: Arc<File>,
        mut index: SealedIndex,
        index_file: Arc<File>,
        durable: Arc<AtomicBool>,
    ) -> Sealed {
        let sparse = Arc::from(std::mem::take(&mut index.sparse));
        Sealed {
            path,
            file,
            index,
            sparse,
            index_file,
            durable,
        }
    }

    fn is_durable(&self) -> bool {
        self.durable.load(Ordering::Acquire)
    }

    fn view(&self) -> View {
        View {
            path: self.path.clone(),
            file: Arc::clone(&self.file),
            base_position: self.index.base_position,
            count: self.index.count,
            data_len: self.index.data_len,
            sparse: Arc::clone(&self.sparse),
        }
    }
}

/// What a read of one segment needs, independent of the store: shared by [`HistoryReader`].
#[derive(Clone, Debug)]
struct View {
    path: PathBuf,
    file: Arc<File>,
    base_position: u64,
    count: u64,
    data_len: u64,
    sparse: Arc<[u64]>,
}

impl View {
    fn read(
        &self,
        position: u64,
        take: &mut dyn FnMut(ChatMessage) -> bool,
    ) -> Result<(), StorageError> {
        read_segment(
            &self.file,
            &self.path,
            self.data_len,
            self.base_position,
            &self.sparse,
            position,
            take,
        )
    }
}

/// Reads the segment from `position` on (see `segment::read_from`), starting at the sparse
/// index's nearest point at or before it.
fn read_segment(
    file: &File,
    path: &Path,
    data_len: u64,
    base: u64,
    sparse: &[u64],
    position: u64,
    take: &mut dyn FnMut(ChatMessage) -> bool,
) -> Result<(), StorageError> {
    if position < base {
        return Ok(());
    }
    let point = (position - base) / SPARSE_EVERY;
    let Some(&offset) = sparse.get(usize::try_from(point).unwrap_or(usize::MAX)) else {
        return Ok(());
    };
    segment::read_from(
        file,
        path,
        data_len,
        offset,
        base + point * SPARSE_EVERY,
        position,
        take,
    )
}

/// The segment being appended to.
#[derive(Debug)]
struct Active {
    path: PathBuf,
    file: Arc<File>,
    seq: u64,
    base_position: u64,
    count: u64,
    /// Records in the file (the rest are in `pending`).
    written_count: u64,
    /// Bytes in the file (header and written records); `pending` goes here next.
    written: u64,
    pending: Vec<u8>,
    sparse: Vec<u64>,
    rooms: BTreeMap<String, Vec<u32>>,
}

impl Active {
    /// The active segment as a scan on open found it (its torn tail, if any, already cut).
    fn from_scan(
        path: PathBuf,
        file: Arc<File>,
        seq: u64,
        base_position: u64,
        scanned: segment::Scanned,
    ) -> Active {
        Active {
            path,
            file,
            seq,
            base_position,
            count: scanned.count,
            written_count: scanned.count,
            written: scanned.end,
            pending: Vec::new(),
            sparse: scanned.sparse,
            rooms: scanned.rooms,
        }
    }

    fn size(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    /// Position of the last record already in the file (`base_position - 1` if none).
    fn written_last(&self) -> u64 {
        self.base_position + self.written_count - 1
    }
}

/// The message store. See the module docs.
#[derive(Debug)]
pub struct History {
    opts: HistoryOptions,
    sealed: VecDeque<Sealed>,
    active: Option<Active>,
    /// The newest messages, consecutive positions, ending at `last_position`.
    cache: VecDeque<ChatMessage>,
    cache_used: usize,
    /// The position the next message gets; 1 for an empty store.
    next_position: u64,
    next_seq: u64,
    failed: Option<String>,
    sealer: Sealer,
}

fn message_bytes(m: &ChatMessage) -> usize {
    std::mem::size_of::<ChatMessage>() + m.room.len() + m.nick.len() + m.text.len()
}

impl History {
    /// Opens the store in `opts.dir` (created if missing): checks the sealed segments, scans
    /// the active one and cuts its torn tail. See the crash rules in the module docs.
    pub fn open(opts: HistoryOptions) -> Result<(History, Opened), StorageError> {
        fs::create_dir_all(&opts.dir)
            .map_err(|e| StorageError::io(format!("creating {}", opts.dir.display()), e))?;
        let files = segment::list(&opts.dir)?;
        let mut opened = Opened::default();
        let mut history = History {
            opts,
            sealed: VecDeque::new(),
            active: None,
            cache: VecDeque::new(),
            cache_used: 0,
            next_position: 1,
            next_seq: 1,
            failed: None,
            sealer: Sealer::start(),
        };
        let next_bases: Vec<Option<u64>> = (0..files.len())
            .map(|k| files.get(k + 1).map(|(_, base, _)| *base))
            .collect();
        let mut files = files.into_iter().zip(next_bases).enumerate();
        for (k, ((seq, base, path), next_base)) in files.by_ref() {
            if k > 0 && seq != history.next_seq {
                return Err(StorageError::corrupt(
                    &path,
                    0,
                    format!("segment seq {seq} follows seq {}", history.next_seq - 1),
                ));
            }
            if k > 0 && base != history.next_position {
                return Err(StorageError::corrupt(
                    &path,
                    0,
                    format!(
                        "segment starts at position {base}, the one before ends at {}",
                        history.next_position - 1
                    ),
                ));
            }
            if history.open_segment(seq, base, path, next_base, &mut opened)? {
                break;
            }
        }
        // A seal that a crash left pending, with a torn tail: the segment was cut and is now
        // the active one, so the newer segments cannot continue it (see `sealer`).
        let newer: Vec<PathBuf> = files.map(|(_, ((_, _, path), _))| path).collect();
        if !newer.is_empty() {
            for path in &newer {
                for file in [path.clone(), segment::index_path(path)] {
                    match fs::remove_file(&file) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(StorageError::io(format!("removing {}", file.display()), e))
                        }
                        _ => {}
                    }
                }
            }
            log::warn!(
                "message store: removed {} segment(s) after a segment whose seal a crash \
                 interrupted; the log appends their messages again",
                newer.len()
            );
            if history.opts.fsync {
                segment::sync_dir(&history.opts.dir)?;
            }
        }
        Ok((history, opened))
    }

    /// Opens one segment (`next_base`: the base position of the segment after it, if any);
    /// `Ok(true)` when it became the active one although newer segments follow it (a seal a
    /// crash interrupted): the caller deletes those.
    fn open_segment(
        &mut self,
        seq: u64,
        base: u64,
        path: PathBuf,
        next_base: Option<u64>,
        opened: &mut Opened,
    ) -> Result<bool, StorageError> {
        let is_last = next_base.is_none();
        let file = OpenOptions::new()
            .read(true)
            .write(is_last)
            .open(&path)
            .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
        let file = Arc::new(file);
        let mut header = vec![0; format::HEADER_LEN];
        let len = file
            .metadata()
            .map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?
            .len();
        let got = file.read_at(&mut header, 0).unwrap_or(0);
        segment::check_header(
            &path,
            header.get(..got).unwrap_or_default(),
            self.opts.cluster_id,
            seq,
            base,
        )?;
        let index = match fs::read(segment::index_path(&path)) {
            Ok(bytes) => SealedIndex::decode(&bytes)
                .ok()
                .filter(|index| index.seq == seq && index.base_position == base && index.count > 0),
            Err(_) => None,
        };
        self.next_seq = seq + 1;
        match index {
            Some(index) => {
                if len != index.data_len {
                    return Err(StorageError::corrupt(
                        &path,
                        len.min(index.data_len),
                        format!(
                            "sealed segment is {len} bytes, its index says {}",
                            index.data_len
                        ),
                    ));
                }
                if self.opts.verify_sealed {
                    let buf = read_whole(&path)?;
                    segment::verify(&path, &buf, base)?;
                }
                self.next_position = base + index.count;
                let index_file = open_index(&path)?;
                self.sealed
                    .push_back(Sealed::new(path, file, index, index_file, durable()));
            }
            None if !is_last => {
                // Sealed, but its index is gone or damaged: a seal that a crash interrupted,
                // or damage to the index. A whole segment gets its index rebuilt; one with a
                // torn tail (its seal's fsync never happened) is cut and becomes the active
                // segment. Damage inside it is refused as always.
                let buf = read_whole(&path)?;
                let scanned = segment::scan(&path, &buf, base, true)?;
                // Short of the next segment's base (at a record boundary or torn): its seal's
                // fsync never happened.
                if scanned.torn_tail.is_some() || next_base != Some(base + scanned.count) {
                    drop(file);
                    if let Some(torn) = &scanned.torn_tail {
                        segment::cut(&path, torn.offset, self.opts.fsync)?;
                    }
                    log::warn!(
                        "message store: {} ends at position {} (a torn tail of {} bytes cut), \
                         short of the next segment: a seal a crash interrupted",
                        path.display(),
                        base + scanned.count - 1,
                        scanned.torn_tail.as_ref().map_or(0, |t| t.bytes_cut)
                    );
                    let file = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&path)
                        .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
                    opened.torn_tail = scanned.torn_tail.clone();
                    self.next_position = base + scanned.count;
                    self.active = Some(Active::from_scan(path, Arc::new(file), seq, base, scanned));
                    return Ok(true);
                }
                let (mut index, positions) = segment::index_of(seq, base, &scanned);
                let bytes = index.encode(&positions);
                segment::write_atomically(&segment::index_path(&path), &bytes, self.opts.fsync)?;
                log::warn!(
                    "message store: rebuilt the index of {} ({} messages)",
                    path.display(),
                    index.count
                );
                opened.indexes_rebuilt += 1;
                self.next_position = base + index.count;
                let index_file = open_index(&path)?;
                self.sealed
                    .push_back(Sealed::new(path, file, index, index_file, durable()));
            }
            None => {
                let stale_index = segment::index_path(&path);
                if stale_index.exists() {
                    fs::remove_file(&stale_index).map_err(|e| {
                        StorageError::io(format!("removing {}", stale_index.display()), e)
                    })?;
                }
                let buf = read_whole(&path)?;
                let scanned = segment::scan(&path, &buf, base, true)?;
                if let Some(torn) = &scanned.torn_tail {
                    segment::cut(&path, torn.offset, self.opts.fsync)?;
                    log::warn!(
                        "message store: cut a torn tail of {} bytes at offset {} of {}",
                        torn.bytes_cut,
                        torn.offset,
                        path.display()
                    );
                }
                opened.torn_tail = scanned.torn_tail.clone();
                self.next_position = base + scanned.count;
                self.active = Some(Active::from_scan(path, file, seq, base, scanned));
            }
        }
        Ok(false)
    }

    /// The first position still stored (1 before retention deleted anything; `next` when the
    /// store is empty).
    pub fn first_position(&self) -> u64 {
        if let Some(s) = self.sealed.front() {
            return s.index.base_position;
        }
        match &self.active {
            Some(a) => a.base_position,
            None => self.next_position,
        }
    }

    /// The last position stored; 0 for a store that never held a message.
    pub fn last_position(&self) -> u64 {
        self.next_position - 1
    }

    /// Messages stored (from `first_position` to `last_position`).
    pub fn len(&self) -> u64 {
        self.next_position - self.first_position()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sealed segments on disk (for tests and the status line).
    pub fn sealed_segments(&self) -> usize {
        self.sealed.len()
    }

    /// The store's directory (for messages that name it).
    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    /// Every segment, oldest first, as `(seq, base_position)`: the sealed ones and the active
    /// one (what a snapshot's manifest names).
    pub fn segments(&self) -> Vec<(u64, u64)> {
        let sealed = self
            .sealed
            .iter()
            .map(|s| (s.index.seq, s.index.base_position));
        let active = self.active.iter().map(|a| (a.seq, a.base_position));
        sealed.chain(active).collect()
    }

    /// Bytes the cache holds now (for tests of the memory bound).
    pub fn cached_bytes(&self) -> usize {
        self.cache_used
    }

    /// Appends `m`, whose position must be `last_position() + 1` (any position for an empty
    /// store: its first). Buffered: written by `flush` (or once enough is buffered), durable
    /// after `sync`. A wrong position or an unencodable message is the caller's bug, refused
    /// without poisoning the store.
    pub fn append(&mut self, m: &ChatMessage) -> Result<(), StorageError> {
        self.check_usable()?;
        let empty = self.sealed.is_empty() && self.active.is_none();
        if !format::encodable(m) || (!empty && m.position != self.next_position) {
            return Err(StorageError::invalid_input(format!(
                "message store: cannot append position {} (next is {})",
                m.position, self.next_position
            )));
        }
        if self.active.is_none() {
            self.start_segment(m.position)?;
        }
        let Some(active) = self.active.as_mut() else {
            return Err(StorageError::Poisoned("no active segment".into()));
        };
        let delta = active.count as u32;
        if active.count.is_multiple_of(SPARSE_EVERY) {
            active.sparse.push(active.size());
        }
        format::encode_message(&mut active.pending, m);
        match active.rooms.get_mut(&m.room) {
            Some(deltas) => deltas.push(delta),
            None => {
                active.rooms.insert(m.room.clone(), vec![delta]);
            }
        }
        active.count += 1;
        self.next_position = m.position + 1;
        if self.opts.cache_bytes > 0 {
            self.cache_used += message_bytes(m);
            self.cache.push_back(m.clone());
        }
        let (size, pending) = (active.size(), active.pending.len());
        if size >= self.opts.segment_bytes || active.count >= u64::from(u32::MAX) {
            self.seal()?;
        } else if pending >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered records to the active segment (not fsynced).
    pub fn flush(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        if let Some(active) = self.active.as_mut() {
            if !active.pending.is_empty() {
                if let Err(e) = active.file.write_all_at(&active.pending, active.written) {
                    let why = format!("writing {}: {e}", active.path.display());
                    self.failed = Some(why.clone());
                    return Err(StorageError::io(why, e));
                }
                active.written += active.pending.len() as u64;
                active.written_count = active.count;
                active.pending.clear();
            }
        }
        self.evict();
        Ok(())
    }

    /// Writes and fdatasyncs the buffered records: every message appended before is durable.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        let ticket = self.begin_sync()?;
        ticket.wait().inspect_err(|e| self.mark_failed(e))
    }

    /// The first half of [`History::sync`], for a caller that shares the store behind a lock
    /// and must not hold it through an fsync (the snapshot writer: the event loop appends
    /// under the same lock). Writes what is buffered and returns what is left to do, which
    /// [`SyncTicket::wait`] does without the store. Segments sealed meanwhile were fsynced
    /// by the seal itself, so once the ticket's wait returns Ok, every position up to
    /// [`SyncTicket::through`] is durable. If it fails, hand the error to
    /// [`History::mark_failed`]: after a failed fsync the kernel may have dropped the dirty
    /// pages, so the store must not be trusted again without a reopen.
    pub fn begin_sync(&mut self) -> Result<SyncTicket, StorageError> {
        self.flush()?;
        // Segments whose seal is pending are not durable yet either.
        let pending = self.sealed.iter().filter(|s| !s.is_durable());
        let files = pending
            .map(|s| (Arc::clone(&s.file), s.path.clone()))
            .chain(
                self.active
                    .iter()
                    .map(|a| (Arc::clone(&a.file), a.path.clone())),
            )
            .collect();
        Ok(SyncTicket {
            files,
            through: self.last_position(),
        })
    }

    /// Poisons the store after a failed [`SyncTicket::wait`] (see [`History::begin_sync`]).
    pub fn mark_failed(&mut self, error: &StorageError) {
        if self.failed.is_none() {
            self.failed = Some(error.to_string());
        }
    }

    /// Drops the oldest cached messages beyond `cache_bytes`, keeping any not yet written.
    fn evict(&mut self) {
        let written_last = match &self.active {
            Some(a) => a.written_last(),
            _ => self.last_position(),
        };
        while self.cache_used > self.opts.cache_bytes {
            match self.cache.front() {
                Some(m) if m.position <= written_last => {
                    self.cache_used -= message_bytes(m);
                    self.cache.pop_front();
                }
                _ => break,
            }
        }
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        if let Some(why) = &self.failed {
            return Err(StorageError::Poisoned(why.clone()));
        }
        match self.sealer.failure() {
            Some(why) => Err(StorageError::Poisoned(why)),
            None => Ok(()),
        }
    }

    /// Creates the active segment for position `base` (header written and, with fsync,
    /// durable before it gets its name).
    fn start_segment(&mut self, base: u64) -> Result<(), StorageError> {
        let seq = self.next_seq;
        let path = self.opts.dir.join(segment::segment_name(seq, base));
        let mut header = Vec::new();
        SegmentHeader {
            cluster_id: self.opts.cluster_id,
            seq,
            base_position: base,
        }
        .encode(&mut header);
        let poison = |this: &mut History, e: StorageError| {
            this.failed = Some(e.to_string());
            e
        };
        if let Err(e) = segment::write_atomically(&path, &header, self.opts.fsync) {
            return Err(poison(self, e));
        }
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => Arc::new(file),
            Err(e) => {
                let e = StorageError::io(format!("opening {}", path.display()), e);
                return Err(poison(self, e));
            }
        };
        self.next_seq = seq + 1;
        self.active = Some(Active {
            path,
            file,
            seq,
            base_position: base,
            count: 0,
            written_count: 0,
            written: header.len() as u64,
            pending: Vec::new(),
            sparse: Vec::new(),
            rooms: BTreeMap::new(),
        });
        Ok(())
    }

    /// Seals the active segment: writes and fsyncs it, then writes its index. The next
    /// append starts a new segment.
    fn seal(&mut self) -> Result<(), StorageError> {
        self.flush()?;
        let Some(active) = self.active.take() else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let result = (|| -> Result<(SealedIndex, SealJob), StorageError> {
            let mut index = SealedIndex {
                seq: active.seq,
                base_position: active.base_position,
                count: active.count,
                data_len: active.written,
                sparse: active.sparse.clone(),
                rooms: Vec::with_capacity(active.rooms.len()),
            };
            let mut positions = Vec::with_capacity(active.rooms.len());
            for (room, deltas) in &active.rooms {
                index.rooms.push(format::RoomEntry {
                    room: room.clone(),
                    count: 0,
                    offset: 0,
                    crc: 0,
                });
                positions.push(deltas.clone());
            }
            let bytes = index.encode(&positions);
            // Written here, made durable and named by the sealing thread (`sealer`).
            let index_path = segment::index_path(&active.path);
            let index_tmp = index_path.with_extension("idx.tmp");
            let io = |what: &str, e| StorageError::io(format!("{what} {}", index_tmp.display()), e);
            let index_file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&index_tmp)
                .map_err(|e| io("creating", e))?;
            index_file
                .write_all_at(&bytes, 0)
                .map_err(|e| io("writing", e))?;
            let job = SealJob {
                segment: Arc::clone(&active.file),
                segment_path: active.path.clone(),
                index: Arc::new(index_file),
                index_tmp,
                index_path,
                fsync: self.opts.fsync,
                durable: Arc::new(AtomicBool::new(false)),
            };
            Ok((index, job))
        })();
        match result {
            Ok((index, job)) => {
                log::info!(
                    "message store: sealing {} ({} messages, {} bytes), {:.1} ms on this thread",
                    active.path.display(),
                    index.count,
                    index.data_len,
                    started.elapsed().as_secs_f64() * 1e3,
                );
                self.sealed.push_back(Sealed::new(
                    active.path,
                    active.file,
                    index,
                    Arc::clone(&job.index),
                    Arc::clone(&job.durable),
                ));
                self.sealer.submit(job);
                self.evict();
                Ok(())
            }
            Err(e) => {
                self.failed = Some(e.to_string());
                self.active = Some(active);
                Err(e)
            }
        }
    }

    /// Blocks until every seal started so far is durable (or failed: the store is then
    /// poisoned). For tests and for callers that want retention to see every sealed segment.
    pub fn wait_for_seals(&self) {
        self.sealer.wait();
    }

    /// Deletes every sealed segment whose messages all lie before `position`, oldest first;
    /// returns how many. The active segment is never deleted, so positions are never reused;
    /// nor is one whose seal is still pending (`wait_for_seals` first to include those).
    pub fn drop_before(&mut self, position: u64) -> Result<usize, StorageError> {
        self.check_usable()?;
        let mut dropped = 0;
        while let Some(front) = self.sealed.front() {
            // A segment whose seal is pending is kept until it is durable (see `sealer`).
            if front.index.base_position + front.index.count > position || !front.is_durable() {
                break;
            }
            let Some(front) = self.sealed.pop_front() else {
                break;
            };
            // The segment goes first: an index left behind by a crash is removed on open.
            for path in [front.path.clone(), segment::index_path(&front.path)] {
                fs::remove_file(&path)
                    .map_err(|e| StorageError::io(format!("removing {}", path.display()), e))?;
            }
            dropped += 1;
        }
        if dropped > 0 && self.opts.fsync {
            segment::sync_dir(&self.opts.dir)?;
        }
        Ok(dropped)
    }

    /// The message at `position`; `None` outside `first_position..=last_position`.
    pub fn get(&self, position: u64) -> Result<Option<ChatMessage>, StorageError> {
        let mut found = self.read_range(position, 1)?;
        Ok(found.pop().filter(|m| m.position == position))
    }

    /// Up to `max` messages from `position` on (from the first stored one when `position` is
    /// older), in position order: from the cache where it has them, else from disk.
    pub fn read_range(&self, position: u64, max: usize) -> Result<Vec<ChatMessage>, StorageError> {
        let mut out = Vec::new();
        let mut at = position.max(self.first_position());
        let cache_first = self
            .cache
            .front()
            .map_or(self.next_position, |m| m.position);
        while out.len() < max && at < cache_first {
            let before = out.len();
            self.read_disk(at, &mut |m| {
                let more = m.position + 1 < cache_first;
                out.push(m);
                more && out.len() < max
            })?;
            match out.last() {
                Some(last) if out.len() > before => at = last.position + 1,
                _ => break,
            }
        }
        if out.len() < max && at >= cache_first {
            let skip = usize::try_from(at - cache_first).unwrap_or(usize::MAX);
            out.extend(self.cache.iter().skip(skip).take(max - out.len()).cloned());
        }
        Ok(out)
    }

    /// Reads from the segment holding `position` on, to the end of that segment or until
    /// `take` says stop.
    fn read_disk(
        &self,
        position: u64,
        take: &mut dyn FnMut(ChatMessage) -> bool,
    ) -> Result<(), StorageError> {
        let k = self
            .sealed
            .partition_point(|s| s.index.base_position + s.index.count <= position);
        match (self.sealed.get(k), &self.active) {
            (Some(s), _) => read_segment(
                &s.file,
                &s.path,
                s.index.data_len,
                s.index.base_position,
                &s.sparse,
                position,
                take,
            ),
            (None, Some(a)) => read_segment(
                &a.file,
                &a.path,
                a.written,
                a.base_position,
                &a.sparse,
                position,
                take,
            ),
            (None, None) => Ok(()),
        }
    }

    /// Messages stored for `room` (the index's count over every segment).
    pub fn room_len(&self, room: &str) -> u64 {
        let sealed: u64 = self
            .sealed
            .iter()
            .filter_map(|s| room_entry(&s.index, room))
            .map(|e| u64::from(e.count))
            .sum();
        let active = self
            .active
            .as_ref()
            .and_then(|a| a.rooms.get(room))
            .map_or(0, |d| d.len() as u64);
        sealed + active
    }

    /// The last `max` messages of `room` with a position below `before`, oldest first (the
    /// room's newest page with `before = u64::MAX`).
    pub fn room_page(
        &self,
        room: &str,
        before: u64,
        max: usize,
    ) -> Result<Vec<ChatMessage>, StorageError> {
        let mut newest_first: Vec<u64> = Vec::new();
        if let Some(a) = &self.active {
            if let Some(deltas) = a.rooms.get(room) {
                let positions = deltas.iter().rev().map(|&d| a.base_position + u64::from(d));
                newest_first.extend(positions.filter(|&p| p < before).take(max));
            }
        }
        for s in self.sealed.iter().rev() {
            if newest_first.len() >= max {
                break;
            }
            if s.index.base_position >= before {
                continue;
            }
            let Some(entry) = room_entry(&s.index, room) else {
                continue;
            };
            let index_path = segment::index_path(&s.path);
            let wanted = max - newest_first.len();
            newest_first.extend(room_positions_before(
                &s.index_file,
                &index_path,
                entry,
                s.index.base_position,
                before,
                wanted,
            )?);
        }
        let mut out = Vec::with_capacity(newest_first.len());
        for &position in newest_first.iter().rev() {
            match self.get(position)? {
                Some(m) if m.room == room => out.push(m),
                _ => {
                    return Err(StorageError::corrupt(
                        &self.opts.dir,
                        position,
                        format!("the room index of {room} names position {position}, which does not hold a message of the room"),
                    ))
                }
            }
        }
        Ok(out)
    }

    /// A view of every message appended so far, for another thread (see [`HistoryReader`]).
    /// Writes what is buffered first.
    pub fn reader(&mut self) -> Result<HistoryReader, StorageError> {
        self.flush()?;
        let mut segments: Vec<View> = self.sealed.iter().map(Sealed::view).collect();
        if let Some(a) = &self.active {
            segments.push(View {
                path: a.path.clone(),
                file: Arc::clone(&a.file),
                base_position: a.base_position,
                count: a.written_count,
                data_len: a.written,
                sparse: Arc::from(a.sparse.as_slice()),
            });
        }
        Ok(HistoryReader { segments })
    }

    /// Reads and checks every record on disk (sealed and active): the count, or the first
    /// damage as `Corrupt` with the file and offset.
    pub fn verify(&self) -> Result<u64, StorageError> {
        let mut total = 0;
        for s in &self.sealed {
            total += segment::verify(&s.path, &read_whole(&s.path)?, s.index.base_position)?;
        }
        if let Some(a) = &self.active {
            let buf = read_whole(&a.path)?;
            let len = usize::try_from(a.written)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            total += segment::verify(&a.path, &buf[..len], a.base_position)?;
        }
        Ok(total)
    }
}

/// An fsync of the active segment taken out of the store ([`History::begin_sync`]), so the
/// store's lock need not be held while the disk works.
#[derive(Debug)]
pub struct SyncTicket {
    /// The active segment and any whose seal is pending.
    files: Vec<(Arc<File>, PathBuf)>,
    through: u64,
}

impl SyncTicket {
    /// Every position up to this is durable once [`SyncTicket::wait`] returns Ok.
    pub fn through(&self) -> u64 {
        self.through
    }

    /// Makes the segment durable (blocks for the fsync).
    pub fn wait(self) -> Result<(), StorageError> {
        for (file, path) in self.files {
            file.sync_data()
                .map_err(|e| StorageError::io(format!("fsync {}", path.display()), e))?;
        }
        Ok(())
    }
}

/// A read-only view of the store's messages as they were when [`History::reader`] took it:
/// `Send + 'static`, so a thread can read while the store goes on (the snapshot writer, reads
/// off the event loop). It shares the open files: a segment that retention deletes meanwhile
/// stays readable through it, and later appends are not seen. Holds one sparse index per
/// segment (shared with the store, copied for the active one) and no cache.
#[derive(Clone, Debug)]
pub struct HistoryReader {
    segments: Vec<View>,
}

impl HistoryReader {
    /// The first position it can read (`last_position() + 1` when it holds none).
    pub fn first_position(&self) -> u64 {
        self.segments
            .first()
            .map_or(self.last_position() + 1, |v| v.base_position)
    }

    /// The last position it can read; 0 for an empty view.
    pub fn last_position(&self) -> u64 {
        self.segments
            .last()
            .map_or(0, |v| (v.base_position + v.count).saturating_sub(1))
    }

    /// Up to `max` messages from `position` on, in position order, from disk.
    pub fn read_range(&self, position: u64, max: usize) -> Result<Vec<ChatMessage>, StorageError> {
        let mut out = Vec::new();
        let last = self.last_position();
        let mut at = position.max(self.first_position());
        while out.len() < max && at <= last {
            let k = self
                .segments
                .partition_point(|v| v.base_position + v.count <= at);
            let Some(view) = self.segments.get(k) else {
                break;
            };
            let before = out.len();
            view.read(at, &mut |m| {
                out.push(m);
                out.len() < max
            })?;
            match out.last() {
                Some(m) if out.len() > before => at = m.position + 1,
                _ => break,
            }
        }
        Ok(out)
    }
}

fn room_entry<'a>(index: &'a SealedIndex, room: &str) -> Option<&'a format::RoomEntry> {
    index
        .rooms
        .binary_search_by(|e| e.room.as_str().cmp(room))
        .ok()
        .and_then(|k| index.rooms.get(k))
}

/// The newest `wanted` positions below `before` of a room's entry in a sealed segment's index
/// (open as `index_file`, named `index_path` in errors), newest first.
fn room_positions_before(
    index_file: &File,
    index_path: &Path,
    entry: &format::RoomEntry,
    base_position: u64,
    before: u64,
    wanted: usize,
) -> Result<Vec<u64>, StorageError> {
    let len = usize::try_from(entry.count).unwrap_or(usize::MAX) * 4;
    let mut bytes = vec![0; len];
    index_file
        .read_exact_at(&mut bytes, entry.offset)
        .map_err(|e| StorageError::io(format!("reading {}", index_path.display()), e))?;
    let positions = format::decode_room_positions(entry, base_position, &bytes)
        .map_err(|reason| StorageError::corrupt(index_path, entry.offset, reason))?;
    Ok(positions
        .iter()
        .rev()
        .copied()
        .filter(|&p| p < before)
        .take(wanted)
        .collect())
}

/// The flag of a segment found sealed on open: durable already.
fn durable() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(true))
}

/// The index file of the segment at `segment`, open for reads.
fn open_index(segment: &Path) -> Result<Arc<File>, StorageError> {
    let path = segment::index_path(segment);
    File::open(&path)
        .map(Arc::new)
        .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))
}

fn read_whole(path: &Path) -> Result<Vec<u8>, StorageError> {
    fs::read(path).map_err(|e| StorageError::io(format!("reading {}", path.display()), e))
}

#[cfg(test)]
mod tests;
