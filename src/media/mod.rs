//! Media: RTP ports, pipeline templates, one GStreamer pipeline per call and one per target. Besides
//! `plugins/`, the only room that knows GStreamer.

pub mod output;
pub mod pipeline;
pub mod ports;
pub mod template;

pub use output::{Backoff, OutputSettings, TargetId, TargetKind};
pub use pipeline::{
    CallPipeline, KeepAlive, MediaEvent, MediaEventKind, MediaFigures, Setup, StreamSetup,
    TargetChange,
};
pub use ports::PortAllocator;
pub use template::{TemplateNames, Templates, Values};

/// RTP caps for a received stream. Video caps carry the RFC 4585/5104 feedback rtpbin uses to ask for
/// keyframes (PLI, FIR).
pub fn gst_rtp_caps(
    media: &str,
    clock_rate: u32,
    encoding_name: &str,
    payload_type: u8,
) -> gst::Caps {
    let mut builder = gst::Caps::builder("application/x-rtp")
        .field("media", media)
        .field("clock-rate", clock_rate as i32)
        .field("encoding-name", encoding_name)
        .field("payload", i32::from(payload_type));
    if media == "video" {
        builder = builder
            .field("rtcp-fb-nack-pli", true)
            .field("rtcp-fb-ccm-fir", true);
    }
    builder.build()
}

/// Initialises GStreamer and registers the elements the templates may use beyond the system's plugins:
/// the gateway's own (plugins/) and gst-plugins-rs' `livesync`, which Debian 12 does not package. Call once
/// at start-up.
pub fn init() -> Result<(), gst::glib::Error> {
    gst::init()?;
    let failed =
        |e: gst::glib::BoolError| gst::glib::Error::new(gst::CoreError::Failed, &e.to_string());
    sipcastkeepalive::plugin_register_static().map_err(failed)?;
    gstlivesync::plugin_register_static().map_err(failed)
}
