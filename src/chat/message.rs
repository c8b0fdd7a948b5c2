//! One chat message as the state machine holds it and every reader sees it.
//!
//! It owns the `ChatMessage` type only: no encoding (snapshots and the client protocol each
//! carry their own), no validation (see `validate`), never any IO.

use crate::raft::Index;

/// One message of the chat log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// 1-based position in the whole chat log (all rooms): assigned in order, never reused.
    /// Without retention there are no gaps; with it, dropped messages leave holes.
    pub position: u64,
    /// The Raft index of the entry that carried it.
    pub index: Index,
    pub room: String,
    pub nick: String,
    pub text: String,
    pub timestamp_ms: u64,
}
