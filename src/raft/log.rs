//! The in-memory Raft log and the four indexes that say how far along it is: committed, applied,
//! handed to the driver ("unstable" beyond that), and durable.
//!
//! It owns the entries and those indexes. It never decides *what* is committed (the leader's
//! quorum rule lives in `replication.rs`) and never talks to a disk: the driver persists what
//! `take_unstable` hands out and reports back through `stable_to`.

use super::types::{Entry, EntryKind, Index, RejectHint, Term};
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
    /// `entries[i].index == i + 1`: the log starts at index 1 (there are no snapshots yet).
    entries: Vec<Entry>,
    /// Highest index known committed. Invariants: `commit_index <= last_index()`, never decreases.
    commit_index: Index,
    /// Last index handed out through `take_committed`. Invariant: `applied_index <= commit_index`
    /// and `applied_index <= durable_index`.
    applied_index: Index,
    /// First index not yet handed to the driver by `take_unstable`. Invariant:
    /// `unstable_index <= last_index() + 1`.
    unstable_index: Index,
    /// Every entry `<= durable_index` is on this node's disk *and* identical to the in-memory one.
    /// Invariant: `durable_index < unstable_index`.
    durable_index: Index,
}

impl RaftLog {
    /// A log rebuilt from disk. Everything given is durable. Entries that do not continue the
    /// log (wrong index, decreasing term) end it: disk input must never panic the process.
    pub(super) fn restore(entries: Vec<Entry>, commit_index: Index) -> RaftLog {
        let mut valid = entries.len();
        for (i, entry) in entries.iter().enumerate() {
            let term_ok = i == 0 || entry.term >= entries[i - 1].term;
            if entry.index != i as Index + 1 || !term_ok {
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
        let mut entries = entries;
        entries.truncate(valid);
        let last_index = entries.len() as Index;
        let log = RaftLog {
            entries,
            commit_index: commit_index.min(last_index),
            applied_index: 0,
            unstable_index: last_index + 1,
            durable_index: last_index,
        };
        log.debug_check();
        log
    }

    pub(super) fn last_index(&self) -> Index {
        self.entries.len() as Index
    }

    pub(super) fn last_term(&self) -> Term {
        self.entries.last().map_or(0, |e| e.term)
    }

    /// The term of the entry at `index`; `Some(0)` for index 0, `None` past the end.
    pub(super) fn term(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        self.entries.get((index - 1) as usize).map(|e| e.term)
    }

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
    /// `lo <= last_index()`. One allocation; payloads are shared, not copied.
    pub(super) fn entries_from(&self, lo: Index, max_bytes: usize) -> Vec<Entry> {
        if lo == 0 || lo > self.last_index() {
            return Vec::new();
        }
        let start = (lo - 1) as usize;
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
    /// below the commit index, so nothing committed can conflict.
    pub(super) fn try_append(
        &mut self,
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
    ) -> AppendOutcome {
        if self.term(prev_log_index) != Some(prev_log_term) {
            return AppendOutcome::Rejected(self.reject_hint(prev_log_index));
        }
        let last_new = prev_log_index + entries.len() as Index;
        // Skip the prefix we already hold; an existing entry that conflicts (same index,
        // different term) is deleted together with everything after it (§5.3 step 3).
        let first_new = entries
            .iter()
            .position(|e| self.term(e.index) != Some(e.term));
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
        debug_assert!(index >= 1);
        self.entries.truncate((index - 1) as usize);
        // The driver must rewrite from `index` on, and the disk copy past `index - 1` no longer
        // matches the in-memory log.
        self.unstable_index = self.unstable_index.min(index);
        self.durable_index = self.durable_index.min(index - 1);
    }

    /// Why `(prev_log_index, _)` did not match: our term there and the first index we hold of that
    /// term, so the leader can skip the whole term in one round trip.
    pub(super) fn reject_hint(&self, prev_log_index: Index) -> RejectHint {
        match self.term(prev_log_index) {
            None => RejectHint {
                conflict_term: 0,
                conflict_index: self.last_index() + 1,
            },
            Some(conflict_term) => {
                // Terms never decrease along the log, so binary search finds the term's start.
                let upto = prev_log_index as usize;
                let first = self.entries[..upto].partition_point(|e| e.term < conflict_term);
                RejectHint {
                    conflict_term,
                    conflict_index: first as Index + 1,
                }
            }
        }
    }

    /// The last index `<= upto` whose entry has exactly `term`, if any.
    pub(super) fn last_index_of_term(&self, term: Term, upto: Index) -> Option<Index> {
        let upto = (upto.min(self.last_index())) as usize;
        let after = self.entries[..upto].partition_point(|e| e.term <= term);
        (after > 0 && self.entries[after - 1].term == term).then_some(after as Index)
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
        let out = self.entries[(self.unstable_index - 1) as usize..].to_vec();
        self.unstable_index = self.last_index() + 1;
        out
    }

    /// The driver made a Ready durable whose entries ended at `(index, term)`. If that entry is
    /// still in the log with that term then, by the Log Matching property, our whole prefix up to
    /// `index` is what the disk holds.
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
        let out = self.entries[self.applied_index as usize..hi as usize].to_vec();
        self.applied_index = hi;
        out
    }

    pub(super) fn debug_check(&self) {
        debug_assert!(self.commit_index <= self.last_index());
        debug_assert!(self.applied_index <= self.commit_index);
        debug_assert!(self.applied_index <= self.durable_index);
        debug_assert!(self.unstable_index <= self.last_index() + 1);
        debug_assert!(self.durable_index < self.unstable_index);
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
        RaftLog::restore(entries, 0)
    }

    #[test]
    fn restore_keeps_contiguous_prefix_and_clamps_commit() {
        let entries = vec![ent(1, 1), ent(2, 1), ent(4, 2)];
        let log = RaftLog::restore(entries, 10);
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
    fn reject_hint_names_first_index_of_conflicting_term() {
        let log = log_of(&[1, 2, 2, 2, 3]);
        assert_eq!(
            log.reject_hint(4),
            RejectHint {
                conflict_term: 2,
                conflict_index: 2
            }
        );
        assert_eq!(
            log.reject_hint(9),
            RejectHint {
                conflict_term: 0,
                conflict_index: 6
            }
        );
        assert_eq!(log.last_index_of_term(2, 5), Some(4));
        assert_eq!(log.last_index_of_term(2, 3), Some(3));
        assert_eq!(log.last_index_of_term(4, 5), None);
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
