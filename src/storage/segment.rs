//! Segment files: their names, how one is created durably, and directory fsync.
//!
//! This file owns the mapping between a segment and its file. It never interprets records
//! (recovery and the Wal do) and never decides when to roll or delete (the Wal does).

use super::record::{self, SegmentHeader, HEADER_LEN};
use super::StorageError;
use crate::raft::{HardState, Index};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One open segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    /// Shared with in-flight `SyncJob`s, which fdatasync it on another thread.
    pub file: Arc<File>,
    /// Bytes of valid data; the next write goes here. Equals the file size except while a write
    /// is under way.
    pub len_bytes: u64,
}

/// `wal-<seq>-<base_index>.log`, both zero-padded decimal so names sort in replay order.
pub(crate) fn file_name(seq: u64, base_index: Index) -> String {
    format!("wal-{seq:020}-{base_index:020}.log")
}

/// `None` for a file that is not ours (ignored), `Some(Err)` for one that claims to be a segment
/// but is misnamed (refused: something wrote into our directory).
fn parse_file_name(name: &str) -> Option<Result<(u64, Index), ()>> {
    let middle = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    let parsed = middle.split_once('-').and_then(|(seq, base)| {
        let all_digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(seq) || !all_digits(base) {
            return None;
        }
        Some((seq.parse().ok()?, base.parse().ok()?))
    });
    Some(parsed.ok_or(()))
}

/// The segment files in `dir` as (seq, base_index, path), in seq order.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, Index, PathBuf)>, StorageError> {
    let read_dir =
        fs::read_dir(dir).map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?;
    let mut found = Vec::new();
    for dirent in read_dir {
        let dirent =
            dirent.map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?;
        let name = dirent.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_file_name(name) {
            None => continue,
            Some(Ok((seq, base_index))) => found.push((seq, base_index, dirent.path())),
            Some(Err(())) => {
                return Err(StorageError::corrupt(
                    dirent.path(),
                    0,
                    "misnamed segment file",
                ))
            }
        }
    }
    found.sort_unstable_by_key(|&(seq, _, _)| seq);
    Ok(found)
}

/// Opens an existing segment for reading and writing at `len_bytes`.
pub(crate) fn open(path: PathBuf, seq: u64, len_bytes: u64) -> Result<Segment, StorageError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
    Ok(Segment {
        seq,
        path,
        file: Arc::new(file),
        len_bytes,
    })
}

/// Creates a segment holding its header and `hard_state`; with `fsync` both the file and the
/// directory entry are durable on return, so a segment never exists on disk without its header
/// and hard state once anything has been written after them.
pub(crate) fn create(
    dir: &Path,
    header: SegmentHeader,
    hard_state: &HardState,
    fsync: bool,
) -> Result<Segment, StorageError> {
    let path = dir.join(file_name(header.seq, header.base_index));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| StorageError::io(format!("creating {}", path.display()), e))?;
    let mut buf = Vec::with_capacity(HEADER_LEN + record::HARD_STATE_RECORD_LEN);
    header.encode(&mut buf);
    record::encode_hard_state(&mut buf, hard_state);
    file.write_all_at(&buf, 0)
        .map_err(|e| StorageError::io(format!("writing header of {}", path.display()), e))?;
    if fsync {
        file.sync_data()
            .map_err(|e| StorageError::io(format!("fdatasync {}", path.display()), e))?;
        sync_dir(dir)?;
    }
    Ok(Segment {
        seq: header.seq,
        path,
        file: Arc::new(file),
        len_bytes: buf.len() as u64,
    })
}

/// Makes creations, deletions and truncations of entries in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(format!("fsync directory {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_in_seq_order() {
        let a = file_name(9, 1000);
        let b = file_name(10, 5);
        assert!(a < b, "names must sort by seq first");
        assert_eq!(parse_file_name(&a), Some(Ok((9, 1000))));
        assert_eq!(parse_file_name("LOCK"), None);
        assert_eq!(parse_file_name("wal-1-2.log"), Some(Err(())));
        assert_eq!(parse_file_name("wal-.log"), Some(Err(())));
    }
}
