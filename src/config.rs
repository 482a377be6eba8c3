//! The gateway's configuration: one TOML file, every field optional with a documented default,
//! unknown fields refused (a typo must not silently fall back to a default).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub https: HttpsConfig,
    pub auth: AuthConfig,
    pub webhooks: WebhooksConfig,
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub calls: CallsConfig,
    pub rtmp: RtmpConfig,
    pub recording: RecordingConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where the REST API listens. Default `127.0.0.1:8081` (WCS's REST port).
    pub listen: SocketAddr,
    /// Largest accepted request body in bytes. Default 65536.
    pub max_body_bytes: usize,
}

/// The HTTPS listener (rustls). It serves the same API and console as HTTP, and runs only when both
/// `cert_file` and `key_file` are given (there is no built-in certificate).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpsConfig {
    /// Where HTTPS listens. Default `127.0.0.1:8444` (WCS's HTTPS REST port).
    pub listen: SocketAddr,
    /// PEM certificate chain, leaf first. Default: none (HTTPS off).
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate. Default: none (HTTPS off).
    pub key_file: Option<PathBuf>,
}

impl Default for HttpsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8444)),
            cert_file: None,
            key_file: None,
        }
    }
}

impl HttpsConfig {
    /// Certificate and key, when HTTPS is on.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        }
    }
}

/// Who may use the API and the console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// No authentication (keep the listeners on loopback).
    #[default]
    Development,
    /// Every request needs HTTP Basic credentials of a configured user.
    Production,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `development` (no authentication) or `production` (HTTP Basic on every request, over HTTP and
    /// HTTPS). Default `development`.
    pub profile: Profile,
    /// Realm in the `WWW-Authenticate` challenge. Default `sipcast`.
    pub realm: String,
    /// Users allowed in the production profile. Default: none; a production profile without users
    /// refuses to start (there is no default password).
    pub users: Vec<UserConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            profile: Profile::Development,
            realm: "sipcast".to_owned(),
            users: Vec::new(),
        }
    }
}

/// One API user. No defaults: both fields are required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Argon2 hash as a PHC string (`$argon2id$v=19$...`), as printed by `sipcast --hash-password`.
    pub password_hash: String,
}

/// Status webhooks (WCS "callApp"): every call and stream status change is POSTed as JSON to the URL
/// of the call's appKey.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// `nodeId` in every event. Default `sipcast`.
    pub node_id: String,
    /// appKey -> URL (http:// or https://). Calls whose appKey is not listed get no webhook. Default: none.
    pub apps: BTreeMap<String, String>,
    /// Events waiting per URL; when full, new events for it are dropped (counted and logged). Default 1024.
    pub queue_capacity: usize,
    /// Tries per event before it is dropped (counted and logged). Default 5.
    pub max_attempts: u32,
    /// Wait before the first retry, in milliseconds; doubles per retry. Default 500.
    pub backoff_initial_ms: u64,
    /// Longest wait between retries, in milliseconds. Default 8000.
    pub backoff_max_ms: u64,
    /// Timeout of one POST, in milliseconds. Default 5000.
    pub timeout_ms: u64,
    /// Events buffered per `GET /rest-api/events` client; a slower client skips events. Default 256.
    pub sse_buffer: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            node_id: "sipcast".to_owned(),
            apps: BTreeMap::new(),
            queue_capacity: 1024,
            max_attempts: 5,
            backoff_initial_ms: 500,
            backoff_max_ms: 8000,
            timeout_ms: 5000,
            sse_buffer: 256,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8081)),
            max_body_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Local UDP address of the SIP socket. Default `0.0.0.0:5060`.
    pub listen: SocketAddr,
    /// Host put in Via and Contact. Default: the listen address, or 127.0.0.1 when that is unspecified.
    pub advertised_host: Option<String>,
    /// User part of From and Contact when the request has no sipLogin. Default `sipcast`.
    pub default_user: String,
    /// RFC 3261 17.1.1.1 T1, the round-trip estimate, in milliseconds. Default 500.
    pub t1_ms: u64,
    /// RFC 3261 T2, the cap on non-INVITE request retransmit intervals, in milliseconds. Default 4000.
    pub t2_ms: u64,
    /// RFC 3261 T4, how long a message stays in the network, in milliseconds. Default 5000.
    pub t4_ms: u64,
    /// User-Agent header. Default `sipcast/<version>`.
    pub user_agent: String,
    /// Seconds an INVITE may ring (after a provisional response) before it is cancelled. Default 60.
    pub no_answer_timeout_secs: u64,
    /// Also accept SIP over TCP on the listen address (RFC 3261 18), for peers that send in-dialog requests
    /// to a `transport=tcp` Contact. Default true.
    pub tcp: bool,
    /// RFC 4028 session interval asked for in INVITEs, in seconds; the gateway refreshes at half of it.
    /// 0 turns session timers off (a peer asking for one is still served). Default 1800.
    pub session_expires_secs: u64,
    /// RFC 4028 Min-SE: shortest session interval accepted, in seconds (at least 90). Default 90.
    pub min_se_secs: u64,
    /// REGISTER expiry asked for (sipRegisterRequired), in seconds; refreshed at half the granted time.
    /// Default 3600.
    pub register_expires_secs: u64,
    /// Status answered to INVITEs outside our calls (the gateway takes no incoming calls). Default 403.
    pub incoming_invite_status: u16,
    /// Answers per second to requests outside any call (and to malformed ones); more are dropped. Default 50.
    pub stray_responses_per_sec: u32,
    /// Burst allowance for the above. Default 200.
    pub stray_responses_burst: u32,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5060)),
            advertised_host: None,
            default_user: "sipcast".to_owned(),
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            user_agent: concat!("sipcast/", env!("CARGO_PKG_VERSION")).to_owned(),
            no_answer_timeout_secs: 60,
            tcp: true,
            session_expires_secs: 1800,
            min_se_secs: 90,
            register_expires_secs: 3600,
            incoming_invite_status: 403,
            stray_responses_per_sec: 50,
            stray_responses_burst: 200,
        }
    }
}

impl SipConfig {
    /// The host written into Via and Contact.
    pub fn advertised_host(&self) -> String {
        match &self.advertised_host {
            Some(host) => host.clone(),
            None if self.listen.ip().is_unspecified() => Ipv4Addr::LOCALHOST.to_string(),
            None => self.listen.ip().to_string(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Local address the RTP sockets bind to. Default `0.0.0.0`.
    pub rtp_bind: IpAddr,
    /// Address written into the SDP offer's c= line. Default: rtp_bind, or 127.0.0.1 when unspecified.
    pub advertised_ip: Option<IpAddr>,
    /// First port of the RTP range (even; RTP takes even ports, RTCP the next odd one). Default 20000.
    pub rtp_port_min: u16,
    /// Last port of the RTP range. Default 29999.
    pub rtp_port_max: u16,
    /// Directory holding the `*.pipeline` templates. Default `pipelines`.
    pub pipelines_dir: PathBuf,
    /// Template for G.711 audio calls. Default `audio-g711-aac.pipeline`.
    pub audio_g711_template: String,
    /// Template for calls with H.264 video (passed through). Default `av-g711-h264.pipeline`.
    pub h264_template: String,
    /// Template for calls with VP8 video (transcoded to H.264). Default `av-g711-vp8.pipeline`.
    pub vp8_template: String,
    /// For which calls the gateway sends generated media to the peer (silence; DTMF rides on it), from the
    /// port it receives on: `all` (default: every audio stream the offer declares sendrecv, i.e.
    /// hasAudio=true, as WCS does), `audio` (the same), `none`. Video generation is not built yet.
    pub generate_av_for_ua: GenerateAv,
    /// Generated packets sent together, once per that many packet times (1..=10). Default 5: 100 ms of
    /// 20 ms packets per send, one wake-up instead of five (wake-ups are most of a call's CPU,
    /// bench/RESULTS.md); the peer's jitter buffer absorbs the burst. 1 sends each packet at its time.
    pub generated_packets_per_send: u32,
    /// Template for each RTMP target. Default `output-rtmp.pipeline`.
    pub rtmp_output_template: String,
    /// Template for call recordings. Default `output-file.pipeline`.
    pub file_output_template: String,
    /// Jitter buffer latency in milliseconds, filled into `{jitter_latency_ms}`. Default 200.
    pub jitter_latency_ms: u32,
    /// AAC bitrate in bits per second, filled into `{aac_bitrate}`. Default 64000.
    pub aac_bitrate: u32,
    /// Video that has shown no keyframe this many milliseconds after RTCP PLI/FIR requests is asked for one
    /// by SIP INFO (RFC 5168 picture_fast_update), again every as often. Default 2000.
    pub keyframe_info_after_ms: u64,
    /// A call whose audio RTP stops for this many seconds is ended (BYE, status FAILED with the reason).
    /// 0 turns it off. Default 30.
    pub rtp_timeout_secs: u64,
    /// How long to wait for a pipeline to drain after EOS before it is torn down, in milliseconds. Default 3000.
    pub eos_timeout_ms: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            rtp_bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            advertised_ip: None,
            rtp_port_min: 20000,
            rtp_port_max: 29999,
            pipelines_dir: PathBuf::from("pipelines"),
            audio_g711_template: "audio-g711-aac.pipeline".to_owned(),
            h264_template: "av-g711-h264.pipeline".to_owned(),
            vp8_template: "av-g711-vp8.pipeline".to_owned(),
            generate_av_for_ua: GenerateAv::All,
            generated_packets_per_send: 5,
            rtmp_output_template: "output-rtmp.pipeline".to_owned(),
            file_output_template: "output-file.pipeline".to_owned(),
            jitter_latency_ms: 200,
            aac_bitrate: 64000,
            keyframe_info_after_ms: 2000,
            rtp_timeout_secs: 30,
            eos_timeout_ms: 3000,
        }
    }
}

impl MediaConfig {
    pub fn advertised_ip(&self) -> IpAddr {
        match self.advertised_ip {
            Some(ip) => ip,
            None if self.rtp_bind.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            None => self.rtp_bind,
        }
    }

    pub fn eos_timeout(&self) -> Duration {
        Duration::from_millis(self.eos_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallsConfig {
    /// Most calls alive at once; more get 503. Default 500.
    pub max_calls: usize,
    /// How long an ended call stays visible to call/find, in seconds. Default 30.
    pub keep_finished_secs: u64,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self {
            max_calls: 500,
            keep_finished_secs: 30,
        }
    }
}

/// config `media.generate_av_for_ua`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenerateAv {
    None,
    All,
    Audio,
    Video,
}

impl GenerateAv {
    pub fn audio(self) -> bool {
        matches!(self, Self::All | Self::Audio)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// First reconnect delay after a target fails, in milliseconds. Default 500.
    pub reconnect_initial_ms: u64,
    /// Longest reconnect delay, in milliseconds. Default 10000. Retries go on while the call lives.
    pub reconnect_max_ms: u64,
    /// Each delay is the previous one times this. Default 1.25 (a short outage is bridged quickly; the cap
    /// is reached after about 40 s of failures).
    pub reconnect_multiplier: f64,
    /// A live rtmp:// target's server is probed (an RTMP handshake on a second connection) this often; no
    /// answer within the same time counts as a stalled server and the target is reconnected. 0 turns the
    /// probe off. Default 10 seconds. (A stalled server keeps accepting bytes into socket buffers for
    /// minutes, so bytes sent cannot tell.)
    pub liveness_secs: u64,
    /// Accept any TLS certificate for rtmps:// targets. Only for tests with self-signed certificates.
    /// Default false.
    pub tls_accept_invalid_certs: bool,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            reconnect_initial_ms: 500,
            reconnect_max_ms: 10_000,
            reconnect_multiplier: 1.25,
            liveness_secs: 10,
            tls_accept_invalid_certs: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Directory for call recordings (startup field `record`), one FLV per call. Default `recordings`.
    pub dir: PathBuf,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("recordings"),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            message: message.to_owned(),
        };
        let m = &self.media;
        if m.rtp_port_min % 2 != 0 {
            return Err(invalid(
                "media.rtp_port_min",
                "must be even (RTP on even ports, RTCP on odd)",
            ));
        }
        if m.rtp_port_min == 0 || m.rtp_port_max <= m.rtp_port_min {
            return Err(invalid(
                "media.rtp_port_max",
                "must be greater than media.rtp_port_min (> 0)",
            ));
        }
        if !(1..=10).contains(&m.generated_packets_per_send) {
            return Err(invalid(
                "media.generated_packets_per_send",
                "must be 1..=10",
            ));
        }
        let s = &self.sip;
        if s.t1_ms == 0 || s.t2_ms < s.t1_ms || s.t4_ms == 0 {
            return Err(invalid(
                "sip.t1_ms",
                "timers must be positive and t2_ms >= t1_ms",
            ));
        }
        let r = &self.rtmp;
        if r.reconnect_initial_ms == 0
            || r.reconnect_max_ms < r.reconnect_initial_ms
            || !(1.0..=10.0).contains(&r.reconnect_multiplier)
        {
            return Err(invalid(
                "rtmp.reconnect_initial_ms",
                "need 0 < initial <= max and a multiplier in 1.0..=10.0",
            ));
        }
        if s.min_se_secs < 90 {
            return Err(invalid(
                "sip.min_se_secs",
                "must be at least 90 (RFC 4028 4)",
            ));
        }
        if s.session_expires_secs != 0 && s.session_expires_secs < s.min_se_secs {
            return Err(invalid(
                "sip.session_expires_secs",
                "must be 0 (off) or at least sip.min_se_secs",
            ));
        }
        if !(400..=699).contains(&s.incoming_invite_status) {
            return Err(invalid(
                "sip.incoming_invite_status",
                "must be a final error status 400-699",
            ));
        }
        if s.register_expires_secs < 10 {
            return Err(invalid("sip.register_expires_secs", "must be at least 10"));
        }
        if s.stray_responses_burst == 0 {
            return Err(invalid("sip.stray_responses_burst", "must be at least 1"));
        }
        if self.calls.max_calls == 0 {
            return Err(invalid("calls.max_calls", "must be at least 1"));
        }
        if self.http.max_body_bytes < 1024 {
            return Err(invalid("http.max_body_bytes", "must be at least 1024"));
        }
        let h = &self.https;
        if h.cert_file.is_some() != h.key_file.is_some() {
            return Err(invalid(
                "https.cert_file",
                "give both https.cert_file and https.key_file, or neither (HTTPS off)",
            ));
        }
        let a = &self.auth;
        if a.profile == Profile::Production && a.users.is_empty() {
            return Err(invalid(
                "auth.users",
                "the production profile needs at least one user ([[auth.users]] name and password_hash); \
                 there is no default password. Make a hash with `sipcast --hash-password`",
            ));
        }
        for user in &a.users {
            if user.name.is_empty() || user.name.contains(':') {
                return Err(invalid(
                    "auth.users.name",
                    "a user name must be non-empty and must not contain ':'",
                ));
            }
            if argon2::PasswordHash::new(&user.password_hash).is_err()
                || !user.password_hash.starts_with("$argon2")
            {
                return Err(invalid(
                    "auth.users.password_hash",
                    "must be an argon2 PHC string ($argon2id$...); make one with `sipcast --hash-password`",
                ));
            }
        }
        if a.realm.contains(['"', '\\']) || a.realm.chars().any(char::is_control) {
            return Err(invalid(
                "auth.realm",
                "must not contain quotes, backslashes or control characters",
            ));
        }
        let w = &self.webhooks;
        for (app, url) in &w.apps {
            let lower = url.to_ascii_lowercase();
            let scheme_ok = lower.starts_with("http://") || lower.starts_with("https://");
            if !scheme_ok || url.contains(char::is_whitespace) || reqwest::Url::parse(url).is_err()
            {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    field: "webhooks.apps",
                    message: format!(
                        "the URL of appKey {app:?} must be an http:// or https:// URL"
                    ),
                });
            }
        }
        if w.queue_capacity == 0 || w.max_attempts == 0 || w.sse_buffer == 0 {
            return Err(invalid(
                "webhooks.queue_capacity",
                "queue_capacity, max_attempts and sse_buffer must be at least 1",
            ));
        }
        if w.timeout_ms == 0 || w.backoff_max_ms < w.backoff_initial_ms {
            return Err(invalid(
                "webhooks.timeout_ms",
                "timeout_ms must be positive and backoff_max_ms >= backoff_initial_ms",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = Config::parse("", Path::new("t.toml")).unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(c.sip.t1_ms, 500);
        assert_eq!(c.media.rtp_port_min, 20000);
        assert_eq!(c.sip.advertised_host(), "127.0.0.1");
    }

    #[test]
    fn unknown_field_is_refused_with_its_name() {
        let err = Config::parse("[sip]\nlisten_port = 5060\n", Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("listen_port"), "{err}");
    }

    #[test]
    fn odd_port_range_is_refused() {
        let err =
            Config::parse("[media]\nrtp_port_min = 20001\n", Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("media.rtp_port_min"), "{err}");
    }

    #[test]
    fn generated_packets_per_send_is_bounded() {
        for bad in [0, 11] {
            let text = format!("[media]\ngenerated_packets_per_send = {bad}\n");
            let err = Config::parse(&text, Path::new("t.toml")).unwrap_err();
            assert!(
                err.to_string().contains("media.generated_packets_per_send"),
                "{err}"
            );
        }
        let ok = Config::parse(
            "[media]\ngenerated_packets_per_send = 1\n",
            Path::new("t.toml"),
        );
        assert_eq!(ok.unwrap().media.generated_packets_per_send, 1);
        assert_eq!(Config::default().media.generated_packets_per_send, 5);
    }

    #[test]
    fn production_without_users_is_refused_clearly() {
        let err =
            Config::parse("[auth]\nprofile = \"production\"\n", Path::new("t.toml")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("auth.users") && text.contains("no default password"),
            "{text}"
        );
    }

    #[test]
    fn password_hashes_must_be_argon2() {
        let err = Config::parse(
            "[auth]\nprofile = \"production\"\n[[auth.users]]\nname = \"admin\"\npassword_hash = \"admin\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("auth.users.password_hash"),
            "{err}"
        );
    }

    #[test]
    fn https_needs_both_files_and_webhook_urls_are_checked() {
        let err =
            Config::parse("[https]\ncert_file = \"c.pem\"\n", Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("https.cert_file"), "{err}");
        let err = Config::parse(
            "[webhooks.apps]\ncallApp = \"ftp://x\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("callApp"), "{err}");
        let ok = Config::parse(
            "[webhooks.apps]\ncallApp = \"http://127.0.0.1:9/hook\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(ok.webhooks.apps["callApp"], "http://127.0.0.1:9/hook");
    }

    #[test]
    fn shipped_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sipcast.toml");
        Config::load(&path).unwrap();
    }
}
