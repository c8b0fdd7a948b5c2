//! raftchat: a chat server whose chat log is replicated by Raft across a cluster of nodes.
//!
//! # Where everything lives
//!
//! The layers, and the one way data flows through them. The full map, with the path of one
//! `msg` from socket to reply and the replica driver's contract, is `docs/ARCHITECTURE.md`.
//!
//! ```text
//! telnet / binary client bytes ──▶ server (mio loop) ──propose──▶ raft (pure core)
//!        ▲                              │   ▲                          │ Ready
//!        │ reply after apply            │   └── advance(n) ◀── storage (WAL, fsync thread)
//!        └──────── chat state machine ◀─┘ committed entries, and messages to peers via wire
//! ```
//!
//! - [`raft`]: the pure consensus core: no IO, no clock, a seeded RNG. Its module docs teach
//!   the driver loop and the durability contract (which outputs must be durable before which
//!   messages leave).
//! - [`storage`]: the segmented write-ahead log and the durable hard state; crash recovery;
//!   snapshot files (written locally or received from a leader in chunks, verified by checksum).
//! - [`wire`]: hand-written binary frames between peers (handshake, Raft messages, forwarded
//!   proposals, snapshot chunks).
//! - [`chat`]: the replicated state machine (chat log, rooms, key-value state, exactly-once
//!   client sessions), its snapshot form (cheap capture, checked restore) and the telnet line
//!   protocol (parse, format).
//! - [`server`]: the single-threaded mio event loop per node, in layers: the transport
//!   (sockets and buffers), the replica driver (core, log, fsync thread, snapshots, state
//!   machine; no sockets), the request table (what is in flight and who gets the answer) and
//!   one front-end per protocol (telnet, binary, web, peer); `server::limits` (connection caps,
//!   timeouts, message rates) and `server::accounts` (argon2 off the loop). The other threads
//!   are the fsync helper, the snapshot writer (while one is written), the janitor and the
//!   password hasher.
//! - [`proto`]: the binary client protocol's codec, shared by the server (decodes requests,
//!   encodes answers) and the client (the reverse).
//! - [`client`]: a blocking client library with exactly-once retries (used by the load
//!   generator and the tests); `client::proto` re-exports [`proto`].
//! - [`history`]: the message store: committed chat messages in immutable checksummed segment
//!   files on disk, indexed by position and by room, with a bounded cache of the newest. A
//!   snapshot (body version 5) leaves the stored messages to it and carries only the small
//!   state; a follower fetches the store positions a received snapshot needs
//!   (`server::replica::fetch`, `wire::history`).
//! - [`codec`]: the length-checked reader and the writers every binary format is built from.
//! - [`tls`]: TLS building blocks (rustls with ring): certificate files with precise errors,
//!   peer/client configurations, node ids from certificate CNs, a non-blocking TLS stream that
//!   the server's transport wraps sockets in.
//! - [`web`]: HTTP/1.1 on the client port: the embedded chat page, the WebSocket codec, JSON,
//!   `/health`; [`metrics`]: the Prometheus text format behind `/metrics`.
//!
//! Binaries: `src/bin/server.rs` (one node), `tools/cluster.rs` (the one-command local
//! cluster), `tools/certs.rs` (certificates), `tools/loadgen/` (the load generator). Scripts in
//! `tools/`: `perf.sh`, `curve.sh`, `open_loop.sh`, `etcd_curve.sh` (the README's performance
//! tables and curves), `memory.sh`, `screen_test.sh` (telnet in tmux), `browser_test.py`.
//!
//! Tests: unit tests beside the code; `tests/simulator.rs` with `tests/sim/` (the seeded
//! cluster simulator); `tests/storage_*.rs`, `tests/history_store.rs`; real processes in `tests/server_cluster.rs`,
//! `tests/chat_features.rs`, `tests/loadgen.rs`, `tests/snapshot_rejoin.rs`, `tests/retention.rs`,
//! `tests/history_server.rs`, `tests/history_install.rs`, `tests/disk_reads.rs`, `tests/tls.rs`, `tests/web.rs`, `tests/accounts.rs`, `tests/limits.rs`, `tests/fanout.rs`;
//! the fault suite `tests/faults.rs` (harness in `tests/common/`). Benchmarks in `benches/` (`restart.rs`: restart with and without a snapshot).

pub mod chat;
pub mod client;
pub mod codec;
pub mod history;
pub mod metrics;
pub mod proto;
pub mod raft;
pub mod server;
pub mod storage;
pub mod tls;
pub mod web;
pub mod wire;
