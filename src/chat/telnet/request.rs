//! One line to one [`Request`]: the telnet command language, and its help text.
//!
//! The parser checks everything it can without the state (names, lengths, characters, through
//! `validate`), so a typo is answered at once with a reason that says what to do, and only
//! well-formed requests reach Raft. It never decides anything that depends on the state (does
//! the room exist?); the state machine does that, identically on every node.
//!
//! Conventions:
//! - Command words are ASCII case-insensitive (`MSG hi` works); arguments keep their case.
//! - Words are separated by spaces or tabs; leading and trailing blanks of a line are ignored.
//! - Room names may be written with or without `#` (`join rust`, `join #rust`) and are returned
//!   without it. In `msg #room <text>` the `#` is what marks a room: `msg rust is fun` posts
//!   "rust is fun" to the current room.
//! - `get chatLog` is the chat log (the seed's command). The key-value store therefore refuses
//!   the key `chatLog` in any letter case (`validate::RESERVED_KEY`), and `get ChatLog` also
//!   reads the chat log.
//! - `set <key> <value>`: the value is the rest of the line, spaces included.
//! - `cas <key> <expected> <new>`: `-` as `<expected>` means "the key must be absent". A
//!   one-word expected value is written as is; one with spaces, or one that is literally `-`, is
//!   written in double quotes, with `\"` and `\\` inside (`cas k "hello world" bye`,
//!   `cas k "-" x`). `<new>` is the rest of the line, as for `set`.

use super::framing::strip_telnet;
use crate::chat::validate::{
    room_name, validate_key, validate_key_prefix, validate_nick, validate_password, validate_text,
    validate_value, RESERVED_KEY,
};

/// `history` without a count shows this many messages.
pub const HISTORY_DEFAULT: usize = 20;
/// The most messages one `history` shows (use `get chatLog` for everything).
pub const HISTORY_MAX: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `msg <text>` (current room) or `msg #room <text>`.
    Msg {
        room: Option<String>,
        text: String,
    },
    /// `get chatLog`: the whole chat log, every room.
    GetChatLog,
    /// `history [#room] [n]`; `room: None` is the current room.
    History {
        room: Option<String>,
        n: usize,
    },
    Nick(String),
    Join(String),
    Leave(String),
    Rooms,
    Set {
        key: String,
        value: String,
    },
    Get {
        key: String,
    },
    Del {
        key: String,
    },
    /// `keys [prefix]`; an empty prefix lists every key.
    Keys {
        prefix: String,
    },
    /// `expected: None` means the key must be absent.
    Cas {
        key: String,
        expected: Option<String>,
        new: String,
    },
    Help,
    Status,
    Quit,
    /// `transfer <node>`: ask the leader to hand leadership to `to`.
    Transfer {
        to: u64,
    },
    /// `members`: one `member <id> <host:port> voter|learner` line per member, then `end`.
    Members,
    /// `add <id> <host:port>`: add a learner at that address (membership change).
    AddMember {
        id: u64,
        addr: String,
    },
    /// `promote <id>`: make a caught-up learner a voter.
    PromoteMember {
        id: u64,
    },
    /// `remove <id>`: take a member out for good (its id is never reused).
    RemoveMember {
        id: u64,
    },
    /// `register <nick> <password>`: create an account (and log in to it).
    Register {
        nick: String,
        password: String,
    },
    /// `login <nick> <password>`: bind this connection to an account.
    Login {
        nick: String,
        password: String,
    },
    /// `logout`: unbind the connection from its account.
    Logout,
    /// `passwd <old> <new>`: change the logged-in account's password.
    Passwd {
        old: String,
        new: String,
    },
    /// Room owners, on the current room: `op <nick>`, `kick <nick>`, `invite <nick>`.
    RoomOp(String),
    Kick(String),
    Invite(String),
    /// `topic` shows the current room's topic; `topic <text>` (owners) sets it.
    Topic(Option<String>),
    /// `private`: the current room admits only owners and invited nicks.
    Private,
}

/// Parses one line, given without its terminator. Strips a trailing `\r` and any telnet
/// negotiation. `Err` is one human line saying what was wrong and what to type instead; the
/// server sends it as `err <reason>`. A blank line is an `Err` too (servers may skip blank lines
/// before calling this).
pub fn parse_line(line: &[u8]) -> Result<Request, String> {
    let data = strip_telnet(line);
    let data = data.strip_suffix(b"\r").unwrap_or(&data);
    let text = std::str::from_utf8(data)
        .map_err(|_| "line is not valid UTF-8: send UTF-8 text".to_string())?;
    parse_text(text.trim_matches(is_blank))
}

/// The help text: one line per command with an example, each line starting with `help` and
/// ending in `\r\n`.
pub const HELP_TEXT: &str = concat!(
    "help commands (one per line; <x> is yours to fill in, [x] may be left out):\r\n",
    "help   msg <text>               post to your current room      msg Hello, Raft!\r\n",
    "help   msg #<room> <text>       post to another room           msg #rust hi all\r\n",
    "help   get chatLog              the whole chat log, every room\r\n",
    "help   history [#<room>] [<n>]  last n (20, at most 1000)      history #rust 5\r\n",
    "help   nick <name>              set your nick                  nick alice\r\n",
    "help   join <room>              join or create, make current   join #rust\r\n",
    "help   leave <room>             leave a room                   leave #rust\r\n",
    "help   rooms                    every room, message counts\r\n",
    "help   set <key> <value>        store a value (spaces allowed) set color light blue\r\n",
    "help   get <key>                read a value and its revision  get color\r\n",
    "help   del <key>                delete a key                   del color\r\n",
    "help   keys [<prefix>]          keys with a prefix, sorted     keys col\r\n",
    "help   cas <key> <old> <new>    set only if the value is <old> cas lock - me\r\n",
    "help                            (- means absent; quote <old> with spaces: cas k \"a b\" c)\r\n",
    "help   register <nick> <pass>   create an account, log in      register alice s3cret-pw\r\n",
    "help   login <nick> <pass>      use your account's nick        login alice s3cret-pw\r\n",
    "help   logout                   leave your account\r\n",
    "help   passwd <old> <new>       change your password           passwd s3cret-pw n3w-pw\r\n",
    "help                            (a registered nick posts only when its owner is logged in)\r\n",
    "help   op <nick>                make a nick an owner of the room op bob\r\n",
    "help   kick <nick>              put a nick out of the room     kick mallory\r\n",
    "help   topic [<text>]           show or set the room's topic   topic Rust and Raft\r\n",
    "help   private                  the room admits invited only\r\n",
    "help   invite <nick>            let a nick join a private room invite bob\r\n",
    "help                            (owners only: a room's creator, logged in, owns it)\r\n",
    "help   status                   this node's role, term and leader\r\n",
    "help   transfer <node>          hand leadership to a node      transfer 1\r\n",
    "help   members                  members: id, address, role     members\r\n",
    "help   add <id> <host:port>     add a learner (ack when done)  add 3 127.0.0.1:20003\r\n",
    "help   promote <id>             a caught-up learner votes      promote 3\r\n",
    "help   remove <id>              a member leaves for good       remove 0\r\n",
    "help   help                     this text\r\n",
    "help   quit                     close the connection\r\n",
    "help names and rooms: 1-32 letters, digits, - or _; messages and values: up to 4096 bytes;\r\n",
    "help keys: up to 256 bytes, no spaces; the key chatLog is reserved for the chat log\r\n",
);

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The first word and the rest, the rest without its leading blanks.
fn split_word(s: &str) -> (&str, &str) {
    match s.find(is_blank) {
        Some(at) => (&s[..at], s[at..].trim_start_matches(is_blank)),
        None => (s, ""),
    }
}

/// Exactly one word, or the usage line.
fn one_word<'a>(args: &'a str, usage: &str) -> Result<&'a str, String> {
    match split_word(args) {
        (word, "") if !word.is_empty() => Ok(word),
        _ => Err(usage.to_string()),
    }
}

/// Exactly two words, or the usage line.
fn two_words<'a>(args: &'a str, usage: &str) -> Result<(&'a str, &'a str), String> {
    let (first, rest) = split_word(args);
    let (second, extra) = split_word(rest);
    if first.is_empty() || second.is_empty() || !extra.is_empty() {
        return Err(usage.to_string());
    }
    Ok((first, second))
}

fn no_args(args: &str, request: Request, usage: &str) -> Result<Request, String> {
    if args.is_empty() {
        Ok(request)
    } else {
        Err(usage.to_string())
    }
}

fn parse_text(text: &str) -> Result<Request, String> {
    let (command, args) = split_word(text);
    match command.to_ascii_lowercase().as_str() {
        "" => Err("empty line: type help".to_string()),
        "msg" => parse_msg(args),
        "get" => parse_get(args),
        "history" => parse_history(args),
        "nick" => {
            let nick = one_word(args, "usage: nick <name>, e.g. nick alice")?;
            validate_nick(nick)?;
            Ok(Request::Nick(nick.to_string()))
        }
        "join" => {
            let room = one_word(args, "usage: join <room>, e.g. join #rust")?;
            Ok(Request::Join(room_name(room)?.to_string()))
        }
        "leave" => {
            let room = one_word(args, "usage: leave <room>, e.g. leave #rust")?;
            Ok(Request::Leave(room_name(room)?.to_string()))
        }
        "rooms" => no_args(args, Request::Rooms, "usage: rooms (no arguments)"),
        "set" => parse_set(args),
        "del" => {
            let key = one_word(
                args,
                "usage: del <key> (keys have no spaces), e.g. del color",
            )?;
            validate_key(key)?;
            Ok(Request::Del {
                key: key.to_string(),
            })
        }
        "keys" => {
            let (prefix, extra) = split_word(args);
            if !extra.is_empty() {
                return Err("usage: keys [<prefix>] (no spaces), e.g. keys user-".to_string());
            }
            validate_key_prefix(prefix)?;
            Ok(Request::Keys {
                prefix: prefix.to_string(),
            })
        }
        "cas" => parse_cas(args),
        "register" => {
            let (nick, password) = two_words(
                args,
                "usage: register <nick> <password>, e.g. register alice s3cret-pw",
            )?;
            validate_nick(nick)?;
            validate_password(password)?;
            Ok(Request::Register {
                nick: nick.to_string(),
                password: password.to_string(),
            })
        }
        "login" => {
            let (nick, password) = two_words(
                args,
                "usage: login <nick> <password>, e.g. login alice s3cret-pw",
            )?;
            validate_nick(nick)?;
            validate_password(password)?;
            Ok(Request::Login {
                nick: nick.to_string(),
                password: password.to_string(),
            })
        }
        "logout" => no_args(args, Request::Logout, "usage: logout (no arguments)"),
        "passwd" => {
            let (old, new) = two_words(args, "usage: passwd <old password> <new password>")?;
            validate_password(old)?;
            validate_password(new)?;
            Ok(Request::Passwd {
                old: old.to_string(),
                new: new.to_string(),
            })
        }
        "op" => {
            let nick = one_word(args, "usage: op <nick>, e.g. op bob")?;
            validate_nick(nick)?;
            Ok(Request::RoomOp(nick.to_string()))
        }
        "kick" => {
            let nick = one_word(args, "usage: kick <nick>, e.g. kick mallory")?;
            validate_nick(nick)?;
            Ok(Request::Kick(nick.to_string()))
        }
        "invite" => {
            let nick = one_word(args, "usage: invite <nick>, e.g. invite bob")?;
            validate_nick(nick)?;
            Ok(Request::Invite(nick.to_string()))
        }
        "topic" if args.is_empty() => Ok(Request::Topic(None)),
        "topic" => {
            validate_text(args)?;
            Ok(Request::Topic(Some(args.to_string())))
        }
        "private" => no_args(args, Request::Private, "usage: private (no arguments)"),
        "help" => Ok(Request::Help),
        "status" => no_args(args, Request::Status, "usage: status (no arguments)"),
        "quit" => no_args(args, Request::Quit, "usage: quit (no arguments)"),
        "transfer" => {
            let usage = "usage: transfer <node id>, e.g. transfer 1";
            node_id(one_word(args, usage)?, usage).map(|to| Request::Transfer { to })
        }
        "members" => no_args(args, Request::Members, "usage: members (no arguments)"),
        "add" => parse_add(args),
        "promote" => {
            let usage = "usage: promote <node id>, e.g. promote 3";
            node_id(one_word(args, usage)?, usage).map(|id| Request::PromoteMember { id })
        }
        "remove" => {
            let usage = "usage: remove <node id>, e.g. remove 0";
            node_id(one_word(args, usage)?, usage).map(|id| Request::RemoveMember { id })
        }
        _ => Err(format!("unknown command '{}': type help", shown(command))),
    }
}

/// A node id: digits only (`u64::from_str` also takes a leading '+').
fn node_id(word: &str, usage: &str) -> Result<u64, String> {
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit()) {
        return Err(usage.to_string());
    }
    word.parse::<u64>().map_err(|_| usage.to_string())
}

/// The longest `host:port` a member address may be (a DNS name is at most 253 bytes).
pub const MEMBER_ADDR_BYTES_MAX: usize = 260;

/// `add <id> <host:port>`: the address is checked for shape here (a host, a colon, a port);
/// the server resolves it.
fn parse_add(args: &str) -> Result<Request, String> {
    let usage = "usage: add <node id> <host:port>, e.g. add 3 127.0.0.1:20003";
    let (id, addr) = split_word(args);
    let id = node_id(id, usage)?;
    if addr.is_empty() || addr.contains(is_blank) {
        return Err(usage.to_string());
    }
    let port_ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok || addr.len() > MEMBER_ADDR_BYTES_MAX {
        return Err(format!(
            "'{}' is not a host:port address; {usage}",
            shown(addr)
        ));
    }
    Ok(Request::AddMember {
        id,
        addr: addr.to_string(),
    })
}

fn parse_msg(args: &str) -> Result<Request, String> {
    if args.is_empty() {
        return Err("usage: msg <text> or msg #<room> <text>, e.g. msg Hello, Raft!".to_string());
    }
    if args.starts_with('#') {
        let (room, text) = split_word(args);
        let room = room_name(room)?;
        if text.is_empty() {
            return Err(format!("empty message: type msg #{room} <text>"));
        }
        validate_text(text)?;
        return Ok(Request::Msg {
            room: Some(room.to_string()),
            text: text.to_string(),
        });
    }
    validate_text(args)?;
    Ok(Request::Msg {
        room: None,
        text: args.to_string(),
    })
}

fn parse_get(args: &str) -> Result<Request, String> {
    let key = one_word(
        args,
        "usage: get <key> (keys have no spaces) or get chatLog, e.g. get color",
    )?;
    if key.eq_ignore_ascii_case(RESERVED_KEY) {
        return Ok(Request::GetChatLog);
    }
    validate_key(key)?;
    Ok(Request::Get {
        key: key.to_string(),
    })
}

fn parse_history(args: &str) -> Result<Request, String> {
    let usage = "usage: history [#<room>] [<n>], e.g. history #rust 5";
    let (first, rest) = split_word(args);
    let (second, extra) = split_word(rest);
    if !extra.is_empty() {
        return Err(usage.to_string());
    }
    let is_count = |word: &str| !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit());
    let (room, count) = match (first, second) {
        ("", _) => (None, None),
        (n, "") if is_count(n) => (None, Some(n)),
        (room, "") => (Some(room), None),
        (room, n) if is_count(n) => (Some(room), Some(n)),
        _ => return Err(usage.to_string()),
    };
    let room = match room {
        Some(room) => Some(room_name(room)?.to_string()),
        None => None,
    };
    let n = match count {
        None => HISTORY_DEFAULT,
        Some(count) => match count.parse::<usize>() {
            Ok(n) if (1..=HISTORY_MAX).contains(&n) => n,
            _ => {
                return Err(format!(
                    "history shows 1 to {HISTORY_MAX} messages: use get chatLog for everything"
                ))
            }
        },
    };
    Ok(Request::History { room, n })
}

fn parse_set(args: &str) -> Result<Request, String> {
    let (key, value) = split_word(args);
    if key.is_empty() || value.is_empty() {
        return Err("usage: set <key> <value>, e.g. set color light blue".to_string());
    }
    validate_key(key)?;
    validate_value(value)?;
    Ok(Request::Set {
        key: key.to_string(),
        value: value.to_string(),
    })
}

fn parse_cas(args: &str) -> Result<Request, String> {
    let usage = "usage: cas <key> <expected> <new> (- for absent, \"quotes\" for spaces), e.g. cas lock - me";
    let (key, rest) = split_word(args);
    if key.is_empty() || rest.is_empty() {
        return Err(usage.to_string());
    }
    validate_key(key)?;
    let (expected, new) = if rest.starts_with('"') {
        let (expected, new) = parse_quoted(rest)?;
        (Some(expected), new)
    } else {
        match split_word(rest) {
            ("-", new) => (None, new),
            (expected, new) => (Some(expected.to_string()), new),
        }
    };
    if new.is_empty() {
        return Err(usage.to_string());
    }
    if let Some(expected) = &expected {
        validate_value(expected)?;
    }
    validate_value(new)?;
    Ok(Request::Cas {
        key: key.to_string(),
        expected,
        new: new.to_string(),
    })
}

/// `s` starts with `"`: the quoted string (with `\"` and `\\` unescaped) and what follows it.
fn parse_quoted(s: &str) -> Result<(String, &str), String> {
    debug_assert!(s.starts_with('"'));
    let mut value = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped @ ('"' | '\\'))) => value.push(escaped),
                _ => return Err("in quotes write \\\" for \" and \\\\ for \\".to_string()),
            },
            '"' => {
                let after = &s[at + 1..];
                if !after.is_empty() && !after.starts_with(is_blank) {
                    return Err("put a space after the closing quote".to_string());
                }
                return Ok((value, after.trim_start_matches(is_blank)));
            }
            c => value.push(c),
        }
    }
    Err("missing closing quote: e.g. cas k \"hello world\" bye".to_string())
}

/// A client's word quoted back in an error: short, and without control characters.
fn shown(word: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 32;
    let mut out: String = word
        .chars()
        .filter(|c| !c.is_control())
        .take(SHOWN_CHARS_MAX)
        .collect();
    if word.chars().count() > SHOWN_CHARS_MAX {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Request, String> {
        parse_line(line.as_bytes())
    }

    fn err(line: &str) -> String {
        match parse(line) {
            Err(reason) => reason,
            Ok(request) => panic!("{line:?} parsed as {request:?}"),
        }
    }

    fn msg(room: Option<&str>, text: &str) -> Request {
        Request::Msg {
            room: room.map(str::to_string),
            text: text.to_string(),
        }
    }

    #[test]
    fn the_seed_commands() {
        assert_eq!(parse("msg Hello, Raft!"), Ok(msg(None, "Hello, Raft!")));
        assert_eq!(parse("get chatLog"), Ok(Request::GetChatLog));
        assert_eq!(
            parse_line(b"msg Hello, Raft!\r"),
            Ok(msg(None, "Hello, Raft!"))
        );
        assert_eq!(parse_line(b"get chatLog\r"), Ok(Request::GetChatLog));
    }

    #[test]
    fn blanks_case_and_terminators() {
        assert_eq!(parse("  MSG   hi there  "), Ok(msg(None, "hi there")));
        assert_eq!(parse("msg\thi"), Ok(msg(None, "hi")));
        assert_eq!(parse("Get ChatLog"), Ok(Request::GetChatLog));
        assert_eq!(parse("get CHATLOG"), Ok(Request::GetChatLog));
        assert_eq!(parse("QUIT\r"), Ok(Request::Quit));
        assert_eq!(err(""), "empty line: type help");
        assert_eq!(err("   \r"), "empty line: type help");
        // Only the one trailing '\r' is a terminator; another is a control character.
        assert!(err("msg a\r\r").contains("control"));
    }

    #[test]
    fn telnet_negotiation_and_non_utf8() {
        assert_eq!(parse_line(b"\xff\xfb\x1fmsg hi\r"), Ok(msg(None, "hi")));
        assert_eq!(
            parse_line(b"\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0get chatLog"),
            Ok(Request::GetChatLog)
        );
        assert_eq!(
            parse_line(b"\xff\xf4"),
            Err("empty line: type help".to_string())
        );
        assert_eq!(
            parse_line(b"msg caf\xe9"),
            Err("line is not valid UTF-8: send UTF-8 text".to_string())
        );
        assert!(
            parse_line(b"msg \xff\xff").is_err(),
            "escaped 0xFF is not UTF-8"
        );
        assert_eq!(parse_line("msg café ✓".as_bytes()), Ok(msg(None, "café ✓")));
    }

    #[test]
    fn msg_with_and_without_room() {
        assert_eq!(parse("msg #rust hi all"), Ok(msg(Some("rust"), "hi all")));
        assert_eq!(parse("msg rust is fun"), Ok(msg(None, "rust is fun")));
        assert_eq!(parse("msg a # b"), Ok(msg(None, "a # b")));
        assert!(err("msg").starts_with("usage: msg"));
        assert_eq!(err("msg #rust"), "empty message: type msg #rust <text>");
        assert_eq!(err("msg #rust   "), "empty message: type msg #rust <text>");
        assert!(err("msg #bad!room hi").starts_with("bad room name"));
        assert!(err("msg #").starts_with("bad room name"));
        assert!(err(&format!("msg {}", "x".repeat(4097))).contains("limit is 4096"));
        assert_eq!(
            parse(&format!("msg {}", "x".repeat(4096))),
            Ok(msg(None, &"x".repeat(4096)))
        );
        assert!(err("msg a\u{7}b").contains("control"));
        assert!(err("msg a\tb").contains("control"));
    }

    #[test]
    fn history_forms() {
        let history = |room: Option<&str>, n| Request::History {
            room: room.map(str::to_string),
            n,
        };
        assert_eq!(parse("history"), Ok(history(None, HISTORY_DEFAULT)));
        assert_eq!(parse("history 5"), Ok(history(None, 5)));
        assert_eq!(parse("history #rust"), Ok(history(Some("rust"), 20)));
        assert_eq!(parse("history rust"), Ok(history(Some("rust"), 20)));
        assert_eq!(parse("history #rust 5"), Ok(history(Some("rust"), 5)));
        assert_eq!(parse("history rust 1000"), Ok(history(Some("rust"), 1000)));
        assert_eq!(
            parse("history #10"),
            Ok(history(Some("10"), 20)),
            "a room named 10"
        );
        assert_eq!(parse("history #10 10"), Ok(history(Some("10"), 10)));
        assert!(err("history 0").contains("1 to 1000"));
        assert!(err("history 1001").contains("1 to 1000"));
        assert!(err("history 99999999999999999999999").contains("1 to 1000"));
        assert!(err("history rust five").starts_with("usage: history"));
        assert!(err("history a b c").starts_with("usage: history"));
        assert!(err("history 5 rust").starts_with("usage: history"));
        assert!(err("history bad.room").starts_with("bad room name"));
    }

    #[test]
    fn nick_join_leave_rooms() {
        assert_eq!(parse("nick alice"), Ok(Request::Nick("alice".into())));
        assert!(err("nick").starts_with("usage: nick"));
        assert!(err("nick al ice").starts_with("usage: nick"));
        assert!(err("nick al!ce").starts_with("bad nick"));
        assert!(err(&format!("nick {}", "a".repeat(33))).starts_with("bad nick"));
        assert_eq!(parse("join #rust"), Ok(Request::Join("rust".into())));
        assert_eq!(parse("join rust"), Ok(Request::Join("rust".into())));
        assert!(err("join").starts_with("usage: join"));
        assert!(err("join a b").starts_with("usage: join"));
        assert!(err("join ##rust").starts_with("bad room name"));
        assert_eq!(parse("leave #rust"), Ok(Request::Leave("rust".into())));
        assert!(err("leave").starts_with("usage: leave"));
        assert_eq!(parse("rooms"), Ok(Request::Rooms));
        assert!(err("rooms all").starts_with("usage: rooms"));
    }

    #[test]
    fn key_value_commands() {
        let set = |key: &str, value: &str| Request::Set {
            key: key.into(),
            value: value.into(),
        };
        assert_eq!(parse("set k hello world"), Ok(set("k", "hello world")));
        assert_eq!(parse("set k   a  b"), Ok(set("k", "a  b")));
        assert!(err("set").starts_with("usage: set"));
        assert!(err("set k").starts_with("usage: set"));
        assert!(err("set chatLog x").contains("reserved"));
        assert!(err("set chatlog x").contains("reserved"));
        assert!(err(&format!("set {} v", "k".repeat(257))).starts_with("bad key"));
        assert!(err(&format!("set k {}", "v".repeat(4097))).contains("limit is 4096"));
        assert_eq!(
            parse("get color"),
            Ok(Request::Get {
                key: "color".into()
            })
        );
        assert!(err("get").starts_with("usage: get"));
        assert!(err("get a b").starts_with("usage: get"));
        assert_eq!(
            parse("del color"),
            Ok(Request::Del {
                key: "color".into()
            })
        );
        assert!(err("del").starts_with("usage: del"));
        assert!(err("del chatLog").contains("reserved"));
        assert_eq!(parse("keys"), Ok(Request::Keys { prefix: "".into() }));
        assert_eq!(
            parse("keys user-"),
            Ok(Request::Keys {
                prefix: "user-".into()
            })
        );
        assert_eq!(
            parse("keys chat"),
            Ok(Request::Keys {
                prefix: "chat".into()
            })
        );
        assert!(err("keys a b").starts_with("usage: keys"));
    }

    #[test]
    fn cas_forms() {
        let cas = |key: &str, expected: Option<&str>, new: &str| Request::Cas {
            key: key.into(),
            expected: expected.map(str::to_string),
            new: new.into(),
        };
        assert_eq!(parse("cas lock - me"), Ok(cas("lock", None, "me")));
        assert_eq!(parse("cas lock me you"), Ok(cas("lock", Some("me"), "you")));
        assert_eq!(
            parse("cas k old new value"),
            Ok(cas("k", Some("old"), "new value"))
        );
        assert_eq!(parse(r#"cas k "a b" c"#), Ok(cas("k", Some("a b"), "c")));
        assert_eq!(parse(r#"cas k "-" c"#), Ok(cas("k", Some("-"), "c")));
        assert_eq!(parse(r#"cas k "" c"#), Ok(cas("k", Some(""), "c")));
        assert_eq!(
            parse(r#"cas k "say \"hi\" \\o/" c d"#),
            Ok(cas("k", Some(r#"say "hi" \o/"#), "c d"))
        );
        assert_eq!(parse(r#"cas k a"b c"#), Ok(cas("k", Some(r#"a"b"#), "c")));
        assert!(err("cas").starts_with("usage: cas"));
        assert!(err("cas k").starts_with("usage: cas"));
        assert!(err("cas k -").starts_with("usage: cas"));
        assert!(err(r#"cas k "a b""#).starts_with("usage: cas"));
        assert!(err(r#"cas k "a b c"#).starts_with("missing closing quote"));
        assert!(err(r#"cas k "a"b c"#).starts_with("put a space"));
        assert!(err(r#"cas k "a\n" c"#).starts_with("in quotes"));
        assert!(err("cas chatLog - x").contains("reserved"));
    }

    #[test]
    fn operator_and_session_commands() {
        assert_eq!(parse("help"), Ok(Request::Help));
        assert_eq!(parse("help msg"), Ok(Request::Help));
        assert_eq!(parse("status"), Ok(Request::Status));
        assert!(err("status x").starts_with("usage: status"));
        assert_eq!(parse("quit"), Ok(Request::Quit));
        assert!(err("quit now").starts_with("usage: quit"));
        assert_eq!(parse("transfer 2"), Ok(Request::Transfer { to: 2 }));
        assert_eq!(parse("members"), Ok(Request::Members));
        assert_eq!(
            parse("add 3 127.0.0.1:20003"),
            Ok(Request::AddMember {
                id: 3,
                addr: "127.0.0.1:20003".into()
            })
        );
        assert_eq!(parse("promote 3"), Ok(Request::PromoteMember { id: 3 }));
        assert_eq!(parse("remove 0"), Ok(Request::RemoveMember { id: 0 }));
        for bad in [
            "add",
            "add 3",
            "add x 127.0.0.1:1",
            "add 3 127.0.0.1",
            "add 3 :80",
            "add 3 host:0",
            "add 3 host:99999",
            "add 3 a:1 b",
            "promote",
            "promote +3",
            "remove -1",
            "members now",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(err("transfer").starts_with("usage: transfer"));
        assert!(err("transfer +2").starts_with("usage: transfer"));
        assert!(err("transfer two").starts_with("usage: transfer"));
        assert!(err("transfer 1 2").starts_with("usage: transfer"));
        assert!(err("transfer 99999999999999999999").starts_with("usage: transfer"));
    }

    #[test]
    fn unknown_commands() {
        assert_eq!(err("foo"), "unknown command 'foo': type help");
        assert_eq!(err("FOO bar"), "unknown command 'FOO': type help");
        assert_eq!(err("msg-x hi"), "unknown command 'msg-x': type help");
        let reason = err(&format!("\u{1b}{}", "z".repeat(100)));
        assert!(reason.len() < 80 && !reason.contains('\u{1b}'), "{reason}");
    }

    #[test]
    fn help_text_lines() {
        assert!(HELP_TEXT.ends_with("\r\n"));
        let lines: Vec<&str> = HELP_TEXT.split_terminator("\r\n").collect();
        assert!(lines.len() > 15);
        for line in &lines {
            assert!(line.starts_with("help "), "{line:?}");
            assert!(!line.contains('\n') && !line.contains('\r'));
            assert!(line.len() <= 100, "{line:?}");
        }
        // Every command is documented, and every example in it parses.
        for command in [
            "msg", "get", "history", "nick", "join", "leave", "rooms", "set", "del", "keys", "cas",
            "status", "transfer", "help", "quit", "register", "login", "logout", "passwd", "op",
            "kick", "topic", "private", "invite", "members", "add", "promote", "remove",
        ] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(&format!("help   {command}"))),
                "{command} missing"
            );
        }
        for example in [
            "msg Hello, Raft!",
            "msg #rust hi all",
            "history #rust 5",
            "nick alice",
            "join #rust",
            "leave #rust",
            "set color light blue",
            "get color",
            "del color",
            "keys col",
            "cas lock - me",
            "cas k \"a b\" c",
            "transfer 1",
            "register alice s3cret-pw",
            "login alice s3cret-pw",
            "passwd s3cret-pw n3w-pw",
            "op bob",
            "kick mallory",
            "topic Rust and Raft",
            "invite bob",
        ] {
            assert!(HELP_TEXT.contains(example), "{example}");
            assert!(parse(example).is_ok(), "{example}");
        }
    }

    #[test]
    fn account_commands() {
        assert_eq!(
            parse("register alice s3cret-pw"),
            Ok(Request::Register {
                nick: "alice".into(),
                password: "s3cret-pw".into()
            })
        );
        assert_eq!(
            parse("LOGIN alice  s3cret-pw"),
            Ok(Request::Login {
                nick: "alice".into(),
                password: "s3cret-pw".into()
            })
        );
        assert_eq!(parse("logout"), Ok(Request::Logout));
        assert_eq!(
            parse("passwd old-pass new-pass"),
            Ok(Request::Passwd {
                old: "old-pass".into(),
                new: "new-pass".into()
            })
        );
        assert!(err("register alice").starts_with("usage: register"));
        assert!(err("register alice pw pw2").starts_with("usage: register"));
        assert!(err("register al!ce s3cret-pw").starts_with("bad nick"));
        assert!(err("register alice short").starts_with("bad password"));
        assert!(err(&format!("login alice {}", "p".repeat(129))).starts_with("bad password"));
        assert!(err("logout now").starts_with("usage: logout"));
        assert!(err("passwd only-one").starts_with("usage: passwd"));
        assert_eq!(parse("op bob"), Ok(Request::RoomOp("bob".into())));
        assert_eq!(parse("kick bob"), Ok(Request::Kick("bob".into())));
        assert_eq!(parse("invite bob"), Ok(Request::Invite("bob".into())));
        assert_eq!(parse("topic"), Ok(Request::Topic(None)));
        assert_eq!(
            parse("topic Rust and  Raft"),
            Ok(Request::Topic(Some("Rust and  Raft".into())))
        );
        assert_eq!(parse("private"), Ok(Request::Private));
        assert!(err("private now").starts_with("usage: private"));
        assert!(err("kick").starts_with("usage: kick"));
        assert!(err("op a b").starts_with("usage: op"));
        assert!(err("invite b!").starts_with("bad nick"));
        // A rejected line never echoes the password back.
        assert!(!err("register alice short").contains("short"));
    }

    /// Random lines built from the account words, other command words and random bytes (fixed
    /// seeds, bounded): the parser never panics, a rejection is one line, and an accepted line
    /// re-parses to the same request.
    #[test]
    fn random_account_lines_never_panic() {
        use rand::{rngs::SmallRng, Rng, SeedableRng};
        let words: [&[u8]; 19] = [
            b"op",
            b"kick",
            b"topic",
            b"private",
            b"invite",
            b"register",
            b"login",
            b"logout",
            b"passwd",
            b"nick",
            b"msg",
            b"alice",
            b"s3cret-pw",
            b" ",
            b"\t",
            b"\xff",
            b"\xe2\x82",
            b"\"",
            b"#",
        ];
        for seed in 0..8u64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            for _ in 0..2_000 {
                let mut line = Vec::new();
                for _ in 0..rng.gen_range(0..6) {
                    if rng.gen_bool(0.7) {
                        line.extend_from_slice(words[rng.gen_range(0..words.len())]);
                    } else {
                        for _ in 0..rng.gen_range(1..12) {
                            line.push(rng.gen());
                        }
                    }
                    if rng.gen_bool(0.6) {
                        line.push(b' ');
                    }
                }
                match parse_line(&line) {
                    Ok(request) => {
                        // Accepted account requests carry valid parts.
                        if let Request::Register { nick, password }
                        | Request::Login { nick, password } = &request
                        {
                            assert!(validate_nick(nick).is_ok(), "{line:?}");
                            assert!(validate_password(password).is_ok(), "{line:?}");
                        }
                    }
                    Err(reason) => {
                        assert!(!reason.contains('\n') && !reason.contains('\r'), "{line:?}")
                    }
                }
            }
        }
    }
}
