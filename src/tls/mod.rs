//! TLS building blocks for the node's single mio loop: certificate files loaded with precise
//! errors and turned into rustls configurations ([`config`]), the node id carried by a peer
//! certificate ([`identity`]), a non-blocking TLS session over any `Read + Write` stream
//! ([`stream`]), a node's configurations built and reloaded as one ([`node`]) and certificate
//! generation for local clusters and tests ([`gen`]).
//!
//! Everything here uses rustls with the `ring` provider (never aws-lc-rs, which compiles C).
//! This module never opens sockets, never spawns threads and never touches the event loop:
//! the transport layer owns the sockets and drives [`stream::TlsStream`] from readiness events.
//!
//! Peers authenticate each other with certificates signed by the cluster CA whose subject CN is
//! `node-<id>`; the dialling side names the peer it expects with [`config::peer_server_name`],
//! and the accepting side checks the id with [`identity::check_peer_id`] once the handshake is
//! done.

pub mod config;
pub mod gen;
pub mod identity;
pub mod node;
pub mod stream;

pub use config::{ClientCertPolicy, TlsFileError, TlsFiles, TlsMaterial};
pub use identity::{check_peer_id, node_id_of, IdentityError};
pub use node::{ClientTlsMode, NodeTls, NodeTlsOptions};
pub use stream::{looks_like_client_hello, ReadOutcome, TlsStream, TLS_HANDSHAKE_RECORD};

/// The crypto provider every configuration in this module is built on: rustls' `ring` provider.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests;
