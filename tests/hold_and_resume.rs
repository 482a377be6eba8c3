//! Acceptance (issue 5, 2): baresip puts the call on hold and resumes it (ctrl_tcp `hold`/`resume`, which
//! send re-INVITEs with sendonly/sendrecv). The call stays up, HOLD is reported while held, the RTMP stream
//! is one uninterrupted publish, and the recording has no gap > 1 s: baresip sends no RTP while it holds, and
//! the call template's silence filler keeps the audio track going.

mod common;

use std::time::Duration;

use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};
use common::probe;
use serde_json::json;

#[test]
fn hold_and_resume_keep_the_call_and_the_stream_up() {
    let recording = hold_and_resume_call("hold-stream");
    let (_, span) = probe::audio_packet_gaps(&recording);
    assert!(span > 6.0, "the recording spans the call: {span} s");
}

#[test]

fn hold_leaves_no_gap_over_1s_in_the_recording() {
    let recording = hold_and_resume_call("hold-gap-stream");
    let (max_gap, _) = probe::audio_packet_gaps(&recording);
    assert!(max_gap <= 1.0, "a gap of {max_gap} s in the recording");
}

/// Places a call, holds it 3 s, resumes it, hangs up; returns its recording.
fn hold_and_resume_call(stream: &str) -> std::path::PathBuf {
    let nginx = Nginx::start();
    let callee = Baresip::start(BaresipOptions::new("held"));
    let gateway = Gateway::start();
    let reply = gateway.post(
        "/rest-api/call/startup",
        &json!({
            "callId": "hold-call",
            "callee": "held",
            "sipDomain": "127.0.0.1",
            "sipPort": callee.sip_port(),
            "rtmpUrl": nginx.rtmp_url(),
            "rtmpStream": stream,
        }),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    gateway.wait_for(
        "hold-call",
        "status",
        "ESTABLISHED",
        Duration::from_secs(15),
    );
    gateway.wait_for(
        "hold-call",
        "rtmpStreamStatus",
        "RTMP_STREAM_ACTIVE",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(2));

    callee.command("hold");
    let held = gateway.wait_for("hold-call", "status", "HOLD", Duration::from_secs(10));
    assert_eq!(held["rtmpStreamStatus"], "RTMP_STREAM_ACTIVE", "{held}");
    std::thread::sleep(Duration::from_secs(3));
    callee.command("resume");
    gateway.wait_for(
        "hold-call",
        "status",
        "ESTABLISHED",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(2));

    assert_eq!(
        gateway
            .post(
                "/rest-api/call/terminate",
                &json!({ "callId": "hold-call" })
            )
            .status,
        200
    );
    gateway.wait_for("hold-call", "status", "FINISH", Duration::from_secs(10));
    assert!(callee.wait_for_bye(Duration::from_secs(5)));
    assert!(nginx.wait_for_publish_end(stream, Duration::from_secs(10)));
    let recordings = nginx.recordings(stream);
    assert_eq!(
        recordings.len(),
        1,
        "one publish, never interrupted: {recordings:?}"
    );
    // The nginx dir goes with `nginx`: keep the file.
    let kept = std::env::temp_dir().join(format!("sipcast-{stream}-{}.flv", std::process::id()));
    std::fs::copy(&recordings[0], &kept).expect("copy the recording");
    kept
}
