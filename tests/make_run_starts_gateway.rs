//! Acceptance (issue 2, 6): `make run` on this checkout builds and starts the gateway with
//! config/sipcast.toml, and GET and POST /rest-api/call/find_all answer (404 with no calls, as WCS).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::peers::{descendants_of, send_signal};

/// Status and body of find_all, or `None` while nothing answers on 127.0.0.1:8081.
fn find_all(client: &reqwest::blocking::Client, method: &str) -> Option<(u16, String)> {
    let url = "http://127.0.0.1:8081/rest-api/call/find_all";
    let request = match method {
        "POST" => client
            .post(url)
            .header("content-type", "application/json")
            .body("{}"),
        _ => client.get(url),
    };
    let response = request.send().ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().ok()?))
}

#[test]
fn make_run_serves_find_all() {
    let root = env!("CARGO_MANIFEST_DIR");
    let log_path =
        std::env::temp_dir().join(format!("sipcast-make-run-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut make = Command::new("make")
        .args(["--no-print-directory", "run"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("make is installed");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // The first run builds the release binary: allow for it.
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut answers = None;
    let mut exited = None;
    while Instant::now() < deadline {
        // Only once this gateway said it is ready: another process may hold 8081 on a shared machine.
        let ready = std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("sipcast ready"));
        if let (true, Some(get), Some(post)) =
            (ready, find_all(&client, "GET"), find_all(&client, "POST"))
        {
            answers = Some((get, post));
            break;
        }
        if let Ok(Some(status)) = make.try_wait() {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Stop the gateway make started (SIGTERM: its graceful shutdown), then make itself.
    let gateway_pids = descendants_of(make.id());
    for pid in &gateway_pids {
        send_signal(*pid, "TERM");
    }
    let stopped = common::wait_until(Duration::from_secs(10), || {
        matches!(make.try_wait(), Ok(Some(_)))
    });
    if !stopped {
        for pid in descendants_of(make.id()) {
            send_signal(pid, "KILL");
        }
        let _ = make.kill();
        let _ = make.wait();
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    if let Some(status) = exited {
        panic!("make run exited with {status} before answering:\n{log}");
    }
    let ((get_status, get_body), (post_status, _)) =
        answers.unwrap_or_else(|| panic!("find_all never answered:\n{log}"));
    assert_eq!(get_status, 404, "GET find_all with no calls: {get_body}");
    assert_eq!(post_status, 404);
    assert!(get_body.contains("\"error\""), "{get_body}");
    assert!(log.contains("sipcast ready"), "{log}");
    assert!(stopped, "the gateway stops on SIGTERM:\n{log}");
    assert!(
        log.contains("sipcast stopped"),
        "graceful shutdown ran:\n{log}"
    );
    let _ = std::fs::remove_file(&log_path);
}
