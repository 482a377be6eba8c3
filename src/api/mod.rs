//! The REST API, WCS "SIP as RTMP" compatible, the event stream, and the web console. The only room that
//! knows HTTP and JSON: it turns request bodies into validated domain values by hand (dto.rs), hands them
//! to the call registry and the driver, and maps every domain error to a status code in one place
//! (error.rs). Every route is registered together with its OpenAPI description (utoipa), so
//! `/rest-api/openapi.json` lists exactly what the router serves.

pub mod auth;
mod console;
mod dto;
mod error;
mod schema;
pub mod tls;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use futures_util::{Stream, StreamExt};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::call::command::{CommandError, PushFilter, Reply};
use crate::call::Registry;
use crate::config::Config;
use crate::driver::Command;
use crate::notify::Notifier;

/// Settings of the API, fixed at start-up.
pub struct Settings {
    /// User part of From when a request has no sipLogin.
    pub sip_user: String,
    /// Largest accepted request body; larger ones get 400.
    pub max_body_bytes: usize,
    /// The production profile's users; `None`: no authentication.
    pub users: Option<Arc<auth::Users>>,
    /// How long a request waits for the driver's answer before 503.
    pub reply_timeout: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            sip_user: config.sip.default_user.clone(),
            max_body_bytes: config.http.max_body_bytes,
            users: auth::Users::from_config(&config.auth),
            reply_timeout: Duration::from_secs(5),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub commands: mpsc::Sender<Command>,
    pub notifier: Notifier,
    pub settings: Arc<Settings>,
}

impl AppState {
    pub fn new(
        registry: Arc<Registry>,
        commands: mpsc::Sender<Command>,
        notifier: Notifier,
        settings: Settings,
    ) -> Self {
        Self {
            registry,
            commands,
            notifier,
            settings: Arc::new(settings),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sipcast",
        description = "SIP-to-RTMP gateway. The REST API speaks the paths, fields and statuses of \
                       Flashphoner WCS's SIP as RTMP feature; stream keys are shown redacted and SIP \
                       passwords never. In the production profile every request needs HTTP Basic \
                       credentials (401 otherwise).",
        license(name = "MPL-2.0")
    ),
    tags(
        (name = "call", description = "Calls: start, find, terminate, DTMF"),
        (name = "push", description = "More RTMP targets for a live call"),
        (name = "legacy", description = "Shapes of older WCS clients"),
        (name = "events", description = "Status events, counters, this document")
    ),
    components(schemas(schema::EventJson)),
    modifiers(&Production)
)]
struct ApiDoc;

/// Adds the Basic security scheme and the 401 every operation can answer in the production profile.
struct Production;

impl utoipa::Modify for Production {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basicAuth",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// Marks every operation: Basic auth (production profile) and its 401.
fn add_unauthorized(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, ResponseBuilder};
    let unauthorized = ResponseBuilder::new()
        .description("Production profile: missing or wrong credentials (with WWW-Authenticate)")
        .build();
    let requirement =
        utoipa::openapi::security::SecurityRequirement::new::<_, _, &str>("basicAuth", []);
    for item in openapi.paths.paths.values_mut() {
        // One handler on GET and POST: operation ids must still be unique.
        if let (Some(get), Some(post)) = (item.get.as_mut(), item.post.as_mut()) {
            for (op, method) in [(get, "get"), (post, "post")] {
                if let Some(id) = op.operation_id.as_mut() {
                    *id = format!("{id}_{method}");
                }
            }
        }
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            op.responses
                .responses
                .insert("401".into(), RefOr::T(unauthorized.clone()));
            op.security = Some(vec![
                requirement.clone(),
                utoipa::openapi::security::SecurityRequirement::default(),
            ]);
        }
    }
}

/// The document, as served on /rest-api/openapi.json.
#[derive(Clone)]
struct OpenApiJson(Arc<String>);

/// The routes and their descriptions.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(startup))
        .routes(routes!(terminate))
        .routes(routes!(find))
        .routes(routes!(find_all))
        .routes(routes!(send_dtmf))
        .routes(routes!(inject_stream))
        .routes(routes!(push_startup))
        .routes(routes!(push_find))
        .routes(routes!(push_find_all))
        .routes(routes!(push_terminate))
        .routes(routes!(push_mute))
        .routes(routes!(push_unmute))
        .routes(routes!(legacy_call))
        .routes(routes!(legacy_send_dtmf))
        .routes(routes!(events))
        .routes(routes!(stats))
        .routes(routes!(openapi_json))
}

/// The OpenAPI document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes().into_openapi();
    add_unauthorized(&mut doc);
    doc
}

/// The router: API, events, console; authentication in the production profile.
pub fn app(state: AppState) -> Router {
    let (api, _) = routes().split_for_parts();
    let doc = openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    api.merge(console::routes())
        .fallback(|| async { ApiError::no_such_endpoint() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(Extension(OpenApiJson(Arc::new(doc))))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_user,
        ))
        .with_state(state)
}

/// A request body that must be a JSON object (or empty), at most `max_body_bytes` long; anything
/// else is a 400 naming no field.
struct JsonObject(Map<String, Value>);

impl FromRequest<AppState> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.settings.max_body_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::too_large(limit));
        }
        let bytes = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|_| ApiError::too_large(limit))?;
        dto::parse_object(&bytes).map(Self)
    }
}

fn empty_ok() -> Response {
    (StatusCode::OK, Json(json!({}))).into_response()
}

fn calls_json(calls: &[crate::call::CallSnapshot]) -> Response {
    Json(calls.iter().map(dto::call_json).collect::<Vec<_>>()).into_response()
}

/// Sends a command that expects an answer and waits for it (bounded).
async fn ask<T>(state: &AppState, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ApiError> {
    let (reply, answer) = oneshot::channel();
    state
        .commands
        .try_send(make(reply))
        .map_err(|_| ApiError::overloaded())?;
    match tokio::time::timeout(state.settings.reply_timeout, answer).await {
        Ok(Ok(result)) => result.map_err(ApiError::from),
        _ => Err(CommandError::Unavailable.into()),
    }
}

async fn start_call(state: &AppState, object: Map<String, Value>) -> Result<Response, ApiError> {
    let object = dto::flatten_connection(object)?;
    let request = dto::start_request(
        &object,
        &dto::Defaults {
            sip_user: state.settings.sip_user.clone(),
        },
    )?;
    let call_id = request.call_id.clone();
    // Room in the driver's queue first: a call is admitted only when it can be handed on, so nothing
    // is half-created and no status event is announced for a call that never was.
    let permit = state
        .commands
        .try_reserve()
        .map_err(|_| ApiError::overloaded())?;
    let leg = state.registry.admit(request, Instant::now())?;
    permit.send(Command::Start(leg));
    tracing::info!(call_id, leg, "call/startup accepted");
    Ok(empty_ok())
}

/// Starts a call.
#[utoipa::path(
    post,
    path = "/rest-api/call/startup",
    tag = "call",
    request_body = schema::StartupBody,
    responses(
        (status = 200, description = "Accepted; the call is TRYING", body = schema::Empty),
        (status = 400, description = "Malformed body, missing field, wrong type, bad URL, too large", body = schema::ErrorBody),
        (status = 409, description = "A live call has this callId, or this rtmpUrl+rtmpStream", body = schema::ErrorBody),
        (status = 503, description = "At capacity, overloaded or shutting down", body = schema::ErrorBody)
    )
)]
async fn startup(
    State(state): State<AppState>,
    JsonObject(o): JsonObject,
) -> Result<Response, ApiError> {
    start_call(&state, o).await
}

/// Starts a call: the legacy shape (SIP fields nested in `connection`, as on call/startup).
#[utoipa::path(
    post,
    path = "/RESTCall/call",
    tag = "legacy",
    request_body = schema::StartupBody,
    responses(
        (status = 200, description = "Accepted", body = schema::Empty),
        (status = 400, description = "Bad input", body = schema::ErrorBody),
        (status = 409, description = "Duplicate callId or stream", body = schema::ErrorBody),
        (status = 503, description = "At capacity or shutting down", body = schema::ErrorBody)
    )
)]
async fn legacy_call(
    State(state): State<AppState>,
    JsonObject(o): JsonObject,
) -> Result<Response, ApiError> {
    start_call(&state, o).await
}

/// Hangs up a live call (CANCEL or BYE); its stream ends cleanly.
#[utoipa::path(
    post,
    path = "/rest-api/call/terminate",
    tag = "call",
    request_body = schema::CallIdBody,
    responses(
        (status = 200, description = "Hanging up", body = schema::Empty),
        (status = 400, description = "No callId", body = schema::ErrorBody),
        (status = 404, description = "No live call has this callId", body = schema::ErrorBody),
        (status = 503, description = "Overloaded", body = schema::ErrorBody)
    )
)]
async fn terminate(
    State(state): State<AppState>,
    JsonObject(o): JsonObject,
) -> Result<Response, ApiError> {
    dto::note_unknown_fields(&o, &["callId"], "call/terminate");
    let call_id = dto::required_string(&o, "callId")?;
    let leg = state
        .registry
        .live_leg(&call_id)
        .ok_or_else(|| ApiError::not_found_field("callId", "no live call with this callId"))?;
    state
        .commands
        .try_send(Command::Terminate(leg))
        .map_err(|_| ApiError::overloaded())?;
    tracing::info!(call_id, leg, "call/terminate accepted");
    Ok(empty_ok())
}

/// Calls matching every given field (live ones and those ended less than keep_finished_secs ago).
#[utoipa::path(
    post,
    path = "/rest-api/call/find",
    tag = "call",
    request_body = schema::FindBody,
    responses(
        (status = 200, description = "The matching calls", body = Vec<schema::CallJson>),
        (status = 400, description = "A filter value of the wrong type or unknown status", body = schema::ErrorBody),
        (status = 404, description = "No call matches", body = schema::ErrorBody)
    )
)]
async fn find(
    State(state): State<AppState>,
    JsonObject(o): JsonObject,
) -> Result<Response, ApiError> {
    let filter = dto::call_filter(&o)?;
    let found = state.registry.find(&filter);
    if found.is_empty() {
        return Err(ApiError::not_found("no call matches"));
    }
    Ok(calls_json(&found))
}

/// Every call.
#[utoipa::path(
    method(get, post),
    path = "/rest-api/call/find_all",
    tag = "call",
    responses(
        (status = 200, description = "Every call", body = Vec<schema::CallJson>),
        (status = 404, description = "No calls at all (as WCS answers)", body = schema::ErrorBody)
    )
)]
async fn find_all(State(state): State<AppState>) -> Result<Response, ApiError> {
    let found = state.registry.find(&Default::default());
    if found.is_empty() {
        // WCS answers find_all with 404 when there are no calls; its clients expect that.
        return Err(ApiError::not_found("no calls"));
    }
    Ok(calls_json(&found))
}

async fn dtmf(state: &AppState, o: Map<String, Value>) -> Result<Response, ApiError> {
    let (call_id, dtmf) = dto::dtmf_request(&o)?;
    let leg = state
        .registry
        .live_leg(&call_id)
        .ok_or_else(|| ApiError::not_found_field("callId", "no live call with this callId"))?;
    tracing::info!(call_id, leg, ?dtmf, "call/send_dtmf accepted");
    ask(state, |reply| Command::SendDtmf { leg, dtmf, reply }).await?;
    Ok(empty_ok())
}

/// Sends DTMF digits on an established call: RFC2833 (RFC 4733 events in the RTP stream, default)
/// or INFO (SIP INFO, application/dtmf-relay, one per digit).
#[utoipa::path(
    post,
    path = "/rest-api/call/send_dtmf",
    tag = "call",
    request_body = schema::DtmfBody,
    responses(
        (status = 200, description = "Sent", body = schema::Empty),
        (status = 400, description = "No callId, no or bad dtmf, unknown type", body = schema::ErrorBody),
        (status = 404, description = "No live call has this callId", body = schema::ErrorBody),
        (status = 409, description = "The call is not established", body = schema::ErrorBody),
        (status = 501, description = "RFC2833 on a call without generated audio (hasAudio=false or generate_av_for_ua = none)", body = schema::ErrorBody),
        (status = 503, description = "Overloaded", body = schema::ErrorBody)
    )
)]
async fn send_dtmf(
    State(state): State<AppState>,
    JsonObject(o): JsonObject,
) -> Result<Response, ApiError> {
    dtmf(&state, o).await
}

/// DTMF, the legacy way: `dtmf` (or its misspelling `dumf`, accepted with a warning) and `type`.
#[utoipa::path(
    post,
    path = "/RESTCall/sendDTMF",
    tag = "legacy",
    request_body = schema::DtmfBody,
    responses(
        (status = 200, description = "Sent", body = schema::Empty),
        (status = 400, description = "Bad input", body = schema::ErrorBody),
        (status = 404, description = "No live call has this callId", body = schema::ErrorBody),
        (status = 409, description = "The call is not established", body = schema::ErrorBody),
        (status = 501, description = "RFC2833 on a call without generated audio (hasAudio=false or generate_av_for_ua = none)", body = schema::ErrorBody),
        (status = 503, description = "Overloaded", body = schema::ErrorBody)
    )
)]
async fn legacy_send_dtmf(
    State(state): State<AppState>,
    JsonObject(o): JsonObject,
) -> Result<Response, ApiError> {
    dtmf(&state, o).await
}

/// Injects a stream into a call (WCS plays a stream to the SIP side). sipcast has no stream sources
/// yet, so every valid request for a live call answers 404 naming streamName.
#[utoipa::path(
    post,
    path = "/rest-api/call/inject_stream",
    tag = "call",
    request_body = schema::InjectBody,
    responses(
        (status = 400, description = "No callId or streamName", body = schema::ErrorBody),
        (status = 404, description = "No live call has this callId (field callId), or no stream has this streamName (field streamName: always, until stream sources exist)", body = schema::ErrorBody)
    )
)]
async fn inject_stream(
    State(state): State<AppState>,
    JsonObject(o): JsonObject,
) -> Result<Response, ApiError> {
    let (call_id, _stream_name) = dto::inject_request(&o)?;
    state
        .registry
        .live_leg(&call_id)
        .ok_or_else(|| ApiError::not_found_field("callId", "no live call with this callId"))?;
    Err(ApiError::no_such_stream())
}

fn live_leg_named(state: &AppState, name: &str) -> Result<crate::sip::ua::LegId, ApiError> {
    state.registry.live_leg_by_stream_name(name).ok_or_else(|| {
        ApiError::not_found_field("callId", "no live call with this callId or streamName")
    })
}

/// Adds another RTMP target to a live call, named by callId or streamName (its toStream).
/// The target gets a pipeline of its own, reconnected with backoff like the call's own target.
#[utoipa::path(
    post,
    path = "/rest-api/push/startup",
    tag = "push",
    request_body = schema::PushStartBody,
    responses(
        (status = 200, description = "Publishing; the answer carries the mediaSessionId", body = schema::PushJson),
        (status = 400, description = "No call named, bad rtmpUrl or rtmpStream", body = schema::ErrorBody),
        (status = 404, description = "No live call by that callId or streamName", body = schema::ErrorBody),
        (status = 409, description = "The call already publishes to this target", body = schema::ErrorBody),
        (status = 503, description = "Overloaded", body = schema::ErrorBody)
    )
)]
async fn push_startup(
    State(state): State<AppState>,
    JsonObject(o): JsonObject,
) -> Result<Response, ApiError> {
    let name = dto::push_call_name(&o)?
        .ok_or_else(|| ApiError::bad_field("callId", "callId or streamName is required"))?;
    let target = dto::push_target(&o)?;
    let leg = live_leg_named(&state, &name)?;
    let push = ask(&state, |reply| Command::PushStart { leg, target, reply }).await?;
    Ok(Json(dto::push_json(&push)).into_response())
}

async fn find_pushes(state: &AppState, filter: PushFilter) -> Result<Response, ApiError> {
    let found = ask(state, |reply| Command::PushFind { filter, reply }).await?;
    if found.is_empty() {
        return Err(ApiError::not_found("no push target matches"));
    }
    Ok(Json(found.iter().map(dto::push_json).collect::<Vec<_>>()).into_response())
}

/// Push targets matching every given field.
#[utoipa::path(
    post,
    path = "/rest-api/push/find",
    tag = "push",
    request_body = schema::PushFindBody,
    responses(
        (status = 200, description = "The matching targets", body = Vec<schema::PushJson>),
        (status = 400, description = "A filter value of the wrong type", body = schema::ErrorBody),
        (status = 404, description = "No target matches, or no live call by that callId or streamName", body = schema::ErrorBody),
        (status = 503, description = "Overloaded", body = schema::ErrorBody)
    )
)]
async fn push_find(
    State(state): State<AppState>,
    JsonObject(o): JsonObject,
) -> Result<Response, ApiError> {
    dto::note_unknown_fields(
        &o,
        &["mediaSessionId", "callId", "streamName", "rtmpUrl"],
        "push/find",
    );
    let leg = dto::push_call_name(&o)?
        .map(|name| live_leg_named(&state, &name))
        .transpose()?;
    let filter = PushFilter {
        media_session_id: dto::optional_string(&o, "mediaSessionId")?,
        leg,
        rtmp_url: dto::optional_string(&o, "rtmpUrl")?,
    };
    find_pushes(&state, filter).await
}

/// Every push target.
#[utoipa::path(
    method(get, post),
    path = "/rest-api/push/find_all",
    tag = "push",
    responses(
        (status = 200, description = "Every target", body = Vec<schema::PushJson>),
        (status = 404, description = "No targets", body = schema::ErrorBody),
        (status = 503, description = "Overloaded", body = schema::ErrorBody)
    )
)]
async fn push_find_all(State(state): State<AppState>) -> Result<Response, ApiError> {
    find_pushes(&state, PushFilter::default()).await
}

/// Removes a push target (its stream ends with EOS); the call and its other targets go on.
#[utoipa::path(
    post,
    path = "/rest-api/push/terminate",
    tag = "push",
    request_body = schema::MediaSessionBody,
    responses(
        (status = 200, description = "Removed", body = schema::Empty),
        (status = 400, description = "No mediaSessionId", body = schema::ErrorBody),
        (status = 404, description = "No target has this mediaSessionId", body = schema::ErrorBody),
        (status = 503, description = "Overloaded", body = schema::ErrorBody)
    )
)]
async fn push_terminate(
    State(state): State<AppState>,
    JsonObject(o): JsonObject,
) -> Result<Response, ApiError> {
    let media_session_id = dto::media_session_id(&o, "push/terminate")?;
    ask(&state, |reply| Command::PushStop {
        media_session_id,
        reply,
    })
    .await?;
    Ok(empty_ok())
}

async fn push_set_muted(
    state: &AppState,
    o: Map<String, Value>,
    muted: bool,
) -> Result<Response, ApiError> {
    let endpoint = if muted { "push/mute" } else { "push/unmute" };
    let media_session_id = dto::media_session_id(&o, endpoint)?;
    ask(state, |reply| Command::PushMute {
        media_session_id,
        muted,
        reply,
    })
    .await?;
    Ok(empty_ok())
}

/// Sends silence instead of the call's audio to one target.
#[utoipa::path(
    post,
    path = "/rest-api/push/mute",
    tag = "push",
    request_body = schema::MediaSessionBody,
    responses(
        (status = 200, description = "Muted", body = schema::Empty),
        (status = 400, description = "No mediaSessionId", body = schema::ErrorBody),
        (status = 404, description = "No target has this mediaSessionId", body = schema::ErrorBody),
        (status = 503, description = "Overloaded", body = schema::ErrorBody)
    )
)]
async fn push_mute(
    State(state): State<AppState>,
    JsonObject(o): JsonObject,
) -> Result<Response, ApiError> {
    push_set_muted(&state, o, true).await
}

/// Sends the call's audio to one target again.
#[utoipa::path(
    post,
    path = "/rest-api/push/unmute",
    tag = "push",
    request_body = schema::MediaSessionBody,
    responses(
        (status = 200, description = "Unmuted", body = schema::Empty),
        (status = 400, description = "No mediaSessionId", body = schema::ErrorBody),
        (status = 404, description = "No target has this mediaSessionId", body = schema::ErrorBody),
        (status = 503, description = "Overloaded", body = schema::ErrorBody)
    )
)]
async fn push_unmute(
    State(state): State<AppState>,
    JsonObject(o): JsonObject,
) -> Result<Response, ApiError> {
    push_set_muted(&state, o, false).await
}

/// Server-Sent Events: every call and stream status change as a `call` event whose data is the
/// webhook body (EventJson); `lagged` (data: how many were skipped) when this client fell behind.
#[utoipa::path(
    get,
    path = "/rest-api/events",
    tag = "events",
    responses(
        (status = 200, description = "An endless text/event-stream of `call` events (data: EventJson)", content_type = "text/event-stream", body = String)
    )
)]
async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let closed = state.notifier.clone();
    let stream = BroadcastStream::new(state.notifier.subscribe())
        .map(|item| {
            Ok(match item {
                Ok(event) => SseEvent::default()
                    .event("call")
                    .id(event.sequence.to_string())
                    .data(event.json.as_str()),
                Err(BroadcastStreamRecvError::Lagged(n)) => {
                    SseEvent::default().event("lagged").data(n.to_string())
                }
            })
        })
        .take_until(async move { closed.closed().await });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Counters: live calls, status events, event subscribers, webhook deliveries and drops.
#[utoipa::path(
    get,
    path = "/rest-api/stats",
    tag = "events",
    responses((status = 200, description = "The counters", body = schema::StatsJson))
)]
async fn stats(State(state): State<AppState>) -> Response {
    let s = state.notifier.stats();
    Json(json!({
        "liveCalls": state.registry.live_count(),
        "events": s.events,
        "subscribers": s.subscribers,
        "webhooks": {
            "delivered": s.delivered,
            "retries": s.retries,
            "dropped": s.dropped(),
            "droppedQueueFull": s.dropped_queue_full,
            "droppedAfterRetries": s.dropped_after_retries,
        },
    }))
    .into_response()
}

/// This document (OpenAPI 3.1).
#[utoipa::path(
    get,
    path = "/rest-api/openapi.json",
    tag = "events",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object))
)]
async fn openapi_json(Extension(OpenApiJson(doc)): Extension<OpenApiJson>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(doc.as_str().to_owned()),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
