//! The clients of a fault run: telnet writers and readers, binary-session writers and
//! WebSocket writers and readers (`ws_client.rs`), each a thread that records every operation
//! it attempts with its start, end and outcome.
//!
//! Owns turning answers into outcomes (`ack n` → acked; an `err` saying `not stored` → not
//! stored; anything else, a timeout or a lost connection → unknown). It never judges them:
//! that is the checker's job.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raftchat::client::{RetryPolicy, Session};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::checker::{Entry, Op, OpKind, ReadLog, WriteOutcome};
use super::ws_client::ws_client;
use crate::common::Client;

/// A telnet client waits this long for an answer before calling the outcome unknown (longer
/// than the nodes' request timeout, so the node usually answers first).
const TELNET_READ_TIMEOUT: Duration = Duration::from_secs(6);

pub struct Workload {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Op>>>,
}

/// Microseconds since `t0`.
pub fn since_us(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

impl Workload {
    /// Starts `telnet` telnet clients (writes and reads) and `binary` binary-session writers.
    pub fn start(
        addrs: &[SocketAddr],
        t0: Instant,
        seed: u64,
        telnet: usize,
        binary: usize,
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for client in 0..telnet + binary {
            let addrs = addrs.to_vec();
            let stop = Arc::clone(&stop);
            let rng = SmallRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(client as u64));
            threads.push(std::thread::spawn(move || {
                if client < telnet {
                    telnet_client(client, seed, &addrs, t0, rng, &stop)
                } else {
                    binary_client(client, seed, &addrs, t0, rng, &stop)
                }
            }));
        }
        Workload { stop, threads }
    }

    /// Adds `count` WebSocket clients, numbered from `first` (after the other clients).
    pub fn add_ws_clients(
        &mut self,
        addrs: &[SocketAddr],
        t0: Instant,
        seed: u64,
        first: usize,
        count: usize,
    ) {
        for client in first..first + count {
            let addrs = addrs.to_vec();
            let stop = Arc::clone(&self.stop);
            let rng = SmallRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(client as u64));
            self.threads.push(std::thread::spawn(move || {
                ws_client(client, seed, &addrs, t0, rng, &stop)
            }));
        }
    }

    /// Stops every client after its current operation and returns the whole history.
    pub fn finish(self) -> Vec<Op> {
        self.stop.store(true, Ordering::SeqCst);
        let mut history = Vec::new();
        for thread in self.threads {
            history.extend(thread.join().expect("client thread panicked"));
        }
        history.sort_by_key(|op| op.start_us);
        history
    }
}

/// `msg <text>` on `client`: the outcome the answer (or its absence) means.
pub fn telnet_post(client: &mut Client, text: &str) -> (WriteOutcome, bool) {
    match client.command(&format!("msg {text}")) {
        Ok(reply) => {
            let line = reply.final_line;
            let outcome = match line.strip_prefix("ack ").map(str::parse::<u64>) {
                Some(Ok(position)) => WriteOutcome::Acked(position),
                _ if line.starts_with("err ") && line.contains("not stored") => {
                    WriteOutcome::NotStored(line)
                }
                _ => WriteOutcome::Unknown(line),
            };
            (outcome, true)
        }
        Err(e) => (WriteOutcome::Unknown(format!("connection: {e}")), false),
    }
}

/// `get chatLog` on `client`: `Ok(Some(log))`, `Ok(None)` for an `err` answer, or a
/// description of a malformed answer; `Err(())` when the connection failed.
pub fn telnet_read(client: &mut Client) -> Result<Result<Option<Vec<Entry>>, String>, ()> {
    let reply = client.command("get chatLog").map_err(|_| ())?;
    if reply.final_line.starts_with("err ") {
        return Ok(Ok(None));
    }
    let Some(Ok(count)) = reply
        .final_line
        .strip_prefix("end ")
        .map(str::parse::<usize>)
    else {
        return Ok(Err(format!("final line {:?}", reply.final_line)));
    };
    if count != reply.lines.len() {
        return Ok(Err(format!(
            "end {count} after {} lines",
            reply.lines.len()
        )));
    }
    let mut log = Vec::with_capacity(count);
    for line in &reply.lines {
        match Entry::parse(line) {
            Some(entry) => log.push(entry),
            None => return Ok(Err(format!("unparsable line {line:?}"))),
        }
    }
    Ok(Ok(Some(log)))
}

fn connect(addr: SocketAddr) -> Option<Client> {
    let mut client = Client::try_connect(addr)?;
    client.set_read_timeout(TELNET_READ_TIMEOUT).ok()?;
    Some(client)
}

fn telnet_client(
    client: usize,
    seed: u64,
    addrs: &[SocketAddr],
    t0: Instant,
    mut rng: SmallRng,
    stop: &AtomicBool,
) -> Vec<Op> {
    let mut history = Vec::new();
    let mut conn: Option<(usize, Client)> = None;
    let mut k = 0;
    while !stop.load(Ordering::SeqCst) {
        if conn.is_none() || rng.gen_bool(0.2) {
            let node = rng.gen_range(0..addrs.len());
            let connected = if logs_in(client) {
                connect_logged_in(addrs[node], client)
            } else {
                connect(addrs[node])
            };
            conn = connected.map(|c| (node, c));
        }
        let Some((node, c)) = conn.as_mut() else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let node = *node;
        let start_us = since_us(t0);
        if rng.gen_bool(0.75) {
            k += 1;
            let text = format!("s{seed}-t{client}-{k}");
            let (outcome, usable) = telnet_post(c, &text);
            if !usable {
                conn = None;
            }
            history.push(Op {
                client,
                node,
                start_us,
                end_us: since_us(t0),
                kind: OpKind::Write {
                    text,
                    binary: false,
                    outcome,
                },
            });
        } else {
            let kind = match telnet_read(c) {
                Err(()) => {
                    conn = None;
                    None
                }
                Ok(Ok(None)) => None,
                Ok(Ok(Some(log))) => Some(OpKind::Read {
                    log: ReadLog::of(&log),
                }),
                Ok(Err(what)) => Some(OpKind::Broken { what }),
            };
            if let Some(kind) = kind {
                history.push(Op {
                    client,
                    node,
                    start_us,
                    end_us: since_us(t0),
                    kind,
                });
            }
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(2..15)));
    }
    history
}

fn binary_client(
    client: usize,
    seed: u64,
    addrs: &[SocketAddr],
    t0: Instant,
    mut rng: SmallRng,
    stop: &AtomicBool,
) -> Vec<Op> {
    let policy = RetryPolicy {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(3),
        retry_budget: Duration::from_secs(8),
        ..RetryPolicy::default()
    };
    let mut history = Vec::new();
    let mut session: Option<Session> = None;
    let mut k = 0;
    while !stop.load(Ordering::SeqCst) {
        let Some(s) = session.as_mut() else {
            match Session::open(addrs, rng.gen_range(0..addrs.len()), policy) {
                Ok(s) => session = binary_log_in(s, client),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
            if session.is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            continue;
        };
        k += 1;
        let text = format!("s{seed}-b{client}-{k}");
        let start_us = since_us(t0);
        let nick = nick_of(client, true);
        let outcome = match s.post_blocking("general", &nick, &text) {
            Ok(position) => WriteOutcome::Acked(position),
            Err(e) => WriteOutcome::Unknown(format!("session: {e}")),
        };
        let node = s.node();
        if !matches!(outcome, WriteOutcome::Acked(_)) {
            // A new session next time: the old one's pending request may still apply once.
            session = None;
        }
        history.push(Op {
            client,
            node,
            start_us,
            end_us: since_us(t0),
            kind: OpKind::Write {
                text,
                binary: true,
                outcome,
            },
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(2..15)));
    }
    history
}

// ---------------------------------------------------------------------------------------------
// Logged-in clients: every odd-numbered client (telnet or binary) registers its own account,
// or logs in to it, on each new connection before it posts; its messages are judged as before.
// The probes that `run.rs` adds to the history are client `usize::MAX`: not counted.

const ACCOUNT_PASSWORD: &str = "fault-pw";

/// True for the clients that post logged in.
fn logs_in(client: usize) -> bool {
    client % 2 == 1
}

/// The nick `client` posts as (its account's, for the clients that log in).
fn nick_of(client: usize, binary: bool) -> String {
    match (logs_in(client), binary) {
        (true, _) => format!("acct{client}"),
        (false, true) => format!("b{client}"),
        (false, false) => "anonymous".to_string(),
    }
}

/// A telnet connection logged in to `client`'s account (registered by its first success), or
/// `None` when the node cannot do it now (no leader for the register, the account not applied
/// there yet, a lost connection): the client tries again on its next connection.
fn connect_logged_in(addr: SocketAddr, client: usize) -> Option<Client> {
    let mut c = connect(addr)?;
    let nick = nick_of(client, false);
    for command in ["register", "login"] {
        let reply = c
            .command(&format!("{command} {nick} {ACCOUNT_PASSWORD}"))
            .ok()?;
        if reply.final_line.starts_with("ack ") {
            return Some(c);
        }
        if !reply.final_line.contains("already registered") {
            return None;
        }
    }
    None
}

/// A new binary session, logged in to `client`'s account (registered the first time) for the
/// clients that log in; it logs in again by itself after each failover. `None`: try again.
fn binary_log_in(mut session: Session, client: usize) -> Option<Session> {
    if !logs_in(client) {
        return Some(session);
    }
    session
        .register_or_login(&nick_of(client, true), ACCOUNT_PASSWORD)
        .ok()
        .map(|_| session)
}

/// Acknowledged writes of the clients that log in (the suite checks some got through).
pub fn logged_in_acks(history: &[Op]) -> usize {
    history
        .iter()
        .filter(|op| op.client != usize::MAX && logs_in(op.client))
        .filter(|op| {
            matches!(
                op.kind,
                OpKind::Write {
                    outcome: WriteOutcome::Acked(_),
                    ..
                }
            )
        })
        .count()
}
