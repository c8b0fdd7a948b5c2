//! The run's report as one JSON object (`--json`), written by hand: flat, small, stable keys.
//! Formatting only; no IO.

use std::fmt::Write as _;

use crate::args::{Config, Target};
use crate::report::{ms, Report};
use crate::verify::VerifyReport;
use crate::worker::GAP_MIN_US;

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
    /// The report as one JSON object on one line.
    pub fn json(&self, config: &Config) -> String {
        let mut o = String::from("{");
        write_config(&mut o, config);
        self.json_load(&mut o, config);
        self.json_cost(&mut o);
        self.json_health(&mut o);
        match &self.verify {
            None => o.push_str("\"verify\":null"),
            Some(v) => write_verify(&mut o, v),
        }
        o.push('}');
        o
    }

    /// Counts, throughput and latency.
    fn json_load(&self, o: &mut String, config: &Config) {
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
    }

    /// `entries_per_sync` and `cpu_us_per_msg` where seen (keys left out where not), and
    /// `cost_notes` saying why.
    fn json_cost(&self, o: &mut String) {
        if let Some(e) = self.cost.entries_per_sync {
            let _ = write!(o, "\"entries_per_sync\":{e:.3},");
        }
        if let Some(c) = self.cost.cpu_us_per_msg {
            let _ = write!(o, "\"cpu_us_per_msg\":{c:.3},");
        }
        let notes: Vec<String> = self.cost.notes.iter().map(|n| json_str(n)).collect();
        let _ = write!(o, "\"cost_notes\":[{}],", notes.join(","));
    }

    /// Errors, recovery, the longest gap, the cluster's view and fatal failures.
    fn json_health(&self, o: &mut String) {
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
    }
}

/// The run's parameters.
fn write_config(o: &mut String, config: &Config) {
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
        "\"rate\":{},\"tls\":{},\"target\":{},\"op\":{},",
        config.rate.map_or("null".into(), |r| r.to_string()),
        config.tls.is_some(),
        json_str(if config.target == Target::Leader {
            "leader"
        } else {
            "any"
        }),
        json_str(&format!("{:?}", config.op).to_lowercase())
    );
}

fn write_verify(o: &mut String, v: &VerifyReport) {
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
