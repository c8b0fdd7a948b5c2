//! A real crash: a child process appends and syncs in a loop, printing each index it has made
//! durable; the parent SIGKILLs it at a random moment, reopens the log, and checks that every
//! index the child reported is present and intact. Twenty kills on the same directory, so each
//! recovery starts from the previous one's repairs.
//!
//! The child is this same test binary, re-executed with `CHILD_DIR_ENV` set and an `--exact`
//! filter selecting `child_append_loop`. Run normally, `child_append_loop` returns at once.
//! Replay a failure with `RAFTCHAT_WAL_SEED=<seed> cargo test --release --test storage_process`.
//! Bound: 20 kills, each after at most 150 reported syncs; a few seconds in all.

use raftchat::raft::{Entry, EntryKind, HardState, Index, Term};
use raftchat::storage::{Wal, WalOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_DIR_ENV: &str = "RAFTCHAT_WAL_CHILD_DIR";
const CHILD_SEED_ENV: &str = "RAFTCHAT_WAL_CHILD_SEED";
const KILLS: u64 = 20;
const SEGMENT_BYTES: u64 = 32 << 10;
/// The child drops prefixes only this far behind its last index.
const DROP_LAG: u64 = 3000;

fn options(dir: &Path) -> WalOptions {
    let mut opts = WalOptions::new(dir, 1, 0);
    opts.segment_bytes = SEGMENT_BYTES;
    opts
}

/// Data that names its own index and term, so any entry can be checked on its own.
fn payload(index: Index, term: Term) -> Vec<u8> {
    let mut data = format!("{index}:{term}:").into_bytes();
    let filler = b'a' + (index % 26) as u8;
    data.resize(data.len() + 10 + (index % 90) as usize, filler);
    data
}

fn intact(entry: &Entry) -> bool {
    entry.kind == EntryKind::Normal && entry.data[..] == payload(entry.index, entry.term)[..]
}

/// Child mode: append, set the hard state and sync forever (until SIGKILL), reporting
/// `synced <index>` after each sync, `overwrite <index>` before replacing the suffix from
/// `index` on, and `dropping <index>` before each drop_prefix.
#[test]
fn child_append_loop() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return; // not a child: nothing to do
    };
    let seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut wal, recovered) = Wal::open(options(Path::new(&dir))).unwrap();
    let term = recovered.hard_state.term + 1;
    let mut out = std::io::stdout().lock();
    loop {
        let last = wal.last_index();
        // Mostly append; sometimes rewrite the last few entries (a new leader's overwrite).
        let start = if rng.gen_bool(0.05) && last >= 3 {
            last - rng.gen_range(0..3)
        } else {
            last + 1
        };
        if start <= last {
            // A new leader's overwrite may end the log below what was synced before: the entries
            // from `start` on are replaced, and a crash may leave either the old suffix or any
            // prefix of the new one.
            writeln!(out, "overwrite {start}").unwrap();
            out.flush().unwrap();
        }
        let count = rng.gen_range(1..=32);
        let entries: Vec<Entry> = (start..start + count)
            .map(|index| Entry::new(term, index, EntryKind::Normal, &payload(index, term)))
            .collect();
        wal.append(&entries).unwrap();
        let hs = HardState {
            term,
            voted_for: Some(0),
            commit: wal.last_index(),
        };
        wal.set_hard_state(hs).unwrap();
        let durable = if rng.gen_bool(0.5) {
            wal.sync().unwrap();
            wal.last_index()
        } else {
            let mut job = wal.write_buffered().unwrap();
            let job = std::thread::spawn(move || {
                job.run();
                job
            })
            .join()
            .unwrap();
            wal.synced(job).unwrap()
        };
        writeln!(out, "synced {durable}").unwrap();
        out.flush().unwrap();
        if rng.gen_bool(0.02) && durable > DROP_LAG {
            let through = durable - DROP_LAG;
            writeln!(out, "dropping {through}").unwrap();
            out.flush().unwrap();
            wal.drop_prefix(through).unwrap();
        }
    }
}

/// Prints the seed if the test panics, so it can be replayed.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "storage_process failed with seed {0}; replay: RAFTCHAT_WAL_SEED={0} cargo test --release --test storage_process",
                self.0
            );
        }
    }
}

#[test]
fn sigkill_never_loses_a_synced_entry() {
    let seed = match std::env::var("RAFTCHAT_WAL_SEED") {
        Ok(s) => s.parse().unwrap(),
        Err(_) => rand::random::<u64>(),
    };
    let _guard = SeedGuard(seed);
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut max_synced: Index = 0;
    // The last index the log must still reach: the latest `synced` report, lowered by any
    // overwrite the child started after it (which may legitimately shorten the log).
    let mut floor: Index = 0;
    let mut max_dropping: Index = 0;
    let mut segments_seen_max = 0;

    for kill in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_append_loop",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_SEED_ENV, rng.gen::<u64>().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after = rng.gen_range(1..=150);
        let mut synced_this_run = 0;
        let mut note = |line: &str, synced_this_run: &mut u64| {
            if let Some(n) = line.strip_prefix("synced ") {
                let n: Index = n.parse().unwrap();
                max_synced = max_synced.max(n);
                floor = n;
                *synced_this_run += 1;
            } else if let Some(n) = line.strip_prefix("overwrite ") {
                let start: Index = n.parse().unwrap();
                floor = floor.min(start - 1);
            } else if let Some(n) = line.strip_prefix("dropping ") {
                max_dropping = max_dropping.max(n.parse().unwrap());
            }
        };
        while synced_this_run < kill_after {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("kill {kill}: the child exited early"))
                .unwrap();
            note(&line, &mut synced_this_run);
        }
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..2000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Whatever the child printed before dying was true when printed.
        for line in lines {
            note(&line.unwrap(), &mut synced_this_run);
        }

        let (_wal, recovered) = Wal::open(options(dir.path()))
            .unwrap_or_else(|e| panic!("kill {kill}: recovery failed: {e}"));
        let last = recovered.first_index + recovered.entries.len() as u64 - 1;
        assert!(
            last >= floor,
            "kill {kill}: log ends at {last}, the child reported {floor} synced (and no overwrite below)"
        );
        assert!(
            recovered.first_index <= max_dropping + 1,
            "kill {kill}: first index {} but the child dropped only through {max_dropping}",
            recovered.first_index
        );
        for (k, entry) in recovered.entries.iter().enumerate() {
            assert_eq!(entry.index, recovered.first_index + k as u64);
            assert!(intact(entry), "kill {kill}: entry {} damaged", entry.index);
        }
        // Every run synced at least once, each with its own term, and commit never passes the log.
        assert_eq!(recovered.hard_state.term, kill + 1, "kill {kill}");
        assert!(recovered.hard_state.commit <= last);
        let segments = std::fs::read_dir(dir.path()).unwrap().count();
        segments_seen_max = segments_seen_max.max(segments);
    }
    assert!(
        max_synced > DROP_LAG,
        "the children wrote too little: {max_synced}"
    );
    assert!(max_dropping > 0, "the test should drop prefixes");
    assert!(segments_seen_max > 2, "the test should roll segments");
}
