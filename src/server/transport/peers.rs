//! Outbound links to the other members: connect, handshake, send, reconnect with backoff.
//!
//! Each node sends its Raft messages on the connection it dialled to a peer and receives on the
//! connections peers dialled to it, so no pair ever has to pick one of two connections. A link
//! that is down drops what it is given: Raft retransmits, and a full buffer means the peer is
//! not keeping up anyway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::conn::{Buffers, ReadOutcome};
use super::stream::Stream;
use crate::raft::NodeId;
use crate::tls::{config::peer_server_name, TlsStream};
use crate::wire::{self, Handshake};

/// Unsent bytes one link may hold before it drops messages.
const LINK_OUTPUT_BYTES_MAX: usize = 64 << 20;
const BACKOFF_MIN_MS: u64 = 50;
const BACKOFF_MAX_MS: u64 = 2000;

pub struct PeerLink {
    pub id: NodeId,
    addr: SocketAddr,
    /// Plain TCP, or with TLS configured a TLS session presenting this node's certificate.
    stream: Option<Stream>,
    /// True once the TCP connect completed.
    connected: bool,
    buffers: Buffers,
    retry_at: Instant,
    backoff_ms: u64,
    /// Logged once per outage, not once per retry.
    reported_down: bool,
    /// Before the first connection, a refused connect is a peer still starting: not news.
    ever_up: bool,
    /// The peer's last refusal of this node, logged once (not once per retry).
    refusal_logged: Option<String>,
}

impl PeerLink {
    pub fn new(id: NodeId, addr: SocketAddr, now: Instant) -> PeerLink {
        PeerLink {
            id,
            addr,
            stream: None,
            connected: false,
            buffers: Buffers::default(),
            retry_at: now,
            backoff_ms: BACKOFF_MIN_MS,
            reported_down: false,
            ever_up: false,
            refusal_logged: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the link for good (its member left or moved).
    pub fn close(&mut self, registry: &Registry) {
        if let Some(mut stream) = self.stream.take() {
            if let Some(tcp) = stream.tcp() {
                let _ = registry.deregister(tcp);
            }
        }
        self.connected = false;
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// When this link next wants attention (a reconnect), if it is down.
    pub fn wakeup(&self) -> Option<Instant> {
        self.stream.is_none().then_some(self.retry_at)
    }

    /// Starts a connection attempt if the link is down and its backoff has passed.
    pub fn maybe_connect(
        &mut self,
        registry: &Registry,
        token: Token,
        hello: &Handshake,
        tls: Option<&Arc<rustls::ClientConfig>>,
        now: Instant,
    ) {
        if self.stream.is_some() || now < self.retry_at {
            return;
        }
        match TcpStream::connect(self.addr) {
            Ok(mut stream) => {
                if let Err(e) =
                    registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                {
                    log::warn!("cannot register link to node {}: {e}", self.id);
                    self.schedule_retry(now);
                    return;
                }
                let _ = stream.set_nodelay(true);
                let stream = match tls {
                    None => Stream::Plain(stream),
                    Some(config) => {
                        match TlsStream::client(
                            Arc::clone(config),
                            peer_server_name(self.id),
                            stream,
                        ) {
                            Ok(t) => Stream::Tls(Box::new(t)),
                            Err(e) => {
                                self.note_down(&format!("TLS setup failed: {e}"));
                                self.schedule_retry(now);
                                return;
                            }
                        }
                    }
                };
                self.buffers.clear();
                // With TLS the handshake is plaintext queued until the TLS handshake is done.
                wire::encode_handshake(hello, self.buffers.output());
                self.stream = Some(stream);
                self.connected = false;
            }
            Err(e) => {
                self.note_down(&format!("connect failed: {e}"));
                self.schedule_retry(now);
            }
        }
    }

    fn schedule_retry(&mut self, now: Instant) {
        self.retry_at = now + Duration::from_millis(self.backoff_ms);
        self.backoff_ms = (self.backoff_ms * 2).min(BACKOFF_MAX_MS);
    }

    fn note_down(&mut self, why: &str) {
        if !self.reported_down {
            if self.ever_up {
                log::info!("link to node {} at {} is down: {why}", self.id, self.addr);
            } else {
                log::debug!(
                    "link to node {} at {} not up yet: {why}",
                    self.id,
                    self.addr
                );
            }
            self.reported_down = true;
        }
    }

    fn reset(&mut self, registry: &Registry, why: &str, now: Instant) {
        if let Some(mut stream) = self.stream.take() {
            if let Some(tcp) = stream.tcp() {
                let _ = registry.deregister(tcp);
            }
        }
        self.connected = false;
        self.buffers.clear();
        self.note_down(why);
        self.schedule_retry(now);
    }

    /// Handles a readiness event on this link's socket.
    pub fn on_event(&mut self, registry: &Registry, now: Instant) {
        let Some(stream) = self.stream.as_mut().and_then(Stream::tcp) else {
            return;
        };
        if !self.connected {
            if let Ok(Some(e)) | Err(e) = stream.take_error() {
                return self.reset(registry, &format!("connect failed: {e}"), now);
            }
            match stream.peer_addr() {
                Ok(_) => {
                    self.connected = true;
                    self.backoff_ms = BACKOFF_MIN_MS;
                    if self.reported_down && self.ever_up {
                        log::info!("link to node {} at {} is up", self.id, self.addr);
                    } else {
                        log::debug!("link to node {} at {} is up", self.id, self.addr);
                    }
                    self.reported_down = false;
                    self.ever_up = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => return,
                Err(e) => return self.reset(registry, &format!("connect failed: {e}"), now),
            }
        }
        // The peer never sends on this connection; reading only notices that it went away.
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let plain = !stream.is_tls();
        let outcome = self.buffers.read_from(stream, 4096, plain);
        // A peer never sends on this connection, except the reason it refused it.
        if let Some(reason) = wire::decode_refusal(self.buffers.input()) {
            if self.refusal_logged.as_deref() != Some(reason.as_str()) {
                log::warn!("link to node {} at {}: {reason}", self.id, self.addr);
                self.refusal_logged = Some(reason);
            }
        }
        let input_len = self.buffers.input().len();
        self.buffers.consume(input_len);
        if outcome == ReadOutcome::Closed {
            return self.reset(registry, "closed by peer", now);
        }
        self.flush(registry, now);
    }

    /// Appends one frame (written by `encode`) if the link is up and has room; drops it otherwise.
    pub fn send_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> bool {
        if self.stream.is_none() || self.buffers.pending_output() > LINK_OUTPUT_BYTES_MAX {
            return false;
        }
        encode(self.buffers.output());
        true
    }

    pub fn has_output(&self) -> bool {
        self.connected
            && (self.buffers.pending_output() > 0
                || self.stream.as_ref().is_some_and(Stream::is_tls))
    }

    /// Writes what the kernel accepts now; the rest waits for writability.
    pub fn flush(&mut self, registry: &Registry, now: Instant) {
        if !self.connected {
            return;
        }
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        if let Err(e) = stream
            .flush_tls()
            .and_then(|()| self.buffers.write_to(stream))
        {
            self.reset(registry, &format!("write failed: {e}"), now);
        }
    }
}
