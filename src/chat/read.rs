//! Reads of old chat history that may have to wait for the disk, without waiting on the
//! caller's thread.
//!
//! [`StateMachine::room_history_read`] and [`StateMachine::messages_from_read`] answer what
//! `room_history` and `messages_from(..).take(max)` answer, either now ([`Read::Now`]: all of
//! it is in memory, the common case) or as a [`Pending`] read: a job for the message store
//! (`history::ReadJob`, `Send + 'static`, planned from memory only, holding no lock) and the
//! in-memory messages to put after what the job reads. The server runs the job on its reader
//! thread (`server::disk_reads`) and completes the answer with [`Pending::finish`].

use std::borrow::Cow;

use super::message::ChatMessage;
use super::state::StateMachine;
use crate::history::ReadJob;

/// An answer now, or the store part still to be read.
#[derive(Debug)]
pub enum Read<'a> {
    Now(Vec<Cow<'a, ChatMessage>>),
    Later(Pending),
}

/// A read waiting for the store: run `job`, then [`Pending::finish`].
#[derive(Debug)]
pub struct Pending {
    pub job: ReadJob,
    /// The in-memory messages after what the job reads.
    then: Vec<ChatMessage>,
    /// The whole answer holds at most this many.
    max: usize,
}

impl Pending {
    /// The whole answer from what the job read (or why it failed).
    pub fn finish(
        self,
        stored: Result<Vec<ChatMessage>, String>,
    ) -> Result<Vec<ChatMessage>, String> {
        let mut out = stored?;
        out.extend(self.then);
        out.truncate(self.max);
        Ok(out)
    }
}

impl StateMachine {
    /// Positions up to this only the message store has (0 for a chat held in memory): reads
    /// reaching them are answered `Read::Later`.
    pub fn stored_through(&self) -> u64 {
        self.chat_log.evicted_through()
    }

    /// [`StateMachine::room_history`], without reading the store now: see the module docs.
    pub fn room_history_read(&self, room: &str, n: usize) -> Read<'_> {
        let Some(positions) = self.rooms.get(room) else {
            return Read::Now(Vec::new());
        };
        let held = &positions.held;
        let from_store = n.saturating_sub(held.len());
        let from_store =
            usize::try_from(positions.stored).map_or(from_store, |s| s.min(from_store));
        if from_store == 0 {
            return Read::Now(self.room_history(room, n));
        }
        let before = held
            .front()
            .copied()
            .unwrap_or(self.chat_log.evicted_through() + 1);
        let Some(job) = self.chat_log.plan_room_page(room, before, from_store) else {
            return Read::Now(self.room_history(room, n));
        };
        let from = held.len().saturating_sub(n);
        let then = held
            .range(from..)
            .filter_map(|&position| self.message(position))
            .map(Cow::into_owned)
            .collect();
        Read::Later(Pending {
            job,
            then,
            max: usize::MAX,
        })
    }

    /// `messages_from(position).take(max)`, without reading the store now: see the module
    /// docs.
    pub fn messages_from_read(&self, position: u64, max: usize) -> Read<'_> {
        match self.chat_log.plan_from(position, max) {
            None => Read::Now(self.messages_from(position).take(max).collect()),
            Some(job) => {
                let memory_from = self.chat_log.evicted_through() + 1;
                let then = self
                    .chat_log
                    .iter_memory(memory_from)
                    .take(max)
                    .cloned()
                    .collect();
                Read::Later(Pending { job, then, max })
            }
        }
    }
}
