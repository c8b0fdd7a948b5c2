//! Sealing's disk work, off the appending thread (the event loop).
//!
//! Sealing a segment means: its data durable, then its index file durable and named, then the
//! directory durable. Done where the segment fills (inside `History::append`, on the event
//! loop), the fsync of up to `segment_bytes` (64 MiB) of fresh data stalled the loop: the
//! seal log lines measured 33 ms at the median and 73 ms at worst during a 1 M x 1,000 B fill
//! (`MESSAGES=1000000 SIZE=1000 PHASES=fill bash tools/history_bench.sh`). So the store does
//! the cheap part itself (flush, build the index, write it to `<index>.tmp`, start the next
//! segment) and hands this thread a [`SealJob`] for the rest. One thread, jobs in order.
//!
//! Until a job is done its segment is *pending*: readable (its data and index are in the page
//! cache, read through open files that survive the rename), but not yet durable. What relies
//! on durability waits for it: `History::begin_sync` fsyncs pending segments too, and
//! retention never deletes one. A crash while a seal is pending leaves a segment without a
//! named index followed by a newer one; `History::open` rebuilds its index if its data is
//! whole, or cuts its torn tail and deletes the newer segments (whose messages the Raft log
//! still holds: no snapshot covered them, since covering them needs the sync above).
//!
//! A failed job poisons the store (as a failed fsync on the caller's thread would): later
//! jobs are dropped unrun, and the store refuses appends until it is reopened.

use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::segment;
use crate::storage::StorageError;

/// The rest of one seal (see the module docs).
#[derive(Debug)]
pub(super) struct SealJob {
    pub(super) segment: Arc<File>,
    pub(super) segment_path: PathBuf,
    pub(super) index: Arc<File>,
    pub(super) index_tmp: PathBuf,
    pub(super) index_path: PathBuf,
    pub(super) fsync: bool,
    /// Set once the segment and its named index are durable.
    pub(super) durable: Arc<AtomicBool>,
}

impl SealJob {
    fn run(&self) -> Result<(), StorageError> {
        if self.fsync {
            self.segment.sync_data().map_err(|e| {
                StorageError::io(format!("fsync {}", self.segment_path.display()), e)
            })?;
            self.index
                .sync_all()
                .map_err(|e| StorageError::io(format!("fsync {}", self.index_tmp.display()), e))?;
        }
        fs::rename(&self.index_tmp, &self.index_path)
            .map_err(|e| StorageError::io(format!("renaming {}", self.index_tmp.display()), e))?;
        if self.fsync {
            if let Some(dir) = self.index_path.parent() {
                segment::sync_dir(dir)?;
            }
        }
        self.durable.store(true, Ordering::Release);
        Ok(())
    }
}

/// What the thread is handed: a seal, or a barrier answered once every seal before it is done.
#[derive(Debug)]
enum Work {
    Seal(SealJob),
    Barrier(Sender<()>),
}

/// The sealing thread of one store; dropping it waits for the jobs already handed over.
#[derive(Debug)]
pub(super) struct Sealer {
    jobs: Option<Sender<Work>>,
    thread: Option<JoinHandle<()>>,
    failed: Arc<Failed>,
}

/// Why the first failed job failed. The flag lets `failure` (asked on every append) answer
/// without the lock in the common case.
#[derive(Debug, Default)]
struct Failed {
    any: AtomicBool,
    why: Mutex<Option<String>>,
}

impl Failed {
    fn note(&self, e: &StorageError) {
        log::error!("message store: sealing failed: {e}");
        if let Ok(mut why) = self.why.lock() {
            why.get_or_insert_with(|| e.to_string());
        }
        self.any.store(true, Ordering::Release);
    }

    fn get(&self) -> Option<String> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.why.lock().ok().and_then(|why| why.clone())
    }
}

impl Sealer {
    /// Starts the thread; without one (it could not be spawned) jobs run on the caller's
    /// thread, as before this module.
    pub(super) fn start() -> Sealer {
        let failed = Arc::new(Failed::default());
        let (jobs, rx) = mpsc::channel::<Work>();
        let shared = Arc::clone(&failed);
        let thread = std::thread::Builder::new()
            .name("store-seal".into())
            .spawn(move || {
                while let Ok(work) = rx.recv() {
                    let job = match work {
                        Work::Seal(job) => job,
                        Work::Barrier(done) => {
                            let _ = done.send(());
                            continue;
                        }
                    };
                    if shared.get().is_some() {
                        continue; // poisoned: later seals are dropped unrun
                    }
                    if let Err(e) = job.run() {
                        shared.note(&e);
                    }
                }
            });
        match thread {
            Ok(thread) => Sealer {
                jobs: Some(jobs),
                thread: Some(thread),
                failed,
            },
            Err(e) => {
                log::warn!("message store: no sealing thread ({e}); sealing inline");
                Sealer {
                    jobs: None,
                    thread: None,
                    failed,
                }
            }
        }
    }

    /// Hands a job over (or runs it here when there is no thread).
    pub(super) fn submit(&self, job: SealJob) {
        let job = match &self.jobs {
            Some(jobs) => match jobs.send(Work::Seal(job)) {
                Ok(()) => return,
                Err(mpsc::SendError(Work::Seal(job))) => job,
                Err(mpsc::SendError(Work::Barrier(_))) => return,
            },
            None => job,
        };
        if let Err(e) = job.run() {
            self.failed.note(&e);
        }
    }

    /// Blocks until every job handed over so far is done.
    pub(super) fn wait(&self) {
        let Some(jobs) = &self.jobs else {
            return; // jobs ran inline
        };
        let (done, finished) = mpsc::channel();
        if jobs.send(Work::Barrier(done)).is_ok() {
            let _ = finished.recv();
        }
    }

    /// Why a job failed, if one did.
    pub(super) fn failure(&self) -> Option<String> {
        self.failed.get()
    }
}

impl Drop for Sealer {
    fn drop(&mut self) {
        self.jobs = None; // ends the thread's loop once the queued jobs are done
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
