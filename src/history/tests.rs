//! The store's behaviour over its public API: reads by position and by room across sealed
//! segments, the active segment and the cache; retention; reopening; the cache bound.

use super::*;

fn message(position: u64) -> ChatMessage {
    let room = ["general", "rust", "raft"][(position % 3) as usize];
    ChatMessage {
        position,
        index: position * 2,
        room: room.into(),
        nick: format!("n{}", position % 5),
        text: format!(
            "message number {position} {}",
            "x".repeat((position % 40) as usize)
        ),
        timestamp_ms: 1_000 + position,
    }
}

fn options(dir: &Path) -> HistoryOptions {
    HistoryOptions {
        segment_bytes: 4096,
        cache_bytes: 2048,
        fsync: false,
        ..HistoryOptions::new(dir, 7)
    }
}

fn filled(dir: &Path, n: u64) -> History {
    let (mut h, opened) = History::open(options(dir)).unwrap();
    assert_eq!(opened, Opened::default());
    for p in 1..=n {
        h.append(&message(p)).unwrap();
    }
    h
}

fn positions(messages: &[ChatMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.position).collect()
}

#[test]
fn every_position_reads_back_from_cache_active_and_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let n = 500;
    let mut h = filled(dir.path(), n);
    assert!(h.sealed_segments() >= 5, "{}", h.sealed_segments());
    assert_eq!((h.first_position(), h.last_position(), h.len()), (1, n, n));
    for p in 1..=n {
        assert_eq!(h.get(p).unwrap(), Some(message(p)), "position {p}");
    }
    assert_eq!(h.get(0).unwrap(), None);
    assert_eq!(h.get(n + 1).unwrap(), None);
    for (from, max) in [(1, 500), (0, 10), (37, 100), (490, 100), (n, 5), (n + 1, 5)] {
        let want: Vec<u64> = (from.max(1)..=n).take(max).collect();
        assert_eq!(positions(&h.read_range(from, max).unwrap()), want, "{from}");
    }
    h.sync().unwrap();
    assert_eq!(h.verify().unwrap(), n);
}

#[test]
fn room_pages_go_back_through_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    let n = 400;
    let h = filled(dir.path(), n);
    let rust: Vec<u64> = (1..=n).filter(|p| p % 3 == 1).collect();
    assert_eq!(h.room_len("rust"), rust.len() as u64);
    assert_eq!(h.room_len("nowhere"), 0);
    let page = h.room_page("rust", u64::MAX, 50).unwrap();
    assert_eq!(positions(&page), rust[rust.len() - 50..].to_vec());
    assert_eq!(page[0], message(page[0].position));
    // Page backwards to the start: every message once, in order.
    let mut before = u64::MAX;
    let mut seen = Vec::new();
    loop {
        let page = h.room_page("rust", before, 17).unwrap();
        let Some(first) = page.first() else { break };
        before = first.position;
        seen.splice(0..0, positions(&page));
    }
    assert_eq!(seen, rust);
    assert!(h.room_page("nowhere", u64::MAX, 5).unwrap().is_empty());
}

#[test]
fn reopening_finds_everything_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = filled(dir.path(), 300);
    h.sync().unwrap();
    drop(h);
    let (mut h, opened) = History::open(options(dir.path())).unwrap();
    assert_eq!(opened, Opened::default());
    assert_eq!(h.last_position(), 300);
    assert_eq!(h.cached_bytes(), 0, "the cache starts empty");
    for p in 301..=350 {
        h.append(&message(p)).unwrap();
    }
    let err = h.append(&message(352)).unwrap_err();
    assert!(
        err.to_string().contains("cannot append position 352"),
        "{err}"
    );
    h.append(&message(351)).unwrap();
    assert_eq!(
        positions(&h.read_range(1, 1000).unwrap()),
        (1..=351).collect::<Vec<_>>()
    );
    let page = h.room_page("general", u64::MAX, 400).unwrap();
    assert_eq!(
        positions(&page),
        (1..=351).filter(|p| p % 3 == 0).collect::<Vec<_>>()
    );
}

#[test]
fn unsynced_appends_are_lost_by_a_crash_but_never_half_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = filled(dir.path(), 20);
    h.sync().unwrap();
    for p in 21..=25 {
        h.append(&message(p)).unwrap();
    }
    // Dropped without flush: the buffered records never reach the file.
    drop(h);
    let (h, _) = History::open(options(dir.path())).unwrap();
    assert_eq!(h.last_position(), 20);
}

#[test]
fn retention_deletes_whole_segments_and_positions_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = filled(dir.path(), 300);
    let sealed = h.sealed_segments();
    // Pending seals are kept until durable; once they are, retention sees them all.
    h.wait_for_seals();
    let dropped = h.drop_before(150).unwrap();
    assert!(dropped > 0 && dropped < sealed, "{dropped} of {sealed}");
    let first = h.first_position();
    assert!(first > 1 && first <= 150, "{first}");
    assert_eq!(h.get(first - 1).unwrap(), None);
    assert_eq!(h.get(first).unwrap(), Some(message(first)));
    assert_eq!(h.read_range(1, 1).unwrap()[0].position, first);
    // Everything sealed can go; the active segment stays, so positions are never reused.
    h.wait_for_seals();
    h.drop_before(u64::MAX).unwrap();
    assert_eq!(h.sealed_segments(), 0);
    h.append(&message(301)).unwrap();
    h.sync().unwrap();
    drop(h);
    let (h, _) = History::open(options(dir.path())).unwrap();
    assert_eq!(h.last_position(), 301);
    assert_eq!(h.get(301).unwrap(), Some(message(301)));
    let files = fs::read_dir(dir.path()).unwrap().count();
    assert!(files <= 3, "{files} files left");
}

#[test]
fn the_cache_stays_within_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let opts = HistoryOptions {
        cache_bytes: 10_000,
        segment_bytes: 1 << 20,
        ..options(dir.path())
    };
    let (mut h, _) = History::open(opts).unwrap();
    let mut peak = 0;
    for p in 1..=20_000 {
        h.append(&message(p)).unwrap();
        if p % 100 == 0 {
            h.flush().unwrap();
            peak = peak.max(h.cached_bytes());
        }
    }
    assert!(peak <= 10_000 + 200, "cache peaked at {peak}");
    assert_eq!(h.get(1).unwrap(), Some(message(1)));
}

#[test]
fn a_lost_index_is_rebuilt_and_a_damaged_one_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = filled(dir.path(), 300);
    h.sync().unwrap();
    drop(h);
    let mut indexes: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        .collect();
    indexes.sort();
    fs::remove_file(&indexes[0]).unwrap();
    let mut bytes = fs::read(&indexes[1]).unwrap();
    bytes[30] ^= 0x10;
    fs::write(&indexes[1], bytes).unwrap();
    let (h, opened) = History::open(options(dir.path())).unwrap();
    assert_eq!(opened.indexes_rebuilt, 2);
    assert_eq!(
        positions(&h.read_range(1, 1000).unwrap()),
        (1..=300).collect::<Vec<_>>()
    );
    assert_eq!(h.room_len("raft"), 100);
}

#[test]
fn another_clusters_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = filled(dir.path(), 10);
    h.sync().unwrap();
    drop(h);
    let err = History::open(HistoryOptions {
        cluster_id: 8,
        ..options(dir.path())
    })
    .unwrap_err();
    assert!(err.to_string().contains("cluster 7"), "{err}");
}

#[test]
fn a_reader_on_another_thread_sees_the_store_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = filled(dir.path(), 300);
    let reader = h.reader().unwrap();
    assert_eq!((reader.first_position(), reader.last_position()), (1, 300));
    // The store goes on: more messages, and retention deletes the oldest segments' files.
    for p in 301..=400 {
        h.append(&message(p)).unwrap();
    }
    h.wait_for_seals();
    assert!(h.drop_before(200).unwrap() > 0);
    assert!(h.first_position() > 1);
    let read = std::thread::spawn(move || {
        let all = reader.read_range(0, usize::MAX).unwrap();
        let middle = reader.read_range(150, 7).unwrap();
        (all, middle)
    })
    .join()
    .unwrap();
    assert_eq!(read.0, (1..=300).map(message).collect::<Vec<_>>());
    assert_eq!(positions(&read.1), (150..157).collect::<Vec<_>>());
    let empty = {
        let dir = tempfile::tempdir().unwrap();
        let (mut h, _) = History::open(options(dir.path())).unwrap();
        h.reader().unwrap()
    };
    assert_eq!((empty.first_position(), empty.last_position()), (1, 0));
    assert!(empty.read_range(1, 10).unwrap().is_empty());
}

#[test]
fn without_a_cache_reads_see_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let opts = HistoryOptions {
        cache_bytes: 0,
        ..options(dir.path())
    };
    let (mut h, _) = History::open(opts).unwrap();
    for p in 1..=5 {
        h.append(&message(p)).unwrap();
    }
    assert_eq!(h.cached_bytes(), 0);
    assert!(h.read_range(1, 10).unwrap().is_empty(), "still buffered");
    h.flush().unwrap();
    assert_eq!(
        positions(&h.read_range(1, 10).unwrap()),
        vec![1, 2, 3, 4, 5]
    );
}

#[test]
fn a_sync_ticket_covers_what_was_appended_before_it_and_waits_without_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = filled(dir.path(), 300);
    let ticket = h.begin_sync().unwrap();
    assert_eq!(ticket.through(), 300);
    // The store goes on while the ticket is outstanding (nothing borrows it).
    h.append(&message(301)).unwrap();
    ticket.wait().unwrap();
    // What the ticket covers is in the files: a second opening (the first still holds 301
    // in its buffer) reads 1..=300 back.
    let (again, opened) = History::open(options(dir.path())).unwrap();
    assert_eq!(opened, Opened::default());
    assert_eq!(again.last_position(), 300);
    assert_eq!(again.verify().unwrap(), 300);
    assert_eq!(again.get(300).unwrap(), Some(message(300)));
}

#[test]
fn a_failed_sync_poisons_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = filled(dir.path(), 10);
    let error = StorageError::io("fsync test", std::io::Error::other("injected"));
    h.mark_failed(&error);
    assert!(matches!(
        h.append(&message(11)),
        Err(StorageError::Poisoned(why)) if why.contains("injected")
    ));
}
