//! The write-ahead log a Raft node persists into: buffered appends, group commit, reads by
//! index, prefix deletion, and the poison rule.
//!
//! This file owns the live state of an open log: the segments, the in-memory offset index and
//! the buffer of records not yet written. It never retries a failed write or fsync, and it never
//! decides what to persist (the Raft core does).
//!
//! Invariants (checked by `debug_check`):
//! - `locations[k]` is the record of entry `first_index + k`; locations are in (seq, offset)
//!   order, because entries in later segments were written later.
//! - `segments` have consecutive seq; the back one is the newest file on disk and is never
//!   deleted while open.
//! - The pending buffer targets exactly one segment (`pending_target`), so a sync is one write.

use super::record::{self, SegmentHeader, HARD_STATE_RECORD_LEN, HEADER_LEN};
use super::recovery::{self, Location};
use super::segment::{self, Segment};
use super::{FsyncPolicy, Recovered, StorageError, WalOptions};
use crate::raft::{Entry, HardState, Index};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the pending buffer will be written.
#[derive(Clone, Copy, Debug)]
struct Target {
    seq: u64,
    /// File offset of `pending[0]`.
    start_offset: u64,
    /// `Some(base_index)` when the segment is still to be created (at write time).
    new_segment_base: Option<Index>,
}

/// A segmented write-ahead log holding the Raft log and hard state. See the module docs of
/// `storage` for the format and the guarantees.
pub struct Wal {
    opts: WalOptions,
    /// Held for the life of the Wal: a second process on the same directory is refused.
    _lock: File,
    segments: VecDeque<Segment>,
    first_index: Index,
    locations: VecDeque<Location>,
    /// The last hard state encoded into a written record; each new segment starts with it.
    hard_state_written: HardState,
    /// Records appended but not yet written, all for `pending_target`.
    pending: Vec<u8>,
    pending_target: Option<Target>,
    /// Written after the batch's entries, so no surviving prefix commits beyond its entries.
    pending_hard_state: Option<HardState>,
    /// Counts writes and truncations; `durable_*` say how many of them an fsync has covered.
    write_count: u64,
    durable_write_count: u64,
    truncate_count: u64,
    durable_truncate_count: u64,
    /// Bytes written to segments since open (records and hard states), for the counters.
    bytes_written: u64,
    failed: Option<String>,
    read_buf: Vec<u8>,
}

/// The fdatasync of one `Wal::write_buffered`, to run on a helper thread and hand back to
/// `Wal::synced`. `Send`; it holds its own handle to the file.
#[derive(Debug)]
pub struct SyncJob {
    /// `None` when there is nothing to sync (FsyncPolicy::Never).
    file: Option<Arc<File>>,
    last_index: Index,
    write_count: u64,
    truncate_count: u64,
    result: Option<io::Result<()>>,
    /// How long this job's own fdatasync took; `None` if it had none (covered by a later job,
    /// or nothing to sync).
    fsync_duration: Option<std::time::Duration>,
}

impl SyncJob {
    /// fdatasync the written data. Blocks; meant for a helper thread. Running twice is harmless.
    pub fn run(&mut self) {
        if self.result.is_none() {
            self.result = Some(match &self.file {
                Some(file) => {
                    let started = std::time::Instant::now();
                    let result = file.sync_data();
                    self.fsync_duration = Some(started.elapsed());
                    result
                }
                None => Ok(()),
            });
        }
    }

    /// How long this job's own fdatasync took, if it ran one.
    pub fn fsync_duration(&self) -> Option<std::time::Duration> {
        self.fsync_duration
    }

    /// The log's last index when the job was made: durable once the job succeeds.
    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// Group commit: marks this job done by `later`'s fdatasync, which must have run and must
    /// belong to a later write of the same log. That fdatasync started after this job's write
    /// (jobs are made after their write), and rolling to a new segment syncs the old one, so
    /// it covers this job's bytes too. A failure of `later` is this job's failure.
    pub fn complete_with(&mut self, later: &SyncJob) {
        assert!(
            later.write_count >= self.write_count,
            "a job is completed only by a later one"
        );
        if self.result.is_some() {
            return;
        }
        self.result = match &later.result {
            Some(Ok(())) => Some(Ok(())),
            Some(Err(e)) => Some(Err(io::Error::new(e.kind(), e.to_string()))),
            None => None, // `later` has not run: this job will run itself in `Wal::synced`
        };
    }
}

impl Wal {
    /// Opens the log in `opts.dir`, creating the directory and a first segment if needed, and
    /// recovers what is there: the durable hard state and entries, cutting a torn tail.
    pub fn open(opts: WalOptions) -> Result<(Wal, Recovered), StorageError> {
        let fsync = opts.fsync == FsyncPolicy::Always;
        if !opts.dir.is_dir() {
            fs::create_dir_all(&opts.dir)
                .map_err(|e| StorageError::io(format!("creating {}", opts.dir.display()), e))?;
            if let (Some(parent), true) = (opts.dir.parent(), fsync) {
                if !parent.as_os_str().is_empty() {
                    segment::sync_dir(parent)?;
                }
            }
        }
        let lock = lock_dir(&opts)?;
        let mut log = recovery::recover(&opts)?;
        if log.segments.is_empty() {
            let header = SegmentHeader {
                cluster_id: opts.cluster_id,
                node_id: opts.node_id,
                seq: 1,
                base_index: log.first_index,
            };
            let first = segment::create(&opts.dir, header, &log.hard_state, fsync)?;
            log.segments.push_back(first);
        }
        let wal = Wal {
            opts,
            _lock: lock,
            segments: log.segments,
            first_index: log.first_index,
            locations: log.locations,
            hard_state_written: log.hard_state,
            pending: Vec::new(),
            pending_target: None,
            pending_hard_state: None,
            write_count: 0,
            durable_write_count: 0,
            truncate_count: 0,
            durable_truncate_count: 0,
            bytes_written: 0,
            failed: None,
            read_buf: Vec::new(),
        };
        wal.debug_check();
        let recovered = Recovered {
            hard_state: log.hard_state,
            entries: log.entries,
            first_index: log.first_index,
            torn_tail: log.torn_tail,
        };
        Ok((wal, recovered))
    }

    /// Buffers `entries` (contiguous indexes). If `entries[0].index <= last_index()`, the stored
    /// suffix from that index on is replaced: a truncate record goes first, so a crash leaves
    /// either the old suffix or a prefix of the new one. An index below `first_index()` restarts
    /// the log there. Nothing reaches the disk before `sync` or `write_buffered`.
    ///
    /// Non-contiguous entries, a gap after `last_index()`, index 0 or oversized data are the
    /// caller's bug: `Io` with `InvalidInput`, and the Wal stays usable.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_usable()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        self.validate_append(entries)?;
        let target = self.target();
        if first.index <= self.last_index() {
            record::encode_truncate(&mut self.pending, first.index);
            self.truncate_count += 1;
            if first.index < self.first_index {
                self.locations.clear();
                self.first_index = first.index;
            } else {
                self.locations
                    .truncate((first.index - self.first_index) as usize);
            }
        }
        for entry in entries {
            let offset = target.start_offset + self.pending.len() as u64;
            record::encode_entry(&mut self.pending, entry);
            self.locations.push_back(Location {
                seq: target.seq,
                offset,
                len: record::entry_record_len(entry) as u32,
            });
        }
        debug_assert_eq!(self.last_index(), entries[entries.len() - 1].index);
        Ok(())
    }

    /// After installing a snapshot that covers every entry through `snapshot_index`: buffers a
    /// reset record meaning "every entry is gone; the next entry is `snapshot_index + 1`",
    /// whether that is below, at or beyond `last_index() + 1`. Afterwards the log is empty
    /// (`first_index() == snapshot_index + 1`, `last_index() == snapshot_index`) and `append`
    /// takes entries from `snapshot_index + 1` on.
    ///
    /// Like every record it is durable with the next `sync` (or `write_buffered` and its job);
    /// a crash before that leaves the old log. Until then `drop_prefix` deletes nothing; after
    /// it, `drop_prefix(snapshot_index)` deletes every segment before the one holding the reset.
    pub fn reset_after_snapshot(&mut self, snapshot_index: Index) -> Result<(), StorageError> {
        self.check_usable()?;
        let next_index = snapshot_index.saturating_add(1);
        if next_index > record::MAX_INDEX {
            return Err(StorageError::invalid_input(format!(
                "snapshot index {snapshot_index} out of range"
            )));
        }
        // The target (and a new segment's base index) is fixed before the log changes, as in
        // `append`: recovery checks a segment's base against the log *before* its records.
        self.target();
        record::encode_reset(&mut self.pending, next_index);
        self.truncate_count += 1;
        self.locations.clear();
        self.first_index = next_index;
        self.debug_check();
        Ok(())
    }

    /// Buffers the hard state; it is written with the next `sync` (after that batch's entries).
    pub fn set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        self.check_usable()?;
        self.pending_hard_state = Some(hs);
        Ok(())
    }

    /// Makes everything appended and set so far durable: one write of the buffer and one
    /// fdatasync (plus, once per segment, creating the next segment durably).
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        self.write_pending()?;
        if self.durable_write_count == self.write_count {
            return Ok(());
        }
        if self.opts.fsync == FsyncPolicy::Always {
            let active = self.active();
            if let Err(e) = active.file.sync_data() {
                let context = format!("fdatasync {}", active.path.display());
                return Err(self.poison(context, e));
            }
        }
        self.durable_write_count = self.write_count;
        self.durable_truncate_count = self.truncate_count;
        Ok(())
    }

    /// The first half of `sync`: writes the buffer (one write) and returns the fdatasync as a
    /// job for a helper thread, so the caller's loop keeps running during the disk flush. Later
    /// batches may be appended and written while jobs are in flight; hand each finished job to
    /// `synced`, in order.
    pub fn write_buffered(&mut self) -> Result<SyncJob, StorageError> {
        self.check_usable()?;
        self.write_pending()?;
        let file = match self.opts.fsync {
            FsyncPolicy::Always => Some(Arc::clone(&self.active().file)),
            FsyncPolicy::Never => None,
        };
        Ok(SyncJob {
            file,
            last_index: self.last_index(),
            write_count: self.write_count,
            truncate_count: self.truncate_count,
            result: None,
            fsync_duration: None,
        })
    }

    /// Takes back a job from `write_buffered` (running it here if nobody did). On success
    /// returns the index through which the log is now durable; a failed fdatasync poisons.
    pub fn synced(&mut self, mut job: SyncJob) -> Result<Index, StorageError> {
        self.check_usable()?;
        job.run();
        if let Some(Err(e)) = job.result {
            return Err(self.poison("fdatasync on the helper thread".to_string(), e));
        }
        // An fdatasync flushes every write to the file made before it started, and rolling to a
        // new segment syncs the old one: a finished job covers all writes up to its own.
        self.durable_write_count = self.durable_write_count.max(job.write_count);
        self.durable_truncate_count = self.durable_truncate_count.max(job.truncate_count);
        Ok(job.last_index)
    }

    pub fn first_index(&self) -> Index {
        self.first_index
    }

    /// Bytes written to the log's segments since it was opened.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    pub fn last_index(&self) -> Index {
        self.first_index + self.locations.len() as u64 - 1
    }

    /// The entry at `index`, read with one pread of its record (or from the unwritten buffer).
    /// `None` outside `first_index()..=last_index()`.
    pub fn read_entry(&mut self, index: Index) -> Result<Option<Entry>, StorageError> {
        self.check_usable()?;
        if index < self.first_index || index > self.last_index() {
            return Ok(None);
        }
        let location = self.locations[(index - self.first_index) as usize];
        let len = location.len as usize;
        let (bytes, path) = match self.pending_target {
            Some(t) if t.seq == location.seq && location.offset >= t.start_offset => {
                let start = (location.offset - t.start_offset) as usize;
                (&self.pending[start..start + len], None)
            }
            _ => {
                let front_seq = self.segments[0].seq;
                let segment = &self.segments[(location.seq - front_seq) as usize];
                self.read_buf.resize(len, 0);
                segment
                    .file
                    .read_exact_at(&mut self.read_buf, location.offset)
                    .map_err(|e| {
                        StorageError::io(format!("reading {}", segment.path.display()), e)
                    })?;
                (&self.read_buf[..], Some(&segment.path))
            }
        };
        let corrupt = |reason: String| {
            let file = path.cloned().unwrap_or_else(|| "<unwritten buffer>".into());
            StorageError::corrupt(file, location.offset, reason)
        };
        let (_, body) = record::check_frame(bytes).map_err(|e| corrupt(e.to_string()))?;
        match record::parse_body(body).map_err(corrupt)? {
            record::Record::Entry {
                term,
                index: found,
                kind,
                data,
            } if found == index => Ok(Some(Entry::new(term, index, kind, data))),
            other => Err(corrupt(format!("expected entry {index}, found {other:?}"))),
        }
    }

    /// Deletes whole segments that hold only entries `<= through` (never the newest segment),
    /// oldest first, each deletion made durable before the next, so a crash leaves a suffix of
    /// segments that replays on its own. `first_index()` afterwards is the first entry kept.
    /// Entries after `through` are always kept: a caller may keep a trailing window of the log
    /// by passing a `through` below `last_index()`.
    ///
    /// While an overwrite of a suffix (or a reset) is not yet durable, this deletes nothing:
    /// until then the overwritten entries are still part of the durable log. After a durable
    /// reset to `first_index()`, `through == first_index() - 1` deletes the segments before the
    /// one that holds the first live record.
    pub fn drop_prefix(&mut self, through: Index) -> Result<(), StorageError> {
        let paths = self.detach_prefix(through)?;
        if let Err(e) = remove_in_order(&paths, &self.opts.dir, self.opts.fsync) {
            return Err(self.poison_with(e));
        }
        Ok(())
    }

    /// `drop_prefix` without the deleting: forgets the same segments and returns their files,
    /// oldest first, for the caller to delete with [`remove_in_order`] (on another thread, say:
    /// unlinking large files and syncing the directory can take tens of milliseconds). Until
    /// they are deleted the files stay a valid prefix: a crash replays them, which is harmless.
    pub fn detach_prefix(&mut self, through: Index) -> Result<Vec<PathBuf>, StorageError> {
        self.check_usable()?;
        let mut paths = Vec::new();
        if through.saturating_add(1) < self.first_index
            || self.truncate_count != self.durable_truncate_count
        {
            return Ok(paths);
        }
        let newest_seq = self.active().seq;
        // The first entry to keep; every record before its segment is dead or dropped.
        let keep_from = (through + 1).max(self.first_index);
        let keep_seq = if keep_from <= self.last_index() {
            let holder = self.locations[(keep_from - self.first_index) as usize].seq;
            holder.min(newest_seq)
        } else {
            newest_seq
        };
        while self.segments[0].seq < keep_seq {
            if let Some(segment) = self.segments.pop_front() {
                paths.push(segment.path);
            }
        }
        while self.locations.front().is_some_and(|l| l.seq < keep_seq) {
            self.locations.pop_front();
            self.first_index += 1;
        }
        self.debug_check();
        Ok(paths)
    }

    /// Why the Wal refuses all work, if it does: the first write or fsync error.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        match &self.failed {
            Some(why) => Err(StorageError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn poison(&mut self, context: String, source: io::Error) -> StorageError {
        self.poison_with(StorageError::io(context, source))
    }

    fn poison_with(&mut self, error: StorageError) -> StorageError {
        if self.failed.is_none() {
            self.failed = Some(error.to_string());
        }
        error
    }

    fn active(&self) -> &Segment {
        self.segments.back().expect("a Wal always has a segment")
    }

    fn validate_append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let first = entries[0].index;
        let last_new = first.saturating_add(entries.len() as u64 - 1);
        if last_new > record::MAX_INDEX {
            return Err(StorageError::invalid_input(format!(
                "index {last_new} out of range"
            )));
        }
        if first == 0 || first > self.last_index() + 1 {
            return Err(StorageError::invalid_input(format!(
                "append at index {first} but the log ends at {}",
                self.last_index()
            )));
        }
        for (k, entry) in entries.iter().enumerate() {
            if entry.index != first + k as u64 {
                return Err(StorageError::invalid_input(format!(
                    "entries not contiguous: index {} at position {k} after {first}",
                    entry.index
                )));
            }
            if entry.data.len() > record::MAX_ENTRY_DATA_LEN {
                return Err(StorageError::invalid_input(format!(
                    "entry {} has {} bytes of data, more than {}",
                    entry.index,
                    entry.data.len(),
                    record::MAX_ENTRY_DATA_LEN
                )));
            }
        }
        Ok(())
    }

    /// Decides, for the first record of a batch, which segment the batch goes to: the active
    /// one, or a new one once the active one is full. The whole batch then goes there.
    fn target(&mut self) -> Target {
        if let Some(target) = self.pending_target {
            return target;
        }
        assert!(
            self.pending.is_empty(),
            "a batch without a target has no bytes yet"
        );
        let active = self.active();
        let target = if active.len_bytes >= self.opts.segment_bytes {
            Target {
                seq: active.seq + 1,
                start_offset: (HEADER_LEN + HARD_STATE_RECORD_LEN) as u64,
                new_segment_base: Some(self.last_index() + 1),
            }
        } else {
            Target {
                seq: active.seq,
                start_offset: active.len_bytes,
                new_segment_base: None,
            }
        };
        self.pending_target = Some(target);
        target
    }

    /// Writes the pending records and hard state with one write (creating the target segment
    /// first if it is new). Poisons on failure.
    fn write_pending(&mut self) -> Result<(), StorageError> {
        if self.pending.is_empty() && self.pending_hard_state.is_none() {
            return Ok(());
        }
        let target = self.target();
        if let Some(base_index) = target.new_segment_base {
            self.roll(target.seq, base_index)?;
        }
        if let Some(hs) = self.pending_hard_state.take() {
            record::encode_hard_state(&mut self.pending, &hs);
            self.hard_state_written = hs;
        }
        let active = self.segments.back().expect("a Wal always has a segment");
        // The batch goes exactly at the end of the active segment: anything else would
        // overwrite records or leave a hole.
        assert_eq!(active.seq, target.seq);
        assert_eq!(active.len_bytes, target.start_offset);
        if let Err(e) = active.file.write_all_at(&self.pending, target.start_offset) {
            let context = format!(
                "writing {} bytes to {} at offset {}",
                self.pending.len(),
                active.path.display(),
                target.start_offset
            );
            return Err(self.poison(context, e));
        }
        let active = self
            .segments
            .back_mut()
            .expect("a Wal always has a segment");
        active.len_bytes += self.pending.len() as u64;
        self.bytes_written += self.pending.len() as u64;
        self.write_count += 1;
        self.pending.clear();
        if self.pending.capacity() > PENDING_CAPACITY_KEPT {
            self.pending.shrink_to(PENDING_CAPACITY_KEPT);
        }
        self.pending_target = None;
        self.debug_check();
        Ok(())
    }

    /// Starts segment `seq`. The old segment is synced first, so no later segment ever holds
    /// data while an earlier one has a torn tail (recovery would call that corruption), and the
    /// new one is durable with its header and hard state before any batch goes into it.
    fn roll(&mut self, seq: u64, base_index: Index) -> Result<(), StorageError> {
        let fsync = self.opts.fsync == FsyncPolicy::Always;
        if fsync {
            let old = self.active();
            if let Err(e) = old.file.sync_data() {
                let context = format!("fdatasync {}", old.path.display());
                return Err(self.poison(context, e));
            }
        }
        let header = SegmentHeader {
            cluster_id: self.opts.cluster_id,
            node_id: self.opts.node_id,
            seq,
            base_index,
        };
        match segment::create(&self.opts.dir, header, &self.hard_state_written, fsync) {
            Ok(new) => {
                self.segments.push_back(new);
                Ok(())
            }
            Err(e) => Err(self.poison_with(e)),
        }
    }

    fn debug_check(&self) {
        if cfg!(debug_assertions) {
            debug_assert!(!self.segments.is_empty());
            debug_assert!(self.first_index >= 1);
            for pair in self.segments.iter().collect::<Vec<_>>().windows(2) {
                debug_assert_eq!(pair[1].seq, pair[0].seq + 1);
            }
            let front_seq = self.segments[0].seq;
            // The newest locations are the ones a write or a truncation just touched.
            let skip = self.locations.len().saturating_sub(1024);
            let mut previous: Option<&Location> = None;
            for location in self.locations.iter().skip(skip) {
                debug_assert!(location.seq >= front_seq);
                if let Some(p) = previous {
                    debug_assert!((p.seq, p.offset) < (location.seq, location.offset));
                }
                previous = Some(location);
            }
        }
    }
}

/// A huge batch may grow the buffer; give most of it back afterwards.
const PENDING_CAPACITY_KEPT: usize = 16 << 20;

/// Holds an exclusive lock on `<dir>/LOCK` (released by the kernel when the process dies).
fn lock_dir(opts: &WalOptions) -> Result<File, StorageError> {
    let path = opts.dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StorageError::io(
            format!("locking {}", path.display()),
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "the data directory is in use by another open Wal",
            ),
        )),
        Err(TryLockError::Error(e)) => {
            Err(StorageError::io(format!("locking {}", path.display()), e))
        }
    }
}

/// Deletes segment files detached by [`Wal::detach_prefix`], oldest first, each deletion made
/// durable (with `FsyncPolicy::Always`) before the next, so a crash leaves a suffix of segments
/// that replays on its own. Stops at the first failure: deleting a later file after an earlier
/// one failed would leave a gap.
pub fn remove_in_order(
    paths: &[PathBuf],
    dir: &Path,
    fsync: FsyncPolicy,
) -> Result<(), StorageError> {
    for path in paths {
        fs::remove_file(path)
            .map_err(|e| StorageError::io(format!("removing {}", path.display()), e))?;
        if fsync == FsyncPolicy::Always {
            segment::sync_dir(dir)?;
        }
    }
    Ok(())
}
