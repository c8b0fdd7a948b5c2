//! The byte formats of the message store: segment header, message record, sealed index file.
//! Pure functions on byte slices.
//!
//! This file owns encoding and checking; it never touches a file and never decides what a bad
//! record means (torn tail or corruption is `open`'s call, with the whole segment in view).
//! Every read is `crate::codec`'s length-checked little-endian [`ReaderLe`], so nothing here
//! panics or allocates on behalf of damaged bytes. The record framing is the write-ahead log's
//! (`body_len u32 | crc32c u32 of the length and the body | body`), so the same rules tell a
//! torn write from damage.

use crate::chat::ChatMessage;
use crate::codec::{put_u16_le, put_u32_le, put_u64_le, CodecError, ReaderLe};
pub(crate) use crate::storage::record::FrameError;
use crate::storage::record::{self, record_crc};

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"RCHATHST";
pub(crate) const INDEX_MAGIC: [u8; 8] = *b"RCHATHIX";
pub(crate) const FORMAT_VERSION: u32 = 1;
/// magic 8 | version 4 | crc 4 | cluster_id 8 | seq 8 | base_position 8.
pub(crate) const HEADER_LEN: usize = 40;
/// body_len u32 | crc32c u32.
pub(crate) const RECORD_HEADER_LEN: usize = 8;
/// position | index | timestamp_ms, before the strings.
const BODY_FIXED_LEN: usize = 8 + 8 + 8;
/// A body longer than this is damage, not data (a message's fields are a few KiB at most).
pub(crate) const MAX_BODY_LEN: usize = 1 << 20;
/// Positions beyond this are damage; staying below keeps `position + n` from overflowing.
pub(crate) const MAX_POSITION: u64 = 1 << 62;

/// Who wrote a segment and which position its first record has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub cluster_id: u64,
    pub seq: u64,
    pub base_position: u64,
}

impl SegmentHeader {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&SEGMENT_MAGIC);
        put_u32_le(out, FORMAT_VERSION);
        out.extend_from_slice(&[0; 4]);
        put_u64_le(out, self.cluster_id);
        put_u64_le(out, self.seq);
        put_u64_le(out, self.base_position);
        let crc = crc32c::crc32c(&out[start + 16..start + HEADER_LEN]);
        out[start + 12..start + 16].copy_from_slice(&crc.to_le_bytes());
    }

    /// `Err` says why the first `HEADER_LEN` bytes of `buf` are not a valid header.
    pub(crate) fn decode(buf: &[u8]) -> Result<SegmentHeader, String> {
        let Some(head) = buf.get(..HEADER_LEN) else {
            return Err(format!(
                "segment header cut short ({} of {HEADER_LEN} bytes)",
                buf.len()
            ));
        };
        let mut r = ReaderLe::new(head);
        if r.array::<8>("magic").map_err(codec)? != SEGMENT_MAGIC {
            return Err("bad segment magic".into());
        }
        let version = r.u32("version").map_err(codec)?;
        let crc = r.u32("crc").map_err(codec)?;
        if crc != crc32c::crc32c(&head[16..]) {
            return Err("segment header checksum mismatch".into());
        }
        if version != FORMAT_VERSION {
            return Err(format!(
                "unsupported store format version {version} (this build reads {FORMAT_VERSION})"
            ));
        }
        Ok(SegmentHeader {
            cluster_id: r.u64("cluster_id").map_err(codec)?,
            seq: r.u64("seq").map_err(codec)?,
            base_position: r.u64("base_position").map_err(codec)?,
        })
    }
}

/// Appends the record of `m` to `out`; returns its length. Fields longer than their length
/// prefix allows are refused by the caller (`validate` keeps them far below).
pub(crate) fn encode_message(out: &mut Vec<u8>, m: &ChatMessage) -> usize {
    let start = out.len();
    let body_len = BODY_FIXED_LEN + 2 + m.room.len() + 2 + m.nick.len() + 4 + m.text.len();
    out.reserve(RECORD_HEADER_LEN + body_len);
    put_u32_le(out, body_len as u32);
    out.extend_from_slice(&[0; 4]);
    put_u64_le(out, m.position);
    put_u64_le(out, m.index);
    put_u64_le(out, m.timestamp_ms);
    put_u16_le(out, m.room.len() as u16);
    out.extend_from_slice(m.room.as_bytes());
    put_u16_le(out, m.nick.len() as u16);
    out.extend_from_slice(m.nick.as_bytes());
    put_u32_le(out, m.text.len() as u32);
    out.extend_from_slice(m.text.as_bytes());
    let crc = record_crc(&out[start..start + 4], &out[start + RECORD_HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// Whether `m` fits the record format (every field under its length prefix and the body
/// under `MAX_BODY_LEN`).
pub(crate) fn encodable(m: &ChatMessage) -> bool {
    m.room.len() <= usize::from(u16::MAX)
        && m.nick.len() <= usize::from(u16::MAX)
        && BODY_FIXED_LEN + 8 + m.room.len() + m.nick.len() + m.text.len() <= MAX_BODY_LEN
        && m.position > 0
        && m.position < MAX_POSITION
}

/// Checks the framing and checksum of the record at the start of `buf` (the write-ahead log's
/// framing, with this store's body bounds); on success its total length (header included) and
/// its body.
pub(crate) fn check_frame(buf: &[u8]) -> Result<(usize, &[u8]), FrameError> {
    record::check_frame_within(buf, BODY_FIXED_LEN..=MAX_BODY_LEN)
}

/// Decodes a body whose checksum matched. `Err` is never a torn write: some writer meant
/// these bytes, and they make no sense.
pub(crate) fn parse_message(body: &[u8]) -> Result<ChatMessage, String> {
    let mut r = ReaderLe::new(body);
    let position = r.u64("position").map_err(codec)?;
    let index = r.u64("index").map_err(codec)?;
    let timestamp_ms = r.u64("timestamp_ms").map_err(codec)?;
    let room = r.str16("room").map_err(codec)?.to_string();
    let nick = r.str16("nick").map_err(codec)?.to_string();
    let text = r.str32("text").map_err(codec)?.to_string();
    r.finish().map_err(codec)?;
    if position == 0 || position >= MAX_POSITION {
        return Err(format!("implausible position {position}"));
    }
    Ok(ChatMessage {
        position,
        index,
        room,
        nick,
        text,
        timestamp_ms,
    })
}

/// The room of a record body without decoding the rest (for rebuilding the room index).
pub(crate) fn room_of(body: &[u8]) -> Result<(u64, &str), String> {
    let mut r = ReaderLe::new(body);
    let position = r.u64("position").map_err(codec)?;
    r.take(16, "index and timestamp").map_err(codec)?;
    Ok((position, r.str16("room").map_err(codec)?))
}

fn codec(e: CodecError) -> String {
    e.to_string()
}

/// What a sealed segment's index file holds: enough to find any record by position and every
/// room's records without reading the segment.
///
/// ```text
/// index   = head rooms
/// head    = magic "RCHATHIX" | version u32 | crc32c u32 (of the rest of head)
///           | seq u64 | base_position u64 | count u64 | data_len u64
///           | sparse_len u32 | sparse offsets u64 * sparse_len
///           | room_count u32 | (room str16 | count u32 | rooms_offset u64 | crc32c u32) * room_count
/// rooms   = per room, `count` position deltas (u32, from base_position), at rooms_offset
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SealedIndex {
    pub seq: u64,
    pub base_position: u64,
    pub count: u64,
    /// The segment file's length, header included.
    pub data_len: u64,
    /// `sparse[k]` is the file offset of the record at `base_position + k * SPARSE_EVERY`.
    pub sparse: Vec<u64>,
    pub rooms: Vec<RoomEntry>,
}

/// One room's part of a sealed index: how many records, and where its deltas lie in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RoomEntry {
    pub room: String,
    pub count: u32,
    pub offset: u64,
    pub crc: u32,
}

/// Length of the fixed part of an index head (magic to data_len).
const INDEX_FIXED_LEN: usize = 8 + 4 + 4 + 8 * 4;

impl SealedIndex {
    /// Encodes the index with `positions[k]` the positions of `rooms[k]` (the entries' offsets
    /// and checksums are filled in here).
    pub(crate) fn encode(&mut self, positions: &[Vec<u32>]) -> Vec<u8> {
        let head_len = INDEX_FIXED_LEN
            + 4
            + 8 * self.sparse.len()
            + 4
            + self
                .rooms
                .iter()
                .map(|r| 2 + r.room.len() + 4 + 8 + 4)
                .sum::<usize>();
        let mut rooms_bytes = Vec::new();
        for (entry, deltas) in self.rooms.iter_mut().zip(positions) {
            let start = rooms_bytes.len();
            for d in deltas {
                put_u32_le(&mut rooms_bytes, *d);
            }
            entry.offset = (head_len + start) as u64;
            entry.count = deltas.len() as u32;
            entry.crc = crc32c::crc32c(&rooms_bytes[start..]);
        }
        let mut out = Vec::with_capacity(head_len + rooms_bytes.len());
        out.extend_from_slice(&INDEX_MAGIC);
        put_u32_le(&mut out, FORMAT_VERSION);
        out.extend_from_slice(&[0; 4]);
        put_u64_le(&mut out, self.seq);
        put_u64_le(&mut out, self.base_position);
        put_u64_le(&mut out, self.count);
        put_u64_le(&mut out, self.data_len);
        put_u32_le(&mut out, self.sparse.len() as u32);
        for offset in &self.sparse {
            put_u64_le(&mut out, *offset);
        }
        put_u32_le(&mut out, self.rooms.len() as u32);
        for entry in &self.rooms {
            put_u16_le(&mut out, entry.room.len() as u16);
            out.extend_from_slice(entry.room.as_bytes());
            put_u32_le(&mut out, entry.count);
            put_u64_le(&mut out, entry.offset);
            put_u32_le(&mut out, entry.crc);
        }
        debug_assert_eq!(out.len(), head_len);
        let crc = crc32c::crc32c(&out[16..]);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&rooms_bytes);
        out
    }

    /// Decodes the head of an index file (the whole file is `buf`; the rooms' deltas are
    /// checked when read). `Err` says what is wrong.
    pub(crate) fn decode(buf: &[u8]) -> Result<SealedIndex, String> {
        let mut r = ReaderLe::new(buf);
        if r.array::<8>("magic").map_err(codec)? != INDEX_MAGIC {
            return Err("bad index magic".into());
        }
        let version = r.u32("version").map_err(codec)?;
        let crc = r.u32("crc").map_err(codec)?;
        if version != FORMAT_VERSION {
            return Err(format!("unsupported index format version {version}"));
        }
        let mut index = SealedIndex {
            seq: r.u64("seq").map_err(codec)?,
            base_position: r.u64("base_position").map_err(codec)?,
            count: r.u64("count").map_err(codec)?,
            data_len: r.u64("data_len").map_err(codec)?,
            ..SealedIndex::default()
        };
        let sparse_len = r.u32("sparse_len").map_err(codec)? as usize;
        if sparse_len > r.remaining() / 8 {
            return Err(format!("sparse index of {sparse_len} runs past the file"));
        }
        index.sparse.reserve(sparse_len);
        for _ in 0..sparse_len {
            index.sparse.push(r.u64("sparse offset").map_err(codec)?);
        }
        let room_count = r.u32("room_count").map_err(codec)? as usize;
        if room_count > r.remaining() / 18 {
            return Err(format!("{room_count} rooms run past the file"));
        }
        for _ in 0..room_count {
            index.rooms.push(RoomEntry {
                room: r.str16("room").map_err(codec)?.to_string(),
                count: r.u32("room count").map_err(codec)?,
                offset: r.u64("room offset").map_err(codec)?,
                crc: r.u32("room crc").map_err(codec)?,
            });
        }
        let head_len = buf.len() - r.remaining();
        if crc != crc32c::crc32c(&buf[16..head_len]) {
            return Err("index checksum mismatch".into());
        }
        if index.base_position == 0
            || index.base_position >= MAX_POSITION
            || index.count >= MAX_POSITION
        {
            return Err("implausible positions in the index".into());
        }
        if let Some(room) = index
            .rooms
            .iter()
            .find(|r| u64::from(r.count) > index.count)
        {
            return Err(format!(
                "room {} counts more records than the segment",
                room.room
            ));
        }
        Ok(index)
    }
}

/// The positions in a room's deltas (`bytes` read at its offset), checked against its entry.
pub(crate) fn decode_room_positions(
    entry: &RoomEntry,
    base_position: u64,
    bytes: &[u8],
) -> Result<Vec<u64>, String> {
    if bytes.len() != entry.count as usize * 4 {
        return Err(format!(
            "room {} index cut short ({} bytes)",
            entry.room,
            bytes.len()
        ));
    }
    if crc32c::crc32c(bytes) != entry.crc {
        return Err(format!("room {} index checksum mismatch", entry.room));
    }
    let mut r = ReaderLe::new(bytes);
    let mut out = Vec::with_capacity(entry.count as usize);
    for _ in 0..entry.count {
        out.push(base_position + u64::from(r.u32("delta").map_err(codec)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(position: u64) -> ChatMessage {
        ChatMessage {
            position,
            index: position + 7,
            room: "general".into(),
            nick: "ada".into(),
            text: format!("hello {position} é"),
            timestamp_ms: 1_700_000_000_000 + position,
        }
    }

    #[test]
    fn a_record_round_trips_and_every_cut_is_incomplete() {
        let mut out = Vec::new();
        let len = encode_message(&mut out, &message(42));
        assert_eq!(len, out.len());
        let (total, body) = check_frame(&out).unwrap();
        assert_eq!(total, len);
        assert_eq!(parse_message(body).unwrap(), message(42));
        assert_eq!(room_of(body).unwrap(), (42, "general"));
        for cut in 0..out.len() {
            assert!(check_frame(&out[..cut]).is_err(), "cut at {cut}");
        }
        for bit in 0..out.len() * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(check_frame(&bad).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn a_header_round_trips_and_damage_is_named() {
        let header = SegmentHeader {
            cluster_id: 9,
            seq: 3,
            base_position: 1001,
        };
        let mut out = Vec::new();
        header.encode(&mut out);
        assert_eq!(out.len(), HEADER_LEN);
        assert_eq!(SegmentHeader::decode(&out), Ok(header));
        out[20] ^= 1;
        assert_eq!(
            SegmentHeader::decode(&out),
            Err("segment header checksum mismatch".to_string())
        );
        assert!(SegmentHeader::decode(&out[..10]).is_err());
    }

    #[test]
    fn an_index_round_trips_and_any_damage_to_its_head_is_refused() {
        let mut index = SealedIndex {
            seq: 2,
            base_position: 100,
            count: 5,
            data_len: 999,
            sparse: vec![40, 500],
            rooms: vec![
                RoomEntry {
                    room: "a".into(),
                    count: 0,
                    offset: 0,
                    crc: 0,
                },
                RoomEntry {
                    room: "bb".into(),
                    count: 0,
                    offset: 0,
                    crc: 0,
                },
            ],
        };
        let bytes = index.encode(&[vec![0, 3], vec![1, 2, 4]]);
        let decoded = SealedIndex::decode(&bytes).unwrap();
        assert_eq!(decoded, index);
        let b = &decoded.rooms[1];
        let start = b.offset as usize;
        assert_eq!(
            decode_room_positions(b, 100, &bytes[start..start + 12]).unwrap(),
            vec![101, 102, 104]
        );
        let head_len = decoded.rooms[0].offset as usize;
        for bit in 0..head_len * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(SealedIndex::decode(&bad).is_err(), "bit {bit}");
        }
        for cut in 0..head_len {
            assert!(SealedIndex::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut bad = bytes[start..start + 12].to_vec();
        bad[5] ^= 4;
        assert!(decode_room_positions(b, 100, &bad).is_err());
    }
}
