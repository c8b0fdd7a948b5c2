//! The message store on real processes (`src/history/`, wired in by `replica/open.rs`): with a
//! small `--memory-budget-mib` every node keeps one chunk of messages in memory and reads the
//! rest from its store, yet lists the whole chat log and room histories. Snapshots are
//! incremental (version 5): their files stay far smaller than the chat, and the log is
//! compacted behind them. A node killed under load restarts and serves the same history; one
//! whose store was cut short as a crash leaves it re-appends the tail from its log; one whose
//! store was lost after a snapshot covered it refuses to start, naming the store.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{load_messages as load, wait_for, Cluster, DEADLINE};

/// One 4,096-message chunk in memory; snapshots often, so the log is compacted many times.
const ARGS: [&str; 6] = [
    "--memory-budget-mib",
    "16",
    "--snapshot-entries",
    "5000",
    "--log-keep-entries",
    "3000",
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
fn nodes_serve_more_history_than_they_hold_snapshot_it_incrementally_and_restart() {
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

    // Snapshots leave the history to the store: every file is far smaller than the chat, and
    // the log was compacted behind them.
    let chat_bytes: usize = reference.iter().map(String::len).sum();
    for id in 0..3 {
        let mut snapshots = files(&cluster.data_dir(id).join("snapshots"));
        snapshots.retain(|p| p.extension().is_some_and(|e| e == "snap"));
        assert!(!snapshots.is_empty(), "node {id} took snapshots");
        for path in snapshots {
            let len = fs::metadata(&path).unwrap().len() as usize;
            assert!(
                len * 50 < chat_bytes,
                "{}: {len} bytes for a chat of {chat_bytes}",
                path.display()
            );
        }
        let status = wait_for("status", DEADLINE, || common::status(&cluster, id));
        let first = common::field(&status, "log_first");
        assert!(first > 10_000, "node {id}: the log starts at {first}");
    }

    // A follower killed (kill -9) under load restarts and serves the same history.
    let follower = (leader + 1) % 3;
    let mut load = common::ChildGuard(
        std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["--nodes", &cluster.addrs[leader].to_string()])
            .args(["--connections", "4", "--pipeline", "8", "--size", "40"])
            .args(["--count", "8000"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn loadgen"),
    );
    let before = common::field(
        &wait_for("status", DEADLINE, || common::status(&cluster, follower)),
        "applied",
    );
    wait_for("the load to reach the follower", DEADLINE, || {
        let status = common::status(&cluster, follower)?;
        (common::field(&status, "applied") > before + 1000).then_some(())
    });
    cluster.kill(follower);
    cluster.spawn(follower);
    let status = wait_for("the load to finish", Duration::from_secs(120), || {
        load.0.try_wait().unwrap()
    });
    assert!(status.success(), "loadgen: {status:?}");
    let reference = cluster.chat_log(leader);
    assert_eq!(reference.len() as u64, MESSAGES + 4 + 8000);
    for id in 0..3 {
        wait_for(
            &format!("node {id} to list the same chat log after the kill"),
            DEADLINE,
            || (cluster.chat_log(id) == reference).then_some(()),
        );
        let early = history(&cluster, id, "history #early 50");
        assert_eq!(early[..], reference[..3], "node {id}");
    }

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
    cluster.post(leader, "after the restarts");
    let reference = cluster.chat_log(leader);
    for id in 0..3 {
        wait_for(
            &format!("node {id} to list the last message"),
            DEADLINE,
            || (cluster.chat_log(id) == reference).then_some(()),
        );
    }

    // A follower whose store is lost after snapshots covered it refuses to start, naming the
    // store: the log no longer holds those messages.
    assert!(cluster.stop(follower).success());
    let lost = store_dir(&cluster, follower);
    fs::remove_dir_all(&lost).unwrap();
    let status = cluster.spawn_expecting_exit(follower);
    assert!(!status.success(), "{status:?}");
    let log = fs::read_to_string(cluster.log_path(follower)).unwrap_or_default();
    let line = log
        .lines()
        .find(|l| l.contains("the message store ends at position 0 but the snapshot needs 1..="))
        .unwrap_or_else(|| panic!("no refusal in the log:\n{log}"));
    assert!(
        line.contains(&lost.display().to_string()),
        "the error names the store's directory: {line}"
    );
}

fn files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}
