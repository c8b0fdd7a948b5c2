//! Limits that protect everyone: the policy (what `--max-conns`, `--max-conns-per-ip`,
//! `--idle-timeout-secs`, `--partial-line-timeout-secs`, `--msg-rate`, `--msg-burst`,
//! `--binary-msg-rate` and `--binary-msg-burst` mean) and its per-connection state, with the
//! counters `status` prints.
//!
//! It owns no socket and no protocol. The node asks it at three points and acts on the answer:
//!
//! - when an accepted connection is classified as a client ([`Limits::admit`]): over the total
//!   or per-address bound, the node writes the refusal line and closes it. Peers (identified by
//!   their handshake) are never counted ([`Limits::exempt`]);
//! - after input was handled ([`Limits::on_input`]): the time of the last input, and since when
//!   an unfinished line, frame or HTTP head has been waiting;
//! - on a timer ([`Limits::sweep`], once a second): connections idle too long, or holding an
//!   unfinished request too long (slow-loris), to close.
//!
//! The front-ends ask [`Limits::take_msg`] before posting a message: a token bucket per
//! connection. Over it the client gets `rate limited: not stored, try again in <ms>` at once
//! (never a silent drop, never a wait in the loop).
//!
//! Binary clients are programs (the client library, the load generator) whose throughput is
//! what benchmarks measure, so their rate has its own flag, unlimited by default; telnet and
//! WebSocket sessions are people, limited by default far above any typist.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::transport::ConnRef;

/// `--max-conns` default: client connections per node.
pub const DEFAULT_MAX_CONNS: u64 = 10_000;
/// `--max-conns-per-ip` default. High because benchmarks and tests open thousands of
/// connections from 127.0.0.1 (loadgen allows 4,096); a public node should lower it.
pub const DEFAULT_MAX_CONNS_PER_IP: u64 = 4_096;
/// `--idle-timeout-secs` default: a client that sent nothing for an hour is closed.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 3_600;
/// `--partial-line-timeout-secs` default: an unfinished line, frame or HTTP head this old.
pub const DEFAULT_PARTIAL_TIMEOUT_SECS: u64 = 30;
/// `--msg-rate` default (telnet and WebSocket): messages per second per connection.
pub const DEFAULT_MSG_RATE: u64 = 50;
/// `--msg-burst` default: messages a telnet or WebSocket connection may post at once.
pub const DEFAULT_MSG_BURST: u64 = 100;
/// `--binary-msg-rate` default: 0, unlimited (binary clients are programs; see the module doc).
pub const DEFAULT_BINARY_MSG_RATE: u64 = 0;
/// `--binary-msg-burst` default.
pub const DEFAULT_BINARY_MSG_BURST: u64 = 1_000;
/// How often idle and slow-loris connections are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The limits one node enforces (from the command line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitConfig {
    /// Client connections in total (0: no limit).
    pub max_conns: u64,
    /// Client connections from one source address (0: no limit).
    pub max_conns_per_ip: u64,
    /// Close a client that sent nothing for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose unfinished line, frame or HTTP head is this old (`None`: never).
    pub partial_timeout: Option<Duration>,
    /// Telnet and WebSocket: messages per second per connection (0: unlimited), and burst.
    pub msg_rate: u64,
    pub msg_burst: u64,
    /// Binary clients: messages per second per connection (0: unlimited), and burst.
    pub binary_msg_rate: u64,
    pub binary_msg_burst: u64,
}

impl Default for LimitConfig {
    fn default() -> LimitConfig {
        LimitConfig {
            max_conns: DEFAULT_MAX_CONNS,
            max_conns_per_ip: DEFAULT_MAX_CONNS_PER_IP,
            idle_timeout: secs(DEFAULT_IDLE_TIMEOUT_SECS),
            partial_timeout: secs(DEFAULT_PARTIAL_TIMEOUT_SECS),
            msg_rate: DEFAULT_MSG_RATE,
            msg_burst: DEFAULT_MSG_BURST,
            binary_msg_rate: DEFAULT_BINARY_MSG_RATE,
            binary_msg_burst: DEFAULT_BINARY_MSG_BURST,
        }
    }
}

/// A timeout flag's value: 0 means off.
pub fn secs(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(n))
}

/// What the limits did, for `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitCounters {
    /// Connections refused over `--max-conns`.
    pub refused_total: u64,
    /// Connections refused over `--max-conns-per-ip`.
    pub refused_per_ip: u64,
    /// Connections closed after `--idle-timeout-secs` without input.
    pub idle_closed: u64,
    /// Connections closed holding an unfinished request past `--partial-line-timeout-secs`.
    pub partial_closed: u64,
    /// Messages refused by a connection's rate limit.
    pub rate_limited: u64,
    /// Clients disconnected because their unsent output passed its bound (slow readers).
    pub slow_disconnects: u64,
    /// Binary clients closed for a bad frame (malformed, oversized, unknown kind).
    pub bad_frames: u64,
}

/// A token bucket: `rate` tokens a second, at most `burst` saved.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket (a new connection may post its burst at once).
    pub fn new(rate: u64, burst: u64, now: Instant) -> TokenBucket {
        let burst = burst.max(1) as f64;
        TokenBucket {
            rate: rate as f64,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / self.rate;
        Err(Duration::from_secs_f64(wait.clamp(0.001, 3600.0)))
    }
}

/// Why a connection is to be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    Idle,
    PartialInput,
}

/// Which rate flag applies to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// Telnet and WebSocket sessions: `--msg-rate`, `--msg-burst`.
    Person,
    /// Binary clients: `--binary-msg-rate`, `--binary-msg-burst`.
    Program,
}

struct Tracked {
    id: u64,
    ip: IpAddr,
    /// Counted against the total and its address (a classified client).
    counted: bool,
    last_input: Instant,
    /// Since when an unfinished line, frame or HTTP head has been waiting.
    partial_since: Option<Instant>,
    bucket: Option<TokenBucket>,
}

/// The limits' state for one node.
pub struct Limits {
    cfg: LimitConfig,
    conns: HashMap<usize, Tracked>,
    per_ip: HashMap<IpAddr, u64>,
    counted: u64,
    next_sweep: Instant,
    pub counters: LimitCounters,
}

impl Limits {
    pub fn new(cfg: LimitConfig, now: Instant) -> Limits {
        Limits {
            cfg,
            conns: HashMap::new(),
            per_ip: HashMap::new(),
            counted: 0,
            next_sweep: now + SWEEP_INTERVAL,
            counters: LimitCounters::default(),
        }
    }

    fn tracked(&mut self, conn: ConnRef) -> Option<&mut Tracked> {
        self.conns.get_mut(&conn.key).filter(|t| t.id == conn.id)
    }

    /// A connection was accepted from `ip`: its timers start (nothing is counted yet).
    pub fn on_accept(&mut self, conn: ConnRef, ip: IpAddr, now: Instant) {
        self.untrack(conn.key);
        let tracked = Tracked {
            id: conn.id,
            ip,
            counted: false,
            last_input: now,
            partial_since: None,
            bucket: None,
        };
        self.conns.insert(conn.key, tracked);
    }

    /// The connection turned out to be a client: counted, or refused with the line to send.
    /// A connection already counted (a telnet session reclassified) is admitted again.
    pub fn admit(&mut self, conn: ConnRef, kind: ClientKind, now: Instant) -> Result<(), String> {
        let cfg = self.cfg.clone();
        let counted = self.counted;
        let Some(t) = self.conns.get(&conn.key).filter(|t| t.id == conn.id) else {
            return Ok(()); // not accepted through `on_accept` (cannot happen): nothing to count
        };
        let ip = t.ip;
        if !t.counted {
            let from_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
            if cfg.max_conns > 0 && counted >= cfg.max_conns {
                self.counters.refused_total += 1;
                return Err(format!(
                    "err too many connections to this node (limit {})",
                    cfg.max_conns
                ));
            }
            if cfg.max_conns_per_ip > 0 && from_ip >= cfg.max_conns_per_ip {
                self.counters.refused_per_ip += 1;
                return Err(format!(
                    "err too many connections from {ip} (limit {})",
                    cfg.max_conns_per_ip
                ));
            }
            *self.per_ip.entry(ip).or_insert(0) += 1;
            self.counted += 1;
        }
        let (rate, burst) = match kind {
            ClientKind::Person => (cfg.msg_rate, cfg.msg_burst),
            ClientKind::Program => (cfg.binary_msg_rate, cfg.binary_msg_burst),
        };
        if let Some(t) = self.tracked(conn) {
            t.counted = true;
            t.bucket = (rate > 0).then(|| TokenBucket::new(rate, burst, now));
        }
        Ok(())
    }

    /// A peer (after its handshake): no client limit applies to it.
    pub fn exempt(&mut self, conn: ConnRef) {
        if self.tracked(conn).is_some() {
            self.untrack(conn.key);
        }
    }

    /// The connection is gone.
    pub fn closed(&mut self, conn: ConnRef) {
        if self.tracked(conn).is_some() {
            self.untrack(conn.key);
        }
    }

    fn untrack(&mut self, key: usize) {
        let Some(t) = self.conns.remove(&key) else {
            return;
        };
        if !t.counted {
            return;
        }
        self.counted = self.counted.saturating_sub(1);
        if let Some(n) = self.per_ip.get_mut(&t.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&t.ip);
            }
        }
    }

    /// Input arrived and was handled. `partial`: an unfinished request is still waiting;
    /// `progress`: at least one whole request was handled, so the unfinished one is new (a
    /// busy client whose reads end mid-frame is not a slow-loris).
    pub fn on_input(&mut self, conn: ConnRef, partial: bool, progress: bool, now: Instant) {
        if let Some(t) = self.tracked(conn) {
            t.last_input = now;
            t.partial_since = match (partial, progress) {
                (false, _) => None,
                (true, true) => Some(now),
                (true, false) => Some(t.partial_since.unwrap_or(now)),
            };
        }
    }

    /// One message from `conn`: `Err(retry_after)` over its rate (and counted).
    pub fn take_msg(&mut self, conn: ConnRef, now: Instant) -> Result<(), Duration> {
        let result = match self.tracked(conn).and_then(|t| t.bucket.as_mut()) {
            Some(bucket) => bucket.take(now),
            None => Ok(()),
        };
        if result.is_err() {
            self.counters.rate_limited += 1;
        }
        result
    }

    /// When the loop must wake for the next sweep (none when both timeouts are off).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let on = self.cfg.idle_timeout.is_some() || self.cfg.partial_timeout.is_some();
        on.then_some(self.next_sweep)
    }

    /// Once a second: the connections to close, idle or holding an unfinished request too long
    /// (counted; the caller closes them). Before the next sweep is due: nothing.
    pub fn sweep(&mut self, now: Instant) -> Vec<(ConnRef, CloseReason)> {
        if now < self.next_sweep {
            return Vec::new();
        }
        self.next_sweep = now + SWEEP_INTERVAL;
        let (idle, partial) = (self.cfg.idle_timeout, self.cfg.partial_timeout);
        let mut due = Vec::new();
        for (key, t) in &self.conns {
            let conn = ConnRef {
                key: *key,
                id: t.id,
            };
            let since = |at: Instant| now.saturating_duration_since(at);
            if let (Some(limit), Some(at)) = (partial, t.partial_since) {
                if since(at) >= limit {
                    due.push((conn, CloseReason::PartialInput));
                    continue;
                }
            }
            if idle.is_some_and(|limit| since(t.last_input) >= limit) {
                due.push((conn, CloseReason::Idle));
            }
        }
        for (conn, reason) in &due {
            match reason {
                CloseReason::Idle => self.counters.idle_closed += 1,
                CloseReason::PartialInput => self.counters.partial_closed += 1,
            }
            self.untrack(conn.key);
        }
        due
    }

    /// Client connections counted now (for tests and `status`).
    pub fn client_count(&self) -> u64 {
        self.counted
    }
}

/// The text of a rate-limit refusal, the same on every protocol.
pub fn rate_limited_text(retry_after: Duration) -> String {
    let ms = retry_after.as_millis().max(1);
    format!("rate limited: not stored, try again in {ms} ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(key: usize) -> ConnRef {
        ConnRef {
            key,
            id: key as u64 + 100,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate_and_says_how_long_to_wait() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, t0);
        for _ in 0..3 {
            assert_eq!(bucket.take(t0), Ok(()));
        }
        let wait = bucket.take(t0).expect_err("the burst is spent");
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        assert_eq!(bucket.take(t0 + Duration::from_millis(100)), Ok(()));
        assert!(bucket.take(t0 + Duration::from_millis(100)).is_err());
        // A long pause saves at most the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take(later), Ok(()));
        }
        assert!(bucket.take(later).is_err());
    }

    #[test]
    fn connections_are_capped_per_address_and_in_total_and_peers_are_not_counted() {
        let now = Instant::now();
        let cfg = LimitConfig {
            max_conns: 4,
            max_conns_per_ip: 2,
            ..LimitConfig::default()
        };
        let mut limits = Limits::new(cfg, now);
        for key in 0..3 {
            limits.on_accept(conn(key), ip(1), now);
        }
        assert!(limits.admit(conn(0), ClientKind::Person, now).is_ok());
        assert!(limits.admit(conn(1), ClientKind::Program, now).is_ok());
        let refused = limits.admit(conn(2), ClientKind::Person, now).unwrap_err();
        assert_eq!(refused, "err too many connections from 127.0.0.1 (limit 2)");
        // Admitting again (a reclassified telnet session) does not count twice.
        assert!(limits.admit(conn(0), ClientKind::Person, now).is_ok());
        // A peer from the same address is never refused: it is not a client.
        limits.on_accept(conn(9), ip(1), now);
        limits.exempt(conn(9));
        for key in 3..5 {
            limits.on_accept(conn(key), ip(2), now);
            assert!(limits.admit(conn(key), ClientKind::Person, now).is_ok());
        }
        limits.on_accept(conn(5), ip(3), now);
        let refused = limits.admit(conn(5), ClientKind::Person, now).unwrap_err();
        assert!(refused.contains("limit 4"), "{refused}");
        assert_eq!(limits.counters.refused_per_ip, 1);
        assert_eq!(limits.counters.refused_total, 1);
        // A closed client frees its place.
        limits.closed(conn(0));
        assert_eq!(limits.client_count(), 3);
        assert!(limits.admit(conn(5), ClientKind::Person, now).is_ok());
    }

    #[test]
    fn the_sweep_closes_idle_and_half_sent_connections_only() {
        let t0 = Instant::now();
        let cfg = LimitConfig {
            idle_timeout: Some(Duration::from_secs(10)),
            partial_timeout: Some(Duration::from_secs(3)),
            ..LimitConfig::default()
        };
        let mut limits = Limits::new(cfg, t0);
        for key in 0..3 {
            limits.on_accept(conn(key), ip(1), t0);
        }
        // conn 0 sends half a line and trickles more; conn 1 finishes its lines (ending each
        // read mid-line, as a busy client does); 2 is silent.
        limits.on_input(conn(0), true, false, t0);
        limits.on_input(conn(0), true, false, t0 + Duration::from_secs(2));
        limits.on_input(conn(1), true, false, t0);
        limits.on_input(conn(1), true, true, t0 + Duration::from_secs(2));
        assert!(limits.sweep(t0 + Duration::from_secs(2)).is_empty());
        let due = limits.sweep(t0 + Duration::from_secs(4));
        assert_eq!(due, vec![(conn(0), CloseReason::PartialInput)]);
        limits.on_input(conn(1), false, true, t0 + Duration::from_secs(4));
        let due = limits.sweep(t0 + Duration::from_secs(11));
        assert_eq!(due, vec![(conn(2), CloseReason::Idle)]);
        let due = limits.sweep(t0 + Duration::from_secs(14));
        assert_eq!(due, vec![(conn(1), CloseReason::Idle)]);
        assert_eq!(limits.counters.partial_closed, 1);
        assert_eq!(limits.counters.idle_closed, 2);
    }

    #[test]
    fn rates_follow_the_client_kind_and_zero_is_unlimited() {
        let now = Instant::now();
        let cfg = LimitConfig {
            msg_rate: 1,
            msg_burst: 2,
            binary_msg_rate: 0,
            ..LimitConfig::default()
        };
        let mut limits = Limits::new(cfg, now);
        limits.on_accept(conn(0), ip(1), now);
        limits.on_accept(conn(1), ip(1), now);
        limits.admit(conn(0), ClientKind::Person, now).unwrap();
        limits.admit(conn(1), ClientKind::Program, now).unwrap();
        assert!(limits.take_msg(conn(0), now).is_ok());
        assert!(limits.take_msg(conn(0), now).is_ok());
        let wait = limits.take_msg(conn(0), now).unwrap_err();
        assert_eq!(
            rate_limited_text(wait),
            "rate limited: not stored, try again in 1000 ms"
        );
        for _ in 0..10_000 {
            assert!(limits.take_msg(conn(1), now).is_ok());
        }
        assert_eq!(limits.counters.rate_limited, 1);
    }
}
