//! A non-blocking TLS session over any `Read + Write` byte stream (a mio `TcpStream` in the
//! node, std sockets in tests), in the shape of rustls' mio example: on readable, read TLS
//! records and process them; write TLS records while rustls wants to and the socket takes
//! them; `wants_write` tells the transport whether to ask for writable events. Also the
//! one-byte sniff that tells a TLS ClientHello from the plain peer handshake or telnet.
//! Never blocks, never spawns, never panics on what the other side sends: a protocol error is
//! an `io::Error` of kind `InvalidData` (after a best-effort alert to the peer).

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use rustls_pki_types::{CertificateDer, ServerName};

/// The most plaintext a session buffers for sending before `write_plaintext` refuses more
/// (also applies to plaintext queued while the handshake is still running).
pub const PLAINTEXT_BUFFER_BYTES_MAX: usize = 256 * 1024;

/// TLS record content type "handshake": the first byte of every ClientHello.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// True if `first_bytes` (at least one) can be the start of a TLS ClientHello record: content
/// type handshake, protocol major version 3, then handshake type 1 (ClientHello). Only as many
/// bytes as given are checked, so the first byte alone decides a one-byte prefix.
pub fn looks_like_client_hello(first_bytes: &[u8]) -> bool {
    const CLIENT_HELLO: u8 = 0x01;
    match first_bytes {
        [] => false,
        [t, rest @ ..] if *t == TLS_HANDSHAKE_RECORD => {
            let major_ok = rest.first().is_none_or(|m| *m == 0x03);
            let hello_ok = rest.get(4).is_none_or(|h| *h == CLIENT_HELLO);
            major_ok && hello_ok
        }
        _ => false,
    }
}

/// What one `read_plaintext` call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many plaintext bytes were copied into the buffer.
    Data(usize),
    /// Nothing more until the socket is readable again (handshake records may have been
    /// processed; check `wants_write`).
    WouldBlock,
    /// The peer closed the connection (with or without close_notify) and everything it sent
    /// has been read.
    Closed,
}

/// A rustls session (either side) over a non-blocking byte stream.
pub struct TlsStream<S> {
    conn: Connection,
    sock: S,
    socket_eof: bool,
}

fn invalid_data(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<S: Read + Write> TlsStream<S> {
    /// The accepting side of a session on `sock`.
    pub fn server(config: Arc<ServerConfig>, sock: S) -> io::Result<Self> {
        let conn = ServerConnection::new(config).map_err(invalid_data)?;
        Ok(Self::with(Connection::Server(conn), sock))
    }

    /// The dialling side of a session on `sock`, verifying the other end as `name`.
    pub fn client(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        sock: S,
    ) -> io::Result<Self> {
        let conn = ClientConnection::new(config, name).map_err(invalid_data)?;
        Ok(Self::with(Connection::Client(conn), sock))
    }

    /// The dialling side of a session already under way (say, handshaken on a blocking socket
    /// that is now `sock`, the same connection made non-blocking). Plaintext the session has
    /// decrypted but not handed out yet is read first.
    pub fn resume_client(conn: ClientConnection, sock: S) -> Self {
        Self::with(Connection::Client(conn), sock)
    }

    fn with(mut conn: Connection, sock: S) -> Self {
        conn.set_buffer_limit(Some(PLAINTEXT_BUFFER_BYTES_MAX));
        TlsStream {
            conn,
            sock,
            socket_eof: false,
        }
    }

    /// The underlying stream (to register it with mio, or to read its address).
    pub fn get_ref(&self) -> &S {
        &self.sock
    }

    /// The underlying stream, mutably (for mio's `register`/`reregister`).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.sock
    }

    /// True until the handshake has completed.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// True while TLS records wait to be written: ask for writable events then.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// The certificates the other side presented (end entity first), once the handshake got
    /// that far; `None` if it presented none.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// Copies available plaintext into `buf`, reading and processing TLS records from the
    /// socket as needed (which may also advance the handshake and queue records to write:
    /// this call writes what it can of them at once). It returns as soon as it has data, so
    /// with mio's edge-triggered readiness call it until `WouldBlock` or `Closed`.
    pub fn read_plaintext(&mut self, buf: &mut [u8]) -> io::Result<ReadOutcome> {
        if buf.is_empty() {
            return Ok(ReadOutcome::Data(0));
        }
        loop {
            if let Some(outcome) = self.take_plaintext(buf)? {
                return Ok(outcome);
            }
            if self.socket_eof {
                return Ok(ReadOutcome::Closed);
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => self.socket_eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(ReadOutcome::WouldBlock)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.process()?;
        }
    }

    /// Plaintext already decrypted: `Some(Data)` or `Some(Closed)`, `None` if more is needed.
    fn take_plaintext(&mut self, buf: &mut [u8]) -> io::Result<Option<ReadOutcome>> {
        match self.conn.reader().read(buf) {
            Ok(0) => Ok(Some(ReadOutcome::Closed)),
            Ok(n) => Ok(Some(ReadOutcome::Data(n))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Some(ReadOutcome::Closed)),
            Err(e) => Err(e),
        }
    }

    /// Processes received records; on a protocol error sends the alert rustls queued. Writes
    /// what the records called for (handshake messages) at once, best effort: a write error
    /// here must not hide plaintext already received, and it shows again on the transport's
    /// own `flush_tls` (which it calls while `wants_write`).
    fn process(&mut self) -> io::Result<()> {
        let processed = self.conn.process_new_packets();
        let _ = self.flush_tls();
        processed.map(|_| ()).map_err(invalid_data)
    }

    /// Queues plaintext for sending (encrypted once the handshake is done) and writes what
    /// the socket takes. Returns how many bytes were accepted; `WouldBlock` if the buffer
    /// (`PLAINTEXT_BUFFER_BYTES_MAX`) is full.
    pub fn write_plaintext(&mut self, data: &[u8]) -> io::Result<usize> {
        let accepted = self.conn.writer().write(data)?;
        self.flush_tls()?;
        if accepted == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(accepted)
    }

    /// Writes queued TLS records until none are left (`Ok(true)`) or the socket would block
    /// (`Ok(false)`: wait for writable).
    pub fn flush_tls(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Queues a close_notify alert and writes what the socket takes.
    pub fn close(&mut self) -> io::Result<bool> {
        self.conn.send_close_notify();
        self.flush_tls()
    }
}
