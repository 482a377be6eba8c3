//! Acceptance (issue 2, 3): kamailio challenges INVITEs with 407 in front of baresip. With the right
//! password the call goes through and records; with a wrong one it ends FAILED with sipStatus 407 after
//! exactly one authenticated retry.

mod common;

use std::time::Duration;

use common::gateway::Gateway;
use common::peers::{
    Baresip, BaresipOptions, Kamailio, KamailioOptions, Nginx, KAM_AUTH_FAILED, KAM_AUTH_OK,
    KAM_CHALLENGED,
};
use common::probe;
use serde_json::json;

const PASSWORD: &str = "Right-Pa55-for-kamailio";

fn startup(
    call_id: &str,
    kamailio: &Kamailio,
    nginx: &Nginx,
    stream: &str,
    password: &str,
) -> serde_json::Value {
    json!({
        "callId": call_id,
        "callee": "bob",
        "sipDomain": "127.0.0.1",
        "sipPort": kamailio.port(),
        "sipLogin": "gateway",
        "sipAuthenticationName": "gateway",
        "sipPassword": password,
        "rtmpUrl": nginx.rtmp_url(),
        "rtmpStream": stream,
        "hasAudio": true
    })
}

#[test]
fn right_password_records_and_wrong_password_fails_with_407_after_one_retry() {
    let nginx = Nginx::start();
    let callee = Baresip::start(BaresipOptions::new("bob"));
    let kamailio = Kamailio::start(KamailioOptions {
        users: vec![("gateway".into(), PASSWORD.into())],
        forward_to: Some(callee.addr()),
        ..Default::default()
    });
    let gateway = Gateway::start();

    // Right password: 407, INVITE with Proxy-Authorization, relayed, answered, recorded.
    let reply = gateway.post(
        "/rest-api/call/startup",
        &startup("good", &kamailio, &nginx, "proxied-stream", PASSWORD),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    gateway.wait_for("good", "status", "ESTABLISHED", Duration::from_secs(15));
    gateway.wait_for(
        "good",
        "rtmpStreamStatus",
        "RTMP_STREAM_ACTIVE",
        Duration::from_secs(10),
    );
    assert!(
        kamailio.count_log(KAM_CHALLENGED) >= 1,
        "kamailio challenged:\n{}",
        kamailio.log_tail(20)
    );
    assert!(
        kamailio.count_log(KAM_AUTH_OK) >= 1,
        "kamailio accepted the credentials:\n{}",
        kamailio.log_tail(20)
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        gateway
            .post("/rest-api/call/terminate", &json!({ "callId": "good" }))
            .status,
        200
    );
    gateway.wait_for("good", "status", "FINISH", Duration::from_secs(10));
    assert!(
        callee.wait_for_bye(Duration::from_secs(5)),
        "the BYE went through the proxy to baresip"
    );
    assert!(common::wait_until(Duration::from_secs(10), || !nginx
        .is_publishing("proxied-stream")));
    let recordings = nginx.recordings("proxied-stream");
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    assert_eq!(
        probe::ffprobe(&recordings[0])
            .audio()
            .map(|a| a.codec_name.clone()),
        Some("aac".into())
    );
    assert!(probe::audio_duration(&recordings[0]) > 2.5);

    // Wrong password: one retry, then FAILED with the challenge's status.
    let challenges_before = kamailio.count_log(KAM_CHALLENGED);
    let failures_before = kamailio.count_log(KAM_AUTH_FAILED);
    let reply = gateway.post(
        "/rest-api/call/startup",
        &startup("bad", &kamailio, &nginx, "never-stream", "wrong-password"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let failed = gateway.wait_for("bad", "status", "FAILED", Duration::from_secs(15));
    assert_eq!(failed["sipStatus"], 407, "{failed}");
    // Give a looping client time to show itself, then count.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        kamailio.count_log(KAM_AUTH_FAILED) - failures_before,
        1,
        "exactly one authenticated retry:\n{}",
        kamailio.log_tail(20)
    );
    assert_eq!(
        kamailio.count_log(KAM_CHALLENGED) - challenges_before,
        2,
        "first INVITE and the retry were challenged"
    );
    assert!(nginx.recordings("never-stream").is_empty());

    let log = gateway.log();
    for secret in [PASSWORD, "wrong-password", "proxied-stream"] {
        assert!(!log.contains(secret), "log leaks {secret}");
    }
}
