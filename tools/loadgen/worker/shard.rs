//! Many connections on one thread: one mio poll, each connection under its own token, stepped
//! when its socket is ready or when its wake time comes (a heap of wake times, so a turn costs
//! what happened in it, not the number of connections).
//!
//! With a thread per connection every answer cost the load generator a wakeup and a context
//! switch of its own; on a 2-core machine that CPU is taken from the nodes being measured, and
//! 2,000 connections meant 2,000 threads. A few shards (one per core by default) wake once
//! for every batch of answers the kernel has ready.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Registry, Token};

use super::Worker;
use crate::results::{empty_result, WorkerResult};

/// Readiness events taken per poll.
const EVENTS_PER_POLL: usize = 1024;

/// One connection to open on a shard: its number and the node to try first.
pub struct Assignment {
    pub conn: usize,
    pub first: usize,
}

/// A shard's poll and the connections it opened (or why one could not be opened).
pub struct Shard {
    poll: Poll,
    opened: Vec<Result<Worker, Box<WorkerResult>>>,
}

impl Shard {
    /// Opens every assigned connection's session (one after another; each is a round trip
    /// and a commit) and registers it with this shard's poll.
    pub fn open(
        assignments: &[Assignment],
        mut make: impl FnMut(&Assignment, Arc<Registry>, Token) -> Result<Worker, String>,
    ) -> io::Result<Shard> {
        let poll = Poll::new()?;
        let registry = Arc::new(poll.registry().try_clone()?);
        let opened = assignments
            .iter()
            .enumerate()
            .map(|(i, a)| {
                make(a, Arc::clone(&registry), Token(i))
                    .map_err(|e| Box::new(empty_result(a.conn, Some(e))))
            })
            .collect();
        Ok(Shard { poll, opened })
    }

    /// Runs every connection until it is done; `on_done` is told each time one finishes.
    /// Results come back in assignment order.
    pub fn run(self, start: Instant, on_done: impl Fn()) -> Vec<WorkerResult> {
        let Shard { mut poll, opened } = self;
        let n = opened.len();
        let mut results: Vec<Option<WorkerResult>> = (0..n).map(|_| None).collect();
        let mut workers: Vec<Option<Worker>> = Vec::with_capacity(n);
        for (i, o) in opened.into_iter().enumerate() {
            match o {
                Ok(w) if !w.has_nothing_to_send() => workers.push(Some(w)),
                Ok(w) => {
                    results[i] = Some(empty_result(w.conn, None));
                    workers.push(None);
                    on_done();
                }
                Err(r) => {
                    results[i] = Some(*r);
                    workers.push(None);
                    on_done();
                }
            }
        }
        for w in workers.iter_mut().flatten() {
            w.begin(start);
        }
        let mut timers = Timers::new(n);
        let mut due: Vec<usize> = (0..n).filter(|&i| workers[i].is_some()).collect();
        let mut queued = vec![true; n];
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        let mut running = due.len();
        // Ends a connection: its result is taken, its socket deregistered.
        let mut end = |i: usize, fatal: Option<String>, workers: &mut Vec<Option<Worker>>| {
            if let Some(w) = workers[i].take() {
                results[i] = Some(w.finish(fatal));
                on_done();
            }
        };
        while running > 0 {
            for i in due.drain(..) {
                queued[i] = false;
                let Some(w) = workers[i].as_mut() else {
                    continue;
                };
                match w.step() {
                    Ok(Some(wake)) => timers.set(i, wake),
                    Ok(None) => {
                        end(i, None, &mut workers);
                        running -= 1;
                    }
                    Err(e) => {
                        end(i, Some(e), &mut workers);
                        running -= 1;
                    }
                }
            }
            if running == 0 {
                break;
            }
            let timeout = timers.next().map(poll_timeout);
            match poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let message = format!("poll: {e}");
                    for i in 0..n {
                        if workers[i].is_some() {
                            end(i, Some(message.clone()), &mut workers);
                        }
                    }
                    break;
                }
            }
            let mut handle =
                |i: usize, r: Result<(), String>, workers: &mut Vec<Option<Worker>>| match r {
                    Ok(()) => {
                        if !std::mem::replace(&mut queued[i], true) {
                            due.push(i);
                        }
                    }
                    Err(e) => {
                        end(i, Some(e), workers);
                        running -= 1;
                    }
                };
            for event in events.iter() {
                let i = event.token().0;
                let closed = event.is_read_closed() || event.is_error();
                if let Some(w) = workers.get_mut(i).and_then(Option::as_mut) {
                    let r = w.on_ready(closed);
                    handle(i, r, &mut workers);
                }
            }
            let now = Instant::now();
            while let Some(i) = timers.pop_due(now) {
                if let Some(w) = workers[i].as_mut() {
                    let r = w.on_timer();
                    handle(i, r, &mut workers);
                }
            }
        }
        results
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.unwrap_or_else(|| empty_result(i, Some("never finished".into()))))
            .collect()
    }
}

/// Each connection's next wake time, in a heap. Setting a new time leaves the old entry in
/// the heap; it is recognised as stale (no longer the connection's time) and skipped.
struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    current: Vec<Option<Instant>>,
}

impl Timers {
    fn new(n: usize) -> Timers {
        Timers {
            heap: BinaryHeap::new(),
            current: vec![None; n],
        }
    }

    fn set(&mut self, i: usize, wake: Instant) {
        if self.current[i] != Some(wake) {
            self.current[i] = Some(wake);
            self.heap.push(Reverse((wake, i)));
        }
    }

    /// The earliest live wake time.
    fn next(&mut self) -> Option<Instant> {
        while let Some(&Reverse((t, i))) = self.heap.peek() {
            if self.current[i] == Some(t) {
                return Some(t);
            }
            self.heap.pop();
        }
        None
    }

    /// A connection whose wake time is at or before `now` (each once).
    fn pop_due(&mut self, now: Instant) -> Option<usize> {
        if self.next()? > now {
            return None;
        }
        let Reverse((_, i)) = self.heap.pop()?;
        self.current[i] = None;
        Some(i)
    }
}

/// How long to wait in epoll to wake at `wake`. epoll counts whole milliseconds (mio rounds
/// up), which would make open-loop sends up to 1 ms late; so wait the whole milliseconds in
/// epoll, and sleep (a high-resolution timer) through the last fraction, then only peek.
fn poll_timeout(wake: Instant) -> Duration {
    let left = wake.saturating_duration_since(Instant::now());
    let whole_ms = Duration::from_millis(left.as_millis() as u64);
    if whole_ms.is_zero() {
        std::thread::sleep(left);
    }
    whole_ms
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Timers;

    #[test]
    fn timers_pop_each_connection_once_at_its_latest_time() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut timers = Timers::new(3);
        timers.set(0, t0 + ms(5));
        timers.set(1, t0 + ms(1));
        timers.set(0, t0 + ms(2)); // moved earlier: the 5 ms entry is stale
        timers.set(2, t0 + ms(9));
        assert_eq!(timers.next(), Some(t0 + ms(1)));
        assert_eq!(timers.pop_due(t0 + ms(3)), Some(1));
        assert_eq!(timers.pop_due(t0 + ms(3)), Some(0));
        assert_eq!(
            timers.pop_due(t0 + ms(3)),
            None,
            "0's stale 5 ms entry is not due"
        );
        assert_eq!(timers.pop_due(t0 + ms(6)), None, "and never fires");
        assert_eq!(timers.pop_due(t0 + ms(9)), Some(2));
        assert_eq!(timers.next(), None);
    }
}
