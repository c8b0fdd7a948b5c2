//! Telnet sessions on a node: parsed command lines into writes and reads (see `requests`),
//! and their results into reply lines.
//!
//! One command is in flight per connection, so replies come back in the order commands were
//! typed; lines typed meanwhile wait in the session. Every command ends with exactly one
//! `ack …`, `end …` or `err …` line. Lines pushed without a command (`msg …` live delivery)
//! are held back while a listing is being streamed, so they never split a response.

use std::collections::VecDeque;

use super::node::{ConnKind, ConnRef, Node};
use super::requests::{Failure, Query, ReplyTo};
use crate::chat::telnet::{self, LineSplitter, Request};
use crate::chat::{Op, Outcome, DEFAULT_ROOM};

/// A client whose unsent output passes this bound is too slow to follow live delivery.
const OUTPUT_BYTES_MAX: usize = 4 << 20;
/// A streamed listing is refilled whenever less than this is waiting to be sent.
const STREAM_REFILL_BYTES: usize = 256 * 1024;
/// How `cas` and `err cas failed` spell "the key is absent" (the telnet parser's token).
const ABSENT: &str = "-";
/// Lines typed ahead while a command is in flight; past this the session stops reading.
const QUEUED_LINES_MAX: usize = 256;

/// `get chatLog` being written out a chunk at a time: the messages at positions
/// `next_position..=last_position` (the log at the read), skipping holes. With retention, a
/// message dropped while the listing streams is skipped too.
struct Listing {
    next_position: u64,
    last_position: u64,
    /// Lines written so far, for `end <count>`.
    listed: u64,
}

pub(super) struct Session {
    splitter: LineSplitter,
    queued: VecDeque<Result<Vec<u8>, String>>,
    nick: String,
    room: String,
    joined: Vec<String>,
    /// The request id of the command in flight, if any.
    busy: Option<u64>,
    listing: Option<Listing>,
    /// Positions of live-delivery messages held back behind a listing.
    held_pushes: VecDeque<u64>,
    /// Greeted before it sent anything; cleared by its first input.
    greeted_silent: bool,
}

impl Session {
    pub(super) fn new() -> Session {
        Session {
            splitter: LineSplitter::new(),
            queued: VecDeque::new(),
            nick: "anonymous".to_string(),
            room: DEFAULT_ROOM.to_string(),
            joined: vec![DEFAULT_ROOM.to_string()],
            busy: None,
            listing: None,
            held_pushes: VecDeque::new(),
            greeted_silent: false,
        }
    }

    /// A connection greeted as telnet whose first bytes turn out to be a binary preamble (a
    /// peer or program that was slow to speak) must be classified again.
    pub(super) fn is_binary_after_greeting(&mut self, input: &[u8]) -> bool {
        let misjudged = self.greeted_silent && input.first() == Some(&0);
        if !input.is_empty() {
            self.greeted_silent = false;
        }
        misjudged
    }

    /// A command in flight, lines waiting, or a listing streaming: a closing connection waits.
    pub(super) fn has_work(&self) -> bool {
        self.busy.is_some() || !self.queued.is_empty() || self.listing.is_some()
    }

    /// True while typed-ahead lines are piling up behind a slow command.
    pub(super) fn input_paused(&self) -> bool {
        self.queued.len() >= QUEUED_LINES_MAX
    }
}

fn quoted_room(room: &str) -> String {
    format!("#{room}")
}

impl Node {
    fn session_mut(&mut self, key: usize) -> Option<&mut Session> {
        match self.conns.get_mut(key).map(|c| &mut c.kind) {
            Some(ConnKind::Telnet(session)) => Some(session),
            _ => None,
        }
    }

    fn conn_ref(&self, key: usize) -> ConnRef {
        ConnRef {
            key,
            id: self.conns[key].id,
        }
    }

    pub(super) fn conn_of(&mut self, conn: ConnRef) -> Option<&mut super::node::Conn> {
        self.conns.get_mut(conn.key).filter(|c| c.id == conn.id)
    }

    /// Appends `text` and a newline to the connection's output.
    pub(super) fn write_line(&mut self, conn: ConnRef, text: &str) {
        if let Some(c) = self.conn_of(conn) {
            let out = c.buffers.output();
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(telnet::LINE_END);
            self.mark_dirty(conn.key);
        }
    }

    /// The command in flight on `conn` is finished: write its final line and take the next one.
    fn finish(&mut self, conn: ConnRef, final_line: &str) {
        self.write_line(conn, final_line);
        if let Some(session) = self.session_mut(conn.key) {
            session.busy = None;
        }
        self.release_held_pushes(conn.key);
        self.run_queued(conn.key);
    }

    /// Ends the command in flight on `conn` with `err <why>`.
    pub(super) fn telnet_fail(&mut self, conn: ConnRef, failure: &Failure) {
        self.finish(conn, &format!("err {}", failure.text()));
    }

    /// A connection that sent nothing after a moment is a person at a telnet prompt: say hello.
    pub(super) fn greet(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut session = Box::new(Session::new());
        session.greeted_silent = true;
        conn.kind = ConnKind::Telnet(session);
        self.telnet_sessions += 1;
        let text = format!(
            "hello raftchat node {} of {}: type `help` for commands, `msg <text>` to chat",
            self.cfg.id,
            self.cfg.members.len()
        );
        let conn = self.conn_ref(key);
        self.write_line(conn, &text);
    }

    pub(super) fn handle_telnet_input(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let ConnKind::Telnet(session) = &mut conn.kind else {
            return;
        };
        let input = conn.buffers.input();
        let used = input.len();
        session.splitter.feed(input);
        conn.buffers.consume(used);
        while let Some(line) = session.splitter.next_line() {
            match line {
                // A person pressing Enter on an empty prompt gets no error.
                Ok(line) if line.iter().all(|b| b.is_ascii_whitespace()) => {}
                line => session.queued.push_back(line.map(<[u8]>::to_vec)),
            }
        }
        self.run_queued(key);
    }

    /// Runs queued lines until one is in flight or none is left.
    fn run_queued(&mut self, key: usize) {
        let was_paused = self.session_mut(key).is_some_and(|s| s.input_paused());
        loop {
            let Some(session) = self.session_mut(key) else {
                return;
            };
            if session.busy.is_some() || session.listing.is_some() {
                break;
            }
            let Some(line) = session.queued.pop_front() else {
                break;
            };
            let conn = self.conn_ref(key);
            match line.and_then(|l| telnet::parse_line(&l)) {
                Ok(request) => self.handle_request(conn, request),
                Err(reason) => self.write_line(conn, &format!("err {reason}")),
            }
        }
        if was_paused && self.session_mut(key).is_some_and(|s| !s.input_paused()) {
            self.read_conn(key);
        }
    }

    fn handle_request(&mut self, conn: ConnRef, request: Request) {
        let Some(session) = self.session_mut(conn.key) else {
            return;
        };
        match request {
            Request::Msg { room, text } => {
                let room = room.unwrap_or_else(|| session.room.clone());
                let nick = session.nick.clone();
                self.submit_write(conn, Op::Post { room, nick, text }, None);
            }
            Request::Join(room) => {
                self.submit_write(conn, Op::CreateRoom { room: room.clone() }, Some(room));
            }
            Request::Leave(room) => {
                if let Some(pos) = session.joined.iter().position(|r| *r == room) {
                    session.joined.remove(pos);
                    if session.room == room {
                        session.room = session
                            .joined
                            .last()
                            .cloned()
                            .unwrap_or_else(|| DEFAULT_ROOM.to_string());
                    }
                    let now_in = quoted_room(&session.room);
                    self.write_line(
                        conn,
                        &format!("ack left {}, posting to {now_in}", quoted_room(&room)),
                    );
                } else {
                    self.write_line(
                        conn,
                        &format!("err not in {}: `join` it first", quoted_room(&room)),
                    );
                }
            }
            Request::Nick(name) => {
                session.nick = name.clone();
                self.write_line(conn, &format!("ack nick {name}"));
            }
            Request::Set { key, value } => self.submit_write(conn, Op::Set { key, value }, None),
            Request::Del { key } => self.submit_write(conn, Op::Del { key }, None),
            Request::Cas { key, expected, new } => {
                self.submit_write(conn, Op::Cas { key, expected, new }, None)
            }
            Request::GetChatLog => self.submit_read(conn, Query::ChatLog),
            Request::History { room, n } => {
                let room = room.unwrap_or_else(|| session.room.clone());
                self.submit_read(conn, Query::History { room, n })
            }
            Request::Rooms => self.submit_read(conn, Query::Rooms),
            Request::Get { key } => self.submit_read(conn, Query::Get { key }),
            Request::Keys { prefix } => self.submit_read(conn, Query::Keys { prefix }),
            Request::Help => {
                for line in telnet::HELP_TEXT.lines() {
                    self.write_line(conn, line);
                }
                self.write_line(conn, "end");
            }
            Request::Status => self.write_status(conn),
            Request::Quit => {
                session.queued.clear();
                self.write_line(conn, "ack bye");
                if let Some(c) = self.conn_of(conn) {
                    c.closing = true;
                }
            }
            Request::Transfer { to } => {
                let line = match self.raft.transfer_leadership(to) {
                    Ok(()) => format!("ack transferring leadership to node {to}"),
                    Err(e) => format!("err {e}"),
                };
                self.write_line(conn, &line);
            }
        }
    }

    fn write_status(&mut self, conn: ConnRef) {
        let status = self.raft.status();
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
            format!("applied {}", self.sm.applied_index()),
            format!("last {}", status.last_index),
            format!("log_first {}", self.raft.first_index()),
            format!(
                "snapshot {}",
                self.raft.snapshot().map_or(0, |snapshot| snapshot.index)
            ),
            format!("messages {}", self.sm.message_count()),
            format!("last_position {}", self.sm.last_position()),
            format!("retain_messages {}", self.sm.retain_messages()),
        ];
        for peer in &status.peers {
            lines.push(format!(
                "peer {} match {} next {} {}",
                peer.id, peer.match_index, peer.next_index, peer.state
            ));
        }
        for line in lines {
            self.write_line(conn, &line);
        }
        self.write_line(conn, "end");
    }

    /// Starts a write for a telnet command; the answer comes in `telnet_answer`.
    fn submit_write(&mut self, conn: ConnRef, op: Op, join_room: Option<String>) {
        match self.start_write(conn, op, None, ReplyTo::Telnet { join_room }) {
            Ok(req) => self.set_busy(conn.key, req),
            Err(failure) => self.write_line(conn, &format!("err {}", failure.text())),
        }
    }

    fn submit_read(&mut self, conn: ConnRef, query: Query) {
        match self.start_read(conn, query) {
            Ok(req) => self.set_busy(conn.key, req),
            Err(failure) => self.write_line(conn, &format!("err {}", failure.text())),
        }
    }

    fn set_busy(&mut self, key: usize, req: u64) {
        if let Some(session) = self.session_mut(key) {
            session.busy = Some(req);
        }
    }

    /// The final line for a telnet write whose entry was applied.
    pub(super) fn telnet_answer(
        &mut self,
        conn: ConnRef,
        join_room: Option<String>,
        outcome: &Outcome,
    ) {
        let line = match outcome {
            Outcome::Posted { position } => format!("ack {position}"),
            Outcome::RoomCreated { .. } => {
                let room = join_room.unwrap_or_default();
                if let Some(session) = self.session_mut(conn.key) {
                    if !session.joined.contains(&room) {
                        session.joined.push(room.clone());
                    }
                    session.room = room.clone();
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
        };
        self.finish(conn, &line);
    }

    /// Live delivery of a newly applied message to every client in its room.
    pub(super) fn push_message(&mut self, position: u64) {
        if self.telnet_sessions == 0 {
            return;
        }
        let Some(message) = self.sm.message(position) else {
            return;
        };
        let mut line = Vec::with_capacity(128);
        telnet::format_push(message, &mut line);
        let room = message.room.clone();
        let mut too_slow = Vec::new();
        let mut touched = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            let ConnKind::Telnet(session) = &mut conn.kind else {
                continue;
            };
            if !session.joined.contains(&room) {
                continue;
            }
            if session.listing.is_some() {
                session.held_pushes.push_back(position);
            } else {
                conn.buffers.output().extend_from_slice(&line);
            }
            if conn.buffers.pending_output() > OUTPUT_BYTES_MAX
                || session.held_pushes.len() > 100_000
            {
                too_slow.push(key);
            }
            touched.push(key);
        }
        for key in touched {
            self.mark_dirty(key);
        }
        for key in too_slow {
            self.disconnect_slow(key);
        }
    }

    /// A client whose output passed its bound: one best-effort line, then the connection goes.
    /// Its unsent output is dropped, not kept: the point is to stop growing memory.
    fn disconnect_slow(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        log::info!(
            "node {}: disconnecting a client that fell behind live delivery",
            self.cfg.id
        );
        conn.buffers.clear();
        conn.buffers
            .output()
            .extend_from_slice(b"err too slow: you fell behind live delivery, disconnecting\r\n");
        let _ = conn.buffers.write_to(&mut conn.stream);
        self.close(key);
    }

    fn release_held_pushes(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let ConnKind::Telnet(session) = &mut conn.kind else {
            return;
        };
        if session.listing.is_some() {
            return;
        }
        while let Some(position) = session.held_pushes.pop_front() {
            if let Some(message) = self.sm.message(position) {
                telnet::format_push(message, conn.buffers.output());
            }
        }
    }

    /// Answers a telnet read whose read index has been applied.
    pub(super) fn telnet_serve(&mut self, conn: ConnRef, query: Query) {
        if self.conn_of(conn).is_none() {
            return;
        }
        match query {
            // Binary queries are answered by `binary`; none reaches a telnet session.
            Query::LogPage { .. } | Query::Value { .. } | Query::KeyList { .. } => {}
            Query::ChatLog => {
                let last_position = self.sm.last_position();
                if let Some(session) = self.session_mut(conn.key) {
                    session.listing = Some(Listing {
                        next_position: 1,
                        last_position,
                        listed: 0,
                    });
                    session.busy = None;
                }
                self.mark_dirty(conn.key);
                // The listing streams out in `refill_stream`; `end` follows the last line.
            }
            Query::History { room, n } => {
                if !self.sm.room_exists(&room) {
                    let line = format!(
                        "err unknown room {}: `rooms` lists them",
                        quoted_room(&room)
                    );
                    return self.finish(conn, &line);
                }
                let mut out = Vec::new();
                let messages = self.sm.room_history(&room, n);
                let count = messages.len();
                for message in messages {
                    telnet::format_message(message, &mut out);
                }
                if let Some(c) = self.conn_of(conn) {
                    c.buffers.output().extend_from_slice(&out);
                }
                self.finish(conn, &format!("end {count}"));
            }
            Query::Rooms => {
                let lines: Vec<String> = self
                    .sm
                    .rooms()
                    .iter()
                    .map(|(room, count)| format!("room {} {count}", quoted_room(room)))
                    .collect();
                let count = lines.len();
                for line in lines {
                    self.write_line(conn, &line);
                }
                self.finish(conn, &format!("end {count}"));
            }
            Query::Get { key } => match self.sm.get(&key).map(|(v, r)| (v.to_string(), r)) {
                Some((value, revision)) => {
                    self.write_line(conn, &format!("value {revision} {value}"));
                    self.finish(conn, "end");
                }
                None => self.finish(conn, "err not found"),
            },
            Query::Keys { prefix } => {
                let keys: Vec<String> = self
                    .sm
                    .keys(&prefix)
                    .into_iter()
                    .map(|k| format!("key {k}"))
                    .collect();
                let count = keys.len();
                for key in keys {
                    self.write_line(conn, &key);
                }
                self.finish(conn, &format!("end {count}"));
            }
        }
    }

    /// Tops up a streaming `get chatLog` listing, then writes. Called from the flush.
    pub(super) fn refill_stream(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let ConnKind::Telnet(session) = &mut conn.kind else {
                return;
            };
            let Some(listing) = session.listing.as_mut() else {
                return;
            };
            while conn.buffers.pending_output() < STREAM_REFILL_BYTES
                && listing.next_position <= listing.last_position
            {
                // The next retained message at or after `next_position` (O(log n) to find).
                match self.sm.messages_from(listing.next_position).next() {
                    Some(message) if message.position <= listing.last_position => {
                        telnet::format_message(message, conn.buffers.output());
                        listing.listed += 1;
                        listing.next_position = message.position + 1;
                    }
                    _ => listing.next_position = listing.last_position + 1,
                }
            }
            if listing.next_position > listing.last_position {
                let count = listing.listed;
                session.listing = None;
                let conn_ref = ConnRef { key, id: conn.id };
                self.finish(conn_ref, &format!("end {count}"));
                return;
            }
            // Write now; keep filling while the kernel takes everything.
            if conn.buffers.write_to(&mut conn.stream).is_err() {
                self.close(key);
                return;
            }
            if conn.buffers.pending_output() > 0 {
                return;
            }
        }
    }
}
