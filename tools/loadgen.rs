//! `loadgen`: drives a raftchat cluster over the binary client protocol and reports committed
//! messages per second, latency percentiles, errors and the longest commit gap; `--verify`
//! then checks every acknowledged message against every node's chat log.
//!
//! ```text
//! loadgen --nodes 127.0.0.1:20000,127.0.0.1:20001,127.0.0.1:20002 --connections 16 --pipeline 64 --duration 10
//! loadgen 3 20000 --rate 50000 --duration 30 --verify --json
//! ```
//!
//! One thread per connection, each a small mio loop around a [`SessionCore`]: requests are
//! pipelined, many frames go out in one write and answers come in large reads, so the
//! generator costs far less CPU per message than the cluster it measures. Each connection
//! opens its own session; a failure (leader change, lost connection, timeout) is retried by
//! the session with the SAME (session, seq), so the state machine applies it once.
//!
//! Closed loop (default): each connection keeps `--pipeline` requests in flight and latency
//! runs from the send. Open loop (`--rate`): sends are scheduled at fixed intervals and
//! latency runs from the SCHEDULED time, so a stalled cluster shows up in the percentiles
//! instead of silently slowing the generator down (no coordinated omission). Scheduling
//! wakeups come from epoll, whose timeout resolution is 1 ms; lateness counts as latency.
//!
//! Message texts are `lg<run>-<conn>-<n>-` padded with `x` to `--size`: unique per run and
//! parseable back, which is what `--verify` relies on.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use raftchat::chat::validate::TEXT_BYTES_MAX;
use raftchat::chat::DEFAULT_ROOM;
use raftchat::client::proto::{self, Answer, ErrorKind, LogMessage, NodeStatus, Request};
use raftchat::client::{
    cluster_status, connect_stream, leader_and_term, read_log_pages, resolve, Event, Mutation,
    NodePicker, RetryPolicy, Session, SessionCore, SessionStats,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse_args(&args) {
        Ok(Parsed::Run(config)) => config,
        Ok(Parsed::Help(usage)) => {
            print!("{usage}");
            return;
        }
        Err(message) => {
            eprintln!("loadgen: {message}\n\n{}", usage());
            std::process::exit(2);
        }
    };
    match run(&config) {
        Ok(report) => {
            if config.json {
                println!("{}", report.json(&config));
            } else {
                print!("{}", report.text(&config));
            }
            // 1: the cluster lost, duplicated or reordered acknowledged messages; 3: the run
            // itself failed (a connection gave up after its retry budget).
            let verified_ok = report.verify.as_ref().is_none_or(|v| v.ok());
            std::process::exit(if !verified_ok {
                1
            } else if !report.fatal.is_empty() {
                3
            } else {
                0
            });
        }
        Err(message) => {
            eprintln!("loadgen: {message}");
            std::process::exit(3);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Command line

/// Send everything to the leader, or spread connections over every node (followers forward).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Leader,
    Any,
}

#[derive(Clone, Debug, PartialEq)]
struct Config {
    nodes: Vec<SocketAddr>,
    connections: usize,
    /// Requests in flight per connection at most.
    pipeline: usize,
    /// Message text bytes (at least the length of the unique prefix).
    size: usize,
    duration: Option<Duration>,
    /// Messages to commit after the warmup, over all connections.
    count: Option<u64>,
    /// Open loop: messages per second over all connections.
    rate: Option<f64>,
    warmup: Duration,
    json: bool,
    verify: bool,
    target: Target,
    op: OpKind,
}

/// What each request does: post a chat message (the default), or exercise the key-value state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Post,
    /// `set` of one of 16 keys per connection (exactly-once through the session).
    Set,
    /// Linearizable `get` (ReadIndex) of one of 16 keys per connection.
    Get,
    /// Alternating `set` and `get`.
    Mixed,
}

/// Keys per connection for `--op set|get|mixed`.
const KV_KEYS_PER_CONNECTION: u64 = 16;
/// Read request ids live above this bit, apart from the session's seqs.
const READ_ID_BASE: u64 = 1 << 62;

#[derive(Debug, PartialEq)]
enum Parsed {
    Run(Config),
    Help(String),
}

const DEFAULT_DURATION: Duration = Duration::from_secs(10);
const DEFAULT_PIPELINE_OPEN_LOOP: usize = 1000;
const CONNECTIONS_MAX: usize = 4096;

fn options() -> getopts::Options {
    let mut opts = getopts::Options::new();
    opts.optopt(
        "",
        "nodes",
        "cluster nodes in node-id order (default 127.0.0.1:20000-20002)",
        "HOST:PORT,...",
    );
    opts.optopt(
        "",
        "connections",
        "connections, each with its own session (default 16)",
        "N",
    );
    opts.optopt(
        "",
        "pipeline",
        "requests in flight per connection; 1 = closed loop (default 1, or 1000 with --rate)",
        "DEPTH",
    );
    opts.optopt(
        "",
        "size",
        "message text size in bytes (default 100)",
        "BYTES",
    );
    opts.optopt(
        "",
        "duration",
        "measure for this long after the warmup (default 10 unless --count)",
        "SECS",
    );
    opts.optopt(
        "",
        "count",
        "stop after this many messages after the warmup",
        "N",
    );
    opts.optopt(
        "",
        "rate",
        "open loop: schedule this many messages per second in all",
        "MSGS_PER_S",
    );
    opts.optopt(
        "",
        "warmup",
        "run this long before measuring (default 0)",
        "SECS",
    );
    opts.optopt(
        "",
        "target",
        "leader (default): every connection to the leader; any: spread over all nodes",
        "leader|any",
    );
    opts.optopt(
        "",
        "op",
        "post (default): chat messages; set, get (linearizable) or mixed: the key-value state",
        "post|set|get|mixed",
    );
    opts.optflag("", "json", "print the report as one JSON object");
    opts.optflag(
        "",
        "verify",
        "afterwards check every acknowledged message on every node; exit 1 on any loss \
         (not for a cluster with --retain-messages: dropped messages count as lost)",
    );
    opts.optflag("h", "help", "print this help");
    opts
}

fn usage() -> String {
    options().usage("Usage: loadgen [<count> <port>] [--nodes HOST:PORT,...] [options]\n\n<count> <port> is the seed's shorthand for 127.0.0.1:port ... port+count-1.")
}

fn parse_args(args: &[String]) -> Result<Parsed, String> {
    let matches = options().parse(args).map_err(|e| e.to_string())?;
    if matches.opt_present("help") {
        return Ok(Parsed::Help(usage()));
    }
    fn number<T: std::str::FromStr>(
        matches: &getopts::Matches,
        name: &str,
    ) -> Result<Option<T>, String> {
        matches
            .opt_str(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("--{name}: '{v}' is not a valid number"))
            })
            .transpose()
    }
    let seconds = |name: &str| -> Result<Option<Duration>, String> {
        match number::<f64>(&matches, name)? {
            None => Ok(None),
            Some(s) if (0.0..1e9).contains(&s) => Ok(Some(Duration::from_secs_f64(s))),
            Some(s) => Err(format!("--{name}: {s} is out of range")),
        }
    };

    let nodes = match (matches.opt_str("nodes"), matches.free.as_slice()) {
        (Some(_), [_, ..]) => return Err("give either --nodes or <count> <port>, not both".into()),
        (Some(list), []) => list
            .split(',')
            .map(|a| resolve(a.trim()).map_err(|e| format!("--nodes: '{a}': {e}")))
            .collect::<Result<Vec<_>, _>>()?,
        (None, [count, port]) => {
            let count: u16 = count
                .parse()
                .map_err(|_| format!("<count>: '{count}' is not a number"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("<port>: '{port}' is not a port"))?;
            if count == 0 || count > 64 || port == 0 || u32::from(port) + u32::from(count) > 65536 {
                return Err(format!("{count} nodes from port {port} is out of range"));
            }
            (0..count)
                .map(|j| SocketAddr::from(([127, 0, 0, 1], port + j)))
                .collect()
        }
        (None, []) => (0..3)
            .map(|j| SocketAddr::from(([127, 0, 0, 1], 20000 + j)))
            .collect(),
        (None, other) => return Err(format!("expected <count> <port>, got {other:?}")),
    };
    if nodes.is_empty() {
        return Err("--nodes: no nodes".into());
    }

    let connections = number(&matches, "connections")?.unwrap_or(16);
    if connections == 0 || connections > CONNECTIONS_MAX {
        return Err(format!("--connections must be 1..={CONNECTIONS_MAX}"));
    }
    let rate: Option<f64> = number(&matches, "rate")?;
    if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err("--rate must be a positive number".into());
    }
    let pipeline = number(&matches, "pipeline")?.unwrap_or(if rate.is_some() {
        DEFAULT_PIPELINE_OPEN_LOOP
    } else {
        1
    });
    if pipeline == 0 {
        return Err("--pipeline must be at least 1".into());
    }
    let size = number(&matches, "size")?.unwrap_or(100);
    if size == 0 || size > TEXT_BYTES_MAX {
        return Err(format!("--size must be 1..={TEXT_BYTES_MAX}"));
    }
    let count: Option<u64> = number(&matches, "count")?;
    if count == Some(0) {
        return Err("--count must be at least 1".into());
    }
    let mut duration = seconds("duration")?;
    if duration.is_some_and(|d| d.is_zero()) {
        return Err("--duration must be positive".into());
    }
    if duration.is_none() && count.is_none() {
        duration = Some(DEFAULT_DURATION);
    }
    let target = match matches.opt_str("target").as_deref() {
        None | Some("leader") => Target::Leader,
        Some("any") => Target::Any,
        Some(other) => return Err(format!("--target: '{other}' is neither leader nor any")),
    };
    let op = match matches.opt_str("op").as_deref() {
        None | Some("post") => OpKind::Post,
        Some("set") => OpKind::Set,
        Some("get") => OpKind::Get,
        Some("mixed") => OpKind::Mixed,
        Some(other) => return Err(format!("--op: '{other}' is not post, set, get or mixed")),
    };
    Ok(Parsed::Run(Config {
        nodes,
        connections,
        pipeline,
        size,
        duration,
        count,
        rate,
        warmup: seconds("warmup")?.unwrap_or(Duration::ZERO),
        json: matches.opt_present("json"),
        verify: matches.opt_present("verify"),
        target,
        op,
    }))
}

// ---------------------------------------------------------------------------------------------
// Message texts

/// The unique prefix of every text this run sends.
fn run_tag(run_id: u32) -> String {
    format!("lg{run_id:08x}-")
}

fn message_text(tag: &str, conn: usize, n: u64, size: usize) -> String {
    let mut text = String::with_capacity(size.max(tag.len() + 24));
    let _ = write!(text, "{tag}{conn}-{n}-");
    while text.len() < size {
        text.push('x');
    }
    text
}

/// `(conn, n)` of a text this run sent; `None` for anyone else's text.
fn parse_text(tag: &str, text: &str) -> Option<(usize, u64)> {
    let rest = text.strip_prefix(tag)?;
    let (conn, rest) = rest.split_once('-')?;
    let (n, _) = rest.split_once('-')?;
    Some((conn.parse().ok()?, n.parse().ok()?))
}

// ---------------------------------------------------------------------------------------------
// One connection

/// Shared with the progress printer; each worker writes its own.
#[derive(Default)]
struct Progress {
    committed: AtomicU64,
    in_flight: AtomicU64,
    errors: AtomicU64,
}

/// Commits further apart than this on one connection are recorded as a gap (µs).
const GAP_MIN_US: u64 = 2_000;
/// After the last send, how long to wait for answers still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const READ_CHUNK_BYTES: usize = 256 * 1024;
const LATENCY_MAX_US: u64 = 3_600_000_000;

/// What a connection is asked to do.
#[derive(Clone)]
struct Plan {
    nodes: Vec<SocketAddr>,
    op: OpKind,
    tag: String,
    size: usize,
    pipeline: usize,
    /// Open loop: the interval between this connection's sends, and its phase.
    interval: Option<Duration>,
    phase: Duration,
    warmup: Duration,
    duration: Option<Duration>,
    /// Messages to send after the warmup on this connection.
    quota: Option<u64>,
    policy: RetryPolicy,
}

/// Final answers other than `Posted`, and session-level failures.
#[derive(Clone, Copy, Debug, Default)]
struct Failures {
    rejected: u64,
    not_found: u64,
    other_answer: u64,
    session_expired: u64,
    /// The retry budget ran out with no node answering.
    unavailable: u64,
    protocol: u64,
}

impl Failures {
    fn add(&mut self, o: &Failures) {
        self.rejected += o.rejected;
        self.not_found += o.not_found;
        self.other_answer += o.other_answer;
        self.session_expired += o.session_expired;
        self.unavailable += o.unavailable;
        self.protocol += o.protocol;
    }

    fn total(&self) -> u64 {
        self.rejected
            + self.not_found
            + self.other_answer
            + self.session_expired
            + self.unavailable
            + self.protocol
    }
}

struct WorkerResult {
    conn: usize,
    histogram: Histogram<u64>,
    /// Posted messages as (n, position).
    acked: Vec<(u64, u64)>,
    /// Messages sent but never answered for good (may or may not be in the log).
    unknown: Vec<u64>,
    /// Messages numbered 0..sent.
    sent: u64,
    committed_total: u64,
    committed_measured: u64,
    session: SessionStats,
    failures: Failures,
    /// This connection's spans without a commit longer than GAP_MIN_US, µs since the start.
    gaps: Vec<(u64, u64)>,
    last_commit_us: u64,
    fatal: Option<String>,
}

/// A non-blocking read buffer of answers.
struct Input {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Input {
    fn new() -> Input {
        Input {
            buf: vec![0; READ_CHUNK_BYTES],
            start: 0,
            end: 0,
        }
    }

    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Reads until the socket would block. `Ok(false)`: the peer closed.
    fn read_from(&mut self, stream: &mut TcpStream) -> io::Result<bool> {
        loop {
            if self.start == self.end {
                self.clear();
            }
            let frame_len = proto::frame_len_hint(&self.buf[self.start..self.end]).unwrap_or(0);
            let want = frame_len.max(self.end - self.start) + READ_CHUNK_BYTES / 4;
            if self.buf.len() - self.start < want
                || self.buf.len() - self.end < READ_CHUNK_BYTES / 4
            {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.buf.len() < want {
                    self.buf.resize(want, 0);
                }
            }
            match stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn next_answer(&mut self) -> Result<Option<Answer>, proto::ProtoError> {
        match proto::decode_answer(&self.buf[self.start..self.end])? {
            None => Ok(None),
            Some((answer, used)) => {
                self.start += used;
                Ok(Some(answer))
            }
        }
    }
}

struct Worker {
    conn: usize,
    plan: Plan,
    progress: Arc<Progress>,
    start: Instant,
    core: SessionCore,
    picker: NodePicker,
    poll: Poll,
    stream: TcpStream,
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
    /// Counts connections; bumped whenever the session moves to a new one.
    generation: u64,
    result: WorkerResult,
}

const TOKEN: Token = Token(0);

/// How long to wait in epoll to wake at `wake`. epoll counts whole milliseconds (mio rounds
/// up), which would make open-loop sends up to 1 ms late; so wait the whole milliseconds in
/// epoll, and sleep (a high-resolution timer) through the last fraction, then only peek.
fn poll_timeout(wake: Instant) -> Duration {
    let left = wake.saturating_duration_since(Instant::now());
    let whole_ms = Duration::from_millis(left.as_millis() as u64);
    if whole_ms.is_zero() {
        std::thread::sleep(left);
    }
    whole_ms
}

/// Turns the blocking session's connection into a registered non-blocking mio stream.
fn into_mio(poll: &Poll, stream: std::net::TcpStream) -> io::Result<TcpStream> {
    stream.set_nonblocking(true)?;
    let mut stream = TcpStream::from_std(stream);
    poll.registry()
        .register(&mut stream, TOKEN, Interest::READABLE | Interest::WRITABLE)?;
    Ok(stream)
}

/// Opens a session on `first` (failing over as needed) and hands it to a mio stream.
fn open_session(
    plan: &Plan,
    first: usize,
    poll: &Poll,
) -> Result<(SessionCore, NodePicker, TcpStream), String> {
    let session = Session::open(&plan.nodes, first, plan.policy)
        .map_err(|e| format!("cannot open a session: {e}"))?;
    let (core, picker, conn) = session.into_parts();
    let conn = conn.ok_or("session without a connection")?;
    let (stream, leftover) = conn.into_parts().map_err(|e| e.to_string())?;
    debug_assert!(
        leftover.is_empty(),
        "nothing was pipelined before the hand-over"
    );
    let stream = into_mio(poll, stream).map_err(|e| e.to_string())?;
    Ok((core, picker, stream))
}

impl Worker {
    fn new(
        conn: usize,
        first: usize,
        plan: Plan,
        progress: Arc<Progress>,
    ) -> Result<Worker, String> {
        let poll = Poll::new().map_err(|e| e.to_string())?;
        let (core, picker, stream) = open_session(&plan, first, &poll)?;
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
            poll,
            stream,
            input: Input::new(),
            in_flight: HashMap::new(),
            reads: HashMap::new(),
            next_read_id: READ_ID_BASE,
            next_n: 0,
            sent_measured: 0,
            last_progress: now,
            deferred_until: None,
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

    fn run(mut self, start: Instant) -> WorkerResult {
        self.start = start;
        self.last_progress = start;
        if let Err(e) = self.run_loop() {
            self.result.fatal = Some(e);
        }
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

    fn run_loop(&mut self) -> Result<(), String> {
        let mut events = Events::with_capacity(16);
        let mut next_send = self.start + self.plan.phase;
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if drain_deadline.is_none() {
                if self.sending_done(now) {
                    drain_deadline = Some(now + DRAIN_TIMEOUT);
                } else if let Some(interval) = self.plan.interval {
                    while next_send <= now
                        && self.requests_in_flight() < self.plan.pipeline
                        && !self.sending_done(next_send)
                    {
                        self.submit(next_send)?;
                        next_send += interval;
                    }
                } else {
                    while self.requests_in_flight() < self.plan.pipeline && !self.sending_done(now)
                    {
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
            if let Some(deadline) = drain_deadline {
                if self.requests_in_flight() == 0 || now >= deadline {
                    return Ok(());
                }
            }

            let request_deadline = self.last_progress + self.plan.policy.request_timeout;
            let mut wake = request_deadline;
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
            match self.poll.poll(&mut events, Some(poll_timeout(wake))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("poll: {e}")),
            }
            self.read_in()?;
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
        }
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
                nick: format!("lg-{}", self.conn),
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

    /// Writes as much queued output as the socket takes; the rest waits for WRITABLE.
    fn write_out(&mut self) -> Result<(), String> {
        loop {
            let output = self.core.output();
            if output.is_empty() {
                return Ok(());
            }
            match self.stream.write(output) {
                Ok(0) => {
                    return self.connection_lost(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "write returned 0",
                    ))
                }
                Ok(n) => {
                    output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.connection_lost(e),
            }
        }
    }

    fn read_in(&mut self) -> Result<(), String> {
        match self.input.read_from(&mut self.stream) {
            Ok(true) => {}
            Ok(false) => {
                // Answers that arrived before the close still count; if one of them already
                // moved the session elsewhere, the close is old news.
                let generation = self.generation;
                self.drain_answers()?;
                if generation != self.generation {
                    return Ok(());
                }
                return self.connection_lost(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed by the node",
                ));
            }
            Err(e) => return self.connection_lost(e),
        }
        self.drain_answers()
    }

    /// Handles every complete answer in the input buffer, stopping early if one of them moved
    /// the session to another connection (the rest of the buffer belongs to the old one).
    fn drain_answers(&mut self) -> Result<(), String> {
        loop {
            let answer = match self.input.next_answer() {
                Ok(Some(answer)) => answer,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.result.failures.protocol += 1;
                    return self.connection_lost(e.into());
                }
            };
            let now = Instant::now();
            self.last_progress = now;
            if self.reads.contains_key(&answer.req_id()) {
                self.read_completed(answer, now);
                continue;
            }
            match self.core.on_answer(answer) {
                Event::Completed(completion) => {
                    self.picker.progress();
                    self.completed(completion.seq, completion.answer, now);
                }
                Event::Failover { kind, leader_hint } => {
                    let node = self.picker.current();
                    log_debug(
                        self.conn,
                        &format!("{} from node {node}, hint {leader_hint:?}", kind.name()),
                    );
                    return self.failover(leader_hint);
                }
                Event::Deferred => {
                    self.deferred_until
                        .get_or_insert(now + self.plan.policy.overload_pause);
                }
                Event::Expired => return self.session_expired(),
                Event::Stale => {}
            }
        }
    }

    fn completed(&mut self, seq: u64, answer: Answer, now: Instant) {
        let Some((n, latency_from)) = self.in_flight.remove(&seq) else {
            debug_assert!(false, "a completion for seq {seq} that was never submitted");
            return;
        };
        match answer {
            Answer::Posted { position, .. } => {
                self.result.acked.push((n, position));
                self.record_done(latency_from, now);
            }
            Answer::KvAck { .. } => self.record_done(latency_from, now),
            Answer::Error {
                kind: ErrorKind::Rejected,
                ..
            } => self.result.failures.rejected += 1,
            Answer::Error {
                kind: ErrorKind::NotFound,
                ..
            } => self.result.failures.not_found += 1,
            _ => {
                self.result.failures.other_answer += 1;
                self.result.unknown.push(n);
            }
        }
    }

    /// One request finished for good (committed write or served read): count it and its latency.
    fn record_done(&mut self, latency_from: Instant, now: Instant) {
        self.result.committed_total += 1;
        if latency_from >= self.measure_start() {
            self.result.committed_measured += 1;
            let latency_us = now.saturating_duration_since(latency_from).as_micros() as u64;
            self.result.histogram.saturating_record(latency_us.max(1));
        }
        let t_us = now.saturating_duration_since(self.start).as_micros() as u64;
        if t_us.saturating_sub(self.result.last_commit_us) > GAP_MIN_US {
            self.result.gaps.push((self.result.last_commit_us, t_us));
        }
        self.result.last_commit_us = t_us;
    }

    /// The answer to a key-value read.
    fn read_completed(&mut self, answer: Answer, now: Instant) {
        let Some((_, latency_from)) = self.reads.remove(&answer.req_id()) else {
            return;
        };
        match answer {
            Answer::KvValue { .. } => self.record_done(latency_from, now),
            Answer::Error {
                kind: ErrorKind::NotFound,
                ..
            } => self.result.failures.not_found += 1,
            _ => self.result.failures.other_answer += 1,
        }
    }

    fn connection_lost(&mut self, error: io::Error) -> Result<(), String> {
        self.core.stats.connection_errors += 1;
        log_debug(self.conn, &format!("connection lost: {error}"));
        self.failover(None)
    }

    /// Reconnects (leader hint first, else round-robin) and re-sends every pending request
    /// with its seq. Connecting blocks this connection's thread only.
    fn failover(&mut self, leader_hint: Option<u64>) -> Result<(), String> {
        self.generation += 1;
        // Reads are not retried (they changed nothing): the ones in flight count as failed.
        self.result.failures.other_answer += self.reads.len() as u64;
        self.reads.clear();
        let _ = self.poll.registry().deregister(&mut self.stream);
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
            let connected =
                connect_stream(self.plan.nodes[target], self.plan.policy.connect_timeout)
                    .and_then(|s| into_mio(&self.poll, s));
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
    fn session_expired(&mut self) -> Result<(), String> {
        self.result.failures.session_expired += 1;
        for seq in self.core.abandon() {
            if let Some((n, _)) = self.in_flight.remove(&seq) {
                self.result.unknown.push(n);
            }
        }
        debug_assert!(self.in_flight.is_empty());
        self.result.session.add(&self.core.stats);
        let _ = self.poll.registry().deregister(&mut self.stream);
        self.input.clear();
        self.deferred_until = None;
        self.generation += 1;
        let (core, picker, stream) = open_session(&self.plan, self.picker.current(), &self.poll)?;
        (self.core, self.picker, self.stream) = (core, picker, stream);
        self.last_progress = Instant::now();
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

// ---------------------------------------------------------------------------------------------
// The run

#[derive(Debug, Clone, Copy, PartialEq)]
struct Percentiles {
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

struct Report {
    committed_measured: u64,
    committed_total: u64,
    elapsed: Duration,
    latency: Percentiles,
    session: SessionStats,
    failures: Failures,
    unknown: u64,
    /// The longest span with no commit anywhere, and when it began (µs since the start);
    /// `None` when every span was under GAP_MIN_US.
    longest_gap: Option<(u64, u64)>,
    start_view: (Option<u64>, u64),
    end_view: (Option<u64>, u64),
    fatal: Vec<String>,
    verify: Option<VerifyReport>,
}

fn run(config: &Config) -> Result<Report, String> {
    let mut nodes = config.nodes.clone();
    let statuses = cluster_status(&nodes);
    if statuses.iter().all(Result::is_err) {
        return Err(format!(
            "no node answered Status: {}",
            statuses[0]
                .as_ref()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        ));
    }
    order_by_node_id(&mut nodes, &statuses);
    let start_view = wait_for_leader(&nodes, config.target);
    let first_node = |conn: usize| match config.target {
        Target::Leader => start_view.0.map_or(0, |l| l as usize % nodes.len()),
        Target::Any => conn % nodes.len(),
    };

    let run_id: u32 = rand::random();
    let connections = config.connections;
    let plan = Plan {
        nodes: nodes.clone(),
        op: config.op,
        tag: run_tag(run_id),
        size: config.size,
        pipeline: config.pipeline,
        interval: config
            .rate
            .map(|r| Duration::from_secs_f64(connections as f64 / r)),
        phase: Duration::ZERO,
        warmup: config.warmup,
        duration: config.duration,
        quota: None,
        policy: RetryPolicy::default(),
    };
    let progress: Vec<Arc<Progress>> = (0..connections)
        .map(|_| Arc::new(Progress::default()))
        .collect();
    let barrier = Arc::new(Barrier::new(connections + 1));
    let start_cell = Arc::new(std::sync::OnceLock::<Instant>::new());
    let finished = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for conn in 0..connections {
        let mut plan = plan.clone();
        if let Some(interval) = plan.interval {
            plan.phase = interval.mul_f64(conn as f64 / connections as f64);
        }
        plan.quota = config
            .count
            .map(|c| c / connections as u64 + u64::from((conn as u64) < c % connections as u64));
        let (progress, barrier, start_cell, finished) = (
            Arc::clone(&progress[conn]),
            Arc::clone(&barrier),
            Arc::clone(&start_cell),
            Arc::clone(&finished),
        );
        let first = first_node(conn);
        let thread = std::thread::Builder::new()
            .name(format!("lg-{conn}"))
            .spawn(move || {
                let worker = Worker::new(conn, first, plan, progress);
                barrier.wait();
                let result = match worker {
                    Ok(worker) => {
                        let start = *start_cell.wait();
                        if worker.plan.quota == Some(0) {
                            empty_result(conn, None)
                        } else {
                            worker.run(start)
                        }
                    }
                    Err(e) => empty_result(conn, Some(e)),
                };
                finished.fetch_add(1, Ordering::SeqCst);
                result
            });
        threads.push(thread.map_err(|e| format!("cannot start a thread: {e}"))?);
    }
    barrier.wait();
    let start = Instant::now();
    let _ = start_cell.set(start);
    print_progress_until_done(start, &progress, &finished, connections);
    let mut results = Vec::new();
    for thread in threads {
        results.push(
            thread
                .join()
                .map_err(|_| "a connection thread panicked".to_string())?,
        );
    }
    let end = Instant::now();

    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3).map_err(|e| e.to_string())?;
    let mut session = SessionStats::default();
    let mut failures = Failures::default();
    let (mut committed_measured, mut committed_total, mut unknown) = (0, 0, 0);
    let mut fatal = Vec::new();
    for r in &results {
        histogram.add(&r.histogram).map_err(|e| e.to_string())?;
        session.add(&r.session);
        failures.add(&r.failures);
        committed_measured += r.committed_measured;
        committed_total += r.committed_total;
        unknown += r.unknown.len() as u64;
        fatal.extend(
            r.fatal
                .iter()
                .map(|e| format!("connection {}: {e}", r.conn)),
        );
    }
    let last_commit_us = results.iter().map(|r| r.last_commit_us).max().unwrap_or(0);
    let gap_lists: Vec<Vec<(u64, u64)>> = results.iter().map(|r| r.gaps.clone()).collect();
    let longest_gap =
        longest_common_gap(&gap_lists, last_commit_us).filter(|(_, len)| *len > GAP_MIN_US);
    let end_view = leader_and_term(&cluster_status(&nodes));
    let verify = config.verify.then(|| {
        let tag = run_tag(run_id);
        let mut verifier = Verifier::new(&tag, &results);
        for (node, addr) in nodes.iter().enumerate() {
            verifier.check_node(node, |on_page| read_log_pages(addr, on_page));
        }
        verifier.finish()
    });
    Ok(Report {
        committed_measured,
        committed_total,
        elapsed: end.saturating_duration_since(start + config.warmup),
        latency: Percentiles {
            p50_us: histogram.value_at_quantile(0.5),
            p90_us: histogram.value_at_quantile(0.9),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        },
        session,
        failures,
        unknown,
        longest_gap,
        start_view,
        end_view,
        fatal,
        verify,
    })
}

fn empty_result(conn: usize, fatal: Option<String>) -> WorkerResult {
    WorkerResult {
        conn,
        histogram: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
            .expect("constant bounds are valid"),
        acked: Vec::new(),
        unknown: Vec::new(),
        sent: 0,
        committed_total: 0,
        committed_measured: 0,
        session: SessionStats::default(),
        failures: Failures::default(),
        gaps: vec![(0, u64::MAX)],
        last_commit_us: 0,
        fatal,
    }
}

/// Puts `nodes` in node-id order when every node answered with a distinct id in range, so a
/// leader hint (a node id) indexes the list; otherwise keeps the given order and says so.
fn order_by_node_id(nodes: &mut Vec<SocketAddr>, statuses: &[io::Result<NodeStatus>]) {
    let ids: Vec<Option<u64>> = statuses
        .iter()
        .map(|s| s.as_ref().ok().map(|s| s.node_id))
        .collect();
    let mut ordered = vec![None; nodes.len()];
    for (addr, id) in nodes.iter().zip(&ids) {
        match id {
            Some(id) if (*id as usize) < ordered.len() && ordered[*id as usize].is_none() => {
                ordered[*id as usize] = Some(*addr)
            }
            Some(id) => {
                eprintln!("loadgen: node {addr} reports id {id}, which does not fit the node list; keeping the given order");
                return;
            }
            None => {}
        }
    }
    if ids.iter().all(Option::is_some) {
        *nodes = ordered.into_iter().flatten().collect();
    } else if ids
        .iter()
        .enumerate()
        .any(|(i, id)| id.is_some_and(|id| id as usize != i))
    {
        eprintln!("loadgen: not every node answered Status; keeping the given node order");
    }
}

/// The leader and term now; with `--target leader`, waits up to 5 s for an election to finish.
fn wait_for_leader(nodes: &[SocketAddr], target: Target) -> (Option<u64>, u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let view = leader_and_term(&cluster_status(nodes));
        if view.0.is_some() || target == Target::Any || Instant::now() >= deadline {
            return view;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print_progress_until_done(
    start: Instant,
    progress: &[Arc<Progress>],
    finished: &AtomicUsize,
    connections: usize,
) {
    let mut last_committed = 0;
    let mut next_tick = start + Duration::from_secs(1);
    while finished.load(Ordering::SeqCst) < connections {
        std::thread::sleep(
            Duration::from_millis(20).min(next_tick.saturating_duration_since(Instant::now())),
        );
        let now = Instant::now();
        if now < next_tick {
            continue;
        }
        let committed: u64 = progress
            .iter()
            .map(|p| p.committed.load(Ordering::Relaxed))
            .sum();
        let in_flight: u64 = progress
            .iter()
            .map(|p| p.in_flight.load(Ordering::Relaxed))
            .sum();
        let errors: u64 = progress
            .iter()
            .map(|p| p.errors.load(Ordering::Relaxed))
            .sum();
        eprintln!(
            "[{:6.1}s] committed/s {:>9}  in flight {:>6}  errors {}",
            now.duration_since(start).as_secs_f64(),
            committed - last_committed,
            in_flight,
            errors
        );
        last_committed = committed;
        next_tick += Duration::from_secs(1);
    }
}

/// The longest span in `[0, window_end_us]` inside a gap of every list, as (start, length).
/// Each list holds one connection's gaps, sorted and disjoint.
fn longest_common_gap(lists: &[Vec<(u64, u64)>], window_end_us: u64) -> Option<(u64, u64)> {
    let mut common = vec![(0, window_end_us)];
    for list in lists {
        let mut next = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < common.len() && j < list.len() {
            let start = common[i].0.max(list[j].0);
            let end = common[i].1.min(list[j].1);
            if start < end {
                next.push((start, end));
            }
            if common[i].1 < list[j].1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        common = next;
    }
    common
        .into_iter()
        .map(|(s, e)| (s, e - s))
        .max_by_key(|&(_, len)| len)
}

// ---------------------------------------------------------------------------------------------
// Verification

#[derive(Debug, Default, Clone, PartialEq)]
struct VerifyReport {
    acked: u64,
    nodes_checked: Vec<usize>,
    /// (node, error) for nodes whose log could not be read.
    unreachable: Vec<(usize, String)>,
    lost: u64,
    duplicated: u64,
    misplaced: u64,
    /// Texts with this run's tag that no connection sent.
    foreign: u64,
    /// Positions where a node's entry differs from the first node's.
    diverged: u64,
    /// Human-readable first problems, a few of them.
    examples: Vec<String>,
}

impl VerifyReport {
    fn ok(&self) -> bool {
        !self.nodes_checked.is_empty()
            && self.lost == 0
            && self.duplicated == 0
            && self.misplaced == 0
            && self.foreign == 0
            && self.diverged == 0
    }

    fn note(&mut self, example: String) {
        if self.examples.len() < 10 {
            self.examples.push(example);
        }
    }
}

/// Checks each node's log against the acknowledgements, and every node against the first.
struct Verifier {
    tag: String,
    /// Per connection, per message number: the acked position (0: not acked).
    acked_position: Vec<Vec<u64>>,
    /// Per connection, per message number: occurrences in the node being checked.
    seen: Vec<Vec<u8>>,
    /// A fingerprint of each entry of the first readable node's log.
    reference: Option<(usize, Vec<u64>)>,
    report: VerifyReport,
}

impl Verifier {
    fn new(tag: &str, results: &[WorkerResult]) -> Verifier {
        let conns = results.iter().map(|r| r.conn + 1).max().unwrap_or(0);
        let mut acked_position = vec![Vec::new(); conns];
        let mut acked = 0;
        for r in results {
            let positions = &mut acked_position[r.conn];
            positions.resize(r.sent as usize, 0);
            for &(n, position) in &r.acked {
                positions[n as usize] = position;
                acked += 1;
            }
        }
        let seen = acked_position.iter().map(|p| vec![0; p.len()]).collect();
        Verifier {
            tag: tag.to_string(),
            acked_position,
            seen,
            reference: None,
            report: VerifyReport {
                acked,
                ..VerifyReport::default()
            },
        }
    }

    /// Reads node `node`'s log through `read` (which feeds pages to the closure it is given).
    fn check_node(
        &mut self,
        node: usize,
        read: impl FnOnce(&mut dyn FnMut(Vec<LogMessage>)) -> io::Result<u64>,
    ) {
        for seen in &mut self.seen {
            seen.iter_mut().for_each(|s| *s = 0);
        }
        let mut fingerprints = Vec::new();
        let mut report = std::mem::take(&mut self.report);
        let tag = self.tag.clone();
        let reference = self.reference.take();
        let result = read(&mut |page: Vec<LogMessage>| {
            for m in page {
                let fingerprint = fingerprint(&m);
                match &reference {
                    Some((first, prints)) => {
                        if let Some(&expected) = prints.get(m.position as usize - 1) {
                            if expected != fingerprint {
                                report.diverged += 1;
                                report.note(format!(
                                    "node {node} differs from node {first} at position {}",
                                    m.position
                                ));
                            }
                        }
                    }
                    None => fingerprints.push(fingerprint),
                }
                let Some((conn, n)) = parse_text(&tag, &m.text) else {
                    continue;
                };
                let Some(seen) = self.seen.get_mut(conn).and_then(|s| s.get_mut(n as usize)) else {
                    report.foreign += 1;
                    report.note(format!(
                        "node {node}: position {} holds '{}', which this run never sent",
                        m.position, m.text
                    ));
                    continue;
                };
                *seen = seen.saturating_add(1);
                if *seen == 2 {
                    report.duplicated += 1;
                    report.note(format!(
                        "node {node}: message {conn}-{n} appears twice (again at {})",
                        m.position
                    ));
                }
                let acked = self.acked_position[conn][n as usize];
                if acked != 0 && acked != m.position {
                    report.misplaced += 1;
                    report.note(format!(
                        "node {node}: message {conn}-{n} acked at {acked} but found at {}",
                        m.position
                    ));
                }
            }
        });
        self.reference = reference;
        match result {
            Ok(_) => {
                report.nodes_checked.push(node);
                for (conn, positions) in self.acked_position.iter().enumerate() {
                    for (n, &acked) in positions.iter().enumerate() {
                        if acked != 0 && self.seen[conn][n] == 0 {
                            report.lost += 1;
                            report.note(format!(
                                "node {node}: message {conn}-{n}, acked at {acked}, is missing"
                            ));
                        }
                    }
                }
                if self.reference.is_none() {
                    self.reference = Some((node, fingerprints));
                }
            }
            Err(e) => report.unreachable.push((node, e.to_string())),
        }
        self.report = report;
    }

    fn finish(self) -> VerifyReport {
        self.report
    }
}

fn fingerprint(m: &LogMessage) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (m.position, m.timestamp_ms, &m.room, &m.nick, &m.text).hash(&mut h);
    h.finish()
}

// ---------------------------------------------------------------------------------------------
// Reports

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn view_text((leader, term): (Option<u64>, u64)) -> String {
    match leader {
        Some(l) => format!("leader {l} term {term}"),
        None => format!("no leader (term {term})"),
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt(v: Option<u64>) -> String {
    v.map_or_else(|| "null".to_string(), |v| v.to_string())
}

impl Report {
    fn msgs_per_s(&self) -> f64 {
        self.committed_measured as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn mb_per_s(&self, config: &Config) -> f64 {
        self.msgs_per_s() * config.size as f64 / 1e6
    }

    /// Every error kind with its count, recovered ones (retried) first.
    fn errors(&self) -> Vec<(&'static str, u64)> {
        let mut errors: Vec<(&'static str, u64)> = self
            .session
            .named()
            .into_iter()
            .filter(|(name, _)| *name != "reconnects" && *name != "resent")
            .collect();
        let f = &self.failures;
        errors.extend([
            ("rejected", f.rejected),
            ("not_found", f.not_found),
            ("other_answer", f.other_answer),
            ("session_expired", f.session_expired),
            ("unavailable", f.unavailable),
            ("protocol", f.protocol),
            ("unknown_outcome", self.unknown),
        ]);
        errors
    }

    fn text(&self, config: &Config) -> String {
        let mut out = String::new();
        let mode = match config.rate {
            Some(rate) => format!("open loop at {rate} msgs/s"),
            None => "closed loop".to_string(),
        };
        let _ = writeln!(
            out,
            "loadgen: {} nodes, {} connections, pipeline {}, {}-byte messages, {mode}, target {:?}, op {:?}",
            config.nodes.len(),
            config.connections,
            config.pipeline,
            config.size,
            config.target,
            config.op
        );
        let _ = writeln!(
            out,
            "committed   {} messages in {:.2} s ({} in all, warmup included)",
            self.committed_measured,
            self.elapsed.as_secs_f64(),
            self.committed_total
        );
        let _ = writeln!(
            out,
            "throughput  {:.0} msgs/s, {:.2} MB/s of text",
            self.msgs_per_s(),
            self.mb_per_s(config)
        );
        let l = &self.latency;
        let _ = writeln!(
            out,
            "latency     p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us)
        );
        let errors: Vec<String> = self
            .errors()
            .into_iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(out, "errors      {}", errors.join(", "));
        let _ = writeln!(
            out,
            "recovery    {} reconnects, {} requests re-sent with their seq",
            self.session.reconnects, self.session.resent
        );
        match self.longest_gap {
            Some((at, len)) => {
                let _ = writeln!(
                    out,
                    "longest gap {:.1} ms without a commit, from {:.3} s",
                    ms(len),
                    at as f64 / 1e6
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "longest gap under {} ms without a commit",
                    GAP_MIN_US / 1000
                );
            }
        }
        let _ = writeln!(
            out,
            "cluster     start: {}; end: {}",
            view_text(self.start_view),
            view_text(self.end_view)
        );
        for e in &self.fatal {
            let _ = writeln!(out, "failed      {e}");
        }
        if let Some(v) = &self.verify {
            let verdict = if v.ok() { "OK" } else { "FAILED" };
            let _ = writeln!(
                out,
                "verify      {verdict}: {} acked messages checked on nodes {:?}: {} lost, {} duplicated, {} misplaced, {} foreign, {} diverged",
                v.acked, v.nodes_checked, v.lost, v.duplicated, v.misplaced, v.foreign, v.diverged
            );
            for (node, e) in &v.unreachable {
                let _ = writeln!(out, "verify      node {node} not checked: {e}");
            }
            for example in &v.examples {
                let _ = writeln!(out, "verify      {example}");
            }
        }
        out
    }

    fn json(&self, config: &Config) -> String {
        let mut o = String::from("{");
        let nodes: Vec<String> = config
            .nodes
            .iter()
            .map(|a| json_str(&a.to_string()))
            .collect();
        let _ = write!(
            o,
            "\"nodes\":[{}],\"connections\":{},\"pipeline\":{},\"size\":{},",
            nodes.join(","),
            config.connections,
            config.pipeline,
            config.size
        );
        let _ = write!(
            o,
            "\"rate\":{},\"target\":{},\"op\":{},",
            config.rate.map_or("null".into(), |r| r.to_string()),
            json_str(if config.target == Target::Leader {
                "leader"
            } else {
                "any"
            }),
            json_str(&format!("{:?}", config.op).to_lowercase())
        );
        let _ = write!(
            o,
            "\"committed\":{},\"committed_total\":{},\"elapsed_s\":{:.3},",
            self.committed_measured,
            self.committed_total,
            self.elapsed.as_secs_f64()
        );
        let _ = write!(
            o,
            "\"msgs_per_s\":{:.1},\"mb_per_s\":{:.3},",
            self.msgs_per_s(),
            self.mb_per_s(config)
        );
        let l = &self.latency;
        let _ = write!(
            o,
            "\"latency_ms\":{{\"p50\":{:.3},\"p90\":{:.3},\"p99\":{:.3},\"p99.9\":{:.3},\"max\":{:.3}}},",
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us)
        );
        let errors: Vec<String> = self
            .errors()
            .into_iter()
            .map(|(k, v)| format!("{}:{v}", json_str(k)))
            .collect();
        let _ = write!(
            o,
            "\"errors\":{{{}}},\"reconnects\":{},\"resent\":{},",
            errors.join(","),
            self.session.reconnects,
            self.session.resent
        );
        let (gap_at, gap_len) = self
            .longest_gap
            .map_or((None, None), |(at, len)| (Some(at), Some(len)));
        let _ = write!(
            o,
            "\"longest_gap_ms\":{},\"longest_gap_at_s\":{},\"gap_resolution_ms\":{},",
            gap_len.map_or("null".into(), |v| format!("{:.3}", ms(v))),
            gap_at.map_or("null".into(), |v| format!("{:.3}", v as f64 / 1e6)),
            GAP_MIN_US / 1000
        );
        let _ = write!(
            o,
            "\"leader_start\":{},\"term_start\":{},\"leader_end\":{},\"term_end\":{},",
            json_opt(self.start_view.0),
            self.start_view.1,
            json_opt(self.end_view.0),
            self.end_view.1
        );
        let fatal: Vec<String> = self.fatal.iter().map(|e| json_str(e)).collect();
        let _ = write!(o, "\"failed\":[{}],", fatal.join(","));
        match &self.verify {
            None => o.push_str("\"verify\":null"),
            Some(v) => {
                let checked: Vec<String> = v.nodes_checked.iter().map(usize::to_string).collect();
                let unreachable: Vec<String> = v
                    .unreachable
                    .iter()
                    .map(|(n, e)| format!("{{\"node\":{n},\"error\":{}}}", json_str(e)))
                    .collect();
                let examples: Vec<String> = v.examples.iter().map(|e| json_str(e)).collect();
                let _ = write!(
                    o,
                    "\"verify\":{{\"ok\":{},\"acked\":{},\"nodes_checked\":[{}],\"unreachable\":[{}],\"lost\":{},\"duplicated\":{},\"misplaced\":{},\"foreign\":{},\"diverged\":{},\"examples\":[{}]}}",
                    v.ok(),
                    v.acked,
                    checked.join(","),
                    unreachable.join(","),
                    v.lost,
                    v.duplicated,
                    v.misplaced,
                    v.foreign,
                    v.diverged,
                    examples.join(",")
                );
            }
        }
        o.push('}');
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftchat::client::fake::{self, FakeCluster};
    use raftchat::client::Request;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn parse(s: &str) -> Result<Config, String> {
        match parse_args(&args(s))? {
            Parsed::Run(config) => Ok(config),
            Parsed::Help(_) => Err("help".into()),
        }
    }

    fn local(ports: std::ops::Range<u16>) -> Vec<SocketAddr> {
        ports
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect()
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.nodes, local(20000..20003));
        assert_eq!((c.connections, c.pipeline, c.size), (16, 1, 100));
        assert_eq!(
            (c.duration, c.count, c.rate),
            (Some(DEFAULT_DURATION), None, None)
        );
        assert_eq!(
            (c.warmup, c.json, c.verify, c.target),
            (Duration::ZERO, false, false, Target::Leader)
        );
    }

    #[test]
    fn operations() {
        assert_eq!(parse("").unwrap().op, OpKind::Post);
        for (text, op) in [
            ("post", OpKind::Post),
            ("set", OpKind::Set),
            ("get", OpKind::Get),
            ("mixed", OpKind::Mixed),
        ] {
            assert_eq!(parse(&format!("--op {text}")).unwrap().op, op);
        }
        assert!(parse("--op delete").is_err());
    }

    #[test]
    fn node_lists_and_the_seed_shorthand() {
        assert_eq!(parse("3 21000").unwrap().nodes, local(21000..21003));
        assert_eq!(
            parse("--nodes 127.0.0.1:7000,127.0.0.1:7002 --count 5")
                .unwrap()
                .nodes,
            vec![
                SocketAddr::from(([127, 0, 0, 1], 7000)),
                SocketAddr::from(([127, 0, 0, 1], 7002))
            ]
        );
        assert!(
            parse("--nodes 127.0.0.1:7000 3 21000").is_err(),
            "both forms"
        );
        assert!(parse("3").is_err());
        assert!(parse("0 21000").is_err());
        assert!(parse("3 65535").is_err(), "ports past 65535");
        assert!(parse("x 21000").is_err());
        assert!(parse("--nodes 127.0.0.1").is_err(), "no port");
    }

    #[test]
    fn modes_and_limits() {
        let c = parse("--connections 4 --pipeline 64 --size 200 --duration 2.5 --warmup 1 --json --verify --target any").unwrap();
        assert_eq!((c.connections, c.pipeline, c.size), (4, 64, 200));
        assert_eq!(
            (c.duration, c.warmup),
            (Some(Duration::from_millis(2500)), Duration::from_secs(1))
        );
        assert!(c.json && c.verify && c.target == Target::Any);
        let c = parse("--count 1000").unwrap();
        assert_eq!(
            (c.count, c.duration),
            (Some(1000), None),
            "--count alone runs until the count"
        );
        let c = parse("--rate 50000").unwrap();
        assert_eq!(
            (c.rate, c.pipeline),
            (Some(50000.0), DEFAULT_PIPELINE_OPEN_LOOP)
        );
        assert_eq!(parse("--rate 100 --pipeline 1").unwrap().pipeline, 1);
        for bad in [
            "--connections 0",
            "--pipeline 0",
            "--size 0",
            "--size 4097",
            "--rate 0",
            "--rate -5",
            "--rate nan",
            "--duration 0",
            "--duration -1",
            "--count 0",
            "--target mars",
            "--bogus",
            "--warmup x",
        ] {
            assert!(parse(bad).is_err(), "{bad} is refused");
        }
        assert!(matches!(parse_args(&args("--help")), Ok(Parsed::Help(_))));
    }

    #[test]
    fn texts_are_unique_padded_and_parse_back() {
        let tag = run_tag(0xabc);
        let text = message_text(&tag, 12, 345, 100);
        assert_eq!(text.len(), 100);
        assert!(text.starts_with("lg00000abc-12-345-xxx"));
        assert_eq!(parse_text(&tag, &text), Some((12, 345)));
        let short = message_text(&tag, 1, 2, 1);
        assert_eq!(
            short, "lg00000abc-1-2-",
            "never shorter than the unique prefix"
        );
        assert_eq!(parse_text(&tag, &short), Some((1, 2)));
        assert_eq!(
            parse_text(&run_tag(0xabd), &text),
            None,
            "another run's text"
        );
        assert_eq!(parse_text(&tag, "hello"), None);
        assert_eq!(parse_text(&tag, "lg00000abc-x-1-"), None);
    }

    #[test]
    fn the_common_gap_is_where_no_connection_committed() {
        // Connection A idle 10..50 and 100..; B idle 30..80 and 90..: all idle 30..50, 100..end.
        let a = vec![(10, 50), (100, u64::MAX)];
        let b = vec![(30, 80), (90, u64::MAX)];
        assert_eq!(
            longest_common_gap(&[a.clone(), b.clone()], 110),
            Some((30, 20))
        );
        assert_eq!(
            longest_common_gap(&[a.clone(), b.clone()], 200),
            Some((100, 100))
        );
        assert_eq!(
            longest_common_gap(&[a, vec![(60, 70), (200, u64::MAX)]], 150),
            None
        );
        assert_eq!(
            longest_common_gap(&[vec![(0, u64::MAX)]], 500),
            Some((0, 500))
        );
    }

    fn result_with(conn: usize, sent: u64, acked: &[(u64, u64)]) -> WorkerResult {
        let mut r = empty_result(conn, None);
        r.sent = sent;
        r.acked = acked.to_vec();
        r
    }

    fn log_of(tag: &str, entries: &[(usize, u64)]) -> Vec<LogMessage> {
        entries
            .iter()
            .enumerate()
            .map(|(i, &(conn, n))| LogMessage {
                position: i as u64 + 1,
                timestamp_ms: 1000 + i as u64,
                room: "general".into(),
                nick: format!("lg-{conn}"),
                text: message_text(tag, conn, n, 30),
            })
            .collect()
    }

    fn verify_logs(tag: &str, results: &[WorkerResult], logs: &[Vec<LogMessage>]) -> VerifyReport {
        let mut v = Verifier::new(tag, results);
        for (node, log) in logs.iter().enumerate() {
            let log = log.clone();
            v.check_node(node, move |on_page| {
                let n = log.len() as u64;
                for page in log.chunks(2) {
                    on_page(page.to_vec());
                }
                Ok(n)
            });
        }
        v.finish()
    }

    #[test]
    fn verify_accepts_a_faithful_log_and_names_every_kind_of_fault() {
        let tag = run_tag(7);
        // conn 0 sent 0,1,2 (2 unacked, absent); conn 1 sent 0 (acked).
        let results = [
            result_with(0, 3, &[(0, 1), (1, 3)]),
            result_with(1, 1, &[(0, 2)]),
        ];
        let good = log_of(&tag, &[(0, 0), (1, 0), (0, 1)]);
        let v = verify_logs(&tag, &results, &[good.clone(), good.clone()]);
        assert!(v.ok(), "{v:?}");
        assert_eq!((v.acked, v.nodes_checked.clone()), (3, vec![0, 1]));

        // An unacked message may be present once.
        let with_unacked = log_of(&tag, &[(0, 0), (1, 0), (0, 1), (0, 2)]);
        assert!(verify_logs(&tag, &results, &[with_unacked]).ok());

        let lost = log_of(&tag, &[(0, 0), (1, 0)]);
        let v = verify_logs(&tag, &results, &[lost]);
        assert_eq!((v.ok(), v.lost), (false, 1));

        let duplicated = log_of(&tag, &[(0, 0), (1, 0), (0, 1), (0, 1)]);
        let v = verify_logs(&tag, &results, &[duplicated]);
        assert_eq!((v.ok(), v.duplicated), (false, 1));

        let misplaced = log_of(&tag, &[(1, 0), (0, 0), (0, 1)]);
        let v = verify_logs(&tag, &results, &[misplaced]);
        assert_eq!((v.ok(), v.misplaced), (false, 2));

        let foreign = log_of(&tag, &[(0, 0), (1, 0), (0, 1), (0, 9)]);
        assert_eq!(verify_logs(&tag, &results, &[foreign]).foreign, 1);

        let mut diverged = good.clone();
        diverged[1].nick = "someone-else".into();
        let v = verify_logs(&tag, &results, &[good.clone(), diverged]);
        assert_eq!((v.ok(), v.diverged), (false, 1));

        // Other clients' messages are ignored; an unreadable node is reported, not fatal.
        let mut mixed = good.clone();
        mixed.push(LogMessage {
            position: 4,
            timestamp_ms: 1,
            room: "general".into(),
            nick: "alice".into(),
            text: "hi".into(),
        });
        let mut v = Verifier::new(&tag, &results);
        v.check_node(0, |on_page| {
            on_page(mixed);
            Ok(4)
        });
        v.check_node(1, |_| Err(io::Error::other("down")));
        let v = v.finish();
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.unreachable.len(), 1);
    }

    fn test_config(nodes: &[SocketAddr], extra: &str) -> Config {
        let list: Vec<String> = nodes.iter().map(SocketAddr::to_string).collect();
        parse(&format!("--nodes {} {extra}", list.join(","))).unwrap()
    }

    #[test]
    fn end_to_end_against_the_fake_cluster_through_a_leader_change() {
        let cluster = FakeCluster::start(3).unwrap();
        let config = test_config(
            cluster.nodes(),
            "--connections 4 --pipeline 16 --size 64 --duration 0.4 --verify",
        );
        let report = std::thread::scope(|scope| {
            scope.spawn(|| {
                // Mid-run, node 2 takes over; the old leader refuses with a hint.
                std::thread::sleep(Duration::from_millis(150));
                let mut state = cluster.state();
                state.leader = Some(2);
                state.term = 2;
            });
            run(&config).unwrap()
        });
        assert!(
            report.committed_measured > 100,
            "{}",
            report.committed_measured
        );
        assert_eq!(report.start_view, (Some(0), 1));
        assert_eq!(report.end_view, (Some(2), 2));
        let v = report.verify.as_ref().unwrap();
        assert!(v.ok(), "{v:?}");
        assert_eq!(
            (v.acked, v.nodes_checked.len()),
            (report.committed_total, 3)
        );
        assert_eq!(
            cluster.state().log.len() as u64,
            v.acked,
            "no duplicates in the log"
        );
        // Every connection was refused by the old leader once and went straight to node 2.
        assert_eq!(report.session.not_leader, 4);
        assert_eq!(report.session.reconnects, 4);
        let state = cluster.state();
        let posts: Vec<usize> = state
            .received
            .iter()
            .filter(|(_, r)| matches!(r, Request::Post { .. }))
            .map(|(node, _)| *node)
            .collect();
        assert_eq!(posts[0], 0);
        assert!(
            posts.iter().rev().take(10).all(|node| *node == 2),
            "the last posts went to the new leader"
        );
        drop(state);
        assert!(report.latency.p50_us > 0 && report.latency.max_us >= report.latency.p99_us);
        assert!(report.fatal.is_empty(), "{:?}", report.fatal);
        let json = report.json(&config);
        assert!(json.starts_with('{') && json.ends_with('}'));
        assert!(json.contains(&format!("\"committed\":{},", report.committed_measured)));
        assert!(json.contains("\"verify\":{\"ok\":true"));
        assert!(report.text(&config).contains("verify      OK"));
    }

    #[test]
    fn end_to_end_open_loop_with_lost_answers_and_spread_connections() {
        let cluster = FakeCluster::start(3).unwrap();
        {
            let mut state = cluster.state();
            state.forward = true;
            state.faults.extend([
                fake::Fault::ApplyThenTimeout,
                fake::Fault::Close { apply: true },
                fake::Fault::Overloaded,
            ]);
        }
        let config = test_config(
            cluster.nodes(),
            "--connections 3 --rate 2000 --duration 0.5 --warmup 0.1 --target any --verify",
        );
        let report = run(&config).unwrap();
        let v = report.verify.as_ref().unwrap();
        assert!(v.ok(), "{v:?}");
        assert_eq!(
            cluster.state().log.len() as u64,
            v.acked,
            "each acked message once, nothing else"
        );
        // About 2000/s for 0.5 s after a 0.1 s warmup (generous bounds: a shared CI machine).
        assert!(
            (500..=1300).contains(&report.committed_measured),
            "{}",
            report.committed_measured
        );
        assert!(report.committed_total > report.committed_measured);
        assert_eq!(report.session.timeout_unknown, 1);
        assert_eq!(report.session.overloaded, 1);
        assert!(report.session.resent >= 2);
        let nodes_used: std::collections::BTreeSet<usize> = cluster
            .state()
            .received
            .iter()
            .filter(|(_, r)| matches!(r, Request::Post { .. }))
            .map(|(node, _)| *node)
            .collect();
        assert_eq!(nodes_used.len(), 3, "--target any spreads the connections");
    }
}
