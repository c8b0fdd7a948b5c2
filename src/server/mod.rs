//! The node process: one single-threaded mio event loop per node that owns every socket and
//! every timer. Layered so each part can be read, tested and replaced alone (the map is
//! `docs/ARCHITECTURE.md`):
//!
//! ```text
//!   node            the loop: poll, route events, timers, flush
//!    ├─ frontend/   telnet, binary, peer: bytes <-> requests and results
//!    └─ services    what every front-end may use: start_write, start_read
//!        ├─ requests    the request table: writes and reads in flight, deadlines, answers
//!        ├─ replica/    the replica driver: Raft core, WAL + fsync thread, snapshots, state
//!        │              machine; never touches a socket
//!        └─ transport/  poller, listener, connection buffers, links to peers
//! ```
//!
//! - [`config`]: the command line (`server <id> <count> <port> [options]`).
//! - `error`: why a node stopped.
//! - `identity`: the cluster id and member list, bootstrapped once and then read from the
//!   data dir (the command line's member list only bootstraps).
//! - `membership`: `members`, `add`, `promote`, `remove` for every front-end, and which peers
//!   may connect; `join`: `server <id> --join` waits until the cluster added this node.
//!
//! Dependencies run downward only: a front-end never imports the node, the replica never
//! imports a front-end or the transport. It never decides anything Raft decides.

pub mod accounts;
pub mod config;
mod disk_reads;
mod error;
mod frontend;
mod identity;
mod join;
pub mod limits;
pub mod logins;
mod membership;
mod node;
mod replica;
mod requests;
mod services;
mod transport;

pub use config::{parse_args, usage, Command, ServerConfig};

/// Node ids are below this (each outbound peer link has a poll token of its own; see
/// `transport`). `add` refuses larger ids.
pub const NODE_ID_MAX: u64 = 1024;
pub use error::ServerError;
pub use node::Node;

/// The whole `server` command: parse `args` (without the program name), start logging, run the
/// node. Returns the process exit status: 0 after a clean stop, 1 on a failure, 2 on bad
/// arguments or an unusable TLS file.
pub fn run_cli(args: &[String]) -> i32 {
    let cfg = match parse_args(args) {
        Ok(Command::Run(cfg)) => *cfg,
        Ok(Command::Help(text)) => {
            print!("{text}");
            return 0;
        }
        Err(e) => {
            eprintln!("server: {e}\n\n{}", usage());
            return 2;
        }
    };
    if let Err(e) = simple_logger::SimpleLogger::new()
        .with_level(cfg.log_level)
        .init()
    {
        eprintln!("server: cannot start logging: {e}");
    }
    match Node::start(cfg).and_then(|mut node| node.run()) {
        Ok(()) => 0,
        Err(ServerError::Tls(e)) => {
            // One line naming the file and what is wrong, like an argument error.
            eprintln!("server: {e}");
            2
        }
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}
