//! The scenario driver: one seeded run of a simulated cluster.
//!
//! It owns simulated time and the event queue, the step loop with its checks (safety after
//! every step, liveness in the fault-free tail), the client actions, and the glue that turns
//! each node's `Ready` into sends, writes, syncs, `advance` calls and applies exactly in the
//! order the durability contract of `raftchat::raft` prescribes. One step is one event: a node's
//! tick, a delivery, a disk sync, a client action, or a fault (see `faults.rs`). Every random
//! choice comes from the run's one `SmallRng`, seeded by the seed, so a seed replays the run
//! exactly. It never decides what a core decides.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use raftchat::raft::{
    ConfChange, Entry, EntryKind, Index, Message, MessageBody, NodeId, RaftError, Ready, Role,
    SnapshotMeta, Term,
};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::checker::{chain_hash, Checker, EntryKey, SnapshotData, Violation};
use super::clients::{payload, ClientStats, Clients};
use super::network::{Link, Network, NetworkStats};
use super::node::{SimNode, WrittenReady};
use super::scenario::{Options, Scenario};
use super::trace::{describe_message, message_words, Trace};
use super::{Time, SUBTICKS_PER_TICK};

/// The liveness bound: once the faults stop (everything healed, crashed nodes restarted, no
/// more loss), a leader is elected and a fresh write commits on every node within
/// `LIVENESS_BOUND_ELECTIONS × election_ticks` ticks. Measured: at most 12 election timeouts in
/// 50,000 default runs and 17 in 1,000 runs of 100,000 steps, where a follower may first have
/// to shed a long divergent tail one term per round trip, then catch up.
pub const LIVENESS_BOUND_ELECTIONS: u64 = 30;
/// The share of a run's steps spent injecting faults; the rest is the fault-free tail.
const FAULT_PHASE_PERCENT: u64 = 70;
/// A core that still has a Ready after this many rounds of one step is livelocked.
const READY_ROUNDS_MAX: usize = 64;
/// `observe_log` tracks changes at the end of logs; a full rescan every so often checks the rest.
const FULL_LOG_CHECK_EVERY_STEPS: u64 = 256;
/// Concurrent clients, each with its own idea of who leads and at most one write outstanding.
const CLIENTS: usize = 3;
/// A client gives up on a write after this many election timeouts (its outcome stays unknown).
const CLIENT_TIMEOUT_ELECTIONS: u64 = 3;

/// A run that kept every property.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub scenario: Scenario,
    pub steps: u64,
    pub ticks: u64,
    pub trace_hash: u64,
    pub leaders: u64,
    pub committed: u64,
    pub faults: u64,
    pub crashes: u64,
    /// Ticks from the end of the faults until the probe write was applied everywhere.
    pub liveness_ticks: u64,
    pub clients: ClientStats,
    pub network: NetworkStats,
    /// Snapshots nodes made (`compact`), installed from a leader, and restored at a restart.
    pub snapshots: u64,
    pub installs: u64,
    pub restores: u64,
    /// Crashes that cut a snapshot install short (snapshot stored, log not reset).
    pub torn_installs: u64,
    /// Membership changes a leader accepted, and ones it refused (a rule said no).
    pub conf_changes: u64,
    pub conf_refused: u64,
    /// The committed configuration at the end: voters, and ids removed.
    pub final_voters: u64,
    pub removed: u64,
}

/// A run that broke a property (or in which a core panicked).
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub step: u64,
    pub tick: u64,
    pub nodes: usize,
    pub violation: Violation,
    pub replay: String,
}

impl Failure {
    /// A broken safety property, as opposed to a liveness failure or a crash of the core itself.
    pub fn is_safety(&self) -> bool {
        !matches!(
            self.violation.property,
            "Liveness" | "Core panic" | "Ready quiescence"
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulator: seed {} failed at step {} (tick {}, {} nodes): {}\n  replay: {}   (SIM_TRACE=1 prints every event)",
            self.seed, self.step, self.tick, self.nodes, self.violation, self.replay
        )
    }
}

/// Runs one seed to the end, or to its first violation.
pub fn run_seed(seed: u64, options: &Options) -> Result<Report, Failure> {
    let fail = |sim: Option<&Sim>, violation: Violation| Failure {
        seed,
        step: sim.map_or(0, |sim| sim.step),
        tick: sim.map_or(0, |sim| sim.now / SUBTICKS_PER_TICK),
        nodes: sim.map_or(0, |sim| sim.nodes.len()),
        violation,
        replay: options.replay_command(seed),
    };
    let mut sim = match catch_unwind(|| Sim::new(seed, options.clone())) {
        Ok(sim) => sim,
        Err(panic) => return Err(fail(None, core_panic(panic))),
    };
    while !sim.finished() {
        let violation = match catch_unwind(AssertUnwindSafe(|| sim.step())) {
            Ok(Ok(())) => continue,
            Ok(Err(violation)) => violation,
            Err(panic) => core_panic(panic),
        };
        return Err(fail(Some(&sim), violation));
    }
    Ok(sim.report())
}

fn core_panic(panic: Box<dyn std::any::Any + Send>) -> Violation {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string());
    Violation::new("Core panic", message)
}

#[derive(Debug)]
pub(super) enum Event {
    /// A tick of `node`'s logical clock (ignored if the node crashed since it was scheduled).
    Tick { node: usize, incarnation: u64 },
    /// A message, with the sender's snapshot data beside an InstallSnapshot.
    Deliver(Message, Option<SnapshotData>),
    /// `node`'s disk finishes a sync of everything written so far.
    Sync { node: usize, incarnation: u64 },
    /// A client acts: a write, a read, and the liveness probe once the faults stopped.
    Client,
    /// A random fault from the mix.
    Fault,
    /// Undo one partition: restore these links.
    Heal(Vec<Link>),
    /// Bring a crashed node back with what its disk holds.
    Restart { node: usize },
    /// Strike `node` if it still has `role` in `term`.
    Strike { node: usize, role: Role, term: Term },
    /// Crash `node` before its pending sync completes.
    PowerLoss { node: usize, incarnation: u64 },
}

/// An event due at `time`; `seq` breaks ties in scheduling order, so the queue is deterministic.
struct Scheduled {
    time: Time,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest event must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

/// Tags that start each event's record in the trace hash.
pub(super) mod tag {
    pub const TICK: u64 = 1;
    pub const DELIVER: u64 = 2;
    pub const LOST: u64 = 3;
    pub const SYNC: u64 = 4;
    pub const READY: u64 = 5;
    pub const APPLY: u64 = 6;
    pub const PROPOSE: u64 = 7;
    pub const READ: u64 = 8;
    pub const CRASH: u64 = 9;
    pub const RESTART: u64 = 10;
    pub const PARTITION: u64 = 11;
    pub const HEAL: u64 = 12;
    pub const TRANSFER: u64 = 13;
    pub const CALM: u64 = 14;
    pub const SERVE: u64 = 15;
    pub const COMPACT: u64 = 16;
    pub const INSTALL: u64 = 17;
    pub const CONF: u64 = 18;
}

pub(super) struct Sim {
    seed: u64,
    options: Options,
    pub(super) scenario: Scenario,
    pub(super) rng: SmallRng,
    pub(super) now: Time,
    step: u64,
    queue: BinaryHeap<Scheduled>,
    next_seq: u64,
    pub(super) network: Network,
    pub(super) nodes: Vec<SimNode>,
    pub(super) clients: Clients,
    pub(super) checker: Checker,
    pub(super) trace: Trace,
    /// Nodes whose core ran during this step: their logs and roles are re-observed.
    pub(super) touched: Vec<usize>,
    /// Each node's role and term when last observed.
    roles: Vec<(Role, Term)>,
    /// Nodes at a fragile moment in this step (they just voted for another node, became
    /// candidate or became leader): targets for a strike.
    pub(super) fragile: Vec<(usize, Role, Term)>,
    /// Each node's (term, vote) as last handed to its disk.
    votes: Vec<(Term, Option<NodeId>)>,
    /// Each leader's commit index when elected, until its first commit (then `Index::MAX`).
    commit_seen: Vec<Index>,
    /// Leaders that made their first commit in this step: targets for a strike.
    pub(super) first_commits: Vec<(usize, Term)>,
    fault_steps: u64,
    /// When the faults stopped.
    pub(super) calm_since: Option<Time>,
    /// When the liveness probe was applied on every node.
    live_at: Option<Time>,
    pub(super) faults: u64,
    pub(super) crashes: u64,
    snapshots: u64,
    /// Membership changes proposed (accepted by a leader) and refused.
    conf_changes: u64,
    conf_refused: u64,
}

impl Sim {
    fn new(seed: u64, options: Options) -> Sim {
        let mut rng = SmallRng::seed_from_u64(seed);
        let scenario = Scenario::draw(&mut rng);
        let nodes: Vec<SimNode> = (0..scenario.total())
            .map(|id| SimNode::new(scenario.config(id as NodeId, &options), rng.gen()))
            .collect();
        let trace = Trace::new(options.trace);
        if trace.verbose() {
            eprintln!("seed {seed}: {scenario:#?}");
        }
        let mut sim = Sim {
            seed,
            fault_steps: options.steps * FAULT_PHASE_PERCENT / 100,
            network: Network::new(scenario.total(), scenario.network.clone()),
            clients: Clients::new(
                scenario.total(),
                CLIENTS,
                scenario.ticks(CLIENT_TIMEOUT_ELECTIONS),
            ),
            checker: Checker::new(scenario.total(), scenario.nodes),
            options,
            scenario,
            rng,
            now: 0,
            step: 0,
            queue: BinaryHeap::new(),
            next_seq: 0,
            trace,
            touched: Vec::new(),
            roles: vec![(Role::Follower, 0); nodes.len()],
            fragile: Vec::new(),
            votes: vec![(0, None); nodes.len()],
            commit_seen: vec![0; nodes.len()],
            first_commits: Vec::new(),
            nodes,
            calm_since: None,
            live_at: None,
            faults: 0,
            crashes: 0,
            snapshots: 0,
            conf_changes: 0,
            conf_refused: 0,
        };
        for node in 0..sim.nodes.len() {
            let phase = sim.rng.gen_range(1..=SUBTICKS_PER_TICK);
            let incarnation = sim.nodes[node].incarnation;
            sim.schedule(phase, Event::Tick { node, incarnation });
        }
        let client_gap = sim.rng.gen_range(1..=sim.scenario.client_gap_max);
        sim.schedule(client_gap, Event::Client);
        let fault_gap = sim.fault_gap();
        sim.schedule(fault_gap, Event::Fault);
        sim
    }

    fn finished(&self) -> bool {
        self.step >= self.options.steps && self.live_at.is_some()
    }

    fn report(&self) -> Report {
        let checked = self.checker.stats();
        Report {
            seed: self.seed,
            scenario: self.scenario.clone(),
            steps: self.step,
            ticks: self.now / SUBTICKS_PER_TICK,
            trace_hash: self.trace.hash(),
            leaders: checked.leaders,
            committed: checked.committed,
            faults: self.faults,
            crashes: self.crashes,
            liveness_ticks: match (self.calm_since, self.live_at) {
                (Some(calm), Some(live)) => (live - calm) / SUBTICKS_PER_TICK,
                _ => 0,
            },
            clients: self.clients.stats,
            network: self.network.stats,
            snapshots: self.snapshots,
            installs: self.checker.installs,
            restores: self.checker.restores,
            torn_installs: self
                .nodes
                .iter()
                .map(|node| node.storage.torn_installs)
                .sum(),
            conf_changes: self.conf_changes,
            conf_refused: self.conf_refused,
            final_voters: self.checker.committed_config().voters().count() as u64,
            removed: self.checker.committed_config().removed().count() as u64,
        }
    }

    pub(super) fn schedule(&mut self, delay: Time, event: Event) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push(Scheduled {
            time: self.now + delay,
            seq,
            event,
        });
    }

    pub(super) fn log(&self, what: impl FnOnce() -> String) {
        self.trace.log(self.step, self.now, what);
    }

    // ---- one step ------------------------------------------------------------------------

    fn step(&mut self) -> Result<(), Violation> {
        self.touched.clear();
        if self.calm_since.is_none() && self.step >= self.fault_steps {
            self.stop_faults()?;
        }
        let next = self
            .queue
            .pop()
            .expect("node ticks and client actions are always scheduled");
        debug_assert!(next.time >= self.now, "time never runs backwards");
        self.now = next.time;
        match next.event {
            Event::Tick { node, incarnation } => self.on_tick(node, incarnation)?,
            Event::Deliver(msg, data) => self.on_deliver(msg, data)?,
            Event::Sync { node, incarnation } => self.on_sync(node, incarnation)?,
            Event::Client => self.on_client()?,
            Event::Fault => self.on_fault()?,
            Event::Heal(links) => self.on_heal(links),
            Event::Restart { node } => self.restart(node)?,
            Event::Strike { node, role, term } => self.on_strike(node, role, term)?,
            Event::PowerLoss { node, incarnation } => self.on_power_loss(node, incarnation)?,
        }
        self.check_safety()?;
        self.track_roles();
        self.check_liveness()?;
        self.step += 1;
        Ok(())
    }

    fn on_tick(&mut self, node: usize, incarnation: u64) -> Result<(), Violation> {
        if self.nodes[node].incarnation != incarnation {
            return Ok(()); // the node crashed since this tick was scheduled
        }
        self.trace.record(&[tag::TICK, self.now, node as u64]);
        self.nodes[node]
            .raft
            .as_mut()
            .expect("a current incarnation is up")
            .tick();
        // Clocks drift a little: ticks are 9 to 11 sub-ticks apart.
        let gap = self
            .rng
            .gen_range(SUBTICKS_PER_TICK - 1..=SUBTICKS_PER_TICK + 1);
        self.schedule(gap, Event::Tick { node, incarnation });
        self.touched.push(node);
        self.drive(node)?;
        if self.scenario.compact_prob > 0.0 && self.rng.gen_bool(self.scenario.compact_prob) {
            self.compact(node)?;
        }
        Ok(())
    }

    /// The driver of `node` snapshots its state machine at its applied index, makes the snapshot
    /// durable (at once, in this model) and compacts, keeping a random trailing window. Only with
    /// nothing in flight to the disk, so the stored log holds every applied entry.
    fn compact(&mut self, node: usize) -> Result<(), Violation> {
        let sim_node = &self.nodes[node];
        let Some(raft) = sim_node.raft.as_ref() else {
            return Ok(());
        };
        let index = sim_node.applied_index;
        let current = sim_node.snapshot.map_or(0, |data| data.meta.index);
        if sim_node.storage.has_written() || index <= current {
            return Ok(());
        }
        let Some(term) = raft.log_term(index) else {
            return Err(Violation::new(
                "Log compaction",
                format!("node {node}: applied index {index} has no term in its log"),
            ));
        };
        let window = if self.rng.gen_bool(0.5) {
            0
        } else {
            self.rng.gen_range(0..=self.scenario.compact_window_max)
        };
        let data = sim_node.snapshot_data(term);
        self.checker.on_snapshot(node as NodeId, &data, "made")?;
        let first_kept = (index + 1).saturating_sub(window).max(1);
        let sim_node = &mut self.nodes[node];
        let raft = sim_node.raft.as_mut().expect("is up");
        raft.compact(data.meta, first_kept);
        if raft.snapshot() != Some(data.meta) {
            return Err(Violation::new(
                "Log compaction",
                format!("node {node}: compact({:?}) was not taken", data.meta),
            ));
        }
        let first_kept = raft.first_index();
        let membership = raft.snapshot_membership();
        sim_node.storage.compact(data, first_kept, membership);
        sim_node.snapshot = Some(data);
        self.snapshots += 1;
        self.trace
            .record(&[tag::COMPACT, self.now, node as u64, index, first_kept]);
        self.log(|| {
            format!("compact node {node}: snapshot at {index} (term {term}), log from {first_kept}")
        });
        self.touched.push(node);
        self.drive(node)
    }

    fn on_deliver(&mut self, msg: Message, data: Option<SnapshotData>) -> Result<(), Violation> {
        let to = msg.to as usize;
        let arrives = self.network.arrives((msg.from, msg.to)) && self.nodes[to].is_up();
        let words = message_words(&msg);
        self.trace
            .record(&[if arrives { tag::DELIVER } else { tag::LOST }, self.now]);
        self.trace.record(&words);
        self.log(|| {
            let fate = if arrives { "deliver" } else { "lost   " };
            format!("{fate} {}", describe_message(&msg))
        });
        if !arrives {
            return Ok(());
        }
        if data.is_some() {
            // The driver keeps the data until the core says whether to install it.
            self.nodes[to].received = data;
        }
        self.nodes[to].raft.as_mut().expect("is up").step(msg);
        self.touched.push(to);
        self.drive(to)
    }

    /// The disk of `node` finished a sync: every Ready written so far is durable.
    fn on_sync(&mut self, node: usize, incarnation: u64) -> Result<(), Violation> {
        if self.nodes[node].incarnation != incarnation {
            return Ok(());
        }
        let sim_node = &mut self.nodes[node];
        sim_node.sync_scheduled = false;
        let synced = sim_node.storage.sync(node)?;
        let Some(last) = synced.last().map(|ready| ready.number) else {
            return Ok(());
        };
        self.trace
            .record(&[tag::SYNC, self.now, node as u64, last, synced.len() as u64]);
        self.log(|| format!("sync    node {node}: Readies up to {last} durable"));
        for ready in synced {
            for msg in ready.persisted_messages {
                self.send(msg)?;
            }
        }
        self.nodes[node].raft.as_mut().expect("is up").advance(last);
        self.touched.push(node);
        self.drive(node)
    }

    /// Sends `msg` through the network; an InstallSnapshot carries the sender's snapshot data,
    /// which must be the snapshot the message names.
    fn send(&mut self, msg: Message) -> Result<(), Violation> {
        let count = self.nodes.len() as NodeId;
        if msg.from >= count || msg.to >= count || msg.from == msg.to {
            return Ok(()); // not a link of this cluster
        }
        let data = match msg.body {
            MessageBody::InstallSnapshot { snapshot, .. } => {
                let data = self.nodes[msg.from as usize].snapshot;
                if data.map(|data| data.meta) != Some(snapshot) {
                    return Err(Violation::new(
                        "Snapshot contract",
                        format!(
                            "node {} sends snapshot {snapshot:?} but its driver holds {:?}",
                            msg.from,
                            data.map(|data| data.meta)
                        ),
                    ));
                }
                data
            }
            _ => None,
        };
        let fate = self
            .network
            .route((msg.from, msg.to), self.now, &mut self.rng);
        if let Some(delay) = fate.duplicate {
            self.schedule(delay, Event::Deliver(msg.clone(), data));
        }
        if let Some(delay) = fate.delivery {
            self.schedule(delay, Event::Deliver(msg, data));
        }
        Ok(())
    }

    // ---- the Ready loop ------------------------------------------------------------------

    /// Takes and handles Readies from `node` until it has none.
    pub(super) fn drive(&mut self, node: usize) -> Result<(), Violation> {
        for _ in 0..READY_ROUNDS_MAX {
            let Some(raft) = self.nodes[node].raft.as_mut() else {
                return Ok(());
            };
            if !raft.has_ready() {
                return Ok(());
            }
            let ready = raft.ready();
            self.handle_ready(node, ready)?;
        }
        Err(Violation::new(
            "Ready quiescence",
            format!("node {node} still has a Ready after {READY_ROUNDS_MAX} rounds in one step"),
        ))
    }

    /// The driver loop of `raftchat::raft`: send `messages` now; apply committed entries and
    /// serve reads; write entries and hard state, and hold `persisted_messages` and `advance`
    /// until a sync makes them durable. A Ready with nothing to write, behind nothing unsynced,
    /// is durable already and advances at once.
    fn handle_ready(&mut self, node: usize, ready: Ready) -> Result<(), Violation> {
        let Ready {
            number,
            soft_state,
            hard_state,
            entries,
            messages,
            persisted_messages,
            committed_entries,
            read_states,
            read_failures,
            snapshot,
        } = ready;
        let sim_node = &mut self.nodes[node];
        if sim_node.last_ready.is_some_and(|last| number <= last) {
            return Err(Violation::new(
                "Ready contract",
                format!(
                    "node {node}: Ready {number} after Ready {}",
                    sim_node.last_ready.unwrap_or(0)
                ),
            ));
        }
        sim_node.last_ready = Some(number);
        self.trace.record(&[
            tag::READY,
            node as u64,
            number,
            entries.len() as u64,
            messages.len() as u64,
            persisted_messages.len() as u64,
            committed_entries.len() as u64,
        ]);
        if let Some(soft) = soft_state {
            self.log(|| format!("state   node {node}: {soft:?}"));
        }
        // A fresh vote for another node: a fragile moment until it is durable.
        if let Some(hs) = hard_state {
            let vote = (hs.term, hs.voted_for);
            if vote != self.votes[node] {
                self.votes[node] = vote;
                if hs
                    .voted_for
                    .is_some_and(|candidate| candidate != node as NodeId)
                {
                    self.fragile.push((node, Role::Follower, hs.term));
                }
            }
        }
        for msg in messages {
            self.send(msg)?;
        }
        let snapshot = match snapshot {
            Some(meta) => Some(self.install_snapshot(node, meta)?),
            None => None,
        };
        // The configuration the installed snapshot carried, to store beside it.
        let membership = snapshot.map(|_| {
            self.nodes[node]
                .raft
                .as_ref()
                .expect("is up")
                .snapshot_membership()
        });
        if !committed_entries.is_empty() {
            for entry in &committed_entries {
                self.apply(node, entry)?;
            }
            let term = self.nodes[node].raft.as_ref().expect("is up").term();
            self.checker.on_applied(node as NodeId, term)?;
        }
        for state in read_states {
            self.clients.on_read_state(node as NodeId, state)?;
        }
        for failure in read_failures {
            self.clients.on_read_failure(node as NodeId, failure.ctx);
        }
        let sim_node = &self.nodes[node];
        let (applied_index, applied_commands) = (sim_node.applied_index, sim_node.applied_commands);
        let served = self
            .clients
            .serve_reads(node as NodeId, applied_index, applied_commands)?;
        for read in served {
            self.trace.record(&[
                tag::SERVE,
                read.node,
                read.ctx,
                read.read_index,
                read.applied_index,
                read.applied_commands,
            ]);
            self.log(|| format!("serve   {read:?}"));
        }

        let written = WrittenReady {
            number,
            snapshot,
            membership,
            hard_state,
            entries,
            persisted_messages,
        };
        let sim_node = &mut self.nodes[node];
        if written.has_writes() || sim_node.storage.has_written() {
            sim_node.storage.write(written);
            if !sim_node.sync_scheduled {
                sim_node.sync_scheduled = true;
                let incarnation = sim_node.incarnation;
                let delay = self.rng.gen_range(1..=self.scenario.sync_delay_max);
                self.schedule(delay, Event::Sync { node, incarnation });
                // Power loss while the disk is busy: the moment unsynced state matters most.
                if self.calm_since.is_none() && self.rng.gen_bool(self.scenario.power_loss_prob) {
                    let before_sync = self.rng.gen_range(0..delay);
                    self.schedule(before_sync, Event::PowerLoss { node, incarnation });
                }
            }
        } else {
            for msg in written.persisted_messages {
                self.send(msg)?;
            }
            self.nodes[node]
                .raft
                .as_mut()
                .expect("is up")
                .advance(number);
        }
        Ok(())
    }

    /// `Ready::snapshot`: the state machine becomes the snapshot data received for `meta`, at
    /// once; the disk installs it when this Ready is synced, before the Ready's other writes
    /// (see `Storage::make_durable`). Returns the data to store.
    fn install_snapshot(
        &mut self,
        node: usize,
        meta: SnapshotMeta,
    ) -> Result<SnapshotData, Violation> {
        let sim_node = &mut self.nodes[node];
        let Some(data) = sim_node.received.take().filter(|data| data.meta == meta) else {
            return Err(Violation::new(
                "Snapshot contract",
                format!("node {node}: Ready asks to install {meta:?}, which it never received"),
            ));
        };
        self.checker
            .on_snapshot(node as NodeId, &data, "installed")?;
        sim_node.applied_index = meta.index;
        sim_node.applied_commands = data.commands;
        sim_node.applied_prefix = data.prefix;
        sim_node.snapshot = Some(data);
        self.clients
            .on_snapshot_installed(node as NodeId, meta.index);
        self.trace
            .record(&[tag::INSTALL, self.now, node as u64, meta.index, meta.term]);
        self.log(|| {
            format!(
                "install node {node}: snapshot at {} (term {})",
                meta.index, meta.term
            )
        });
        Ok(data)
    }

    fn apply(&mut self, node: usize, entry: &Entry) -> Result<(), Violation> {
        let sim_node = &mut self.nodes[node];
        self.checker
            .on_apply(node as NodeId, entry, sim_node.storage.durable_chain())?;
        sim_node.applied_prefix =
            chain_hash(sim_node.applied_prefix, entry.index, EntryKey::of(entry));
        sim_node.applied_index = entry.index;
        if entry.kind == EntryKind::Normal {
            sim_node.applied_commands += 1;
        }
        self.clients.on_apply(node as NodeId, entry);
        self.trace
            .record(&[tag::APPLY, node as u64, entry.index, entry.term]);
        Ok(())
    }

    // ---- clients -------------------------------------------------------------------------

    fn on_client(&mut self) -> Result<(), Violation> {
        let gap = self.rng.gen_range(1..=self.scenario.client_gap_max);
        self.schedule(gap, Event::Client);
        if self.calm_since.is_some() {
            self.promote_learners()?;
        }
        if self.clients.probe_wanted(self.now) {
            self.propose(self.clients.probe_writer())?;
        }
        if self.rng.gen_bool(self.scenario.read_prob) {
            return self.begin_read();
        }
        let client = self.rng.gen_range(0..self.clients.clients());
        if self.clients.may_write(client, self.now) {
            self.propose(client)?;
        }
        Ok(())
    }

    /// A writer proposes a fresh unique write to the node it believes leads.
    fn propose(&mut self, writer: usize) -> Result<(), Violation> {
        let guess = self.clients.leader_guess(writer).map(|id| id as usize);
        let Some(node) = guess
            .filter(|&node| self.nodes[node].is_up())
            .or_else(|| self.random_up_node())
        else {
            return Ok(());
        };
        let payload_id = self.clients.new_payload();
        let result = self.nodes[node]
            .raft
            .as_mut()
            .expect("is up")
            .propose(&payload(payload_id));
        self.trace.record(&[
            tag::PROPOSE,
            self.now,
            node as u64,
            payload_id,
            *result.as_ref().unwrap_or(&0),
        ]);
        self.log(|| format!("propose node {node}: write {payload_id} -> {result:?}"));
        match result {
            Ok(index) => {
                self.clients
                    .on_proposed(writer, node as NodeId, index, payload_id, self.now);
                self.touched.push(node);
                self.drive(node)
            }
            Err(RaftError::NotLeader { leader_hint }) => {
                self.clients.redirect(writer, leader_hint);
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }

    /// A linearizable read through `read_index` on a random node.
    fn begin_read(&mut self) -> Result<(), Violation> {
        let Some(node) = self.random_up_node() else {
            return Ok(());
        };
        let ctx = self.clients.new_ctx();
        let result = self.nodes[node]
            .raft
            .as_mut()
            .expect("is up")
            .read_index(ctx);
        self.trace
            .record(&[tag::READ, self.now, node as u64, ctx, result.is_ok() as u64]);
        self.log(|| format!("read    node {node}: ctx {ctx} -> {result:?}"));
        if result.is_err() {
            return Ok(());
        }
        self.clients.on_read_begun(node as NodeId, ctx);
        self.touched.push(node);
        self.drive(node)
    }

    pub(super) fn random_up_node(&mut self) -> Option<usize> {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&node| self.nodes[node].is_up())
            .collect();
        up.choose(&mut self.rng).copied()
    }

    /// The up node that believes it leads in the highest term, if any.
    pub(super) fn current_leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter_map(|node| {
                let raft = self.nodes[node].raft.as_ref()?;
                (raft.role() == Role::Leader).then(|| (raft.term(), node))
            })
            .max()
            .map(|(_, node)| node)
    }

    // ---- membership ----------------------------------------------------------------------

    /// The membership nemesis: the leader (if any) is asked to add the next spare as a
    /// learner, promote a learner, or remove a member (the leader itself included), keeping at
    /// least three voters. Refusals (a change pending, the term not committed, a learner not
    /// caught up) are part of the test: the core must say no.
    pub(super) fn membership_fault(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.current_leader() else {
            return Ok(());
        };
        let m = self.nodes[leader]
            .raft
            .as_ref()
            .expect("leads")
            .membership()
            .clone();
        let voters: Vec<NodeId> = m.voters().collect();
        let learners: Vec<NodeId> = m.learners().collect();
        let spare = (self.scenario.nodes as NodeId..self.nodes.len() as NodeId)
            .find(|&id| !m.is_member(id) && !m.was_removed(id));
        let mut choices = Vec::new();
        if let Some(id) = spare {
            choices.push(ConfChange::AddLearner(id));
        }
        if let Some(&id) = learners.choose(&mut self.rng) {
            choices.push(ConfChange::Promote(id));
            choices.push(ConfChange::Promote(id));
            choices.push(ConfChange::Remove(id));
        }
        if voters.len() > 3 {
            if let Some(&id) = voters.choose(&mut self.rng) {
                choices.push(ConfChange::Remove(id));
            }
            choices.push(ConfChange::Remove(leader as NodeId));
        }
        let Some(&change) = choices.choose(&mut self.rng) else {
            return Ok(());
        };
        self.propose_conf_change(leader, change)
    }

    fn propose_conf_change(&mut self, leader: usize, change: ConfChange) -> Result<(), Violation> {
        let result = self.nodes[leader]
            .raft
            .as_mut()
            .expect("leads")
            .propose_conf_change(change, b"");
        let (op, id) = match change {
            ConfChange::AddLearner(id) => (1, id),
            ConfChange::Promote(id) => (2, id),
            ConfChange::Remove(id) => (3, id),
        };
        self.trace.record(&[
            tag::CONF,
            self.now,
            leader as u64,
            op,
            id,
            *result.as_ref().unwrap_or(&0),
        ]);
        self.log(|| format!("conf    node {leader}: {change:?} -> {result:?}"));
        if result.is_ok() {
            self.conf_changes += 1;
        } else {
            self.conf_refused += 1;
        }
        self.touched.push(leader);
        self.drive(leader)
    }

    /// Once the faults stopped: the leader promotes its learners (the target configuration has
    /// none), one at a time as the rules allow.
    fn promote_learners(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.current_leader() else {
            return Ok(());
        };
        let raft = self.nodes[leader].raft.as_ref().expect("leads");
        let Some(learner) = raft.membership().learners().next() else {
            return Ok(());
        };
        self.propose_conf_change(leader, ConfChange::Promote(learner))
    }

    // ---- checks --------------------------------------------------------------------------

    fn check_safety(&mut self) -> Result<(), Violation> {
        for &node in &self.touched {
            if let Some(raft) = self.nodes[node].raft.as_ref() {
                self.checker.observe_log(
                    node as NodeId,
                    raft.first_index(),
                    raft.entries(),
                    raft.term(),
                )?;
                let incarnation = self.nodes[node].incarnation;
                self.checker
                    .check_membership(node as NodeId, incarnation, raft)?;
            }
        }
        let full_log_check = self.step.is_multiple_of(FULL_LOG_CHECK_EVERY_STEPS);
        for (node, sim_node) in self.nodes.iter().enumerate() {
            let Some(raft) = sim_node.raft.as_ref() else {
                continue;
            };
            if full_log_check {
                self.checker.verify_log(
                    node as NodeId,
                    raft.first_index(),
                    raft.entries(),
                    raft.term(),
                )?;
            }
            self.checker
                .observe_role(node as NodeId, raft.role(), raft.term())?;
        }
        self.checker.check_committed_durable(
            self.nodes
                .iter()
                .map(|sim_node| sim_node.storage.durable_chain()),
        )
    }

    /// Reacts to the role and commit changes of this step: the writers of a deposed leader move
    /// on, and fresh candidates, fresh leaders and leaders' first commits become strike targets
    /// (as do fresh votes, noted in `handle_ready`).
    fn track_roles(&mut self) {
        for (node, sim_node) in self.nodes.iter().enumerate() {
            let Some(raft) = sim_node.raft.as_ref() else {
                continue;
            };
            let (role, term) = (raft.role(), raft.term());
            // A leader's first commit in its term: the moment it takes over the log.
            let commit_index = raft.commit_index();
            if role == Role::Leader && self.roles[node] != (role, term) {
                self.commit_seen[node] = commit_index;
            } else if role == Role::Leader
                && self.commit_seen[node] != Index::MAX
                && commit_index > self.commit_seen[node]
            {
                self.commit_seen[node] = Index::MAX;
                self.first_commits.push((node, term));
            }
            if self.roles[node] != (role, term) {
                if self.roles[node].0 == Role::Leader {
                    self.clients.on_leadership_lost(node as NodeId);
                }
                self.roles[node] = (role, term);
                if matches!(role, Role::Candidate | Role::Leader) {
                    self.fragile.push((node, role, term));
                }
            }
        }
        self.strike_fragile();
        self.strike_first_commit();
    }

    fn check_liveness(&mut self) -> Result<(), Violation> {
        let Some(calm_since) = self.calm_since else {
            return Ok(());
        };
        if self.live_at.is_some() {
            return Ok(());
        }
        if let Some(index) = self.clients.probe.committed_index {
            // Every voter of the target configuration (the committed one, all learners
            // promoted, no change pending) applied the probe. Removed nodes and spares never
            // added are outside it.
            let config = self.checker.committed_config();
            let settled = config.learners().next().is_none()
                && self.current_leader().is_some_and(|leader| {
                    let raft = self.nodes[leader].raft.as_ref().expect("leads");
                    raft.membership() == config
                });
            if settled
                && config.voters().all(|id| {
                    let sim_node = &self.nodes[id as usize];
                    sim_node.is_up() && sim_node.applied_index >= index
                })
            {
                self.live_at = Some(self.now);
                self.log(|| {
                    format!(
                        "live    probe write at index {index} applied on every voter of {:?}",
                        self.checker.committed_config()
                    )
                });
                return Ok(());
            }
        }
        let bound = self.scenario.ticks(LIVENESS_BOUND_ELECTIONS);
        if self.now - calm_since <= bound {
            return Ok(());
        }
        let states: Vec<String> = self
            .nodes
            .iter()
            .map(|sim_node| match sim_node.raft.as_ref() {
                Some(raft) => format!(
                    "{:?} term {} commit {} applied {} last {} voters {:?} learners {:?}",
                    raft.role(),
                    raft.term(),
                    raft.commit_index(),
                    sim_node.applied_index,
                    raft.last_index(),
                    raft.membership().voters().collect::<Vec<_>>(),
                    raft.membership().learners().collect::<Vec<_>>()
                ),
                None => "down".to_string(),
            })
            .collect();
        Err(Violation::new(
            "Liveness",
            format!(
                "{} ticks after the faults stopped ({} × election_ticks {}), no fresh write was applied on every node; probe {:?}; nodes: {states:?}",
                bound / SUBTICKS_PER_TICK,
                LIVENESS_BOUND_ELECTIONS,
                self.scenario.election_ticks,
                self.clients.probe
            ),
        ))
    }
}
