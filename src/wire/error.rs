//! `WireError`: every way bytes from a peer can fail to be a frame or a handshake.
//!
//! Each of these is the peer's fault (or the network's), never ours: the server logs it and
//! closes the connection. Nothing in the wire layer panics on input instead of returning one.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// A connection did not start with the expected magic bytes.
    BadMagic,
    /// The peer speaks a protocol version we do not.
    BadVersion(u16),
    /// A frame header claims a body longer than `FRAME_BYTES_MAX` (the claimed length).
    FrameTooLarge(usize),
    /// The CRC32C of a frame or handshake does not match its bytes.
    BadChecksum,
    /// A frame type this decoder does not know.
    UnknownType(u8),
    /// A frame whose checksum is good but whose body does not parse (the reason).
    Malformed(&'static str),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BadMagic => write!(f, "bad magic bytes"),
            WireError::BadVersion(version) => write!(f, "unsupported protocol version {version}"),
            WireError::FrameTooLarge(body_bytes) => write!(
                f,
                "frame body of {body_bytes} bytes exceeds the limit of {} bytes",
                super::FRAME_BYTES_MAX
            ),
            WireError::BadChecksum => write!(f, "checksum mismatch"),
            WireError::UnknownType(frame_type) => write!(f, "unknown frame type {frame_type:#04x}"),
            WireError::Malformed(reason) => write!(f, "malformed frame: {reason}"),
        }
    }
}

impl std::error::Error for WireError {}
