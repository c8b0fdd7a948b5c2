//! The vocabulary of the Raft core: terms, indexes, entries, messages and the `Ready` batch.
//!
//! Everything here is plain data. The wire layer encodes these types, the storage layer
//! persists `Entry` and `HardState`, and the simulator passes `Message` values around directly.

use std::sync::Arc;

use super::membership::{ConfChangeError, Membership};

/// A node's id: `0..count` for a cluster started as `server <id> <count> <port>`.
pub type NodeId = u64;
/// A Raft term (§5.1). Term 0 is "before any election"; real terms start at 1.
pub type Term = u64;
/// A log index. Index 0 is the empty prefix; the first entry has index 1.
pub type Index = u64;

/// Entry payloads are reference-counted so a batch sent to N followers shares one copy of the bytes.
pub type Payload = Arc<[u8]>;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// The empty entry a new leader appends so it can commit entries from earlier terms (§5.4.2).
    Noop = 0,
    /// An application command: opaque bytes the state machine interprets.
    Normal = 1,
    /// A single-server membership change: `ConfChange::encode()` then an opaque context the
    /// core never interprets (see `ConfChange::decode_entry`). It takes effect in the core
    /// when appended; the driver applies its context when it is committed.
    ConfChange = 2,
}

impl EntryKind {
    pub fn from_u8(byte: u8) -> Option<EntryKind> {
        match byte {
            0 => Some(EntryKind::Noop),
            1 => Some(EntryKind::Normal),
            2 => Some(EntryKind::ConfChange),
            _ => None,
        }
    }
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub kind: EntryKind,
    pub data: Payload,
}

impl Entry {
    pub fn new(term: Term, index: Index, kind: EntryKind, data: &[u8]) -> Entry {
        Entry {
            term,
            index,
            kind,
            data: Arc::from(data),
        }
    }
}

/// Which prefix of the log a snapshot of the state machine replaces: every entry up to and
/// including `index`, the last of which has `term`. The snapshot's data (the state machine at
/// `index`) never passes through the core; the driver keeps it and carries it to followers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
}

/// The state Raft requires on stable storage before answering any RPC (Figure 2): the current
/// term and the vote cast in it. The log is persisted separately, as entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
    /// The commit index is not required for safety; it is kept so a restarted node can apply
    /// without waiting for a leader. Never persisted larger than the durable log.
    pub commit: Index,
}

/// A message between two cores. `term` is the sender's current term, except for pre-vote
/// requests, which carry the term the sender *would* campaign in (its term + 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// RequestVote (§5.2), or a pre-vote probe (§9.6) that changes no state on the receiver.
    RequestVote {
        pre_vote: bool,
        last_log_index: Index,
        last_log_term: Term,
    },
    RequestVoteResponse {
        pre_vote: bool,
        granted: bool,
    },
    /// AppendEntries (§5.3). Empty `entries` with the follower already matched is a heartbeat
    /// that only carries `leader_commit`.
    AppendEntries {
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    },
    /// On success `match_index` is the last index the follower now holds that matches the leader
    /// (and is durable there). On failure `reject_hint` lets the leader skip, in one round
    /// trip, every entry that cannot match.
    AppendEntriesResponse {
        success: bool,
        match_index: Index,
        reject_hint: RejectHint,
    },
    /// A leadership check carrying the commit index and a ReadIndex round number (§6.4).
    Heartbeat {
        leader_commit: Index,
        read_round: u64,
    },
    HeartbeatResponse {
        read_round: u64,
    },
    /// A follower asks the leader for a read index on behalf of its clients; `ctx` comes back.
    ReadIndex {
        ctx: u64,
    },
    /// `index` is `None` when the leader cannot serve reads now (the follower should retry).
    ReadIndexResponse {
        ctx: u64,
        index: Option<Index>,
    },
    /// Leadership transfer (§3.10): "start an election now, skipping pre-vote".
    TimeoutNow,
    /// Leader → follower (§7): the entries the follower needs next are compacted; install the
    /// leader's snapshot up to `snapshot`. Only the meta travels through the core: the driver
    /// attaches (or streams) the snapshot data beside it. Answered by an AppendEntriesResponse
    /// (success, `match_index` = what the follower now holds durably).
    InstallSnapshot {
        snapshot: SnapshotMeta,
        /// The configuration in force at `snapshot.index` (the log entries that made it are
        /// compacted); a follower that installs the snapshot takes it.
        membership: Membership,
    },
}

/// Why a follower rejected AppendEntries, so the leader can skip every entry that cannot match
/// at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectHint {
    /// The term of the follower's entry at `conflict_index`.
    pub conflict_term: Term,
    /// The last index `<= prev_log_index` where the follower's log could still match the
    /// leader's: the last whose term is `<=` the leader's `prev_log_term` (`RaftLog::reject_hint`).
    pub conflict_index: Index,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Volatile facts the driver may want to log or show: who leads, in which term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
}

/// A linearizable read is safe to serve once the local state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's handle passed to `Raft::read_index`.
    pub ctx: u64,
    pub index: Index,
}

/// A read that cannot be served by this node (no leader, or leadership lost before confirmation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadFailure {
    pub ctx: u64,
    pub leader_hint: Option<NodeId>,
}

/// Everything the core wants done since the last `ready()`. See the crate docs of `raft` for the
/// order in which a driver must act on it.
#[derive(Debug, Default)]
pub struct Ready {
    /// Pass back to `Raft::advance` once `hard_state` and `entries` are durable.
    pub number: u64,
    /// Changed role, term or leader, if any.
    pub soft_state: Option<SoftState>,
    /// Persist before sending `persisted_messages`.
    pub hard_state: Option<HardState>,
    /// Append to the log. If `entries[0].index` is not past the stored last index, the stored
    /// suffix from that index on is replaced (truncate, then append).
    pub entries: Vec<Entry>,
    /// May be sent immediately, before anything in this Ready is durable (e.g. the leader's
    /// AppendEntries: §10.2.1 lets the leader write its log in parallel with replication).
    pub messages: Vec<Message>,
    /// Must not be sent until `hard_state` and `entries` of this Ready are durable (votes,
    /// AppendEntries acknowledgements).
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in index order, contiguous with those handed out before.
    pub committed_entries: Vec<Entry>,
    /// Reads now safe to serve once `index` is applied.
    pub read_states: Vec<ReadState>,
    /// Reads that will not be served; tell the client to retry elsewhere.
    pub read_failures: Vec<ReadFailure>,
    /// A snapshot from the leader replaced this node's log. Before persisting anything of this
    /// Ready (entries, hard state) and before sending its `persisted_messages`, the driver must
    /// install the snapshot data it received for this meta: replace the state machine with it,
    /// make it durable, and reset its write-ahead log so the next entry is `index + 1`.
    /// `committed_entries` (of this Ready and later ones) continue from `index + 1`.
    pub snapshot: Option<SnapshotMeta>,
}

impl Ready {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.snapshot.is_none()
            && self.hard_state.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.read_failures.is_empty()
    }
}

/// Errors the core returns to its caller. Nothing here is a bug; each is an answer to relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftError {
    /// `propose_conf_change` refused the change; the error says why.
    ConfChange(ConfChangeError),
    /// This node is not the leader; `leader_hint` is the leader it last heard from, if any.
    NotLeader { leader_hint: Option<NodeId> },
    /// A leadership transfer is under way; proposals are refused until it ends (§3.10).
    TransferInProgress,
    /// The target of a transfer is not a voter of this cluster, or is this node.
    BadTransferTarget,
}

impl std::fmt::Display for RaftError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RaftError::NotLeader {
                leader_hint: Some(id),
            } => write!(f, "not leader (leader is node {id})"),
            RaftError::NotLeader { leader_hint: None } => write!(f, "not leader (no leader known)"),
            RaftError::TransferInProgress => write!(f, "leadership transfer in progress"),
            RaftError::BadTransferTarget => write!(f, "bad leadership transfer target"),
            RaftError::ConfChange(e) => write!(f, "membership change refused: {e}"),
        }
    }
}

impl std::error::Error for RaftError {}
