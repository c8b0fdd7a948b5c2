//! `--handshakes N`: how many new connections per second one node accepts. Each connection is
//! opened with the client library (TCP connect, the TLS handshake with `--tls`, the preamble),
//! makes one `Status` round trip (so the node has served it, not just accepted it) and is
//! closed. `--threads` threads share the N connections, each opening one after another, all
//! against the first node of `--nodes`. Without `--tls` the same run measures plain
//! connections, the baseline a TLS figure is read against.
//!
//! It only connects and asks `Status`; it never writes to the chat log.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use raftchat::client::proto::{Answer, Request};
use raftchat::client::{ClientTls, Connection, CONNECT_TIMEOUT};

use crate::report::{ms, Percentiles};

/// What a `--handshakes` run measured.
pub struct HandshakeReport {
    pub node: SocketAddr,
    pub tls: bool,
    pub threads: usize,
    /// Connections that completed their round trip.
    pub completed: u64,
    pub failed: u64,
    /// The first failure, to say why.
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Connect + handshake + round trip, per connection.
    pub latency: Percentiles,
}

impl HandshakeReport {
    pub fn per_s(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        let kind = if self.tls { "TLS" } else { "plain" };
        let _ = writeln!(
            out,
            "{kind} connections to {}: {} in {:.2} s over {} threads = {:.0}/s (connect{} + one round trip + close)",
            self.node,
            self.completed,
            self.elapsed.as_secs_f64(),
            self.threads,
            self.per_s(),
            if self.tls { " + handshake" } else { "" },
        );
        let l = &self.latency;
        let _ = writeln!(
            out,
            "per connection: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.max_us)
        );
        if self.failed > 0 {
            let _ = writeln!(
                out,
                "failed: {} (first: {})",
                self.failed,
                self.first_error.as_deref().unwrap_or("?")
            );
        }
        out
    }

    pub fn json(&self) -> String {
        let l = &self.latency;
        format!(
            "{{\"mode\":\"handshakes\",\"node\":\"{}\",\"tls\":{},\"threads\":{},\"completed\":{},\"failed\":{},\"elapsed_s\":{:.3},\"per_s\":{:.1},\"latency_ms\":{{\"p50\":{:.3},\"p99\":{:.3},\"max\":{:.3}}}}}",
            self.node,
            self.tls,
            self.threads,
            self.completed,
            self.failed,
            self.elapsed.as_secs_f64(),
            self.per_s(),
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.max_us)
        )
    }
}

/// One thread's share: connections opened and closed one after another.
struct ThreadResult {
    histogram: Histogram<u64>,
    failed: u64,
    first_error: Option<String>,
}

/// One connection: open (with the handshake), `Status`, close. The time it took.
fn one_connection(node: SocketAddr, tls: Option<&ClientTls>) -> Result<Duration, String> {
    let start = Instant::now();
    let mut conn = Connection::open(node, CONNECT_TIMEOUT, tls).map_err(|e| e.to_string())?;
    let req_id = conn.next_req_id();
    match conn.call(&Request::Status { req_id }) {
        Ok(Answer::StatusReply { .. }) => Ok(start.elapsed()),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Opens `count` connections to `node` over `threads` threads.
pub fn run_handshakes(
    node: SocketAddr,
    count: u64,
    threads: usize,
    tls: Option<ClientTls>,
) -> Result<HandshakeReport, String> {
    let threads = threads.clamp(1, count.max(1) as usize);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (next, tls) = (Arc::clone(&next), tls.clone());
            std::thread::spawn(move || -> Result<ThreadResult, String> {
                let mut result = ThreadResult {
                    histogram: Histogram::new_with_bounds(1, 60_000_000, 3)
                        .map_err(|e| e.to_string())?,
                    failed: 0,
                    first_error: None,
                };
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    match one_connection(node, tls.as_ref()) {
                        Ok(took) => result
                            .histogram
                            .saturating_record((took.as_micros() as u64).max(1)),
                        Err(e) => {
                            result.failed += 1;
                            result.first_error.get_or_insert(e);
                        }
                    }
                }
                Ok(result)
            })
        })
        .collect();
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let (mut failed, mut first_error) = (0, None);
    for handle in handles {
        let r = handle
            .join()
            .map_err(|_| "a handshake thread panicked".to_string())??;
        histogram.add(&r.histogram).map_err(|e| e.to_string())?;
        failed += r.failed;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    let elapsed = start.elapsed();
    Ok(HandshakeReport {
        node,
        tls: tls.is_some(),
        threads,
        completed: histogram.len(),
        failed,
        first_error,
        elapsed,
        latency: Percentiles {
            p50_us: histogram.value_at_quantile(0.5),
            p90_us: histogram.value_at_quantile(0.9),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        },
    })
}
