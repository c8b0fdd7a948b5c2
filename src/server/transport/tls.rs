//! TLS on the transport: which accepted connections become TLS sessions, who may stay, and
//! the handshake deadline. Only in effect when the node has `--cert --key --ca`.
//!
//! - The first byte of an accepted connection is peeked: a TLS ClientHello (0x16) wraps the
//!   stream in a server session whose configuration asks for a client certificate (required
//!   with `--client-cert-auth`, optional otherwise, verified against the CA when presented).
//! - Peers must use TLS: the peer front-end asks [`Transport::check_peer`], which refuses a
//!   plain-text peer handshake and a certificate that does not name the id the peer claims.
//! - Clients: `--client-tls required` answers a plain client with one line and closes it;
//!   `off` does the same to a TLS client (peers still use TLS).
//! - A TLS handshake not finished within [`HANDSHAKE_TIMEOUT`] is closed (its memory freed).
//! - [`Transport::reload_tls`] (SIGHUP) rebuilds the configurations for new connections.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ConnRef, Proto, ReadOutcome, Transport, GREETING_DELAY};
use crate::raft::NodeId;
use crate::tls::{check_peer_id, ClientTlsMode, NodeTls, TLS_HANDSHAKE_RECORD};
use crate::wire::PEER_MAGIC;

/// How long an accepted TLS connection may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The line a client gets before it is closed, if its kind of connection is not allowed.
fn refusal(mode: ClientTlsMode, is_tls: bool) -> Option<&'static str> {
    match (mode, is_tls) {
        (ClientTlsMode::Required, false) => Some("err tls required: connect with TLS"),
        (ClientTlsMode::Off, true) => Some("err tls off: this node takes plain-text clients only"),
        _ => None,
    }
}

impl Transport {
    /// Turns TLS on (before the loop starts) with loaded configurations.
    pub fn set_tls(&mut self, tls: Option<NodeTls>) {
        self.tls = tls;
    }

    /// Reloads the certificate files (SIGHUP); new connections use them, open ones keep theirs.
    /// A bad file leaves the old configuration in place.
    pub fn reload_tls(&mut self) {
        let id = self.id;
        let Some(tls) = self.tls.as_mut() else {
            log::info!("node {id}: SIGHUP: no TLS configured, nothing to reload");
            return;
        };
        match tls.reload() {
            Ok(()) => log::info!("node {id}: SIGHUP: certificate files reloaded"),
            Err(e) => log::warn!("node {id}: SIGHUP: reload failed, keeping the old files: {e}"),
        }
    }

    /// Peeks the first byte of an accepted connection; a ClientHello makes it a TLS session.
    /// `Some(outcome)` if the caller must return that now, `None` to read as usual.
    pub(super) fn sniff(&mut self, key: usize) -> Option<ReadOutcome> {
        let id = self.id;
        let tls = self.tls.as_ref();
        let c = self.conns.get_mut(key)?;
        let Some(tls) = tls else {
            c.sniffed = true;
            return None;
        };
        let mut first = [0u8; 1];
        loop {
            let Some(tcp) = c.stream.tcp() else {
                return Some(ReadOutcome::Closed);
            };
            match tcp.peek(&mut first) {
                Ok(0) => return Some(ReadOutcome::Closed),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(ReadOutcome::Open),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Some(ReadOutcome::Closed),
            }
        }
        c.sniffed = true;
        if first[0] == TLS_HANDSHAKE_RECORD {
            if let Err(e) = c.stream.accept_tls(Arc::clone(&tls.client_server)) {
                log::warn!("node {id}: cannot start a TLS session: {e}");
                return Some(ReadOutcome::Closed);
            }
            let conn = ConnRef { key, id: c.id };
            self.handshakes
                .push_back((Instant::now() + HANDSHAKE_TIMEOUT, conn));
        }
        None
    }

    /// Looks at the first plaintext of a connection not yet vetted: a client whose kind of
    /// connection `--client-tls` does not allow gets one line and is closed.
    pub(super) fn vet(&mut self, key: usize) {
        let Some(mode) = self.tls.as_ref().map(|t| t.options.client_tls) else {
            return;
        };
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.proto != Proto::Unknown {
            c.vetted = true;
            return;
        }
        let input = c.buffers.input();
        if input.is_empty() {
            return;
        }
        let n = input.len().min(PEER_MAGIC.len());
        if input.get(..n) == PEER_MAGIC.get(..n) {
            // A peer (checked with its handshake by `check_peer`), or too few bytes to tell.
            c.vetted = n == PEER_MAGIC.len();
            return;
        }
        c.vetted = true;
        if let Some(line) = refusal(mode, c.stream.is_tls()) {
            let conn = ConnRef { key, id: c.id };
            self.refuse(conn, line);
        }
    }

    /// Writes `line`, drops the input and closes once the line is sent.
    fn refuse(&mut self, conn: ConnRef, line: &str) {
        let id = self.id;
        let Some(c) = self.get_mut(conn) else {
            return;
        };
        let kind = if c.stream.is_tls() {
            "TLS"
        } else {
            "plain-text"
        };
        log::info!("node {id}: refused a {kind} client: {line}");
        let pending = c.buffers.input().len();
        c.buffers.consume(pending);
        c.closing = true;
        if let Some(out) = self.output(conn) {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// For a silent connection whose greeting time came: true to greet it as telnet. A TLS
    /// session still handshaking waits; a client `--client-tls` does not allow is refused.
    pub(super) fn greet_or_hold(&mut self, conn: ConnRef, now: Instant) -> bool {
        let Some(mode) = self.tls.as_ref().map(|t| t.options.client_tls) else {
            return true;
        };
        let Some(c) = self.get_mut(conn) else {
            return false;
        };
        if c.stream.handshaking() {
            self.greetings.push_back((now + GREETING_DELAY, conn));
            return false;
        }
        c.vetted = true;
        match refusal(mode, c.stream.is_tls()) {
            Some(line) => {
                self.refuse(conn, line);
                false
            }
            None => true,
        }
    }

    /// Closes TLS connections whose handshake missed its deadline.
    pub(super) fn expire_handshakes(&mut self, now: Instant) {
        while let Some(&(at, conn)) = self.handshakes.front() {
            if at > now {
                break;
            }
            self.handshakes.pop_front();
            if self.get(conn).is_some_and(|c| c.stream.handshaking()) {
                log::info!(
                    "node {}: closed a TLS connection whose handshake did not finish in {:?}",
                    self.id,
                    HANDSHAKE_TIMEOUT
                );
                self.close(conn.key);
            }
        }
    }

    /// With TLS configured, whether `conn` may be the inbound link of node `claimed`: it must
    /// be a TLS session whose certificate (verified against the CA) names `node-<claimed>`.
    /// `Err` says why not, for the log.
    pub fn check_peer(&self, conn: ConnRef, claimed: NodeId) -> Result<(), String> {
        if self.tls.is_none() {
            return Ok(());
        }
        let Some(c) = self.get(conn) else {
            return Err("connection gone".into());
        };
        if !c.stream.is_tls() {
            return Err(format!(
                "plain-text handshake claiming node {claimed}: this node takes peers over TLS only"
            ));
        }
        check_peer_id(c.stream.peer_certificates(), claimed)
            .map_err(|e| format!("TLS peer claiming node {claimed}: {e}"))
    }
}
