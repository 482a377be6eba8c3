//! sipcast: a SIP-to-RTMP gateway.
//!
//! An application asks over REST for a call; sipcast places it over SIP, receives its RTP and publishes it
//! to RTMP through one GStreamer pipeline per call. See ARCHITECTURE.md for the map of the rooms below.
#![forbid(unsafe_code)]

pub mod api;
pub mod call;
pub mod config;
pub mod driver;
pub mod media;
pub mod notify;
pub mod sdp;
pub mod secret;
pub mod sip;
