//! WAL throughput with real fdatasync (FsyncPolicy::Always), 100-byte entries.
//!
//! - `append_sync`: append a batch, then `sync` inline (one write + one fdatasync), in entries/s.
//! - `append_sync_bytes`: the same, in payload bytes/s.
//! - `overlap_append`: the fdatasync runs on a helper thread (`write_buffered` / `SyncJob::run` /
//!   `synced`) while the caller builds and appends the next batch; the next write waits for the
//!   previous sync. One sync in flight.
//! - `overlap_write`: as above, but the next batch is also written while the previous one syncs
//!   (two jobs in flight, the helper syncs them in order).
//!
//! Run: `cargo bench --bench wal` (add a group name to filter, e.g. `cargo bench --bench wal -- overlap`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raftchat::raft::{Entry, EntryKind, Payload};
use raftchat::storage::{SyncJob, Wal, WalOptions};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const ENTRY_DATA_BYTES: usize = 100;
const BATCHES: [u64; 4] = [1, 16, 256, 4096];

fn open_wal(dir: &std::path::Path) -> Wal {
    let (wal, _) = Wal::open(WalOptions::new(dir, 1, 1)).expect("open wal");
    wal
}

fn batch(wal: &Wal, size: u64, data: &Payload) -> Vec<Entry> {
    let first = wal.last_index() + 1;
    (first..first + size)
        .map(|index| Entry {
            term: 1,
            index,
            kind: EntryKind::Normal,
            data: Arc::clone(data),
        })
        .collect()
}

/// Keeps the bench directory small; outside the timed region.
fn trim(wal: &mut Wal) {
    let last = wal.last_index();
    wal.drop_prefix(last.saturating_sub(1))
        .expect("drop_prefix");
}

fn inline_sync(c: &mut Criterion, group_name: &str, bytes: bool) {
    let data: Payload = Arc::from(vec![0x5a; ENTRY_DATA_BYTES]);
    let mut group = c.benchmark_group(group_name);
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    for size in BATCHES {
        group.throughput(if bytes {
            Throughput::Bytes(size * ENTRY_DATA_BYTES as u64)
        } else {
            Throughput::Elements(size)
        });
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut wal = open_wal(dir.path());
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let entries = batch(&wal, size, &data);
                    wal.append(&entries).expect("append");
                    wal.sync().expect("sync");
                }
                let elapsed = start.elapsed();
                trim(&mut wal);
                elapsed
            });
        });
    }
    group.finish();
}

fn append_sync(c: &mut Criterion) {
    inline_sync(c, "append_sync", false);
}

fn append_sync_bytes(c: &mut Criterion) {
    inline_sync(c, "append_sync_bytes", true);
}

/// The helper thread: runs each job's fdatasync in order and hands it back.
fn spawn_syncer() -> (mpsc::Sender<SyncJob>, mpsc::Receiver<SyncJob>) {
    let (job_tx, job_rx) = mpsc::channel::<SyncJob>();
    let (done_tx, done_rx) = mpsc::channel::<SyncJob>();
    thread::spawn(move || {
        for mut job in job_rx {
            job.run();
            if done_tx.send(job).is_err() {
                break;
            }
        }
    });
    (job_tx, done_rx)
}

fn overlapped(c: &mut Criterion, group_name: &str, max_in_flight: usize) {
    let data: Payload = Arc::from(vec![0x5a; ENTRY_DATA_BYTES]);
    let mut group = c.benchmark_group(group_name);
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    for size in BATCHES {
        group.throughput(Throughput::Elements(size));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut wal = open_wal(dir.path());
            let (job_tx, done_rx) = spawn_syncer();
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut in_flight = 0;
                for _ in 0..iters {
                    let entries = batch(&wal, size, &data);
                    wal.append(&entries).expect("append");
                    // With one job in flight, the write waits for the previous sync; with two,
                    // it goes ahead and the helper syncs it next.
                    if in_flight == max_in_flight {
                        let done = done_rx.recv().expect("syncer alive");
                        wal.synced(done).expect("synced");
                        in_flight -= 1;
                    }
                    let job = wal.write_buffered().expect("write_buffered");
                    job_tx.send(job).expect("syncer alive");
                    in_flight += 1;
                }
                for _ in 0..in_flight {
                    let done = done_rx.recv().expect("syncer alive");
                    wal.synced(done).expect("synced");
                }
                let elapsed = start.elapsed();
                trim(&mut wal);
                elapsed
            });
        });
    }
    group.finish();
}

fn overlap_append(c: &mut Criterion) {
    overlapped(c, "overlap_append", 1);
}

fn overlap_write(c: &mut Criterion) {
    overlapped(c, "overlap_write", 2);
}

criterion_group!(
    benches,
    append_sync,
    append_sync_bytes,
    overlap_append,
    overlap_write
);
criterion_main!(benches);
