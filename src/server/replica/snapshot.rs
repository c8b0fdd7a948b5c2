//! Snapshots on a node: taking them without stalling the loop, and shipping them to followers
//! in chunks.
//!
//! It owns the node's snapshot directory, the helper thread that writes a snapshot, the
//! per-follower outgoing transfers and the one incoming transfer. It never decides *when* a
//! follower needs a snapshot (the core sends `InstallSnapshot` for that) and never changes the
//! state machine or the log: `node.rs` installs what arrives and compacts what was written.
//!
//! # Taking a snapshot
//!
//! Every `--snapshot-entries` applied entries the loop captures the chat state
//! (`StateMachine::capture`: full chunks of the chat log are shared, so the loop copies only the
//! key-value store, the session table and the last partial chunk) and hands it to a helper
//! thread that encodes it into `<data-dir>/snapshots/`, fsyncs and renames it into place. With
//! the message store the body is version 5 (the small state; the store holds the messages), and
//! the thread syncs the store before the file gets its name (`ChatSnapshot::sync_store`). When the
//! thread reports back (through the loop's waker), the loop tells the core (`Raft::compact`) and
//! detaches the log's segments before the kept window (`Wal::detach_prefix`); the janitor thread
//! frees the dropped entries and deletes those segments and older snapshots, off the loop.
//!
//! # Shipping one
//!
//! A leader answers the core's `InstallSnapshot` to follower `f` by streaming its latest
//! snapshot file as `SnapshotChunk` frames, at most `WINDOW_BYTES` beyond what `f` acknowledged
//! (`SnapshotAck`), so a slow follower never fills the link's buffer. Reads are `pread`s of
//! `CHUNK_BYTES` from an open file handle, so the file may be replaced meanwhile. The follower
//! writes chunks in order to a temporary file and acknowledges how much it holds; a transfer
//! that stops making progress (a broken connection, lost frames) resumes from the follower's
//! last acknowledged offset after `STALL`. A complete file is verified (checksums, meta) and
//! only then stepped into the follower's core as `InstallSnapshot`; the core answers through a
//! `Ready::snapshot` that `node.rs` installs.
//!
//! A version-5 file leaves the messages at positions `1..=stored_through` to the message store,
//! so it is small, but a follower whose store ends before `stored_through` cannot restore it.
//! Every received file arrives parked (`SnapshotReceiver::finish_parked`: verified, durable,
//! under `*.fetching.tmp`, which a restart deletes) and gets its name only in
//! `unpark_received`, just before it is installed; so no crash leaves a named snapshot the
//! store cannot back. A file that needs history stays parked while the replica
//! fetches the missing positions from the sender page by page (`fetch.rs`: `HistoryRequest`,
//! `HistoryPage`, `HistoryRefused`); once the store holds them it is unparked and installed as
//! above. That is the issue's "ships only the segments the follower lacks, and resumes per
//! segment", done per page: each page appended is progress that a broken link, a lost frame, a
//! leader change or a restart does not lose.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Waker;

use crate::chat::{peek_header, ChatSnapshot, BODY_HEADER_BYTES};
use crate::raft::{Entry, NodeId, SnapshotMeta, Term};
use crate::storage::{
    self, FsyncPolicy, SnapshotFile, SnapshotReceiver, SnapshotStore, StorageError,
};
use crate::wire::{self, SNAPSHOT_CHUNK_HEADER_BYTES};

/// Bytes of snapshot file per `SnapshotChunk` frame.
pub(super) const CHUNK_BYTES: usize = 256 * 1024;
/// Bytes a leader sends beyond the follower's last acknowledgement.
pub(super) const WINDOW_BYTES: u64 = 4 * CHUNK_BYTES as u64;
/// A transfer with no acknowledged progress for this long resends from the last acknowledged
/// offset (the connection broke, or frames were lost with it).
pub(super) const STALL: Duration = Duration::from_secs(2);
/// A transfer with no progress at all for this long is abandoned; the core asks again.
pub(super) const ABANDON: Duration = Duration::from_secs(30);

const _: () = assert!(CHUNK_BYTES + SNAPSHOT_CHUNK_HEADER_BYTES < wire::FRAME_BYTES_MAX);

/// A snapshot file on its way to one follower.
struct Outgoing {
    term: Term,
    meta: SnapshotMeta,
    file: Arc<File>,
    total_len: u64,
    /// Bytes sent (may run ahead of `acked` by at most `WINDOW_BYTES`).
    sent: u64,
    /// Bytes the follower said it holds.
    acked: u64,
    last_progress: Instant,
    started: Instant,
}

/// A snapshot file arriving from a leader.
struct Incoming {
    from: NodeId,
    receiver: SnapshotReceiver,
}

/// What a chunk meant for the follower.
pub(super) enum ChunkOutcome {
    /// Acknowledge `received` bytes to the sender.
    Ack { received: u64 },
    /// The file is complete and verified: acknowledge it all and step `InstallSnapshot`.
    Complete { term: Term, meta: SnapshotMeta },
}

/// The result of the helper thread that writes a snapshot.
type Written = Result<SnapshotFile, StorageError>;

/// What compaction leaves to clean up, done on the janitor thread so the loop never waits for
/// it: freeing the dropped entries, deleting the write-ahead log's detached segments (oldest
/// first, each durable before the next) and older snapshot files. Measured before it moved
/// there: up to 190 ms of the loop per snapshot under full load.
pub(super) struct Cleanup {
    pub entries: Vec<Entry>,
    /// Detached by `Wal::detach_prefix`, oldest first.
    pub segments: Vec<PathBuf>,
    /// Delete snapshot files older than this index.
    pub snapshots_before: u64,
}

/// Carries out `Cleanup`s in order, on the janitor thread (or inline if it cannot start).
struct Cleaner {
    store: SnapshotStore,
    wal_dir: PathBuf,
    fsync: FsyncPolicy,
    /// False after a segment deletion failed: deleting a later file while an earlier one is
    /// still there would leave a gap in the log, so none is deleted any more.
    segments_ok: bool,
}

impl Cleaner {
    fn run(&mut self, job: Cleanup) {
        drop(job.entries);
        if self.segments_ok {
            if let Err(e) = storage::remove_in_order(&job.segments, &self.wal_dir, self.fsync) {
                log::error!("log segments not deleted (disk use grows): {e}");
                self.segments_ok = false;
            }
        }
        if let Err(e) = self.store.remove_older_than(job.snapshots_before) {
            log::warn!("old snapshots not deleted: {e}");
        }
    }
}

/// Where cleanups go: the janitor thread, or the loop itself if the thread could not start.
enum Janitor {
    Thread(Sender<Cleanup>),
    Inline(Cleaner),
}

impl Janitor {
    fn start(store: &SnapshotStore, wal_dir: PathBuf, fsync: FsyncPolicy) -> Janitor {
        let cleaner = || Cleaner {
            store: store.clone(),
            wal_dir: wal_dir.clone(),
            fsync,
            segments_ok: true,
        };
        let (tx, rx) = mpsc::channel::<Cleanup>();
        let mut on_thread = cleaner();
        let spawned = std::thread::Builder::new()
            .name("janitor".into())
            .spawn(move || rx.into_iter().for_each(|job| on_thread.run(job)));
        match spawned {
            Ok(_) => Janitor::Thread(tx),
            Err(e) => {
                log::warn!("cannot start the janitor thread, cleaning on the loop: {e}");
                Janitor::Inline(cleaner())
            }
        }
    }
}

pub(super) struct Snapshots {
    store: SnapshotStore,
    /// The newest durable snapshot this node holds (its own or one installed from a leader).
    latest: Option<SnapshotFile>,
    /// A snapshot being written by the helper thread.
    writing: Option<SnapshotMeta>,
    written_tx: Sender<Written>,
    written_rx: Receiver<Written>,
    waker: Arc<Waker>,
    /// Indexed by node id.
    outgoing: Vec<Option<Outgoing>>,
    incoming: Option<Incoming>,
    /// A verified file stepped into the core, waiting for its `Ready::snapshot`.
    received: Option<SnapshotFile>,
    /// Where the parked received file (`park_received`) belongs.
    parked_from: Option<PathBuf>,
    fsync: FsyncPolicy,
    /// Scratch for chunk reads.
    chunk: Vec<u8>,
    janitor: Janitor,
}

impl Snapshots {
    /// Opens `dir` (removing leftovers of interrupted writes) and finds the latest snapshot.
    /// `wal_dir` is where the segments that compaction detaches live.
    pub(super) fn open(
        dir: PathBuf,
        wal_dir: PathBuf,
        cluster_id: u64,
        fsync: FsyncPolicy,
        members: usize,
        waker: Arc<Waker>,
    ) -> Result<Snapshots, StorageError> {
        let store = SnapshotStore::open(dir, cluster_id, fsync)?;
        let latest = store.latest()?;
        let (written_tx, written_rx) = mpsc::channel();
        let janitor = Janitor::start(&store, wal_dir, fsync);
        Ok(Snapshots {
            store,
            latest,
            writing: None,
            written_tx,
            written_rx,
            waker,
            outgoing: (0..members).map(|_| None).collect(),
            incoming: None,
            received: None,
            parked_from: None,
            fsync,
            chunk: Vec::new(),
            janitor,
        })
    }

    pub(super) fn latest(&self) -> Option<&SnapshotFile> {
        self.latest.as_ref()
    }

    pub(super) fn latest_meta(&self) -> Option<SnapshotMeta> {
        self.latest.as_ref().map(|f| f.meta)
    }

    pub(super) fn is_writing(&self) -> bool {
        self.writing.is_some()
    }

    /// Starts writing `capture` (the state at `meta.index`) on a helper thread.
    pub(super) fn start_write(&mut self, meta: SnapshotMeta, capture: ChatSnapshot) {
        debug_assert!(self.writing.is_none());
        self.writing = Some(meta);
        let writer = self.store.create(meta);
        let tx = self.written_tx.clone();
        let waker = Arc::clone(&self.waker);
        let spawned = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                let result = writer.and_then(|mut writer| {
                    capture
                        .write_to(&mut writer)
                        .map_err(|e| StorageError::io("writing a snapshot", e))?;
                    // Version 5: the store must hold what the body leaves out, durably,
                    // before the file gets its name (the log may then forget those entries).
                    capture
                        .sync_store()
                        .map_err(|e| StorageError::io("syncing the message store", e))?;
                    writer.finish()
                });
                let _ = tx.send(result);
                let _ = waker.wake();
            });
        if let Err(e) = spawned {
            log::error!("cannot start the snapshot thread: {e}");
            self.writing = None;
        }
    }

    /// The helper thread's result, once it is done.
    pub(super) fn take_written(&mut self) -> Option<(SnapshotMeta, Written)> {
        let result = self.written_rx.try_recv().ok()?;
        let meta = self.writing.take()?;
        Some((meta, result))
    }

    /// `file` is now the node's newest durable snapshot; `cleanup` (which deletes the older
    /// ones) runs on the janitor thread, in order with earlier cleanups.
    pub(super) fn set_latest(&mut self, file: SnapshotFile, cleanup: Cleanup) {
        self.latest = Some(file);
        match &mut self.janitor {
            Janitor::Thread(tx) => {
                if let Err(mpsc::SendError(job)) = tx.send(cleanup) {
                    log::error!(
                        "the janitor thread is gone; {} segments kept",
                        job.segments.len()
                    );
                }
            }
            Janitor::Inline(cleaner) => cleaner.run(cleanup),
        }
    }

    // ----- leader side ---------------------------------------------------------------------

    /// The core asked for a snapshot to reach `to` (in `term`). A transfer already under way
    /// continues; otherwise one starts with the latest snapshot.
    pub(super) fn want_send(&mut self, to: NodeId, term: Term, now: Instant) {
        // Members come and go (issue 16): the table grows to the highest id asked for. Ids are
        // below `server::NODE_ID_MAX`, so it stays small.
        let Ok(at) = usize::try_from(to) else {
            return;
        };
        if at >= self.outgoing.len() && to < crate::server::NODE_ID_MAX {
            self.outgoing.resize_with(at + 1, || None);
        }
        let Some(slot) = self.outgoing.get_mut(at) else {
            return;
        };
        if slot.as_ref().is_some_and(|o| o.term == term) {
            return;
        }
        let Some(latest) = &self.latest else {
            log::error!("asked to send a snapshot to node {to}, but this node has none");
            return;
        };
        let file = match latest.open_raw() {
            Ok(file) => file,
            Err(e) => {
                log::error!("cannot open snapshot {}: {e}", latest.path.display());
                return;
            }
        };
        log::info!(
            "sending snapshot at index {} ({} bytes) to node {to}",
            latest.meta.index,
            latest.len
        );
        *slot = Some(Outgoing {
            term,
            meta: latest.meta,
            file: Arc::new(file),
            total_len: latest.len,
            sent: 0,
            acked: 0,
            last_progress: now,
            started: now,
        });
    }

    /// This node stopped leading: its transfers end (a new leader sends its own).
    pub(super) fn stop_sending(&mut self) {
        self.outgoing.iter_mut().for_each(|o| *o = None);
    }

    /// `from` holds `received` bytes of `meta`'s file.
    pub(super) fn on_ack(&mut self, from: NodeId, meta: SnapshotMeta, received: u64, now: Instant) {
        let Some(slot) = self.outgoing.get_mut(from as usize) else {
            return;
        };
        let Some(out) = slot.as_mut().filter(|o| o.meta == meta) else {
            return;
        };
        if received >= out.total_len {
            log::info!(
                "node {from} has snapshot {} ({} bytes in {:.1?})",
                meta.index,
                out.total_len,
                now.duration_since(out.started)
            );
            *slot = None;
            return;
        }
        if received > out.acked {
            out.acked = received;
            out.last_progress = now;
        } else if received < out.acked {
            // The follower started over (it discarded a bad file, or restarted).
            out.acked = received;
            out.sent = received;
            out.last_progress = now;
        }
        out.sent = out.sent.max(out.acked);
    }

    /// Sends what each window allows through `send(to, frame_encoder)`, which returns false when
    /// the link is down; resends stalled transfers; abandons dead ones.
    pub(super) fn pump(
        &mut self,
        now: Instant,
        mut send: impl FnMut(NodeId, &mut dyn FnMut(&mut Vec<u8>)) -> bool,
    ) {
        for (to, slot) in self.outgoing.iter_mut().enumerate() {
            let Some(out) = slot.as_mut() else {
                continue;
            };
            let idle = now.duration_since(out.last_progress);
            if idle >= ABANDON {
                log::warn!(
                    "snapshot transfer to node {to} made no progress for {idle:.0?}; abandoned"
                );
                *slot = None;
                continue;
            }
            if idle >= STALL && out.sent > out.acked {
                // Whatever was sent beyond the acknowledgement is presumed lost: resume there.
                out.sent = out.acked;
                out.last_progress = now;
            }
            while out.sent < out.total_len && out.sent < out.acked + WINDOW_BYTES {
                let len = (out.total_len - out.sent).min(CHUNK_BYTES as u64) as usize;
                self.chunk.resize(len, 0);
                if let Err(e) = out.file.read_exact_at(&mut self.chunk, out.sent) {
                    log::error!("reading snapshot {} for node {to}: {e}", out.meta.index);
                    *slot = None;
                    break;
                }
                let (term, meta, total_len, offset) = (out.term, out.meta, out.total_len, out.sent);
                let data = &self.chunk;
                let sent = send(to as NodeId, &mut |buf: &mut Vec<u8>| {
                    wire::encode_snapshot_chunk(term, meta, total_len, offset, data, buf)
                });
                if !sent {
                    break; // the link is down; the stall timer resumes it
                }
                out.sent += len as u64;
            }
        }
    }

    // ----- follower side -------------------------------------------------------------------

    /// A chunk of `meta`'s file from `from`. Chunks are taken strictly in order; anything else
    /// is answered with how much is held, so the sender resumes there.
    pub(super) fn on_chunk(
        &mut self,
        from: NodeId,
        term: Term,
        meta: SnapshotMeta,
        total_len: u64,
        offset: u64,
        data: &[u8],
    ) -> ChunkOutcome {
        let same = self.incoming.as_ref().is_some_and(|i| {
            i.receiver.meta() == meta && i.receiver.total_len() == total_len && i.from == from
        });
        if !same {
            if offset != 0 {
                return ChunkOutcome::Ack { received: 0 };
            }
            match self.store.receive(meta, total_len) {
                Ok(receiver) => {
                    log::info!(
                        "receiving snapshot at index {} ({total_len} bytes) from node {from}",
                        meta.index
                    );
                    self.incoming = Some(Incoming { from, receiver });
                }
                Err(e) => {
                    log::error!("cannot receive snapshot {}: {e}", meta.index);
                    return ChunkOutcome::Ack { received: 0 };
                }
            }
        }
        let Some(incoming) = self.incoming.as_mut() else {
            return ChunkOutcome::Ack { received: 0 };
        };
        if offset == incoming.receiver.received() {
            if let Err(e) = incoming.receiver.write_chunk(offset, data) {
                log::error!("snapshot {} chunk at {offset}: {e}", meta.index);
                self.incoming = None;
                return ChunkOutcome::Ack { received: 0 };
            }
        }
        let received = incoming.receiver.received();
        if received < total_len {
            return ChunkOutcome::Ack { received };
        }
        let Some(incoming) = self.incoming.take() else {
            return ChunkOutcome::Ack { received: 0 };
        };
        // Parked from the start: the file gets its name only in `unpark_received`, once the
        // history it needs is in the store, just before it is installed.
        match incoming.receiver.finish_parked() {
            Ok((file, named)) => {
                self.drop_parked();
                self.received = Some(file);
                self.parked_from = Some(named);
                ChunkOutcome::Complete { term, meta }
            }
            Err(e) => {
                log::error!("snapshot {} from node {from} refused: {e}", meta.index);
                ChunkOutcome::Ack { received: 0 }
            }
        }
    }

    /// The core did not take the file received for `meta` (it already held that prefix, or the
    /// sender was not its leader): delete it, so it never stands in for this node's own.
    pub(super) fn discard_received(&mut self, meta: SnapshotMeta) {
        if self.received.as_ref().is_some_and(|f| f.meta == meta) && self.parked_from.is_some() {
            self.drop_parked();
            return;
        }
        if let Some(file) = self.take_received(meta) {
            if self.latest.as_ref().is_some_and(|l| l.path == file.path) {
                return; // the same snapshot this node already holds, received again
            }
            if let Err(e) = std::fs::remove_file(&file.path) {
                log::warn!("cannot delete unused snapshot {}: {e}", file.path.display());
            }
        }
    }

    /// How much of the message store the file received for `meta` needs: its body header's
    /// `stored_through` (0 for a body before version 5, or one too short to say).
    pub(super) fn received_stored_through(&self, meta: SnapshotMeta) -> Result<u64, StorageError> {
        let Some(file) = self.received(meta) else {
            return Ok(0);
        };
        let mut prefix = Vec::with_capacity(BODY_HEADER_BYTES);
        file.body()?
            .take(BODY_HEADER_BYTES as u64)
            .read_to_end(&mut prefix)
            .map_err(|e| StorageError::io(format!("reading {}", file.path.display()), e))?;
        Ok(peek_header(&prefix).map_or(0, |h| h.stored_through))
    }

    /// Moves the file received for `meta` out of the way while the history it needs is fetched
    /// (`fetch.rs`): under a temporary name, so a restart meanwhile neither loads it (the store
    /// could not restore it yet) nor keeps it (`SnapshotStore::open` deletes temporary files).
    pub(super) fn park_received(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        let latest = self.latest.as_ref().map(|l| l.path.clone());
        let Some(file) = self.received.as_mut().filter(|f| f.meta == meta) else {
            return Ok(());
        };
        if latest.as_ref() == Some(&file.path) || file.path.extension().is_some_and(|e| e == "tmp")
        {
            return Ok(()); // this node's own latest, received again; or parked already
        }
        let parked = file.path.with_extension("fetching.tmp");
        std::fs::rename(&file.path, &parked)
            .map_err(|e| StorageError::io(format!("renaming {}", file.path.display()), e))?;
        self.parked_from = Some(std::mem::replace(&mut file.path, parked));
        // Durably: a restart that found the file under its name would refuse to start (its
        // store cannot back it yet). (A received file arrives parked already: this is for a
        // file that was named.)
        self.sync_dir()
    }

    /// Fsyncs the snapshot directory (under `FsyncPolicy::Always`), so renames in it last.
    fn sync_dir(&self) -> Result<(), StorageError> {
        if self.fsync == FsyncPolicy::Always {
            let dir = self.store.dir();
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StorageError::io(format!("fsync {}", dir.display()), e))?;
        }
        Ok(())
    }

    /// Deletes a parked received file (a newer one replaces it, or its fetch ended).
    fn drop_parked(&mut self) {
        if self.parked_from.take().is_none() {
            return;
        }
        if let Some(file) = self.received.take() {
            if let Err(e) = std::fs::remove_file(&file.path) {
                log::warn!("cannot delete {}: {e}", file.path.display());
            }
        }
    }

    /// Gives the parked file for `meta` its name back (durably), before it is installed.
    pub(super) fn unpark_received(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        let Some(file) = self.received.as_mut().filter(|f| f.meta == meta) else {
            return Ok(());
        };
        let Some(path) = self.parked_from.take() else {
            return Ok(());
        };
        std::fs::rename(&file.path, &path)
            .map_err(|e| StorageError::io(format!("renaming {}", file.path.display()), e))?;
        file.path = path;
        self.sync_dir()
    }

    /// The verified file received for `meta`, still held (its members are read before the
    /// core is asked to install it).
    pub(super) fn received(&self, meta: SnapshotMeta) -> Option<&SnapshotFile> {
        self.received.as_ref().filter(|f| f.meta == meta)
    }

    /// The verified file received for `meta`, for the core's `Ready::snapshot`.
    pub(super) fn take_received(&mut self, meta: SnapshotMeta) -> Option<SnapshotFile> {
        match self.received.take() {
            Some(file) if file.meta == meta => Some(file),
            other => {
                self.received = other;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PeerFrame;
    use std::io::Write;

    fn store(dir: &std::path::Path) -> Snapshots {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        Snapshots::open(
            dir.to_path_buf(),
            dir.to_path_buf(),
            7,
            FsyncPolicy::Never,
            3,
            waker,
        )
        .unwrap()
    }

    /// A chunk frame as the follower's loop would see it.
    struct Chunk {
        term: Term,
        meta: SnapshotMeta,
        total_len: u64,
        offset: u64,
        data: Vec<u8>,
    }

    fn decode(frame: &[u8]) -> Chunk {
        match crate::wire::decode_peer_frame(frame).unwrap().unwrap().0 {
            PeerFrame::SnapshotChunk {
                term,
                snapshot,
                total_len,
                offset,
                data,
            } => Chunk {
                term,
                meta: snapshot,
                total_len,
                offset,
                data: data.to_vec(),
            },
            other => panic!("not a chunk: {other:?}"),
        }
    }

    fn pump(leader: &mut Snapshots, now: Instant) -> Vec<Chunk> {
        let mut frames = Vec::new();
        leader.pump(now, |to, encode| {
            assert_eq!(to, 1);
            let mut buf = Vec::new();
            encode(&mut buf);
            frames.push(decode(&buf));
            true
        });
        frames
    }

    fn deliver(follower: &mut Snapshots, chunk: &Chunk) -> ChunkOutcome {
        follower.on_chunk(
            0,
            chunk.term,
            chunk.meta,
            chunk.total_len,
            chunk.offset,
            &chunk.data,
        )
    }

    /// A transfer that loses chunks and stalls resumes from what the follower acknowledged and
    /// ends with the follower holding the leader's exact file, verified.
    #[test]
    fn a_lossy_transfer_resumes_from_the_acknowledged_offset() {
        let leader_dir = tempfile::tempdir().unwrap();
        let follower_dir = tempfile::tempdir().unwrap();
        let mut leader = store(leader_dir.path());
        let mut follower = store(follower_dir.path());
        let meta = SnapshotMeta {
            index: 5_000,
            term: 3,
        };
        let body: Vec<u8> = (0..5 * CHUNK_BYTES + 1234)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut writer = leader.store.create(meta).unwrap();
        writer.write_all(&body).unwrap();
        let file = writer.finish().unwrap();
        let original = std::fs::read(&file.path).unwrap();
        leader.set_latest(
            file,
            Cleanup {
                entries: Vec::new(),
                segments: Vec::new(),
                snapshots_before: meta.index,
            },
        );

        let t0 = Instant::now();
        leader.want_send(1, 4, t0);
        let first = pump(&mut leader, t0);
        assert_eq!(
            first.len(),
            4,
            "the window allows 4 chunks of the file in flight"
        );
        assert!(
            pump(&mut leader, t0).is_empty(),
            "nothing beyond the window"
        );
        // Chunk 0 arrives, chunk 1 is lost, chunk 2 arrives out of order.
        let ChunkOutcome::Ack { received } = deliver(&mut follower, &first[0]) else {
            panic!("not complete yet")
        };
        assert_eq!(received, CHUNK_BYTES as u64);
        leader.on_ack(1, meta, received, t0);
        let ChunkOutcome::Ack { received } = deliver(&mut follower, &first[2]) else {
            panic!("not complete yet")
        };
        assert_eq!(
            received, CHUNK_BYTES as u64,
            "out of order chunks are not taken"
        );
        leader.on_ack(1, meta, received, t0);
        // One more chunk fits the window now; then the transfer stalls and resends from the ack.
        assert_eq!(pump(&mut leader, t0).len(), 1);
        let mut resent = pump(&mut leader, t0 + STALL);
        assert_eq!(
            resent[0].offset, CHUNK_BYTES as u64,
            "resumes at the acked offset"
        );
        let mut outcome = None;
        for _ in 0..10 {
            for chunk in &resent {
                match deliver(&mut follower, chunk) {
                    ChunkOutcome::Ack { received } => leader.on_ack(1, meta, received, t0 + STALL),
                    done @ ChunkOutcome::Complete { .. } => outcome = Some(done),
                }
            }
            if outcome.is_some() {
                break;
            }
            resent = pump(&mut leader, t0 + STALL);
        }
        match outcome {
            Some(ChunkOutcome::Complete { term, meta: got }) => {
                assert_eq!((term, got), (4, meta));
            }
            _ => panic!("the transfer completes"),
        }
        let received = follower.take_received(meta).expect("a verified file");
        assert_eq!(std::fs::read(&received.path).unwrap(), original);
        leader.on_ack(1, meta, original.len() as u64, t0 + STALL);
        assert!(
            pump(&mut leader, t0 + STALL * 2).is_empty(),
            "done: nothing more is sent"
        );
    }

    /// A chunk from the middle of a file the follower never started is answered with 0, so the
    /// sender starts over; a damaged file is refused and the transfer restarts from 0.
    #[test]
    fn the_follower_never_takes_a_file_it_cannot_verify() {
        let dir = tempfile::tempdir().unwrap();
        let mut follower = store(dir.path());
        let meta = SnapshotMeta { index: 9, term: 1 };
        let ChunkOutcome::Ack { received } = follower.on_chunk(0, 1, meta, 100, 50, &[0; 50])
        else {
            panic!("a middle chunk cannot complete a file")
        };
        assert_eq!(received, 0);
        let ChunkOutcome::Ack { received } = follower.on_chunk(0, 1, meta, 100, 0, &[0xAB; 100])
        else {
            panic!("garbage must not verify")
        };
        assert_eq!(received, 0, "a file that fails verification is dropped");
        assert!(follower.take_received(meta).is_none());
    }
}
