//! The WebSocket session's account commands, as JSON text messages:
//!
//! ```text
//! {"type":"register","nick":"alice","password":"s3cret-pw","id":1}
//! {"type":"login","nick":"alice","password":"s3cret-pw","id":2}
//! {"type":"passwd","old":"s3cret-pw","new":"n3w-pw-12","id":3}
//! {"type":"logout","id":4}
//! ```
//!
//! answered `{"type":"ack","request":"login","nick":"alice","id":2}` or `{"type":"err",...}`
//! like every other request. It only decodes; `frontend/web.rs` runs them through
//! `server::logins` exactly as telnet does. The chat requests' decoder (`web::json`) never
//! sees these: [`decode`] answers `None` for any other `type`, and the message goes on there.

use serde_json::{Map, Value};

/// An account request from a WebSocket session.
#[derive(Debug, PartialEq, Eq)]
pub enum WsAccount {
    Register { nick: String, password: String },
    Login { nick: String, password: String },
    Passwd { old: String, new: String },
    Logout,
}

impl WsAccount {
    /// The request's `type`, for the `ack`.
    pub fn name(&self) -> &'static str {
        match self {
            WsAccount::Register { .. } => "register",
            WsAccount::Login { .. } => "login",
            WsAccount::Passwd { .. } => "passwd",
            WsAccount::Logout => "logout",
        }
    }
}

/// The account types; a message naming none of them is not ours.
const TYPES: [&str; 4] = ["register", "login", "passwd", "logout"];

/// `None`: not an account request (or not JSON at all: the chat decoder says why). `Some(Err)`:
/// an account request with a bad field, with the id if it could be read.
#[allow(clippy::type_complexity)]
pub fn decode(text: &str) -> Option<Result<(Option<u64>, WsAccount), (Option<u64>, String)>> {
    // Most messages are `msg`s: skip the second parse unless a type name appears at all.
    if !TYPES.iter().any(|t| text.contains(t)) {
        return None;
    }
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    let kind = fields.get("type").and_then(Value::as_str)?;
    if !TYPES.contains(&kind) {
        return None;
    }
    let id = match fields.get("id") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(id) => Some(id),
            None => return Some(Err((None, "id must be a non-negative integer".into()))),
        },
    };
    Some(
        account_of(kind, &fields)
            .map(|a| (id, a))
            .map_err(|e| (id, e)),
    )
}

fn account_of(kind: &str, fields: &Map<String, Value>) -> Result<WsAccount, String> {
    let field = |name: &str| -> Result<String, String> {
        match fields.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) => Err(format!("{kind} needs \"{name}\"")),
            Some(_) => Err(format!("\"{name}\" must be a string")),
        }
    };
    Ok(match kind {
        "register" => WsAccount::Register {
            nick: field("nick")?,
            password: field("password")?,
        },
        "login" => WsAccount::Login {
            nick: field("nick")?,
            password: field("password")?,
        },
        "passwd" => WsAccount::Passwd {
            old: field("old")?,
            new: field("new")?,
        },
        _ => WsAccount::Logout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_requests_decode_and_others_pass_through() {
        let login = r#"{"type":"login","nick":"alice","password":"s3cret-pw","id":7}"#;
        let expected = WsAccount::Login {
            nick: "alice".into(),
            password: "s3cret-pw".into(),
        };
        assert_eq!(decode(login), Some(Ok((Some(7), expected))));
        assert_eq!(
            decode(r#"{"type":"logout"}"#),
            Some(Ok((None, WsAccount::Logout)))
        );
        let missing = decode(r#"{"type":"register","nick":"bob","id":2}"#);
        assert_eq!(
            missing,
            Some(Err((Some(2), "register needs \"password\"".into())))
        );
        // A chat message that only mentions a type name is the chat decoder's.
        assert_eq!(decode(r#"{"type":"msg","text":"please login"}"#), None);
        assert_eq!(decode("not json login"), None);
        assert_eq!(decode(r#"{"type":"nick","nick":"x"}"#), None);
    }
}
