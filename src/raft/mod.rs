//! The Raft consensus core: a pure, deterministic state machine.
//!
//! It owns roles, terms, votes, the in-memory log, per-follower progress, commit, ReadIndex and
//! leadership transfer. It never does IO, never reads a clock, never starts a thread: time is
//! `tick()`, randomness comes from a seed given to `Raft::new`, and every output is handed to the
//! driver in a [`Ready`]. The mio server, the simulator and the benchmarks all drive it the same way.
//!
//! # The driver loop
//!
//! ```text
//! let mut node = Raft::new(config, persisted, seed);
//! loop {
//!     every tick interval:            node.tick();
//!     for each decoded peer message:  node.step(msg);
//!     for each client command:        node.propose(bytes)?;      // or node.read_index(ctx)?
//!     let rd = node.ready();
//!     send(rd.messages);                                  // (1) may leave at once
//!     storage.append(rd.entries); storage.save(rd.hard_state);
//!     storage.sync();                                     // (2) durable ...
//!     send(rd.persisted_messages);                        // (3) ... before these leave
//!     node.advance(rd.number);                            // (4) now the core may count them
//!     apply(rd.committed_entries); serve(rd.read_states); // (5)
//! }
//! ```
//!
//! # The durability contract
//!
//! - `hard_state` (term, vote) and `entries` of a Ready must be durable before any of that
//!   Ready's `persisted_messages` is sent: a vote or an acknowledgement is a promise about disk.
//! - `messages` carry no such promise and may be sent before the disk write starts. This is how a
//!   leader writes its own log in parallel with replication (Ongaro's dissertation §10.2.1): the
//!   leader counts itself toward a commit quorum only for entries reported by `advance`.
//! - `advance(n)` must be called for every Ready in increasing `number` order, and only after
//!   that Ready's entries and hard state are durable. Readies may be in flight (written but not yet
//!   synced) while later ones are produced. Debug builds assert the order.
//! - `committed_entries` only ever contains entries durable on this node and committed by a quorum.

mod election;
mod log;
mod node;
mod progress;
mod read_only;
mod replication;
mod types;

#[cfg(test)]
mod tests;

pub use node::{Config, PeerStatus, Persisted, Raft, Status};
pub use types::*;
