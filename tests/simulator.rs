//! Deterministic simulation of whole Raft clusters (see `sim/mod.rs` for the machinery).
//!
//! - `simulate_seeds`: the soak. `SIM_SEEDS` seeds (default 5000) of `SIM_STEPS` steps (default
//!   10,000), 3- and 5-node clusters, split over the machine's cores. `SIM_SEED=<n>` replays one
//!   seed instead (`SIM_TRACE=1` prints its events; `SIM_UNSAFE_COMMIT=1` replays it with the
//!   Figure 8 bug switched on). Runs compact their logs at random (see `sim/mod.rs`); the
//!   soak fails if too few runs catch a node up through InstallSnapshot or restart one from a
//!   snapshot, so the feature cannot silently go unused.
//! - `catches_unsafe_commit_any_term`: with `Config::testing_unsafe_commit_any_term` the same
//!   seed range must expose a safety violation: proof that the checker can fail.
//! - `catches_unsafe_conf_change_before_term_commit`: with
//!   `Config::testing_unsafe_conf_change_before_term_commit` (a new leader may change the
//!   membership before its term's first entry commits) the checker must flag a run.
//! - `same_seed_same_trace`: a seed replays to the same event trace.
//! - `checker_flags_broken_histories`: the checker rejects hand-made histories that break each
//!   property, and accepts their correct counterparts.

mod sim;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use raftchat::raft::{ConfChange, Config, Entry, EntryKind, Persisted, Raft, Role};
use sim::checker::{check_read, Checker, LogChain, Violation};
use sim::driver::LIVENESS_BOUND_ELECTIONS;
use sim::scenario::DEFAULT_SEEDS;
use sim::{env_u64, run_seed, Failure, Options, Report};

/// `SIM_SEED`, when replaying a single seed.
fn replay_seed() -> Option<u64> {
    std::env::var("SIM_SEED")
        .ok()
        .map(|_| env_u64("SIM_SEED", 0))
}

/// Runs seeds `0..seeds` on every core and stops everyone at the first failure. Seeds are handed
/// out in order and a thread always finishes its seed, so every seed below the lowest failure
/// ran: `failures[0]` is the first failing seed, whatever the thread timing.
fn run_seeds(seeds: u64, options: &Options) -> (Vec<Report>, Vec<Failure>) {
    let next_seed = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let reports = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = next_seed.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds || stop.load(Ordering::Relaxed) {
                    return;
                }
                match run_seed(seed, options) {
                    Ok(report) => reports.lock().expect("no poisoning").push(report),
                    Err(failure) => {
                        stop.store(true, Ordering::Relaxed);
                        failures.lock().expect("no poisoning").push(failure);
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().expect("no poisoning");
    failures.sort_by_key(|failure| failure.seed);
    (reports.into_inner().expect("no poisoning"), failures)
}

fn summarize(reports: &[Report]) -> String {
    let sum = |f: fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    let five = reports.iter().filter(|r| r.scenario.nodes == 5).count();
    // Recovery time in election timeouts, the unit of the liveness bound.
    let slowest = reports
        .iter()
        .max_by_key(|r| r.liveness_ticks * 100 / u64::from(r.scenario.election_ticks))
        .map_or((0, 0.0, 0), |r| {
            let elections = r.liveness_ticks as f64 / f64::from(r.scenario.election_ticks);
            (r.liveness_ticks, elections, r.seed)
        });
    format!(
        "{} runs ({} with 5 nodes, {} with 3): {} steps, {} ticks, {} leaders, {} faults, {} crashes, {} entries committed, {} writes acknowledged, {} reads served, {} messages sent ({} dropped, {} duplicated, {} cut off), {} snapshots taken, {} installed from a leader (in {} runs), {} restored at restart, {} torn installs repaired; membership: {} runs with spares, {} changes accepted and {} refused, {} runs ended with voters other than the bootstrap count, {} ids removed; slowest recovery {} ticks = {:.1} election timeouts (seed {}; bound {})",
        reports.len(),
        five,
        reports.len() - five,
        sum(|r| r.steps),
        sum(|r| r.ticks),
        sum(|r| r.leaders),
        sum(|r| r.faults),
        sum(|r| r.crashes),
        sum(|r| r.committed),
        sum(|r| r.clients.acked),
        sum(|r| r.clients.reads_served),
        sum(|r| r.network.sent),
        sum(|r| r.network.dropped),
        sum(|r| r.network.duplicated),
        sum(|r| r.network.cut),
        sum(|r| r.snapshots),
        sum(|r| r.installs),
        reports.iter().filter(|r| r.installs > 0).count(),
        sum(|r| r.restores),
        sum(|r| r.torn_installs),
        reports.iter().filter(|r| r.scenario.spares > 0).count(),
        sum(|r| r.conf_changes),
        sum(|r| r.conf_refused),
        reports
            .iter()
            .filter(|r| r.final_voters != r.scenario.nodes as u64)
            .count(),
        sum(|r| r.removed),
        slowest.0,
        slowest.1,
        slowest.2,
        LIVENESS_BOUND_ELECTIONS,
    )
}

#[test]
fn simulate_seeds() {
    let options = Options::from_env();
    if let Some(seed) = replay_seed() {
        match run_seed(seed, &options) {
            Ok(report) => eprintln!("seed {seed} passed: {report:#?}"),
            Err(failure) => panic!("{failure}"),
        }
        return;
    }
    let seeds = env_u64("SIM_SEEDS", DEFAULT_SEEDS);
    let started = Instant::now();
    let (reports, failures) = run_seeds(seeds, &options);
    if let Some(failure) = failures.first() {
        panic!("{failure}");
    }
    assert_eq!(reports.len() as u64, seeds);
    eprintln!(
        "simulator: {} in {:.1?}",
        summarize(&reports),
        started.elapsed()
    );
    // Snapshots must really be exercised: lagging nodes catch up through InstallSnapshot in a
    // meaningful share of runs (a run compacts with probability 3/4; installs need a lagging
    // node too). Small seed sets are exempt.
    if seeds >= 500 {
        let with_installs = reports.iter().filter(|r| r.installs > 0).count() as u64;
        assert!(
            with_installs * 20 >= seeds,
            "only {with_installs} of {seeds} runs installed a snapshot: {}",
            summarize(&reports)
        );
        let restores = reports.iter().filter(|r| r.restores > 0).count() as u64;
        assert!(
            restores * 20 >= seeds,
            "only {restores} of {seeds} runs restarted from a snapshot"
        );
    }
}

#[test]
fn catches_unsafe_commit_any_term() {
    if replay_seed().is_some() {
        eprintln!("SIM_SEED is set: replaying in simulate_seeds only");
        return;
    }
    let options = Options {
        unsafe_commit_any_term: true,
        ..Options::from_env()
    };
    let seeds = env_u64("SIM_SEEDS", DEFAULT_SEEDS);
    let started = Instant::now();
    let (reports, failures) = run_seeds(seeds, &options);
    let failure = failures.first().unwrap_or_else(|| {
        panic!(
            "committing entries of earlier terms by counting replicas went unnoticed in {seeds} seeds: {}",
            summarize(&reports)
        )
    });
    eprintln!(
        "unsafe commit caught after {:.1?}: {failure}",
        started.elapsed()
    );
    assert!(
        failure.is_safety(),
        "expected a safety violation, got: {failure}"
    );
}

/// With `Config::testing_unsafe_conf_change_before_term_commit` a new leader may propose a
/// membership change before an entry of its own term committed (the single-server bug's
/// ground): the membership nemesis must make the checker see it.
#[test]
fn catches_unsafe_conf_change_before_term_commit() {
    if replay_seed().is_some() {
        eprintln!("SIM_SEED is set: replaying in simulate_seeds only");
        return;
    }
    let options = Options {
        unsafe_conf_change: true,
        ..Options::from_env()
    };
    let seeds = env_u64("SIM_SEEDS", DEFAULT_SEEDS);
    let started = Instant::now();
    let (reports, failures) = run_seeds(seeds, &options);
    let failure = failures.first().unwrap_or_else(|| {
        panic!(
            "membership changes before the leader's term committed went unnoticed in {seeds} seeds: {}",
            summarize(&reports)
        )
    });
    eprintln!(
        "unsafe membership change caught after {:.1?}: {failure}",
        started.elapsed()
    );
    assert!(
        failure.is_safety(),
        "expected a safety violation, got: {failure}"
    );
}

#[test]
fn same_seed_same_trace() {
    if replay_seed().is_some() {
        eprintln!("SIM_SEED is set: replaying in simulate_seeds only");
        return;
    }
    let options = Options {
        trace: false,
        ..Options::from_env()
    };
    let run = |seed| run_seed(seed, &options).unwrap_or_else(|failure| panic!("{failure}"));
    let first = run(7);
    let again = run(7);
    let other = run(8);
    assert_eq!(
        first.trace_hash, again.trace_hash,
        "seed 7 ran twice to different traces"
    );
    assert_eq!((first.steps, first.ticks), (again.steps, again.ticks));
    assert_ne!(
        first.trace_hash, other.trace_hash,
        "seeds 7 and 8 hashed the same: the trace hash sees nothing"
    );
}

/// A log of `(term, payload)` entries from index 1.
fn log_of(entries: &[(u64, u8)]) -> Vec<Entry> {
    entries
        .iter()
        .enumerate()
        .map(|(i, &(term, byte))| Entry::new(term, i as u64 + 1, EntryKind::Normal, &[byte]))
        .collect()
}

fn chain_of(entries: &[Entry]) -> LogChain {
    let mut chain = LogChain::default();
    for entry in entries {
        chain.push(sim::checker::EntryKey::of(entry));
    }
    chain
}

fn property(result: Result<impl Sized, Violation>) -> &'static str {
    result.err().map_or("none", |violation| violation.property)
}

#[test]
fn checker_flags_broken_histories() {
    // Election Safety: a second leader in term 2.
    let mut checker = Checker::new(3, 3);
    assert_eq!(property(checker.observe_role(0, Role::Leader, 2)), "none");
    assert_eq!(property(checker.observe_role(0, Role::Leader, 2)), "none");
    assert_eq!(property(checker.observe_role(1, Role::Leader, 3)), "none");
    assert_eq!(
        property(checker.observe_role(2, Role::Leader, 2)),
        "Election Safety"
    );

    // Log Matching: (2, 2) preceded by different entries in two logs.
    let mut checker = Checker::new(3, 3);
    let a = log_of(&[(1, b'a'), (2, b'x')]);
    let b = log_of(&[(1, b'b'), (2, b'x')]);
    assert_eq!(property(checker.observe_log(0, 1, &a, 2)), "none");
    assert_eq!(property(checker.observe_log(1, 1, &a, 2)), "none");
    assert_eq!(property(checker.observe_log(2, 1, &b, 2)), "Log Matching");

    // State Machine Safety: two nodes apply different entries at index 1; and the durability
    // promise: nothing is applied that is not durable on the node.
    let mut checker = Checker::new(3, 3);
    assert_eq!(property(checker.on_apply(0, &a[0], &chain_of(&a))), "none");
    assert_eq!(
        property(checker.on_apply(1, &a[0], &LogChain::default())),
        "Durability contract"
    );
    assert_eq!(
        property(checker.on_apply(2, &b[0], &chain_of(&b))),
        "State Machine Safety"
    );

    // Leader Completeness: entries 1..=2 committed by term 2; a term-3 leader without them.
    let mut checker = Checker::new(3, 3);
    for entry in &a {
        assert_eq!(property(checker.on_apply(0, entry, &chain_of(&a))), "none");
    }
    assert_eq!(property(checker.on_applied(0, 2)), "none");
    let short = log_of(&[(1, b'a')]);
    assert_eq!(property(checker.observe_log(1, 1, &a, 3)), "none");
    assert_eq!(property(checker.observe_log(2, 1, &short, 3)), "none");
    assert_eq!(property(checker.observe_role(1, Role::Leader, 3)), "none");
    assert_eq!(
        property(checker.observe_role(2, Role::Leader, 4)),
        "Leader Completeness"
    );

    // Committed entries stay durable on a quorum.
    let durable = [chain_of(&a), chain_of(&short), LogChain::default()];
    assert_eq!(
        property(checker.check_committed_durable(durable.iter())),
        "Committed entries durable on a quorum"
    );
    let durable = [chain_of(&a), chain_of(&a), LogChain::default()];
    assert_eq!(
        property(checker.check_committed_durable(durable.iter())),
        "none"
    );

    // Membership: a change that breaks the single-server rules in a log; a node whose removal
    // committed elected; the committed log durable on a majority of the configuration in
    // force at its end (after removing 2 from {0, 1, 2}: both of {0, 1}).
    let change =
        |index, change: ConfChange| Entry::new(1, index, EntryKind::ConfChange, &change.encode());
    let mut checker = Checker::new(3, 3);
    let bad = vec![
        log_of(&[(1, b'a')])[0].clone(),
        change(2, ConfChange::Promote(1)),
    ];
    assert_eq!(
        property(checker.observe_log(0, 1, &bad, 1)),
        "Configuration rules"
    );
    let removal = vec![
        log_of(&[(1, b'a')])[0].clone(),
        change(2, ConfChange::Remove(2)),
    ];
    for entry in &removal {
        let applied = checker.on_apply(0, entry, &chain_of(&removal));
        assert_eq!(property(applied), "none");
    }
    assert_eq!(
        property(checker.observe_role(2, Role::Leader, 5)),
        "Removed nodes stay out"
    );
    let durable = [chain_of(&removal), LogChain::default(), chain_of(&removal)];
    assert_eq!(
        property(checker.check_committed_durable(durable.iter())),
        "Committed entries durable on a quorum",
        "node 2 no longer counts"
    );
    let durable = [chain_of(&removal), chain_of(&removal), LogChain::default()];
    assert_eq!(
        property(checker.check_committed_durable(durable.iter())),
        "none"
    );

    // The configuration in force is the last one in the node's log.
    let learner = vec![
        log_of(&[(1, b'a')])[0].clone(),
        change(2, ConfChange::AddLearner(3)),
    ];
    let persisted = |entries: &[Entry]| Persisted {
        entries: entries.to_vec(),
        ..Persisted::default()
    };
    let raft = Raft::new(Config::new(0, vec![0, 1, 2]), persisted(&learner), 1);
    let mut checker = Checker::new(4, 3);
    assert_eq!(
        property(checker.observe_log(0, 1, raft.entries(), 1)),
        "none"
    );
    assert_eq!(property(checker.check_membership(0, 0, &raft)), "none");
    let stale = Raft::new(Config::new(1, vec![0, 1, 2]), persisted(&learner[..1]), 1);
    assert_eq!(property(checker.observe_log(1, 1, &learner, 1)), "none");
    assert_eq!(
        property(checker.check_membership(1, 0, &stale)),
        "Configuration in force"
    );

    // Linearizable reads: a read must see every write acknowledged before it began.
    assert_eq!(property(check_read(0, 7, "its read index", 5, 5)), "none");
    assert_eq!(
        property(check_read(0, 7, "its read index", 4, 5)),
        "Linearizable reads"
    );
}
