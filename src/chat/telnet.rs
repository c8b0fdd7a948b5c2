//! The telnet line protocol: how a human (or a script) talks to a chat node, as pure code.
//!
//! Three steps, one file each, none doing IO:
//! - [`framing`]: bytes from a socket to complete lines ([`LineSplitter`]), aware of telnet's
//!   IAC negotiation so a `\n` inside a negotiation never ends a line; IAC stripping.
//! - [`request`]: one line to one [`Request`] or a one-line human reason ([`parse_line`]), and
//!   the help text.
//! - [`format`](mod@format): chat messages to output lines ([`format_message`], [`format_push`]).
//!
//! # The conversation, as the server is expected to hold it
//!
//! A client sends lines ending in `\n` or `\r\n`. Every output line ends in `\r\n`
//! ([`LINE_END`]), as telnet's NVT expects. A reply starts with `ack`, a listing ends with
//! `end`, a failure is `err <reason>` where the reason is the `Err` string of [`parse_line`] or
//! of the state machine; a live chat message pushed to a client starts with `msg`, and help
//! lines start with `help`, so a script can tell them all apart by their first word.

pub mod format;
pub mod framing;
pub mod request;

pub use format::{format_message, format_push, LINE_END};
pub use framing::{strip_telnet, LineSplitter, LINE_BYTES_MAX};
pub use request::{parse_line, Request, HELP_TEXT, HISTORY_DEFAULT, HISTORY_MAX};
