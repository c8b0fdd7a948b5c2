//! Field primitives that every frame body and the handshake are built from: big-endian integers,
//! strict booleans, optional `u64`s, length-delimited byte strings.
//!
//! The primitives themselves are `crate::codec`'s; this file names them as the frames use them
//! and tells their errors as [`WireError`]s.
//!
//! Writers append to the caller's buffer and never fail. `Reader` walks a borrowed body and
//! returns `WireError::Malformed` when the bytes run out or a value is out of range; it never
//! panics, never allocates, and never reads past the slice it was given.

use crate::codec::{CodecError, ReaderBe};

use super::WireError;

pub(super) use crate::codec::{
    put_flag as put_bool, put_u16_be as put_u16, put_u32_be as put_u32, put_u64_be as put_u64,
    put_u8,
};

/// An `Option<u64>` is a tag byte, 0 (`None`, nothing follows) or 1 (`Some`, a `u64` follows).
pub(super) fn put_option_u64(out: &mut Vec<u8>, value: Option<u64>) {
    match value {
        None => put_u8(out, 0),
        Some(value) => {
            put_u8(out, 1);
            put_u64(out, value);
        }
    }
}

/// Encoded size of an `Option<u64>`.
pub(super) fn option_u64_bytes(value: Option<u64>) -> usize {
    match value {
        None => 1,
        Some(_) => 9,
    }
}

/// A cursor over a borrowed body: the shared [`ReaderBe`], its errors told as `wire` tells them.
pub(super) struct Reader<'a> {
    inner: ReaderBe<'a>,
}

const TRUNCATED: WireError = WireError::Malformed("body ends inside a field");

fn malformed(e: CodecError) -> WireError {
    match e {
        CodecError::Truncated { .. } => TRUNCATED,
        CodecError::BadTag { field: "bool", .. } => {
            WireError::Malformed("boolean is neither 0 nor 1")
        }
        CodecError::BadTag { .. } => WireError::Malformed("option tag is neither 0 nor 1"),
        CodecError::NotUtf8 { .. } => WireError::Malformed("string is not UTF-8"),
        CodecError::TrailingBytes(_) => WireError::Malformed("trailing bytes after the last field"),
    }
}

impl<'a> Reader<'a> {
    pub(super) fn new(body: &'a [u8]) -> Reader<'a> {
        Reader {
            inner: ReaderBe::new(body),
        }
    }

    /// Bytes not yet read.
    pub(super) fn remaining(&self) -> usize {
        self.inner.remaining()
    }

    /// The next `len` bytes, borrowed; `Malformed` if fewer remain.
    pub(super) fn bytes(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        self.inner.take(len, "bytes").map_err(malformed)
    }

    /// Everything not yet read, borrowed; the reader is then empty.
    pub(super) fn rest(&mut self) -> &'a [u8] {
        self.inner.rest()
    }

    pub(super) fn u8(&mut self) -> Result<u8, WireError> {
        self.inner.u8("u8").map_err(malformed)
    }

    pub(super) fn u16(&mut self) -> Result<u16, WireError> {
        self.inner.u16("u16").map_err(malformed)
    }

    pub(super) fn u32(&mut self) -> Result<u32, WireError> {
        self.inner.u32("u32").map_err(malformed)
    }

    pub(super) fn u64(&mut self) -> Result<u64, WireError> {
        self.inner.u64("u64").map_err(malformed)
    }

    pub(super) fn bool(&mut self) -> Result<bool, WireError> {
        self.inner.flag("bool").map_err(malformed)
    }

    pub(super) fn option_u64(&mut self) -> Result<Option<u64>, WireError> {
        if self.inner.flag("option").map_err(malformed)? {
            self.u64().map(Some)
        } else {
            Ok(None)
        }
    }

    /// A body must be consumed exactly: trailing bytes mean the peer and we disagree on layout.
    pub(super) fn finish(self) -> Result<(), WireError> {
        self.inner.finish().map_err(malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_big_endian() {
        let mut out = Vec::new();
        put_u16(&mut out, 0x0102);
        put_u32(&mut out, 0x0304_0506);
        put_u64(&mut out, 0x0708_090a_0b0c_0d0e);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        let mut reader = Reader::new(&out[2..]);
        assert_eq!(reader.u32(), Ok(0x0304_0506));
        assert_eq!(reader.u64(), Ok(0x0708_090a_0b0c_0d0e));
        assert_eq!(reader.finish(), Ok(()));
    }

    #[test]
    fn options_and_bools_round_trip_and_reject_bad_tags() {
        let mut out = Vec::new();
        put_option_u64(&mut out, None);
        put_option_u64(&mut out, Some(u64::MAX));
        put_bool(&mut out, true);
        put_bool(&mut out, false);
        assert_eq!(
            out.len(),
            option_u64_bytes(None) + option_u64_bytes(Some(0)) + 2
        );
        let mut reader = Reader::new(&out);
        assert_eq!(reader.option_u64(), Ok(None));
        assert_eq!(reader.option_u64(), Ok(Some(u64::MAX)));
        assert_eq!(reader.bool(), Ok(true));
        assert_eq!(reader.bool(), Ok(false));
        assert_eq!(reader.finish(), Ok(()));

        assert!(matches!(
            Reader::new(&[2]).bool(),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            Reader::new(&[2, 0]).option_u64(),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn short_reads_and_trailing_bytes_are_malformed() {
        assert_eq!(Reader::new(&[1, 2, 3]).u32(), Err(TRUNCATED));
        assert_eq!(Reader::new(&[1]).option_u64(), Err(TRUNCATED));
        assert_eq!(Reader::new(&[1, 2]).bytes(3), Err(TRUNCATED));
        let mut reader = Reader::new(&[1, 2]);
        assert_eq!(reader.u8(), Ok(1));
        assert!(matches!(reader.finish(), Err(WireError::Malformed(_))));
    }
}
