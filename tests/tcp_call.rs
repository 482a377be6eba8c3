//! Acceptance (issue 5, 4): the end-to-end call over TCP (`;transport=tcp` in the callee URI): INVITE,
//! answer, media, BYE, all signalling on TCP with RFC 3261 18.3 framing.

mod common;

use std::time::Duration;

use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};
use common::probe;
use serde_json::json;

#[test]
fn call_over_tcp_records_and_ends_with_bye() {
    let nginx = Nginx::start();
    let callee = Baresip::start(BaresipOptions::new("tcpbob"));
    let gateway = Gateway::start();
    let uri = format!("sip:tcpbob@127.0.0.1:{};transport=tcp", callee.sip_port());
    let reply = gateway.post(
        "/rest-api/call/startup",
        &json!({
            "callId": "tcp-call",
            "callee": uri,
            "rtmpUrl": nginx.rtmp_url(),
            "rtmpStream": "tcp-stream",
        }),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    gateway.wait_for("tcp-call", "status", "ESTABLISHED", Duration::from_secs(15));
    gateway.wait_for(
        "tcp-call",
        "rtmpStreamStatus",
        "RTMP_STREAM_ACTIVE",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        gateway
            .post("/rest-api/call/terminate", &json!({ "callId": "tcp-call" }))
            .status,
        200
    );
    let ended = gateway.wait_for("tcp-call", "status", "FINISH", Duration::from_secs(10));
    assert_eq!(ended["sipStatus"], 200, "{ended}");
    assert!(callee.wait_for_bye(Duration::from_secs(5)));
    let log = gateway.log();
    assert!(
        log.contains("transport=\"TCP\"") || log.contains("transport=TCP"),
        "placed over TCP"
    );
    assert!(
        log.contains("SIP TCP connection"),
        "a TCP connection carried it"
    );
    assert!(nginx.wait_for_publish_end("tcp-stream", Duration::from_secs(10)));
    let recordings = nginx.recordings("tcp-stream");
    assert_eq!(recordings.len(), 1);
    assert!(probe::audio_duration(&recordings[0]) > 2.0);
}
