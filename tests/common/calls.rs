//! Shared steps of the call scenarios: a startup body and the wait for a call to be up and streaming.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::gateway::Gateway;
use super::peers::Baresip;

/// A call/startup body calling `user` on `callee`, publishing to `rtmp_url`/`stream`.
pub fn startup(call_id: &str, callee: &Baresip, user: &str, rtmp_url: &str, stream: &str) -> Value {
    json!({
        "callId": call_id,
        "callee": user,
        "sipDomain": "127.0.0.1",
        "sipPort": callee.sip_port(),
        "rtmpUrl": rtmp_url,
        "rtmpStream": stream,
        "hasAudio": true
    })
}

/// Starts the call and waits until it is ESTABLISHED and its RTMP stream ACTIVE; returns when it was
/// seen established.
pub fn start_streaming(gateway: &Gateway, body: &Value) -> Instant {
    let call_id = body["callId"].as_str().expect("callId");
    let reply = gateway.post("/rest-api/call/startup", body);
    assert_eq!(reply.status, 200, "{}", reply.text);
    gateway.wait_for(call_id, "status", "ESTABLISHED", Duration::from_secs(15));
    let established = Instant::now();
    gateway.wait_for(
        call_id,
        "rtmpStreamStatus",
        "RTMP_STREAM_ACTIVE",
        Duration::from_secs(10),
    );
    established
}

/// Terminates the call and waits for FINISH.
pub fn terminate(gateway: &Gateway, call_id: &str) {
    let reply = gateway.post("/rest-api/call/terminate", &json!({ "callId": call_id }));
    assert_eq!(reply.status, 200, "{}", reply.text);
    gateway.wait_for(call_id, "status", "FINISH", Duration::from_secs(10));
}

/// The presentation time of the first audio packet of a recording, in seconds.
pub fn first_audio_pts(path: &std::path::Path) -> f64 {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            "packet=pts_time",
            "-read_intervals",
            "%+#1",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().trim_end_matches(',').parse().ok())
        .unwrap_or(-1.0)
}

/// Waits until nginx has seen `stream`'s publisher go (the FLV is complete) and returns its one recording.
pub fn finished_recording(nginx: &super::peers::Nginx, stream: &str) -> std::path::PathBuf {
    assert!(
        super::wait_until(Duration::from_secs(10), || !nginx.is_publishing(stream)),
        "{stream} never stopped publishing"
    );
    let recordings = nginx.recordings(stream);
    assert_eq!(
        recordings.len(),
        1,
        "one recording of {stream}: {recordings:?}"
    );
    recordings.into_iter().next().expect("one recording")
}

/// Asserts the codec of a recording's video and audio tracks (`None`: no such track).
pub fn assert_codecs(path: &std::path::Path, video: Option<&str>, audio: Option<&str>) {
    let info = super::probe::ffprobe(path);
    assert_eq!(
        info.video().map(|v| v.codec_name.as_str()),
        video,
        "video of {path:?}: {info:?}"
    );
    assert_eq!(
        info.audio().map(|a| a.codec_name.as_str()),
        audio,
        "audio of {path:?}: {info:?}"
    );
}
