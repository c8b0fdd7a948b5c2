//! The fault injector: from a seed, a sequence of faults against a real cluster behind a proxy.
//!
//! Owns choosing, applying and undoing faults (kill -9 and restart from the data dir,
//! SIGSTOP/SIGCONT, isolating a node, a majority/minority split, a one-way cut, a flapping
//! link, a silent partition that delivers late (stalled links), two faults at once, a
//! leadership transfer, a rolling restart of every node, and a membership grow and shrink: a
//! new node joins with `--join`, is added as a learner, promoted once caught up, then removed
//! and stopped) and the written schedule of what it did and when. One fault at a time, each undone before the next, so a majority is usually
//! reachable and the short run keeps making progress. It never looks at client outcomes.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::proxy::Proxy;
use crate::common::{free_ports, Client, Cluster, FAST_TIMING};

pub struct Nemesis<'a> {
    pub cluster: &'a mut Cluster,
    pub proxy: &'a Proxy,
    rng: SmallRng,
    t0: Instant,
    /// `"<seconds> <what>"`, in order.
    pub schedule: Vec<String>,
    /// A node that joined for a grow fault and is not yet removed and stopped.
    joiner: Option<std::process::Child>,
    /// The id the next joining node takes (ids are never reused).
    next_joiner: usize,
}

impl<'a> Nemesis<'a> {
    pub fn new(cluster: &'a mut Cluster, proxy: &'a Proxy, seed: u64, t0: Instant) -> Self {
        let next_joiner = cluster.len();
        Nemesis {
            cluster,
            proxy,
            rng: SmallRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973),
            t0,
            schedule: Vec::new(),
            joiner: None,
            next_joiner,
        }
    }

    fn note(&mut self, what: String) {
        self.schedule
            .push(format!("{:8.3}s {what}", self.t0.elapsed().as_secs_f64()));
    }

    fn hold(&mut self, min_ms: u64, max_ms: u64) {
        std::thread::sleep(Duration::from_millis(self.rng.gen_range(min_ms..=max_ms)));
    }

    /// The leader the highest-term answering node names (short timeouts: a node may be paused).
    pub fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for &addr in &self.cluster.addrs {
            let Some(mut client) = Client::try_connect(addr) else {
                continue;
            };
            if client.set_read_timeout(Duration::from_secs(1)).is_err() {
                continue;
            }
            let Ok(status) = client.status() else {
                continue;
            };
            let term = status.get("term").and_then(|t| t.parse().ok());
            let leader = status.get("leader").and_then(|l| l.parse().ok());
            if let (Some(term), Some(leader)) = (term, leader) {
                if best.is_none_or(|(t, _)| term > t) {
                    best = Some((term, leader));
                }
            }
        }
        best.map(|(_, leader)| leader)
    }

    /// The leader half of the time (when known), else any node.
    fn victim(&mut self) -> usize {
        let leader = if self.rng.gen_bool(0.5) {
            self.leader()
        } else {
            None
        };
        leader.unwrap_or_else(|| self.rng.gen_range(0..self.cluster.len()))
    }

    /// Applies and undoes random faults until `duration` has passed, then leaves one last
    /// fault in place for [`Nemesis::heal`] to undo (so the recovery bound measures something).
    pub fn run_for(&mut self, duration: Duration) {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            self.one_fault();
            self.hold(150, 800);
        }
        let node = self.victim();
        match self.rng.gen_range(0..4) {
            3 => {
                self.note(format!(
                    "stall every link of node {node} (left for healing)"
                ));
                for other in (0..self.cluster.len()).filter(|&o| o != node) {
                    self.proxy.stall(node, other);
                    self.proxy.stall(other, node);
                }
            }
            0 => {
                self.note(format!("kill -9 node {node} (left for healing)"));
                self.cluster.kill(node);
            }
            1 => {
                self.note(format!("SIGSTOP node {node} (left for healing)"));
                self.cluster.pause(node);
            }
            _ => {
                self.note(format!("isolate node {node} (left for healing)"));
                self.proxy.isolate(node);
            }
        }
        self.hold(500, 1500);
    }

    fn one_fault(&mut self) {
        let count = self.cluster.len();
        match self.rng.gen_range(0..11) {
            10 => self.grow_and_shrink(),
            9 => {
                // A rolling restart, as an operator upgrading the cluster would do it: every
                // node in turn stopped (SIGTERM, which must exit 0, or kill -9) and restarted
                // from its data dir, the next one once the last accepts connections again.
                let mut order: Vec<usize> = (0..count).collect();
                order.shuffle(&mut self.rng);
                self.note(format!("rolling restart {order:?}"));
                for node in order {
                    if self.rng.gen_bool(0.5) {
                        let status = self.cluster.stop(node);
                        self.note(format!("SIGTERM node {node}: {status}"));
                        assert!(
                            status.success(),
                            "node {node} exited with {status} after SIGTERM in a rolling restart"
                        );
                    } else {
                        self.note(format!("kill -9 node {node}"));
                        self.cluster.kill(node);
                    }
                    self.cluster.spawn(node);
                    self.note(format!("restart node {node}"));
                    self.hold(200, 800);
                }
            }
            8 => {
                // A silent partition: the node's links hold their bytes and deliver them late.
                let node = self.victim();
                self.note(format!("stall every link of node {node}"));
                for other in (0..count).filter(|&o| o != node) {
                    self.proxy.stall(node, other);
                    self.proxy.stall(other, node);
                }
                self.hold(400, 2500);
                self.note("release".into());
                for other in (0..count).filter(|&o| o != node) {
                    self.proxy.release(node, other);
                    self.proxy.release(other, node);
                }
            }
            7 => {
                // Two faults at once: with 3 nodes no majority is left, so writes must fail
                // cleanly (not stored or unknown) and the cluster must come back after.
                let a = self.victim();
                let b = (a + self.rng.gen_range(1..count)) % count;
                self.note(format!("SIGSTOP node {a} and isolate node {b}"));
                self.cluster.pause(a);
                self.proxy.isolate(b);
                self.hold(300, 1500);
                self.note(format!("SIGCONT node {a}, heal"));
                self.cluster.resume(a);
                self.proxy.heal_all();
            }
            0 => {
                let node = self.victim();
                self.note(format!("kill -9 node {node}"));
                self.cluster.kill(node);
                self.hold(200, 1500);
                self.note(format!("restart node {node}"));
                self.cluster.spawn(node);
            }
            1 => {
                let node = self.victim();
                self.note(format!("SIGSTOP node {node}"));
                self.cluster.pause(node);
                self.hold(300, 2000);
                self.note(format!("SIGCONT node {node}"));
                self.cluster.resume(node);
            }
            2 => {
                let node = self.victim();
                self.note(format!("isolate node {node}"));
                self.proxy.isolate(node);
                self.hold(400, 2500);
                self.note("heal".into());
                self.proxy.heal_all();
            }
            3 => {
                // A minority side (with the leader half of the time) against the majority.
                let mut nodes: Vec<usize> = (0..count).collect();
                nodes.shuffle(&mut self.rng);
                let leader = self.victim();
                nodes.retain(|&n| n != leader);
                nodes.insert(0, leader);
                let minority = nodes[..(count - 1) / 2].to_vec();
                self.note(format!("split {minority:?} from the rest"));
                self.proxy.split(&minority);
                self.hold(400, 2500);
                self.note("heal".into());
                self.proxy.heal_all();
            }
            4 => {
                let from = self.victim();
                let to = (from + self.rng.gen_range(1..count)) % count;
                let back = self.rng.gen_bool(0.5);
                let (from, to) = if back { (to, from) } else { (from, to) };
                self.note(format!("cut one way {from} -> {to}"));
                self.proxy.cut(from, to);
                self.hold(400, 2500);
                self.note("heal".into());
                self.proxy.heal(from, to);
            }
            5 => {
                let a = self.victim();
                let b = (a + self.rng.gen_range(1..count)) % count;
                let flaps = self.rng.gen_range(3..7);
                self.note(format!("flap link {a} <-> {b} x{flaps}"));
                for _ in 0..flaps {
                    self.proxy.cut(a, b);
                    self.proxy.cut(b, a);
                    self.hold(50, 300);
                    self.proxy.heal_all();
                    self.hold(50, 300);
                }
            }
            _ => {
                let Some(leader) = self.leader() else {
                    self.note("transfer: no leader known".into());
                    return;
                };
                let to = (leader + self.rng.gen_range(1..count)) % count;
                let answer = Client::try_connect(self.cluster.addrs[leader])
                    .and_then(|mut c| {
                        c.set_read_timeout(Duration::from_secs(2)).ok()?;
                        c.command(&format!("transfer {to}")).ok()
                    })
                    .map(|r| r.final_line)
                    .unwrap_or_else(|| "no answer".into());
                self.note(format!("transfer {leader} -> {to}: {answer}"));
            }
        }
    }

    /// Undoes every fault: links healed, paused nodes continued, dead nodes restarted. Returns
    /// the nodes found dead: it restarts every node it kills (except the one it leaves killed
    /// for healing, which has no child any more), so those died on their own.
    pub fn heal(&mut self) -> Vec<usize> {
        let mut dead = Vec::new();
        self.stop_joiner();
        self.proxy.heal_all();
        for node in 0..self.cluster.len() {
            if self.cluster.is_running(node) {
                self.cluster.resume(node);
            } else {
                if self.cluster.pid(node).is_some() {
                    self.note(format!("node {node} found dead"));
                    dead.push(node);
                    self.cluster.kill(node);
                }
                self.note(format!("restart node {node}"));
                self.cluster.spawn(node);
            }
        }
        self.note("healed".into());
        dead
    }
}

/// How long a membership step may wait for a leader, a commit or a learner to catch up.
const MEMBER_PATIENCE: Duration = Duration::from_secs(10);

impl Nemesis<'_> {
    /// Grow and shrink: a new node (the next unused id, on a free port, its links direct rather
    /// than through the proxy) starts with `--join`, is added as a learner, promoted once
    /// caught up, held as a voter for a while (other nodes keep serving), then removed and
    /// stopped. Not with TLS (the joiner would need a certificate of its own).
    fn grow_and_shrink(&mut self) {
        if self.cluster.tls_dir.is_some() {
            self.note("grow and shrink: skipped (TLS)".into());
            return;
        }
        let id = self.next_joiner.max(self.cluster.len());
        self.next_joiner = id + 1;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_ports(1)[0]));
        let via = self.rng.gen_range(0..self.cluster.len());
        self.note(format!("grow: node {id} at {addr} joins via node {via}"));
        let dir = self.cluster.dir.path().join(format!("joiner-{id}"));
        let log = std::fs::File::create(self.cluster.dir.path().join(format!("joiner-{id}.log")))
            .expect("joiner log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_server"))
            .arg(id.to_string())
            .args(["--join", &self.cluster.addrs[via].to_string()])
            .args([
                "--bind",
                &addr.to_string(),
                "--data-dir",
                dir.to_str().unwrap(),
            ])
            .args(FAST_TIMING)
            .args(["--request-timeout-ms", "2000", "--msg-rate", "0"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("joiner log"))
            .stderr(log)
            .spawn()
            .expect("spawn the joining node");
        self.joiner = Some(child);
        let added = self.on_leader(&format!("add {id} {addr}"), &["not committed"]);
        self.note(format!("add {id}: {added}"));
        if added.starts_with("ack") {
            let promoted = self.on_leader(
                &format!("promote {id}"),
                &["not caught up", "not committed"],
            );
            self.note(format!("promote {id}: {promoted}"));
            if !promoted.starts_with("ack") {
                let log = std::fs::read_to_string(
                    self.cluster.dir.path().join(format!("joiner-{id}.log")),
                )
                .unwrap_or_default();
                for line in log
                    .lines()
                    .rev()
                    .take(12)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    self.note(format!("  joiner {id}: {line}"));
                }
            }
            self.hold(300, 1500);
        }
        // Removed whatever happened above (a learner, a voter, or an add that may still commit).
        let removed = self.on_leader(&format!("remove {id}"), &["not committed", "timeout"]);
        self.note(format!("shrink: remove {id}: {removed}"));
        self.stop_joiner();
    }

    /// Kills the joining node, if one runs.
    fn stop_joiner(&mut self) {
        if let Some(mut child) = self.joiner.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.note("joining node stopped".into());
        }
    }

    /// Runs `line` on the leader, again while there is none, it is not the leader any more, or
    /// the answer contains one of `retry`, for up to `MEMBER_PATIENCE`; the last answer.
    fn on_leader(&mut self, line: &str, retry: &[&str]) -> String {
        let deadline = Instant::now() + MEMBER_PATIENCE;
        let mut last = "no answer".to_string();
        while Instant::now() < deadline {
            let answer = self.leader().and_then(|leader| {
                let mut client = Client::try_connect(self.cluster.addrs.get(leader).copied()?)?;
                client.set_read_timeout(Duration::from_secs(3)).ok()?;
                client.command(line).ok().map(|r| r.final_line)
            });
            if let Some(answer) = answer {
                let again =
                    answer.contains("not leader") || retry.iter().any(|r| answer.contains(r));
                if !again {
                    return answer;
                }
                last = answer;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        last
    }
}
