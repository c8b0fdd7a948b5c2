//! `server <id> <count> <port> [options]`: runs one raftchat node until SIGINT/SIGTERM.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(raftchat::server::run_cli(&args));
}
