//! In-process tests of the TLS building blocks over loopback std sockets: loading errors,
//! mutual authentication between node identities, refusals, garbage, plaintext both ways.

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::ServerName;

use super::config::*;
use super::gen::TestCerts;
use super::identity::{check_peer_id, node_id_of, IdentityError};
use super::stream::*;

const DEADLINE_MS: u64 = 10_000;

type Tls = TlsStream<TcpStream>;

fn certs() -> (tempfile::TempDir, TestCerts) {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::new(dir.path()).unwrap();
    (dir, certs)
}

fn socket_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dialled = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    dialled.set_nonblocking(true).unwrap();
    accepted.set_nonblocking(true).unwrap();
    (dialled, accepted)
}

fn pair(
    client: Arc<ClientConfig>,
    name: ServerName<'static>,
    server: Arc<ServerConfig>,
) -> (Tls, Tls) {
    let (dialled, accepted) = socket_pair();
    let c = TlsStream::client(client, name, dialled).unwrap();
    let s = TlsStream::server(server, accepted).unwrap();
    (c, s)
}

/// Which side failed a handshake, and how.
#[derive(Debug)]
enum Failed {
    Client(io::Error),
    Server(io::Error),
}

/// One step of one side: write what is queued, read what arrived (expecting no plaintext).
fn step(t: &mut Tls) -> io::Result<()> {
    t.flush_tls()?;
    let mut buf = [0u8; 1024];
    match t.read_plaintext(&mut buf)? {
        ReadOutcome::Closed => Err(io::ErrorKind::ConnectionAborted.into()),
        _ => Ok(()),
    }
}

/// Drives both sides until both finished the handshake, or one fails.
fn handshake(c: &mut Tls, s: &mut Tls) -> Result<(), Failed> {
    let deadline = Instant::now() + Duration::from_millis(DEADLINE_MS);
    while Instant::now() < deadline {
        step(c).map_err(Failed::Client)?;
        step(s).map_err(Failed::Server)?;
        let done = |t: &Tls| !t.is_handshaking() && !t.wants_write();
        if done(c) && done(s) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("handshake neither finished nor failed within {DEADLINE_MS} ms");
}

fn node(certs: &TestCerts, id: u64) -> TlsMaterial {
    certs.node(id).unwrap().load(CertRole::Node).unwrap()
}

/// node `dialler` dials node `acceptor`, both from the cluster CA.
fn peers(certs: &TestCerts, dialler: u64, acceptor: u64, expect: u64) -> (Tls, Tls) {
    let client = peer_client_config(&node(certs, dialler)).unwrap();
    let server = node_server_config(&node(certs, acceptor), ClientCertPolicy::Required).unwrap();
    pair(client, peer_server_name(expect), server)
}

#[test]
fn mutual_tls_between_nodes_and_ids_from_cn() {
    let (_dir, certs) = certs();
    let (mut c, mut s) = peers(&certs, 2, 1, 1);
    handshake(&mut c, &mut s).unwrap();
    check_peer_id(s.peer_certificates(), 2).unwrap();
    check_peer_id(c.peer_certificates(), 1).unwrap();
    let found = node_id_of(&s.peer_certificates().unwrap()[0]).unwrap();
    assert_eq!(found, 2);
    assert_eq!(
        check_peer_id(s.peer_certificates(), 3),
        Err(IdentityError::WrongNode {
            expected: 3,
            found: 2
        })
    );
}

fn assert_server_refused(result: Result<(), Failed>, needle: &str) {
    match result {
        Err(Failed::Server(e)) => {
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
            assert!(e.to_string().contains(needle), "{e}");
        }
        other => panic!("expected the server to refuse, got {other:?}"),
    }
}

#[test]
fn peer_config_refuses_a_client_without_certificate() {
    let (_dir, certs) = certs();
    let roots = load_ca(&certs.ca_path()).unwrap();
    let client = client_config(roots, None).unwrap();
    let server = node_server_config(&node(&certs, 1), ClientCertPolicy::Required).unwrap();
    let (mut c, mut s) = pair(client, ServerName::try_from("localhost").unwrap(), server);
    assert_server_refused(handshake(&mut c, &mut s), "no certificates");
}

#[test]
fn another_cas_certificate_is_refused_both_ways() {
    let (_dir, certs) = certs();
    let mut files = certs.other_ca_node(2).unwrap();
    let err = files.load(CertRole::Node).unwrap_err();
    assert!(matches!(err, TlsFileError::NotSignedByCa { .. }), "{err}");
    assert!(err.to_string().contains("other-node-2.pem"), "{err}");
    // An impostor with the other CA's certificate that trusts the cluster CA (so it
    // accepts node 1's certificate) dials node 1: node 1 refuses its certificate.
    let impostor_dialler = TlsMaterial {
        certs: load_certs(&files.cert).unwrap(),
        key: load_key(&files.key).unwrap(),
        roots: load_ca(&certs.ca_path()).unwrap(),
        files: files.clone(),
    };
    let client = peer_client_config(&impostor_dialler).unwrap();
    let server = node_server_config(&node(&certs, 1), ClientCertPolicy::Required).unwrap();
    let (mut c, mut s) = pair(client, peer_server_name(1), server);
    assert_server_refused(handshake(&mut c, &mut s), "UnknownIssuer");
    // The impostor trusting its own CA loads fine, but a real node refuses it as a listener.
    files.ca = certs.dir.join("other-ca.pem");
    let impostor = files.load(CertRole::Node).unwrap();
    // A real node dialling a listener that presents the other CA's certificate refuses it.
    let client = peer_client_config(&node(&certs, 2)).unwrap();
    let server = node_server_config(&impostor, ClientCertPolicy::Required).unwrap();
    let (mut c, mut s) = pair(client, peer_server_name(1), server);
    match handshake(&mut c, &mut s) {
        Err(Failed::Client(e)) => assert!(e.to_string().contains("UnknownIssuer"), "{e}"),
        other => panic!("expected the dialler to refuse, got {other:?}"),
    }
}

#[test]
fn dialler_refuses_a_peer_with_another_nodes_id() {
    let (_dir, certs) = certs();
    // Node 3 dials what it believes is node 1, but the listener holds node 2's certificate.
    let (mut c, mut s) = peers(&certs, 3, 2, 1);
    match handshake(&mut c, &mut s) {
        Err(Failed::Client(e)) => {
            let text = e.to_string();
            assert!(
                text.contains("WrongNode { expected: 1, found: 2 }"),
                "{text}"
            );
        }
        other => panic!("expected the dialler to refuse, got {other:?}"),
    }
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let (_dir, certs) = certs();
    let expired = certs.expired_node(1).unwrap();
    let err = expired.load(CertRole::Node).unwrap_err();
    assert!(matches!(err, TlsFileError::Expired { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("expired-node-1.pem: certificate expired (notAfter"),
        "{text}"
    );

    let good = certs.node(1).unwrap();
    let other = certs.node(2).unwrap();
    let mismatched = TlsFiles {
        key: other.key.clone(),
        ..good.clone()
    };
    let err = mismatched.load(CertRole::Node).unwrap_err();
    assert_eq!(
        err,
        TlsFileError::KeyMismatch {
            cert: good.cert.clone(),
            key: other.key
        }
    );

    let missing = TlsFiles {
        cert: certs.dir.join("nope.pem"),
        ..good.clone()
    };
    let err = missing.load(CertRole::Node).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: missing (no such file)", missing.cert.display())
    );

    let unreadable = TlsFiles {
        ca: certs.dir.clone(),
        ..good.clone()
    };
    let err = unreadable.load(CertRole::Node).unwrap_err();
    assert!(matches!(err, TlsFileError::Unreadable { .. }), "{err}");

    let not_pem = certs.dir.join("junk.pem");
    std::fs::write(&not_pem, b"this is not a certificate\n").unwrap();
    let err = TlsFiles {
        cert: not_pem.clone(),
        ..good.clone()
    }
    .load(CertRole::Node)
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}: no PEM certificate found", not_pem.display())),
        "{err}"
    );
    // A certificate where the key should be: no key in it.
    let err = TlsFiles {
        key: good.cert.clone(),
        ..good.clone()
    }
    .load(CertRole::Node)
    .unwrap_err();
    assert!(
        matches!(
            err,
            TlsFileError::NotPem {
                wanted: "private key",
                ..
            }
        ),
        "{err}"
    );
    // Broken base64 inside a PEM block.
    std::fs::write(
        &not_pem,
        b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = load_certs(&not_pem).unwrap_err();
    assert!(matches!(err, TlsFileError::NotPem { .. }), "{err}");
}

#[test]
fn client_certificates_as_a_role() {
    let (_dir, certs) = certs();
    let alice = certs.client("alice").unwrap();
    let material = alice.load(CertRole::Client).unwrap();
    // A client certificate cannot serve as a node's (no serverAuth usage).
    assert!(matches!(
        alice.load(CertRole::Node),
        Err(TlsFileError::NotSignedByCa { .. })
    ));
    let roots = load_ca(&certs.ca_path()).unwrap();
    let server = node_server_config(&node(&certs, 1), ClientCertPolicy::Required).unwrap();
    let client = client_config(roots.clone(), Some(&material)).unwrap();
    let (mut c, mut s) = pair(client, ServerName::try_from("localhost").unwrap(), server);
    handshake(&mut c, &mut s).unwrap();
    let cn = super::identity::common_name(&s.peer_certificates().unwrap()[0]).unwrap();
    assert_eq!(cn, "client-alice");
    // Optional: a client without a certificate is let in.
    let server = node_server_config(&node(&certs, 1), ClientCertPolicy::Optional).unwrap();
    let client = client_config(roots, None).unwrap();
    let (mut c, mut s) = pair(client, ServerName::try_from("127.0.0.1").unwrap(), server);
    handshake(&mut c, &mut s).unwrap();
    assert!(s.peer_certificates().is_none());
}

/// The records a fresh client session sends first: its ClientHello.
fn client_hello(certs: &TestCerts) -> Vec<u8> {
    let roots = load_ca(&certs.ca_path()).unwrap();
    let config = client_config(roots, None).unwrap();
    let mut conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

#[test]
fn sniffing_and_garbage_after_client_hello() {
    let (_dir, certs) = certs();
    let hello = client_hello(&certs);
    assert!(looks_like_client_hello(&hello));
    assert!(looks_like_client_hello(&hello[..1]));
    assert!(!looks_like_client_hello(&crate::wire::PEER_MAGIC));
    assert!(!looks_like_client_hello(b"/join lobby\r\n"));
    assert!(!looks_like_client_hello(&[]));
    assert!(!looks_like_client_hello(&[0x16, 0x01]));

    let server = node_server_config(&node(&certs, 1), ClientCertPolicy::None).unwrap();
    let (mut raw, accepted) = socket_pair();
    let mut s = TlsStream::server(server, accepted).unwrap();
    raw.set_nonblocking(false).unwrap();
    raw.write_all(&hello).unwrap();
    raw.write_all(&[0xff; 64]).unwrap();
    let deadline = Instant::now() + Duration::from_millis(DEADLINE_MS);
    let mut buf = [0u8; 256];
    let err = loop {
        assert!(Instant::now() < deadline, "garbage never refused");
        match s.read_plaintext(&mut buf) {
            Ok(ReadOutcome::WouldBlock) => std::thread::sleep(Duration::from_millis(1)),
            Ok(other) => panic!("garbage gave {other:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
}

/// Sends `data` from `from` to `to`, driving both, until `to` has read `queued` bytes written
/// before plus `data`; returns what `to` read.
fn transfer(from: &mut Tls, to: &mut Tls, queued: usize, data: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_millis(DEADLINE_MS);
    let (mut sent, mut got) = (0, Vec::new());
    let mut buf = vec![0u8; 16 * 1024];
    while got.len() < queued + data.len() {
        assert!(
            Instant::now() < deadline,
            "transfer stalled at {} bytes",
            got.len()
        );
        if sent < data.len() {
            match from.write_plaintext(&data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("write: {e}"),
            }
        }
        from.flush_tls().unwrap();
        match to.read_plaintext(&mut buf).unwrap() {
            ReadOutcome::Data(n) => got.extend_from_slice(&buf[..n]),
            ReadOutcome::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
            ReadOutcome::Closed => panic!("closed early"),
        }
        let _ = from.read_plaintext(&mut [0u8; 64]).unwrap();
    }
    got
}

#[test]
fn plaintext_flows_both_ways_and_close_is_seen() {
    let (_dir, certs) = certs();
    let (mut c, mut s) = peers(&certs, 2, 1, 1);
    // Written before the handshake: queued, then sent once it completes.
    let early = b"queued during the handshake".to_vec();
    assert_eq!(c.write_plaintext(&early).unwrap(), early.len());
    let big: Vec<u8> = (0..3 * PLAINTEXT_BUFFER_BYTES_MAX)
        .map(|i| (i % 251) as u8)
        .collect();
    let mut expected = early.clone();
    expected.extend_from_slice(&big);
    let to_server = transfer(&mut c, &mut s, early.len(), &big);
    assert_eq!(to_server.len(), expected.len());
    assert!(to_server == expected, "bytes differ");
    let reply = transfer(&mut s, &mut c, 0, b"and back");
    assert_eq!(reply, b"and back");
    c.close().unwrap();
    let deadline = Instant::now() + Duration::from_millis(DEADLINE_MS);
    loop {
        assert!(Instant::now() < deadline, "close_notify never seen");
        match s.read_plaintext(&mut [0u8; 64]).unwrap() {
            ReadOutcome::Closed => break,
            ReadOutcome::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
            ReadOutcome::Data(n) => panic!("{n} unexpected bytes"),
        }
    }
}

#[test]
fn write_plaintext_is_bounded() {
    let (_dir, certs) = certs();
    let (mut c, _s) = peers(&certs, 2, 1, 1);
    // Never driven: the handshake cannot finish, so plaintext piles up to the limit only.
    let chunk = vec![7u8; 64 * 1024];
    let mut queued = 0;
    loop {
        match c.write_plaintext(&chunk) {
            Ok(n) => queued += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        assert!(queued <= PLAINTEXT_BUFFER_BYTES_MAX, "queued {queued}");
    }
    assert!(
        queued >= PLAINTEXT_BUFFER_BYTES_MAX / 2,
        "queued only {queued}"
    );
}

#[test]
fn expired_certificate_is_refused_in_the_handshake_too() {
    let (_dir, certs) = certs();
    // Loading refuses it; a dialler that skipped loading's checks is refused by the peer.
    let files = certs.expired_node(2).unwrap();
    let stale = TlsMaterial {
        certs: rustls_pki_types::CertificateDer::pem_file_iter(&files.cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap(),
        key: load_key(&files.key).unwrap(),
        roots: load_ca(&certs.ca_path()).unwrap(),
        files,
    };
    let client = peer_client_config(&stale).unwrap();
    let server = node_server_config(&node(&certs, 1), ClientCertPolicy::Required).unwrap();
    let (mut c, mut s) = pair(client, peer_server_name(1), server);
    assert_server_refused(handshake(&mut c, &mut s), "certificate expired");
}

#[test]
fn dialling_a_peer_by_a_non_node_name_is_refused() {
    let (_dir, certs) = certs();
    let client = peer_client_config(&node(&certs, 2)).unwrap();
    let server = node_server_config(&node(&certs, 1), ClientCertPolicy::Required).unwrap();
    let (mut c, mut s) = pair(client, ServerName::try_from("localhost").unwrap(), server);
    match handshake(&mut c, &mut s) {
        Err(Failed::Client(e)) => assert!(e.to_string().contains("not node-<id>"), "{e}"),
        other => panic!("expected the dialler to refuse, got {other:?}"),
    }
}
