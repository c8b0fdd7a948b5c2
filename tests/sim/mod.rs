//! The deterministic cluster simulator for the Raft core in `raftchat::raft`.
//!
//! It owns everything around the real `Raft` cores: simulated time, a network that delays,
//! drops, duplicates and reorders messages and partitions nodes ([`network`]), per-node storage
//! that honours the durability contract and crashes like a disk does ([`node`]), a client
//! workload of writes and linearizable reads ([`clients`]), the shape of each run
//! ([`scenario`]), the fault schedule ([`faults`]), the event loop that drives the cores
//! ([`driver`]), and the safety checker run after every step ([`checker`]). It never reads a
//! clock, never shares state between runs and never draws randomness from anything but the
//! run's one seeded `SmallRng`: a seed replays a run exactly, and [`trace`] hashes every event
//! to prove it.
//!
//! Snapshots: each node's state machine has a snapshot form (`checker::SnapshotData`: the place
//! in the log, the prefix hash of the applied entries, the count of client commands). Nodes
//! snapshot at their applied index and compact at random ticks, keeping a random trailing window
//! (often none); an InstallSnapshot carries the sender's snapshot data through the simulated
//! network (so it is lost, duplicated, delayed and reordered like any message); a
//! `Ready::snapshot` installs the data received for that meta, and crashed nodes restart from
//! their durable snapshot plus log. The checker holds every snapshot against the committed log.

pub mod checker;
pub mod clients;
pub mod driver;
pub mod faults;
pub mod network;
pub mod node;
pub mod scenario;
pub mod trace;

pub use driver::{run_seed, Failure, Report};
pub use scenario::Options;

/// Simulated time in sub-ticks. A node's logical clock advances one tick every
/// `SUBTICKS_PER_TICK` sub-ticks (give or take clock jitter); the network and the disk act at
/// sub-tick resolution, so many messages and syncs fit between two ticks, as on a real LAN.
pub type Time = u64;

/// Sub-ticks per tick.
pub const SUBTICKS_PER_TICK: Time = 10;

/// Reads an integer knob from the environment (`SIM_SEEDS`, `SIM_STEPS`, ...).
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not an unsigned integer")),
        Err(_) => default,
    }
}

/// True when the environment variable is set to something other than "" or "0".
pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}
