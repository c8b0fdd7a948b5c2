//! Linearizable reads without writing to the log: the ReadIndex protocol (dissertation §6.4).
//!
//! The leader (1) waits until an entry of its own term is committed, so its commit index is at
//! least every previously committed entry; (2) records `read_index = commit_index`; (3) confirms it
//! is still leader by hearing a quorum answer a heartbeat round sent *after* the read arrived;
//! then (4) the read may be served once the state machine has applied `read_index`.
//!
//! Reads queued between two `ready()` calls share one heartbeat round (`read_round`), and an answer
//! to a later round confirms every earlier one. A follower forwards reads to its leader and turns
//! the answer into a `ReadState`. Every `ctx` gets exactly one outcome: a `ReadState` or a
//! `ReadFailure` (leadership lost, no leader, or no answer within two election timeouts).
//!
//! This file owns the read queues and the `Raft` methods that drive them. It never reads the
//! log beyond the commit index and never sends anything but heartbeats and read answers.

use super::node::Raft;
use super::types::*;
use std::collections::VecDeque;

/// Who asked: this node's driver (`from == id`) or a follower forwarding for its clients.
#[derive(Clone, Copy, Debug)]
pub(super) struct ReadRequest {
    pub(super) ctx: u64,
    pub(super) from: NodeId,
}

#[derive(Clone, Copy, Debug)]
struct PendingRead {
    request: ReadRequest,
    index: Index,
    round: u64,
}

#[derive(Debug)]
pub(super) struct ReadOnly {
    /// The last heartbeat round broadcast. Never decreases (not even across terms, so an answer
    /// can never confirm a round it did not see).
    pub(super) read_round: u64,
    /// Reads are waiting on round `read_round + 1`: broadcast it at the next `ready()`.
    pub(super) round_requested: bool,
    /// Highest round each member (by position in `members`) acknowledged in this term. Own
    /// position: MAX. Only the voters' (the first `voter_count`) count toward the quorum.
    acks: Vec<u64>,
    /// Reads waiting for a quorum to acknowledge their round; rounds nondecreasing front to back.
    queue: VecDeque<PendingRead>,
    /// Reads that arrived before the leader committed an entry of its term (step 1).
    waiting_for_commit: Vec<ReadRequest>,
    /// Follower side: reads forwarded to the leader, with the ticks they have waited.
    forwarded: Vec<(u64, u32)>,
    /// Scratch for the quorum computation, reused to avoid an allocation per answer.
    scratch: Vec<u64>,
}

impl ReadOnly {
    pub(super) fn new() -> ReadOnly {
        ReadOnly {
            read_round: 0,
            round_requested: false,
            acks: Vec::new(),
            queue: VecDeque::new(),
            waiting_for_commit: Vec::new(),
            forwarded: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The configuration changed from `old` to `new` members: keep each remaining member's
    /// acknowledgement, a new one has acknowledged nothing. (§6.4 with §4.1: a read is
    /// confirmed by a quorum of the configuration in force when the quorum is counted.)
    pub(super) fn remap(&mut self, old: &[NodeId], new: &[NodeId], self_pos: Option<usize>) {
        let acks: Vec<u64> = new
            .iter()
            .enumerate()
            .map(|(pos, id)| {
                if Some(pos) == self_pos {
                    return u64::MAX;
                }
                old.iter()
                    .position(|o| o == id)
                    .and_then(|at| self.acks.get(at).copied())
                    .unwrap_or(0)
            })
            .collect();
        self.acks = acks;
    }

    /// A new leadership term: no acknowledgements carry over.
    fn reset_acks(&mut self, self_pos: Option<usize>) {
        self.acks.fill(0);
        if let Some(pos) = self_pos {
            self.acks[pos] = u64::MAX;
        }
    }

    /// The highest round a quorum of the `voter_count` voters has acknowledged (0 without voters).
    fn quorum_round(&mut self, voter_count: usize) -> u64 {
        self.scratch.clear();
        self.scratch
            .extend_from_slice(self.acks.get(..voter_count).unwrap_or(&[]));
        self.scratch.sort_unstable_by(|a, b| b.cmp(a));
        let quorum = voter_count / 2 + 1;
        self.scratch.get(quorum - 1).copied().unwrap_or(0)
    }

    pub(super) fn has_pending_leader_reads(&self) -> bool {
        !self.queue.is_empty() || !self.waiting_for_commit.is_empty()
    }
}

impl Raft {
    /// Leader: a read from `request.from` (this node or a follower).
    pub(super) fn leader_read(&mut self, request: ReadRequest) {
        debug_assert_eq!(self.role, Role::Leader);
        if !self.committed_in_current_term() {
            self.reads.waiting_for_commit.push(request);
            return;
        }
        self.queue_read(request);
    }

    /// True once an entry of the leader's own term is committed (§6.4 step 1; the no-op makes
    /// this happen promptly after election).
    pub(super) fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.commit_index()) == Some(self.term)
    }

    fn queue_read(&mut self, request: ReadRequest) {
        let index = self.log.commit_index();
        if self.voter_count == 1 && self.is_voter() {
            // A single voter is its own quorum: nobody else can have been elected.
            self.resolve_read(request, index);
            return;
        }
        let round = self.reads.read_round + 1;
        self.reads.round_requested = true;
        self.reads.queue.push_back(PendingRead {
            request,
            index,
            round,
        });
    }

    fn resolve_read(&mut self, request: ReadRequest, index: Index) {
        if request.from == self.id {
            self.read_states.push(ReadState {
                ctx: request.ctx,
                index,
            });
        } else {
            self.send(
                request.from,
                MessageBody::ReadIndexResponse {
                    ctx: request.ctx,
                    index: Some(index),
                },
            );
        }
    }

    /// The leader committed an entry of its own term: reads held back by step 1 may proceed.
    pub(super) fn release_reads_waiting_for_commit(&mut self) {
        if self.reads.waiting_for_commit.is_empty() || !self.committed_in_current_term() {
            return;
        }
        let waiting = std::mem::take(&mut self.reads.waiting_for_commit);
        for request in &waiting {
            self.queue_read(*request);
        }
        // Hand the emptied buffer back to keep its capacity.
        self.reads.waiting_for_commit = waiting;
        self.reads.waiting_for_commit.clear();
    }

    /// Starts the next heartbeat round if reads wait on it; returns the round to put in heartbeats.
    pub(super) fn next_heartbeat_round(&mut self) -> u64 {
        if self.reads.round_requested {
            self.reads.read_round += 1;
            self.reads.round_requested = false;
        }
        self.reads.read_round
    }

    /// Voter at `pos` answered heartbeat round `round`: confirm every read queued at or before it
    /// once a quorum has.
    pub(super) fn on_read_round_ack(&mut self, pos: usize, round: u64) {
        if round > self.reads.read_round || pos >= self.voter_count.min(self.reads.acks.len()) {
            return; // Never sent (a malformed or foreign answer), or a learner's: not counted.
        }
        if self.reads.acks[pos] >= round {
            return;
        }
        self.reads.acks[pos] = round;
        let confirmed = self.reads.quorum_round(self.voter_count);
        while let Some(read) = self.reads.queue.front().copied() {
            if read.round > confirmed {
                break;
            }
            self.reads.queue.pop_front();
            self.resolve_read(read.request, read.index);
        }
    }

    /// Called on becoming leader.
    pub(super) fn reset_reads_for_new_term(&mut self) {
        debug_assert!(!self.reads.has_pending_leader_reads());
        self.reads.round_requested = false;
        self.reads.reset_acks(self.self_pos);
    }

    /// Leadership is lost: every read this node was confirming fails. Followers are told at once
    /// (index `None`) so their clients can retry elsewhere.
    pub(super) fn fail_leader_reads(&mut self) {
        let waiting = std::mem::take(&mut self.reads.waiting_for_commit);
        let queued = std::mem::take(&mut self.reads.queue);
        let requests = waiting
            .into_iter()
            .chain(queued.into_iter().map(|read| read.request));
        for request in requests {
            if request.from == self.id {
                self.read_failures.push(ReadFailure {
                    ctx: request.ctx,
                    leader_hint: self.leader,
                });
            } else {
                self.send(
                    request.from,
                    MessageBody::ReadIndexResponse {
                        ctx: request.ctx,
                        index: None,
                    },
                );
            }
        }
        self.reads.round_requested = false;
    }

    /// Follower: forward a read to the leader, remembering it so it gets exactly one outcome.
    pub(super) fn forward_read(&mut self, leader: NodeId, ctx: u64) {
        self.reads.forwarded.push((ctx, 0));
        self.send(leader, MessageBody::ReadIndex { ctx });
    }

    /// Follower: the leader answered a forwarded read. Unknown `ctx` (duplicate, or already
    /// failed) is ignored.
    pub(super) fn on_read_index_response(&mut self, ctx: u64, index: Option<Index>) {
        let Some(at) = self.reads.forwarded.iter().position(|&(c, _)| c == ctx) else {
            return;
        };
        self.reads.forwarded.swap_remove(at);
        match index {
            Some(index) => self.read_states.push(ReadState { ctx, index }),
            None => self.read_failures.push(ReadFailure {
                ctx,
                leader_hint: self.leader,
            }),
        }
    }

    /// Follower: the leader changed, so forwarded reads will not be answered (or not reliably).
    pub(super) fn fail_forwarded_reads(&mut self) {
        for (ctx, _) in self.reads.forwarded.drain(..) {
            self.read_failures.push(ReadFailure {
                ctx,
                leader_hint: self.leader,
            });
        }
    }

    /// Ages forwarded reads by one tick; those unanswered for two election timeouts fail (the
    /// request or its answer was lost).
    pub(super) fn tick_forwarded_reads(&mut self) {
        if self.reads.forwarded.is_empty() {
            return;
        }
        let limit = self.config.election_ticks.saturating_mul(2);
        let leader_hint = self.leader;
        let failures = &mut self.read_failures;
        self.reads.forwarded.retain_mut(|(ctx, age)| {
            *age += 1;
            if *age >= limit {
                failures.push(ReadFailure {
                    ctx: *ctx,
                    leader_hint,
                });
                return false;
            }
            true
        });
    }
}
