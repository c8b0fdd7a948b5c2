//! Throughput of the pure Raft core: a 3-node cluster driven in memory (no IO, no clock), the
//! leader proposing 100-byte entries in batches. One iteration = one batch proposed, replicated,
//! acknowledged, committed and applied on the leader. Reported as committed entries per second.
//!
//! Run: `cargo bench --bench raft_core`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raftchat::raft::{Config, Message, Persisted, Raft, Role};
use std::time::{Duration, Instant};

const ENTRY_BYTES: usize = 100;
/// Rebuild the cluster (untimed) after this many entries so the in-memory logs stay small.
const ENTRIES_PER_CLUSTER: u64 = 500_000;

struct Cluster {
    nodes: Vec<Raft>,
    leader: usize,
    /// Reused between turns: messages on the wire.
    wire: Vec<Message>,
    committed_on_leader: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let voters = vec![0, 1, 2];
        let nodes = voters
            .iter()
            .map(|&id| {
                let config = Config::new(id, voters.clone());
                Raft::new(config, Persisted::default(), 1000 + id)
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            leader: 0,
            wire: Vec::new(),
            committed_on_leader: 0,
        };
        while !cluster.nodes.iter().any(|n| n.role() == Role::Leader) {
            for node in &mut cluster.nodes {
                node.tick();
            }
            cluster.drive();
        }
        cluster.leader = cluster
            .nodes
            .iter()
            .position(|n| n.role() == Role::Leader)
            .unwrap();
        cluster
    }

    /// Runs driver turns and delivers messages until the cluster is quiet. Every Ready is
    /// "persisted" instantly: advance right after taking it.
    fn drive(&mut self) {
        loop {
            let mut moved = false;
            for (i, node) in self.nodes.iter_mut().enumerate() {
                if !node.has_ready() {
                    continue;
                }
                moved = true;
                let mut rd = node.ready();
                self.wire.append(&mut rd.messages);
                self.wire.append(&mut rd.persisted_messages);
                node.advance(rd.number);
                if i == self.leader {
                    self.committed_on_leader += rd.committed_entries.len() as u64;
                }
            }
            for msg in self.wire.drain(..) {
                moved = true;
                let to = msg.to as usize;
                self.nodes[to].step(msg);
            }
            if !moved {
                return;
            }
        }
    }

    /// Proposes `batch` entries and drives until all are committed on the leader.
    fn round(&mut self, batch: u64, payload: &[u8]) {
        let target = self.committed_on_leader + batch;
        let leader = &mut self.nodes[self.leader];
        for _ in 0..batch {
            leader.propose(payload).expect("leader");
        }
        while self.committed_on_leader < target {
            self.drive();
        }
    }
}

fn bench_throughput(c: &mut Criterion) {
    let payload = [7u8; ENTRY_BYTES];
    let mut group = c.benchmark_group("raft_core_3_nodes");
    for batch in [64u64, 1024] {
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(
            BenchmarkId::new("commit_100B_entries", batch),
            &batch,
            |b, &batch| {
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    let mut cluster = Cluster::new();
                    let mut entries_in_cluster = 0;
                    for _ in 0..iters {
                        if entries_in_cluster >= ENTRIES_PER_CLUSTER {
                            cluster = Cluster::new();
                            entries_in_cluster = 0;
                        }
                        let start = Instant::now();
                        cluster.round(batch, &payload);
                        elapsed += start.elapsed();
                        entries_in_cluster += batch;
                    }
                    elapsed
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_throughput);
criterion_main!(benches);
