//! Acceptance (issue 4, 4): call/send_dtmf with type RFC2833 (RFC 4733 events on the generated audio) and
//! with type INFO (SIP INFO, application/dtmf-relay): baresip reports the digits, each the way it came.

mod common;

use std::time::Duration;

use common::calls::{start_streaming, startup, terminate};
use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, DtmfVia, Nginx};
use serde_json::json;

#[test]
fn rfc2833_and_info_digits_reach_baresip() {
    let nginx = Nginx::start();
    let callee = Baresip::start(BaresipOptions::new("ivr"));
    let gateway = Gateway::start();
    start_streaming(
        &gateway,
        &startup("d", &callee, "ivr", &nginx.rtmp_url(), "dtmf-stream"),
    );

    let reply = gateway.post(
        "/rest-api/call/send_dtmf",
        &json!({"callId": "d", "dtmf": "1#", "type": "RFC2833"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        callee.wait_for_digits("1#", Duration::from_secs(10)),
        "RTP digits: {:?}\n{}",
        callee.received_dtmf(),
        callee.log_tail(20)
    );

    let reply = gateway.post(
        "/rest-api/call/send_dtmf",
        &json!({"callId": "d", "dtmf": "59", "type": "INFO"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        callee.wait_for_digits("1#59", Duration::from_secs(10)),
        "INFO digits: {:?}",
        callee.received_dtmf()
    );
    let vias: Vec<DtmfVia> = callee
        .received_dtmf()
        .into_iter()
        .map(|(_, via)| via)
        .collect();
    assert_eq!(
        vias,
        vec![DtmfVia::Rtp, DtmfVia::Rtp, DtmfVia::Info, DtmfVia::Info]
    );

    // The digits are a PIN to someone: never in the gateway's log.
    assert!(!gateway.log().contains("1#") && !gateway.log().contains("Signal=5"));
    assert_eq!(
        gateway.find("d").unwrap()["status"],
        "ESTABLISHED",
        "DTMF leaves the call alone"
    );
    terminate(&gateway, "d");
}
