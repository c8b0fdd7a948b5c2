//! The store's files: names, creation, scanning a segment (with the torn-tail rule), sealing
//! (writing the index file) and reading records back by position.
//!
//! This file owns the mapping between a segment and its two files. It never decides when to
//! seal or delete (the store does) and never caches anything.

use super::format::{
    self, FrameError, RoomEntry, SealedIndex, SegmentHeader, HEADER_LEN, RECORD_HEADER_LEN,
};
use crate::chat::ChatMessage;
use crate::storage::{StorageError, TornTail};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// One record in `SPARSE_EVERY` has its offset in the sparse index; a read by position scans
/// at most this many records.
pub(crate) const SPARSE_EVERY: u64 = 16;
/// Bytes of the first `pread` of a read (about one sparse interval of short messages); each
/// further one doubles, up to `READ_CHUNK_MAX`.
const READ_CHUNK_MIN: usize = 4 << 10;
const READ_CHUNK_MAX: usize = 256 << 10;

/// `hist-<seq>-<base_position>.seg`, zero-padded so names sort by seq.
pub(crate) fn segment_name(seq: u64, base_position: u64) -> String {
    format!("hist-{seq:020}-{base_position:020}.seg")
}

pub(crate) fn index_path(segment: &Path) -> PathBuf {
    segment.with_extension("idx")
}

/// `(seq, base_position)` of a segment file name; `None` for any other name.
fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let middle = name.strip_prefix("hist-")?.strip_suffix(".seg")?;
    let (seq, base) = middle.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(seq) || !digits(base) {
        return None;
    }
    Some((seq.parse().ok()?, base.parse().ok()?))
}

/// The segments in `dir` as (seq, base_position, path), in seq order. Removes leftovers:
/// `.tmp` files (a creation or seal that did not finish) and index files without a segment
/// (a retention that deleted the segment first).
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, u64, PathBuf)>, StorageError> {
    let listing = |e| StorageError::io(format!("listing {}", dir.display()), e);
    let mut found = Vec::new();
    let mut leftovers = Vec::new();
    for dirent in fs::read_dir(dir).map_err(listing)? {
        let path = dirent.map_err(listing)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with("hist-") && name.ends_with(".tmp") {
            leftovers.push(path);
        } else if name.starts_with("hist-") && name.ends_with(".idx") {
            if !path.with_extension("seg").exists() {
                leftovers.push(path);
            }
        } else if let Some((seq, base)) = parse_segment_name(name) {
            found.push((seq, base, path));
        }
    }
    for path in leftovers {
        fs::remove_file(&path)
            .map_err(|e| StorageError::io(format!("removing {}", path.display()), e))?;
    }
    found.sort();
    Ok(found)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(format!("fsync directory {}", dir.display()), e))
}

/// Writes `bytes` to `path` through a `.tmp` file and a rename, so the name appears only with
/// the whole content (fsynced first when `fsync`).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], fsync: bool) -> Result<(), StorageError> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let io = |what: &str, e| StorageError::io(format!("{what} {}", tmp.display()), e);
    let file = File::create(&tmp).map_err(|e| io("creating", e))?;
    file.write_all_at(bytes, 0).map_err(|e| io("writing", e))?;
    if fsync {
        file.sync_all().map_err(|e| io("fsync", e))?;
    }
    fs::rename(&tmp, path).map_err(|e| io("renaming", e))?;
    if fsync {
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(())
}

/// What a scan of a segment found: its records' offsets and rooms.
#[derive(Debug, Default)]
pub(crate) struct Scanned {
    pub count: u64,
    /// Offset of the end of the last good record.
    pub end: u64,
    pub sparse: Vec<u64>,
    /// Room to position deltas from the base.
    pub rooms: BTreeMap<String, Vec<u32>>,
    pub torn_tail: Option<TornTail>,
}

/// Reads and checks the header of the segment at `path`: magic, checksum, cluster, and that
/// it names the same seq and base as the file name.
pub(crate) fn check_header(
    path: &Path,
    buf: &[u8],
    cluster_id: u64,
    seq: u64,
    base_position: u64,
) -> Result<(), StorageError> {
    let header =
        SegmentHeader::decode(buf).map_err(|reason| StorageError::corrupt(path, 0, reason))?;
    if header.cluster_id != cluster_id {
        return Err(StorageError::corrupt(
            path,
            0,
            format!(
                "segment of cluster {}, this node is in cluster {cluster_id}",
                header.cluster_id
            ),
        ));
    }
    if header.base_position == 0 || header.base_position >= format::MAX_POSITION {
        return Err(StorageError::corrupt(
            path,
            0,
            format!("implausible base position {}", header.base_position),
        ));
    }
    if header.seq != seq || header.base_position != base_position {
        return Err(StorageError::corrupt(
            path,
            0,
            format!(
                "header says seq {} base {}, the file name seq {seq} base {base_position}",
                header.seq, header.base_position
            ),
        ));
    }
    Ok(())
}

/// Scans the whole segment `buf` (read from `path`), checking every record. With `last`, an
/// incomplete or damaged final record with nothing valid after it is a torn tail (reported,
/// not yet cut); anything else that does not add up is `Corrupt` with the file and offset.
pub(crate) fn scan(
    path: &Path,
    buf: &[u8],
    base_position: u64,
    last: bool,
) -> Result<Scanned, StorageError> {
    let mut scanned = Scanned {
        end: HEADER_LEN as u64,
        ..Scanned::default()
    };
    let mut offset = HEADER_LEN;
    while offset < buf.len() {
        let rest = &buf[offset..];
        let (len, body) = match format::check_frame(rest) {
            Ok(frame) => frame,
            Err(e) => {
                if let Some(next) = find_valid_record(buf, offset + 1) {
                    return Err(StorageError::corrupt(
                        path,
                        offset as u64,
                        format!("{e}, but a valid record follows at offset {next}"),
                    ));
                }
                if !last {
                    return Err(StorageError::corrupt(path, offset as u64, e.to_string()));
                }
                scanned.torn_tail = Some(TornTail {
                    file: path.to_path_buf(),
                    offset: offset as u64,
                    bytes_cut: (buf.len() - offset) as u64,
                });
                break;
            }
        };
        let (position, room) =
            format::room_of(body).map_err(|r| StorageError::corrupt(path, offset as u64, r))?;
        let expected = base_position + scanned.count;
        if position != expected {
            return Err(StorageError::corrupt(
                path,
                offset as u64,
                format!("record holds position {position}, expected {expected}"),
            ));
        }
        if scanned.count.is_multiple_of(SPARSE_EVERY) {
            scanned.sparse.push(offset as u64);
        }
        let delta = u32::try_from(scanned.count).map_err(|_| {
            StorageError::corrupt(path, offset as u64, "more records than a segment holds")
        })?;
        match scanned.rooms.get_mut(room) {
            Some(deltas) => deltas.push(delta),
            None => {
                scanned.rooms.insert(room.to_string(), vec![delta]);
            }
        }
        scanned.count += 1;
        offset += len;
        scanned.end = offset as u64;
    }
    Ok(scanned)
}

/// Checks every record of a sealed segment, decoding each in full (for `verify`).
pub(crate) fn verify(path: &Path, buf: &[u8], base_position: u64) -> Result<u64, StorageError> {
    let scanned = scan(path, buf, base_position, false)?;
    let mut offset = HEADER_LEN;
    while let Some(rest) = buf.get(offset..).filter(|rest| !rest.is_empty()) {
        // `scan` refused any damage to the framing; each record must also decode.
        let Ok((len, body)) = format::check_frame(rest) else {
            break;
        };
        format::parse_message(body)
            .map_err(|reason| StorageError::corrupt(path, offset as u64, reason))?;
        offset += len;
    }
    Ok(scanned.count)
}

fn find_valid_record(buf: &[u8], from: usize) -> Option<usize> {
    let last_start = buf.len().checked_sub(RECORD_HEADER_LEN)?;
    (from..=last_start).find(|&offset| format::check_frame(&buf[offset..]).is_ok())
}

/// Cuts the file at `path` to `len` bytes (fsynced when `fsync`).
pub(crate) fn cut(path: &Path, len: u64, fsync: bool) -> Result<(), StorageError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
    file.set_len(len)
        .map_err(|e| StorageError::io(format!("truncating {}", path.display()), e))?;
    if fsync {
        file.sync_all()
            .map_err(|e| StorageError::io(format!("fsync {}", path.display()), e))?;
    }
    Ok(())
}

/// The index a scan of a whole segment amounts to.
pub(crate) fn index_of(
    seq: u64,
    base_position: u64,
    scanned: &Scanned,
) -> (SealedIndex, Vec<Vec<u32>>) {
    let mut positions = Vec::with_capacity(scanned.rooms.len());
    let mut rooms = Vec::with_capacity(scanned.rooms.len());
    for (room, deltas) in &scanned.rooms {
        rooms.push(RoomEntry {
            room: room.clone(),
            count: 0,
            offset: 0,
            crc: 0,
        });
        positions.push(deltas.clone());
    }
    let index = SealedIndex {
        seq,
        base_position,
        count: scanned.count,
        data_len: scanned.end,
        sparse: scanned.sparse.clone(),
        rooms,
    };
    (index, positions)
}

/// Reads the records of `file` (at `path`; `data_len` bytes of it are records) from the one
/// at `start_offset` (which holds `start_position`), handing each with a position
/// `>= from` to `take` until it returns false or the data ends. Every record is checked:
/// damage is `Corrupt` with the file and offset.
#[allow(clippy::too_many_arguments)]
pub(crate) fn read_from(
    file: &File,
    path: &Path,
    data_len: u64,
    start_offset: u64,
    start_position: u64,
    from: u64,
    take: &mut dyn FnMut(ChatMessage) -> bool,
) -> Result<(), StorageError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_offset = start_offset; // file offset of buf[0]
    let mut at = 0usize; // next record within buf
    let mut position = start_position;
    let mut chunk = READ_CHUNK_MIN;
    loop {
        let offset = buf_offset + at as u64;
        if offset >= data_len {
            return Ok(());
        }
        match format::check_frame(&buf[at..]) {
            Ok((len, body)) => {
                let m = format::parse_message(body)
                    .map_err(|reason| StorageError::corrupt(path, offset, reason))?;
                if m.position != position {
                    return Err(StorageError::corrupt(
                        path,
                        offset,
                        format!("record holds position {}, expected {position}", m.position),
                    ));
                }
                at += len;
                position += 1;
                if m.position >= from && !take(m) {
                    return Ok(());
                }
            }
            Err(FrameError::Incomplete) => {
                // Read on: the next chunk, or the whole record if it is longer.
                let available = usize::try_from(data_len - offset).unwrap_or(usize::MAX);
                let have = buf.len() - at;
                let need = match buf.get(at..at + 4) {
                    Some(&[a, b, c, d]) => {
                        RECORD_HEADER_LEN + u32::from_le_bytes([a, b, c, d]) as usize
                    }
                    _ => RECORD_HEADER_LEN,
                };
                if need > available || have >= available {
                    return Err(StorageError::corrupt(
                        path,
                        offset,
                        FrameError::Incomplete.to_string(),
                    ));
                }
                let want = need.max(chunk).min(available);
                chunk = (chunk * 2).min(READ_CHUNK_MAX);
                buf.drain(..at);
                buf_offset = offset;
                at = 0;
                let old = buf.len();
                buf.resize(want, 0);
                file.read_exact_at(&mut buf[old..], offset + old as u64)
                    .map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?;
            }
            Err(e) => return Err(StorageError::corrupt(path, offset, e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_seq() {
        let a = segment_name(9, 1000);
        let b = segment_name(10, 5);
        assert!(a < b);
        assert_eq!(parse_segment_name(&a), Some((9, 1000)));
        assert_eq!(parse_segment_name("hist-1-2.seg"), None);
        assert_eq!(
            index_path(Path::new("/d/hist-1.seg")),
            PathBuf::from("/d/hist-1.idx")
        );
    }
}
