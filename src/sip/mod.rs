//! SIP signalling (RFC 3261) for the calls the gateway places: parsing and building messages over rsip,
//! client transactions with their timers, digest authentication, and the sans-IO user agent that ties them
//! into calls. Nothing here touches a socket or a clock: see `driver.rs` for the I/O.

pub mod auth;
pub mod digest;
pub mod message;
pub mod register;
pub mod transaction;
pub mod ua;

#[cfg(test)]
mod torture_tests;

pub use ua::{CallSpec, Credentials, LegId, SipEvent, Transmit, UaConfig, UserAgent};
