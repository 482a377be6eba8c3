//! Acceptance (issue 6, 4): with `record` on, the file recording covers the whole call even while the RTMP
//! target is down.

mod common;

use std::time::Duration;

use common::calls::{start_streaming, startup, terminate};
use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};
use common::probe;

#[test]
fn file_recording_covers_an_rtmp_outage() {
    let mut nginx = Nginx::start();
    let callee = Baresip::start(BaresipOptions::new("tone"));
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start_with(&format!(
        "[recording]\ndir = \"{}\"\n",
        dir.path().display()
    ));
    let mut body = startup(
        "rec/1",
        &callee,
        "tone",
        &nginx.rtmp_url(),
        "recorded-stream",
    );
    body["record"] = serde_json::json!("true");
    let established = start_streaming(&gateway, &body);

    std::thread::sleep(Duration::from_secs(2));
    nginx.kill();
    gateway.wait_for(
        "rec/1",
        "rtmpStreamStatus",
        "RTMP_CONNECTION_LOST",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(4));
    nginx.restart();
    gateway.wait_for(
        "rec/1",
        "rtmpStreamStatus",
        "RTMP_STREAM_ACTIVE",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(2));
    let call_time = established.elapsed().as_secs_f64();
    terminate(&gateway, "rec/1");

    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "one file for the call: {files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("rec_1-") && name.ends_with(".flv"),
        "callId made safe for a file name: {name}"
    );
    // Let the stop thread finish writing.
    assert!(common::wait_until(
        Duration::from_secs(5),
        || probe::audio_duration(&files[0]) >= 0.9 * call_time
    ));
    let info = probe::ffprobe(&files[0]);
    assert_eq!(info.audio().map(|a| a.codec_name.as_str()), Some("aac"));
    let seconds = probe::audio_duration(&files[0]);
    eprintln!("file has {seconds:.2} s of a {call_time:.2} s call");
    assert!(probe::tone_strength(&files[0], 440.0) > 0.5);
}
