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

use std::collections::VecDeque;

use raftchat::raft::{Config, Entry, HardState, Index, Message, Persisted, Raft};

use super::checker::{EntryKey, LogChain, Violation};

/// The part of a Ready that waits for the disk.
#[derive(Debug)]
pub struct WrittenReady {
    pub number: u64,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub persisted_messages: Vec<Message>,
}

impl WrittenReady {
    /// Whether this Ready gives the disk anything to do.
    pub fn has_writes(&self) -> bool {
        self.hard_state.is_some() || !self.entries.is_empty()
    }
}

/// A node's disk.
#[derive(Default)]
pub struct Storage {
    hard_state: HardState,
    log: Vec<Entry>,
    /// The durable log as the checker sees logs.
    chain: LogChain,
    /// Written, not yet synced, in Ready order.
    written: VecDeque<WrittenReady>,
}

impl Storage {
    pub fn durable_chain(&self) -> &LogChain {
        &self.chain
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
    pub fn crash(&mut self, node: usize, flushed: usize) -> Result<(), Violation> {
        let mut written = std::mem::take(&mut self.written);
        for ready in written.iter_mut().take(flushed) {
            self.make_durable(node, ready)?;
        }
        Ok(())
    }

    /// Exactly what the disk holds, for `Raft::new`.
    pub fn persisted(&self) -> Persisted {
        Persisted {
            hard_state: self.hard_state,
            entries: self.log.clone(),
        }
    }

    /// Applies one Ready to the durable layer: truncate-then-append the entries, replace the hard
    /// state. Checks what the contract lets a storage layer rely on.
    fn make_durable(&mut self, node: usize, ready: &mut WrittenReady) -> Result<(), Violation> {
        if let Some(first) = ready.entries.first().map(|entry| entry.index) {
            let last = self.log.len() as Index;
            if first == 0 || first > last + 1 {
                return Err(Violation::new(
                    "Ready contract",
                    format!(
                        "node {node}: Ready {} appends from index {} but the stored log ends at {last}",
                        ready.number, first
                    ),
                ));
            }
            let keep = first - 1;
            self.log.truncate(keep as usize);
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
        if self.hard_state.commit > self.log.len() as Index {
            return Err(Violation::new(
                "Durability contract",
                format!(
                    "node {node}: after Ready {} the durable commit index {} is past the durable log's end {}",
                    ready.number,
                    self.hard_state.commit,
                    self.log.len()
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
    /// The state machine: how far it applied, and how many of those were client commands.
    pub applied_index: Index,
    pub applied_commands: u64,
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
            last_ready: None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    /// Drops the core and everything volatile; the disk keeps what was synced (and `flushed`
    /// written Readies).
    pub fn crash(&mut self, node: usize, flushed: usize) -> Result<(), Violation> {
        debug_assert!(self.is_up());
        self.raft = None;
        self.incarnation += 1;
        self.sync_scheduled = false;
        self.applied_index = 0;
        self.applied_commands = 0;
        self.last_ready = None;
        self.storage.crash(node, flushed)
    }

    /// A new core from exactly what the disk holds.
    pub fn restart(&mut self, rng_seed: u64) {
        debug_assert!(!self.is_up());
        self.raft = Some(Raft::new(
            self.config.clone(),
            self.storage.persisted(),
            rng_seed,
        ));
        self.incarnation += 1;
    }
}
