//! Media checks on recordings with ffprobe/ffmpeg: stream info, real decoded audio duration,
//! tone detection (Goertzel) and keyframe checks.
//!
//! Pitfalls:
//! - ffprobe prints numbers (`duration`, `sample_rate`) as JSON strings, and omits `duration`
//!   when an FLV ended uncleanly; [`audio_duration`] therefore counts decoded samples instead.
//! - Decoding an FLV in which nginx-rtmp appended two publishes (`record_append`) makes ffmpeg
//!   log "non monotonically increasing dts" errors while still exiting 0 with all samples.
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// What ffprobe says about a media file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeInfo {
    /// Container duration in seconds (0.0 when ffprobe does not know it).
    pub format_duration: f64,
    /// Container format name, e.g. `flv`.
    pub format_name: String,
    /// The streams in file order.
    pub streams: Vec<StreamInfo>,
}

impl ProbeInfo {
    /// The first audio stream, if any.
    pub fn audio(&self) -> Option<&StreamInfo> {
        self.streams.iter().find(|s| s.codec_type == "audio")
    }

    /// The first video stream, if any.
    pub fn video(&self) -> Option<&StreamInfo> {
        self.streams.iter().find(|s| s.codec_type == "video")
    }
}

/// One stream as reported by ffprobe.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamInfo {
    /// `audio`, `video`, `data`...
    pub codec_type: String,
    /// `aac`, `pcm_mulaw`, `h264`...
    pub codec_name: String,
    /// Audio sample rate in Hz.
    pub sample_rate: Option<u32>,
    /// Audio channel count.
    pub channels: Option<u32>,
    /// Stream duration in seconds, when known.
    pub duration: Option<f64>,
    /// Video width in pixels.
    pub width: Option<u32>,
    /// Video height in pixels.
    pub height: Option<u32>,
    /// Codec profile, e.g. `LC` or `High`.
    pub profile: Option<String>,
}

#[derive(Deserialize)]
struct RawProbe {
    #[serde(default)]
    format: RawFormat,
    #[serde(default)]
    streams: Vec<RawStream>,
}

#[derive(Deserialize, Default)]
struct RawFormat {
    duration: Option<String>,
    #[serde(default)]
    format_name: String,
}

#[derive(Deserialize)]
struct RawStream {
    #[serde(default)]
    codec_type: String,
    #[serde(default)]
    codec_name: String,
    sample_rate: Option<String>,
    channels: Option<u32>,
    duration: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    profile: Option<String>,
}

/// Runs a command and returns its stdout; panics with stderr when it fails.
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.stdout
}

/// Runs `ffprobe -show_format -show_streams` on `path` and parses the result.
pub fn ffprobe(path: &Path) -> ProbeInfo {
    let json = run(Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_format",
            "-show_streams",
            "-of",
            "json",
        ])
        .arg(path));
    let raw: RawProbe = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "cannot parse ffprobe output for {}: {e}\n{}",
            path.display(),
            String::from_utf8_lossy(&json)
        )
    });
    ProbeInfo {
        format_duration: raw
            .format
            .duration
            .and_then(|d| d.parse().ok())
            .unwrap_or(0.0),
        format_name: raw.format.format_name,
        streams: raw
            .streams
            .into_iter()
            .map(|s| StreamInfo {
                codec_type: s.codec_type,
                codec_name: s.codec_name,
                sample_rate: s.sample_rate.and_then(|r| r.parse().ok()),
                channels: s.channels,
                duration: s.duration.and_then(|d| d.parse().ok()),
                width: s.width,
                height: s.height,
                profile: s.profile,
            })
            .collect(),
    }
}

/// Decodes the first audio stream of `path` to mono signed 16-bit samples at `rate` Hz.
pub fn decode_audio(path: &Path, rate: u32) -> Vec<i16> {
    let raw = run(Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:a:0", "-ac", "1", "-ar", &rate.to_string()])
        .args(["-f", "s16le", "-"]));
    raw.chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The real audio duration in seconds: decoded samples / sample rate (not the FLV header).
pub fn audio_duration(path: &Path) -> f64 {
    let rate = ffprobe(path)
        .audio()
        .and_then(|a| a.sample_rate)
        .unwrap_or_else(|| panic!("{} has no audio stream", path.display()));
    decode_audio(path, rate).len() as f64 / f64::from(rate)
}

/// Share (0..=1) of the audio's power at `freq_hz`: near 1.0 for a pure tone at that frequency,
/// near 0 for other content or silence (Goertzel over 50 ms blocks of 8 kHz mono).
pub fn tone_strength(path: &Path, freq_hz: f64) -> f64 {
    tone_strength_of(&decode_audio(path, 8000), 8000.0, freq_hz)
}

/// [`tone_strength`] on samples already decoded at `sample_rate`.
pub fn tone_strength_of(samples: &[i16], sample_rate: f64, freq_hz: f64) -> f64 {
    let block = (sample_rate * 0.05) as usize;
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq_hz / sample_rate).cos();
    let (mut tone, mut total) = (0.0, 0.0);
    for chunk in samples.chunks_exact(block) {
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in chunk {
            let x = f64::from(x);
            total += x * x;
            let s0 = x + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        // |X(f)|^2; a sine of amplitude A gives (A*N/2)^2 while its energy is A^2*N/2.
        tone += (s1 * s1 + s2 * s2 - coeff * s1 * s2) * 2.0 / block as f64;
    }
    if total == 0.0 {
        0.0
    } else {
        (tone / total).min(1.0)
    }
}

/// Writes a *video-only* test video (ffmpeg `testsrc`: moving pattern with a frame counter,
/// 320x240, 25 fps, H.264 constrained baseline, a keyframe every second, no audio track) of
/// `seconds` to `path`; the container follows the extension (use `.mp4`). Made for baresip's
/// `avformat` video source, which decodes and re-encodes it with the negotiated codec (so the
/// file's codec need not match the call's), and which crashed on an MP4 with an AAC track.
/// About 1.5 s of CPU per minute of video.
pub fn make_test_video(path: &Path, seconds: u32) {
    run(Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=size=320x240:rate=25:duration={seconds}"))
        .args(["-an", "-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", "25"])
        .arg(path));
}

/// A shared 120 s [`make_test_video`] file, made once and then reused (also across test runs
/// and processes) under cargo's `CARGO_TARGET_TMPDIR`. Longer than any test call, though
/// baresip would loop it anyway (with a ~1 s pause at each rewind).
pub fn test_video() -> PathBuf {
    static MADE: OnceLock<PathBuf> = OnceLock::new();
    MADE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join("sipcast-test-video-320x240-25fps-120s.mp4");
        if !path.exists() {
            std::fs::create_dir_all(dir).expect("cannot create CARGO_TARGET_TMPDIR");
            // Made under a unique name and renamed: parallel test processes never see half a file.
            let partial = dir.join(format!(
                "sipcast-test-video-{}.partial.mp4",
                std::process::id()
            ));
            make_test_video(&partial, 120);
            std::fs::rename(&partial, &path).expect("cannot rename the test video");
        }
        path
    })
    .clone()
}

/// Whether the first video frame of `path` is a keyframe (false when there is no video).
pub fn first_video_frame_is_keyframe(path: &Path) -> bool {
    let json = run(Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v", "-show_frames"])
        .args([
            "-read_intervals",
            "%+#1",
            "-show_entries",
            "frame=key_frame",
        ])
        .args(["-of", "json"])
        .arg(path));
    let value: serde_json::Value = serde_json::from_slice(&json).expect("ffprobe JSON");
    value["frames"][0]["key_frame"].as_i64() == Some(1)
}

/// The largest gap in seconds between consecutive audio packets of `path` (by presentation time), and the
/// span from the first to the last packet: a recording with no hole has a max gap of a frame or so.
pub fn audio_packet_gaps(path: &Path) -> (f64, f64) {
    let out = run(Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-show_entries"])
        .args(["packet=pts_time", "-of", "csv=p=0"])
        .arg(path));
    let times: Vec<f64> = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    let max_gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0f64, f64::max);
    let span = match (times.first(), times.last()) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    (max_gap, span)
}
