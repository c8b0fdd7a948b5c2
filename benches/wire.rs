//! Wire-format throughput: encode and decode an AppendEntries of 64 entries × 100 bytes, the
//! shape of a busy leader's batch. Each is measured twice, once per throughput unit, so criterion
//! reports both MB/s (frame bytes) and entries/s.
//!
//! Run: `cargo bench --bench wire`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use raftchat::raft::{Entry, EntryKind, Message, MessageBody};
use raftchat::wire::{decode_peer_frame, encode_raft_message, raft_message_frame_bytes, PeerFrame};

const ENTRIES: usize = 64;
const ENTRY_DATA_BYTES: usize = 100;

fn append_entries() -> Message {
    let entries = (0..ENTRIES as u64)
        .map(|i| Entry::new(9, 1_000 + i, EntryKind::Normal, &[b'x'; ENTRY_DATA_BYTES]))
        .collect();
    Message {
        from: 0,
        to: 1,
        term: 9,
        body: MessageBody::AppendEntries {
            prev_log_index: 999,
            prev_log_term: 9,
            entries,
            leader_commit: 990,
        },
    }
}

fn bench_wire(c: &mut Criterion) {
    let msg = append_entries();
    let frame_bytes = raft_message_frame_bytes(&msg);
    let mut frame = Vec::new();
    encode_raft_message(&msg, &mut frame);
    assert_eq!(frame.len(), frame_bytes);

    for (unit, throughput) in [
        ("bytes", Throughput::Bytes(frame_bytes as u64)),
        ("entries", Throughput::Elements(ENTRIES as u64)),
    ] {
        let mut group = c.benchmark_group(format!("wire_append_entries_64x100/{unit}"));
        group.throughput(throughput);
        // The write buffer is reused across iterations, as the server reuses a connection's.
        let mut out = Vec::with_capacity(frame_bytes);
        group.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                encode_raft_message(black_box(&msg), &mut out);
                black_box(out.len())
            })
        });
        group.bench_function("decode", |b| {
            b.iter(|| match decode_peer_frame(black_box(&frame)) {
                Ok(Some((PeerFrame::Raft(msg), consumed))) => black_box((msg, consumed)),
                other => panic!("decode failed: {other:?}"),
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_wire);
criterion_main!(benches);
