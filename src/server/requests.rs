//! Client requests in flight, whatever protocol they arrived on: writes waiting for their entry
//! to be applied, reads waiting for a read index and then for the state machine to reach it.
//!
//! A write is proposed here when this node leads, or forwarded to the leader otherwise; either
//! way the answer comes when *this* node applies the entry that names it as origin. Telnet and
//! binary sessions only translate their protocol into these calls and the answers back.

use super::node::{now_ms, ConnRef, Node, PendingRead, PendingWrite};
use crate::chat::{Applied, Command, Op, Origin, Outcome, SessionRef};
use crate::raft::{NodeId, RaftError, Role};
use crate::wire;

/// Who is waiting for a write, and how to answer.
pub(super) enum ReplyTo {
    /// A telnet command; for `join`, the room to enter once it is created.
    Telnet { join_room: Option<String> },
    /// A binary request with its client-chosen id.
    Binary { req_id: u64 },
}

/// A linearizable read, served once the state machine reached the read index.
pub(super) enum Query {
    ChatLog,
    History {
        room: String,
        n: usize,
    },
    Rooms,
    Get {
        key: String,
    },
    Keys {
        prefix: String,
    },
    /// Binary: a page of the chat log.
    LogPage {
        req_id: u64,
        from_position: u64,
        max_messages: u32,
    },
    /// Binary: one key's value.
    Value {
        req_id: u64,
        key: String,
    },
    /// Binary: the keys with a prefix (already validated).
    KeyList {
        req_id: u64,
        prefix: String,
    },
}

impl Query {
    /// The binary request id, for queries that came from a binary client.
    pub(super) fn binary_req_id(&self) -> Option<u64> {
        match self {
            Query::LogPage { req_id, .. }
            | Query::Value { req_id, .. }
            | Query::KeyList { req_id, .. } => Some(*req_id),
            _ => None,
        }
    }
}

/// Why a request failed, in the terms a client needs to decide what to do next.
#[derive(Debug)]
pub(super) enum Failure {
    /// The write was definitely not stored: retrying is safe.
    NotStored(String),
    /// The write may or may not be committed.
    Unknown(String),
    /// The read was not served: retrying is safe.
    NotServed(String),
    /// The request is invalid; retrying will not help.
    Rejected(String),
}

impl Failure {
    pub(super) fn text(&self) -> &str {
        match self {
            Failure::NotStored(t)
            | Failure::Unknown(t)
            | Failure::NotServed(t)
            | Failure::Rejected(t) => t,
        }
    }
}

fn describe(e: RaftError) -> String {
    match e {
        RaftError::NotLeader {
            leader_hint: Some(l),
        } => format!("no leader here (leader is node {l})"),
        RaftError::NotLeader { leader_hint: None } => "no leader".to_string(),
        RaftError::TransferInProgress => "leadership transfer in progress".to_string(),
        RaftError::BadTransferTarget => "bad transfer target".to_string(),
    }
}

impl Node {
    /// Proposes `op` (as leader) or forwards it to the leader. On success the request id now
    /// waits in `writes` and is answered when its entry is applied here.
    pub(super) fn start_write(
        &mut self,
        conn: ConnRef,
        op: Op,
        session: Option<SessionRef>,
        reply: ReplyTo,
    ) -> Result<u64, Failure> {
        let leader = self.raft.leader();
        let is_leader = self.raft.role() == Role::Leader;
        if !is_leader && !leader.is_some_and(|l| self.link_up(l)) {
            let hint = leader
                .map(|l| format!(" (leader node {l} unreachable)"))
                .unwrap_or_default();
            return Err(Failure::NotStored(format!(
                "no leader: not stored{hint}, try again"
            )));
        }
        let req = self.new_request();
        let early_ack = self.cfg.testing_early_ack && is_leader && matches!(op, Op::Post { .. });
        let mut command = Command {
            origin: Origin {
                node: self.cfg.id,
                req,
            },
            timestamp_ms: 0,
            session,
            op,
        };
        let mut data = std::mem::take(&mut self.scratch);
        data.clear();
        let proposed = if is_leader {
            command.timestamp_ms = now_ms();
            command.encode(&mut data);
            self.raft.propose(&data).map(Some)
        } else {
            command.encode(&mut data);
            let to = leader.expect("checked above");
            self.send_to(to, |out| wire::encode_propose(req, &data, out));
            Ok(None)
        };
        self.scratch = data;
        match proposed {
            Ok(local_index) => {
                if let Some(index) = local_index {
                    self.register_local_proposal(index, req);
                    if early_ack {
                        self.early_ack(req);
                    }
                }
                let forwarded_to = if local_index.is_some() { None } else { leader };
                self.writes.insert(
                    req,
                    PendingWrite {
                        conn,
                        reply,
                        forwarded_to,
                    },
                );
                Ok(req)
            }
            Err(e) => Err(Failure::NotStored(format!(
                "{}: not stored, try again",
                describe(e)
            ))),
        }
    }

    /// Asks the core for a read index; the query is served once it is applied.
    pub(super) fn start_read(&mut self, conn: ConnRef, query: Query) -> Result<u64, Failure> {
        let req = self.new_request();
        if self.cfg.testing_stale_reads {
            // Deliberately unsafe (tests only): whatever this node has applied, no ReadIndex.
            self.serve_stale(req, PendingRead { conn, query });
            return Ok(req);
        }
        match self.raft.read_index(req) {
            Ok(()) => {
                self.reads.insert(req, PendingRead { conn, query });
                Ok(req)
            }
            Err(e) => Err(Failure::NotServed(format!(
                "{}: read not served, try again",
                describe(e)
            ))),
        }
    }

    /// The leader side of a follower's forwarded proposal.
    pub(super) fn on_forwarded_proposal(&mut self, from: NodeId, origin_req: u64, data: &[u8]) {
        let mut command = match Command::decode(data) {
            Ok(command) if command.origin.node == from => command,
            // A forwarded command that does not decode, or speaks for another node, is dropped:
            // its sender times out with "outcome unknown", which is true.
            _ => {
                log::warn!(
                    "node {}: dropped a malformed forwarded proposal from node {from}",
                    self.cfg.id
                );
                return;
            }
        };
        command.timestamp_ms = now_ms();
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        command.encode(&mut buf);
        let result = self.raft.propose(&buf);
        self.scratch = buf;
        if let Err(e) = result {
            let leader_hint = match e {
                RaftError::NotLeader { leader_hint } => leader_hint,
                _ => None,
            };
            self.send_to(from, |out| {
                wire::encode_propose_rejected(origin_req, leader_hint, out)
            });
        }
    }

    pub(super) fn fail_write(&mut self, req: u64, failure: Failure) {
        if let Some(write) = self.writes.remove(&req) {
            match write.reply {
                ReplyTo::Telnet { .. } => self.telnet_fail(write.conn, &failure),
                ReplyTo::Binary { req_id } => self.binary_fail(write.conn, req_id, &failure),
            }
        }
    }

    pub(super) fn fail_read(&mut self, read: PendingRead, failure: Failure) {
        match read.query.binary_req_id() {
            Some(req_id) => self.binary_fail(read.conn, req_id, &failure),
            None => self.telnet_fail(read.conn, &failure),
        }
    }

    /// Answers the client waiting on an applied entry, and pushes posted messages to listeners.
    pub(super) fn deliver_applied(&mut self, ours: Option<u64>, applied: &Applied) {
        if let Some(write) = ours.and_then(|req| self.writes.remove(&req)) {
            match write.reply {
                ReplyTo::Telnet { join_room } => {
                    self.telnet_answer(write.conn, join_room, &applied.outcome)
                }
                ReplyTo::Binary { req_id } => {
                    self.binary_answer(write.conn, req_id, &applied.outcome)
                }
            }
        }
        // A retried request answered again must not be delivered twice.
        if let (Outcome::Posted { position }, false) = (&applied.outcome, applied.duplicate) {
            self.push_message(*position);
        }
    }

    /// A read whose read index has been applied: answer it from the state machine.
    pub(super) fn serve_query(&mut self, read: PendingRead) {
        match read.query {
            Query::LogPage {
                req_id,
                from_position,
                max_messages,
            } => self.binary_log_page(read.conn, req_id, from_position, max_messages),
            Query::Value { req_id, key } => self.binary_value(read.conn, req_id, &key),
            Query::KeyList { req_id, prefix } => self.binary_key_list(read.conn, req_id, &prefix),
            query => self.telnet_serve(read.conn, query),
        }
    }
}
