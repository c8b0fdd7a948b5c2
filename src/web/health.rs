//! `GET /health`: the verdict a load balancer or orchestrator acts on, as a status and a one-line
//! JSON body.
//!
//! Healthy (200) when the node knows a leader and has applied its log to within
//! [`APPLY_LAG_ENTRIES_MAX`] entries of the commit index it knows; 503 otherwise (no leader:
//! cut off, or an election in progress; or too far behind to serve fresh reads). Pure: the
//! server passes in what it knows; this module reads no state and does no IO.

use serde_json::json;

/// How far the applied index may trail the known commit index and still be healthy.
pub const APPLY_LAG_ENTRIES_MAX: u64 = 1000;

/// What the node knows when asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthInput {
    pub node: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
    pub apply_index: u64,
}

/// The status (200 or 503) and the body (one line of JSON, newline-terminated).
pub fn health(input: &HealthInput) -> (u16, String) {
    let lag = input.commit_index.saturating_sub(input.apply_index);
    let (status, reason) = match input.leader {
        None => (503, "no leader"),
        Some(_) if lag > APPLY_LAG_ENTRIES_MAX => (503, "applied index too far behind commit"),
        Some(_) => (200, "ok"),
    };
    let body = json!({
        "health": status == 200,
        "reason": reason,
        "node": input.node,
        "leader": input.leader,
        "term": input.term,
        "commit_index": input.commit_index,
        "apply_index": input.apply_index,
    });
    (status, format!("{body}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(leader: Option<u64>, commit_index: u64, apply_index: u64) -> HealthInput {
        HealthInput {
            node: 1,
            leader,
            term: 4,
            commit_index,
            apply_index,
        }
    }

    fn parsed(body: &str) -> serde_json::Value {
        assert!(
            body.ends_with('\n') && body.matches('\n').count() == 1,
            "one line"
        );
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn a_node_with_a_leader_and_little_lag_is_healthy() {
        let (status, body) = health(&input(Some(0), 120, 119));
        assert_eq!(status, 200);
        let body = parsed(&body);
        assert_eq!(body["health"], true);
        assert_eq!(body["leader"], 0);
        assert_eq!(body["apply_index"], 119);
        let (status, _) = health(&input(Some(0), 5000, 5000 - APPLY_LAG_ENTRIES_MAX));
        assert_eq!(status, 200, "exactly at the bound is still healthy");
    }

    #[test]
    fn no_leader_is_503() {
        let (status, body) = health(&input(None, 120, 120));
        assert_eq!(status, 503);
        let body = parsed(&body);
        assert_eq!(body["health"], false);
        assert_eq!(body["reason"], "no leader");
        assert!(body["leader"].is_null());
    }

    #[test]
    fn far_behind_is_503() {
        let (status, body) = health(&input(Some(2), 5000, 5000 - APPLY_LAG_ENTRIES_MAX - 1));
        assert_eq!(status, 503);
        assert_eq!(
            parsed(&body)["reason"],
            "applied index too far behind commit"
        );
        // An applied index past a stale commit index is not lag.
        assert_eq!(health(&input(Some(2), 10, 12)).0, 200);
    }
}
