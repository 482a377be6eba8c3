//! A broken pipeline template stops start-up with a message naming the file and the problem.

use std::process::Command;

fn check_with(template: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("audio-g711-aac.pipeline"), template).unwrap();
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
    let (ok, err) = check_with("udpsrc name=rtp_in ! nosuchelement ! rtmp2sink name=rtmp_out");
    assert!(!ok);
    assert!(
        err.contains("audio-g711-aac.pipeline") && err.contains("nosuchelement"),
        "{err}"
    );

    let (ok, err) = check_with("udpsrc name=rtp_in ! fakesink");
    assert!(!ok);
    assert!(
        err.contains("audio-g711-aac.pipeline") && err.contains("rtmp_out"),
        "{err}"
    );

    let (ok, err) = check_with("udpsrc name=rtp_in ! {unknown} ! rtmp2sink name=rtmp_out");
    assert!(!ok);
    assert!(err.contains("{unknown}"), "{err}");

    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/audio-g711-aac.pipeline"
    ))
    .unwrap();
    let (ok, err) = check_with(&shipped);
    assert!(ok, "the shipped template passes: {err}");
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
