//! Bytes to lines: the incremental [`LineSplitter`] and telnet IAC stripping.
//!
//! A telnet client may interleave negotiation (`IAC DO ECHO`, `IAC SB NAWS 0 80 0 24 IAC SE`)
//! with typed text. We never negotiate, so every sequence is simply removed; but its bytes may
//! include 0x0A (a 10-row window), so the splitter follows the same small state machine and ends
//! a line only on a `\n` that is data. Bytes are passed through unchanged; [`strip_telnet`] (which
//! `parse_line` calls) removes the sequences. 0xFF never occurs in UTF-8, so stripping can never
//! cut a character.
//!
//! Memory is bounded: the splitter holds what was fed and not yet taken, and at most
//! `LINE_BYTES_MAX + 1` bytes of an unfinished line; beyond that the line is reported once as too
//! long and its remaining bytes are dropped as they arrive, up to the next `\n`.

use std::borrow::Cow;

/// Longest line, in bytes, without its `\n` or `\r\n` terminator.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const WILL: u8 = 251;
const DONT: u8 = 254;

/// Where in the telnet byte stream we are (RFC 854/855).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Telnet {
    #[default]
    Data,
    /// After IAC.
    Command,
    /// After IAC WILL/WONT/DO/DONT: one option byte follows.
    Option,
    /// Inside IAC SB ... IAC SE.
    Sub,
    /// After IAC inside a subnegotiation.
    SubIac,
}

impl Telnet {
    /// The state after `byte`, and whether `byte` is data (text the user typed).
    fn step(self, byte: u8) -> (Telnet, bool) {
        match (self, byte) {
            (Telnet::Data, IAC) => (Telnet::Command, false),
            (Telnet::Data, _) => (Telnet::Data, true),
            (Telnet::Command, IAC) => (Telnet::Data, true), // IAC IAC: a literal 0xFF
            (Telnet::Command, WILL..=DONT) => (Telnet::Option, false),
            (Telnet::Command, SB) => (Telnet::Sub, false),
            (Telnet::Command, _) => (Telnet::Data, false), // a two-byte command (NOP, AYT, IP...)
            (Telnet::Option, _) => (Telnet::Data, false),
            (Telnet::Sub, IAC) => (Telnet::SubIac, false),
            (Telnet::Sub, _) => (Telnet::Sub, false),
            (Telnet::SubIac, SE) => (Telnet::Data, false),
            (Telnet::SubIac, _) => (Telnet::Sub, false),
        }
    }
}

/// `line` without telnet command sequences; borrowed unchanged when it holds no IAC byte. An
/// escaped `IAC IAC` stays as one 0xFF byte (which is then not UTF-8). A sequence cut off by the
/// end of the line is dropped.
pub fn strip_telnet(line: &[u8]) -> Cow<'_, [u8]> {
    if !line.contains(&IAC) {
        return Cow::Borrowed(line);
    }
    let mut state = Telnet::Data;
    let mut data = Vec::with_capacity(line.len());
    for &byte in line {
        let (next, is_data) = state.step(byte);
        if is_data {
            data.push(byte);
        }
        state = next;
    }
    Cow::Owned(data)
}

/// Splits a byte stream into lines: `feed` what the socket gave, then take lines with
/// `next_line` until it returns `None`.
///
/// ```
/// use raftchat::chat::telnet::LineSplitter;
/// let mut lines = LineSplitter::new();
/// lines.feed(b"msg Hello, Raft!\r\nget chat");
/// assert_eq!(lines.next_line(), Some(Ok(&b"msg Hello, Raft!"[..])));
/// assert_eq!(lines.next_line(), None);
/// lines.feed(b"Log\n");
/// assert_eq!(lines.next_line(), Some(Ok(&b"get chatLog"[..])));
/// ```
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    /// Start of the first line not yet taken.
    start: usize,
    /// Bytes before this offset are scanned; `telnet` is the state at this offset.
    scanned: usize,
    telnet: Telnet,
    /// Dropping the rest of an over-long line until its `\n`.
    discarding: bool,
}

impl LineSplitter {
    pub fn new() -> LineSplitter {
        LineSplitter::default()
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            // Lines already taken are gone; keep only the unfinished tail.
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line without its `\n` or `\r\n`, still holding any telnet sequences
    /// (`parse_line` strips them). `Err` once for a line longer than [`LINE_BYTES_MAX`]; its
    /// bytes are dropped up to and including its `\n`.
    pub fn next_line(&mut self) -> Option<Result<&[u8], String>> {
        loop {
            let Some(end) = self.scan_to_newline() else {
                return self.unfinished_line();
            };
            let line_start = self.start;
            self.start = end + 1;
            self.scanned = end + 1;
            if self.discarding {
                self.discarding = false;
                continue;
            }
            let mut line_end = end;
            if line_end > line_start && self.buf[line_end - 1] == b'\r' {
                line_end -= 1;
            }
            if line_end - line_start > LINE_BYTES_MAX {
                return Some(Err(too_long()));
            }
            return Some(Ok(&self.buf[line_start..line_end]));
        }
    }

    /// Bytes fed and not yet returned as lines (nor dropped).
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Advances `scanned` to the next `\n` that is data, returning its offset.
    fn scan_to_newline(&mut self) -> Option<usize> {
        while self.scanned < self.buf.len() {
            if self.telnet == Telnet::Data {
                // Fast path: plain text up to the next newline or IAC.
                let rest = &self.buf[self.scanned..];
                match rest.iter().position(|&b| b == b'\n' || b == IAC) {
                    None => {
                        self.scanned = self.buf.len();
                        return None;
                    }
                    Some(at) if rest[at] == b'\n' => return Some(self.scanned + at),
                    Some(at) => self.scanned += at,
                }
            }
            let (next, _) = self.telnet.step(self.buf[self.scanned]);
            self.telnet = next;
            self.scanned += 1;
        }
        None
    }

    /// No complete line is buffered: drop or report an unfinished one that is already too long.
    fn unfinished_line(&mut self) -> Option<Result<&[u8], String>> {
        debug_assert_eq!(self.scanned, self.buf.len());
        if self.discarding {
            self.buf.clear();
            self.start = 0;
            self.scanned = 0;
            return None;
        }
        // One more byte than the limit may be the '\r' of a "\r\n" still on its way.
        if self.buf.len() - self.start > LINE_BYTES_MAX + 1 {
            self.buf.clear();
            self.start = 0;
            self.scanned = 0;
            self.discarding = true;
            // A runaway subnegotiation must not swallow the rest of the connection.
            self.telnet = Telnet::Data;
            return Some(Err(too_long()));
        }
        None
    }
}

fn too_long() -> String {
    format!("line longer than {LINE_BYTES_MAX} bytes was dropped: send shorter lines")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(splitter: &mut LineSplitter) -> Vec<Result<Vec<u8>, String>> {
        let mut out = Vec::new();
        while let Some(line) = splitter.next_line() {
            out.push(line.map(<[u8]>::to_vec));
        }
        out
    }

    fn ok(s: &[u8]) -> Result<Vec<u8>, String> {
        Ok(s.to_vec())
    }

    #[test]
    fn strips_negotiation() {
        assert!(matches!(strip_telnet(b"msg hi"), Cow::Borrowed(_)));
        assert_eq!(&*strip_telnet(b"\xff\xfd\x01msg hi"), b"msg hi"); // IAC DO ECHO
        assert_eq!(&*strip_telnet(b"ms\xff\xf1g hi"), b"msg hi"); // IAC NOP mid-word
        assert_eq!(
            &*strip_telnet(b"\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0get chatLog"), // NAWS 80x24
            b"get chatLog"
        );
        assert_eq!(&*strip_telnet(b"a\xff\xffb"), b"a\xffb"); // escaped 0xFF
        assert_eq!(&*strip_telnet(b"\xff\xfa\x18\xff\xff\x00\xff\xf0x"), b"x"); // IAC IAC inside SB
        assert_eq!(&*strip_telnet(b"quit\xff\xfb"), b"quit"); // cut off at the end
        assert_eq!(&*strip_telnet(b"\xff"), b"");
    }

    #[test]
    fn splits_lf_and_crlf_across_feeds() {
        let mut s = LineSplitter::new();
        s.feed(b"one\r\ntwo\nthr");
        assert_eq!(lines(&mut s), vec![ok(b"one"), ok(b"two")]);
        assert_eq!(s.buffered_bytes(), 3);
        s.feed(b"ee\r");
        assert_eq!(lines(&mut s), vec![]);
        s.feed(b"\n\n\r\n");
        assert_eq!(lines(&mut s), vec![ok(b"three"), ok(b""), ok(b"")]);
        assert_eq!(s.buffered_bytes(), 0);
        // Only one trailing '\r' belongs to the terminator; a bare '\r' mid-line stays.
        s.feed(b"a\rb\r\r\n");
        assert_eq!(lines(&mut s), vec![ok(b"a\rb\r")]);
    }

    #[test]
    fn byte_at_a_time_equals_all_at_once() {
        let input =
            b"msg hi\r\n\xff\xfa\x1f\x00\x0a\x00\x0a\xff\xf0get chatLog\r\n\xff\xfd\x0a\nx\n";
        let mut whole = LineSplitter::new();
        whole.feed(input);
        let expected = lines(&mut whole);
        assert_eq!(expected.len(), 4);
        let mut bytewise = LineSplitter::new();
        let mut got = Vec::new();
        for &b in input.iter() {
            bytewise.feed(&[b]);
            got.extend(lines(&mut bytewise));
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn newline_inside_negotiation_does_not_end_a_line() {
        let mut s = LineSplitter::new();
        // A 10x10 window: NAWS carries two 0x0A bytes. And IAC DO option 10.
        s.feed(b"\xff\xfa\x1f\x00\x0a\x00\x0a\xff\xf0msg hi\n\xff\xfd\x0aquit\n");
        let got = lines(&mut s);
        assert_eq!(got.len(), 2);
        assert_eq!(&*strip_telnet(got[0].as_ref().unwrap()), b"msg hi");
        assert_eq!(&*strip_telnet(got[1].as_ref().unwrap()), b"quit");
    }

    #[test]
    fn line_of_exactly_the_limit_passes() {
        let mut s = LineSplitter::new();
        let mut line = vec![b'x'; LINE_BYTES_MAX];
        line.extend_from_slice(b"\r\n");
        s.feed(&line);
        let got = lines(&mut s);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().unwrap().len(), LINE_BYTES_MAX);
    }

    #[test]
    fn over_long_complete_line_is_one_error() {
        let mut s = LineSplitter::new();
        let mut input = vec![b'x'; LINE_BYTES_MAX + 1];
        input.extend_from_slice(b"\nnext\n");
        s.feed(&input);
        let got = lines(&mut s);
        assert_eq!(got.len(), 2);
        assert!(got[0].as_ref().unwrap_err().contains("send shorter lines"));
        assert_eq!(got[1], ok(b"next"));
    }

    #[test]
    fn over_long_streaming_line_is_one_error_and_bounded_memory() {
        let mut s = LineSplitter::new();
        let chunk = vec![b'y'; 4096];
        let mut errors = 0;
        for _ in 0..100 {
            s.feed(&chunk);
            for line in lines(&mut s) {
                assert!(line.is_err());
                errors += 1;
            }
            assert!(s.buffered_bytes() <= LINE_BYTES_MAX + 1 + chunk.len());
        }
        assert_eq!(errors, 1);
        s.feed(b"tail of the long line\r\nmsg after\r\n");
        assert_eq!(lines(&mut s), vec![ok(b"msg after")]);
    }

    #[test]
    fn runaway_subnegotiation_is_cut_by_the_limit() {
        let mut s = LineSplitter::new();
        s.feed(b"\xff\xfa\x18"); // IAC SB TERMINAL-TYPE, never ended
        s.feed(&vec![b'\n'; LINE_BYTES_MAX + 2]);
        assert_eq!(lines(&mut s).len(), 1, "one error");
        s.feed(b"rest\nmsg ok\n");
        assert_eq!(lines(&mut s), vec![ok(b"msg ok")]);
    }
}
