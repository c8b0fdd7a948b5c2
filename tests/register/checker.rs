//! A linearizability checker for a history of single-key register operations, in the style of
//! Wing & Gong with Lowe's memoization (as Porcupine does it): keys are independent, so each
//! key's history is checked on its own; for one key, a depth-first search picks the next op to
//! linearize among those no unlinearized op precedes in real time, and remembers every
//! (set of linearized ops, register value) it has reached so it never explores one twice.
//!
//! Ops whose outcome is unknown (`complete_ns == None`) may take effect anywhere after their
//! invoke, or never. It owns only the judgement: it never runs a workload or talks to a server.

use super::history::{Kind, Op};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The register's value, interned: 0 is "absent", `i + 1` is the i-th distinct value.
type State = u32;
const ABSENT: State = 0;

/// A key whose history has no linearization, with a small set of its ops that has none either.
#[derive(Debug)]
pub struct Violation {
    pub key: String,
    /// A (greedily) minimal sub-history that is still not linearizable, in invoke order.
    pub ops: Vec<Op>,
    /// How many ops the key's full history had.
    pub history_len: usize,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "key {}: not linearizable ({} ops); a minimal counterexample of {} ops:",
            self.key,
            self.history_len,
            self.ops.len()
        )?;
        for op in &self.ops {
            writeln!(f, "  {op}")?;
        }
        Ok(())
    }
}

/// The verdict for one key's history.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    /// The search gave up after `STEPS_MAX` steps (it never has in practice).
    TooHard,
}

/// A bound on search steps per key so a pathological history cannot hang the test.
const STEPS_MAX: u64 = 50_000_000;

/// Checks every key; on failure returns each violating key with a minimal counterexample.
pub fn check(history: &[Op]) -> Result<(), Vec<Violation>> {
    let mut by_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    let mut violations = Vec::new();
    for (key, ops) in by_key {
        match check_key(&ops) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable => violations.push(Violation {
                key: key.to_string(),
                history_len: ops.len(),
                ops: minimize(&ops),
            }),
            Verdict::TooHard => violations.push(Violation {
                key: format!("{key} (search gave up after {STEPS_MAX} steps)"),
                history_len: ops.len(),
                ops: Vec::new(),
            }),
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// One op prepared for the search.
struct Entry {
    invoke_ns: u64,
    /// `u64::MAX` for an unknown outcome: it never forces anything to be linearized before it.
    complete_ns: u64,
    required: bool,
    step: Step,
}

/// The op's effect on the interned register.
#[derive(Clone, Copy)]
enum Step {
    /// Always allowed; sets the value.
    Write(State),
    /// Allowed only when the value is `expected`; then sets `new`.
    CompareAndSet { expected: State, new: State },
    /// Allowed only when the value is `seen`; no change.
    Observe(State),
}

impl Step {
    fn apply(self, state: State) -> Option<State> {
        match self {
            Step::Write(value) => Some(value),
            Step::CompareAndSet { expected, new } => (state == expected).then_some(new),
            Step::Observe(seen) => (state == seen).then_some(state),
        }
    }
}

/// Decides whether one key's history is linearizable.
pub fn check_key(ops: &[Op]) -> Verdict {
    let entries = prepare(ops);
    search(&entries)
}

/// Interns values, drops unknown writes nobody observed (omitting such a write is always at
/// least as good as placing it: nothing can depend on its value), and sorts by invoke time.
fn prepare(ops: &[Op]) -> Vec<Entry> {
    let observed: HashSet<&str> = ops.iter().filter_map(|op| op.observed()).collect();
    let mut ids: HashMap<String, State> = HashMap::new();
    let mut intern = |value: Option<&str>| -> State {
        match value {
            None => ABSENT,
            Some(v) => {
                let next = ids.len() as State + 1;
                *ids.entry(v.to_string()).or_insert(next)
            }
        }
    };
    let mut entries: Vec<Entry> = Vec::new();
    for op in ops {
        if !op.is_known() && !op.written().is_some_and(|v| observed.contains(v)) {
            continue;
        }
        let step = match &op.kind {
            Kind::Set { value } => Step::Write(intern(Some(value))),
            Kind::Cas { expected, new } => Step::CompareAndSet {
                expected: intern(expected.as_deref()),
                new: intern(Some(new)),
            },
            Kind::CasFailed {
                expected, current, ..
            } => {
                if expected == current {
                    // The server claimed a mismatch against the very value expected: no
                    // register can explain that; an impossible step makes the history fail.
                    Step::CompareAndSet {
                        expected: State::MAX,
                        new: State::MAX,
                    }
                } else {
                    Step::Observe(intern(current.as_deref()))
                }
            }
            Kind::Read { value } => Step::Observe(intern(value.as_deref())),
        };
        entries.push(Entry {
            invoke_ns: op.invoke_ns,
            complete_ns: op.complete_ns.unwrap_or(u64::MAX),
            required: op.is_known(),
            step,
        });
    }
    entries.sort_by_key(|e| e.invoke_ns);
    entries
}

/// `Bits::compact`: (leading all-ones words, the words after them).
type Compact = (usize, Box<[u64]>);

/// The linearized ops, one bit each.
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Bits {
        Bits(vec![0; len.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn flip(&mut self, i: usize) {
        self.0[i / 64] ^= 1 << (i % 64);
    }
    /// A compact canonical form for the memo: the number of leading all-ones words, then the
    /// words after them without trailing zeros (in a long history almost every op before the
    /// search frontier is linearized, so this stays a few words instead of n / 64).
    fn compact(&self) -> Compact {
        let full = self.0.iter().take_while(|&&w| w == u64::MAX).count();
        let used = self.0.len() - self.0.iter().rev().take_while(|&&w| w == 0).count();
        (full, self.0[full..used.max(full)].into())
    }
}

/// The ops that may be linearized next: unlinearized ops invoked no later than the earliest
/// completion of any unlinearized op (no such op precedes them in real time).
fn candidates(entries: &[Entry], done: &Bits) -> Vec<usize> {
    let mut out = Vec::new();
    let mut earliest_complete = u64::MAX;
    let mut i = 0;
    while i < entries.len() {
        if i % 64 == 0 && done.0[i / 64] == u64::MAX {
            i += 64;
            continue;
        }
        if !done.get(i) {
            let e = &entries[i];
            // Sorted by invoke: once past the earliest completion, nothing later can qualify
            // (its completion is no earlier than its invoke, so the bound cannot drop).
            if e.invoke_ns > earliest_complete {
                break;
            }
            earliest_complete = earliest_complete.min(e.complete_ns);
            out.push(i);
        }
        i += 1;
    }
    out
}

/// A level of the depth-first search: its candidates and which one is currently applied.
struct Frame {
    candidates: Vec<usize>,
    next: usize,
    /// The candidate applied at this level and the register value before it.
    chosen: Option<(usize, State)>,
}

fn search(entries: &[Entry]) -> Verdict {
    let mut required_left = entries.iter().filter(|e| e.required).count();
    let mut done = Bits::new(entries.len());
    let mut state = ABSENT;
    let mut seen: HashSet<(Compact, State)> = HashSet::new();
    let mut frames = vec![Frame {
        candidates: candidates(entries, &done),
        next: 0,
        chosen: None,
    }];
    let mut steps = 0u64;
    while let Some(frame) = frames.last_mut() {
        if required_left == 0 {
            return Verdict::Linearizable;
        }
        steps += 1;
        if steps > STEPS_MAX {
            return Verdict::TooHard;
        }
        if let Some((undo, before)) = frame.chosen.take() {
            done.flip(undo);
            state = before;
            if entries[undo].required {
                required_left += 1;
            }
        }
        let Some(&candidate) = frame.candidates.get(frame.next) else {
            frames.pop();
            continue;
        };
        frame.next += 1;
        let Some(after) = entries[candidate].step.apply(state) else {
            continue;
        };
        done.flip(candidate);
        if !seen.insert((done.compact(), after)) {
            done.flip(candidate);
            continue;
        }
        frame.chosen = Some((candidate, state));
        state = after;
        if entries[candidate].required {
            required_left -= 1;
        }
        let next = candidates(entries, &done);
        frames.push(Frame {
            candidates: next,
            next: 0,
            chosen: None,
        });
    }
    if required_left == 0 {
        Verdict::Linearizable
    } else {
        Verdict::NotLinearizable
    }
}

/// Every observed value still has an op that writes it (so a counterexample never rests on
/// a value from nowhere, which would be a true but useless violation).
fn explained(ops: &[Op]) -> bool {
    let written: HashSet<&str> = ops.iter().filter_map(|op| op.written()).collect();
    ops.iter()
        .filter_map(|op| op.observed())
        .all(|v| written.contains(v))
}

/// Greedy delta debugging: removes chunks of ops (halves, then quarters, … then single ops)
/// while the rest stays explained and not linearizable. Removing ops only removes
/// constraints, so what is left is a real counterexample.
pub fn minimize(ops: &[Op]) -> Vec<Op> {
    let mut current: Vec<Op> = ops.to_vec();
    current.sort_by_key(|op| op.invoke_ns);
    let mut chunk = current.len().div_ceil(2).max(1);
    // A budget, so a failing soak reports promptly; what is left is still a counterexample.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut checks = 0usize;
    loop {
        let mut removed_any = false;
        let mut start = 0;
        while start < current.len() && checks < 5_000 && std::time::Instant::now() < deadline {
            let end = (start + chunk).min(current.len());
            let mut trial = current[..start].to_vec();
            trial.extend_from_slice(&current[end..]);
            checks += 1;
            if !trial.is_empty()
                && explained(&trial)
                && check_key(&trial) == Verdict::NotLinearizable
            {
                current = trial;
                removed_any = true;
            } else {
                start = end;
            }
        }
        if chunk == 1 && !removed_any || checks >= 5_000 || std::time::Instant::now() >= deadline {
            return current;
        }
        if chunk > 1 {
            chunk = chunk.div_ceil(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, kind: Kind, invoke_ns: u64, complete_ns: Option<u64>) -> Op {
        Op {
            client,
            node: 0,
            key: "k".into(),
            kind,
            invoke_ns,
            complete_ns,
        }
    }
    fn set(client: usize, value: &str, from: u64, to: u64) -> Op {
        op(
            client,
            Kind::Set {
                value: value.into(),
            },
            from,
            Some(to),
        )
    }
    fn set_unknown(client: usize, value: &str, from: u64) -> Op {
        op(
            client,
            Kind::Set {
                value: value.into(),
            },
            from,
            None,
        )
    }
    fn get(client: usize, value: Option<&str>, from: u64, to: u64) -> Op {
        let value = value.map(str::to_string);
        op(client, Kind::Read { value }, from, Some(to))
    }
    fn cas(client: usize, expected: Option<&str>, new: &str, from: u64, to: u64) -> Op {
        let kind = Kind::Cas {
            expected: expected.map(str::to_string),
            new: new.into(),
        };
        op(client, kind, from, Some(to))
    }
    fn cas_failed(client: usize, expected: &str, current: Option<&str>, from: u64, to: u64) -> Op {
        let kind = Kind::CasFailed {
            expected: Some(expected.into()),
            new: "z".into(),
            current: current.map(str::to_string),
        };
        op(client, kind, from, Some(to))
    }

    #[test]
    fn empty_and_sequential_histories_are_linearizable() {
        assert!(check(&[]).is_ok());
        let h = [
            get(0, None, 0, 1),
            set(0, "a", 2, 3),
            get(1, Some("a"), 4, 5),
            cas(1, Some("a"), "b", 6, 7),
            cas_failed(0, "a", Some("b"), 8, 9),
            get(0, Some("b"), 10, 11),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn concurrent_ops_may_take_effect_in_either_order() {
        // Two overlapping writes; reads after both see the one linearized last, consistently.
        let h = [
            set(0, "a", 0, 10),
            set(1, "b", 1, 9),
            get(2, Some("a"), 2, 3), // a before b, read in between
            get(2, Some("b"), 11, 12),
        ];
        assert!(check(&h).is_ok());
        // A read overlapping a write may see either value.
        let h = [
            set(0, "a", 0, 10),
            get(1, None, 1, 2),
            get(1, Some("a"), 3, 4),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn stale_read_fails_with_a_three_op_counterexample() {
        let h = [
            set(0, "a", 0, 1),
            set(0, "b", 2, 3),
            get(2, Some("x0"), 4, 5),
        ];
        // "x0" was never written: a read of it has no linearization.
        assert_eq!(check_key(&h), Verdict::NotLinearizable);
        let h = [
            set(0, "a", 0, 1),
            get(1, Some("a"), 0, 2),
            set(0, "b", 2, 3),
            get(2, Some("b"), 4, 5),
            get(1, Some("a"), 6, 7), // stale: b was acknowledged before this read began
            set(0, "c", 8, 9),
        ];
        let violations = check(&h).unwrap_err();
        assert_eq!(violations.len(), 1);
        let ops = &violations[0].ops;
        assert_eq!(ops.len(), 3, "{}", violations[0]);
        assert_eq!(ops[0], h[0]);
        assert_eq!(ops[1], h[2]);
        assert_eq!(ops[2], h[4]);
    }

    #[test]
    fn lost_write_fails() {
        // An acknowledged write that no later read sees, with no other write to explain it.
        let h = [
            set(0, "a", 0, 1),
            set(1, "b", 2, 3),
            get(2, Some("a"), 4, 5),
        ];
        assert_eq!(check_key(&h), Verdict::NotLinearizable);
        // A read of absence after an acknowledged write.
        let h = [set(0, "a", 0, 1), get(1, None, 2, 3)];
        assert_eq!(check_key(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn reads_must_not_go_back_in_time() {
        // Both writes concurrent with everything, but two sequential reads disagree with
        // any single order once a third read flips back.
        let h = [
            set(0, "a", 0, 100),
            set(1, "b", 0, 100),
            get(2, Some("a"), 10, 11),
            get(2, Some("b"), 12, 13),
            get(2, Some("a"), 14, 15),
        ];
        assert_eq!(check_key(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn unknown_writes_may_happen_late_or_never() {
        // Never: nobody saw it.
        let h = [
            set_unknown(0, "a", 0),
            get(1, None, 5, 6),
            get(1, None, 7, 8),
        ];
        assert!(check(&h).is_ok());
        // Late: long after its client gave up, a read sees it.
        let h = [
            set_unknown(0, "a", 0),
            get(1, None, 5, 6),
            set(2, "b", 7, 8),
            get(1, Some("b"), 9, 10),
            get(1, Some("a"), 100, 101),
        ];
        assert!(check(&h).is_ok());
        // But never before it was invoked.
        let h = [get(1, Some("a"), 0, 1), set_unknown(0, "a", 5)];
        assert_eq!(check_key(&h), Verdict::NotLinearizable);
        // And at most once: a unique value cannot come back after being overwritten.
        let h = [
            set_unknown(0, "a", 0),
            get(1, Some("a"), 5, 6),
            set(2, "b", 7, 8),
            get(1, Some("a"), 9, 10),
        ];
        assert_eq!(check_key(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn cas_semantics() {
        // A successful cas needs the expected value in place.
        let h = [set(0, "a", 0, 1), cas(1, Some("b"), "c", 2, 3)];
        assert_eq!(check_key(&h), Verdict::NotLinearizable);
        // Two concurrent cas from the same value cannot both succeed.
        let h = [
            set(0, "a", 0, 1),
            cas(1, Some("a"), "b", 2, 10),
            cas(2, Some("a"), "c", 2, 10),
        ];
        assert_eq!(check_key(&h), Verdict::NotLinearizable);
        // A failed cas is a read of its `current`.
        let h = [set(0, "a", 0, 1), cas_failed(1, "x", Some("a"), 2, 3)];
        assert!(check(&h).is_ok());
        let h = [set(0, "a", 0, 1), cas_failed(1, "x", None, 2, 3)];
        assert_eq!(check_key(&h), Verdict::NotLinearizable);
        // An unknown cas whose value was seen must have found its expected value.
        let unknown = op(
            1,
            Kind::Cas {
                expected: None,
                new: "n".into(),
            },
            2,
            None,
        );
        let h = [unknown.clone(), get(2, Some("n"), 5, 6)];
        assert!(check(&h).is_ok());
        let h = [set(0, "a", 0, 1), unknown, get(2, Some("n"), 5, 6)];
        assert_eq!(check_key(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn keys_are_independent() {
        let mut other = get(1, Some("a"), 2, 3);
        other.key = "other".into();
        let h = [set(0, "a", 0, 1), other];
        let violations = check(&h).unwrap_err();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].key, "other");
    }

    #[test]
    fn a_long_concurrent_history_is_checked_quickly() {
        // 4 clients, 4,000 ops with heavy overlap, generated from a sequential register so it
        // is linearizable by construction; then one read is made stale.
        let mut h = Vec::new();
        let mut value: Option<String> = None;
        for i in 0..4_000u64 {
            let client = (i % 4) as usize;
            // Each op takes effect at time 10 * i, and its interval spans neighbours.
            let (from, to) = ((10 * i).saturating_sub(25), 10 * i + 25);
            match i % 3 {
                0 => {
                    let v = format!("v{i}");
                    value = Some(v.clone());
                    h.push(set(client, &v, from, to));
                }
                1 => h.push(get(client, value.as_deref(), from, to)),
                _ => {
                    let v = format!("c{i}");
                    h.push(cas(client, value.as_deref(), &v, from, to));
                    value = Some(v);
                }
            }
        }
        let start = std::time::Instant::now();
        assert!(check(&h).is_ok());
        // Op 3001 reads what op 3000 wrote; make it read the value of 300 ops earlier.
        let stale = h[2701].clone();
        h[3001] = get(1, stale.observed(), 30_010 - 25, 30_010 + 25);
        assert!(check(&h).is_err());
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
    }
}
