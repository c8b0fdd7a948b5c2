//! The load generator against a real cluster (also over TLS, with its `--handshakes` mode), and
//! the binary protocol on real nodes: its exactly-once promise and its key listing.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{wait_for, Cluster, DEADLINE};
use raftchat::client::proto::{Answer, ErrorKind, Request, SessionSeq};
use raftchat::client::{Connection, Mutation, RetryPolicy, Session};

#[test]
fn loadgen_verifies_no_loss_across_a_leader_kill() {
    loadgen_verifies_no_loss_across_a_leader_kill_on(Cluster::start(3, &[]), &[]);
}

#[test]
fn loadgen_over_tls_verifies_no_loss_across_a_leader_kill() {
    // Every reconnect after the kill makes a new TLS connection (and handshake).
    let cluster = Cluster::start_tls(3, &[]);
    let ca = cluster.tls_dir.as_ref().unwrap().join("ca.pem");
    let ca = ca.to_str().unwrap().to_owned();
    loadgen_verifies_no_loss_across_a_leader_kill_on(cluster, &["--tls", "--ca", &ca]);
}

fn loadgen_verifies_no_loss_across_a_leader_kill_on(mut cluster: Cluster, extra_args: &[&str]) {
    let (leader, _) = cluster.wait_leader(&[0, 1, 2]);
    let nodes = cluster.peers_arg();
    let mut loadgen = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--nodes",
            &nodes,
            "--connections",
            "4",
            "--pipeline",
            "8",
            "--duration",
            "8",
        ])
        .args(["--target", "any", "--verify"])
        .args(extra_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    std::thread::sleep(Duration::from_secs(2));
    cluster.kill(leader);
    std::thread::sleep(Duration::from_secs(2));
    cluster.spawn(leader);
    // Bounded: the run is 8 s plus verification; kill it if it hangs.
    let start = Instant::now();
    let status = loop {
        if let Some(status) = loadgen.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = loadgen.kill();
            panic!("loadgen did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = loadgen.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        status.success(),
        "loadgen --verify failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.to_lowercase().contains("verify"),
        "the report says what was verified:\n{stdout}"
    );
    if extra_args.contains(&"--tls") {
        assert!(stdout.contains("over TLS"), "{stdout}");
    }
}

fn answer(conn: &mut Connection, request: &Request) -> Answer {
    conn.send(request).expect("send");
    conn.recv().expect("answer")
}

#[test]
fn a_retried_binary_post_is_applied_once() {
    let cluster = Cluster::start(3, &[]);
    let (leader, _) = cluster.wait_leader(&[0, 1, 2]);
    let mut conn = Connection::connect(cluster.addrs[leader]).expect("connect");
    let session_id = wait_for("a session", DEADLINE, || {
        match answer(&mut conn, &Request::OpenSession { req_id: 1 }) {
            Answer::SessionOpened { session_id, .. } => Some(session_id),
            _ => None,
        }
    });
    let post = |req_id| Request::Post {
        req_id,
        session: SessionSeq {
            session_id,
            seq: 1,
            lowest_unacked_seq: 1,
        },
        room: "general".into(),
        nick: "bot".into(),
        text: "exactly once".into(),
    };
    let first = answer(&mut conn, &post(2));
    let Answer::Posted { position, .. } = first else {
        panic!("posted: {first:?}")
    };
    // The same (session, seq) again, as a client would after a timeout, via another node.
    let other = (leader + 1) % 3;
    let mut conn2 = Connection::connect(cluster.addrs[other]).expect("connect");
    let again = answer(&mut conn2, &post(3));
    assert_eq!(
        again,
        Answer::Posted {
            req_id: 3,
            position
        },
        "the original result, not a new message"
    );
    let log = cluster.chat_log(other);
    assert_eq!(
        log.iter().filter(|l| l.ends_with("> exactly once")).count(),
        1,
        "{log:?}"
    );
    // An unknown session is refused with a clear error.
    let bogus = Request::Post {
        req_id: 4,
        session: SessionSeq {
            session_id: 999_999,
            seq: 1,
            lowest_unacked_seq: 1,
        },
        room: "general".into(),
        nick: "bot".into(),
        text: "nope".into(),
    };
    match answer(&mut conn, &bogus) {
        Answer::Error { kind, .. } => assert_eq!(kind, ErrorKind::SessionExpired),
        other => panic!("expected SessionExpired, got {other:?}"),
    }
}

/// Sends a `Keys` and returns the first answer that is not a transient error (an election in
/// progress answers `NotLeaderNotStored`; the read is then retried on the same node).
fn keys(conn: &mut Connection, prefix: &str) -> Answer {
    wait_for(&format!("keys '{prefix}'"), DEADLINE, || {
        let req_id = conn.next_req_id();
        let request = Request::Keys {
            req_id,
            prefix: prefix.into(),
        };
        match conn.call(&request).expect("an answer") {
            Answer::Error {
                kind:
                    ErrorKind::NotLeaderNotStored | ErrorKind::TimeoutUnknown | ErrorKind::Overloaded,
                ..
            } => None,
            answer => {
                assert_eq!(answer.req_id(), req_id, "{answer:?}");
                Some(answer)
            }
        }
    })
}

fn key_list(answer: Answer) -> (u64, Vec<String>) {
    match answer {
        Answer::KeyList { total, keys, .. } => (total, keys),
        other => panic!("expected a KeyList, got {other:?}"),
    }
}

#[test]
fn binary_keys_lists_a_prefix_linearizably_on_any_node() {
    let cluster = Cluster::start(3, &[]);
    let (leader, _) = cluster.wait_leader(&[0, 1, 2]);
    let follower = (leader + 1) % 3;
    // Keys written through the leader over binary, out of order, and one over telnet elsewhere.
    let mut session = Session::open(&cluster.addrs, leader, RetryPolicy::default()).unwrap();
    for key in ["user-b", "color", "user-a", "user"] {
        let set = Mutation::Set {
            key: key.into(),
            value: format!("value of {key}"),
        };
        let ack = session.call(set).expect("set");
        assert!(matches!(ack, Answer::KvAck { .. }), "{ack:?}");
    }
    let mut telnet = cluster.client((leader + 2) % 3);
    wait_for("a telnet set", DEADLINE, || {
        let reply = telnet.command("set user-c from telnet").ok()?;
        reply.final_line.starts_with("ack ").then_some(())
    });

    // On a follower, right after the acks: every acknowledged key is listed (ReadIndex), sorted.
    let mut conn = Connection::connect(cluster.addrs[follower]).expect("connect");
    assert_eq!(
        key_list(keys(&mut conn, "user-")),
        (3, vec!["user-a".into(), "user-b".into(), "user-c".into()])
    );
    assert_eq!(
        key_list(keys(&mut conn, "")),
        (
            5,
            ["color", "user", "user-a", "user-b", "user-c"]
                .map(String::from)
                .to_vec()
        )
    );
    assert_eq!(key_list(keys(&mut conn, "nothing")), (0, vec![]));

    // A prefix the telnet `keys` refuses gets a Rejected error frame; the connection stays usable.
    for bad in ["a b".to_string(), "tab\there".into(), "k".repeat(257)] {
        match keys(&mut conn, &bad) {
            Answer::Error { kind, message, .. } => {
                assert_eq!(kind, ErrorKind::Rejected, "{bad:?}: {message}");
                assert!(message.contains("prefix"), "{bad:?}: {message}");
            }
            other => panic!("{bad:?}: expected an error, got {other:?}"),
        }
    }
    // A delete is seen by the next listing on another node.
    let del = session
        .call(Mutation::Del {
            key: "user-b".into(),
        })
        .expect("del");
    assert!(matches!(del, Answer::KvAck { .. }), "{del:?}");
    assert_eq!(
        key_list(keys(&mut conn, "user")),
        (3, vec!["user".into(), "user-a".into(), "user-c".into()])
    );
}

/// Runs loadgen with `args` (bounded at 120 s); returns (success, stdout, stderr).
fn run_loadgen(args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("loadgen did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn loadgen_over_tls_commits_and_verifies_against_a_tls_only_cluster() {
    // Plain clients are refused, so every committed message went over TLS.
    let cluster = Cluster::start_tls(3, &["--client-tls", "required"]);
    let nodes = cluster.peers_arg();
    let ca = cluster.tls_dir.as_ref().unwrap().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let tls = raftchat::client::ClientTls::trusting(ca.as_ref()).unwrap();
    wait_for("a leader, asked over TLS", DEADLINE, || {
        let statuses = raftchat::client::cluster_status_over(&cluster.addrs, Some(&tls));
        raftchat::client::leader_and_term(&statuses).0
    });
    let common = [
        "--nodes",
        &nodes,
        "--connections",
        "8",
        "--pipeline",
        "16",
        "--size",
        "200",
        "--count",
        "3000",
    ];
    let tls_args = ["--tls", "--ca", ca, "--target", "any", "--verify", "--json"];
    let (ok, stdout, stderr) = run_loadgen(&[&common[..], &tls_args[..]].concat());
    assert!(
        ok,
        "loadgen --tls failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("\"tls\":true"), "{stdout}");
    assert!(stdout.contains("\"committed\":3000,"), "{stdout}");
    let log = raftchat::client::read_log_all_over(cluster.addrs[0], Some(&tls)).unwrap();
    assert!(log.len() >= 3000, "{} messages", log.len());
    // The same run without --tls does not get anywhere.
    let (ok, stdout, stderr) = run_loadgen(&common);
    assert!(
        !ok,
        "a plain loadgen ran against --client-tls required\n{stdout}\n{stderr}"
    );
    // --handshakes: new TLS connections, each served one round trip.
    let (ok, stdout, stderr) = run_loadgen(&[
        "--nodes",
        &nodes,
        "--tls",
        "--ca",
        ca,
        "--handshakes",
        "50",
        "--json",
    ]);
    assert!(ok, "loadgen --handshakes failed\n{stdout}\n{stderr}");
    assert!(stdout.contains("\"completed\":50,\"failed\":0"), "{stdout}");
}

#[test]
fn loadgen_login_commits_messages_under_registered_nicks() {
    // With --require-login nothing is stored without a login: loadgen without --login fails.
    let cluster = Cluster::start(3, &["--require-login"]);
    cluster.wait_leader(&[0, 1, 2]);
    let nodes = cluster.peers_arg();
    let base = ["--nodes", &nodes, "--connections", "4", "--target", "any"];
    let (_, stdout, _) = run_loadgen(&[&base[..], &["--count", "40"]].concat());
    let log = raftchat::client::read_log_all(cluster.addrs[0]).expect("log");
    assert!(
        log.is_empty(),
        "nothing is stored without a login:
{stdout}"
    );

    // First run registers lg-0..lg-3, the second logs in to the existing accounts.
    for run in 0..2 {
        let args = [&base[..], &["--count", "200", "--login", "--verify"]].concat();
        let (ok, stdout, stderr) = run_loadgen(&args);
        assert!(ok, "run {run}:\nstdout:\n{stdout}\nstderr:\n{stderr}");
    }
    let log = raftchat::client::read_log_all(cluster.addrs[1]).expect("log");
    assert!(log.len() >= 400, "{} messages", log.len());
    let nicks: std::collections::BTreeSet<&str> = log.iter().map(|m| m.nick.as_str()).collect();
    assert_eq!(
        nicks,
        ["lg-0", "lg-1", "lg-2", "lg-3"].into_iter().collect(),
        "every message is under a connection's registered nick"
    );
    let accounts = common::status(&cluster, 1).map(|s| common::field(&s, "accounts"));
    assert_eq!(accounts, Some(4));
}
