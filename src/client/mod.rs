//! The binary client protocol (documented, frame by frame, in [`proto`]) and a small blocking
//! client library, for the load generator and for tests, so that nobody encodes frames by hand
//! twice.
//!
//! - [`proto`]: every frame, both directions, and the preamble. The server decodes requests and
//!   encodes answers with it; clients do the reverse.
//! - [`Connection`]: one blocking connection to one node, with batched writes and buffered reads.
//! - [`ClientTls`]: TLS to the nodes (the CA to trust, optionally a client certificate), given to
//!   [`Connection::open`], [`Session::open_with`] and the `*_over` reads; [`ClientStream`] is the
//!   plain or TLS byte stream underneath a connection.
//! - [`SessionCore`] and [`NodePicker`]: exactly-once bookkeeping (seq, `lowest_unacked_seq`,
//!   pending requests) and the choice of the next node, without IO.
//! - [`Session`]: the two above driven over blocking sockets, with failover and retries that
//!   keep the SAME session and seq.
//! - [`Connection::login`], [`Session::login`] and their `register`, `logout`, `passwd`:
//!   accounts (a login belongs to a connection; a session logs in again after a failover).
//! - [`members`], [`change_members`], [`Connection::members`]: the configuration and changes
//!   to it (`add`, `promote`, `remove`), found on the leader.
//! - [`status`], [`read_log_all`], [`read_log_pages`], [`cluster_status`]: one-shot reads.
//!
//! This module never runs inside a node and knows nothing of Raft beyond what answers say.
//!
//! ```no_run
//! use raftchat::client::{read_log_all, RetryPolicy, Session};
//! let nodes = ["127.0.0.1:20000".parse().unwrap(), "127.0.0.1:20001".parse().unwrap()];
//! let mut session = Session::open(&nodes, 0, RetryPolicy::default())?;
//! let position = session.post_blocking("general", "alice", "Hello, Raft!")?;
//! let log = read_log_all(nodes[1])?;
//! assert_eq!(log[position as usize - 1].text, "Hello, Raft!");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Over TLS (the node's certificate must name the IP dialled, as `cluster --tls` writes them):
//!
//! ```no_run
//! use raftchat::client::{read_log_all_over, ClientTls, RetryPolicy, Session};
//! let nodes = ["127.0.0.1:20000".parse().unwrap()];
//! let tls = ClientTls::trusting("data/certs/ca.pem".as_ref())?;
//! let mut session = Session::open_with(&nodes, 0, RetryPolicy::default(), Some(tls.clone()))?;
//! session.post_blocking("general", "alice", "Hello over TLS")?;
//! let log = read_log_all_over(nodes[0], Some(&tls))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod account;
mod conn;
mod core;
mod members;
pub use crate::proto;
mod session;
mod tls;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

pub use self::account::{Credentials, ACCOUNT_REQ_ID_BIT};
pub use self::conn::{
    connect_client_stream, connect_stream, is_timeout, resolve, Connection, CONNECT_TIMEOUT,
    READ_TIMEOUT, WRITE_TIMEOUT,
};
pub use self::core::{
    Completion, Event, Mutation, NodePicker, RetryPolicy, SessionCore, SessionStats,
    OPEN_SESSION_REQ_ID,
};
pub use self::members::{change_members, members, MemberChange, MemberError};
pub use self::proto::{Answer, ErrorKind, LogMessage, NodeStatus, Request, Role};
pub use self::session::{Session, SessionError};
pub use self::tls::{ClientStream, ClientTls};

/// Messages asked for per `ReadLog` page (the node may send fewer, to stay under 1 MiB).
pub const READ_LOG_PAGE_MAX: u32 = 4096;
/// How often a one-shot read is retried on `NotLeaderNotStored`, `TimeoutUnknown` or
/// `Overloaded` (an election in progress), and the pause between tries: 5 s in all.
const READ_ATTEMPTS_MAX: u32 = 100;
const READ_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Sends the request `make(req_id)` on `conn`, retrying the retryable errors on the same node.
fn call_retrying(conn: &mut Connection, make: impl Fn(u64) -> Request) -> io::Result<Answer> {
    let mut attempt = 0;
    loop {
        let req_id = conn.next_req_id();
        match conn.call(&make(req_id))? {
            Answer::Error { kind, message, .. }
                if matches!(
                    kind,
                    ErrorKind::NotLeaderNotStored
                        | ErrorKind::TimeoutUnknown
                        | ErrorKind::Overloaded
                ) =>
            {
                attempt += 1;
                if attempt >= READ_ATTEMPTS_MAX {
                    return Err(io::Error::other(format!(
                        "{} from {}: {message}",
                        kind.name(),
                        conn.peer_addr()
                    )));
                }
                std::thread::sleep(READ_RETRY_PAUSE);
            }
            Answer::Error { kind, message, .. } => {
                return Err(io::Error::other(format!(
                    "{} from {}: {message}",
                    kind.name(),
                    conn.peer_addr()
                )))
            }
            answer => return Ok(answer),
        }
    }
}

fn unexpected(answer: &Answer) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected answer {answer:?}"),
    )
}

/// One node's view of itself and the cluster.
pub fn status<A: ToSocketAddrs>(addr: A) -> io::Result<NodeStatus> {
    status_over(addr, None)
}

/// [`status`], over TLS when `tls` is given.
pub fn status_over<A: ToSocketAddrs>(addr: A, tls: Option<&ClientTls>) -> io::Result<NodeStatus> {
    let mut conn = Connection::open(resolve(addr)?, CONNECT_TIMEOUT, tls)?;
    match call_retrying(&mut conn, |req_id| Request::Status { req_id })? {
        Answer::StatusReply { status, .. } => Ok(status),
        other => Err(unexpected(&other)),
    }
}

/// The whole chat log as node `addr` serves it (linearizable reads, page by page), checking
/// that positions strictly increase (1, 2, 3, ... without a gap unless the cluster runs with
/// `--retain-messages`, whose dropped messages leave holes).
pub fn read_log_all<A: ToSocketAddrs>(addr: A) -> io::Result<Vec<LogMessage>> {
    read_log_all_over(addr, None)
}

/// [`read_log_all`], over TLS when `tls` is given.
pub fn read_log_all_over<A: ToSocketAddrs>(
    addr: A,
    tls: Option<&ClientTls>,
) -> io::Result<Vec<LogMessage>> {
    let mut log = Vec::new();
    read_log_pages_over(addr, tls, |page| log.extend(page))?;
    Ok(log)
}

/// Like [`read_log_all`], but hands each page to `on_page` instead of keeping the whole log,
/// so a caller checking millions of messages holds one page at a time. Returns the number of
/// messages read.
pub fn read_log_pages<A: ToSocketAddrs>(
    addr: A,
    on_page: impl FnMut(Vec<LogMessage>),
) -> io::Result<u64> {
    read_log_pages_over(addr, None, on_page)
}

/// [`read_log_pages`], over TLS when `tls` is given.
pub fn read_log_pages_over<A: ToSocketAddrs>(
    addr: A,
    tls: Option<&ClientTls>,
    mut on_page: impl FnMut(Vec<LogMessage>),
) -> io::Result<u64> {
    let mut conn = Connection::open(resolve(addr)?, CONNECT_TIMEOUT, tls)?;
    let mut next_position = 1;
    let mut read = 0;
    loop {
        let from_position = next_position;
        let answer = call_retrying(&mut conn, |req_id| Request::ReadLog {
            req_id,
            from_position,
            max_messages: READ_LOG_PAGE_MAX,
        })?;
        let Answer::LogChunk {
            total, messages, ..
        } = answer
        else {
            return Err(unexpected(&answer));
        };
        if messages.is_empty() {
            if from_position > total {
                return Ok(read);
            }
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("empty page at position {from_position} of a log of {total} messages"),
            ));
        }
        let mut expected = from_position;
        for message in &messages {
            if message.position < expected || message.position > total {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "page starting at {from_position} has position {} where {expected} or later belongs",
                        message.position
                    ),
                ));
            }
            expected = message.position + 1;
        }
        next_position = expected;
        read += messages.len() as u64;
        on_page(messages);
        if next_position > total {
            return Ok(read);
        }
    }
}

/// [`status`] of every node, in node order.
pub fn cluster_status(nodes: &[SocketAddr]) -> Vec<io::Result<NodeStatus>> {
    cluster_status_over(nodes, None)
}

/// [`cluster_status`], over TLS when `tls` is given.
pub fn cluster_status_over(
    nodes: &[SocketAddr],
    tls: Option<&ClientTls>,
) -> Vec<io::Result<NodeStatus>> {
    nodes.iter().map(|addr| status_over(addr, tls)).collect()
}

/// The leader and term the answering nodes agree on: the highest term any node reports, and
/// the node leading in it (a node reporting itself leader, else any node's leader field).
/// `(None, 0)` when no node answered.
pub fn leader_and_term(statuses: &[io::Result<NodeStatus>]) -> (Option<u64>, u64) {
    let answered: Vec<&NodeStatus> = statuses.iter().filter_map(|s| s.as_ref().ok()).collect();
    let Some(term) = answered.iter().map(|s| s.term).max() else {
        return (None, 0);
    };
    let in_term = || answered.iter().filter(|s| s.term == term);
    let leader = in_term()
        .find(|s| s.role == Role::Leader)
        .map(|s| s.node_id)
        .or_else(|| in_term().find_map(|s| s.leader));
    (leader, term)
}
