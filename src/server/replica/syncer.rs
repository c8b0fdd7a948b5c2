//! The fsync helper thread: the event loop writes a batch (one `write`) and hands the
//! `fdatasync` to this thread, which reports back through a `mio::Waker`. The loop keeps
//! reading, replicating and batching while the disk flushes.
//!
//! Group commit happens here: the thread takes every job queued while its last fdatasync ran
//! and flushes them with one fdatasync (`sync_batch`), so many loop turns' small writes share
//! one disk flush. The loop never stalls on the disk.

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

/// Group commit: one fdatasync for every job queued while the previous one ran. The newest
/// job's sync covers the older ones' writes (see `SyncJob::complete_with`), so a burst of small
/// writes from many loop turns costs one disk flush, not one each. Jobs go back in order.
/// False once the loop is gone.
fn sync_batch(batch: &mut Vec<SyncJob>, done: &Sender<SyncJob>) -> bool {
    let Some((newest, older)) = batch.split_last_mut() else {
        return true;
    };
    newest.run();
    for job in older {
        job.complete_with(newest);
    }
    batch.drain(..).all(|job| done.send(job).is_ok())
}

impl Syncer {
    pub(super) fn start(waker: Arc<Waker>) -> std::io::Result<Syncer> {
        let (to_thread, jobs) = channel::<SyncJob>();
        let (done, from_thread) = channel::<SyncJob>();
        std::thread::Builder::new()
            .name("fsync".into())
            .spawn(move || {
                // The thread ends with the loop (when `jobs` disconnects).
                let mut batch = Vec::new();
                while let Ok(first) = jobs.recv() {
                    batch.push(first);
                    batch.extend(jobs.try_iter());
                    if !sync_batch(&mut batch, &done) {
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;

    use super::sync_batch;
    use crate::raft::{Entry, EntryKind};
    use crate::storage::{Wal, WalOptions};

    #[test]
    fn a_batch_of_queued_writes_costs_one_fdatasync_and_every_job_comes_back_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut wal, _) = Wal::open(WalOptions::new(dir.path(), 1, 0)).expect("wal");
        let mut batch = Vec::new();
        for index in 1..=3 {
            wal.append(&[Entry::new(1, index, EntryKind::Normal, b"m")])
                .expect("append");
            batch.push(wal.write_buffered().expect("write"));
        }
        let (done, back) = channel();
        assert!(sync_batch(&mut batch, &done));
        assert!(batch.is_empty());
        let jobs: Vec<_> = back.try_iter().collect();
        assert_eq!(
            jobs.iter().map(|j| j.last_index()).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let fsyncs: Vec<bool> = jobs.iter().map(|j| j.fsync_duration().is_some()).collect();
        assert_eq!(
            fsyncs,
            vec![false, false, true],
            "only the newest job syncs"
        );
        for (job, index) in jobs.into_iter().zip(1..) {
            assert_eq!(wal.synced(job).expect("covered by the group's sync"), index);
        }
    }
}
