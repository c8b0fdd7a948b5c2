//! Reads of the store planned on the event loop and run on another thread.
//!
//! [`History::plan_range`] and [`History::plan_room_page`] look only at what the store holds
//! in memory (the segments' views, the active segment's room deltas, each sealed segment's
//! room entry) and write nothing; they return a [`ReadJob`]: `Send + 'static`, holding no
//! lock, that a thread runs later with [`ReadJob::run`] (the server's reader thread,
//! `server::disk_reads`). The job reads through a [`HistoryReader`] (the open files, so a
//! segment that retention deletes meanwhile stays readable) and, for a room, the sealed
//! segments' index files, also open (a pending seal's index is not named yet, see `sealer`).
//! A job answers exactly what `read_range` / `room_page` would have answered when it was
//! planned.

use super::{format, segment, History, HistoryReader, View};
use crate::chat::ChatMessage;
use crate::storage::StorageError;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

/// One sealed segment's part of a room's page: where the room's deltas lie in its index.
#[derive(Clone, Debug)]
struct SealedRoom {
    index_path: PathBuf,
    /// The index file, open: a pending seal's index is not named yet (`sealer`), and a
    /// segment deleted by retention meanwhile stays readable.
    index_file: Arc<File>,
    base_position: u64,
    entry: format::RoomEntry,
}

/// A read of the store to run off the event loop; see the module docs.
#[derive(Clone, Debug)]
pub enum ReadJob {
    /// Up to `max` messages from `position` on, none after `through`.
    Range {
        reader: HistoryReader,
        position: u64,
        through: u64,
        max: usize,
    },
    /// The last `max` messages of `room` below `before`, oldest first: the positions
    /// `newest_first` (from the active segment, already known), then the sealed segments'
    /// room entries newest segment first, each read from its index file.
    Room {
        reader: HistoryReader,
        room: String,
        before: u64,
        max: usize,
        newest_first: Vec<u64>,
        sealed: Vec<SealedRoomPart>,
    },
    /// Planning failed already (the reason); running it answers the reason.
    Failed(String),
}

/// A sealed segment to consult for a room page (opaque outside the store).
#[derive(Clone, Debug)]
pub struct SealedRoomPart(SealedRoom);

impl History {
    /// A view of the records already in the files, without writing anything (unlike
    /// [`History::reader`]): what the chat log evicted is always written.
    pub(crate) fn written_reader(&self) -> HistoryReader {
        let mut segments: Vec<View> = self.sealed.iter().map(|s| s.view()).collect();
        if let Some(a) = &self.active {
            segments.push(View {
                path: a.path.clone(),
                file: Arc::clone(&a.file),
                base_position: a.base_position,
                count: a.written_count,
                data_len: a.written,
                sparse: Arc::from(a.sparse.as_slice()),
            });
        }
        HistoryReader { segments }
    }

    /// A job reading up to `max` messages from `position` on, none after `through` (which
    /// must be written: at most the last position in the files).
    pub fn plan_range(&self, position: u64, through: u64, max: usize) -> ReadJob {
        ReadJob::Range {
            reader: self.written_reader(),
            position,
            through,
            max,
        }
    }

    /// A job answering what `room_page(room, before, max)` answers now; `before` must be at
    /// most one past the last written position.
    pub fn plan_room_page(&self, room: &str, before: u64, max: usize) -> ReadJob {
        let mut newest_first: Vec<u64> = Vec::new();
        if let Some(a) = &self.active {
            if let Some(deltas) = a.rooms.get(room) {
                let positions = deltas.iter().rev().map(|&d| a.base_position + u64::from(d));
                newest_first.extend(positions.filter(|&p| p < before).take(max));
            }
        }
        let mut sealed = Vec::new();
        let mut planned = newest_first.len() as u64;
        for s in self.sealed.iter().rev() {
            if planned >= max as u64 {
                break;
            }
            if s.index.base_position >= before {
                continue;
            }
            let Some(entry) = super::room_entry(&s.index, room) else {
                continue;
            };
            // A segment wholly below `before` gives all its entries; the first one read may
            // give fewer (filtered at run time), so this only bounds what is planned.
            planned += u64::from(entry.count);
            sealed.push(SealedRoomPart(SealedRoom {
                index_path: segment::index_path(&s.path),
                index_file: Arc::clone(&s.index_file),
                base_position: s.index.base_position,
                entry: entry.clone(),
            }));
        }
        ReadJob::Room {
            reader: self.written_reader(),
            room: room.to_string(),
            before,
            max,
            newest_first,
            sealed,
        }
    }
}

impl ReadJob {
    /// Runs the read (blocking on disk): the messages, oldest first, or why not.
    pub fn run(&self) -> Result<Vec<ChatMessage>, String> {
        match self {
            ReadJob::Failed(why) => Err(why.clone()),
            ReadJob::Range {
                reader,
                position,
                through,
                max,
            } => {
                if position > through {
                    return Ok(Vec::new());
                }
                let left = usize::try_from(through - position + 1).unwrap_or(usize::MAX);
                let mut out = reader
                    .read_range(*position, (*max).min(left))
                    .map_err(|e| e.to_string())?;
                out.retain(|m| m.position <= *through);
                Ok(out)
            }
            ReadJob::Room {
                reader,
                room,
                before,
                max,
                newest_first,
                sealed,
            } => read_room(reader, room, *before, *max, newest_first, sealed)
                .map_err(|e| e.to_string()),
        }
    }
}

fn read_room(
    reader: &HistoryReader,
    room: &str,
    before: u64,
    max: usize,
    newest_first: &[u64],
    sealed: &[SealedRoomPart],
) -> Result<Vec<ChatMessage>, StorageError> {
    let mut positions: Vec<u64> = newest_first.to_vec();
    for SealedRoomPart(s) in sealed {
        if positions.len() >= max {
            break;
        }
        let wanted = max - positions.len();
        positions.extend(super::room_positions_before(
            &s.index_file,
            &s.index_path,
            &s.entry,
            s.base_position,
            before,
            wanted,
        )?);
    }
    let mut out = Vec::with_capacity(positions.len());
    for &position in positions.iter().rev() {
        let found = reader.read_range(position, 1)?.pop();
        match found {
            Some(m) if m.position == position && m.room == room => out.push(m),
            _ => {
                return Err(StorageError::corrupt(
                    store_dir(sealed, reader),
                    position,
                    format!(
                        "the room index of {room} names position {position}, which does not \
                         hold a message of the room"
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// A path to name in an error about the store as a whole: a segment's directory.
fn store_dir(sealed: &[SealedRoomPart], reader: &HistoryReader) -> PathBuf {
    let path = sealed
        .first()
        .map(|SealedRoomPart(s)| s.index_path.clone())
        .or_else(|| reader.segments.first().map(|v| v.path.clone()))
        .unwrap_or_default();
    path.parent().map(PathBuf::from).unwrap_or(path)
}
