//! Every error the API returns, and the one place where domain errors and their fault become HTTP statuses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::call::command::CommandError;
use crate::call::{AdmitError, Fault};

/// An error response: `{"error": "...", "field": "..."}` (field null unless one field is at fault).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<&'static str>,
    /// The `WWW-Authenticate` challenge of a 401.
    pub challenge: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>, field: Option<&'static str>) -> Self {
        Self {
            status,
            message: message.into(),
            field,
            challenge: None,
        }
    }

    /// 401 with a Basic challenge for `realm`.
    pub fn unauthorized(realm: &str) -> Self {
        Self {
            challenge: Some(format!("Basic realm=\"{realm}\", charset=\"UTF-8\"")),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "authentication required (HTTP Basic)",
                None,
            )
        }
    }

    /// The body is larger than the configured limit: a client error like any other malformed body.
    pub fn too_large(limit: usize) -> Self {
        Self::bad_body(format!(
            "the body is larger than {limit} bytes (http.max_body_bytes)"
        ))
    }

    /// No route has this path.
    pub fn no_such_endpoint() -> Self {
        Self::new(StatusCode::NOT_FOUND, "no such endpoint", None)
    }

    /// The route exists, not with this method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed here",
            None,
        )
    }

    /// inject_stream: sipcast has no stream sources yet, so no streamName can name one.
    pub fn no_such_stream() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "no stream with this streamName can be injected (sipcast has no stream sources yet)",
            Some("streamName"),
        )
    }

    pub fn bad_field(field: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, Some(field))
    }

    pub fn bad_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, None)
    }

    pub fn not_found(message: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, message, None)
    }

    /// Not found, naming the field whose value matched nothing.
    pub fn not_found_field(field: &'static str, message: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, message, Some(field))
    }

    pub fn not_implemented(field: &'static str, message: &str) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, message, Some(field))
    }

    /// The driver's queue is full or gone.
    pub fn overloaded() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is overloaded; retry",
            None,
        )
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        let (status, field) = match e {
            CommandError::NotSupported(_) => (StatusCode::NOT_IMPLEMENTED, None),
            CommandError::NoSuchCall => (StatusCode::NOT_FOUND, Some("callId")),
            CommandError::NotEstablished => (StatusCode::CONFLICT, Some("callId")),
            CommandError::NoSuchTarget => (StatusCode::NOT_FOUND, Some("mediaSessionId")),
            CommandError::TargetExists => (StatusCode::CONFLICT, Some("rtmpUrl")),
            CommandError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, None),
        };
        Self::new(status, e.to_string(), field)
    }
}

/// Fault -> status for errors that are not about one field.
fn status_for(fault: Fault) -> StatusCode {
    match fault {
        Fault::Client => StatusCode::CONFLICT,
        Fault::Gateway => StatusCode::SERVICE_UNAVAILABLE,
        Fault::RemoteSip | Fault::RtmpDestination => StatusCode::BAD_GATEWAY,
    }
}

impl From<AdmitError> for ApiError {
    fn from(e: AdmitError) -> Self {
        let field = match e {
            AdmitError::DuplicateCallId(_) => Some("callId"),
            AdmitError::DuplicateStream => Some("rtmpStream"),
            AdmitError::AtCapacity(_) | AdmitError::Draining => None,
        };
        Self::new(status_for(e.fault()), e.to_string(), field)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "field": self.field });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}
