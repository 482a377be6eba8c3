//! Acceptance (issue 3, 3): push/startup adds a second nginx-rtmp stream to a live call; both recordings
//! have audio; push/mute and push/unmute silence and restore that target only; push/terminate ends it
//! without touching the call's own stream.

mod common;

use std::time::{Duration, Instant};

use common::calls::{start_streaming, startup, terminate};
use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};
use common::probe;
use serde_json::json;

/// The longest run of quiet audio (RMS below 1 % of full scale), in seconds.
fn longest_quiet_run(path: &std::path::Path) -> f64 {
    let samples = probe::decode_audio(path, 8000);
    let window = 800; // 100 ms
    let (mut longest, mut current) = (0usize, 0usize);
    for chunk in samples.chunks(window) {
        let rms =
            (chunk.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / chunk.len() as f64).sqrt();
        current = if rms < 327.0 { current + 1 } else { 0 };
        longest = longest.max(current);
    }
    longest as f64 * 0.1
}

#[test]
fn a_pushed_target_records_mutes_and_ends_alone() {
    let nginx = Nginx::start();
    let callee = Baresip::start(BaresipOptions::new("tone"));
    let gateway = Gateway::start();
    let established = start_streaming(
        &gateway,
        &startup("p", &callee, "tone", &nginx.rtmp_url(), "main-stream"),
    );

    let reply = gateway.post(
        "/rest-api/push/startup",
        &json!({"callId": "p", "rtmpUrl": nginx.rtmp_url(), "rtmpStream": "second-stream-key"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let session = reply.json["mediaSessionId"]
        .as_str()
        .expect("mediaSessionId")
        .to_owned();
    assert_eq!(
        reply.json["rtmpStream"], "seco...",
        "the key is redacted: {}",
        reply.text
    );
    assert!(common::wait_until(Duration::from_secs(10), || {
        let found = gateway.post("/rest-api/push/find", &json!({"mediaSessionId": session}));
        found.status == 200 && found.json[0]["rtmpStreamStatus"] == "RTMP_STREAM_ACTIVE"
    }));
    let pushed = Instant::now();
    std::thread::sleep(Duration::from_secs(3));

    assert_eq!(
        gateway
            .post("/rest-api/push/mute", &json!({"mediaSessionId": session}))
            .status,
        200
    );
    let found = gateway.post("/rest-api/push/find", &json!({"mediaSessionId": session}));
    assert_eq!(found.json[0]["muted"], true, "{}", found.text);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        gateway
            .post("/rest-api/push/unmute", &json!({"mediaSessionId": session}))
            .status,
        200
    );
    std::thread::sleep(Duration::from_secs(3));

    let stopped = gateway.post(
        "/rest-api/push/terminate",
        &json!({"mediaSessionId": session}),
    );
    assert_eq!(stopped.status, 200, "{}", stopped.text);
    let pushed_for = pushed.elapsed().as_secs_f64();
    assert!(
        common::wait_until(Duration::from_secs(5), || !nginx
            .is_publishing("second-stream-key")),
        "the push ended"
    );
    assert!(
        nginx.is_publishing("main-stream"),
        "the call's own stream goes on"
    );
    let call = gateway.find("p").unwrap();
    assert_eq!(
        (call["status"].clone(), call["rtmpStreamStatus"].clone()),
        (json!("ESTABLISHED"), json!("RTMP_STREAM_ACTIVE"))
    );
    assert_eq!(
        gateway
            .post("/rest-api/push/find", &json!({"mediaSessionId": session}))
            .status,
        404
    );
    std::thread::sleep(Duration::from_secs(2));
    let call_time = established.elapsed().as_secs_f64();
    terminate(&gateway, "p");
    assert!(common::wait_until(Duration::from_secs(10), || !nginx
        .is_publishing("main-stream")));

    let main = nginx.recordings("main-stream");
    let second = nginx.recordings("second-stream-key");
    assert_eq!((main.len(), second.len()), (1, 1), "{main:?} {second:?}");
    for (path, at_least) in [(&main[0], 0.9 * call_time), (&second[0], 0.8 * pushed_for)] {
        assert_eq!(
            probe::ffprobe(path).audio().map(|a| a.codec_name.clone()),
            Some("aac".into()),
            "{path:?}"
        );
        let seconds = probe::audio_duration(path);
        assert!(
            seconds >= at_least,
            "{path:?}: {seconds:.2} s of audio, expected {at_least:.2}"
        );
        assert!(
            probe::tone_strength(path, 440.0) > 0.3,
            "{path:?} carries the call's tone"
        );
    }
    let quiet_second = longest_quiet_run(&second[0]);
    let quiet_main = longest_quiet_run(&main[0]);
    eprintln!("quiet runs: pushed {quiet_second:.1} s, main {quiet_main:.1} s");
    assert!(
        quiet_second >= 2.0,
        "the muted stretch is silent ({quiet_second:.1} s)"
    );
    assert!(
        quiet_main < 1.0,
        "muting the push left the call's own stream alone ({quiet_main:.1} s)"
    );
}
