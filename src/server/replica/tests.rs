//! The replica driver in-process, without sockets: elections, durability before acknowledgement,
//! restart from the log and from a snapshot, and a snapshot shipped to a lagging follower.
//! Three replicas talk through a test "network" that is just a queue of values.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Poll, Token, Waker};

use super::{Event, Output, Replica, ReplicaOptions};
use crate::chat::{Command, Op, Origin, Outcome};
use crate::raft::{Message, NodeId, Role};
use crate::storage::FsyncPolicy;
use crate::wire::{self, PeerFrame};

/// Loop turns a test waits for a condition (each turn ticks every replica once).
const TURNS_MAX: usize = 5_000;

fn options(dir: &std::path::Path, id: NodeId, count: u64) -> ReplicaOptions {
    ReplicaOptions {
        id,
        voters: (0..count).collect(),
        bootstrap: (0..count)
            .map(|id| {
                (
                    id,
                    std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + id as u16)),
                )
            })
            .collect(),
        data_dir: dir.join(format!("node-{id}")),
        cluster_id: 0xc1,
        fsync: FsyncPolicy::Always,
        wal_segment_bytes: 1 << 20,
        election_timeout_ms: 100,
        heartbeat_ms: 10,
        snapshot_entries: 0,
        log_keep_entries: 10,
        retain_messages: 0,
        memory_budget_mib: 256,
    }
}

/// A replica with the poller its waker belongs to (kept alive, never polled: the tests wait
/// for fsyncs explicitly with `wait_for_syncs`).
struct Harness {
    replica: Replica,
    _poll: Poll,
}

fn open(opts: ReplicaOptions) -> Harness {
    let poll = Poll::new().expect("poller");
    let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
    let replica = Replica::open(opts, waker).expect("replica opens");
    Harness {
        replica,
        _poll: poll,
    }
}

fn post(node: NodeId, req: u64, text: &str) -> Vec<u8> {
    let command = Command {
        origin: Origin { node, req },
        timestamp_ms: 1,
        session: None,
        op: Op::Post {
            room: "general".into(),
            nick: "tester".into(),
            text: text.into(),
        },
    };
    let mut data = Vec::new();
    command.encode(&mut data);
    data
}

/// One turn of one replica: drive, then wait for its fsyncs so the next turn sees them.
fn turn(r: &mut Replica, out: &mut Output) {
    r.drive(out).expect("drive");
    r.wait_for_syncs(out).expect("syncs");
    r.drive(out).expect("drive");
}

fn applied_positions(out: &Output) -> Vec<u64> {
    out.events
        .iter()
        .filter_map(|e| match e {
            Event::Applied { applied, .. } => match applied.outcome {
                Outcome::Posted { position } => Some(position),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn elect_single(r: &mut Replica) {
    let mut out = Output::default();
    for _ in 0..TURNS_MAX {
        r.tick();
        turn(r, &mut out);
        if r.role() == Role::Leader {
            return;
        }
    }
    panic!("a single-node cluster elects itself");
}

#[test]
fn a_single_replica_applies_its_proposals_and_keeps_them_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut h = open(options(dir.path(), 0, 1));
    elect_single(&mut h.replica);
    let mut out = Output::default();
    for i in 0..20 {
        h.replica
            .propose(&post(0, i, &format!("m{i}")))
            .expect("leader");
    }
    for _ in 0..TURNS_MAX {
        turn(&mut h.replica, &mut out);
        if h.replica.sm().message_count() == 20 {
            break;
        }
    }
    assert_eq!(applied_positions(&out), (1..=20).collect::<Vec<_>>());
    let commit = h.replica.commit_index();
    drop(h);

    let h = open(options(dir.path(), 0, 1));
    assert_eq!(h.replica.term(), h.replica.status().term);
    assert!(h.replica.status().last_index >= commit, "the log survived");
    assert_eq!(
        h.replica.role(),
        Role::Follower,
        "a restart starts as follower"
    );
}

#[test]
fn a_ready_that_only_moves_the_commit_index_costs_no_fdatasync() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut h = open(options(dir.path(), 0, 1));
    elect_single(&mut h.replica);
    let mut out = Output::default();
    let jobs_before = h.replica.stats().sync_jobs;
    // One entry at a time, as one closed-loop client sends: each entry is written and synced,
    // and the Ready that then commits it (a new commit index, same term and vote) is not.
    for i in 0..20u64 {
        h.replica.propose(&post(0, i, "one")).expect("leader");
        for _ in 0..TURNS_MAX {
            turn(&mut h.replica, &mut out);
            if h.replica.sm().message_count() == i + 1 {
                break;
            }
        }
        assert_eq!(h.replica.sm().message_count(), i + 1, "entry {i} applied");
    }
    assert_eq!(
        h.replica.stats().sync_jobs - jobs_before,
        20,
        "one fdatasync per entry, none for the commit index"
    );
    // The commit index still reaches the disk, riding with the next write: a restart after
    // more entries applies without a leader up to at least the earlier commits.
    let commit = h.replica.commit_index();
    h.replica.propose(&post(0, 99, "last")).expect("leader");
    turn(&mut h.replica, &mut out);
    drop(h);
    let mut h = open(options(dir.path(), 0, 1));
    turn(&mut h.replica, &mut Output::default());
    assert!(
        h.replica.sm().message_count() >= commit - 1,
        "a restart applies the persisted commit index (commit {commit}, applied {})",
        h.replica.sm().message_count()
    );
}

#[test]
fn a_snapshot_compacts_the_log_and_a_restart_loads_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut opts = options(dir.path(), 0, 1);
    opts.snapshot_entries = 50;
    let mut h = open(opts.clone());
    elect_single(&mut h.replica);
    let mut out = Output::default();
    for i in 0..120 {
        h.replica.propose(&post(0, i, "x")).expect("leader");
        turn(&mut h.replica, &mut out);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.replica.snapshot().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        turn(&mut h.replica, &mut out);
    }
    let snapshot = h
        .replica
        .snapshot()
        .expect("a snapshot was taken and compacted");
    assert!(snapshot.index >= 50);
    assert!(h.replica.first_index() > 1, "the log was compacted");
    drop(h);

    let mut h = open(opts);
    // The snapshot seen above, or a newer one: collecting the first may have started the
    // next (120 entries applied, one every 50), and its writer may finish before the drop.
    let loaded = h.replica.snapshot().expect("restart loads a snapshot");
    assert!(
        loaded.index >= snapshot.index,
        "{loaded:?} older than {snapshot:?}"
    );
    assert!(h.replica.sm().message_count() as u64 >= loaded.index - 1);
    elect_single(&mut h.replica);
    for _ in 0..TURNS_MAX {
        turn(&mut h.replica, &mut out);
        if h.replica.sm().message_count() == 120 {
            break;
        }
    }
    assert_eq!(
        h.replica.sm().message_count(),
        120,
        "snapshot plus log replay"
    );
}

/// Three replicas and the messages between them. `cut` nodes neither send nor receive.
struct Cluster {
    nodes: Vec<Harness>,
    outs: Vec<Output>,
    wire: VecDeque<Message>,
    cut: Vec<bool>,
}

impl Cluster {
    fn new(dir: &std::path::Path, adjust: impl Fn(&mut ReplicaOptions)) -> Cluster {
        let nodes = (0..3)
            .map(|id| {
                let mut opts = options(dir, id, 3);
                adjust(&mut opts);
                open(opts)
            })
            .collect();
        Cluster {
            nodes,
            outs: (0..3).map(|_| Output::default()).collect(),
            wire: VecDeque::new(),
            cut: vec![false; 3],
        }
    }

    fn step(&mut self) {
        for (i, h) in self.nodes.iter_mut().enumerate() {
            h.replica.tick();
            turn(&mut h.replica, &mut self.outs[i]);
            for msg in self.outs[i].messages.drain(..) {
                if !self.cut[i] {
                    self.wire.push_back(msg);
                }
            }
        }
        while let Some(msg) = self.wire.pop_front() {
            let to = msg.to as usize;
            // Messages to a member not run here (a learner added by a test) are lost.
            if to < self.nodes.len() && !self.cut[to] {
                self.nodes[to].replica.step(msg);
            }
        }
        self.ship_snapshots();
    }

    /// Snapshot chunks from every leader, decoded as the peer front-end would.
    fn ship_snapshots(&mut self) {
        for from in 0..3 {
            let mut frames: Vec<(NodeId, Vec<u8>)> = Vec::new();
            let cut = self.cut.clone();
            self.nodes[from]
                .replica
                .pump_snapshots(Instant::now(), |to, encode| {
                    if cut.get(to as usize).is_none_or(|c| *c) || cut[from] {
                        return false;
                    }
                    let mut buf = Vec::new();
                    encode(&mut buf);
                    frames.push((to, buf));
                    true
                });
            let mut queue: VecDeque<(usize, usize, Vec<u8>)> = frames
                .into_iter()
                .map(|(to, buf)| (from, to as usize, buf))
                .collect();
            while let Some((sender, to, buf)) = queue.pop_front() {
                if self.cut[to] || self.cut[sender] {
                    continue;
                }
                if let Some(reply) = self.deliver(sender, to, &buf) {
                    queue.push_back((to, sender, reply));
                }
            }
        }
    }

    /// Delivers one peer frame from `from` to `to`, as the peer front-end would; the frame sent
    /// back on the link, if any.
    fn deliver(&mut self, from: usize, to: usize, buf: &[u8]) -> Option<Vec<u8>> {
        let (frame, _) = wire::decode_peer_frame(buf).expect("valid").expect("whole");
        let sender = from as NodeId;
        let node = &mut self.nodes[to].replica;
        match frame {
            PeerFrame::SnapshotChunk {
                term,
                snapshot,
                total_len,
                offset,
                data,
            } => {
                let received =
                    node.on_snapshot_chunk(sender, term, snapshot, total_len, offset, data);
                self.nodes[from]
                    .replica
                    .on_snapshot_ack(to as NodeId, snapshot, received);
                None
            }
            PeerFrame::HistoryRequest {
                snapshot,
                from_position,
                through,
            } => {
                let mut out = Vec::new();
                node.on_history_request(sender, snapshot, from_position, through, &mut out);
                Some(out)
            }
            PeerFrame::HistoryPage {
                snapshot,
                first_position,
                count,
                messages,
            } => {
                node.on_history_page(sender, snapshot, first_position, count, messages);
                None
            }
            PeerFrame::HistoryRefused {
                snapshot,
                from_position,
                reason,
            } => {
                node.on_history_refused(sender, snapshot, from_position, reason);
                None
            }
            other => panic!("pump sends only snapshot and history frames, not {other:?}"),
        }
    }

    fn leader(&self) -> Option<usize> {
        (0..3).find(|&i| !self.cut[i] && self.nodes[i].replica.role() == Role::Leader)
    }

    fn until(&mut self, what: &str, done: impl Fn(&Cluster) -> bool) {
        for _ in 0..TURNS_MAX {
            if done(self) {
                return;
            }
            self.step();
        }
        let states: Vec<String> = self
            .nodes
            .iter()
            .map(|h| format!("{:?}", h.replica.status()))
            .collect();
        panic!("timed out waiting for {what}: {states:#?}");
    }
}

#[test]
fn three_replicas_elect_replicate_and_catch_a_lagging_follower_up_by_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = Cluster::new(dir.path(), |opts| {
        opts.snapshot_entries = 40;
        opts.log_keep_entries = 5;
    });
    c.until("a leader", |c| c.leader().is_some());
    let leader = c.leader().expect("leader");
    let lagging = (leader + 1) % 3;
    c.cut[lagging] = true;
    for i in 0..150 {
        let data = post(leader as NodeId, i, "hello");
        c.nodes[leader]
            .replica
            .propose(&data)
            .expect("still leader");
        c.step();
    }
    c.until("the leader to compact past the lagging node", |c| {
        c.nodes[leader].replica.first_index() > 10
    });
    c.cut[lagging] = false;
    c.until("the lagging node to catch up", |c| {
        c.nodes[lagging].replica.sm().message_count() == 150
    });
    assert!(
        c.outs[lagging]
            .events
            .iter()
            .any(|e| matches!(e, Event::SnapshotInstalled(_))),
        "it caught up through a snapshot, not the log"
    );
    // The v5 snapshot left the messages to the store: the lagging node fetched them.
    let fetched = c.nodes[lagging].replica.stats().history_fetched_bytes;
    assert!(
        c.nodes[lagging].replica.stats().history_fetched_pages > 0 && fetched > 0,
        "the history came in pages"
    );
    let served: u64 = (0..3)
        .map(|i| c.nodes[i].replica.stats().history_served_bytes)
        .sum();
    assert!(served >= fetched, "served {served}, fetched {fetched}");
    let leader_log: Vec<String> = c.nodes[leader]
        .replica
        .sm()
        .messages_from(1)
        .map(|m| m.text.clone())
        .collect();
    let lagging_log: Vec<String> = c.nodes[lagging]
        .replica
        .sm()
        .messages_from(1)
        .map(|m| m.text.clone())
        .collect();
    assert_eq!(leader_log, lagging_log);
}

#[test]
fn a_follower_learns_the_members_and_their_addresses_from_the_snapshot_it_installs() {
    use crate::raft::ConfChange;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = Cluster::new(dir.path(), |opts| {
        opts.snapshot_entries = 40;
        opts.log_keep_entries = 5;
    });
    c.until("a leader", |c| c.leader().is_some());
    let leader = c.leader().expect("leader");
    let lagging = (leader + 1) % 3;
    c.cut[lagging] = true;
    c.until("the leader's term to commit", |c| {
        c.nodes[leader].replica.commit_index() >= 1
            && c.nodes[leader].replica.sm().applied_index() >= 1
    });
    let learner: std::net::SocketAddr = "127.0.0.1:7007".parse().unwrap();
    c.nodes[leader]
        .replica
        .propose_conf_change(ConfChange::AddLearner(7), learner.to_string().as_bytes())
        .expect("the leader takes the change");
    for i in 0..150 {
        let data = post(leader as NodeId, i, "hello");
        c.nodes[leader]
            .replica
            .propose(&data)
            .expect("still leader");
        c.step();
    }
    c.until("the leader to compact past the change", |c| {
        c.nodes[leader].replica.first_index() > 10
    });
    assert!(
        c.nodes[lagging].replica.sm().members().get(7).is_none(),
        "the lagging node has not heard of the change"
    );
    c.cut[lagging] = false;
    c.until("the lagging node to catch up", |c| {
        c.nodes[lagging].replica.sm().message_count() == 150
    });
    assert!(c.outs[lagging]
        .events
        .iter()
        .any(|e| matches!(e, Event::SnapshotInstalled(_))));
    let follower = &c.nodes[lagging].replica;
    assert_eq!(
        follower.sm().members().get(7).and_then(|m| m.addr),
        Some(learner)
    );
    assert!(
        follower.membership().is_learner(7),
        "the core took the snapshot's configuration"
    );
    assert_eq!(follower.member_addr(7), Some(learner));
    assert!(follower.peer_addrs().contains(&(7, learner)));
    // A restart loads the members from the snapshot file.
    let opts = follower.opts.clone();
    let Cluster { nodes, .. } = c;
    drop(nodes);
    let restarted = open(opts);
    assert!(restarted.replica.membership().is_learner(7));
    assert_eq!(restarted.replica.member_addr(7), Some(learner));
}
