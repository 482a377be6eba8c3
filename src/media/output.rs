//! One target of a call's FLV: an RTMP server (or a file), each in a pipeline of its own so that a failing,
//! refusing or stalled target never stalls the call or its other targets. A failed RTMP target is rebuilt
//! with backoff for as long as the call lives; its statuses follow WCS's names.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gst::prelude::*;
use tokio::sync::mpsc::UnboundedSender;

use super::template::{Template, TemplateError, FILE_OUT, FLV_IN, RTMP_OUT};
use super::{MediaEvent, MediaEventKind};
use crate::call::RtmpStatus;
use crate::secret::StreamKey;
use crate::sip::ua::LegId;

/// A call's handle for one of its targets.
pub type TargetId = u32;

/// FLV bytes past the RTMP commands before a target counts as live (RTMP_STREAM_ACTIVE): the server took the
/// publish and media is flowing, not just the metadata tag.
const RTMP_ACTIVE_FLV_BYTES: u64 = 1024;

/// What rtmp2sink's byte counter holds before the first FLV byte: its `out-bytes-total` leaves out the
/// handshake (C0+C1+C2) and counts the commands connect, releaseStream, FCPublish, createStream, publish,
/// window acknowledgement size and set chunk size: about 280 bytes (GStreamer 1.22 on the wire) plus the URL
/// (tcUrl and app) and the stream name (three commands carry it). A slight overestimate, so that the count
/// passing it means the first FLV tag (metadata, then the codec headers and media) is on its way.
fn rtmp_command_bytes(url: &str, stream: &str) -> u64 {
    const FIXED: usize = 280;
    (FIXED + 2 * url.len() + 3 * stream.len()) as u64
}

/// Where a target sends the call's FLV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    Rtmp { url: String, stream: StreamKey },
    File { path: PathBuf },
}

impl TargetKind {
    /// For logs and API answers: the URL with the stream key redacted, or the file path.
    pub fn describe(&self) -> String {
        match self {
            Self::Rtmp { url, stream } => {
                format!("{}/{}", url.trim_end_matches('/'), stream.redacted())
            }
            Self::File { path } => path.display().to_string(),
        }
    }

    fn scrub(&self, text: &str) -> String {
        match self {
            Self::Rtmp { stream, .. } => stream.scrub(text),
            Self::File { .. } => text.to_owned(),
        }
    }
}

/// Reconnect delays: `initial`, then times `multiplier`, capped at `max`; forever.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    next: Option<Duration>,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, multiplier: f64) -> Self {
        Self {
            initial,
            max,
            multiplier: multiplier.max(1.0),
            next: None,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next.unwrap_or(self.initial).min(self.max);
        self.next = Some(delay.mul_f64(self.multiplier).min(self.max));
        delay
    }

    /// After a success, start again from `initial`.
    pub fn reset(&mut self) {
        self.next = None;
    }
}

/// The RTMP liveness settings for a target (config `rtmp.*`).
#[derive(Debug, Clone)]
pub struct OutputSettings {
    pub backoff: Backoff,
    /// Probe the RTMP server every this often while the target is live; `None` disables the probe.
    pub liveness: Option<Duration>,
    /// Accept any TLS certificate for rtmps:// (tests with self-signed certificates only).
    pub tls_accept_invalid: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A pipeline is up and connecting or streaming.
    Running,
    /// Down after a failure; rebuilt at the instant given.
    Waiting(Instant),
    /// Removed or the call is over.
    Closed,
}

/// The FLV feed of one target, shared with the fan-out on the call pipeline's streaming thread.
pub struct Feed {
    pub target: TargetId,
    pub appsrc: gst_app::AppSrc,
    /// Files need the FLV header and codec tags as data; RTMP sinks take them from the caps.
    pub headers_as_data: bool,
    /// Drop delta frames until a keyframe, so a (re)started target starts clean.
    pub awaiting_keyframe: AtomicBool,
    pub bytes: Arc<AtomicU64>,
    /// While set, the target gets silence instead of the call's audio (push/mute).
    pub muted: Arc<AtomicBool>,
}

/// One target's state, owned by the driver through its call's pipeline.
pub struct Output {
    pub id: TargetId,
    pub kind: TargetKind,
    pub status: RtmpStatus,
    pub reason: Option<String>,
    pub reconnects: u32,
    pub last_reconnect: Option<SystemTime>,
    pub first_active_at: Option<Instant>,
    /// When the first media byte went out (past the RTMP set-up).
    pub first_byte_at: Option<Instant>,
    /// Bumped on every rebuild; events from older pipelines are ignored.
    pub generation: u64,
    phase: Phase,
    pipeline: Option<gst::Pipeline>,
    sink: Option<gst::Element>,
    /// Bytes handed to this target's pipelines (all generations).
    bytes_fed: Arc<AtomicU64>,
    /// Bytes the RTMP sinks of earlier generations sent.
    bytes_sent_before: u64,
    next_probe_at: Option<Instant>,
    pub probe_in_flight: bool,
    muted: Arc<AtomicBool>,
    ever_active: bool,
    backoff: Backoff,
}

impl Output {
    pub fn new(id: TargetId, kind: TargetKind, settings: &OutputSettings) -> Self {
        Self {
            id,
            kind,
            status: RtmpStatus::Wait,
            reason: None,
            reconnects: 0,
            last_reconnect: None,
            first_active_at: None,
            first_byte_at: None,
            generation: 0,
            phase: Phase::Waiting(Instant::now()),
            pipeline: None,
            sink: None,
            bytes_fed: Arc::new(AtomicU64::new(0)),
            bytes_sent_before: 0,
            next_probe_at: None,
            probe_in_flight: false,
            muted: Arc::new(AtomicBool::new(false)),
            ever_active: false,
            backoff: settings.backoff.clone(),
        }
    }

    pub fn is_muted(&self) -> bool {
        self.muted.load(Ordering::Relaxed)
    }

    /// Silence instead of the call's audio for this target, from the next buffer on (rebuilds keep it).
    pub fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
    }

    pub fn is_rtmp(&self) -> bool {
        matches!(self.kind, TargetKind::Rtmp { .. })
    }

    /// When this target must be rebuilt, if it is waiting to be.
    pub fn rebuild_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting(at) => Some(at),
            _ => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Bytes this target has sent (RTMP: what its sinks report; file: what was handed to it).
    pub fn bytes_out(&self) -> u64 {
        match self.kind {
            TargetKind::Rtmp { .. } => self.bytes_sent_before + self.current_sent(),
            TargetKind::File { .. } => self.bytes_fed.load(Ordering::Relaxed),
        }
    }

    fn current_sent(&self) -> u64 {
        self.sink
            .as_ref()
            .filter(|s| s.find_property("stats").is_some())
            .and_then(|s| s.property::<Option<gst::Structure>>("stats"))
            .and_then(|st| st.get::<u64>("out-bytes-total").ok())
            .unwrap_or(0)
    }

    /// Builds and starts this target's pipeline if it is due. Returns the feed to hand to the fan-out.
    pub fn start_if_due(
        &mut self,
        leg: LegId,
        now: Instant,
        templates: (&Template, &Template),
        settings: &OutputSettings,
        events: &UnboundedSender<MediaEvent>,
    ) -> Option<Result<Feed, TemplateError>> {
        match self.phase {
            Phase::Waiting(at) if at <= now => {}
            _ => return None,
        }
        if self.generation > 0 {
            self.reconnects += 1;
            self.last_reconnect = Some(SystemTime::now());
        }
        self.generation += 1;
        Some(self.build(leg, templates, settings, events))
    }

    fn build(
        &mut self,
        leg: LegId,
        (rtmp_template, file_template): (&Template, &Template),
        settings: &OutputSettings,
        events: &UnboundedSender<MediaEvent>,
    ) -> Result<Feed, TemplateError> {
        let (pipeline, sink) = match &self.kind {
            TargetKind::Rtmp { url, stream } => {
                let pipeline = rtmp_template.instantiate_output()?;
                let sink = pipeline
                    .by_name(RTMP_OUT)
                    .expect("the output contract was checked");
                sink.set_property(
                    "location",
                    format!("{}/{}", url.trim_end_matches('/'), stream.expose()),
                );
                if settings.tls_accept_invalid
                    && sink.find_property("tls-validation-flags").is_some()
                {
                    sink.set_property_from_str("tls-validation-flags", "0");
                }
                (pipeline, sink)
            }
            TargetKind::File { path } => {
                let pipeline = file_template.instantiate_output()?;
                let sink = pipeline
                    .by_name(FILE_OUT)
                    .expect("the output contract was checked");
                let stamped = stamped_path(path, self.generation);
                sink.set_property("location", stamped.display().to_string());
                (pipeline, sink)
            }
        };
        let appsrc = pipeline
            .by_name(FLV_IN)
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| TemplateError::Parse {
                path: PathBuf::from("output template"),
                message: format!("{FLV_IN:?} must be an appsrc"),
            })?;

        let bus = pipeline.bus().expect("a pipeline always has a bus");
        let (target, generation, kind, tx) =
            (self.id, self.generation, self.kind.clone(), events.clone());
        let reported = AtomicBool::new(false);
        bus.set_sync_handler(move |_, message| {
            if let gst::MessageView::Error(err) = message.view() {
                // One report per pipeline: a sink error makes the appsrc fail too.
                if !reported.swap(true, Ordering::SeqCst) {
                    let text = kind.scrub(&err.error().to_string());
                    let _ = tx.send(MediaEvent {
                        leg,
                        kind: MediaEventKind::OutputFailed {
                            target,
                            generation,
                            reason: text,
                        },
                    });
                }
            }
            gst::BusSyncReply::Drop
        });
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            let _ = pipeline.set_state(gst::State::Null);
            return Err(TemplateError::Parse {
                path: PathBuf::from("output pipeline"),
                message: format!("does not start: {e}"),
            });
        }
        self.pipeline = Some(pipeline);
        self.sink = Some(sink);
        self.phase = Phase::Running;
        self.next_probe_at = settings.liveness.map(|l| Instant::now() + l);
        Ok(Feed {
            target: self.id,
            appsrc,
            headers_as_data: matches!(self.kind, TargetKind::File { .. }),
            awaiting_keyframe: AtomicBool::new(true),
            muted: self.muted.clone(),
            bytes: self.bytes_fed.clone(),
        })
    }

    /// Checks whether a running RTMP target has become live; returns the new status if it changed.
    pub fn poll_active(&mut self, now: Instant) -> Option<RtmpStatus> {
        if self.phase != Phase::Running || self.status == RtmpStatus::Active {
            return None;
        }
        let live = match &self.sink {
            Some(sink) if sink.find_property("stats").is_some() => {
                let stats = sink.property::<Option<gst::Structure>>("stats")?;
                let out = stats.get::<u64>("out-bytes-total").unwrap_or(0);
                let incoming = stats.get::<u64>("in-bytes-total").unwrap_or(0);
                let commands = match &self.kind {
                    TargetKind::Rtmp { url, stream } => rtmp_command_bytes(url, stream.expose()),
                    TargetKind::File { .. } => 0,
                };
                if out > commands && incoming > 0 {
                    self.first_byte_at.get_or_insert(now);
                }
                out >= commands + RTMP_ACTIVE_FLV_BYTES && incoming > 0
            }
            // Files and sinks without statistics: data handed over is all we can know.
            _ => self.bytes_fed.load(Ordering::Relaxed) > 0,
        };
        if !live {
            return None;
        }
        self.ever_active = true;
        self.first_active_at.get_or_insert(now);
        self.backoff.reset();
        self.reason = None;
        self.status = RtmpStatus::Active;
        Some(RtmpStatus::Active)
    }

    /// True when a liveness probe of this target is due (live RTMP targets only).
    pub fn probe_due(&mut self, now: Instant, settings: &OutputSettings) -> bool {
        let due = self.phase == Phase::Running
            && self.status == RtmpStatus::Active
            && !self.probe_in_flight
            && self.next_probe_at.is_some_and(|t| t <= now);
        if due {
            self.probe_in_flight = true;
            self.next_probe_at = settings.liveness.map(|l| now + l);
        }
        due
    }

    /// The pipeline of `generation` failed (or its server stalled): take it down and schedule a rebuild.
    /// Returns the pipeline to end, or `None` for a stale generation. The new status is in `self.status`.
    pub fn fail(
        &mut self,
        generation: u64,
        reason: String,
        now: Instant,
    ) -> Option<Option<gst::Pipeline>> {
        if generation != self.generation || self.phase != Phase::Running {
            return None;
        }
        self.bytes_sent_before += self.current_sent();
        self.sink = None;
        self.phase = Phase::Waiting(now + self.backoff.next_delay());
        self.probe_in_flight = false;
        self.status = if self.ever_active {
            RtmpStatus::ConnectionLost
        } else {
            RtmpStatus::ConnectionFailed
        };
        self.reason = Some(reason);
        Some(self.pipeline.take())
    }

    /// Closes the target for good; returns its pipeline, to be ended by the caller.
    pub fn close(&mut self) -> Option<gst::Pipeline> {
        self.bytes_sent_before += self.current_sent();
        self.sink = None;
        self.phase = Phase::Closed;
        self.pipeline.take()
    }

    /// `host:port` of an rtmp:// target, for the liveness probe (rtmps:// is not probed).
    pub fn probe_address(&self) -> Option<(String, u16)> {
        let TargetKind::Rtmp { url, .. } = &self.kind else {
            return None;
        };
        let rest = url
            .strip_prefix("rtmp://")
            .or_else(|| url.strip_prefix("RTMP://"))?;
        let authority = rest.split('/').next()?;
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
                Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
            }
            _ => Some((authority.trim_matches(['[', ']']).to_owned(), 1935)),
        }
    }
}

/// `dir/name.flv` with the generation appended from the second one on, so a rebuilt file target never
/// overwrites what it recorded before.
fn stamped_path(path: &std::path::Path, generation: u64) -> PathBuf {
    if generation <= 1 {
        return path.to_owned();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "flv".into());
    path.with_file_name(format!("{stem}-{generation}.{ext}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(10), 1.5);
        let delays: Vec<u128> = (0..10).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(&delays[..5], &[500, 750, 1125, 1687, 2531]);
        assert_eq!(*delays.last().unwrap(), 10_000, "capped: {delays:?}");
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }

    #[test]
    fn probe_address_defaults_the_port() {
        let settings = OutputSettings {
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(1), 1.0),
            liveness: None,
            tls_accept_invalid: false,
        };
        let out = |url: &str| {
            Output::new(
                1,
                TargetKind::Rtmp {
                    url: url.into(),
                    stream: StreamKey::new("k"),
                },
                &settings,
            )
        };
        assert_eq!(
            out("rtmp://example.com/live").probe_address(),
            Some(("example.com".into(), 1935))
        );
        assert_eq!(
            out("rtmp://127.0.0.1:19350/live").probe_address(),
            Some(("127.0.0.1".into(), 19350))
        );
        assert_eq!(
            out("rtmp://[::1]:1936/live").probe_address(),
            Some(("::1".into(), 1936))
        );
        assert_eq!(out("rtmps://example.com/live").probe_address(), None);
    }

    #[test]
    fn describe_redacts_the_key() {
        let kind = TargetKind::Rtmp {
            url: "rtmp://h/live/".into(),
            stream: StreamKey::new("secretkey"),
        };
        assert_eq!(kind.describe(), "rtmp://h/live/secr...");
    }

    #[test]
    fn rebuilt_files_get_new_names() {
        let p = std::path::Path::new("/rec/call-1.flv");
        assert_eq!(stamped_path(p, 1), PathBuf::from("/rec/call-1.flv"));
        assert_eq!(stamped_path(p, 3), PathBuf::from("/rec/call-1-3.flv"));
    }
}
