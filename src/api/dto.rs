//! JSON bodies, WCS field names, converted by hand so every error names its field and nothing a client
//! sends can be half-accepted. Booleans arrive as JSON booleans or as the strings "true"/"false".

use serde_json::{Map, Value};

use super::ApiError;
use crate::call::command::{Dtmf, DtmfKind, PushSnapshot, PushTarget};
use crate::call::{CallFilter, CallSnapshot, CallStatus, RtmpStatus, StartRequest};
use crate::media::MediaFigures;
use crate::secret::{Password, StreamKey};
use crate::sip::message::{SipUri, Transport};
use crate::sip::ua::is_sip_uri;

/// Defaults from the config for fields a client leaves out.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub sip_user: String,
}

/// Fields call/startup understands; anything else is ignored (and logged at debug).
pub const STARTUP_FIELDS: &[&str] = &[
    "callId",
    "callee",
    "rtmpUrl",
    "rtmpStream",
    "hasAudio",
    "hasVideo",
    "sipLogin",
    "sipAuthenticationName",
    "sipPassword",
    "sipDomain",
    "sipOutboundProxy",
    "sipPort",
    "sipRegisterRequired",
    "appKey",
    "toStream",
    "record",
];

pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_body("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_body(format!(
            "the body is not valid JSON: {e}"
        ))),
    }
}

/// Logs (at debug) the fields of `o` that `known` does not list; they are ignored.
pub fn note_unknown_fields(o: &Map<String, Value>, known: &[&str], endpoint: &str) {
    for key in o.keys() {
        if !known.contains(&key.as_str()) {
            tracing::debug!(endpoint, field = key.as_str(), "ignoring unknown field");
        }
    }
}

/// The legacy shape (older WCS clients, `/RESTCall/call`): the SIP fields nested in a `connection`
/// object. They are lifted to the top level; a field given in both places with different values is
/// refused, naming it.
pub fn flatten_connection(mut o: Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let connection = match o.remove("connection") {
        None | Some(Value::Null) => return Ok(o),
        Some(Value::Object(c)) => c,
        Some(_) => {
            return Err(ApiError::bad_field(
                "connection",
                "connection must be an object of SIP fields",
            ))
        }
    };
    for (key, value) in connection {
        let Some(field) = STARTUP_FIELDS.iter().copied().find(|f| *f == key) else {
            tracing::debug!(field = key.as_str(), "connection: ignoring unknown field");
            continue;
        };
        match o.get(field) {
            Some(top) if !top.is_null() && *top != value => {
                return Err(ApiError::bad_field(
                    field,
                    format!(
                        "{field} is given both at the top level and in connection, differently"
                    ),
                ));
            }
            _ => {
                o.insert(key, value);
            }
        }
    }
    Ok(o)
}

/// rtmp://host[:port]/... or rtmps://..., no whitespace.
fn valid_rtmp_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    let after_scheme = lower
        .strip_prefix("rtmp://")
        .or_else(|| lower.strip_prefix("rtmps://"));
    after_scheme.is_some_and(|rest| !rest.split('/').next().unwrap_or_default().is_empty())
        && !url.contains(char::is_whitespace)
}

/// Fields call/send_dtmf and /RESTCall/sendDTMF understand.
pub const DTMF_FIELDS: &[&str] = &["callId", "dtmf", "dumf", "type"];

/// A send_dtmf body: `{callId, dtmf, type}`; `dumf` (a misspelling older clients send) is accepted
/// with a warning. `type` is RFC2833 (default) or INFO.
pub fn dtmf_request(o: &Map<String, Value>) -> Result<(String, Dtmf), ApiError> {
    note_unknown_fields(o, DTMF_FIELDS, "send_dtmf");
    let call_id = required_string(o, "callId")?;
    let digits = match optional_string(o, "dtmf")? {
        Some(d) => d,
        None => match optional_string(o, "dumf") {
            Ok(Some(d)) => {
                tracing::warn!(
                    call_id,
                    "send_dtmf: the field \"dumf\" is a misspelling of \"dtmf\"; accepted"
                );
                d
            }
            Ok(None) => return Err(ApiError::bad_field("dtmf", "dtmf is required")),
            Err(_) => return Err(ApiError::bad_field("dtmf", "dtmf must be a string")),
        },
    };
    let kind = match optional_string(o, "type")? {
        None => DtmfKind::Rfc2833,
        Some(t) => DtmfKind::from_wcs_name(&t)
            .ok_or_else(|| ApiError::bad_field("type", "type must be RFC2833 or INFO"))?,
    };
    let dtmf = Dtmf::new(&digits, kind)
        .ok_or_else(|| ApiError::bad_field("dtmf", "dtmf must be 1 to 32 of 0-9, *, #, A-D"))?;
    Ok((call_id, dtmf))
}

/// An inject_stream body: `{callId, streamName}`.
pub fn inject_request(o: &Map<String, Value>) -> Result<(String, String), ApiError> {
    note_unknown_fields(o, &["callId", "streamName"], "inject_stream");
    Ok((
        required_string(o, "callId")?,
        required_string(o, "streamName")?,
    ))
}

/// Which live call a push request means: `callId`, or `streamName` (the call's toStream or callId).
pub fn push_call_name(o: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    match optional_string(o, "callId")? {
        Some(id) => Ok(Some(id)),
        None => optional_string(o, "streamName"),
    }
}

/// Fields push/startup understands.
pub const PUSH_FIELDS: &[&str] = &["callId", "streamName", "rtmpUrl", "rtmpStream", "muted"];

/// A push/startup body's target: `rtmpUrl` with the stream name as its last path segment
/// (`rtmp://host/app/key`, as WCS takes it), or `rtmpUrl` plus `rtmpStream`.
pub fn push_target(o: &Map<String, Value>) -> Result<PushTarget, ApiError> {
    note_unknown_fields(o, PUSH_FIELDS, "push/startup");
    let url = required_string(o, "rtmpUrl")?;
    if !valid_rtmp_url(&url) {
        return Err(ApiError::bad_field(
            "rtmpUrl",
            "rtmpUrl must be rtmp://host[:port]/app/stream or rtmps://...",
        ));
    }
    let (rtmp_url, stream) = match optional_string(o, "rtmpStream")? {
        Some(stream) => (url, stream),
        None => {
            // rtmp://host/app/stream: at least host, app and stream.
            let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or_default();
            let segments = after_scheme.split('/').filter(|s| !s.is_empty()).count();
            match url.rsplit_once('/') {
                Some((base, stream)) if segments >= 3 && !stream.is_empty() => {
                    (base.to_owned(), stream.to_owned())
                }
                _ => {
                    return Err(ApiError::bad_field(
                        "rtmpStream",
                        "rtmpStream is required when rtmpUrl does not end in /app/stream",
                    ))
                }
            }
        }
    };
    if stream.contains(char::is_whitespace) {
        return Err(ApiError::bad_field(
            "rtmpStream",
            "rtmpStream must not contain whitespace",
        ));
    }
    Ok(PushTarget {
        rtmp_url,
        stream: StreamKey::new(stream),
        muted: optional_bool(o, "muted")?.unwrap_or(false),
    })
}

/// A `mediaSessionId` (push/terminate, mute, unmute).
pub fn media_session_id(o: &Map<String, Value>, endpoint: &str) -> Result<String, ApiError> {
    note_unknown_fields(o, &["mediaSessionId"], endpoint);
    required_string(o, "mediaSessionId")
}

/// A push target as WCS shows it; the stream key redacted.
pub fn push_json(p: &PushSnapshot) -> Value {
    serde_json::json!({
        "mediaSessionId": p.media_session_id,
        "callId": p.call_id,
        "rtmpUrl": p.rtmp_url,
        "rtmpStream": p.rtmp_stream_redacted,
        "rtmpStreamStatus": p.rtmp_status.wcs_name(),
        "muted": p.muted,
    })
}

pub fn optional_string(
    o: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, ApiError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => {
            if s.chars().any(char::is_control) {
                return Err(ApiError::bad_field(
                    field,
                    format!("{field} must not contain control characters"),
                ));
            }
            Ok(Some(s.trim().to_owned()))
        }
        Some(_) => Err(ApiError::bad_field(
            field,
            format!("{field} must be a string"),
        )),
    }
}

pub fn required_string(o: &Map<String, Value>, field: &'static str) -> Result<String, ApiError> {
    optional_string(o, field)?
        .ok_or_else(|| ApiError::bad_field(field, format!("{field} is required")))
}

fn optional_bool(o: &Map<String, Value>, field: &'static str) -> Result<Option<bool>, ApiError> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::bad_field(
            field,
            format!("{field} must be true or false"),
        )),
    }
}

fn optional_port(o: &Map<String, Value>, field: &'static str) -> Result<Option<u16>, ApiError> {
    let bad = || ApiError::bad_field(field, format!("{field} must be a port number 1-65535"));
    let n = match o.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(bad)?,
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s.trim().parse::<u64>().map_err(|_| bad())?,
        Some(_) => return Err(bad()),
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .map(Some)
        .ok_or_else(bad)
}

/// A host, optionally with `:port` and `;transport=udp|tcp`, as given for sipDomain or sipOutboundProxy.
fn split_host_port(
    value: &str,
    field: &'static str,
) -> Result<(String, Option<u16>, Option<Transport>), ApiError> {
    let bad = || {
        ApiError::bad_field(
            field,
            format!("{field} must be a host name or address, optionally with :port and ;transport=udp|tcp"),
        )
    };
    let value = value.strip_prefix("sip:").unwrap_or(value);
    let (value, transport) = match value.split_once(';') {
        None => (value, None),
        Some((v, param)) => {
            let t = param
                .strip_prefix("transport=")
                .map(str::to_ascii_lowercase)
                .ok_or_else(bad)?;
            match t.as_str() {
                "udp" => (v, Some(Transport::Udp)),
                "tcp" => (v, Some(Transport::Tcp)),
                _ => return Err(bad()),
            }
        }
    };
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        (format!("[{h}]"), after.strip_prefix(':'))
    } else {
        match value.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_owned(), Some(p)),
            _ => (value.to_owned(), None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':'));
    if !valid_host {
        return Err(bad());
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?),
    };
    Ok((host, port, transport))
}

fn valid_user(user: &str) -> bool {
    // RFC 3261 25.1 user: unreserved / escaped / user-unreserved.
    !user.is_empty()
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/%#".contains(c))
}

/// Validates a call/startup body into a [`StartRequest`].
pub fn start_request(
    o: &Map<String, Value>,
    defaults: &Defaults,
) -> Result<StartRequest, ApiError> {
    note_unknown_fields(o, STARTUP_FIELDS, "call/startup");
    let call_id = required_string(o, "callId")?;
    if call_id.len() > 256 {
        return Err(ApiError::bad_field(
            "callId",
            "callId must be at most 256 characters",
        ));
    }
    let callee = required_string(o, "callee")?;
    let rtmp_url = required_string(o, "rtmpUrl")?;
    if !valid_rtmp_url(&rtmp_url) {
        return Err(ApiError::bad_field(
            "rtmpUrl",
            "rtmpUrl must be rtmp://host[:port]/app or rtmps://...",
        ));
    }
    let rtmp_stream = required_string(o, "rtmpStream")?;
    if rtmp_stream.contains(char::is_whitespace) {
        return Err(ApiError::bad_field(
            "rtmpStream",
            "rtmpStream must not contain whitespace",
        ));
    }
    let has_audio = optional_bool(o, "hasAudio")?.unwrap_or(true);
    let has_video = optional_bool(o, "hasVideo")?.unwrap_or(false);
    let register = optional_bool(o, "sipRegisterRequired")?.unwrap_or(false);
    let sip_login = optional_string(o, "sipLogin")?.unwrap_or_else(|| defaults.sip_user.clone());
    if !valid_user(&sip_login) {
        return Err(ApiError::bad_field(
            "sipLogin",
            "sipLogin must be a SIP user name",
        ));
    }
    let auth_name =
        optional_string(o, "sipAuthenticationName")?.unwrap_or_else(|| sip_login.clone());
    let password = o
        .get("sipPassword")
        .map(|v| match v {
            Value::String(s) => Ok(Password::new(s.clone())),
            Value::Null => Ok(Password::default()),
            _ => Err(ApiError::bad_field(
                "sipPassword",
                "sipPassword must be a string",
            )),
        })
        .transpose()?
        .filter(|p| !p.is_empty());
    let sip_port = optional_port(o, "sipPort")?;
    let domain = optional_string(o, "sipDomain")?
        .map(|d| split_host_port(&d, "sipDomain"))
        .transpose()?;
    let proxy = optional_string(o, "sipOutboundProxy")?
        .map(|p| split_host_port(&p, "sipOutboundProxy"))
        .transpose()?;

    // The callee is a user at sipDomain, or a full SIP URI.
    let target_uri = if callee.to_ascii_lowercase().starts_with("sip:")
        || callee.to_ascii_lowercase().starts_with("sips:")
    {
        callee.clone()
    } else if callee.contains('@') {
        format!("sip:{callee}")
    } else {
        let (host, port, _) = domain.as_ref().ok_or_else(|| {
            ApiError::bad_field(
                "sipDomain",
                "sipDomain is required when callee is a user name",
            )
        })?;
        if !valid_user(&callee) {
            return Err(ApiError::bad_field(
                "callee",
                "callee must be a SIP user name or URI",
            ));
        }
        match port.or(sip_port) {
            Some(p) => format!("sip:{callee}@{host}:{p}"),
            None => format!("sip:{callee}@{host}"),
        }
    };
    if !is_sip_uri(&target_uri) {
        return Err(ApiError::bad_field(
            "callee",
            "callee and sipDomain do not form a valid SIP URI",
        ));
    }
    let target_host_port = crate::sip::ua::uri_host_port(&target_uri)
        .ok_or_else(|| ApiError::bad_field("callee", "callee has no host"))?;
    let from_host = domain
        .as_ref()
        .map(|(h, _, _)| h.clone())
        .unwrap_or_else(|| target_host_port.0.clone());
    let from_uri = format!("sip:{sip_login}@{from_host}");
    if !is_sip_uri(&from_uri) {
        return Err(ApiError::bad_field(
            "sipLogin",
            "sipLogin and sipDomain do not form a valid SIP URI",
        ));
    }
    let target_transport = SipUri::parse(&target_uri).ok().and_then(|u| u.transport());
    let (next_hop_host, next_hop_port, via_outbound_proxy, transport) = match proxy {
        Some((host, port, t)) => (
            host,
            port.or(sip_port).unwrap_or(5060),
            true,
            t.or(target_transport),
        ),
        None => (
            target_host_port.0.clone(),
            target_host_port.1.or(sip_port).unwrap_or(5060),
            false,
            target_transport,
        ),
    };
    // RFC 3261 10.2: REGISTER goes to the domain of the address of record (sipDomain, with its port or
    // sipPort), through the outbound proxy if there is one.
    let registrar_uri = register.then(|| {
        let (host, port) = match &domain {
            Some((h, p, _)) => (h.clone(), p.or(sip_port)),
            None => (target_host_port.0.clone(), target_host_port.1.or(sip_port)),
        };
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        match port {
            Some(p) => format!("sip:{host}:{p}"),
            None => format!("sip:{host}"),
        }
    });
    Ok(StartRequest {
        call_id,
        callee,
        target_uri,
        from_uri,
        sip_login,
        auth_name,
        password,
        next_hop_host: next_hop_host.trim_matches(['[', ']']).to_owned(),
        next_hop_port,
        via_outbound_proxy,
        transport: transport.unwrap_or(Transport::Udp),
        registrar_uri,
        rtmp_url,
        rtmp_stream: StreamKey::new(rtmp_stream),
        has_audio,
        has_video,
        app_key: optional_string(o, "appKey")?,
        to_stream: optional_string(o, "toStream")?,
        record: optional_bool(o, "record")?.unwrap_or(false),
    })
}

/// Fields call/find filters on.
pub const FILTER_FIELDS: &[&str] = &[
    "callId",
    "status",
    "sipStatus",
    "rtmpStreamStatus",
    "caller",
    "callee",
    "rtmpUrl",
    "appKey",
    "toStream",
];

/// A call/find body: any of [`FILTER_FIELDS`]; each given one must match.
pub fn call_filter(o: &Map<String, Value>) -> Result<CallFilter, ApiError> {
    note_unknown_fields(o, FILTER_FIELDS, "call/find");
    let status = optional_string(o, "status")?
        .map(|s| {
            CallStatus::from_wcs_name(&s)
                .ok_or_else(|| ApiError::bad_field("status", "unknown status"))
        })
        .transpose()?;
    let rtmp_status = optional_string(o, "rtmpStreamStatus")?
        .map(|s| {
            RtmpStatus::from_wcs_name(&s)
                .ok_or_else(|| ApiError::bad_field("rtmpStreamStatus", "unknown rtmpStreamStatus"))
        })
        .transpose()?;
    let sip_status = match o.get("sipStatus") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| (100..700).contains(n))
                .ok_or_else(|| ApiError::bad_field("sipStatus", "sipStatus must be 100-699"))?,
        ),
        Some(Value::String(s)) => Some(
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|n| (100..700).contains(n))
                .ok_or_else(|| ApiError::bad_field("sipStatus", "sipStatus must be 100-699"))?,
        ),
        Some(_) => {
            return Err(ApiError::bad_field(
                "sipStatus",
                "sipStatus must be a number",
            ))
        }
    };
    Ok(CallFilter {
        call_id: optional_string(o, "callId")?,
        status,
        sip_status,
        rtmp_status,
        caller: optional_string(o, "caller")?,
        callee: optional_string(o, "callee")?,
        rtmp_url: optional_string(o, "rtmpUrl")?,
        app_key: optional_string(o, "appKey")?,
        to_stream: optional_string(o, "toStream")?,
    })
}

/// A call as WCS shows it. The stream key is redacted.
pub fn call_json(c: &CallSnapshot) -> Value {
    serde_json::json!({
        "callId": c.call_id,
        "status": c.status.wcs_name(),
        "sipStatus": c.sip_status,
        "rtmpUrl": c.rtmp_url,
        "rtmpStream": c.rtmp_stream_redacted,
        "rtmpStreamStatus": c.rtmp_status.wcs_name(),
        "caller": c.caller,
        "callee": c.callee,
        "hasAudio": c.has_audio,
        "hasVideo": c.has_video,
        "incoming": false,
        "appKey": c.app_key,
        "toStream": c.to_stream,
        "info": c.reason,
        "mediaStats": c.media.as_ref().map(media_json),
    })
}

/// The media figures of a call (sipcast's addition to WCS's call object). Targets show redacted.
fn media_json(m: &MediaFigures) -> Value {
    let targets: Vec<Value> = m
        .targets
        .iter()
        .map(|t| {
            serde_json::json!({
                "id": t.target,
                "target": t.description,
                "kind": if t.is_rtmp { "rtmp" } else { "file" },
                "status": t.status.wcs_name(),
                "info": t.reason,
                "bytesOut": t.bytes_out,
                "reconnects": t.reconnects,
                "lastReconnectUnixMs": t.last_reconnect_unix_ms,
            })
        })
        .collect();
    serde_json::json!({
        "rtpPacketsIn": m.rtp_packets_in,
        "rtpBytesIn": m.rtp_bytes_in,
        "videoPacketsIn": m.video_packets_in,
        "videoBytesIn": m.video_bytes_in,
        "rtpLost": m.rtp_lost,
        "jitterMs": m.jitter_us as f64 / 1000.0,
        "answerToFirstRtmpByteMs": m.answer_to_first_rtmp_ms,
        "targets": targets,
    })
}
