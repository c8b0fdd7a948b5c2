//! `cluster`: starts a local raftchat cluster in one command and streams its logs.
//!
//! `cargo run --release --bin cluster [-- --nodes 3 --base-port 20000 --data-dir data --tls]`
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
    let usage = options().usage(
        "Usage: cluster [--nodes N] [--base-port PORT] [--data-dir DIR] [-- SERVER OPTIONS]\n\n\
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
