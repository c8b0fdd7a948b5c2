//! Shared harness for tests that run real `server` processes on loopback.
//!
//! Every node gets a free port and its own data dir under a temp dir; every child is killed
//! when the `Cluster` is dropped, even when the test panics (and then each node's log tail is
//! printed). Waits poll a condition with a generous deadline instead of sleeping a fixed time.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Generous: the test machine is small and noisy.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Timing flags for test clusters: fast elections, still far above loopback latency.
pub const FAST_TIMING: [&str; 4] = ["--election-timeout-ms", "400", "--heartbeat-ms", "40"];

/// Polls `check` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `count` distinct free loopback ports (held open together so they are distinct).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind :0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub addrs: Vec<SocketAddr>,
    children: Vec<Option<Child>>,
    extra_args: Vec<String>,
    /// The `--peers` list when it differs from `addrs` (peers dial these, e.g. a test proxy);
    /// then each node listens on its own `addrs[id]` via `--bind`.
    members: Option<Vec<SocketAddr>>,
    /// A `--peers` list per node, when each node names its peers differently (a proxy with a
    /// listener per directed link). The nodes must then share `--cluster-token`.
    peer_lists: Option<Vec<Vec<SocketAddr>>>,
    /// With TLS: the directory holding `ca.pem` and `node-<id>.pem`/`node-<id>-key.pem`.
    pub tls_dir: Option<PathBuf>,
    /// Nodes that joined the running cluster (`add_joiner`): started with `--join` once,
    /// later from their data dir alone.
    joined: Vec<bool>,
}

impl Cluster {
    /// Starts `count` nodes with `FAST_TIMING` (each timing flag `extra_args` names itself
    /// is left out) plus `extra_args`.
    pub fn start(count: usize, extra_args: &[&str]) -> Cluster {
        let ports = free_ports(count);
        let addrs = ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect();
        let timing = FAST_TIMING
            .chunks(2)
            .filter(|flag_value| !extra_args.contains(&flag_value[0]))
            .flatten();
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            addrs,
            children: (0..count).map(|_| None).collect(),
            extra_args: timing.chain(extra_args).map(|s| s.to_string()).collect(),
            members: None,
            peer_lists: None,
            tls_dir: None,
            joined: vec![false; count],
        };
        for id in 0..count {
            cluster.spawn(id);
        }
        cluster
    }

    /// Starts one node per entry of `members`, each told the SAME `--peers` list (so every node
    /// derives the same cluster id) but listening on its own free loopback port (`--bind`),
    /// which clients use (`addrs`). Peers dial `members[j]`: point those at a proxy that
    /// forwards to `addrs[j]`. Nodes are not spawned: call `spawn` for each once the proxy
    /// knows `addrs`.
    pub fn with_members(members: Vec<SocketAddr>, extra_args: &[&str]) -> Cluster {
        let count = members.len();
        let addrs = free_ports(count)
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect();
        Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            addrs,
            children: (0..count).map(|_| None).collect(),
            extra_args: FAST_TIMING
                .iter()
                .chain(extra_args)
                .map(|s| s.to_string())
                .collect(),
            members: Some(members),
            peer_lists: None,
            tls_dir: None,
            joined: vec![false; count],
        }
    }

    /// Like `start`, but every node runs with TLS: certificates from a fresh CA are written to
    /// `<dir>/certs` (see `tls_dir`: also a client certificate `client-test.pem`) and each node
    /// gets `--cert --key --ca` for its id.
    pub fn start_tls(count: usize, extra_args: &[&str]) -> Cluster {
        let mut cluster = Cluster::with_members(Vec::new(), extra_args);
        let ports = free_ports(count);
        cluster.addrs = ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect();
        cluster.members = None;
        cluster.children = (0..count).map(|_| None).collect();
        cluster.joined = vec![false; count];
        cluster.use_tls();
        for id in 0..count {
            cluster.spawn(id);
        }
        cluster
    }

    /// Nodes (re)started from now on run with TLS: certificates from a fresh CA are written
    /// to `<dir>/certs` (also a client certificate `client-test.pem`), see `tls_args`.
    pub fn use_tls(&mut self) {
        let dir = self.dir.path().join("certs");
        std::fs::create_dir_all(&dir).expect("certs dir");
        let certs = raftchat::tls::gen::TestCerts::new(&dir).expect("test CA");
        for id in 0..self.len() {
            certs.node(id as u64).expect("node certificate");
        }
        // `client-test.pem` and its key, for clients of a node with `--client-cert-auth`.
        certs.client("test").expect("client certificate");
        self.tls_dir = Some(dir);
    }

    /// Every node gets its own `--peers` list (`lists[id]`), and `--bind` its `addrs` entry.
    pub fn set_peer_lists(&mut self, lists: Vec<Vec<SocketAddr>>) {
        assert_eq!(lists.len(), self.len(), "one list per node");
        self.members = Some(lists[0].clone());
        self.peer_lists = Some(lists);
    }

    /// `--cert --key --ca` for node `id` when the cluster runs with TLS.
    pub fn tls_args(&self, id: usize) -> Vec<String> {
        let Some(dir) = &self.tls_dir else {
            return Vec::new();
        };
        let path = |name: String| dir.join(name).to_string_lossy().into_owned();
        vec![
            "--cert".into(),
            path(format!("node-{id}.pem")),
            "--key".into(),
            path(format!("node-{id}-key.pem")),
            "--ca".into(),
            path("ca.pem".into()),
        ]
    }

    /// From now on, nodes are (re)started with `--peers members` and `--bind` their own `addrs`
    /// entry (`None`: back to `--peers addrs`). A membership test restarts a node with a
    /// command line that disagrees with its data dir this way.
    pub fn set_members(&mut self, members: Option<Vec<SocketAddr>>) {
        self.members = members;
    }

    /// The process id of node `id`, if it runs.
    pub fn pid(&self, id: usize) -> Option<u32> {
        self.children[id].as_ref().map(|c| c.id())
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn data_dir(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    pub fn log_path(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }

    /// The `--peers` node `id` is started with.
    fn peers_arg_of(&self, id: usize) -> String {
        match &self.peer_lists {
            Some(lists) => lists[id]
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(","),
            None => self.peers_arg(),
        }
    }

    /// How many nodes bootstrapped the cluster (the rest joined it later).
    pub fn bootstrap_len(&self) -> usize {
        self.joined.iter().filter(|j| !**j).count()
    }

    pub fn peers_arg(&self) -> String {
        let bootstrap = &self.addrs[..self.bootstrap_len()];
        self.members
            .as_deref()
            .unwrap_or(bootstrap)
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A new node slot (a free loopback port; not started): the next id. Start it with
    /// `spawn_join`, after or before `add <id> <addr>` on the cluster.
    pub fn add_joiner(&mut self) -> usize {
        let id = self.addrs.len();
        let port = free_ports(1)[0];
        self.addrs.push(SocketAddr::from(([127, 0, 0, 1], port)));
        self.children.push(None);
        self.joined.push(true);
        id
    }

    /// Starts the empty node `id` with `server <id> --join <node via's address>`. It listens
    /// only once it has been added, so this does not wait for it.
    pub fn spawn_join(&mut self, id: usize, via: usize) {
        assert!(self.children[id].is_none(), "node {id} is already running");
        let log = self.log_file(id);
        let child = Command::new(env!("CARGO_BIN_EXE_server"))
            .arg(id.to_string())
            .args(["--join", &self.addrs[via].to_string()])
            .args(["--bind", &self.addrs[id].to_string()])
            .args(["--data-dir", self.data_dir(id).to_str().unwrap()])
            .args(&self.extra_args)
            .args(self.tls_args(id))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn server");
        self.children[id] = Some(child);
    }

    fn log_file(&self, id: usize) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("log file")
    }

    /// One telnet command on node `id` (a fresh connection), or `None` if it cannot be asked.
    pub fn try_command(&self, id: usize, line: &str) -> Option<Reply> {
        Client::try_connect(self.addrs[id])?.command(line).ok()
    }

    /// (Re)starts node `id` with its data dir; its output is appended to its log file.
    pub fn spawn(&mut self, id: usize) {
        if self.joined[id] {
            // A joined node restarts from its data dir alone.
            assert!(self.children[id].is_none(), "node {id} is already running");
            let log = self.log_file(id);
            let child = Command::new(env!("CARGO_BIN_EXE_server"))
                .arg(id.to_string())
                .args(["--data-dir", self.data_dir(id).to_str().unwrap()])
                .args(&self.extra_args)
                .args(self.tls_args(id))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn server");
            self.children[id] = Some(child);
            return wait_for(&format!("node {id} to listen"), DEADLINE, || {
                TcpStream::connect(self.addrs[id]).ok().map(|_| ())
            });
        }
        assert!(self.children[id].is_none(), "node {id} is already running");
        let child = self.server_command(id).spawn().expect("spawn server");
        self.children[id] = Some(child);
        wait_for(&format!("node {id} to listen"), DEADLINE, || {
            TcpStream::connect(self.addrs[id]).ok()
        });
    }

    /// Starts node `id` (not a joined one) expecting it to refuse to start: its exit status,
    /// or a panic if it still runs after `DEADLINE` (it is killed then).
    pub fn spawn_expecting_exit(&mut self, id: usize) -> ExitStatus {
        assert!(self.children[id].is_none(), "node {id} is already running");
        let mut child = self.server_command(id).spawn().expect("spawn server");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {id} still runs after {DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The command that starts node `id` (not a joined one), its output appended to its log.
    fn server_command(&self, id: usize) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_server"));
        command
            .args([
                id.to_string(),
                self.bootstrap_len().to_string(),
                self.addrs[id].port().to_string(),
            ])
            .args(["--peers", &self.peers_arg_of(id)])
            .args(match self.members {
                Some(_) => vec!["--bind".to_string(), self.addrs[id].to_string()],
                None => vec![],
            })
            .args(["--data-dir", self.data_dir(id).to_str().unwrap()])
            .args(&self.extra_args)
            .args(self.tls_args(id))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        command
    }

    /// `kill -9` node `id` and reap it.
    pub fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.children[id].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM node `id` and wait for it to exit.
    pub fn stop(&mut self, id: usize) -> ExitStatus {
        let mut child = self.children[id].take().expect("node is running");
        signal(&child, "TERM");
        let status = wait_for(&format!("node {id} to exit"), DEADLINE, || {
            child.try_wait().ok().flatten()
        });
        status
    }

    pub fn pause(&self, id: usize) {
        signal(self.children[id].as_ref().expect("running"), "STOP");
    }

    pub fn resume(&self, id: usize) {
        signal(self.children[id].as_ref().expect("running"), "CONT");
    }

    pub fn is_running(&mut self, id: usize) -> bool {
        match self.children[id].as_mut() {
            Some(child) => child.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    pub fn client(&self, id: usize) -> Client {
        Client::connect(self.addrs[id])
    }

    /// Waits until every running node in `among` agrees on one leader; returns (leader, term).
    pub fn wait_leader(&self, among: &[usize]) -> (usize, u64) {
        wait_for("a leader all nodes agree on", DEADLINE, || {
            self.try_agreed_leader(among)
        })
    }

    fn try_agreed_leader(&self, among: &[usize]) -> Option<(usize, u64)> {
        {
            let mut seen = None;
            for &id in among {
                let status = Client::try_connect(self.addrs[id])?.status().ok()?;
                let leader: usize = status.get("leader")?.parse().ok()?;
                let term: u64 = status.get("term")?.parse().ok()?;
                match seen {
                    None => seen = Some((leader, term)),
                    Some(s) if s == (leader, term) => {}
                    Some(_) => return None,
                }
            }
            seen
        }
    }

    /// Waits until the nodes in `among` agree on a leader other than `old`.
    pub fn wait_new_leader(&self, among: &[usize], old: usize) -> (usize, u64) {
        wait_for("a new leader", DEADLINE, || {
            let (leader, term) = self.try_agreed_leader(among)?;
            (leader != old).then_some((leader, term))
        })
    }

    /// Posts `text` through node `id`, retrying "not stored" errors until the deadline.
    pub fn post(&self, id: usize, text: &str) -> u64 {
        wait_for(
            &format!("msg {text} to be acknowledged by node {id}"),
            DEADLINE,
            || {
                let mut client = Client::try_connect(self.addrs[id])?;
                let reply = client.command(&format!("msg {text}")).ok()?;
                let position = reply.final_line.strip_prefix("ack ")?;
                Some(position.parse().expect("ack carries a position"))
            },
        )
    }

    /// The chat log as node `id` lists it, retrying errors until the deadline.
    pub fn chat_log(&self, id: usize) -> Vec<String> {
        wait_for(&format!("get chatLog on node {id}"), DEADLINE, || {
            let mut client = Client::try_connect(self.addrs[id])?;
            let reply = client.command("get chatLog").ok()?;
            let count: usize = reply.final_line.strip_prefix("end ")?.parse().ok()?;
            assert_eq!(count, reply.lines.len(), "end count matches the listing");
            Some(reply.lines)
        })
    }
}

fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            signal(child, "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for id in 0..self.len() {
                let log = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- node {id} log (last {} lines) ----", tail.len());
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// One command's answer: the listing lines and the final `ack`/`end`/`err` line.
#[derive(Debug)]
pub struct Reply {
    pub lines: Vec<String>,
    pub final_line: String,
}

/// A telnet-style client: sends lines, reads replies; pushed `msg …` lines are kept apart.
pub struct Client {
    reader: BufReader<TcpStream>,
    pub pushes: Vec<String>,
}

fn is_final(line: &str) -> bool {
    let word = line.split(' ').next().unwrap_or("");
    matches!(word, "ack" | "end" | "err")
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|| panic!("cannot connect to {addr}"))
    }

    pub fn try_connect(addr: SocketAddr) -> Option<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .ok()?;
        Some(Client {
            reader: BufReader::new(stream),
            pushes: Vec::new(),
        })
    }

    /// How long a read waits before failing (20 s after `try_connect`).
    pub fn set_read_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.reader.get_mut().set_read_timeout(Some(timeout))
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// Reads one line (without its newline).
    pub fn read_line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    /// Reads lines up to the next final line.
    pub fn read_reply(&mut self) -> std::io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?;
            if is_final(&line) {
                return Ok(Reply {
                    lines,
                    final_line: line,
                });
            }
            if line.starts_with("msg ") {
                self.pushes.push(line);
            } else if !line.starts_with("hello ") {
                lines.push(line);
            }
        }
    }

    pub fn command(&mut self, line: &str) -> std::io::Result<Reply> {
        self.send_raw(format!("{line}\n").as_bytes())?;
        self.read_reply()
    }

    /// `status` as a map of its `key value` lines.
    pub fn status(&mut self) -> std::io::Result<std::collections::HashMap<String, String>> {
        let reply = self.command("status")?;
        Ok(reply
            .lines
            .iter()
            .filter_map(|l| {
                l.split_once(' ')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect())
    }

    /// Waits for a pushed line (live delivery) containing `needle`.
    pub fn wait_push(&mut self, needle: &str) -> String {
        if let Some(p) = self.pushes.iter().find(|p| p.contains(needle)) {
            return p.clone();
        }
        loop {
            let line = self
                .read_line()
                .unwrap_or_else(|e| panic!("waiting for a push of '{needle}': {e}"));
            if line.starts_with("msg ") && line.contains(needle) {
                return line;
            }
        }
    }

    /// Reads whatever arrives within `wait`, for tests of bad input.
    pub fn drain(&mut self, wait: Duration) -> Vec<u8> {
        let stream = self.reader.get_mut();
        stream.set_read_timeout(Some(wait)).ok();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }
}

/// Node `id`'s `status` as a map, or `None` if it does not answer now.
pub fn status(cluster: &Cluster, id: usize) -> Option<std::collections::HashMap<String, String>> {
    Client::try_connect(cluster.addrs[id])?.status().ok()
}

/// A numeric `status` field; panics naming the field if it is missing.
pub fn field(status: &std::collections::HashMap<String, String>, key: &str) -> u64 {
    status
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("status has no numeric '{key}': {status:?}"))
}

/// Runs the load generator against `cluster` for exactly `count` 40-byte messages (16
/// connections, depth 16), killing it after 300 s; panics with its output on failure.
pub fn load_messages(cluster: &Cluster, count: u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--nodes", &cluster.peers_arg()])
        .args(["--connections", "16", "--pipeline", "16", "--size", "40"])
        .args(["--count", &count.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("loadgen did not finish {count} messages in 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "loadgen failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A client TLS configuration trusting the CA in `ca` (optionally presenting `identity`).
pub fn tls_client_config(
    ca: &std::path::Path,
    identity: Option<&raftchat::tls::TlsFiles>,
) -> std::sync::Arc<rustls::ClientConfig> {
    use raftchat::tls::config::{client_config, load_ca, CertRole};
    let roots = load_ca(ca).expect("CA file");
    let material = identity.map(|f| f.load(CertRole::Client).expect("client identity"));
    client_config(roots, material.as_ref()).expect("client config")
}

/// A telnet-style client over TLS (rustls, blocking): lines in, replies out.
pub struct TlsClient {
    reader: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// Connects and finishes the handshake (verifying the node as 127.0.0.1).
    pub fn try_connect(
        addr: SocketAddr,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> std::io::Result<TlsClient> {
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        let conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsClient {
            reader: BufReader::new(stream),
        })
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    pub fn read_line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    /// Sends `line` and reads up to the final line (listing lines returned, pushes skipped).
    pub fn command(&mut self, line: &str) -> std::io::Result<Reply> {
        self.send_raw(format!("{line}\n").as_bytes())?;
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?;
            if is_final(&line) {
                return Ok(Reply {
                    lines,
                    final_line: line,
                });
            }
            if !line.starts_with("msg ") && !line.starts_with("hello ") {
                lines.push(line);
            }
        }
    }
}

/// The cluster id nodes derive from their member list (as `server::config` does), so a test
/// impostor's handshake is otherwise valid.
pub fn cluster_id_of(members: &[SocketAddr]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let joined = members
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    for byte in joined.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A helper process (a load generator) that is killed when the guard goes, so a test that
/// fails while it runs leaves nothing behind.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
