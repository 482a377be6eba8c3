//! Acceptance (issue 6, 3): two targets, one pointing at a closed port. The good one records the whole call;
//! the bad one reports RTMP_CONNECTION_FAILED with the reason and keeps retrying without disturbing the other.
//! push/terminate ends the bad one and leaves the call and the good one alone.

mod common;

use std::time::Duration;

use common::calls::{start_streaming, startup, terminate};
use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};
use common::probe;
use serde_json::json;

#[test]
fn a_refusing_target_never_disturbs_the_good_one() {
    let nginx = Nginx::start();
    let callee = Baresip::start(BaresipOptions::new("tone"));
    let gateway = Gateway::start();
    let established = start_streaming(
        &gateway,
        &startup("c1", &callee, "tone", &nginx.rtmp_url(), "good-stream"),
    );

    let closed_port = common::free_tcp_port();
    let reply = gateway.post(
        "/rest-api/push/startup",
        &json!({ "callId": "c1", "rtmpUrl": format!("rtmp://127.0.0.1:{closed_port}/live"), "rtmpStream": "bad-stream" }),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let session = reply.json["mediaSessionId"]
        .as_str()
        .expect("mediaSessionId")
        .to_owned();
    let again = gateway.post(
        "/rest-api/push/startup",
        &json!({ "callId": "c1", "rtmpUrl": format!("rtmp://127.0.0.1:{closed_port}/live"), "rtmpStream": "bad-stream" }),
    );
    assert_eq!(again.status, 409, "the same target twice: {}", again.text);

    let call = gateway.wait_until_call("c1", Duration::from_secs(10), "target 2 failed", |c| {
        c["mediaStats"]["targets"].as_array().is_some_and(|t| {
            t.iter()
                .any(|t| t["id"] == 2 && t["status"] == "RTMP_CONNECTION_FAILED")
        })
    });
    let bad = gateway.target("c1", 2).unwrap();
    assert!(
        bad["info"]
            .as_str()
            .is_some_and(|i| i.to_lowercase().contains("refused")),
        "the reason: {bad}"
    );
    assert_eq!(
        call["rtmpStreamStatus"], "RTMP_STREAM_ACTIVE",
        "the good target is untouched: {call}"
    );

    // It keeps retrying, and the good one keeps streaming meanwhile.
    gateway.wait_until_call(
        "c1",
        Duration::from_secs(15),
        "target 2 retried twice",
        |_| {
            gateway
                .target("c1", 2)
                .and_then(|t| t["reconnects"].as_u64())
                .unwrap_or(0)
                >= 2
        },
    );
    let call = gateway.find("c1").unwrap();
    assert_eq!(
        (call["status"].clone(), call["rtmpStreamStatus"].clone()),
        (json!("ESTABLISHED"), json!("RTMP_STREAM_ACTIVE"))
    );
    assert!(nginx.is_publishing("good-stream"));

    let stopped = gateway.post(
        "/rest-api/push/terminate",
        &json!({ "mediaSessionId": session }),
    );
    assert_eq!(stopped.status, 200, "{}", stopped.text);
    assert!(
        common::wait_until(Duration::from_secs(2), || gateway.target("c1", 2).is_none()),
        "target 2 is gone"
    );
    assert_eq!(
        gateway
            .post(
                "/rest-api/push/terminate",
                &json!({ "mediaSessionId": session })
            )
            .status,
        404
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        gateway.find("c1").unwrap()["rtmpStreamStatus"],
        "RTMP_STREAM_ACTIVE"
    );

    let call_time = established.elapsed().as_secs_f64();
    terminate(&gateway, "c1");
    assert!(common::wait_until(Duration::from_secs(10), || !nginx
        .is_publishing("good-stream")));
    let recordings = nginx.recordings("good-stream");
    assert_eq!(
        recordings.len(),
        1,
        "one uninterrupted recording: {recordings:?}"
    );
    let seconds = probe::audio_duration(&recordings[0]);
    assert!(
        seconds >= 0.9 * call_time,
        "good target recorded {seconds:.2} s of {call_time:.2} s"
    );
}
