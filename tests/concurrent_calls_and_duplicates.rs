//! Acceptance (issue 2, 2): two calls at once to two stream names both record; a duplicate callId and a
//! duplicate rtmpUrl+rtmpStream get 409 and disturb neither running call.

mod common;

use std::time::Duration;

use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};
use common::probe;
use serde_json::json;

fn startup(
    call_id: &str,
    callee: &Baresip,
    user: &str,
    nginx: &Nginx,
    stream: &str,
) -> serde_json::Value {
    json!({
        "callId": call_id,
        "callee": user,
        "sipDomain": "127.0.0.1",
        "sipPort": callee.sip_port(),
        "rtmpUrl": nginx.rtmp_url(),
        "rtmpStream": stream,
        "hasAudio": true
    })
}

#[test]
fn two_calls_record_and_duplicates_are_refused() {
    let nginx = Nginx::start();
    let first = Baresip::start(BaresipOptions {
        audio_source: common::peers::AudioSource::Sine(440),
        ..BaresipOptions::new("first")
    });
    let second = Baresip::start(BaresipOptions {
        audio_source: common::peers::AudioSource::Sine(880),
        ..BaresipOptions::new("second")
    });
    let gateway = Gateway::start();

    for (call_id, callee, user, stream) in [
        ("a", &first, "first", "stream-a-key"),
        ("b", &second, "second", "stream-b-key"),
    ] {
        let reply = gateway.post(
            "/rest-api/call/startup",
            &startup(call_id, callee, user, &nginx, stream),
        );
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    for call_id in ["a", "b"] {
        gateway.wait_for(call_id, "status", "ESTABLISHED", Duration::from_secs(15));
        gateway.wait_for(
            call_id,
            "rtmpStreamStatus",
            "RTMP_STREAM_ACTIVE",
            Duration::from_secs(10),
        );
    }

    let dup_id = gateway.post(
        "/rest-api/call/startup",
        &startup("a", &second, "second", &nginx, "stream-c-key"),
    );
    assert_eq!(
        (dup_id.status, dup_id.json["field"].clone()),
        (409, json!("callId")),
        "{}",
        dup_id.text
    );
    let dup_stream = gateway.post(
        "/rest-api/call/startup",
        &startup("c", &second, "second", &nginx, "stream-a-key"),
    );
    assert_eq!(
        (dup_stream.status, dup_stream.json["field"].clone()),
        (409, json!("rtmpStream")),
        "{}",
        dup_stream.text
    );
    assert!(
        gateway.find("c").is_none(),
        "the refused call was not created"
    );

    std::thread::sleep(Duration::from_secs(4));
    for call_id in ["a", "b"] {
        let call = gateway.find(call_id).expect("call still listed");
        assert_eq!(
            (call["status"].clone(), call["rtmpStreamStatus"].clone()),
            (json!("ESTABLISHED"), json!("RTMP_STREAM_ACTIVE")),
            "{call}"
        );
    }
    assert_eq!(
        first.established_calls() + second.established_calls(),
        2,
        "each callee has its one call"
    );

    for call_id in ["a", "b"] {
        assert_eq!(
            gateway
                .post("/rest-api/call/terminate", &json!({ "callId": call_id }))
                .status,
            200
        );
    }
    for call_id in ["a", "b"] {
        gateway.wait_for(call_id, "status", "FINISH", Duration::from_secs(10));
    }
    for (stream, freq) in [("stream-a-key", 440.0), ("stream-b-key", 880.0)] {
        assert!(
            common::wait_until(Duration::from_secs(10), || !nginx.is_publishing(stream)),
            "{stream} never ended"
        );
        let recordings = nginx.recordings(stream);
        assert_eq!(recordings.len(), 1, "{stream}: {recordings:?}");
        let info = probe::ffprobe(&recordings[0]);
        assert_eq!(
            info.audio().map(|a| a.codec_name.as_str()),
            Some("aac"),
            "{stream}"
        );
        let seconds = probe::audio_duration(&recordings[0]);
        assert!(seconds > 4.0, "{stream}: only {seconds:.2} s of audio");
        // Each stream carries its own call's tone, not the other's.
        let own = probe::tone_strength(&recordings[0], freq);
        assert!(own > 0.5, "{stream}: its tone has {own:.3} of the power");
    }
}
