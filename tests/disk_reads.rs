//! Reads of old history off the event loop (`server::disk_reads`): with
//! `--testing-disk-read-gate` the reader thread holds every read of the message store until
//! the gate file exists. A `history` that needs messages only the store has then stays
//! unanswered while another client's commands are answered; once the gate opens it arrives
//! whole and correct.

mod common;

use std::time::{Duration, Instant};

use common::{load_messages as load, wait_for, Client, Cluster, DEADLINE};

/// One 4,096-message chunk in memory: most of `MESSAGES` live only in the store.
const MESSAGES: u64 = 20_000;
/// Posted to #old before them: only the store has these.
const OLD: usize = 1000;

/// True if no answer arrives on `client` within `wait` (live-delivery pushes may).
fn silent_for(client: &mut Client, wait: Duration) -> bool {
    client.set_read_timeout(wait).unwrap();
    let got = loop {
        match client.read_line() {
            Ok(line) if line.starts_with("msg ") => client.pushes.push(line),
            other => break other,
        }
    };
    client.set_read_timeout(Duration::from_secs(20)).unwrap();
    match got {
        Ok(line) => panic!("expected no answer yet, got {line:?}"),
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn a_history_read_from_disk_waits_off_the_loop_while_others_are_answered() {
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("open");
    let gate_arg = gate.to_str().unwrap().to_string();
    let cluster = Cluster::start(
        1,
        &[
            "--memory-budget-mib",
            "16",
            "--testing-disk-read-gate",
            &gate_arg,
        ],
    );
    cluster.wait_leader(&[0]);
    let mut poster = cluster.client(0);
    let joined = poster.command("join old").unwrap();
    assert!(
        joined.final_line.starts_with("ack joined #old"),
        "{joined:?}"
    );
    for k in 1..=OLD {
        // Posts past the per-client rate are refused: retry those.
        wait_for(&format!("old {k} to be posted"), DEADLINE, || {
            let reply = poster.command(&format!("msg old {k}")).unwrap();
            if reply.final_line.starts_with("err rate limited") {
                return None;
            }
            assert!(reply.final_line.starts_with("ack "), "{reply:?}");
            Some(())
        });
    }
    load(&cluster, MESSAGES);
    // The reference, listed with the gate open; then the gate shuts.
    std::fs::write(&gate, b"").unwrap();
    let whole = cluster.chat_log(0);
    std::fs::remove_file(&gate).unwrap();
    assert_eq!(whole.len(), OLD + MESSAGES as usize);
    let reference: Vec<String> = whole
        .iter()
        .filter(|l| l.contains(" #old <"))
        .cloned()
        .collect();
    assert_eq!(reference.len(), OLD);

    let mut a = cluster.client(0);
    a.send_raw(format!("history #old {OLD}\n").as_bytes())
        .unwrap();
    assert!(silent_for(&mut a, Duration::from_millis(300)));
    // A listing of the whole chat waits for its first page from the store too.
    let mut c = cluster.client(0);
    c.send_raw(b"get chatLog\n").unwrap();
    assert!(silent_for(&mut c, Duration::from_millis(300)));

    // Meanwhile another client is served: status, a post, the room's newest messages (in
    // memory: answered without the reader thread).
    let mut b = cluster.client(0);
    let started = Instant::now();
    let status = b.status().unwrap();
    assert!(status.contains_key("role"), "{status:?}");
    let posted = b.command("msg while A waits").unwrap();
    assert!(posted.final_line.starts_with("ack "), "{posted:?}");
    let newest = b.command("history #general 3").unwrap();
    assert_eq!(newest.final_line, "end 3", "{newest:?}");
    assert!(newest.lines[2].ends_with("while A waits"), "{newest:?}");
    let rooms = b.command("rooms").unwrap();
    assert!(rooms.final_line.starts_with("end "), "{rooms:?}");
    assert!(started.elapsed() < DEADLINE);

    // A is still waiting for the disk.
    assert!(silent_for(&mut a, Duration::from_millis(300)));
    std::fs::write(&gate, b"").unwrap();
    let reply = a.read_reply().unwrap();
    assert_eq!(reply.final_line, format!("end {OLD}"));
    assert!(reply.lines == reference, "the whole room, as posted");
    let listing = c.read_reply().unwrap();
    assert_eq!(listing.final_line, format!("end {}", whole.len()));
    assert!(listing.lines == whole, "the whole chat, as listed before");

    // With the gate open, reads from disk are answered straight away.
    let again = wait_for("a second history from disk", DEADLINE, || {
        a.command("history #old 10").ok()
    });
    assert_eq!(again.final_line, "end 10");
    assert!(again.lines[..] == reference[OLD - 10..]);

    // A live-delivery line posted while a long `get chatLog` streams to A (unread, so the
    // listing is held up if the socket buffers fill) comes after the listing's `end`, whole.
    a.send_raw(b"get chatLog\n").unwrap();
    let held = b.command("msg held behind a listing").unwrap();
    assert!(held.final_line.starts_with("ack "), "{held:?}");
    let before = a.pushes.len();
    let listing = a.read_reply().unwrap();
    assert!(listing.final_line.starts_with("end "), "{listing:?}");
    assert!(
        a.pushes[before..]
            .iter()
            .all(|p| !p.contains("held behind")),
        "the push came inside the listing"
    );
    let pushed = a.wait_push("held behind a listing");
    assert!(pushed.starts_with("msg "), "{pushed:?}");
}
