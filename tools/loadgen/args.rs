//! The command line of `loadgen`: the option table, the positional `<count> <port>` shorthand
//! and every check on the values. It never touches the network (names resolve, nothing more).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use raftchat::chat::validate::TEXT_BYTES_MAX;
use raftchat::client::resolve;

/// Send everything to the leader, or spread connections over every node (followers forward).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Leader,
    Any,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub nodes: Vec<SocketAddr>,
    pub connections: usize,
    /// Requests in flight per connection at most.
    pub pipeline: usize,
    /// Message text bytes (at least the length of the unique prefix).
    pub size: usize,
    pub duration: Option<Duration>,
    /// Messages to commit after the warmup, over all connections.
    pub count: Option<u64>,
    /// Open loop: messages per second over all connections.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub json: bool,
    pub verify: bool,
    pub target: Target,
    pub op: OpKind,
    /// Node processes whose CPU time is counted; empty: found by listening port.
    pub pids: Vec<u32>,
    /// Threads the connections are spread over (each a mio loop over its share).
    pub threads: usize,
    /// `--tls`: every connection (and the status and verify reads) over TLS.
    pub tls: Option<Box<TlsArgs>>,
    /// `--handshakes N`: instead of a load run, open N connections one after another (over the
    /// threads) to the first node: connect (and TLS handshake), one round trip, close.
    pub handshakes: Option<u64>,
    /// `--login`: each connection registers (if needed) and logs in as its own nick first.
    pub login: bool,
}

/// `--tls --ca FILE [--cert FILE --key FILE]`: the CA that signed the nodes' certificates, and
/// a client certificate for nodes running with `--client-cert-auth`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsArgs {
    pub ca: PathBuf,
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// What each request does: post a chat message (the default), or exercise the key-value state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Post,
    /// `set` of one of 16 keys per connection (exactly-once through the session).
    Set,
    /// Linearizable `get` (ReadIndex) of one of 16 keys per connection.
    Get,
    /// Alternating `set` and `get`.
    Mixed,
}

#[derive(Debug, PartialEq)]
pub enum Parsed {
    Run(Config),
    Help(String),
}

const DEFAULT_DURATION: Duration = Duration::from_secs(10);
const DEFAULT_PIPELINE_OPEN_LOOP: usize = 1000;
const CONNECTIONS_MAX: usize = 4096;

fn options() -> getopts::Options {
    let mut opts = getopts::Options::new();
    opts.optopt(
        "",
        "nodes",
        "cluster nodes in node-id order (default 127.0.0.1:20000-20002)",
        "HOST:PORT,...",
    );
    opts.optopt(
        "",
        "connections",
        "connections, each with its own session (default 16)",
        "N",
    );
    opts.optopt(
        "",
        "pipeline",
        "requests in flight per connection; 1 = closed loop (default 1, or 1000 with --rate)",
        "DEPTH",
    );
    opts.optopt(
        "",
        "size",
        "message text size in bytes (default 100)",
        "BYTES",
    );
    opts.optopt(
        "",
        "duration",
        "measure for this long after the warmup (default 10 unless --count)",
        "SECS",
    );
    opts.optopt(
        "",
        "count",
        "stop after this many messages after the warmup",
        "N",
    );
    opts.optopt(
        "",
        "rate",
        "open loop: schedule this many messages per second in all",
        "MSGS_PER_S",
    );
    opts.optopt(
        "",
        "warmup",
        "run this long before measuring (default 0)",
        "SECS",
    );
    opts.optopt(
        "",
        "target",
        "leader (default): every connection to the leader; any: spread over all nodes",
        "leader|any",
    );
    opts.optopt(
        "",
        "op",
        "post (default): chat messages; set, get (linearizable) or mixed: the key-value state",
        "post|set|get|mixed",
    );
    opts.optopt(
        "",
        "pids",
        "node processes whose CPU time to count (default: the local processes listening on the nodes' ports)",
        "PID,...",
    );
    opts.optopt(
        "",
        "threads",
        "threads the connections are spread over, each one mio loop (default: one per core)",
        "N",
    );
    opts.optflag(
        "",
        "tls",
        "connect over TLS (needs --ca); the nodes are verified as the addresses dialled",
    );
    opts.optopt("", "ca", "with --tls: the CA certificate file", "FILE");
    opts.optopt(
        "",
        "cert",
        "with --tls: a client certificate for --client-cert-auth (with --key)",
        "FILE",
    );
    opts.optopt("", "key", "with --cert: its private key", "FILE");
    opts.optopt(
        "",
        "handshakes",
        "measure new connections per second instead: N connections to the first node, each \
         connect (+ TLS handshake), one status round trip, close",
        "N",
    );
    opts.optflag("", "json", "print the report as one JSON object");
    opts.optflag(
        "",
        "verify",
        "afterwards check every acknowledged message on every node; exit 1 on any loss \
         (not for a cluster with --retain-messages: dropped messages count as lost)",
    );
    opts.optflag("h", "help", "print this help");
    add_login_option(&mut opts);
    opts
}

/// `--login`, kept apart from the table above.
fn add_login_option(opts: &mut getopts::Options) {
    opts.optflag(
        "",
        "login",
        "each connection registers (if needed) and logs in as its nick lg-<n> before the run \
         (password loadgen-pw; not measured)",
    );
}

pub fn usage() -> String {
    options().usage("Usage: loadgen [<count> <port>] [--nodes HOST:PORT,...] [options]\n\n<count> <port> is the seed's shorthand for 127.0.0.1:port ... port+count-1.")
}

pub fn parse_args(args: &[String]) -> Result<Parsed, String> {
    let matches = options().parse(args).map_err(|e| e.to_string())?;
    if matches.opt_present("help") {
        return Ok(Parsed::Help(usage()));
    }
    let nodes = parse_nodes(&matches)?;
    let connections = number(&matches, "connections")?.unwrap_or(16);
    if connections == 0 || connections > CONNECTIONS_MAX {
        return Err(format!("--connections must be 1..={CONNECTIONS_MAX}"));
    }
    let (rate, pipeline) = parse_rate_and_pipeline(&matches)?;
    let size = number(&matches, "size")?.unwrap_or(100);
    if size == 0 || size > TEXT_BYTES_MAX {
        return Err(format!("--size must be 1..={TEXT_BYTES_MAX}"));
    }
    let (count, duration) = parse_limits(&matches)?;
    let (target, op) = parse_target_and_op(&matches)?;
    Ok(Parsed::Run(Config {
        nodes,
        connections,
        pipeline,
        size,
        duration,
        count,
        rate,
        warmup: seconds(&matches, "warmup")?.unwrap_or(Duration::ZERO),
        json: matches.opt_present("json"),
        verify: matches.opt_present("verify"),
        target,
        op,
        pids: parse_pids(&matches)?,
        threads: parse_threads(&matches)?,
        tls: parse_tls(&matches)?,
        handshakes: parse_handshakes(&matches)?,
        login: matches.opt_present("login"),
    }))
}

/// `--tls --ca FILE [--cert FILE --key FILE]`; the files are read when the run starts.
fn parse_tls(matches: &getopts::Matches) -> Result<Option<Box<TlsArgs>>, String> {
    let (ca, cert, key) = (
        matches.opt_str("ca"),
        matches.opt_str("cert"),
        matches.opt_str("key"),
    );
    if !matches.opt_present("tls") {
        if ca.is_some() || cert.is_some() || key.is_some() {
            return Err("--ca, --cert and --key go with --tls".into());
        }
        return Ok(None);
    }
    let ca = ca.ok_or("--tls needs --ca FILE (the CA that signed the nodes' certificates)")?;
    let identity = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
        _ => return Err("--cert and --key go together".into()),
    };
    Ok(Some(Box::new(TlsArgs {
        ca: PathBuf::from(ca),
        identity,
    })))
}

/// `--handshakes N`: 1..=1,000,000 connections.
fn parse_handshakes(matches: &getopts::Matches) -> Result<Option<u64>, String> {
    match number::<u64>(matches, "handshakes")? {
        None => Ok(None),
        Some(n) if (1..=1_000_000).contains(&n) => Ok(Some(n)),
        Some(n) => Err(format!("--handshakes {n}: expected 1..=1000000")),
    }
}

/// `--threads`, by default one per core.
fn parse_threads(matches: &getopts::Matches) -> Result<usize, String> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    match number::<usize>(matches, "threads")? {
        None => Ok(cores),
        Some(t) if (1..=1024).contains(&t) => Ok(t),
        Some(t) => Err(format!("--threads {t}: expected 1..=1024")),
    }
}

/// The value of `--name` as a `T`, if given.
fn number<T: std::str::FromStr>(
    matches: &getopts::Matches,
    name: &str,
) -> Result<Option<T>, String> {
    matches
        .opt_str(name)
        .map(|v| {
            v.parse()
                .map_err(|_| format!("--{name}: '{v}' is not a valid number"))
        })
        .transpose()
}

/// The value of `--name` as a number of seconds, if given.
fn seconds(matches: &getopts::Matches, name: &str) -> Result<Option<Duration>, String> {
    match number::<f64>(matches, name)? {
        None => Ok(None),
        Some(s) if (0.0..1e9).contains(&s) => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(format!("--{name}: {s} is out of range")),
    }
}

/// `--nodes`, or the positional `<count> <port>`, or the default three local nodes.
fn parse_nodes(matches: &getopts::Matches) -> Result<Vec<SocketAddr>, String> {
    let nodes: Vec<SocketAddr> = match (matches.opt_str("nodes"), matches.free.as_slice()) {
        (Some(_), [_, ..]) => return Err("give either --nodes or <count> <port>, not both".into()),
        (Some(list), []) => list
            .split(',')
            .map(|a| resolve(a.trim()).map_err(|e| format!("--nodes: '{a}': {e}")))
            .collect::<Result<Vec<_>, _>>()?,
        (None, [count, port]) => local_nodes(count, port)?,
        (None, []) => (0..3)
            .map(|j| SocketAddr::from(([127, 0, 0, 1], 20000 + j)))
            .collect(),
        (None, other) => return Err(format!("expected <count> <port>, got {other:?}")),
    };
    if nodes.is_empty() {
        return Err("--nodes: no nodes".into());
    }
    Ok(nodes)
}

/// The seed's shorthand: `count` nodes on 127.0.0.1 from `port` up.
fn local_nodes(count: &str, port: &str) -> Result<Vec<SocketAddr>, String> {
    let count: u16 = count
        .parse()
        .map_err(|_| format!("<count>: '{count}' is not a number"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("<port>: '{port}' is not a port"))?;
    if count == 0 || count > 64 || port == 0 || u32::from(port) + u32::from(count) > 65536 {
        return Err(format!("{count} nodes from port {port} is out of range"));
    }
    Ok((0..count)
        .map(|j| SocketAddr::from(([127, 0, 0, 1], port + j)))
        .collect())
}

/// `--rate` and `--pipeline`, whose default depends on the rate.
fn parse_rate_and_pipeline(matches: &getopts::Matches) -> Result<(Option<f64>, usize), String> {
    let rate: Option<f64> = number(matches, "rate")?;
    if rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err("--rate must be a positive number".into());
    }
    let pipeline = number(matches, "pipeline")?.unwrap_or(if rate.is_some() {
        DEFAULT_PIPELINE_OPEN_LOOP
    } else {
        1
    });
    if pipeline == 0 {
        return Err("--pipeline must be at least 1".into());
    }
    Ok((rate, pipeline))
}

/// `--count` and `--duration` (10 s when neither is given).
fn parse_limits(matches: &getopts::Matches) -> Result<(Option<u64>, Option<Duration>), String> {
    let count: Option<u64> = number(matches, "count")?;
    if count == Some(0) {
        return Err("--count must be at least 1".into());
    }
    let mut duration = seconds(matches, "duration")?;
    if duration.is_some_and(|d| d.is_zero()) {
        return Err("--duration must be positive".into());
    }
    if duration.is_none() && count.is_none() {
        duration = Some(DEFAULT_DURATION);
    }
    Ok((count, duration))
}

/// `--pids`: a comma-separated list of process ids.
fn parse_pids(matches: &getopts::Matches) -> Result<Vec<u32>, String> {
    let Some(list) = matches.opt_str("pids") else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(|p| match p.trim().parse::<u32>() {
            Ok(pid) if pid > 0 => Ok(pid),
            _ => Err(format!("--pids: '{p}' is not a process id")),
        })
        .collect()
}

fn parse_target_and_op(matches: &getopts::Matches) -> Result<(Target, OpKind), String> {
    let target = match matches.opt_str("target").as_deref() {
        None | Some("leader") => Target::Leader,
        Some("any") => Target::Any,
        Some(other) => return Err(format!("--target: '{other}' is neither leader nor any")),
    };
    let op = match matches.opt_str("op").as_deref() {
        None | Some("post") => OpKind::Post,
        Some("set") => OpKind::Set,
        Some("get") => OpKind::Get,
        Some("mixed") => OpKind::Mixed,
        Some(other) => return Err(format!("--op: '{other}' is not post, set, get or mixed")),
    };
    Ok((target, op))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn parse(s: &str) -> Result<Config, String> {
        match parse_args(&args(s))? {
            Parsed::Run(config) => Ok(config),
            Parsed::Help(_) => Err("help".into()),
        }
    }

    fn local(ports: std::ops::Range<u16>) -> Vec<SocketAddr> {
        ports
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect()
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.nodes, local(20000..20003));
        assert_eq!((c.connections, c.pipeline, c.size), (16, 1, 100));
        assert_eq!(
            (c.duration, c.count, c.rate),
            (Some(DEFAULT_DURATION), None, None)
        );
        assert_eq!(
            (c.warmup, c.json, c.verify, c.target),
            (Duration::ZERO, false, false, Target::Leader)
        );
    }

    #[test]
    fn operations() {
        assert_eq!(parse("").unwrap().op, OpKind::Post);
        for (text, op) in [
            ("post", OpKind::Post),
            ("set", OpKind::Set),
            ("get", OpKind::Get),
            ("mixed", OpKind::Mixed),
        ] {
            assert_eq!(parse(&format!("--op {text}")).unwrap().op, op);
        }
        assert!(parse("--op delete").is_err());
    }

    #[test]
    fn node_lists_and_the_seed_shorthand() {
        assert_eq!(parse("3 21000").unwrap().nodes, local(21000..21003));
        assert_eq!(
            parse("--nodes 127.0.0.1:7000,127.0.0.1:7002 --count 5")
                .unwrap()
                .nodes,
            vec![
                SocketAddr::from(([127, 0, 0, 1], 7000)),
                SocketAddr::from(([127, 0, 0, 1], 7002))
            ]
        );
        assert!(
            parse("--nodes 127.0.0.1:7000 3 21000").is_err(),
            "both forms"
        );
        assert!(parse("3").is_err());
        assert!(parse("0 21000").is_err());
        assert!(parse("3 65535").is_err(), "ports past 65535");
        assert!(parse("x 21000").is_err());
        assert!(parse("--nodes 127.0.0.1").is_err(), "no port");
    }

    #[test]
    fn modes_and_limits() {
        let c = parse("--connections 4 --pipeline 64 --size 200 --duration 2.5 --warmup 1 --json --verify --target any").unwrap();
        assert_eq!((c.connections, c.pipeline, c.size), (4, 64, 200));
        assert_eq!(
            (c.duration, c.warmup),
            (Some(Duration::from_millis(2500)), Duration::from_secs(1))
        );
        assert!(c.json && c.verify && c.target == Target::Any);
        let c = parse("--count 1000").unwrap();
        assert_eq!(
            (c.count, c.duration),
            (Some(1000), None),
            "--count alone runs until the count"
        );
        let c = parse("--rate 50000").unwrap();
        assert_eq!(
            (c.rate, c.pipeline),
            (Some(50000.0), DEFAULT_PIPELINE_OPEN_LOOP)
        );
        assert_eq!(parse("--rate 100 --pipeline 1").unwrap().pipeline, 1);
        for bad in [
            "--connections 0",
            "--pipeline 0",
            "--size 0",
            "--size 4097",
            "--rate 0",
            "--rate -5",
            "--rate nan",
            "--duration 0",
            "--duration -1",
            "--count 0",
            "--target mars",
            "--bogus",
            "--warmup x",
        ] {
            assert!(parse(bad).is_err(), "{bad} is refused");
        }
        assert!(matches!(parse_args(&args("--help")), Ok(Parsed::Help(_))));
    }

    #[test]
    fn tls_and_handshakes() {
        assert_eq!(parse("").unwrap().tls, None);
        let c = parse("--tls --ca certs/ca.pem --handshakes 500").unwrap();
        assert_eq!(
            c.tls.as_deref(),
            Some(&TlsArgs {
                ca: "certs/ca.pem".into(),
                identity: None
            })
        );
        assert_eq!(c.handshakes, Some(500));
        let c = parse("--tls --ca ca.pem --cert c.pem --key k.pem").unwrap();
        assert_eq!(
            c.tls.unwrap().identity,
            Some(("c.pem".into(), "k.pem".into()))
        );
        for bad in [
            "--tls",
            "--ca ca.pem",
            "--tls --ca ca.pem --cert c.pem",
            "--handshakes 0",
            "--handshakes x",
        ] {
            assert!(parse(bad).is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn pids_to_measure() {
        assert!(parse("").unwrap().pids.is_empty(), "found by port");
        assert_eq!(parse("--pids 12,345").unwrap().pids, vec![12, 345]);
        for bad in ["--pids 0", "--pids 12,x", "--pids ", "--pids -3"] {
            assert!(parse(bad).is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn login_is_off_unless_asked() {
        assert!(!parse("").unwrap().login);
        assert!(parse("--login --count 5").unwrap().login);
    }
}
