//! Binary wire format between nodes: the peer handshake and the frames that carry Raft messages
//! and forwarded client commands.
//!
//! It owns bytes only: encoders append to a buffer the caller owns (no intermediate buffer),
//! decoders read from the caller's read buffer and borrow from it where they can. It never owns
//! a socket, never interprets a message, and never panics or over-allocates on any input: every
//! length is checked against the bytes actually present before anything is read or allocated.
//!
//! Decoding follows mini-redis: `Ok(None)` means "incomplete, read more and call again with the
//! longer buffer"; `Ok(Some((value, consumed)))` hands back a value and how many bytes it used;
//! `Err(_)` means the stream is unusable and the connection should be closed.
//!
//! # The format, byte by byte
//!
//! Enough to write a peer in another language. All integers are unsigned and big-endian.
//! CRC32C is the Castagnoli CRC (iSCSI, SSE4.2 `crc32` instruction; `crc32c("123456789")` is
//! `0xE3069283`).
//!
//! ## Connection start
//!
//! The first four bytes on any connection to a node say what it is. A telnet client never
//! sends a NUL first, so anything else is the line protocol.
//!
//! | first bytes        | connection                                             |
//! | ------------------ | ------------------------------------------------------ |
//! | `00 52 43 50` (`"\0RCP"`) | a peer: the 26-byte handshake below, then frames |
//! | `00 52 43 42` (`"\0RCB"`) | a binary client (protocol defined later)         |
//!
//! ## Peer handshake (26 bytes, sent by the node that opens the connection)
//!
//! | offset | size | field        | notes                                           |
//! | ------ | ---- | ------------ | ----------------------------------------------- |
//! | 0      | 4    | magic        | `00 52 43 50`                                   |
//! | 4      | 2    | version      | `PROTOCOL_VERSION` = 1; other values refused    |
//! | 6      | 8    | cluster_id   | nodes refuse peers of another cluster           |
//! | 14     | 8    | node_id      | the sender's node id                            |
//! | 22     | 4    | crc          | CRC32C of bytes 0..22                           |
//!
//! Everything after the handshake is a sequence of frames.
//!
//! ## Frame
//!
//! | offset | size     | field      | notes                                                  |
//! | ------ | -------- | ---------- | ------------------------------------------------------ |
//! | 0      | 4        | body_len   | bytes of body; at most `FRAME_BYTES_MAX` = 16 MiB      |
//! | 4      | 1        | frame_type | table below                                            |
//! | 5      | 4        | crc        | CRC32C of bytes 0..5 (body_len, frame_type), then body |
//! | 9      | body_len | body       |                                                        |
//!
//! The checksum covers the header too, so a corrupted type byte cannot turn one valid message
//! into another. A receiver refuses a frame whose `body_len` is over the limit or whose type it
//! does not know as soon as the 9 header bytes are in, without waiting for the body.
//!
//! Field encodings inside bodies: `u8`/`u32`/`u64` big-endian; `bool` is one byte, 0 or 1
//! (anything else is malformed); `opt u64` is a tag byte, 0 = absent (nothing follows) or
//! 1 = present (a `u64` follows). A body must be consumed exactly: trailing bytes are malformed.
//!
//! ## Frame types and bodies
//!
//! Raft messages (types 0x01 to 0x0A) start with the same 24 bytes: `from u64`, `to u64`,
//! `term u64`. Then:
//!
//! | type | message                | fields after from, to, term                                                  |
//! | ---- | ---------------------- | ---------------------------------------------------------------------------- |
//! | 0x01 | RequestVote            | `pre_vote bool`, `last_log_index u64`, `last_log_term u64`                   |
//! | 0x02 | RequestVoteResponse    | `pre_vote bool`, `granted bool`                                              |
//! | 0x03 | AppendEntries          | `prev_log_index u64`, `prev_log_term u64`, `leader_commit u64`, `entry_count u32`, entries |
//! | 0x04 | AppendEntriesResponse  | `success bool`, `match_index u64`, `conflict_term u64`, `conflict_index u64` |
//! | 0x05 | Heartbeat              | `leader_commit u64`, `read_round u64`                                        |
//! | 0x06 | HeartbeatResponse      | `read_round u64`                                                             |
//! | 0x07 | ReadIndex              | `ctx u64`                                                                    |
//! | 0x08 | ReadIndexResponse      | `ctx u64`, `index opt u64` (absent: the leader cannot serve reads now)       |
//! | 0x09 | TimeoutNow             | nothing                                                                      |
//! | 0x0A | InstallSnapshot        | `snapshot_index u64`, `snapshot_term u64`, `len u32`, configuration (`Membership::encode`); the data travels separately |
//!
//! Each AppendEntries entry is `term u64`, `index u64`, `kind u8` (0 = noop, 1 = normal; others
//! are malformed), `data_len u32`, then `data_len` bytes of data.
//!
//! Command forwarding (not Raft messages, no from/to/term):
//!
//! | type | frame           | body                                                               |
//! | ---- | --------------- | ------------------------------------------------------------------ |
//! | 0x10 | Propose         | `origin_req u64`, then the client command: all remaining body bytes |
//! | 0x11 | ProposeRejected | `origin_req u64`, `leader_hint opt u64`                            |
//!
//! Snapshot transfer (a leader sends a follower its snapshot file in chunks; the follower
//! acknowledges how much it holds, which is also where a broken transfer resumes):
//!
//! | type | frame         | body                                                                          |
//! | ---- | ------------- | ----------------------------------------------------------------------------- |
//! | 0x12 | SnapshotChunk | `term u64`, `snapshot_index u64`, `snapshot_term u64`, `total_len u64`, `offset u64`, then the file's bytes at `offset`: all remaining body bytes |
//! | 0x13 | SnapshotAck   | `snapshot_index u64`, `snapshot_term u64`, `received u64`                      |
//!
//! History fetch (a follower whose message store lacks messages a received snapshot leaves to
//! the store asks the sender for them, page by page; see `server::replica::fetch`):
//!
//! | type | frame          | body                                                                         |
//! | ---- | -------------- | ---------------------------------------------------------------------------- |
//! | 0x14 | HistoryRequest | `snapshot_index u64`, `snapshot_term u64`, `from_position u64`, `through u64` |
//! | 0x15 | HistoryPage    | `snapshot_index u64`, `snapshot_term u64`, `first_position u64`, `count u32`, then `count` messages (`wire::history`'s layout): all remaining body bytes |
//! | 0x16 | HistoryRefused | `snapshot_index u64`, `snapshot_term u64`, `from_position u64`, `reason_len u16`, `reason` (UTF-8, at most 1024 bytes) |
//!
//! Type 0x00 and every type not listed are refused (`UnknownType`).
//!
//! ## Worked example
//!
//! HeartbeatResponse from node 1 to node 0, term 3, read_round 7 (a unit test checks these bytes):
//!
//! ```text
//! 00 00 00 20                 body_len = 32
//! 06                          frame_type = HeartbeatResponse
//! b2 33 46 18                 crc32c(00 00 00 20 06 ++ body)
//! 00 00 00 00 00 00 00 01     from = 1
//! 00 00 00 00 00 00 00 00     to = 0
//! 00 00 00 00 00 00 00 03     term = 3
//! 00 00 00 00 00 00 00 07     read_round = 7
//! ```

mod codec;
mod error;
mod frame;
mod handshake;
mod history;
mod peer;

#[cfg(test)]
mod fuzz_tests;

pub use crate::raft::NodeId;
pub use error::WireError;
pub use frame::FRAME_HEADER_BYTES;
pub use handshake::{
    decode_handshake, decode_refusal, encode_handshake, encode_refusal, Handshake, HANDSHAKE_BYTES,
    REFUSAL_MAGIC,
};
pub use history::{
    decode_history_messages, encode_history_message, history_message_bytes, history_message_fits,
    HISTORY_MESSAGE_MIN_BYTES,
};
pub use peer::{
    decode_peer_frame, encode_history_page, encode_history_refused, encode_history_request,
    encode_propose, encode_propose_rejected, encode_raft_message, encode_snapshot_ack,
    encode_snapshot_chunk, raft_message_frame_bytes, PeerFrame, HISTORY_PAGE_HEADER_BYTES,
    SNAPSHOT_CHUNK_HEADER_BYTES,
};

/// The version in the handshake; a node refuses peers of any other.
pub const PROTOCOL_VERSION: u16 = 1;
/// First bytes of a peer connection (a telnet client never sends NUL first).
pub const PEER_MAGIC: [u8; 4] = *b"\0RCP";
/// First bytes of a binary client connection (protocol defined later).
pub const CLIENT_MAGIC: [u8; 4] = *b"\0RCB";
/// Largest frame body a node accepts; a bigger `body_len` is `FrameTooLarge` and the connection
/// is closed. Bounds what one connection can make a node buffer.
pub const FRAME_BYTES_MAX: usize = 16 << 20;
