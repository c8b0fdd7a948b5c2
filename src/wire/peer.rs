//! Peer frames: the bodies of the frames nodes send each other after the handshake. Raft
//! messages, the two frames a follower and a leader use to forward client commands, the
//! snapshot transfer (`SnapshotChunk`, `SnapshotAck`) and the history fetch that completes it
//! (`HistoryRequest`, `HistoryPage`, `HistoryRefused`).
//!
//! It owns the frame type numbers and the byte layout of each body (documented field by field
//! in `wire`'s module docs). It never touches a socket and never interprets a message: a decoded
//! `Message` goes to `Raft::step` as it is, a `Propose` to the leader's `propose`.

use super::codec::{
    option_u64_bytes, put_bool, put_option_u64, put_u16, put_u32, put_u64, put_u8, Reader,
};
use super::frame::{self, FRAME_HEADER_BYTES};
use super::WireError;
use crate::raft::{
    Entry, EntryKind, Membership, Message, MessageBody, NodeId, Payload, RejectHint, SnapshotMeta,
    Term,
};

/// One decoded peer frame. `Propose` borrows its command from the read buffer; a `Raft` message
/// owns its entries (each entry's data is copied once, into its shared `Payload`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerFrame<'a> {
    Raft(Message),
    /// A follower forwards a client command to the leader; `origin_req` is the follower's handle
    /// for the client request, echoed in `ProposeRejected`.
    Propose {
        origin_req: u64,
        data: &'a [u8],
    },
    /// The leader could not propose (it is no longer leader); the follower tells its client.
    ProposeRejected {
        origin_req: u64,
        leader_hint: Option<NodeId>,
    },
    /// A leader sends a follower the snapshot file `snapshot` (`total_len` bytes, header
    /// included) in pieces: `data` is the bytes at `offset`. `term` is the leader's term, for the
    /// InstallSnapshot the follower steps into its core once the file is complete.
    SnapshotChunk {
        term: Term,
        snapshot: SnapshotMeta,
        total_len: u64,
        offset: u64,
        data: &'a [u8],
    },
    /// The follower's answer to a chunk: it holds the first `received` bytes of `snapshot`'s
    /// file, so the next chunk it wants starts there (0 after it discarded a bad file).
    SnapshotAck {
        snapshot: SnapshotMeta,
        received: u64,
    },
    /// A follower received `snapshot`'s file, whose messages up to some position live in the
    /// message store, and its own store lacks some: it asks the sender for the messages at
    /// positions `from_position..=through` (answered by one `HistoryPage` holding a prefix of
    /// them, or a `HistoryRefused`).
    HistoryRequest {
        snapshot: SnapshotMeta,
        from_position: u64,
        through: u64,
    },
    /// `count` messages from the sender's store, positions `first_position..`, each in
    /// `wire::history`'s layout (`messages`: all remaining body bytes; decoded by the receiver
    /// with `decode_history_messages`, which checks the positions).
    HistoryPage {
        snapshot: SnapshotMeta,
        first_position: u64,
        count: u32,
        messages: &'a [u8],
    },
    /// The sender cannot serve the request for `from_position` (it has no such snapshot, or
    /// cannot read its store); `reason` is for the receiver's log.
    HistoryRefused {
        snapshot: SnapshotMeta,
        from_position: u64,
        reason: &'a str,
    },
}

/// The `frame_type` byte of each peer frame. 0 is never used, so a zeroed buffer is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum PeerFrameType {
    RequestVote = 0x01,
    RequestVoteResponse = 0x02,
    AppendEntries = 0x03,
    AppendEntriesResponse = 0x04,
    Heartbeat = 0x05,
    HeartbeatResponse = 0x06,
    ReadIndex = 0x07,
    ReadIndexResponse = 0x08,
    TimeoutNow = 0x09,
    InstallSnapshot = 0x0A,
    Propose = 0x10,
    ProposeRejected = 0x11,
    SnapshotChunk = 0x12,
    SnapshotAck = 0x13,
    HistoryRequest = 0x14,
    HistoryPage = 0x15,
    HistoryRefused = 0x16,
}

impl PeerFrameType {
    fn from_u8(byte: u8) -> Option<PeerFrameType> {
        use PeerFrameType::*;
        Some(match byte {
            0x01 => RequestVote,
            0x02 => RequestVoteResponse,
            0x03 => AppendEntries,
            0x04 => AppendEntriesResponse,
            0x05 => Heartbeat,
            0x06 => HeartbeatResponse,
            0x07 => ReadIndex,
            0x08 => ReadIndexResponse,
            0x09 => TimeoutNow,
            0x0A => InstallSnapshot,
            0x10 => Propose,
            0x11 => ProposeRejected,
            0x12 => SnapshotChunk,
            0x13 => SnapshotAck,
            0x14 => HistoryRequest,
            0x15 => HistoryPage,
            0x16 => HistoryRefused,
            _ => return None,
        })
    }

    fn of(body: &MessageBody) -> PeerFrameType {
        match body {
            MessageBody::RequestVote { .. } => PeerFrameType::RequestVote,
            MessageBody::RequestVoteResponse { .. } => PeerFrameType::RequestVoteResponse,
            MessageBody::AppendEntries { .. } => PeerFrameType::AppendEntries,
            MessageBody::AppendEntriesResponse { .. } => PeerFrameType::AppendEntriesResponse,
            MessageBody::Heartbeat { .. } => PeerFrameType::Heartbeat,
            MessageBody::HeartbeatResponse { .. } => PeerFrameType::HeartbeatResponse,
            MessageBody::ReadIndex { .. } => PeerFrameType::ReadIndex,
            MessageBody::ReadIndexResponse { .. } => PeerFrameType::ReadIndexResponse,
            MessageBody::TimeoutNow => PeerFrameType::TimeoutNow,
            MessageBody::InstallSnapshot { .. } => PeerFrameType::InstallSnapshot,
        }
    }
}

/// `from`, `to`, `term`: the start of every Raft message body.
const MESSAGE_HEADER_BYTES: usize = 3 * 8;
/// Per entry in AppendEntries: `term`, `index`, `kind`, `data_len`; then the data.
const ENTRY_HEADER_BYTES: usize = 8 + 8 + 1 + 4;

/// The exact size of the frame `encode_raft_message` writes for `msg`, header included. Lets a
/// sender budget a write buffer or a batch before encoding.
pub fn raft_message_frame_bytes(msg: &Message) -> usize {
    FRAME_HEADER_BYTES + MESSAGE_HEADER_BYTES + message_body_bytes(&msg.body)
}

fn message_body_bytes(body: &MessageBody) -> usize {
    match body {
        MessageBody::RequestVote { .. } => 1 + 8 + 8,
        MessageBody::RequestVoteResponse { .. } => 1 + 1,
        MessageBody::AppendEntries { entries, .. } => {
            let entries_bytes: usize = entries
                .iter()
                .map(|entry| ENTRY_HEADER_BYTES + entry.data.len())
                .sum();
            8 + 8 + 8 + 4 + entries_bytes
        }
        MessageBody::AppendEntriesResponse { .. } => 1 + 8 + 8 + 8,
        MessageBody::Heartbeat { .. } => 8 + 8,
        MessageBody::HeartbeatResponse { .. } => 8,
        MessageBody::ReadIndex { .. } => 8,
        MessageBody::ReadIndexResponse { index, .. } => 8 + option_u64_bytes(*index),
        MessageBody::TimeoutNow => 0,
        MessageBody::InstallSnapshot { membership, .. } => 8 + 8 + 4 + membership.encode().len(),
    }
}

/// Appends one frame carrying `msg` to `out`, encoding straight into it.
///
/// The caller keeps AppendEntries under `FRAME_BYTES_MAX` (the core's `max_msg_bytes` does,
/// as long as no single entry is that large); debug builds assert it.
pub fn encode_raft_message(msg: &Message, out: &mut Vec<u8>) {
    let body_bytes = MESSAGE_HEADER_BYTES + message_body_bytes(&msg.body);
    let start = frame::begin(out, PeerFrameType::of(&msg.body) as u8, body_bytes);
    put_u64(out, msg.from);
    put_u64(out, msg.to);
    put_u64(out, msg.term);
    match &msg.body {
        MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
        } => {
            put_bool(out, *pre_vote);
            put_u64(out, *last_log_index);
            put_u64(out, *last_log_term);
        }
        MessageBody::RequestVoteResponse { pre_vote, granted } => {
            put_bool(out, *pre_vote);
            put_bool(out, *granted);
        }
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => {
            put_u64(out, *prev_log_index);
            put_u64(out, *prev_log_term);
            put_u64(out, *leader_commit);
            // More than u32::MAX entries cannot fit in a frame; the frame-size assert in
            // `finish` catches such a message long before this count could wrap.
            put_u32(out, u32::try_from(entries.len()).unwrap_or(u32::MAX));
            for entry in entries {
                put_entry(entry, out);
            }
        }
        MessageBody::AppendEntriesResponse {
            success,
            match_index,
            reject_hint,
        } => {
            put_bool(out, *success);
            put_u64(out, *match_index);
            put_u64(out, reject_hint.conflict_term);
            put_u64(out, reject_hint.conflict_index);
        }
        MessageBody::Heartbeat {
            leader_commit,
            read_round,
        } => {
            put_u64(out, *leader_commit);
            put_u64(out, *read_round);
        }
        MessageBody::HeartbeatResponse { read_round } => put_u64(out, *read_round),
        MessageBody::ReadIndex { ctx } => put_u64(out, *ctx),
        MessageBody::ReadIndexResponse { ctx, index } => {
            put_u64(out, *ctx);
            put_option_u64(out, *index);
        }
        MessageBody::TimeoutNow => {}
        MessageBody::InstallSnapshot {
            snapshot,
            membership,
        } => {
            put_u64(out, snapshot.index);
            put_u64(out, snapshot.term);
            let membership = membership.encode();
            put_u32(out, u32::try_from(membership.len()).unwrap_or(u32::MAX));
            out.extend_from_slice(&membership);
        }
    }
    debug_assert_eq!(out.len() - start, FRAME_HEADER_BYTES + body_bytes);
    frame::finish(out, start);
}

fn put_entry(entry: &Entry, out: &mut Vec<u8>) {
    put_u64(out, entry.term);
    put_u64(out, entry.index);
    put_u8(out, entry.kind as u8);
    // An entry over 4 GiB would already have tripped the frame-size assert.
    put_u32(out, u32::try_from(entry.data.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&entry.data);
}

/// Appends a `Propose` frame: a follower forwarding client command `data` to the leader.
pub fn encode_propose(origin_req: u64, data: &[u8], out: &mut Vec<u8>) {
    let start = frame::begin(out, PeerFrameType::Propose as u8, 8 + data.len());
    put_u64(out, origin_req);
    // The command runs to the end of the body: its length is the body's, less 8.
    out.extend_from_slice(data);
    frame::finish(out, start);
}

/// Appends a `ProposeRejected` frame: the leader's answer to a `Propose` it could not accept.
pub fn encode_propose_rejected(origin_req: u64, leader_hint: Option<NodeId>, out: &mut Vec<u8>) {
    let body_bytes = 8 + option_u64_bytes(leader_hint);
    let start = frame::begin(out, PeerFrameType::ProposeRejected as u8, body_bytes);
    put_u64(out, origin_req);
    put_option_u64(out, leader_hint);
    frame::finish(out, start);
}

/// Bytes of a `SnapshotChunk` body before its data.
pub const SNAPSHOT_CHUNK_HEADER_BYTES: usize = 5 * 8;

/// Appends a `SnapshotChunk` frame carrying `data`, the bytes at `offset` of the snapshot file.
/// The caller keeps `data` under `FRAME_BYTES_MAX - SNAPSHOT_CHUNK_HEADER_BYTES`.
pub fn encode_snapshot_chunk(
    term: Term,
    snapshot: SnapshotMeta,
    total_len: u64,
    offset: u64,
    data: &[u8],
    out: &mut Vec<u8>,
) {
    let body_bytes = SNAPSHOT_CHUNK_HEADER_BYTES + data.len();
    let start = frame::begin(out, PeerFrameType::SnapshotChunk as u8, body_bytes);
    put_u64(out, term);
    put_u64(out, snapshot.index);
    put_u64(out, snapshot.term);
    put_u64(out, total_len);
    put_u64(out, offset);
    out.extend_from_slice(data);
    frame::finish(out, start);
}

/// Appends a `SnapshotAck` frame: the receiver holds the first `received` bytes of `snapshot`.
pub fn encode_snapshot_ack(snapshot: SnapshotMeta, received: u64, out: &mut Vec<u8>) {
    let start = frame::begin(out, PeerFrameType::SnapshotAck as u8, 3 * 8);
    put_u64(out, snapshot.index);
    put_u64(out, snapshot.term);
    put_u64(out, received);
    frame::finish(out, start);
}

/// Bytes of a `HistoryPage` body before its messages.
pub const HISTORY_PAGE_HEADER_BYTES: usize = 3 * 8 + 4;
/// The longest reason a `HistoryRefused` carries (a longer one is cut at a char boundary).
const REFUSAL_REASON_BYTES_MAX: usize = 1024;

/// Appends a `HistoryRequest` frame: the sender wants positions `from_position..=through`.
pub fn encode_history_request(
    snapshot: SnapshotMeta,
    from_position: u64,
    through: u64,
    out: &mut Vec<u8>,
) {
    let start = frame::begin(out, PeerFrameType::HistoryRequest as u8, 4 * 8);
    put_u64(out, snapshot.index);
    put_u64(out, snapshot.term);
    put_u64(out, from_position);
    put_u64(out, through);
    frame::finish(out, start);
}

/// Appends a `HistoryPage` frame: `count` messages from `first_position`, already encoded
/// (`encode_history_message`) in `messages`. The caller keeps `messages` well under
/// `FRAME_BYTES_MAX - HISTORY_PAGE_HEADER_BYTES`.
pub fn encode_history_page(
    snapshot: SnapshotMeta,
    first_position: u64,
    count: u32,
    messages: &[u8],
    out: &mut Vec<u8>,
) {
    let body_bytes = HISTORY_PAGE_HEADER_BYTES + messages.len();
    let start = frame::begin(out, PeerFrameType::HistoryPage as u8, body_bytes);
    put_u64(out, snapshot.index);
    put_u64(out, snapshot.term);
    put_u64(out, first_position);
    put_u32(out, count);
    out.extend_from_slice(messages);
    frame::finish(out, start);
}

/// Appends a `HistoryRefused` frame; `reason` is cut to `REFUSAL_REASON_BYTES_MAX` bytes.
pub fn encode_history_refused(
    snapshot: SnapshotMeta,
    from_position: u64,
    reason: &str,
    out: &mut Vec<u8>,
) {
    let mut cut = reason.len().min(REFUSAL_REASON_BYTES_MAX);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let reason = &reason.as_bytes()[..cut];
    let start = frame::begin(
        out,
        PeerFrameType::HistoryRefused as u8,
        3 * 8 + 2 + reason.len(),
    );
    put_u64(out, snapshot.index);
    put_u64(out, snapshot.term);
    put_u64(out, from_position);
    put_u16(out, reason.len() as u16);
    out.extend_from_slice(reason);
    frame::finish(out, start);
}

/// Decodes the frame at the front of `buf`.
///
/// `Ok(None)`: the frame is not all there yet; read more and call again with the longer buffer.
/// `Ok(Some((frame, consumed)))`: drop `consumed` bytes from the front once done with `frame`.
/// `Err(_)`: the stream is unusable; close the connection. Unknown types and oversized lengths are
/// refused from the 9 header bytes alone, before the body is waited for.
pub fn decode_peer_frame(buf: &[u8]) -> Result<Option<(PeerFrame<'_>, usize)>, WireError> {
    let Some(header) = frame::peek_header(buf)? else {
        return Ok(None);
    };
    let frame_type = PeerFrameType::from_u8(header.frame_type)
        .ok_or(WireError::UnknownType(header.frame_type))?;
    let Some(body) = header.body(buf)? else {
        return Ok(None);
    };
    let frame = parse_body(frame_type, body)?;
    Ok(Some((frame, header.frame_bytes())))
}

/// Parses a whole, checksummed body. Every field is read through `Reader`, which checks lengths
/// before touching bytes, and the body must be consumed exactly.
fn parse_body(frame_type: PeerFrameType, body: &[u8]) -> Result<PeerFrame<'_>, WireError> {
    use PeerFrameType as T;
    let mut reader = Reader::new(body);
    let r = &mut reader;
    let frame = match frame_type {
        T::Propose => PeerFrame::Propose {
            origin_req: r.u64()?,
            data: r.rest(),
        },
        T::ProposeRejected => PeerFrame::ProposeRejected {
            origin_req: r.u64()?,
            leader_hint: r.option_u64()?,
        },
        T::SnapshotChunk => PeerFrame::SnapshotChunk {
            term: r.u64()?,
            snapshot: SnapshotMeta {
                index: r.u64()?,
                term: r.u64()?,
            },
            total_len: r.u64()?,
            offset: r.u64()?,
            data: r.rest(),
        },
        T::SnapshotAck => PeerFrame::SnapshotAck {
            snapshot: SnapshotMeta {
                index: r.u64()?,
                term: r.u64()?,
            },
            received: r.u64()?,
        },
        T::HistoryRequest => PeerFrame::HistoryRequest {
            snapshot: SnapshotMeta {
                index: r.u64()?,
                term: r.u64()?,
            },
            from_position: r.u64()?,
            through: r.u64()?,
        },
        T::HistoryPage => PeerFrame::HistoryPage {
            snapshot: SnapshotMeta {
                index: r.u64()?,
                term: r.u64()?,
            },
            first_position: r.u64()?,
            count: r.u32()?,
            messages: r.rest(),
        },
        T::HistoryRefused => PeerFrame::HistoryRefused {
            snapshot: SnapshotMeta {
                index: r.u64()?,
                term: r.u64()?,
            },
            from_position: r.u64()?,
            reason: {
                let len = r.u16()? as usize;
                if len > REFUSAL_REASON_BYTES_MAX {
                    return Err(WireError::Malformed("refusal reason too long"));
                }
                std::str::from_utf8(r.bytes(len)?)
                    .map_err(|_| WireError::Malformed("string is not UTF-8"))?
            },
        },
        raft_type => raft(r, |r| raft_body(raft_type, r))?,
    };
    reader.finish()?;
    Ok(frame)
}

/// The fields of a Raft message's body, after its `from`, `to` and `term`.
fn raft_body(frame_type: PeerFrameType, r: &mut Reader<'_>) -> Result<MessageBody, WireError> {
    use PeerFrameType as T;
    Ok(match frame_type {
        T::RequestVote => MessageBody::RequestVote {
            pre_vote: r.bool()?,
            last_log_index: r.u64()?,
            last_log_term: r.u64()?,
        },
        T::RequestVoteResponse => MessageBody::RequestVoteResponse {
            pre_vote: r.bool()?,
            granted: r.bool()?,
        },
        T::AppendEntries => MessageBody::AppendEntries {
            prev_log_index: r.u64()?,
            prev_log_term: r.u64()?,
            leader_commit: r.u64()?,
            entries: parse_entries(r)?,
        },
        T::AppendEntriesResponse => MessageBody::AppendEntriesResponse {
            success: r.bool()?,
            match_index: r.u64()?,
            reject_hint: RejectHint {
                conflict_term: r.u64()?,
                conflict_index: r.u64()?,
            },
        },
        T::Heartbeat => MessageBody::Heartbeat {
            leader_commit: r.u64()?,
            read_round: r.u64()?,
        },
        T::HeartbeatResponse => MessageBody::HeartbeatResponse {
            read_round: r.u64()?,
        },
        T::ReadIndex => MessageBody::ReadIndex { ctx: r.u64()? },
        T::ReadIndexResponse => MessageBody::ReadIndexResponse {
            ctx: r.u64()?,
            index: r.option_u64()?,
        },
        T::TimeoutNow => MessageBody::TimeoutNow,
        T::InstallSnapshot => MessageBody::InstallSnapshot {
            snapshot: SnapshotMeta {
                index: r.u64()?,
                term: r.u64()?,
            },
            membership: {
                let len = r.u32()? as usize;
                Membership::decode(r.bytes(len)?)
                    .map_err(|_| WireError::Malformed("bad configuration"))?
            },
        },
        T::Propose
        | T::ProposeRejected
        | T::SnapshotChunk
        | T::SnapshotAck
        | T::HistoryRequest
        | T::HistoryPage
        | T::HistoryRefused => return Err(WireError::Malformed("not a Raft message type")),
    })
}

/// A Raft message: the `from`, `to`, `term` every one starts with, then `body`'s fields.
fn raft<'a>(
    reader: &mut Reader<'_>,
    body: impl FnOnce(&mut Reader<'_>) -> Result<MessageBody, WireError>,
) -> Result<PeerFrame<'a>, WireError> {
    let from = reader.u64()?;
    let to = reader.u64()?;
    let term = reader.u64()?;
    let body = body(reader)?;
    Ok(PeerFrame::Raft(Message {
        from,
        to,
        term,
        body,
    }))
}

/// The entry count is checked against the bytes left before anything is allocated: every entry
/// takes at least `ENTRY_HEADER_BYTES`, so a count the body cannot hold is refused outright and
/// the `Vec` is never larger than the (size-capped) frame could describe.
fn parse_entries(reader: &mut Reader<'_>) -> Result<Vec<Entry>, WireError> {
    let entry_count = reader.u32()? as usize;
    if entry_count > reader.remaining() / ENTRY_HEADER_BYTES {
        return Err(WireError::Malformed("entry count exceeds the body"));
    }
    let mut entries = Vec::with_capacity(entry_count);
    for _ in 0..entry_count {
        let term = reader.u64()?;
        let index = reader.u64()?;
        let kind =
            EntryKind::from_u8(reader.u8()?).ok_or(WireError::Malformed("unknown entry kind"))?;
        let data_bytes = reader.u32()? as usize;
        // `bytes` checks the length against the body before anything is copied.
        let data: Payload = Payload::from(reader.bytes(data_bytes)?);
        entries.push(Entry {
            term,
            index,
            kind,
            data,
        });
    }
    Ok(entries)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::wire::FRAME_BYTES_MAX;

    /// One message of every `MessageBody` variant, with both values of every bool and `Option`.
    pub(in crate::wire) fn sample_messages() -> Vec<Message> {
        let message = |from, to, term, body| Message {
            from,
            to,
            term,
            body,
        };
        vec![
            message(
                1,
                2,
                5,
                MessageBody::RequestVote {
                    pre_vote: true,
                    last_log_index: 40,
                    last_log_term: 4,
                },
            ),
            message(
                2,
                1,
                u64::MAX,
                MessageBody::RequestVote {
                    pre_vote: false,
                    last_log_index: u64::MAX,
                    last_log_term: 0,
                },
            ),
            message(
                2,
                1,
                6,
                MessageBody::RequestVoteResponse {
                    pre_vote: true,
                    granted: false,
                },
            ),
            message(
                0,
                1,
                6,
                MessageBody::RequestVoteResponse {
                    pre_vote: false,
                    granted: true,
                },
            ),
            message(
                0,
                2,
                7,
                MessageBody::AppendEntries {
                    prev_log_index: 10,
                    prev_log_term: 6,
                    entries: vec![
                        Entry::new(7, 11, EntryKind::Noop, b""),
                        Entry::new(7, 12, EntryKind::Normal, b"msg Hello, Raft!"),
                        Entry::new(7, 13, EntryKind::Normal, &[0u8; 300]),
                        Entry::new(7, 14, EntryKind::Normal, &[0xFF, 0x00, 0x52]),
                    ],
                    leader_commit: 9,
                },
            ),
            message(
                0,
                2,
                7,
                MessageBody::AppendEntries {
                    prev_log_index: 0,
                    prev_log_term: 0,
                    entries: vec![],
                    leader_commit: 0,
                },
            ),
            message(
                2,
                0,
                7,
                MessageBody::AppendEntriesResponse {
                    success: true,
                    match_index: 14,
                    reject_hint: RejectHint::default(),
                },
            ),
            message(
                2,
                0,
                7,
                MessageBody::AppendEntriesResponse {
                    success: false,
                    match_index: 0,
                    reject_hint: RejectHint {
                        conflict_term: 3,
                        conflict_index: 8,
                    },
                },
            ),
            message(
                0,
                1,
                7,
                MessageBody::Heartbeat {
                    leader_commit: 14,
                    read_round: 99,
                },
            ),
            message(1, 0, 7, MessageBody::HeartbeatResponse { read_round: 99 }),
            message(1, 0, 7, MessageBody::ReadIndex { ctx: 123 }),
            message(
                0,
                1,
                7,
                MessageBody::ReadIndexResponse {
                    ctx: 123,
                    index: Some(14),
                },
            ),
            message(
                0,
                1,
                7,
                MessageBody::ReadIndexResponse {
                    ctx: 124,
                    index: None,
                },
            ),
            message(0, 1, 8, MessageBody::TimeoutNow),
            message(
                0,
                2,
                9,
                MessageBody::InstallSnapshot {
                    snapshot: SnapshotMeta {
                        index: 1234,
                        term: 8,
                    },
                    membership: Membership::from_parts([0, 2, 3], [4], [1]),
                },
            ),
        ]
    }

    /// Every sample Raft message, plus Propose and ProposeRejected frames, each encoded alone.
    pub(in crate::wire) fn sample_frames() -> Vec<Vec<u8>> {
        let mut frames: Vec<Vec<u8>> = sample_messages()
            .iter()
            .map(|msg| {
                let mut out = Vec::new();
                encode_raft_message(msg, &mut out);
                out
            })
            .collect();
        let mut out = Vec::new();
        encode_propose(42, b"msg forwarded", &mut out);
        frames.push(std::mem::take(&mut out));
        encode_propose(43, b"", &mut out);
        frames.push(std::mem::take(&mut out));
        encode_propose_rejected(42, Some(2), &mut out);
        frames.push(std::mem::take(&mut out));
        encode_propose_rejected(43, None, &mut out);
        frames.push(std::mem::take(&mut out));
        let snapshot = SnapshotMeta {
            index: 9_000,
            term: 4,
        };
        encode_history_request(snapshot, 1, 4_096, &mut out);
        frames.push(std::mem::take(&mut out));
        let mut messages = Vec::new();
        for position in 7..9 {
            crate::wire::encode_history_message(
                &crate::chat::ChatMessage {
                    position,
                    index: position + 3,
                    room: "#a".into(),
                    nick: "bo".into(),
                    text: "hé".into(),
                    timestamp_ms: 5,
                },
                &mut messages,
            );
        }
        encode_history_page(snapshot, 7, 2, &messages, &mut out);
        frames.push(std::mem::take(&mut out));
        encode_history_refused(snapshot, 7, "no such snapshot", &mut out);
        frames.push(out);
        frames
    }

    fn decode_whole(buf: &[u8]) -> PeerFrame<'_> {
        match decode_peer_frame(buf) {
            Ok(Some((frame, consumed))) => {
                assert_eq!(consumed, buf.len());
                frame
            }
            other => panic!("expected one whole frame, got {other:?}"),
        }
    }

    /// Builds a frame with a valid checksum around an arbitrary body.
    fn raw_frame(frame_type: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let start = frame::begin(&mut out, frame_type, body.len());
        out.extend_from_slice(body);
        frame::finish(&mut out, start);
        out
    }

    #[test]
    fn every_raft_message_round_trips() {
        for msg in sample_messages() {
            let mut out = vec![0xEE]; // encoding appends after what is already buffered
            encode_raft_message(&msg, &mut out);
            assert_eq!(out[0], 0xEE);
            assert_eq!(out.len() - 1, raft_message_frame_bytes(&msg));
            assert_eq!(decode_whole(&out[1..]), PeerFrame::Raft(msg));
        }
    }

    #[test]
    fn propose_round_trips_and_borrows_the_read_buffer() {
        let mut out = Vec::new();
        encode_propose(7, b"msg hi", &mut out);
        let PeerFrame::Propose { origin_req, data } = decode_whole(&out) else {
            panic!("not a Propose");
        };
        assert_eq!(origin_req, 7);
        assert_eq!(data, b"msg hi");
        let body_data_at = FRAME_HEADER_BYTES + 8;
        assert!(
            std::ptr::eq(data.as_ptr(), out[body_data_at..].as_ptr()),
            "copied"
        );

        out.clear();
        encode_propose(u64::MAX, b"", &mut out);
        assert_eq!(
            decode_whole(&out),
            PeerFrame::Propose {
                origin_req: u64::MAX,
                data: b""
            }
        );
    }

    #[test]
    fn propose_rejected_round_trips_with_and_without_a_hint() {
        for leader_hint in [None, Some(0), Some(2), Some(u64::MAX)] {
            let mut out = Vec::new();
            encode_propose_rejected(9, leader_hint, &mut out);
            assert_eq!(
                decode_whole(&out),
                PeerFrame::ProposeRejected {
                    origin_req: 9,
                    leader_hint
                }
            );
        }
    }

    #[test]
    fn snapshot_chunk_and_ack_round_trip() {
        let snapshot = SnapshotMeta {
            index: 200_000,
            term: 7,
        };
        for data in [&b""[..], b"RCHATSNP", &[0xff; 4096]] {
            let mut out = Vec::new();
            encode_snapshot_chunk(9, snapshot, 1 << 30, 12_345, data, &mut out);
            assert_eq!(
                out.len(),
                FRAME_HEADER_BYTES + SNAPSHOT_CHUNK_HEADER_BYTES + data.len()
            );
            assert_eq!(
                decode_whole(&out),
                PeerFrame::SnapshotChunk {
                    term: 9,
                    snapshot,
                    total_len: 1 << 30,
                    offset: 12_345,
                    data
                }
            );
        }
        let mut out = Vec::new();
        encode_snapshot_ack(snapshot, 777, &mut out);
        assert_eq!(
            decode_whole(&out),
            PeerFrame::SnapshotAck {
                snapshot,
                received: 777
            }
        );
        // An ack with a byte missing or one too many is malformed, not misread.
        let mut long = Vec::new();
        let start = frame::begin(&mut long, PeerFrameType::SnapshotAck as u8, 25);
        long.extend_from_slice(&[0; 25]);
        frame::finish(&mut long, start);
        assert!(decode_peer_frame(&long).is_err());
    }

    #[test]
    fn history_frames_round_trip() {
        let snapshot = SnapshotMeta {
            index: 70_000,
            term: 3,
        };
        let mut out = Vec::new();
        encode_history_request(snapshot, 12, u64::MAX, &mut out);
        assert_eq!(
            decode_whole(&out),
            PeerFrame::HistoryRequest {
                snapshot,
                from_position: 12,
                through: u64::MAX
            }
        );
        for messages in [&b""[..], &[0xAB; 5000]] {
            out.clear();
            encode_history_page(snapshot, 12, 77, messages, &mut out);
            assert_eq!(
                out.len(),
                FRAME_HEADER_BYTES + HISTORY_PAGE_HEADER_BYTES + messages.len()
            );
            assert_eq!(
                decode_whole(&out),
                PeerFrame::HistoryPage {
                    snapshot,
                    first_position: 12,
                    count: 77,
                    messages
                }
            );
        }
        out.clear();
        encode_history_refused(snapshot, 12, "store unreadable: é", &mut out);
        assert_eq!(
            decode_whole(&out),
            PeerFrame::HistoryRefused {
                snapshot,
                from_position: 12,
                reason: "store unreadable: é"
            }
        );
        // A reason too long is cut at a char boundary, never split inside a char.
        out.clear();
        let long = "é".repeat(REFUSAL_REASON_BYTES_MAX);
        encode_history_refused(snapshot, 1, &long, &mut out);
        let PeerFrame::HistoryRefused { reason, .. } = decode_whole(&out) else {
            panic!("not a refusal")
        };
        assert_eq!(reason.len(), REFUSAL_REASON_BYTES_MAX);
        // A refusal whose reason is not UTF-8 or longer than allowed is malformed.
        let mut body = vec![0; 24];
        body.extend_from_slice(&[0, 2, 0xC3, 0x28]);
        assert!(decode_peer_frame(&raw_frame(0x16, &body)).is_err());
        let mut body = vec![0; 24];
        body.extend_from_slice(&[0xFF, 0xFF]);
        body.extend_from_slice(&[b'a'; 0xFFFF]);
        assert!(decode_peer_frame(&raw_frame(0x16, &body)).is_err());
    }

    #[test]
    fn every_prefix_of_a_valid_frame_is_incomplete() {
        for frame in sample_frames() {
            for cut in 0..frame.len() {
                assert_eq!(decode_peer_frame(&frame[..cut]), Ok(None), "cut at {cut}");
            }
        }
    }

    #[test]
    fn frames_back_to_back_decode_in_order() {
        let frames = sample_frames();
        let stream: Vec<u8> = frames.concat();
        let mut rest = &stream[..];
        for expected in &frames {
            let (frame, consumed) = decode_peer_frame(rest).unwrap().unwrap();
            assert_eq!(consumed, expected.len());
            assert_eq!(frame, decode_whole(expected));
            rest = &rest[consumed..];
        }
        assert!(rest.is_empty());

        // A stream cut inside its last frame yields the whole frames, then "incomplete".
        let cut_stream = &stream[..stream.len() - 3];
        let mut rest = cut_stream;
        let mut decoded = 0;
        while let Some((_, consumed)) = decode_peer_frame(rest).unwrap() {
            rest = &rest[consumed..];
            decoded += 1;
        }
        assert_eq!(decoded, frames.len() - 1);
        assert_eq!(rest.len(), frames.last().unwrap().len() - 3);
    }

    #[test]
    fn documented_example_bytes() {
        let mut out = Vec::new();
        let msg = Message {
            from: 1,
            to: 0,
            term: 3,
            body: MessageBody::HeartbeatResponse { read_round: 7 },
        };
        encode_raft_message(&msg, &mut out);
        let mut expected = vec![0, 0, 0, 32, 0x06, 0xb2, 0x33, 0x46, 0x18];
        for field in [1u64, 0, 3, 7] {
            expected.extend_from_slice(&field.to_be_bytes());
        }
        assert_eq!(out, expected, "update the worked example in wire/mod.rs");
    }

    #[test]
    fn oversized_length_is_too_large_before_the_body_arrives() {
        let mut frame = raw_frame(0x03, &[]);
        frame[..4].copy_from_slice(&((FRAME_BYTES_MAX + 1) as u32).to_be_bytes());
        assert_eq!(
            decode_peer_frame(&frame),
            Err(WireError::FrameTooLarge(FRAME_BYTES_MAX + 1))
        );
    }

    #[test]
    fn unknown_types_are_refused_from_the_header_alone() {
        for frame_type in [0x00, 0x0B, 0x0F, 0x17, 0xFF] {
            let frame = raw_frame(frame_type, &[0; 24]);
            let header_only = &frame[..FRAME_HEADER_BYTES];
            assert_eq!(
                decode_peer_frame(header_only),
                Err(WireError::UnknownType(frame_type))
            );
        }
    }

    /// `from`, `to`, `term`, `prev_log_index`, `prev_log_term`, `leader_commit`, then `count`.
    fn append_entries_body(entry_count: u32) -> Vec<u8> {
        let mut body = Vec::new();
        for field in [1u64, 2, 3, 4, 5, 6] {
            put_u64(&mut body, field);
        }
        put_u32(&mut body, entry_count);
        body
    }

    #[test]
    fn an_entry_count_the_body_cannot_hold_is_malformed_not_allocated() {
        let mut body = append_entries_body(1_000_000);
        body.extend_from_slice(&[0; 20]);
        let frame = raw_frame(0x03, &body);
        assert!(matches!(
            decode_peer_frame(&frame),
            Err(WireError::Malformed(_))
        ));
        let frame = raw_frame(0x03, &append_entries_body(u32::MAX));
        assert!(matches!(
            decode_peer_frame(&frame),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn an_entry_longer_than_the_body_is_malformed() {
        let mut body = append_entries_body(1);
        put_u64(&mut body, 7); // term
        put_u64(&mut body, 1); // index
        put_u8(&mut body, 1); // kind
        put_u32(&mut body, u32::MAX); // data_len
        body.extend_from_slice(b"short");
        let frame = raw_frame(0x03, &body);
        assert!(matches!(
            decode_peer_frame(&frame),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn out_of_range_field_values_are_malformed() {
        let entry_kind_9 = {
            let mut body = append_entries_body(1);
            put_u64(&mut body, 7);
            put_u64(&mut body, 1);
            put_u8(&mut body, 9); // no such EntryKind
            put_u32(&mut body, 0);
            raw_frame(0x03, &body)
        };
        let granted_2 = {
            let mut body = vec![0; 24];
            body.extend_from_slice(&[1, 2]); // pre_vote = 1, granted = 2
            raw_frame(0x02, &body)
        };
        let hint_tag_2 = raw_frame(0x11, &[0, 0, 0, 0, 0, 0, 0, 1, 2]);
        for frame in [entry_kind_9, granted_2, hint_tag_2] {
            assert!(matches!(
                decode_peer_frame(&frame),
                Err(WireError::Malformed(_))
            ));
        }
    }

    #[test]
    fn short_and_long_bodies_are_malformed() {
        for msg in sample_messages() {
            let mut out = Vec::new();
            encode_raft_message(&msg, &mut out);
            let frame_type = out[4];
            let body = &out[FRAME_HEADER_BYTES..];
            let mut long = body.to_vec();
            long.push(0);
            assert!(matches!(
                decode_peer_frame(&raw_frame(frame_type, &long)),
                Err(WireError::Malformed(_))
            ));
            let short = &body[..body.len() - 1];
            assert!(matches!(
                decode_peer_frame(&raw_frame(frame_type, short)),
                Err(WireError::Malformed(_))
            ));
        }
    }
}
