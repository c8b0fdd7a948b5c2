//! The fsync helper thread: the event loop writes a batch (one `write`) and hands the
//! `fdatasync` to this thread, which reports back through a `mio::Waker`. The loop keeps
//! reading, replicating and batching while the disk flushes.
//!
//! Measured against syncing inline with `cargo bench --bench wal` (see the README): the helper
//! with two syncs in flight is about as fast for small batches and up to 1.9x faster for large
//! ones, and the loop never stalls on the disk. It is the only thread a node starts.

use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;

use mio::Waker;

use crate::storage::SyncJob;

/// Syncs in flight at most; while this many are outstanding the driver lets proposals
/// accumulate in the core, so the next batch is larger (group commit). Measured with
/// `tools/perf.sh` (64 connections x depth 64): 2 in flight gave 138k msgs/s, 8 gave 225k,
/// 32 gave 200k-225k (within this machine's disk noise). Few are needed for batching; a low
/// cap mostly delays sends and replies, since no Ready is taken while the queue is full.
pub(super) const SYNCS_IN_FLIGHT_MAX: usize = 32;

pub(super) struct Syncer {
    to_thread: Option<Sender<SyncJob>>,
    from_thread: Receiver<SyncJob>,
    in_flight: usize,
    /// Jobs synced on the loop's thread because the helper was gone; answered first.
    inline_done: Vec<SyncJob>,
}

impl Syncer {
    pub(super) fn start(waker: Arc<Waker>) -> std::io::Result<Syncer> {
        let (to_thread, jobs) = channel::<SyncJob>();
        let (done, from_thread) = channel::<SyncJob>();
        std::thread::Builder::new()
            .name("fsync".into())
            .spawn(move || {
                // Jobs are run in the order they were written; the thread ends with the loop.
                for mut job in jobs {
                    job.run();
                    if done.send(job).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(Syncer {
            to_thread: Some(to_thread),
            from_thread,
            in_flight: 0,
            inline_done: Vec::new(),
        })
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub(super) fn submit(&mut self, job: SyncJob) {
        match &self.to_thread {
            Some(tx) => match tx.send(job) {
                Ok(()) => self.in_flight += 1,
                // The thread is gone (it cannot panic, but be safe): sync here instead.
                Err(std::sync::mpsc::SendError(job)) => {
                    self.to_thread = None;
                    self.ran_inline(job)
                }
            },
            None => self.ran_inline(job),
        }
    }

    fn ran_inline(&mut self, mut job: SyncJob) {
        job.run();
        self.inline_done.push(job);
    }

    /// A finished job, if any (in submission order). `block` waits for one if any is in flight.
    pub(super) fn finished(&mut self, block: bool) -> Option<SyncJob> {
        if !self.inline_done.is_empty() {
            return Some(self.inline_done.remove(0));
        }
        if self.in_flight == 0 {
            return None;
        }
        let job = if block {
            self.from_thread.recv().ok()
        } else {
            match self.from_thread.try_recv() {
                Ok(job) => Some(job),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => None,
            }
        };
        if job.is_some() {
            self.in_flight -= 1;
        }
        job
    }
}
