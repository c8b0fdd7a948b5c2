//! Crash and damage tests on the message store's files (`src/history/`), as
//! `tests/storage_crash.rs` does for the write-ahead log: cut the last segment at every byte
//! offset, flip every bit of its records and of a sealed segment, remove or shorten segments,
//! and check that the store keeps exactly the valid prefix (the caller re-appends the rest from
//! the Raft log) or refuses naming the file and the offset.
//!
//! Record boundaries come from the documented format (src/history/mod.rs): header 40 bytes,
//! record 40 bytes + room + nick + text. Bound: a few seconds in release mode.

use raftchat::chat::ChatMessage;
use raftchat::history::{History, HistoryOptions};
use raftchat::storage::{StorageError, TornTail};
use std::fs;
use std::path::{Path, PathBuf};

const HEADER_LEN: u64 = 40;

fn message(position: u64) -> ChatMessage {
    ChatMessage {
        position,
        index: position + 3,
        room: ["lobby", "dev"][(position % 2) as usize].into(),
        nick: "grace".into(),
        text: format!("{position}:{}", "é".repeat((position % 11) as usize)),
        timestamp_ms: 5_000 + position,
    }
}

fn record_len(m: &ChatMessage) -> u64 {
    40 + (m.room.len() + m.nick.len() + m.text.len()) as u64
}

fn options(dir: &Path) -> HistoryOptions {
    HistoryOptions {
        segment_bytes: 600,
        cache_bytes: 0,
        fsync: false,
        ..HistoryOptions::new(dir, 3)
    }
}

const COUNT: u64 = 37;

/// Writes `COUNT` messages over several 600-byte segments; returns the segment paths in order.
fn build(dir: &Path) -> Vec<PathBuf> {
    let (mut h, _) = History::open(options(dir)).unwrap();
    for p in 1..=COUNT {
        h.append(&message(p)).unwrap();
    }
    h.sync().unwrap();
    assert!(h.sealed_segments() >= 3, "{}", h.sealed_segments());
    let paths = segments(dir);
    let last = paths.last().unwrap();
    assert!(
        !last.with_extension("idx").exists(),
        "the last segment is active"
    );
    paths
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    paths.sort();
    paths
}

/// The base position in a segment's name.
fn base_of(path: &Path) -> u64 {
    let name = path.file_stem().unwrap().to_str().unwrap();
    name.rsplit('-').next().unwrap().parse().unwrap()
}

/// (position, start offset, end offset) of each record of the segment at `path`.
fn records(path: &Path, last_position: u64) -> Vec<(u64, u64, u64)> {
    let mut offset = HEADER_LEN;
    let len = fs::metadata(path).unwrap().len();
    let mut out = Vec::new();
    for p in base_of(path)..=last_position {
        if offset >= len {
            break;
        }
        let end = offset + record_len(&message(p));
        out.push((p, offset, end));
        offset = end;
    }
    assert_eq!(
        offset, len,
        "the format's record lengths add up to the file"
    );
    out
}

fn all(h: &History) -> Result<Vec<ChatMessage>, StorageError> {
    h.read_range(1, usize::MAX)
}

fn expect_corrupt<T: std::fmt::Debug>(
    result: Result<T, StorageError>,
    path: &Path,
    offset: u64,
    what: &str,
) {
    match result {
        Err(StorageError::Corrupt {
            file, offset: at, ..
        }) => {
            assert_eq!((file.as_path(), at), (path, offset), "{what}");
        }
        other => panic!("{what}: expected Corrupt at {offset} of {path:?}, got {other:?}"),
    }
}

fn flip_bit(path: &Path, pristine: &[u8], bit: u64) {
    let mut damaged = pristine.to_vec();
    damaged[(bit / 8) as usize] ^= 1 << (bit % 8);
    fs::write(path, damaged).unwrap();
}

#[test]
fn cut_at_every_offset_of_the_last_segment_keeps_the_valid_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path());
    let last = paths.last().unwrap();
    let pristine = fs::read(last).unwrap();
    let in_last = records(last, COUNT);
    assert!(in_last.len() >= 3, "{in_last:?}");
    let base = base_of(last);
    for cut in 0..=pristine.len() as u64 {
        fs::write(last, &pristine[..cut as usize]).unwrap();
        let opened = History::open(options(dir.path()));
        if cut < HEADER_LEN {
            // Segments get their name only once the header is whole: a short one is damage.
            expect_corrupt(opened, last, 0, &format!("cut at {cut}"));
            continue;
        }
        let (mut h, opened) = opened.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let kept = in_last.iter().filter(|r| r.2 <= cut).count() as u64;
        let kept_to = in_last.iter().filter(|r| r.2 <= cut).map(|r| r.2).max();
        let kept_to = kept_to.unwrap_or(HEADER_LEN);
        assert_eq!(h.last_position(), base + kept - 1, "cut at {cut}");
        let torn = (cut != kept_to).then(|| TornTail {
            file: last.clone(),
            offset: kept_to,
            bytes_cut: cut - kept_to,
        });
        assert_eq!(opened.torn_tail, torn, "cut at {cut}");
        assert_eq!(fs::metadata(last).unwrap().len(), kept_to, "cut at {cut}");
        let read = all(&h).unwrap();
        assert_eq!(read, (1..base + kept).map(message).collect::<Vec<_>>());
        // What was lost comes again from the log; then the store is whole.
        for p in base + kept..=COUNT {
            h.append(&message(p)).unwrap();
        }
        h.sync().unwrap();
        drop(h);
        let (h, again) = History::open(options(dir.path())).unwrap();
        assert_eq!(again.torn_tail, None, "cut at {cut}: second open");
        assert_eq!(
            all(&h).unwrap(),
            (1..=COUNT).map(message).collect::<Vec<_>>()
        );
        assert_eq!(h.room_len("dev"), COUNT.div_ceil(2), "odd positions");
        drop(h);
        // Back to exactly the files `build` left.
        for path in segments(dir.path()) {
            if !paths.contains(&path) {
                fs::remove_file(path.with_extension("idx")).ok();
                fs::remove_file(path).unwrap();
            }
        }
        fs::remove_file(last.with_extension("idx")).ok();
    }
    fs::write(last, &pristine).unwrap();
    let (h, opened) = History::open(options(dir.path())).unwrap();
    assert_eq!((opened.torn_tail, h.last_position()), (None, COUNT));
}

#[test]
fn bit_flip_in_the_last_record_is_cut_as_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path());
    let last = paths.last().unwrap();
    let pristine = fs::read(last).unwrap();
    let &(position, start, end) = records(last, COUNT).last().unwrap();
    assert_eq!(position, COUNT);
    for bit in start * 8..end * 8 {
        flip_bit(last, &pristine, bit);
        let (h, opened) =
            History::open(options(dir.path())).unwrap_or_else(|e| panic!("bit {bit}: {e}"));
        let torn = TornTail {
            file: last.clone(),
            offset: start,
            bytes_cut: end - start,
        };
        assert_eq!(opened.torn_tail, Some(torn), "bit {bit}");
        assert_eq!(h.last_position(), COUNT - 1, "bit {bit}");
        drop(h);
        fs::write(last, &pristine).unwrap();
    }
}

#[test]
fn bit_flip_in_a_record_followed_by_valid_ones_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path());
    let last = paths.last().unwrap();
    let pristine = fs::read(last).unwrap();
    let in_last = records(last, COUNT);
    for &(position, start, end) in &in_last[..in_last.len() - 1] {
        for bit in start * 8..end * 8 {
            flip_bit(last, &pristine, bit);
            let what = format!("bit {bit} of the record of position {position}");
            expect_corrupt(History::open(options(dir.path())), last, start, &what);
        }
    }
    // The header too: any flip there is damage at offset 0.
    for bit in 0..HEADER_LEN * 8 {
        flip_bit(last, &pristine, bit);
        expect_corrupt(History::open(options(dir.path())), last, 0, "header");
    }
    fs::write(last, &pristine).unwrap();
    assert!(History::open(options(dir.path())).is_ok());
}

#[test]
fn bit_flip_anywhere_in_a_sealed_segment_is_named_on_read_and_on_verified_open() {
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path());
    let middle = &paths[1];
    let pristine = fs::read(middle).unwrap();
    let next_base = base_of(&paths[2]);
    let in_middle = records(middle, next_base - 1);
    let verified = HistoryOptions {
        verify_sealed: true,
        ..options(dir.path())
    };
    for bit in 0..pristine.len() as u64 * 8 {
        flip_bit(middle, &pristine, bit);
        let offset = bit / 8;
        let what = format!("bit {bit}");
        let Some(&(_, start, _)) = in_middle.iter().find(|r| r.1 <= offset && offset < r.2) else {
            // In the header: refused on open, with or without verification.
            expect_corrupt(History::open(options(dir.path())), middle, 0, &what);
            continue;
        };
        // Opened without reading the sealed records; the read that meets the damage names it.
        let (h, _) = History::open(options(dir.path())).unwrap_or_else(|e| panic!("{what}: {e}"));
        expect_corrupt(all(&h), middle, start, &what);
        expect_corrupt(h.verify(), middle, start, &what);
        drop(h);
        expect_corrupt(History::open(verified.clone()), middle, start, &what);
    }
    fs::write(middle, &pristine).unwrap();
    let (h, _) = History::open(verified).unwrap();
    assert_eq!(h.verify().unwrap(), COUNT);
}

#[test]
fn a_shortened_sealed_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path());
    let bytes = fs::read(&paths[0]).unwrap();
    fs::write(&paths[0], &bytes[..bytes.len() - 1]).unwrap();
    let err = History::open(options(dir.path())).unwrap_err();
    assert!(err.to_string().contains("its index says"), "{err}");
    expect_corrupt(Err::<(), _>(err), &paths[0], bytes.len() as u64 - 1, "cut");
}

#[test]
fn a_missing_middle_segment_is_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path());
    fs::remove_file(&paths[1]).unwrap();
    // Its index goes with it on open (an orphan), and the gap is refused.
    expect_corrupt(History::open(options(dir.path())), &paths[2], 0, "gap");
}

#[test]
fn a_segment_named_for_another_place_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path());
    let last = paths.last().unwrap();
    let name = last.file_name().unwrap().to_str().unwrap();
    let (head, base) = name.rsplit_once('-').unwrap();
    let base: u64 = base.trim_end_matches(".seg").parse().unwrap();
    let renamed = last.with_file_name(format!("{head}-{:020}.seg", base + 1));
    fs::rename(last, &renamed).unwrap();
    expect_corrupt(History::open(options(dir.path())), &renamed, 0, "renamed");
}

/// The last segment file and its length now.
fn last_segment(dir: &Path) -> Option<(PathBuf, u64)> {
    let last = segments(dir).pop()?;
    let len = fs::metadata(&last).unwrap().len();
    Some((last, len))
}

/// Random appends, flushes, syncs, retention, crashes (the unsynced part of the last segment
/// cut at a random byte) and reopenings, against a model: after each step every read (by
/// position, by range, by room page) answers what the model says, and a crash never loses a
/// synced message.
#[test]
fn random_runs_match_the_model() {
    use rand::{Rng, SeedableRng};
    for seed in 0..12u64 {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let opts = HistoryOptions {
            segment_bytes: rng.gen_range(300..3000),
            cache_bytes: rng.gen_range(0..4000),
            ..options(dir.path())
        };
        let (mut h, _) = History::open(opts.clone()).unwrap();
        let mut synced: Option<(PathBuf, u64)> = None;
        let mut synced_last = 0;
        for step in 0..150 {
            let what = format!("seed {seed} step {step}");
            match rng.gen_range(0..100) {
                0..=59 => {
                    for _ in 0..rng.gen_range(1..20) {
                        h.append(&message(h.last_position() + 1)).unwrap();
                    }
                }
                60..=69 => h.flush().unwrap(),
                70..=79 => {
                    h.sync().unwrap();
                    synced = last_segment(dir.path());
                    synced_last = h.last_position();
                }
                80..=84 => {
                    let keep_from = rng.gen_range(1..=h.last_position().max(1));
                    let first_before = h.first_position();
                    h.drop_before(keep_from).unwrap();
                    // Whole segments only, and never one holding `keep_from` or later.
                    assert!(h.first_position() <= keep_from.max(first_before), "{what}");
                }
                _ => {
                    // A crash: what was not synced may be cut anywhere.
                    let appended = h.last_position();
                    drop(h);
                    let last = last_segment(dir.path());
                    if let Some((last, len)) =
                        last.filter(|(last, _)| !last.with_extension("idx").exists())
                    {
                        let floor = match &synced {
                            Some((path, synced_len)) if *path == last => *synced_len,
                            _ => HEADER_LEN,
                        };
                        let cut = rng.gen_range(floor..=len);
                        let bytes = fs::read(&last).unwrap();
                        fs::write(&last, &bytes[..cut as usize]).unwrap();
                    }
                    let opened;
                    (h, opened) = History::open(opts.clone())
                        .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
                    let last_position = h.last_position();
                    assert!(
                        (synced_last..=appended).contains(&last_position),
                        "{what}: {last_position} outside {synced_last}..={appended} ({opened:?})"
                    );
                }
            }
            if opts.cache_bytes == 0 {
                // Without a cache, reads see what was written.
                h.flush().unwrap();
            }
            check_against_model(&h, &mut rng, &what);
        }
    }
}

/// Every message the store holds is `message(p)` for `p` in `first..=last`, by every read.
fn check_against_model(h: &History, rng: &mut impl rand::Rng, what: &str) {
    let (first, last) = (h.first_position(), h.last_position());
    if last == 0 {
        assert!(h.read_range(1, 10).unwrap().is_empty(), "{what}");
        return;
    }
    let range = h.read_range(0, usize::MAX).unwrap();
    assert_eq!(
        range,
        (first..=last).map(message).collect::<Vec<_>>(),
        "{what}"
    );
    for _ in 0..5 {
        let p = rng.gen_range(1..=last + 1);
        let want = (first..=last).contains(&p).then(|| message(p));
        assert_eq!(h.get(p).unwrap(), want, "{what}: get {p}");
    }
    let room = ["lobby", "dev"][rng.gen_range(0..2)];
    let before = rng.gen_range(1..=last + 1);
    let n = rng.gen_range(1..30);
    let mut want: Vec<ChatMessage> = (first..before)
        .map(message)
        .filter(|m| m.room == room)
        .collect();
    want.drain(..want.len().saturating_sub(n));
    assert_eq!(
        h.room_page(room, before, n).unwrap(),
        want,
        "{what}: page {room} {before} {n}"
    );
}

/// Copies every file of `from` into `to` (emptied first).
fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(to).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// A seal runs its fsyncs on the sealing thread, so a crash can leave the newest sealed
/// segment without its index and short of its data, with the next segment already on disk.
/// Cut it at every offset: the store keeps its valid prefix, makes it the active segment,
/// deletes the newer segment (the log appends those messages again), and is whole again once
/// they are appended. A segment cut nowhere only gets its index rebuilt.
#[test]
fn a_seal_interrupted_by_a_crash_at_every_offset_keeps_the_valid_prefix() {
    let built = tempfile::tempdir().unwrap();
    let paths = build(built.path());
    let n = paths.len();
    let sealed = &paths[n - 2];
    let name = sealed.file_name().unwrap();
    let base = base_of(sealed);
    let next_base = base_of(&paths[n - 1]);
    let in_sealed = records(sealed, next_base - 1);
    let full = fs::metadata(sealed).unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join(name);
    for cut in HEADER_LEN..=full {
        copy_dir(built.path(), dir.path());
        fs::remove_file(target.with_extension("idx")).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let (mut h, opened) =
            History::open(options(dir.path())).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let kept = in_sealed.iter().filter(|r| r.2 <= cut).count() as u64;
        let kept_to = in_sealed.iter().filter(|r| r.2 <= cut).map(|r| r.2).max();
        let kept_to = kept_to.unwrap_or(HEADER_LEN);
        if cut == full {
            assert_eq!((h.last_position(), opened.indexes_rebuilt), (COUNT, 1));
            assert_eq!(opened.torn_tail, None);
            continue;
        }
        assert_eq!(h.last_position(), base + kept - 1, "cut at {cut}");
        let torn = (cut != kept_to).then(|| TornTail {
            file: target.clone(),
            offset: kept_to,
            bytes_cut: cut - kept_to,
        });
        assert_eq!(opened.torn_tail, torn, "cut at {cut}");
        assert_eq!(
            segments(dir.path()).len(),
            n - 1,
            "cut at {cut}: newer removed"
        );
        assert_eq!(
            all(&h).unwrap(),
            (1..base + kept).map(message).collect::<Vec<_>>()
        );
        for p in base + kept..=COUNT {
            h.append(&message(p)).unwrap();
        }
        h.sync().unwrap();
        drop(h);
        let (h, again) = History::open(options(dir.path())).unwrap();
        assert_eq!(again.torn_tail, None, "cut at {cut}: second open");
        assert_eq!(
            all(&h).unwrap(),
            (1..=COUNT).map(message).collect::<Vec<_>>(),
            "cut at {cut}"
        );
        assert_eq!(h.room_len("dev"), COUNT.div_ceil(2), "cut at {cut}");
    }
}

/// Damage inside a segment whose index is missing, with valid records after it, is still
/// refused: only a short tail is taken for an interrupted seal.
#[test]
fn damage_inside_an_unindexed_sealed_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let paths = build(dir.path());
    let sealed = &paths[paths.len() - 2];
    let first = records(sealed, base_of(&paths[paths.len() - 1]) - 1)[0];
    fs::remove_file(sealed.with_extension("idx")).unwrap();
    let mut bytes = fs::read(sealed).unwrap();
    bytes[(first.1 + 45) as usize] ^= 0x01;
    fs::write(sealed, bytes).unwrap();
    expect_corrupt(
        History::open(options(dir.path())),
        sealed,
        first.1,
        "a flipped bit in the first record",
    );
}
