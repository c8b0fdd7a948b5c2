//! The run's trace: a running hash of every event, and a readable event log on demand.
//!
//! The hash is the determinism witness (same seed ⇒ same hash); the log (`SIM_TRACE=1`) is how a
//! failing seed is read. It owns no simulation state and never influences the run.

use raftchat::raft::{Message, MessageBody};

use super::checker::mix;
use super::{Time, SUBTICKS_PER_TICK};

pub struct Trace {
    hash: u64,
    verbose: bool,
}

impl Trace {
    pub fn new(verbose: bool) -> Trace {
        Trace {
            hash: 0x7472_6163_6500_0000,
            verbose,
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn verbose(&self) -> bool {
        self.verbose
    }

    /// Folds facts about one event into the hash.
    pub fn record(&mut self, words: &[u64]) {
        for &word in words {
            self.hash = mix(self.hash, word);
        }
    }

    /// Prints one line of the readable log (only with `SIM_TRACE=1`).
    pub fn log(&self, step: u64, now: Time, what: impl FnOnce() -> String) {
        if self.verbose {
            eprintln!(
                "[step {step:>6} t={:>5}.{}] {}",
                now / SUBTICKS_PER_TICK,
                now % SUBTICKS_PER_TICK,
                what()
            );
        }
    }
}

/// The facts of a message that identify it in the hash.
pub fn message_words(msg: &Message) -> [u64; 6] {
    let (kind, a, b) = match &msg.body {
        MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
        } => (1 + *pre_vote as u64, *last_log_index, *last_log_term),
        MessageBody::RequestVoteResponse { pre_vote, granted } => {
            (3 + *pre_vote as u64, *granted as u64, 0)
        }
        MessageBody::AppendEntries {
            prev_log_index,
            entries,
            leader_commit,
            ..
        } => (
            5,
            *prev_log_index,
            mix(entries.len() as u64, *leader_commit),
        ),
        MessageBody::AppendEntriesResponse {
            success,
            match_index,
            reject_hint,
        } => (
            6,
            *match_index,
            mix(*success as u64, reject_hint.conflict_index),
        ),
        MessageBody::Heartbeat {
            leader_commit,
            read_round,
        } => (7, *leader_commit, *read_round),
        MessageBody::HeartbeatResponse { read_round } => (8, *read_round, 0),
        MessageBody::ReadIndex { ctx } => (9, *ctx, 0),
        MessageBody::ReadIndexResponse { ctx, index } => (10, *ctx, index.map_or(0, |i| i + 1)),
        MessageBody::TimeoutNow => (11, 0, 0),
        MessageBody::InstallSnapshot { snapshot, .. } => (12, snapshot.index, snapshot.term),
    };
    [msg.from, msg.to, msg.term, kind, a, b]
}

/// A short readable form of a message for the event log (entries shown as index:term).
pub fn describe_message(msg: &Message) -> String {
    let body = match &msg.body {
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => {
            let shown: Vec<String> = entries
                .iter()
                .map(|e| format!("{}:{}", e.index, e.term))
                .collect();
            format!(
                "AppendEntries prev={prev_log_index}:{prev_log_term} commit={leader_commit} entries=[{}]",
                shown.join(" ")
            )
        }
        other => format!("{other:?}"),
    };
    format!("{} -> {} term {} {body}", msg.from, msg.to, msg.term)
}
