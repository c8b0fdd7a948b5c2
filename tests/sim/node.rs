//! One simulated node: the real `Raft` core and a storage model that keeps the durability
//! contract of `raftchat::raft` to the letter.
//!
//! Storage has two layers. A Ready's entries and hard state are *written* at once (queued in
//! `written`), and become *durable* only at a later sync, which covers every Ready written so
//! far (group commit); only then may that Ready's `persisted_messages` leave and `advance` be
//! called. A crash keeps the durable layer and loses the rest, except that, like a real page
//! cache, the disk may already hold some prefix of the written Readies without any fsync.
//! A restarted core gets exactly the durable layer. Nothing here decides when things happen:
//! the driver does.
//!
//! Snapshots: the disk holds at most one snapshot (its data is a `SnapshotData`) and a log that
//! starts at or below `snapshot.index + 1` (the trailing window `compact` kept). A snapshot made
//! by the node is durable at once (`compact`); one installed from a leader rides with its Ready
//! and, at that Ready's sync, replaces the snapshot and empties the log *before* the Ready's
//! entries and hard state are written, as the contract demands.

use std::collections::VecDeque;

use raftchat::raft::{Config, Entry, HardState, Index, Membership, Message, Persisted, Raft};

use super::checker::{EntryKey, LogChain, SnapshotData, Violation, EMPTY_PREFIX};

/// The part of a Ready that waits for the disk.
#[derive(Debug)]
pub struct WrittenReady {
    pub number: u64,
    /// A leader's snapshot to install before anything else of this Ready, and the
    /// configuration it carries (stored beside it, as a snapshot file would).
    pub snapshot: Option<SnapshotData>,
    pub membership: Option<Membership>,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub persisted_messages: Vec<Message>,
}

impl WrittenReady {
    /// Whether this Ready gives the disk anything to do.
    pub fn has_writes(&self) -> bool {
        self.snapshot.is_some() || self.hard_state.is_some() || !self.entries.is_empty()
    }
}

/// A node's disk.
#[derive(Default)]
pub struct Storage {
    hard_state: HardState,
    snapshot: Option<SnapshotData>,
    /// The configuration in force at the snapshot's index (`Persisted::membership`).
    membership: Option<Membership>,
    /// Contiguous entries from `first_index()`.
    log: Vec<Entry>,
    /// The durable log as the checker sees logs.
    chain: LogChain,
    /// Written, not yet synced, in Ready order.
    written: VecDeque<WrittenReady>,
    /// A snapshot install was cut short by a crash: the log was not reset.
    torn: bool,
    /// How often that happened.
    pub torn_installs: u64,
}

impl Storage {
    pub fn durable_chain(&self) -> &LogChain {
        &self.chain
    }

    pub fn snapshot(&self) -> Option<SnapshotData> {
        self.snapshot
    }

    /// The index of the first stored entry (the snapshot's index + 1 if there is none).
    fn first_index(&self) -> Index {
        self.log.first().map_or_else(
            || self.snapshot.map_or(1, |snap| snap.meta.index + 1),
            |entry| entry.index,
        )
    }

    /// The last index the disk holds, in its log or its snapshot.
    fn last_index(&self) -> Index {
        self.first_index() + self.log.len() as Index - 1
    }

    /// The node made a durable snapshot: it replaces the old one, and the log drops entries
    /// below `first_kept` (the core's first index after `compact`). The durable chain keeps
    /// its keys: the logical log (snapshot plus entries) did not change.
    pub fn compact(&mut self, data: SnapshotData, first_kept: Index, membership: Membership) {
        debug_assert!(
            self.written.is_empty(),
            "compact only with nothing in flight"
        );
        self.snapshot = Some(data);
        self.membership = Some(membership);
        let drop = first_kept.saturating_sub(self.first_index()) as usize;
        self.log.drain(..drop.min(self.log.len()));
    }

    /// Written Readies still waiting for a sync.
    pub fn written_count(&self) -> usize {
        self.written.len()
    }

    /// Whether some written Ready still waits for a sync.
    pub fn has_written(&self) -> bool {
        !self.written.is_empty()
    }

    pub fn write(&mut self, ready: WrittenReady) {
        self.written.push_back(ready);
    }

    /// Makes every written Ready durable, in order, and hands them back: their persisted
    /// messages may now be sent and the last one's number passed to `advance`.
    pub fn sync(&mut self, node: usize) -> Result<Vec<WrittenReady>, Violation> {
        let mut synced: Vec<WrittenReady> = self.written.drain(..).collect();
        for ready in &mut synced {
            self.make_durable(node, ready)?;
        }
        Ok(synced)
    }

    /// Power loss: the first `flushed` written Readies reached the disk anyway, the rest are lost.
    /// With `torn_install`, a flushed Ready that installs a snapshot is cut short: the snapshot
    /// is stored but the log is not reset, and nothing after it reaches the disk.
    pub fn crash(
        &mut self,
        node: usize,
        flushed: usize,
        torn_install: bool,
    ) -> Result<(), Violation> {
        let mut written = std::mem::take(&mut self.written);
        for ready in written.iter_mut().take(flushed) {
            if torn_install {
                if let Some(data) = ready.snapshot {
                    self.snapshot = Some(data);
                    self.membership = ready.membership.take();
                    self.torn = true;
                    self.torn_installs += 1;
                    return Ok(());
                }
            }
            self.make_durable(node, ready)?;
        }
        Ok(())
    }

    /// What a driver does at startup after handing `persisted()` to the core: if the stored log
    /// does not continue the snapshot (a torn install, or a gap), drop it, as the core did. The
    /// durable chain becomes the snapshot's.
    pub fn recover(&mut self) {
        let Some(data) = self.snapshot else {
            return;
        };
        let snap = data.meta;
        let first = self.first_index();
        let continues = first <= snap.index + 1
            && self.last_index() >= snap.index
            && (first == snap.index + 1
                || self.log[(snap.index - first) as usize].term == snap.term);
        if self.torn || !continues {
            self.torn = false;
            if !continues {
                self.log.clear();
            }
            if !continues || self.chain.prefix(snap.index) != Some(data.prefix) {
                self.chain.reset(snap.index, data.prefix, snap.term);
                for entry in &self.log {
                    if entry.index > snap.index {
                        self.chain.push(EntryKey::of(entry));
                    }
                }
            }
        }
    }

    /// Exactly what the disk holds, for `Raft::new`.
    pub fn persisted(&self) -> Persisted {
        Persisted {
            hard_state: self.hard_state,
            snapshot: self.snapshot.map(|data| data.meta),
            entries: self.log.clone(),
            membership: self.membership.clone(),
        }
    }

    /// Applies one Ready to the durable layer: truncate-then-append the entries, replace the hard
    /// state. Checks what the contract lets a storage layer rely on.
    fn make_durable(&mut self, node: usize, ready: &mut WrittenReady) -> Result<(), Violation> {
        if let Some(data) = ready.snapshot {
            // Install first: the snapshot, then an empty log after it.
            self.snapshot = Some(data);
            self.membership = ready.membership.take();
            self.log.clear();
            self.chain
                .reset(data.meta.index, data.prefix, data.meta.term);
        }
        if let Some(first) = ready.entries.first().map(|entry| entry.index) {
            let last = self.last_index();
            if first < self.first_index() || first > last + 1 {
                return Err(Violation::new(
                    "Ready contract",
                    format!(
                        "node {node}: Ready {} appends from index {} but the stored log ends at {last}",
                        ready.number, first
                    ),
                ));
            }
            let keep = first - 1;
            self.log.truncate((first - self.first_index()) as usize);
            self.chain.truncate(keep);
            for (offset, entry) in ready.entries.drain(..).enumerate() {
                if entry.index != first + offset as Index {
                    return Err(Violation::new(
                        "Ready contract",
                        format!(
                            "node {node}: Ready {} has non-contiguous entries",
                            ready.number
                        ),
                    ));
                }
                self.chain.push(EntryKey::of(&entry));
                self.log.push(entry);
            }
        }
        if let Some(hard_state) = ready.hard_state {
            check_hard_state_change(node, ready.number, &self.hard_state, &hard_state)?;
            self.hard_state = hard_state;
        }
        if self.hard_state.commit > self.last_index() {
            return Err(Violation::new(
                "Durability contract",
                format!(
                    "node {node}: after Ready {} the durable commit index {} is past the durable log's end {}",
                    ready.number,
                    self.hard_state.commit,
                    self.last_index()
                ),
            ));
        }
        Ok(())
    }
}

/// What Figure 2 relies on from stable storage: the term never goes back, and a vote once cast
/// (and persisted) in a term is never changed in that term, crashes included.
fn check_hard_state_change(
    node: usize,
    number: u64,
    old: &HardState,
    new: &HardState,
) -> Result<(), Violation> {
    if new.term < old.term {
        return Err(Violation::new(
            "Durability contract",
            format!(
                "node {node}: Ready {number} persists term {} over the durable term {}",
                new.term, old.term
            ),
        ));
    }
    if new.term == old.term && old.voted_for.is_some() && new.voted_for != old.voted_for {
        return Err(Violation::new(
            "Durability contract",
            format!(
                "node {node}: Ready {number} changes its durable vote in term {} from {:?} to {:?}",
                new.term, old.voted_for, new.voted_for
            ),
        ));
    }
    Ok(())
}

/// A node slot: a core while up, its disk always.
pub struct SimNode {
    pub config: Config,
    /// `None` while crashed.
    pub raft: Option<Raft>,
    /// Bumped on crash and on restart, so events meant for an old incarnation are ignored.
    pub incarnation: u64,
    pub storage: Storage,
    pub sync_scheduled: bool,
    /// The state machine: how far it applied, how many of those were client commands, and the
    /// prefix hash of what it applied (its snapshot form).
    pub applied_index: Index,
    pub applied_commands: u64,
    pub applied_prefix: u64,
    /// The snapshot this incarnation sends followers (the latest made or installed).
    pub snapshot: Option<SnapshotData>,
    /// The last snapshot data received with an InstallSnapshot, waiting for `Ready::snapshot`.
    pub received: Option<SnapshotData>,
    /// The last Ready number taken from this incarnation.
    pub last_ready: Option<u64>,
}

impl SimNode {
    pub fn new(config: Config, rng_seed: u64) -> SimNode {
        let raft = Raft::new(config.clone(), Persisted::default(), rng_seed);
        SimNode {
            config,
            raft: Some(raft),
            incarnation: 0,
            storage: Storage::default(),
            sync_scheduled: false,
            applied_index: 0,
            applied_commands: 0,
            applied_prefix: EMPTY_PREFIX,
            snapshot: None,
            received: None,
            last_ready: None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    /// Drops the core and everything volatile; the disk keeps what was synced (and `flushed`
    /// written Readies).
    pub fn crash(
        &mut self,
        node: usize,
        flushed: usize,
        torn_install: bool,
    ) -> Result<(), Violation> {
        debug_assert!(self.is_up());
        self.raft = None;
        self.incarnation += 1;
        self.sync_scheduled = false;
        self.applied_index = 0;
        self.applied_commands = 0;
        self.applied_prefix = EMPTY_PREFIX;
        self.snapshot = None;
        self.received = None;
        self.last_ready = None;
        self.storage.crash(node, flushed, torn_install)
    }

    /// A new core from exactly what the disk holds; the state machine restored from the durable
    /// snapshot, if any (returned).
    pub fn restart(&mut self, rng_seed: u64) -> Option<SnapshotData> {
        debug_assert!(!self.is_up());
        let snapshot = self.storage.snapshot();
        if let Some(data) = snapshot {
            self.applied_index = data.meta.index;
            self.applied_commands = data.commands;
            self.applied_prefix = data.prefix;
            self.snapshot = Some(data);
        }
        self.raft = Some(Raft::new(
            self.config.clone(),
            self.storage.persisted(),
            rng_seed,
        ));
        self.storage.recover();
        self.incarnation += 1;
        snapshot
    }

    /// The state machine as a snapshot at its applied index.
    pub fn snapshot_data(&self, term: raftchat::raft::Term) -> SnapshotData {
        SnapshotData {
            meta: raftchat::raft::SnapshotMeta {
                index: self.applied_index,
                term,
            },
            prefix: self.applied_prefix,
            commands: self.applied_commands,
        }
    }
}
