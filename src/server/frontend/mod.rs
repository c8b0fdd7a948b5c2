//! Protocol front-ends: each turns one protocol's bytes into requests (through
//! [`Services`](super::services::Services)) and results into bytes. They depend on the services
//! below them, never on each other or on the node above.
//!
//! - [`telnet`]: command lines, `ack`/`end`/`err` replies, live delivery to rooms.
//! - [`binary`]: the binary client protocol (`proto`): pipelined, exactly-once.
//! - [`peer`]: inbound links from other members: handshake, then Raft and snapshot frames.
//! - [`web`]: HTTP (chat page, `/metrics`, `/health`) and WebSocket chat sessions.

pub mod binary;
pub mod peer;
pub mod rooms;
pub mod telnet;
pub mod web;
pub mod web_accounts;
