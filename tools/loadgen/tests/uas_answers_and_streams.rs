//! The loadgen binary as a callee, driven by hand over loopback: INVITE -> 100/180/200 + SDP answer, ACK ->
//! PCMU RTP arrives, BYE -> 200; unknown users get 404; garbage never stops it; SIGTERM ends it with a summary.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Loadgen {
    child: Child,
    sip_port: u16,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Loadgen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Loadgen {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "uas",
            "--sip",
            "127.0.0.1:0",
            "--users",
            "2",
            "--rtp-ports",
            "48000-48999",
            "--threads",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("loadgen starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("a ready line");
    let sip_port = ready
        .strip_prefix("loadgen ready sip=127.0.0.1:")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {ready}"));
    Loadgen {
        child,
        sip_port,
        lines,
    }
}

fn invite(user: &str, port: u16, call_id: &str, rtp_port: u16, sip_port: u16) -> String {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=test\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    );
    format!(
        "INVITE sip:{user}@127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{sip_port};branch=z9hG4bK-{call_id}-1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:test@127.0.0.1>;tag=caller\r\nTo: <sip:{user}@127.0.0.1:{port}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:test@127.0.0.1:{sip_port}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

fn recv_until(socket: &UdpSocket, what: &str, mut pred: impl FnMut(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 65535];
    while Instant::now() < deadline {
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if pred(&text) {
                return text;
            }
        }
    }
    panic!("never received {what}");
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or("")
}

#[test]
fn answers_streams_pcmu_and_handles_bye() {
    let lg = start();
    let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
    sip.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let sip_port = sip.local_addr().unwrap().port();
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let rtp_port = rtp.local_addr().unwrap().port();
    let to = ("127.0.0.1", lg.sip_port);

    // Garbage first: it must be ignored, not crash the generator.
    for junk in [
        &b"\x00\x01garbage"[..],
        b"INVITE sip:x SIP/2.0\r\n\r\n",
        b"SIP/2.0 999\r\n\r\n",
    ] {
        sip.send_to(junk, to).unwrap();
    }
    sip.send_to(
        invite("nobody", lg.sip_port, "c-404", rtp_port, sip_port).as_bytes(),
        to,
    )
    .unwrap();
    recv_until(&sip, "404 for an unknown user", |m| {
        m.starts_with("SIP/2.0 404")
    });

    sip.send_to(
        invite("ua1", lg.sip_port, "c-1", rtp_port, sip_port).as_bytes(),
        to,
    )
    .unwrap();
    recv_until(&sip, "100 Trying", |m| m.starts_with("SIP/2.0 100"));
    recv_until(&sip, "180 Ringing", |m| m.starts_with("SIP/2.0 180"));
    let ok = recv_until(&sip, "200 OK", |m| m.starts_with("SIP/2.0 200"));
    assert!(header(&ok, "To").contains(";tag="), "{ok}");
    assert!(ok.contains("m=audio "), "{ok}");
    assert!(
        ok.contains(" RTP/AVP 0\r\n"),
        "PCMU chosen from the offer: {ok}"
    );
    let to_header = header(&ok, "To").to_owned();
    let contact = header(&ok, "Contact").trim_matches(['<', '>']).to_owned();
    let ack = format!(
        "ACK {contact} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sip_port};branch=z9hG4bK-ack1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:test@127.0.0.1>;tag=caller\r\nTo: {to_header}\r\nCall-ID: c-1\r\n\
         CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    sip.send_to(ack.as_bytes(), to).unwrap();

    // RTP: PCMU (payload type 0), 160 bytes of payload per packet, sequence numbers rising by one.
    let mut buf = [0u8; 2048];
    let mut seqs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seqs.len() < 10 && Instant::now() < deadline {
        if let Ok((n, _)) = rtp.recv_from(&mut buf) {
            assert_eq!(n, 12 + 160, "one 20 ms PCMU packet");
            assert_eq!(buf[0], 0x80);
            assert_eq!(buf[1] & 0x7f, 0);
            seqs.push(u16::from_be_bytes([buf[2], buf[3]]));
        }
    }
    assert_eq!(seqs.len(), 10, "RTP arrives after the ACK");
    assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));

    let bye = format!(
        "BYE {contact} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sip_port};branch=z9hG4bK-bye1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:test@127.0.0.1>;tag=caller\r\nTo: {to_header}\r\nCall-ID: c-1\r\n\
         CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    sip.send_to(bye.as_bytes(), to).unwrap();
    let answer = recv_until(&sip, "200 to the BYE", |m| {
        m.starts_with("SIP/2.0 200") && m.contains("CSeq: 2 BYE")
    });
    assert!(answer.contains("Call-ID: c-1"));

    // SIGTERM: a clean exit with the summary.
    let pid = lg.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut summary = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while summary.is_none() && Instant::now() < deadline {
        if let Ok(line) = lg.lines.recv_timeout(Duration::from_millis(200)) {
            summary = line.strip_prefix("loadgen summary ").map(str::to_owned);
        }
    }
    let summary: serde_json::Value =
        serde_json::from_str(&summary.expect("a summary line")).unwrap();
    assert_eq!(summary["sip"]["established"], 1, "{summary}");
    assert_eq!(summary["sip"]["byes_received"], 1, "{summary}");
    assert_eq!(summary["sip"]["rejected"], 1, "{summary}");
    assert!(
        summary["sip"]["parse_errors"].as_u64().unwrap_or(0) >= 2,
        "{summary}"
    );
    assert_eq!(summary["calls"][0]["ended_by"], "remote-bye", "{summary}");
}
