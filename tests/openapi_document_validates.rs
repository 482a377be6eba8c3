//! Acceptance (issue 3, 7): the OpenAPI document the running gateway serves validates with
//! openapi-spec-validator (PyPI, installed by scripts/install-deps.sh into tests/tools/venv) and lists
//! every endpoint with its methods.

mod common;

use std::process::Command;

use common::gateway::Gateway;
use common::peers::PeerDir;

const ENDPOINTS: &[(&str, &[&str])] = &[
    ("/rest-api/call/startup", &["post"]),
    ("/rest-api/call/terminate", &["post"]),
    ("/rest-api/call/find", &["post"]),
    ("/rest-api/call/find_all", &["get", "post"]),
    ("/rest-api/call/send_dtmf", &["post"]),
    ("/rest-api/call/inject_stream", &["post"]),
    ("/rest-api/push/startup", &["post"]),
    ("/rest-api/push/find", &["post"]),
    ("/rest-api/push/find_all", &["get", "post"]),
    ("/rest-api/push/terminate", &["post"]),
    ("/rest-api/push/mute", &["post"]),
    ("/rest-api/push/unmute", &["post"]),
    ("/RESTCall/call", &["post"]),
    ("/RESTCall/sendDTMF", &["post"]),
    ("/rest-api/events", &["get"]),
    ("/rest-api/stats", &["get"]),
    ("/rest-api/openapi.json", &["get"]),
];

#[test]
fn the_served_openapi_document_validates_and_lists_every_endpoint() {
    let gateway = Gateway::start();
    let reply = gateway.get("/rest-api/openapi.json");
    assert_eq!(reply.status, 200);
    let doc = &reply.json;

    let paths = doc["paths"].as_object().expect("paths");
    let mut listed: Vec<&str> = paths.keys().map(String::as_str).collect();
    listed.sort_unstable();
    let mut expected: Vec<&str> = ENDPOINTS.iter().map(|(p, _)| *p).collect();
    expected.sort_unstable();
    assert_eq!(listed, expected);
    for (path, methods) in ENDPOINTS {
        for method in *methods {
            let op = &paths[*path][*method];
            assert!(op.is_object(), "{method} {path}");
            let codes = op["responses"].as_object().unwrap();
            assert!(
                codes.contains_key("200") || codes.contains_key("400"),
                "{method} {path}"
            );
            assert!(codes.contains_key("401"), "{method} {path}");
        }
    }

    let validator = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/tools/venv/bin/openapi-spec-validator"
    );
    assert!(
        std::path::Path::new(validator).exists(),
        "{validator} is missing: run scripts/install-deps.sh test"
    );
    let dir = PeerDir::new("openapi");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &reply.text).unwrap();
    let out = Command::new(validator).arg(&file).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the document does not validate:\n{text}"
    );
    assert!(text.contains("OK"), "{text}");

    // And the validator is not a rubber stamp: a broken copy fails.
    let mut broken = doc.clone();
    broken["paths"]["/rest-api/call/find"]["post"]["responses"] = serde_json::json!("none");
    let broken_file = dir.path().join("broken.json");
    std::fs::write(&broken_file, broken.to_string()).unwrap();
    let out = Command::new(validator).arg(&broken_file).output().unwrap();
    assert!(!out.status.success(), "a broken document passed");
}
