//! The REST API, WCS "SIP as RTMP" compatible. The only room that knows HTTP and JSON: it turns request
//! bodies into validated domain values by hand (dto.rs), hands them to the call registry and the driver,
//! and maps every domain error to a status code in one place (error.rs).

mod dto;
mod error;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use tokio::sync::{mpsc, oneshot};

pub use error::ApiError;

use crate::call::Registry;
use crate::driver::Command;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub commands: mpsc::Sender<Command>,
    /// Defaults for fields the client leaves out.
    pub defaults: Arc<dto::Defaults>,
}

impl AppState {
    pub fn new(
        registry: Arc<Registry>,
        commands: mpsc::Sender<Command>,
        default_sip_user: String,
    ) -> Self {
        Self {
            registry,
            commands,
            defaults: Arc::new(dto::Defaults {
                sip_user: default_sip_user,
            }),
        }
    }
}

/// The router; `max_body_bytes` bounds every request body.
pub fn app(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/rest-api/call/startup", post(startup))
        .route("/rest-api/call/terminate", post(terminate))
        .route("/rest-api/call/find", post(find))
        .route("/rest-api/call/find_all", post(find_all).get(find_all))
        .route("/rest-api/push/startup", post(push_startup))
        .route("/rest-api/push/terminate", post(push_terminate))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

fn empty_ok() -> Response {
    (StatusCode::OK, Json(serde_json::json!({}))).into_response()
}

async fn startup(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let object = dto::parse_object(&body)?;
    let request = dto::start_request(&object, &state.defaults)?;
    let call_id = request.call_id.clone();
    let leg = state.registry.admit(request, Instant::now())?;
    if state.commands.try_send(Command::Start(leg)).is_err() {
        // Nothing half-created: the call was never started, so it is not kept either.
        state.registry.withdraw(leg);
        return Err(ApiError::overloaded());
    }
    tracing::info!(call_id, leg, "call/startup accepted");
    Ok(empty_ok())
}

async fn terminate(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let object = dto::parse_object(&body)?;
    let call_id = dto::required_string(&object, "callId")?;
    let leg = state
        .registry
        .live_leg(&call_id)
        .ok_or_else(|| ApiError::not_found("no live call with this callId"))?;
    state
        .commands
        .try_send(Command::Terminate(leg))
        .map_err(|_| ApiError::overloaded())?;
    tracing::info!(call_id, leg, "call/terminate accepted");
    Ok(empty_ok())
}

async fn find(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let object = dto::parse_object(&body)?;
    let filter = dto::call_filter(&object)?;
    let found = state.registry.find(&filter);
    if found.is_empty() {
        return Err(ApiError::not_found("no call matches"));
    }
    Ok(Json(found.iter().map(dto::call_json).collect::<Vec<_>>()).into_response())
}

async fn find_all(State(state): State<AppState>) -> Result<Response, ApiError> {
    let found = state.registry.find(&Default::default());
    if found.is_empty() {
        // WCS answers find_all with 404 when there are no calls; its clients expect that.
        return Err(ApiError::not_found("no calls"));
    }
    Ok(Json(found.iter().map(dto::call_json).collect::<Vec<_>>()).into_response())
}

/// Sends a command that answers through a oneshot, mapping a gone driver to 503.
async fn ask<T>(
    state: &AppState,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, ApiError> {
    let (reply, answer) = oneshot::channel();
    state
        .commands
        .try_send(make(reply))
        .map_err(|_| ApiError::overloaded())?;
    answer.await.map_err(|_| ApiError::overloaded())
}

async fn push_startup(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let object = dto::parse_object(&body)?;
    let (call_id, target) = dto::push_request(&object)?;
    let id = ask(&state, |reply| Command::PushStart {
        call_id: call_id.clone(),
        target,
        reply,
    })
    .await??;
    Ok(
        Json(serde_json::json!({ "mediaSessionId": dto::media_session_id(&call_id, id) }))
            .into_response(),
    )
}

async fn push_terminate(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let object = dto::parse_object(&body)?;
    let (call_id, target) =
        dto::parse_media_session_id(&dto::required_string(&object, "mediaSessionId")?)?;
    ask(&state, |reply| Command::PushStop {
        call_id,
        target,
        reply,
    })
    .await??;
    Ok(empty_ok())
}

#[cfg(test)]
mod tests;
