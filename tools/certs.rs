//! `certs`: writes a CA and per-node and client certificates for a local TLS cluster.
//!
//! `cargo run --release --bin certs -- --dir certs --nodes 3 [--clients alice,bob]
//! [--hosts 10.0.0.5,chat.example] [--days 365]`
//!
//! Writes `ca.pem`, `ca-key.pem`, `node-<id>.pem` and `node-<id>-key.pem` (CN `node-<id>`, SANs
//! 127.0.0.1, localhost and `--hosts`), `client-<name>.pem` and `client-<name>-key.pem`. Keys
//! are written with mode 0600. Creates the directory if needed; overwrites files of those
//! names; never touches anything else. Exit status 2 on bad arguments, 1 if writing fails.

use std::path::PathBuf;
use std::process::exit;

use raftchat::tls::gen::{write_cluster, ClusterSpec};

const DAYS_DEFAULT: u32 = 365;

fn usage(opts: &getopts::Options) -> String {
    opts.usage("Usage: certs --dir DIR --nodes N [--clients NAMES] [--hosts HOSTS] [--days D]")
}

fn list(value: Option<String>) -> Vec<String> {
    value
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn number<T: std::str::FromStr>(m: &getopts::Matches, name: &str, default: Option<T>) -> T {
    match (m.opt_str(name), default) {
        (Some(v), _) => v.parse().unwrap_or_else(|_| {
            eprintln!("certs: --{name} {v:?} is not a number");
            exit(2)
        }),
        (None, Some(d)) => d,
        (None, None) => {
            eprintln!("certs: --{name} is required");
            exit(2)
        }
    }
}

fn parse_args() -> (PathBuf, ClusterSpec) {
    let mut opts = getopts::Options::new();
    opts.optopt(
        "",
        "dir",
        "directory to write into (created if missing)",
        "DIR",
    );
    opts.optopt("", "nodes", "node certificates for ids 0..N-1", "N");
    opts.optopt(
        "",
        "clients",
        "client certificates, comma-separated names",
        "NAMES",
    );
    opts.optopt(
        "",
        "hosts",
        "extra SANs for node certificates, comma-separated",
        "HOSTS",
    );
    opts.optopt("", "days", "validity in days (default 365)", "D");
    opts.optflag("h", "help", "print this help");
    let m = opts.parse(std::env::args().skip(1)).unwrap_or_else(|e| {
        eprintln!("certs: {e}\n{}", usage(&opts));
        exit(2)
    });
    if m.opt_present("help") {
        println!("{}", usage(&opts));
        exit(0);
    }
    let Some(dir) = m.opt_str("dir") else {
        eprintln!("certs: --dir is required\n{}", usage(&opts));
        exit(2)
    };
    let spec = ClusterSpec {
        nodes: number(&m, "nodes", None),
        clients: list(m.opt_str("clients")),
        extra_hosts: list(m.opt_str("hosts")),
        days: number(&m, "days", Some(DAYS_DEFAULT)),
    };
    if spec.days == 0 {
        eprintln!("certs: --days must be at least 1");
        exit(2);
    }
    (PathBuf::from(dir), spec)
}

fn main() {
    let (dir, spec) = parse_args();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("certs: {}: cannot create: {e}", dir.display());
        exit(1);
    }
    match write_cluster(&dir, &spec) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
        }
        Err(e) => {
            eprintln!("certs: {e}");
            exit(1);
        }
    }
}
