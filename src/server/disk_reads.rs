//! Reads of old chat history off the event loop: one reader thread runs the message store's
//! read jobs.
//!
//! Messages the chat log evicted from memory live only in the message store (`history`);
//! reading them can block on the disk. The front-ends ask the state machine for an answer
//! (`chat::read`): the common case, everything in memory, is answered on the spot; otherwise
//! they get a [`Pending`] read whose job ([`ReadJob`]: planned on the loop from memory only,
//! holding no lock) this module hands to its thread through a std channel, with a ticket and
//! a [`Waiter`] saying who waits for what. The thread reads, sends the answer back and wakes
//! the loop with the node's `mio::Waker` (as `accounts` does for password hashes); the node
//! drains finished reads with [`DiskReads::finished`] where it drains logins and hands each
//! answer, completed by [`Pending::finish`], to the front-end that waits for it. A front-end
//! whose connection closed meanwhile drops the answer.
//!
//! Reads in flight are bounded ([`READS_IN_FLIGHT_MAX`]): past it a read is refused at once
//! ("busy") rather than queued behind a flood. `--testing-disk-read-gate <path>` makes the
//! thread wait before each job until the file exists (tests hold reads on "the disk" with it).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use mio::Waker;

use super::transport::ConnRef;
use crate::chat::{ChatMessage, Pending};
use crate::history::ReadJob;

/// Reads queued or running at once, node-wide; more are refused with "busy".
pub const READS_IN_FLIGHT_MAX: usize = 64;
/// How often a gated thread looks for the gate file.
const GATE_POLL: Duration = Duration::from_millis(5);

/// Who waits for a read, and what to finish with its answer.
#[derive(Debug)]
pub enum Waiter {
    /// Telnet `history #room n`: the command in flight on the connection.
    TelnetHistory { conn: ConnRef },
    /// A page of a telnet `get chatLog` listing.
    Listing { conn: ConnRef },
    /// A WebSocket `history` request.
    WebHistory {
        conn: ConnRef,
        id: Option<u64>,
        room: String,
    },
    /// A binary `LogPage`; `total` is the last position when it was read.
    LogPage {
        conn: ConnRef,
        req_id: u64,
        total: u64,
    },
}

type Answer = Result<Vec<ChatMessage>, String>;

/// The reader thread, its channels and the reads waiting for it.
#[derive(Default)]
pub struct DiskReads {
    jobs: Option<Sender<(u64, ReadJob)>>,
    done: Option<Receiver<(u64, Answer)>>,
    waiting: HashMap<u64, (Waiter, Pending)>,
    next_ticket: u64,
}

impl DiskReads {
    /// Starts the thread; `waker` wakes the node's loop when a read is done.
    pub fn start(&mut self, waker: Arc<Waker>, gate: Option<PathBuf>) -> std::io::Result<()> {
        let (jobs, job_rx) = mpsc::channel::<(u64, ReadJob)>();
        let (done_tx, done) = mpsc::channel::<(u64, Answer)>();
        thread::Builder::new()
            .name("disk-reads".into())
            .spawn(move || {
                // Ends when the node drops its sender.
                while let Ok((ticket, job)) = job_rx.recv() {
                    if let Some(gate) = &gate {
                        while !gate.exists() {
                            thread::sleep(GATE_POLL);
                        }
                    }
                    let answer = job.run();
                    if done_tx.send((ticket, answer)).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        self.jobs = Some(jobs);
        self.done = Some(done);
        Ok(())
    }

    /// Queues the store part of `pending` for `waiter`; `Err` with the waiter and the words for
    /// the client when too many reads are in flight or the thread is not running.
    pub fn submit(&mut self, mut pending: Pending, waiter: Waiter) -> Result<(), (Waiter, String)> {
        if self.waiting.len() >= READS_IN_FLIGHT_MAX {
            let why = "busy: too many reads of old history in progress, try again";
            return Err((waiter, why.to_string()));
        }
        let Some(jobs) = &self.jobs else {
            return Err((waiter, "the history reader is not running".to_string()));
        };
        let ticket = self.next_ticket;
        let job = std::mem::replace(&mut pending.job, ReadJob::Failed(String::new()));
        if jobs.send((ticket, job)).is_err() {
            return Err((
                waiter,
                "the history reader stopped: try again later".to_string(),
            ));
        }
        self.next_ticket += 1;
        self.waiting.insert(ticket, (waiter, pending));
        Ok(())
    }

    /// Finished reads with their whole answers, without blocking.
    pub fn finished(&mut self) -> Vec<(Waiter, Answer)> {
        let mut out = Vec::new();
        let Some(done) = &self.done else {
            return out;
        };
        loop {
            match done.try_recv() {
                Ok((ticket, answer)) => {
                    if let Some((waiter, pending)) = self.waiting.remove(&ticket) {
                        out.push((waiter, pending.finish(answer)));
                    }
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return out,
            }
        }
    }
}
