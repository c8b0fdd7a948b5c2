//! Tests of the metrics encoder, through a small parser of the Prometheus text format written
//! here (it checks the rules a scraper relies on, not just that lines look plausible).

use super::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Families by name with their type, and every sample; `Err` on any rule broken.
fn parse_exposition(text: &str) -> Result<(BTreeMap<String, String>, Vec<Sample>), String> {
    let mut helped = BTreeSet::new();
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            check_name(name)?;
            if !helped.insert(name.to_string()) {
                return Err(format!("second HELP for {name}"));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE: {line}"))?;
            if !helped.contains(name) || types.contains_key(name) {
                return Err(format!("TYPE without HELP before it, or twice: {line}"));
            }
            if !["counter", "gauge", "histogram"].contains(&kind) {
                return Err(format!("unknown type: {line}"));
            }
            types.insert(name.to_string(), kind.to_string());
        } else {
            let sample = parse_sample(line)?;
            let family = family_of(&sample.name, &types)
                .ok_or(format!("sample before its HELP and TYPE: {line}"))?;
            if types[&family] == "counter" && !family.ends_with("_total") {
                return Err(format!("counter not named _total: {family}"));
            }
            samples.push(sample);
        }
    }
    Ok((types, samples))
}

fn family_of(name: &str, types: &BTreeMap<String, String>) -> Option<String> {
    if types.contains_key(name) {
        return Some(name.to_string());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (types.get(base)? == "histogram").then(|| base.to_string())
    })
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with("raftchat_")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    ok.then_some(()).ok_or(format!("bad metric name {name:?}"))
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or(format!("no value: {line}"))?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or(format!("no space before value: {line}"))?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| format!("bad value: {line}"))?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `name="value",...}` with escapes; returns the labels and what follows the `}`.
type Labels = Vec<(String, String)>;

fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        let (name, rest) = s.split_once("=\"").ok_or(format!("bad label in {s}"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("raw newline in label".into()),
                (_, c) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        let after = &rest[end + 1..];
        if let Some(after) = after.strip_prefix('}') {
            return Ok((labels, after));
        }
        s = after
            .strip_prefix(',')
            .ok_or(format!("expected , or }} in {after}"))?;
    }
}

fn busy_metrics() -> Metrics {
    let mut m = Metrics::new();
    m.server.has_leader = true;
    m.server.is_leader = true;
    m.server.term = 7;
    m.server.leader_changes_seen = 2;
    m.server.proposals_committed = 40;
    m.server.proposals_applied = 39;
    m.server.proposals_failed = 1;
    m.server.proposals_pending = 3;
    m.server.commit_index = 120;
    m.server.apply_index = 119;
    m.wal.bytes_written = 4096;
    m.wal.entries_written = 42;
    m.wal.syncs_in_flight = 1;
    m.wal.sync_requests = 9;
    m.record_sync(5, Duration::from_micros(1500));
    m.record_sync(1, Duration::from_millis(20));
    m.snapshot.saves = 1;
    m.snapshot.save_seconds.observe(0.3);
    m.snapshot.install_sent = 2;
    m.snapshot.install_received = 0;
    m.peers.append_entries_sent = 100;
    m.peers.entries_sent = 250;
    m.peers.observe_round_trip(2, Duration::from_micros(300));
    m.peers.observe_round_trip(3, Duration::from_secs(10));
    m.peers.match_lag.insert(2, 0);
    m.peers.match_lag.insert(3, 17);
    m.clients.connections.telnet = 2;
    m.clients.connections.websocket = 1;
    m.clients
        .record_request("msg", "ok", Duration::from_millis(3));
    m.clients
        .record_request("msg", "ok", Duration::from_millis(4));
    m.clients
        .record_request("join", "rejected", Duration::from_micros(100));
    m
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(l, v)| s.label(l) == Some(v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0].value
}

#[test]
fn every_family_is_declared_and_parses() {
    let mut text = String::new();
    busy_metrics().encode(&mut text);
    let (types, samples) = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let required = [
        ("raftchat_server_has_leader", "gauge"),
        ("raftchat_server_is_leader", "gauge"),
        ("raftchat_server_term", "gauge"),
        ("raftchat_server_leader_changes_seen_total", "counter"),
        ("raftchat_server_proposals_committed_total", "counter"),
        ("raftchat_server_proposals_applied_total", "counter"),
        ("raftchat_server_proposals_failed_total", "counter"),
        ("raftchat_server_proposals_pending", "gauge"),
        ("raftchat_server_commit_index", "gauge"),
        ("raftchat_server_apply_index", "gauge"),
        ("raftchat_disk_wal_fsync_duration_seconds", "histogram"),
        ("raftchat_disk_wal_write_bytes_total", "counter"),
        ("raftchat_disk_wal_entries_written_total", "counter"),
        ("raftchat_disk_wal_syncs_total", "counter"),
        ("raftchat_disk_wal_entries_synced_total", "counter"),
        ("raftchat_disk_wal_entries_per_sync", "histogram"),
        ("raftchat_disk_wal_entries_per_sync_max", "gauge"),
        ("raftchat_disk_wal_syncs_in_flight", "gauge"),
        ("raftchat_disk_wal_sync_requests_total", "counter"),
        ("raftchat_snapshot_saves_total", "counter"),
        ("raftchat_snapshot_save_duration_seconds", "histogram"),
        ("raftchat_snapshot_install_sent_total", "counter"),
        ("raftchat_snapshot_install_received_total", "counter"),
        ("raftchat_snapshot_history_fetched_bytes_total", "counter"),
        ("raftchat_snapshot_history_fetched_pages_total", "counter"),
        ("raftchat_network_append_entries_sent_total", "counter"),
        (
            "raftchat_network_append_entries_entries_sent_total",
            "counter",
        ),
        ("raftchat_network_peer_round_trip_time_seconds", "histogram"),
        ("raftchat_network_peer_match_lag_entries", "gauge"),
        ("raftchat_client_connections", "gauge"),
        ("raftchat_client_requests_total", "counter"),
        ("raftchat_client_request_duration_seconds", "histogram"),
    ];
    for (name, kind) in required {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    assert_eq!(types.len(), required.len(), "no undocumented families");
    assert!(samples.len() > required.len());
}

#[test]
fn values_land_in_their_samples() {
    let mut text = String::new();
    busy_metrics().encode(&mut text);
    let (_, samples) = parse_exposition(&text).unwrap();
    assert_eq!(value(&samples, "raftchat_server_term", &[]), 7.0);
    assert_eq!(value(&samples, "raftchat_server_is_leader", &[]), 1.0);
    assert_eq!(value(&samples, "raftchat_disk_wal_syncs_total", &[]), 2.0);
    assert_eq!(
        value(&samples, "raftchat_disk_wal_entries_synced_total", &[]),
        6.0
    );
    assert_eq!(
        value(&samples, "raftchat_disk_wal_entries_per_sync_max", &[]),
        5.0
    );
    let fsync = "raftchat_disk_wal_fsync_duration_seconds";
    assert_eq!(
        value(&samples, &format!("{fsync}_bucket"), &[("le", "0.001")]),
        0.0
    );
    assert_eq!(
        value(&samples, &format!("{fsync}_bucket"), &[("le", "0.002")]),
        1.0
    );
    assert_eq!(
        value(&samples, &format!("{fsync}_bucket"), &[("le", "0.032")]),
        2.0
    );
    assert_eq!(value(&samples, &format!("{fsync}_count"), &[]), 2.0);
    assert!((value(&samples, &format!("{fsync}_sum"), &[]) - 0.0215).abs() < 1e-9);
    let lag = "raftchat_network_peer_match_lag_entries";
    assert_eq!(value(&samples, lag, &[("peer", "3")]), 17.0);
    let rtt = "raftchat_network_peer_round_trip_time_seconds_bucket";
    assert_eq!(value(&samples, rtt, &[("peer", "3"), ("le", "+Inf")]), 1.0);
    assert_eq!(
        value(&samples, rtt, &[("peer", "3"), ("le", "3.2768")]),
        0.0
    );
    assert_eq!(
        value(&samples, rtt, &[("peer", "2"), ("le", "0.0004")]),
        1.0
    );
    let conns = "raftchat_client_connections";
    assert_eq!(value(&samples, conns, &[("protocol", "telnet")]), 2.0);
    assert_eq!(value(&samples, conns, &[("protocol", "http")]), 0.0);
    let requests = "raftchat_client_requests_total";
    assert_eq!(
        value(&samples, requests, &[("kind", "msg"), ("outcome", "ok")]),
        2.0
    );
    assert_eq!(
        value(
            &samples,
            requests,
            &[("kind", "join"), ("outcome", "rejected")]
        ),
        1.0
    );
}

#[test]
fn histogram_buckets_are_cumulative_and_end_at_the_count() {
    let mut text = String::new();
    busy_metrics().encode(&mut text);
    let (types, samples) = parse_exposition(&text).unwrap();
    for (family, _) in types.iter().filter(|(_, kind)| *kind == "histogram") {
        let bucket_name = format!("{family}_bucket");
        let mut series: BTreeMap<Vec<(String, String)>, Vec<f64>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.name == bucket_name) {
            let key: Vec<_> = s
                .labels
                .iter()
                .filter(|(l, _)| l != "le")
                .cloned()
                .collect();
            series.entry(key).or_default().push(s.value);
        }
        for (key, counts) in series {
            assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{family} {key:?}");
            let count_name = format!("{family}_count");
            let count = samples
                .iter()
                .find(|s| s.name == count_name && s.labels == key)
                .expect("a _count per series");
            assert_eq!(
                counts.last().copied(),
                Some(count.value),
                "{family} {key:?}"
            );
        }
    }
}

#[test]
fn label_values_are_escaped() {
    let mut m = Metrics::new();
    let kind = "we\"ird\\\nkind";
    m.clients.record_request(kind, "ok", Duration::ZERO);
    let mut text = String::new();
    m.encode(&mut text);
    assert!(text.contains(r#"kind="we\"ird\\\nkind""#), "{text}");
    let (_, samples) = parse_exposition(&text).unwrap();
    let requests = "raftchat_client_requests_total";
    assert_eq!(value(&samples, requests, &[("kind", kind)]), 1.0);
}

#[test]
fn the_parser_catches_broken_text() {
    let ok = "# HELP raftchat_x_total X.\n# TYPE raftchat_x_total counter\nraftchat_x_total 1\n";
    assert!(parse_exposition(ok).is_ok());
    let broken = [
        "raftchat_x_total 1\n",
        "# TYPE raftchat_x_total counter\nraftchat_x_total 1\n",
        "# HELP raftchat_x X.\n# TYPE raftchat_x counter\nraftchat_x 1\n",
        "# HELP raftchat_x X.\n# TYPE raftchat_x gauge\nraftchat_x{a=\"b} 1\n",
        "# HELP raftchat_x X.\n# TYPE raftchat_x gauge\nraftchat_x one\n",
        "# HELP raftchat_h X.\n# TYPE raftchat_h gauge\nraftchat_h_bucket 1\n",
    ];
    for text in broken {
        assert!(parse_exposition(text).is_err(), "{text}");
    }
}

#[test]
fn an_empty_node_encodes_too() {
    let mut text = String::new();
    Metrics::new().encode(&mut text);
    let (_, samples) = parse_exposition(&text).unwrap();
    assert_eq!(value(&samples, "raftchat_server_has_leader", &[]), 0.0);
    assert!(
        !text.contains("peer=\""),
        "no peer series before any peer is seen"
    );
}
