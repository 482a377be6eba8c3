//! The API through `app(state)` with `oneshot`: every endpoint, every status code, both boolean shapes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::{app, AppState};
use crate::call::Registry;
use crate::driver::Command;

struct Api {
    state: AppState,
    commands: mpsc::Receiver<Command>,
}

impl Api {
    fn new() -> Self {
        Self::with_queue(16)
    }

    fn with_queue(size: usize) -> Self {
        let registry = Arc::new(Registry::new(100, Duration::from_secs(30)));
        let (tx, commands) = mpsc::channel(size);
        Self {
            state: AppState::new(registry, tx, "sipcast".into()),
            commands,
        }
    }

    async fn call(&self, method: Method, path: &str, body: &str) -> (StatusCode, Value, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = app(self.state.clone(), 4096)
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, value, text)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value, String) {
        self.call(Method::POST, path, &body.to_string()).await
    }
}

fn startup(call_id: &str, stream: &str) -> Value {
    json!({
        "callId": call_id,
        "callee": "bob",
        "sipDomain": "127.0.0.1",
        "sipPort": 5062,
        "sipLogin": "alice",
        "sipPassword": "pa55word-secret",
        "rtmpUrl": "rtmp://127.0.0.1:1935/live",
        "rtmpStream": stream,
        "hasAudio": true,
        "hasVideo": false,
        "appKey": "callApp",
        "toStream": "out1"
    })
}

#[tokio::test]
async fn startup_is_accepted_and_handed_to_the_driver() {
    let mut api = Api::new();
    let (status, body, _) = api
        .post("/rest-api/call/startup", startup("c1", "key-one-secret"))
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    assert!(matches!(api.commands.try_recv(), Ok(Command::Start(_))));
    let (status, body, text) = api
        .post("/rest-api/call/find", json!({"callId": "c1"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let call = &body[0];
    assert_eq!(call["callId"], "c1");
    assert_eq!(call["status"], "TRYING");
    assert_eq!(call["rtmpStreamStatus"], "RTMP_STREAM_WAIT");
    assert_eq!(call["rtmpUrl"], "rtmp://127.0.0.1:1935/live");
    assert_eq!(call["rtmpStream"], "key-...");
    assert_eq!(call["caller"], "alice");
    assert_eq!(call["callee"], "bob");
    assert_eq!(call["hasAudio"], true);
    assert_eq!(call["hasVideo"], false);
    assert_eq!(call["incoming"], false);
    assert_eq!(call["sipStatus"], Value::Null);
    assert!(
        !text.contains("pa55word-secret") && !text.contains("key-one-secret"),
        "{text}"
    );
}

#[tokio::test]
async fn booleans_may_be_strings() {
    let api = Api::new();
    let mut body = startup("c1", "k1-stream");
    body["hasAudio"] = json!("false");
    body["hasVideo"] = json!("true");
    assert_eq!(
        api.post("/rest-api/call/startup", body).await.0,
        StatusCode::OK
    );
    let (_, found, _) = api
        .post("/rest-api/call/find", json!({"callId": "c1"}))
        .await;
    assert_eq!(
        (found[0]["hasAudio"].clone(), found[0]["hasVideo"].clone()),
        (json!(false), json!(true))
    );
}

#[tokio::test]
async fn bad_input_gets_400_naming_the_field_and_creates_nothing() {
    let mut api = Api::new();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("callId", Value::Null, "callId"),
        ("callId", json!(42), "callId"),
        ("callee", Value::Null, "callee"),
        ("rtmpUrl", Value::Null, "rtmpUrl"),
        ("rtmpUrl", json!("http://127.0.0.1/live"), "rtmpUrl"),
        ("rtmpUrl", json!("rtmp:///live"), "rtmpUrl"),
        ("rtmpStream", Value::Null, "rtmpStream"),
        ("rtmpStream", json!("has space"), "rtmpStream"),
        ("hasAudio", json!("yes"), "hasAudio"),
        ("hasVideo", json!(1), "hasVideo"),
        ("sipPort", json!("abc"), "sipPort"),
        ("sipPort", json!(70000), "sipPort"),
        ("sipPort", json!(0), "sipPort"),
        ("sipDomain", Value::Null, "sipDomain"),
        ("sipDomain", json!("bad host!"), "sipDomain"),
        (
            "sipOutboundProxy",
            json!("proxy:notaport"),
            "sipOutboundProxy",
        ),
        ("sipLogin", json!("a b"), "sipLogin"),
        ("sipPassword", json!(123), "sipPassword"),
        ("callee", json!("bo b"), "callee"),
    ];
    for (field, value, expected) in cases {
        let mut body = startup("c1", "k1-stream");
        match value {
            Value::Null => {
                body.as_object_mut().unwrap().remove(field);
            }
            v => body[field] = v,
        }
        let (status, body, _) = api.post("/rest-api/call/startup", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {body}");
        assert_eq!(body["field"], expected, "{field}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    for raw in ["{not json", "[1,2]", "\"text\""] {
        let (status, body, _) = api.call(Method::POST, "/rest-api/call/startup", raw).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{raw}");
        assert!(body["error"].is_string());
    }
    assert!(api.commands.try_recv().is_err(), "nothing was started");
    assert_eq!(
        api.post("/rest-api/call/find_all", json!({})).await.0,
        StatusCode::NOT_FOUND,
        "nothing was created"
    );
}

#[tokio::test]
async fn callee_as_uri_needs_no_domain() {
    let api = Api::new();
    let mut body = startup("c1", "k1-stream");
    body.as_object_mut().unwrap().remove("sipDomain");
    body["callee"] = json!("sip:bob@127.0.0.1:5070");
    assert_eq!(
        api.post("/rest-api/call/startup", body).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn registration_required_is_accepted() {
    let api = Api::new();
    let mut body = startup("c1", "k1-stream");
    body["sipRegisterRequired"] = json!("true");
    let (status, _, _) = api.post("/rest-api/call/startup", body).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn duplicates_get_409() {
    let api = Api::new();
    assert_eq!(
        api.post("/rest-api/call/startup", startup("c1", "stream-a"))
            .await
            .0,
        StatusCode::OK
    );
    let (status, body, _) = api
        .post("/rest-api/call/startup", startup("c1", "stream-b"))
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::CONFLICT, json!("callId"))
    );
    let (status, body, text) = api
        .post("/rest-api/call/startup", startup("c2", "stream-a"))
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::CONFLICT, json!("rtmpStream"))
    );
    assert!(!text.contains("stream-a"), "the key is not echoed: {text}");
    // The running call is untouched.
    let (_, found, _) = api.post("/rest-api/call/find_all", json!({})).await;
    assert_eq!(found.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn terminate_finds_the_call_or_404() {
    let mut api = Api::new();
    let (status, body, _) = api
        .post("/rest-api/call/terminate", json!({"callId": "nope"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());
    let (status, body, _) = api.post("/rest-api/call/terminate", json!({})).await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("callId"))
    );
    api.post("/rest-api/call/startup", startup("c1", "stream-a"))
        .await;
    api.commands.try_recv().unwrap();
    let (status, body, _) = api
        .post("/rest-api/call/terminate", json!({"callId": "c1"}))
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    assert!(matches!(api.commands.try_recv(), Ok(Command::Terminate(_))));
}

#[tokio::test]
async fn find_filters_and_404s() {
    let api = Api::new();
    assert_eq!(
        api.post("/rest-api/call/find", json!({"callId": "x"}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    api.post("/rest-api/call/startup", startup("c1", "stream-a"))
        .await;
    api.post("/rest-api/call/startup", startup("c2", "stream-b"))
        .await;
    let (status, found, _) = api
        .post("/rest-api/call/find", json!({"status": "TRYING"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found.as_array().unwrap().len(), 2);
    assert_eq!(
        api.post("/rest-api/call/find", json!({"status": "ESTABLISHED"}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (status, body, _) = api
        .post("/rest-api/call/find", json!({"status": "DANCING"}))
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("status"))
    );
    let (_, found, _) = api
        .post("/rest-api/call/find", json!({"callId": "c2"}))
        .await;
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["callId"], "c2");
}

#[tokio::test]
async fn find_all_answers_get_and_post() {
    let api = Api::new();
    assert_eq!(
        api.call(Method::GET, "/rest-api/call/find_all", "").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call(Method::POST, "/rest-api/call/find_all", "")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    api.post("/rest-api/call/startup", startup("c1", "stream-a"))
        .await;
    let (status, found, _) = api.call(Method::GET, "/rest-api/call/find_all", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found[0]["callId"], "c1");
    assert_eq!(
        api.call(Method::POST, "/rest-api/call/find_all", "{}")
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn full_queue_answers_503_and_keeps_nothing() {
    let api = Api::with_queue(1);
    assert_eq!(
        api.post("/rest-api/call/startup", startup("c1", "stream-a"))
            .await
            .0,
        StatusCode::OK
    );
    let (status, body, _) = api
        .post("/rest-api/call/startup", startup("c2", "stream-b"))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        api.post("/rest-api/call/find", json!({"callId": "c2"}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let api = Api::new();
    let mut body = startup("c1", "stream-a");
    body["padding"] = json!("x".repeat(8192));
    let (status, _, _) = api.post("/rest-api/call/startup", body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let api = Api::new();
    assert_eq!(
        api.call(Method::POST, "/rest-api/call/nothing", "{}")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call(Method::GET, "/rest-api/call/startup", "").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

/// Answers push commands as the driver would for a call "c1" with targets 1 (its own) and 2.
fn answer_pushes(mut commands: mpsc::Receiver<Command>) {
    use crate::driver::PushError;
    tokio::spawn(async move {
        while let Some(command) = commands.recv().await {
            match command {
                Command::PushStart {
                    call_id,
                    target,
                    reply,
                } => {
                    let answer = match (call_id.as_str(), target.describe().as_str()) {
                        ("c1", "rtmp://127.0.0.1/live/dupl...") => Err(PushError::Duplicate),
                        ("c1", _) => Ok(2),
                        ("early", _) => Err(PushError::NoMedia),
                        _ => Err(PushError::NoCall),
                    };
                    let _ = reply.send(answer);
                }
                Command::PushStop {
                    call_id,
                    target,
                    reply,
                } => {
                    let _ = reply.send(if call_id == "c1" && target == 2 {
                        Ok(())
                    } else {
                        Err(PushError::NoTarget)
                    });
                }
                _ => {}
            }
        }
    });
}

#[tokio::test]
async fn push_startup_and_terminate_route_to_the_driver() {
    let Api { state, commands } = Api::new();
    answer_pushes(commands);
    let api = Api {
        state,
        commands: mpsc::channel(1).1,
    };
    let push = |call: &str, stream: &str| json!({"callId": call, "rtmpUrl": "rtmp://127.0.0.1/live", "rtmpStream": stream});

    let (status, body, _) = api
        .post("/rest-api/push/startup", push("c1", "second-key"))
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"mediaSessionId": "c1/2"}))
    );
    assert_eq!(
        api.post("/rest-api/push/startup", push("c1", "duplicate-key"))
            .await
            .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        api.post("/rest-api/push/startup", push("early", "k-ey1"))
            .await
            .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        api.post("/rest-api/push/startup", push("nope", "k-ey1"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let mut bad = push("c1", "k-ey1");
    bad["rtmpUrl"] = json!("udp://x");
    let (status, body, _) = api.post("/rest-api/push/startup", bad).await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("rtmpUrl"))
    );

    let (status, body, _) = api
        .post(
            "/rest-api/push/terminate",
            json!({"mediaSessionId": "c1/2"}),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    assert_eq!(
        api.post(
            "/rest-api/push/terminate",
            json!({"mediaSessionId": "c1/9"})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let (status, body, _) = api
        .post(
            "/rest-api/push/terminate",
            json!({"mediaSessionId": "garbage"}),
        )
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("mediaSessionId"))
    );
}

#[tokio::test]
async fn push_without_a_driver_answers_503() {
    let Api { state, commands } = Api::new();
    drop(commands);
    let api = Api {
        state,
        commands: mpsc::channel(1).1,
    };
    let body = json!({"callId": "c1", "rtmpUrl": "rtmp://127.0.0.1/live", "rtmpStream": "k-ey1"});
    assert_eq!(
        api.post("/rest-api/push/startup", body).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}
