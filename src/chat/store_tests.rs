//! A chat log backed by the message store (`StateMachine::with_store`): memory holds only the
//! newest chunks, every read still answers every message, and snapshots carry the messages
//! only the store has (written from a `HistoryReader`, restored into a store).

use std::sync::{Arc, Mutex};

use super::*;
use crate::history::{History, HistoryOptions};
use crate::raft::Index;

const MESSAGES: u64 = 5 * CHUNK_MESSAGES as u64 + 123;

fn store(dir: &std::path::Path) -> Arc<Mutex<History>> {
    let opts = HistoryOptions {
        segment_bytes: 1 << 20,
        cache_bytes: 64 << 10,
        fsync: false,
        ..HistoryOptions::new(dir, 1)
    };
    Arc::new(Mutex::new(History::open(opts).unwrap().0))
}

/// The command entry at `index` that applies `op` (shared with the version-5 snapshot tests).
pub(super) fn entry(index: Index, op: Op) -> Vec<u8> {
    let mut data = Vec::new();
    Command {
        origin: Origin {
            node: 1,
            req: index,
        },
        timestamp_ms: 1_000 + index,
        session: None,
        op,
    }
    .encode(&mut data);
    data
}

/// Two rooms, then `MESSAGES` posts alternating between them.
fn fill(sm: &mut StateMachine) {
    for (k, room) in ["even", "odd"].into_iter().enumerate() {
        sm.apply(
            k as Index + 1,
            &entry(k as Index + 1, Op::CreateRoom { room: room.into() }),
        );
    }
    for p in 1..=MESSAGES {
        let index = p + 2;
        let op = Op::Post {
            room: if p % 2 == 0 { "even" } else { "odd" }.into(),
            nick: "n".into(),
            text: format!("message {p}"),
        };
        let applied = sm.apply(index, &entry(index, op));
        assert_eq!(applied.outcome, Outcome::Posted { position: p });
    }
}

fn texts(sm: &StateMachine, from: u64) -> Vec<String> {
    sm.messages_from(from).map(|m| m.text.clone()).collect()
}

fn expected(from: u64) -> Vec<String> {
    (from.max(1)..=MESSAGES)
        .map(|p| format!("message {p}"))
        .collect()
}

#[test]
fn a_store_backed_log_keeps_few_chunks_in_memory_and_reads_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::default().with_store(store(dir.path()), 1);
    let mut memory_only = StateMachine::default();
    fill(&mut sm);
    fill(&mut memory_only);
    assert!(
        sm.held_message_slots() <= 2 * CHUNK_MESSAGES,
        "{} slots held",
        sm.held_message_slots()
    );
    assert_eq!(memory_only.held_message_slots(), MESSAGES as usize);
    assert_eq!(sm.message_count(), MESSAGES);
    assert_eq!(sm, memory_only, "the same messages, wherever they are held");
    sm.check_invariants_full().unwrap();
    for from in [0, 1, 17, 4096, 4097, MESSAGES - 1, MESSAGES, MESSAGES + 1] {
        assert_eq!(texts(&sm, from), expected(from), "from {from}");
    }
    for p in [1, 2, 4096, 9000, MESSAGES] {
        assert_eq!(sm.message(p).unwrap().text, format!("message {p}"));
    }
    assert!(sm.message(MESSAGES + 1).is_none());
    let odd: Vec<String> = sm
        .room_history("odd", 3)
        .iter()
        .map(|m| m.text.clone())
        .collect();
    assert_eq!(
        odd,
        memory_only
            .room_history("odd", 3)
            .iter()
            .map(|m| m.text.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        sm.room_history("even", usize::MAX).len() as u64,
        MESSAGES / 2
    );
}

#[test]
fn a_snapshot_of_a_store_backed_log_carries_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::default().with_store(store(&dir.path().join("a")), 1);
    fill(&mut sm);
    let mut body = Vec::new();
    // The whole chat (version 4), as a machine whose store failed writes it.
    sm.capture_with(false).write_to(&mut body).unwrap();
    let mut memory_body = Vec::new();
    let mut memory_only = StateMachine::default();
    fill(&mut memory_only);
    memory_only.capture().write_to(&mut memory_body).unwrap();
    assert!(
        body == memory_body,
        "the same bytes as a snapshot of the chat held in memory"
    );

    // Into an empty store (a new follower), the store the snapshot came from (a restart) and
    // one that lost its tail (a restart after a crash): the same machine each time.
    let behind = store(&dir.path().join("behind"));
    for m in sm.messages_from(1).take(5000) {
        behind.lock().unwrap().append(&m).unwrap();
    }
    let config = SessionConfig::default();
    let targets = [
        ("empty", store(&dir.path().join("empty"))),
        ("complete", sm.store().unwrap().clone()),
        ("behind", behind),
    ];
    for (name, target) in targets {
        let restored =
            StateMachine::restore_with_store(&mut &body[..], config, 0, target.clone(), 1).unwrap();
        assert_eq!(restored, memory_only, "into the {name} store");
        assert!(
            restored.held_message_slots() <= 2 * CHUNK_MESSAGES,
            "{name}"
        );
        assert_eq!(target.lock().unwrap().last_position(), MESSAGES, "{name}");
        assert_eq!(texts(&restored, 1), expected(1), "{name}");
        // And it goes on: the next post reaches the store.
        let mut restored = restored;
        let index = restored.applied_index() + 1;
        let post = Op::Post {
            room: "odd".into(),
            nick: "n".into(),
            text: "after".into(),
        };
        restored.apply(index, &entry(index, post));
        assert_eq!(
            target.lock().unwrap().last_position(),
            MESSAGES + 1,
            "{name}"
        );
    }
}

/// The answer of a read, run on the spot when it waits for the store.
fn resolved(read: crate::chat::Read<'_>) -> Vec<ChatMessage> {
    match read {
        crate::chat::Read::Now(messages) => messages.into_iter().map(|m| m.into_owned()).collect(),
        crate::chat::Read::Later(pending) => {
            // The job is planned now and run elsewhere: it holds no borrow of the machine.
            let job = pending.job.clone();
            let handle = std::thread::spawn(move || job.run());
            pending.finish(handle.join().unwrap()).unwrap()
        }
    }
}

#[test]
fn reads_planned_for_another_thread_answer_what_the_synchronous_reads_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::default().with_store(store(dir.path()), 1);
    fill(&mut sm);
    assert!(sm.chat_log.evicted_through() > 3 * CHUNK_MESSAGES as u64);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let mut waited = 0;
    for k in 0..200 {
        let room = ["even", "odd", "none"][(next(3)) as usize];
        let n = match k % 4 {
            0 => next(10) as usize,
            1 => next(MESSAGES) as usize,
            2 => usize::MAX,
            _ => next(CHUNK_MESSAGES as u64 * 2) as usize,
        };
        let want: Vec<ChatMessage> = sm
            .room_history(room, n)
            .into_iter()
            .map(|m| m.into_owned())
            .collect();
        let read = sm.room_history_read(room, n);
        waited += usize::from(matches!(read, crate::chat::Read::Later(_)));
        assert_eq!(resolved(read), want, "#{room} {n}");

        let position = next(MESSAGES + 3);
        let max = [1, 7, 1024, 5000, usize::MAX][next(5) as usize];
        let want: Vec<ChatMessage> = sm
            .messages_from(position)
            .take(max)
            .map(|m| m.into_owned())
            .collect();
        let read = sm.messages_from_read(position, max);
        waited += usize::from(matches!(read, crate::chat::Read::Later(_)));
        assert_eq!(resolved(read), want, "from {position}, {max}");
    }
    assert!(waited > 50, "only {waited} reads needed the store");
    // The newest messages of a room are answered now, without the store.
    assert!(matches!(
        sm.room_history_read("odd", 3),
        crate::chat::Read::Now(_)
    ));
    assert!(matches!(
        sm.messages_from_read(MESSAGES - 2, 10),
        crate::chat::Read::Now(_)
    ));
}
