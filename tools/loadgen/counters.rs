//! The nodes' group-commit counters, read over telnet: sends `status` on a fresh connection
//! and parses the `key value` lines up to `end` ([`parse_status`]). It only reads; it never
//! posts, joins or changes anything on a node.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long one node may take to answer `status` before it counts as unseen.
const STATUS_TIMEOUT_MS: u64 = 2000;
/// Lines read at most while waiting for `end` (chat lines from the room may interleave).
const STATUS_LINES_MAX: usize = 10_000;

/// The counters one node reported; only what loadgen needs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    pub node: u64,
    pub leader: bool,
    pub syncs: u64,
    pub entries_synced: u64,
    pub append_entries_sent: u64,
}

/// Parses the lines of a telnet `status` answer. Unknown lines are skipped; an error names
/// the first required key that is missing or not a number.
pub fn parse_status(text: &str) -> Result<Counters, String> {
    let value = |key: &str| -> Result<u64, String> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.split_whitespace().next() == Some(key))
            .ok_or_else(|| format!("status has no `{key}` line"))?;
        let raw = line.split_whitespace().nth(1).unwrap_or("");
        raw.parse()
            .map_err(|_| format!("status `{key}`: '{raw}' is not a number"))
    };
    let role = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("role "))
        .ok_or("status has no `role` line")?;
    Ok(Counters {
        node: value("node")?,
        leader: role.trim() == "Leader",
        syncs: value("syncs")?,
        entries_synced: value("entries_synced")?,
        append_entries_sent: value("append_entries_sent")?,
    })
}

/// Asks one node for `status` over telnet and parses the answer.
pub fn fetch_counters(addr: &SocketAddr) -> Result<Counters, String> {
    let text = fetch_status_text(addr).map_err(|e| format!("{addr}: {e}"))?;
    parse_status(&text).map_err(|e| format!("{addr}: {e}"))
}

/// The raw `status` lines of one node, up to (not including) `end`.
fn fetch_status_text(addr: &SocketAddr) -> io::Result<String> {
    let timeout = Duration::from_millis(STATUS_TIMEOUT_MS);
    let mut stream = TcpStream::connect_timeout(addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"status\r\n")?;
    let mut reader = BufReader::new(stream);
    let mut text = String::new();
    let mut line = String::new();
    for _ in 0..STATUS_LINES_MAX {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before `end`",
            ));
        }
        if line.trim() == "end" {
            return Ok(text);
        }
        text.push_str(&line);
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no `end` after many lines",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "node 1\nrole Leader\nterm 3\nleader 1\ncommit 10\nsyncs 40\n\
        entries_synced 120\nentries_per_sync_mean 3.00\nentries_per_sync_max 9\n\
        syncs_in_flight 0\nappend_entries_sent 77\nentries_per_append_mean 1.50\n\
        peer 0 match 10 next 11 replicating\n";

    #[test]
    fn a_status_answer_parses_into_counters() {
        let c = parse_status(STATUS).unwrap();
        assert_eq!(
            c,
            Counters {
                node: 1,
                leader: true,
                syncs: 40,
                entries_synced: 120,
                append_entries_sent: 77
            }
        );
        let follower = STATUS.replace("role Leader", "role Follower");
        assert!(!parse_status(&follower).unwrap().leader);
    }

    #[test]
    fn chat_lines_in_between_are_skipped_and_similar_keys_do_not_match() {
        let text = format!("#general alice: syncs 999\n{STATUS}");
        assert_eq!(parse_status(&text).unwrap().syncs, 40);
        // `entries_synced` must not be read from `entries_synced_total` or the like.
        let text = STATUS.replace("entries_synced 120", "entries_synced_total 5");
        assert!(parse_status(&text).unwrap_err().contains("entries_synced"));
    }

    #[test]
    fn missing_or_garbled_counters_are_clear_errors() {
        let old = STATUS.replace("syncs 40\n", "");
        assert!(parse_status(&old).unwrap_err().contains("`syncs`"));
        let bad = STATUS.replace("syncs 40", "syncs forty");
        assert!(parse_status(&bad).unwrap_err().contains("forty"));
        assert!(parse_status("").is_err());
        let no_role = STATUS.replace("role Leader\n", "");
        assert!(parse_status(&no_role).unwrap_err().contains("role"));
    }
}
