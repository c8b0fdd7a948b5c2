//! One node: the single-threaded mio event loop that ties the layers together.
//!
//! Each turn: poll; hand readable bytes to the front-end that owns the connection; run the
//! replica driver and route what it produced (Raft messages to the transport, applied entries
//! and read indexes through the request table to the front-ends); fire timers; flush.
//!
//! It decides nothing Raft decides and parses no protocol: who leads, what is committed and
//! when a read is safe come from the replica; bytes are the front-ends' business.

use std::time::{Duration, Instant};

use mio::Events;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use super::config::ServerConfig;
use super::disk_reads::Waiter;
use super::error::ServerError;
use super::frontend::binary::Binary;
use super::frontend::peer::{self, PEER_INPUT_BYTES_MAX};
use super::frontend::telnet::Telnet;
use super::frontend::web::{Web, HTTP_PREFIX};
use super::limits::{ClientKind, CloseReason};
use super::logins::{Front, Logins, Pending};
use super::membership::done_text;
use super::replica::{Event, Output, Replica, ReplicaOptions};
use super::requests::Expired;
use super::services::{Failure, PendingRead, Query, ReplyTo, Services};
use super::transport::{ConnRef, Proto, ReadOutcome, Source, Transport};
use crate::chat::members::MemberChange;
use crate::chat::{Applied, Outcome};
use crate::raft::SoftState;
use crate::wire::{self, Handshake, CLIENT_MAGIC, PEER_MAGIC};

/// How long a stopping node keeps flushing replies before it exits.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(1);
/// Input a client connection may buffer before it is handled.
const CLIENT_INPUT_BYTES_MAX: usize = 256 * 1024;
/// Connections with only live-delivery output written per loop turn, after every reply. A
/// write costs a few microseconds, so this bounds a turn's fan-out to a few milliseconds.
const BULK_FLUSH_PER_TURN: usize = 1024;

pub struct Node {
    svc: Services,
    telnet: Telnet,
    binary: Binary,
    web: Web,
    signals: Signals,
    /// Reused between turns: what the replica produced.
    out: Output,
    tick: Duration,
    next_tick: Instant,
    /// `--testing-early-ack`: the chat log position the last early ack claimed.
    early_ack_position: u64,
    stopping: bool,
}

impl Node {
    /// Opens the data dir (recovering the log and the latest snapshot), builds the core and
    /// binds the listener.
    pub fn start(mut cfg: ServerConfig) -> Result<Node, ServerError> {
        // TLS files are checked before anything is opened (a bad one exits with status 2).
        let tls = cfg.tls.clone().map(|t| crate::tls::NodeTls::load(*t));
        let tls = tls.transpose();
        let tls = tls.map_err(ServerError::Tls)?;
        let bootstrap = super::identity::adopt(&mut cfg)?;
        let hello = Handshake {
            cluster_id: cfg.cluster_id,
            node_id: cfg.id,
        };
        let bootstrap_peers: Vec<(u64, std::net::SocketAddr)> =
            (0..).zip(cfg.members.iter().copied()).collect();
        let (mut transport, waker) =
            Transport::bind(cfg.listen, cfg.listen_backlog, &bootstrap_peers, hello)?;
        transport.set_tls(tls);
        let mut logins = Logins::default();
        logins
            .start(std::sync::Arc::clone(&waker))
            .map_err(|source| ServerError::Io {
                context: "cannot start the account worker thread".into(),
                source,
            })?;
        let mut reads = super::disk_reads::DiskReads::default();
        reads
            .start(
                std::sync::Arc::clone(&waker),
                cfg.testing_disk_read_gate.clone(),
            )
            .map_err(|source| ServerError::Io {
                context: "cannot start the history reader thread".into(),
                source,
            })?;
        let mut replica = Replica::open(ReplicaOptions::from_config(&cfg), waker)?;
        if let Some(bootstrap) = bootstrap {
            bootstrap.store(&cfg)?;
        }
        // The links follow the configuration the log and snapshot hold, not the command line.
        replica.take_members_changed();
        transport.set_peers(&replica.peer_addrs());
        let mut signals =
            Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|source| ServerError::Io {
                context: "cannot install signal handlers".into(),
                source,
            })?;
        transport.register_signals(&mut signals)?;
        log::info!(
            "node {}: listening on {} ({} members, {})",
            cfg.id,
            cfg.listen,
            {
                let m = replica.membership();
                m.voters().count() + m.learners().count()
            },
            if cfg.tls.is_some() {
                "peers over mutual TLS"
            } else {
                "peers in plain text"
            }
        );
        let tick = Duration::from_millis(cfg.heartbeat_ms);
        if replica.membership().was_removed(cfg.id) {
            log::warn!(
                "node {}: this node was removed from the cluster; it will not vote or campaign, \
                 and its peers refuse it",
                cfg.id
            );
        }
        let mut svc = Services::new(cfg, transport, replica);
        svc.logins = logins;
        svc.reads = reads;
        Ok(Node {
            svc,
            telnet: Telnet::default(),
            binary: Binary::default(),
            web: Web::default(),
            signals,
            out: Output::default(),
            tick,
            next_tick: Instant::now() + tick,
            early_ack_position: 0,
            stopping: false,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.svc.transport.local_addr()
    }

    /// Runs until SIGINT/SIGTERM (Ok) or a storage failure (Err).
    pub fn run(&mut self) -> Result<(), ServerError> {
        let mut events = Events::with_capacity(1024);
        let mut stop_deadline = None;
        loop {
            let now = Instant::now();
            let timeout = self.next_wakeup(now).saturating_duration_since(now);
            self.svc.transport.poll(&mut events, timeout)?;
            for event in events.iter() {
                match Transport::source(event.token()) {
                    Source::Listener => self.accept(),
                    Source::Signals => self.on_signal(),
                    // A sync finished (`drive` collects it below), a password hash or a
                    // read of old history did.
                    Source::Waker => {
                        self.drain_logins();
                        self.drain_reads();
                    }
                    Source::Link(j) => self.svc.transport.on_link_event(j, Instant::now()),
                    Source::Conn(key) => {
                        if event.is_read_closed() || event.is_error() {
                            self.svc.transport.note_read_closed(key);
                        }
                        self.on_conn_event(key)
                    }
                }
            }
            self.on_timers(Instant::now());
            self.drive()?;
            if std::mem::take(&mut self.svc.dirty_soon) {
                self.serve_reads();
                self.serve_early_acks();
            }
            let transport = &mut self.svc.transport;
            self.svc
                .replica
                .pump_snapshots(Instant::now(), |to, encode| {
                    transport.send_if_connected(to, |out| encode(out))
                });
            self.flush();
            self.forget_closed();
            if self.stopping {
                let deadline =
                    *stop_deadline.get_or_insert_with(|| Instant::now() + SHUTDOWN_FLUSH);
                if !self.svc.transport.has_pending_output() || Instant::now() >= deadline {
                    self.svc.replica.wait_for_syncs(&mut self.out)?;
                    log::info!(
                        "node {}: stopped cleanly at term {}",
                        self.svc.cfg.id,
                        self.svc.replica.term()
                    );
                    return Ok(());
                }
            }
        }
    }

    fn next_wakeup(&self, now: Instant) -> Instant {
        let mut at = self.next_tick;
        let transport = &self.svc.transport;
        let limits = self.svc.limits.next_wakeup();
        for candidate in [
            self.svc.table.next_deadline(),
            transport.next_wakeup(),
            limits,
        ] {
            at = candidate.map_or(at, |c| at.min(c));
        }
        if self.stopping {
            at = at.min(now + Duration::from_millis(10));
        }
        if transport.has_dirty() || self.svc.replica.wants_drive() {
            // Output queued during the last flush (a resumed reader answered at once), or a
            // proposal made while answering (the next queued telnet line): no sleeping.
            at = now;
        }
        at.max(now)
    }

    fn on_signal(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        if pending.contains(&SIGHUP) {
            self.svc.transport.reload_tls();
        }
        if pending.iter().any(|s| *s != SIGHUP) && !self.stopping {
            log::info!("node {}: signal received, stopping", self.svc.cfg.id);
            self.stopping = true;
            self.svc.transport.stop_listening();
        }
    }

    fn on_conn_event(&mut self, key: usize) {
        if self.svc.transport.by_key(key).is_none() {
            return;
        }
        self.svc.transport.mark_dirty(key);
        self.read_conn(key);
    }

    /// Reads and handles input on an accepted connection until it would block.
    fn read_conn(&mut self, key: usize) {
        loop {
            let Some(conn) = self.svc.transport.conn_ref(key) else {
                return;
            };
            let c = self.svc.transport.by_key(key).expect("conn_ref found it");
            if c.closing {
                return;
            }
            let pending_output = c.buffers.pending_output();
            let input_max = match c.proto {
                Proto::Telnet if self.telnet.input_paused(key) => return,
                Proto::Binary if self.binary.pause_if_full(conn, pending_output) => return,
                Proto::WebSocket if self.web.input_paused(key) => return,
                Proto::Peer { .. } => PEER_INPUT_BYTES_MAX,
                _ => CLIENT_INPUT_BYTES_MAX,
            };
            let outcome = self.svc.transport.read(key, input_max);
            let unhandled = self.unhandled_input(conn);
            self.handle_input(conn);
            let left = self.unhandled_input(conn);
            self.svc
                .limits
                .on_input(conn, left > 0, left < unhandled, Instant::now());
            match outcome {
                ReadOutcome::Open => return,
                ReadOutcome::Full => continue,
                ReadOutcome::Closed => {
                    // A telnet or HTTP client may send its request and half-close (`… | nc`):
                    // answer what it sent, then close. Anything else is simply gone.
                    match self.svc.transport.get_mut(conn) {
                        Some(c) if matches!(c.proto, Proto::Telnet | Proto::Http) => {
                            c.closing = true;
                            self.svc.transport.mark_dirty(key);
                        }
                        _ => self.svc.transport.close(key),
                    }
                    return;
                }
            }
        }
    }

    /// Classifies a new connection by its first bytes, then hands input to its front-end.
    fn handle_input(&mut self, conn: ConnRef) {
        if self.svc.transport.get(conn).map(|c| c.proto) == Some(Proto::Telnet) {
            self.telnet.misjudged(&mut self.svc, conn);
        }
        if !self.classify(conn) {
            return;
        }
        match self.svc.transport.get(conn).map(|c| c.proto) {
            Some(Proto::Peer { node }) => {
                for (req, failure) in peer::handle_input(&mut self.svc, conn, node) {
                    self.fail_write(req, failure);
                }
            }
            Some(Proto::Telnet) => {
                self.telnet.handle_input(&mut self.svc, conn);
                self.read_resumed();
            }
            Some(Proto::Binary) => self.binary.handle_input(&mut self.svc, conn),
            Some(Proto::Http | Proto::WebSocket) => self.web.handle_input(&mut self.svc, conn),
            Some(Proto::Unknown) | None => {}
        }
    }

    /// Decides what an unclassified connection speaks. False while its first bytes are not
    /// enough to tell (or it was refused).
    fn classify(&mut self, conn: ConnRef) -> bool {
        let Some(c) = self.svc.transport.get_mut(conn) else {
            return false;
        };
        if c.proto != Proto::Unknown {
            return true;
        }
        let input = c.buffers.input();
        if input.is_empty() {
            return false;
        }
        if HTTP_PREFIX.starts_with(&input[..input.len().min(HTTP_PREFIX.len())]) {
            // `G`, `GE`, `GET`: wait for the fourth byte; `GET ` is HTTP.
            if input.len() < HTTP_PREFIX.len() {
                return false;
            }
            if !self.admit(conn, ClientKind::Person) {
                return false;
            }
            self.web.open(&mut self.svc, conn);
        } else if input[0] != 0 {
            if !self.admit(conn, ClientKind::Person) {
                return false;
            }
            self.telnet.open(&mut self.svc, conn);
        } else if input.len() < PEER_MAGIC.len() {
            return false;
        } else if input[..4] == PEER_MAGIC {
            match wire::decode_handshake(input) {
                Ok(None) => return false,
                Ok(Some((hello, used))) => {
                    c.buffers.consume(used);
                    self.svc.limits.exempt(conn);
                    return peer::accept_handshake(&mut self.svc, conn, hello);
                }
                Err(e) => {
                    log::warn!(
                        "node {}: refused a peer connection: bad handshake: {e}",
                        self.svc.cfg.id
                    );
                    self.svc.transport.close(conn.key);
                    return false;
                }
            }
        } else if input[..4] == CLIENT_MAGIC {
            if !self.admit(conn, ClientKind::Program) {
                return false;
            }
            self.binary.open(&mut self.svc, conn);
        } else {
            if !self.admit(conn, ClientKind::Person) {
                return false;
            }
            self.telnet.open(&mut self.svc, conn);
        }
        true
    }

    /// Accepts every pending connection; the limits start its timers.
    fn accept(&mut self) {
        let now = Instant::now();
        for (conn, from) in self.svc.transport.accept() {
            self.svc.limits.on_accept(conn, from.ip(), now);
        }
    }

    /// Counts a connection classified as a client, or refuses it: one `err` line, then closed.
    fn admit(&mut self, conn: ConnRef, kind: ClientKind) -> bool {
        let Err(line) = self.svc.limits.admit(conn, kind, Instant::now()) else {
            return true;
        };
        log::debug!("node {}: refused a client: {line}", self.svc.cfg.id);
        if let Some(out) = self.svc.transport.output(conn) {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(c) = self.svc.transport.get_mut(conn) {
            c.closing = true;
        }
        false
    }

    /// Input bytes not yet handled as a whole request (a line in telnet's splitter, a binary
    /// frame, an HTTP head), for the slow-loris limit.
    fn unhandled_input(&self, conn: ConnRef) -> usize {
        let buffered = self
            .svc
            .transport
            .get(conn)
            .map_or(0, |c| c.buffers.input().len());
        buffered + self.telnet.partial_line_bytes(conn.key)
    }

    /// Closes the clients the limits' sweep found idle or holding half a request too long.
    fn sweep_limits(&mut self, now: Instant) {
        for (conn, reason) in self.svc.limits.sweep(now) {
            if self.svc.transport.get(conn).is_none() {
                continue;
            }
            let why = match reason {
                CloseReason::Idle => "idle past --idle-timeout-secs",
                CloseReason::PartialInput => {
                    "an unfinished request past --partial-line-timeout-secs"
                }
            };
            log::info!(
                "node {}: closing a client connection: {why}",
                self.svc.cfg.id
            );
            self.svc.transport.close(conn.key);
        }
    }

    /// Telnet sessions whose typed-ahead queue drained, and WebSocket sessions whose in-flight
    /// requests dropped below their bound: read what waits on their sockets.
    fn read_resumed(&mut self) {
        let mut resumed = self.telnet.take_resumed();
        resumed.extend(self.web.take_resumed());
        for key in resumed {
            self.read_conn(key);
        }
    }

    fn on_timers(&mut self, now: Instant) {
        if now >= self.next_tick {
            self.svc.replica.tick();
            self.next_tick += self.tick;
            if self.next_tick < now {
                // We fell behind (a long fsync, a SIGSTOP): do not replay missed ticks in a burst.
                self.next_tick = now + self.tick;
            }
        }
        self.web.expire_heads(&mut self.svc, now);
        for expired in self.svc.table.expire(now) {
            match expired {
                Expired::Write(reply) => {
                    let failure =
                        Failure::Unknown("timeout: outcome unknown, it may still be stored".into());
                    self.fail_reply(reply, &failure);
                }
                Expired::Read(read) => {
                    let failure = Failure::NotServed("timeout: read not served, try again".into());
                    self.fail_read(read, &failure);
                }
            }
        }
        self.svc.transport.connect_links(now);
        for conn in self.svc.transport.due_greetings(now) {
            let refused = self.svc.transport.get(conn).is_none_or(|c| c.closing);
            if !refused && self.admit(conn, ClientKind::Person) {
                self.telnet.greet(&mut self.svc, conn);
            }
        }
        self.sweep_limits(now);
    }

    /// Runs the replica driver and routes what it produced.
    fn drive(&mut self) -> Result<(), ServerError> {
        let mut out = std::mem::take(&mut self.out);
        let result = self.svc.replica.drive(&mut out);
        self.route(&mut out);
        self.out = out;
        if self.svc.replica.take_members_changed() {
            let peers = self.svc.replica.peer_addrs();
            self.svc.transport.set_peers(&peers);
        }
        result
    }

    fn route(&mut self, out: &mut Output) {
        for msg in out.messages.drain(..) {
            self.svc
                .transport
                .send_to(msg.to, |buf| wire::encode_raft_message(&msg, buf));
        }
        let mut overwritten = Vec::new();
        for event in out.events.drain(..) {
            match event {
                Event::Leadership { old, new } => self.on_leadership(old, new),
                Event::SnapshotInstalled(meta) => {
                    for reply in self.svc.table.on_snapshot_installed(meta.index) {
                        let failure = Failure::Unknown(
                            "log replaced by a snapshot: outcome unknown, it may still be stored"
                                .into(),
                        );
                        self.fail_reply(reply, &failure);
                    }
                }
                Event::Applied { index, applied } => {
                    let ours = applied
                        .origin
                        .filter(|o| o.node == self.svc.cfg.id)
                        .map(|o| o.req);
                    if let Some(req) = ours {
                        self.svc.writes.applied += 1;
                        self.svc.record_request(req, "write", "ok");
                    }
                    let answered = self.svc.table.on_applied(index, ours, &mut overwritten);
                    for reply in overwritten.drain(..) {
                        let failure =
                            Failure::NotStored("leader changed: not stored, try again".into());
                        self.fail_reply(reply, &failure);
                    }
                    self.deliver(answered, &applied);
                }
                Event::ReadReady { ctx, index } => self.svc.table.on_read_ready(ctx, index),
                Event::MemberChanged { index, change } => self.on_member_changed(index, change),
                Event::ReadFailed { ctx, leader_hint } => {
                    if let Some(read) = self.svc.table.on_read_failed(ctx) {
                        self.fail_read(read, &Failure::no_leader_for_read(leader_hint));
                    }
                }
            }
        }
        self.serve_reads();
    }

    /// A configuration entry was applied: answer the request that proposed it here, if any
    /// (an entry another leader wrote at its index fails it as not stored).
    fn on_member_changed(&mut self, index: u64, change: MemberChange) {
        let Some(req) = self.svc.table.take_local_proposal(index) else {
            return;
        };
        let proposed = self.svc.member_requests.take(req);
        let Some(reply) = self.svc.table.take_write(req) else {
            return;
        };
        if proposed != Some(change) {
            let failure = Failure::NotStored("leader changed: not changed, try again".into());
            return self.fail_reply(reply, &failure);
        }
        self.svc.record_request(req, "write", "ok");
        let done = done_text(change);
        match reply {
            ReplyTo::Telnet { conn, .. } => {
                self.telnet.answer_member_change(&mut self.svc, conn, &done);
                self.read_resumed();
            }
            ReplyTo::Binary { conn, req_id } => {
                Binary::answer_member_change(&mut self.svc, conn, req_id, &done)
            }
            ReplyTo::Web { conn, id, .. } => {
                let failure = Failure::Rejected(format!("{done} (not a web request)"));
                self.web.fail(&mut self.svc, conn, id, &failure);
            }
        }
    }

    fn on_leadership(&mut self, old: SoftState, new: SoftState) {
        let Some(old_leader) = old
            .leader
            .filter(|l| Some(*l) != new.leader && *l != self.svc.cfg.id)
        else {
            return;
        };
        // Writes forwarded to a leader that lost office may or may not have been appended
        // there; say so now rather than at the deadline. A binary client retries with the
        // same session and seq, which the state machine deduplicates.
        for reply in self.svc.table.take_forwarded_to(old_leader) {
            let failure =
                Failure::Unknown("leader changed: outcome unknown, it may still be stored".into());
            self.fail_reply(reply, &failure);
        }
    }

    /// Answers the client waiting on an applied entry, and pushes posted messages to listeners.
    fn deliver(&mut self, answered: Option<ReplyTo>, applied: &Applied) {
        match answered {
            Some(ReplyTo::Telnet { conn, join_room }) => {
                self.telnet
                    .answer(&mut self.svc, conn, join_room, &applied.outcome);
                self.read_resumed();
            }
            Some(ReplyTo::Binary { conn, req_id }) => {
                self.binary
                    .answer(&mut self.svc, conn, req_id, &applied.outcome)
            }
            Some(ReplyTo::Web {
                conn,
                id,
                join_room,
            }) => {
                self.web
                    .answer(&mut self.svc, conn, id, join_room, &applied.outcome);
                self.read_resumed();
            }
            None => {}
        }
        // A kick takes the nick's sessions out of the room on every node.
        if let (Outcome::Kicked { room, nick }, false) = (&applied.outcome, applied.duplicate) {
            self.telnet.kick(room, nick);
            self.web.kick(room, nick);
        }
        // A retried request answered again must not be delivered twice.
        if let (Outcome::Posted { position }, false) = (&applied.outcome, applied.duplicate) {
            self.telnet.push_message(&mut self.svc, *position);
            self.web.push_message(&mut self.svc, *position);
        }
    }

    fn fail_write(&mut self, req: u64, failure: Failure) {
        if let Some(reply) = self.svc.table.take_write(req) {
            self.fail_reply(reply, &failure);
        }
    }

    fn fail_reply(&mut self, reply: ReplyTo, failure: &Failure) {
        self.svc.writes.failed += 1;
        self.svc.requests.count_request("write", "failed");
        match reply {
            ReplyTo::Telnet { conn, .. } => {
                self.telnet.fail(&mut self.svc, conn, failure);
                self.read_resumed();
            }
            ReplyTo::Binary { conn, req_id } => {
                self.binary.forget_write(conn, req_id);
                Binary::fail(&mut self.svc, conn, req_id, failure)
            }
            ReplyTo::Web { conn, id, .. } => {
                self.web.fail(&mut self.svc, conn, id, failure);
                self.read_resumed();
            }
        }
    }

    fn fail_read(&mut self, read: PendingRead, failure: &Failure) {
        self.svc.requests.count_request("read", "failed");
        match (read.query.binary_req_id(), read.query) {
            (Some(req_id), _) => Binary::fail(&mut self.svc, read.conn, req_id, failure),
            (None, Query::WebRooms { id } | Query::WebHistory { id, .. }) => {
                self.web.fail(&mut self.svc, read.conn, id, failure);
                self.read_resumed();
            }
            (None, _) => {
                self.telnet.fail(&mut self.svc, read.conn, failure);
                self.read_resumed();
            }
        }
    }

    /// Serves every read whose read index the state machine has reached.
    fn serve_reads(&mut self) {
        let applied = self.svc.replica.sm().applied_index();
        for read in self.svc.table.take_servable(applied) {
            self.svc.requests.count_request("read", "ok");
            if read.query.binary_req_id().is_some() {
                Binary::serve(&mut self.svc, read.conn, read.query);
            } else if read.query.is_web() {
                self.web.serve(&mut self.svc, read.conn, read.query);
                self.read_resumed();
            } else {
                self.telnet.serve(&mut self.svc, read.conn, read.query);
                self.read_resumed();
            }
        }
    }

    /// `--testing-early-ack`: acknowledge the queued writes now, claiming the positions their
    /// messages would get if nothing went wrong. Deliberately unsafe: what a crash or a new
    /// leader loses was acknowledged anyway, which is what the fault suite must catch.
    fn serve_early_acks(&mut self) {
        for req in std::mem::take(&mut self.svc.early_acks) {
            let Some(reply) = self.svc.table.take_write(req) else {
                continue;
            };
            let last = self.svc.replica.sm().last_position();
            self.early_ack_position = self.early_ack_position.max(last) + 1;
            let applied = Applied {
                origin: None,
                outcome: Outcome::Posted {
                    position: self.early_ack_position,
                },
                // Not a new message yet: live delivery waits for the real apply.
                duplicate: true,
            };
            // Answers and forgets the write, so the real apply later answers nobody.
            self.deliver(Some(reply), &applied);
        }
    }

    fn flush(&mut self) {
        self.svc.transport.flush_links(Instant::now());
        let replies = self.svc.transport.take_dirty();
        let bulk = self.svc.transport.take_dirty_bulk(BULK_FLUSH_PER_TURN);
        for key in replies.into_iter().chain(bulk) {
            self.telnet.refill(&mut self.svc, key);
            let Some(conn) = self.svc.transport.conn_ref(key) else {
                continue;
            };
            if self.svc.transport.write(key).is_err() {
                self.svc.transport.close(key);
                continue;
            }
            let Some(c) = self.svc.transport.get(conn) else {
                continue;
            };
            let pending = c.buffers.pending_output();
            let closing = c.closing;
            if c.proto == Proto::Binary && self.binary.resume_if_drained(conn, pending) {
                self.read_conn(key);
                continue;
            }
            if closing && pending == 0 && !self.telnet.has_work(key) {
                self.svc.transport.close(key);
            }
        }
    }

    /// Front-ends drop the state of connections the transport closed.
    fn forget_closed(&mut self) {
        for conn in self.svc.transport.take_closed() {
            self.telnet.closed(conn);
            self.binary.closed(conn);
            self.web.closed(conn);
            self.svc.limits.closed(conn);
            self.svc.logins.closed(conn);
        }
    }

    /// Hands finished password-hash jobs back to the front-ends that started them.
    fn drain_logins(&mut self) {
        for (pending, verdict) in self.svc.logins.finished() {
            let Pending {
                conn,
                front,
                action,
            } = pending;
            let svc = &mut self.svc;
            match front {
                Front::Telnet => self.telnet.account_job_done(svc, conn, action, verdict),
                Front::Binary { req_id } => self
                    .binary
                    .account_job_done(svc, conn, req_id, action, verdict),
                Front::Web { id } => self.web.account_job_done(svc, conn, id, action, verdict),
            }
        }
        self.read_resumed();
    }

    /// Hands finished reads of old history to the front-ends that wait for them.
    fn drain_reads(&mut self) {
        for (waiter, answer) in self.svc.reads.finished() {
            let svc = &mut self.svc;
            match waiter {
                Waiter::TelnetHistory { conn } => self.telnet.history_done(svc, conn, answer),
                Waiter::Listing { conn } => self.telnet.listing_page_done(svc, conn, answer),
                Waiter::WebHistory { conn, id, room } => {
                    self.web.history_done(svc, conn, id, &room, answer)
                }
                Waiter::LogPage {
                    conn,
                    req_id,
                    total,
                } => Binary::log_page_done(svc, conn, req_id, total, answer),
            }
        }
        self.read_resumed();
    }
}
