//! Sans-IO tests of the user agent: a scripted peer answers the datagrams it emits, time is synthetic.

use super::*;
use crate::secret::Password;
use crate::sip::message::{parse, Incoming, StartLine, Transport};

const PEER: &str = "127.0.0.1:5062";

fn config() -> UaConfig {
    UaConfig {
        advertised_host: "127.0.0.1".into(),
        advertised_port: 5060,
        user_agent: "sipcast-test".into(),
        timers: Timers::default(),
        no_answer_timeout: Duration::from_secs(60),
        // Most tests are about RFC 3261; the session timer tests turn it on.
        session_expires: None,
        ..UaConfig::default()
    }
}

fn offer() -> Offer {
    Offer {
        address: "127.0.0.1".parse().unwrap(),
        audio_port: 20000,
        audio_direction: sdp::Direction::SendRecv,
        video_port: None,
        video_direction: sdp::Direction::RecvOnly,
        session_id: 100,
    }
}

fn spec(leg: LegId, password: Option<&str>) -> CallSpec {
    CallSpec {
        leg,
        target_uri: "sip:bob@127.0.0.1:5062".into(),
        from_uri: "sip:gw@127.0.0.1".into(),
        contact_user: "gw".into(),
        destination: PEER.parse().unwrap(),
        via_outbound_proxy: false,
        transport: Transport::Udp,
        credentials: password.map(|p| Credentials {
            username: "gw".into(),
            password: Password::new(p),
        }),
        offer: offer(),
        register: None,
    }
}

struct Harness {
    ua: UserAgent,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        Self {
            ua: UserAgent::with_seed(config(), 7),
            now: Instant::now(),
        }
    }

    fn transmits(&mut self) -> Vec<(SocketAddr, Incoming, String)> {
        std::iter::from_fn(|| self.ua.poll_transmit())
            .map(|t| {
                let text = String::from_utf8(t.payload.clone()).unwrap();
                (
                    t.destination,
                    parse(&t.payload).expect("we only send what we can parse"),
                    text,
                )
            })
            .collect()
    }

    fn events(&mut self) -> Vec<SipEvent> {
        std::iter::from_fn(|| self.ua.poll_event()).collect()
    }

    fn feed(&mut self, text: &str) {
        self.ua
            .handle_datagram(self.now, PEER.parse().unwrap(), text.as_bytes());
    }

    fn advance_to_deadline(&mut self) -> bool {
        match self.ua.poll_timeout() {
            Some(t) => {
                self.now = self.now.max(t);
                self.ua.handle_timeout(self.now);
                true
            }
            None => false,
        }
    }

    fn start(&mut self, password: Option<&str>) -> Incoming {
        self.ua.start_call(self.now, spec(1, password)).unwrap();
        let mut sent = self.transmits();
        assert_eq!(sent.len(), 1);
        let (dest, invite, _) = sent.remove(0);
        assert_eq!(dest, PEER.parse().unwrap());
        assert_eq!(
            invite.start,
            StartLine::Request {
                method: "INVITE".into(),
                uri: "sip:bob@127.0.0.1:5062".into()
            }
        );
        invite
    }
}

/// A response to `request` as the peer would send it.
fn respond(request: &Incoming, code: u16, reason: &str, extra: &str, body: &str) -> String {
    let mut text = format!("SIP/2.0 {code} {reason}\r\n");
    for (name, value) in &request.echo {
        if *name == "To" && code > 100 {
            text.push_str(&format!("To: {value};tag=peertag\r\n"));
        } else {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    text.push_str(extra);
    if !body.is_empty() {
        text.push_str("Content-Type: application/sdp\r\n");
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    text
}

fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
}

const CONTACT: &str = "Contact: <sip:bob@127.0.0.1:5062>\r\n";

#[test]
fn invite_retransmits_then_timer_b_rejects_with_408() {
    let mut h = Harness::new();
    h.start(None);
    let mut retransmits = 0;
    let t0 = h.now;
    while h.advance_to_deadline() {
        retransmits += h.transmits().len();
    }
    assert_eq!(
        retransmits, 6,
        "Timer A fires 6 times before Timer B at 64*T1"
    );
    assert_eq!(h.now - t0, Duration::from_secs(32));
    assert_eq!(
        h.events(),
        vec![SipEvent::Rejected {
            leg: 1,
            code: 408,
            reason: "Timer B: no response to INVITE".into()
        }]
    );
    assert_eq!(h.ua.leg_count(), 0, "nothing left behind");
}

#[test]
fn provisional_then_answer_acks_to_the_contact_and_reports_the_sdp() {
    let mut h = Harness::new();
    let invite = h.start(None);
    h.feed(&respond(&invite, 100, "Trying", "", ""));
    h.feed(&respond(&invite, 180, "Ringing", CONTACT, ""));
    h.feed(&respond(&invite, 183, "Session Progress", CONTACT, ""));
    assert_eq!(
        h.events(),
        vec![
            SipEvent::Progress { leg: 1, code: 100 },
            SipEvent::Progress { leg: 1, code: 180 },
            SipEvent::Progress { leg: 1, code: 183 }
        ]
    );
    assert!(
        h.transmits().is_empty(),
        "no retransmission after a provisional"
    );
    let ok = respond(&invite, 200, "OK", CONTACT, "v=0\r\n");
    h.feed(&ok);
    assert_eq!(
        h.events(),
        vec![SipEvent::Answered {
            leg: 1,
            code: 200,
            sdp: b"v=0\r\n".to_vec()
        }]
    );
    let sent = h.transmits();
    assert_eq!(sent.len(), 1);
    let (dest, ack, text) = &sent[0];
    assert_eq!(
        ack.start,
        StartLine::Request {
            method: "ACK".into(),
            uri: "sip:bob@127.0.0.1:5062".into()
        }
    );
    assert_eq!(*dest, PEER.parse().unwrap());
    assert_eq!((ack.cseq, ack.cseq_method.as_str()), (1, "ACK"));
    assert_eq!(ack.to_tag.as_deref(), Some("peertag"));
    assert_ne!(
        ack.branch, invite.branch,
        "the 2xx ACK is its own transaction (13.2.2.4)"
    );
    assert!(header(text, "Content-Length") == Some("0"));
    // A retransmitted 2xx is ACKed again, and reported once only.
    h.feed(&ok);
    assert_eq!(h.transmits().len(), 1);
    assert!(h.events().is_empty());
}

#[test]
fn busy_is_acked_in_the_transaction_and_rejected_once() {
    let mut h = Harness::new();
    let invite = h.start(None);
    let busy = respond(&invite, 486, "Busy Here", "", "");
    h.feed(&busy);
    let sent = h.transmits();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.cseq_method, "ACK");
    assert_eq!(
        sent[0].1.branch, invite.branch,
        "non-2xx ACK reuses the INVITE's branch (17.1.1.3)"
    );
    assert_eq!(
        h.events(),
        vec![SipEvent::Rejected {
            leg: 1,
            code: 486,
            reason: "Busy Here".into()
        }]
    );
    h.feed(&busy);
    assert_eq!(h.transmits().len(), 1, "retransmitted final is re-ACKed");
    assert!(h.events().is_empty());
    // Timer D ends the transaction and the leg.
    while h.advance_to_deadline() {}
    assert_eq!(h.ua.leg_count(), 0);
}

fn challenge_round(code: u16, header_name: &str, auth_header: &str) {
    let mut h = Harness::new();
    let invite = h.start(Some("secret"));
    let challenge = format!(
        "{header_name}: Digest realm=\"test\", nonce=\"n1\", qop=\"auth\", algorithm=MD5\r\n"
    );
    h.feed(&respond(&invite, code, "Unauthorized", &challenge, ""));
    let sent = h.transmits();
    assert_eq!(sent.len(), 2, "ACK for the challenge and the new INVITE");
    assert_eq!(sent[0].1.cseq_method, "ACK");
    let (_, retry, text) = &sent[1];
    assert_eq!(
        (retry.cseq, retry.cseq_method.as_str()),
        (2, "INVITE"),
        "22.2: new CSeq"
    );
    assert_ne!(retry.branch, invite.branch);
    assert_eq!(retry.call_id, invite.call_id);
    assert_eq!(retry.from_tag, invite.from_tag);
    let auth = header(text, auth_header).expect("credentials in the retry");
    assert!(
        auth.contains("realm=\"test\"")
            && auth.contains("nc=00000001")
            && auth.contains("qop=auth"),
        "{auth}"
    );
    assert!(
        !text.contains("secret"),
        "the password never goes on the wire"
    );
    assert!(
        h.events().is_empty(),
        "a challenge answered is not a failure"
    );
    // The same realm challenges again: the password is wrong; no third INVITE.
    h.feed(&respond(retry, code, "Unauthorized", &challenge, ""));
    let sent = h.transmits();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.cseq_method, "ACK");
    assert!(matches!(h.events()[..], [SipEvent::Rejected { code: c, .. }] if c == code));
}

#[test]
fn www_authenticate_401_is_answered_once() {
    challenge_round(401, "WWW-Authenticate", "Authorization");
}

#[test]
fn proxy_authenticate_407_is_answered_once() {
    challenge_round(407, "Proxy-Authenticate", "Proxy-Authorization");
}

#[test]
fn challenge_without_credentials_fails_at_once() {
    let mut h = Harness::new();
    let invite = h.start(None);
    h.feed(&respond(
        &invite,
        407,
        "Proxy Authentication Required",
        "Proxy-Authenticate: Digest realm=\"r\", nonce=\"n\"\r\n",
        "",
    ));
    assert_eq!(h.transmits().len(), 1, "only the ACK");
    assert!(matches!(
        h.events()[..],
        [SipEvent::Rejected { code: 407, .. }]
    ));
}

#[test]
fn authenticated_call_goes_through() {
    let mut h = Harness::new();
    let invite = h.start(Some("secret"));
    h.feed(&respond(
        &invite,
        407,
        "Proxy Authentication Required",
        "Proxy-Authenticate: Digest realm=\"r\", nonce=\"n\"\r\n",
        "",
    ));
    let retry = h.transmits().remove(1).1;
    h.feed(&respond(&retry, 200, "OK", CONTACT, "v=0\r\n"));
    assert!(matches!(
        h.events()[..],
        [SipEvent::Answered { code: 200, .. }]
    ));
}

#[test]
fn cancel_before_answer_waits_for_a_provisional_then_ends_on_487() {
    let mut h = Harness::new();
    let invite = h.start(None);
    h.ua.hangup(h.now, 1);
    assert!(
        h.transmits().is_empty(),
        "9.1: no CANCEL before a provisional response"
    );
    h.feed(&respond(&invite, 180, "Ringing", CONTACT, ""));
    let sent = h.transmits();
    assert_eq!(sent.len(), 1);
    let (_, cancel, _) = &sent[0];
    assert_eq!(
        cancel.start,
        StartLine::Request {
            method: "CANCEL".into(),
            uri: "sip:bob@127.0.0.1:5062".into()
        }
    );
    assert_eq!(
        cancel.branch, invite.branch,
        "CANCEL shares the INVITE's branch"
    );
    assert_eq!((cancel.cseq, cancel.cseq_method.as_str()), (1, "CANCEL"));
    h.feed(&respond(cancel, 200, "OK", "", ""));
    h.feed(&respond(&invite, 487, "Request Terminated", "", ""));
    let sent = h.transmits();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.cseq_method, "ACK");
    assert_eq!(
        h.events(),
        vec![SipEvent::Rejected {
            leg: 1,
            code: 487,
            reason: "cancelled".into()
        }]
    );
    while h.advance_to_deadline() {}
    assert_eq!(h.ua.leg_count(), 0);
}

#[test]
fn cancel_that_gets_no_final_answer_gives_up_after_64_t1() {
    let mut h = Harness::new();
    let invite = h.start(None);
    h.feed(&respond(&invite, 180, "Ringing", CONTACT, ""));
    h.events();
    h.ua.hangup(h.now, 1);
    let t0 = h.now;
    while h.advance_to_deadline() {}
    assert!(h.now - t0 >= Duration::from_secs(32));
    assert!(matches!(
        h.events()[..],
        [SipEvent::Rejected { code: 487, .. }]
    ));
}

#[test]
fn answer_after_cancel_is_acked_and_ended_with_bye() {
    let mut h = Harness::new();
    let invite = h.start(None);
    h.ua.hangup(h.now, 1);
    h.feed(&respond(&invite, 200, "OK", CONTACT, "v=0\r\n"));
    let methods: Vec<String> = h
        .transmits()
        .into_iter()
        .map(|(_, m, _)| m.cseq_method)
        .collect();
    assert_eq!(methods, vec!["ACK", "BYE"]);
    assert!(matches!(
        h.events()[..],
        [SipEvent::Rejected { code: 200, .. }]
    ));
}

fn established(h: &mut Harness, extra: &str) -> Incoming {
    let invite = h.start(None);
    h.feed(&respond(
        &invite,
        200,
        "OK",
        &format!("{CONTACT}{extra}"),
        "v=0\r\n",
    ));
    h.transmits();
    h.events();
    invite
}

fn bye_from_peer(invite: &Incoming, branch: &str) -> String {
    let from = invite
        .echo
        .iter()
        .find(|(n, _)| *n == "From")
        .unwrap()
        .1
        .clone();
    let to = invite
        .echo
        .iter()
        .find(|(n, _)| *n == "To")
        .unwrap()
        .1
        .clone();
    format!(
        "BYE sip:gw@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch={branch}\r\nFrom: {to};tag=peertag\r\n\
To: {from}\r\nCall-ID: {}\r\nCSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n",
        invite.call_id
    )
}

#[test]
fn bye_from_the_far_end_is_answered_and_reported() {
    let mut h = Harness::new();
    let invite = established(&mut h, "");
    let bye = bye_from_peer(&invite, "z9hG4bKpeerbye");
    h.feed(&bye);
    let sent = h.transmits();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.status(), Some(200));
    assert_eq!(sent[0].1.cseq_method, "BYE");
    assert_eq!(
        h.events(),
        vec![SipEvent::Ended {
            leg: 1,
            reason: EndReason::RemoteBye
        }]
    );
    // Retransmitted BYE: same answer, no second event.
    h.feed(&bye);
    assert_eq!(h.transmits()[0].2, sent[0].2);
    assert!(h.events().is_empty());
    assert_eq!(h.ua.leg_count(), 0);
    while h.advance_to_deadline() {}
    assert_eq!(
        h.ua.poll_timeout(),
        None,
        "the response cache expires (Timer J)"
    );
}

#[test]
fn a_branch_reused_in_another_dialog_gets_that_dialogs_answer() {
    let mut h = Harness::new();
    let first = established(&mut h, "");
    h.ua.start_call(h.now, spec(2, None)).unwrap();
    let second = h.transmits().remove(0).1;
    h.feed(&respond(&second, 200, "OK", CONTACT, "v=0\r\n"));
    h.transmits();
    h.events();
    // A peer with a poor branch generator sends both BYEs with the same branch.
    h.feed(&bye_from_peer(&first, "z9hG4bKsame"));
    assert_eq!(h.transmits().len(), 1);
    h.feed(&bye_from_peer(&second, "z9hG4bKsame"));
    let sent = h.transmits();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].1.call_id, second.call_id,
        "answered in its own dialog"
    );
    let ended: Vec<LegId> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            SipEvent::Ended { leg, .. } => Some(leg),
            _ => None,
        })
        .collect();
    assert_eq!(ended, vec![1, 2], "both calls ended");
    assert_eq!(h.ua.leg_count(), 0);
}

#[test]
fn local_bye_follows_the_route_set_and_ends_on_200() {
    let mut h = Harness::new();
    established(
        &mut h,
        "Record-Route: <sip:127.0.0.1:5070;lr>, <sip:127.0.0.1:5080;lr>\r\n",
    );
    h.ua.hangup(h.now, 1);
    let sent = h.transmits();
    assert_eq!(sent.len(), 1);
    let (dest, bye, text) = &sent[0];
    assert_eq!(bye.cseq_method, "BYE");
    assert_eq!(bye.cseq, 2);
    assert_eq!(bye.to_tag.as_deref(), Some("peertag"));
    // 12.1.2: a UAC's route set is the Record-Route reversed; the request goes to its first entry.
    assert_eq!(*dest, "127.0.0.1:5080".parse().unwrap());
    let routes: Vec<&str> = text.lines().filter(|l| l.starts_with("Route:")).collect();
    assert_eq!(
        routes,
        vec![
            "Route: <sip:127.0.0.1:5080;lr>",
            "Route: <sip:127.0.0.1:5070;lr>"
        ]
    );
    h.feed(&respond(bye, 200, "OK", "", ""));
    assert_eq!(
        h.events(),
        vec![SipEvent::Ended {
            leg: 1,
            reason: EndReason::LocalBye { code: 200 }
        }]
    );
}

#[test]
fn unanswered_bye_ends_on_timer_f() {
    let mut h = Harness::new();
    established(&mut h, "");
    h.ua.hangup(h.now, 1);
    h.transmits();
    let t0 = h.now;
    while h.advance_to_deadline() {
        h.transmits();
    }
    assert_eq!(h.now - t0, Duration::from_secs(32));
    assert_eq!(
        h.events(),
        vec![SipEvent::Ended {
            leg: 1,
            reason: EndReason::LocalBye { code: 408 }
        }]
    );
    assert_eq!(h.ua.leg_count(), 0);
}

#[test]
fn stray_requests_get_481_403_and_options_200() {
    let mut h = Harness::new();
    let stray = |method: &str| {
        format!(
            "{method} sip:gw@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{method}\r\n\
From: <sip:x@127.0.0.1>;tag=x\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: stray\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    for (method, code) in [
        ("BYE", 481),
        ("INVITE", 403),
        ("OPTIONS", 200),
        ("INFO", 481),
    ] {
        h.feed(&stray(method));
        let sent = h.transmits();
        assert_eq!(sent.len(), 1, "{method}");
        assert_eq!(sent[0].1.status(), Some(code), "{method}");
        assert!(
            sent[0].1.to_tag.is_some(),
            "{method}: a final response carries a To tag"
        );
    }
    h.feed(&stray("ACK"));
    assert!(h.transmits().is_empty(), "ACK is never answered");
    assert!(h.events().is_empty());
}

#[test]
fn garbage_and_unknown_responses_change_nothing() {
    let mut h = Harness::new();
    let invite = h.start(None);
    for junk in [
        &b""[..],
        b"\xff\xfe\x00",
        b"SIP/2.0 200 OK\r\n\r\n",
        b"INVITE\r\n\r\n",
    ] {
        h.ua.handle_datagram(h.now, PEER.parse().unwrap(), junk);
    }
    let mut other = respond(&invite, 200, "OK", CONTACT, "");
    other = other.replace(&invite.call_id, "someone-else");
    h.feed(&other);
    assert!(h.transmits().is_empty());
    assert!(h.events().is_empty());
    assert_eq!(h.ua.leg_count(), 1);
}

#[test]
fn duplicate_leg_and_bad_uri_are_refused() {
    let mut h = Harness::new();
    h.start(None);
    assert_eq!(
        h.ua.start_call(h.now, spec(1, None)),
        Err(UaError::DuplicateLeg(1))
    );
    let mut bad = spec(2, None);
    bad.target_uri = "not a uri".into();
    assert!(matches!(
        h.ua.start_call(h.now, bad),
        Err(UaError::BadUri(_))
    ));
}

#[test]
fn ringing_too_long_is_cancelled() {
    let mut h = Harness::new();
    let invite = h.start(None);
    h.feed(&respond(&invite, 180, "Ringing", CONTACT, ""));
    h.events();
    h.advance_to_deadline();
    assert_eq!(h.now - invite_time(&h), Duration::from_secs(60));
    let sent = h.transmits();
    assert_eq!(sent[0].1.cseq_method, "CANCEL");
}

fn invite_time(h: &Harness) -> Instant {
    // The harness started at construction time and only moves forward through deadlines.
    h.now - Duration::from_secs(60)
}

// ---------------------------------------------------------------------------------------------------------
// In-dialog session changes, session timers, registration, strays
// ---------------------------------------------------------------------------------------------------------

const HOLD_SDP: &str = "v=0\r\no=- 5 6 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n";

/// A request from the peer inside the dialog of `invite`.
fn peer_request(invite: &Incoming, method: &str, cseq: u32, extra: &str, body: &str) -> String {
    let from = invite.echoed("From").unwrap();
    let to = invite.echoed("To").unwrap();
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:gw@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{method}{cseq}\r\n\
From: {to};tag=peertag\r\nTo: {from}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n\
Contact: <sip:bob@127.0.0.1:5062>\r\n{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        invite.call_id,
        body.len()
    )
}

#[test]
fn reinvite_hold_is_answered_recvonly_reported_and_its_2xx_retransmitted_until_ack() {
    let mut h = Harness::new();
    let invite = established(&mut h, "");
    let reinvite = peer_request(&invite, "INVITE", 10, "", HOLD_SDP);
    h.feed(&reinvite);
    let sent = h.transmits();
    assert_eq!(sent.len(), 1);
    let (_, ok, text) = &sent[0];
    assert_eq!(ok.status(), Some(200));
    assert!(text.contains("a=recvonly\r\n"), "{text}");
    assert!(text.contains("o=- 100 101 "), "version bumped: {text}");
    assert!(
        header(text, "Contact").is_some(),
        "a 2xx to INVITE has a Contact"
    );
    assert!(matches!(
        h.events()[..],
        [SipEvent::MediaUpdated { hold: true, .. }]
    ));
    // No ACK yet: the 2xx is retransmitted after T1 (13.3.1.4).
    h.now += Duration::from_millis(500);
    h.ua.handle_timeout(h.now);
    assert_eq!(h.transmits()[0].2, *text);
    h.feed(&peer_request(&invite, "ACK", 10, "", ""));
    let t = h.now;
    h.now += Duration::from_secs(10);
    h.ua.handle_timeout(h.now);
    assert!(h.transmits().is_empty(), "the ACK stopped retransmissions");
    let _ = t;
    // Resume by UPDATE (RFC 3311): answered sendrecv in the 200 itself.
    let resume = HOLD_SDP.replace("a=sendonly", "a=sendrecv");
    h.feed(&peer_request(&invite, "UPDATE", 11, "", &resume));
    let sent = h.transmits();
    assert_eq!(sent[0].1.status(), Some(200));
    assert!(sent[0].2.contains("a=sendrecv\r\n"));
    assert!(matches!(
        h.events()[..],
        [SipEvent::MediaUpdated { hold: false, .. }]
    ));
}

#[test]
fn unacceptable_reoffer_gets_488_and_old_cseq_gets_500() {
    let mut h = Harness::new();
    let invite = established(&mut h, "");
    let opus = "v=0\r\no=- 5 6 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n";
    h.feed(&peer_request(&invite, "INVITE", 10, "", opus));
    assert_eq!(h.transmits()[0].1.status(), Some(488));
    assert!(h.events().is_empty(), "the session is unchanged");
    h.feed(&peer_request(&invite, "INFO", 9, "", ""));
    assert_eq!(h.transmits()[0].1.status(), Some(500), "12.2.2: CSeq order");
    h.feed(&peer_request(&invite, "INFO", 12, "", ""));
    assert_eq!(h.transmits()[0].1.status(), Some(200), "INFO answered");
}

#[test]
fn reinvite_never_acked_ends_the_call_with_bye() {
    let mut h = Harness::new();
    let invite = established(&mut h, "");
    h.feed(&peer_request(&invite, "INVITE", 10, "", HOLD_SDP));
    h.transmits();
    h.events();
    let t0 = h.now;
    let mut bye = None;
    while h.advance_to_deadline() {
        for (_, m, _) in h.transmits() {
            if m.cseq_method == "BYE" && bye.is_none() {
                bye = Some(h.now - t0);
            }
        }
        if bye.is_some() {
            break;
        }
    }
    assert_eq!(bye, Some(Duration::from_secs(32)), "64*T1 without ACK");
}

fn timer_harness(se: u64) -> Harness {
    let mut h = Harness::new();
    h.ua = UserAgent::with_seed(
        UaConfig {
            session_expires: Some(Duration::from_secs(se)),
            ..config()
        },
        7,
    );
    h
}

#[test]
fn session_timer_asked_and_refreshed_at_half_interval_by_reinvite() {
    let mut h = timer_harness(90);
    let invite = h.start(None);
    // The peer does not support timers: the 2xx has no Session-Expires; we refresh anyway.
    h.feed(&respond(&invite, 200, "OK", CONTACT, "v=0\r\n"));
    h.transmits();
    h.events();
    let t0 = h.now;
    let mut refreshes = Vec::new();
    while refreshes.len() < 2 && h.advance_to_deadline() {
        for (_, m, text) in h.transmits() {
            if m.cseq_method == "INVITE" && m.is_request() {
                assert!(
                    text.contains("Session-Expires: 90;refresher=uac\r\n"),
                    "{text}"
                );
                assert!(text.contains("o=- 100 100 "), "unchanged SDP, same version");
                refreshes.push(h.now - t0);
                let mut ok = respond(&m, 200, "OK", CONTACT, "v=0\r\n");
                ok = ok.replace(
                    "Content-Length",
                    "Session-Expires: 90;refresher=uac\r\nContent-Length",
                );
                h.feed(&ok);
                let acks: Vec<_> = h.transmits();
                assert_eq!(acks[0].1.cseq_method, "ACK");
                assert_eq!(acks[0].1.cseq, m.cseq);
            }
        }
    }
    assert_eq!(
        refreshes,
        vec![Duration::from_secs(45), Duration::from_secs(90)]
    );
    assert!(h
        .events()
        .iter()
        .all(|e| matches!(e, SipEvent::Refreshed { by_us: true, .. })));
}

#[test]
fn unanswered_refresh_ends_the_call_with_bye() {
    let mut h = timer_harness(90);
    let invite = h.start(None);
    h.feed(&respond(&invite, 200, "OK", CONTACT, "v=0\r\n"));
    h.transmits();
    h.events();
    let t0 = h.now;
    let mut bye_at = None;
    while bye_at.is_none() && h.advance_to_deadline() {
        for (_, m, _) in h.transmits() {
            if m.cseq_method == "BYE" {
                bye_at = Some(h.now - t0);
            }
        }
    }
    // Refresh at 45 s goes unanswered; RFC 4028 10 expiry at 90 - min(32, 90/3) = 60 s comes before
    // Timer B (77 s).
    assert_eq!(bye_at, Some(Duration::from_secs(60)));
    while h.advance_to_deadline() {
        h.transmits();
    }
    assert!(matches!(
        &h.events()[..],
        [SipEvent::Ended {
            reason: EndReason::Terminated { code: 408, .. },
            ..
        }]
    ));
}

#[test]
fn initial_422_is_retried_with_min_se() {
    let mut h = timer_harness(90);
    let invite = h.start(None);
    h.feed(&respond(
        &invite,
        422,
        "Session Interval Too Small",
        "Min-SE: 300\r\n",
        "",
    ));
    let sent = h.transmits();
    assert_eq!(sent.len(), 2, "ACK and the new INVITE");
    assert!(sent[1].2.contains("Session-Expires: 300;refresher=uac\r\n"));
    assert_eq!(sent[1].1.cseq, 2);
    assert!(h.events().is_empty());
}

#[test]
fn peer_refresher_that_goes_quiet_gets_bye_at_expiry() {
    let mut h = timer_harness(90);
    let invite = h.start(None);
    h.feed(&respond(
        &invite,
        200,
        "OK",
        &format!("{CONTACT}Session-Expires: 120;refresher=uas\r\n"),
        "v=0\r\n",
    ));
    h.transmits();
    let t0 = h.now;
    // A peer refresh (UPDATE with Session-Expires) after 50 s moves the expiry.
    h.now += Duration::from_secs(50);
    h.ua.handle_timeout(h.now);
    h.feed(&peer_request(
        &invite,
        "UPDATE",
        20,
        "Session-Expires: 120;refresher=uac\r\nSupported: timer\r\n",
        "",
    ));
    let sent = h.transmits();
    assert_eq!(sent[0].1.status(), Some(200));
    assert!(sent[0].2.contains("Session-Expires: 120;refresher=uac\r\n"));
    assert!(sent[0].2.contains("Require: timer\r\n"));
    let mut bye_at = None;
    while bye_at.is_none() && h.advance_to_deadline() {
        for (_, m, _) in h.transmits() {
            if m.cseq_method == "BYE" {
                bye_at = Some(h.now - t0);
            }
        }
    }
    // 50 s + 120 s - min(32, 40) s.
    assert_eq!(bye_at, Some(Duration::from_secs(138)));
    // Too short an interval from the peer: 422 with our Min-SE.
    let mut h = timer_harness(90);
    let invite = established(&mut h, "");
    h.feed(&peer_request(
        &invite,
        "UPDATE",
        20,
        "Session-Expires: 30\r\n",
        "",
    ));
    let sent = h.transmits();
    assert_eq!(sent[0].1.status(), Some(422));
    assert!(sent[0].2.contains("Min-SE: 90\r\n"));
}

#[test]
fn registration_precedes_the_invite_is_shared_and_removed_after_the_last_call() {
    let mut h = Harness::new();
    let with_reg = |leg| CallSpec {
        register: Some("sip:127.0.0.1:5062".into()),
        ..spec(leg, Some("pw"))
    };
    h.ua.start_call(h.now, with_reg(1)).unwrap();
    let sent = h.transmits();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.cseq_method, "REGISTER");
    h.ua.start_call(h.now, with_reg(2)).unwrap();
    assert!(
        h.transmits().is_empty(),
        "the second call waits for the same registration"
    );
    assert_eq!(h.ua.registration_count(), 1);
    let register = sent[0].1.clone();
    h.feed(&respond(
        &register,
        401,
        "Unauthorized",
        "WWW-Authenticate: Digest realm=\"r\", nonce=\"n\"\r\n",
        "",
    ));
    let retry = h.transmits().remove(0).1;
    assert_eq!(retry.cseq_method, "REGISTER");
    h.feed(&respond(&retry, 200, "OK", "Expires: 60\r\n", ""));
    let invites: Vec<Incoming> = h.transmits().into_iter().map(|t| t.1).collect();
    assert_eq!(invites.len(), 2);
    assert!(invites.iter().all(|m| m.cseq_method == "INVITE"));
    // First call fails, second is answered then hung up: un-REGISTER only after the last.
    h.feed(&respond(&invites[0], 486, "Busy Here", "", ""));
    h.transmits();
    let (busy, other) = if h
        .events()
        .iter()
        .any(|e| matches!(e, SipEvent::Rejected { leg: 1, .. }))
    {
        (1, &invites[1])
    } else {
        (2, &invites[1])
    };
    let _ = busy;
    h.feed(&respond(other, 200, "OK", CONTACT, "v=0\r\n"));
    let ack = h.transmits();
    assert!(
        ack.iter().all(|t| t.1.cseq_method == "ACK"),
        "no REGISTER yet"
    );
    let answered = h
        .events()
        .into_iter()
        .find_map(|e| match e {
            SipEvent::Answered { leg, .. } => Some(leg),
            _ => None,
        })
        .unwrap();
    h.ua.hangup(h.now, answered);
    let bye = h.transmits().remove(0).1;
    h.feed(&respond(&bye, 200, "OK", "", ""));
    let sent = h.transmits();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].2.contains("Expires: 0\r\n"),
        "un-REGISTER: {}",
        sent[0].2
    );
    h.feed(&respond(&sent[0].1, 200, "OK", "", ""));
    assert_eq!(h.ua.registration_count(), 0);
}

#[test]
fn failed_registration_rejects_the_waiting_call_with_its_status() {
    let mut h = Harness::new();
    h.ua.start_call(
        h.now,
        CallSpec {
            register: Some("sip:127.0.0.1:5062".into()),
            ..spec(1, None)
        },
    )
    .unwrap();
    let register = h.transmits().remove(0).1;
    h.feed(&respond(&register, 403, "Forbidden", "", ""));
    assert!(matches!(
        h.events()[..],
        [SipEvent::Rejected {
            leg: 1,
            code: 403,
            ..
        }]
    ));
    assert!(h.transmits().is_empty(), "no INVITE");
}

#[test]
fn strays_are_rate_limited_and_answered_with_received_and_rport() {
    let mut h = Harness::new();
    let stray = |i: u32| {
        format!(
            "BYE sip:gw@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.9.9.9:5099;branch=z9hG4bKs{i};rport\r\n\
From: <sip:x@127.0.0.1>;tag=x\r\nTo: <sip:gw@127.0.0.1>;tag=y\r\nCall-ID: stray{i}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    h.feed(&stray(0));
    let sent = h.transmits();
    assert_eq!(sent[0].1.status(), Some(481));
    assert!(
        sent[0].2.contains(";rport=5062;received=127.0.0.1")
            || sent[0].2.contains("received=127.0.0.1;rport=5062"),
        "{}",
        sent[0].2
    );
    let mut answered = 1;
    for i in 1..1000 {
        h.feed(&stray(i));
        answered += h.transmits().len();
    }
    assert_eq!(answered, 200, "the burst, then nothing in the same instant");
    h.now += Duration::from_secs(1);
    for i in 1000..1100 {
        h.feed(&stray(i));
        answered += h.transmits().len();
    }
    assert_eq!(answered, 250, "50 per second more");
}

#[test]
fn malformed_requests_get_400_and_unsupported_require_420() {
    let mut h = Harness::new();
    h.feed("OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKm\r\n\
From: <sip:x@127.0.0.1>;tag=x\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: m\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.transmits()[0].1.status(), Some(400));
    h.feed("OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKr\r\n\
From: <sip:x@127.0.0.1>;tag=x\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: r\r\nCSeq: 1 OPTIONS\r\nRequire: 100rel\r\nContent-Length: 0\r\n\r\n");
    let sent = h.transmits();
    assert_eq!(sent[0].1.status(), Some(420));
    assert_eq!(header(&sent[0].2, "Unsupported"), Some("100rel"));
}

#[test]
fn tcp_calls_have_tcp_via_and_contact_and_never_retransmit() {
    let mut h = Harness::new();
    h.ua.start_call(
        h.now,
        CallSpec {
            transport: Transport::Tcp,
            ..spec(1, None)
        },
    )
    .unwrap();
    let t = h.ua.poll_transmit().unwrap();
    assert_eq!(t.transport, Transport::Tcp);
    let text = String::from_utf8(t.payload).unwrap();
    assert!(text.contains("Via: SIP/2.0/TCP 127.0.0.1:5060;"), "{text}");
    assert!(text.contains("transport=tcp>"), "{text}");
    let t0 = h.now;
    let mut sent = 0;
    while h.advance_to_deadline() {
        sent += h.transmits().len();
    }
    assert_eq!(sent, 0, "17.1.1.2: no Timer A on TCP");
    assert_eq!(h.now - t0, Duration::from_secs(32), "Timer B still applies");
}

#[test]
fn info_goes_out_in_dialog_one_at_a_time() {
    let mut h = Harness::new();
    assert_eq!(
        h.ua.send_info(
            h.now,
            1,
            "application/dtmf-relay",
            b"Signal=1\r\nDuration=250\r\n".to_vec()
        ),
        Err(UaError::NotEstablished(1)),
        "no dialog yet"
    );
    established(&mut h, "");
    h.ua.send_info(
        h.now,
        1,
        "application/dtmf-relay",
        b"Signal=1\r\nDuration=250\r\n".to_vec(),
    )
    .unwrap();
    h.ua.send_info(
        h.now,
        1,
        "application/dtmf-relay",
        b"Signal=#\r\nDuration=250\r\n".to_vec(),
    )
    .unwrap();
    let sent = h.transmits();
    assert_eq!(sent.len(), 1, "the second waits for the first's answer");
    let (_, first, text) = &sent[0];
    assert_eq!(
        (first.cseq_method.as_str(), first.to_tag.as_deref()),
        ("INFO", Some("peertag"))
    );
    assert_eq!(header(text, "Content-Type"), Some("application/dtmf-relay"));
    assert!(text.ends_with("Signal=1\r\nDuration=250\r\n"), "{text}");
    h.feed(&respond(first, 200, "OK", "", ""));
    let sent = h.transmits();
    assert_eq!(sent.len(), 1);
    let (_, second, text) = &sent[0];
    assert_eq!(second.cseq, first.cseq + 1, "CSeq grows within the dialog");
    assert!(text.contains("Signal=#"), "{text}");
    // An unanswered INFO retransmits (Timer E) and ends at Timer F without touching the call.
    let mut retransmits = 0;
    while h
        .ua
        .poll_timeout()
        .is_some_and(|t| t <= h.now + Duration::from_secs(40))
        && h.advance_to_deadline()
    {
        retransmits += h
            .transmits()
            .iter()
            .filter(|(_, m, _)| m.cseq_method == "INFO")
            .count();
    }
    assert!(retransmits >= 5, "{retransmits} retransmissions");
    assert!(
        h.events()
            .iter()
            .all(|e| !matches!(e, SipEvent::Ended { .. })),
        "the call goes on"
    );
}
