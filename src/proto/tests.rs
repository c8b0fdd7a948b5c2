//! Round trips, truncation and hostile input for every frame of the client protocol.

use super::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn ss(session_id: u64, seq: u64, lowest_unacked_seq: u64) -> SessionSeq {
    SessionSeq {
        session_id,
        seq,
        lowest_unacked_seq,
    }
}

fn sample_requests() -> Vec<Request> {
    vec![
        Request::OpenSession { req_id: 1 },
        Request::Post {
            req_id: 2,
            session: ss(5, 1, 1),
            room: "general".into(),
            nick: "alice".into(),
            text: "Hello, Raft! ünïcødé ✓".into(),
        },
        Request::Post {
            req_id: u64::MAX,
            session: ss(u64::MAX, 9, 3),
            room: "".into(),
            nick: "".into(),
            text: "".into(),
        },
        Request::ReadLog {
            req_id: 3,
            from_position: 1,
            max_messages: 1000,
        },
        Request::Status { req_id: 4 },
        Request::Set {
            req_id: 5,
            session: ss(5, 2, 2),
            key: "k".into(),
            value: "v".into(),
        },
        Request::Get {
            req_id: 6,
            key: "k".into(),
        },
        Request::Cas {
            req_id: 7,
            session: ss(5, 3, 2),
            key: "k".into(),
            expected: None,
            new: "n".into(),
        },
        Request::Cas {
            req_id: 8,
            session: ss(5, 4, 4),
            key: "k".into(),
            expected: Some("v".into()),
            new: "".into(),
        },
        Request::Del {
            req_id: 9,
            session: ss(5, 5, 5),
            key: "k".into(),
        },
        Request::Keys {
            req_id: 10,
            prefix: "user-".into(),
        },
        Request::Keys {
            req_id: 11,
            prefix: "".into(),
        },
        Request::Register {
            req_id: 12,
            nick: "alice".into(),
            password: "s3cret-pw".into(),
        },
        Request::Login {
            req_id: 13,
            nick: "alice".into(),
            password: "".into(),
        },
        Request::Logout { req_id: 14 },
        Request::Passwd {
            req_id: 15,
            old: "s3cret-pw".into(),
            new: "n3w pässwörd".into(),
        },
        Request::Members { req_id: 16 },
        Request::AddMember {
            req_id: 17,
            id: 3,
            addr: "127.0.0.1:20003".into(),
        },
        Request::PromoteMember { req_id: 18, id: 3 },
        Request::RemoveMember {
            req_id: 19,
            id: u64::MAX,
        },
    ]
}

fn sample_answers() -> Vec<Answer> {
    let msg = |position: u64, text: &str| LogMessage {
        position,
        timestamp_ms: 1_700_000_000_000 + position,
        room: "general".into(),
        nick: "bob".into(),
        text: text.into(),
    };
    vec![
        Answer::SessionOpened {
            req_id: 1,
            session_id: 42,
        },
        Answer::Posted {
            req_id: 2,
            position: 17,
        },
        Answer::LogChunk {
            req_id: 3,
            total: 0,
            messages: vec![],
        },
        Answer::LogChunk {
            req_id: 3,
            total: 9,
            messages: vec![msg(1, "one"), msg(2, ""), msg(3, "ß")],
        },
        Answer::StatusReply {
            req_id: 4,
            status: NodeStatus {
                node_id: 2,
                role: Role::Leader,
                term: 7,
                leader: Some(2),
                commit: 100,
                applied: 99,
            },
        },
        Answer::StatusReply {
            req_id: 4,
            status: NodeStatus {
                node_id: 0,
                role: Role::PreCandidate,
                term: 1,
                leader: None,
                commit: 0,
                applied: 0,
            },
        },
        Answer::KvAck {
            req_id: 5,
            revision: 3,
        },
        Answer::KvValue {
            req_id: 6,
            value: Some("v".into()),
            revision: 3,
        },
        Answer::KvValue {
            req_id: 6,
            value: None,
            revision: 0,
        },
        Answer::CasFailed {
            req_id: 7,
            current: Some("x".into()),
        },
        Answer::CasFailed {
            req_id: 7,
            current: None,
        },
        Answer::KeyList {
            req_id: 9,
            total: 0,
            keys: vec![],
        },
        Answer::KeyList {
            req_id: 9,
            total: 3,
            keys: vec!["user-".into(), "user-a".into(), "user-ß".into()],
        },
        Answer::KeyList {
            req_id: 9,
            total: 5000,
            keys: vec!["a".into(), "".into()],
        },
        Answer::AccountOk {
            req_id: 12,
            nick: "alice".into(),
            message: "logged in as alice".into(),
        },
        Answer::Error {
            req_id: 8,
            kind: ErrorKind::NotLeaderNotStored,
            leader_hint: Some(1),
            message: "not leader".into(),
        },
        Answer::Error {
            req_id: 0,
            kind: ErrorKind::Overloaded,
            leader_hint: None,
            message: "".into(),
        },
        Answer::MemberList {
            req_id: 9,
            list: MemberList {
                cluster_id: 0xfeed,
                node_id: 2,
                leader: Some(1),
                members: vec![
                    MemberInfo {
                        id: 1,
                        addr: "127.0.0.1:20001".into(),
                        voter: true,
                    },
                    MemberInfo {
                        id: 3,
                        addr: "-".into(),
                        voter: false,
                    },
                ],
                bootstrap: vec![(0, "127.0.0.1:20000".into()), (1, "127.0.0.1:20001".into())],
            },
        },
        Answer::MemberList {
            req_id: 10,
            list: MemberList::default(),
        },
        Answer::MemberOk {
            req_id: 11,
            message: "node 3 is a voter".into(),
        },
    ]
}

fn encoded<T>(items: &[T], encode: impl Fn(&T, &mut Vec<u8>)) -> Vec<Vec<u8>> {
    items
        .iter()
        .map(|item| {
            let mut buf = Vec::new();
            encode(item, &mut buf);
            buf
        })
        .collect()
}

#[test]
fn every_request_round_trips() {
    let reqs = sample_requests();
    let mut types = std::collections::BTreeSet::new();
    for (req, buf) in reqs.iter().zip(encoded(&reqs, Request::encode)) {
        req.check_encodable().unwrap();
        assert_eq!(decode_request(&buf), Ok(Some((req.clone(), buf.len()))));
        types.insert(req.frame_type());
    }
    assert_eq!(types.len(), 17, "every request type is sampled");
}

#[test]
fn every_answer_round_trips() {
    let answers = sample_answers();
    let mut types = std::collections::BTreeSet::new();
    for (answer, buf) in answers.iter().zip(encoded(&answers, Answer::encode)) {
        assert_eq!(decode_answer(&buf), Ok(Some((answer.clone(), buf.len()))));
        types.insert(answer.frame_type());
    }
    assert_eq!(types.len(), 12, "every answer type is sampled");
    for kind in ErrorKind::ALL {
        let a = Answer::Error {
            req_id: 1,
            kind,
            leader_hint: None,
            message: kind.name().into(),
        };
        let mut buf = Vec::new();
        a.encode(&mut buf);
        assert_eq!(decode_answer(&buf).unwrap().unwrap().0, a);
    }
}

#[test]
fn frames_back_to_back_decode_one_at_a_time() {
    let mut buf = Vec::new();
    for req in sample_requests() {
        req.encode(&mut buf);
    }
    let mut at = 0;
    let mut decoded = Vec::new();
    while let Some((req, used)) = decode_request(&buf[at..]).unwrap() {
        decoded.push(req);
        at += used;
    }
    assert_eq!(at, buf.len());
    assert_eq!(decoded, sample_requests());
}

#[test]
fn every_prefix_is_incomplete() {
    for buf in encoded(&sample_requests(), Request::encode) {
        for n in 0..buf.len() {
            assert_eq!(decode_request(&buf[..n]), Ok(None), "prefix {n} of {buf:?}");
        }
    }
    for buf in encoded(&sample_answers(), Answer::encode) {
        for n in 0..buf.len() {
            assert_eq!(decode_answer(&buf[..n]), Ok(None), "prefix {n} of {buf:?}");
        }
    }
}

#[test]
fn log_chunk_from_borrowed_messages_matches_owned() {
    let Answer::LogChunk { messages, .. } = &sample_answers()[3] else {
        unreachable!()
    };
    let mut a = Vec::new();
    encode_log_chunk(&mut a, 3, 9, messages.iter().map(LogMessage::as_ref));
    let mut b = Vec::new();
    sample_answers()[3].encode(&mut b);
    assert_eq!(a, b);
    let body: usize = messages.iter().map(|m| m.as_ref().encoded_len()).sum();
    assert_eq!(a.len(), HEADER_LEN + LOG_CHUNK_FIXED_LEN + body);
}

#[test]
fn preamble() {
    let mut buf = Vec::new();
    encode_preamble(&mut buf);
    assert_eq!(buf, b"\0RCB\0\x01");
    for n in 0..buf.len() {
        assert_eq!(decode_preamble(&buf[..n]), Ok(None));
    }
    buf.push(0xAA); // the first frame's bytes may follow in the same read
    assert_eq!(decode_preamble(&buf), Ok(Some(PREAMBLE_LEN)));
    assert_eq!(
        decode_preamble(b"\0RCB\0\x02"),
        Err(ProtoError::BadVersion(2))
    );
    assert_eq!(decode_preamble(b"m"), Err(ProtoError::BadMagic));
    assert_eq!(decode_preamble(b"\0RX"), Err(ProtoError::BadMagic));
}

/// Builds a frame with a correct checksum around an arbitrary body.
fn raw_frame(frame_type: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let start = begin_frame(&mut out, frame_type);
    out.extend_from_slice(body);
    finish_frame(&mut out, start);
    out
}

#[test]
fn malformed_frames_are_named_errors() {
    // A huge claimed length is refused from the length bytes alone.
    assert_eq!(
        decode_request(&[0x00, 0x10, 0x00, 0x01]),
        Err(ProtoError::BodyTooLong(BODY_LEN_MAX as u32 + 1))
    );
    assert_eq!(
        decode_answer(&[0xFF; 4]),
        Err(ProtoError::BodyTooLong(u32::MAX))
    );
    // Exactly the limit is allowed: incomplete, not an error.
    assert_eq!(
        decode_request(&(BODY_LEN_MAX as u32).to_be_bytes()),
        Ok(None)
    );

    let mut buf = Vec::new();
    Request::Status { req_id: 1 }.encode(&mut buf);
    buf[HEADER_LEN] ^= 1;
    assert!(matches!(
        decode_request(&buf),
        Err(ProtoError::BadChecksum { .. })
    ));

    assert_eq!(
        decode_request(&raw_frame(101, &[0; 16])),
        Err(ProtoError::UnknownFrameType(101))
    );
    assert_eq!(
        decode_answer(&raw_frame(2, &[0; 8])),
        Err(ProtoError::UnknownFrameType(2))
    );
    assert_eq!(
        decode_request(&raw_frame(4, &[0; 9])),
        Err(ProtoError::TrailingBytes(1))
    );
    assert_eq!(
        decode_request(&raw_frame(4, &[0; 7])),
        Err(ProtoError::Truncated { field: "req_id" })
    );

    // A string claiming more bytes than the body holds.
    let mut body = vec![0; 8];
    body.extend_from_slice(&[0xFF, 0xFF, b'a']);
    assert_eq!(
        decode_request(&raw_frame(6, &body)),
        Err(ProtoError::Truncated { field: "key" })
    );
    // Invalid UTF-8.
    let mut body = vec![0; 8];
    body.extend_from_slice(&[0, 2, 0xC3, 0x28]);
    assert_eq!(
        decode_request(&raw_frame(6, &body)),
        Err(ProtoError::NotUtf8 { field: "key" })
    );
    // A LogChunk claiming 4 billion messages in 20 bytes: refused, nothing allocated.
    let mut body = vec![0; 16];
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        decode_answer(&raw_frame(103, &body)),
        Err(ProtoError::Truncated { field: "messages" })
    );
    // A KeyList claiming 4 billion keys, or more keys than its bytes can hold: refused.
    let mut body = vec![0; 16];
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        decode_answer(&raw_frame(108, &body)),
        Err(ProtoError::Truncated { field: "keys" })
    );
    let mut body = vec![0; 16];
    body.extend_from_slice(&3u32.to_be_bytes());
    body.extend_from_slice(&[0, 0, 0, 0]); // room for two empty keys, not three
    assert_eq!(
        decode_answer(&raw_frame(108, &body)),
        Err(ProtoError::Truncated { field: "keys" })
    );
    // A key claiming more bytes than remain, a key that is not UTF-8, a cut-off count.
    let mut body = vec![0; 16];
    body.extend_from_slice(&1u32.to_be_bytes());
    body.extend_from_slice(&[0, 5, b'a', b'b']);
    assert_eq!(
        decode_answer(&raw_frame(108, &body)),
        Err(ProtoError::Truncated { field: "key" })
    );
    let mut body = vec![0; 16];
    body.extend_from_slice(&1u32.to_be_bytes());
    body.extend_from_slice(&[0, 1, 0xFF]);
    assert_eq!(
        decode_answer(&raw_frame(108, &body)),
        Err(ProtoError::NotUtf8 { field: "key" })
    );
    assert_eq!(
        decode_answer(&raw_frame(108, &[0; 18])),
        Err(ProtoError::Truncated { field: "count" })
    );
    // A Keys request whose prefix runs past the body, or with bytes after it.
    assert_eq!(
        decode_request(&raw_frame(9, &[0; 9])),
        Err(ProtoError::Truncated { field: "prefix" })
    );
    assert_eq!(
        decode_request(&raw_frame(9, &[0; 11])),
        Err(ProtoError::TrailingBytes(1))
    );
    // Bad option tag, role, error kind.
    let mut body = vec![0; 8];
    body.push(2);
    assert_eq!(
        decode_answer(&raw_frame(107, &body)),
        Err(ProtoError::BadOptionTag(2))
    );
    let mut body = vec![0; 16];
    body.push(4);
    assert_eq!(
        decode_answer(&raw_frame(104, &body)),
        Err(ProtoError::BadRole(4))
    );
    let mut body = vec![0; 8];
    body.push(7);
    assert_eq!(
        decode_answer(&raw_frame(110, &body)),
        Err(ProtoError::BadErrorKind(7))
    );
}

#[test]
fn a_key_list_never_exceeds_the_body_limit() {
    // 5,000 keys of 256 bytes: about 1.3 MB, more than one frame may carry.
    let keys: Vec<String> = (0..5000).map(|i| format!("{i:0>256}")).collect();
    let total = keys.len() as u64;
    let mut buf = Vec::new();
    let written = encode_key_list(&mut buf, 7, total, keys.iter().map(String::as_str));
    let body_len = buf.len() - HEADER_LEN;
    assert!(body_len <= BODY_LEN_MAX, "{body_len}");
    assert_eq!(written, (BODY_LEN_MAX - KEY_LIST_FIXED_LEN) / 258);
    assert!(
        body_len + 258 > BODY_LEN_MAX,
        "as many keys as fit, no fewer"
    );
    let (answer, used) = decode_answer(&buf).unwrap().unwrap();
    assert_eq!(used, buf.len());
    let Answer::KeyList {
        req_id: 7,
        total: 5000,
        keys: got,
    } = answer
    else {
        panic!("{answer:?}")
    };
    assert_eq!(got.len(), written);
    assert_eq!(got[..], keys[..written], "the first keys, in order");

    // An owned answer with too many keys is cut the same way, still one valid frame.
    let mut again = Vec::new();
    Answer::KeyList {
        req_id: 7,
        total,
        keys,
    }
    .encode(&mut again);
    assert_eq!(again, buf);

    // Exactly at the limit: keys that fill the body to its last byte are all kept, and not
    // even an empty key more.
    let space = BODY_LEN_MAX - KEY_LIST_FIXED_LEN;
    let full = space / (2 + STR_LEN_MAX);
    let mut keys = vec!["x".repeat(STR_LEN_MAX); full];
    keys.push("y".repeat(space - full * (2 + STR_LEN_MAX) - 2));
    keys.push(String::new());
    let mut buf = Vec::new();
    let written = encode_key_list(&mut buf, 1, 99, keys.iter().map(String::as_str));
    assert_eq!(written, full + 1);
    assert_eq!(buf.len() - HEADER_LEN, BODY_LEN_MAX);
    let Some((Answer::KeyList { keys: got, .. }, _)) = decode_answer(&buf).unwrap() else {
        panic!("a KeyList")
    };
    assert_eq!(got[..], keys[..full + 1]);
}

#[test]
fn too_long_strings_are_caught_before_encoding() {
    let long = "é".repeat(STR_LEN_MAX / 2 + 1); // 65538 bytes
    let req = Request::Get {
        req_id: 1,
        key: long.clone(),
    };
    assert_eq!(
        req.check_encodable(),
        Err(ProtoError::TooLong {
            field: "key",
            len: long.len()
        })
    );
    let keys = Request::Keys {
        req_id: 1,
        prefix: long.clone(),
    };
    assert_eq!(
        keys.check_encodable(),
        Err(ProtoError::TooLong {
            field: "prefix",
            len: long.len()
        })
    );
    // Encoding anyway cuts at a char boundary and still yields a valid frame.
    let mut buf = Vec::new();
    req.encode(&mut buf);
    let (Request::Get { key, .. }, _) = decode_request(&buf).unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(key.len(), STR_LEN_MAX - 1);
    assert!(long.starts_with(&key));
}

#[test]
fn single_bit_flips_never_panic_and_body_flips_are_caught() {
    let frames: Vec<(bool, Vec<u8>)> = encoded(&sample_requests(), Request::encode)
        .into_iter()
        .map(|b| (true, b))
        .chain(
            encoded(&sample_answers(), Answer::encode)
                .into_iter()
                .map(|b| (false, b)),
        )
        .collect();
    for (is_request, frame) in frames {
        for bit in 0..frame.len() * 8 {
            let mut buf = frame.clone();
            buf[bit / 8] ^= 1 << (bit % 8);
            let ok = if is_request {
                decode_request(&buf).map(|r| r.is_some())
            } else {
                decode_answer(&buf).map(|r| r.is_some())
            };
            // CRC32C detects every single-bit error in the body or in the stored checksum.
            let in_checksum_or_body = bit / 8 >= 5;
            if in_checksum_or_body {
                assert!(
                    matches!(ok, Err(ProtoError::BadChecksum { .. })),
                    "bit {bit}: {ok:?}"
                );
            }
        }
    }
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = SmallRng::seed_from_u64(0x5EED_C11E);
    let types: Vec<u8> = (1..=13).chain(101..=110).chain([0, 14, 111, 255]).collect();
    let valid: Vec<Vec<u8>> = encoded(&sample_requests(), Request::encode)
        .into_iter()
        .chain(encoded(&sample_answers(), Answer::encode))
        .collect();
    let mut decoded_some = 0;
    for i in 0..30_000 {
        let buf = match i % 3 {
            // Random bytes: mostly stopped by the length or checksum.
            0 => (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect(),
            // A well-formed header around a random body, so the body parsers see garbage.
            1 => {
                let len = rng.gen_range(0..64);
                let body: Vec<u8> = (0..len)
                    .map(|_| {
                        if rng.gen_bool(0.3) {
                            rng.gen_range(0..3)
                        } else {
                            rng.gen()
                        }
                    })
                    .collect();
                raw_frame(types[rng.gen_range(0..types.len())], &body)
            }
            // A valid frame with a few bytes changed (or cut) and its checksum fixed up.
            _ => {
                let frame = &valid[rng.gen_range(0..valid.len())];
                let mut body = frame[HEADER_LEN..].to_vec();
                for _ in 0..rng.gen_range(1..4) {
                    if body.is_empty() {
                        break;
                    }
                    let at = rng.gen_range(0..body.len());
                    body[at] = if rng.gen_bool(0.5) {
                        rng.gen_range(0..4)
                    } else {
                        rng.gen()
                    };
                }
                if rng.gen_bool(0.2) {
                    body.truncate(rng.gen_range(0..=body.len()));
                }
                raw_frame(frame[4], &body)
            }
        };
        let r = decode_request(&buf);
        let a = decode_answer(&buf);
        let _ = decode_preamble(&buf);
        if let Ok(Some((req, used))) = r {
            decoded_some += 1;
            assert!(used <= buf.len());
            let mut again = Vec::new();
            req.encode(&mut again);
            assert_eq!(again, buf[..used], "decode then encode is the identity");
        }
        if let Ok(Some((answer, used))) = a {
            decoded_some += 1;
            let mut again = Vec::new();
            answer.encode(&mut again);
            assert_eq!(again, buf[..used], "decode then encode is the identity");
        }
    }
    assert!(
        decoded_some > 3_000,
        "the generator reaches the body parsers ({decoded_some})"
    );
}

/// The account requests, mutated (fixed seed, bounded): a field's length prefix changed, bytes
/// replaced, the body cut or grown, the frame type swapped for another account type. The
/// decoder never panics; what it accepts re-encodes to the same bytes, and what it refuses is a
/// named error, so the server closes only that connection and changes nothing.
#[test]
fn mutated_account_requests_never_panic_and_round_trip_when_accepted() {
    let mut rng = SmallRng::seed_from_u64(0xACC0_0017);
    let accounts: Vec<Request> = sample_requests()
        .into_iter()
        .filter(|r| (frame_type::REGISTER..=frame_type::PASSWD).contains(&r.frame_type()))
        .collect();
    assert_eq!(accounts.len(), 4);
    let frames = encoded(&accounts, Request::encode);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..20_000 {
        let frame = &frames[rng.gen_range(0..frames.len())];
        let mut body = frame[HEADER_LEN..].to_vec();
        match rng.gen_range(0..4) {
            // A string length prefix (after the 8-byte req_id) set to something else.
            0 if body.len() >= 10 => {
                let len: u16 = rng.gen_range(0..64);
                body[8..10].copy_from_slice(&len.to_be_bytes());
            }
            1 => {
                for _ in 0..rng.gen_range(1..4) {
                    if let Some(at) = (!body.is_empty()).then(|| rng.gen_range(0..body.len())) {
                        body[at] = rng.gen();
                    }
                }
            }
            2 => body.truncate(rng.gen_range(0..=body.len())),
            _ => body.extend((0..rng.gen_range(1..8)).map(|_| rng.gen::<u8>())),
        }
        let frame_type = if rng.gen_bool(0.2) {
            rng.gen_range(frame_type::REGISTER..=frame_type::PASSWD + 1)
        } else {
            frame[4]
        };
        let buf = raw_frame(frame_type, &body);
        match decode_request(&buf) {
            Ok(Some((request, used))) => {
                accepted += 1;
                assert_eq!(used, buf.len());
                let mut again = Vec::new();
                request.encode(&mut again);
                assert_eq!(again, buf, "decode then encode is the identity");
            }
            Ok(None) => panic!("a whole frame is never incomplete: {buf:?}"),
            Err(e) => {
                refused += 1;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    assert!(accepted > 1_000 && refused > 1_000, "{accepted} {refused}");
}
