//! InstallSnapshot with incremental (version 5) snapshots on real processes: the snapshot file
//! leaves the messages to each node's message store, so a follower whose store ends before the
//! snapshot's `stored_through` fetches the missing positions from the leader in `HistoryPage`s
//! before it restores the file (`server::replica::fetch`). A node down while the others took
//! 25,000 messages and compacted past it rejoins with its data dir (it fetches only what its
//! store lacks), then again wiped (it fetches the whole history); each time its chat log equals
//! the leader's, and the bytes fetched (`history_fetched_bytes` in `status`) are those of the
//! positions it lacked, not more.

mod common;

use std::time::Duration;

use common::{field, load_messages as load, status, wait_for, Cluster, DEADLINE};

/// One 4,096-message chunk in memory, so the store holds the history; snapshots often, so the
/// log is compacted far past a node that is down.
const ARGS: [&str; 6] = [
    "--memory-budget-mib",
    "16",
    "--snapshot-entries",
    "5000",
    "--log-keep-entries",
    "3000",
];
/// Messages the lagger takes before it stops, then while it is down.
const BEFORE: u64 = 5_000;
const DURING: u64 = 25_000;
/// Bounds on one encoded message in a page (`wire::history`: 30 bytes of fixed fields and
/// length prefixes, then room, nick and text; loadgen's texts are 40 bytes, its rooms and nicks
/// short).
const MESSAGE_BYTES_MIN: u64 = 30 + 40;
const MESSAGE_BYTES_MAX: u64 = 30 + 40 + 100;

/// The positions the follower logged it fetched in `log` (from the first fetch's start to the
/// last fetch's end): `(first, last)`.
fn fetched_positions(log: &str) -> Option<(u64, u64)> {
    let ranges: Vec<(u64, u64)> = log
        .lines()
        .filter_map(|l| {
            let rest = l.split("needs message positions ").nth(1)?;
            let range = rest.split(';').next()?;
            let (a, b) = range.split_once("..=")?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        })
        .collect();
    Some((ranges.first()?.0, ranges.last()?.1))
}

/// Bytes in node `id`'s log file so far.
fn log_len(cluster: &Cluster, id: usize) -> usize {
    std::fs::read_to_string(cluster.log_path(id))
        .unwrap_or_default()
        .len()
}

/// `lagger` was restarted (its log then held `log_before` bytes): waits until it lists the
/// leader's chat log, and checks what it fetched: positions from `expect_from`, about their
/// bytes and no more. Returns the bytes fetched.
fn check_rejoin(
    cluster: &Cluster,
    leader: usize,
    lagger: usize,
    expect_from: u64,
    log_before: usize,
) -> u64 {
    // A new entry makes the leader replicate to it (heartbeats alone do not show a wiped node's
    // empty log to the leader).
    cluster.post(
        leader,
        &format!("node {lagger} rejoins from position {expect_from}"),
    );
    let reference = cluster.chat_log(leader);
    wait_for(
        "the lagger to list the leader's chat log",
        Duration::from_secs(120),
        || (cluster.chat_log(lagger) == reference).then_some(()),
    );
    let s = wait_for("the lagger's status", DEADLINE, || status(cluster, lagger));
    let (bytes, pages) = (
        field(&s, "history_fetched_bytes"),
        field(&s, "history_fetched_pages"),
    );
    let log = std::fs::read_to_string(cluster.log_path(lagger)).unwrap_or_default();
    let log = &log[log_before.min(log.len())..];
    for line in log
        .lines()
        .filter(|l| l.contains("snapshot") || l.contains("history"))
    {
        eprintln!("  node {lagger}: {line}");
    }
    assert!(
        log.contains("installed snapshot at index"),
        "it caught up through InstallSnapshot"
    );
    let (first, last) = fetched_positions(log).expect("it logged the positions it fetched");
    let positions = last - first + 1;
    eprintln!(
        "node {lagger} fetched positions {first}..={last}: {bytes} bytes in {pages} pages \
         ({:.1} bytes per position)",
        bytes as f64 / positions as f64
    );
    assert_eq!(first, expect_from, "it asked from the end of its store");
    assert!(pages >= 1);
    assert!(
        bytes >= positions * MESSAGE_BYTES_MIN && bytes <= positions * MESSAGE_BYTES_MAX,
        "{bytes} bytes for {positions} positions"
    );
    bytes
}

#[test]
fn a_lagging_and_a_wiped_follower_fetch_only_the_history_they_lack() {
    let mut cluster = Cluster::start(3, &ARGS);
    let (leader, _) = cluster.wait_leader(&[0, 1, 2]);
    let lagger = (leader + 1) % 3;
    load(&cluster, BEFORE);
    wait_for("the lagger to apply the first messages", DEADLINE, || {
        let s = status(&cluster, lagger)?;
        (field(&s, "last_position") >= BEFORE).then_some(())
    });
    assert!(cluster.stop(lagger).success(), "SIGTERM exits cleanly");
    let had = BEFORE;

    load(&cluster, DURING);
    let others: Vec<usize> = (0..3).filter(|&i| i != lagger).collect();
    let (leader, _) = cluster.wait_leader(&others);
    wait_for("the leader to compact past the lagger", DEADLINE, || {
        let s = status(&cluster, leader)?;
        (field(&s, "snapshot") >= BEFORE + DURING / 2 && field(&s, "log_first") > had + 1000)
            .then_some(())
    });

    // With its data dir: it fetches from the position after its store's last.
    let log_before = log_len(&cluster, lagger);
    cluster.spawn(lagger);
    let with_dir = check_rejoin(&cluster, leader, lagger, had + 1, log_before);
    let all_bytes_bound = (BEFORE + DURING) * MESSAGE_BYTES_MIN;
    assert!(
        with_dir < all_bytes_bound,
        "{with_dir} bytes: not the whole history ({all_bytes_bound}+)"
    );

    // Wiped: it fetches everything from position 1. The leader still counts what the node
    // acknowledged before it was wiped (Raft assumes a member keeps its log), so the wiped node
    // is caught up by a new leader, which probes it from scratch.
    assert!(cluster.stop(lagger).success());
    std::fs::remove_dir_all(cluster.data_dir(lagger)).expect("wipe the lagger");
    let log_before = log_len(&cluster, lagger);
    cluster.spawn(lagger);
    assert!(cluster.stop(leader).success());
    let old_leader = leader;
    let other = 3 - old_leader - lagger;
    let (leader, _) = cluster.wait_new_leader(&[other, lagger], old_leader);
    assert_ne!(leader, lagger, "an empty log cannot win an election");
    let wiped = check_rejoin(&cluster, leader, lagger, 1, log_before);
    cluster.spawn(old_leader);
    assert!(
        wiped > with_dir,
        "wiped {wiped} bytes, with its data dir {with_dir}"
    );

    // The cluster still takes writes with the rejoined node in it.
    cluster.post(leader, "after the rejoin");
    let reference = cluster.chat_log(leader);
    assert_eq!(reference.len() as u64, BEFORE + DURING + 3);
    wait_for("the lagger to list the newest message", DEADLINE, || {
        (cluster.chat_log(lagger) == reference).then_some(())
    });
}
