//! The `certs` tool as a process: what it writes loads as node and client identities, and bad
//! arguments exit with status 2. Owns no server; never touches the network.

use std::process::Command;

use raftchat::tls::config::{CertRole, TlsFiles};
use raftchat::tls::identity::{common_name, node_id_of};

fn certs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_certs"))
}

#[test]
fn writes_loadable_node_and_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let out = certs()
        .args(["--dir", dir.path().to_str().unwrap(), "--nodes", "2"])
        .args(["--clients", "alice", "--hosts", "10.9.8.7,chat.test"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca = dir.path().join("ca.pem");
    for id in 0..2u64 {
        let files = TlsFiles {
            cert: dir.path().join(format!("node-{id}.pem")),
            key: dir.path().join(format!("node-{id}-key.pem")),
            ca: ca.clone(),
        };
        let material = files.load(CertRole::Node).unwrap();
        assert_eq!(node_id_of(&material.certs[0]).unwrap(), id);
    }
    let alice = TlsFiles {
        cert: dir.path().join("client-alice.pem"),
        key: dir.path().join("client-alice-key.pem"),
        ca,
    };
    let material = alice.load(CertRole::Client).unwrap();
    assert_eq!(common_name(&material.certs[0]).unwrap(), "client-alice");
    let listed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(listed.lines().count(), 8, "{listed}");
}

#[test]
fn bad_arguments_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    for args in [
        vec!["--nodes", "3"],
        vec!["--dir", path],
        vec!["--dir", path, "--nodes", "x"],
    ] {
        let status = certs().args(&args).output().unwrap().status;
        assert_eq!(status.code(), Some(2), "{args:?}");
    }
}
