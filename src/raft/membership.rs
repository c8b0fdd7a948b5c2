//! Cluster configuration as replicated state: who votes, who only learns, and single-server
//! changes between configurations (Ongaro's dissertation §4.1), with the rules that fixed its
//! known bug (Ongaro, raft-dev, 2015).
//!
//! Owns the values and their rules only: [`Membership`] (voters, learners, ids removed for
//! good), [`ConfChange`] (one change and its bytes in a log entry) and [`ConfigHistory`] (the
//! configuration in force at each log index, which follows appends, truncations and commits).
//! It never sends or stores anything.
//!
//! The core (`node.rs`) keeps a [`ConfigHistory`] beside its log: it follows every append,
//! truncation, compaction and snapshot install, and its effective configuration decides who
//! votes, who is replicated to and what a quorum is. The rules it enforces:
//!
//! - a change adds a learner, promotes a learner or removes a member, so consecutive
//!   configurations differ by at most one voter; a removed id is never a member again;
//! - a configuration takes effect when its entry is appended, and reverts when that entry is
//!   truncated ([`ConfigHistory::truncate_from`]);
//! - a leader proposes a change only when no change is uncommitted and an entry of its own term
//!   has committed ([`ConfigHistory::may_propose`]);
//! - an index commits when a majority of the voters *in force at that index* hold it
//!   ([`Membership::quorum_index`]); learners never count.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::types::{Index, NodeId};

/// A configuration: the voters, the learners (they receive the log but neither vote nor count
/// toward a quorum) and every id removed so far (never reused).
///
/// A value, shared behind an `Arc`: cloning is cheap, and a `Message` carrying one
/// (`InstallSnapshot`) stays small (every message is moved through queues).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Membership {
    sets: Arc<Sets>,
}

#[derive(Clone, Default, PartialEq, Eq)]
struct Sets {
    voters: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    removed: BTreeSet<NodeId>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("voters", &self.sets.voters)
            .field("learners", &self.sets.learners)
            .field("removed", &self.sets.removed)
            .finish()
    }
}

/// One single-server change, as carried in a configuration entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChange {
    /// A new node joins as a learner.
    AddLearner(NodeId),
    /// A learner becomes a voter.
    Promote(NodeId),
    /// A voter or a learner leaves for good.
    Remove(NodeId),
}

/// Why a change was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChangeError {
    /// The id is a member already, or was removed (ids are never reused).
    IdTaken(NodeId),
    /// Only a learner can be promoted.
    NotALearner(NodeId),
    /// The id is not a member.
    NotAMember(NodeId),
    /// The last voter cannot be removed: nobody could commit anything afterwards.
    LastVoter(NodeId),
    /// A change is appended and not yet committed: one at a time.
    ChangePending { index: Index },
    /// This leader has not yet committed an entry of its own term.
    TermNotCommitted,
    /// A learner is promoted only once caught up: its `match_index` within
    /// `Config::promote_max_lag` entries of the leader's `last_index`, and heard from within an
    /// election timeout.
    NotCaughtUp {
        id: NodeId,
        match_index: Index,
        last_index: Index,
    },
    /// The entry's bytes are not a change.
    Malformed(&'static str),
}

impl std::fmt::Display for ConfChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfChangeError::IdTaken(id) => write!(f, "node id {id} is or was a member"),
            ConfChangeError::NotALearner(id) => write!(f, "node {id} is not a learner"),
            ConfChangeError::NotAMember(id) => write!(f, "node {id} is not a member"),
            ConfChangeError::LastVoter(id) => write!(f, "node {id} is the last voter"),
            ConfChangeError::ChangePending { index } => {
                write!(f, "the change at index {index} is not committed yet")
            }
            ConfChangeError::TermNotCommitted => {
                write!(f, "the leader has not committed an entry of its term yet")
            }
            ConfChangeError::NotCaughtUp {
                id,
                match_index,
                last_index,
            } => write!(
                f,
                "node {id} is not caught up (it holds up to index {match_index} of {last_index})"
            ),
            ConfChangeError::Malformed(why) => write!(f, "malformed change: {why}"),
        }
    }
}

impl std::error::Error for ConfChangeError {}

/// `op u8 | id u64 LE`: 1 add learner, 2 promote, 3 remove.
pub const CHANGE_BYTES: usize = 9;

impl ConfChange {
    pub fn encode(&self) -> [u8; CHANGE_BYTES] {
        let (op, id) = match *self {
            ConfChange::AddLearner(id) => (1, id),
            ConfChange::Promote(id) => (2, id),
            ConfChange::Remove(id) => (3, id),
        };
        let mut out = [0; CHANGE_BYTES];
        out[0] = op;
        out[1..].copy_from_slice(&id.to_le_bytes());
        out
    }

    /// Never panics: bytes from the log or the network that are not a change are an error.
    pub fn decode(bytes: &[u8]) -> Result<ConfChange, ConfChangeError> {
        let Ok(bytes) = <[u8; CHANGE_BYTES]>::try_from(bytes) else {
            return Err(ConfChangeError::Malformed("not 9 bytes"));
        };
        let mut id = [0; 8];
        id.copy_from_slice(&bytes[1..]);
        let id = u64::from_le_bytes(id);
        match bytes[0] {
            1 => Ok(ConfChange::AddLearner(id)),
            2 => Ok(ConfChange::Promote(id)),
            3 => Ok(ConfChange::Remove(id)),
            _ => Err(ConfChangeError::Malformed("unknown op")),
        }
    }

    /// The data of a `ConfChange` entry: the change's 9 bytes, then an opaque *context* the
    /// core never interprets (the server puts the new member's address there). Never panics.
    pub fn decode_entry(data: &[u8]) -> Result<(ConfChange, &[u8]), ConfChangeError> {
        if data.len() < CHANGE_BYTES {
            return Err(ConfChangeError::Malformed("shorter than 9 bytes"));
        }
        let (change, context) = data.split_at(CHANGE_BYTES);
        Ok((ConfChange::decode(change)?, context))
    }

    /// The data of a `ConfChange` entry: `encode()` then `context`.
    pub fn entry_data(&self, context: &[u8]) -> Vec<u8> {
        let mut data = Vec::with_capacity(CHANGE_BYTES + context.len());
        data.extend_from_slice(&self.encode());
        data.extend_from_slice(context);
        data
    }

    /// The node the change is about.
    pub fn id(&self) -> NodeId {
        match *self {
            ConfChange::AddLearner(id) | ConfChange::Promote(id) | ConfChange::Remove(id) => id,
        }
    }
}

impl Membership {
    /// The bootstrap configuration: these voters, no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership::from_parts(voters, [], [])
    }

    /// A configuration from its three sets (for a driver decoding one from its snapshot file or
    /// the wire). An id in several sets counts as a voter first, then a learner, then removed.
    pub fn from_parts(
        voters: impl IntoIterator<Item = NodeId>,
        learners: impl IntoIterator<Item = NodeId>,
        removed: impl IntoIterator<Item = NodeId>,
    ) -> Membership {
        let voters: BTreeSet<NodeId> = voters.into_iter().collect();
        let learners: BTreeSet<NodeId> = learners
            .into_iter()
            .filter(|id| !voters.contains(id))
            .collect();
        let removed = removed
            .into_iter()
            .filter(|id| !voters.contains(id) && !learners.contains(id))
            .collect();
        Membership {
            sets: Arc::new(Sets {
                voters,
                learners,
                removed,
            }),
        }
    }

    /// Every id removed so far (never a member again).
    pub fn removed(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.sets.removed.iter().copied()
    }

    /// Voters and learners.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    pub fn voter_count(&self) -> usize {
        self.sets.voters.len()
    }

    /// `count u32 LE | ids u64 LE` for voters, learners, removed in turn: how the first entry
    /// of a new cluster's log carries its bootstrap configuration (see `node.rs`), and a
    /// compact form a driver may use in its snapshot file or on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + 8 * self.len_all());
        for set in [&self.sets.voters, &self.sets.learners, &self.sets.removed] {
            out.extend_from_slice(&(set.len() as u32).to_le_bytes());
            for id in set {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        out
    }

    /// The inverse of `encode`; never panics: bytes that are not a configuration (short,
    /// trailing garbage, an id in two sets) are an error.
    pub fn decode(mut bytes: &[u8]) -> Result<Membership, ConfChangeError> {
        let mut sets: [BTreeSet<NodeId>; 3] = Default::default();
        for set in &mut sets {
            let (count, rest) = take_u32(bytes)?;
            bytes = rest;
            if (count as usize) > bytes.len() / 8 {
                return Err(ConfChangeError::Malformed("configuration count too large"));
            }
            for _ in 0..count {
                let (id, rest) = take_u64(bytes)?;
                bytes = rest;
                set.insert(id);
            }
        }
        if !bytes.is_empty() {
            return Err(ConfChangeError::Malformed("trailing configuration bytes"));
        }
        let [voters, learners, removed] = sets;
        let total = voters.len() + learners.len() + removed.len();
        let m = Membership::from_parts(voters, learners, removed);
        if m.len_all() != total {
            return Err(ConfChangeError::Malformed(
                "an id in two configuration sets",
            ));
        }
        Ok(m)
    }

    fn len_all(&self) -> usize {
        self.sets.voters.len() + self.sets.learners.len() + self.sets.removed.len()
    }

    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.sets.voters.iter().copied()
    }

    pub fn learners(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.sets.learners.iter().copied()
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.sets.voters.contains(&id)
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.sets.learners.contains(&id)
    }

    pub fn was_removed(&self, id: NodeId) -> bool {
        self.sets.removed.contains(&id)
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        self.sets.voters.len() / 2 + 1
    }

    /// The configuration after `change`, or why it may not happen.
    pub fn apply(&self, change: ConfChange) -> Result<Membership, ConfChangeError> {
        let mut next = Sets::clone(&self.sets);
        match change {
            ConfChange::AddLearner(id) => {
                if self.is_voter(id) || self.is_learner(id) || self.was_removed(id) {
                    return Err(ConfChangeError::IdTaken(id));
                }
                next.learners.insert(id);
            }
            ConfChange::Promote(id) => {
                if !next.learners.remove(&id) {
                    return Err(ConfChangeError::NotALearner(id));
                }
                next.voters.insert(id);
            }
            ConfChange::Remove(id) => {
                if self.is_voter(id) && self.sets.voters.len() == 1 {
                    return Err(ConfChangeError::LastVoter(id));
                }
                if !next.voters.remove(&id) && !next.learners.remove(&id) {
                    return Err(ConfChangeError::NotAMember(id));
                }
                next.removed.insert(id);
            }
        }
        Ok(Membership {
            sets: Arc::new(next),
        })
    }

    /// The highest index a majority of the voters hold (`match_of` gives each voter's match;
    /// learners are never asked).
    pub fn quorum_index(&self, match_of: impl FnMut(NodeId) -> Index) -> Index {
        self.quorum_index_in(&mut Vec::new(), match_of)
    }

    /// `quorum_index` with a caller's scratch buffer (the leader's hot path allocates nothing).
    /// No voters: 0.
    pub fn quorum_index_in(
        &self,
        scratch: &mut Vec<Index>,
        mut match_of: impl FnMut(NodeId) -> Index,
    ) -> Index {
        scratch.clear();
        scratch.extend(self.voters().map(&mut match_of));
        scratch.sort_unstable_by(|a, b| b.cmp(a));
        scratch.get(self.quorum() - 1).copied().unwrap_or(0)
    }

    /// How many voters are in one configuration and not the other (the single-server rule
    /// keeps this at most 1 between consecutive configurations).
    pub fn voters_changed(&self, other: &Membership) -> usize {
        self.sets
            .voters
            .symmetric_difference(&other.sets.voters)
            .count()
    }
}

fn take_u32(bytes: &[u8]) -> Result<(u32, &[u8]), ConfChangeError> {
    match bytes.split_first_chunk::<4>() {
        Some((head, rest)) => Ok((u32::from_le_bytes(*head), rest)),
        None => Err(ConfChangeError::Malformed("configuration truncated")),
    }
}

fn take_u64(bytes: &[u8]) -> Result<(u64, &[u8]), ConfChangeError> {
    match bytes.split_first_chunk::<8>() {
        Some((head, rest)) => Ok((u64::from_le_bytes(*head), rest)),
        None => Err(ConfChangeError::Malformed("configuration truncated")),
    }
}

/// The configuration in force at each index of a log: the one of its snapshot (or bootstrap)
/// and one per configuration entry after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigHistory {
    /// The configuration in force at `base_index` (a snapshot's, or the bootstrap's at 0).
    base_index: Index,
    base: Membership,
    /// `(index, configuration from that index on)`, indexes ascending and above `base_index`.
    changes: Vec<(Index, Membership)>,
}

impl ConfigHistory {
    pub fn new(base_index: Index, base: Membership) -> ConfigHistory {
        ConfigHistory {
            base_index,
            base,
            changes: Vec::new(),
        }
    }

    /// The configuration in force now: the last one appended (committed or not).
    pub fn effective(&self) -> &Membership {
        self.changes.last().map_or(&self.base, |(_, m)| m)
    }

    /// The configuration in force at `index`: the last change at or before it.
    pub fn at(&self, index: Index) -> &Membership {
        self.changes
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.base, |(_, m)| m)
    }

    /// The index of the last configuration entry, or of the base.
    pub fn last_change_index(&self) -> Index {
        self.changes.last().map_or(self.base_index, |(i, _)| *i)
    }

    /// The index whose configuration is the base (the snapshot's, or 0).
    pub fn base_index(&self) -> Index {
        self.base_index
    }

    /// Every configuration entry after the base: `(index, configuration from there on)`.
    pub fn changes(&self) -> &[(Index, Membership)] {
        &self.changes
    }

    /// A whole configuration takes effect at `index` (the bootstrap configuration a new
    /// cluster's first entry carries); like `append`, it replaces whatever followed `index`.
    pub fn set(&mut self, index: Index, membership: Membership) {
        self.truncate_from(index);
        self.changes.push((index, membership));
    }

    /// Commit (§5.4 with §4.1): the highest index in `(commit, last]` held by a majority of the
    /// voters of the configuration in force *at that index*, or `commit` if none is. At most two
    /// configurations are in force above a leader's commit index (one change may be
    /// uncommitted), so this looks at two quorums at most; the newest first, as a quorum of
    /// the newest configuration that holds an index holds everything before it too.
    pub fn quorum_index(
        &self,
        commit: Index,
        last: Index,
        scratch: &mut Vec<Index>,
        mut match_of: impl FnMut(NodeId) -> Index,
    ) -> Index {
        let newer = self
            .changes
            .iter()
            .rev()
            .take_while(|(i, _)| *i > commit)
            .map(|(i, m)| (*i, m));
        let mut hi = last;
        for (start, m) in newer.chain(std::iter::once((commit + 1, self.at(commit)))) {
            if start > hi {
                continue;
            }
            let q = m.quorum_index_in(scratch, &mut match_of).min(hi);
            if q >= start {
                return q;
            }
            hi = start - 1;
            if hi <= commit {
                break;
            }
        }
        commit
    }

    /// A configuration entry was appended at `index`: it takes effect now. An index at or
    /// below the last change (a log overwritten from there) replaces what follows it.
    pub fn append(&mut self, index: Index, change: ConfChange) -> Result<(), ConfChangeError> {
        self.truncate_from(index);
        let next = self.effective().apply(change)?;
        self.changes.push((index, next));
        Ok(())
    }

    /// Every entry at or after `index` is gone: configurations appended there revert.
    pub fn truncate_from(&mut self, index: Index) {
        self.changes.retain(|(i, _)| *i < index);
    }

    /// The log is compacted through a snapshot at `index`: the configuration in force there
    /// becomes the base (what the snapshot's metadata carries).
    pub fn compact(&mut self, index: Index) {
        if index <= self.base_index {
            return;
        }
        self.base = self.at(index).clone();
        self.base_index = index;
        self.changes.retain(|(i, _)| *i > index);
    }

    /// A leader may propose a change only when every change is committed and an entry of its
    /// own term is (its term's first entry, `term_start`, at or below `commit`).
    pub fn may_propose(&self, commit: Index, term_start: Index) -> Result<(), ConfChangeError> {
        if let Some((index, _)) = self.changes.iter().find(|(i, _)| *i > commit) {
            return Err(ConfChangeError::ChangePending { index: *index });
        }
        if term_start > commit {
            return Err(ConfChangeError::TermNotCommitted);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        Membership::with_voters([0, 1, 2])
    }

    #[test]
    fn a_learner_is_added_promoted_and_removed_one_voter_at_a_time() {
        let learner = three().apply(ConfChange::AddLearner(3)).unwrap();
        assert!(learner.is_learner(3) && !learner.is_voter(3));
        assert_eq!(learner.voters_changed(&three()), 0);
        let four = learner.apply(ConfChange::Promote(3)).unwrap();
        assert!(four.is_voter(3) && four.quorum() == 3);
        assert_eq!(four.voters_changed(&learner), 1);
        let without_0 = four.apply(ConfChange::Remove(0)).unwrap();
        assert_eq!(without_0.voters().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(without_0.was_removed(0));
    }

    #[test]
    fn changes_that_break_the_rules_are_refused() {
        let m = three().apply(ConfChange::Remove(2)).unwrap();
        assert_eq!(
            m.apply(ConfChange::AddLearner(2)),
            Err(ConfChangeError::IdTaken(2)),
            "a removed id is never reused"
        );
        assert_eq!(
            m.apply(ConfChange::AddLearner(1)),
            Err(ConfChangeError::IdTaken(1))
        );
        assert_eq!(
            m.apply(ConfChange::Promote(1)),
            Err(ConfChangeError::NotALearner(1))
        );
        assert_eq!(
            m.apply(ConfChange::Remove(7)),
            Err(ConfChangeError::NotAMember(7))
        );
        let lone = Membership::with_voters([5]);
        assert_eq!(
            lone.apply(ConfChange::Remove(5)),
            Err(ConfChangeError::LastVoter(5))
        );
    }

    #[test]
    fn learners_never_count_toward_a_commit() {
        let m = three().apply(ConfChange::AddLearner(3)).unwrap();
        // Only node 0 and the learner hold index 9: no majority of voters does.
        let matches = |id: NodeId| if id == 0 || id == 3 { 9 } else { 4 };
        assert_eq!(m.quorum_index(matches), 4);
        let promoted = m.apply(ConfChange::Promote(3)).unwrap();
        let matches = |id: NodeId| if id == 0 || id == 3 || id == 1 { 9 } else { 4 };
        assert_eq!(promoted.quorum_index(matches), 9);
    }

    #[test]
    fn a_configuration_takes_effect_when_appended_and_reverts_when_truncated() {
        let mut history = ConfigHistory::new(0, three());
        history.append(5, ConfChange::AddLearner(3)).unwrap();
        assert!(history.effective().is_learner(3), "in force before commit");
        assert!(!history.at(4).is_learner(3) && history.at(5).is_learner(3));
        history.truncate_from(5);
        assert_eq!(history.effective(), &three(), "reverted with its entry");
        // A new leader overwrites index 5 with another change: it replaces the old one.
        history.append(5, ConfChange::AddLearner(3)).unwrap();
        history.append(5, ConfChange::Remove(2)).unwrap();
        assert!(!history.effective().is_learner(3) && !history.effective().is_voter(2));
    }

    #[test]
    fn one_uncommitted_change_at_a_time_and_none_before_the_leaders_term_commits() {
        let mut history = ConfigHistory::new(0, three());
        // A new leader whose term began at index 8, commit still 7: no change yet (the bug's fix).
        assert_eq!(
            history.may_propose(7, 8),
            Err(ConfChangeError::TermNotCommitted)
        );
        assert_eq!(history.may_propose(8, 8), Ok(()));
        history.append(9, ConfChange::AddLearner(3)).unwrap();
        assert_eq!(
            history.may_propose(8, 8),
            Err(ConfChangeError::ChangePending { index: 9 })
        );
        assert_eq!(history.may_propose(9, 8), Ok(()));
    }

    #[test]
    fn compaction_keeps_the_configuration_in_force_at_the_snapshot() {
        let mut history = ConfigHistory::new(0, three());
        history.append(3, ConfChange::AddLearner(3)).unwrap();
        history.append(6, ConfChange::Promote(3)).unwrap();
        history.compact(4);
        assert!(history.at(4).is_learner(3));
        assert!(history.effective().is_voter(3));
        history.truncate_from(6);
        assert!(
            history.effective().is_learner(3),
            "reverts to the snapshot's"
        );
        assert_eq!(history.last_change_index(), 4);
    }

    #[test]
    fn entries_and_configurations_round_trip_and_garbage_is_an_error() {
        let change = ConfChange::AddLearner(7);
        let data = change.entry_data(b"10.0.0.7:9000");
        assert_eq!(
            ConfChange::decode_entry(&data),
            Ok((change, &b"10.0.0.7:9000"[..]))
        );
        assert_eq!(
            ConfChange::decode_entry(&change.encode()),
            Ok((change, &[][..]))
        );
        assert!(ConfChange::decode_entry(&data[..8]).is_err());
        let m = Membership::from_parts([0, 2, 3], [4, 2], [1]);
        assert_eq!(m.learners().collect::<Vec<_>>(), vec![4], "a voter first");
        assert_eq!(Membership::decode(&m.encode()), Ok(m.clone()));
        let bytes = m.encode();
        for len in 0..bytes.len() {
            assert!(Membership::decode(&bytes[..len]).is_err(), "{len}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Membership::decode(&long).is_err());
        // A count larger than the bytes that follow, and an id in two sets.
        assert!(Membership::decode(&[255, 255, 255, 255]).is_err());
        let mut twice = Vec::new();
        for set in [&[5u64][..], &[5], &[]] {
            twice.extend_from_slice(&(set.len() as u32).to_le_bytes());
            for id in set {
                twice.extend_from_slice(&id.to_le_bytes());
            }
        }
        assert!(Membership::decode(&twice).is_err());
    }

    #[test]
    fn commit_counts_the_configuration_in_force_at_each_index() {
        // {0,1,2,3} until index 5, where 3 is removed: {0,1,2} from 5 on. Commit is 4.
        let mut history = ConfigHistory::new(0, Membership::with_voters([0, 1, 2, 3]));
        history.append(5, ConfChange::Remove(3)).unwrap();
        let mut scratch = Vec::new();
        // 0 and 1 hold 6: a majority of {0,1,2} at index 5 and on.
        let matches = |id: NodeId| if id <= 1 { 6 } else { 4 };
        assert_eq!(history.quorum_index(4, 6, &mut scratch, matches), 6);
        // Only 0 holds 6; 0, 1 and 3 hold 4... nothing above 4 has a majority of its configuration.
        let matches = |id: NodeId| if id == 0 { 6 } else { 4 };
        assert_eq!(history.quorum_index(4, 6, &mut scratch, matches), 4);
        // Before the change, index 4 needed three of four; after it, none count at 4.
        let mut history = ConfigHistory::new(0, Membership::with_voters([0, 1, 2, 3]));
        history.append(5, ConfChange::Remove(3)).unwrap();
        let matches = |id: NodeId| [4, 4, 3, 0][id as usize];
        assert_eq!(history.quorum_index(3, 5, &mut scratch, matches), 3);
        let matches = |id: NodeId| [4, 4, 4, 0][id as usize];
        assert_eq!(history.quorum_index(3, 5, &mut scratch, matches), 4);
    }

    #[test]
    fn bytes_that_are_not_a_change_are_an_error_not_a_panic() {
        for change in [
            ConfChange::AddLearner(3),
            ConfChange::Promote(u64::MAX),
            ConfChange::Remove(0),
        ] {
            assert_eq!(ConfChange::decode(&change.encode()), Ok(change));
        }
        for bad in [&[][..], &[1, 2, 3], &[0; 9], &[4; 9], &[1; 10]] {
            assert!(ConfChange::decode(bad).is_err(), "{bad:?}");
        }
    }
}
