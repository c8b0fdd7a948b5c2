//! The web front-end on real processes: the chat page, `/metrics`, `/health` and error statuses
//! over plain HTTP on the shared client port, and telnet still served next to them. Never
//! reaches beyond 127.0.0.1; every node started is killed when the cluster drops.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{wait_for, Cluster, DEADLINE};

/// A whole HTTP exchange: sends `request` raw, reads until the server closes.
fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("response until close");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, head.to_string(), body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    exchange(addr, request.as_bytes())
}

#[test]
fn page_unknown_paths_and_garbage_get_the_right_status_and_telnet_keeps_working() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let addr = cluster.addrs[1];
    let (status, head, body) = get(addr, "/");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("Content-Type: text/html"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    assert!(body.contains("const NODE = 1;"), "the page names its node");
    assert!(
        body.contains(&format!("\"{}\"", cluster.addrs[2])),
        "members listed"
    );
    let (status, _, _) = get(addr, "/nope");
    assert_eq!(status, 404);
    let (status, _, body) = exchange(addr, b"GET \x01\x02 garbage\r\n\r\n");
    assert_eq!(status, 400, "{body}");
    // Telnet on the same node is undisturbed, `get chatLog` included.
    cluster.post(1, "still telnet");
    assert!(cluster
        .chat_log(1)
        .iter()
        .any(|line| line.contains("still telnet")));
}

/// One sample line of a Prometheus text body: series (name and labels), value, family type.
struct Sample {
    series: String,
    value: f64,
    kind: String,
}

/// Sample lines of a Prometheus text body, after checking each has its HELP and TYPE first.
fn samples(body: &str) -> Vec<Sample> {
    let mut helped = std::collections::HashSet::new();
    let mut typed = std::collections::HashMap::new();
    let mut out = Vec::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(family.to_string(), kind.to_string());
        } else {
            let (name_labels, value) = line.rsplit_once(' ').expect("name and value");
            let name = name_labels.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains_key(*f)))
                .unwrap_or(name);
            assert!(helped.contains(family), "no HELP before {line}");
            let kind = typed
                .get(family)
                .unwrap_or_else(|| panic!("no TYPE before {line}"));
            out.push(Sample {
                series: name_labels.to_string(),
                value: value.parse().expect("numeric value"),
                kind: kind.clone(),
            });
        }
    }
    out
}

fn sample(samples: &[Sample], series: &str) -> f64 {
    samples
        .iter()
        .find(|s| s.series == series)
        .unwrap_or_else(|| panic!("no sample {series}"))
        .value
}

/// The sum of every series of `name` (whatever its labels).
fn total(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.series == name || s.series.starts_with(&format!("{name}{{")))
        .map(|s| s.value)
        .sum()
}

#[test]
fn metrics_are_well_formed_and_counters_grow_with_traffic() {
    let cluster = Cluster::start(3, &[]);
    let (leader, _) = cluster.wait_leader(&[0, 1, 2]);
    let addr = cluster.addrs[leader];
    let (status, head, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let first = samples(&body);
    assert_eq!(sample(&first, "raftchat_server_is_leader"), 1.0);
    assert_eq!(sample(&first, "raftchat_server_has_leader"), 1.0);
    for i in 0..5 {
        cluster.post(leader, &format!("counted {i}"));
    }
    // A follower's posts are forwarded; its own request counters see them too.
    let follower = (leader + 1) % 3;
    cluster.post(follower, "counted on a follower");
    let (_, _, body) = get(addr, "/metrics");
    let second = samples(&body);
    for name in [
        "raftchat_disk_wal_syncs_total",
        "raftchat_disk_wal_write_bytes_total",
        "raftchat_disk_wal_entries_written_total",
        "raftchat_server_commit_index",
        "raftchat_server_proposals_applied_total",
    ] {
        assert!(
            sample(&second, name) > sample(&first, name),
            "{name} grew: {} -> {}",
            sample(&first, name),
            sample(&second, name)
        );
    }
    // The histograms are measured, not declared: fsyncs, request latency, peer round trips.
    for name in [
        "raftchat_disk_wal_fsync_duration_seconds_count",
        "raftchat_disk_wal_entries_per_sync_count",
        "raftchat_client_request_duration_seconds_count",
        "raftchat_network_peer_round_trip_time_seconds_count",
    ] {
        assert!(total(&second, name) > 0.0, "{name} counted something");
    }
    assert!(
        sample(&second, "raftchat_disk_wal_fsync_duration_seconds_sum") > 0.0,
        "fsyncs take time"
    );
    assert!(
        sample(
            &second,
            "raftchat_client_requests_total{kind=\"write\",outcome=\"ok\"}"
        ) >= 5.0,
        "the five posts are counted as answered writes"
    );
    // The leader knows each follower's match lag; both followers have an RTT series.
    for id in (0..3u64).filter(|&id| id != leader as u64) {
        let lag = format!("raftchat_network_peer_match_lag_entries{{peer=\"{id}\"}}");
        sample(&second, &lag);
        let rtt = format!("raftchat_network_peer_round_trip_time_seconds_count{{peer=\"{id}\"}}");
        assert!(sample(&second, &rtt) > 0.0, "{rtt}");
    }
    let follower_body = get(cluster.addrs[follower], "/metrics").2;
    let on_follower = samples(&follower_body);
    assert!(
        total(
            &on_follower,
            "raftchat_client_request_duration_seconds_count"
        ) > 0.0,
        "the follower timed its forwarded write"
    );
    // Counters and histogram series never go down from one scrape to the next.
    for s in first.iter().filter(|s| s.kind != "gauge") {
        if let Some(later) = second.iter().find(|l| l.series == s.series) {
            assert!(
                later.value >= s.value,
                "{} went down: {} -> {}",
                s.series,
                s.value,
                later.value
            );
        }
    }
}

#[test]
fn health_is_ok_on_every_node_of_a_healthy_cluster() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    for &addr in &cluster.addrs {
        let body = wait_for("a 200 from /health", DEADLINE, || {
            let (status, _, body) = get(addr, "/health");
            (status == 200).then_some(body)
        });
        let verdict: serde_json::Value = serde_json::from_str(body.trim()).expect("json");
        assert_eq!(verdict["health"], true, "{body}");
    }
}

/// `/health` of node 0 once it is cut off from the others (both SIGSTOPped, the leader among
/// them or not): it loses its leader and answers 503; with them back it is 200 again.
#[test]
fn health_flips_to_503_on_a_node_cut_off_from_the_others_and_back() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let addr = cluster.addrs[0];
    wait_for("a 200 from /health", DEADLINE, || {
        (get(addr, "/health").0 == 200).then_some(())
    });
    cluster.pause(1);
    cluster.pause(2);
    let body = wait_for("a 503 from a node cut off", DEADLINE, || {
        let (status, _, body) = get(addr, "/health");
        (status == 503).then_some(body)
    });
    let verdict: serde_json::Value = serde_json::from_str(body.trim()).expect("json");
    assert_eq!(verdict["health"], false, "{body}");
    assert_eq!(verdict["leader"], serde_json::Value::Null, "{body}");
    cluster.resume(1);
    cluster.resume(2);
    wait_for(
        "a 200 from /health once the others are back",
        DEADLINE,
        || (get(addr, "/health").0 == 200).then_some(()),
    );
}

type WsClient = tungstenite::WebSocket<TcpStream>;

/// A WebSocket client (tungstenite, blocking) on `addr`'s `/ws`.
fn ws_connect(addr: SocketAddr) -> WsClient {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (socket, response) =
        tungstenite::client(format!("ws://{addr}/ws"), stream).expect("WebSocket handshake");
    assert_eq!(response.status().as_u16(), 101);
    socket
}

/// Reads JSON messages until one satisfies `wanted`; panics on timeout or close.
fn ws_wait(
    socket: &mut WsClient,
    what: &str,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    loop {
        let message = socket
            .read()
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
        if let tungstenite::Message::Text(text) = message {
            let value: serde_json::Value = serde_json::from_str(&text).expect("JSON from server");
            if wanted(&value) {
                return value;
            }
        }
    }
}

fn ws_send(socket: &mut WsClient, value: serde_json::Value) {
    socket
        .send(tungstenite::Message::Text(value.to_string()))
        .expect("send");
}

/// Posts `text` from the WebSocket, retrying refused posts; returns the acknowledged position.
fn ws_post(socket: &mut WsClient, text: &str) -> u64 {
    for id in 100.. {
        ws_send(
            socket,
            serde_json::json!({"type": "msg", "id": id, "text": text}),
        );
        let reply = ws_wait(socket, "the post's reply", |v| v["id"] == id);
        if reply["type"] == "ack" {
            assert_eq!(reply["req"], "msg", "{reply}");
            return reply["pos"].as_u64().expect("ack carries pos");
        }
        assert!(id < 130, "post never acknowledged: {reply}");
        std::thread::sleep(Duration::from_millis(200));
    }
    unreachable!()
}

#[test]
fn a_websocket_client_and_a_telnet_client_on_different_nodes_see_each_other() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let mut socket = ws_connect(cluster.addrs[1]);
    let hello = ws_wait(&mut socket, "hello", |v| v["type"] == "hello");
    assert_eq!(hello["node"], 1);
    assert_eq!(hello["members"].as_array().map(Vec::len), Some(3));
    ws_send(
        &mut socket,
        serde_json::json!({"type": "nick", "id": 1, "nick": "webby"}),
    );
    let ack = ws_wait(&mut socket, "nick ack", |v| v["id"] == 1);
    assert_eq!(ack["type"], "ack", "{ack}");

    let mut telnet = cluster.client(0);
    assert_eq!(
        telnet.command("nick telly").unwrap().final_line,
        "ack nick telly"
    );
    let telnet_pos = cluster.post(0, "warm-up");
    assert!(telnet_pos > 0);
    let reply = telnet.command("msg hello from telnet").unwrap();
    assert!(reply.final_line.starts_with("ack "), "{reply:?}");
    let pushed = ws_wait(&mut socket, "the telnet message", |v| {
        v["type"] == "msg" && v["text"] == "hello from telnet"
    });
    assert_eq!(pushed["nick"], "telly");
    assert_eq!(pushed["room"], "general");

    let pos = ws_post(&mut socket, "hello from the browser");
    let line = telnet.wait_push("hello from the browser");
    assert!(line.contains("<webby> hello from the browser"), "{line}");
    // The acknowledged position is the message's place in the log, and history shows it.
    ws_send(
        &mut socket,
        serde_json::json!({"type": "history", "id": 7, "room": "general", "n": 10}),
    );
    let history = ws_wait(&mut socket, "history", |v| v["id"] == 7);
    let messages = history["messages"].as_array().expect("messages");
    assert!(
        messages
            .iter()
            .any(|m| m["pos"] == pos && m["text"] == "hello from the browser"),
        "{history}"
    );
    assert!(messages.iter().any(|m| m["text"] == "hello from telnet"));
    socket.close(None).ok();
}

#[test]
fn a_websocket_session_pipelines_past_its_in_flight_bound_and_joins_rooms() {
    // 600 messages at once: past the WebSocket rate limit's default burst (server::limits).
    let cluster = Cluster::start(3, &["--msg-rate", "0"]);
    let (leader, _) = cluster.wait_leader(&[0, 1, 2]);
    let mut socket = ws_connect(cluster.addrs[leader]);
    ws_wait(&mut socket, "hello", |v| v["type"] == "hello");
    ws_post(&mut socket, "warm-up");
    // More requests than a session may have in flight (256): reading pauses, then resumes.
    const SENT: u64 = 600;
    for id in 0..SENT {
        let request = serde_json::json!({"type": "msg", "id": id, "text": format!("p{id}")});
        socket
            .write(tungstenite::Message::Text(request.to_string()))
            .expect("queue");
    }
    socket.flush().expect("send");
    let mut acked = std::collections::HashSet::new();
    while acked.len() < SENT as usize {
        let reply = ws_wait(&mut socket, "a pipelined reply", |v| v["req"] == "msg");
        assert_eq!(reply["type"], "ack", "{reply}");
        assert!(acked.insert(reply["id"].as_u64().expect("id")), "{reply}");
    }
    ws_send(
        &mut socket,
        serde_json::json!({"type": "join", "id": 1, "room": "lobby"}),
    );
    let joined = ws_wait(&mut socket, "join ack", |v| v["id"] == 1);
    assert_eq!(joined["room"], "lobby", "{joined}");
    ws_send(&mut socket, serde_json::json!({"type": "rooms", "id": 2}));
    let rooms = ws_wait(&mut socket, "rooms", |v| v["id"] == 2);
    let names: Vec<&str> = rooms["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        names.contains(&"lobby") && names.contains(&"general"),
        "{rooms}"
    );
}

#[test]
fn an_unmasked_client_frame_is_closed_with_protocol_error_and_others_keep_chatting() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let addr = cluster.addrs[0];
    let mut raw = TcpStream::connect(addr).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let handshake = "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    raw.write_all(handshake.as_bytes()).unwrap();
    // An unmasked text frame "hi" (clients must mask).
    raw.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    let mut received = Vec::new();
    raw.read_to_end(&mut received).expect("the server closes");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    // The last frame is a close (0x88) with code 1002.
    let close_at = received
        .windows(2)
        .rposition(|w| w[0] == 0x88)
        .expect("a close frame");
    let code = u16::from_be_bytes([received[close_at + 2], received[close_at + 3]]);
    assert_eq!(code, 1002);
    let mut socket = ws_connect(addr);
    ws_wait(&mut socket, "hello", |v| v["type"] == "hello");
    ws_post(&mut socket, "still here");
}

/// The close code of the last close frame (0x88) the server sent on a raw socket.
fn close_code(received: &[u8]) -> u16 {
    let close_at = received
        .windows(2)
        .rposition(|w| w[0] == 0x88)
        .expect("a close frame");
    u16::from_be_bytes([received[close_at + 2], received[close_at + 3]])
}

#[test]
fn slow_huge_oversized_and_non_upgrade_requests_are_refused_and_others_keep_chatting() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let addr = cluster.addrs[0];
    // A slow-loris: half a head, then nothing. The node must answer 408 and close it.
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.set_read_timeout(Some(DEADLINE)).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n").unwrap();
    let opened = std::time::Instant::now();
    // A huge header: 431.
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let (status, _, _) = exchange(addr, huge.as_bytes());
    assert_eq!(status, 431);
    // /ws without an upgrade: 426, naming the version spoken.
    let (status, head, _) = get(addr, "/ws");
    assert_eq!(status, 426, "{head}");
    assert!(head.contains("\r\nSec-WebSocket-Version: 13"), "{head}");
    // A WebSocket frame announcing 1 MiB of payload: closed with 1009 before it is sent.
    let mut big = TcpStream::connect(addr).expect("connect");
    big.set_read_timeout(Some(DEADLINE)).unwrap();
    let handshake = "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    big.write_all(handshake.as_bytes()).unwrap();
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]); // the mask
    frame.extend_from_slice(&[0; 1024]); // the start of the payload
    big.write_all(&frame).unwrap();
    let mut received = Vec::new();
    big.read_to_end(&mut received).expect("the server closes");
    assert!(received.starts_with(b"HTTP/1.1 101 "));
    assert_eq!(close_code(&received), 1009);
    // Meanwhile WebSocket and telnet clients chat on the same node, undisturbed.
    let mut socket = ws_connect(addr);
    ws_wait(&mut socket, "hello", |v| v["type"] == "hello");
    ws_post(&mut socket, "undisturbed");
    cluster.post(0, "telnet undisturbed");
    // The slow-loris gets its 408 once its head is overdue, not before.
    let mut answer = Vec::new();
    slow.read_to_end(&mut answer).expect("closed by the server");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(
        opened.elapsed() >= Duration::from_secs(5),
        "408 after {:?}",
        opened.elapsed()
    );
}
