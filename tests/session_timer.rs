//! Acceptance (issue 5, 3), the one long scenario (about 3 minutes): a 90 s session timer (the minimum) is
//! refreshed by the gateway at half the interval through kamailio, at least twice; when the peer stops
//! answering (SIGSTOP), the session expires and the gateway ends the call with BYE.

mod common;

use std::time::{Duration, Instant};

use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Kamailio, KamailioOptions, Nginx};
use serde_json::json;

const PASSWORD: &str = "Timer-Pa55";

#[test]
fn session_refreshed_twice_then_expires_with_bye_when_the_peer_goes_quiet() {
    let nginx = Nginx::start();
    let mut callee = Baresip::start(BaresipOptions::new("timer"));
    let kamailio = Kamailio::start(KamailioOptions {
        users: vec![("gateway".into(), PASSWORD.into())],
        forward_to: Some(callee.addr()),
        ..Default::default()
    });
    // RTP inactivity would end the frozen peer's call first (after 30 s): this test is about the session timer.
    let gateway = Gateway::start_config(
        "session_expires_secs = 90",
        "[media]\nrtp_timeout_secs = 0\n",
    );
    let reply = gateway.post(
        "/rest-api/call/startup",
        &json!({
            "callId": "timer-call",
            "callee": "timer",
            "sipDomain": "127.0.0.1",
            "sipPort": kamailio.port(),
            "sipLogin": "gateway",
            "sipPassword": PASSWORD,
            "rtmpUrl": nginx.rtmp_url(),
            "rtmpStream": "timer-stream",
        }),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    gateway.wait_for(
        "timer-call",
        "status",
        "ESTABLISHED",
        Duration::from_secs(15),
    );
    let established = Instant::now();
    let refreshes = || {
        kamailio
            .log()
            .lines()
            .filter(|l| l.contains("sipcast-kam: in-dialog INVITE"))
            .count()
    };
    let answered = || gateway.log().matches("SIP session refreshed").count();
    // Refreshes at 45 s and 90 s, each answered by baresip through the proxy.
    assert!(
        common::wait_until(Duration::from_secs(100), || answered() >= 2),
        "two refreshes in 100 s; kamailio saw {}:\n{}",
        refreshes(),
        kamailio.log_tail(20)
    );
    assert!(refreshes() >= 2);
    let second = established.elapsed();
    assert!(
        second >= Duration::from_secs(85),
        "refreshed at half the interval, not earlier ({second:?})"
    );
    gateway.wait_for(
        "timer-call",
        "status",
        "ESTABLISHED",
        Duration::from_secs(1),
    );

    // The peer stops answering: the next refresh (~45 s later) gets no 2xx, the session expires
    // (interval - 30 s after the last refresh) and the gateway sends BYE.
    callee.process().signal("STOP");
    let bye_sent = kamailio.wait_for_log("sipcast-kam: in-dialog BYE", Duration::from_secs(75));
    callee.process().signal("CONT");
    assert!(
        bye_sent,
        "no BYE after the refreshes stopped being answered"
    );
    let ended = gateway.wait_for("timer-call", "status", "FINISH", Duration::from_secs(40));
    assert!(
        ended["info"]
            .as_str()
            .unwrap_or_default()
            .contains("session"),
        "ended by the session timer: {ended}"
    );
    assert!(
        callee.wait_for_bye(Duration::from_secs(10)),
        "baresip got the BYE once resumed:\n{}",
        callee.log_tail(20)
    );
    eprintln!("call lasted {:?}", established.elapsed());
}
