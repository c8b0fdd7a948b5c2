//! The message store on real processes (`src/history/`, wired in by `replica/open.rs`): with a
//! small `--memory-budget-mib` every node keeps one chunk of messages in memory and reads the
//! rest from its store, yet lists the whole chat log and room histories; a node whose store was
//! lost, or cut short as a crash leaves it, rebuilds it from its snapshot and log on restart.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{load_messages as load, wait_for, Cluster, DEADLINE};

/// One 4,096-message chunk in memory; snapshots often, so the log is compacted many times.
const ARGS: [&str; 6] = [
    "--memory-budget-mib",
    "16",
    "--snapshot-entries",
    "5000",
    "--log-keep-entries",
    "500",
];
const MESSAGES: u64 = 30_000;

fn store_dir(cluster: &Cluster, id: usize) -> PathBuf {
    cluster.data_dir(id).join("history")
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    paths.retain(|p| p.extension().is_some_and(|e| e == "seg"));
    paths.sort();
    paths
}

fn history(cluster: &Cluster, id: usize, line: &str) -> Vec<String> {
    wait_for(&format!("{line} on node {id}"), DEADLINE, || {
        let mut client = common::Client::try_connect(cluster.addrs[id])?;
        let reply = client.command(line).ok()?;
        reply.final_line.starts_with("end ").then_some(reply.lines)
    })
}

#[test]
fn nodes_serve_more_history_than_they_hold_and_rebuild_a_lost_store() {
    let mut cluster = Cluster::start(3, &ARGS);
    let (leader, _) = cluster.wait_leader(&[0, 1, 2]);
    // Three messages in #early, then so many in #general that #early's are only on disk.
    let mut alice = cluster.client(leader);
    for (line, want) in [("nick alice", "ack"), ("join early", "ack joined #early")] {
        let reply = alice.command(line).unwrap();
        assert!(reply.final_line.starts_with(want), "{line}: {reply:?}");
    }
    for k in 1..=3 {
        let reply = alice.command(&format!("msg early {k}")).unwrap();
        assert!(reply.final_line.starts_with("ack "), "{reply:?}");
    }
    drop(alice);
    load(&cluster, MESSAGES);
    cluster.post(leader, "the newest");
    let reference = cluster.chat_log(leader);
    assert_eq!(reference.len() as u64, MESSAGES + 4);
    let newest = history(&cluster, leader, "history #general 1000");
    assert_eq!(newest[..], reference[reference.len() - 1000..]);
    for id in 0..3 {
        let early = history(&cluster, id, "history #early 50");
        assert_eq!(
            early[..],
            reference[..3],
            "node {id} reads #early from disk"
        );
    }
    for id in 0..3 {
        wait_for(
            &format!("node {id} to list the same chat log"),
            DEADLINE,
            || (cluster.chat_log(id) == reference).then_some(()),
        );
        assert!(
            !segments(&store_dir(&cluster, id)).is_empty(),
            "node {id} has a store"
        );
    }

    // A follower loses its whole store while down: rebuilt from its snapshot and log.
    let follower = (leader + 1) % 3;
    assert!(cluster.stop(follower).success());
    fs::remove_dir_all(store_dir(&cluster, follower)).unwrap();
    cluster.spawn(follower);
    wait_for(
        "the follower with a lost store to list the chat log",
        DEADLINE,
        || (cluster.chat_log(follower) == reference).then_some(()),
    );

    // The other follower's store is cut in the middle of a record, as a crash leaves it.
    let other = (leader + 2) % 3;
    assert!(cluster.stop(other).success());
    let last = segments(&store_dir(&cluster, other)).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    assert!(len > 100, "{len}");
    let file = fs::OpenOptions::new().write(true).open(&last).unwrap();
    file.set_len(len - 7).unwrap();
    drop(file);
    cluster.spawn(other);
    wait_for(
        "the follower with a torn store to list the chat log",
        DEADLINE,
        || (cluster.chat_log(other) == reference).then_some(()),
    );
    let log = fs::read_to_string(cluster.log_path(other)).unwrap_or_default();
    assert!(
        log.contains("cut a torn tail"),
        "the torn tail was cut and logged"
    );

    // And the cluster goes on: a new message reaches every node's chat log.
    cluster.post(leader, "after the rebuilds");
    let reference = cluster.chat_log(leader);
    assert_eq!(reference.len() as u64, MESSAGES + 5);
    for id in 0..3 {
        wait_for(
            &format!("node {id} to list the last message"),
            DEADLINE,
            || (cluster.chat_log(id) == reference).then_some(()),
        );
    }
}
