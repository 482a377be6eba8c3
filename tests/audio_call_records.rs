//! Acceptance (issue 2, 1 and 5): a REST command places a call to baresip, its tone reaches nginx-rtmp as
//! AAC for (almost) the whole established time, terminate sends BYE, and neither the SIP password nor the
//! full stream name appears in any log line or API response.

mod common;

use std::time::{Duration, Instant};

use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};
use common::probe;
use serde_json::json;

#[test]
fn rest_call_records_the_tone_and_ends_with_bye() {
    let nginx = Nginx::start();
    let callee = Baresip::start(BaresipOptions::new("tone"));
    let gateway = Gateway::start();
    let stream = format!("liveKey{}SECRET", std::process::id());
    let password = "sip-Pa55word-never-logged";

    let reply = gateway.post(
        "/rest-api/call/startup",
        &json!({
            "callId": "call-tone",
            "callee": "tone",
            "sipDomain": "127.0.0.1",
            "sipPort": callee.sip_port(),
            "sipLogin": "gateway",
            "sipPassword": password,
            "rtmpUrl": nginx.rtmp_url(),
            "rtmpStream": stream,
            "hasAudio": "true",
            "hasVideo": "false"
        }),
    );
    assert_eq!(
        (reply.status, reply.json.clone()),
        (200, json!({})),
        "{}",
        reply.text
    );

    let call = gateway.wait_for(
        "call-tone",
        "status",
        "ESTABLISHED",
        Duration::from_secs(15),
    );
    let established = Instant::now();
    assert_eq!(call["sipStatus"], 200);
    assert_eq!(call["incoming"], false);
    assert!(
        callee.wait_for_established(Duration::from_secs(5)),
        "baresip does not see the call up"
    );
    gateway.wait_for(
        "call-tone",
        "rtmpStreamStatus",
        "RTMP_STREAM_ACTIVE",
        Duration::from_secs(10),
    );

    std::thread::sleep(Duration::from_secs(11).saturating_sub(established.elapsed()));
    let reply = gateway.post(
        "/rest-api/call/terminate",
        &json!({ "callId": "call-tone" }),
    );
    let established_for = established.elapsed().as_secs_f64();
    assert_eq!(reply.status, 200, "{}", reply.text);

    let ended = gateway.wait_for("call-tone", "status", "FINISH", Duration::from_secs(10));
    assert_eq!(ended["sipStatus"], 200, "BYE answered 200: {ended}");
    assert!(
        callee.wait_for_bye(Duration::from_secs(5)),
        "baresip received no BYE:\n{}",
        callee.log_tail(20)
    );

    // The FLV is complete once nginx has seen the publisher go.
    assert!(
        common::wait_until(Duration::from_secs(10), || !nginx.is_publishing(&stream)),
        "stream never ended"
    );
    let recordings = nginx.recordings(&stream);
    assert_eq!(
        recordings.len(),
        1,
        "one recording for one call: {recordings:?}"
    );
    let info = probe::ffprobe(&recordings[0]);
    let audio = info.audio().expect("the recording has an audio stream");
    assert_eq!(audio.codec_name, "aac");
    assert_eq!(audio.sample_rate, Some(44100));
    let seconds = probe::audio_duration(&recordings[0]);
    assert!(
        seconds >= 0.9 * established_for,
        "audio lasts {seconds:.2} s of {established_for:.2} s established (< 90 %)"
    );
    let tone = probe::tone_strength(&recordings[0], 440.0);
    let elsewhere = probe::tone_strength(&recordings[0], 1000.0);
    assert!(tone > 0.5, "440 Hz carries {tone:.3} of the power");
    assert!(
        elsewhere < 0.05,
        "1000 Hz carries {elsewhere:.3} of the power"
    );
    eprintln!("established {established_for:.2} s, audio {seconds:.2} s, 440 Hz share {tone:.3}");

    // Secrets: nowhere in the gateway's log (at debug level) or in any API answer.
    let log = gateway.log();
    assert!(log.contains("call-tone"), "the log is really the gateway's");
    for secret in [password, stream.as_str()] {
        assert!(!log.contains(secret), "log leaks {secret}");
        for response in gateway.responses() {
            assert!(
                !response.contains(secret),
                "API response leaks {secret}: {response}"
            );
        }
    }
    assert!(
        gateway.responses().iter().any(|r| r.contains("live...")),
        "the stream shows redacted"
    );
}
