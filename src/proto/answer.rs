//! Answer frames (node to client): encoding each [`Answer`] body, the size-bounded `LogChunk`
//! and `KeyList` writers the server uses, and decoding them back.
//!
//! It owns the answer bodies' layouts (see the table in the module docs); it never touches a
//! socket and never decides which answer a request gets.

use super::*;

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
            | Answer::AccountOk { req_id, .. }
            | Answer::MemberList { req_id, .. }
            | Answer::MemberOk { req_id, .. }
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
            Answer::AccountOk { .. } => frame_type::ACCOUNT_OK,
            Answer::Error { .. } => frame_type::ERROR,
            Answer::MemberList { .. } => frame_type::MEMBER_LIST,
            Answer::MemberOk { .. } => frame_type::MEMBER_OK,
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
            Answer::AccountOk {
                req_id,
                nick,
                message,
            } => {
                put_u64(out, *req_id);
                put_str(out, nick);
                put_str(out, message);
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
            Answer::MemberList { req_id, list } => encode_member_list(out, *req_id, list),
            Answer::MemberOk { req_id, message } => {
                put_u64(out, *req_id);
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
            frame_type::LOG_CHUNK => decode_log_chunk(&mut r)?,
            frame_type::STATUS_REPLY => decode_status_reply(&mut r)?,
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
            frame_type::KEY_LIST => decode_key_list(&mut r)?,
            frame_type::ACCOUNT_OK => Answer::AccountOk {
                req_id: r.u64("req_id")?,
                nick: r.str("nick")?,
                message: r.str("message")?,
            },
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
            frame_type::MEMBER_LIST => decode_member_list(&mut r)?,
            frame_type::MEMBER_OK => Answer::MemberOk {
                req_id: r.u64("req_id")?,
                message: r.str("message")?,
            },
            other => return Err(ProtoError::UnknownFrameType(other)),
        };
        r.finish()?;
        Ok(answer)
    }
}

/// Members beyond this many are not sent (a cluster has a handful).
const MEMBER_LIST_MAX: usize = 1024;

fn encode_member_list(out: &mut Vec<u8>, req_id: u64, list: &MemberList) {
    put_u64(out, req_id);
    put_u64(out, list.cluster_id);
    put_u64(out, list.node_id);
    put_opt_u64(out, list.leader);
    let members = &list.members[..list.members.len().min(MEMBER_LIST_MAX)];
    put_u32(out, members.len() as u32);
    for m in members {
        put_u64(out, m.id);
        put_str(out, &m.addr);
        put_u8(out, u8::from(m.voter));
    }
    let bootstrap = &list.bootstrap[..list.bootstrap.len().min(MEMBER_LIST_MAX)];
    put_u32(out, bootstrap.len() as u32);
    for (id, addr) in bootstrap {
        put_u64(out, *id);
        put_str(out, addr);
    }
}

fn decode_member_list(r: &mut Reader<'_>) -> Result<Answer, ProtoError> {
    let req_id = r.u64("req_id")?;
    let cluster_id = r.u64("cluster_id")?;
    let node_id = r.u64("node_id")?;
    let leader = r.opt_u64("leader")?;
    let count = r.u32("member count")? as usize;
    // Each member is at least 11 bytes: a count the body cannot hold is refused up front.
    if count > MEMBER_LIST_MAX || count > r.remaining() / 11 {
        return Err(ProtoError::Truncated { field: "members" });
    }
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let id = r.u64("member id")?;
        let addr = r.str("member addr")?;
        let voter = match r.u8("voter")? {
            0 => false,
            1 => true,
            other => return Err(ProtoError::BadOptionTag(other)),
        };
        members.push(MemberInfo { id, addr, voter });
    }
    let count = r.u32("bootstrap count")? as usize;
    if count > MEMBER_LIST_MAX || count > r.remaining() / 10 {
        return Err(ProtoError::Truncated { field: "bootstrap" });
    }
    let mut bootstrap = Vec::with_capacity(count);
    for _ in 0..count {
        bootstrap.push((r.u64("bootstrap id")?, r.str("bootstrap addr")?));
    }
    let list = MemberList {
        cluster_id,
        node_id,
        leader,
        members,
        bootstrap,
    };
    Ok(Answer::MemberList { req_id, list })
}

fn decode_log_chunk(r: &mut Reader<'_>) -> Result<Answer, ProtoError> {
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
    Ok(Answer::LogChunk {
        req_id,
        total,
        messages,
    })
}

fn decode_status_reply(r: &mut Reader<'_>) -> Result<Answer, ProtoError> {
    let req_id = r.u64("req_id")?;
    let node_id = r.u64("node_id")?;
    let role_code = r.u8("role")?;
    let role = Role::from_code(role_code).ok_or(ProtoError::BadRole(role_code))?;
    Ok(Answer::StatusReply {
        req_id,
        status: NodeStatus {
            node_id,
            role,
            term: r.u64("term")?,
            leader: r.opt_u64("leader")?,
            commit: r.u64("commit")?,
            applied: r.u64("applied")?,
        },
    })
}

fn decode_key_list(r: &mut Reader<'_>) -> Result<Answer, ProtoError> {
    let req_id = r.u64("req_id")?;
    let total = r.u64("total")?;
    let count = r.u32("count")? as usize;
    // Each key takes at least its 2 length bytes: a count the remaining bytes cannot hold is
    // refused before any allocation.
    if count > r.remaining() / KEY_LEN_MIN {
        return Err(ProtoError::Truncated { field: "keys" });
    }
    let mut keys = Vec::with_capacity(count);
    for _ in 0..count {
        keys.push(r.str("key")?);
    }
    Ok(Answer::KeyList {
        req_id,
        total,
        keys,
    })
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
