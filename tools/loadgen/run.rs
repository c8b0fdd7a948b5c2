//! A whole run: find the cluster and its leader, start the connections on a few shard
//! threads behind a barrier, print progress each second, then merge the results into a [`Report`] and verify.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use raftchat::client::proto::NodeStatus;
use raftchat::client::{
    cluster_status_over, leader_and_term, read_log_pages_over, ClientTls, RetryPolicy, SessionStats,
};
use raftchat::tls::TlsFiles;

use crate::args::{Config, Target};
use crate::cost::{cost, find_pids, snapshot, Cost, NodePids, Snapshot};
use crate::procstat::clk_tck;
use crate::report::{Percentiles, Report};
use crate::results::{empty_result, Failures, WorkerResult};
use crate::text::run_tag;
use crate::verify::Verifier;
use crate::worker::shard::{Assignment, Shard};
use crate::worker::{Plan, Progress, Worker, GAP_MIN_US, LATENCY_MAX_US};

/// A leader (if any) and a term, as the nodes reported them.
type View = (Option<u64>, u64);

/// The node processes found and the cost counters when measuring began.
type Before = (NodePids, Snapshot);

/// `--tls`: the CA (and client certificate) files loaded, with one error line naming a bad file.
pub fn client_tls(config: &Config) -> Result<Option<ClientTls>, String> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let loaded = match &tls.identity {
        None => ClientTls::trusting(&tls.ca),
        Some((cert, key)) => ClientTls::with_identity(&TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: tls.ca.clone(),
        }),
    };
    loaded.map(Some).map_err(|e| e.to_string())
}

pub fn run(config: &Config) -> Result<Report, String> {
    let tls = client_tls(config)?;
    let (nodes, start_view) = find_cluster(config, tls.as_ref())?;
    let run_id: u32 = rand::random();
    let mut plan = base_plan(config, &nodes, run_id);
    plan.tls = tls.clone();
    let first_node = |conn: usize| match config.target {
        Target::Leader => start_view.0.map_or(0, |l| l as usize % nodes.len()),
        Target::Any => conn % nodes.len(),
    };
    let (start, results, (pids, before)) = run_connections(config, &plan, first_node)?;
    let end = Instant::now();
    let after = snapshot(&nodes, &pids);
    let mut report = merge_results(&results)?;
    report.elapsed = end.saturating_duration_since(start + config.warmup);
    report.cost = cost(&before, &after, report.committed_measured, clk_tck());
    report.start_view = start_view;
    report.end_view = leader_and_term(&cluster_status_over(&nodes, tls.as_ref()));
    report.verify = config.verify.then(|| {
        let tag = run_tag(run_id);
        let mut verifier = Verifier::new(&tag, &results);
        for (node, addr) in nodes.iter().enumerate() {
            verifier.check_node(node, |on_page| {
                read_log_pages_over(addr, tls.as_ref(), on_page)
            });
        }
        verifier.finish()
    });
    Ok(report)
}

/// The nodes in node-id order and the leader and term at the start; an error if no node
/// answers.
fn find_cluster(
    config: &Config,
    tls: Option<&ClientTls>,
) -> Result<(Vec<SocketAddr>, View), String> {
    let mut nodes = config.nodes.clone();
    let statuses = cluster_status_over(&nodes, tls);
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
    let start_view = wait_for_leader(&nodes, config.target, tls);
    Ok((nodes, start_view))
}

/// What every connection is asked to do; `phase` and `quota` are set per connection.
fn base_plan(config: &Config, nodes: &[SocketAddr], run_id: u32) -> Plan {
    let connections = config.connections;
    Plan {
        nodes: nodes.to_vec(),
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
        tls: None,
        login: config.login,
    }
}

/// What the shards need to start together and say when connections are done.
struct StartLine {
    barrier: Barrier,
    start: OnceLock<Instant>,
    finished: AtomicUsize,
}

/// Runs the connections on `config.threads` shards (connection `c` on shard `c % threads`),
/// all starting at once; returns the start time, their results in connection order, and the
/// node processes and the cluster's cost counters when measuring began (looked for on
/// another thread, so the load starts without waiting).
fn run_connections(
    config: &Config,
    plan: &Plan,
    first_node: impl Fn(usize) -> usize,
) -> Result<(Instant, Vec<WorkerResult>, Before), String> {
    let connections = config.connections;
    let threads = config.threads.clamp(1, connections);
    let progress: Vec<Arc<Progress>> = (0..connections)
        .map(|_| Arc::new(Progress::default()))
        .collect();
    let line = Arc::new(StartLine {
        barrier: Barrier::new(threads + 1),
        start: OnceLock::new(),
        finished: AtomicUsize::new(0),
    });
    let mut handles = Vec::new();
    for shard in 0..threads {
        let mut work = Vec::new();
        for conn in (shard..connections).step_by(threads) {
            let mut plan = plan.clone();
            if let Some(interval) = plan.interval {
                plan.phase = interval.mul_f64(conn as f64 / connections as f64);
            }
            plan.quota = config.count.map(|c| {
                c / connections as u64 + u64::from((conn as u64) < c % connections as u64)
            });
            work.push((conn, first_node(conn), plan, Arc::clone(&progress[conn])));
        }
        let handle = spawn_shard(shard, work, Arc::clone(&line));
        handles.push(handle.map_err(|e| format!("cannot start a thread: {e}"))?);
    }
    line.barrier.wait();
    let start = Instant::now();
    let _ = line.start.set(start);
    let before = {
        let (nodes, given, warmup) = (plan.nodes.clone(), config.pids.clone(), config.warmup);
        std::thread::spawn(move || {
            let pids = find_pids(&nodes, &given);
            std::thread::sleep((start + warmup).saturating_duration_since(Instant::now()));
            let before = snapshot(&nodes, &pids);
            (pids, before)
        })
    };
    print_progress_until_done(start, &progress, &line.finished, connections);
    let mut results = Vec::new();
    for handle in handles {
        results.extend(
            handle
                .join()
                .map_err(|_| "a load thread panicked".to_string())?,
        );
    }
    results.sort_by_key(|r| r.conn);
    let before = before
        .join()
        .map_err(|_| "the counter reader panicked".to_string())?;
    Ok((start, results, before))
}

/// One shard's thread: opens its connections' sessions, waits for the other shards, runs.
fn spawn_shard(
    shard: usize,
    work: Vec<(usize, usize, Plan, Arc<Progress>)>,
    line: Arc<StartLine>,
) -> io::Result<JoinHandle<Vec<WorkerResult>>> {
    std::thread::Builder::new()
        .name(format!("lg-{shard}"))
        .spawn(move || {
            let assignments: Vec<Assignment> = work
                .iter()
                .map(|(conn, first, _, _)| Assignment {
                    conn: *conn,
                    first: *first,
                })
                .collect();
            let mut work = work.into_iter();
            let opened = Shard::open(&assignments, |a, registry, token| {
                let (_, _, plan, progress) = work.next().ok_or("no work for a connection")?;
                Worker::new(a.conn, a.first, plan, progress, registry, token)
            });
            line.barrier.wait();
            let done = || {
                line.finished.fetch_add(1, Ordering::SeqCst);
            };
            match opened {
                Ok(shard) => shard.run(*line.start.wait(), done),
                Err(e) => assignments
                    .iter()
                    .map(|a| {
                        done();
                        empty_result(a.conn, Some(format!("cannot make a poller: {e}")))
                    })
                    .collect(),
            }
        })
}

/// Sums the connections' results; the views, elapsed time and verification are the caller's.
fn merge_results(results: &[WorkerResult]) -> Result<Report, String> {
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3).map_err(|e| e.to_string())?;
    let mut session = SessionStats::default();
    let mut failures = Failures::default();
    let (mut committed_measured, mut committed_total, mut unknown) = (0, 0, 0);
    let mut fatal = Vec::new();
    for r in results {
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
    Ok(Report {
        committed_measured,
        committed_total,
        elapsed: Duration::ZERO,
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
        start_view: (None, 0),
        end_view: (None, 0),
        fatal,
        verify: None,
        cost: Cost::default(),
    })
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
fn wait_for_leader(
    nodes: &[SocketAddr],
    target: Target,
    tls: Option<&ClientTls>,
) -> (Option<u64>, u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let view = leader_and_term(&cluster_status_over(nodes, tls));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
