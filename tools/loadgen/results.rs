//! What one connection reports when it is done ([`WorkerResult`]) and the final answers that
//! were not successes ([`Failures`]). Plain data; no IO.

use hdrhistogram::Histogram;
use raftchat::client::SessionStats;

use crate::worker::LATENCY_MAX_US;

/// Final answers other than `Posted`, and session-level failures.
#[derive(Clone, Copy, Debug, Default)]
pub struct Failures {
    pub rejected: u64,
    pub not_found: u64,
    pub other_answer: u64,
    pub session_expired: u64,
    /// The retry budget ran out with no node answering.
    pub unavailable: u64,
    pub protocol: u64,
}

impl Failures {
    pub fn add(&mut self, o: &Failures) {
        self.rejected += o.rejected;
        self.not_found += o.not_found;
        self.other_answer += o.other_answer;
        self.session_expired += o.session_expired;
        self.unavailable += o.unavailable;
        self.protocol += o.protocol;
    }

    pub fn total(&self) -> u64 {
        self.rejected
            + self.not_found
            + self.other_answer
            + self.session_expired
            + self.unavailable
            + self.protocol
    }
}

pub struct WorkerResult {
    pub conn: usize,
    pub histogram: Histogram<u64>,
    /// Posted messages as (n, position).
    pub acked: Vec<(u64, u64)>,
    /// Messages sent but never answered for good (may or may not be in the log).
    pub unknown: Vec<u64>,
    /// Messages numbered 0..sent.
    pub sent: u64,
    pub committed_total: u64,
    pub committed_measured: u64,
    pub session: SessionStats,
    pub failures: Failures,
    /// This connection's spans without a commit longer than GAP_MIN_US, µs since the start.
    pub gaps: Vec<(u64, u64)>,
    pub last_commit_us: u64,
    pub fatal: Option<String>,
}

pub fn empty_result(conn: usize, fatal: Option<String>) -> WorkerResult {
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
