//! Issue 4, RTP inactivity: a peer that stops sending RTP (here: baresip frozen with SIGSTOP) is hung up
//! after `media.rtp_timeout_secs` with a reason, and gets the BYE once it listens again.

mod common;

use std::time::{Duration, Instant};

use common::calls::{start_streaming, startup};
use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};

#[test]
fn silent_peer_is_hung_up_with_a_reason() {
    let nginx = Nginx::start();
    let mut callee = Baresip::start(BaresipOptions::new("tone"));
    let gateway = Gateway::start_with("[media]\nrtp_timeout_secs = 2\n");
    start_streaming(
        &gateway,
        &startup("quiet", &callee, "tone", &nginx.rtmp_url(), "quiet-stream"),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        gateway.find("quiet").unwrap()["status"],
        "ESTABLISHED",
        "RTP flowing: no timeout"
    );

    callee.process().signal("STOP");
    let frozen = Instant::now();
    let failed = gateway.wait_for("quiet", "status", "FAILED", Duration::from_secs(10));
    let after = frozen.elapsed().as_secs_f64();
    callee.process().signal("CONT");
    assert!(
        failed["info"]
            .as_str()
            .is_some_and(|i| i.contains("no RTP")),
        "{failed}"
    );
    // Counted from the last packet, which left a few ms before the freeze.
    assert!(after >= 1.8, "not before the timeout: {after:.2} s");
    assert!(
        callee.wait_for_bye(Duration::from_secs(10)),
        "the BYE reaches the peer once it runs again"
    );
    assert!(
        common::wait_until(Duration::from_secs(10), || !nginx
            .is_publishing("quiet-stream")),
        "the stream ended"
    );
}
