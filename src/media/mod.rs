//! Media: RTP ports, pipeline templates, one GStreamer pipeline per call and one per target. Besides
//! `plugins/`, the only room that knows GStreamer.

pub mod output;
pub mod pipeline;
pub mod ports;
pub mod template;

pub use output::{Backoff, OutputSettings, TargetId, TargetKind};
pub use pipeline::{CallPipeline, MediaEvent, MediaEventKind, MediaFigures, Setup, TargetChange};
pub use ports::PortAllocator;
pub use template::{TemplateNames, Templates, Values};

/// Initialises GStreamer and registers the gateway's own elements (plugins/). Call once at start-up.
pub fn init() -> Result<(), gst::glib::Error> {
    gst::init()?;
    sipcastkeepalive::plugin_register_static()
        .map_err(|e| gst::glib::Error::new(gst::CoreError::Failed, &e.to_string()))
}
