//! The JSON messages of the browser's WebSocket: requests decoded into [`WsRequest`], replies
//! and pushes encoded from values the server already has.
//!
//! Parsing uses `serde_json` (as `Value`, no derive): JSON's escapes, surrogate pairs, number
//! forms and nesting limits are exactly where hand-written parsers go wrong, and a vetted one
//! costs one dependency. On top of it this module enforces the protocol: one flat object of
//! string and integer fields, at most [`REQUEST_BYTES_MAX`] bytes, a known `type`, the fields
//! that type needs with the right JSON types, and the same name and text rules as telnet
//! (`chat::validate`). Unknown extra fields are ignored, so clients may add some.
//!
//! Requests (`id` is optional on every one; the reply to a request repeats it):
//!
//! ```text
//! {"type":"msg","room":"general","text":"hi"}      room optional: the current room
//! {"type":"nick","nick":"alice"}
//! {"type":"join","room":"general"}                 '#' before a room name is allowed
//! {"type":"leave","room":"general"}
//! {"type":"rooms"}
//! {"type":"history","room":"general","n":50}       room and n optional
//! ```
//!
//! Server messages: `hello` (on connect), `ack`, `err`, `msg` (a committed message: a reply to
//! `history`'s items and the live push), `rooms`, `history`. See the encoders.
//!
//! Never panics, never does IO, never reads a clock.

use serde_json::{json, Map, Value};

use crate::chat::state::ChatMessage;
use crate::chat::telnet::request::{HISTORY_DEFAULT, HISTORY_MAX};
use crate::chat::time::format_utc;
use crate::chat::validate::{room_name, validate_nick, validate_text};

/// The largest request accepted, in bytes of JSON text.
pub const REQUEST_BYTES_MAX: usize = 16 * 1024;

/// One request from a browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsRequest {
    /// `room: None` posts to the connection's current room.
    Msg {
        room: Option<String>,
        text: String,
    },
    Nick {
        nick: String,
    },
    Join {
        room: String,
    },
    Leave {
        room: String,
    },
    Rooms,
    /// `room: None` is the current room.
    History {
        room: Option<String>,
        n: usize,
    },
}

/// A request with the client's correlation id, if it sent one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub id: Option<u64>,
    pub request: WsRequest,
}

/// A refused request: the id if it could be read (so the `err` reply can carry it) and one
/// human line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub id: Option<u64>,
    pub reason: String,
}

/// Decodes one text message (see the module doc).
pub fn decode_request(text: &str) -> Result<Envelope, DecodeError> {
    let refuse = |id, reason: &str| DecodeError {
        id,
        reason: reason.to_string(),
    };
    if text.len() > REQUEST_BYTES_MAX {
        return Err(refuse(None, "request too large"));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|_| refuse(None, "request is not valid JSON"))?;
    let Value::Object(fields) = value else {
        return Err(refuse(None, "request must be a JSON object"));
    };
    let id = match fields.get("id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or(refuse(None, "id must be a non-negative integer"))?,
        ),
    };
    let request = request_of(&fields).map_err(|reason| DecodeError { id, reason })?;
    Ok(Envelope { id, request })
}

fn request_of(fields: &Map<String, Value>) -> Result<WsRequest, String> {
    let kind = string_field(fields, "type")?.ok_or("missing \"type\"")?;
    Ok(match kind {
        "msg" => {
            let text = string_field(fields, "text")?.ok_or("msg needs \"text\"")?;
            validate_text(text)?;
            WsRequest::Msg {
                room: optional_room(fields)?,
                text: text.to_string(),
            }
        }
        "nick" => {
            let nick = string_field(fields, "nick")?.ok_or("nick needs \"nick\"")?;
            validate_nick(nick)?;
            WsRequest::Nick {
                nick: nick.to_string(),
            }
        }
        "join" => WsRequest::Join {
            room: optional_room(fields)?.ok_or("join needs \"room\"")?,
        },
        "leave" => WsRequest::Leave {
            room: optional_room(fields)?.ok_or("leave needs \"room\"")?,
        },
        "rooms" => WsRequest::Rooms,
        "history" => WsRequest::History {
            room: optional_room(fields)?,
            n: history_count(fields)?,
        },
        other => return Err(format!("unknown type {other:?}")),
    })
}

/// A string field; `Ok(None)` when absent or null, `Err` when of another type.
fn string_field<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("\"{name}\" must be a string")),
    }
}

/// The `room` field, checked and without a leading `#`.
fn optional_room(fields: &Map<String, Value>) -> Result<Option<String>, String> {
    match string_field(fields, "room")? {
        None => Ok(None),
        Some(given) => Ok(Some(room_name(given)?.to_string())),
    }
}

fn history_count(fields: &Map<String, Value>) -> Result<usize, String> {
    let out_of_range = || format!("\"n\" must be an integer from 1 to {HISTORY_MAX}");
    match fields.get("n") {
        None | Some(Value::Null) => Ok(HISTORY_DEFAULT),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=HISTORY_MAX as u64).contains(&n) => Ok(n as usize),
            _ => Err(out_of_range()),
        },
    }
}

/// Adds `"id"` to a reply when the request had one.
fn with_id(mut value: Value, id: Option<u64>) -> String {
    if let (Some(id), Value::Object(fields)) = (id, &mut value) {
        fields.insert("id".into(), id.into());
    }
    value.to_string()
}

fn utc(timestamp_ms: u64) -> String {
    let mut out = Vec::new();
    format_utc(timestamp_ms, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn message_value(msg: &ChatMessage) -> Value {
    json!({
        "type": "msg",
        "pos": msg.position,
        "time": utc(msg.timestamp_ms),
        "room": msg.room,
        "nick": msg.nick,
        "text": msg.text,
    })
}

/// The first message on a connection: which node this is and the members' client addresses
/// (`host:port`), for reconnecting elsewhere.
pub fn encode_hello(node: u64, members: &[String]) -> String {
    json!({"type": "hello", "node": node, "members": members}).to_string()
}

/// A committed message, as a live push or inside `history`.
pub fn encode_message(msg: &ChatMessage) -> String {
    message_value(msg).to_string()
}

/// Success of a request; `fields` adds what the request produced (`pos` of a posted message,
/// the new `nick`, the joined `room`).
pub fn encode_ack(id: Option<u64>, request: &str, fields: &[(&str, Value)]) -> String {
    let mut value = json!({"type": "ack", "req": request});
    if let Value::Object(map) = &mut value {
        for (name, field) in fields {
            map.insert((*name).into(), field.clone());
        }
    }
    with_id(value, id)
}

/// A refused or failed request, with one human line.
pub fn encode_err(id: Option<u64>, reason: &str) -> String {
    with_id(json!({"type": "err", "reason": reason}), id)
}

/// The rooms and how many messages each keeps.
pub fn encode_rooms(id: Option<u64>, rooms: &[(&str, u64)]) -> String {
    let list: Vec<Value> = rooms
        .iter()
        .map(|(name, messages)| json!({"name": name, "messages": messages}))
        .collect();
    with_id(json!({"type": "rooms", "rooms": list}), id)
}

/// A room's latest messages, oldest first.
pub fn encode_history(id: Option<u64>, room: &str, messages: &[ChatMessage]) -> String {
    let list: Vec<Value> = messages.iter().map(message_value).collect();
    with_id(
        json!({"type": "history", "room": room, "messages": list}),
        id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> Result<WsRequest, String> {
        decode_request(text)
            .map(|e| e.request)
            .map_err(|e| e.reason)
    }

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text).expect("encoders write valid JSON")
    }

    fn message() -> ChatMessage {
        ChatMessage {
            position: 12,
            index: 40,
            room: "general".into(),
            nick: "alice".into(),
            text: "hi \"there\"\n\u{1}\u{1F600}".into(),
            timestamp_ms: 86_400_000 + 3_723_000,
        }
    }

    #[test]
    fn requests_decode() {
        let msg = decode(r##"{"type":"msg","room":"#general","text":"hi"}"##);
        let expected = WsRequest::Msg {
            room: Some("general".into()),
            text: "hi".into(),
        };
        assert_eq!(msg, Ok(expected));
        let current = decode(r#"{"type":"msg","text":"hi","extra":[1,{"x":2}]}"#);
        let expected = WsRequest::Msg {
            room: None,
            text: "hi".into(),
        };
        assert_eq!(current, Ok(expected));
        let nick = decode(r#"{"type":"nick","nick":"alice"}"#);
        assert_eq!(
            nick,
            Ok(WsRequest::Nick {
                nick: "alice".into()
            })
        );
        let join = decode(r#"{"type":"join","room":"rust"}"#);
        assert_eq!(
            join,
            Ok(WsRequest::Join {
                room: "rust".into()
            })
        );
        let leave = decode(r#"{"type":"leave","room":"rust"}"#);
        assert_eq!(
            leave,
            Ok(WsRequest::Leave {
                room: "rust".into()
            })
        );
        assert_eq!(decode(r#"{"type":"rooms"}"#), Ok(WsRequest::Rooms));
        let history = decode(r#"{"type":"history","n":5}"#);
        assert_eq!(history, Ok(WsRequest::History { room: None, n: 5 }));
        let default = decode(r#"{"type":"history","room":"a"}"#);
        let expected = WsRequest::History {
            room: Some("a".into()),
            n: HISTORY_DEFAULT,
        };
        assert_eq!(default, Ok(expected));
    }

    #[test]
    fn escapes_and_surrogate_pairs_decode() {
        let text = r#"{"type":"msg","text":"a\"b\\c\/d\u00e9\ud83d\ude00 e"}"#;
        let expected = WsRequest::Msg {
            room: None,
            text: "a\"b\\c/dé\u{1F600} e".into(),
        };
        assert_eq!(decode(text), Ok(expected));
        // Escaped control characters decode, and then the chat rules refuse them as in telnet.
        assert!(decode(r#"{"type":"msg","text":"a\u0001b"}"#).is_err());
        // A lone surrogate is not a character.
        assert!(decode(r#"{"type":"msg","text":"\ud83d"}"#).is_err());
    }

    #[test]
    fn ids_are_kept_even_on_refusal() {
        let ok = decode_request(r#"{"type":"rooms","id":7}"#).unwrap();
        assert_eq!(ok.id, Some(7));
        let err = decode_request(r#"{"type":"nope","id":9}"#).unwrap_err();
        assert_eq!(err.id, Some(9));
        assert!(err.reason.contains("unknown type"), "{}", err.reason);
        assert!(decode_request(r#"{"type":"rooms","id":-1}"#).is_err());
        assert!(decode_request(r#"{"type":"rooms","id":"7"}"#).is_err());
    }

    #[test]
    fn bad_requests_are_refused_with_reasons() {
        let cases = [
            ("", "not valid JSON"),
            ("[1,2]", "JSON object"),
            ("{\"type\":\"msg\"", "not valid JSON"),
            (r#"{"text":"hi"}"#, "missing \"type\""),
            (r#"{"type":1}"#, "\"type\" must be a string"),
            (r#"{"type":"msg"}"#, "needs \"text\""),
            (r#"{"type":"msg","text":5}"#, "\"text\" must be a string"),
            (
                r#"{"type":"msg","text":"hi","room":{"a":1}}"#,
                "\"room\" must be a string",
            ),
            (r#"{"type":"join"}"#, "needs \"room\""),
            (r#"{"type":"history","n":0}"#, "\"n\" must be"),
            (r#"{"type":"history","n":1.5}"#, "\"n\" must be"),
            (r#"{"type":"history","n":100000}"#, "\"n\" must be"),
        ];
        for (text, expected) in cases {
            let reason = decode(text).unwrap_err();
            assert!(reason.contains(expected), "{text}: {reason}");
        }
        // The chat rules apply as in telnet.
        assert!(decode(r#"{"type":"nick","nick":"has space"}"#).is_err());
        assert!(decode(r#"{"type":"msg","text":""}"#).is_err());
        assert!(decode(r#"{"type":"join","room":"a b"}"#).is_err());
    }

    #[test]
    fn size_and_depth_are_bounded() {
        let huge = format!(
            r#"{{"type":"msg","text":"{}"}}"#,
            "a".repeat(REQUEST_BYTES_MAX)
        );
        assert_eq!(decode(&huge).unwrap_err(), "request too large");
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        let deep = format!(r#"{{"type":"rooms","x":{deep}}}"#);
        assert!(
            decode(&deep).is_err(),
            "nesting past serde_json's limit is refused"
        );
    }

    #[test]
    fn random_text_never_panics() {
        let alphabet: Vec<char> = "{}[]\":,\\u0123456789abcdeftypemsgnrl -.\u{e9}\u{1F600}"
            .chars()
            .collect();
        let mut seed = 0x1234_5678_9abc_def1u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 60) as usize;
            let text: String = (0..len)
                .map(|i| alphabet[((seed >> (i % 50)) as usize + i * 7) % alphabet.len()])
                .collect();
            let _ = decode_request(&text);
        }
    }

    #[test]
    fn messages_encode_with_escapes() {
        let text = encode_message(&message());
        assert!(
            text.contains(r#""text":"hi \"there\"\n\u0001😀""#),
            "{text}"
        );
        let value = parsed(&text);
        assert_eq!(value["type"], "msg");
        assert_eq!(value["pos"], 12);
        assert_eq!(value["time"], "1970-01-02T01:02:03Z");
        assert_eq!(value["room"], "general");
        assert_eq!(value["nick"], "alice");
        assert_eq!(value["text"], message().text.as_str());
    }

    #[test]
    fn replies_encode() {
        let hello = parsed(&encode_hello(
            2,
            &["127.0.0.1:20000".into(), "127.0.0.1:20001".into()],
        ));
        assert_eq!(
            hello,
            json!({"type":"hello","node":2,"members":["127.0.0.1:20000","127.0.0.1:20001"]})
        );
        let ack = parsed(&encode_ack(Some(3), "msg", &[("pos", json!(12))]));
        assert_eq!(ack, json!({"type":"ack","req":"msg","pos":12,"id":3}));
        let ack = parsed(&encode_ack(None, "nick", &[("nick", json!("bob"))]));
        assert_eq!(ack, json!({"type":"ack","req":"nick","nick":"bob"}));
        let err = parsed(&encode_err(Some(4), "no such room"));
        assert_eq!(err, json!({"type":"err","reason":"no such room","id":4}));
        let rooms = parsed(&encode_rooms(None, &[("general", 3), ("rust", 0)]));
        let expected = json!({"type":"rooms","rooms":[{"name":"general","messages":3},{"name":"rust","messages":0}]});
        assert_eq!(rooms, expected);
        let history = parsed(&encode_history(Some(5), "general", &[message()]));
        assert_eq!(history["type"], "history");
        assert_eq!(history["id"], 5);
        assert_eq!(history["room"], "general");
        assert_eq!(history["messages"][0], parsed(&encode_message(&message())));
    }
}
