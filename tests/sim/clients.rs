//! The client workload: unique writes proposed to whoever a client believes leads, and
//! linearizable reads through `read_index`, tracked until they are acknowledged or served.
//!
//! It owns the bookkeeping of outstanding operations, the "acknowledged before" floor that
//! linearizable reads are checked against, and the liveness probe of the fault-free tail. Each
//! writer has at most one write outstanding (a real client waits for its answer, and gives up
//! after a timeout), so the load never outruns a slow cluster without bound. It never calls a
//! core: the driver does, and reports back what happened.

use std::collections::BTreeMap;

use raftchat::raft::{Entry, EntryKind, Index, NodeId, ReadState};

use super::checker::{check_read, Violation};
use super::Time;

/// Reads a node may hold before the oldest is abandoned (a client timeout).
const READS_PER_NODE_MAX: usize = 64;

/// A write `propose` accepted, waiting to be applied at its index on that node.
#[derive(Clone, Copy, Debug)]
struct PendingWrite {
    writer: usize,
    payload_id: u64,
}

/// Where a writer's one outstanding write sits, and when the writer gives up on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Outstanding {
    node: NodeId,
    index: Index,
    deadline: Time,
}

#[derive(Clone, Copy, Debug, Default)]
struct Writer {
    leader_guess: Option<NodeId>,
    outstanding: Option<Outstanding>,
}

#[derive(Clone, Copy, Debug)]
struct PendingRead {
    ctx: u64,
    /// The highest acknowledged write index when the read began.
    acked_floor: Index,
    read_index: Option<Index>,
}

/// What a served read saw.
#[derive(Clone, Copy, Debug)]
pub struct ServedRead {
    pub node: NodeId,
    pub ctx: u64,
    pub read_index: Index,
    pub applied_index: Index,
    pub applied_commands: u64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ClientStats {
    pub proposed: u64,
    pub acked: u64,
    /// Another entry won the index (the client would retry with a new write).
    pub superseded: u64,
    /// Outcome unknown: the node crashed or the client gave up waiting.
    pub abandoned: u64,
    pub reads_begun: u64,
    pub reads_served: u64,
    pub reads_failed: u64,
}

/// The liveness probe: a fresh write after the faults stop, acknowledged at `committed_index`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Probe {
    pub active: bool,
    pub committed_index: Option<Index>,
}

pub struct Clients {
    /// Ordinary clients first; the last writer is the liveness probe.
    writers: Vec<Writer>,
    write_timeout: Time,
    next_payload_id: u64,
    next_ctx: u64,
    /// Per node, by the index `propose` returned.
    writes: Vec<BTreeMap<Index, PendingWrite>>,
    reads: Vec<Vec<PendingRead>>,
    /// The highest index of any acknowledged write so far.
    acked_floor: Index,
    pub probe: Probe,
    pub stats: ClientStats,
}

/// A write's payload: its unique id, so equal payloads mean the same write.
pub fn payload(id: u64) -> [u8; 8] {
    id.to_le_bytes()
}

impl Clients {
    pub fn new(nodes: usize, clients: usize, write_timeout: Time) -> Clients {
        Clients {
            writers: vec![Writer::default(); clients + 1],
            write_timeout,
            next_payload_id: 1,
            next_ctx: 1,
            writes: vec![BTreeMap::new(); nodes],
            reads: vec![Vec::new(); nodes],
            acked_floor: 0,
            probe: Probe::default(),
            stats: ClientStats::default(),
        }
    }

    /// Ordinary clients: writers `0..clients()`.
    pub fn clients(&self) -> usize {
        self.writers.len() - 1
    }

    pub fn probe_writer(&self) -> usize {
        self.writers.len() - 1
    }

    pub fn leader_guess(&self, writer: usize) -> Option<NodeId> {
        self.writers[writer].leader_guess
    }

    /// After `NotLeader { leader_hint }`: try the hint next time (or anyone, if none).
    pub fn redirect(&mut self, writer: usize, hint: Option<NodeId>) {
        self.writers[writer].leader_guess = hint;
    }

    /// Whether `writer` may propose now: it has no write outstanding, or gives up on it.
    pub fn may_write(&mut self, writer: usize, now: Time) -> bool {
        let Some(outstanding) = self.writers[writer].outstanding else {
            return true;
        };
        if now < outstanding.deadline {
            return false;
        }
        let writes = &mut self.writes[outstanding.node as usize];
        if writes
            .get(&outstanding.index)
            .is_some_and(|write| write.writer == writer)
        {
            writes.remove(&outstanding.index);
        }
        self.writers[writer].outstanding = None;
        self.stats.abandoned += 1;
        true
    }

    /// Whether the liveness probe should be (re)proposed now.
    pub fn probe_wanted(&mut self, now: Time) -> bool {
        self.probe.active
            && self.probe.committed_index.is_none()
            && self.may_write(self.probe_writer(), now)
    }

    /// A fresh unique payload id.
    pub fn new_payload(&mut self) -> u64 {
        let id = self.next_payload_id;
        self.next_payload_id += 1;
        id
    }

    pub fn new_ctx(&mut self) -> u64 {
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        ctx
    }

    /// `propose` on `node` returned `index` for `writer`'s write `payload_id`.
    pub fn on_proposed(
        &mut self,
        writer: usize,
        node: NodeId,
        index: Index,
        payload_id: u64,
        now: Time,
    ) {
        debug_assert!(self.writers[writer].outstanding.is_none());
        self.stats.proposed += 1;
        let write = PendingWrite { writer, payload_id };
        // An older write at this index on this node lost its place in that node's log.
        if let Some(displaced) = self.writes[node as usize].insert(index, write) {
            self.resolve(node, index, displaced, false);
        }
        self.writers[writer] = Writer {
            leader_guess: Some(node),
            outstanding: Some(Outstanding {
                node,
                index,
                deadline: now + self.write_timeout,
            }),
        };
    }

    /// `node` applied `entry`: acknowledges the write proposed there at that index, or learns it
    /// was superseded (another entry won the index).
    pub fn on_apply(&mut self, node: NodeId, entry: &Entry) {
        let Some(write) = self.writes[node as usize].remove(&entry.index) else {
            return;
        };
        let ours = entry.kind == EntryKind::Normal && *entry.data == payload(write.payload_id);
        self.resolve(node, entry.index, write, ours);
    }

    fn resolve(&mut self, node: NodeId, index: Index, write: PendingWrite, acked: bool) {
        if acked {
            self.stats.acked += 1;
            self.acked_floor = self.acked_floor.max(index);
            if write.writer == self.probe_writer() {
                self.probe.committed_index = Some(index);
            }
        } else {
            self.stats.superseded += 1;
        }
        let writer = &mut self.writers[write.writer];
        if writer
            .outstanding
            .is_some_and(|outstanding| (outstanding.node, outstanding.index) == (node, index))
        {
            writer.outstanding = None;
        }
    }

    /// `read_index(ctx)` was accepted by `node`: the read begins now.
    pub fn on_read_begun(&mut self, node: NodeId, ctx: u64) {
        self.stats.reads_begun += 1;
        let reads = &mut self.reads[node as usize];
        reads.push(PendingRead {
            ctx,
            acked_floor: self.acked_floor,
            read_index: None,
        });
        if reads.len() > READS_PER_NODE_MAX {
            reads.remove(0);
        }
    }

    /// The core says the read may be served once `state.index` is applied. A ctx this node's
    /// incarnation never issued (a reply that outlived a crash, a duplicate) is ignored.
    pub fn on_read_state(&mut self, node: NodeId, state: ReadState) -> Result<(), Violation> {
        let Some(read) = self.reads[node as usize]
            .iter_mut()
            .find(|read| read.ctx == state.ctx && read.read_index.is_none())
        else {
            return Ok(());
        };
        read.read_index = Some(state.index);
        check_read(
            node,
            state.ctx,
            "its read index",
            state.index,
            read.acked_floor,
        )
    }

    pub fn on_read_failure(&mut self, node: NodeId, ctx: u64) {
        let reads = &mut self.reads[node as usize];
        if let Some(position) = reads.iter().position(|read| read.ctx == ctx) {
            reads.remove(position);
            self.stats.reads_failed += 1;
        }
    }

    /// Serves every read on `node` whose index is applied, and says what each saw.
    pub fn serve_reads(
        &mut self,
        node: NodeId,
        applied_index: Index,
        applied_commands: u64,
    ) -> Result<Vec<ServedRead>, Violation> {
        let mut served = Vec::new();
        let reads = &mut self.reads[node as usize];
        let mut position = 0;
        while position < reads.len() {
            let read = reads[position];
            match read.read_index {
                Some(read_index) if read_index <= applied_index => {
                    reads.remove(position);
                    check_read(
                        node,
                        read.ctx,
                        "its applied index",
                        applied_index,
                        read.acked_floor,
                    )?;
                    self.stats.reads_served += 1;
                    served.push(ServedRead {
                        node,
                        ctx: read.ctx,
                        read_index,
                        applied_index,
                        applied_commands,
                    });
                }
                _ => position += 1,
            }
        }
        Ok(served)
    }

    /// `node` installed a leader's snapshot up to `index`: it will not apply the entries up to
    /// there one by one, so writes it held at those indexes have unknown outcomes (a real server
    /// would tell their clients so).
    pub fn on_snapshot_installed(&mut self, node: NodeId, index: Index) {
        let writes = &mut self.writes[node as usize];
        let kept = writes.split_off(&(index + 1));
        let skipped = std::mem::replace(writes, kept);
        self.stats.abandoned += skipped.len() as u64;
        for (at, write) in skipped {
            let writer = &mut self.writers[write.writer];
            if writer
                .outstanding
                .is_some_and(|outstanding| (outstanding.node, outstanding.index) == (node, at))
            {
                writer.outstanding = None;
            }
        }
    }

    /// The node crashed: the writes and reads it held have unknown outcomes.
    pub fn on_crash(&mut self, node: NodeId) {
        self.on_leadership_lost(node);
        self.reads[node as usize].clear();
    }

    /// The node stopped leading: like a real server, it answers its writers "outcome unknown"
    /// (the entries may still commit under the next leader), and they move on.
    pub fn on_leadership_lost(&mut self, node: NodeId) {
        let writes = std::mem::take(&mut self.writes[node as usize]);
        self.stats.abandoned += writes.len() as u64;
        for writer in &mut self.writers {
            if writer
                .outstanding
                .is_some_and(|outstanding| outstanding.node == node)
            {
                writer.outstanding = None;
            }
        }
    }
}
