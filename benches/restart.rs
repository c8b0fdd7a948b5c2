//! A node's restart path with 1,000,000 chat messages in its log, with and without a snapshot,
//! and the snapshot's own costs: capturing it on the event loop, writing it out.
//!
//! `cargo bench --bench restart`
//!
//! Fixtures are built once in a temporary directory: 1,011,200 entries of real encoded chat
//! commands (1,000,090 posts of a 64-byte text in 8 rooms, one entry in 100 a key-value `Set`
//! over 10,000 keys, 1,000 client sessions each retaining an outcome).
//! - no snapshot: a WAL of all of them; restart = `Wal::open` + apply every entry.
//! - snapshot: a snapshot at index 1,011,200 (1,000,090 messages), and a WAL trimmed to a
//!   trailing window of the 10,000 entries before it plus 1,000 after it; restart =
//!   `SnapshotStore::latest` (checks the body's CRC) + `StateMachine::restore` + `Wal::open` +
//!   apply the 1,000 entries after the snapshot.
//! - v5 (issue 20): the same state with its messages in a message store (`History`, 16
//!   chunks of 4,096 messages kept in memory), and a version-5 snapshot that leaves them to
//!   the store; restart = `History::open`, `SnapshotStore::latest`,
//!   `StateMachine::restore_with_store`, `Wal::open` and applying the 1,000 entries after it.
//!   Only it: `cargo bench --bench restart -- v5`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, SamplingMode};
use raftchat::chat::{Command, Op, Origin, SessionConfig, SessionRef, StateMachine};
use raftchat::history::{History, HistoryOptions};
use raftchat::raft::{Entry, EntryKind, Index, SnapshotMeta};
use raftchat::storage::{FsyncPolicy, SnapshotStore, Wal, WalOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Entries up to the snapshot: 1,000,090 of them are posts.
const MESSAGES_ENTRIES: Index = 1_011_200;
const AFTER_SNAPSHOT: Index = 1_000;
const WINDOW: Index = 10_000;
const SESSIONS: Index = 1_000;
const ROOMS: u64 = 8;
const TERM: u64 = 3;
const CLUSTER: u64 = 42;

/// The command of entry `index`: sessions first, then rooms, then mostly posts.
fn command(index: Index) -> Vec<u8> {
    let room = |k: u64| {
        if k == 0 {
            "general".to_string()
        } else {
            format!("room{k}")
        }
    };
    let (session, op) = if index <= SESSIONS {
        (None, Op::OpenSession)
    } else if index <= SESSIONS + ROOMS {
        (
            None,
            Op::CreateRoom {
                room: room(index - SESSIONS - 1),
            },
        )
    } else if index.is_multiple_of(100) {
        let op = Op::Set {
            key: format!("key{}", index / 100 % 10_000),
            value: format!("value at {index}"),
        };
        (None, op)
    } else {
        let op = Op::Post {
            room: room(index % ROOMS),
            nick: format!("user{}", index % 97),
            text: format!("{index:>12} the quick brown fox jumps over the lazy dog 123456"),
        };
        let session = (index % 10 == 1).then(|| {
            let id = 1 + index / 10 % SESSIONS;
            let seq = index / 10 / SESSIONS + 1;
            SessionRef {
                id,
                seq,
                lowest_unacked_seq: seq,
            }
        });
        (session, op)
    };
    let mut data = Vec::new();
    Command {
        origin: Origin {
            node: 1,
            req: index,
        },
        // A tenth of a millisecond per entry: 100 s of log time, so no session expires.
        timestamp_ms: 1_700_000_000_000 + index / 10,
        session,
        op,
    }
    .encode(&mut data);
    data
}

fn entry(index: Index) -> Entry {
    Entry::new(TERM, index, EntryKind::Normal, &command(index))
}

fn wal_options(dir: &Path) -> WalOptions {
    let mut opts = WalOptions::new(dir, CLUSTER, 1);
    opts.fsync = FsyncPolicy::Never;
    opts
}

fn append_all(wal: &mut Wal, indexes: std::ops::RangeInclusive<Index>) {
    let indexes: Vec<Index> = indexes.collect();
    for batch in indexes.chunks(10_000) {
        let entries: Vec<Entry> = batch.iter().map(|&i| entry(i)).collect();
        wal.append(&entries).unwrap();
        wal.sync().unwrap();
    }
}

fn apply_all(sm: &mut StateMachine, entries: &[Entry]) {
    for e in entries {
        if e.index > sm.applied_index() {
            black_box(sm.apply(e.index, &e.data));
        }
    }
}

struct Fixtures {
    _tmp: tempfile::TempDir,
    full_wal: std::path::PathBuf,
    snap_wal: std::path::PathBuf,
    snap_dir: std::path::PathBuf,
    /// The v5 fixture: a message store and a snapshot directory holding a version-5 snapshot.
    store_dir: std::path::PathBuf,
    v5_snap_dir: std::path::PathBuf,
    /// The state after entry MESSAGES_ENTRIES.
    sm: StateMachine,
}

fn fixtures() -> Fixtures {
    let tmp = tempfile::tempdir().unwrap();
    let full_wal = tmp.path().join("full");
    let snap_wal = tmp.path().join("snap-wal");
    let snap_dir = tmp.path().join("snapshots");
    {
        let (mut wal, _) = Wal::open(wal_options(&full_wal)).unwrap();
        append_all(&mut wal, 1..=MESSAGES_ENTRIES);
    }
    let mut sm = StateMachine::default();
    for index in 1..=MESSAGES_ENTRIES {
        sm.apply(index, &command(index));
    }
    let store = SnapshotStore::open(&snap_dir, CLUSTER, FsyncPolicy::Never).unwrap();
    let mut writer = store
        .create(SnapshotMeta {
            index: MESSAGES_ENTRIES,
            term: TERM,
        })
        .unwrap();
    sm.capture().write_to(&mut writer).unwrap();
    let file = writer.finish().unwrap();
    {
        // The log a follower has after installing the snapshot and trimming: a trailing
        // window before the snapshot's index, then the entries after it.
        let (mut wal, _) = Wal::open(wal_options(&snap_wal)).unwrap();
        wal.reset_after_snapshot(MESSAGES_ENTRIES - WINDOW).unwrap();
        append_all(
            &mut wal,
            MESSAGES_ENTRIES - WINDOW + 1..=MESSAGES_ENTRIES + AFTER_SNAPSHOT,
        );
        wal.drop_prefix(MESSAGES_ENTRIES - WINDOW).unwrap();
    }
    let store_dir = tmp.path().join("history");
    let v5_snap_dir = tmp.path().join("snapshots-v5");
    {
        let stored = StateMachine::default().with_store(open_store(&store_dir), KEEP_CHUNKS);
        let mut stored = stored;
        for index in 1..=MESSAGES_ENTRIES {
            stored.apply(index, &command(index));
        }
        let capture = stored.capture();
        assert_eq!(capture.version(), 5);
        let store = SnapshotStore::open(&v5_snap_dir, CLUSTER, FsyncPolicy::Never).unwrap();
        let mut writer = store
            .create(SnapshotMeta {
                index: MESSAGES_ENTRIES,
                term: TERM,
            })
            .unwrap();
        capture.write_to(&mut writer).unwrap();
        capture.sync_store().unwrap();
        let file = writer.finish().unwrap();
        eprintln!(
            "v5 fixture: {} messages in the store, snapshot {} bytes",
            capture.message_count(),
            file.len
        );
    }
    eprintln!(
        "fixtures: {} messages, snapshot {} bytes, {} keys, {} sessions",
        sm.message_count(),
        file.len,
        sm.keys("").len(),
        sm.session_count()
    );
    Fixtures {
        _tmp: tmp,
        full_wal,
        snap_wal,
        snap_dir,
        store_dir,
        v5_snap_dir,
        sm,
    }
}

/// Chunks of 4,096 messages the v5 restart keeps in memory.
const KEEP_CHUNKS: usize = 16;

fn open_store(dir: &Path) -> Arc<Mutex<History>> {
    let opts = HistoryOptions {
        cache_bytes: 0,
        fsync: false,
        ..HistoryOptions::new(dir, CLUSTER)
    };
    Arc::new(Mutex::new(History::open(opts).unwrap().0))
}

fn restart(c: &mut Criterion) {
    let f = fixtures();
    let mut group = c.benchmark_group("restart");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);

    group.bench_function("no_snapshot_wal_open_and_apply_1M", |b| {
        b.iter_with_large_drop(|| {
            let (wal, recovered) = Wal::open(wal_options(&f.full_wal)).unwrap();
            drop(wal);
            let mut sm = StateMachine::default();
            apply_all(&mut sm, &recovered.entries);
            assert_eq!(sm.applied_index(), MESSAGES_ENTRIES);
            sm
        })
    });

    group.bench_function("snapshot_latest_restore_wal_open_apply_1k", |b| {
        b.iter_with_large_drop(|| {
            let store = SnapshotStore::open(&f.snap_dir, CLUSTER, FsyncPolicy::Never).unwrap();
            let file = store.latest().unwrap().unwrap();
            let mut body = file.body().unwrap();
            let mut sm = StateMachine::restore(&mut body, SessionConfig::default(), 0).unwrap();
            let (wal, recovered) = Wal::open(wal_options(&f.snap_wal)).unwrap();
            drop(wal);
            apply_all(&mut sm, &recovered.entries);
            assert_eq!(sm.applied_index(), MESSAGES_ENTRIES + AFTER_SNAPSHOT);
            sm
        })
    });
    group.bench_function("v5_store_open_latest_restore_wal_open_apply_1k", |b| {
        b.iter_with_large_drop(|| {
            let history = open_store(&f.store_dir);
            let store = SnapshotStore::open(&f.v5_snap_dir, CLUSTER, FsyncPolicy::Never).unwrap();
            let file = store.latest().unwrap().unwrap();
            let mut body = file.body().unwrap();
            let config = SessionConfig::default();
            let mut sm =
                StateMachine::restore_with_store(&mut body, config, 0, history, KEEP_CHUNKS)
                    .unwrap();
            let (wal, recovered) = Wal::open(wal_options(&f.snap_wal)).unwrap();
            drop(wal);
            apply_all(&mut sm, &recovered.entries);
            assert_eq!(sm.applied_index(), MESSAGES_ENTRIES + AFTER_SNAPSHOT);
            assert_eq!(sm.message_count(), f.sm.message_count() + 990);
            sm
        })
    });
    group.finish();

    let mut group = c.benchmark_group("snapshot_1M");
    group.sample_size(10);
    group.bench_function("capture", |b| b.iter_with_large_drop(|| f.sm.capture()));
    // The worst case for a capture: a full tail of CHUNK_LEN - 1 messages to copy.
    let mut worst = f.sm.clone();
    let mut index = worst.applied_index();
    while worst.message_count() % 4096 != 4095 {
        index += 1;
        let data = command(index);
        worst.apply(index, &data);
    }
    group.bench_function("capture_full_tail", |b| {
        b.iter_with_large_drop(|| worst.capture())
    });
    group.sampling_mode(SamplingMode::Flat);
    let snapshot = f.sm.capture();
    let out_dir = f._tmp.path().join("write-bench");
    let store = SnapshotStore::open(&out_dir, CLUSTER, FsyncPolicy::Always).unwrap();
    group.bench_function("write_to_file_fsync", |b| {
        b.iter(|| {
            let mut writer = store
                .create(SnapshotMeta {
                    index: snapshot.applied_index(),
                    term: TERM,
                })
                .unwrap();
            snapshot.write_to(&mut writer).unwrap();
            writer.flush().unwrap();
            black_box(writer.finish().unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, restart);
criterion_main!(benches);
