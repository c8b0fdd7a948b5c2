//! The chat messages a `HistoryPage` frame carries: a follower that received a snapshot whose
//! messages live in the message store fetches the ones its store lacks from the sender.
//!
//! It owns the byte layout of one message in a page (big-endian, built from `crate::codec`):
//!
//! ```text
//! message = position u64 | index u64 | timestamp_ms u64 | room str16 | nick str16 | text str32
//! ```
//!
//! Decoding trusts nothing: every length is checked against what remains before anything is
//! taken, strings must be UTF-8 and within the chat's limits, the positions must be exactly
//! `first_position`, `first_position + 1`, ... for `count` messages, and no byte may be left
//! over. It never panics and never reserves memory on behalf of a count it has not seen bytes
//! for. It never touches a store or a socket.

use crate::chat::validate::{NICK_CHARS_MAX, ROOM_CHARS_MAX, TEXT_BYTES_MAX};
use crate::chat::ChatMessage;
use crate::codec::{put_bytes16_be, put_bytes32_be, put_u64_be, ReaderBe};

/// The fixed fields of one encoded message and its three length prefixes.
pub const HISTORY_MESSAGE_MIN_BYTES: usize = 3 * 8 + 2 + 2 + 4;

/// Bytes `encode_history_message` writes for `m`.
pub fn history_message_bytes(m: &ChatMessage) -> usize {
    HISTORY_MESSAGE_MIN_BYTES + m.room.len() + m.nick.len() + m.text.len()
}

/// Whether `m` can travel in a page (the decoder's limits); a leader never sends one that
/// cannot.
pub fn history_message_fits(m: &ChatMessage) -> bool {
    m.room.chars().count() <= ROOM_CHARS_MAX
        && m.nick.chars().count() <= NICK_CHARS_MAX
        && m.text.len() <= TEXT_BYTES_MAX
}

/// Appends one message in the page layout.
pub fn encode_history_message(m: &ChatMessage, out: &mut Vec<u8>) {
    put_u64_be(out, m.position);
    put_u64_be(out, m.index);
    put_u64_be(out, m.timestamp_ms);
    put_bytes16_be(out, m.room.as_bytes());
    put_bytes16_be(out, m.nick.as_bytes());
    put_bytes32_be(out, m.text.as_bytes());
}

/// The `count` messages in `data`, which must be exactly positions `first_position..` in order;
/// `Err` says what was wrong, for the log.
pub fn decode_history_messages(
    data: &[u8],
    first_position: u64,
    count: u32,
) -> Result<Vec<ChatMessage>, String> {
    let count = count as usize;
    if count == 0 {
        return Err("an empty page".into());
    }
    if count > data.len() / HISTORY_MESSAGE_MIN_BYTES {
        return Err(format!(
            "{count} messages cannot fit in {} bytes",
            data.len()
        ));
    }
    let mut r = ReaderBe::new(data);
    let mut out = Vec::with_capacity(count);
    for k in 0..count as u64 {
        let expected = first_position
            .checked_add(k)
            .ok_or_else(|| "positions overflow".to_string())?;
        let field = |e: crate::codec::CodecError| format!("message {k}: {e}");
        let position = r.u64("position").map_err(field)?;
        if position != expected {
            return Err(format!(
                "message {k} has position {position}, expected {expected}"
            ));
        }
        let index = r.u64("index").map_err(field)?;
        let timestamp_ms = r.u64("timestamp").map_err(field)?;
        let room = r.str16("room").map_err(field)?;
        let nick = r.str16("nick").map_err(field)?;
        let text = r.str32("text").map_err(field)?;
        let m = ChatMessage {
            position,
            index,
            room: room.to_string(),
            nick: nick.to_string(),
            text: text.to_string(),
            timestamp_ms,
        };
        if !history_message_fits(&m) {
            return Err(format!(
                "message at position {position} exceeds the chat's limits"
            ));
        }
        out.push(m);
    }
    r.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn message(position: u64, text: &str) -> ChatMessage {
        ChatMessage {
            position,
            index: position + 10,
            room: "#général".into(),
            nick: "ann".into(),
            text: text.into(),
            timestamp_ms: 1_700_000_000_000 + position,
        }
    }

    fn encode(messages: &[ChatMessage]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            encode_history_message(m, &mut out);
        }
        out
    }

    #[test]
    fn messages_round_trip_with_their_exact_size() {
        let messages: Vec<ChatMessage> = (5..9)
            .map(|p| message(p, &"é".repeat(p as usize)))
            .collect();
        let data = encode(&messages);
        let size: usize = messages.iter().map(history_message_bytes).sum();
        assert_eq!(data.len(), size);
        assert_eq!(decode_history_messages(&data, 5, 4), Ok(messages));
    }

    #[test]
    fn wrong_positions_counts_and_bytes_are_refused() {
        let messages: Vec<ChatMessage> = (5..8).map(|p| message(p, "hi")).collect();
        let data = encode(&messages);
        assert!(
            decode_history_messages(&data, 4, 3).is_err(),
            "first position"
        );
        assert!(
            decode_history_messages(&data, 5, 2).is_err(),
            "trailing bytes"
        );
        assert!(decode_history_messages(&data, 5, 4).is_err(), "too many");
        assert!(decode_history_messages(&data, 5, 0).is_err(), "empty");
        assert!(
            decode_history_messages(&data, 5, u32::MAX).is_err(),
            "huge count"
        );
        let gap = encode(&[message(5, "a"), message(7, "b")]);
        assert!(decode_history_messages(&gap, 5, 2).is_err(), "a gap");
        let mut bad_utf8 = encode(&[message(5, "ab")]);
        let at = bad_utf8.len() - 1;
        bad_utf8[at] = 0xFF;
        assert!(decode_history_messages(&bad_utf8, 5, 1).is_err());
        let long = encode(&[message(5, &"x".repeat(TEXT_BYTES_MAX + 1))]);
        assert!(
            decode_history_messages(&long, 5, 1).is_err(),
            "over the limit"
        );
        let near_max = encode(&[message(u64::MAX, "a")]);
        assert!(decode_history_messages(&near_max, u64::MAX, 1).is_ok());
    }

    /// Garbage, and valid pages cut or with bytes flipped: never a panic; whatever is accepted
    /// re-encodes to the same bytes.
    #[test]
    fn garbage_never_panics() {
        let mut rng = SmallRng::seed_from_u64(20);
        let valid = encode(&(1..6).map(|p| message(p, "hello")).collect::<Vec<_>>());
        for _ in 0..20_000 {
            let mut data = if rng.gen_bool(0.5) {
                (0..rng.gen_range(0..300))
                    .map(|_| rng.gen())
                    .collect::<Vec<u8>>()
            } else {
                let mut v = valid.clone();
                v.truncate(rng.gen_range(0..=v.len()));
                v
            };
            if !data.is_empty() && rng.gen_bool(0.5) {
                let at = rng.gen_range(0..data.len());
                data[at] ^= 1 << rng.gen_range(0..8);
            }
            let count = rng.gen_range(0..8);
            if let Ok(messages) = decode_history_messages(&data, 1, count) {
                assert_eq!(encode(&messages), data);
            }
        }
    }
}
