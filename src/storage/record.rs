//! The byte format of a segment: its header and its records. Pure functions on byte slices.
//!
//! This file owns encoding and checking; it never touches a file and never decides what a bad
//! record means (torn tail or corruption is recovery's call, with the whole segment in view).
//! Nothing here panics on any input: every length is checked before it is used (the reads and
//! writes are `crate::codec`'s, little-endian).

use crate::codec::{put_u32_le, put_u64_le, put_u8, CodecError, ReaderLe};
use crate::raft::{Entry, EntryKind, HardState, Index, NodeId, Term};

pub(crate) const MAGIC: [u8; 8] = *b"RCHATWAL";
pub(crate) const FORMAT_VERSION: u32 = 1;
/// magic 8 | version 4 | crc 4 | cluster_id 8 | node_id 8 | seq 8 | base_index 8.
pub(crate) const HEADER_LEN: usize = 48;
/// body_len u32 | crc32c u32.
pub(crate) const RECORD_HEADER_LEN: usize = 8;
/// Refuse bodies larger than this on write; on read a larger length is damage, not data.
pub(crate) const MAX_BODY_LEN: usize = 64 << 20;

const TYPE_ENTRY: u8 = 1;
const TYPE_HARD_STATE: u8 = 2;
const TYPE_TRUNCATE: u8 = 3;
const TYPE_RESET: u8 = 4;

/// type | term | index | kind, before the data.
const ENTRY_BODY_FIXED_LEN: usize = 1 + 8 + 8 + 1;
/// type | term | voted_for | has_vote | commit.
const HARD_STATE_BODY_LEN: usize = 1 + 8 + 8 + 1 + 8;
/// type | index.
const TRUNCATE_BODY_LEN: usize = 1 + 8;
/// type | next_index.
const RESET_BODY_LEN: usize = 1 + 8;

/// No log gets near this; larger indexes on disk are damage, and staying below it keeps
/// `index + 1` arithmetic from overflowing on any input.
pub(crate) const MAX_INDEX: Index = 1 << 62;

pub(crate) const HARD_STATE_RECORD_LEN: usize = RECORD_HEADER_LEN + HARD_STATE_BODY_LEN;
pub(crate) const MAX_ENTRY_DATA_LEN: usize = MAX_BODY_LEN - ENTRY_BODY_FIXED_LEN;

/// The on-disk length of the record holding `entry`.
pub(crate) fn entry_record_len(entry: &Entry) -> usize {
    RECORD_HEADER_LEN + ENTRY_BODY_FIXED_LEN + entry.data.len()
}

/// Who wrote a segment, and where it sits in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub cluster_id: u64,
    pub node_id: NodeId,
    /// Segments are replayed in `seq` order; survivors of `drop_prefix` are consecutive.
    pub seq: u64,
    /// The writer's last index + 1 when this segment was started.
    pub base_index: Index,
}

impl SegmentHeader {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        put_u32_le(out, FORMAT_VERSION);
        out.extend_from_slice(&[0; 4]); // crc, filled below
        put_u64_le(out, self.cluster_id);
        put_u64_le(out, self.node_id);
        put_u64_le(out, self.seq);
        put_u64_le(out, self.base_index);
        let crc = crc32c::crc32c(&out[start + 16..start + HEADER_LEN]);
        out[start + 12..start + 16].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(out.len() - start, HEADER_LEN);
    }

    /// `Err` says why the first `HEADER_LEN` bytes of `buf` are not a valid header.
    pub(crate) fn decode(buf: &[u8]) -> Result<SegmentHeader, String> {
        if buf.len() < HEADER_LEN {
            return Err(format!(
                "segment header cut short ({} of {HEADER_LEN} bytes)",
                buf.len()
            ));
        }
        if buf[..8] != MAGIC {
            return Err("bad segment magic".into());
        }
        let mut r = ReaderLe::new(&buf[8..HEADER_LEN]);
        let version = r.u32("version").map_err(body_error)?;
        let crc = r.u32("crc").map_err(body_error)?;
        if crc != crc32c::crc32c(&buf[16..HEADER_LEN]) {
            return Err("segment header checksum mismatch".into());
        }
        if version != FORMAT_VERSION {
            return Err(format!(
                "unsupported format version {version} (this build reads {FORMAT_VERSION})"
            ));
        }
        Ok(SegmentHeader {
            cluster_id: r.u64("cluster_id").map_err(body_error)?,
            node_id: r.u64("node_id").map_err(body_error)?,
            seq: r.u64("seq").map_err(body_error)?,
            base_index: r.u64("base_index").map_err(body_error)?,
        })
    }
}

/// One decoded record, borrowing entry data from the segment buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    Entry {
        term: Term,
        index: Index,
        kind: EntryKind,
        data: &'a [u8],
    },
    HardState(HardState),
    /// Every entry with index >= `index` is gone; the next entry appended has `index`.
    Truncate {
        index: Index,
    },
    /// Every entry is gone (a snapshot covers them); the next entry appended has `next_index`,
    /// which may lie beyond the log's end.
    Reset {
        next_index: Index,
    },
}

pub(crate) fn encode_entry(out: &mut Vec<u8>, entry: &Entry) {
    debug_assert!(entry.data.len() <= MAX_ENTRY_DATA_LEN);
    let start = begin_record(out, ENTRY_BODY_FIXED_LEN + entry.data.len(), TYPE_ENTRY);
    put_u64_le(out, entry.term);
    put_u64_le(out, entry.index);
    put_u8(out, entry.kind as u8);
    out.extend_from_slice(&entry.data);
    finish_record(out, start);
}

pub(crate) fn encode_hard_state(out: &mut Vec<u8>, hs: &HardState) {
    let start = begin_record(out, HARD_STATE_BODY_LEN, TYPE_HARD_STATE);
    put_u64_le(out, hs.term);
    put_u64_le(out, hs.voted_for.unwrap_or(0));
    put_u8(out, hs.voted_for.is_some() as u8);
    put_u64_le(out, hs.commit);
    finish_record(out, start);
    assert_eq!(out.len() - start, HARD_STATE_RECORD_LEN);
}

pub(crate) fn encode_truncate(out: &mut Vec<u8>, index: Index) {
    let start = begin_record(out, TRUNCATE_BODY_LEN, TYPE_TRUNCATE);
    put_u64_le(out, index);
    finish_record(out, start);
}

pub(crate) fn encode_reset(out: &mut Vec<u8>, next_index: Index) {
    let start = begin_record(out, RESET_BODY_LEN, TYPE_RESET);
    put_u64_le(out, next_index);
    finish_record(out, start);
}

/// Reserves the record header and writes the type byte; returns where the record starts.
fn begin_record(out: &mut Vec<u8>, body_len: usize, record_type: u8) -> usize {
    let start = out.len();
    out.reserve(RECORD_HEADER_LEN + body_len);
    put_u32_le(out, body_len as u32);
    out.extend_from_slice(&[0; 4]); // crc, filled by finish_record
    put_u8(out, record_type);
    start
}

fn finish_record(out: &mut [u8], start: usize) {
    let crc = record_crc(&out[start..start + 4], &out[start + RECORD_HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The checksum covers the length too, so a damaged length is caught, not followed. Shared with
/// the message store's segments (`history::format`), which frame their records the same way.
pub(crate) fn record_crc(len_bytes: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len_bytes), body)
}

/// Why the bytes at some offset are not a whole, intact record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The record (or its header) runs past the end of the data: what a torn write leaves.
    Incomplete,
    /// The length field is zero or beyond any record we write.
    BadLength(u64),
    BadChecksum,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Incomplete => write!(f, "record runs past the end of the segment"),
            FrameError::BadLength(len) => write!(f, "implausible record length {len}"),
            FrameError::BadChecksum => write!(f, "record checksum mismatch"),
        }
    }
}

/// Checks the framing and checksum of the record at the start of `buf`; on success returns its
/// total length (header included) and its body.
pub(crate) fn check_frame(buf: &[u8]) -> Result<(usize, &[u8]), FrameError> {
    check_frame_within(buf, 1..=MAX_BODY_LEN)
}

/// [`check_frame`] for a record whose body length must lie in `body_lens`: the message store's
/// segments use this framing with their own bounds.
pub(crate) fn check_frame_within(
    buf: &[u8],
    body_lens: std::ops::RangeInclusive<usize>,
) -> Result<(usize, &[u8]), FrameError> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err(FrameError::Incomplete);
    }
    let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if !body_lens.contains(&body_len) {
        return Err(FrameError::BadLength(body_len as u64));
    }
    let total = RECORD_HEADER_LEN + body_len;
    if total > buf.len() {
        return Err(FrameError::Incomplete);
    }
    let body = &buf[RECORD_HEADER_LEN..total];
    if record_crc(&buf[..4], body) != crc {
        return Err(FrameError::BadChecksum);
    }
    Ok((total, body))
}

/// Decodes a body whose checksum already matched. `Err` here is never a torn write: the bytes
/// are what some writer meant, and they make no sense.
pub(crate) fn parse_body(body: &[u8]) -> Result<Record<'_>, String> {
    let mut r = ReaderLe::new(body);
    let record_type = r.u8("record_type").map_err(body_error)?;
    let record = match record_type {
        TYPE_ENTRY => {
            let term = r.u64("term").map_err(body_error)?;
            let index = r.u64("index").map_err(body_error)?;
            let kind_byte = r.u8("kind_byte").map_err(body_error)?;
            let kind = EntryKind::from_u8(kind_byte)
                .ok_or_else(|| format!("unknown entry kind {kind_byte}"))?;
            Record::Entry {
                term,
                index,
                kind,
                data: r.rest(),
            }
        }
        TYPE_HARD_STATE => {
            let term = r.u64("term").map_err(body_error)?;
            let vote = r.u64("vote").map_err(body_error)?;
            let has_vote = r.u8("has_vote").map_err(body_error)?;
            let commit = r.u64("commit").map_err(body_error)?;
            let voted_for = match has_vote {
                0 => None,
                1 => Some(vote),
                other => return Err(format!("bad vote flag {other}")),
            };
            r.finish().map_err(body_error)?;
            Record::HardState(HardState {
                term,
                voted_for,
                commit,
            })
        }
        TYPE_TRUNCATE => {
            let index = r.u64("index").map_err(body_error)?;
            r.finish().map_err(body_error)?;
            Record::Truncate { index }
        }
        TYPE_RESET => {
            let next_index = r.u64("next_index").map_err(body_error)?;
            r.finish().map_err(body_error)?;
            Record::Reset { next_index }
        }
        other => return Err(format!("unknown record type {other}")),
    };
    Ok(record)
}

/// A codec error told as this format has always told it (recovery's messages quote it).
fn body_error(e: CodecError) -> String {
    match e {
        CodecError::TrailingBytes(n) => format!("{n} unexpected bytes after the record"),
        _ => "record body too short".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let entry = Entry::new(7, 42, EntryKind::Normal, b"hello");
        let hs = HardState {
            term: 9,
            voted_for: Some(2),
            commit: 40,
        };
        let mut buf = Vec::new();
        encode_entry(&mut buf, &entry);
        assert_eq!(buf.len(), entry_record_len(&entry));
        encode_hard_state(&mut buf, &hs);
        encode_truncate(&mut buf, 17);
        encode_reset(&mut buf, 1_000);

        let (len, body) = check_frame(&buf).unwrap();
        assert_eq!(
            parse_body(body).unwrap(),
            Record::Entry {
                term: 7,
                index: 42,
                kind: EntryKind::Normal,
                data: b"hello"
            }
        );
        let rest = &buf[len..];
        let (len2, body) = check_frame(rest).unwrap();
        assert_eq!(parse_body(body).unwrap(), Record::HardState(hs));
        let rest = &rest[len2..];
        let (len3, body) = check_frame(rest).unwrap();
        assert_eq!(parse_body(body).unwrap(), Record::Truncate { index: 17 });
        let (len4, body) = check_frame(&rest[len3..]).unwrap();
        assert_eq!(
            parse_body(body).unwrap(),
            Record::Reset { next_index: 1_000 }
        );
        assert_eq!(len3 + len4, rest.len());
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, &Entry::new(3, 4, EntryKind::Noop, b"xyz"));
        for bit in 0..buf.len() * 8 {
            let mut damaged = buf.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                check_frame(&damaged).is_err(),
                "flip of bit {bit} not caught"
            );
        }
    }

    #[test]
    fn short_input_is_incomplete_never_a_panic() {
        let mut buf = Vec::new();
        encode_hard_state(&mut buf, &HardState::default());
        for cut in 0..buf.len() {
            assert_eq!(check_frame(&buf[..cut]), Err(FrameError::Incomplete));
        }
        assert!(parse_body(&[]).is_err());
        assert!(parse_body(&[TYPE_HARD_STATE, 1, 2]).is_err());
        assert!(parse_body(&[9]).is_err());
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let header = SegmentHeader {
            cluster_id: 1,
            node_id: 2,
            seq: 3,
            base_index: 4,
        };
        let mut buf = Vec::new();
        header.encode(&mut buf);
        assert_eq!(SegmentHeader::decode(&buf), Ok(header));
        for bit in 0..HEADER_LEN * 8 {
            let mut damaged = buf.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&damaged).is_err(), "bit {bit}");
        }
        assert!(SegmentHeader::decode(&buf[..HEADER_LEN - 1]).is_err());
    }
}
