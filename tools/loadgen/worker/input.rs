//! A connection's read buffer: non-blocking reads, decoded answers. No writes, no session.

use std::io;

use raftchat::client::proto::{self, Answer};
use raftchat::tls::ReadOutcome;

use super::stream::Stream;
use super::READ_CHUNK_BYTES;

/// A non-blocking read buffer of answers.
pub struct Input {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Input {
    pub fn new() -> Input {
        Input {
            buf: vec![0; READ_CHUNK_BYTES],
            start: 0,
            end: 0,
        }
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Reads until the socket would block. `Ok(false)`: the peer closed. `read_closed`: the
    /// poller saw the peer's side close, so read to EOF even after a short read (and over TLS
    /// a short read never ends the loop: see [`Stream::short_read_means_empty`]).
    pub fn read_from(&mut self, stream: &mut Stream, read_closed: bool) -> io::Result<bool> {
        let stop_on_short_read = stream.short_read_means_empty() && !read_closed;
        loop {
            if self.start == self.end {
                self.clear();
            }
            let frame_len = proto::frame_len_hint(&self.buf[self.start..self.end]).unwrap_or(0);
            let want = frame_len.max(self.end - self.start) + READ_CHUNK_BYTES / 4;
            if self.buf.len() - self.start < want
                || self.buf.len() - self.end < READ_CHUNK_BYTES / 4
            {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.buf.len() < want {
                    self.buf.resize(want, 0);
                }
            }
            let asked = self.buf.len() - self.end;
            match stream.read(&mut self.buf[self.end..]) {
                Ok(ReadOutcome::Closed) => return Ok(false),
                // A short plain read emptied the socket (edge-triggered: new data wakes us).
                Ok(ReadOutcome::Data(n)) if n < asked && stop_on_short_read => {
                    self.end += n;
                    return Ok(true);
                }
                Ok(ReadOutcome::Data(n)) => self.end += n,
                Ok(ReadOutcome::WouldBlock) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub fn next_answer(&mut self) -> Result<Option<Answer>, proto::ProtoError> {
        match proto::decode_answer(&self.buf[self.start..self.end])? {
            None => Ok(None),
            Some((answer, used)) => {
                self.start += used;
                Ok(Some(answer))
            }
        }
    }
}
