//! The client library against the fake cluster: sessions, exactly-once retries through every
//! kind of failure, pipelining, paging. Each test runs in well under a second.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

mod client_fake;

use client_fake::{FakeCluster, Fault};
use raftchat::client::*;

fn policy() -> RetryPolicy {
    RetryPolicy {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(300),
        retry_budget: Duration::from_secs(5),
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        overload_pause: Duration::from_millis(2),
    }
}

fn post(text: &str) -> Mutation {
    Mutation::Post {
        room: "general".into(),
        nick: "tester".into(),
        text: text.into(),
    }
}

/// (node, seq) of every Post the cluster received, in arrival order.
fn post_attempts(cluster: &FakeCluster) -> Vec<(usize, u64)> {
    cluster
        .state()
        .mutation_seqs()
        .into_iter()
        .map(|(node, s)| (node, s.seq))
        .collect()
}

#[test]
fn post_read_and_status_on_a_healthy_cluster() {
    let cluster = FakeCluster::start(3).unwrap();
    let nodes = cluster.nodes().to_vec();
    let mut session = Session::open(&nodes, 0, policy()).unwrap();
    for (i, text) in ["one", "two", "three"].into_iter().enumerate() {
        assert_eq!(
            session.post_blocking("general", "alice", text).unwrap(),
            i as u64 + 1
        );
    }
    let log = read_log_all(nodes[2]).unwrap();
    assert_eq!(
        log.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
    assert_eq!(
        log.iter().map(|m| m.position).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(log.iter().all(|m| m.room == "general" && m.nick == "alice"));

    let s = status(nodes[0]).unwrap();
    assert_eq!(
        (s.node_id, s.role, s.term, s.leader, s.commit),
        (0, Role::Leader, 1, Some(0), 3)
    );
    assert_eq!(status(nodes[1]).unwrap().role, Role::Follower);
    assert_eq!(leader_and_term(&cluster_status(&nodes)), (Some(0), 1));

    // The floor each request carried: every earlier seq had been answered.
    let sent: Vec<_> = cluster
        .state()
        .mutation_seqs()
        .into_iter()
        .map(|(_, s)| (s.seq, s.lowest_unacked_seq))
        .collect();
    assert_eq!(sent, [(1, 1), (2, 2), (3, 3)]);
    assert_eq!(session.lowest_unacked_seq(), 4);
    assert_eq!(session.stats(), SessionStats::default());
}

#[test]
fn timeout_unknown_is_retried_elsewhere_with_the_same_seq_and_applied_once() {
    let cluster = FakeCluster::start(3).unwrap();
    cluster.state().forward = true;
    let nodes = cluster.nodes().to_vec();
    let mut session = Session::open(&nodes, 0, policy()).unwrap();
    cluster.state().faults.push_back(Fault::ApplyThenTimeout);

    let position = session
        .post_blocking("general", "alice", "exactly once")
        .unwrap();

    assert_eq!(
        position, 1,
        "the retry is answered with the first attempt's result"
    );
    let state = cluster.state();
    assert_eq!(state.log.len(), 1, "applied once");
    assert_eq!(state.applied, 1);
    let attempts: Vec<_> = state.mutation_seqs();
    assert_eq!(attempts.len(), 2);
    // The hint names the node that timed out, so the retry goes round-robin to node 1.
    assert_eq!((attempts[0].0, attempts[1].0), (0, 1));
    assert_eq!(attempts[0].1, attempts[1].1, "same session, seq and floor");
    drop(state);
    let stats = session.stats();
    assert_eq!(
        (stats.timeout_unknown, stats.reconnects, stats.resent),
        (1, 1, 1)
    );
}

#[test]
fn not_leader_follows_the_hint() {
    let cluster = FakeCluster::start(3).unwrap();
    cluster.state().leader = Some(2);
    let nodes = cluster.nodes().to_vec();
    // Opening on node 0 is redirected to node 2.
    let mut session = Session::open(&nodes, 0, policy()).unwrap();
    assert_eq!(session.node(), 2);
    assert_eq!(session.post_blocking("general", "a", "first").unwrap(), 1);
    // A new leader: node 2 refuses with a hint to 1, and the session goes straight there
    // (round-robin would have tried node 0).
    {
        let mut state = cluster.state();
        state.leader = Some(1);
        state.term = 2;
    }
    assert_eq!(session.post_blocking("general", "a", "second").unwrap(), 2);
    assert_eq!(post_attempts(&cluster), [(2, 1), (2, 2), (1, 2)]);
    assert_eq!(session.node(), 1);
    assert_eq!(session.stats().not_leader, 1);
    assert_eq!(cluster.state().log.len(), 2);
}

#[test]
fn a_lost_connection_is_retried_with_the_same_seq() {
    let cluster = FakeCluster::start(2).unwrap();
    cluster.state().forward = true;
    let nodes = cluster.nodes().to_vec();
    let mut session = Session::open(&nodes, 0, policy()).unwrap();
    cluster
        .state()
        .faults
        .push_back(Fault::Close { apply: true });
    assert_eq!(
        session
            .post_blocking("general", "a", "applied, answer lost")
            .unwrap(),
        1
    );
    cluster
        .state()
        .faults
        .push_back(Fault::Close { apply: false });
    assert_eq!(
        session
            .post_blocking("general", "a", "not applied")
            .unwrap(),
        2
    );

    assert_eq!(post_attempts(&cluster), [(0, 1), (1, 1), (1, 2), (0, 2)]);
    let texts: Vec<_> = cluster.state().log.iter().map(|m| m.text.clone()).collect();
    assert_eq!(texts, ["applied, answer lost", "not applied"]);
    assert_eq!(session.stats().connection_errors, 2);
}

#[test]
fn a_silent_node_is_given_up_after_the_request_timeout() {
    let cluster = FakeCluster::start(2).unwrap();
    cluster.state().forward = true;
    let nodes = cluster.nodes().to_vec();
    let mut session = Session::open(&nodes, 0, policy()).unwrap();
    cluster
        .state()
        .faults
        .push_back(Fault::Silence { apply: true });

    let started = Instant::now();
    assert_eq!(session.post_blocking("general", "a", "slow").unwrap(), 1);
    let waited = started.elapsed();
    assert!(
        waited >= policy().request_timeout,
        "gave up after {waited:?}"
    );
    assert!(
        waited < policy().request_timeout * 4,
        "gave up after {waited:?}"
    );
    assert_eq!(session.stats().request_timeouts, 1);
    assert_eq!(post_attempts(&cluster), [(0, 1), (1, 1)]);
    assert_eq!(cluster.state().log.len(), 1);
}

#[test]
fn pipelined_posts_survive_overload_and_failover_in_flight() {
    let cluster = FakeCluster::start(3).unwrap();
    cluster.state().forward = true;
    let nodes = cluster.nodes().to_vec();
    let mut session = Session::open(&nodes, 0, policy()).unwrap();
    cluster.state().faults.extend([
        Fault::Overloaded,
        Fault::Overloaded,
        Fault::ApplyThenTimeout,
        Fault::Close { apply: true },
    ]);

    const N: u64 = 300;
    for i in 1..=N {
        assert_eq!(session.submit(post(&format!("p-{i}"))).unwrap(), i);
    }
    let mut done = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while session.in_flight() > 0 {
        assert!(
            Instant::now() < deadline,
            "stuck with {} in flight",
            session.in_flight()
        );
        session.poll(Some(deadline), &mut done).unwrap();
    }

    let seqs: BTreeSet<u64> = done.iter().map(|c| c.seq).collect();
    assert_eq!(
        seqs,
        (1..=N).collect(),
        "every request completed exactly once"
    );
    let state = cluster.state();
    assert_eq!(state.log.len() as u64, N, "no duplicates in the log");
    for c in &done {
        let Answer::Posted { position, .. } = c.answer else {
            panic!("{c:?}")
        };
        assert_eq!(
            state.log[position as usize - 1].text,
            format!("p-{}", c.seq),
            "the ack names the message's position"
        );
    }
    assert_eq!(session.lowest_unacked_seq(), N + 1);
    let stats = session.stats();
    assert_eq!((stats.overloaded, stats.timeout_unknown), (2, 1));
    // The Close may hit the abandoned connection (nobody notices) or the retry's.
    assert!(stats.connection_errors <= 1);
    assert!(stats.resent >= 2);
}

#[test]
fn expired_sessions_and_rejections_are_reported() {
    let cluster = FakeCluster::start(1).unwrap();
    let nodes = cluster.nodes().to_vec();
    let mut session = Session::open(&nodes, 0, policy()).unwrap();
    session
        .submit(post("in flight when the session expires"))
        .unwrap();
    cluster.state().faults.push_back(Fault::Expire);
    assert!(matches!(
        session.post_blocking("general", "a", "x"),
        Err(SessionError::Expired)
    ));
    assert_eq!(session.abandon(), [1, 2]);
    assert_eq!(session.in_flight(), 0);

    // A fresh session works; a Del of a missing key is a final error, not retried.
    let mut session = Session::open(&nodes, 0, policy()).unwrap();
    match session.call(Mutation::Del { key: "nope".into() }).unwrap() {
        Answer::Error {
            kind: ErrorKind::NotFound,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        session.submit(post(&"x".repeat(70_000))),
        Err(SessionError::Invalid(_))
    ));
}

#[test]
fn key_value_mutations_through_a_session() {
    let cluster = FakeCluster::start(1).unwrap();
    let mut session = Session::open(cluster.nodes(), 0, policy()).unwrap();
    let set = session
        .call(Mutation::Set {
            key: "k".into(),
            value: "v1".into(),
        })
        .unwrap();
    assert!(matches!(set, Answer::KvAck { revision: 1, .. }));
    let cas = Mutation::Cas {
        key: "k".into(),
        expected: Some("v0".into()),
        new: "v2".into(),
    };
    assert!(
        matches!(session.call(cas).unwrap(), Answer::CasFailed { current: Some(ref v), .. } if v == "v1")
    );
    let cas = Mutation::Cas {
        key: "k".into(),
        expected: Some("v1".into()),
        new: "v2".into(),
    };
    assert!(matches!(
        session.call(cas).unwrap(),
        Answer::KvAck { revision: 2, .. }
    ));
    assert!(matches!(
        session.call(Mutation::Del { key: "k".into() }).unwrap(),
        Answer::KvAck { revision: 3, .. }
    ));
}

#[test]
fn keys_lists_a_prefix_in_order_on_any_node() {
    let cluster = FakeCluster::start(2).unwrap();
    let mut session = Session::open(cluster.nodes(), 0, policy()).unwrap();
    for key in ["user-b", "color", "user-a", "user", "colour"] {
        let set = Mutation::Set {
            key: key.into(),
            value: "v".into(),
        };
        assert!(matches!(session.call(set).unwrap(), Answer::KvAck { .. }));
    }
    // A follower serves the read, like a node does (ReadIndex through the leader).
    let mut conn = Connection::connect(cluster.nodes()[1]).unwrap();
    let mut keys = |prefix: &str| {
        let req_id = conn.next_req_id();
        let answer = conn
            .call(&Request::Keys {
                req_id,
                prefix: prefix.into(),
            })
            .unwrap();
        assert_eq!(answer.req_id(), req_id);
        answer
    };
    let key_list = |answer: Answer| match answer {
        Answer::KeyList { total, keys, .. } => (total, keys),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        key_list(keys("user-")),
        (2, vec!["user-a".into(), "user-b".into()])
    );
    assert_eq!(
        key_list(keys("")).1,
        ["color", "colour", "user", "user-a", "user-b"]
    );
    assert_eq!(key_list(keys("x")), (0, vec![]));
    // A prefix the telnet `keys` refuses is rejected, not listed.
    match keys("a b") {
        Answer::Error {
            kind: ErrorKind::Rejected,
            message,
            ..
        } => assert!(message.contains("prefix"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_key_list_too_long_for_one_frame_is_cut_and_says_so() {
    let cluster = FakeCluster::start(1).unwrap();
    {
        let mut state = cluster.state();
        for i in 0..5000 {
            state.kv.insert(format!("{i:0>256}"), ("v".into(), 1));
        }
    }
    let mut conn = Connection::connect(cluster.nodes()[0]).unwrap();
    let answer = conn
        .call(&Request::Keys {
            req_id: 0,
            prefix: "".into(),
        })
        .unwrap();
    let Answer::KeyList { total, keys, .. } = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(total, 5000);
    assert!(keys.len() > 4000 && keys.len() < 5000, "{}", keys.len());
    let expected: Vec<String> = (0..keys.len()).map(|i| format!("{i:0>256}")).collect();
    assert_eq!(keys, expected, "the first keys in order");
}

#[test]
fn read_log_all_pages_through_the_whole_log() {
    let cluster = FakeCluster::start(2).unwrap();
    cluster.state().page_max = 3;
    let mut session = Session::open(cluster.nodes(), 0, policy()).unwrap();
    for i in 1..=10 {
        session
            .post_blocking("general", "a", &format!("m{i}"))
            .unwrap();
    }
    let log = read_log_all(cluster.nodes()[1]).unwrap();
    assert_eq!(
        log.iter().map(|m| m.text.clone()).collect::<Vec<_>>(),
        (1..=10).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    let reads = cluster
        .state()
        .received
        .iter()
        .filter(|(_, r)| matches!(r, Request::ReadLog { .. }))
        .count();
    assert_eq!(reads, 4, "pages of 3, 3, 3, 1");
    cluster.state().log.clear();
    assert!(read_log_all(cluster.nodes()[0]).unwrap().is_empty());
}

#[test]
fn an_unreachable_cluster_fails_within_the_retry_budget() {
    let cluster = FakeCluster::start(2).unwrap();
    cluster.state().down = vec![true, true];
    let quick = RetryPolicy {
        retry_budget: Duration::from_millis(200),
        ..policy()
    };
    let started = Instant::now();
    assert!(matches!(
        Session::open(cluster.nodes(), 0, quick),
        Err(SessionError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(2));
    // During an election (no leader, no hint) every node refuses until one is elected.
    {
        let mut state = cluster.state();
        state.down = vec![false, false];
        state.leader = None;
    }
    let session = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            cluster.state().leader = Some(1);
        });
        Session::open(cluster.nodes(), 0, policy()).unwrap()
    });
    assert_eq!(session.node(), 1);
    assert!(cluster.state().received.len() > 2, "refused while electing");
}
