//! The frame envelope: `u32 body_len | u8 frame_type | u32 crc | body`, and nothing about what a
//! body means.
//!
//! Encoding writes the header with placeholders straight into the caller's buffer, lets the
//! caller append the body after it, then patches the length and checksum in place: no
//! intermediate buffer. Decoding is mini-redis's two passes: `peek_header` and `Header::body`
//! answer "incomplete" or reject the frame from its 9 header bytes alone (too large, unknown type)
//! before a parser ever looks at the body, and the parser only ever sees a whole, checksummed body.

use byteorder::{BigEndian, ByteOrder};

use super::{WireError, FRAME_BYTES_MAX};

/// Bytes before the body: `u32 body_len`, `u8 frame_type`, `u32 crc`.
pub const FRAME_HEADER_BYTES: usize = 9;

/// Offsets inside the header.
const LEN_AT: usize = 0;
const TYPE_AT: usize = 4;
const CRC_AT: usize = 5;

/// The checksum covers every frame byte except itself: `body_len`, `frame_type`, then the body.
/// Covering the header too means a flipped type bit cannot turn one valid message into another.
fn checksum(len_and_type: &[u8], body: &[u8]) -> u32 {
    debug_assert_eq!(len_and_type.len(), CRC_AT);
    crc32c::crc32c_append(crc32c::crc32c(len_and_type), body)
}

/// Starts a frame of `frame_type` at the end of `out` and returns its start offset. The caller
/// appends exactly the body, then calls `finish(out, start)`. `body_bytes_hint` only sizes the
/// reservation, so the body is written without reallocating.
pub(super) fn begin(out: &mut Vec<u8>, frame_type: u8, body_bytes_hint: usize) -> usize {
    out.reserve(FRAME_HEADER_BYTES + body_bytes_hint);
    let start = out.len();
    out.extend_from_slice(&[0; TYPE_AT]);
    out.push(frame_type);
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES - CRC_AT]);
    start
}

/// Completes the frame begun at `start`: everything after its header is the body.
///
/// A body over `FRAME_BYTES_MAX` is the caller's bug (the Raft core caps its batches well below
/// it); debug builds assert. Release builds still write the true length, saturated to `u32`, so
/// the receiver rejects the frame with `FrameTooLarge` instead of misreading the stream.
pub(super) fn finish(out: &mut [u8], start: usize) {
    let body_start = start + FRAME_HEADER_BYTES;
    debug_assert!(out.len() >= body_start, "finish without begin");
    let body_bytes = out.len() - body_start;
    debug_assert!(
        body_bytes <= FRAME_BYTES_MAX,
        "frame body of {body_bytes} bytes exceeds FRAME_BYTES_MAX"
    );
    let body_len = u32::try_from(body_bytes).unwrap_or(u32::MAX);
    BigEndian::write_u32(&mut out[start + LEN_AT..start + TYPE_AT], body_len);
    let (header, body) = out[start..].split_at_mut(FRAME_HEADER_BYTES);
    let crc = checksum(&header[..CRC_AT], body);
    BigEndian::write_u32(&mut header[CRC_AT..], crc);
}

/// A frame header read from the front of a buffer; the body may not have arrived yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) frame_type: u8,
    /// Validated: at most `FRAME_BYTES_MAX`.
    body_bytes: usize,
    crc: u32,
}

/// The header at the front of `buf`: `Ok(None)` until all 9 header bytes are there, and
/// `FrameTooLarge` as soon as the length is known to be over the limit (without waiting for, or
/// ever buffering, the body).
pub(super) fn peek_header(buf: &[u8]) -> Result<Option<Header>, WireError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let body_bytes = BigEndian::read_u32(&buf[LEN_AT..TYPE_AT]) as usize;
    if body_bytes > FRAME_BYTES_MAX {
        return Err(WireError::FrameTooLarge(body_bytes));
    }
    Ok(Some(Header {
        frame_type: buf[TYPE_AT],
        body_bytes,
        crc: BigEndian::read_u32(&buf[CRC_AT..FRAME_HEADER_BYTES]),
    }))
}

impl Header {
    /// Header plus body: what a decoder consumes once the frame is whole.
    pub(super) fn frame_bytes(&self) -> usize {
        FRAME_HEADER_BYTES + self.body_bytes
    }

    /// The body, borrowed from `buf` (which starts with this header): `Ok(None)` until all of it
    /// has arrived, `BadChecksum` if it does not match the header's CRC.
    pub(super) fn body<'a>(&self, buf: &'a [u8]) -> Result<Option<&'a [u8]>, WireError> {
        let Some(frame) = buf.get(..self.frame_bytes()) else {
            return Ok(None);
        };
        let (header, body) = frame.split_at(FRAME_HEADER_BYTES);
        if checksum(&header[..CRC_AT], body) != self.crc {
            return Err(WireError::BadChecksum);
        }
        Ok(Some(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(frame_type: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0xAA, 0xBB]; // bytes already in the buffer must be left alone
        let start = begin(&mut out, frame_type, body.len());
        out.extend_from_slice(body);
        finish(&mut out, start);
        assert_eq!(&out[..2], &[0xAA, 0xBB]);
        out.split_off(2)
    }

    #[test]
    fn header_layout_is_len_type_crc() {
        let bytes = frame(0x07, b"hello");
        assert_eq!(bytes.len(), FRAME_HEADER_BYTES + 5);
        assert_eq!(&bytes[..4], &[0, 0, 0, 5]);
        assert_eq!(bytes[4], 0x07);
        let crc = crc32c::crc32c(&[0, 0, 0, 5, 0x07, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(&bytes[5..9], &crc.to_be_bytes());
        assert_eq!(&bytes[9..], b"hello");
    }

    #[test]
    fn body_is_returned_once_complete_and_checksummed() {
        let bytes = frame(0x01, b"body");
        for cut in 0..FRAME_HEADER_BYTES {
            assert_eq!(peek_header(&bytes[..cut]), Ok(None));
        }
        let header = peek_header(&bytes).unwrap().unwrap();
        assert_eq!(header.frame_type, 0x01);
        assert_eq!(header.frame_bytes(), bytes.len());
        for cut in FRAME_HEADER_BYTES..bytes.len() {
            assert_eq!(header.body(&bytes[..cut]), Ok(None));
        }
        assert_eq!(header.body(&bytes), Ok(Some(&b"body"[..])));
    }

    #[test]
    fn any_flipped_bit_fails_the_checksum_or_the_length() {
        let bytes = frame(0x01, b"some body bytes");
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let outcome = peek_header(&flipped).and_then(|header| match header {
                Some(header) => header.body(&flipped),
                None => Ok(None),
            });
            assert!(
                matches!(
                    outcome,
                    Ok(None) | Err(WireError::BadChecksum) | Err(WireError::FrameTooLarge(_))
                ),
                "bit {bit}: {outcome:?}"
            );
        }
    }

    #[test]
    fn oversized_length_is_rejected_from_the_header_alone() {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        BigEndian::write_u32(&mut header[..4], (FRAME_BYTES_MAX + 1) as u32);
        assert_eq!(
            peek_header(&header),
            Err(WireError::FrameTooLarge(FRAME_BYTES_MAX + 1))
        );
        BigEndian::write_u32(&mut header[..4], u32::MAX);
        assert_eq!(
            peek_header(&header),
            Err(WireError::FrameTooLarge(u32::MAX as usize))
        );
        BigEndian::write_u32(&mut header[..4], FRAME_BYTES_MAX as u32);
        assert!(matches!(peek_header(&header), Ok(Some(_))));
    }
}
