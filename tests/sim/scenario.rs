//! The shape of a run: what the caller asks for ([`Options`]) and what the seed decides
//! ([`Scenario`]): cluster size, the cores' configuration, how hostile the network and the disks
//! are, how busy the clients are and how often faults strike.
//!
//! Varying the configuration per seed matters: small `max_msg_bytes` and `max_inflight_msgs`
//! split a leader's backlog over many messages, pre-vote and check-quorum change who can
//! disrupt whom, and slow disks widen the windows between "written" and "durable".

use raftchat::raft::{Config, NodeId};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::network::NetworkParams;
use super::{env_flag, env_u64, Time, SUBTICKS_PER_TICK};

/// Seeds in the default soak (`SIM_SEEDS` overrides).
pub const DEFAULT_SEEDS: u64 = 5000;
/// Steps per run (`SIM_STEPS` overrides).
pub const DEFAULT_STEPS: u64 = 10_000;

/// What to run: from the environment by default.
#[derive(Clone, Debug)]
pub struct Options {
    pub steps: u64,
    /// Sets `Config::testing_unsafe_commit_any_term` on every node.
    pub unsafe_commit_any_term: bool,
    /// Sets `Config::testing_unsafe_conf_change_before_term_commit` on every node.
    pub unsafe_conf_change: bool,
    /// Prints every event (`SIM_TRACE=1`).
    pub trace: bool,
}

impl Options {
    pub fn from_env() -> Options {
        Options {
            steps: env_u64("SIM_STEPS", DEFAULT_STEPS),
            unsafe_commit_any_term: env_flag("SIM_UNSAFE_COMMIT"),
            unsafe_conf_change: env_flag("SIM_UNSAFE_CONF"),
            trace: env_flag("SIM_TRACE"),
        }
    }

    /// The command that replays `seed` under these options.
    pub fn replay_command(&self, seed: u64) -> String {
        let mut command = String::new();
        if self.unsafe_commit_any_term {
            command.push_str("SIM_UNSAFE_COMMIT=1 ");
        }
        if self.unsafe_conf_change {
            command.push_str("SIM_UNSAFE_CONF=1 ");
        }
        if self.steps != DEFAULT_STEPS {
            command.push_str(&format!("SIM_STEPS={} ", self.steps));
        }
        command.push_str(&format!(
            "SIM_SEED={seed} cargo test --release --test simulator -- --nocapture"
        ));
        command
    }
}

/// The shape of one run, drawn from its seed: cluster size, core configuration, how hostile
/// the network and the disk are, how busy the clients are and how often faults strike.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The bootstrap voters: nodes `0..nodes`.
    pub nodes: usize,
    /// Spare nodes `nodes..nodes + spares`: running from the start, empty and outside the
    /// configuration until the membership nemesis adds them (ids are never reused).
    pub spares: usize,
    /// The share of fault events that are membership changes (add a learner, promote one,
    /// remove a member, the leader included); 0 in runs without spares.
    pub membership_prob: f64,
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub max_inflight_msgs: usize,
    /// Small caps split a leader's backlog over several AppendEntries, so a follower can hold
    /// old entries without the new leader's no-op: the ground the Figure 8 bug needs.
    pub max_msg_bytes: usize,
    pub network: NetworkParams,
    pub sync_delay_max: Time,
    pub client_gap_max: Time,
    pub read_prob: f64,
    pub fault_gap_max_ticks: u64,
    /// The chance that a node that just became leader is crashed or isolated within two ticks.
    pub strike_leader_prob: f64,
    /// The chance that a leader is struck right after its first commit in its term.
    pub strike_commit_prob: f64,
    /// The chance that a node that just voted or became candidate is crashed within a sync
    /// delay.
    pub strike_vote_prob: f64,
    /// The chance, each time a node's disk starts a sync, that the node loses power before the
    /// sync completes.
    pub power_loss_prob: f64,
    /// The chance that a crash finds some written-but-unsynced Readies already on disk.
    pub flush_on_crash_prob: f64,
    /// The chance, at each tick of a node with nothing in flight to its disk, that it snapshots
    /// its state machine and compacts its log (0: this run never compacts).
    pub compact_prob: f64,
    /// The longest trailing window of entries kept before a snapshot (half the compactions keep
    /// none).
    pub compact_window_max: u64,
}

impl Scenario {
    pub fn draw(rng: &mut SmallRng) -> Scenario {
        let election_ticks = *[6u32, 10, 10].choose(rng).expect("not empty");
        let max_msg_bytes = *[1usize, 1, 32, 1 << 20].choose(rng).expect("not empty");
        // Stop-and-wait with one entry per message would make a lagging follower's catch-up
        // cost a round trip and a sync per entry, outgrowing any fixed liveness bound.
        let inflight_choices: &[usize] = if max_msg_bytes == 1 {
            &[4, 256]
        } else {
            &[1, 4, 256]
        };
        let nodes = if rng.gen_bool(0.5) { 3 } else { 5 };
        let spares = *[0usize, 2, 3, 3].choose(rng).expect("not empty");
        let membership_prob = if spares == 0 {
            0.0
        } else {
            *[0.2, 0.4].choose(rng).expect("not empty")
        };
        Scenario {
            nodes,
            spares,
            membership_prob,
            election_ticks,
            heartbeat_ticks: rng.gen_range(1..=2),
            pre_vote: rng.gen_bool(0.7),
            check_quorum: rng.gen_bool(0.7),
            max_inflight_msgs: *inflight_choices.choose(rng).expect("not empty"),
            max_msg_bytes,
            network: NetworkParams {
                drop_prob: *[0.0, 0.02, 0.1, 0.2].choose(rng).expect("not empty"),
                duplicate_prob: *[0.0, 0.02, 0.05].choose(rng).expect("not empty"),
                delay_max: rng.gen_range(1..=SUBTICKS_PER_TICK),
                slow_prob: *[0.0, 0.02, 0.1].choose(rng).expect("not empty"),
                slow_delay_max: 4 * SUBTICKS_PER_TICK,
            },
            // Raft needs broadcast time ≪ election timeout (§5.6); a vote round costs a sync
            // on each side, so the slowest disk here syncs within a fifth of a timeout.
            sync_delay_max: *[1, 5, u64::from(election_ticks) * SUBTICKS_PER_TICK / 5]
                .choose(rng)
                .expect("not empty"),
            client_gap_max: rng.gen_range(2..=2 * SUBTICKS_PER_TICK),
            read_prob: rng.gen_range(0.1..0.5),
            fault_gap_max_ticks: rng.gen_range(1..=4) * u64::from(election_ticks),
            strike_leader_prob: *[0.0, 0.3, 0.6].choose(rng).expect("not empty"),
            strike_commit_prob: *[0.0, 0.5, 0.9].choose(rng).expect("not empty"),
            strike_vote_prob: *[0.0, 0.1, 0.3].choose(rng).expect("not empty"),
            power_loss_prob: *[0.0, 0.002, 0.01].choose(rng).expect("not empty"),
            flush_on_crash_prob: 0.25,
            compact_prob: *[0.0, 0.01, 0.03, 0.1].choose(rng).expect("not empty"),
            compact_window_max: *[1, 4, 32].choose(rng).expect("not empty"),
        }
    }

    /// Bootstrap voters and spares.
    pub fn total(&self) -> usize {
        self.nodes + self.spares
    }

    /// A bootstrap voter's configuration, or a spare's: no voters (it learns its configuration
    /// from the log's first entry or a snapshot once added).
    pub fn config(&self, id: NodeId, options: &Options) -> Config {
        let voters = if (id as usize) < self.nodes {
            (0..self.nodes as NodeId).collect()
        } else {
            Vec::new()
        };
        let mut config = Config::new(id, voters);
        config.election_ticks = self.election_ticks;
        config.heartbeat_ticks = self.heartbeat_ticks;
        config.pre_vote = self.pre_vote;
        config.check_quorum = self.check_quorum;
        config.max_inflight_msgs = self.max_inflight_msgs;
        config.max_msg_bytes = self.max_msg_bytes;
        config.testing_unsafe_commit_any_term = options.unsafe_commit_any_term;
        config.testing_unsafe_conf_change_before_term_commit = options.unsafe_conf_change;
        config
    }

    /// `elections` election timeouts, in sub-ticks.
    pub fn ticks(&self, elections: u64) -> Time {
        elections * u64::from(self.election_ticks) * SUBTICKS_PER_TICK
    }
}
