//! A connection's traffic: writing queued frames out, reading answers in, and what each answer
//! means for the session and the counts. Reconnecting is `recovery`'s.

use std::io;
use std::time::Instant;

use raftchat::client::proto::{Answer, ErrorKind};
use raftchat::client::Event;

use super::{log_debug, Worker, GAP_MIN_US};

impl Worker {
    /// Writes as much queued output as the socket takes; the rest waits for WRITABLE (over
    /// TLS, encrypted records still queued are written first).
    pub fn write_out(&mut self) -> Result<(), String> {
        loop {
            match self.stream.flush() {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => return self.connection_lost(e),
            }
            let output = self.core.output();
            if output.is_empty() {
                return Ok(());
            }
            match self.stream.write(output) {
                Ok(0) => {
                    return self.connection_lost(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "write returned 0",
                    ))
                }
                Ok(n) => {
                    output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.connection_lost(e),
            }
        }
    }

    pub fn read_in(&mut self, read_closed: bool) -> Result<(), String> {
        match self.input.read_from(&mut self.stream, read_closed) {
            Ok(true) => {}
            Ok(false) => {
                // Answers that arrived before the close still count; if one of them already
                // moved the session elsewhere, the close is old news.
                let generation = self.generation;
                self.drain_answers()?;
                if generation != self.generation {
                    return Ok(());
                }
                return self.connection_lost(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed by the node",
                ));
            }
            Err(e) => return self.connection_lost(e),
        }
        self.drain_answers()
    }

    /// Handles every complete answer in the input buffer, stopping early if one of them moved
    /// the session to another connection (the rest of the buffer belongs to the old one).
    fn drain_answers(&mut self) -> Result<(), String> {
        loop {
            let answer = match self.input.next_answer() {
                Ok(Some(answer)) => answer,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.result.failures.protocol += 1;
                    return self.connection_lost(e.into());
                }
            };
            let now = Instant::now();
            self.last_progress = now;
            if self.reads.contains_key(&answer.req_id()) {
                self.read_completed(answer, now);
                continue;
            }
            match self.core.on_answer(answer) {
                Event::Completed(completion) => {
                    self.picker.progress();
                    self.completed(completion.seq, completion.answer, now);
                }
                Event::Failover { kind, leader_hint } => {
                    let node = self.picker.current();
                    log_debug(
                        self.conn,
                        &format!("{} from node {node}, hint {leader_hint:?}", kind.name()),
                    );
                    return self.failover(leader_hint);
                }
                Event::Deferred => {
                    self.deferred_until
                        .get_or_insert(now + self.plan.policy.overload_pause);
                }
                Event::Expired => return self.session_expired(),
                Event::Stale => {}
            }
        }
    }

    fn completed(&mut self, seq: u64, answer: Answer, now: Instant) {
        let Some((n, latency_from)) = self.in_flight.remove(&seq) else {
            debug_assert!(false, "a completion for seq {seq} that was never submitted");
            return;
        };
        match answer {
            Answer::Posted { position, .. } => {
                self.result.acked.push((n, position));
                self.record_done(latency_from, now);
            }
            Answer::KvAck { .. } => self.record_done(latency_from, now),
            Answer::Error {
                kind: ErrorKind::Rejected,
                ..
            } => self.result.failures.rejected += 1,
            Answer::Error {
                kind: ErrorKind::NotFound,
                ..
            } => self.result.failures.not_found += 1,
            _ => {
                self.result.failures.other_answer += 1;
                self.result.unknown.push(n);
            }
        }
    }

    /// One request finished for good (committed write or served read): count it and its latency.
    fn record_done(&mut self, latency_from: Instant, now: Instant) {
        self.result.committed_total += 1;
        if latency_from >= self.measure_start() {
            self.result.committed_measured += 1;
            let latency_us = now.saturating_duration_since(latency_from).as_micros() as u64;
            self.result.histogram.saturating_record(latency_us.max(1));
        }
        let t_us = now.saturating_duration_since(self.start).as_micros() as u64;
        if t_us.saturating_sub(self.result.last_commit_us) > GAP_MIN_US {
            self.result.gaps.push((self.result.last_commit_us, t_us));
        }
        self.result.last_commit_us = t_us;
    }

    /// The answer to a key-value read.
    fn read_completed(&mut self, answer: Answer, now: Instant) {
        let Some((_, latency_from)) = self.reads.remove(&answer.req_id()) else {
            return;
        };
        match answer {
            Answer::KvValue { .. } => self.record_done(latency_from, now),
            Answer::Error {
                kind: ErrorKind::NotFound,
                ..
            } => self.result.failures.not_found += 1,
            _ => self.result.failures.other_answer += 1,
        }
    }
}
