//! Acceptance (issue 5, 1): kamailio as registrar with digest. A call with sipRegisterRequired=true to a
//! baresip registered there goes REGISTER 401 -> 200, then INVITE via kamailio 407 -> 200; the registration
//! is refreshed (short expires) and removed when the call ends.

mod common;

use std::time::Duration;

use common::gateway::Gateway;
use common::peers::{
    Baresip, BaresipOptions, Kamailio, KamailioOptions, Nginx, KAM_AUTH_OK, KAM_REGISTERED,
    KAM_UNREGISTERED,
};
use serde_json::json;

const GW_PASSWORD: &str = "Gw-Regi5ter-pw";
const BOB_PASSWORD: &str = "Bob-Regi5ter-pw";

#[test]
fn registers_with_digest_calls_refreshes_and_unregisters() {
    let nginx = Nginx::start();
    let kamailio = Kamailio::start(KamailioOptions {
        users: vec![
            ("gateway".into(), GW_PASSWORD.into()),
            ("bob".into(), BOB_PASSWORD.into()),
        ],
        min_expires: Some(5),
        ..Default::default()
    });
    let callee = Baresip::start(BaresipOptions {
        registrar: Some(kamailio.addr()),
        auth_password: Some(BOB_PASSWORD.into()),
        ..BaresipOptions::new("bob")
    });
    assert!(
        callee.wait_for_registered(Duration::from_secs(10)),
        "baresip registered:\n{}",
        callee.log_tail(20)
    );
    let gateway = Gateway::start_with_sip("register_expires_secs = 10");
    let registered = |log: &str| {
        log.lines()
            .filter(|l| l.contains(KAM_REGISTERED) && l.contains("registered gateway at"))
            .count()
    };

    let reply = gateway.post(
        "/rest-api/call/startup",
        &json!({
            "callId": "reg-call",
            "callee": "bob",
            "sipDomain": "127.0.0.1",
            "sipPort": kamailio.port(),
            "sipLogin": "gateway",
            "sipPassword": GW_PASSWORD,
            "sipRegisterRequired": true,
            "rtmpUrl": nginx.rtmp_url(),
            "rtmpStream": "registered-stream",
            "hasAudio": true
        }),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    gateway.wait_for("reg-call", "status", "ESTABLISHED", Duration::from_secs(15));
    let log = kamailio.log();
    assert!(
        log.contains("sipcast-kam: challenge REGISTER from gateway"),
        "REGISTER was challenged (401):\n{}",
        kamailio.log_tail(30)
    );
    assert!(log.contains("sipcast-kam: auth ok REGISTER from gateway"));
    assert_eq!(registered(&log), 1, "one binding before the INVITE");
    let invite_challenge = log
        .find("sipcast-kam: challenge INVITE from gateway")
        .expect("INVITE challenged (407)");
    // "auth ok REGISTER" is logged before save() sends the 200 (the "registered" line comes after it and
    // can race the INVITE, handled by another kamailio process): the INVITE came after the REGISTER's 200.
    assert!(
        log.find("sipcast-kam: auth ok REGISTER from gateway")
            .unwrap()
            < invite_challenge,
        "REGISTER came first"
    );
    assert!(
        kamailio.count_log(KAM_AUTH_OK) >= 3,
        "bob, REGISTER, INVITE"
    );
    assert!(callee.wait_for_established(Duration::from_secs(5)));

    // Granted 10 s, refreshed at 5 s: two refreshes within 12 s.
    assert!(
        common::wait_until(Duration::from_secs(15), || registered(&kamailio.log()) >= 3),
        "registration refreshed:\n{}",
        kamailio.log_tail(30)
    );
    gateway.wait_for("reg-call", "status", "ESTABLISHED", Duration::from_secs(1));

    assert_eq!(
        gateway
            .post("/rest-api/call/terminate", &json!({ "callId": "reg-call" }))
            .status,
        200
    );
    gateway.wait_for("reg-call", "status", "FINISH", Duration::from_secs(10));
    assert!(callee.wait_for_bye(Duration::from_secs(5)));
    assert!(
        kamailio.wait_for_log(
            &format!("{KAM_UNREGISTERED} gateway"),
            Duration::from_secs(10)
        ),
        "the binding was removed after the call:\n{}",
        kamailio.log_tail(30)
    );
    assert!(!gateway.log().contains(GW_PASSWORD));
}

#[test]
fn failed_registration_fails_the_call_with_its_status() {
    let nginx = Nginx::start();
    let kamailio = Kamailio::start(KamailioOptions {
        users: vec![("gateway".into(), GW_PASSWORD.into())],
        ..Default::default()
    });
    let gateway = Gateway::start();
    let reply = gateway.post(
        "/rest-api/call/startup",
        &json!({
            "callId": "bad-reg",
            "callee": "bob",
            "sipDomain": "127.0.0.1",
            "sipPort": kamailio.port(),
            "sipLogin": "gateway",
            "sipPassword": "wrong-password",
            "sipRegisterRequired": "true",
            "rtmpUrl": nginx.rtmp_url(),
            "rtmpStream": "never",
        }),
    );
    assert_eq!(reply.status, 200, "{}", reply.text);
    let failed = gateway.wait_for("bad-reg", "status", "FAILED", Duration::from_secs(15));
    assert_eq!(failed["sipStatus"], 401, "{failed}");
    assert!(
        !kamailio.log().contains("challenge INVITE"),
        "no INVITE was sent"
    );
}
