//! Snapshots on real processes: a node that was down while the others took 200,000 messages and
//! compacted their logs rejoins through InstallSnapshot (the leader's log no longer holds what
//! it needs) and ends with the same chat log; a restarted node loads its own snapshot and
//! replays only the log after it.

mod common;

use std::time::{Duration, Instant};

use common::{field, load_messages as load, status, wait_for, Cluster, DEADLINE};

/// Snapshot often, keep a short window, so 200,000 messages compact many times over.
const SNAPSHOT_ARGS: [&str; 4] = ["--snapshot-entries", "20000", "--log-keep-entries", "1000"];
const MESSAGES: u64 = 200_000;

#[test]
fn a_node_down_for_200k_messages_rejoins_through_install_snapshot() {
    let mut cluster = Cluster::start(3, &SNAPSHOT_ARGS);
    let (leader, _) = cluster.wait_leader(&[0, 1, 2]);
    let lagger = (leader + 1) % 3;
    cluster.post(leader, "before the outage");
    wait_for("the lagger to apply the first message", DEADLINE, || {
        let s = status(&cluster, lagger)?;
        (field(&s, "messages") >= 1).then_some(())
    });
    assert!(cluster.stop(lagger).success(), "SIGTERM exits cleanly");

    load(&cluster, MESSAGES);
    let others: Vec<usize> = (0..3).filter(|&i| i != lagger).collect();
    let (leader, _) = cluster.wait_leader(&others);
    // The leader compacted far past anything the lagger holds (a handful of entries): only a
    // snapshot can bring it back.
    let before = wait_for("the leader to compact past the lagger", DEADLINE, || {
        let s = status(&cluster, leader)?;
        (field(&s, "snapshot") >= MESSAGES / 2 && field(&s, "log_first") > 1000).then_some(s)
    });
    assert!(field(&before, "messages") > MESSAGES);

    eprintln!(
        "leader {leader}: commit {} snapshot {} log_first {}; restarting node {lagger}",
        field(&before, "commit"),
        field(&before, "snapshot"),
        field(&before, "log_first")
    );
    let rejoin = Instant::now();
    cluster.spawn(lagger);
    let caught_up = wait_for(
        "the lagger to catch up with the leader",
        Duration::from_secs(120),
        || {
            let l = status(&cluster, leader)?;
            let f = status(&cluster, lagger)?;
            let done = field(&f, "applied") >= field(&l, "commit")
                && field(&f, "messages") == field(&l, "messages");
            done.then_some(f)
        },
    );
    eprintln!(
        "node {lagger} caught up in {:.1?}: {caught_up:?}",
        rejoin.elapsed()
    );
    assert!(
        field(&caught_up, "snapshot") >= MESSAGES / 2,
        "{caught_up:?}"
    );
    let log = std::fs::read_to_string(cluster.log_path(lagger)).unwrap_or_default();
    for line in log.lines().filter(|l| l.contains("snapshot")) {
        eprintln!("  node {lagger}: {line}");
    }
    assert!(
        log.contains("installed snapshot at index"),
        "the lagger caught up through InstallSnapshot; its log:\n{}",
        log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );

    // Identical chat logs, and the cluster still takes writes with the rejoined node in it.
    cluster.post(leader, "after the rejoin");
    let reference = cluster.chat_log(leader);
    assert_eq!(reference.len() as u64, MESSAGES + 2);
    wait_for("the lagger to list the same chat log", DEADLINE, || {
        (cluster.chat_log(lagger) == reference).then_some(())
    });

    // A restart loads the node's own snapshot and replays only the log after it.
    assert!(cluster.stop(lagger).success());
    cluster.spawn(lagger);
    wait_for(
        "the restarted node to list the same chat log",
        DEADLINE,
        || (cluster.chat_log(lagger) == reference).then_some(()),
    );
    let log = std::fs::read_to_string(cluster.log_path(lagger)).unwrap_or_default();
    assert!(
        log.contains("loaded snapshot at index"),
        "the restart loaded a snapshot"
    );
}
