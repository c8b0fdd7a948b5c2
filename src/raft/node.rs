//! `Raft`: one node's consensus state machine, its public API, role changes and the `Ready`
//! hand-off to the driver.
//!
//! The rules themselves live beside it: elections, votes and leadership transfer in
//! `election.rs`; AppendEntries, heartbeats and commit in `replication.rs`; ReadIndex in
//! `read_only.rs`. This file owns the node's persistent state (term, vote, log) and what has been
//! handed to the driver. It never does IO: everything leaves through `ready()`.

use super::log::RaftLog;
use super::membership::{ConfChange, ConfChangeError, ConfigHistory, Membership};
use super::progress::Progress;
use super::read_only::{ReadOnly, ReadRequest};
use super::types::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;

/// Static configuration of one core. Times are in ticks; the driver decides how long a tick is.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; in `voters`, or in `learners` for a node that only follows.
    pub id: NodeId,
    /// The *bootstrap* configuration's voters: the configuration at index 0, used only when the
    /// node has no snapshot (`Persisted::membership` is `None`). From then on the configuration
    /// is replicated state: the first entry of a new cluster's log carries this bootstrap
    /// configuration, `ConfChange` entries change it, snapshots carry it. A node joining an
    /// existing cluster is started with no voters (it must not be a voter here: a lone voter
    /// elects itself) and learns its configuration from the log's first entry or a snapshot.
    pub voters: Vec<NodeId>,
    /// Non-voting members: the leader replicates to them (log and snapshots) but they never
    /// campaign and never count toward a quorum (commit, check-quorum, ReadIndex). A learner
    /// asked to vote still answers, so a node promoted before it heard of it cannot block an
    /// election (etcd's learner-must-vote fix). An id in both lists is a voter.
    pub learners: Vec<NodeId>,
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
    /// A follower sent an InstallSnapshot that has not acknowledged it within this many ticks is
    /// probed again (which re-sends the snapshot if its entries are still compacted). 0 (the
    /// value `Config::new` sets) means `4 * election_ticks`.
    pub snapshot_timeout_ticks: u32,
    /// A learner is promoted only when its `match_index` is within this many entries of the
    /// leader's last index (and it answered within an election timeout); otherwise
    /// `propose_conf_change(Promote)` fails with `NotCaughtUp`. Default 1,000 entries: a few
    /// milliseconds of replication, so the new voter does not hold back commits.
    pub promote_max_lag: u64,
    /// TEST ONLY: let a new leader propose a membership change before an entry of its own term
    /// committed (the rule that fixed the single-server change bug, Ongaro 2015). Exists so
    /// the simulator and the unit tests can prove they catch the bug. Never set in a server.
    pub testing_unsafe_conf_change_before_term_commit: bool,
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
            learners: Vec::new(),
            election_ticks: 10,
            heartbeat_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 256,
            max_msg_bytes: 1 << 20,
            snapshot_timeout_ticks: 0,
            promote_max_lag: 1_000,
            testing_unsafe_conf_change_before_term_commit: false,
            testing_unsafe_commit_any_term: false,
        }
    }

    /// Repairs values that would make the core misbehave instead of failing: sorted, deduplicated
    /// voters; every count at least 1.
    fn normalized(mut self) -> Config {
        self.voters.sort_unstable();
        self.voters.dedup();
        self.learners.sort_unstable();
        self.learners.dedup();
        let voters = &self.voters;
        self.learners.retain(|l| voters.binary_search(l).is_err());
        self.election_ticks = self.election_ticks.max(1);
        self.heartbeat_ticks = self.heartbeat_ticks.max(1);
        self.max_inflight_msgs = self.max_inflight_msgs.max(1);
        if self.snapshot_timeout_ticks == 0 {
            self.snapshot_timeout_ticks = self.election_ticks.saturating_mul(4);
        }
        debug_assert!(
            self.heartbeat_ticks < self.election_ticks || self.election_ticks == 1,
            "heartbeat_ticks must be less than election_ticks"
        );
        self
    }
}

/// What a node had on stable storage when it (re)started.
#[derive(Clone, Debug, Default)]
pub struct Persisted {
    pub hard_state: HardState,
    /// The latest durable snapshot; the driver has restored its state machine from its data.
    pub snapshot: Option<SnapshotMeta>,
    /// The durable log, contiguous. Without a snapshot it starts at index 1; with one it may
    /// start at any index `<= snapshot.index + 1` (a trailing window before the snapshot).
    /// See [`Raft::new`] for how inconsistent input is repaired.
    pub entries: Vec<Entry>,
    /// The configuration in force at `snapshot.index` (the driver keeps it in its snapshot
    /// file). `None`: the bootstrap configuration of `Config::voters` / `Config::learners`.
    /// `Raft::new` replays the `ConfChange` entries of `entries` after the snapshot on top.
    pub membership: Option<Membership>,
}

/// Per-peer replication facts the leader knows, for `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: NodeId,
    pub match_index: Index,
    pub next_index: Index,
    /// Flow-control state: "probe", "replicate" or "snapshot".
    pub state: &'static str,
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
    /// First log index held in memory (older ones are compacted into the snapshot).
    pub first_index: Index,
    /// Index of the latest snapshot (0 if none).
    pub snapshot_index: Index,
    /// The configuration in force (the last appended, committed or not).
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Filled on the leader only.
    pub peers: Vec<PeerStatus>,
}

/// One node's Raft state machine. See the [module docs](super) for the driver loop and the
/// durability contract.
pub struct Raft {
    pub(super) id: NodeId,
    pub(super) config: Config,
    /// Position of `id` in `members`; `None` for a node that is not a member (joining, or
    /// removed). A voter iff `self_pos < voter_count`: only voters campaign.
    pub(super) self_pos: Option<usize>,
    /// Every member of the configuration in force: the voters (ascending), then the learners
    /// (ascending), then a node whose removal is appended but not yet committed (it is still
    /// replicated to, so it learns it was removed, but never counts). `progress`, `votes`
    /// (voters only) and the read acks are indexed by position here; all are rebuilt, keeping
    /// each id's state, when the configuration changes (`sync_members`).
    pub(super) members: Vec<NodeId>,
    /// How many of `members` are voters.
    pub(super) voter_count: usize,
    /// The configuration at every index of the log (§4.1: a configuration is in force from the
    /// moment its entry is appended, and reverts when that entry is truncated). Invariant: its
    /// effective configuration is the last in the log, or the snapshot's; `members` mirrors it.
    pub(super) history: ConfigHistory,
    /// Leader: the index of this term's first entry (its no-op). No membership change is
    /// proposed before it commits (the fix for the single-server change bug).
    pub(super) term_start: Index,

    // Persistent state (Figure 2), durable through `Ready::hard_state` and `Ready::entries`.
    /// Invariant: never decreases.
    pub(super) term: Term,
    /// Invariant: at most one vote per term — once `Some(c)` in a term it stays `Some(c)`.
    pub(super) voted_for: Option<NodeId>,
    pub(super) log: RaftLog,

    // Volatile state.
    pub(super) role: Role,
    /// The leader of `term`, once known. Invariant: `role == Leader` implies `leader == Some(id)`.
    pub(super) leader: Option<NodeId>,
    /// Ticks since the last election reset (follower/candidate: since hearing from a leader or
    /// granting a vote; leader: since the last check-quorum round).
    pub(super) election_elapsed: u32,
    pub(super) heartbeat_elapsed: u32,
    /// This term's election timeout, drawn from `[election_ticks, 2 * election_ticks)`.
    pub(super) randomized_election_ticks: u32,
    pub(super) rng: SmallRng,
    /// (Pre-)candidate: the answer of each voter (by position) in the current campaign.
    pub(super) votes: Vec<Option<bool>>,
    /// Leader: replication progress of each voter (by position; this node's own slot is unused,
    /// its match is the durable index).
    pub(super) progress: Vec<Progress>,
    /// Leader: the voter leadership is being handed to (§3.10), and for how many ticks.
    pub(super) lead_transferee: Option<NodeId>,
    pub(super) transfer_elapsed: u32,
    pub(super) reads: ReadOnly,

    // Outputs waiting for the next `ready()`.
    pub(super) msgs: Vec<Message>,
    pub(super) persisted_msgs: Vec<Message>,
    pub(super) read_states: Vec<ReadState>,
    pub(super) read_failures: Vec<ReadFailure>,

    // Ready bookkeeping.
    /// Number of the last Ready handed out; `advanced_number <= ready_number`.
    ready_number: u64,
    advanced_number: u64,
    /// Soft and hard state as last reported, to report only changes.
    emitted_soft: SoftState,
    emitted_hard: HardState,
    /// For each Ready that carried entries and is not yet advanced: (number, last index, its term).
    /// Cleared when a snapshot replaces the log: the driver resets its log, so those writes no
    /// longer say anything about the disk.
    unsynced: VecDeque<(u64, Index, Term)>,
    /// A snapshot installed from the leader, to report in the next `Ready::snapshot`.
    pending_snapshot: Option<SnapshotMeta>,
    /// Scratch for the commit quorum, reused across calls.
    pub(super) match_scratch: Vec<Index>,
    /// Whether this node already logged that it was removed.
    removal_logged: bool,
    /// Leader: a node whose removal just committed, still replicated to until it has been sent
    /// that commit: `(id, index of the removal, ticks since)`.
    pub(super) lingering: Option<(NodeId, Index, u32)>,
}

impl Raft {
    /// Rebuilds a core from what was persisted. `rng_seed` drives every random choice.
    ///
    /// The node starts as a follower of no one. The driver has restored its state machine from
    /// `persisted.snapshot` (if any): the applied index starts there and committed entries are
    /// handed out again from `snapshot.index + 1` (from index 1 without a snapshot). The commit
    /// index is `max(hard_state.commit, snapshot.index)` clamped to the log. Disk input never
    /// panics: a log that does not continue the snapshot (gap, or another term at
    /// `snapshot.index`) is discarded, a non-contiguous log is cut at the first bad entry (see
    /// the module docs, "Restart").
    pub fn new(config: Config, persisted: Persisted, rng_seed: u64) -> Raft {
        let config = config.normalized();
        let id = config.id;
        let hard_state = persisted.hard_state;
        let base_index = persisted.snapshot.map_or(0, |s| s.index);
        let base = persisted.membership.unwrap_or_else(|| {
            Membership::from_parts(
                config.voters.iter().copied(),
                config.learners.iter().copied(),
                [],
            )
        });
        let log = RaftLog::restore(persisted.snapshot, persisted.entries, hard_state.commit);
        // Replay the configurations the log holds after the snapshot (Persisted::membership).
        let mut history = ConfigHistory::new(base_index, base);
        track_configurations(id, &mut history, log.entries(), base_index + 1);
        // A log term above the persisted term means the hard state lagged the log on disk; the
        // term is at least that of any entry we hold.
        let term = hard_state.term.max(log.last_term());
        let voted_for = if term == hard_state.term {
            hard_state.voted_for
        } else {
            None
        };
        let mut raft = Raft {
            id,
            self_pos: None,
            members: Vec::new(),
            voter_count: 0,
            history,
            term_start: 0,
            term,
            voted_for,
            log,
            role: Role::Follower,
            leader: None,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_ticks: config.election_ticks,
            rng: SmallRng::seed_from_u64(rng_seed),
            votes: Vec::new(),
            progress: Vec::new(),
            lead_transferee: None,
            transfer_elapsed: 0,
            reads: ReadOnly::new(),
            msgs: Vec::new(),
            persisted_msgs: Vec::new(),
            read_states: Vec::new(),
            read_failures: Vec::new(),
            ready_number: 0,
            advanced_number: 0,
            emitted_soft: SoftState {
                role: Role::Follower,
                term,
                leader: None,
            },
            emitted_hard: hard_state,
            unsynced: VecDeque::new(),
            pending_snapshot: None,
            match_scratch: Vec::new(),
            removal_logged: false,
            lingering: None,
            config,
        };
        raft.sync_members();
        if raft.self_pos.is_none() && !raft.is_removed() {
            log::info!(
                "node {id} is not a member of {:?}: it follows, never campaigns, and learns its \
                 configuration from the leader",
                raft.history.effective()
            );
        }
        raft.randomize_election_timeout();
        raft.check_invariants();
        raft
    }

    /// Advances logical time by one tick: followers and candidates count toward an election,
    /// a leader toward its next heartbeat and check-quorum round.
    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            Role::Follower | Role::PreCandidate | Role::Candidate => self.tick_election(),
        }
        self.tick_forwarded_reads();
        self.check_invariants();
    }

    /// Handles a message from a peer. Messages from this node or for another node are ignored;
    /// so is anything malformed, and a vote request from a node this one knows was removed (it
    /// must not raise anyone's term). Messages from nodes outside the configuration are
    /// handled: a joining node hears from a leader it has no configuration for yet, and a
    /// learner must answer a candidate that promoted it (learner-must-vote). Only members'
    /// answers count. Never panics on message content.
    pub fn step(&mut self, msg: Message) {
        if msg.to != self.id || msg.from == self.id {
            return;
        }
        if matches!(msg.body, MessageBody::RequestVote { .. }) && self.removal_committed(msg.from) {
            return;
        }
        let from_pos = self.member_pos(msg.from);
        if msg.term > self.term {
            if !self.step_higher_term(&msg) {
                return;
            }
        } else if msg.term < self.term {
            self.step_lower_term(&msg);
            return;
        }
        self.step_current_term(from_pos, msg);
        self.check_invariants();
    }

    /// A message from a higher term (§5.1: "if RPC request or response contains term T >
    /// currentTerm: set currentTerm = T, convert to follower"), with the pre-vote and lease
    /// exceptions. Returns false if the message is to be dropped.
    fn step_higher_term(&mut self, msg: &Message) -> bool {
        match msg.body {
            MessageBody::RequestVote { pre_vote, .. } => {
                if self.in_leader_lease(msg.from, pre_vote) {
                    return false;
                }
                if pre_vote {
                    // A pre-vote request carries the term its sender *would* use; answering it
                    // changes nothing here (§9.6).
                    return true;
                }
                self.become_follower(msg.term, None);
            }
            // We asked with a term in our future; a grant is answered in that term. Our term
            // moves only if a quorum grants (then we campaign for real).
            MessageBody::RequestVoteResponse {
                pre_vote: true,
                granted: true,
            } => {}
            // Only a leader sends these: it is the leader of the new term.
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(msg.term, Some(msg.from));
            }
            _ => self.become_follower(msg.term, None),
        }
        true
    }

    /// A message from a lower term is stale and dropped, with two answers that keep the cluster
    /// live:
    ///
    /// - AppendEntries/Heartbeat from a stale leader: when check-quorum or pre-vote is on, this
    ///   node may have raised its term in a partition and can neither win an election (pre-vote
    ///   fails, its log being behind) nor accept the old leader. Answering with our term makes the
    ///   stale leader step down so a new election at a higher term can take us back in (the
    ///   approach of etcd-io/raft).
    /// - A pre-vote from a lower term: reject with our term so the pre-candidate catches up.
    fn step_lower_term(&mut self, msg: &Message) {
        match msg.body {
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
                if self.config.check_quorum || self.config.pre_vote =>
            {
                // `match_index` 0 is below any follower's match, so a leader that is still in
                // this term treats it as a stale rejection.
                self.send(
                    msg.from,
                    MessageBody::AppendEntriesResponse {
                        success: false,
                        match_index: 0,
                        reject_hint: RejectHint::default(),
                    },
                );
            }
            MessageBody::RequestVote { pre_vote: true, .. } => {
                self.send(
                    msg.from,
                    MessageBody::RequestVoteResponse {
                        pre_vote: true,
                        granted: false,
                    },
                );
            }
            _ => {}
        }
    }

    /// A message of our term (or a pre-vote exchange for the next one).
    fn step_current_term(&mut self, from_pos: Option<usize>, msg: Message) {
        let from = msg.from;
        match msg.body {
            MessageBody::RequestVote {
                pre_vote,
                last_log_index,
                last_log_term,
            } => self.handle_vote_request(from, msg.term, pre_vote, last_log_index, last_log_term),
            MessageBody::RequestVoteResponse { pre_vote, granted } => {
                // Only a voter's answer counts.
                if let Some(pos) = from_pos.filter(|&pos| pos < self.voter_count) {
                    self.handle_vote_response(pos, msg.term, pre_vote, granted)
                }
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                if self.accept_leader(from) {
                    self.handle_append_entries(
                        from,
                        prev_log_index,
                        prev_log_term,
                        entries,
                        leader_commit,
                    );
                }
            }
            MessageBody::Heartbeat {
                leader_commit,
                read_round,
            } => {
                if self.accept_leader(from) {
                    self.handle_heartbeat(from, leader_commit, read_round);
                }
            }
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                reject_hint,
            } => {
                if let (Role::Leader, Some(pos)) = (self.role, from_pos) {
                    self.handle_append_response(pos, success, match_index, reject_hint);
                }
            }
            MessageBody::HeartbeatResponse { read_round } => {
                if let (Role::Leader, Some(pos)) = (self.role, from_pos) {
                    self.handle_heartbeat_response(pos, read_round);
                }
            }
            MessageBody::ReadIndex { ctx } => {
                if self.role == Role::Leader {
                    self.leader_read(ReadRequest { ctx, from });
                } else {
                    self.send(from, MessageBody::ReadIndexResponse { ctx, index: None });
                }
            }
            MessageBody::ReadIndexResponse { ctx, index } => {
                if self.role == Role::Follower && self.leader == Some(from) {
                    self.on_read_index_response(ctx, index);
                }
            }
            MessageBody::InstallSnapshot {
                snapshot,
                membership,
            } => {
                if self.accept_leader(from) {
                    self.handle_install_snapshot(from, msg.term, snapshot, membership);
                }
            }
            MessageBody::TimeoutNow => {
                if self.role == Role::Follower && self.leader == Some(from) {
                    // §3.10: the leader asks us to start an election now, skipping pre-vote.
                    self.campaign(false);
                }
            }
        }
    }

    /// A leader's AppendEntries or Heartbeat in our term: recognise it (§5.2: a candidate that
    /// hears from a leader of its term steps down). Returns false if it cannot be our leader.
    fn accept_leader(&mut self, from: NodeId) -> bool {
        match self.role {
            Role::Leader => {
                // Election Safety (§5.2) makes two leaders in one term impossible; only a forged
                // or corrupted message gets here. (The simulator checks this property globally.)
                log::error!(
                    "node {}: leader of term {} got a leader message from {from}",
                    self.id,
                    self.term
                );
                false
            }
            Role::PreCandidate | Role::Candidate => {
                self.become_follower(self.term, Some(from));
                true
            }
            Role::Follower => {
                if self.leader != Some(from) {
                    if self.leader.is_some() {
                        log::error!("node {}: two leaders claim term {}", self.id, self.term);
                        return false;
                    }
                    self.leader = Some(from);
                }
                self.election_elapsed = 0;
                true
            }
        }
    }

    /// Appends one client command to the leader's log; returns its index.
    ///
    /// The entry goes into the in-memory log at once (and into the next `Ready::entries`); it is
    /// sent to followers at the next `ready()`, so many proposals between two `ready()` calls
    /// travel as one AppendEntries per follower.
    pub fn propose(&mut self, data: &[u8]) -> Result<Index, RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.lead_transferee.is_some() {
            return Err(RaftError::TransferInProgress);
        }
        Ok(self.log.append_new(self.term, EntryKind::Normal, data))
    }

    /// Leader only: appends a single-server membership change (§4.1) with an opaque `context`
    /// (the server's address of a new member), and returns its index. The new configuration
    /// is in force from now on, here and on each follower as soon as it appends the entry; it
    /// reverts if the entry is truncated. Refused (`RaftError::ConfChange`) when:
    ///
    /// - a change is appended and not yet committed (one at a time), or no entry of this
    ///   leader's term has committed yet (Ongaro's 2015 fix: a new leader first commits its
    ///   no-op, so a change of an older leader's that it overwrote can never have committed);
    /// - the change breaks the configuration's rules (`Membership::apply`: id taken or removed,
    ///   not a learner, not a member, the last voter);
    /// - `Promote` of a learner that is not caught up: its match lags the last index by more
    ///   than `Config::promote_max_lag`, or it did not answer within an election timeout.
    ///
    /// `Remove(leader)` is allowed: this node keeps leading (not counting itself) until the
    /// entry commits, then hands leadership to the most caught-up voter and steps down.
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
        context: &[u8],
    ) -> Result<Index, RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.lead_transferee.is_some() {
            return Err(RaftError::TransferInProgress);
        }
        let commit = self.log.commit_index();
        let term_start = if self.config.testing_unsafe_conf_change_before_term_commit {
            0
        } else {
            self.term_start
        };
        self.history
            .may_propose(commit, term_start)
            .map_err(RaftError::ConfChange)?;
        self.history
            .effective()
            .apply(change)
            .map_err(RaftError::ConfChange)?;
        if let ConfChange::Promote(id) = change {
            let last_index = self.log.last_index();
            let (match_index, silent) = match self.member_pos(id) {
                Some(pos) => (
                    self.progress[pos].match_index,
                    self.progress[pos].silent_ticks,
                ),
                None => (0, u32::MAX),
            };
            if match_index.saturating_add(self.config.promote_max_lag) < last_index
                || silent >= self.config.election_ticks
            {
                return Err(RaftError::ConfChange(ConfChangeError::NotCaughtUp {
                    id,
                    match_index,
                    last_index,
                }));
            }
        }
        let data = change.entry_data(context);
        let index = self.log.append_new(self.term, EntryKind::ConfChange, &data);
        let appended = self.history.append(index, change);
        // Checked by `apply` above against the same configuration.
        assert!(appended.is_ok(), "a checked change applies");
        log::info!(
            "node {}: proposed {change:?} at index {index} (term {})",
            self.id,
            self.term
        );
        self.sync_members();
        Ok(index)
    }

    /// The configuration in force: the last one appended (committed or not), or the
    /// snapshot's. Reverts when its entry is truncated.
    pub fn membership(&self) -> &Membership {
        self.history.effective()
    }

    /// The configuration in force at the current snapshot's index (the bootstrap one without a
    /// snapshot): what the driver writes into its snapshot file beside the data.
    pub fn snapshot_membership(&self) -> Membership {
        let index = self.log.snapshot().map_or(0, |s| s.index);
        self.history.at(index).clone()
    }

    /// True once this node's configuration in force says it was removed: it never campaigns,
    /// never grants a vote once the removal is committed, and a leader steps down once its
    /// removal commits.
    pub fn is_removed(&self) -> bool {
        self.history.effective().was_removed(self.id)
    }

    /// Asks for a linearizable read (§6.4). `ctx` comes back in a `ReadState` (or `ReadFailure`).
    /// On a follower the request is forwarded to the leader. With no leader known this returns
    /// `NotLeader { leader_hint: None }` and nothing is queued.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), RaftError> {
        if self.role == Role::Leader {
            self.leader_read(ReadRequest { ctx, from: self.id });
            return Ok(());
        }
        match self.leader {
            Some(leader) if self.role == Role::Follower => {
                self.forward_read(leader, ctx);
                Ok(())
            }
            _ => Err(RaftError::NotLeader { leader_hint: None }),
        }
    }

    /// Leader only: hands leadership to `to` once it is caught up (§3.10). Proposals are refused
    /// until the transfer ends: when this node steps down, or after an election timeout without
    /// success (then it simply stays leader).
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if to == self.id {
            return Err(RaftError::BadTransferTarget);
        }
        let Some(pos) = self.voter_pos(to) else {
            return Err(RaftError::BadTransferTarget);
        };
        if self.lead_transferee == Some(to) {
            return Ok(());
        }
        self.lead_transferee = Some(to);
        self.transfer_elapsed = 0;
        if self.progress[pos].match_index == self.log.last_index() {
            self.send(to, MessageBody::TimeoutNow);
        }
        // Otherwise replication catches `to` up and `handle_append_response` sends TimeoutNow.
        Ok(())
    }

    /// Takes everything the driver must act on. Cheap when nothing happened.
    ///
    /// A leader sends pending entries to its followers here (not in `propose`), so a burst of
    /// proposals becomes one AppendEntries per follower.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.flush_replication();
            // After the flush, so followers hear of the commit from us first.
            self.step_down_if_removal_committed();
        }
        self.ready_number += 1;
        let number = self.ready_number;

        let soft = self.soft_state();
        let soft_state = (soft != self.emitted_soft).then(|| {
            self.emitted_soft = soft;
            soft
        });
        let hard = self.hard_state();
        let hard_state = (hard != self.emitted_hard).then(|| {
            self.emitted_hard = hard;
            hard
        });

        let snapshot = self.pending_snapshot.take();
        let entries = self.log.take_unstable();
        if let Some(last) = entries.last() {
            self.unsynced.push_back((number, last.index, last.term));
        }
        let rd = Ready {
            number,
            soft_state,
            hard_state,
            entries,
            messages: std::mem::take(&mut self.msgs),
            persisted_messages: std::mem::take(&mut self.persisted_msgs),
            committed_entries: self.log.take_committed(),
            read_states: std::mem::take(&mut self.read_states),
            read_failures: std::mem::take(&mut self.read_failures),
            snapshot,
        };
        self.check_invariants();
        rd
    }

    /// True when `ready()` would return something.
    pub fn has_ready(&self) -> bool {
        !self.msgs.is_empty()
            || !self.persisted_msgs.is_empty()
            || !self.read_states.is_empty()
            || !self.read_failures.is_empty()
            || self.pending_snapshot.is_some()
            || self.log.has_unstable()
            || self.log.has_committed_to_apply()
            || self.soft_state() != self.emitted_soft
            || self.hard_state() != self.emitted_hard
            || (self.role == Role::Leader && self.replication_pending())
    }

    /// Tells the core that Ready `number` (and every earlier one) is durable.
    ///
    /// Numbers must increase and not exceed the last one issued: a driver that breaks this has
    /// lost track of what is durable, so it panics (in release builds too) rather than let a
    /// leader count writes that may not be on disk. A leader now counts the durable entries
    /// toward its commit quorum.
    pub fn advance(&mut self, number: u64) {
        assert!(
            number > self.advanced_number && number <= self.ready_number,
            "advance({number}) out of order: last advanced {}, last issued {}",
            self.advanced_number,
            self.ready_number
        );
        if number <= self.advanced_number || number > self.ready_number {
            return;
        }
        self.advanced_number = number;
        while let Some(&(ready_number, index, term)) = self.unsynced.front() {
            if ready_number > number {
                break;
            }
            self.unsynced.pop_front();
            self.log.stable_to(index, term);
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
        self.check_invariants();
    }

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn commit_index(&self) -> Index {
        self.log.commit_index()
    }
    /// The in-memory log suffix from `first_index()` (durable or not), for checks and tests.
    pub fn entries(&self) -> &[Entry] {
        self.log.entries()
    }
    /// The first log index held in memory (`last index + 1` if none is).
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }
    /// The last log index (the snapshot's index if the in-memory log is empty).
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }
    /// The term of the entry at `index`, if known: `None` past the end and below
    /// `first_index() - 1` (compacted).
    pub fn log_term(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }
    /// The last index handed out in `committed_entries` or covered by a snapshot.
    pub fn applied_index(&self) -> Index {
        self.log.applied_index()
    }
    /// The latest snapshot this node holds: made by `compact`, installed from a leader, or
    /// restored. A leader sends it to followers whose next entries are compacted.
    pub fn snapshot(&self) -> Option<SnapshotMeta> {
        self.log.snapshot()
    }

    /// The driver made a durable snapshot of the state machine at `snapshot.index` (at or below
    /// the applied index, with the log's term there): remember it as the snapshot to send
    /// followers, and drop in-memory entries below `first_kept` (clamped to at most
    /// `snapshot.index + 1` and never below the current first index). A snapshot older than the
    /// current one, or whose term does not match the log, is ignored with a warning; one past the
    /// applied index is a driver bug (asserted in debug builds, ignored otherwise).
    ///
    /// Returns the entries dropped from memory, so the driver can free them off its hot path
    /// (freeing a hundred thousand payloads takes milliseconds); dropping the `Vec` is fine too.
    pub fn compact(&mut self, snapshot: SnapshotMeta, first_kept: Index) -> Vec<Entry> {
        let (taken, dropped) = self.log.compact(snapshot, first_kept);
        if taken {
            // The snapshot carries the configuration in force at its index from now on.
            self.history.compact(snapshot.index);
        }
        self.check_invariants();
        dropped
    }

    /// Follower side of InstallSnapshot: replace the log by the snapshot (the caller decided the
    /// log does not already hold it). The snapshot is reported in the next Ready; durability
    /// reports of earlier Readies are forgotten (the driver resets its log when installing).
    pub(super) fn install_snapshot(&mut self, snapshot: SnapshotMeta, membership: Membership) {
        self.log.install_snapshot(snapshot);
        self.unsynced.clear();
        self.pending_snapshot = Some(snapshot);
        // The log is gone: the snapshot's configuration is the one in force.
        self.history = ConfigHistory::new(snapshot.index, membership);
        self.sync_members();
    }
    pub fn status(&self) -> Status {
        let peers = if self.role == Role::Leader {
            self.members
                .iter()
                .zip(&self.progress)
                .filter(|(&id, _)| id != self.id)
                .map(|(&id, pr)| PeerStatus {
                    id,
                    match_index: pr.match_index,
                    next_index: pr.next_index,
                    state: match pr.state {
                        super::progress::ProgressState::Probe => "probe",
                        super::progress::ProgressState::Replicate => "replicate",
                        super::progress::ProgressState::Snapshot { .. } => "snapshot",
                    },
                })
                .collect()
        } else {
            Vec::new()
        };
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            leader: self.leader,
            commit_index: self.log.commit_index(),
            applied_index: self.log.applied_index(),
            last_index: self.log.last_index(),
            first_index: self.log.first_index(),
            snapshot_index: self.log.snapshot().map_or(0, |s| s.index),
            voters: self.history.effective().voters().collect(),
            learners: self.history.effective().learners().collect(),
            peers,
        }
    }

    // ----- role changes -------------------------------------------------------------------

    /// Converts to follower of `leader` in `term` (§5.1). Pending reads of a former leader fail;
    /// reads forwarded to a former leader fail.
    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        let was_leader = self.role == Role::Leader;
        let leader_changed = self.leader != leader || term != self.term;
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
        if was_leader {
            self.fail_leader_reads();
        }
        if leader_changed {
            self.fail_forwarded_reads();
        }
    }

    /// Starts a pre-vote round (§9.6): the role changes, the term and vote do not.
    pub(super) fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader);
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.fill(None);
        self.election_elapsed = 0;
        self.randomize_election_timeout();
        self.fail_forwarded_reads();
    }

    /// Starts an election in the next term, voting for ourselves (§5.2).
    pub(super) fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader);
        self.reset(self.term.saturating_add(1));
        self.role = Role::Candidate;
        self.voted_for = Some(self.id);
        self.fail_forwarded_reads();
    }

    /// Won the election: every follower starts in probe at our last index + 1, and a no-op of
    /// this term is appended so earlier entries can commit (§5.4.2) and reads can start (§6.4).
    pub(super) fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate);
        assert_eq!(self.voted_for, Some(self.id));
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        let next_index = self.log.last_index() + 1;
        for pr in &mut self.progress {
            pr.reset(next_index);
        }
        self.reset_reads_for_new_term();
        for pr in &mut self.progress {
            // Heard of through the votes; a learner's clock starts now.
            pr.silent_ticks = 0;
        }
        self.term_start = self.log.last_index() + 1;
        self.lingering = None;
        self.sync_members();
        if self.term_start == 1 {
            // The first entry of a new cluster carries its bootstrap configuration, so a node
            // that joins later and replays the log from index 1 starts from the right one.
            let bootstrap = self.history.effective().encode();
            self.log.append_new(self.term, EntryKind::Noop, &bootstrap);
            track_configurations(self.id, &mut self.history, self.log.entries(), 1);
        } else {
            self.log.append_new(self.term, EntryKind::Noop, &[]);
        }
        log::debug!("node {} became leader of term {}", self.id, self.term);
    }

    /// What every role change shares: adopt `term` (clearing the vote if it is new), forget the
    /// leader and the campaign, restart the election clock with a fresh random timeout.
    fn reset(&mut self, term: Term) {
        assert!(term >= self.term, "term must never decrease");
        if term != self.term {
            self.term = term;
            self.voted_for = None;
        }
        self.leader = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomize_election_timeout();
        self.votes.fill(None);
        self.lead_transferee = None;
        self.transfer_elapsed = 0;
    }

    fn randomize_election_timeout(&mut self) {
        let base = self.config.election_ticks;
        self.randomized_election_ticks = self
            .rng
            .gen_range(base..base.saturating_mul(2).max(base + 1));
    }

    // ----- small helpers -------------------------------------------------------------------

    /// Position of a voter of the configuration in force in `members`.
    pub(super) fn voter_pos(&self, id: NodeId) -> Option<usize> {
        self.members[..self.voter_count]
            .iter()
            .position(|&v| v == id)
    }

    /// Whether `id`'s removal is committed here (in the configuration at the commit index).
    /// Only then does a node refuse to vote, or drop a removed node's vote requests: while the
    /// removal may still be truncated, the old configuration may need that vote (the simulator
    /// found two nodes that had each appended its own uncommitted removal, refusing the votes
    /// the other two needed, forever).
    pub(super) fn removal_committed(&self, id: NodeId) -> bool {
        self.history.at(self.log.commit_index()).was_removed(id)
    }

    /// Whether this node is a voter of the configuration in force (only voters campaign).
    pub(super) fn is_voter(&self) -> bool {
        self.self_pos.is_some_and(|pos| pos < self.voter_count)
    }

    /// The log changed from `from` on (a follower appended, possibly after truncating): the
    /// configurations appended there revert, those in the new entries take effect.
    pub(super) fn track_log_from(&mut self, from: Index) {
        let before = self.history.last_change_index();
        if from <= before {
            self.history.truncate_from(from);
        }
        let first = self.log.first_index();
        let skip = from.saturating_sub(first) as usize;
        let entries = self.log.entries().get(skip..).unwrap_or(&[]);
        let any = entries
            .iter()
            .any(|e| e.kind == EntryKind::ConfChange || (e.index == 1 && !e.data.is_empty()));
        if any {
            track_configurations(self.id, &mut self.history, entries, from);
        }
        if any || from <= before {
            self.sync_members();
        }
    }

    /// Rebuilds `members`, `voter_count`, `self_pos`, `progress`, `votes` and the read acks from
    /// the configuration in force, keeping each remaining id's state. A new member's progress
    /// starts probing at the leader's last index + 1 and counts as heard from.
    pub(super) fn sync_members(&mut self) {
        let m = self.history.effective();
        let committed = self.history.at(self.log.commit_index());
        let leaving = committed.voters().chain(committed.learners());
        let leaving = leaving.filter(|id| m.was_removed(*id));
        let lingering = self
            .lingering
            .map(|(id, _, _)| id)
            .filter(|&id| !committed.is_member(id));
        let members: Vec<NodeId> = m
            .voters()
            .chain(m.learners())
            .chain(leaving)
            .chain(lingering)
            .collect();
        let voter_count = m.voter_count();
        if members == self.members && voter_count == self.voter_count {
            return;
        }
        let next_index = self.log.last_index() + 1;
        let mut old: Vec<(NodeId, Progress, Option<bool>)> = Vec::new();
        let old_votes = std::mem::take(&mut self.votes);
        for (pos, (id, pr)) in self
            .members
            .drain(..)
            .zip(self.progress.drain(..))
            .enumerate()
        {
            old.push((id, pr, old_votes.get(pos).copied().flatten()));
        }
        let old_members: Vec<NodeId> = old.iter().map(|(id, _, _)| *id).collect();
        let mut progress = Vec::with_capacity(members.len());
        let mut votes = vec![None; voter_count];
        for (pos, &id) in members.iter().enumerate() {
            match old.iter().position(|(old_id, _, _)| *old_id == id) {
                Some(at) => {
                    let (_, pr, vote) = old.swap_remove(at);
                    progress.push(pr);
                    if pos < voter_count {
                        votes[pos] = vote;
                    }
                }
                None => {
                    let mut pr = Progress::new(next_index, self.config.max_inflight_msgs);
                    pr.recent_active = true;
                    progress.push(pr);
                }
            }
        }
        self.self_pos = members.iter().position(|&v| v == self.id);
        self.reads.remap(&old_members, &members, self.self_pos);
        self.members = members;
        self.voter_count = voter_count;
        self.progress = progress;
        self.votes = votes;
        if let Some(to) = self.lead_transferee {
            if self.voter_pos(to).is_none() {
                self.lead_transferee = None;
                self.transfer_elapsed = 0;
            }
        }
        if self.is_removed() && !self.removal_logged {
            self.removal_logged = true;
            log::warn!(
                "node {}: removed from the cluster (configuration {:?}); it will not campaign or vote",
                self.id,
                self.history.effective()
            );
        }
    }

    /// Leader: once the entry that removed this node has committed (counting the new
    /// configuration's voters only), hand leadership to the most caught-up voter (TimeoutNow,
    /// if one holds the whole log) and step down. The node then never campaigns again.
    fn step_down_if_removal_committed(&mut self) {
        if self.is_voter() || self.history.last_change_index() > self.log.commit_index() {
            return;
        }
        let last_index = self.log.last_index();
        let target = (0..self.voter_count)
            .filter(|&pos| Some(pos) != self.self_pos)
            .max_by_key(|&pos| self.progress[pos].match_index)
            .filter(|&pos| self.progress[pos].match_index == last_index)
            .map(|pos| self.members[pos]);
        log::info!(
            "node {}: stepping down in term {}: its removal committed (handing over to {target:?})",
            self.id,
            self.term
        );
        if let Some(to) = target {
            self.send(to, MessageBody::TimeoutNow);
        }
        self.become_follower(self.term, None);
    }

    /// Position of a voter or learner in `members` (and `progress`).
    pub(super) fn member_pos(&self, id: NodeId) -> Option<usize> {
        self.members.iter().position(|&v| v == id)
    }

    /// Queues a message that may leave at once (it promises nothing about this node's disk).
    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body, false);
    }

    /// Queues a message that may leave only once this Ready's state is durable.
    pub(super) fn send_persisted(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body, true);
    }

    pub(super) fn send_with_term(
        &mut self,
        to: NodeId,
        term: Term,
        body: MessageBody,
        persisted: bool,
    ) {
        debug_assert_ne!(to, self.id, "a node never messages itself");
        let msg = Message {
            from: self.id,
            to,
            term,
            body,
        };
        if persisted {
            self.persisted_msgs.push(msg);
        } else {
            self.msgs.push(msg);
        }
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            term: self.term,
            leader: self.leader,
        }
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for,
            commit: self.log.commit_index(),
        }
    }

    /// The invariants every public entry point leaves behind: the O(1) contracts always (a
    /// broken one means the core's own state is wrong, and going on could break safety), the
    /// sweeps over the log and the followers' progress in debug builds only.
    fn check_invariants(&self) {
        self.check_contracts();
        if !cfg!(debug_assertions) {
            return;
        }
        self.log.debug_check();
        // The configuration in force is the last one in the log (or the snapshot's).
        let last_conf = self
            .log
            .entries()
            .iter()
            .rev()
            .find(|e| {
                e.index > self.history.base_index()
                    && (e.kind == EntryKind::ConfChange || (e.index == 1 && !e.data.is_empty()))
            })
            .map(|e| e.index);
        // (An entry that is not a valid change changes nothing, so the last change the history
        // holds may be older than the log's last configuration entry, never newer.)
        let last_change = self.history.last_change_index();
        debug_assert!(
            last_change == self.history.base_index() || last_conf.is_some_and(|i| i >= last_change),
            "the configuration in force is the log's last"
        );
        if let Some(pending) = self.pending_snapshot {
            debug_assert_eq!(
                Some(pending),
                self.log.snapshot(),
                "a snapshot to report is the log's snapshot"
            );
        }
        if self.role == Role::Leader {
            let last_index = self.log.last_index();
            for (pos, pr) in self.progress.iter().enumerate() {
                if Some(pos) == self.self_pos {
                    continue;
                }
                pr.debug_check();
                debug_assert!(pr.next_index <= last_index + 1, "next_index past the log");
                if let super::progress::ProgressState::Snapshot { pending } = pr.state {
                    debug_assert!(pending <= last_index, "a snapshot past the log");
                }
            }
        }
    }

    /// Cheap contracts, checked in release builds too: Ready numbering, terms never going back,
    /// at most one vote per term, and the roles' own invariants (a leader leads and voted for
    /// itself in its term; a candidate voted for itself).
    fn check_contracts(&self) {
        assert!(self.advanced_number <= self.ready_number);
        assert!(
            self.members.len() == self.progress.len()
                && self.voter_count <= self.members.len()
                && self.votes.len() == self.voter_count,
            "members, progress and votes follow the configuration"
        );
        if matches!(self.role, Role::Candidate | Role::PreCandidate) {
            assert!(self.may_campaign(), "only a voter campaigns");
        }
        assert!(self.emitted_hard.term <= self.term, "term never decreases");
        if self.emitted_hard.term == self.term && self.emitted_hard.voted_for.is_some() {
            assert_eq!(
                self.voted_for, self.emitted_hard.voted_for,
                "at most one vote per term"
            );
        }
        match self.role {
            Role::Leader => {
                assert_eq!(self.leader, Some(self.id), "a leader leads");
                assert_eq!(self.voted_for, Some(self.id), "a leader voted for itself");
            }
            Role::Candidate => {
                assert_eq!(
                    self.voted_for,
                    Some(self.id),
                    "a candidate voted for itself"
                );
            }
            Role::Follower | Role::PreCandidate => {}
        }
    }
}

/// Applies the configurations carried by `entries` (those at `from` or later, after the
/// history's base) to `history`: each `ConfChange` entry, and a new cluster's first entry with
/// its bootstrap configuration. An entry that is not a valid change (corrupt bytes, or a change
/// its configuration refuses) changes nothing, on every node alike: they all replay the same
/// entries on the same configurations.
fn track_configurations(id: NodeId, history: &mut ConfigHistory, entries: &[Entry], from: Index) {
    for entry in entries {
        if entry.index < from || entry.index <= history.base_index() {
            continue;
        }
        match entry.kind {
            EntryKind::ConfChange => {
                let result = ConfChange::decode_entry(&entry.data)
                    .and_then(|(change, _)| history.append(entry.index, change));
                if let Err(e) = result {
                    log::error!(
                        "node {id}: configuration entry {} ignored: {e}",
                        entry.index
                    );
                }
            }
            EntryKind::Noop if entry.index == 1 && !entry.data.is_empty() => {
                match Membership::decode(&entry.data) {
                    Ok(bootstrap) => history.set(1, bootstrap),
                    Err(e) => log::error!("node {id}: bootstrap configuration ignored: {e}"),
                }
            }
            EntryKind::Noop | EntryKind::Normal => {}
        }
    }
}
