//! Acceptance (issue 2, 6): `make run` on this checkout builds and starts the gateway with
//! config/sipcast.toml, and GET and POST /rest-api/call/find_all answer (404 with no calls, as WCS).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn http(method: &str) -> Option<(u16, String)> {
    let mut stream =
        TcpStream::connect_timeout(&"127.0.0.1:8081".parse().ok()?, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let body = if method == "POST" { "{}" } else { "" };
    let request = format!(
        "{method} /rest-api/call/find_all HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response))
}

/// Signals process group `pgid` through bash's builtin kill. Not kill(1): procps-ng 4.0.2 (Debian 12)
/// mis-parses `kill -TERM -PGID` and signals every process it may (as `kill -1`), which took down the
/// whole machine's jobs, the test runner included.
fn kill_group(pgid: u32, signal: &str) {
    let _ = Command::new("bash")
        .args([
            "-c",
            "kill -s \"$1\" -- \"-$2\"",
            "kill_group",
            signal,
            &pgid.to_string(),
        ])
        .status();
}

#[test]
fn make_run_serves_find_all() {
    let root = env!("CARGO_MANIFEST_DIR");
    let log_path =
        std::env::temp_dir().join(format!("sipcast-make-run-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("setsid")
        .args(["make", "--no-print-directory", "run"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("make is installed");
    // The first run builds the release binary: allow for it.
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut answers = None;
    while Instant::now() < deadline {
        if let (Some(get), Some(post)) = (http("GET"), http("POST")) {
            answers = Some((get, post));
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "make run exited with {status}:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Stop the whole process group (make and the gateway it started).
    kill_group(child.id(), "TERM");
    let stopped = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !stopped {
        kill_group(child.id(), "KILL");
        let _ = child.wait();
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let ((get_status, get_body), (post_status, _)) =
        answers.unwrap_or_else(|| panic!("find_all never answered:\n{log}"));
    assert_eq!(get_status, 404, "GET find_all with no calls: {get_body}");
    assert_eq!(post_status, 404);
    assert!(get_body.contains("\"error\""), "{get_body}");
    assert!(log.contains("sipcast ready"), "{log}");
    assert!(stopped, "the gateway stops on SIGTERM:\n{log}");
    let _ = std::fs::remove_file(&log_path);
}
