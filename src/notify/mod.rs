//! Status events leave the gateway here: the registry's [`CallEvent`]s become WCS-style JSON events that
//! go to the status webhooks (one bounded queue and sender per URL, in order, retried with backoff) and to
//! every `GET /rest-api/events` subscriber (a broadcast; a slow subscriber skips events).
//!
//! Nothing here can block a call: the registry's sink only tries to enqueue; what does not fit, and what
//! cannot be delivered after the configured tries, is dropped, counted in [`Stats`] and logged.
//! The JSON is built by hand from the call room's types; secrets never reach it (the snapshot holds the
//! stream key redacted and no password at all).

mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};

use crate::call::{CallEvent, EventSink};
use crate::config::WebhooksConfig;

/// Events between the registry and the hub task; the hub only re-queues, so this rarely fills.
const HUB_QUEUE: usize = 4096;

/// `mediaProvider` in every event: the call's media comes from SIP.
pub const MEDIA_PROVIDER: &str = "SIP";

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
}

/// One event, as sent to webhooks and subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub sequence: u64,
    pub call_id: String,
    pub app_key: Option<String>,
    /// The JSON body (WCS field names).
    pub json: String,
}

/// Counters, readable at any time (`GET /rest-api/stats`).
#[derive(Debug, Default)]
pub struct Stats {
    events: AtomicU64,
    delivered: AtomicU64,
    retries: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_after_retries: AtomicU64,
}

/// A copy of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Status events produced by the registry.
    pub events: u64,
    /// Webhook POSTs answered 2xx.
    pub delivered: u64,
    /// Webhook POSTs tried again after a failure.
    pub retries: u64,
    /// Events not queued for a webhook because its queue was full (or the hub's).
    pub dropped_queue_full: u64,
    /// Events given up after `max_attempts` failed tries.
    pub dropped_after_retries: u64,
    /// Current `GET /rest-api/events` subscribers.
    pub subscribers: usize,
}

impl StatsSnapshot {
    /// Every webhook event that was not delivered.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_after_retries
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Shared {
    stats: Stats,
    subscribers: broadcast::Sender<Arc<Event>>,
    closed: watch::Sender<bool>,
}

/// The notify room's handle: subscribe to events, read counters, close for shutdown. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    shared: Arc<Shared>,
}

impl Notifier {
    /// Starts the hub and one webhook sender per configured URL (needs a tokio runtime). Returns the
    /// handle and the sink to give the registry.
    pub fn start(config: &WebhooksConfig) -> Result<(Notifier, EventSink), NotifyError> {
        let (subscribers, _) = broadcast::channel(config.sse_buffer);
        let (closed, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            stats: Stats::default(),
            subscribers,
            closed,
        });
        let client = webhook::client(config)?;
        let mut queues = HashMap::new();
        let mut senders: HashMap<&str, mpsc::Sender<Arc<Event>>> = HashMap::new();
        for (app_key, url) in &config.apps {
            // Apps sharing one URL share one queue, so their events stay in order too.
            let tx = senders
                .entry(url.as_str())
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(config.queue_capacity);
                    tokio::spawn(webhook::run(
                        webhook::Target {
                            url: url.clone(),
                            client: client.clone(),
                            policy: webhook::Policy::from_config(config),
                        },
                        rx,
                        shared.clone(),
                    ));
                    tx
                })
                .clone();
            queues.insert(app_key.clone(), tx);
        }
        let (hub_tx, hub_rx) = mpsc::channel(HUB_QUEUE);
        tokio::spawn(hub(hub_rx, queues, config.node_id.clone(), shared.clone()));
        let sink_shared = shared.clone();
        let sink: EventSink = Box::new(move |event: CallEvent| {
            bump(&sink_shared.stats.events);
            if hub_tx.try_send(event).is_err() {
                bump(&sink_shared.stats.dropped_queue_full);
                tracing::warn!("status event dropped: the notify queue is full");
            }
        });
        Ok((Notifier { shared }, sink))
    }

    /// A new subscriber to every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.shared.subscribers.subscribe()
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.shared.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            events: get(&s.events),
            delivered: get(&s.delivered),
            retries: get(&s.retries),
            dropped_queue_full: get(&s.dropped_queue_full),
            dropped_after_retries: get(&s.dropped_after_retries),
            subscribers: self.shared.subscribers.receiver_count(),
        }
    }

    /// Ends every subscription (shutdown: open event streams must not hold the server up).
    pub fn close(&self) {
        self.shared.closed.send_replace(true);
    }

    /// Resolves once [`Notifier::close`] has been called.
    pub async fn closed(&self) {
        let mut rx = self.shared.closed.subscribe();
        let _ = rx.wait_for(|closed| *closed).await;
    }
}

/// Turns each call event into JSON once, then fans it out.
async fn hub(
    mut events: mpsc::Receiver<CallEvent>,
    queues: HashMap<String, mpsc::Sender<Arc<Event>>>,
    node_id: String,
    shared: Arc<Shared>,
) {
    while let Some(event) = events.recv().await {
        let out = Arc::new(Event {
            sequence: event.sequence,
            call_id: event.call.call_id.clone(),
            app_key: event.call.app_key.clone(),
            json: event_json(&node_id, &event).to_string(),
        });
        // No subscriber is not an error.
        let _ = shared.subscribers.send(out.clone());
        let Some(app_key) = out.app_key.as_deref() else {
            continue;
        };
        let Some(queue) = queues.get(app_key) else {
            tracing::debug!(app_key, "no webhook configured for this appKey");
            continue;
        };
        if queue.try_send(out.clone()).is_err() {
            bump(&shared.stats.dropped_queue_full);
            tracing::warn!(
                app_key,
                call_id = out.call_id,
                sequence = out.sequence,
                dropped = shared.stats.dropped_queue_full.load(Ordering::Relaxed),
                "webhook event dropped: the queue for this appKey is full"
            );
        }
    }
}

/// The event body, with the fields WCS's REST hooks carry for a SIP-as-RTMP call.
pub fn event_json(node_id: &str, event: &CallEvent) -> serde_json::Value {
    let c = &event.call;
    json!({
        "nodeId": node_id,
        "appKey": c.app_key,
        "sessionId": format!("{node_id}-{}", c.leg),
        "callId": c.call_id,
        "incoming": false,
        "status": c.status.wcs_name(),
        "sipStatus": c.sip_status,
        "rtmpUrl": c.rtmp_url,
        "rtmpStream": c.rtmp_stream_redacted,
        "rtmpStreamStatus": c.rtmp_status.wcs_name(),
        "caller": c.caller,
        "callee": c.callee,
        "hasAudio": c.has_audio,
        "hasVideo": c.has_video,
        "visibleName": c.caller,
        "mediaProvider": MEDIA_PROVIDER,
        "toStream": c.to_stream,
        "info": c.reason,
        "sequence": event.sequence,
    })
}

#[cfg(test)]
mod tests;
