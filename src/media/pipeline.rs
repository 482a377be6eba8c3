//! One call's GStreamer pipeline: built from its template, pointed at the call's RTP port and RTMP target,
//! watched on its bus. Its failures are reported as events for that call only.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gst::prelude::*;
use tokio::sync::mpsc::UnboundedSender;

use super::template::{Template, TemplateError, Values, RTMP_OUT, RTP_IN};
use crate::sdp::AudioPlan;
use crate::secret::StreamKey;
use crate::sip::ua::LegId;

/// Bytes the RTMP sink must have sent before the stream counts as live: more than the handshake
/// (C0+C1+C2 = 3073 bytes) and the connect/publish commands, so media is flowing.
const RTMP_ACTIVE_OUT_BYTES: u64 = 8192;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("pipeline did not start: {0}")]
    Start(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEventKind {
    /// The RTMP sink reported an error (connection refused, closed, publish rejected). Text scrubbed.
    RtmpError(String),
    /// Any other element failed; the call cannot go on. Text scrubbed.
    Failed(String),
    /// The pipeline is down and its port can be reused.
    Stopped { rtp_port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaEvent {
    pub leg: LegId,
    pub kind: MediaEventKind,
}

/// A running call pipeline.
pub struct CallPipeline {
    leg: LegId,
    rtp_port: u16,
    pipeline: gst::Pipeline,
    rtmp_out: gst::Element,
    events: UnboundedSender<MediaEvent>,
    /// Signalled by the bus handler on EOS or error, for a clean stop.
    drained: std::sync::mpsc::Receiver<()>,
    active: bool,
}

/// Where one call's media goes.
pub struct Destination<'a> {
    pub rtmp_url: &'a str,
    pub stream: &'a StreamKey,
}

/// Everything one call's pipeline is built from.
pub struct Setup<'a> {
    pub leg: LegId,
    pub template: &'a Template,
    pub values: &'a Values,
    pub rtp_bind: IpAddr,
    pub rtp_port: u16,
    pub plan: &'a AudioPlan,
    pub destination: Destination<'a>,
}

impl CallPipeline {
    /// Builds and starts the pipeline. RTP is received on `rtp_bind:rtp_port`.
    pub fn start(
        setup: Setup<'_>,
        events: UnboundedSender<MediaEvent>,
    ) -> Result<Self, MediaError> {
        let Setup {
            leg,
            template,
            values,
            rtp_bind,
            rtp_port,
            plan,
            destination,
        } = setup;
        let pipeline = template.instantiate(values)?;
        let contract = "the template contract was checked when the pipeline was instantiated";
        let rtp_in = pipeline.by_name(RTP_IN).expect(contract);
        let rtmp_out = pipeline.by_name(RTMP_OUT).expect(contract);

        let caps = gst::Caps::builder("application/x-rtp")
            .field("media", "audio")
            .field("clock-rate", plan.clock_rate as i32)
            .field("encoding-name", plan.codec.encoding_name())
            .field("payload", i32::from(plan.payload_type))
            .build();
        rtp_in.set_property("address", rtp_bind.to_string());
        rtp_in.set_property("port", i32::from(rtp_port));
        // With SO_REUSEADDR two calls could share a port; we want the bind to fail instead.
        rtp_in.set_property("reuse", false);
        rtp_in.set_property("caps", &caps);
        let location = format!(
            "{}/{}",
            destination.rtmp_url.trim_end_matches('/'),
            destination.stream.expose()
        );
        rtmp_out.set_property("location", location);

        let (drained_tx, drained) = std::sync::mpsc::channel();
        let bus = pipeline.bus().expect("a pipeline always has a bus");
        let handler_events = events.clone();
        let stream = destination.stream.clone();
        let rtmp_weak = rtmp_out.downgrade();
        let errored = Arc::new(AtomicBool::new(false));
        bus.set_sync_handler(move |_, message| {
            use gst::MessageView;
            match message.view() {
                MessageView::Eos(_) => {
                    let _ = drained_tx.send(());
                }
                MessageView::Error(err) => {
                    let _ = drained_tx.send(());
                    // A sink failure makes upstream elements fail too ("internal data stream error"); only
                    // the first error says what happened.
                    if !errored.swap(true, Ordering::SeqCst) {
                        let from_rtmp = match (message.src(), rtmp_weak.upgrade()) {
                            (Some(src), Some(rtmp)) => {
                                src == rtmp.upcast_ref::<gst::Object>()
                                    || src.has_as_ancestor(&rtmp)
                            }
                            _ => false,
                        };
                        let text = stream.scrub(&err.error().to_string());
                        let kind = if from_rtmp {
                            MediaEventKind::RtmpError(text)
                        } else {
                            MediaEventKind::Failed(text)
                        };
                        let _ = handler_events.send(MediaEvent { leg, kind });
                    }
                }
                _ => {}
            }
            gst::BusSyncReply::Drop
        });

        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            let _ = pipeline.set_state(gst::State::Null);
            return Err(MediaError::Start(format!(
                "{e} (RTP port {rtp_port} in use?)"
            )));
        }
        Ok(Self {
            leg,
            rtp_port,
            pipeline,
            rtmp_out,
            events,
            drained,
            active: false,
        })
    }

    pub fn rtp_port(&self) -> u16 {
        self.rtp_port
    }

    /// True the first time the RTMP sink is seen moving media; afterwards false.
    pub fn poll_became_active(&mut self) -> bool {
        if self.active {
            return false;
        }
        if self.rtmp_out.find_property("stats").is_none() {
            // An RTMP sink without statistics (rtmpsink): playing is all we can know.
            self.active = self.pipeline.current_state() == gst::State::Playing;
            return self.active;
        }
        let Some(stats) = self.rtmp_out.property::<Option<gst::Structure>>("stats") else {
            return false;
        };
        let out = stats.get::<u64>("out-bytes-total").unwrap_or(0);
        let incoming = stats.get::<u64>("in-bytes-total").unwrap_or(0);
        self.active = out >= RTMP_ACTIVE_OUT_BYTES && incoming > 0;
        self.active
    }

    pub fn was_active(&self) -> bool {
        self.active
    }

    /// Ends the stream cleanly: EOS through the pipeline so the FLV is finished, then down. Blocking work
    /// runs off the driver; `Stopped` is reported when the port is free.
    pub fn stop(self, eos_timeout: Duration) {
        self.shut_down(Some(eos_timeout));
    }

    /// Takes the pipeline down at once (it has already failed).
    pub fn abort(self) {
        self.shut_down(None);
    }

    fn shut_down(self, eos_timeout: Option<Duration>) {
        let Self {
            leg,
            rtp_port,
            pipeline,
            events,
            drained,
            ..
        } = self;
        std::thread::Builder::new()
            .name(format!("stop-call-{leg}"))
            .spawn(move || {
                if let Some(timeout) = eos_timeout {
                    if pipeline.send_event(gst::event::Eos::new()) {
                        let _ = drained.recv_timeout(timeout);
                    }
                }
                let _ = pipeline.set_state(gst::State::Null);
                let _ = events.send(MediaEvent {
                    leg,
                    kind: MediaEventKind::Stopped { rtp_port },
                });
            })
            .map(drop)
            .unwrap_or_else(|e| {
                tracing::error!(leg, "cannot spawn a thread to stop the pipeline: {e}")
            });
    }
}
