//! Replicated commands: the bytes a chat node stores in a Raft log entry.
//!
//! This file owns the binary encoding of [`Command`] and nothing else: no validation of names or
//! texts (the state machine does that at apply time, see `validate`), no IO. Decoding never
//! panics and never allocates more than the input's length: every length is checked against the
//! bytes that remain before anything is copied.
//!
//! # Format, version 1 (big-endian integers)
//!
//! ```text
//! u8   format version = 1          the leading tag byte; a new layout gets a new number
//! u64  origin.node
//! u64  origin.req
//! u64  timestamp_ms
//! u8   op tag: 1 Post, 2 CreateRoom, 3 Set, 4 Del, 5 Cas
//! then the op's fields, in declaration order:
//!   str      = u32 byte length, then that many bytes of UTF-8
//!   opt str  = u8 0 (None) | u8 1 (Some) then str
//! ```
//!
//! A command is exactly this long: trailing bytes are an error, so no two byte strings decode
//! to the same command and a truncated entry never decodes.

use byteorder::{BigEndian, ByteOrder};

use super::ChatError;

/// The format version this code writes and the only one it reads.
pub const FORMAT_V1: u8 = 1;

const OP_POST: u8 = 1;
const OP_CREATE_ROOM: u8 = 2;
const OP_SET: u8 = 3;
const OP_DEL: u8 = 4;
const OP_CAS: u8 = 5;

/// Bytes before the op's fields: version, origin, timestamp, op tag.
const HEADER_BYTES: usize = 1 + 8 + 8 + 8 + 1;

/// Who waits for the answer: the node that received the client's request, and that node's id
/// for the request. Only that node replies; the others apply and stay silent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Origin {
    pub node: u64,
    pub req: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Append a message to `room`'s part of the chat log.
    Post {
        room: String,
        nick: String,
        text: String,
    },
    /// Create `room` if it does not exist (joining a new room proposes this).
    CreateRoom {
        room: String,
    },
    Set {
        key: String,
        value: String,
    },
    Del {
        key: String,
    },
    /// Compare-and-set: write `new` only if the current value is `expected` (`None`: the key must
    /// be absent).
    Cas {
        key: String,
        expected: Option<String>,
        new: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub origin: Origin,
    /// Wall-clock time, set by the leader when it proposes the command: the state machine must
    /// not read a clock, so the time travels in the entry.
    pub timestamp_ms: u64,
    pub op: Op,
}

impl Command {
    /// Appends the encoding to `out` (which may already hold other data).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.reserve(self.encoded_len());
        out.push(FORMAT_V1);
        put_u64(out, self.origin.node);
        put_u64(out, self.origin.req);
        put_u64(out, self.timestamp_ms);
        match &self.op {
            Op::Post { room, nick, text } => {
                out.push(OP_POST);
                put_str(out, room);
                put_str(out, nick);
                put_str(out, text);
            }
            Op::CreateRoom { room } => {
                out.push(OP_CREATE_ROOM);
                put_str(out, room);
            }
            Op::Set { key, value } => {
                out.push(OP_SET);
                put_str(out, key);
                put_str(out, value);
            }
            Op::Del { key } => {
                out.push(OP_DEL);
                put_str(out, key);
            }
            Op::Cas { key, expected, new } => {
                out.push(OP_CAS);
                put_str(out, key);
                match expected {
                    None => out.push(0),
                    Some(value) => {
                        out.push(1);
                        put_str(out, value);
                    }
                }
                put_str(out, new);
            }
        }
        debug_assert_eq!(out.len() - start, self.encoded_len());
    }

    /// The exact number of bytes `encode` appends.
    pub fn encoded_len(&self) -> usize {
        let str_len = |s: &str| 4 + s.len();
        HEADER_BYTES
            + match &self.op {
                Op::Post { room, nick, text } => str_len(room) + str_len(nick) + str_len(text),
                Op::CreateRoom { room } => str_len(room),
                Op::Set { key, value } => str_len(key) + str_len(value),
                Op::Del { key } => str_len(key),
                Op::Cas { key, expected, new } => {
                    str_len(key) + 1 + expected.as_deref().map_or(0, str_len) + str_len(new)
                }
            }
    }

    pub fn decode(data: &[u8]) -> Result<Command, ChatError> {
        let mut r = Reader { rest: data };
        let version = r.u8("version").map_err(|_| ChatError::Empty)?;
        if version != FORMAT_V1 {
            return Err(ChatError::UnknownVersion(version));
        }
        let origin = Origin {
            node: r.u64("origin.node")?,
            req: r.u64("origin.req")?,
        };
        let timestamp_ms = r.u64("timestamp_ms")?;
        let op = match r.u8("op")? {
            OP_POST => Op::Post {
                room: r.string("room")?,
                nick: r.string("nick")?,
                text: r.string("text")?,
            },
            OP_CREATE_ROOM => Op::CreateRoom {
                room: r.string("room")?,
            },
            OP_SET => Op::Set {
                key: r.string("key")?,
                value: r.string("value")?,
            },
            OP_DEL => Op::Del {
                key: r.string("key")?,
            },
            OP_CAS => Op::Cas {
                key: r.string("key")?,
                expected: match r.u8("expected")? {
                    0 => None,
                    1 => Some(r.string("expected")?),
                    tag => return Err(ChatError::BadOptionTag(tag)),
                },
                new: r.string("new")?,
            },
            tag => return Err(ChatError::UnknownOp(tag)),
        };
        if !r.rest.is_empty() {
            return Err(ChatError::TrailingBytes(r.rest.len()));
        }
        Ok(Command {
            origin,
            timestamp_ms,
            op,
        })
    }
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    let mut bytes = [0u8; 8];
    BigEndian::write_u64(&mut bytes, value);
    out.extend_from_slice(&bytes);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Fields are bounded far below 4 GiB by validation; a longer one could not be proposed
    // anyway (entries are bounded by the log), so saturating only guards the arithmetic.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    debug_assert_eq!(len as usize, s.len(), "string field longer than u32::MAX");
    let mut bytes = [0u8; 4];
    BigEndian::write_u32(&mut bytes, len);
    out.extend_from_slice(&bytes);
    out.extend_from_slice(s.as_bytes());
}

/// A cursor over the input; every read checks the length first.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ChatError> {
        if self.rest.len() < n {
            return Err(ChatError::Truncated { field });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ChatError> {
        Ok(self.take(1, field)?[0])
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, ChatError> {
        Ok(BigEndian::read_u64(self.take(8, field)?))
    }

    fn string(&mut self, field: &'static str) -> Result<String, ChatError> {
        let len = BigEndian::read_u32(self.take(4, field)?) as usize;
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| ChatError::NotUtf8 { field })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn origin() -> Origin {
        Origin {
            node: 2,
            req: 0xdead_beef_0000_0001,
        }
    }

    fn samples() -> Vec<Command> {
        let ops = vec![
            Op::Post {
                room: "general".into(),
                nick: "alice".into(),
                text: "Hello, Raft!".into(),
            },
            Op::Post {
                room: "r".into(),
                nick: "".into(),
                text: "ünïcødé ✓ 🚀".into(),
            },
            Op::CreateRoom {
                room: "rust".into(),
            },
            Op::Set {
                key: "color".into(),
                value: "light blue".into(),
            },
            Op::Set {
                key: "empty".into(),
                value: "".into(),
            },
            Op::Del {
                key: "color".into(),
            },
            Op::Cas {
                key: "lock".into(),
                expected: None,
                new: "n1".into(),
            },
            Op::Cas {
                key: "lock".into(),
                expected: Some("n1".into()),
                new: "".into(),
            },
        ];
        ops.into_iter()
            .enumerate()
            .map(|(i, op)| Command {
                origin: Origin {
                    node: i as u64,
                    req: u64::MAX - i as u64,
                },
                timestamp_ms: 1_700_000_000_000 + i as u64,
                op,
            })
            .collect()
    }

    #[test]
    fn round_trip_every_op() {
        for cmd in samples() {
            let mut out = vec![0xAA]; // encode appends: existing bytes stay
            cmd.encode(&mut out);
            assert_eq!(out[0], 0xAA);
            assert_eq!(out.len() - 1, cmd.encoded_len());
            assert_eq!(out[1], FORMAT_V1);
            assert_eq!(Command::decode(&out[1..]), Ok(cmd));
        }
    }

    #[test]
    fn known_layout() {
        let cmd = Command {
            origin: origin(),
            timestamp_ms: 7,
            op: Op::Del { key: "k".into() },
        };
        let mut out = Vec::new();
        cmd.encode(&mut out);
        let mut want = vec![1];
        want.extend_from_slice(&2u64.to_be_bytes());
        want.extend_from_slice(&0xdead_beef_0000_0001u64.to_be_bytes());
        want.extend_from_slice(&7u64.to_be_bytes());
        want.extend_from_slice(&[4, 0, 0, 0, 1, b'k']);
        assert_eq!(out, want);
    }

    #[test]
    fn every_truncation_and_extension_fails() {
        for cmd in samples() {
            let mut out = Vec::new();
            cmd.encode(&mut out);
            for len in 0..out.len() {
                assert!(
                    Command::decode(&out[..len]).is_err(),
                    "{cmd:?} cut to {len}"
                );
            }
            out.push(0);
            assert_eq!(Command::decode(&out), Err(ChatError::TrailingBytes(1)));
        }
        assert_eq!(Command::decode(&[]), Err(ChatError::Empty));
    }

    #[test]
    fn bad_tags_and_utf8() {
        let mut out = Vec::new();
        samples()[0].encode(&mut out);
        let mut bad = out.clone();
        bad[0] = 2;
        assert_eq!(Command::decode(&bad), Err(ChatError::UnknownVersion(2)));
        let mut bad = out.clone();
        bad[HEADER_BYTES - 1] = 99;
        assert_eq!(Command::decode(&bad), Err(ChatError::UnknownOp(99)));
        let mut bad = out.clone();
        bad[HEADER_BYTES + 4] = 0xFF; // first byte of the room name
        assert_eq!(
            Command::decode(&bad),
            Err(ChatError::NotUtf8 { field: "room" })
        );

        let cas = Command {
            origin: origin(),
            timestamp_ms: 0,
            op: Op::Cas {
                key: "k".into(),
                expected: None,
                new: "v".into(),
            },
        };
        let mut out = Vec::new();
        cas.encode(&mut out);
        out[HEADER_BYTES + 4 + 1] = 2; // the option marker after key "k"
        assert_eq!(Command::decode(&out), Err(ChatError::BadOptionTag(2)));
    }

    #[test]
    fn huge_length_prefix_is_truncation_not_allocation() {
        let mut out = Vec::new();
        Command {
            origin: origin(),
            timestamp_ms: 0,
            op: Op::CreateRoom { room: "x".into() },
        }
        .encode(&mut out);
        out[HEADER_BYTES..HEADER_BYTES + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            Command::decode(&out),
            Err(ChatError::Truncated { field: "room" })
        );
    }

    #[test]
    fn random_bytes_and_mutations_never_panic() {
        let mut rng = SmallRng::seed_from_u64(0x5eed);
        let encoded: Vec<Vec<u8>> = samples()
            .iter()
            .map(|c| {
                let mut out = Vec::new();
                c.encode(&mut out);
                out
            })
            .collect();
        let mut decoded_ok = 0;
        for round in 0..20_000 {
            let data: Vec<u8> = if round % 2 == 0 {
                let len = rng.gen_range(0..64);
                (0..len).map(|_| rng.gen()).collect()
            } else {
                let mut data = encoded[rng.gen_range(0..encoded.len())].clone();
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..data.len());
                    data[at] ^= 1 << rng.gen_range(0..8);
                }
                data
            };
            if let Ok(cmd) = Command::decode(&data) {
                // Whatever decodes must re-encode to exactly the same bytes: one encoding each.
                let mut again = Vec::new();
                cmd.encode(&mut again);
                assert_eq!(again, data);
                decoded_ok += 1;
            }
        }
        // Flips in timestamps and string bodies still decode; the test must exercise both paths.
        assert!(decoded_ok > 0);
    }
}
