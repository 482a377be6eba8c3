//! Every error the API returns, and the one place where domain errors and their fault become HTTP statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::call::{AdmitError, Fault};
use crate::driver::PushError;

/// An error response: `{"error": "...", "field": "..."}` (field only when one field is at fault).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<&'static str>,
}

impl ApiError {
    pub fn bad_field(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field),
        }
    }

    pub fn bad_body(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: None,
        }
    }

    pub fn not_found(message: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.to_owned(),
            field: None,
        }
    }

    pub fn not_implemented(field: &'static str, message: &str) -> Self {
        Self {
            status: StatusCode::NOT_IMPLEMENTED,
            message: message.to_owned(),
            field: Some(field),
        }
    }

    /// The driver's queue is full or gone.
    pub fn overloaded() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the gateway is overloaded; retry".to_owned(),
            field: None,
        }
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
        Self {
            status: status_for(e.fault()),
            message: e.to_string(),
            field,
        }
    }
}

impl From<PushError> for ApiError {
    fn from(e: PushError) -> Self {
        let status = match e {
            PushError::NoCall | PushError::NoTarget => StatusCode::NOT_FOUND,
            PushError::NoMedia | PushError::Duplicate => status_for(Fault::Client),
            PushError::Media(_) => status_for(Fault::Gateway),
        };
        Self {
            status,
            message: e.to_string(),
            field: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if let Some(field) = self.field {
            body["field"] = serde_json::Value::from(field);
        }
        (self.status, Json(body)).into_response()
    }
}
