//! The history of a fault run and the checker that judges it against the final chat log.
//!
//! Owns the record of every client operation (start, end, outcome) and the rules an honest
//! replicated chat log must satisfy given that history. It never talks to a node: it is fed a
//! history and the logs read after healing, so it can be fed a lying history too (to show it
//! fails when it should).

use std::collections::HashMap;
use std::fmt;

/// One line of `get chatLog`: `<n> <UTC time> #<room> <<nick>> <text>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub position: u64,
    pub text: String,
    /// The whole line, so two nodes' logs compare timestamps, rooms and nicks too.
    pub line: String,
}

impl Entry {
    pub fn parse(line: &str) -> Option<Entry> {
        let mut parts = line.splitn(5, ' ');
        let position = parts.next()?.parse().ok()?;
        let _time = parts.next()?;
        let _room = parts.next()?.strip_prefix('#')?;
        let _nick = parts.next()?;
        let text = parts.next()?.to_string();
        Some(Entry {
            position,
            text,
            line: line.to_string(),
        })
    }
}

/// What the checker keeps of a read: its length and a hash of its lines (a read of thousands
/// of entries, a thousand times per run, would otherwise hold gigabytes in a long soak).
///
/// A read holds the log's positions `skipped + 1 ..= len`: a `get chatLog` the whole prefix
/// (`skipped` 0), a WebSocket `history` only the latest entries of that prefix (a window).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadLog {
    /// The position of the last entry: the read saw the log this long.
    pub len: usize,
    /// How many of the first entries the read left out.
    pub skipped: usize,
    /// A WebSocket `history` (the report names it so), not a `get chatLog`.
    pub window: bool,
    /// Of the lines the read holds.
    pub hash: u64,
    /// The last line, for the report.
    pub last: Option<String>,
}

const HASH_START: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `line` and a newline, continuing from `hash`.
fn hash_line(mut hash: u64, line: &str) -> u64 {
    for byte in line.bytes().chain([b'\n']) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

impl ReadLog {
    pub fn of(log: &[Entry]) -> ReadLog {
        ReadLog {
            len: log.len(),
            skipped: 0,
            window: false,
            hash: hash_lines(log),
            last: log.last().map(|e| e.line.clone()),
        }
    }

    /// The latest entries of the log, as a `history` returns them: positions from the first
    /// entry's to the last's. Positions that skip one make it differ from every log.
    pub fn window(entries: &[Entry]) -> ReadLog {
        let first = entries.first().map_or(1, |e| e.position);
        ReadLog {
            len: entries.last().map_or(0, |e| e.position as usize),
            skipped: first.saturating_sub(1) as usize,
            window: true,
            hash: hash_lines(entries),
            last: entries.last().map(|e| e.line.clone()),
        }
    }
}

fn hash_lines(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .fold(HASH_START, |h, e| hash_line(h, &e.line))
}

/// `hashes[k]` is the hash of `log[..k]`.
fn prefix_hashes(log: &[Entry]) -> Vec<u64> {
    let mut hashes = Vec::with_capacity(log.len() + 1);
    hashes.push(HASH_START);
    for entry in log {
        hashes.push(hash_line(*hashes.last().expect("never empty"), &entry.line));
    }
    hashes
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Acknowledged at this chat-log position.
    Acked(u64),
    /// The server said it was definitely not stored.
    NotStored(String),
    /// Timeout, `outcome unknown`, lost connection, an unexpected answer.
    Unknown(String),
}

#[derive(Clone, Debug)]
pub enum OpKind {
    Write {
        text: String,
        /// Posted through a binary `Session` (retries keep session and seq).
        binary: bool,
        outcome: WriteOutcome,
    },
    /// A successful `get chatLog` (failed reads promise nothing and are not recorded).
    Read { log: ReadLog },
    /// An answer that breaks the protocol (e.g. `end n` after a different number of lines).
    Broken { what: String },
}

/// One client operation; times are microseconds since the run started.
#[derive(Clone, Debug)]
pub struct Op {
    pub client: usize,
    pub node: usize,
    pub start_us: u64,
    pub end_us: u64,
    pub kind: OpKind,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client {} node {} [{:.3}s..{:.3}s] ",
            self.client,
            self.node,
            self.start_us as f64 / 1e6,
            self.end_us as f64 / 1e6
        )?;
        match &self.kind {
            OpKind::Write {
                text,
                binary,
                outcome,
            } => write!(
                f,
                "{} '{text}' -> {outcome:?}",
                if *binary { "binary post" } else { "msg" }
            ),
            OpKind::Read { log } if !log.window => write!(
                f,
                "get chatLog -> {} entries, the last {:?}",
                log.len, log.last
            ),
            OpKind::Read { log } => write!(
                f,
                "history -> positions {}..={}, the last {:?}",
                log.skipped + 1,
                log.len,
                log.last
            ),
            OpKind::Broken { what } => write!(f, "malformed answer: {what}"),
        }
    }
}

/// What the checker found wrong: a rule, and the operations that break it.
#[derive(Debug)]
pub struct Violation {
    pub rule: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.rule, self.detail)
    }
}

/// Checks `history` against the logs every node served after healing (`final_logs[node]`).
pub fn check(history: &[Op], final_logs: &[Vec<Entry>]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut bad = |rule: &'static str, detail: String| violations.push(Violation { rule, detail });
    let Some(final_log) = final_logs.first() else {
        bad("final logs", "no node served a final log".into());
        return violations;
    };
    for (node, log) in final_logs.iter().enumerate().skip(1) {
        if let Some(k) = (0..log.len().max(final_log.len()))
            .find(|&k| log.get(k).map(|e| &e.line) != final_log.get(k).map(|e| &e.line))
        {
            bad(
                "all nodes' logs identical",
                format!(
                    "node {node} differs from node 0 at position {}: {:?} vs {:?} (lengths {} and {})",
                    k + 1,
                    log.get(k).map(|e| &e.line),
                    final_log.get(k).map(|e| &e.line),
                    log.len(),
                    final_log.len()
                ),
            );
        }
    }
    for (k, entry) in final_log.iter().enumerate() {
        if entry.position != k as u64 + 1 {
            bad(
                "positions 1, 2, 3, ... without gaps",
                format!("final log entry {} is numbered {}", k + 1, entry.position),
            );
            break;
        }
    }
    let mut places: HashMap<&str, Vec<u64>> = HashMap::new();
    for entry in final_log {
        places.entry(&entry.text).or_default().push(entry.position);
    }
    let mut written: HashMap<&str, usize> = HashMap::new();
    for op in history {
        if let OpKind::Broken { .. } = op.kind {
            bad("answers are well-formed", op.to_string());
        }
    }
    for op in history {
        let OpKind::Write {
            text,
            binary,
            outcome,
        } = &op.kind
        else {
            continue;
        };
        *written.entry(text).or_default() += 1;
        let found = places.get(text.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        match outcome {
            WriteOutcome::Acked(p) if found != [*p] => bad(
                "acked exactly once at its acked position",
                format!("{op}: found at positions {found:?}"),
            ),
            WriteOutcome::NotStored(_) if !found.is_empty() => bad(
                "not-stored never appears",
                format!("{op}: found at positions {found:?}"),
            ),
            WriteOutcome::Unknown(_) if found.len() > 1 => bad(
                if *binary {
                    "binary retries never duplicated"
                } else {
                    "unknown at most once"
                },
                format!("{op}: found at positions {found:?}"),
            ),
            _ => {}
        }
    }
    for (text, count) in &written {
        if *count > 1 {
            bad(
                "history texts unique",
                format!("'{text}' was written by {count} operations"),
            );
        }
    }
    for entry in final_log {
        if !written.contains_key(entry.text.as_str()) {
            bad(
                "every message was written by some client",
                format!(
                    "position {} '{}' was never written",
                    entry.position, entry.text
                ),
            );
        }
    }
    check_reads(history, final_log, &mut bad);
    violations
}

/// Every read is a prefix of the final log, holds every write acked before it began, and is no
/// shorter than any read that finished before it began.
fn check_reads(history: &[Op], final_log: &[Entry], bad: &mut impl FnMut(&'static str, String)) {
    // (end, acked position) of acked writes and (end, length) of reads, sorted by end.
    let mut acks: Vec<(u64, u64, &Op)> = Vec::new();
    let mut reads: Vec<(u64, usize, &Op)> = Vec::new();
    for op in history {
        match &op.kind {
            OpKind::Write {
                outcome: WriteOutcome::Acked(p),
                ..
            } => acks.push((op.end_us, *p, op)),
            OpKind::Read { log } => reads.push((op.end_us, log.len, op)),
            _ => {}
        }
    }
    let final_hashes = prefix_hashes(final_log);
    acks.sort_by_key(|a| a.0);
    reads.sort_by_key(|r| r.0);
    for op in history {
        let OpKind::Read { log } = &op.kind else {
            continue;
        };
        let holds = if log.skipped == 0 {
            final_hashes.get(log.len) == Some(&log.hash)
        } else {
            final_log
                .get(log.skipped..log.len)
                .is_some_and(|window| hash_lines(window) == log.hash)
        };
        if !holds {
            bad(
                "every read is a prefix of the final log",
                format!(
                    "{op}: differs from the final log's entries {}..={} (of {})",
                    log.skipped + 1,
                    log.len,
                    final_log.len()
                ),
            );
            continue;
        }
        let acked_before = acks.partition_point(|a| a.0 < op.start_us);
        if let Some((_, p, write)) = acks[..acked_before].iter().max_by_key(|a| a.1) {
            if (log.len as u64) < *p {
                bad(
                    "a read holds every write acked before it began",
                    format!("{op} misses position {p}, acked by: {write}"),
                );
            }
        }
        let read_before = reads.partition_point(|r| r.0 < op.start_us);
        if let Some((_, len, earlier)) = reads[..read_before].iter().max_by_key(|r| r.1) {
            if log.len < *len {
                bad(
                    "a read is no shorter than any read finished before it began",
                    format!("{op} is shorter than earlier {earlier}"),
                );
            }
        }
    }
}
