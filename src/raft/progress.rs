//! What a leader knows about one follower's log: `match_index`, `next_index` (Figure 2), and how
//! eagerly to send it entries.
//!
//! It owns the per-follower flow control (probe, replicate or snapshot; the in-flight window).
//! It never builds messages or reads the log; `replication.rs` asks it what may be sent and tells
//! it what was sent and acknowledged.
//!
//! States: `Probe` finds where the logs match, `Replicate` streams entries, `Snapshot` waits for
//! the follower to install a snapshot (the entries it needs were compacted). A follower leaves
//! `Snapshot` when it acknowledges a match at or past the snapshot (to `Replicate`), or after
//! `snapshot_timeout_ticks` without that (to `Probe`, which sends the snapshot again if the
//! entries are still compacted: the retry for a lost InstallSnapshot or answer).

use super::types::Index;
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ProgressState {
    /// The leader does not know where the follower's log matches its own: one AppendEntries at a
    /// time, backing off on each rejection, until one succeeds.
    Probe,
    /// The follower's log matches up to `match_index`: stream entries optimistically, advancing
    /// `next_index` on send, with up to `max_inflight_msgs` AppendEntries unacknowledged.
    Replicate,
    /// An InstallSnapshot up to `pending` was sent because the entries the follower needs are
    /// compacted: no AppendEntries until it acknowledges `match_index >= pending` (heartbeats
    /// still go out). Invariant: `next_index == pending + 1` on entry.
    Snapshot { pending: Index },
}

#[derive(Debug)]
pub(super) struct Progress {
    /// Highest index known to match the leader's log and be durable on the follower.
    /// Invariant: `match_index <= next_index - 1`; never decreases within a term.
    pub(super) match_index: Index,
    /// Next index to send. Invariant: `next_index <= leader's last_index + 1`.
    pub(super) next_index: Index,
    pub(super) state: ProgressState,
    /// Probe only: an AppendEntries is out and unanswered. A heartbeat response clears it so a
    /// lost probe is retried.
    pub(super) probe_sent: bool,
    /// Replicate only: the last index of each unacknowledged AppendEntries, oldest first.
    inflight: VecDeque<Index>,
    /// Heard from since the last check-quorum round.
    pub(super) recent_active: bool,
    /// Highest commit index this follower has been sent, so a commit advance is told once.
    pub(super) commit_sent: Index,
    /// Replicate only: `match_index` at the last heartbeat response, and how many heartbeat
    /// responses in a row saw it unchanged while entries were outstanding. A pipeline whose
    /// messages were lost makes no progress; after two such heartbeats the leader checks where
    /// the follower really is.
    match_at_heartbeat: Index,
    stalled_heartbeats: u32,
    /// Snapshot only: ticks since the InstallSnapshot was sent.
    pub(super) snapshot_elapsed: u32,
    /// Ticks since the follower last answered (an AppendEntries or a heartbeat): a learner is
    /// promoted only if it answered within an election timeout.
    pub(super) silent_ticks: u32,
}

impl Progress {
    pub(super) fn new(next_index: Index, max_inflight_msgs: usize) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::with_capacity(max_inflight_msgs),
            recent_active: false,
            commit_sent: 0,
            match_at_heartbeat: 0,
            stalled_heartbeats: 0,
            snapshot_elapsed: 0,
            silent_ticks: 0,
        }
    }

    /// A new leadership term starts: nothing is known about the follower.
    pub(super) fn reset(&mut self, next_index: Index) {
        self.match_index = 0;
        self.next_index = next_index;
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflight.clear();
        self.recent_active = false;
        self.commit_sent = 0;
        self.match_at_heartbeat = 0;
        self.stalled_heartbeats = 0;
        self.snapshot_elapsed = 0;
    }

    pub(super) fn become_probe(&mut self, next_index: Index) {
        self.state = ProgressState::Probe;
        self.next_index = next_index.max(self.match_index + 1);
        self.probe_sent = false;
        self.inflight.clear();
        self.debug_check();
    }

    pub(super) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflight.clear();
        self.stalled_heartbeats = 0;
        self.match_at_heartbeat = self.match_index;
    }

    /// An InstallSnapshot up to `pending` was sent: pause AppendEntries until it is acknowledged
    /// or `snapshot_timeout_ticks` pass.
    pub(super) fn become_snapshot(&mut self, pending: Index) {
        self.state = ProgressState::Snapshot { pending };
        self.next_index = pending.max(self.match_index) + 1;
        self.probe_sent = false;
        self.inflight.clear();
        self.snapshot_elapsed = 0;
        self.debug_check();
    }

    /// Snapshot only: one tick without the acknowledgement. Returns true when the snapshot timed
    /// out (the caller drops to probe, which re-sends it if still needed).
    pub(super) fn tick_snapshot(&mut self, timeout_ticks: u32) -> bool {
        if !matches!(self.state, ProgressState::Snapshot { .. }) {
            return false;
        }
        self.snapshot_elapsed = self.snapshot_elapsed.saturating_add(1);
        self.snapshot_elapsed >= timeout_ticks
    }

    /// True when no AppendEntries may be sent now.
    pub(super) fn is_paused(&self, max_inflight_msgs: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= max_inflight_msgs,
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// An AppendEntries ending at `last_index` (with `count` entries) was sent.
    pub(super) fn on_sent(&mut self, last_index: Index, count: usize) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                if count > 0 {
                    debug_assert!(last_index + 1 > self.next_index);
                    self.next_index = last_index + 1;
                    self.inflight.push_back(last_index);
                }
            }
            ProgressState::Snapshot { .. } => {
                debug_assert!(false, "AppendEntries sent in snapshot state");
            }
        }
        self.debug_check();
    }

    /// The follower acknowledged a match at `index`. Returns whether `match_index` advanced.
    pub(super) fn on_ack(&mut self, index: Index) -> bool {
        let advanced = index > self.match_index;
        if advanced {
            self.match_index = index;
            self.next_index = self.next_index.max(index + 1);
        }
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        self.probe_sent = false;
        self.debug_check();
        advanced
    }

    /// A heartbeat response arrived. Returns true when a replicating pipeline looks stalled
    /// (entries outstanding, no acknowledgement over two heartbeats) and should be re-probed.
    pub(super) fn on_heartbeat_response(&mut self, leader_last_index: Index) -> bool {
        match self.state {
            ProgressState::Probe => {
                // Resume probing: the previous probe or its answer may have been lost.
                self.probe_sent = false;
                false
            }
            ProgressState::Replicate => {
                if self.match_index >= leader_last_index
                    || self.match_index != self.match_at_heartbeat
                {
                    self.match_at_heartbeat = self.match_index;
                    self.stalled_heartbeats = 0;
                    return false;
                }
                self.stalled_heartbeats += 1;
                if self.stalled_heartbeats >= 2 {
                    self.stalled_heartbeats = 0;
                    return true;
                }
                false
            }
            // Only the acknowledgement or the timeout ends the wait.
            ProgressState::Snapshot { .. } => false,
        }
    }

    pub(super) fn debug_check(&self) {
        debug_assert!(
            self.match_index < self.next_index,
            "match_index {} must be below next_index {}",
            self.match_index,
            self.next_index
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_window_fills_and_drains() {
        let mut pr = Progress::new(1, 2);
        pr.become_replicate();
        pr.on_sent(3, 3);
        pr.on_sent(5, 2);
        assert!(pr.is_paused(2));
        assert_eq!(pr.next_index, 6);
        assert!(pr.on_ack(3));
        assert!(!pr.is_paused(2));
        assert!(!pr.on_ack(2), "stale ack does not move match");
        assert_eq!(pr.match_index, 3);
    }

    #[test]
    fn probe_sends_one_at_a_time() {
        let mut pr = Progress::new(5, 4);
        assert!(!pr.is_paused(4));
        pr.on_sent(7, 3);
        assert!(pr.is_paused(4));
        assert_eq!(pr.next_index, 5, "probe does not advance next on send");
        assert!(!pr.on_heartbeat_response(7));
        assert!(!pr.is_paused(4));
    }

    #[test]
    fn stalled_pipeline_is_detected_after_two_heartbeats() {
        let mut pr = Progress::new(1, 4);
        pr.become_replicate();
        pr.on_sent(10, 10);
        assert!(!pr.on_heartbeat_response(10));
        assert!(pr.on_heartbeat_response(10));
        pr.on_ack(10);
        assert!(!pr.on_heartbeat_response(10));
    }

    #[test]
    fn snapshot_state_pauses_until_timeout() {
        let mut pr = Progress::new(3, 4);
        pr.become_snapshot(10);
        assert_eq!(pr.next_index, 11);
        assert!(pr.is_paused(4));
        assert!(!pr.on_heartbeat_response(20));
        assert!(pr.is_paused(4), "heartbeats do not end the wait");
        assert!(!pr.tick_snapshot(3));
        assert!(!pr.tick_snapshot(3));
        assert!(pr.tick_snapshot(3));
        pr.become_probe(pr.match_index + 1);
        assert!(!pr.is_paused(4));
        assert_eq!(pr.next_index, 1);
        assert!(!pr.tick_snapshot(3), "only counts in snapshot state");
    }
}
