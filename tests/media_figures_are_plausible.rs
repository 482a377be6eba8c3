//! Acceptance (issue 6, 6): the media figures of a 20 s call are plausible: about 50 packets/s in for 20 ms
//! audio, no loss on loopback, bytes out, no reconnects, and the time from answer to the first RTMP byte.

mod common;

use std::time::Duration;

use common::calls::{start_streaming, startup, terminate};
use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};

#[test]
fn figures_of_a_twenty_second_call() {
    let nginx = Nginx::start();
    let callee = Baresip::start(BaresipOptions::new("tone"));
    let gateway = Gateway::start();
    let established = start_streaming(
        &gateway,
        &startup("fig", &callee, "tone", &nginx.rtmp_url(), "figures-stream"),
    );
    std::thread::sleep(Duration::from_secs(20));
    // Figures refresh every 250 ms; read them after one more refresh.
    std::thread::sleep(Duration::from_millis(600));
    let seconds = established.elapsed().as_secs_f64();
    let call = gateway.find("fig").unwrap();
    terminate(&gateway, "fig");

    let stats = &call["mediaStats"];
    eprintln!("after {seconds:.1} s: {stats}");
    let packets = stats["rtpPacketsIn"].as_f64().unwrap();
    let rate = packets / seconds;
    assert!(
        (45.0..=55.0).contains(&rate),
        "{rate:.1} packets/s for 20 ms PCMU"
    );
    assert_eq!(
        stats["rtpBytesIn"].as_f64().unwrap(),
        packets * 172.0,
        "RTP header + 160 bytes of PCMU each"
    );
    assert_eq!(stats["rtpLost"], 0, "no loss on loopback");
    assert!(stats["jitterMs"].as_f64().unwrap() < 20.0, "{stats}");
    let first_byte = stats["answerToFirstRtmpByteMs"]
        .as_u64()
        .expect("the stream went live");
    assert!(
        first_byte < 3000,
        "{first_byte} ms from answer to live stream"
    );
    let target = &stats["targets"][0];
    assert_eq!(
        (
            target["id"].clone(),
            target["kind"].clone(),
            target["status"].clone()
        ),
        (1.into(), "rtmp".into(), "RTMP_STREAM_ACTIVE".into())
    );
    assert_eq!(target["reconnects"], 0);
    let bytes_out = target["bytesOut"].as_f64().unwrap();
    // 64 kbit/s AAC plus FLV framing for about 20 s.
    assert!(
        bytes_out > 0.8 * 8000.0 * seconds && bytes_out < 3.0 * 8000.0 * seconds,
        "{bytes_out} bytes out in {seconds:.1} s"
    );
    assert!(
        target["target"].as_str().unwrap().ends_with("figu..."),
        "the key is redacted: {target}"
    );
}
