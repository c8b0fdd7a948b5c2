//! Password hashing off the event loop: one worker thread computes and checks argon2 hashes.
//!
//! An argon2 hash is deliberately slow and memory-hard (the crate's defaults: Argon2id, 19 MiB,
//! 2 passes, tens of milliseconds). Run on the node's mio loop, every `login` would stall every
//! other client's replies for that long. So the loop only hands a [`Job`] to this thread
//! through a std channel and carries on; the thread does the work, sends a [`Done`] back and
//! wakes the loop with the node's `mio::Waker` (the same way the WAL syncer reports finished
//! fsyncs), and the node drains finished jobs with [`AccountWorker::finished`].
//!
//! Jobs in flight are bounded ([`JOBS_IN_FLIGHT_MAX`]): past it a request is refused at once
//! rather than queued behind a flood of logins. Passwords live only in the job and are
//! dropped once hashed; nothing here logs them.

use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use mio::Waker;

/// Hash jobs queued or running at once, node-wide; more are refused with "busy".
pub const JOBS_IN_FLIGHT_MAX: usize = 64;

/// What to compute.
pub enum Work {
    /// A new PHC hash of the password, with a fresh random salt.
    Hash { password: String },
    /// Whether the password matches the PHC hash.
    Verify { hash: String, password: String },
    /// `Verify` against `hash` with `old`, and if it matches, a new hash of `new`.
    Rehash {
        hash: String,
        old: String,
        new: String,
    },
}

pub struct Job {
    /// The caller's number for the job, handed back in [`Done`].
    pub ticket: u64,
    pub work: Work,
}

/// What a job found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `Hash`, or `Rehash` whose old password matched: the new PHC string.
    Hashed(String),
    /// `Verify` matched.
    Verified,
    /// `Verify` or `Rehash`: the password did not match (or the stored hash is unreadable).
    WrongPassword,
    /// Hashing itself failed (never expected with valid parameters); the reason.
    Failed(String),
}

pub struct Done {
    pub ticket: u64,
    pub verdict: Verdict,
}

/// The worker thread and its two channels.
pub struct AccountWorker {
    jobs: Sender<Job>,
    done: Receiver<Done>,
    in_flight: usize,
}

impl AccountWorker {
    /// Starts the thread; `waker` wakes the node's loop when a job is done.
    pub fn start(waker: Arc<Waker>) -> std::io::Result<AccountWorker> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel::<Done>();
        thread::Builder::new()
            .name("accounts".into())
            .spawn(move || {
                // Ends when the node drops its sender.
                while let Ok(job) = job_rx.recv() {
                    let verdict = run(job.work);
                    if done_tx
                        .send(Done {
                            ticket: job.ticket,
                            verdict,
                        })
                        .is_err()
                    {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(AccountWorker {
            jobs,
            done,
            in_flight: 0,
        })
    }

    /// Queues a job; `Err` (with the job's words for the client) when too many are in flight
    /// or the thread is gone.
    pub fn submit(&mut self, job: Job) -> Result<(), String> {
        if self.in_flight >= JOBS_IN_FLIGHT_MAX {
            return Err("busy: too many logins in progress, try again".to_string());
        }
        self.jobs
            .send(job)
            .map_err(|_| "account worker stopped: try again later".to_string())?;
        self.in_flight += 1;
        Ok(())
    }

    /// Finished jobs, without blocking.
    pub fn finished(&mut self) -> Vec<Done> {
        let mut done = Vec::new();
        loop {
            match self.done.try_recv() {
                Ok(d) => {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    done.push(d);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return done,
            }
        }
    }

    /// Jobs queued or running.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

fn hash(password: &str) -> Verdict {
    let salt = SaltString::generate(&mut OsRng);
    match Argon2::default().hash_password(password.as_bytes(), &salt) {
        Ok(phc) => Verdict::Hashed(phc.to_string()),
        Err(e) => Verdict::Failed(format!("cannot hash password: {e}")),
    }
}

fn verify(stored: &str, password: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// The work itself (also callable directly by tests).
pub fn run(work: Work) -> Verdict {
    match work {
        Work::Hash { password } => hash(&password),
        Work::Verify { hash, password } => {
            if verify(&hash, &password) {
                Verdict::Verified
            } else {
                Verdict::WrongPassword
            }
        }
        Work::Rehash {
            hash: stored,
            old,
            new,
        } => {
            if verify(&stored, &old) {
                hash(&new)
            } else {
                Verdict::WrongPassword
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::validate::validate_password_hash;

    #[test]
    fn hash_verify_rehash() {
        let Verdict::Hashed(phc) = run(Work::Hash {
            password: "s3cret-pw".into(),
        }) else {
            panic!("no hash")
        };
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains("s3cret-pw"));
        assert!(validate_password_hash(&phc).is_ok());
        // A fresh salt each time: the same password hashes differently.
        let Verdict::Hashed(again) = run(Work::Hash {
            password: "s3cret-pw".into(),
        }) else {
            panic!("no hash")
        };
        assert_ne!(phc, again);
        let verify = |password: &str| {
            run(Work::Verify {
                hash: phc.clone(),
                password: password.into(),
            })
        };
        assert_eq!(verify("s3cret-pw"), Verdict::Verified);
        assert_eq!(verify("s3cret-pX"), Verdict::WrongPassword);
        let garbage = run(Work::Verify {
            hash: "$argon2id$garbage".into(),
            password: "s3cret-pw".into(),
        });
        assert_eq!(garbage, Verdict::WrongPassword);
        let wrong_old = run(Work::Rehash {
            hash: phc.clone(),
            old: "nope-nope".into(),
            new: "n3w-pw".into(),
        });
        assert_eq!(wrong_old, Verdict::WrongPassword);
        let Verdict::Hashed(new_phc) = run(Work::Rehash {
            hash: phc,
            old: "s3cret-pw".into(),
            new: "n3w-pw-12".into(),
        }) else {
            panic!("no rehash")
        };
        let check = run(Work::Verify {
            hash: new_phc,
            password: "n3w-pw-12".into(),
        });
        assert_eq!(check, Verdict::Verified);
    }
}
