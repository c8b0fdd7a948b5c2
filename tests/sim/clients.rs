//! The client workload: unique writes proposed to whoever a client believes leads, and
//! linearizable reads through `read_index`, tracked until they are acknowledged or served.
//!
//! It owns the bookkeeping of outstanding operations and the "acknowledged before" floor that
//! linearizable reads are checked against, plus the liveness probe of the fault-free tail. It
//! never calls a core: the driver does, and reports back what happened.

use std::collections::BTreeMap;

use raftchat::raft::{Entry, EntryKind, Index, NodeId, ReadState};

use super::checker::{check_read, Violation};

/// Outstanding operations a node may hold before the oldest is abandoned (a client timeout).
const PENDING_PER_NODE_MAX: usize = 64;

#[derive(Clone, Copy, Debug)]
struct PendingWrite {
    payload_id: u64,
    probe: bool,
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
    pub superseded: u64,
    pub reads_begun: u64,
    pub reads_served: u64,
    pub reads_failed: u64,
}

/// The liveness probe: a fresh write after the faults stop, acknowledged at `committed_index`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Probe {
    pub active: bool,
    pub in_flight: bool,
    pub committed_index: Option<Index>,
}

pub struct Clients {
    leader_guess: Vec<Option<NodeId>>,
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
    pub fn new(nodes: usize, clients: usize) -> Clients {
        Clients {
            leader_guess: vec![None; clients],
            next_payload_id: 1,
            next_ctx: 1,
            writes: vec![BTreeMap::new(); nodes],
            reads: vec![Vec::new(); nodes],
            acked_floor: 0,
            probe: Probe::default(),
            stats: ClientStats::default(),
        }
    }

    pub fn count(&self) -> usize {
        self.leader_guess.len()
    }

    pub fn leader_guess(&self, client: usize) -> Option<NodeId> {
        self.leader_guess[client]
    }

    /// After `NotLeader { leader_hint }`: try the hint next time (or anyone, if none).
    pub fn redirect(&mut self, client: usize, hint: Option<NodeId>) {
        self.leader_guess[client] = hint;
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

    /// `propose` on `node` returned `index` for `payload_id`.
    pub fn on_proposed(
        &mut self,
        client: usize,
        node: NodeId,
        index: Index,
        payload_id: u64,
        probe: bool,
    ) {
        self.stats.proposed += 1;
        self.leader_guess[client] = Some(node);
        let writes = &mut self.writes[node as usize];
        writes.insert(index, PendingWrite { payload_id, probe });
        if writes.len() > PENDING_PER_NODE_MAX {
            let oldest = *writes.keys().next().expect("not empty");
            writes.remove(&oldest);
        }
        if probe {
            self.probe.in_flight = true;
        }
    }

    /// `node` applied `entry`: acknowledges the write proposed there at that index, or learns it
    /// was superseded (another entry won the index; the client would retry with a new write).
    pub fn on_apply(&mut self, node: NodeId, entry: &Entry) {
        let Some(write) = self.writes[node as usize].remove(&entry.index) else {
            return;
        };
        let ours = entry.kind == EntryKind::Normal && *entry.data == payload(write.payload_id);
        if ours {
            self.stats.acked += 1;
            self.acked_floor = self.acked_floor.max(entry.index);
        } else {
            self.stats.superseded += 1;
        }
        if write.probe {
            self.probe.in_flight = false;
            if ours {
                self.probe.committed_index = Some(entry.index);
            }
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
        if reads.len() > PENDING_PER_NODE_MAX {
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

    /// The node crashed: its clients' outstanding operations have unknown outcomes.
    pub fn on_crash(&mut self, node: NodeId) {
        let writes = std::mem::take(&mut self.writes[node as usize]);
        if writes.values().any(|write| write.probe) {
            self.probe.in_flight = false;
        }
        self.reads[node as usize].clear();
    }
}
