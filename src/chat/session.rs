//! Client sessions: the table that makes replicated writes exactly-once (Ongaro's dissertation
//! §6.3).
//!
//! It owns, per open session, the outcomes of the requests the client has not yet acknowledged,
//! when the session was last active, and the log time that expiry is measured in. It never
//! applies an operation (the state machine does, between [`Sessions::admit`] and
//! [`Sessions::retain`]), never reads a clock and never does IO.
//!
//! # Rules, in the order [`Sessions::admit`] applies them
//!
//! 1. A session that is unknown, or idle longer than the expiry, is expired: `SessionExpired`.
//! 2. Any request on a live session makes it active at the current log time.
//! 3. `seq == 0` or `lowest_unacked_seq > seq` is a client bug: `Rejected`, nothing applied.
//! 4. Outcomes with seq below `lowest_unacked_seq` are forgotten: the client has seen them.
//! 5. A seq whose outcome is retained is a retry: the original outcome, nothing applied.
//! 6. A seq below every retained one was forgotten: `Rejected("request already answered ...")`.
//! 7. A session already retaining `retained_per_session_max` outcomes, or any session while
//!    the table's retained outcomes cost `retained_bytes_max`, refuses new requests
//!    (`Rejected`, nothing applied) until outcomes are acknowledged or their sessions expire.
//! 8. Otherwise the request is applied once and its outcome retained (even a `Rejected` one:
//!    a retry must get the same answer).
//!
//! # Time and determinism
//!
//! Time is log time: the largest leader-assigned `timestamp_ms` of any command applied so far
//! ([`Sessions::advance_clock`]). Taking the maximum means a new leader whose clock lags cannot
//! make time run backwards and revive a session. A session is expired when the log time is more
//! than `expiry_ms` past its last activity. Expired sessions are removed as soon as the log time
//! passes their deadline (an index ordered by last activity makes that O(log n) per removal), so
//! the table holds only live sessions after every applied command, with no periodic sweep.
//! Everything here depends only on the entries applied and the [`SessionConfig`], which must
//! therefore be the same on every node of a cluster.
//!
//! # Memory bound
//!
//! At most `sessions_max` sessions (opening one more evicts the least recently active, lowest
//! id first on ties), each retaining at most `retained_per_session_max` outcomes, and all of
//! them together outcomes whose estimated cost is at most `retained_bytes_max` (exceeded by at
//! most the one outcome that crosses it). The estimate, [`retained_cost`], is a fixed base for
//! the map node and the `Outcome` plus the bytes of its string (a `Rejected` reason, a
//! `CasFailed` value), a formula of the outcome alone so that every node, whatever its
//! platform, refuses the same requests. With the defaults: 16,384 sessions of about 100 bytes
//! plus 64 MiB of outcomes, under 100 MiB however the clients behave.
//!
//! Invariants (the O(1) ones checked in `debug_assert_invariants`, all in the tests):
//! - `by_activity` holds exactly one `(last_active_ms, id)` per session, and nothing else.
//! - every `last_active_ms <= clock_ms`; no session is idle longer than `expiry_ms`.
//! - every retained seq is `>= lowest_retained_seq`; at most `retained_per_session_max` each.
//! - a session's `retained_bytes` is the sum of its outcomes' [`retained_cost`]s, the table's
//!   `retained_bytes` the sum over its sessions.
//! - at most `sessions_max` sessions.

use std::collections::{BTreeMap, BTreeSet};

use super::command::SessionRef;
use super::outcome::Outcome;

/// Ten minutes of log time without a request expires a session: long enough to ride out a
/// leader election and a client reconnecting, short enough that abandoned sessions go soon.
pub const DEFAULT_SESSION_EXPIRY_MS: u64 = 10 * 60 * 1000;
/// Sessions open at once before opening another evicts the least recently active.
pub const DEFAULT_SESSIONS_MAX: usize = 16_384;
/// Unacknowledged outcomes one session may hold; a client with more requests in flight than
/// this is refused new ones until it acknowledges.
pub const DEFAULT_RETAINED_PER_SESSION_MAX: usize = 8_192;
/// The estimated bytes of unacknowledged outcomes all sessions together may hold: about a
/// million small outcomes, or 128 sessions at their cap.
pub const DEFAULT_RETAINED_BYTES_MAX: usize = 64 << 20;
/// The part of [`retained_cost`] every outcome pays: its map node and the `Outcome` itself.
pub const RETAINED_OUTCOME_BYTES_BASE: usize = 64;

/// The estimated memory an outcome takes while retained. A constant formula, not `size_of`:
/// nodes built for different platforms must still agree on what the budget admits.
pub fn retained_cost(outcome: &Outcome) -> usize {
    RETAINED_OUTCOME_BYTES_BASE
        + match outcome {
            Outcome::Rejected(reason) => reason.len(),
            Outcome::CasFailed {
                current: Some(value),
            } => value.len(),
            _ => 0,
        }
}

/// Limits of the session table. Not stored in the log, so every node must use the same values.
/// A limit of 0 is taken as 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    pub expiry_ms: u64,
    pub sessions_max: usize,
    pub retained_per_session_max: usize,
    pub retained_bytes_max: usize,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            expiry_ms: DEFAULT_SESSION_EXPIRY_MS,
            sessions_max: DEFAULT_SESSIONS_MAX,
            retained_per_session_max: DEFAULT_RETAINED_PER_SESSION_MAX,
            retained_bytes_max: DEFAULT_RETAINED_BYTES_MAX,
        }
    }
}

/// One client session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Log time of the session's last request (or of its opening).
    last_active_ms: u64,
    /// Every seq below this has been acknowledged by the client and its outcome forgotten.
    lowest_retained_seq: u64,
    /// Outcomes of applied requests the client has not acknowledged, by seq.
    retained: BTreeMap<u64, Outcome>,
    /// The sum of `retained`'s costs.
    retained_bytes: usize,
}

impl Session {
    /// A session as a snapshot stored it; [`Sessions::restore`] checks it.
    pub fn restored(
        last_active_ms: u64,
        lowest_retained_seq: u64,
        retained: BTreeMap<u64, Outcome>,
    ) -> Session {
        let retained_bytes = retained.values().map(retained_cost).sum();
        Session {
            last_active_ms,
            lowest_retained_seq,
            retained,
            retained_bytes,
        }
    }

    pub fn last_active_ms(&self) -> u64 {
        self.last_active_ms
    }

    pub fn lowest_retained_seq(&self) -> u64 {
        self.lowest_retained_seq
    }

    /// The retained outcomes, by ascending seq.
    pub fn retained(&self) -> impl Iterator<Item = (u64, &Outcome)> {
        self.retained.iter().map(|(&seq, outcome)| (seq, outcome))
    }

    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }
}

/// What the state machine must do with a request that carries a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Apply the operation, then hand its outcome to [`Sessions::retain`].
    Apply,
    /// A retry of an applied request: answer with its original outcome, apply nothing.
    Duplicate(Outcome),
    /// Answer with this outcome (`SessionExpired` or `Rejected`), apply and retain nothing.
    Refuse(Outcome),
}

/// The session table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sessions {
    config: SessionConfig,
    /// Log time: the largest command timestamp applied so far.
    clock_ms: u64,
    sessions: BTreeMap<u64, Session>,
    /// `(last_active_ms, id)` of every session: the least recently active first, for expiry
    /// and eviction without scanning the table.
    by_activity: BTreeSet<(u64, u64)>,
    /// The sum of the sessions' `retained_bytes`.
    retained_bytes: usize,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions::new(SessionConfig::default())
    }
}

impl Sessions {
    pub fn new(config: SessionConfig) -> Sessions {
        let config = SessionConfig {
            expiry_ms: config.expiry_ms,
            sessions_max: config.sessions_max.max(1),
            retained_per_session_max: config.retained_per_session_max.max(1),
            retained_bytes_max: config.retained_bytes_max.max(1),
        };
        Sessions {
            config,
            clock_ms: 0,
            sessions: BTreeMap::new(),
            by_activity: BTreeSet::new(),
            retained_bytes: 0,
        }
    }

    /// Rebuilds a table from a snapshot's parts (as [`Sessions::clock_ms`] and
    /// [`Sessions::iter`] gave them). The input comes from disk, so it is checked, not trusted:
    /// an `Err` names the first broken rule.
    pub fn restore(
        config: SessionConfig,
        clock_ms: u64,
        sessions: impl IntoIterator<Item = (u64, Session)>,
    ) -> Result<Sessions, String> {
        let mut table = Sessions::new(config);
        let config = table.config;
        table.clock_ms = clock_ms;
        for (id, session) in sessions {
            if session.last_active_ms > clock_ms {
                return Err(format!("session {id} active after the log time {clock_ms}"));
            }
            if session.retained.len() > config.retained_per_session_max {
                return Err(format!("session {id} retains too many outcomes"));
            }
            if session
                .retained
                .keys()
                .next()
                .is_some_and(|&seq| seq < session.lowest_retained_seq)
            {
                return Err(format!("session {id} retains an acknowledged outcome"));
            }
            table.by_activity.insert((session.last_active_ms, id));
            table.retained_bytes += session.retained_bytes;
            if table.sessions.insert(id, session).is_some() {
                return Err(format!("session {id} appears twice"));
            }
        }
        if table.sessions.len() > config.sessions_max {
            return Err(format!("{} sessions", table.sessions.len()));
        }
        // A snapshot taken between a clock advance and its expiry pass cannot exist (they are
        // one step), but expiring here keeps the invariant even for a hand-made one.
        table.expire();
        table.debug_assert_invariants();
        Ok(table)
    }

    pub fn config(&self) -> SessionConfig {
        self.config
    }

    /// Log time: the largest command timestamp applied so far.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The estimated bytes of all retained outcomes (see [`retained_cost`]).
    pub fn retained_bytes(&self) -> usize {
        self.retained_bytes
    }

    pub fn get(&self, id: u64) -> Option<&Session> {
        self.sessions.get(&id)
    }

    /// Every live session, by ascending id.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Session)> {
        self.sessions.iter().map(|(&id, session)| (id, session))
    }

    /// Moves log time to `timestamp_ms` if that is later, and removes every session it
    /// expires. Call it for every applied command, before `open` or `admit`.
    pub fn advance_clock(&mut self, timestamp_ms: u64) {
        self.clock_ms = self.clock_ms.max(timestamp_ms);
        self.expire();
    }

    /// Opens session `id` (the log index of the entry opening it) at the current log time,
    /// evicting the least recently active session if the table is full.
    pub fn open(&mut self, id: u64) {
        debug_assert!(
            !self.sessions.contains_key(&id),
            "session {id} opened twice"
        );
        if self.sessions.contains_key(&id) {
            return;
        }
        while self.sessions.len() >= self.config.sessions_max {
            let Some((_, evicted)) = self.by_activity.pop_first() else {
                break;
            };
            self.remove(evicted);
        }
        let session = Session::restored(self.clock_ms, 0, BTreeMap::new());
        self.by_activity.insert((session.last_active_ms, id));
        self.sessions.insert(id, session);
        self.debug_assert_invariants();
    }

    /// Decides what to do with a request that carries `request` (rules 1-7 of the module
    /// comment). Changes only `request.id`'s bookkeeping: its activity and its forgotten
    /// outcomes.
    pub fn admit(&mut self, request: &SessionRef) -> Admission {
        let clock_ms = self.clock_ms;
        let Some(session) = self.sessions.get_mut(&request.id) else {
            return Admission::Refuse(Outcome::SessionExpired);
        };
        // `advance_clock` has removed every expired session, so this one is live.
        debug_assert!(clock_ms - session.last_active_ms <= self.config.expiry_ms);
        if session.last_active_ms != clock_ms {
            self.by_activity
                .remove(&(session.last_active_ms, request.id));
            self.by_activity.insert((clock_ms, request.id));
            session.last_active_ms = clock_ms;
        }
        if request.seq == 0 || request.lowest_unacked_seq > request.seq {
            return Admission::Refuse(Outcome::Rejected(format!(
                "invalid session request: seq {} with lowest unacknowledged seq {} \
                 (seqs start at 1, and a request is not acknowledged before it is answered)",
                request.seq, request.lowest_unacked_seq
            )));
        }
        if request.lowest_unacked_seq > session.lowest_retained_seq {
            session.lowest_retained_seq = request.lowest_unacked_seq;
            // Forget the acknowledged outcomes in place (usually one or two): `split_off`
            // would allocate a new map for every request.
            let mut forgotten = 0;
            while let Some(entry) = session.retained.first_entry() {
                if *entry.key() >= request.lowest_unacked_seq {
                    break;
                }
                forgotten += retained_cost(&entry.remove());
            }
            session.retained_bytes -= forgotten;
            self.retained_bytes -= forgotten;
        }
        if let Some(outcome) = session.retained.get(&request.seq) {
            return Admission::Duplicate(outcome.clone());
        }
        if request.seq < session.lowest_retained_seq {
            return Admission::Refuse(Outcome::Rejected(format!(
                "request already answered: session {} seq {} is below the lowest unacknowledged \
                 seq {}, so its result is forgotten",
                request.id, request.seq, session.lowest_retained_seq
            )));
        }
        if session.retained.len() >= self.config.retained_per_session_max {
            return Admission::Refuse(Outcome::Rejected(format!(
                "too many unacknowledged requests in session {} ({}): raise lowest_unacked_seq",
                request.id, self.config.retained_per_session_max
            )));
        }
        if self.retained_bytes >= self.config.retained_bytes_max {
            return Admission::Refuse(Outcome::Rejected(format!(
                "too many unacknowledged requests in all sessions ({} bytes): try again later",
                self.config.retained_bytes_max
            )));
        }
        Admission::Apply
    }

    /// Retains the outcome of a request that [`Sessions::admit`] answered `Apply` to, for its
    /// retries.
    pub fn retain(&mut self, request: &SessionRef, outcome: Outcome) {
        debug_assert!(
            self.sessions.contains_key(&request.id),
            "retain without admit for session {}",
            request.id
        );
        let Some(session) = self.sessions.get_mut(&request.id) else {
            return;
        };
        debug_assert!(request.seq >= session.lowest_retained_seq);
        debug_assert!(session.retained.len() < self.config.retained_per_session_max);
        debug_assert!(self.retained_bytes < self.config.retained_bytes_max);
        let cost = retained_cost(&outcome);
        let earlier = session.retained.insert(request.seq, outcome);
        debug_assert!(earlier.is_none(), "seq {} applied twice", request.seq);
        let earlier_cost = earlier.as_ref().map_or(0, retained_cost);
        session.retained_bytes = session.retained_bytes + cost - earlier_cost;
        self.retained_bytes = self.retained_bytes + cost - earlier_cost;
        self.debug_assert_invariants();
    }

    /// Removes every session idle for longer than the expiry at the current log time.
    fn expire(&mut self) {
        while let Some(&(last_active_ms, id)) = self.by_activity.first() {
            if self.clock_ms.saturating_sub(last_active_ms) <= self.config.expiry_ms {
                break;
            }
            self.by_activity.pop_first();
            self.remove(id);
        }
    }

    /// Drops session `id` from the table (its `by_activity` entry is the caller's business).
    fn remove(&mut self, id: u64) {
        if let Some(session) = self.sessions.remove(&id) {
            self.retained_bytes -= session.retained_bytes;
        }
    }

    /// The invariants of the module comment that are O(1) to check, in debug builds.
    fn debug_assert_invariants(&self) {
        debug_assert_eq!(self.by_activity.len(), self.sessions.len());
        debug_assert!(self.sessions.len() <= self.config.sessions_max);
        if let Some(&(oldest_ms, id)) = self.by_activity.first() {
            debug_assert!(self.clock_ms - oldest_ms <= self.config.expiry_ms);
            debug_assert_eq!(
                self.sessions.get(&id).map(|s| s.last_active_ms),
                Some(oldest_ms)
            );
        }
        if let Some(&(newest_ms, _)) = self.by_activity.last() {
            debug_assert!(newest_ms <= self.clock_ms);
        }
    }

    /// Every invariant of the module comment, O(n): for tests.
    #[cfg(test)]
    pub(crate) fn assert_invariants_full(&self) {
        assert_eq!(self.by_activity.len(), self.sessions.len());
        assert!(self.sessions.len() <= self.config.sessions_max);
        let mut retained_bytes = 0;
        for (&id, session) in &self.sessions {
            assert!(self.by_activity.contains(&(session.last_active_ms, id)));
            assert!(session.last_active_ms <= self.clock_ms);
            assert!(self.clock_ms - session.last_active_ms <= self.config.expiry_ms);
            assert!(session.retained.len() <= self.config.retained_per_session_max);
            let bytes: usize = session.retained.values().map(retained_cost).sum();
            assert_eq!(bytes, session.retained_bytes);
            retained_bytes += bytes;
            if let Some((&seq, _)) = session.retained.first_key_value() {
                assert!(seq >= session.lowest_retained_seq);
            }
        }
        assert_eq!(retained_bytes, self.retained_bytes);
    }
}

#[cfg(test)]
mod tests {
    //! The table alone; the state machine's tests drive it through committed entries.
    use super::*;

    fn request(id: u64, seq: u64, lowest_unacked_seq: u64) -> SessionRef {
        SessionRef {
            id,
            seq,
            lowest_unacked_seq,
        }
    }

    fn small() -> SessionConfig {
        SessionConfig {
            expiry_ms: 1_000,
            sessions_max: 3,
            retained_per_session_max: 4,
            retained_bytes_max: 6 * RETAINED_OUTCOME_BYTES_BASE,
        }
    }

    #[test]
    fn unknown_sessions_are_expired() {
        let mut t = Sessions::default();
        assert_eq!(
            t.admit(&request(5, 1, 1)),
            Admission::Refuse(Outcome::SessionExpired)
        );
        assert!(t.is_empty());
    }

    #[test]
    fn apply_retain_duplicate_forget() {
        let mut t = Sessions::new(small());
        t.advance_clock(100);
        t.open(7);
        assert_eq!(t.admit(&request(7, 1, 1)), Admission::Apply);
        t.retain(&request(7, 1, 1), Outcome::Posted { position: 1 });
        assert_eq!(
            t.admit(&request(7, 1, 1)),
            Admission::Duplicate(Outcome::Posted { position: 1 })
        );
        // Acknowledging seq 1 forgets it; its retry is refused, not applied again.
        assert_eq!(t.admit(&request(7, 2, 2)), Admission::Apply);
        t.retain(&request(7, 2, 2), Outcome::NotFound);
        assert_eq!(t.get(7).unwrap().retained_count(), 1);
        assert_eq!(t.get(7).unwrap().lowest_retained_seq(), 2);
        let Admission::Refuse(Outcome::Rejected(reason)) = t.admit(&request(7, 1, 1)) else {
            panic!("a forgotten seq must be refused");
        };
        assert!(reason.starts_with("request already answered"), "{reason}");
        t.assert_invariants_full();
    }

    #[test]
    fn the_total_cap_refuses_every_session_until_outcomes_go() {
        let mut t = Sessions::new(small());
        t.open(1);
        t.open(2);
        for (id, seq) in [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)] {
            assert_eq!(t.admit(&request(id, seq, 1)), Admission::Apply);
            t.retain(&request(id, seq, 1), Outcome::NotFound);
        }
        assert_eq!(t.retained_bytes(), 6 * RETAINED_OUTCOME_BYTES_BASE);
        let Admission::Refuse(Outcome::Rejected(reason)) = t.admit(&request(1, 4, 1)) else {
            panic!("the table is full");
        };
        assert!(reason.contains("in all sessions"), "{reason}");
        // Session 2 acknowledging two of its outcomes makes room for session 1.
        assert_eq!(t.admit(&request(2, 4, 3)), Admission::Apply);
        assert_eq!(t.retained_bytes(), 4 * RETAINED_OUTCOME_BYTES_BASE);
        t.retain(&request(2, 4, 3), Outcome::NotFound);
        assert_eq!(t.admit(&request(1, 4, 1)), Admission::Apply);
        t.assert_invariants_full();
        // Expiry gives back what an expired session retained.
        t.advance_clock(1_001);
        assert!(t.is_empty());
        assert_eq!(t.retained_bytes(), 0);
        t.assert_invariants_full();
    }

    #[test]
    fn strings_count_toward_the_budget() {
        let value = Outcome::CasFailed {
            current: Some("v".repeat(1000)),
        };
        assert_eq!(retained_cost(&value), RETAINED_OUTCOME_BYTES_BASE + 1000);
        let reason = Outcome::Rejected("no".into());
        assert_eq!(retained_cost(&reason), RETAINED_OUTCOME_BYTES_BASE + 2);
        let mut t = Sessions::new(small());
        t.open(1);
        assert_eq!(t.admit(&request(1, 1, 1)), Admission::Apply);
        t.retain(&request(1, 1, 1), value);
        // One large outcome may cross the budget; the next request is refused.
        assert!(t.retained_bytes() > small().retained_bytes_max);
        assert!(matches!(
            t.admit(&request(1, 2, 1)),
            Admission::Refuse(Outcome::Rejected(_))
        ));
        assert_eq!(t.admit(&request(1, 2, 2)), Admission::Apply);
        assert_eq!(t.retained_bytes(), 0);
        t.assert_invariants_full();
    }

    #[test]
    fn eviction_takes_the_least_recently_active() {
        let mut t = Sessions::new(small());
        for (id, at_ms) in [(1, 10), (2, 20), (3, 30)] {
            t.advance_clock(at_ms);
            t.open(id);
        }
        t.advance_clock(40);
        assert_eq!(t.admit(&request(1, 1, 1)), Admission::Apply); // 1 is now the newest
        t.open(4);
        assert_eq!(
            t.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            vec![1, 3, 4]
        );
        t.assert_invariants_full();
    }

    #[test]
    fn restore_round_trips_and_checks_its_input() {
        let mut t = Sessions::new(small());
        t.advance_clock(500);
        t.open(2);
        t.open(9);
        t.admit(&request(9, 3, 2));
        t.retain(&request(9, 3, 2), Outcome::KvAck { revision: 4 });
        let parts = || t.iter().map(|(id, s)| (id, s.clone())).collect::<Vec<_>>();
        let copy = Sessions::restore(t.config(), t.clock_ms(), parts()).unwrap();
        assert_eq!(copy, t);

        let mut twice = parts();
        twice.push(twice[0].clone());
        assert!(Sessions::restore(small(), 500, twice).is_err());
        assert!(Sessions::restore(small(), 499, parts()).is_err());
        let acked = Session::restored(0, 5, BTreeMap::from([(4, Outcome::NotFound)]));
        assert!(Sessions::restore(small(), 500, [(1, acked)]).is_err());
        let many = (0..5).map(|seq| (seq, Outcome::NotFound)).collect();
        let many = Session::restored(0, 0, many);
        assert!(Sessions::restore(small(), 500, [(1, many)]).is_err());
        let crowd = (1..=4).map(|id| (id, Session::restored(500, 0, BTreeMap::new())));
        assert!(Sessions::restore(small(), 500, crowd).is_err());
        // Sessions idle too long in a (hand-made) snapshot are expired on restore.
        let stale = Session::restored(0, 0, BTreeMap::new());
        let restored = Sessions::restore(small(), 5_000, [(1, stale)]).unwrap();
        assert!(restored.is_empty());
    }
}
