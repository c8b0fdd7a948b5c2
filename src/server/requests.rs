//! The request table: client writes and reads in flight, their deadlines, and where each answer
//! goes, whatever protocol they came on.
//!
//! A write is proposed here when this node leads, or forwarded to the leader otherwise; either
//! way its answer comes when *this* node applies the entry that names it as origin. A read
//! waits for a read index from the core, then for the state machine to reach it.
//!
//! The table knows nothing of protocol syntax or sockets: `W` is whatever a front-end needs to
//! answer a write, `R` whatever it needs to serve a read. It only decides *which* request an
//! event answers and *why* one failed; the front-ends turn that into bytes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::raft::{Index, NodeId};

/// A write waiting for its entry to be applied.
#[derive(Debug)]
pub struct PendingWrite<W> {
    pub reply: W,
    /// The leader this write was forwarded to; `None` when proposed here.
    pub forwarded_to: Option<NodeId>,
}

/// A request whose deadline passed.
#[derive(Debug, PartialEq, Eq)]
pub enum Expired<W, R> {
    /// Its outcome is unknown: the entry may still commit.
    Write(W),
    /// It was not served: retrying is safe.
    Read(R),
}

#[derive(Debug)]
pub struct RequestTable<W, R> {
    writes: HashMap<u64, PendingWrite<W>>,
    /// Local proposal index -> request id, for noticing overwritten proposals.
    local_proposals: BTreeMap<Index, u64>,
    /// Reads waiting for their read index.
    reads: HashMap<u64, R>,
    /// Reads whose read index is known, waiting for `applied >= index`.
    reads_waiting_apply: Vec<(Index, u64, R)>,
    /// Deadlines in creation order (all requests share one timeout, so this is sorted).
    deadlines: VecDeque<(Instant, u64)>,
    next_req: u64,
    timeout: Duration,
}

impl<W, R> RequestTable<W, R> {
    /// Request ids start after `first_req` and must never repeat across restarts (a replayed
    /// entry from an earlier run must not answer a new request): callers pass microseconds
    /// since the epoch.
    pub fn new(first_req: u64, timeout: Duration) -> Self {
        RequestTable {
            writes: HashMap::new(),
            local_proposals: BTreeMap::new(),
            reads: HashMap::new(),
            reads_waiting_apply: Vec::new(),
            deadlines: VecDeque::new(),
            next_req: first_req,
            timeout,
        }
    }

    /// A fresh request id, with its deadline `timeout` from `now`.
    pub fn new_request(&mut self, now: Instant) -> u64 {
        self.next_req += 1;
        let deadline = now + self.timeout;
        assert!(
            self.deadlines.back().is_none_or(|(d, _)| *d <= deadline),
            "deadlines are queued in order"
        );
        self.deadlines.push_back((deadline, self.next_req));
        self.next_req
    }

    /// When request `req` started, while its deadline is still queued (for request latency).
    /// Ids and deadlines are queued in the same order, so a binary search finds it.
    pub fn started_at(&self, req: u64) -> Option<Instant> {
        let i = self
            .deadlines
            .binary_search_by_key(&req, |&(_, r)| r)
            .ok()?;
        let (deadline, _) = self.deadlines.get(i)?;
        deadline.checked_sub(self.timeout)
    }

    /// The earliest deadline, for the loop's poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|(at, _)| *at)
    }

    pub fn insert_write(&mut self, req: u64, reply: W, forwarded_to: Option<NodeId>) {
        self.writes.insert(
            req,
            PendingWrite {
                reply,
                forwarded_to,
            },
        );
    }

    /// This node proposed `req` as leader at `index`.
    pub fn insert_local_proposal(&mut self, index: Index, req: u64) {
        self.local_proposals.insert(index, req);
    }

    /// The request this node proposed at `index`, if any, forgotten (a configuration entry's
    /// apply answers it directly, not through `on_applied`'s origin).
    pub fn take_local_proposal(&mut self, index: Index) -> Option<u64> {
        self.local_proposals.remove(&index)
    }

    #[cfg(test)]
    pub fn has_write(&self, req: u64) -> bool {
        self.writes.contains_key(&req)
    }

    /// Removes the write `req`, for answering it (or failing it).
    pub fn take_write(&mut self, req: u64) -> Option<W> {
        self.writes.remove(&req).map(|w| w.reply)
    }

    /// The entry at `index` was applied; `ours` is its request id when this node is its origin.
    /// Returns the write it answers, and pushes onto `overwritten` the writes proposed here at
    /// or below `index` that a later leader overwrote: those are definitely not stored.
    pub fn on_applied(
        &mut self,
        index: Index,
        ours: Option<u64>,
        overwritten: &mut Vec<W>,
    ) -> Option<W> {
        while let Some((&at, &req)) = self.local_proposals.first_key_value() {
            if at > index {
                break;
            }
            self.local_proposals.pop_first();
            if at == index && ours == Some(req) {
                continue;
            }
            overwritten.extend(self.take_write(req));
        }
        ours.and_then(|req| self.take_write(req))
    }

    /// The state machine was replaced by a snapshot covering `index`: nothing this node
    /// proposed at or below it can still be answered from an apply. Returns those writes
    /// (their outcome is unknown: they may be in the snapshot).
    pub fn on_snapshot_installed(&mut self, index: Index) -> Vec<W> {
        let mut unknown = Vec::new();
        while let Some((&at, &req)) = self.local_proposals.first_key_value() {
            if at > index {
                break;
            }
            self.local_proposals.pop_first();
            unknown.extend(self.take_write(req));
        }
        unknown
    }

    /// Removes and returns the writes forwarded to `leader` (which lost office: they may or
    /// may not have been appended there).
    pub fn take_forwarded_to(&mut self, leader: NodeId) -> Vec<W> {
        let orphaned: Vec<u64> = self
            .writes
            .iter()
            .filter(|(_, w)| w.forwarded_to == Some(leader))
            .map(|(req, _)| *req)
            .collect();
        orphaned
            .into_iter()
            .filter_map(|req| self.take_write(req))
            .collect()
    }

    /// A read waiting for its read index under context `req`.
    pub fn insert_read(&mut self, req: u64, read: R) {
        self.reads.insert(req, read);
    }

    /// A read to serve once `applied >= index` (also used for `--testing-stale-reads`, with 0).
    pub fn insert_read_at(&mut self, index: Index, req: u64, read: R) {
        self.reads_waiting_apply.push((index, req, read));
    }

    /// The core granted read index `index` to context `req`.
    pub fn on_read_ready(&mut self, req: u64, index: Index) {
        if let Some(read) = self.reads.remove(&req) {
            self.reads_waiting_apply.push((index, req, read));
        }
    }

    /// The core could not serve the read `req`.
    pub fn on_read_failed(&mut self, req: u64) -> Option<R> {
        self.reads.remove(&req)
    }

    /// Removes and returns the reads whose read index is at most `applied`.
    pub fn take_servable(&mut self, applied: Index) -> Vec<R> {
        let mut servable = Vec::new();
        let mut i = 0;
        while i < self.reads_waiting_apply.len() {
            if self.reads_waiting_apply[i].0 <= applied {
                servable.push(self.reads_waiting_apply.swap_remove(i).2);
            } else {
                i += 1;
            }
        }
        servable
    }

    /// Removes and returns every request whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Expired<W, R>> {
        let mut expired = Vec::new();
        while let Some(&(deadline, req)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if let Some(write) = self.take_write(req) {
                self.local_proposals.retain(|_, r| *r != req);
                expired.push(Expired::Write(write));
            } else if let Some(read) = self.reads.remove(&req) {
                expired.push(Expired::Read(read));
            } else if let Some(pos) = self
                .reads_waiting_apply
                .iter()
                .position(|(_, r, _)| *r == req)
            {
                expired.push(Expired::Read(self.reads_waiting_apply.swap_remove(pos).2));
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn table() -> RequestTable<&'static str, &'static str> {
        RequestTable::new(1000, TIMEOUT)
    }

    #[test]
    fn a_write_is_answered_by_the_apply_that_names_it() {
        let mut t = table();
        let now = Instant::now();
        let req = t.new_request(now);
        t.insert_write(req, "alice", None);
        t.insert_local_proposal(7, req);
        let mut overwritten = Vec::new();
        assert_eq!(t.on_applied(6, None, &mut overwritten), None);
        assert_eq!(t.on_applied(7, Some(req), &mut overwritten), Some("alice"));
        assert!(overwritten.is_empty());
        assert!(!t.has_write(req));
        // Its deadline passing later answers nobody.
        assert!(t.expire(now + TIMEOUT).is_empty());
    }

    #[test]
    fn a_local_proposal_overwritten_by_another_leader_fails_as_not_stored() {
        let mut t = table();
        let now = Instant::now();
        let a = t.new_request(now);
        let b = t.new_request(now);
        t.insert_write(a, "a", None);
        t.insert_write(b, "b", None);
        t.insert_local_proposal(5, a);
        t.insert_local_proposal(6, b);
        let mut overwritten = Vec::new();
        // Index 5 was applied with another node's entry; b at 6 is still pending.
        assert_eq!(t.on_applied(5, None, &mut overwritten), None);
        assert_eq!(overwritten, vec!["a"]);
        assert!(t.has_write(b));
    }

    #[test]
    fn ids_grow_and_deadlines_expire_in_order_once() {
        let mut t = table();
        let now = Instant::now();
        let w = t.new_request(now);
        let r = t.new_request(now + Duration::from_millis(1));
        assert!(r > w && w > 1000);
        t.insert_write(w, "write", None);
        t.insert_local_proposal(3, w);
        t.insert_read(r, "read");
        assert_eq!(t.next_deadline(), Some(now + TIMEOUT));
        assert!(t
            .expire(now + TIMEOUT - Duration::from_millis(1))
            .is_empty());
        assert_eq!(t.expire(now + TIMEOUT), vec![Expired::Write("write")]);
        // The expired write is no longer a local proposal: a later apply at 3 fails nobody.
        let mut overwritten = Vec::new();
        assert_eq!(t.on_applied(3, None, &mut overwritten), None);
        assert!(overwritten.is_empty());
        assert_eq!(
            t.expire(now + TIMEOUT + Duration::from_secs(1)),
            vec![Expired::Read("read")]
        );
    }

    #[test]
    fn a_read_waits_for_its_read_index_then_for_the_apply() {
        let mut t = table();
        let req = t.new_request(Instant::now());
        t.insert_read(req, "chatLog");
        assert!(t.take_servable(100).is_empty(), "no read index yet");
        t.on_read_ready(req, 10);
        assert!(t.take_servable(9).is_empty());
        assert_eq!(t.take_servable(10), vec!["chatLog"]);
        assert!(t.take_servable(10).is_empty(), "served once");
    }

    #[test]
    fn a_failed_read_is_returned_once() {
        let mut t = table();
        let req = t.new_request(Instant::now());
        t.insert_read(req, "rooms");
        assert_eq!(t.on_read_failed(req), Some("rooms"));
        assert_eq!(t.on_read_failed(req), None);
        t.on_read_ready(req, 1);
        assert!(t.take_servable(1).is_empty());
    }

    #[test]
    fn writes_forwarded_to_a_deposed_leader_are_returned() {
        let mut t = table();
        let now = Instant::now();
        let (a, b, c) = (t.new_request(now), t.new_request(now), t.new_request(now));
        t.insert_write(a, "to-1", Some(1));
        t.insert_write(b, "to-2", Some(2));
        t.insert_write(c, "local", None);
        assert_eq!(t.take_forwarded_to(1), vec!["to-1"]);
        assert!(t.has_write(b) && t.has_write(c) && !t.has_write(a));
    }

    #[test]
    fn a_snapshot_install_ends_local_proposals_it_covers() {
        let mut t = table();
        let now = Instant::now();
        let (a, b) = (t.new_request(now), t.new_request(now));
        t.insert_write(a, "a", None);
        t.insert_write(b, "b", None);
        t.insert_local_proposal(10, a);
        t.insert_local_proposal(20, b);
        assert_eq!(t.on_snapshot_installed(15), vec!["a"]);
        assert!(t.has_write(b));
    }
}
