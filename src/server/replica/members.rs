//! The replica's side of membership change (issue 16): configuration entries in, the member
//! table and the links' addresses out.
//!
//! - Appended entries (`Ready::entries`, the leader's own and a follower's alike): a
//!   configuration takes effect in the core as soon as it is appended, so an added member's
//!   address (the entry's context) is remembered at once and its link is dialled before the
//!   entry commits (`peer_addrs`).
//! - Committed entries: the member table (`chat::members`, replicated state carried by
//!   snapshots) applies the change, and `Event::MemberChanged` lets the node answer the
//!   request that proposed it.
//! - Whenever the core's configuration differs from the last one reported (an append, a
//!   truncation that reverted one, a snapshot), `take_members_changed` says so once, and the
//!   node re-aims the transport's links.
//!
//! Never decides anything the core decides: which changes are allowed, who votes.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::{Event, Output, Replica};
use crate::chat::members::MemberTable;
use crate::chat::StateMachine;
use crate::raft::{ConfChange, Entry, EntryKind, Index, Membership, NodeId, RaftError};
use crate::server::membership::member_change;

/// What the driver keeps about members beside the core and the state machine.
#[derive(Debug, Default)]
pub(super) struct MemberState {
    /// Addresses from configuration entries appended but maybe not yet applied.
    appended: BTreeMap<NodeId, SocketAddr>,
    /// The core's configuration and leader when the node last re-aimed its links.
    reported: Option<(Membership, Option<NodeId>)>,
}

/// The configuration a member table describes (a snapshot's, for the core).
pub(super) fn membership_of(table: &MemberTable) -> Membership {
    Membership::from_parts(table.voters(), table.learners(), table.removed())
}

impl Replica {
    /// The configuration in force (the last one appended, committed or not).
    pub fn membership(&self) -> &Membership {
        self.raft.membership()
    }

    /// Leader: appends a configuration entry whose context is `context` (the new member's
    /// `ip:port` for an add). Its outcome arrives as [`Event::MemberChanged`].
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
        context: &[u8],
    ) -> Result<Index, RaftError> {
        self.raft.propose_conf_change(change, context)
    }

    /// Where this node reaches member `id`. A bootstrap member at the address this node was
    /// bootstrapped with (its own view, which may differ from another node's behind NAT or a
    /// proxy); a member added later at the address its entry carries (the member table's, or
    /// the appended entry's before it is applied).
    pub fn member_addr(&self, id: NodeId) -> Option<SocketAddr> {
        let own_view = self.opts.bootstrap.iter().find(|(b, _)| *b == id);
        let table = || self.sm.members().get(id).and_then(|m| m.addr);
        own_view
            .map(|(_, a)| *a)
            .or_else(table)
            .or_else(|| self.members.appended.get(&id).copied())
    }

    /// Every other member of the configuration in force, with its address (for the links),
    /// and the leader this node follows even if it is not one: a leader that removes itself
    /// leads until that entry commits, and needs its followers' answers to see it commit.
    pub fn peer_addrs(&self) -> Vec<(NodeId, SocketAddr)> {
        let m = self.raft.membership();
        let leader = self
            .raft
            .leader()
            .filter(|l| !m.is_voter(*l) && !m.is_learner(*l));
        m.voters()
            .chain(m.learners())
            .chain(leader)
            .filter(|id| *id != self.id)
            .filter_map(|id| self.member_addr(id).map(|a| (id, a)))
            .collect()
    }

    /// True once after the core's configuration (or the leader) changed: the links should
    /// follow it.
    pub fn take_members_changed(&mut self) -> bool {
        let now = (self.raft.membership(), self.raft.leader());
        if self.members.reported.as_ref().map(|(m, l)| (m, *l)) == Some(now) {
            return false;
        }
        self.members.reported = Some((now.0.clone(), now.1));
        true
    }

    /// Remembers the addresses that appended configuration entries carry.
    pub(super) fn note_appended(&mut self, entries: &[Entry]) {
        for entry in entries.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            if let Ok((ConfChange::AddLearner(id), context)) = ConfChange::decode_entry(&entry.data)
            {
                let addr = std::str::from_utf8(context)
                    .ok()
                    .and_then(|t| t.parse().ok());
                if let Some(addr) = addr {
                    self.members.appended.insert(id, addr);
                }
            }
        }
    }

    /// Applies the committed configuration entry at `index` to the member table.
    pub(super) fn apply_conf_entry(&mut self, entry: &Entry, out: &mut Output) {
        let Ok((change, context)) = ConfChange::decode_entry(&entry.data) else {
            // The core validated it when it was proposed; every node skips it alike.
            log::error!(
                "node {}: configuration entry {} does not decode; skipped",
                self.id,
                entry.index
            );
            self.sm.apply_noop(entry.index);
            return;
        };
        let change = member_change(change);
        let fits = self.sm.apply_member_change(entry.index, change, context);
        if !fits {
            log::warn!(
                "node {}: configuration entry {} ({change:?}) does not fit the member table",
                self.id,
                entry.index
            );
        }
        log::info!(
            "node {}: applied {change:?} at index {}; members now {}",
            self.id,
            entry.index,
            self.sm
                .members()
                .encode_text()
                .trim_end()
                .replace('\n', ", ")
        );
        out.events.push(Event::MemberChanged {
            index: entry.index,
            change,
        });
    }
}

/// Fills an unset member table with the bootstrap list (a new cluster, or a snapshot written
/// before snapshots carried members).
pub(super) fn bootstrap_table(sm: &mut StateMachine, bootstrap: &[(NodeId, SocketAddr)]) {
    sm.bootstrap_members(bootstrap.iter().copied());
}
