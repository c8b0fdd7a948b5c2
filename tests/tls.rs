//! TLS with real processes (issue 17): a TLS cluster commits and replicates for TLS clients;
//! impostor peers (no certificate, another CA's, another node's, plain text) are refused with a
//! log line saying why and cannot move the leader's term; `--client-tls required` refuses a
//! plain client with one clear line; an expired certificate stops the node at start (exit 2,
//! naming the file); SIGHUP loads new certificates for new connections; garbage, a handshake
//! that never completes and 1,000 half-open TLS connections do not stop the node serving.
//! The client library (binary protocol) posts and reads over TLS, with `--client-tls required`
//! (plain refused) and with `--client-cert-auth` (a client certificate presented).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cluster_id_of, tls_client_config, wait_for, Client, Cluster, TlsClient, DEADLINE};
use raftchat::raft::{Message, MessageBody};
use raftchat::tls::config::{client_config, load_ca, load_certs, load_key};
use raftchat::tls::gen::TestCerts;
use raftchat::tls::{TlsFiles, TlsMaterial};
use raftchat::wire::{encode_handshake, encode_raft_message, Handshake};

fn ca(cluster: &Cluster) -> std::path::PathBuf {
    cluster
        .tls_dir
        .as_ref()
        .expect("TLS cluster")
        .join("ca.pem")
}

/// Runs `line` over TLS on node `id` until it gets a final line starting with `want`.
fn tls_command(cluster: &Cluster, id: usize, line: &str, want: &str) -> common::Reply {
    let config = tls_client_config(&ca(cluster), None);
    wait_for(&format!("{line:?} over TLS on node {id}"), DEADLINE, || {
        let mut client = TlsClient::try_connect(cluster.addrs[id], Arc::clone(&config)).ok()?;
        let reply = client.command(line).ok()?;
        reply.final_line.starts_with(want).then_some(reply)
    })
}

fn log_contains(cluster: &Cluster, id: usize, needle: &str) {
    wait_for(
        &format!("node {id}'s log to say {needle:?}"),
        DEADLINE,
        || {
            let log = std::fs::read_to_string(cluster.log_path(id)).ok()?;
            log.contains(needle).then_some(())
        },
    );
}

/// Reads until the other side closes (EOF or reset); panics if it stays open past `within`.
fn wait_closed(stream: &mut impl Read, within: Duration) {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => assert!(start.elapsed() < within, "connection still open"),
        }
    }
}

#[test]
fn a_tls_cluster_commits_and_replicates_for_tls_clients() {
    let cluster = Cluster::start_tls(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let ack = tls_command(&cluster, 0, "msg over tls", "ack ");
    assert!(ack.final_line.starts_with("ack "), "{}", ack.final_line);
    let listing = wait_for("the message on node 2 over TLS", DEADLINE, || {
        let reply = tls_command(&cluster, 2, "get chatLog", "end ");
        reply
            .lines
            .iter()
            .any(|l| l.contains("over tls"))
            .then_some(reply.lines)
    });
    assert_eq!(listing.len(), 1, "{listing:?}");
    // Plain clients still work with the default --client-tls optional.
    assert!(cluster.chat_log(1).iter().any(|l| l.contains("over tls")));
}

#[test]
fn a_burst_of_many_tls_records_is_read_to_the_end() {
    // 3,000 lines in one write: several TLS records queued in the socket at once. A TLS read
    // returns one record's plaintext, shorter than asked while more records wait, so the
    // node must keep reading (a plain socket's "short read means empty" does not hold).
    let cluster = Cluster::start_tls(1, &["--msg-rate", "0"]);
    tls_command(&cluster, 0, "msg warm", "ack ");
    let config = tls_client_config(&ca(&cluster), None);
    let mut client = TlsClient::try_connect(cluster.addrs[0], config).expect("connect");
    let lines: String = (0..3000)
        .map(|i| format!("msg burst line {i:05}\n"))
        .collect();
    assert!(lines.len() > 3 * 16384, "spans several records");
    client.send_raw(lines.as_bytes()).expect("send");
    let mut acks = 0;
    while acks < 3000 {
        let line = client
            .read_line()
            .expect("every line answered before the read timeout");
        assert!(!line.starts_with("err"), "{line}");
        if line.starts_with("ack ") {
            acks += 1;
        }
    }
}

/// A peer handshake claiming `claimed`, then a RequestVote far above the leader's term.
fn impostor_bytes(cluster: &Cluster, claimed: u64, leader: u64, term: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let hello = Handshake {
        cluster_id: cluster_id_of(&cluster.addrs),
        node_id: claimed,
    };
    encode_handshake(&hello, &mut out);
    let vote = Message {
        from: claimed,
        to: leader,
        term: term + 100,
        body: MessageBody::RequestVote {
            pre_vote: false,
            last_log_index: 1_000_000,
            last_log_term: term + 100,
        },
    };
    encode_raft_message(&vote, &mut out);
    out
}

/// Over TLS with `config`: sends the impostor's bytes (write errors are a refusal too) and
/// waits for the node to close the connection.
fn tls_impostor(addr: SocketAddr, config: Arc<rustls::ClientConfig>, bytes: &[u8]) {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(config, name).expect("client session");
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let _ = stream.write_all(bytes).and_then(|()| stream.flush());
    wait_closed(&mut stream, DEADLINE);
}

fn material(cert: &Path, key: &Path, ca: &Path) -> TlsMaterial {
    TlsMaterial {
        certs: load_certs(cert).expect("cert"),
        key: load_key(key).expect("key"),
        roots: load_ca(ca).expect("ca"),
        files: TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            ca: ca.to_owned(),
        },
    }
}

#[test]
fn impostor_peers_are_refused_and_the_leader_term_does_not_move() {
    let cluster = Cluster::start_tls(3, &[]);
    let (leader, term) = cluster.wait_leader(&[0, 1, 2]);
    let claimed = ((leader + 1) % 3) as u64;
    let other = ((leader + 2) % 3) as u64;
    let addr = cluster.addrs[leader];
    let bytes = impostor_bytes(&cluster, claimed, leader as u64, term);
    let dir = cluster.tls_dir.clone().expect("certs");
    let ca = dir.join("ca.pem");

    // No certificate at all.
    tls_impostor(addr, tls_client_config(&ca, None), &bytes);
    log_contains(
        &cluster,
        leader,
        &format!("TLS peer claiming node {claimed}: no certificate presented"),
    );

    // A node certificate from another CA.
    let certs = TestCerts::new(&dir.join("..")).expect("second CA");
    let foreign = certs.other_ca_node(claimed).expect("foreign cert");
    let m = material(&foreign.cert, &foreign.key, &ca);
    tls_impostor(
        addr,
        client_config(m.roots.clone(), Some(&m)).unwrap(),
        &bytes,
    );
    log_contains(&cluster, leader, "refused a TLS connection");

    // A valid certificate of another member, claiming to be `claimed`.
    let m = material(
        &dir.join(format!("node-{other}.pem")),
        &dir.join(format!("node-{other}-key.pem")),
        &ca,
    );
    tls_impostor(
        addr,
        client_config(m.roots.clone(), Some(&m)).unwrap(),
        &bytes,
    );
    log_contains(
        &cluster,
        leader,
        &format!("certificate is for node-{other}, expected node-{claimed}"),
    );

    // The plain-text handshake peers used before TLS.
    let mut plain = TcpStream::connect(addr).expect("connect");
    plain.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = plain.write_all(&bytes);
    wait_closed(&mut plain, DEADLINE);
    log_contains(&cluster, leader, "this node takes peers over TLS only");

    // Nobody was deposed: same leader, same term, and it still commits.
    let (after, term_after) = cluster.wait_leader(&[0, 1, 2]);
    assert_eq!(
        (after, term_after),
        (leader, term),
        "the impostors moved the term"
    );
    tls_command(&cluster, leader, "msg still leading", "ack ");
    assert_eq!(cluster.wait_leader(&[0, 1, 2]), (leader, term));
}

#[test]
fn client_tls_required_refuses_plain_clients_with_one_line() {
    let cluster = Cluster::start_tls(1, &["--client-tls", "required"]);
    tls_command(&cluster, 0, "msg only tls", "ack ");
    // A plain client that speaks first, and one that waits for the greeting.
    let mut eager = Client::connect(cluster.addrs[0]);
    eager.send_raw(b"get chatLog\n").unwrap();
    assert_eq!(
        eager.read_line().unwrap(),
        "err tls required: connect with TLS"
    );
    assert!(eager.read_line().is_err(), "closed after the line");
    let mut silent = Client::connect(cluster.addrs[0]);
    assert_eq!(
        silent.read_line().unwrap(),
        "err tls required: connect with TLS"
    );
    assert!(silent.read_line().is_err(), "closed after the line");
    log_contains(&cluster, 0, "refused a plain-text client");
}

#[test]
fn bad_tls_files_stop_the_node_at_start_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::new(dir.path()).unwrap();
    let expired = certs.expired_node(0).unwrap();
    let good = certs.node(0).unwrap();
    let run = |cert: &Path, key: &Path| {
        let port = common::free_ports(1)[0].to_string();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_server"))
            .args(["0", "1", &port, "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg("--ca")
            .arg(certs.ca_path())
            .output()
            .expect("run server");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stderr)
    };
    let (code, stderr) = run(&expired.cert, &expired.key);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("expired-node-0.pem"), "{stderr}");
    assert!(stderr.contains("expired"), "{stderr}");
    let missing = dir.path().join("nope-key.pem");
    let (code, stderr) = run(&good.cert, &missing);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("nope-key.pem: missing"), "{stderr}");
    // A certificate for another node id is refused too.
    let node1 = certs.node(1).unwrap();
    let (code, stderr) = run(&node1.cert, &node1.key);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("this node is node-0"), "{stderr}");
}

#[test]
fn sighup_loads_new_certificates_for_new_connections() {
    let cluster = Cluster::start_tls(1, &[]);
    let dir = cluster.tls_dir.clone().unwrap();
    let old_ca = dir.join("old-ca.pem");
    std::fs::copy(dir.join("ca.pem"), &old_ca).unwrap();
    tls_command(&cluster, 0, "msg before", "ack ");
    // A renewal from a new CA, written over the node's files.
    let new_dir = cluster.dir.path().join("new");
    std::fs::create_dir_all(&new_dir).unwrap();
    let renewed = TestCerts::new(&new_dir).unwrap();
    let files = renewed.node(0).unwrap();
    std::fs::copy(&files.cert, dir.join("node-0.pem")).unwrap();
    std::fs::copy(&files.key, dir.join("node-0-key.pem")).unwrap();
    std::fs::copy(renewed.ca_path(), dir.join("ca.pem")).unwrap();
    // Before the signal the node still presents the old certificate.
    let old = tls_client_config(&old_ca, None);
    assert!(TlsClient::try_connect(cluster.addrs[0], Arc::clone(&old)).is_ok());
    let status = std::process::Command::new("kill")
        .args(["-HUP", &cluster.pid(0).unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let new = tls_client_config(&renewed.ca_path(), None);
    wait_for("the renewed certificate", DEADLINE, || {
        TlsClient::try_connect(cluster.addrs[0], Arc::clone(&new)).ok()
    });
    assert!(
        TlsClient::try_connect(cluster.addrs[0], old).is_err(),
        "the old CA no longer verifies the node"
    );
    log_contains(&cluster, 0, "certificate files reloaded");
    let mut client = TlsClient::try_connect(cluster.addrs[0], new).unwrap();
    assert_eq!(
        client.command("msg after").unwrap().final_line.get(..4),
        Some("ack ")
    );
}

#[test]
fn garbage_stalled_and_half_open_tls_connections_do_not_stop_the_node() {
    let cluster = Cluster::start_tls(1, &[]);
    tls_command(&cluster, 0, "msg first", "ack ");
    let addr = cluster.addrs[0];
    // A ClientHello record header, then garbage.
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage.set_read_timeout(Some(DEADLINE)).unwrap();
    garbage
        .write_all(&[
            0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0xff, 0xff, 0xff, 1, 2, 3, 4,
        ])
        .unwrap();
    wait_closed(&mut garbage, DEADLINE);
    // 1,000 connections that start a ClientHello and never finish it.
    let mut half_open = Vec::new();
    for _ in 0..1000 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&[0x16, 0x03, 0x01, 0x02]).unwrap();
        half_open.push(s);
    }
    // Others are served meanwhile, over TLS and plain text.
    tls_command(&cluster, 0, "msg during", "ack ");
    assert!(cluster.chat_log(0).iter().any(|l| l.contains("during")));
    // Each is closed after the handshake timeout (10 s), not held forever.
    let start = Instant::now();
    for s in half_open.iter_mut().take(10) {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        wait_closed(s, DEADLINE);
    }
    assert!(
        start.elapsed() < DEADLINE,
        "half-open handshakes were not closed"
    );
    log_contains(&cluster, 0, "handshake did not finish");
}

/// A retry policy that gives up within a few seconds (a refused client must fail, not hang).
fn quick_policy() -> raftchat::client::RetryPolicy {
    raftchat::client::RetryPolicy {
        retry_budget: Duration::from_secs(3),
        request_timeout: Duration::from_secs(5),
        ..raftchat::client::RetryPolicy::default()
    }
}

/// The leader every node agrees on, asked over TLS with the binary protocol (the telnet
/// helpers of `Cluster` are plain, refused with `--client-tls required`).
fn tls_leader(cluster: &Cluster, tls: &raftchat::client::ClientTls) -> usize {
    use raftchat::client::{cluster_status_over, Role};
    wait_for("a leader, over TLS", DEADLINE, || {
        let statuses = cluster_status_over(&cluster.addrs, Some(tls));
        let mut leaders = statuses
            .iter()
            .map(|s| s.as_ref().ok().and_then(|s| s.leader));
        let first = leaders.next()??;
        let agreed = leaders.all(|l| l == Some(first));
        let leading = statuses.iter().flatten().any(|s| s.role == Role::Leader);
        (agreed && leading).then_some(first as usize)
    })
}

/// The binary protocol through the client library over TLS: posts with a session, reads the
/// log back on another node, asks a status.
fn binary_tls_posts_and_reads(cluster: &Cluster, tls: &raftchat::client::ClientTls) {
    use raftchat::client::{read_log_all_over, status_over, Session};
    let leader = tls_leader(cluster, tls);
    let mut session = Session::open_with(&cluster.addrs, leader, quick_policy(), Some(tls.clone()))
        .expect("a session over TLS");
    let first = session
        .post_blocking("general", "tls-bin", "binary over tls 1")
        .expect("post");
    let second = session
        .post_blocking("general", "tls-bin", "binary over tls 2")
        .expect("post");
    assert_eq!(second, first + 1);
    let other = (leader + 1) % 3;
    let log = wait_for("both posts on another node over TLS", DEADLINE, || {
        let log = read_log_all_over(cluster.addrs[other], Some(tls)).ok()?;
        (log.len() as u64 >= second).then_some(log)
    });
    assert_eq!(log[first as usize - 1].text, "binary over tls 1");
    assert_eq!(log[second as usize - 1].text, "binary over tls 2");
    let status = status_over(cluster.addrs[other], Some(tls)).expect("status over TLS");
    assert_eq!(status.node_id, other as u64);
}

#[test]
fn the_client_library_posts_and_reads_over_tls() {
    use raftchat::client::{status, ClientTls, Connection, Session};
    let cluster = Cluster::start_tls(3, &["--client-tls", "required"]);
    let tls = ClientTls::trusting(&ca(&cluster)).expect("CA file");
    binary_tls_posts_and_reads(&cluster, &tls);
    // Plain binary clients are refused while TLS is required.
    assert!(status(cluster.addrs[0]).is_err(), "a plain status answered");
    assert!(
        Session::open(&cluster.addrs, 0, quick_policy()).is_err(),
        "a plain session opened"
    );
    // A client trusting another CA does not get past the handshake, and says why.
    let dir = cluster.tls_dir.clone().unwrap();
    let foreign = ClientTls::trusting(&dir.join("other-ca.pem")).expect("other CA");
    let err = match Connection::open(cluster.addrs[0], Duration::from_secs(5), Some(&foreign)) {
        Ok(_) => panic!("a node signed by another CA was trusted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("TLS handshake with"), "{err}");
}

#[test]
fn the_client_library_presents_a_certificate_for_client_cert_auth() {
    use raftchat::client::{status_over, ClientTls};
    let cluster = Cluster::start_tls(3, &["--client-tls", "required", "--client-cert-auth"]);
    let dir = cluster.tls_dir.clone().unwrap();
    // The cluster CA's client certificate, written beside the node certificates.
    let files = TlsFiles {
        cert: dir.join("client-test.pem"),
        key: dir.join("client-test-key.pem"),
        ca: ca(&cluster),
    };
    let with_cert = ClientTls::with_identity(&files).expect("client identity");
    binary_tls_posts_and_reads(&cluster, &with_cert);
    // Without a certificate the node refuses the handshake.
    let without = ClientTls::trusting(&ca(&cluster)).unwrap();
    assert!(status_over(cluster.addrs[0], Some(&without)).is_err());
}
