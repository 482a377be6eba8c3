//! One call's media: the call pipeline built from its template (RTP in, FLV out of `mux`), an appsink that
//! fans the FLV out to each target's own output pipeline, the targets' lifecycles, and the call's figures.
//! Failures are reported as events for that call only.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use tokio::sync::mpsc::UnboundedSender;

use super::output::{Feed, Output, OutputSettings, TargetId, TargetKind};
use super::template::{Template, TemplateError, Templates, Values, AUDIO_IN, MUX, VIDEO_IN};
use crate::call::RtmpStatus;
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
    /// No audio RTP arrived for the configured time.
    RtpTimeout,
    /// The call's pipelines are down and its port can be reused.
    Stopped { rtp_ports: Vec<u16> },
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
    /// Video RTP, when the call has video.
    pub video_packets_in: Option<u64>,
    pub video_bytes_in: Option<u64>,
    pub rtp_lost: u64,
    pub jitter_us: u64,
    /// From the answer (pipeline start) to the first target going live.
    pub answer_to_first_rtmp_ms: Option<u64>,
    pub targets: Vec<TargetFigures>,
}

/// FLV goes to the targets in bursts of about this much time: each target's appsrc thread and RTMP
/// connection then wake once per burst instead of once per audio frame (thread wake-ups, not codecs, are
/// most of a call's CPU: bench/RESULTS.md). The first second of a call is not held back (time to first byte).
const FANOUT_BURST: Duration = Duration::from_millis(100);
const FANOUT_UNBATCHED: Duration = Duration::from_secs(1);

/// The fan-out's view of the targets, shared with the call pipeline's streaming thread.
#[derive(Default)]
struct FanOut {
    caps: Option<gst::Caps>,
    /// The FLV header and codec tags (flvmux's `streamheader`), for targets that join later.
    headers: Vec<gst::Buffer>,
    feeds: Vec<Feed>,
    ended: bool,
    /// FLV not yet handed to the targets, and when the oldest of it came.
    pending: Vec<gst::Buffer>,
    pending_since: Option<Instant>,
    first_sample_at: Option<Instant>,
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

    fn on_sample(&mut self, sample: &gst::Sample, now: Instant) {
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
        let first = *self.first_sample_at.get_or_insert(now);
        let since = *self.pending_since.get_or_insert(now);
        let is_header = buffer.flags().contains(gst::BufferFlags::HEADER);
        self.pending.push(buffer);
        if is_header
            || now.saturating_duration_since(first) < FANOUT_UNBATCHED
            || now.saturating_duration_since(since) >= FANOUT_BURST
        {
            self.flush();
        }
    }

    /// Hands on FLV held for a burst or longer: nothing more came (the peer went quiet under a template
    /// that fills no silence, e.g. passthrough on hold), so no new sample would flush it. The driver's poll.
    fn flush_stale(&mut self, now: Instant) {
        if self
            .pending_since
            .is_some_and(|since| now.saturating_duration_since(since) >= FANOUT_BURST)
        {
            self.flush();
        }
    }

    /// Hands the pending FLV to every target as one buffer list.
    fn flush(&mut self) {
        self.pending_since = None;
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        for feed in &self.feeds {
            let mut list = gst::BufferList::new_sized(pending.len());
            let list_mut = list.get_mut().expect("a new list is writable");
            for buffer in &pending {
                let is_header = buffer.flags().contains(gst::BufferFlags::HEADER);
                let is_delta = buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
                if feed.awaiting_keyframe.load(Ordering::Relaxed) {
                    if is_delta {
                        continue;
                    }
                    if !is_header {
                        feed.awaiting_keyframe.store(false, Ordering::Relaxed);
                    }
                }
                let out = if feed.muted.load(Ordering::Relaxed) {
                    silenced(buffer)
                } else {
                    None
                };
                let out = out.unwrap_or_else(|| buffer.clone());
                feed.bytes.fetch_add(out.size() as u64, Ordering::Relaxed);
                list_mut.add(out);
            }
            // Never blocks: a full appsrc drops its oldest data (leaky-type=downstream), so a stalled
            // target costs the others nothing.
            if !list.is_empty() {
                let _ = feed.appsrc.push_buffer_list(list);
            }
        }
    }

    fn on_eos(&mut self) {
        self.flush();
        self.ended = true;
        for feed in &self.feeds {
            let _ = feed.appsrc.end_of_stream();
        }
    }
}

/// One raw AAC-LC frame of silence for one channel (a single zeroed SCE and END), decodable with the
/// stream's AudioSpecificConfig for mono at any sampling rate.
const SILENT_AAC_MONO: [u8; 6] = [0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c];

/// A copy of an FLV audio tag (E.4.1 of the FLV spec: 11-byte header, data, 4-byte PreviousTagSize) whose
/// sound is replaced by silence: a silent frame for AAC raw data, silence bytes for G.711. `None` for
/// anything else (video, script data, the AAC sequence header, other codecs), which passes unchanged.
fn silenced(buffer: &gst::Buffer) -> Option<gst::Buffer> {
    let map = buffer.map_readable().ok()?;
    let tag = map.as_slice();
    if tag.len() < 11 + 2 + 4 || tag[0] & 0x1f != 8 {
        return None;
    }
    let data = &tag[11..tag.len() - 4];
    let sound_format = data[0] >> 4;
    let payload: Vec<u8> = match sound_format {
        // The call templates encode mono AAC (the FLV stereo flag is not reliable for AAC, E.4.2.1).
        10 if data[1] == 1 => {
            let mut p = vec![data[0], 1];
            p.extend_from_slice(&SILENT_AAC_MONO);
            p
        }
        // G.711 A-law (7) and mu-law (8): the silence byte, as many samples as before.
        7 => std::iter::once(data[0])
            .chain(std::iter::repeat_n(0xd5, data.len() - 1))
            .collect(),
        8 => std::iter::once(data[0])
            .chain(std::iter::repeat_n(0xff, data.len() - 1))
            .collect(),
        _ => return None,
    };
    let size = payload.len();
    let mut out = Vec::with_capacity(11 + size + 4);
    out.push(tag[0]);
    out.extend_from_slice(&(size as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&tag[4..11]);
    out.extend_from_slice(&payload);
    out.extend_from_slice(&((11 + size) as u32).to_be_bytes());
    let mut silent = gst::Buffer::from_mut_slice(out);
    {
        let silent = silent.get_mut().expect("a new buffer is writable");
        let _ = buffer.copy_into(
            silent,
            gst::BufferCopyFlags::FLAGS | gst::BufferCopyFlags::TIMESTAMPS,
            ..,
        );
    }
    Some(silent)
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

/// One received stream of a call: where it arrives and where its peer is.
pub struct StreamSetup {
    /// rtpbin session: 0 audio, 1 video.
    pub session: u32,
    pub rtp_port: u16,
    /// RTP caps (payload type, clock rate, encoding name; rtcp-fb fields for video).
    pub caps: gst::Caps,
    pub payload_type: u8,
    pub remote_rtp: SocketAddr,
    pub remote_rtcp: SocketAddr,
}

/// Generated audio toward the peer (the keep-alive element): silence, and RFC 4733 DTMF.
pub struct KeepAlive {
    pub encoding_name: &'static str,
    pub payload_type: u8,
    pub dtmf_payload_type: Option<u8>,
    /// Packets sent together (the element's `packets-per-push`).
    pub packets_per_send: u32,
}

/// Everything one call's pipeline is built from.
pub struct Setup<'a> {
    pub leg: LegId,
    /// The call template for the negotiated media.
    pub template: &'a Template,
    pub templates: &'a Templates,
    pub values: &'a Values,
    pub rtp_bind: IpAddr,
    pub jitter_latency_ms: u32,
    /// Report `RtpTimeout` when no audio RTP arrives for this long.
    pub rtp_timeout: Option<Duration>,
    pub audio: StreamSetup,
    pub video: Option<StreamSetup>,
    pub keepalive: Option<KeepAlive>,
    pub settings: OutputSettings,
    /// The targets the call starts with (its rtmpUrl/rtmpStream, and its recording if asked for).
    pub targets: Vec<TargetKind>,
}

/// Packets and bytes received on one stream, counted before the jitter buffer.
#[derive(Default)]
struct Counters {
    packets: AtomicU64,
    bytes: AtomicU64,
}

/// A call's running media.
pub struct CallPipeline {
    leg: LegId,
    rtp_ports: Vec<u16>,
    pipeline: gst::Pipeline,
    jitterbuffers: Arc<Mutex<Vec<gst::Element>>>,
    audio_counters: Arc<Counters>,
    video_counters: Option<Arc<Counters>>,
    /// The video chain's first element, where keyframe requests go upstream from.
    video_in: Option<gst::Element>,
    video_keyframe_seen: Arc<AtomicBool>,
    last_keyframe_request: Option<Instant>,
    /// When the SIP INFO fallback last asked for a keyframe.
    last_keyframe_info: Option<Instant>,
    keepalive: Option<gst::Element>,
    fanout: Arc<Mutex<FanOut>>,
    outputs: Vec<Output>,
    next_target: TargetId,
    templates: Templates,
    settings: OutputSettings,
    events: UnboundedSender<MediaEvent>,
    started_at: Instant,
    /// When the driver must poll again to catch a target's first media byte (see `next_deadline`).
    first_byte_poll_at: Option<Instant>,
    /// Signalled by the bus handler on EOS or error, for a clean stop.
    drained: std::sync::mpsc::Receiver<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data; a panic elsewhere must not take the call's media down with it.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn make(factory: &str) -> Result<gst::Element, MediaError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|e| MediaError::Start(format!("{factory}: {e}")))
}

fn link_err(what: &str) -> impl FnOnce(gst::glib::BoolError) -> MediaError + '_ {
    move |e| MediaError::Start(format!("cannot link {what}: {e}"))
}

fn request_pad(element: &gst::Element, name: &str) -> Result<gst::Pad, MediaError> {
    element
        .request_pad_simple(name)
        .ok_or_else(|| MediaError::Start(format!("no request pad {name}")))
}

/// While a new call's RTMP target has not sent its first media byte, the driver polls the call this often
/// (instead of on its 250 ms tick), so `answerToFirstRtmpByteMs` and RTMP_STREAM_ACTIVE are not rounded up
/// to the tick; for at most FIRST_BYTE_WATCH after the call's media started.
const FIRST_BYTE_POLL: Duration = Duration::from_millis(20);
const FIRST_BYTE_WATCH: Duration = Duration::from_secs(5);

/// How often a keyframe is asked for while video waits for one.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

impl CallPipeline {
    /// Builds and starts the call's media: per stream a udpsrc for RTP and one for RTCP into rtpbin
    /// (jitter buffer, sender/receiver reports, keyframe requests), rtpbin's output into the template's
    /// `audio_in`/`video_in`, RTCP and generated media back to the peer from the same ports (symmetric
    /// RTP), and the template's `mux` fanned out to the targets.
    pub fn start(
        setup: Setup<'_>,
        events: UnboundedSender<MediaEvent>,
    ) -> Result<Self, MediaError> {
        let Setup {
            leg,
            template,
            templates,
            values,
            rtp_bind,
            jitter_latency_ms,
            rtp_timeout,
            audio,
            video,
            keepalive,
            settings,
            targets,
        } = setup;
        let pipeline = template.instantiate(values)?;
        let contract = "the template contract was checked when the pipeline was instantiated";
        let mux = pipeline.by_name(MUX).expect(contract);

        let rtpbin = gst::ElementFactory::make("rtpbin")
            .property("latency", jitter_latency_ms)
            .build()
            .map_err(|e| MediaError::Start(format!("rtpbin: {e}")))?;
        pipeline
            .add(&rtpbin)
            .map_err(|e| MediaError::Start(e.to_string()))?;
        let jitterbuffers = Arc::new(Mutex::new(Vec::new()));
        let jb = jitterbuffers.clone();
        rtpbin.connect("new-jitterbuffer", false, move |args| {
            if let Some(element) = args.get(1).and_then(|v| v.get::<gst::Element>().ok()) {
                lock(&jb).push(element);
            }
            None
        });

        // (udpsrc for RTP, udpsink that must send from its socket)
        let mut socket_shares: Vec<(gst::Element, gst::Element)> = Vec::new();
        let mut chain_inputs: Vec<(u32, gst::Element)> = Vec::new();
        let mut counters: Vec<Arc<Counters>> = Vec::new();
        let mut keepalive_source = None;
        for (stream, chain) in [(Some(&audio), AUDIO_IN), (video.as_ref(), VIDEO_IN)] {
            let Some(stream) = stream else { continue };
            let session = stream.session;
            let rtp_src = gst::ElementFactory::make("udpsrc")
                .property("address", rtp_bind.to_string())
                .property("port", i32::from(stream.rtp_port))
                // With SO_REUSEADDR two calls could share a port; we want the bind to fail instead.
                .property("reuse", false)
                .property("caps", &stream.caps)
                .build()
                .map_err(|e| MediaError::Start(e.to_string()))?;
            let rtcp_src = gst::ElementFactory::make("udpsrc")
                .property("address", rtp_bind.to_string())
                .property("port", i32::from(stream.rtp_port + 1))
                .property("reuse", false)
                .property("caps", gst::Caps::new_empty_simple("application/x-rtcp"))
                .build()
                .map_err(|e| MediaError::Start(e.to_string()))?;
            let rtcp_out = gst::ElementFactory::make("udpsink")
                .property("host", stream.remote_rtcp.ip().to_string())
                .property("port", i32::from(stream.remote_rtcp.port()))
                .property("sync", false)
                .property("async", false)
                .property("close-socket", false)
                .build()
                .map_err(|e| MediaError::Start(e.to_string()))?;
            let funnel = make("funnel")?;
            if let Some(timeout) = rtp_timeout.filter(|_| session == 0) {
                // udpsrc posts a GstUDPSrcTimeout element message when nothing arrived for this long.
                rtp_src.set_property("timeout", timeout.as_nanos() as u64);
            }
            pipeline
                .add_many([&rtp_src, &rtcp_src, &rtcp_out, &funnel])
                .map_err(|e| MediaError::Start(e.to_string()))?;

            // Count what arrives, and keep only the negotiated payload type: telephone-event and
            // comfort noise would otherwise reach the depayloader as media.
            let count = Arc::new(Counters::default());
            counters.push(count.clone());
            let payload_type = stream.payload_type;
            rtp_src
                .static_pad("src")
                .expect("udpsrc has a src pad")
                .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                    let Some(buffer) = info.buffer() else {
                        return gst::PadProbeReturn::Ok;
                    };
                    count.packets.fetch_add(1, Ordering::Relaxed);
                    count
                        .bytes
                        .fetch_add(buffer.size() as u64, Ordering::Relaxed);
                    let mut pt = [0u8; 2];
                    let keep =
                        buffer.copy_to_slice(0, &mut pt).is_ok() && pt[1] & 0x7f == payload_type;
                    if keep {
                        gst::PadProbeReturn::Ok
                    } else {
                        gst::PadProbeReturn::Drop
                    }
                });
            rtp_src
                .static_pad("src")
                .expect("udpsrc has a src pad")
                .link(&request_pad(&rtpbin, &format!("recv_rtp_sink_{session}"))?)
                .map_err(|e| MediaError::Start(format!("rtp into rtpbin: {e}")))?;
            rtcp_src
                .static_pad("src")
                .expect("udpsrc has a src pad")
                .link(&request_pad(&rtpbin, &format!("recv_rtcp_sink_{session}"))?)
                .map_err(|e| MediaError::Start(format!("rtcp into rtpbin: {e}")))?;
            request_pad(&rtpbin, &format!("send_rtcp_src_{session}"))?
                .link(&rtcp_out.static_pad("sink").expect("udpsink has a sink pad"))
                .map_err(|e| MediaError::Start(format!("rtcp out of rtpbin: {e}")))?;
            let chain_in = pipeline.by_name(chain).expect(contract);
            funnel.link(&chain_in).map_err(link_err(chain))?;
            socket_shares.push((rtcp_src.clone(), rtcp_out.clone()));
            chain_inputs.push((session, funnel));
            if let Some(keepalive) = keepalive.as_ref().filter(|_| session == 0) {
                let source = gst::ElementFactory::make("rtpkeepalivesrc")
                    .property_from_str("encoding-name", keepalive.encoding_name)
                    .property("payload-type", u32::from(keepalive.payload_type))
                    .property("packets-per-push", keepalive.packets_per_send.clamp(1, 10))
                    .build()
                    .map_err(|e| MediaError::Start(format!("rtpkeepalivesrc: {e}")))?;
                if let Some(pt) = keepalive
                    .dtmf_payload_type
                    .filter(|pt| (96..=127).contains(pt))
                {
                    source.set_property("dtmf-payload-type", u32::from(pt));
                }
                let rtp_out = gst::ElementFactory::make("udpsink")
                    .property("host", stream.remote_rtp.ip().to_string())
                    .property("port", i32::from(stream.remote_rtp.port()))
                    .property("sync", false)
                    .property("async", false)
                    .property("close-socket", false)
                    .build()
                    .map_err(|e| MediaError::Start(e.to_string()))?;
                pipeline
                    .add_many([&source, &rtp_out])
                    .map_err(|e| MediaError::Start(e.to_string()))?;
                source
                    .static_pad("src")
                    .expect("a source has a src pad")
                    .link(&request_pad(&rtpbin, "send_rtp_sink_0")?)
                    .map_err(|e| MediaError::Start(format!("keep-alive into rtpbin: {e}")))?;
                rtpbin
                    .static_pad("send_rtp_src_0")
                    .ok_or_else(|| MediaError::Start("rtpbin made no send_rtp_src_0".into()))?
                    .link(&rtp_out.static_pad("sink").expect("udpsink has a sink pad"))
                    .map_err(|e| MediaError::Start(format!("keep-alive out of rtpbin: {e}")))?;
                socket_shares.push((rtp_src.clone(), rtp_out));
                keepalive_source = Some(source);
            }
        }
        // rtpbin adds a src pad per received SSRC; every one goes into that stream's funnel, so a peer that
        // changes SSRC mid-call keeps its media flowing.
        let chain_inputs_for_pads = chain_inputs.clone();
        rtpbin.connect_pad_added(move |_, pad| {
            let name = pad.name();
            let Some(rest) = name.strip_prefix("recv_rtp_src_") else {
                return;
            };
            let session: Option<u32> = rest.split('_').next().and_then(|s| s.parse().ok());
            if let Some((_, funnel)) = chain_inputs_for_pads
                .iter()
                .find(|(s, _)| Some(*s) == session)
            {
                if let Some(sink) = funnel.request_pad_simple("sink_%u") {
                    let _ = pad.link(&sink);
                }
            }
        });

        // Video: nothing reaches the muxer before the first keyframe, so the stream never starts grey.
        let video_keyframe_seen = Arc::new(AtomicBool::new(video.is_none()));
        if video.is_some() {
            if let Some(pad) = mux
                .sink_pads()
                .into_iter()
                .find(|p| p.name().starts_with("video"))
            {
                let seen = video_keyframe_seen.clone();
                pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                    if seen.load(Ordering::Relaxed) {
                        return gst::PadProbeReturn::Ok;
                    }
                    match info.buffer() {
                        Some(b) if !b.flags().contains(gst::BufferFlags::DELTA_UNIT) => {
                            seen.store(true, Ordering::Relaxed);
                            gst::PadProbeReturn::Ok
                        }
                        _ => gst::PadProbeReturn::Drop,
                    }
                });
            }
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
                        lock(&on_sample).on_sample(&sample, Instant::now());
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .eos(move |_| lock(&on_eos).on_eos())
                .build(),
        );
        pipeline
            .add(&appsink)
            .map_err(|e| MediaError::Start(e.to_string()))?;
        mux.link(&appsink).map_err(link_err("mux to the fan-out"))?;

        let (drained_tx, drained) = std::sync::mpsc::channel();
        let bus = pipeline.bus().expect("a pipeline always has a bus");
        let handler_events = events.clone();
        let scrub_keys: Vec<TargetKind> = targets.clone();
        let errored = AtomicBool::new(false);

        bus.set_sync_handler(move |_, message| {
            use gst::MessageView;
            match message.view() {
                MessageView::Element(element)
                    if element
                        .structure()
                        .is_some_and(|s| s.name() == "GstUDPSrcTimeout") =>
                {
                    let _ = handler_events.send(MediaEvent {
                        leg,
                        kind: MediaEventKind::RtpTimeout,
                    });
                }
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

        let mut rtp_ports = vec![audio.rtp_port];
        rtp_ports.extend(video.as_ref().map(|v| v.rtp_port));
        let mut counters = counters.into_iter();
        let mut call = Self {
            leg,
            rtp_ports,
            jitterbuffers,
            audio_counters: counters.next().expect("audio is always set up"),
            video_counters: counters.next(),
            video_in: video.as_ref().and_then(|_| pipeline.by_name(VIDEO_IN)),
            video_keyframe_seen,
            last_keyframe_request: None,
            last_keyframe_info: None,
            keepalive: keepalive_source,
            pipeline,
            fanout,
            outputs: Vec::new(),
            next_target: 1,
            templates: templates.clone(),
            settings,
            events,
            started_at: Instant::now(),
            first_byte_poll_at: Some(Instant::now() + FIRST_BYTE_POLL),
            drained,
        };
        // Sockets exist from READY on: RTCP and generated media leave from the ports media arrives on.
        let fail = |call: &Self, e: String| {
            let _ = call.pipeline.set_state(gst::State::Null);
            MediaError::Start(e)
        };
        if let Err(e) = call.pipeline.set_state(gst::State::Ready) {
            return Err(fail(
                &call,
                format!("{e} (RTP ports {:?} in use?)", call.rtp_ports),
            ));
        }
        for (source, sink) in &socket_shares {
            let socket = source.property_value("used-socket");
            sink.set_property_from_value("socket", &socket);
        }
        for kind in targets {
            call.add_target(kind)?;
        }
        if let Err(e) = call.pipeline.set_state(gst::State::Playing) {
            for output in &mut call.outputs {
                if let Some(p) = output.close() {
                    let _ = p.set_state(gst::State::Null);
                }
            }
            return Err(fail(
                &call,
                format!("{e} (RTP ports {:?} in use?)", call.rtp_ports),
            ));
        }
        Ok(call)
    }

    /// The call's RTP ports (each with its RTCP port after it).
    pub fn rtp_ports(&self) -> &[u16] {
        &self.rtp_ports
    }

    /// Asks the peer for a video keyframe: an upstream force-key-unit event that rtpbin turns into RTCP
    /// PLI or FIR (RFC 4585, RFC 5104). No-op for audio-only calls.
    pub fn request_keyframe(&mut self) {
        let Some(video_in) = &self.video_in else {
            return;
        };
        self.last_keyframe_request = Some(Instant::now());
        let event = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        if let Some(pad) = video_in.static_pad("sink") {
            let _ = pad.push_event(event);
        }
    }

    /// True when video has waited `after` for its first keyframe despite RTCP requests, at most once per
    /// `after`: time for the SIP INFO fallback (RFC 5168 picture_fast_update).
    pub fn keyframe_overdue(&mut self, now: Instant, after: Duration) -> bool {
        let waiting = self.video_in.is_some() && !self.video_keyframe_seen.load(Ordering::Relaxed);
        let due = now.saturating_duration_since(self.started_at) >= after
            && self
                .last_keyframe_info
                .is_none_or(|t| now.saturating_duration_since(t) >= after);
        if waiting && due {
            self.last_keyframe_info = Some(now);
        }
        waiting && due
    }

    /// Queues RFC 4733 DTMF digits on the generated audio toward the peer. False when there is no
    /// generated audio or a digit is invalid.
    pub fn send_dtmf(&self, digits: &str, duration_ms: u32) -> bool {
        match &self.keepalive {
            Some(source) => source.emit_by_name::<bool>("send-dtmf", &[&digits, &duration_ms]),
            None => false,
        }
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

    /// The targets that are not closed: id, destination, status.
    pub fn targets(&self) -> Vec<(TargetId, &TargetKind, RtmpStatus, bool)> {
        self.outputs
            .iter()
            .filter(|o| !o.is_closed())
            .map(|o| (o.id, &o.kind, o.status, o.is_muted()))
            .collect()
    }

    /// Mutes or unmutes a target (silence instead of the call's audio).
    pub fn set_muted(&mut self, id: TargetId, muted: bool) -> Result<(), MediaError> {
        let output = self
            .outputs
            .iter()
            .find(|o| o.id == id && !o.is_closed())
            .ok_or(MediaError::NoTarget(id))?;
        output.set_muted(muted);
        Ok(())
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
        let mut restarted = false;
        lock(&self.fanout).flush_stale(now);
        let templates = (&self.templates.rtmp_output, &self.templates.file_output);
        for output in &mut self.outputs {
            if let Some(result) =
                output.start_if_due(self.leg, now, templates, &self.settings, &self.events)
            {
                match result {
                    Ok(feed) => {
                        lock(&self.fanout).attach(feed);
                        restarted = true;
                    }
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
        // A target that (re)starts waits for a keyframe; so does a call whose video has not shown one yet.
        let waiting = !self.video_keyframe_seen.load(Ordering::Relaxed);
        let overdue = self
            .last_keyframe_request
            .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_REQUEST_INTERVAL);
        if restarted || (waiting && overdue) {
            self.request_keyframe();
        }
        let watching = now.saturating_duration_since(self.started_at) < FIRST_BYTE_WATCH;
        self.first_byte_poll_at = (watching
            && self
                .outputs
                .iter()
                .any(|o| o.is_rtmp() && !o.is_closed() && o.first_byte_at.is_none()))
        .then(|| now + FIRST_BYTE_POLL);
        (changes, probes)
    }

    /// The earliest instant the driver must poll this call at: a target to rebuild (reconnects happen on time,
    /// not on the next tick), or a new target's first media byte to catch.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.outputs
            .iter()
            .filter_map(Output::rebuild_at)
            .chain(self.first_byte_poll_at)
            .min()
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
        let (mut lost, mut jitter_ns, mut jitterbuffers) = (0, 0, 0);
        for jb in lock(&self.jitterbuffers).iter() {
            if let Some(stats) = jb.property::<Option<gst::Structure>>("stats") {
                lost += stats.get::<u64>("num-lost").unwrap_or(0);
                jitter_ns = jitter_ns.max(stats.get::<u64>("avg-jitter").unwrap_or(0));
                jitterbuffers += 1;
            }
        }
        let _ = jitterbuffers;
        let first_active = self
            .outputs
            .iter()
            .filter(|o| o.is_rtmp())
            .filter_map(|o| o.first_byte_at.or(o.first_active_at))
            .min();
        MediaFigures {
            rtp_packets_in: self.audio_counters.packets.load(Ordering::Relaxed),
            rtp_bytes_in: self.audio_counters.bytes.load(Ordering::Relaxed),
            video_packets_in: self
                .video_counters
                .as_ref()
                .map(|c| c.packets.load(Ordering::Relaxed)),
            video_bytes_in: self
                .video_counters
                .as_ref()
                .map(|c| c.bytes.load(Ordering::Relaxed)),
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
            rtp_ports,
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
                    kind: MediaEventKind::Stopped { rtp_ports },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An FLV tag as flvmux writes it: header, data, PreviousTagSize.
    fn tag(kind: u8, data: &[u8]) -> gst::Buffer {
        let mut t = vec![kind];
        t.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        t.extend_from_slice(&[0, 0, 40, 0, 0, 0, 0]);
        t.extend_from_slice(data);
        t.extend_from_slice(&((11 + data.len()) as u32).to_be_bytes());
        gst::Buffer::from_mut_slice(t)
    }

    fn bytes(b: &gst::Buffer) -> Vec<u8> {
        b.map_readable().unwrap().as_slice().to_vec()
    }

    #[test]
    fn aac_audio_tags_become_a_silent_frame_with_sizes_rewritten() {
        gst::init().unwrap();
        let loud = tag(
            8,
            &[
                0xae, 1, 0xde, 0xad, 0xbe, 0xef, 0x11, 0x22, 0x33, 0x44, 0x55,
            ],
        );
        let quiet = bytes(&silenced(&loud).expect("AAC raw data is silenced"));
        let data_size = 2 + SILENT_AAC_MONO.len();
        assert_eq!(quiet.len(), 11 + data_size + 4);
        assert_eq!(
            &quiet[1..4],
            &(data_size as u32).to_be_bytes()[1..],
            "DataSize"
        );
        assert_eq!(
            &quiet[4..11],
            &[0, 0, 40, 0, 0, 0, 0],
            "timestamp and stream id kept"
        );
        assert_eq!(&quiet[11..13], &[0xae, 1]);
        assert_eq!(&quiet[13..13 + SILENT_AAC_MONO.len()], &SILENT_AAC_MONO);
        assert_eq!(
            &quiet[quiet.len() - 4..],
            &((11 + data_size) as u32).to_be_bytes(),
            "PreviousTagSize"
        );
    }

    #[test]
    fn g711_is_silenced_in_place_and_other_tags_pass() {
        gst::init().unwrap();
        let mulaw = tag(8, &[0x82, 1, 2, 3, 4]);
        assert_eq!(
            &bytes(&silenced(&mulaw).unwrap())[11..16],
            &[0x82, 0xff, 0xff, 0xff, 0xff]
        );
        let alaw = tag(8, &[0x72, 1, 2]);
        assert_eq!(
            &bytes(&silenced(&alaw).unwrap())[11..14],
            &[0x72, 0xd5, 0xd5]
        );
        assert!(
            silenced(&tag(9, &[0x17, 1, 0, 0, 0])).is_none(),
            "video passes"
        );
        assert!(
            silenced(&tag(8, &[0xae, 0, 0x12, 0x08])).is_none(),
            "the AAC sequence header passes"
        );
        assert!(
            silenced(&tag(18, &[2, 0, 10])).is_none(),
            "script data passes"
        );
        assert!(
            silenced(&gst::Buffer::from_slice([8u8, 0, 0])).is_none(),
            "a short buffer passes"
        );
    }

    #[test]
    fn fanout_sends_bursts_after_the_first_second_and_flushes_what_goes_stale() {
        gst::init().unwrap();
        let appsrc = gst_app::AppSrc::builder().build();
        let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut fanout = FanOut::default();
        fanout.attach(Feed {
            target: 1,
            appsrc,
            headers_as_data: false,
            awaiting_keyframe: AtomicBool::new(false),
            bytes: bytes.clone(),
            muted: Arc::new(AtomicBool::new(false)),
        });
        let sample = || {
            gst::Sample::builder()
                .buffer(&tag(8, &[0xae, 1, 1, 2, 3]))
                .build()
        };
        let size = sample().buffer().unwrap().size() as u64;
        let t0 = Instant::now();
        fanout.on_sample(&sample(), t0);
        assert_eq!(
            bytes.load(Ordering::Relaxed),
            size,
            "the first second goes out at once"
        );
        let t1 = t0 + Duration::from_millis(1500);
        fanout.on_sample(&sample(), t1);
        fanout.on_sample(&sample(), t1 + Duration::from_millis(20));
        assert_eq!(
            bytes.load(Ordering::Relaxed),
            size,
            "later FLV is held for a burst"
        );
        fanout.flush_stale(t1 + Duration::from_millis(50));
        assert_eq!(bytes.load(Ordering::Relaxed), size, "not stale yet");
        fanout.on_sample(&sample(), t1 + FANOUT_BURST);
        assert_eq!(
            bytes.load(Ordering::Relaxed),
            4 * size,
            "a burst's worth goes as one list"
        );
        fanout.on_sample(&sample(), t1 + Duration::from_millis(120));
        fanout.flush_stale(t1 + Duration::from_millis(120) + FANOUT_BURST);
        assert_eq!(
            bytes.load(Ordering::Relaxed),
            5 * size,
            "the peer went quiet: flushed by the poll"
        );
    }
}
