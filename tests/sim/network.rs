//! The simulated network: decides whether, when and how many times a message arrives.
//!
//! It owns the link state (a cut count per directed link, so overlapping partitions heal
//! independently) and the loss, duplication and delay model. Like the TCP connections between
//! real nodes, a link delivers in order: a message never arrives before one sent earlier on the
//! same link, except a slow one (a stalled connection, a retransmission) or a duplicate, which
//! later messages overtake. It never holds messages: the driver's event queue does, so delivery
//! order is time order. A link that is cut drops what is sent over it and what arrives over it.

use raftchat::raft::NodeId;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::Time;

/// A directed link `(from, to)`.
pub type Link = (NodeId, NodeId);

/// How lossy and slow the network is; drawn per run.
#[derive(Clone, Debug)]
pub struct NetworkParams {
    pub drop_prob: f64,
    pub duplicate_prob: f64,
    /// An ordinary delivery takes `1..=delay_max` sub-ticks, and waits for the one before it.
    pub delay_max: Time,
    /// A few deliveries are slow (`1..=slow_delay_max`), and later messages overtake them.
    pub slow_prob: f64,
    pub slow_delay_max: Time,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct NetworkStats {
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub cut: u64,
}

/// When copies of one sent message arrive, in sub-ticks from now (none: it was lost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fate {
    pub delivery: Option<Time>,
    pub duplicate: Option<Time>,
}

pub struct Network {
    count: usize,
    /// `cut_count[from * count + to] > 0` ⇔ the link from → to is down.
    cut_count: Vec<u32>,
    /// When the last in-order message on each link arrives.
    last_arrival: Vec<Time>,
    params: NetworkParams,
    pub stats: NetworkStats,
}

impl Network {
    pub fn new(count: usize, params: NetworkParams) -> Network {
        Network {
            count,
            cut_count: vec![0; count * count],
            last_arrival: vec![0; count * count],
            params,
            stats: NetworkStats::default(),
        }
    }

    fn slot(&self, (from, to): Link) -> usize {
        debug_assert!(from < self.count as u64 && to < self.count as u64);
        from as usize * self.count + to as usize
    }

    pub fn link_up(&self, link: Link) -> bool {
        self.cut_count[self.slot(link)] == 0
    }

    pub fn cut(&mut self, links: &[Link]) {
        for &link in links {
            let slot = self.slot(link);
            self.cut_count[slot] += 1;
        }
    }

    /// Undoes one `cut` of these links. Saturating: `heal_all` may have restored them already.
    pub fn restore(&mut self, links: &[Link]) {
        for &link in links {
            let slot = self.slot(link);
            self.cut_count[slot] = self.cut_count[slot].saturating_sub(1);
        }
    }

    pub fn heal_all(&mut self) {
        self.cut_count.fill(0);
    }

    /// From now on nothing is lost or duplicated (delays and reordering stay).
    pub fn stop_losses(&mut self) {
        self.params.drop_prob = 0.0;
        self.params.duplicate_prob = 0.0;
    }

    /// Decides the fate of a message sent at `now` over `link`.
    pub fn route(&mut self, link: Link, now: Time, rng: &mut SmallRng) -> Fate {
        self.stats.sent += 1;
        let lost = Fate {
            delivery: None,
            duplicate: None,
        };
        if !self.link_up(link) {
            self.stats.cut += 1;
            return lost;
        }
        if rng.gen_bool(self.params.drop_prob) {
            self.stats.dropped += 1;
            return lost;
        }
        let delivery = if rng.gen_bool(self.params.slow_prob) {
            rng.gen_range(1..=self.params.slow_delay_max)
        } else {
            let slot = self.slot(link);
            let arrival =
                (now + rng.gen_range(1..=self.params.delay_max)).max(self.last_arrival[slot]);
            self.last_arrival[slot] = arrival;
            arrival - now
        };
        let duplicate = if rng.gen_bool(self.params.duplicate_prob) {
            self.stats.duplicated += 1;
            Some(rng.gen_range(1..=self.params.slow_delay_max))
        } else {
            None
        };
        Fate {
            delivery: Some(delivery),
            duplicate,
        }
    }

    /// Whether a message arriving now over `link` gets through (a partition drops it).
    pub fn arrives(&mut self, link: Link) -> bool {
        let up = self.link_up(link);
        if !up {
            self.stats.cut += 1;
        }
        up
    }
}

/// Every link between `side` and the other nodes, both ways: a symmetric partition.
pub fn split_links(count: usize, side: &[NodeId]) -> Vec<Link> {
    let mut links = Vec::new();
    for a in side.iter().copied() {
        for b in (0..count as NodeId).filter(|b| !side.contains(b)) {
            links.push((a, b));
            links.push((b, a));
        }
    }
    links
}

/// Every link into `node` (it goes deaf) or out of it (it goes mute): a one-way partition.
pub fn one_way_links(count: usize, node: NodeId, inbound: bool) -> Vec<Link> {
    (0..count as NodeId)
        .filter(|&other| other != node)
        .map(|other| {
            if inbound {
                (other, node)
            } else {
                (node, other)
            }
        })
        .collect()
}

/// `how_many` distinct random directed links.
pub fn random_links(count: usize, how_many: usize, rng: &mut SmallRng) -> Vec<Link> {
    let mut all: Vec<Link> = (0..count as NodeId)
        .flat_map(|a| (0..count as NodeId).map(move |b| (a, b)))
        .filter(|(a, b)| a != b)
        .collect();
    all.shuffle(rng);
    all.truncate(how_many);
    all
}
