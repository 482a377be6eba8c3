//! One call's media: the call pipeline built from its template (RTP in, FLV out of `mux`), an appsink that
//! fans the FLV out to each target's own output pipeline, the targets' lifecycles, and the call's figures.
//! Failures are reported as events for that call only.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use tokio::sync::mpsc::UnboundedSender;

use super::output::{Feed, Output, OutputSettings, TargetId, TargetKind};
use super::template::{TemplateError, Templates, Values, JITTER, MUX, RTP_IN};
use crate::call::RtmpStatus;
use crate::sdp::AudioPlan;
use crate::sip::ua::LegId;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("pipeline did not start: {0}")]
    Start(String),
    #[error("no target {0}")]
    NoTarget(TargetId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEventKind {
    /// A target's output pipeline failed (connection refused or lost, publish rejected). Text scrubbed.
    OutputFailed {
        target: TargetId,
        generation: u64,
        reason: String,
    },
    /// The call pipeline failed; the call cannot go on. Text scrubbed.
    Failed(String),
    /// The call's pipelines are down and its port can be reused.
    Stopped { rtp_port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaEvent {
    pub leg: LegId,
    pub kind: MediaEventKind,
}

/// A status change of one target, for the call record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetChange {
    pub target: TargetId,
    pub status: RtmpStatus,
    pub reason: Option<String>,
}

/// A liveness probe to run: the target, its pipeline generation, and the server's host and port.
pub type ProbeRequest = (TargetId, u64, (String, u16));

/// What one target shows in the call's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFigures {
    pub target: TargetId,
    pub description: String,
    pub is_rtmp: bool,
    pub status: RtmpStatus,
    pub reason: Option<String>,
    pub bytes_out: u64,
    pub reconnects: u32,
    pub last_reconnect_unix_ms: Option<u64>,
}

/// A call's media figures (find, webhooks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaFigures {
    pub rtp_packets_in: u64,
    pub rtp_bytes_in: u64,
    pub rtp_lost: u64,
    pub jitter_us: u64,
    /// From the answer (pipeline start) to the first target going live.
    pub answer_to_first_rtmp_ms: Option<u64>,
    pub targets: Vec<TargetFigures>,
}

/// The fan-out's view of the targets, shared with the call pipeline's streaming thread.
#[derive(Default)]
struct FanOut {
    caps: Option<gst::Caps>,
    /// The FLV header and codec tags (flvmux's `streamheader`), for targets that join later.
    headers: Vec<gst::Buffer>,
    feeds: Vec<Feed>,
    ended: bool,
}

impl FanOut {
    fn attach(&mut self, feed: Feed) {
        if let Some(caps) = &self.caps {
            feed.appsrc.set_caps(Some(caps));
            if feed.headers_as_data {
                for header in &self.headers {
                    let _ = feed.appsrc.push_buffer(header.clone());
                }
            }
        }
        if self.ended {
            let _ = feed.appsrc.end_of_stream();
        }
        self.feeds.retain(|f| f.target != feed.target);
        self.feeds.push(feed);
    }

    fn on_sample(&mut self, sample: &gst::Sample) {
        let Some(buffer) = sample.buffer_owned() else {
            return;
        };
        if let Some(caps) = sample.caps() {
            if self.caps.as_ref().is_none_or(|c| c.as_ref() != caps) {
                let caps = caps.to_owned();
                self.headers = stream_headers(&caps);
                for feed in &self.feeds {
                    feed.appsrc.set_caps(Some(&caps));
                }
                self.caps = Some(caps);
            }
        }
        let is_header = buffer.flags().contains(gst::BufferFlags::HEADER);
        let is_delta = buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        for feed in &self.feeds {
            if feed.awaiting_keyframe.load(Ordering::Relaxed) {
                if is_delta {
                    continue;
                }
                if !is_header {
                    feed.awaiting_keyframe.store(false, Ordering::Relaxed);
                }
            }
            feed.bytes
                .fetch_add(buffer.size() as u64, Ordering::Relaxed);
            // Never blocks: a full appsrc drops its oldest data (leaky-type=downstream), so a stalled
            // target costs the others nothing.
            let _ = feed.appsrc.push_buffer(buffer.clone());
        }
    }

    fn on_eos(&mut self) {
        self.ended = true;
        for feed in &self.feeds {
            let _ = feed.appsrc.end_of_stream();
        }
    }
}

fn stream_headers(caps: &gst::CapsRef) -> Vec<gst::Buffer> {
    let Some(structure) = caps.structure(0) else {
        return Vec::new();
    };
    let Ok(array) = structure.get::<gst::Array>("streamheader") else {
        return Vec::new();
    };
    array
        .iter()
        .filter_map(|v| v.get::<gst::Buffer>().ok())
        .collect()
}

/// Everything one call's pipeline is built from.
pub struct Setup<'a> {
    pub leg: LegId,
    pub templates: &'a Templates,
    pub values: &'a Values,
    pub rtp_bind: IpAddr,
    pub rtp_port: u16,
    pub plan: &'a AudioPlan,
    pub settings: OutputSettings,
    /// The targets the call starts with (its rtmpUrl/rtmpStream, and its recording if asked for).
    pub targets: Vec<TargetKind>,
}

/// A call's running media.
pub struct CallPipeline {
    leg: LegId,
    rtp_port: u16,
    pipeline: gst::Pipeline,
    jitter: Option<gst::Element>,
    rtp_packets: Arc<AtomicU64>,
    rtp_bytes: Arc<AtomicU64>,
    fanout: Arc<Mutex<FanOut>>,
    outputs: Vec<Output>,
    next_target: TargetId,
    templates: Templates,
    settings: OutputSettings,
    events: UnboundedSender<MediaEvent>,
    started_at: Instant,
    /// Signalled by the bus handler on EOS or error, for a clean stop.
    drained: std::sync::mpsc::Receiver<()>,
}

fn lock(fanout: &Mutex<FanOut>) -> std::sync::MutexGuard<'_, FanOut> {
    // Plain data; a panic elsewhere must not take the call's media down with it.
    fanout.lock().unwrap_or_else(|p| p.into_inner())
}

impl CallPipeline {
    /// Builds and starts the call pipeline and its targets. RTP is received on `rtp_bind:rtp_port`.
    pub fn start(
        setup: Setup<'_>,
        events: UnboundedSender<MediaEvent>,
    ) -> Result<Self, MediaError> {
        let Setup {
            leg,
            templates,
            values,
            rtp_bind,
            rtp_port,
            plan,
            settings,
            targets,
        } = setup;
        let pipeline = templates.audio_g711.instantiate(values)?;
        let contract = "the template contract was checked when the pipeline was instantiated";
        let rtp_in = pipeline.by_name(RTP_IN).expect(contract);
        let mux = pipeline.by_name(MUX).expect(contract);

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

        let (rtp_packets, rtp_bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        if let Some(pad) = rtp_in.static_pad("src") {
            let (packets, bytes) = (rtp_packets.clone(), rtp_bytes.clone());
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(buffer) = info.buffer() {
                    packets.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(buffer.size() as u64, Ordering::Relaxed);
                }
                gst::PadProbeReturn::Ok
            });
        }

        let fanout = Arc::new(Mutex::new(FanOut::default()));
        let appsink = gst_app::AppSink::builder()
            .name("flv_out")
            .sync(false)
            .build();
        let (on_sample, on_eos) = (fanout.clone(), fanout.clone());
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    if let Ok(sample) = sink.pull_sample() {
                        lock(&on_sample).on_sample(&sample);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .eos(move |_| lock(&on_eos).on_eos())
                .build(),
        );
        pipeline
            .add(&appsink)
            .map_err(|e| MediaError::Start(e.to_string()))?;
        mux.link(&appsink)
            .map_err(|e| MediaError::Start(format!("cannot link {MUX} to the fan-out: {e}")))?;

        let (drained_tx, drained) = std::sync::mpsc::channel();
        let bus = pipeline.bus().expect("a pipeline always has a bus");
        let handler_events = events.clone();
        let scrub_keys: Vec<TargetKind> = targets.clone();
        let errored = AtomicBool::new(false);
        bus.set_sync_handler(move |_, message| {
            use gst::MessageView;
            match message.view() {
                MessageView::Eos(_) => {
                    let _ = drained_tx.send(());
                }
                MessageView::Error(err) => {
                    let _ = drained_tx.send(());
                    if !errored.swap(true, Ordering::SeqCst) {
                        let mut text = err.error().to_string();
                        for kind in &scrub_keys {
                            if let TargetKind::Rtmp { stream, .. } = kind {
                                text = stream.scrub(&text);
                            }
                        }
                        let _ = handler_events.send(MediaEvent {
                            leg,
                            kind: MediaEventKind::Failed(text),
                        });
                    }
                }
                _ => {}
            }
            gst::BusSyncReply::Drop
        });

        let mut call = Self {
            leg,
            rtp_port,
            jitter: pipeline.by_name(JITTER),
            pipeline,
            rtp_packets,
            rtp_bytes,
            fanout,
            outputs: Vec::new(),
            next_target: 1,
            templates: templates.clone(),
            settings,
            events,
            started_at: Instant::now(),
            drained,
        };
        for kind in targets {
            call.add_target(kind)?;
        }
        if let Err(e) = call.pipeline.set_state(gst::State::Playing) {
            let _ = call.pipeline.set_state(gst::State::Null);
            for output in &mut call.outputs {
                if let Some(p) = output.close() {
                    let _ = p.set_state(gst::State::Null);
                }
            }
            return Err(MediaError::Start(format!(
                "{e} (RTP port {rtp_port} in use?)"
            )));
        }
        Ok(call)
    }

    pub fn rtp_port(&self) -> u16 {
        self.rtp_port
    }

    /// Adds a target and starts it at once; returns its id.
    pub fn add_target(&mut self, kind: TargetKind) -> Result<TargetId, MediaError> {
        let id = self.next_target;
        self.next_target += 1;
        let mut output = Output::new(id, kind, &self.settings);
        let templates = (&self.templates.rtmp_output, &self.templates.file_output);
        if let Some(feed) = output.start_if_due(
            self.leg,
            Instant::now(),
            templates,
            &self.settings,
            &self.events,
        ) {
            lock(&self.fanout).attach(feed?);
        }
        self.outputs.push(output);
        Ok(id)
    }

    /// True when a target that is not closed already goes to this destination.
    pub fn has_target(&self, kind: &TargetKind) -> bool {
        self.outputs
            .iter()
            .any(|o| !o.is_closed() && o.kind == *kind)
    }

    /// Removes a target: its stream is ended cleanly (EOS) without touching the others.
    pub fn remove_target(&mut self, id: TargetId) -> Result<(), MediaError> {
        let output = self
            .outputs
            .iter_mut()
            .find(|o| o.id == id && !o.is_closed())
            .ok_or(MediaError::NoTarget(id))?;
        lock(&self.fanout).feeds.retain(|f| f.target != id);
        if let Some(pipeline) = output.close() {
            end_in_background(pipeline, Some(Duration::from_secs(2)));
        }
        Ok(())
    }

    /// Applies a target's failure; returns the status change to record.
    pub fn on_output_failed(
        &mut self,
        target: TargetId,
        generation: u64,
        reason: String,
    ) -> Option<TargetChange> {
        let now = Instant::now();
        let output = self.outputs.iter_mut().find(|o| o.id == target)?;
        let pipeline = output.fail(generation, reason, now)?;
        lock(&self.fanout).feeds.retain(|f| f.target != target);
        if let Some(pipeline) = pipeline {
            end_in_background(pipeline, None);
        }
        Some(TargetChange {
            target,
            status: output.status,
            reason: output.reason.clone(),
        })
    }

    /// Periodic work: targets that went live, targets due for a rebuild. Returns status changes and the
    /// targets whose liveness probe is due (as `host:port`).
    pub fn poll(&mut self, now: Instant) -> (Vec<TargetChange>, Vec<ProbeRequest>) {
        let mut changes = Vec::new();
        let mut probes = Vec::new();
        let templates = (&self.templates.rtmp_output, &self.templates.file_output);
        for output in &mut self.outputs {
            if let Some(result) =
                output.start_if_due(self.leg, now, templates, &self.settings, &self.events)
            {
                match result {
                    Ok(feed) => lock(&self.fanout).attach(feed),
                    Err(e) => {
                        let generation = output.generation;
                        let _ = self.events.send(MediaEvent {
                            leg: self.leg,
                            kind: MediaEventKind::OutputFailed {
                                target: output.id,
                                generation,
                                reason: e.to_string(),
                            },
                        });
                    }
                }
            }
            if let Some(status) = output.poll_active(now) {
                changes.push(TargetChange {
                    target: output.id,
                    status,
                    reason: None,
                });
            }
            if output.probe_due(now, &self.settings) {
                if let Some(address) = output.probe_address() {
                    probes.push((output.id, output.generation, address));
                } else {
                    output.probe_in_flight = false;
                }
            }
        }
        (changes, probes)
    }

    /// The earliest instant a target must be rebuilt at, so reconnects happen on time, not on the next tick.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.outputs.iter().filter_map(Output::rebuild_at).min()
    }

    /// A liveness probe came back; a failed one counts as the target's failure.
    pub fn on_probe_result(
        &mut self,
        target: TargetId,
        generation: u64,
        failure: Option<String>,
    ) -> Option<TargetChange> {
        let output = self.outputs.iter_mut().find(|o| o.id == target)?;
        output.probe_in_flight = false;
        let reason = failure?;
        self.on_output_failed(target, generation, reason)
    }

    pub fn figures(&self) -> MediaFigures {
        let (lost, jitter_ns) = self
            .jitter
            .as_ref()
            .and_then(|j| j.property::<Option<gst::Structure>>("stats"))
            .map(|s| {
                (
                    s.get::<u64>("num-lost").unwrap_or(0),
                    s.get::<u64>("avg-jitter").unwrap_or(0),
                )
            })
            .unwrap_or((0, 0));
        let first_active = self
            .outputs
            .iter()
            .filter(|o| o.is_rtmp())
            .filter_map(|o| o.first_active_at)
            .min();
        MediaFigures {
            rtp_packets_in: self.rtp_packets.load(Ordering::Relaxed),
            rtp_bytes_in: self.rtp_bytes.load(Ordering::Relaxed),
            rtp_lost: lost,
            jitter_us: jitter_ns / 1000,
            answer_to_first_rtmp_ms: first_active
                .map(|t| t.saturating_duration_since(self.started_at).as_millis() as u64),
            targets: self
                .outputs
                .iter()
                .filter(|o| !o.is_closed())
                .map(|o| TargetFigures {
                    target: o.id,
                    description: o.kind.describe(),
                    is_rtmp: o.is_rtmp(),
                    status: o.status,
                    reason: o.reason.clone(),
                    bytes_out: o.bytes_out(),
                    reconnects: o.reconnects,
                    last_reconnect_unix_ms: o
                        .last_reconnect
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as u64),
                })
                .collect(),
        }
    }

    /// Ends the call's media cleanly: EOS through the call pipeline, so every target's stream and file is
    /// finished, then everything down. Blocking work runs off the driver; `Stopped` is reported when the
    /// port is free.
    pub fn stop(self, eos_timeout: Duration) {
        self.shut_down(Some(eos_timeout));
    }

    /// Takes the media down at once (the call pipeline has failed).
    pub fn abort(self) {
        self.shut_down(None);
    }

    fn shut_down(mut self, eos_timeout: Option<Duration>) {
        let outputs: Vec<gst::Pipeline> =
            self.outputs.iter_mut().filter_map(Output::close).collect();
        let Self {
            leg,
            rtp_port,
            pipeline,
            events,
            drained,
            ..
        } = self;
        let spawned = std::thread::Builder::new()
            .name(format!("stop-call-{leg}"))
            .spawn(move || {
                if let Some(timeout) = eos_timeout {
                    let deadline = Instant::now() + timeout;
                    if pipeline.send_event(gst::event::Eos::new()) {
                        let _ = drained.recv_timeout(timeout);
                    }
                    // The fan-out forwarded EOS to every target; let them flush what they hold.
                    for output in &outputs {
                        wait_for_eos(output, deadline.saturating_duration_since(Instant::now()));
                    }
                }
                let _ = pipeline.set_state(gst::State::Null);
                for output in outputs {
                    let _ = output.set_state(gst::State::Null);
                }
                let _ = events.send(MediaEvent {
                    leg,
                    kind: MediaEventKind::Stopped { rtp_port },
                });
            });
        if let Err(e) = spawned {
            tracing::error!(leg, "cannot spawn a thread to stop the pipeline: {e}");
        }
    }
}

/// Waits (bounded) until every sink of `pipeline` has received EOS.
fn wait_for_eos(pipeline: &gst::Pipeline, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if pipeline
            .iterate_sinks()
            .into_iter()
            .flatten()
            .all(|sink| sink_saw_eos(&sink))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sink_saw_eos(sink: &gst::Element) -> bool {
    sink.static_pad("sink")
        .is_some_and(|pad| pad.sticky_event::<gst::event::Eos>(0).is_some())
}

/// Ends a target pipeline off the driver: EOS and a bounded wait when `eos` is given, then NULL.
fn end_in_background(pipeline: gst::Pipeline, eos: Option<Duration>) {
    let spawned = std::thread::Builder::new()
        .name("stop-target".into())
        .spawn(move || {
            if let Some(timeout) = eos {
                if let Some(appsrc) = pipeline
                    .by_name(super::template::FLV_IN)
                    .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
                {
                    let _ = appsrc.end_of_stream();
                }
                wait_for_eos(&pipeline, timeout);
            }
            let _ = pipeline.set_state(gst::State::Null);
        });
    if let Err(e) = spawned {
        tracing::error!("cannot spawn a thread to stop a target: {e}");
    }
}
