// SPDX-License-Identifier: MPL-2.0

//! Implementation of `rtpkeepalivesrc`; see the parent module's docs for the
//! element's behaviour and API.
//!
//! Locking: `settings` → `state` → `dtmf_queue`. A lock may only be taken
//! while holding locks that come before it in this order, and no lock is held
//! while waiting on the clock.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;
use gst_rtp::prelude::*;

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "rtpkeepalivesrc",
        gst::DebugColorFlags::empty(),
        Some("RTP keep-alive (silence + DTMF) source"),
    )
});

// Property names.
const PROP_ENCODING_NAME: &str = "encoding-name";
const PROP_PAYLOAD_TYPE: &str = "payload-type";
const PROP_CLOCK_RATE: &str = "clock-rate";
const PROP_PTIME: &str = "ptime";
const PROP_SSRC: &str = "ssrc";
const PROP_DTMF_PAYLOAD_TYPE: &str = "dtmf-payload-type";
const PROP_DTMF_VOLUME: &str = "dtmf-volume";
const PROP_PACKETS_PER_PUSH: &str = "packets-per-push";

/// Signal name of the DTMF action signal.
const SIGNAL_SEND_DTMF: &str = "send-dtmf";

// Defaults and ranges of the properties.
/// Default `encoding-name`: G.711 µ-law.
const DEFAULT_ENCODING: Encoding = Encoding::Pcmu;
/// Default `payload-type`: 0, the static payload type of PCMU (RFC 3551 §6).
const DEFAULT_PAYLOAD_TYPE: u32 = 0;
const MAX_PAYLOAD_TYPE: u32 = 127;
/// Default `clock-rate`: 8000 Hz, the only rate of PCMU/PCMA (RFC 3551 §4.5.14).
const DEFAULT_CLOCK_RATE: u32 = 8000;
const MIN_CLOCK_RATE: u32 = 1;
const MAX_CLOCK_RATE: u32 = 192_000;
/// Default `ptime`: 20 ms per packet (RFC 3551 §4.2 default packetization).
const DEFAULT_PTIME: u32 = 20;
const MIN_PTIME: u32 = 10;
const MAX_PTIME: u32 = 120;
/// Default `ssrc`: `u32::MAX` (G_MAXUINT) means "pick a random SSRC at each
/// start", like `rtpbasepayload`'s `ssrc` property.
const DEFAULT_SSRC: u32 = u32::MAX;
/// Default `dtmf-payload-type`: 101, the usual dynamic payload type of
/// telephone-event.
const DEFAULT_DTMF_PAYLOAD_TYPE: u32 = 101;
const MIN_DTMF_PAYLOAD_TYPE: u32 = 96;
const MAX_DTMF_PAYLOAD_TYPE: u32 = 127;
/// Default `dtmf-volume`: 10, i.e. -10 dBm0 (RFC 4733 §2.3.4: 0..=63, sign
/// dropped).
const DEFAULT_DTMF_VOLUME: u32 = 10;
const MAX_DTMF_VOLUME: u32 = 63;
/// Default `packets-per-push`: 1, one packet per `ptime`, each at its time. More packets per push (a buffer
/// list, sent with one wake-up) trade smoothness toward the peer for fewer wake-ups: a gateway with many
/// calls spends most of its CPU on wake-ups, and a peer's jitter buffer absorbs a burst of silence.
const DEFAULT_PACKETS_PER_PUSH: u32 = 1;
const MAX_PACKETS_PER_PUSH: u32 = 10;

// Limits of `send-dtmf`.
/// Shortest digit accepted by `send-dtmf` (ITU-T Q.24 minimum tone duration).
const MIN_DTMF_DURATION_MS: u32 = 40;
/// Longest digit accepted by `send-dtmf`. Also limited to 65535 timestamp
/// units, since RFC 4733 §2.5.1.3 long-event segmentation is not implemented.
const MAX_DTMF_DURATION_MS: u32 = 8000;
/// Most digits that may wait in the queue.
const MAX_QUEUED_DIGITS: usize = 256;
/// RFC 4733 §2.5.1.4: the final packet of an event is sent three times.
const DTMF_END_PACKETS: u32 = 3;
/// Silence between the last end packet of a digit and the next digit.
const MIN_INTER_DIGIT_GAP_MS: u32 = 40;

/// How late the streaming thread may fall behind the clock before the element
/// skips ahead instead of bursting packets to catch up.
const MAX_LATENESS: gst::ClockTime = gst::ClockTime::from_mseconds(200);

/// What the element produces. Every media-specific decision (caps, payload
/// bytes, valid clock rates) goes through this type, so that a video mode
/// (black H.264 / VP8 frames) can be added as further variants without
/// touching the timing, RTP header and DTMF code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
}

impl Encoding {
    fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(Encoding::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Encoding::Pcma)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::Pcmu => "PCMU",
            Encoding::Pcma => "PCMA",
        }
    }

    /// The `media` field of the caps.
    fn media(self) -> &'static str {
        match self {
            Encoding::Pcmu | Encoding::Pcma => "audio",
        }
    }

    /// The clock rate the encoding mandates, if any.
    fn required_clock_rate(self) -> Option<u32> {
        match self {
            Encoding::Pcmu | Encoding::Pcma => Some(8000),
        }
    }

    /// The static RTP payload type of the encoding (RFC 3551 §6), if any.
    fn static_payload_type(self) -> Option<u32> {
        match self {
            Encoding::Pcmu => Some(0),
            Encoding::Pcma => Some(8),
        }
    }

    /// Payload size in bytes of one packet holding `samples` samples.
    fn payload_len(self, samples: u32) -> u32 {
        match self {
            // One byte per sample.
            Encoding::Pcmu | Encoding::Pcma => samples,
        }
    }

    /// Writes one packet of silence into `payload`.
    fn fill_silence(self, payload: &mut [u8]) {
        // G.711 encodes a zero sample as 0xFF in µ-law and as 0xD5 in A-law
        // (ITU-T G.711 tables 1a and 2a, with the even bits of A-law inverted).
        let byte = match self {
            Encoding::Pcmu => 0xFF,
            Encoding::Pcma => 0xD5,
        };
        payload.fill(byte);
    }
}

// Property value storage.
#[derive(Debug, Clone, Copy)]
struct Settings {
    encoding: Encoding,
    payload_type: u32,
    clock_rate: u32,
    ptime: u32,
    ssrc: u32,
    dtmf_payload_type: u32,
    dtmf_volume: u32,
    packets_per_push: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            encoding: DEFAULT_ENCODING,
            payload_type: DEFAULT_PAYLOAD_TYPE,
            clock_rate: DEFAULT_CLOCK_RATE,
            ptime: DEFAULT_PTIME,
            ssrc: DEFAULT_SSRC,
            dtmf_payload_type: DEFAULT_DTMF_PAYLOAD_TYPE,
            dtmf_volume: DEFAULT_DTMF_VOLUME,
            packets_per_push: DEFAULT_PACKETS_PER_PUSH,
        }
    }
}

impl Settings {
    fn caps(&self) -> gst::Caps {
        gst::Caps::builder("application/x-rtp")
            .field("media", self.encoding.media())
            .field("clock-rate", self.clock_rate as i32)
            .field("encoding-name", self.encoding.name())
            .field("payload", self.payload_type as i32)
            .build()
    }

    /// Checks the combination of settings; the error says what is wrong.
    fn validate(&self) -> Result<(), String> {
        if let Some(rate) = self.encoding.required_clock_rate() {
            if self.clock_rate != rate {
                return Err(format!(
                    "clock-rate {} is not valid for {}, which needs {rate}",
                    self.clock_rate,
                    self.encoding.name()
                ));
            }
        }
        if (u64::from(self.clock_rate) * u64::from(self.ptime)) % 1000 != 0 {
            return Err(format!(
                "ptime {} ms is not a whole number of samples at clock-rate {}",
                self.ptime, self.clock_rate
            ));
        }
        if self.dtmf_payload_type == self.payload_type {
            return Err(format!(
                "dtmf-payload-type {} is the same as payload-type",
                self.dtmf_payload_type
            ));
        }
        Ok(())
    }
}

/// One queued digit.
#[derive(Debug, Clone, Copy)]
struct QueuedDigit {
    /// RFC 4733 §3.2 event code (0-15).
    code: u8,
    duration_ms: u32,
}

/// Maps a DTMF character to its RFC 4733 §3.2 event code.
fn dtmf_event_code(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(c as u8 - b'A' + 12),
        'a'..='d' => Some(c as u8 - b'a' + 12),
        _ => None,
    }
}

/// A telephone-event being sent.
#[derive(Debug, Clone, Copy)]
struct DtmfEvent {
    code: u8,
    payload_type: u8,
    volume: u8,
    /// RTP timestamp of the event's start, shared by all its packets.
    timestamp: u32,
    /// Total duration in timestamp units.
    duration: u16,
    /// Packets of this event already sent (updates and end packets).
    packets_sent: u32,
    /// End packets (E bit set) already sent.
    end_packets_sent: u32,
}

#[derive(Debug, Clone, Copy)]
enum Dtmf {
    /// Silence; the next digit starts as soon as one is queued.
    Idle,
    Playing(DtmfEvent),
    /// Silence packets still to be sent before the next digit may start.
    Gap(u32),
}

/// Per-stream state, set up in `start()`.
#[derive(Debug)]
struct Stream {
    encoding: Encoding,
    payload_type: u8,
    clock_rate: u32,
    ptime: gst::ClockTime,
    samples_per_packet: u32,
    /// Silence packets between two digits.
    gap_packets: u32,
    ssrc: u32,
    seqnum_offset: u16,
    timestamp_offset: u32,
    /// Sequence number of the next packet.
    seq: u16,
    /// Index of the next packet's time slot since the start; the slot's RTP
    /// timestamp is `timestamp_offset + slot * samples_per_packet`.
    slot: u64,
    /// A slot and the running time at which it starts: taken from the clock
    /// when the first packet is made (zero without a clock), and again if the
    /// running time jumps backwards.
    anchor: Option<(u64, gst::ClockTime)>,
    /// Marker bit for the next audio packet (start of the stream).
    marker: bool,
    /// Set DISCONT on the next packet (after skipping ahead).
    discont: bool,
    dtmf: Dtmf,
    /// Clock wait in progress, so that `unlock()` can cancel it.
    clock_id: Option<gst::SingleShotClockId>,
    flushing: bool,
}

#[derive(Debug)]
enum State {
    Stopped,
    Started(Box<Stream>),
}

impl Stream {
    fn new(settings: &Settings) -> Self {
        let samples_per_packet =
            (u64::from(settings.clock_rate) * u64::from(settings.ptime) / 1000) as u32;
        let ssrc = if settings.ssrc == DEFAULT_SSRC {
            glib::random_int()
        } else {
            settings.ssrc
        };
        let seqnum_offset = (glib::random_int() & 0xFFFF) as u16;
        let timestamp_offset = glib::random_int();
        Stream {
            encoding: settings.encoding,
            payload_type: settings.payload_type as u8,
            clock_rate: settings.clock_rate,
            ptime: gst::ClockTime::from_mseconds(u64::from(settings.ptime)),
            samples_per_packet,
            gap_packets: MIN_INTER_DIGIT_GAP_MS.div_ceil(settings.ptime).max(1),
            ssrc,
            seqnum_offset,
            timestamp_offset,
            seq: seqnum_offset,
            slot: 0,
            anchor: None,
            marker: true,
            discont: false,
            dtmf: Dtmf::Idle,
            clock_id: None,
            flushing: false,
        }
    }

    fn caps(&self) -> gst::Caps {
        gst::Caps::builder("application/x-rtp")
            .field("media", self.encoding.media())
            .field("clock-rate", self.clock_rate as i32)
            .field("encoding-name", self.encoding.name())
            .field("payload", i32::from(self.payload_type))
            .field("ssrc", self.ssrc)
            .field("seqnum-offset", u32::from(self.seqnum_offset))
            .field("timestamp-offset", self.timestamp_offset)
            .build()
    }

    /// Running time at which slot `slot` (not before the anchor) starts.
    fn slot_running_time(&self, slot: u64) -> gst::ClockTime {
        let (anchor_slot, anchor_time) = self.anchor.unwrap_or((0, gst::ClockTime::ZERO));
        let offset = self
            .ptime
            .nseconds()
            .saturating_mul(slot.saturating_sub(anchor_slot));
        clock_time_saturating(anchor_time.nseconds().saturating_add(offset))
    }

    fn slot_timestamp(&self, slot: u64) -> u32 {
        self.timestamp_offset
            .wrapping_add(slot.wrapping_mul(u64::from(self.samples_per_packet)) as u32)
    }
}

/// A `ClockTime` from nanoseconds, saturating below `ClockTime::NONE`.
fn clock_time_saturating(ns: u64) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(ns.min(gst::ClockTime::MAX.nseconds()))
}

/// What the next packet carries.
enum Packet {
    Silence,
    /// A telephone-event packet (RFC 4733 §2.3).
    Event {
        event: DtmfEvent,
        duration: u16,
        end: bool,
        marker: bool,
    },
}

#[derive(Debug)]
pub struct RtpKeepaliveSrc {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    dtmf_queue: Mutex<VecDeque<QueuedDigit>>,
}

impl Default for RtpKeepaliveSrc {
    fn default() -> Self {
        RtpKeepaliveSrc {
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::Stopped),
            dtmf_queue: Mutex::new(VecDeque::new()),
        }
    }
}

impl RtpKeepaliveSrc {
    /// Whether a stream is set up (PAUSED or PLAYING). Take with `settings`
    /// held (lock order).
    fn is_started(&self) -> bool {
        matches!(*self.state.lock().unwrap(), State::Started(_))
    }

    /// Queues `digits` for `send-dtmf`. All or nothing.
    fn queue_dtmf(&self, digits: &str, duration_ms: u32) -> bool {
        let clock_rate = self.settings.lock().unwrap().clock_rate;

        if digits.is_empty() {
            gst::warning!(CAT, imp = self, "send-dtmf: no digits given");
            return false;
        }
        let mut codes = Vec::with_capacity(digits.len());
        for c in digits.chars() {
            match dtmf_event_code(c) {
                Some(code) => codes.push(code),
                None => {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "send-dtmf: invalid DTMF digit {c:?} in {digits:?}, nothing queued"
                    );
                    return false;
                }
            }
        }
        if !(MIN_DTMF_DURATION_MS..=MAX_DTMF_DURATION_MS).contains(&duration_ms) {
            gst::warning!(
                CAT,
                imp = self,
                "send-dtmf: duration {duration_ms} ms out of range \
                 {MIN_DTMF_DURATION_MS}..={MAX_DTMF_DURATION_MS}, nothing queued"
            );
            return false;
        }
        let samples = u64::from(duration_ms) * u64::from(clock_rate) / 1000;
        if samples > u64::from(u16::MAX) {
            gst::warning!(
                CAT,
                imp = self,
                "send-dtmf: duration {duration_ms} ms is {samples} timestamp units at \
                 {clock_rate} Hz, more than one RFC 4733 event can carry; nothing queued"
            );
            return false;
        }

        let mut queue = self.dtmf_queue.lock().unwrap();
        if queue.len() + codes.len() > MAX_QUEUED_DIGITS {
            gst::warning!(
                CAT,
                imp = self,
                "send-dtmf: queue full ({} pending, at most {MAX_QUEUED_DIGITS}), nothing queued",
                queue.len()
            );
            return false;
        }
        queue.extend(
            codes
                .into_iter()
                .map(|code| QueuedDigit { code, duration_ms }),
        );
        gst::debug!(
            CAT,
            imp = self,
            "Queued DTMF {digits:?} ({duration_ms} ms each), {} pending",
            queue.len()
        );
        true
    }

    /// Decides what the packet of the current slot carries and advances the
    /// DTMF state. `settings` gives the payload type and volume of a digit
    /// that starts now.
    fn next_packet(&self, stream: &mut Stream, settings: &Settings) -> Packet {
        if let Dtmf::Idle = stream.dtmf {
            if let Some(digit) = self.dtmf_queue.lock().unwrap().pop_front() {
                let samples = u64::from(digit.duration_ms) * u64::from(stream.clock_rate) / 1000;
                let event = DtmfEvent {
                    code: digit.code,
                    payload_type: settings.dtmf_payload_type as u8,
                    volume: settings.dtmf_volume as u8,
                    timestamp: stream.slot_timestamp(stream.slot),
                    duration: samples.clamp(1, u64::from(u16::MAX)) as u16,
                    packets_sent: 0,
                    end_packets_sent: 0,
                };
                gst::debug!(CAT, imp = self, "Starting DTMF event {event:?}");
                stream.dtmf = Dtmf::Playing(event);
            }
        }

        match stream.dtmf {
            Dtmf::Idle => Packet::Silence,
            Dtmf::Gap(remaining) => {
                stream.dtmf = if remaining <= 1 {
                    Dtmf::Idle
                } else {
                    Dtmf::Gap(remaining - 1)
                };
                Packet::Silence
            }
            Dtmf::Playing(mut event) => {
                // RFC 4733 §2.5.1.2: every update carries the event's start
                // timestamp (§2.2) and the duration so far, up to the end of
                // the packet's interval (§2.3); the last one reaches the full
                // duration and has the E bit.
                let elapsed = u64::from(event.packets_sent + 1)
                    .saturating_mul(u64::from(stream.samples_per_packet));
                let duration = elapsed.min(u64::from(event.duration)) as u16;
                let end = duration == event.duration;
                // RFC 4733 §2.2: the marker bit marks the first packet of an
                // event only.
                let marker = event.packets_sent == 0;

                event.packets_sent += 1;
                if end {
                    event.end_packets_sent += 1;
                }
                // RFC 4733 §2.5.1.4: "The final packet for each event and for
                // each segment SHOULD be sent a total of three times at the
                // interval used by the source for updates", and "Once the
                // sender has set the E bit for a packet, it MUST continue to
                // set the E bit for any further retransmissions of that
                // packet." So the end packet goes out in three consecutive
                // slots with identical payload (E bit, final duration) and RTP
                // timestamp.
                //
                // Sequence numbers: each retransmission gets the next one,
                // not a copy of the first. RFC 4733 §2.5.1.6 says the RTP
                // sequence number MUST be incremented by one in each
                // successive packet, retransmitted event reports included (so
                // that RTCP loss statistics stay right), in line with RFC 3550
                // §5.1: "The sequence number increments by one for each RTP
                // data packet sent". Receivers recognise the copies by their
                // timestamp and E bit. GStreamer's rtpdtmfsrc does the same.
                stream.dtmf = if event.end_packets_sent >= DTMF_END_PACKETS {
                    gst::debug!(CAT, imp = self, "DTMF event {} done", event.code);
                    Dtmf::Gap(stream.gap_packets)
                } else {
                    Dtmf::Playing(event)
                };
                Packet::Event {
                    event,
                    duration,
                    end,
                    marker,
                }
            }
        }
    }

    /// Makes the RTP packet for the current slot and advances the stream.
    fn make_packet(
        &self,
        stream: &mut Stream,
        settings: &Settings,
    ) -> Result<gst::Buffer, gst::FlowError> {
        let packet = self.next_packet(stream, settings);
        let payload_len = match packet {
            Packet::Silence => stream.encoding.payload_len(stream.samples_per_packet),
            Packet::Event { .. } => 4,
        };

        let mut buffer = gst::Buffer::new_rtp_with_sizes(payload_len, 0, 0).map_err(|err| {
            gst::element_imp_error!(
                self,
                gst::ResourceError::NoSpaceLeft,
                ["Failed to allocate an RTP buffer: {err}"]
            );
            gst::FlowError::Error
        })?;
        {
            let buffer = buffer.make_mut();
            buffer.set_pts(stream.slot_running_time(stream.slot));
            buffer.set_duration(stream.ptime);
            if stream.discont {
                buffer.set_flags(gst::BufferFlags::DISCONT);
            }

            let mut rtp = gst_rtp::RTPBuffer::from_buffer_writable(buffer).map_err(|err| {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Failed,
                    ["Failed to map the RTP buffer: {err}"]
                );
                gst::FlowError::Error
            })?;
            rtp.set_seq(stream.seq);
            rtp.set_ssrc(stream.ssrc);
            let payload = rtp.payload_mut().map_err(|err| {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Failed,
                    ["Failed to map the RTP payload: {err}"]
                );
                gst::FlowError::Error
            })?;
            let (payload_type, timestamp, marker) = match packet {
                Packet::Silence => {
                    stream.encoding.fill_silence(payload);
                    (
                        stream.payload_type,
                        stream.slot_timestamp(stream.slot),
                        stream.marker,
                    )
                }
                Packet::Event {
                    event,
                    duration,
                    end,
                    marker,
                } => {
                    // RFC 4733 §2.3: event (8 bits), E (1), R (1, zero),
                    // volume (6), duration (16, network order).
                    payload[0] = event.code;
                    payload[1] = (u8::from(end) << 7) | (event.volume & 0x3F);
                    payload[2..4].copy_from_slice(&duration.to_be_bytes());
                    (event.payload_type, event.timestamp, marker)
                }
            };
            rtp.set_payload_type(payload_type);
            rtp.set_timestamp(timestamp);
            rtp.set_marker(marker);
        }

        stream.seq = stream.seq.wrapping_add(1);
        stream.slot = stream.slot.saturating_add(1);
        stream.marker = false;
        stream.discont = false;
        Ok(buffer)
    }
}

#[glib::object_subclass]
impl ObjectSubclass for RtpKeepaliveSrc {
    const NAME: &'static str = "SipcastRtpKeepaliveSrc";
    type Type = super::RtpKeepaliveSrc;
    type ParentType = gst_base::PushSrc;
}

impl ObjectImpl for RtpKeepaliveSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder(PROP_ENCODING_NAME)
                    .nick("Encoding name")
                    .blurb("Audio encoding: PCMU or PCMA (anything else is refused)")
                    .default_value(Some(DEFAULT_ENCODING.name()))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder(PROP_PAYLOAD_TYPE)
                    .nick("Payload type")
                    .blurb("RTP payload type of the audio packets")
                    .maximum(MAX_PAYLOAD_TYPE)
                    .default_value(DEFAULT_PAYLOAD_TYPE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder(PROP_CLOCK_RATE)
                    .nick("Clock rate")
                    .blurb("RTP clock rate in Hz (PCMU/PCMA: 8000)")
                    .minimum(MIN_CLOCK_RATE)
                    .maximum(MAX_CLOCK_RATE)
                    .default_value(DEFAULT_CLOCK_RATE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder(PROP_PTIME)
                    .nick("Packet time")
                    .blurb("Milliseconds of audio per packet")
                    .minimum(MIN_PTIME)
                    .maximum(MAX_PTIME)
                    .default_value(DEFAULT_PTIME)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder(PROP_SSRC)
                    .nick("SSRC")
                    .blurb("RTP SSRC (4294967295 = random at each start)")
                    .default_value(DEFAULT_SSRC)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder(PROP_DTMF_PAYLOAD_TYPE)
                    .nick("DTMF payload type")
                    .blurb("RTP payload type of telephone-event (RFC 4733) packets")
                    .minimum(MIN_DTMF_PAYLOAD_TYPE)
                    .maximum(MAX_DTMF_PAYLOAD_TYPE)
                    .default_value(DEFAULT_DTMF_PAYLOAD_TYPE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder(PROP_DTMF_VOLUME)
                    .nick("DTMF volume")
                    .blurb("Power level of DTMF events in -dBm0 (RFC 4733 volume field)")
                    .maximum(MAX_DTMF_VOLUME)
                    .default_value(DEFAULT_DTMF_VOLUME)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder(PROP_PACKETS_PER_PUSH)
                    .nick("Packets per push")
                    .blurb("Packets pushed together as one buffer list, once per that many packet times")
                    .minimum(1)
                    .maximum(MAX_PACKETS_PER_PUSH)
                    .default_value(DEFAULT_PACKETS_PER_PUSH)
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![glib::subclass::Signal::builder(SIGNAL_SEND_DTMF)
                .param_types([String::static_type(), u32::static_type()])
                .return_type::<bool>()
                .action()
                .class_handler(|args| {
                    // GObject has checked the argument types; still, nothing
                    // here may panic on what a caller passes.
                    let Some(element) = args
                        .first()
                        .and_then(|v| v.get::<super::RtpKeepaliveSrc>().ok())
                    else {
                        return Some(false.to_value());
                    };
                    let imp = element.imp();
                    let digits = args.get(1).and_then(|v| v.get::<Option<String>>().ok());
                    let duration_ms = args.get(2).and_then(|v| v.get::<u32>().ok());
                    let queued = match (digits, duration_ms) {
                        (Some(Some(digits)), Some(duration_ms)) => {
                            imp.queue_dtmf(&digits, duration_ms)
                        }
                        _ => {
                            gst::warning!(CAT, imp = imp, "send-dtmf: missing digits");
                            false
                        }
                    };
                    Some(queued.to_value())
                })
                .build()]
        });
        SIGNALS.as_ref()
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_live(true);
        obj.set_format(gst::Format::Time);
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let name = pspec.name();
        let mut settings = self.settings.lock().unwrap();

        let ready_only = matches!(
            name,
            PROP_ENCODING_NAME
                | PROP_PAYLOAD_TYPE
                | PROP_CLOCK_RATE
                | PROP_PTIME
                | PROP_SSRC
                | PROP_PACKETS_PER_PUSH
        );
        if ready_only && self.is_started() {
            gst::warning!(
                CAT,
                imp = self,
                "Property {name} can only be changed in the NULL or READY state, keeping it"
            );
            return;
        }

        if name == PROP_ENCODING_NAME {
            let requested = value.get::<Option<String>>().ok().flatten();
            match requested.as_deref().and_then(Encoding::from_name) {
                Some(encoding) => {
                    gst::info!(
                        CAT,
                        imp = self,
                        "Changing encoding-name from {} to {}",
                        settings.encoding.name(),
                        encoding.name()
                    );
                    settings.encoding = encoding;
                }
                None => {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "Unsupported encoding-name {requested:?} (PCMU or PCMA), keeping {}",
                        settings.encoding.name()
                    );
                }
            }
            return;
        }

        // All other properties are u32 whose range GLib has already checked.
        let Ok(v) = value.get::<u32>() else {
            gst::warning!(CAT, imp = self, "Ignoring value of wrong type for {name}");
            return;
        };
        let field = match name {
            PROP_PAYLOAD_TYPE => &mut settings.payload_type,
            PROP_CLOCK_RATE => &mut settings.clock_rate,
            PROP_PTIME => &mut settings.ptime,
            PROP_SSRC => &mut settings.ssrc,
            PROP_DTMF_PAYLOAD_TYPE => &mut settings.dtmf_payload_type,
            PROP_DTMF_VOLUME => &mut settings.dtmf_volume,
            PROP_PACKETS_PER_PUSH => &mut settings.packets_per_push,
            _ => {
                gst::warning!(CAT, imp = self, "Unknown property {name}");
                return;
            }
        };
        gst::info!(CAT, imp = self, "Changing {name} from {} to {v}", *field);
        *field = v;
        let encoding = settings.encoding;
        let payload_type = settings.payload_type;
        drop(settings);

        if name == PROP_PAYLOAD_TYPE {
            if let Some(pt) = encoding.static_payload_type() {
                if pt != payload_type && payload_type < 96 {
                    gst::info!(
                        CAT,
                        imp = self,
                        "payload-type {payload_type} is not the static type {pt} of {}",
                        encoding.name()
                    );
                }
            }
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        match pspec.name() {
            PROP_ENCODING_NAME => settings.encoding.name().to_value(),
            PROP_PAYLOAD_TYPE => settings.payload_type.to_value(),
            PROP_CLOCK_RATE => settings.clock_rate.to_value(),
            PROP_PTIME => settings.ptime.to_value(),
            PROP_SSRC => settings.ssrc.to_value(),
            PROP_DTMF_PAYLOAD_TYPE => settings.dtmf_payload_type.to_value(),
            PROP_DTMF_VOLUME => settings.dtmf_volume.to_value(),
            PROP_PACKETS_PER_PUSH => settings.packets_per_push.to_value(),
            // GObject only calls this for the properties declared above.
            _ => pspec.default_value().clone(),
        }
    }
}

impl GstObjectImpl for RtpKeepaliveSrc {}

impl ElementImpl for RtpKeepaliveSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "RTP keep-alive source",
                "Source/Audio/Network/RTP",
                "Live RTP stream of encoded silence (PCMU/PCMA) with RFC 4733 DTMF, \
                 to keep a SIP peer's media path alive",
                "sipcast developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst::Caps::builder("application/x-rtp")
                .field("media", "audio")
                .field(
                    "clock-rate",
                    gst::IntRange::new(MIN_CLOCK_RATE as i32, MAX_CLOCK_RATE as i32),
                )
                .field(
                    "encoding-name",
                    gst::List::new([Encoding::Pcmu.name(), Encoding::Pcma.name()]),
                )
                .field("payload", gst::IntRange::new(0, MAX_PAYLOAD_TYPE as i32))
                .build();
            let src_pad_template = gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &caps,
            )
            .expect("static pad template is valid");
            vec![src_pad_template]
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseSrcImpl for RtpKeepaliveSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        // Hold the settings while starting, so that no READY-only property
        // can change between the check and the state switch.
        let settings = self.settings.lock().unwrap();
        settings.validate().map_err(|msg| {
            gst::error!(CAT, imp = self, "Invalid configuration: {msg}");
            gst::error_msg!(
                gst::LibraryError::Settings,
                ["Invalid configuration: {}", msg]
            )
        })?;
        let stream = Stream::new(&settings);
        gst::info!(
            CAT,
            imp = self,
            "Started: {} pt {} ssrc {:#010x} seq {} ts {} ({} samples per packet)",
            stream.encoding.name(),
            stream.payload_type,
            stream.ssrc,
            stream.seqnum_offset,
            stream.timestamp_offset,
            stream.samples_per_packet
        );
        *self.state.lock().unwrap() = State::Started(Box::new(stream));
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let mut state = self.state.lock().unwrap();
        if let State::Started(stream) = &mut *state {
            if let Some(clock_id) = stream.clock_id.take() {
                clock_id.unschedule();
            }
        }
        *state = State::Stopped;
        let dropped = {
            let mut queue = self.dtmf_queue.lock().unwrap();
            let n = queue.len();
            queue.clear();
            n
        };
        drop(state);
        gst::info!(
            CAT,
            imp = self,
            "Stopped, dropped {dropped} queued DTMF digits"
        );
        Ok(())
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn caps(&self, filter: Option<&gst::Caps>) -> Option<gst::Caps> {
        let settings = *self.settings.lock().unwrap();
        let caps = match &*self.state.lock().unwrap() {
            State::Started(stream) => stream.caps(),
            State::Stopped => settings.caps(),
        };
        Some(match filter {
            Some(filter) => filter.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
            None => caps,
        })
    }

    fn query(&self, query: &mut gst::QueryRef) -> bool {
        match query.view_mut() {
            gst::QueryViewMut::Latency(q) => {
                let settings = *self.settings.lock().unwrap();
                let ptime = match &*self.state.lock().unwrap() {
                    State::Started(stream) => stream.ptime,
                    State::Stopped => gst::ClockTime::from_mseconds(u64::from(settings.ptime)),
                };
                // A packet is pushed at the end of the interval it covers, or of the last packet's
                // interval when several go together.
                let latency = ptime * u64::from(settings.packets_per_push.max(1));
                gst::debug!(CAT, imp = self, "Returning latency {latency}");
                q.set(true, latency, gst::ClockTime::NONE);
                true
            }
            _ => BaseSrcImplExt::parent_query(self, query),
        }
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        gst::debug!(CAT, imp = self, "Unlocking");
        if let State::Started(stream) = &mut *self.state.lock().unwrap() {
            stream.flushing = true;
            if let Some(clock_id) = stream.clock_id.take() {
                clock_id.unschedule();
            }
        }
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        gst::debug!(CAT, imp = self, "Unlock stop");
        if let State::Started(stream) = &mut *self.state.lock().unwrap() {
            stream.flushing = false;
        }
        Ok(())
    }
}

impl PushSrcImpl for RtpKeepaliveSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        // DTMF payload type and volume may change while playing; a digit uses
        // the values current when it starts.
        let settings = *self.settings.lock().unwrap();
        let packets = u64::from(settings.packets_per_push.max(1));
        let obj = self.obj();
        let clock = Option::zip(obj.clock(), obj.base_time());

        // Wait first, then build the packet: a wait cut short by a flush or
        // a state change leaves the stream (sequence numbers, DTMF progress)
        // untouched.
        let clock_id = {
            let mut state = self.state.lock().unwrap();
            let State::Started(stream) = &mut *state else {
                gst::debug!(CAT, imp = self, "Not started");
                return Err(gst::FlowError::Flushing);
            };
            if stream.flushing {
                gst::debug!(CAT, imp = self, "Flushing");
                return Err(gst::FlowError::Flushing);
            }

            match &clock {
                Some((clock, base_time)) => {
                    let now = clock.time().saturating_sub(*base_time);
                    match stream.anchor {
                        None => {
                            // Start at the current running time, so that an
                            // element added to a running pipeline does not
                            // burst packets from running time zero.
                            gst::debug!(CAT, imp = self, "First packet at running time {now}");
                            stream.anchor = Some((stream.slot, now));
                        }
                        Some((anchor_slot, anchor_time)) => {
                            let slot_start = stream.slot_running_time(stream.slot);
                            let slot_end = stream.slot_running_time(stream.slot.saturating_add(1));
                            if now > slot_end.saturating_add(MAX_LATENESS) {
                                // Fell behind (stalled thread): skip ahead
                                // instead of bursting. RTP timestamps jump,
                                // sequence numbers stay contiguous.
                                let behind =
                                    (now - anchor_time).nseconds() / stream.ptime.nseconds().max(1);
                                let slot = anchor_slot.saturating_add(behind);
                                gst::warning!(
                                    CAT,
                                    imp = self,
                                    "Running {} late, skipping {} packets",
                                    now - slot_end,
                                    slot.saturating_sub(stream.slot)
                                );
                                stream.slot = slot;
                                stream.discont = true;
                            } else if now.saturating_add(MAX_LATENESS) < slot_start {
                                // The running time went backwards (new base
                                // time or clock): follow it instead of
                                // waiting for the old running time.
                                gst::warning!(
                                    CAT,
                                    imp = self,
                                    "Running time went back from {slot_start} to {now}, re-anchoring"
                                );
                                stream.anchor = Some((stream.slot, now));
                                stream.discont = true;
                            }
                        }
                    }
                    let wait_until = stream
                        .slot_running_time(stream.slot.saturating_add(packets))
                        .saturating_add(*base_time);
                    let id = clock.new_single_shot_id(wait_until);
                    stream.clock_id = Some(id.clone());
                    gst::log!(
                        CAT,
                        imp = self,
                        "Waiting until {wait_until}, now {}",
                        clock.time()
                    );
                    Some(id)
                }
                None => {
                    stream
                        .anchor
                        .get_or_insert((stream.slot, gst::ClockTime::ZERO));
                    None
                }
            }
        };

        let waited = clock_id.map(|id| id.wait());

        let mut state = self.state.lock().unwrap();
        let State::Started(stream) = &mut *state else {
            return Err(gst::FlowError::Flushing);
        };
        stream.clock_id = None;
        if let Some((res, jitter)) = waited {
            gst::log!(CAT, imp = self, "Waited res {res:?} jitter {jitter}");
            if res == Err(gst::ClockError::Unscheduled) || stream.flushing {
                gst::debug!(CAT, imp = self, "Flushing");
                return Err(gst::FlowError::Flushing);
            }
        }

        if packets == 1 {
            let buffer = self.make_packet(stream, &settings)?;
            gst::log!(CAT, imp = self, "Produced {buffer:?}");
            return Ok(CreateSuccess::NewBuffer(buffer));
        }
        let mut list = gst::BufferList::new_sized(packets as usize);
        {
            let list = list.get_mut().expect("a new buffer list is writable");
            for _ in 0..packets {
                list.add(self.make_packet(stream, &settings)?);
            }
        }
        gst::log!(CAT, imp = self, "Produced {packets} packets");
        Ok(CreateSuccess::NewBufferList(list))
    }
}
