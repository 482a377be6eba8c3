//! Acceptance (issue 6, 5): an rtmps:// target, TLS terminated by nginx's stream module in front of the RTMP
//! module (self-signed test certificate), records.

mod common;

use std::time::Duration;

use common::calls::{start_streaming, startup, terminate};
use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};
use common::probe;

#[test]
fn rtmps_target_records() {
    let nginx = Nginx::start_with_tls();
    let callee = Baresip::start(BaresipOptions::new("tone"));
    let gateway = Gateway::start_with("[rtmp]\ntls_accept_invalid_certs = true\n");
    assert!(nginx.rtmps_url().starts_with("rtmps://"));
    start_streaming(
        &gateway,
        &startup("tls", &callee, "tone", &nginx.rtmps_url(), "tls-stream"),
    );
    std::thread::sleep(Duration::from_secs(4));
    terminate(&gateway, "tls");
    assert!(common::wait_until(Duration::from_secs(10), || !nginx
        .is_publishing("tls-stream")));
    let recordings = nginx.recordings("tls-stream");
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    assert_eq!(
        probe::ffprobe(&recordings[0])
            .audio()
            .map(|a| a.codec_name.clone()),
        Some("aac".into())
    );
    assert!(probe::audio_duration(&recordings[0]) >= 3.5);
}

#[test]
fn rtmps_with_an_untrusted_certificate_is_refused_by_default() {
    let nginx = Nginx::start_with_tls();
    let callee = Baresip::start(BaresipOptions::new("tone"));
    let gateway = Gateway::start();
    let reply = gateway.post(
        "/rest-api/call/startup",
        &startup("tls", &callee, "tone", &nginx.rtmps_url(), "tls-stream"),
    );
    assert_eq!(reply.status, 200);
    let call = gateway.wait_for(
        "tls",
        "rtmpStreamStatus",
        "RTMP_CONNECTION_FAILED",
        Duration::from_secs(15),
    );
    assert_eq!(call["status"], "ESTABLISHED", "{call}");
    assert!(!nginx.is_publishing("tls-stream"));
}
