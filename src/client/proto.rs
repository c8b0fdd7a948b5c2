//! The binary client protocol, version 1: every request and answer frame, both directions, as
//! plain owned values. This module is the protocol's documentation; the layouts below and the
//! doc comments on [`Request`] and [`Answer`] are the reference.
//!
//! A client opens with a preamble, [`CLIENT_MAGIC`] then the version as a big-endian u16, and
//! then sends request frames; the server answers each with one answer frame naming the
//! request's `req_id`, in any order. Integers are big-endian; `str` is `u16 len | UTF-8 bytes`;
//! `opt<T>` is a `u8` 0 (absent) or 1 followed by the `T`; `session` is
//! `u64 session_id | u64 seq | u64 lowest_unacked_seq`.
//!
//! | type | frame | body |
//! | --- | --- | --- |
//! | 1 | `OpenSession` | `u64 req_id` |
//! | 2 | `Post` | `u64 req_id \| session \| str room \| str nick \| str text` |
//! | 3 | `ReadLog` | `u64 req_id \| u64 from_position \| u32 max_messages` |
//! | 4 | `Status` | `u64 req_id` |
//! | 5 | `Set` | `u64 req_id \| session \| str key \| str value` |
//! | 6 | `Get` | `u64 req_id \| str key` |
//! | 7 | `Cas` | `u64 req_id \| session \| str key \| opt<str> expected \| str new` |
//! | 8 | `Del` | `u64 req_id \| session \| str key` |
//! | 9 | `Keys` | `u64 req_id \| str prefix` |
//! | 101 | `SessionOpened` | `u64 req_id \| u64 session_id` |
//! | 102 | `Posted` | `u64 req_id \| u64 position` |
//! | 103 | `LogChunk` | `u64 req_id \| u64 total \| u32 count \| count × (u64 position \| u64 timestamp_ms \| str room \| str nick \| str text)` |
//! | 104 | `StatusReply` | `u64 req_id \| u64 node_id \| u8 role \| u64 term \| opt<u64> leader \| u64 commit \| u64 applied` |
//! | 105 | `KvAck` | `u64 req_id \| u64 revision` |
//! | 106 | `KvValue` | `u64 req_id \| opt<str> value \| u64 revision` |
//! | 107 | `CasFailed` | `u64 req_id \| opt<str> current` |
//! | 108 | `KeyList` | `u64 req_id \| u64 total \| u32 count \| count × str key` |
//! | 110 | `Error` | `u64 req_id \| u8 kind \| opt<u64> leader_hint \| str message` |
//!
//! This file owns the bytes: the connection preamble, the frame header
//! `u32 body_len | u8 frame_type | u32 crc32c(body) | body`, and each frame's body. It never
//! touches a socket and never decides what a request means (sessions, dedup and errors are the
//! server's; retries are [`super::Session`]'s).
//!
//! Decoding is for untrusted input: it never panics, and it never allocates more than the bytes
//! it has already seen justify (every length is checked against the remaining body before a
//! buffer is made, and a frame whose header claims more than [`BODY_LEN_MAX`] is refused as soon
//! as the four length bytes are in, so a server can close the connection at once).
//!
//! ```
//! use raftchat::client::proto::{decode_answer, decode_request, Answer, Request};
//! let mut buf = Vec::new();
//! Request::Status { req_id: 7 }.encode(&mut buf);
//! let (req, used) = decode_request(&buf).unwrap().unwrap();
//! assert_eq!((req, used), (Request::Status { req_id: 7 }, buf.len()));
//! assert_eq!(decode_answer(&buf[..3]).unwrap(), None); // incomplete: wait for more bytes
//! ```

use std::fmt;

use byteorder::{BigEndian, ByteOrder};

/// The first four bytes a binary client sends: a NUL (no telnet user types one), then `RCB`.
/// The same value as `wire::CLIENT_MAGIC`, which the server uses to tell connection kinds apart.
pub const CLIENT_MAGIC: [u8; 4] = *b"\0RCB";
/// The protocol version this code speaks, sent as a big-endian u16 after [`CLIENT_MAGIC`].
pub const PROTOCOL_VERSION: u16 = 1;
/// Magic plus version.
pub const PREAMBLE_LEN: usize = 6;
/// `u32 body_len | u8 frame_type | u32 crc32c(body)`.
pub const HEADER_LEN: usize = 9;
/// The largest body either side accepts; a longer frame closes the connection.
pub const BODY_LEN_MAX: usize = 1 << 20;
/// The longest string a `u16 len | bytes` field can carry.
pub const STR_LEN_MAX: usize = u16::MAX as usize;

/// Frame type bytes. Requests are 1..=9; answers are 101..=108 and 110 (109 is unused).
pub mod frame_type {
    pub const OPEN_SESSION: u8 = 1;
    pub const POST: u8 = 2;
    pub const READ_LOG: u8 = 3;
    pub const STATUS: u8 = 4;
    pub const SET: u8 = 5;
    pub const GET: u8 = 6;
    pub const CAS: u8 = 7;
    pub const DEL: u8 = 8;
    pub const KEYS: u8 = 9;
    pub const SESSION_OPENED: u8 = 101;
    pub const POSTED: u8 = 102;
    pub const LOG_CHUNK: u8 = 103;
    pub const STATUS_REPLY: u8 = 104;
    pub const KV_ACK: u8 = 105;
    pub const KV_VALUE: u8 = 106;
    pub const CAS_FAILED: u8 = 107;
    pub const KEY_LIST: u8 = 108;
    pub const ERROR: u8 = 110;
}

/// Why bytes are not a valid preamble or frame. Every variant is a property of the bytes alone;
/// the right reaction to any of them is to close the connection (after an `Error` frame with
/// req_id 0 for [`ProtoError::BadVersion`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtoError {
    /// The preamble does not start with [`CLIENT_MAGIC`].
    BadMagic,
    /// The preamble names a version this code does not speak.
    BadVersion(u16),
    /// The header claims a body longer than [`BODY_LEN_MAX`].
    BodyTooLong(u32),
    /// The body's CRC32C is not the one in the header.
    BadChecksum { expected: u32, actual: u32 },
    /// A frame type this direction does not know (an answer type sent as a request, too).
    UnknownFrameType(u8),
    /// The body ends before the field being read.
    Truncated { field: &'static str },
    /// Bytes remain in the body after the last field.
    TrailingBytes(usize),
    /// A string field is not UTF-8.
    NotUtf8 { field: &'static str },
    /// An `Option` marker byte is neither 0 nor 1.
    BadOptionTag(u8),
    /// A `StatusReply` role byte is not 0..=3.
    BadRole(u8),
    /// An `Error` kind byte is not 1..=6.
    BadErrorKind(u8),
    /// A value too long for its field, found before encoding (see [`Request::check_encodable`]).
    TooLong { field: &'static str, len: usize },
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::BadMagic => write!(f, "not a raftchat binary client preamble"),
            ProtoError::BadVersion(v) => {
                write!(
                    f,
                    "protocol version {v} is not supported (this side speaks {PROTOCOL_VERSION})"
                )
            }
            ProtoError::BodyTooLong(len) => {
                write!(
                    f,
                    "frame body of {len} bytes exceeds the {BODY_LEN_MAX}-byte limit"
                )
            }
            ProtoError::BadChecksum { expected, actual } => {
                write!(f, "frame checksum mismatch: header says {expected:#010x}, body has {actual:#010x}")
            }
            ProtoError::UnknownFrameType(t) => write!(f, "unknown frame type {t}"),
            ProtoError::Truncated { field } => write!(f, "frame body ends inside field {field}"),
            ProtoError::TrailingBytes(n) => {
                write!(f, "{n} trailing bytes after the frame's last field")
            }
            ProtoError::NotUtf8 { field } => write!(f, "field {field} is not UTF-8"),
            ProtoError::BadOptionTag(tag) => write!(f, "bad option marker {tag}"),
            ProtoError::BadRole(role) => write!(f, "bad role {role}"),
            ProtoError::BadErrorKind(kind) => write!(f, "bad error kind {kind}"),
            ProtoError::TooLong { field, len } => {
                write!(f, "field {field} is too long to encode ({len} bytes)")
            }
        }
    }
}

impl std::error::Error for ProtoError {}

impl From<ProtoError> for std::io::Error {
    fn from(e: ProtoError) -> std::io::Error {
        let kind = match e {
            ProtoError::TooLong { .. } => std::io::ErrorKind::InvalidInput,
            _ => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, e)
    }
}

/// The exactly-once coordinates every mutating request carries (Ongaro §6.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionSeq {
    pub session_id: u64,
    /// 1, 2, 3, ... per session; a retry repeats the seq of the original.
    pub seq: u64,
    /// Every seq below this one has been answered to the client, so its result may be forgotten.
    pub lowest_unacked_seq: u64,
}

/// A request, client to server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    OpenSession {
        req_id: u64,
    },
    Post {
        req_id: u64,
        session: SessionSeq,
        room: String,
        nick: String,
        text: String,
    },
    /// A linearizable read of up to `max_messages` chat messages from `from_position` (1-based).
    ReadLog {
        req_id: u64,
        from_position: u64,
        max_messages: u32,
    },
    Status {
        req_id: u64,
    },
    Set {
        req_id: u64,
        session: SessionSeq,
        key: String,
        value: String,
    },
    /// A linearizable read of one key.
    Get {
        req_id: u64,
        key: String,
    },
    /// Sets `key` to `new` if its value is `expected` (`None`: the key is absent).
    Cas {
        req_id: u64,
        session: SessionSeq,
        key: String,
        expected: Option<String>,
        new: String,
    },
    Del {
        req_id: u64,
        session: SessionSeq,
        key: String,
    },
    /// A linearizable listing of every key that starts with `prefix` (empty: every key), as
    /// the telnet `keys [<prefix>]` lists them. The server answers `KeyList`, or `Error` with
    /// [`ErrorKind::Rejected`] for a prefix the telnet command would refuse too (over 256 bytes,
    /// or holding whitespace or control characters).
    Keys {
        req_id: u64,
        prefix: String,
    },
}

/// One chat message as a `LogChunk` carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogMessage {
    /// 1-based position in the whole chat log.
    pub position: u64,
    /// The leader's clock when the message was proposed.
    pub timestamp_ms: u64,
    pub room: String,
    pub nick: String,
    pub text: String,
}

/// A borrowed chat message, so the server can encode a `LogChunk` straight from its state
/// machine without copying each message into a [`LogMessage`] first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogMessageRef<'a> {
    pub position: u64,
    pub timestamp_ms: u64,
    pub room: &'a str,
    pub nick: &'a str,
    pub text: &'a str,
}

impl LogMessage {
    pub fn as_ref(&self) -> LogMessageRef<'_> {
        LogMessageRef {
            position: self.position,
            timestamp_ms: self.timestamp_ms,
            room: &self.room,
            nick: &self.nick,
            text: &self.text,
        }
    }
}

impl LogMessageRef<'_> {
    /// Bytes this message adds to a `LogChunk` body: lets the server fill a chunk up to
    /// [`BODY_LEN_MAX`] (minus [`LOG_CHUNK_FIXED_LEN`]) and no further.
    pub fn encoded_len(&self) -> usize {
        8 + 8 + 2 + self.room.len() + 2 + self.nick.len() + 2 + self.text.len()
    }
}

/// The `LogChunk` body bytes before its first message: req_id, total, count.
pub const LOG_CHUNK_FIXED_LEN: usize = 8 + 8 + 4;
/// The smallest encoded message in a `LogChunk` (three empty strings); bounds how many
/// messages a claimed count can possibly fit in the remaining body.
const LOG_MESSAGE_LEN_MIN: usize = 8 + 8 + 2 + 2 + 2;

/// The `KeyList` body bytes before its first key: req_id, total, count.
pub const KEY_LIST_FIXED_LEN: usize = 8 + 8 + 4;
/// The smallest encoded key in a `KeyList` (an empty string: its length alone).
const KEY_LEN_MIN: usize = 2;

/// A node's role, as `StatusReply` carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower = 0,
    PreCandidate = 1,
    Candidate = 2,
    Leader = 3,
}

impl Role {
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Role> {
        match code {
            0 => Some(Role::Follower),
            1 => Some(Role::PreCandidate),
            2 => Some(Role::Candidate),
            3 => Some(Role::Leader),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

impl From<crate::raft::Role> for Role {
    fn from(role: crate::raft::Role) -> Role {
        match role {
            crate::raft::Role::Follower => Role::Follower,
            crate::raft::Role::PreCandidate => Role::PreCandidate,
            crate::raft::Role::Candidate => Role::Candidate,
            crate::raft::Role::Leader => Role::Leader,
        }
    }
}

/// What one node says about itself in a `StatusReply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub node_id: u64,
    pub role: Role,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit: u64,
    pub applied: u64,
}

/// The `kind` of an `Error` answer: what the client may do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Definitely not applied: retrying with the same session and seq is safe.
    NotLeaderNotStored = 1,
    /// May or may not have been applied: retry with the SAME session and seq.
    TimeoutUnknown = 2,
    /// The session expired or is unknown: open a new one.
    SessionExpired = 3,
    /// The request is invalid (unknown room, too long, ...); retrying will not help.
    Rejected = 4,
    NotFound = 5,
    /// The node sheds load: retry later.
    Overloaded = 6,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::NotLeaderNotStored,
        ErrorKind::TimeoutUnknown,
        ErrorKind::SessionExpired,
        ErrorKind::Rejected,
        ErrorKind::NotFound,
        ErrorKind::Overloaded,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// A stable snake_case name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotLeaderNotStored => "not_leader",
            ErrorKind::TimeoutUnknown => "timeout_unknown",
            ErrorKind::SessionExpired => "session_expired",
            ErrorKind::Rejected => "rejected",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Overloaded => "overloaded",
        }
    }
}

/// An answer, server to client. Every answer names the `req_id` of its request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    SessionOpened {
        req_id: u64,
        session_id: u64,
    },
    /// `position` is the message's 1-based position in the whole chat log.
    Posted {
        req_id: u64,
        position: u64,
    },
    /// `total` is the newest position at the read (the log's length unless `--retain-messages`
    /// dropped messages, which leave holes); `messages` are the retained ones from the requested
    /// position on, in position order.
    LogChunk {
        req_id: u64,
        total: u64,
        messages: Vec<LogMessage>,
    },
    StatusReply {
        req_id: u64,
        status: NodeStatus,
    },
    KvAck {
        req_id: u64,
        revision: u64,
    },
    KvValue {
        req_id: u64,
        value: Option<String>,
        revision: u64,
    },
    CasFailed {
        req_id: u64,
        current: Option<String>,
    },
    /// The answer to `Keys`: `keys` in ascending byte order, and `total`, how many keys had the
    /// prefix at the read. One frame never exceeds [`BODY_LEN_MAX`], so `keys` holds the first
    /// keys that fit ([`encode_key_list`]) and may be shorter than `total`: then the listing is
    /// truncated, and a client wanting the rest asks again with longer prefixes. With keys of up
    /// to 256 bytes, at least 4,000 keys always fit.
    KeyList {
        req_id: u64,
        total: u64,
        keys: Vec<String>,
    },
    Error {
        req_id: u64,
        kind: ErrorKind,
        leader_hint: Option<u64>,
        message: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Preamble

/// Appends the 6-byte preamble a binary client sends first: [`CLIENT_MAGIC`], then version 1.
pub fn encode_preamble(out: &mut Vec<u8>) {
    out.extend_from_slice(&CLIENT_MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
}

/// Reads the preamble at the start of `buf`. `Ok(None)`: too few bytes yet. `Ok(Some(used))`:
/// a version-1 preamble of `used` bytes. `BadMagic` as soon as a seen byte differs;
/// `BadVersion(v)` for any other version (the server answers an `Error` with req_id 0 and closes).
pub fn decode_preamble(buf: &[u8]) -> Result<Option<usize>, ProtoError> {
    let magic_seen = buf.len().min(CLIENT_MAGIC.len());
    if buf[..magic_seen] != CLIENT_MAGIC[..magic_seen] {
        return Err(ProtoError::BadMagic);
    }
    if buf.len() < PREAMBLE_LEN {
        return Ok(None);
    }
    match BigEndian::read_u16(&buf[4..PREAMBLE_LEN]) {
        PROTOCOL_VERSION => Ok(Some(PREAMBLE_LEN)),
        other => Err(ProtoError::BadVersion(other)),
    }
}

// ---------------------------------------------------------------------------------------------
// Frame header

/// Reserves a frame header in `out`; [`finish_frame`] fills it in once the body is written.
/// Returns where the frame starts.
fn begin_frame(out: &mut Vec<u8>, frame_type: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, frame_type, 0, 0, 0, 0]);
    start
}

fn finish_frame(out: &mut [u8], start: usize) {
    let body_start = start + HEADER_LEN;
    debug_assert!(out.len() >= body_start);
    // Only a body of 4 GiB or more would not fit; the peer refuses anything over 1 MiB anyway.
    let body_len = u32::try_from(out.len() - body_start).unwrap_or(u32::MAX);
    let crc = crc32c::crc32c(&out[body_start..]);
    BigEndian::write_u32(&mut out[start..start + 4], body_len);
    BigEndian::write_u32(&mut out[start + 5..body_start], crc);
}

/// One complete frame at the start of a buffer, its length and checksum verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame<'a> {
    pub frame_type: u8,
    pub body: &'a [u8],
    /// Bytes the frame occupies, header included.
    pub len: usize,
}

/// Splits the first complete frame off `buf`, verifying its length and checksum.
/// `Ok(None)`: the frame is not all here yet.
pub fn split_frame(buf: &[u8]) -> Result<Option<RawFrame<'_>>, ProtoError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let body_len = BigEndian::read_u32(&buf[..4]);
    if body_len as usize > BODY_LEN_MAX {
        return Err(ProtoError::BodyTooLong(body_len));
    }
    let used = HEADER_LEN + body_len as usize;
    if buf.len() < used {
        return Ok(None);
    }
    let frame_type = buf[4];
    let expected = BigEndian::read_u32(&buf[5..HEADER_LEN]);
    let body = &buf[HEADER_LEN..used];
    let actual = crc32c::crc32c(body);
    if actual != expected {
        return Err(ProtoError::BadChecksum { expected, actual });
    }
    Ok(Some(RawFrame {
        frame_type,
        body,
        len: used,
    }))
}

/// The length of the first frame in `buf` once its header is in (header included), so a reader
/// can size its buffer for a large `LogChunk` before all of it arrives.
pub fn frame_len_hint(buf: &[u8]) -> Option<usize> {
    (buf.len() >= 4).then(|| HEADER_LEN + BigEndian::read_u32(&buf[..4]) as usize)
}

// ---------------------------------------------------------------------------------------------
// Field writers

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Writes `u16 len | bytes`. A string longer than [`STR_LEN_MAX`] cannot be represented; it is
/// cut at the last char boundary that fits rather than panicking (callers that take strings
/// from users check first: [`Request::check_encodable`]).
fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut len = s.len().min(STR_LEN_MAX);
    while !s.is_char_boundary(len) {
        len -= 1;
    }
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

fn put_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put_u64(out, v);
        }
    }
}

fn put_opt_str(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn put_session(out: &mut Vec<u8>, s: &SessionSeq) {
    put_u64(out, s.session_id);
    put_u64(out, s.seq);
    put_u64(out, s.lowest_unacked_seq);
}

// ---------------------------------------------------------------------------------------------
// Field reader

/// A cursor over one frame body. Every read checks the remaining length first.
struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(body: &'a [u8]) -> Reader<'a> {
        Reader { body, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.body.len() - self.pos
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ProtoError> {
        if self.remaining() < n {
            return Err(ProtoError::Truncated { field });
        }
        let bytes = &self.body[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ProtoError> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, ProtoError> {
        Ok(BigEndian::read_u16(self.take(2, field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, ProtoError> {
        Ok(BigEndian::read_u32(self.take(4, field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, ProtoError> {
        Ok(BigEndian::read_u64(self.take(8, field)?))
    }

    fn str(&mut self, field: &'static str) -> Result<String, ProtoError> {
        let len = self.u16(field)? as usize;
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| ProtoError::NotUtf8 { field })
    }

    fn option_tag(&mut self, field: &'static str) -> Result<bool, ProtoError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(ProtoError::BadOptionTag(tag)),
        }
    }

    fn opt_u64(&mut self, field: &'static str) -> Result<Option<u64>, ProtoError> {
        if self.option_tag(field)? {
            self.u64(field).map(Some)
        } else {
            Ok(None)
        }
    }

    fn opt_str(&mut self, field: &'static str) -> Result<Option<String>, ProtoError> {
        if self.option_tag(field)? {
            self.str(field).map(Some)
        } else {
            Ok(None)
        }
    }

    fn session(&mut self) -> Result<SessionSeq, ProtoError> {
        Ok(SessionSeq {
            session_id: self.u64("session_id")?,
            seq: self.u64("seq")?,
            lowest_unacked_seq: self.u64("lowest_unacked_seq")?,
        })
    }

    fn finish(&self) -> Result<(), ProtoError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(ProtoError::TrailingBytes(n)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

impl Request {
    pub fn req_id(&self) -> u64 {
        match self {
            Request::OpenSession { req_id }
            | Request::Post { req_id, .. }
            | Request::ReadLog { req_id, .. }
            | Request::Status { req_id }
            | Request::Set { req_id, .. }
            | Request::Get { req_id, .. }
            | Request::Cas { req_id, .. }
            | Request::Del { req_id, .. }
            | Request::Keys { req_id, .. } => *req_id,
        }
    }

    pub fn set_req_id(&mut self, id: u64) {
        match self {
            Request::OpenSession { req_id }
            | Request::Post { req_id, .. }
            | Request::ReadLog { req_id, .. }
            | Request::Status { req_id }
            | Request::Set { req_id, .. }
            | Request::Get { req_id, .. }
            | Request::Cas { req_id, .. }
            | Request::Del { req_id, .. }
            | Request::Keys { req_id, .. } => *req_id = id,
        }
    }

    /// The exactly-once coordinates of a mutating request (`Post`, `Set`, `Cas`, `Del`).
    pub fn session(&self) -> Option<&SessionSeq> {
        match self {
            Request::Post { session, .. }
            | Request::Set { session, .. }
            | Request::Cas { session, .. }
            | Request::Del { session, .. } => Some(session),
            _ => None,
        }
    }

    pub fn session_mut(&mut self) -> Option<&mut SessionSeq> {
        match self {
            Request::Post { session, .. }
            | Request::Set { session, .. }
            | Request::Cas { session, .. }
            | Request::Del { session, .. } => Some(session),
            _ => None,
        }
    }

    pub fn frame_type(&self) -> u8 {
        match self {
            Request::OpenSession { .. } => frame_type::OPEN_SESSION,
            Request::Post { .. } => frame_type::POST,
            Request::ReadLog { .. } => frame_type::READ_LOG,
            Request::Status { .. } => frame_type::STATUS,
            Request::Set { .. } => frame_type::SET,
            Request::Get { .. } => frame_type::GET,
            Request::Cas { .. } => frame_type::CAS,
            Request::Del { .. } => frame_type::DEL,
            Request::Keys { .. } => frame_type::KEYS,
        }
    }

    /// Checks that every string fits its `u16` length and the body fits [`BODY_LEN_MAX`], so
    /// [`Request::encode`] writes exactly this request. Strings from users go through here.
    pub fn check_encodable(&self) -> Result<(), ProtoError> {
        let strings: [(&'static str, Option<&str>); 3] = match self {
            Request::Post {
                room, nick, text, ..
            } => [
                ("room", Some(room)),
                ("nick", Some(nick)),
                ("text", Some(text)),
            ],
            Request::Set { key, value, .. } => {
                [("key", Some(key)), ("value", Some(value)), ("", None)]
            }
            Request::Get { key, .. } | Request::Del { key, .. } => {
                [("key", Some(key)), ("", None), ("", None)]
            }
            Request::Keys { prefix, .. } => [("prefix", Some(prefix)), ("", None), ("", None)],
            Request::Cas {
                key, expected, new, ..
            } => [
                ("key", Some(key)),
                ("expected", expected.as_deref()),
                ("new", Some(new)),
            ],
            Request::OpenSession { .. } | Request::ReadLog { .. } | Request::Status { .. } => {
                [("", None), ("", None), ("", None)]
            }
        };
        let mut body_len = 8 + 8 * 3 + 1;
        for (field, s) in strings {
            if let Some(s) = s {
                if s.len() > STR_LEN_MAX {
                    return Err(ProtoError::TooLong {
                        field,
                        len: s.len(),
                    });
                }
                body_len += 2 + s.len();
            }
        }
        if body_len > BODY_LEN_MAX {
            return Err(ProtoError::TooLong {
                field: "body",
                len: body_len,
            });
        }
        Ok(())
    }

    /// Appends this request as one frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = begin_frame(out, self.frame_type());
        match self {
            Request::OpenSession { req_id } | Request::Status { req_id } => put_u64(out, *req_id),
            Request::Post {
                req_id,
                session,
                room,
                nick,
                text,
            } => {
                put_u64(out, *req_id);
                put_session(out, session);
                put_str(out, room);
                put_str(out, nick);
                put_str(out, text);
            }
            Request::ReadLog {
                req_id,
                from_position,
                max_messages,
            } => {
                put_u64(out, *req_id);
                put_u64(out, *from_position);
                put_u32(out, *max_messages);
            }
            Request::Set {
                req_id,
                session,
                key,
                value,
            } => {
                put_u64(out, *req_id);
                put_session(out, session);
                put_str(out, key);
                put_str(out, value);
            }
            Request::Get { req_id, key } => {
                put_u64(out, *req_id);
                put_str(out, key);
            }
            Request::Keys { req_id, prefix } => {
                put_u64(out, *req_id);
                put_str(out, prefix);
            }
            Request::Cas {
                req_id,
                session,
                key,
                expected,
                new,
            } => {
                put_u64(out, *req_id);
                put_session(out, session);
                put_str(out, key);
                put_opt_str(out, expected.as_deref());
                put_str(out, new);
            }
            Request::Del {
                req_id,
                session,
                key,
            } => {
                put_u64(out, *req_id);
                put_session(out, session);
                put_str(out, key);
            }
        }
        finish_frame(out, start);
    }

    fn decode_body(frame_type: u8, body: &[u8]) -> Result<Request, ProtoError> {
        let mut r = Reader::new(body);
        let req = match frame_type {
            frame_type::OPEN_SESSION => Request::OpenSession {
                req_id: r.u64("req_id")?,
            },
            frame_type::POST => Request::Post {
                req_id: r.u64("req_id")?,
                session: r.session()?,
                room: r.str("room")?,
                nick: r.str("nick")?,
                text: r.str("text")?,
            },
            frame_type::READ_LOG => Request::ReadLog {
                req_id: r.u64("req_id")?,
                from_position: r.u64("from_position")?,
                max_messages: r.u32("max_messages")?,
            },
            frame_type::STATUS => Request::Status {
                req_id: r.u64("req_id")?,
            },
            frame_type::SET => Request::Set {
                req_id: r.u64("req_id")?,
                session: r.session()?,
                key: r.str("key")?,
                value: r.str("value")?,
            },
            frame_type::GET => Request::Get {
                req_id: r.u64("req_id")?,
                key: r.str("key")?,
            },
            frame_type::CAS => Request::Cas {
                req_id: r.u64("req_id")?,
                session: r.session()?,
                key: r.str("key")?,
                expected: r.opt_str("expected")?,
                new: r.str("new")?,
            },
            frame_type::DEL => Request::Del {
                req_id: r.u64("req_id")?,
                session: r.session()?,
                key: r.str("key")?,
            },
            frame_type::KEYS => Request::Keys {
                req_id: r.u64("req_id")?,
                prefix: r.str("prefix")?,
            },
            other => return Err(ProtoError::UnknownFrameType(other)),
        };
        r.finish()?;
        Ok(req)
    }
}

/// Decodes the first request frame in `buf` (the server's read buffer, after the preamble).
/// `Ok(None)`: incomplete, read more. `Ok(Some((request, used)))`: consume `used` bytes.
/// `Err`: the stream is not this protocol; close the connection. Validates framing and field
/// syntax only: the meaning (a known session, seq ≥ 1, a valid room) is the server's to judge.
pub fn decode_request(buf: &[u8]) -> Result<Option<(Request, usize)>, ProtoError> {
    let Some(frame) = split_frame(buf)? else {
        return Ok(None);
    };
    Request::decode_body(frame.frame_type, frame.body).map(|req| Some((req, frame.len)))
}

// ---------------------------------------------------------------------------------------------
// Answers

impl Answer {
    pub fn req_id(&self) -> u64 {
        match self {
            Answer::SessionOpened { req_id, .. }
            | Answer::Posted { req_id, .. }
            | Answer::LogChunk { req_id, .. }
            | Answer::StatusReply { req_id, .. }
            | Answer::KvAck { req_id, .. }
            | Answer::KvValue { req_id, .. }
            | Answer::CasFailed { req_id, .. }
            | Answer::KeyList { req_id, .. }
            | Answer::Error { req_id, .. } => *req_id,
        }
    }

    pub fn frame_type(&self) -> u8 {
        match self {
            Answer::SessionOpened { .. } => frame_type::SESSION_OPENED,
            Answer::Posted { .. } => frame_type::POSTED,
            Answer::LogChunk { .. } => frame_type::LOG_CHUNK,
            Answer::StatusReply { .. } => frame_type::STATUS_REPLY,
            Answer::KvAck { .. } => frame_type::KV_ACK,
            Answer::KvValue { .. } => frame_type::KV_VALUE,
            Answer::CasFailed { .. } => frame_type::CAS_FAILED,
            Answer::KeyList { .. } => frame_type::KEY_LIST,
            Answer::Error { .. } => frame_type::ERROR,
        }
    }

    /// Appends this answer as one frame to `out`. The server keeps a `LogChunk` under
    /// [`BODY_LEN_MAX`] (see [`LogMessageRef::encoded_len`]); a `KeyList` is cut to the keys
    /// that fit by [`encode_key_list`]; strings longer than [`STR_LEN_MAX`] are cut (the state
    /// machine's limits are far below it).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Answer::LogChunk {
                req_id,
                total,
                messages,
            } => {
                encode_log_chunk(
                    out,
                    *req_id,
                    *total,
                    messages.iter().map(LogMessage::as_ref),
                );
                return;
            }
            Answer::KeyList {
                req_id,
                total,
                keys,
            } => {
                encode_key_list(out, *req_id, *total, keys.iter().map(String::as_str));
                return;
            }
            _ => {}
        }
        let start = begin_frame(out, self.frame_type());
        match self {
            Answer::SessionOpened { req_id, session_id } => {
                put_u64(out, *req_id);
                put_u64(out, *session_id);
            }
            Answer::Posted { req_id, position } => {
                put_u64(out, *req_id);
                put_u64(out, *position);
            }
            Answer::LogChunk { .. } | Answer::KeyList { .. } => unreachable!("encoded above"),
            Answer::StatusReply { req_id, status } => {
                put_u64(out, *req_id);
                put_u64(out, status.node_id);
                out.push(status.role.code());
                put_u64(out, status.term);
                put_opt_u64(out, status.leader);
                put_u64(out, status.commit);
                put_u64(out, status.applied);
            }
            Answer::KvAck { req_id, revision } => {
                put_u64(out, *req_id);
                put_u64(out, *revision);
            }
            Answer::KvValue {
                req_id,
                value,
                revision,
            } => {
                put_u64(out, *req_id);
                put_opt_str(out, value.as_deref());
                put_u64(out, *revision);
            }
            Answer::CasFailed { req_id, current } => {
                put_u64(out, *req_id);
                put_opt_str(out, current.as_deref());
            }
            Answer::Error {
                req_id,
                kind,
                leader_hint,
                message,
            } => {
                put_u64(out, *req_id);
                out.push(kind.code());
                put_opt_u64(out, *leader_hint);
                put_str(out, message);
            }
        }
        finish_frame(out, start);
    }

    fn decode_body(frame_type: u8, body: &[u8]) -> Result<Answer, ProtoError> {
        let mut r = Reader::new(body);
        let answer = match frame_type {
            frame_type::SESSION_OPENED => Answer::SessionOpened {
                req_id: r.u64("req_id")?,
                session_id: r.u64("session_id")?,
            },
            frame_type::POSTED => Answer::Posted {
                req_id: r.u64("req_id")?,
                position: r.u64("position")?,
            },
            frame_type::LOG_CHUNK => {
                let req_id = r.u64("req_id")?;
                let total = r.u64("total")?;
                let count = r.u32("count")? as usize;
                // A count the remaining bytes cannot hold is refused before any allocation.
                if count > r.remaining() / LOG_MESSAGE_LEN_MIN {
                    return Err(ProtoError::Truncated { field: "messages" });
                }
                let mut messages = Vec::with_capacity(count);
                for _ in 0..count {
                    messages.push(LogMessage {
                        position: r.u64("position")?,
                        timestamp_ms: r.u64("timestamp_ms")?,
                        room: r.str("room")?,
                        nick: r.str("nick")?,
                        text: r.str("text")?,
                    });
                }
                Answer::LogChunk {
                    req_id,
                    total,
                    messages,
                }
            }
            frame_type::STATUS_REPLY => {
                let req_id = r.u64("req_id")?;
                let node_id = r.u64("node_id")?;
                let role_code = r.u8("role")?;
                let role = Role::from_code(role_code).ok_or(ProtoError::BadRole(role_code))?;
                Answer::StatusReply {
                    req_id,
                    status: NodeStatus {
                        node_id,
                        role,
                        term: r.u64("term")?,
                        leader: r.opt_u64("leader")?,
                        commit: r.u64("commit")?,
                        applied: r.u64("applied")?,
                    },
                }
            }
            frame_type::KV_ACK => Answer::KvAck {
                req_id: r.u64("req_id")?,
                revision: r.u64("revision")?,
            },
            frame_type::KV_VALUE => Answer::KvValue {
                req_id: r.u64("req_id")?,
                value: r.opt_str("value")?,
                revision: r.u64("revision")?,
            },
            frame_type::CAS_FAILED => Answer::CasFailed {
                req_id: r.u64("req_id")?,
                current: r.opt_str("current")?,
            },
            frame_type::KEY_LIST => {
                let req_id = r.u64("req_id")?;
                let total = r.u64("total")?;
                let count = r.u32("count")? as usize;
                // Each key takes at least its 2 length bytes: a count the remaining bytes
                // cannot hold is refused before any allocation.
                if count > r.remaining() / KEY_LEN_MIN {
                    return Err(ProtoError::Truncated { field: "keys" });
                }
                let mut keys = Vec::with_capacity(count);
                for _ in 0..count {
                    keys.push(r.str("key")?);
                }
                Answer::KeyList {
                    req_id,
                    total,
                    keys,
                }
            }
            frame_type::ERROR => {
                let req_id = r.u64("req_id")?;
                let kind_code = r.u8("kind")?;
                let kind =
                    ErrorKind::from_code(kind_code).ok_or(ProtoError::BadErrorKind(kind_code))?;
                Answer::Error {
                    req_id,
                    kind,
                    leader_hint: r.opt_u64("leader_hint")?,
                    message: r.str("message")?,
                }
            }
            other => return Err(ProtoError::UnknownFrameType(other)),
        };
        r.finish()?;
        Ok(answer)
    }
}

/// Appends a `LogChunk` answer built from borrowed messages (the server's chat log), without
/// copying them into [`LogMessage`]s first. The caller keeps the body under [`BODY_LEN_MAX`]:
/// [`LOG_CHUNK_FIXED_LEN`] plus the sum of [`LogMessageRef::encoded_len`].
pub fn encode_log_chunk<'a>(
    out: &mut Vec<u8>,
    req_id: u64,
    total: u64,
    messages: impl IntoIterator<Item = LogMessageRef<'a>>,
) {
    let start = begin_frame(out, frame_type::LOG_CHUNK);
    put_u64(out, req_id);
    put_u64(out, total);
    let count_at = out.len();
    put_u32(out, 0);
    let mut count: u32 = 0;
    for m in messages {
        put_u64(out, m.position);
        put_u64(out, m.timestamp_ms);
        put_str(out, m.room);
        put_str(out, m.nick);
        put_str(out, m.text);
        count = count.saturating_add(1);
    }
    BigEndian::write_u32(&mut out[count_at..count_at + 4], count);
    finish_frame(out, start);
}

/// Appends a `KeyList` answer: `total` keys matched, and as many of `keys` as fit, in order,
/// until the next one would take the body past [`BODY_LEN_MAX`]. Returns how many keys it
/// wrote; fewer than `total` means the listing is truncated, and the frame says so by itself
/// (its count is below its total). The server passes borrowed keys straight from its state
/// machine.
pub fn encode_key_list<'a>(
    out: &mut Vec<u8>,
    req_id: u64,
    total: u64,
    keys: impl IntoIterator<Item = &'a str>,
) -> usize {
    let start = begin_frame(out, frame_type::KEY_LIST);
    put_u64(out, req_id);
    put_u64(out, total);
    let count_at = out.len();
    put_u32(out, 0);
    let mut budget = BODY_LEN_MAX - KEY_LIST_FIXED_LEN;
    let mut count: usize = 0;
    for key in keys {
        // `put_str` cuts a string over STR_LEN_MAX, so this may overcount: never undercounts.
        match budget.checked_sub(KEY_LEN_MIN + key.len()) {
            Some(left) => budget = left,
            None => break,
        }
        put_str(out, key);
        count += 1;
    }
    // At most BODY_LEN_MAX / 2 keys fit, far below u32::MAX.
    BigEndian::write_u32(
        &mut out[count_at..count_at + 4],
        u32::try_from(count).unwrap_or(u32::MAX),
    );
    finish_frame(out, start);
    count
}

/// Decodes the first answer frame in `buf` (the client's read buffer). Same contract as
/// [`decode_request`].
pub fn decode_answer(buf: &[u8]) -> Result<Option<(Answer, usize)>, ProtoError> {
    let Some(frame) = split_frame(buf)? else {
        return Ok(None);
    };
    Answer::decode_body(frame.frame_type, frame.body).map(|answer| Some((answer, frame.len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn ss(session_id: u64, seq: u64, lowest_unacked_seq: u64) -> SessionSeq {
        SessionSeq {
            session_id,
            seq,
            lowest_unacked_seq,
        }
    }

    fn sample_requests() -> Vec<Request> {
        vec![
            Request::OpenSession { req_id: 1 },
            Request::Post {
                req_id: 2,
                session: ss(5, 1, 1),
                room: "general".into(),
                nick: "alice".into(),
                text: "Hello, Raft! ünïcødé ✓".into(),
            },
            Request::Post {
                req_id: u64::MAX,
                session: ss(u64::MAX, 9, 3),
                room: "".into(),
                nick: "".into(),
                text: "".into(),
            },
            Request::ReadLog {
                req_id: 3,
                from_position: 1,
                max_messages: 1000,
            },
            Request::Status { req_id: 4 },
            Request::Set {
                req_id: 5,
                session: ss(5, 2, 2),
                key: "k".into(),
                value: "v".into(),
            },
            Request::Get {
                req_id: 6,
                key: "k".into(),
            },
            Request::Cas {
                req_id: 7,
                session: ss(5, 3, 2),
                key: "k".into(),
                expected: None,
                new: "n".into(),
            },
            Request::Cas {
                req_id: 8,
                session: ss(5, 4, 4),
                key: "k".into(),
                expected: Some("v".into()),
                new: "".into(),
            },
            Request::Del {
                req_id: 9,
                session: ss(5, 5, 5),
                key: "k".into(),
            },
            Request::Keys {
                req_id: 10,
                prefix: "user-".into(),
            },
            Request::Keys {
                req_id: 11,
                prefix: "".into(),
            },
        ]
    }

    fn sample_answers() -> Vec<Answer> {
        let msg = |position: u64, text: &str| LogMessage {
            position,
            timestamp_ms: 1_700_000_000_000 + position,
            room: "general".into(),
            nick: "bob".into(),
            text: text.into(),
        };
        vec![
            Answer::SessionOpened {
                req_id: 1,
                session_id: 42,
            },
            Answer::Posted {
                req_id: 2,
                position: 17,
            },
            Answer::LogChunk {
                req_id: 3,
                total: 0,
                messages: vec![],
            },
            Answer::LogChunk {
                req_id: 3,
                total: 9,
                messages: vec![msg(1, "one"), msg(2, ""), msg(3, "ß")],
            },
            Answer::StatusReply {
                req_id: 4,
                status: NodeStatus {
                    node_id: 2,
                    role: Role::Leader,
                    term: 7,
                    leader: Some(2),
                    commit: 100,
                    applied: 99,
                },
            },
            Answer::StatusReply {
                req_id: 4,
                status: NodeStatus {
                    node_id: 0,
                    role: Role::PreCandidate,
                    term: 1,
                    leader: None,
                    commit: 0,
                    applied: 0,
                },
            },
            Answer::KvAck {
                req_id: 5,
                revision: 3,
            },
            Answer::KvValue {
                req_id: 6,
                value: Some("v".into()),
                revision: 3,
            },
            Answer::KvValue {
                req_id: 6,
                value: None,
                revision: 0,
            },
            Answer::CasFailed {
                req_id: 7,
                current: Some("x".into()),
            },
            Answer::CasFailed {
                req_id: 7,
                current: None,
            },
            Answer::KeyList {
                req_id: 9,
                total: 0,
                keys: vec![],
            },
            Answer::KeyList {
                req_id: 9,
                total: 3,
                keys: vec!["user-".into(), "user-a".into(), "user-ß".into()],
            },
            Answer::KeyList {
                req_id: 9,
                total: 5000,
                keys: vec!["a".into(), "".into()],
            },
            Answer::Error {
                req_id: 8,
                kind: ErrorKind::NotLeaderNotStored,
                leader_hint: Some(1),
                message: "not leader".into(),
            },
            Answer::Error {
                req_id: 0,
                kind: ErrorKind::Overloaded,
                leader_hint: None,
                message: "".into(),
            },
        ]
    }

    fn encoded<T>(items: &[T], encode: impl Fn(&T, &mut Vec<u8>)) -> Vec<Vec<u8>> {
        items
            .iter()
            .map(|item| {
                let mut buf = Vec::new();
                encode(item, &mut buf);
                buf
            })
            .collect()
    }

    #[test]
    fn every_request_round_trips() {
        let reqs = sample_requests();
        let mut types = std::collections::BTreeSet::new();
        for (req, buf) in reqs.iter().zip(encoded(&reqs, Request::encode)) {
            req.check_encodable().unwrap();
            assert_eq!(decode_request(&buf), Ok(Some((req.clone(), buf.len()))));
            types.insert(req.frame_type());
        }
        assert_eq!(types.len(), 9, "every request type is sampled");
    }

    #[test]
    fn every_answer_round_trips() {
        let answers = sample_answers();
        let mut types = std::collections::BTreeSet::new();
        for (answer, buf) in answers.iter().zip(encoded(&answers, Answer::encode)) {
            assert_eq!(decode_answer(&buf), Ok(Some((answer.clone(), buf.len()))));
            types.insert(answer.frame_type());
        }
        assert_eq!(types.len(), 9, "every answer type is sampled");
        for kind in ErrorKind::ALL {
            let a = Answer::Error {
                req_id: 1,
                kind,
                leader_hint: None,
                message: kind.name().into(),
            };
            let mut buf = Vec::new();
            a.encode(&mut buf);
            assert_eq!(decode_answer(&buf).unwrap().unwrap().0, a);
        }
    }

    #[test]
    fn frames_back_to_back_decode_one_at_a_time() {
        let mut buf = Vec::new();
        for req in sample_requests() {
            req.encode(&mut buf);
        }
        let mut at = 0;
        let mut decoded = Vec::new();
        while let Some((req, used)) = decode_request(&buf[at..]).unwrap() {
            decoded.push(req);
            at += used;
        }
        assert_eq!(at, buf.len());
        assert_eq!(decoded, sample_requests());
    }

    #[test]
    fn every_prefix_is_incomplete() {
        for buf in encoded(&sample_requests(), Request::encode) {
            for n in 0..buf.len() {
                assert_eq!(decode_request(&buf[..n]), Ok(None), "prefix {n} of {buf:?}");
            }
        }
        for buf in encoded(&sample_answers(), Answer::encode) {
            for n in 0..buf.len() {
                assert_eq!(decode_answer(&buf[..n]), Ok(None), "prefix {n} of {buf:?}");
            }
        }
    }

    #[test]
    fn log_chunk_from_borrowed_messages_matches_owned() {
        let Answer::LogChunk { messages, .. } = &sample_answers()[3] else {
            unreachable!()
        };
        let mut a = Vec::new();
        encode_log_chunk(&mut a, 3, 9, messages.iter().map(LogMessage::as_ref));
        let mut b = Vec::new();
        sample_answers()[3].encode(&mut b);
        assert_eq!(a, b);
        let body: usize = messages.iter().map(|m| m.as_ref().encoded_len()).sum();
        assert_eq!(a.len(), HEADER_LEN + LOG_CHUNK_FIXED_LEN + body);
    }

    #[test]
    fn preamble() {
        let mut buf = Vec::new();
        encode_preamble(&mut buf);
        assert_eq!(buf, b"\0RCB\0\x01");
        for n in 0..buf.len() {
            assert_eq!(decode_preamble(&buf[..n]), Ok(None));
        }
        buf.push(0xAA); // the first frame's bytes may follow in the same read
        assert_eq!(decode_preamble(&buf), Ok(Some(PREAMBLE_LEN)));
        assert_eq!(
            decode_preamble(b"\0RCB\0\x02"),
            Err(ProtoError::BadVersion(2))
        );
        assert_eq!(decode_preamble(b"m"), Err(ProtoError::BadMagic));
        assert_eq!(decode_preamble(b"\0RX"), Err(ProtoError::BadMagic));
    }

    /// Builds a frame with a correct checksum around an arbitrary body.
    fn raw_frame(frame_type: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let start = begin_frame(&mut out, frame_type);
        out.extend_from_slice(body);
        finish_frame(&mut out, start);
        out
    }

    #[test]
    fn malformed_frames_are_named_errors() {
        // A huge claimed length is refused from the length bytes alone.
        assert_eq!(
            decode_request(&[0x00, 0x10, 0x00, 0x01]),
            Err(ProtoError::BodyTooLong(BODY_LEN_MAX as u32 + 1))
        );
        assert_eq!(
            decode_answer(&[0xFF; 4]),
            Err(ProtoError::BodyTooLong(u32::MAX))
        );
        // Exactly the limit is allowed: incomplete, not an error.
        assert_eq!(
            decode_request(&(BODY_LEN_MAX as u32).to_be_bytes()),
            Ok(None)
        );

        let mut buf = Vec::new();
        Request::Status { req_id: 1 }.encode(&mut buf);
        buf[HEADER_LEN] ^= 1;
        assert!(matches!(
            decode_request(&buf),
            Err(ProtoError::BadChecksum { .. })
        ));

        assert_eq!(
            decode_request(&raw_frame(101, &[0; 16])),
            Err(ProtoError::UnknownFrameType(101))
        );
        assert_eq!(
            decode_answer(&raw_frame(2, &[0; 8])),
            Err(ProtoError::UnknownFrameType(2))
        );
        assert_eq!(
            decode_request(&raw_frame(4, &[0; 9])),
            Err(ProtoError::TrailingBytes(1))
        );
        assert_eq!(
            decode_request(&raw_frame(4, &[0; 7])),
            Err(ProtoError::Truncated { field: "req_id" })
        );

        // A string claiming more bytes than the body holds.
        let mut body = vec![0; 8];
        body.extend_from_slice(&[0xFF, 0xFF, b'a']);
        assert_eq!(
            decode_request(&raw_frame(6, &body)),
            Err(ProtoError::Truncated { field: "key" })
        );
        // Invalid UTF-8.
        let mut body = vec![0; 8];
        body.extend_from_slice(&[0, 2, 0xC3, 0x28]);
        assert_eq!(
            decode_request(&raw_frame(6, &body)),
            Err(ProtoError::NotUtf8 { field: "key" })
        );
        // A LogChunk claiming 4 billion messages in 20 bytes: refused, nothing allocated.
        let mut body = vec![0; 16];
        body.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            decode_answer(&raw_frame(103, &body)),
            Err(ProtoError::Truncated { field: "messages" })
        );
        // A KeyList claiming 4 billion keys, or more keys than its bytes can hold: refused.
        let mut body = vec![0; 16];
        body.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            decode_answer(&raw_frame(108, &body)),
            Err(ProtoError::Truncated { field: "keys" })
        );
        let mut body = vec![0; 16];
        body.extend_from_slice(&3u32.to_be_bytes());
        body.extend_from_slice(&[0, 0, 0, 0]); // room for two empty keys, not three
        assert_eq!(
            decode_answer(&raw_frame(108, &body)),
            Err(ProtoError::Truncated { field: "keys" })
        );
        // A key claiming more bytes than remain, a key that is not UTF-8, a cut-off count.
        let mut body = vec![0; 16];
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&[0, 5, b'a', b'b']);
        assert_eq!(
            decode_answer(&raw_frame(108, &body)),
            Err(ProtoError::Truncated { field: "key" })
        );
        let mut body = vec![0; 16];
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&[0, 1, 0xFF]);
        assert_eq!(
            decode_answer(&raw_frame(108, &body)),
            Err(ProtoError::NotUtf8 { field: "key" })
        );
        assert_eq!(
            decode_answer(&raw_frame(108, &[0; 18])),
            Err(ProtoError::Truncated { field: "count" })
        );
        // A Keys request whose prefix runs past the body, or with bytes after it.
        assert_eq!(
            decode_request(&raw_frame(9, &[0; 9])),
            Err(ProtoError::Truncated { field: "prefix" })
        );
        assert_eq!(
            decode_request(&raw_frame(9, &[0; 11])),
            Err(ProtoError::TrailingBytes(1))
        );
        // Bad option tag, role, error kind.
        let mut body = vec![0; 8];
        body.push(2);
        assert_eq!(
            decode_answer(&raw_frame(107, &body)),
            Err(ProtoError::BadOptionTag(2))
        );
        let mut body = vec![0; 16];
        body.push(4);
        assert_eq!(
            decode_answer(&raw_frame(104, &body)),
            Err(ProtoError::BadRole(4))
        );
        let mut body = vec![0; 8];
        body.push(7);
        assert_eq!(
            decode_answer(&raw_frame(110, &body)),
            Err(ProtoError::BadErrorKind(7))
        );
    }

    #[test]
    fn a_key_list_never_exceeds_the_body_limit() {
        // 5,000 keys of 256 bytes: about 1.3 MB, more than one frame may carry.
        let keys: Vec<String> = (0..5000).map(|i| format!("{i:0>256}")).collect();
        let total = keys.len() as u64;
        let mut buf = Vec::new();
        let written = encode_key_list(&mut buf, 7, total, keys.iter().map(String::as_str));
        let body_len = buf.len() - HEADER_LEN;
        assert!(body_len <= BODY_LEN_MAX, "{body_len}");
        assert_eq!(written, (BODY_LEN_MAX - KEY_LIST_FIXED_LEN) / 258);
        assert!(
            body_len + 258 > BODY_LEN_MAX,
            "as many keys as fit, no fewer"
        );
        let (answer, used) = decode_answer(&buf).unwrap().unwrap();
        assert_eq!(used, buf.len());
        let Answer::KeyList {
            req_id: 7,
            total: 5000,
            keys: got,
        } = answer
        else {
            panic!("{answer:?}")
        };
        assert_eq!(got.len(), written);
        assert_eq!(got[..], keys[..written], "the first keys, in order");

        // An owned answer with too many keys is cut the same way, still one valid frame.
        let mut again = Vec::new();
        Answer::KeyList {
            req_id: 7,
            total,
            keys,
        }
        .encode(&mut again);
        assert_eq!(again, buf);

        // Exactly at the limit: keys that fill the body to its last byte are all kept, and not
        // even an empty key more.
        let space = BODY_LEN_MAX - KEY_LIST_FIXED_LEN;
        let full = space / (2 + STR_LEN_MAX);
        let mut keys = vec!["x".repeat(STR_LEN_MAX); full];
        keys.push("y".repeat(space - full * (2 + STR_LEN_MAX) - 2));
        keys.push(String::new());
        let mut buf = Vec::new();
        let written = encode_key_list(&mut buf, 1, 99, keys.iter().map(String::as_str));
        assert_eq!(written, full + 1);
        assert_eq!(buf.len() - HEADER_LEN, BODY_LEN_MAX);
        let Some((Answer::KeyList { keys: got, .. }, _)) = decode_answer(&buf).unwrap() else {
            panic!("a KeyList")
        };
        assert_eq!(got[..], keys[..full + 1]);
    }

    #[test]
    fn too_long_strings_are_caught_before_encoding() {
        let long = "é".repeat(STR_LEN_MAX / 2 + 1); // 65538 bytes
        let req = Request::Get {
            req_id: 1,
            key: long.clone(),
        };
        assert_eq!(
            req.check_encodable(),
            Err(ProtoError::TooLong {
                field: "key",
                len: long.len()
            })
        );
        let keys = Request::Keys {
            req_id: 1,
            prefix: long.clone(),
        };
        assert_eq!(
            keys.check_encodable(),
            Err(ProtoError::TooLong {
                field: "prefix",
                len: long.len()
            })
        );
        // Encoding anyway cuts at a char boundary and still yields a valid frame.
        let mut buf = Vec::new();
        req.encode(&mut buf);
        let (Request::Get { key, .. }, _) = decode_request(&buf).unwrap().unwrap() else {
            panic!()
        };
        assert_eq!(key.len(), STR_LEN_MAX - 1);
        assert!(long.starts_with(&key));
    }

    #[test]
    fn single_bit_flips_never_panic_and_body_flips_are_caught() {
        let frames: Vec<(bool, Vec<u8>)> = encoded(&sample_requests(), Request::encode)
            .into_iter()
            .map(|b| (true, b))
            .chain(
                encoded(&sample_answers(), Answer::encode)
                    .into_iter()
                    .map(|b| (false, b)),
            )
            .collect();
        for (is_request, frame) in frames {
            for bit in 0..frame.len() * 8 {
                let mut buf = frame.clone();
                buf[bit / 8] ^= 1 << (bit % 8);
                let ok = if is_request {
                    decode_request(&buf).map(|r| r.is_some())
                } else {
                    decode_answer(&buf).map(|r| r.is_some())
                };
                // CRC32C detects every single-bit error in the body or in the stored checksum.
                let in_checksum_or_body = bit / 8 >= 5;
                if in_checksum_or_body {
                    assert!(
                        matches!(ok, Err(ProtoError::BadChecksum { .. })),
                        "bit {bit}: {ok:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = SmallRng::seed_from_u64(0x5EED_C11E);
        let types: Vec<u8> = (1..=9)
            .chain(101..=108)
            .chain([110, 0, 10, 109, 255])
            .collect();
        let valid: Vec<Vec<u8>> = encoded(&sample_requests(), Request::encode)
            .into_iter()
            .chain(encoded(&sample_answers(), Answer::encode))
            .collect();
        let mut decoded_some = 0;
        for i in 0..30_000 {
            let buf = match i % 3 {
                // Random bytes: mostly stopped by the length or checksum.
                0 => (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
                // A well-formed header around a random body, so the body parsers see garbage.
                1 => {
                    let len = rng.gen_range(0..64);
                    let body: Vec<u8> = (0..len)
                        .map(|_| {
                            if rng.gen_bool(0.3) {
                                rng.gen_range(0..3)
                            } else {
                                rng.gen()
                            }
                        })
                        .collect();
                    raw_frame(types[rng.gen_range(0..types.len())], &body)
                }
                // A valid frame with a few bytes changed (or cut) and its checksum fixed up.
                _ => {
                    let frame = &valid[rng.gen_range(0..valid.len())];
                    let mut body = frame[HEADER_LEN..].to_vec();
                    for _ in 0..rng.gen_range(1..4) {
                        if body.is_empty() {
                            break;
                        }
                        let at = rng.gen_range(0..body.len());
                        body[at] = if rng.gen_bool(0.5) {
                            rng.gen_range(0..4)
                        } else {
                            rng.gen()
                        };
                    }
                    if rng.gen_bool(0.2) {
                        body.truncate(rng.gen_range(0..=body.len()));
                    }
                    raw_frame(frame[4], &body)
                }
            };
            let r = decode_request(&buf);
            let a = decode_answer(&buf);
            let _ = decode_preamble(&buf);
            if let Ok(Some((req, used))) = r {
                decoded_some += 1;
                assert!(used <= buf.len());
                let mut again = Vec::new();
                req.encode(&mut again);
                assert_eq!(again, buf[..used], "decode then encode is the identity");
            }
            if let Ok(Some((answer, used))) = a {
                decoded_some += 1;
                let mut again = Vec::new();
                answer.encode(&mut again);
                assert_eq!(again, buf[..used], "decode then encode is the identity");
            }
        }
        assert!(
            decoded_some > 3_000,
            "the generator reaches the body parsers ({decoded_some})"
        );
    }
}
