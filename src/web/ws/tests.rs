//! Tests of the WebSocket codec: RFC 6455's examples, every refusal, random bytes, and a real
//! exchange with `tungstenite` as an independent client.

use super::*;
use crate::web::http;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame: FIN, opcode bits, masked payload.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

fn events(bytes: &[u8]) -> Result<Vec<Event>, Failure> {
    let mut decoder = Decoder::new();
    let (events, used) = decoder.decode_all(bytes)?;
    assert_eq!(used, bytes.len(), "every byte is a complete frame here");
    Ok(events)
}

fn failure_code(bytes: &[u8]) -> u16 {
    match events(bytes) {
        Err(failure) => failure.code,
        Ok(events) => panic!("expected a failure, got {events:?}"),
    }
}

#[test]
fn accept_key_matches_rfc_6455_section_1_3() {
    assert_eq!(
        accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn base64_matches_rfc_4648_vectors() {
    let vectors = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (plain, encoded) in vectors {
        assert_eq!(base64(plain.as_bytes()), encoded);
    }
}

fn upgrade_head(extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n"
    )
}

#[test]
fn handshake_is_checked() {
    let status = |head: &str| {
        let req = http::parse(head.as_bytes()).unwrap();
        check_handshake(&req).map_err(|i| i.status)
    };
    let good = "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    assert_eq!(
        status(&upgrade_head(good)),
        Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into())
    );
    let no_key = "Sec-WebSocket-Version: 13\r\n";
    assert_eq!(status(&upgrade_head(no_key)), Err(400));
    let bad_key = "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short==\r\n";
    assert_eq!(status(&upgrade_head(bad_key)), Err(400));
    let old = "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    assert_eq!(status(&upgrade_head(old)), Err(426));
    assert_eq!(status("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"), Err(426));
    let mut out = Vec::new();
    write_handshake_response(&mut out, "abc=");
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(text.contains("\r\nSec-WebSocket-Accept: abc=\r\n"));
    assert!(text.ends_with("\r\n\r\n"));
}

#[test]
fn rfc_examples_decode() {
    // §5.7: a single-frame masked text message.
    let hello = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(events(&hello), Ok(vec![Event::Text("Hello".into())]));
    // §5.7: a fragmented text message (the RFC shows it unmasked; clients mask).
    let mut fragmented = client_frame(false, 0x1, b"Hel");
    fragmented.extend(client_frame(true, 0x0, b"lo"));
    assert_eq!(events(&fragmented), Ok(vec![Event::Text("Hello".into())]));
    // §5.7: a masked pong.
    let pong = [
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(events(&pong), Ok(vec![Event::Pong(b"Hello".to_vec())]));
    let ping = client_frame(true, 0x9, b"Hello");
    assert_eq!(events(&ping), Ok(vec![Event::Ping(b"Hello".to_vec())]));
    // 256 bytes and 64 KiB in one binary frame: the 16- and 64-bit length forms.
    for len in [256usize, 64 * 1024] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let frame = client_frame(true, 0x2, &payload);
        assert_eq!(events(&frame), Ok(vec![Event::Binary(payload)]));
    }
}

#[test]
fn rfc_examples_encode() {
    let mut out = Vec::new();
    encode_text(&mut out, "Hello");
    assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    out.clear();
    encode_frame(&mut out, Opcode::Ping, b"Hello");
    assert_eq!(out, [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    out.clear();
    encode_pong(&mut out, b"Hello");
    assert_eq!(out, [0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    out.clear();
    encode_frame(&mut out, Opcode::Binary, &[0; 256]);
    assert_eq!(out[..4], [0x82, 0x7e, 0x01, 0x00]);
    assert_eq!(out.len(), 4 + 256);
    out.clear();
    encode_frame(&mut out, Opcode::Binary, &[0; 65536]);
    assert_eq!(out[..10], [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert_eq!(out.len(), 10 + 65536);
}

#[test]
fn close_frames_encode_and_decode() {
    let mut out = Vec::new();
    encode_close(&mut out, CLOSE_TOO_BIG, "too big");
    assert_eq!(out[..4], [0x88, 9, 0x03, 0xf1]);
    assert_eq!(&out[4..], b"too big");
    out.clear();
    encode_close(&mut out, CLOSE_NORMAL, &"é".repeat(100));
    assert_eq!(
        out[1] as usize,
        2 + 122,
        "cut at a character boundary within 125 bytes"
    );
    out.clear();
    encode_close_reply(&mut out, None);
    assert_eq!(out, [0x88, 0x00]);
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    let expected = Event::Close {
        code: Some(1000),
        reason: "bye".into(),
    };
    assert_eq!(events(&client_frame(true, 0x8, &close)), Ok(vec![expected]));
    let empty = Event::Close {
        code: None,
        reason: String::new(),
    };
    assert_eq!(events(&client_frame(true, 0x8, &[])), Ok(vec![empty]));
}

#[test]
fn protocol_errors_are_1002() {
    let unmasked_hello = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(failure_code(&unmasked_hello), CLOSE_PROTOCOL_ERROR);
    let mut rsv = client_frame(true, 0x1, b"x");
    rsv[0] |= 0x40;
    assert_eq!(failure_code(&rsv), CLOSE_PROTOCOL_ERROR);
    for opcode in [0x3, 0x7, 0xb, 0xf] {
        let frame = client_frame(true, opcode, b"x");
        assert_eq!(
            failure_code(&frame),
            CLOSE_PROTOCOL_ERROR,
            "opcode {opcode}"
        );
    }
    let big_ping = client_frame(true, 0x9, &[0; 126]);
    assert_eq!(failure_code(&big_ping), CLOSE_PROTOCOL_ERROR);
    let fragmented_ping = client_frame(false, 0x9, b"x");
    assert_eq!(failure_code(&fragmented_ping), CLOSE_PROTOCOL_ERROR);
    let orphan = client_frame(true, 0x0, b"x");
    assert_eq!(failure_code(&orphan), CLOSE_PROTOCOL_ERROR);
    let mut interleaved = client_frame(false, 0x1, b"a");
    interleaved.extend(client_frame(true, 0x1, b"b"));
    assert_eq!(failure_code(&interleaved), CLOSE_PROTOCOL_ERROR);
    let mut top_bit = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
    top_bit.extend_from_slice(&MASK);
    assert_eq!(failure_code(&top_bit), CLOSE_PROTOCOL_ERROR);
    assert_eq!(
        failure_code(&client_frame(true, 0x8, &[3])),
        CLOSE_PROTOCOL_ERROR
    );
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 2000, 5000] {
        let frame = client_frame(true, 0x8, &code.to_be_bytes());
        assert_eq!(
            failure_code(&frame),
            CLOSE_PROTOCOL_ERROR,
            "close code {code}"
        );
    }
}

#[test]
fn oversized_frames_and_messages_are_1009_before_the_payload_arrives() {
    let header_only = [0x82, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 1];
    assert_eq!(
        decode_frame(&header_only),
        Decoded::Invalid(fail(CLOSE_TOO_BIG, "frame too large"))
    );
    let half = vec![b'a'; MESSAGE_BYTES_MAX / 2];
    let mut message = client_frame(false, 0x1, &half);
    message.extend(client_frame(false, 0x0, &half));
    message.extend(client_frame(true, 0x0, b"a"));
    assert_eq!(failure_code(&message), CLOSE_TOO_BIG);
}

#[test]
fn text_must_be_utf8_even_across_fragments() {
    assert_eq!(
        failure_code(&client_frame(true, 0x1, b"a\xffb")),
        CLOSE_INVALID_DATA
    );
    // Refused at the first fragment, before the message ends.
    let bad_start = client_frame(false, 0x1, b"\xed\xa0\x80");
    assert_eq!(failure_code(&bad_start), CLOSE_INVALID_DATA);
    // "é" split between two fragments is fine.
    let mut split = client_frame(false, 0x1, b"caf\xc3");
    split.extend(client_frame(true, 0x0, b"\xa9!"));
    assert_eq!(events(&split), Ok(vec![Event::Text("café!".into())]));
    // A sequence still unfinished when the message ends is not.
    let mut truncated = client_frame(false, 0x1, b"caf");
    truncated.extend(client_frame(true, 0x0, b"\xc3"));
    assert_eq!(failure_code(&truncated), CLOSE_INVALID_DATA);
    let mut bad_reason = 1000u16.to_be_bytes().to_vec();
    bad_reason.push(0xff);
    assert_eq!(
        failure_code(&client_frame(true, 0x8, &bad_reason)),
        CLOSE_INVALID_DATA
    );
    // Binary is not checked.
    assert_eq!(
        events(&client_frame(true, 0x2, b"\xff")),
        Ok(vec![Event::Binary(vec![0xff])])
    );
}

#[test]
fn rfc_opening_handshake_example_is_accepted() {
    // RFC 6455 §1.2's client handshake, byte for byte, with its §1.3 answer.
    let rfc = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
               Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
               Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
               Sec-WebSocket-Version: 13\r\n\r\n";
    let req = http::parse(rfc.as_bytes()).unwrap();
    assert_eq!(
        check_handshake(&req).map_err(|i| i.status),
        Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into())
    );
    // Firefox sends `Connection: keep-alive, Upgrade`; header values are case-insensitive.
    let firefox = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n\
                   Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let req = http::parse(firefox.as_bytes()).unwrap();
    assert_eq!(
        check_handshake(&req).map_err(|i| i.status),
        Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into())
    );
}

#[test]
fn rfc_unmasked_examples_from_a_client_are_1002() {
    // §5.7's unmasked frames are what a server sends; from a client each one is refused.
    let unmasked: [&[u8]; 4] = [
        &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
        &[0x01, 0x03, 0x48, 0x65, 0x6c],
        &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
        &[0x82, 0x7e, 0x01, 0x00],
    ];
    for frame in unmasked {
        assert_eq!(
            decode_frame(frame),
            Decoded::Invalid(fail(CLOSE_PROTOCOL_ERROR, "client frames must be masked")),
            "{frame:x?}"
        );
    }
    // Refused on the header alone: the payload of an unmasked 64 KiB frame is never awaited.
    let header_only = [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0];
    assert!(matches!(decode_frame(&header_only), Decoded::Invalid(_)));
}

#[test]
fn every_reserved_bit_and_opcode_is_1002() {
    for bit in [0x40, 0x20, 0x10] {
        let mut frame = client_frame(true, 0x1, b"x");
        frame[0] |= bit;
        assert_eq!(failure_code(&frame), CLOSE_PROTOCOL_ERROR, "bit {bit:#x}");
    }
    for opcode in (0x3..=0x7).chain(0xb..=0xf) {
        let frame = client_frame(true, opcode, b"");
        assert_eq!(
            failure_code(&frame),
            CLOSE_PROTOCOL_ERROR,
            "opcode {opcode:#x}"
        );
    }
}

#[test]
fn control_frames_up_to_125_bytes_pass_and_longer_or_fragmented_are_1002() {
    let payload = [b'p'; CONTROL_PAYLOAD_BYTES_MAX];
    assert_eq!(
        events(&client_frame(true, 0x9, &payload)),
        Ok(vec![Event::Ping(payload.to_vec())])
    );
    for opcode in [0x8, 0x9, 0xa] {
        let long = client_frame(true, opcode, &[b'x'; 126]);
        assert_eq!(
            failure_code(&long),
            CLOSE_PROTOCOL_ERROR,
            "opcode {opcode:#x}"
        );
        let fragmented = client_frame(false, opcode, b"");
        assert_eq!(
            failure_code(&fragmented),
            CLOSE_PROTOCOL_ERROR,
            "opcode {opcode:#x}"
        );
    }
    // A 126-byte control frame is refused on its header, before the payload arrives.
    let header_only = [0x89, 0x80 | 126, 0, 126];
    assert!(matches!(decode_frame(&header_only), Decoded::Invalid(f) if f.code == 1002));
}

#[test]
fn invalid_utf8_split_across_fragments_is_1007_before_the_message_ends() {
    // A three-byte sequence started in one fragment and broken in the next: refused at the
    // second fragment, though the message is not finished.
    let mut broken = client_frame(false, 0x1, b"ok \xe2\x82");
    broken.extend(client_frame(false, 0x0, b"\x28 and more"));
    assert_eq!(failure_code(&broken), CLOSE_INVALID_DATA);
    // An invalid byte in a middle fragment after valid ones.
    let mut middle = client_frame(false, 0x1, b"fine");
    middle.extend(client_frame(false, 0x0, b"also fine"));
    middle.extend(client_frame(false, 0x0, b"\xc0\xaf"));
    assert_eq!(failure_code(&middle), CLOSE_INVALID_DATA);
    // A four-byte character spread over three fragments, a ping in between, is fine.
    let mut spread = client_frame(false, 0x1, b"\xf0\x9f");
    spread.extend(client_frame(true, 0x9, b""));
    spread.extend(client_frame(false, 0x0, b"\x98"));
    spread.extend(client_frame(true, 0x0, b"\x80"));
    let expected = vec![Event::Ping(Vec::new()), Event::Text("\u{1F600}".into())];
    assert_eq!(events(&spread), Ok(expected));
    // Code points past U+10FFFF and overlong forms are refused even when unfinished.
    for bad in [&b"\xf4\x90"[..], b"\xe0\x80", b"\xc1"] {
        let unfinished = client_frame(false, 0x1, bad);
        assert_eq!(failure_code(&unfinished), CLOSE_INVALID_DATA, "{bad:x?}");
    }
}

#[test]
fn control_frames_interleave_with_fragments() {
    let mut bytes = client_frame(false, 0x1, b"Hel");
    bytes.extend(client_frame(true, 0x9, b"p"));
    bytes.extend(client_frame(true, 0x0, b"lo"));
    let expected = vec![Event::Ping(b"p".to_vec()), Event::Text("Hello".into())];
    assert_eq!(events(&bytes), Ok(expected));
}

#[test]
fn bytes_arriving_one_at_a_time_give_the_same_events() {
    let mut stream = client_frame(false, 0x1, b"Hel");
    stream.extend(client_frame(true, 0x0, b"lo"));
    stream.extend(client_frame(true, 0x9, b""));
    stream.extend(client_frame(true, 0x1, &[b'z'; 300]));
    stream.extend(client_frame(true, 0x8, &1000u16.to_be_bytes()));
    stream.extend(client_frame(true, 0x1, b"after close: ignored"));
    let mut decoder = Decoder::new();
    let mut buf = Vec::new();
    let mut seen = Vec::new();
    for &b in &stream {
        buf.push(b);
        let (events, used) = decoder.decode_all(&buf).unwrap();
        buf.drain(..used);
        seen.extend(events);
        if matches!(seen.last(), Some(Event::Close { .. })) {
            break;
        }
    }
    let expected = vec![
        Event::Text("Hello".into()),
        Event::Ping(Vec::new()),
        Event::Text("z".repeat(300)),
        Event::Close {
            code: Some(1000),
            reason: String::new(),
        },
    ];
    assert_eq!(seen, expected);
}

#[test]
fn random_bytes_never_panic() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..20_000 {
        let len = (next() % 200) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 && len > 2 {
            // Mostly plausible headers: masked, small lengths, so payloads are reached.
            buf[0] = 0x80 | (buf[0] & 0x0f) | if round % 4 == 0 { 0 } else { 0x80 };
            buf[1] = 0x80 | (buf[1] % 130);
        }
        let mut decoder = Decoder::new();
        let mut rest = &buf[..];
        while let Ok((events, used)) = decoder.decode_all(rest) {
            if used == 0 || events.iter().any(|e| matches!(e, Event::Close { .. })) {
                break;
            }
            rest = &rest[used..];
        }
    }
}

mod with_tungstenite {
    //! A tiny blocking server made of this crate's `http` and `ws` modules, and `tungstenite` as
    //! the client.

    use super::super::*;
    use crate::web::http::{self, Check, Route};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::thread;
    use std::time::Duration;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::{CloseFrame, Frame as TFrame};
    use tungstenite::Message;

    /// What the server saw.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Event(Event),
        Failed(u16),
    }

    fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Accepts one connection, upgrades it, echoes text as `echo:<text>`, answers pings and
    /// closes; returns everything it saw.
    fn serve_one(listener: TcpListener) -> Vec<Seen> {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = Vec::new();
        let head_len = loop {
            match http::check(&buf) {
                Check::Complete(n) => break n,
                Check::Incomplete => assert!(read_more(&mut stream, &mut buf)),
                Check::Invalid(invalid) => panic!("bad head: {invalid:?}"),
            }
        };
        let req = http::parse(&buf[..head_len]).unwrap();
        assert_eq!(http::route(&req), Ok(Route::WebSocket));
        let accept = check_handshake(&req).unwrap();
        let mut out = Vec::new();
        write_handshake_response(&mut out, &accept);
        stream.write_all(&out).unwrap();
        buf.drain(..head_len);
        converse(stream, buf)
    }

    fn converse(mut stream: TcpStream, mut buf: Vec<u8>) -> Vec<Seen> {
        let mut decoder = Decoder::new();
        let mut seen = Vec::new();
        loop {
            let mut out = Vec::new();
            let (events, used) = match decoder.decode_all(&buf) {
                Ok(found) => found,
                Err(failure) => {
                    encode_close(&mut out, failure.code, failure.reason);
                    stream.write_all(&out).unwrap();
                    seen.push(Seen::Failed(failure.code));
                    drain_until_eof(&mut stream);
                    return seen;
                }
            };
            buf.drain(..used);
            for event in events {
                match &event {
                    Event::Text(text) => encode_text(&mut out, &format!("echo:{text}")),
                    Event::Ping(payload) => encode_pong(&mut out, payload),
                    Event::Close { code, .. } => encode_close_reply(&mut out, *code),
                    Event::Binary(_) | Event::Pong(_) => {}
                }
                let closing = matches!(event, Event::Close { .. });
                seen.push(Seen::Event(event));
                stream.write_all(&out).unwrap();
                out.clear();
                if closing {
                    return seen;
                }
            }
            if !read_more(&mut stream, &mut buf) {
                return seen;
            }
        }
    }

    /// Reads until the client closes, so closing does not reset what was just sent.
    fn drain_until_eof(stream: &mut TcpStream) {
        let mut sink = Vec::new();
        while read_more(stream, &mut sink) {
            sink.clear();
        }
    }

    fn connect() -> (
        tungstenite::WebSocket<TcpStream>,
        thread::JoinHandle<Vec<Seen>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || serve_one(listener));
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (client, response) = tungstenite::client(format!("ws://{addr}/ws"), stream).unwrap();
        assert_eq!(response.status().as_u16(), 101);
        (client, server)
    }

    #[test]
    fn tungstenite_client_chats_pings_and_closes() {
        let (mut client, server) = connect();
        client.send(Message::Text("hello".into())).unwrap();
        let first = TFrame::message(b"Hel".to_vec(), OpCode::Data(Data::Text), false);
        let rest = TFrame::message(b"lo".to_vec(), OpCode::Data(Data::Continue), true);
        client.send(Message::Frame(first)).unwrap();
        client.send(Message::Frame(rest)).unwrap();
        client.send(Message::Text("naïve ✓".into())).unwrap();
        client.send(Message::Ping(b"p".to_vec())).unwrap();
        assert_eq!(client.read().unwrap(), Message::Text("echo:hello".into()));
        assert_eq!(client.read().unwrap(), Message::Text("echo:Hello".into()));
        assert_eq!(client.read().unwrap(), Message::Text("echo:naïve ✓".into()));
        assert_eq!(client.read().unwrap(), Message::Pong(b"p".to_vec()));
        let close = CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        };
        client.close(Some(close)).unwrap();
        match client.read() {
            Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1000),
            other => panic!("expected the server's close, got {other:?}"),
        }
        let seen = server.join().unwrap();
        let expected = vec![
            Seen::Event(Event::Text("hello".into())),
            Seen::Event(Event::Text("Hello".into())),
            Seen::Event(Event::Text("naïve ✓".into())),
            Seen::Event(Event::Ping(b"p".to_vec())),
            Seen::Event(Event::Close {
                code: Some(1000),
                reason: "bye".into(),
            }),
        ];
        assert_eq!(seen, expected);
    }

    #[test]
    fn tungstenite_client_over_the_cap_gets_close_1009() {
        let (mut client, server) = connect();
        let big = "x".repeat(FRAME_PAYLOAD_BYTES_MAX + 1);
        client.send(Message::Text(big)).unwrap();
        match client.read() {
            Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1009),
            other => panic!("expected close 1009, got {other:?}"),
        }
        drop(client);
        assert_eq!(server.join().unwrap(), vec![Seen::Failed(CLOSE_TOO_BIG)]);
    }
}
