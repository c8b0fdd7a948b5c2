//! The load generator against a real cluster, and the binary protocol's exactly-once promise.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{wait_for, Cluster, DEADLINE};
use raftchat::client::proto::{Answer, ErrorKind, Request, SessionSeq};
use raftchat::client::Connection;

#[test]
fn loadgen_verifies_no_loss_across_a_leader_kill() {
    let mut cluster = Cluster::start(3, &[]);
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
