//! Scenario tests of the Raft core on a small in-memory network.
//!
//! The network drives every node the way a real driver does: `ready()`, "persist" the entries and
//! hard state to an in-memory disk, send `messages` and (after persisting) `persisted_messages`,
//! `advance()`, apply `committed_entries`. Links can be cut, messages filtered or rewritten,
//! nodes crashed and restarted from exactly what their disk holds. A global checker records every
//! applied entry and flags two nodes applying different entries at one index.

use super::*;
use std::collections::{BTreeMap, HashSet, VecDeque};

type Filter = Box<dyn FnMut(&mut Message) -> bool>;

struct Node {
    raft: Raft,
    /// When false, a Ready's writes wait in `unsynced` for `sync` (a slow disk).
    sync_immediately: bool,
    /// Readies handed out but not yet durable, oldest first. A crash loses them.
    unsynced: VecDeque<PendingWrite>,
}

/// The part of a Ready that waits for the disk.
struct PendingWrite {
    number: u64,
    /// A snapshot to install (replacing the disk's log) before the entries are written, with
    /// the configuration it carries.
    snapshot: Option<(SnapshotMeta, Membership)>,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
    persisted_messages: Vec<Message>,
}

struct Network {
    configs: BTreeMap<NodeId, Config>,
    nodes: BTreeMap<NodeId, Option<Node>>,
    disks: BTreeMap<NodeId, Persisted>,
    queue: VecDeque<Message>,
    /// Directed links that drop everything.
    cut: HashSet<(NodeId, NodeId)>,
    /// Sees (and may rewrite) every message sent; returning false drops it.
    filter: Option<Filter>,
    /// Entries applied by any node, by index: the State Machine Safety checker.
    applied_by_index: BTreeMap<Index, Entry>,
    /// For each applied index, the highest term any node had when it was first applied: the
    /// entry was committed in a term no higher, so every leader of a later term must hold it.
    committed_by_term: BTreeMap<Index, Term>,
    applied: BTreeMap<NodeId, Vec<Entry>>,
    /// The next index each node must apply (after a snapshot: the snapshot's index + 1).
    next_apply: BTreeMap<NodeId, Index>,
    /// Snapshots installed from a leader, per node.
    installs: BTreeMap<NodeId, Vec<SnapshotMeta>>,
    violations: Vec<String>,
    read_states: BTreeMap<NodeId, Vec<ReadState>>,
    read_failures: BTreeMap<NodeId, Vec<ReadFailure>>,
    seed: u64,
    /// Whether (re)started nodes sync each Ready at once.
    sync_immediately: bool,
}

impl Network {
    fn new(count: u64, configure: impl Fn(&mut Config)) -> Network {
        let persisted = (0..count).map(|_| Persisted::default()).collect();
        Network::with_state(count, persisted, configure)
    }

    fn with_state(
        count: u64,
        persisted: Vec<Persisted>,
        configure: impl Fn(&mut Config),
    ) -> Network {
        let voters: Vec<NodeId> = (0..count).collect();
        let mut net = Network {
            configs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: HashSet::new(),
            filter: None,
            applied_by_index: BTreeMap::new(),
            committed_by_term: BTreeMap::new(),
            applied: BTreeMap::new(),
            next_apply: BTreeMap::new(),
            installs: BTreeMap::new(),
            violations: Vec::new(),
            read_states: BTreeMap::new(),
            read_failures: BTreeMap::new(),
            seed: 42,
            sync_immediately: true,
        };
        for (id, disk) in voters.iter().copied().zip(persisted) {
            let mut config = Config::new(id, voters.clone());
            configure(&mut config);
            net.configs.insert(id, config);
            net.disks.insert(id, disk);
            net.nodes.insert(id, None);
            net.restart(id);
        }
        net
    }

    fn raft(&self, id: NodeId) -> &Raft {
        &self.nodes[&id].as_ref().expect("node is down").raft
    }

    fn raft_mut(&mut self, id: NodeId) -> &mut Raft {
        &mut self
            .nodes
            .get_mut(&id)
            .unwrap()
            .as_mut()
            .expect("node is down")
            .raft
    }

    fn crash(&mut self, id: NodeId) {
        self.nodes.insert(id, None);
        self.queue.retain(|m| m.to != id);
    }

    /// Starts (or restarts) `id` from exactly what its disk holds.
    fn restart(&mut self, id: NodeId) {
        self.seed += 1;
        let raft = Raft::new(
            self.configs[&id].clone(),
            self.disks[&id].clone(),
            self.seed,
        );
        self.applied.insert(id, Vec::new());
        let snapshot_index = self.disks[&id].snapshot.map_or(0, |s| s.index);
        self.next_apply.insert(id, snapshot_index + 1);
        self.nodes.insert(
            id,
            Some(Node {
                raft,
                sync_immediately: self.sync_immediately,
                unsynced: VecDeque::new(),
            }),
        );
    }

    fn isolate(&mut self, id: NodeId) {
        for &other in self.configs.keys() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn post(&mut self, mut msg: Message) {
        if self.cut.contains(&(msg.from, msg.to)) {
            return;
        }
        if let Some(filter) = self.filter.as_mut() {
            if !filter(&mut msg) {
                return;
            }
        }
        self.queue.push_back(msg);
    }

    /// One driver turn for `id`, if it is up and has something to do. Returns whether it did.
    fn process_ready(&mut self, id: NodeId) -> bool {
        let Some(node) = self.nodes.get_mut(&id).unwrap().as_mut() else {
            return false;
        };
        let has_ready = node.raft.has_ready();
        let rd = node.raft.ready();
        assert_eq!(
            has_ready,
            !rd.is_empty(),
            "node {id}: has_ready disagrees with ready()"
        );
        if rd.is_empty() {
            return false;
        }
        // (1) messages may leave before anything is durable.
        for msg in rd.messages {
            self.post(msg);
        }
        // (2) the write is issued; it becomes durable at `sync`.
        if let Some(meta) = rd.snapshot {
            // The leader's snapshot replaces this node's state machine now.
            if let Some(entry) = self.applied_by_index.get(&meta.index) {
                if entry.term != meta.term {
                    self.violations.push(format!(
                        "node {id} installed snapshot {meta:?} but term {} was applied there",
                        entry.term
                    ));
                }
            }
            self.next_apply.insert(id, meta.index + 1);
            self.installs.entry(id).or_default().push(meta);
        }
        let node = self.nodes.get_mut(&id).unwrap().as_mut().unwrap();
        let snapshot = rd
            .snapshot
            .map(|meta| (meta, node.raft.snapshot_membership()));
        node.unsynced.push_back(PendingWrite {
            number: rd.number,
            snapshot,
            entries: rd.entries,
            hard_state: rd.hard_state,
            persisted_messages: rd.persisted_messages,
        });
        let sync_now = node.sync_immediately;
        // (5) apply: the core only hands out entries already reported durable.
        let disk = &self.disks[&id];
        for entry in &rd.committed_entries {
            assert!(
                disk_entry(disk, entry.index) == Some(entry),
                "node {id} applied entry {} that is not on its disk",
                entry.index
            );
        }
        self.read_states
            .entry(id)
            .or_default()
            .extend(rd.read_states);
        self.read_failures
            .entry(id)
            .or_default()
            .extend(rd.read_failures);
        for entry in rd.committed_entries {
            self.record_applied(id, entry);
        }
        if sync_now {
            while self.sync_one(id) {}
        }
        true
    }

    /// The oldest unsynced write of `id` becomes durable: (3) its acknowledgements leave and
    /// (4) the core is told. Returns false if there was none.
    fn sync_one(&mut self, id: NodeId) -> bool {
        let Some(node) = self.nodes.get_mut(&id).unwrap().as_mut() else {
            return false;
        };
        let Some(write) = node.unsynced.pop_front() else {
            return false;
        };
        let disk = self.disks.get_mut(&id).unwrap();
        if let Some((meta, membership)) = write.snapshot {
            disk.snapshot = Some(meta);
            disk.membership = Some(membership);
            disk.entries.clear();
        }
        if let Some(first) = write.entries.first() {
            let disk_first = disk_first_index(disk);
            assert!(first.index >= disk_first, "node {id} writes below its log");
            disk.entries.truncate((first.index - disk_first) as usize);
            disk.entries.extend(write.entries);
        }
        if let Some(hs) = write.hard_state {
            disk.hard_state = hs;
        }
        node.raft.advance(write.number);
        for msg in write.persisted_messages {
            self.post(msg);
        }
        true
    }

    fn set_sync_immediately(&mut self, id: NodeId, on: bool) {
        self.nodes
            .get_mut(&id)
            .unwrap()
            .as_mut()
            .unwrap()
            .sync_immediately = on;
    }

    fn record_applied(&mut self, id: NodeId, entry: Entry) {
        let next = self.next_apply.get_mut(&id).unwrap();
        assert_eq!(entry.index, *next, "node {id} applied out of order");
        *next += 1;
        self.applied.get_mut(&id).unwrap().push(entry.clone());
        match self.applied_by_index.get(&entry.index) {
            Some(existing) if *existing != entry => self.violations.push(format!(
                "index {}: node {id} applied term {} but term {} was applied before",
                entry.index, entry.term, existing.term
            )),
            Some(_) => {}
            None => {
                let max_term = self.nodes.values().flatten().map(|n| n.raft.term()).max();
                self.committed_by_term
                    .insert(entry.index, max_term.unwrap_or(0));
                self.applied_by_index.insert(entry.index, entry);
            }
        }
    }

    /// Deliver messages and run driver turns until nothing moves.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            let ids: Vec<NodeId> = self.configs.keys().copied().collect();
            for &id in &ids {
                moved |= self.process_ready(id);
            }
            while let Some(msg) = self.queue.pop_front() {
                moved = true;
                // A node that does not exist (an answer to a forged sender) drops it.
                if let Some(node) = self.nodes.get_mut(&msg.to).and_then(Option::as_mut) {
                    node.raft.step(msg);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("network did not settle");
    }

    fn tick_all(&mut self, ticks: u32) {
        for _ in 0..ticks {
            for node in self.nodes.values_mut().flatten() {
                node.raft.tick();
            }
            self.settle();
        }
    }

    fn tick_one(&mut self, id: NodeId, ticks: u32) {
        for _ in 0..ticks {
            self.raft_mut(id).tick();
            self.settle();
        }
    }

    fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .flatten()
            .filter(|n| n.raft.role() == Role::Leader)
            .map(|n| n.raft.id())
            .collect()
    }

    /// Ticks everyone until exactly one leader exists; returns it.
    fn tick_until_leader(&mut self) -> NodeId {
        for _ in 0..500 {
            self.tick_all(1);
            if let [leader] = self.leaders()[..] {
                return leader;
            }
        }
        panic!("no leader elected");
    }

    /// Makes `id` campaign now (as an election timeout would) and settles.
    fn campaign(&mut self, id: NodeId) {
        let pre_vote = self.configs[&id].pre_vote;
        self.raft_mut(id).campaign(pre_vote);
        self.settle();
    }

    fn propose(&mut self, id: NodeId, data: &[u8]) -> Index {
        self.raft_mut(id).propose(data).expect("propose on leader")
    }

    /// The driver of `id` snapshots its state machine at `index` (applied) and compacts, keeping
    /// entries from `first_kept` in memory and on disk.
    fn compact(&mut self, id: NodeId, index: Index, first_kept: Index) {
        let raft = self.raft_mut(id);
        let meta = SnapshotMeta {
            index,
            term: raft.log_term(index).expect("term known"),
        };
        raft.compact(meta, first_kept);
        let first_kept = raft.first_index();
        let membership = raft.snapshot_membership();
        let disk = self.disks.get_mut(&id).unwrap();
        disk.snapshot = Some(meta);
        disk.membership = Some(membership);
        let drop = first_kept.saturating_sub(disk_first_index(disk)) as usize;
        disk.entries.drain(..drop.min(disk.entries.len()));
    }

    /// A new, empty node `id` (no voters in its bootstrap configuration: it learns its
    /// configuration from the log's first entry or a snapshot once a leader adds it).
    fn add_empty_node(&mut self, id: NodeId, configure: impl Fn(&mut Config)) {
        let mut config = Config::new(id, Vec::new());
        configure(&mut config);
        self.configs.insert(id, config);
        self.disks.insert(id, Persisted::default());
        self.restart(id);
    }

    fn conf_change(&mut self, id: NodeId, change: ConfChange) -> Result<Index, RaftError> {
        let context = format!("node-{}", change.id());
        self.raft_mut(id)
            .propose_conf_change(change, context.as_bytes())
    }

    /// Cuts every link between the two groups, both ways.
    fn split(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.cut.insert((x, y));
                self.cut.insert((y, x));
            }
        }
    }

    fn assert_logs_equal(&self, ids: &[NodeId]) {
        let first = self.raft(ids[0]).entries();
        for &id in &ids[1..] {
            assert_eq!(
                self.raft(id).entries(),
                first,
                "logs of {} and {id} differ",
                ids[0]
            );
        }
    }
}

/// The index of the first entry on `disk` (its snapshot's index + 1 if it holds none).
fn disk_first_index(disk: &Persisted) -> Index {
    disk.entries.first().map_or_else(
        || disk.snapshot.map_or(1, |s| s.index + 1),
        |entry| entry.index,
    )
}

fn disk_entry(disk: &Persisted, index: Index) -> Option<&Entry> {
    let position = index.checked_sub(disk_first_index(disk))?;
    disk.entries.get(position as usize)
}

fn entries_with_terms(terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &term)| Entry::new(term, i as Index + 1, EntryKind::Normal, &[i as u8]))
        .collect()
}

fn persisted(term: Term, voted_for: Option<NodeId>, terms: &[Term]) -> Persisted {
    Persisted {
        hard_state: HardState {
            term,
            voted_for,
            commit: 0,
        },
        snapshot: None,
        entries: entries_with_terms(terms),
        membership: None,
    }
}

// ----- elections ---------------------------------------------------------------------------

fn check_election(count: u64) {
    let mut net = Network::new(count, |_| {});
    let leader = net.tick_until_leader();
    let term = net.raft(leader).term();
    for id in 0..count {
        let raft = net.raft(id);
        assert_eq!(raft.term(), term);
        assert_eq!(raft.leader(), Some(leader));
        // The leader's no-op is committed and applied everywhere.
        assert_eq!(raft.commit_index(), 1);
        assert_eq!(net.applied[&id].len(), 1);
        assert_eq!(net.applied[&id][0].kind, EntryKind::Noop);
    }
    assert!(
        term <= 2,
        "pre-vote keeps the first election cheap (term {term})"
    );
}

#[test]
fn election_in_three_nodes() {
    check_election(3);
}

#[test]
fn election_in_five_nodes() {
    check_election(5);
}

#[test]
fn split_vote_resolves() {
    let mut net = Network::new(4, |c| c.pre_vote = false);
    // 0 and 1 campaign at once; 2 hears only from 0 and 3 only from 1: two votes each.
    net.cut.extend([(0, 3), (1, 2), (0, 1), (1, 0)]);
    net.raft_mut(0).campaign(false);
    net.raft_mut(1).campaign(false);
    net.settle();
    assert!(net.leaders().is_empty(), "a 2-2 split elects nobody");
    assert_eq!(net.raft(0).role(), Role::Candidate);
    assert_eq!(net.raft(1).role(), Role::Candidate);
    net.heal();
    let leader = net.tick_until_leader();
    assert!(net.raft(leader).term() >= 2);
    for id in 0..4 {
        assert_eq!(net.raft(id).leader(), Some(leader));
    }
}

#[test]
fn one_vote_per_term_survives_restart() {
    let mut net = Network::new(3, |c| c.pre_vote = false);
    net.cut.extend([(0, 1), (1, 0), (1, 2), (2, 1)]);
    net.raft_mut(0).campaign(false);
    net.settle();
    assert_eq!(net.disks[&2].hard_state.voted_for, Some(0));
    // Node 2 restarts from its disk and must not vote for 1 in the same term.
    net.crash(2);
    net.restart(2);
    net.raft_mut(2).step(Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: 5,
            last_log_term: 1,
        },
    });
    let rd = net.raft_mut(2).ready();
    let granted = rd.persisted_messages.iter().any(|m| {
        matches!(
            m.body,
            MessageBody::RequestVoteResponse { granted: true, .. }
        )
    });
    assert!(!granted, "voted twice in term 1");
    assert!(!rd.persisted_messages.is_empty(), "the rejection is sent");
}

#[test]
fn votes_wait_for_durability_and_pre_votes_do_not() {
    let mut net = Network::new(3, |c| c.pre_vote = true);
    net.raft_mut(0).campaign(true);
    let rd = net.raft_mut(0).ready();
    assert_eq!(
        rd.hard_state, None,
        "a pre-candidate changes no persistent state"
    );
    assert_eq!(rd.messages.len(), 2);
    assert!(rd
        .messages
        .iter()
        .all(|m| m.term == 1 && matches!(m.body, MessageBody::RequestVote { pre_vote: true, .. })));
    // A voter answers a pre-vote at once, without changing its state.
    for msg in rd.messages {
        net.raft_mut(msg.to).step(msg);
    }
    let answer = net.raft_mut(1).ready();
    assert_eq!(answer.hard_state, None);
    let _ = net.raft_mut(2).ready(); // its pre-vote answer is not needed
    assert!(matches!(
        answer.messages[..],
        [Message {
            term: 1,
            body: MessageBody::RequestVoteResponse {
                pre_vote: true,
                granted: true
            },
            ..
        }]
    ));
    net.raft_mut(0)
        .step(answer.messages.into_iter().next().unwrap());
    // Pre-vote quorum: now a real candidate, whose requests wait for its durable self-vote.
    let rd = net.raft_mut(0).ready();
    assert_eq!(
        rd.hard_state.map(|h| (h.term, h.voted_for)),
        Some((1, Some(0)))
    );
    assert!(rd.messages.is_empty());
    assert_eq!(rd.persisted_messages.len(), 2);
    for msg in rd.persisted_messages {
        net.raft_mut(msg.to).step(msg);
    }
    // The voter's grant waits for its durable vote too.
    let answer = net.raft_mut(2).ready();
    assert_eq!(
        answer.hard_state.map(|h| (h.term, h.voted_for)),
        Some((1, Some(0)))
    );
    assert!(answer.messages.is_empty());
    assert!(matches!(
        answer.persisted_messages[..],
        [Message {
            body: MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: true
            },
            ..
        }]
    ));
}

// ----- commit safety: Figure 8 -------------------------------------------------------------

/// Figure 8 of the Raft paper, with S1..S5 as nodes 0..4. Returns the network after S5 has won
/// term 5 and replicated its log.
fn figure8(unsafe_commit: bool) -> Network {
    let mut states = vec![
        persisted(2, Some(0), &[1, 2]), // S1: led term 2, wrote index 2
        persisted(2, Some(0), &[1, 2]), // S2: got index 2 of term 2
        persisted(3, Some(4), &[1]),    // S3: voted for S5 in term 3
        persisted(3, Some(4), &[1]),    // S4
        persisted(3, Some(4), &[1, 3]), // S5: led term 3, wrote index 2 of term 3
    ];
    for state in &mut states {
        state.hard_state.commit = 1; // index 1 is committed everywhere
    }
    let mut net = Network::with_state(5, states, |c| {
        c.check_quorum = false;
        c.testing_unsafe_commit_any_term = unsafe_commit;
    });
    net.crash(4);
    // (c) S1 is elected in term 4 and replicates the term-2 entry at index 2 to a majority, but
    // its own no-op (index 3) reaches no one, and it crashes before any commit index leaves.
    net.filter = Some(Box::new(|m: &mut Message| {
        if m.from == 0 {
            match &mut m.body {
                MessageBody::AppendEntries {
                    entries,
                    leader_commit,
                    ..
                } => {
                    entries.retain(|e| e.index < 3);
                    *leader_commit = (*leader_commit).min(1);
                }
                MessageBody::Heartbeat { leader_commit, .. } => {
                    *leader_commit = (*leader_commit).min(1);
                }
                _ => {}
            }
        }
        true
    }));
    net.campaign(0); // rejected by S3/S4 at term 3: S1 learns term 3
    net.campaign(0);
    assert_eq!(net.leaders(), vec![0]);
    assert_eq!(net.raft(0).term(), 4);
    let replicated = (1..4)
        .filter(|&id| net.raft(id).entries().len() >= 2)
        .count();
    assert!(
        replicated >= 2,
        "index 2 of term 2 is on a majority with S1"
    );
    if unsafe_commit {
        assert_eq!(
            net.raft(0).commit_index(),
            2,
            "the broken rule commits by count"
        );
    } else {
        assert_eq!(
            net.raft(0).commit_index(),
            1,
            "Figure 8: never commit an old term by count"
        );
    }
    // (d) S1 crashes; S5 restarts and is elected in term 5 by S2, S3, S4.
    net.crash(0);
    net.filter = None;
    net.restart(4);
    net.campaign(4); // rejected at term 4: S5 learns term 4
    net.campaign(4);
    assert_eq!(net.leaders(), vec![4]);
    net.settle();
    net
}

#[test]
fn figure8_old_term_entry_is_not_committed_by_count() {
    let net = figure8(false);
    assert!(net.violations.is_empty(), "{:?}", net.violations);
    // S5's term-3 entry overwrote the uncommitted term-2 one and is now committed.
    assert_eq!(net.raft(1).entries()[1].term, 3);
    assert_eq!(net.raft(4).commit_index(), 3);
}

#[test]
fn figure8_unsafe_rule_is_caught_by_the_checker() {
    let net = figure8(true);
    assert!(
        !net.violations.is_empty(),
        "committing an old-term entry by count must lose a committed entry"
    );
}

// ----- log replication ---------------------------------------------------------------------

#[test]
fn replication_commits_and_applies_everywhere() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    for i in 0..100u32 {
        net.propose(leader, &i.to_le_bytes());
    }
    net.settle();
    for id in 0..3 {
        assert_eq!(net.raft(id).commit_index(), 101);
        assert_eq!(net.applied[&id].len(), 101);
    }
    net.assert_logs_equal(&[0, 1, 2]);
    assert!(net.violations.is_empty());
    let status = net.raft(leader).status();
    assert_eq!(status.peers.len(), 2);
    assert!(status
        .peers
        .iter()
        .all(|p| p.match_index == 101 && p.next_index == 102));
    assert_eq!(status.applied_index, 101);
}

#[test]
fn proposals_between_readies_travel_as_one_append_per_follower() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    for i in 0..50u32 {
        net.propose(leader, &i.to_le_bytes());
    }
    let rd = net.raft_mut(leader).ready();
    assert_eq!(rd.entries.len(), 50);
    let appends: Vec<_> = rd
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::AppendEntries { entries, .. } => Some(entries.len()),
            _ => None,
        })
        .collect();
    assert_eq!(appends, vec![50, 50]);
}

#[test]
fn stale_leader_uncommitted_entries_are_overwritten() {
    let mut net = Network::new(3, |_| {});
    let old = net.tick_until_leader();
    net.isolate(old);
    for _ in 0..3 {
        net.propose(old, b"lost");
    }
    net.settle();
    assert_eq!(net.raft(old).commit_index(), 1);
    // The others elect a new leader and commit their own entries.
    let new = (0..100)
        .find_map(|_| {
            net.tick_all(1);
            net.leaders().into_iter().find(|&id| id != old)
        })
        .expect("the majority side elects a leader");
    net.propose(new, b"kept");
    net.settle();
    net.heal();
    // The old leader hears the new term, steps down, and its suffix is replaced.
    net.tick_all(3);
    assert_eq!(net.leaders(), vec![new]);
    net.assert_logs_equal(&[0, 1, 2]);
    assert!(net
        .raft(old)
        .entries()
        .iter()
        .all(|e| &e.data[..] != b"lost"));
    assert!(net.violations.is_empty());
}

#[test]
fn fast_backoff_skips_a_term_per_round_trip() {
    // Node 1 holds six conflicting entries of terms 2 and 3; the leader has none of those terms.
    let states = vec![
        persisted(4, Some(0), &[1, 1, 4, 4, 4, 4, 4, 4]),
        persisted(3, None, &[1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3]),
        persisted(4, Some(0), &[1, 1, 4, 4, 4, 4, 4, 4]),
    ];
    let mut net = Network::with_state(3, states, |c| c.check_quorum = false);
    let rejections = std::rc::Rc::new(std::cell::Cell::new(0));
    let counter = rejections.clone();
    net.filter = Some(Box::new(move |m: &mut Message| {
        if let MessageBody::AppendEntriesResponse { success: false, .. } = m.body {
            if m.from == 1 {
                counter.set(counter.get() + 1);
            }
        }
        true
    }));
    net.campaign(0);
    assert_eq!(net.leaders(), vec![0]);
    net.settle();
    net.assert_logs_equal(&[0, 1, 2]);
    // One rejection for term 3, one for term 2; a naive back-off needs one per entry.
    assert_eq!(rejections.get(), 2);
}

#[test]
fn follower_with_missing_entries_catches_up() {
    let mut net = Network::new(3, |c| c.max_msg_bytes = 64);
    let leader = net.tick_until_leader();
    let lagging = (leader + 1) % 3;
    net.isolate(lagging);
    for i in 0..200u32 {
        net.propose(leader, &i.to_le_bytes());
    }
    net.settle();
    net.heal();
    net.tick_all(5);
    net.assert_logs_equal(&[0, 1, 2]);
    assert_eq!(net.applied[&lagging].len(), 201);
}

#[test]
fn lost_appends_in_replicate_are_resent() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    net.propose(leader, b"a");
    net.settle();
    // Drop every AppendEntries for one round: the pipeline stalls, heartbeats re-probe.
    net.filter = Some(Box::new(|m: &mut Message| {
        !matches!(m.body, MessageBody::AppendEntries { .. })
    }));
    net.propose(leader, b"b");
    net.settle();
    assert_eq!(net.raft(leader).commit_index(), 2);
    net.filter = None;
    net.tick_all(4);
    assert_eq!(net.raft(leader).commit_index(), 3);
    net.assert_logs_equal(&[0, 1, 2]);
}

// ----- pre-vote, check-quorum, liveness ----------------------------------------------------

#[test]
fn rejoining_node_under_pre_vote_does_not_depose_the_leader() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    let term = net.raft(leader).term();
    let partitioned = (leader + 1) % 3;
    net.isolate(partitioned);
    net.tick_all(100);
    // Pre-vote kept it from raising its term while cut off.
    assert_eq!(net.raft(partitioned).term(), term);
    net.propose(leader, b"x");
    net.heal();
    net.tick_all(50);
    assert_eq!(net.leaders(), vec![leader]);
    assert_eq!(net.raft(leader).term(), term);
    net.assert_logs_equal(&[0, 1, 2]);
}

#[test]
fn leader_lease_ignores_pre_votes_even_from_up_to_date_nodes() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    let term = net.raft(leader).term();
    let other = (leader + 1) % 3;
    // Its log is as good as anyone's, but the others heard from the leader recently.
    net.campaign(other);
    assert_eq!(net.leaders(), vec![leader]);
    assert_eq!(net.raft(leader).term(), term);
}

#[test]
fn node_stuck_at_higher_term_rejoins() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    let stuck = (leader + 1) % 3;
    net.isolate(stuck);
    // It raised its term while cut off (say it had won a pre-vote just before the partition).
    for _ in 0..3 {
        net.raft_mut(stuck).campaign(false);
    }
    net.settle();
    let stuck_term = net.raft(stuck).term();
    assert!(stuck_term > net.raft(leader).term());
    // Meanwhile the cluster moves on, so the stuck node's log is behind and pre-vote fails.
    for _ in 0..5 {
        net.propose(leader, b"y");
    }
    net.settle();
    net.heal();
    net.tick_all(200);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1);
    let new_leader = leaders[0];
    assert!(net.raft(new_leader).term() > stuck_term);
    assert_eq!(net.raft(stuck).leader(), Some(new_leader));
    assert_eq!(net.raft(stuck).role(), Role::Follower);
    net.assert_logs_equal(&[0, 1, 2]);
    assert!(net.violations.is_empty());
}

#[test]
fn check_quorum_steps_down_an_isolated_leader() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    net.isolate(leader);
    net.tick_one(leader, 2 * net.configs[&leader].election_ticks);
    assert_eq!(net.raft(leader).role(), Role::Follower);
    assert_eq!(
        net.raft_mut(leader).propose(b"z"),
        Err(RaftError::NotLeader { leader_hint: None })
    );
}

#[test]
fn without_check_quorum_an_isolated_leader_stays() {
    let mut net = Network::new(3, |c| c.check_quorum = false);
    let leader = net.tick_until_leader();
    net.isolate(leader);
    net.tick_one(leader, 50);
    assert_eq!(net.raft(leader).role(), Role::Leader);
}

// ----- leadership transfer -----------------------------------------------------------------

#[test]
fn leadership_transfer_hands_over() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    let target = (leader + 1) % 3;
    net.raft_mut(leader).transfer_leadership(target).unwrap();
    assert_eq!(
        net.raft_mut(leader).propose(b"no"),
        Err(RaftError::TransferInProgress)
    );
    net.settle();
    assert_eq!(net.leaders(), vec![target]);
    assert_eq!(net.raft(leader).leader(), Some(target));
    net.propose(target, b"after");
    net.settle();
    net.assert_logs_equal(&[0, 1, 2]);
}

#[test]
fn leadership_transfer_catches_up_a_lagging_target_first() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    let target = (leader + 1) % 3;
    net.isolate(target);
    for _ in 0..10 {
        net.propose(leader, b"lag");
    }
    net.settle();
    net.heal();
    net.raft_mut(leader).transfer_leadership(target).unwrap();
    net.settle();
    net.tick_all(5);
    assert_eq!(net.leaders(), vec![target]);
    assert_eq!(net.raft(target).commit_index(), 12);
}

#[test]
fn leadership_transfer_aborts_after_an_election_timeout() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    let target = (leader + 1) % 3;
    net.isolate(target);
    net.raft_mut(leader).transfer_leadership(target).unwrap();
    net.tick_one(leader, net.configs[&leader].election_ticks);
    assert_eq!(net.raft(leader).role(), Role::Leader);
    assert!(net.raft_mut(leader).propose(b"ok").is_ok());
}

#[test]
fn leadership_transfer_rejects_bad_targets() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    let follower = (leader + 1) % 3;
    assert_eq!(
        net.raft_mut(leader).transfer_leadership(leader),
        Err(RaftError::BadTransferTarget)
    );
    assert_eq!(
        net.raft_mut(leader).transfer_leadership(9),
        Err(RaftError::BadTransferTarget)
    );
    assert_eq!(
        net.raft_mut(follower).transfer_leadership(leader),
        Err(RaftError::NotLeader {
            leader_hint: Some(leader)
        })
    );
}

// ----- ReadIndex ---------------------------------------------------------------------------

#[test]
fn read_index_on_leader() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    net.propose(leader, b"w");
    net.settle();
    net.raft_mut(leader).read_index(7).unwrap();
    net.raft_mut(leader).read_index(8).unwrap();
    // Both reads ride one heartbeat round.
    let rd = net.raft_mut(leader).ready();
    let rounds: HashSet<u64> = rd
        .messages
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::Heartbeat { read_round, .. } => Some(read_round),
            _ => None,
        })
        .collect();
    assert_eq!(rounds.len(), 1);
    assert!(
        rd.read_states.is_empty(),
        "not confirmed before a quorum answers"
    );
    for msg in rd.messages {
        net.post(msg);
    }
    net.settle();
    assert_eq!(
        net.read_states[&leader],
        vec![
            ReadState { ctx: 7, index: 2 },
            ReadState { ctx: 8, index: 2 }
        ]
    );
}

#[test]
fn read_index_waits_for_the_new_leaders_first_commit() {
    let mut net = Network::new(3, |c| c.pre_vote = false);
    net.raft_mut(0).campaign(false);
    // Deliver the votes but not yet the no-op's acknowledgements.
    net.filter = Some(Box::new(|m: &mut Message| {
        !matches!(m.body, MessageBody::AppendEntriesResponse { .. })
    }));
    net.settle();
    assert_eq!(net.raft(0).role(), Role::Leader);
    net.raft_mut(0).read_index(1).unwrap();
    net.settle();
    assert!(net.read_states.get(&0).is_none_or(|r| r.is_empty()));
    net.filter = None;
    net.tick_all(3);
    assert_eq!(net.read_states[&0], vec![ReadState { ctx: 1, index: 1 }]);
}

#[test]
fn read_index_on_follower() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    net.propose(leader, b"w");
    net.settle();
    let follower = (leader + 2) % 3;
    net.raft_mut(follower).read_index(42).unwrap();
    net.settle();
    assert_eq!(
        net.read_states[&follower],
        vec![ReadState { ctx: 42, index: 2 }]
    );
}

#[test]
fn read_index_without_leader_is_refused() {
    let mut net = Network::new(3, |_| {});
    assert_eq!(
        net.raft_mut(0).read_index(1),
        Err(RaftError::NotLeader { leader_hint: None })
    );
}

#[test]
fn reads_fail_when_leadership_is_lost() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    let follower = (leader + 1) % 3;
    net.raft_mut(follower).read_index(5).unwrap();
    net.isolate(leader);
    net.settle(); // the forwarded read reaches nobody... it was cut off with the leader
    net.raft_mut(leader).read_index(6).unwrap();
    net.tick_one(leader, 2 * net.configs[&leader].election_ticks);
    assert_eq!(net.raft(leader).role(), Role::Follower);
    assert_eq!(
        net.read_failures[&leader],
        vec![ReadFailure {
            ctx: 6,
            leader_hint: None
        }]
    );
    // The follower's forwarded read, never answered, fails after two election timeouts.
    net.tick_one(follower, 2 * net.configs[&follower].election_ticks);
    assert_eq!(net.read_failures[&follower].len(), 1);
    assert_eq!(net.read_failures[&follower][0].ctx, 5);
}

#[test]
fn single_voter_reads_confirm_immediately() {
    let mut net = Network::new(1, |_| {});
    net.tick_until_leader();
    net.raft_mut(0).read_index(3).unwrap();
    net.settle();
    assert_eq!(net.read_states[&0], vec![ReadState { ctx: 3, index: 1 }]);
}

// ----- durability and restart --------------------------------------------------------------

#[test]
fn single_node_cluster_elects_itself_and_commits_after_advance() {
    let mut net = Network::new(1, |_| {});
    assert_eq!(net.tick_until_leader(), 0);
    let index = net.propose(0, b"solo");
    let rd = net.raft_mut(0).ready();
    assert_eq!(rd.entries.len(), 1);
    assert!(rd.committed_entries.is_empty());
    assert_eq!(
        net.raft(0).commit_index(),
        1,
        "not committed before it is durable"
    );
    net.raft_mut(0).advance(rd.number);
    assert_eq!(net.raft(0).commit_index(), index);
    let rd = net.raft_mut(0).ready();
    assert_eq!(rd.committed_entries.len(), 1);
    assert_eq!(rd.hard_state.map(|h| h.commit), Some(index));
}

#[test]
fn leader_does_not_count_itself_before_advance() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    let slow = (leader + 1) % 3;
    net.cut.insert((leader, slow));
    net.set_sync_immediately(leader, false);
    let index = net.propose(leader, b"v");
    net.settle();
    // One follower acknowledged; the leader's own write is not durable yet: 1 of 3.
    assert!(net.raft(leader).commit_index() < index);
    while net.sync_one(leader) {}
    assert_eq!(net.raft(leader).commit_index(), index);
}

#[test]
fn follower_applies_only_durable_entries() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    let slow = (leader + 1) % 3;
    net.set_sync_immediately(slow, false);
    let index = net.propose(leader, b"v");
    net.settle();
    assert_eq!(net.raft(leader).commit_index(), index);
    // The next AppendEntries tells the slow follower that `index` is committed, while neither
    // entry is durable there yet.
    net.propose(leader, b"w");
    net.settle();
    assert!(net.raft(slow).commit_index() >= index);
    assert_eq!(net.raft(slow).status().applied_index, index - 1);
    while net.sync_one(slow) {}
    net.settle();
    assert!(net.raft(slow).status().applied_index >= index);
}

#[test]
fn restart_from_persisted_resumes() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    for i in 0..10u8 {
        net.propose(leader, &[i]);
    }
    net.settle();
    let term = net.raft(leader).term();
    for id in 0..3 {
        net.crash(id);
    }
    for id in 0..3 {
        net.restart(id);
        assert_eq!(net.raft(id).entries().len(), 11);
        assert_eq!(net.raft(id).term(), term);
        assert_eq!(
            net.raft(id).commit_index(),
            11,
            "commit restored from the hard state"
        );
    }
    net.settle();
    for id in 0..3 {
        assert_eq!(
            net.applied[&id].len(),
            11,
            "committed entries replayed after restart"
        );
    }
    let leader = net.tick_until_leader();
    assert!(net.raft(leader).term() > term);
    net.propose(leader, b"after restart");
    net.settle();
    net.assert_logs_equal(&[0, 1, 2]);
    assert_eq!(net.raft(leader).commit_index(), 13);
    assert!(net.violations.is_empty());
}

#[test]
fn restart_clamps_commit_to_the_log() {
    let mut disk = persisted(3, Some(0), &[1, 2]);
    disk.hard_state.commit = 9;
    let raft = Raft::new(Config::new(0, vec![0, 1, 2]), disk, 1);
    assert_eq!(raft.commit_index(), 2);
}

#[test]
fn readies_can_be_in_flight_and_advance_out_of_step() {
    let mut net = Network::new(1, |_| {});
    net.tick_until_leader();
    let raft = net.raft_mut(0);
    raft.propose(b"a").unwrap();
    let first = raft.ready();
    raft.propose(b"b").unwrap();
    let second = raft.ready();
    assert_eq!(second.number, first.number + 1);
    raft.advance(second.number); // covers the first as well
    assert_eq!(raft.commit_index(), 3);
}

// ----- robustness --------------------------------------------------------------------------

#[test]
fn foreign_and_malformed_messages_are_ignored() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    let follower = (leader + 1) % 3;
    let term = net.raft(leader).term();
    let before = net.raft(follower).entries().to_vec();
    let garbage = [
        // From a non-member that is not the leader. (A non-member's higher term is adopted,
        // as any server's: a joining node must hear from a leader it has no configuration
        // for, and a learner must answer a candidate it does not know yet.)
        Message {
            from: 99,
            to: follower,
            term,
            body: MessageBody::TimeoutNow,
        },
        // For another node.
        Message {
            from: leader,
            to: 77,
            term,
            body: MessageBody::TimeoutNow,
        },
        // prev_log_index beyond reason.
        Message {
            from: leader,
            to: follower,
            term,
            body: MessageBody::AppendEntries {
                prev_log_index: u64::MAX,
                prev_log_term: term,
                entries: vec![],
                leader_commit: u64::MAX,
            },
        },
        // Entries that do not follow prev_log_index.
        Message {
            from: leader,
            to: follower,
            term,
            body: MessageBody::AppendEntries {
                prev_log_index: 1,
                prev_log_term: term,
                entries: entries_with_terms(&[term, term, term]),
                leader_commit: 3,
            },
        },
        // Entries from a future term.
        Message {
            from: leader,
            to: follower,
            term,
            body: MessageBody::AppendEntries {
                prev_log_index: 1,
                prev_log_term: term,
                entries: vec![Entry::new(term + 1, 2, EntryKind::Normal, b"x")],
                leader_commit: 0,
            },
        },
        Message {
            from: leader,
            to: follower,
            term,
            body: MessageBody::Heartbeat {
                leader_commit: u64::MAX,
                read_round: u64::MAX,
            },
        },
    ];
    for msg in garbage {
        net.raft_mut(follower).step(msg);
    }
    assert_eq!(net.raft(follower).entries(), &before[..]);
    assert!(net.raft(follower).commit_index() <= before.len() as Index);
    // Answers to things the leader never sent.
    for body in [
        MessageBody::AppendEntriesResponse {
            success: true,
            match_index: u64::MAX,
            reject_hint: RejectHint::default(),
        },
        MessageBody::AppendEntriesResponse {
            success: false,
            match_index: u64::MAX,
            reject_hint: RejectHint {
                conflict_term: u64::MAX,
                conflict_index: u64::MAX,
            },
        },
        MessageBody::HeartbeatResponse {
            read_round: u64::MAX,
        },
        MessageBody::ReadIndexResponse {
            ctx: 1,
            index: Some(u64::MAX),
        },
    ] {
        net.raft_mut(leader).step(Message {
            from: follower,
            to: leader,
            term,
            body,
        });
    }
    assert_eq!(net.raft(leader).role(), Role::Leader);
    net.settle();
    net.propose(leader, b"still works");
    net.settle();
    net.assert_logs_equal(&[0, 1, 2]);
}

#[test]
fn random_messages_never_panic() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let mut rng = SmallRng::seed_from_u64(7);
    let mut net = Network::new(3, |_| {});
    net.tick_until_leader();
    let small = |rng: &mut SmallRng| -> u64 {
        match rng.gen_range(0..4) {
            0 => 0,
            1 => rng.gen_range(0..5),
            2 => rng.gen_range(0..20),
            _ => rng.gen(),
        }
    };
    for _ in 0..20_000 {
        let to = rng.gen_range(0..3);
        let from = rng.gen_range(0..4);
        let term = small(&mut rng);
        let body = match rng.gen_range(0..10) {
            0 => MessageBody::RequestVote {
                pre_vote: rng.gen(),
                last_log_index: small(&mut rng),
                last_log_term: small(&mut rng),
            },
            1 => MessageBody::RequestVoteResponse {
                pre_vote: rng.gen(),
                granted: rng.gen(),
            },
            2 => {
                let prev = small(&mut rng);
                let n = rng.gen_range(0..3);
                let entries = (0..n)
                    .map(|i| {
                        Entry::new(
                            small(&mut rng),
                            prev.wrapping_add(1 + i),
                            EntryKind::Normal,
                            b"",
                        )
                    })
                    .collect();
                MessageBody::AppendEntries {
                    prev_log_index: prev,
                    prev_log_term: small(&mut rng),
                    entries,
                    leader_commit: small(&mut rng),
                }
            }
            3 => MessageBody::AppendEntriesResponse {
                success: rng.gen(),
                match_index: small(&mut rng),
                reject_hint: RejectHint {
                    conflict_term: small(&mut rng),
                    conflict_index: small(&mut rng),
                },
            },
            4 => MessageBody::Heartbeat {
                leader_commit: small(&mut rng),
                read_round: small(&mut rng),
            },
            5 => MessageBody::HeartbeatResponse {
                read_round: small(&mut rng),
            },
            6 => MessageBody::ReadIndex { ctx: rng.gen() },
            7 => MessageBody::ReadIndexResponse {
                ctx: rng.gen(),
                index: rng.gen::<bool>().then(|| small(&mut rng)),
            },
            8 => MessageBody::TimeoutNow,
            _ => MessageBody::InstallSnapshot {
                membership: Membership::with_voters(0..rng.gen_range(0..4)),
                snapshot: SnapshotMeta {
                    index: small(&mut rng),
                    term: small(&mut rng),
                },
            },
        };
        if let Some(node) = net.nodes.get_mut(&to).unwrap().as_mut() {
            node.raft.step(Message {
                from,
                to,
                term,
                body,
            });
        }
        if rng.gen_range(0..10) == 0 {
            net.raft_mut(to).tick();
            net.settle();
        }
        if rng.gen_range(0..50) == 0 {
            let _ = net.raft_mut(to).propose(b"p");
            let _ = net.raft_mut(to).read_index(rng.gen());
        }
    }
    net.settle();
}

// ----- randomized histories ----------------------------------------------------------------

/// Random faults on a 5-node cluster: messages dropped, duplicated and reordered, links cut and
/// healed, nodes crashed and restarted from their disks. After every step: at most one leader per
/// term (Election Safety), every applied entry in every later leader's log (Leader Completeness),
/// no two nodes applying different entries at one index (State Machine Safety). At the end the
/// faults stop and the cluster must commit a new entry everywhere (liveness).
fn random_history(seed: u64, steps: usize, configure: impl Fn(&mut Config)) -> usize {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let count = 5;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut net = Network::new(count, |c| {
        // Short timeouts: many elections per history.
        c.election_ticks = 4;
        c.heartbeat_ticks = 1;
        configure(c);
    });
    net.seed = seed * 1000;
    // Disk writes complete at random moments; a crash loses the ones still pending.
    net.sync_immediately = false;
    for id in 0..count {
        net.set_sync_immediately(id, false);
    }
    let mut leader_of_term: BTreeMap<Term, NodeId> = BTreeMap::new();
    let mut wire: Vec<Message> = Vec::new();
    let mut proposals = 0u32;
    for _ in 0..steps {
        random_fault(&mut net, &mut rng, &mut wire, &mut proposals);
        for id in 0..count {
            net.process_ready(id);
            if rng.gen_range(0..3) == 0 {
                net.sync_one(id);
            }
        }
        wire.extend(net.queue.drain(..));
        check_safety(&net, seed, &mut leader_of_term);
    }
    heal_and_check_liveness(&mut net, wire, seed);
    leader_of_term.len()
}

/// One random step of [`random_history`]: deliver (or drop, or duplicate) some messages, tick,
/// propose, crash or restart a node, cut or heal links, or ask for a read.
fn random_fault(
    net: &mut Network,
    rng: &mut rand::rngs::SmallRng,
    wire: &mut Vec<Message>,
    proposals: &mut u32,
) {
    use rand::Rng;
    let count = net.nodes.len() as NodeId;
    match rng.gen_range(0..100) {
        0..=49 => {
            for _ in 0..rng.gen_range(1..=8) {
                if wire.is_empty() {
                    break;
                }
                let msg = wire.swap_remove(rng.gen_range(0..wire.len()));
                let fate = rng.gen_range(0..100);
                if fate >= 10 && !net.cut.contains(&(msg.from, msg.to)) {
                    if fate < 15 {
                        wire.push(msg.clone());
                    }
                    if let Some(node) = net.nodes.get_mut(&msg.to).unwrap().as_mut() {
                        node.raft.step(msg);
                    }
                }
            }
        }
        50..=64 => {
            // One tick of the shared clock.
            for node in net.nodes.values_mut().flatten() {
                node.raft.tick();
            }
        }
        65..=74 => {
            // A node whose clock runs fast.
            let id = rng.gen_range(0..count);
            if let Some(node) = net.nodes.get_mut(&id).unwrap().as_mut() {
                node.raft.tick();
            }
        }
        75..=84 => {
            for id in net.leaders() {
                *proposals += 1;
                let _ = net.raft_mut(id).propose(&proposals.to_le_bytes());
            }
        }
        85..=87 => {
            let id = rng.gen_range(0..count);
            let down = net.nodes.values().filter(|n| n.is_none()).count();
            if net.nodes[&id].is_some() && down < 2 {
                net.crash(id);
                wire.retain(|m| m.to != id);
            } else if net.nodes[&id].is_none() {
                net.restart(id);
            }
        }
        88..=91 => {
            let a = rng.gen_range(0..count);
            let b = rng.gen_range(0..count);
            if a != b {
                net.cut.insert((a, b));
                net.cut.insert((b, a));
            }
        }
        92..=94 => net.heal(),
        _ => {
            let id = rng.gen_range(0..count);
            if let Some(node) = net.nodes.get_mut(&id).unwrap().as_mut() {
                let _ = node.raft.read_index(rng.gen());
            }
        }
    }
}

/// Election Safety and Leader Completeness after a step, and no violation the network saw.
fn check_safety(net: &Network, seed: u64, leader_of_term: &mut BTreeMap<Term, NodeId>) {
    for id in net.leaders() {
        let raft = net.raft(id);
        let previous = *leader_of_term.entry(raft.term()).or_insert(id);
        assert_eq!(
            previous,
            id,
            "seed {seed}: two leaders in term {}",
            raft.term()
        );
        for (index, entry) in &net.applied_by_index {
            if net.committed_by_term[index] >= raft.term() {
                continue; // Possibly committed in this leader's term or later.
            }
            assert_eq!(
                raft.entries().get((*index - 1) as usize),
                Some(entry),
                "seed {seed}: leader {id} of term {} lacks committed entry {index}",
                raft.term()
            );
        }
    }
    assert!(
        net.violations.is_empty(),
        "seed {seed}: {:?}",
        net.violations
    );
}

/// Faults stop, and the healed cluster must commit a new entry everywhere (liveness).
fn heal_and_check_liveness(net: &mut Network, mut wire: Vec<Message>, seed: u64) {
    let count = net.nodes.len() as NodeId;
    // Faults stop: everyone up, disks fast, links healed, messages in flight delivered in order.
    net.heal();
    net.sync_immediately = true;
    for id in 0..count {
        if net.nodes[&id].is_none() {
            net.restart(id);
        }
        net.set_sync_immediately(id, true);
        while net.sync_one(id) {}
    }
    net.queue.extend(wire.drain(..));
    net.settle();
    // Liveness: within a bounded number of ticks some leader commits a new entry everywhere.
    // (Leadership may still change hands at first, e.g. to outrun a node left at a higher term.)
    let mut converged = false;
    for _ in 0..1_000 {
        net.tick_all(1);
        let [leader] = net.leaders()[..] else {
            continue;
        };
        let raft = net.raft(leader);
        let has_final = raft.entries().iter().any(|e| &e.data[..] == b"final");
        if !has_final {
            net.propose(leader, b"final");
            continue;
        }
        let last_index = raft.entries().len() as Index;
        if (0..count).all(|id| net.raft(id).commit_index() == last_index) {
            converged = true;
            break;
        }
    }
    assert!(
        converged,
        "seed {seed}: the healed cluster did not commit a new entry everywhere"
    );
    net.assert_logs_equal(&[0, 1, 2, 3, 4]);
    assert!(
        net.violations.is_empty(),
        "seed {seed}: {:?}",
        net.violations
    );
}

#[test]
fn random_histories_with_pre_vote_and_check_quorum() {
    let leaders: usize = (0..400)
        .map(|seed| random_history(seed, 3_000, |_| {}))
        .sum();
    assert!(
        leaders >= 400 * 5,
        "histories should see many leaders, saw {leaders}"
    );
}

#[test]
fn random_histories_without_pre_vote_or_check_quorum() {
    for seed in 1_000..1_200 {
        random_history(seed, 3_000, |c| {
            c.pre_vote = false;
            c.check_quorum = false;
        });
    }
}

#[test]
fn random_histories_with_small_windows_and_messages() {
    for seed in 2_000..2_200 {
        random_history(seed, 3_000, |c| {
            c.max_inflight_msgs = 2;
            c.max_msg_bytes = 8;
        });
    }
}

// ----- snapshots and log compaction -------------------------------------------------------

fn snap(index: Index, term: Term) -> SnapshotMeta {
    SnapshotMeta { index, term }
}

/// `(index, term)` entries from `first`.
fn entries_from(first: Index, terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &term)| {
            let index = first + i as Index;
            Entry::new(term, index, EntryKind::Normal, &[index as u8])
        })
        .collect()
}

fn peer_state(net: &Network, leader: NodeId, peer: NodeId) -> &'static str {
    let status = net.raft(leader).status();
    status.peers.iter().find(|p| p.id == peer).unwrap().state
}

#[test]
fn compaction_drops_entries_and_keeps_working() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    for i in 0..10u8 {
        net.propose(leader, &[i]);
    }
    net.settle();
    assert_eq!(net.raft(leader).applied_index(), 11);
    // A trailing window of 3 entries before the snapshot stays in memory.
    net.compact(leader, 9, 7);
    let raft = net.raft(leader);
    assert_eq!(raft.snapshot(), Some(snap(9, raft.log_term(9).unwrap())));
    assert_eq!(raft.first_index(), 7);
    assert_eq!(raft.entries().len(), 5);
    assert_eq!(raft.entries()[0].index, 7);
    assert_eq!(raft.log_term(5), None, "compacted");
    assert!(
        raft.log_term(6).is_some(),
        "the term at the offset is known"
    );
    assert_eq!(raft.status().first_index, 7);
    assert_eq!(raft.status().snapshot_index, 9);
    // An older snapshot, or one whose term disagrees with the log, is ignored.
    let term = net.raft(leader).term();
    net.raft_mut(leader).compact(snap(10, term + 5), 11);
    assert_eq!(net.raft(leader).snapshot().unwrap().index, 9);
    net.raft_mut(leader).compact(snap(8, 1), 9);
    assert_eq!(net.raft(leader).snapshot().unwrap().index, 9);
    assert_eq!(net.raft(leader).first_index(), 7);
    // first_kept is clamped to snapshot.index + 1.
    net.compact(leader, 11, 100);
    assert_eq!(net.raft(leader).first_index(), 12);
    assert!(net.raft(leader).entries().is_empty());
    assert_eq!(net.raft(leader).last_index(), 11);
    // Replication goes on from the compacted log, for every node.
    for i in 0..5u8 {
        net.propose(leader, &[i]);
    }
    net.settle();
    for id in 0..3 {
        assert_eq!(net.raft(id).commit_index(), 16);
        assert_eq!(*net.next_apply.get(&id).unwrap(), 17);
    }
    assert!(net.installs.is_empty(), "followers were never behind");
    assert!(net.violations.is_empty());
}

#[test]
fn lagging_follower_installs_the_leaders_snapshot() {
    let mut net = Network::new(3, |c| c.max_msg_bytes = 64);
    let leader = net.tick_until_leader();
    let lagging = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    net.isolate(lagging);
    for i in 0..30u8 {
        net.propose(leader, &[i]);
    }
    net.settle();
    let commit = net.raft(leader).commit_index();
    assert_eq!(commit, 31);
    net.compact(leader, commit, commit - 2);
    net.compact(other, commit, commit + 1);
    let meta = net.raft(leader).snapshot().unwrap();
    net.heal();
    net.tick_all(3);
    assert_eq!(net.installs[&lagging], vec![meta]);
    assert_eq!(net.disks[&lagging].snapshot, Some(meta));
    assert_eq!(net.raft(lagging).first_index(), commit + 1);
    assert_eq!(net.raft(lagging).applied_index(), commit);
    assert_eq!(peer_state(&net, leader, lagging), "replicate");
    net.propose(leader, b"after");
    net.settle();
    assert_eq!(net.raft(lagging).commit_index(), commit + 1);
    assert_eq!(net.applied[&lagging].last().unwrap().index, commit + 1);
    assert_eq!(
        net.applied[&lagging]
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        vec![1, commit + 1],
        "the entry applied before the partition, then only the one after the snapshot"
    );
    assert!(net.violations.is_empty());
}

#[test]
fn snapshot_replaces_a_conflicting_log() {
    let mut net = Network::new(3, |_| {});
    let old = net.tick_until_leader();
    net.isolate(old);
    for _ in 0..3 {
        net.propose(old, b"lost");
    }
    net.settle();
    let new = (0..100)
        .find_map(|_| {
            net.tick_all(1);
            net.leaders().into_iter().find(|&id| id != old)
        })
        .expect("the majority side elects a leader");
    for _ in 0..5 {
        net.propose(new, b"kept");
    }
    net.settle();
    let commit = net.raft(new).commit_index();
    for id in (0..3).filter(|&id| id != old) {
        net.compact(id, commit, commit + 1);
    }
    let meta = net.raft(new).snapshot().unwrap();
    assert_ne!(net.raft(old).log_term(meta.index), Some(meta.term));
    net.heal();
    net.tick_all(3);
    assert_eq!(net.leaders(), vec![new]);
    assert_eq!(net.installs[&old], vec![meta]);
    assert!(net
        .raft(old)
        .entries()
        .iter()
        .all(|e| &e.data[..] != b"lost"));
    assert!(net.disks[&old]
        .entries
        .iter()
        .all(|e| &e.data[..] != b"lost"));
    net.propose(new, b"more");
    net.settle();
    assert_eq!(net.raft(old).commit_index(), commit + 1);
    assert!(net.violations.is_empty());
}

/// A follower of term 2 whose log is `terms`, committed up to `commit`.
fn follower_with(terms: &[Term], commit: Index) -> Raft {
    let mut disk = persisted(2, None, terms);
    disk.hard_state.commit = commit;
    let mut raft = Raft::new(Config::new(1, vec![0, 1, 2]), disk, 7);
    let _ = raft.ready();
    raft
}

fn install_msg(term: Term, meta: SnapshotMeta) -> Message {
    Message {
        from: 0,
        to: 1,
        term,
        body: MessageBody::InstallSnapshot {
            snapshot: meta,
            membership: Membership::with_voters([0, 1, 2]),
        },
    }
}

fn only_ack(rd: &Ready) -> Index {
    assert!(rd.messages.is_empty(), "answers wait for durability");
    match rd.persisted_messages[..] {
        [Message {
            body:
                MessageBody::AppendEntriesResponse {
                    success: true,
                    match_index,
                    ..
                },
            ..
        }] => match_index,
        ref other => panic!("expected one success, got {other:?}"),
    }
}

#[test]
fn snapshot_matching_the_log_keeps_it() {
    let mut raft = follower_with(&[1, 1, 2, 2], 1);
    raft.step(install_msg(2, snap(3, 2)));
    let rd = raft.ready();
    assert_eq!(rd.snapshot, None);
    assert_eq!(only_ack(&rd), 3);
    assert_eq!(raft.commit_index(), 3);
    assert_eq!(raft.entries().len(), 4, "log kept");
    assert_eq!(
        rd.committed_entries
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        vec![2, 3],
        "applied normally"
    );
}

#[test]
fn stale_snapshot_is_answered_with_the_commit_index() {
    let mut raft = follower_with(&[1, 1, 2, 2], 3);
    raft.step(install_msg(2, snap(2, 1)));
    let rd = raft.ready();
    assert_eq!(rd.snapshot, None);
    assert_eq!(only_ack(&rd), 3);
    assert_eq!(raft.entries().len(), 4);
    // A snapshot claiming a term above its message's is malformed and ignored.
    raft.step(install_msg(2, snap(9, 3)));
    assert!(raft.ready().persisted_messages.is_empty());
}

#[test]
fn snapshot_not_in_the_log_replaces_it() {
    let mut raft = follower_with(&[1, 1, 2, 2], 1);
    raft.step(install_msg(3, snap(6, 3)));
    assert_eq!(raft.term(), 3);
    assert_eq!(raft.leader(), Some(0));
    let rd = raft.ready();
    assert_eq!(rd.snapshot, Some(snap(6, 3)));
    assert_eq!(only_ack(&rd), 6);
    assert!(rd.committed_entries.is_empty());
    assert!(rd.entries.is_empty());
    assert_eq!(rd.hard_state.map(|hs| hs.commit), Some(6));
    assert!(raft.entries().is_empty());
    assert_eq!(
        (raft.first_index(), raft.last_index(), raft.commit_index()),
        (7, 6, 6)
    );
    assert_eq!(raft.applied_index(), 6);
    assert_eq!(raft.snapshot(), Some(snap(6, 3)));
    raft.advance(rd.number);
    // The log continues after the snapshot; committed entries start at index 7.
    raft.step(Message {
        from: 0,
        to: 1,
        term: 3,
        body: MessageBody::AppendEntries {
            prev_log_index: 6,
            prev_log_term: 3,
            entries: entries_from(7, &[3, 3]),
            leader_commit: 8,
        },
    });
    let rd = raft.ready();
    assert_eq!(only_ack(&rd), 8);
    assert_eq!(rd.entries.len(), 2);
    assert!(rd.committed_entries.is_empty(), "not durable yet");
    raft.advance(rd.number);
    let rd = raft.ready();
    assert_eq!(
        rd.committed_entries
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        vec![7, 8]
    );
    // A vote request compares against the snapshot-based log.
    assert!(raft.status().last_index == 8);
}

#[test]
fn durability_reports_from_before_an_install_are_forgotten() {
    let mut raft = follower_with(&[], 0);
    raft.step(Message {
        from: 0,
        to: 1,
        term: 2,
        body: MessageBody::AppendEntries {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: entries_from(1, &[1, 1, 2]),
            leader_commit: 0,
        },
    });
    let old = raft.ready();
    assert_eq!(old.entries.len(), 3);
    raft.step(install_msg(2, snap(5, 2)));
    let rd = raft.ready();
    assert_eq!(rd.snapshot, Some(snap(5, 2)));
    // The old Ready's write became durable, but the driver then reset its log.
    raft.advance(old.number);
    raft.step(Message {
        from: 0,
        to: 1,
        term: 2,
        body: MessageBody::AppendEntries {
            prev_log_index: 5,
            prev_log_term: 2,
            entries: entries_from(6, &[2]),
            leader_commit: 6,
        },
    });
    let next = raft.ready();
    assert!(
        next.committed_entries.is_empty(),
        "entry 6 is not durable yet"
    );
    raft.advance(rd.number);
    assert!(raft.ready().committed_entries.is_empty());
    raft.advance(next.number);
    assert_eq!(raft.ready().committed_entries.len(), 1);
}

/// A 3-node cluster whose leader committed 10 entries while one follower was cut off, then
/// compacted its whole log; the link is healed. Returns (network, leader, lagging, commit).
fn lagging_behind_a_compacted_leader(
    config: impl Fn(&mut Config),
) -> (Network, NodeId, NodeId, Index) {
    let mut net = Network::new(3, config);
    let leader = net.tick_until_leader();
    let lagging = (leader + 1) % 3;
    net.isolate(lagging);
    for i in 0..10u8 {
        net.propose(leader, &[i]);
    }
    net.settle();
    let commit = net.raft(leader).commit_index();
    net.compact(leader, commit, commit + 1);
    net.heal();
    (net, leader, lagging, commit)
}

#[test]
fn lost_snapshot_is_resent_after_the_timeout() {
    let (mut net, leader, lagging, commit) =
        lagging_behind_a_compacted_leader(|c| c.snapshot_timeout_ticks = 5);
    let dropped = std::rc::Rc::new(std::cell::Cell::new(0));
    let counter = dropped.clone();
    net.filter = Some(Box::new(move |m: &mut Message| {
        if matches!(m.body, MessageBody::InstallSnapshot { .. }) && counter.get() == 0 {
            counter.set(1);
            return false;
        }
        true
    }));
    net.tick_all(2);
    assert_eq!(dropped.get(), 1, "the first InstallSnapshot was lost");
    assert!(!net.installs.contains_key(&lagging));
    assert_eq!(peer_state(&net, leader, lagging), "snapshot");
    // Heartbeats keep flowing, but no AppendEntries, until the timeout re-sends the snapshot.
    net.tick_all(5);
    assert_eq!(net.installs[&lagging].len(), 1);
    assert_eq!(peer_state(&net, leader, lagging), "replicate");
    assert_eq!(net.raft(lagging).commit_index(), commit);
    assert!(net.violations.is_empty());
}

#[test]
fn transfer_waits_for_a_follower_installing_a_snapshot() {
    let (mut net, leader, lagging, _) = lagging_behind_a_compacted_leader(|_| {});
    net.raft_mut(leader)
        .transfer_leadership(lagging)
        .expect("transfer starts");
    net.tick_all(3);
    assert_eq!(net.installs[&lagging].len(), 1);
    assert_eq!(
        net.leaders(),
        vec![lagging],
        "caught up by snapshot, then took over"
    );
    assert!(net.violations.is_empty());
}

#[test]
fn restart_from_snapshot_and_log() {
    let hs = HardState {
        term: 3,
        voted_for: None,
        commit: 2,
    };
    let config = Config::new(0, vec![0, 1, 2]);
    let restart = |snapshot, entries| {
        let mut raft = Raft::new(
            config.clone(),
            Persisted {
                hard_state: hs,
                snapshot,
                entries,
                membership: None,
            },
            1,
        );
        let committed: Vec<Index> = raft
            .ready()
            .committed_entries
            .iter()
            .map(|e| e.index)
            .collect();
        (raft, committed)
    };
    // A trailing window 3..=5 before the snapshot at 5 and entries after it: the first entry of
    // the window supplies the offset's term.
    let (raft, committed) = restart(Some(snap(5, 2)), entries_from(3, &[1, 2, 2, 2, 3]));
    assert_eq!((raft.first_index(), raft.last_index()), (4, 7));
    assert_eq!(raft.log_term(3), Some(1));
    assert_eq!(raft.log_term(2), None);
    assert_eq!(raft.applied_index(), 5);
    assert_eq!(
        raft.commit_index(),
        5,
        "max(hard state commit, snapshot index)"
    );
    assert!(
        committed.is_empty(),
        "the snapshot covers everything committed"
    );
    assert_eq!(raft.snapshot(), Some(snap(5, 2)));
    assert_eq!(raft.term(), 3);
    // A window from index 1 is kept whole.
    let (raft, _) = restart(Some(snap(2, 1)), entries_from(1, &[1, 1, 2]));
    assert_eq!((raft.first_index(), raft.last_index()), (1, 3));
    // Entries right after the snapshot; commit from the hard state past the snapshot.
    let mut disk_hs = hs;
    disk_hs.commit = 7;
    let mut raft = Raft::new(
        config.clone(),
        Persisted {
            hard_state: disk_hs,
            snapshot: Some(snap(5, 2)),
            entries: entries_from(6, &[2, 3, 3]),
            membership: None,
        },
        1,
    );
    let rd = raft.ready();
    assert_eq!(
        rd.committed_entries
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        vec![6, 7],
        "committed entries start after the snapshot"
    );
    // A crash between installing a snapshot and resetting the log: another term at the
    // snapshot's index. The log is discarded.
    let (raft, _) = restart(Some(snap(5, 2)), entries_from(1, &[1, 1, 1, 1, 1, 1]));
    assert_eq!((raft.first_index(), raft.last_index()), (6, 5));
    assert!(raft.entries().is_empty());
    assert_eq!(raft.log_term(5), Some(2));
    assert_eq!(raft.commit_index(), 5);
    // A log that ends before the snapshot: discarded.
    let (raft, _) = restart(Some(snap(5, 2)), entries_from(1, &[1, 1, 2]));
    assert!(raft.entries().is_empty());
    assert_eq!(raft.last_index(), 5);
    // A gap after the snapshot: discarded.
    let (raft, _) = restart(Some(snap(5, 2)), entries_from(7, &[2, 3]));
    assert!(raft.entries().is_empty());
    assert_eq!(raft.last_index(), 5);
    // A non-contiguous log is cut at the first bad entry, after the snapshot too.
    let mut entries = entries_from(6, &[2, 2, 3]);
    entries[2].index = 10;
    let (raft, _) = restart(Some(snap(5, 2)), entries);
    assert_eq!(raft.last_index(), 7);
}

#[test]
fn committed_entries_after_restart_start_after_the_snapshot() {
    let mut net = Network::new(3, |_| {});
    let leader = net.tick_until_leader();
    for i in 0..10u8 {
        net.propose(leader, &[i]);
    }
    net.settle();
    let follower = (leader + 1) % 3;
    net.compact(follower, 8, 6);
    assert_eq!(net.disks[&follower].entries[0].index, 6);
    net.crash(follower);
    net.restart(follower);
    let raft = net.raft(follower);
    assert_eq!(raft.snapshot(), Some(snap(8, raft.log_term(8).unwrap())));
    assert_eq!(raft.first_index(), 7);
    net.settle();
    assert_eq!(
        net.applied[&follower]
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        vec![9, 10, 11]
    );
    // And it keeps replicating.
    net.propose(leader, b"x");
    net.settle();
    assert_eq!(net.applied[&follower].last().unwrap().index, 12);
    assert!(net.violations.is_empty());
}

#[test]
fn follower_with_an_empty_log_gets_the_snapshot() {
    // Index 0 always has a term, so the leader must look at the entries it would send, not just
    // at the term before them, to see that they are compacted.
    let mut net = Network::new(3, |_| {});
    net.isolate(2);
    let leader = net.tick_until_leader();
    for i in 0..5u8 {
        net.propose(leader, &[i]);
    }
    net.settle();
    assert!(net.raft(2).entries().is_empty());
    let commit = net.raft(leader).commit_index();
    net.compact(leader, commit, commit + 1);
    net.heal();
    net.tick_all(3);
    assert_eq!(net.installs[&2].len(), 1);
    assert_eq!(net.raft(2).commit_index(), commit);
    assert_eq!(peer_state(&net, leader, 2), "replicate");
    assert!(net.violations.is_empty());
}

// ----- learners (issue 16): static for now, runtime change comes with configuration entries ----

/// Nodes 0..3 vote; node 3 only learns.
fn with_learner_3(config: &mut Config) {
    config.voters = vec![0, 1, 2];
    config.learners = vec![3];
}

#[test]
fn a_learner_receives_the_log_but_never_counts_toward_a_commit() {
    let mut net = Network::new(4, with_learner_3);
    let leader = net.tick_until_leader();
    assert_ne!(leader, 3, "a learner never leads");
    let first = net.propose(leader, b"to everyone");
    net.settle();
    assert_eq!(net.raft(3).commit_index(), first, "the learner has it");
    assert!(net.applied[&3]
        .iter()
        .any(|e| &e.data[..] == b"to everyone"));
    // Cut off both other voters: the leader and the learner hold a new entry, which is two of
    // four nodes but only one of three voters, so it must not commit.
    for id in (0..3).filter(|&id| id != leader) {
        net.isolate(id);
    }
    let second = net.propose(leader, b"leader and learner only");
    net.settle();
    assert_eq!(
        net.raft(3).last_index(),
        second,
        "replicated to the learner"
    );
    assert_eq!(net.raft(leader).commit_index(), first, "not committed");
    assert!(net.violations.is_empty(), "{:?}", net.violations);
}

#[test]
fn a_learner_never_campaigns_even_when_the_leader_is_gone() {
    let mut net = Network::new(4, with_learner_3);
    let leader = net.tick_until_leader();
    net.propose(leader, b"x");
    net.settle();
    let term = net.raft(3).term();
    net.isolate(3);
    net.tick_one(3, 200);
    assert_eq!(net.raft(3).role(), Role::Follower);
    assert_eq!(net.raft(3).term(), term, "it never raised its term");
    // Even told to by a (mistaken) transfer, it does not campaign.
    net.heal();
    net.post(Message {
        from: leader,
        to: 3,
        term: net.raft(3).term(),
        body: MessageBody::TimeoutNow,
    });
    net.settle();
    assert_eq!(net.raft(3).role(), Role::Follower);
    assert_eq!(net.raft(3).term(), term);
}

#[test]
fn a_node_that_thinks_it_is_a_learner_still_votes_when_asked() {
    // Nodes 0..2 know node 3 was promoted (four voters); node 3 has not heard of it yet. With
    // node 1 down, node 0 needs the votes of 2 and 3: the "learner" must answer (etcd's
    // learner-must-vote fix), or the cluster could not elect a leader.
    let mut net = Network::new(4, |config| {
        if config.id == 3 {
            with_learner_3(config);
        } else {
            config.voters = vec![0, 1, 2, 3];
        }
    });
    net.crash(1);
    net.campaign(0);
    assert_eq!(net.leaders(), vec![0]);
    assert_eq!(net.raft(3).leader(), Some(0));
}

// ----- membership change (issue 16) -------------------------------------------------------

fn no_pre_vote(c: &mut Config) {
    c.pre_vote = false;
    c.check_quorum = false;
}

fn voters_of(net: &Network, id: NodeId) -> Vec<NodeId> {
    net.raft(id).membership().voters().collect()
}

/// Three voters elect 0, then add node 3 as a learner (it starts empty) and settle.
fn three_and_a_learner(configure: impl Fn(&mut Config) + Copy) -> Network {
    let mut net = Network::new(3, configure);
    net.campaign(0);
    assert_eq!(net.leaders(), vec![0]);
    net.propose(0, b"before");
    net.settle();
    net.add_empty_node(3, configure);
    net.conf_change(0, ConfChange::AddLearner(3)).unwrap();
    net.settle();
    net
}

#[test]
fn a_learner_joins_empty_catches_up_and_is_promoted() {
    let mut net = three_and_a_learner(|_| {});
    assert_eq!(
        net.raft(3).membership(),
        net.raft(0).membership(),
        "the joiner learned the bootstrap configuration from index 1, then the change"
    );
    assert!(net.raft(3).membership().is_learner(3));
    net.assert_logs_equal(&[0, 1, 2, 3]);
    assert_eq!(net.raft(0).status().learners, vec![3]);
    assert_eq!(net.raft(0).status().voters, vec![0, 1, 2]);
    // A learner never campaigns, however long it hears nothing.
    net.isolate(3);
    let term = net.raft(3).term();
    net.tick_one(3, 100);
    assert_eq!(
        (net.raft(3).role(), net.raft(3).term()),
        (Role::Follower, term)
    );
    net.heal();
    net.tick_all(2);
    // Learners never count toward a commit: with 1 and 2 down, 0 and the learner commit nothing.
    net.crash(1);
    net.crash(2);
    let index = net.propose(0, b"not committed");
    net.settle();
    assert_eq!(net.raft(3).last_index(), index, "the learner holds it");
    assert!(net.raft(0).commit_index() < index, "but it does not count");
    net.restart(1);
    net.restart(2);
    net.tick_all(3);
    assert!(net.raft(0).commit_index() >= index);
    // Promoted once caught up: now a voter everywhere, and a quorum of four is three.
    net.conf_change(0, ConfChange::Promote(3)).unwrap();
    net.settle();
    for id in 0..4 {
        assert_eq!(voters_of(&net, id), vec![0, 1, 2, 3], "node {id}");
    }
    net.crash(1);
    net.crash(2);
    let index = net.propose(0, b"needs three of four");
    net.settle();
    assert!(net.raft(0).commit_index() < index);
    net.restart(2);
    net.tick_all(3);
    assert!(net.raft(0).commit_index() >= index);
    assert!(net.violations.is_empty(), "{:?}", net.violations);
}

#[test]
fn conf_changes_that_break_a_rule_are_refused() {
    let mut net = three_and_a_learner(|c| c.promote_max_lag = 3);
    let refused = |net: &mut Network, id, change| match net.conf_change(id, change) {
        Err(RaftError::ConfChange(e)) => e,
        other => panic!("{change:?} on {id}: expected a refusal, got {other:?}"),
    };
    assert!(matches!(
        net.conf_change(1, ConfChange::AddLearner(4)),
        Err(RaftError::NotLeader {
            leader_hint: Some(0)
        })
    ));
    assert_eq!(
        refused(&mut net, 0, ConfChange::AddLearner(1)),
        ConfChangeError::IdTaken(1)
    );
    assert_eq!(
        refused(&mut net, 0, ConfChange::Promote(2)),
        ConfChangeError::NotALearner(2)
    );
    assert_eq!(
        refused(&mut net, 0, ConfChange::Remove(9)),
        ConfChangeError::NotAMember(9)
    );
    // One uncommitted change at a time.
    net.isolate(0);
    let index = net.conf_change(0, ConfChange::AddLearner(4)).unwrap();
    assert_eq!(
        refused(&mut net, 0, ConfChange::AddLearner(5)),
        ConfChangeError::ChangePending { index }
    );
    net.heal();
    net.tick_all(3);
    assert!(net.raft(0).commit_index() >= index);
    // A removed id is never reused.
    net.conf_change(0, ConfChange::Remove(4)).unwrap();
    net.settle();
    assert_eq!(
        refused(&mut net, 0, ConfChange::AddLearner(4)),
        ConfChangeError::IdTaken(4)
    );
    // A learner that lags by more than promote_max_lag is not promoted.
    net.isolate(3);
    for _ in 0..5 {
        net.propose(0, b"x");
    }
    net.settle();
    let last_index = net.raft(0).last_index();
    assert!(matches!(
        refused(&mut net, 0, ConfChange::Promote(3)),
        ConfChangeError::NotCaughtUp { id: 3, last_index: l, .. } if l == last_index
    ));
    net.heal();
    net.tick_all(3);
    net.conf_change(0, ConfChange::Promote(3)).unwrap();
    net.settle();
    // The last voter stays.
    let mut lone = Network::new(1, |_| {});
    lone.tick_until_leader();
    assert_eq!(
        refused(&mut lone, 0, ConfChange::Remove(0)),
        ConfChangeError::LastVoter(0)
    );
}

#[test]
fn a_new_leader_proposes_no_change_before_its_first_entry_commits() {
    let mut net = three_and_a_learner(no_pre_vote);
    // Node 1 wins term 2, but no acknowledgement of its no-op reaches it yet.
    net.filter = Some(Box::new(|m: &mut Message| {
        !matches!(m.body, MessageBody::AppendEntriesResponse { .. })
    }));
    net.campaign(1);
    assert_eq!(net.leaders(), vec![1]);
    assert!(matches!(
        net.conf_change(1, ConfChange::Promote(3)),
        Err(RaftError::ConfChange(ConfChangeError::TermNotCommitted))
    ));
    net.filter = None;
    net.tick_all(3);
    assert!(net.raft(1).commit_index() >= net.raft(1).last_index());
    net.conf_change(1, ConfChange::Promote(3)).unwrap();
}

#[test]
fn a_configuration_is_in_force_when_appended_and_reverts_when_truncated() {
    let mut net = three_and_a_learner(no_pre_vote);
    // 0, cut off, appends a change only it holds.
    net.isolate(0);
    let index = net.conf_change(0, ConfChange::Promote(3)).unwrap();
    net.settle();
    assert!(
        net.raft(0).membership().is_voter(3),
        "in force before commit"
    );
    assert_eq!(voters_of(&net, 0), vec![0, 1, 2, 3]);
    // 1 and 2 elect 1, whose entry at `index` overwrites it when 0 rejoins.
    net.campaign(1);
    assert_eq!(net.raft(1).role(), Role::Leader);
    net.propose(1, b"overwrites");
    net.settle();
    net.heal();
    net.tick_all(3);
    assert_eq!(net.raft(0).role(), Role::Follower);
    assert_eq!(net.raft(0).log_term(index), Some(net.raft(1).term()));
    assert!(
        net.raft(0).membership().is_learner(3),
        "reverted with its entry"
    );
    assert_eq!(voters_of(&net, 0), vec![0, 1, 2]);
    assert!(net.violations.is_empty(), "{:?}", net.violations);
}

/// etcd's learner-must-vote case: 3 was promoted by an entry it never received, and its vote
/// is needed to elect a leader of the four-voter configuration.
#[test]
fn a_promoted_learner_that_has_not_heard_of_it_still_votes() {
    let mut net = three_and_a_learner(no_pre_vote);
    net.cut.insert((0, 3));
    let index = net.conf_change(0, ConfChange::Promote(3)).unwrap();
    net.settle();
    assert!(net.raft(0).commit_index() >= index, "0, 1, 2 of four");
    assert!(net.raft(3).membership().is_learner(3), "3 has not heard");
    net.crash(0);
    net.heal();
    // 1 needs three of {0, 1, 2, 3}: itself, 2, and the learner.
    net.campaign(1);
    assert_eq!(net.leaders(), vec![1]);
    let index = net.propose(1, b"committed by 1, 2, 3");
    net.settle();
    assert!(net.raft(1).commit_index() >= index);
    assert!(net.raft(3).membership().is_voter(3), "now it knows");
    assert!(net.violations.is_empty(), "{:?}", net.violations);
}

#[test]
fn the_leader_removes_itself_leads_until_it_commits_then_hands_over() {
    let mut net = Network::new(3, |_| {});
    net.campaign(0);
    let index = net.conf_change(0, ConfChange::Remove(0)).unwrap();
    assert_eq!(net.raft(0).role(), Role::Leader, "leads until it commits");
    assert!(net.raft(0).is_removed());
    // With 1 unreachable, 0 and 2 hold the entry but the new configuration {1, 2} has no
    // majority without 1: 0 does not count itself.
    net.isolate(1);
    net.settle();
    assert!(net.raft(0).commit_index() < index);
    assert_eq!(net.raft(0).role(), Role::Leader);
    net.heal();
    // The lost AppendEntries is resent after two heartbeats without progress.
    for _ in 0..5 {
        if net.raft(0).commit_index() < index {
            net.tick_all(1);
        }
    }
    assert!(net.raft(0).commit_index() >= index);
    assert_ne!(net.raft(0).role(), Role::Leader, "stepped down");
    let leader = net.tick_until_leader();
    assert!(leader == 1 || leader == 2);
    // The removed node never campaigns and its vote requests are ignored; the rest commit.
    let term = net.raft(0).term();
    net.tick_one(0, 100);
    assert_eq!(net.raft(0).term(), term);
    assert_ne!(net.raft(0).role(), Role::Leader);
    let index = net.propose(leader, b"two voters");
    net.crash(0);
    net.settle();
    assert!(net.raft(leader).commit_index() >= index);
    assert!(net.violations.is_empty(), "{:?}", net.violations);
}

#[test]
fn a_removed_node_never_grants_a_vote_and_its_requests_are_dropped() {
    let mut net = Network::new(3, |_| {});
    net.campaign(0);
    net.conf_change(0, ConfChange::Remove(2)).unwrap();
    net.settle();
    assert!(net.raft(2).is_removed());
    let last_index = net.raft(1).last_index();
    let vote = |from, to, term| Message {
        from,
        to,
        term,
        body: MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: last_index + 10,
            last_log_term: term,
        },
    };
    let term = net.raft(1).term();
    net.raft_mut(1).step(vote(2, 1, term + 5));
    assert_eq!(
        net.raft(1).term(),
        term,
        "a removed node's request raises no term"
    );
    net.raft_mut(2).step(vote(1, 2, term + 5));
    let rd = net.raft_mut(2).ready();
    assert!(rd
        .messages
        .iter()
        .chain(&rd.persisted_messages)
        .all(|m| !matches!(
            m.body,
            MessageBody::RequestVoteResponse { granted: true, .. }
        )));
}

#[test]
fn snapshots_carry_the_configuration_to_a_joiner_and_across_restarts() {
    let mut net = three_and_a_learner(|_| {});
    net.conf_change(0, ConfChange::Promote(3)).unwrap();
    net.settle();
    net.conf_change(0, ConfChange::Remove(1)).unwrap();
    net.settle();
    for _ in 0..3 {
        net.propose(0, b"x");
    }
    net.settle();
    let applied = net.raft(0).applied_index();
    net.compact(0, applied, applied + 1);
    // Node 4 joins after the log that made the configuration is gone: it learns it from the
    // snapshot.
    net.add_empty_node(4, |_| {});
    net.conf_change(0, ConfChange::AddLearner(4)).unwrap();
    net.settle();
    assert_eq!(net.installs.get(&4).map(Vec::len), Some(1));
    assert_eq!(net.raft(4).membership(), net.raft(0).membership());
    assert_eq!(voters_of(&net, 4), vec![0, 2, 3]);
    assert!(net.raft(4).membership().was_removed(1));
    // Restarts from the snapshot file's configuration plus the log after it.
    for id in [0, 4] {
        let before = net.raft(id).membership().clone();
        net.crash(id);
        net.restart(id);
        assert_eq!(net.raft(id).membership(), &before, "node {id}");
    }
    let leader = net.tick_until_leader();
    let index = net.propose(leader, b"y");
    net.settle();
    assert!(net.raft(leader).commit_index() >= index);
    assert!(net.violations.is_empty(), "{:?}", net.violations);
}

/// One of the three counter-examples in Ongaro's 2015 report of the single-server change bug
/// (raft-dev, "bug in single-server membership changes"): leader 0 of the old configuration
/// C = {0, 1, 2, 3} appends change D but few receive it; node 1 is elected in C and appends
/// change E; a majority of E and a majority of D need not overlap, so without the fix E can
/// commit and 0 can then win an election in D and overwrite it.
struct BugCase {
    learners: &'static [NodeId],
    d: ConfChange,
    /// Who receives D from 0.
    d_to: &'static [NodeId],
    e: ConfChange,
    /// 0's side (with 0), the node both sides need, and 1's side (with 1).
    old: &'static [NodeId],
    swing: NodeId,
    new: &'static [NodeId],
}

const ONE_ADD_ONE_REMOVE: BugCase = BugCase {
    learners: &[4],
    d: ConfChange::Promote(4),
    d_to: &[4],
    e: ConfChange::Remove(0),
    old: &[0, 4],
    swing: 3,
    new: &[1, 2],
};
const TWO_ADDS: BugCase = BugCase {
    learners: &[4, 5],
    d: ConfChange::Promote(4),
    d_to: &[4],
    e: ConfChange::Promote(5),
    old: &[0, 4],
    swing: 3,
    new: &[1, 2, 5],
};
const TWO_REMOVES: BugCase = BugCase {
    learners: &[],
    d: ConfChange::Remove(3),
    d_to: &[],
    e: ConfChange::Remove(0),
    old: &[0],
    swing: 2,
    new: &[1, 3],
};

/// Plays `case`; returns the network after 0 tried to win in D, and whether E was proposed
/// before 1's no-op committed (only possible with the unsafe test flag).
fn play_bug_case(case: &BugCase, unsafe_rule: bool) -> (Network, bool) {
    let configure = move |c: &mut Config| {
        no_pre_vote(c);
        c.testing_unsafe_conf_change_before_term_commit = unsafe_rule;
    };
    let mut net = Network::new(4, configure);
    net.campaign(0);
    for &learner in case.learners {
        net.add_empty_node(learner, configure);
        net.conf_change(0, ConfChange::AddLearner(learner)).unwrap();
        net.settle();
    }
    let all: Vec<NodeId> = net.configs.keys().copied().collect();
    // 0 appends D; only `d_to` receives it.
    let others: Vec<NodeId> = all
        .iter()
        .copied()
        .filter(|id| *id != 0 && !case.d_to.contains(id))
        .collect();
    net.split(&[0], &others);
    let d_index = net.conf_change(0, case.d).unwrap();
    net.settle();
    assert!(net.raft(0).commit_index() < d_index, "D is not committed");
    // 1 is elected in C by the swing node's vote, but sends it no entries.
    net.heal();
    let mut rest = case.new.to_vec();
    rest.push(case.swing);
    net.split(case.old, &rest);
    let swing = case.swing;
    net.filter = Some(Box::new(move |m: &mut Message| {
        !(m.from == 1
            && m.to == swing
            && matches!(
                m.body,
                MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. }
            ))
    }));
    net.campaign(1);
    assert_eq!(net.raft(1).role(), Role::Leader);
    let early = net.conf_change(1, case.e);
    let e_index = match early {
        Ok(index) => index,
        Err(RaftError::ConfChange(ConfChangeError::TermNotCommitted)) => {
            // The fix: first the no-op commits, which takes the swing node.
            net.filter = None;
            net.tick_all(2);
            net.conf_change(1, case.e).unwrap()
        }
        Err(e) => panic!("unexpected {e:?}"),
    };
    net.settle();
    assert!(net.raft(1).commit_index() >= e_index, "E committed");
    // 1's side goes away; 0 campaigns in D with the swing node.
    net.filter = None;
    net.heal();
    net.split(case.new, &[case.old, &[case.swing]].concat());
    // 0 (still leading its old term, cut off) restarts and campaigns: the first try may only
    // teach it the swing node's term.
    let e_term = net.raft(1).term();
    net.crash(0);
    net.restart(0);
    for _ in 0..2 {
        if net.raft(0).role() != Role::Leader {
            net.campaign(0);
        }
    }
    if net.raft(0).role() == Role::Leader {
        assert!(net.raft(0).term() > e_term);
        net.propose(0, b"from D's leader");
        net.settle();
        net.heal();
        net.tick_all(5);
    }
    (net, early.is_ok())
}

/// The index of E in 1's log.
fn e_index_of(net: &Network, case: &BugCase) -> Index {
    let e = case.e.encode();
    net.raft(1)
        .entries()
        .iter()
        .rfind(|entry| entry.kind == EntryKind::ConfChange && entry.data.starts_with(&e))
        .map(|entry| entry.index)
        .expect("E is in 1's log")
}

fn bug_case_is_prevented(case: &BugCase) {
    let (net, early) = play_bug_case(case, false);
    assert!(!early, "E must wait for the new leader's no-op to commit");
    assert_ne!(net.raft(0).role(), Role::Leader, "0 cannot win in D");
    let e_index = e_index_of(&net, case);
    assert_eq!(
        net.raft(case.swing).log_term(e_index),
        net.raft(1).log_term(e_index),
        "the swing node holds E"
    );
    assert!(net.violations.is_empty(), "{:?}", net.violations);
    // And the unsafe rule shows the scenario is real: committed E is overwritten.
    let (net, early) = play_bug_case(case, true);
    assert!(early);
    assert_eq!(net.raft(0).role(), Role::Leader, "0 won in D");
    assert!(
        !net.violations.is_empty(),
        "the checker sees the lost commit"
    );
}

#[test]
fn ongaro_2015_one_add_one_remove() {
    bug_case_is_prevented(&ONE_ADD_ONE_REMOVE);
}

#[test]
fn ongaro_2015_two_adds() {
    bug_case_is_prevented(&TWO_ADDS);
}

#[test]
fn ongaro_2015_two_removes() {
    bug_case_is_prevented(&TWO_REMOVES);
}

/// A node whose own removal is appended but not committed may hold the most up-to-date log:
/// the others can then elect nobody without it (its log beats theirs, and the fourth voter is
/// down). It campaigns on the new configuration's votes, commits its removal and steps down.
#[test]
fn a_node_whose_removal_is_pending_can_still_lead_the_cluster_out_of_it() {
    let mut net = Network::new(4, |_| {});
    net.campaign(0);
    net.propose(0, b"everywhere");
    net.settle();
    net.crash(3);
    net.isolate(0);
    let index = net.conf_change(0, ConfChange::Remove(0)).unwrap();
    net.settle();
    // 0 loses leadership with its removal only in its own log.
    net.crash(0);
    net.restart(0);
    net.heal();
    assert!(net.raft(0).is_removed() && net.raft(0).commit_index() < index);
    let mut led = None;
    for _ in 0..300 {
        net.tick_all(1);
        if let Some(leader) = net
            .leaders()
            .into_iter()
            .find(|&id| id != 0 && net.raft(id).commit_index() >= index)
        {
            led = Some(leader);
            break;
        }
    }
    let leader = led.expect("1 or 2 leads {1, 2, 3} after 0 committed its removal");
    assert_ne!(net.raft(0).role(), Role::Leader);
    let write = net.propose(leader, b"after");
    net.settle();
    assert!(net.raft(leader).commit_index() >= write);
    assert!(net.violations.is_empty(), "{:?}", net.violations);
}
