//! The peer handshake: the first 26 bytes a node sends on a connection it opens to another node.
//!
//! It says "I am a raftchat peer, speaking this version, of this cluster, and I am node N", so the
//! acceptor can tell a peer from a client, refuse a node of another cluster, and know whose
//! messages the connection will carry. It owns only these bytes; deciding what to do about a
//! wrong cluster or an unknown node is the server's business.

use byteorder::{BigEndian, ByteOrder};

use super::codec::{put_u16, put_u32, put_u64, Reader};
use super::{NodeId, WireError, PEER_MAGIC, PROTOCOL_VERSION};

/// Magic, version, cluster id, node id, crc.
pub const HANDSHAKE_BYTES: usize = 4 + 2 + 8 + 8 + 4;
/// Everything before the crc, which the crc covers.
const CHECKED_BYTES: usize = HANDSHAKE_BYTES - 4;
const VERSION_AT: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// Nodes refuse peers of another cluster (e.g. a stale process on a reused port).
    pub cluster_id: u64,
    /// The node that opened the connection.
    pub node_id: NodeId,
}

/// Appends the 26 handshake bytes to `out`.
pub fn encode_handshake(handshake: &Handshake, out: &mut Vec<u8>) {
    out.reserve(HANDSHAKE_BYTES);
    let start = out.len();
    out.extend_from_slice(&PEER_MAGIC);
    put_u16(out, PROTOCOL_VERSION);
    put_u64(out, handshake.cluster_id);
    put_u64(out, handshake.node_id);
    let crc = crc32c::crc32c(&out[start..]);
    put_u32(out, crc);
    debug_assert_eq!(out.len() - start, HANDSHAKE_BYTES);
}

/// The one answer an acceptor ever writes on a peer connection: why it refused the handshake
/// (`REFUSAL_MAGIC | u16 len | UTF-8 reason`), so the refused node can log it (a removed node
/// learns that way that it was removed). Nothing is written on an accepted connection.
pub const REFUSAL_MAGIC: [u8; 4] = *b"\0RCR";
/// A longer reason is cut.
pub const REFUSAL_REASON_BYTES_MAX: usize = 512;

/// Appends a refusal carrying `reason` (cut at a char boundary to the maximum).
pub fn encode_refusal(reason: &str, out: &mut Vec<u8>) {
    let mut len = reason.len().min(REFUSAL_REASON_BYTES_MAX);
    while !reason.is_char_boundary(len) {
        len -= 1;
    }
    out.extend_from_slice(&REFUSAL_MAGIC);
    put_u16(out, len as u16);
    out.extend_from_slice(&reason.as_bytes()[..len]);
}

/// The reason of a refusal at the front of `buf`, once it is complete; `None` while bytes are
/// missing or if `buf` is not a refusal. Never panics.
pub fn decode_refusal(buf: &[u8]) -> Option<String> {
    let rest = buf.strip_prefix(&REFUSAL_MAGIC)?;
    let len = usize::from(BigEndian::read_u16(rest.get(..2)?));
    let reason = rest.get(2..2 + len.min(REFUSAL_REASON_BYTES_MAX))?;
    Some(String::from_utf8_lossy(reason).into_owned())
}

/// Reads a handshake from the front of `buf`: `Ok(None)` while bytes are missing, otherwise the
/// handshake and the bytes it used (always `HANDSHAKE_BYTES`).
///
/// Fails as early as the bytes allow: `BadMagic` on the first byte that differs from
/// `PEER_MAGIC`, `BadVersion` as soon as the version is in, so a peer of a future version (whose
/// handshake may be longer) is refused rather than waited for.
pub fn decode_handshake(buf: &[u8]) -> Result<Option<(Handshake, usize)>, WireError> {
    let magic_seen = buf.len().min(PEER_MAGIC.len());
    if buf[..magic_seen] != PEER_MAGIC[..magic_seen] {
        return Err(WireError::BadMagic);
    }
    let Some(version) = buf.get(VERSION_AT..VERSION_AT + 2) else {
        return Ok(None);
    };
    let version = BigEndian::read_u16(version);
    if version != PROTOCOL_VERSION {
        return Err(WireError::BadVersion(version));
    }
    let Some(bytes) = buf.get(..HANDSHAKE_BYTES) else {
        return Ok(None);
    };
    let (checked, crc) = bytes.split_at(CHECKED_BYTES);
    if crc32c::crc32c(checked) != BigEndian::read_u32(crc) {
        return Err(WireError::BadChecksum);
    }
    let mut reader = Reader::new(&checked[VERSION_AT + 2..]);
    let handshake = Handshake {
        cluster_id: reader.u64()?,
        node_id: reader.u64()?,
    };
    reader.finish()?;
    Ok(Some((handshake, HANDSHAKE_BYTES)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::CLIENT_MAGIC;

    #[test]
    fn a_refusal_carries_its_reason_and_bad_bytes_are_none() {
        let mut out = Vec::new();
        encode_refusal("node 3 was removed from this cluster", &mut out);
        assert_eq!(
            decode_refusal(&out).as_deref(),
            Some("node 3 was removed from this cluster")
        );
        for cut in 0..out.len() {
            assert_eq!(decode_refusal(&out[..cut]), None, "incomplete at {cut}");
        }
        assert_eq!(decode_refusal(b"\0RCPxxxx"), None);
        let mut long = Vec::new();
        encode_refusal(&"é".repeat(400), &mut long);
        assert!(decode_refusal(&long).is_some_and(|r| r.len() <= REFUSAL_REASON_BYTES_MAX));
    }

    fn encoded(handshake: &Handshake) -> Vec<u8> {
        let mut out = Vec::new();
        encode_handshake(handshake, &mut out);
        out
    }

    #[test]
    fn round_trips_and_consumes_only_itself() {
        let handshake = Handshake {
            cluster_id: 0xDEAD_BEEF_0123_4567,
            node_id: 2,
        };
        let mut bytes = encoded(&handshake);
        assert_eq!(bytes.len(), HANDSHAKE_BYTES);
        assert_eq!(&bytes[..4], b"\0RCP");
        assert_eq!(&bytes[4..6], &[0, 1]);
        assert_eq!(
            decode_handshake(&bytes),
            Ok(Some((handshake, HANDSHAKE_BYTES)))
        );
        bytes.extend_from_slice(b"first frame follows");
        assert_eq!(
            decode_handshake(&bytes),
            Ok(Some((handshake, HANDSHAKE_BYTES)))
        );
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let bytes = encoded(&Handshake {
            cluster_id: 7,
            node_id: u64::MAX,
        });
        for cut in 0..bytes.len() {
            assert_eq!(
                decode_handshake(&bytes[..cut]),
                Ok(None),
                "prefix of {cut} bytes"
            );
        }
    }

    #[test]
    fn wrong_magic_is_refused_at_the_first_differing_byte() {
        assert_eq!(decode_handshake(b"m"), Err(WireError::BadMagic)); // telnet "msg ..."
        assert_eq!(
            decode_handshake(b"get chatLog\r\n"),
            Err(WireError::BadMagic)
        );
        assert_eq!(decode_handshake(&[0, b'X']), Err(WireError::BadMagic));
        assert_eq!(decode_handshake(&CLIENT_MAGIC), Err(WireError::BadMagic));
    }

    #[test]
    fn wrong_version_is_refused_before_the_rest_arrives() {
        let mut bytes = encoded(&Handshake {
            cluster_id: 1,
            node_id: 1,
        });
        bytes[5] = 2;
        assert_eq!(decode_handshake(&bytes[..6]), Err(WireError::BadVersion(2)));
        assert_eq!(decode_handshake(&bytes), Err(WireError::BadVersion(2)));
    }

    #[test]
    fn corrupted_ids_fail_the_checksum() {
        let bytes = encoded(&Handshake {
            cluster_id: 1,
            node_id: 1,
        });
        for at in 6..HANDSHAKE_BYTES {
            let mut corrupted = bytes.clone();
            corrupted[at] ^= 0x10;
            assert_eq!(
                decode_handshake(&corrupted),
                Err(WireError::BadChecksum),
                "byte {at}"
            );
        }
    }
}
