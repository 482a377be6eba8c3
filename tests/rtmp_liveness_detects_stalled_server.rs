//! Acceptance (issue 6, 2): nginx-rtmp stopped with SIGSTOP (stalled, not closed) for longer than the
//! liveness time: the target is reported lost, and comes back after SIGCONT; the call never drops.

mod common;

use std::time::{Duration, Instant};

use common::calls::{start_streaming, startup, terminate};
use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};

#[test]
fn stalled_server_is_detected_and_recovered() {
    let mut nginx = Nginx::start();
    let callee = Baresip::start(BaresipOptions::new("tone"));
    let gateway = Gateway::start_with("[rtmp]\nliveness_secs = 2\n");
    start_streaming(
        &gateway,
        &startup("c1", &callee, "tone", &nginx.rtmp_url(), "stall-stream"),
    );
    std::thread::sleep(Duration::from_secs(1));

    nginx.signal("STOP");
    let stopped = Instant::now();
    let lost = gateway.wait_for(
        "c1",
        "rtmpStreamStatus",
        "RTMP_CONNECTION_LOST",
        Duration::from_secs(12),
    );
    let detected_after = stopped.elapsed().as_secs_f64();
    assert_eq!(lost["status"], "ESTABLISHED", "{lost}");
    assert!(
        lost["info"].as_str().is_some_and(|i| i.contains("stalled")),
        "{lost}"
    );
    eprintln!("stall detected after {detected_after:.2} s");

    // Stay stopped well past the liveness time, then resume.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(stopped.elapsed()));
    nginx.signal("CONT");
    let resumed = Instant::now();
    let active = gateway.wait_for(
        "c1",
        "rtmpStreamStatus",
        "RTMP_STREAM_ACTIVE",
        Duration::from_secs(30),
    );
    assert_eq!(active["status"], "ESTABLISHED");
    eprintln!(
        "active again {:.2} s after SIGCONT",
        resumed.elapsed().as_secs_f64()
    );
    assert!(common::wait_until(Duration::from_secs(5), || nginx
        .is_publishing("stall-stream")));
    terminate(&gateway, "c1");
}
