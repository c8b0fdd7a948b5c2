//! What a connection's bytes travel on: a plain TCP stream or a TLS session over one
//! ([`crate::tls::TlsStream`]). `Read`/`Write` hand plaintext either way, so [`super::Buffers`]
//! and everything above the transport never know which it is.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;

use crate::tls::{self, TlsStream};

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while a plain stream is being wrapped in a TLS session.
    Detached,
}

impl Stream {
    /// The socket underneath (to register it with mio).
    pub fn tcp(&mut self) -> Option<&mut TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(t) => Some(t.get_mut()),
            Stream::Detached => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    pub fn handshaking(&self) -> bool {
        matches!(self, Stream::Tls(t) if t.is_handshaking())
    }

    /// Wraps a plain stream in the accepting side of a TLS session.
    pub fn accept_tls(&mut self, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
        match std::mem::replace(self, Stream::Detached) {
            Stream::Plain(s) => {
                *self = Stream::Tls(Box::new(TlsStream::server(config, s)?));
                Ok(())
            }
            other => {
                *self = other;
                Ok(())
            }
        }
    }

    /// Writes TLS records rustls still holds (handshake messages, encrypted output).
    pub fn flush_tls(&mut self) -> io::Result<()> {
        match self {
            Stream::Tls(t) => t.flush_tls().map(|_| ()),
            _ => Ok(()),
        }
    }

    /// The certificates the other end presented, on a TLS stream.
    pub fn peer_certificates(&self) -> Option<&[rustls_pki_types::CertificateDer<'static>]> {
        match self {
            Stream::Tls(t) => t.peer_certificates(),
            _ => None,
        }
    }
}

fn detached() -> io::Error {
    io::Error::from(io::ErrorKind::NotConnected)
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => match t.read_plaintext(buf) {
                Ok(tls::ReadOutcome::Data(n)) => Ok(n),
                Ok(tls::ReadOutcome::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
                Ok(tls::ReadOutcome::Closed) => Ok(0),
                Err(e) => {
                    // Say why (no certificate, another CA's, garbage): the caller only closes.
                    let peer = t.get_ref().peer_addr().map(|a| a.to_string());
                    let peer = peer.unwrap_or_else(|_| "?".into());
                    if t.is_handshaking() {
                        log::warn!("refused a TLS connection from {peer}: {e}");
                    } else {
                        log::info!("closed a TLS connection from {peer}: {e}");
                    }
                    Err(e)
                }
            },
            Stream::Detached => Err(detached()),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write_plaintext(buf),
            Stream::Detached => Err(detached()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}
