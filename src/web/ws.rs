//! The server side of WebSocket (RFC 6455): the opening handshake, client frames in, server
//! frames out.
//!
//! Hand-written rather than `tungstenite` driven non-blocking: the node's mio loop already owns
//! each connection's read and write buffers, its deadlines and its backpressure, so what it
//! needs is a codec over those buffers (bytes in, events out; events in, bytes appended), not a
//! second owner of the stream. The protocol subset a server needs is small, and every rule of
//! it is tested here, against the RFC's own examples and against `tungstenite` as an independent
//! client (`tests` below).
//!
//! What it enforces on client frames, with the close code the server then sends: frames must
//! be masked (1002); reserved bits and unknown opcodes are refused (1002); control frames are
//! at most 125 bytes and never fragmented (1002); a continuation needs a message in progress and
//! a new message needs none (1002); a frame or a reassembled message over the cap is refused
//! before its payload is buffered (1009); text must be UTF-8, checked as fragments arrive
//! (1007); a close frame carries nothing, or a valid code and a UTF-8 reason (1002, 1007).
//!
//! This module never touches a socket and never panics on any input. The SHA-1 of the
//! handshake comes from RustCrypto's `sha1` (a vetted implementation beats a hand-rolled hash
//! for the same dozen lines of glue); base64 of 20 bytes is written here.

use sha1::{Digest, Sha1};

use super::http::{Invalid, Request};

/// The most payload bytes one client frame may carry; more is close 1009.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 64 * 1024;
/// The largest client frame on the wire (14 header bytes at most): a connection's read buffer
/// never needs to hold more than this to make progress, so the front-end may cap it here.
pub const FRAME_BYTES_MAX: usize = FRAME_PAYLOAD_BYTES_MAX + 14;
/// The most bytes one reassembled client message may carry; more is close 1009.
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024;
/// RFC 6455 §5.5: control frames carry at most this many payload bytes.
pub const CONTROL_PAYLOAD_BYTES_MAX: usize = 125;
/// RFC 6455 §1.3: appended to the client's key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Close codes this server sends (RFC 6455 §7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
pub const CLOSE_INVALID_DATA: u16 = 1007;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_INTERNAL_ERROR: u16 = 1011;

/// Frame opcodes (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// Why the connection must end: send a close frame with `code` (and `reason`), then close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: u16,
    pub reason: &'static str,
}

const fn fail(code: u16, reason: &'static str) -> Failure {
    Failure { code, reason }
}

/// One frame as received, payload unmasked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: Opcode,
    pub payload: Vec<u8>,
}

/// What the bytes at the start of a buffer amount to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    Incomplete,
    Invalid(Failure),
    /// A frame, and how many bytes of the buffer it took.
    Frame(Frame, usize),
}

/// What a client said, once frames are reassembled and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Text(String),
    Binary(Vec<u8>),
    /// Answer with a pong carrying the same payload ([`encode_pong`]).
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The client starts (or answers) the closing handshake. `code: None` is an empty close.
    Close {
        code: Option<u16>,
        reason: String,
    },
}

/// Checks an upgrade request and returns the `Sec-WebSocket-Accept` value to answer with.
/// A request that is not an upgrade is 426; a wrong version is 426 too (answer with
/// `Sec-WebSocket-Version: 13`); a missing or malformed key is 400.
pub fn check_handshake(req: &Request<'_>) -> Result<String, Invalid> {
    let upgrade = req.header_has_token("upgrade", "websocket");
    if !upgrade || !req.header_has_token("connection", "upgrade") {
        return Err(Invalid {
            status: 426,
            reason: "this path speaks WebSocket only",
        });
    }
    if req.minor_version < 1 {
        return Err(Invalid {
            status: 400,
            reason: "WebSocket needs HTTP/1.1",
        });
    }
    if req.header("sec-websocket-version") != Some(b"13") {
        return Err(Invalid {
            status: 426,
            reason: "only WebSocket version 13 is spoken",
        });
    }
    match req.header("sec-websocket-key") {
        Some(key) if is_valid_key(key) => Ok(accept_key(key)),
        _ => Err(Invalid {
            status: 400,
            reason: "missing or malformed Sec-WebSocket-Key",
        }),
    }
}

/// A key is the base64 of 16 bytes: 22 base64 characters and `==`.
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// RFC 6455 §4.2.2: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(key);
    hasher.update(ACCEPT_GUID);
    base64(&hasher.finalize())
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Appends the `101 Switching Protocols` response.
pub fn write_handshake_response(out: &mut Vec<u8>, accept: &str) {
    out.extend_from_slice(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .as_bytes(),
    );
}

/// Decodes one client frame from the start of `buf` (see the module doc for what is refused).
pub fn decode_frame(buf: &[u8]) -> Decoded {
    let [b0, b1, ..] = *buf else {
        return Decoded::Incomplete;
    };
    let (fin, opcode) = match frame_flags(b0, b1) {
        Ok(flags) => flags,
        Err(failure) => return Decoded::Invalid(failure),
    };
    let (len, mut at) = match payload_length(buf, b1 & 0x7f) {
        Some(Ok(found)) => found,
        Some(Err(failure)) => return Decoded::Invalid(failure),
        None => return Decoded::Incomplete,
    };
    if opcode.is_control() && len > CONTROL_PAYLOAD_BYTES_MAX {
        return Decoded::Invalid(fail(CLOSE_PROTOCOL_ERROR, "control frame over 125 bytes"));
    }
    if len > FRAME_PAYLOAD_BYTES_MAX {
        return Decoded::Invalid(fail(CLOSE_TOO_BIG, "frame too large"));
    }
    let Some(mask) = buf.get(at..at + 4) else {
        return Decoded::Incomplete;
    };
    let mask = [mask[0], mask[1], mask[2], mask[3]];
    at += 4;
    let Some(masked) = buf.get(at..at + len) else {
        return Decoded::Incomplete;
    };
    let payload = masked
        .iter()
        .enumerate()
        .map(|(i, &b)| b ^ mask[i % 4])
        .collect();
    let frame = Frame {
        fin,
        opcode,
        payload,
    };
    Decoded::Frame(frame, at + len)
}

/// FIN and the opcode from the first two bytes; refuses reserved bits, unknown opcodes,
/// fragmented control frames and unmasked frames.
fn frame_flags(b0: u8, b1: u8) -> Result<(bool, Opcode), Failure> {
    if b0 & 0x70 != 0 {
        return Err(fail(CLOSE_PROTOCOL_ERROR, "reserved bits set"));
    }
    let opcode =
        Opcode::from_bits(b0 & 0x0f).ok_or(fail(CLOSE_PROTOCOL_ERROR, "unknown opcode"))?;
    let fin = b0 & 0x80 != 0;
    if opcode.is_control() && !fin {
        return Err(fail(CLOSE_PROTOCOL_ERROR, "fragmented control frame"));
    }
    if b1 & 0x80 == 0 {
        return Err(fail(CLOSE_PROTOCOL_ERROR, "client frames must be masked"));
    }
    Ok((fin, opcode))
}

/// The payload length and where the masking key starts; `None` when the extended length has
/// not arrived yet.
fn payload_length(buf: &[u8], len7: u8) -> Option<Result<(usize, usize), Failure>> {
    match len7 {
        126 => {
            let b = buf.get(2..4)?;
            Some(Ok((usize::from(u16::from_be_bytes([b[0], b[1]])), 4)))
        }
        127 => {
            let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            let len = u64::from_be_bytes(b);
            if len >> 63 != 0 {
                return Some(Err(fail(
                    CLOSE_PROTOCOL_ERROR,
                    "length has its top bit set",
                )));
            }
            // Anything that does not fit in usize is over the cap anyway.
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            Some(Ok((len, 10)))
        }
        n => Some(Ok((usize::from(n), 2))),
    }
}

/// Reassembles client frames into [`Event`]s: one per connection, fed the connection's read
/// buffer.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The data message in progress: its opcode and the bytes so far.
    partial: Option<(Opcode, Vec<u8>)>,
    /// How many leading bytes of a partial text message are known to be valid UTF-8.
    utf8_checked: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes every complete frame at the start of `buf`: the events and the number of bytes
    /// to drain from it. Frames absorbed into an unfinished fragmented message are drained too
    /// (their bytes live in the decoder from then on). Stops after a close event: nothing a
    /// client sends after its close counts. `Err` ends the connection: send
    /// [`encode_close`] with the failure's code, then close.
    pub fn decode_all(&mut self, buf: &[u8]) -> Result<(Vec<Event>, usize), Failure> {
        let mut events = Vec::new();
        let mut consumed = 0;
        loop {
            let (frame, len) = match decode_frame(&buf[consumed..]) {
                Decoded::Incomplete => return Ok((events, consumed)),
                Decoded::Invalid(failure) => return Err(failure),
                Decoded::Frame(frame, len) => (frame, len),
            };
            consumed += len;
            if let Some(event) = self.absorb(frame)? {
                let closing = matches!(event, Event::Close { .. });
                events.push(event);
                if closing {
                    return Ok((events, consumed));
                }
            }
        }
    }

    /// One frame in; an event out when it completes one.
    fn absorb(&mut self, frame: Frame) -> Result<Option<Event>, Failure> {
        match frame.opcode {
            Opcode::Ping => Ok(Some(Event::Ping(frame.payload))),
            Opcode::Pong => Ok(Some(Event::Pong(frame.payload))),
            Opcode::Close => close_event(&frame.payload).map(Some),
            Opcode::Continuation => self.continue_message(frame),
            Opcode::Text | Opcode::Binary => self.start_message(frame),
        }
    }

    fn start_message(&mut self, frame: Frame) -> Result<Option<Event>, Failure> {
        if self.partial.is_some() {
            return Err(fail(
                CLOSE_PROTOCOL_ERROR,
                "new message inside a fragmented one",
            ));
        }
        self.partial = Some((frame.opcode, Vec::new()));
        self.utf8_checked = 0;
        self.continue_message(frame)
    }

    fn continue_message(&mut self, frame: Frame) -> Result<Option<Event>, Failure> {
        let Some((opcode, bytes)) = self.partial.as_mut() else {
            return Err(fail(CLOSE_PROTOCOL_ERROR, "continuation without a message"));
        };
        if bytes.len() + frame.payload.len() > MESSAGE_BYTES_MAX {
            return Err(fail(CLOSE_TOO_BIG, "message too large"));
        }
        bytes.extend_from_slice(&frame.payload);
        if *opcode == Opcode::Text {
            self.utf8_checked = check_utf8_prefix(bytes, self.utf8_checked, frame.fin)?;
        }
        if !frame.fin {
            return Ok(None);
        }
        let (opcode, bytes) = self.partial.take().unwrap_or((Opcode::Binary, Vec::new()));
        Ok(Some(match opcode {
            Opcode::Text => Event::Text(
                String::from_utf8(bytes)
                    .map_err(|_| fail(CLOSE_INVALID_DATA, "text is not UTF-8"))?,
            ),
            _ => Event::Binary(bytes),
        }))
    }
}

/// Checks `bytes[checked..]` as UTF-8 and returns the new valid prefix. An unfinished sequence
/// at the end is allowed unless `fin`; an invalid one anywhere is 1007.
fn check_utf8_prefix(bytes: &[u8], checked: usize, fin: bool) -> Result<usize, Failure> {
    const INVALID: Failure = fail(CLOSE_INVALID_DATA, "text is not UTF-8");
    // `checked` is the end of the last complete character, so an unfinished sequence is
    // checked again whole.
    let start = checked.min(bytes.len());
    match std::str::from_utf8(&bytes[start..]) {
        Ok(_) => Ok(bytes.len()),
        Err(e) if e.error_len().is_none() && !fin => Ok(start + e.valid_up_to()),
        Err(_) => Err(INVALID),
    }
}

/// A close frame's payload: empty, or a valid code and a UTF-8 reason.
fn close_event(payload: &[u8]) -> Result<Event, Failure> {
    match payload {
        [] => Ok(Event::Close {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(fail(CLOSE_PROTOCOL_ERROR, "one-byte close payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(fail(CLOSE_PROTOCOL_ERROR, "invalid close code"));
            }
            let reason = std::str::from_utf8(reason)
                .map_err(|_| fail(CLOSE_INVALID_DATA, "close reason is not UTF-8"))?;
            Ok(Event::Close {
                code: Some(code),
                reason: reason.to_string(),
            })
        }
    }
}

/// RFC 6455 §7.4: codes a peer may send (1005, 1006 and 1015 are never on the wire).
fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Appends one unmasked server frame with FIN set.
pub fn encode_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    out.push(0x80 | opcode as u8);
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

pub fn encode_text(out: &mut Vec<u8>, text: &str) {
    encode_frame(out, Opcode::Text, text.as_bytes());
}

pub fn encode_pong(out: &mut Vec<u8>, payload: &[u8]) {
    let payload = &payload[..payload.len().min(CONTROL_PAYLOAD_BYTES_MAX)];
    encode_frame(out, Opcode::Pong, payload);
}

/// Appends a close frame with `code` and as much of `reason` as fits in 123 bytes (cut at a
/// character boundary).
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(CONTROL_PAYLOAD_BYTES_MAX - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode_frame(out, Opcode::Close, &payload);
}

/// The close frame that answers a client's close: the same code, or an empty close for an
/// empty one.
pub fn encode_close_reply(out: &mut Vec<u8>, code: Option<u16>) {
    match code {
        Some(code) => encode_close(out, code, ""),
        None => encode_frame(out, Opcode::Close, &[]),
    }
}

#[cfg(test)]
mod tests;
