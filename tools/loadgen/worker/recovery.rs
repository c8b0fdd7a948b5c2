//! How a connection survives: opening a session, failing over to another node with the same
//! session and seqs, and starting a new session when the cluster forgot the old one.

use std::io;
use std::time::Instant;

use mio::{Registry, Token};
use raftchat::client::{connect_client_stream, NodePicker, Session, SessionCore};

use super::stream::Stream;
use super::{log_debug, Plan, Worker};

/// Opens a session on `first` (failing over as needed) and hands it to a mio stream.
pub fn open_session(
    plan: &Plan,
    first: usize,
    registry: &Registry,
    token: Token,
) -> Result<(SessionCore, NodePicker, Stream), String> {
    let session = Session::open_with(&plan.nodes, first, plan.policy, plan.tls.clone())
        .map_err(|e| format!("cannot open a session: {e}"))?;
    let (core, picker, conn) = session.into_parts();
    let conn = conn.ok_or("session without a connection")?;
    let (stream, leftover) = conn.into_parts().map_err(|e| e.to_string())?;
    debug_assert!(
        leftover.is_empty(),
        "nothing was pipelined before the hand-over"
    );
    let stream = Stream::adopt(registry, token, stream).map_err(|e| e.to_string())?;
    Ok((core, picker, stream))
}

impl Worker {
    pub fn connection_lost(&mut self, error: io::Error) -> Result<(), String> {
        self.core.stats.connection_errors += 1;
        log_debug(self.conn, &format!("connection lost: {error}"));
        self.failover(None)
    }

    /// Reconnects (leader hint first, else round-robin) and re-sends every pending request
    /// with its seq. Connecting blocks the shard's thread: the other connections on it wait
    /// (in a failover they are usually reconnecting too).
    pub fn failover(&mut self, leader_hint: Option<u64>) -> Result<(), String> {
        self.generation += 1;
        // Reads are not retried (they changed nothing): the ones in flight count as failed.
        self.result.failures.other_answer += self.reads.len() as u64;
        self.reads.clear();
        let _ = self.registry.deregister(self.stream.socket());
        self.input.clear();
        self.deferred_until = None;
        let mut hint = leader_hint;
        loop {
            let Some((target, pause)) = self.picker.failover(hint.take(), Instant::now()) else {
                self.result.failures.unavailable += 1;
                return Err(format!(
                    "connection {}: no node answered for {:?}",
                    self.conn, self.plan.policy.retry_budget
                ));
            };
            std::thread::sleep(pause);
            let connected = connect_client_stream(
                self.plan.nodes[target],
                self.plan.policy.connect_timeout,
                self.plan.tls.as_ref(),
            )
            .and_then(|s| Stream::adopt(&self.registry, self.token, s));
            match connected {
                Ok(stream) => {
                    log_debug(self.conn, &format!("now on node {target}"));
                    self.stream = stream;
                    self.core.reconnected();
                    self.core.stats.reconnects += 1;
                    self.last_progress = Instant::now();
                    return Ok(());
                }
                Err(e) => {
                    self.core.stats.connection_errors += 1;
                    log_debug(self.conn, &format!("cannot connect to node {target}: {e}"));
                }
            }
        }
    }

    /// The cluster forgot the session: what was in flight may or may not be in the log. Opens
    /// a new session and carries on.
    pub fn session_expired(&mut self) -> Result<(), String> {
        self.result.failures.session_expired += 1;
        for seq in self.core.abandon() {
            if let Some((n, _)) = self.in_flight.remove(&seq) {
                self.result.unknown.push(n);
            }
        }
        debug_assert!(self.in_flight.is_empty());
        self.result.session.add(&self.core.stats);
        let _ = self.registry.deregister(self.stream.socket());
        self.input.clear();
        self.deferred_until = None;
        self.generation += 1;
        let (core, picker, stream) = open_session(
            &self.plan,
            self.picker.current(),
            &self.registry,
            self.token,
        )?;
        (self.core, self.picker, self.stream) = (core, picker, stream);
        self.last_progress = Instant::now();
        Ok(())
    }
}
