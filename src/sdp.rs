//! SDP offer/answer (RFC 3264) for the calls we place: build the offer, turn the answer into a [`MediaPlan`].
//!
//! Only this room reads or writes SDP text; the rest of the gateway sees typed plans.

use std::net::{IpAddr, SocketAddr};

use sdp_types::{Attribute, Connection, Media, Origin, Session, Time};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP does not parse: {0}")]
    Parse(String),
    #[error("the answer accepts neither audio nor video")]
    NoAudio,
    #[error("the answer selects no codec we offered and support ({0})")]
    NoCommonCodec(String),
    #[error("the answer's audio stream has no usable connection address")]
    NoConnectionAddress,
}

/// The audio codecs the gateway can receive. Static payload types per RFC 3551.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    Pcmu,
    Pcma,
}

impl AudioCodec {
    pub fn encoding_name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
        }
    }

    pub fn static_payload_type(self) -> u8 {
        match self {
            Self::Pcmu => 0,
            Self::Pcma => 8,
        }
    }

    pub fn clock_rate(self) -> u32 {
        8000
    }

    fn from_encoding_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(Self::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Self::Pcma)
        } else {
            None
        }
    }
}

/// RFC 3264 stream direction, from our side's point of view where noted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn attribute(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    fn from_attributes(attributes: &[Attribute]) -> Option<Self> {
        attributes
            .iter()
            .find_map(|a| match a.attribute.to_ascii_lowercase().as_str() {
                "sendrecv" => Some(Self::SendRecv),
                "sendonly" => Some(Self::SendOnly),
                "recvonly" => Some(Self::RecvOnly),
                "inactive" => Some(Self::Inactive),
                _ => None,
            })
    }
}

/// The video codecs the gateway can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264 with its RFC 6184 packetization-mode (0 single NAL, 1 non-interleaved).
    H264 {
        packetization_mode: u8,
    },
    Vp8,
}

impl VideoCodec {
    pub fn encoding_name(self) -> &'static str {
        match self {
            Self::H264 { .. } => "H264",
            Self::Vp8 => "VP8",
        }
    }
}

/// Dynamic payload types of our video offer (RFC 3551 6: 96-127).
pub const H264_PM1_PT: u8 = 96;
pub const H264_PM0_PT: u8 = 97;
pub const VP8_PT: u8 = 98;
/// Constrained Baseline, level 3.1: what SIP video endpoints commonly decode.
pub const H264_PROFILE_LEVEL_ID: &str = "42e01f";

/// RFC 4733 telephone-event payload type we offer.
pub const TELEPHONE_EVENT_PT: u8 = 101;
/// Packet time we ask for, in milliseconds.
pub const PTIME_MS: u32 = 20;

/// What the gateway offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Address written into o= and c=.
    pub address: IpAddr,
    /// Our RTP port for audio (RTCP on the next port).
    pub audio_port: u16,
    /// `sendrecv` when the application wants the peer to hear media from us (WCS's hasAudio=true),
    /// `recvonly` otherwise.
    pub audio_direction: Direction,
    /// Our RTP port for video, when video is offered (hasVideo).
    pub video_port: Option<u16>,
    /// As `audio_direction`, for video (WCS's hasVideo).
    pub video_direction: Direction,
    /// o= session id and version; any number unique to the call.
    pub session_id: u64,
}

impl Offer {
    /// The offer's SDP text.
    pub fn to_sdp(&self) -> Vec<u8> {
        self.to_sdp_version(self.session_id)
    }

    /// The offer with o= version `version` (RFC 3264 8: a changed description has a higher version).
    pub fn to_sdp_version(&self, version: u64) -> Vec<u8> {
        let origin = Origin::with_ip_addr(self.session_id, version, self.address);
        let mut session = Session::new(origin, "sipcast");
        session.connection = Some(Connection::from_ip_addr(self.address));
        session.times.push(Time::new(0, 0));
        let fmts = format!(
            "{} {} {TELEPHONE_EVENT_PT}",
            AudioCodec::Pcmu.static_payload_type(),
            AudioCodec::Pcma.static_payload_type()
        );
        let mut audio = Media::new(
            sdp_types::MediaType::Audio,
            self.audio_port,
            sdp_types::TransportProto::RtpAvp,
            fmts,
        );
        audio.add_attribute_with_value("rtpmap", "0 PCMU/8000");
        audio.add_attribute_with_value("rtpmap", "8 PCMA/8000");
        audio.add_attribute_with_value(
            "rtpmap",
            format!("{TELEPHONE_EVENT_PT} telephone-event/8000"),
        );
        audio.add_attribute_with_value("fmtp", format!("{TELEPHONE_EVENT_PT} 0-16"));
        audio.add_attribute_with_value("ptime", PTIME_MS);
        audio.add_attribute_from_str(self.audio_direction.attribute());
        session.medias.push(audio);
        if let Some(port) = self.video_port {
            let fmts = format!("{H264_PM1_PT} {H264_PM0_PT} {VP8_PT}");
            let mut video = Media::new(
                sdp_types::MediaType::Video,
                port,
                sdp_types::TransportProto::RtpAvp,
                fmts,
            );
            for (pt, mode) in [(H264_PM1_PT, 1), (H264_PM0_PT, 0)] {
                video.add_attribute_with_value("rtpmap", format!("{pt} H264/90000"));
                video.add_attribute_with_value(
                    "fmtp",
                    format!(
                        "{pt} packetization-mode={mode};profile-level-id={H264_PROFILE_LEVEL_ID}"
                    ),
                );
            }
            video.add_attribute_with_value("rtpmap", format!("{VP8_PT} VP8/90000"));
            // RFC 4585 / 5104: we ask for keyframes with PLI, then FIR.
            video.add_attribute_with_value("rtcp-fb", "* nack pli");
            video.add_attribute_with_value("rtcp-fb", "* ccm fir");
            video.add_attribute_from_str(self.video_direction.attribute());
            session.medias.push(video);
        }
        let mut out = Vec::new();
        session
            .write(&mut out)
            .expect("writing SDP into a Vec cannot fail");
        out
    }
}

/// What was negotiated for audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioPlan {
    pub codec: AudioCodec,
    pub payload_type: u8,
    pub clock_rate: u32,
    /// Where the peer receives RTP (and sends it from, with symmetric RTP).
    pub remote: SocketAddr,
    /// Where the peer receives RTCP: `a=rtcp` (RFC 3605), the RTP port with `a=rtcp-mux`, else RTP port + 1.
    pub remote_rtcp: SocketAddr,
    pub telephone_event_pt: Option<u8>,
    /// The direction the peer's answer states, from the peer's side.
    pub remote_direction: Direction,
}

/// What was negotiated for video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoPlan {
    pub codec: VideoCodec,
    pub payload_type: u8,
    pub remote: SocketAddr,
    pub remote_rtcp: SocketAddr,
    pub remote_direction: Direction,
}

/// The media side of a call as negotiated. Audio is always there (the answer must accept it); video when
/// it was offered and accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPlan {
    pub audio: AudioPlan,
    pub video: Option<VideoPlan>,
}

/// Parses SDP and returns it, for callers that only need to know it is well-formed.
/// Never panics: sdp-types is additionally guarded, as anything a peer sends must end in an error at worst.
pub fn parse(body: &[u8]) -> Result<Session, SdpError> {
    std::panic::catch_unwind(|| Session::parse(body))
        .map_err(|_| SdpError::Parse("SDP parser panicked".into()))?
        .map_err(|e| SdpError::Parse(e.to_string()))
}

/// Turns the peer's answer into a plan. Robust to what real products send: static payload types without
/// rtpmap, media-level c= overriding session-level, session-level direction, rejected streams (port 0).
pub fn plan_from_answer(body: &[u8]) -> Result<MediaPlan, SdpError> {
    let session = parse(body)?;
    let accepted = |kind: &str| {
        session.medias.iter().find(|m| {
            m.media.eq_ignore_ascii_case(kind)
                && m.port != 0
                && m.proto.to_ascii_uppercase().starts_with("RTP/AVP")
        })
    };
    let audio = accepted("audio").ok_or(SdpError::NoAudio)?;
    let audio_plan = plan_audio(&session, audio)?;
    let video = match accepted("video") {
        Some(m) => plan_video(&session, m).ok(),
        None => None,
    };
    Ok(MediaPlan {
        audio: audio_plan,
        video,
    })
}

fn rtpmaps(media: &Media) -> Vec<(u8, String, u32)> {
    media
        .attributes
        .iter()
        .filter(|a| a.attribute.eq_ignore_ascii_case("rtpmap"))
        .filter_map(|a| a.value.as_deref().and_then(parse_rtpmap))
        .collect()
}

fn fmtp(media: &Media, pt: u8) -> Option<String> {
    media
        .attributes
        .iter()
        .filter(|a| a.attribute.eq_ignore_ascii_case("fmtp"))
        .filter_map(|a| a.value.as_deref())
        .find_map(|v| {
            let (p, params) = v.trim().split_once(char::is_whitespace)?;
            (p.parse::<u8>().ok()? == pt).then(|| params.trim().to_owned())
        })
}

/// The peer's RTP and RTCP addresses for a stream (RFC 3264 media-level c= first; RFC 3605 a=rtcp;
/// RFC 5761 rtcp-mux).
fn addresses(session: &Session, media: &Media) -> Result<(SocketAddr, SocketAddr), SdpError> {
    let connection = media
        .connections
        .first()
        .or(session.connection.as_ref())
        .ok_or(SdpError::NoConnectionAddress)?;
    let ip = connection
        .try_address()
        .map_err(|_| SdpError::NoConnectionAddress)?
        .ip;
    let remote = SocketAddr::new(ip, media.port);
    let rtcp_port = if media.has_attribute("rtcp-mux") {
        media.port
    } else {
        media
            .attributes
            .iter()
            .find(|a| a.attribute.eq_ignore_ascii_case("rtcp"))
            .and_then(|a| a.value.as_deref()?.split_whitespace().next()?.parse().ok())
            .unwrap_or(media.port.saturating_add(1))
    };
    Ok((remote, SocketAddr::new(ip, rtcp_port)))
}

fn direction(session: &Session, media: &Media) -> Direction {
    Direction::from_attributes(&media.attributes)
        .or_else(|| Direction::from_attributes(&session.attributes))
        .unwrap_or(Direction::SendRecv)
}

fn plan_audio(session: &Session, audio: &Media) -> Result<AudioPlan, SdpError> {
    let rtpmaps = rtpmaps(audio);
    let mut chosen = None;
    let mut telephone_event_pt = None;
    for fmt in audio.fmt.split_ascii_whitespace() {
        let Ok(pt) = fmt.parse::<u8>() else { continue };
        let mapped = rtpmaps.iter().find(|(p, _, _)| *p == pt);
        let codec = match mapped {
            Some((_, name, rate))
                if name.eq_ignore_ascii_case("telephone-event") && *rate == 8000 =>
            {
                telephone_event_pt.get_or_insert(pt);
                continue;
            }
            Some((_, name, rate)) => {
                AudioCodec::from_encoding_name(name).filter(|c| c.clock_rate() == *rate)
            }
            None => [AudioCodec::Pcmu, AudioCodec::Pcma]
                .into_iter()
                .find(|c| c.static_payload_type() == pt),
        };
        if let (Some(codec), None) = (codec, &chosen) {
            chosen = Some((codec, pt));
        }
    }
    let (codec, payload_type) = chosen.ok_or_else(|| SdpError::NoCommonCodec(audio.fmt.clone()))?;
    let (remote, remote_rtcp) = addresses(session, audio)?;
    Ok(AudioPlan {
        codec,
        payload_type,
        clock_rate: codec.clock_rate(),
        remote,
        remote_rtcp,
        telephone_event_pt,
        remote_direction: direction(session, audio),
    })
}

fn plan_video(session: &Session, video: &Media) -> Result<VideoPlan, SdpError> {
    let rtpmaps = rtpmaps(video);
    let chosen = video
        .fmt
        .split_ascii_whitespace()
        .filter_map(|f| f.parse::<u8>().ok())
        .find_map(|pt| {
            let (_, name, rate) = rtpmaps.iter().find(|(p, _, _)| *p == pt)?;
            if *rate != 90000 {
                return None;
            }
            if name.eq_ignore_ascii_case("H264") {
                let params = fmtp(video, pt).unwrap_or_default();
                let mode = params
                    .split(';')
                    .filter_map(|kv| kv.trim().split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("packetization-mode"))
                    .and_then(|(_, v)| v.trim().parse::<u8>().ok())
                    .unwrap_or(0);
                // Mode 2 (interleaved) is not offered and not depayloadable here.
                (mode <= 1).then_some((
                    VideoCodec::H264 {
                        packetization_mode: mode,
                    },
                    pt,
                ))
            } else if name.eq_ignore_ascii_case("VP8") {
                Some((VideoCodec::Vp8, pt))
            } else {
                None
            }
        });
    let (codec, payload_type) = chosen.ok_or_else(|| SdpError::NoCommonCodec(video.fmt.clone()))?;
    let (remote, remote_rtcp) = addresses(session, video)?;
    Ok(VideoPlan {
        codec,
        payload_type,
        remote,
        remote_rtcp,
        remote_direction: direction(session, video),
    })
}

impl Direction {
    /// Our direction in an answer to a stream the peer offers as `self`, given the direction we want
    /// (RFC 3264 6.1): their sendonly is our recvonly, their inactive ours, their recvonly our sendonly (if
    /// we send at all).
    pub fn answer_to(self, ours: Direction) -> Direction {
        let we_send = matches!(ours, Direction::SendRecv | Direction::SendOnly);
        match self {
            Direction::SendRecv if we_send => Direction::SendRecv,
            Direction::SendRecv | Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly if we_send => Direction::SendOnly,
            Direction::RecvOnly | Direction::Inactive => Direction::Inactive,
        }
    }
}

impl MediaPlan {
    /// True when the peer has put the call on hold (RFC 3264 8.4: sendonly or inactive; RFC 2543's
    /// c=0.0.0.0 too).
    pub fn is_hold(&self) -> bool {
        matches!(
            self.audio.remote_direction,
            Direction::SendOnly | Direction::Inactive
        ) || self.audio.remote.ip().is_unspecified()
    }
}

/// Answers a new offer from the peer inside the dialog (re-INVITE or UPDATE, RFC 3264 8): same address and
/// port as before, the codec in use if the offer still has it (the pipeline keeps running), the direction
/// mirrored. Returns the answer's SDP (o= version `version`) and the plan the offer implies.
pub fn answer_reoffer(
    local: &Offer,
    version: u64,
    remote_offer: &[u8],
    current: Option<AudioCodec>,
) -> Result<(Vec<u8>, MediaPlan), SdpError> {
    let mut plan = plan_from_answer(remote_offer)?;
    if let Some(codec) = current {
        // The offer's first supported codec was chosen; keep the running one if it is still offered.
        if let Some(pt) = offered_payload_type(remote_offer, codec) {
            plan.audio.codec = codec;
            plan.audio.payload_type = pt;
        }
    }
    let origin = Origin::with_ip_addr(local.session_id, version, local.address);
    let mut session = Session::new(origin, "sipcast");
    session.connection = Some(Connection::from_ip_addr(local.address));
    session.times.push(Time::new(0, 0));
    let a = &plan.audio;
    let mut fmts = a.payload_type.to_string();
    if let Some(te) = a.telephone_event_pt {
        fmts.push_str(&format!(" {te}"));
    }
    let mut audio = Media::new(
        sdp_types::MediaType::Audio,
        local.audio_port,
        sdp_types::TransportProto::RtpAvp,
        fmts,
    );
    audio.add_attribute_with_value(
        "rtpmap",
        format!(
            "{} {}/{}",
            a.payload_type,
            a.codec.encoding_name(),
            a.clock_rate
        ),
    );
    if let Some(te) = a.telephone_event_pt {
        audio.add_attribute_with_value("rtpmap", format!("{te} telephone-event/8000"));
        audio.add_attribute_with_value("fmtp", format!("{te} 0-16"));
    }
    audio.add_attribute_with_value("ptime", PTIME_MS);
    audio.add_attribute_from_str(
        a.remote_direction
            .answer_to(local.audio_direction)
            .attribute(),
    );
    // RFC 3264 6: the answer has one m-line per offered m-line, in order; what we do not take is
    // refused with port 0.
    let offered = parse(remote_offer)?;
    let mut audio_answered = false;
    let mut video_answered = false;
    for media in &offered.medias {
        let is_audio = media.media.eq_ignore_ascii_case("audio") && media.port != 0;
        let is_video = media.media.eq_ignore_ascii_case("video") && media.port != 0;
        if is_audio && !audio_answered {
            audio_answered = true;
            session.medias.push(audio.clone());
        } else if let (true, false, Some(port), Some(v)) = (
            is_video,
            video_answered,
            local.video_port,
            plan.video.as_ref(),
        ) {
            video_answered = true;
            let mut video = Media::new(
                sdp_types::MediaType::Video,
                port,
                sdp_types::TransportProto::RtpAvp,
                v.payload_type,
            );
            video.add_attribute_with_value(
                "rtpmap",
                format!("{} {}/90000", v.payload_type, v.codec.encoding_name()),
            );
            if let VideoCodec::H264 { packetization_mode } = v.codec {
                video.add_attribute_with_value(
                    "fmtp",
                    format!(
                        "{} packetization-mode={packetization_mode};profile-level-id={H264_PROFILE_LEVEL_ID}",
                        v.payload_type
                    ),
                );
            }
            video.add_attribute_with_value("rtcp-fb", "* nack pli");
            video.add_attribute_with_value("rtcp-fb", "* ccm fir");
            video.add_attribute_from_str(
                v.remote_direction
                    .answer_to(local.video_direction)
                    .attribute(),
            );
            session.medias.push(video);
        } else {
            let mut refused = Media::new(
                sdp_types::MediaType::Audio,
                0,
                sdp_types::TransportProto::RtpAvp,
                &media.fmt,
            );
            refused.media = media.media.clone();
            refused.proto = media.proto.clone();
            session.medias.push(refused);
        }
    }
    if !video_answered {
        plan.video = None;
    }
    let mut out = Vec::new();
    session
        .write(&mut out)
        .expect("writing SDP into a Vec cannot fail");
    Ok((out, plan))
}

/// The payload type the offer's first audio stream uses for `codec`, if it lists it.
fn offered_payload_type(body: &[u8], codec: AudioCodec) -> Option<u8> {
    let session = parse(body).ok()?;
    let audio = session
        .medias
        .iter()
        .find(|m| m.media.eq_ignore_ascii_case("audio") && m.port != 0)?;
    let rtpmaps: Vec<(u8, String, u32)> = audio
        .attributes
        .iter()
        .filter(|a| a.attribute.eq_ignore_ascii_case("rtpmap"))
        .filter_map(|a| a.value.as_deref().and_then(parse_rtpmap))
        .collect();
    audio
        .fmt
        .split_ascii_whitespace()
        .filter_map(|f| f.parse::<u8>().ok())
        .find(|pt| match rtpmaps.iter().find(|(p, _, _)| p == pt) {
            Some((_, name, rate)) => {
                name.eq_ignore_ascii_case(codec.encoding_name()) && *rate == 8000
            }
            None => *pt == codec.static_payload_type(),
        })
}

fn parse_rtpmap(value: &str) -> Option<(u8, String, u32)> {
    let (pt, rest) = value.trim().split_once(char::is_whitespace)?;
    let mut parts = rest.trim().split('/');
    let name = parts.next()?.to_owned();
    let rate = parts.next()?.trim().parse().ok()?;
    Some((pt.parse().ok()?, name, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(direction: Direction) -> String {
        let o = Offer {
            video_port: None,
            video_direction: Direction::RecvOnly,
            address: "192.0.2.1".parse().unwrap(),
            audio_port: 20000,
            audio_direction: direction,
            session_id: 42,
        };
        String::from_utf8(o.to_sdp()).unwrap()
    }

    #[test]
    fn offer_lists_g711_and_telephone_event_with_direction() {
        let sdp = offer(Direction::SendRecv);
        assert!(sdp.contains("m=audio 20000 RTP/AVP 0 8 101\r\n"), "{sdp}");
        assert!(sdp.contains("c=IN IP4 192.0.2.1\r\n"), "{sdp}");
        assert!(
            sdp.contains("a=rtpmap:101 telephone-event/8000\r\n"),
            "{sdp}"
        );
        assert!(sdp.contains("a=sendrecv\r\n"), "{sdp}");
        assert!(offer(Direction::RecvOnly).contains("a=recvonly\r\n"));
        // Our own offer must parse back.
        parse(sdp.as_bytes()).unwrap();
    }

    #[test]
    fn answer_with_static_pt_and_no_rtpmap() {
        let answer = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\n";
        let plan = plan_from_answer(answer).unwrap();
        assert_eq!(plan.audio.codec, AudioCodec::Pcma);
        assert_eq!(plan.audio.payload_type, 8);
        assert_eq!(plan.audio.remote, "10.0.0.1:4000".parse().unwrap());
        assert_eq!(plan.audio.remote_direction, Direction::SendRecv);
    }

    #[test]
    fn media_level_connection_and_session_direction_win() {
        let answer = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\na=sendonly\r\n\
m=audio 4000 RTP/AVP 0 101\r\nc=IN IP4 10.0.0.9\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
        let plan = plan_from_answer(answer).unwrap();
        assert_eq!(plan.audio.remote, "10.0.0.9:4000".parse().unwrap());
        assert_eq!(plan.audio.remote_direction, Direction::SendOnly);
        assert_eq!(plan.audio.telephone_event_pt, Some(101));
    }

    #[test]
    fn rejected_audio_or_foreign_codec_is_an_error() {
        let rejected = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n";
        assert_eq!(plan_from_answer(rejected), Err(SdpError::NoAudio));
        let opus = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(matches!(
            plan_from_answer(opus),
            Err(SdpError::NoCommonCodec(_))
        ));
        let no_c = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert_eq!(plan_from_answer(no_c), Err(SdpError::NoConnectionAddress));
        assert!(matches!(
            plan_from_answer(b"garbage"),
            Err(SdpError::Parse(_))
        ));
    }

    #[test]
    fn reoffers_are_answered_with_mirrored_direction_and_the_running_codec() {
        let local = Offer {
            address: "192.0.2.1".parse().unwrap(),
            audio_port: 20000,
            audio_direction: Direction::SendRecv,
            video_port: None,
            video_direction: Direction::RecvOnly,
            session_id: 42,
        };
        let hold = b"v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n";
        let (answer, plan) = answer_reoffer(&local, 43, hold, Some(AudioCodec::Pcmu)).unwrap();
        let text = String::from_utf8(answer).unwrap();
        assert!(plan.is_hold());
        assert_eq!(
            plan.audio.codec,
            AudioCodec::Pcmu,
            "the running codec is kept"
        );
        assert!(text.contains("o=- 42 43 IN IP4 192.0.2.1\r\n"), "{text}");
        assert!(text.contains("m=audio 20000 RTP/AVP 0 101\r\n"), "{text}");
        assert!(text.contains("a=recvonly\r\n"), "{text}");
        let resume = String::from_utf8_lossy(hold).replace("a=sendonly", "a=sendrecv");
        let (answer, plan) = answer_reoffer(&local, 44, resume.as_bytes(), None).unwrap();
        assert!(!plan.is_hold());
        assert_eq!(
            plan.audio.codec,
            AudioCodec::Pcma,
            "first offered without a running codec"
        );
        assert!(String::from_utf8(answer)
            .unwrap()
            .contains("a=sendrecv\r\n"));
        let inactive = String::from_utf8_lossy(hold).replace("a=sendonly", "a=inactive");
        let (answer, plan) = answer_reoffer(&local, 45, inactive.as_bytes(), None).unwrap();
        assert!(plan.is_hold());
        assert!(String::from_utf8(answer)
            .unwrap()
            .contains("a=inactive\r\n"));
        let old_hold = String::from_utf8_lossy(hold)
            .replace("c=IN IP4 10.0.0.1", "c=IN IP4 0.0.0.0")
            .replace("a=sendonly", "a=sendrecv");
        assert!(answer_reoffer(&local, 46, old_hold.as_bytes(), None)
            .unwrap()
            .1
            .is_hold());
        let opus = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(answer_reoffer(&local, 47, opus, None).is_err());
    }

    #[test]
    fn real_products_answers_never_panic() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/sdp");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("shared SDP corpus is beside the repo") {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sdp") {
                let body = std::fs::read(&path).unwrap();
                // Full parse robustness is issue 4's; here: a result, never a panic.
                let _ = plan_from_answer(&body);
                seen += 1;
            }
        }
        assert!(
            seen >= 20,
            "expected the shared SDP corpus, saw {seen} files"
        );
    }

    #[test]
    fn video_offer_lists_h264_both_modes_and_vp8_with_feedback() {
        let o = Offer {
            address: "192.0.2.1".parse().unwrap(),
            audio_port: 20000,
            audio_direction: Direction::SendRecv,
            video_port: Some(20002),
            video_direction: Direction::SendRecv,
            session_id: 1,
        };
        let sdp = String::from_utf8(o.to_sdp()).unwrap();
        assert!(sdp.contains("m=video 20002 RTP/AVP 96 97 98\r\n"), "{sdp}");
        assert!(
            sdp.contains("a=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\n"),
            "{sdp}"
        );
        assert!(
            sdp.contains("a=fmtp:97 packetization-mode=0;profile-level-id=42e01f\r\n"),
            "{sdp}"
        );
        assert!(sdp.contains("a=rtpmap:98 VP8/90000\r\n"), "{sdp}");
        assert!(
            sdp.contains("a=rtcp-fb:* nack pli\r\n") && sdp.contains("a=rtcp-fb:* ccm fir\r\n"),
            "{sdp}"
        );
        parse(sdp.as_bytes()).unwrap();
    }

    const AV_ANSWER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\na=rtcp:4005\r\n\
m=video 4002 RTP/AVP 100 101\r\na=rtpmap:100 H264/90000\r\na=fmtp:100 packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:101 VP8/90000\r\na=rtcp-mux\r\n";

    #[test]
    fn answer_with_video_gives_codec_mode_and_rtcp_addresses() {
        let plan = plan_from_answer(AV_ANSWER.as_bytes()).unwrap();
        assert_eq!(
            plan.audio.remote_rtcp,
            "10.0.0.1:4005".parse().unwrap(),
            "a=rtcp (RFC 3605)"
        );
        let video = plan.video.expect("video accepted");
        assert_eq!(
            video.codec,
            VideoCodec::H264 {
                packetization_mode: 1
            }
        );
        assert_eq!(
            video.payload_type, 100,
            "the answer's own dynamic payload type"
        );
        assert_eq!(video.remote, "10.0.0.1:4002".parse().unwrap());
        assert_eq!(video.remote_rtcp, video.remote, "rtcp-mux (RFC 5761)");
        let vp8_first = AV_ANSWER.replace(
            "m=video 4002 RTP/AVP 100 101",
            "m=video 4002 RTP/AVP 101 100",
        );
        assert_eq!(
            plan_from_answer(vp8_first.as_bytes())
                .unwrap()
                .video
                .unwrap()
                .codec,
            VideoCodec::Vp8
        );
        let rejected = AV_ANSWER.replace("m=video 4002", "m=video 0");
        assert_eq!(
            plan_from_answer(rejected.as_bytes()).unwrap().video,
            None,
            "port 0: video rejected, audio goes on"
        );
        let default_rtcp = AV_ANSWER.replace("a=rtcp:4005\r\n", "");
        assert_eq!(
            plan_from_answer(default_rtcp.as_bytes())
                .unwrap()
                .audio
                .remote_rtcp,
            "10.0.0.1:4001".parse().unwrap()
        );
    }

    #[test]
    fn h264_without_fmtp_is_mode_0_and_mode_2_is_refused() {
        let no_fmtp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n\
m=video 4002 RTP/AVP 99\r\na=rtpmap:99 H264/90000\r\n";
        let video = plan_from_answer(no_fmtp.as_bytes()).unwrap().video.unwrap();
        assert_eq!(
            video.codec,
            VideoCodec::H264 {
                packetization_mode: 0
            }
        );
        let mode2 = no_fmtp.replace(
            "a=rtpmap:99 H264/90000\r\n",
            "a=rtpmap:99 H264/90000\r\na=fmtp:99 packetization-mode=2\r\n",
        );
        assert_eq!(plan_from_answer(mode2.as_bytes()).unwrap().video, None);
    }
}
