//! A chat snapshot end to end through the storage layer: captured, written on another thread
//! into a snapshot file, shipped in chunks to a follower's store, and restored there.

use raftchat::chat::{Command, Op, Origin, SessionConfig, StateMachine};
use raftchat::raft::{Index, SnapshotMeta};
use raftchat::storage::{FsyncPolicy, SnapshotStore, StorageError};
use std::os::unix::fs::FileExt;

fn post(index: Index, room: &str) -> Vec<u8> {
    let mut data = Vec::new();
    Command {
        origin: Origin {
            node: 1,
            req: index,
        },
        timestamp_ms: 1_700_000_000_000 + index,
        session: None,
        op: Op::Post {
            room: room.into(),
            nick: "alice".into(),
            text: format!("message {index}"),
        },
    }
    .encode(&mut data);
    data
}

#[test]
fn a_snapshot_travels_from_leader_to_follower() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = SnapshotStore::open(leader_dir.path(), 5, FsyncPolicy::Always).unwrap();
    let follower = SnapshotStore::open(follower_dir.path(), 5, FsyncPolicy::Always).unwrap();

    let mut sm = StateMachine::default();
    for index in 1..=10_000 {
        sm.apply(index, &post(index, "general"));
    }
    let expected = sm.clone();
    let snapshot = sm.capture();
    let meta = SnapshotMeta {
        index: snapshot.applied_index(),
        term: 2,
    };
    let mut writer = leader.create(meta).unwrap();
    // The event loop keeps applying while a helper thread writes the capture out.
    let writing = std::thread::spawn(move || {
        snapshot.write_to(&mut writer).unwrap();
        writer.finish().unwrap()
    });
    for index in 10_001..=10_100 {
        sm.apply(index, &post(index, "general"));
    }
    let file = writing.join().unwrap();
    assert_eq!(leader.latest().unwrap(), Some(file.clone()));

    // Ship it in chunks, as a leader would with read_at.
    let raw = file.open_raw().unwrap();
    let mut receiver = follower.receive(file.meta, file.len).unwrap();
    let mut chunk = vec![0u8; 64 << 10];
    while receiver.received() < file.len {
        let offset = receiver.received();
        let n = chunk.len().min((file.len - offset) as usize);
        raw.read_exact_at(&mut chunk[..n], offset).unwrap();
        receiver.write_chunk(offset, &chunk[..n]).unwrap();
    }
    let installed = receiver.finish().unwrap();
    let found = follower.latest().unwrap().unwrap();
    assert_eq!(found, installed);
    let restored =
        StateMachine::restore(&mut found.body().unwrap(), SessionConfig::default(), 0).unwrap();
    assert_eq!(restored, expected);
    assert_eq!(restored.message_count(), 10_000);

    // The leader may delete its file while the descriptor is still in use.
    leader.remove_older_than(u64::MAX).unwrap();
    let mut header = [0u8; 8];
    raw.read_exact_at(&mut header, 0).unwrap();
    assert_eq!(&header, b"RCHATSNP");
    assert_eq!(leader.latest().unwrap(), None);
}

#[test]
fn a_snapshot_body_that_is_not_a_chat_snapshot_is_refused_by_restore() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path(), 5, FsyncPolicy::Never).unwrap();
    let mut writer = store.create(SnapshotMeta { index: 3, term: 1 }).unwrap();
    std::io::Write::write_all(&mut writer, b"not a chat snapshot").unwrap();
    let file = writer.finish().unwrap();
    let file = store.latest().unwrap().unwrap_or(file);
    let err = StateMachine::restore(&mut file.body().unwrap(), SessionConfig::default(), 0);
    assert!(err.unwrap_err().to_string().contains("magic"));
    // A store of another cluster will not even hand it out.
    let other = SnapshotStore::open(dir.path(), 6, FsyncPolicy::Never).unwrap();
    assert!(matches!(other.latest(), Err(StorageError::Corrupt { .. })));
}
