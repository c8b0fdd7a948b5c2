//! The recorded history of a register workload: one `Op` per client command, with its invoke
//! and completion times and what the client learned. It owns the vocabulary shared by the
//! workload (which records) and the checker (which judges); it never talks to a server.

use std::fmt;

/// What a client did and what it learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `set key value`: acknowledged, or of unknown outcome when `complete_ns` is `None`.
    Set { value: String },
    /// `cas key expected new` that was acknowledged (or of unknown outcome when `complete_ns`
    /// is `None`). `None` means "absent" (`-`).
    Cas {
        expected: Option<String>,
        new: String,
    },
    /// `cas` answered `err cas failed: current X`: a successful read of `current`, no write.
    CasFailed {
        expected: Option<String>,
        new: String,
        current: Option<String>,
    },
    /// `get key`: `value <revision> <value>` (`Some`) or `err not found` (`None`).
    Read { value: Option<String> },
}

/// One operation on one key. Times are nanoseconds since the workload began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub client: usize,
    pub node: usize,
    pub key: String,
    pub kind: Kind,
    pub invoke_ns: u64,
    /// `None`: the outcome is unknown (timeout, `outcome unknown`, connection lost), so the
    /// write may take effect at any time after `invoke_ns`, or never.
    pub complete_ns: Option<u64>,
}

impl Op {
    /// Whether the op must appear in every linearization (its outcome is known).
    pub fn is_known(&self) -> bool {
        self.complete_ns.is_some()
    }

    /// The value this op writes when it takes effect, if it writes.
    pub fn written(&self) -> Option<&str> {
        match &self.kind {
            Kind::Set { value } => Some(value),
            Kind::Cas { new, .. } => Some(new),
            Kind::CasFailed { .. } | Kind::Read { .. } => None,
        }
    }

    /// The value this op saw (read, compared successfully, or found instead), if it saw one.
    pub fn observed(&self) -> Option<&str> {
        match &self.kind {
            Kind::Set { .. } => None,
            Kind::Cas { expected, .. } => expected.as_deref(),
            Kind::CasFailed { current, .. } => current.as_deref(),
            Kind::Read { value } => value.as_deref(),
        }
    }
}

fn show(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("-")
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |ns: u64| ns as f64 / 1e6;
        let end = match self.complete_ns {
            Some(ns) => format!("{:.3}ms", ms(ns)),
            None => "unknown".to_string(),
        };
        write!(
            f,
            "client {} via node {} [{:.3}ms, {end}] ",
            self.client,
            self.node,
            ms(self.invoke_ns)
        )?;
        let outcome = if self.is_known() {
            "ack"
        } else {
            "outcome unknown"
        };
        match &self.kind {
            Kind::Set { value } => write!(f, "set {} {value} -> {outcome}", self.key),
            Kind::Cas { expected, new } => {
                write!(f, "cas {} {} {new} -> {outcome}", self.key, show(expected))
            }
            Kind::CasFailed {
                expected,
                new,
                current,
            } => write!(
                f,
                "cas {} {} {new} -> failed, current {}",
                self.key,
                show(expected),
                show(current)
            ),
            Kind::Read { value } => write!(f, "get {} -> {}", self.key, show(value)),
        }
    }
}
