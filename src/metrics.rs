//! The node's metrics in one place, and their Prometheus text form (exposition format 0.0.4).
//!
//! [`Metrics`] is a plain struct of plain fields that the event loop updates where things
//! happen (`metrics.wal.syncs += 1`, `metrics.wal.fsync_seconds.observe_duration(d)`,
//! `metrics.server.term = term`); [`Metrics::encode`] writes every family, with `# HELP` and
//! `# TYPE` lines, for `GET /metrics`. Names follow etcd's (`etcd_server_has_leader`,
//! `etcd_disk_wal_fsync_duration_seconds`, ...) with the prefix `raftchat_`; counters end in
//! `_total`; durations are in seconds.
//!
//! Single-threaded by design: no atomics, no global registry, no locks. Whoever owns the node's
//! loop owns its `Metrics`; a helper thread's numbers travel back to the loop in its messages.
//! Never does IO and never reads a clock (callers pass durations in).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// A fixed-bucket histogram: counts per upper bound, plus the sum and count of observations.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Upper bounds, increasing; `+Inf` is implicit.
    bounds: Vec<f64>,
    /// Observations per bucket (not cumulative); one more than `bounds`, the last for `+Inf`.
    counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

/// A latency histogram: 0.1 ms to about 6.5 s, doubling (what the replica counts fsyncs and
/// snapshots in before the metrics endpoint copies them).
impl Default for Histogram {
    fn default() -> Self {
        Histogram::exponential(0.0001, 2.0, 17)
    }
}

/// A histogram of entries per fdatasync: 1 to 4096, doubling.
#[derive(Clone, Debug, PartialEq)]
pub struct EntriesPerSync(pub Histogram);

impl Default for EntriesPerSync {
    fn default() -> Self {
        EntriesPerSync(Histogram::exponential(1.0, 2.0, 13))
    }
}

impl Histogram {
    /// Buckets `start, start*factor, ...`, `buckets` of them (Prometheus' `ExponentialBuckets`).
    pub fn exponential(start: f64, factor: f64, buckets: usize) -> Self {
        let bounds: Vec<f64> = (0..buckets)
            .map(|i| start * factor.powi(i as i32))
            .collect();
        Histogram {
            counts: vec![0; bounds.len() + 1],
            bounds,
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
        self.count += 1;
    }

    pub fn observe_duration(&mut self, elapsed: Duration) {
        self.observe(elapsed.as_secs_f64());
    }

    /// `(upper bound, cumulative count)` per bucket, `+Inf` last.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        let bounds = self.bounds.iter().copied().chain([f64::INFINITY]);
        bounds
            .zip(&self.counts)
            .map(|(bound, &n)| {
                total += n;
                (bound, total)
            })
            .collect()
    }
}

/// Raft and the state machine, as this node sees them.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerMetrics {
    pub has_leader: bool,
    pub is_leader: bool,
    pub term: u64,
    pub leader_changes_seen: u64,
    /// Proposals this node made that were committed, applied, or failed (lost leadership,
    /// dropped, timed out).
    pub proposals_committed: u64,
    pub proposals_applied: u64,
    pub proposals_failed: u64,
    /// Proposals made and not yet committed or failed.
    pub proposals_pending: u64,
    pub commit_index: u64,
    pub apply_index: u64,
}

/// The write-ahead log and its group commit (issue 15).
#[derive(Clone, Debug, PartialEq)]
pub struct WalMetrics {
    pub fsync_seconds: Histogram,
    pub bytes_written: u64,
    pub entries_written: u64,
    /// fdatasync calls completed, and the entries they made durable.
    pub syncs: u64,
    pub entries_synced: u64,
    pub entries_per_sync: Histogram,
    pub entries_per_sync_max: u64,
    pub syncs_in_flight: u64,
    /// Writes handed to the fsync thread; several may share one sync (`ReplicaStats::sync_jobs`).
    pub sync_requests: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotMetrics {
    pub saves: u64,
    pub save_seconds: Histogram,
    pub install_sent: u64,
    pub install_received: u64,
    /// Follower: message history fetched for received snapshots (`ReplicaStats`).
    pub history_fetched_bytes: u64,
    pub history_fetched_pages: u64,
}

/// Replication traffic, overall and per peer (labelled by the peer's node id).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PeerMetrics {
    pub append_entries_sent: u64,
    /// Log entries carried by those AppendEntries messages.
    pub entries_sent: u64,
    pub round_trip_seconds: BTreeMap<u64, Histogram>,
    /// How many entries the peer's match index is behind this node's last index (leader only).
    pub match_lag: BTreeMap<u64, u64>,
}

impl PeerMetrics {
    /// Records one round trip to `peer` (a histogram per peer, made on first use).
    pub fn observe_round_trip(&mut self, peer: u64, elapsed: Duration) {
        self.round_trip_seconds
            .entry(peer)
            .or_insert_with(round_trip_histogram)
            .observe_duration(elapsed);
    }
}

/// Open client connections, by protocol.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Connections {
    pub telnet: u64,
    pub binary: u64,
    pub websocket: u64,
    /// Plain HTTP connections (page, metrics, health) not upgraded to WebSocket.
    pub http: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ClientMetrics {
    pub connections: Connections,
    /// Requests answered, by (kind, outcome), e.g. `("msg", "ok")`, `("join", "rejected")`.
    pub requests: BTreeMap<(&'static str, &'static str), u64>,
    pub request_seconds: Histogram,
}

impl ClientMetrics {
    /// Counts one answered request and its latency.
    pub fn record_request(&mut self, kind: &'static str, outcome: &'static str, elapsed: Duration) {
        self.count_request(kind, outcome);
        self.request_seconds.observe_duration(elapsed);
    }

    /// Counts one answered request whose start is no longer known (it outlived its deadline).
    pub fn count_request(&mut self, kind: &'static str, outcome: &'static str) {
        *self.requests.entry((kind, outcome)).or_default() += 1;
    }
}

impl Default for ClientMetrics {
    fn default() -> Self {
        ClientMetrics {
            connections: Connections::default(),
            requests: BTreeMap::new(),
            request_seconds: Histogram::exponential(0.0005, 2.0, 15),
        }
    }
}

/// Every metric of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    pub server: ServerMetrics,
    pub wal: WalMetrics,
    pub snapshot: SnapshotMetrics,
    pub peers: PeerMetrics,
    pub clients: ClientMetrics,
}

/// etcd's peer round-trip buckets: 0.1 ms to 3.3 s.
fn round_trip_histogram() -> Histogram {
    Histogram::exponential(0.0001, 2.0, 16)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            server: ServerMetrics {
                has_leader: false,
                is_leader: false,
                term: 0,
                leader_changes_seen: 0,
                proposals_committed: 0,
                proposals_applied: 0,
                proposals_failed: 0,
                proposals_pending: 0,
                commit_index: 0,
                apply_index: 0,
            },
            wal: WalMetrics {
                // etcd's fsync buckets: 1 ms to 8 s.
                fsync_seconds: Histogram::exponential(0.001, 2.0, 14),
                bytes_written: 0,
                entries_written: 0,
                syncs: 0,
                entries_synced: 0,
                entries_per_sync: EntriesPerSync::default().0,
                entries_per_sync_max: 0,
                syncs_in_flight: 0,
                sync_requests: 0,
            },
            snapshot: SnapshotMetrics {
                saves: 0,
                save_seconds: Histogram::exponential(0.01, 2.0, 12),
                install_sent: 0,
                install_received: 0,
                history_fetched_bytes: 0,
                history_fetched_pages: 0,
            },
            peers: PeerMetrics::default(),
            clients: ClientMetrics::default(),
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one completed fdatasync of `entries` entries (group commit).
    pub fn record_sync(&mut self, entries: u64, elapsed: Duration) {
        let wal = &mut self.wal;
        wal.syncs += 1;
        wal.entries_synced += entries;
        wal.entries_per_sync.observe(entries as f64);
        wal.entries_per_sync_max = wal.entries_per_sync_max.max(entries);
        wal.fsync_seconds.observe_duration(elapsed);
    }

    /// Appends every family in Prometheus text format 0.0.4.
    pub fn encode(&self, out: &mut String) {
        self.encode_server(out);
        self.encode_wal(out);
        self.encode_snapshot(out);
        self.encode_peers(out);
        self.encode_clients(out);
    }

    fn encode_server(&self, out: &mut String) {
        let s = &self.server;
        scalars(
            out,
            &[
                (
                    GAUGE,
                    "raftchat_server_has_leader",
                    "Whether a leader is known (1) or not (0).",
                    u64::from(s.has_leader),
                ),
                (
                    GAUGE,
                    "raftchat_server_is_leader",
                    "Whether this node is the leader (1) or not (0).",
                    u64::from(s.is_leader),
                ),
                (
                    GAUGE,
                    "raftchat_server_term",
                    "The current Raft term.",
                    s.term,
                ),
                (
                    COUNTER,
                    "raftchat_server_leader_changes_seen_total",
                    "Leader changes seen by this node.",
                    s.leader_changes_seen,
                ),
                (
                    COUNTER,
                    "raftchat_server_proposals_committed_total",
                    "Proposals made by this node and committed.",
                    s.proposals_committed,
                ),
                (
                    COUNTER,
                    "raftchat_server_proposals_applied_total",
                    "Proposals made by this node and applied.",
                    s.proposals_applied,
                ),
                (
                    COUNTER,
                    "raftchat_server_proposals_failed_total",
                    "Proposals made by this node that failed.",
                    s.proposals_failed,
                ),
                (
                    GAUGE,
                    "raftchat_server_proposals_pending",
                    "Proposals made by this node and not yet committed or failed.",
                    s.proposals_pending,
                ),
                (
                    GAUGE,
                    "raftchat_server_commit_index",
                    "The highest log index known committed.",
                    s.commit_index,
                ),
                (
                    GAUGE,
                    "raftchat_server_apply_index",
                    "The highest log index applied to the state machine.",
                    s.apply_index,
                ),
            ],
        );
    }

    fn encode_wal(&self, out: &mut String) {
        let w = &self.wal;
        histogram(
            out,
            "raftchat_disk_wal_fsync_duration_seconds",
            "Time of one WAL fdatasync.",
            &[(None, &w.fsync_seconds)],
        );
        scalars(
            out,
            &[
                (
                    COUNTER,
                    "raftchat_disk_wal_write_bytes_total",
                    "Bytes written to the WAL.",
                    w.bytes_written,
                ),
                (
                    COUNTER,
                    "raftchat_disk_wal_entries_written_total",
                    "Log entries written to the WAL.",
                    w.entries_written,
                ),
                (
                    COUNTER,
                    "raftchat_disk_wal_syncs_total",
                    "WAL fdatasync calls completed.",
                    w.syncs,
                ),
                (
                    COUNTER,
                    "raftchat_disk_wal_entries_synced_total",
                    "Log entries made durable by those syncs.",
                    w.entries_synced,
                ),
            ],
        );
        histogram(
            out,
            "raftchat_disk_wal_entries_per_sync",
            "Log entries made durable by one sync (group commit).",
            &[(None, &w.entries_per_sync)],
        );
        scalars(
            out,
            &[
                (
                    GAUGE,
                    "raftchat_disk_wal_entries_per_sync_max",
                    "The most entries one sync has made durable.",
                    w.entries_per_sync_max,
                ),
                (
                    GAUGE,
                    "raftchat_disk_wal_syncs_in_flight",
                    "WAL syncs requested and not yet completed.",
                    w.syncs_in_flight,
                ),
                (
                    COUNTER,
                    "raftchat_disk_wal_sync_requests_total",
                    "Writes handed to the fsync thread (several may share one sync).",
                    w.sync_requests,
                ),
            ],
        );
    }

    fn encode_snapshot(&self, out: &mut String) {
        let s = &self.snapshot;
        scalars(
            out,
            &[(
                COUNTER,
                "raftchat_snapshot_saves_total",
                "Snapshots written by this node.",
                s.saves,
            )],
        );
        histogram(
            out,
            "raftchat_snapshot_save_duration_seconds",
            "Time to write one snapshot.",
            &[(None, &s.save_seconds)],
        );
        scalars(
            out,
            &[
                (
                    COUNTER,
                    "raftchat_snapshot_install_sent_total",
                    "InstallSnapshot transfers sent to followers.",
                    s.install_sent,
                ),
                (
                    COUNTER,
                    "raftchat_snapshot_install_received_total",
                    "InstallSnapshot transfers received from a leader.",
                    s.install_received,
                ),
                (
                    COUNTER,
                    "raftchat_snapshot_history_fetched_bytes_total",
                    "Message history fetched for received snapshots, in page bytes.",
                    s.history_fetched_bytes,
                ),
                (
                    COUNTER,
                    "raftchat_snapshot_history_fetched_pages_total",
                    "History pages fetched for received snapshots.",
                    s.history_fetched_pages,
                ),
            ],
        );
    }

    fn encode_peers(&self, out: &mut String) {
        let p = &self.peers;
        let help = "Log entries carried by AppendEntries messages.";
        scalars(
            out,
            &[
                (
                    COUNTER,
                    "raftchat_network_append_entries_sent_total",
                    "AppendEntries messages sent.",
                    p.append_entries_sent,
                ),
                (
                    COUNTER,
                    "raftchat_network_append_entries_entries_sent_total",
                    help,
                    p.entries_sent,
                ),
            ],
        );
        let peer_ids: Vec<String> = p.round_trip_seconds.keys().map(u64::to_string).collect();
        let rtts: Vec<(Option<(&str, &str)>, &Histogram)> = peer_ids
            .iter()
            .zip(p.round_trip_seconds.values())
            .map(|(id, h)| (Some(("peer", id.as_str())), h))
            .collect();
        histogram(
            out,
            "raftchat_network_peer_round_trip_time_seconds",
            "Round-trip time of messages to a peer.",
            &rtts,
        );
        header(
            out,
            "raftchat_network_peer_match_lag_entries",
            "Entries a peer's match index is behind this leader's last index.",
            "gauge",
        );
        for (peer, lag) in &p.match_lag {
            sample(
                out,
                "raftchat_network_peer_match_lag_entries",
                &[("peer", &peer.to_string())],
                *lag,
            );
        }
    }

    fn encode_clients(&self, out: &mut String) {
        let c = &self.clients;
        let name = "raftchat_client_connections";
        header(out, name, "Open client connections, by protocol.", GAUGE);
        let by_protocol = [
            ("telnet", c.connections.telnet),
            ("binary", c.connections.binary),
            ("websocket", c.connections.websocket),
            ("http", c.connections.http),
        ];
        for (protocol, n) in by_protocol {
            sample(out, name, &[("protocol", protocol)], n);
        }
        let name = "raftchat_client_requests_total";
        header(
            out,
            name,
            "Client requests answered, by kind and outcome.",
            "counter",
        );
        for ((kind, outcome), n) in &c.requests {
            sample(out, name, &[("kind", kind), ("outcome", outcome)], *n);
        }
        histogram(
            out,
            "raftchat_client_request_duration_seconds",
            "Time from a client request to its answer.",
            &[(None, &c.request_seconds)],
        );
    }
}

/// `# HELP` and `# TYPE` lines of one family.
fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line; label values are escaped (`\\`, `\"`, `\n`).
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{label}=\"{}\"", escape_label_value(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

const COUNTER: &str = "counter";
const GAUGE: &str = "gauge";

/// Unlabelled counters and gauges: `(type, name, help, value)`, each its own family.
fn scalars(out: &mut String, families: &[(&str, &str, &str, u64)]) {
    for &(kind, name, help, value) in families {
        header(out, name, help, kind);
        sample(out, name, &[], value);
    }
}

/// A histogram family: one series per `(label, histogram)`.
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    series: &[(Option<(&str, &str)>, &Histogram)],
) {
    header(out, name, help, "histogram");
    let bucket = format!("{name}_bucket");
    for (label, h) in series {
        let base: Vec<(&str, &str)> = label.iter().copied().collect();
        for (bound, n) in h.cumulative() {
            let le = if bound.is_infinite() {
                "+Inf".to_string()
            } else {
                bound.to_string()
            };
            let mut labels = base.clone();
            labels.push(("le", &le));
            sample(out, &bucket, &labels, n);
        }
        sample(out, &format!("{name}_sum"), &base, h.sum);
        sample(out, &format!("{name}_count"), &base, h.count);
    }
}

#[cfg(test)]
mod tests;
