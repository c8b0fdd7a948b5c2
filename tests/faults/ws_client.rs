//! The WebSocket client of a fault run: a browser's protocol (`GET /ws`, JSON requests) over a
//! blocking `std::net::TcpStream` with `tungstenite`, recording every post and history read
//! like the telnet and binary clients do.
//!
//! Owns turning WebSocket answers into outcomes: `{"type":"ack","pos":n}` → acked at `n`; an
//! `err` whose reason says `not stored` → not stored; any other `err`, a timeout or a lost
//! connection → unknown. A `history` of `#general` (the room every client of the workload
//! posts to) is the log's latest [`HISTORY_N`] entries: it is recorded as a window read
//! ([`ReadLog::window`]), each message rebuilt as `get chatLog` prints it, so the checker
//! compares times, rooms and nicks too. It never judges: that is the checker's job.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::Rng;
use serde_json::{json, Value};

use super::checker::{Entry, Op, OpKind, ReadLog, WriteOutcome};
use super::workload::since_us;

/// As for telnet: longer than the nodes' request timeout, so the node usually answers first.
const WS_READ_TIMEOUT: Duration = Duration::from_secs(6);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How many messages one history read asks for (the server's most, `HISTORY_MAX`).
pub const HISTORY_N: usize = 1000;
/// The room every client of the workload posts to.
const ROOM: &str = "general";

type Socket = tungstenite::WebSocket<TcpStream>;

/// One WebSocket session with a node.
pub struct WsClient {
    socket: Socket,
    next_id: u64,
}

/// What a request's answer (or its absence) was.
enum Answer {
    Reply(Value),
    /// The connection failed or timed out: the session is unusable.
    Lost(String),
}

impl WsClient {
    /// Connects and upgrades to a WebSocket; `None` when the node does not answer.
    pub fn connect(addr: SocketAddr) -> Option<WsClient> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).ok()?;
        stream.set_read_timeout(Some(WS_READ_TIMEOUT)).ok()?;
        stream.set_write_timeout(Some(WS_READ_TIMEOUT)).ok()?;
        let (socket, response) = tungstenite::client(format!("ws://{addr}/ws"), stream).ok()?;
        (response.status().as_u16() == 101).then_some(WsClient { socket, next_id: 1 })
    }

    /// Sends `request` with a fresh `id` and waits for the reply carrying it (live pushes and
    /// the `hello` are skipped).
    fn request(&mut self, mut request: Value) -> Answer {
        let id = self.next_id;
        self.next_id += 1;
        request["id"] = json!(id);
        let text = request.to_string();
        if let Err(e) = self.socket.send(tungstenite::Message::Text(text)) {
            return Answer::Lost(format!("send: {e}"));
        }
        // Bounded: every read waits at most WS_READ_TIMEOUT, and a busy room pushes at most a
        // few thousand messages while one request is in flight.
        for _ in 0..100_000 {
            let text = match self.socket.read() {
                Ok(tungstenite::Message::Text(text)) => text,
                Ok(tungstenite::Message::Close(frame)) => {
                    return Answer::Lost(format!("closed by the node: {frame:?}"))
                }
                Ok(_) => continue,
                Err(e) => return Answer::Lost(format!("read: {e}")),
            };
            let Ok(value) = serde_json::from_str::<Value>(&text) else {
                return Answer::Reply(json!({"type": "invalid", "text": text}));
            };
            if value["id"] == json!(id) {
                return Answer::Reply(value);
            }
        }
        Answer::Lost("no reply among 100000 messages".into())
    }

    /// Posts `text` to `#general`: the outcome, and whether the session is still usable.
    pub fn post(&mut self, text: &str) -> (WriteOutcome, bool) {
        let reply = match self.request(json!({"type": "msg", "room": ROOM, "text": text})) {
            Answer::Reply(reply) => reply,
            Answer::Lost(why) => {
                return (WriteOutcome::Unknown(format!("websocket: {why}")), false)
            }
        };
        let outcome = match (reply["type"].as_str(), reply["pos"].as_u64()) {
            (Some("ack"), Some(position)) if reply["req"] == "msg" => WriteOutcome::Acked(position),
            (Some("err"), _)
                if reply["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("not stored")) =>
            {
                WriteOutcome::NotStored(reply.to_string())
            }
            _ => WriteOutcome::Unknown(reply.to_string()),
        };
        (outcome, true)
    }

    /// A `history` of `#general`: `Ok(Some(window))`, `Ok(None)` for an `err` answer, or a
    /// description of a malformed answer; `Err(())` when the connection failed.
    pub fn history(&mut self) -> Result<Result<Option<Vec<Entry>>, String>, ()> {
        let request = json!({"type": "history", "room": ROOM, "n": HISTORY_N});
        let reply = match self.request(request) {
            Answer::Reply(reply) => reply,
            Answer::Lost(_) => return Err(()),
        };
        match reply["type"].as_str() {
            Some("err") => return Ok(Ok(None)),
            Some("history") => {}
            _ => return Ok(Err(format!("reply {reply}"))),
        }
        let Some(messages) = reply["messages"].as_array() else {
            return Ok(Err(format!("history without messages: {reply}")));
        };
        let mut window = Vec::with_capacity(messages.len());
        for message in messages {
            match entry_of(message) {
                Some(entry) => window.push(entry),
                None => return Ok(Err(format!("malformed message {message}"))),
            }
        }
        Ok(Ok(Some(window)))
    }
}

/// A `msg` object as the `get chatLog` line `<pos> <time> #<room> <<nick>> <text>`.
fn entry_of(message: &Value) -> Option<Entry> {
    let line = format!(
        "{} {} #{} <{}> {}",
        message["pos"].as_u64()?,
        message["time"].as_str()?,
        message["room"].as_str()?,
        message["nick"].as_str()?,
        message["text"].as_str()?
    );
    Entry::parse(&line)
}

/// One WebSocket client thread: posts three times in four, reads `#general`'s history
/// otherwise, and now and then moves to another node.
pub fn ws_client(
    client: usize,
    seed: u64,
    addrs: &[SocketAddr],
    t0: Instant,
    mut rng: SmallRng,
    stop: &AtomicBool,
) -> Vec<Op> {
    let mut history = Vec::new();
    let mut conn: Option<(usize, WsClient)> = None;
    let mut k = 0;
    while !stop.load(Ordering::SeqCst) {
        if conn.is_none() || rng.gen_bool(0.2) {
            let node = rng.gen_range(0..addrs.len());
            conn = WsClient::connect(addrs[node]).map(|c| (node, c));
        }
        let Some((node, c)) = conn.as_mut() else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let node = *node;
        let start_us = since_us(t0);
        let kind = if rng.gen_bool(0.75) {
            k += 1;
            let text = format!("s{seed}-w{client}-{k}");
            let (outcome, usable) = c.post(&text);
            if !usable {
                conn = None;
            }
            Some(OpKind::Write {
                text,
                binary: false,
                outcome,
            })
        } else {
            match c.history() {
                Err(()) => {
                    conn = None;
                    None
                }
                Ok(Ok(None)) => None,
                Ok(Ok(Some(window))) => Some(OpKind::Read {
                    log: ReadLog::window(&window),
                }),
                Ok(Err(what)) => Some(OpKind::Broken { what }),
            }
        };
        if let Some(kind) = kind {
            history.push(Op {
                client,
                node,
                start_us,
                end_us: since_us(t0),
                kind,
            });
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(2..15)));
    }
    history
}
