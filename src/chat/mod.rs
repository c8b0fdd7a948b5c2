//! The chat application: the replicated state machine and the telnet line protocol, as pure code.
//!
//! This module owns what a chat node *means*: the bytes stored in Raft log entries
//! ([`command`]), the deterministic state machine that applies them ([`state`]), the rules every
//! name, key and message must follow ([`validate`]), and the human line protocol spoken over
//! telnet ([`telnet`], [`time`]). It never does IO, never reads a clock, never touches a socket
//! and knows nothing of Raft internals beyond the `Index` of an entry: the server's mio loop
//! feeds it bytes and committed entries and writes out what it formats.
//!
//! Determinism is the rule of this module: given the same entries in the same order, every node's
//! [`StateMachine`] reaches the same state and produces the same [`Outcome`]s, including the same
//! rejection strings for invalid or undecodable commands. Nothing here depends on hash order,
//! locale or the Unicode tables of a particular Rust release (names are ASCII-only for that
//! reason).

pub mod command;
pub mod state;
pub mod telnet;
pub mod time;
pub mod validate;

pub use command::{Command, Op, Origin};
pub use state::{Applied, ChatMessage, Outcome, StateMachine, DEFAULT_ROOM};
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
