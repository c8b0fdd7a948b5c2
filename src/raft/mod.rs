//! The Raft consensus core: a pure, deterministic state machine.
//!
//! It owns roles, terms, votes, the in-memory log, per-follower progress, commit, ReadIndex and
//! leadership transfer. It never does IO, never reads a clock, never starts a thread: time is
//! `tick()`, randomness comes from a seed given to `Raft::new`, and every output is handed to the
//! driver in a [`Ready`]. The mio server, the simulator and the benchmarks all drive it the same way.
//!
//! Where the rules live: `node.rs` (state, public API, role changes, `Ready`), `election.rs`
//! (§5.2 elections, §9.6 pre-vote, the leader lease, the transfer campaign), `replication.rs`
//! (§5.3 AppendEntries, heartbeats, §5.4 commit, check-quorum), `read_only.rs` (§6.4 ReadIndex),
//! `log.rs` (the in-memory log, its indexes, its offset and the snapshot meta), `progress.rs`
//! (per-follower flow control), `membership.rs` (configurations and single-server changes:
//! the values, their rules and the configuration at each log index). Learners are replicated
//! to but never campaign and never count toward a quorum. See "Membership change" below.
//!
//! # The driver loop
//!
//! ```text
//! let mut node = Raft::new(config, persisted, seed);
//! loop {
//!     every tick interval:            node.tick();
//!     for each decoded peer message:  node.step(msg);
//!     for each client command:        node.propose(bytes)?;      // or node.read_index(ctx)?
//!     if !node.has_ready() { continue }
//!     let rd = node.ready();
//!     send(rd.messages);                                  // (1) may leave at once
//!     if let Some(meta) = rd.snapshot {                   // (1b) a leader's snapshot replaced
//!         install(received_data(meta));                   //      the log: state machine, durable
//!         storage.reset_after(meta);                      //      snapshot, empty log after it
//!     }
//!     storage.append(rd.entries); storage.save(rd.hard_state);
//!     storage.sync();                                     // (2) durable ...
//!     send(rd.persisted_messages);                        // (3) ... before these leave
//!     node.advance(rd.number);                            // (4) now the core may count them
//!     apply(rd.committed_entries); serve(rd.read_states); // (5)
//!     fail(rd.read_failures);
//!     maybe: snapshot the state machine at i <= applied, make it durable, then
//!            node.compact(SnapshotMeta { index: i, term: node.log_term(i) }, first_kept);
//! }
//! ```
//!
//! Steps (2)–(4) may be pipelined: a driver may take the next Ready while an earlier one is still
//! being synced, as long as Readies become durable in `number` order (a write-ahead log appended
//! in order gives this) and each Ready's `persisted_messages` wait for that Ready. `advance(n)`
//! says "Ready `n` and all before it are durable".
//!
//! `ready()` is also where a leader sends: proposals and acknowledgements accumulate, and each
//! `ready()` turns them into at most a window of AppendEntries per follower. Call it once per
//! event-loop turn, after handling all input, so many proposals share one message.
//!
//! # The durability contract
//!
//! - `hard_state` (term, vote, commit) and `entries` of a Ready must be durable before any of that
//!   Ready's `persisted_messages` is sent: a vote or an acknowledgement is a promise about disk.
//!   `entries[0].index` may be at or below the stored last index: then the stored suffix from that
//!   index on is replaced (a follower truncating a conflicting, never committed, suffix).
//! - `persisted_messages` holds: a candidate's RequestVote (its vote for itself must be durable,
//!   or a crash could let it vote twice in the term), every RequestVoteResponse to a real vote,
//!   and every AppendEntriesResponse of a follower, the answer to InstallSnapshot included (a
//!   success's `match_index` acknowledges *durable* entries or a durable snapshot; it is what the
//!   leader counts toward commit).
//! - `snapshot` (a leader's snapshot that replaced the log) must be installed and durable, and
//!   the write-ahead log reset after it, *before* that Ready's `entries` and `hard_state` are
//!   written and before its `persisted_messages` leave (see "Snapshots" below).
//! - `messages` carry no such promise and may be sent before the disk write starts: a leader's
//!   AppendEntries and Heartbeats (§10.2.1 lets the leader write its own log in parallel with
//!   replication), HeartbeatResponses (they acknowledge leadership, not log contents), pre-vote
//!   requests and responses (they change no state), TimeoutNow, ReadIndex and its response, a
//!   leader's InstallSnapshot, and the higher-term answer to a stale leader.
//! - A leader counts itself toward a commit quorum only up to the last entry reported durable
//!   through `advance` (the core remembers, per Ready, the last `(index, term)` it carried; if
//!   that entry is still in the log with that term, everything up to it is durable).
//! - `committed_entries` only ever contains entries committed by a quorum *and* durable on this
//!   node, in index order, each exactly once per process lifetime; entries covered by a snapshot
//!   (restored at start or installed from a leader) are never handed out, the next one handed
//!   out is the snapshot's index + 1.
//! - `hard_state` is `Some` only when term, vote or commit changed since the last Ready.
//! - `advance` numbers must increase and not exceed the last number issued (debug builds
//!   assert; release builds ignore a bad call).
//!
//! # Snapshots and log compaction
//!
//! Snapshot *data* (the state machine image) never passes through the core; the driver owns it.
//! The core knows only [`SnapshotMeta`]s: which prefix of the log a snapshot replaces.
//!
//! - **Compaction.** When the driver has a *durable* snapshot of its state machine at index `i`
//!   (at or below `applied_index()`), it calls `compact(SnapshotMeta { index: i, term:
//!   log_term(i) }, first_kept)`. The core remembers it as the snapshot to send followers and
//!   drops in-memory entries below `first_kept` (clamped to `[first_index(), i + 1]`); the driver
//!   may drop the same prefix from its write-ahead log, and may keep a trailing window before
//!   `i` (helpful for followers that lag a little). A snapshot older than the current one or with
//!   a term the log disagrees with is ignored with a warning.
//! - **Sending.** When a follower's next needed entry (or the term of the one before it) is
//!   compacted, the leader queues `InstallSnapshot { snapshot }` in `Ready::messages` (no
//!   durability promise). The driver attaches or streams the data of *its current snapshot*
//!   (`snapshot()`), which is what the meta names, and the configuration at its index
//!   (`membership`, the one to store beside it). The follower is then paused for
//!   AppendEntries (heartbeats continue) until it acknowledges a match at or past the snapshot,
//!   or `Config::snapshot_timeout_ticks` pass; then the leader probes again, which re-sends the
//!   snapshot if still needed (the retry for a lost snapshot). A transfer target in this state
//!   gets TimeoutNow only once caught up.
//! - **Installing.** A follower that receives a snapshot it does not already hold (nothing at or
//!   below its commit index, no matching entry at the snapshot's index) discards its whole
//!   in-memory log, takes the snapshot as committed, applied and durable, and reports it once in
//!   `Ready::snapshot`. **Before** persisting anything of that Ready (entries, hard state) and
//!   before sending its `persisted_messages` (which acknowledge the snapshot), the driver must
//!   install the data it received for that meta: replace its state machine with it, make the
//!   snapshot durable, and reset its write-ahead log so the next entry is `meta.index + 1`.
//!   `committed_entries` of that Ready and later ones continue from `meta.index + 1`.
//!   Durability reports of earlier, not yet advanced Readies no longer count (the driver reset
//!   the log they wrote), so entries after the snapshot wait for their own Ready's `advance`.
//!   If the follower's log already holds the snapshot's last entry it keeps the log and just
//!   commits up to it; a snapshot at or below its commit index is simply acknowledged.
//!
//! # Restart
//!
//! `Raft::new(config, Persisted { hard_state, snapshot, entries, membership }, seed)` resumes from exactly
//! what the driver made durable; the driver has restored its state machine from `snapshot` (if
//! any). All persisted entries count as durable.
//!
//! - Without a snapshot, entries start at index 1 and `committed_entries` hands out the committed
//!   prefix again from index 1: the state machine is rebuilt by replay.
//! - With a snapshot, entries may start at any index `<= snapshot.index + 1` (a trailing window).
//!   The applied index starts at `snapshot.index` and `committed_entries` continue from
//!   `snapshot.index + 1`. The commit index is `max(hard_state.commit, snapshot.index)`.
//! - Disk input never panics; it is repaired with `log::error!`: a log that is not contiguous is
//!   cut at its first bad entry; with a snapshot, a log that does not reach `snapshot.index`,
//!   starts above `snapshot.index + 1` (a gap), or holds another term at `snapshot.index` (a
//!   crash between installing a snapshot and resetting the write-ahead log) is discarded whole,
//!   leaving an empty log after the snapshot. Of a window before the snapshot, the first entry
//!   only supplies the term at the in-memory offset (`first_index() - 1`); the rest are kept.
//! - A commit index beyond the log is clamped to it.
//! - The driver must make its stored log agree with what the core kept: when the core discarded
//!   a log that does not continue the snapshot (`first_index() == snapshot.index + 1` and no
//!   entries while the disk still holds some), the driver resets its write-ahead log to empty
//!   after the snapshot too, so the next Ready's entries (from `snapshot.index + 1`) continue it.
//!
//! # Message fields a codec and a simulator should know
//!
//! - `term` is the sender's term, except a pre-vote request, which carries the term the sender
//!   would campaign in (its term + 1), and a granted pre-vote response, which echoes that term.
//! - `AppendEntriesResponse.match_index`: on success, the last index the follower holds that
//!   matches the leader (durable there); on failure, the `prev_log_index` that was rejected.
//!   `reject_hint` is only meaningful on failure.
//! - `Heartbeat.leader_commit` is clamped to the recipient's `match_index`.
//! - `InstallSnapshot` is answered with an `AppendEntriesResponse` (success, `match_index` =
//!   the snapshot's index, or the follower's commit index if that is higher), through the
//!   follower's `persisted_messages`.
//!
//! # Liveness features and their limits
//!
//! - Randomized election timeouts in `[election_ticks, 2 * election_ticks)`.
//! - Pre-vote (§9.6): a pre-candidate becomes a candidate only on a pre-vote quorum, so a node cut
//!   off from the cluster never raises its term.
//! - Check-quorum: a leader that heard from no quorum for `election_ticks` steps down.
//! - Leader lease (with check-quorum on): a node that heard from a live leader less than
//!   `election_ticks` ago drops higher-term pre-vote requests (and real ones when pre-vote is off).
//!   RequestVote carries no transfer flag, so with pre-vote *off* a transfer target may be refused
//!   by voters in lease and the transfer then times out; with pre-vote on (the default) real
//!   votes always follow a pre-vote quorum or a transfer, and are not subject to the lease.
//! - A node stuck at a higher term (it campaigned in a partition) answers a stale leader's
//!   AppendEntries/Heartbeat with its term, so the stale leader steps down and a new election at a
//!   higher term takes the node back in (etcd-io/raft's answer to the pre-vote/check-quorum
//!   liveness bug).
//! - A replicating pipeline that makes no progress over two heartbeats is checked with an empty
//!   AppendEntries, so lost messages are resent even when no new proposal arrives.
//!
//! # Membership change (dissertation §4.1, with the 2015 fix)
//!
//! The configuration (voters, learners, ids removed for good) is replicated state. It is in
//! force from the moment its entry is *appended* (committed or not) and reverts if that entry is
//! truncated; the core keeps a `ConfigHistory` beside its log so it knows the configuration at
//! every index. The effective one decides who campaigns, whose votes count, whom the leader
//! replicates to, check-quorum and ReadIndex quorums; commit counts a majority of the
//! configuration in force *at the index* being committed.
//!
//! - **Proposing.** `propose_conf_change(change, context)` on the leader appends an entry of
//!   kind `EntryKind::ConfChange`: `ConfChange::encode()` (9 bytes) then `context`, opaque to
//!   the core (the server puts the new member's address there). One change at a time: refused
//!   while a change is uncommitted and until an entry of the leader's term has committed (the
//!   fix for the single-server bug), and when it breaks a rule (`ConfChangeError`). A learner
//!   is promoted only within `Config::promote_max_lag` entries of the leader's log.
//! - **Committed changes** reach the driver in `committed_entries` like any entry: decode with
//!   `ConfChange::decode_entry`, apply the context (addresses), answer the proposal. The core has
//!   already acted on the change when it was appended; the driver only follows.
//! - **Bootstrap.** `Config::voters`/`learners` is the configuration at index 0. The first
//!   entry of a new cluster (the first leader's no-op at index 1) carries it
//!   (`Membership::encode`), so a node that joins with an empty log and no voters replays the
//!   log from index 1 onto the right configuration.
//! - **Snapshots.** `Persisted::membership` is the configuration at the snapshot's index (from
//!   the driver's snapshot file; `None` means the bootstrap one), and `Raft::new` replays the
//!   `ConfChange` entries after the snapshot. `snapshot_membership()` gives what to write beside
//!   a snapshot made for `compact`. A leader's `InstallSnapshot { snapshot, membership }` carries
//!   the configuration at the snapshot's index; a follower that installs takes it.
//! - **Removal.** `is_removed()` says the configuration in force removed this node. Nobody
//!   votes for a candidate its own log says was removed; once its removal is committed a node
//!   never campaigns and never grants a vote, and its vote requests are dropped unread, so it
//!   cannot raise anyone's term (a majority of the new voters holds a committed removal, so a
//!   removed node never wins). While the removal is not committed it may still be truncated, so
//!   the node still grants votes, and it may campaign on the new configuration's votes (not its
//!   own) if it was a voter: it may hold the most up-to-date log, and the simulator found
//!   clusters left with nobody electable otherwise. The leader keeps replicating to a node
//!   whose removal is not committed, and after the commit until it has sent it that commit (at
//!   most an election timeout), so the node learns it was removed. A leader that removes itself
//!   keeps leading without counting itself, and when the removal commits sends TimeoutNow to
//!   the most caught-up voter holding its whole log (if any) and steps down. The core logs a
//!   warning once when it finds itself removed.
//! - **Learners vote.** A node that is a learner (or not a member) in its own log still answers
//!   vote requests: it may have been promoted by an entry it has not received yet, and its vote
//!   may be needed (etcd's learner-must-vote). Messages from non-members are handled (a joining
//!   node hears from a leader it has no configuration for); only members' answers count.
//!
//! # Reads (§6.4)
//!
//! `read_index(ctx)` yields exactly one outcome per `ctx`: a [`ReadState`] (serve the read once
//! the state machine has applied `index`) or a [`ReadFailure`] (leadership lost, the leader could
//! not serve it, or a forwarded read went unanswered for two election timeouts).

mod election;
mod log;
mod membership;
mod node;
mod progress;
mod read_only;
mod replication;
mod types;

#[cfg(test)]
mod tests;

pub use membership::{ConfChange, ConfChangeError, ConfigHistory, Membership};
pub use node::{Config, PeerStatus, Persisted, Raft, Status};
pub use types::*;
