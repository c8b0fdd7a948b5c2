//! The chat layer's hot paths: the telnet line parser, the line splitter, and applying posted
//! messages to the replicated state machine.
//!
//! `cargo bench --bench chat`

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use raftchat::chat::telnet::{parse_line, LineSplitter};
use raftchat::chat::{Command, Op, Origin, StateMachine};

fn telnet(c: &mut Criterion) {
    let lines: Vec<Vec<u8>> = (0..1024)
        .map(|i| match i % 4 {
            0 => format!("msg hello number {i}, a chat line of ordinary length").into_bytes(),
            1 => format!("msg #rust message {i} to a named room").into_bytes(),
            2 => b"get chatLog".to_vec(),
            _ => format!("set key{i} some value with spaces").into_bytes(),
        })
        .collect();
    let mut group = c.benchmark_group("telnet");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("parse_line", |b| {
        b.iter(|| {
            for line in &lines {
                let _ = black_box(parse_line(black_box(line)));
            }
        })
    });
    let mut stream = Vec::new();
    for line in &lines {
        stream.extend_from_slice(line);
        stream.extend_from_slice(b"\r\n");
    }
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("split_lines", |b| {
        b.iter(|| {
            let mut splitter = LineSplitter::new();
            let mut count = 0;
            for chunk in stream.chunks(1500) {
                splitter.feed(chunk);
                while let Some(line) = splitter.next_line() {
                    count += line.map_or(0, |l| l.len());
                }
            }
            black_box(count)
        })
    });
    group.finish();
}

fn apply(c: &mut Criterion) {
    const BATCH: u64 = 4096;
    let entries: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| {
            let command = Command {
                origin: Origin { node: 0, req: i },
                timestamp_ms: 1_700_000_000_000 + i,
                session: None,
                op: Op::Post {
                    room: "general".into(),
                    nick: "bench".into(),
                    text: "x".repeat(100),
                },
            };
            let mut data = Vec::new();
            command.encode(&mut data);
            data
        })
        .collect();
    let mut group = c.benchmark_group("state_machine");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("apply_post_100B", |b| {
        b.iter_batched(
            StateMachine::default,
            |mut sm| {
                for (i, data) in entries.iter().enumerate() {
                    black_box(sm.apply(i as u64 + 1, data));
                }
                sm
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, telnet, apply);
criterion_main!(benches);
