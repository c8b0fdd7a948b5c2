//! Byte plumbing for one non-blocking TCP stream: a bounded input buffer filled until
//! `WouldBlock`, and an output buffer drained on writability with partial writes kept.
//!
//! Owns no protocol: what the bytes mean is decided by the caller (telnet, peer, ...).

use std::io::{self, Read, Write};

use mio::net::TcpStream;

/// Bytes read per `read` call.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The result of draining a socket's readable bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Everything available was read; the peer is still there.
    Open,
    /// The peer closed its side (`read` returned 0) or the socket failed.
    Closed,
    /// The input buffer reached its bound: the caller must consume before reading more.
    Full,
}

/// Input and output buffers for one stream.
#[derive(Debug, Default)]
pub struct Buffers {
    /// Unconsumed input is `input[input_pos..]`.
    input: Vec<u8>,
    input_pos: usize,
    /// Unsent output is `output[output_pos..]`.
    output: Vec<u8>,
    output_pos: usize,
}

impl Buffers {
    /// Reads until `WouldBlock`, EOF, an error, or `input_bytes_max` unconsumed bytes.
    pub fn read_from(&mut self, stream: &mut TcpStream, input_bytes_max: usize) -> ReadOutcome {
        if self.input_pos > 0 && self.input_pos == self.input.len() {
            self.input.clear();
            self.input_pos = 0;
        }
        loop {
            if self.input.len() - self.input_pos >= input_bytes_max {
                return ReadOutcome::Full;
            }
            if self.input_pos > 0 && self.input.len() + READ_CHUNK_BYTES > self.input.capacity() {
                // Move the unconsumed tail to the front instead of growing.
                self.input.drain(..self.input_pos);
                self.input_pos = 0;
            }
            let start = self.input.len();
            self.input.resize(start + READ_CHUNK_BYTES, 0);
            match stream.read(&mut self.input[start..]) {
                Ok(0) => {
                    self.input.truncate(start);
                    return ReadOutcome::Closed;
                }
                Ok(n) => self.input.truncate(start + n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.input.truncate(start);
                    return ReadOutcome::Open;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.input.truncate(start),
                Err(_) => {
                    self.input.truncate(start);
                    return ReadOutcome::Closed;
                }
            }
        }
    }

    /// The bytes read but not yet consumed.
    pub fn input(&self) -> &[u8] {
        &self.input[self.input_pos..]
    }

    /// Marks `n` input bytes as handled.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(self.input_pos + n <= self.input.len());
        self.input_pos += n;
    }

    /// Where to append output. Callers check `pending_output` against their bound.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    pub fn pending_output(&self) -> usize {
        self.output.len() - self.output_pos
    }

    /// Writes until the output is empty or the socket would block. `Err` means the peer is gone.
    pub fn write_to(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        while self.output_pos < self.output.len() {
            match stream.write(&self.output[self.output_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.output_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.output_pos == self.output.len() {
            self.output.clear();
            self.output_pos = 0;
        } else if self.output_pos > (1 << 20) && self.output_pos * 2 > self.output.len() {
            self.output.drain(..self.output_pos);
            self.output_pos = 0;
        }
        Ok(())
    }

    /// Drops unsent output (a peer connection that was reset starts from a clean slate).
    pub fn clear(&mut self) {
        self.input.clear();
        self.input_pos = 0;
        self.output.clear();
        self.output_pos = 0;
    }
}
