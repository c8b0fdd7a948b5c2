//! The transport: the mio poller, the listener, accepted connections with their buffers, and
//! the outbound links to peers. It moves bytes and nothing else: what they mean is decided by
//! the front-ends (telnet, binary, peer) above it.
//!
//! A connection's stream is one place (`Conn::stream`), read and written only through
//! [`Transport::read`] and [`Transport::write`]: plain TCP or a TLS session (`stream.rs`), so
//! the layers above never notice which. With TLS configured (`tls.rs`) an accepted connection
//! whose first byte starts a ClientHello becomes a TLS session; peers must use TLS and present
//! a certificate naming the id in their handshake; plain clients are refused when
//! `--client-tls required`; a handshake not done in `HANDSHAKE_TIMEOUT` is closed.

mod conn;
mod peers;
mod stream;
mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

pub use conn::{Buffers, ReadOutcome};
use peers::PeerLink;
use stream::Stream;

use crate::raft::NodeId;
use crate::wire::Handshake;

use super::error::ServerError;

const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
/// The fsync and snapshot helper threads wake the loop with this token.
const WAKER: Token = Token(2);
/// Outbound peer link `j` uses token `PEER_BASE + j`.
const PEER_BASE: usize = 16;
/// Accepted connection with slab key `k` uses token `CONN_BASE + k`.
const CONN_BASE: usize = PEER_BASE + 1024;

/// A connection that sent nothing for this long is greeted as a telnet client.
pub const GREETING_DELAY: Duration = Duration::from_millis(150);

/// What a readiness event is about.
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    Listener,
    Signals,
    /// A helper thread finished something; the driver collects it.
    Waker,
    /// The outbound link to a peer.
    Link(usize),
    /// An accepted connection, by slab key.
    Conn(usize),
}

/// What an accepted connection turned out to be (its protocol state lives with its front-end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// No bytes yet.
    Unknown,
    Telnet,
    /// A program speaking the binary client protocol.
    Binary,
    /// An inbound link from member `node`, after a valid handshake.
    Peer {
        node: NodeId,
    },
    /// An HTTP/1.1 client (page, metrics, health), one request per connection.
    Http,
    /// A WebSocket chat session, after a `GET /ws` upgrade.
    WebSocket,
}

pub struct Conn {
    /// Unique for the process lifetime, so a reply never reaches a reused slab slot.
    pub id: u64,
    stream: Stream,
    /// With TLS configured: the first byte was looked at (a ClientHello wraps the stream in a
    /// TLS session) and, once classified, whether this connection may stay (see `tls.rs`).
    sniffed: bool,
    vetted: bool,
    pub buffers: Buffers,
    pub proto: Proto,
    /// Close once the output is flushed.
    pub closing: bool,
    /// Queued for a flush at the end of this loop turn.
    dirty: bool,
    /// Queued for a bulk flush (live delivery), which may take several turns.
    dirty_bulk: bool,
}

/// Identifies a client connection across slab reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnRef {
    pub key: usize,
    pub id: u64,
}

pub struct Transport {
    id: NodeId,
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    /// Indexed by node id; `None` at this node's own id.
    links: Vec<Option<PeerLink>>,
    hello: Handshake,
    next_conn_id: u64,
    /// Connections with replies to flush this turn.
    dirty: Vec<usize>,
    /// Connections with live-delivery output, flushed a bounded number per turn after the
    /// replies, so a fan-out to thousands never delays the next reply or proposal.
    dirty_bulk: std::collections::VecDeque<usize>,
    /// When to greet each accepted connection if it has not spoken by then, in accept order.
    greetings: std::collections::VecDeque<(Instant, ConnRef)>,
    /// Connections closed since the last `take_closed`, so front-ends drop their state.
    closed: Vec<ConnRef>,
    /// `--cert --key --ca`: TLS for peers (required) and clients (`--client-tls`).
    tls: Option<crate::tls::NodeTls>,
    /// TLS connections to close if their handshake is not done by then, in accept order.
    handshakes: std::collections::VecDeque<(Instant, ConnRef)>,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

/// A non-blocking listener with `SO_REUSEADDR` (as mio's own `bind`) and our backlog.
fn listen_on(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

impl Transport {
    /// Binds `listen` and prepares links to `members` (`(id, address)`; this node's own id is
    /// skipped). Returns the waker helper threads use to wake the loop.
    pub fn bind(
        listen: SocketAddr,
        backlog: u32,
        members: &[(NodeId, SocketAddr)],
        hello: Handshake,
    ) -> Result<(Transport, Arc<Waker>), ServerError> {
        let poll = Poll::new().map_err(io_err("cannot create poller"))?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).map_err(io_err("cannot create waker"))?);
        let mut listener =
            listen_on(listen, backlog).map_err(io_err(format!("cannot listen on {listen}")))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(io_err("cannot register listener"))?;
        let mut transport = Transport {
            id: hello.node_id,
            poll,
            listener: Some(listener),
            conns: Slab::new(),
            links: Vec::new(),
            hello,
            next_conn_id: 1,
            dirty: Vec::new(),
            dirty_bulk: std::collections::VecDeque::new(),
            greetings: std::collections::VecDeque::new(),
            closed: Vec::new(),
            tls: None,
            handshakes: std::collections::VecDeque::new(),
        };
        transport.set_peers(members);
        Ok((transport, waker))
    }

    /// The links follow the configuration (issue 16): a link to every member in `members`
    /// (`(id, address)`, this node's own id skipped), none to anyone else. A new member is
    /// dialled at the next `connect_links`; a link to a member that left, or moved, is closed.
    pub fn set_peers(&mut self, members: &[(NodeId, SocketAddr)]) {
        let now = Instant::now();
        let wanted: std::collections::BTreeMap<NodeId, SocketAddr> = members
            .iter()
            .filter(|(id, _)| *id != self.id && *id < crate::server::NODE_ID_MAX)
            .copied()
            .collect();
        let registry = self.poll.registry();
        for (j, slot) in self.links.iter_mut().enumerate() {
            let keep = slot
                .as_ref()
                .is_none_or(|link| wanted.get(&link.id) == Some(&link.addr()));
            if keep {
                continue;
            }
            if let Some(mut link) = slot.take() {
                log::info!(
                    "node {}: link to node {j} dropped (not a member now)",
                    self.id
                );
                link.close(registry);
            }
        }
        for (id, addr) in wanted {
            let j = id as usize;
            if j >= self.links.len() {
                self.links.resize_with(j + 1, || None);
            }
            if self.links[j].is_none() {
                log::info!("node {}: link to node {id} at {addr} added", self.id);
                self.links[j] = Some(PeerLink::new(id, addr, now));
            }
        }
    }

    /// Registers the signal source so signals arrive as [`Source::Signals`].
    pub fn register_signals(
        &self,
        source: &mut impl mio::event::Source,
    ) -> Result<(), ServerError> {
        self.poll
            .registry()
            .register(source, SIGNALS, Interest::READABLE)
            .map_err(io_err("cannot register signals"))
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn poll(&mut self, events: &mut Events, timeout: Duration) -> Result<(), ServerError> {
        match self.poll.poll(events, Some(timeout)) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(ServerError::Io {
                context: "poll failed".into(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    pub fn source(token: Token) -> Source {
        match token {
            LISTENER => Source::Listener,
            SIGNALS => Source::Signals,
            WAKER => Source::Waker,
            Token(t) if (PEER_BASE..CONN_BASE).contains(&t) => Source::Link(t - PEER_BASE),
            Token(t) => Source::Conn(t - CONN_BASE),
        }
    }

    /// Stops accepting (a stopping node).
    pub fn stop_listening(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
    }

    /// Accepts every pending connection; each is greeted after `GREETING_DELAY` if silent.
    /// Returns the new connections with their source addresses (for `server::limits`).
    pub fn accept(&mut self) -> Vec<(ConnRef, SocketAddr)> {
        let mut accepted = Vec::new();
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return accepted;
            };
            match listener.accept() {
                Ok((stream, from)) => accepted.extend(self.add_conn(stream).map(|c| (c, from))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return accepted,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: stop accepting this turn, keep serving.
                    log::warn!("node {}: accept failed: {e}", self.id);
                    return accepted;
                }
            }
        }
    }

    fn add_conn(&mut self, mut stream: TcpStream) -> Option<ConnRef> {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(CONN_BASE + key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("node {}: cannot register connection: {e}", self.id);
            return None;
        }
        let _ = stream.set_nodelay(true);
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        self.greetings
            .push_back((Instant::now() + GREETING_DELAY, ConnRef { key, id }));
        entry.insert(Conn {
            id,
            stream: Stream::Plain(stream),
            sniffed: self.tls.is_none(),
            vetted: self.tls.is_none(),
            buffers: Buffers::default(),
            proto: Proto::Unknown,
            closing: false,
            dirty: false,
            dirty_bulk: false,
        });
        Some(ConnRef { key, id })
    }

    /// Silent connections whose greeting time has come, still unclassified.
    pub fn due_greetings(&mut self, now: Instant) -> Vec<ConnRef> {
        self.expire_handshakes(now);
        let mut due = Vec::new();
        // Queued in accept order, so the front is always the earliest.
        while let Some(&(at, conn)) = self.greetings.front() {
            if at > now {
                break;
            }
            self.greetings.pop_front();
            if self.get(conn).is_some_and(|c| c.proto == Proto::Unknown)
                && self.greet_or_hold(conn, now)
            {
                due.push(conn);
            }
        }
        due
    }

    pub fn conn_ref(&self, key: usize) -> Option<ConnRef> {
        self.conns.get(key).map(|c| ConnRef { key, id: c.id })
    }

    /// The connection `conn` names, if it is still the same connection.
    pub fn get(&self, conn: ConnRef) -> Option<&Conn> {
        self.conns.get(conn.key).filter(|c| c.id == conn.id)
    }

    pub fn get_mut(&mut self, conn: ConnRef) -> Option<&mut Conn> {
        self.conns.get_mut(conn.key).filter(|c| c.id == conn.id)
    }

    /// The protocol of every accepted connection (for the metrics endpoint).
    pub fn protocols(&self) -> impl Iterator<Item = Proto> + '_ {
        self.conns.iter().map(|(_, c)| c.proto)
    }

    pub fn by_key(&self, key: usize) -> Option<&Conn> {
        self.conns.get(key)
    }

    /// The output buffer of `conn`, queued for this turn's flush.
    pub fn output(&mut self, conn: ConnRef) -> Option<&mut Vec<u8>> {
        let c = self.conns.get_mut(conn.key).filter(|c| c.id == conn.id)?;
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(conn.key);
        }
        Some(c.buffers.output())
    }

    pub fn close(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            if let Some(tcp) = conn.stream.tcp() {
                let _ = self.poll.registry().deregister(tcp);
            }
            if let Proto::Peer { node } = conn.proto {
                log::info!("node {}: inbound link from node {node} closed", self.id);
            }
            self.closed.push(ConnRef { key, id: conn.id });
        }
    }

    /// The buffers of `conn` for live delivery: flushed after the replies, a bounded
    /// number of connections per turn (`take_dirty_bulk`).
    pub fn output_bulk(&mut self, conn: ConnRef) -> Option<&mut Buffers> {
        let c = self.conns.get_mut(conn.key).filter(|c| c.id == conn.id)?;
        if !c.dirty_bulk {
            c.dirty_bulk = true;
            self.dirty_bulk.push_back(conn.key);
        }
        Some(&mut c.buffers)
    }

    /// Up to `max` connections with live-delivery output, oldest first (their marks cleared).
    pub fn take_dirty_bulk(&mut self, max: usize) -> Vec<usize> {
        let n = max.min(self.dirty_bulk.len());
        let keys: Vec<usize> = self.dirty_bulk.drain(..n).collect();
        for key in &keys {
            if let Some(conn) = self.conns.get_mut(*key) {
                conn.dirty_bulk = false;
            }
        }
        keys
    }

    /// Connections closed since the last call.
    pub fn take_closed(&mut self) -> Vec<ConnRef> {
        std::mem::take(&mut self.closed)
    }

    pub fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// The connections with output queued this turn (their dirty marks are cleared).
    pub fn take_dirty(&mut self) -> Vec<usize> {
        let dirty = std::mem::take(&mut self.dirty);
        for key in &dirty {
            if let Some(conn) = self.conns.get_mut(*key) {
                conn.dirty = false;
            }
        }
        dirty
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty() || !self.dirty_bulk.is_empty()
    }

    /// Remembers that the poller saw the peer's side of `key` close (see
    /// [`Buffers::note_read_closed`]).
    pub fn note_read_closed(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            c.buffers.note_read_closed();
        }
    }

    /// Reads until `WouldBlock`, EOF, or `input_bytes_max` unconsumed bytes.
    pub fn read(&mut self, key: usize, input_bytes_max: usize) -> ReadOutcome {
        match self.conns.get_mut(key) {
            Some(c) if !c.sniffed => match self.sniff(key) {
                Some(outcome) => outcome,
                None => self.read(key, input_bytes_max),
            },
            Some(c) => {
                let plain = !c.stream.is_tls();
                let outcome = c.buffers.read_from(&mut c.stream, input_bytes_max, plain);
                if !c.vetted {
                    self.vet(key);
                }
                outcome
            }
            None => ReadOutcome::Closed,
        }
    }

    /// Writes what the kernel takes now. `Err` means the peer is gone.
    pub fn write(&mut self, key: usize) -> io::Result<()> {
        match self.conns.get_mut(key) {
            Some(c) => {
                c.stream.flush_tls()?;
                c.buffers.write_to(&mut c.stream)
            }
            None => Ok(()),
        }
    }

    /// True while any accepted connection still has output to send.
    pub fn has_pending_output(&self) -> bool {
        self.conns
            .iter()
            .any(|(_, c)| c.buffers.pending_output() > 0)
    }

    /// The earliest time the transport needs the loop: a link's reconnect or a greeting.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let links = self.links.iter().flatten().filter_map(PeerLink::wakeup);
        let greeting = self.greetings.front().map(|(at, _)| *at);
        let handshake = self.handshakes.front().map(|(at, _)| *at);
        links.chain(greeting).chain(handshake).min()
    }

    /// Sends `encode`'s frame on the link to `to`. Returns false if the link is down or full.
    pub fn send_to(&mut self, to: NodeId, encode: impl FnOnce(&mut Vec<u8>)) -> bool {
        match self.links.get_mut(to as usize) {
            Some(Some(link)) => link.send_with(encode),
            _ => false,
        }
    }

    /// Like `send_to`, but only on a link whose connection is up (snapshot chunks).
    pub fn send_if_connected(&mut self, to: NodeId, encode: impl FnOnce(&mut Vec<u8>)) -> bool {
        match self.links.get_mut(to as usize) {
            Some(Some(link)) if link.is_connected() => link.send_with(encode),
            _ => false,
        }
    }

    pub fn link_up(&self, to: NodeId) -> bool {
        matches!(self.links.get(to as usize), Some(Some(link)) if link.is_connected())
    }

    pub fn on_link_event(&mut self, j: usize, now: Instant) {
        let registry = self.poll.registry();
        if let Some(Some(link)) = self.links.get_mut(j) {
            link.on_event(registry, now);
        }
    }

    /// Dials links that are down and whose backoff has passed.
    pub fn connect_links(&mut self, now: Instant) {
        let registry = self.poll.registry();
        for link in self.links.iter_mut().flatten() {
            let token = Token(PEER_BASE + link.id as usize);
            let tls = self.tls.as_ref().map(|t| &t.peer_client);
            link.maybe_connect(registry, token, &self.hello, tls, now);
        }
    }

    pub fn flush_links(&mut self, now: Instant) {
        let registry = self.poll.registry();
        for link in self.links.iter_mut().flatten() {
            if link.has_output() {
                link.flush(registry, now);
            }
        }
    }
}
