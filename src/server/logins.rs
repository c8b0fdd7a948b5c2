//! Logins for every front-end: the steps of `register`, `login` and `passwd` that do not
//! depend on a protocol's syntax, so telnet, binary and WebSocket sessions share one path.
//!
//! It owns the password-hashing worker ([`AccountWorker`]), the hash jobs in flight (whose
//! connection and front-end get the verdict), and the failed-login rate limit, per connection
//! and per nick. Front-ends start a job here, the worker wakes the loop, the node drains
//! [`Logins::finished`] and hands each verdict back to the front-end the job names, which
//! binds its session's login or proposes the new hash. It never writes to a socket, and no
//! password is logged or kept past its job.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chat::validate::{validate_nick, validate_password};
use crate::chat::StateMachine;
use crate::server::accounts::{AccountWorker, Done, Job, Verdict, Work};
use crate::server::transport::ConnRef;

/// Failed logins (per connection and per nick) allowed before further tries are refused.
pub const LOGIN_FAILURES_FREE: u32 = 3;
/// The first refusal lasts this long; each further failure doubles it, up to the max.
pub const LOGIN_BACKOFF_MS: u64 = 1_000;
pub const LOGIN_BACKOFF_MAX_MS: u64 = 60_000;
/// Nicks whose failed logins are remembered, at most (the oldest are forgotten first).
const FAILED_NICKS_MAX: usize = 10_000;
/// The words of every failed login, so a login does not reveal which nicks exist.
pub const LOGIN_FAILED_TEXT: &str = "login failed: wrong nick or password";

/// Failed logins in a row, for the per-connection and per-nick rate limit.
#[derive(Clone, Copy, Debug, Default)]
struct LoginFailures {
    count: u32,
    last: Option<Instant>,
}

impl LoginFailures {
    fn record(&mut self, now: Instant) {
        self.count = self.count.saturating_add(1);
        self.last = Some(now);
    }

    /// The wait before another try is allowed, if one is imposed now.
    fn refused_for(&self, now: Instant) -> Option<Duration> {
        let last = self.last?;
        let over = self.count.checked_sub(LOGIN_FAILURES_FREE)?;
        let backoff_ms = LOGIN_BACKOFF_MS
            .saturating_mul(1u64 << over.min(16))
            .min(LOGIN_BACKOFF_MAX_MS);
        let until = last + Duration::from_millis(backoff_ms);
        (until > now).then(|| until - now)
    }
}

/// What a hash job is for.
#[derive(Debug)]
pub enum Action {
    Register { nick: String },
    Login { nick: String },
    Passwd { nick: String },
}

/// Which front-end waits for a job, with what it needs to answer.
#[derive(Clone, Copy, Debug)]
pub enum Front {
    Telnet,
    Binary { req_id: u64 },
    Web { id: Option<u64> },
}

/// A hash job in flight: whose it is and what it is for.
#[derive(Debug)]
pub struct Pending {
    pub conn: ConnRef,
    pub front: Front,
    pub action: Action,
}

/// Why an account request was refused before any hashing.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    /// The words for the client (without a protocol's `err ` prefix).
    pub text: String,
    /// True when the same request may succeed later (failure limit, busy worker): binary
    /// clients get `Overloaded` rather than `Rejected`.
    pub try_later: bool,
}

impl Refused {
    fn final_(text: impl Into<String>) -> Refused {
        Refused {
            text: text.into(),
            try_later: false,
        }
    }
}

/// The hashing worker, its jobs in flight and the failed-login counts.
#[derive(Default)]
pub struct Logins {
    worker: Option<AccountWorker>,
    jobs: HashMap<u64, Pending>,
    next_ticket: u64,
    nick_failures: HashMap<String, LoginFailures>,
    /// Per connection, by key; the id tells a reused key apart.
    conn_failures: HashMap<usize, (u64, LoginFailures)>,
}

impl Logins {
    /// Starts the password-hashing thread; `waker` wakes the loop when a job is done.
    pub fn start(&mut self, waker: Arc<mio::Waker>) -> std::io::Result<()> {
        self.worker = Some(AccountWorker::start(waker)?);
        Ok(())
    }

    fn submit(&mut self, pending: Pending, work: Work) -> Result<(), Refused> {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let submitted = match self.worker.as_mut() {
            Some(worker) => worker.submit(Job { ticket, work }),
            None => Err("accounts are not available on this node".to_string()),
        };
        submitted.map_err(|text| Refused {
            text,
            try_later: true,
        })?;
        self.jobs.insert(ticket, pending);
        Ok(())
    }

    /// Jobs the worker is done with, with their verdicts (called when the loop wakes).
    pub fn finished(&mut self) -> Vec<(Pending, Verdict)> {
        let done = match self.worker.as_mut() {
            Some(worker) => worker.finished(),
            None => return Vec::new(),
        };
        done.into_iter()
            .filter_map(|Done { ticket, verdict }| {
                self.jobs.remove(&ticket).map(|pending| (pending, verdict))
            })
            .collect()
    }

    /// `register <nick> <password>`: checks and queues the hash. A taken nick is refused.
    pub fn start_register(
        &mut self,
        sm: &StateMachine,
        conn: ConnRef,
        front: Front,
        nick: String,
        password: String,
    ) -> Result<(), Refused> {
        validate_nick(&nick)
            .and_then(|()| validate_password(&password))
            .map_err(Refused::final_)?;
        if sm.account_hash(&nick).is_some() {
            return Err(Refused::final_(format!(
                "nick {nick} is already registered"
            )));
        }
        let action = Action::Register { nick };
        self.submit(
            Pending {
                conn,
                front,
                action,
            },
            Work::Hash { password },
        )
    }

    /// `login <nick> <password>`: checks the failure limit and queues the verification. An
    /// unknown nick fails (and counts) like a wrong password.
    pub fn start_login(
        &mut self,
        sm: &StateMachine,
        node_id: u64,
        pending: (ConnRef, Front),
        nick: String,
        password: String,
    ) -> Result<(), Refused> {
        let (conn, front) = pending;
        validate_nick(&nick)
            .and_then(|()| validate_password(&password))
            .map_err(Refused::final_)?;
        self.check_limit(node_id, conn, &nick)?;
        let Some(hash) = sm.account_hash(&nick) else {
            self.failed(node_id, conn, &nick);
            return Err(Refused::final_(LOGIN_FAILED_TEXT));
        };
        let work = Work::Verify {
            hash: hash.to_string(),
            password,
        };
        let action = Action::Login { nick };
        self.submit(
            Pending {
                conn,
                front,
                action,
            },
            work,
        )
    }

    /// `passwd <old> <new>` for the account `login` (the session's): guessing the old password
    /// counts, and is limited, like a login.
    pub fn start_passwd(
        &mut self,
        sm: &StateMachine,
        node_id: u64,
        pending: (ConnRef, Front),
        login: Option<&str>,
        passwords: (String, String),
    ) -> Result<(), Refused> {
        let (conn, front) = pending;
        let (old, new) = passwords;
        let Some(nick) = login else {
            return Err(Refused::final_("not logged in: login first"));
        };
        validate_password(&old)
            .and_then(|()| validate_password(&new))
            .map_err(Refused::final_)?;
        self.check_limit(node_id, conn, nick)?;
        let Some(hash) = sm.account_hash(nick) else {
            return Err(Refused::final_(format!("no account {nick}")));
        };
        let work = Work::Rehash {
            hash: hash.to_string(),
            old,
            new,
        };
        let action = Action::Passwd {
            nick: nick.to_string(),
        };
        self.submit(
            Pending {
                conn,
                front,
                action,
            },
            work,
        )
    }

    /// A login for `nick` on `conn` succeeded: its failures are forgotten.
    pub fn succeeded(&mut self, conn: ConnRef, nick: &str) {
        self.nick_failures.remove(nick);
        self.conn_failures.remove(&conn.key);
    }

    /// Counts a failed login against the connection and the nick, and logs it (no password).
    pub fn failed(&mut self, node_id: u64, conn: ConnRef, nick: &str) {
        let now = Instant::now();
        if self.nick_failures.len() >= FAILED_NICKS_MAX && !self.nick_failures.contains_key(nick) {
            let horizon = Duration::from_millis(LOGIN_BACKOFF_MAX_MS);
            self.nick_failures
                .retain(|_, f| f.last.is_some_and(|at| now.duration_since(at) < horizon));
            if self.nick_failures.len() >= FAILED_NICKS_MAX {
                self.nick_failures.clear();
            }
        }
        let per_nick = self.nick_failures.entry(nick.to_string()).or_default();
        per_nick.record(now);
        let nick_count = per_nick.count;
        let entry = self.conn_failures.entry(conn.key).or_default();
        if entry.0 != conn.id {
            *entry = (conn.id, LoginFailures::default());
        }
        entry.1.record(now);
        let conn_count = entry.1.count;
        log::warn!(
            "node {node_id}: failed login for nick {nick} on connection {} ({conn_count} failures \
             on the connection, {nick_count} for the nick)",
            conn.id
        );
    }

    /// `Err` (and a log line) when the failure limit refuses a try for `nick` on `conn` now.
    fn check_limit(&mut self, node_id: u64, conn: ConnRef, nick: &str) -> Result<(), Refused> {
        let now = Instant::now();
        let per_nick = self
            .nick_failures
            .get(nick)
            .and_then(|f| f.refused_for(now));
        let per_conn = self
            .conn_failures
            .get(&conn.key)
            .filter(|(id, _)| *id == conn.id)
            .and_then(|(_, f)| f.refused_for(now));
        let Some(wait) = per_nick.max(per_conn) else {
            return Ok(());
        };
        log::warn!(
            "node {node_id}: login for nick {nick} on connection {} refused: too many failures",
            conn.id
        );
        Err(Refused {
            text: format!(
                "login refused: too many failures, try again in {} ms",
                wait.as_millis().max(1)
            ),
            try_later: true,
        })
    }

    /// Forgets a closed connection's failures (its jobs are dropped when they finish).
    pub fn closed(&mut self, conn: ConnRef) {
        if self
            .conn_failures
            .get(&conn.key)
            .is_some_and(|(id, _)| *id == conn.id)
        {
            self.conn_failures.remove(&conn.key);
        }
    }

    /// Jobs queued or running.
    pub fn in_flight(&self) -> usize {
        self.jobs.len()
    }
}

/// Why a session may not post as `nick` to `room`, if it may not, whatever its protocol:
/// `login` is the account the session is logged in to. Front-ends call it before proposing.
pub fn post_refusal(
    sm: &StateMachine,
    require_login: bool,
    login: Option<&str>,
    nick: &str,
) -> Option<String> {
    if require_login && login.is_none() {
        return Some(
            "login required: register <nick> <password> or login <nick> <password> first"
                .to_string(),
        );
    }
    let registered = sm.account_hash(nick).is_some();
    (registered && login != Some(nick)).then(|| format!("nick {nick} is registered: login first"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_limited_per_connection_and_per_nick_and_forgotten_on_success() {
        let mut logins = Logins::default();
        let first = ConnRef { key: 1, id: 10 };
        let second = ConnRef { key: 2, id: 11 };
        for _ in 0..LOGIN_FAILURES_FREE {
            assert_eq!(logins.check_limit(0, first, "carol"), Ok(()));
            logins.failed(0, first, "carol");
        }
        let refused = logins.check_limit(0, first, "carol").unwrap_err();
        assert!(refused.try_later, "{refused:?}");
        assert!(refused.text.starts_with("login refused: too many failures"));
        // Per nick: another connection is refused for carol, not for dave ...
        assert!(logins.check_limit(0, second, "carol").is_err());
        assert_eq!(logins.check_limit(0, second, "dave"), Ok(()));
        // ... and per connection: the first one is refused for dave too.
        assert!(logins.check_limit(0, first, "dave").is_err());
        // A new connection reusing the slab key starts clean.
        let reused = ConnRef { key: 1, id: 12 };
        assert_eq!(logins.check_limit(0, reused, "dave"), Ok(()));
        // A success forgets the nick's failures and the connection's.
        logins.succeeded(first, "carol");
        assert_eq!(logins.check_limit(0, second, "carol"), Ok(()));
        assert_eq!(logins.check_limit(0, first, "dave"), Ok(()));
    }
}
