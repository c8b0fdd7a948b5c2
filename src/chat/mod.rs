//! The chat application: the replicated state machine and the telnet line protocol, as pure code.
//!
//! This module owns what a chat node *means*: the bytes stored in Raft log entries
//! ([`command`]), the deterministic state machine that applies them ([`state`]) with its client
//! sessions for exactly-once writes ([`session`]), the cluster's member table applied from
//! configuration entries ([`members`]) and its snapshot form ([`snapshot`]), the
//! rules every name, key and message must follow ([`validate`]), and the human line protocol
//! spoken over telnet ([`telnet`], [`time`]). It never does IO (a snapshot is written to and
//! read from whatever `Write`/`Read` the caller hands it), never reads a clock, never touches a
//! socket and knows nothing of Raft internals beyond the `Index` of an entry: the server's mio
//! loop feeds it bytes and committed entries and writes out what it formats.
//!
//! Determinism is the rule of this module: given the same entries in the same order, every node's
//! [`StateMachine`] reaches the same state and produces the same [`Outcome`]s, including the same
//! rejection strings for invalid or undecodable commands. Nothing here depends on hash order,
//! locale or the Unicode tables of a particular Rust release (names are ASCII-only for that
//! reason).

mod chat_log;
pub mod command;
pub mod members;
mod message;
mod outcome;
pub mod read;
pub mod session;
pub mod snapshot;
pub mod state;
pub mod telnet;
pub mod time;
pub mod validate;

#[cfg(test)]
mod store_tests;

pub use chat_log::CHUNK_MESSAGES;
pub use command::{Command, Op, Origin, RoomAction, SessionRef};
pub use message::ChatMessage;
pub use outcome::Outcome;
pub use read::{Pending, Read};
pub use session::{SessionConfig, Sessions, DEFAULT_SESSION_EXPIRY_MS};
pub use snapshot::{
    peek_header, BodyHeader, ChatSnapshot, RestoreError, BODY_HEADER_BYTES,
    SNAPSHOT_FORMAT_VERSION, SNAPSHOT_FORMAT_VERSION_STORED,
};
pub use state::{Applied, StateMachine, DEFAULT_ROOM};
pub use telnet::{
    format_message, format_push, parse_line, LineSplitter, Request, HELP_TEXT, LINE_BYTES_MAX,
};

use std::fmt;

/// Why command bytes could not be decoded. Every variant is a property of the bytes alone, so
/// every node that decodes the same entry reports the same error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatError {
    /// The data is empty.
    Empty,
    /// The leading tag byte names a format this code does not know.
    UnknownVersion(u8),
    /// The operation tag names no known operation.
    UnknownOp(u8),
    /// The data ends before the field it was reading.
    Truncated { field: &'static str },
    /// A string field is not UTF-8.
    NotUtf8 { field: &'static str },
    /// An `Option` marker byte is neither 0 nor 1.
    BadOptionTag(u8),
    /// Bytes remain after a complete command.
    TrailingBytes(usize),
}

impl fmt::Display for ChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatError::Empty => write!(f, "empty command"),
            ChatError::UnknownVersion(tag) => write!(f, "unknown command format version {tag}"),
            ChatError::UnknownOp(tag) => write!(f, "unknown operation tag {tag}"),
            ChatError::Truncated { field } => write!(f, "command truncated in field {field}"),
            ChatError::NotUtf8 { field } => write!(f, "field {field} is not UTF-8"),
            ChatError::BadOptionTag(tag) => write!(f, "bad option marker {tag}"),
            ChatError::TrailingBytes(n) => write!(f, "{n} trailing bytes after command"),
        }
    }
}

impl std::error::Error for ChatError {}

#[cfg(test)]
mod tests {
    //! The seed's session end to end, as the server drives this module: parse a line, propose
    //! a command, apply it when committed, format the answer.
    use super::*;

    #[test]
    fn seed_session() {
        let mut lines = LineSplitter::new();
        lines.feed(b"msg Hello, Raft!\r\nget chatLog\r\n");
        let mut requests = Vec::new();
        while let Some(line) = lines.next_line() {
            requests.push(parse_line(line.unwrap()).unwrap());
        }
        assert_eq!(
            requests,
            vec![
                Request::Msg {
                    room: None,
                    text: "Hello, Raft!".into()
                },
                Request::GetChatLog
            ]
        );

        // The server posts to the session's current room (DEFAULT_ROOM until it joins another).
        let Request::Msg { text, .. } = &requests[0] else {
            unreachable!()
        };
        let cmd = Command {
            origin: Origin { node: 1, req: 9 },
            timestamp_ms: 1_700_000_000_000,
            session: None,
            op: Op::Post {
                room: DEFAULT_ROOM.into(),
                nick: "guest-1".into(),
                text: text.clone(),
            },
        };
        let mut entry = Vec::new();
        cmd.encode(&mut entry);

        let mut sm = StateMachine::default();
        let applied = sm.apply(2, &entry);
        assert_eq!(
            applied,
            Applied {
                origin: Some(Origin { node: 1, req: 9 }),
                outcome: Outcome::Posted { position: 1 },
                duplicate: false,
            }
        );

        let mut out = Vec::new();
        for msg in sm.messages_from(1) {
            format_message(&msg, &mut out);
        }
        assert_eq!(
            out,
            b"1 2023-11-14T22:13:20Z #general <guest-1> Hello, Raft!\r\n"
        );
    }
}
