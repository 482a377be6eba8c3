//! Acceptance (issue 3, 2): with the webhook receiver down, calls still work (ESTABLISHED, RTMP
//! active, FINISH) and the drop counter in `GET /rest-api/stats` rises; the drops are logged.

mod common;

use std::time::Duration;

use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};
use serde_json::json;

#[test]
fn calls_go_on_when_the_receiver_is_down_and_drops_are_counted() {
    let nginx = Nginx::start();
    let callee = Baresip::start(BaresipOptions::new("unhooked"));
    // A port nothing listens on.
    let dead_port = common::free_tcp_port();
    let gateway = Gateway::start_with(&format!(
        "[webhooks]\nmax_attempts = 2\nbackoff_initial_ms = 50\nbackoff_max_ms = 50\n\n\
         [webhooks.apps]\ncallApp = \"http://127.0.0.1:{dead_port}/hook\"\n"
    ));
    let before = gateway.get("/rest-api/stats").json;
    assert_eq!(before["webhooks"]["dropped"], 0, "{before}");

    let reply = gateway.post(
        "/rest-api/call/startup",
        &json!({
            "callId": "call-unhooked",
            "callee": "unhooked",
            "sipDomain": "127.0.0.1",
            "sipPort": callee.sip_port(),
            "rtmpUrl": nginx.rtmp_url(),
            "rtmpStream": "unhooked-stream",
            "appKey": "callApp"
        }),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    gateway.wait_for(
        "call-unhooked",
        "status",
        "ESTABLISHED",
        Duration::from_secs(15),
    );
    gateway.wait_for(
        "call-unhooked",
        "rtmpStreamStatus",
        "RTMP_STREAM_ACTIVE",
        Duration::from_secs(10),
    );
    assert!(
        nginx.wait_for_publishing("unhooked-stream", Duration::from_secs(10)),
        "the stream reaches nginx"
    );
    let reply = gateway.post(
        "/rest-api/call/terminate",
        &json!({ "callId": "call-unhooked" }),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    gateway.wait_for("call-unhooked", "status", "FINISH", Duration::from_secs(10));
    assert!(
        callee.wait_for_bye(Duration::from_secs(5)),
        "baresip received no BYE"
    );

    // Every event of the call (at least TRYING, ESTABLISHED, RTMP active, FINISH) is given up.
    let mut stats = json!(null);
    let counted = common::wait_until(Duration::from_secs(20), || {
        stats = gateway.get("/rest-api/stats").json;
        stats["webhooks"]["dropped"].as_u64().unwrap_or(0) >= 4
    });
    assert!(counted, "the drop counter did not rise: {stats}");
    assert_eq!(stats["webhooks"]["delivered"], 0, "{stats}");
    assert!(
        stats["webhooks"]["retries"].as_u64().unwrap_or(0) >= 4,
        "{stats}"
    );
    assert!(
        gateway.log().contains("webhook event dropped"),
        "drops are logged"
    );
}
