//! The rules for nicks, room names, message texts, keys and values.
//!
//! One set of rules, checked twice: by the telnet parser, so a client hears about a mistake at
//! once, and by the state machine at apply time, so a bad proposal (from a buggy or foreign
//! client, or an older node) is rejected identically on every node. Each error is one line that
//! says what to do; the server sends it as `err <reason>`.
//!
//! Names are ASCII on purpose: the state machine must judge a name the same way on every node,
//! and `char::is_alphanumeric` follows the Unicode tables of whichever Rust built the binary.

/// Longest nick, in characters (ASCII, so also bytes).
pub const NICK_CHARS_MAX: usize = 32;
/// Longest room name without its `#`, in characters (ASCII, so also bytes).
pub const ROOM_CHARS_MAX: usize = 32;
/// Longest chat message text, in bytes of UTF-8.
pub const TEXT_BYTES_MAX: usize = 4096;
/// Longest key-value key, in bytes of UTF-8.
pub const KEY_BYTES_MAX: usize = 256;
/// Longest key-value value, in bytes of UTF-8.
pub const VALUE_BYTES_MAX: usize = 4096;
/// `get chatLog` reads the chat log, so no key-value key may be spelled `chatLog` in any letter
/// case: `set chatLog x` is refused rather than stored where `get` could never reach it.
pub const RESERVED_KEY: &str = "chatLog";

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

fn is_name(s: &str, chars_max: usize) -> bool {
    !s.is_empty() && s.len() <= chars_max && s.chars().all(is_name_char)
}

pub fn validate_nick(nick: &str) -> Result<(), String> {
    if is_name(nick, NICK_CHARS_MAX) {
        Ok(())
    } else {
        Err(format!(
            "bad nick '{}': use 1-{NICK_CHARS_MAX} letters, digits, '-' or '_', e.g. nick alice",
            shown(nick)
        ))
    }
}

/// Shortest password, in bytes.
pub const PASSWORD_BYTES_MIN: usize = 6;
/// Longest password, in bytes (argon2 takes any length; this bounds the worker's input).
pub const PASSWORD_BYTES_MAX: usize = 128;
/// Longest stored password hash (an argon2 PHC string is about 100 bytes).
pub const PASSWORD_HASH_BYTES_MAX: usize = 256;

/// A password as typed: one word of 6-128 bytes (the telnet parser splits on blanks).
pub fn validate_password(password: &str) -> Result<(), String> {
    if (PASSWORD_BYTES_MIN..=PASSWORD_BYTES_MAX).contains(&password.len()) {
        Ok(())
    } else {
        Err(format!(
            "bad password: use {PASSWORD_BYTES_MIN}-{PASSWORD_BYTES_MAX} bytes with no spaces"
        ))
    }
}

/// A stored password hash: an argon2 PHC string (`$argon2id$v=19$...`), printable ASCII. Apply
/// checks only its shape (it never hashes); the hash was computed by the proposing node.
pub fn validate_password_hash(hash: &str) -> Result<(), String> {
    let shaped = hash.starts_with("$argon2")
        && hash.len() <= PASSWORD_HASH_BYTES_MAX
        && hash.bytes().all(|b| b.is_ascii_graphic());
    if shaped {
        Ok(())
    } else {
        Err("bad password hash: not an argon2 PHC string".to_string())
    }
}

/// Checks a room name as stored: without its `#`.
pub fn validate_room(room: &str) -> Result<(), String> {
    if is_name(room, ROOM_CHARS_MAX) {
        Ok(())
    } else {
        Err(format!(
            "bad room name '{}': use 1-{ROOM_CHARS_MAX} letters, digits, '-' or '_', e.g. join #general",
            shown(room)
        ))
    }
}

/// A room name as a client types it, with or without one leading `#`, to the stored name.
pub fn room_name(given: &str) -> Result<&str, String> {
    let room = given.strip_prefix('#').unwrap_or(given);
    validate_room(room).map(|()| room)
}

pub fn validate_text(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("empty message: type msg <text>".to_string());
    }
    if text.len() > TEXT_BYTES_MAX {
        return Err(format!(
            "message is {} bytes; the limit is {TEXT_BYTES_MAX}: split it into several messages",
            text.len()
        ));
    }
    if has_control(text) {
        return Err(
            "message contains control characters (tabs included): send plain text".to_string(),
        );
    }
    Ok(())
}

/// `char::is_control` over the whole string, with a byte-wise fast path for ASCII text (the
/// common case, and on every apply's hot path): ASCII controls are 0x00-0x1F and 0x7F. The
/// fast path folds each chunk without an early exit, which the compiler vectorizes; it made
/// `validate_text` the top symbol of a 64 × 64 load profile when it stopped at every byte.
fn has_control(text: &str) -> bool {
    if text.is_ascii() {
        text.as_bytes().chunks(64).any(|chunk| {
            chunk.iter().fold(0u8, |acc, &b| {
                acc | u8::from(b < 0x20) | u8::from(b == 0x7f)
            }) != 0
        })
    } else {
        text.chars().any(char::is_control)
    }
}

/// Control characters or whitespace (`char::is_whitespace`; in ASCII that is a space or a
/// control character).
fn has_control_or_space(text: &str) -> bool {
    if text.is_ascii() {
        has_control(text) || text.as_bytes().contains(&b' ')
    } else {
        text.chars().any(|c| c.is_whitespace() || c.is_control())
    }
}

pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return Err(format!(
            "bad key: use 1-{KEY_BYTES_MAX} bytes with no spaces or control characters, e.g. set color blue"
        ));
    }
    if has_control_or_space(key) {
        return Err(format!(
            "bad key '{}': keys have no spaces or control characters, e.g. set color blue",
            shown(key)
        ));
    }
    if key.eq_ignore_ascii_case(RESERVED_KEY) {
        return Err(format!(
            "key '{key}' is reserved: get {RESERVED_KEY} reads the chat log; choose another key"
        ));
    }
    Ok(())
}

/// A `keys` prefix: like a key, but may be empty (all keys) and may be a prefix of `chatLog`.
pub fn validate_key_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > KEY_BYTES_MAX || has_control_or_space(prefix) {
        return Err(format!(
            "bad key prefix: use at most {KEY_BYTES_MAX} bytes with no spaces or control characters, e.g. keys user-"
        ));
    }
    Ok(())
}

/// Values may be empty and may contain spaces; no control characters, so a value prints on one line.
pub fn validate_value(value: &str) -> Result<(), String> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(format!(
            "value is {} bytes; the limit is {VALUE_BYTES_MAX}: store a shorter value",
            value.len()
        ));
    }
    if has_control(value) {
        return Err(
            "value contains control characters (tabs included): send plain text".to_string(),
        );
    }
    Ok(())
}

/// A name quoted back in an error: cut short and stripped of control characters, so an error
/// line stays one short line whatever the client sent.
fn shown(s: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 40;
    let mut out: String = s
        .chars()
        .filter(|c| !c.is_control())
        .take(SHOWN_CHARS_MAX)
        .collect();
    if s.chars().count() > SHOWN_CHARS_MAX {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicks() {
        assert!(validate_nick("alice").is_ok());
        assert!(validate_nick("Bob_2-x").is_ok());
        assert!(validate_nick(&"a".repeat(NICK_CHARS_MAX)).is_ok());
        assert!(validate_nick(&"a".repeat(NICK_CHARS_MAX + 1)).is_err());
        assert!(validate_nick("").is_err());
        assert!(validate_nick("al ice").is_err());
        assert!(validate_nick("#alice").is_err());
        assert!(
            validate_nick("élise").is_err(),
            "names are ASCII so every node judges alike"
        );
        let reason = validate_nick("a b").unwrap_err();
        assert!(reason.contains("nick alice"), "{reason}");
    }

    #[test]
    fn rooms_with_or_without_hash() {
        assert_eq!(room_name("#general"), Ok("general"));
        assert_eq!(room_name("general"), Ok("general"));
        assert!(room_name("##general").is_err());
        assert!(room_name("#").is_err());
        assert!(room_name("").is_err());
        assert!(room_name(&"r".repeat(ROOM_CHARS_MAX)).is_ok());
        assert!(room_name(&format!("#{}", "r".repeat(ROOM_CHARS_MAX))).is_ok());
        assert!(room_name(&"r".repeat(ROOM_CHARS_MAX + 1)).is_err());
        assert!(
            validate_room("#general").is_err(),
            "stored names carry no '#'"
        );
        assert!(room_name("a.b").unwrap_err().contains("join #general"));
    }

    #[test]
    fn fast_paths_agree_with_char_rules() {
        // Every ASCII byte at the start, in the middle and at the end of strings around the
        // 64-byte chunk size, plus non-ASCII text that takes the slow path.
        for len in [1, 2, 63, 64, 65, 100, 128, 130] {
            for at in [0, len / 2, len - 1] {
                for b in 0u8..=127 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    let s = std::str::from_utf8(&bytes).expect("ASCII");
                    assert_eq!(has_control(s), s.chars().any(char::is_control), "{bytes:?}");
                    assert_eq!(
                        has_control_or_space(s),
                        s.chars().any(|c| c.is_whitespace() || c.is_control()),
                        "{bytes:?}"
                    );
                }
            }
        }
        for s in ["héllo", "a\u{85}b", "a\u{a0}b", "日本語", "x\u{2028}"] {
            assert_eq!(has_control(s), s.chars().any(char::is_control), "{s}");
            assert_eq!(
                has_control_or_space(s),
                s.chars().any(|c| c.is_whitespace() || c.is_control()),
                "{s}"
            );
        }
    }

    #[test]
    fn texts() {
        assert!(validate_text("Hello, Raft!").is_ok());
        assert!(validate_text("héllo wörld ✓").is_ok());
        assert!(validate_text(&"x".repeat(TEXT_BYTES_MAX)).is_ok());
        assert!(validate_text(&"x".repeat(TEXT_BYTES_MAX + 1)).is_err());
        assert!(validate_text("").is_err());
        assert!(validate_text("a\tb").is_err());
        assert!(validate_text("a\u{1b}[31mred").is_err());
        assert!(validate_text("a\u{85}b").is_err(), "C1 controls too");
    }

    #[test]
    fn keys_and_values() {
        assert!(validate_key("color").is_ok());
        assert!(validate_key("user/42:name").is_ok());
        assert!(validate_key(&"k".repeat(KEY_BYTES_MAX)).is_ok());
        assert!(validate_key(&"k".repeat(KEY_BYTES_MAX + 1)).is_err());
        assert!(validate_key("").is_err());
        assert!(validate_key("a b").is_err());
        assert!(validate_key("a\u{7f}").is_err());
        assert!(validate_key("chatLog").unwrap_err().contains("reserved"));
        assert!(validate_key("CHATLOG").is_err());
        assert!(validate_key("chatLog2").is_ok());
        assert!(validate_key_prefix("").is_ok());
        assert!(validate_key_prefix("chat").is_ok());
        assert!(validate_key_prefix("a b").is_err());
        assert!(validate_value("").is_ok());
        assert!(validate_value("hello world").is_ok());
        assert!(validate_value(&"v".repeat(VALUE_BYTES_MAX)).is_ok());
        assert!(validate_value(&"v".repeat(VALUE_BYTES_MAX + 1)).is_err());
        assert!(validate_value("a\nb").is_err());
    }

    #[test]
    fn errors_quote_names_safely() {
        let long = "x".repeat(1000) + "!";
        let reason = validate_room(&long).unwrap_err();
        assert!(reason.len() < 200, "{reason}");
        let reason = validate_nick("a\u{1b}b!").unwrap_err();
        assert!(!reason.chars().any(char::is_control), "{reason}");
    }
}
