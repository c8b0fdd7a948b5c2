//! Crash and damage tests on the files themselves: cut the last segment at every byte offset,
//! flip single bits in the middle and at the end, remove or misattribute segments, and check
//! that recovery keeps exactly the valid prefix or refuses naming the file and offset.
//!
//! The expected record boundaries come from the documented format (src/storage/mod.rs):
//! header 48 bytes, hard state record 34, truncate record 17, entry record 26 + data.
//! Bound: well under a second in release mode.

use raftchat::raft::{Entry, EntryKind, HardState, Index};
use raftchat::storage::{FsyncPolicy, StorageError, TornTail, Wal, WalOptions};
use std::fs;
use std::path::{Path, PathBuf};

const HEADER_LEN: u64 = 48;
const HARD_STATE_RECORD_LEN: u64 = 34;
const TRUNCATE_RECORD_LEN: u64 = 17;
const ENTRY_RECORD_FIXED_LEN: u64 = 26;

#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    entries: Vec<Entry>,
    hard_state: HardState,
}

/// One record on disk and the log state once it (and everything before it) is applied.
#[derive(Clone, Debug)]
struct Written {
    path: PathBuf,
    start: u64,
    end: u64,
    after: State,
    /// The state before this record.
    before: State,
}

fn opts(dir: &Path) -> WalOptions {
    let mut opts = WalOptions::new(dir, 11, 2);
    opts.segment_bytes = 400;
    opts.fsync = FsyncPolicy::Never;
    opts
}

fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("wal-") && name.ends_with(".log")
        })
        .collect();
    paths.sort();
    paths
}

fn entry(term: u64, index: Index) -> Entry {
    let len = (index * 7 % 23) as usize;
    let data: Vec<u8> = (0..len)
        .map(|k| (index as u8).wrapping_mul(31) ^ k as u8)
        .collect();
    Entry::new(term, index, EntryKind::Normal, &data)
}

/// Writes a log over several 400-byte segments, one sync per batch, with batches of every
/// shape: one entry, hard state alone, entries then hard state, an overwrite (truncate, entries,
/// hard state). Returns every record written, in order.
fn build(dir: &Path) -> Vec<Written> {
    let (mut wal, _) = Wal::open(opts(dir)).unwrap();
    let mut state = State {
        entries: Vec::new(),
        hard_state: HardState::default(),
    };
    let mut written = Vec::new();
    let mut term = 1;
    for op in 0..60u64 {
        let last = state.entries.len() as u64;
        // (truncate at, entries, hard state) of this batch, in the order they reach the disk.
        let mut records: Vec<(Option<Index>, Option<Entry>, Option<HardState>)> = Vec::new();
        let hs = HardState {
            term,
            voted_for: Some(op % 3),
            commit: last.saturating_sub(2),
        };
        match op % 4 {
            0 => records.push((None, Some(entry(term, last + 1)), None)),
            1 => records.push((None, None, Some(hs))),
            2 => {
                records.push((None, Some(entry(term, last + 1)), None));
                records.push((None, Some(entry(term, last + 2)), None));
                records.push((None, None, Some(hs)));
            }
            _ => {
                term += 1;
                let at = last.saturating_sub(1).max(1);
                records.push((Some(at), None, None));
                records.push((None, Some(entry(term, at)), None));
                records.push((None, Some(entry(term, at + 1)), None));
                records.push((None, None, Some(HardState { term, ..hs })));
            }
        }
        let mut new_entries = Vec::new();
        for r in &records {
            if let (_, Some(e), _) = r {
                new_entries.push(e.clone());
            }
            if let (_, _, Some(hs)) = r {
                wal.set_hard_state(*hs).unwrap();
            }
        }
        if !new_entries.is_empty() {
            wal.append(&new_entries).unwrap();
        }
        let before_paths = segment_paths(dir);
        wal.sync().unwrap();
        let paths = segment_paths(dir);
        let path = paths.last().unwrap().clone();
        let total: u64 = records.iter().map(record_len).sum();
        let end = fs::metadata(&path).unwrap().len();
        let mut start = end - total;
        if paths.len() > before_paths.len() {
            assert_eq!(
                start,
                HEADER_LEN + HARD_STATE_RECORD_LEN,
                "new segment layout"
            );
            written.push(Written {
                path: path.clone(),
                start: 0,
                end: start,
                after: state.clone(),
                before: state.clone(),
            });
        }
        for r in &records {
            let before = state.clone();
            match r {
                (Some(at), _, _) => state.entries.truncate(*at as usize - 1),
                (_, Some(e), _) => state.entries.push(e.clone()),
                (_, _, Some(hs)) => state.hard_state = *hs,
                _ => unreachable!(),
            }
            let len = record_len(r);
            written.push(Written {
                path: path.clone(),
                start,
                end: start + len,
                after: state.clone(),
                before,
            });
            start += len;
        }
    }
    assert!(
        segment_paths(dir).len() >= 4,
        "the test needs several segments"
    );
    written
}

fn record_len(r: &(Option<Index>, Option<Entry>, Option<HardState>)) -> u64 {
    match r {
        (Some(_), _, _) => TRUNCATE_RECORD_LEN,
        (_, Some(e), _) => ENTRY_RECORD_FIXED_LEN + e.data.len() as u64,
        _ => HARD_STATE_RECORD_LEN,
    }
}

fn recovered_state(dir: &Path) -> Result<(State, Option<TornTail>, Index), StorageError> {
    let (_, recovered) = Wal::open(opts(dir))?;
    Ok((
        State {
            entries: recovered.entries,
            hard_state: recovered.hard_state,
        },
        recovered.torn_tail,
        recovered.first_index,
    ))
}

fn flip_bit(path: &Path, pristine: &[u8], bit: u64) {
    let mut damaged = pristine.to_vec();
    damaged[(bit / 8) as usize] ^= 1 << (bit % 8);
    fs::write(path, damaged).unwrap();
}

#[test]
fn cut_at_every_offset_of_the_last_segment_keeps_the_valid_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let written = build(dir.path());
    let last_path = written.last().unwrap().path.clone();
    let pristine = fs::read(&last_path).unwrap();
    let in_last: Vec<&Written> = written.iter().filter(|w| w.path == last_path).collect();
    let before_segment = in_last[0].before.clone();

    for cut in 0..pristine.len() as u64 {
        fs::write(&last_path, &pristine[..cut as usize]).unwrap();
        let (state, torn, first_index) =
            recovered_state(dir.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(first_index, 1);
        // The records wholly before the cut survive; a cut inside the header removes the file.
        let (expected, kept_to) = if cut < HEADER_LEN {
            (before_segment.clone(), 0)
        } else {
            let done = in_last.iter().rev().find(|w| w.end <= cut);
            match done {
                Some(w) => (w.after.clone(), w.end),
                None => (before_segment.clone(), HEADER_LEN),
            }
        };
        assert_eq!(state, expected, "cut at {cut}");
        let expected_torn = (cut != kept_to || cut < HEADER_LEN).then(|| TornTail {
            file: last_path.clone(),
            offset: kept_to,
            bytes_cut: cut - kept_to,
        });
        assert_eq!(torn, expected_torn, "cut at {cut}");

        // Repaired for good: a second open finds nothing to cut, and the log takes appends.
        if cut % 5 == 0 {
            let (mut wal, again) = Wal::open(opts(dir.path())).unwrap();
            assert_eq!(again.torn_tail, None, "cut at {cut}: second open");
            assert_eq!(again.entries, expected.entries, "cut at {cut}: second open");
            let next = entry(99, wal.last_index() + 1);
            wal.append(std::slice::from_ref(&next)).unwrap();
            wal.sync().unwrap();
            drop(wal);
            let (state, torn, _) = recovered_state(dir.path()).unwrap();
            assert_eq!(torn, None);
            assert_eq!(
                state.entries.last(),
                Some(&next),
                "cut at {cut}: append after repair"
            );
            // Undo the append: back to exactly the segments `build` left.
            for path in segment_paths(dir.path()) {
                if !written.iter().any(|w| w.path == path) {
                    fs::remove_file(path).unwrap();
                }
            }
        }
    }
    fs::write(&last_path, &pristine).unwrap();
    let (state, torn, _) = recovered_state(dir.path()).unwrap();
    assert_eq!((state, torn), (written.last().unwrap().after.clone(), None));
}

#[test]
fn torn_cut_is_made_durable_with_fsync_always() {
    let dir = tempfile::tempdir().unwrap();
    let written = build(dir.path());
    let last = written.last().unwrap();
    let cut = last.start + 3;
    let pristine = fs::read(&last.path).unwrap();
    fs::write(&last.path, &pristine[..cut as usize]).unwrap();
    let mut o = opts(dir.path());
    o.fsync = FsyncPolicy::Always;
    let (_, recovered) = Wal::open(o).unwrap();
    assert_eq!(
        recovered.torn_tail,
        Some(TornTail {
            file: last.path.clone(),
            offset: last.start,
            bytes_cut: 3
        })
    );
    assert_eq!(fs::metadata(&last.path).unwrap().len(), last.start);
    assert_eq!(recovered.entries, last.before.entries);
}

#[test]
fn bit_flip_in_the_last_record_is_cut_as_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let written = build(dir.path());
    let last = written.last().unwrap();
    let pristine = fs::read(&last.path).unwrap();
    assert_eq!(last.end, pristine.len() as u64);
    for bit in last.start * 8..last.end * 8 {
        flip_bit(&last.path, &pristine, bit);
        let (state, torn, _) =
            recovered_state(dir.path()).unwrap_or_else(|e| panic!("bit {bit}: {e}"));
        assert_eq!(state, last.before, "bit {bit}");
        let expected = TornTail {
            file: last.path.clone(),
            offset: last.start,
            bytes_cut: last.end - last.start,
        };
        assert_eq!(torn, Some(expected), "bit {bit}");
    }
}

fn assert_corrupt_at(
    result: Result<(State, Option<TornTail>, Index), StorageError>,
    path: &Path,
    offset: u64,
    what: &str,
) {
    match result {
        Err(StorageError::Corrupt {
            file,
            offset: found,
            ..
        }) => {
            assert_eq!(file, path, "{what}");
            assert_eq!(found, offset, "{what}");
        }
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

#[test]
fn bit_flip_in_a_record_followed_by_valid_ones_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let written = build(dir.path());
    let last_path = written.last().unwrap().path.clone();
    let in_last: Vec<&Written> = written.iter().filter(|w| w.path == last_path).collect();
    assert!(in_last.len() >= 4, "need records after the damaged one");
    let pristine = fs::read(&last_path).unwrap();
    // Every record of the last segment but the last one, every bit of it.
    for victim in &in_last[1..in_last.len() - 1] {
        for bit in victim.start * 8..victim.end * 8 {
            flip_bit(&last_path, &pristine, bit);
            let what = format!("bit {bit} of the record at {}", victim.start);
            assert_corrupt_at(recovered_state(dir.path()), &last_path, victim.start, &what);
        }
    }
    fs::write(&last_path, &pristine).unwrap();
    assert!(recovered_state(dir.path()).is_ok());
}

#[test]
fn bit_flip_anywhere_in_an_earlier_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let written = build(dir.path());
    let paths = segment_paths(dir.path());
    let middle = &paths[1];
    let pristine = fs::read(middle).unwrap();
    for bit in 0..pristine.len() as u64 * 8 {
        flip_bit(middle, &pristine, bit);
        let byte = bit / 8;
        // The header (and its hard state record) is offset 0 / 48; records are named by start.
        let offset = if byte < HEADER_LEN {
            0
        } else {
            written
                .iter()
                .filter(|w| &w.path == middle && w.start > 0)
                .find(|w| w.start <= byte && byte < w.end)
                .map_or(HEADER_LEN, |w| w.start)
        };
        assert_corrupt_at(
            recovered_state(dir.path()),
            middle,
            offset,
            &format!("bit {bit}"),
        );
    }
    // A damaged segment that is last is still refused when valid records follow the damage.
    fs::write(middle, &pristine).unwrap();
    assert!(recovered_state(dir.path()).is_ok());
}

#[test]
fn another_nodes_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let mut other = opts(dir.path());
    other.node_id = 5;
    match Wal::open(other) {
        Err(StorageError::WrongIdentity { expected, found }) => {
            assert_eq!(expected, (11, 5));
            assert_eq!(found, (11, 2));
        }
        Err(e) => panic!("expected WrongIdentity, got {e}"),
        Ok(_) => panic!("expected WrongIdentity, opened"),
    }
}

#[test]
fn a_missing_middle_segment_is_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let paths = segment_paths(dir.path());
    fs::remove_file(&paths[1]).unwrap();
    assert_corrupt_at(recovered_state(dir.path()), &paths[2], 0, "seq gap");
}

#[test]
fn entries_missing_between_segments_are_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let written = build(dir.path());
    let paths = segment_paths(dir.path());
    // Cut segment 1 right after its first entry: segment 2 then starts past the log's end.
    let first_entry = written
        .iter()
        .find(|w| w.path == paths[0] && w.after.entries.len() > w.before.entries.len())
        .unwrap();
    let bytes = fs::read(&paths[0]).unwrap();
    fs::write(&paths[0], &bytes[..first_entry.end as usize]).unwrap();
    assert_corrupt_at(recovered_state(dir.path()), &paths[1], 0, "index gap");
}

#[test]
fn a_segment_whose_name_and_header_disagree_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let paths = segment_paths(dir.path());
    let name = paths[1].file_name().unwrap().to_str().unwrap();
    let (prefix, base) = name.strip_suffix(".log").unwrap().rsplit_once('-').unwrap();
    let renamed = dir.path().join(format!(
        "{prefix}-{:020}.log",
        base.parse::<u64>().unwrap() + 1
    ));
    fs::rename(&paths[1], &renamed).unwrap();
    assert_corrupt_at(
        recovered_state(dir.path()),
        &renamed,
        0,
        "name and header disagree",
    );
}

#[test]
fn a_directory_is_opened_by_one_wal_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(opts(dir.path())).unwrap();
    assert!(matches!(
        Wal::open(opts(dir.path())),
        Err(StorageError::Io { .. })
    ));
    drop(wal);
    assert!(Wal::open(opts(dir.path())).is_ok());
}

#[test]
fn a_failed_write_poisons_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(opts(dir.path())).unwrap();
    let hs = HardState {
        term: 3,
        voted_for: Some(1),
        commit: 0,
    };
    wal.set_hard_state(hs).unwrap();
    let mut index = 1;
    // Fill the first segment so the next batch must create segment 2.
    while fs::metadata(&segment_paths(dir.path())[0]).unwrap().len() < 400 {
        wal.append(&[entry(3, index)]).unwrap();
        wal.sync().unwrap();
        index += 1;
    }
    let synced_last = index - 1;
    // Something already sits where segment 2 must go: its creation fails.
    let obstacle = dir.path().join(format!("wal-{:020}-{:020}.log", 2, index));
    fs::create_dir(&obstacle).unwrap();
    wal.append(&[entry(3, index)]).unwrap();
    let err = wal.sync().unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    let why = wal.failed().expect("poisoned").to_string();
    assert!(why.contains("creating"), "{why}");
    assert!(matches!(wal.sync(), Err(StorageError::Poisoned(_))));
    assert!(matches!(
        wal.append(&[entry(3, index + 1)]),
        Err(StorageError::Poisoned(_))
    ));
    assert!(matches!(
        wal.set_hard_state(hs),
        Err(StorageError::Poisoned(_))
    ));
    assert!(matches!(wal.read_entry(1), Err(StorageError::Poisoned(_))));
    assert!(matches!(wal.drop_prefix(1), Err(StorageError::Poisoned(_))));
    assert!(matches!(
        wal.write_buffered(),
        Err(StorageError::Poisoned(_))
    ));
    drop(wal);

    // Restart after the operator clears the obstacle: exactly what was synced.
    fs::remove_dir(&obstacle).unwrap();
    let (_, recovered) = Wal::open(opts(dir.path())).unwrap();
    assert_eq!(recovered.hard_state, hs);
    assert_eq!(recovered.entries.len() as u64, synced_last);
}

#[test]
fn a_callers_bad_append_is_refused_without_poison() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(opts(dir.path())).unwrap();
    wal.append(&[entry(1, 1), entry(1, 2)]).unwrap();
    let invalid = |r: Result<(), StorageError>| match r {
        Err(StorageError::Io { source, .. }) => source.kind() == std::io::ErrorKind::InvalidInput,
        _ => false,
    };
    assert!(
        invalid(wal.append(&[entry(1, 4)])),
        "gap after the last index"
    );
    assert!(
        invalid(wal.append(&[entry(1, 3), entry(1, 5)])),
        "not contiguous"
    );
    assert!(invalid(wal.append(&[entry(1, 0)])), "index 0");
    assert_eq!(wal.failed(), None);
    assert_eq!(wal.last_index(), 2);
    wal.sync().unwrap();
}

#[test]
fn hard_state_survives_dropping_the_segments_that_held_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(opts(dir.path())).unwrap();
    let hs = HardState {
        term: 4,
        voted_for: Some(2),
        commit: 1,
    };
    wal.set_hard_state(hs).unwrap();
    for index in 1..=200 {
        wal.append(&[entry(4, index)]).unwrap();
        wal.sync().unwrap();
    }
    let segments_before = segment_paths(dir.path()).len();
    wal.drop_prefix(150).unwrap();
    let first = wal.first_index();
    assert!(first > 1 && first <= 151, "first index {first}");
    assert!(segment_paths(dir.path()).len() < segments_before);
    assert_eq!(wal.read_entry(first - 1).unwrap(), None);
    assert_eq!(wal.read_entry(151).unwrap(), Some(entry(4, 151)));
    drop(wal);
    let (_, recovered) = Wal::open(opts(dir.path())).unwrap();
    assert_eq!(recovered.hard_state, hs);
    assert_eq!(recovered.first_index, first);
    assert_eq!(recovered.entries.first(), Some(&entry(4, first)));
    assert_eq!(recovered.entries.last(), Some(&entry(4, 200)));
}

#[test]
fn a_torn_first_segment_creation_is_a_fresh_log() {
    let dir = tempfile::tempdir().unwrap();
    drop(Wal::open(opts(dir.path())).unwrap());
    let path = segment_paths(dir.path())[0].clone();
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..20]).unwrap();
    let (mut wal, recovered) = Wal::open(opts(dir.path())).unwrap();
    assert_eq!(recovered.first_index, 1);
    assert!(recovered.entries.is_empty());
    assert_eq!(recovered.torn_tail.map(|t| t.bytes_cut), Some(20));
    wal.append(&[entry(1, 1)]).unwrap();
    wal.sync().unwrap();
}
