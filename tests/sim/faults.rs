//! The fault schedule: what goes wrong, when, and how it is undone.
//!
//! During the fault phase a random fault strikes every few election timeouts: crashes (often of
//! the leader), symmetric partitions, isolated, deaf or mute leaders, random one-way link cuts,
//! leadership transfers, global heals. Reactive faults aim at the moments that matter: a node
//! that just voted or became candidate loses power around the sync of its vote, a fresh leader is
//! crashed or cut off before it has replicated much, a leader is struck right after its first
//! commit, and any node may lose power while a sync is pending (the driver schedules that one).
//! Then the faults stop for good: every link heals, every node restarts, and nothing more is
//! lost. It owns no state of its own: it acts on the driver's `Sim`.

use raftchat::raft::{NodeId, Role, Term};
use rand::seq::SliceRandom;
use rand::Rng;

use super::checker::Violation;
use super::driver::{tag, Event, Sim};
use super::network::{one_way_links, random_links, split_links, Link};
use super::{Time, SUBTICKS_PER_TICK};

impl Sim {
    pub(super) fn fault_gap(&mut self) -> Time {
        self.rng.gen_range(1..=self.scenario.fault_gap_max_ticks) * SUBTICKS_PER_TICK
    }

    fn heal_gap(&mut self) -> Time {
        self.rng
            .gen_range(SUBTICKS_PER_TICK..=self.scenario.ticks(6))
    }

    /// Injects one random fault. The mix leans on the leader (crash it, cut it off, make it deaf
    /// or mute, hand its leadership away), since leader changes are where Raft goes wrong.
    pub(super) fn on_fault(&mut self) -> Result<(), Violation> {
        if self.calm_since.is_some() {
            return Ok(());
        }
        let gap = self.fault_gap();
        self.schedule(gap, Event::Fault);
        self.faults += 1;
        let count = self.nodes.len();
        let Some(random) = self.random_up_node() else {
            return Ok(()); // everyone is down; restarts are scheduled
        };
        let leader = self.current_leader().unwrap_or(random);
        if self.scenario.membership_prob > 0.0 && self.rng.gen_bool(self.scenario.membership_prob) {
            return self.membership_fault();
        }
        match self.rng.gen_range(0..100) {
            0..=24 => self.crash(leader),
            25..=34 => self.crash(random),
            35..=54 => {
                let mut side: Vec<NodeId> = (0..count as NodeId).collect();
                side.shuffle(&mut self.rng);
                side.truncate(self.rng.gen_range(1..=(count - 1) / 2));
                if self.rng.gen_bool(0.5) && !side.contains(&(leader as NodeId)) {
                    side[0] = leader as NodeId;
                }
                self.partition(
                    split_links(count, &side),
                    format!("split {side:?} from the rest"),
                );
                Ok(())
            }
            55..=64 => {
                let links = split_links(count, &[leader as NodeId]);
                self.partition(links, format!("isolate node {leader}"));
                Ok(())
            }
            65..=74 => {
                let inbound = self.rng.gen_bool(0.5);
                let links = one_way_links(count, leader as NodeId, inbound);
                let what = if inbound { "deaf" } else { "mute" };
                self.partition(links, format!("node {leader} goes {what}"));
                Ok(())
            }
            75..=81 => {
                let how_many = self.rng.gen_range(1..=count);
                let links = random_links(count, how_many, &mut self.rng);
                self.partition(links.clone(), format!("cut links {links:?}"));
                Ok(())
            }
            82..=93 => self.transfer_leadership(leader),
            _ => {
                self.trace.record(&[tag::HEAL, self.now]);
                self.log(|| "heal    all links".to_string());
                self.network.heal_all();
                Ok(())
            }
        }
    }

    fn partition(&mut self, links: Vec<Link>, what: String) {
        self.trace
            .record(&[tag::PARTITION, self.now, links.len() as u64]);
        self.log(|| format!("fault   {what}"));
        self.network.cut(&links);
        let gap = self.heal_gap();
        self.schedule(gap, Event::Heal(links));
    }

    pub(super) fn on_heal(&mut self, links: Vec<Link>) {
        if self.calm_since.is_some() {
            return; // everything was healed when the faults stopped
        }
        self.trace
            .record(&[tag::HEAL, self.now, links.len() as u64]);
        self.log(|| format!("heal    {links:?}"));
        self.network.restore(&links);
    }

    fn transfer_leadership(&mut self, leader: usize) -> Result<(), Violation> {
        let count = self.nodes.len() as NodeId;
        let to = (leader as NodeId + self.rng.gen_range(1..count)) % count;
        let Some(raft) = self.nodes[leader].raft.as_mut() else {
            return Ok(());
        };
        let result = raft.transfer_leadership(to);
        self.trace.record(&[
            tag::TRANSFER,
            self.now,
            leader as u64,
            to,
            result.is_ok() as u64,
        ]);
        self.log(|| format!("fault   node {leader} transfers leadership to {to}: {result:?}"));
        self.touched.push(leader);
        self.drive(leader)
    }

    /// Power loss on `node`: it keeps its durable state (and, sometimes, a prefix of what it had
    /// written but not synced) and restarts later.
    pub(super) fn crash(&mut self, node: usize) -> Result<(), Violation> {
        let written = self.nodes[node].storage.written_count();
        let flushed = if self.rng.gen_bool(self.scenario.flush_on_crash_prob) {
            self.rng.gen_range(0..=written)
        } else {
            0
        };
        // A crash in the middle of installing a leader's snapshot: the snapshot is stored, the
        // write-ahead log not yet reset (the restart must repair it).
        let torn_install = self.rng.gen_bool(0.5);
        self.trace.record(&[
            tag::CRASH,
            self.now,
            node as u64,
            flushed as u64,
            torn_install as u64,
        ]);
        self.log(|| format!("fault   crash node {node} ({flushed} of {written} unsynced Readies reach the disk)"));
        self.nodes[node].crash(node, flushed, torn_install)?;
        self.checker.on_crash(node as NodeId);
        self.clients.on_crash(node as NodeId);
        self.crashes += 1;
        let gap = self
            .rng
            .gen_range(SUBTICKS_PER_TICK..=self.scenario.ticks(4));
        self.schedule(gap, Event::Restart { node });
        Ok(())
    }

    pub(super) fn restart(&mut self, node: usize) -> Result<(), Violation> {
        if self.nodes[node].is_up() {
            return Ok(()); // restarted early when the faults stopped
        }
        let rng_seed = self.rng.gen();
        if let Some(data) = self.nodes[node].restart(rng_seed) {
            self.checker
                .on_snapshot(node as NodeId, &data, "restored")?;
        }
        self.trace.record(&[tag::RESTART, self.now, node as u64]);
        self.log(|| format!("restart node {node}"));
        let incarnation = self.nodes[node].incarnation;
        let phase = self.rng.gen_range(1..=SUBTICKS_PER_TICK);
        self.schedule(phase, Event::Tick { node, incarnation });
        self.touched.push(node);
        self.drive(node)
    }

    /// The end of the fault phase: heal every link, restart every crashed node, lose nothing
    /// more, and start the liveness probe.
    pub(super) fn stop_faults(&mut self) -> Result<(), Violation> {
        self.calm_since = Some(self.now);
        self.trace.record(&[tag::CALM, self.now]);
        self.log(|| "calm    faults stop: heal all, restart all, no more loss".to_string());
        self.network.heal_all();
        self.network.stop_losses();
        self.clients.probe.active = true;
        for node in 0..self.nodes.len() {
            self.restart(node)?;
        }
        Ok(())
    }

    /// Sometimes strikes a node a moment after it voted, became candidate or became leader. A
    /// voter or candidate loses power before or just after its vote is synced; a fresh leader is
    /// crashed or cut off before it has replicated much, leaving logs that differ in their
    /// uncommitted tails, which is where commit rules are tested (Figure 8).
    pub(super) fn strike_fragile(&mut self) {
        while let Some((node, role, term)) = self.fragile.pop() {
            let (prob, delay_max) = match role {
                Role::Leader => (self.scenario.strike_leader_prob, 2 * SUBTICKS_PER_TICK),
                _ => (self.scenario.strike_vote_prob, self.scenario.sync_delay_max),
            };
            if self.calm_since.is_some() || !self.rng.gen_bool(prob) {
                continue;
            }
            let delay = self.rng.gen_range(0..=delay_max);
            self.schedule(delay, Event::Strike { node, role, term });
        }
    }

    /// Sometimes strikes a leader right after its first commit, before the news reaches its
    /// followers: what it took over and committed must survive it.
    pub(super) fn strike_first_commit(&mut self) {
        while let Some((node, term)) = self.first_commits.pop() {
            if self.calm_since.is_some() || !self.rng.gen_bool(self.scenario.strike_commit_prob) {
                continue;
            }
            let delay = self.rng.gen_range(0..=1);
            let role = Role::Leader;
            self.schedule(delay, Event::Strike { node, role, term });
        }
    }

    /// Strikes `node` if it is still in `term`: a voter or candidate (or the leader it just
    /// became) loses power; a leader, if it still leads, is mostly cut off rather than crashed, because
    /// isolation also drops what it already sent.
    pub(super) fn on_strike(
        &mut self,
        node: usize,
        role: Role,
        term: Term,
    ) -> Result<(), Violation> {
        let Some(raft) = self.nodes[node].raft.as_ref() else {
            return Ok(());
        };
        let still = raft.term() == term && (role != Role::Leader || raft.role() == role);
        if self.calm_since.is_some() || !still {
            return Ok(());
        }
        if role != Role::Leader || self.rng.gen_bool(0.25) {
            self.crash(node)
        } else {
            let links = split_links(self.nodes.len(), &[node as NodeId]);
            self.partition(links, format!("isolate node {node}, leader of term {term}"));
            Ok(())
        }
    }

    /// Power loss scheduled while a sync of `node` was pending.
    pub(super) fn on_power_loss(&mut self, node: usize, incarnation: u64) -> Result<(), Violation> {
        if self.calm_since.is_some() || self.nodes[node].incarnation != incarnation {
            return Ok(()); // the faults stopped, or the node crashed already
        }
        self.crash(node)
    }
}
