//! Opening a replica from its data dir, in four steps: open the write-ahead log (recovering
//! it), load the latest snapshot, build the core from both, and reconcile a log that does not
//! continue the snapshot (a crash between installing a snapshot and resetting the log).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mio::Waker;

use super::snapshot::Snapshots;
use super::syncer::Syncer;
use super::Replica;
use crate::chat::{SessionConfig, StateMachine};
use crate::history::{History, HistoryOptions};
use crate::raft::{self, NodeId, Raft, SnapshotMeta, SoftState};
use crate::storage::{FsyncPolicy, Recovered, Wal, WalOptions};

use crate::server::error::ServerError;

/// What a replica needs to know from the node's configuration.
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    pub id: NodeId,
    /// The bootstrap configuration's voters (`0..count`), for a core without a snapshot.
    pub voters: Vec<NodeId>,
    /// The bootstrap list with addresses: the member table of a new cluster.
    pub bootstrap: Vec<(NodeId, SocketAddr)>,
    pub data_dir: PathBuf,
    pub cluster_id: u64,
    pub fsync: FsyncPolicy,
    pub wal_segment_bytes: u64,
    pub election_timeout_ms: u64,
    pub heartbeat_ms: u64,
    /// Take a snapshot every this many applied entries (0: never).
    pub snapshot_entries: u64,
    /// Entries kept in the log behind a snapshot.
    pub log_keep_entries: u64,
    /// Per-room retention (0: keep everything).
    pub retain_messages: u64,
    /// Memory for the chat history (`--memory-budget-mib`); see `history_budget`.
    pub memory_budget_mib: u64,
}

/// How `--memory-budget-mib` is shared: a quarter for the chat log's newest chunks (counted at
/// 1 KiB a message, so a budget holds fewer than it could of short messages), the rest for
/// everything that is not history (sessions, keys, the Raft log, buffers). The message store
/// keeps no cache of its own: the newest messages are the chat log's chunks. Returns (store
/// cache bytes, chunks kept).
pub(crate) fn history_budget(memory_budget_mib: u64) -> (usize, usize) {
    let quarter = (memory_budget_mib << 20) / 4;
    let chunk_bytes = (crate::chat::CHUNK_MESSAGES as u64) << 10;
    (
        0,
        usize::try_from(quarter / chunk_bytes).unwrap_or(1).max(1),
    )
}

/// Opens the message store in `<data-dir>/history` and returns it with the chunks to keep.
fn open_store(opts: &ReplicaOptions) -> Result<(Arc<Mutex<History>>, usize), ServerError> {
    let (cache_bytes, keep_chunks) = history_budget(opts.memory_budget_mib);
    let store_opts = HistoryOptions {
        cache_bytes,
        fsync: opts.fsync == FsyncPolicy::Always,
        ..HistoryOptions::new(opts.data_dir.join("history"), opts.cluster_id)
    };
    let (store, opened) = History::open(store_opts)
        .map_err(|e| ServerError::Snapshot(format!("message store: {e}")))?;
    log::info!(
        "node {}: message store holds positions {}..={} ({} sealed segments{})",
        opts.id,
        store.first_position(),
        store.last_position(),
        store.sealed_segments(),
        match &opened.torn_tail {
            Some(t) => format!(
                "; cut a torn tail of {} bytes at offset {} of {}",
                t.bytes_cut,
                t.offset,
                t.file.display()
            ),
            None => String::new(),
        }
    );
    Ok((Arc::new(Mutex::new(store)), keep_chunks))
}

impl ReplicaOptions {
    pub fn from_config(cfg: &crate::server::config::ServerConfig) -> ReplicaOptions {
        ReplicaOptions {
            id: cfg.id,
            voters: (0..cfg.members.len() as u64).collect(),
            bootstrap: cfg
                .members
                .iter()
                .enumerate()
                .map(|(id, addr)| (id as NodeId, *addr))
                .collect(),
            data_dir: cfg.data_dir.clone(),
            cluster_id: cfg.cluster_id,
            fsync: cfg.fsync,
            wal_segment_bytes: cfg.wal_segment_bytes,
            election_timeout_ms: cfg.election_timeout_ms,
            heartbeat_ms: cfg.heartbeat_ms,
            snapshot_entries: cfg.snapshot_entries,
            log_keep_entries: cfg.log_keep_entries,
            retain_messages: cfg.retain_messages,
            memory_budget_mib: cfg.memory_budget_mib,
        }
    }
}

impl Replica {
    /// Opens the data dir and builds the core. `waker` wakes the node's loop when an fsync or a
    /// snapshot write finishes on a helper thread.
    pub fn open(opts: ReplicaOptions, waker: Arc<Waker>) -> Result<Replica, ServerError> {
        let (mut wal, recovered) = open_wal(&opts)?;
        let snapshots = Snapshots::open(
            opts.data_dir.join("snapshots"),
            opts.data_dir.clone(),
            opts.cluster_id,
            opts.fsync,
            opts.voters.len(),
            Arc::clone(&waker),
        )?;
        let (mut sm, snapshot) = load_snapshot(&opts, &snapshots)?;
        super::members::bootstrap_table(&mut sm, &opts.bootstrap);
        // The configuration at the snapshot's index is in its member table.
        let membership = snapshot.map(|_| super::members::membership_of(sm.members()));
        let raft = build_core(&opts, recovered, snapshot, membership);
        if let Some(meta) = snapshot {
            reconcile_log(&opts, &raft, &mut wal, meta)?;
        }
        let syncer = Syncer::start(waker).map_err(|source| ServerError::Io {
            context: "cannot start fsync thread".into(),
            source,
        })?;
        let soft = SoftState {
            role: raft.role(),
            term: raft.term(),
            leader: raft.leader(),
        };
        let durable_index = wal.last_index();
        Ok(Replica {
            id: opts.id,
            applied_term: snapshot.map_or(0, |m| m.term),
            opts,
            raft,
            wal,
            syncer,
            snapshots,
            sm,
            applied_bytes_since_snapshot: 0,
            unsynced: VecDeque::new(),
            written_vote: None,
            soft,
            stats: Default::default(),
            durable_index,
            members: Default::default(),
            restored: None,
            fetch: None,
        })
    }
}

fn open_wal(opts: &ReplicaOptions) -> Result<(Wal, Recovered), ServerError> {
    let mut wal_opts = WalOptions::new(opts.data_dir.clone(), opts.cluster_id, opts.id);
    wal_opts.fsync = opts.fsync;
    wal_opts.segment_bytes = opts.wal_segment_bytes;
    let (wal, recovered) = Wal::open(wal_opts)?;
    if let Some(torn) = &recovered.torn_tail {
        log::warn!(
            "node {}: cut a torn tail of {} bytes at offset {} of {}",
            opts.id,
            torn.bytes_cut,
            torn.offset,
            torn.file.display()
        );
    }
    log::info!(
        "node {}: recovered term {} vote {:?} and {} log entries from {}",
        opts.id,
        recovered.hard_state.term,
        recovered.hard_state.voted_for,
        recovered.entries.len(),
        opts.data_dir.display()
    );
    Ok((wal, recovered))
}

/// The state machine from the latest snapshot, or an empty one. A damaged snapshot stops the
/// node: it never starts silently from less than it had.
fn load_snapshot(
    opts: &ReplicaOptions,
    snapshots: &Snapshots,
) -> Result<(StateMachine, Option<SnapshotMeta>), ServerError> {
    // With retention the chat log is bounded in memory and needs no store.
    let store = match opts.retain_messages {
        0 => Some(open_store(opts)?),
        _ => None,
    };
    let store_dir = store
        .as_ref()
        .and_then(|(store, _)| store.lock().ok().map(|s| s.dir().to_path_buf()));
    let Some(file) = snapshots.latest() else {
        let mut sm = StateMachine::default().with_retention(opts.retain_messages);
        if let Some((store, keep_chunks)) = store {
            sm = sm.with_store(store, keep_chunks);
        }
        return Ok((sm, None));
    };
    let started = Instant::now();
    let mut body = file.body()?;
    let (config, retain) = (SessionConfig::default(), opts.retain_messages);
    let sm = match store {
        Some((store, keep)) => {
            StateMachine::restore_with_store(&mut body, config, retain, store, keep)
        }
        None => StateMachine::restore(&mut body, config, retain),
    }
    .map_err(|why| {
        // A version-5 snapshot needs the store: a store that lost what it covers stops the
        // node (as a corrupt log does), naming both.
        let store = store_dir.map_or(String::new(), |d| {
            format!(" (message store in {})", d.display())
        });
        ServerError::Snapshot(format!("{}: {why}{store}", file.path.display()))
    })?;
    log::info!(
        "node {}: loaded snapshot at index {} (term {}, {} messages) in {:.1?}",
        opts.id,
        file.meta.index,
        file.meta.term,
        sm.message_count(),
        started.elapsed()
    );
    Ok((sm, Some(file.meta)))
}

fn build_core(
    opts: &ReplicaOptions,
    recovered: Recovered,
    snapshot: Option<SnapshotMeta>,
    membership: Option<raft::Membership>,
) -> Raft {
    let mut raft_cfg = raft::Config::new(opts.id, opts.voters.clone());
    raft_cfg.heartbeat_ticks = 1;
    raft_cfg.election_ticks = (opts.election_timeout_ms / opts.heartbeat_ms.max(1)).max(2) as u32;
    raft_cfg.snapshot_timeout_ticks = raft_cfg.election_ticks.saturating_mul(4);
    let persisted = raft::Persisted {
        hard_state: recovered.hard_state,
        snapshot,
        entries: recovered.entries,
        membership,
    };
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // The id is spread over all bits: with a plain `^ id`, replicas of one process opened a
    // millisecond apart (X, X+1, X+2 with X a multiple of 4) got the same seed and timed out
    // in lockstep forever (found by `replica::tests`).
    let seed = now_ns
        ^ (u64::from(std::process::id()) << 32)
        ^ opts.id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    Raft::new(raft_cfg, persisted, seed)
}

/// The log on disk must continue the snapshot. After a crash between installing a snapshot
/// from the leader and resetting the log, the core kept only the snapshot, and the log must
/// restart after it too.
fn reconcile_log(
    opts: &ReplicaOptions,
    raft: &Raft,
    wal: &mut Wal,
    meta: SnapshotMeta,
) -> Result<(), ServerError> {
    if raft.last_index() == wal.last_index() {
        return Ok(());
    }
    if raft.last_index() != meta.index {
        return Err(ServerError::Snapshot(format!(
            "the log ({}..={}) and snapshot {} disagree in a way no crash explains",
            wal.first_index(),
            wal.last_index(),
            meta.index
        )));
    }
    log::warn!(
        "node {}: log {}..={} does not continue snapshot {}; it restarts after it",
        opts.id,
        wal.first_index(),
        wal.last_index(),
        meta.index
    );
    wal.reset_after_snapshot(meta.index)?;
    wal.sync()?;
    Ok(())
}
