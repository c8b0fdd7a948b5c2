//! A connection's read buffer: non-blocking reads, decoded answers. No writes, no session.

use std::io::{self, Read};

use mio::net::TcpStream;
use raftchat::client::proto::{self, Answer};

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
    /// poller saw the peer's side close, so read to EOF even after a short read.
    pub fn read_from(&mut self, stream: &mut TcpStream, read_closed: bool) -> io::Result<bool> {
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
                Ok(0) => return Ok(false),
                // A short read emptied the socket (edge-triggered: new data wakes us again).
                Ok(n) if n < asked && !read_closed => {
                    self.end += n;
                    return Ok(true);
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
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
