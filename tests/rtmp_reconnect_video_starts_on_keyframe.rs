//! Acceptance (issue 6, 1, video): after nginx-rtmp is killed and restarted mid-call, the new recording of an
//! H.264 call begins with a keyframe (the target waits for one and the gateway asks the peer for it), and
//! carries both tracks.

mod common;

use std::time::{Duration, Instant};

use common::calls::{start_streaming, startup, terminate};
use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx, VideoCodec, VideoSource};
use common::probe;

#[test]
fn reconnected_video_stream_starts_on_a_keyframe() {
    let mut nginx = Nginx::start();
    let callee = Baresip::start(
        BaresipOptions::new("video")
            .with_video(VideoSource::File(probe::test_video()), &[VideoCodec::H264]),
    );
    let gateway = Gateway::start();
    let mut body = startup("rv", &callee, "video", &nginx.rtmp_url(), "video-reconnect");
    body["hasVideo"] = serde_json::json!(true);
    start_streaming(&gateway, &body);
    std::thread::sleep(Duration::from_secs(3));

    nginx.kill();
    gateway.wait_for(
        "rv",
        "rtmpStreamStatus",
        "RTMP_CONNECTION_LOST",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(5));
    nginx.restart();
    let back = Instant::now();
    assert!(common::wait_until(Duration::from_secs(10), || nginx
        .is_publishing("video-reconnect")));
    eprintln!(
        "republished {:.2} s after nginx was back",
        back.elapsed().as_secs_f64()
    );
    gateway.wait_for(
        "rv",
        "rtmpStreamStatus",
        "RTMP_STREAM_ACTIVE",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(4));
    terminate(&gateway, "rv");
    assert!(common::wait_until(Duration::from_secs(10), || !nginx
        .is_publishing("video-reconnect")));

    let recordings = nginx.recordings("video-reconnect");
    assert!(
        recordings.len() >= 2,
        "one recording before the outage, one after: {recordings:?}"
    );
    let after = recordings.last().unwrap();
    let info = probe::ffprobe(after);
    assert_eq!(
        info.video().map(|v| v.codec_name.as_str()),
        Some("h264"),
        "{info:?}"
    );
    assert_eq!(
        info.audio().map(|a| a.codec_name.as_str()),
        Some("aac"),
        "{info:?}"
    );
    assert!(
        probe::first_video_frame_is_keyframe(after),
        "the reconnected stream starts on a keyframe"
    );
}
