//! What every front-end may use: the transport, the replica driver and the request table, and
//! the two ways into them that all protocols share (start a write, start a read).
//!
//! A front-end turns its protocol's bytes into [`Services::start_write`] and
//! [`Services::start_read`] calls, and the node hands it back the outcome ([`ReplyTo`],
//! [`Failure`]) to turn into bytes. Nothing here knows a protocol's syntax.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::config::ServerConfig;
use super::limits::Limits;
use super::logins::Logins;
use super::replica::Replica;
use super::requests::RequestTable;
use super::transport::{ConnRef, Transport};
use crate::chat::{Command, Op, Origin, SessionRef};
use crate::raft::{NodeId, RaftError};
use crate::wire;

/// Who is waiting for a write, and how to answer.
#[derive(Debug)]
pub enum ReplyTo {
    /// A telnet command; for `join`, the room to enter once it is created.
    Telnet {
        conn: ConnRef,
        join_room: Option<String>,
    },
    /// A binary request with its client-chosen id.
    Binary { conn: ConnRef, req_id: u64 },
    /// A WebSocket request with its optional client-chosen id; for `join`, the room to enter.
    Web {
        conn: ConnRef,
        id: Option<u64>,
        join_room: Option<String>,
    },
}

/// A linearizable read, served once the state machine reached the read index.
#[derive(Debug)]
pub enum Query {
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
    /// WebSocket: the rooms, answered with the client's optional id.
    WebRooms {
        id: Option<u64>,
    },
    /// WebSocket: a room's latest `n` messages.
    WebHistory {
        id: Option<u64>,
        room: String,
        n: usize,
    },
}

impl Query {
    /// The binary request id, for queries that came from a binary client.
    pub fn binary_req_id(&self) -> Option<u64> {
        match self {
            Query::LogPage { req_id, .. }
            | Query::Value { req_id, .. }
            | Query::KeyList { req_id, .. } => Some(*req_id),
            _ => None,
        }
    }

    /// True for queries that came from a WebSocket session.
    pub fn is_web(&self) -> bool {
        matches!(self, Query::WebRooms { .. } | Query::WebHistory { .. })
    }
}

/// A read waiting in the request table.
#[derive(Debug)]
pub struct PendingRead {
    pub conn: ConnRef,
    pub query: Query,
}

/// Why a request failed, in the terms a client needs to decide what to do next.
#[derive(Debug)]
pub enum Failure {
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
    pub fn text(&self) -> &str {
        match self {
            Failure::NotStored(t)
            | Failure::Unknown(t)
            | Failure::NotServed(t)
            | Failure::Rejected(t) => t,
        }
    }

    /// A read the core could not serve (leadership lost or unknown).
    pub fn no_leader_for_read(leader_hint: Option<NodeId>) -> Failure {
        Failure::NotServed(format!(
            "no leader: read not served{}, try again",
            hint(leader_hint)
        ))
    }
}

fn hint(leader: Option<NodeId>) -> String {
    leader
        .map(|l| format!(" (leader is node {l})"))
        .unwrap_or_default()
}

fn describe(e: RaftError) -> String {
    match e {
        RaftError::NotLeader {
            leader_hint: Some(l),
        } => format!("no leader here (leader is node {l})"),
        RaftError::NotLeader { leader_hint: None } => "no leader".to_string(),
        RaftError::TransferInProgress => "leadership transfer in progress".to_string(),
        RaftError::BadTransferTarget => "bad transfer target".to_string(),
        RaftError::ConfChange(e) => e.to_string(),
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes this node started for its clients (proposed here or forwarded), and how they ended.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteCounts {
    /// `start_write` succeeded: proposed or forwarded.
    pub started: u64,
    /// Their entries were applied here (forwarded ones included).
    pub applied: u64,
    /// Answered with a failure after starting (a timed-out write may still be applied later).
    pub failed: u64,
}

pub struct Services {
    pub cfg: ServerConfig,
    pub transport: Transport,
    pub replica: Replica,
    pub table: RequestTable<ReplyTo, PendingRead>,
    /// `--testing-early-ack`: writes to acknowledge this turn, before they are committed.
    pub early_acks: Vec<u64>,
    /// A stale read or an early ack was queued: serve them before sleeping.
    pub dirty_soon: bool,
    /// For `/metrics`.
    pub writes: WriteCounts,
    /// Connection counts, timeouts and message rates (`server::limits`).
    pub limits: Limits,
    /// Register, login and passwd for every front-end: hash jobs and failed-login limits.
    pub logins: Logins,
    /// Reads of old history on the reader thread.
    pub reads: super::disk_reads::DiskReads,
    /// For `/metrics`: requests answered, by kind and outcome, and their latency.
    pub requests: crate::metrics::ClientMetrics,
    /// Membership changes proposed here, not yet answered (`server::membership`).
    pub member_requests: super::membership::MemberRequests,
    /// Scratch buffer for encoding commands.
    scratch: Vec<u8>,
}

impl Services {
    pub fn new(cfg: ServerConfig, transport: Transport, replica: Replica) -> Services {
        let timeout = std::time::Duration::from_millis(cfg.request_timeout_ms);
        let limits = Limits::new((*cfg.limits).clone(), Instant::now());
        Services {
            limits,
            logins: Logins::default(),
            reads: super::disk_reads::DiskReads::default(),
            cfg,
            transport,
            replica,
            // Request ids must never repeat across restarts: a replayed entry from an earlier
            // run must not answer a new request. Microseconds since the epoch only grow.
            table: RequestTable::new(now_ms() * 1000, timeout),
            early_acks: Vec::new(),
            dirty_soon: false,
            writes: WriteCounts::default(),
            requests: Default::default(),
            member_requests: Default::default(),
            scratch: Vec::new(),
        }
    }

    /// Proposes `op` (as leader) or forwards it to the leader. On success the request waits in
    /// the table and is answered when its entry is applied here.
    pub fn start_write(
        &mut self,
        op: Op,
        session: Option<SessionRef>,
        reply: ReplyTo,
    ) -> Result<u64, Failure> {
        let leader = self.replica.leader();
        let is_leader = self.replica.is_leader();
        let forward_to = match leader {
            _ if is_leader => None,
            Some(l) if self.transport.link_up(l) => Some(l),
            _ => {
                let hint = leader
                    .map(|l| format!(" (leader node {l} unreachable)"))
                    .unwrap_or_default();
                return Err(Failure::NotStored(format!(
                    "no leader: not stored{hint}, try again"
                )));
            }
        };
        let req = self.table.new_request(Instant::now());
        let early_ack = self.cfg.testing_early_ack && is_leader && matches!(op, Op::Post { .. });
        let command = Command {
            origin: Origin {
                node: self.cfg.id,
                req,
            },
            timestamp_ms: if is_leader { now_ms() } else { 0 },
            session,
            op,
        };
        let mut data = std::mem::take(&mut self.scratch);
        data.clear();
        command.encode(&mut data);
        let proposed = match forward_to {
            None => self.replica.propose(&data).map(Some),
            Some(to) => {
                self.transport
                    .send_to(to, |out| wire::encode_propose(req, &data, out));
                Ok(None)
            }
        };
        self.scratch = data;
        match proposed {
            Ok(local_index) => {
                if let Some(index) = local_index {
                    self.table.insert_local_proposal(index, req);
                    if early_ack {
                        self.early_acks.push(req);
                        self.dirty_soon = true;
                    }
                }
                self.table.insert_write(req, reply, forward_to);
                self.writes.started += 1;
                Ok(req)
            }
            Err(e) => Err(Failure::NotStored(format!(
                "{}: not stored, try again",
                describe(e)
            ))),
        }
    }

    /// Counts an answered request `req` of `kind` (and its latency while its start is known).
    pub fn record_request(&mut self, req: u64, kind: &'static str, outcome: &'static str) {
        match self.table.started_at(req) {
            Some(started) => self
                .requests
                .record_request(kind, outcome, started.elapsed()),
            None => self.requests.count_request(kind, outcome),
        }
    }

    /// Asks the core for a read index; the query is served once it is applied.
    pub fn start_read(&mut self, read: PendingRead) -> Result<u64, Failure> {
        let req = self.table.new_request(Instant::now());
        if self.cfg.testing_stale_reads {
            // Deliberately unsafe (tests only): whatever this node has applied, no ReadIndex.
            self.table.insert_read_at(0, req, read);
            self.dirty_soon = true;
            return Ok(req);
        }
        match self.replica.read_index(req) {
            Ok(()) => {
                self.table.insert_read(req, read);
                Ok(req)
            }
            Err(e) => Err(Failure::NotServed(format!(
                "{}: read not served, try again",
                describe(e)
            ))),
        }
    }

    /// The leader side of a follower's forwarded proposal.
    pub fn on_forwarded_proposal(&mut self, from: NodeId, origin_req: u64, data: &[u8]) {
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
        let result = self.replica.propose(&buf);
        self.scratch = buf;
        if let Err(e) = result {
            let leader_hint = match e {
                RaftError::NotLeader { leader_hint } => leader_hint,
                _ => None,
            };
            self.transport.send_to(from, |out| {
                wire::encode_propose_rejected(origin_req, leader_hint, out)
            });
        }
    }

    /// The failure a follower reports when the leader refused its forwarded proposal.
    pub fn forward_refused(leader_hint: Option<NodeId>) -> Failure {
        Failure::NotStored(format!(
            "no leader: not stored{}, try again",
            hint(leader_hint)
        ))
    }
}
