//! Tests of the client against a fake agent on a real Unix socket.

mod blocking;
mod client;
mod fake_agent;
#[cfg(feature = "reqsign")]
mod reqsign;
mod resolve;
