//! Log replication (§5.3) and commit (§5.4): the leader's AppendEntries and heartbeats, the
//! follower's consistency check, and the quorum rule that advances `commit_index`.
//!
//! This file owns what crosses the wire about the log. It never decides roles (except a
//! check-quorum step-down) and never persists anything: the follower's acknowledgements go out
//! through `persisted_messages`, after the driver made the acknowledged entries durable.

use super::membership::Membership;
use super::node::Raft;
use super::progress::ProgressState;
use super::types::*;

impl Raft {
    /// Leader: one tick toward the next heartbeat, the next check-quorum round and a transfer's
    /// deadline.
    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed = self.heartbeat_elapsed.saturating_add(1);
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                // We may be the stale side of a partition: stop serving, let a quorum elect.
                log::debug!(
                    "node {} steps down: no quorum heard in term {}",
                    self.id,
                    self.term
                );
                self.become_follower(self.term, None);
                return;
            }
        }
        if self.lead_transferee.is_some() {
            self.transfer_elapsed = self.transfer_elapsed.saturating_add(1);
            if self.transfer_elapsed >= self.config.election_ticks {
                // The target did not win within an election timeout: keep leading (§3.10).
                self.lead_transferee = None;
                self.transfer_elapsed = 0;
            }
        }
        if let Some((id, index, ticks)) = self.lingering {
            let told = self
                .member_pos(id)
                .is_none_or(|pos| self.progress[pos].commit_sent >= index);
            if told || ticks >= self.config.election_ticks {
                self.lingering = None;
                self.sync_members();
            } else {
                self.lingering = Some((id, index, ticks + 1));
            }
        }
        let timeout = self.config.snapshot_timeout_ticks;
        for pos in 0..self.progress.len() {
            let pr = &mut self.progress[pos];
            pr.silent_ticks = pr.silent_ticks.saturating_add(1);
            if Some(pos) != self.self_pos && pr.tick_snapshot(timeout) {
                // No acknowledgement of the snapshot: it or its answer was lost (or the follower
                // is down). Probe again; if the entries are still compacted, that re-sends it.
                let next_index = pr.match_index + 1;
                pr.become_probe(next_index);
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// Check-quorum: did a quorum (ourselves included) answer since the last round? Clears the
    /// marks for the next round.
    fn quorum_recently_active(&mut self) -> bool {
        // The voters of the configuration in force; a leader whose removal is pending does not
        // count itself.
        let voters = self.voter_count;
        let quorum = voters / 2 + 1;
        let mut active = 0;
        for (pos, pr) in self.progress.iter_mut().enumerate() {
            // Learners (after the voters) answer too, but never count.
            if pos < voters && (Some(pos) == self.self_pos || pr.recent_active) {
                active += 1;
            }
            pr.recent_active = false;
        }
        active >= quorum
    }

    /// Heartbeats to every follower, carrying the commit index and the ReadIndex round.
    pub(super) fn broadcast_heartbeat(&mut self) {
        let round = self.next_heartbeat_round();
        for pos in 0..self.members.len() {
            if Some(pos) != self.self_pos {
                self.send_heartbeat(pos, round);
            }
        }
    }

    /// `leader_commit` is clamped to the follower's `match_index`: past it the follower's log may
    /// still hold entries that are not ours, and it must not commit those.
    fn send_heartbeat(&mut self, pos: usize, read_round: u64) {
        let pr = &mut self.progress[pos];
        let leader_commit = self.log.commit_index().min(pr.match_index);
        pr.commit_sent = pr.commit_sent.max(leader_commit);
        let to = self.members[pos];
        self.send(
            to,
            MessageBody::Heartbeat {
                leader_commit,
                read_round,
            },
        );
    }

    /// Called from `ready()`: send every follower what its progress allows, and tell followers
    /// that got no AppendEntries about a commit advance with a heartbeat.
    pub(super) fn flush_replication(&mut self) {
        if self.reads.round_requested {
            self.broadcast_heartbeat();
        }
        for pos in 0..self.members.len() {
            if Some(pos) == self.self_pos {
                continue;
            }
            let mut sent = false;
            while self.can_send_append(pos) {
                self.send_append(pos);
                sent = true;
            }
            if !sent && self.commit_to_propagate(pos) {
                let round = self.reads.read_round;
                self.send_heartbeat(pos, round);
            }
        }
    }

    /// Whether `flush_replication` would send anything.
    pub(super) fn replication_pending(&self) -> bool {
        self.reads.round_requested
            || (0..self.members.len()).any(|pos| {
                Some(pos) != self.self_pos
                    && (self.can_send_append(pos) || self.commit_to_propagate(pos))
            })
    }

    fn commit_to_propagate(&self, pos: usize) -> bool {
        let pr = &self.progress[pos];
        self.log.commit_index().min(pr.match_index) > pr.commit_sent
    }

    /// Probe: one AppendEntries at a time, also an empty one to find where logs match.
    /// Replicate: keep sending while there are entries and room in the in-flight window.
    fn can_send_append(&self, pos: usize) -> bool {
        let pr = &self.progress[pos];
        if pr.is_paused(self.config.max_inflight_msgs) {
            return false;
        }
        let has_entries = pr.next_index <= self.log.last_index();
        match pr.state {
            ProgressState::Probe => has_entries || pr.match_index + 1 < pr.next_index,
            ProgressState::Replicate => has_entries,
            ProgressState::Snapshot { .. } => false,
        }
    }

    /// One AppendEntries from `next_index`: at most `max_msg_bytes` of entries, at least one.
    /// If the entry at `next_index - 1` is compacted (its term unknown), an InstallSnapshot
    /// instead.
    fn send_append(&mut self, pos: usize) {
        let pr = &self.progress[pos];
        let prev_log_index = pr.next_index - 1;
        // Invariant `next_index <= last_index + 1`, and a leader never truncates its log, so the
        // entry at `prev_log_index` exists unless it was compacted. (Index 0 always has a term,
        // so the test is on `next_index` itself: the entries to send must be held.)
        let prev_log_term = match self.log.term(prev_log_index) {
            Some(term) if pr.next_index >= self.log.first_index() => term,
            _ => {
                self.send_snapshot(pos);
                return;
            }
        };
        let entries = self
            .log
            .entries_from(pr.next_index, self.config.max_msg_bytes);
        let count = entries.len();
        let last_sent = prev_log_index + count as Index;
        let leader_commit = self.log.commit_index();
        let pr = &mut self.progress[pos];
        pr.on_sent(last_sent, count);
        // The follower commits up to min(leader_commit, last new entry) if this arrives.
        pr.commit_sent = pr.commit_sent.max(leader_commit.min(last_sent));
        let to = self.members[pos];
        self.send(
            to,
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            },
        );
    }

    /// The follower needs entries we compacted: send our snapshot's meta (the driver attaches
    /// the data) and wait in snapshot state for the acknowledgement.
    fn send_snapshot(&mut self, pos: usize) {
        let Some(snapshot) = self.log.snapshot() else {
            // The offset is never above the snapshot, so a compacted entry implies a snapshot.
            debug_assert!(false, "entry compacted without a snapshot");
            self.progress[pos].become_probe(1);
            return;
        };
        let to = self.members[pos];
        log::debug!(
            "node {}: sending snapshot (index {}, term {}) to {to}",
            self.id,
            snapshot.index,
            snapshot.term
        );
        self.progress[pos].become_snapshot(snapshot.index);
        // The configuration in force at the snapshot's index: the entries that made it are
        // compacted, and the follower takes this one when it installs.
        let membership = self.history.at(snapshot.index).clone();
        self.send(
            to,
            MessageBody::InstallSnapshot {
                snapshot,
                membership,
            },
        );
    }

    /// Leader: a follower answered an AppendEntries (or an InstallSnapshot). On failure
    /// `match_index` carries the `prev_log_index` that was rejected.
    pub(super) fn handle_append_response(
        &mut self,
        from_pos: usize,
        success: bool,
        match_index: Index,
        reject_hint: RejectHint,
    ) {
        let last_index = self.log.last_index();
        self.progress[from_pos].recent_active = true;
        self.progress[from_pos].silent_ticks = 0;
        if success {
            if match_index > last_index {
                return; // We never sent that far: malformed.
            }
            let pr = &mut self.progress[from_pos];
            let advanced = pr.on_ack(match_index);
            match pr.state {
                ProgressState::Probe if pr.match_index == match_index => {
                    // Found where the logs match: stream from here.
                    pr.become_replicate();
                }
                ProgressState::Snapshot { pending } if pr.match_index >= pending => {
                    // The follower installed the snapshot (or already held it): stream on.
                    pr.become_replicate();
                }
                _ => {}
            }
            let caught_up = pr.match_index == last_index;
            if advanced {
                self.maybe_commit();
            }
            let from = self.members[from_pos];
            if caught_up && self.lead_transferee == Some(from) {
                self.send(from, MessageBody::TimeoutNow);
            }
        } else {
            let rejected = match_index;
            let pr = &self.progress[from_pos];
            if matches!(pr.state, ProgressState::Snapshot { .. }) {
                return; // Answers an AppendEntries sent before the snapshot; wait for its ack.
            }
            let stale = rejected <= pr.match_index
                || rejected >= pr.next_index
                || (pr.state == ProgressState::Probe && rejected != pr.next_index - 1);
            if stale {
                return; // An answer to an AppendEntries overtaken by later ones.
            }
            let next_index = self
                .next_index_after_rejection(rejected, reject_hint)
                .clamp(pr.match_index + 1, rejected);
            self.progress[from_pos].become_probe(next_index);
        }
    }

    /// Fast back-off (§5.3's optimisation): if we hold entries of the follower's conflicting term,
    /// resume after our last one of that term; otherwise skip the follower's whole term.
    fn next_index_after_rejection(&self, rejected: Index, hint: RejectHint) -> Index {
        if hint.conflict_term == 0 {
            return hint.conflict_index; // The follower's log is shorter: its last index + 1.
        }
        match self.log.last_index_of_term(hint.conflict_term, rejected) {
            Some(index) => index + 1,
            None => hint.conflict_index,
        }
    }

    /// Leader: a follower answered a heartbeat.
    pub(super) fn handle_heartbeat_response(&mut self, from_pos: usize, read_round: u64) {
        let last_index = self.log.last_index();
        let pr = &mut self.progress[from_pos];
        pr.recent_active = true;
        pr.silent_ticks = 0;
        if pr.on_heartbeat_response(last_index) {
            // Entries outstanding and nothing acknowledged for two heartbeats: some AppendEntries
            // or their answers were lost. Ask with an empty AppendEntries at the last index sent:
            // the follower either acknowledges it (answers were lost) or rejects it with a hint
            // (entries were lost), which drops us to probe from where the follower really is.
            self.send_empty_append(from_pos);
        }
        self.on_read_round_ack(from_pos, read_round);
    }

    /// An AppendEntries with no entries at `next_index - 1`: a consistency check only. It takes
    /// no slot in the in-flight window.
    fn send_empty_append(&mut self, pos: usize) {
        let prev_log_index = self.progress[pos].next_index - 1;
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            // Compacted since it was sent: probe from the last acknowledged match instead, which
            // sends the snapshot if the follower needs it.
            let pr = &mut self.progress[pos];
            let next_index = pr.match_index + 1;
            pr.become_probe(next_index);
            return;
        };
        let leader_commit = self.log.commit_index();
        let to = self.members[pos];
        self.send(
            to,
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries: Vec::new(),
                leader_commit,
            },
        );
    }

    /// Leader: commit the highest index a quorum holds durably (§5.3), provided the entry there
    /// is from our own term (§5.4.2, Figure 8: counting replicas of an older term's entry is not
    /// enough). Our own copy counts only up to the index the driver reported durable
    /// (§10.2.1). Returns whether the commit index moved.
    ///
    /// The quorum is a majority of the voters of the configuration in force *at that index*
    /// (`ConfigHistory::quorum_index`): learners never count, and a leader that is removing
    /// itself does not count itself for the removal entry and after it. With single-server
    /// changes any majority of one configuration overlaps any majority of the next, so a
    /// later leader (elected by either) holds every committed entry.
    pub(super) fn maybe_commit(&mut self) -> bool {
        debug_assert_eq!(self.role, Role::Leader);
        let mut scratch = std::mem::take(&mut self.match_scratch);
        let commit = self.log.commit_index();
        let quorum_index = {
            let (id, members, progress) = (self.id, &self.members, &self.progress);
            let durable = self.log.durable_index();
            let match_of = |voter: NodeId| {
                if voter == id {
                    return durable;
                }
                // A voter of an older configuration that is no longer a member counts as
                // holding nothing: conservative.
                members
                    .iter()
                    .position(|&m| m == voter)
                    .map_or(0, |pos| progress[pos].match_index)
            };
            self.history
                .quorum_index(commit, self.log.last_index(), &mut scratch, match_of)
        };
        self.match_scratch = scratch;

        if quorum_index <= self.log.commit_index() {
            return false;
        }
        let from_current_term = self.log.term(quorum_index) == Some(self.term);
        if !from_current_term && !self.config.testing_unsafe_commit_any_term {
            return false;
        }
        self.log.commit_to(quorum_index);
        let change = self.history.last_change_index();
        if change > commit && change <= quorum_index {
            // A change committed. If it removed a node, keep replicating to it until it has
            // been told this commit (so it knows its removal is final and refuses votes), for
            // at most an election timeout (`tick_leader`).
            let config = self.history.effective();
            self.lingering = self
                .members
                .iter()
                .copied()
                .find(|&id| id != self.id && !config.is_member(id))
                .map(|id| (id, change, 0));
            self.sync_members();
        }
        self.release_reads_waiting_for_commit();
        true
    }

    /// Follower: AppendEntries from the leader of our term (Figure 2, receiver implementation).
    /// Every answer goes through `persisted_messages`: a success acknowledges durable entries.
    pub(super) fn handle_append_entries(
        &mut self,
        leader: NodeId,
        prev_log_index: Index,
        prev_log_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: Index,
    ) {
        let reject = |this: &mut Raft, hint: RejectHint| {
            let body = MessageBody::AppendEntriesResponse {
                success: false,
                match_index: prev_log_index,
                reject_hint: hint,
            };
            this.send_persisted(leader, body);
        };
        if prev_log_index > self.log.last_index() {
            // Includes absurd indexes: we simply do not have that entry.
            let hint = self.log.reject_hint(prev_log_index);
            reject(self, hint);
            return;
        }
        if !entries_well_formed(prev_log_index, prev_log_term, self.term, &entries) {
            log::warn!(
                "node {}: malformed AppendEntries from {leader} ignored",
                self.id
            );
            return;
        }
        // Where the log will change (the first entry we do not already hold): configurations
        // from there on revert or take effect, once the append is done.
        let offset = self.log.first_index() - 1;
        let first_written = entries
            .iter()
            .find(|e| e.index > offset && self.log.term(e.index) != Some(e.term))
            .map(|e| e.index);
        let (mut prev_log_index, mut prev_log_term) = (prev_log_index, prev_log_term);
        let commit_index = self.log.commit_index();
        if prev_log_index < commit_index {
            // Our committed prefix is in every leader's log (§5.4.3): skip it, so a delayed or
            // duplicated message can never reach committed entries.
            let skip = (commit_index - prev_log_index) as usize;
            if entries.len() <= skip {
                let body = MessageBody::AppendEntriesResponse {
                    success: true,
                    match_index: commit_index,
                    reject_hint: RejectHint::default(),
                };
                self.send_persisted(leader, body);
                return;
            }
            prev_log_term = entries[skip - 1].term;
            prev_log_index = commit_index;
            entries.drain(..skip);
        }
        match self.log.try_append(prev_log_index, prev_log_term, entries) {
            super::log::AppendOutcome::Appended { last_new } => {
                if let Some(from) = first_written {
                    self.track_log_from(from);
                }
                self.log.commit_to(leader_commit.min(last_new));
                let body = MessageBody::AppendEntriesResponse {
                    success: true,
                    match_index: last_new,
                    reject_hint: RejectHint::default(),
                };
                self.send_persisted(leader, body);
            }
            super::log::AppendOutcome::Rejected(hint) => reject(self, hint),
        }
    }

    /// Follower: InstallSnapshot from the leader of our term (`term`). Every answer is a
    /// success acknowledging what we now hold durably, through `persisted_messages`:
    ///
    /// - at or below our commit index: nothing to install; acknowledge the commit index;
    /// - our log holds `(snapshot.index, snapshot.term)`: keep the log (Log Matching: it holds the
    ///   snapshot's prefix), commit up to it, acknowledge it; the entries are applied normally;
    /// - otherwise the log is replaced by the snapshot and the next Ready reports it
    ///   (`Ready::snapshot`) for the driver to install.
    pub(super) fn handle_install_snapshot(
        &mut self,
        leader: NodeId,
        term: Term,
        snapshot: SnapshotMeta,
        membership: Membership,
    ) {
        if snapshot.term > term || snapshot.index == Index::MAX {
            log::warn!(
                "node {}: malformed InstallSnapshot from {leader} ({snapshot:?} in term {term}) ignored",
                self.id
            );
            return;
        }
        let commit_index = self.log.commit_index();
        let match_index = if snapshot.index <= commit_index {
            commit_index
        } else if self.log.term(snapshot.index) == Some(snapshot.term) {
            self.log.commit_to(snapshot.index);
            snapshot.index
        } else {
            log::debug!(
                "node {}: installing snapshot (index {}, term {}) from {leader}",
                self.id,
                snapshot.index,
                snapshot.term
            );
            self.install_snapshot(snapshot, membership);
            snapshot.index
        };
        let body = MessageBody::AppendEntriesResponse {
            success: true,
            match_index,
            reject_hint: RejectHint::default(),
        };
        self.send_persisted(leader, body);
    }

    /// Follower: a heartbeat from the leader of our term. Its `leader_commit` is already clamped
    /// to what the leader knows we hold. The answer promises nothing about our disk, so it
    /// leaves at once.
    pub(super) fn handle_heartbeat(
        &mut self,
        leader: NodeId,
        leader_commit: Index,
        read_round: u64,
    ) {
        self.log.commit_to(leader_commit.min(self.log.last_index()));
        self.send(leader, MessageBody::HeartbeatResponse { read_round });
    }
}

/// Entries must continue the log from `prev_log_index` one index at a time, with terms that never
/// decrease, starting no lower than `prev_log_term`, and never above the sender's term.
fn entries_well_formed(
    prev_log_index: Index,
    prev_log_term: Term,
    term: Term,
    entries: &[Entry],
) -> bool {
    if prev_log_term > term {
        return false;
    }
    let mut expected_index = prev_log_index;
    let mut min_term = prev_log_term;
    for entry in entries {
        expected_index = match expected_index.checked_add(1) {
            Some(index) => index,
            None => return false,
        };
        if entry.index != expected_index || entry.term < min_term || entry.term > term {
            return false;
        }
        min_term = entry.term;
    }
    true
}
