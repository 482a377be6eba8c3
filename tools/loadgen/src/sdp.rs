//! The SDP side of a callee: read the gateway's offer, choose PCMU (and H.264 packetization-mode=1 for video
//! runs), write the answer. Tolerant of what it does not need; never panics.

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedMedia {
    pub kind: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<String>,
    /// (payload type, encoding name, clock rate)
    pub rtpmaps: Vec<(u8, String, u32)>,
    /// (payload type, parameters)
    pub fmtps: Vec<(u8, String)>,
    pub connection: Option<IpAddr>,
    /// `a=rtcp:PORT` (RFC 3605).
    pub rtcp_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub connection: Option<IpAddr>,
    pub media: Vec<OfferedMedia>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdpError {
    NotUtf8,
    NoAudio,
    NoPcmu,
    NoAddress,
}

fn parse_connection(value: &str) -> Option<IpAddr> {
    // c=IN IP4 127.0.0.1[/ttl]
    let mut parts = value.split_whitespace();
    let _net = parts.next()?;
    let _family = parts.next()?;
    parts.next()?.split('/').next()?.parse().ok()
}

pub fn parse_offer(body: &[u8]) -> Result<Offer, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut offer = Offer {
        connection: None,
        media: Vec::new(),
    };
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let Some((kind, value)) = line.split_once('=') else {
            continue;
        };
        match (kind, offer.media.last_mut()) {
            ("c", None) => offer.connection = parse_connection(value),
            ("c", Some(m)) => m.connection = parse_connection(value),
            ("m", _) => {
                let mut parts = value.split_whitespace();
                let kind = parts.next().unwrap_or("").to_ascii_lowercase();
                let port = parts
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let proto = parts.next().unwrap_or("").to_owned();
                offer.media.push(OfferedMedia {
                    kind,
                    port,
                    proto,
                    formats: parts.map(str::to_owned).collect(),
                    rtpmaps: Vec::new(),
                    fmtps: Vec::new(),
                    connection: None,
                    rtcp_port: None,
                });
            }
            ("a", Some(m)) => {
                let (name, value) = value.split_once(':').unwrap_or((value, ""));
                let (pt, rest) = value
                    .trim()
                    .split_once(char::is_whitespace)
                    .unwrap_or(("", ""));
                match name {
                    "rtpmap" => {
                        let mut enc = rest.trim().split('/');
                        let name = enc.next().unwrap_or("").to_owned();
                        let rate = enc.next().and_then(|r| r.parse().ok()).unwrap_or(0);
                        if let Ok(pt) = pt.parse() {
                            m.rtpmaps.push((pt, name, rate));
                        }
                    }
                    "fmtp" => {
                        if let Ok(pt) = pt.parse() {
                            m.fmtps.push((pt, rest.trim().to_owned()));
                        }
                    }
                    "rtcp" => {
                        m.rtcp_port = value.split_whitespace().next().and_then(|p| p.parse().ok())
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Ok(offer)
}

/// What the callee negotiated: where to send each stream and with which payload type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub audio_pt: u8,
    pub audio_dest: SocketAddr,
    /// (payload type, destination) when video was offered, wanted and H.264 mode 1 is possible.
    pub video: Option<(u8, SocketAddr)>,
}

impl Offer {
    fn address(&self, m: &OfferedMedia) -> Option<IpAddr> {
        m.connection.or(self.connection)
    }

    /// Chooses PCMU for audio and, when `want_video`, H.264 packetization-mode=1 for video.
    pub fn negotiate(&self, want_video: bool) -> Result<Negotiated, SdpError> {
        let audio = self
            .media
            .iter()
            .find(|m| m.kind == "audio" && m.port != 0)
            .ok_or(SdpError::NoAudio)?;
        let pcmu = audio.formats.iter().any(|f| f == "0")
            || audio
                .rtpmaps
                .iter()
                .any(|(_, n, r)| n.eq_ignore_ascii_case("PCMU") && *r == 8000);
        if !pcmu {
            return Err(SdpError::NoPcmu);
        }
        let audio_pt = if audio.formats.iter().any(|f| f == "0") {
            0
        } else {
            audio
                .rtpmaps
                .iter()
                .find(|(_, n, r)| n.eq_ignore_ascii_case("PCMU") && *r == 8000)
                .map(|(pt, _, _)| *pt)
                .unwrap_or(0)
        };
        let ip = self.address(audio).ok_or(SdpError::NoAddress)?;
        let video = if want_video {
            self.media
                .iter()
                .find(|m| m.kind == "video" && m.port != 0)
                .and_then(|m| {
                    let pt = h264_mode1_pt(m)?;
                    Some((pt, SocketAddr::new(self.address(m)?, m.port)))
                })
        } else {
            None
        };
        Ok(Negotiated {
            audio_pt,
            audio_dest: SocketAddr::new(ip, audio.port),
            video,
        })
    }
}

fn h264_mode1_pt(m: &OfferedMedia) -> Option<u8> {
    m.formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
        .find(|pt| {
            let h264 = m
                .rtpmaps
                .iter()
                .any(|(p, n, r)| p == pt && n.eq_ignore_ascii_case("H264") && *r == 90000);
            let mode1 = m.fmtps.iter().any(|(p, params)| {
                p == pt
                    && params.split(';').any(|kv| {
                        kv.split_once('=').is_some_and(|(k, v)| {
                            k.trim().eq_ignore_ascii_case("packetization-mode") && v.trim() == "1"
                        })
                    })
            });
            h264 && mode1
        })
}

/// The answer: audio PCMU on `audio_port`, video H.264 mode 1 on `video_port` when negotiated, every other
/// offered stream rejected (port 0), as RFC 3264 wants one m= line per offered one.
pub fn answer(
    offer: &Offer,
    chosen: &Negotiated,
    local_ip: IpAddr,
    audio_port: u16,
    video_port: Option<u16>,
    session_id: u64,
) -> Vec<u8> {
    let family = if local_ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut s = format!(
        "v=0\r\no=loadgen {session_id} {session_id} IN {family} {local_ip}\r\ns=loadgen\r\n\
         c=IN {family} {local_ip}\r\nt=0 0\r\n"
    );
    let mut audio_done = false;
    let mut video_done = false;
    for m in &offer.media {
        let proto = if m.proto.is_empty() {
            "RTP/AVP"
        } else {
            &m.proto
        };
        let first_fmt = m.formats.first().map(String::as_str).unwrap_or("0");
        if m.kind == "audio" && m.port != 0 && !audio_done {
            audio_done = true;
            let pt = chosen.audio_pt;
            s.push_str(&format!(
                "m=audio {audio_port} {proto} {pt}\r\na=rtpmap:{pt} PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
            ));
        } else if m.kind == "video" && m.port != 0 && !video_done && chosen.video.is_some() {
            video_done = true;
            let (pt, _) = chosen.video.unwrap_or((96, chosen.audio_dest));
            let port = video_port.unwrap_or(0);
            s.push_str(&format!(
                "m=video {port} {proto} {pt}\r\na=rtpmap:{pt} H264/90000\r\n\
                 a=fmtp:{pt} packetization-mode=1;profile-level-id=42e01f\r\n\
                 a=rtcp-fb:* nack pli\r\na=sendrecv\r\n"
            ));
        } else {
            s.push_str(&format!("m={} 0 {proto} {first_fmt}\r\n", m.kind));
        }
    }
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str =
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=sipcast\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 20000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n\
m=video 20002 RTP/AVP 96 97 98\r\na=rtpmap:96 H264/90000\r\n\
a=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\na=rtpmap:97 H264/90000\r\n\
a=fmtp:97 packetization-mode=0;profile-level-id=42e01f\r\na=rtpmap:98 VP8/90000\r\n\
a=rtcp-fb:* nack pli\r\na=sendrecv\r\n";

    #[test]
    fn chooses_pcmu_and_h264_mode1() {
        let offer = parse_offer(OFFER.as_bytes()).unwrap();
        let n = offer.negotiate(true).unwrap();
        assert_eq!(n.audio_pt, 0);
        assert_eq!(n.audio_dest, "127.0.0.1:20000".parse().unwrap());
        assert_eq!(n.video, Some((96, "127.0.0.1:20002".parse().unwrap())));
        let a = answer(
            &offer,
            &n,
            "127.0.0.1".parse().unwrap(),
            40000,
            Some(40002),
            7,
        );
        let a = String::from_utf8(a).unwrap();
        assert!(a.contains("m=audio 40000 RTP/AVP 0\r\n"), "{a}");
        assert!(a.contains("m=video 40002 RTP/AVP 96\r\n"), "{a}");
        assert!(a.contains("a=fmtp:96 packetization-mode=1"), "{a}");
        assert!(a.contains("a=rtcp-fb:* nack pli"), "{a}");
        let audio_only = offer.negotiate(false).unwrap();
        let a = answer(
            &offer,
            &audio_only,
            "127.0.0.1".parse().unwrap(),
            40000,
            None,
            7,
        );
        assert!(String::from_utf8(a)
            .unwrap()
            .contains("m=video 0 RTP/AVP 96\r\n"));
    }

    #[test]
    fn bad_offers_are_errors() {
        assert_eq!(
            parse_offer(b"v=0\r\nm=audio 0 RTP/AVP 0\r\n")
                .unwrap()
                .negotiate(false),
            Err(SdpError::NoAudio)
        );
        assert_eq!(
            parse_offer(b"v=0\r\nm=audio 4000 RTP/AVP 8\r\nc=IN IP4 1.2.3.4\r\n")
                .unwrap()
                .negotiate(false),
            Err(SdpError::NoPcmu)
        );
        assert_eq!(
            parse_offer(b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n")
                .unwrap()
                .negotiate(false),
            Err(SdpError::NoAddress)
        );
        assert!(parse_offer(&[0xff, 0x00]).is_err());
        for i in 0..OFFER.len() {
            if let Ok(o) = parse_offer(&OFFER.as_bytes()[..i]) {
                let _ = o.negotiate(true);
            }
        }
    }
}
