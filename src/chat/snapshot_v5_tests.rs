//! Version-5 (incremental) snapshots of a store-backed machine: the body leaves out what the
//! message store holds, restores in constant time into a store that holds it, refuses one that
//! does not, and the rooms answer as the chat held in memory does, across eviction and restore.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use super::*;
use crate::chat::command::Op;
use crate::chat::state::CHUNK_LEN;
use crate::chat::store_tests::entry;
use crate::history::HistoryOptions;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const ROOMS: [&str; 5] = ["general", "busy", "quiet", "rare", "empty"];

fn store_with(dir: &std::path::Path, segment_bytes: u64) -> Arc<Mutex<History>> {
    let opts = HistoryOptions {
        segment_bytes,
        cache_bytes: 0,
        fsync: false,
        ..HistoryOptions::new(dir, 1)
    };
    Arc::new(Mutex::new(History::open(opts).unwrap().0))
}

fn store(dir: &std::path::Path) -> Arc<Mutex<History>> {
    store_with(dir, 256 << 10)
}

/// The rooms (and a key, and a session), applied to every machine given.
fn setup(machines: &mut [&mut StateMachine]) {
    let mut ops: Vec<Op> = ROOMS[1..]
        .iter()
        .map(|room| Op::CreateRoom {
            room: room.to_string(),
        })
        .collect();
    ops.push(Op::Set {
        key: "k".into(),
        value: "v".into(),
    });
    ops.push(Op::OpenSession);
    for op in ops {
        for sm in machines.iter_mut() {
            let index = sm.applied_index() + 1;
            sm.apply(index, &entry(index, op.clone()));
        }
    }
}

/// Posts `count` messages to every machine given: mostly to #busy and #general, one in 50 to
/// #quiet, one in 2,000 to #rare, none to #empty.
fn post(machines: &mut [&mut StateMachine], rng: &mut SmallRng, count: u64) {
    for _ in 0..count {
        let k: u32 = rng.gen_range(0..2_000);
        let room = match k {
            0 => "rare",
            1..=40 => "quiet",
            41..=1000 => "busy",
            _ => "general",
        };
        let text = format!("{room} {}", rng.gen::<u32>());
        for sm in machines.iter_mut() {
            let index = sm.applied_index() + 1;
            let op = Op::Post {
                room: room.into(),
                nick: "n".into(),
                text: text.clone(),
            };
            let applied = sm.apply(index, &entry(index, op));
            assert!(matches!(applied.outcome, Outcome::Posted { .. }));
        }
    }
}

fn owned(page: Vec<Cow<'_, ChatMessage>>) -> Vec<ChatMessage> {
    page.into_iter().map(Cow::into_owned).collect()
}

/// Every room's count and pages of many lengths (around the held positions too) equal the
/// model's.
fn same_room_answers(sm: &StateMachine, model: &StateMachine, at: &str) {
    assert_eq!(sm.rooms(), model.rooms(), "{at}: room counts");
    for room in ROOMS {
        let count = model.rooms.get(room).map_or(0, |r| r.count()) as usize;
        let held = sm.rooms.get(room).map_or(0, |r| r.held.len());
        for n in [
            0,
            1,
            2,
            7,
            50,
            held.saturating_sub(1),
            held,
            held + 1,
            held + 300,
        ]
        .into_iter()
        .chain([count.saturating_sub(1), count, count + 1, usize::MAX])
        {
            assert_eq!(
                owned(sm.room_history(room, n)),
                owned(model.room_history(room, n)),
                "{at}: history #{room} {n} (held {held} of {count})"
            );
        }
    }
}

fn held_positions(sm: &StateMachine) -> usize {
    sm.rooms.values().map(|r| r.held.len()).sum()
}

fn body(snapshot: &ChatSnapshot) -> Vec<u8> {
    let mut out = Vec::new();
    snapshot.write_to(&mut out).unwrap();
    out
}

fn restore_into(bytes: &[u8], store: Arc<Mutex<History>>) -> Result<StateMachine, RestoreError> {
    StateMachine::restore_with_store(&mut &bytes[..], SessionConfig::default(), 0, store, 1)
}

#[test]
fn room_answers_equal_the_model_across_eviction_and_after_restore() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::default().with_store(store(dir.path()), 1);
    let mut model = StateMachine::default();
    let mut rng = SmallRng::seed_from_u64(20);
    setup(&mut [&mut sm, &mut model]);
    for round in 0..6 {
        post(&mut [&mut sm, &mut model], &mut rng, 2_500);
        same_room_answers(&sm, &model, &format!("round {round}"));
        sm.check_invariants_full().unwrap();
        assert!(
            held_positions(&sm) <= 2 * CHUNK_LEN,
            "round {round}: {} positions held",
            held_positions(&sm)
        );
    }
    assert_eq!(sm, model);
    assert!(sm.chat_log.evicted_through() >= 2 * CHUNK_LEN as u64);

    // After a v5 restore (into the same store, as a restart does) nothing older is held.
    let snapshot = sm.capture_with(true);
    assert_eq!(snapshot.version(), SNAPSHOT_FORMAT_VERSION_STORED);
    let bytes = body(&snapshot);
    let mut back = restore_into(&bytes, sm.store().unwrap().clone()).unwrap();
    assert_eq!(held_positions(&back), 0);
    assert_eq!(back.held_message_slots(), 0);
    back.check_invariants_full().unwrap();
    assert_eq!(back, model);
    same_room_answers(&back, &model, "after restore");
    // And on: more posts, more evictions, the same answers.
    for round in 0..3 {
        post(&mut [&mut back, &mut model], &mut rng, 3_000);
        same_room_answers(&back, &model, &format!("after restore, round {round}"));
        back.check_invariants_full().unwrap();
    }
    assert_eq!(back, model);
}

#[test]
fn a_v5_body_round_trips_and_then_behaves_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::default().with_store(store(dir.path()), 1);
    let mut model = StateMachine::default();
    let mut rng = SmallRng::seed_from_u64(5);
    setup(&mut [&mut sm, &mut model]);
    post(
        &mut [&mut sm, &mut model],
        &mut rng,
        3 * CHUNK_LEN as u64 + 77,
    );
    let snapshot = sm.capture_with(true);
    assert_eq!(snapshot.stored_through(), sm.last_position());
    assert_eq!(snapshot.message_count(), sm.message_count());
    snapshot.sync_store().unwrap();
    let bytes = body(&snapshot);
    let header = peek_header(&bytes[..BODY_HEADER_BYTES]).unwrap();
    assert_eq!(
        header,
        BodyHeader {
            version: SNAPSHOT_FORMAT_VERSION_STORED,
            applied_index: sm.applied_index(),
            stored_through: sm.last_position(),
        }
    );
    // Restored into the store it came from, and into a copy of it (another node's).
    let copy_dir = dir.path().join("copy");
    let copy_store = store(&copy_dir);
    for m in sm.messages_from(1) {
        copy_store.lock().unwrap().append(&m).unwrap();
    }
    for (name, target) in [("same", sm.store().unwrap().clone()), ("copy", copy_store)] {
        let mut back = restore_into(&bytes, target).unwrap();
        assert_eq!(back, model, "{name}");
        assert_eq!(back.get("k"), Some(("v", 1)));
        assert_eq!(back.session_count(), 1);
        assert_eq!(body(&back.capture_with(true)), bytes, "{name}: canonical");
        let mut twin = model.clone();
        post(&mut [&mut back, &mut twin], &mut rng, CHUNK_LEN as u64 + 5);
        assert_eq!(back, twin, "{name}: the same after more entries");
        let last = back.last_position();
        assert_eq!(back.message(last), twin.message(last));
    }
    // A node that keeps the chat in memory cannot take it.
    let err = StateMachine::restore(&mut &bytes[..], SessionConfig::default(), 0).unwrap_err();
    assert!(err.0.contains("this node keeps none"), "{err}");
}

#[test]
fn messages_after_the_stored_position_travel_in_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::default().with_store(store(dir.path()), 2);
    let mut model = StateMachine::default();
    let mut rng = SmallRng::seed_from_u64(6);
    setup(&mut [&mut sm, &mut model]);
    post(
        &mut [&mut sm, &mut model],
        &mut rng,
        2 * CHUNK_LEN as u64 + 30,
    );
    // As if the store lagged by 25 messages (still in memory): they go in the body.
    let mut snapshot = sm.capture_with(true);
    let inc = snapshot.incremental.as_mut().unwrap();
    inc.through -= 25;
    let through = inc.through;
    inc.after = sm.messages_from(through + 1).map(Cow::into_owned).collect();
    let bytes = body(&snapshot);
    let back = restore_into(&bytes, sm.store().unwrap().clone()).unwrap();
    assert_eq!(back, model);
    same_room_answers(&back, &model, "lagging");
    back.check_invariants_full().unwrap();
    // A store holding exactly `through` takes them from the body.
    let short = store(&dir.path().join("short"));
    for m in sm.messages_from(1).take(through as usize) {
        short.lock().unwrap().append(&m).unwrap();
    }
    let back = restore_into(&bytes, short.clone()).unwrap();
    assert_eq!(back, model);
    assert_eq!(short.lock().unwrap().last_position(), sm.last_position());
}

#[test]
fn a_v5_body_does_not_grow_with_the_stored_history() {
    let mut sizes = Vec::new();
    for messages in [1_000, 100_000] {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::default().with_store(store_with(dir.path(), 64 << 20), 1);
        let mut rng = SmallRng::seed_from_u64(7);
        setup(&mut [&mut sm]);
        post(&mut [&mut sm], &mut rng, messages);
        let bytes = body(&sm.capture_with(true));
        let whole = body(&sm.capture_with(false));
        assert!(whole.len() > messages as usize * 20, "{}", whole.len());
        sizes.push(bytes.len());
    }
    assert_eq!(sizes[0], sizes[1], "the same size at 1,000 and 100,000");
    assert!(sizes[1] < 4096, "{} bytes", sizes[1]);
}

#[test]
fn a_store_that_ends_early_is_refused_with_what_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::default().with_store(store(&dir.path().join("a")), 1);
    let mut rng = SmallRng::seed_from_u64(8);
    setup(&mut [&mut sm]);
    post(&mut [&mut sm], &mut rng, 9_000);
    let bytes = body(&sm.capture_with(true));
    let short = store(&dir.path().join("short"));
    for m in sm.messages_from(1).take(5_000) {
        short.lock().unwrap().append(&m).unwrap();
    }
    let err = restore_into(&bytes, short).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad chat snapshot: the message store ends at position 5000 but the snapshot needs \
         1..=9000"
    );
    let err = restore_into(&bytes, store(&dir.path().join("empty"))).unwrap_err();
    assert_eq!(
        err.0,
        "the message store ends at position 0 but the snapshot needs 1..=9000"
    );
    // A store of another history (the same length, other messages) is refused by its newest.
    let other = store(&dir.path().join("other"));
    for m in sm.messages_from(1) {
        let mut m = m.into_owned();
        m.index += 1_000_000;
        other.lock().unwrap().append(&m).unwrap();
    }
    assert!(restore_into(&bytes, other)
        .unwrap_err()
        .0
        .contains("is not covered by the snapshot"));
}

#[test]
fn damaged_v5_bodies_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::default().with_store(store(dir.path()), 1);
    let mut rng = SmallRng::seed_from_u64(9);
    setup(&mut [&mut sm]);
    post(&mut [&mut sm], &mut rng, 2 * CHUNK_LEN as u64 + 3);
    // With a few messages in the body, so that section is damaged too.
    let mut snapshot = sm.capture_with(true);
    let inc = snapshot.incremental.as_mut().unwrap();
    inc.through -= 5;
    let through = inc.through;
    inc.after = sm.messages_from(through + 1).map(Cow::into_owned).collect();
    let bytes = body(&snapshot);
    let target = sm.store().unwrap().clone();
    assert!(restore_into(&bytes, target.clone()).is_ok());
    let mut refused = 0;
    for round in 0..3_000 {
        let damaged = super::tests::damage(&bytes, round, &mut rng);
        match restore_into(&damaged, target.clone()) {
            Err(_) => refused += 1,
            Ok(_) => assert_ne!(round % 3, 0, "a truncation was accepted"),
        }
    }
    assert!(refused > 2_000, "{refused}");
}
