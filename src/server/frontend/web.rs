//! The web front-end: HTTP/1.1 on the client port (the chat page, `/metrics`, `/health`) and,
//! after `GET /ws`, the WebSocket chat sessions.
//!
//! It owns the per-connection web state and turns request heads into responses with the pure
//! pieces in `crate::web` (head parser, page, health verdict) and `crate::metrics`. Every plain
//! HTTP response closes the connection (`Connection: close`): one request per connection. It
//! never parses a byte itself and never reaches into Raft: what it reports comes from the
//! replica's public counters.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::json;

use super::rooms::RoomSet;
use super::web_accounts::{self, WsAccount};
use crate::chat::{ChatMessage, Op, Outcome, Read};
use crate::metrics::Metrics;
use crate::server::accounts::Verdict;
use crate::server::disk_reads::Waiter;
use crate::server::limits;
use crate::server::logins::{self, Action, Front, Refused, LOGIN_FAILED_TEXT};
use crate::server::services::{Failure, PendingRead, Query, ReplyTo, Services};
use crate::server::transport::{ConnRef, Proto};
use crate::web::health::{health, HealthInput};
use crate::web::http::{self, Check, Invalid, Route};
use crate::web::json::{self as wsjson, Envelope, WsRequest};
use crate::web::{page, ws};

/// The first bytes that select HTTP on the shared client port.
pub const HTTP_PREFIX: &[u8] = b"GET ";
/// A WebSocket client whose unsent output passes this bound is too slow for live delivery.
const WS_OUTPUT_BYTES_MAX: usize = 4 << 20;
/// Requests a session may have in flight; past this its socket is not read until some finish
/// (one read buffer of requests may start past it: the bound is checked before each read).
const WS_IN_FLIGHT_MAX: usize = 256;

/// One browser's chat session on an upgraded connection.
#[derive(Debug)]
struct WsSession {
    decoder: ws::Decoder,
    nick: String,
    /// Rooms whose messages are pushed live, and where `msg` without a room posts.
    rooms: RoomSet,
    /// Writes and reads started and not yet answered.
    in_flight: usize,
    /// The account this session is logged in to.
    login: Option<String>,
    /// An account request in flight (one at a time): its type and nick for the `ack`, and its id.
    account: Option<(&'static str, String, Option<u64>)>,
}

impl WsSession {
    fn new() -> WsSession {
        WsSession {
            decoder: ws::Decoder::new(),
            nick: "anonymous".to_string(),
            rooms: RoomSet::default(),
            in_flight: 0,
            login: None,
            account: None,
        }
    }
}

/// Per-connection web state.
#[derive(Debug)]
enum WebConn {
    /// Waiting for a request head; `answered` once the response is queued (then closing).
    Http {
        answered: bool,
    },
    WebSocket(WsSession),
}

/// How long a connection may take to send its whole request head; then 408 and closed (a
/// slow-loris client holds a connection, never the loop).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Every web connection on the node, by connection key.
#[derive(Default)]
pub struct Web {
    conns: HashMap<usize, (ConnRef, WebConn)>,
    /// Connections in the order they opened, with the time their head is due by.
    head_deadlines: VecDeque<(Instant, ConnRef)>,
    /// Sessions whose in-flight requests dropped below the bound: read their sockets again.
    resumed: Vec<usize>,
}

impl Web {
    /// Takes over a connection whose first bytes are [`HTTP_PREFIX`].
    pub fn open(&mut self, svc: &mut Services, conn: ConnRef) {
        if let Some(c) = svc.transport.get_mut(conn) {
            c.proto = Proto::Http;
            let state = WebConn::Http { answered: false };
            self.conns.insert(conn.key, (conn, state));
            self.head_deadlines
                .push_back((Instant::now() + HEAD_TIMEOUT, conn));
        }
    }

    /// Answers 408 and closes every connection whose request head is overdue (called from the
    /// loop's timers).
    pub fn expire_heads(&mut self, svc: &mut Services, now: Instant) {
        while let Some(&(due, conn)) = self.head_deadlines.front() {
            if due > now {
                break;
            }
            self.head_deadlines.pop_front();
            if let Some(WebConn::Http { answered: false }) = self.state(conn) {
                self.refuse(
                    svc,
                    conn,
                    Invalid::new(408, "request head not received in time"),
                );
            }
        }
    }

    fn state(&mut self, conn: ConnRef) -> Option<&mut WebConn> {
        self.conns
            .get_mut(&conn.key)
            .filter(|(r, _)| *r == conn)
            .map(|(_, state)| state)
    }

    fn session(&mut self, conn: ConnRef) -> Option<&mut WsSession> {
        match self.state(conn)? {
            WebConn::WebSocket(session) => Some(session),
            WebConn::Http { .. } => None,
        }
    }

    /// True while a session has [`WS_IN_FLIGHT_MAX`] requests in flight: do not read it.
    pub fn input_paused(&self, key: usize) -> bool {
        matches!(
            self.conns.get(&key),
            Some((_, WebConn::WebSocket(s))) if s.in_flight >= WS_IN_FLIGHT_MAX
        )
    }

    /// Sessions to read again (their in-flight requests dropped below the bound).
    pub fn take_resumed(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.resumed)
    }

    /// One in-flight request of `conn` finished.
    fn finished(&mut self, conn: ConnRef) {
        if let Some(session) = self.session(conn) {
            let was_paused = session.in_flight >= WS_IN_FLIGHT_MAX;
            session.in_flight = session.in_flight.saturating_sub(1);
            if was_paused && session.in_flight < WS_IN_FLIGHT_MAX {
                self.resumed.push(conn.key);
            }
        }
    }

    /// Counts a started request, or answers its immediate failure.
    fn started(
        &mut self,
        svc: &mut Services,
        conn: ConnRef,
        id: Option<u64>,
        result: Result<u64, Failure>,
    ) {
        match result {
            Ok(_) => {
                if let Some(session) = self.session(conn) {
                    session.in_flight += 1;
                }
            }
            Err(failure) => send_text(svc, conn, &wsjson::encode_err(id, failure.text())),
        }
    }

    /// Handles what arrived on an HTTP or WebSocket connection.
    pub fn handle_input(&mut self, svc: &mut Services, conn: ConnRef) {
        match self.state(conn) {
            Some(WebConn::Http { answered: false }) => self.handle_http(svc, conn),
            Some(WebConn::WebSocket(_)) => self.handle_frames(svc, conn),
            Some(WebConn::Http { answered: true }) => {
                // One request per connection: what follows the first is ignored.
                if let Some(c) = svc.transport.get_mut(conn) {
                    let n = c.buffers.input().len();
                    c.buffers.consume(n);
                }
            }
            None => {}
        }
    }

    /// A request head: answered and closed, or upgraded to a WebSocket session.
    fn handle_http(&mut self, svc: &mut Services, conn: ConnRef) {
        let Some(c) = svc.transport.get(conn) else {
            return;
        };
        let input = c.buffers.input();
        let len = match http::check(input) {
            Check::Incomplete => return,
            Check::Invalid(invalid) => return self.refuse(svc, conn, invalid),
            Check::Complete(len) => len,
        };
        let routed = http::parse(&input[..len]).and_then(|req| {
            let route = http::route(&req)?;
            let accept = match route {
                Route::WebSocket => Some(ws::check_handshake(&req)?),
                _ => None,
            };
            Ok((route, accept))
        });
        if let Some(c) = svc.transport.get_mut(conn) {
            c.buffers.consume(len);
        }
        match routed {
            Err(invalid) => self.refuse(svc, conn, invalid),
            Ok((_, Some(accept))) => self.upgrade(svc, conn, &accept),
            Ok((route, None)) => {
                let response = respond(svc, route);
                self.answered(svc, conn, &response);
            }
        }
    }

    fn refuse(&mut self, svc: &mut Services, conn: ConnRef, invalid: Invalid) {
        let mut out = Vec::new();
        http::write_error(&mut out, invalid);
        self.answered(svc, conn, &out);
    }

    /// Queues a whole response and closes once it is sent.
    fn answered(&mut self, svc: &mut Services, conn: ConnRef, response: &[u8]) {
        if let Some(state) = self.state(conn) {
            *state = WebConn::Http { answered: true };
        }
        if let Some(out) = svc.transport.output(conn) {
            out.extend_from_slice(response);
        }
        if let Some(c) = svc.transport.get_mut(conn) {
            c.closing = true;
        }
    }

    /// `101 Switching Protocols`, then `hello`; frames already received are handled.
    fn upgrade(&mut self, svc: &mut Services, conn: ConnRef, accept: &str) {
        let Some(state) = self.state(conn) else {
            return;
        };
        *state = WebConn::WebSocket(WsSession::new());
        if let Some(c) = svc.transport.get_mut(conn) {
            c.proto = Proto::WebSocket;
        }
        if let Some(out) = svc.transport.output(conn) {
            ws::write_handshake_response(out, accept);
        }
        let members = member_addrs(svc);
        send_text(svc, conn, &wsjson::encode_hello(svc.cfg.id, &members));
        self.handle_frames(svc, conn);
    }

    /// Decodes the frames received so far and handles their events.
    fn handle_frames(&mut self, svc: &mut Services, conn: ConnRef) {
        let Some(c) = svc.transport.get_mut(conn) else {
            return;
        };
        let Some((_, WebConn::WebSocket(session))) =
            self.conns.get_mut(&conn.key).filter(|(r, _)| *r == conn)
        else {
            return;
        };
        let decoded = session.decoder.decode_all(c.buffers.input());
        match decoded {
            Ok((events, used)) => {
                c.buffers.consume(used);
                for event in events {
                    self.on_event(svc, conn, event);
                }
            }
            Err(failure) => close_ws(svc, conn, failure.code, failure.reason),
        }
    }

    fn on_event(&mut self, svc: &mut Services, conn: ConnRef, event: ws::Event) {
        if svc.transport.get(conn).is_none_or(|c| c.closing) {
            return;
        }
        match event {
            ws::Event::Text(text) => match web_accounts::decode(&text) {
                Some(Ok((id, account))) => self.handle_account(svc, conn, id, account),
                Some(Err((id, reason))) => send_text(svc, conn, &wsjson::encode_err(id, &reason)),
                None => match wsjson::decode_request(&text) {
                    Ok(envelope) => self.handle_request(svc, conn, envelope),
                    Err(e) => send_text(svc, conn, &wsjson::encode_err(e.id, &e.reason)),
                },
            },
            ws::Event::Binary(_) => {
                close_ws(svc, conn, ws::CLOSE_UNSUPPORTED_DATA, "text frames only")
            }
            ws::Event::Ping(payload) => {
                if let Some(out) = svc.transport.output(conn) {
                    ws::encode_pong(out, &payload);
                }
            }
            ws::Event::Pong(_) => {}
            ws::Event::Close { code, .. } => {
                if let Some(out) = svc.transport.output(conn) {
                    ws::encode_close_reply(out, code);
                }
                if let Some(c) = svc.transport.get_mut(conn) {
                    c.closing = true;
                }
            }
        }
    }

    fn handle_request(&mut self, svc: &mut Services, conn: ConnRef, envelope: Envelope) {
        let Some(session) = self.session(conn) else {
            return;
        };
        let id = envelope.id;
        match envelope.request {
            WsRequest::Msg { room, text } => {
                let room = room.unwrap_or_else(|| session.rooms.current().to_string());
                let nick = session.nick.clone();
                let refusal = Self::post_refusal(svc, session, &room);
                let started = match svc.limits.take_msg(conn, std::time::Instant::now()) {
                    Err(wait) => Err(Failure::NotStored(limits::rate_limited_text(wait))),
                    Ok(()) => match refusal {
                        Some(reason) => Err(Failure::Rejected(reason)),
                        None => write(svc, conn, id, Op::Post { room, nick, text }, None),
                    },
                };
                self.started(svc, conn, id, started);
            }
            WsRequest::Join { room } => {
                // A logged-in account owns the rooms it creates and may join private rooms
                // that invited it, as over telnet.
                let op = match &session.login {
                    Some(nick) => Op::JoinRoom {
                        room: room.clone(),
                        nick: nick.clone(),
                    },
                    None => Op::CreateRoom { room: room.clone() },
                };
                let started = write(svc, conn, id, op, Some(room));
                self.started(svc, conn, id, started);
            }
            WsRequest::Nick { nick } => {
                let registered = svc.replica.sm().account_hash(&nick).is_some();
                let reply = if registered && session.login.as_deref() != Some(nick.as_str()) {
                    wsjson::encode_err(id, &format!("nick {nick} is registered: login first"))
                } else {
                    session.nick = nick.clone();
                    wsjson::encode_ack(id, "nick", &[("nick", json!(nick))])
                };
                send_text(svc, conn, &reply);
            }
            WsRequest::Leave { room } => {
                let reply = session.leave(id, &room);
                send_text(svc, conn, &reply);
            }
            WsRequest::Rooms => {
                let started = read(svc, conn, Query::WebRooms { id });
                self.started(svc, conn, id, started);
            }
            WsRequest::History { room, n } => {
                let room = room.unwrap_or_else(|| session.rooms.current().to_string());
                let started = read(svc, conn, Query::WebHistory { id, room, n });
                self.started(svc, conn, id, started);
            }
        }
    }

    /// Why this session may not post as its nick to `room` now, if it may not.
    fn post_refusal(svc: &Services, session: &WsSession, room: &str) -> Option<String> {
        let sm = svc.replica.sm();
        let login = session.login.as_deref();
        logins::post_refusal(sm, svc.cfg.require_login, login, &session.nick).or_else(|| {
            let private = sm.room_meta(room).is_some_and(|meta| meta.private);
            (private && !session.rooms.contains(room))
                .then(|| format!("#{room} is private: join it first"))
        })
    }

    /// `register`, `login`, `passwd`, `logout`: the telnet commands' checks and limits, through
    /// `server::logins`. One account request at a time per session.
    fn handle_account(
        &mut self,
        svc: &mut Services,
        conn: ConnRef,
        id: Option<u64>,
        account: WsAccount,
    ) {
        let Some(session) = self.session(conn) else {
            return;
        };
        if session.account.is_some() {
            let reply = wsjson::encode_err(id, "an account request is in progress: wait for it");
            return send_text(svc, conn, &reply);
        }
        let login = session.login.clone();
        let name = account.name();
        let sm = svc.replica.sm();
        let at = (conn, Front::Web { id });
        let (started, nick) = match account {
            WsAccount::Logout => {
                let reply = match session.login.take() {
                    Some(nick) => {
                        if session.nick == nick {
                            session.nick = "anonymous".to_string();
                        }
                        wsjson::encode_ack(id, "logout", &[("nick", json!(nick))])
                    }
                    None => wsjson::encode_err(id, "not logged in"),
                };
                return send_text(svc, conn, &reply);
            }
            WsAccount::Register { nick, password } => {
                let shown = nick.clone();
                let front = Front::Web { id };
                let started = svc.logins.start_register(sm, conn, front, nick, password);
                (started, shown)
            }
            WsAccount::Login { nick, password } => {
                let shown = nick.clone();
                (
                    svc.logins.start_login(sm, svc.cfg.id, at, nick, password),
                    shown,
                )
            }
            WsAccount::Passwd { old, new } => {
                let shown = login.clone().unwrap_or_default();
                let started =
                    svc.logins
                        .start_passwd(sm, svc.cfg.id, at, login.as_deref(), (old, new));
                (started, shown)
            }
        };
        match started {
            Ok(()) => {
                if let Some(session) = self.session(conn) {
                    session.account = Some((name, nick, id));
                }
            }
            Err(Refused { text, .. }) => send_text(svc, conn, &wsjson::encode_err(id, &text)),
        }
    }

    /// A hash job this session started is done (the node drains `Logins::finished`).
    pub fn account_job_done(
        &mut self,
        svc: &mut Services,
        conn: ConnRef,
        id: Option<u64>,
        action: Action,
        verdict: Verdict,
    ) {
        if self.session(conn).is_none() {
            return; // the connection closed meanwhile
        }
        let op = match (action, verdict) {
            (Action::Register { nick }, Verdict::Hashed(hash)) => Op::Register { nick, hash },
            (Action::Passwd { nick }, Verdict::Hashed(hash)) => Op::SetPassword { nick, hash },
            (Action::Login { nick }, Verdict::Verified) => {
                svc.logins.succeeded(conn, &nick);
                if let Some(session) = self.session(conn) {
                    session.login = Some(nick.clone());
                    session.nick = nick.clone();
                    session.account = None;
                }
                let ack = wsjson::encode_ack(id, "login", &[("nick", json!(nick))]);
                return send_text(svc, conn, &ack);
            }
            (action, verdict) => {
                let reason = match (action, verdict) {
                    (_, Verdict::Failed(reason)) => reason,
                    (Action::Login { nick } | Action::Passwd { nick }, _) => {
                        svc.logins.failed(svc.cfg.id, conn, &nick);
                        LOGIN_FAILED_TEXT.to_string()
                    }
                    (Action::Register { .. }, _) => "register failed: try again".to_string(),
                };
                if let Some(session) = self.session(conn) {
                    session.account = None;
                }
                return send_text(svc, conn, &wsjson::encode_err(id, &reason));
            }
        };
        let started = write(svc, conn, id, op, None);
        if started.is_err() {
            if let Some(session) = self.session(conn) {
                session.account = None;
            }
        }
        self.started(svc, conn, id, started);
    }

    /// The request `id` failed: if it was the account request in flight, that one is over.
    fn account_failed(&mut self, conn: ConnRef, id: Option<u64>) {
        if let Some(session) = self.session(conn) {
            if session.account.as_ref().is_some_and(|a| a.2 == id) {
                session.account = None;
            }
        }
    }

    /// `nick` was kicked out of `room` (applied on this node): its sessions here leave it.
    pub fn kick(&mut self, room: &str, nick: &str) {
        for (_, state) in self.conns.values_mut() {
            if let WebConn::WebSocket(session) = state {
                if session.nick == nick || session.login.as_deref() == Some(nick) {
                    session.rooms.leave(room);
                }
            }
        }
    }

    /// The reply to a WebSocket write whose entry was applied (only then: a message shown as
    /// sent is committed).
    pub fn answer(
        &mut self,
        svc: &mut Services,
        conn: ConnRef,
        id: Option<u64>,
        join_room: Option<String>,
        outcome: &Outcome,
    ) {
        self.finished(conn);
        let reply = match outcome {
            Outcome::Posted { position } => {
                wsjson::encode_ack(id, "msg", &[("pos", json!(position))])
            }
            Outcome::RoomCreated { .. } => {
                let room = join_room.unwrap_or_default();
                if let Some(session) = self.session(conn) {
                    session.rooms.enter(&room);
                }
                wsjson::encode_ack(id, "join", &[("room", json!(room))])
            }
            Outcome::Rejected(reason) => {
                self.account_failed(conn, id);
                wsjson::encode_err(id, reason)
            }
            Outcome::AccountSaved => {
                let account = self.session(conn).and_then(|s| s.account.take());
                match account {
                    Some(("register", nick, _)) => {
                        if let Some(session) = self.session(conn) {
                            session.login = Some(nick.clone());
                            session.nick = nick.clone();
                        }
                        wsjson::encode_ack(id, "register", &[("nick", json!(nick))])
                    }
                    Some((name, nick, _)) => wsjson::encode_ack(id, name, &[("nick", json!(nick))]),
                    None => wsjson::encode_ack(id, "account", &[]),
                }
            }
            other => wsjson::encode_err(id, &format!("unexpected outcome {other:?}")),
        };
        send_text(svc, conn, &reply);
    }

    /// A failed in-flight WebSocket request.
    pub fn fail(&mut self, svc: &mut Services, conn: ConnRef, id: Option<u64>, failure: &Failure) {
        self.finished(conn);
        self.account_failed(conn, id);
        send_text(svc, conn, &wsjson::encode_err(id, failure.text()));
    }

    /// Answers a WebSocket read whose read index has been applied.
    /// A history whose old messages only the store has waits for the reader thread
    /// (`history_done`) and counts as in flight until then.
    pub fn serve(&mut self, svc: &mut Services, conn: ConnRef, query: Query) {
        let reply = match query {
            Query::WebRooms { id } => {
                self.finished(conn);
                wsjson::encode_rooms(id, &svc.replica.sm().rooms())
            }
            Query::WebHistory { id, room, n } => {
                let sm = svc.replica.sm();
                if !sm.room_exists(&room) {
                    self.finished(conn);
                    wsjson::encode_err(id, &format!("unknown room #{room}"))
                } else {
                    match sm.room_history_read(&room, n) {
                        Read::Now(messages) => {
                            let messages: Vec<_> = messages
                                .into_iter()
                                .map(std::borrow::Cow::into_owned)
                                .collect();
                            self.finished(conn);
                            wsjson::encode_history(id, &room, &messages)
                        }
                        Read::Later(pending) => {
                            let waiter = Waiter::WebHistory { conn, id, room };
                            match svc.reads.submit(pending, waiter) {
                                Ok(()) => return,
                                Err((_, why)) => {
                                    self.finished(conn);
                                    wsjson::encode_err(id, &why)
                                }
                            }
                        }
                    }
                }
            }
            // Other queries belong to telnet and binary sessions.
            _ => return,
        };
        send_text(svc, conn, &reply);
    }

    /// The reader thread answered a WebSocket `history`: the reply `serve` would have sent,
    /// or an error with the reason. Dropped if the connection closed meanwhile.
    pub fn history_done(
        &mut self,
        svc: &mut Services,
        conn: ConnRef,
        id: Option<u64>,
        room: &str,
        answer: Result<Vec<ChatMessage>, String>,
    ) {
        if self.session(conn).is_none() {
            return;
        }
        self.finished(conn);
        let reply = match answer {
            Ok(messages) => wsjson::encode_history(id, room, &messages),
            Err(why) => wsjson::encode_err(id, &format!("reading the history: {why}")),
        };
        send_text(svc, conn, &reply);
    }

    /// Live delivery of a newly applied message to the sessions that joined its room.
    pub fn push_message(&mut self, svc: &mut Services, position: u64) {
        let Some(message) = svc.replica.sm().message(position) else {
            return;
        };
        // Encoded once, and only if someone in the room is listening here (most messages
        // on a node with no browser attached: JSON per message cost 3% of the leader's CPU).
        let mut frame = Vec::new();
        let mut too_slow = Vec::new();
        for (conn, state) in self.conns.values() {
            let WebConn::WebSocket(session) = state else {
                continue;
            };
            if !session.rooms.contains(&message.room) {
                continue;
            }
            let Some(out) = svc.transport.output_bulk(*conn) else {
                continue;
            };
            if frame.is_empty() {
                ws::encode_text(&mut frame, &wsjson::encode_message(&message));
            }
            out.output().extend_from_slice(&frame);
            if out.pending_output() > WS_OUTPUT_BYTES_MAX {
                too_slow.push(*conn);
            }
        }
        for conn in too_slow {
            log::info!("node {}: closing a WebSocket that fell behind", svc.cfg.id);
            svc.limits.counters.slow_disconnects += 1;
            svc.transport.close(conn.key);
            self.closed(conn);
        }
    }

    /// Drops the state of a closed connection.
    pub fn closed(&mut self, conn: ConnRef) {
        if self.conns.get(&conn.key).is_some_and(|(r, _)| *r == conn) {
            self.conns.remove(&conn.key);
        }
    }
}

impl WsSession {
    /// `leave`: the reply (an error if the session was not in the room).
    fn leave(&mut self, id: Option<u64>, room: &str) -> String {
        if !self.rooms.leave(room) {
            return wsjson::encode_err(id, &format!("not in #{room}: join it first"));
        }
        wsjson::encode_ack(id, "leave", &[("room", json!(room))])
    }
}

fn send_text(svc: &mut Services, conn: ConnRef, text: &str) {
    if let Some(out) = svc.transport.output(conn) {
        ws::encode_text(out, text);
    }
}

/// Sends a close frame and closes once it is out.
fn close_ws(svc: &mut Services, conn: ConnRef, code: u16, reason: &str) {
    if let Some(out) = svc.transport.output(conn) {
        ws::encode_close(out, code, reason);
    }
    if let Some(c) = svc.transport.get_mut(conn) {
        c.closing = true;
    }
}

fn write(
    svc: &mut Services,
    conn: ConnRef,
    id: Option<u64>,
    op: Op,
    join_room: Option<String>,
) -> Result<u64, Failure> {
    let reply = ReplyTo::Web {
        conn,
        id,
        join_room,
    };
    svc.start_write(op, None, reply)
}

fn read(svc: &mut Services, conn: ConnRef, query: Query) -> Result<u64, Failure> {
    svc.start_read(PendingRead { conn, query })
}

/// The response to a routed plain-HTTP request.
fn respond(svc: &Services, route: Route) -> Vec<u8> {
    let mut out = Vec::new();
    match route {
        Route::Page => {
            let members = member_addrs(svc);
            let body = page::render(svc.cfg.id, &members);
            let content_type = "text/html; charset=utf-8";
            http::write_response(&mut out, 200, content_type, &[], body.as_bytes(), false);
        }
        Route::Metrics => {
            let mut body = String::new();
            metrics_of(svc).encode(&mut body);
            let content_type = "text/plain; version=0.0.4; charset=utf-8";
            http::write_response(&mut out, 200, content_type, &[], body.as_bytes(), false);
        }
        Route::Health => {
            let (status, body) = health(&health_input(svc));
            let content_type = "application/json";
            http::write_response(&mut out, status, content_type, &[], body.as_bytes(), false);
        }
        // Upgrades are answered by `upgrade`; a failed handshake by `refuse`.
        Route::WebSocket => {}
    }
    out
}

fn health_input(svc: &Services) -> HealthInput {
    let replica = &svc.replica;
    HealthInput {
        node: svc.cfg.id,
        leader: replica.leader(),
        term: replica.term(),
        commit_index: replica.commit_index(),
        apply_index: replica.sm().applied_index(),
    }
}

/// Fills a [`Metrics`] from what the replica, the services and the transport count.
fn metrics_of(svc: &Services) -> Metrics {
    let replica = &svc.replica;
    let stats = replica.stats();
    let mut m = Metrics::new();
    let server = &mut m.server;
    server.has_leader = replica.leader().is_some();
    server.is_leader = replica.is_leader();
    server.term = replica.term();
    server.leader_changes_seen = stats.leader_changes;
    server.commit_index = replica.commit_index();
    server.apply_index = replica.sm().applied_index();
    // Known when applied, which follows commit within the same turn or the next.
    let writes = svc.writes;
    server.proposals_committed = writes.applied;
    server.proposals_applied = writes.applied;
    server.proposals_failed = writes.failed;
    server.proposals_pending = writes
        .started
        .saturating_sub(writes.applied + writes.failed);
    let wal = &mut m.wal;
    wal.bytes_written = replica.wal_bytes_written();
    wal.syncs = stats.syncs;
    wal.entries_synced = stats.entries_synced;
    wal.entries_per_sync_max = stats.entries_per_sync_max;
    wal.syncs_in_flight = replica.syncs_in_flight() as u64;
    wal.sync_requests = stats.sync_jobs;
    wal.fsync_seconds = stats.fsync_seconds.clone();
    wal.entries_per_sync = stats.entries_per_sync.0.clone();
    wal.entries_written = stats.entries_written;
    m.snapshot.saves = stats.snapshots_taken;
    m.snapshot.save_seconds = stats.snapshot_seconds.clone();
    m.snapshot.install_received = stats.snapshots_installed;
    m.snapshot.history_fetched_bytes = stats.history_fetched_bytes;
    m.snapshot.history_fetched_pages = stats.history_fetched_pages;
    m.peers.append_entries_sent = stats.append_entries_sent;
    m.peers.entries_sent = stats.append_entries_entries;
    m.snapshot.install_sent = stats.snapshots_sent;
    m.peers.round_trip_seconds = stats.round_trip_seconds.clone();
    let status = replica.status();
    for peer in &status.peers {
        let lag = status.last_index.saturating_sub(peer.match_index);
        m.peers.match_lag.insert(peer.id, lag);
    }
    m.clients.requests = svc.requests.requests.clone();
    m.clients.request_seconds = svc.requests.request_seconds.clone();
    let connections = &mut m.clients.connections;
    for proto in svc.transport.protocols() {
        match proto {
            Proto::Telnet => connections.telnet += 1,
            Proto::Binary => connections.binary += 1,
            Proto::Http => connections.http += 1,
            Proto::WebSocket => connections.websocket += 1,
            Proto::Unknown | Proto::Peer { .. } => {}
        }
    }
    m
}

/// The members' addresses now (the configuration in force here), for the page's failover.
fn member_addrs(svc: &Services) -> Vec<String> {
    svc.member_list()
        .into_iter()
        .filter_map(|m| m.addr.map(|a| a.to_string()))
        .collect()
}
