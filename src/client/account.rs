//! Accounts over the binary protocol: `Register`, `Login`, `Logout` and `Passwd` on one
//! [`Connection`] (a login belongs to the connection, as over telnet), and the same on a
//! [`Session`], which logs in again on every connection it fails over to.
//!
//! Each call waits for its own answer (`AccountOk`, or the `Error` as
//! [`SessionError::Answer`]). Account requests carry req_ids with the top bit set, so they never
//! name a session's seq.

use std::io;

use super::conn::Connection;
use super::proto::{Answer, Request};
use super::session::{Session, SessionError};

/// The bit set in every account request's req_id (a session's seqs never reach it).
pub const ACCOUNT_REQ_ID_BIT: u64 = 1 << 63;

/// A password and the nick it logs in to, kept by a [`Session`] to log in after a failover.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub nick: String,
    pub password: String,
}

fn account_call(
    conn: &mut Connection,
    make: impl FnOnce(u64) -> Request,
) -> Result<String, SessionError> {
    let request = make(conn.next_req_id() | ACCOUNT_REQ_ID_BIT);
    request.check_encodable().map_err(SessionError::Invalid)?;
    match conn.call(&request) {
        Ok(Answer::AccountOk { message, .. }) => Ok(message),
        Ok(other) => Err(SessionError::Answer(other)),
        Err(e) => Err(SessionError::Unavailable(e)),
    }
}

impl Connection {
    /// Creates the account and logs this connection in to it; the node's words on success.
    pub fn register(&mut self, nick: &str, password: &str) -> Result<String, SessionError> {
        account_call(self, |req_id| Request::Register {
            req_id,
            nick: nick.to_owned(),
            password: password.to_owned(),
        })
    }

    /// Logs this connection in to `nick`: its posts may then use that nick.
    pub fn login(&mut self, nick: &str, password: &str) -> Result<String, SessionError> {
        account_call(self, |req_id| Request::Login {
            req_id,
            nick: nick.to_owned(),
            password: password.to_owned(),
        })
    }

    pub fn logout(&mut self) -> Result<String, SessionError> {
        account_call(self, |req_id| Request::Logout { req_id })
    }

    /// Changes the logged-in account's password.
    pub fn passwd(&mut self, old: &str, new: &str) -> Result<String, SessionError> {
        account_call(self, |req_id| Request::Passwd {
            req_id,
            old: old.to_owned(),
            new: new.to_owned(),
        })
    }
}

impl Session {
    /// The connection for an account call: nothing may be in flight (`Connection::call` drops
    /// other answers).
    fn idle_connection(&mut self) -> Result<&mut Connection, SessionError> {
        if self.in_flight() > 0 {
            return Err(SessionError::Unavailable(io::Error::other(
                "account requests need a session with nothing in flight: poll first",
            )));
        }
        self.flush()?;
        self.connection()
    }

    /// `register` on the session's connection; the session stays logged in (after failovers
    /// too).
    pub fn register(&mut self, nick: &str, password: &str) -> Result<String, SessionError> {
        let message = self.idle_connection()?.register(nick, password)?;
        self.set_credentials(Some(Credentials {
            nick: nick.to_owned(),
            password: password.to_owned(),
        }));
        Ok(message)
    }

    /// `login` on the session's connection, and again on every connection it fails over to.
    pub fn login(&mut self, nick: &str, password: &str) -> Result<String, SessionError> {
        let message = self.idle_connection()?.login(nick, password)?;
        self.set_credentials(Some(Credentials {
            nick: nick.to_owned(),
            password: password.to_owned(),
        }));
        Ok(message)
    }

    /// Logs in to `nick`, registering it first if no account has that nick yet.
    pub fn register_or_login(
        &mut self,
        nick: &str,
        password: &str,
    ) -> Result<String, SessionError> {
        match self.register(nick, password) {
            Err(SessionError::Answer(Answer::Error { message, .. }))
                if message.contains("already registered") =>
            {
                self.login(nick, password)
            }
            other => other,
        }
    }

    pub fn logout(&mut self) -> Result<String, SessionError> {
        let message = self.idle_connection()?.logout()?;
        self.set_credentials(None);
        Ok(message)
    }

    pub fn passwd(&mut self, old: &str, new: &str) -> Result<String, SessionError> {
        let message = self.idle_connection()?.passwd(old, new)?;
        if let Some(mut credentials) = self.credentials().cloned() {
            credentials.password = new.to_owned();
            self.set_credentials(Some(credentials));
        }
        Ok(message)
    }
}
