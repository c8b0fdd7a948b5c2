//! End-to-end runs of the whole generator against the in-memory fake cluster, through leader
//! changes, lost answers and overload. The unit tests of each part live beside it.

use std::net::SocketAddr;
use std::time::Duration;

use raftchat::client::Request;

use crate::args::{parse_args, Config, Parsed};
use crate::run::run;
use fake::FakeCluster;

/// The in-memory fake cluster, shared with the client library's tests.
#[path = "../../tests/client_fake/mod.rs"]
mod fake;

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn parse(s: &str) -> Result<Config, String> {
    match parse_args(&args(s))? {
        Parsed::Run(config) => Ok(config),
        Parsed::Help(_) => Err("help".into()),
    }
}

fn test_config(nodes: &[SocketAddr], extra: &str) -> Config {
    let list: Vec<String> = nodes.iter().map(SocketAddr::to_string).collect();
    parse(&format!("--nodes {} {extra}", list.join(","))).unwrap()
}

#[test]
fn end_to_end_against_the_fake_cluster_through_a_leader_change() {
    let cluster = FakeCluster::start(3).unwrap();
    let config = test_config(
        cluster.nodes(),
        "--connections 4 --pipeline 16 --size 64 --duration 0.4 --verify",
    );
    let report = std::thread::scope(|scope| {
        scope.spawn(|| {
            // Mid-run, node 2 takes over; the old leader refuses with a hint.
            std::thread::sleep(Duration::from_millis(150));
            let mut state = cluster.state();
            state.leader = Some(2);
            state.term = 2;
        });
        run(&config).unwrap()
    });
    assert!(
        report.committed_measured > 100,
        "{}",
        report.committed_measured
    );
    assert_eq!(report.start_view, (Some(0), 1));
    assert_eq!(report.end_view, (Some(2), 2));
    let v = report.verify.as_ref().unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!(
        (v.acked, v.nodes_checked.len()),
        (report.committed_total, 3)
    );
    assert_eq!(
        cluster.state().log.len() as u64,
        v.acked,
        "no duplicates in the log"
    );
    // Every connection was refused by the old leader once and went straight to node 2.
    assert_eq!(report.session.not_leader, 4);
    assert_eq!(report.session.reconnects, 4);
    let state = cluster.state();
    let posts: Vec<usize> = state
        .received
        .iter()
        .filter(|(_, r)| matches!(r, Request::Post { .. }))
        .map(|(node, _)| *node)
        .collect();
    assert_eq!(posts[0], 0);
    assert!(
        posts.iter().rev().take(10).all(|node| *node == 2),
        "the last posts went to the new leader"
    );
    drop(state);
    assert!(report.latency.p50_us > 0 && report.latency.max_us >= report.latency.p99_us);
    assert!(report.fatal.is_empty(), "{:?}", report.fatal);
    let json = report.json(&config);
    assert!(json.starts_with('{') && json.ends_with('}'));
    assert!(json.contains(&format!("\"committed\":{},", report.committed_measured)));
    assert!(json.contains("\"verify\":{\"ok\":true"));
    assert!(report.text(&config).contains("verify      OK"));
}

#[test]
fn end_to_end_open_loop_with_lost_answers_and_spread_connections() {
    let cluster = FakeCluster::start(3).unwrap();
    {
        let mut state = cluster.state();
        state.forward = true;
        state.faults.extend([
            fake::Fault::ApplyThenTimeout,
            fake::Fault::Close { apply: true },
            fake::Fault::Overloaded,
        ]);
    }
    let config = test_config(
        cluster.nodes(),
        "--connections 3 --rate 2000 --duration 0.5 --warmup 0.1 --target any --verify",
    );
    let report = run(&config).unwrap();
    let v = report.verify.as_ref().unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!(
        cluster.state().log.len() as u64,
        v.acked,
        "each acked message once, nothing else"
    );
    // About 2000/s for 0.5 s after a 0.1 s warmup (generous bounds: a shared CI machine).
    assert!(
        (500..=1300).contains(&report.committed_measured),
        "{}",
        report.committed_measured
    );
    assert!(report.committed_total > report.committed_measured);
    assert_eq!(report.session.timeout_unknown, 1);
    assert_eq!(report.session.overloaded, 1);
    assert!(report.session.resent >= 2);
    let nodes_used: std::collections::BTreeSet<usize> = cluster
        .state()
        .received
        .iter()
        .filter(|(_, r)| matches!(r, Request::Post { .. }))
        .map(|(node, _)| *node)
        .collect();
    assert_eq!(nodes_used.len(), 3, "--target any spreads the connections");
}
