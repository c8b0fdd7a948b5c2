//! `cluster`: starts a local raftchat cluster in one command and streams its logs.
//!
//! `cargo run --release --bin cluster [-- --nodes 3 --base-port 20000 --data-dir data]`
//!
//! Each node is a child process (this binary re-executed in node mode, so nothing else needs
//! to be built first). Node output is prefixed with `[nN]`. A node that exits is reported, never
//! silently restarted. Ctrl-C (SIGINT) or SIGTERM stops every node cleanly.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODE_MODE: &str = "--run-node";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(NODE_MODE) {
        run_node(&args[1..]);
        return;
    }
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
    opts.optflag("h", "help", "print this help");
    let usage = opts.usage(
        "Usage: cluster [--nodes N] [--base-port PORT] [--data-dir DIR] [-- SERVER OPTIONS]\n\n\
         Anything after `--` is passed to every node (e.g. `-- --snapshot-entries 50000`).",
    );
    let fail = |msg: String| -> ! {
        eprintln!("cluster: {msg}\n\n{usage}");
        std::process::exit(2)
    };
    let matches = opts.parse(&args).unwrap_or_else(|e| fail(e.to_string()));
    if matches.opt_present("help") {
        print!("{usage}");
        return;
    }
    let passthrough = args
        .iter()
        .position(|a| a == "--")
        .map_or(0, |at| args.len() - at - 1);
    if matches.free.len() > passthrough {
        fail(format!("unexpected argument '{}'", matches.free[0]));
    }
    let node_args = matches.free.clone();
    let num = |name: &str, default: u64| -> u64 {
        matches.opt_str(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| fail(format!("--{name}: '{v}' is not a number")))
        })
    };
    let nodes = num("nodes", 3);
    let base_port = num("base-port", 20000);
    if nodes == 0 || nodes > 64 || base_port == 0 || base_port + nodes > 65536 {
        fail(format!(
            "--nodes {nodes} --base-port {base_port} is out of range"
        ));
    }
    let data_dir = matches
        .opt_str("data-dir")
        .unwrap_or_else(|| "data".to_string());
    let fsync = matches
        .opt_str("fsync")
        .unwrap_or_else(|| "always".to_string());
    let log_level = matches
        .opt_str("log-level")
        .unwrap_or_else(|| "info".to_string());

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            fail(format!("cannot install signal handler: {e}"));
        }
    }
    let exe = std::env::current_exe()
        .unwrap_or_else(|e| fail(format!("cannot find own executable: {e}")));
    let mut children: Vec<Option<Child>> = Vec::new();
    for id in 0..nodes {
        let port = base_port + id;
        let spawned = Command::new(&exe)
            .arg(NODE_MODE)
            .args([id.to_string(), nodes.to_string(), port.to_string()])
            .args([
                "--data-dir",
                &format!("{data_dir}/node-{id}"),
                "--fsync",
                &fsync,
                "--log-level",
                &log_level,
            ])
            .args(&node_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Ok(mut child) => {
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
                children.push(Some(child));
            }
            Err(e) => {
                eprintln!("cluster: cannot start node {id}: {e}");
                stop.store(true, Ordering::SeqCst);
                break;
            }
        }
    }
    if !stop.load(Ordering::SeqCst) {
        println!("raftchat: {nodes}-node cluster starting, data in {data_dir}/node-<id>");
        for id in 0..nodes {
            println!(
                "  node {id}: 127.0.0.1:{}    telnet 127.0.0.1 {}",
                base_port + id,
                base_port + id
            );
        }
        println!("Type `msg Hello, Raft!` and `get chatLog` in a telnet session. Ctrl-C stops every node.");
    }
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
    // Stop everyone: SIGTERM first (a clean stop), SIGKILL if a node hangs.
    for child in children.iter().flatten() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for (id, slot) in children.iter_mut().enumerate() {
        let Some(child) = slot else { continue };
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    println!("cluster: node {id} stopped ({status})");
                    failed |= !status.success();
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    eprintln!("cluster: node {id} did not stop in time; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    failed = true;
                    break;
                }
            }
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    std::process::exit(if failed { 1 } else { 0 });
}

/// Node mode: exactly what `server` does.
fn run_node(args: &[String]) {
    std::process::exit(raftchat::server::run_cli(args));
}
