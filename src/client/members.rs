//! Membership over the binary protocol (issue 16): `Members`, `AddMember`, `PromoteMember`,
//! `RemoveMember` on one [`Connection`], and [`members`], [`change_members`] that find the
//! leader themselves.
//!
//! A change is answered `MemberOk` once its entry is committed, or an `Error`: a follower
//! refuses with the leader's id (`leader_hint`), and [`change_members`] asks that node next.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::conn::{resolve, Connection, CONNECT_TIMEOUT};
use super::proto::{Answer, ErrorKind, MemberList, Request};
use super::tls::ClientTls;

/// One change an operator asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// A new learner at `ip:port`.
    Add {
        id: u64,
        addr: String,
    },
    Promote(u64),
    Remove(u64),
}

impl MemberChange {
    fn request(&self, req_id: u64) -> Request {
        match self {
            MemberChange::Add { id, addr } => Request::AddMember {
                req_id,
                id: *id,
                addr: addr.clone(),
            },
            MemberChange::Promote(id) => Request::PromoteMember { req_id, id: *id },
            MemberChange::Remove(id) => Request::RemoveMember { req_id, id: *id },
        }
    }
}

/// Why a change was not made: the node's answer, or no node could be asked.
#[derive(Debug)]
pub enum MemberError {
    /// The node refused (`Rejected`: the reason, e.g. a learner not caught up) or could not
    /// tell (`NotLeaderNotStored`, `TimeoutUnknown`): its kind and words.
    Refused {
        kind: ErrorKind,
        message: String,
    },
    Unavailable(io::Error),
}

impl std::fmt::Display for MemberError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemberError::Refused { kind, message } => write!(f, "{}: {message}", kind.name()),
            MemberError::Unavailable(e) => write!(f, "no answer: {e}"),
        }
    }
}

impl std::error::Error for MemberError {}

impl Connection {
    /// The configuration the node is in (with the cluster id and the bootstrap list).
    pub fn members(&mut self) -> io::Result<MemberList> {
        let req_id = self.next_req_id();
        match self.call(&Request::Members { req_id })? {
            Answer::MemberList { list, .. } => Ok(list),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected answer {other:?}"),
            )),
        }
    }

    /// Asks this node for `change`; `Ok` with the node's words once it is committed. The
    /// error's `leader_hint` is returned beside it, for [`change_members`].
    pub fn change_members(
        &mut self,
        change: &MemberChange,
    ) -> Result<String, (MemberError, Option<u64>)> {
        let request = change.request(self.next_req_id());
        let refused = |kind, message| MemberError::Refused { kind, message };
        match self.call(&request) {
            Ok(Answer::MemberOk { message, .. }) => Ok(message),
            Ok(Answer::Error {
                kind,
                leader_hint,
                message,
                ..
            }) => Err((refused(kind, message), leader_hint)),
            Ok(other) => Err((
                MemberError::Unavailable(io::Error::other(format!("unexpected {other:?}"))),
                None,
            )),
            Err(e) => Err((MemberError::Unavailable(e), None)),
        }
    }
}

/// The configuration as node `addr` sees it.
pub fn members(addr: SocketAddr, tls: Option<&ClientTls>) -> io::Result<MemberList> {
    Connection::open(resolve(addr)?, CONNECT_TIMEOUT, tls)?.members()
}

/// Runs `change` on the leader, starting at `addr`: a follower's refusal names the leader,
/// whose address its member list gives; retried while there is no leader, for up to
/// `patience`. A `Rejected` answer (the change breaks a rule) is returned at once.
pub fn change_members(
    addr: SocketAddr,
    change: &MemberChange,
    tls: Option<&ClientTls>,
    patience: Duration,
) -> Result<String, MemberError> {
    let deadline = Instant::now() + patience;
    let mut at = addr;
    loop {
        let attempt = Connection::open(at, CONNECT_TIMEOUT, tls)
            .map_err(|e| (MemberError::Unavailable(e), None))
            .and_then(|mut conn| {
                let result = conn.change_members(change);
                if let Err((_, Some(leader))) = &result {
                    // Where the leader is, from the node that named it.
                    let list = conn.members().ok();
                    let found = list.and_then(|l| {
                        l.members
                            .into_iter()
                            .find(|m| m.id == *leader)
                            .and_then(|m| m.addr.parse().ok())
                    });
                    if let Some(leader_addr) = found {
                        at = leader_addr;
                    }
                }
                result
            });
        match attempt {
            Ok(words) => return Ok(words),
            Err((
                e @ MemberError::Refused {
                    kind: ErrorKind::Rejected,
                    ..
                },
                _,
            )) => return Err(e),
            Err((e, _)) if Instant::now() >= deadline => return Err(e),
            Err((_, hint)) => {
                if hint.is_none() {
                    at = addr;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
