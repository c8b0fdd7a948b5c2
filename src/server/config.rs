//! The server's command line: `server <id> <count> <port> [options]`, parsed with getopts.
//!
//! Owns turning arguments into a validated [`ServerConfig`]; never opens a socket or a file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use super::limits::{self, LimitConfig};
use crate::storage::FsyncPolicy;

/// Everything a node needs to start, after validation.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub id: u64,
    /// The cluster's bootstrap list: every first member's address, in id order. From the
    /// command line (`<count> <port>` or `--peers`) until the data dir holds an identity, then
    /// the stored one (`server::identity`); a joining node learns it from the cluster. Empty
    /// for `server <id> --join` and `server <id>` (a restart from the data dir) until then.
    /// The members *now* are replicated state (`chat::members`), not this.
    pub members: Vec<SocketAddr>,
    /// `--join <host:port>`: an empty node asks this member for the cluster id and member list
    /// and waits until it has been added (`add <id> <host:port>` on a member).
    pub join: Option<SocketAddr>,
    /// Where this node listens; by default its own member address.
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
    pub election_timeout_ms: u64,
    pub heartbeat_ms: u64,
    /// How long a client waits for a commit or a read before `err timeout`.
    pub request_timeout_ms: u64,
    pub log_level: log::LevelFilter,
    /// TEST ONLY: serve reads from this node's state without ReadIndex (stale reads), so tests
    /// can show their linearizability checker catches it. Never set in a real deployment.
    pub testing_stale_reads: bool,
    /// TEST ONLY: as leader, acknowledge a posted message as soon as it is appended to the local
    /// log, before it is durable or replicated anywhere, so the fault suite can show its checker
    /// catches a server that acknowledges what it may lose. Never set in a real deployment.
    pub testing_early_ack: bool,
    /// TEST ONLY: `--testing-disk-read-gate <path>`: the reader thread (`disk_reads`) waits
    /// until this file exists before each read, so a test can hold reads of old history on the
    /// disk and show the loop answers others meanwhile.
    pub testing_disk_read_gate: Option<std::path::PathBuf>,
    /// `--require-login`: telnet clients must `register` or `login` before posting.
    pub require_login: bool,
    /// Take a snapshot of the chat state once this many entries were applied since the last
    /// one (and the log since is as large as it; see `server::node`). 0: never snapshot, the
    /// log grows without bound.
    pub snapshot_entries: u64,
    /// After a snapshot, keep this many entries before it in the log, so a follower slightly
    /// behind catches up from the log instead of receiving the whole snapshot.
    pub log_keep_entries: u64,
    /// Keep only the newest N messages of each room, dropping older ones on every node alike,
    /// so a long-lived chat's memory and snapshots stay bounded (0: keep everything). Like the
    /// session limits, every node must use the same value, for the life of its data.
    pub retain_messages: u64,
    /// Memory for the chat history (`--memory-budget-mib`): the message store's cache and the
    /// chat log's newest chunks share it; older messages are read from the store on disk.
    pub memory_budget_mib: u64,
    /// Write-ahead log segment size in bytes: the log is dropped a whole segment at a time
    /// after a snapshot, so this bounds what a compacted log still holds.
    pub wal_segment_bytes: u64,
    /// The listen backlog: connections the kernel queues before `accept` (capped by
    /// `net.core.somaxconn`).
    pub listen_backlog: u32,
    /// The cluster id this command line would bootstrap: the hash of `--cluster-token`, or
    /// else derived from the member list, so every node of a new cluster agrees on it without
    /// talking. Only a bootstrap uses it: once the data dir holds an identity
    /// (`server::identity`), the stored id and member list replace these. A peer of another
    /// cluster (or another cluster's data dir) is refused.
    pub cluster_id: u64,
    /// `--bind` was given: the listen address stays even when the stored member list gives this
    /// node another address.
    pub bind_explicit: bool,
    /// Connection counts, timeouts and message rates (`--max-conns` ...; see `server::limits`).
    /// Boxed so `Command` stays small.
    pub limits: Box<LimitConfig>,
    /// `--cert --key --ca`, `--client-tls`, `--client-cert-auth`: TLS for peers and clients.
    pub tls: Option<Box<crate::tls::NodeTlsOptions>>,
}

/// What the command line asked for: run a node, or print help.
#[derive(Debug)]
pub enum Command {
    /// Boxed: the configuration is large and `Help` is small.
    Run(Box<ServerConfig>),
    Help(String),
}

const NODES_MAX: u64 = 1024;
/// `--snapshot-entries` default: at ~100 bytes a message, a snapshot per ~10 MB of log.
pub const DEFAULT_SNAPSHOT_ENTRIES: u64 = 100_000;
/// `--log-keep-entries` default.
pub const DEFAULT_LOG_KEEP_ENTRIES: u64 = 10_000;
/// `--wal-segment-bytes` default: 64 MiB.
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;
pub const DEFAULT_WAL_SEGMENT_BYTES: u64 = 64 << 20;

/// The option table, one group at a time.
fn options() -> getopts::Options {
    let mut opts = getopts::Options::new();
    network_options(&mut opts);
    timing_options(&mut opts);
    storage_options(&mut opts);
    limit_options(&mut opts);
    testing_options(&mut opts);
    tls_options(&mut opts);
    opts.optflag(
        "",
        "require-login",
        "posting needs a login (register <nick> <password> or login); default: anyone may post",
    );
    opts.optflag("h", "help", "print this help");
    opts
}

/// Addresses, the data directory and durability.
fn network_options(opts: &mut getopts::Options) {
    opts.optopt(
        "",
        "peers",
        "every member's address in id order (overrides the derived ports)",
        "HOST:PORT,...",
    );
    opts.optopt(
        "",
        "join",
        "start as a new, empty member of a running cluster: ask this member for the cluster's \
         id and members, and wait until an operator ran `add <id> <host:port>` (usage: server \
         <id> --join HOST:PORT)",
        "HOST:PORT",
    );
    opts.optopt(
        "",
        "cluster-token",
        "bootstrap a new cluster under the id this token hashes to (default: derived from the \
         member list); ignored once the data dir holds an identity",
        "TOKEN",
    );
    opts.optopt(
        "",
        "bind",
        "address to listen on (default: this node's member address)",
        "ADDR",
    );
    opts.optopt(
        "",
        "listen-backlog",
        "connections the kernel queues for accept (default 4096; capped by net.core.somaxconn)",
        "N",
    );
    opts.optopt(
        "",
        "data-dir",
        "where the write-ahead log lives (default data/node-<id>)",
        "DIR",
    );
    opts.optopt(
        "",
        "fsync",
        "always (default: acknowledge only what is on disk on a majority) or never (UNSAFE: \
         acknowledged messages can be lost on a crash; for experiments only)",
        "always|never",
    );
}

/// Timing and logging.
fn timing_options(opts: &mut getopts::Options) {
    opts.optopt(
        "",
        "election-timeout-ms",
        "minimum election timeout (default 1000)",
        "MS",
    );
    opts.optopt(
        "",
        "heartbeat-ms",
        "leader heartbeat interval and tick length (default 100)",
        "MS",
    );
    opts.optopt(
        "",
        "request-timeout-ms",
        "client request deadline (default 5000)",
        "MS",
    );
    opts.optopt(
        "",
        "log-level",
        "error, warn, info (default), debug or trace",
        "LEVEL",
    );
}

fn storage_options(opts: &mut getopts::Options) {
    opts.optopt(
        "",
        "snapshot-entries",
        "snapshot the chat state at most every N applied entries (and once the log since the \
         last is as large as it) and drop the log before it (default 100000; 0 = never)",
        "N",
    );
    opts.optopt(
        "",
        "log-keep-entries",
        "entries kept in the log before the latest snapshot, for followers slightly behind \
         (default 10000)",
        "N",
    );
    opts.optopt(
        "",
        "retain-messages",
        "keep only the newest N messages of each room; older ones are dropped on every node \
         alike (default 0 = keep all; must be the same on every node)",
        "N",
    );
    opts.optopt(
        "",
        "memory-budget-mib",
        "memory for the chat history in MiB: the newest messages stay in memory, older ones \
         are read from the message store on disk (default 256, at least 16; not used with \
         --retain-messages, which bounds memory itself)",
        "MIB",
    );
    opts.optopt(
        "",
        "wal-segment-bytes",
        "write-ahead log segment size; the log is dropped a segment at a time after a snapshot \
         (default 67108864 = 64 MiB)",
        "BYTES",
    );
}

/// Limits that protect everyone (`server::limits`): each has a default; 0 turns it off.
fn limit_options(opts: &mut getopts::Options) {
    let limits: [(&str, &str, &str); 8] = [
        (
            "max-conns",
            "client connections this node serves in total; more are refused with one `err` \
             line (default 10000; 0 = no limit; peers never count)",
            "N",
        ),
        (
            "max-conns-per-ip",
            "client connections from one source address (default 4096, high for loopback \
             benchmarks: lower it on a public node; 0 = no limit)",
            "N",
        ),
        (
            "idle-timeout-secs",
            "close a client that sent nothing for this long (default 3600; 0 = never)",
            "SECS",
        ),
        (
            "partial-line-timeout-secs",
            "close a connection holding an unfinished line, binary frame or HTTP head this \
             long (slow-loris; default 30; 0 = never)",
            "SECS",
        ),
        (
            "msg-rate",
            "telnet and WebSocket: messages per second per connection; over it `err rate \
             limited: not stored, try again in <ms>` (default 50; 0 = unlimited)",
            "N",
        ),
        (
            "msg-burst",
            "telnet and WebSocket: messages a connection may post at once (default 100)",
            "N",
        ),
        (
            "binary-msg-rate",
            "binary clients: messages per second per connection (default 0 = unlimited: \
             programs such as loadgen; set it when untrusted programs connect)",
            "N",
        ),
        (
            "binary-msg-burst",
            "binary clients: messages a connection may post at once (default 1000)",
            "N",
        ),
    ];
    for (name, help, hint) in limits {
        opts.optopt("", name, help, hint);
    }
}

/// The limit flags, each with its default.
fn parse_limits(matches: &getopts::Matches) -> Result<LimitConfig, String> {
    let burst = |name: &str, default: u64| match num_opt(matches, name, default)? {
        0 => Err(format!("--{name} must be at least 1")),
        n => Ok(n),
    };
    Ok(LimitConfig {
        max_conns: num_opt(matches, "max-conns", limits::DEFAULT_MAX_CONNS)?,
        max_conns_per_ip: num_opt(
            matches,
            "max-conns-per-ip",
            limits::DEFAULT_MAX_CONNS_PER_IP,
        )?,
        idle_timeout: limits::secs(num_opt(
            matches,
            "idle-timeout-secs",
            limits::DEFAULT_IDLE_TIMEOUT_SECS,
        )?),
        partial_timeout: limits::secs(num_opt(
            matches,
            "partial-line-timeout-secs",
            limits::DEFAULT_PARTIAL_TIMEOUT_SECS,
        )?),
        msg_rate: num_opt(matches, "msg-rate", limits::DEFAULT_MSG_RATE)?,
        msg_burst: burst("msg-burst", limits::DEFAULT_MSG_BURST)?,
        binary_msg_rate: num_opt(matches, "binary-msg-rate", limits::DEFAULT_BINARY_MSG_RATE)?,
        binary_msg_burst: burst("binary-msg-burst", limits::DEFAULT_BINARY_MSG_BURST)?,
    })
}

fn testing_options(opts: &mut getopts::Options) {
    opts.optflag(
        "",
        "testing-stale-reads",
        "TEST ONLY, UNSAFE: serve reads locally without ReadIndex (they may be stale)",
    );
    opts.optflag(
        "",
        "testing-early-ack",
        "TEST ONLY, UNSAFE: acknowledge messages before they are durable or committed",
    );
    opts.optopt(
        "",
        "testing-disk-read-gate",
        "TEST ONLY: reads of old history wait until this file exists",
        "PATH",
    );
}

/// The usage text shown by `--help` and after an argument error.
pub fn usage() -> String {
    let brief = "Usage: server <id> <count> <port> [options]   (bootstrap or restart)\n\
        \x20      server <id> --join <host:port> [options]  (a new member of a running cluster)\n\
        \x20      server <id> [options]                      (restart from the data dir)\n\n\
        Starts node <id> of a <count>-node raftchat cluster. Node j listens on 127.0.0.1:<port - id + j>,\n\
        so `server 0 3 20000`, `server 1 3 20001`, `server 2 3 20002` form one cluster.\n\
        Talk to any node with `telnet 127.0.0.1 <port>` and type `help`.";
    options().usage(brief)
}

fn parse_num(what: &str, text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .map_err(|_| format!("{what} must be a whole number, got '{text}'"))
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{addr}': {e}"))?
        .next()
        .ok_or_else(|| format!("'{addr}' resolves to no address"))
}

/// FNV-1a over the member list: the same arguments on every node give the same cluster id.
fn cluster_id_of(members: &[SocketAddr]) -> u64 {
    fnv1a(
        members
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
            .as_bytes(),
    )
}

/// The cluster id `--cluster-token` names: a hash of the token, kept apart from member-list
/// ids by a prefix no address starts with.
fn cluster_id_of_token(token: &str) -> u64 {
    fnv1a(format!("token:{token}").as_bytes())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Parses `args` (without the program name).
pub fn parse_args(args: &[String]) -> Result<Command, String> {
    let matches = options().parse(args).map_err(|e| e.to_string())?;
    if matches.opt_present("help") {
        return Ok(Command::Help(usage()));
    }
    let (id, sized) = parse_positional(&matches.free)?;
    let join = match matches.opt_str("join") {
        Some(_) if sized.is_some() => {
            return Err("--join takes no <count> <port>: server <id> --join <host:port>".into())
        }
        Some(addr) => Some(resolve(&addr).map_err(|e| format!("--join: {e}"))?),
        None => None,
    };
    let members = match sized {
        Some((count, port)) => parse_members(&matches, id, count, port)?,
        None if matches.opt_present("peers") => {
            return Err(
                "--peers needs <count> <port>: server <id> <count> <port> --peers ..".into(),
            )
        }
        None => Vec::new(),
    };
    // Without a member list the address comes from the data dir or the cluster, unless --bind.
    let own = members
        .get(id as usize)
        .copied()
        .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
    let listen = parse_listen(&matches, own)?;
    let fsync = parse_fsync(&matches)?;
    let (election_timeout_ms, heartbeat_ms, request_timeout_ms) = parse_timing(&matches)?;
    let storage = parse_storage(&matches)?;
    let log_level = match matches.opt_str("log-level") {
        Some(text) => text
            .parse::<log::LevelFilter>()
            .map_err(|_| format!("--log-level: unknown level '{text}'"))?,
        None => log::LevelFilter::Info,
    };
    let data_dir = matches
        .opt_str("data-dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("data/node-{id}")));
    let cluster_id = match matches.opt_str("cluster-token") {
        Some(token) if token.is_empty() => return Err("--cluster-token must not be empty".into()),
        Some(token) => cluster_id_of_token(&token),
        // No member list: the cluster id is read from the data dir or learned by --join.
        None if members.is_empty() => 0,
        None => cluster_id_of(&members),
    };
    if id >= crate::server::NODE_ID_MAX {
        return Err(format!(
            "id must be below {}, got {id}",
            crate::server::NODE_ID_MAX
        ));
    }
    Ok(Command::Run(Box::new(ServerConfig {
        id,
        members,
        join,
        listen,
        data_dir,
        fsync,
        election_timeout_ms,
        heartbeat_ms,
        request_timeout_ms,
        log_level,
        testing_stale_reads: matches.opt_present("testing-stale-reads"),
        testing_early_ack: matches.opt_present("testing-early-ack"),
        testing_disk_read_gate: matches
            .opt_str("testing-disk-read-gate")
            .map(std::path::PathBuf::from),
        require_login: matches.opt_present("require-login"),
        snapshot_entries: storage.snapshot_entries,
        log_keep_entries: storage.log_keep_entries,
        retain_messages: storage.retain_messages,
        memory_budget_mib: storage.memory_budget_mib,
        wal_segment_bytes: storage.wal_segment_bytes,
        listen_backlog: parse_backlog(&matches)?,
        cluster_id,
        bind_explicit: matches.opt_present("bind"),
        limits: Box::new(parse_limits(&matches)?),
        tls: parse_tls(&matches, id)?,
    })))
}

// ---- TLS flags (issue 17) ----

/// `--cert --key --ca`, `--client-tls`, `--client-cert-auth`, in the style of etcd.
fn tls_options(opts: &mut getopts::Options) {
    opts.optopt(
        "",
        "cert",
        "this node's certificate (PEM, CN node-<id>, signed by --ca): TLS on; peers must use it",
        "FILE",
    );
    opts.optopt("", "key", "the private key of --cert (PEM)", "FILE");
    opts.optopt("", "ca", "the cluster CA certificate (PEM)", "FILE");
    opts.optopt(
        "",
        "client-tls",
        "clients over TLS: off, optional (default with --cert) or required",
        "MODE",
    );
    opts.optflag(
        "",
        "client-cert-auth",
        "clients must present a certificate signed by --ca",
    );
}

fn parse_tls(
    matches: &getopts::Matches,
    id: u64,
) -> Result<Option<Box<crate::tls::NodeTlsOptions>>, String> {
    use crate::tls::{ClientTlsMode, NodeTlsOptions, TlsFiles};
    let files = [
        matches.opt_str("cert"),
        matches.opt_str("key"),
        matches.opt_str("ca"),
    ];
    let client_tls = matches
        .opt_str("client-tls")
        .map(|m| m.parse::<ClientTlsMode>())
        .transpose()?;
    let client_cert_auth = matches.opt_present("client-cert-auth");
    match files {
        [Some(cert), Some(key), Some(ca)] => {
            let client_tls = client_tls.unwrap_or(ClientTlsMode::Optional);
            if client_cert_auth && client_tls == ClientTlsMode::Off {
                return Err("--client-cert-auth needs --client-tls optional or required".into());
            }
            Ok(Some(Box::new(NodeTlsOptions {
                files: TlsFiles {
                    cert: PathBuf::from(cert),
                    key: PathBuf::from(key),
                    ca: PathBuf::from(ca),
                },
                own_id: id,
                client_tls,
                client_cert_auth,
            })))
        }
        [None, None, None] => {
            if client_tls.is_some_and(|m| m != ClientTlsMode::Off) || client_cert_auth {
                return Err(
                    "--client-tls and --client-cert-auth need --cert, --key and --ca".into(),
                );
            }
            Ok(None)
        }
        _ => Err("TLS needs all three of --cert, --key and --ca".into()),
    }
}

/// `<id> <count> <port>` (checked against each other), or `<id>` alone (a joining node, or a
/// restart from the data dir): the id, and the count and port if given.
fn parse_positional(free: &[String]) -> Result<(u64, Option<(u64, u64)>), String> {
    let [id, count, port] = match free {
        [a, b, c] => [a, b, c],
        [id] => return Ok((parse_num("id", id)?, None)),
        free => {
            return Err(format!(
                "expected <id> <count> <port> (or <id> alone with --join or a data dir), got {} \
                 argument(s)",
                free.len()
            ))
        }
    };
    let id = parse_num("id", id)?;
    let count = parse_num("count", count)?;
    let port = parse_num("port", port)?;
    if count == 0 || count > NODES_MAX {
        return Err(format!(
            "count must be between 1 and {NODES_MAX}, got {count}"
        ));
    }
    if id >= count {
        return Err(format!("id must be less than count ({count}), got {id}"));
    }
    Ok((id, Some((count, port))))
}

/// Every member's address: `--peers`, or `count` loopback ports around `port`.
fn parse_members(
    matches: &getopts::Matches,
    id: u64,
    count: u64,
    port: u64,
) -> Result<Vec<SocketAddr>, String> {
    if let Some(list) = matches.opt_str("peers") {
        let members = list
            .split(',')
            .map(|a| resolve(a.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if members.len() as u64 != count {
            return Err(format!(
                "--peers lists {} addresses but count is {count}",
                members.len()
            ));
        }
        return Ok(members);
    }
    let base = port
        .checked_sub(id)
        .filter(|_| port <= 65535)
        .ok_or_else(|| {
            format!(
                "port must be between id and 65535 (node j listens on port - id + j), got {port}"
            )
        })?;
    if base + count - 1 > 65535 {
        return Err(format!(
            "ports {base}..{} do not fit below 65536",
            base + count - 1
        ));
    }
    Ok((0..count)
        .map(|j| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), (base + j) as u16))
        .collect())
}

/// `--bind`: an address, or an IP on this node's own port; by default the member address.
fn parse_listen(matches: &getopts::Matches, own: SocketAddr) -> Result<SocketAddr, String> {
    let Some(text) = matches.opt_str("bind") else {
        return Ok(own);
    };
    match text.parse::<SocketAddr>() {
        Ok(addr) => Ok(addr),
        Err(_) => Ok(SocketAddr::new(
            text.parse::<IpAddr>()
                .map_err(|_| format!("--bind: '{text}' is not an address"))?,
            own.port(),
        )),
    }
}

fn parse_backlog(matches: &getopts::Matches) -> Result<u32, String> {
    let backlog = num_opt(matches, "listen-backlog", DEFAULT_LISTEN_BACKLOG.into())?;
    u32::try_from(backlog)
        .ok()
        .filter(|b| (1..=i32::MAX as u32).contains(b))
        .ok_or_else(|| format!("--listen-backlog must be 1..={}, got {backlog}", i32::MAX))
}

fn parse_fsync(matches: &getopts::Matches) -> Result<FsyncPolicy, String> {
    match matches.opt_str("fsync").as_deref() {
        None | Some("always") => Ok(FsyncPolicy::Always),
        Some("never") => Ok(FsyncPolicy::Never),
        Some(other) => Err(format!(
            "--fsync must be 'always' or 'never', got '{other}'"
        )),
    }
}

/// The value of `--name`, or `default` when absent.
fn num_opt(matches: &getopts::Matches, name: &str, default: u64) -> Result<u64, String> {
    match matches.opt_str(name) {
        Some(text) => parse_num(&format!("--{name}"), &text),
        None => Ok(default),
    }
}

/// `(election_timeout_ms, heartbeat_ms, request_timeout_ms)`, checked against each other.
fn parse_timing(matches: &getopts::Matches) -> Result<(u64, u64, u64), String> {
    let election_timeout_ms = num_opt(matches, "election-timeout-ms", 1000)?;
    let heartbeat_ms = num_opt(matches, "heartbeat-ms", 100)?;
    let request_timeout_ms = num_opt(matches, "request-timeout-ms", 5000)?;
    if heartbeat_ms == 0 || election_timeout_ms < 2 * heartbeat_ms {
        return Err(format!(
            "--election-timeout-ms ({election_timeout_ms}) must be at least twice --heartbeat-ms ({heartbeat_ms}), which must be > 0"
        ));
    }
    if request_timeout_ms == 0 {
        return Err("--request-timeout-ms must be > 0".to_string());
    }
    Ok((election_timeout_ms, heartbeat_ms, request_timeout_ms))
}

/// The snapshot, log and retention options.
struct StorageOptions {
    snapshot_entries: u64,
    log_keep_entries: u64,
    retain_messages: u64,
    memory_budget_mib: u64,
    wal_segment_bytes: u64,
}

fn parse_storage(matches: &getopts::Matches) -> Result<StorageOptions, String> {
    let storage = StorageOptions {
        snapshot_entries: num_opt(matches, "snapshot-entries", DEFAULT_SNAPSHOT_ENTRIES)?,
        log_keep_entries: num_opt(matches, "log-keep-entries", DEFAULT_LOG_KEEP_ENTRIES)?,
        retain_messages: num_opt(matches, "retain-messages", 0)?,
        memory_budget_mib: num_opt(matches, "memory-budget-mib", 256)?,
        wal_segment_bytes: num_opt(matches, "wal-segment-bytes", DEFAULT_WAL_SEGMENT_BYTES)?,
    };
    if storage.memory_budget_mib < 16 {
        return Err(format!(
            "--memory-budget-mib must be at least 16, got {}",
            storage.memory_budget_mib
        ));
    }
    if storage.wal_segment_bytes < 4096 {
        return Err(format!(
            "--wal-segment-bytes must be at least 4096, got {}",
            storage.wal_segment_bytes
        ));
    }
    Ok(storage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    fn run(text: &str) -> ServerConfig {
        match parse_args(&args(text)) {
            Ok(Command::Run(cfg)) => *cfg,
            other => panic!("expected a config for '{text}', got {other:?}"),
        }
    }

    #[test]
    fn seed_command_line_derives_member_ports() {
        let cfg = run("1 3 20001");
        let ports: Vec<u16> = cfg.members.iter().map(|a| a.port()).collect();
        assert_eq!(ports, vec![20000, 20001, 20002]);
        assert_eq!(cfg.listen.port(), 20001);
        assert_eq!(cfg.data_dir, PathBuf::from("data/node-1"));
        assert_eq!(cfg.fsync, FsyncPolicy::Always);
        assert_eq!(cfg.snapshot_entries, DEFAULT_SNAPSHOT_ENTRIES);
        assert_eq!(cfg.log_keep_entries, DEFAULT_LOG_KEEP_ENTRIES);
        let cfg = run("1 3 20001 --snapshot-entries 0 --log-keep-entries 5");
        assert_eq!((cfg.snapshot_entries, cfg.log_keep_entries), (0, 5));
    }

    #[test]
    fn the_listen_backlog_defaults_to_4096_and_refuses_zero() {
        assert_eq!(run("0 3 20000").listen_backlog, 4096);
        assert_eq!(run("0 3 20000 --listen-backlog 128").listen_backlog, 128);
        let args: Vec<String> = "0 3 20000 --listen-backlog 0"
            .split(' ')
            .map(String::from)
            .collect();
        let Err(err) = parse_args(&args) else {
            panic!("--listen-backlog 0 was accepted");
        };
        assert!(err.contains("--listen-backlog"), "{err}");
    }

    #[test]
    fn retention_is_off_by_default() {
        let cfg = run("0 3 20000");
        assert_eq!(cfg.retain_messages, 0);
        assert_eq!(cfg.wal_segment_bytes, 64 << 20);
        let cfg = run("0 3 20000 --retain-messages 1000 --wal-segment-bytes 1048576");
        assert_eq!(
            (cfg.retain_messages, cfg.wal_segment_bytes),
            (1000, 1 << 20)
        );
        for bad in [
            "0 3 20000 --retain-messages -1",
            "0 3 20000 --retain-messages lots",
            "0 3 20000 --wal-segment-bytes 100",
        ] {
            let err = parse_args(&args(bad)).expect_err(bad);
            assert!(!err.contains('\n'), "{bad}: {err}");
        }
    }

    #[test]
    fn all_nodes_of_one_cluster_agree_on_its_id() {
        let ids: Vec<u64> = ["0 3 20000", "1 3 20001", "2 3 20002"]
            .iter()
            .map(|a| run(a).cluster_id)
            .collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(ids[0], run("0 3 21000").cluster_id);
    }

    #[test]
    fn a_cluster_token_names_the_cluster_whatever_the_addresses() {
        let a = run("0 3 20000 --cluster-token chat-prod").cluster_id;
        assert_eq!(a, run("2 3 21002 --cluster-token chat-prod").cluster_id);
        assert_ne!(a, run("0 3 20000 --cluster-token chat-test").cluster_id);
        assert_ne!(a, run("0 3 20000").cluster_id);
        assert!(parse_args(&args("0 3 20000 --cluster-token")).is_err());
        assert!(!run("0 3 20000").bind_explicit);
        assert!(run("0 3 20000 --bind 127.0.0.1").bind_explicit);
    }

    #[test]
    fn tls_flags_come_as_a_set() {
        assert!(run("0 3 20000").tls.is_none());
        let cfg = run("1 3 20000 --cert c.pem --key k.pem --ca ca.pem --client-tls required");
        let tls = cfg.tls.expect("TLS options");
        assert_eq!(tls.own_id, 1);
        assert_eq!(tls.files.key, PathBuf::from("k.pem"));
        assert_eq!(tls.client_tls, crate::tls::ClientTlsMode::Required);
        let default = run("1 3 20000 --cert c.pem --key k.pem --ca ca.pem").tls;
        assert_eq!(
            default.map(|t| t.client_tls),
            Some(crate::tls::ClientTlsMode::Optional)
        );
        for bad in [
            "0 3 20000 --cert c.pem --key k.pem",
            "0 3 20000 --client-tls required",
            "0 3 20000 --cert c --key k --ca a --client-tls maybe",
        ] {
            let args: Vec<String> = bad.split_whitespace().map(String::from).collect();
            assert!(parse_args(&args).is_err(), "{bad}");
        }
    }

    #[test]
    fn peers_override_derived_ports() {
        let cfg = run("2 3 9 --peers 127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002 --fsync never");
        assert_eq!(cfg.listen.port(), 7002);
        assert_eq!(cfg.fsync, FsyncPolicy::Never);
    }

    #[test]
    fn bad_arguments_are_one_line_errors() {
        for bad in [
            "",
            "0 3",
            "3 3 20000",
            "x 3 20000",
            "0 0 20000",
            "0 3 20000 --fsync sometimes",
            "0 3 20000 --heartbeat-ms 600 --election-timeout-ms 1000",
            "0 2 20000 --peers 127.0.0.1:1",
            "0 3 65535",
            "0 3 20000 --bogus",
            "0 3 20000 --snapshot-entries many",
        ] {
            let err = parse_args(&args(bad)).expect_err(bad);
            assert!(!err.contains('\n'), "{bad}: {err}");
        }
    }

    #[test]
    fn every_limit_has_a_default_and_a_flag_and_zero_turns_timeouts_off() {
        assert_eq!(*run("0 3 20000").limits, LimitConfig::default());
        let cfg = run(
            "0 3 20000 --max-conns 5 --max-conns-per-ip 2 --idle-timeout-secs 0 \
             --partial-line-timeout-secs 4 --msg-rate 0 --msg-burst 7 --binary-msg-rate 9 \
             --binary-msg-burst 11",
        );
        let want = LimitConfig {
            max_conns: 5,
            max_conns_per_ip: 2,
            idle_timeout: None,
            partial_timeout: Some(std::time::Duration::from_secs(4)),
            msg_rate: 0,
            msg_burst: 7,
            binary_msg_rate: 9,
            binary_msg_burst: 11,
        };
        assert_eq!(*cfg.limits, want);
        for bad in ["0 3 20000 --msg-burst 0", "0 3 20000 --max-conns lots"] {
            let err = parse_args(&args(bad)).expect_err(bad);
            assert!(!err.contains('\n'), "{bad}: {err}");
        }
        assert!(usage().contains("--partial-line-timeout-secs"));
    }

    #[test]
    fn a_joining_node_needs_only_its_id_and_a_member_address() {
        let cfg = run("3 --join 127.0.0.1:20000 --data-dir d3");
        assert_eq!(cfg.join, Some("127.0.0.1:20000".parse().unwrap()));
        assert!(cfg.members.is_empty());
        assert_eq!(cfg.data_dir, PathBuf::from("d3"));
        let restart = run("3 --data-dir d3");
        assert_eq!((restart.join, restart.members.len()), (None, 0));
        let bound = run("3 --join 127.0.0.1:20000 --bind 127.0.0.1:20003");
        assert_eq!(bound.listen.port(), 20003);
        for bad in [
            "3 3 20003 --join 127.0.0.1:20000",
            "3 --join nowhere",
            "3 --peers 127.0.0.1:1",
            "5000 --join 127.0.0.1:20000",
            "3 4",
        ] {
            let err = parse_args(&args(bad)).expect_err(bad);
            assert!(!err.contains('\n'), "{bad}: {err}");
        }
    }

    #[test]
    fn help_is_not_an_error() {
        assert!(
            matches!(parse_args(&args("--help")), Ok(Command::Help(text)) if text.contains("--fsync"))
        );
    }
}
