//! TLS for the client library: what a client trusts (the cluster CA) and, for a node started
//! with `--client-cert-auth`, the certificate it presents; and the blocking byte stream a
//! [`super::Connection`] reads and writes, plain TCP or a finished TLS session.
//!
//! The node is verified as the address dialled (its IP must be in the certificate's SAN, as the
//! `certs` tool and `cluster --tls` write them), with rustls' standard checks
//! ([`crate::tls::config::client_config`]). The handshake completes inside
//! [`ClientStream::connect`], so a wrong CA or a missing client certificate fails the connect,
//! not a later read. Never used inside a node.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;

use crate::tls::config::{client_config, load_ca, CertRole};
use crate::tls::{TlsFileError, TlsFiles};

/// How a client reaches nodes over TLS; cheap to clone (one shared rustls configuration).
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl ClientTls {
    /// Trusts the CA certificate(s) in `ca`; presents no certificate.
    pub fn trusting(ca: &Path) -> Result<ClientTls, TlsFileError> {
        let config = client_config(load_ca(ca)?, None)?;
        Ok(ClientTls { config })
    }

    /// Trusts `files.ca` and presents `files.cert` (key `files.key`), for a node running with
    /// `--client-cert-auth`. The certificate must chain to that CA.
    pub fn with_identity(files: &TlsFiles) -> Result<ClientTls, TlsFileError> {
        let material = files.load(CertRole::Client)?;
        let config = client_config(material.roots.clone(), Some(&material))?;
        Ok(ClientTls { config })
    }

    /// A configuration built elsewhere (tests, other trust setups).
    pub fn from_config(config: Arc<ClientConfig>) -> ClientTls {
        ClientTls { config }
    }

    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }
}

/// A connected byte stream: plain TCP, or a TLS session whose handshake has completed.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl ClientStream {
    /// Connects to `addr` within `timeout` (TCP connect, then the TLS handshake if `tls`),
    /// with Nagle off and `write_timeout` on the socket. The read timeout is left at `timeout`
    /// after a TLS handshake and unset otherwise: callers set their own.
    pub fn connect(
        addr: SocketAddr,
        timeout: Duration,
        write_timeout: Duration,
        tls: Option<&ClientTls>,
    ) -> io::Result<ClientStream> {
        let deadline = Instant::now() + timeout;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(write_timeout))?;
        let Some(tls) = tls else {
            return Ok(ClientStream::Plain(stream));
        };
        let name = ServerName::IpAddress(addr.ip().into());
        let conn = ClientConnection::new(Arc::clone(&tls.config), name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut tls_stream = StreamOwned::new(conn, stream);
        while tls_stream.conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TLS handshake with {addr} did not finish within {timeout:?}"),
                ));
            }
            tls_stream.sock.set_read_timeout(Some(left))?;
            let StreamOwned { conn, sock } = &mut tls_stream;
            conn.complete_io(sock)
                .map_err(|e| handshake_error(addr, e))?;
        }
        Ok(ClientStream::Tls(Box::new(tls_stream)))
    }

    /// The TCP socket underneath (for timeouts and addresses).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(s) => s,
            ClientStream::Tls(s) => &s.sock,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }
}

/// Names the node in a failed handshake, keeping the error's kind (a certificate the CA does
/// not vouch for is `InvalidData`).
fn handshake_error(addr: SocketAddr, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("TLS handshake with {addr}: {e}"))
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.read(buf),
            ClientStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.write(buf),
            ClientStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.flush(),
            ClientStream::Tls(s) => s.flush(),
        }
    }
}
