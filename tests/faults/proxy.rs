//! A TCP proxy between the nodes of a test cluster that can cut and heal each directed link.
//!
//! Owns one listener per directed link (`listen[from][to]`: the address node `from` is told node
//! `to` has, so every node gets its own `--peers` list) and the threads that forward bytes from
//! there to node `to`'s real address. A node sends its Raft messages only on the connection it
//! dialled (src/server/peers.rs), so the directed link `from → to` is exactly the connections
//! node `from` opened to `listen[from][to]`. The proxy reads nothing of what it carries, so it
//! works the same for peers speaking TLS (whose handshake it could not read). Cutting a link closes its
//! connections and closes every new one at once while the cut lasts. It never alters, delays
//! or reorders bytes it forwards, and never carries client traffic (clients dial nodes directly).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

struct Shared {
    /// Node `j`'s real address; `None` until the cluster is built (connections are dropped).
    targets: Mutex<Vec<Option<SocketAddr>>>,
    /// `cut[from][to]`: the link from → to refuses traffic.
    cut: Mutex<Vec<Vec<bool>>>,
    /// `stalled[from][to]`: the link from → to holds its bytes (the connection stays open and
    /// TCP backpressure builds up) until it is released; nothing is lost, only delayed.
    stalled: Mutex<Vec<Vec<bool>>>,
    /// Live forwarded connections: (from, to, inbound, outbound), by a connection number.
    conns: Mutex<HashMap<u64, (usize, usize, TcpStream, TcpStream)>>,
    next_conn: AtomicU64,
    stop: AtomicBool,
}

pub struct Proxy {
    /// `listen[from]` is node `from`'s `--peers` list: entry `to` is where it dials node `to`.
    pub listen: Vec<Vec<SocketAddr>>,
    shared: Arc<Shared>,
    acceptors: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Binds one listener per directed link (and one unused per node for itself, so every list
    /// has an entry per node) on free loopback ports.
    pub fn new(count: usize) -> Proxy {
        let shared = Arc::new(Shared {
            targets: Mutex::new(vec![None; count]),
            cut: Mutex::new(vec![vec![false; count]; count]),
            stalled: Mutex::new(vec![vec![false; count]; count]),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let mut listen = Vec::new();
        let mut acceptors = Vec::new();
        for from in 0..count {
            let mut list = Vec::new();
            for to in 0..count {
                let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
                listener.set_nonblocking(true).expect("nonblocking");
                list.push(listener.local_addr().expect("proxy addr"));
                let shared = Arc::clone(&shared);
                acceptors.push(std::thread::spawn(move || {
                    accept_loop(listener, from, to, shared)
                }));
            }
            listen.push(list);
        }
        Proxy {
            listen,
            shared,
            acceptors,
        }
    }

    /// Where node `j` really listens.
    pub fn set_targets(&self, targets: &[SocketAddr]) {
        let mut t = self.shared.targets.lock().unwrap();
        for (slot, addr) in t.iter_mut().zip(targets) {
            *slot = Some(*addr);
        }
    }

    pub fn len(&self) -> usize {
        self.listen.len()
    }

    /// Cuts the directed link `from → to`: its connections close, new ones are closed at once.
    pub fn cut(&self, from: usize, to: usize) {
        self.shared.cut.lock().unwrap()[from][to] = true;
        let conns = self.shared.conns.lock().unwrap();
        for (f, t, inbound, outbound) in conns.values() {
            if (*f, *t) == (from, to) {
                let _ = inbound.shutdown(Shutdown::Both);
                let _ = outbound.shutdown(Shutdown::Both);
            }
        }
    }

    /// Holds every byte on the link `from → to` until [`Proxy::release`] (a silent partition
    /// that delivers late, rather than one that resets connections).
    pub fn stall(&self, from: usize, to: usize) {
        self.shared.stalled.lock().unwrap()[from][to] = true;
    }

    pub fn release(&self, from: usize, to: usize) {
        self.shared.stalled.lock().unwrap()[from][to] = false;
    }

    pub fn heal(&self, from: usize, to: usize) {
        self.shared.cut.lock().unwrap()[from][to] = false;
    }

    /// Cuts both directions between `node` and every other node.
    pub fn isolate(&self, node: usize) {
        for other in (0..self.len()).filter(|&o| o != node) {
            self.cut(node, other);
            self.cut(other, node);
        }
    }

    /// Cuts every link between `side` and the rest, both ways.
    pub fn split(&self, side: &[usize]) {
        for a in side.iter().copied() {
            for b in (0..self.len()).filter(|b| !side.contains(b)) {
                self.cut(a, b);
                self.cut(b, a);
            }
        }
    }

    /// Heals every cut and releases every stall.
    pub fn heal_all(&self) {
        for table in [&self.shared.cut, &self.shared.stalled] {
            for row in table.lock().unwrap().iter_mut() {
                row.iter_mut().for_each(|c| *c = false);
            }
        }
    }

    fn is_cut(shared: &Shared, from: usize, to: usize) -> bool {
        shared.cut.lock().unwrap()[from][to]
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for (_, _, inbound, outbound) in self.shared.conns.lock().unwrap().values() {
            let _ = inbound.shutdown(Shutdown::Both);
            let _ = outbound.shutdown(Shutdown::Both);
        }
        for acceptor in self.acceptors.drain(..) {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, from: usize, to: usize, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || forward(stream, from, to, shared));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Serves one connection node `from` opened to `listen[from][to]`.
fn forward(inbound: TcpStream, from: usize, to: usize, shared: Arc<Shared>) {
    let _ = inbound.set_nonblocking(false);
    if from == to || Proxy::is_cut(&shared, from, to) {
        return;
    }
    let Some(target) = shared.targets.lock().unwrap()[to] else {
        return;
    };
    let Ok(outbound) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (Ok(in2), Ok(out2)) = (inbound.try_clone(), outbound.try_clone()) else {
        return;
    };
    let key = shared.next_conn.fetch_add(1, Ordering::SeqCst);
    shared
        .conns
        .lock()
        .unwrap()
        .insert(key, (from, to, in2, out2));
    // A cut that raced with the registration above must still close this connection.
    if Proxy::is_cut(&shared, from, to) || shared.stop.load(Ordering::SeqCst) {
        let _ = inbound.shutdown(Shutdown::Both);
        let _ = outbound.shutdown(Shutdown::Both);
    }
    let (Ok(back_in), Ok(back_out)) = (inbound.try_clone(), outbound.try_clone()) else {
        shared.conns.lock().unwrap().remove(&key);
        return;
    };
    let back = std::thread::spawn(move || pipe(back_out, back_in, None));
    pipe(inbound, outbound, Some((&shared, from, to)));
    let _ = back.join();
    shared.conns.lock().unwrap().remove(&key);
}

/// Copies `src` to `dst` until either side fails, then shuts both down. With `link`, reading
/// pauses while that link is stalled.
fn pipe(mut src: TcpStream, mut dst: TcpStream, link: Option<(&Shared, usize, usize)>) {
    let mut buf = vec![0u8; 64 * 1024];
    if link.is_some()
        && src
            .set_read_timeout(Some(Duration::from_millis(20)))
            .is_err()
    {
        return;
    }
    loop {
        if let Some((shared, from, to)) = link {
            if shared.stop.load(Ordering::SeqCst) {
                break;
            }
            if shared.stalled.lock().unwrap()[from][to] {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        match src.read(&mut buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if dst.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = src.shutdown(Shutdown::Both);
    let _ = dst.shutdown(Shutdown::Both);
}
