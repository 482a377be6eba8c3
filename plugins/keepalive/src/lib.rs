// SPDX-License-Identifier: MPL-2.0

//! GStreamer elements that keep a SIP peer's media path alive by sending
//! generated RTP toward it.
//!
//! The gateway links this crate statically and calls
//! [`plugin_register_static()`] once, after `gst::init()`, at start-up; the
//! elements can then be created by name like any other element:
//!
//! ```no_run
//! use gst::prelude::*;
//!
//! gst::init().unwrap();
//! sipcastkeepalive::plugin_register_static().unwrap();
//! let src = gst::ElementFactory::make("rtpkeepalivesrc")
//!     .property_from_str("encoding-name", "PCMA")
//!     .property("payload-type", 8u32)
//!     .build()
//!     .unwrap();
//! let queued: bool = src.emit_by_name("send-dtmf", &[&"1#", &100u32]);
//! assert!(queued);
//! ```
//!
//! Elements:
//! - `rtpkeepalivesrc` ([`RtpKeepaliveSrc`]): live source of encoded audio
//!   silence (PCMU/PCMA) as RTP, with RFC 4733 DTMF on demand.

// `gst::plugin_define!` expands to the C plugin descriptor (`unsafe impl
// Send/Sync`, `#[unsafe(no_mangle)] extern "C"` entry points, an `unsafe` call
// of `gst_plugin_register_static()`). No `#[allow(unsafe_code)]` is needed:
// rustc does not report `unsafe_code` for code expanded from another crate's
// macro, and the workspace's `unsafe_code = "deny"` does apply to everything
// written here (checked). Should a future rustc report it, allow it on this
// module only, never crate-wide.
mod plugin {
    use gst::glib;

    fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
        crate::rtpkeepalivesrc::register(plugin)
    }

    gst::plugin_define!(
        sipcastkeepalive,
        env!("CARGO_PKG_DESCRIPTION"),
        plugin_init,
        env!("CARGO_PKG_VERSION"),
        // GStreamer's name for MPL-2.0 (its list of known licenses predates
        // the SPDX identifier).
        "MPL",
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_REPOSITORY")
    );
}

pub mod rtpkeepalivesrc;

pub use rtpkeepalivesrc::RtpKeepaliveSrc;

/// Registers this crate's plugin (and so the `rtpkeepalivesrc` element) with
/// GStreamer's registry. Call it after `gst::init()`; calling it again is
/// harmless and returns `Ok` again.
pub fn plugin_register_static() -> Result<(), gst::glib::BoolError> {
    plugin::plugin_register_static()
}
