//! The node's web front-end pieces: HTTP/1.1 request heads and responses, the WebSocket codec,
//! the JSON chat messages, the embedded chat page and the health verdict. Every module here is
//! pure: bytes in, bytes or values out, no sockets, no clock, no global state; the server's
//! front-end drives them.

pub mod health;
pub mod http;
pub mod json;
pub mod page;
pub mod ws;
