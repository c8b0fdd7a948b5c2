//! The run's outcome ([`Report`]) and its human-readable text. The JSON form is `json`'s.
//! Formatting only; no IO.

use std::fmt::Write as _;
use std::time::Duration;

use raftchat::client::SessionStats;

use crate::args::Config;
use crate::cost::Cost;
use crate::results::Failures;
use crate::verify::VerifyReport;
use crate::worker::GAP_MIN_US;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

pub struct Report {
    pub committed_measured: u64,
    pub committed_total: u64,
    pub elapsed: Duration,
    pub latency: Percentiles,
    pub session: SessionStats,
    pub failures: Failures,
    pub unknown: u64,
    /// The longest span with no commit anywhere, and when it began (µs since the start);
    /// `None` when every span was under GAP_MIN_US.
    pub longest_gap: Option<(u64, u64)>,
    pub start_view: (Option<u64>, u64),
    pub end_view: (Option<u64>, u64),
    pub fatal: Vec<String>,
    pub verify: Option<VerifyReport>,
    /// Entries per sync and CPU per message, where they could be seen.
    pub cost: Cost,
}

pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub fn view_text((leader, term): (Option<u64>, u64)) -> String {
    match leader {
        Some(l) => format!("leader {l} term {term}"),
        None => format!("no leader (term {term})"),
    }
}

impl Report {
    pub fn msgs_per_s(&self) -> f64 {
        self.committed_measured as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn mb_per_s(&self, config: &Config) -> f64 {
        self.msgs_per_s() * config.size as f64 / 1e6
    }

    /// Every error kind with its count, recovered ones (retried) first.
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
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

    /// The report as text, one labelled line per aspect.
    pub fn text(&self, config: &Config) -> String {
        let mut out = String::new();
        self.write_load(&mut out, config);
        write_cost(&mut out, &self.cost);
        self.write_health(&mut out);
        if let Some(v) = &self.verify {
            write_verify(&mut out, v);
        }
        out
    }

    /// The run's shape, throughput and latency.
    fn write_load(&self, out: &mut String, config: &Config) {
        let mode = match config.rate {
            Some(rate) => format!("open loop at {rate} msgs/s"),
            None => "closed loop".to_string(),
        };
        let _ = writeln!(
            out,
            "loadgen: {} nodes{}, {} connections, pipeline {}, {}-byte messages, {mode}, target {:?}, op {:?}",
            config.nodes.len(),
            if config.tls.is_some() { " over TLS" } else { "" },
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
        let cpu = self.cost.cpu_us_per_msg.map_or(String::new(), |c| {
            format!(", node CPU {c:.1} µs per message")
        });
        let _ = writeln!(
            out,
            "throughput  {:.0} msgs/s, {:.2} MB/s of text{cpu}",
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
    }

    /// Errors, recovery, the longest gap, the cluster's view and fatal failures.
    fn write_health(&self, out: &mut String) {
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
    }
}

/// The leader's entries per sync (CPU per message is on the throughput line), and a line
/// per figure that could not be seen.
fn write_cost(out: &mut String, cost: &Cost) {
    if let Some(e) = cost.entries_per_sync {
        let _ = writeln!(
            out,
            "group commit leader {e:.2} entries per sync over the run"
        );
    }
    for note in &cost.notes {
        let _ = writeln!(out, "cost        {note}");
    }
}

fn write_verify(out: &mut String, v: &VerifyReport) {
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
