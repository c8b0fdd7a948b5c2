//! Property test: random append / overwrite / set_hard_state / drop_prefix / sync / reopen
//! sequences against an in-memory model of the log. After every reopen the recovered state must
//! equal the model's synced state; between reopens the Wal must answer like the model.
//!
//! Each sequence is one seed. A failing sequence prints its seed; replay it alone with
//! `RAFTCHAT_WAL_SEED=<seed> cargo test --release --test storage_model`.
//! Bound: 300 sequences of 250 steps, about a second in release mode.

use raftchat::raft::{Entry, EntryKind, HardState, Index};
use raftchat::storage::{FsyncPolicy, Wal, WalOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

const SEQUENCES: u64 = 300;
const STEPS: usize = 250;

#[derive(Clone, Debug, Default)]
struct Model {
    first_index: Index,
    entries: Vec<Entry>,
    hard_state: HardState,
}

impl Model {
    fn last_index(&self) -> Index {
        self.first_index + self.entries.len() as u64 - 1
    }

    fn get(&self, index: Index) -> Option<&Entry> {
        if index < self.first_index {
            return None;
        }
        self.entries.get((index - self.first_index) as usize)
    }

    fn append(&mut self, new: &[Entry]) {
        let start = new[0].index;
        if start < self.first_index {
            self.entries.clear();
            self.first_index = start;
        } else {
            self.entries.truncate((start - self.first_index) as usize);
        }
        self.entries.extend_from_slice(new);
    }

    fn drop_before(&mut self, new_first: Index) {
        while self.first_index < new_first && !self.entries.is_empty() {
            self.entries.remove(0);
            self.first_index += 1;
        }
        if self.entries.is_empty() {
            self.first_index = self.first_index.max(new_first);
        }
    }
}

/// Prints the seed if the sequence panics, so it can be replayed.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "storage_model failed with seed {0}; replay: RAFTCHAT_WAL_SEED={0} cargo test --release --test storage_model",
                self.0
            );
        }
    }
}

#[test]
fn random_sequences_match_the_model() {
    let seeds: Vec<u64> = match std::env::var("RAFTCHAT_WAL_SEED") {
        Ok(seed) => vec![seed.parse().expect("RAFTCHAT_WAL_SEED must be a number")],
        Err(_) => (0..SEQUENCES).map(|k| 0x5eed_0000 + k).collect(),
    };
    for seed in seeds {
        let _guard = SeedGuard(seed);
        run_sequence(seed);
    }
}

fn options(dir: &Path, rng: &mut SmallRng, seed: u64) -> WalOptions {
    let mut opts = WalOptions::new(dir, 7, 3);
    opts.segment_bytes = [200, 600, 2000, 1 << 20][rng.gen_range(0..4)];
    // Real fsyncs cost ~0.3 ms each; exercise them in one sequence out of ten.
    opts.fsync = if seed.is_multiple_of(10) {
        FsyncPolicy::Always
    } else {
        FsyncPolicy::Never
    };
    opts
}

fn run_sequence(seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), &mut rng, seed);
    let (mut wal, recovered) = Wal::open(opts.clone()).unwrap();
    assert_eq!(recovered.first_index, 1);
    assert!(recovered.entries.is_empty());
    let mut current = Model {
        first_index: 1,
        ..Model::default()
    };
    let mut synced = current.clone();
    let mut term = 1;
    // Whether an overwrite is buffered or written but not yet durable (drop_prefix waits then).
    let mut overwrite_unsynced = false;

    for step in 0..STEPS {
        let what = rng.gen_range(0..100);
        match what {
            0..=39 => {
                let last = current.last_index();
                let start = match rng.gen_range(0..20) {
                    0..=13 => last + 1,
                    14..=18 => rng.gen_range(current.first_index..=last + 1),
                    _ => rng.gen_range(1..=last + 1),
                };
                if start <= last || start < current.first_index {
                    overwrite_unsynced = true;
                }
                if rng.gen_bool(0.2) {
                    term += 1;
                }
                let count = rng.gen_range(1..=6);
                let entries: Vec<Entry> = (0..count)
                    .map(|k| random_entry(&mut rng, term, start + k))
                    .collect();
                wal.append(&entries).unwrap();
                current.append(&entries);
            }
            40..=51 => {
                let hs = HardState {
                    term: rng.gen_range(0..50),
                    voted_for: rng.gen_bool(0.5).then(|| rng.gen_range(0..5)),
                    commit: rng.gen_range(0..=current.last_index()),
                };
                wal.set_hard_state(hs).unwrap();
                current.hard_state = hs;
            }
            52..=69 => {
                wal.sync().unwrap();
                synced = current.clone();
                overwrite_unsynced = false;
            }
            70..=74 => {
                // The helper-thread path: write now, fdatasync on another thread.
                let mut job = wal.write_buffered().unwrap();
                job = std::thread::spawn(move || {
                    job.run();
                    job
                })
                .join()
                .unwrap();
                assert_eq!(wal.synced(job).unwrap(), current.last_index());
                synced = current.clone();
                overwrite_unsynced = false;
            }
            75..=81 => {
                let old_first = current.first_index;
                let through = rng.gen_range(old_first.saturating_sub(1)..=current.last_index());
                wal.drop_prefix(through).unwrap();
                let new_first = wal.first_index();
                assert!(new_first >= old_first, "step {step}: first index went back");
                assert!(
                    new_first <= (through + 1).max(old_first),
                    "step {step}: dropped past {through}: first index {new_first}"
                );
                if overwrite_unsynced {
                    assert_eq!(
                        new_first, old_first,
                        "step {step}: dropped under an overwrite"
                    );
                }
                current.drop_before(new_first);
                // Without an unsynced overwrite the synced log is a prefix of the current one,
                // and deleted segments held only entries below `new_first`.
                if !overwrite_unsynced {
                    assert!(new_first <= synced.last_index() + 1);
                    synced.drop_before(new_first);
                }
            }
            88..=89 => {
                // A snapshot installed: the log restarts empty, below, at or beyond its end.
                let last = current.last_index();
                let snapshot_index =
                    rng.gen_range(current.first_index.saturating_sub(1)..=last + 10);
                wal.reset_after_snapshot(snapshot_index).unwrap();
                current.entries.clear();
                current.first_index = snapshot_index + 1;
                overwrite_unsynced = true;
            }
            82..=87 => {
                let index =
                    rng.gen_range(current.first_index.saturating_sub(1)..=current.last_index() + 1);
                let read = wal.read_entry(index).unwrap();
                assert_eq!(
                    read.as_ref(),
                    current.get(index),
                    "step {step}: read_entry({index})"
                );
            }
            _ => {
                drop(wal);
                let (reopened, recovered) = Wal::open(opts.clone()).unwrap();
                wal = reopened;
                assert_eq!(recovered.torn_tail, None, "step {step}");
                assert_eq!(
                    recovered.hard_state, synced.hard_state,
                    "step {step}: hard state"
                );
                assert_eq!(
                    recovered.first_index, synced.first_index,
                    "step {step}: first index"
                );
                assert_eq!(recovered.entries, synced.entries, "step {step}: entries");
                current = synced.clone();
                overwrite_unsynced = false;
            }
        }
        assert_eq!(
            wal.first_index(),
            current.first_index,
            "step {step}: first_index()"
        );
        assert_eq!(
            wal.last_index(),
            current.last_index(),
            "step {step}: last_index()"
        );
        assert_eq!(wal.failed(), None);
    }

    // Every entry still readable, from the files this time.
    wal.sync().unwrap();
    drop(wal);
    let (mut wal, recovered) = Wal::open(opts).unwrap();
    assert_eq!(recovered.entries, current.entries);
    for entry in &current.entries {
        assert_eq!(wal.read_entry(entry.index).unwrap().as_ref(), Some(entry));
    }
}

fn random_entry(rng: &mut SmallRng, term: u64, index: Index) -> Entry {
    let len = rng.gen_range(0..80);
    let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
    let kind = if rng.gen_bool(0.1) {
        EntryKind::Noop
    } else {
        EntryKind::Normal
    };
    Entry::new(term, index, kind, &data)
}
