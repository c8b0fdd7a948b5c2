//! The chat people use, on real processes: live delivery across nodes, rooms, nicknames,
//! history, restarts, slow readers, and the key-value commands with compare-and-set.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{wait_for, Client, Cluster, DEADLINE};

/// A client that keeps retrying `line` on its connection until the final line starts with `want`.
fn command_until(client: &mut Client, line: &str, want: &str) -> String {
    wait_for(&format!("'{line}' to answer '{want}…'"), DEADLINE, || {
        let reply = client.command(line).ok()?;
        if reply.final_line.starts_with(want) {
            Some(reply.final_line)
        } else {
            std::thread::sleep(Duration::from_millis(100));
            None
        }
    })
}

#[test]
fn a_message_posted_on_one_node_is_pushed_to_a_client_on_another() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let mut alice = cluster.client(0);
    let mut bob = cluster.client(2);
    assert_eq!(
        alice.command("nick alice").unwrap().final_line,
        "ack nick alice"
    );
    command_until(&mut alice, "join rust", "ack joined #rust");
    command_until(&mut bob, "join rust", "ack joined #rust");
    command_until(&mut alice, "msg borrow checker says hi", "ack ");
    let push = bob.wait_push("borrow checker says hi");
    assert!(
        push.contains("#rust <alice> borrow checker says hi"),
        "{push}"
    );
    // History and the chat log agree on every node.
    let histories: Vec<Vec<String>> = (0..3)
        .map(|id| {
            let mut c = cluster.client(id);
            let reply = wait_for("history", DEADLINE, || {
                c.command("history #rust")
                    .ok()
                    .filter(|r| r.final_line.starts_with("end"))
            });
            reply.lines
        })
        .collect();
    assert_eq!(histories[0].len(), 1);
    assert!(histories.iter().all(|h| *h == histories[0]));
    let log = cluster.chat_log(1);
    assert_eq!(
        log, histories[0],
        "the chat log holds the same single message"
    );
}

#[test]
fn rooms_and_messages_survive_a_full_restart() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let mut carol = cluster.client(1);
    carol.command("nick carol").unwrap();
    command_until(&mut carol, "join ops", "ack joined #ops");
    command_until(&mut carol, "msg deploy at noon", "ack ");
    command_until(&mut carol, "msg #general hello everyone", "ack ");
    drop(carol);
    for id in 0..3 {
        assert!(cluster.stop(id).success());
    }
    for id in 0..3 {
        cluster.spawn(id);
    }
    cluster.wait_leader(&[0, 1, 2]);
    let mut dave = cluster.client(2);
    let rooms = wait_for("rooms", DEADLINE, || {
        dave.command("rooms")
            .ok()
            .filter(|r| r.final_line.starts_with("end"))
    });
    assert!(
        rooms.lines.contains(&"room #ops 1".to_string()),
        "{rooms:?}"
    );
    assert!(
        rooms.lines.contains(&"room #general 1".to_string()),
        "{rooms:?}"
    );
    let history = dave.command("history #ops").unwrap();
    assert_eq!(history.lines.len(), 1);
    assert!(
        history.lines[0].ends_with("#ops <carol> deploy at noon"),
        "{history:?}"
    );
}

#[test]
fn bad_chat_input_gets_one_line_errors_and_stores_nothing() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let mut client = cluster.client(0);
    for bad in [
        "nick this-nickname-is-far-too-long-to-be-accepted",
        "nick bad\u{7}bell",
        "join bad room",
        "msg",
        "msg #nowhere hello",
        &format!("msg {}", "x".repeat(5000)),
        "set chatLog nope",
    ] {
        let reply = wait_for(bad, DEADLINE, || {
            let r = client.command(bad).ok()?;
            // "no leader" is a transient answer; anything else is the verdict on the input.
            (!r.final_line.starts_with("err no leader")).then_some(r)
        });
        assert!(reply.final_line.starts_with("err "), "{bad}: {reply:?}");
        assert!(reply.lines.is_empty(), "{bad}: a single line");
    }
    assert!(cluster.chat_log(0).is_empty(), "nothing was stored");
}

#[test]
fn a_slow_reader_is_disconnected_without_disturbing_others() {
    // One writer posts 5,000 messages: past the telnet rate limit's default (server::limits).
    let cluster = Cluster::start(3, &["--msg-rate", "0"]);
    cluster.wait_leader(&[0, 1, 2]);
    // The slow client joins the default room and then never reads.
    let mut slow = TcpStream::connect(cluster.addrs[1]).unwrap();
    slow.write_all(b"status\n").unwrap();
    let mut writer = cluster.client(0);
    let big = "y".repeat(4000);
    // Bounded: 5,000 messages of 4 KB (20 MB) is far more than the node's 4 MiB output bound
    // plus the kernel's socket buffers.
    for i in 0..5000 {
        command_until(&mut writer, &format!("msg {i} {big}"), "ack ");
        if i % 1000 == 999 {
            let status = cluster.client(1).status().unwrap();
            assert_eq!(
                status.get("node").map(String::as_str),
                Some("1"),
                "node 1 keeps serving others"
            );
        }
    }
    // Drain what the kernel buffered: a disconnected reader then sees EOF or a reset.
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let disconnected = loop {
        match std::io::Read::read(&mut slow, &mut buf) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break false
            }
            Err(_) => break true,
        }
    };
    assert!(disconnected, "the slow reader was disconnected");
    // Everyone else is fine.
    let mut other = cluster.client(1);
    command_until(&mut other, "msg after the slow reader left", "ack ");
}

#[test]
fn key_value_commands_are_linearizable_across_nodes() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let mut a = cluster.client(0);
    let mut b = cluster.client(2);
    let ack = command_until(&mut a, "set color light blue", "ack ");
    let revision: u64 = ack["ack ".len()..].parse().unwrap();
    // A get on another node right after the ack sees the write (ReadIndex, no stale read).
    let reply = b.command("get color").unwrap();
    assert_eq!(reply.final_line, "end");
    assert_eq!(reply.lines, vec![format!("value {revision} light blue")]);
    assert_eq!(
        b.command("get missing").unwrap().final_line,
        "err not found"
    );
    command_until(&mut b, "set colour red", "ack ");
    let keys = a.command("keys col").unwrap();
    assert_eq!(keys.lines, vec!["key color", "key colour"]);
    assert_eq!(keys.final_line, "end 2");
    assert!(command_until(&mut a, "del colour", "").starts_with("ack "));
    assert_eq!(command_until(&mut a, "del colour", "err"), "err not found");
    // compare-and-set: absent token, mismatch reports the current value.
    assert!(command_until(&mut a, "cas lock - alice", "").starts_with("ack "));
    assert_eq!(
        command_until(&mut b, "cas lock - bob", "err"),
        "err cas failed: current alice"
    );
}

#[test]
fn concurrent_cas_from_different_nodes_has_exactly_one_winner() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let addrs = cluster.addrs.clone();
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let addr = addrs[i % 3];
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                wait_for("a cas verdict", DEADLINE, || {
                    let reply = client.command(&format!("cas winner - client{i}")).ok()?;
                    let line = reply.final_line;
                    (line.starts_with("ack ") || line.starts_with("err cas failed")).then_some(line)
                })
            })
        })
        .collect();
    let verdicts: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners = verdicts.iter().filter(|v| v.starts_with("ack ")).count();
    assert_eq!(winners, 1, "{verdicts:?}");
    let mut c = cluster.client(1);
    let value = c.command("get winner").unwrap();
    assert_eq!(value.lines.len(), 1);
}

#[test]
fn typed_ahead_lines_are_answered_without_waiting_for_a_timer() {
    // A paste of 1,000 lines: each is proposed when the one before it is answered, from inside
    // the loop's answer path. The loop must run the next Ready at once rather than sleep in
    // poll until some timer fires (that mistake took 150 ms a line here even with no tick
    // due: 150 s for the paste, against half a second).
    let cluster = Cluster::start(
        1,
        &[
            "--msg-rate",
            "0",
            "--heartbeat-ms",
            "2000",
            "--election-timeout-ms",
            "4000",
        ],
    );
    cluster.wait_leader(&[0]);
    let mut client = cluster.client(0);
    command_until(&mut client, "msg warm", "ack ");
    let paste: String = (0..1000).map(|i| format!("msg pasted {i}\n")).collect();
    client.send_raw(paste.as_bytes()).expect("send");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut acks = 0;
    while acks < 1000 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {acks} of 1,000 typed-ahead lines answered in 30 s"
        );
        let line = client.read_line().expect("answered");
        assert!(!line.starts_with("err"), "{line}");
        if line.starts_with("ack ") {
            acks += 1;
        }
    }
}
