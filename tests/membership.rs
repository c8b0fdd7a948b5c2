//! Real `server` processes: the cluster's identity is chosen once at bootstrap and stored in
//! each data dir, so it no longer depends on the command line's member list.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};

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
