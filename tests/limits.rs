//! The limits that protect everyone (`server::limits`), on real processes: a flooding
//! connection is rate-limited while another keeps its latency; connections from one address are
//! capped while other addresses still connect; slow-loris and idle connections are closed; bad
//! binary frames close only their own connection. Each test sets small limits by flag.

mod common;

use std::io::{BufRead, BufReader, ErrorKind as IoErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{field, wait_for, Client, Cluster, DEADLINE};
use raftchat::proto::{self, Answer, ErrorKind, Request, SessionSeq};

/// A TCP connection to `to` from the loopback address `from` (all of 127.0.0.0/8 is local).
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let local = SocketAddr::new(IpAddr::from(from), 0);
    socket.bind(&local.into()).expect("bind a loopback source");
    socket
        .connect_timeout(&to.into(), Duration::from_secs(10))
        .expect("connect");
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    stream
}

/// Sends one telnet command and returns its final line (skipping greetings and pushes).
fn command(reader: &mut BufReader<TcpStream>, line: &str) -> String {
    reader
        .get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .expect("send");
    loop {
        let mut text = String::new();
        let n = reader.read_line(&mut text).expect("a reply line");
        assert!(n > 0, "connection closed while waiting for '{line}'");
        let text = text.trim_end().to_string();
        if ["ack", "end", "err"].iter().any(|w| text.starts_with(w)) {
            return text;
        }
    }
}

/// `status` from the loopback address `from`, as a map.
fn status_from(from: [u8; 4], to: SocketAddr) -> std::collections::HashMap<String, String> {
    let mut reader = BufReader::new(connect_from(from, to));
    reader
        .get_mut()
        .write_all(b"status\n")
        .expect("send status");
    let mut map = std::collections::HashMap::new();
    loop {
        let mut text = String::new();
        assert!(reader.read_line(&mut text).expect("status line") > 0);
        let text = text.trim_end();
        if text == "end" {
            return map;
        }
        if let Some((k, v)) = text.split_once(' ') {
            map.insert(k.to_string(), v.to_string());
        }
    }
}

/// True once the peer closed `stream` (EOF or reset), reading and dropping whatever comes.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), IoErrorKind::WouldBlock | IoErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// `msg` latencies of `n` messages on one telnet connection.
fn msg_latencies(client: &mut Client, n: usize, tag: &str) -> Vec<Duration> {
    (0..n)
        .map(|i| {
            let start = Instant::now();
            let reply = client.command(&format!("msg {tag} {i}")).expect("reply");
            assert!(reply.final_line.starts_with("ack "), "{reply:?}");
            start.elapsed()
        })
        .collect()
}

#[test]
fn a_flooding_connection_is_rate_limited_while_another_keeps_its_latency() {
    const RATE: u64 = 20;
    const BURST: u64 = 20;
    let (rate, burst) = (RATE.to_string(), BURST.to_string());
    let cluster = Cluster::start(3, &["--msg-rate", &rate, "--msg-burst", &burst]);
    let (leader, _) = cluster.wait_leader(&[0, 1, 2]);
    let mut other = cluster.client(leader);
    // 50 messages at a 20/s rate with a burst of 20 would be limited: 10 a second.
    let idle: Vec<Duration> = (0..5)
        .flat_map(|round| {
            std::thread::sleep(Duration::from_millis(1000));
            msg_latencies(&mut other, 10, &format!("idle{round}"))
        })
        .collect();
    let idle = median(idle);

    // The flood: batches of 200 lines typed ahead, each answered at once (ack or err).
    let addr = cluster.addrs[leader];
    let flood = std::thread::spawn(move || {
        let mut stream = BufReader::new(TcpStream::connect(addr).expect("connect"));
        let (mut acked, mut limited, mut example) = (0u64, 0u64, String::new());
        let start = Instant::now();
        let mut batches = 0;
        // Bounded in time and count: about 5 s of flooding.
        while start.elapsed() < Duration::from_secs(5) && batches < 100_000 {
            let batch = batches;
            batches += 1;
            let lines: String = (0..200)
                .map(|i| format!("msg flood {batch} {i}\n"))
                .collect();
            stream.get_mut().write_all(lines.as_bytes()).expect("flood");
            let mut answered = 0;
            while answered < 200 {
                let mut text = String::new();
                assert!(stream.read_line(&mut text).expect("flood reply") > 0);
                if text.starts_with("ack ") {
                    acked += 1;
                } else if text.starts_with("err rate limited: not stored, try again in ") {
                    limited += 1;
                    example = text.trim_end().to_string();
                } else if !text.starts_with("err ") {
                    continue; // a live-delivery push of the flood itself
                }
                answered += 1;
            }
        }
        (acked, limited, example, start.elapsed(), batches)
    });
    let mut during = Vec::new();
    for round in 0..5 {
        std::thread::sleep(Duration::from_millis(1000));
        if flood.is_finished() {
            break;
        }
        during.extend(msg_latencies(&mut other, 10, &format!("busy{round}")));
    }
    let (acked, limited, example, took, batches) = flood.join().expect("flood thread");
    assert!(
        during.len() >= 20,
        "too few messages measured during the flood"
    );
    let busy = median(during.clone());
    eprintln!("idle median {idle:?}, during the flood {busy:?}; flood: {acked} acked, {limited} limited in {took:?}; {example}");
    assert!(limited > 0, "the flood was never limited");
    assert!(example.ends_with(" ms"), "{example}");
    // The bucket: its burst, then RATE a second (plus one second of slack for timing).
    let allowed = BURST + RATE * (took.as_secs() + 2);
    assert!(
        acked <= allowed,
        "{acked} messages got through, at most {allowed} allowed"
    );
    assert_eq!(
        acked + limited,
        batches * 200,
        "every flood line was answered"
    );
    // Generous: 2x the idle median, with 2 ms of slack for a loopback median under 1 ms.
    assert!(
        busy <= idle * 2 + Duration::from_millis(2),
        "msg latency during the flood {busy:?} vs idle {idle:?}"
    );
    let s = status_from([127, 0, 0, 1], cluster.addrs[leader]);
    assert!(field(&s, "rate_limited") >= limited, "{s:?}");
}

#[test]
fn connections_from_one_address_are_capped_and_other_addresses_still_connect() {
    const LIMIT: usize = 100;
    const OPENED: usize = 2_000;
    let cluster = Cluster::start(1, &["--max-conns-per-ip", &LIMIT.to_string()]);
    let addr = cluster.addrs[0];
    cluster.wait_leader(&[0]);
    // Idle connections from 127.0.0.3 (the harness's own checks come from 127.0.0.1).
    let mut idle: Vec<BufReader<TcpStream>> = (0..OPENED)
        .map(|_| BufReader::new(connect_from([127, 0, 0, 3], addr)))
        .collect();
    let (mut greeted, mut refused) = (0, 0);
    for reader in &mut idle {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a first line");
        if line.starts_with("hello ") {
            greeted += 1;
        } else {
            assert_eq!(
                line.trim_end(),
                format!("err too many connections from 127.0.0.3 (limit {LIMIT})")
            );
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            assert!(
                rest.is_empty(),
                "a refused connection is closed after its line"
            );
            refused += 1;
        }
    }
    assert_eq!((greeted, refused), (LIMIT, OPENED - LIMIT));
    // Other addresses still connect and are served.
    for from in [[127, 0, 0, 1], [127, 0, 0, 2]] {
        let mut reader = BufReader::new(connect_from(from, addr));
        let reply = command(&mut reader, "msg from another address");
        assert!(reply.starts_with("ack "), "{reply}");
    }
    let s = status_from([127, 0, 0, 2], addr);
    assert_eq!(field(&s, "refused_conns_per_ip"), (OPENED - LIMIT) as u64);
    // Closing the capped ones frees their places.
    idle.clear();
    wait_for("the capped address to connect again", DEADLINE, || {
        let mut reader = BufReader::new(connect_from([127, 0, 0, 3], addr));
        command(&mut reader, "status")
            .starts_with("end")
            .then_some(())
    });
}

#[test]
fn a_slow_loris_connection_is_closed_within_the_timeout_and_a_typist_is_not() {
    let cluster = Cluster::start(
        1,
        &[
            "--partial-line-timeout-secs",
            "2",
            "--idle-timeout-secs",
            "0",
        ],
    );
    let addr = cluster.addrs[0];
    cluster.wait_leader(&[0]);
    // A half line, then one more byte every 300 ms, never a newline; the same for an HTTP
    // head and a binary frame.
    let mut loris: Vec<TcpStream> = Vec::new();
    let mut frame = Vec::new();
    proto::encode_preamble(&mut frame);
    // A header announcing a 1,000-byte body, then its first bytes: the trickle never ends it.
    frame.extend_from_slice(&1000u32.to_be_bytes());
    frame.extend_from_slice(&[4, 0, 0, 0, 0, 1, 2]);
    for first in [&b"msg hel"[..], b"GET / HTTP/1.1\r\nHost: x", &frame] {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.write_all(first).expect("send");
        loris.push(stream);
    }
    let mut typist = Client::connect(addr);
    let start = Instant::now();
    let mut closed_at = vec![None; loris.len()];
    while closed_at.iter().any(Option::is_none) && start.elapsed() < DEADLINE {
        for (stream, closed) in loris.iter_mut().zip(closed_at.iter_mut()) {
            if closed.is_none()
                && (stream.write_all(b"l").is_err()
                    || closed_within(stream, Duration::from_millis(100)))
            {
                *closed = Some(start.elapsed());
            }
        }
        let reply = typist.command("status").expect("the typist is served");
        assert_eq!(reply.final_line, "end");
    }
    for (i, at) in closed_at.iter().enumerate() {
        let at = at.unwrap_or_else(|| panic!("slow-loris connection {i} was never closed"));
        assert!(
            at >= Duration::from_millis(1500),
            "connection {i} closed early, at {at:?}"
        );
    }
    let reply = typist
        .command("msg still here")
        .expect("the typist is served");
    assert!(reply.final_line.starts_with("ack "), "{reply:?}");
    let s = typist.status().expect("status");
    assert_eq!(field(&s, "partial_closed"), 3, "{s:?}");
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let cluster = Cluster::start(1, &["--idle-timeout-secs", "2"]);
    let addr = cluster.addrs[0];
    cluster.wait_leader(&[0]);
    let mut idle = TcpStream::connect(addr).expect("connect");
    let start = Instant::now();
    let mut active = Client::connect(addr);
    let mut closed = None;
    while closed.is_none() && start.elapsed() < DEADLINE {
        if closed_within(&mut idle, Duration::from_millis(300)) {
            closed = Some(start.elapsed());
        }
        let reply = active
            .command("status")
            .expect("the active client is served");
        assert_eq!(reply.final_line, "end");
    }
    let closed = closed.expect("the idle connection was never closed");
    assert!(
        closed >= Duration::from_millis(1500),
        "closed early, at {closed:?}"
    );
    // The active client sent something every few hundred ms: it is still here.
    let s = active.status().expect("status");
    assert!(field(&s, "idle_closed") >= 1, "{s:?}");
}

/// A binary connection that has sent its preamble.
fn binary_conn(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let mut preamble = Vec::new();
    proto::encode_preamble(&mut preamble);
    stream.write_all(&preamble).expect("preamble");
    stream
}

/// Reads answers from `stream` until `want` have arrived or it closes.
fn read_answers(stream: &mut TcpStream, want: usize) -> (Vec<Answer>, bool) {
    let (mut buf, mut answers) = (Vec::new(), Vec::new());
    let mut chunk = [0u8; 65536];
    loop {
        while let Some((answer, used)) = proto::decode_answer(&buf).expect("a valid answer") {
            answers.push(answer);
            buf.drain(..used);
        }
        if answers.len() >= want {
            return (answers, false);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return (answers, true),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn bad_binary_frames_close_only_their_own_connection_with_a_log_line() {
    let cluster = Cluster::start(1, &[]);
    let addr = cluster.addrs[0];
    cluster.wait_leader(&[0]);
    let mut good = binary_conn(addr);
    let mut telnet = Client::connect(addr);
    let mut unknown_kind = Vec::new();
    Request::Status { req_id: 5 }.encode(&mut unknown_kind);
    unknown_kind[4] = 77; // the frame type byte (the CRC covers only the body)
    let mut oversized = vec![0x7f, 0xff, 0xff, 0xff, 4];
    oversized.extend_from_slice(&[0; 4]);
    let garbage = [0u8, 0, 0, 3, 4, 1, 2, 3, 4, 9, 9, 9];
    for (what, bytes) in [
        ("unknown kind", &unknown_kind[..]),
        ("oversized", &oversized),
        ("garbage", &garbage),
    ] {
        let mut bad = binary_conn(addr);
        bad.write_all(bytes).expect("send the bad frame");
        let (answers, closed) = read_answers(&mut bad, 2);
        assert!(closed, "{what}: the connection stays open");
        assert!(
            matches!(
                answers.as_slice(),
                [Answer::Error {
                    kind: ErrorKind::Rejected,
                    ..
                }]
            ),
            "{what}: {answers:?}"
        );
        // The others are untouched.
        let mut status = Vec::new();
        Request::Status { req_id: 9 }.encode(&mut status);
        good.write_all(&status)
            .expect("the good connection is open");
        let (answers, closed) = read_answers(&mut good, 1);
        assert!(
            !closed && matches!(answers[0], Answer::StatusReply { req_id: 9, .. }),
            "{what}: {answers:?}"
        );
        let reply = telnet.command("status").expect("telnet is served");
        assert_eq!(reply.final_line, "end");
    }
    let s = telnet.status().expect("status");
    assert_eq!(field(&s, "bad_frames"), 3, "{s:?}");
    let log = std::fs::read_to_string(cluster.log_path(0)).expect("node log");
    assert_eq!(log.matches("closing a binary client").count(), 3, "{log}");
}

#[test]
fn a_binary_client_over_its_rate_gets_overloaded_errors_not_silence() {
    let cluster = Cluster::start(1, &["--binary-msg-rate", "1", "--binary-msg-burst", "5"]);
    let addr = cluster.addrs[0];
    cluster.wait_leader(&[0]);
    let mut conn = binary_conn(addr);
    let mut out = Vec::new();
    Request::OpenSession { req_id: 1 }.encode(&mut out);
    conn.write_all(&out).expect("open a session");
    let (answers, _) = read_answers(&mut conn, 1);
    let Some(Answer::SessionOpened { session_id, .. }) = answers.first() else {
        panic!("no session: {answers:?}");
    };
    const SENT: u64 = 20;
    let mut out = Vec::new();
    for seq in 1..=SENT {
        let session = SessionSeq {
            session_id: *session_id,
            seq,
            lowest_unacked_seq: 1,
        };
        Request::Post {
            req_id: 100 + seq,
            session,
            room: "general".into(),
            nick: "bot".into(),
            text: format!("m{seq}"),
        }
        .encode(&mut out);
    }
    conn.write_all(&out).expect("posts");
    let (answers, closed) = read_answers(&mut conn, SENT as usize);
    assert!(!closed, "answered, not closed: {answers:?}");
    let posted = answers
        .iter()
        .filter(|a| matches!(a, Answer::Posted { .. }))
        .count();
    let limited: Vec<&Answer> = answers
        .iter()
        .filter(|a| matches!(a, Answer::Error { kind: ErrorKind::Overloaded, message, .. } if message.starts_with("rate limited: not stored, try again in ")))
        .collect();
    assert!((5..=7).contains(&posted), "{answers:?}");
    assert_eq!(posted + limited.len(), SENT as usize, "{answers:?}");
}

#[test]
fn a_busy_client_whose_reads_end_mid_frame_is_not_taken_for_a_slow_loris() {
    let cluster = Cluster::start(1, &["--partial-line-timeout-secs", "1"]);
    let addr = cluster.addrs[0];
    cluster.wait_leader(&[0]);
    let mut conn = binary_conn(addr);
    // 1,019-byte frames sent 100 bytes every 10 ms for about 3 s: almost every read ends inside
    // a frame (none ends on a boundary), but requests keep completing.
    let mut stream = Vec::new();
    let mut frames = 0u64;
    while stream.len() < 30_000 {
        frames += 1;
        let key = format!("{frames:0>1000}");
        Request::Get {
            req_id: frames,
            key,
        }
        .encode(&mut stream);
    }
    let frame_len = stream.len() / frames as usize;
    assert!(stream.len() % 100 != 0 && frame_len > 100, "{frame_len}");
    for chunk in stream.chunks(100) {
        conn.write_all(chunk).expect("still connected");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (answers, closed) = read_answers(&mut conn, frames as usize);
    assert!(
        !closed,
        "closed after {} of {frames} answers",
        answers.len()
    );
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Answer::KvValue { value: None, .. })),
        "{answers:?}"
    );
}

#[test]
fn a_websocket_session_over_its_rate_gets_an_error_json_for_each_refused_message() {
    let cluster = Cluster::start(1, &["--msg-rate", "1", "--msg-burst", "3"]);
    let addr = cluster.addrs[0];
    cluster.wait_leader(&[0]);
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let (mut socket, _) =
        tungstenite::client(format!("ws://{addr}/ws"), stream).expect("WebSocket handshake");
    const SENT: u64 = 10;
    for id in 0..SENT {
        let request = serde_json::json!({"type": "msg", "id": id, "text": format!("w{id}")});
        socket
            .send(tungstenite::Message::Text(request.to_string()))
            .expect("send");
    }
    let (mut acked, mut limited) = (0, 0);
    while acked + limited < SENT {
        let message = socket.read().expect("a reply");
        let tungstenite::Message::Text(text) = message else {
            continue;
        };
        let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        if value["id"].is_null() {
            continue; // hello, live delivery
        }
        match value["type"].as_str() {
            Some("ack") => acked += 1,
            Some("err") => {
                let reason = value["reason"].as_str().unwrap_or_default();
                assert!(
                    reason.starts_with("rate limited: not stored, try again in "),
                    "{value}"
                );
                limited += 1;
            }
            _ => panic!("unexpected reply {value}"),
        }
    }
    assert!((3..=5).contains(&acked), "{acked} acked, {limited} limited");
}
