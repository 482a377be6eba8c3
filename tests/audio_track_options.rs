//! Acceptance (issue 4, 5): an audio-only call with the black-video template gives a recording with both
//! tracks (for CDNs that refuse audio-only streams); the G.711 passthrough template gives a recording whose
//! audio is pcm_mulaw or pcm_alaw, untranscoded.

mod common;

use std::time::Duration;

use common::calls::{assert_codecs, finished_recording, start_streaming, startup, terminate};
use common::gateway::Gateway;
use common::peers::{Baresip, BaresipOptions, Nginx};
use common::probe;

/// Records a call with `template`; `check` looks at the recording while the server (and its files) live.
fn record_with_template(template: &str, stream: &str, check: impl FnOnce(&std::path::Path)) {
    let nginx = Nginx::start();
    let callee = Baresip::start(BaresipOptions::new("tone"));
    let gateway = Gateway::start_with(&format!("[media]\naudio_g711_template = \"{template}\"\n"));
    start_streaming(
        &gateway,
        &startup("c", &callee, "tone", &nginx.rtmp_url(), stream),
    );
    std::thread::sleep(Duration::from_secs(4));
    terminate(&gateway, "c");
    let recording = finished_recording(&nginx, stream);
    assert!(probe::audio_duration(&recording) > 3.0);
    check(&recording);
}

#[test]
fn black_video_adds_a_video_track_to_an_audio_call() {
    record_with_template(
        "audio-g711-aac-black-video.pipeline",
        "black-video",
        |recording| {
            assert_codecs(recording, Some("h264"), Some("aac"));
        },
    );
}

#[test]
fn g711_passthrough_keeps_the_codec() {
    record_with_template(
        "audio-g711-passthrough.pipeline",
        "passthrough",
        |recording| {
            let info = probe::ffprobe(recording);
            let audio = info.audio().expect("audio track");
            assert!(
                ["pcm_mulaw", "pcm_alaw"].contains(&audio.codec_name.as_str()),
                "{info:?}"
            );
            assert!(info.video().is_none());
        },
    );
}
