//! A blocking client session: [`SessionCore`]'s exactly-once bookkeeping driven over a blocking
//! [`Connection`], with failover across the cluster.
//!
//! It owns the current connection and decides when to give it up: on `NotLeaderNotStored`, on
//! `TimeoutUnknown`, on a lost connection, and when requests stay unanswered past the request
//! timeout. Then it connects to the next node ([`NodePicker`]: the leader hint first, else
//! round-robin) and re-sends every pending request with its original session and seq, so the
//! state machine applies each at most once and answers a retry with the first result.
//! It never decides what an answer means for the caller's data; it hands completions back.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use super::account::Credentials;
use super::conn::Connection;
use super::core::{
    Completion, Event, Mutation, NodePicker, RetryPolicy, SessionCore, SessionStats,
    OPEN_SESSION_REQ_ID,
};
use super::proto::{Answer, ErrorKind, ProtoError, Request};
use super::tls::ClientTls;

/// Why a session operation failed for good.
#[derive(Debug)]
pub enum SessionError {
    /// The cluster no longer knows the session: open a new one. Pending requests are lost
    /// (they may or may not have been applied).
    Expired,
    /// No node answered usefully for the whole retry budget; the last error seen.
    Unavailable(io::Error),
    /// The request cannot be encoded (a field too long); nothing was sent.
    Invalid(ProtoError),
    /// A final answer other than the one the helper expects (e.g. `Rejected` for a post).
    Answer(Answer),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Expired => write!(f, "session expired"),
            SessionError::Unavailable(e) => write!(f, "cluster unavailable: {e}"),
            SessionError::Invalid(e) => write!(f, "invalid request: {e}"),
            SessionError::Answer(Answer::Error { kind, message, .. }) => {
                write!(f, "{}: {message}", kind.name())
            }
            SessionError::Answer(a) => write!(f, "unexpected answer {a:?}"),
        }
    }
}

impl std::error::Error for SessionError {}

impl From<SessionError> for io::Error {
    fn from(e: SessionError) -> io::Error {
        match e {
            SessionError::Unavailable(e) => e,
            e => io::Error::other(e),
        }
    }
}

/// A session with the cluster, over one connection at a time.
pub struct Session {
    nodes: Vec<SocketAddr>,
    /// Every connection of the session, first and after failover, uses TLS when set.
    tls: Option<ClientTls>,
    picker: NodePicker,
    core: SessionCore,
    /// `None` only between a lost connection and the next successful reconnect.
    conn: Option<Connection>,
    /// Completions read but not yet handed to the caller.
    done: VecDeque<Completion>,
    /// When the current connection last answered (or was made); the request timeout counts
    /// from here while requests are pending.
    last_progress: Instant,
    /// Requests answered `Overloaded` are re-sent at this time.
    deferred_until: Option<Instant>,
    /// The account to log in to on every new connection (`Session::login`).
    credentials: Option<Credentials>,
}

impl Session {
    /// Opens a session, starting with `nodes[first]` and failing over like any request.
    /// `nodes` is in node-id order, so a leader hint (a node id) indexes it.
    pub fn open(
        nodes: &[SocketAddr],
        first: usize,
        policy: RetryPolicy,
    ) -> Result<Session, SessionError> {
        Session::open_with(nodes, first, policy, None)
    }

    /// [`Session::open`], with every connection over TLS when `tls` is given.
    pub fn open_with(
        nodes: &[SocketAddr],
        first: usize,
        policy: RetryPolicy,
        tls: Option<ClientTls>,
    ) -> Result<Session, SessionError> {
        if nodes.is_empty() {
            return Err(SessionError::Unavailable(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no nodes given",
            )));
        }
        let mut picker = NodePicker::new(nodes.len(), first, policy);
        let mut target = picker.current();
        loop {
            let (hint, error) = match open_on(nodes[target], &policy, tls.as_ref()) {
                Ok((conn, session_id)) => {
                    picker.progress();
                    return Ok(Session {
                        nodes: nodes.to_vec(),
                        tls,
                        picker,
                        core: SessionCore::new(session_id),
                        conn: Some(conn),
                        done: VecDeque::new(),
                        last_progress: Instant::now(),
                        deferred_until: None,
                        credentials: None,
                    });
                }
                Err(OpenFailure::Retry { leader_hint, error }) => (leader_hint, error),
                Err(OpenFailure::Fatal(answer)) => return Err(SessionError::Answer(answer)),
            };
            let Some((next, pause)) = picker.failover(hint, Instant::now()) else {
                return Err(SessionError::Unavailable(error));
            };
            std::thread::sleep(pause);
            target = next;
        }
    }

    pub fn session_id(&self) -> u64 {
        self.core.session_id()
    }

    /// Submitted requests not yet answered for good.
    pub fn in_flight(&self) -> usize {
        self.core.in_flight()
    }

    pub fn lowest_unacked_seq(&self) -> u64 {
        self.core.lowest_unacked_seq()
    }

    pub fn stats(&self) -> SessionStats {
        self.core.stats
    }

    /// The node id (index into the node list) the session talks to now.
    pub fn node(&self) -> usize {
        self.picker.current()
    }

    /// The account the session logs in to after a failover, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    pub(super) fn set_credentials(&mut self, credentials: Option<Credentials>) {
        self.credentials = credentials;
    }

    /// The current connection, failing over first if there is none.
    pub(super) fn connection(&mut self) -> Result<&mut Connection, SessionError> {
        if self.conn.is_none() {
            let error = io::Error::new(io::ErrorKind::NotConnected, "not connected");
            self.failover(None, error)?;
        }
        self.conn
            .as_mut()
            .ok_or_else(|| SessionError::Unavailable(io::Error::other("not connected")))
    }

    /// Gives `mutation` the next seq and queues it; it is written by the next `flush` or `poll`.
    pub fn submit(&mut self, mutation: Mutation) -> Result<u64, SessionError> {
        if self.core.in_flight() == 0 {
            self.last_progress = Instant::now();
        }
        self.core.submit(mutation).map_err(SessionError::Invalid)
    }

    /// Writes every queued request, failing over if the connection is lost.
    pub fn flush(&mut self) -> Result<(), SessionError> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                self.failover(
                    None,
                    io::Error::new(io::ErrorKind::NotConnected, "not connected"),
                )?;
                continue;
            };
            let output = self.core.output();
            if !output.is_empty() {
                conn.queue_encoded(output);
                output.clear();
            }
            match conn.flush() {
                Ok(()) => return Ok(()),
                Err(e) => self.connection_lost(e)?,
            }
        }
    }

    /// Flushes, then waits until at least one request is answered for good or `deadline`
    /// passes, appending completions to `out`. Returns at once when nothing is in flight.
    /// Retries happen inside; an error means the session cannot go on.
    pub fn poll(
        &mut self,
        deadline: Option<Instant>,
        out: &mut Vec<Completion>,
    ) -> Result<(), SessionError> {
        loop {
            if !self.done.is_empty() {
                out.extend(self.done.drain(..));
                return Ok(());
            }
            if self.deferred_until.is_some_and(|t| Instant::now() >= t) {
                self.deferred_until = None;
                self.core.resend_deferred();
            }
            self.flush()?;
            if self.core.in_flight() == 0 {
                return Ok(());
            }
            let timeout_at = self.last_progress + self.picker.policy().request_timeout;
            let wake = [Some(timeout_at), deadline, self.deferred_until]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(timeout_at);
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            match conn.recv_until(Some(wake)) {
                Ok(Some(answer)) => {
                    self.handle(answer)?;
                    self.drain_buffered()?;
                }
                Ok(None) => {
                    let now = Instant::now();
                    if now >= timeout_at {
                        self.core.stats.request_timeouts += 1;
                        let error = io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no answer within the request timeout",
                        );
                        self.failover(None, error)?;
                    } else if deadline.is_some_and(|d| now >= d) {
                        return Ok(());
                    }
                }
                Err(e) => self.connection_lost(e)?,
            }
        }
    }

    /// Submits `mutation` and waits for its final answer. Completions of other requests that
    /// arrive meanwhile are kept for the next `poll`.
    pub fn call(&mut self, mutation: Mutation) -> Result<Answer, SessionError> {
        let seq = self.submit(mutation)?;
        let mut others = Vec::new();
        loop {
            let mut got = Vec::new();
            self.poll(None, &mut got)?;
            for completion in got {
                if completion.seq == seq {
                    self.done.extend(others);
                    return Ok(completion.answer);
                }
                others.push(completion);
            }
        }
    }

    /// Posts one chat message and returns its position in the chat log.
    pub fn post_blocking(
        &mut self,
        room: &str,
        nick: &str,
        text: &str,
    ) -> Result<u64, SessionError> {
        let post = Mutation::Post {
            room: room.to_owned(),
            nick: nick.to_owned(),
            text: text.to_owned(),
        };
        match self.call(post)? {
            Answer::Posted { position, .. } => Ok(position),
            other => Err(SessionError::Answer(other)),
        }
    }

    /// Forgets every pending request and returns their seqs (after [`SessionError::Expired`],
    /// or when the caller stops waiting): each may or may not have been applied.
    pub fn abandon(&mut self) -> Vec<u64> {
        self.deferred_until = None;
        self.done.clear();
        self.core.abandon()
    }

    /// The parts, for a caller that drives the session itself (the load generator's mio loop).
    /// Completions not yet polled are lost, so poll first.
    pub fn into_parts(self) -> (SessionCore, NodePicker, Option<Connection>) {
        (self.core, self.picker, self.conn)
    }

    fn drain_buffered(&mut self) -> Result<(), SessionError> {
        while let Some(conn) = self.conn.as_mut() {
            match conn.try_recv() {
                Ok(Some(answer)) => self.handle(answer)?,
                Ok(None) => break,
                Err(e) => {
                    self.connection_lost(e)?;
                    break;
                }
            }
        }
        Ok(())
    }

    fn handle(&mut self, answer: Answer) -> Result<(), SessionError> {
        let now = Instant::now();
        self.last_progress = now;
        match self.core.on_answer(answer) {
            Event::Completed(completion) => {
                self.picker.progress();
                self.done.push_back(completion);
            }
            Event::Failover { kind, leader_hint } => {
                let error = io::Error::other(format!(
                    "{} from node {}",
                    kind.name(),
                    self.picker.current()
                ));
                self.failover(leader_hint, error)?;
            }
            Event::Deferred => {
                self.deferred_until
                    .get_or_insert(now + self.picker.policy().overload_pause);
            }
            Event::Expired => return Err(SessionError::Expired),
            Event::Stale => {}
        }
        Ok(())
    }

    fn connection_lost(&mut self, error: io::Error) -> Result<(), SessionError> {
        self.core.stats.connection_errors += 1;
        self.failover(None, error)
    }

    /// Drops the current connection, connects to the next node and re-sends every pending
    /// request with its seq. Gives up when the retry budget is spent.
    fn failover(
        &mut self,
        leader_hint: Option<u64>,
        mut error: io::Error,
    ) -> Result<(), SessionError> {
        self.conn = None;
        self.deferred_until = None;
        let mut hint = leader_hint;
        loop {
            let Some((target, pause)) = self.picker.failover(hint.take(), Instant::now()) else {
                return Err(SessionError::Unavailable(error));
            };
            std::thread::sleep(pause);
            let policy = *self.picker.policy();
            match Connection::open(
                self.nodes[target],
                policy.connect_timeout,
                self.tls.as_ref(),
            ) {
                Ok(mut conn) => {
                    // A login belongs to a connection: log in again before any post.
                    if let Some(c) = &self.credentials {
                        match conn.login(&c.nick, &c.password) {
                            Ok(_) => {}
                            Err(SessionError::Unavailable(e)) => {
                                error = e;
                                self.core.stats.connection_errors += 1;
                                continue;
                            }
                            Err(refused) => return Err(refused),
                        }
                    }
                    self.core.reconnected();
                    let output = self.core.output();
                    conn.queue_encoded(output);
                    output.clear();
                    match conn.flush() {
                        Ok(()) => {
                            self.core.stats.reconnects += 1;
                            self.conn = Some(conn);
                            self.last_progress = Instant::now();
                            return Ok(());
                        }
                        Err(e) => error = e,
                    }
                }
                Err(e) => error = e,
            }
            self.core.stats.connection_errors += 1;
        }
    }
}

enum OpenFailure {
    Retry {
        leader_hint: Option<u64>,
        error: io::Error,
    },
    Fatal(Answer),
}

/// One attempt at `OpenSession` on one node.
fn open_on(
    addr: SocketAddr,
    policy: &RetryPolicy,
    tls: Option<&ClientTls>,
) -> Result<(Connection, u64), OpenFailure> {
    let retry = |error: io::Error| OpenFailure::Retry {
        leader_hint: None,
        error,
    };
    let mut conn = Connection::open(addr, policy.connect_timeout, tls).map_err(retry)?;
    conn.send(&Request::OpenSession {
        req_id: OPEN_SESSION_REQ_ID,
    })
    .map_err(retry)?;
    let deadline = Instant::now() + policy.request_timeout;
    loop {
        match conn.recv_until(Some(deadline)).map_err(retry)? {
            Some(Answer::SessionOpened {
                req_id: OPEN_SESSION_REQ_ID,
                session_id,
            }) => return Ok((conn, session_id)),
            Some(Answer::Error {
                kind,
                leader_hint,
                message,
                ..
            }) if matches!(
                kind,
                ErrorKind::NotLeaderNotStored | ErrorKind::TimeoutUnknown | ErrorKind::Overloaded
            ) =>
            {
                if kind == ErrorKind::Overloaded {
                    std::thread::sleep(policy.overload_pause);
                }
                let error = io::Error::other(format!("{} from {addr}: {message}", kind.name()));
                return Err(OpenFailure::Retry { leader_hint, error });
            }
            Some(answer @ Answer::Error { .. }) => return Err(OpenFailure::Fatal(answer)),
            Some(_) => {} // an answer to nothing we asked on this fresh connection: ignore
            None => {
                return Err(retry(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer to OpenSession",
                )))
            }
        }
    }
}
