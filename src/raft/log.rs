//! The in-memory Raft log and the indexes that say how far along it is: committed, applied,
//! handed to the driver ("unstable" beyond that), and durable; plus the latest snapshot.
//!
//! It owns the entries, those indexes and the snapshot *meta* (which prefix a snapshot replaces).
//! It never decides *what* is committed (the leader's quorum rule lives in `replication.rs`),
//! never sees snapshot data (the driver owns the state machine image) and never talks to a disk:
//! the driver persists what `take_unstable` hands out and reports back through `stable_to`.
//!
//! # Offset and compaction
//!
//! The log holds a suffix: `entries[i].index == offset + 1 + i`. Entries up to `offset` were
//! dropped by `compact` (their effect lives in a snapshot) or never held (the log was replaced by
//! an installed snapshot). The term at `offset` is remembered (`offset_term`), so `term(offset)`
//! is known and an AppendEntries with `prev_log_index == offset` can still be sent and checked;
//! below `offset` terms are unknown (`None`). Without a snapshot, `offset == 0`.
//!
//! Invariants (asserted in `debug_check`):
//! - `offset <= snapshot.index <= applied_index <= commit_index <= last_index()`, and
//!   `offset == 0` when there is no snapshot;
//! - `applied_index <= durable_index < unstable_index <= last_index() + 1`, `offset <= durable_index`;
//! - entries are contiguous from `offset + 1` with non-decreasing terms, none below `offset_term`.

use super::types::{Entry, EntryKind, Index, RejectHint, SnapshotMeta, Term};
use std::sync::Arc;

/// What happened to an AppendEntries offered to [`RaftLog::try_append`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AppendOutcome {
    /// The consistency check passed; the log now matches the leader's up to `last_new`.
    Appended { last_new: Index },
    /// The log has no entry `(prev_log_index, prev_log_term)`; the hint lets the leader back off.
    Rejected(RejectHint),
}

pub(super) struct RaftLog {
    /// `entries[i].index == offset + 1 + i`.
    entries: Vec<Entry>,
    /// The index just before the first entry held. Invariant: `offset <= snapshot.index` (0
    /// without a snapshot).
    offset: Index,
    /// The term of the entry at `offset` (0 for offset 0).
    offset_term: Term,
    /// The latest snapshot the driver holds durably (made by `compact`, installed from a leader,
    /// or restored). Invariant: `snapshot.index <= applied_index`.
    snapshot: Option<SnapshotMeta>,
    /// Highest index known committed. Invariants: `commit_index <= last_index()`, never decreases.
    commit_index: Index,
    /// Last index handed out through `take_committed` (or covered by the snapshot). Invariant:
    /// `applied_index <= commit_index` and `applied_index <= durable_index`.
    applied_index: Index,
    /// First index not yet handed to the driver by `take_unstable`. Invariant:
    /// `offset < unstable_index <= last_index() + 1`.
    unstable_index: Index,
    /// Every entry `<= durable_index` is on this node's disk (in its log or its snapshot) *and*
    /// identical to the in-memory one. Invariant: `durable_index < unstable_index`.
    durable_index: Index,
}

/// Keeps the longest prefix of `entries` that is contiguous from its first entry's index with
/// non-decreasing terms; logs what it drops.
fn contiguous_prefix(entries: &mut Vec<Entry>, first_expected: Option<Index>) {
    let Some(first) = entries.first() else {
        return;
    };
    let start = first_expected.unwrap_or(first.index);
    let mut valid = entries.len();
    for (i, entry) in entries.iter().enumerate() {
        let term_ok = i == 0 || entry.term >= entries[i - 1].term;
        if Some(entry.index) != start.checked_add(i as Index) || !term_ok {
            log::error!(
                "persisted log is not contiguous at position {i} (index {}, term {}); \
                 keeping the {i} entries before it",
                entry.index,
                entry.term
            );
            valid = i;
            break;
        }
    }
    entries.truncate(valid);
}

impl RaftLog {
    /// A log rebuilt from disk: the latest durable snapshot (if any) and the durable entries.
    /// Everything given is durable. Disk input must never panic the process, so it is repaired:
    ///
    /// - entries that do not continue the log (wrong index, decreasing term) end it;
    /// - without a snapshot, entries must start at index 1;
    /// - with a snapshot, entries may start anywhere at or below `snapshot.index + 1`; if they do
    ///   not reach `snapshot.index + 1`, start above it (a gap), or hold another term than
    ///   `snapshot.term` at `snapshot.index` (a crash between installing a snapshot and resetting
    ///   the write-ahead log), they are all discarded and the log is empty after the snapshot;
    /// - entries at or below `snapshot.index` are kept (to serve slightly lagging followers) from
    ///   the *second* one on: the first one only supplies the term at the new offset. (Entries
    ///   starting at index 1 are kept whole: the term at offset 0 is 0.)
    ///
    /// The state machine is assumed restored from the snapshot: `applied_index` starts at
    /// `snapshot.index`, and the commit index is `max(commit_index, snapshot.index)` clamped to
    /// the log.
    pub(super) fn restore(
        snapshot: Option<SnapshotMeta>,
        entries: Vec<Entry>,
        commit_index: Index,
    ) -> RaftLog {
        let mut entries = entries;
        let snapshot = snapshot.filter(|snap| {
            let absurd = snap.index == Index::MAX;
            if absurd {
                log::error!("persisted snapshot {snap:?} has an absurd index; ignoring it");
            }
            !absurd
        });
        let (offset, offset_term) = match snapshot {
            None => {
                contiguous_prefix(&mut entries, Some(1));
                (0, 0)
            }
            Some(snap) => {
                contiguous_prefix(&mut entries, None);
                let first = entries.first().map_or(snap.index + 1, |e| e.index);
                let last = entries.last().map_or(snap.index, |e| e.index);
                let matches_at_snapshot = if first <= snap.index {
                    entries
                        .get((snap.index - first) as usize)
                        .is_some_and(|e| e.term == snap.term)
                } else {
                    entries.first().is_none_or(|e| e.term >= snap.term)
                };
                if entries.is_empty() {
                    (snap.index, snap.term)
                } else if first > snap.index + 1 || last < snap.index || !matches_at_snapshot {
                    log::error!(
                        "persisted log {first}..={last} does not continue snapshot (index {}, \
                         term {}); discarding it",
                        snap.index,
                        snap.term
                    );
                    entries.clear();
                    (snap.index, snap.term)
                } else if first == snap.index + 1 {
                    (snap.index, snap.term)
                } else if first == 1 {
                    (0, 0)
                } else {
                    let head = entries.remove(0);
                    (head.index, head.term)
                }
            }
        };
        let snapshot_index = snapshot.map_or(0, |s| s.index);
        let last_index = offset + entries.len() as Index;
        debug_assert!(last_index >= snapshot_index);
        let log = RaftLog {
            entries,
            offset,
            offset_term,
            snapshot,
            commit_index: commit_index.max(snapshot_index).min(last_index),
            applied_index: snapshot_index,
            unstable_index: last_index + 1,
            durable_index: last_index,
        };
        log.debug_check();
        log
    }

    pub(super) fn last_index(&self) -> Index {
        self.offset + self.entries.len() as Index
    }

    pub(super) fn last_term(&self) -> Term {
        self.entries.last().map_or(self.offset_term, |e| e.term)
    }

    /// The first index held in memory (`last_index() + 1` when the log is empty).
    pub(super) fn first_index(&self) -> Index {
        self.offset + 1
    }

    pub(super) fn snapshot(&self) -> Option<SnapshotMeta> {
        self.snapshot
    }

    /// The term of the entry at `index`; `Some(0)` for index 0, `None` past the end or below the
    /// offset (compacted).
    pub(super) fn term(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        if index == self.offset {
            return Some(self.offset_term);
        }
        if index < self.offset {
            return None;
        }
        self.entries
            .get((index - self.offset - 1) as usize)
            .map(|e| e.term)
    }

    /// The in-memory suffix of the log, from `first_index()`.
    pub(super) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub(super) fn commit_index(&self) -> Index {
        self.commit_index
    }

    pub(super) fn applied_index(&self) -> Index {
        self.applied_index
    }

    pub(super) fn durable_index(&self) -> Index {
        self.durable_index
    }

    /// §5.4.1: a candidate's log is at least as up to date as ours if its last term is higher,
    /// or equal with an index at least as large.
    pub(super) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The driver made a durable snapshot at `snapshot` (at or below the applied index): remember
    /// it and drop entries below `first_kept` (clamped to `[first_index(), snapshot.index + 1]`).
    /// A snapshot older than the current one, past the applied index, or whose term disagrees
    /// with the log is ignored (returns false).
    /// Returns whether the snapshot was taken, and the entries dropped from memory.
    pub(super) fn compact(
        &mut self,
        snapshot: SnapshotMeta,
        first_kept: Index,
    ) -> (bool, Vec<Entry>) {
        debug_assert!(
            snapshot.index <= self.applied_index,
            "compact at {} past the applied index {}",
            snapshot.index,
            self.applied_index
        );
        if snapshot.index > self.applied_index {
            log::warn!(
                "compact at {} ignored: past the applied index {}",
                snapshot.index,
                self.applied_index
            );
            return (false, Vec::new());
        }
        if let Some(current) = self.snapshot {
            if snapshot.index < current.index {
                log::warn!(
                    "compact at {} ignored: older than the snapshot at {}",
                    snapshot.index,
                    current.index
                );
                return (false, Vec::new());
            }
        }
        if self.term(snapshot.index) != Some(snapshot.term) {
            log::warn!(
                "compact at {} ignored: term {} but the log has {:?} there",
                snapshot.index,
                snapshot.term,
                self.term(snapshot.index)
            );
            return (false, Vec::new());
        }
        if snapshot.index > 0 {
            self.snapshot = Some(snapshot);
        }
        let first_kept = first_kept.min(snapshot.index + 1).max(self.first_index());
        let new_offset = first_kept - 1;
        if new_offset > self.offset {
            let term = self
                .term(new_offset)
                .expect("held: offset < new_offset <= last");
            let dropped = self
                .entries
                .drain(..(new_offset - self.offset) as usize)
                .collect();
            self.offset = new_offset;
            self.offset_term = term;
            self.debug_check();
            return (true, dropped);
        }
        self.debug_check();
        (true, Vec::new())
    }

    /// Replaces the whole log by a snapshot received from the leader (the log does not hold
    /// `(snapshot.index, snapshot.term)`). Everything up to it counts as committed, applied (the
    /// driver installs the data) and durable (the driver installs it before persisting anything
    /// later). Entries handed out before and not reported durable can no longer be: the caller
    /// forgets their durability reports.
    pub(super) fn install_snapshot(&mut self, snapshot: SnapshotMeta) {
        assert!(
            snapshot.index > self.commit_index,
            "commit_index never decreases"
        );
        self.entries.clear();
        self.offset = snapshot.index;
        self.offset_term = snapshot.term;
        self.snapshot = Some(snapshot);
        self.commit_index = snapshot.index;
        self.applied_index = snapshot.index;
        self.durable_index = snapshot.index;
        self.unstable_index = snapshot.index + 1;
        self.debug_check();
    }

    /// Leader only: appends a new entry of `term` at the end; returns its index.
    pub(super) fn append_new(&mut self, term: Term, kind: EntryKind, data: &[u8]) -> Index {
        debug_assert!(
            term >= self.last_term(),
            "a leader's log terms never decrease"
        );
        let index = self.last_index() + 1;
        self.entries.push(Entry {
            term,
            index,
            kind,
            data: Arc::from(data),
        });
        index
    }

    /// Entries from `lo` on, at most `max_bytes` of payload but always at least one entry when
    /// `first_index() <= lo <= last_index()`; empty when `lo` is compacted or past the end. One
    /// allocation; payloads are shared, not copied.
    pub(super) fn entries_from(&self, lo: Index, max_bytes: usize) -> Vec<Entry> {
        if lo <= self.offset || lo > self.last_index() {
            return Vec::new();
        }
        let start = (lo - self.offset - 1) as usize;
        let mut end = start;
        let mut bytes = 0usize;
        for entry in &self.entries[start..] {
            bytes = bytes.saturating_add(entry.data.len());
            if end > start && bytes > max_bytes {
                break;
            }
            end += 1;
        }
        self.entries[start..end].to_vec()
    }

    /// The receiver's half of AppendEntries (§5.3, Figure 2 steps 2–4). The caller has checked
    /// that `entries` are contiguous from `prev_log_index + 1` and that `prev_log_index` is not
    /// below the commit index (so not below the offset either), so nothing committed can
    /// conflict.
    pub(super) fn try_append(
        &mut self,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
    ) -> AppendOutcome {
        if self.term(prev_log_index) != Some(prev_log_term) {
            return AppendOutcome::Rejected(self.reject_hint(prev_log_index, prev_log_term));
        }
        let last_new = prev_log_index + entries.len() as Index;
        // Skip the prefix we already hold; an existing entry that conflicts (same index,
        // different term) is deleted together with everything after it (§5.3 step 3). An entry
        // below the offset (only possible if a caller skipped the commit check) counts as held.
        let first_new = entries
            .iter()
            .position(|e| e.index > self.offset && self.term(e.index) != Some(e.term));
        if let Some(skip) = first_new {
            let conflict_index = entries[skip].index;
            if conflict_index <= self.last_index() {
                self.truncate_from(conflict_index);
            }
            debug_assert_eq!(conflict_index, self.last_index() + 1);
            let mut entries = entries;
            entries.drain(..skip);
            // `append` moves the entries in one copy; no payload is cloned.
            self.entries.append(&mut entries);
        }
        self.debug_check();
        AppendOutcome::Appended { last_new }
    }

    /// Deletes `index` and everything after it. Never touches a committed entry: a committed
    /// entry is in every future leader's log (§5.4.3), so no legitimate message conflicts with it.
    fn truncate_from(&mut self, index: Index) {
        debug_assert!(
            index > self.commit_index,
            "truncating committed entry {index} (commit_index {})",
            self.commit_index
        );
        // Never below the offset, whatever a caller passes (commit_index >= offset).
        let index = index.max(self.commit_index + 1).max(self.offset + 1);
        self.entries.truncate((index - self.offset - 1) as usize);
        // The driver must rewrite from `index` on, and the disk copy past `index - 1` no longer
        // matches the in-memory log.
        self.unstable_index = self.unstable_index.min(index);
        self.durable_index = self.durable_index.min(index - 1);
    }

    /// Follower: where our log might still match a leader's whose entry at `prev_log_index` has
    /// `prev_log_term` (and ours does not): the last index `<= prev_log_index` whose term is
    /// `<= prev_log_term`, and that term. Every entry after it has a larger term than the
    /// leader's entry at `prev_log_index`, and a leader's terms never decrease along its log, so
    /// none of them can match: the leader skips them all in one round trip (etcd's
    /// `findConflictByTerm`), not one term per round trip. That mattered: a follower left with
    /// hundreds of one-entry terms from failed leaders took hundreds of round trips to repair
    /// (simulator seed 227 at 100,000 steps).
    pub(super) fn reject_hint(&self, prev_log_index: Index, prev_log_term: Term) -> RejectHint {
        let (index, term) = self.last_with_term_at_most(prev_log_index, prev_log_term);
        RejectHint {
            conflict_term: term,
            conflict_index: index,
        }
    }

    /// The last index `<= upto` whose entry's term is `<= term`, with that term. Terms never
    /// decrease along the log, so it is a binary search. When the answer lies below what we hold
    /// (compacted, term unknown) it is an index below the offset with term 0, which makes a
    /// leader fall back to a snapshot; with no such entry at all it is `(0, 0)`.
    pub(super) fn last_with_term_at_most(&self, upto: Index, term: Term) -> (Index, Term) {
        let upto = upto.min(self.last_index());
        if upto < self.offset {
            return (upto, 0);
        }
        let held = (upto - self.offset) as usize;
        let after = self.entries[..held].partition_point(|e| e.term <= term);
        if after > 0 {
            return (self.offset + after as Index, self.entries[after - 1].term);
        }
        if self.offset_term <= term {
            (self.offset, self.offset_term)
        } else {
            (self.offset.saturating_sub(1), 0)
        }
    }

    /// Raises the commit index; returns whether it moved. Commit never decreases.
    pub(super) fn commit_to(&mut self, index: Index) -> bool {
        if index <= self.commit_index {
            return false;
        }
        debug_assert!(index <= self.last_index(), "commit past the end of the log");
        self.commit_index = index.min(self.last_index());
        true
    }

    pub(super) fn has_unstable(&self) -> bool {
        self.unstable_index <= self.last_index()
    }

    /// Entries the driver has not been given yet, to persist; marks them handed out.
    pub(super) fn take_unstable(&mut self) -> Vec<Entry> {
        if !self.has_unstable() {
            return Vec::new();
        }
        let out = self.entries[(self.unstable_index - self.offset - 1) as usize..].to_vec();
        self.unstable_index = self.last_index() + 1;
        out
    }

    /// The driver made a Ready durable whose entries ended at `(index, term)`. If that entry is
    /// still in the log with that term then, by the Log Matching property, our whole prefix up to
    /// `index` is what the disk holds. (Reports from before an installed snapshot are dropped by
    /// the caller: the driver reset its log, so they say nothing about the disk any more.)
    pub(super) fn stable_to(&mut self, index: Index, term: Term) {
        if index > self.durable_index
            && index < self.unstable_index
            && self.term(index) == Some(term)
        {
            self.durable_index = index;
        }
    }

    /// Highest index that may be applied: committed by the cluster and durable here.
    fn applicable_index(&self) -> Index {
        self.commit_index.min(self.durable_index)
    }

    pub(super) fn has_committed_to_apply(&self) -> bool {
        self.applicable_index() > self.applied_index
    }

    /// Committed, durable entries not handed out before, in index order; marks them applied.
    pub(super) fn take_committed(&mut self) -> Vec<Entry> {
        let hi = self.applicable_index();
        if hi <= self.applied_index {
            return Vec::new();
        }
        let lo = (self.applied_index - self.offset) as usize;
        let out = self.entries[lo..(hi - self.offset) as usize].to_vec();
        self.applied_index = hi;
        out
    }

    pub(super) fn debug_check(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let snapshot_index = self.snapshot.map_or(0, |s| s.index);
        debug_assert!(self.offset <= snapshot_index, "offset past the snapshot");
        debug_assert!(self.snapshot.is_some() || self.offset == 0);
        debug_assert!(
            snapshot_index <= self.applied_index,
            "snapshot past applied"
        );
        debug_assert!(self.commit_index <= self.last_index());
        debug_assert!(self.applied_index <= self.commit_index);
        debug_assert!(self.applied_index <= self.durable_index);
        debug_assert!(self.offset <= self.durable_index);
        debug_assert!(self.offset < self.unstable_index);
        debug_assert!(self.unstable_index <= self.last_index() + 1);
        debug_assert!(self.durable_index < self.unstable_index);
        if let (Some(first), Some(last)) = (self.entries.first(), self.entries.last()) {
            debug_assert_eq!(
                first.index,
                self.offset + 1,
                "entries start after the offset"
            );
            debug_assert_eq!(last.index, self.last_index(), "entries contiguous");
            debug_assert!(first.term >= self.offset_term);
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn ent(index: Index, term: Term) -> Entry {
        Entry::new(term, index, EntryKind::Normal, &[index as u8])
    }

    fn log_of(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| ent(i as Index + 1, t))
            .collect();
        RaftLog::restore(None, entries, 0)
    }

    #[test]
    fn restore_keeps_contiguous_prefix_and_clamps_commit() {
        let entries = vec![ent(1, 1), ent(2, 1), ent(4, 2)];
        let log = RaftLog::restore(None, entries, 10);
        assert_eq!(log.last_index(), 2);
        assert_eq!(log.commit_index(), 2);
        assert_eq!(log.durable_index(), 2);
    }

    #[test]
    fn append_truncates_conflicting_suffix_only() {
        let mut log = log_of(&[1, 1, 2, 2]);
        // Same entries again: nothing changes, nothing becomes unstable.
        let out = log.try_append(1, 1, vec![ent(2, 1), ent(3, 2)]);
        assert_eq!(out, AppendOutcome::Appended { last_new: 3 });
        assert_eq!(log.last_index(), 4);
        assert!(!log.has_unstable());
        // A conflict at 3 replaces 3.. and un-durables it.
        let out = log.try_append(2, 1, vec![ent(3, 3)]);
        assert_eq!(out, AppendOutcome::Appended { last_new: 3 });
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3), Some(3));
        assert_eq!(log.durable_index(), 2);
        assert_eq!(log.take_unstable(), vec![ent(3, 3)]);
    }

    #[test]
    fn reject_hint_skips_every_entry_whose_term_is_above_the_leaders() {
        let log = log_of(&[1, 2, 2, 2, 3]);
        let hint = |index, term| RejectHint {
            conflict_term: term,
            conflict_index: index,
        };
        // The leader's entry 5 has term 2: our 5 (term 3) cannot match, our 4 (term 2) may.
        assert_eq!(log.reject_hint(5, 2), hint(4, 2));
        // Its entry 4 has term 1: none of our term-2 entries can match, in one answer.
        assert_eq!(log.reject_hint(4, 1), hint(1, 1));
        // A longer leader log: our last entry is where to look.
        assert_eq!(log.reject_hint(9, 5), hint(5, 3));
        assert_eq!(log.reject_hint(9, 2), hint(4, 2));
        assert_eq!(log.reject_hint(3, 0), hint(0, 0));
        // The leader's side of the same search.
        assert_eq!(log.last_with_term_at_most(5, 2), (4, 2));
        assert_eq!(log.last_with_term_at_most(3, 2), (3, 2));
        assert_eq!(log.last_with_term_at_most(u64::MAX, u64::MAX), (5, 3));
        assert_eq!(log.last_with_term_at_most(5, 0), (0, 0));
    }

    #[test]
    fn entries_from_caps_bytes_but_sends_one() {
        let mut log = log_of(&[]);
        for _ in 0..4 {
            log.append_new(1, EntryKind::Normal, &[0; 10]);
        }
        assert_eq!(log.entries_from(1, 25).len(), 2);
        assert_eq!(log.entries_from(1, 1).len(), 1);
        assert_eq!(log.entries_from(3, 1 << 20).len(), 2);
        assert!(log.entries_from(5, 100).is_empty());
    }

    #[test]
    fn stable_to_ignores_entries_replaced_since() {
        let mut log = log_of(&[]);
        log.append_new(1, EntryKind::Normal, b"a");
        log.append_new(1, EntryKind::Normal, b"b");
        assert_eq!(log.take_unstable().len(), 2);
        // Replaced before the driver reported the write durable.
        let out = log.try_append(1, 1, vec![ent(2, 2)]);
        assert_eq!(out, AppendOutcome::Appended { last_new: 2 });
        log.stable_to(2, 1);
        assert_eq!(log.durable_index(), 0);
        assert_eq!(log.take_unstable().len(), 1);
        log.stable_to(2, 2);
        assert_eq!(log.durable_index(), 2);
    }

    fn snap(index: Index, term: Term) -> SnapshotMeta {
        SnapshotMeta { index, term }
    }

    /// A log of `terms` whose first `applied` entries are committed and applied.
    fn applied_log(terms: &[Term], applied: Index) -> RaftLog {
        let mut log = log_of(terms);
        log.commit_to(applied);
        assert_eq!(log.take_committed().len() as Index, applied);
        log
    }

    #[test]
    fn compact_keeps_indexes_working_above_the_offset() {
        let mut log = applied_log(&[1, 1, 2, 2, 2, 3, 3], 6);
        let (taken, dropped) = log.compact(snap(5, 2), 4);
        assert!(taken);
        assert_eq!(
            dropped.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![1, 2, 3],
            "the entries below the kept window (and the new offset's) come back to the caller"
        );
        assert_eq!((log.first_index(), log.last_index()), (4, 7));
        assert_eq!(log.entries().len(), 4);
        assert_eq!(log.term(3), Some(2), "the offset's term is kept");
        assert_eq!(log.term(2), None);
        assert_eq!(log.term(0), Some(0));
        assert!(log.entries_from(3, 100).is_empty(), "compacted");
        assert_eq!(log.entries_from(4, 100).len(), 4);
        assert_eq!(
            log.reject_hint(7, 2),
            RejectHint {
                conflict_term: 2,
                conflict_index: 5
            },
            "the last index we hold whose term is not above the leader's"
        );
        assert_eq!(log.last_with_term_at_most(7, 2), (5, 2));
        assert_eq!(
            log.last_with_term_at_most(3, 2),
            (3, 2),
            "the offset counts"
        );
        assert_eq!(
            log.last_with_term_at_most(7, 1),
            (2, 0),
            "below the offset: the term is unknown, so a snapshot"
        );
        assert_eq!(log.last_with_term_at_most(2, 9), (2, 0), "compacted");
        assert!(log.is_up_to_date(7, 3));
        assert!(!log.is_up_to_date(6, 3));
        // Compacting up to the applied index: only the entry after it stays.
        assert!(log.compact(snap(6, 3), 100).0);
        assert_eq!((log.first_index(), log.last_index()), (7, 7));
        assert_eq!(log.last_term(), 3);
        assert!(
            log.compact(snap(6, 3), 8).0,
            "the same snapshot again is harmless"
        );
        assert_eq!(
            log.first_index(),
            7,
            "first_kept is clamped to snapshot + 1"
        );
        // Older, or a term the log disagrees with: ignored.
        assert!(!log.compact(snap(5, 2), 6).0);
        assert!(!log.compact(snap(6, 2), 7).0);
        assert_eq!(log.snapshot(), Some(snap(6, 3)));
        // Appending and committing after the offset.
        log.append_new(3, EntryKind::Normal, b"x");
        assert_eq!(log.take_unstable().len(), 1);
        log.stable_to(8, 3);
        log.commit_to(8);
        let committed: Vec<Index> = log.take_committed().iter().map(|e| e.index).collect();
        assert_eq!(committed, vec![7, 8]);
        log.debug_check();
    }

    #[test]
    fn install_snapshot_replaces_the_log() {
        let mut log = applied_log(&[1, 1, 2], 1);
        log.install_snapshot(snap(9, 4));
        assert!(log.entries().is_empty());
        assert_eq!(log.last_index(), 9);
        assert_eq!(log.last_term(), 4);
        assert_eq!(
            (log.commit_index(), log.applied_index(), log.durable_index()),
            (9, 9, 9)
        );
        assert!(!log.has_unstable());
        assert!(!log.has_committed_to_apply());
        assert_eq!(
            log.try_append(9, 4, vec![ent(10, 4)]),
            AppendOutcome::Appended { last_new: 10 }
        );
        assert_eq!(log.take_unstable(), vec![ent(10, 4)]);
        // A report about an index at or below the snapshot changes nothing.
        log.stable_to(3, 2);
        assert_eq!(log.durable_index(), 9);
        log.stable_to(10, 4);
        assert_eq!(log.durable_index(), 10);
    }

    #[test]
    fn restore_with_snapshot_repairs_the_log() {
        let entries = |first: Index, terms: &[Term]| -> Vec<Entry> {
            terms
                .iter()
                .enumerate()
                .map(|(i, &t)| ent(first + i as Index, t))
                .collect()
        };
        // Window 3..=6 around a snapshot at 5: entry 3 supplies the offset's term.
        let log = RaftLog::restore(Some(snap(5, 2)), entries(3, &[1, 2, 2, 3]), 0);
        assert_eq!((log.first_index(), log.last_index()), (4, 6));
        assert_eq!((log.commit_index(), log.applied_index()), (5, 5));
        // Mismatched term at the snapshot, a gap, a log ending before it: all discarded.
        for bad in [
            entries(1, &[1, 1, 1, 1, 1]),
            entries(7, &[2]),
            entries(1, &[1, 2]),
        ] {
            let log = RaftLog::restore(Some(snap(5, 2)), bad, 9);
            assert!(log.entries().is_empty());
            assert_eq!(
                (log.last_index(), log.last_term(), log.commit_index()),
                (5, 2, 5)
            );
        }
        // Entries after the snapshot with a lower term: discarded too.
        let log = RaftLog::restore(Some(snap(5, 2)), entries(6, &[1]), 0);
        assert!(log.entries().is_empty());
        // An absurd snapshot index is ignored, not a panic.
        let log = RaftLog::restore(Some(snap(Index::MAX, 2)), entries(1, &[1]), 0);
        assert_eq!(log.last_index(), 1);
    }

    #[test]
    fn committed_entries_wait_for_durability() {
        let mut log = log_of(&[]);
        log.append_new(1, EntryKind::Normal, b"a");
        log.commit_to(1);
        assert!(log.take_committed().is_empty());
        log.take_unstable();
        log.stable_to(1, 1);
        assert_eq!(log.take_committed().len(), 1);
        assert_eq!(log.applied_index(), 1);
    }
}
