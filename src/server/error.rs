//! Why a node stopped with an error.

use std::io;

use crate::storage::StorageError;

#[derive(Debug)]
pub enum ServerError {
    /// The listener or the poller could not be set up.
    Io { context: String, source: io::Error },
    /// The write-ahead log failed: the node stops rather than acknowledge what is not on disk.
    Storage(StorageError),
    /// A snapshot on disk or from a leader could not be loaded into the state machine.
    Snapshot(String),
    /// A TLS file (`--cert --key --ca`) is missing, unreadable, expired or does not match.
    Tls(crate::tls::TlsFileError),
    /// The node cannot start as asked (no identity and nothing to bootstrap or join from).
    Config(String),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Io { context, source } => write!(f, "{context}: {source}"),
            ServerError::Storage(e) => write!(f, "storage failed, node stopped: {e}"),
            ServerError::Snapshot(why) => write!(f, "snapshot unusable, node stopped: {why}"),
            ServerError::Tls(e) => write!(f, "{e}"),
            ServerError::Config(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for ServerError {}

impl From<StorageError> for ServerError {
    fn from(e: StorageError) -> Self {
        ServerError::Storage(e)
    }
}
