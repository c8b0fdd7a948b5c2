//! Byte plumbing for one non-blocking stream (TCP or TLS plaintext): a bounded input buffer filled until
//! `WouldBlock`, and an output buffer drained on writability with partial writes kept.
//!
//! Owns no protocol: what the bytes mean is decided by the caller (telnet, peer, ...).

use std::io::{self, Read, Write};

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
    /// Unconsumed input is `input[input_pos..input_end]`. The vector's length is its zeroed
    /// capacity: it is zeroed once when it grows, never per read.
    input: Vec<u8>,
    input_pos: usize,
    input_end: usize,
    /// Unsent output is `output[output_pos..]`.
    output: Vec<u8>,
    output_pos: usize,
    /// The poller reported the peer's end closed (or the socket failed): read to the end,
    /// since an EOF queued behind data raises no further event.
    read_closed: bool,
}

impl Buffers {
    /// Called when the poller reports the peer's side closed or the socket in error: from
    /// then on every read continues until EOF or `WouldBlock`.
    pub fn note_read_closed(&mut self) {
        self.read_closed = true;
    }

    /// Reads until `WouldBlock`, EOF, an error, or `input_bytes_max` unconsumed bytes.
    /// `short_read_empties`: a read that returns less than asked means the socket's queue is
    /// empty, so the loop may stop there. True of a plain TCP socket; not of a TLS session,
    /// whose reads return one record's plaintext while more records wait in the socket.
    pub fn read_from(
        &mut self,
        stream: &mut impl Read,
        input_bytes_max: usize,
        short_read_empties: bool,
    ) -> ReadOutcome {
        loop {
            if self.input_end - self.input_pos >= input_bytes_max {
                return ReadOutcome::Full;
            }
            // Idle connections (a thousand telnet prompts) keep a small buffer; busy ones grow.
            let chunk_bytes = if self.input.len() < READ_CHUNK_BYTES {
                4096
            } else {
                READ_CHUNK_BYTES
            };
            if self.input.len() - self.input_end < chunk_bytes {
                // Move the unconsumed tail to the front; grow only if that is not enough.
                self.input.copy_within(self.input_pos..self.input_end, 0);
                self.input_end -= self.input_pos;
                self.input_pos = 0;
                if self.input.len() - self.input_end < chunk_bytes {
                    let grown = (self.input.len() * 2).max(self.input_end + chunk_bytes);
                    self.input.resize(grown, 0);
                }
            }
            let asked = self.input.len() - self.input_end;
            match stream.read(&mut self.input[self.input_end..]) {
                Ok(0) => return ReadOutcome::Closed,
                // A short read emptied the socket's queue: anything arriving later raises a
                // new edge-triggered event, so the read that would only say WouldBlock is
                // skipped (a third of the loop's syscalls at one message per connection).
                Ok(n) if n < asked && short_read_empties && !self.read_closed => {
                    self.input_end += n;
                    return ReadOutcome::Open;
                }
                Ok(n) => self.input_end += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return ReadOutcome::Closed,
            }
        }
    }

    /// The bytes read but not yet consumed.
    pub fn input(&self) -> &[u8] {
        &self.input[self.input_pos..self.input_end]
    }

    /// Marks `n` input bytes as handled.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(self.input_pos + n <= self.input_end);
        self.input_pos += n;
        if self.input_pos == self.input_end {
            self.input_pos = 0;
            self.input_end = 0;
        }
    }

    /// Where to append output. Callers check `pending_output` against their bound.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    pub fn pending_output(&self) -> usize {
        self.output.len() - self.output_pos
    }

    /// Writes until the output is empty or the socket would block. `Err` means the peer is gone.
    pub fn write_to(&mut self, stream: &mut impl Write) -> io::Result<()> {
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
        self.input_pos = 0;
        self.input_end = 0;
        self.output.clear();
        self.output_pos = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::{Duration, Instant};

    use super::{Buffers, ReadOutcome};

    /// A connected pair: a std stream to write from, the node's mio end to read from.
    fn pair() -> (std::net::TcpStream, mio::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let writer =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        accepted.set_nonblocking(true).expect("non-blocking");
        (writer, mio::net::TcpStream::from_std(accepted))
    }

    /// Reads until `want` bytes arrived (loopback delivers quickly, but never assume it).
    fn read_until(b: &mut Buffers, s: &mut mio::net::TcpStream, want: usize) -> ReadOutcome {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let outcome = b.read_from(s, 1 << 20, true);
            if b.input().len() >= want || outcome != ReadOutcome::Open {
                return outcome;
            }
            assert!(Instant::now() < deadline, "bytes never arrived");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_short_read_stops_without_a_would_block_read_unless_the_peer_closed() {
        // Data then EOF, both queued before the node reads: a short read takes the data and
        // stops (edge-triggered polling reports later arrivals anew), so the EOF is seen
        // only once the poller has said the peer's side closed.
        let (mut writer, mut stream) = pair();
        writer.write_all(b"status\n").expect("write");
        writer
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        let mut b = Buffers::default();
        assert_eq!(read_until(&mut b, &mut stream, 7), ReadOutcome::Open);
        assert_eq!(b.input(), b"status\n");
        b.consume(7);
        b.note_read_closed();
        assert_eq!(b.read_from(&mut stream, 1 << 20, true), ReadOutcome::Closed);
    }
}
