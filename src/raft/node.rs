//! `Raft`: one node's consensus state machine. (API skeleton: bodies are being written.)

use super::types::*;

/// Static configuration of one core. Times are in ticks; the driver decides how long a tick is.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; must be in `voters`.
    pub id: NodeId,
    /// Every voting member, this node included. Owned by the core so membership change can
    /// later make it a replicated value instead of a constant.
    pub voters: Vec<NodeId>,
    /// A follower that hears from no leader for a random time in
    /// `[election_ticks, 2 * election_ticks)` starts an election.
    pub election_ticks: u32,
    /// A leader sends heartbeats every `heartbeat_ticks`; must be less than `election_ticks`.
    pub heartbeat_ticks: u32,
    /// Pre-vote (§9.6): probe for votes before disrupting the cluster with a higher term.
    pub pre_vote: bool,
    /// A leader that hears from no quorum for `election_ticks` steps down.
    pub check_quorum: bool,
    /// Most AppendEntries in flight to one follower in replicate state.
    pub max_inflight_msgs: usize,
    /// Cap on the entry bytes in one AppendEntries (at least one entry is always sent).
    pub max_msg_bytes: usize,
    /// TEST ONLY: commit by a quorum match of *any* entry, ignoring the Figure 8 rule that the
    /// entry must be from the leader's current term. Exists so the simulator can prove it catches
    /// the bug. Never set in a real server.
    pub testing_unsafe_commit_any_term: bool,
}

impl Config {
    /// Sensible defaults for node `id` of `voters`.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        Config {
            id,
            voters,
            election_ticks: 10,
            heartbeat_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 256,
            max_msg_bytes: 1 << 20,
            testing_unsafe_commit_any_term: false,
        }
    }
}

/// What a node had on stable storage when it (re)started.
#[derive(Clone, Debug, Default)]
pub struct Persisted {
    pub hard_state: HardState,
    /// The durable log, contiguous, starting at index 1.
    pub entries: Vec<Entry>,
}

/// Per-peer replication facts the leader knows, for `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: NodeId,
    pub match_index: Index,
    pub next_index: Index,
}

/// A snapshot of a node's state for operators (`status` on the telnet port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit_index: Index,
    pub applied_index: Index,
    pub last_index: Index,
    /// Filled on the leader only.
    pub peers: Vec<PeerStatus>,
}

/// One node's Raft state machine.
pub struct Raft {
    _private: (),
}

impl Raft {
    /// Rebuilds a core from what was persisted. `rng_seed` drives every random choice.
    pub fn new(config: Config, persisted: Persisted, rng_seed: u64) -> Raft {
        let _ = (config, persisted, rng_seed);
        todo!()
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        todo!()
    }

    /// Handles a message from a peer. Messages from unknown nodes or for another node are ignored.
    pub fn step(&mut self, msg: Message) {
        let _ = msg;
        todo!()
    }

    /// Appends one client command to the leader's log; returns its index.
    pub fn propose(&mut self, data: &[u8]) -> Result<Index, RaftError> {
        let _ = data;
        todo!()
    }

    /// Asks for a linearizable read (§6.4). `ctx` comes back in a `ReadState` (or `ReadFailure`).
    /// On a follower the request is forwarded to the leader.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), RaftError> {
        let _ = ctx;
        todo!()
    }

    /// Leader only: hands leadership to `to` once it is caught up (§3.10).
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), RaftError> {
        let _ = to;
        todo!()
    }

    /// Takes everything the driver must act on. Cheap when nothing happened.
    pub fn ready(&mut self) -> Ready {
        todo!()
    }

    /// True when `ready()` would return something.
    pub fn has_ready(&self) -> bool {
        todo!()
    }

    /// Tells the core that Ready `number` (and every earlier one) is durable.
    pub fn advance(&mut self, number: u64) {
        let _ = number;
        todo!()
    }

    pub fn id(&self) -> NodeId {
        todo!()
    }
    pub fn role(&self) -> Role {
        todo!()
    }
    pub fn term(&self) -> Term {
        todo!()
    }
    pub fn leader(&self) -> Option<NodeId> {
        todo!()
    }
    pub fn commit_index(&self) -> Index {
        todo!()
    }
    /// The log as the core sees it (durable or not), for checks and tests.
    pub fn entries(&self) -> &[Entry] {
        todo!()
    }
    pub fn status(&self) -> Status {
        todo!()
    }
}
