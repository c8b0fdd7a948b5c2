//! What applying one command did: the answer a waiting client is given.
//!
//! It owns the `Outcome` type only, shared by the state machine that computes it and the
//! session table that remembers it for retries; it never encodes itself and never does IO.

/// What applying one command did, for the client waiting on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Posted {
        position: u64,
    },
    RoomCreated {
        existed: bool,
    },
    /// A Set, Del or successful Cas; `revision` is the store's revision after it.
    KvAck {
        revision: u64,
    },
    /// A Cas whose expectation did not hold; `current` is the value it found.
    CasFailed {
        current: Option<String>,
    },
    /// A Del of a key that does not exist.
    NotFound,
    /// A command that does not decode or breaks a rule; the reason is one human line.
    Rejected(String),
    /// An `OpenSession`; the id is the log index of its entry.
    SessionOpened {
        session_id: u64,
    },
    /// The command's session is unknown or expired: nothing was applied; open a new session.
    SessionExpired,
    /// A `Register` or `SetPassword` was stored.
    AccountSaved,
    /// A `RoomAdmin` other than a kick was applied.
    RoomUpdated,
    /// `nick` was kicked out of `room`: every node takes its sessions out of the room.
    Kicked {
        room: String,
        nick: String,
    },
}
