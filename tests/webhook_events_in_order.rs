//! Acceptance (issue 3, 2): a real local HTTP receiver gets the status webhooks of an e2e call
//! (baresip + nginx-rtmp) in order: TRYING, RING, ESTABLISHED with RTMP_STREAM_WAIT then
//! RTMP_STREAM_ACTIVE, FINISH. The `/rest-api/events` stream carries the same events; neither it, the
//! webhooks, the API answers nor the log hold the SIP password or the full stream key.

mod common;

use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};
use common::receiver::Receiver;
use serde_json::{json, Value};

/// (status, rtmpStreamStatus) of each event, consecutive repeats collapsed (sipStatus changes, e.g.
/// 100 Trying, are events too).
fn steps(events: &[Value]) -> Vec<(String, String)> {
    let mut steps: Vec<(String, String)> = Vec::new();
    for e in events {
        let step = (
            e["status"].as_str().unwrap_or("?").to_owned(),
            e["rtmpStreamStatus"].as_str().unwrap_or("?").to_owned(),
        );
        if steps.last() != Some(&step) {
            steps.push(step);
        }
    }
    steps
}

#[test]
fn webhooks_and_events_follow_the_call_in_order() {
    let nginx = Nginx::start();
    let callee = Baresip::start(BaresipOptions::new("hooked"));
    let receiver = Receiver::start();
    let gateway = Gateway::start_with(&format!(
        "[webhooks]\nnode_id = \"node-test\"\n\n[webhooks.apps]\ncallApp = \"{}\"\n",
        receiver.url("/sipcast/events")
    ));
    let stream = format!("hookKey{}SECRET", std::process::id());
    let password = "hook-Pa55word-never-shown";

    // Subscribe to the event stream before the call starts.
    let sse_lines: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let lines = sse_lines.clone();
        let url = format!("{}/rest-api/events", gateway.base_url());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(None)
                .build()
                .unwrap();
            let Ok(response) = client.get(url).send() else {
                return;
            };
            for line in BufReader::new(response).lines() {
                let Ok(line) = line else { return };
                lines.lock().unwrap().push(line);
            }
        });
    }
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            gateway.get("/rest-api/stats").json["subscribers"] == 1
        }),
        "the event stream never connected"
    );

    let reply = gateway.post(
        "/rest-api/call/startup",
        &json!({
            "callId": "call-hooked",
            "callee": "hooked",
            "sipDomain": "127.0.0.1",
            "sipPort": callee.sip_port(),
            "sipPassword": password,
            "rtmpUrl": nginx.rtmp_url(),
            "rtmpStream": stream,
            "appKey": "callApp"
        }),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    gateway.wait_for(
        "call-hooked",
        "status",
        "ESTABLISHED",
        Duration::from_secs(15),
    );
    gateway.wait_for(
        "call-hooked",
        "rtmpStreamStatus",
        "RTMP_STREAM_ACTIVE",
        Duration::from_secs(10),
    );
    let reply = gateway.post(
        "/rest-api/call/terminate",
        &json!({ "callId": "call-hooked" }),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    gateway.wait_for("call-hooked", "status", "FINISH", Duration::from_secs(10));
    let finished = |events: &[Value]| events.iter().any(|e| e["status"] == "FINISH");
    if !common::wait_until(Duration::from_secs(10), || finished(&receiver.events())) {
        gateway.fail(&format!(
            "the receiver never got FINISH: {:?}",
            receiver.events()
        ));
    }

    let events = receiver.events();
    let statuses: Vec<(String, String)> = steps(&events);
    let expected: Vec<(String, String)> = [
        ("TRYING", "RTMP_STREAM_WAIT"),
        ("RING", "RTMP_STREAM_WAIT"),
        ("ESTABLISHED", "RTMP_STREAM_WAIT"),
        ("ESTABLISHED", "RTMP_STREAM_ACTIVE"),
        ("FINISH", "RTMP_STREAM_ACTIVE"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(statuses, expected, "webhook events: {events:#?}");
    let sequences: Vec<u64> = events
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "in order: {sequences:?}"
    );
    for request in receiver.requests() {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/sipcast/events")
        );
        assert!(request.content_type.starts_with("application/json"));
    }
    let first = &events[0];
    for (field, value) in [
        ("nodeId", json!("node-test")),
        ("appKey", json!("callApp")),
        ("callId", json!("call-hooked")),
        ("incoming", json!(false)),
        ("callee", json!("hooked")),
        ("caller", json!("sipcast")),
        ("visibleName", json!("sipcast")),
        ("hasAudio", json!(true)),
        ("hasVideo", json!(false)),
        ("mediaProvider", json!("SIP")),
        ("rtmpUrl", json!(nginx.rtmp_url())),
        ("rtmpStream", json!("hook...")),
    ] {
        assert_eq!(first[field], value, "{field} in {first}");
    }
    assert!(first["sessionId"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(events
        .iter()
        .any(|e| e["status"] == "ESTABLISHED" && e["sipStatus"] == 200));

    // The event stream saw the same events, in the same order.
    let sse_finished = || {
        sse_lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("data: ") && l.contains("\"FINISH\""))
    };
    assert!(
        common::wait_until(Duration::from_secs(10), sse_finished),
        "the event stream never showed FINISH"
    );
    let sse_text = sse_lines.lock().unwrap().join("\n");
    let sse_events: Vec<Value> = sse_lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert_eq!(steps(&sse_events), expected, "{sse_text}");
    assert!(sse_text.contains("event: call"), "{sse_text}");

    // The receiver has every body; the gateway counts a delivery once it has read the receiver's answer,
    // which can be a moment later.
    let delivered_all = || {
        gateway.get("/rest-api/stats").json["webhooks"]["delivered"].as_u64()
            == Some(events.len() as u64)
    };
    common::wait_until(Duration::from_secs(5), delivered_all);
    let stats = gateway.get("/rest-api/stats").json;
    assert_eq!(stats["webhooks"]["dropped"], 0, "{stats}");
    assert_eq!(
        stats["webhooks"]["delivered"].as_u64(),
        Some(events.len() as u64),
        "{stats}"
    );

    // Secrets: not in any webhook body, event, API answer or log line.
    let hooks: Vec<String> = receiver.requests().into_iter().map(|r| r.body).collect();
    let log = gateway.log();
    for secret in [password, stream.as_str()] {
        for body in &hooks {
            assert!(!body.contains(secret), "webhook leaks {secret}: {body}");
        }
        assert!(!sse_text.contains(secret), "event stream leaks {secret}");
        assert!(!log.contains(secret), "log leaks {secret}");
        for response in gateway.responses() {
            assert!(!response.contains(secret), "API leaks {secret}: {response}");
        }
    }
}
