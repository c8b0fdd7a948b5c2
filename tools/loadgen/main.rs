//! `loadgen`: drives a raftchat cluster over the binary client protocol and reports committed
//! messages per second, latency percentiles, errors and the longest commit gap; `--verify`
//! then checks every acknowledged message against every node's chat log.
//!
//! ```text
//! loadgen --nodes 127.0.0.1:20000,127.0.0.1:20001,127.0.0.1:20002 --connections 16 --pipeline 64 --duration 10
//! loadgen 3 20000 --rate 50000 --duration 30 --verify --json
//! ```
//!
//! The connections run on a few shard threads (`--threads`, default one per core), each a mio
//! loop over its connections with a heap of wake-up times; every connection drives its own
//! `SessionCore` (the client library's session, without IO). Requests are pipelined, many frames go out in one write and answers come in large reads, so the
//! generator costs far less CPU per message than the cluster it measures. Each connection
//! opens its own session; a failure (leader change, lost connection, timeout) is retried by
//! the session with the SAME (session, seq), so the state machine applies it once.
//!
//! Closed loop (default): each connection keeps `--pipeline` requests in flight and latency
//! runs from the send. Open loop (`--rate`): sends are scheduled at fixed intervals and
//! latency runs from the SCHEDULED time, so a stalled cluster shows up in the percentiles
//! instead of silently slowing the generator down (no coordinated omission). Scheduling
//! wakeups come from epoll, whose timeout resolution is 1 ms; lateness counts as latency.
//!
//! Message texts are `lg<run>-<conn>-<n>-` padded with `x` to `--size`: unique per run and
//! parseable back, which is what `--verify` relies on.
//!
//! `--tls --ca FILE` runs every connection over TLS (the session's handshake is made by the
//! blocking client library, then the session moves onto the shard's mio poll as a
//! `raftchat::tls::TlsStream`); `--handshakes N` measures new connections per second instead
//! ([`handshakes`]).
//!
//! The modules: [`args`] (the command line), [`text`] (message texts), [`worker`] (one
//! connection and its session, and the shards that poll them), `run` (starting the shards, collecting their
//! results; [`results`] what each reports), [`verify`] (checking the logs), [`report`] and [`json`] (the two outputs),
//! [`cost`] (entries per sync and CPU per message, from [`counters`] over telnet `status` and
//! [`procstat`] over /proc). Only /proc is read; nothing is written there.
//! This binary never runs inside a node and never writes anywhere but stdout and stderr.

mod args;
mod cost;
mod counters;
mod handshakes;
mod json;
mod procstat;
mod report;
mod results;
mod run;
#[cfg(test)]
mod tests;
mod text;
mod verify;
mod worker;

use args::{parse_args, usage, Parsed};
use run::{client_tls, run};

/// `--handshakes N`: prints the rate; exit 0, or 3 if any connection failed.
fn run_handshakes_and_exit(config: &args::Config, count: u64) -> ! {
    let outcome = client_tls(config)
        .and_then(|tls| handshakes::run_handshakes(config.nodes[0], count, config.threads, tls));
    match outcome {
        Ok(report) => {
            if config.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
            std::process::exit(if report.failed == 0 { 0 } else { 3 });
        }
        Err(message) => {
            eprintln!("loadgen: {message}");
            std::process::exit(3);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse_args(&args) {
        Ok(Parsed::Run(config)) => config,
        Ok(Parsed::Help(usage)) => {
            print!("{usage}");
            return;
        }
        Err(message) => {
            eprintln!("loadgen: {message}\n\n{}", usage());
            std::process::exit(2);
        }
    };
    if let Some(count) = config.handshakes {
        run_handshakes_and_exit(&config, count);
    }
    match run(&config) {
        Ok(report) => {
            if config.json {
                println!("{}", report.json(&config));
            } else {
                print!("{}", report.text(&config));
            }
            // 1: the cluster lost, duplicated or reordered acknowledged messages; 3: the run
            // itself failed (a connection gave up after its retry budget).
            let verified_ok = report.verify.as_ref().is_none_or(|v| v.ok());
            std::process::exit(if !verified_ok {
                1
            } else if !report.fatal.is_empty() {
                3
            } else {
                0
            });
        }
        Err(message) => {
            eprintln!("loadgen: {message}");
            std::process::exit(3);
        }
    }
}
