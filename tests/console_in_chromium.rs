//! Acceptance (issue 3, 6): in headless Chromium (Debian's, driven by playwright-core) the web console
//! starts a call to baresip, shows ESTABLISHED and RTMP_STREAM_ACTIVE live from the event stream,
//! remembers the form without the password, sends a DTMF digit from the keypad, tries a push target,
//! and hangs up. Screenshots are kept in target/test-artifacts/.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};
use serde_json::Value;

#[test]
fn the_console_drives_a_call_in_chromium() {
    let root = env!("CARGO_MANIFEST_DIR");
    assert!(
        std::path::Path::new(root)
            .join("tests/browser/node_modules/playwright-core")
            .exists(),
        "playwright-core is missing: run scripts/install-deps.sh test"
    );
    let shots = std::path::Path::new(root).join("target/test-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    for name in ["console-established.png", "console-finished.png"] {
        let _ = std::fs::remove_file(shots.join(name));
    }

    let nginx = Nginx::start();
    let callee = Baresip::start(BaresipOptions::new("browser"));
    let gateway = Gateway::start();
    let stream = format!("consoleKey{}SECRET", std::process::id());
    let password = "console-Pa55word-not-stored";

    let log_path = shots.join("console-node.log");
    let mut child = Command::new("node")
        .arg(format!("{root}/tests/browser/console.mjs"))
        .env("SIPCAST_URL", gateway.base_url())
        .env("CALL_ID", "call-console")
        .env("CALLEE", "browser")
        .env("SIP_PORT", callee.sip_port().to_string())
        .env("SIP_PASSWORD", password)
        .env("RTMP_URL", nginx.rtmp_url())
        .env("RTMP_STREAM", &stream)
        .env("SCREENSHOT_DIR", &shots)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("node is installed (scripts/install-deps.sh test)");
    let finished = common::wait_until(Duration::from_secs(150), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !finished {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = std::fs::read_to_string(&log_path).unwrap_or_default();
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    if !(finished && out.status.success() && result["ok"] == true) {
        gateway.fail(&format!(
            "the console run failed (finished: {finished}, {}):\n{stdout}\n{stderr}",
            out.status
        ));
    }

    // The form was remembered without the password.
    let stored = result["stored"].as_str().unwrap_or_default();
    assert!(stored.contains("\"callee\":\"browser\""), "{stored}");
    assert!(!stored.contains(password), "{stored}");
    assert_eq!(result["restored"]["callee"], "browser");
    assert_eq!(result["restored"]["sipPassword"], "");
    // The digit went from the keypad through the gateway to baresip (RFC 4733 on the generated audio).
    let dtmf = result["dtmfResult"].as_str().unwrap_or_default();
    assert!(
        dtmf.contains("DTMF 5 (RFC2833) to call-console: OK"),
        "{dtmf}"
    );
    assert!(
        callee.received_digits().contains('5'),
        "baresip got the digit: {:?}",
        callee.received_dtmf()
    );
    // The push target was added to the live call.
    let push = result["pushResult"].as_str().unwrap_or_default();
    assert!(
        push.contains("push/startup: OK") && push.contains("mediaSessionId call-console/2"),
        "{push}"
    );
    assert_eq!(result["consoleErrors"], serde_json::json!([]), "{result}");

    // The call really happened and ended.
    assert!(
        callee.wait_for_bye(Duration::from_secs(5)),
        "baresip got no BYE"
    );
    assert_eq!(gateway.find("call-console").unwrap()["status"], "FINISH");
    assert!(
        !nginx.recordings(&stream).is_empty(),
        "the stream was recorded"
    );
    for name in ["console-established.png", "console-finished.png"] {
        let png = std::fs::read(shots.join(name)).unwrap_or_default();
        assert!(png.starts_with(b"\x89PNG"), "{name} is a screenshot");
    }
    for response in gateway.responses() {
        assert!(!response.contains(&stream) && !response.contains(password));
    }
    assert!(!gateway.log().contains(password) && !gateway.log().contains(&stream));
}
