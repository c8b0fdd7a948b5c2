//! The client half of exactly-once (Ongaro §6.3), without IO: one session's sequence numbers,
//! the requests not yet answered, and what each answer means for them.
//!
//! [`SessionCore`] owns the seq numbering, `lowest_unacked_seq`, the pending requests (kept
//! whole so a retry re-sends the SAME session and seq), and an output buffer of frames for the
//! current connection. [`NodePicker`] owns the choice of the next node after a failure and the
//! pause before trying it. Neither touches a socket nor sleeps: the blocking [`super::Session`]
//! and the load generator's mio loop drive them the same way:
//!
//! ```text
//! core.submit(mutation)             -> seq; its frame is appended to core.output()
//! write core.output() to the socket, then clear it
//! for each answer read:  match core.on_answer(answer) {
//!     Completed(c)         -> done (c.seq, c.answer); picker.progress()
//!     Failover{hint, ..}   -> (node, pause) = picker.failover(hint, now)?; connect; core.reconnected()
//!     Deferred             -> after a pause: core.resend_deferred()
//!     Expired              -> open a new session
//!     Stale                -> nothing (an answer for a request already answered)
//! }
//! connection lost or silent past the request timeout -> failover as above
//! ```
//!
//! A session sends each request with `req_id == seq`: a connection carries at most one attempt
//! of a seq at a time (a retry goes to a new connection, or to the same one only after its
//! previous attempt was answered), so an answer's req_id names its seq without a table.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::proto::{Answer, ErrorKind, ProtoError, Request, SessionSeq};

/// The req_id an `OpenSession` is sent with (seqs, and so mutation req_ids, start at 1).
pub const OPEN_SESSION_REQ_ID: u64 = u64::MAX;

/// A mutating request, before the session gives it a seq.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    Post {
        room: String,
        nick: String,
        text: String,
    },
    Set {
        key: String,
        value: String,
    },
    Cas {
        key: String,
        expected: Option<String>,
        new: String,
    },
    Del {
        key: String,
    },
}

impl Mutation {
    fn into_request(self, session: SessionSeq) -> Request {
        let req_id = session.seq;
        match self {
            Mutation::Post { room, nick, text } => Request::Post {
                req_id,
                session,
                room,
                nick,
                text,
            },
            Mutation::Set { key, value } => Request::Set {
                req_id,
                session,
                key,
                value,
            },
            Mutation::Cas { key, expected, new } => Request::Cas {
                req_id,
                session,
                key,
                expected,
                new,
            },
            Mutation::Del { key } => Request::Del {
                req_id,
                session,
                key,
            },
        }
    }
}

/// The final answer to one submitted request: `Posted`, `KvAck`, `CasFailed`, or an `Error`
/// of a kind retrying cannot fix (`Rejected`, `NotFound`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub seq: u64,
    pub answer: Answer,
}

/// What an answer means for the session, and so what the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A request is answered for good.
    Completed(Completion),
    /// `NotLeaderNotStored` or `TimeoutUnknown`: reconnect (to `leader_hint` if given) and call
    /// [`SessionCore::reconnected`], which re-sends every pending request with its seq.
    Failover {
        kind: ErrorKind,
        leader_hint: Option<u64>,
    },
    /// `Overloaded`: call [`SessionCore::resend_deferred`] after a pause.
    Deferred,
    /// The cluster no longer knows this session: pending requests will never be answered.
    Expired,
    /// An answer to no pending request (a late duplicate); nothing to do.
    Stale,
}

/// Counters of what the session lived through, for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub not_leader: u64,
    pub timeout_unknown: u64,
    pub overloaded: u64,
    /// Connections lost: IO errors, closes, undecodable bytes.
    pub connection_errors: u64,
    /// Connections given up because no answer came within the request timeout.
    pub request_timeouts: u64,
    /// Successful reconnects after a failure.
    pub reconnects: u64,
    /// Request frames sent again (same seq) after a failover or an Overloaded answer.
    pub resent: u64,
}

impl SessionStats {
    pub fn add(&mut self, other: &SessionStats) {
        self.not_leader += other.not_leader;
        self.timeout_unknown += other.timeout_unknown;
        self.overloaded += other.overloaded;
        self.connection_errors += other.connection_errors;
        self.request_timeouts += other.request_timeouts;
        self.reconnects += other.reconnects;
        self.resent += other.resent;
    }

    /// Every counted event, as (name, count), for reports.
    pub fn named(&self) -> [(&'static str, u64); 7] {
        [
            ("not_leader", self.not_leader),
            ("timeout_unknown", self.timeout_unknown),
            ("overloaded", self.overloaded),
            ("connection_errors", self.connection_errors),
            ("request_timeouts", self.request_timeouts),
            ("reconnects", self.reconnects),
            ("resent", self.resent),
        ]
    }
}

/// One session's exactly-once bookkeeping.
pub struct SessionCore {
    session_id: u64,
    /// The seq of `pending[0]`. Invariant: `base_seq + pending.len() == next_seq`, and
    /// `pending` is empty or starts with `Some` (answered requests at the front are popped).
    base_seq: u64,
    next_seq: u64,
    pending: VecDeque<Option<Request>>,
    in_flight: usize,
    /// Seqs answered `Overloaded`, to re-send after a pause.
    deferred: Vec<u64>,
    output: Vec<u8>,
    pub stats: SessionStats,
}

impl SessionCore {
    /// The bookkeeping of a session the cluster just opened.
    pub fn new(session_id: u64) -> SessionCore {
        SessionCore {
            session_id,
            base_seq: 1,
            next_seq: 1,
            pending: VecDeque::new(),
            in_flight: 0,
            deferred: Vec::new(),
            output: Vec::new(),
            stats: SessionStats::default(),
        }
    }

    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// Requests submitted and not answered for good.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Every seq below this one has been answered.
    pub fn lowest_unacked_seq(&self) -> u64 {
        debug_assert!(self.pending.front().is_none_or(Option::is_some));
        self.base_seq
    }

    /// The seq the next submitted request gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Frames to write to the current connection. The driver writes them and clears the buffer.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// Gives `mutation` the next seq and queues its frame. Refuses (consuming no seq) a
    /// mutation with a field too long for the protocol.
    pub fn submit(&mut self, mutation: Mutation) -> Result<u64, ProtoError> {
        let seq = self.next_seq;
        let session = SessionSeq {
            session_id: self.session_id,
            seq,
            lowest_unacked_seq: self.lowest_unacked_seq(),
        };
        let request = mutation.into_request(session);
        request.check_encodable()?;
        request.encode(&mut self.output);
        self.pending.push_back(Some(request));
        self.next_seq += 1;
        self.in_flight += 1;
        debug_assert_eq!(self.base_seq + self.pending.len() as u64, self.next_seq);
        Ok(seq)
    }

    /// The pending request with this seq, if any.
    pub fn pending(&self, seq: u64) -> Option<&Request> {
        let index = seq.checked_sub(self.base_seq)?;
        self.pending.get(usize::try_from(index).ok()?)?.as_ref()
    }

    /// Interprets one answer read from the current connection.
    pub fn on_answer(&mut self, answer: Answer) -> Event {
        let seq = answer.req_id();
        if self.pending(seq).is_none() {
            return Event::Stale;
        }
        match answer {
            Answer::Error {
                kind: kind @ (ErrorKind::NotLeaderNotStored | ErrorKind::TimeoutUnknown),
                leader_hint,
                ..
            } => {
                if kind == ErrorKind::NotLeaderNotStored {
                    self.stats.not_leader += 1;
                } else {
                    self.stats.timeout_unknown += 1;
                }
                Event::Failover { kind, leader_hint }
            }
            Answer::Error {
                kind: ErrorKind::Overloaded,
                ..
            } => {
                self.stats.overloaded += 1;
                self.deferred.push(seq);
                Event::Deferred
            }
            Answer::Error {
                kind: ErrorKind::SessionExpired,
                ..
            } => Event::Expired,
            answer => {
                self.complete(seq);
                Event::Completed(Completion { seq, answer })
            }
        }
    }

    fn complete(&mut self, seq: u64) {
        let index = (seq - self.base_seq) as usize;
        debug_assert!(self.pending[index].is_some());
        self.pending[index] = None;
        self.in_flight -= 1;
        while let Some(None) = self.pending.front() {
            self.pending.pop_front();
            self.base_seq += 1;
        }
        debug_assert_eq!(
            self.in_flight,
            self.pending.iter().filter(|p| p.is_some()).count()
        );
    }

    /// A new connection is up: drop whatever was queued for the old one and queue every pending
    /// request again, oldest first, with its original seq and the current `lowest_unacked_seq`.
    pub fn reconnected(&mut self) {
        self.output.clear();
        self.deferred.clear();
        let lowest_unacked_seq = self.base_seq;
        for request in self.pending.iter_mut().flatten() {
            if let Some(session) = request.session_mut() {
                session.lowest_unacked_seq = lowest_unacked_seq;
            }
            request.encode(&mut self.output);
            self.stats.resent += 1;
        }
    }

    /// Whether requests wait for [`SessionCore::resend_deferred`].
    pub fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Queues again the requests answered `Overloaded`, on the same connection.
    pub fn resend_deferred(&mut self) {
        let lowest_unacked_seq = self.base_seq;
        for seq in std::mem::take(&mut self.deferred) {
            let Some(index) = seq.checked_sub(self.base_seq) else {
                continue;
            };
            if let Some(Some(request)) = self.pending.get_mut(index as usize) {
                if let Some(session) = request.session_mut() {
                    session.lowest_unacked_seq = lowest_unacked_seq;
                }
                request.encode(&mut self.output);
                self.stats.resent += 1;
            }
        }
    }

    /// Forgets every pending request (the session expired, or the caller gives up on it) and
    /// returns their seqs.
    pub fn abandon(&mut self) -> Vec<u64> {
        let base = self.base_seq;
        let seqs = (base..)
            .zip(self.pending.drain(..))
            .filter_map(|(seq, p)| p.map(|_| seq))
            .collect();
        self.base_seq = self.next_seq;
        self.in_flight = 0;
        self.deferred.clear();
        self.output.clear();
        seqs
    }
}

/// How a session retries across the cluster.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub connect_timeout: Duration,
    /// With requests pending, a connection that answers nothing for this long is given up.
    pub request_timeout: Duration,
    /// Give up once failing without progress for this long.
    pub retry_budget: Duration,
    /// The pause after the first full round of failed nodes; it doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// The pause before re-sending requests answered `Overloaded`.
    pub overload_pause: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            retry_budget: Duration::from_secs(30),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(500),
            overload_pause: Duration::from_millis(5),
        }
    }
}

/// Which node to try next: the leader hint when there is one, else round-robin; a pause only
/// once every node has failed in a row (an election takes a few hundred ms, and a node that
/// refuses connections fails fast); and an end when nothing worked for the retry budget.
///
/// Node ids are indexes into the caller's node list: the list is in node-id order.
#[derive(Clone, Debug)]
pub struct NodePicker {
    node_count: usize,
    current: usize,
    failovers: u32,
    failing_since: Option<Instant>,
    policy: RetryPolicy,
}

impl NodePicker {
    pub fn new(node_count: usize, first: usize, policy: RetryPolicy) -> NodePicker {
        debug_assert!(node_count > 0);
        NodePicker {
            node_count: node_count.max(1),
            current: first % node_count.max(1),
            failovers: 0,
            failing_since: None,
            policy,
        }
    }

    /// The node the session is (or was last) connected to.
    pub fn current(&self) -> usize {
        self.current
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// An answer showed the cluster works: forget past failures.
    pub fn progress(&mut self) {
        self.failovers = 0;
        self.failing_since = None;
    }

    /// Picks the node to try next and the pause to take before trying it, or `None` when the
    /// retry budget is spent.
    pub fn failover(
        &mut self,
        leader_hint: Option<u64>,
        now: Instant,
    ) -> Option<(usize, Duration)> {
        let since = *self.failing_since.get_or_insert(now);
        if now.saturating_duration_since(since) > self.policy.retry_budget {
            return None;
        }
        self.current = match leader_hint {
            Some(hint) if (hint as usize) < self.node_count && hint as usize != self.current => {
                hint as usize
            }
            _ => (self.current + 1) % self.node_count,
        };
        self.failovers += 1;
        let rounds = self.failovers.saturating_sub(1) / self.node_count as u32;
        let pause = if rounds == 0 {
            Duration::ZERO
        } else {
            let doublings = (rounds - 1).min(16);
            (self.policy.backoff_min * (1u32 << doublings)).min(self.policy.backoff_max)
        };
        Some((self.current, pause))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(text: &str) -> Mutation {
        Mutation::Post {
            room: "general".into(),
            nick: "t".into(),
            text: text.into(),
        }
    }

    fn decode_all(buf: &[u8]) -> Vec<Request> {
        let mut at = 0;
        let mut out = Vec::new();
        while let Some((req, used)) = super::super::proto::decode_request(&buf[at..]).unwrap() {
            out.push(req);
            at += used;
        }
        assert_eq!(at, buf.len());
        out
    }

    #[test]
    fn seqs_and_lowest_unacked_follow_answers() {
        let mut core = SessionCore::new(7);
        for i in 1..=4 {
            assert_eq!(core.submit(post(&format!("m{i}"))), Ok(i));
        }
        let sent = decode_all(core.output());
        assert_eq!(
            sent.iter()
                .map(|r| *r.session().unwrap())
                .collect::<Vec<_>>(),
            (1..=4)
                .map(|seq| SessionSeq {
                    session_id: 7,
                    seq,
                    lowest_unacked_seq: 1
                })
                .collect::<Vec<_>>()
        );
        assert!(sent.iter().all(|r| r.req_id() == r.session().unwrap().seq));
        core.output().clear();

        // Out-of-order answers: 2 first leaves 1 unacked; then 1 moves the floor past 2.
        assert!(matches!(
            core.on_answer(Answer::Posted {
                req_id: 2,
                position: 11
            }),
            Event::Completed(Completion { seq: 2, .. })
        ));
        assert_eq!(core.lowest_unacked_seq(), 1);
        assert_eq!(
            core.on_answer(Answer::Posted {
                req_id: 2,
                position: 11
            }),
            Event::Stale
        );
        assert!(matches!(
            core.on_answer(Answer::Posted {
                req_id: 1,
                position: 10
            }),
            Event::Completed(_)
        ));
        assert_eq!((core.lowest_unacked_seq(), core.in_flight()), (3, 2));
        assert_eq!(
            core.on_answer(Answer::Posted {
                req_id: 99,
                position: 1
            }),
            Event::Stale
        );

        // A new request carries the new floor.
        core.submit(post("m5")).unwrap();
        let sent = decode_all(core.output());
        assert_eq!(
            sent[0].session(),
            Some(&SessionSeq {
                session_id: 7,
                seq: 5,
                lowest_unacked_seq: 3
            })
        );
    }

    #[test]
    fn failover_resends_every_pending_request_with_its_seq() {
        let mut core = SessionCore::new(3);
        for i in 1..=3 {
            core.submit(post(&format!("m{i}"))).unwrap();
        }
        core.output().clear();
        core.on_answer(Answer::Posted {
            req_id: 1,
            position: 1,
        });
        let event = core.on_answer(Answer::Error {
            req_id: 3,
            kind: ErrorKind::TimeoutUnknown,
            leader_hint: Some(2),
            message: String::new(),
        });
        assert_eq!(
            event,
            Event::Failover {
                kind: ErrorKind::TimeoutUnknown,
                leader_hint: Some(2)
            }
        );
        core.reconnected();
        let resent = decode_all(core.output());
        assert_eq!(resent.len(), 2);
        for (req, seq) in resent.iter().zip([2, 3]) {
            let Request::Post {
                req_id,
                session,
                text,
                ..
            } = req
            else {
                panic!()
            };
            assert_eq!(
                (*req_id, *session),
                (
                    seq,
                    SessionSeq {
                        session_id: 3,
                        seq,
                        lowest_unacked_seq: 2
                    }
                )
            );
            assert_eq!(text, &format!("m{seq}"));
        }
        assert_eq!(core.stats.resent, 2);
        assert_eq!(core.stats.timeout_unknown, 1);
    }

    #[test]
    fn overloaded_requests_wait_for_resend() {
        let mut core = SessionCore::new(1);
        core.submit(post("a")).unwrap();
        core.output().clear();
        assert_eq!(
            core.on_answer(Answer::Error {
                req_id: 1,
                kind: ErrorKind::Overloaded,
                leader_hint: None,
                message: String::new()
            }),
            Event::Deferred
        );
        assert!(core.output().is_empty() && core.has_deferred());
        core.resend_deferred();
        assert_eq!(decode_all(core.output()).len(), 1);
        assert!(!core.has_deferred());
    }

    #[test]
    fn final_errors_complete_and_expiry_is_reported() {
        let mut core = SessionCore::new(1);
        core.submit(post("a")).unwrap();
        core.submit(post("b")).unwrap();
        let rejected = Answer::Error {
            req_id: 1,
            kind: ErrorKind::Rejected,
            leader_hint: None,
            message: "bad room".into(),
        };
        assert_eq!(
            core.on_answer(rejected.clone()),
            Event::Completed(Completion {
                seq: 1,
                answer: rejected
            })
        );
        let expired = Answer::Error {
            req_id: 2,
            kind: ErrorKind::SessionExpired,
            leader_hint: None,
            message: String::new(),
        };
        assert_eq!(core.on_answer(expired), Event::Expired);
        assert_eq!(core.abandon(), vec![2]);
        assert_eq!(
            (core.in_flight(), core.lowest_unacked_seq(), core.next_seq()),
            (0, 3, 3)
        );
    }

    #[test]
    fn too_long_mutations_consume_no_seq() {
        let mut core = SessionCore::new(1);
        assert!(core.submit(post(&"x".repeat(70_000))).is_err());
        assert_eq!((core.next_seq(), core.in_flight()), (1, 0));
        assert!(core.output().is_empty());
    }

    #[test]
    fn picker_prefers_the_hint_then_round_robin_and_backs_off_per_round() {
        let policy = RetryPolicy {
            retry_budget: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        let mut p = NodePicker::new(3, 0, policy);
        let t0 = Instant::now();
        assert_eq!(p.failover(Some(2), t0), Some((2, Duration::ZERO)));
        assert_eq!(
            p.failover(Some(2), t0),
            Some((0, Duration::ZERO)),
            "a hint naming the failing node itself is ignored"
        );
        assert_eq!(
            p.failover(Some(7), t0),
            Some((1, Duration::ZERO)),
            "an unknown node id is ignored"
        );
        assert_eq!(p.failover(None, t0), Some((2, policy.backoff_min)));
        assert_eq!(p.failover(None, t0).map(|x| x.0), Some(0));
        assert_eq!(p.failover(None, t0).map(|x| x.0), Some(1));
        assert_eq!(p.failover(None, t0), Some((2, policy.backoff_min * 2)));
        assert_eq!(
            p.failover(None, t0 + Duration::from_secs(11)),
            None,
            "budget spent"
        );
        p.progress();
        assert_eq!(
            p.failover(None, t0 + Duration::from_secs(11)),
            Some((0, Duration::ZERO))
        );
    }
}
