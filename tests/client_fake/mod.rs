//! A fake cluster for tests: N listeners on 127.0.0.1 that speak the binary protocol over one
//! shared, in-memory chat log and key-value map, with scripted faults.
//!
//! It owns what a client can observe of a correct cluster (sessions, exactly-once dedup by
//! (session, seq), positions, paging, status) and nothing of Raft: one node is "leader", the
//! others answer `NotLeaderNotStored` with a hint unless `forward` is set. Faults are a queue
//! consumed by the next mutating requests, so a test states exactly which request sees which
//! failure, e.g. "apply this post but lose its answer" ([`Fault::ApplyThenTimeout`]).
//! It is never used outside tests and the load generator's self-test (which includes this file
//! with `#[path]`); it is not part of the library.

// Each test crate that includes this file uses part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use raftchat::chat::validate;
use raftchat::client::is_timeout;
use raftchat::client::proto::{
    self, Answer, ErrorKind, LogMessage, NodeStatus, Request, Role, SessionSeq,
};

/// What happens to one mutating request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Apply it, then answer `TimeoutUnknown` (the client cannot know it was applied).
    ApplyThenTimeout,
    /// Answer `NotLeaderNotStored` with the leader's id as hint, without applying.
    NotLeader,
    /// Answer `Overloaded` without applying.
    Overloaded,
    /// Answer `SessionExpired` and forget the session.
    Expire,
    /// Close the connection without answering, after applying it if `apply`.
    Close { apply: bool },
    /// Never answer on this connection, after applying it if `apply`.
    Silence { apply: bool },
}

/// The cluster's shared state. Tests lock it with [`FakeCluster::state`] to script and inspect.
#[derive(Debug, Default)]
pub struct FakeState {
    /// The node that accepts writes; `None`: an election (everyone answers NotLeader, no hint).
    pub leader: Option<u64>,
    pub term: u64,
    /// Followers apply writes as if they forwarded them to the leader.
    pub forward: bool,
    /// Nodes that are down: they accept connections and close them at once.
    pub down: Vec<bool>,
    pub log: Vec<LogMessage>,
    /// Key → (value, revision).
    pub kv: BTreeMap<String, (String, u64)>,
    pub revision: u64,
    /// Open sessions; each maps seq → the answer first given (req_id is rewritten on replay).
    pub sessions: HashMap<u64, HashMap<u64, Answer>>,
    pub next_session_id: u64,
    /// Applied to the next mutating requests, first in first out.
    pub faults: VecDeque<Fault>,
    /// Messages per `LogChunk` at most (the real node bounds by bytes).
    pub page_max: u32,
    /// Every request received: (node, request).
    pub received: Vec<(usize, Request)>,
    /// Mutations applied, counting each (session, seq) once.
    pub applied: u64,
    pub clock_ms: u64,
}

enum Reply {
    Answer(Answer),
    Close,
    Silence,
}

impl FakeState {
    fn handle(&mut self, node: usize, request: Request) -> Reply {
        self.received.push((node, request.clone()));
        let req_id = request.req_id();
        let is_leader = self.leader == Some(node as u64);
        let error = |kind: ErrorKind, leader_hint: Option<u64>| {
            Reply::Answer(Answer::Error {
                req_id,
                kind,
                leader_hint,
                message: format!("fake {}", kind.name()),
            })
        };
        match request {
            Request::Status { .. } => Reply::Answer(Answer::StatusReply {
                req_id,
                status: NodeStatus {
                    node_id: node as u64,
                    role: if is_leader {
                        Role::Leader
                    } else {
                        Role::Follower
                    },
                    term: self.term,
                    leader: self.leader,
                    commit: self.log.len() as u64,
                    applied: self.log.len() as u64,
                },
            }),
            Request::ReadLog {
                from_position,
                max_messages,
                ..
            } => {
                let total = self.log.len() as u64;
                let start = from_position.saturating_sub(1).min(total) as usize;
                let count = max_messages.min(self.page_max.max(1)) as usize;
                let messages = self.log[start..(start + count).min(self.log.len())].to_vec();
                Reply::Answer(Answer::LogChunk {
                    req_id,
                    total,
                    messages,
                })
            }
            Request::Get { key, .. } => Reply::Answer(match self.kv.get(&key) {
                Some((value, revision)) => Answer::KvValue {
                    req_id,
                    value: Some(value.clone()),
                    revision: *revision,
                },
                None => Answer::KvValue {
                    req_id,
                    value: None,
                    revision: 0,
                },
            }),
            // Like the node: the telnet rule for a prefix, then every match in key order (the
            // encoder cuts the list to one frame; `total` still counts every match).
            Request::Keys { prefix, .. } => match validate::validate_key_prefix(&prefix) {
                Ok(()) => {
                    let keys: Vec<String> = self
                        .kv
                        .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                        .map(|(key, _)| key)
                        .take_while(|key| key.starts_with(&prefix))
                        .cloned()
                        .collect();
                    Reply::Answer(Answer::KeyList {
                        req_id,
                        total: keys.len() as u64,
                        keys,
                    })
                }
                Err(message) => Reply::Answer(Answer::Error {
                    req_id,
                    kind: ErrorKind::Rejected,
                    leader_hint: self.leader,
                    message,
                }),
            },
            _ if !(is_leader || (self.forward && self.leader.is_some())) => {
                error(ErrorKind::NotLeaderNotStored, self.leader)
            }
            Request::OpenSession { .. } => {
                self.next_session_id += 1;
                self.sessions.insert(self.next_session_id, HashMap::new());
                Reply::Answer(Answer::SessionOpened {
                    req_id,
                    session_id: self.next_session_id,
                })
            }
            mutation => {
                let Some(session) = mutation.session().copied() else {
                    unreachable!("every other request mutates")
                };
                let fault = self.faults.pop_front();
                match fault {
                    Some(Fault::NotLeader) => {
                        return error(ErrorKind::NotLeaderNotStored, self.leader)
                    }
                    Some(Fault::Overloaded) => return error(ErrorKind::Overloaded, None),
                    Some(Fault::Expire) => {
                        self.sessions.remove(&session.session_id);
                        return error(ErrorKind::SessionExpired, None);
                    }
                    Some(Fault::Close { apply: false }) => return Reply::Close,
                    Some(Fault::Silence { apply: false }) => return Reply::Silence,
                    _ => {}
                }
                let answer = match self.apply(session, mutation) {
                    Some(answer) => answer,
                    None => return error(ErrorKind::SessionExpired, None),
                };
                match fault {
                    Some(Fault::ApplyThenTimeout) => error(ErrorKind::TimeoutUnknown, self.leader),
                    Some(Fault::Close { .. }) => Reply::Close,
                    Some(Fault::Silence { .. }) => Reply::Silence,
                    _ => Reply::Answer(answer),
                }
            }
        }
    }

    /// Applies a mutation once per (session, seq); a retry gets the first answer again.
    /// `None`: unknown session.
    fn apply(&mut self, session: SessionSeq, mutation: Request) -> Option<Answer> {
        let req_id = mutation.req_id();
        let results = self.sessions.get_mut(&session.session_id)?;
        results.retain(|seq, _| *seq >= session.lowest_unacked_seq);
        if let Some(first) = results.get(&session.seq) {
            let mut answer = first.clone();
            set_answer_req_id(&mut answer, req_id);
            return Some(answer);
        }
        self.clock_ms += 1;
        self.applied += 1;
        let answer = match mutation {
            Request::Post {
                room, nick, text, ..
            } => {
                let position = self.log.len() as u64 + 1;
                self.log.push(LogMessage {
                    position,
                    timestamp_ms: self.clock_ms,
                    room,
                    nick,
                    text,
                });
                Answer::Posted { req_id, position }
            }
            Request::Set { key, value, .. } => {
                self.revision += 1;
                self.kv.insert(key, (value, self.revision));
                Answer::KvAck {
                    req_id,
                    revision: self.revision,
                }
            }
            Request::Cas {
                key, expected, new, ..
            } => {
                let current = self.kv.get(&key).map(|(v, _)| v.clone());
                if current == expected {
                    self.revision += 1;
                    self.kv.insert(key, (new, self.revision));
                    Answer::KvAck {
                        req_id,
                        revision: self.revision,
                    }
                } else {
                    Answer::CasFailed { req_id, current }
                }
            }
            Request::Del { key, .. } => match self.kv.remove(&key) {
                Some(_) => {
                    self.revision += 1;
                    Answer::KvAck {
                        req_id,
                        revision: self.revision,
                    }
                }
                None => Answer::Error {
                    req_id,
                    kind: ErrorKind::NotFound,
                    leader_hint: None,
                    message: "no such key".into(),
                },
            },
            _ => unreachable!("only mutations are applied"),
        };
        if let Some(results) = self.sessions.get_mut(&session.session_id) {
            results.insert(session.seq, answer.clone());
        }
        Some(answer)
    }

    /// The (session, seq) pairs of every mutation received, in arrival order.
    pub fn mutation_seqs(&self) -> Vec<(usize, SessionSeq)> {
        self.received
            .iter()
            .filter_map(|(node, r)| r.session().map(|s| (*node, *s)))
            .collect()
    }
}

fn set_answer_req_id(answer: &mut Answer, id: u64) {
    match answer {
        Answer::SessionOpened { req_id, .. }
        | Answer::Posted { req_id, .. }
        | Answer::LogChunk { req_id, .. }
        | Answer::StatusReply { req_id, .. }
        | Answer::KvAck { req_id, .. }
        | Answer::KvValue { req_id, .. }
        | Answer::CasFailed { req_id, .. }
        | Answer::KeyList { req_id, .. }
        | Answer::AccountOk { req_id, .. }
        | Answer::MemberList { req_id, .. }
        | Answer::MemberOk { req_id, .. }
        | Answer::Error { req_id, .. } => *req_id = id,
    }
}

/// Listeners for N fake nodes; stops them when dropped.
pub struct FakeCluster {
    nodes: Vec<SocketAddr>,
    state: Arc<Mutex<FakeState>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeCluster {
    /// Starts `node_count` nodes; node 0 leads in term 1.
    pub fn start(node_count: usize) -> io::Result<FakeCluster> {
        let state = Arc::new(Mutex::new(FakeState {
            leader: Some(0),
            term: 1,
            down: vec![false; node_count],
            page_max: 1000,
            clock_ms: 1_700_000_000_000,
            ..FakeState::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let mut nodes = Vec::new();
        let mut threads = Vec::new();
        for node in 0..node_count {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            nodes.push(listener.local_addr()?);
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || {
                accept_loop(node, listener, state, stop)
            }));
        }
        Ok(FakeCluster {
            nodes,
            state,
            stop,
            threads,
        })
    }

    /// The node addresses, in node-id order.
    pub fn nodes(&self) -> &[SocketAddr] {
        &self.nodes
    }

    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        lock(&self.state)
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A poisoned lock only means a test thread panicked; the state is still worth reading.
fn lock(state: &Mutex<FakeState>) -> MutexGuard<'_, FakeState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const POLL_INTERVAL: Duration = Duration::from_millis(2);

fn accept_loop(
    node: usize,
    listener: TcpListener,
    state: Arc<Mutex<FakeState>>,
    stop: Arc<AtomicBool>,
) {
    let mut conns = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if lock(&state).down.get(node).copied().unwrap_or(false) {
                    continue; // dropped: closed at once
                }
                let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
                conns.push(std::thread::spawn(move || {
                    let _ = serve(node, stream, &state, &stop);
                }));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL_INTERVAL),
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
    for conn in conns {
        let _ = conn.join();
    }
}

fn serve(
    node: usize,
    mut stream: TcpStream,
    state: &Mutex<FakeState>,
    stop: &AtomicBool,
) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(20)))?;
    stream.set_nodelay(true)?;
    let mut input = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    let mut greeted = false;
    let mut silent = false;
    while !stop.load(Ordering::SeqCst) {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => input.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return Err(e),
        }
        if !greeted {
            match proto::decode_preamble(&input) {
                Ok(None) => continue,
                Ok(Some(used)) => {
                    input.drain(..used);
                    greeted = true;
                }
                Err(_) => {
                    let mut out = Vec::new();
                    let message = "bad preamble".to_string();
                    Answer::Error {
                        req_id: 0,
                        kind: ErrorKind::Rejected,
                        leader_hint: None,
                        message,
                    }
                    .encode(&mut out);
                    return stream.write_all(&out);
                }
            }
        }
        if lock(state).down.get(node).copied().unwrap_or(false) {
            return Ok(());
        }
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((request, used)) =
            proto::decode_request(&input[at..]).map_err(io::Error::from)?
        {
            at += used;
            match lock(state).handle(node, request) {
                Reply::Answer(answer) if !silent => answer.encode(&mut out),
                Reply::Answer(_) => {}
                Reply::Silence => silent = true,
                Reply::Close => {
                    stream.write_all(&out)?;
                    return Ok(());
                }
            }
        }
        input.drain(..at);
        stream.write_all(&out)?;
    }
    Ok(())
}
