//! The rooms one chat session has joined and the one it posts to: the same rules for every
//! front-end (telnet, web). Session state only; the rooms themselves are replicated state.

use crate::chat::DEFAULT_ROOM;

#[derive(Debug)]
pub struct RoomSet {
    joined: Vec<String>,
    current: String,
}

impl Default for RoomSet {
    /// A new session is in the default room and posts there.
    fn default() -> RoomSet {
        RoomSet {
            joined: vec![DEFAULT_ROOM.to_string()],
            current: DEFAULT_ROOM.to_string(),
        }
    }
}

impl RoomSet {
    /// The room a message without `#room` goes to.
    pub fn current(&self) -> &str {
        &self.current
    }

    pub fn joined(&self) -> &[String] {
        &self.joined
    }

    pub fn contains(&self, room: &str) -> bool {
        self.joined.iter().any(|r| r == room)
    }

    /// Joins `room` (once) and posts there from now on.
    pub fn enter(&mut self, room: &str) {
        if !self.contains(room) {
            self.joined.push(room.to_string());
        }
        self.current = room.to_string();
    }

    /// Leaves `room`; false if the session was not in it. Posting moves to the room joined
    /// last, or the default room.
    pub fn leave(&mut self, room: &str) -> bool {
        let Some(pos) = self.joined.iter().position(|r| r == room) else {
            return false;
        };
        self.joined.remove(pos);
        if self.current == room {
            self.current = self
                .joined
                .last()
                .cloned()
                .unwrap_or_else(|| DEFAULT_ROOM.to_string());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaving_the_current_room_posts_to_the_last_joined_then_the_default() {
        let mut rooms = RoomSet::default();
        rooms.enter("rust");
        rooms.enter("go");
        rooms.enter("rust");
        assert_eq!(rooms.joined(), ["general", "rust", "go"]);
        assert!(rooms.leave("rust"));
        assert_eq!(rooms.current(), "go");
        assert!(!rooms.leave("rust"), "not in it any more");
        assert!(rooms.leave("go") && rooms.leave("general"));
        assert_eq!(rooms.current(), DEFAULT_ROOM);
        assert!(rooms.joined().is_empty());
    }
}
