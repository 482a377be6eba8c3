// SPDX-License-Identifier: MPL-2.0

//! Tests of `rtpkeepalivesrc`: harness tests on a test clock (synthetic time,
//! no timed assertions) and one real `udpsink` pipeline to 127.0.0.1.

use gst::glib;
use gst::prelude::*;
use gst_base::prelude::*;
use gst_check::Harness;
use sipcastkeepalive::RtpKeepaliveSrc;

use std::net::UdpSocket;
use std::sync::Once;
use std::time::{Duration, Instant};

const MS: gst::ClockTime = gst::ClockTime::MSECOND;

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        sipcastkeepalive::plugin_register_static().expect("plugin registers");
    });
}

/// A harness around a fresh element with `props` set, on a test clock,
/// PLAYING.
fn harness(props: &[(&str, glib::Value)]) -> Harness {
    init();
    let mut h = Harness::new("rtpkeepalivesrc");
    let element = h.element().unwrap();
    for (name, value) in props {
        element.set_property_from_value(name, value);
    }
    h.use_testclock();
    h.play();
    h
}

/// Lets the element's next clock wait complete and returns its packet.
fn next_packet(h: &mut Harness) -> Packet {
    h.crank_single_clock_wait()
        .expect("element waits on the clock");
    Packet::parse(&h.pull().expect("element pushes a buffer"))
}

fn pull_packets(h: &mut Harness, n: usize) -> Vec<Packet> {
    (0..n).map(|_| next_packet(h)).collect()
}

#[derive(Debug, Clone)]
struct Packet {
    version: u8,
    padding: bool,
    extension: bool,
    csrc_count: u8,
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: Vec<u8>,
    pts: Option<gst::ClockTime>,
    duration: Option<gst::ClockTime>,
    discont: bool,
}

impl Packet {
    fn parse(buffer: &gst::Buffer) -> Packet {
        let first_byte = buffer.map_readable().unwrap()[0];
        let rtp = gst_rtp::RTPBuffer::from_buffer_readable(buffer).expect("valid RTP");
        Packet {
            version: first_byte >> 6,
            padding: rtp.has_padding(),
            extension: rtp.is_extension(),
            csrc_count: rtp.csrc_count(),
            marker: rtp.is_marker(),
            pt: rtp.payload_type(),
            seq: rtp.seq(),
            ts: rtp.timestamp(),
            ssrc: rtp.ssrc(),
            payload: rtp.payload().unwrap().to_vec(),
            pts: buffer.pts(),
            duration: buffer.duration(),
            discont: buffer.flags().contains(gst::BufferFlags::DISCONT),
        }
    }

    fn parse_bytes(data: &[u8]) -> Packet {
        let buffer = gst::Buffer::from_slice(data.to_vec());
        Packet::parse(&buffer)
    }

    /// RFC 4733 fields of a telephone-event payload: (event, end, volume,
    /// duration).
    fn event(&self) -> (u8, bool, u8, u16) {
        assert_eq!(self.payload.len(), 4, "telephone-event payload is 4 bytes");
        assert_eq!(self.payload[1] & 0x40, 0, "R bit is zero");
        (
            self.payload[0],
            self.payload[1] & 0x80 != 0,
            self.payload[1] & 0x3F,
            u16::from_be_bytes([self.payload[2], self.payload[3]]),
        )
    }
}

/// Common header checks of a stream of packets: RTP version 2 without
/// padding, extension or CSRCs, one SSRC, consecutive sequence numbers.
fn check_stream(packets: &[Packet]) {
    for p in packets {
        assert_eq!(p.version, 2);
        assert!(!p.padding && !p.extension);
        assert_eq!(p.csrc_count, 0);
        assert_eq!(p.ssrc, packets[0].ssrc, "SSRC constant");
    }
    for w in packets.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "consecutive seq");
    }
}

fn check_silence(packets: &[Packet], pt: u8, byte: u8, samples: u32, ptime: gst::ClockTime) {
    check_stream(packets);
    for (i, p) in packets.iter().enumerate() {
        assert_eq!(p.pt, pt);
        assert_eq!(p.payload.len(), samples as usize);
        assert!(p.payload.iter().all(|&b| b == byte), "payload is silence");
        assert_eq!(
            p.ts,
            packets[0].ts.wrapping_add(samples * i as u32),
            "timestamp step"
        );
        assert_eq!(p.pts, Some(ptime * i as u64), "PTS");
        assert_eq!(p.duration, Some(ptime));
        // Only the first packet of the stream starts a talkspurt.
        assert_eq!(p.marker, i == 0, "marker on packet {i}");
    }
}

#[test]
fn pcmu_defaults_send_20ms_packets_of_ff() {
    let mut h = harness(&[]);
    let packets = pull_packets(&mut h, 10);
    check_silence(&packets, 0, 0xFF, 160, 20 * MS);
}

#[test]
fn pcma_sends_d5() {
    let mut h = harness(&[
        ("encoding-name", "PCMA".to_value()),
        ("payload-type", 8u32.to_value()),
    ]);
    let packets = pull_packets(&mut h, 6);
    check_silence(&packets, 8, 0xD5, 160, 20 * MS);
}

#[test]
fn ptime_sets_packet_size_timestamp_step_and_latency() {
    let mut h = harness(&[("ptime", 30u32.to_value())]);
    let packets = pull_packets(&mut h, 5);
    check_silence(&packets, 0, 0xFF, 240, 30 * MS);
    assert_eq!(h.query_latency(), Some(30 * MS));

    let mut h = harness(&[("ptime", 10u32.to_value())]);
    let packets = pull_packets(&mut h, 5);
    check_silence(&packets, 0, 0xFF, 80, 10 * MS);
    assert_eq!(h.query_latency(), Some(10 * MS));
}

#[test]
fn packets_per_push_sends_consecutive_packets_together_at_the_last_ones_end() {
    let mut h = harness(&[("packets-per-push", 5u32.to_value())]);
    assert_eq!(h.query_latency(), Some(100 * MS));
    let mut packets = Vec::new();
    for burst in 1..=3u64 {
        // One clock wait per burst, until the end of its last packet's interval.
        let clock = h.testclock().unwrap();
        clock.wait_for_next_pending_id();
        let pending = clock
            .peek_next_pending_id()
            .expect("a clock wait is pending");
        assert_eq!(
            pending.time(),
            burst * 100 * MS,
            "burst {burst} is due after its 5 packets"
        );
        h.crank_single_clock_wait().unwrap();
        for _ in 0..5 {
            packets.push(Packet::parse(&h.pull().expect("burst packet")));
        }
        assert!(h.try_pull().is_none(), "exactly 5 packets per burst");
    }
    // The same stream as one packet per push: consecutive sequence numbers and timestamps, PTS per packet.
    check_silence(&packets, 0, 0xFF, 160, 20 * MS);
}

#[test]
fn caps_describe_the_stream() {
    let mut h = harness(&[
        ("encoding-name", "PCMA".to_value()),
        ("payload-type", 8u32.to_value()),
    ]);
    let first = next_packet(&mut h);
    let caps = h.sinkpad().unwrap().current_caps().expect("negotiated");
    assert!(caps.is_fixed());
    let s = caps.structure(0).unwrap();
    assert_eq!(s.name(), "application/x-rtp");
    assert_eq!(s.get::<&str>("media").unwrap(), "audio");
    assert_eq!(s.get::<&str>("encoding-name").unwrap(), "PCMA");
    assert_eq!(s.get::<i32>("payload").unwrap(), 8);
    assert_eq!(s.get::<i32>("clock-rate").unwrap(), 8000);
    assert_eq!(s.get::<u32>("ssrc").unwrap(), first.ssrc);
    assert_eq!(s.get::<u32>("seqnum-offset").unwrap(), u32::from(first.seq));
    assert_eq!(s.get::<u32>("timestamp-offset").unwrap(), first.ts);
}

#[test]
fn ssrc_property_is_used() {
    let mut h = harness(&[("ssrc", 0xDEAD_BEEFu32.to_value())]);
    let packets = pull_packets(&mut h, 4);
    check_stream(&packets);
    assert!(packets.iter().all(|p| p.ssrc == 0xDEAD_BEEF));
}

#[test]
fn ssrc_seq_and_timestamp_start_at_random_values() {
    let firsts: Vec<Packet> = (0..3).map(|_| next_packet(&mut harness(&[]))).collect();
    let all_equal = |f: fn(&Packet) -> u32| firsts.iter().all(|p| f(p) == f(&firsts[0]));
    // Each check fails by chance with probability 2^-64 (2^-32 for seq).
    assert!(!all_equal(|p| p.ssrc), "random SSRC");
    assert!(
        !all_equal(|p| u32::from(p.seq)),
        "random first sequence number"
    );
    assert!(!all_equal(|p| p.ts), "random first timestamp");
}

#[test]
fn first_packet_starts_at_current_running_time() {
    // As if added to a pipeline that has been running for 10 s: no burst of
    // packets from running time zero.
    init();
    let mut h = Harness::new("rtpkeepalivesrc");
    h.use_testclock();
    h.set_time(gst::ClockTime::from_seconds(10)).unwrap();
    h.play();
    let packets = pull_packets(&mut h, 3);
    assert_eq!(packets[0].pts, Some(gst::ClockTime::from_seconds(10)));
    assert_eq!(
        packets[2].pts,
        Some(gst::ClockTime::from_seconds(10) + 40 * MS)
    );
    check_stream(&packets);
}

#[test]
fn skips_ahead_after_a_stall() {
    let mut h = harness(&[]);
    let mut packets = pull_packets(&mut h, 2);
    // Once the element waits for slot 2, the clock jumps ~3 s ahead, as if
    // the streaming thread had stalled.
    h.wait_for_clock_id_waits(1, 60).unwrap();
    h.set_time(gst::ClockTime::from_seconds(3)).unwrap();
    packets.push(next_packet(&mut h)); // slot 2, already waited on
    packets.push(next_packet(&mut h)); // skipped ahead
    check_stream(&packets);
    assert_eq!(packets[2].pts, Some(40 * MS));
    assert!(!packets[2].discont);
    let skipped = &packets[3];
    assert_eq!(skipped.pts, Some(gst::ClockTime::from_seconds(3)));
    assert!(skipped.discont);
    // 3 s = 150 slots of 160 samples after the first packet.
    assert_eq!(skipped.ts, packets[0].ts.wrapping_add(150 * 160));
}

#[test]
fn follows_running_time_going_back() {
    // Started 10 s into the clock with base time 0, then re-based (as when a
    // pipeline changes its base time): running time drops from ~10 s to ~0.
    init();
    let mut h = Harness::new("rtpkeepalivesrc");
    h.use_testclock();
    h.set_time(gst::ClockTime::from_seconds(10)).unwrap();
    h.play();
    let mut packets = pull_packets(&mut h, 2);
    h.wait_for_clock_id_waits(1, 60).unwrap();
    h.element()
        .unwrap()
        .set_base_time(gst::ClockTime::from_seconds(10));
    packets.extend(pull_packets(&mut h, 2));
    check_stream(&packets);
    // Slot 2 was already waited for under the old base time.
    assert_eq!(
        packets[2].pts,
        Some(gst::ClockTime::from_seconds(10) + 40 * MS)
    );
    // Slot 3 follows the new running time instead of waiting ~10 s.
    assert_eq!(packets[3].pts, Some(60 * MS));
    assert!(packets[3].discont);
    assert_eq!(packets[3].ts, packets[0].ts.wrapping_add(3 * 160));
}

#[test]
fn dtmf_sends_rfc4733_events() {
    let mut h = harness(&[("dtmf-volume", 45u32.to_value())]);
    let mut packets = pull_packets(&mut h, 2);
    let element = h.element().unwrap();
    let queued: bool = element.emit_by_name("send-dtmf", &[&"1#", &100u32]);
    assert!(queued);
    // 2 silence, '1': 7 packets, gap: 2 silence, '#': 7 packets, 3 silence.
    packets.extend(pull_packets(&mut h, 19));
    check_stream(&packets);

    let ts0 = packets[0].ts;
    let slot_ts = |i: usize| ts0.wrapping_add(160 * i as u32);
    let kinds: Vec<bool> = packets.iter().map(|p| p.pt == 101).collect();
    let expected: Vec<bool> = [
        vec![false; 2],
        vec![true; 7],
        vec![false; 2],
        vec![true; 7],
        vec![false; 3],
    ]
    .concat();
    assert_eq!(kinds, expected, "silence/event pattern");

    for (i, p) in packets.iter().enumerate() {
        if p.pt != 101 {
            // Silence keeps the timestamps of its slot, as if never
            // interrupted.
            assert_eq!(p.pt, 0);
            assert_eq!(p.payload.len(), 160);
            assert_eq!(p.ts, slot_ts(i), "silence timestamp at {i}");
            assert_eq!(p.marker, i == 0);
        }
    }

    for (start, code) in [(2usize, 1u8), (11, 11)] {
        let event = &packets[start..start + 7];
        let fields: Vec<_> = event.iter().map(Packet::event).collect();
        for (j, (p, &(ev, end, volume, _))) in event.iter().zip(&fields).enumerate() {
            assert_eq!(ev, code);
            assert_eq!(volume, 45);
            assert_eq!(p.ts, slot_ts(start), "event timestamp is its start");
            assert_eq!(p.marker, j == 0, "marker only on the first");
            assert_eq!(end, j >= 4, "E bit on the last three");
        }
        let durations: Vec<u16> = fields.iter().map(|f| f.3).collect();
        assert_eq!(durations, [160, 320, 480, 640, 800, 800, 800]);
        assert_eq!(event[0].pts, Some(20 * MS * start as u64));
    }
    // The pattern above has 2 x 20 ms of silence between the last end packet
    // of '1' and the first packet of '#': the 40 ms inter-digit gap.
}

#[test]
fn dtmf_queued_before_start_and_short_digit_fits_one_packet() {
    init();
    let mut h = Harness::new("rtpkeepalivesrc");
    let element = h.element().unwrap().downcast::<RtpKeepaliveSrc>().unwrap();
    element.set_property("ptime", 60u32);
    element.set_property("dtmf-payload-type", 96u32);
    assert!(element.send_dtmf("D", 40));
    h.use_testclock();
    h.play();
    let packets = pull_packets(&mut h, 5);
    check_stream(&packets);
    // 40 ms < ptime: one update that is also the end, sent three times.
    for p in &packets[..3] {
        assert_eq!(p.pt, 96);
        assert_eq!(p.event(), (15, true, 10, 320));
        assert_eq!(p.ts, packets[0].ts);
    }
    assert!(packets[0].marker && !packets[1].marker && !packets[2].marker);
    // One 60 ms silence packet is enough of a gap; it takes slot 3.
    assert_eq!(packets[3].pt, 0);
    assert_eq!(packets[3].payload.len(), 480);
    assert_eq!(packets[3].ts, packets[0].ts.wrapping_add(3 * 480));
}

#[test]
fn invalid_dtmf_is_refused_and_queues_nothing() {
    let mut h = harness(&[]);
    let element = h.element().unwrap();
    let send =
        |digits: &str, ms: u32| -> bool { element.emit_by_name("send-dtmf", &[&digits, &ms]) };
    assert!(!send("12x", 100), "invalid character");
    assert!(!send("1 2", 100), "space");
    assert!(!send("E", 100), "E is not a DTMF digit");
    assert!(!send("", 100), "empty");
    assert!(!send("1", 39), "too short");
    assert!(!send("1", 8001), "too long");
    assert!(!send("1", u32::MAX), "way too long");
    let none: Option<&str> = None;
    let queued: bool = element.emit_by_name("send-dtmf", &[&none, &100u32]);
    assert!(!queued, "NULL digits");

    let packets = pull_packets(&mut h, 10);
    assert!(packets.iter().all(|p| p.pt == 0), "nothing was queued");

    // The element does send a valid digit (so the check above means
    // something), including the limits of the ranges and lower-case A-D.
    assert!(send("5", 40));
    assert!(send("a", 8000));
    let p = next_packet(&mut h);
    assert_eq!(p.pt, 101);
    assert_eq!(p.event().0, 5);

    // The queue holds at most 256 digits, all or nothing.
    let element = h.element().unwrap();
    let many = "1".repeat(255); // 'a' is still queued
    assert!(element.emit_by_name::<bool>("send-dtmf", &[&many.as_str(), &40u32]));
    assert!(!element.emit_by_name::<bool>("send-dtmf", &[&"12", &40u32]));
}

#[test]
fn property_defaults_and_ranges() {
    init();
    let element = gst::ElementFactory::make("rtpkeepalivesrc")
        .build()
        .unwrap();
    assert!(element.is::<RtpKeepaliveSrc>());
    assert!(element
        .downcast_ref::<gst_base::BaseSrc>()
        .unwrap()
        .is_live());

    assert_eq!(element.property::<String>("encoding-name"), "PCMU");
    let uint = |name: &str| -> (u32, u32, u32, u32) {
        let pspec = element.find_property(name).unwrap();
        let p = pspec.downcast_ref::<glib::ParamSpecUInt>().unwrap();
        (
            element.property::<u32>(name),
            p.default_value(),
            p.minimum(),
            p.maximum(),
        )
    };
    assert_eq!(uint("payload-type"), (0, 0, 0, 127));
    assert_eq!(uint("clock-rate"), (8000, 8000, 1, 192_000));
    assert_eq!(uint("ptime"), (20, 20, 10, 120));
    assert_eq!(uint("ssrc"), (u32::MAX, u32::MAX, 0, u32::MAX));
    assert_eq!(uint("dtmf-payload-type"), (101, 101, 96, 127));
    assert_eq!(uint("dtmf-volume"), (10, 10, 0, 63));

    // READY-only properties carry the flag that says so.
    for name in [
        "encoding-name",
        "payload-type",
        "clock-rate",
        "ptime",
        "ssrc",
    ] {
        let flags = element.find_property(name).unwrap().flags();
        assert!(flags.contains(gst::PARAM_FLAG_MUTABLE_READY), "{name}");
    }
    for name in ["dtmf-payload-type", "dtmf-volume"] {
        let flags = element.find_property(name).unwrap().flags();
        assert!(flags.contains(gst::PARAM_FLAG_MUTABLE_PLAYING), "{name}");
    }

    // Out-of-range values from a launch line are refused by GLib (with a
    // warning) and the defaults kept.
    let element = gst::parse::launch(
        "rtpkeepalivesrc payload-type=128 ptime=9 dtmf-volume=64 dtmf-payload-type=95",
    )
    .unwrap();
    assert_eq!(element.property::<u32>("payload-type"), 0);
    assert_eq!(element.property::<u32>("ptime"), 20);
    assert_eq!(element.property::<u32>("dtmf-volume"), 10);
    assert_eq!(element.property::<u32>("dtmf-payload-type"), 101);
}

#[test]
fn encoding_name_accepts_only_pcmu_and_pcma() {
    init();
    let element = gst::ElementFactory::make("rtpkeepalivesrc")
        .build()
        .unwrap();
    element.set_property("encoding-name", "OPUS");
    assert_eq!(element.property::<String>("encoding-name"), "PCMU");
    element.set_property("encoding-name", "pcma");
    assert_eq!(element.property::<String>("encoding-name"), "PCMA");
    element.set_property("encoding-name", None::<&str>);
    assert_eq!(element.property::<String>("encoding-name"), "PCMA");
    element.set_property("encoding-name", "");
    assert_eq!(element.property::<String>("encoding-name"), "PCMA");
    element.set_property("encoding-name", "PCMU");
    assert_eq!(element.property::<String>("encoding-name"), "PCMU");
}

#[test]
fn ready_only_properties_are_kept_while_playing() {
    let mut h = harness(&[]);
    let first = next_packet(&mut h);
    let element = h.element().unwrap();
    element.set_property("encoding-name", "PCMA");
    element.set_property("payload-type", 8u32);
    element.set_property("ptime", 30u32);
    element.set_property("clock-rate", 16000u32);
    element.set_property("ssrc", 1u32);
    assert_eq!(element.property::<String>("encoding-name"), "PCMU");
    assert_eq!(element.property::<u32>("payload-type"), 0);
    assert_eq!(element.property::<u32>("ptime"), 20);
    assert_eq!(element.property::<u32>("clock-rate"), 8000);
    assert_eq!(element.property::<u32>("ssrc"), u32::MAX);
    // DTMF settings may change while playing.
    element.set_property("dtmf-volume", 3u32);
    element.set_property("dtmf-payload-type", 100u32);
    assert_eq!(element.property::<u32>("dtmf-volume"), 3);
    assert_eq!(element.property::<u32>("dtmf-payload-type"), 100);

    let mut packets = vec![first];
    packets.extend(pull_packets(&mut h, 3));
    check_silence(&packets, 0, 0xFF, 160, 20 * MS);

    // Back in READY the same changes are taken.
    h.element().unwrap().set_state(gst::State::Ready).unwrap();
    element.set_property("encoding-name", "PCMA");
    element.set_property("ptime", 30u32);
    assert_eq!(element.property::<String>("encoding-name"), "PCMA");
    assert_eq!(element.property::<u32>("ptime"), 30);
}

#[test]
fn inconsistent_settings_fail_to_start_with_an_error() {
    init();
    for launch in [
        // DTMF payload type equal to the audio one.
        "rtpkeepalivesrc payload-type=101 ! fakesink",
        // PCMU needs an 8 kHz clock.
        "rtpkeepalivesrc clock-rate=16000 ! fakesink",
    ] {
        let pipeline = gst::parse::launch(launch).unwrap();
        assert!(pipeline.set_state(gst::State::Paused).is_err(), "{launch}");
        let bus = pipeline.bus().unwrap();
        let msg = bus
            .pop_filtered(&[gst::MessageType::Error])
            .expect("error message");
        let gst::MessageView::Error(err) = msg.view() else {
            unreachable!()
        };
        assert!(
            err.error().matches(gst::LibraryError::Settings),
            "{launch}: {err:?}"
        );
        pipeline.set_state(gst::State::Null).unwrap();
    }

    // The same element with a consistent configuration starts.
    let pipeline = gst::parse::launch(
        "rtpkeepalivesrc encoding-name=PCMA payload-type=8 clock-rate=8000 ! fakesink",
    )
    .unwrap();
    assert!(pipeline.set_state(gst::State::Paused).is_ok());
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn udpsink_pipeline_delivers_packets_to_localhost() {
    init();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();

    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("rtpkeepalivesrc")
        .property_from_str("encoding-name", "PCMA")
        .property("payload-type", 8u32)
        .build()
        .unwrap();
    let sink = gst::ElementFactory::make("udpsink")
        .property("host", "127.0.0.1")
        .property("port", i32::from(port))
        .build()
        .unwrap();
    pipeline.add_many([&src, &sink]).unwrap();
    src.link(&sink).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    assert!(src.emit_by_name::<bool>("send-dtmf", &[&"5", &60u32]));

    let mut audio = 0;
    let mut end_packets = 0;
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline && (audio < 10 || end_packets < 3) {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let p = Packet::parse_bytes(&buf[..n]);
                match p.pt {
                    8 => {
                        assert_eq!(p.payload, [0xD5; 160]);
                        audio += 1;
                    }
                    101 => {
                        let (code, end, _, _) = p.event();
                        assert_eq!(code, 5);
                        end_packets += usize::from(end);
                    }
                    pt => panic!("unexpected payload type {pt}"),
                }
                received.push(p);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();

    assert!(audio >= 10, "only {audio} audio packets in 2 s");
    assert_eq!(end_packets, 3, "three end packets of the DTMF event");
    check_stream(&received);
}

#[test]
fn plugin_registration_is_idempotent() {
    init();
    // A second call (e.g. from a second gateway component) is harmless.
    assert!(sipcastkeepalive::plugin_register_static().is_ok());
    let factory = gst::ElementFactory::find("rtpkeepalivesrc").expect("factory registered");
    assert_eq!(factory.plugin_name().as_deref(), Some("sipcastkeepalive"));
}
