//! Linearizability of the key-value commands (`set`, `get`, `cas`) on a real 3-node cluster
//! under faults, judged by a Wing & Gong / Porcupine-style checker (`register/checker.rs`).
//!
//! - `register_history_is_linearizable`: concurrent clients on random nodes while a seeded
//!   schedule kills (-9) and restarts nodes (the leader among them, or a majority at once),
//!   pauses and resumes nodes, and runs the stale-read probe; the whole history must be
//!   linearizable.
//! - `stale_read_mode_is_caught`: the same against `--testing-stale-reads` (reads served from
//!   local state without ReadIndex); the probe makes a stale read certain, and the checker must
//!   report the history as not linearizable.
//!
//! `REGISTER_SEED=<seed>` replays a schedule (the seed is printed on failure), `REGISTER_SECS`
//! lengthens the soak (default 12 s of faults). The seed fixes the fault schedule and every
//! client's choices; the interleaving with real processes still varies from run to run. Every
//! process is killed even when a test fails (`Cluster`'s drop).
//!
//! Run: `cargo test --release --test register -- --nocapture`.

#[path = "register/checker.rs"]
mod checker;
mod common;
#[path = "register/history.rs"]
mod history;
#[path = "register/workload.rs"]
mod workload;

use common::{wait_for, Cluster, DEADLINE};
use history::Op;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use workload::Lagging;

const CLIENTS: usize = 5;
const KEYS: [&str; 3] = ["k0", "k1", "k2"];
/// The probe's own key, so the workload's concurrent writes cannot blur its verdict.
const PROBE_KEY: &str = "probe";
const PROBE_CLIENT: usize = 100;
const DEFAULT_SECS: u64 = 12;

fn seed() -> u64 {
    match std::env::var("REGISTER_SEED") {
        Ok(s) => s.parse().expect("REGISTER_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

fn soak() -> Duration {
    let secs = std::env::var("REGISTER_SECS")
        .ok()
        .map(|s| s.parse().expect("REGISTER_SECS is a number of seconds"))
        .unwrap_or(DEFAULT_SECS);
    Duration::from_secs(secs)
}

fn server_args(stale_reads: bool) -> Vec<&'static str> {
    let mut args = vec!["--request-timeout-ms", workload::REQUEST_TIMEOUT_MS];
    if stale_reads {
        args.push("--testing-stale-reads");
    }
    args
}

/// Client threads running until `stop` is set.
struct Workload {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Op>>>,
}

impl Workload {
    fn start(cluster: &Cluster, seed: u64, start: Instant) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let keys: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
        let threads = (0..CLIENTS)
            .map(|client| {
                let (addrs, keys, stop) = (cluster.addrs.clone(), keys.clone(), stop.clone());
                std::thread::spawn(move || {
                    workload::run_client(client, addrs, keys, seed, start, stop)
                })
            })
            .collect();
        Workload { stop, threads }
    }

    fn finish(mut self) -> Vec<Op> {
        self.stop.store(true, Ordering::Relaxed);
        std::mem::take(&mut self.threads)
            .into_iter()
            .flat_map(|t| t.join().expect("client thread"))
            .collect()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // On a panic the threads stop by themselves within one client timeout.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits until every node answers `status` and agrees on a leader (after a fault).
fn settle(cluster: &Cluster) {
    let all: Vec<usize> = (0..cluster.len()).collect();
    cluster.wait_leader(&all);
}

/// One seeded fault; every node is running and unpaused again when it returns.
fn fault(
    cluster: &mut Cluster,
    rng: &mut SmallRng,
    round: usize,
    start: Instant,
    history: &mut Vec<Op>,
) {
    let all: Vec<usize> = (0..cluster.len()).collect();
    match rng.gen_range(0..5) {
        0 | 1 => {
            let victim = if rng.gen_bool(0.5) {
                cluster.wait_leader(&all).0
            } else {
                rng.gen_range(0..cluster.len())
            };
            eprintln!("fault {round}: kill -9 node {victim}");
            cluster.kill(victim);
            std::thread::sleep(Duration::from_millis(rng.gen_range(200..1200)));
            cluster.spawn(victim);
        }
        2 => {
            // A majority crashes at once (the leader among it): only what was on disk on a
            // majority may be acknowledged, and it must all come back.
            let leader = cluster.wait_leader(&all).0;
            let other = (leader + rng.gen_range(1..cluster.len())) % cluster.len();
            eprintln!("fault {round}: kill -9 nodes {leader} (leader) and {other}");
            cluster.kill(leader);
            cluster.kill(other);
            std::thread::sleep(Duration::from_millis(rng.gen_range(100..800)));
            cluster.spawn(other);
            cluster.spawn(leader);
        }
        3 => {
            let victim = rng.gen_range(0..cluster.len());
            eprintln!("fault {round}: SIGSTOP node {victim}");
            cluster.pause(victim);
            std::thread::sleep(Duration::from_millis(rng.gen_range(200..1500)));
            cluster.resume(victim);
        }
        _ => {
            let lagging = if rng.gen_bool(0.5) {
                Lagging::OldLeader
            } else {
                Lagging::Follower
            };
            eprintln!("fault {round}: stale-read probe, {lagging:?} lagging");
            history.extend(workload::stale_probe(
                cluster,
                lagging,
                PROBE_KEY,
                PROBE_CLIENT,
                round,
                start,
            ));
        }
    }
    settle(cluster);
}

/// Makes one successful read of the real history stale: it now returns a value that two
/// acknowledged writes, one after the other, both completed before the read began. Returns
/// `None` if the history has no such read.
fn with_injected_stale_read(history: &[Op]) -> Option<Vec<Op>> {
    let writes: Vec<&Op> = history
        .iter()
        .filter(|op| op.is_known() && op.written().is_some())
        .collect();
    for (r, read) in history.iter().enumerate().rev() {
        if !matches!(read.kind, history::Kind::Read { .. }) || !read.is_known() {
            continue;
        }
        let history::Kind::Read { value: read_value } = &read.kind else {
            continue;
        };
        let same_key = |w: &&&Op| w.key == read.key;
        // The newest write completed before the read, and one completed before that write
        // began: the read may not return the older one's value. (Any pair will do; the newest
        // `later` leaves the most room for an `earlier`.)
        let Some(later) = writes
            .iter()
            .filter(same_key)
            .filter(|w| w.complete_ns.is_some_and(|c| c < read.invoke_ns))
            .max_by_key(|w| w.complete_ns)
        else {
            continue;
        };
        let Some(earlier) = writes
            .iter()
            .filter(same_key)
            .filter(|w| w.written() != read_value.as_deref() && w.written() != later.written())
            .find(|w| w.complete_ns.is_some_and(|c| c < later.invoke_ns))
        else {
            continue;
        };
        let mut mutated = history.to_vec();
        mutated[r].kind = history::Kind::Read {
            value: earlier.written().map(str::to_string),
        };
        return Some(mutated);
    }
    None
}

fn report(violations: &[checker::Violation]) -> String {
    violations.iter().map(|v| v.to_string()).collect()
}

#[test]
fn register_history_is_linearizable() {
    let seed = seed();
    eprintln!("register_history_is_linearizable: REGISTER_SEED={seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(3, &server_args(false));
    settle(&cluster);
    let start = Instant::now();
    let workload = Workload::start(&cluster, seed, start);
    let mut history = Vec::new();
    let soak = soak();
    let mut round = 0;
    while start.elapsed() < soak {
        fault(&mut cluster, &mut rng, round, start, &mut history);
        round += 1;
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..600)));
    }
    // Quiet time at the end: unknown outcomes get their chance to be read.
    std::thread::sleep(Duration::from_millis(500));
    history.extend(workload.finish());
    let known = history.iter().filter(|op| op.is_known()).count();
    eprintln!(
        "{} ops ({known} with known outcome) in {:?}, {round} faults",
        history.len(),
        start.elapsed()
    );
    let count = |f: fn(&history::Kind) -> bool| history.iter().filter(|op| f(&op.kind)).count();
    eprintln!(
        "sets {}, cas acked {}, cas failed {}, reads {}",
        count(|k| matches!(k, history::Kind::Set { .. })),
        count(|k| matches!(k, history::Kind::Cas { .. })),
        count(|k| matches!(k, history::Kind::CasFailed { .. })),
        count(|k| matches!(k, history::Kind::Read { .. })),
    );
    assert!(known > 100, "the workload made progress: {known} ops");
    let checked = Instant::now();
    let verdict = checker::check(&history);
    eprintln!("checked in {:?}", checked.elapsed());
    if let Err(violations) = verdict {
        panic!(
            "history not linearizable (replay: REGISTER_SEED={seed}):\n{}",
            report(&violations)
        );
    }
    // The checker has teeth on this very history: one read made stale must be caught.
    let mutated = with_injected_stale_read(&history).expect("a read after two writes");
    assert!(
        checker::check(&mutated).is_err(),
        "an injected stale read must be caught"
    );
}

#[test]
fn stale_read_mode_is_caught() {
    let seed = seed();
    eprintln!("stale_read_mode_is_caught: REGISTER_SEED={seed}");
    let cluster = Cluster::start(3, &server_args(true));
    settle(&cluster);
    let start = Instant::now();
    let workload = Workload::start(&cluster, seed, start);
    let mut history = Vec::new();
    // The probe makes a stale read essentially certain; a few rounds make it so in practice.
    const ROUNDS_MAX: usize = 5;
    let mut rounds = 0;
    let caught = wait_for("the checker to catch a stale read", DEADLINE * 4, || {
        rounds += 1;
        let probe = workload::stale_probe(
            &cluster,
            Lagging::OldLeader,
            PROBE_KEY,
            PROBE_CLIENT,
            rounds,
            start,
        );
        history.extend(probe);
        settle(&cluster);
        let probe_ops: Vec<Op> = history
            .iter()
            .filter(|op| op.key == PROBE_KEY)
            .cloned()
            .collect();
        let stale = checker::check(&probe_ops).is_err();
        assert!(
            stale || rounds < ROUNDS_MAX,
            "no stale read in {ROUNDS_MAX} probe rounds (seed {seed}): {:#?}",
            probe_ops
        );
        stale.then_some(rounds)
    });
    history.extend(workload.finish());
    eprintln!(
        "{} ops in {:?}, stale read after {caught} probe round(s)",
        history.len(),
        start.elapsed()
    );
    let violations = checker::check(&history).expect_err("stale reads must be caught");
    eprintln!("the checker reports:\n{}", report(&violations));
    let probe = violations
        .iter()
        .find(|v| v.key == PROBE_KEY)
        .expect("the probe's key is among the violations");
    assert!(
        (2..=4).contains(&probe.ops.len()),
        "a small counterexample: {probe}"
    );
}
