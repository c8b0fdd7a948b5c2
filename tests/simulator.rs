//! Deterministic simulation of whole Raft clusters (see `sim/mod.rs` for the machinery).
//!
//! - `simulate_seeds`: the soak. `SIM_SEEDS` seeds (default 1000) of `SIM_STEPS` steps (default
//!   10,000), 3- and 5-node clusters, split over the machine's cores. `SIM_SEED=<n>` replays one
//!   seed instead (`SIM_TRACE=1` prints its events; `SIM_UNSAFE_COMMIT=1` replays it with the
//!   Figure 8 bug switched on).
//! - `catches_unsafe_commit_any_term`: with `Config::testing_unsafe_commit_any_term` the same
//!   seed range must expose a safety violation: proof that the checker can fail.
//! - `same_seed_same_trace`: a seed replays to the same event trace.

mod sim;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use sim::driver::LIVENESS_BOUND_ELECTIONS;
use sim::scenario::DEFAULT_SEEDS;
use sim::{env_u64, run_seed, Failure, Options, Report};

/// `SIM_SEED`, when replaying a single seed.
fn replay_seed() -> Option<u64> {
    std::env::var("SIM_SEED")
        .ok()
        .map(|_| env_u64("SIM_SEED", 0))
}

/// Runs seeds `0..seeds` on every core (seeds are handed out in order, so a failure found is the
/// earliest one some thread reached); stops everyone at the first failure.
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
        "{} runs ({} with 5 nodes, {} with 3): {} steps, {} ticks, {} leaders, {} faults, {} crashes, {} entries committed, {} writes acknowledged, {} reads served, {} messages sent ({} dropped, {} duplicated, {} cut off); slowest recovery {} ticks = {:.1} election timeouts (seed {}; bound {})",
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
