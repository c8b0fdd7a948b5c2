//! One blocking binary-protocol connection to one node, plain or over TLS
//! ([`super::tls::ClientStream`]): preamble, buffered frame writes, and buffered frame reads with
//! deadlines.
//!
//! It owns a socket and its two buffers. It never retries, never picks a node, never interprets
//! an answer: that is [`super::Session`]'s job. Reads are made in large chunks and writes are
//! batched (`queue` many frames, `flush` once), so a pipelined caller makes one syscall per
//! batch, not per message.
//!
//! Deadlines are enforced with `SO_RCVTIMEO`, which Linux rounds up to the scheduler tick
//! (several ms): fine for request timeouts, too coarse to pace an open-loop load generator
//! (which drives [`super::SessionCore`] from a mio loop instead).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::proto::{self, Answer, Request};
use super::tls::{ClientStream, ClientTls};

/// How long [`Connection::connect`] waits for the TCP handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`Connection::recv`] and [`Connection::call`] wait for an answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A blocked write fails after this long (the peer stopped reading).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes asked of the kernel per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Connects to `addr`, turns off Nagle (frames are batched by the caller already) and sends the
/// protocol preamble. The stream is blocking; a mio driver may switch it to non-blocking.
pub fn connect_stream(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut preamble = Vec::with_capacity(proto::PREAMBLE_LEN);
    proto::encode_preamble(&mut preamble);
    stream.write_all(&preamble)?;
    Ok(stream)
}

/// Connects to `addr` (over TLS if `tls`, handshake included in `timeout`) and sends the
/// protocol preamble. The stream is blocking; a mio driver may switch it to non-blocking.
pub fn connect_client_stream(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> io::Result<ClientStream> {
    let mut stream = ClientStream::connect(addr, timeout, WRITE_TIMEOUT, tls)?;
    let mut preamble = Vec::with_capacity(proto::PREAMBLE_LEN);
    proto::encode_preamble(&mut preamble);
    stream.write_all(&preamble)?;
    stream.flush()?;
    Ok(stream)
}

/// Resolves `addr` (`"127.0.0.1:20000"`, a `SocketAddr`, ...) to its first address.
pub fn resolve<A: ToSocketAddrs>(addr: A) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing"))
}

/// A blocking connection speaking the binary protocol.
pub struct Connection {
    stream: ClientStream,
    peer: SocketAddr,
    /// Unread bytes are `input[start..end]`; `input.len()` is the buffer's size.
    input: Vec<u8>,
    start: usize,
    end: usize,
    /// Frames queued but not yet written.
    output: Vec<u8>,
    /// The `SO_RCVTIMEO` currently set, to skip redundant setsockopt calls.
    read_timeout: Option<Duration>,
    next_req_id: u64,
}

impl Connection {
    /// Connects to `addr` and sends the preamble.
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<Connection> {
        Connection::connect_timeout(resolve(addr)?, CONNECT_TIMEOUT)
    }

    pub fn connect_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<Connection> {
        Connection::open(addr, timeout, None)
    }

    /// Connects to `addr` within `timeout`, over TLS when `tls` is given (the node is verified
    /// as `addr`'s IP), and sends the preamble.
    pub fn open(
        addr: SocketAddr,
        timeout: Duration,
        tls: Option<&ClientTls>,
    ) -> io::Result<Connection> {
        let stream = connect_client_stream(addr, timeout, tls)?;
        // A TLS handshake leaves the socket's read timeout set; the first recv sets its own.
        let read_timeout = stream.is_tls().then_some(timeout);
        Ok(Connection {
            stream,
            peer: addr,
            input: vec![0; READ_CHUNK_BYTES],
            start: 0,
            end: 0,
            output: Vec::new(),
            read_timeout,
            next_req_id: 1,
        })
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// A fresh request id for this connection (1, 2, 3, ...).
    pub fn next_req_id(&mut self) -> u64 {
        let id = self.next_req_id;
        self.next_req_id += 1;
        id
    }

    /// Encodes `req` into the output buffer without writing it. `InvalidInput` if a field is
    /// too long for the protocol (nothing is queued then).
    pub fn queue(&mut self, req: &Request) -> io::Result<()> {
        req.check_encodable()?;
        req.encode(&mut self.output);
        Ok(())
    }

    /// Appends already-encoded frames to the output buffer.
    pub fn queue_encoded(&mut self, frames: &[u8]) {
        self.output.extend_from_slice(frames);
    }

    /// Writes every queued frame (one `write` for the whole batch, as far as the kernel allows).
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.output.is_empty() {
            let result = self
                .stream
                .write_all(&self.output)
                .and_then(|()| self.stream.flush());
            self.output.clear();
            result?;
        }
        Ok(())
    }

    /// Queues and flushes one request.
    pub fn send(&mut self, req: &Request) -> io::Result<()> {
        self.queue(req)?;
        self.flush()
    }

    /// The next answer already in the read buffer, without any IO.
    pub fn try_recv(&mut self) -> io::Result<Option<Answer>> {
        match proto::decode_answer(&self.input[self.start..self.end])? {
            None => Ok(None),
            Some((answer, used)) => {
                self.start += used;
                debug_assert!(self.start <= self.end);
                Ok(Some(answer))
            }
        }
    }

    /// The next answer, reading as needed until `deadline` (`None`: no deadline).
    /// `Ok(None)` when the deadline passes first. A closed connection is `UnexpectedEof`;
    /// bytes that are not this protocol are `InvalidData`.
    pub fn recv_until(&mut self, deadline: Option<Instant>) -> io::Result<Option<Answer>> {
        loop {
            if let Some(answer) = self.try_recv()? {
                return Ok(Some(answer));
            }
            let timeout = match deadline {
                None => None,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(None),
                },
            };
            self.set_read_timeout(timeout)?;
            match self.fill() {
                Ok(()) => {}
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next answer within [`READ_TIMEOUT`]; `TimedOut` otherwise.
    pub fn recv(&mut self) -> io::Result<Answer> {
        self.recv_until(Some(Instant::now() + READ_TIMEOUT))?
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::TimedOut, "no answer within the read timeout")
            })
    }

    /// Sends `req` and waits for the answer naming its req_id; answers to other requests that
    /// arrive meanwhile are dropped (use `send`/`recv` to pipeline).
    pub fn call(&mut self, req: &Request) -> io::Result<Answer> {
        self.send(req)?;
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            match self.recv_until(Some(deadline))? {
                Some(answer) if answer.req_id() == req.req_id() => return Ok(answer),
                Some(_) => {}
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no answer within the read timeout",
                    ))
                }
            }
        }
    }

    /// Whether this connection speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Gives up the stream (plain, or the TLS session with its socket), with whatever was read
    /// but not decoded yet.
    pub fn into_parts(mut self) -> io::Result<(ClientStream, Vec<u8>)> {
        self.flush()?;
        let leftover = self.input[self.start..self.end].to_vec();
        Ok((self.stream, leftover))
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout != self.read_timeout {
            self.stream.tcp().set_read_timeout(timeout)?;
            self.read_timeout = timeout;
        }
        Ok(())
    }

    /// One `read` into the buffer, after making room for at least the frame being assembled.
    fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let pending = &self.input[self.start..self.end];
        // A frame claiming more than BODY_LEN_MAX fails in decode before we get here, so the
        // buffer never grows past one maximal frame plus a read chunk.
        let frame_len = proto::frame_len_hint(pending).unwrap_or(0);
        let want = frame_len.max(self.end - self.start) + READ_CHUNK_BYTES;
        if self.input.len() - self.start < want {
            self.input.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.input.len() < want {
                self.input.resize(want, 0);
            }
        } else if self.input.len() - self.end < READ_CHUNK_BYTES / 2 {
            self.input.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.stream.read(&mut self.input[self.end..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by the node",
            ));
        }
        self.end += n;
        Ok(())
    }
}

/// Whether `e` is a read timeout (Unix reports `WouldBlock`, others `TimedOut`).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
