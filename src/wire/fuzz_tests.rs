//! Seeded random inputs against the decoders: garbage, checksummed garbage that reaches the body
//! parsers, corrupted and truncated valid frames. The decoders must never panic, and whatever they
//! accept must be canonical: re-encoding a decoded frame gives back exactly the bytes consumed.
//!
//! Bound: about 30k decodes of buffers under 1 KiB; well under a second in release builds.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::peer::tests::sample_frames;
use super::*;
use crate::raft::MessageBody;

/// Re-encodes a decoded frame; the bytes must be the ones it was decoded from.
fn encode(frame: &PeerFrame<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    match frame {
        PeerFrame::Raft(msg) => encode_raft_message(msg, &mut out),
        PeerFrame::Propose { origin_req, data } => encode_propose(*origin_req, data, &mut out),
        PeerFrame::ProposeRejected {
            origin_req,
            leader_hint,
        } => encode_propose_rejected(*origin_req, *leader_hint, &mut out),
        PeerFrame::SnapshotChunk {
            term,
            snapshot,
            total_len,
            offset,
            data,
        } => encode_snapshot_chunk(*term, *snapshot, *total_len, *offset, data, &mut out),
        PeerFrame::SnapshotAck { snapshot, received } => {
            encode_snapshot_ack(*snapshot, *received, &mut out)
        }
        PeerFrame::HistoryRequest {
            snapshot,
            from_position,
            through,
        } => encode_history_request(*snapshot, *from_position, *through, &mut out),
        PeerFrame::HistoryPage {
            snapshot,
            first_position,
            count,
            messages,
        } => encode_history_page(*snapshot, *first_position, *count, messages, &mut out),
        PeerFrame::HistoryRefused {
            snapshot,
            from_position,
            reason,
        } => encode_history_refused(*snapshot, *from_position, reason, &mut out),
    }
    out
}

/// Decodes `buf` and checks what any decode must satisfy; returns whether a frame came out.
fn check_decode(buf: &[u8]) -> bool {
    match decode_peer_frame(buf) {
        Ok(Some((frame, consumed))) => {
            assert!(consumed <= buf.len());
            assert_eq!(encode(&frame), &buf[..consumed], "non-canonical accept");
            true
        }
        Ok(None) => false,
        Err(err) => {
            assert!(!err.to_string().is_empty());
            false
        }
    }
}

fn random_bytes(rng: &mut SmallRng, len_max: usize) -> Vec<u8> {
    let len = rng.gen_range(0..=len_max);
    (0..len).map(|_| rng.gen()).collect()
}

/// A frame with a valid checksum around a random body, so the body parsers see garbage.
fn checksummed_garbage(rng: &mut SmallRng) -> Vec<u8> {
    const TYPES: [u8; 19] = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x10, 0x11, 0x12, 0x13, 0x14,
        0x15, 0x16, 0x00, 0x42,
    ];
    let frame_type = TYPES[rng.gen_range(0..TYPES.len())];
    let mut body = random_bytes(rng, 80);
    if frame_type == 0x03 && rng.gen_bool(0.5) {
        // Plausible AppendEntries: mostly consistent counts and lengths, so entries parse.
        const ENTRIES_AT: usize = 24 + 3 * 8 + 4;
        body.resize(ENTRIES_AT, 0);
        let entry_count = rng.gen_range(0u32..4);
        let claimed_count = if rng.gen_bool(0.8) {
            entry_count
        } else {
            rng.gen_range(0..4)
        };
        body[ENTRIES_AT - 4..].copy_from_slice(&claimed_count.to_be_bytes());
        for _ in 0..entry_count {
            body.extend_from_slice(&rng.gen::<[u8; 16]>());
            body.push(rng.gen_range(0..3));
            let data_len = rng.gen_range(0u32..12);
            let claimed_len = if rng.gen_bool(0.8) {
                data_len
            } else {
                rng.gen_range(0..14)
            };
            body.extend_from_slice(&claimed_len.to_be_bytes());
            body.extend((0..data_len).map(|_| rng.gen::<u8>()));
        }
    }
    if rng.gen_bool(0.5) {
        // Make the bools and option tags in the fixed prefix plausible.
        for byte in body.iter_mut().skip(24).take(2) {
            *byte &= 1;
        }
    }
    let mut out = Vec::new();
    let start = out.len();
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.push(frame_type);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start..]), &body);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = SmallRng::seed_from_u64(0x5EED_0001);
    for _ in 0..5_000 {
        let buf = random_bytes(&mut rng, 256);
        check_decode(&buf);
        let _ = decode_handshake(&buf);
        let mut with_magic = PEER_MAGIC.to_vec();
        with_magic.extend_from_slice(&buf);
        let _ = decode_handshake(&with_magic);
    }
}

#[test]
fn checksummed_garbage_reaches_the_parsers_and_never_panics() {
    let mut rng = SmallRng::seed_from_u64(0x5EED_0002);
    let (mut accepted, mut refused, mut accepted_with_entries) = (0, 0, 0);
    for _ in 0..10_000 {
        let buf = checksummed_garbage(&mut rng);
        if !check_decode(&buf) {
            refused += 1;
            continue;
        }
        accepted += 1;
        if let Ok(Some((PeerFrame::Raft(msg), _))) = decode_peer_frame(&buf) {
            if let MessageBody::AppendEntries { entries, .. } = msg.body {
                accepted_with_entries += usize::from(!entries.is_empty());
            }
        }
    }
    // The generator is only useful if it exercises both outcomes, entries parsing included.
    assert!(accepted > 100, "accepted {accepted}");
    assert!(refused > 100, "refused {refused}");
    assert!(
        accepted_with_entries > 10,
        "accepted with entries {accepted_with_entries}"
    );
}

#[test]
fn every_single_bit_flip_of_a_valid_frame_is_caught() {
    for frame in sample_frames() {
        for bit in 0..frame.len() * 8 {
            let mut flipped = frame.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(decode_peer_frame(&flipped), Ok(None) | Err(_)),
                "flip of bit {bit} accepted"
            );
        }
    }
}

#[test]
fn random_corruption_and_truncation_of_valid_frames_never_panic() {
    let mut rng = SmallRng::seed_from_u64(0x5EED_0003);
    let frames = sample_frames();
    for _ in 0..10_000 {
        let mut buf = frames[rng.gen_range(0..frames.len())].clone();
        match rng.gen_range(0..3) {
            0 => {
                for _ in 0..rng.gen_range(1..=8) {
                    let at = rng.gen_range(0..buf.len());
                    buf[at] ^= 1 << rng.gen_range(0..8);
                }
            }
            1 => buf.truncate(rng.gen_range(0..buf.len())),
            _ => buf.extend(random_bytes(&mut rng, 32)),
        }
        check_decode(&buf);
    }
}
