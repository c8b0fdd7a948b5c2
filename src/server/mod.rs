//! The node process: one single-threaded mio event loop that owns the listener, every client
//! and peer connection, and every timer, and drives the Raft core, the write-ahead log and the
//! chat state machine.
//!
//! - [`config`]: the command line (`server <id> <count> <port> [options]`).
//! - `node`: the event loop and the Ready driver (the order of side effects the core demands).
//! - `peers`: outbound links to the other members, with reconnect backoff.
//! - `requests`: client writes and reads in flight, whatever protocol they came on.
//! - `binary`: binary client sessions (the protocol of `client::proto`): pipelined, exactly-once.
//! - `telnet`: telnet sessions: commands in, `ack`/`end`/`err` out, live delivery.
//! - `snapshot`: taking snapshots on a helper thread, cleaning up after compaction on another,
//!   and shipping snapshots to followers in chunks.
//! - `syncer`: the fsync helper thread (the other long-lived thread besides the loop).
//! - `conn`: bounded, non-blocking read and write buffers.
//!
//! It never decides anything Raft decides.

mod binary;
pub mod config;
mod conn;
mod node;
mod peers;
mod requests;
mod snapshot;
mod syncer;
mod telnet;

pub use config::{parse_args, usage, Command, ServerConfig};
pub use node::{Node, ServerError};

/// The whole `server` command: parse `args` (without the program name), start logging, run the
/// node. Returns the process exit status: 0 after a clean stop, 1 on a failure, 2 on bad arguments.
pub fn run_cli(args: &[String]) -> i32 {
    let cfg = match parse_args(args) {
        Ok(Command::Run(cfg)) => cfg,
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
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}
