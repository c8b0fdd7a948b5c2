//! `--verify`: every acknowledged message must be in every node's log exactly once, at its
//! acknowledged position, and all logs must agree. Reads logs through a callback; no sockets.

use std::io;

use raftchat::client::proto::LogMessage;

use crate::results::WorkerResult;
use crate::text::parse_text;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct VerifyReport {
    pub acked: u64,
    pub nodes_checked: Vec<usize>,
    /// (node, error) for nodes whose log could not be read.
    pub unreachable: Vec<(usize, String)>,
    pub lost: u64,
    pub duplicated: u64,
    pub misplaced: u64,
    /// Texts with this run's tag that no connection sent.
    pub foreign: u64,
    /// Positions where a node's entry differs from the first node's.
    pub diverged: u64,
    /// Human-readable first problems, a few of them.
    pub examples: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
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
pub struct Verifier {
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
    pub fn new(tag: &str, results: &[WorkerResult]) -> Verifier {
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
    pub fn check_node(
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
                        compare(&mut report, (node, *first), prints, m.position, fingerprint)
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
                self.count_lost(node, &mut report);
                if self.reference.is_none() {
                    self.reference = Some((node, fingerprints));
                }
            }
            Err(e) => report.unreachable.push((node, e.to_string())),
        }
        self.report = report;
    }

    /// Counts the acknowledged messages node `node` does not hold.
    fn count_lost(&self, node: usize, report: &mut VerifyReport) {
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
    }

    pub fn finish(self) -> VerifyReport {
        self.report
    }
}

/// Counts a divergence when the entry at `position` of node `nodes.0` differs from the one
/// the reference node `nodes.1` holds there.
fn compare(
    report: &mut VerifyReport,
    (node, first): (usize, usize),
    reference: &[u64],
    position: u64,
    fingerprint: u64,
) {
    if let Some(&expected) = reference.get(position as usize - 1) {
        if expected != fingerprint {
            report.diverged += 1;
            report.note(format!(
                "node {node} differs from node {first} at position {position}"
            ));
        }
    }
}

fn fingerprint(m: &LogMessage) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (m.position, m.timestamp_ms, &m.room, &m.nick, &m.text).hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::empty_result;
    use crate::text::{message_text, run_tag};

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
}
