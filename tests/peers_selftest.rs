//! Self-tests of the test-peer harness in `tests/common`, without the gateway: each proves that
//! one kind of real peer starts, does its job on loopback and is observed correctly.
mod common;

use common::peers::{
    Baresip, BaresipOptions, GstPublisher, Kamailio, KamailioOptions, Nginx, KAM_AUTH_FAILED,
    KAM_AUTH_OK, KAM_CHALLENGED, KAM_REGISTERED, KAM_RELAYED,
};
use common::probe::{audio_duration, ffprobe, first_video_frame_is_keyframe, tone_strength};
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
