//! The gateway under test: the real `sipcast` binary with a config of its own (fresh ports, its own RTP
//! range), its stderr captured so tests can check what it logs, and every API response kept so tests can
//! check what it shows.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::peers::{PeerDir, PeerProcess};
use super::{free_tcp_port, free_udp_tcp_port, wait_until};

pub struct Gateway {
    process: PeerProcess,
    http: SocketAddr,
    sip_port: u16,
    client: reqwest::blocking::Client,
    responses: Mutex<Vec<String>>,
    _dir: PeerDir,
}

/// An answer from the REST API.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub json: Value,
    pub text: String,
}

impl Gateway {
    /// Starts the gateway with the default test config.
    pub fn start() -> Gateway {
        Self::start_with("")
    }

    /// Starts the gateway with extra `key = value` lines in its `[sip]` table.
    pub fn start_with_sip(sip_lines: &str) -> Gateway {
        Self::start_config(sip_lines, "")
    }

    /// Starts the gateway; `extra_toml` is appended to the generated config (whole tables only).
    pub fn start_with(extra_toml: &str) -> Gateway {
        Self::start_config("", extra_toml)
    }

    /// Starts the gateway with extra `[sip]` lines and extra tables (lines under `[media]` join its table).
    pub fn start_config(sip_lines: &str, extra_toml: &str) -> Gateway {
        let dir = PeerDir::new("gateway");
        let http_port = free_tcp_port();
        // SIP listens on UDP and TCP on the same port.
        let sip_port = free_udp_tcp_port();
        // An RTP range of its own per gateway; the allocator also probes the host, so overlaps only cost a retry.
        let rtp_min = 30000 + (http_port % 150) * 200;
        let pipelines = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines");
        // Lines of `extra_toml` under [media] join the generated [media] table (TOML forbids a second one).
        let (mut media_extra, mut other_extra, mut in_media) =
            (String::new(), String::new(), false);
        for line in extra_toml.lines() {
            if line.trim_start().starts_with('[') {
                in_media = line.trim() == "[media]";
                if in_media {
                    continue;
                }
            }
            let target = if in_media {
                &mut media_extra
            } else {
                &mut other_extra
            };
            target.push_str(line);
            target.push('\n');
        }
        let config = format!(
            "[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n[sip]\nlisten = \"127.0.0.1:{sip_port}\"\n{sip_lines}\n\n\
             [media]\nrtp_bind = \"127.0.0.1\"\nrtp_port_min = {rtp_min}\nrtp_port_max = {}\npipelines_dir = \"{pipelines}\"\n{media_extra}\n{other_extra}",
            rtp_min + 199
        );
        let config_path = dir.path().join("sipcast.toml");
        std::fs::write(&config_path, config).expect("write gateway config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sipcast"));
        cmd.arg("--config")
            .arg(&config_path)
            .env("SIPCAST_LOG", "debug")
            .env("NO_COLOR", "1");
        let process = PeerProcess::spawn(
            "sipcast",
            cmd,
            &dir.path().join("sipcast.log"),
            Duration::from_secs(8),
        );
        let gateway = Gateway {
            process,
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
            sip_port,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
            responses: Mutex::new(Vec::new()),
            _dir: dir,
        };
        if !wait_until(Duration::from_secs(20), || {
            gateway.log().contains("sipcast ready")
        }) {
            gateway.process.fail("the gateway did not become ready");
        }
        gateway
    }

    pub fn sip_port(&self) -> u16 {
        self.sip_port
    }

    /// The REST API's port.
    pub fn http_port(&self) -> u16 {
        self.http.port()
    }

    /// `http://127.0.0.1:PORT` of the REST API and console.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn process(&mut self) -> &mut PeerProcess {
        &mut self.process
    }

    /// Panics with the gateway's log tail.
    pub fn fail(&self, msg: &str) -> ! {
        self.process.fail(msg)
    }

    /// Every API response body received so far.
    pub fn responses(&self) -> Vec<String> {
        self.responses.lock().unwrap().clone()
    }

    fn record(&self, response: reqwest::blocking::Response) -> Reply {
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        self.responses.lock().unwrap().push(text.clone());
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, json, text }
    }

    pub fn post(&self, path: &str, body: &Value) -> Reply {
        let url = format!("http://{}{path}", self.http);
        match self.client.post(&url).json(body).send() {
            Ok(response) => self.record(response),
            Err(e) => self.fail(&format!("POST {path}: {e}")),
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        let url = format!("http://{}{path}", self.http);
        match self.client.get(&url).send() {
            Ok(response) => self.record(response),
            Err(e) => self.fail(&format!("GET {path}: {e}")),
        }
    }

    /// The call object for `call_id`, if find answers with one.
    pub fn find(&self, call_id: &str) -> Option<Value> {
        let reply = self.post(
            "/rest-api/call/find",
            &serde_json::json!({ "callId": call_id }),
        );
        (reply.status == 200).then(|| reply.json[0].clone())
    }

    /// The call's target `id` (1 is its rtmpUrl; pushes follow) from `mediaStats.targets`.
    pub fn target(&self, call_id: &str, id: u64) -> Option<Value> {
        let call = self.find(call_id)?;
        call["mediaStats"]["targets"]
            .as_array()?
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
    }

    /// Waits until `check` holds for the call object, polling every 50 ms; returns the last object seen.
    pub fn wait_until_call(
        &self,
        call_id: &str,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        if !wait_until(timeout, || {
            last = self.find(call_id).unwrap_or(Value::Null);
            check(&last)
        }) {
            self.fail(&format!(
                "call {call_id}: {what} did not happen; last seen {last}"
            ));
        }
        last
    }

    /// Waits until the call's `field` equals `value`; returns the call object.
    pub fn wait_for(&self, call_id: &str, field: &str, value: &str, timeout: Duration) -> Value {
        let mut last = Value::Null;
        let reached = wait_until(timeout, || {
            last = self.find(call_id).unwrap_or(Value::Null);
            last[field] == value
        });
        if !reached {
            self.fail(&format!(
                "call {call_id}: {field} never became {value}; last seen {last}"
            ));
        }
        last
    }
}
