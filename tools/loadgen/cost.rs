//! What the run cost the cluster: the leader's entries per fdatasync (from the nodes' telnet
//! `status` counters) and the CPU time the local node processes used per committed message
//! (from /proc), each taken before and after the measured interval. Whatever cannot be seen
//! is left out with a note saying why; it never fails the run.

use std::net::SocketAddr;

use crate::counters::{fetch_counters, Counters};
use crate::procstat::{cpu_ticks, pid_listening_on, CLK_TCK_ASSUMED};

/// The node processes whose CPU time is counted, and how they were found.
#[derive(Clone, Debug, PartialEq)]
pub struct NodePids {
    pub pids: Vec<u32>,
    /// Why CPU time cannot be reported, when it cannot.
    pub unseen: Option<String>,
}

/// Finds the node processes: the given `--pids`, else the local processes listening on
/// the nodes' ports (all of them, or none counted).
pub fn find_pids(nodes: &[SocketAddr], given: &[u32]) -> NodePids {
    if !given.is_empty() {
        return NodePids {
            pids: given.to_vec(),
            unseen: None,
        };
    }
    let mut pids = Vec::new();
    for addr in nodes {
        match pid_listening_on(addr.port()).filter(|_| addr.ip().is_loopback()) {
            Some(pid) => pids.push(pid),
            None => {
                return NodePids {
                    pids: Vec::new(),
                    unseen: Some(format!(
                        "no local process of this user listens on {addr} (give --pids)"
                    )),
                }
            }
        }
    }
    NodePids { pids, unseen: None }
}

/// The counters and CPU ticks at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    counters: Vec<Result<Counters, String>>,
    cpu_ticks: Result<u64, String>,
}

/// Reads every node's counters and the pids' CPU time now.
pub fn snapshot(nodes: &[SocketAddr], pids: &NodePids) -> Snapshot {
    // In parallel: a node that does not answer costs one timeout, not one per node.
    let counters = std::thread::scope(|scope| {
        let asks: Vec<_> = nodes
            .iter()
            .map(|addr| scope.spawn(move || fetch_counters(addr)))
            .collect();
        asks.into_iter()
            .map(|ask| {
                ask.join()
                    .unwrap_or_else(|_| Err("status reader panicked".into()))
            })
            .collect()
    });
    let cpu_ticks = match &pids.unseen {
        Some(why) => Err(why.clone()),
        None => pids.pids.iter().map(|&p| cpu_ticks(p)).sum(),
    };
    Snapshot {
        counters,
        cpu_ticks,
    }
}

/// The run's cost figures; `None` with a note when a figure could not be seen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cost {
    pub entries_per_sync: Option<f64>,
    pub cpu_us_per_msg: Option<f64>,
    pub notes: Vec<String>,
}

/// The figures between two snapshots over `committed` messages; `ticks_per_s` is `None` when
/// `getconf CLK_TCK` did not answer (then 100 is assumed and a note says so).
pub fn cost(before: &Snapshot, after: &Snapshot, committed: u64, ticks_per_s: Option<u64>) -> Cost {
    let mut notes = Vec::new();
    let entries_per_sync = leader_entries_per_sync(before, after).map_err(|e| notes.push(e));
    let cpu_us_per_msg = match (&before.cpu_ticks, &after.cpu_ticks) {
        (Ok(b), Ok(a)) if committed > 0 => {
            let tck = ticks_per_s.unwrap_or_else(|| {
                notes.push(format!(
                    "getconf CLK_TCK did not answer: assumed {CLK_TCK_ASSUMED} ticks/s"
                ));
                CLK_TCK_ASSUMED
            });
            Some(a.saturating_sub(*b) as f64 * 1e6 / tck as f64 / committed as f64)
        }
        (Ok(_), Ok(_)) => {
            notes.push("CPU per message: nothing committed".into());
            None
        }
        (Err(e), _) | (_, Err(e)) => {
            notes.push(format!("CPU per message not seen: {e}"));
            None
        }
    };
    Cost {
        entries_per_sync: entries_per_sync.ok().flatten(),
        cpu_us_per_msg,
        notes,
    }
}

/// Entries per sync on the node that led at the end, if it also answered at the start;
/// `Ok(None)` when it did no sync in the interval.
fn leader_entries_per_sync(before: &Snapshot, after: &Snapshot) -> Result<Option<f64>, String> {
    let unseen = |e: &str| format!("entries per sync not seen: {e}");
    let leader = after
        .counters
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .find(|c| c.leader)
        .ok_or_else(|| {
            let why = after.counters.iter().find_map(|c| c.as_ref().err());
            unseen(why.map_or("no node reported itself leader", String::as_str))
        })?;
    let start = before
        .counters
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .find(|c| c.node == leader.node)
        .ok_or_else(|| unseen(&format!("node {} did not answer at the start", leader.node)))?;
    let syncs = leader.syncs.saturating_sub(start.syncs);
    let entries = leader.entries_synced.saturating_sub(start.entries_synced);
    Ok((syncs > 0).then(|| entries as f64 / syncs as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(node: u64, leader: bool, syncs: u64, entries_synced: u64) -> Result<Counters, String> {
        Ok(Counters {
            node,
            leader,
            syncs,
            entries_synced,
            append_entries_sent: 0,
        })
    }

    #[test]
    fn deltas_of_the_leader_and_of_cpu_time_give_the_figures() {
        let before = Snapshot {
            counters: vec![node(0, false, 5, 5), node(1, true, 10, 30)],
            cpu_ticks: Ok(1000),
        };
        let after = Snapshot {
            counters: vec![node(0, false, 50, 500), node(1, true, 30, 430)],
            cpu_ticks: Ok(1250),
        };
        let c = cost(&before, &after, 5000, Some(100));
        assert_eq!(c.entries_per_sync, Some(20.0));
        // 250 ticks at 100/s = 2.5 s of CPU over 5000 messages = 500 µs each.
        assert_eq!(c.cpu_us_per_msg, Some(500.0));
        assert!(c.notes.is_empty(), "{:?}", c.notes);
        let c = cost(&before, &after, 5000, None);
        assert_eq!(c.cpu_us_per_msg, Some(500.0));
        assert!(c.notes[0].contains("assumed 100"), "{:?}", c.notes);
    }

    #[test]
    fn what_cannot_be_seen_is_left_out_with_a_note() {
        let before = Snapshot {
            counters: vec![Err("127.0.0.1:1: refused".into())],
            cpu_ticks: Err("no local process".into()),
        };
        let after = Snapshot {
            counters: vec![node(1, true, 30, 430)],
            cpu_ticks: Err("no local process".into()),
        };
        let c = cost(&before, &after, 100, Some(100));
        assert_eq!((c.entries_per_sync, c.cpu_us_per_msg), (None, None));
        assert!(
            c.notes[0].contains("node 1 did not answer"),
            "{:?}",
            c.notes
        );
        assert!(c.notes[1].contains("no local process"), "{:?}", c.notes);
        let c = cost(&after, &before, 100, Some(100));
        assert!(c.notes[0].contains("refused"), "{:?}", c.notes);
    }
}
