//! A connection's socket on the shard's mio poll: plain TCP, or a TLS session
//! ([`TlsStream`], the same non-blocking rustls driver the node uses) whose handshake the
//! blocking client library already finished. Reads hand back plaintext; writes take plaintext.
//! Nothing here knows the protocol.

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use raftchat::client::ClientStream;
use raftchat::tls::{ReadOutcome, TlsStream};

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Takes over a blocking connection (plain or TLS) made by the client library, non-blocking
    /// from now on, and registers it under `token`.
    pub fn adopt(registry: &Registry, token: Token, stream: ClientStream) -> io::Result<Stream> {
        let mut stream = match stream {
            ClientStream::Plain(tcp) => {
                tcp.set_nonblocking(true)?;
                Stream::Plain(TcpStream::from_std(tcp))
            }
            ClientStream::Tls(tls) => {
                let (conn, tcp) = tls.into_parts();
                tcp.set_nonblocking(true)?;
                let tcp = TcpStream::from_std(tcp);
                Stream::Tls(Box::new(TlsStream::resume_client(conn, tcp)))
            }
        };
        registry.register(
            stream.socket(),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(stream)
    }

    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_mut(),
        }
    }

    /// A plain read shorter than asked means the socket is empty (edge-triggered readiness
    /// will say when more comes). A TLS read returns one record's plaintext at a time while
    /// more records may wait, so only `WouldBlock` means empty there.
    pub fn short_read_means_empty(&self) -> bool {
        matches!(self, Stream::Plain(_))
    }

    /// Plaintext into `buf`.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<ReadOutcome> {
        match self {
            Stream::Plain(s) => match s.read(buf) {
                Ok(0) => Ok(ReadOutcome::Closed),
                Ok(n) => Ok(ReadOutcome::Data(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadOutcome::WouldBlock),
                Err(e) => Err(e),
            },
            Stream::Tls(s) => s.read_plaintext(buf),
        }
    }

    /// Writes (or, over TLS, takes for encryption) a prefix of `data`; `WouldBlock` when
    /// nothing fits now.
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(data),
            Stream::Tls(s) => s.write_plaintext(data),
        }
    }

    /// Writes TLS records still queued; `Ok(false)` while some wait for the socket.
    pub fn flush(&mut self) -> io::Result<bool> {
        match self {
            Stream::Plain(_) => Ok(true),
            Stream::Tls(s) => s.flush_tls(),
        }
    }
}
