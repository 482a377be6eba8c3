//! Acceptance (issue 5, 5): SIGTERM during two live calls: both peers get BYE, both recordings end
//! cleanly (ffprobe reads them to the end), new calls are refused while draining, and the process exits 0
//! within 5 s.

mod common;

use std::time::{Duration, Instant};

use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};
use common::probe;
use serde_json::json;

#[test]
fn sigterm_ends_both_calls_and_streams_cleanly_and_exits_0() {
    let nginx = Nginx::start();
    let peers = [
        Baresip::start(BaresipOptions::new("first")),
        Baresip::start(BaresipOptions::new("second")),
    ];
    let mut gateway = Gateway::start();
    for (i, peer) in peers.iter().enumerate() {
        let reply = gateway.post(
            "/rest-api/call/startup",
            &json!({
                "callId": format!("drain-{i}"),
                "callee": peer.options().user,
                "sipDomain": "127.0.0.1",
                "sipPort": peer.sip_port(),
                "rtmpUrl": nginx.rtmp_url(),
                "rtmpStream": format!("drain-stream-{i}"),
            }),
        );
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    for i in 0..2 {
        gateway.wait_for(
            &format!("drain-{i}"),
            "rtmpStreamStatus",
            "RTMP_STREAM_ACTIVE",
            Duration::from_secs(15),
        );
    }
    std::thread::sleep(Duration::from_secs(3));

    let signalled = Instant::now();
    gateway.process().signal("TERM");
    // While it drains, startups are refused (503) or the listener is already closed; never accepted.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let url = format!(
        "http://127.0.0.1:{}/rest-api/call/startup",
        http_port(&gateway)
    );
    let mut refused = 0;
    while signalled.elapsed() < Duration::from_secs(5) {
        let body = json!({"callId": "late", "callee": "x", "sipDomain": "127.0.0.1",
            "rtmpUrl": nginx.rtmp_url(), "rtmpStream": "late"});
        match client.post(&url).json(&body).send() {
            Ok(r) => {
                assert_ne!(
                    r.status().as_u16(),
                    200,
                    "a call was accepted while draining"
                );
                refused += 1;
            }
            Err(_) => break,
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = gateway.process().wait_exit(
        Duration::from_secs(5).saturating_sub(signalled.elapsed()) + Duration::from_millis(200),
    );
    let took = signalled.elapsed();
    let status = status.unwrap_or_else(|| gateway.fail("still running 5 s after SIGTERM"));
    assert!(status.success(), "exit status {status}");
    assert!(took <= Duration::from_millis(5200), "exit took {took:?}");
    eprintln!("exited in {took:?}; {refused} startups refused while draining");

    for peer in &peers {
        assert!(
            peer.wait_for_bye(Duration::from_secs(2)),
            "{} got no BYE:\n{}",
            peer.options().user,
            peer.log_tail(20)
        );
    }
    for i in 0..2 {
        let stream = format!("drain-stream-{i}");
        assert!(nginx.wait_for_publish_end(&stream, Duration::from_secs(5)));
        let recordings = nginx.recordings(&stream);
        assert_eq!(recordings.len(), 1, "{recordings:?}");
        let info = probe::ffprobe(&recordings[0]);
        assert!(
            info.format_duration > 2.5,
            "{stream}: the FLV ends cleanly with a duration: {info:?}"
        );
        let decoded = probe::audio_duration(&recordings[0]);
        assert!(
            (decoded - info.format_duration).abs() < 1.0,
            "{stream}: decoded to the end ({decoded} s of {} s)",
            info.format_duration
        );
    }
}

fn http_port(gateway: &Gateway) -> u16 {
    gateway.http_port()
}
