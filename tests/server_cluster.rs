//! Real `server` processes on loopback: replication, crashes, restarts, pre-vote, bad input.
//! The replication and crash-restart scenarios also run with TLS between the peers
//! (`Cluster::start_tls`; the test clients stay plain, which `--client-tls optional` allows).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{wait_for, Client, Cluster, DEADLINE};

fn positions_are_one_to_n(log: &[String]) {
    for (i, line) in log.iter().enumerate() {
        let position: usize = line
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .expect("line starts with its position");
        assert_eq!(position, i + 1, "positions have no gaps: {log:?}");
    }
}

#[test]
fn every_node_serves_the_same_log() {
    every_node_serves_the_same_log_on(Cluster::start(3, &[]));
}

#[test]
fn every_node_serves_the_same_log_over_tls() {
    every_node_serves_the_same_log_on(Cluster::start_tls(3, &[]));
}

fn every_node_serves_the_same_log_on(cluster: Cluster) {
    cluster.wait_leader(&[0, 1, 2]);
    let mut acked = Vec::new();
    for round in 0..3 {
        for id in 0..3 {
            let text = format!("hello-from-{id}-round-{round}");
            acked.push((cluster.post(id, &text), text));
        }
    }
    let logs: Vec<Vec<String>> = (0..3).map(|id| cluster.chat_log(id)).collect();
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[0], logs[2]);
    positions_are_one_to_n(&logs[0]);
    for (position, text) in &acked {
        let matching: Vec<&String> = logs[0]
            .iter()
            .filter(|l| l.ends_with(&format!("> {text}")))
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{text} appears exactly once: {:?}",
            logs[0]
        );
        assert!(
            matching[0].starts_with(&format!("{position} ")),
            "{text} sits at its acknowledged position"
        );
    }
}

#[test]
fn killed_leader_is_replaced_and_catches_up_after_restart() {
    killed_leader_is_replaced_and_catches_up_after_restart_on(Cluster::start(3, &[]));
}

#[test]
fn killed_leader_is_replaced_and_catches_up_after_restart_over_tls() {
    killed_leader_is_replaced_and_catches_up_after_restart_on(Cluster::start_tls(3, &[]));
}

fn killed_leader_is_replaced_and_catches_up_after_restart_on(mut cluster: Cluster) {
    let (leader, term) = cluster.wait_leader(&[0, 1, 2]);
    cluster.post(leader, "before-crash");
    cluster.kill(leader);
    let survivors: Vec<usize> = (0..3).filter(|&id| id != leader).collect();
    let (new_leader, new_term) = cluster.wait_new_leader(&survivors, leader);
    assert_ne!(new_leader, leader);
    assert!(new_term > term);
    for &id in &survivors {
        cluster.post(id, &format!("after-crash-via-{id}"));
    }
    cluster.spawn(leader);
    let expected = cluster.chat_log(new_leader);
    assert_eq!(expected.len(), 3);
    wait_for("the restarted node to catch up", DEADLINE, || {
        (cluster.chat_log(leader) == expected).then_some(())
    });
}

#[test]
fn a_full_stop_and_start_keeps_the_log() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    for i in 0..5 {
        cluster.post(i % 3, &format!("durable-{i}"));
    }
    let before = cluster.chat_log(0);
    for id in 0..3 {
        let status = cluster.stop(id);
        assert!(
            status.success(),
            "SIGTERM stops node {id} cleanly: {status}"
        );
    }
    for id in 0..3 {
        cluster.spawn(id);
    }
    cluster.wait_leader(&[0, 1, 2]);
    for id in 0..3 {
        assert_eq!(cluster.chat_log(id), before, "node {id} after restart");
    }
}

#[test]
fn a_paused_follower_rejoins_without_deposing_the_leader() {
    let cluster = Cluster::start(3, &[]);
    let (leader, term) = cluster.wait_leader(&[0, 1, 2]);
    let follower = (leader + 1) % 3;
    cluster.pause(follower);
    // Several election timeouts pass while the follower is away; the others keep committing.
    for i in 0..5 {
        cluster.post(leader, &format!("while-paused-{i}"));
    }
    std::thread::sleep(Duration::from_millis(1500));
    cluster.resume(follower);
    let expected = cluster.chat_log(leader);
    wait_for("the paused follower to catch up", DEADLINE, || {
        (cluster.chat_log(follower) == expected).then_some(())
    });
    assert_eq!(
        cluster.wait_leader(&[0, 1, 2]),
        (leader, term),
        "pre-vote: the rejoining node did not disrupt the leader"
    );
}

#[test]
fn bad_input_never_stops_the_node() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let node = cluster.addrs[0];

    // 1,000 idle connections stay open throughout.
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(node).expect("idle connection"))
        .collect();

    // Unknown commands and non-UTF-8 get `err` and the connection stays usable.
    let mut client = Client::connect(node);
    assert!(client
        .command("frobnicate now")
        .unwrap()
        .final_line
        .starts_with("err "));
    client.send_raw(b"msg \xc3\x28 bad\n").unwrap();
    let reply = client.read_reply().unwrap();
    assert!(reply.final_line.starts_with("err "), "{reply:?}");
    assert_eq!(client.command("help").unwrap().final_line, "end");

    // An over-long line gets one `err`, then the connection still works.
    let mut long = vec![b'a'; 70 * 1024];
    long.push(b'\n');
    client.send_raw(&long).unwrap();
    assert!(client.read_reply().unwrap().final_line.starts_with("err "));
    assert!(client.command("status").unwrap().final_line == "end");

    // Garbage bytes that look like a binary peer: the connection is closed, nothing else happens.
    let mut garbage = TcpStream::connect(node).unwrap();
    garbage
        .write_all(b"\0RCP\xff\xff\xff\xff garbage garbage garbage")
        .unwrap();
    let mut random = TcpStream::connect(node).unwrap();
    random
        .write_all(
            &(0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap();

    // A peer handshake with the wrong cluster id is refused.
    let mut impostor = TcpStream::connect(node).unwrap();
    let mut hello = Vec::new();
    raftchat::wire::encode_handshake(
        &raftchat::wire::Handshake {
            cluster_id: 0xdead_beef,
            node_id: 1,
        },
        &mut hello,
    );
    impostor.write_all(&hello).unwrap();

    // A client that asks for the log and hangs up before reading it.
    for i in 0..5 {
        cluster.post(0, &format!("filler-{i}"));
    }
    {
        let mut quitter = TcpStream::connect(node).unwrap();
        quitter
            .write_all(b"get chatLog\nget chatLog\nget chatLog\n")
            .unwrap();
    }

    // A client that sends its commands and half-closes (`printf … | nc`) still gets every
    // answer, then the node closes the connection.
    let mut half = TcpStream::connect(node).unwrap();
    half.set_read_timeout(Some(DEADLINE)).unwrap();
    half.write_all(b"status\nget chatLog\nhelp\n").unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answers = String::new();
    std::io::Read::read_to_string(&mut half, &mut answers).expect("answers, then EOF");
    let finals: Vec<&str> = answers.lines().filter(|l| l.starts_with("end")).collect();
    assert_eq!(finals.len(), 3, "three answers before the close: {answers}");

    // Everyone else is still served, on this node and the others.
    let position = cluster.post(0, "still-alive");
    assert!(position >= 6);
    let log = cluster.chat_log(1);
    assert!(log.iter().any(|l| l.ends_with("> still-alive")));
    let mut fresh = Client::connect(node);
    assert_eq!(fresh.command("status").unwrap().final_line, "end");
    drop(idle);
}

#[test]
fn a_message_sent_with_the_seed_commands_is_listed() {
    // The seed README's session, verbatim: `msg Hello, Raft!` then `get chatLog`.
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let mut client = wait_for("an ack", DEADLINE, || {
        let mut client = Client::try_connect(cluster.addrs[0])?;
        client
            .command("msg Hello, Raft!")
            .ok()?
            .final_line
            .starts_with("ack ")
            .then_some(client)
    });
    let reply = client.command("get chatLog").unwrap();
    assert!(
        reply.lines.iter().any(|l| l.ends_with("Hello, Raft!")),
        "{reply:?}"
    );
    assert_eq!(reply.final_line, format!("end {}", reply.lines.len()));
}

#[test]
fn a_listing_longer_than_one_turn_arrives_whole_while_others_are_served() {
    // `get chatLog` formats about 1 MiB per turn of the loop, then continues next turn: a
    // listing of ~3 MB takes several turns, and must still arrive whole, in order, with the
    // right count, while another client on the same node is answered meanwhile.
    let cluster = Cluster::start(3, &["--msg-rate", "0"]);
    cluster.wait_leader(&[0, 1, 2]);
    let mut poster = wait_for("a session", DEADLINE, || {
        Client::try_connect(cluster.addrs[0])
    });
    let body = "x".repeat(3900);
    let posts = 800;
    for i in 0..posts {
        let reply = poster.command(&format!("msg {i:04} {body}")).unwrap();
        assert!(reply.final_line.starts_with("ack "), "{reply:?}");
    }
    let mut reader = Client::connect(cluster.addrs[0]);
    reader.send_raw(b"get chatLog\n").unwrap();
    let mut other = Client::connect(cluster.addrs[0]);
    let mut lines = Vec::new();
    let mut answered = 0;
    loop {
        let line = reader.read_line().unwrap();
        if let Some(count) = line.strip_prefix("end ") {
            assert_eq!(count.parse::<usize>().unwrap(), lines.len());
            break;
        }
        lines.push(line);
        if lines.len() % 100 == 0 {
            assert_eq!(other.command("status").unwrap().final_line, "end");
            answered += 1;
        }
    }
    let ours: Vec<&String> = lines.iter().filter(|l| l.contains(&body)).collect();
    assert_eq!(ours.len(), posts, "every message listed once");
    for (i, line) in ours.iter().enumerate() {
        assert!(line.contains(&format!("{i:04} {body}")), "in order: {i}");
    }
    assert!(answered >= 7);
}
