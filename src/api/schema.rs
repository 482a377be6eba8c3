//! The shapes of bodies and answers, for the OpenAPI document only: requests are parsed by hand in
//! dto.rs (so every error names its field), answers are built there too. Tests in tests.rs check that
//! these descriptions and the hand-written parsers list the same fields.
#![allow(dead_code)]

use serde::Deserialize;
use utoipa::ToSchema;

/// A boolean: a JSON boolean or the string "true"/"false" (WCS clients send both).
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Flag {
    Bool(bool),
    /// "true" or "false", any case.
    Text(String),
}

/// A port: a number 1-65535 or the same as a string.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PortValue {
    /// 1-65535.
    Number(u16),
    /// Digits.
    Text(String),
}

/// SIP fields that the legacy shape nests in `connection`; given here they are lifted to the top level.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    pub sip_login: Option<String>,
    pub sip_authentication_name: Option<String>,
    /// Write-only: never shown in any answer, log, webhook or event.
    #[schema(format = Password)]
    pub sip_password: Option<String>,
    pub sip_domain: Option<String>,
    pub sip_outbound_proxy: Option<String>,
    pub sip_port: Option<PortValue>,
    pub sip_register_required: Option<Flag>,
    pub app_key: Option<String>,
}

/// call/startup (and /RESTCall/call). Unknown fields are ignored. The SIP fields may also come nested
/// in `connection` (the legacy shape).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartupBody {
    /// Unique among live calls; at most 256 characters.
    pub call_id: String,
    /// A SIP user name at sipDomain, or a full sip:/sips: URI.
    pub callee: String,
    /// rtmp://host[:port]/app or rtmps://...
    #[schema(pattern = "^(?i)rtmps?://")]
    pub rtmp_url: String,
    /// The stream name (a CDN's secret key): shown redacted, never in full.
    pub rtmp_stream: String,
    /// Default true.
    pub has_audio: Option<Flag>,
    /// Default false.
    pub has_video: Option<Flag>,
    /// Default: the configured sip.default_user.
    pub sip_login: Option<String>,
    /// Digest user name; default sipLogin.
    pub sip_authentication_name: Option<String>,
    #[schema(format = Password)]
    pub sip_password: Option<String>,
    /// host[:port]; required when callee is a user name.
    pub sip_domain: Option<String>,
    /// host[:port] the INVITE is sent to instead of the callee's host.
    pub sip_outbound_proxy: Option<String>,
    /// Default 5060.
    pub sip_port: Option<PortValue>,
    /// true answers 501 (REGISTER not supported yet).
    pub sip_register_required: Option<Flag>,
    /// Selects the status webhook (webhooks.apps in the config).
    pub app_key: Option<String>,
    pub to_stream: Option<String>,
    /// Also record the call to an FLV file in `recording.dir`, whatever happens to its RTMP targets.
    pub record: Option<Flag>,
    /// The legacy shape: SIP fields nested here.
    pub connection: Option<Connection>,
}

/// A body naming one call.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallIdBody {
    pub call_id: String,
}

/// call/find: every given field must match. Unknown fields are ignored.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FindBody {
    pub call_id: Option<String>,
    pub status: Option<CallStatusName>,
    pub sip_status: Option<u16>,
    pub rtmp_stream_status: Option<RtmpStatusName>,
    pub caller: Option<String>,
    pub callee: Option<String>,
    pub rtmp_url: Option<String>,
    pub app_key: Option<String>,
    pub to_stream: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallStatusName {
    Trying,
    Ring,
    SessionProgress,
    Established,
    Busy,
    Failed,
    Finish,
}

#[derive(Deserialize, ToSchema)]
pub enum RtmpStatusName {
    #[serde(rename = "RTMP_STREAM_WAIT")]
    Wait,
    #[serde(rename = "RTMP_STREAM_ACTIVE")]
    Active,
    #[serde(rename = "RTMP_CONNECTION_LOST")]
    ConnectionLost,
    #[serde(rename = "RTMP_CONNECTION_FAILED")]
    ConnectionFailed,
}

/// A call as find and find_all show it.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallJson {
    pub call_id: String,
    pub status: CallStatusName,
    pub sip_status: Option<u16>,
    pub rtmp_url: String,
    /// Redacted: the first 4 characters and "...".
    pub rtmp_stream: String,
    pub rtmp_stream_status: RtmpStatusName,
    pub caller: String,
    pub callee: String,
    pub has_audio: bool,
    pub has_video: bool,
    /// Always false: sipcast places calls.
    pub incoming: bool,
    pub app_key: Option<String>,
    pub to_stream: Option<String>,
    /// Why the call failed or ended.
    pub info: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub enum DtmfType {
    #[serde(rename = "RFC2833")]
    Rfc2833,
    #[serde(rename = "INFO")]
    Info,
}

/// call/send_dtmf and /RESTCall/sendDTMF.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DtmfBody {
    pub call_id: String,
    /// 1 to 32 of 0-9, *, #, A-D.
    #[schema(pattern = "^[0-9*#A-Da-d]{1,32}$")]
    pub dtmf: Option<String>,
    /// Deprecated misspelling of dtmf sent by older clients: accepted with a warning.
    #[schema(deprecated)]
    pub dumf: Option<String>,
    /// Default RFC2833.
    #[serde(rename = "type")]
    pub kind: Option<DtmfType>,
}

/// call/inject_stream.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InjectBody {
    pub call_id: String,
    pub stream_name: String,
}

/// push/startup: another RTMP target for a live call, named by callId or streamName (its toStream).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushStartBody {
    pub call_id: Option<String>,
    pub stream_name: Option<String>,
    /// rtmp://host/app/stream (the stream as last segment), or rtmp://host/app with rtmpStream.
    pub rtmp_url: String,
    pub rtmp_stream: Option<String>,
    /// Start muted. Default false.
    pub muted: Option<Flag>,
}

/// push/find: every given field must match.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushFindBody {
    pub media_session_id: Option<String>,
    pub call_id: Option<String>,
    pub stream_name: Option<String>,
    pub rtmp_url: Option<String>,
}

/// push/terminate, push/mute, push/unmute.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaSessionBody {
    pub media_session_id: String,
}

/// A push target.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushJson {
    pub media_session_id: String,
    pub call_id: String,
    pub rtmp_url: String,
    /// Redacted.
    pub rtmp_stream: String,
    pub rtmp_stream_status: RtmpStatusName,
    pub muted: bool,
}

/// A status event: the body of every webhook POST and the data of every `call` event on
/// /rest-api/events.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventJson {
    pub node_id: String,
    pub app_key: Option<String>,
    pub session_id: String,
    pub call_id: String,
    pub incoming: bool,
    pub status: CallStatusName,
    pub sip_status: Option<u16>,
    pub rtmp_url: String,
    /// Redacted.
    pub rtmp_stream: String,
    pub rtmp_stream_status: RtmpStatusName,
    pub caller: String,
    pub callee: String,
    pub has_audio: bool,
    pub has_video: bool,
    pub visible_name: String,
    /// Always "SIP".
    pub media_provider: String,
    pub to_stream: Option<String>,
    pub info: Option<String>,
    /// Increases by one per event, across all calls.
    pub sequence: u64,
}

/// Counters of the gateway.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsJson {
    pub live_calls: usize,
    pub events: u64,
    pub subscribers: usize,
    pub webhooks: WebhookStatsJson,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatsJson {
    pub delivered: u64,
    pub retries: u64,
    /// dropped = droppedQueueFull + droppedAfterRetries.
    pub dropped: u64,
    pub dropped_queue_full: u64,
    pub dropped_after_retries: u64,
}

/// Success without data: `{}`.
#[derive(Deserialize, ToSchema)]
pub struct Empty {}

/// Every error: a message and the field at fault (null when the body as a whole is at fault).
#[derive(Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub field: Option<String>,
}
