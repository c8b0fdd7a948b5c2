//! `Wal::reset_after_snapshot`: a follower that installs a snapshot empties its log so that the
//! next entry is the snapshot's index + 1, crash-safely, even beyond the log's end.

use raftchat::raft::{Entry, EntryKind, HardState, Index};
use raftchat::storage::{FsyncPolicy, Wal, WalOptions};
use std::fs;
use std::path::Path;

fn opts(dir: &Path) -> WalOptions {
    let mut opts = WalOptions::new(dir, 11, 2);
    opts.segment_bytes = 400;
    opts.fsync = FsyncPolicy::Never;
    opts
}

fn entry(term: u64, index: Index) -> Entry {
    let len = (index * 7 % 23) as usize;
    let data: Vec<u8> = (0..len)
        .map(|k| (index as u8).wrapping_mul(31) ^ k as u8 ^ term as u8)
        .collect();
    Entry::new(term, index, EntryKind::Normal, &data)
}

fn entries(term: u64, indexes: std::ops::RangeInclusive<Index>) -> Vec<Entry> {
    indexes.map(|index| entry(term, index)).collect()
}

fn segment_count(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|d| {
            let name = d.as_ref().unwrap().file_name();
            name.to_str().unwrap().starts_with("wal-")
        })
        .count()
}

/// A log of `1..=n` over several segments, one sync per entry.
fn log_of(dir: &Path, n: Index) -> Wal {
    let (mut wal, _) = Wal::open(opts(dir)).unwrap();
    for index in 1..=n {
        wal.append(&[entry(1, index)]).unwrap();
        wal.sync().unwrap();
    }
    wal
}

fn reopen(dir: &Path) -> (Wal, raftchat::storage::Recovered) {
    Wal::open(opts(dir)).unwrap()
}

#[test]
fn reset_beyond_the_end_then_append_survives_reopening() {
    // Every prefix length puts the reset at a different place in a segment, including into a
    // segment of its own when the active one is full.
    for n in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = log_of(dir.path(), n);
        wal.reset_after_snapshot(1_000).unwrap();
        assert_eq!((wal.first_index(), wal.last_index()), (1_001, 1_000));
        assert_eq!(wal.read_entry(n.max(1)).unwrap(), None);
        // A gap after the log's end is still refused.
        assert!(wal.append(&[entry(2, 1_002)]).is_err());
        wal.append(&entries(2, 1_001..=1_010)).unwrap();
        wal.sync().unwrap();
        drop(wal);

        let (mut wal, recovered) = reopen(dir.path());
        assert_eq!(recovered.first_index, 1_001, "n {n}");
        assert_eq!(recovered.entries, entries(2, 1_001..=1_010), "n {n}");
        // It keeps going across segment rolls, and reopens again.
        for index in 1_011..=1_040 {
            wal.append(&[entry(2, index)]).unwrap();
            wal.sync().unwrap();
        }
        assert_eq!(wal.read_entry(1_005).unwrap(), Some(entry(2, 1_005)));
        drop(wal);
        let (_, recovered) = reopen(dir.path());
        assert_eq!(recovered.first_index, 1_001);
        assert_eq!(recovered.entries, entries(2, 1_001..=1_040), "n {n}");
    }
}

#[test]
fn an_empty_log_after_a_reset_reopens_empty() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = log_of(dir.path(), 30);
    wal.reset_after_snapshot(77).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (wal, recovered) = reopen(dir.path());
    assert_eq!(recovered.first_index, 78);
    assert!(recovered.entries.is_empty());
    assert_eq!(wal.last_index(), 77);
}

#[test]
fn a_crash_before_the_sync_keeps_the_old_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = log_of(dir.path(), 50);
    wal.reset_after_snapshot(1_000).unwrap();
    wal.append(&entries(2, 1_001..=1_005)).unwrap();
    drop(wal); // nothing was written
    let (_, recovered) = reopen(dir.path());
    assert_eq!(recovered.first_index, 1);
    assert_eq!(recovered.entries, entries(1, 1..=50));
}

#[test]
fn reset_below_the_last_index_replaces_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = log_of(dir.path(), 100);
    wal.reset_after_snapshot(40).unwrap();
    assert_eq!(wal.read_entry(30).unwrap(), None);
    assert_eq!(wal.read_entry(41).unwrap(), None);
    wal.append(&entries(3, 41..=45)).unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.read_entry(41).unwrap(), Some(entry(3, 41)));
    drop(wal);
    let (_, recovered) = reopen(dir.path());
    assert_eq!(recovered.first_index, 41);
    assert_eq!(recovered.entries, entries(3, 41..=45));
}

#[test]
fn drop_prefix_after_a_durable_reset_deletes_the_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let hs = HardState {
        term: 5,
        voted_for: Some(1),
        commit: 500,
    };
    let mut wal = log_of(dir.path(), 200);
    let before = segment_count(dir.path());
    assert!(before > 5, "{before}");
    wal.reset_after_snapshot(500).unwrap();
    wal.set_hard_state(hs).unwrap();
    // Not durable yet: the old segments are still the durable log.
    wal.drop_prefix(500).unwrap();
    assert_eq!(segment_count(dir.path()), before);
    let job = wal.write_buffered().unwrap();
    let written = segment_count(dir.path()); // the batch may have started a segment
    assert!(written >= before);
    wal.drop_prefix(500).unwrap();
    assert_eq!(segment_count(dir.path()), written);
    wal.synced(job).unwrap();
    wal.drop_prefix(500).unwrap();
    assert_eq!(segment_count(dir.path()), 1);
    assert_eq!(wal.first_index(), 501);
    wal.append(&entries(5, 501..=510)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, recovered) = reopen(dir.path());
    assert_eq!(recovered.hard_state, hs);
    assert_eq!(recovered.first_index, 501);
    assert_eq!(recovered.entries, entries(5, 501..=510));
}

#[test]
fn drop_prefix_after_a_reset_and_rolls_without_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = log_of(dir.path(), 60);
    wal.reset_after_snapshot(90).unwrap();
    wal.sync().unwrap();
    // Hard-state-only batches roll into new segments whose base is the reset's next index.
    for term in 1..=30 {
        wal.set_hard_state(HardState {
            term,
            voted_for: None,
            commit: 90,
        })
        .unwrap();
        wal.sync().unwrap();
    }
    assert!(segment_count(dir.path()) > 2);
    wal.drop_prefix(90).unwrap();
    assert_eq!(segment_count(dir.path()), 1);
    drop(wal);
    let (mut wal, recovered) = reopen(dir.path());
    assert_eq!(recovered.first_index, 91);
    assert!(recovered.entries.is_empty());
    assert_eq!(recovered.hard_state.term, 30);
    wal.append(&entries(30, 91..=95)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, recovered) = reopen(dir.path());
    assert_eq!(recovered.entries, entries(30, 91..=95));
}

#[test]
fn drop_prefix_keeps_a_trailing_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = log_of(dir.path(), 300);
    wal.drop_prefix(250).unwrap();
    let first = wal.first_index();
    assert!(first > 1 && first <= 251, "{first}");
    for index in 251..=300 {
        assert_eq!(wal.read_entry(index).unwrap(), Some(entry(1, index)));
    }
    // A lower `through` than what is already gone changes nothing.
    wal.drop_prefix(10).unwrap();
    assert_eq!(wal.first_index(), first);
    drop(wal);
    let (_, recovered) = reopen(dir.path());
    assert_eq!(recovered.first_index, first);
    assert_eq!(recovered.entries, entries(1, first..=300));
}
