//! A broken pipeline template or config stops start-up with a message naming the file and the problem.

use std::path::Path;
use std::process::Command;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines");

/// Runs `sipcast --check` with the shipped templates, `name` replaced by `text`.
fn check_with(name: &str, text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    for shipped in std::fs::read_dir(SHIPPED).unwrap() {
        let shipped = shipped.unwrap().path();
        std::fs::copy(&shipped, dir.path().join(shipped.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.path().join(name), text).unwrap();
    let config = dir.path().join("sipcast.toml");
    std::fs::write(
        &config,
        format!("[media]\npipelines_dir = \"{}\"\n", dir.path().display()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sipcast"))
        .arg("--config")
        .arg(&config)
        .arg("--check")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_templates_stop_start_up_naming_file_and_problem() {
    let call = "audio-g711-aac.pipeline";
    let (ok, err) = check_with(
        call,
        "rtppcmudepay name=audio_in ! nosuchelement ! flvmux name=mux",
    );
    assert!(!ok);
    assert!(err.contains(call) && err.contains("nosuchelement"), "{err}");

    let (ok, err) = check_with(call, "rtppcmudepay name=audio_in ! fakesink");
    assert!(!ok);
    assert!(err.contains(call) && err.contains("\"mux\""), "{err}");

    let (ok, err) = check_with(call, "{depay} name=audio_in ! {unknown} ! flvmux name=mux");
    assert!(!ok);
    assert!(err.contains("{unknown}"), "{err}");

    let (ok, err) = check_with(
        "output-rtmp.pipeline",
        "appsrc name=flv_in ! fakesink name=rtmp_out",
    );
    assert!(!ok);
    assert!(
        err.contains("output-rtmp.pipeline") && err.contains("location"),
        "{err}"
    );

    let (ok, err) = check_with(
        "av-g711-h264.pipeline",
        "{depay} name=audio_in ! {decoder} ! voaacenc ! flvmux name=mux",
    );
    assert!(!ok);
    assert!(
        err.contains("av-g711-h264.pipeline") && err.contains("video_in"),
        "{err}"
    );

    let shipped = std::fs::read_to_string(Path::new(SHIPPED).join(call)).unwrap();
    let (ok, err) = check_with(call, &shipped);
    assert!(ok, "the shipped templates pass: {err}");
}

#[test]
fn unknown_config_field_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sipcast.toml");
    std::fs::write(&config, "[sip]\nlisten_prot = \"x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sipcast"))
        .arg("--config")
        .arg(&config)
        .arg("--check")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen_prot"), "{err}");
}
