//! Acceptance (issue 3, 5): a table of malformed requests against the running gateway. Each gets 400
//! with `{"error", "field"}` naming the field at fault (null when the body as a whole is), the process
//! stays up, and no call is left behind.

mod common;

use common::gateway::Gateway;
use serde_json::{json, Value};

/// A valid startup body for `base`; each case breaks one thing in it.
fn base() -> Value {
    json!({
        "callId": "bad-1",
        "callee": "bob",
        "sipDomain": "127.0.0.1",
        "sipPort": 5999,
        "rtmpUrl": "rtmp://127.0.0.1:1935/live",
        "rtmpStream": "stream-key",
        "hasAudio": true
    })
}

fn with(field: &str, value: Value) -> String {
    let mut body = base();
    body[field] = value;
    body.to_string()
}

fn without(field: &str) -> String {
    let mut body = base();
    body.as_object_mut().unwrap().remove(field);
    body.to_string()
}

#[test]
fn malformed_requests_get_400_naming_the_field() {
    let mut gateway = Gateway::start();
    const STARTUP: &str = "/rest-api/call/startup";
    let huge = format!("{{\"callId\":\"{}\"}}", "x".repeat(70 * 1024));
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        // The body as a whole.
        (STARTUP, "{not json".into(), None),
        (STARTUP, "[1,2,3]".into(), None),
        (STARTUP, "\"a string\"".into(), None),
        (STARTUP, "42".into(), None),
        (STARTUP, "{\"callId\": \"a\",}".into(), None),
        (STARTUP, "{\"callId\": \"\u{0}\"".into(), None),
        (STARTUP, huge.clone(), None),
        ("/RESTCall/call", huge, None),
        // Missing fields.
        (STARTUP, "{}".into(), Some("callId")),
        (STARTUP, without("callId"), Some("callId")),
        (STARTUP, without("callee"), Some("callee")),
        (STARTUP, without("rtmpUrl"), Some("rtmpUrl")),
        (STARTUP, without("rtmpStream"), Some("rtmpStream")),
        (STARTUP, without("sipDomain"), Some("sipDomain")),
        // Wrong types.
        (STARTUP, with("callId", json!(42)), Some("callId")),
        (STARTUP, with("callId", json!({"a": 1})), Some("callId")),
        (STARTUP, with("callee", json!(["bob"])), Some("callee")),
        (STARTUP, with("hasAudio", json!("yes")), Some("hasAudio")),
        (STARTUP, with("hasVideo", json!(1)), Some("hasVideo")),
        (
            STARTUP,
            with("sipPassword", json!(123)),
            Some("sipPassword"),
        ),
        (STARTUP, with("sipLogin", json!(true)), Some("sipLogin")),
        (STARTUP, with("appKey", json!(1.5)), Some("appKey")),
        (
            STARTUP,
            with("callId", json!("x".repeat(300))),
            Some("callId"),
        ),
        (STARTUP, with("callId", json!("a\u{7}b")), Some("callId")),
        // Bad URLs and addresses.
        (
            STARTUP,
            with("rtmpUrl", json!("http://127.0.0.1/live")),
            Some("rtmpUrl"),
        ),
        (
            STARTUP,
            with("rtmpUrl", json!("rtmp:///live")),
            Some("rtmpUrl"),
        ),
        (
            STARTUP,
            with("rtmpUrl", json!("rtmp://host/ live")),
            Some("rtmpUrl"),
        ),
        (
            STARTUP,
            with("rtmpUrl", json!("127.0.0.1/live")),
            Some("rtmpUrl"),
        ),
        (
            STARTUP,
            with("rtmpStream", json!("a key")),
            Some("rtmpStream"),
        ),
        (STARTUP, with("sipPort", json!("abc")), Some("sipPort")),
        (STARTUP, with("sipPort", json!(0)), Some("sipPort")),
        (STARTUP, with("sipPort", json!(65536)), Some("sipPort")),
        (STARTUP, with("sipPort", json!(-1)), Some("sipPort")),
        (
            STARTUP,
            with("sipDomain", json!("bad host!")),
            Some("sipDomain"),
        ),
        (
            STARTUP,
            with("sipDomain", json!("host:99999")),
            Some("sipDomain"),
        ),
        (
            STARTUP,
            with("sipOutboundProxy", json!("proxy:port")),
            Some("sipOutboundProxy"),
        ),
        (STARTUP, with("callee", json!("bo b")), Some("callee")),
        (STARTUP, with("callee", json!("sip:")), Some("callee")),
        (STARTUP, with("sipLogin", json!("a b")), Some("sipLogin")),
        // The legacy shape.
        (STARTUP, with("connection", json!("x")), Some("connection")),
        (
            "/RESTCall/call",
            with("connection", json!({"sipPort": "port"})),
            Some("sipPort"),
        ),
        (
            "/RESTCall/call",
            with("connection", json!({"sipDomain": "other"})),
            Some("sipDomain"),
        ),
        // Other endpoints.
        ("/rest-api/call/terminate", "{}".into(), Some("callId")),
        (
            "/rest-api/call/terminate",
            "{\"callId\": 7}".into(),
            Some("callId"),
        ),
        (
            "/rest-api/call/find",
            "{\"status\": \"DANCING\"}".into(),
            Some("status"),
        ),
        (
            "/rest-api/call/find",
            "{\"sipStatus\": \"x\"}".into(),
            Some("sipStatus"),
        ),
        ("/rest-api/call/find", "[]".into(), None),
        (
            "/rest-api/call/send_dtmf",
            "{\"dtmf\": \"1\"}".into(),
            Some("callId"),
        ),
        (
            "/rest-api/call/send_dtmf",
            "{\"callId\": \"a\"}".into(),
            Some("dtmf"),
        ),
        (
            "/rest-api/call/send_dtmf",
            "{\"callId\": \"a\", \"dtmf\": \"9x\"}".into(),
            Some("dtmf"),
        ),
        (
            "/rest-api/call/send_dtmf",
            "{\"callId\": \"a\", \"dtmf\": \"9\", \"type\": \"SMS\"}".into(),
            Some("type"),
        ),
        (
            "/RESTCall/sendDTMF",
            "{\"callId\": \"a\", \"dumf\": 9}".into(),
            Some("dtmf"),
        ),
        (
            "/rest-api/call/inject_stream",
            "{\"callId\": \"a\"}".into(),
            Some("streamName"),
        ),
        (
            "/rest-api/push/startup",
            "{\"rtmpUrl\": \"rtmp://h/a/k\"}".into(),
            Some("callId"),
        ),
        (
            "/rest-api/push/startup",
            "{\"callId\": \"a\", \"rtmpUrl\": \"ftp://h/a/k\"}".into(),
            Some("rtmpUrl"),
        ),
        (
            "/rest-api/push/startup",
            "{\"callId\": \"a\", \"rtmpUrl\": \"rtmp://h/app\"}".into(),
            Some("rtmpStream"),
        ),
        (
            "/rest-api/push/terminate",
            "{}".into(),
            Some("mediaSessionId"),
        ),
        (
            "/rest-api/push/mute",
            "{\"mediaSessionId\": 1}".into(),
            Some("mediaSessionId"),
        ),
        ("/rest-api/push/unmute", "not json".into(), None),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());

    let client = reqwest::blocking::Client::new();
    for (i, (path, body, field)) in cases.iter().enumerate() {
        let response = client
            .post(format!("{}{path}", gateway.base_url()))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .unwrap_or_else(|e| gateway.fail(&format!("case {i} {path}: {e}")));
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        let answer: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("case {i} {path}: not JSON: {text}"));
        let shown: String = body.chars().take(80).collect();
        assert_eq!(status, 400, "case {i} {path} {shown}: {text}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "case {i}: {text}"
        );
        let obj = answer.as_object().unwrap();
        assert!(
            obj.contains_key("field"),
            "case {i}: always a field key: {text}"
        );
        assert_eq!(
            answer["field"],
            json!(field),
            "case {i} {path} {shown}: {text}"
        );
    }

    // Still up, and nothing was created.
    assert!(gateway.process().is_running(), "the gateway died");
    assert_eq!(gateway.get("/rest-api/call/find_all").status, 404);
    assert_eq!(gateway.get("/rest-api/stats").json["liveCalls"], 0);
    assert_eq!(
        gateway.get("/rest-api/stats").json["events"],
        0,
        "no call ever existed"
    );
}
