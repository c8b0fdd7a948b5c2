//! Cluster configuration as replicated state: who votes, who only learns, and single-server
//! changes between configurations (Ongaro's dissertation §4.1), with the rules that fixed its
//! known bug (Ongaro, raft-dev, 2015).
//!
//! Owns the values and their rules only: [`Membership`] (voters, learners, ids removed for
//! good), [`ConfChange`] (one change and its bytes in a log entry) and [`ConfigHistory`] (the
//! configuration in force at each log index, which follows appends, truncations and commits).
//! It never sends or stores anything.
//!
//! NOT YET WIRED into the core (`node.rs` still takes a fixed voter list from `Config`): this
//! is the first piece of issue 16's step 2. The rules it enforces:
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

use super::types::{Index, NodeId};

/// A configuration: the voters, the learners (they receive the log but neither vote nor count
/// toward a quorum) and every id removed so far (never reused).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    voters: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    removed: BTreeSet<NodeId>,
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
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// The entry's bytes are not a change.
    Malformed(String),
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
            ConfChangeError::Malformed(why) => write!(f, "malformed change: {why}"),
        }
    }
}

impl std::error::Error for ConfChangeError {}

/// `op u8 | id u64 LE`: 1 add learner, 2 promote, 3 remove.
const CHANGE_BYTES: usize = 9;

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
            return Err(ConfChangeError::Malformed(format!(
                "{} bytes, not {CHANGE_BYTES}",
                bytes.len()
            )));
        };
        let mut id = [0; 8];
        id.copy_from_slice(&bytes[1..]);
        let id = u64::from_le_bytes(id);
        match bytes[0] {
            1 => Ok(ConfChange::AddLearner(id)),
            2 => Ok(ConfChange::Promote(id)),
            3 => Ok(ConfChange::Remove(id)),
            op => Err(ConfChangeError::Malformed(format!("unknown op {op}"))),
        }
    }
}

impl Membership {
    /// The bootstrap configuration: these voters, no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            ..Membership::default()
        }
    }

    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().copied()
    }

    pub fn learners(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.learners.iter().copied()
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    pub fn was_removed(&self, id: NodeId) -> bool {
        self.removed.contains(&id)
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The configuration after `change`, or why it may not happen.
    pub fn apply(&self, change: ConfChange) -> Result<Membership, ConfChangeError> {
        let mut next = self.clone();
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
                if self.is_voter(id) && self.voters.len() == 1 {
                    return Err(ConfChangeError::LastVoter(id));
                }
                if !next.voters.remove(&id) && !next.learners.remove(&id) {
                    return Err(ConfChangeError::NotAMember(id));
                }
                next.removed.insert(id);
            }
        }
        Ok(next)
    }

    /// The highest index a majority of the voters hold (`match_of` gives each voter's match;
    /// learners are never asked).
    pub fn quorum_index(&self, mut match_of: impl FnMut(NodeId) -> Index) -> Index {
        let mut matches: Vec<Index> = self.voters().map(&mut match_of).collect();
        matches.sort_unstable_by(|a, b| b.cmp(a));
        matches.get(self.quorum() - 1).copied().unwrap_or(0)
    }

    /// How many voters are in one configuration and not the other (the single-server rule
    /// keeps this at most 1 between consecutive configurations).
    pub fn voters_changed(&self, other: &Membership) -> usize {
        self.voters.symmetric_difference(&other.voters).count()
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
