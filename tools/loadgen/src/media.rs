//! Prepared media: G.711 mu-law audio (a file of raw mu-law bytes, or a computed tone) and H.264 (an Annex-B
//! file split into access units and packetized per RFC 6184 packetization-mode 1: single NAL unit packets,
//! FU-A for NAL units above the MTU).

use std::sync::Arc;

/// RTP payload bytes of one 20 ms PCMU packet.
pub const PCMU_PACKET_BYTES: usize = 160;
/// Largest RTP payload we send (fits any loopback or Ethernet MTU with headers).
pub const MAX_PAYLOAD: usize = 1200;

/// ITU-T G.711 mu-law encoding of one linear sample.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && s & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// `seconds` of a sine tone at 8 kHz, mu-law encoded (a whole number of 20 ms packets).
pub fn tone_ulaw(freq_hz: f64, seconds: u32) -> Vec<u8> {
    let samples = 8000 * seconds.max(1) as usize;
    (0..samples)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let v = (2.0 * std::f64::consts::PI * freq_hz * t).sin() * 0.5 * f64::from(i16::MAX);
            linear_to_ulaw(v as i16)
        })
        .collect()
}

/// Looped mu-law audio, cut into 20 ms payloads.
#[derive(Clone)]
pub struct Audio {
    data: Arc<Vec<u8>>,
}

impl Audio {
    /// From raw mu-law bytes (e.g. `ffmpeg ... -f mulaw tone.ul`); the tail short of a packet is dropped.
    pub fn from_ulaw(mut data: Vec<u8>) -> anyhow::Result<Audio> {
        data.truncate(data.len() / PCMU_PACKET_BYTES * PCMU_PACKET_BYTES);
        anyhow::ensure!(!data.is_empty(), "the audio file holds less than 20 ms");
        Ok(Audio {
            data: Arc::new(data),
        })
    }

    pub fn packets(&self) -> usize {
        self.data.len() / PCMU_PACKET_BYTES
    }

    /// The payload of packet `n` (looping).
    pub fn payload(&self, n: u64) -> &[u8] {
        let i = (n % self.packets() as u64) as usize * PCMU_PACKET_BYTES;
        self.data.get(i..i + PCMU_PACKET_BYTES).unwrap_or(&[])
    }
}

/// One RTP payload of a video frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoPacket {
    pub payload: Vec<u8>,
    /// Last packet of the access unit (RTP marker bit).
    pub marker: bool,
}

/// A looped H.264 stream as RTP payloads per frame.
#[derive(Clone)]
pub struct Video {
    frames: Arc<Vec<Vec<VideoPacket>>>,
    pub fps: u32,
}

/// NAL units of an Annex-B byte stream (start codes 00 00 01 or 00 00 00 01; trailing zeros trimmed).
pub fn split_annexb(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::new();
    for (k, &start) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(data.len(), |&next| next - 3);
        while end > start && data[end - 1] == 0 {
            end -= 1;
        }
        if end > start {
            nals.push(&data[start..end]);
        }
    }
    nals
}

fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

fn is_vcl(nal: &[u8]) -> bool {
    (1..=5).contains(&nal_type(nal))
}

/// first_mb_in_slice == 0: the slice header's first ue(v) is a single 1 bit.
fn starts_picture(nal: &[u8]) -> bool {
    nal.get(1).is_some_and(|b| b & 0x80 != 0)
}

/// Groups NAL units into access units (H.264 7.4.1.2.3): a new one starts at an AUD, SPS, PPS or SEI after a
/// picture, or at a slice with first_mb_in_slice 0 after a picture. AUDs are dropped.
pub fn access_units<'a>(nals: &[&'a [u8]]) -> Vec<Vec<&'a [u8]>> {
    let mut units: Vec<Vec<&[u8]>> = Vec::new();
    let mut current: Vec<&[u8]> = Vec::new();
    let mut has_picture = false;
    for &nal in nals {
        let t = nal_type(nal);
        let boundary = has_picture && (matches!(t, 6..=9) || (is_vcl(nal) && starts_picture(nal)));
        if boundary {
            units.push(std::mem::take(&mut current));
            has_picture = false;
        }
        if t == 9 {
            continue;
        }
        has_picture |= is_vcl(nal);
        current.push(nal);
    }
    if has_picture {
        units.push(current);
    }
    units
}

/// RFC 6184 mode 1 payloads of one access unit: a NAL unit that fits is sent as is, a larger one as FU-A
/// fragments. The last packet carries the marker.
pub fn packetize(unit: &[&[u8]], max_payload: usize) -> Vec<VideoPacket> {
    let mut packets = Vec::new();
    for nal in unit {
        if nal.len() <= max_payload {
            packets.push(VideoPacket {
                payload: nal.to_vec(),
                marker: false,
            });
            continue;
        }
        let Some((&header, body)) = nal.split_first() else {
            continue;
        };
        let indicator = (header & 0xe0) | 28;
        let chunk = max_payload.saturating_sub(2).max(1);
        let count = body.chunks(chunk).count();
        for (i, part) in body.chunks(chunk).enumerate() {
            let mut fu = (header & 0x1f) & 0x1f;
            if i == 0 {
                fu |= 0x80;
            }
            if i + 1 == count {
                fu |= 0x40;
            }
            let mut payload = Vec::with_capacity(part.len() + 2);
            payload.extend_from_slice(&[indicator, fu]);
            payload.extend_from_slice(part);
            packets.push(VideoPacket {
                payload,
                marker: false,
            });
        }
    }
    if let Some(last) = packets.last_mut() {
        last.marker = true;
    }
    packets
}

impl Video {
    /// From an Annex-B H.264 file whose first access unit is a keyframe with SPS/PPS (it is looped).
    pub fn from_annexb(data: &[u8], fps: u32) -> anyhow::Result<Video> {
        let nals = split_annexb(data);
        let units = access_units(&nals);
        anyhow::ensure!(!units.is_empty(), "no H.264 access units in the video file");
        anyhow::ensure!(
            units[0].iter().any(|n| nal_type(n) == 7) && units[0].iter().any(|n| nal_type(n) == 5),
            "the video file must start with SPS, PPS and an IDR picture"
        );
        let frames = units.iter().map(|u| packetize(u, MAX_PAYLOAD)).collect();
        Ok(Video {
            frames: Arc::new(frames),
            fps: fps.max(1),
        })
    }

    pub fn frames(&self) -> usize {
        self.frames.len()
    }

    /// The packets of frame `n` (looping).
    pub fn frame(&self, n: u64) -> &[VideoPacket] {
        let i = (n % self.frames.len() as u64) as usize;
        self.frames.get(i).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_matches_reference_points() {
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(linear_to_ulaw(-1), 0x7f);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        let tone = tone_ulaw(440.0, 1);
        assert_eq!(tone.len(), 8000);
        let audio = Audio::from_ulaw(tone).unwrap();
        assert_eq!(audio.packets(), 50);
        assert_eq!(audio.payload(50), audio.payload(0));
        assert!(Audio::from_ulaw(vec![0; 100]).is_err());
    }

    #[test]
    fn annexb_units_and_fu_a() {
        let mut stream = Vec::new();
        let sps = [0x67, 0x42, 0xe0, 0x1f];
        let pps = [0x68, 0xce, 0x06];
        let mut idr = vec![0x65, 0x88];
        idr.extend(std::iter::repeat_n(0xab, 3000));
        let p = [0x41, 0x9a, 0x01];
        for nal in [&[0x09, 0xf0][..], &sps, &pps, &idr, &[0x09, 0xf0], &p] {
            stream.extend_from_slice(&[0, 0, 0, 1]);
            stream.extend_from_slice(nal);
        }
        let video = Video::from_annexb(&stream, 25).unwrap();
        assert_eq!(video.frames(), 2);
        let first = video.frame(0);
        assert_eq!(first[0].payload, sps);
        assert_eq!(first[1].payload, pps);
        let fus = &first[2..];
        assert_eq!(fus.len(), 3, "2999 bytes in 1198-byte fragments");
        assert_eq!(fus[0].payload[..2], [0x7c, 0x85]);
        assert_eq!(fus[1].payload[1], 0x05);
        assert_eq!(fus[2].payload[1], 0x45);
        assert!(fus[2].marker && !fus[0].marker);
        let total: usize = fus.iter().map(|f| f.payload.len() - 2).sum();
        assert_eq!(total, idr.len() - 1);
        assert_eq!(
            video.frame(1),
            &[VideoPacket {
                payload: p.to_vec(),
                marker: true
            }]
        );
        assert!(Video::from_annexb(&[0, 0, 1, 0x41, 0x9a], 25).is_err());
        assert!(Video::from_annexb(b"garbage", 25).is_err());
    }
}
