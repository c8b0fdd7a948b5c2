//! Chat messages to telnet output lines, appended to the caller's write buffer.
//!
//! A listing line (`get chatLog`, `history`) starts with the message's position; a live push
//! starts with the word `msg`, so a client can tell an unrequested message from a reply line:
//!
//! ```text
//! 3 2026-11-26T17:40:02Z #general <alice> Hello, Raft!
//! msg 3 2026-11-26T17:40:02Z #general <alice> Hello, Raft!
//! ```
//!
//! Every field was validated before it entered the state machine (no control characters, no
//! line breaks), so one message is always exactly one line.

use crate::chat::state::ChatMessage;
use crate::chat::time::{format_utc, push_decimal};

/// Every output line ends so: telnet's network virtual terminal expects CR LF.
pub const LINE_END: &[u8] = b"\r\n";

/// Appends `<position> <UTC time> #<room> <<nick>> <text>\r\n`.
pub fn format_message(msg: &ChatMessage, out: &mut Vec<u8>) {
    push_decimal(out, msg.position, 1);
    out.push(b' ');
    format_utc(msg.timestamp_ms, out);
    out.extend_from_slice(b" #");
    out.extend_from_slice(msg.room.as_bytes());
    out.extend_from_slice(b" <");
    out.extend_from_slice(msg.nick.as_bytes());
    out.extend_from_slice(b"> ");
    out.extend_from_slice(msg.text.as_bytes());
    out.extend_from_slice(LINE_END);
}

/// Appends `msg ` and then the listing line of [`format_message`].
pub fn format_push(msg: &ChatMessage, out: &mut Vec<u8>) {
    out.extend_from_slice(b"msg ");
    format_message(msg, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> ChatMessage {
        ChatMessage {
            position: 3,
            index: 17,
            room: "general".into(),
            nick: "alice".into(),
            text: "Hello, Raft!".into(),
            timestamp_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn listing_line() {
        let mut out = b"ack\r\n".to_vec();
        format_message(&message(), &mut out);
        assert_eq!(
            out,
            b"ack\r\n3 2023-11-14T22:13:20Z #general <alice> Hello, Raft!\r\n"
        );
    }

    #[test]
    fn push_line() {
        let mut out = Vec::new();
        format_push(&message(), &mut out);
        assert_eq!(
            out,
            b"msg 3 2023-11-14T22:13:20Z #general <alice> Hello, Raft!\r\n"
        );
    }

    #[test]
    fn utf8_text_passes_through() {
        let mut msg = message();
        msg.text = "héllo ✓".into();
        msg.position = 12_345_678_901;
        msg.timestamp_ms = 0;
        let mut out = Vec::new();
        format_message(&msg, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "12345678901 1970-01-01T00:00:00Z #general <alice> héllo ✓\r\n"
        );
    }
}
