//! Acceptance (issue 4, 3): baresip hangs up when it receives no RTP for `rtp_timeout` seconds. With
//! hasAudio=true the gateway's keep-alive element sends it silence from the call's own RTP port, so the call
//! stays up for more than twice that timeout; with generation off, baresip drops the call.

mod common;

use std::time::Duration;

use common::calls::{start_streaming, startup, terminate};
use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};

const RTP_TIMEOUT_SECS: u32 = 3;

fn callee() -> Baresip {
    Baresip::start(BaresipOptions {
        rtp_timeout_secs: Some(RTP_TIMEOUT_SECS),
        ..BaresipOptions::new("strict")
    })
}

#[test]
fn keepalive_on_keeps_the_call_and_off_loses_it() {
    let nginx = Nginx::start();

    let with = callee();
    let gateway = Gateway::start();
    start_streaming(
        &gateway,
        &startup("on", &with, "strict", &nginx.rtmp_url(), "keepalive-on"),
    );
    std::thread::sleep(Duration::from_secs(u64::from(2 * RTP_TIMEOUT_SECS) + 2));
    let call = gateway.find("on").unwrap();
    assert_eq!(
        call["status"], "ESTABLISHED",
        "kept alive past 2 x rtp_timeout: {call}"
    );
    assert!(
        !with.rtp_timed_out(),
        "baresip saw RTP all along:\n{}",
        with.log_tail(20)
    );
    terminate(&gateway, "on");

    let without = callee();
    let quiet = Gateway::start_with("[media]\ngenerate_av_for_ua = \"none\"\n");
    start_streaming(
        &quiet,
        &startup(
            "off",
            &without,
            "strict",
            &nginx.rtmp_url(),
            "keepalive-off",
        ),
    );
    let ended = quiet.wait_for(
        "off",
        "status",
        "FINISH",
        Duration::from_secs(u64::from(4 * RTP_TIMEOUT_SECS)),
    );
    assert!(
        without.rtp_timed_out(),
        "baresip hung up for lack of RTP:\n{}",
        without.log_tail(20)
    );
    assert!(
        ended["info"].as_str().is_some_and(|i| i.contains("BYE")),
        "{ended}"
    );
}
