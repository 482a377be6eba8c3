// SPDX-License-Identifier: MPL-2.0

//! # `rtpkeepalivesrc`
//!
//! A live source of RTP packets meant to be sent toward a SIP peer (by a
//! downstream `udpsink`) so that a `sendrecv` peer which expects media back
//! keeps the call up, and to carry DTMF toward that peer.
//!
//! ```text
//! gst-launch-1.0 rtpkeepalivesrc encoding-name=PCMA payload-type=8 ! udpsink host=127.0.0.1 port=5004
//! ```
//!
//! ## Audio
//!
//! One packet of encoded silence per `ptime` milliseconds, in real time
//! against the pipeline clock: PCMU (payload bytes `0xFF`) or PCMA (`0xD5`) at
//! 8 kHz, so 160 payload bytes per 20 ms packet. The RTP header is version 2,
//! `payload-type`, a sequence number incremented by one per packet from a
//! random start, a timestamp advancing by the samples per packet from a
//! random start, and a random SSRC unless the `ssrc` property is set. The
//! very first packet carries the marker bit (start of a talkspurt, RFC 3551
//! §4.1). Buffer PTS is the running time at which the packet's audio starts;
//! the element waits until the end of that interval before pushing it, so it
//! reports `ptime` as its (live) latency. If the element starts inside an
//! already running pipeline, its first packet is stamped with the current
//! running time, so it does not burst to catch up from zero; if the
//! streaming thread stalls for more than 200 ms it skips ahead (timestamp
//! jump, sequence numbers stay contiguous, buffer flagged DISCONT).
//!
//! Negotiated caps: `application/x-rtp, media=audio, clock-rate, encoding-name,
//! payload, ssrc, seqnum-offset, timestamp-offset` (the last three are those
//! of the first packet). The `ssrc` property reads back what was set
//! (`u32::MAX` when random); the SSRC actually in use is the one in the caps.
//!
//! ## Properties
//!
//! | name | type | default | range / values | changeable |
//! | --- | --- | --- | --- | --- |
//! | `encoding-name` | string | `"PCMU"` | `"PCMU"`, `"PCMA"` (case-insensitive); anything else is refused with a warning and the old value kept | NULL/READY |
//! | `payload-type` | u32 | 0 | 0..=127 | NULL/READY |
//! | `clock-rate` | u32 | 8000 | 1..=192000; PCMU/PCMA need 8000 (checked when starting) | NULL/READY |
//! | `ptime` | u32 (ms) | 20 | 10..=120 | NULL/READY |
//! | `ssrc` | u32 | `u32::MAX` = random | any; `u32::MAX` (G_MAXUINT, as in `rtpbasepayload`) picks a random SSRC at each start | NULL/READY |
//! | `dtmf-payload-type` | u32 | 101 | 96..=127; must differ from `payload-type` (checked when starting) | any state, applies from the next event |
//! | `dtmf-volume` | u32 (−dBm0) | 10 | 0..=63 | any state, applies from the next event |
//! | `packets-per-push` | u32 | 1 | 1..=10: that many consecutive packets pushed at once as a buffer list, at the end of the last one's interval (latency `ptime` × this) | NULL/READY |
//!
//! Setting a NULL/READY-only property in PAUSED or PLAYING is refused with a
//! warning and the value kept. Out-of-range numbers are refused by GLib
//! (a `g_warning` from C or `gst-launch-1.0`; note that gstreamer-rs's
//! `set_property` *panics* in the caller on an out-of-range value, so check the
//! ranges above before setting from Rust). An inconsistent combination (e.g.
//! PCMU with `clock-rate=16000`, or `dtmf-payload-type == payload-type`) makes
//! the READY→PAUSED transition fail with a `gst::LibraryError::Settings`
//! error message on the bus.
//!
//! ## Signals
//!
//! `send-dtmf(digits: &str, duration_ms: u32) -> bool` (action signal) queues
//! the digits `0-9 * # A-D` (also `a-d`), each lasting `duration_ms`
//! (40..=8000 ms, and at most 65535 timestamp units at `clock-rate`). It
//! returns `false` and queues nothing if any character is invalid, the string
//! is empty, the duration is out of range or the queue (at most 256 pending
//! digits) would overflow. Digits may be queued in any state; they play once
//! the element is PLAYING and are dropped when it goes back to READY.
//!
//! ```no_run
//! # use gst::prelude::*;
//! # fn f(src: &gst::Element) {
//! let queued: bool = src.emit_by_name("send-dtmf", &[&"1#", &100u32]);
//! # }
//! ```
//!
//! From Rust, pass exactly a `&str` (or `String`) and a `u32`: gstreamer-rs
//! panics in the caller on any other argument type (e.g. an `i32` literal).
//! [`RtpKeepaliveSrc::send_dtmf()`] does this for you.
//!
//! While a digit plays, silence packets are replaced by RFC 4733
//! telephone-event packets (`dtmf-payload-type`, same SSRC and sequence
//! space): the first with the marker bit, all sharing the RTP timestamp of the
//! event's start, `duration` growing by one packet's worth each packet, the
//! last with the E bit and sent three times in total; then at least 40 ms of
//! silence before the next digit. Silence timestamps continue as if audio had
//! never been interrupted.
//!
//! ## Not there yet
//!
//! - Video (`media=video`: black H.264 / VP8 frames). The media-specific
//!   parts (caps, payload generation, samples per packet) are behind the
//!   `Encoding` type in `imp.rs`; a video mode would add variants there and a
//!   `media` property, while the timing, RTP header and state handling stay
//!   as they are. DTMF would stay audio-only.
//! - Other audio codecs (G.722, Opus, …) and comfort noise (RFC 3389).
//! - RFC 4733 long-event segmentation (digits longer than 65535 timestamp
//!   units are refused instead) and multi-event packets.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    /// The `rtpkeepalivesrc` element. Usually created by name through
    /// `gst::ElementFactory::make("rtpkeepalivesrc")` after
    /// [`crate::plugin_register_static()`]; see the module docs.
    pub struct RtpKeepaliveSrc(ObjectSubclass<imp::RtpKeepaliveSrc>)
        @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

/// The factory name of the element.
pub const ELEMENT_NAME: &str = "rtpkeepalivesrc";

impl RtpKeepaliveSrc {
    /// Emits the `send-dtmf` action signal: queues `digits` (`0-9 * # A-D`),
    /// each lasting `duration_ms`. Returns whether they were queued.
    pub fn send_dtmf(&self, digits: &str, duration_ms: u32) -> bool {
        self.emit_by_name::<bool>("send-dtmf", &[&digits, &duration_ms])
    }
}

/// Registers the element type and its factory `rtpkeepalivesrc` with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        ELEMENT_NAME,
        gst::Rank::NONE,
        RtpKeepaliveSrc::static_type(),
    )
}
