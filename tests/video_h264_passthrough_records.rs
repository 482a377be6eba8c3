//! Acceptance (issue 4, 1): baresip sending H.264 answers a video call: the recording has H.264 (passed
//! through) and AAC, its first video frame is a keyframe, and video covers at least 85 % of the established
//! time.

mod common;

use std::time::Duration;

use common::calls::{assert_codecs, finished_recording, start_streaming, startup, terminate};
use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx, VideoCodec, VideoSource};
use common::probe;

/// Seconds between the first and the last video packet of a recording.
pub fn video_span(path: &std::path::Path) -> f64 {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    let times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    match (times.first(), times.last()) {
        (Some(first), Some(last)) => last - first,
        _ => 0.0,
    }
}

#[test]
fn h264_call_records_h264_and_aac_from_a_keyframe() {
    let nginx = Nginx::start();
    let callee = Baresip::start(
        BaresipOptions::new("video")
            .with_video(VideoSource::File(probe::test_video()), &[VideoCodec::H264]),
    );
    let gateway = Gateway::start();
    let mut body = startup("v1", &callee, "video", &nginx.rtmp_url(), "h264-stream");
    body["hasVideo"] = serde_json::json!(true);
    let established = start_streaming(&gateway, &body);
    std::thread::sleep(Duration::from_secs(10));
    let call = gateway.find("v1").unwrap();
    let call_time = established.elapsed().as_secs_f64();
    terminate(&gateway, "v1");
    assert!(
        call["mediaStats"]["videoPacketsIn"].as_u64().unwrap_or(0) > 100,
        "video RTP arrived: {call}"
    );

    let recording = finished_recording(&nginx, "h264-stream");
    assert_codecs(&recording, Some("h264"), Some("aac"));
    assert!(
        probe::first_video_frame_is_keyframe(&recording),
        "the stream starts on a keyframe"
    );
    let span = video_span(&recording);
    eprintln!("video spans {span:.2} s of {call_time:.2} s established");
    assert!(
        span >= 0.85 * call_time,
        "video covers {span:.2} s of {call_time:.2} s (< 85 %)"
    );
}
