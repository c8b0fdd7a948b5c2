//! One node: the single-threaded mio event loop that owns every socket and timer, and the
//! driver that turns the Raft core's `Ready` into log writes, fsyncs, sends and replies.
//!
//! It decides nothing Raft decides: who leads, what is committed and when a read is safe all
//! come from the core. What it adds is plumbing and the order of side effects the core's
//! durability contract demands (see `raft`'s module docs).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use super::binary::{self, BinarySession};
use super::config::ServerConfig;
use super::conn::{Buffers, ReadOutcome};
use super::peers::PeerLink;
use super::requests::{Failure, Query, ReplyTo};
use super::snapshot::{ChunkOutcome, Cleanup, Snapshots};
use super::syncer::{Syncer, SYNCS_IN_FLIGHT_MAX};
use super::telnet::Session;
use crate::chat::{Applied, Outcome, SessionConfig, StateMachine};
use crate::raft::{
    self, EntryKind, Index, Message, MessageBody, NodeId, Raft, Ready, Role, SnapshotMeta,
    SoftState, Term,
};
use crate::storage::{StorageError, Wal, WalOptions};
use crate::wire::{self, Handshake, PeerFrame, CLIENT_MAGIC, PEER_MAGIC};

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
/// The fsync helper thread wakes the loop with this token.
const WAKER: Token = Token(2);
/// Outbound peer link `j` uses token `PEER_BASE + j`.
const PEER_BASE: usize = 16;
/// Accepted connection with slab key `k` uses token `CONN_BASE + k`.
const CONN_BASE: usize = PEER_BASE + 1024;

/// A peer connection may buffer this much undecoded input (a few maximal frames).
const PEER_INPUT_BYTES_MAX: usize = 2 * wire::FRAME_BYTES_MAX + 4096;
/// A connection that sent nothing for this long is greeted as a telnet client.
const GREETING_DELAY: Duration = Duration::from_millis(150);
/// How long a stopping node keeps flushing replies before it exits.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(1);

/// Why a node stopped with an error.
#[derive(Debug)]
pub enum ServerError {
    /// The listener or the poller could not be set up.
    Io { context: String, source: io::Error },
    /// The write-ahead log failed: the node stops rather than acknowledge what is not on disk.
    Storage(StorageError),
    /// A snapshot on disk or from a leader could not be loaded into the state machine.
    Snapshot(String),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Io { context, source } => write!(f, "{context}: {source}"),
            ServerError::Storage(e) => write!(f, "storage failed, node stopped: {e}"),
            ServerError::Snapshot(why) => write!(f, "snapshot unusable, node stopped: {why}"),
        }
    }
}

impl std::error::Error for ServerError {}

impl From<StorageError> for ServerError {
    fn from(e: StorageError) -> Self {
        ServerError::Storage(e)
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What an accepted connection turned out to be.
pub(super) enum ConnKind {
    /// No bytes yet.
    Unknown,
    Telnet(Box<Session>),
    /// An inbound link from member `node`, after a valid handshake.
    Peer {
        node: NodeId,
    },
    /// A program speaking the binary client protocol.
    Binary(Box<BinarySession>),
}

pub(super) struct Conn {
    /// Unique for the process lifetime, so a reply never reaches a reused slab slot.
    pub id: u64,
    pub stream: TcpStream,
    pub buffers: Buffers,
    pub kind: ConnKind,
    /// Close once the output is flushed.
    pub closing: bool,
    /// Queued for a flush at the end of this loop turn.
    pub dirty: bool,
}

/// Identifies a client connection across slab reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ConnRef {
    pub key: usize,
    pub id: u64,
}

/// A client write waiting for its entry to be applied.
pub(super) struct PendingWrite {
    pub conn: ConnRef,
    pub reply: ReplyTo,
    /// The leader a follower forwarded this write to; `None` when proposed here.
    pub forwarded_to: Option<NodeId>,
}

/// A client read waiting for a read index, then for the state machine to catch up to it.
pub(super) struct PendingRead {
    pub conn: ConnRef,
    pub query: Query,
}

/// A Ready whose writes are not yet durable: its acknowledgements wait here, in order.
struct Unsynced {
    number: u64,
    persisted_messages: Vec<Message>,
    /// False once its fsync finished (or it had nothing to persist).
    syncing: bool,
}

pub struct Node {
    pub(super) cfg: ServerConfig,
    poll: Poll,
    listener: Option<TcpListener>,
    signals: Signals,
    pub(super) conns: Slab<Conn>,
    /// Indexed by node id; `None` at this node's own id.
    links: Vec<Option<PeerLink>>,
    hello: Handshake,
    pub(super) raft: Raft,
    wal: Wal,
    syncer: Syncer,
    snapshots: Snapshots,
    /// The term of the entry at `sm.applied_index()` (a snapshot's meta needs it).
    applied_term: Term,
    /// Payload bytes applied since the last snapshot was captured.
    applied_bytes_since_snapshot: u64,
    /// Readies in order, oldest first, waiting for their fsync before `advance`.
    unsynced: VecDeque<Unsynced>,
    pub(super) sm: StateMachine,
    pub(super) writes: HashMap<u64, PendingWrite>,
    /// Local proposal index -> request id, for noticing overwritten proposals.
    local_proposals: BTreeMap<Index, u64>,
    pub(super) reads: HashMap<u64, PendingRead>,
    /// Reads whose read index is known, waiting for `applied >= index`.
    reads_waiting_apply: Vec<(Index, u64, PendingRead)>,
    /// Request deadlines in creation order (all requests share one timeout, so this is sorted).
    pub(super) deadlines: VecDeque<(Instant, u64)>,
    next_req: u64,
    next_conn_id: u64,
    tick: Duration,
    next_tick: Instant,
    soft: SoftState,
    dirty: Vec<usize>,
    /// When to greet each accepted connection if it has not spoken by then, in accept order.
    greetings: VecDeque<(Instant, ConnRef)>,
    /// A stale read or an early ack was queued: serve them before sleeping.
    dirty_soon: bool,
    /// `--testing-early-ack`: writes to acknowledge this turn, before they are committed.
    early_acks: Vec<u64>,
    /// `--testing-early-ack`: the chat log position the last early ack claimed.
    early_ack_position: u64,
    /// Open telnet sessions: live delivery scans connections only when there are any.
    pub(super) telnet_sessions: usize,
    /// Scratch buffer for encoding commands.
    pub(super) scratch: Vec<u8>,
    stopping: bool,
}

impl Node {
    /// Opens the data dir (recovering the log), binds the listener and builds the core.
    pub fn start(cfg: ServerConfig) -> Result<Node, ServerError> {
        let mut wal_opts = WalOptions::new(cfg.data_dir.clone(), cfg.cluster_id, cfg.id);
        wal_opts.fsync = cfg.fsync;
        wal_opts.segment_bytes = cfg.wal_segment_bytes;
        let (mut wal, recovered) = Wal::open(wal_opts)?;
        if let Some(torn) = &recovered.torn_tail {
            log::warn!(
                "node {}: cut a torn tail of {} bytes at offset {} of {}",
                cfg.id,
                torn.bytes_cut,
                torn.offset,
                torn.file.display()
            );
        }
        log::info!(
            "node {}: recovered term {} vote {:?} and {} log entries from {}",
            cfg.id,
            recovered.hard_state.term,
            recovered.hard_state.voted_for,
            recovered.entries.len(),
            cfg.data_dir.display()
        );
        let poll = Poll::new().map_err(io_err("cannot create poller"))?;
        let waker = std::sync::Arc::new(
            Waker::new(poll.registry(), WAKER).map_err(io_err("cannot create waker"))?,
        );
        let snapshots = Snapshots::open(
            cfg.data_dir.join("snapshots"),
            cfg.data_dir.clone(),
            cfg.cluster_id,
            cfg.fsync,
            cfg.members.len(),
            std::sync::Arc::clone(&waker),
        )?;
        let (sm, snapshot) = match snapshots.latest() {
            None => (
                StateMachine::default().with_retention(cfg.retain_messages),
                None,
            ),
            Some(file) => {
                let started = Instant::now();
                let mut body = file.body()?;
                let sm =
                    StateMachine::restore(&mut body, SessionConfig::default(), cfg.retain_messages)
                        .map_err(|why| {
                            ServerError::Snapshot(format!("{}: {why}", file.path.display()))
                        })?;
                log::info!(
                    "node {}: loaded snapshot at index {} (term {}, {} messages) in {:.1?}",
                    cfg.id,
                    file.meta.index,
                    file.meta.term,
                    sm.message_count(),
                    started.elapsed()
                );
                (sm, Some(file.meta))
            }
        };
        let applied_term = snapshot.map_or(0, |m| m.term);
        let voters: Vec<NodeId> = (0..cfg.members.len() as u64).collect();
        let mut raft_cfg = raft::Config::new(cfg.id, voters);
        raft_cfg.heartbeat_ticks = 1;
        raft_cfg.election_ticks = (cfg.election_timeout_ms / cfg.heartbeat_ms).max(2) as u32;
        raft_cfg.snapshot_timeout_ticks = raft_cfg.election_ticks.saturating_mul(4);
        let persisted = raft::Persisted {
            hard_state: recovered.hard_state,
            snapshot,
            entries: recovered.entries,
        };
        let seed = now_ms() ^ (u64::from(std::process::id()) << 32) ^ cfg.id;
        let raft = Raft::new(raft_cfg, persisted, seed);
        if let Some(meta) = snapshot {
            if raft.last_index() != wal.last_index() {
                // The log on disk does not continue the snapshot (a crash between installing a
                // snapshot from the leader and resetting the log after it): the core kept only
                // the snapshot, and the log must restart after it too.
                if raft.last_index() != meta.index {
                    return Err(ServerError::Snapshot(format!(
                        "the log ({}..={}) and snapshot {} disagree in a way no crash explains",
                        wal.first_index(),
                        wal.last_index(),
                        meta.index
                    )));
                }
                log::warn!(
                    "node {}: log {}..={} does not continue snapshot {}; it restarts after it",
                    cfg.id,
                    wal.first_index(),
                    wal.last_index(),
                    meta.index
                );
                wal.reset_after_snapshot(meta.index)?;
                wal.sync()?;
            }
        }

        let mut listener = TcpListener::bind(cfg.listen)
            .map_err(io_err(format!("cannot listen on {}", cfg.listen)))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(io_err("cannot register listener"))?;
        let mut signals =
            Signals::new([SIGINT, SIGTERM]).map_err(io_err("cannot install signal handlers"))?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(io_err("cannot register signals"))?;
        let syncer = Syncer::start(waker).map_err(io_err("cannot start fsync thread"))?;
        let now = Instant::now();
        let links = cfg
            .members
            .iter()
            .enumerate()
            .map(|(j, addr)| (j as u64 != cfg.id).then(|| PeerLink::new(j as u64, *addr, now)))
            .collect();
        let tick = Duration::from_millis(cfg.heartbeat_ms);
        let soft = SoftState {
            role: raft.role(),
            term: raft.term(),
            leader: raft.leader(),
        };
        log::info!(
            "node {}: listening on {} ({} members)",
            cfg.id,
            cfg.listen,
            cfg.members.len()
        );
        Ok(Node {
            hello: Handshake {
                cluster_id: cfg.cluster_id,
                node_id: cfg.id,
            },
            cfg,
            poll,
            listener: Some(listener),
            signals,
            conns: Slab::new(),
            links,
            raft,
            wal,
            syncer,
            snapshots,
            applied_term,
            applied_bytes_since_snapshot: 0,
            unsynced: VecDeque::new(),
            sm,
            writes: HashMap::new(),
            local_proposals: BTreeMap::new(),
            reads: HashMap::new(),
            reads_waiting_apply: Vec::new(),
            deadlines: VecDeque::new(),
            // Request ids must never repeat across restarts: a replayed entry from an earlier
            // run must not answer a new request. Microseconds since the epoch only grow.
            next_req: now_ms() * 1000,
            next_conn_id: 1,
            tick,
            next_tick: now + tick,
            soft,
            dirty: Vec::new(),
            telnet_sessions: 0,
            dirty_soon: false,
            early_acks: Vec::new(),
            early_ack_position: 0,
            greetings: VecDeque::new(),
            scratch: Vec::new(),
            stopping: false,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Runs until SIGINT/SIGTERM (Ok) or a storage failure (Err).
    pub fn run(&mut self) -> Result<(), ServerError> {
        let mut events = Events::with_capacity(1024);
        let mut stop_deadline = None;
        loop {
            let now = Instant::now();
            let timeout = self.next_wakeup(now).saturating_duration_since(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(ServerError::Io {
                        context: "poll failed".into(),
                        source: e,
                    });
                }
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    SIGNALS => self.on_signal(),
                    WAKER => {} // a sync finished: `drive` collects it below
                    Token(t) if (PEER_BASE..CONN_BASE).contains(&t) => {
                        let now = Instant::now();
                        let registry = self.poll.registry();
                        if let Some(Some(link)) = self.links.get_mut(t - PEER_BASE) {
                            link.on_event(registry, now);
                        }
                    }
                    Token(t) => self.on_conn_event(t - CONN_BASE),
                }
            }
            self.on_timers(Instant::now());
            self.drive()?;
            if std::mem::take(&mut self.dirty_soon) {
                self.serve_reads();
                self.serve_early_acks();
            }
            self.pump_snapshots();
            self.flush();
            if self.stopping {
                let deadline =
                    *stop_deadline.get_or_insert_with(|| Instant::now() + SHUTDOWN_FLUSH);
                let pending = self
                    .conns
                    .iter()
                    .any(|(_, c)| c.buffers.pending_output() > 0);
                if !pending || Instant::now() >= deadline {
                    self.collect_synced(true)?;
                    log::info!(
                        "node {}: stopped cleanly at term {}",
                        self.cfg.id,
                        self.raft.term()
                    );
                    return Ok(());
                }
            }
        }
    }

    fn next_wakeup(&self, now: Instant) -> Instant {
        let mut at = self.next_tick;
        if let Some((deadline, _)) = self.deadlines.front() {
            at = at.min(*deadline);
        }
        for link in self.links.iter().flatten() {
            if let Some(retry) = link.wakeup() {
                at = at.min(retry);
            }
        }
        if let Some((greet_at, _)) = self.greetings.front() {
            at = at.min(*greet_at);
        }
        if self.stopping {
            at = at.min(now + Duration::from_millis(10));
        }
        if !self.dirty.is_empty() {
            // Output queued during the last flush (a resumed reader answered at once).
            at = now;
        }
        at.max(now)
    }

    fn on_signal(&mut self) {
        if self.signals.pending().next().is_some() && !self.stopping {
            log::info!("node {}: signal received, stopping", self.cfg.id);
            self.stopping = true;
            if let Some(mut listener) = self.listener.take() {
                let _ = self.poll.registry().deregister(&mut listener);
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(CONN_BASE + key),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::warn!("node {}: cannot register connection: {e}", self.cfg.id);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let id = self.next_conn_id;
                    self.next_conn_id += 1;
                    self.greetings
                        .push_back((Instant::now() + GREETING_DELAY, ConnRef { key, id }));
                    entry.insert(Conn {
                        id,
                        stream,
                        buffers: Buffers::default(),
                        kind: ConnKind::Unknown,
                        closing: false,
                        dirty: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: stop accepting this turn, keep serving.
                    log::warn!("node {}: accept failed: {e}", self.cfg.id);
                    return;
                }
            }
        }
    }

    pub(super) fn close(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            if let ConnKind::Telnet(_) = conn.kind {
                self.telnet_sessions -= 1;
            }
            if let ConnKind::Peer { node } = conn.kind {
                log::info!("node {}: inbound link from node {node} closed", self.cfg.id);
            }
        }
    }

    pub(super) fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    fn on_conn_event(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        self.mark_dirty(key);
        self.read_conn(key);
    }

    /// Reads and handles input on an accepted connection until it would block.
    pub(super) fn read_conn(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.closing {
                return;
            }
            let pending_output = conn.buffers.pending_output();
            let input_max = match &mut conn.kind {
                ConnKind::Telnet(session) if session.input_paused() => return,
                ConnKind::Binary(session) if pending_output > binary::OUTPUT_PAUSE_BYTES => {
                    session.paused = true;
                    return;
                }
                ConnKind::Peer { .. } => PEER_INPUT_BYTES_MAX,
                _ => 256 * 1024,
            };
            let outcome = conn.buffers.read_from(&mut conn.stream, input_max);
            self.handle_input(key);
            match outcome {
                ReadOutcome::Open => return,
                ReadOutcome::Full => continue,
                ReadOutcome::Closed => {
                    // A telnet client may send its commands and half-close (`… | nc`): answer
                    // what it sent, then close. Anything else is simply gone.
                    match self.conns.get_mut(key) {
                        Some(conn) if matches!(conn.kind, ConnKind::Telnet(_)) => {
                            conn.closing = true;
                            self.mark_dirty(key);
                        }
                        _ => self.close(key),
                    }
                    return;
                }
            }
        }
    }

    fn handle_input(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let ConnKind::Telnet(session) = &mut conn.kind {
            if session.is_binary_after_greeting(conn.buffers.input()) {
                conn.kind = ConnKind::Unknown;
            }
        }
        if let ConnKind::Unknown = conn.kind {
            let input = conn.buffers.input();
            if input.is_empty() {
                return;
            }
            if input[0] != 0 {
                conn.kind = ConnKind::Telnet(Box::new(Session::new()));
                self.telnet_sessions += 1;
            } else if input.len() < PEER_MAGIC.len() {
                return;
            } else if input[..4] == PEER_MAGIC {
                match wire::decode_handshake(input) {
                    Ok(None) => return,
                    Ok(Some((hello, used))) => {
                        conn.buffers.consume(used);
                        if !self.accept_handshake(key, hello) {
                            return;
                        }
                    }
                    Err(e) => {
                        log::warn!(
                            "node {}: refused a peer connection: bad handshake: {e}",
                            self.cfg.id
                        );
                        self.close(key);
                        return;
                    }
                }
            } else if input[..4] == CLIENT_MAGIC {
                conn.kind = ConnKind::Binary(Box::default());
            } else {
                conn.kind = ConnKind::Telnet(Box::new(Session::new()));
                self.telnet_sessions += 1;
            }
        }
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        match conn.kind {
            ConnKind::Peer { node } => self.handle_peer_input(key, node),
            ConnKind::Telnet(_) => self.handle_telnet_input(key),
            ConnKind::Binary(_) => self.handle_binary_input(key),
            ConnKind::Unknown => {}
        }
    }

    fn accept_handshake(&mut self, key: usize, hello: Handshake) -> bool {
        let members = self.cfg.members.len() as u64;
        let refuse = if hello.cluster_id != self.cfg.cluster_id {
            Some(format!(
                "cluster id {:#x} is not ours ({:#x})",
                hello.cluster_id, self.cfg.cluster_id
            ))
        } else if hello.node_id >= members || hello.node_id == self.cfg.id {
            Some(format!(
                "node id {} is not another member of this {members}-node cluster",
                hello.node_id
            ))
        } else {
            None
        };
        if let Some(why) = refuse {
            log::warn!("node {}: refused a peer connection: {why}", self.cfg.id);
            self.close(key);
            return false;
        }
        log::info!(
            "node {}: inbound link from node {} is up",
            self.cfg.id,
            hello.node_id
        );
        self.conns[key].kind = ConnKind::Peer {
            node: hello.node_id,
        };
        true
    }

    fn handle_peer_input(&mut self, key: usize, node: NodeId) {
        // Frames borrow the input buffer; take it out so `self` stays usable while they live.
        let mut buffers = std::mem::take(&mut self.conns[key].buffers);
        let mut used_total = 0;
        let mut failed = None;
        loop {
            match wire::decode_peer_frame(&buffers.input()[used_total..]) {
                Ok(None) => break,
                Ok(Some((frame, used))) => {
                    used_total += used;
                    self.on_peer_frame(node, frame);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        buffers.consume(used_total);
        self.conns[key].buffers = buffers;
        if let Some(e) = failed {
            log::warn!("node {}: closing link from node {node}: {e}", self.cfg.id);
            self.close(key);
        }
    }

    fn on_peer_frame(&mut self, node: NodeId, frame: PeerFrame<'_>) {
        match frame {
            PeerFrame::Raft(msg) => {
                if msg.from != node || msg.to != self.cfg.id {
                    log::warn!(
                        "node {}: dropped a message from node {} claiming to be {}",
                        self.cfg.id,
                        node,
                        msg.from
                    );
                    return;
                }
                if let MessageBody::InstallSnapshot { snapshot } = msg.body {
                    // A snapshot arrives as chunks, and this node steps the InstallSnapshot itself
                    // once the whole file is in (`on_snapshot_chunk`); one on its own carries no
                    // data to install.
                    log::debug!(
                        "node {}: dropped an InstallSnapshot (index {}) from node {node}",
                        self.cfg.id,
                        snapshot.index
                    );
                    return;
                }
                self.raft.step(msg);
            }
            PeerFrame::Propose { origin_req, data } => {
                self.on_forwarded_proposal(node, origin_req, data)
            }
            PeerFrame::ProposeRejected {
                origin_req,
                leader_hint,
            } => {
                let hint = leader_hint
                    .map(|l| format!(" (leader is node {l})"))
                    .unwrap_or_default();
                let failure = Failure::NotStored(format!("no leader: not stored{hint}, try again"));
                self.fail_write(origin_req, failure);
            }
            PeerFrame::SnapshotChunk {
                term,
                snapshot,
                total_len,
                offset,
                data,
            } => self.on_snapshot_chunk(node, term, snapshot, total_len, offset, data),
            PeerFrame::SnapshotAck { snapshot, received } => {
                self.snapshots
                    .on_ack(node, snapshot, received, Instant::now());
            }
        }
    }

    fn on_snapshot_chunk(
        &mut self,
        from: NodeId,
        term: Term,
        snapshot: SnapshotMeta,
        total_len: u64,
        offset: u64,
        data: &[u8],
    ) {
        let received = match self
            .snapshots
            .on_chunk(from, term, snapshot, total_len, offset, data)
        {
            ChunkOutcome::Ack { received } => received,
            ChunkOutcome::Complete { term, meta } => {
                // The file is durable and verified: now the core may decide to install it.
                self.raft.step(Message {
                    from,
                    to: self.cfg.id,
                    term,
                    body: MessageBody::InstallSnapshot { snapshot: meta },
                });
                if self.raft.snapshot() != Some(meta) {
                    self.snapshots.discard_received(meta);
                }
                total_len
            }
        };
        self.send_to(from, |out| {
            wire::encode_snapshot_ack(snapshot, received, out)
        });
    }

    /// Leader: sends the snapshot chunks each follower's window allows.
    fn pump_snapshots(&mut self) {
        let links = &mut self.links;
        self.snapshots.pump(Instant::now(), |to, encode| {
            match links.get_mut(to as usize) {
                Some(Some(link)) if link.is_connected() => link.send_with(|out| encode(out)),
                _ => false,
            }
        });
    }

    /// Sends `encode`'s frame on the link to `to`. Returns false if the link is down.
    pub(super) fn send_to(&mut self, to: NodeId, encode: impl FnOnce(&mut Vec<u8>)) -> bool {
        match self.links.get_mut(to as usize) {
            Some(Some(link)) => link.send_with(encode),
            _ => false,
        }
    }

    pub(super) fn link_up(&self, to: NodeId) -> bool {
        matches!(self.links.get(to as usize), Some(Some(link)) if link.is_connected())
    }

    fn send_raft(&mut self, messages: Vec<Message>) {
        for msg in messages {
            let to = msg.to;
            if let MessageBody::InstallSnapshot { .. } = msg.body {
                // The data travels as chunks (`snapshot.rs`); the follower steps the
                // InstallSnapshot itself once the whole file is in.
                self.snapshots.want_send(to, msg.term, Instant::now());
                continue;
            }
            self.send_to(to, |out| wire::encode_raft_message(&msg, out));
        }
    }

    fn on_timers(&mut self, now: Instant) {
        if now >= self.next_tick {
            self.raft.tick();
            self.next_tick += self.tick;
            if self.next_tick < now {
                // We fell behind (a long fsync, a SIGSTOP): do not replay the missed ticks in a burst.
                self.next_tick = now + self.tick;
            }
        }
        while let Some(&(deadline, req)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            self.expire_request(req);
        }
        let registry = self.poll.registry();
        for link in self.links.iter_mut().flatten() {
            link.maybe_connect(
                registry,
                Token(PEER_BASE + link.id as usize),
                &self.hello,
                now,
            );
        }
        // Deadlines were queued in accept order, so the front is always the earliest.
        let mut greet = Vec::new();
        while let Some(&(at, conn)) = self.greetings.front() {
            if at > now {
                break;
            }
            self.greetings.pop_front();
            if let Some(c) = self.conns.get(conn.key).filter(|c| c.id == conn.id) {
                if matches!(c.kind, ConnKind::Unknown) {
                    greet.push(conn.key);
                }
            }
        }
        for key in greet {
            self.greet(key);
        }
    }

    /// Runs the Ready loop until the core has nothing more to say, or until enough syncs are in
    /// flight that waiting lets the next batch grow.
    fn drive(&mut self) -> Result<(), ServerError> {
        self.collect_snapshot()?;
        loop {
            self.collect_synced(false)?;
            if !self.raft.has_ready() || self.syncer.in_flight() >= SYNCS_IN_FLIGHT_MAX {
                return Ok(());
            }
            let rd = self.raft.ready();
            self.handle_ready(rd)?;
        }
    }

    /// Takes finished fsyncs back (waiting for them if `block`), then acknowledges every Ready
    /// at the front of the queue that is now durable.
    fn collect_synced(&mut self, block: bool) -> Result<(), ServerError> {
        while let Some(job) = self.syncer.finished(block) {
            self.wal.synced(job)?;
            let oldest = self.unsynced.iter_mut().find(|u| u.syncing);
            debug_assert!(
                oldest.is_some(),
                "every finished sync belongs to a queued Ready"
            );
            if let Some(unsynced) = oldest {
                unsynced.syncing = false;
            }
        }
        while self.unsynced.front().is_some_and(|u| !u.syncing) {
            let done = self.unsynced.pop_front().expect("checked");
            // (3) Votes and acknowledgements only after the disk has them.
            self.send_raft(done.persisted_messages);
            // (4) Now the core may count this node's own copy.
            self.raft.advance(done.number);
        }
        Ok(())
    }

    fn handle_ready(&mut self, rd: Ready) -> Result<(), ServerError> {
        if let Some(soft) = rd.soft_state {
            self.on_soft_state(soft);
        }
        // (1) The leader's appends leave before its own write: §10.2.1.
        self.send_raft(rd.messages);
        if let Some(meta) = rd.snapshot {
            // Before this Ready's entries: they continue the log after the snapshot.
            self.install_snapshot(meta)?;
        }
        // (2) One write for everything in this Ready, its fdatasync on the helper thread:
        // group commit without stalling the loop. (3) and (4) happen in `collect_synced`.
        let syncing = !rd.entries.is_empty() || rd.hard_state.is_some();
        if syncing {
            if !rd.entries.is_empty() {
                self.wal.append(&rd.entries)?;
            }
            if let Some(hs) = rd.hard_state {
                self.wal.set_hard_state(hs)?;
            }
            let job = self.wal.write_buffered()?;
            self.syncer.submit(job);
        }
        self.unsynced.push_back(Unsynced {
            number: rd.number,
            persisted_messages: rd.persisted_messages,
            syncing,
        });
        self.collect_synced(false)?;
        // (5) Apply and serve: the core hands out only entries durable here and on a quorum.
        for entry in rd.committed_entries {
            self.applied_term = entry.term;
            self.applied_bytes_since_snapshot += entry.data.len() as u64;
            match entry.kind {
                EntryKind::Noop => self.sm.apply_noop(entry.index),
                EntryKind::Normal => {
                    let applied = self.sm.apply(entry.index, &entry.data);
                    self.on_applied(entry.index, applied);
                }
            }
        }
        for rs in rd.read_states {
            if let Some(read) = self.reads.remove(&rs.ctx) {
                self.reads_waiting_apply.push((rs.index, rs.ctx, read));
            }
        }
        for failure in rd.read_failures {
            let hint = failure
                .leader_hint
                .map(|l| format!(" (leader is node {l})"))
                .unwrap_or_default();
            if let Some(read) = self.reads.remove(&failure.ctx) {
                let failure =
                    Failure::NotServed(format!("no leader: read not served{hint}, try again"));
                self.fail_read(read, failure);
            }
        }
        self.serve_reads();
        self.maybe_snapshot();
        Ok(())
    }

    /// Follower: the core accepted the snapshot received for `meta`. It replaces the state
    /// machine, and the log restarts after it; the file is already durable.
    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), ServerError> {
        let file = self.snapshots.take_received(meta).ok_or_else(|| {
            ServerError::Snapshot(format!(
                "the core installs snapshot {meta:?}, but no such file was received"
            ))
        })?;
        let started = Instant::now();
        let mut body = file.body()?;
        let sm = StateMachine::restore(
            &mut body,
            SessionConfig::default(),
            self.cfg.retain_messages,
        )
        .map_err(|why| ServerError::Snapshot(format!("{}: {why}", file.path.display())))?;
        // Nothing this node proposed at or below the snapshot can still be answered from it.
        while let Some((&at, &req)) = self.local_proposals.first_key_value() {
            if at > meta.index {
                break;
            }
            self.local_proposals.pop_first();
            let failure = Failure::Unknown(
                "log replaced by a snapshot: outcome unknown, it may still be stored".into(),
            );
            self.fail_write(req, failure);
        }
        self.sm = sm;
        self.applied_term = meta.term;
        self.applied_bytes_since_snapshot = 0;
        self.wal.reset_after_snapshot(meta.index)?;
        log::info!(
            "node {}: installed snapshot at index {} (term {}, {} messages) in {:.1?}",
            self.cfg.id,
            meta.index,
            meta.term,
            self.sm.message_count(),
            started.elapsed()
        );
        // The log's old segments go at the next compaction; older snapshots go now.
        let cleanup = Cleanup {
            entries: Vec::new(),
            segments: Vec::new(),
            snapshots_before: meta.index,
        };
        self.snapshots.set_latest(file, cleanup);
        Ok(())
    }

    /// Starts writing a snapshot once `--snapshot-entries` entries were applied since the last,
    /// and the log since then is at least as large as the last snapshot file. A snapshot writes
    /// the whole chat state, so without the second rule a large chat would be rewritten every
    /// few seconds; with it, snapshot writes cost at most about the log's own bytes (and the log
    /// kept on disk and in the core stays under about one snapshot's size).
    fn maybe_snapshot(&mut self) {
        let every = self.cfg.snapshot_entries;
        let applied = self.sm.applied_index();
        let (last, last_len) = self
            .snapshots
            .latest()
            .map_or((0, 0), |file| (file.meta.index, file.len));
        if every == 0
            || self.snapshots.is_writing()
            || applied < last.saturating_add(every)
            || self.applied_bytes_since_snapshot < last_len
        {
            return;
        }
        self.applied_bytes_since_snapshot = 0;
        let meta = SnapshotMeta {
            index: applied,
            term: self.applied_term,
        };
        let started = Instant::now();
        let capture = self.sm.capture();
        log::info!(
            "node {}: snapshot at index {} captured in {:.1?}; writing it",
            self.cfg.id,
            applied,
            started.elapsed()
        );
        self.snapshots.start_write(meta, capture);
    }

    /// A snapshot the helper thread finished: the core and the log may forget what it covers,
    /// except the last `--log-keep-entries` entries.
    fn collect_snapshot(&mut self) -> Result<(), ServerError> {
        let Some((meta, written)) = self.snapshots.take_written() else {
            return Ok(());
        };
        let file = match written {
            Ok(file) => file,
            Err(e) => {
                // The log still holds everything: nothing is lost, the next attempt may work.
                log::error!(
                    "node {}: snapshot at {} failed: {e}",
                    self.cfg.id,
                    meta.index
                );
                return Ok(());
            }
        };
        if self
            .snapshots
            .latest_meta()
            .is_some_and(|m| m.index >= meta.index)
        {
            return Ok(()); // a newer snapshot was installed from the leader meanwhile
        }
        let first_kept = meta.index.saturating_sub(self.cfg.log_keep_entries) + 1;
        let entries = self.raft.compact(meta, first_kept);
        let first_kept = self.raft.first_index();
        // The log forgets the segments now; the janitor deletes the files, and frees the entries.
        let segments = self.wal.detach_prefix(first_kept.saturating_sub(1))?;
        log::info!(
            "node {}: snapshot at index {} durable ({} bytes); log starts at {}",
            self.cfg.id,
            meta.index,
            file.len,
            self.wal.first_index()
        );
        let cleanup = Cleanup {
            entries,
            segments,
            snapshots_before: meta.index,
        };
        self.snapshots.set_latest(file, cleanup);
        Ok(())
    }

    fn on_soft_state(&mut self, soft: SoftState) {
        let old = self.soft;
        self.soft = soft;
        if old.role != soft.role || old.leader != soft.leader {
            let leader = soft
                .leader
                .map(|l| format!("node {l}"))
                .unwrap_or_else(|| "unknown".into());
            log::info!(
                "node {} term {}: {:?}, leader {}",
                self.cfg.id,
                soft.term,
                soft.role,
                leader
            );
        }
        if let Some(old_leader) = old
            .leader
            .filter(|l| Some(*l) != soft.leader && *l != self.cfg.id)
        {
            // Writes forwarded to a leader that lost office may or may not have been appended
            // there; say so now rather than at the deadline. A binary client retries with the
            // same session and seq, which the state machine deduplicates.
            let orphaned: Vec<u64> = self
                .writes
                .iter()
                .filter(|(_, w)| w.forwarded_to == Some(old_leader))
                .map(|(req, _)| *req)
                .collect();
            for req in orphaned {
                let failure = Failure::Unknown(
                    "leader changed: outcome unknown, it may still be stored".into(),
                );
                self.fail_write(req, failure);
            }
        }
        if old.role == Role::Leader && soft.role != Role::Leader {
            self.snapshots.stop_sending();
            log::info!("node {} term {}: stepped down", self.cfg.id, soft.term);
        }
    }

    fn on_applied(&mut self, index: Index, applied: Applied) {
        // A proposal this node made as leader at `index` that is not the entry applied there
        // was overwritten by a later leader: it is definitely not stored.
        let ours = applied
            .origin
            .filter(|o| o.node == self.cfg.id)
            .map(|o| o.req);
        while let Some((&at, &req)) = self.local_proposals.first_key_value() {
            if at > index {
                break;
            }
            self.local_proposals.pop_first();
            if at == index && ours == Some(req) {
                continue;
            }
            let failure = Failure::NotStored("leader changed: not stored, try again".into());
            self.fail_write(req, failure);
        }
        self.deliver_applied(ours, &applied);
    }

    pub(super) fn register_local_proposal(&mut self, index: Index, req: u64) {
        self.local_proposals.insert(index, req);
    }

    /// `--testing-stale-reads`: queue the read as if its read index were 0, served next turn.
    pub(super) fn serve_stale(&mut self, req: u64, read: PendingRead) {
        self.reads_waiting_apply.push((0, req, read));
        self.dirty_soon = true;
    }

    /// `--testing-early-ack`: queue an acknowledgement of `req` for this turn, before its entry
    /// is durable or replicated anywhere.
    pub(super) fn early_ack(&mut self, req: u64) {
        self.early_acks.push(req);
        self.dirty_soon = true;
    }

    /// `--testing-early-ack`: acknowledge the queued writes now, claiming the positions their
    /// messages would get if nothing went wrong. Deliberately unsafe: what a crash or a new
    /// leader loses was acknowledged anyway, which is what the fault suite must catch.
    fn serve_early_acks(&mut self) {
        for req in std::mem::take(&mut self.early_acks) {
            if !self.writes.contains_key(&req) {
                continue;
            }
            self.early_ack_position = self.early_ack_position.max(self.sm.last_position()) + 1;
            let applied = Applied {
                origin: None,
                outcome: Outcome::Posted {
                    position: self.early_ack_position,
                },
                // Not a new message yet: live delivery waits for the real apply.
                duplicate: true,
            };
            // Answers and forgets the write, so the real apply later answers nobody.
            self.deliver_applied(Some(req), &applied);
        }
    }

    fn serve_reads(&mut self) {
        let applied = self.sm.applied_index();
        let mut i = 0;
        while i < self.reads_waiting_apply.len() {
            if self.reads_waiting_apply[i].0 <= applied {
                let (_, _, read) = self.reads_waiting_apply.swap_remove(i);
                self.serve_query(read);
            } else {
                i += 1;
            }
        }
    }

    fn expire_request(&mut self, req: u64) {
        if self.writes.contains_key(&req) {
            self.local_proposals.retain(|_, r| *r != req);
            let failure =
                Failure::Unknown("timeout: outcome unknown, it may still be stored".into());
            self.fail_write(req, failure);
        } else if let Some(read) = self.reads.remove(&req) {
            self.fail_read(
                read,
                Failure::NotServed("timeout: read not served, try again".into()),
            );
        } else if let Some(pos) = self
            .reads_waiting_apply
            .iter()
            .position(|(_, r, _)| *r == req)
        {
            let (_, _, read) = self.reads_waiting_apply.swap_remove(pos);
            self.fail_read(
                read,
                Failure::NotServed("timeout: read not served, try again".into()),
            );
        }
    }

    pub(super) fn new_request(&mut self) -> u64 {
        self.next_req += 1;
        self.deadlines.push_back((
            Instant::now() + Duration::from_millis(self.cfg.request_timeout_ms),
            self.next_req,
        ));
        self.next_req
    }

    fn flush(&mut self) {
        let now = Instant::now();
        let registry = self.poll.registry();
        for link in self.links.iter_mut().flatten() {
            if link.has_output() {
                link.flush(registry, now);
            }
        }
        let dirty = std::mem::take(&mut self.dirty);
        for key in dirty {
            self.refill_stream(key);
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.dirty = false;
            if conn.buffers.write_to(&mut conn.stream).is_err() {
                self.close(key);
                continue;
            }
            if let ConnKind::Binary(session) = &mut conn.kind {
                if session.paused && conn.buffers.pending_output() < binary::OUTPUT_PAUSE_BYTES / 2
                {
                    session.paused = false;
                    self.read_conn(key);
                    continue;
                }
            }
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let working = matches!(&conn.kind, ConnKind::Telnet(session) if session.has_work());
            if conn.closing && conn.buffers.pending_output() == 0 && !working {
                self.close(key);
            }
        }
    }
}
