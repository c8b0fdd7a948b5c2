//! One connection: a [`SessionCore`] on a non-blocking socket, pipelining requests (closed
//! loop) or sending them on a schedule (open loop), and counting what comes back. A
//! [`shard`] thread runs many of them on one mio poll. A connection never reads another's
//! state; [`Progress`] is the only thing shared.

mod answers;
mod input;
mod recovery;
pub mod shard;
mod stream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Registry, Token};
use raftchat::chat::DEFAULT_ROOM;
use raftchat::client::proto::Request;
use raftchat::client::{ClientTls, Mutation, NodePicker, RetryPolicy, SessionCore, SessionStats};

use self::input::Input;
use self::recovery::open_session;
use self::stream::Stream;
use crate::args::OpKind;
use crate::results::{Failures, WorkerResult};
use crate::text::message_text;

/// Shared with the progress printer; each worker writes its own.
#[derive(Default)]
pub struct Progress {
    pub committed: AtomicU64,
    pub in_flight: AtomicU64,
    pub errors: AtomicU64,
}

/// Keys per connection for `--op set|get|mixed`.
const KV_KEYS_PER_CONNECTION: u64 = 16;
/// Read request ids live above this bit, apart from the session's seqs.
const READ_ID_BASE: u64 = 1 << 62;

/// Commits further apart than this on one connection are recorded as a gap (µs).
pub const GAP_MIN_US: u64 = 2_000;
/// After the last send, how long to wait for answers still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const READ_CHUNK_BYTES: usize = 256 * 1024;
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// The nick connection `conn` posts as (and, with `--login`, its account).
pub fn nick_of(conn: usize) -> String {
    format!("lg-{conn}")
}

/// What a connection is asked to do.
#[derive(Clone)]
pub struct Plan {
    pub nodes: Vec<SocketAddr>,
    pub op: OpKind,
    pub tag: String,
    pub size: usize,
    pub pipeline: usize,
    /// Open loop: the interval between this connection's sends, and its phase.
    pub interval: Option<Duration>,
    pub phase: Duration,
    pub warmup: Duration,
    pub duration: Option<Duration>,
    /// Messages to send after the warmup on this connection.
    pub quota: Option<u64>,
    pub policy: RetryPolicy,
    /// `--tls`: every connection (first and after failover) over TLS.
    pub tls: Option<ClientTls>,
    /// `--login`: the connection logs in as its nick (registering it if needed) on every
    /// connection it opens, before sending anything.
    pub login: bool,
}

pub struct Worker {
    conn: usize,
    plan: Plan,
    progress: Arc<Progress>,
    start: Instant,
    core: SessionCore,
    picker: NodePicker,
    /// The shard's poll registry and this connection's token in it.
    registry: Arc<Registry>,
    token: Token,
    stream: Stream,
    input: Input,
    /// seq → (message number, the time its latency counts from).
    in_flight: HashMap<u64, (u64, Instant)>,
    /// Key-value reads in flight (not part of the session), by request id.
    reads: HashMap<u64, (u64, Instant)>,
    next_read_id: u64,
    next_n: u64,
    sent_measured: u64,
    last_progress: Instant,
    deferred_until: Option<Instant>,
    /// The next open-loop send.
    next_send: Instant,
    /// Set once sending is over: answers still in flight are awaited until then.
    drain_deadline: Option<Instant>,
    /// Counts connections; bumped whenever the session moves to a new one.
    generation: u64,
    result: WorkerResult,
}

impl Worker {
    pub fn new(
        conn: usize,
        first: usize,
        plan: Plan,
        progress: Arc<Progress>,
        registry: Arc<Registry>,
        token: Token,
    ) -> Result<Worker, String> {
        let (core, picker, stream) = open_session(&plan, conn, first, &registry, token)?;
        let histogram =
            Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).map_err(|e| e.to_string())?;
        let now = Instant::now();
        Ok(Worker {
            conn,
            plan,
            progress,
            start: now,
            core,
            picker,
            registry,
            token,
            stream,
            input: Input::new(),
            in_flight: HashMap::new(),
            reads: HashMap::new(),
            next_read_id: READ_ID_BASE,
            next_n: 0,
            sent_measured: 0,
            last_progress: now,
            deferred_until: None,
            next_send: now,
            drain_deadline: None,
            generation: 0,
            result: WorkerResult {
                conn,
                histogram,
                acked: Vec::new(),
                unknown: Vec::new(),
                sent: 0,
                committed_total: 0,
                committed_measured: 0,
                session: SessionStats::default(),
                failures: Failures::default(),
                gaps: Vec::new(),
                last_commit_us: 0,
                fatal: None,
            },
        })
    }

    /// Starts the clock: the warmup, the measurement and the open-loop schedule count from
    /// `start`.
    pub fn begin(&mut self, start: Instant) {
        self.start = start;
        self.last_progress = start;
        self.next_send = start + self.plan.phase;
    }

    /// The connection's result once it is done (`fatal`: why it stopped early, if it did).
    pub fn finish(mut self, fatal: Option<String>) -> WorkerResult {
        self.result.fatal = fatal;
        let _ = self.registry.deregister(self.stream.socket());
        self.result
            .unknown
            .extend(self.in_flight.drain().map(|(_, (n, _))| n));
        self.result
            .gaps
            .push((self.result.last_commit_us, u64::MAX));
        self.result.sent = self.next_n;
        self.publish();
        self.progress.in_flight.store(0, Ordering::Relaxed);
        self.result.session.add(&self.core.stats);
        self.result
    }

    /// True when this connection's share of `--count` is zero.
    pub fn has_nothing_to_send(&self) -> bool {
        self.plan.quota == Some(0)
    }

    fn measure_start(&self) -> Instant {
        self.start + self.plan.warmup
    }

    fn sending_done(&self, now: Instant) -> bool {
        self.plan.quota.is_some_and(|q| self.sent_measured >= q)
            || self
                .plan
                .duration
                .is_some_and(|d| now >= self.measure_start() + d)
    }

    /// Sends what is due and writes it out. Returns when to be stepped again, or `None`
    /// once this connection is done (every answer in, or the drain deadline passed).
    pub fn step(&mut self) -> Result<Option<Instant>, String> {
        let now = Instant::now();
        if self.drain_deadline.is_none() {
            if self.sending_done(now) {
                self.drain_deadline = Some(now + DRAIN_TIMEOUT);
            } else if let Some(interval) = self.plan.interval {
                while self.next_send <= now
                    && self.requests_in_flight() < self.plan.pipeline
                    && !self.sending_done(self.next_send)
                {
                    self.submit(self.next_send)?;
                    self.next_send += interval;
                }
            } else {
                while self.requests_in_flight() < self.plan.pipeline && !self.sending_done(now) {
                    self.submit(now)?;
                }
            }
        }
        if self.deferred_until.is_some_and(|t| now >= t) {
            self.deferred_until = None;
            self.core.resend_deferred();
        }
        self.write_out()?;
        self.publish();
        if let Some(deadline) = self.drain_deadline {
            if self.requests_in_flight() == 0 || now >= deadline {
                return Ok(None);
            }
        }
        Ok(Some(self.wake_time(self.next_send, self.drain_deadline)))
    }

    /// The poller reported this connection's socket: read the answers (`read_closed`: the
    /// peer's side closed, read to EOF), then check the request timeout.
    pub fn on_ready(&mut self, read_closed: bool) -> Result<(), String> {
        self.read_in(read_closed)?;
        self.check_request_timeout()
    }

    /// The wake time from [`Worker::step`] came: fail over if the node has gone quiet.
    pub fn on_timer(&mut self) -> Result<(), String> {
        self.check_request_timeout()
    }

    /// When the loop must wake next: the request timeout, the next open-loop send, the end of
    /// the measurement, the drain deadline or the end of an overload pause, whichever is first.
    fn wake_time(&self, next_send: Instant, drain_deadline: Option<Instant>) -> Instant {
        let mut wake = self.last_progress + self.plan.policy.request_timeout;
        if drain_deadline.is_none() {
            if self.plan.interval.is_some() && self.requests_in_flight() < self.plan.pipeline {
                wake = wake.min(next_send);
            }
            if let Some(d) = self.plan.duration {
                wake = wake.min(self.measure_start() + d);
            }
        }
        for t in [drain_deadline, self.deferred_until].into_iter().flatten() {
            wake = wake.min(t);
        }
        wake
    }

    /// Fails over when requests are in flight and the node has answered nothing for the
    /// request timeout.
    fn check_request_timeout(&mut self) -> Result<(), String> {
        if self.requests_in_flight() > 0
            && Instant::now() >= self.last_progress + self.plan.policy.request_timeout
        {
            self.core.stats.request_timeouts += 1;
            let message = format!(
                "node {} answered nothing for {:?} with {} in flight",
                self.picker.current(),
                self.plan.policy.request_timeout,
                self.requests_in_flight()
            );
            log_debug(self.conn, &message);
            self.failover(None)?;
        }
        Ok(())
    }

    /// Session writes plus key-value reads in flight on this connection.
    fn requests_in_flight(&self) -> usize {
        self.core.in_flight() + self.reads.len()
    }

    fn submit(&mut self, latency_from: Instant) -> Result<(), String> {
        let n = self.next_n;
        let text = message_text(&self.plan.tag, self.conn, n, self.plan.size);
        let key = format!("lg-{}-{}", self.conn, n % KV_KEYS_PER_CONNECTION);
        let read = match self.plan.op {
            OpKind::Post | OpKind::Set => false,
            OpKind::Get => true,
            OpKind::Mixed => n % 2 == 1,
        };
        if read {
            // Reads carry no session: encoded straight behind the session's queued frames.
            let req_id = self.next_read_id;
            self.next_read_id += 1;
            Request::Get { req_id, key }.encode(self.core.output());
            self.next_n += 1;
            if latency_from >= self.measure_start() {
                self.sent_measured += 1;
            }
            self.reads.insert(req_id, (n, latency_from));
            return Ok(());
        }
        let mutation = match self.plan.op {
            OpKind::Post => Mutation::Post {
                room: DEFAULT_ROOM.to_string(),
                nick: nick_of(self.conn),
                text,
            },
            _ => Mutation::Set { key, value: text },
        };
        let seq = self.core.submit(mutation).map_err(|e| e.to_string())?;
        if self.core.in_flight() == 1 {
            self.last_progress = Instant::now();
        }
        self.next_n += 1;
        if latency_from >= self.measure_start() {
            self.sent_measured += 1;
        }
        self.in_flight.insert(seq, (n, latency_from));
        Ok(())
    }

    fn publish(&self) {
        let s = &self.core.stats;
        let f = &self.result.failures;
        let recovered = s.not_leader
            + s.timeout_unknown
            + s.overloaded
            + s.connection_errors
            + s.request_timeouts;
        let before = &self.result.session;
        let earlier = before.not_leader
            + before.timeout_unknown
            + before.overloaded
            + before.connection_errors
            + before.request_timeouts;
        self.progress
            .committed
            .store(self.result.committed_total, Ordering::Relaxed);
        self.progress
            .in_flight
            .store(self.requests_in_flight() as u64, Ordering::Relaxed);
        self.progress
            .errors
            .store(recovered + earlier + f.total(), Ordering::Relaxed);
    }
}

fn log_debug(conn: usize, message: &str) {
    if std::env::var_os("LOADGEN_DEBUG").is_some() {
        eprintln!("loadgen: connection {conn}: {message}");
    }
}
