//! Issue 7, acceptance 3: a short run of the capacity benchmark's load generator (`tools/loadgen`), so it
//! cannot rot. 5 calls from the gateway to 5 loadgen user agents, each streaming PCMU for about 5 s into
//! nginx-rtmp; then the loadgen hangs up on request (SIGTERM: BYE on every call) and reports what it did.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::gateway::Gateway;
use common::peers::{Nginx, PeerDir, PeerProcess};
use serde_json::{json, Value};

const CALLS: usize = 5;

/// The loadgen binary: a workspace member, built into the same target directory as this test (`cargo test
/// --workspace` builds it; when this test is run alone it is built here).
fn loadgen_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/loadgen_smoke-<hash> -> target/<profile>/loadgen
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("loadgen");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "-p", "loadgen", "--bin", "loadgen"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build -p loadgen failed");
    }
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}

#[test]
fn loadgen_answers_streams_and_hangs_up_five_calls() {
    let nginx = Nginx::start();
    let gateway = Gateway::start();
    let dir = PeerDir::new("loadgen");
    let mut cmd = Command::new(loadgen_bin());
    cmd.args([
        "uas",
        "--sip",
        "127.0.0.1:0",
        "--users",
        &CALLS.to_string(),
        "--rtp-ports",
        "42000-47999",
        "--threads",
        "1",
        "--pacers",
        "1",
    ]);
    let mut loadgen = PeerProcess::spawn(
        "loadgen",
        cmd,
        &dir.path().join("loadgen.log"),
        Duration::from_secs(10),
    );
    let mut sip_port = None;
    common::wait_until(Duration::from_secs(15), || {
        sip_port = loadgen.log().lines().find_map(|l| {
            l.strip_prefix("loadgen ready sip=")?
                .split_whitespace()
                .next()?
                .rsplit_once(':')?
                .1
                .parse::<u16>()
                .ok()
        });
        sip_port.is_some()
    });
    let Some(sip_port) = sip_port else {
        loadgen.fail("never printed `loadgen ready sip=...`")
    };

    let streams: Vec<String> = (0..CALLS).map(|i| format!("loadgen-smoke-{i}")).collect();
    for (i, stream) in streams.iter().enumerate() {
        let reply = gateway.post(
            "/rest-api/call/startup",
            &json!({
                "callId": stream, "callee": format!("ua{i}"), "sipDomain": "127.0.0.1",
                "sipPort": sip_port, "rtmpUrl": nginx.rtmp_url(), "rtmpStream": stream,
                "hasAudio": true
            }),
        );
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    for stream in &streams {
        gateway.wait_for(stream, "status", "ESTABLISHED", Duration::from_secs(20));
        gateway.wait_for(
            stream,
            "rtmpStreamStatus",
            "RTMP_STREAM_ACTIVE",
            Duration::from_secs(20),
        );
        assert!(
            nginx.wait_for_publishing(stream, Duration::from_secs(10)),
            "{stream} is not published on nginx"
        );
    }
    // Let the calls stream for a while (a duration, not a timed assertion).
    std::thread::sleep(Duration::from_secs(5));
    for stream in &streams {
        let call = gateway.find(stream).expect("call listed");
        assert!(
            call["mediaStats"]["rtpPacketsIn"].as_u64().unwrap_or(0) > 0,
            "the gateway received the loadgen's RTP: {call}"
        );
    }

    // Hang up on request: SIGTERM makes every user agent send BYE, wait for the 200s, report and exit.
    loadgen.signal("TERM");
    if loadgen.wait_exit(Duration::from_secs(20)).is_none() {
        loadgen.fail("did not exit after SIGTERM");
    }
    let log = loadgen.log();
    let summary: Value = log
        .lines()
        .find_map(|l| l.strip_prefix("loadgen summary "))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_else(|| loadgen.fail("no `loadgen summary {json}` line"));
    let sip = &summary["sip"];
    assert_eq!(sip["answered"], json!(CALLS), "{summary}");
    assert_eq!(sip["established"], json!(CALLS), "{summary}");
    assert_eq!(sip["byes_sent"], json!(CALLS), "{summary}");
    assert_eq!(
        sip["bye_ok"],
        json!(CALLS),
        "every BYE answered 200: {summary}"
    );
    assert_eq!(sip["parse_errors"], json!(0), "{summary}");
    assert!(
        summary["rtp"]["packets"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
    let calls = summary["calls"].as_array().expect("per-call reports");
    assert_eq!(calls.len(), CALLS, "{summary}");
    for call in calls {
        assert_eq!(call["ended_by"], "local-bye", "{call}");
        assert!(call["rtp_packets"].as_u64().unwrap_or(0) > 0, "{call}");
    }
    for stream in &streams {
        gateway.wait_for(stream, "status", "FINISH", Duration::from_secs(15));
        assert!(
            nginx.wait_for_publish_end(stream, Duration::from_secs(15)),
            "{stream} still published after the hang-up"
        );
    }
}
