//! Fuzzes everything a SIP peer's bytes reach: the message parser, the 400 salvage, TCP framing, and the
//! user agent's whole receive path (which must answer or drop, never panic).
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sipcast::sip::message::{self, StreamFramer, Transport};
use sipcast::sip::ua::{UaConfig, UserAgent};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = message::parse(data) {
        let _ = m.list("via");
        let _ = m.contact.as_deref().map(message::SipUri::parse);
        for rr in &m.record_route {
            let _ = message::NameAddr::parse(rr);
        }
        let _ = sipcast::sdp::parse(&m.body);
    }
    let _ = message::salvage_request(data);
    let mut framer = StreamFramer::default();
    for chunk in data.chunks(7) {
        framer.push(chunk);
        while let Ok(Some(m)) = framer.next_message() {
            let _ = message::parse(&m);
        }
    }
    let mut ua = UserAgent::with_seed(UaConfig::default(), 1);
    let now = Instant::now();
    let from = "192.0.2.1:5060".parse().unwrap();
    ua.handle_message(now, from, Transport::Udp, data);
    ua.handle_message(now, from, Transport::Tcp, data);
    while ua.poll_transmit().is_some() {}
    while ua.poll_event().is_some() {}
});
