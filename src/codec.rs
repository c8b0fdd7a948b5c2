//! The primitives every binary format of raftchat is built from: a length-checked [`Reader`]
//! over a borrowed slice and `put_*` writers that append to a `Vec<u8>`.
//!
//! The formats built on it: the client protocol (`proto`, big-endian), peer frames (`wire`,
//! big-endian), chat commands in log entries (`chat::command`, big-endian), WAL records
//! (`storage::record`, little-endian) and chat snapshots (`chat::snapshot`, little-endian; its
//! writer uses the `put_*_le` functions, its reader streams from a file instead). Each format
//! keeps its own error type and turns a [`CodecError`] into it; the layouts stay the formats'.
//!
//! This module never allocates on behalf of untrusted bytes (every read checks the remaining
//! length first, so a huge length prefix fails before anything is reserved), never panics on
//! input, and never does IO.

use std::fmt;
use std::marker::PhantomData;

pub use byteorder::{BigEndian, ByteOrder, LittleEndian};

/// Why bytes could not be read. `field` names what was being read, for the format's error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// The input ends before the field does.
    Truncated { field: &'static str },
    /// A string field is not UTF-8.
    NotUtf8 { field: &'static str },
    /// A flag or option marker byte is neither 0 nor 1.
    BadTag { field: &'static str, tag: u8 },
    /// Bytes remain after the last field.
    TrailingBytes(usize),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Truncated { field } => write!(f, "input ends inside field {field}"),
            CodecError::NotUtf8 { field } => write!(f, "field {field} is not UTF-8"),
            CodecError::BadTag { field, tag } => write!(f, "field {field} has bad marker {tag}"),
            CodecError::TrailingBytes(n) => write!(f, "{n} trailing bytes after the last field"),
        }
    }
}

impl std::error::Error for CodecError {}

/// A cursor over a borrowed slice reading integers in byte order `O` ([`BigEndian`] or
/// [`LittleEndian`]). Every read checks the remaining length before it takes anything.
#[derive(Clone, Debug)]
pub struct Reader<'a, O: ByteOrder> {
    rest: &'a [u8],
    order: PhantomData<O>,
}

/// A reader for the big-endian formats.
pub type ReaderBe<'a> = Reader<'a, BigEndian>;
/// A reader for the little-endian formats.
pub type ReaderLe<'a> = Reader<'a, LittleEndian>;

impl<'a, O: ByteOrder> Reader<'a, O> {
    pub fn new(input: &'a [u8]) -> Reader<'a, O> {
        Reader {
            rest: input,
            order: PhantomData,
        }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// The next `len` bytes, borrowed; `Truncated` (and nothing consumed) if fewer remain.
    pub fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], CodecError> {
        if self.rest.len() < len {
            return Err(CodecError::Truncated { field });
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CodecError> {
        match self.rest.split_first_chunk::<N>() {
            Some((head, tail)) => {
                self.rest = tail;
                Ok(*head)
            }
            None => Err(CodecError::Truncated { field }),
        }
    }

    /// Everything not yet read, borrowed; the reader is then empty.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, CodecError> {
        Ok(O::read_u16(&self.array::<2>(field)?))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        Ok(O::read_u32(&self.array::<4>(field)?))
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, CodecError> {
        Ok(O::read_u64(&self.array::<8>(field)?))
    }

    pub fn i64(&mut self, field: &'static str) -> Result<i64, CodecError> {
        Ok(O::read_i64(&self.array::<8>(field)?))
    }

    /// A marker byte that must be 0 (`false`) or 1 (`true`): booleans and `Option` tags.
    pub fn flag(&mut self, field: &'static str) -> Result<bool, CodecError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(CodecError::BadTag { field, tag }),
        }
    }

    /// `u16 len | bytes`, borrowed. The length is checked against what remains first.
    pub fn bytes16(&mut self, field: &'static str) -> Result<&'a [u8], CodecError> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }

    /// `u32 len | bytes`, borrowed. The length is checked against what remains first.
    pub fn bytes32(&mut self, field: &'static str) -> Result<&'a [u8], CodecError> {
        let len = self.u32(field)?;
        let len = usize::try_from(len).map_err(|_| CodecError::Truncated { field })?;
        self.take(len, field)
    }

    /// `u16 len | UTF-8 bytes`, borrowed.
    pub fn str16(&mut self, field: &'static str) -> Result<&'a str, CodecError> {
        let bytes = self.bytes16(field)?;
        std::str::from_utf8(bytes).map_err(|_| CodecError::NotUtf8 { field })
    }

    /// `u32 len | UTF-8 bytes`, borrowed.
    pub fn str32(&mut self, field: &'static str) -> Result<&'a str, CodecError> {
        let bytes = self.bytes32(field)?;
        std::str::from_utf8(bytes).map_err(|_| CodecError::NotUtf8 { field })
    }

    /// A body must be consumed exactly: `TrailingBytes` otherwise.
    pub fn finish(&self) -> Result<(), CodecError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(CodecError::TrailingBytes(n)),
        }
    }
}

pub fn put_u8(out: &mut Vec<u8>, value: u8) {
    out.push(value);
}

/// A flag or `Option` marker: 1 for `true`, 0 for `false`.
pub fn put_flag(out: &mut Vec<u8>, value: bool) {
    out.push(u8::from(value));
}

pub fn put_u16_be(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

pub fn put_u32_be(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

pub fn put_u64_be(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

pub fn put_i64_be(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_be_bytes());
}

pub fn put_u16_le(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn put_u32_le(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn put_u64_le(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn put_i64_le(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// `u16 len | bytes` (big-endian length). The caller guarantees `bytes.len() <= u16::MAX`;
/// a longer slice is cut to the first `u16::MAX` bytes rather than written inconsistently.
pub fn put_bytes16_be(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len().min(usize::from(u16::MAX));
    put_u16_be(out, len as u16);
    out.extend_from_slice(&bytes[..len]);
}

/// `u32 len | bytes` (big-endian length); the caller guarantees `bytes.len() <= u32::MAX`.
pub fn put_bytes32_be(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    put_u32_be(out, len);
    out.extend_from_slice(&bytes[..len as usize]);
}

/// `u32 len | bytes` (little-endian length); the caller guarantees `bytes.len() <= u32::MAX`.
pub fn put_bytes32_le(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    put_u32_le(out, len);
    out.extend_from_slice(&bytes[..len as usize]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of every field, big- or little-endian, and the reads that take it back.
    fn sample(be: bool) -> Vec<u8> {
        let mut out = Vec::new();
        put_u8(&mut out, 7);
        put_flag(&mut out, true);
        if be {
            put_u16_be(&mut out, 0x0102);
            put_u32_be(&mut out, 0x0304_0506);
            put_u64_be(&mut out, 0x0708_090a_0b0c_0d0e);
            put_i64_be(&mut out, -2);
            put_bytes16_be(&mut out, b"ab");
            put_bytes32_be(&mut out, "é".as_bytes());
        } else {
            put_u16_le(&mut out, 0x0102);
            put_u32_le(&mut out, 0x0304_0506);
            put_u64_le(&mut out, 0x0708_090a_0b0c_0d0e);
            put_i64_le(&mut out, -2);
            // No 16-bit little-endian prefix exists in any format: write one by hand.
            put_u16_le(&mut out, 2);
            out.extend_from_slice(b"ab");
            put_bytes32_le(&mut out, "é".as_bytes());
        }
        out
    }

    fn read_all<O: ByteOrder>(input: &[u8]) -> Result<(), CodecError> {
        let mut r = Reader::<O>::new(input);
        assert_eq!(r.u8("u8")?, 7);
        assert!(r.flag("flag")?);
        assert_eq!(r.u16("u16")?, 0x0102);
        assert_eq!(r.u32("u32")?, 0x0304_0506);
        assert_eq!(r.u64("u64")?, 0x0708_090a_0b0c_0d0e);
        assert_eq!(r.i64("i64")?, -2);
        assert_eq!(r.str16("str16")?, "ab");
        assert_eq!(r.str32("str32")?, "é");
        r.finish()
    }

    #[test]
    fn every_field_round_trips_in_both_byte_orders() {
        let be = sample(true);
        assert_eq!(&be[2..4], &[1, 2], "big-endian puts the high byte first");
        assert_eq!(read_all::<BigEndian>(&be), Ok(()));
        let le = sample(false);
        assert_eq!(&le[2..4], &[2, 1], "little-endian puts the low byte first");
        assert_eq!(read_all::<LittleEndian>(&le), Ok(()));
    }

    #[test]
    fn truncation_at_every_offset_is_refused() {
        for (be, input) in [(true, sample(true)), (false, sample(false))] {
            for cut in 0..input.len() {
                let result = if be {
                    read_all::<BigEndian>(&input[..cut])
                } else {
                    read_all::<LittleEndian>(&input[..cut])
                };
                assert!(
                    matches!(result, Err(CodecError::Truncated { .. })),
                    "cut at {cut} of {}: {result:?}",
                    input.len()
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut input = sample(true);
        input.push(0);
        assert_eq!(
            read_all::<BigEndian>(&input),
            Err(CodecError::TrailingBytes(1))
        );
    }

    #[test]
    fn huge_length_prefixes_are_refused_without_allocating() {
        // A prefix claiming 4 GiB over a 3-byte remainder: refused by the length check (the
        // reads borrow, so nothing is reserved either way), and nothing is consumed.
        let input = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let mut r = ReaderBe::new(&input);
        assert_eq!(
            r.bytes32("blob"),
            Err(CodecError::Truncated { field: "blob" })
        );
        let mut r = ReaderLe::new(&input);
        assert_eq!(
            r.str32("text"),
            Err(CodecError::Truncated { field: "text" })
        );
        let mut r = ReaderBe::new(&input[..4]);
        assert_eq!(r.str16("s"), Err(CodecError::Truncated { field: "s" }));
        let mut r = ReaderBe::new(&input[4..]);
        assert_eq!(
            r.take(usize::MAX, "t"),
            Err(CodecError::Truncated { field: "t" })
        );
        assert_eq!(r.remaining(), 3, "a refused read consumes nothing");
    }

    #[test]
    fn bad_markers_and_bad_utf8_are_refused() {
        assert_eq!(
            ReaderBe::new(&[2]).flag("f"),
            Err(CodecError::BadTag { field: "f", tag: 2 })
        );
        assert_eq!(
            ReaderBe::new(&[0, 1, 0xff]).str16("s"),
            Err(CodecError::NotUtf8 { field: "s" })
        );
        let mut r = ReaderLe::new(&[1, 2, 3]);
        assert_eq!(r.array::<2>("a"), Ok([1, 2]));
        assert_eq!(r.rest(), &[3]);
        assert_eq!(r.finish(), Ok(()));
    }
}
