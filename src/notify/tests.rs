use std::time::{Duration, Instant};

use super::*;
use crate::call::tests::request;
use crate::call::{CallFilter, Registry, RtmpStatus};
use crate::config::WebhooksConfig;

/// A URL nothing listens on (the port was bound, then released).
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/hook?token=url-secret-token")
}

fn config_with(url: String) -> WebhooksConfig {
    let mut config = WebhooksConfig {
        max_attempts: 2,
        backoff_initial_ms: 1,
        backoff_max_ms: 1,
        timeout_ms: 2000,
        ..WebhooksConfig::default()
    };
    config.apps.insert("callApp".into(), url);
    config
}

async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn events_carry_the_wcs_fields_and_no_secret() {
    let (notifier, sink) = Notifier::start(&WebhooksConfig::default()).unwrap();
    let mut events = notifier.subscribe();
    let registry = Registry::with_events(10, Duration::from_secs(30), sink);
    let mut r = request("c1", "stream-key-SECRET");
    r.app_key = Some("callApp".into());
    r.password = Some(crate::secret::Password::new("sip-PASSWORD"));
    let leg = registry.admit(r, Instant::now()).unwrap();
    registry.update(leg, |c| c.rtmp_status = RtmpStatus::Active);

    let first = events.recv().await.unwrap();
    let second = events.recv().await.unwrap();
    assert_eq!((first.sequence, second.sequence), (1, 2));
    let body: serde_json::Value = serde_json::from_str(&first.json).unwrap();
    for field in [
        "nodeId",
        "appKey",
        "sessionId",
        "callId",
        "incoming",
        "status",
        "sipStatus",
        "rtmpUrl",
        "rtmpStream",
        "rtmpStreamStatus",
        "caller",
        "callee",
        "hasAudio",
        "hasVideo",
        "visibleName",
        "mediaProvider",
    ] {
        assert!(body.get(field).is_some(), "{field} missing in {body}");
    }
    assert_eq!(body["status"], "TRYING");
    assert_eq!(body["appKey"], "callApp");
    assert_eq!(body["rtmpStream"], "stre...");
    let second: serde_json::Value = serde_json::from_str(&second.json).unwrap();
    assert_eq!(second["rtmpStreamStatus"], "RTMP_STREAM_ACTIVE");
    for e in [&first.json, &second.to_string()] {
        assert!(!e.contains("SECRET") && !e.contains("PASSWORD"), "{e}");
    }
    assert_eq!(notifier.stats().events, 2);
}

#[tokio::test]
async fn a_dead_receiver_never_blocks_and_drops_are_counted() {
    let (notifier, sink) = Notifier::start(&config_with(dead_url())).unwrap();
    let registry = Registry::with_events(10, Duration::from_secs(30), sink);
    let mut r = request("c1", "stream-key");
    r.app_key = Some("callApp".into());
    let leg = registry.admit(r, Instant::now()).unwrap();
    registry.update(leg, |c| c.rtmp_status = RtmpStatus::Active);
    // Calls go on regardless: the registry answers at once.
    assert_eq!(registry.find(&CallFilter::default()).len(), 1);
    assert!(
        wait_for(|| notifier.stats().dropped_after_retries == 2).await,
        "{:?}",
        notifier.stats()
    );
    let stats = notifier.stats();
    assert_eq!((stats.delivered, stats.retries), (0, 2), "{stats:?}");
}

#[tokio::test]
async fn a_full_queue_drops_new_events_and_counts_them() {
    let mut config = config_with(dead_url());
    config.queue_capacity = 1;
    config.max_attempts = 3;
    // The sender sits in its first backoff while the queue fills up.
    config.backoff_initial_ms = 60_000;
    config.backoff_max_ms = 60_000;
    let (notifier, sink) = Notifier::start(&config).unwrap();
    let registry = Registry::with_events(100, Duration::from_secs(30), sink);
    for i in 0..50 {
        let mut r = request(&format!("c{i}"), &format!("stream-{i}"));
        r.app_key = Some("callApp".into());
        registry.admit(r, Instant::now()).unwrap();
    }
    // 50 events: at most one in flight and one queued; the rest are dropped.
    assert!(
        wait_for(|| notifier.stats().dropped_queue_full >= 48).await,
        "{:?}",
        notifier.stats()
    );
    assert_eq!(notifier.stats().events, 50);
}

#[tokio::test]
async fn close_ends_subscriptions() {
    let (notifier, _sink) = Notifier::start(&WebhooksConfig::default()).unwrap();
    let waiting = tokio::spawn({
        let n = notifier.clone();
        async move { n.closed().await }
    });
    notifier.close();
    waiting.await.unwrap();
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let policy = webhook::Policy {
        max_attempts: 5,
        backoff_initial: Duration::from_millis(500),
        backoff_max: Duration::from_millis(3000),
    };
    let waits: Vec<u128> = (1..=5).map(|r| policy.backoff(r).as_millis()).collect();
    assert_eq!(waits, vec![500, 1000, 2000, 3000, 3000]);
}
