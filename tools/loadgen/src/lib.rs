//! sipcast's capacity benchmark load generator (issue 7): SIP user agents on loopback that answer the
//! gateway's calls and stream real RTP, and a SIP-less RTP mode that feeds one `ffmpeg` per call for the
//! baseline. See `bench/README.md`.
#![forbid(unsafe_code)]

pub mod media;
pub mod rtp;
pub mod sdp;
pub mod sip;
pub mod uas;
