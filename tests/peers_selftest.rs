//! Self-tests of the test-peer harness in `tests/common`, without the gateway: each proves that
//! one kind of real peer starts, does its job on loopback and is observed correctly.
mod common;

use common::peers::{
    Baresip, BaresipOptions, DtmfVia, GstPublisher, Kamailio, KamailioOptions, Nginx, OfferedVideo,
    RawSipCall, SipTraceMessage, VideoCodec, VideoSource, BARESIP_HOLD, BARESIP_RESUME,
    KAM_AUTH_FAILED, KAM_AUTH_OK, KAM_CHALLENGED, KAM_REGISTERED, KAM_RELAYED,
};
use common::probe::{
    audio_duration, ffprobe, first_video_frame_is_keyframe, test_video, tone_strength,
};
use common::wait_until;
use std::time::{Duration, Instant};

const SIP_TIMEOUT: Duration = Duration::from_secs(5);

/// nginx records a published RTMP stream as FLV; the recording holds the published tone.
#[test]
fn nginx_records_published_rtmp_stream() {
    let started = Instant::now();
    let nginx = Nginx::start();
    let stream = "selftest";
    let mut publisher =
        GstPublisher::tone(&nginx.stream_url(stream), 440, Duration::from_millis(1500));
    if !nginx.wait_for_publishing(stream, Duration::from_secs(5)) {
        nginx.fail(&format!(
            "stream never showed up as publishing in /stat:\n{}\npublisher log:\n{}",
            nginx.stat_xml(),
            publisher.log()
        ));
    }
    publisher.wait(Duration::from_secs(10));
    if !nginx.wait_for_publish_end(stream, Duration::from_secs(5)) {
        nginx.fail("stream still publishing after the publisher exited");
    }

    let recordings = nginx.recordings(stream);
    assert_eq!(recordings.len(), 1, "recordings: {recordings:?}");
    assert!(
        nginx.recordings("selftes").is_empty(),
        "prefix must not match"
    );
    let info = ffprobe(&recordings[0]);
    let audio = info.audio().expect("recording has no audio stream");
    assert_eq!(audio.codec_name, "aac", "{info:?}");
    assert_eq!(audio.sample_rate, Some(44100), "{info:?}");
    let duration = audio_duration(&recordings[0]);
    assert!(
        (1.3..1.8).contains(&duration),
        "decoded audio lasts {duration} s"
    );
    let at_440 = tone_strength(&recordings[0], 440.0);
    let at_1000 = tone_strength(&recordings[0], 1000.0);
    assert!(at_440 > 0.9, "440 Hz strength {at_440}");
    assert!(at_1000 < 0.05, "1000 Hz strength {at_1000}");
    eprintln!("nginx selftest took {:?}", started.elapsed());
}

/// A baresip caller calls an auto-answering baresip and hangs up; the callee sees the BYE.
#[test]
fn baresip_call_and_remote_bye() {
    let started = Instant::now();
    let callee = Baresip::start(BaresipOptions::new("callee"));
    let caller = Baresip::start(BaresipOptions::new("caller"));

    caller.dial(&callee.uri());
    if !callee.wait_for_established(SIP_TIMEOUT) {
        callee.fail("call not established");
    }
    if !caller.wait_for_established(SIP_TIMEOUT) {
        caller.fail("call not established");
    }
    assert_eq!(callee.active_calls(), 1);
    assert!(!callee.received_bye());

    caller.hangup();
    if !callee.wait_for_bye(SIP_TIMEOUT) {
        callee.fail("no BYE seen after the caller hung up");
    }
    assert_eq!(callee.bye_count(), 1);
    assert_eq!(callee.local_hangups(), 0);
    assert_eq!(caller.local_hangups(), 1);
    assert!(!caller.received_bye(), "the caller hung up itself");
    assert!(wait_until(SIP_TIMEOUT, || callee.active_calls() == 0));
    assert_eq!(callee.ended_calls(), 1);
    assert_eq!(callee.established_calls(), 1);
    eprintln!("baresip selftest took {:?}", started.elapsed());
}

/// kamailio relays a digest-authenticated INVITE (after a 407) to a fixed next hop, relays the
/// BYE in the dialog, and rejects a caller with a wrong password.
#[test]
fn kamailio_challenges_and_forwards_invites() {
    let started = Instant::now();
    let callee = Baresip::start(BaresipOptions::new("callee"));
    let kamailio = Kamailio::start(KamailioOptions {
        users: vec![("caller".into(), "s3cret".into())],
        forward_to: Some(callee.addr()),
        ..Default::default()
    });

    // Right password, through kamailio as outbound proxy.
    let caller = Baresip::start(BaresipOptions {
        auth_password: Some("s3cret".into()),
        outbound_proxy: Some(kamailio.addr()),
        ..BaresipOptions::new("caller")
    });
    caller.dial(&callee.uri());
    if !callee.wait_for_established(SIP_TIMEOUT) {
        kamailio.fail(&format!(
            "call through kamailio not established; caller log:\n{}",
            caller.log()
        ));
    }
    assert_eq!(kamailio.count_log(KAM_CHALLENGED), 1);
    assert_eq!(kamailio.count_log(KAM_AUTH_OK), 1);
    assert_eq!(kamailio.count_log(KAM_RELAYED), 1);
    caller.hangup();
    if !callee.wait_for_bye(SIP_TIMEOUT) {
        callee.fail("BYE not relayed by kamailio");
    }
    assert!(kamailio.log().contains("sipcast-kam: in-dialog BYE"));

    // Wrong password, Request-URI at kamailio (no outbound proxy).
    let intruder = Baresip::start(BaresipOptions {
        auth_password: Some("wrong".into()),
        ..BaresipOptions::new("caller")
    });
    intruder.dial(&kamailio.uri_for("callee"));
    let rejected = "407 Proxy Authentication Required";
    if !wait_until(SIP_TIMEOUT, || {
        intruder.closed_reasons().iter().any(|r| r == rejected)
    }) {
        intruder.fail("call with a wrong password was not rejected with 407");
    }
    assert_eq!(kamailio.count_log(KAM_AUTH_FAILED), 1);
    assert_eq!(intruder.established_calls(), 0);
    assert_eq!(callee.established_calls(), 1);
    eprintln!("kamailio proxy selftest took {:?}", started.elapsed());
}

/// kamailio as registrar: a baresip registers with digest auth (401) and is then reached through
/// kamailio by an authenticated caller.
#[test]
fn kamailio_registrar_routes_to_registered_contact() {
    let started = Instant::now();
    let kamailio = Kamailio::start(KamailioOptions {
        users: vec![
            ("callee".into(), "pw-callee".into()),
            ("caller".into(), "pw-caller".into()),
        ],
        ..Default::default()
    });
    let callee = Baresip::start(BaresipOptions {
        auth_password: Some("pw-callee".into()),
        registrar: Some(kamailio.addr()),
        ..BaresipOptions::new("callee")
    });
    if !callee.wait_for_registered(SIP_TIMEOUT) {
        kamailio.fail(&format!(
            "callee did not register; its log:\n{}",
            callee.log()
        ));
    }
    assert_eq!(kamailio.count_log(KAM_REGISTERED), 1);

    let caller = Baresip::start(BaresipOptions {
        auth_password: Some("pw-caller".into()),
        ..BaresipOptions::new("caller")
    });
    caller.dial(&kamailio.uri_for("callee"));
    if !callee.wait_for_established(SIP_TIMEOUT) {
        kamailio.fail(&format!(
            "call not routed to the registered callee; caller log:\n{}",
            caller.log()
        ));
    }
    caller.hangup();
    if !callee.wait_for_bye(SIP_TIMEOUT) {
        callee.fail("BYE not relayed by kamailio");
    }
    eprintln!("kamailio registrar selftest took {:?}", started.elapsed());
}

/// The probes measure media generated by ffmpeg: stream info, decoded duration, tone strength,
/// keyframe detection.
#[test]
fn probes_measure_generated_media() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("av.flv");
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "lavfi"])
        .args(["-i", "sine=frequency=1000:sample_rate=44100:duration=1.5"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10:duration=1.5",
        ])
        .args(["-c:v", "libx264", "-g", "5", "-c:a", "aac"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg failed to generate test media");

    let info = ffprobe(&path);
    let audio = info.audio().expect("audio stream");
    let video = info.video().expect("video stream");
    assert_eq!(
        (audio.codec_name.as_str(), audio.sample_rate),
        ("aac", Some(44100))
    );
    assert_eq!(
        (video.codec_name.as_str(), video.width, video.height),
        ("h264", Some(160), Some(120))
    );
    assert!((1.4..1.8).contains(&info.format_duration), "{info:?}");
    let duration = audio_duration(&path);
    assert!((duration - 1.5).abs() < 0.05, "decoded {duration} s");
    assert!(tone_strength(&path, 1000.0) > 0.9);
    assert!(tone_strength(&path, 440.0) < 0.05);
    assert!(first_video_frame_is_keyframe(&path));

    let audio_only = dir.path().join("a.flv");
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(&path)
        .args(["-vn", "-c:a", "copy"])
        .arg(&audio_only)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        !first_video_frame_is_keyframe(&audio_only),
        "no video, no keyframe"
    );
    eprintln!("probe selftest took {:?}", started.elapsed());
}

/// Establishes a call from `caller` to `callee`; panics with the logs if it fails.
fn establish(caller: &Baresip, callee: &Baresip) {
    caller.dial(&callee.uri());
    if !callee.wait_for_established(SIP_TIMEOUT) {
        callee.fail(&format!(
            "call not established; caller log:\n{}",
            caller.log()
        ));
    }
    if !caller.wait_for_established(SIP_TIMEOUT) {
        caller.fail("call not established");
    }
}

/// The SIP messages `peer` sent (`sent`) or received that are `method` requests.
fn requests(peer: &Baresip, sent: bool, method: &str) -> Vec<SipTraceMessage> {
    peer.sip_trace()
        .into_iter()
        .filter(|m| m.sent == sent && m.is_request(method))
        .collect()
}

/// The 2xx responses to INVITEs that `peer` sent.
fn sent_invite_answers(peer: &Baresip) -> Vec<SipTraceMessage> {
    peer.sip_trace()
        .into_iter()
        .filter(|m| m.sent && m.status() == Some(200) && m.cseq_method() == Some("INVITE"))
        .collect()
}

/// Two baresips with a video file source each place a video call with `codec`: both decode
/// the other's video, and the answer carries a sendrecv video stream with that codec.
fn video_call_both_ways(codec: VideoCodec, expected_encoder: &str, answer_rtpmap: &str) {
    let started = Instant::now();
    let video = VideoSource::File(test_video());
    let callee = Baresip::start(BaresipOptions::new("callee").with_video(video.clone(), &[codec]));
    let caller = Baresip::start(BaresipOptions::new("caller").with_video(video, &[codec]));
    establish(&caller, &callee);
    for (peer, other) in [(&callee, &caller), (&caller, &callee)] {
        if !peer.wait_for_video(SIP_TIMEOUT) {
            peer.fail(&format!(
                "no video decoded; other side's log:\n{}",
                other.log()
            ));
        }
        assert_eq!(peer.received_video_sizes(), vec![(320, 240)]);
        assert_eq!(peer.video_encoders(), vec![expected_encoder.to_string()]);
    }
    let answers = sent_invite_answers(&callee);
    assert_eq!(answers.len(), 1, "{answers:?}");
    let video_answer = answers[0]
        .media_section("video")
        .expect("video in the answer");
    assert!(video_answer.contains(answer_rtpmap), "{video_answer}");
    assert!(video_answer.contains("a=sendrecv"), "{video_answer}");
    assert!(
        video_answer.contains("a=rtcp-fb:* nack pli"),
        "{video_answer}"
    );
    caller.hangup();
    if !callee.wait_for_bye(SIP_TIMEOUT) {
        callee.fail("no BYE after a video call");
    }
    eprintln!(
        "baresip {codec:?} video selftest took {:?}",
        started.elapsed()
    );
}

/// H.264 video both ways between two baresips (avcodec; baresip offers mode 0 first, so that is
/// what they pick between themselves).
#[test]
fn baresip_video_call_h264() {
    video_call_both_ways(
        VideoCodec::H264,
        "H264 packetization-mode=0",
        "a=fmtp:96 packetization-mode=0;profile-level-id=42e01f",
    );
}

/// VP8 video both ways between two baresips (vp8 module; alone it takes payload type 96).
#[test]
fn baresip_video_call_vp8() {
    video_call_both_ways(VideoCodec::Vp8, "VP8", "a=fmtp:96 max-fs=3600");
}

/// Offered what the gateway offers (H.264 mode 1 and 0, VP8), baresip answers every format it
/// supports in the offer's order and sends video RTP with the first; with VP8 only, only VP8.
#[test]
fn baresip_answers_gateway_video_offer() {
    let started = Instant::now();
    let both = Baresip::start(BaresipOptions::new("both").with_video(
        VideoSource::File(test_video()),
        &[VideoCodec::H264, VideoCodec::Vp8],
    ));
    let vp8 = Baresip::start(
        BaresipOptions::new("vp8").with_video(VideoSource::ColourBars, &[VideoCodec::Vp8]),
    );

    let mut call = RawSipCall::invite(
        both.addr(),
        &both.uri(),
        &OfferedVideo::gateway_offer(),
        "recvonly",
    )
    .unwrap_or_else(|e| both.fail(&format!("INVITE failed: {e}")));
    let video = call.answer_media("video").expect("video answered");
    for line in [
        " RTP/AVP 96 97 98\r\n",
        "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\n",
        "a=rtpmap:97 H264/90000\r\na=fmtp:97 packetization-mode=0;profile-level-id=42e01f\r\n",
        "a=rtpmap:98 VP8/90000\r\na=fmtp:98 max-fs=3600\r\n",
        "a=sendonly\r\n",
        "a=rtcp-fb:* nack pli\r\n",
    ] {
        assert!(video.contains(line), "{line:?} not in the answer:\n{video}");
    }
    let rtp = call.count_rtp(Duration::from_secs(1));
    assert!(rtp.video.get(&96).copied().unwrap_or(0) > 10, "{rtp:?}");
    assert_eq!(rtp.video.len(), 1, "{rtp:?}");
    assert!(rtp.audio.get(&0).copied().unwrap_or(0) > 30, "{rtp:?}");
    assert_eq!(both.video_encoders(), vec!["H264 packetization-mode=1"]);
    assert_eq!(call.bye(), Ok(200));

    let call = RawSipCall::invite(
        vp8.addr(),
        &vp8.uri(),
        &OfferedVideo::gateway_offer(),
        "sendrecv",
    )
    .unwrap_or_else(|e| vp8.fail(&format!("INVITE failed: {e}")));
    let video = call.answer_media("video").expect("video answered");
    assert!(video.contains(" RTP/AVP 98\r\n"), "{video}");
    assert!(!video.contains("H264"), "{video}");
    assert!(video.contains("a=sendrecv\r\n"), "{video}");
    let rtp = call.count_rtp(Duration::from_secs(1));
    assert!(rtp.video.get(&98).copied().unwrap_or(0) > 10, "{rtp:?}");
    assert_eq!(vp8.video_encoders(), vec!["VP8"]);
    eprintln!(
        "baresip gateway-offer selftest took {:?}",
        started.elapsed()
    );
}

/// baresip logs DTMF received as RFC 4733 telephone-events (from another baresip) and as SIP
/// INFO (from a raw SIP call), repeated digits included.
#[test]
fn baresip_receives_dtmf_by_rtp_and_info() {
    let started = Instant::now();
    let callee = Baresip::start(BaresipOptions::new("callee"));
    let caller = Baresip::start(BaresipOptions::new("caller"));
    establish(&caller, &callee);
    caller.send_digits("1558#");
    if !callee.wait_for_digits("1558#", SIP_TIMEOUT) {
        callee.fail(&format!(
            "RTP DTMF not seen, got {:?}",
            callee.received_digits()
        ));
    }
    caller.hangup();
    if !callee.wait_for_bye(SIP_TIMEOUT) {
        callee.fail("no BYE");
    }

    let mut call = RawSipCall::invite(callee.addr(), &callee.uri(), &[], "sendrecv")
        .unwrap_or_else(|e| callee.fail(&format!("INVITE failed: {e}")));
    for digit in ['7', '*', '7'] {
        assert_eq!(call.send_dtmf_info(digit, 160), Ok(200));
    }
    if !callee.wait_for_digits("1558#7*7", SIP_TIMEOUT) {
        callee.fail(&format!(
            "INFO DTMF not seen, got {:?}",
            callee.received_digits()
        ));
    }
    let vias: Vec<DtmfVia> = callee.received_dtmf().into_iter().map(|(_, v)| v).collect();
    assert_eq!(
        vias,
        [[DtmfVia::Rtp; 5].as_slice(), &[DtmfVia::Info; 3]].concat()
    );
    assert_eq!(call.bye(), Ok(200));
    eprintln!("baresip DTMF selftest took {:?}", started.elapsed());
}

/// `hold` sends a re-INVITE with sendonly streams (answered recvonly), `resume` one with
/// sendrecv streams.
#[test]
fn baresip_hold_and_resume_send_reinvites() {
    let started = Instant::now();
    let callee = Baresip::start(BaresipOptions::new("callee"));
    let caller = Baresip::start(BaresipOptions::new("caller"));
    establish(&caller, &callee);

    // (direction the caller offers, direction the callee answers)
    for (step, (offered, answered)) in [("sendonly", "recvonly"), ("sendrecv", "sendrecv")]
        .into_iter()
        .enumerate()
    {
        if step == 0 {
            caller.hold();
        } else {
            caller.resume();
        }
        if !wait_until(SIP_TIMEOUT, || {
            sent_invite_answers(&callee).len() == step + 2
        }) {
            callee.fail(&format!(
                "re-INVITE not answered; caller log:\n{}",
                caller.log()
            ));
        }
        let reinvite = requests(&caller, true, "INVITE")[step + 1].clone();
        assert!(reinvite.header("To").is_some_and(|to| to.contains("tag=")));
        let audio = reinvite.media_section("audio").expect("audio offered");
        assert!(audio.contains(&format!("a={offered}\r\n")), "{audio}");
        let answer = sent_invite_answers(&callee)[step + 1].clone();
        let audio = answer.media_section("audio").expect("audio answered");
        assert!(audio.contains(&format!("a={answered}\r\n")), "{audio}");
    }
    assert_eq!(caller.count_log(BARESIP_HOLD), 1);
    assert_eq!(caller.count_log(BARESIP_RESUME), 1);
    assert_eq!(callee.active_calls(), 1);
    eprintln!("baresip hold selftest took {:?}", started.elapsed());
}

/// `rtp_timeout` counts from call establishment: a peer that never sends RTP is hung up on
/// (BYE) after about that many seconds.
#[test]
fn baresip_rtp_timeout_hangs_up_on_silent_peer() {
    let started = Instant::now();
    let callee = Baresip::start(BaresipOptions {
        rtp_timeout_secs: Some(2),
        ..BaresipOptions::new("callee")
    });
    let call = RawSipCall::invite(callee.addr(), &callee.uri(), &[], "sendrecv")
        .unwrap_or_else(|e| callee.fail(&format!("INVITE failed: {e}")));
    let established = Instant::now();
    // count_rtp answers the BYE.
    while !call.ended() && established.elapsed() < Duration::from_secs(6) {
        call.count_rtp(Duration::from_millis(100));
    }
    let after = established.elapsed();
    if !call.ended() {
        callee.fail("no BYE from rtp_timeout");
    }
    assert!(callee.rtp_timed_out());
    assert!(
        (Duration::from_millis(1900)..Duration::from_millis(3500)).contains(&after),
        "BYE after {after:?}"
    );
    eprintln!(
        "baresip rtp_timeout selftest took {:?} (BYE {after:?} after the 200)",
        started.elapsed()
    );
}
