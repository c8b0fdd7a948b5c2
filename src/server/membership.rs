//! Membership change on a node (issue 16): the operator's requests (`members`, `add`,
//! `promote`, `remove`, from telnet and the binary protocol alike), which peers may connect,
//! and the answer once a change is committed.
//!
//! A change is a configuration entry the leader's core appends
//! (`Raft::propose_conf_change`; its context is the new member's `host:port`). It takes effect
//! in the core when appended; the member table (`chat::members`) follows when it is applied,
//! and the replica reports it (`Event::MemberChanged`) so the node answers the request that
//! proposed it and the transport's links follow the configuration (`Replica::peer_addrs`).
//! A follower does not forward a change: it answers `err` naming the leader and its address,
//! where the operator (or `client::Connection`) runs it again.
//!
//! Owns the request side only; never decides what the core decides (which changes are
//! allowed, when a learner is caught up).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use super::services::{Failure, ReplyTo, Services};
use super::NODE_ID_MAX;
use crate::chat::members::MemberChange;
use crate::raft::{ConfChange, NodeId, RaftError};

/// One operator request that changes the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberOp {
    /// A new learner at `addr` (`host:port` with a numeric host: names are not resolved on the
    /// event loop).
    Add {
        id: NodeId,
        addr: String,
    },
    Promote(NodeId),
    Remove(NodeId),
}

impl MemberOp {
    fn change(&self) -> ConfChange {
        match *self {
            MemberOp::Add { id, .. } => ConfChange::AddLearner(id),
            MemberOp::Promote(id) => ConfChange::Promote(id),
            MemberOp::Remove(id) => ConfChange::Remove(id),
        }
    }
}

/// The member table's view of a configuration change.
pub fn member_change(change: ConfChange) -> MemberChange {
    match change {
        ConfChange::AddLearner(id) => MemberChange::AddLearner(id),
        ConfChange::Promote(id) => MemberChange::Promote(id),
        ConfChange::Remove(id) => MemberChange::Remove(id),
    }
}

/// What the `ack` of a committed change says.
pub fn done_text(change: MemberChange) -> String {
    match change {
        MemberChange::AddLearner(id) => format!("added node {id} as a learner"),
        MemberChange::Promote(id) => format!("node {id} is a voter"),
        MemberChange::Remove(id) => format!("removed node {id}"),
    }
}

/// One line of `members`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberLine {
    pub id: NodeId,
    pub addr: Option<SocketAddr>,
    pub voter: bool,
    pub leader: bool,
}

impl MemberLine {
    /// `member <id> <host:port> voter|learner[ leader]`.
    pub fn telnet_line(&self) -> String {
        let addr = self.addr.map_or_else(|| "-".to_string(), |a| a.to_string());
        let role = if self.voter { "voter" } else { "learner" };
        let leader = if self.leader { " leader" } else { "" };
        format!("member {} {addr} {role}{leader}", self.id)
    }
}

/// Membership changes this node proposed and has not answered: the change each request
/// proposed, so an entry another leader wrote at the same index is not mistaken for it.
#[derive(Debug, Default)]
pub struct MemberRequests {
    /// By request id (ids grow, so the first is the oldest).
    proposed: BTreeMap<u64, MemberChange>,
}

/// Changes remembered at most: one is proposed at a time, and a request that failed another
/// way (a timeout, a new leader) is forgotten once this many newer ones came.
const MEMBER_REQUESTS_MAX: usize = 64;

impl MemberRequests {
    fn insert(&mut self, req: u64, change: MemberChange) {
        self.proposed.insert(req, change);
        while self.proposed.len() > MEMBER_REQUESTS_MAX {
            self.proposed.pop_first();
        }
    }

    /// The change request `req` proposed, if it did; forgotten either way.
    pub fn take(&mut self, req: u64) -> Option<MemberChange> {
        self.proposed.remove(&req)
    }
}

impl Services {
    /// The configuration in force on this node (the core's, the last one appended), with the
    /// addresses the member table (or the appended entry) gives.
    pub fn member_list(&self) -> Vec<MemberLine> {
        let membership = self.replica.membership();
        let leader = self.replica.leader();
        let line = |id: NodeId, voter: bool| MemberLine {
            id,
            addr: self.replica.member_addr(id),
            voter,
            leader: leader == Some(id),
        };
        let voters = membership.voters().map(|id| line(id, true));
        let learners = membership.learners().map(|id| line(id, false));
        let mut lines: Vec<MemberLine> = voters.chain(learners).collect();
        lines.sort_by_key(|l| l.id);
        lines
    }

    /// `members` for the binary protocol: the list, the cluster id and the bootstrap list (what
    /// a joining node stores).
    pub fn member_list_answer(&self) -> crate::proto::MemberList {
        let show = |a: Option<SocketAddr>| a.map_or_else(|| "-".to_string(), |a| a.to_string());
        let members = self
            .member_list()
            .into_iter()
            .map(|m| crate::proto::MemberInfo {
                id: m.id,
                addr: show(m.addr),
                voter: m.voter,
            })
            .collect();
        let bootstrap = self
            .cfg
            .members
            .iter()
            .enumerate()
            .map(|(id, addr)| (id as u64, addr.to_string()))
            .collect();
        crate::proto::MemberList {
            cluster_id: self.cfg.cluster_id,
            node_id: self.cfg.id,
            leader: self.replica.leader(),
            members,
            bootstrap,
        }
    }

    /// Proposes `op` as leader; the answer comes when its entry is applied here
    /// (`Node::on_member_changed`). A follower refuses, naming the leader to ask.
    pub fn start_member_change(&mut self, op: MemberOp, reply: ReplyTo) -> Result<u64, Failure> {
        if !self.replica.is_leader() {
            return Err(self.not_leader_for_change());
        }
        let change = op.change();
        let (id, context) = match &op {
            MemberOp::Add { id, addr } => {
                let addr: SocketAddr = addr.parse().map_err(|_| {
                    Failure::Rejected(format!(
                        "'{addr}' is not an IP address and port: not changed (names are not \
                         resolved; give the address, e.g. 10.0.0.4:20003)"
                    ))
                })?;
                (*id, addr.to_string())
            }
            MemberOp::Promote(id) | MemberOp::Remove(id) => (*id, String::new()),
        };
        if id >= NODE_ID_MAX {
            return Err(Failure::Rejected(format!(
                "node ids are below {NODE_ID_MAX}: not changed"
            )));
        }
        match self.replica.propose_conf_change(change, context.as_bytes()) {
            Ok(index) => {
                let req = self.table.new_request(Instant::now());
                self.table.insert_local_proposal(index, req);
                self.table.insert_write(req, reply, None);
                self.member_requests.insert(req, member_change(change));
                log::info!(
                    "node {}: proposed {change:?} (context '{context}') at index {index}",
                    self.cfg.id
                );
                Ok(req)
            }
            Err(RaftError::ConfChange(why)) => {
                Err(Failure::Rejected(format!("{why}: not changed")))
            }
            Err(RaftError::NotLeader { .. }) => Err(self.not_leader_for_change()),
            Err(e) => Err(Failure::NotStored(format!("{e}: not changed, try again"))),
        }
    }

    fn not_leader_for_change(&self) -> Failure {
        let at = |l: NodeId| {
            self.replica
                .member_addr(l)
                .map(|a| format!(" at {a}"))
                .unwrap_or_default()
        };
        let leader = match self.replica.leader() {
            Some(l) => format!("leader is node {l}{}", at(l)),
            None => "no leader known".to_string(),
        };
        Failure::NotStored(format!(
            "not leader ({leader}): not changed, run it on the leader"
        ))
    }

    /// Why an inbound peer claiming `id` is refused, if it is: this node's own id, an id
    /// removed from the cluster (never let back), or an id not in the configuration.
    pub fn peer_refusal(&self, id: NodeId) -> Option<String> {
        let membership = self.replica.membership();
        let member = membership.is_voter(id) || membership.is_learner(id);
        // A leader that removed itself still leads until that entry commits.
        let leading = self.replica.leader() == Some(id);
        if id == self.cfg.id {
            Some(format!("node id {id} is this node's own"))
        } else if member || leading {
            None
        } else if membership.was_removed(id) {
            Some(format!("node {id} was removed from this cluster"))
        } else {
            Some(format!("node id {id} is not a member of this cluster"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_line_marks_the_leader_and_an_unknown_address() {
        let line = MemberLine {
            id: 3,
            addr: Some("127.0.0.1:20003".parse().unwrap()),
            voter: false,
            leader: false,
        };
        assert_eq!(line.telnet_line(), "member 3 127.0.0.1:20003 learner");
        let leader = MemberLine {
            addr: None,
            voter: true,
            leader: true,
            ..line
        };
        assert_eq!(leader.telnet_line(), "member 3 - voter leader");
    }

    #[test]
    fn remembered_changes_are_bounded_and_taken_once() {
        let mut requests = MemberRequests::default();
        for req in 0..200 {
            requests.insert(req, MemberChange::Promote(req));
        }
        assert_eq!(requests.proposed.len(), MEMBER_REQUESTS_MAX);
        assert_eq!(requests.take(0), None, "the oldest were forgotten");
        assert_eq!(requests.take(199), Some(MemberChange::Promote(199)));
        assert_eq!(requests.take(199), None);
    }
}
