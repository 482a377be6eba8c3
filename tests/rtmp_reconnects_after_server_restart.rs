//! Acceptance (issue 6, 1): mid-call, nginx-rtmp is killed and restarted 5 s later. The call stays
//! ESTABLISHED, the target reports LOST then ACTIVE, a new recording starts within 2 s of nginx being back,
//! and its timestamps continue the stream's (players and CDNs accept it). Video keyframes: issue 4.

mod common;

use std::time::{Duration, Instant};

use common::calls::{first_audio_pts, start_streaming, startup, terminate};
use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};
use common::probe;

#[test]
fn killed_server_is_reconnected_without_dropping_the_call() {
    let mut nginx = Nginx::start();
    let callee = Baresip::start(BaresipOptions::new("tone"));
    let gateway = Gateway::start();
    let stream = "reconnect-stream";
    let established = start_streaming(
        &gateway,
        &startup("c1", &callee, "tone", &nginx.rtmp_url(), stream),
    );
    std::thread::sleep(Duration::from_secs(3));

    nginx.kill();
    let killed = Instant::now();
    let lost = gateway.wait_for(
        "c1",
        "rtmpStreamStatus",
        "RTMP_CONNECTION_LOST",
        Duration::from_secs(10),
    );
    assert_eq!(lost["status"], "ESTABLISHED", "the call goes on: {lost}");
    assert!(
        lost["info"]
            .as_str()
            .is_some_and(|i| i.starts_with("RTMP:")),
        "the reason is shown: {lost}"
    );

    std::thread::sleep(Duration::from_secs(5).saturating_sub(killed.elapsed()));
    assert_eq!(gateway.find("c1").unwrap()["status"], "ESTABLISHED");
    let before = nginx.recordings(stream).len();
    nginx.restart();
    let back = Instant::now();
    assert!(
        common::wait_until(Duration::from_secs(10), || nginx.is_publishing(stream)),
        "never republished"
    );
    let republished_after = back.elapsed().as_secs_f64();
    let active = gateway.wait_for(
        "c1",
        "rtmpStreamStatus",
        "RTMP_STREAM_ACTIVE",
        Duration::from_secs(10),
    );
    assert_eq!(active["status"], "ESTABLISHED");
    let target = gateway
        .target("c1", 1)
        .expect("the primary target is listed");
    assert!(target["reconnects"].as_u64().unwrap_or(0) >= 1, "{target}");
    assert!(target["lastReconnectUnixMs"].as_u64().is_some(), "{target}");
    eprintln!("republished {republished_after:.2} s after nginx was back; target {target}");
    assert!(
        republished_after <= 2.0,
        "new recording started {republished_after:.2} s after nginx was back (> 2 s)"
    );

    std::thread::sleep(Duration::from_secs(3));
    let call_time = established.elapsed().as_secs_f64();
    terminate(&gateway, "c1");
    assert!(common::wait_until(Duration::from_secs(10), || !nginx.is_publishing(stream)));

    let recordings = nginx.recordings(stream);
    assert!(
        recordings.len() > before || before == 0,
        "a new recording after the restart: {recordings:?}"
    );
    let last = recordings.last().expect("a recording after the restart");
    let info = probe::ffprobe(last);
    assert_eq!(
        info.audio().map(|a| a.codec_name.as_str()),
        Some("aac"),
        "{last:?}"
    );
    assert!(
        probe::audio_duration(last) >= 2.0,
        "the reconnected stream carries audio"
    );
    let pts = first_audio_pts(last);
    assert!(
        pts >= 5.0 && pts <= call_time,
        "timestamps continue the call's ({pts:.2} s into a {call_time:.2} s stream), not restart at 0"
    );
}
