//! Leader election (§5.2) with pre-vote (§9.6), the leader lease that keeps a live leader from
//! being deposed (§9.6/§6.2), and leadership transfer's campaign (§3.10).
//!
//! This file owns campaigning, counting votes and granting them. It never touches the log beyond
//! reading its last entry for the up-to-date check (§5.4.1).

use super::node::Raft;
use super::types::*;

impl Raft {
    /// Follower, pre-candidate, candidate: one tick toward an election timeout.
    pub(super) fn tick_election(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if !self.may_campaign() {
            // The clock keeps running, so a learner's leader lease expires like anyone's.
            return;
        }
        if self.election_elapsed >= self.randomized_election_ticks {
            self.election_elapsed = 0;
            self.campaign(self.config.pre_vote);
        }
    }

    /// Starts a campaign. With `pre_vote`, first ask whether we *could* win in `term + 1` without
    /// changing any state (ours or the voters'); only a pre-vote quorum makes us a candidate.
    /// Leadership transfer calls this with `pre_vote == false`.
    ///
    /// A candidate's RequestVote goes out through `persisted_messages`: its vote for itself in
    /// the new term must be durable first, or a crash could let it vote twice in that term.
    /// Pre-vote requests change nothing, so they leave at once.
    pub(super) fn campaign(&mut self, pre_vote: bool) {
        if !self.may_campaign() {
            return;
        }
        let vote_term = if pre_vote {
            self.become_pre_candidate();
            self.term.saturating_add(1)
        } else {
            self.become_candidate();
            self.term
        };
        // Our own vote counts only if we are a voter of the configuration in force (a node
        // whose removal is pending campaigns on the others' votes alone).
        let self_pos = self.self_pos.filter(|&pos| pos < self.voter_count);
        if let Some(pos) = self_pos {
            self.votes[pos] = Some(true);
        }
        if self.vote_quorum() == Some(true) {
            // A single voter: its own vote is a quorum.
            if pre_vote {
                self.campaign(false);
            } else {
                self.become_leader();
            }
            return;
        }
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        for pos in 0..self.voter_count {
            if Some(pos) == self_pos {
                continue;
            }
            let to = self.members[pos];
            let body = MessageBody::RequestVote {
                pre_vote,
                last_log_index,
                last_log_term,
            };
            self.send_with_term(to, vote_term, body, !pre_vote);
        }
        log::debug!(
            "node {} started {} for term {vote_term}",
            self.id,
            if pre_vote { "pre-vote" } else { "election" }
        );
    }

    /// Who campaigns: a voter of the configuration in force; and a node whose own removal is
    /// appended but not committed (it was a voter of the committed configuration). Such a node
    /// may hold the most up-to-date log; were it silent, the others could be left without
    /// anyone they may elect (the simulator found logs with two different uncommitted
    /// removals, each held by the node it removed). It counts the new configuration's votes,
    /// not its own, and like a leader that removes itself, leads until the removal commits.
    /// Learners, nodes that have not joined, and nodes whose removal committed never campaign.
    pub(super) fn may_campaign(&self) -> bool {
        self.is_voter()
            || (self.history.effective().was_removed(self.id)
                && self.history.at(self.log.commit_index()).is_voter(self.id))
    }

    /// The leader lease (§6.2, §9.6): a node that heard from a live leader less than a minimum
    /// election timeout ago drops higher-term vote requests, so a node rejoining after a partition
    /// cannot depose a healthy leader. Only with check-quorum, which guarantees that a leader
    /// cut off from a quorum steps down and frees its followers' leases.
    ///
    /// Leadership transfer must get through the lease, but RequestVote carries no "transfer"
    /// flag. So the lease covers pre-vote requests and, only when pre-vote is off, real ones: with
    /// pre-vote on, a real RequestVote comes either after a pre-vote quorum (a quorum's leases had
    /// expired) or from a transfer target. The leader itself always lets its transfer target in.
    pub(super) fn in_leader_lease(&self, candidate: NodeId, pre_vote_request: bool) -> bool {
        if !self.config.check_quorum || self.leader.is_none() {
            return false;
        }
        if self.election_elapsed >= self.config.election_ticks {
            return false;
        }
        if self.role == Role::Leader && self.lead_transferee == Some(candidate) {
            return false;
        }
        pre_vote_request || !self.config.pre_vote
    }

    /// RequestVote (§5.2, §5.4.1), or a pre-vote (§9.6). `term` is the message's term: ours,
    /// or for a pre-vote possibly ours + 1 (the caller already moved us to any higher real term).
    pub(super) fn handle_vote_request(
        &mut self,
        candidate: NodeId,
        term: Term,
        pre_vote: bool,
        last_log_index: Index,
        last_log_term: Term,
    ) {
        debug_assert!(term >= self.term);
        // We may vote for the candidate if we already did in this term, or have voted for nobody
        // and follow nobody; a pre-vote for a term beyond ours promises nothing, so it only needs
        // the log check.
        let can_vote = self.voted_for == Some(candidate)
            || (self.voted_for.is_none() && self.leader.is_none())
            || (pre_vote && term > self.term);
        // A node whose removal is committed never grants a vote (it must not help anyone
        // disrupt the cluster), and nobody votes for a candidate its log says was removed: a
        // node whose removal is pending may campaign (see `may_campaign`), but once the removal
        // commits, a majority of the new voters holds it and refuses, so a node whose removal
        // committed never wins. A learner, or a node that does not know it is a member, does answer: it may have been
        // promoted without having heard of it yet (learner-must-vote), and a vote is safe to
        // give whatever the voter's configuration.
        let granted = can_vote
            && !self.removal_committed(self.id)
            && !self.history.effective().was_removed(candidate)
            && self.log.is_up_to_date(last_log_index, last_log_term);
        if granted && !pre_vote {
            // Invariant: at most one vote per term.
            assert!(self.voted_for.is_none() || self.voted_for == Some(candidate));
            assert_eq!(term, self.term);
            self.voted_for = Some(candidate);
            self.election_elapsed = 0;
        }
        // A grant answers in the requested term; a rejection in ours, so a candidate that is
        // behind learns it. A real vote is a promise about our durable vote: send it only after
        // the hard state is on disk.
        let reply_term = if granted { term } else { self.term };
        let body = MessageBody::RequestVoteResponse { pre_vote, granted };
        self.send_with_term(candidate, reply_term, body, !pre_vote);
    }

    /// A vote answer. `term` is the message's term (a pre-vote grant carries our term + 1).
    pub(super) fn handle_vote_response(
        &mut self,
        from_pos: usize,
        term: Term,
        pre_vote: bool,
        granted: bool,
    ) {
        let counts = match self.role {
            Role::PreCandidate => {
                pre_vote
                    && term
                        == if granted {
                            self.term.saturating_add(1)
                        } else {
                            self.term
                        }
            }
            Role::Candidate => !pre_vote && term == self.term,
            Role::Follower | Role::Leader => false,
        };
        // Only a voter's answer counts (the caller passes voters' positions only).
        if !counts || from_pos >= self.votes.len() {
            return;
        }
        self.votes[from_pos] = Some(granted);
        match self.vote_quorum() {
            Some(true) if self.role == Role::PreCandidate => self.campaign(false),
            Some(true) => self.become_leader(),
            // A quorum said no: wait out a fresh election timeout as a follower.
            Some(false) => self.become_follower(self.term, None),
            None => {}
        }
    }

    /// `Some(true)` once a quorum granted, `Some(false)` once a quorum can no longer be reached.
    fn vote_quorum(&self) -> Option<bool> {
        // The configuration in force (the last in our log, committed or not: §4.1).
        let quorum = self.voter_count / 2 + 1;
        let granted = self.votes.iter().filter(|v| **v == Some(true)).count();
        let rejected = self.votes.iter().filter(|v| **v == Some(false)).count();
        if granted >= quorum {
            Some(true)
        } else if rejected > self.voter_count.saturating_sub(quorum) {
            Some(false)
        } else {
            None
        }
    }
}
