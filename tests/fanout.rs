//! Many people in one room, on real processes: a few thousand telnet connections spread over
//! the nodes, one message posted, and every one of them receives it. Also checks that group
//! commit shows in `status` (entries per sync grow once many clients write at once).

mod common;

use std::time::Instant;

use common::{field, status, wait_for, Client, Cluster, DEADLINE};

/// Connections opened in the fan-out test (over all nodes), unless `FANOUT_MEMBERS` says
/// otherwise; `FANOUT_NODES=1` puts every member on the poster's node (the README's
/// 10,000-member figure: `FANOUT_MEMBERS=10000 FANOUT_NODES=1`).
const MEMBERS: usize = 3_000;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn a_room_message_reaches_thousands_of_members_spread_over_the_nodes() {
    let members_count = env_or("FANOUT_MEMBERS", MEMBERS);
    let nodes = env_or("FANOUT_NODES", 3).clamp(1, 3);
    // Every member connects from 127.0.0.1: the per-address and total connection caps
    // (`--max-conns-per-ip`, `--max-conns`) are lifted so FANOUT_MEMBERS=10000 fits one node.
    let cluster = Cluster::start(3, &["--max-conns-per-ip", "0", "--max-conns", "0"]);
    cluster.wait_leader(&[0, 1, 2]);
    let mut members: Vec<Client> = (0..members_count)
        .map(|i| Client::connect(cluster.addrs[i % nodes]))
        .collect();
    // One round trip each: every session exists (and sits in #general) before the post.
    for (i, member) in members.iter_mut().enumerate() {
        let reply = member.command(&format!("nick m{i}")).expect("nick");
        assert_eq!(reply.final_line, format!("ack nick m{i}"));
    }
    let mut poster = cluster.client(0);
    let started = Instant::now();
    let ack = wait_for("the post to be acknowledged", DEADLINE, || {
        let reply = poster.command("msg hello everyone").ok()?;
        reply
            .final_line
            .starts_with("ack ")
            .then_some(reply.final_line)
    });
    let acked_after = started.elapsed();
    for member in members.iter_mut() {
        let push = member.wait_push("hello everyone");
        assert!(
            push.contains("#general <anonymous> hello everyone"),
            "{push}"
        );
    }
    eprintln!(
        "{members_count} members on {nodes} node(s): '{ack}' after {acked_after:?}, all delivered after {:?}",
        started.elapsed()
    );
}

#[test]
fn entries_per_sync_grow_when_many_clients_write_at_once() {
    let cluster = Cluster::start(3, &[]);
    let (leader, _) = cluster.wait_leader(&[0, 1, 2]);
    let writers = 32;
    let per_writer = 40;
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let addr = cluster.addrs[leader];
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                for i in 0..per_writer {
                    let line = format!("msg w{w} m{i}");
                    let reply = client.command(&line).expect("reply");
                    assert!(reply.final_line.starts_with("ack "), "{line}: {reply:?}");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("writer");
    }
    // A commit may come from the two followers before the leader's own fdatasync returns:
    // wait until the leader's counters cover every entry.
    let s = wait_for("the leader to sync every entry", DEADLINE, || {
        let s = status(&cluster, leader)?;
        (field(&s, "entries_synced") >= (writers * per_writer) as u64).then_some(s)
    });
    assert!(field(&s, "syncs") > 0, "{s:?}");
    // 32 closed-loop writers keep many entries waiting while each fdatasync runs; with one
    // sync per entry this would be about 1.
    assert!(
        field(&s, "entries_per_sync_max") > 1,
        "group commit never grouped: {s:?}"
    );
}
