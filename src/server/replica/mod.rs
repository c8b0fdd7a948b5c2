//! The replica driver: the Raft core, the write-ahead log with its fsync thread, snapshots and
//! the chat state machine, driven in the order the core's durability contract demands.
//!
//! It never touches a socket. A front-end asks it to [`propose`](Replica::propose), to
//! [`read_index`](Replica::read_index) or to transfer leadership; the node hands it what peers
//! sent ([`step`](Replica::step), snapshot chunks and acks) and the clock
//! ([`tick`](Replica::tick)). What happened comes back as plain values from
//! [`drive`](Replica::drive): Raft messages to send, and [`Event`]s (applied entries with their
//! outcomes, read indexes, leadership changes, an installed snapshot) in the order they
//! happened. Unit tests therefore run it in-process (`tests.rs` beside this file).
//!
//! # The order of side effects (the core's contract, see `raft`'s module docs)
//!
//! For each `Ready`: (1) its messages leave (a leader's appends go out before its own write,
//! Ongaro §10.2.1); a snapshot it names is installed before its entries; (2) its entries and
//! hard state are written in one `write` and fsynced on the helper thread; (3) only after that
//! fsync do its `persisted_messages` (votes, acknowledgements) leave, and (4) the core is told
//! `advance(number)`, strictly in Ready order; (5) committed entries are applied.

mod fetch;
mod members;
mod open;
mod snapshot;
mod stats;
mod syncer;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::chat::{Applied, SessionConfig, StateMachine};
use crate::raft::{
    EntryKind, Index, Message, MessageBody, NodeId, Raft, RaftError, Ready, Role, SnapshotMeta,
    SoftState, Status, Term,
};
use crate::storage::Wal;
use crate::wire;

pub use open::ReplicaOptions;
use snapshot::{ChunkOutcome, Cleanup, Snapshots};
pub use stats::ReplicaStats;
use syncer::{Syncer, SYNCS_IN_FLIGHT_MAX};

use super::error::ServerError;

/// Something that happened inside the replica, for the request table and the front-ends.
#[derive(Debug)]
pub enum Event {
    /// The role, term or leader changed.
    Leadership { old: SoftState, new: SoftState },
    /// The state machine was replaced by a snapshot from the leader covering `meta.index`.
    SnapshotInstalled(SnapshotMeta),
    /// The entry at `index` was applied with this result.
    Applied { index: Index, applied: Applied },
    /// The read with context `ctx` may be served once `applied_index() >= index`.
    ReadReady { ctx: u64, index: Index },
    /// The read with context `ctx` cannot be served (leadership lost or unknown).
    ReadFailed {
        ctx: u64,
        leader_hint: Option<NodeId>,
    },
    /// The configuration entry at `index` was applied to the member table.
    MemberChanged {
        index: Index,
        change: crate::chat::members::MemberChange,
    },
}

/// What one [`Replica::drive`] produced: messages for peers and events, each in order.
#[derive(Debug, Default)]
pub struct Output {
    pub messages: Vec<Message>,
    pub events: Vec<Event>,
}

/// A Ready whose writes are not yet durable: its acknowledgements wait here, in order.
struct Unsynced {
    number: u64,
    persisted_messages: Vec<Message>,
    /// False once its fsync finished (or it had nothing to persist).
    syncing: bool,
}

pub struct Replica {
    id: NodeId,
    opts: ReplicaOptions,
    raft: Raft,
    wal: Wal,
    syncer: Syncer,
    snapshots: Snapshots,
    sm: StateMachine,
    /// The term of the entry at `sm.applied_index()` (a snapshot's meta needs it).
    applied_term: Term,
    /// Payload bytes applied since the last snapshot was captured.
    applied_bytes_since_snapshot: u64,
    /// Readies in order, oldest first, waiting for their fsync before `advance`.
    unsynced: VecDeque<Unsynced>,
    soft: SoftState,
    stats: ReplicaStats,
    /// The log index the last counted fdatasync made durable (for entries-per-sync).
    durable_index: Index,
    /// The term and vote last handed to the WAL. A hard state that changes only the commit
    /// index rides with the next write instead of costing an fdatasync of its own.
    written_vote: Option<(Term, Option<NodeId>)>,
    /// Addresses from appended configuration entries, and the configuration last reported
    /// (`members.rs`).
    members: members::MemberState,
    /// A snapshot received from the leader, restored to read its members before the core was
    /// asked to install it; used by the install that follows.
    restored: Option<(SnapshotMeta, StateMachine)>,
    /// Follower: the message history a received snapshot needs, being fetched (`fetch.rs`).
    fetch: Option<fetch::Fetch>,
}

impl Replica {
    /// The chat state machine, for serving reads and live delivery.
    pub fn sm(&self) -> &StateMachine {
        &self.sm
    }

    pub fn role(&self) -> Role {
        self.raft.role()
    }

    pub fn is_leader(&self) -> bool {
        self.raft.role() == Role::Leader
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.raft.leader()
    }

    pub fn term(&self) -> Term {
        self.raft.term()
    }

    pub fn commit_index(&self) -> Index {
        self.raft.commit_index()
    }

    pub fn first_index(&self) -> Index {
        self.raft.first_index()
    }

    pub fn snapshot(&self) -> Option<SnapshotMeta> {
        self.raft.snapshot()
    }

    pub fn status(&self) -> Status {
        self.raft.status()
    }

    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// fdatasyncs handed to the helper thread and not yet back.
    pub fn syncs_in_flight(&self) -> usize {
        self.syncer.in_flight()
    }

    /// Bytes written to the write-ahead log since the node started.
    pub fn wal_bytes_written(&self) -> u64 {
        self.wal.bytes_written()
    }

    /// Logical time: the node calls this every heartbeat interval.
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Appends `data` to the log as leader; its outcome arrives as [`Event::Applied`].
    pub fn propose(&mut self, data: &[u8]) -> Result<Index, RaftError> {
        self.raft.propose(data)
    }

    /// Asks for a read index; the answer is [`Event::ReadReady`] or [`Event::ReadFailed`].
    pub fn read_index(&mut self, ctx: u64) -> Result<(), RaftError> {
        self.raft.read_index(ctx)
    }

    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), RaftError> {
        self.raft.transfer_leadership(to)
    }

    /// A Raft message from peer `from` (already checked to come from that peer).
    pub fn step(&mut self, msg: Message) {
        if let MessageBody::InstallSnapshot { snapshot, .. } = msg.body {
            // A snapshot arrives as chunks, and this node steps the InstallSnapshot itself once
            // the whole file is in (`on_snapshot_chunk`); one on its own carries no data.
            log::debug!(
                "node {}: dropped an InstallSnapshot (index {}) from node {}",
                self.id,
                snapshot.index,
                msg.from
            );
            return;
        }
        if let MessageBody::AppendEntriesResponse { .. } | MessageBody::HeartbeatResponse { .. } =
            msg.body
        {
            if let Some(sent) = self.stats.awaiting_response.remove(&msg.from) {
                let rtt = self.stats.round_trip_seconds.entry(msg.from).or_default();
                rtt.observe_duration(sent.elapsed());
            }
        }
        self.raft.step(msg);
    }

    /// Follower: a chunk of the leader's snapshot file. Returns how many bytes to acknowledge.
    /// Once the file is complete and verified the core decides whether to install it.
    pub fn on_snapshot_chunk(
        &mut self,
        from: NodeId,
        term: Term,
        snapshot: SnapshotMeta,
        total_len: u64,
        offset: u64,
        data: &[u8],
    ) -> u64 {
        match self
            .snapshots
            .on_chunk(from, term, snapshot, total_len, offset, data)
        {
            ChunkOutcome::Ack { received } => received,
            ChunkOutcome::Complete { term, meta } => {
                if self.on_file_received(from, term, meta, Instant::now()) {
                    total_len
                } else {
                    0
                }
            }
        }
    }

    /// A complete, verified snapshot file for `meta` from `from`. If it leaves messages to the
    /// message store that this node's store lacks, they are fetched first (`fetch.rs`; the file
    /// waits, parked); otherwise it is installed now. False if it was refused.
    fn on_file_received(
        &mut self,
        from: NodeId,
        term: Term,
        meta: SnapshotMeta,
        now: Instant,
    ) -> bool {
        let stored_through = match self.snapshots.received_stored_through(meta) {
            Ok(n) => n,
            Err(e) => {
                log::error!("node {}: snapshot {} refused: {e}", self.id, meta.index);
                self.snapshots.discard_received(meta);
                return false;
            }
        };
        if stored_through > meta.index {
            // Each message is one applied entry: a header claiming more is damaged.
            log::error!(
                "node {}: snapshot {} refused: its header says the store holds {stored_through} messages, more than its {} entries",
                self.id,
                meta.index,
                meta.index
            );
            self.snapshots.discard_received(meta);
            return false;
        }
        let have = match self.sm.store().map(|s| s.lock()) {
            Some(Ok(store)) => Some(store.last_position()),
            // Restoring a body that needs a store fails without one, with a logged reason.
            Some(Err(_)) | None => None,
        };
        let Some(have) = have.filter(|&have| stored_through > have) else {
            self.fetch = None;
            return self.install_received(from, term, meta);
        };
        if let Err(e) = self.snapshots.park_received(meta) {
            log::error!("node {}: snapshot {} refused: {e}", self.id, meta.index);
            self.snapshots.discard_received(meta);
            return false;
        }
        if self
            .fetch
            .as_ref()
            .is_some_and(|f| f.meta == meta && f.from == from)
        {
            return true; // the same file again (the core resent it): the fetch goes on
        }
        log::info!(
            "node {}: snapshot {} from node {from} needs message positions {}..={}; fetching them",
            self.id,
            meta.index,
            have + 1,
            stored_through
        );
        self.fetch = Some(fetch::Fetch::new(
            from,
            term,
            meta,
            stored_through,
            have,
            now,
        ));
        true
    }

    /// Restores the received file for `meta` (the core takes the snapshot's configuration with
    /// it) and steps `InstallSnapshot` from `from` into the core. False if it was refused.
    fn install_received(&mut self, from: NodeId, term: Term, meta: SnapshotMeta) -> bool {
        if let Err(e) = self.snapshots.unpark_received(meta) {
            log::error!("node {}: snapshot {} refused: {e}", self.id, meta.index);
            self.snapshots.discard_received(meta);
            return false;
        }
        // Read the configuration from the file now (the restored machine is kept for the
        // install that follows).
        let sm = match self.restore_received(meta) {
            Ok(sm) => sm,
            Err(e) => {
                log::error!("node {}: snapshot {} refused: {e}", self.id, meta.index);
                self.snapshots.discard_received(meta);
                return false;
            }
        };
        let membership = members::membership_of(sm.members());
        self.restored = Some((meta, sm));
        self.raft.step(Message {
            from,
            to: self.id,
            term,
            body: MessageBody::InstallSnapshot {
                snapshot: meta,
                membership,
            },
        });
        if self.raft.snapshot() != Some(meta) {
            self.restored = None;
            self.snapshots.discard_received(meta);
        }
        true
    }

    /// Follower: a page of the history being fetched for `snapshot`, from `from`. Once the
    /// store holds all the snapshot needs, the snapshot is installed.
    pub fn on_history_page(
        &mut self,
        from: NodeId,
        snapshot: SnapshotMeta,
        first_position: u64,
        count: u32,
        messages: &[u8],
    ) {
        let now = Instant::now();
        let Some(f) = self
            .fetch
            .as_mut()
            .filter(|f| f.meta == snapshot && f.from == from)
        else {
            log::info!(
                "node {}: dropped a history page (snapshot {}, position {first_position}) from node {from}: no such fetch",
                self.id,
                snapshot.index
            );
            return;
        };
        let Some(store) = self.sm.store().cloned() else {
            self.fetch = None;
            return;
        };
        match f.on_page(&store, first_position, count, messages, now) {
            Ok(complete) => {
                self.stats.history_fetched_bytes += messages.len() as u64;
                self.stats.history_fetched_pages += 1;
                if !complete {
                    return;
                }
                let Some(f) = self.fetch.take() else {
                    return;
                };
                log::info!(
                    "node {}: fetched positions through {} for snapshot {} from node {} ({} bytes in {} pages, {:.1?}); installing it",
                    self.id,
                    f.stored_through,
                    snapshot.index,
                    f.from,
                    f.bytes,
                    f.pages,
                    now.duration_since(f.started)
                );
                self.install_received(f.from, f.term, snapshot);
            }
            Err(fetch::PageError::Refused(why)) => log::warn!(
                "node {}: history page (snapshot {}, position {first_position}) from node {from} refused: {why}",
                self.id,
                snapshot.index
            ),
            Err(fetch::PageError::Store(why)) => {
                log::error!(
                    "node {}: the message store cannot take the history of snapshot {}: {why}; fetch dropped",
                    self.id,
                    snapshot.index
                );
                self.fetch = None;
                self.snapshots.discard_received(snapshot);
            }
        }
    }

    /// Follower: `from` cannot serve the history of `snapshot`: the fetch ends (the core sends
    /// InstallSnapshot again, maybe of a newer snapshot).
    pub fn on_history_refused(
        &mut self,
        from: NodeId,
        snapshot: SnapshotMeta,
        from_position: u64,
        reason: &str,
    ) {
        if !self
            .fetch
            .as_ref()
            .is_some_and(|f| f.meta == snapshot && f.from == from)
        {
            return;
        }
        log::warn!(
            "node {}: node {from} refused the history of snapshot {} from position {from_position}: {reason}; fetch dropped",
            self.id,
            snapshot.index
        );
        self.fetch = None;
        self.snapshots.discard_received(snapshot);
    }

    /// Any node: `from` asks for positions `from_position..=through` of the history of
    /// `snapshot`; the answer (a page, or a refusal) is encoded into `out`.
    pub fn on_history_request(
        &mut self,
        from: NodeId,
        snapshot: SnapshotMeta,
        from_position: u64,
        through: u64,
        out: &mut Vec<u8>,
    ) {
        let latest = self.snapshots.latest_meta();
        let answer = match (latest, self.sm.store()) {
            (_, None) => Err("this node keeps no message store".to_string()),
            (Some(latest), Some(store)) if latest.index >= snapshot.index => {
                fetch::serve(store, from_position, through)
            }
            (latest, _) => Err(format!(
                "this node no longer has snapshot {} (its latest: {:?})",
                snapshot.index,
                latest.map(|m| m.index)
            )),
        };
        match answer {
            Ok((count, messages)) => {
                self.stats.history_served_bytes += messages.len() as u64;
                wire::encode_history_page(snapshot, from_position, count, &messages, out);
            }
            Err(why) => {
                log::warn!(
                    "node {}: refused node {from} the history of snapshot {} from position {from_position}: {why}",
                    self.id,
                    snapshot.index
                );
                wire::encode_history_refused(snapshot, from_position, &why, out);
            }
        }
    }

    /// Leader: follower `from` holds `received` bytes of snapshot `meta`.
    pub fn on_snapshot_ack(&mut self, from: NodeId, meta: SnapshotMeta, received: u64) {
        self.snapshots.on_ack(from, meta, received, Instant::now());
    }

    /// Leader: hands `send` the snapshot chunk frames each follower's window allows; `send`
    /// returns false when the link to that follower cannot take them now.
    pub fn pump_snapshots(
        &mut self,
        now: Instant,
        mut send: impl FnMut(NodeId, &mut dyn FnMut(&mut Vec<u8>)) -> bool,
    ) {
        self.snapshots.pump(now, &mut send);
        self.pump_fetch(now, send);
    }

    /// Follower: sends the history requests the fetch wants now; drops an abandoned fetch.
    fn pump_fetch(
        &mut self,
        now: Instant,
        mut send: impl FnMut(NodeId, &mut dyn FnMut(&mut Vec<u8>)) -> bool,
    ) {
        let Some(f) = self.fetch.as_mut() else {
            return;
        };
        if f.abandoned(now) {
            log::warn!(
                "node {}: the history fetch for snapshot {} made no progress for {:.0?}; abandoned",
                self.id,
                f.meta.index,
                snapshot::ABANDON
            );
            let meta = f.meta;
            self.fetch = None;
            self.snapshots.discard_received(meta);
            return;
        }
        let have = match self.sm.store().map(|s| s.lock()) {
            Some(Ok(store)) => store.last_position(),
            _ => return,
        };
        let (to, meta) = (f.from, f.meta);
        for (from_position, through) in f.requests(have, now) {
            let sent = send(to, &mut |buf: &mut Vec<u8>| {
                wire::encode_history_request(meta, from_position, through, buf)
            });
            if !sent {
                break; // the link is down: the stall timer asks again
            }
        }
    }

    /// Runs the Ready loop until the core has nothing more to say, or until enough syncs are
    /// in flight that waiting lets the next batch grow. Never blocks on the disk.
    pub fn drive(&mut self, out: &mut Output) -> Result<(), ServerError> {
        self.collect_snapshot()?;
        loop {
            self.collect_synced(false, out)?;
            if !self.raft.has_ready() || self.syncer.in_flight() >= SYNCS_IN_FLIGHT_MAX {
                return Ok(());
            }
            let rd = self.raft.ready();
            self.handle_ready(rd, out)?;
        }
    }

    /// True when [`Replica::drive`] has work it could do now: something proposed or stepped
    /// since the last drive (a telnet session's next typed-ahead line, proposed while its
    /// previous one was answered). The loop must not sleep in `poll` then.
    pub fn wants_drive(&self) -> bool {
        self.raft.has_ready() && self.syncer.in_flight() < SYNCS_IN_FLIGHT_MAX
    }

    /// Waits for every fsync in flight and acknowledges what it made durable (at shutdown,
    /// and in tests that need a deterministic point).
    pub fn wait_for_syncs(&mut self, out: &mut Output) -> Result<(), ServerError> {
        self.collect_synced(true, out)
    }

    /// Takes finished fsyncs back (waiting for them if `block`), then acknowledges every Ready
    /// at the front of the queue that is now durable.
    fn collect_synced(&mut self, block: bool, out: &mut Output) -> Result<(), ServerError> {
        while let Some(job) = self.syncer.finished(block) {
            let took = job.fsync_duration();
            let durable = self.wal.synced(job)?;
            // Jobs covered by a later job's fdatasync come back first, with no duration of
            // their own: the sync that ran is counted once, for every entry it made durable.
            if let Some(took) = took {
                let entries = durable.saturating_sub(self.durable_index);
                self.stats.on_sync(entries, took);
                self.stats.entries_per_sync.0.observe(entries as f64);
                self.durable_index = durable;
            }
            let oldest = self.unsynced.iter_mut().find(|u| u.syncing);
            // Syncs finish in submission order, and each belongs to one queued Ready.
            assert!(
                oldest.is_some(),
                "a finished sync belongs to no queued Ready"
            );
            if let Some(unsynced) = oldest {
                unsynced.syncing = false;
            }
        }
        while self.unsynced.front().is_some_and(|u| !u.syncing) {
            let Some(done) = self.unsynced.pop_front() else {
                break;
            };
            // (3) Votes and acknowledgements only after the disk has them.
            self.send_raft(done.persisted_messages, out);
            // (4) Now the core may count this node's own copy.
            self.raft.advance(done.number);
        }
        Ok(())
    }

    fn handle_ready(&mut self, rd: Ready, out: &mut Output) -> Result<(), ServerError> {
        if let Some(soft) = rd.soft_state {
            self.on_soft_state(soft, out);
        }
        // (1) The leader's appends leave before its own write: §10.2.1.
        self.send_raft(rd.messages, out);
        self.note_appended(&rd.entries);
        if let Some(meta) = rd.snapshot {
            // Before this Ready's entries: they continue the log after the snapshot.
            self.install_snapshot(meta, out)?;
        }
        // (2) One write for everything in this Ready, its fdatasync on the helper thread.
        // Term and vote must be durable before any message that depends on them leaves; the
        // commit index need not be (Figure 2 lists it as volatile; it is kept only so a
        // restarted node can apply without a leader). So a Ready that only moves the commit
        // index buffers it for the next write and syncs nothing: at one entry per round trip
        // this halves the fdatasyncs on leader and followers alike.
        let vote_changed = rd
            .hard_state
            .is_some_and(|hs| self.written_vote != Some((hs.term, hs.voted_for)));
        let syncing = !rd.entries.is_empty() || vote_changed;
        if let Some(hs) = rd.hard_state {
            self.wal.set_hard_state(hs)?;
            self.written_vote = Some((hs.term, hs.voted_for));
        }
        if syncing {
            if !rd.entries.is_empty() {
                self.wal.append(&rd.entries)?;
                self.stats.entries_written += rd.entries.len() as u64;
            }
            let job = self.wal.write_buffered()?;
            self.syncer.submit(job);
            self.stats.sync_jobs += 1;
        }
        assert!(
            self.unsynced.back().is_none_or(|u| u.number < rd.number),
            "Readies are numbered in increasing order"
        );
        self.unsynced.push_back(Unsynced {
            number: rd.number,
            persisted_messages: rd.persisted_messages,
            syncing,
        });
        self.collect_synced(false, out)?;
        // (5) Apply: the core hands out only entries durable here and on a quorum.
        for entry in rd.committed_entries {
            assert!(
                entry.index == self.sm.applied_index() + 1,
                "entries are applied in order, each once"
            );
            self.applied_term = entry.term;
            self.applied_bytes_since_snapshot += entry.data.len() as u64;
            match entry.kind {
                EntryKind::Noop => self.sm.apply_noop(entry.index),
                EntryKind::ConfChange => self.apply_conf_entry(&entry, out),
                EntryKind::Normal => {
                    let applied = self.sm.apply(entry.index, &entry.data);
                    out.events.push(Event::Applied {
                        index: entry.index,
                        applied,
                    });
                }
            }
        }
        for rs in rd.read_states {
            out.events.push(Event::ReadReady {
                ctx: rs.ctx,
                index: rs.index,
            });
        }
        for failure in rd.read_failures {
            out.events.push(Event::ReadFailed {
                ctx: failure.ctx,
                leader_hint: failure.leader_hint,
            });
        }
        self.maybe_snapshot();
        Ok(())
    }

    fn send_raft(&mut self, messages: Vec<Message>, out: &mut Output) {
        for msg in messages {
            if let MessageBody::InstallSnapshot { .. } = msg.body {
                // The data travels as chunks (`snapshot.rs`); the follower steps the
                // InstallSnapshot itself once the whole file is in.
                self.snapshots.want_send(msg.to, msg.term, Instant::now());
                self.stats.snapshots_sent += 1;
                continue;
            }
            if let MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. } = msg.body {
                // One older than a few heartbeats was lost (or its peer was away): start over.
                let now = Instant::now();
                let sent = self.stats.awaiting_response.entry(msg.to).or_insert(now);
                if now.duration_since(*sent) > Duration::from_secs(2) {
                    *sent = now;
                }
            }
            if let MessageBody::AppendEntries { entries, .. } = &msg.body {
                self.stats.append_entries_sent += 1;
                self.stats.append_entries_entries += entries.len() as u64;
            }
            out.messages.push(msg);
        }
    }

    fn on_soft_state(&mut self, soft: SoftState, out: &mut Output) {
        let old = self.soft;
        self.soft = soft;
        if old.leader != soft.leader && soft.leader.is_some() {
            self.stats.leader_changes += 1;
        }
        if old.role != soft.role || old.leader != soft.leader {
            let leader = soft
                .leader
                .map(|l| format!("node {l}"))
                .unwrap_or_else(|| "unknown".into());
            log::info!(
                "node {} term {}: {:?}, leader {}",
                self.id,
                soft.term,
                soft.role,
                leader
            );
        }
        if old.role == Role::Leader && soft.role != Role::Leader {
            self.snapshots.stop_sending();
            log::info!("node {} term {}: stepped down", self.id, soft.term);
        }
        out.events.push(Event::Leadership { old, new: soft });
    }

    /// Follower: the core accepted the snapshot received for `meta`. It replaces the state
    /// machine, and the log restarts after it; the file is already durable.
    fn install_snapshot(
        &mut self,
        meta: SnapshotMeta,
        out: &mut Output,
    ) -> Result<(), ServerError> {
        let file = self.snapshots.take_received(meta).ok_or_else(|| {
            ServerError::Snapshot(format!(
                "the core installs snapshot {meta:?}, but no such file was received"
            ))
        })?;
        let started = Instant::now();
        let sm = match self.restored.take() {
            Some((m, sm)) if m == meta => sm,
            _ => self.restore_file(&file)?,
        };
        self.sm = sm;
        self.applied_term = meta.term;
        self.applied_bytes_since_snapshot = 0;
        self.wal.reset_after_snapshot(meta.index)?;
        log::info!(
            "node {}: installed snapshot at index {} (term {}, {} messages) in {:.1?}",
            self.id,
            meta.index,
            meta.term,
            self.sm.message_count(),
            started.elapsed()
        );
        // The log's old segments go at the next compaction; older snapshots go now.
        let cleanup = Cleanup {
            entries: Vec::new(),
            segments: Vec::new(),
            snapshots_before: meta.index,
        };
        self.snapshots.set_latest(file, cleanup);
        self.stats.snapshots_installed += 1;
        out.events.push(Event::SnapshotInstalled(meta));
        Ok(())
    }

    /// The state machine in a snapshot file, with its member table filled from the bootstrap
    /// list if the file predates members.
    fn restore_file(
        &self,
        file: &crate::storage::SnapshotFile,
    ) -> Result<StateMachine, ServerError> {
        let mut body = file.body()?;
        let (config, retain) = (SessionConfig::default(), self.opts.retain_messages);
        // With a message store, the snapshot's messages stream into it (skipping what it
        // holds: a snapshot holds only committed messages, at their final positions).
        let mut sm = match self.sm.store() {
            Some(store) => {
                let (_, keep) = open::history_budget(self.opts.memory_budget_mib);
                StateMachine::restore_with_store(&mut body, config, retain, store.clone(), keep)
            }
            None => StateMachine::restore(&mut body, config, retain),
        }
        .map_err(|why| ServerError::Snapshot(format!("{}: {why}", file.path.display())))?;
        members::bootstrap_table(&mut sm, &self.opts.bootstrap);
        Ok(sm)
    }

    /// The state machine in the snapshot file just received for `meta`.
    fn restore_received(&self, meta: SnapshotMeta) -> Result<StateMachine, ServerError> {
        match self.snapshots.received(meta) {
            Some(file) => self.restore_file(file),
            None => Err(ServerError::Snapshot(format!(
                "no received file for snapshot {}",
                meta.index
            ))),
        }
    }

    /// Starts writing a snapshot once `snapshot_entries` entries were applied since the last.
    /// A whole-chat snapshot (version 4: `--retain-messages`, or a store that failed) also
    /// waits until the log since the last one is at least as large as that file: without that
    /// rule a large chat would be rewritten every few seconds; with it, snapshot writes cost at
    /// most about the log's own bytes. An incremental one (version 5, the store holds the
    /// history) costs what changed, so it follows `--snapshot-entries` alone.
    fn maybe_snapshot(&mut self) {
        let every = self.opts.snapshot_entries;
        let applied = self.sm.applied_index();
        let (last, last_len) = self
            .snapshots
            .latest()
            .map_or((0, 0), |file| (file.meta.index, file.len));
        if every == 0
            || self.snapshots.is_writing()
            || applied < last.saturating_add(every)
            || (!self.sm.incremental_snapshots() && self.applied_bytes_since_snapshot < last_len)
        {
            return;
        }
        self.applied_bytes_since_snapshot = 0;
        let meta = SnapshotMeta {
            index: applied,
            term: self.applied_term,
        };
        let started = Instant::now();
        let capture = self.sm.capture();
        log::info!(
            "node {}: snapshot at index {} (version {}, the store holds 1..={}) captured in \
             {:.1?}; writing it",
            self.id,
            applied,
            capture.version(),
            capture.stored_through(),
            started.elapsed()
        );
        self.snapshots.start_write(meta, capture);
        self.stats.snapshots_taken += 1;
        self.stats.snapshot_started = Some(started);
    }

    /// A snapshot the helper thread finished: the core and the log may forget what it covers,
    /// except the last `log_keep_entries` entries.
    fn collect_snapshot(&mut self) -> Result<(), ServerError> {
        let Some((meta, written)) = self.snapshots.take_written() else {
            return Ok(());
        };
        if let Some(started) = self.stats.snapshot_started.take() {
            self.stats
                .snapshot_seconds
                .observe_duration(started.elapsed());
        }
        let file = match written {
            Ok(file) => file,
            Err(e) => {
                // The log still holds everything: nothing is lost, the next attempt may work.
                log::error!("node {}: snapshot at {} failed: {e}", self.id, meta.index);
                return Ok(());
            }
        };
        if self
            .snapshots
            .latest_meta()
            .is_some_and(|m| m.index >= meta.index)
        {
            return Ok(()); // a newer snapshot was installed from the leader meanwhile
        }
        let first_kept = meta.index.saturating_sub(self.opts.log_keep_entries) + 1;
        let entries = self.raft.compact(meta, first_kept);
        let first_kept = self.raft.first_index();
        // The log forgets the segments now; the janitor deletes the files, and frees the entries.
        let segments = self.wal.detach_prefix(first_kept.saturating_sub(1))?;
        log::info!(
            "node {}: snapshot at index {} durable ({} bytes); log starts at {}",
            self.id,
            meta.index,
            file.len,
            self.wal.first_index()
        );
        let cleanup = Cleanup {
            entries,
            segments,
            snapshots_before: meta.index,
        };
        self.snapshots.set_latest(file, cleanup);
        Ok(())
    }
}
