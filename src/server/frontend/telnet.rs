//! The telnet front-end: command lines in, `ack`/`end`/`err` lines out, and live delivery of
//! messages to the rooms a session joined.
//!
//! One command is in flight per connection, so replies come back in the order commands were
//! typed; lines typed meanwhile wait in the session. Every command ends with exactly one
//! `ack …`, `end …` or `err …` line. Lines pushed without a command (`msg …` live delivery)
//! are held back while a listing is being streamed, so they never split a response.
//!
//! It parses and formats (with `chat::telnet`) and keeps each connection's session; writes and
//! reads go through [`Services`], and the node hands answers back here.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use crate::chat::telnet::{self, LineSplitter, Request};
use crate::chat::StateMachine;
use crate::chat::{ChatMessage, Op, Outcome, Read, RoomAction, DEFAULT_ROOM};
use crate::server::accounts::Verdict;
use crate::server::disk_reads::{DiskReads, Waiter};
use crate::server::limits;
use crate::server::logins::{self, Action, Front, Refused, LOGIN_FAILED_TEXT};
use crate::server::membership::MemberOp;
use crate::server::services::{Failure, PendingRead, Query, ReplyTo, Services};
use crate::server::transport::{ConnRef, Proto};
use std::borrow::Cow;

use super::rooms::RoomSet;

/// A client whose unsent output passes this bound is too slow to follow live delivery.
const OUTPUT_BYTES_MAX: usize = 4 << 20;
/// Bytes of live-delivery lines held back behind a listing, at most (the output bound's
/// size); past it the client is too slow and is disconnected.
const HELD_PUSH_BYTES_MAX: usize = OUTPUT_BYTES_MAX;
/// A streamed listing is refilled whenever less than this is waiting to be sent.
const STREAM_REFILL_BYTES: usize = 256 * 1024;
/// A listing formats at most about this much per turn of the event loop, then yields to the
/// other connections, peers and timers and continues next turn: a client reading a long
/// `get chatLog` as fast as loopback allows would otherwise keep the loop to itself for as
/// long as the listing lasts (`tools/history_bench.sh` measured `status` round trips of up to
/// 288 ms during a 1.1 GB listing before this bound).
const STREAM_TURN_BYTES: usize = 1 << 20;
/// How `cas` and `err cas failed` spell "the key is absent" (the telnet parser's token).
const ABSENT: &str = "-";
/// Lines typed ahead while a command is in flight; past this the session stops reading.
const QUEUED_LINES_MAX: usize = 256;
/// An account or room write in flight on a session, for the words of its `ack`.
enum AccountWrite {
    Registered(String),
    PasswordChanged,
    /// A room owner's command: the `ack` line to write once applied.
    Room(String),
}

/// `get chatLog` being written out a chunk at a time: the messages at positions
/// `next_position..=last_position` (the log at the read), skipping holes. With retention, a
/// message dropped while the listing streams is skipped too.
struct Listing {
    next_position: u64,
    last_position: u64,
    /// Lines written so far, for `end <count>`.
    listed: u64,
    /// Messages read off the loop (`disk_reads`), from `next_position` on, not yet formatted.
    page: VecDeque<ChatMessage>,
    /// The position after the last one in `page` or asked for.
    fetch_at: u64,
    /// A page is being read by the reader thread.
    fetching: bool,
}

/// A `get chatLog` listing asks the reader thread for pages of this many messages of the part
/// only the message store has, one page ahead of what it formats.
const LISTING_PAGE: usize = 1024;

struct Session {
    conn: ConnRef,
    splitter: LineSplitter,
    queued: VecDeque<Result<Vec<u8>, String>>,
    nick: String,
    rooms: RoomSet,
    /// The request id of the command in flight, if any.
    busy: Option<u64>,
    listing: Option<Listing>,
    /// Live-delivery lines held back behind a listing, formatted when they were pushed (so
    /// releasing them never reads the message store).
    held_pushes: Vec<u8>,
    /// Greeted before it sent anything; cleared by its first input.
    greeted_silent: bool,
    /// The account this connection is logged in to.
    login: Option<String>,
    /// The account write in flight, if the command in flight is one.
    account_write: Option<AccountWrite>,
}

impl Session {
    fn new(conn: ConnRef) -> Session {
        Session {
            conn,
            splitter: LineSplitter::new(),
            queued: VecDeque::new(),
            nick: "anonymous".to_string(),
            rooms: RoomSet::default(),
            busy: None,
            listing: None,
            held_pushes: Vec::new(),
            greeted_silent: false,
            login: None,
            account_write: None,
        }
    }

    /// A command in flight, lines waiting, or a listing streaming: a closing connection waits.
    fn has_work(&self) -> bool {
        self.busy.is_some() || !self.queued.is_empty() || self.listing.is_some()
    }

    /// True while typed-ahead lines are piling up behind a slow command.
    fn input_paused(&self) -> bool {
        self.queued.len() >= QUEUED_LINES_MAX
    }
}

/// `0,1,2`, or `-` for none.
fn ids(list: &[u64]) -> String {
    if list.is_empty() {
        return "-".to_string();
    }
    let ids: Vec<String> = list.iter().map(u64::to_string).collect();
    ids.join(",")
}

fn quoted_room(room: &str) -> String {
    format!("#{room}")
}

/// Every telnet session on the node, by connection key.
#[derive(Default)]
pub struct Telnet {
    sessions: HashMap<usize, Session>,
    /// Room -> the sessions (by connection key) that joined it, for live delivery without
    /// scanning every session.
    members: HashMap<String, HashSet<usize>>,
    /// Connections whose typed-ahead queue drained below its bound: read them again.
    resumed: Vec<usize>,
}

impl Telnet {
    /// Marks the session busy until its hash job is done, or writes the refusal.
    fn account_job_started(
        &mut self,
        svc: &mut Services,
        conn: ConnRef,
        started: Result<(), Refused>,
    ) {
        match started {
            // The job's answer ends the command; no request id names it.
            Ok(()) => self.set_busy(conn, u64::MAX),
            Err(refused) => Self::write_line(svc, conn, &format!("err {}", refused.text)),
        }
    }

    /// A hash job this session started is done (the node drains `Logins::finished`).
    pub fn account_job_done(
        &mut self,
        svc: &mut Services,
        conn: ConnRef,
        action: Action,
        verdict: Verdict,
    ) {
        if self.session(conn).is_none() {
            return; // the connection closed meanwhile
        }
        match (action, verdict) {
            (_, Verdict::Failed(reason)) => self.finish(svc, conn, &format!("err {reason}")),
            (Action::Register { nick }, Verdict::Hashed(hash)) => {
                let write = AccountWrite::Registered(nick.clone());
                self.account_write(svc, conn, Op::Register { nick, hash }, write);
            }
            (Action::Passwd { nick }, Verdict::Hashed(hash)) => {
                let write = AccountWrite::PasswordChanged;
                self.account_write(svc, conn, Op::SetPassword { nick, hash }, write);
            }
            (Action::Login { nick }, Verdict::Verified) => {
                svc.logins.succeeded(conn, &nick);
                if let Some(session) = self.session(conn) {
                    session.login = Some(nick.clone());
                    session.nick = nick.clone();
                }
                self.finish(svc, conn, &format!("ack logged in as {nick}"));
            }
            (Action::Login { nick } | Action::Passwd { nick }, _) => {
                svc.logins.failed(svc.cfg.id, conn, &nick);
                self.finish(svc, conn, &format!("err {LOGIN_FAILED_TEXT}"));
            }
            (Action::Register { .. }, _) => {
                self.finish(svc, conn, "err register failed: try again")
            }
        }
    }

    /// Proposes an account write; its answer comes in `answer`.
    fn account_write(&mut self, svc: &mut Services, conn: ConnRef, op: Op, write: AccountWrite) {
        match svc.start_write(
            op,
            None,
            ReplyTo::Telnet {
                conn,
                join_room: None,
            },
        ) {
            Ok(req) => {
                self.set_busy(conn, req);
                if let Some(session) = self.session(conn) {
                    session.account_write = Some(write);
                }
            }
            Err(failure) => self.finish(svc, conn, &format!("err {}", failure.text())),
        }
    }

    /// `nick` was kicked out of `room` (applied on this node): its sessions here leave it.
    pub fn kick(&mut self, room: &str, nick: &str) {
        let Some(keys) = self.members.get(room) else {
            return;
        };
        let kicked: Vec<usize> = keys
            .iter()
            .copied()
            .filter(|key| {
                self.sessions
                    .get(key)
                    .is_some_and(|s| s.nick == nick || s.login.as_deref() == Some(nick))
            })
            .collect();
        for key in kicked {
            if let Some(session) = self.sessions.get_mut(&key) {
                session.rooms.leave(room);
            }
            self.leave_index(key, room);
        }
    }

    /// Why this session may not post as its current nick now, if it may not.
    fn post_refusal(svc: &Services, session: &Session) -> Option<String> {
        let sm = svc.replica.sm();
        logins::post_refusal(
            sm,
            svc.cfg.require_login,
            session.login.as_deref(),
            &session.nick,
        )
    }

    fn session(&mut self, conn: ConnRef) -> Option<&mut Session> {
        self.sessions
            .get_mut(&conn.key)
            .filter(|s| s.conn.id == conn.id)
    }

    /// Starts a session on a connection whose first bytes look like a person typing.
    pub fn open(&mut self, svc: &mut Services, conn: ConnRef) {
        if let Some(c) = svc.transport.get_mut(conn) {
            c.proto = Proto::Telnet;
            self.forget(conn.key);
            self.sessions.insert(conn.key, Session::new(conn));
            self.join_index(conn.key, DEFAULT_ROOM);
        }
    }

    fn join_index(&mut self, key: usize, room: &str) {
        match self.members.get_mut(room) {
            Some(keys) => {
                keys.insert(key);
            }
            None => {
                self.members.insert(room.to_string(), HashSet::from([key]));
            }
        }
    }

    fn leave_index(&mut self, key: usize, room: &str) {
        if let Some(keys) = self.members.get_mut(room) {
            keys.remove(&key);
            if keys.is_empty() {
                self.members.remove(room);
            }
        }
    }

    /// Drops the session at `key` and its room memberships.
    fn forget(&mut self, key: usize) {
        if let Some(session) = self.sessions.remove(&key) {
            for room in session.rooms.joined() {
                self.leave_index(key, room);
            }
        }
    }

    /// Forgets a closed connection's session.
    pub fn closed(&mut self, conn: ConnRef) {
        if self.sessions.get(&conn.key).is_some_and(|s| s.conn == conn) {
            self.forget(conn.key);
        }
    }

    /// A connection greeted as telnet whose first bytes turn out to be a binary preamble (a
    /// peer or program that was slow to speak) must be classified again: its session goes.
    pub fn misjudged(&mut self, svc: &mut Services, conn: ConnRef) -> bool {
        let Some(input) = svc.transport.get(conn).map(|c| c.buffers.input()) else {
            return false;
        };
        let Some(session) = self.session(conn) else {
            return false;
        };
        let misjudged = session.greeted_silent && input.first() == Some(&0);
        if !input.is_empty() {
            session.greeted_silent = false;
        }
        if misjudged {
            self.forget(conn.key);
            if let Some(c) = svc.transport.get_mut(conn) {
                c.proto = Proto::Unknown;
            }
        }
        misjudged
    }

    /// True while the session wants no more input (typed-ahead lines piling up).
    pub fn input_paused(&self, key: usize) -> bool {
        self.sessions.get(&key).is_some_and(Session::input_paused)
    }

    /// Bytes of a line waiting for its newline (for the slow-loris limit).
    pub fn partial_line_bytes(&self, key: usize) -> usize {
        self.sessions
            .get(&key)
            .map_or(0, |s| s.splitter.buffered_bytes())
    }

    /// A command in flight, lines waiting, or a listing streaming.
    pub fn has_work(&self, key: usize) -> bool {
        self.sessions.get(&key).is_some_and(Session::has_work)
    }

    /// Connections to read again now that their sessions take input.
    pub fn take_resumed(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.resumed)
    }

    /// Appends `text` and a newline to the connection's output.
    fn write_line(svc: &mut Services, conn: ConnRef, text: &str) {
        if let Some(out) = svc.transport.output(conn) {
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(telnet::LINE_END);
        }
    }

    /// The command in flight on `conn` is finished: write its final line and take the next one.
    fn finish(&mut self, svc: &mut Services, conn: ConnRef, final_line: &str) {
        Self::write_line(svc, conn, final_line);
        if let Some(session) = self.session(conn) {
            session.busy = None;
        }
        self.release_held_pushes(svc, conn);
        self.run_queued(svc, conn);
    }

    /// Ends the command in flight on `conn` with `err <why>`.
    pub fn fail(&mut self, svc: &mut Services, conn: ConnRef, failure: &Failure) {
        self.finish(svc, conn, &format!("err {}", failure.text()));
    }

    /// A connection that sent nothing after a moment is a person at a telnet prompt: say hello.
    pub fn greet(&mut self, svc: &mut Services, conn: ConnRef) {
        self.open(svc, conn);
        let Some(session) = self.session(conn) else {
            return;
        };
        session.greeted_silent = true;
        let text = format!(
            "hello raftchat node {} of {}: type `help` for commands, `msg <text>` to chat",
            svc.cfg.id,
            svc.member_list().len()
        );
        Self::write_line(svc, conn, &text);
    }

    /// Splits the connection's input into lines and runs them.
    pub fn handle_input(&mut self, svc: &mut Services, conn: ConnRef) {
        let Some(c) = svc.transport.get_mut(conn) else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&conn.key).filter(|s| s.conn == conn) else {
            return;
        };
        let input = c.buffers.input();
        let used = input.len();
        session.splitter.feed(input);
        c.buffers.consume(used);
        while let Some(line) = session.splitter.next_line() {
            match line {
                // A person pressing Enter on an empty prompt gets no error.
                Ok(line) if line.iter().all(|b| b.is_ascii_whitespace()) => {}
                line => session.queued.push_back(line.map(<[u8]>::to_vec)),
            }
        }
        self.run_queued(svc, conn);
    }

    /// Runs queued lines until one is in flight or none is left.
    fn run_queued(&mut self, svc: &mut Services, conn: ConnRef) {
        let was_paused = self.session(conn).is_some_and(|s| s.input_paused());
        loop {
            let Some(session) = self.session(conn) else {
                return;
            };
            if session.busy.is_some() || session.listing.is_some() {
                break;
            }
            let Some(line) = session.queued.pop_front() else {
                break;
            };
            match line.and_then(|l| telnet::parse_line(&l)) {
                Ok(request) => self.handle_request(svc, conn, request),
                Err(reason) => Self::write_line(svc, conn, &format!("err {reason}")),
            }
        }
        if was_paused && self.session(conn).is_some_and(|s| !s.input_paused()) {
            self.resumed.push(conn.key);
        }
    }

    fn handle_request(&mut self, svc: &mut Services, conn: ConnRef, request: Request) {
        let Some(session) = self.session(conn) else {
            return;
        };
        match request {
            Request::Msg { room, text } => {
                if let Err(wait) = svc.limits.take_msg(conn, Instant::now()) {
                    let line = format!("err {}", limits::rate_limited_text(wait));
                    return Self::write_line(svc, conn, &line);
                }
                if let Some(reason) = Self::post_refusal(svc, session) {
                    return Self::write_line(svc, conn, &format!("err {reason}"));
                }
                let room = room.unwrap_or_else(|| session.rooms.current().to_string());
                let private = svc
                    .replica
                    .sm()
                    .room_meta(&room)
                    .is_some_and(|meta| meta.private);
                if private && !session.rooms.contains(&room) {
                    let line = format!("err {} is private: join it first", quoted_room(&room));
                    return Self::write_line(svc, conn, &line);
                }
                let nick = session.nick.clone();
                self.submit_write(svc, conn, Op::Post { room, nick, text }, None);
            }
            Request::Join(room) => {
                // A logged-in account owns the rooms it creates, and may join private rooms
                // that invited it.
                let op = match &session.login {
                    Some(nick) => Op::JoinRoom {
                        room: room.clone(),
                        nick: nick.clone(),
                    },
                    None => Op::CreateRoom { room: room.clone() },
                };
                self.submit_write(svc, conn, op, Some(room));
            }
            Request::Topic(None) => {
                let room = session.rooms.current().to_string();
                let line = match svc.replica.sm().room_meta(&room) {
                    Some(meta) if !meta.topic.is_empty() => {
                        format!("ack topic {}: {}", quoted_room(&room), meta.topic)
                    }
                    _ => format!("ack {} has no topic", quoted_room(&room)),
                };
                Self::write_line(svc, conn, &line);
            }
            Request::RoomOp(_)
            | Request::Kick(_)
            | Request::Invite(_)
            | Request::Topic(Some(_))
            | Request::Private => {
                let Some(by) = session.login.clone() else {
                    let line = "err login first: only a room's owners can do that";
                    return Self::write_line(svc, conn, line);
                };
                let room = session.rooms.current().to_string();
                let shown = quoted_room(&room);
                let (action, ack) = match request {
                    Request::RoomOp(nick) => {
                        let ack = format!("ack {nick} is an owner of {shown}");
                        (RoomAction::Op(nick), ack)
                    }
                    Request::Kick(nick) => {
                        let ack = format!("ack kicked {nick} from {shown}");
                        (RoomAction::Kick(nick), ack)
                    }
                    Request::Invite(nick) => {
                        let ack = format!("ack invited {nick} to {shown}");
                        (RoomAction::Invite(nick), ack)
                    }
                    Request::Topic(Some(text)) => {
                        (RoomAction::Topic(text), format!("ack topic of {shown} set"))
                    }
                    _ => (RoomAction::Private, format!("ack {shown} is private")),
                };
                let op = Op::RoomAdmin { room, by, action };
                self.account_write(svc, conn, op, AccountWrite::Room(ack));
            }
            Request::Leave(room) => {
                let line = match session.leave(&room) {
                    Ok(line) => {
                        self.leave_index(conn.key, &room);
                        line
                    }
                    Err(line) => line,
                };
                Self::write_line(svc, conn, &line);
            }
            Request::Nick(name) => {
                let registered = svc.replica.sm().account_hash(&name).is_some();
                let line = if registered && session.login.as_deref() != Some(name.as_str()) {
                    format!("err nick {name} is registered: login first")
                } else {
                    session.nick = name.clone();
                    format!("ack nick {name}")
                };
                Self::write_line(svc, conn, &line);
            }
            Request::Register { nick, password } => {
                let sm = svc.replica.sm();
                let started = svc
                    .logins
                    .start_register(sm, conn, Front::Telnet, nick, password);
                self.account_job_started(svc, conn, started);
            }
            Request::Login { nick, password } => {
                let sm = svc.replica.sm();
                let at = (conn, Front::Telnet);
                let started = svc.logins.start_login(sm, svc.cfg.id, at, nick, password);
                self.account_job_started(svc, conn, started);
            }
            Request::Logout => {
                let line = match session.login.take() {
                    Some(nick) => {
                        if session.nick == nick {
                            session.nick = "anonymous".to_string();
                        }
                        format!("ack logged out of {nick}")
                    }
                    None => "err not logged in".to_string(),
                };
                Self::write_line(svc, conn, &line);
            }
            Request::Passwd { old, new } => {
                let login = session.login.clone();
                let sm = svc.replica.sm();
                let at = (conn, Front::Telnet);
                let started =
                    svc.logins
                        .start_passwd(sm, svc.cfg.id, at, login.as_deref(), (old, new));
                self.account_job_started(svc, conn, started);
            }
            Request::Set { key, value } => {
                self.submit_write(svc, conn, Op::Set { key, value }, None)
            }
            Request::Del { key } => self.submit_write(svc, conn, Op::Del { key }, None),
            Request::Cas { key, expected, new } => {
                self.submit_write(svc, conn, Op::Cas { key, expected, new }, None)
            }
            Request::GetChatLog => self.submit_read(svc, conn, Query::ChatLog),
            Request::History { room, n } => {
                let room = room.unwrap_or_else(|| session.rooms.current().to_string());
                self.submit_read(svc, conn, Query::History { room, n })
            }
            Request::Rooms => self.submit_read(svc, conn, Query::Rooms),
            Request::Get { key } => self.submit_read(svc, conn, Query::Get { key }),
            Request::Keys { prefix } => self.submit_read(svc, conn, Query::Keys { prefix }),
            Request::Help => {
                for line in telnet::HELP_TEXT.lines() {
                    Self::write_line(svc, conn, line);
                }
                Self::write_line(svc, conn, "end");
            }
            Request::Status => Self::write_status(svc, conn),
            Request::Quit => {
                session.queued.clear();
                Self::write_line(svc, conn, "ack bye");
                if let Some(c) = svc.transport.get_mut(conn) {
                    c.closing = true;
                }
            }
            Request::Transfer { to } => {
                let line = match svc.replica.transfer_leadership(to) {
                    Ok(()) => format!("ack transferring leadership to node {to}"),
                    Err(e) => format!("err {e}"),
                };
                Self::write_line(svc, conn, &line);
            }
            Request::Members => {
                let members = svc.member_list();
                for m in &members {
                    Self::write_line(svc, conn, &m.telnet_line());
                }
                Self::write_line(svc, conn, &format!("end {}", members.len()));
            }
            Request::AddMember { id, addr } => {
                self.member_change(svc, conn, MemberOp::Add { id, addr })
            }
            Request::PromoteMember { id } => self.member_change(svc, conn, MemberOp::Promote(id)),
            Request::RemoveMember { id } => self.member_change(svc, conn, MemberOp::Remove(id)),
        }
    }

    /// `add`, `promote`, `remove`: a configuration entry on the leader, answered `ack` once
    /// it is committed (`answer_member_change`), or `err` with the reason now.
    fn member_change(&mut self, svc: &mut Services, conn: ConnRef, op: MemberOp) {
        let reply = ReplyTo::Telnet {
            conn,
            join_room: None,
        };
        match svc.start_member_change(op, reply) {
            Ok(req) => self.set_busy(conn, req),
            Err(failure) => Self::write_line(svc, conn, &format!("err {}", failure.text())),
        }
    }

    /// The membership change in flight on `conn` is committed.
    pub fn answer_member_change(&mut self, svc: &mut Services, conn: ConnRef, done: &str) {
        self.finish(svc, conn, &format!("ack {done}"));
    }

    fn write_status(svc: &mut Services, conn: ConnRef) {
        let status = svc.replica.status();
        let sm = svc.replica.sm();
        let leader = status
            .leader
            .map(|l| l.to_string())
            .unwrap_or_else(|| "none".into());
        let mut lines = vec![
            format!("node {}", status.id),
            format!("role {:?}", status.role),
            format!("term {}", status.term),
            format!("leader {leader}"),
            format!("commit {}", status.commit_index),
            format!("applied {}", sm.applied_index()),
            format!("last {}", status.last_index),
            format!("log_first {}", svc.replica.first_index()),
            format!(
                "snapshot {}",
                svc.replica.snapshot().map_or(0, |snapshot| snapshot.index)
            ),
            format!("messages {}", sm.message_count()),
            format!("last_position {}", sm.last_position()),
            format!("retain_messages {}", sm.retain_messages()),
            format!("accounts {}", sm.account_count()),
            format!("voters {}", ids(&status.voters)),
            format!("learners {}", ids(&status.learners)),
        ];
        let stats = svc.replica.stats();
        lines.extend([
            format!("syncs {}", stats.syncs),
            format!("entries_synced {}", stats.entries_synced),
            format!("entries_per_sync_mean {:.2}", stats.entries_per_sync_mean()),
            format!("entries_per_sync_max {}", stats.entries_per_sync_max),
            format!("syncs_in_flight {}", svc.replica.syncs_in_flight()),
            format!("wal_bytes_written {}", svc.replica.wal_bytes_written()),
            format!("append_entries_sent {}", stats.append_entries_sent),
            format!("history_fetched_bytes {}", stats.history_fetched_bytes),
            format!("history_fetched_pages {}", stats.history_fetched_pages),
            format!("history_served_bytes {}", stats.history_served_bytes),
            format!(
                "entries_per_append_mean {:.2}",
                stats.entries_per_append_mean()
            ),
        ]);
        let limits = svc.limits.counters;
        lines.extend([
            format!("clients {}", svc.limits.client_count()),
            format!("refused_conns_total {}", limits.refused_total),
            format!("refused_conns_per_ip {}", limits.refused_per_ip),
            format!("idle_closed {}", limits.idle_closed),
            format!("partial_closed {}", limits.partial_closed),
            format!("rate_limited {}", limits.rate_limited),
            format!("slow_disconnects {}", limits.slow_disconnects),
            format!("bad_frames {}", limits.bad_frames),
        ]);
        for peer in &status.peers {
            lines.push(format!(
                "peer {} match {} next {} {}",
                peer.id, peer.match_index, peer.next_index, peer.state
            ));
        }
        for line in lines {
            Self::write_line(svc, conn, &line);
        }
        Self::write_line(svc, conn, "end");
    }

    /// Starts a write for a telnet command; the answer comes in `answer`.
    fn submit_write(
        &mut self,
        svc: &mut Services,
        conn: ConnRef,
        op: Op,
        join_room: Option<String>,
    ) {
        match svc.start_write(op, None, ReplyTo::Telnet { conn, join_room }) {
            Ok(req) => self.set_busy(conn, req),
            Err(failure) => Self::write_line(svc, conn, &format!("err {}", failure.text())),
        }
    }

    fn submit_read(&mut self, svc: &mut Services, conn: ConnRef, query: Query) {
        match svc.start_read(PendingRead { conn, query }) {
            Ok(req) => self.set_busy(conn, req),
            Err(failure) => Self::write_line(svc, conn, &format!("err {}", failure.text())),
        }
    }

    fn set_busy(&mut self, conn: ConnRef, req: u64) {
        if let Some(session) = self.session(conn) {
            session.busy = Some(req);
        }
    }

    /// The final line for a telnet write whose entry was applied.
    pub fn answer(
        &mut self,
        svc: &mut Services,
        conn: ConnRef,
        join_room: Option<String>,
        outcome: &Outcome,
    ) {
        let account_write = self.session(conn).and_then(|s| s.account_write.take());
        let line = match outcome {
            Outcome::Posted { position } => format!("ack {position}"),
            Outcome::RoomCreated { .. } => {
                let room = join_room.unwrap_or_default();
                if let Some(session) = self.session(conn) {
                    session.rooms.enter(&room);
                    self.join_index(conn.key, &room);
                }
                format!("ack joined {}, posting there now", quoted_room(&room))
            }
            Outcome::KvAck { revision } => format!("ack {revision}"),
            Outcome::CasFailed { current } => {
                format!(
                    "err cas failed: current {}",
                    current.as_deref().unwrap_or(ABSENT)
                )
            }
            Outcome::NotFound => "err not found".to_string(),
            Outcome::Rejected(reason) => format!("err {reason}"),
            // Telnet commands carry no session; these answer binary clients only.
            Outcome::SessionOpened { session_id } => format!("ack session {session_id}"),
            Outcome::SessionExpired => "err session expired: open a new one".to_string(),
            Outcome::AccountSaved => match account_write {
                Some(AccountWrite::Registered(nick)) => {
                    if let Some(session) = self.session(conn) {
                        session.login = Some(nick.clone());
                        session.nick = nick.clone();
                    }
                    format!("ack registered {nick}, logged in as {nick}")
                }
                Some(AccountWrite::PasswordChanged) => "ack password changed".to_string(),
                _ => "ack account saved".to_string(),
            },
            Outcome::RoomUpdated | Outcome::Kicked { .. } => match account_write {
                Some(AccountWrite::Room(line)) => line,
                _ => "ack room updated".to_string(),
            },
        };
        self.finish(svc, conn, &line);
    }

    /// Live delivery of a newly applied message to every session in its room. The lines go
    /// into each member's buffer now (in apply order, so every member sees the room in order);
    /// the writes happen in bulk flushes after the replies (`Transport::output_bulk`).
    pub fn push_message(&mut self, svc: &mut Services, position: u64) {
        let Some(message) = svc.replica.sm().message(position) else {
            return;
        };
        let Some(members) = self.members.get(&message.room) else {
            return;
        };
        let mut line = Vec::with_capacity(128);
        telnet::format_push(&message, &mut line);
        let mut too_slow = Vec::new();
        for key in members {
            let Some(session) = self.sessions.get_mut(key) else {
                continue;
            };
            let Some(buffers) = svc.transport.output_bulk(session.conn) else {
                continue;
            };
            if session.listing.is_some() {
                session.held_pushes.extend_from_slice(&line);
            } else {
                buffers.output().extend_from_slice(&line);
            }
            if buffers.pending_output() > OUTPUT_BYTES_MAX
                || session.held_pushes.len() > HELD_PUSH_BYTES_MAX
            {
                too_slow.push(session.conn);
            }
        }
        for conn in too_slow {
            self.disconnect_slow(svc, conn);
        }
    }

    /// A client whose output passed its bound: one best-effort line, then the connection goes.
    /// Its unsent output is dropped, not kept: the point is to stop growing memory.
    fn disconnect_slow(&mut self, svc: &mut Services, conn: ConnRef) {
        let Some(c) = svc.transport.get_mut(conn) else {
            return;
        };
        log::info!(
            "node {}: disconnecting a client that fell behind live delivery",
            svc.cfg.id
        );
        svc.limits.counters.slow_disconnects += 1;
        c.buffers.clear();
        c.buffers
            .output()
            .extend_from_slice(b"err too slow: you fell behind live delivery, disconnecting\r\n");
        let _ = svc.transport.write(conn.key);
        svc.transport.close(conn.key);
        self.forget(conn.key);
    }

    fn release_held_pushes(&mut self, svc: &mut Services, conn: ConnRef) {
        let Some(session) = self.sessions.get_mut(&conn.key).filter(|s| s.conn == conn) else {
            return;
        };
        if session.listing.is_some() || session.held_pushes.is_empty() {
            return;
        }
        let Some(c) = svc.transport.get_mut(conn) else {
            return;
        };
        c.buffers
            .output()
            .extend_from_slice(&std::mem::take(&mut session.held_pushes));
        svc.transport.mark_dirty(conn.key);
    }

    /// Answers a telnet read whose read index has been applied.
    pub fn serve(&mut self, svc: &mut Services, conn: ConnRef, query: Query) {
        if svc.transport.get(conn).is_none() {
            return;
        }
        match query {
            // Binary and web queries are answered by their front-ends; none reaches telnet.
            Query::LogPage { .. } | Query::Value { .. } | Query::KeyList { .. } => {}
            Query::WebRooms { .. } | Query::WebHistory { .. } => {}
            Query::ChatLog => {
                let last_position = svc.replica.sm().last_position();
                if let Some(session) = self.session(conn) {
                    session.listing = Some(Listing {
                        next_position: 1,
                        last_position,
                        listed: 0,
                        page: VecDeque::new(),
                        fetch_at: 1,
                        fetching: false,
                    });
                    session.busy = None;
                }
                svc.transport.mark_dirty(conn.key);
                // The listing streams out in `refill`; `end` follows the last line.
            }
            Query::History { room, n } => self.serve_history(svc, conn, &room, n),
            Query::Rooms => {
                let lines: Vec<String> = svc
                    .replica
                    .sm()
                    .rooms()
                    .iter()
                    .map(|(room, count)| format!("room {} {count}", quoted_room(room)))
                    .collect();
                self.finish_listing(svc, conn, &lines);
            }
            Query::Get { key } => {
                let found = svc.replica.sm().get(&key).map(|(v, r)| (v.to_string(), r));
                match found {
                    Some((value, revision)) => {
                        Self::write_line(svc, conn, &format!("value {revision} {value}"));
                        self.finish(svc, conn, "end");
                    }
                    None => self.finish(svc, conn, "err not found"),
                }
            }
            Query::Keys { prefix } => {
                let keys: Vec<String> = svc
                    .replica
                    .sm()
                    .keys(&prefix)
                    .into_iter()
                    .map(|k| format!("key {k}"))
                    .collect();
                self.finish_listing(svc, conn, &keys);
            }
        }
    }

    /// Writes `lines`, then `end <count>`.
    fn finish_listing(&mut self, svc: &mut Services, conn: ConnRef, lines: &[String]) {
        for line in lines {
            Self::write_line(svc, conn, line);
        }
        self.finish(svc, conn, &format!("end {}", lines.len()));
    }

    /// `history #room n`: answered now when the messages are in memory; otherwise the command
    /// stays in flight while the reader thread reads the store (`history_done` ends it).
    fn serve_history(&mut self, svc: &mut Services, conn: ConnRef, room: &str, n: usize) {
        let sm = svc.replica.sm();
        if !sm.room_exists(room) {
            let line = format!("err unknown room {}: `rooms` lists them", quoted_room(room));
            return self.finish(svc, conn, &line);
        }
        let messages = match sm.room_history_read(room, n) {
            Read::Now(messages) => messages,
            Read::Later(pending) => {
                let waiter = Waiter::TelnetHistory { conn };
                match svc.reads.submit(pending, waiter) {
                    Ok(()) => self.set_busy(conn, u64::MAX),
                    Err((_, why)) => self.finish(svc, conn, &format!("err {why}")),
                }
                return;
            }
        };
        let mut out = Vec::new();
        let count = messages.len();
        for message in messages {
            telnet::format_message(&message, &mut out);
        }
        if let Some(o) = svc.transport.output(conn) {
            o.extend_from_slice(&out);
        }
        self.finish(svc, conn, &format!("end {count}"));
    }

    /// The reader thread answered this connection's `history`: written as `serve_history`
    /// writes it, or `err` with the reason. Dropped if the connection closed meanwhile.
    pub fn history_done(
        &mut self,
        svc: &mut Services,
        conn: ConnRef,
        answer: Result<Vec<ChatMessage>, String>,
    ) {
        if self.session(conn).is_none() || svc.transport.get(conn).is_none() {
            return;
        }
        match answer {
            Ok(messages) => {
                if let Some(o) = svc.transport.output(conn) {
                    for message in &messages {
                        telnet::format_message(message, o);
                    }
                }
                self.finish(svc, conn, &format!("end {}", messages.len()));
            }
            Err(why) => self.finish(svc, conn, &format!("err reading the history: {why}")),
        }
    }

    /// The reader thread read a page of this connection's `get chatLog`: it goes on (in the
    /// flush), or ends with `err` and the reason. Dropped if the connection closed meanwhile.
    pub fn listing_page_done(
        &mut self,
        svc: &mut Services,
        conn: ConnRef,
        answer: Result<Vec<ChatMessage>, String>,
    ) {
        let Some(session) = self.session(conn) else {
            return;
        };
        let Some(listing) = session.listing.as_mut() else {
            return;
        };
        listing.fetching = false;
        match answer {
            Ok(messages) if !messages.is_empty() => {
                listing.fetch_at = messages.last().map_or(listing.fetch_at, |m| m.position + 1);
                listing.page.extend(messages);
                svc.transport.mark_dirty(conn.key);
            }
            Ok(_) => {
                let why = format!(
                    "the message store has nothing from position {}",
                    listing.fetch_at
                );
                session.listing = None;
                self.finish(svc, conn, &format!("err reading the chat log: {why}"));
            }
            Err(why) => {
                session.listing = None;
                self.finish(svc, conn, &format!("err reading the chat log: {why}"));
            }
        }
    }

    /// Tops up a streaming `get chatLog` listing, then writes. Called from the flush. Formats
    /// at most about `STREAM_TURN_BYTES` per call; a listing the kernel keeps up with is then
    /// marked dirty so the next turn continues it. Messages only the message store has come
    /// in pages from the reader thread (`listing_page_done`), one page asked for ahead; the
    /// listing waits while the page it needs is being read.
    pub fn refill(&mut self, svc: &mut Services, key: usize) {
        let mut formatted = 0;
        loop {
            let Some(session) = self.sessions.get_mut(&key) else {
                return;
            };
            let conn = session.conn;
            let Some(listing) = session.listing.as_mut() else {
                return;
            };
            let Some(c) = svc.transport.get_mut(conn) else {
                return;
            };
            let sm = svc.replica.sm();
            let stored_through = sm.stored_through();
            let mut waiting = false;
            let mut failed = None;
            while c.buffers.pending_output() < STREAM_REFILL_BYTES
                && listing.next_position <= listing.last_position
            {
                if let Some(message) = listing.page.pop_front() {
                    if message.position > listing.last_position {
                        listing.next_position = listing.last_position + 1;
                        break;
                    }
                    let before = c.buffers.pending_output();
                    telnet::format_message(&message, c.buffers.output());
                    formatted += c.buffers.pending_output().saturating_sub(before);
                    listing.listed += 1;
                    listing.next_position = message.position + 1;
                    continue;
                }
                if listing.fetching {
                    waiting = true;
                    break;
                }
                listing.fetch_at = listing.next_position;
                if listing.next_position <= stored_through {
                    match fetch_page(&mut svc.reads, sm, conn, listing) {
                        Ok(()) => continue,
                        Err(why) => {
                            failed = Some(why);
                            break;
                        }
                    }
                }
                // In memory: one iterator for the rest of this refill.
                let mut messages = sm.messages_from(listing.next_position);
                while c.buffers.pending_output() < STREAM_REFILL_BYTES
                    && listing.next_position <= listing.last_position
                {
                    match messages.next() {
                        Some(message) if message.position <= listing.last_position => {
                            let before = c.buffers.pending_output();
                            telnet::format_message(&message, c.buffers.output());
                            formatted += c.buffers.pending_output().saturating_sub(before);
                            listing.listed += 1;
                            listing.next_position = message.position + 1;
                        }
                        _ => listing.next_position = listing.last_position + 1,
                    }
                }
                listing.fetch_at = listing.next_position;
            }
            // One page ahead of what is formatted.
            if failed.is_none()
                && !listing.fetching
                && listing.page.len() < LISTING_PAGE
                && !listing.page.is_empty()
                && listing.fetch_at <= stored_through.min(listing.last_position)
            {
                if let Err(why) = fetch_page(&mut svc.reads, sm, conn, listing) {
                    failed = Some(why);
                }
            }
            if let Some(why) = failed {
                session.listing = None;
                self.finish(svc, conn, &format!("err reading the chat log: {why}"));
                return;
            }
            if listing.next_position > listing.last_position {
                let count = listing.listed;
                session.listing = None;
                self.finish(svc, conn, &format!("end {count}"));
                return;
            }
            // Write now; keep filling while the kernel takes everything.
            if svc.transport.write(key).is_err() {
                svc.transport.close(key);
                return;
            }
            if waiting {
                return; // the page's arrival brings us back
            }
            if svc
                .transport
                .get(conn)
                .is_some_and(|c| c.buffers.pending_output() > 0)
            {
                return; // the writable event brings us back
            }
            if formatted >= STREAM_TURN_BYTES {
                svc.transport.mark_dirty(key); // this turn's share is used: next turn
                return;
            }
        }
    }
}

/// Asks for the listing's next page from `fetch_at`: in memory after all (taken into `page`
/// now) or read by the reader thread (`fetching` until `listing_page_done`).
fn fetch_page(
    reads: &mut DiskReads,
    sm: &StateMachine,
    conn: ConnRef,
    listing: &mut Listing,
) -> Result<(), String> {
    match sm.messages_from_read(listing.fetch_at, LISTING_PAGE) {
        Read::Now(messages) => {
            let messages: Vec<ChatMessage> = messages.into_iter().map(Cow::into_owned).collect();
            match messages.last() {
                Some(m) => listing.fetch_at = m.position + 1,
                None if listing.page.is_empty() => {
                    // Nothing from here on: the listing is complete.
                    listing.fetch_at = listing.last_position + 1;
                    listing.next_position = listing.last_position + 1;
                }
                None => listing.fetch_at = listing.last_position + 1,
            }
            listing.page.extend(messages);
            Ok(())
        }
        Read::Later(pending) => {
            reads
                .submit(pending, Waiter::Listing { conn })
                .map_err(|(_, why)| why)?;
            listing.fetching = true;
            Ok(())
        }
    }
}

impl Session {
    /// `leave <room>`: the reply line (`Err` if the session was not in it).
    fn leave(&mut self, room: &str) -> Result<String, String> {
        if !self.rooms.leave(room) {
            return Err(format!("err not in {}: `join` it first", quoted_room(room)));
        }
        Ok(format!(
            "ack left {}, posting to {}",
            quoted_room(room),
            quoted_room(self.rooms.current())
        ))
    }
}
