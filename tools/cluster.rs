//! `cluster`: starts a local raftchat cluster in one command and streams its logs.
//!
//! `cargo run --release --bin cluster [-- --nodes 3 --base-port 20000 --data-dir data --tls]`
//!
//! Membership of a running local cluster (issue 16), from another terminal:
//!
//! - `cluster members [--base-port P]`: the configuration, as the first node that answers sees
//!   it.
//! - `cluster add <id> [--base-port P] [--data-dir DIR] [-- SERVER OPTIONS]`: starts node
//!   `<id>` on `127.0.0.1:<P + id>` with `--join` (an empty data dir `DIR/node-<id>`), asks the
//!   leader to `add` it as a learner, then to `promote` it once caught up; the node keeps
//!   running in this terminal (Ctrl-C stops it).
//! - `cluster remove <id> [--base-port P]`: asks the leader to `remove` node `<id>`. The node
//!   itself keeps running until stopped, refused by the others.
//!
//! These talk to the nodes over the binary client protocol (plain, not `--tls`).
//!
//! With `--tls` it writes a CA and node certificates (`raftchat::tls::gen`) to
//! `<data-dir>/certs` once and starts every node with `--cert --key --ca`.
//!
//! Each node is a child process (this binary re-executed in node mode, so nothing else needs
//! to be built first). Node output is prefixed with `[nN]`. A node that exits is reported, never
//! silently restarted. Ctrl-C (SIGINT) or SIGTERM stops every node cleanly.
//! It never touches the nodes' data itself and never talks to them over the network.

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODE_MODE: &str = "--run-node";

/// What the command line asks for.
struct ClusterArgs {
    nodes: u64,
    base_port: u64,
    data_dir: String,
    fsync: String,
    log_level: String,
    /// Everything after `--`, passed to every node.
    node_args: Vec<String>,
    /// `--tls`: where the CA and node certificates are (written there if `ca.pem` is absent).
    tls_dir: Option<PathBuf>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(NODE_MODE) {
        run_node(&args[1..]);
        return;
    }
    if let Some(verb @ ("add" | "remove" | "members")) = args.first().map(String::as_str) {
        std::process::exit(membership::run(verb, &args[1..]));
    }
    let usage = options().usage(
        "Usage: cluster [--nodes N] [--base-port PORT] [--data-dir DIR] [-- SERVER OPTIONS]\n\
         \x20      cluster members|add <id>|remove <id> [--base-port PORT] [--data-dir DIR]\n\n\
         Anything after `--` is passed to every node (e.g. `-- --snapshot-entries 50000`).",
    );
    let fail = |msg: String| -> ! {
        eprintln!("cluster: {msg}\n\n{usage}");
        std::process::exit(2)
    };
    let cluster = match parse_args(&args) {
        Ok(Some(cluster)) => cluster,
        Ok(None) => {
            print!("{usage}");
            return;
        }
        Err(message) => fail(message),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            fail(format!("cannot install signal handler: {e}"));
        }
    }
    if let Some(dir) = &cluster.tls_dir {
        if let Err(e) = ensure_certs(dir, cluster.nodes) {
            fail(format!(
                "cannot write certificates to {}: {e}",
                dir.display()
            ));
        }
    }
    let exe = std::env::current_exe()
        .unwrap_or_else(|e| fail(format!("cannot find own executable: {e}")));
    let mut children = spawn_nodes(&exe, &cluster, &stop);
    if !stop.load(Ordering::SeqCst) {
        print_banner(&cluster);
    }
    let mut failed = watch_until_stopped(&mut children, &stop);
    failed |= stop_all(&mut children);
    std::thread::sleep(Duration::from_millis(50));
    std::process::exit(if failed { 1 } else { 0 });
}

fn options() -> getopts::Options {
    let mut opts = getopts::Options::new();
    opts.optopt("", "nodes", "number of nodes (default 3)", "N");
    opts.optopt(
        "",
        "base-port",
        "node j listens on base-port + j (default 20000)",
        "PORT",
    );
    opts.optopt(
        "",
        "data-dir",
        "parent of each node's data dir node-<id> (default data)",
        "DIR",
    );
    opts.optopt(
        "",
        "fsync",
        "always (default) or never (UNSAFE, experiments only)",
        "POLICY",
    );
    opts.optopt("", "log-level", "node log level (default info)", "LEVEL");
    opts.optflag(
        "",
        "tls",
        "encrypt and mutually authenticate: writes a CA and node certificates to <data-dir>/certs \
         (kept if ca.pem exists) and starts every node with them",
    );
    opts.optflag("h", "help", "print this help");
    opts
}

/// The command line; `Ok(None)` for `--help`.
fn parse_args(args: &[String]) -> Result<Option<ClusterArgs>, String> {
    let matches = options().parse(args).map_err(|e| e.to_string())?;
    if matches.opt_present("help") {
        return Ok(None);
    }
    let passthrough = args
        .iter()
        .position(|a| a == "--")
        .map_or(0, |at| args.len() - at - 1);
    if matches.free.len() > passthrough {
        return Err(format!("unexpected argument '{}'", matches.free[0]));
    }
    let num = |name: &str, default: u64| -> Result<u64, String> {
        matches.opt_str(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| format!("--{name}: '{v}' is not a number"))
        })
    };
    let nodes = num("nodes", 3)?;
    let base_port = num("base-port", 20000)?;
    if nodes == 0 || nodes > 64 || base_port == 0 || base_port + nodes > 65536 {
        return Err(format!(
            "--nodes {nodes} --base-port {base_port} is out of range"
        ));
    }
    let text = |name: &str, default: &str| matches.opt_str(name).unwrap_or(default.to_string());
    let data_dir = text("data-dir", "data");
    let tls_dir = matches
        .opt_present("tls")
        .then(|| Path::new(&data_dir).join("certs"));
    Ok(Some(ClusterArgs {
        nodes,
        base_port,
        data_dir,
        fsync: text("fsync", "always"),
        log_level: text("log-level", "info"),
        node_args: matches.free.clone(),
        tls_dir,
    }))
}

/// Starts every node, streaming its output; on a failure to start, sets `stop` and starts no
/// more.
fn spawn_nodes(exe: &Path, cluster: &ClusterArgs, stop: &AtomicBool) -> Vec<Option<Child>> {
    let mut children = Vec::new();
    for id in 0..cluster.nodes {
        match spawn_node(exe, cluster, id) {
            Ok(mut child) => {
                stream_output(&mut child, id);
                children.push(Some(child));
            }
            Err(e) => {
                eprintln!("cluster: cannot start node {id}: {e}");
                stop.store(true, Ordering::SeqCst);
                break;
            }
        }
    }
    children
}

/// Node `id`: this binary in node mode, its output piped.
fn spawn_node(exe: &Path, cluster: &ClusterArgs, id: u64) -> io::Result<Child> {
    let port = cluster.base_port + id;
    Command::new(exe)
        .arg(NODE_MODE)
        .args([id.to_string(), cluster.nodes.to_string(), port.to_string()])
        .args([
            "--data-dir",
            &format!("{}/node-{id}", cluster.data_dir),
            "--fsync",
            &cluster.fsync,
            "--log-level",
            &cluster.log_level,
        ])
        .args(tls_args(cluster, id))
        .args(&cluster.node_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// Writes a CA, node certificates and a `client-you` certificate into `dir` unless it
/// already holds a CA (so a restarted cluster keeps its certificates).
fn ensure_certs(dir: &Path, nodes: u64) -> Result<(), String> {
    use raftchat::tls::gen::{write_cluster, ClusterSpec};
    let node_missing = (0..nodes).any(|id| !dir.join(format!("node-{id}.pem")).exists());
    if dir.join("ca.pem").exists() && !node_missing {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let spec = ClusterSpec {
        nodes,
        clients: vec!["you".to_string()],
        extra_hosts: Vec::new(),
        days: 365,
    };
    write_cluster(dir, &spec)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `--cert --key --ca` for node `id` with `--tls`.
fn tls_args(cluster: &ClusterArgs, id: u64) -> Vec<String> {
    let Some(dir) = &cluster.tls_dir else {
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

/// Copies the child's stdout and stderr to our stdout, each line prefixed with `[nN]`.
fn stream_output(child: &mut Child, id: u64) {
    let prefix = format!("[n{id}] ");
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let prefix = prefix.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{prefix}{line}");
            }
        });
    }
}

fn print_banner(cluster: &ClusterArgs) {
    let (nodes, base_port) = (cluster.nodes, cluster.base_port);
    println!(
        "raftchat: {nodes}-node cluster starting, data in {}/node-<id>",
        cluster.data_dir
    );
    for id in 0..nodes {
        println!(
            "  node {id}: 127.0.0.1:{}    telnet 127.0.0.1 {}",
            base_port + id,
            base_port + id
        );
    }
    if let Some(dir) = &cluster.tls_dir {
        let ca = dir.join("ca.pem");
        println!(
            "TLS on: peers use mutual TLS; clients connect with\n  \
             openssl s_client -quiet -CAfile {ca} -connect 127.0.0.1:{base_port}\n  \
             ncat --ssl --ssl-trustfile {ca} 127.0.0.1 {base_port}\n\
             (plain telnet still works unless you pass `-- --client-tls required`)",
            ca = ca.display()
        );
    }
    println!(
        "Type `msg Hello, Raft!` and `get chatLog` in a telnet session. Ctrl-C stops every node."
    );
}

/// Waits for a signal or for every node to exit, reporting each exit; true if one failed.
fn watch_until_stopped(children: &mut [Option<Child>], stop: &AtomicBool) -> bool {
    let mut failed = false;
    while !stop.load(Ordering::SeqCst) && children.iter().any(Option::is_some) {
        for (id, slot) in children.iter_mut().enumerate() {
            if let Some(child) = slot {
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!("cluster: node {id} exited ({status}); it is NOT restarted. The others keep running.");
                    failed |= !status.success();
                    *slot = None;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    failed
}

/// Stops everyone: SIGTERM first (a clean stop), SIGKILL if a node hangs for 5 s. True if a
/// node failed or had to be killed.
fn stop_all(children: &mut [Option<Child>]) -> bool {
    for child in children.iter().flatten() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut failed = false;
    for (id, slot) in children.iter_mut().enumerate() {
        let Some(child) = slot else { continue };
        failed |= wait_or_kill(child, id, deadline);
    }
    failed
}

/// Waits for node `id` to exit until `deadline`, then kills it; true if it failed or was killed.
fn wait_or_kill(child: &mut Child, id: usize, deadline: Instant) -> bool {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                println!("cluster: node {id} stopped ({status})");
                return !status.success();
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                eprintln!("cluster: node {id} did not stop in time; killing it");
                let _ = child.kill();
                let _ = child.wait();
                return true;
            }
        }
    }
}

/// Node mode: exactly what `server` does.
fn run_node(args: &[String]) {
    std::process::exit(raftchat::server::run_cli(args));
}

/// `cluster members`, `cluster add <id>`, `cluster remove <id>` (see the module docs).
mod membership {
    use std::net::SocketAddr;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use raftchat::client::{self, MemberChange, MemberError};

    /// Ports probed above the base port for a live member.
    const PROBE_PORTS: u64 = 64;
    /// How long a change may wait for a leader, or a learner to catch up.
    const PATIENCE: Duration = Duration::from_secs(60);

    struct Args {
        id: Option<u64>,
        base_port: u64,
        data_dir: String,
        node_args: Vec<String>,
    }

    fn parse(verb: &str, args: &[String]) -> Result<Args, String> {
        let mut opts = getopts::Options::new();
        opts.optopt(
            "",
            "base-port",
            "node j listens on base-port + j (default 20000)",
            "PORT",
        );
        opts.optopt(
            "",
            "data-dir",
            "parent of node data dirs (default data)",
            "DIR",
        );
        let m = opts.parse(args).map_err(|e| e.to_string())?;
        let base_port = match m.opt_str("base-port") {
            Some(v) => v.parse().map_err(|_| format!("--base-port: '{v}'"))?,
            None => 20000,
        };
        let (id, node_args) = match (verb, m.free.split_first()) {
            ("members", None) => (None, Vec::new()),
            ("add" | "remove", Some((id, rest))) => {
                let id = id.parse().map_err(|_| format!("'{id}' is not a node id"))?;
                if verb == "remove" && !rest.is_empty() {
                    return Err("remove takes only <id>".into());
                }
                (Some(id), rest.to_vec())
            }
            _ => {
                return Err(format!(
                    "usage: cluster {verb}{}",
                    if verb == "members" { "" } else { " <id>" }
                ))
            }
        };
        let top = base_port + id.unwrap_or(0);
        if base_port == 0 || top > 65535 {
            return Err("--base-port and id out of range".into());
        }
        Ok(Args {
            id,
            base_port,
            data_dir: m.opt_str("data-dir").unwrap_or_else(|| "data".into()),
            node_args,
        })
    }

    fn addr(port: u64) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port as u16))
    }

    /// The leader's view, or else the first local node that answers `Members` (a removed
    /// node that was not told still lists the configuration it last knew).
    fn live_member(
        base_port: u64,
        skip: Option<u64>,
    ) -> Option<(SocketAddr, raftchat::proto::MemberList)> {
        let (at, list) = (0..PROBE_PORTS)
            .filter(|j| Some(*j) != skip && base_port + j <= 65535)
            .map(|j| addr(base_port + j))
            .find_map(|a| client::members(a, None).ok().map(|l| (a, l)))?;
        let leader = list
            .leader
            .and_then(|l| list.members.iter().find(|m| m.id == l));
        let leader_addr: Option<SocketAddr> = leader.and_then(|m| m.addr.parse().ok());
        match leader_addr.and_then(|a| client::members(a, None).ok().map(|l| (a, l))) {
            Some(found) => Some(found),
            None => Some((at, list)),
        }
    }

    pub fn run(verb: &str, args: &[String]) -> i32 {
        let args = match parse(verb, args) {
            Ok(args) => args,
            Err(e) => {
                eprintln!("cluster: {e}");
                return 2;
            }
        };
        let Some((at, list)) = live_member(args.base_port, args.id) else {
            eprintln!("cluster: no node answers on 127.0.0.1:{}..", args.base_port);
            return 1;
        };
        match (verb, args.id) {
            ("members", _) => {
                for m in &list.members {
                    let role = if m.voter { "voter" } else { "learner" };
                    let leader = if list.leader == Some(m.id) {
                        " leader"
                    } else {
                        ""
                    };
                    println!("member {} {} {role}{leader}", m.id, m.addr);
                }
                0
            }
            ("remove", Some(id)) => report(client::change_members(
                at,
                &MemberChange::Remove(id),
                None,
                PATIENCE,
            )),
            ("add", Some(id)) => add(&args, id, at),
            _ => 2,
        }
    }

    fn report(result: Result<String, MemberError>) -> i32 {
        match result {
            Ok(words) => {
                println!("cluster: {words}");
                0
            }
            Err(e) => {
                eprintln!("cluster: {e}");
                1
            }
        }
    }

    /// Starts the joining node, adds it, promotes it once caught up, then waits for it.
    fn add(args: &Args, id: u64, at: SocketAddr) -> i32 {
        let own = addr(args.base_port + id);
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                eprintln!("cluster: cannot find own executable: {e}");
                return 1;
            }
        };
        let child = Command::new(exe)
            .arg(super::NODE_MODE)
            .arg(id.to_string())
            .args(["--join", &at.to_string(), "--bind", &own.to_string()])
            .args(["--data-dir", &format!("{}/node-{id}", args.data_dir)])
            .args(&args.node_args)
            .stdin(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                eprintln!("cluster: cannot start node {id}: {e}");
                return 1;
            }
        };
        // SIGINT or SIGTERM stops the node cleanly (SIGTERM to it), then this process.
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
        }
        let add = MemberChange::Add {
            id,
            addr: own.to_string(),
        };
        let mut status = report(client::change_members(at, &add, None, PATIENCE));
        if status == 0 {
            status = promote(at, id);
        }
        if status == 0 {
            println!("cluster: node {id} runs here at {own}; Ctrl-C stops it");
        }
        loop {
            match child.try_wait() {
                Ok(Some(exit)) => return if exit.success() { status } else { 1 },
                Ok(None) if stop.load(Ordering::SeqCst) => {
                    let _ = Command::new("kill")
                        .args(["-TERM", &child.id().to_string()])
                        .status();
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    return status;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                Err(_) => return 1,
            }
        }
    }

    /// Asks for the promotion until the learner has caught up (or `PATIENCE` passed).
    fn promote(at: SocketAddr, id: u64) -> i32 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match client::change_members(at, &MemberChange::Promote(id), None, PATIENCE) {
                Ok(words) => return report(Ok(words)),
                Err(e) if Instant::now() < deadline && e.to_string().contains("not caught up") => {
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return report(Err(e)),
            }
        }
    }
}
