//! The API through `app(state)` with `oneshot`: every endpoint, every status code, both body shapes
//! (flat and the legacy nested `connection`), booleans as strings, the event stream, the console, the
//! OpenAPI document and the production profile's authentication. Commands that expect the driver's
//! answer are answered by the test in the driver's place.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::{app, AppState, Settings};
use crate::call::command::{CommandError, DtmfKind, PushSnapshot};
use crate::call::{Registry, RtmpStatus};
use crate::config::{AuthConfig, Profile, UserConfig, WebhooksConfig};
use crate::driver::Command;
use crate::notify::Notifier;

struct Api {
    state: AppState,
    commands: mpsc::Receiver<Command>,
}

fn settings() -> Settings {
    Settings {
        sip_user: "sipcast".into(),
        max_body_bytes: 4096,
        users: None,
        reply_timeout: Duration::from_millis(300),
    }
}

async fn send(
    state: &AppState,
    method: Method,
    path: &str,
    body: &str,
    auth: Option<&str>,
) -> (StatusCode, Value, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(auth) = auth {
        request = request.header(header::AUTHORIZATION, auth);
    }
    let response = app(state.clone())
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, value, text)
}

impl Api {
    fn new() -> Self {
        Self::with(16, settings())
    }

    fn with_queue(size: usize) -> Self {
        Self::with(size, settings())
    }

    fn with(size: usize, settings: Settings) -> Self {
        let (notifier, sink) = Notifier::start(&WebhooksConfig::default()).unwrap();
        let registry = Arc::new(Registry::with_events(100, Duration::from_secs(30), sink));
        let (tx, commands) = mpsc::channel(size);
        Self {
            state: AppState::new(registry, tx, notifier, settings),
            commands,
        }
    }

    async fn call(&self, method: Method, path: &str, body: &str) -> (StatusCode, Value, String) {
        send(&self.state, method, path, body, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value, String) {
        self.call(Method::POST, path, &body.to_string()).await
    }

    /// POSTs `body` while answering the one command it sends with `driver`, as the driver would.
    async fn post_answered(
        &mut self,
        path: &str,
        body: Value,
        driver: impl FnOnce(Command),
    ) -> (StatusCode, Value, String) {
        let body = body.to_string();
        let request = send(&self.state, Method::POST, path, &body, None);
        let commands = &mut self.commands;
        let answer = async {
            let command = commands.recv().await.expect("a command");
            driver(command);
        };
        let (reply, ()) = tokio::join!(request, answer);
        reply
    }

    /// Starts a call c1 and takes its Start command off the queue.
    async fn live_call(&mut self, call_id: &str, stream: &str) {
        let (status, _, text) = self
            .post("/rest-api/call/startup", startup(call_id, stream))
            .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(matches!(self.commands.try_recv(), Ok(Command::Start(_))));
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
async fn oversized_body_is_a_400_and_creates_nothing() {
    let mut api = Api::new();
    let mut body = startup("c1", "stream-a");
    body["padding"] = json!("x".repeat(8192));
    let (status, body, _) = api.post("/rest-api/call/startup", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], Value::Null);
    assert!(body["error"].as_str().unwrap().contains("4096"), "{body}");
    assert!(api.commands.try_recv().is_err());
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
    let (status, body, _) = api.call(Method::GET, "/rest-api/call/startup", "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body["error"].is_string(), "JSON errors everywhere: {body}");
}

#[tokio::test]
async fn legacy_nested_connection_on_both_paths() {
    let mut api = Api::new();
    let legacy = |call_id: &str, stream: &str| {
        json!({
            "callId": call_id,
            "callee": "bob",
            "rtmpUrl": "rtmp://127.0.0.1:1935/live",
            "rtmpStream": stream,
            "hasAudio": "true",
            "connection": {
                "sipLogin": "legacyuser",
                "sipPassword": "legacy-secret-pw",
                "sipDomain": "127.0.0.1",
                "sipPort": "5062",
                "sipRegisterRequired": "false",
                "appKey": "callApp",
                "somethingElse": 1
            }
        })
    };
    for (path, call_id, stream) in [
        ("/RESTCall/call", "old-1", "old-stream-1"),
        ("/rest-api/call/startup", "old-2", "old-stream-2"),
    ] {
        let (status, body, _) = api.post(path, legacy(call_id, stream)).await;
        assert_eq!((status, body), (StatusCode::OK, json!({})), "{path}");
        assert!(matches!(api.commands.try_recv(), Ok(Command::Start(_))));
        let (_, found, text) = api
            .post("/rest-api/call/find", json!({"callId": call_id}))
            .await;
        assert_eq!(found[0]["caller"], "legacyuser", "{path}");
        assert_eq!(found[0]["appKey"], "callApp");
        assert!(!text.contains("legacy-secret-pw"));
    }
    // The same field twice, differently: refused, naming it.
    let mut conflicting = legacy("old-3", "old-stream-3");
    conflicting["sipLogin"] = json!("someone-else");
    let (status, body, _) = api.post("/RESTCall/call", conflicting).await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("sipLogin"))
    );
    let mut not_object = legacy("old-4", "old-stream-4");
    not_object["connection"] = json!("sip:x");
    let (status, body, _) = api.post("/RESTCall/call", not_object).await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("connection"))
    );
    // A bad value inside connection names its field.
    let mut bad = legacy("old-5", "old-stream-5");
    bad["connection"]["sipPort"] = json!("port");
    let (status, body, _) = api.post("/RESTCall/call", bad).await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("sipPort"))
    );
    assert!(api.commands.try_recv().is_err(), "no half-created call");
}

#[tokio::test]
async fn send_dtmf_validates_and_routes_to_the_driver() {
    let mut api = Api::new();
    let cases = [
        (json!({"dtmf": "1"}), "callId"),
        (json!({"callId": "c1"}), "dtmf"),
        (json!({"callId": "c1", "dtmf": "12x"}), "dtmf"),
        (json!({"callId": "c1", "dtmf": 5}), "dtmf"),
        (json!({"callId": "c1", "dtmf": "1", "type": "SIP"}), "type"),
        (json!({"callId": "c1", "dumf": ["1"]}), "dtmf"),
    ];
    for (body, field) in cases {
        let (status, answer, _) = api.post("/rest-api/call/send_dtmf", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["field"], field, "{body}");
    }
    let (status, body, _) = api
        .post(
            "/rest-api/call/send_dtmf",
            json!({"callId": "nope", "dtmf": "1"}),
        )
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::NOT_FOUND, json!("callId"))
    );
    api.live_call("c1", "stream-a").await;

    // Routed with digits and type; the driver's answer decides the status.
    let (status, body, _) = api
        .post_answered(
            "/rest-api/call/send_dtmf",
            json!({"callId": "c1", "dtmf": "12#", "type": "INFO"}),
            |command| match command {
                Command::SendDtmf { dtmf, reply, .. } => {
                    assert_eq!((dtmf.digits(), dtmf.kind), ("12#", DtmfKind::Info));
                    reply.send(Ok(())).unwrap();
                }
                other => panic!("{other:?}"),
            },
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    for (error, expected) in [
        (
            CommandError::NotSupported("sending DTMF"),
            StatusCode::NOT_IMPLEMENTED,
        ),
        (CommandError::NotEstablished, StatusCode::CONFLICT),
        (CommandError::NoSuchCall, StatusCode::NOT_FOUND),
    ] {
        let (status, body, _) = api
            .post_answered(
                "/rest-api/call/send_dtmf",
                json!({"callId": "c1", "dtmf": "5"}),
                |command| match command {
                    Command::SendDtmf { dtmf, reply, .. } => {
                        assert_eq!(dtmf.kind, DtmfKind::Rfc2833, "RFC2833 by default");
                        reply.send(Err(error)).unwrap();
                    }
                    other => panic!("{other:?}"),
                },
            )
            .await;
        assert_eq!(status, expected, "{body}");
        assert!(body["error"].is_string());
    }
    // A driver that never answers: 503 after the reply timeout.
    let (status, _, _) = api
        .post_answered(
            "/rest-api/call/send_dtmf",
            json!({"callId": "c1", "dtmf": "5"}),
            drop,
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn legacy_send_dtmf_accepts_the_dumf_misspelling() {
    let mut api = Api::new();
    api.live_call("c1", "stream-a").await;
    for body in [
        json!({"callId": "c1", "dtmf": "7"}),
        json!({"callId": "c1", "dumf": "7"}),
    ] {
        let (status, _, _) = api
            .post_answered("/RESTCall/sendDTMF", body, |command| match command {
                Command::SendDtmf { dtmf, reply, .. } => {
                    assert_eq!(dtmf.digits(), "7");
                    reply.send(Ok(())).unwrap();
                }
                other => panic!("{other:?}"),
            })
            .await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn send_dtmf_with_a_full_queue_is_503() {
    let mut api = Api::with_queue(1);
    api.live_call("c1", "stream-a").await;
    api.state
        .commands
        .try_send(Command::Terminate(999))
        .unwrap();
    let (status, _, _) = api
        .post(
            "/rest-api/call/send_dtmf",
            json!({"callId": "c1", "dtmf": "1"}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn inject_stream_is_documented_404_or_400() {
    let mut api = Api::new();
    for (body, field) in [
        (json!({"streamName": "s"}), "callId"),
        (json!({"callId": "c1"}), "streamName"),
        (json!({"callId": "c1", "streamName": 3}), "streamName"),
    ] {
        let (status, answer, _) = api.post("/rest-api/call/inject_stream", body).await;
        assert_eq!(
            (status, answer["field"].clone()),
            (StatusCode::BAD_REQUEST, json!(field))
        );
    }
    let (status, body, _) = api
        .post(
            "/rest-api/call/inject_stream",
            json!({"callId": "nope", "streamName": "s"}),
        )
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::NOT_FOUND, json!("callId"))
    );
    api.live_call("c1", "stream-a").await;
    let (status, body, _) = api
        .post(
            "/rest-api/call/inject_stream",
            json!({"callId": "c1", "streamName": "s"}),
        )
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::NOT_FOUND, json!("streamName"))
    );
    assert!(
        api.commands.try_recv().is_err(),
        "nothing reached the driver"
    );
}

fn push_snapshot(muted: bool) -> PushSnapshot {
    PushSnapshot {
        media_session_id: "push-1".into(),
        call_id: "c1".into(),
        rtmp_url: "rtmp://127.0.0.1/second".into(),
        rtmp_stream_redacted: "seco...".into(),
        rtmp_status: RtmpStatus::Wait,
        muted,
    }
}

#[tokio::test]
async fn push_startup_validates_and_routes() {
    let mut api = Api::new();
    for (body, field) in [
        (json!({"rtmpUrl": "rtmp://h/app/key"}), "callId"),
        (json!({"callId": "c1"}), "rtmpUrl"),
        (
            json!({"callId": "c1", "rtmpUrl": "http://h/app/key"}),
            "rtmpUrl",
        ),
        (
            json!({"callId": "c1", "rtmpUrl": "rtmp://h/app"}),
            "rtmpStream",
        ),
        (
            json!({"callId": "c1", "rtmpUrl": "rtmp://h/app", "rtmpStream": "a b"}),
            "rtmpStream",
        ),
        (
            json!({"callId": "c1", "rtmpUrl": "rtmp://h/app/k", "muted": "maybe"}),
            "muted",
        ),
    ] {
        let (status, answer, _) = api.post("/rest-api/push/startup", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["field"], field, "{body}");
    }
    let (status, body, _) = api
        .post(
            "/rest-api/push/startup",
            json!({"callId": "nope", "rtmpUrl": "rtmp://h/app/k"}),
        )
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::NOT_FOUND, json!("callId"))
    );
    let mut start = startup("c1", "stream-a");
    start["toStream"] = json!("out-c1");
    api.post("/rest-api/call/startup", start).await;
    api.commands.try_recv().unwrap();

    // By streamName (the call's toStream), the key as the URL's last segment.
    let (status, body, text) = api
        .post_answered(
            "/rest-api/push/startup",
            json!({"streamName": "out-c1", "rtmpUrl": "rtmp://127.0.0.1/second/second-SECRET", "muted": "true"}),
            |command| match command {
                Command::PushStart { target, reply, .. } => {
                    assert_eq!(target.rtmp_url, "rtmp://127.0.0.1/second");
                    assert_eq!(target.stream.expose(), "second-SECRET");
                    assert!(target.muted);
                    reply.send(Ok(push_snapshot(true))).unwrap();
                }
                other => panic!("{other:?}"),
            },
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(body["mediaSessionId"], "push-1");
    assert_eq!(body["rtmpStream"], "seco...");
    assert!(!text.contains("second-SECRET"));
    for (error, expected) in [
        (CommandError::TargetExists, StatusCode::CONFLICT),
        (
            CommandError::NotSupported("push/startup"),
            StatusCode::NOT_IMPLEMENTED,
        ),
    ] {
        let (status, _, _) = api
            .post_answered(
                "/rest-api/push/startup",
                json!({"callId": "c1", "rtmpUrl": "rtmp://h/app", "rtmpStream": "k2"}),
                |command| match command {
                    Command::PushStart { reply, .. } => reply.send(Err(error)).unwrap(),
                    other => panic!("{other:?}"),
                },
            )
            .await;
        assert_eq!(status, expected);
    }
}

#[tokio::test]
async fn push_find_terminate_mute_unmute_route_to_the_driver() {
    let mut api = Api::new();
    api.live_call("c1", "stream-a").await;
    // find: 200 with targets, 404 with none, and how a driver refusal maps; find_all on GET and POST.
    let (status, body, _) = api
        .post_answered(
            "/rest-api/push/find",
            json!({"callId": "c1", "mediaSessionId": "push-1"}),
            |command| match command {
                Command::PushFind { filter, reply } => {
                    assert_eq!(filter.media_session_id.as_deref(), Some("push-1"));
                    assert!(filter.leg.is_some());
                    reply.send(Ok(vec![push_snapshot(false)])).unwrap();
                }
                other => panic!("{other:?}"),
            },
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["mediaSessionId"], "push-1");
    let (status, _, _) = api
        .post_answered("/rest-api/push/find", json!({}), |command| match command {
            Command::PushFind { reply, .. } => reply.send(Ok(vec![])).unwrap(),
            other => panic!("{other:?}"),
        })
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body, _) = api
        .post("/rest-api/push/find", json!({"callId": "nope"}))
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::NOT_FOUND, json!("callId"))
    );
    let (status, body, _) = api
        .post("/rest-api/push/find", json!({"mediaSessionId": 7}))
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("mediaSessionId"))
    );
    for method in [Method::GET, Method::POST] {
        let request = send(&api.state, method, "/rest-api/push/find_all", "", None);
        let commands = &mut api.commands;
        let driver = async {
            match commands.recv().await.unwrap() {
                Command::PushFind { filter, reply } => {
                    assert_eq!(filter, Default::default());
                    reply
                        .send(Err(CommandError::NotSupported("push/find")))
                        .unwrap();
                }
                other => panic!("{other:?}"),
            }
        };
        let ((status, _, _), ()) = tokio::join!(request, driver);
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    }
    // terminate, mute, unmute: 400 without mediaSessionId, else the driver decides.
    for path in [
        "/rest-api/push/terminate",
        "/rest-api/push/mute",
        "/rest-api/push/unmute",
    ] {
        let (status, body, _) = api.post(path, json!({})).await;
        assert_eq!(
            (status, body["field"].clone()),
            (StatusCode::BAD_REQUEST, json!("mediaSessionId")),
            "{path}"
        );
        for answer in [
            Ok(()),
            Err(CommandError::NoSuchTarget),
            Err(CommandError::NotSupported("push")),
        ] {
            let expected = match &answer {
                Ok(()) => StatusCode::OK,
                Err(CommandError::NoSuchTarget) => StatusCode::NOT_FOUND,
                Err(_) => StatusCode::NOT_IMPLEMENTED,
            };
            let (status, _, _) = api
                .post_answered(
                    path,
                    json!({"mediaSessionId": "push-1"}),
                    |command| match command {
                        Command::PushStop {
                            media_session_id,
                            reply,
                        } => {
                            assert_eq!(path, "/rest-api/push/terminate");
                            assert_eq!(media_session_id, "push-1");
                            reply.send(answer).unwrap();
                        }
                        Command::PushMute { muted, reply, .. } => {
                            assert_eq!(muted, path.ends_with("/mute"));
                            reply.send(answer).unwrap();
                        }
                        other => panic!("{other:?}"),
                    },
                )
                .await;
            assert_eq!(status, expected, "{path}");
        }
    }
}

#[tokio::test]
async fn events_stream_status_changes_without_secrets() {
    let api = Api::new();
    let response = app(api.state.clone())
        .oneshot(
            Request::builder()
                .uri("/rest-api/events")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();
    api.post("/rest-api/call/startup", startup("c1", "key-one-secret"))
        .await;
    let mut text = String::new();
    while !text.contains("\n\n") {
        let frame = body.frame().await.expect("an event").unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(text.starts_with("event: call\n"), "{text}");
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let event: Value = serde_json::from_str(data).unwrap();
    assert_eq!(event["callId"], "c1");
    assert_eq!(event["status"], "TRYING");
    assert_eq!(event["mediaProvider"], "SIP");
    assert_eq!(event["rtmpStream"], "key-...");
    assert!(!text.contains("key-one-secret") && !text.contains("pa55word-secret"));
    // Closing the notifier (shutdown) ends the stream.
    api.state.notifier.close();
    while let Some(frame) = body.frame().await {
        frame.unwrap();
    }
}

#[tokio::test]
async fn stats_count_calls_and_events() {
    let api = Api::new();
    api.post("/rest-api/call/startup", startup("c1", "stream-a"))
        .await;
    let (status, stats, _) = api.call(Method::GET, "/rest-api/stats", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["liveCalls"], 1);
    assert_eq!(stats["events"], 1);
    assert_eq!(stats["webhooks"]["dropped"], 0);
}

#[tokio::test]
async fn openapi_lists_every_endpoint_and_the_parsers_fields() {
    let api = Api::new();
    let (status, doc, _) = api.call(Method::GET, "/rest-api/openapi.json", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/rest-api/call/startup", "post"),
        ("/rest-api/call/terminate", "post"),
        ("/rest-api/call/find", "post"),
        ("/rest-api/call/find_all", "get"),
        ("/rest-api/call/find_all", "post"),
        ("/rest-api/call/send_dtmf", "post"),
        ("/rest-api/call/inject_stream", "post"),
        ("/rest-api/push/startup", "post"),
        ("/rest-api/push/find", "post"),
        ("/rest-api/push/find_all", "get"),
        ("/rest-api/push/find_all", "post"),
        ("/rest-api/push/terminate", "post"),
        ("/rest-api/push/mute", "post"),
        ("/rest-api/push/unmute", "post"),
        ("/RESTCall/call", "post"),
        ("/RESTCall/sendDTMF", "post"),
        ("/rest-api/events", "get"),
        ("/rest-api/stats", "get"),
        ("/rest-api/openapi.json", "get"),
    ] {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path} missing");
        assert!(op["responses"]["401"].is_object(), "{method} {path}: 401");
        // Every documented path is served (not the router's 404).
        let (status, body, _) = api.call(method.parse().unwrap(), path, "{}").await;
        assert!(
            status != StatusCode::NOT_FOUND || body["error"] != "no such endpoint",
            "{method} {path} is documented but not routed"
        );
    }
    assert_eq!(paths.len(), 17, "{:?}", paths.keys().collect::<Vec<_>>());
    // The documented startup body lists exactly the fields the hand-written parser knows.
    let schemas = &doc["components"]["schemas"];
    let mut documented: Vec<&str> = schemas["StartupBody"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "connection")
        .collect();
    documented.sort_unstable();
    let mut parsed = super::dto::STARTUP_FIELDS.to_vec();
    parsed.sort_unstable();
    assert_eq!(documented, parsed);
    let mut filter: Vec<&str> = schemas["FindBody"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    filter.sort_unstable();
    let mut parsed = super::dto::FILTER_FIELDS.to_vec();
    parsed.sort_unstable();
    assert_eq!(filter, parsed);
    let dtmf = schemas["DtmfBody"]["properties"].as_object().unwrap();
    for field in super::dto::DTMF_FIELDS {
        assert!(dtmf.contains_key(*field), "{field}");
    }
}

#[tokio::test]
async fn console_is_served_from_the_binary() {
    let api = Api::new();
    for (path, kind, marker) in [
        ("/", "text/html", "startup-form"),
        ("/console/app.js", "text/javascript", "EventSource"),
        ("/console/style.css", "text/css", ".keypad"),
    ] {
        let response = app(api.state.clone())
            .oneshot(Request::builder().uri(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert!(headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with(kind));
        assert!(headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'self'"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(marker), "{path}");
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{path}: no foreign assets"
        );
    }
}

#[tokio::test]
async fn production_profile_needs_basic_credentials_everywhere() {
    let hash = super::auth::hash_password("s3cret pass").unwrap();
    let users = super::auth::Users::from_config(&AuthConfig {
        profile: Profile::Production,
        realm: "sipcast".into(),
        users: vec![UserConfig {
            name: "admin".into(),
            password_hash: hash,
        }],
    });
    let api = Api::with(
        16,
        Settings {
            users,
            ..settings()
        },
    );
    use base64::Engine;
    let basic = |credentials: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    };
    for path in ["/rest-api/stats", "/", "/rest-api/openapi.json", "/nowhere"] {
        let (status, body, _) = send(&api.state, Method::GET, path, "", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(body["error"].is_string());
        for wrong in ["admin:wrong", "root:s3cret pass", "admin"] {
            let (status, _, _) = send(&api.state, Method::GET, path, "", Some(&basic(wrong))).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {wrong}");
        }
    }
    let (status, _, _) = send(
        &api.state,
        Method::GET,
        "/rest-api/stats",
        "",
        Some(&basic("admin:s3cret pass")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let response = app(api.state.clone())
        .oneshot(
            Request::builder()
                .uri("/rest-api/stats")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        "Basic realm=\"sipcast\", charset=\"UTF-8\""
    );
}

#[tokio::test]
async fn find_filters_on_more_fields_and_checks_their_types() {
    let api = Api::new();
    let mut body = startup("c1", "stream-a");
    body["toStream"] = json!("out-1");
    api.post("/rest-api/call/startup", body).await;
    api.post("/rest-api/call/startup", startup("c2", "stream-b"))
        .await;
    for (filter, count) in [
        (json!({"toStream": "out-1"}), Some(1)),
        (json!({"rtmpStreamStatus": "RTMP_STREAM_WAIT"}), Some(2)),
        (json!({"caller": "alice", "appKey": "callApp"}), Some(2)),
        (json!({"sipStatus": 200}), None),
        (json!({"unknownField": "ignored"}), Some(2)),
    ] {
        let (status, found, _) = api.post("/rest-api/call/find", filter.clone()).await;
        match count {
            Some(n) => {
                assert_eq!(status, StatusCode::OK, "{filter}");
                assert_eq!(found.as_array().unwrap().len(), n, "{filter}");
            }
            None => assert_eq!(status, StatusCode::NOT_FOUND, "{filter}"),
        }
    }
    for (filter, field) in [
        (json!({"rtmpStreamStatus": "LIVE"}), "rtmpStreamStatus"),
        (json!({"sipStatus": "abc"}), "sipStatus"),
        (json!({"sipStatus": 99}), "sipStatus"),
        (json!({"callee": ["x"]}), "callee"),
    ] {
        let (status, body, _) = api.post("/rest-api/call/find", filter).await;
        assert_eq!(
            (status, body["field"].clone()),
            (StatusCode::BAD_REQUEST, json!(field))
        );
    }
}
