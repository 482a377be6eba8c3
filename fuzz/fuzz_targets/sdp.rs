//! Fuzzes the SDP a peer sends: parse, the answer's media plan, and our answer to a re-offer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipcast::sdp::{self, AudioCodec, Direction, Offer};

fuzz_target!(|data: &[u8]| {
    let _ = sdp::parse(data);
    let _ = sdp::plan_from_answer(data);
    let local = Offer {
        address: "192.0.2.1".parse().unwrap(),
        audio_port: 20000,
        audio_direction: Direction::SendRecv,
        // With video, so re-offers with video m-lines are answered too.
        video_port: Some(20002),
        video_direction: Direction::SendRecv,
        session_id: 1,
    };
    let _ = sdp::answer_reoffer(&local, 2, data, Some(AudioCodec::Pcmu));
});
