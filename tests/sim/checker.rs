//! The safety checker, run after every simulation step.
//!
//! It checks Raft's guarantees (Figure 3 of the paper) from outside the cores: Election Safety,
//! Log Matching, Leader Completeness and State Machine Safety; that a committed entry stays
//! durable on a quorum through crashes; the core's durability promise that it applies only
//! entries durable on the node; and that linearizable reads see every write acknowledged before
//! they began. It owns compact shadows of what it has observed (each node's log, the committed
//! log, each term's leader with its log at election) and never drives a node or draws randomness.
//!
//! Logs are compared through chained prefix hashes: two logs have the same hash at index `i`
//! exactly when they hold the same entries `1..=i` (up to 64-bit collisions). So each check costs
//! what changed, not the length of the log.
//!
//! Snapshots: a chain may start after a prefix it only knows by hash (a snapshot's, or the
//! committed chain's at a node's log offset). A node's snapshot data carries the prefix hash of
//! the state it replaces, so State Machine Safety across snapshots is one comparison with the
//! committed chain. A compacted log is compared only where it still holds entries; what lies
//! below its offset is committed (the offset is at or below an applied index), and is taken from
//! the committed chain.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use raftchat::raft::{
    ConfChange, Entry, EntryKind, Index, Membership, NodeId, Raft, Role, SnapshotMeta, Term,
};

/// A broken property: what, and the evidence.
#[derive(Clone, Debug)]
pub struct Violation {
    pub property: &'static str,
    pub detail: String,
}

impl Violation {
    pub fn new(property: &'static str, detail: impl Into<String>) -> Violation {
        Violation {
            property,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} violated: {}", self.property, self.detail)
    }
}

/// splitmix64's finaliser: a cheap, well-mixed 64-bit hash step.
pub fn mix(h: u64, x: u64) -> u64 {
    let mut z = (h ^ x).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What identifies an entry's content at a known index: its term and a digest of kind and data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryKey {
    pub term: Term,
    pub digest: u64,
}

impl EntryKey {
    pub fn of(entry: &Entry) -> EntryKey {
        let mut digest = mix(entry.kind as u64, entry.data.len() as u64);
        for chunk in entry.data.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            digest = mix(digest, u64::from_le_bytes(word));
        }
        EntryKey {
            term: entry.term,
            digest,
        }
    }
}

/// A log seen as keys plus chained prefix hashes. Entries `1..=start` are known only by their
/// hash (`prefix[0]`) and the last one's term; `keys[i]` is entry `start + 1 + i` and
/// `prefix[i]` covers entries `1..=start + i`.
#[derive(Clone, Debug)]
pub struct LogChain {
    start: Index,
    start_term: Term,
    keys: Vec<EntryKey>,
    prefix: Vec<u64>,
}

/// The hash of the empty log.
pub const EMPTY_PREFIX: u64 = 0x6c6f_6700_0000_0001;

/// The prefix hash of entries `1..=index` from that of `1..=index - 1` and entry `index`.
pub fn chain_hash(before: u64, index: Index, key: EntryKey) -> u64 {
    mix(mix(mix(before, index), key.term), key.digest)
}

impl Default for LogChain {
    fn default() -> LogChain {
        LogChain {
            start: 0,
            start_term: 0,
            keys: Vec::new(),
            prefix: vec![EMPTY_PREFIX],
        }
    }
}

impl LogChain {
    /// The last index.
    pub fn len(&self) -> Index {
        self.start + self.keys.len() as Index
    }

    /// Entries up to here are known only by hash.
    pub fn start(&self) -> Index {
        self.start
    }

    pub fn key(&self, index: Index) -> Option<EntryKey> {
        let position = index.checked_sub(self.start)?.checked_sub(1)?;
        self.keys.get(usize::try_from(position).ok()?).copied()
    }

    /// The hash of entries `1..=len`, if the log is that long and `len` is not below the start.
    pub fn prefix(&self, len: Index) -> Option<u64> {
        let position = len.checked_sub(self.start)?;
        self.prefix.get(usize::try_from(position).ok()?).copied()
    }

    pub fn last_term(&self) -> Term {
        self.keys.last().map_or(self.start_term, |key| key.term)
    }

    /// Drops the entries after `len` (never below the start).
    pub fn truncate(&mut self, len: Index) {
        let keep = len.max(self.start) - self.start;
        self.keys.truncate(keep as usize);
        self.prefix.truncate(keep as usize + 1);
    }

    /// Forgets everything: the log is now entries `1..=start`, known by `prefix` and the last
    /// one's `term` (a snapshot).
    pub fn reset(&mut self, start: Index, prefix: u64, term: Term) {
        self.start = start;
        self.start_term = term;
        self.keys.clear();
        self.prefix.clear();
        self.prefix.push(prefix);
    }

    pub fn push(&mut self, key: EntryKey) {
        let index = self.len() + 1;
        let before = *self.prefix.last().expect("prefix[0] always exists");
        self.keys.push(key);
        self.prefix.push(chain_hash(before, index, key));
        debug_assert_eq!(self.prefix.len(), self.keys.len() + 1);
    }
}

/// A snapshot of a simulated state machine: the place in the log it replaces, the prefix hash
/// of the entries applied to build it, and how many of those were client commands (what the
/// read checks look at).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotData {
    pub meta: SnapshotMeta,
    pub prefix: u64,
    pub commands: u64,
}

/// A leader as first observed: its term and its log (as prefix hashes) at that moment.
struct LeaderRecord {
    id: NodeId,
    log: LogChain,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct CheckerStats {
    pub leaders: u64,
    pub committed: Index,
}

pub struct Checker {
    /// The log each node's core showed at its last observation (kept through crashes).
    logs: Vec<LogChain>,
    /// For each node's shadow log, the configuration each of its configuration entries after
    /// the shadow's start sets, replayed here from the entries: `(index, configuration)`.
    /// Below the start the log is committed, and so is its configuration.
    confs: Vec<Vec<(Index, Membership)>>,
    /// The committed configurations: `(index, configuration from there on)`, from the
    /// bootstrap one at 0, replayed from the committed log's entries.
    committed_confs: Vec<(Index, Membership)>,
    /// Bumped whenever a node's shadow log changes; with the node's incarnation, says whether
    /// its configuration must be compared again (`check_membership`).
    log_versions: Vec<u64>,
    membership_checked: Vec<Option<(u64, u64)>>,
    /// `(committed length, voters bitmask, quorum)` of the configuration at the committed
    /// length, recomputed when the committed log grows.
    durable_quorum: (Index, u64, usize),
    /// Log Matching across all logs and all time: the prefix hash first seen for (index, term).
    prefix_of: HashMap<(Index, Term), (u64, NodeId)>,
    /// Election Safety: the one leader of each term, with its log when elected.
    leaders: BTreeMap<Term, LeaderRecord>,
    /// The committed log: every entry some node applied, in index order.
    committed: LogChain,
    /// `committed_by[t] = c`: entries `1..=c` were committed in term `t` or earlier (some node
    /// applied them while in term `t`). Every leader of a term > t held them when elected.
    committed_by: BTreeMap<Term, Index>,
    /// Each node's applied index in its current incarnation.
    applied: Vec<Index>,
    /// Snapshots installed from a leader, and snapshots restored at a restart.
    pub installs: u64,
    pub restores: u64,
}

impl Checker {
    /// `count` nodes, of which `0..voters` bootstrap the cluster.
    pub fn new(count: usize, voters: usize) -> Checker {
        Checker {
            logs: vec![LogChain::default(); count],
            confs: vec![Vec::new(); count],
            committed_confs: vec![(0, Membership::with_voters(0..voters as NodeId))],
            log_versions: vec![0; count],
            membership_checked: vec![None; count],
            durable_quorum: (0, (1u64 << voters) - 1, voters / 2 + 1),
            prefix_of: HashMap::new(),
            leaders: BTreeMap::new(),
            committed: LogChain::default(),
            committed_by: BTreeMap::new(),
            applied: vec![0; count],
            installs: 0,
            restores: 0,
        }
    }

    pub fn stats(&self) -> CheckerStats {
        CheckerStats {
            leaders: self.leaders.len() as u64,
            committed: self.committed.len(),
        }
    }

    /// Shadows a node's log after a step that may have changed it. Cores change logs only at
    /// the end (append, or truncate then append), so scanning back from the end to the last
    /// unchanged entry finds the change; `verify_log` rescans whole logs now and then in case a
    /// core ever rewrites the middle.
    ///
    /// `entries` is the in-memory suffix of the log, from `first_index`. Below it the log is
    /// compacted: that prefix is committed (the offset is at or below the node's snapshot, which
    /// is at or below an applied index), so if the shadow does not agree with the committed log
    /// there, it restarts from the committed log's hash at the offset.
    pub fn observe_log(
        &mut self,
        node: NodeId,
        first_index: Index,
        entries: &[Entry],
        term: Term,
    ) -> Result<(), Violation> {
        let offset = first_index.saturating_sub(1);
        self.align_offset(node, offset)?;
        let chain = &self.logs[node as usize];
        let last = offset + entries.len() as Index;
        let mut unchanged = chain.len().min(last);
        while unchanged > offset
            && chain.key(unchanged)
                != Some(EntryKey::of(&entries[(unchanged - first_index) as usize]))
        {
            unchanged -= 1;
        }
        self.extend_log(node, first_index, entries, unchanged, term)
    }

    /// Compares a node's whole log with its shadow (the slow path behind `observe_log`).
    pub fn verify_log(
        &mut self,
        node: NodeId,
        first_index: Index,
        entries: &[Entry],
        term: Term,
    ) -> Result<(), Violation> {
        let offset = first_index.saturating_sub(1);
        self.align_offset(node, offset)?;
        let chain = &self.logs[node as usize];
        let same = entries
            .iter()
            .enumerate()
            .take_while(|(position, entry)| {
                chain.key(first_index + *position as Index) == Some(EntryKey::of(entry))
            })
            .count() as Index;
        let same = offset + same;
        if same == chain.len() && same == offset + entries.len() as Index {
            return Ok(());
        }
        self.extend_log(node, first_index, entries, same, term)
    }

    /// Makes the shadow of `node`'s log agree with the committed log up to `offset`, where the
    /// node's in-memory log starts.
    /// (A shadow that starts above `offset` — the node restarted from an older disk state than
    /// the snapshot it had installed — is rebuilt from there too.)
    fn align_offset(&mut self, node: NodeId, offset: Index) -> Result<(), Violation> {
        let Some(committed) = self.committed.prefix(offset) else {
            return Err(Violation::new(
                "Log compaction",
                format!(
                    "node {node} compacted its log up to index {offset}, which was never committed (committed log ends at {})",
                    self.committed.len()
                ),
            ));
        };
        let chain = &mut self.logs[node as usize];
        if chain.prefix(offset) != Some(committed) {
            let term = self.committed.key(offset).map_or(0, |key| key.term);
            chain.reset(offset, committed, term);
            self.confs[node as usize].clear();
            self.log_versions[node as usize] += 1;
        }
        Ok(())
    }

    /// Replaces the shadow of `node`'s log after index `unchanged` with the entries after it,
    /// checking each new entry's place and its Log Matching against every log ever seen.
    fn extend_log(
        &mut self,
        node: NodeId,
        first_index: Index,
        entries: &[Entry],
        unchanged: Index,
        term: Term,
    ) -> Result<(), Violation> {
        let chain = &mut self.logs[node as usize];
        chain.truncate(unchanged);
        self.log_versions[node as usize] += 1;
        let confs = &mut self.confs[node as usize];
        confs.retain(|(index, _)| *index <= unchanged);
        for entry in &entries[(unchanged + 1 - first_index) as usize..] {
            let before = match confs.last() {
                Some((_, m)) => m,
                None => committed_config_at(&self.committed_confs, chain.start()),
            };
            if let Some(next) = next_config(before, entry) {
                let next = next.map_err(|why| {
                    Violation::new(
                        "Configuration rules",
                        format!("node {node}: entry {} of its log: {why}", entry.index),
                    )
                })?;
                confs.push((entry.index, next));
            }
            let index = chain.len() + 1;
            if entry.index != index {
                return Err(Violation::new(
                    "Log structure",
                    format!(
                        "node {node}: entry number {index} of its log has index {}",
                        entry.index
                    ),
                ));
            }
            if entry.term < chain.last_term() {
                return Err(Violation::new(
                    "Log structure",
                    format!(
                        "node {node}: entry {index} has term {} below the previous entry's term {}",
                        entry.term,
                        chain.last_term()
                    ),
                ));
            }
            chain.push(EntryKey::of(entry));
            let prefix = chain.prefix(index).expect("just pushed");
            match self.prefix_of.entry((index, entry.term)) {
                MapEntry::Vacant(vacant) => {
                    vacant.insert((prefix, node));
                }
                MapEntry::Occupied(seen) if seen.get().0 != prefix => {
                    return Err(Violation::new(
                        "Log Matching",
                        format!(
                            "node {node} holds entry (index {index}, term {}), but its log up to there differs from the log in which node {} held an entry (index {index}, term {}) before",
                            entry.term,
                            seen.get().1,
                            entry.term
                        ),
                    ));
                }
                MapEntry::Occupied(_) => {}
            }
        }
        if chain.last_term() > term {
            return Err(Violation::new(
                "Log structure",
                format!(
                    "node {node} in term {term} holds an entry of later term {}",
                    chain.last_term()
                ),
            ));
        }
        Ok(())
    }

    /// Election Safety, and Leader Completeness for a newly observed leader (then returns true).
    /// Call after `observe_log` for the same node, so its shadow log is current.
    pub fn observe_role(
        &mut self,
        node: NodeId,
        role: Role,
        term: Term,
    ) -> Result<bool, Violation> {
        if role != Role::Leader {
            return Ok(false);
        }
        if let Some(leader) = self.leaders.get(&term) {
            if leader.id == node {
                return Ok(false);
            }
        }
        let removed = &self.committed_confs.last().expect("never empty").1;
        if removed.was_removed(node) {
            return Err(Violation::new(
                "Removed nodes stay out",
                format!("node {node}, whose removal committed, won the election of term {term}"),
            ));
        }
        if let Some(leader) = self.leaders.get(&term) {
            return Err(Violation::new(
                "Election Safety",
                format!(
                    "nodes {} and {node} were both leader of term {term}",
                    leader.id
                ),
            ));
        }
        let must_hold = self
            .committed_by
            .range(..term)
            .map(|(_, &index)| index)
            .max()
            .unwrap_or(0);
        let log = self.logs[node as usize].clone();
        self.check_leader_holds(node, term, &log, must_hold)?;
        self.leaders.insert(term, LeaderRecord { id: node, log });
        Ok(true)
    }

    fn check_leader_holds(
        &self,
        leader: NodeId,
        leader_term: Term,
        log: &LogChain,
        committed_len: Index,
    ) -> Result<(), Violation> {
        if log.prefix(committed_len) == self.committed.prefix(committed_len) {
            return Ok(());
        }
        // A log that starts (by hash) at or past the committed length: its start was aligned with
        // the committed log, so it holds that prefix.
        if log.start() >= committed_len
            && log.prefix(log.start()) == self.committed.prefix(log.start())
        {
            return Ok(());
        }
        let missing = (1..=committed_len)
            .find(|&index| log.key(index) != self.committed.key(index))
            .unwrap_or(committed_len);
        Err(Violation::new(
            "Leader Completeness",
            format!(
                "committed entry {missing} (term {}) is not in the log of node {leader} elected leader of term {leader_term} ({} there; its log had {} entries)",
                self.committed.key(missing).map_or(0, |key| key.term),
                log.key(missing)
                    .map_or("no entry".to_string(), |key| format!("an entry of term {}", key.term)),
                log.len()
            ),
        ))
    }

    /// State Machine Safety for one applied entry: applied in order, the same entry every node
    /// applies at that index, and durable on this node (`durable` is its durable log).
    pub fn on_apply(
        &mut self,
        node: NodeId,
        entry: &Entry,
        durable: &LogChain,
    ) -> Result<(), Violation> {
        let index = self.applied[node as usize] + 1;
        if entry.index != index {
            return Err(Violation::new(
                "State Machine Safety",
                format!(
                    "node {node} applied index {} right after index {}",
                    entry.index,
                    index - 1
                ),
            ));
        }
        let key = EntryKey::of(entry);
        if durable.key(index) != Some(key) {
            return Err(Violation::new(
                "Durability contract",
                format!(
                    "node {node} was handed entry {index} (term {}) to apply, but its durable log holds {:?} there",
                    entry.term,
                    durable.key(index).map(|key| key.term)
                ),
            ));
        }
        match self.committed.key(index) {
            Some(committed) if committed != key => {
                return Err(Violation::new(
                    "State Machine Safety",
                    format!(
                        "node {node} applied entry {index} of term {}, another node applied a different entry (term {}) there",
                        entry.term, committed.term
                    ),
                ));
            }
            Some(_) => {}
            None => {
                debug_assert_eq!(self.committed.len() + 1, index);
                self.committed.push(key);
                let before = &self.committed_confs.last().expect("never empty").1;
                if let Some(next) = next_config(before, entry) {
                    let next = next.map_err(|why| {
                        Violation::new(
                            "Configuration rules",
                            format!("committed entry {index}: {why}"),
                        )
                    })?;
                    self.committed_confs.push((index, next));
                }
            }
        }
        self.applied[node as usize] = index;
        Ok(())
    }

    /// After a node applied a batch while in `term`: its applied prefix was committed in `term`
    /// or earlier, so every leader of a later term (even one elected before this moment) must
    /// have held it when elected (Leader Completeness). The leader of `term` itself may have
    /// appended it after its election.
    pub fn on_applied(&mut self, node: NodeId, term: Term) -> Result<(), Violation> {
        let applied = self.applied[node as usize];
        let known = self.committed_by.entry(term).or_insert(0);
        if *known >= applied {
            return Ok(());
        }
        *known = applied;
        for (&leader_term, leader) in self.leaders.range(term + 1..) {
            self.check_leader_holds(leader.id, leader_term, &leader.log, applied)?;
        }
        Ok(())
    }

    /// A crashed node loses its state machine: its next incarnation replays from index 1.
    pub fn on_crash(&mut self, node: NodeId) {
        self.applied[node as usize] = 0;
    }

    /// State Machine Safety across snapshots: the state machine `node` now holds (installed from
    /// a leader's snapshot, `restored` at a restart, or just made by `compact`) is the committed
    /// log applied up to the snapshot's index, and the snapshot's term is that entry's. The
    /// node's applied index moves to the snapshot (unless `compacted`: then it stays).
    pub fn on_snapshot(
        &mut self,
        node: NodeId,
        data: &SnapshotData,
        what: &'static str,
    ) -> Result<(), Violation> {
        let index = data.meta.index;
        let committed = self.committed.prefix(index);
        let term = self.committed.key(index).map_or(0, |key| key.term);
        if committed != Some(data.prefix) || (index > 0 && term != data.meta.term) {
            return Err(Violation::new(
                "State Machine Safety",
                format!(
                    "node {node} {what} a snapshot at index {index} (term {}) that is not the committed log applied up to there (committed log ends at {}; its term there: {term}; prefixes match: {})",
                    data.meta.term,
                    self.committed.len(),
                    committed == Some(data.prefix)
                ),
            ));
        }
        match what {
            "installed" => {
                self.installs += 1;
                self.applied[node as usize] = index;
            }
            "restored" => {
                self.restores += 1;
                self.applied[node as usize] = index;
            }
            _ => {}
        }
        Ok(())
    }

    /// A committed entry is never lost: the whole committed log is durable on a quorum, crashes
    /// included. (Prefix hashes chain, so checking the last committed index covers the rest.)
    pub fn check_committed_durable<'a>(
        &mut self,
        durable_logs: impl Iterator<Item = &'a LogChain>,
    ) -> Result<(), Violation> {
        let committed_len = self.committed.len();
        if committed_len == 0 {
            return Ok(());
        }
        // A majority of the voters of the configuration in force at the last committed index:
        // the ones that committed it (or, after a removal, a majority of the old ones).
        if self.durable_quorum.0 != committed_len {
            let config = committed_config_at(&self.committed_confs, committed_len);
            let mask = config.voters().fold(0u64, |bits, id| bits | 1 << id);
            self.durable_quorum = (committed_len, mask, config.quorum());
        }
        let (_, voters, quorum) = self.durable_quorum;
        let want = self.committed.prefix(committed_len);
        // A bit per node that holds the committed log durably (clusters are small).
        let holders = durable_logs
            .enumerate()
            .filter(|(node, log)| voters & 1 << node != 0 && log.prefix(committed_len) == want)
            .fold(0u64, |bits, (node, _)| bits | 1 << node);
        if holders.count_ones() as usize >= quorum {
            return Ok(());
        }
        let nodes: Vec<u32> = (0..64).filter(|node| holders & 1 << node != 0).collect();
        Err(Violation::new(
            "Committed entries durable on a quorum",
            format!(
                "entries 1..={committed_len} were committed, but only voters {nodes:?} of {:?} still hold them all durably (quorum {quorum})",
                committed_config_at(&self.committed_confs, committed_len)
                    .voters()
                    .collect::<Vec<_>>()
            ),
        ))
    }

    /// The latest committed configuration.
    pub fn committed_config(&self) -> &Membership {
        &self.committed_confs.last().expect("never empty").1
    }

    /// The membership rules, for a node observed after a step (call after `observe_log`):
    ///
    /// - its configuration in force is the last one in its log, or its snapshot's (the
    ///   committed one at its log's offset), also right after a truncation;
    /// - a leader holds at most one uncommitted configuration entry, and one of its own term
    ///   only once an entry of its term committed (checked at the end of the step that
    ///   appended it: commit only grows, and it needs a round trip to move).
    ///
    /// `incarnation` tells restarts apart: a restarted core must rebuild its configuration from
    /// its disk (`Persisted::membership` and the log), and is compared again.
    pub fn check_membership(
        &mut self,
        node: NodeId,
        incarnation: u64,
        raft: &Raft,
    ) -> Result<(), Violation> {
        let version = (incarnation, self.log_versions[node as usize]);
        let unchanged = self.membership_checked[node as usize] == Some(version);
        self.membership_checked[node as usize] = Some(version);
        let chain = &self.logs[node as usize];
        let confs = &self.confs[node as usize];
        if chain.len() > 0 && !unchanged {
            let expected = match confs.last() {
                Some((_, m)) => m,
                None => committed_config_at(&self.committed_confs, chain.start()),
            };
            if raft.membership() != expected {
                return Err(Violation::new(
                    "Configuration in force",
                    format!(
                        "node {node} uses {:?}, but the last configuration in its log (ending at {}) is {expected:?}",
                        raft.membership(),
                        chain.len()
                    ),
                ));
            }
        }
        if raft.role() != Role::Leader {
            return Ok(());
        }
        let commit = raft.commit_index();
        // (Index 1 is a leader's no-op carrying the bootstrap configuration, not a change.)
        let uncommitted = confs
            .iter()
            .rev()
            .take_while(|(index, _)| *index > commit && *index > 1)
            .count();
        if uncommitted > 1 {
            let uncommitted: Vec<Index> = confs
                .iter()
                .map(|(index, _)| *index)
                .filter(|&index| index > commit)
                .collect();
            return Err(Violation::new(
                "One configuration change at a time",
                format!(
                    "leader {node} of term {} holds uncommitted configuration entries at {uncommitted:?} (commit {commit})",
                    raft.term()
                ),
            ));
        }
        if uncommitted == 0 {
            return Ok(());
        }
        let index = confs.last().expect("one uncommitted").0;
        if raft.log_term(index) != Some(raft.term()) {
            return Ok(());
        }
        // The first entry of the leader's term: scan back from the change (the term at the
        // compacted log's offset is known; an entry there is committed anyway).
        let mut term_start = index;
        while term_start > 1 && raft.log_term(term_start - 1) == Some(raft.term()) {
            term_start -= 1;
        }
        if commit < term_start {
            return Err(Violation::new(
                "No configuration change before the term commits",
                format!(
                    "leader {node} of term {} appended a configuration change at {index} while its term's first entry {term_start} is not committed (commit {commit})",
                    raft.term()
                ),
            ));
        }
        Ok(())
    }
}

/// The configuration in force at `index` among `(index, configuration)` pairs (ascending).
fn committed_config_at(confs: &[(Index, Membership)], index: Index) -> &Membership {
    let at = confs.partition_point(|(i, _)| *i <= index);
    &confs[at.max(1) - 1].1
}

/// The configuration `entry` sets after `before`: a configuration change (it must follow the
/// single-server rules: at most one voter differs), or a new cluster's first entry carrying
/// its bootstrap configuration. `None` for every other entry.
fn next_config(before: &Membership, entry: &Entry) -> Option<Result<Membership, String>> {
    let next = match entry.kind {
        EntryKind::ConfChange => ConfChange::decode_entry(&entry.data)
            .map_err(|e| e.to_string())
            .and_then(|(change, _)| before.apply(change).map_err(|e| format!("{change:?}: {e}"))),
        EntryKind::Noop if entry.index == 1 && !entry.data.is_empty() => {
            Membership::decode(&entry.data).map_err(|e| e.to_string())
        }
        _ => return None,
    };
    Some(next.and_then(|next| {
        let changed = next.voters_changed(before);
        if changed > 1 && entry.kind == EntryKind::ConfChange {
            return Err(format!(
                "{changed} voters differ from the configuration before"
            ));
        }
        Ok(next)
    }))
}

/// A read is linearizable if it reflects every write acknowledged before it began: the index it
/// is served at (`seen`) must cover the highest index acknowledged by then (`acked_floor`).
pub fn check_read(
    node: NodeId,
    ctx: u64,
    what: &'static str,
    seen: Index,
    acked_floor: Index,
) -> Result<(), Violation> {
    if seen >= acked_floor {
        return Ok(());
    }
    Err(Violation::new(
        "Linearizable reads",
        format!(
            "read {ctx} on node {node}: {what} {seen} is below index {acked_floor}, a write acknowledged before the read began"
        ),
    ))
}
