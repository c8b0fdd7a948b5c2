//! Binary client sessions on a node (the protocol in `client::proto`): many requests in flight
//! per connection, answers in any order naming their request id, exactly-once writes through
//! the state machine's client sessions.
//!
//! Backpressure instead of disconnection: a client whose answers pile up past a bound is simply
//! not read from until they drain, so its output never grows without bound.

use super::node::{ConnKind, ConnRef, Node};
use super::requests::{Failure, Query, ReplyTo};
use crate::chat::validate;
use crate::chat::{Op, Outcome, SessionRef};
use crate::proto::{self, Answer, ErrorKind, LogMessageRef, NodeStatus, Request, SessionSeq};
use crate::raft::Role;

/// Stop reading requests while this much output waits; resume below half of it.
pub(super) const OUTPUT_PAUSE_BYTES: usize = 8 << 20;
/// Messages in one `LogChunk` at most (the frame's body limit applies too).
const LOG_PAGE_MESSAGES_MAX: u32 = 10_000;

#[derive(Default)]
pub(super) struct BinarySession {
    preamble_done: bool,
    /// Reading stopped because output passed `OUTPUT_PAUSE_BYTES`.
    pub(super) paused: bool,
}

fn session_ref(s: SessionSeq) -> Option<SessionRef> {
    Some(SessionRef {
        id: s.session_id,
        seq: s.seq,
        lowest_unacked_seq: s.lowest_unacked_seq,
    })
}

fn proto_role(role: Role) -> proto::Role {
    match role {
        Role::Follower => proto::Role::Follower,
        Role::PreCandidate => proto::Role::PreCandidate,
        Role::Candidate => proto::Role::Candidate,
        Role::Leader => proto::Role::Leader,
    }
}

impl Node {
    /// Decodes and dispatches every complete request in the connection's input.
    pub(super) fn handle_binary_input(&mut self, key: usize) {
        let conn = ConnRef {
            key,
            id: self.conns[key].id,
        };
        let mut buffers = std::mem::take(&mut self.conns[key].buffers);
        let mut used_total = 0;
        let mut error = None;
        if let ConnKind::Binary(session) = &mut self.conns[key].kind {
            if !session.preamble_done {
                match proto::decode_preamble(buffers.input()) {
                    Ok(None) => {}
                    Ok(Some(used)) => {
                        session.preamble_done = true;
                        used_total = used;
                    }
                    Err(e) => error = Some(e),
                }
            }
        }
        let ready = matches!(&self.conns[key].kind, ConnKind::Binary(s) if s.preamble_done);
        while ready && error.is_none() {
            match proto::decode_request(&buffers.input()[used_total..]) {
                Ok(None) => break,
                Ok(Some((request, used))) => {
                    used_total += used;
                    // Requests may answer straight into the output buffer: put it back first.
                    buffers.consume(used_total);
                    used_total = 0;
                    self.conns[key].buffers = std::mem::take(&mut buffers);
                    self.on_binary_request(conn, request);
                    match self.conns.get_mut(key) {
                        Some(c) => buffers = std::mem::take(&mut c.buffers),
                        None => return,
                    }
                }
                Err(e) => error = Some(e),
            }
        }
        buffers.consume(used_total);
        self.conns[key].buffers = buffers;
        if let Some(e) = error {
            log::info!("node {}: closing a binary client: {e}", self.cfg.id);
            let answer = Answer::Error {
                req_id: 0,
                kind: ErrorKind::Rejected,
                leader_hint: None,
                message: format!("protocol error: {e}"),
            };
            self.send_answer(conn, &answer);
            self.conns[key].closing = true;
        }
    }

    fn on_binary_request(&mut self, conn: ConnRef, request: Request) {
        match request {
            Request::OpenSession { req_id } => {
                self.binary_write(conn, req_id, Op::OpenSession, None)
            }
            Request::Post {
                req_id,
                session,
                room,
                nick,
                text,
            } => {
                let checked = validate::validate_room(&room)
                    .and_then(|_| validate::validate_nick(&nick))
                    .and_then(|_| validate::validate_text(&text));
                match checked {
                    Ok(()) => self.binary_write(
                        conn,
                        req_id,
                        Op::Post { room, nick, text },
                        session_ref(session),
                    ),
                    Err(why) => self.binary_fail(conn, req_id, &Failure::Rejected(why)),
                }
            }
            Request::Set {
                req_id,
                session,
                key,
                value,
            } => self.binary_write(conn, req_id, Op::Set { key, value }, session_ref(session)),
            Request::Cas {
                req_id,
                session,
                key,
                expected,
                new,
            } => self.binary_write(
                conn,
                req_id,
                Op::Cas { key, expected, new },
                session_ref(session),
            ),
            Request::Del {
                req_id,
                session,
                key,
            } => self.binary_write(conn, req_id, Op::Del { key }, session_ref(session)),
            Request::ReadLog {
                req_id,
                from_position,
                max_messages,
            } => self.binary_read(
                conn,
                req_id,
                Query::LogPage {
                    req_id,
                    from_position,
                    max_messages,
                },
            ),
            Request::Get { req_id, key } => {
                self.binary_read(conn, req_id, Query::Value { req_id, key })
            }
            // The telnet `keys` rule, checked before the read so a bad prefix costs no ReadIndex.
            Request::Keys { req_id, prefix } => match validate::validate_key_prefix(&prefix) {
                Ok(()) => self.binary_read(conn, req_id, Query::KeyList { req_id, prefix }),
                Err(why) => self.binary_fail(conn, req_id, &Failure::Rejected(why)),
            },
            Request::Status { req_id } => {
                let status = NodeStatus {
                    node_id: self.cfg.id,
                    role: proto_role(self.raft.role()),
                    term: self.raft.term(),
                    leader: self.raft.leader(),
                    commit: self.raft.commit_index(),
                    applied: self.sm.applied_index(),
                };
                self.send_answer(conn, &Answer::StatusReply { req_id, status });
            }
        }
    }

    fn binary_write(&mut self, conn: ConnRef, req_id: u64, op: Op, session: Option<SessionRef>) {
        if let Err(failure) = self.start_write(conn, op, session, ReplyTo::Binary { req_id }) {
            self.binary_fail(conn, req_id, &failure);
        }
    }

    fn binary_read(&mut self, conn: ConnRef, req_id: u64, query: Query) {
        if let Err(failure) = self.start_read(conn, query) {
            self.binary_fail(conn, req_id, &failure);
        }
    }

    fn send_answer(&mut self, conn: ConnRef, answer: &Answer) {
        if let Some(c) = self.conn_of(conn) {
            answer.encode(c.buffers.output());
            self.mark_dirty(conn.key);
        }
    }

    pub(super) fn binary_fail(&mut self, conn: ConnRef, req_id: u64, failure: &Failure) {
        let kind = match failure {
            Failure::NotStored(_) | Failure::NotServed(_) => ErrorKind::NotLeaderNotStored,
            Failure::Unknown(_) => ErrorKind::TimeoutUnknown,
            Failure::Rejected(_) => ErrorKind::Rejected,
        };
        let answer = Answer::Error {
            req_id,
            kind,
            leader_hint: self.raft.leader(),
            message: failure.text().to_string(),
        };
        self.send_answer(conn, &answer);
    }

    /// The answer to a binary write whose entry was applied.
    pub(super) fn binary_answer(&mut self, conn: ConnRef, req_id: u64, outcome: &Outcome) {
        let error = |kind, message: &str| Answer::Error {
            req_id,
            kind,
            leader_hint: None,
            message: message.into(),
        };
        let answer = match outcome {
            Outcome::Posted { position } => Answer::Posted {
                req_id,
                position: *position,
            },
            Outcome::SessionOpened { session_id } => Answer::SessionOpened {
                req_id,
                session_id: *session_id,
            },
            Outcome::KvAck { revision } => Answer::KvAck {
                req_id,
                revision: *revision,
            },
            Outcome::CasFailed { current } => Answer::CasFailed {
                req_id,
                current: current.clone(),
            },
            Outcome::NotFound => error(ErrorKind::NotFound, "not found"),
            Outcome::SessionExpired => {
                error(ErrorKind::SessionExpired, "session expired: open a new one")
            }
            Outcome::Rejected(reason) => error(ErrorKind::Rejected, reason),
            Outcome::RoomCreated { .. } => {
                error(ErrorKind::Rejected, "rooms are created over telnet")
            }
        };
        self.send_answer(conn, &answer);
    }

    /// A page of the chat log, as one `LogChunk` within the frame limit.
    pub(super) fn binary_log_page(
        &mut self,
        conn: ConnRef,
        req_id: u64,
        from_position: u64,
        max_messages: u32,
    ) {
        let Some(c) = self.conns.get_mut(conn.key).filter(|c| c.id == conn.id) else {
            return;
        };
        // The newest position, not the count: with retention there are holes before it.
        let total = self.sm.last_position();
        let start = from_position.max(1);
        let mut budget = proto::BODY_LEN_MAX - proto::LOG_CHUNK_FIXED_LEN;
        let limit = max_messages.clamp(1, LOG_PAGE_MESSAGES_MAX) as usize;
        let messages = self
            .sm
            .messages_from(start)
            .take(limit)
            .map(|m| LogMessageRef {
                position: m.position,
                timestamp_ms: m.timestamp_ms,
                room: &m.room,
                nick: &m.nick,
                text: &m.text,
            })
            .take_while(|m| match budget.checked_sub(m.encoded_len()) {
                Some(left) => {
                    budget = left;
                    true
                }
                None => false,
            });
        proto::encode_log_chunk(c.buffers.output(), req_id, total, messages);
        self.mark_dirty(conn.key);
    }

    pub(super) fn binary_value(&mut self, conn: ConnRef, req_id: u64, key: &str) {
        let answer = match self.sm.get(key) {
            Some((value, revision)) => Answer::KvValue {
                req_id,
                value: Some(value.to_string()),
                revision,
            },
            None => Answer::KvValue {
                req_id,
                value: None,
                revision: 0,
            },
        };
        self.send_answer(conn, &answer);
    }

    /// Every key with `prefix`, in order, as one `KeyList` within the frame limit: the first
    /// keys that fit, with `total` counting them all (see [`proto::encode_key_list`]).
    pub(super) fn binary_key_list(&mut self, conn: ConnRef, req_id: u64, prefix: &str) {
        let Some(c) = self.conns.get_mut(conn.key).filter(|c| c.id == conn.id) else {
            return;
        };
        let keys = self.sm.keys(prefix);
        proto::encode_key_list(c.buffers.output(), req_id, keys.len() as u64, keys);
        self.mark_dirty(conn.key);
    }
}
