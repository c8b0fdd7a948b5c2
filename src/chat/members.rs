//! The member table: who is in the cluster, at which address, voting or learning, and which
//! ids were removed for good. Replicated state: it changes only when a configuration entry
//! (`EntryKind::ConfChange`, whose context is the new member's `host:port`) is applied, and
//! snapshots carry it (its own section of the chat snapshot, see `snapshot.rs`), so a node that
//! installs or loads a snapshot learns the members and their addresses.
//!
//! Owns the table and its text encoding; never validates a change against the Raft rules (the
//! core refused bad changes before they were appended, and every node applies the same entries
//! the same way, so an entry that does not fit is skipped identically everywhere).
//!
//! The table starts *unset*: until the first configuration entry (or a snapshot that carries
//! a table), the members are the cluster's bootstrap list, which the server supplies
//! ([`MemberTable::bootstrap`]).
//!
//! Text encoding (inside the snapshot's members string), one line per fact, ids ascending:
//!
//! ```text
//! voter <id> <host:port>
//! learner <id> <host:port>     (an address that did not parse is written as '-')
//! removed <id>
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// One member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Where its peers reach it; `None` if the entry's address did not parse.
    pub addr: Option<SocketAddr>,
    pub voter: bool,
}

/// A configuration change as the table applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberChange {
    AddLearner(u64),
    Promote(u64),
    Remove(u64),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberTable {
    /// False until the bootstrap list or a configuration entry or a snapshot filled it.
    set: bool,
    members: BTreeMap<u64, Member>,
    removed: BTreeSet<u64>,
}

/// Lines a members section may hold; more is not a table this code wrote.
const MEMBER_LINES_MAX: usize = 1 << 16;

impl MemberTable {
    /// True once the table holds the cluster's members (it is never unset again).
    pub fn is_set(&self) -> bool {
        self.set
    }

    /// The bootstrap list, all voters, if the table is still unset.
    pub fn bootstrap(&mut self, voters: impl IntoIterator<Item = (u64, SocketAddr)>) {
        if self.set {
            return;
        }
        self.set = true;
        for (id, addr) in voters {
            let addr = Some(addr);
            self.members.insert(id, Member { addr, voter: true });
        }
    }

    /// Applies a committed change; `context` is the entry's context (the new member's
    /// `host:port` for an add). Returns false (and changes nothing) if the change does not fit
    /// the table, which every node decides alike.
    pub fn apply(&mut self, change: MemberChange, context: &[u8]) -> bool {
        self.set = true;
        match change {
            MemberChange::AddLearner(id) => {
                if self.members.contains_key(&id) || self.removed.contains(&id) {
                    return false;
                }
                let addr = parse_addr(context);
                self.members.insert(id, Member { addr, voter: false });
            }
            MemberChange::Promote(id) => match self.members.get_mut(&id) {
                Some(member) if !member.voter => member.voter = true,
                _ => return false,
            },
            MemberChange::Remove(id) => {
                if self.members.remove(&id).is_none() {
                    return false;
                }
                self.removed.insert(id);
            }
        }
        true
    }

    pub fn get(&self, id: u64) -> Option<&Member> {
        self.members.get(&id)
    }

    /// Every member, ids ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Member)> + '_ {
        self.members.iter().map(|(id, m)| (*id, m))
    }

    pub fn voters(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().filter(|(_, m)| m.voter).map(|(id, _)| id)
    }

    pub fn learners(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().filter(|(_, m)| !m.voter).map(|(id, _)| id)
    }

    pub fn removed(&self) -> impl Iterator<Item = u64> + '_ {
        self.removed.iter().copied()
    }

    pub fn was_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// The text form (module docs); empty for an unset table.
    pub fn encode_text(&self) -> String {
        let mut text = String::new();
        for (id, m) in &self.members {
            let role = if m.voter { "voter" } else { "learner" };
            let addr = m.addr.map_or_else(|| "-".to_string(), |a| a.to_string());
            text.push_str(&format!("{role} {id} {addr}\n"));
        }
        for id in &self.removed {
            text.push_str(&format!("removed {id}\n"));
        }
        text
    }

    /// Parses [`MemberTable::encode_text`]'s form; an empty text is an unset table. Never
    /// panics: the error names the first bad line.
    pub fn decode_text(text: &str) -> Result<MemberTable, String> {
        let mut table = MemberTable::default();
        for (n, line) in text.lines().enumerate() {
            if n >= MEMBER_LINES_MAX {
                return Err("too many member lines".into());
            }
            table.set = true;
            let mut words = line.split(' ');
            let (kind, id) = (words.next(), words.next().map(str::parse::<u64>));
            let addr = words.next();
            let Some(Ok(id)) = id else {
                return Err(format!("member line {}: no id", n + 1));
            };
            let fresh = !table.members.contains_key(&id) && !table.removed.contains(&id);
            if !fresh || words.next().is_some() {
                return Err(format!("member line {}: repeated id or extra words", n + 1));
            }
            match (kind, addr) {
                (Some(role @ ("voter" | "learner")), Some(addr)) => {
                    let addr =
                        if addr == "-" {
                            None
                        } else {
                            Some(addr.parse().map_err(|_| {
                                format!("member line {}: bad address '{addr}'", n + 1)
                            })?)
                        };
                    let voter = role == "voter";
                    table.members.insert(id, Member { addr, voter });
                }
                (Some("removed"), None) => {
                    table.removed.insert(id);
                }
                _ => return Err(format!("member line {}: not a member line", n + 1)),
            }
        }
        Ok(table)
    }
}

/// The entry's context as an address: `host:port` text that parses as a socket address (the
/// server resolves names before proposing, so the context is always numeric).
fn parse_addr(context: &[u8]) -> Option<SocketAddr> {
    std::str::from_utf8(context).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn three() -> MemberTable {
        let mut table = MemberTable::default();
        table.bootstrap((0..3).map(|id| (id, addr(7000 + id as u16))));
        table
    }

    #[test]
    fn a_learner_is_added_with_its_address_promoted_and_removed_for_good() {
        let mut table = three();
        assert!(table.apply(MemberChange::AddLearner(3), b"127.0.0.1:7003"));
        assert_eq!(table.learners().collect::<Vec<_>>(), vec![3]);
        assert_eq!(table.get(3).and_then(|m| m.addr), Some(addr(7003)));
        assert!(table.apply(MemberChange::Promote(3), b""));
        assert!(table.apply(MemberChange::Remove(0), b""));
        assert_eq!(table.voters().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(table.was_removed(0));
        assert!(!table.apply(MemberChange::AddLearner(0), b"127.0.0.1:7000"));
        assert!(
            !table.apply(MemberChange::Promote(1), b""),
            "already a voter"
        );
        assert!(!table.apply(MemberChange::Remove(9), b""));
        // The bootstrap list never overrides a table that is set.
        table.bootstrap([(7, addr(1))]);
        assert!(table.get(7).is_none());
    }

    #[test]
    fn the_text_form_round_trips_and_bad_text_is_an_error() {
        let mut table = three();
        table.apply(MemberChange::AddLearner(5), b"not an address");
        table.apply(MemberChange::Remove(1), b"");
        let text = table.encode_text();
        assert_eq!(MemberTable::decode_text(&text), Ok(table));
        assert_eq!(MemberTable::decode_text(""), Ok(MemberTable::default()));
        for bad in [
            "voter 1",
            "voter x 127.0.0.1:1",
            "voter 1 127.0.0.1:1\nlearner 1 127.0.0.1:2",
            "removed 1 127.0.0.1:1",
            "boss 1 127.0.0.1:1",
            "voter 1 nowhere",
            "\u{0}",
        ] {
            assert!(MemberTable::decode_text(bad).is_err(), "{bad:?}");
        }
    }
}
