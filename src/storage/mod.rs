//! Durable Raft state: the segmented write-ahead log that holds the entries and the hard state,
//! and the snapshot files of the state machine.
//!
//! This module owns the data directory: segment files, their records, recovery after a crash,
//! snapshot files, and the fsync discipline. It never knows about sockets, chat, or Raft's rules
//! beyond the shape of `Entry` and `HardState` (a snapshot body is opaque bytes); the core
//! decides *what* to persist, this module makes it durable.
//!
//! # On disk
//!
//! ```text
//! <dir>/LOCK                                        held (flock) while a Wal is open
//! <dir>/CLUSTER                                     cluster id, node id, bootstrap members
//!                                                   (text with a crc32c; `identity.rs`)
//! <dir>/wal-<seq:020>-<base_index:020>.log          one segment; seq counts up from 1
//!
//! segment = header record*
//! header  = magic "RCHATWAL" | version u32 | crc32c u32 (of the next 32 bytes)
//!           | cluster_id u64 | node_id u64 | seq u64 | base_index u64          (48 bytes, LE)
//! record  = body_len u32 | crc32c u32 (of body_len and body) | body
//! body    = type u8 | payload
//!   1 entry        term u64 | index u64 | kind u8 | data
//!   2 hard state   term u64 | voted_for u64 | has_vote u8 | commit u64
//!   3 truncate     index u64: "every entry >= index is gone; the next entry is index"
//!   4 reset        next_index u64: "every entry is gone (a snapshot covers them); the next
//!                  entry is next_index", which may lie beyond the log's end
//! ```
//!
//! Records are applied in order, segment after segment (ordered by `seq`). A segment's
//! `base_index` is the writer's last index + 1 when the segment was started; it is in the name
//! for people and in the header for recovery, which checks it against the replayed log (a
//! mismatch is a gap: corrupt). A segment started after a reset has the reset's `next_index`
//! (plus the entries since) as its base, so the rule holds across resets. The name also
//! carries `seq` because overwriting a suffix can make a later segment start at a lower index
//! than an earlier one.
//!
//! Every segment starts with a hard-state record (the current one), so deleting old segments in
//! `drop_prefix` never loses the term or the vote.
//!
//! ## Snapshots (`snapshot.rs`, [`SnapshotStore`]), in their own directory
//!
//! ```text
//! <snapdir>/snap-<index:020>-<term:020>.snap        one complete snapshot
//! <snapdir>/snap-...snap.<create|receive>.tmp       being written; deleted by SnapshotStore::open
//!
//! file    = header body
//! header  = magic "RCHATSNP" | version u32 | cluster_id u64 | index u64 | term u64
//!           | body_len u64 | body_crc32c u32 | header_crc32c u32 (of the 48 bytes before it)
//!                                                                            (52 bytes, LE)
//! body    = body_len bytes, opaque here (the chat state machine's encoding, `chat::snapshot`)
//! ```
//!
//! No node id: a snapshot travels from a leader to followers as the whole file, header
//! included, and is checked on arrival (magic, version, cluster, both checksums, and that the
//! header names the announced index and term) before it is renamed into place. A file only gets
//! its final name after it is complete and fsynced (then the directory is fsynced), so a crash
//! leaves either a complete file or a `.tmp`. The newest by index is the one that counts; if it
//! is damaged, `latest` reports `Corrupt` rather than silently using an older one.
//!
//! # Guarantees
//!
//! - After `sync` returns Ok, everything appended and set before it survives a crash.
//! - A crash during a write leaves some prefix of the unsynced records (record granularity).
//!   Within one sync batch the hard state record is written after the batch's entries, so a
//!   surviving prefix never holds a `commit` beyond its own entries.
//! - Recovery cuts an incomplete or corrupt last record of the last segment (a torn tail), and
//!   refuses to open (`StorageError::Corrupt`) when a bad record is followed by any valid one:
//!   data is never dropped silently.
//! - After any write or fsync error the `Wal` is poisoned: a failed fsync may have discarded
//!   dirty pages, so retrying could report durable what is not. Restart and recover instead.
//!
//! # Driving it
//!
//! Inline, the simplest: one write and one fdatasync per loop turn.
//!
//! ```text
//! wal.append(&rd.entries)?;
//! if let Some(hs) = rd.hard_state { wal.set_hard_state(hs)?; }
//! wal.sync()?;                                   // durable now
//! ```
//!
//! With a helper thread, so the event loop never waits for the disk (`benches/wal.rs` measures
//! both; with two jobs in flight it is up to 2x faster for large batches and never slower):
//!
//! ```text
//! wal.append(&rd.entries)?; wal.set_hard_state(hs)?;
//! let job = wal.write_buffered()?;               // one write(2), returns at once
//! to_syncer.send((job, rd.number));              // helper: job.run(); send back; waker.wake()
//! ...                                            // keep serving; more batches may be written
//! let durable_index = wal.synced(job)?;          // on the waker, in order: now durable
//! ```

mod identity;
pub(crate) mod record;
mod recovery;
mod segment;
mod snapshot;
mod wal;

pub use identity::{identity_path, load_identity, store_identity, ClusterIdentity};
pub use snapshot::{
    SnapshotFile, SnapshotReceiver, SnapshotStore, SnapshotWriter, SNAPSHOT_FILE_VERSION,
    SNAPSHOT_HEADER_LEN,
};
pub use wal::{remove_in_order, SyncJob, Wal};

use crate::raft::{Entry, HardState, Index};
use std::fmt;
use std::path::PathBuf;

/// When `sync` really syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fdatasync on every `sync`, and fsync the directory when segments come and go.
    Always,
    /// Never fsync. Unsafe: a power loss can lose acknowledged writes. For experiments only.
    Never,
}

/// Where and how a `Wal` keeps its data.
#[derive(Clone, Debug)]
pub struct WalOptions {
    pub dir: PathBuf,
    /// Stamped in every segment header; a directory written by another node is refused.
    pub cluster_id: u64,
    pub node_id: u64,
    /// A segment is closed once it holds at least this many bytes; the batch that crosses the
    /// limit still goes into it whole (one write per sync), so a segment may exceed it by a batch.
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
}

impl WalOptions {
    /// 64 MiB segments, fsync always.
    pub fn new(dir: impl Into<PathBuf>, cluster_id: u64, node_id: u64) -> WalOptions {
        WalOptions {
            dir: dir.into(),
            cluster_id,
            node_id,
            segment_bytes: 64 << 20,
            fsync: FsyncPolicy::Always,
        }
    }
}

/// What `Wal::open` found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub hard_state: HardState,
    /// The durable log, contiguous, `entries[k].index == first_index + k`.
    pub entries: Vec<Entry>,
    /// The index of the first entry kept (after `drop_prefix`, or `snapshot_index + 1` after
    /// `reset_after_snapshot`); `last + 1` when the log is empty.
    pub first_index: Index,
    /// Set when recovery cut an incomplete or corrupt last record: worth a line in the log.
    pub torn_tail: Option<TornTail>,
}

/// The torn tail recovery removed: `bytes_cut` bytes from `offset` to the end of `file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub file: PathBuf,
    pub offset: u64,
    pub bytes_cut: u64,
}

/// Everything that can go wrong in the storage layer.
#[derive(Debug)]
pub enum StorageError {
    /// An operating-system call failed. `context` says which and on what.
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The data on disk is damaged or inconsistent at `offset` of `file`.
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The data directory belongs to another (cluster_id, node_id).
    WrongIdentity {
        expected: (u64, u64),
        found: (u64, u64),
    },
    /// An earlier write or fsync failed; this `Wal` accepts nothing more. The string says why.
    Poisoned(String),
}

impl StorageError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> StorageError {
        StorageError::Io {
            context: context.into(),
            source,
        }
    }

    /// A caller's mistake (e.g. non-contiguous entries): reported as `Io` with `InvalidInput`,
    /// and it does not poison the `Wal`.
    pub(crate) fn invalid_input(context: impl Into<String>) -> StorageError {
        let context = context.into();
        StorageError::Io {
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, context.clone()),
            context,
        }
    }

    pub(crate) fn corrupt(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> StorageError {
        StorageError::Corrupt {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { context, source } => write!(f, "{context}: {source}"),
            StorageError::Corrupt {
                file,
                offset,
                reason,
            } => write!(
                f,
                "corrupt data in {} at offset {offset}: {reason}",
                file.display()
            ),
            StorageError::WrongIdentity { expected, found } => write!(
                f,
                "data directory belongs to cluster {} node {}, not cluster {} node {}",
                found.0, found.1, expected.0, expected.1
            ),
            StorageError::Poisoned(why) => {
                write!(
                    f,
                    "write-ahead log unusable after an earlier failure: {why}"
                )
            }
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
