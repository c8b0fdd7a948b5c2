//! The register workload against a real cluster: client threads doing random `set`, `get` and
//! `cas` on a few keys through their own telnet connections, and the stale-read probe (pause
//! a node, write through the leader, read through the paused node as it wakes). It records
//! every op with its invoke and completion times and the outcome the client can vouch for; it
//! never judges the history (the checker does) and never starts or kills processes itself
//! except through the probe's `Cluster` calls.

use super::history::{Kind, Op};
use crate::common::Cluster;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a client waits for an answer before calling the outcome unknown. Above the
/// server's request timeout (`REQUEST_TIMEOUT_MS`) so a healthy node answers first.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// Passed to the servers: they answer `err timeout: outcome unknown` after this.
pub const REQUEST_TIMEOUT_MS: &str = "1500";

/// A minimal telnet client with a short read timeout (the harness's `Client` waits 20 s,
/// far too long for a workload that pauses nodes).
pub struct LineClient {
    reader: BufReader<TcpStream>,
    pub node: usize,
}

impl LineClient {
    pub fn connect(addr: SocketAddr, node: usize) -> std::io::Result<LineClient> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(LineClient {
            reader: BufReader::new(stream),
            node,
        })
    }

    pub fn send(&mut self, line: &str) -> std::io::Result<()> {
        self.reader
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
    }

    /// Reads the listing lines and the final `ack`/`end`/`err` line of one answer.
    pub fn read_reply(&mut self) -> std::io::Result<(Vec<String>, String)> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            let word = line.split(' ').next().unwrap_or("");
            match word {
                "ack" | "end" | "err" => return Ok((lines, line)),
                "hello" | "msg" => {}
                _ => lines.push(line),
            }
        }
    }

    pub fn command(&mut self, line: &str) -> std::io::Result<(Vec<String>, String)> {
        self.send(line)?;
        self.read_reply()
    }
}

/// The outcome of a write as the client can vouch for it.
enum WriteOutcome {
    Acked,
    /// `err cas failed: current X` (`None` = absent).
    CasFailed(Option<String>),
    /// Definitely not stored: dropped from the history.
    NotStored,
    /// May or may not take effect, at any time after invoke.
    Unknown,
}

fn classify_write(reply: &std::io::Result<(Vec<String>, String)>) -> WriteOutcome {
    let Ok((_, last)) = reply else {
        return WriteOutcome::Unknown;
    };
    if last.starts_with("ack ") {
        WriteOutcome::Acked
    } else if let Some(current) = last.strip_prefix("err cas failed: current ") {
        WriteOutcome::CasFailed((current != "-").then(|| current.to_string()))
    } else if last.starts_with("err ") && last.contains("not stored") {
        WriteOutcome::NotStored
    } else {
        // `outcome unknown`, or any error we cannot prove harmless: assume it may commit.
        WriteOutcome::Unknown
    }
}

/// `Some(value)` for a successful read (`None` inside = not found); `None` if it failed.
fn classify_read(reply: &std::io::Result<(Vec<String>, String)>) -> Option<Option<String>> {
    let Ok((lines, last)) = reply else {
        return None;
    };
    if last == "err not found" && lines.is_empty() {
        return Some(None);
    }
    if last != "end" || lines.len() != 1 {
        return None;
    }
    let mut parts = lines[0].splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("value"), Some(revision), Some(value)) if revision.parse::<u64>().is_ok() => {
            Some(Some(value.to_string()))
        }
        _ => None,
    }
}

/// Nanoseconds since the workload began.
pub fn since(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// What one op sends, before its outcome is known.
pub enum Request {
    Set {
        value: String,
    },
    Cas {
        expected: Option<String>,
        new: String,
    },
    Get,
}

/// Runs one request on `conn` and records it into `history` (unless it definitely failed).
/// Returns false when the connection is no longer usable (error or timeout).
pub fn run_op(
    conn: &mut LineClient,
    client: usize,
    key: &str,
    request: Request,
    start: Instant,
    history: &mut Vec<Op>,
) -> bool {
    let line = match &request {
        Request::Set { value } => format!("set {key} {value}"),
        Request::Cas { expected, new } => {
            format!("cas {key} {} {new}", expected.as_deref().unwrap_or("-"))
        }
        Request::Get => format!("get {key}"),
    };
    let invoke_ns = since(start);
    let reply = conn.command(&line);
    let complete_ns = since(start);
    let usable = reply.is_ok();
    let mut record = |kind: Kind, complete_ns: Option<u64>| {
        history.push(Op {
            client,
            node: conn.node,
            key: key.to_string(),
            kind,
            invoke_ns,
            complete_ns,
        })
    };
    match request {
        Request::Get => {
            if let Some(value) = classify_read(&reply) {
                record(Kind::Read { value }, Some(complete_ns));
            }
        }
        Request::Set { value } => match classify_write(&reply) {
            WriteOutcome::Acked => record(Kind::Set { value }, Some(complete_ns)),
            WriteOutcome::Unknown => record(Kind::Set { value }, None),
            WriteOutcome::NotStored => {}
            WriteOutcome::CasFailed(_) => panic!("`{line}` answered like a cas: {reply:?}"),
        },
        Request::Cas { expected, new } => match classify_write(&reply) {
            WriteOutcome::Acked => record(Kind::Cas { expected, new }, Some(complete_ns)),
            WriteOutcome::Unknown => record(Kind::Cas { expected, new }, None),
            WriteOutcome::NotStored => {}
            WriteOutcome::CasFailed(current) => record(
                Kind::CasFailed {
                    expected,
                    new,
                    current,
                },
                Some(complete_ns),
            ),
        },
    }
    usable
}

/// One workload client: random ops on `keys` until `stop`, through one connection at a time
/// to a random node, reconnecting elsewhere when it is lost.
pub fn run_client(
    client: usize,
    addrs: Vec<SocketAddr>,
    keys: Vec<String>,
    seed: u64,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<Op> {
    let mut rng =
        SmallRng::seed_from_u64(seed ^ (client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut history = Vec::new();
    let mut conn: Option<LineClient> = None;
    // The last value this client saw per key: a good guess for `cas` to succeed sometimes.
    let mut last_seen: Vec<Option<String>> = vec![None; keys.len()];
    let mut counter = 0u64;
    let mut last_node: Option<usize> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = conn.as_mut() else {
            // A random node, other than the one whose connection was just lost.
            let mut node = rng.gen_range(0..addrs.len());
            if Some(node) == last_node && addrs.len() > 1 {
                node = (node + rng.gen_range(1..addrs.len())) % addrs.len();
            }
            last_node = Some(node);
            match LineClient::connect(addrs[node], node) {
                Ok(c) => conn = Some(c),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
            continue;
        };
        let k = rng.gen_range(0..keys.len());
        counter += 1;
        let value = format!("c{client}n{counter}");
        let request = match rng.gen_range(0..100) {
            0..=39 => Request::Get,
            40..=74 => Request::Set { value },
            _ => Request::Cas {
                expected: if rng.gen_bool(0.8) {
                    last_seen[k].clone()
                } else {
                    None
                },
                new: value,
            },
        };
        let before = history.len();
        if !run_op(c, client, &keys[k], request, start, &mut history) {
            conn = None;
        }
        if let Some(op) = history[before..].last() {
            if op.is_known() {
                last_seen[k] = op.written().or(op.observed()).map(str::to_string);
            }
        }
        let think_ms = rng.gen_range(0..3);
        if think_ms > 0 {
            std::thread::sleep(Duration::from_millis(think_ms));
        }
    }
    history
}

/// Writes `set key <fresh value>` through node `node` until one is acknowledged (recording every
/// attempt); returns the acknowledged value. Polls with a generous deadline.
fn set_acked(
    cluster: &Cluster,
    node: usize,
    client: usize,
    key: &str,
    tag: &str,
    start: Instant,
    history: &mut Vec<Op>,
) -> String {
    let deadline = Instant::now() + crate::common::DEADLINE;
    let mut attempt = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "no write acknowledged through node {node} in {:?}",
            crate::common::DEADLINE
        );
        attempt += 1;
        let value = format!("{tag}a{attempt}");
        if let Ok(mut conn) = LineClient::connect(cluster.addrs[node], node) {
            run_op(
                &mut conn,
                client,
                key,
                Request::Set {
                    value: value.clone(),
                },
                start,
                history,
            );
            if history
                .last()
                .is_some_and(|op| op.is_known() && op.written() == Some(value.as_str()))
            {
                return value;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Which node the stale-read probe makes lag behind.
#[derive(Clone, Copy, Debug)]
pub enum Lagging {
    /// The leader is paused and a new one elected: the old leader has heard nothing of the
    /// new values when it wakes (the new leader only probes it, one round trip at a time), so
    /// a stale read from it is certain.
    OldLeader,
    /// A follower is paused while the leader carries on: the leader may have pipelined the
    /// new entries into its socket, so whether it catches up before serving is a race.
    Follower,
}

/// The stale-read probe: a value is acknowledged through the leader; the `lagging` node is
/// paused (the leader, then a new leader is elected; or a follower); more values are
/// acknowledged through the (new) leader; then a `get` is sent to the paused node and it is
/// resumed. A node that serves reads from its own state without ReadIndex answers with the old
/// value: a stale read. A correct node answers with the newest value, or an error.
/// All nodes must be running and unpaused when it starts; they are again when it returns.
pub fn stale_probe(
    cluster: &Cluster,
    lagging: Lagging,
    key: &str,
    client: usize,
    round: usize,
    start: Instant,
) -> Vec<Op> {
    let mut history = Vec::new();
    let all: Vec<usize> = (0..cluster.len()).collect();
    let (leader, _) = cluster.wait_leader(&all);
    let tag = format!("p{round}");
    set_acked(
        cluster,
        leader,
        client,
        key,
        &format!("{tag}old"),
        start,
        &mut history,
    );
    let victim = match lagging {
        Lagging::OldLeader => leader,
        Lagging::Follower => (leader + 1) % cluster.len(),
    };
    // The reader's connection is open before the pause; its `get` is sent during it.
    let reader = LineClient::connect(cluster.addrs[victim], victim);
    cluster.pause(victim);
    // On a panic from here the victim stays paused: `Cluster`'s drop resumes and kills it.
    let writer = match lagging {
        Lagging::OldLeader => {
            let others: Vec<usize> = all.iter().copied().filter(|&n| n != victim).collect();
            cluster.wait_new_leader(&others, victim).0
        }
        Lagging::Follower => leader,
    };
    for i in 0..3 {
        set_acked(
            cluster,
            writer,
            client,
            key,
            &format!("{tag}new{i}"),
            start,
            &mut history,
        );
    }
    if let Ok(mut reader) = reader {
        let invoke_ns = since(start);
        let sent = reader.send(&format!("get {key}"));
        cluster.resume(victim);
        if sent.is_ok() {
            let reply = reader.read_reply();
            if let Some(value) = classify_read(&reply) {
                history.push(Op {
                    client,
                    node: victim,
                    key: key.to_string(),
                    kind: Kind::Read { value },
                    invoke_ns,
                    complete_ns: Some(since(start)),
                });
            }
        }
    } else {
        cluster.resume(victim);
    }
    history
}
