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
//! | 10 | `Register` | `u64 req_id \| str nick \| str password` |
//! | 11 | `Login` | `u64 req_id \| str nick \| str password` |
//! | 12 | `Logout` | `u64 req_id` |
//! | 13 | `Passwd` | `u64 req_id \| str old \| str new` |
//! | 14 | `Members` | `u64 req_id` |
//! | 15 | `AddMember` | `u64 req_id \| u64 id \| str host_port` |
//! | 16 | `PromoteMember` | `u64 req_id \| u64 id` |
//! | 17 | `RemoveMember` | `u64 req_id \| u64 id` |
//! | 101 | `SessionOpened` | `u64 req_id \| u64 session_id` |
//! | 102 | `Posted` | `u64 req_id \| u64 position` |
//! | 103 | `LogChunk` | `u64 req_id \| u64 total \| u32 count \| count × (u64 position \| u64 timestamp_ms \| str room \| str nick \| str text)` |
//! | 104 | `StatusReply` | `u64 req_id \| u64 node_id \| u8 role \| u64 term \| opt<u64> leader \| u64 commit \| u64 applied` |
//! | 105 | `KvAck` | `u64 req_id \| u64 revision` |
//! | 106 | `KvValue` | `u64 req_id \| opt<str> value \| u64 revision` |
//! | 107 | `CasFailed` | `u64 req_id \| opt<str> current` |
//! | 108 | `KeyList` | `u64 req_id \| u64 total \| u32 count \| count × str key` |
//! | 109 | `AccountOk` | `u64 req_id \| str nick \| str message` |
//! | 111 | `MemberList` | `u64 req_id \| u64 cluster_id \| u64 node_id \| opt<u64> leader \| u32 count \| count × (u64 id \| str host_port \| u8 voter) \| u32 bootstrap_count \| bootstrap_count × (u64 id \| str host_port)` |
//! | 112 | `MemberOk` | `u64 req_id \| str message` |
//! | 110 | `Error` | `u64 req_id \| u8 kind \| opt<u64> leader_hint \| str message` |
//!
//! This module owns the bytes: the connection preamble, the frame header
//! `u32 body_len | u8 frame_type | u32 crc32c(body) | body`, and each frame's body. It never
//! touches a socket and never decides what a request means (sessions, dedup and errors are the
//! server's; retries are [`crate::client::Session`]'s).
//!
//! Decoding is for untrusted input: it never panics, and it never allocates more than the bytes
//! it has already seen justify (every length is checked against the remaining body before a
//! buffer is made, and a frame whose header claims more than [`BODY_LEN_MAX`] is refused as soon
//! as the four length bytes are in, so a server can close the connection at once).
//!
//! ```
//! use raftchat::proto::{decode_answer, decode_request, Answer, Request};
//! let mut buf = Vec::new();
//! Request::Status { req_id: 7 }.encode(&mut buf);
//! let (req, used) = decode_request(&buf).unwrap().unwrap();
//! assert_eq!((req, used), (Request::Status { req_id: 7 }, buf.len()));
//! assert_eq!(decode_answer(&buf[..3]).unwrap(), None); // incomplete: wait for more bytes
//! ```

use std::fmt;

use crate::codec::{BigEndian, ByteOrder};

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

/// Frame type bytes. Requests are 1..=17; answers are 101..=112.
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
    pub const REGISTER: u8 = 10;
    pub const LOGIN: u8 = 11;
    pub const LOGOUT: u8 = 12;
    pub const PASSWD: u8 = 13;
    pub const MEMBERS: u8 = 14;
    pub const ADD_MEMBER: u8 = 15;
    pub const PROMOTE_MEMBER: u8 = 16;
    pub const REMOVE_MEMBER: u8 = 17;
    pub const MEMBER_LIST: u8 = 111;
    pub const MEMBER_OK: u8 = 112;
    pub const SESSION_OPENED: u8 = 101;
    pub const POSTED: u8 = 102;
    pub const LOG_CHUNK: u8 = 103;
    pub const STATUS_REPLY: u8 = 104;
    pub const KV_ACK: u8 = 105;
    pub const KV_VALUE: u8 = 106;
    pub const CAS_FAILED: u8 = 107;
    pub const KEY_LIST: u8 = 108;
    pub const ACCOUNT_OK: u8 = 109;
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
    /// Creates the account `nick` (committed through Raft) and logs this connection in to it,
    /// as the telnet `register`. Answered `AccountOk`, or `Error`: `Rejected` for a taken nick
    /// or a bad password, `Overloaded` when the node's hashing queue is full.
    Register {
        req_id: u64,
        nick: String,
        password: String,
    },
    /// Logs this connection in to `nick`, as the telnet `login`: from then on its `Post`s may
    /// use that nick. Wrong passwords are `Rejected` (the same words for an unknown nick) and
    /// count toward the per-connection and per-nick failure limit; past it, `Overloaded` with
    /// the wait in the message.
    Login {
        req_id: u64,
        nick: String,
        password: String,
    },
    /// Ends the connection's login (`Rejected` if it had none).
    Logout {
        req_id: u64,
    },
    /// Changes the logged-in account's password; a wrong `old` counts as a failed login.
    Passwd {
        req_id: u64,
        old: String,
        new: String,
    },
    /// The configuration in force on the node asked, with addresses; also the cluster id and
    /// the bootstrap member list, which a joining node (`server <id> --join`) stores.
    Members {
        req_id: u64,
    },
    /// Add a learner at `addr` (`ip:port`); the leader answers `MemberOk` once committed.
    AddMember {
        req_id: u64,
        id: u64,
        addr: String,
    },
    /// Make a caught-up learner a voter.
    PromoteMember {
        req_id: u64,
        id: u64,
    },
    /// Take a member out for good.
    RemoveMember {
        req_id: u64,
        id: u64,
    },
}

/// One member as `MemberList` carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    /// `ip:port`, or `-` when unknown.
    pub addr: String,
    pub voter: bool,
}

/// The configuration a node is in, as `MemberList` carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberList {
    pub cluster_id: u64,
    /// The node that answered.
    pub node_id: u64,
    pub leader: Option<u64>,
    /// Ids ascending.
    pub members: Vec<MemberInfo>,
    /// The list the cluster was bootstrapped with: `(id, ip:port)`.
    pub bootstrap: Vec<(u64, String)>,
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
    /// The answer to `Register`, `Login`, `Logout` and `Passwd`: the account the request was
    /// about, and the telnet `ack` line's words (`logged in as alice`).
    AccountOk {
        req_id: u64,
        nick: String,
        message: String,
    },
    Error {
        req_id: u64,
        kind: ErrorKind,
        leader_hint: Option<u64>,
        message: String,
    },
    /// The answer to `Members`.
    MemberList {
        req_id: u64,
        list: MemberList,
    },
    /// A membership change is committed; `message` is the telnet `ack` line's words.
    MemberOk {
        req_id: u64,
        message: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Preamble

/// Appends the 6-byte preamble a binary client sends first: [`CLIENT_MAGIC`], then version 1.
pub fn encode_preamble(out: &mut Vec<u8>) {
    out.extend_from_slice(&CLIENT_MAGIC);
    crate::codec::put_u16_be(out, PROTOCOL_VERSION);
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
// Fields: the shared codec's primitives, and the protocol's composites built from them

use crate::codec::{put_bytes16_be, put_u8, CodecError, ReaderBe};
use crate::codec::{put_u32_be as put_u32, put_u64_be as put_u64};

/// Writes `u16 len | bytes`. A string longer than [`STR_LEN_MAX`] cannot be represented; it is
/// cut at the last char boundary that fits rather than panicking (callers that take strings
/// from users check first: [`Request::check_encodable`]).
fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut len = s.len().min(STR_LEN_MAX);
    while !s.is_char_boundary(len) {
        len -= 1;
    }
    put_bytes16_be(out, &s.as_bytes()[..len]);
}

fn put_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => put_u8(out, 0),
        Some(v) => {
            put_u8(out, 1);
            put_u64(out, v);
        }
    }
}

fn put_opt_str(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        None => put_u8(out, 0),
        Some(s) => {
            put_u8(out, 1);
            put_str(out, s);
        }
    }
}

fn put_session(out: &mut Vec<u8>, s: &SessionSeq) {
    put_u64(out, s.session_id);
    put_u64(out, s.seq);
    put_u64(out, s.lowest_unacked_seq);
}

/// A cursor over one frame body: the shared big-endian reader (every read checks the remaining
/// length first); its errors become [`ProtoError`]s through `?`.
type Reader<'a> = ReaderBe<'a>;

impl From<CodecError> for ProtoError {
    fn from(e: CodecError) -> ProtoError {
        match e {
            CodecError::Truncated { field } => ProtoError::Truncated { field },
            CodecError::NotUtf8 { field } => ProtoError::NotUtf8 { field },
            CodecError::BadTag { tag, .. } => ProtoError::BadOptionTag(tag),
            CodecError::TrailingBytes(n) => ProtoError::TrailingBytes(n),
        }
    }
}

/// The protocol's composite fields: `str`, `opt<u64>`, `opt<str>` and `session`.
trait ReadFields {
    fn str(&mut self, field: &'static str) -> Result<String, ProtoError>;
    fn opt_u64(&mut self, field: &'static str) -> Result<Option<u64>, ProtoError>;
    fn opt_str(&mut self, field: &'static str) -> Result<Option<String>, ProtoError>;
    fn session(&mut self) -> Result<SessionSeq, ProtoError>;
}

impl ReadFields for Reader<'_> {
    fn str(&mut self, field: &'static str) -> Result<String, ProtoError> {
        Ok(self.str16(field)?.to_owned())
    }

    fn opt_u64(&mut self, field: &'static str) -> Result<Option<u64>, ProtoError> {
        if self.flag(field)? {
            Ok(Some(self.u64(field)?))
        } else {
            Ok(None)
        }
    }

    fn opt_str(&mut self, field: &'static str) -> Result<Option<String>, ProtoError> {
        if self.flag(field)? {
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
}

mod answer;
mod request;

pub use answer::{decode_answer, encode_key_list, encode_log_chunk};
pub use request::decode_request;

#[cfg(test)]
mod tests;
