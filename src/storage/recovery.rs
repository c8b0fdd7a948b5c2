//! Recovery: read every segment, verify every checksum, replay the records, cut a torn tail.
//!
//! This file owns the rules that tell a torn write from damage. It never writes records and
//! never repairs anything but the one case the writer can cause by crashing: an incomplete or
//! corrupt *last* record of the *last* segment with nothing valid after it. Everything else
//! that does not add up is `Corrupt`, naming the file and the offset.

use super::record::{self, FrameError, Record, SegmentHeader, HEADER_LEN, RECORD_HEADER_LEN};
use super::segment::{self, Segment};
use super::{FsyncPolicy, StorageError, TornTail, WalOptions};
use crate::raft::{Entry, HardState, Index};
use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};

/// Where one entry's record lives, so a read is one pread of one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub seq: u64,
    pub offset: u64,
    pub len: u32,
}

/// The replayed log, and the open segments it came from.
pub(crate) struct RecoveredLog {
    /// Consecutive seq, oldest first; empty for a fresh log.
    pub segments: VecDeque<Segment>,
    pub hard_state: HardState,
    pub first_index: Index,
    pub entries: Vec<Entry>,
    /// `locations[k]` is where `entries[k]` lives.
    pub locations: VecDeque<Location>,
    pub torn_tail: Option<TornTail>,
}

/// Replays the segments in `opts.dir`. No segments (`segments` empty) means a fresh log.
pub(crate) fn recover(opts: &WalOptions) -> Result<RecoveredLog, StorageError> {
    let mut files = segment::list(&opts.dir)?;
    check_consecutive(&files)?;
    let fsync = opts.fsync == FsyncPolicy::Always;
    let mut replay = Replay::default();
    let mut segments = VecDeque::with_capacity(files.len());
    let mut torn_tail = None;
    let last_pos = files.len().checked_sub(1);
    for (pos, (seq, base_index, path)) in files.drain(..).enumerate() {
        let is_last = Some(pos) == last_pos;
        let buf = fs::read(&path)
            .map_err(|e| StorageError::io(format!("reading {}", path.display()), e))?;
        let header = match SegmentHeader::decode(&buf) {
            Ok(header) => header,
            Err(reason) if is_last => {
                let first_of_several = pos == 0 && seq != 1;
                torn_tail = Some(drop_torn_creation(
                    opts,
                    &path,
                    &buf,
                    reason,
                    first_of_several,
                )?);
                break;
            }
            Err(reason) => return Err(StorageError::corrupt(&path, 0, reason)),
        };
        check_header(opts, &header, seq, base_index, &path)?;
        if pos == 0 {
            replay.start(base_index);
        } else if base_index != replay.last_index() + 1 {
            return Err(StorageError::corrupt(
                &path,
                0,
                format!(
                    "segment starts at index {base_index} but the log before it ends at {}",
                    replay.last_index()
                ),
            ));
        }
        let (end, torn) = replay_segment(&mut replay, &path, seq, &buf, is_last, fsync)?;
        if torn.is_some() {
            torn_tail = torn;
        }
        segments.push_back(segment::open(path, seq, end as u64)?);
    }
    finish(replay, segments, torn_tail)
}

/// Segment seqs must follow one another: a gap means a segment is missing.
fn check_consecutive(files: &[(u64, Index, PathBuf)]) -> Result<(), StorageError> {
    for pair in files.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            return Err(StorageError::corrupt(
                &pair[1].2,
                0,
                format!(
                    "segment seq {} follows seq {}: a segment is missing",
                    pair[1].0, pair[0].0
                ),
            ));
        }
    }
    Ok(())
}

/// The last segment's header is not valid. A crash while the segment was being created leaves
/// a short or blank header: only then may the file go (and only if nothing valid follows, and
/// it is not the sole survivor of older segments, which held the hard state).
fn drop_torn_creation(
    opts: &WalOptions,
    path: &Path,
    buf: &[u8],
    reason: String,
    first_of_several: bool,
) -> Result<TornTail, StorageError> {
    if let Some(next) = find_valid_record(buf, 0) {
        return Err(StorageError::corrupt(
            path,
            0,
            format!("{reason}, but a valid record follows at offset {next}"),
        ));
    }
    if first_of_several {
        // Every older segment is gone, so this one was the only home of the hard state.
        // Creation made it durable before any deletion: this is not a crash.
        return Err(StorageError::corrupt(path, 0, reason));
    }
    fs::remove_file(path)
        .map_err(|e| StorageError::io(format!("removing {}", path.display()), e))?;
    if opts.fsync == FsyncPolicy::Always {
        segment::sync_dir(&opts.dir)?;
    }
    Ok(TornTail {
        file: path.to_path_buf(),
        offset: 0,
        bytes_cut: buf.len() as u64,
    })
}

/// Replays the records of one segment after its header. Returns where the valid records end,
/// and the torn tail cut there (only ever in the last segment).
fn replay_segment(
    replay: &mut Replay,
    path: &Path,
    seq: u64,
    buf: &[u8],
    is_last: bool,
    fsync: bool,
) -> Result<(usize, Option<TornTail>), StorageError> {
    let mut offset = HEADER_LEN;
    while offset < buf.len() {
        match record::check_frame(&buf[offset..]) {
            Ok((len, body)) => {
                let location = Location {
                    seq,
                    offset: offset as u64,
                    len: len as u32,
                };
                let applied =
                    record::parse_body(body).and_then(|record| replay.apply(record, location));
                if let Err(reason) = applied {
                    return Err(StorageError::corrupt(path, offset as u64, reason));
                }
                offset += len;
            }
            Err(why) if is_last => {
                if let Some(next) = find_valid_record(buf, offset + 1) {
                    return Err(StorageError::corrupt(
                        path,
                        offset as u64,
                        format!("{why}, but a valid record follows at offset {next}"),
                    ));
                }
                cut_torn_tail(path, offset as u64, fsync)?;
                let torn = TornTail {
                    file: path.to_path_buf(),
                    offset: offset as u64,
                    bytes_cut: (buf.len() - offset) as u64,
                };
                return Ok((offset, Some(torn)));
            }
            Err(why) => return Err(corrupt_frame(path, offset, why)),
        }
    }
    Ok((offset, None))
}

/// The recovered log from the replay: a fresh one without segments; otherwise the hard state
/// must have been found (only the very first segment, torn at creation, may lack one).
fn finish(
    replay: Replay,
    segments: VecDeque<Segment>,
    torn_tail: Option<TornTail>,
) -> Result<RecoveredLog, StorageError> {
    let Some(first_segment) = segments.front() else {
        // No segment at all, or only a first one whose creation was torn: a fresh log.
        return Ok(RecoveredLog {
            segments,
            hard_state: HardState::default(),
            first_index: 1,
            entries: Vec::new(),
            locations: VecDeque::new(),
            torn_tail,
        });
    };
    let hard_state = match replay.hard_state {
        Some(hs) => hs,
        None if first_segment.seq == 1 => HardState::default(),
        None => {
            return Err(StorageError::corrupt(
                &first_segment.path,
                HEADER_LEN as u64,
                "no hard state record in any segment",
            ))
        }
    };
    assert_eq!(replay.entries.len(), replay.locations.len());
    Ok(RecoveredLog {
        segments,
        hard_state,
        first_index: replay.first_index,
        entries: replay.entries,
        locations: replay.locations.into(),
        torn_tail,
    })
}

fn check_header(
    opts: &WalOptions,
    header: &SegmentHeader,
    seq: u64,
    base_index: Index,
    path: &Path,
) -> Result<(), StorageError> {
    let found = (header.cluster_id, header.node_id);
    let expected = (opts.cluster_id, opts.node_id);
    if found != expected {
        return Err(StorageError::WrongIdentity { expected, found });
    }
    if header.seq != seq || header.base_index != base_index {
        return Err(StorageError::corrupt(
            path,
            0,
            format!(
                "header says seq {} base index {}, the file name says seq {seq} base index {base_index}",
                header.seq, header.base_index
            ),
        ));
    }
    if base_index == 0 || base_index > record::MAX_INDEX {
        return Err(StorageError::corrupt(
            path,
            0,
            format!("base index {base_index} out of range"),
        ));
    }
    Ok(())
}

fn corrupt_frame(path: &Path, offset: usize, why: FrameError) -> StorageError {
    StorageError::corrupt(path, offset as u64, why.to_string())
}

/// The first offset at or after `from` where an intact record starts, if any. A torn write
/// leaves nothing intact after the tear; finding something means damage, not a crash.
/// (Entry data that itself holds an encoded record could fool this into refusing a torn tail;
/// that errs on the side of refusing, never of dropping data.)
fn find_valid_record(buf: &[u8], from: usize) -> Option<usize> {
    let last_start = buf.len().checked_sub(RECORD_HEADER_LEN)?;
    (from..=last_start).find(|&offset| record::check_frame(&buf[offset..]).is_ok())
}

fn cut_torn_tail(path: &Path, offset: u64, fsync: bool) -> Result<(), StorageError> {
    let file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
    file.set_len(offset)
        .map_err(|e| StorageError::io(format!("truncating {}", path.display()), e))?;
    if fsync {
        file.sync_all()
            .map_err(|e| StorageError::io(format!("fsync {}", path.display()), e))?;
    }
    Ok(())
}

/// The log as the records so far describe it.
#[derive(Default)]
struct Replay {
    first_index: Index,
    entries: Vec<Entry>,
    locations: Vec<Location>,
    hard_state: Option<HardState>,
}

impl Replay {
    fn start(&mut self, base_index: Index) {
        debug_assert!(base_index >= 1);
        self.first_index = base_index;
    }

    fn last_index(&self) -> Index {
        self.first_index + self.entries.len() as u64 - 1
    }

    fn apply(&mut self, record: Record<'_>, location: Location) -> Result<(), String> {
        match record {
            Record::Entry {
                term,
                index,
                kind,
                data,
            } => {
                if index != self.last_index() + 1 {
                    return Err(format!(
                        "entry index {index} where {} was expected",
                        self.last_index() + 1
                    ));
                }
                self.entries.push(Entry::new(term, index, kind, data));
                self.locations.push(location);
            }
            Record::HardState(hs) => self.hard_state = Some(hs),
            Record::Truncate { index } => {
                if index == 0 || index > self.last_index() + 1 {
                    return Err(format!(
                        "truncate at index {index} beyond the log's end {}",
                        self.last_index()
                    ));
                }
                if index < self.first_index {
                    // The log restarts lower than the oldest segment kept: nothing before it
                    // survives anyway (see Wal::append).
                    self.entries.clear();
                    self.locations.clear();
                    self.first_index = index;
                } else {
                    let keep = (index - self.first_index) as usize;
                    self.entries.truncate(keep);
                    self.locations.truncate(keep);
                }
            }
            Record::Reset { next_index } => {
                if next_index == 0 || next_index > record::MAX_INDEX {
                    return Err(format!("reset to index {next_index} out of range"));
                }
                // A snapshot covers everything before `next_index`: the log restarts empty
                // there, even beyond its old end (see Wal::reset_after_snapshot).
                self.entries.clear();
                self.locations.clear();
                self.first_index = next_index;
            }
        }
        Ok(())
    }
}
