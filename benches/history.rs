//! The message store (`src/history/`): appends, and reads from disk (page cache warm).
//!
//! - `history_append`: append 1,000 messages of 100-byte text and `flush` (no fsync: the store
//!   is synced before snapshots, not per message), segments sealed at the default 64 MiB.
//! - `history_read_range`: 1,000 consecutive messages from a store of 200,000, from disk (the
//!   cache is off), starting at a random position.
//! - `history_room_page`: the newest 50 messages of one of 20 rooms before a random position
//!   (`history #room 50` and the binary page read), from disk, over 8 MiB segments.
//!
//! Run: `cargo bench --bench history` (a group name filters, e.g. `-- room_page`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use raftchat::chat::ChatMessage;
use raftchat::history::{History, HistoryOptions};
use rand::{Rng, SeedableRng};
use std::time::Duration;

const TEXT_BYTES: usize = 100;
const STORED: u64 = 200_000;

fn message(position: u64) -> ChatMessage {
    ChatMessage {
        position,
        index: position + 10,
        room: format!("room{}", position % 20),
        nick: "bench".into(),
        text: "x".repeat(TEXT_BYTES),
        timestamp_ms: position,
    }
}

fn options(dir: &std::path::Path, segment_bytes: u64) -> HistoryOptions {
    HistoryOptions {
        segment_bytes,
        cache_bytes: 0,
        fsync: false,
        ..HistoryOptions::new(dir, 1)
    }
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = HistoryOptions {
        cache_bytes: 1 << 20,
        ..options(dir.path(), raftchat::history::DEFAULT_SEGMENT_BYTES)
    };
    let (mut h, _) = History::open(opts).expect("open");
    let batch: Vec<ChatMessage> = (1..=1000).map(message).collect();
    let mut group = c.benchmark_group("history_append");
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000_messages", |b| {
        b.iter(|| {
            for m in &batch {
                let mut m = m.clone();
                m.position = h.last_position() + 1;
                h.append(&m).expect("append");
            }
            h.flush().expect("flush");
        })
    });
    group.finish();
}

fn filled(dir: &std::path::Path, segment_bytes: u64) -> History {
    let (mut h, _) = History::open(options(dir, segment_bytes)).expect("open");
    for p in 1..=STORED {
        h.append(&message(p)).expect("append");
    }
    h.flush().expect("flush");
    h
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = filled(dir.path(), 8 << 20);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let mut group = c.benchmark_group("history_read_range");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000_from_disk", |b| {
        b.iter(|| {
            let from = rng.gen_range(1..STORED - 1000);
            let got = h.read_range(from, 1000).expect("read");
            assert_eq!(got.len(), 1000);
        })
    });
    group.finish();
    let mut group = c.benchmark_group("history_room_page");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("50_before_random", |b| {
        b.iter(|| {
            let before = rng.gen_range(2_000..STORED);
            let room = format!("room{}", rng.gen_range(0..20));
            let got = h.room_page(&room, before, 50).expect("page");
            assert_eq!(got.len(), 50);
        })
    });
    group.finish();
}

criterion_group!(benches, append, reads);
criterion_main!(benches);
