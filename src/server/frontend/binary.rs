//! The binary front-end (the protocol in `proto`): many requests in flight per
//! connection, answers in any order naming their request id, exactly-once writes through the
//! state machine's client sessions.
//!
//! Backpressure instead of disconnection: a client whose answers pile up past a bound is simply
//! not read from until they drain, so its output never grows without bound.

use std::collections::HashMap;

use crate::chat::validate;
use crate::chat::{ChatMessage, Op, Outcome, Read, SessionRef};
use crate::proto::{self, Answer, ErrorKind, LogMessageRef, NodeStatus, Request, SessionSeq};
use crate::raft::Role;
use crate::server::accounts::Verdict;
use crate::server::disk_reads::Waiter;
use crate::server::logins::{self, Action, Front, Refused, LOGIN_FAILED_TEXT};
use crate::server::membership::MemberOp;
use crate::server::services::{Failure, PendingRead, Query, ReplyTo, Services};
use crate::server::transport::{ConnRef, Proto};

/// Stop reading requests while this much output waits; resume below half of it.
pub const OUTPUT_PAUSE_BYTES: usize = 8 << 20;
/// Messages in one `LogChunk` at most (the frame's body limit applies too).
const LOG_PAGE_MESSAGES_MAX: u32 = 10_000;

/// An account write in flight, by the request id it answers: what its `AccountOk` says.
enum AccountWrite {
    Registered(String),
    PasswordChanged(String),
}

#[derive(Default)]
struct BinarySession {
    preamble_done: bool,
    /// Reading stopped because output passed `OUTPUT_PAUSE_BYTES`.
    paused: bool,
    /// The account this connection is logged in to (`Login`, or a `Register` it made).
    login: Option<String>,
    /// Account writes in flight, by request id.
    account_writes: HashMap<u64, AccountWrite>,
}

/// Every binary client session on the node, by connection key.
#[derive(Default)]
pub struct Binary {
    sessions: HashMap<usize, (ConnRef, BinarySession)>,
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

impl Binary {
    fn session(&mut self, conn: ConnRef) -> Option<&mut BinarySession> {
        self.sessions
            .get_mut(&conn.key)
            .filter(|(c, _)| *c == conn)
            .map(|(_, s)| s)
    }

    /// Starts a session on a connection that sent the client preamble's magic.
    pub fn open(&mut self, svc: &mut Services, conn: ConnRef) {
        if let Some(c) = svc.transport.get_mut(conn) {
            c.proto = Proto::Binary;
            self.sessions
                .insert(conn.key, (conn, BinarySession::default()));
        }
    }

    /// Forgets a closed connection's session.
    pub fn closed(&mut self, conn: ConnRef) {
        if self
            .sessions
            .get(&conn.key)
            .is_some_and(|(c, _)| *c == conn)
        {
            self.sessions.remove(&conn.key);
        }
    }

    /// Backpressure: true (and the session marked paused) once `pending_output` passes the
    /// bound; the node stops reading the connection until `resume_if_drained`.
    pub fn pause_if_full(&mut self, conn: ConnRef, pending_output: usize) -> bool {
        match self.session(conn) {
            Some(session) if pending_output > OUTPUT_PAUSE_BYTES => {
                session.paused = true;
                true
            }
            _ => false,
        }
    }

    /// True (and the pause lifted) when a paused session's output drained below half.
    pub fn resume_if_drained(&mut self, conn: ConnRef, pending_output: usize) -> bool {
        match self.session(conn) {
            Some(session) if session.paused && pending_output < OUTPUT_PAUSE_BYTES / 2 => {
                session.paused = false;
                true
            }
            _ => false,
        }
    }

    /// Decodes and dispatches every complete request in the connection's input.
    pub fn handle_input(&mut self, svc: &mut Services, conn: ConnRef) {
        let (Some(c), Some(session)) = (
            svc.transport.get_mut(conn),
            self.sessions
                .get_mut(&conn.key)
                .filter(|(c, _)| *c == conn)
                .map(|(_, s)| s),
        ) else {
            return;
        };
        let mut buffers = std::mem::take(&mut c.buffers);
        let mut used_total = 0;
        let mut error = None;
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
        let ready = session.preamble_done;
        while ready && error.is_none() {
            match proto::decode_request(&buffers.input()[used_total..]) {
                Ok(None) => break,
                Ok(Some((request, used))) => {
                    used_total += used;
                    // Requests may answer straight into the output buffer: put it back first.
                    buffers.consume(used_total);
                    used_total = 0;
                    let Some(c) = svc.transport.get_mut(conn) else {
                        return;
                    };
                    c.buffers = std::mem::take(&mut buffers);
                    self.on_request(svc, conn, request);
                    match svc.transport.get_mut(conn) {
                        Some(c) => buffers = std::mem::take(&mut c.buffers),
                        None => return,
                    }
                }
                Err(e) => error = Some(e),
            }
        }
        buffers.consume(used_total);
        let Some(c) = svc.transport.get_mut(conn) else {
            return;
        };
        c.buffers = buffers;
        if let Some(e) = error {
            log::info!("node {}: closing a binary client: {e}", svc.cfg.id);
            svc.limits.counters.bad_frames += 1;
            let answer = Answer::Error {
                req_id: 0,
                kind: ErrorKind::Rejected,
                leader_hint: None,
                message: format!("protocol error: {e}"),
            };
            Self::send_answer(svc, conn, &answer);
            if let Some(c) = svc.transport.get_mut(conn) {
                c.closing = true;
            }
        }
    }

    fn on_request(&mut self, svc: &mut Services, conn: ConnRef, request: Request) {
        match request {
            Request::OpenSession { req_id } => {
                Self::write(svc, conn, req_id, Op::OpenSession, None)
            }
            Request::Post {
                req_id,
                session,
                room,
                nick,
                text,
            } => {
                if let Err(wait) = svc.limits.take_msg(conn, std::time::Instant::now()) {
                    let message = crate::server::limits::rate_limited_text(wait);
                    let (kind, leader_hint) = (ErrorKind::Overloaded, None);
                    let answer = Answer::Error {
                        req_id,
                        kind,
                        leader_hint,
                        message,
                    };
                    return Self::send_answer(svc, conn, &answer);
                }
                let checked = validate::validate_room(&room)
                    .and_then(|_| validate::validate_nick(&nick))
                    .and_then(|_| validate::validate_text(&text));
                // A registered nick is its logged-in owner's only, as over telnet. A private
                // room takes a join, which binary clients have no request for.
                let login = self.session(conn).and_then(|s| s.login.clone());
                let checked = checked.and_then(|()| {
                    let sm = svc.replica.sm();
                    let refusal =
                        logins::post_refusal(sm, svc.cfg.require_login, login.as_deref(), &nick)
                            .or_else(|| {
                                sm.room_meta(&room)
                                    .is_some_and(|meta| meta.private)
                                    .then(|| format!("#{room} is private: join it first"))
                            });
                    refusal.map_or(Ok(()), Err)
                });
                match checked {
                    Ok(()) => {
                        let op = Op::Post { room, nick, text };
                        Self::write(svc, conn, req_id, op, session_ref(session))
                    }
                    Err(why) => Self::fail(svc, conn, req_id, &Failure::Rejected(why)),
                }
            }
            Request::Set {
                req_id,
                session,
                key,
                value,
            } => Self::write(
                svc,
                conn,
                req_id,
                Op::Set { key, value },
                session_ref(session),
            ),
            Request::Cas {
                req_id,
                session,
                key,
                expected,
                new,
            } => {
                let op = Op::Cas { key, expected, new };
                Self::write(svc, conn, req_id, op, session_ref(session))
            }
            Request::Del {
                req_id,
                session,
                key,
            } => Self::write(svc, conn, req_id, Op::Del { key }, session_ref(session)),
            Request::ReadLog {
                req_id,
                from_position,
                max_messages,
            } => {
                let query = Query::LogPage {
                    req_id,
                    from_position,
                    max_messages,
                };
                Self::read(svc, conn, req_id, query)
            }
            Request::Get { req_id, key } => {
                Self::read(svc, conn, req_id, Query::Value { req_id, key })
            }
            // The telnet `keys` rule, checked before the read so a bad prefix costs no ReadIndex.
            Request::Keys { req_id, prefix } => match validate::validate_key_prefix(&prefix) {
                Ok(()) => Self::read(svc, conn, req_id, Query::KeyList { req_id, prefix }),
                Err(why) => Self::fail(svc, conn, req_id, &Failure::Rejected(why)),
            },
            Request::Register {
                req_id,
                nick,
                password,
            } => {
                let sm = svc.replica.sm();
                let front = Front::Binary { req_id };
                let started = svc.logins.start_register(sm, conn, front, nick, password);
                Self::account_job_started(svc, conn, req_id, started);
            }
            Request::Login {
                req_id,
                nick,
                password,
            } => {
                let sm = svc.replica.sm();
                let at = (conn, Front::Binary { req_id });
                let started = svc.logins.start_login(sm, svc.cfg.id, at, nick, password);
                Self::account_job_started(svc, conn, req_id, started);
            }
            Request::Passwd { req_id, old, new } => {
                let login = self.session(conn).and_then(|s| s.login.clone());
                let sm = svc.replica.sm();
                let at = (conn, Front::Binary { req_id });
                let passwords = (old, new);
                let started =
                    svc.logins
                        .start_passwd(sm, svc.cfg.id, at, login.as_deref(), passwords);
                Self::account_job_started(svc, conn, req_id, started);
            }
            Request::Logout { req_id } => match self.session(conn).and_then(|s| s.login.take()) {
                Some(nick) => {
                    let message = format!("logged out of {nick}");
                    let answer = Answer::AccountOk {
                        req_id,
                        nick,
                        message,
                    };
                    Self::send_answer(svc, conn, &answer);
                }
                None => {
                    let failure = Failure::Rejected("not logged in".to_string());
                    Self::fail(svc, conn, req_id, &failure);
                }
            },
            Request::Status { req_id } => {
                let status = NodeStatus {
                    node_id: svc.cfg.id,
                    role: proto_role(svc.replica.role()),
                    term: svc.replica.term(),
                    leader: svc.replica.leader(),
                    commit: svc.replica.commit_index(),
                    applied: svc.replica.sm().applied_index(),
                };
                Self::send_answer(svc, conn, &Answer::StatusReply { req_id, status });
            }
            Request::Members { req_id } => {
                let list = svc.member_list_answer();
                Self::send_answer(svc, conn, &Answer::MemberList { req_id, list });
            }
            Request::AddMember { req_id, id, addr } => {
                Self::member_change(svc, conn, req_id, MemberOp::Add { id, addr })
            }
            Request::PromoteMember { req_id, id } => {
                Self::member_change(svc, conn, req_id, MemberOp::Promote(id))
            }
            Request::RemoveMember { req_id, id } => {
                Self::member_change(svc, conn, req_id, MemberOp::Remove(id))
            }
        }
    }

    fn member_change(svc: &mut Services, conn: ConnRef, req_id: u64, op: MemberOp) {
        if let Err(failure) = svc.start_member_change(op, ReplyTo::Binary { conn, req_id }) {
            Self::fail(svc, conn, req_id, &failure);
        }
    }

    /// A membership change this connection asked for is committed.
    pub fn answer_member_change(svc: &mut Services, conn: ConnRef, req_id: u64, done: &str) {
        let message = done.to_string();
        Self::send_answer(svc, conn, &Answer::MemberOk { req_id, message });
    }

    /// A refused account request is answered at once; a started one when its job is done.
    fn account_job_started(
        svc: &mut Services,
        conn: ConnRef,
        req_id: u64,
        started: Result<(), Refused>,
    ) {
        if let Err(refused) = started {
            let kind = if refused.try_later {
                ErrorKind::Overloaded
            } else {
                ErrorKind::Rejected
            };
            let answer = Answer::Error {
                req_id,
                kind,
                leader_hint: None,
                message: refused.text,
            };
            Self::send_answer(svc, conn, &answer);
        }
    }

    /// A hash job this connection started is done (the node drains `Logins::finished`).
    pub fn account_job_done(
        &mut self,
        svc: &mut Services,
        conn: ConnRef,
        req_id: u64,
        action: Action,
        verdict: Verdict,
    ) {
        if self.session(conn).is_none() {
            return; // the connection closed meanwhile
        }
        let rejected = |message: String| Failure::Rejected(message);
        match (action, verdict) {
            (_, Verdict::Failed(reason)) => Self::fail(svc, conn, req_id, &rejected(reason)),
            (Action::Register { nick }, Verdict::Hashed(hash)) => {
                let write = AccountWrite::Registered(nick.clone());
                self.account_write(svc, conn, req_id, Op::Register { nick, hash }, write);
            }
            (Action::Passwd { nick }, Verdict::Hashed(hash)) => {
                let write = AccountWrite::PasswordChanged(nick.clone());
                self.account_write(svc, conn, req_id, Op::SetPassword { nick, hash }, write);
            }
            (Action::Login { nick }, Verdict::Verified) => {
                svc.logins.succeeded(conn, &nick);
                if let Some(session) = self.session(conn) {
                    session.login = Some(nick.clone());
                }
                let message = format!("logged in as {nick}");
                let answer = Answer::AccountOk {
                    req_id,
                    nick,
                    message,
                };
                Self::send_answer(svc, conn, &answer);
            }
            (Action::Login { nick } | Action::Passwd { nick }, _) => {
                svc.logins.failed(svc.cfg.id, conn, &nick);
                let failure = rejected(LOGIN_FAILED_TEXT.to_string());
                Self::fail(svc, conn, req_id, &failure);
            }
            (Action::Register { .. }, _) => {
                let failure = rejected("register failed: try again".to_string());
                Self::fail(svc, conn, req_id, &failure);
            }
        }
    }

    /// Proposes an account write (not exactly-once: a `Register` retried after a lost answer
    /// is refused as taken); its answer comes in `answer`.
    fn account_write(
        &mut self,
        svc: &mut Services,
        conn: ConnRef,
        req_id: u64,
        op: Op,
        write: AccountWrite,
    ) {
        match svc.start_write(op, None, ReplyTo::Binary { conn, req_id }) {
            Ok(_) => {
                if let Some(session) = self.session(conn) {
                    session.account_writes.insert(req_id, write);
                }
            }
            Err(failure) => Self::fail(svc, conn, req_id, &failure),
        }
    }

    /// A write of this connection failed: forget its account bookkeeping, if any.
    pub fn forget_write(&mut self, conn: ConnRef, req_id: u64) {
        if let Some(session) = self.session(conn) {
            session.account_writes.remove(&req_id);
        }
    }

    fn write(svc: &mut Services, conn: ConnRef, req_id: u64, op: Op, session: Option<SessionRef>) {
        if let Err(failure) = svc.start_write(op, session, ReplyTo::Binary { conn, req_id }) {
            Self::fail(svc, conn, req_id, &failure);
        }
    }

    fn read(svc: &mut Services, conn: ConnRef, req_id: u64, query: Query) {
        if let Err(failure) = svc.start_read(PendingRead { conn, query }) {
            Self::fail(svc, conn, req_id, &failure);
        }
    }

    fn send_answer(svc: &mut Services, conn: ConnRef, answer: &Answer) {
        if let Some(out) = svc.transport.output(conn) {
            answer.encode(out);
        }
    }

    pub fn fail(svc: &mut Services, conn: ConnRef, req_id: u64, failure: &Failure) {
        let kind = match failure {
            Failure::NotStored(_) | Failure::NotServed(_) => ErrorKind::NotLeaderNotStored,
            Failure::Unknown(_) => ErrorKind::TimeoutUnknown,
            Failure::Rejected(_) => ErrorKind::Rejected,
        };
        let answer = Answer::Error {
            req_id,
            kind,
            leader_hint: svc.replica.leader(),
            message: failure.text().to_string(),
        };
        Self::send_answer(svc, conn, &answer);
    }

    /// The answer to a binary write whose entry was applied.
    pub fn answer(&mut self, svc: &mut Services, conn: ConnRef, req_id: u64, outcome: &Outcome) {
        let account_write = self
            .session(conn)
            .and_then(|s| s.account_writes.remove(&req_id));
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
            Outcome::AccountSaved => match account_write {
                Some(AccountWrite::Registered(nick)) => {
                    if let Some(session) = self.session(conn) {
                        session.login = Some(nick.clone());
                    }
                    let message = format!("registered {nick}, logged in as {nick}");
                    Answer::AccountOk {
                        req_id,
                        nick,
                        message,
                    }
                }
                Some(AccountWrite::PasswordChanged(nick)) => Answer::AccountOk {
                    req_id,
                    nick,
                    message: "password changed".to_string(),
                },
                None => error(ErrorKind::Rejected, "account saved"),
            },
            Outcome::RoomUpdated | Outcome::Kicked { .. } => {
                error(ErrorKind::Rejected, "rooms are managed over telnet")
            }
        };
        Self::send_answer(svc, conn, &answer);
    }

    /// Answers a binary read whose read index has been applied.
    pub fn serve(svc: &mut Services, conn: ConnRef, query: Query) {
        match query {
            Query::LogPage {
                req_id,
                from_position,
                max_messages,
            } => Self::log_page(svc, conn, req_id, from_position, max_messages),
            Query::Value { req_id, key } => Self::value(svc, conn, req_id, &key),
            Query::KeyList { req_id, prefix } => Self::key_list(svc, conn, req_id, &prefix),
            // Telnet queries are answered by `telnet`; none reaches a binary session.
            _ => {}
        }
    }

    /// A page of the chat log, as one `LogChunk` within the frame limit. A page that starts
    /// among messages only the store has waits for the reader thread (`log_page_done`).
    fn log_page(
        svc: &mut Services,
        conn: ConnRef,
        req_id: u64,
        from_position: u64,
        max_messages: u32,
    ) {
        let sm = svc.replica.sm();
        // The newest position, not the count: with retention there are holes before it.
        let total = sm.last_position();
        let start = from_position.max(1);
        let limit = max_messages.clamp(1, LOG_PAGE_MESSAGES_MAX) as usize;
        match sm.messages_from_read(start, limit) {
            Read::Now(page) => {
                if let Some(out) = svc.transport.output(conn) {
                    encode_page(out, req_id, total, page.iter().map(|m| &**m));
                }
            }
            Read::Later(pending) => {
                let waiter = Waiter::LogPage {
                    conn,
                    req_id,
                    total,
                };
                if let Err((_, why)) = svc.reads.submit(pending, waiter) {
                    Self::send_answer(svc, conn, &error_answer(req_id, ErrorKind::Overloaded, why));
                }
            }
        }
    }

    /// The reader thread answered a `LogPage`: the chunk `log_page` would have sent, or an
    /// error with the reason. Dropped if the connection closed meanwhile.
    pub fn log_page_done(
        svc: &mut Services,
        conn: ConnRef,
        req_id: u64,
        total: u64,
        answer: Result<Vec<ChatMessage>, String>,
    ) {
        match answer {
            Ok(page) => {
                if let Some(out) = svc.transport.output(conn) {
                    encode_page(out, req_id, total, page.iter());
                }
            }
            Err(why) => {
                let why = format!("reading the chat log: {why}");
                let answer = error_answer(req_id, ErrorKind::Rejected, why);
                Self::send_answer(svc, conn, &answer);
            }
        }
    }

    fn value(svc: &mut Services, conn: ConnRef, req_id: u64, key: &str) {
        let (value, revision) = match svc.replica.sm().get(key) {
            Some((value, revision)) => (Some(value.to_string()), revision),
            None => (None, 0),
        };
        let answer = Answer::KvValue {
            req_id,
            value,
            revision,
        };
        Self::send_answer(svc, conn, &answer);
    }

    /// Every key with `prefix`, in order, as one `KeyList` within the frame limit: the first
    /// keys that fit, with `total` counting them all (see [`proto::encode_key_list`]).
    fn key_list(svc: &mut Services, conn: ConnRef, req_id: u64, prefix: &str) {
        let keys = svc.replica.sm().keys(prefix);
        if let Some(out) = svc.transport.output(conn) {
            proto::encode_key_list(out, req_id, keys.len() as u64, keys);
        }
    }
}

/// One `LogChunk` of the first messages of `page` that fit the frame limit.
fn encode_page<'a>(
    out: &mut Vec<u8>,
    req_id: u64,
    total: u64,
    page: impl Iterator<Item = &'a ChatMessage>,
) {
    let mut budget = proto::BODY_LEN_MAX - proto::LOG_CHUNK_FIXED_LEN;
    let messages = page
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
    proto::encode_log_chunk(out, req_id, total, messages);
}

fn error_answer(req_id: u64, kind: ErrorKind, message: String) -> Answer {
    Answer::Error {
        req_id,
        kind,
        leader_hint: None,
        message,
    }
}
