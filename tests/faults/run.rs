//! One fault run end to end: a cluster behind the proxy, the workload, the nemesis, healing,
//! the recovery bound, the final logs, the checker, and the report when something is wrong.
//!
//! Owns the order of those steps and what a failure prints (seed, fault schedule, offending
//! operations, the kept temp dir). It never decides what is correct: the checker does.

use std::time::{Duration, Instant};

use super::checker::{check, Entry, Op, OpKind, Violation, WriteOutcome};
use super::nemesis::Nemesis;
use super::proxy::Proxy;
use super::workload::{since_us, telnet_post, telnet_read, Workload};
use crate::common::{Client, Cluster};

/// After healing, every node must acknowledge a write within this long (elections take
/// 400–800 ms here; restarted nodes back off reconnecting for up to 2 s; the machine is small).
pub const RECOVERY_BOUND: Duration = Duration::from_secs(20);
/// Server flags for fault runs: a snapshot every 400 applied entries, 40 kept before it.
pub const SNAPSHOT_OFTEN: [&str; 4] = ["--snapshot-entries", "400", "--log-keep-entries", "40"];
/// How long the final `get chatLog` of each node may keep failing.
const FINAL_READ_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub seed: u64,
    pub nodes: usize,
    pub fault_time: Duration,
    pub telnet_clients: usize,
    pub binary_clients: usize,
    /// WebSocket clients (`ws_client.rs`): posts and `#general` history reads.
    pub ws_clients: usize,
    /// Peers speak mutual TLS (clients stay plain: `--client-tls optional`).
    pub tls: bool,
}

/// A cluster whose peer links all pass through a proxy. Fields drop in order: the nodes are
/// killed before the proxy stops.
pub struct Harness {
    pub cluster: Cluster,
    pub proxy: Proxy,
    pub t0: Instant,
}

impl Harness {
    /// Starts `nodes` nodes behind a proxy and waits for a leader. The temp dir is kept until
    /// [`Harness::passed`] (so a failure or a panic leaves logs and data behind).
    pub fn start(nodes: usize) -> Harness {
        Harness::start_with(nodes, &[])
    }

    /// [`Harness::start`] with extra server arguments (a test-only mode, say).
    pub fn start_with(nodes: usize, extra_args: &[&str]) -> Harness {
        Harness::start_full(nodes, extra_args, false)
    }

    /// With `tls`, the peers speak mutual TLS through the proxy (which reads none of it).
    pub fn start_full(nodes: usize, extra_args: &[&str], tls: bool) -> Harness {
        let proxy = Proxy::new(nodes);
        // Closed-loop telnet clients may post faster than the default per-connection rate.
        // Every node names its peers by its own proxy listeners, so the cluster id comes from
        // a shared token rather than from the (different) member lists.
        let args: Vec<&str> = [
            "--request-timeout-ms",
            "2000",
            "--msg-rate",
            "0",
            "--cluster-token",
            "fault-suite",
        ]
        .into_iter()
        .chain(extra_args.iter().copied())
        .collect();
        let mut cluster = Cluster::with_members(proxy.listen[0].clone(), &args);
        cluster.set_peer_lists(proxy.listen.clone());
        if tls {
            cluster.use_tls();
        }
        cluster.dir.disable_cleanup(true);
        proxy.set_targets(&cluster.addrs);
        for id in 0..nodes {
            cluster.spawn(id);
        }
        let all: Vec<usize> = (0..nodes).collect();
        cluster.wait_leader(&all);
        Harness {
            cluster,
            proxy,
            t0: Instant::now(),
        }
    }

    pub fn passed(&mut self) {
        self.cluster.dir.disable_cleanup(false);
    }

    /// Posts one probe through every node until each acknowledges, within `RECOVERY_BOUND`
    /// of `healed_at`; the probes join the history. Returns how long recovery took.
    pub fn probe_every_node(
        &self,
        seed: u64,
        healed_at: Instant,
        history: &mut Vec<Op>,
    ) -> Result<Duration, String> {
        for node in 0..self.cluster.len() {
            let mut attempt = 0;
            loop {
                if healed_at.elapsed() > RECOVERY_BOUND {
                    return Err(format!(
                        "node {node} acknowledged no write within {RECOVERY_BOUND:?} of healing"
                    ));
                }
                attempt += 1;
                let text = format!("s{seed}-probe{node}-{attempt}");
                let start_us = since_us(self.t0);
                let Some(mut client) = Client::try_connect(self.cluster.addrs[node]) else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let _ = client.set_read_timeout(Duration::from_secs(5));
                let (outcome, _) = telnet_post(&mut client, &text);
                let acked = matches!(outcome, WriteOutcome::Acked(_));
                history.push(Op {
                    client: usize::MAX,
                    node,
                    start_us,
                    end_us: since_us(self.t0),
                    kind: OpKind::Write {
                        text,
                        binary: false,
                        outcome,
                    },
                });
                if acked {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(healed_at.elapsed())
    }

    /// Every node's chat log (linearizable reads, retried until they succeed).
    pub fn final_logs(&self) -> Result<Vec<Vec<Entry>>, String> {
        let deadline = Instant::now() + FINAL_READ_DEADLINE;
        let mut logs = Vec::new();
        for node in 0..self.cluster.len() {
            loop {
                if Instant::now() > deadline {
                    return Err(format!("node {node} served no chat log"));
                }
                if let Some(mut client) = Client::try_connect(self.cluster.addrs[node]) {
                    let _ = client.set_read_timeout(Duration::from_secs(10));
                    match telnet_read(&mut client) {
                        Ok(Ok(Some(log))) => {
                            logs.push(log);
                            break;
                        }
                        Ok(Err(what)) => return Err(format!("node {node}: malformed: {what}")),
                        _ => {}
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(logs)
    }

    /// Prints everything needed to replay and study a failed run, then panics.
    pub fn fail(&self, cfg: &RunConfig, schedule: &[String], violations: &[Violation]) -> ! {
        eprintln!("==== fault run FAILED: {cfg:?}");
        eprintln!(
            "replay: FAULT_SEEDS={} FAULT_NODES={} cargo test --release --test faults -- --nocapture",
            cfg.seed, cfg.nodes
        );
        eprintln!("---- fault schedule ----");
        for line in schedule {
            eprintln!("{line}");
        }
        eprintln!("---- {} violation(s) (first 40) ----", violations.len());
        for v in violations.iter().take(40) {
            eprintln!("{v}");
        }
        eprintln!(
            "---- logs and data kept in {} ----",
            self.cluster.dir.path().display()
        );
        panic!(
            "seed {}: {} violation(s), first: {}",
            cfg.seed,
            violations.len(),
            violations[0]
        );
    }
}

/// What a passing run did, for the test's output.
#[derive(Debug)]
pub struct Summary {
    pub acked: usize,
    pub not_stored: usize,
    pub unknown: usize,
    pub reads: usize,
    /// Of those, by the WebSocket clients: acknowledged posts and `history` reads.
    pub ws_acked: usize,
    pub ws_reads: usize,
    pub final_len: usize,
    pub faults: usize,
    pub recovery: Duration,
    /// From the nodes' logs: snapshots written, installed from a leader, loaded at a restart.
    pub snapshots_taken: usize,
    pub snapshots_installed: usize,
    pub snapshot_restarts: usize,
    /// Acknowledged writes of the clients that posted logged in to an account.
    pub logged_in_acked: usize,
    /// Nodes whose log says they started with their peer links over mutual TLS.
    pub tls_nodes: usize,
}

/// Runs `cfg` and checks it; panics with the full report when a rule is broken.
pub fn fault_run(cfg: &RunConfig) -> Summary {
    println!("fault run {cfg:?}");
    // Snapshot and compact every few hundred entries, so faults also hit snapshot writes, log
    // compaction, restarts from a snapshot and followers caught up through InstallSnapshot.
    let mut harness = Harness::start_full(cfg.nodes, &SNAPSHOT_OFTEN, cfg.tls);
    let t0 = harness.t0;
    let mut workload = Workload::start(
        &harness.cluster.addrs,
        t0,
        cfg.seed,
        cfg.telnet_clients,
        cfg.binary_clients,
    );
    workload.add_ws_clients(
        &harness.cluster.addrs,
        t0,
        cfg.seed,
        cfg.telnet_clients + cfg.binary_clients,
        cfg.ws_clients,
    );
    let (schedule, dead) = {
        let mut nemesis = Nemesis::new(&mut harness.cluster, &harness.proxy, cfg.seed, t0);
        nemesis.run_for(cfg.fault_time);
        let dead = nemesis.heal();
        (nemesis.schedule, dead)
    };
    let healed_at = Instant::now();
    let mut violations: Vec<Violation> = dead
        .iter()
        .map(|node| Violation {
            rule: "no node exits on its own",
            detail: format!("node {node} was found dead when healing (see its log)"),
        })
        .collect();
    let mut history = Vec::new();
    let recovery = harness.probe_every_node(cfg.seed, healed_at, &mut history);
    history.extend(workload.finish());
    let recovery = match recovery {
        Ok(took) => took,
        Err(why) => {
            violations.push(Violation {
                rule: "the cluster serves again within RECOVERY_BOUND of healing",
                detail: why,
            });
            RECOVERY_BOUND
        }
    };
    match harness.final_logs() {
        Ok(logs) => violations.extend(check(&history, &logs)),
        Err(why) => violations.push(Violation {
            rule: "every node serves its log after healing",
            detail: why,
        }),
    }
    if !violations.is_empty() {
        harness.fail(cfg, &schedule, &violations);
    }
    let mut summary = Summary {
        acked: 0,
        not_stored: 0,
        unknown: 0,
        reads: 0,
        ws_acked: 0,
        ws_reads: 0,
        final_len: 0,
        faults: schedule.len(),
        recovery,
        snapshots_taken: 0,
        snapshots_installed: 0,
        snapshot_restarts: 0,
        logged_in_acked: super::workload::logged_in_acks(&history),
        tls_nodes: 0,
    };
    for node in 0..harness.cluster.len() {
        let log = std::fs::read_to_string(harness.cluster.log_path(node)).unwrap_or_default();
        let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
        summary.snapshots_taken += count("durable (");
        summary.snapshots_installed += count("installed snapshot at index");
        summary.snapshot_restarts += count("loaded snapshot at index");
        summary.tls_nodes += usize::from(count("peers over mutual TLS") > 0);
    }
    let first_ws = cfg.telnet_clients + cfg.binary_clients;
    for op in &history {
        let ws = (first_ws..first_ws + cfg.ws_clients).contains(&op.client);
        match &op.kind {
            OpKind::Write {
                outcome: WriteOutcome::Acked(_),
                ..
            } if ws => summary.ws_acked += 1,
            OpKind::Read { .. } if ws => summary.ws_reads += 1,
            _ => {}
        }
        match &op.kind {
            OpKind::Write { outcome, .. } => match outcome {
                WriteOutcome::Acked(p) => {
                    summary.acked += 1;
                    summary.final_len = summary.final_len.max(*p as usize);
                }
                WriteOutcome::NotStored(_) => summary.not_stored += 1,
                WriteOutcome::Unknown(_) => summary.unknown += 1,
            },
            OpKind::Read { .. } => summary.reads += 1,
            OpKind::Broken { .. } => {}
        }
    }
    for line in &schedule {
        println!("  {line}");
    }
    println!("seed {} passed: {summary:?}", cfg.seed);
    harness.passed();
    summary
}
