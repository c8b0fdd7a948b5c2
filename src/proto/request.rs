//! Request frames (client to node): encoding each [`Request`] body and decoding it back.
//!
//! It owns the request bodies' layouts (see the table in the module docs); it never touches a
//! socket and never judges what a request means.

use super::*;

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
            | Request::Keys { req_id, .. }
            | Request::Register { req_id, .. }
            | Request::Login { req_id, .. }
            | Request::Logout { req_id }
            | Request::Passwd { req_id, .. }
            | Request::Members { req_id }
            | Request::AddMember { req_id, .. }
            | Request::PromoteMember { req_id, .. }
            | Request::RemoveMember { req_id, .. } => *req_id,
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
            | Request::Keys { req_id, .. }
            | Request::Register { req_id, .. }
            | Request::Login { req_id, .. }
            | Request::Logout { req_id }
            | Request::Passwd { req_id, .. }
            | Request::Members { req_id }
            | Request::AddMember { req_id, .. }
            | Request::PromoteMember { req_id, .. }
            | Request::RemoveMember { req_id, .. } => *req_id = id,
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
            Request::Register { .. } => frame_type::REGISTER,
            Request::Login { .. } => frame_type::LOGIN,
            Request::Logout { .. } => frame_type::LOGOUT,
            Request::Passwd { .. } => frame_type::PASSWD,
            Request::Members { .. } => frame_type::MEMBERS,
            Request::AddMember { .. } => frame_type::ADD_MEMBER,
            Request::PromoteMember { .. } => frame_type::PROMOTE_MEMBER,
            Request::RemoveMember { .. } => frame_type::REMOVE_MEMBER,
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
            Request::Register { nick, password, .. } | Request::Login { nick, password, .. } => [
                ("nick", Some(nick)),
                ("password", Some(password)),
                ("", None),
            ],
            Request::Passwd { old, new, .. } => {
                [("old", Some(old)), ("new", Some(new)), ("", None)]
            }
            Request::AddMember { addr, .. } => [("addr", Some(addr)), ("", None), ("", None)],
            Request::OpenSession { .. }
            | Request::ReadLog { .. }
            | Request::Status { .. }
            | Request::Logout { .. }
            | Request::Members { .. }
            | Request::PromoteMember { .. }
            | Request::RemoveMember { .. } => [("", None), ("", None), ("", None)],
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
            Request::OpenSession { req_id }
            | Request::Status { req_id }
            | Request::Logout { req_id }
            | Request::Members { req_id } => put_u64(out, *req_id),
            Request::AddMember { req_id, id, addr } => {
                put_u64(out, *req_id);
                put_u64(out, *id);
                put_str(out, addr);
            }
            Request::PromoteMember { req_id, id } | Request::RemoveMember { req_id, id } => {
                put_u64(out, *req_id);
                put_u64(out, *id);
            }
            Request::Register {
                req_id,
                nick,
                password,
            }
            | Request::Login {
                req_id,
                nick,
                password,
            } => {
                put_u64(out, *req_id);
                put_str(out, nick);
                put_str(out, password);
            }
            Request::Passwd { req_id, old, new } => {
                put_u64(out, *req_id);
                put_str(out, old);
                put_str(out, new);
            }
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
            frame_type::REGISTER => Request::Register {
                req_id: r.u64("req_id")?,
                nick: r.str("nick")?,
                password: r.str("password")?,
            },
            frame_type::LOGIN => Request::Login {
                req_id: r.u64("req_id")?,
                nick: r.str("nick")?,
                password: r.str("password")?,
            },
            frame_type::LOGOUT => Request::Logout {
                req_id: r.u64("req_id")?,
            },
            frame_type::PASSWD => Request::Passwd {
                req_id: r.u64("req_id")?,
                old: r.str("old")?,
                new: r.str("new")?,
            },
            frame_type::MEMBERS => Request::Members {
                req_id: r.u64("req_id")?,
            },
            frame_type::ADD_MEMBER => Request::AddMember {
                req_id: r.u64("req_id")?,
                id: r.u64("id")?,
                addr: r.str("addr")?,
            },
            frame_type::PROMOTE_MEMBER => Request::PromoteMember {
                req_id: r.u64("req_id")?,
                id: r.u64("id")?,
            },
            frame_type::REMOVE_MEMBER => Request::RemoveMember {
                req_id: r.u64("req_id")?,
                id: r.u64("id")?,
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
