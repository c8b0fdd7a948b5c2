//! Fetching the message history a received snapshot leaves to the message store, page by page.
//!
//! A version-5 snapshot file carries the chat state but not the messages at positions
//! `1..=stored_through`: those live in each node's message store (`crate::history`). A follower
//! whose store ends before `stored_through` (new, wiped, or far behind) cannot restore such a
//! file, so once the file is complete and verified the replica starts a [`Fetch`]: it asks the
//! sender for the missing positions with `HistoryRequest` frames, appends each `HistoryPage`
//! to its store in position order, and restores the file only when the store reaches
//! `stored_through` (synced). This is the issue's "ships only the segments the follower lacks,
//! and resumes per segment", done per page: a page is the unit of progress.
//!
//! - **Pages.** A request names `from..=through`, at most `PAGE_MESSAGES` positions, sized from
//!   the bytes per message seen so far so its page stays near `PAGE_BYTES`; the sender answers
//!   with a prefix of it that fits `PAGE_BYTES` ([`serve`]). A short page leaves the rest of its
//!   request to be asked again.
//! - **Window.** Up to `WINDOW_PAGES` requests (and pages held until the ones before them
//!   arrive) are outstanding at once, for throughput over a long round trip.
//! - **Trust.** A page is taken only if it answers an outstanding request and its messages are
//!   exactly the positions asked for (`wire::decode_history_messages` checks bounds, UTF-8 and
//!   positions); anything else is refused with a reason the caller logs, never a panic.
//! - **Durability and resumption.** The store is synced every `SYNC_EVERY_PAGES` pages and at
//!   the end, so what it holds survives a crash. With no progress for `STALL` every request is
//!   asked again from what the store holds (a broken link, a lost frame); with none for
//!   `ABANDON` the fetch is dropped and the core sends InstallSnapshot again. A follower that
//!   restarts, or a new leader that sends its own snapshot, starts a new fetch from
//!   `store.last_position() + 1`: what earlier pages brought is never fetched twice.
//!
//! It never decides to install anything: the replica restores the file and steps
//! `InstallSnapshot` once [`Fetch::on_page`] reports completion.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use super::snapshot::{ABANDON, STALL};
use crate::chat::ChatMessage;
use crate::history::History;
use crate::raft::{NodeId, SnapshotMeta, Term};
use crate::wire;

/// A page holds at most about this many bytes of encoded messages (one message more than fits
/// is never added; a single message always fits, being at most a few KiB).
pub(super) const PAGE_BYTES: usize = 1 << 20;
/// A request asks for at most this many positions.
pub(super) const PAGE_MESSAGES: u64 = 8192;
/// Requests (and pages held for order) outstanding at once.
pub(super) const WINDOW_PAGES: usize = 4;
/// The store is synced after this many pages appended (and at the end).
const SYNC_EVERY_PAGES: u64 = 16;
/// Bytes per message assumed before the first page says better (requests start small).
const FIRST_GUESS_BYTES: usize = 1024;

const _: () = assert!(
    PAGE_BYTES + 8 * 1024 + wire::HISTORY_PAGE_HEADER_BYTES < wire::FRAME_BYTES_MAX / 4,
    "a page stays well under the frame limit"
);

/// One outstanding request: positions from its key to `through`.
#[derive(Clone, Copy, Debug)]
struct Ask {
    through: u64,
    /// False until it has been handed out to send.
    sent: bool,
}

/// Why a page was not taken.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PageError {
    /// Not a page that was asked for, or not the positions asked for: dropped, the fetch goes
    /// on (a stall asks again).
    Refused(String),
    /// The store could not take it: the fetch is over.
    Store(String),
}

/// The follower's fetch of the history one received snapshot needs.
#[derive(Debug)]
pub(super) struct Fetch {
    /// The node that sent the file, asked for the history.
    pub from: NodeId,
    /// The sender's term, for the InstallSnapshot stepped at the end.
    pub term: Term,
    pub meta: SnapshotMeta,
    /// The store must hold every position up to this one.
    pub stored_through: u64,
    asked: BTreeMap<u64, Ask>,
    /// Pages that arrived before a page they follow, by first position.
    held: BTreeMap<u64, Vec<ChatMessage>>,
    /// The first position no request or held page covers.
    next: u64,
    bytes_per_message: usize,
    pages_since_sync: u64,
    /// When a page last advanced the store (or the fetch started).
    last_progress: Instant,
    /// When the requests were last asked again after a stall.
    last_reask: Instant,
    pub started: Instant,
    /// Page bytes received and taken, and pages.
    pub bytes: u64,
    pub pages: u64,
}

impl Fetch {
    /// A fetch of `have + 1..=stored_through` (`have`: the store's last position).
    pub(super) fn new(
        from: NodeId,
        term: Term,
        meta: SnapshotMeta,
        stored_through: u64,
        have: u64,
        now: Instant,
    ) -> Fetch {
        Fetch {
            from,
            term,
            meta,
            stored_through,
            asked: BTreeMap::new(),
            held: BTreeMap::new(),
            next: have + 1,
            bytes_per_message: FIRST_GUESS_BYTES,
            pages_since_sync: 0,
            last_progress: now,
            last_reask: now,
            started: now,
            bytes: 0,
            pages: 0,
        }
    }

    /// No page advanced the store for `ABANDON`: give up (the core asks again).
    pub(super) fn abandoned(&self, now: Instant) -> bool {
        now.duration_since(self.last_progress) >= ABANDON
    }

    /// The requests to send now, `(from, through)` each: after `STALL` without progress every
    /// one is asked again from `have + 1` (the store's last position plus one); otherwise new
    /// ones fill the window.
    pub(super) fn requests(&mut self, have: u64, now: Instant) -> Vec<(u64, u64)> {
        let quiet = now.duration_since(self.last_progress.max(self.last_reask));
        if quiet >= STALL && (!self.asked.is_empty() || !self.held.is_empty()) {
            log::info!(
                "history fetch for snapshot {}: no progress for {quiet:.1?}; asking node {} again from position {}",
                self.meta.index,
                self.from,
                have + 1
            );
            self.asked.clear();
            self.held.clear();
            self.next = have + 1;
            self.last_reask = now;
        }
        self.next = self.next.max(have + 1);
        let count = (PAGE_BYTES / self.bytes_per_message.max(1)) as u64;
        let count = count.clamp(1, PAGE_MESSAGES);
        while self.asked.len() + self.held.len() < WINDOW_PAGES && self.next <= self.stored_through
        {
            let through = self.next.saturating_add(count - 1).min(self.stored_through);
            self.asked.insert(
                self.next,
                Ask {
                    through,
                    sent: false,
                },
            );
            match through.checked_add(1) {
                Some(next) => self.next = next,
                None => break, // the last position there is (a damaged header): asked once
            }
        }
        let mut out = Vec::new();
        for (&from, ask) in self.asked.iter_mut().filter(|(_, a)| !a.sent) {
            ask.sent = true;
            out.push((from, ask.through));
        }
        out
    }

    /// A page of `count` messages from `first` (`data`: as the frame carried them). Appends
    /// what now continues the store, in order; `Ok(true)` once the store holds (synced) every
    /// position through `stored_through`.
    pub(super) fn on_page(
        &mut self,
        store: &Mutex<History>,
        first: u64,
        count: u32,
        data: &[u8],
        now: Instant,
    ) -> Result<bool, PageError> {
        let Some(ask) = self.asked.get(&first).copied().filter(|a| a.sent) else {
            return Err(PageError::Refused(format!(
                "no request from position {first} is outstanding"
            )));
        };
        let last = first.saturating_add(u64::from(count)).saturating_sub(1);
        if count == 0 || last > ask.through {
            return Err(PageError::Refused(format!(
                "{count} messages from position {first}, but positions {first}..={} were asked for",
                ask.through
            )));
        }
        let messages =
            wire::decode_history_messages(data, first, count).map_err(PageError::Refused)?;
        self.asked.remove(&first);
        if last < ask.through {
            // A short page: the rest of the request is asked again.
            self.asked.insert(
                last + 1,
                Ask {
                    through: ask.through,
                    sent: false,
                },
            );
        }
        self.bytes += data.len() as u64;
        self.pages += 1;
        self.bytes_per_message = (data.len() / count as usize).max(1);
        self.held.insert(first, messages);
        let mut store = store
            .lock()
            .map_err(|_| PageError::Store("the message store's lock is poisoned".into()))?;
        let mut have = store.last_position();
        let mut advanced = false;
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() > have + 1 {
                break; // a page before it is still missing
            }
            for m in entry.remove() {
                if m.position == have + 1 {
                    store
                        .append(&m)
                        .map_err(|e| PageError::Store(e.to_string()))?;
                    have = m.position;
                    advanced = true;
                }
            }
        }
        if advanced {
            self.last_progress = now;
            self.pages_since_sync += 1;
        }
        let complete = have >= self.stored_through;
        if complete || self.pages_since_sync >= SYNC_EVERY_PAGES {
            store.sync().map_err(|e| PageError::Store(e.to_string()))?;
            self.pages_since_sync = 0;
        }
        Ok(complete)
    }
}

/// The sender's side: one page answering a request for `from..=through`, read from `store`:
/// `(count, encoded messages)`, a prefix of the request of at most `PAGE_BYTES` (and at least
/// one message). `Err` says why it cannot be served (for a `HistoryRefused`).
pub(super) fn serve(
    store: &Mutex<History>,
    from: u64,
    through: u64,
) -> Result<(u32, Vec<u8>), String> {
    let store = store
        .lock()
        .map_err(|_| "the message store's lock is poisoned".to_string())?;
    if from == 0 || through < from {
        return Err(format!("positions {from}..={through} are not a request"));
    }
    let (first, last) = (store.first_position(), store.last_position());
    if from < first || through > last {
        return Err(format!(
            "this node's message store holds positions {first}..={last}, not {from}..={through}"
        ));
    }
    let want = (through - from + 1).min(PAGE_MESSAGES);
    let mut data = Vec::new();
    let mut count: u64 = 0;
    let mut at = from;
    'pages: while count < want {
        let batch = usize::try_from((want - count).min(512)).unwrap_or(512);
        let messages = store
            .read_range(at, batch)
            .map_err(|e| format!("reading position {at}: {e}"))?;
        if messages.is_empty() {
            break;
        }
        for m in messages {
            if m.position != at {
                return Err(format!(
                    "this node's message store gave position {} for {at}",
                    m.position
                ));
            }
            if !wire::history_message_fits(&m) {
                return Err(format!("the message at position {at} exceeds the limits"));
            }
            let size = wire::history_message_bytes(&m);
            if count > 0 && data.len() + size > PAGE_BYTES {
                break 'pages;
            }
            wire::encode_history_message(&m, &mut data);
            count += 1;
            at += 1;
            if count == want {
                break 'pages;
            }
        }
    }
    if count == 0 {
        return Err(format!(
            "this node's message store cannot read position {from}"
        ));
    }
    Ok((count as u32, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::HistoryOptions;
    use std::time::Duration;

    const META: SnapshotMeta = SnapshotMeta {
        index: 900,
        term: 2,
    };

    fn message(position: u64, text_bytes: usize) -> ChatMessage {
        ChatMessage {
            position,
            index: position * 2,
            room: if position.is_multiple_of(3) {
                "#b"
            } else {
                "#a"
            }
            .into(),
            nick: "ann".into(),
            text: "m".repeat(text_bytes),
            timestamp_ms: 1_000 + position,
        }
    }

    fn open(dir: &std::path::Path) -> Mutex<History> {
        let opts = HistoryOptions {
            cache_bytes: 0,
            segment_bytes: 64 << 10,
            ..HistoryOptions::new(dir, 7)
        };
        Mutex::new(History::open(opts).unwrap().0)
    }

    /// A leader's store holding positions `1..=n`, each message `text_bytes` long.
    fn leader_store(dir: &std::path::Path, n: u64, text_bytes: usize) -> Mutex<History> {
        let store = open(dir);
        {
            let mut s = store.lock().unwrap();
            for p in 1..=n {
                s.append(&message(p, text_bytes)).unwrap();
            }
            s.sync().unwrap();
        }
        store
    }

    fn last(store: &Mutex<History>) -> u64 {
        store.lock().unwrap().last_position()
    }

    /// Serves every request in `asks` from `leader`, in order, into `fetch` over `follower`.
    fn answer(
        asks: &[(u64, u64)],
        leader: &Mutex<History>,
        follower: &Mutex<History>,
        fetch: &mut Fetch,
        now: Instant,
    ) -> bool {
        let mut complete = false;
        for &(from, through) in asks {
            let (count, data) = serve(leader, from, through).unwrap();
            complete |= fetch.on_page(follower, from, count, &data, now).unwrap();
        }
        complete
    }

    /// A follower that holds 1..=40 asks from 41, fills a window, takes short pages (1 KiB
    /// messages against 1 MiB pages) and completes exactly at `stored_through`, synced, with
    /// the leader's messages.
    #[test]
    fn fetches_exactly_the_missing_positions_and_completes_at_stored_through() {
        let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let leader = leader_store(ld.path(), 3_000, 900);
        let follower = leader_store(fd.path(), 40, 900);
        let stored_through = 2_500;
        let t0 = Instant::now();
        let mut fetch = Fetch::new(0, 5, META, stored_through, last(&follower), t0);
        let asks = fetch.requests(last(&follower), t0);
        assert_eq!(
            asks[0].0, 41,
            "asks from the position after the store's last"
        );
        assert!(asks.len() <= WINDOW_PAGES && asks.len() > 1, "{asks:?}");
        assert!(
            fetch.requests(last(&follower), t0).is_empty(),
            "the window is full"
        );
        let mut complete = answer(&asks, &leader, &follower, &mut fetch, t0);
        let mut rounds = 0;
        while !complete {
            rounds += 1;
            assert!(rounds < 100, "the fetch makes progress");
            let asks = fetch.requests(last(&follower), t0);
            assert!(asks.iter().all(|&(_, t)| t <= stored_through), "{asks:?}");
            complete = answer(&asks, &leader, &follower, &mut fetch, t0);
        }
        assert_eq!(last(&follower), stored_through, "not one position more");
        assert!(fetch.requests(stored_through, t0).is_empty());
        let (l, f) = (leader.lock().unwrap(), follower.lock().unwrap());
        assert_eq!(
            f.read_range(1, 3_000).unwrap(),
            l.read_range(1, stored_through as usize).unwrap()
        );
        let expected: u64 = (41..=stored_through)
            .map(|p| wire::history_message_bytes(&message(p, 900)) as u64)
            .sum();
        assert_eq!(fetch.bytes, expected, "only the missing messages travel");
        drop(f);
        // Synced: a reopened store holds them all.
        drop(follower);
        assert_eq!(last(&open(fd.path())), stored_through);
    }

    /// Pages with positions other than those asked for, or answering nothing outstanding, are
    /// refused and change nothing; the right page is then taken.
    #[test]
    fn refuses_pages_with_wrong_positions() {
        let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let leader = leader_store(ld.path(), 100, 10);
        let follower = open(fd.path());
        let t0 = Instant::now();
        let mut fetch = Fetch::new(0, 5, META, 100, 0, t0);
        let asks = fetch.requests(0, t0);
        assert_eq!(
            asks,
            vec![(1, 100)],
            "one request covers 100 small messages"
        );
        let (count, data) = serve(&leader, 2, 50).unwrap();
        for (first, count, data) in [
            (2, count, &data[..]),     // not the request's start
            (1, count, &data[..]),     // the positions inside say 2..
            (1, 0, &data[..0]),        // empty
            (1, count + 1, &data[..]), // a count the bytes do not hold
        ] {
            let got = fetch.on_page(&follower, first, count, data, t0);
            assert!(matches!(got, Err(PageError::Refused(_))), "{got:?}");
        }
        let (count, data) = serve(&leader, 1, 100).unwrap();
        assert!(matches!(
            fetch.on_page(&follower, 1, count + 1, &data, t0),
            Err(PageError::Refused(_))
        ));
        assert_eq!(last(&follower), 0, "nothing was appended");
        assert_eq!(fetch.on_page(&follower, 1, count, &data, t0), Ok(true));
        assert_eq!(last(&follower), 100);
        assert!(
            matches!(
                fetch.on_page(&follower, 1, count, &data, t0),
                Err(PageError::Refused(_))
            ),
            "a duplicate answers nothing outstanding"
        );
    }

    /// Pages lost with their requests: after `STALL` the fetch asks again from what the store
    /// holds, and completes; a fetch with no progress for `ABANDON` is abandoned.
    #[test]
    fn resumes_after_a_stall_from_what_the_store_holds() {
        let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let leader = leader_store(ld.path(), 5_000, 300);
        let follower = open(fd.path());
        let t0 = Instant::now();
        let mut fetch = Fetch::new(0, 5, META, 5_000, 0, t0);
        let asks = fetch.requests(0, t0);
        assert!(asks.len() >= 3, "{asks:?}");
        // The second page arrives (held: the first is missing), the first and others are lost.
        let (count, data) = serve(&leader, asks[1].0, asks[1].1).unwrap();
        assert_eq!(
            fetch.on_page(&follower, asks[1].0, count, &data, t0),
            Ok(false)
        );
        assert_eq!(last(&follower), 0, "held until the page before it arrives");
        assert!(
            fetch.requests(0, t0 + STALL / 2).is_empty(),
            "not stalled yet"
        );
        let again = fetch.requests(0, t0 + STALL);
        assert_eq!(again[0].0, 1, "asks again from the store's end");
        assert!(!fetch.abandoned(t0 + STALL));
        let mut complete = answer(&again, &leader, &follower, &mut fetch, t0 + STALL);
        let mut rounds = 0;
        while !complete {
            rounds += 1;
            assert!(rounds < 100);
            let asks = fetch.requests(last(&follower), t0 + STALL);
            complete = answer(&asks, &leader, &follower, &mut fetch, t0 + STALL);
        }
        assert_eq!(last(&follower), 5_000);

        // Interrupted half-way (the follower restarts): a new fetch starts where the store ends.
        let fd2 = tempfile::tempdir().unwrap();
        let follower = open(fd2.path());
        let mut fetch = Fetch::new(0, 5, META, 5_000, 0, t0);
        let asks = fetch.requests(0, t0);
        answer(&asks[..1], &leader, &follower, &mut fetch, t0);
        let have = last(&follower);
        assert!(have > 0 && have < 5_000);
        drop(fetch);
        let resumed = Fetch::new(0, 6, META, 5_000, have, t0).requests(have, t0);
        assert_eq!(resumed[0].0, have + 1);
        let stuck = Fetch::new(0, 5, META, 5_000, 0, t0);
        assert!(stuck.abandoned(t0 + ABANDON + Duration::from_millis(1)));
    }

    /// The sender refuses what its store does not hold, and bounds every page.
    #[test]
    fn serve_refuses_what_it_lacks_and_bounds_pages() {
        let ld = tempfile::tempdir().unwrap();
        let leader = leader_store(ld.path(), 3_000, 4_000);
        assert!(
            serve(&leader, 2_990, 3_001).is_err(),
            "past the store's end"
        );
        assert!(serve(&leader, 0, 5).is_err());
        assert!(serve(&leader, 9, 8).is_err());
        let (count, data) = serve(&leader, 1, 3_000).unwrap();
        assert!(data.len() <= PAGE_BYTES, "{}", data.len());
        assert!(count > 200 && (count as usize) < 3_000, "{count}");
        let decoded = wire::decode_history_messages(&data, 1, count).unwrap();
        assert_eq!(decoded[0], message(1, 4_000));
    }
}
