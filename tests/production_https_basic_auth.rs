//! Acceptance (issue 3, 4): the production profile over HTTPS with a certificate made at test time:
//! no credentials -> 401 with WWW-Authenticate, wrong ones -> 401, right ones -> 200 (plain HTTP asks
//! too); and a production profile without users refuses to start, saying why.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::gateway::Gateway;
use common::peers::PeerDir;

const PASSWORD: &str = "correct horse battery staple";

/// `sipcast --hash-password`, as an operator makes the hash.
fn hash(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipcast"))
        .arg("--hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sipcast --hash-password");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(password));
    hash
}

#[test]
fn production_profile_over_https_needs_the_right_credentials() {
    let dir = PeerDir::new("tls");
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("a test certificate");
    let cert_pem = certified.cert.pem();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();
    let https_port = common::free_tcp_port();
    let gateway = Gateway::start_with(&format!(
        "[https]\nlisten = \"127.0.0.1:{https_port}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n\
         [auth]\nprofile = \"production\"\n\n[[auth.users]]\nname = \"operator\"\npassword_hash = \"{}\"\n",
        cert_path.display(),
        key_path.display(),
        hash(PASSWORD)
    ));
    let client = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = |path: &str| format!("https://127.0.0.1:{https_port}{path}");

    for path in ["/rest-api/stats", "/", "/rest-api/openapi.json"] {
        let response = client.get(url(path)).send().expect("HTTPS answers");
        assert_eq!(response.status(), 401, "{path} without credentials");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .expect("a challenge")
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.starts_with("Basic realm=\"sipcast\""),
            "{challenge}"
        );
        for (user, password) in [("operator", "wrong"), ("admin", PASSWORD), ("", "")] {
            let response = client
                .get(url(path))
                .basic_auth(user, Some(password))
                .send()
                .unwrap();
            assert_eq!(response.status(), 401, "{path} as {user}:{password}");
        }
        let response = client
            .get(url(path))
            .basic_auth("operator", Some(PASSWORD))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{path} with the right credentials");
    }
    let response = client
        .post(url("/rest-api/call/find_all"))
        .basic_auth("operator", Some(PASSWORD))
        .send()
        .unwrap();
    assert_eq!(response.status(), 404, "find_all with no calls, as WCS");

    // Plain HTTP asks for credentials too.
    assert_eq!(gateway.get("/rest-api/stats").status, 401);
    let plain = reqwest::blocking::Client::new()
        .get(format!("{}/rest-api/stats", gateway.base_url()))
        .basic_auth("operator", Some(PASSWORD))
        .send()
        .unwrap();
    assert_eq!(plain.status(), 200);
    assert!(
        !gateway.log().contains(PASSWORD),
        "the password is not logged"
    );
}

#[test]
fn production_profile_without_users_refuses_to_start() {
    let dir = PeerDir::new("nousers");
    let config = dir.path().join("sipcast.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{}\"\n[auth]\nprofile = \"production\"\n",
            common::free_tcp_port()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipcast"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = common::wait_until(std::time::Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited, "a production profile without users started");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("auth.users") && stderr.contains("no default password"),
        "{stderr}"
    );
}
