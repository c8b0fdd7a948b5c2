//! Retention on real processes: with `--retain-messages 1000` a chat that keeps taking messages
//! keeps a bounded data dir (snapshots hold 1,000 messages, the log is compacted after each),
//! and every node lists exactly the last 1,000 messages. The same rounds without retention
//! show the contrast: the snapshots grow with every message sent.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{field, load_messages as load, status, wait_for, Cluster};

const RETAIN: u64 = 1000;
const SNAPSHOT_ENTRIES: u64 = 20_000;
const ROUNDS: usize = 5;
const ROUND_MESSAGES: u64 = 60_000;
/// Small WAL segments, so the compacted log is dropped in small steps (the default 64 MiB
/// segment would hold the whole test's log).
const SEGMENT_BYTES: u64 = 1 << 20;
/// Disk use after the last round may exceed the first round's by at most this: what is
/// written between two snapshots (20,000 entries of ~150 bytes) plus a segment or two, and
/// nothing that grows with the messages sent (each round sends ~9 MB of log).
const MARGIN_BYTES: u64 = 4 << 20;

fn args(retain: u64) -> Vec<String> {
    [
        "--snapshot-entries",
        &SNAPSHOT_ENTRIES.to_string(),
        "--log-keep-entries",
        "1000",
        "--wal-segment-bytes",
        &SEGMENT_BYTES.to_string(),
        "--retain-messages",
        &retain.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Total bytes of the files under `dir` (their lengths: WAL segments are not preallocated).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Runs the rounds on a fresh cluster; returns each node's data dir bytes after each round,
/// and the cluster (still running) for further checks.
fn rounds(retain: u64) -> (Vec<Vec<u64>>, Cluster) {
    let args = args(retain);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cluster = Cluster::start(3, &args);
    cluster.wait_leader(&[0, 1, 2]);
    let mut sizes = Vec::new();
    for round in 0..ROUNDS {
        let (leader, _) = cluster.wait_leader(&[0, 1, 2]);
        let round_start = field(&status(&cluster, leader).expect("leader status"), "commit");
        let started = Instant::now();
        load(&cluster, ROUND_MESSAGES);
        let commit = field(&status(&cluster, leader).expect("leader status"), "commit");
        // Every node applied the round and, with retention, took (and finished writing) the last
        // snapshot due: one every `SNAPSHOT_ENTRIES` applied entries (snapshots of 1,000
        // messages are small, so the rule that the log since the last snapshot be half its size
        // never holds one back). Without retention that rule spaces snapshots further apart as
        // the chat grows, so there only the apply is awaited.
        let per_node: Vec<u64> = (0..3)
            .map(|id| {
                wait_for(
                    &format!("node {id} to apply round {round} and snapshot past its start"),
                    Duration::from_secs(60),
                    || {
                        let s = status(&cluster, id)?;
                        let snapshot = field(&s, "snapshot");
                        let snapshot_due = snapshot > round_start
                            && snapshot + SNAPSHOT_ENTRIES > commit
                            && field(&s, "log_first") > round_start;
                        let done = field(&s, "applied") >= commit && (retain == 0 || snapshot_due);
                        done.then_some(())
                    },
                );
                dir_bytes(&cluster.data_dir(id))
            })
            .collect();
        eprintln!(
            "retain {retain}: round {round} ({ROUND_MESSAGES} messages in {:.1?}): data dir bytes per node {per_node:?}",
            started.elapsed()
        );
        sizes.push(per_node);
    }
    (sizes, cluster)
}

#[test]
fn disk_use_stays_bounded_with_retention() {
    let (sizes, cluster) = rounds(RETAIN);
    for id in 0..3 {
        let first = sizes[0][id];
        let last = sizes[ROUNDS - 1][id];
        assert!(
            last <= first + MARGIN_BYTES,
            "node {id}: {last} bytes after round {ROUNDS}, {first} after round 1: {sizes:?}"
        );
    }

    // Every node holds exactly the last 1,000 messages of the room (the load generator posts
    // all of them to #general), listed by position, and has assigned every position.
    let (leader, _) = cluster.wait_leader(&[0, 1, 2]);
    let last_position = field(
        &status(&cluster, leader).expect("leader status"),
        "last_position",
    );
    assert!(last_position >= ROUNDS as u64 * ROUND_MESSAGES);
    for id in 0..3 {
        let s = wait_for(
            "the node to apply everything",
            Duration::from_secs(30),
            || {
                let s = status(&cluster, id)?;
                (field(&s, "last_position") == last_position).then_some(s)
            },
        );
        assert_eq!(field(&s, "messages"), RETAIN, "node {id}: {s:?}");
        assert_eq!(field(&s, "retain_messages"), RETAIN);
        let log = cluster.chat_log(id);
        let positions: Vec<u64> = log
            .iter()
            .map(|line| line.split(' ').next().unwrap().parse().unwrap())
            .collect();
        let expected: Vec<u64> = (last_position - RETAIN + 1..=last_position).collect();
        assert_eq!(positions, expected, "node {id} lists the last {RETAIN}");
        assert!(log.iter().all(|line| line.contains(" #general ")));
        // The binary client pages through the holes the same way.
        let binary = raftchat::client::read_log_all(cluster.addrs[id]).expect("binary read");
        let binary: Vec<u64> = binary.iter().map(|m| m.position).collect();
        assert_eq!(binary, expected, "node {id}: binary pages");
    }

    // A restarted node loads its own snapshot (taken with the same retention) and lists the
    // same messages.
    let reference = cluster.chat_log(leader);
    let mut cluster = cluster;
    let restarted = (leader + 1) % 3;
    assert!(cluster.stop(restarted).success());
    cluster.spawn(restarted);
    wait_for(
        "the restarted node to list the same",
        Duration::from_secs(30),
        || (cluster.chat_log(restarted) == reference).then_some(()),
    );
    let log = std::fs::read_to_string(cluster.log_path(restarted)).unwrap_or_default();
    assert!(log.contains("loaded snapshot at index"), "{log}");
}

#[test]
fn without_retention_the_same_rounds_grow_the_snapshots() {
    let (sizes, _cluster) = rounds(0);
    for id in 0..3 {
        let first = sizes[0][id];
        let last = sizes[ROUNDS - 1][id];
        // Each round adds ~5 MB of chat (60,000 messages of ~80 bytes), in the snapshot or in the
        // log after it, that nothing drops.
        assert!(
            last > first + 2 * MARGIN_BYTES,
            "node {id}: {last} bytes after round {ROUNDS}, {first} after round 1: {sizes:?}"
        );
    }
}
