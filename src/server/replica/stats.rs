//! The replica's counters: what shows group commit working (fdatasyncs, entries per sync,
//! syncs in flight, bytes written) and replication batching (AppendEntries sent, entries per
//! AppendEntries). One place, plain numbers: `status` prints them and the metrics endpoint
//! exports them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::metrics::{EntriesPerSync, Histogram};

#[derive(Clone, Debug, Default)]
pub struct ReplicaStats {
    /// fdatasyncs run on the helper thread (one per group of queued writes).
    pub syncs: u64,
    /// Log entries made durable by those syncs.
    pub entries_synced: u64,
    /// The most entries one sync made durable.
    pub entries_per_sync_max: u64,
    /// Total time spent in fdatasync.
    pub sync_time: Duration,
    /// Log entries appended to the write-ahead log.
    pub entries_written: u64,
    /// Entries made durable per fdatasync.
    pub entries_per_sync: EntriesPerSync,
    /// fdatasync durations (the metrics endpoint's `raftchat_disk_wal_fsync_duration_seconds`).
    pub fsync_seconds: Histogram,
    /// Writes handed to the fsync thread (several may share one sync).
    pub sync_jobs: u64,
    /// AppendEntries messages sent (heartbeats included).
    pub append_entries_sent: u64,
    /// Entries carried by them.
    pub append_entries_entries: u64,
    /// Times the term changed or a new leader was seen.
    pub leader_changes: u64,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    /// Capture-to-written durations of the snapshots taken.
    pub snapshot_seconds: Histogram,
    /// When the snapshot being written was started.
    pub snapshot_started: Option<Instant>,
    /// InstallSnapshots the core asked to send (each streamed as chunks).
    pub snapshots_sent: u64,
    /// Follower: bytes of message history fetched for received snapshots (`HistoryPage`
    /// messages taken), and pages.
    pub history_fetched_bytes: u64,
    pub history_fetched_pages: u64,
    /// Bytes of message history served to followers in `HistoryPage`s.
    pub history_served_bytes: u64,
    /// Per peer: AppendEntries/Heartbeat send to its response (the oldest unanswered one).
    pub round_trip_seconds: BTreeMap<u64, Histogram>,
    /// Per peer: when the oldest unanswered AppendEntries or Heartbeat was sent.
    pub awaiting_response: BTreeMap<u64, Instant>,
}

impl ReplicaStats {
    /// One fdatasync that made `entries` entries durable in `took`.
    pub(super) fn on_sync(&mut self, entries: u64, took: Duration) {
        self.syncs += 1;
        self.entries_synced += entries;
        self.entries_per_sync_max = self.entries_per_sync_max.max(entries);
        self.sync_time += took;
        self.fsync_seconds.observe_duration(took);
    }

    pub fn entries_per_sync_mean(&self) -> f64 {
        ratio(self.entries_synced, self.syncs)
    }

    pub fn entries_per_append_mean(&self) -> f64 {
        ratio(self.append_entries_entries, self.append_entries_sent)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_per_sync_counts_groups_not_jobs() {
        let mut stats = ReplicaStats::default();
        assert_eq!(stats.entries_per_sync_mean(), 0.0);
        stats.on_sync(1, Duration::from_micros(200));
        stats.on_sync(15, Duration::from_micros(300));
        assert_eq!(stats.syncs, 2);
        assert_eq!(stats.entries_synced, 16);
        assert_eq!(stats.entries_per_sync_max, 15);
        assert_eq!(stats.entries_per_sync_mean(), 8.0);
        assert_eq!(stats.sync_time, Duration::from_micros(500));
        assert_eq!(stats.fsync_seconds.count, 2);
    }
}
