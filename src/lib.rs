//! raftchat: a chat server whose chat log is replicated by Raft across a cluster of nodes.
//!
//! Where everything lives (see also `DESIGN.md` in the shared notes and the README):
//!
//! - [`raft`]: the pure consensus core (no IO, no clock, injected RNG), driven by a [`raft::Ready`] loop.
//! - [`storage`]: the segmented write-ahead log and the durable hard state; recovery.
//! - [`wire`]: hand-written binary frames for peer messages and binary clients.
//! - [`chat`]: the replicated state machine (chat log, key-value state) and the telnet line protocol.
//! - [`server`]: the single-threaded mio event loop that ties them together.
//! - [`client`]: the binary client protocol codec and a blocking client library (load generator, tests).
//!
//! Binaries: `src/bin/server.rs` (a node), `tools/cluster.rs` (a local cluster launcher),
//! `tools/loadgen.rs` (the load generator).

pub mod chat;
pub mod client;
pub mod raft;
pub mod server;
pub mod storage;
pub mod wire;
