//! One webhook URL's sender: takes events from its bounded queue one at a time (so a call's events arrive
//! in order), POSTs each as JSON, retries failures with doubling backoff, and drops (counts and logs) an
//! event after the configured number of tries.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{bump, Event, NotifyError, Shared};
use crate::config::WebhooksConfig;

/// Retry policy of one sender.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Policy {
    pub fn from_config(config: &WebhooksConfig) -> Self {
        Self {
            max_attempts: config.max_attempts,
            backoff_initial: Duration::from_millis(config.backoff_initial_ms),
            backoff_max: Duration::from_millis(config.backoff_max_ms),
        }
    }

    /// Wait before retry number `retry` (1-based): initial, 2x, 4x, ... capped.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

pub struct Target {
    pub url: String,
    pub client: reqwest::Client,
    pub policy: Policy,
}

/// The HTTP client shared by every sender: rustls, no redirects, the configured timeout.
pub fn client(config: &WebhooksConfig) -> Result<reqwest::Client, NotifyError> {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(config.timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("sipcast/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| NotifyError::Client(e.to_string()))
}

pub async fn run(target: Target, mut queue: mpsc::Receiver<Arc<Event>>, shared: Arc<Shared>) {
    while let Some(event) = queue.recv().await {
        deliver(&target, &event, &shared).await;
    }
}

async fn deliver(target: &Target, event: &Event, shared: &Shared) {
    let mut last_error = String::new();
    for attempt in 1..=target.policy.max_attempts {
        if attempt > 1 {
            bump(&shared.stats.retries);
            tokio::time::sleep(target.policy.backoff(attempt - 1)).await;
        }
        let sent = target
            .client
            .post(&target.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(event.json.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                bump(&shared.stats.delivered);
                return;
            }
            Ok(response) => last_error = format!("answered HTTP {}", response.status().as_u16()),
            // The URL may carry a token: never print it.
            Err(e) => last_error = e.without_url().to_string(),
        }
        tracing::debug!(
            app_key = event.app_key,
            call_id = event.call_id,
            attempt,
            "webhook POST failed: {last_error}"
        );
    }
    bump(&shared.stats.dropped_after_retries);
    tracing::warn!(
        app_key = event.app_key,
        call_id = event.call_id,
        sequence = event.sequence,
        attempts = target.policy.max_attempts,
        dropped = shared
            .stats
            .dropped_after_retries
            .load(std::sync::atomic::Ordering::Relaxed),
        "webhook event dropped after every try: {last_error}"
    );
}
