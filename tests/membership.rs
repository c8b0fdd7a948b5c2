//! Real `server` processes: the cluster's identity is chosen once at bootstrap and stored in
//! each data dir, so it no longer depends on the command line's member list.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_ports, wait_for, Cluster, DEADLINE};

fn log_text(cluster: &Cluster, id: usize) -> String {
    std::fs::read_to_string(cluster.log_path(id)).unwrap_or_default()
}

fn has_message(cluster: &Cluster, id: usize, text: &str) -> bool {
    cluster
        .chat_log(id)
        .iter()
        .any(|line| line.ends_with(&format!("> {text}")))
}

/// Starts a lone `server` with `args` on `data_dir` until it has stored its identity, then
/// kills it: what is left is a bootstrapped data dir.
fn bootstrap_data_dir(data_dir: &Path, listen: SocketAddr, args: &[String]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(args)
        .args(["--bind", &listen.to_string()])
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    let listening = wait_for("the lone node to listen", DEADLINE, || {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(Err(status));
        }
        let stored = data_dir.join("CLUSTER").exists();
        (stored && TcpStream::connect(listen).is_ok()).then_some(Ok(()))
    });
    let _ = child.kill();
    let _ = child.wait();
    listening.expect("the lone node started");
}

#[test]
fn a_restart_with_another_member_list_keeps_the_stored_identity() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    cluster.post(0, "before");
    cluster.stop(2);
    cluster.post(0, "while-away");
    // Node 2's command line now names other addresses for its peers (as a seed's old restart
    // command would after the membership changed): its stored list wins, so it still reaches
    // nodes 0 and 1, and their handshakes still match its cluster id.
    let stale: Vec<SocketAddr> = free_ports(2)
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .chain([cluster.addrs[2]])
        .collect();
    cluster.set_members(Some(stale));
    cluster.spawn(2);
    wait_for("node 2 to catch up after its restart", DEADLINE, || {
        has_message(&cluster, 2, "while-away").then_some(())
    });
    let log = log_text(&cluster, 2);
    let disagreements = log
        .lines()
        .filter(|l| l.contains("identity wins over the command line"))
        .count();
    assert_eq!(disagreements, 1, "one line says so: {log}");
}

#[test]
fn a_node_on_another_clusters_data_dir_is_refused_by_the_peers() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    cluster.post(0, "ours");
    // Node 2 of another cluster with the same addresses (a different token): its data dir.
    let foreign = cluster.dir.path().join("foreign-node-2");
    let mut args: Vec<String> = vec!["2".into(), "3".into(), cluster.addrs[2].port().to_string()];
    args.extend(["--peers".into(), cluster.peers_arg()]);
    args.extend(["--cluster-token".into(), "another-cluster".into()]);
    args.extend(["--fsync".into(), "never".into()]);
    let spare = SocketAddr::from(([127, 0, 0, 1], free_ports(1)[0]));
    bootstrap_data_dir(&foreign, spare, &args);

    cluster.stop(2);
    std::fs::remove_dir_all(cluster.data_dir(2)).expect("remove node 2's data dir");
    std::fs::rename(&foreign, cluster.data_dir(2)).expect("move the foreign data dir");
    let seen = [log_text(&cluster, 0).len(), log_text(&cluster, 1).len()];
    cluster.spawn(2);
    wait_for("nodes 0 and 1 to refuse node 2", DEADLINE, || {
        let refused = |id: usize| {
            log_text(&cluster, id)[seen[id]..]
                .lines()
                .any(|l| l.contains("refused a peer connection: cluster id"))
        };
        (refused(0) && refused(1)).then_some(())
    });
    assert!(log_text(&cluster, 2).contains("identity wins over the command line"));
    // The two remaining members still serve.
    cluster.post(0, "after");
    assert!(has_message(&cluster, 1, "after"));
}

// ---- membership change (issue 16) ---------------------------------------------------------

/// Runs `line` on whichever node leads, retrying while the leadership moves or the answer is
/// an `err` that `retry` accepts; returns the final line.
fn on_leader(cluster: &Cluster, among: &[usize], line: &str, retry: &str) -> String {
    wait_for(
        &format!("'{line}' to be answered on the leader"),
        DEADLINE,
        || {
            let (leader, _) = cluster.wait_leader(among);
            let reply = cluster.try_command(leader, line)?;
            let final_line = reply.final_line;
            let again = final_line.contains("not leader") || final_line.contains(retry);
            (!again).then_some(final_line)
        },
    )
}

/// `members` on node `id`: `(id, address, role)` per line, after checking the `end` count.
fn members(cluster: &Cluster, id: usize) -> Vec<(u64, String, String)> {
    let reply = cluster
        .try_command(id, "members")
        .expect("members answered");
    let count: usize = reply
        .final_line
        .strip_prefix("end ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("members ends with 'end <count>': {reply:?}"));
    assert_eq!(count, reply.lines.len(), "{reply:?}");
    reply
        .lines
        .iter()
        .map(|l| {
            let words: Vec<&str> = l.split(' ').collect();
            assert_eq!(words[0], "member", "{l}");
            (words[1].parse().unwrap(), words[2].into(), words[3].into())
        })
        .collect()
}

fn loadgen(nodes: &str, seconds: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--nodes", nodes, "--connections", "4", "--pipeline", "4"])
        .args(["--duration", seconds, "--target", "any", "--verify"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen")
}

/// Waits (bounded) for loadgen to finish and asserts its verification passed.
fn assert_loadgen_verified(mut child: std::process::Child) {
    let finished = wait_for("loadgen to finish", Duration::from_secs(180), || {
        child.try_wait().ok().flatten()
    });
    let output = child.wait_with_output().expect("loadgen output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        finished.success(),
        "loadgen --verify failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.to_lowercase().contains("verif"), "{stdout}");
}

#[test]
fn a_fourth_node_joins_is_promoted_and_replaces_an_original_under_load() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let load = loadgen(&cluster.peers_arg(), "20");

    // An empty node asks node 1 to join and waits; the operator adds it on the leader.
    let new = cluster.add_joiner();
    cluster.spawn_join(new, 1);
    let addr = cluster.addrs[new];
    let added = on_leader(
        &cluster,
        &[0, 1, 2],
        &format!("add {new} {addr}"),
        "not committed",
    );
    assert_eq!(added, format!("ack added node {new} as a learner"));
    wait_for("node 3 to listen once added", DEADLINE, || {
        TcpStream::connect(addr).ok()
    });
    wait_for("node 2 to list the learner", DEADLINE, || {
        let listed = members(&cluster, 2);
        listed
            .contains(&(new as u64, addr.to_string(), "learner".into()))
            .then_some(())
    });
    wait_for("status to list the learner", DEADLINE, || {
        let status = common::status(&cluster, 0)?;
        let learners = status.get("learners")?.clone();
        (learners == new.to_string() && status.get("voters")? == "0,1,2").then_some(())
    });
    // Promoted once caught up (the leader refuses with the reason until then).
    let promoted = on_leader(
        &cluster,
        &[0, 1, 2],
        &format!("promote {new}"),
        "not caught up",
    );
    assert_eq!(promoted, format!("ack node {new} is a voter"));

    // An original node that does not lead leaves, and is killed.
    let (leader, _) = cluster.wait_leader(&[0, 1, 2]);
    let gone = (0..3).find(|id| *id != leader).unwrap();
    let removed = on_leader(
        &cluster,
        &[0, 1, 2],
        &format!("remove {gone}"),
        "not committed",
    );
    assert_eq!(removed, format!("ack removed node {gone}"));
    cluster.kill(gone);
    let rest: Vec<usize> = [0, 1, 2, new]
        .into_iter()
        .filter(|id| *id != gone)
        .collect();
    // Every remaining member, the new one included, lists the new configuration.
    let want: Vec<u64> = rest.iter().map(|id| *id as u64).collect();
    for id in &rest {
        wait_for("the new configuration on every member", DEADLINE, || {
            let listed = members(&cluster, *id);
            let ids: Vec<u64> = listed.iter().map(|m| m.0).collect();
            (ids == want && listed.iter().all(|m| m.2 == "voter")).then_some(())
        });
    }

    assert_loadgen_verified(load);
    // The new node holds the same log as the others.
    let marker = cluster.post(rest[0], "after-the-replacement");
    wait_for("the new node to hold every message", DEADLINE, || {
        let log = cluster.chat_log(new);
        (log.len() as u64 >= marker && log == cluster.chat_log(rest[0])).then_some(())
    });

    // The removed node, restarted, is refused by the members and disturbs nobody.
    let seen: Vec<usize> = rest
        .iter()
        .map(|id| log_text(&cluster, *id).len())
        .collect();
    cluster.spawn(gone);
    wait_for("the members to refuse the removed node", DEADLINE, || {
        rest.iter()
            .zip(&seen)
            .any(|(id, from)| {
                log_text(&cluster, *id)[*from..].contains(&format!("node {gone} was removed"))
            })
            .then_some(())
    });
    let told = format!("refused this node: node {gone} was removed");
    wait_for(
        "the removed node to log that it was removed",
        DEADLINE,
        || log_text(&cluster, gone).contains(&told).then_some(()),
    );
    cluster.post(rest[1], "still-serving");

    // The joined node restarts from its data dir alone.
    cluster.stop(new);
    cluster.spawn(new);
    let last = cluster.post(rest[0], "after-the-restart");
    wait_for("the restarted joined node to catch up", DEADLINE, || {
        (cluster.chat_log(new).len() as u64 >= last).then_some(())
    });
}

#[test]
fn removing_the_leader_keeps_the_cluster_serving() {
    let cluster = Cluster::start(3, &[]);
    let (leader, _) = cluster.wait_leader(&[0, 1, 2]);
    cluster.post(leader, "before");
    let reply = cluster
        .try_command(leader, &format!("remove {leader}"))
        .expect("answered");
    assert_eq!(reply.final_line, format!("ack removed node {leader}"));
    let rest: Vec<usize> = (0..3).filter(|id| *id != leader).collect();
    let (next, _) = cluster.wait_new_leader(&rest, leader);
    assert_ne!(next, leader);
    cluster.post(rest[0], "after");
    cluster.post(rest[1], "after-again");
    let listed = members(&cluster, rest[0]);
    let ids: Vec<u64> = listed.iter().map(|m| m.0).collect();
    assert_eq!(ids, rest.iter().map(|id| *id as u64).collect::<Vec<_>>());
    // A change that breaks a rule is refused with the reason, not acknowledged.
    let again = on_leader(
        &cluster,
        &rest,
        &format!("remove {leader}"),
        "not committed",
    );
    assert!(
        again.starts_with("err ") && again.contains("not a member"),
        "{again}"
    );
    let taken = on_leader(
        &cluster,
        &rest,
        &format!("add {leader} 127.0.0.1:1"),
        "not committed",
    );
    assert!(
        taken.starts_with("err ") && taken.contains("was a member"),
        "{taken}"
    );
}

/// A child process stopped with SIGTERM (a clean stop of everything it started) when dropped.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `count` consecutive free loopback ports (the cluster tool puts node j on base + j).
fn consecutive_free_ports(count: u16) -> u16 {
    let start = 30000 + (std::process::id() % 500) as u16 * 50;
    (0..40)
        .map(|k| start.wrapping_add(k * 97) % 30000 + 30000)
        .find(|base| {
            (0..count).all(|j| std::net::TcpListener::bind(("127.0.0.1", base + j)).is_ok())
        })
        .expect("consecutive free ports")
}

fn cluster_tool(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cluster"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cluster");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn the_cluster_tool_adds_a_fourth_node_and_removes_an_original() {
    let base = consecutive_free_ports(4);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().unwrap().to_string();
    let port = base.to_string();
    // Tool options, then `--` and what every node it starts gets.
    let spawn = |tool_args: &[&str], node_args: &[&str]| {
        Stopped(
            Command::new(env!("CARGO_BIN_EXE_cluster"))
                .args(tool_args)
                .args(["--base-port", &port, "--data-dir", &data, "--"])
                .args(["--heartbeat-ms", "40", "--election-timeout-ms", "400"])
                .args(node_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn cluster"),
        )
    };
    let _cluster = spawn(&["--nodes", "3", "--fsync", "never"], &[]);
    let members_now = || cluster_tool(&["members", "--base-port", &port]).1;
    wait_for("the local cluster to elect a leader", DEADLINE, || {
        members_now().contains(" leader").then_some(())
    });
    let _added = spawn(&["add", "3"], &["--fsync", "never"]);
    let voter3 = format!("member 3 127.0.0.1:{} voter", base + 3);
    wait_for("node 3 to be added and promoted", DEADLINE, || {
        members_now().contains(&voter3).then_some(())
    });
    let (ok, said) = cluster_tool(&["remove", "0", "--base-port", &port]);
    assert!(ok && said.contains("removed node 0"), "{said}");
    let listed = members_now();
    let ids: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.strip_prefix("member "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(ids, ["1", "2", "3"], "{listed}");
}
