//! Acceptance (issue 4, 2): baresip sending VP8: the recording has H.264 (transcoded; FLV carries no VP8)
//! and AAC, starting on a keyframe.

mod common;

use std::time::Duration;

use common::calls::{assert_codecs, finished_recording, start_streaming, startup, terminate};
use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx, VideoCodec, VideoSource};
use common::probe;

#[test]
fn vp8_call_records_transcoded_h264() {
    let nginx = Nginx::start();
    let callee = Baresip::start(
        BaresipOptions::new("video")
            .with_video(VideoSource::File(probe::test_video()), &[VideoCodec::Vp8]),
    );
    let gateway = Gateway::start();
    let mut body = startup("v8", &callee, "video", &nginx.rtmp_url(), "vp8-stream");
    body["hasVideo"] = serde_json::json!("true");
    start_streaming(&gateway, &body);
    std::thread::sleep(Duration::from_secs(6));
    terminate(&gateway, "v8");
    let recording = finished_recording(&nginx, "vp8-stream");
    assert_codecs(&recording, Some("h264"), Some("aac"));
    assert!(probe::first_video_frame_is_keyframe(&recording));
}
